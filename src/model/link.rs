//! A link: what provisiond knows about one object it created or matched in the target, and
//! the per-job index of them. Domain types, so the planner can read links without depending
//! on the store that persists them (`crate::state`).

use super::ObjectType;
use crate::attrs::codec::{put_bytes, Reader};
use crate::attrs::exported::ExportedRef;
use crate::attrs::Exported;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What provisiond knows about one object it created or matched in the target. Only objects
/// with a link are ever changed or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub object_type: ObjectType,
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    /// The matching attribute and value that found or created the object.
    #[serde(default)]
    pub matching: Matching,
    /// Last values exported successfully, by target path: updates send only what differs.
    #[serde(default)]
    pub exported: Exported,
    /// Groups: the target ids of the members last exported.
    #[serde(default)]
    pub members: BTreeSet<String>,
    /// True when provisiond created the object, false when it matched an existing one.
    #[serde(default)]
    pub created: bool,
}

impl Link {
    /// Whether provisiond last left the account disabled.
    pub fn disabled(&self) -> bool {
        self.exported.disabled()
    }
}

/// A link's matching attribute and value, `Option<(String, Value)>` held as one byte string
/// (the path, then the value's tag and bytes): 16 bytes in the link and one allocation,
/// where the pair took 56 and two (about 56 bytes a link in all). Read back whole with
/// [`Matching::get`]: only the plan of a changed object and the store's writer ask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matching(Option<Box<[u8]>>);

/// Value tags of [`Matching`]: a string's bytes, or any other value's JSON text.
const MATCHING_STRING: u8 = 0;
const MATCHING_JSON: u8 = 1;

impl Matching {
    /// Hold `m`.
    pub fn new(m: Option<(String, Value)>) -> Self {
        Matching(m.map(|(path, value)| {
            let mut out = Vec::with_capacity(path.len() + 24);
            put_bytes(&mut out, path.as_bytes());
            match &value {
                Value::String(v) => {
                    out.push(MATCHING_STRING);
                    out.extend_from_slice(v.as_bytes());
                }
                other => {
                    out.push(MATCHING_JSON);
                    out.extend_from_slice(other.to_string().as_bytes());
                }
            }
            out.into_boxed_slice()
        }))
    }

    /// The attribute and value held. Bytes only [`Matching::new`] wrote are ever held, so
    /// `None` means none was given.
    pub fn get(&self) -> Option<(String, Value)> {
        let b = self.0.as_deref()?;
        let mut r = Reader::new(b);
        let path = r.str()?.to_string();
        let tag = r.byte()?;
        let rest = r.rest;
        let value = match tag {
            MATCHING_STRING => Value::String(std::str::from_utf8(rest).ok()?.to_string()),
            _ => serde_json::from_slice(rest).ok()?,
        };
        Some((path, value))
    }
}

impl From<Option<(String, Value)>> for Matching {
    fn from(m: Option<(String, Value)>) -> Self {
        Matching::new(m)
    }
}

// The same JSON as the pair it holds: records of the JSON schema read and write unchanged.
impl Serialize for Matching {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Matching {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<(String, Value)>::deserialize(d).map(Matching::new)
    }
}

/// A link held in a [`LinkIndex`]: one allocation, the record [`encode`] writes, read in
/// place by [`LinkRef`]. A [`Link`] took about 700-900 bytes and a dozen allocations (its
/// strings, members, matching, exported values and digest), most of a no-change cycle's peak.
type Record = Box<[u8]>;

/// Flag bits of a record's first byte.
const CREATED: u8 = 1;
const DISABLED: u8 = 2;
/// The record holds the exported values of some paths only (see [`LinkIndexBuilder::slim`]):
/// the rest stayed in the store.
const SLIM: u8 = 4;
/// The link has an input digest, left in the store (see [`Links::insert_leaving_digest`]).
const DIGEST_STORED: u8 = 8;

