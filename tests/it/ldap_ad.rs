//! Active Directory's specifics, which slapd cannot show: a binary `objectGUID` anchor,
//! `userAccountControl`, `whenChanged`, and range retrieval of a large `member` attribute
//! (`member;range=0-1499`, then `member;range=1500-*`, … until a range ending in `*`).
//!
//! The server here is a minimal LDAP responder on 127.0.0.1 that answers a bind and base or
//! subtree searches from a fixed set of entries the way AD does (Microsoft's "Searching Using
//! Range Retrieval": at most 1,500 values per attribute, the rest on request by range). It
//! evaluates no filter; the searches of this test need none.

use bytes::BytesMut;
use ldap3::asn1::{
    parse_tag, parse_uint, ASNTag, Enumerated, OctetString, Sequence, Set, StructureTag, Tag,
    TagClass, PL,
};
use provisiond::Source;
use provisiond::{Flavour, LdapSettings, LdapSource};
use secrecy::SecretString;
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STAFF: &str = "OU=Staff,DC=corp,DC=example,DC=com";
const GROUPS: &str = "OU=Groups,DC=corp,DC=example,DC=com";
/// AD's MaxValRange.
const RANGE: usize = 1500;
const BIG: usize = 3100;

struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
}

/// A GUID's bytes as AD stores them, for a readable GUID string `n` (mixed-endian).
fn guid_bytes(n: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[..4].copy_from_slice(&n.to_le_bytes());
    b[4..6].copy_from_slice(&0xbeefu16.to_le_bytes());
    b[6..8].copy_from_slice(&0x4abcu16.to_le_bytes());
    b[8..].copy_from_slice(&[0x80, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]);
    b
}

fn guid_string(n: u32) -> String {
    format!("{n:08x}-beef-4abc-8001-deadbeef0001")
}

fn text(v: &str) -> Vec<Vec<u8>> {
    vec![v.as_bytes().to_vec()]
}

fn directory() -> Vec<Entry> {
    let mut entries = Vec::new();
    let user = |n: u32, cn: &str, upn: &str, uac: &str, extra: Vec<(&str, Vec<Vec<u8>>)>| {
        let mut attrs: Vec<(String, Vec<Vec<u8>>)> = vec![
            ("objectGUID".into(), vec![guid_bytes(n)]),
            ("userPrincipalName".into(), text(upn)),
            (
                "sAMAccountName".into(),
                text(upn.split('@').next().unwrap()),
            ),
            ("cn".into(), text(cn)),
            ("userAccountControl".into(), text(uac)),
            ("whenChanged".into(), text("20260105101500.0Z")),
        ];
        attrs.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        Entry {
            dn: format!("CN={cn},{STAFF}"),
            attrs,
        }
    };
    entries.push(user(
        1,
        "Ann Admin",
        "ann@corp.example.com",
        "512",
        vec![
            ("givenName", text("Ann")),
            ("sn", text("Admin")),
            ("displayName", text("Ann Admin")),
            ("department", text("IT")),
            ("employeeID", text("E-1")),
            ("title", text("Administrator")),
            // AD writes DNs in its own case; a reference may differ from the entry's DN.
            (
                "manager",
                text(&format!("cn=ben boss,{}", STAFF.to_lowercase())),
            ),
        ],
    ));
    entries.push(user(2, "Ben Boss", "ben@corp.example.com", "514", vec![]));
    for i in 0..BIG as u32 {
        let mut e = user(
            1000 + i,
            &format!("User {i:04}"),
            &format!("user{i:04}@corp.example.com"),
            "66048",
            vec![],
        );
        e.attrs.retain(|(k, _)| k != "whenChanged");
        e.attrs
            .push(("whenChanged".into(), text("20260101000000.0Z")));
        entries.push(e);
    }
    let big_members: Vec<Vec<u8>> = (0..BIG)
        .map(|i| format!("CN=User {i:04},{STAFF}").into_bytes())
        .collect();
    entries.push(Entry {
        dn: format!("CN=Everyone,{GROUPS}"),
        attrs: vec![
            ("objectGUID".into(), vec![guid_bytes(500)]),
            ("cn".into(), text("Everyone")),
            ("sAMAccountName".into(), text("everyone")),
            ("whenChanged".into(), text("20260101000000.0Z")),
            ("member".into(), big_members),
        ],
    });
    entries.push(Entry {
        dn: format!("CN=Admins,{GROUPS}"),
        attrs: vec![
            ("objectGUID".into(), vec![guid_bytes(501)]),
            ("cn".into(), text("Admins")),
            ("whenChanged".into(), text("20260101000000.0Z")),
            (
                "member".into(),
                vec![format!("CN=Ann Admin,{STAFF}").into_bytes()],
            ),
        ],
    });
    entries
}

