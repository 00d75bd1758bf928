//! One LDAP connection: connect (plain, LDAPS or StartTLS over rustls), bind, paged searches
//! and AD range retrieval, with every failure turned into a precise, secret-free message.
//!
//! Entries and controls are decoded here from the BER structures rather than with
//! `SearchEntry::construct`, which panics on a malformed reply: a broken server must fail the
//! read, not the daemon. Decoding ourselves also keeps every value as bytes, which binary
//! anchors (`objectGUID`) need.

use super::LdapSettings;
use ldap3::asn1::{parse_tag, StructureTag, PL};
use ldap3::controls::{Control, PagedResults, RawControl};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchOptions};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// A guard against a server that hands out cookies forever.
const MAX_PAGES: usize = 1_000_000;
/// A guard against a range retrieval that never ends.
const MAX_RANGES: usize = 100_000;

/// What went wrong talking to the server, said precisely and without any secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub retryable: bool,
    /// The LDAP result code, when the server answered with one.
    pub rc: Option<u32>,
}

impl Failure {
    fn new(message: String, retryable: bool, rc: Option<u32>) -> Self {
        Failure {
            message,
            retryable,
            rc,
        }
    }
}

/// An entry as the server sent it: its DN and every attribute's raw values. Attribute names
/// are lowercased (LDAP names are case-insensitive), options such as `;range=0-1499` kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// The values of `name` (case-insensitive, without options); empty when absent.
    pub fn values(&self, name: &str) -> &[Vec<u8>] {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    pub fn first_text(&self, name: &str) -> Option<String> {
        self.values(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The name of an LDAP result code, for messages.
pub fn rc_name(rc: u32) -> &'static str {
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

/// Whether an error is a TLS failure (handshake, certificate, name).
fn is_tls_error(e: &LdapError) -> bool {
    match e {
        LdapError::Rustls { .. } | LdapError::DNSName { .. } => true,
        LdapError::Io { source } => {
            source
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
                // A server that is not speaking TLS answers the handshake with garbage or
                // hangs up; connection refused and the like stay connection errors.
                || matches!(
                    source.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                )
        }
        _ => false,
    }
}

/// The trust store for LDAPS and StartTLS: the system's roots plus the configured CA file.
pub fn tls_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates leave only the configured CA: not fatal on its own.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("the CA certificate cannot be used: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A bound connection.
pub struct Conn {
    ldap: Ldap,
    timeout: Duration,
    page_size: i32,
}

impl Conn {
    /// Connect and bind (simple bind with the configured DN, or anonymously).
    pub async fn open(
        settings: &LdapSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Conn, Failure> {
        let url = &settings.url;
        let uses_tls = settings.uses_tls();
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(settings.timeout)
            .set_starttls(settings.starttls);
        if let Some(cfg) = tls {
            conn_settings = conn_settings.set_config(cfg);
        }
        let opened = tokio::time::timeout(
            settings.timeout + Duration::from_secs(1),
            LdapConnAsync::with_settings(conn_settings, url.as_str()),
        )
        .await;
        let (conn, mut ldap) = match opened {
            Err(_) => {
                return Err(Failure::new(
                    format!(
                        "cannot connect to {}: no answer within {}",
                        settings.display_url(),
                        crate::util::format_duration(settings.timeout)
                    ),
                    true,
                    None,
                ))
            }
            Ok(Err(e)) => return Err(connect_failure(settings, uses_tls, &e)),
            Ok(Ok(pair)) => pair,
        };
        ldap3::drive!(conn);
        let (dn, password) = match (&settings.bind_dn, &settings.password) {
            (Some(dn), Some(pw)) => (dn.as_str(), pw.expose_secret()),
            (Some(dn), None) => (dn.as_str(), ""),
            (None, _) => ("", ""),
        };
        let bound = ldap
            .with_timeout(settings.timeout)
            .simple_bind(dn, password)
            .await;
        let who = if dn.is_empty() {
            "anonymous bind".to_string()
        } else {
            format!("bind as {dn}")
        };
        match bound {
            Ok(res) if res.rc == 0 => {}
            Ok(res) if res.rc == 49 => {
                return Err(Failure::new(
                    format!(
                        "{who} to {}: invalid credentials (LDAP result 49){}",
                        settings.display_url(),
                        server_text(&res.text)
                    ),
                    false,
                    Some(49),
                ))
            }
            Ok(res) => {
                return Err(Failure::new(
                    format!(
                        "{who} to {} failed: LDAP result {} ({}){}",
                        settings.display_url(),
                        res.rc,
                        rc_name(res.rc),
                        server_text(&res.text)
                    ),
                    rc_retryable(res.rc),
                    Some(res.rc),
                ))
            }
            Err(e) => return Err(connect_failure(settings, uses_tls, &e)),
        }
        Ok(Conn {
            ldap,
            timeout: settings.timeout,
            page_size: i32::try_from(settings.page_size).unwrap_or(i32::MAX),
        })
    }

    /// A paged subtree search (RFC 2696). Every entry goes to `each` as it arrives, so a
    /// failure after some pages keeps what was read. Returns the number of entries.
    pub async fn search_paged(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        mut each: impl FnMut(RawEntry),
    ) -> Result<u64, Failure> {
        let mut cookie: Vec<u8> = Vec::new();
        let mut count: u64 = 0;
        for page in 0..MAX_PAGES {
            let control: RawControl = PagedResults {
                size: self.page_size,
                cookie: std::mem::take(&mut cookie),
            }
            .into();
            let started = self
                .ldap
                .with_controls(vec![control])
                .with_timeout(self.timeout)
                .streaming_search(base, Scope::Subtree, filter, attrs.to_vec())
                .await;
            let mut stream = match started {
                Ok(s) => s,
                Err(e) => return Err(self.search_error(base, page, count, &e)),
            };
            loop {
                // ldap3's timer covers each reply; this one also covers a stalled stream.
                let next =
                    tokio::time::timeout(self.timeout + Duration::from_secs(1), stream.next())
                        .await;
                match next {
                    Err(_) => {
                        return Err(Failure::new(
                            format!(
                                "search under {base} timed out after {} entries (page {})",
                                count,
                                page + 1
                            ),
                            true,
                            None,
                        ))
                    }
                    Ok(Err(e)) => return Err(self.search_error(base, page, count, &e)),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(re))) => {
                        // Referrals (AD's other partitions) and intermediate messages carry
                        // no entry of ours.
                        if re.is_ref() || re.is_intermediate() {
                            continue;
                        }
                        match parse_entry(re.0) {
                            Some(entry) => {
                                count += 1;
                                each(entry);
                            }
                            None => {
                                tracing::warn!(base, "skipped a malformed entry in a search reply")
                            }
                        }
                    }
                }
            }
            let res = stream.finish().await;
            if res.rc != 0 {
                let hint = if res.rc == 4 {
                    " (the server's size limit: is paging allowed for this account, and page_size below the server's maximum?)"
                } else {
                    ""
                };
                return Err(Failure::new(
                    format!(
                        "search under {base} failed after {count} entries (page {}): LDAP result {} ({}){}{hint}",
                        page + 1,
                        res.rc,
                        rc_name(res.rc),
                        server_text(&res.text),
                    ),
                    rc_retryable(res.rc),
                    Some(res.rc),
                ));
            }
            match paged_cookie(&res.ctrls) {
                Some(c) if !c.is_empty() => cookie = c,
                // No control: the server did not page (and sent everything); an empty cookie:
                // the last page.
                _ => return Ok(count),
            }
        }
        Err(Failure::new(
            format!("search under {base} stopped after {MAX_PAGES} pages"),
            false,
            None,
        ))
    }

    /// The rest of a multi-valued attribute AD cut into ranges (`member;range=0-1499`):
    /// base searches for `attr;range=START-*` until the server says `*`.
    pub async fn fetch_ranges(
        &mut self,
        dn: &str,
        attr: &str,
        mut start: u64,
    ) -> Result<Vec<Vec<u8>>, Failure> {
        let mut values = Vec::new();
        for _ in 0..MAX_RANGES {
            let want = vec![format!("{attr};range={start}-*")];
            let mut entries = Vec::new();
            self.search_base(dn, "(objectClass=*)", &want, |e| entries.push(e))
                .await?;
            let Some(entry) = entries.into_iter().next() else {
                return Err(Failure::new(
                    format!("{dn} disappeared while its {attr} values were being read"),
                    true,
                    None,
                ));
            };
            let Some((name, vals)) = entry
                .attrs
                .into_iter()
                .find(|(n, _)| range_of(n, attr).is_some())
            else {
                return Ok(values);
            };
            values.extend(vals);
            match range_of(&name, attr) {
                Some((_, Some(end))) => start = end + 1,
                _ => return Ok(values),
            }
        }
        Err(Failure::new(
            format!("{attr} of {dn}: too many ranges"),
            false,
            None,
        ))
    }

    /// A base-scope search of one entry.
    pub async fn search_base(
        &mut self,
        dn: &str,
        filter: &str,
        attrs: &[String],
        mut each: impl FnMut(RawEntry),
    ) -> Result<LdapRc, Failure> {
        let res = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.ldap
                .with_timeout(self.timeout)
                .search(dn, Scope::Base, filter, attrs.to_vec()),
        )
        .await;
        let res = match res {
            Err(_) => return Err(Failure::new(format!("reading {dn} timed out"), true, None)),
            Ok(Err(e)) => return Err(self.search_error(dn, 0, 0, &e)),
            Ok(Ok(r)) => r,
        };
        for re in res.0 {
            if let Some(e) = parse_entry(re.0) {
                each(e);
            }
        }
        Ok(LdapRc {
            rc: res.1.rc,
            text: res.1.text,
        })
    }

    /// For `test-connection`: whether `base` exists, and how many entries (0 or 1) match
    /// `filter` under it.
    pub async fn probe(&mut self, what: &str, base: &str, filter: &str) -> Result<u64, Failure> {
        let rc = self
            .search_base(base, "(objectClass=*)", &["1.1".to_string()], |_| {})
            .await?;
        match rc.rc {
            0 => {}
            32 => {
                return Err(Failure::new(
                    format!(
                        "{what} base {base} not found (LDAP result 32){}",
                        server_text(&rc.text)
                    ),
                    false,
                    Some(32),
                ))
            }
            other => {
                return Err(Failure::new(
                    format!(
                        "{what} base {base} cannot be read: LDAP result {other} ({}){}",
                        rc_name(other),
                        server_text(&rc.text)
                    ),
                    rc_retryable(other),
                    Some(other),
                ))
            }
        }
        let res = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.ldap
                .with_timeout(self.timeout)
                .with_search_options(SearchOptions::new().sizelimit(1))
                .search(base, Scope::Subtree, filter, vec!["1.1".to_string()]),
        )
        .await;
        match res {
            Err(_) => Err(Failure::new(
                format!("search under {base} timed out"),
                true,
                None,
            )),
            Ok(Err(e)) => Err(self.search_error(base, 0, 0, &e)),
            // 4: more than the one entry asked for, which is what a healthy directory says.
            Ok(Ok(r)) if r.1.rc == 0 || r.1.rc == 4 => Ok(r.0.len() as u64),
            Ok(Ok(r)) => Err(Failure::new(
                format!(
                    "search under {what} base {base} with {filter} failed: LDAP result {} ({}){}",
                    r.1.rc,
                    rc_name(r.1.rc),
                    server_text(&r.1.text)
                ),
                rc_retryable(r.1.rc),
                Some(r.1.rc),
            )),
        }
    }

    /// Close politely; the server may already be gone.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ldap.unbind()).await;
    }

    fn search_error(&self, base: &str, page: usize, count: u64, e: &LdapError) -> Failure {
        let what = match e {
            LdapError::Timeout { .. } => "timed out",
            _ => "lost the connection",
        };
        Failure::new(
            format!(
                "search under {base} {what} after {count} entries (page {}): {e}",
                page + 1
            ),
            !matches!(e, LdapError::FilterParsing),
            None,
        )
    }
}

