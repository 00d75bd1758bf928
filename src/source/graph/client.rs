//! The Microsoft Graph HTTP client: OAuth 2.0 client credentials against the configured
//! authority, a token cache, and one bounded retry loop for every GET.
//!
//! Token request and response follow microsoft-graph-docs `concepts/auth-v2-service.md`
//! ("4. Request an access token": `POST {authority}/{tenant}/oauth2/v2.0/token` with
//! `client_id`, `scope={graph}/.default`, `client_secret`, `grant_type=client_credentials`;
//! the answer carries `access_token` and `expires_in`). With a certificate credential,
//! `client_assertion_type` and a freshly signed `client_assertion` replace `client_secret`
//! (entra-docs `identity-platform/certificate-credentials.md`, see [`super::credential`]).
//! Errors from the token endpoint are the identity platform's `{"error", "error_description":
//! "AADSTS…", "error_codes"}`.
//!
//! Throttling follows `concepts/throttling.md`: a 429 (or 503) carries `Retry-After`, which is
//! honoured (capped); without it the client backs off exponentially with full jitter, as the
//! SCIM client does (both use `crate::http`). Every request here is a GET or the token POST,
//! both safe to repeat, so transport failures and 500/502/504 are retried too, a bounded
//! number of times.

use super::credential::CLIENT_ASSERTION_TYPE;
use super::{GraphCredential, GraphSettings};
use crate::http::parse_retry_after;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// Longest piece of an unexpected body kept in an error message.
const BODY_SNIPPET: usize = 200;

/// The application permissions a Graph source needs, for error messages.
/// (Least privileged per endpoint: `serviceprincipal-list-approleassignedto-permissions.md`,
/// `user-delta.md`, `group-delta-permissions.md`; Directory.Read.All is in all three lists.)
pub(crate) const PERMISSIONS_HINT: &str =
    "the app registration needs the Microsoft Graph application \
permissions Application.Read.All, User.Read.All and GroupMember.Read.All (or Directory.Read.All \
alone), granted with admin consent";

/// A failed Graph or token request. Never contains the client secret, the private key, a
/// client assertion or an access token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// The token endpoint could not be reached (or did not answer in time).
    #[error("token endpoint {url} unreachable: {reason}")]
    TokenUnreachable { url: String, reason: String },
    /// The token endpoint refused: `error` and the AADSTS description.
    #[error("token request to {url} refused (HTTP {status}, {error}): {description}")]
    TokenRefused {
        url: String,
        status: u16,
        error: String,
        description: String,
        retryable: bool,
    },
    /// The token endpoint answered something that is not a token.
    #[error("token endpoint {url} answered HTTP {status} without a usable token: {reason}")]
    TokenInvalid {
        url: String,
        status: u16,
        reason: String,
    },
    /// Graph answered with an error status (after any retries).
    #[error("GET {path} failed with HTTP {status} ({code}): {message}{}", hint(*.status))]
    Status {
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    /// No complete answer: connection refused or dropped, or a timeout.
    #[error("GET {path}: {reason}")]
    Transport { path: String, reason: String },
    /// The answer is not what the Graph docs describe (bad JSON, no `value`, a link elsewhere).
    #[error("GET {path}: unexpected answer: {reason}")]
    Invalid { path: String, reason: String },
    /// A page of another shape than a Graph collection page (no `value` array, an item that
    /// is not an object): never read as an empty or shorter list, and not retried (the same
    /// request gets the same answer).
    #[error("GET {path}: not a Graph collection page: {reason}")]
    Misshaped { path: String, reason: String },
    /// The delta token is no longer valid: a full read is needed (`410 Gone`, or
    /// `syncStateNotFound` / `resyncRequired`, `concepts/delta-query-overview.md`,
    /// "Synchronization reset" and "Token duration").
    #[error("GET {path}: the delta token is no longer valid (HTTP {status}, {code})")]
    DeltaExpired {
        path: String,
        status: u16,
        code: String,
    },
    /// The read ran past its `read_timeout`.
    #[error("the read did not finish within read_timeout ({})", crate::util::format_duration(*.limit))]
    Deadline { limit: Duration },
    /// The settings cannot be used (HTTP client setup).
    #[error("invalid Graph settings: {reason}")]
    Settings { reason: String },
    /// The client assertion could not be signed with the certificate's key.
    #[error("no client assertion: {0}")]
    Assertion(#[from] super::CertificateError),
}

fn hint(status: u16) -> String {
    if status == 403 {
        format!("; {PERMISSIONS_HINT}")
    } else {
        String::new()
    }
}

impl GraphError {
    /// Whether a later cycle may succeed without a configuration change.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::TokenUnreachable { .. }
            | GraphError::Transport { .. }
            | GraphError::Deadline { .. }
            | GraphError::DeltaExpired { .. } => true,
            GraphError::TokenRefused { retryable, .. } => *retryable,
            GraphError::TokenInvalid { status, .. } => *status >= 500,
            GraphError::Status { status, .. } => *status == 429 || *status >= 500,
            GraphError::Invalid { .. } => true,
            GraphError::Settings { .. }
            | GraphError::Assertion(_)
            | GraphError::Misshaped { .. } => false,
        }
    }
}

