//! Settings of one target application: the `[jobs.target]` table as written, and its check
//! into [`TargetSettings`].

use std::path::PathBuf;
use std::time::Duration;

use crate::util::{check_http_scheme, parse_duration, CheckContext, ConfigError, SecretKeys};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The bearer token's keys.
const TOKEN: SecretKeys = SecretKeys {
    file: "token_file",
    env: "token_env",
    credential: "token_credential",
};

/// Members sent in one group `PATCH` unless `member_batch` says otherwise.
const DEFAULT_MEMBER_BATCH: usize = 100;

/// The largest response body read unless `max_response_bytes` says otherwise: 8 MiB, far
/// above any SCIM answer provisiond asks for (one resource, or a filtered list).
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

pub use super::scim::patch::PatchStyle;

/// Connection, throttling and rendering settings of a SCIM target.
///
/// `Debug` is derived on purpose: [`SecretString`] prints as redacted, so the token
/// never appears in logs or error reports.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// The SCIM service base URL (tenant URL); may carry a path such as `/v1.0/scim-2`.
    pub base_url: url::Url,
    /// The bearer token sent in `Authorization`.
    pub token: SecretString,
    /// How `PATCH` bodies are rendered.
    pub patch_style: PatchStyle,
    /// Maximum requests in flight across all clones of the client.
    pub concurrency: usize,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout, response body included.
    pub request_timeout: Duration,
    /// Retries after the first attempt for retryable failures.
    pub max_retries: u32,
    /// Base of the exponential backoff (`base * 2^attempt`, full jitter).
    pub backoff_base: Duration,
    /// Upper bound of one backoff delay.
    pub backoff_max: Duration,
    /// Upper bound applied to a server's `Retry-After`.
    pub max_retry_after: Duration,
    /// The largest response body read; a longer one fails its request (`ResponseTooLarge`).
    pub max_response_bytes: u64,
    /// The base URL this target had before (`previous_url`): the job's links move to the new
    /// URL instead of its cycles refusing to run against an unknown target.
    pub previous_url: Option<url::Url>,
}

impl TargetSettings {
    /// Settings with the defaults: RFC 7644 PATCH, 8 concurrent requests, 10 s connect and
    /// 60 s request timeouts, 5 retries, backoff from 500 ms up to 30 s, `Retry-After`
    /// capped at 300 s, response bodies up to 8 MiB.
    pub fn new(base_url: url::Url, token: SecretString) -> Self {
        TargetSettings {
            base_url,
            token,
            patch_style: PatchStyle::default(),
            concurrency: 8,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            previous_url: None,
        }
    }
}

/// `[jobs.target]`, as written. Absent keys take [`TargetSettings::new`]'s defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    /// Optional when the preset names the app's tenant URL.
    url: Option<String>,
    /// The bearer token from a file, an environment variable or a systemd credential
    /// (exactly one).
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    /// A systemd credential name (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    token_credential: Option<String>,
    #[serde(default)]
    patch_style: PatchStyle,
    /// 1 to 256.
    concurrency: Option<usize>,
    /// Members per group `PATCH` (default 100).
    member_batch: Option<usize>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    max_retries: Option<u32>,
    /// The largest response body read, in bytes (default 8 MiB).
    max_response_bytes: Option<u64>,
    /// Allow plain `http://` to hosts other than loopback (default false).
    #[serde(default)]
    allow_insecure_http: bool,
    /// The URL this job's target had before a move: links bound to it move to `url`.
    previous_url: Option<String>,
}

/// Check a target's keys and read its token. `preset_url` is the tenant URL the job's preset
/// names, used when `url` is absent. Returns the settings and the members per group `PATCH`.
/// Errors name the key and never quote the token.
pub(crate) fn check(
    t: RawTarget,
    preset_url: Option<&str>,
    ctx: &CheckContext<'_>,
) -> Result<(TargetSettings, usize), ConfigError> {
    let url_text = t
        .url
        .clone()
        .or_else(|| preset_url.map(str::to_string))
        .ok_or_else(|| ctx.error("url", "missing (and the preset names no tenant URL)"))?;
    let url = url::Url::parse(&url_text).map_err(|e| {
        let shown = without_userinfo(&url_text);
        ctx.error("url", format!("{shown:?} is not a URL: {e}"))
    })?;
    // The token goes in a header; a password in the URL would be printed by every error
    // and status line that shows the URL.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ctx.error(
            "url",
            "must not contain credentials (user:password@): remove them and put the \
             bearer token in token_file, token_env or token_credential",
        ));
    }
    check_http_scheme(&url, t.allow_insecure_http).map_err(|m| ctx.error("url", m))?;
    let token = read_token(&t, ctx)?;
    let mut settings = TargetSettings::new(url, token);
    settings.patch_style = t.patch_style;
    if let Some(c) = t.concurrency {
        if c == 0 || c > 256 {
            return Err(ctx.error("concurrency", "must be between 1 and 256"));
        }
        settings.concurrency = c;
    }
    if let Some(s) = &t.connect_timeout {
        settings.connect_timeout =
            parse_duration(s).map_err(|e| ctx.error("connect_timeout", e.to_string()))?;
    }
    if let Some(s) = &t.request_timeout {
        settings.request_timeout =
            parse_duration(s).map_err(|e| ctx.error("request_timeout", e.to_string()))?;
    }
    if let Some(r) = t.max_retries {
        settings.max_retries = r;
    }
    if let Some(n) = t.max_response_bytes {
        if n == 0 {
            return Err(ctx.error("max_response_bytes", "must be at least 1"));
        }
        settings.max_response_bytes = n;
    }
    if let Some(text) = &t.previous_url {
        let previous = url::Url::parse(text)
            .map_err(|e| ctx.error("previous_url", format!("not a URL: {e}")))?;
        if !matches!(previous.scheme(), "http" | "https") {
            return Err(ctx.error("previous_url", "must be http:// or https://"));
        }
        // It is compared with the stored binding, which never holds credentials; and it is
        // printed, so it must not carry any.
        if !previous.username().is_empty() || previous.password().is_some() {
            return Err(ctx.error("previous_url", "must not contain credentials"));
        }
        settings.previous_url = Some(previous);
    }
    let member_batch = t.member_batch.unwrap_or(DEFAULT_MEMBER_BATCH);
    if member_batch == 0 {
        return Err(ctx.error("member_batch", "must be at least 1"));
    }
    Ok((settings, member_batch))
}