/// A result code and the server's text.
#[derive(Debug, Clone)]
pub struct LdapRc {
    pub rc: u32,
    pub text: String,
}

fn connect_failure(settings: &LdapSettings, uses_tls: bool, e: &LdapError) -> Failure {
    let url = settings.display_url();
    if let LdapError::LdapResult { result } = e {
        // StartTLS refused, or another operation result during connection set-up.
        return Failure::new(
            format!(
                "{url}: {} refused: LDAP result {} ({}){}",
                if settings.starttls {
                    "StartTLS"
                } else {
                    "the connection"
                },
                result.rc,
                rc_name(result.rc),
                server_text(&result.text)
            ),
            rc_retryable(result.rc),
            Some(result.rc),
        );
    }
    if uses_tls && is_tls_error(e) {
        return Failure::new(
            format!(
                "TLS with {url} failed: {e} (is the server's certificate issued for this host name, and trusted by the system or ca_file?)"
            ),
            false,
            None,
        );
    }
    Failure::new(format!("cannot connect to {url}: {e}"), true, None)
}

/// `member;range=0-1499` → (0, Some(1499)); `member;range=1500-*` → (1500, None).
pub fn range_of(attr_name: &str, attr: &str) -> Option<(u64, Option<u64>)> {
    let lower = attr_name.to_ascii_lowercase();
    let rest = lower.strip_prefix(&format!("{};range=", attr.to_ascii_lowercase()))?;
    let (lo, hi) = rest.split_once('-')?;
    let lo: u64 = lo.parse().ok()?;
    let hi = if hi == "*" {
        None
    } else {
        Some(hi.parse().ok()?)
    };
    Some((lo, hi))
}

