//! The LDAP snapshot as one binary record for the state store, with what the next
//! incremental read starts from (the newest change timestamp, the duration of the read that
//! saw it, when the last full read finished), so a restarted daemon or a one-shot `sync` reads
//! only entries changed since.
//!
//! Layout (format 1): the magic `PLDAP`, the format byte, the context (the source's identity
//! and settings: a snapshot read with other filters or attributes is of no use), the full read
//! time (Unix seconds + 1, 0 for none), the last read's duration in milliseconds, the newest
//! timestamp (as the full read time), then users, groups and invalid users (anchor + entry),
//! the duplicate anchors and the rejected entries. Attribute values use a small tagged binary
//! form of JSON values (no JSON text per entry).

use super::snapshot::{Entry, Snapshot};
use crate::attrs::codec::{put_bytes, put_time, put_varint, Reader};
use crate::model::{ObjectType, Rejected};
use crate::source::SnapshotError;
use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const MAGIC: &[u8] = b"PLDAP";
/// The record's format; another one is refused (the next read is then full).
pub(super) const FORMAT: u8 = 1;
/// Nesting accepted when reading a value back: a damaged record must not recurse deeply.
const MAX_DEPTH: usize = 16;

/// A snapshot with what the next read needs besides it.
pub(super) struct Persisted {
    pub snapshot: Snapshot,
    pub full_at: Option<DateTime<Utc>>,
    pub last_duration: Duration,
}

pub(super) fn encode(p: &Persisted, context: &str) -> Vec<u8> {
    let s = &p.snapshot;
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    put_bytes(&mut out, context.as_bytes());
    put_time(&mut out, p.full_at);
    put_varint(
        &mut out,
        u64::try_from(p.last_duration.as_millis()).unwrap_or(u64::MAX),
    );
    // Change timestamps have whole seconds (generalized time is truncated to the second).
    put_time(&mut out, s.newest);
    for map in [&s.users, &s.groups, &s.invalid_users] {
        put_varint(&mut out, map.len() as u64);
        for (anchor, e) in map {
            put_bytes(&mut out, anchor.as_bytes());
            put_entry(&mut out, e);
        }
    }
    put_varint(&mut out, s.duplicate.len() as u64);
    for d in &s.duplicate {
        put_bytes(&mut out, d.as_bytes());
    }
    put_varint(&mut out, s.rejected.len() as u64);
    for r in &s.rejected {
        out.push(match r.object_type {
            None => 0,
            Some(ObjectType::User) => 1,
            Some(ObjectType::Group) => 2,
        });
        put_opt(&mut out, r.id.as_deref());
        put_bytes(&mut out, r.position.as_bytes());
        put_bytes(&mut out, r.reason.as_bytes());
    }
    out
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
    }
}

fn read_opt(r: &mut Reader<'_>) -> Option<Option<String>> {
    match r.byte()? {
        0 => Some(None),
        1 => Some(Some(r.str()?.to_string())),
        _ => None,
    }
}

fn put_strs(out: &mut Vec<u8>, v: &[String]) {
    put_varint(out, v.len() as u64);
    for s in v {
        put_bytes(out, s.as_bytes());
    }
}

fn read_strs(r: &mut Reader<'_>) -> Option<Vec<String>> {
    let n = r.varint()?;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(r.str()?.to_string());
    }
    Some(v)
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_bytes(out, e.dn.as_bytes());
    put_varint(out, e.attributes.len() as u64);
    for (k, v) in &e.attributes {
        put_bytes(out, k.as_bytes());
        put_value(out, v);
    }
    put_opt(out, e.manager.as_deref());
    put_strs(out, &e.member_dns);
    put_strs(out, &e.member_uids);
    put_opt(out, e.uid.as_deref());
    put_time(out, e.changed);
    out.push(u8::from(e.disabled_by_filter) | (u8::from(e.assigned_by_filter) << 1));
}

fn read_entry(r: &mut Reader<'_>) -> Option<Entry> {
    let dn = r.str()?.to_string();
    let n = r.varint()?;
    let mut attributes = Map::new();
    for _ in 0..n {
        let k = r.str()?.to_string();
        attributes.insert(k, read_value(r, 0)?);
    }
    let manager = read_opt(r)?;
    let member_dns = read_strs(r)?;
    let member_uids = read_strs(r)?;
    let uid = read_opt(r)?;
    let changed = r.time()?;
    let flags = r.byte()?;
    if flags > 3 {
        return None;
    }
    Some(Entry {
        dn,
        attributes,
        manager,
        member_dns,
        member_uids,
        uid,
        changed,
        disabled_by_filter: flags & 1 != 0,
        assigned_by_filter: flags & 2 != 0,
    })
}

/// A JSON value, tagged: 0 null, 1 false, 2 true, 3 number (as text, exact), 4 string,
/// 5 array, 6 object.
fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => out.push(1 + u8::from(*b)),
        Value::Number(n) => {
            out.push(3);
            put_bytes(out, n.to_string().as_bytes());
        }
        Value::String(s) => {
            out.push(4);
            put_bytes(out, s.as_bytes());
        }
        Value::Array(a) => {
            out.push(5);
            put_varint(out, a.len() as u64);
            for x in a {
                put_value(out, x);
            }
        }
        Value::Object(o) => {
            out.push(6);
            put_varint(out, o.len() as u64);
            for (k, x) in o {
                put_bytes(out, k.as_bytes());
                put_value(out, x);
            }
        }
    }
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match r.byte()? {
        0 => Value::Null,
        1 => Value::Bool(false),
        2 => Value::Bool(true),
        3 => Value::Number(r.str()?.parse::<Number>().ok()?),
        4 => Value::String(r.str()?.to_string()),
        5 => {
            let n = r.varint()?;
            let mut a = Vec::new();
            for _ in 0..n {
                a.push(read_value(r, depth + 1)?);
            }
            Value::Array(a)
        }
        6 => {
            let n = r.varint()?;
            let mut o = Map::new();
            for _ in 0..n {
                let k = r.str()?.to_string();
                o.insert(k, read_value(r, depth + 1)?);
            }
            Value::Object(o)
        }
        _ => return None,
    })
}

