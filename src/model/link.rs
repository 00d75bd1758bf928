//! A link: what provisiond knows about one object it created or matched in the target, and
//! the per-job index of them. Domain types, so the planner can read links without depending
//! on the store that persists them (`crate::state`).

use super::ObjectType;
use crate::attrs::codec::{put_bytes, Reader};
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

/// Links of a job indexed by type and source id.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkIndex {
    pub users: BTreeMap<String, Link>,
    pub groups: BTreeMap<String, Link>,
}

impl LinkIndex {
    pub(crate) fn new(links: Vec<Link>) -> Self {
        // Built in bulk, not by inserting one by one: inserting in key order (as a store hands
        // them over) leaves every B-tree node half empty, a third more memory for 100k links.
        // A later duplicate replaces an earlier one either way. The keyed entries go straight
        // into one vector per type, which `collect` sorts in place (a store hands them over
        // sorted: no work) and builds the tree from: no third copy of every link, as a
        // partition into two vectors first made (about 20 MB for 100k links at the cycle's
        // peak).
        let (mut users, mut groups) = (Vec::new(), Vec::new());
        for l in links {
            let entry = (l.source_id.clone(), l);
            match entry.1.object_type {
                ObjectType::User => users.push(entry),
                ObjectType::Group => groups.push(entry),
            }
        }
        LinkIndex {
            users: users.into_iter().collect(),
            groups: groups.into_iter().collect(),
        }
    }
    pub(crate) fn of(&self, ty: ObjectType) -> &BTreeMap<String, Link> {
        match ty {
            ObjectType::User => &self.users,
            ObjectType::Group => &self.groups,
        }
    }
    pub(crate) fn of_mut(&mut self, ty: ObjectType) -> &mut BTreeMap<String, Link> {
        match ty {
            ObjectType::User => &mut self.users,
            ObjectType::Group => &mut self.groups,
        }
    }
    pub(crate) fn get(&self, ty: ObjectType, source_id: &str) -> Option<&Link> {
        self.of(ty).get(source_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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
    }
}