/// A link's record, without its type and source id (the index's keys): flags; target id,
/// display name, matching bytes, digest bytes (empty: none; neither is ever empty when
/// present) and the members (one length-prefixed run, so readers skip it at once), each
/// length-prefixed; then the exported values' [`crate::attrs::compact::CompactMap`] bytes to
/// the end. Process-local: it never leaves memory (the store has its own format).
fn encode(link: &Link) -> Record {
    encode_with(link, link.exported.parts().0, 0)
}

/// [`encode`] with the exported values of the `keep` paths only, flagged [`SLIM`].
fn encode_slim(link: &Link, keep: &[String]) -> Record {
    let kept: crate::attrs::compact::CompactMap = keep
        .iter()
        .filter_map(|k| link.exported.get(k).map(|v| (k, v)))
        .collect();
    encode_with(link, kept.as_bytes(), SLIM)
}

/// A record of `link` with `map` as its exported values' bytes and `extra` flags (with
/// [`DIGEST_STORED`], without the digest's bytes).
fn encode_with(link: &Link, map: &[u8], extra: u8) -> Record {
    let (_, digest, disabled) = link.exported.parts();
    let matching = link.matching.0.as_deref().unwrap_or_default();
    let digest = match extra & DIGEST_STORED {
        0 => digest.unwrap_or_default(),
        _ => &[],
    };
    let members_len: usize = link.members.iter().map(|m| m.len() + 2).sum();
    let mut members = Vec::with_capacity(members_len);
    for m in &link.members {
        put_bytes(&mut members, m.as_bytes());
    }
    let mut out = Vec::with_capacity(
        1 + link.target_id.len()
            + link.display_name.len()
            + matching.len()
            + digest.len()
            + members.len()
            + map.len()
            + 12,
    );
    let mut flags = extra;
    if link.created {
        flags |= CREATED;
    }
    if disabled {
        flags |= DISABLED;
    }
    out.push(flags);
    put_bytes(&mut out, link.target_id.as_bytes());
    put_bytes(&mut out, link.display_name.as_bytes());
    put_bytes(&mut out, matching);
    put_bytes(&mut out, digest);
    put_bytes(&mut out, &members);
    out.extend_from_slice(map);
    out.into_boxed_slice()
}

/// A record read in place.
struct Parts<'a> {
    flags: u8,
    target_id: &'a str,
    display_name: &'a str,
    matching: &'a [u8],
    digest: &'a [u8],
    members: &'a [u8],
    map: &'a [u8],
}

fn parts(rec: &[u8]) -> Option<Parts<'_>> {
    let mut r = Reader::new(rec);
    Some(Parts {
        flags: r.byte()?,
        target_id: r.str()?,
        display_name: r.str()?,
        matching: r.bytes()?,
        digest: r.bytes()?,
        members: r.bytes()?,
        map: r.rest,
    })
}

/// One link of a [`LinkIndex`], borrowed: its fields are read from the record on demand.
/// References to the index's boxes, not slices: 24 bytes, as the planner keeps one per link
/// in a hash map.
#[derive(Clone, Copy)]
#[allow(clippy::borrowed_box)] // the point: a thin pointer, not a slice's two words
pub(crate) struct LinkRef<'a> {
    object_type: ObjectType,
    source_id: &'a Box<str>,
    rec: &'a Record,
}

/// Only [`encode`] writes records, so they always parse; were one damaged, its fields
/// would read as empty rather than stop a cycle.
const EMPTY: Parts<'static> = Parts {
    flags: 0,
    target_id: "",
    display_name: "",
    matching: &[],
    digest: &[],
    members: &[],
    map: &[],
};

