//! The Graph snapshot as one binary record for the state store: both collections with their
//! delta links, so a restarted daemon or a one-shot `sync` follows the delta links instead of
//! reading the tenant again. Attributes are written in the compact map's portable form (names
//! spelled out), about a third of the JSON's size; there is no per-object JSON.
//!
//! Layout (format 1): the magic `PGRAPH`, the format byte, the source's identity, the time of
//! the last full read (Unix seconds + 1, 0 for none), then users and groups, each a presence
//! byte followed by the delta link, the objects (id, members, attributes) and the rejected
//! objects with a known id. Integers are LEB128 varints, strings length-prefixed.

use super::{Collection, Snapshot};
use crate::attrs::codec::{put_bytes, put_time, put_varint, Reader};
use crate::attrs::compact::CompactMap;
use crate::model::{ObjectType, Rejected, SourceObject};
use crate::source::SnapshotError;
use std::collections::BTreeMap;
use url::Url;

const MAGIC: &[u8] = b"PGRAPH";
/// The record's format; another one is refused (the next read is then full).
pub(super) const FORMAT: u8 = 1;

/// The snapshot as one record, tagged with the source's identity.
pub(super) fn encode(s: &Snapshot, identity: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    put_bytes(&mut out, identity.as_bytes());
    put_time(&mut out, s.full_at);
    for c in [&s.users, &s.groups] {
        match c {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                put_collection(&mut out, c);
            }
        }
    }
    out
}

fn put_collection(out: &mut Vec<u8>, c: &Collection) {
    put_bytes(out, c.delta_link.as_str().as_bytes());
    put_varint(out, c.objects.len() as u64);
    for o in c.objects.values() {
        put_bytes(out, o.id.as_bytes());
        put_varint(out, o.members.len() as u64);
        for m in &o.members {
            put_bytes(out, m.as_bytes());
        }
        // No dictionary: names are written out, so the record means the same to any process.
        o.attributes.write_portable(out, &mut |_| None);
    }
    put_varint(out, c.invalid.len() as u64);
    for (id, r) in &c.invalid {
        put_bytes(out, id.as_bytes());
        out.push(match r.object_type {
            None => 0,
            Some(ObjectType::User) => 1,
            Some(ObjectType::Group) => 2,
        });
        put_bytes(out, r.position.as_bytes());
        put_bytes(out, r.reason.as_bytes());
    }
}

/// Read what [`encode`] wrote. `identity` must be the reading source's: a snapshot of another
/// tenant or app is of no use.
pub(super) fn decode(bytes: &[u8], identity: &str) -> Result<Snapshot, SnapshotError> {
    let damaged = |what: &str| SnapshotError::Damaged(what.to_string());
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| damaged("not a Graph snapshot"))?;
    let mut r = Reader::new(rest);
    let format = r.byte().ok_or_else(|| damaged("truncated"))?;
    if format != FORMAT {
        return Err(SnapshotError::Version {
            found: format,
            expected: FORMAT,
        });
    }
    if r.str().ok_or_else(|| damaged("identity"))? != identity {
        return Err(SnapshotError::OtherSource);
    }
    let full_at = r.time().ok_or_else(|| damaged("full read time"))?;
    let mut s = Snapshot {
        full_at,
        ..Snapshot::default()
    };
    for ty in [ObjectType::User, ObjectType::Group] {
        let present = r.byte().ok_or_else(|| damaged("truncated"))?;
        let c = match present {
            0 => None,
            1 => Some(read_collection(&mut r, ty).ok_or_else(|| damaged(ty.endpoint()))?),
            _ => return Err(damaged("presence byte")),
        };
        match ty {
            ObjectType::User => s.users = c,
            ObjectType::Group => s.groups = c,
        }
    }
    if !r.is_empty() {
        return Err(damaged("trailing bytes"));
    }
    Ok(s)
}

