//! [`AttrMap`]: attribute name (or SCIM path) → JSON value, built for the hundreds of
//! thousands of objects a cycle holds in memory at once (the directory, the links' last
//! exported values, the mapped values).
//!
//! A `BTreeMap<String, Value>` of 14 attributes costs about 3 KB: two or three B-tree nodes of
//! 600 bytes each, and one `String` per key per object. An `AttrMap` is one sorted vector of
//! (interned key, value): 48 bytes per entry plus the value's own allocation, which took the
//! memory of a no-change cycle over 100k users from about 940 MB to well under half that. It
//! iterates in key order and serialises as a JSON object exactly like the `BTreeMap` did, so
//! the state store's records are unchanged.

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A shared, immutable key: every object with attribute `mail` points at the same `"mail"`.
pub(crate) type Key = Arc<str>;

/// Keys are interned per thread, up to this many distinct names (attribute names and SCIM
/// paths are few; a hostile file with millions of distinct names just stops being interned).
const MAX_INTERNED: usize = 4096;

thread_local! {
    static KEYS: RefCell<HashSet<Key, BuildHasherDefault<Fnv>>> = RefCell::default();
    /// The key last seen at each position of a map being read: objects of one kind list
    /// their attributes in the same order, so this usually answers without hashing.
    static BY_POSITION: RefCell<Vec<Key>> = const { RefCell::new(Vec::new()) };
}

/// Positions remembered by `intern_at`.
const POSITIONS: usize = 64;

/// `intern(name)`, for the `position`-th key of a map.
fn intern_at(position: usize, name: &str) -> Key {
    if position >= POSITIONS {
        return intern(name);
    }
    BY_POSITION
        .try_with(|seen| {
            let Ok(mut seen) = seen.try_borrow_mut() else {
                return intern(name);
            };
            if let Some(k) = seen.get(position) {
                if &**k == name {
                    return k.clone();
                }
            }
            let k = intern(name);
            if position < seen.len() {
                seen[position] = k.clone();
            } else if position == seen.len() {
                seen.push(k.clone());
            }
            k
        })
        .unwrap_or_else(|_| intern(name))
}

/// FNV-1a: interning hashes every key of every object read; SipHash's DoS resistance buys
/// nothing for a table capped at `MAX_INTERNED` entries, and it cost twice as much.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The shared copy of `name`.
pub(crate) fn intern(name: &str) -> Key {
    KEYS.try_with(|keys| {
        let Ok(mut keys) = keys.try_borrow_mut() else {
            return Arc::from(name);
        };
        if let Some(k) = keys.get(name) {
            return k.clone();
        }
        let k: Key = Arc::from(name);
        if keys.len() < MAX_INTERNED {
            keys.insert(k.clone());
        }
        k
    })
    .unwrap_or_else(|_| Arc::from(name))
}

/// A small map from names to JSON values, sorted by name (byte order, as `BTreeMap<String, _>`).
#[derive(Clone, Default, PartialEq)]
pub struct AttrMap {
    entries: Vec<(Key, Value)>,
}

static NULL: Value = Value::Null;

