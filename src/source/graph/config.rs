//! The `[jobs.source]` table of `kind = "graph"` (docs/graph.md lists every key) and its
//! check into [`GraphSettings`], the credential read.

use super::{CertificateError, ClientCertificate, GraphCredential, GraphSettings};
use crate::util::{check_http_scheme, parse_duration, CheckContext, ConfigError, SecretKeys};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The client secret's keys.
const CLIENT_SECRET: SecretKeys = SecretKeys {
    file: "client_secret_file",
    env: "client_secret_env",
    credential: "client_secret_credential",
};

/// The certificate's private key's keys.
const CLIENT_KEY: SecretKeys = SecretKeys {
    file: "client_key_file",
    env: "client_key_env",
    credential: "client_key_credential",
};

/// `kind = "graph"`, as written: an Entra ID tenant through Microsoft Graph. Absent keys take
/// [`GraphSettings::new`]'s defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGraph {
    tenant_id: String,
    client_id: String,
    /// The client secret's value, from a file, an environment variable or a systemd
    /// credential (at most one; or a certificate).
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    client_secret_credential: Option<String>,
    /// A certificate credential: the PEM certificate (it may hold the private key too).
    client_certificate_file: Option<PathBuf>,
    /// Its PEM private key, from a file, an environment variable or a systemd credential.
    client_key_file: Option<PathBuf>,
    client_key_env: Option<String>,
    client_key_credential: Option<String>,
    service_principal_id: String,
    /// `https://login.microsoftonline.com` by default.
    authority: Option<String>,
    /// `https://graph.microsoft.com/v1.0` by default; must name the API version.
    graph_url: Option<String>,
    /// Graph properties read besides those the mappings name (directory extensions, …).
    #[serde(default)]
    user_attributes: Vec<String>,
    #[serde(default)]
    group_attributes: Vec<String>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    read_timeout: Option<String>,
    /// A snapshot older than this (since its last full read) is read again whole (default 7d).
    full_read_interval: Option<String>,
    max_retries: Option<u32>,
    /// Allow plain `http://` to hosts other than loopback (default false).
    #[serde(default)]
    allow_insecure_http: bool,
}

/// Graph properties a job reads besides those its mappings name: the `$select` is completed
/// with them once the mappings are built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExtraAttributes {
    /// Of users.
    pub users: Vec<String>,
    /// Of groups.
    pub groups: Vec<String>,
}

