//! The `[jobs.source]` table of `kind = "ldap"` (docs/ldap.md lists every key) and its
//! check into [`LdapSettings`].

use super::{and_filters, Flavour, LdapSettings, Nested};
use crate::scope::ScopeMode;
use crate::util::{parse_duration, CheckContext, ConfigError, SecretKeys};
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The bind password's keys.
const PASSWORD: SecretKeys = SecretKeys {
    file: "password_file",
    env: "password_env",
    credential: "password_credential",
};

/// `kind = "ldap"`, as written. Absent keys take [`LdapSettings::new`]'s defaults for the
/// flavour.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLdap {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    url: String,
    /// Upgrade an `ldap://` connection with StartTLS (default false).
    #[serde(default)]
    starttls: bool,
    /// Extra trusted CA certificates, PEM.
    ca_file: Option<PathBuf>,
    /// None: an anonymous bind.
    bind_dn: Option<String>,
    /// The bind password from a file, an environment variable or a systemd credential.
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    /// A systemd credential name, read from `$CREDENTIALS_DIRECTORY`.
    password_credential: Option<String>,
    /// `openldap` (default) or `ad`: which conventions the defaults follow.
    #[serde(default)]
    flavour: Flavour,
    user_base: String,
    user_filter: Option<String>,
    /// Defaults to `user_base`.
    group_base: Option<String>,
    group_filter: Option<String>,
    /// Our attribute name → the LDAP attribute (or attributes, first present wins); `""`
    /// drops a default.
    #[serde(default)]
    attributes: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    group_attributes: BTreeMap<String, OneOrMany>,
    anchor_attribute: Option<String>,
    disabled_filter: Option<String>,
    enabled_attribute: Option<String>,
    #[serde(default)]
    assigned_groups: Vec<String>,
    assigned_users_filter: Option<String>,
    /// `direct` (default) or `flatten`.
    #[serde(default)]
    nested: Nested,
    member_uid_attribute: Option<String>,
    /// 1 to 100000.
    page_size: Option<u32>,
    timeout: Option<String>,
    full_read_interval: Option<String>,
}

