//! Settings of one target application.

use std::time::Duration;

use secrecy::SecretString;

/// How `PATCH` operations are rendered on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchStyle {
    /// RFC 7644: lowercase `op` names and JSON booleans.
    #[default]
    #[serde(rename = "rfc7644")]
    Rfc7644,
    /// What Entra sends without the `aadOptscim062020` flag: capitalised `op` names
    /// (`Add`, `Replace`, `Remove`) and booleans as the strings `"True"` / `"False"`,
    /// for targets built against that behaviour.
    EntraLegacy,
}

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
}

impl TargetSettings {
    /// Settings with the defaults: RFC 7644 PATCH, 8 concurrent requests, 10 s connect and
    /// 60 s request timeouts, 5 retries, backoff from 500 ms up to 30 s, `Retry-After`
    /// capped at 300 s.
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
        }
    }
}
