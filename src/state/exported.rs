//! [`Exported`]: a link's memory of the values last exported, held compactly.
//!
//! A cycle holds every link in memory, and the last exported values are most of a link: as an
//! [`AttrMap`] a user's dozen values cost about 900 bytes (48 per entry, plus each string's
//! own allocation), 90 MB for 100k users. Here they are one byte string: each attribute name
//! as a small number (from a process-wide registry of the names seen), each value as a tag
//! and its bytes, about a third of that. A no-change cycle never decodes it: [`Exported::same_as`]
//! compares the mapped values against the bytes without allocating.
//!
//! It (de)serialises as the JSON object it stands for, so the state store's records do not
//! depend on the process-local name numbers.

use super::codec::{put_bytes, put_varint, Reader};
use crate::attr_map::{intern, AttrMap, Key};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, PoisonError, RwLock};

/// Names get a number up to this many; the rest are written out in full. Names come from the
/// mappings (SCIM paths), so a real job has a few dozen.
const MAX_NAMES: usize = 1 << 16;

#[derive(Default)]
struct Names {
    keys: Vec<Key>,
    ids: HashMap<Key, u32>,
}

fn names() -> &'static RwLock<Names> {
    static NAMES: OnceLock<RwLock<Names>> = OnceLock::new();
    NAMES.get_or_init(RwLock::default)
}

/// The number of `name`, registering it when new; `None` once the registry is full.
fn name_id(name: &str) -> Option<u32> {
    {
        let r = names().read().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = r.ids.get(name) {
            return Some(*id);
        }
    }
    let mut w = names().write().unwrap_or_else(PoisonError::into_inner);
    if let Some(id) = w.ids.get(name) {
        return Some(*id);
    }
    if w.keys.len() >= MAX_NAMES {
        return None;
    }
    let id = w.keys.len() as u32;
    let key = intern(name);
    w.keys.push(key.clone());
    w.ids.insert(key, id);
    Some(id)
}

fn name_of(id: u32) -> Option<Key> {
    let r = names().read().unwrap_or_else(PoisonError::into_inner);
    r.keys.get(id as usize).cloned()
}

// Value tags.
const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const STRING: u8 = 3;
/// Numbers, arrays and objects: their JSON text.
const JSON: u8 = 4;

/// The last exported values of a link, by target path, in path order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Entries: name (varint id + 1, or 0 then the name's length and bytes), tag, payload.
    bytes: Box<[u8]>,
    /// `active` is `false`: asked for every linked user several times a cycle.
    disabled: bool,
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    match name_id(name) {
        Some(id) => put_varint(out, u64::from(id) + 1),
        None => {
            put_varint(out, 0);
            put_bytes(out, name.as_bytes());
        }
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::String(s) => {
            out.push(STRING);
            put_bytes(out, s.as_bytes());
        }
        other => {
            out.push(JSON);
            put_bytes(out, other.to_string().as_bytes());
        }
    }
}

/// Write a value read back, unchanged.
fn put_raw(out: &mut Vec<u8>, raw: &Raw<'_>) {
    match raw {
        Raw::Null => out.push(NULL),
        Raw::Bool(false) => out.push(FALSE),
        Raw::Bool(true) => out.push(TRUE),
        Raw::Str(s) => {
            out.push(STRING);
            put_bytes(out, s.as_bytes());
        }
        Raw::Json(j) => {
            out.push(JSON);
            put_bytes(out, j.as_bytes());
        }
    }
}

/// A name as read back: a registered number or the bytes written out.
enum Name<'a> {
    Id(u32),
    Inline(&'a str),
}

/// A value as read back, borrowing the bytes.
enum Raw<'a> {
    Null,
    Bool(bool),
    Str(&'a str),
    Json(&'a str),
}

impl Raw<'_> {
    fn to_value(&self) -> Value {
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Str(s) => Value::String((*s).to_string()),
            // Written from a `Value`, so it parses; `Null` only if the bytes were damaged.
            Raw::Json(j) => serde_json::from_str(j).unwrap_or(Value::Null),
        }
    }

    /// Equal to `v`, without building a `Value` for strings and booleans.
    fn eq_value(&self, v: &Value) -> bool {
        match (self, v) {
            (Raw::Null, Value::Null) => true,
            (Raw::Bool(a), Value::Bool(b)) => a == b,
            (Raw::Str(a), Value::String(b)) => *a == b.as_str(),
            (Raw::Json(_), Value::Number(_) | Value::Array(_) | Value::Object(_)) => {
                &self.to_value() == v
            }
            _ => false,
        }
    }
}

/// Reads entries back. Stops (yields nothing more) at damaged bytes, which only this module
/// writes, so it never happens in practice and never panics.
struct Entries<'a> {
    r: Reader<'a>,
}

