//! The domain model shared by every stage of the pipeline: what a directory holds, in our own
//! terms. Source adapters convert their wire formats into these types; nothing downstream
//! knows whether a user came from a file, LDAP or Microsoft Graph.

mod link;
mod objects;
pub(crate) mod view;

pub(crate) use crate::attrs::map::AttrMap;
pub(crate) use link::{Link, LinkIndex, LinkIndexBuilder, LinkRef};
pub(crate) use objects::ObjectMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use view::Changes;

pub(crate) use crate::attrs::compact::CompactMap;

/// The two kinds of object provisiond provisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectType {
    User,
    Group,
}

impl ObjectType {
    /// The SCIM endpoint of this type, relative to the tenant URL.
    pub fn endpoint(self) -> &'static str {
        match self {
            ObjectType::User => "Users",
            ObjectType::Group => "Groups",
        }
    }

    /// A short lowercase name for logs and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::User => "user",
            ObjectType::Group => "group",
        }
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user or group as the source sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceObject {
    /// The immutable anchor (Entra `id`, LDAP `entryUUID`/`objectGUID`): links are keyed by it,
    /// so a rename never looks like a delete and a create.
    pub id: String,
    pub object_type: ObjectType,
    /// Every other attribute, by its source name. Members are kept apart, in `members`.
    /// Held compactly: a cycle keeps every object of the directory in memory at once.
    pub attributes: CompactMap,
    /// Groups only: the ids of the direct members (users or groups).
    pub members: Vec<String>,
}

impl SourceObject {
    /// Attribute by name, null when absent (decoded: see [`CompactMap`]).
    pub fn attr(&self, name: &str) -> Option<Value> {
        self.attributes.get(name).filter(|v| !v.is_null())
    }

    /// `accountEnabled: false` disables; anything else (absent included) is enabled, as in Entra.
    pub fn enabled(&self) -> bool {
        self.attributes.get_bool("accountEnabled") != Some(false)
    }

    /// Soft-deleted: Entra sets `deletedDateTime` on objects in its recycle bin.
    pub fn soft_deleted(&self) -> bool {
        self.attributes.is_set("deletedDateTime")
    }

    /// A human-readable name for logs: displayName, then userPrincipalName, then the id.
    pub fn display_name(&self) -> &str {
        ["displayName", "userPrincipalName"]
            .iter()
            .find_map(|k| self.attributes.get_str(k))
            .unwrap_or(&self.id)
    }
}

/// An app role assignment: a user or group assigned to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub principal_id: String,
    /// The role's display name; "User" when the export says nothing.
    pub role: String,
}

/// An object the source handed us that cannot be used, with the reason. It is reported and
/// skipped; the rest of the cycle proceeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub object_type: Option<ObjectType>,
    pub id: Option<String>,
    /// Where in the source the object was (e.g. `users[17]`), so an admin can find it.
    pub position: String,
    pub reason: String,
}

/// Everything one source read produced.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// By id, each id held once (see [`ObjectMap`]).
    pub users: ObjectMap,
    pub groups: ObjectMap,
    pub assignments: Vec<Assignment>,
    pub rejected: Vec<Rejected>,
    /// False when the read stopped early (a page failed, a connection dropped). An incomplete
    /// read must never be taken as "these objects are gone": the planner then plans no disable
    /// and no delete.
    pub complete: bool,
}

impl Directory {
    pub fn objects(&self, ty: ObjectType) -> &ObjectMap {
        match ty {
            ObjectType::User => &self.users,
            ObjectType::Group => &self.groups,
        }
    }
}