impl<'a> LinkRef<'a> {
    fn parts(&self) -> Parts<'a> {
        parts(self.rec).unwrap_or(EMPTY)
    }
    pub(crate) fn source_id(&self) -> &'a str {
        self.source_id
    }
    pub(crate) fn target_id(&self) -> &'a str {
        self.parts().target_id
    }
    pub(crate) fn display_name(&self) -> &'a str {
        self.parts().display_name
    }
    /// See [`Link::disabled`].
    pub(crate) fn disabled(&self) -> bool {
        self.parts().flags & DISABLED != 0
    }
    /// Whether the record holds the exported values of some paths only
    /// ([`LinkIndexBuilder::slim`]): its digest, flags, ids, matching value and the kept
    /// paths read as in the whole link; anything else of its exported values is not here,
    /// so whoever needs them (a diff, a write of the link) takes the whole link from the
    /// store first.
    pub(crate) fn is_slim(&self) -> bool {
        self.parts().flags & SLIM != 0
    }
    /// Whether the link has an input digest that the index does not hold, only the store
    /// ([`Links::insert_leaving_digest`]): decoded, it has none, so whoever writes it back
    /// gives it its digest again.
    pub(crate) fn digest_stored(&self) -> bool {
        self.parts().flags & DIGEST_STORED != 0
    }
    pub(crate) fn matching(&self) -> Matching {
        let m = self.parts().matching;
        Matching((!m.is_empty()).then(|| m.into()))
    }
    /// The exported values, read in place.
    pub(crate) fn exported(&self) -> ExportedRef<'a> {
        let p = self.parts();
        let digest = (!p.digest.is_empty()).then_some(p.digest);
        ExportedRef::new(p.map, digest, p.flags & DISABLED != 0)
    }
    /// Groups: the target ids of the members last exported, in order.
    pub(crate) fn members(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut r = Reader::new(self.parts().members);
        std::iter::from_fn(move || r.str())
    }
    /// The link, decoded whole. Of a slim record ([`LinkRef::is_slim`]), the exported values
    /// it kept only: callers that write the link back take a slim one whole from the store.
    pub(crate) fn to_link(self) -> Link {
        decode(self.object_type, self.source_id, self.rec)
    }
}

/// The link of a record, decoded whole.
fn decode(object_type: ObjectType, source_id: &str, rec: &[u8]) -> Link {
    let p = parts(rec).unwrap_or(EMPTY);
    let exported = ExportedRef::new(
        p.map,
        (!p.digest.is_empty()).then_some(p.digest),
        p.flags & DISABLED != 0,
    );
    let mut members = Reader::new(p.members);
    Link {
        object_type,
        source_id: source_id.to_string(),
        target_id: p.target_id.to_string(),
        display_name: p.display_name.to_string(),
        matching: Matching((!p.matching.is_empty()).then(|| p.matching.into())),
        exported: exported.to_owned(),
        members: std::iter::from_fn(|| members.str())
            .map(str::to_string)
            .collect(),
        created: p.flags & CREATED != 0,
    }
}
/// A [`LinkRef`] found by its source id in a [`LinkLookup`].
#[derive(Clone, Copy)]
struct ById<'a>(LinkRef<'a>);

impl PartialEq for ById<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.source_id() == other.0.source_id()
    }
}

impl Eq for ById<'_> {}

// Hashed as its source id, so that a `&str` finds it (`Borrow`).
impl std::hash::Hash for ById<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.source_id().hash(state);
    }
}

impl std::borrow::Borrow<str> for ById<'_> {
    fn borrow(&self) -> &str {
        self.0.source_id()
    }
}

/// The links of a type hashed by source id, for a planner that looks every object's link up
/// (cheaper than a dozen comparisons of long ids in the B-tree). A set of the 24-byte
/// [`LinkRef`]s, not a map from the id to one: 24 bytes an entry, not 40 (about 30 MB
/// at a million links).
pub(crate) struct LinkLookup<'a>(std::collections::HashSet<ById<'a>>);

impl<'a> LinkLookup<'a> {
    pub(crate) fn get(&self, source_id: &str) -> Option<LinkRef<'a>> {
        self.0.get(source_id).map(|b| b.0)
    }
}

impl std::fmt::Debug for LinkRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_link().fmt(f)
    }
}

