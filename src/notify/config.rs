//! The settings of notification emails: the top-level `[smtp]` table (the mail server) and a
//! job's `notification_email`, `notify_on_failure` and `digest_interval`. Each is checked
//! here, with errors naming the file and key; `config` only assembles them.

use crate::util::secret::SecretKeys;
use crate::util::{format_duration, parse_duration, CheckContext, ConfigError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The SMTP password's keys.
const PASSWORD: SecretKeys = SecretKeys {
    file: "password_file",
    env: "password_env",
    credential: "password_credential",
};

/// How long an SMTP conversation may take when `timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// At most one failure digest per job this often, when `digest_interval` is not set.
const DEFAULT_DIGEST_INTERVAL: Duration = Duration::from_secs(3600);

/// `starttls` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawStartTls {
    /// `smtp://` must upgrade with STARTTLS, or nothing is sent.
    #[default]
    Required,
    /// Plain SMTP: only to a loopback host (a local relay).
    Never,
}

/// `[smtp]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmtp {
    url: String,
    #[serde(default)]
    starttls: RawStartTls,
    from: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    password_credential: Option<String>,
    ca_file: Option<PathBuf>,
    timeout: Option<String>,
}

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: STARTTLS, required.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
    /// `smtp://` with `starttls = "never"` to a loopback host: no TLS.
    Plain,
}

impl SmtpSecurity {
    /// In words, for `test-email`.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SmtpSecurity::StartTls => "STARTTLS (required)",
            SmtpSecurity::ImplicitTls => "implicit TLS (smtps)",
            SmtpSecurity::Plain => "none (plain SMTP to a loopback host)",
        }
    }
}

/// The checked `[smtp]` table. `Debug` shows no password ([`SecretString`] redacts).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The URL as written (it holds no credentials: they are refused in it).
    pub url: String,
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The `From` mailbox, checked.
    pub from: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Extra trust anchors (PEM), from `ca_file`.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// A job's checked notification settings; `None` on the job when it has no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobNotify {
    /// The recipients, checked.
    pub to: Vec<String>,
    /// Send the notices (quarantine, lifted, disabled, failure digests); `false` keeps the
    /// address for `test-email` only.
    pub on_failure: bool,
    /// At most one failure digest this often.
    pub digest_interval: Duration,
}

/// `notification_email` as written: one address or a list.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum RawAddresses {
    One(String),
    Many(Vec<String>),
}

/// Check an address (`name@example.com` or `Name <name@example.com>`).
fn check_mailbox(text: &str) -> Result<String, String> {
    text.parse::<lettre::message::Mailbox>()
        .map(|m| m.to_string())
        .map_err(|e| format!("{text:?} is not an email address: {e}"))
}