impl AttrMap {
    pub fn new() -> Self {
        AttrMap::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `key` is, or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// Where `key` is. Objects have a dozen or two attributes: a scan comparing for equality
    /// (lengths first) beats a binary search's ordering comparisons there.
    fn position(&self, key: &str) -> Option<usize> {
        if self.entries.len() <= 24 {
            self.entries.iter().position(|(k, _)| &**k == key)
        } else {
            self.find(key).ok()
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Each entry of `self`, in key order, with the value `other` has for the same key: one
    /// merge of the two sorted maps instead of a lookup per key.
    pub fn zip_get<'a>(
        &'a self,
        other: &'a AttrMap,
    ) -> impl Iterator<Item = (&'a str, &'a Value, Option<&'a Value>)> + 'a {
        let mut rest = other.entries.as_slice();
        self.entries.iter().map(move |(k, v)| {
            // Keys interned on the same thread are the same allocation: compare pointers first.
            while let Some(((ok, _), tail)) = rest.split_first() {
                if !Arc::ptr_eq(ok, k) && **ok < **k {
                    rest = tail;
                } else {
                    break;
                }
            }
            let found = match rest.first() {
                Some((ok, ov)) if Arc::ptr_eq(ok, k) || ok == k => Some(ov),
                _ => None,
            };
            (&**k, v, found)
        })
    }

    /// Insert or replace; returns the value replaced.
    pub fn insert(&mut self, key: impl AsRef<str>, value: Value) -> Option<Value> {
        let key = key.as_ref();
        match self.find(key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (intern(key), value));
                None
            }
        }
    }

    /// `insert` with a key already shared (no interning).
    pub fn insert_key(&mut self, key: &Key, value: Value) -> Option<Value> {
        // Built in key order (mappings listed by path), this is one comparison, not a search.
        if self.entries.last().is_none_or(|(last, _)| **last < **key) {
            self.entries.push((key.clone(), value));
            return None;
        }
        match self.find(key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key.clone(), value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.position(key).map(|i| self.entries.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Value) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &Value)> + ExactSizeIterator {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// Entries in key order, with the shared keys themselves: a caller that keeps a key
    /// clones an `Arc`, not the text.
    pub(crate) fn shared(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| &**k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// As a JSON object.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// Sort by key; of equal keys the last one wins (as when inserting one by one).
    fn normalise(&mut self) {
        if self.entries.windows(2).all(|w| w[0].0 < w[1].0) {
            return;
        }
        // Stable: equal keys stay in insertion order, then all but the last are dropped.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Key, Value)> = Vec::with_capacity(self.entries.len());
        for (k, v) in self.entries.drain(..) {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        self.entries = out;
    }
}

impl fmt::Debug for AttrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// `map["name"]`: the value, or null when absent (never panics).
impl std::ops::Index<&str> for AttrMap {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NULL)
    }
}

impl<K: AsRef<str>> FromIterator<(K, Value)> for AttrMap {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        let mut m = AttrMap {
            entries: iter
                .into_iter()
                .map(|(k, v)| (intern(k.as_ref()), v))
                .collect(),
        };
        m.normalise();
        m
    }
}

impl<K: AsRef<str>> Extend<(K, Value)> for AttrMap {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl From<serde_json::Map<String, Value>> for AttrMap {
    fn from(m: serde_json::Map<String, Value>) -> Self {
        m.into_iter().collect()
    }
}

impl From<std::collections::BTreeMap<String, Value>> for AttrMap {
    fn from(m: std::collections::BTreeMap<String, Value>) -> Self {
        m.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a AttrMap {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Key, Value)>,
        fn(&'a (Key, Value)) -> (&'a str, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        fn pair((k, v): &(Key, Value)) -> (&str, &Value) {
            (k, v)
        }
        self.entries.iter().map(pair)
    }
}

impl IntoIterator for AttrMap {
    type Item = (Key, Value);
    type IntoIter = std::vec::IntoIter<(Key, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl Serialize for AttrMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Deserialises the `.0`-th key of a map straight into its interned form, without a
/// `String` in between when the input allows borrowing.
pub(crate) struct KeySeed(pub(crate) usize);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(intern_at(self.0, v))
    }
}

/// Visits a JSON object into an [`AttrMap`]; used by its `Deserialize` and by sources that
/// parse objects straight into one.
pub(crate) struct AttrMapVisitor;

impl<'de> Visitor<'de> for AttrMapVisitor {
    type Value = AttrMap;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<AttrMap, A::Error> {
        let mut m = AttrMap {
            entries: Vec::with_capacity(access.size_hint().unwrap_or(0)),
        };
        while let Some(k) = access.next_key_seed(KeySeed(m.entries.len()))? {
            let v: Value = access.next_value()?;
            m.entries.push((k, v));
        }
        m.normalise();
        Ok(m)
    }
}

impl<'de> Deserialize<'de> for AttrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(AttrMapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_like_a_btreemap() {
        let mut m = AttrMap::new();
        let mut b = BTreeMap::new();
        for (k, v) in [("b", 1), ("a", 2), ("c", 3), ("a", 4), ("B", 5)] {
            assert_eq!(m.insert(k, json!(v)), b.insert(k.to_string(), json!(v)));
        }
        assert_eq!(m.remove("c"), b.remove("c"));
        assert_eq!(m.remove("zz"), b.remove("zz"));
        let pairs: Vec<(String, Value)> = m.iter().map(|(k, v)| (k.into(), v.clone())).collect();
        let expected: Vec<(String, Value)> = b.into_iter().collect();
        assert_eq!(pairs, expected);
        assert_eq!(m["a"], json!(4));
        assert_eq!(m["missing"], Value::Null);
        assert!(m.contains_key("B") && !m.contains_key("c"));
    }

    #[test]
    fn serde_round_trip_matches_a_btreemap_and_last_duplicate_wins() {
        let m: AttrMap = serde_json::from_str(r#"{"z":1,"a":{"x":[1]},"m":null,"z":2}"#).unwrap();
        let b: BTreeMap<String, Value> =
            serde_json::from_str(r#"{"z":1,"a":{"x":[1]},"m":null,"z":2}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(AttrMap::from(b.clone()), m);
        let back: AttrMap = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<AttrMap>("[1]").is_err());
    }

    #[test]
    fn zip_get_finds_the_same_keys_as_get() {
        let a: AttrMap = [("a", 1), ("c", 3), ("e", 5), ("g", 7)]
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        let b: AttrMap = [("b", 20), ("c", 30), ("g", 70), ("h", 80)]
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        let zipped: Vec<_> = a.zip_get(&b).collect();
        let looked_up: Vec<_> = a.iter().map(|(k, v)| (k, v, b.get(k))).collect();
        assert_eq!(zipped, looked_up);
        assert_eq!(AttrMap::new().zip_get(&b).count(), 0);
        assert!(a.zip_get(&AttrMap::new()).all(|(_, _, o)| o.is_none()));
    }

    #[test]
    fn keys_are_shared() {
        let a: AttrMap = [("displayName", json!("A"))].into_iter().collect();
        let b: AttrMap = serde_json::from_str(r#"{"displayName":"B"}"#).unwrap();
        assert!(Arc::ptr_eq(&a.entries[0].0, &b.entries[0].0));
    }
}