/// The links of one type, by source id, in id order.
#[derive(Clone)]
pub(crate) struct Links {
    object_type: ObjectType,
    map: BTreeMap<Box<str>, Record>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Links {
    fn of(object_type: ObjectType) -> Self {
        Links {
            object_type,
            map: BTreeMap::new(),
        }
    }
    #[allow(clippy::borrowed_box)] // see `LinkRef`
    fn view<'a>(&self, source_id: &'a Box<str>, rec: &'a Record) -> LinkRef<'a> {
        LinkRef {
            object_type: self.object_type,
            source_id,
            rec,
        }
    }
    pub(crate) fn get(&self, source_id: &str) -> Option<LinkRef<'_>> {
        let (k, rec) = self.map.get_key_value(source_id)?;
        Some(self.view(k, rec))
    }
    pub(crate) fn contains_key(&self, source_id: &str) -> bool {
        self.map.contains_key(source_id)
    }
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// The links in source id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, LinkRef<'_>)> + '_ {
        self.map.iter().map(|(k, rec)| (&**k, self.view(k, rec)))
    }
    pub(crate) fn values(&self) -> impl Iterator<Item = LinkRef<'_>> + '_ {
        self.iter().map(|(_, l)| l)
    }
    /// The links hashed by source id (see [`LinkLookup`]).
    pub(crate) fn lookup(&self) -> LinkLookup<'_> {
        LinkLookup(self.values().map(ById).collect())
    }
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.map.keys().map(|k| &**k)
    }
    /// Adds or replaces the link of `link.source_id` (its type must be this one's).
    pub(crate) fn insert(&mut self, link: &Link) {
        self.map
            .insert(link.source_id.as_str().into(), encode(link));
    }
    /// Forgets a link, handing it back decoded.
    pub(crate) fn remove(&mut self, source_id: &str) -> Option<Link> {
        let (k, rec) = self.map.remove_entry(source_id)?;
        Some(decode(self.object_type, &k, &rec))
    }
    /// The link decoded for a change, written back when the guard drops. Its type and
    /// source id are the key: a change to them is not kept. `None` for a slim record
    /// ([`LinkRef::is_slim`]) too: written back, the values it lacks would be lost.
    pub(crate) fn get_mut(&mut self, source_id: &str) -> Option<LinkMut<'_>> {
        let object_type = self.object_type;
        let rec = self.map.get_mut(source_id)?;
        if parts(rec).is_some_and(|p| p.flags & SLIM != 0) {
            return None;
        }
        let link = decode(object_type, source_id, rec);
        Some(LinkMut { rec, link })
    }
}

/// A link of a [`LinkIndex`] being changed: see [`Links::get_mut`].
pub(crate) struct LinkMut<'a> {
    rec: &'a mut Record,
    link: Link,
}

impl std::ops::Deref for LinkMut<'_> {
    type Target = Link;
    fn deref(&self) -> &Link {
        &self.link
    }
}

impl std::ops::DerefMut for LinkMut<'_> {
    fn deref_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl Drop for LinkMut<'_> {
    fn drop(&mut self) {
        *self.rec = encode(&self.link);
    }
}

/// Links of a job indexed by type and source id.
#[derive(Debug, Clone)]
pub(crate) struct LinkIndex {
    users: Links,
    groups: Links,
}

impl Default for LinkIndex {
    fn default() -> Self {
        LinkIndex {
            users: Links::of(ObjectType::User),
            groups: Links::of(ObjectType::Group),
        }
    }
}