/// Check `[smtp]` (`ctx.table` is `smtp`) and read its password (unless deferred).
pub(crate) fn check_smtp(
    raw: RawSmtp,
    ctx: &CheckContext<'_>,
) -> Result<SmtpSettings, ConfigError> {
    let url = url::Url::parse(&raw.url).map_err(|e| {
        ctx.error(
            "url",
            format!("not a URL ({e}): e.g. \"smtp://mail.example.com:587\""),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ctx.error(
            "url",
            "credentials do not belong in the URL: set username and password_file, \
             password_env or password_credential",
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| ctx.error("url", "the URL names no host"))?;
    let loopback = crate::util::net::is_loopback_host(&host);
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let security = match (url.scheme(), raw.starttls) {
        ("smtp", RawStartTls::Required) => SmtpSecurity::StartTls,
        ("smtps", RawStartTls::Required) => SmtpSecurity::ImplicitTls,
        ("smtp", RawStartTls::Never) if loopback => SmtpSecurity::Plain,
        ("smtp", RawStartTls::Never) => {
            return Err(ctx.error(
                "starttls",
                "plain SMTP (starttls = \"never\") is only allowed to a loopback host: \
                 the password and the notices would cross the network unencrypted",
            ))
        }
        ("smtps", RawStartTls::Never) => {
            return Err(ctx.error("starttls", "smtps:// is always TLS: remove starttls"))
        }
        (other, _) => {
            return Err(ctx.error(
                "url",
                format!("unsupported scheme {other:?}: use smtp:// (STARTTLS) or smtps:// (TLS)"),
            ))
        }
    };
    let port = url.port().unwrap_or(match security {
        SmtpSecurity::ImplicitTls => 465,
        _ => 587,
    });
    let from = check_mailbox(&raw.from).map_err(|m| ctx.error("from", m))?;
    let picked = PASSWORD
        .pick(
            raw.password_file.as_deref().map(|f| ctx.resolve(f)),
            raw.password_env.as_deref(),
            raw.password_credential.as_deref(),
        )
        .map_err(|e| ctx.error(PASSWORD.file, e.to_string()))?;
    let password = match (&raw.username, picked) {
        (None, None) => None,
        (None, Some((key, _))) => {
            return Err(ctx.error(key, "a password needs a username"));
        }
        (Some(_), None) => {
            return Err(ctx.error(
                "username",
                "no password: set password_file, password_env or password_credential",
            ))
        }
        (Some(_), Some(_)) if security == SmtpSecurity::Plain => {
            return Err(ctx.error(
                "username",
                "no password is sent over plain SMTP: use STARTTLS or smtps://",
            ))
        }
        (Some(_), Some((key, secret))) => {
            let text = ctx
                .read_secret(&secret)
                .map_err(|e| ctx.error(key, e.to_string()))?;
            if text.expose_secret().is_empty() {
                return Err(ctx.error(key, "the password is empty"));
            }
            Some(text)
        }
    };
    let ca_pem = match &raw.ca_file {
        None => None,
        Some(f) => {
            let path = ctx.resolve(f);
            let pem = std::fs::read(&path).map_err(|e| {
                ctx.error("ca_file", format!("cannot read {}: {e}", path.display()))
            })?;
            // lettre's parser takes a file without a single certificate; count them as the LDAP
            // source's `ca_file` does, so a wrong file is named here, not as a TLS failure later.
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ctx.error("ca_file", format!("{} is not PEM: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(ctx.error(
                    "ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            Some(pem)
        }
    };
    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => {
            let d = parse_duration(t).map_err(|e| ctx.error("timeout", e.to_string()))?;
            if d.is_zero() || d > Duration::from_secs(600) {
                return Err(ctx.error(
                    "timeout",
                    format!("{} is out of range (1s to 10m)", format_duration(d)),
                ));
            }
            d
        }
    };
    Ok(SmtpSettings {
        url: raw.url,
        host,
        port,
        security,
        from,
        username: raw.username,
        password,
        ca_pem,
        timeout,
    })
}

/// Check a job's notification keys (`ctx.table` is `jobs[i]`). `None` when no address is
/// set; the keys that only make sense with one are then refused.
pub(crate) fn check_job(
    addresses: Option<RawAddresses>,
    on_failure: Option<bool>,
    digest_interval: Option<&str>,
    ctx: &CheckContext<'_>,
) -> Result<Option<JobNotify>, ConfigError> {
    let list = match addresses {
        None => Vec::new(),
        Some(RawAddresses::One(a)) => vec![a],
        Some(RawAddresses::Many(l)) => l,
    };
    if list.is_empty() {
        for (set, key) in [
            (on_failure.is_some(), "notify_on_failure"),
            (digest_interval.is_some(), "digest_interval"),
        ] {
            if set {
                return Err(ctx.error(key, "needs notification_email (an address or a list)"));
            }
        }
        return Ok(None);
    }
    let mut to = Vec::new();
    for a in &list {
        let m = check_mailbox(a).map_err(|m| ctx.error("notification_email", m))?;
        if !to.contains(&m) {
            to.push(m);
        }
    }
    let digest_interval = match digest_interval {
        None => DEFAULT_DIGEST_INTERVAL,
        Some(t) => parse_duration(t).map_err(|e| ctx.error("digest_interval", e.to_string()))?,
    };
    Ok(Some(JobNotify {
        to,
        on_failure: on_failure.unwrap_or(true),
        digest_interval,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn smtp(text: &str) -> Result<SmtpSettings, ConfigError> {
        let raw: RawSmtp = toml::from_str(text).unwrap();
        let env = |n: &str| (n == "SMTP_PW").then(|| "hunter2".to_string());
        let ctx = CheckContext {
            file: Path::new("/etc/p/provisiond.toml"),
            table: "smtp".into(),
            env: &env,
            defer_secrets: false,
        };
        check_smtp(raw, &ctx)
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = smtp(&format!(
            "url = \"smtp://mail.example.com\"\nfrom = \"p@example.com\"\nca_file = {:?}",
            f.display().to_string()
        ))
        .unwrap_err();
        assert_eq!(e.key, "smtp.ca_file");
        assert!(e.message.contains("no PEM certificate"), "{}", e.message);
    }

    #[test]
    fn schemes_pick_the_security_and_default_port() {
        let s = smtp("url = \"smtp://mail.example.com\"\nfrom = \"p@example.com\"").unwrap();
        assert_eq!((s.security, s.port), (SmtpSecurity::StartTls, 587));
        let s = smtp("url = \"smtps://mail.example.com\"\nfrom = \"p@example.com\"").unwrap();
        assert_eq!((s.security, s.port), (SmtpSecurity::ImplicitTls, 465));
        let s =
            smtp("url = \"smtp://127.0.0.1:2525\"\nstarttls = \"never\"\nfrom = \"p@example.com\"")
                .unwrap();
        assert_eq!((s.security, s.port), (SmtpSecurity::Plain, 2525));
    }

    #[test]
    fn plain_smtp_is_refused_beyond_loopback_and_errors_name_the_key() {
        let e = smtp(
            "url = \"smtp://mail.example.com\"\nstarttls = \"never\"\nfrom = \"p@example.com\"",
        )
        .unwrap_err();
        assert_eq!(e.key, "smtp.starttls");
        assert!(e
            .to_string()
            .starts_with("/etc/p/provisiond.toml: smtp.starttls:"));
        let e = smtp("url = \"http://mail.example.com\"\nfrom = \"p@example.com\"").unwrap_err();
        assert_eq!(e.key, "smtp.url");
        let e =
            smtp("url = \"smtp://u:pw@mail.example.com\"\nfrom = \"p@example.com\"").unwrap_err();
        assert_eq!(e.key, "smtp.url");
        assert!(!e.message.contains("pw@"));
        let e = smtp("url = \"smtp://mail.example.com\"\nfrom = \"not an address\"").unwrap_err();
        assert_eq!(e.key, "smtp.from");
    }

    #[test]
    fn the_password_is_a_secret_reference_and_needs_a_username() {
        let s = smtp(
            "url = \"smtp://mail.example.com\"\nfrom = \"p@example.com\"\nusername = \"u\"\npassword_env = \"SMTP_PW\"",
        )
        .unwrap();
        assert_eq!(s.password.unwrap().expose_secret(), "hunter2");
        let e =
            smtp("url = \"smtp://mail.example.com\"\nfrom = \"p@example.com\"\nusername = \"u\"")
                .unwrap_err();
        assert_eq!(e.key, "smtp.username");
        let e = smtp(
            "url = \"smtp://mail.example.com\"\nfrom = \"p@example.com\"\nusername = \"u\"\npassword_env = \"UNSET\"",
        )
        .unwrap_err();
        assert_eq!(e.key, "smtp.password_env");
        assert!(!format!("{s:?}", s = e).contains("hunter2"));
    }

    #[test]
    fn job_addresses_are_one_or_a_list_and_default_to_notify() {
        let env = |_: &str| None;
        let ctx = CheckContext {
            file: Path::new("/p.toml"),
            table: "jobs[0]".into(),
            env: &env,
            defer_secrets: false,
        };
        let n = check_job(
            Some(RawAddresses::One("a@example.com".into())),
            None,
            None,
            &ctx,
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.to, vec!["a@example.com"]);
        assert!(n.on_failure);
        assert_eq!(n.digest_interval, Duration::from_secs(3600));
        let n = check_job(
            Some(RawAddresses::Many(vec![
                "a@example.com".into(),
                "b@example.com".into(),
            ])),
            Some(false),
            Some("15m"),
            &ctx,
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.to.len(), 2);
        assert!(!n.on_failure);
        assert_eq!(n.digest_interval, Duration::from_secs(900));
        let e = check_job(Some(RawAddresses::One("nope".into())), None, None, &ctx).unwrap_err();
        assert_eq!(e.key, "jobs[0].notification_email");
        let e = check_job(None, Some(true), None, &ctx).unwrap_err();
        assert_eq!(e.key, "jobs[0].notify_on_failure");
        assert!(check_job(None, None, None, &ctx).unwrap().is_none());
    }
}