/// Read what [`encode`] wrote; `context` must be the reading source's.
pub(super) fn decode(bytes: &[u8], context: &str) -> Result<Persisted, SnapshotError> {
    let damaged = || SnapshotError::Damaged("not a complete LDAP snapshot".into());
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(damaged)?;
    let mut r = Reader::new(rest);
    let format = r.byte().ok_or_else(damaged)?;
    if format != FORMAT {
        return Err(SnapshotError::Version {
            found: format,
            expected: FORMAT,
        });
    }
    if r.str().ok_or_else(damaged)? != context {
        return Err(SnapshotError::OtherSource);
    }
    body(&mut r).ok_or_else(damaged)
}

fn body(r: &mut Reader<'_>) -> Option<Persisted> {
    let full_at = r.time()?;
    let last_duration = Duration::from_millis(r.varint()?);
    let newest = r.time()?;
    let mut maps: [BTreeMap<String, Entry>; 3] = Default::default();
    for map in &mut maps {
        let n = r.varint()?;
        for _ in 0..n {
            let anchor = r.str()?.to_string();
            map.insert(anchor, read_entry(r)?);
        }
    }
    let duplicate: BTreeSet<String> = read_strs(r)?.into_iter().collect();
    let n = r.varint()?;
    let mut rejected = Vec::new();
    for _ in 0..n {
        let object_type = match r.byte()? {
            0 => None,
            1 => Some(ObjectType::User),
            2 => Some(ObjectType::Group),
            _ => return None,
        };
        rejected.push(Rejected {
            object_type,
            id: read_opt(r)?,
            position: r.str()?.to_string(),
            reason: r.str()?.to_string(),
        });
    }
    if !r.is_empty() {
        return None;
    }
    let [users, groups, invalid_users] = maps;
    Some(Persisted {
        snapshot: Snapshot {
            users,
            groups,
            rejected,
            invalid_users,
            duplicate,
            newest,
        },
        full_at,
        last_duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(dn: &str) -> Entry {
        let mut attributes = Map::new();
        attributes.insert("displayName".into(), json!("Zoë"));
        attributes.insert("accountEnabled".into(), json!(false));
        attributes.insert("mail".into(), json!(["a@x", "b@x"]));
        attributes.insert("n".into(), json!(12.5));
        attributes.insert("o".into(), json!({"k": [null, 1]}));
        Entry {
            dn: dn.into(),
            attributes,
            manager: Some("cn=boss,dc=x".into()),
            member_dns: vec!["cn=a,dc=x".into()],
            member_uids: vec!["a".into()],
            uid: Some("zoe".into()),
            changed: DateTime::from_timestamp(1_700_000_001, 0),
            disabled_by_filter: true,
            assigned_by_filter: false,
        }
    }

    fn sample() -> Persisted {
        let mut s = Snapshot::default();
        s.users.insert("1".into(), entry("cn=zoe,dc=x"));
        s.groups.insert("2".into(), entry("cn=g,dc=x"));
        s.invalid_users.insert("3".into(), entry("cn=bad,dc=x"));
        s.duplicate.insert("4".into());
        s.rejected.push(Rejected {
            object_type: Some(ObjectType::User),
            id: None,
            position: "cn=noanchor,dc=x".into(),
            reason: "no entryUUID".into(),
        });
        s.newest = DateTime::from_timestamp(1_700_000_002, 0);
        Persisted {
            snapshot: s,
            full_at: DateTime::from_timestamp(1_700_000_003, 0),
            last_duration: Duration::from_millis(1234),
        }
    }

    #[test]
    fn an_ldap_snapshot_round_trips() {
        let p = sample();
        let back = decode(&encode(&p, "ctx"), "ctx").unwrap();
        assert_eq!(back.full_at, p.full_at);
        assert_eq!(back.last_duration, p.last_duration);
        let (a, b) = (&p.snapshot, &back.snapshot);
        assert_eq!(a.users, b.users);
        assert_eq!(a.groups, b.groups);
        assert_eq!(a.invalid_users, b.invalid_users);
        assert_eq!(a.duplicate, b.duplicate);
        assert_eq!(a.rejected, b.rejected);
        assert_eq!(a.newest, b.newest);
    }

    #[test]
    fn damage_another_format_or_context_is_refused() {
        let bytes = encode(&sample(), "ctx");
        assert!(matches!(
            decode(&bytes, "other"),
            Err(SnapshotError::OtherSource)
        ));
        let mut newer = bytes.clone();
        newer[MAGIC.len()] = FORMAT + 1;
        assert!(matches!(
            decode(&newer, "ctx"),
            Err(SnapshotError::Version { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], "ctx").is_err(), "cut at {cut}");
        }
    }
}