impl LinkIndex {
    /// The index of `links`; of two with the same key, the later wins.
    pub(crate) fn new(links: impl IntoIterator<Item = Link>) -> Self {
        let mut b = LinkIndexBuilder::default();
        for l in links {
            b.push(&l);
        }
        b.build()
    }
    pub(crate) fn of(&self, ty: ObjectType) -> &Links {
        match ty {
            ObjectType::User => &self.users,
            ObjectType::Group => &self.groups,
        }
    }
    pub(crate) fn of_mut(&mut self, ty: ObjectType) -> &mut Links {
        match ty {
            ObjectType::User => &mut self.users,
            ObjectType::Group => &mut self.groups,
        }
    }
    pub(crate) fn users(&self) -> &Links {
        &self.users
    }
    pub(crate) fn groups(&self) -> &Links {
        &self.groups
    }
    pub(crate) fn groups_mut(&mut self) -> &mut Links {
        &mut self.groups
    }
    pub(crate) fn get(&self, ty: ObjectType, source_id: &str) -> Option<LinkRef<'_>> {
        self.of(ty).get(source_id)
    }
    /// Adds or replaces a link.
    pub(crate) fn insert(&mut self, link: &Link) {
        self.of_mut(link.object_type).insert(link);
    }
    /// [`LinkIndex::insert`], without the bytes of the link's input digest, if it has one:
    /// flagged instead ([`LinkRef::digest_stored`]). For the links an export writes (the
    /// store has them whole): nothing plans from them again, and held, an initial cycle's
    /// digests weighed several times their bytes at its peak (see README, "Performance").
    pub(crate) fn insert_leaving_digest(&mut self, link: &Link) {
        let links = self.of_mut(link.object_type);
        match link.exported.parts().1 {
            None => links.insert(link),
            Some(_) => {
                let rec = encode_with(link, link.exported.parts().0, DIGEST_STORED);
                links.map.insert(link.source_id.as_str().into(), rec);
            }
        }
    }
    /// Users and groups.
    pub(crate) fn len(&self) -> usize {
        self.users.len() + self.groups.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
    /// The user links held slim ([`LinkRef::is_slim`]) of `ids`: what to take whole from the
    /// store before writing them.
    pub(crate) fn slim_users<'i>(&self, ids: impl IntoIterator<Item = &'i str>) -> Vec<&'i str> {
        ids.into_iter()
            .filter(|id| self.users.get(id).is_some_and(|l| l.is_slim()))
            .collect()
    }
}

/// Builds a [`LinkIndex`] from links handed over one at a time, each encoded at once (a
/// store's scan decodes one record, and only its record stays).
#[derive(Default)]
pub(crate) struct LinkIndexBuilder {
    users: Vec<(Box<str>, Record)>,
    groups: Vec<(Box<str>, Record)>,
    /// Users: the exported paths kept in memory ([`LinkIndexBuilder::slim`]); every path
    /// when `None`.
    keep: Option<Box<[String]>>,
}

impl LinkIndexBuilder {
    /// A builder that keeps, of each user link with an input digest, the exported values of
    /// the `keep` paths only (the reference paths, which the reference phase compares for every user), with
    /// everything else of the link: an incremental cycle diffs only the users whose input
    /// digest changed, and takes those whole from the store (the planner names them:
    /// `Plan::whole`). At a million users the values left out were about a fifth of a
    /// no-change cycle's peak. Groups (few, and their members change in place) stay whole.
    pub(crate) fn slim(keep: Vec<String>) -> Self {
        LinkIndexBuilder {
            keep: Some(keep.into()),
            ..LinkIndexBuilder::default()
        }
    }
    pub(crate) fn push(&mut self, link: &Link) {
        // A link without a digest is diffed whatever its object looks like: whole at once,
        // rather than named by the plan and read again (after an initial cycle, every link).
        let rec = match (&self.keep, link.object_type) {
            (Some(keep), ObjectType::User) if link.exported.parts().1.is_some() => {
                encode_slim(link, keep)
            }
            _ => encode(link),
        };
        let entry = (link.source_id.as_str().into(), rec);
        match link.object_type {
            ObjectType::User => self.users.push(entry),
            ObjectType::Group => self.groups.push(entry),
        }
    }
    /// The index. Built in bulk, not by inserting one by one: inserting in key order (as a
    /// store hands them over) leaves every B-tree node half empty. `collect` sorts (a store
    /// hands them over sorted: no work) and keeps the later of two equal keys.
    pub(crate) fn build(self) -> LinkIndex {
        LinkIndex {
            users: Links {
                object_type: ObjectType::User,
                map: self.users.into_iter().collect(),
            },
            groups: Links {
                object_type: ObjectType::Group,
                map: self.groups.into_iter().collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use serde_json::json;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,40}".prop_map(Value::String),
            prop::collection::vec(".{0,8}", 0..4).prop_map(|v| json!(v)),
            (".{0,8}", any::<u32>()).prop_map(|(k, n)| json!({ k: n })),
        ]
    }

