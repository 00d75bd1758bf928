//! What can go wrong talking to an LDAP server, typed so callers can tell a retryable outage
//! from a configuration mistake without parsing messages. Every message is secret-free: it
//! names URLs, DNs and result codes, never a password.

use std::time::Duration;

/// A failure of the LDAP source: connecting, TLS, binding or searching.
///
/// Page numbers are 1-based (as shown in messages); `text` fields hold what the server said
/// alongside its result code, possibly empty. The client library's errors are boxed to keep
/// this (and [`SourceError`](crate::source::SourceError)) small.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The trust store could not be built: a configuration problem, not an outage.
    #[error(transparent)]
    TlsConfig(#[from] TlsConfigError),
    /// Nothing answered the connection attempt within the configured timeout.
    #[error("cannot connect to {url}: no answer within {}", crate::util::format_duration(*.timeout))]
    ConnectTimeout { url: String, timeout: Duration },
    /// The server could not be reached, or dropped the connection while setting it up.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<ldap3::LdapError>,
    },
    /// The TLS handshake failed (certificate, host name, or a server not speaking TLS).
    #[error("TLS with {url} failed: {source} (is the server's certificate issued for this host name, and trusted by the system or ca_file?)")]
    Tls {
        url: String,
        #[source]
        source: Box<ldap3::LdapError>,
    },
    /// The server answered connection set-up (StartTLS, when configured) with an error code.
    #[error("{url}: {} refused: LDAP result {rc} ({}){}", if *.starttls { "StartTLS" } else { "the connection" }, rc_name(*.rc), server_text(.text))]
    Refused {
        url: String,
        starttls: bool,
        rc: u32,
        text: String,
    },
    /// The bind DN or password is wrong (result 49): retrying cannot help.
    #[error("{who} to {url}: invalid credentials (LDAP result 49){}", server_text(.text))]
    InvalidCredentials {
        /// `bind as {dn}` or `anonymous bind`.
        who: String,
        url: String,
        text: String,
    },
    /// The bind failed with another result code.
    #[error("{who} to {url} failed: LDAP result {rc} ({}){}", rc_name(*.rc), server_text(.text))]
    Bind {
        /// `bind as {dn}` or `anonymous bind`.
        who: String,
        url: String,
        rc: u32,
        text: String,
    },
    /// No reply to a paged search within the timeout.
    #[error("search under {base} timed out after {count} entries (page {page})")]
    SearchTimeout {
        base: String,
        count: u64,
        page: usize,
    },
    /// The client library failed a search: a timeout, a dropped connection, a bad filter.
    #[error("search under {base} {} after {count} entries (page {page}): {source}", lost_or_timed_out(.source))]
    SearchFailed {
        base: String,
        count: u64,
        page: usize,
        #[source]
        source: Box<ldap3::LdapError>,
    },
    /// A paged search ended with an error result code.
    #[error("search under {base} failed after {count} entries (page {page}): LDAP result {rc} ({}){}{}", rc_name(*.rc), server_text(.text), size_limit_hint(*.rc))]
    SearchResult {
        base: String,
        count: u64,
        page: usize,
        rc: u32,
        text: String,
    },
    /// The server kept handing out paging cookies past our guard.
    #[error("search under {base} stopped after {pages} pages")]
    TooManyPages { base: String, pages: usize },
    /// An entry went away between the search that listed it and reading its value ranges.
    #[error("{dn} disappeared while its {attr} values were being read")]
    RangeEntryGone { dn: String, attr: String },
    /// AD range retrieval did not end within our guard.
    #[error("{attr} of {dn}: too many ranges")]
    TooManyRanges { dn: String, attr: String },
    /// No reply to a base-scope read of one entry within the timeout.
    #[error("reading {dn} timed out")]
    ReadTimeout { dn: String },
    /// `test-connection`: a configured search base does not exist.
    #[error("{what} base {base} not found (LDAP result 32){}", server_text(.text))]
    BaseNotFound {
        /// `user` or `group`.
        what: &'static str,
        base: String,
        text: String,
    },
    /// `test-connection`: a configured search base could not be read.
    #[error("{what} base {base} cannot be read: LDAP result {rc} ({}){}", rc_name(*.rc), server_text(.text))]
    BaseUnreadable {
        what: &'static str,
        base: String,
        rc: u32,
        text: String,
    },
    /// `test-connection`: the one-entry probe search got no reply within the timeout.
    #[error("search under {base} timed out")]
    ProbeTimeout { base: String },
    /// `test-connection`: the one-entry probe search ended with an error result code.
    #[error("search under {what} base {base} with {filter} failed: LDAP result {rc} ({}){}", rc_name(*.rc), server_text(.text))]
    ProbeResult {
        what: &'static str,
        base: String,
        filter: String,
        rc: u32,
        text: String,
    },
}