/// The token from exactly one of its keys, surrounding whitespace trimmed.
fn read_token(t: &RawTarget, ctx: &CheckContext<'_>) -> Result<SecretString, ConfigError> {
    let picked = TOKEN
        .pick(
            t.token_file.as_deref().map(|f| ctx.resolve(f)),
            t.token_env.as_deref(),
            t.token_credential.as_deref(),
        )
        .map_err(|e| ctx.error(TOKEN.file, e.to_string()))?;
    let Some((key, secret)) = picked else {
        return Err(ctx.error(
            TOKEN.file,
            "no token: set token_file, token_env or token_credential",
        ));
    };
    let raw = ctx
        .read_secret(&secret)
        .map_err(|e| ctx.error(key, e.to_string()))?;
    let token = raw.expose_secret().trim();
    if token.is_empty() {
        return Err(ctx.error(key, "the token is empty"));
    }
    Ok(SecretString::from(token.to_string()))
}

/// `text` with anything between the scheme and an `@` in the authority replaced by `***`,
/// so an error quoting a URL that failed to parse never prints a password.
fn without_userinfo(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check_url(url: &str) -> Result<TargetSettings, ConfigError> {
        let text = format!("url = {url:?}\ntoken_env = \"T\"\n");
        let raw: RawTarget = toml::from_str(&text).unwrap();
        let env = |k: &str| (k == "T").then(|| "tok".to_string());
        let ctx = CheckContext {
            file: Path::new("/etc/provisiond.toml"),
            table: "jobs[0].target".into(),
            env: &env,
            defer_secrets: false,
        };
        check(raw, None, &ctx).map(|(s, _)| s)
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_printing_them() {
        for url in [
            "https://admin:hunter2pw@scim.example/v2",
            "https://admin@scim.example/v2",
            "http://u:hunter2pw@127.0.0.1:8080/scim",
            // Not a URL: the error quotes it, without the password.
            "https://u:hunter2pw@scim example/v2",
        ] {
            let e = check_url(url).unwrap_err();
            assert_eq!(e.key, "jobs[0].target.url", "{e}");
            let text = format!("{e} {e:?}");
            assert!(text.contains("/etc/provisiond.toml"), "{text}");
            assert!(!text.contains("hunter2pw"), "password printed: {text}");
        }
        assert!(check_url("https://scim.example/v2?mail=a@b").is_ok());
    }

    #[test]
    fn max_response_bytes_is_checked() {
        let text = "url = \"https://h/\"\ntoken_env = \"T\"\nmax_response_bytes = 0\n";
        let raw: RawTarget = toml::from_str(text).unwrap();
        let env = |k: &str| (k == "T").then(|| "tok".to_string());
        let ctx = CheckContext {
            file: Path::new("/etc/provisiond.toml"),
            table: "jobs[0].target".into(),
            env: &env,
            defer_secrets: false,
        };
        let e = check(raw, None, &ctx).err().unwrap();
        assert_eq!(e.key, "jobs[0].target.max_response_bytes", "{e}");
        let raw: RawTarget = toml::from_str(&text.replace("= 0", "= 65536")).unwrap();
        assert_eq!(check(raw, None, &ctx).unwrap().0.max_response_bytes, 65536);
    }

    #[test]
    fn userinfo_is_hidden() {
        assert_eq!(without_userinfo("https://a:b@h/x@y"), "https://***@h/x@y");
        assert_eq!(without_userinfo("https://h/x@y"), "https://h/x@y");
        assert_eq!(without_userinfo("a:b@h"), "***@h");
    }
}