/// One attribute name, or several (first present wins).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Check an LDAP source's keys and read its password and CA file. `scope` is the job's: with
/// `assigned`, the source must say who is assigned. Errors name the key.
pub(crate) fn check(
    raw: RawLdap,
    scope: ScopeMode,
    ctx: &CheckContext<'_>,
) -> Result<LdapSettings, ConfigError> {
    let url = url::Url::parse(raw.url.trim())
        .map_err(|e| ctx.error("url", format!("{:?} is not a URL: {e}", raw.url)))?;
    match url.scheme() {
        "ldap" => {}
        "ldaps" if raw.starttls => {
            return Err(ctx.error(
                "starttls",
                "starttls is for ldap:// URLs; ldaps:// is TLS from the start",
            ))
        }
        "ldaps" => {}
        other => {
            return Err(ctx.error(
                "url",
                format!("unsupported scheme {other:?} (use ldap:// or ldaps://)"),
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ctx.error("url", "no host"));
    }
    if raw.user_base.trim().is_empty() {
        return Err(ctx.error("user_base", "must not be empty"));
    }
    let mut s = LdapSettings::new(raw.flavour, raw.url.trim(), raw.user_base.trim());
    s.starttls = raw.starttls;
    if let Some(g) = &raw.group_base {
        if g.trim().is_empty() {
            return Err(ctx.error("group_base", "must not be empty"));
        }
        s.group_base = g.trim().to_string();
    }
    let check_filter = |key: &str, f: &str| -> Result<String, ConfigError> {
        let f = f.trim();
        let wrapped = and_filters(&[f]);
        if f.is_empty() || ldap3::parse_filter(&wrapped).is_err() {
            return Err(ctx.error(key, format!("{f:?} is not a valid LDAP filter")));
        }
        Ok(wrapped)
    };
    if let Some(f) = &raw.user_filter {
        s.user_filter = check_filter("user_filter", f)?;
    }
    if let Some(f) = &raw.group_filter {
        s.group_filter = check_filter("group_filter", f)?;
    }
    s.disabled_filter = raw
        .disabled_filter
        .as_deref()
        .map(|f| check_filter("disabled_filter", f))
        .transpose()?;
    s.assigned_users_filter = raw
        .assigned_users_filter
        .as_deref()
        .map(|f| check_filter("assigned_users_filter", f))
        .transpose()?;
    for (i, g) in raw.assigned_groups.iter().enumerate() {
        if !g.contains('=') {
            return Err(ctx.error(
                "assigned_groups",
                format!("[{i}] {g:?} is not a distinguished name"),
            ));
        }
    }
    s.assigned_groups = raw.assigned_groups.clone();
    if scope == ScopeMode::Assigned
        && s.assigned_groups.is_empty()
        && s.assigned_users_filter.is_none()
    {
        return Err(ctx.error(
            "assigned_groups",
            "LDAP has no app assignments: with scope = \"assigned\" set assigned_groups and/or assigned_users_filter (or scope = \"all\")",
        ));
    }
    s.nested = raw.nested;
    let attr_name = |key: &str, name: &str| -> Result<String, ConfigError> {
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-;.".contains(c))
        {
            return Err(ctx.error(key, format!("{name:?} is not an LDAP attribute name")));
        }
        Ok(name.to_string())
    };
    if let Some(a) = &raw.anchor_attribute {
        s.anchor_attribute = attr_name("anchor_attribute", a)?;
    }
    if let Some(a) = &raw.member_uid_attribute {
        s.member_uid_attribute = attr_name("member_uid_attribute", a)?;
    }
    for (key, table, map) in [
        ("attributes", &raw.attributes, &mut s.user_attributes),
        (
            "group_attributes",
            &raw.group_attributes,
            &mut s.group_attributes,
        ),
    ] {
        for (ours, theirs) in table {
            if ours.is_empty() || ["id", "members"].contains(&ours.as_str()) {
                return Err(ctx.error(
                    key,
                    format!("{ours:?} cannot be mapped (the anchor and members are read apart)"),
                ));
            }
            let names: Vec<&str> = match theirs {
                OneOrMany::One(n) => vec![n.as_str()],
                OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
            };
            let names: Vec<&str> = names.into_iter().filter(|n| !n.trim().is_empty()).collect();
            if names.is_empty() {
                map.remove(ours);
                continue;
            }
            let checked = names
                .into_iter()
                .map(|n| attr_name(key, n))
                .collect::<Result<Vec<_>, _>>()?;
            map.insert(ours.clone(), checked);
        }
    }
    if let Some(a) = &raw.enabled_attribute {
        let a = attr_name("enabled_attribute", a)?;
        s.user_attributes.insert("accountEnabled".into(), vec![a]);
    }
    if let Some(p) = raw.page_size {
        if p == 0 || p > 100_000 {
            return Err(ctx.error("page_size", "must be between 1 and 100000"));
        }
        s.page_size = p;
    }
    if let Some(t) = &raw.timeout {
        s.timeout = parse_duration(t).map_err(|e| ctx.error("timeout", e.to_string()))?;
    }
    if let Some(t) = &raw.full_read_interval {
        s.full_read_interval =
            parse_duration(t).map_err(|e| ctx.error("full_read_interval", e.to_string()))?;
    }
    if let Some(f) = &raw.ca_file {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let p = ctx.resolve(f);
        let bytes = std::fs::read(&p)
            .map_err(|e| ctx.error("ca_file", format!("cannot read {}: {e}", p.display())))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ctx.error("ca_file", format!("{} is not PEM: {e}", p.display())))?;
        if certs.is_empty() {
            return Err(ctx.error(
                "ca_file",
                format!("{} holds no PEM certificate", p.display()),
            ));
        }
        s.ca_certs = certs;
    }
    s.bind_dn = raw
        .bind_dn
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let password = PASSWORD
        .pick(
            raw.password_file.as_deref().map(|f| ctx.resolve(f)),
            raw.password_env.as_deref(),
            raw.password_credential.as_deref(),
        )
        .map_err(|e| ctx.error(PASSWORD.file, e.to_string()))?
        .map(|(key, secret)| {
            let password = ctx
                .read_secret(&secret)
                .map_err(|e| ctx.error(key, e.to_string()))?;
            if password.expose_secret().is_empty() {
                return Err(ctx.error(key, "the password is empty"));
            }
            Ok(password)
        })
        .transpose()?;
    match (&s.bind_dn, password) {
        (Some(_), Some(p)) => s.password = Some(p),
        (Some(_), None) => {
            return Err(ctx.error(
                "password_file",
                "bind_dn needs a password: set password_file, password_env or password_credential",
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.error(
                "bind_dn",
                "a password is set but no bind_dn (leave both out for an anonymous bind)",
            ))
        }
        (None, None) => {}
    }
    Ok(s)
}