fn read_collection(r: &mut Reader<'_>, ty: ObjectType) -> Option<Collection> {
    let delta_link = Url::parse(r.str()?).ok()?;
    let n = r.varint()?;
    let mut objects = BTreeMap::new();
    for _ in 0..n {
        let id = r.str()?.to_string();
        let m = r.varint()?;
        // A damaged count must not make us reserve gigabytes: grow as entries are read.
        let mut members = Vec::new();
        for _ in 0..m {
            members.push(r.str()?.to_string());
        }
        // Names are always spelled out (see `put_collection`): a number is damage.
        let attributes = CompactMap::read_portable(r, &mut |_| None)?;
        objects.insert(
            id.clone(),
            SourceObject {
                id,
                object_type: ty,
                attributes,
                members,
            },
        );
    }
    let n = r.varint()?;
    let mut invalid = BTreeMap::new();
    for _ in 0..n {
        let id = r.str()?.to_string();
        let object_type = match r.byte()? {
            0 => None,
            1 => Some(ObjectType::User),
            2 => Some(ObjectType::Group),
            _ => return None,
        };
        let position = r.str()?.to_string();
        let reason = r.str()?.to_string();
        invalid.insert(
            id.clone(),
            Rejected {
                object_type,
                id: Some(id),
                position,
                reason,
            },
        );
    }
    Some(Collection {
        objects,
        delta_link,
        invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Snapshot {
        let mut users = BTreeMap::new();
        let mut a = SourceObject {
            id: "u-a".into(),
            object_type: ObjectType::User,
            attributes: CompactMap::new(),
            members: vec![],
        };
        a.attributes.insert("displayName", json!("Ä B"));
        a.attributes.insert("accountEnabled", json!(true));
        a.attributes.insert("businessPhones", json!(["1", "2"]));
        a.attributes.insert("extension_x_y", json!({"k": 1}));
        users.insert("u-a".into(), a);
        let mut invalid = BTreeMap::new();
        invalid.insert(
            "u-b".to_string(),
            Rejected {
                object_type: Some(ObjectType::User),
                id: Some("u-b".into()),
                position: "users/delta page 1 item 2".into(),
                reason: "accountEnabled".into(),
            },
        );
        let mut groups = BTreeMap::new();
        groups.insert(
            "g".to_string(),
            SourceObject {
                id: "g".into(),
                object_type: ObjectType::Group,
                attributes: CompactMap::new(),
                members: vec!["u-a".into(), "u-b".into()],
            },
        );
        Snapshot {
            users: Some(Collection {
                objects: users,
                delta_link: Url::parse("http://127.0.0.1:1/v1.0/users/delta?$deltatoken=a")
                    .unwrap(),
                invalid,
            }),
            groups: Some(Collection {
                objects: groups,
                delta_link: Url::parse("http://127.0.0.1:1/v1.0/groups/delta?$deltatoken=b")
                    .unwrap(),
                invalid: BTreeMap::new(),
            }),
            full_at: chrono::DateTime::from_timestamp(1_700_000_000, 0),
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_snapshot_round_trips() {
        let s = sample();
        let bytes = encode(&s, "tenant t");
        let back = decode(&bytes, "tenant t").unwrap();
        assert_eq!(back.full_at, s.full_at);
        let (u, bu) = (s.users.unwrap(), back.users.unwrap());
        assert_eq!(u.delta_link, bu.delta_link);
        assert_eq!(u.invalid, bu.invalid);
        assert_eq!(u.objects.len(), bu.objects.len());
        let (a, ba) = (&u.objects["u-a"], &bu.objects["u-a"]);
        assert_eq!(a.attributes.to_map(), ba.attributes.to_map());
        let (g, bg) = (s.groups.unwrap(), back.groups.unwrap());
        assert_eq!(g.objects["g"].members, bg.objects["g"].members);
    }

    #[test]
    fn damage_another_format_or_source_is_refused() {
        let bytes = encode(&sample(), "tenant t");
        assert!(matches!(
            decode(&bytes, "tenant u"),
            Err(SnapshotError::OtherSource)
        ));
        let mut old = bytes.clone();
        old[MAGIC.len()] = FORMAT + 1;
        assert!(matches!(
            decode(&old, "tenant t"),
            Err(SnapshotError::Version { .. })
        ));
        // Every truncation is refused, never read as a smaller snapshot.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], "tenant t").is_err(), "cut at {cut}");
        }
        assert!(decode(b"garbage", "tenant t").is_err());
    }
}
