//! One LDAP connection: connect (plain, LDAPS or StartTLS over rustls), bind, paged searches
//! and AD range retrieval, with every failure turned into a precise, secret-free [`LdapError`].
//!
//! Entries and controls are decoded here from the BER structures rather than with
//! `SearchEntry::construct`, which panics on a malformed reply: a broken server must fail the
//! read, not the daemon. Decoding ourselves also keeps every value as bytes, which binary
//! anchors (`objectGUID`) need.

use super::error::{LdapError, TlsConfigError};
use super::LdapSettings;
use ldap3::asn1::{parse_tag, StructureTag, PL};
use ldap3::controls::{Control, PagedResults, RawControl};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchOptions};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// A guard against a server that hands out cookies forever.
const MAX_PAGES: usize = 1_000_000;
/// A guard against a range retrieval that never ends.
const MAX_RANGES: usize = 100_000;

/// An entry as the server sent it: its DN and every attribute's raw values. Attribute names
/// are lowercased (LDAP names are case-insensitive), options such as `;range=0-1499` kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// The values of `name` (case-insensitive, without options); empty when absent.
    pub(crate) fn values(&self, name: &str) -> &[Vec<u8>] {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    pub(crate) fn first_text(&self, name: &str) -> Option<String> {
        self.values(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Whether an error is a TLS failure (handshake, certificate, name).
fn is_tls_error(e: &ldap3::LdapError) -> bool {
    match e {
        ldap3::LdapError::Rustls { .. } | ldap3::LdapError::DNSName { .. } => true,
        ldap3::LdapError::Io { source } => {
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
pub(crate) fn tls_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates leave only the configured CA: not fatal on its own.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(TlsConfigError::CaCertificate)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A bound connection.
pub(crate) struct Conn {
    ldap: Ldap,
    timeout: Duration,
    page_size: i32,
}

impl Conn {
    /// Connect and bind (simple bind with the configured DN, or anonymously).
    pub(crate) async fn open(
        settings: &LdapSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Conn, LdapError> {
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
                return Err(LdapError::ConnectTimeout {
                    url: settings.display_url(),
                    timeout: settings.timeout,
                })
            }
            Ok(Err(e)) => return Err(connect_failure(settings, uses_tls, e)),
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
                return Err(LdapError::InvalidCredentials {
                    who,
                    url: settings.display_url(),
                    text: res.text,
                })
            }
            Ok(res) => {
                return Err(LdapError::Bind {
                    who,
                    url: settings.display_url(),
                    rc: res.rc,
                    text: res.text,
                })
            }
            Err(e) => return Err(connect_failure(settings, uses_tls, e)),
        }
        Ok(Conn {
            ldap,
            timeout: settings.timeout,
            page_size: i32::try_from(settings.page_size).unwrap_or(i32::MAX),
        })
    }

    /// A paged subtree search (RFC 2696). Every entry goes to `each` as it arrives, so a
    /// failure after some pages keeps what was read. Returns the number of entries.
    pub(crate) async fn search_paged(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        mut each: impl FnMut(RawEntry),
    ) -> Result<u64, LdapError> {
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
                Err(e) => return Err(search_error(base, page, count, e)),
            };
            loop {
                // ldap3's timer covers each reply; this one also covers a stalled stream.
                let next =
                    tokio::time::timeout(self.timeout + Duration::from_secs(1), stream.next())
                        .await;
                match next {
                    Err(_) => {
                        return Err(LdapError::SearchTimeout {
                            base: base.to_string(),
                            count,
                            page: page + 1,
                        })
                    }
                    Ok(Err(e)) => return Err(search_error(base, page, count, e)),
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
                return Err(LdapError::SearchResult {
                    base: base.to_string(),
                    count,
                    page: page + 1,
                    rc: res.rc,
                    text: res.text,
                });
            }
            match paged_cookie(&res.ctrls) {
                Some(c) if !c.is_empty() => cookie = c,
                // No control: the server did not page (and sent everything); an empty cookie:
                // the last page.
                _ => return Ok(count),
            }
        }
        Err(LdapError::TooManyPages {
            base: base.to_string(),
            pages: MAX_PAGES,
        })
    }

    /// The rest of a multi-valued attribute AD cut into ranges (`member;range=0-1499`):
    /// base searches for `attr;range=START-*` until the server says `*`.
    pub(crate) async fn fetch_ranges(
        &mut self,
        dn: &str,
        attr: &str,
        mut start: u64,
    ) -> Result<Vec<Vec<u8>>, LdapError> {
        let mut values = Vec::new();
        for _ in 0..MAX_RANGES {
            let want = vec![format!("{attr};range={start}-*")];
            let mut entries = Vec::new();
            self.search_base(dn, "(objectClass=*)", &want, |e| entries.push(e))
                .await?;
            let Some(entry) = entries.into_iter().next() else {
                return Err(LdapError::RangeEntryGone {
                    dn: dn.to_string(),
                    attr: attr.to_string(),
                });
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
        Err(LdapError::TooManyRanges {
            dn: dn.to_string(),
            attr: attr.to_string(),
        })
    }

    /// A base-scope search of one entry.
    pub(crate) async fn search_base(
        &mut self,
        dn: &str,
        filter: &str,
        attrs: &[String],
        mut each: impl FnMut(RawEntry),
    ) -> Result<LdapRc, LdapError> {
        let res = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.ldap
                .with_timeout(self.timeout)
                .search(dn, Scope::Base, filter, attrs.to_vec()),
        )
        .await;
        let res = match res {
            Err(_) => return Err(LdapError::ReadTimeout { dn: dn.to_string() }),
            Ok(Err(e)) => return Err(search_error(dn, 0, 0, e)),
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
    pub(crate) async fn probe(
        &mut self,
        what: &'static str,
        base: &str,
        filter: &str,
    ) -> Result<u64, LdapError> {
        let rc = self
            .search_base(base, "(objectClass=*)", &["1.1".to_string()], |_| {})
            .await?;
        match rc.rc {
            0 => {}
            32 => {
                return Err(LdapError::BaseNotFound {
                    what,
                    base: base.to_string(),
                    text: rc.text,
                })
            }
            other => {
                return Err(LdapError::BaseUnreadable {
                    what,
                    base: base.to_string(),
                    rc: other,
                    text: rc.text,
                })
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
            Err(_) => Err(LdapError::ProbeTimeout {
                base: base.to_string(),
            }),
            Ok(Err(e)) => Err(search_error(base, 0, 0, e)),
            // 4: more than the one entry asked for, which is what a healthy directory says.
            Ok(Ok(r)) if r.1.rc == 0 || r.1.rc == 4 => Ok(r.0.len() as u64),
            Ok(Ok(r)) => Err(LdapError::ProbeResult {
                what,
                base: base.to_string(),
                filter: filter.to_string(),
                rc: r.1.rc,
                text: r.1.text,
            }),
        }
    }

    /// Close politely; the server may already be gone.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ldap.unbind()).await;
    }
}

/// A search the client library failed; `page` is 0-based here, 1-based in the error.
fn search_error(base: &str, page: usize, count: u64, e: ldap3::LdapError) -> LdapError {
    LdapError::SearchFailed {
        base: base.to_string(),
        count,
        page: page + 1,
        source: Box::new(e),
    }
}

/// A result code and the server's text.
#[derive(Debug, Clone)]
pub(crate) struct LdapRc {
    pub rc: u32,
    pub text: String,
}

fn connect_failure(settings: &LdapSettings, uses_tls: bool, e: ldap3::LdapError) -> LdapError {
    let url = settings.display_url();
    if let ldap3::LdapError::LdapResult { result } = e {
        // StartTLS refused, or another operation result during connection set-up.
        return LdapError::Refused {
            url,
            starttls: settings.starttls,
            rc: result.rc,
            text: result.text,
        };
    }
    if uses_tls && is_tls_error(&e) {
        return LdapError::Tls {
            url,
            source: Box::new(e),
        };
    }
    LdapError::Connect {
        url,
        source: Box::new(e),
    }
}

/// `member;range=0-1499` → (0, Some(1499)); `member;range=1500-*` → (1500, None).
pub(crate) fn range_of(attr_name: &str, attr: &str) -> Option<(u64, Option<u64>)> {
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
pub(crate) fn parse_entry(tag: StructureTag) -> Option<RawEntry> {
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
