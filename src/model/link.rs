//! A link: what provisiond knows about one object it created or matched in the target, and
//! the per-job index of them. Domain types, so the planner can read links without depending
//! on the store that persists them (`crate::state`).

use super::ObjectType;
use crate::attrs::Exported;
use serde::{Deserialize, Serialize};
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
    pub matching: Option<(String, Value)>,
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
