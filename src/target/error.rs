//! Errors of the SCIM client, with the Entra provisioning-log codes they map to.

use reqwest::Method;

/// A failed SCIM request, or invalid settings.
///
/// Messages carry method, URL path, status and the SCIM `scimType` / `detail`; they never
/// carry the token.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The settings cannot be used (bad base URL, zero concurrency, HTTP client setup).
    #[error("invalid target settings: {reason}")]
    Settings {
        /// What is wrong.
        reason: String,
    },
    /// The server answered with an error status (after any retries).
    #[error("{method} {path} failed with HTTP {status}{}", scim_suffix(.scim_type, .detail))]
    Status {
        /// Request method.
        method: Method,
        /// Request URL path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// SCIM `scimType` of the error body, if any.
        scim_type: Option<String>,
        /// SCIM `detail` of the error body, or the start of a non-SCIM body.
        detail: Option<String>,
        /// The request may have been processed although it failed (a `POST` answered 500,
        /// 502 or 504): match again before creating again.
        ambiguous: bool,
    },
    /// The response cannot be understood as SCIM (bad JSON, missing `id`, unexpected
    /// status or redirect).
    #[error("{method} {path}: response is not valid SCIM (HTTP {status}): {reason}")]
    Incompatible {
        /// Request method.
        method: Method,
        /// Request URL path.
        path: String,
        /// HTTP status code of the response.
        status: u16,
        /// What was wrong with it.
        reason: String,
        /// The answer came from a resource collection (`/Users`, `/Groups`): a 404 there
        /// means a wrong base URL, so no request of the cycle can succeed.
        collection: bool,
    },
    /// No complete response within the timeout.
    #[error("{method} {path} timed out{}", ambiguity_suffix(*.ambiguous))]
    Timeout {
        /// Request method.
        method: Method,
        /// Request URL path.
        path: String,
        /// A connection was established (false: the connect itself timed out, so the
        /// target was never reached).
        connected: bool,
        /// The request may have been processed (a `POST` that was sent): match again
        /// before creating again.
        ambiguous: bool,
    },
    /// The connection could not be made, or dropped before a complete response.
    #[error("{method} {path}: connection failed: {reason}{}", ambiguity_suffix(*.ambiguous))]
    Connection {
        /// Request method.
        method: Method,
        /// Request URL path.
        path: String,
        /// The transport error chain.
        reason: String,
        /// A connection was established before it failed (false: refused or unroutable,
        /// the target was never reached).
        connected: bool,
        /// The request may have been processed (a `POST` that was sent): match again
        /// before creating again.
        ambiguous: bool,
    },
    /// The response body grew past `max_response_bytes`; reading stopped there.
    #[error(
        "{method} {path}: the response is larger than {limit} bytes (max_response_bytes){}",
        ambiguity_suffix(*.ambiguous)
    )]
    ResponseTooLarge {
        /// Request method.
        method: Method,
        /// Request URL path.
        path: String,
        /// The cap, in bytes.
        limit: u64,
        /// The request was processed (a `POST` answered at length): match again before
        /// creating again.
        ambiguous: bool,
    },
    /// A target id that cannot be used: returned by the target (create, match) or held by a
    /// link, it is empty, a dot segment, or contains a control character or `/`, so a URL
    /// built from it could name another resource or the collection itself.
    #[error("{method} {path}: refused target id {id}: {reason}")]
    InvalidId {
        /// Request method (the one that returned the id, or the one that would have used it).
        method: Method,
        /// The collection's URL path.
        path: String,
        /// The id, escaped (control characters shown as escapes) and cut to a bounded length.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A well-formed SCIM answer that cannot be trusted for this object, such as a
    /// ListResponse whose `totalResults` is above the resources it returned (taking it as
    /// "no match" could create a duplicate).
    #[error("{method} {path}: untrustworthy response (HTTP {status}): {reason}")]
    InvalidResponse {
        /// Request method.
        method: Method,
        /// Request URL path.
        path: String,
        /// HTTP status code of the response.
        status: u16,
        /// What was wrong with it.
        reason: String,
    },
}

fn scim_suffix(scim_type: &Option<String>, detail: &Option<String>) -> String {
    match (scim_type, detail) {
        (Some(t), Some(d)) => format!(" ({t}): {d}"),
        (Some(t), None) => format!(" ({t})"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    }
}

fn ambiguity_suffix(ambiguous: bool) -> &'static str {
    if ambiguous {
        " (the request may have been processed)"
    } else {
        ""
    }
}

/// How far a failure reaches, after the client's bounded retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// This object only: an entry-level error (a 5xx, a 4xx, a bad answer to this request).
    Object,
    /// Perhaps the whole target (a connection failure, a timeout, a 403): this object
    /// fails, and a run of these with no success between opens the circuit breaker.
    Target,
    /// The whole cycle: credentials refused, the collections are not SCIM, unusable settings.
    Cycle,
}