impl LdapError {
    /// Whether trying again later may help: outages, timeouts and transient result codes
    /// are; wrong credentials, TLS trust, missing bases and bad filters are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            LdapError::TlsConfig(_)
            | LdapError::Tls { .. }
            | LdapError::InvalidCredentials { .. }
            | LdapError::TooManyPages { .. }
            | LdapError::TooManyRanges { .. }
            | LdapError::BaseNotFound { .. } => false,
            LdapError::ConnectTimeout { .. }
            | LdapError::Connect { .. }
            | LdapError::SearchTimeout { .. }
            | LdapError::RangeEntryGone { .. }
            | LdapError::ReadTimeout { .. }
            | LdapError::ProbeTimeout { .. } => true,
            LdapError::SearchFailed { source, .. } => {
                !matches!(**source, ldap3::LdapError::FilterParsing)
            }
            LdapError::Refused { rc, .. }
            | LdapError::Bind { rc, .. }
            | LdapError::SearchResult { rc, .. }
            | LdapError::BaseUnreadable { rc, .. }
            | LdapError::ProbeResult { rc, .. } => rc_retryable(*rc),
        }
    }

    /// The LDAP result code, when the server answered with one.
    pub fn rc(&self) -> Option<u32> {
        match self {
            LdapError::InvalidCredentials { .. } => Some(49),
            LdapError::BaseNotFound { .. } => Some(32),
            LdapError::Refused { rc, .. }
            | LdapError::Bind { rc, .. }
            | LdapError::SearchResult { rc, .. }
            | LdapError::BaseUnreadable { rc, .. }
            | LdapError::ProbeResult { rc, .. } => Some(*rc),
            _ => None,
        }
    }
}

/// Why the TLS trust store could not be built. `Clone` because the result is built once and
/// handed to every connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsConfigError {
    /// A configured CA certificate was refused by the trust store.
    #[error("the CA certificate cannot be used: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// rustls could not set up its protocol versions with the crypto provider.
    #[error("TLS set-up failed: {0}")]
    Setup(#[source] rustls::Error),
}

/// The name of an LDAP result code, for messages.
fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        87 => "filterError",
        _ => "unknown result",
    }
}

/// Result codes after which trying again later may help.
fn rc_retryable(rc: u32) -> bool {
    matches!(rc, 3 | 11 | 51 | 52 | 80)
}

/// `: text` when the server said something, for messages.
fn server_text(text: &str) -> String {
    let t = text.trim().trim_end_matches('\0');
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

fn lost_or_timed_out(e: &ldap3::LdapError) -> &'static str {
    match e {
        ldap3::LdapError::Timeout { .. } => "timed out",
        _ => "lost the connection",
    }
}

/// Result 4 on a paged search usually means paging is not allowed or the page is too big.
fn size_limit_hint(rc: u32) -> &'static str {
    if rc == 4 {
        " (the server's size limit: is paging allowed for this account, and page_size below the server's maximum?)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_result(rc: u32, text: &str) -> LdapError {
        LdapError::SearchResult {
            base: "ou=People,dc=x".into(),
            count: 3,
            page: 2,
            rc,
            text: text.into(),
        }
    }

    #[test]
    fn messages_are_pinned() {
        assert_eq!(
            search_result(4, " limit\0").to_string(),
            "search under ou=People,dc=x failed after 3 entries (page 2): LDAP result 4 (sizeLimitExceeded): limit (the server's size limit: is paging allowed for this account, and page_size below the server's maximum?)"
        );
        assert_eq!(
            search_result(51, "").to_string(),
            "search under ou=People,dc=x failed after 3 entries (page 2): LDAP result 51 (busy)"
        );
        let refused = LdapError::Refused {
            url: "ldap://h:389".into(),
            starttls: true,
            rc: 2,
            text: "no".into(),
        };
        assert_eq!(
            refused.to_string(),
            "ldap://h:389: StartTLS refused: LDAP result 2 (protocolError): no"
        );
        let slow = LdapError::ConnectTimeout {
            url: "ldap://h".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            slow.to_string(),
            "cannot connect to ldap://h: no answer within 5s"
        );
        let bad = LdapError::SearchFailed {
            base: "dc=x".into(),
            count: 0,
            page: 1,
            source: Box::new(ldap3::LdapError::FilterParsing),
        };
        assert_eq!(
            bad.to_string(),
            "search under dc=x lost the connection after 0 entries (page 1): filter parse error"
        );
    }

    #[test]
    fn retryable_and_result_codes_are_pinned() {
        assert!(search_result(51, "").is_retryable());
        assert!(!search_result(4, "").is_retryable());
        assert_eq!(search_result(4, "").rc(), Some(4));
        let creds = LdapError::InvalidCredentials {
            who: "bind as cn=x".into(),
            url: "ldap://h".into(),
            text: String::new(),
        };
        assert!(!creds.is_retryable());
        assert_eq!(creds.rc(), Some(49));
        let filter = LdapError::SearchFailed {
            base: "dc=x".into(),
            count: 0,
            page: 1,
            source: Box::new(ldap3::LdapError::FilterParsing),
        };
        assert!(!filter.is_retryable());
        let dropped = LdapError::SearchFailed {
            base: "dc=x".into(),
            count: 0,
            page: 1,
            source: Box::new(ldap3::LdapError::EndOfStream),
        };
        assert!(dropped.is_retryable());
        assert_eq!(dropped.rc(), None);
        let tls = LdapError::from(TlsConfigError::Setup(rustls::Error::General("x".into())));
        assert!(!tls.is_retryable());
        assert_eq!(tls.to_string(), "TLS set-up failed: unexpected error: x");
    }
}