    /// User `u1` (target `t1`, matched by `userName`) with `values` exported and an input
    /// digest.
    fn digested_user(values: &[(&str, Value)]) -> Link {
        let mut exported: Exported = values.iter().cloned().collect();
        exported.set_digest(crate::attrs::InputDigest {
            inputs: [7; 16],
            matching: vec![42].into(),
        });
        Link {
            object_type: ObjectType::User,
            source_id: "u1".into(),
            target_id: "t1".into(),
            display_name: "A".into(),
            matching: Matching::new(Some(("userName".into(), json!("a@x")))),
            exported,
            members: BTreeSet::new(),
            created: true,
        }
    }

    /// A link inserted leaving its digest in the store is the link without its digest,
    /// flagged as having one; a link without a digest is inserted as it is.
    #[test]
    fn a_link_inserted_leaving_its_digest_is_flagged_and_otherwise_whole() {
        let user = digested_user(&[("userName", json!("a@x")), ("active", json!(false))]);
        let mut index = LinkIndex::default();
        index.insert_leaving_digest(&user);
        let held = index.users().get("u1").unwrap();
        assert!(held.digest_stored() && held.disabled() && !held.is_slim());
        assert!(held.exported().digest().is_none());
        let back = held.to_link();
        assert!(back.exported.digest().is_none());
        assert_eq!(back, user, "equal but for the digest");
        let plain = Link {
            source_id: "u2".into(),
            exported: user.exported.to_map().into(),
            ..user.clone()
        };
        index.insert_leaving_digest(&plain);
        assert!(!index.users().get("u2").unwrap().digest_stored());
        index.insert(&user);
        let whole = index.users().get("u1").unwrap();
        assert!(!whole.digest_stored() && whole.exported().digest().is_some());
    }

    /// A slim user link keeps its ids, flags, matching value, digest and the kept paths'
    /// values, and nothing else of its exported values; it is never handed out for a change;
    /// a user link without a digest and groups stay whole; the same link inserted whole
    /// replaces it.
    #[test]
    fn a_slim_link_keeps_what_a_no_change_cycle_reads() {
        let user = digested_user(&[
            ("userName", json!("a@x")),
            ("manager", json!("t9")),
            ("active", json!(false)),
        ]);
        let group = Link {
            object_type: ObjectType::Group,
            source_id: "g1".into(),
            exported: [("displayName", json!("G"))].into_iter().collect(),
            ..user.clone()
        };
        let undigested = Link {
            source_id: "u2".into(),
            exported: [("userName", json!("b@x"))].into_iter().collect(),
            ..user.clone()
        };
        let mut b = LinkIndexBuilder::slim(vec!["manager".into()]);
        b.push(&user);
        b.push(&undigested);
        b.push(&group);
        let mut index = b.build();
        // Without a digest it is diffed anyway: whole.
        assert_eq!(index.users().get("u2").unwrap().to_link(), undigested);
        let l = index.users().get("u1").unwrap();
        assert!(l.is_slim());
        assert_eq!(l.target_id(), "t1");
        assert_eq!(l.display_name(), "A");
        assert!(l.disabled());
        assert_eq!(l.matching(), user.matching);
        assert!(l.exported().digest_is(&[7; 16]));
        assert_eq!(l.exported().digest(), user.exported.digest());
        assert!(l.exported().get_str_is("manager", "t9"));
        assert_eq!(l.exported().get("userName"), None);
        assert_eq!(index.slim_users(["u1", "u2", "u3"]), vec!["u1"]);
        assert!(index.of_mut(ObjectType::User).get_mut("u1").is_none());
        let g = index.groups().get("g1").unwrap();
        assert!(!g.is_slim());
        assert_eq!(g.to_link(), group);
        index.insert(&user);
        let l = index.users().get("u1").unwrap();
        assert!(!l.is_slim());
        assert_eq!(l.to_link(), user);
        assert!(index.slim_users(["u1"]).is_empty());
    }