impl TargetError {
    /// The Entra provisioning-log error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            // Not an Entra code: Entra validates settings in its portal before any cycle.
            TargetError::Settings { .. } => "InvalidConfiguration",
            TargetError::Status { status, .. } => match status {
                401 | 403 => "Unauthorized",
                404 => "InvalidAnchor",
                409 => "EntryConflict",
                429 => "TooManyRequests",
                500..=599 => "InternalServerError",
                400..=499 => "WebExceptionProtocolError",
                _ => "ServiceIncompatible",
            },
            TargetError::Incompatible { .. } => "ServiceIncompatible",
            TargetError::Timeout { .. } => "Timeout",
            TargetError::Connection { .. } => "ConnectionFailed",
            // Not Entra codes: Entra does not guard against these hostile answers.
            TargetError::ResponseTooLarge { .. } => "ResponseTooLarge",
            TargetError::InvalidId { .. } => "InvalidTargetId",
            TargetError::InvalidResponse { .. } => "InvalidResponse",
        }
    }

    /// Whether trying again later may succeed (throttling, server errors, timeouts,
    /// connection failures). The client has already retried; this is for escrow.
    pub fn is_retryable(&self) -> bool {
        match self {
            TargetError::Status { status, .. } => *status == 429 || (500..=599).contains(status),
            TargetError::Timeout { .. } | TargetError::Connection { .. } => true,
            // The same answer would come again: these fail their object until the target
            // (or the object) changes.
            TargetError::Settings { .. }
            | TargetError::Incompatible { .. }
            | TargetError::ResponseTooLarge { .. }
            | TargetError::InvalidId { .. }
            | TargetError::InvalidResponse { .. } => false,
        }
    }

    /// How far this failure reaches, once the client's retries are spent: see [`Reach`].
    pub fn reach(&self) -> Reach {
        match self {
            TargetError::Settings { .. } => Reach::Cycle,
            TargetError::Status { status: 401, .. } => Reach::Cycle,
            // One 403 may be this object's (a protected account); 403 on everything is a
            // refused token, which the circuit breaker sees as a run with no success.
            TargetError::Status { status: 403, .. } => Reach::Target,
            // The server answered: whatever it said is about this request.
            TargetError::Status { .. } => Reach::Object,
            // A 404 on a collection: the base URL is wrong. Any other answer a collection
            // gives that is not SCIM may be a proxy's hiccup: a run of them opens the breaker.
            TargetError::Incompatible {
                collection: true,
                status,
                ..
            } => {
                if *status == 404 {
                    Reach::Cycle
                } else {
                    Reach::Target
                }
            }
            TargetError::Incompatible { .. } => Reach::Object,
            TargetError::Timeout { .. } | TargetError::Connection { .. } => Reach::Target,
            // About one object's answer or id: the next object may be fine.
            TargetError::ResponseTooLarge { .. }
            | TargetError::InvalidId { .. }
            | TargetError::InvalidResponse { .. } => Reach::Object,
        }
    }

    /// Whether the whole cycle must stop at once: the credentials were rejected (401), the
    /// target's collections are not SCIM or the settings are unusable, so every further
    /// request would fail too. Connection failures and timeouts are not: one reset fails
    /// one object, and a run of them opens the export's circuit breaker.
    pub fn is_fatal_for_cycle(&self) -> bool {
        self.reach() == Reach::Cycle
    }

    /// The target was never reached: the connection was refused or could not be made in
    /// time, so nothing was sent.
    pub fn never_reached(&self) -> bool {
        matches!(
            self,
            TargetError::Timeout {
                connected: false,
                ..
            } | TargetError::Connection {
                connected: false,
                ..
            }
        )
    }

    /// Whether the job goes into quarantine with `EncounteredQuarantineException` (Entra
    /// code `Unauthorized` or `ServiceIncompatible`): the token was refused (401, 403) or the
    /// target does not speak SCIM. An unreachable target or a broken store is not the
    /// target's fault: its cycle just fails.
    pub fn is_quarantine_exception(&self) -> bool {
        match self {
            TargetError::Status { status, .. } => {
                matches!(status, 401 | 403) || !(400..=599).contains(status)
            }
            TargetError::Incompatible { .. } => true,
            TargetError::Settings { .. }
            | TargetError::Timeout { .. }
            | TargetError::Connection { .. }
            | TargetError::ResponseTooLarge { .. }
            | TargetError::InvalidId { .. }
            | TargetError::InvalidResponse { .. } => false,
        }
    }

    /// Whether a non-idempotent request (`POST`) may have been processed even though it
    /// failed. The caller must match the object again before creating it again, or it
    /// risks a duplicate.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            TargetError::Status { ambiguous, .. }
            | TargetError::Timeout { ambiguous, .. }
            | TargetError::Connection { ambiguous, .. }
            | TargetError::ResponseTooLarge { ambiguous, .. } => *ambiguous,
            TargetError::Settings { .. }
            | TargetError::Incompatible { .. }
            | TargetError::InvalidId { .. }
            | TargetError::InvalidResponse { .. } => false,
        }
    }

    /// The HTTP status of the response, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            TargetError::Status { status, .. }
            | TargetError::Incompatible { status, .. }
            | TargetError::InvalidResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 409: the object already exists in the target (match and adopt it).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409) && matches!(self, TargetError::Status { .. })
    }

    /// 404: the linked object is gone from the target (match again, then create).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) && matches!(self, TargetError::Status { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> TargetError {
        TargetError::Status {
            method: Method::PATCH,
            path: "/Users/1".into(),
            status,
            scim_type: None,
            detail: None,
            ambiguous: false,
        }
    }

    fn incompatible(status: u16, collection: bool) -> TargetError {
        TargetError::Incompatible {
            method: Method::GET,
            path: "/Users".into(),
            status,
            reason: "x".into(),
            collection,
        }
    }

    fn connection(connected: bool) -> TargetError {
        TargetError::Connection {
            method: Method::GET,
            path: "/Users".into(),
            reason: "refused".into(),
            connected,
            ambiguous: false,
        }
    }

    /// Every variant with its Entra code, whether it is retryable, and how far it reaches.
    fn cases() -> Vec<(TargetError, &'static str, bool, Reach)> {
        vec![
            (
                TargetError::Settings { reason: "x".into() },
                "InvalidConfiguration",
                false,
                Reach::Cycle,
            ),
            (status(401), "Unauthorized", false, Reach::Cycle),
            (status(403), "Unauthorized", false, Reach::Target),
            (
                status(400),
                "WebExceptionProtocolError",
                false,
                Reach::Object,
            ),
            (status(404), "InvalidAnchor", false, Reach::Object),
            (status(409), "EntryConflict", false, Reach::Object),
            (status(429), "TooManyRequests", true, Reach::Object),
            (status(500), "InternalServerError", true, Reach::Object),
            (status(503), "InternalServerError", true, Reach::Object),
            (status(302), "ServiceIncompatible", false, Reach::Object),
            (
                incompatible(200, false),
                "ServiceIncompatible",
                false,
                Reach::Object,
            ),
            (
                incompatible(200, true),
                "ServiceIncompatible",
                false,
                Reach::Target,
            ),
            (
                incompatible(404, true),
                "ServiceIncompatible",
                false,
                Reach::Cycle,
            ),
            (
                TargetError::Timeout {
                    method: Method::POST,
                    path: "/Users".into(),
                    connected: true,
                    ambiguous: true,
                },
                "Timeout",
                true,
                Reach::Target,
            ),
            (
                TargetError::ResponseTooLarge {
                    method: Method::POST,
                    path: "/Users".into(),
                    limit: 8,
                    ambiguous: true,
                },
                "ResponseTooLarge",
                false,
                Reach::Object,
            ),
            (
                TargetError::InvalidId {
                    method: Method::DELETE,
                    path: "/Users".into(),
                    id: "\"..\"".into(),
                    reason: "x",
                },
                "InvalidTargetId",
                false,
                Reach::Object,
            ),
            (
                TargetError::InvalidResponse {
                    method: Method::GET,
                    path: "/Users".into(),
                    status: 200,
                    reason: "x".into(),
                },
                "InvalidResponse",
                false,
                Reach::Object,
            ),
            (connection(false), "ConnectionFailed", true, Reach::Target),
            (connection(true), "ConnectionFailed", true, Reach::Target),
        ]
    }

    #[test]
    fn codes_retryable_and_reach_are_pinned() {
        for (e, code, retryable, reach) in cases() {
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.is_retryable(), retryable, "{e}");
            assert_eq!(e.reach(), reach, "{e}");
            assert_eq!(e.is_fatal_for_cycle(), reach == Reach::Cycle, "{e}");
        }
    }

    #[test]
    fn quarantine_exceptions_are_exactly_unauthorized_and_service_incompatible() {
        // The cycle used to decide this by code name; the typed answer must agree.
        let mut seen = (false, false);
        for (e, ..) in cases() {
            let by_code = matches!(e.code(), "Unauthorized" | "ServiceIncompatible");
            assert_eq!(e.is_quarantine_exception(), by_code, "{e}");
            seen = (seen.0 || by_code, seen.1 || !by_code);
        }
        assert_eq!(seen, (true, true), "both kinds are among the cases");
        for (code, exception) in [
            (401, true),
            (403, true),
            (302, true),
            (404, false),
            (429, false),
            (503, false),
        ] {
            assert_eq!(status(code).is_quarantine_exception(), exception, "{code}");
        }
    }

    #[test]
    fn a_connection_failure_alone_never_ends_the_cycle() {
        // It used to: one reset behind a flaky proxy failed the whole cycle.
        for (e, ..) in cases() {
            if matches!(
                e.code(),
                "ConnectionFailed" | "Timeout" | "InternalServerError"
            ) {
                assert!(!e.is_fatal_for_cycle(), "{e}");
            }
        }
        assert!(connection(false).never_reached());
        assert!(!connection(true).never_reached());
    }
}