impl<'a> Entries<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Entries {
            r: Reader::new(bytes),
        }
    }

    fn entry(&mut self) -> Option<(Name<'a>, Raw<'a>)> {
        if self.r.is_empty() {
            return None;
        }
        let name = match self.r.varint()? {
            0 => Name::Inline(self.r.str()?),
            n => Name::Id(u32::try_from(n - 1).ok()?),
        };
        let raw = match self.r.byte()? {
            NULL => Raw::Null,
            FALSE => Raw::Bool(false),
            TRUE => Raw::Bool(true),
            STRING => Raw::Str(self.r.str()?),
            JSON => Raw::Json(self.r.str()?),
            _ => return None,
        };
        Some((name, raw))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = (Name<'a>, Raw<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let e = self.entry();
        if e.is_none() {
            self.r.rest = &[];
        }
        e
    }
}

impl Name<'_> {
    fn key(&self) -> Key {
        match self {
            Name::Id(id) => name_of(*id).unwrap_or_else(|| intern("")),
            Name::Inline(s) => intern(s),
        }
    }
    fn is(&self, name: &str) -> bool {
        match self {
            Name::Id(id) => name_id(name) == Some(*id),
            Name::Inline(s) => *s == name,
        }
    }
}

impl Exported {
    pub fn new() -> Self {
        Exported::default()
    }

    pub fn from_map(map: &AttrMap) -> Self {
        let mut out = Vec::new();
        for (k, v) in map {
            put_name(&mut out, k);
            put_value(&mut out, v);
        }
        Exported {
            bytes: out.into_boxed_slice(),
            disabled: map.get("active") == Some(&Value::Bool(false)),
        }
    }

    fn entries(&self) -> Entries<'_> {
        Entries::new(&self.bytes)
    }

    /// The values, decoded.
    pub fn to_map(&self) -> AttrMap {
        self.entries()
            .map(|(n, v)| (n.key(), v.to_value()))
            .collect()
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.entries()
            .find(|(n, _)| n.is(path))
            .map(|(_, v)| v.to_value())
    }

    /// `get(path)` is the string `s`, without building it.
    pub fn get_str_is(&self, path: &str, s: &str) -> bool {
        self.entries()
            .find(|(n, _)| n.is(path))
            .is_some_and(|(_, v)| matches!(v, Raw::Str(x) if x == s))
    }

    pub fn contains_key(&self, path: &str) -> bool {
        self.entries().any(|(n, _)| n.is(path))
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn keys(&self) -> Vec<Key> {
        self.entries().map(|(n, _)| n.key()).collect()
    }

    /// Whether `active` was last exported as `false`.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Exactly the values of `map`: the no-change test of a cycle, with no allocation.
    pub fn same_as(&self, map: &AttrMap) -> bool {
        // One read of the registry for the whole comparison, names compared as strings.
        let registry = names().read().unwrap_or_else(PoisonError::into_inner);
        let mut mine = self.entries();
        for (k, v) in map {
            let Some((name, raw)) = mine.next() else {
                return false;
            };
            let same_name = match name {
                Name::Id(id) => registry.keys.get(id as usize).is_some_and(|n| &**n == k),
                Name::Inline(s) => s == k,
            };
            if !same_name || !raw.eq_value(v) {
                return false;
            }
        }
        mine.next().is_none()
    }

    /// Set one value (decodes and re-encodes: used once per exported change, not per object).
    pub fn insert(&mut self, path: &str, value: Value) {
        let mut m = self.to_map();
        m.insert(path, value);
        *self = Exported::from_map(&m);
    }

    pub fn remove(&mut self, path: &str) {
        let mut m = self.to_map();
        if m.remove(path).is_some() {
            *self = Exported::from_map(&m);
        }
    }

    /// Append the values with names numbered by `number` (a state store's own dictionary:
    /// this process's numbers mean nothing to the next one); `None` writes a name out.
    pub fn write_portable(&self, out: &mut Vec<u8>, number: &mut dyn FnMut(&str) -> Option<u32>) {
        let mut body = Vec::with_capacity(self.bytes.len());
        for (name, raw) in self.entries() {
            let key;
            let text: &str = match name {
                Name::Id(id) => {
                    key = name_of(id).unwrap_or_else(|| intern(""));
                    &key
                }
                Name::Inline(s) => s,
            };
            match number(text) {
                Some(n) => put_varint(&mut body, u64::from(n) + 1),
                None => {
                    put_varint(&mut body, 0);
                    put_bytes(&mut body, text.as_bytes());
                }
            }
            put_raw(&mut body, &raw);
        }
        put_bytes(out, &body);
    }

    /// Read what [`Exported::write_portable`] wrote, from `r`; `name` gives the text of a
    /// dictionary number. `None` for damaged bytes or an unknown number.
    pub fn read_portable(
        r: &mut Reader<'_>,
        name: &mut dyn FnMut(u32) -> Option<Key>,
    ) -> Option<Self> {
        let mut entries = Entries::new(r.bytes()?);
        let mut out = Vec::new();
        let mut disabled = false;
        while !entries.r.is_empty() {
            let (n, raw) = entries.entry()?;
            let text = match n {
                Name::Id(id) => name(id)?,
                Name::Inline(s) => intern(s),
            };
            disabled |= &*text == "active" && matches!(raw, Raw::Bool(false));
            put_name(&mut out, &text);
            put_raw(&mut out, &raw);
        }
        Some(Exported {
            bytes: out.into_boxed_slice(),
            disabled,
        })
    }

    /// Memory held, for the benchmark's accounting and tests.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }
}

