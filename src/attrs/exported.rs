//! [`Exported`]: a link's memory of the values last exported, as a [`CompactMap`] (a third
//! of an [`AttrMap`]'s memory; a cycle holds one per link), plus whether the account was left
//! disabled, which the planner asks of every linked user several times a cycle.

use crate::attrs::codec::Reader;
use crate::attrs::compact::CompactMap;
use crate::attrs::map::{AttrMap, Key};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// The last exported values of a link, by target path, in path order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Exported {
    map: CompactMap,
    /// `active` was last exported as `false`.
    disabled: bool,
}

impl Exported {
    fn of(map: CompactMap) -> Self {
        let disabled = map.get_bool("active") == Some(false);
        Exported { map, disabled }
    }

    pub fn from_map(map: &AttrMap) -> Self {
        Exported::of(CompactMap::from_map(map))
    }

    pub fn to_map(&self) -> AttrMap {
        self.map.to_map()
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.map.get(path)
    }

    /// `get(path)` is the string `s`, without building it.
    pub fn get_str_is(&self, path: &str, s: &str) -> bool {
        self.map.get_str(path) == Some(s)
    }

    pub fn contains_key(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    pub fn keys(&self) -> Vec<Key> {
        self.map.keys()
    }

    /// Whether `active` was last exported as `false`.
    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// Every value of `map` is the one last exported (see [`CompactMap::covers`]): the
    /// no-change test of a cycle, with no allocation.
    pub fn covers(&self, map: &AttrMap) -> bool {
        self.map.covers(map)
    }

    pub fn insert(&mut self, path: &str, value: Value) {
        self.map.insert(path, value);
        self.disabled = self.map.get_bool("active") == Some(false);
    }

    /// See [`CompactMap::write_portable`].
    pub fn write_portable(&self, out: &mut Vec<u8>, number: &mut dyn FnMut(&str) -> Option<u32>) {
        self.map.write_portable(out, number)
    }

    /// See [`CompactMap::read_portable`].
    pub fn read_portable(
        r: &mut Reader<'_>,
        name: &mut dyn FnMut(u32) -> Option<crate::attrs::compact::LocalName>,
    ) -> Option<Self> {
        CompactMap::read_portable(r, name).map(Exported::of)
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
        fmt::Debug::fmt(&self.map, f)
    }
}

impl Serialize for Exported {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Exported {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CompactMap::deserialize(d).map(Exported::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn disabled_follows_active() {
        let mut e: Exported = [("active", json!(true)), ("title", json!("A"))]
            .into_iter()
            .collect();
        assert!(!e.disabled());
        e.insert("active", json!(false));
        assert!(e.disabled());
        let back: Exported = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert!(back.disabled() && back == e);
        e.insert("active", json!(true));
        assert!(!e.disabled());
        assert!(e.get_str_is("title", "A") && !e.get_str_is("title", "B"));
    }
}