/// When a read must stop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    pub(crate) fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
        }
    }

    fn remaining(&self) -> Result<Duration, GraphError> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(GraphError::Deadline { limit: self.limit })
        } else {
            Ok(left)
        }
    }
}

struct CachedToken {
    value: SecretString,
    /// Renewed from this point on, shortly before it expires.
    refresh_at: Instant,
}

/// Requests sent, for logs and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tokens: AtomicU64,
    pub gets: AtomicU64,
    pub retries: AtomicU64,
}

/// A Graph client for one source. Holds the credential and the cached token; `Debug` shows
/// neither.
pub(crate) struct GraphClient {
    http: reqwest::Client,
    token_url: Url,
    /// Graph base URL, ending with `/`.
    base: Url,
    scope: String,
    tenant_id: String,
    client_id: String,
    credential: GraphCredential,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    request_timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_retry_after: Duration,
    pub counters: Counters,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("token_url", &self.token_url.as_str())
            .field("base", &self.base.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    pub(crate) fn new(s: &GraphSettings) -> Result<GraphClient, GraphError> {
        let settings = |reason: String| GraphError::Settings { reason };
        let mut token_url = s.authority.clone();
        token_url
            .path_segments_mut()
            .map_err(|()| settings(format!("authority {} cannot be a base URL", s.authority)))?
            .pop_if_empty()
            .extend([s.tenant_id.as_str(), "oauth2", "v2.0", "token"]);
        let mut base = s.graph_url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        // The resource's app ID URI is the Graph host: https://graph.microsoft.com/.default,
        // https://graph.microsoft.us/.default, … (auth-v2-service.md, the `scope` parameter).
        let scope = format!("{}/.default", s.graph_url.origin().ascii_serialization());
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("provisiond/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            // Links are followed only after checking their host (see `link`); a redirect would
            // bypass that check.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| settings(format!("HTTP client: {}", crate::http::error_chain(e))))?;
        Ok(GraphClient {
            http,
            token_url,
            base,
            scope,
            tenant_id: s.tenant_id.clone(),
            client_id: s.client_id.clone(),
            credential: s.credential.clone(),
            token: tokio::sync::Mutex::new(None),
            request_timeout: s.request_timeout,
            max_retries: s.max_retries,
            backoff_base: s.backoff_base,
            backoff_max: s.backoff_max,
            max_retry_after: s.max_retry_after,
            counters: Counters::default(),
        })
    }

    pub(crate) fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// `{graph}/{segments…}?{query}`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, GraphError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| GraphError::Settings {
                reason: "graph_url cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// A `@odata.nextLink` / `@odata.deltaLink` to follow. It must point at the configured
    /// Graph host: the access token goes with it.
    pub(crate) fn link(&self, from: &Url, link: &str) -> Result<Url, GraphError> {
        let invalid = |reason: String| GraphError::Invalid {
            path: from.path().to_string(),
            reason,
        };
        let url = Url::parse(link).map_err(|e| invalid(format!("link {link:?}: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(invalid(format!(
                "refusing to follow a link to another host ({}); graph_url is {}",
                url.origin().ascii_serialization(),
                self.base.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }

    /// The cached access token, renewed shortly before it expires.
    pub(crate) async fn token(&self, deadline: Deadline) -> Result<SecretString, GraphError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let fresh = self.fetch_token(deadline).await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Forget the cached token (Graph said 401: it may have been revoked or expired early).
    async fn drop_token(&self) {
        *self.token.lock().await = None;
    }

    async fn fetch_token(&self, deadline: Deadline) -> Result<CachedToken, GraphError> {
        let url = self.token_url.as_str().to_string();
        let mut attempt = 0u32;
        loop {
            let left = deadline.remaining()?;
            // A fresh assertion for every attempt: each has its own `jti` and time range.
            let proof = match &self.credential {
                GraphCredential::Secret(secret) => secret.clone(),
                GraphCredential::Certificate(c) => {
                    c.assertion(&self.client_id, &url, SystemTime::now())?
                }
            };
            let mut form = vec![
                ("client_id", self.client_id.as_str()),
                ("scope", self.scope.as_str()),
            ];
            match &self.credential {
                GraphCredential::Secret(_) => form.push(("client_secret", proof.expose_secret())),
                GraphCredential::Certificate(_) => {
                    form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
                    form.push(("client_assertion", proof.expose_secret()));
                }
            }
            form.push(("grant_type", "client_credentials"));
            self.counters.tokens.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let sent = self
                .http
                .post(self.token_url.clone())
                .header(ACCEPT, "application/json")
                .form(&form)
                .timeout(left.min(self.request_timeout))
                .send()
                .await;
            let (failure, retry_after) = match sent {
                Err(e) => (
                    GraphError::TokenUnreachable {
                        url: url.clone(),
                        reason: crate::http::error_chain(e),
                    },
                    None,
                ),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = header(&resp, RETRY_AFTER);
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) => {
                            return Err(GraphError::TokenUnreachable {
                                url,
                                reason: crate::http::error_chain(e),
                            })
                        }
                    };
                    tracing::debug!(
                        tenant = %self.tenant_id,
                        status = status.as_u16(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "token response"
                    );
                    if status.is_success() {
                        return self.parse_token(&url, status, &body);
                    }
                    let error = self.token_error(&url, status, &body);
                    if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                        return Err(error);
                    }
                    (error, retry_after)
                }
            };
            if attempt >= self.max_retries {
                return Err(failure);
            }
            let delay = self.delay(attempt, retry_after.as_deref());
            attempt += 1;
            tracing::warn!(tenant = %self.tenant_id, attempt, delay_ms = delay.as_millis() as u64, error = %failure, "retrying token request");
            self.sleep(delay, deadline).await?;
        }
    }

    fn parse_token(
        &self,
        url: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Result<CachedToken, GraphError> {
        let invalid = |reason: &str| GraphError::TokenInvalid {
            url: url.to_string(),
            status: status.as_u16(),
            reason: reason.to_string(),
        };
        let v: Value = serde_json::from_slice(body).map_err(|_| invalid("the body is not JSON"))?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("no access_token"))?;
        if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(invalid(
                "the access_token has characters not allowed in a header",
            ));
        }
        let expires_in = match v.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| invalid("no expires_in"))?;
        let lifetime = Duration::from_secs(expires_in);
        // Renew 5 minutes early (a tenth of the lifetime for short-lived tokens), so that a
        // token never expires in the middle of a page sequence.
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        Ok(CachedToken {
            value: SecretString::from(token.to_string()),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        })
    }