/// Decode a SearchResultEntry: `[APPLICATION 4] SEQUENCE { objectName, attributes }`.
pub fn parse_entry(tag: StructureTag) -> Option<RawEntry> {
    let PL::C(parts) = tag.payload else {
        return None;
    };
    let mut parts = parts.into_iter();
    let PL::P(dn) = parts.next()?.payload else {
        return None;
    };
    let dn = String::from_utf8(dn).ok()?;
    let PL::C(list) = parts.next()?.payload else {
        return None;
    };
    let mut attrs = Vec::with_capacity(list.len());
    for partial in list {
        let PL::C(pa) = partial.payload else {
            return None;
        };
        let mut pa = pa.into_iter();
        let PL::P(name) = pa.next()?.payload else {
            return None;
        };
        let name = String::from_utf8(name).ok()?.to_ascii_lowercase();
        let vals = match pa.next().map(|t| t.payload) {
            Some(PL::C(vals)) => vals
                .into_iter()
                .filter_map(|v| match v.payload {
                    PL::P(b) => Some(b),
                    PL::C(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        attrs.push((name, vals));
    }
    Some(RawEntry { dn, attrs })
}

/// The cookie of a paged-results response control: `SEQUENCE { size INTEGER, cookie OCTET
/// STRING }`. None when the server sent no such control.
fn paged_cookie(ctrls: &[Control]) -> Option<Vec<u8>> {
    let raw = ctrls
        .iter()
        .map(|Control(_, raw)| raw)
        .find(|raw| raw.ctype == PAGED_RESULTS_OID)?;
    let val = raw.val.as_ref()?;
    let (_, tag) = parse_tag(val).ok()?;
    let PL::C(parts) = tag.payload else {
        return None;
    };
    match parts.into_iter().nth(1)?.payload {
        PL::P(cookie) => Some(cookie),
        PL::C(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{ASNTag, OctetString, Sequence, Set, Tag, TagClass};

    #[test]
    fn ranges_parse() {
        assert_eq!(
            range_of("member;range=0-1499", "member"),
            Some((0, Some(1499)))
        );
        assert_eq!(
            range_of("Member;Range=1500-*", "member"),
            Some((1500, None))
        );
        assert_eq!(range_of("member", "member"), None);
        assert_eq!(range_of("memberof;range=0-1", "member"), None);
        assert_eq!(range_of("member;range=x-1", "member"), None);
    }

    fn octets(b: &[u8]) -> Tag {
        Tag::OctetString(OctetString {
            inner: b.to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn entries_decode_and_malformed_ones_are_refused() {
        let entry = Tag::Sequence(Sequence {
            class: TagClass::Application,
            id: 4,
            inner: vec![
                octets(b"cn=G,dc=x"),
                Tag::Sequence(Sequence {
                    inner: vec![Tag::Sequence(Sequence {
                        inner: vec![
                            octets(b"member;range=0-1"),
                            Tag::Set(Set {
                                inner: vec![octets(b"uid=a,dc=x"), octets(&[0xff, 0x00])],
                                ..Default::default()
                            }),
                        ],
                        ..Default::default()
                    })],
                    ..Default::default()
                }),
            ],
        })
        .into_structure();
        let e = parse_entry(entry).unwrap();
        assert_eq!(e.dn, "cn=G,dc=x");
        assert_eq!(e.attrs[0].0, "member;range=0-1");
        assert_eq!(e.attrs[0].1[1], vec![0xff, 0x00]);

        let broken = Tag::OctetString(OctetString {
            inner: b"junk".to_vec(),
            ..Default::default()
        })
        .into_structure();
        assert!(parse_entry(broken).is_none());
    }

    #[test]
    fn paged_cookie_is_read_without_panicking() {
        let value = |tag: Tag| {
            let mut buf = bytes::BytesMut::new();
            ldap3::asn1::write::encode_into(&mut buf, tag.into_structure()).unwrap();
            buf.to_vec()
        };
        let good = RawControl {
            ctype: PAGED_RESULTS_OID.into(),
            crit: false,
            val: Some(value(Tag::Sequence(Sequence {
                inner: vec![
                    Tag::Integer(ldap3::asn1::Integer {
                        inner: 0,
                        ..Default::default()
                    }),
                    octets(b"next"),
                ],
                ..Default::default()
            }))),
        };
        assert_eq!(paged_cookie(&[Control(None, good)]), Some(b"next".to_vec()));
        let junk = RawControl {
            ctype: PAGED_RESULTS_OID.into(),
            crit: false,
            val: Some(vec![0x30, 0x05, 0x01]),
        };
        assert_eq!(paged_cookie(&[Control(None, junk)]), None);
        assert_eq!(paged_cookie(&[]), None);
    }
}