fn octets(b: &[u8]) -> Tag {
    Tag::OctetString(OctetString {
        inner: b.to_vec(),
        ..Default::default()
    })
}

fn message(id: i64, op: Tag) -> Vec<u8> {
    let msg = Tag::Sequence(Sequence {
        inner: vec![
            Tag::Integer(ldap3::asn1::Integer {
                inner: id,
                ..Default::default()
            }),
            op,
        ],
        ..Default::default()
    });
    let mut buf = BytesMut::new();
    ldap3::asn1::write::encode_into(&mut buf, msg.into_structure()).unwrap();
    buf.to_vec()
}

fn done(app_id: u64) -> Tag {
    Tag::Sequence(Sequence {
        class: TagClass::Application,
        id: app_id,
        inner: vec![
            Tag::Enumerated(Enumerated {
                inner: 0,
                ..Default::default()
            }),
            octets(b""),
            octets(b""),
        ],
    })
}

fn entry_tag(dn: &str, attrs: Vec<(String, Vec<Vec<u8>>)>) -> Tag {
    Tag::Sequence(Sequence {
        class: TagClass::Application,
        id: 4,
        inner: vec![
            octets(dn.as_bytes()),
            Tag::Sequence(Sequence {
                inner: attrs
                    .into_iter()
                    .map(|(name, vals)| {
                        Tag::Sequence(Sequence {
                            inner: vec![
                                octets(name.as_bytes()),
                                Tag::Set(Set {
                                    inner: vals.iter().map(|v| octets(v)).collect(),
                                    ..Default::default()
                                }),
                            ],
                            ..Default::default()
                        })
                    })
                    .collect(),
                ..Default::default()
            }),
        ],
    })
}

fn children(t: StructureTag) -> Vec<StructureTag> {
    match t.payload {
        PL::C(c) => c,
        PL::P(_) => Vec::new(),
    }
}

fn bytes_of(t: &StructureTag) -> Vec<u8> {
    match &t.payload {
        PL::P(b) => b.clone(),
        PL::C(_) => Vec::new(),
    }
}