impl From<AttrMap> for Exported {
    fn from(m: AttrMap) -> Self {
        Exported::from_map(&m)
    }
}

impl From<&AttrMap> for Exported {
    fn from(m: &AttrMap) -> Self {
        Exported::from_map(m)
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for Exported {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        Exported::from_map(&iter.into_iter().collect())
    }
}

impl fmt::Debug for Exported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_map(), f)
    }
}

impl Serialize for Exported {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.entries()
                .map(|(n, v)| (n.key().to_string(), v.to_value())),
        )
    }
}

impl<'de> Deserialize<'de> for Exported {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Exported::from_map(&AttrMap::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(v: Value) -> AttrMap {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn round_trips_every_kind_of_value() {
        let m = map(json!({
            "userName": "alice@x", "active": false, "n": 12.5, "big": 123456789012345u64,
            "empty": "", "nul": null, "arr": ["a", 1], "obj": {"k": [true]},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D ✓",
        }));
        let e = Exported::from_map(&m);
        assert_eq!(e.to_map(), m);
        assert!(e.disabled());
        assert!(e.same_as(&m));
        assert_eq!(e.get("n"), Some(json!(12.5)));
        assert_eq!(e.get("missing"), None);
        assert!(e.get_str_is("userName", "alice@x") && !e.get_str_is("userName", "bob"));
        assert_eq!(e.len(), m.len());
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string(&m).unwrap()
        );
        let back: Exported = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn same_as_sees_every_difference() {
        let base = map(json!({"a": "x", "b": true, "c": 1}));
        let e = Exported::from_map(&base);
        for other in [
            json!({"a": "x", "b": true}),
            json!({"a": "x", "b": true, "c": 1, "d": null}),
            json!({"a": "y", "b": true, "c": 1}),
            json!({"a": "x", "b": false, "c": 1}),
            json!({"a": "x", "b": "true", "c": 1}),
            json!({"a": "x", "b": true, "c": 1.0}),
            json!({"a": "x", "b": true, "C": 1}),
        ] {
            assert!(!e.same_as(&map(other.clone())), "{other}");
        }
        assert!(Exported::new().same_as(&AttrMap::new()));
    }

    #[test]
    fn insert_and_remove() {
        let mut e = Exported::from_map(&map(json!({"active": true, "title": "A"})));
        assert!(!e.disabled());
        e.insert("active", json!(false));
        assert!(e.disabled());
        e.remove("title");
        e.remove("nothing");
        assert_eq!(e.to_map(), map(json!({"active": false})));
    }

    #[test]
    fn damaged_bytes_read_as_fewer_entries_never_panic() {
        let e = Exported::from_map(&map(json!({"a": "xyz", "b": [1, 2]})));
        for cut in 0..e.bytes.len() {
            let d = Exported {
                bytes: e.bytes[..cut].into(),
                disabled: false,
            };
            assert!(d.to_map().len() <= 2);
        }
        let junk = Exported {
            bytes: vec![0xff; 12].into(),
            disabled: false,
        };
        assert!(junk.to_map().is_empty());
    }

    #[test]
    fn portable_form_renumbers_names_and_reads_back() {
        let m = map(json!({"active": false, "title": "T", "n": [1], "zz": null}));
        let e = Exported::from_map(&m);
        // A store dictionary: names numbered in its own order; "zz" left out (written inline).
        let dict = ["title", "active", "n"];
        let mut out = Vec::new();
        e.write_portable(&mut out, &mut |n| {
            dict.iter().position(|d| *d == n).map(|i| i as u32)
        });
        let mut r = Reader::new(&out);
        let back =
            Exported::read_portable(&mut r, &mut |i| dict.get(i as usize).map(|d| intern(d)))
                .unwrap();
        assert!(r.is_empty());
        assert_eq!(back, e);
        assert!(back.disabled());
        // An unknown number, or any truncation, is refused, never misread.
        assert!(Exported::read_portable(&mut Reader::new(&out), &mut |_| None).is_none());
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            assert!(Exported::read_portable(&mut r, &mut |i| {
                dict.get(i as usize).map(|d| intern(d))
            })
            .is_none());
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
            prop::collection::vec(".{0,4}", 0..3).prop_map(|v| json!(v)),
        ]
    }

    proptest! {
        #[test]
        fn encoding_is_lossless_and_same_as_agrees_with_equality(
            a in prop::collection::btree_map("[a-e]{1,3}", value(), 0..6),
            b in prop::collection::btree_map("[a-e]{1,3}", value(), 0..6),
        ) {
            let (ma, mb): (AttrMap, AttrMap) = (a.into(), b.into());
            let ea = Exported::from_map(&ma);
            prop_assert_eq!(ea.to_map(), ma.clone());
            prop_assert_eq!(ea.same_as(&mb), ma == mb);
            prop_assert_eq!(ea == Exported::from_map(&mb), ma == mb);
        }
    }
}