    /// The planner keeps one `LinkRef` per link in a hash set (`LinkLookup`).
    #[test]
    fn a_link_ref_is_three_words() {
        assert_eq!(std::mem::size_of::<LinkRef<'_>>(), 24);
        let l = Link {
            object_type: ObjectType::User,
            source_id: "u1".into(),
            target_id: "t1".into(),
            display_name: "d".into(),
            matching: Matching::default(),
            exported: Exported::default(),
            members: BTreeSet::new(),
            created: false,
        };
        let index = LinkIndex::new([l]);
        let lookup = index.users().lookup();
        assert_eq!(lookup.get("u1").map(|l| l.target_id()), Some("t1"));
        assert!(lookup.get("u2").is_none());
    }

    #[test]
    fn matching_holds_what_it_was_given() {
        assert_eq!(Matching::default().get(), None);
        assert_eq!(Matching::new(None), Matching::default());
        let m = Matching::new(Some(("userName".into(), json!("a@x"))));
        assert_eq!(m.get(), Some(("userName".into(), json!("a@x"))));
        // A string that looks like JSON stays a string.
        let m = Matching::new(Some(("p".into(), json!("[1]"))));
        assert_eq!(m.get(), Some(("p".into(), json!("[1]"))));
    }

    fn link(ty: ObjectType) -> impl Strategy<Value = Link> {
        (
            "[a-d]{0,3}",
            ".{0,12}",
            ".{0,12}",
            prop::option::of(("[a-z]{0,6}", value())),
            prop::collection::btree_map("active|[a-c]|x\\.y", value(), 0..4),
            prop::collection::btree_set(".{0,6}", 0..4),
            any::<bool>(),
            prop::option::of((any::<[u8; 16]>(), prop::collection::vec(any::<u64>(), 0..3))),
        )
            .prop_map(
                move |(
                    source_id,
                    target_id,
                    display_name,
                    matching,
                    values,
                    members,
                    created,
                    digest,
                )| {
                    let mut exported =
                        Exported::from_map(&crate::attrs::map::AttrMap::from(values));
                    if let Some((inputs, matching)) = digest {
                        exported.set_digest(crate::attrs::InputDigest {
                            inputs,
                            matching: matching.into_boxed_slice(),
                        });
                    }
                    Link {
                        object_type: ty,
                        source_id,
                        target_id,
                        display_name,
                        matching: matching.into(),
                        exported,
                        members,
                        created,
                    }
                },
            )
    }

    /// A link read back from the index is the link put in, digest included, and the
    /// in-place reads agree with the decoded link.
    fn same(back: LinkRef<'_>, l: &Link) -> Result<(), TestCaseError> {
        let decoded = back.to_link();
        prop_assert_eq!(&decoded, l);
        prop_assert_eq!(decoded.exported.digest(), l.exported.digest());
        prop_assert_eq!(back.source_id(), l.source_id.as_str());
        prop_assert_eq!(back.target_id(), l.target_id.as_str());
        prop_assert_eq!(back.display_name(), l.display_name.as_str());
        prop_assert_eq!(back.disabled(), l.disabled());
        prop_assert_eq!(back.matching(), l.matching.clone());
        prop_assert!(back.members().eq(l.members.iter().map(String::as_str)));
        let e = back.exported();
        prop_assert_eq!(e.to_map(), l.exported.to_map());
        prop_assert_eq!(e.digest(), l.exported.digest());
        if let Some(d) = l.exported.digest() {
            prop_assert!(e.digest_is(&d.inputs));
        }
        prop_assert!(
            !e.digest_is(&[0xAA; 16])
                || l.exported.digest().is_some_and(|d| d.inputs == [0xAA; 16])
        );
        for (k, v) in l.exported.to_map().iter() {
            prop_assert_eq!(e.get(k), Some(v.clone()));
            if let Value::String(s) = v {
                prop_assert!(e.get_str_is(k, s));
                let other = format!("{s}!");
                prop_assert!(!e.get_str_is(k, &other));
            }
        }
        prop_assert!(e.covers(&l.exported.to_map()));
        Ok(())
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(Link),
        Remove(String),
        /// Change a link in place: a new display name and one member more.
        Change(String, String),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop_oneof![link(ObjectType::User), link(ObjectType::Group)].prop_map(Op::Insert),
            1 => "[a-d]{0,3}".prop_map(Op::Remove),
            1 => ("[a-d]{0,3}", ".{0,6}").prop_map(|(id, v)| Op::Change(id, v)),
        ]
    }