/// The attributes of `e` as AD would return them for `wanted`: every attribute for an empty
/// list; a `member` of more than 1,500 values cut into a range; `member;range=N-*` answered
/// from N.
fn answer(e: &Entry, wanted: &[String]) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for (name, vals) in &e.attrs {
        let asked_range = wanted.iter().find_map(|w| {
            let (attr, range) = w.split_once(";range=")?;
            attr.eq_ignore_ascii_case(name)
                .then(|| range.split('-').next()?.parse::<usize>().ok())
                .flatten()
        });
        let asked = wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(name));
        let start = match asked_range {
            Some(start) => start,
            None if asked => 0,
            None => continue,
        };
        if name == "member" && (vals.len() > RANGE || asked_range.is_some()) {
            let end = (start + RANGE).min(vals.len());
            let label = if end == vals.len() {
                format!("member;range={start}-*")
            } else {
                format!("member;range={start}-{}", end - 1)
            };
            out.push((label, vals[start..end].to_vec()));
        } else {
            out.push((name.clone(), vals.clone()));
        }
    }
    out
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    dir: Arc<Vec<Entry>>,
    ranges: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let (consumed, msg) = match parse_tag(&buf) {
            Ok((rest, tag)) => (buf.len() - rest.len(), Some(tag)),
            Err(_) => (0, None),
        };
        let Some(msg) = msg else {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            }
        };
        buf.drain(..consumed);
        let mut parts = children(msg).into_iter();
        let id = parse_uint(&bytes_of(&parts.next().unwrap())).unwrap().1 as i64;
        let op = parts.next().unwrap();
        let mut out = Vec::new();
        match op.id {
            0 => out.extend(message(id, done(1))),
            2 => return,
            3 => {
                let mut fields = children(op).into_iter();
                let base = String::from_utf8(bytes_of(&fields.next().unwrap())).unwrap();
                let scope = bytes_of(&fields.next().unwrap())
                    .first()
                    .copied()
                    .unwrap_or(0);
                let wanted: Vec<String> = children(fields.nth(5).unwrap())
                    .iter()
                    .map(|a| String::from_utf8(bytes_of(a)).unwrap())
                    .filter(|a| a != "1.1")
                    .collect();
                if wanted.iter().any(|w| w.contains(";range=")) {
                    ranges.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let base_l = base.to_lowercase();
                for e in dir.iter() {
                    let dn_l = e.dn.to_lowercase();
                    let hit = if scope == 0 {
                        dn_l == base_l
                    } else {
                        dn_l.ends_with(&format!(",{base_l}"))
                    };
                    if hit {
                        out.extend(message(id, entry_tag(&e.dn, answer(e, &wanted))));
                    }
                }
                out.extend(message(id, done(5)));
            }
            _ => out.extend(message(id, done(op.id + 1))),
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn active_directory_guids_account_control_and_member_ranges() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = Arc::new(directory());
    let ranges = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (d2, r2) = (dir.clone(), ranges.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock, d2.clone(), r2.clone()));
        }
    });

    let mut s = LdapSettings::new(Flavour::Ad, &format!("ldap://127.0.0.1:{port}"), STAFF);
    s.group_base = GROUPS.into();
    s.bind_dn = Some("CN=svc,DC=corp,DC=example,DC=com".into());
    s.password = Some(SecretString::from("ad-secret"));
    let source = LdapSource::new(s);
    let ok = source.test_connection().await.unwrap();
    assert!(ok.contains("bound as CN=svc"), "{ok}");

    let read = source.read(None).await.unwrap();
    let d = read.directory;
    assert!(d.complete);
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(d.users.len(), 2 + BIG);
    assert_eq!(read.watermark.as_deref(), Some("20260105101500.0Z"));

    let ann = &d.users.get(&guid_string(1)).unwrap();
    let ben = guid_string(2);
    assert_eq!(
        ann.attributes.get("userPrincipalName").unwrap_or_default(),
        json!("ann@corp.example.com")
    );
    assert_eq!(
        ann.attributes.get("mailNickname").unwrap_or_default(),
        json!("ann")
    );
    assert_eq!(
        ann.attributes.get("surname").unwrap_or_default(),
        json!("Admin")
    );
    assert_eq!(
        ann.attributes.get("department").unwrap_or_default(),
        json!("IT")
    );
    assert_eq!(
        ann.attributes.get("employeeId").unwrap_or_default(),
        json!("E-1")
    );
    assert_eq!(
        ann.attributes.get("jobTitle").unwrap_or_default(),
        json!("Administrator")
    );
    assert_eq!(
        ann.attributes.get("userAccountControl").unwrap_or_default(),
        json!(512)
    );
    assert_eq!(
        ann.attributes.get("manager").unwrap_or_default(),
        json!(ben),
        "the manager DN, as an anchor"
    );
    assert!(ann.enabled());
    assert!(
        !d.users.get(&ben).unwrap().enabled(),
        "ACCOUNTDISABLE (2) in 514"
    );
    assert!(
        d.users.get(&guid_string(1000)).unwrap().enabled(),
        "66048: DONT_EXPIRE_PASSWORD only"
    );
    // displayName falls back to cn.
    assert_eq!(
        d.users
            .get(&ben)
            .unwrap()
            .attributes
            .get("displayName")
            .unwrap_or_default(),
        json!("Ben Boss")
    );

    let everyone = &d.groups.get(&guid_string(500)).unwrap();
    assert_eq!(everyone.members.len(), BIG, "all ranges read");
    assert_eq!(
        ranges.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "1500-* then 3000-*"
    );
    assert_eq!(
        everyone.attributes.get("mailNickname").unwrap_or_default(),
        json!("everyone")
    );
    assert_eq!(
        d.groups.get(&guid_string(501)).unwrap().members,
        vec![guid_string(1)]
    );
}