    /// The identity platform's error body, without the secret.
    fn token_error(&self, url: &str, status: StatusCode, body: &[u8]) -> GraphError {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
            return GraphError::TokenInvalid {
                url: url.to_string(),
                status: status.as_u16(),
                reason: snippet(body),
            };
        };
        let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let error = text("error");
        let full = text("error_description");
        // "AADSTS7000215: Invalid client secret provided. …\r\nTrace ID: …\r\nCorrelation ID: …
        // \r\nTimestamp: …": the first line says what is wrong; the ids help Microsoft support.
        let mut lines = full.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut description = lines.next().unwrap_or("").to_string();
        let ids: Vec<&str> = lines
            .filter(|l| l.starts_with("Trace ID") || l.starts_with("Correlation ID"))
            .collect();
        if !ids.is_empty() {
            description = format!("{description} ({})", ids.join(", "));
        }
        if description.is_empty() {
            description = snippet(body);
        }
        match &self.credential {
            GraphCredential::Secret(secret) => {
                let secret = secret.expose_secret();
                if !secret.is_empty() && description.contains(secret) {
                    description = description.replace(secret, "[REDACTED]");
                }
            }
            GraphCredential::Certificate(c) => {
                let now = SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                if now > c.not_after() {
                    description = format!(
                        "{description}; the configured certificate expired: make a new one and \
                         upload it to the app registration"
                    );
                } else if now < c.not_before() {
                    description = format!(
                        "{description}; the configured certificate is not valid yet (check the \
                         clock)"
                    );
                } else if description.contains("AADSTS700027") {
                    description = format!(
                        "{description}; provisiond signs with certificate {} (SHA-1 thumbprint \
                         {}, SHA-256 {}): is it uploaded to the app registration's Certificates \
                         & secrets?",
                        c.subject(),
                        c.sha1_thumbprint(),
                        c.sha256_thumbprint()
                    );
                }
            }
        }
        GraphError::TokenRefused {
            url: url.to_string(),
            status: status.as_u16(),
            error: if error.is_empty() {
                "error".into()
            } else {
                error
            },
            description,
            retryable: status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
        }
    }

    /// GET a Graph URL and return its JSON object, retrying throttling, server errors and
    /// transport failures; a 401 renews the token once.
    pub(crate) async fn get(
        &self,
        url: &Url,
        deadline: Deadline,
    ) -> Result<Map<String, Value>, GraphError> {
        let path = url.path().to_string();
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            let left = deadline.remaining()?;
            let token = self.token(deadline).await?;
            let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| GraphError::Settings {
                    reason: "the access token has characters not allowed in a header".into(),
                })?;
            auth.set_sensitive(true);
            self.counters.gets.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let sent = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, auth)
                .header(ACCEPT, "application/json")
                .timeout(left.min(self.request_timeout))
                .send()
                .await;
            let (failure, retry_after) = match sent {
                Err(e) => (
                    GraphError::Transport {
                        path: path.clone(),
                        reason: crate::http::error_chain(e),
                    },
                    None,
                ),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = header(&resp, RETRY_AFTER);
                    let body = resp.bytes().await;
                    tracing::debug!(
                        path = %path,
                        status = status.as_u16(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Graph response"
                    );
                    match body {
                        Err(e) => (
                            GraphError::Transport {
                                path: path.clone(),
                                reason: crate::http::error_chain(e),
                            },
                            None,
                        ),
                        Ok(body) if status.is_success() => {
                            match serde_json::from_slice::<Value>(&body) {
                                Ok(Value::Object(m)) => return Ok(m),
                                // A cut-off body is a transport failure in disguise: retried.
                                Ok(_) | Err(_) => (
                                    GraphError::Invalid {
                                        path: path.clone(),
                                        reason: format!(
                                            "HTTP {} with a body that is not a JSON object: {}",
                                            status.as_u16(),
                                            snippet(&body)
                                        ),
                                    },
                                    None,
                                ),
                            }
                        }
                        Ok(body) => {
                            let (code, message) = graph_error_body(&body);
                            if status == StatusCode::UNAUTHORIZED && !renewed {
                                // Expired early or revoked: one fresh token, then the
                                // request again (not counted as a retry).
                                tracing::info!(path = %path, code = %code, "Graph said 401; renewing the access token");
                                renewed = true;
                                self.drop_token().await;
                                continue;
                            }
                            if status == StatusCode::GONE
                                || code.eq_ignore_ascii_case("syncStateNotFound")
                                || code.eq_ignore_ascii_case("resyncRequired")
                            {
                                return Err(GraphError::DeltaExpired {
                                    path,
                                    status: status.as_u16(),
                                    code,
                                });
                            }
                            let error = GraphError::Status {
                                path: path.clone(),
                                status: status.as_u16(),
                                code,
                                message,
                            };
                            let retryable = matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504);
                            if !retryable {
                                return Err(error);
                            }
                            (error, retry_after)
                        }
                    }
                }
            };
            if attempt >= self.max_retries {
                return Err(failure);
            }
            let delay = self.delay(attempt, retry_after.as_deref());
            attempt += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path = %path, attempt, delay_ms = delay.as_millis() as u64, error = %failure, "retrying Graph request");
            self.sleep(delay, deadline).await?;
        }
    }

    /// `Retry-After` when given (capped), else full-jitter exponential backoff.
    fn delay(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        if let Some(d) = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now())) {
            return d.min(self.max_retry_after);
        }
        crate::http::backoff(self.backoff_base, self.backoff_max, attempt)
    }

    /// Sleep, unless the deadline comes first.
    async fn sleep(&self, delay: Duration, deadline: Deadline) -> Result<(), GraphError> {
        if delay >= deadline.remaining()? {
            return Err(GraphError::Deadline {
                limit: deadline.limit,
            });
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `code` and `message` of a Graph error body (`concepts/errors.md`: `{"error": {"code",
/// "message", "innerError"}}`), or a snippet of any other body.
fn graph_error_body(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let e = v.get("error");
            let text = |k: &str| {
                e.and_then(|e| e.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let code = text("code");
            let message = text("message");
            if code.is_empty() && message.is_empty() {
                ("unknown".into(), snippet(body))
            } else {
                (code, message)
            }
        }
        Err(_) => ("unknown".into(), snippet(body)),
    }
}

/// The start of a body, printable, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cut: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_SNIPPET)
        .collect();
    let cut = cut.trim().to_string();
    if cut.is_empty() {
        "(empty body)".into()
    } else if text.chars().count() > BODY_SNIPPET {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> GraphClient {
        let mut s = GraphSettings::new("t", "c", SecretString::from("x"), "sp").unwrap();
        s.graph_url = Url::parse("https://graph.microsoft.us/v1.0").unwrap();
        s.authority = Url::parse("https://login.microsoftonline.us").unwrap();
        GraphClient::new(&s).unwrap()
    }

    #[test]
    fn urls_scope_and_links() {
        let c = client();
        assert_eq!(
            c.token_url().as_str(),
            "https://login.microsoftonline.us/t/oauth2/v2.0/token"
        );
        assert_eq!(c.scope, "https://graph.microsoft.us/.default");
        let u = c
            .url(&["users", "delta"], &[("$select", "id,mail")])
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://graph.microsoft.us/v1.0/users/delta?%24select=id%2Cmail"
        );
        assert!(c
            .link(
                &u,
                "https://graph.microsoft.us/v1.0/users/delta?$skiptoken=x"
            )
            .is_ok());
        // The access token goes with a link: never to another host.
        let e = c
            .link(&u, "https://evil.example/v1.0/users/delta?$skiptoken=x")
            .unwrap_err();
        assert!(e.to_string().contains("another host"), "{e}");
        assert!(c.link(&u, "http://graph.microsoft.us/v1.0/x").is_err());
    }

    #[test]
    fn token_errors_keep_the_first_line_and_the_ids() {
        let c = client();
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t-1\r\nCorrelation ID: c-1\r\nTimestamp: 2026-01-01 00:00:00Z","error_codes":[7000215]}"#;
        let e = c.token_error("https://login/t", StatusCode::UNAUTHORIZED, body);
        let m = e.to_string();
        assert!(
            m.contains("AADSTS7000215: Invalid client secret provided. (Trace ID: t-1, Correlation ID: c-1)"),
            "{m}"
        );
        assert!(!m.contains("Timestamp"), "{m}");
        assert!(!e.is_retryable());
        let e = c.token_error(
            "https://login/t",
            StatusCode::BAD_GATEWAY,
            b"<html>oops</html>",
        );
        assert!(e.to_string().contains("<html>oops</html>"), "{e}");
        assert!(e.is_retryable());
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let c = client();
        assert_eq!(c.delay(0, Some("7")), Duration::from_secs(7));
        assert_eq!(c.delay(0, Some("100000")), Duration::from_secs(300));
        assert!(c.delay(3, None) <= Duration::from_secs(4));
    }

    #[test]
    fn retryable_graph_errors_are_pinned() {
        let s = |x: &str| x.to_string();
        let status = |status: u16| GraphError::Status {
            path: s("/users/delta"),
            status,
            code: s("x"),
            message: s("x"),
        };
        let refused = |retryable: bool| GraphError::TokenRefused {
            url: s("u"),
            status: 400,
            error: s("invalid_client"),
            description: s("AADSTS7000215"),
            retryable,
        };
        let token_invalid = |status: u16| GraphError::TokenInvalid {
            url: s("u"),
            status,
            reason: s("x"),
        };
        let cases = [
            (
                GraphError::TokenUnreachable {
                    url: s("u"),
                    reason: s("x"),
                },
                true,
            ),
            (refused(true), true),
            (refused(false), false),
            (token_invalid(200), false),
            (token_invalid(502), true),
            (status(403), false),
            (status(404), false),
            (status(429), true),
            (status(500), true),
            (
                GraphError::Transport {
                    path: s("/p"),
                    reason: s("x"),
                },
                true,
            ),
            (
                GraphError::Invalid {
                    path: s("/p"),
                    reason: s("x"),
                },
                true,
            ),
            (
                GraphError::Misshaped {
                    path: s("/p"),
                    reason: s("x"),
                },
                false,
            ),
            (
                GraphError::DeltaExpired {
                    path: s("/p"),
                    status: 410,
                    code: s("x"),
                },
                true,
            ),
            (
                GraphError::Deadline {
                    limit: Duration::from_secs(1),
                },
                true,
            ),
            (GraphError::Settings { reason: s("x") }, false),
            (
                GraphError::Assertion(super::super::CertificateError::Sign(s("x"))),
                false,
            ),
        ];
        for (e, retryable) in cases {
            assert_eq!(e.is_retryable(), retryable, "{e}");
        }
    }
}
