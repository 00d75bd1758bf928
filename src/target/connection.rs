//! Test Connection: what Entra's "Test Connection" button does, with a diagnosis.

use std::fmt;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::client::{parse_list, Req, ScimClient, SendError};
use super::scim::filter::eq_filter;
use super::TargetError;
use crate::http::error_chain;
use crate::model::ObjectType;

/// What stands between provisiond and a working target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionProblem {
    /// The tenant URL itself is unusable (scheme, host, redirects elsewhere).
    Url,
    /// The host name does not resolve.
    Dns,
    /// No TCP connection (refused, unreachable, dropped).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// 401 or 403: the token is wrong, expired or lacks permissions.
    Token,
    /// The answer is not what a SCIM 2.0 service sends.
    ScimCompliance,
    /// 5xx or throttling from the target.
    Server,
    /// No answer within the configured timeouts.
    Timeout,
}

impl fmt::Display for ConnectionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectionProblem::Url => {
                "the tenant URL is not usable: check its scheme (https), host and SCIM base path"
            }
            ConnectionProblem::Dns => {
                "the tenant URL's host name does not resolve: check the host name and DNS"
            }
            ConnectionProblem::Connect => {
                "cannot connect to the target: check the host, port, firewall and any proxy"
            }
            ConnectionProblem::Tls => {
                "the TLS handshake failed: check the server certificate (trusted CA, host name, expiry)"
            }
            ConnectionProblem::Token => {
                "the target rejected the token: check the Secret Token and that it is still valid"
            }
            ConnectionProblem::ScimCompliance => {
                "the target did not answer like a SCIM 2.0 service: check the tenant URL's path \
                 and the app's SCIM support"
            }
            ConnectionProblem::Server => {
                "the target reported a server error or throttling: try again later or contact the app's support"
            }
            ConnectionProblem::Timeout => {
                "the target did not answer in time: check network reachability and the server's health"
            }
        })
    }
}

/// The outcome of [`ScimClient::test_connection`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionReport {
    /// The target answered like a SCIM 2.0 service and accepted the token.
    pub ok: bool,
    /// The diagnosis when not `ok`.
    pub problem: Option<ConnectionProblem>,
    /// What was sent and what came back (never the token).
    pub detail: String,
}

impl ConnectionReport {
    fn ok(detail: String) -> Self {
        ConnectionReport {
            ok: true,
            problem: None,
            detail,
        }
    }

    fn problem(problem: ConnectionProblem, detail: String) -> Self {
        ConnectionReport {
            ok: false,
            problem: Some(problem),
            detail,
        }
    }

    /// The report for settings that [`ScimClient::new`] rejected, so that a command
    /// testing the connection can report a bad URL like any other problem.
    pub fn invalid_settings(err: &TargetError) -> Self {
        ConnectionReport::problem(ConnectionProblem::Url, err.to_string())
    }
}

impl fmt::Display for ConnectionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            None => write!(f, "connection OK: {}", self.detail),
            Some(problem) => write!(f, "{problem} ({})", self.detail),
        }
    }
}

impl ScimClient {
    /// Entra's Test Connection: `GET /Users?filter=userName eq "<random uuid>"`, expecting
    /// 200 and a ListResponse with no result. Sent once, without retries, so the report
    /// describes what the target does right now.
    pub async fn test_connection(&self) -> ConnectionReport {
        let probe = Value::String(uuid::Uuid::new_v4().to_string());
        let url = match self.url(&Method::GET, &[ObjectType::User.endpoint()]) {
            Ok(url) => url,
            Err(err) => return ConnectionReport::invalid_settings(&err),
        };
        let req = Req {
            method: Method::GET,
            url,
            query: vec![("filter", eq_filter("userName", &probe))],
            body: None,
        };
        let what = format!("GET {}", req.url);
        let raw = match self.send_once(&req).await {
            Ok(raw) => raw,
            Err(SendError::TooLarge) => {
                return ConnectionReport::problem(
                    ConnectionProblem::ScimCompliance,
                    format!("{what}: the response is larger than max_response_bytes"),
                );
            }
            Err(SendError::Http(err)) => {
                let timeout = err.is_timeout();
                let chain = error_chain(err);
                let problem = transport_problem(timeout, &chain);
                return ConnectionReport::problem(problem, format!("{what}: {chain}"));
            }
        };
        let status = raw.status;
        let code = status.as_u16();
        // Scrubbed: the server may echo the token in its body.
        let body_hint = || self.safe_snippet(&raw.body);
        let problem = |p, msg: String| ConnectionReport::problem(p, format!("{what}: {msg}"));
        match code {
            200 => {}
            401 | 403 => return problem(ConnectionProblem::Token, format!("HTTP {code}")),
            404 => {
                return problem(
                    ConnectionProblem::ScimCompliance,
                    "HTTP 404: no /Users endpoint under this URL (is the SCIM base path missing?)"
                        .into(),
                )
            }
            300..=399 => {
                let to = raw.location.as_deref().unwrap_or("no Location header");
                return problem(
                    ConnectionProblem::Url,
                    format!("HTTP {code}: redirects to {to}"),
                );
            }
            429 | 500..=599 => {
                return problem(
                    ConnectionProblem::Server,
                    format!("HTTP {code}: {}", body_hint()),
                )
            }
            _ => {
                return problem(
                    ConnectionProblem::ScimCompliance,
                    format!("HTTP {code} where 200 was expected: {}", body_hint()),
                )
            }
        }
        let body: Value = match serde_json::from_slice(&raw.body) {
            Ok(body) => body,
            Err(_) => {
                return problem(
                    ConnectionProblem::ScimCompliance,
                    format!("the body is not JSON: {}", body_hint()),
                )
            }
        };
        match parse_list(body) {
            Err(e) => problem(ConnectionProblem::ScimCompliance, e.to_string()),
            Ok(found) if !found.is_empty() => problem(
                ConnectionProblem::ScimCompliance,
                format!(
                    "{} user(s) returned for a random userName: the filter is ignored or not supported",
                    found.len()
                ),
            ),
            Ok(_) => {
                debug_assert_eq!(status, StatusCode::OK);
                ConnectionReport::ok(format!("{what}: HTTP 200, empty ListResponse"))
            }
        }
    }
}

/// Diagnoses a transport failure from reqwest's classification and the error chain
/// (reqwest does not expose DNS or TLS failures as types, only in their messages).
fn transport_problem(timeout: bool, chain: &str) -> ConnectionProblem {
    let text = chain.to_ascii_lowercase();
    if timeout {
        ConnectionProblem::Timeout
    } else if text.contains("dns error")
        || text.contains("failed to lookup address")
        || text.contains("name or service not known")
        || text.contains("no such host")
    {
        ConnectionProblem::Dns
    } else if [
        "certificate",
        "tls",
        "handshake",
        "invalidcontenttype",
        "alert",
    ]
    .iter()
    .any(|needle| text.contains(needle))
    {
        ConnectionProblem::Tls
    } else {
        // Also when accepted then dropped: something listens there but does not answer
        // HTTP as expected.
        ConnectionProblem::Connect
    }
}