/// Check a Graph source's keys and read its credential. Errors name the key and never quote
/// the secret or the key.
pub(crate) fn check(
    raw: RawGraph,
    ctx: &CheckContext<'_>,
) -> Result<(GraphSettings, ExtraAttributes), ConfigError> {
    let g = &raw;
    for (key, value) in [
        ("tenant_id", &g.tenant_id),
        ("client_id", &g.client_id),
        ("service_principal_id", &g.service_principal_id),
    ] {
        let v = value.trim();
        if v.is_empty() || v.contains(['/', '?', '#']) || v.chars().any(char::is_whitespace) {
            return Err(ctx.error(key, format!("{value:?} is not a valid id")));
        }
    }
    let credential = credential(g, ctx)?;
    let mut s = GraphSettings::new(
        &g.tenant_id,
        &g.client_id,
        credential,
        &g.service_principal_id,
    )
    .map_err(|e| ctx.error("authority", e.to_string()))?;
    let check_url = |key: &str, text: &str| -> Result<url::Url, ConfigError> {
        let url = url::Url::parse(text)
            .map_err(|e| ctx.error(key, format!("{text:?} is not a URL: {e}")))?;
        check_http_scheme(&url, g.allow_insecure_http).map_err(|m| ctx.error(key, m))?;
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(ctx.error(key, format!("{text:?} has no host")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ctx.error(key, "must not contain credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ctx.error(key, "must not have a query or fragment"));
        }
        Ok(url)
    };
    if let Some(a) = &g.authority {
        s.authority = check_url("authority", a)?;
    }
    if let Some(u) = &g.graph_url {
        s.graph_url = check_url("graph_url", u)?;
        if s.graph_url.path().trim_matches('/').is_empty() {
            return Err(ctx.error(
                "graph_url",
                format!("{u:?} has no API version: use e.g. https://graph.microsoft.com/v1.0"),
            ));
        }
    }
    let duration = |key: &str, v: &Option<String>, d: Duration| match v {
        None => Ok(d),
        Some(text) => match parse_duration(text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(ctx.error(key, "must be longer than zero")),
            Err(e) => Err(ctx.error(key, e.to_string())),
        },
    };
    s.connect_timeout = duration("connect_timeout", &g.connect_timeout, s.connect_timeout)?;
    s.request_timeout = duration("request_timeout", &g.request_timeout, s.request_timeout)?;
    s.read_timeout = duration("read_timeout", &g.read_timeout, s.read_timeout)?;
    s.full_read_interval = duration(
        "full_read_interval",
        &g.full_read_interval,
        s.full_read_interval,
    )?;
    if let Some(r) = g.max_retries {
        s.max_retries = r;
    }
    for (key, list) in [
        ("user_attributes", &g.user_attributes),
        ("group_attributes", &g.group_attributes),
    ] {
        if let Some(bad) = list
            .iter()
            .find(|a| a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(ctx.error(key, format!("{bad:?} is not a Graph property name")));
        }
    }
    let extras = ExtraAttributes {
        users: raw.user_attributes,
        groups: raw.group_attributes,
    };
    Ok((s, extras))
}

/// A Graph source's credential: a client secret, or a certificate and its private key.
/// Exactly one kind.
fn credential(g: &RawGraph, ctx: &CheckContext<'_>) -> Result<GraphCredential, ConfigError> {
    let secret_key = [
        (g.client_secret_file.is_some(), CLIENT_SECRET.file),
        (g.client_secret_env.is_some(), CLIENT_SECRET.env),
        (
            g.client_secret_credential.is_some(),
            CLIENT_SECRET.credential,
        ),
    ]
    .into_iter()
    .find_map(|(set, key)| set.then_some(key));
    let certificate_key = [
        (
            g.client_certificate_file.is_some(),
            "client_certificate_file",
        ),
        (g.client_key_file.is_some(), CLIENT_KEY.file),
        (g.client_key_env.is_some(), CLIENT_KEY.env),
        (g.client_key_credential.is_some(), CLIENT_KEY.credential),
    ]
    .into_iter()
    .find_map(|(set, key)| set.then_some(key));
    match (secret_key, certificate_key) {
        (Some(_), Some(key)) => Err(ctx.error(
            key,
            "set either a client secret (client_secret_file, client_secret_env or \
             client_secret_credential) or a certificate (client_certificate_file), not both",
        )),
        (None, None) => Err(ctx.error(
            CLIENT_SECRET.file,
            "no credential: set client_secret_file, client_secret_env or \
             client_secret_credential, or client_certificate_file (with client_key_file, \
             client_key_env or client_key_credential unless the certificate file holds the key)",
        )),
        (Some(_), None) => client_secret(g, ctx).map(GraphCredential::Secret),
        (None, Some(key)) => certificate(g, key, ctx).map(GraphCredential::Certificate),
    }
}

/// The client secret, surrounding whitespace trimmed.
fn client_secret(g: &RawGraph, ctx: &CheckContext<'_>) -> Result<SecretString, ConfigError> {
    let picked = CLIENT_SECRET
        .pick(
            g.client_secret_file.as_deref().map(|f| ctx.resolve(f)),
            g.client_secret_env.as_deref(),
            g.client_secret_credential.as_deref(),
        )
        .map_err(|e| ctx.error(CLIENT_SECRET.file, e.to_string()))?;
    let Some((key, secret)) = picked else {
        return Err(ctx.error(CLIENT_SECRET.file, "no client secret"));
    };
    let raw = ctx
        .read_secret(&secret)
        .map_err(|e| ctx.error(key, e.to_string()))?;
    let secret = raw.expose_secret().trim();
    if secret.is_empty() {
        return Err(ctx.error(key, "the client secret is empty"));
    }
    Ok(SecretString::from(secret.to_string()))
}

/// The certificate and its private key; `certificate_key` is the first certificate key set.
fn certificate(
    g: &RawGraph,
    certificate_key: &str,
    ctx: &CheckContext<'_>,
) -> Result<ClientCertificate, ConfigError> {
    use secrecy::zeroize::Zeroizing;
    let Some(cert_file) = &g.client_certificate_file else {
        return Err(ctx.error(
            certificate_key,
            format!("{certificate_key} needs client_certificate_file: the certificate uploaded to the app registration"),
        ));
    };
    let cert_path = ctx.resolve(cert_file);
    let cert_pem = Zeroizing::new(std::fs::read(&cert_path).map_err(|e| {
        ctx.error(
            "client_certificate_file",
            format!("cannot read {}: {e}", cert_path.display()),
        )
    })?);
    let picked = CLIENT_KEY
        .pick(
            g.client_key_file.as_deref().map(|f| ctx.resolve(f)),
            g.client_key_env.as_deref(),
            g.client_key_credential.as_deref(),
        )
        .map_err(|e| ctx.error(CLIENT_KEY.file, e.to_string()))?;
    let (key_key, key_origin, key_pem) = match picked {
        Some((key, secret)) => {
            let pem = ctx
                .read_secret_bytes(&secret)
                .map_err(|e| ctx.error(key, e.to_string()))?;
            (key, secret.describe(), Some(pem))
        }
        None => (
            "client_certificate_file",
            cert_path.display().to_string(),
            None,
        ),
    };
    ClientCertificate::from_pem(&cert_pem, key_pem.as_ref().map(|k| k.expose_secret())).map_err(
        |e| match e {
            CertificateError::Certificate(m) => ctx.error(
                "client_certificate_file",
                format!("{}: {m}", cert_path.display()),
            ),
            other => ctx.error(key_key, format!("{key_origin}: {other}")),
        },
    )
}