    proptest! {
        #[test]
        fn matching_round_trips(path in ".{0,30}", v in value(), other in value()) {
            let m = Matching::new(Some((path.clone(), v.clone())));
            prop_assert_eq!(m.get(), Some((path.clone(), v.clone())));
            // Serialized as the pair: the JSON schema's records are unchanged.
            let text = serde_json::to_string(&m).unwrap();
            prop_assert_eq!(&text, &serde_json::to_string(&Some((&path, &v))).unwrap());
            prop_assert_eq!(serde_json::from_str::<Matching>(&text).unwrap(), m.clone());
            // Equal exactly when the pairs are.
            let n = Matching::new(Some((path.clone(), other.clone())));
            prop_assert_eq!(m == n, v == other);
        }

        #[test]
        fn an_indexed_link_reads_back_whole(l in prop_oneof![link(ObjectType::User), link(ObjectType::Group)]) {
            let index = LinkIndex::new([l.clone()]);
            let back = index.get(l.object_type, &l.source_id);
            prop_assert!(back.is_some());
            if let Some(back) = back {
                same(back, &l)?;
            }
        }

        /// Built, inserted into, replaced, removed from and changed in place, the index holds
        /// what a `BTreeMap` of the links holds, in the same order.
        #[test]
        fn the_index_behaves_as_a_map(
            initial in prop::collection::vec(prop_oneof![link(ObjectType::User), link(ObjectType::Group)], 0..12),
            ops in prop::collection::vec(op(), 0..24),
        ) {
            let mut model: BTreeMap<(ObjectType, String), Link> = BTreeMap::new();
            for l in &initial {
                model.insert((l.object_type, l.source_id.clone()), l.clone());
            }
            let mut index = LinkIndex::new(initial);
            for op in ops {
                match op {
                    Op::Insert(l) => {
                        index.insert(&l);
                        model.insert((l.object_type, l.source_id.clone()), l);
                    }
                    Op::Remove(id) => {
                        let removed = index.of_mut(ObjectType::User).remove(&id);
                        prop_assert_eq!(removed, model.remove(&(ObjectType::User, id)));
                    }
                    Op::Change(id, name) => {
                        if let Some(mut l) = index.of_mut(ObjectType::Group).get_mut(&id) {
                            l.display_name = name.clone();
                            l.members.insert(name.clone());
                        }
                        if let Some(l) = model.get_mut(&(ObjectType::Group, id)) {
                            l.display_name = name.clone();
                            l.members.insert(name);
                        }
                    }
                }
            }
            prop_assert_eq!(index.len(), model.len());
            for ty in [ObjectType::User, ObjectType::Group] {
                let want: Vec<&Link> = model.iter().filter(|((t, _), _)| *t == ty).map(|(_, l)| l).collect();
                let links = index.of(ty);
                prop_assert_eq!(links.len(), want.len());
                prop_assert!(links.keys().eq(want.iter().map(|l| l.source_id.as_str())));
                for ((id, back), l) in links.iter().zip(&want) {
                    prop_assert_eq!(id, l.source_id.as_str());
                    same(back, l)?;
                    prop_assert!(links.contains_key(id));
                    prop_assert!(links.get(id).is_some());
                }
            }
        }
    }
}
