//! Scope: which source objects the application should have. Pure: a function of the
//! directory and the job's scope settings (assignment scope, excluded roles, scoping filters).

pub(crate) mod filter;

pub(crate) use filter::{FilterSpec, ScopingFilter};

use crate::model::{Directory, ObjectMap, ObjectType, SourceObject};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Entra's "Sync only assigned users and groups" / "Sync all users and groups".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeMode {
    #[default]
    Assigned,
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopeSettings {
    pub mode: ScopeMode,
    /// Assignments with these roles do not count (Robin's tutorial: "Default Access").
    pub excluded_roles: Vec<String>,
    /// Scoping filters for users: ORed; none = no attribute condition.
    pub user_filters: Vec<ScopingFilter>,
    /// Scoping filters for groups.
    pub group_filters: Vec<ScopingFilter>,
}

impl Default for ScopeSettings {
    fn default() -> Self {
        ScopeSettings {
            mode: ScopeMode::Assigned,
            excluded_roles: vec!["Default Access".into()],
            user_filters: Vec::new(),
            group_filters: Vec::new(),
        }
    }
}

/// Why an object present in the source is not wanted in the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OutOfScope {
    /// Neither assigned nor a direct member of an assigned group.
    NotAssigned,
    /// Assigned only with roles listed in `excluded_roles`.
    ExcludedRole(String),
    /// `accountEnabled: false`.
    Disabled,
    /// In the source's recycle bin.
    SoftDeleted,
    /// Failed the job's scoping filters.
    Filtered(String),
}

impl std::fmt::Display for OutOfScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutOfScope::NotAssigned => f.write_str("not assigned to the application"),
            OutOfScope::ExcludedRole(r) => write!(f, "assigned only with the excluded role {r:?}"),
            OutOfScope::Disabled => f.write_str("disabled in the source (accountEnabled=false)"),
            OutOfScope::SoftDeleted => f.write_str("soft-deleted in the source"),
            OutOfScope::Filtered(why) => write!(f, "excluded by a scoping filter: {why}"),
        }
    }
}

/// The scope decision for every object of the directory.
///
/// Held beside the directory's own objects, in their order: a hash map per kind cloned every
/// id of the directory (19 MB at 100k users, ~0.2 GB at a million), while a decision in a
/// vector costs its own 24 bytes and a role set 8 (see [`ObjectMap`]: the clone kept here
/// shares the directory's objects).
#[derive(Debug, Clone, Default)]
pub struct Scoped {
    pub users: Decisions,
    pub groups: Decisions,
    /// Role names per user, direct and inherited from assigned groups, for the virtual
    /// attribute `appRoleAssignments`. Principals with the same roles share one set (100k
    /// users assigned as "User" hold one set, not 100k).
    pub roles: Roles,
}

impl Scoped {
    pub fn decision(&self, ty: ObjectType, id: &str) -> Option<&Result<(), OutOfScope>> {
        match ty {
            ObjectType::User => self.users.get(id),
            ObjectType::Group => self.groups.get(id),
        }
    }

    pub fn in_scope(&self, ty: ObjectType, id: &str) -> bool {
        matches!(self.decision(ty, id), Some(Ok(())))
    }

    /// The decisions on the objects of `ty`.
    pub(crate) fn of(&self, ty: ObjectType) -> &Decisions {
        match ty {
            ObjectType::User => &self.users,
            ObjectType::Group => &self.groups,
        }
    }
}

/// The decision on each object of one kind: `None` for an id the directory does not have.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// The directory's objects (shared, not copied): they give each id its position.
    objects: ObjectMap,
    /// One per object, in `objects`' order.
    decided: Vec<Result<(), OutOfScope>>,
}

impl Decisions {
    /// The decision on the object with this id.
    pub fn get(&self, id: &str) -> Option<&Result<(), OutOfScope>> {
        self.objects.position(id).and_then(|i| self.decided.get(i))
    }

    /// `(id, decision)` in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Result<(), OutOfScope>)> + '_ {
        self.objects.keys().zip(&self.decided)
    }

    /// The decisions by position in `objects`, when they are the objects these were decided
    /// on (a handle on them, not a copy): the planner walks the directory in order and reads
    /// the decision at each position rather than searching for each id.
    pub(crate) fn in_order_of(&self, objects: &ObjectMap) -> Option<&[Result<(), OutOfScope>]> {
        self.objects
            .shares_with(objects)
            .then_some(self.decided.as_slice())
    }

    /// How many objects were decided.
    pub fn len(&self) -> usize {
        self.decided.len()
    }

    /// No object at all.
    pub fn is_empty(&self) -> bool {
        self.decided.is_empty()
    }
}

/// Each user's app roles, when she has any.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// The directory's users (shared, not copied).
    users: ObjectMap,
    /// One per user, in `users`' order.
    of: Vec<Option<Arc<BTreeSet<String>>>>,
}

impl Roles {
    /// The roles of the user with this id; `None` when she has none (or is not in the
    /// directory).
    pub fn get(&self, id: &str) -> Option<&Arc<BTreeSet<String>>> {
        self.users
            .position(id)
            .and_then(|i| self.of.get(i))
            .and_then(Option::as_ref)
    }

    /// The roles by position in `users`, when they are the users these were found for (see
    /// [`Decisions::in_order_of`]).
    pub(crate) fn in_order_of(
        &self,
        users: &ObjectMap,
    ) -> Option<&[Option<Arc<BTreeSet<String>>>]> {
        self.users.shares_with(users).then_some(self.of.as_slice())
    }
}

/// Decide the scope of every user and group.
pub fn evaluate(dir: &Directory, settings: &ScopeSettings) -> Scoped {
    let excluded: BTreeSet<&str> = settings.excluded_roles.iter().map(String::as_str).collect();
    // Roles by principal, split into counting and excluded ones.
    // Hash maps: one lookup per user of 100k, where a B-tree compared long ids a dozen times.
    // A principal's roles are a vector, not a `BTreeSet`: most hold one role, and a B-tree's
    // first node is ~200 bytes, 154 MB at the peak of a 1M-user cycle where each user is
    // assigned directly (the vector's one entry is 16 bytes). Repeats are dropped where a
    // user's set is built (sorted and deduplicated there).
    let mut counted: HashMap<&str, Vec<&str>> = HashMap::with_capacity(dir.assignments.len());
    let mut excluded_only: HashMap<&str, &str> = HashMap::new();
    for a in &dir.assignments {
        if excluded.contains(a.role.as_str()) {
            excluded_only.entry(&a.principal_id).or_insert(&a.role);
        } else {
            counted.entry(&a.principal_id).or_default().push(&a.role);
        }
    }

    let mut groups_decided = Vec::with_capacity(dir.groups.len());
    let usable = |o: &SourceObject| -> Result<(), OutOfScope> {
        if o.soft_deleted() {
            return Err(OutOfScope::SoftDeleted);
        }
        let filters = match o.object_type {
            ObjectType::User => &settings.user_filters,
            ObjectType::Group => &settings.group_filters,
        };
        filter::check_any(filters, o).map_err(|e| OutOfScope::Filtered(e.to_string()))
    };

    // Groups first: assigned groups bring their direct members into scope, with the roles
    // the group is assigned with (a short list per user: few roles exist).
    let mut member_of_assigned: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, g) in &dir.groups {
        let decision = match settings.mode {
            ScopeMode::All => usable(g),
            ScopeMode::Assigned => match (counted.get(id.as_str()), excluded_only.get(id.as_str()))
            {
                (Some(_), _) => usable(g),
                (None, Some(role)) => Err(OutOfScope::ExcludedRole((*role).to_string())),
                (None, None) => Err(OutOfScope::NotAssigned),
            },
        };
        if decision.is_ok() {
            let roles = counted.get(id.as_str());
            for m in &g.members {
                // Entra does not expand nested groups; only direct user members count.
                if dir.users.contains_key(m) {
                    let user_roles = member_of_assigned.entry(m.as_str()).or_default();
                    for r in roles.into_iter().flatten() {
                        if !user_roles.contains(r) {
                            user_roles.push(r);
                        }
                    }
                }
            }
        }
        groups_decided.push(decision);
    }

    let mut users_decided = Vec::with_capacity(dir.users.len());
    let mut users_roles = Vec::with_capacity(dir.users.len());
    // Role sets by their sorted names; `roles` is reused, so a set seen before costs no
    // allocation.
    let mut role_sets: HashMap<Vec<&str>, Arc<BTreeSet<String>>> = HashMap::new();
    let mut roles: Vec<&str> = Vec::new();
    for (id, u) in &dir.users {
        let direct = counted.get(id.as_str());
        let via_group = member_of_assigned.get(id.as_str());
        roles.clear();
        roles.extend(
            direct
                .into_iter()
                .flatten()
                .chain(via_group.into_iter().flatten())
                .copied(),
        );
        roles.sort_unstable();
        roles.dedup();
        let decision = match settings.mode {
            ScopeMode::All => Ok(()),
            ScopeMode::Assigned if direct.is_some() || via_group.is_some() => Ok(()),
            ScopeMode::Assigned => match excluded_only.get(id.as_str()) {
                Some(role) => Err(OutOfScope::ExcludedRole((*role).to_string())),
                None => Err(OutOfScope::NotAssigned),
            },
        }
        .and_then(|()| {
            if !u.enabled() {
                return Err(OutOfScope::Disabled);
            }
            usable(u)
        });
        let shared = (!roles.is_empty()).then(|| match role_sets.get(roles.as_slice()) {
            Some(set) => Arc::clone(set),
            None => {
                let set = Arc::new(roles.iter().map(|s| s.to_string()).collect());
                role_sets.insert(roles.clone(), Arc::clone(&set));
                set
            }
        });
        users_roles.push(shared);
        users_decided.push(decision);
    }
    Scoped {
        users: Decisions {
            objects: dir.users.clone(),
            decided: users_decided,
        },
        groups: Decisions {
            objects: dir.groups.clone(),
            decided: groups_decided,
        },
        roles: Roles {
            users: dir.users.clone(),
            of: users_roles,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::filter::ClauseSpec;
    use super::*;
    use crate::model::Assignment;
    use crate::source::file::parse_export;
    use std::path::Path;

    fn dir() -> Directory {
        parse_export(
            br#"{"users":[
                {"id":"direct"},{"id":"viagroup"},{"id":"nested"},{"id":"none"},
                {"id":"default"},{"id":"off","accountEnabled":false},
                {"id":"gone","deletedDateTime":"2026-01-01T00:00:00Z"}],
              "groups":[{"id":"g","members":["viagroup","inner","off"]},{"id":"inner","members":["nested"]},
                        {"id":"other","members":["none"]}],
              "assignments":[{"principalId":"direct"},{"principalId":"g","role":"Member"},
                             {"principalId":"default","role":"Default Access"},
                             {"principalId":"off"},{"principalId":"gone"}]}"#,
            Path::new("d.json"),
        )
        .unwrap()
    }

    #[test]
    fn assigned_scope_follows_entra() {
        let s = evaluate(&dir(), &ScopeSettings::default());
        assert_eq!(*s.users.get("direct").unwrap(), Ok(()));
        assert_eq!(*s.users.get("viagroup").unwrap(), Ok(()));
        assert_eq!(
            *s.users.get("nested").unwrap(),
            Err(OutOfScope::NotAssigned),
            "no nested expansion"
        );
        assert_eq!(*s.users.get("none").unwrap(), Err(OutOfScope::NotAssigned));
        assert_eq!(
            *s.users.get("default").unwrap(),
            Err(OutOfScope::ExcludedRole("Default Access".into()))
        );
        assert_eq!(*s.users.get("off").unwrap(), Err(OutOfScope::Disabled));
        assert_eq!(*s.users.get("gone").unwrap(), Err(OutOfScope::SoftDeleted));
        assert_eq!(*s.groups.get("g").unwrap(), Ok(()));
        assert_eq!(
            *s.groups.get("inner").unwrap(),
            Err(OutOfScope::NotAssigned)
        );
        assert!(s.roles.get("viagroup").unwrap().contains("Member"));
        assert!(s.roles.get("direct").unwrap().contains("User"));
    }

    #[test]
    fn decisions_are_held_beside_the_directory_without_copies() {
        let d = dir();
        let s = evaluate(&d, &ScopeSettings::default());
        assert!(
            s.users.objects.shares_with(&d.users),
            "the ids are not copied"
        );
        assert!(s.groups.objects.shares_with(&d.groups));
        assert!(s.roles.users.shares_with(&d.users));
        assert_eq!(s.users.len(), d.users.len());
        assert_eq!(s.decision(ObjectType::User, "unknown"), None);
        assert_eq!(s.decision(ObjectType::Group, "direct"), None, "a user");
        assert!(s.in_scope(ObjectType::User, "direct"));
        assert!(!s.in_scope(ObjectType::User, "unknown"));
        assert!(s.roles.get("none").is_none(), "no role");
        assert!(s.roles.get("unknown").is_none());
        // Users with the same roles share one set.
        let mut two = d.clone();
        two.assignments.push(Assignment {
            principal_id: "none".into(),
            role: "User".into(),
        });
        let s = evaluate(&two, &ScopeSettings::default());
        assert!(Arc::ptr_eq(
            s.roles.get("none").unwrap(),
            s.roles.get("direct").unwrap()
        ));
        let out: Vec<(&str, bool)> = s
            .users
            .iter()
            .map(|(id, d)| (id.as_str(), d.is_ok()))
            .collect();
        assert_eq!(
            out,
            [
                ("default", false),
                ("direct", true),
                ("gone", false),
                ("nested", false),
                ("none", true),
                ("off", false),
                ("viagroup", true)
            ],
            "in id order"
        );
    }

    #[test]
    fn a_users_roles_are_each_role_once_in_order_direct_and_through_groups() {
        let mut d = dir();
        for (principal, role) in [
            ("direct", "Writer"),
            ("direct", "User"),
            ("direct", "Admin"),
            ("direct", "Writer"),
            ("g", "Admin"),
            ("g", "Member"),
        ] {
            d.assignments.push(Assignment {
                principal_id: principal.into(),
                role: role.into(),
            });
        }
        d.groups.update("g", |g| g.members.push("direct".into()));
        let s = evaluate(&d, &ScopeSettings::default());
        let roles =
            |id: &str| -> Vec<String> { s.roles.get(id).unwrap().iter().cloned().collect() };
        assert_eq!(roles("direct"), ["Admin", "Member", "User", "Writer"]);
        assert_eq!(roles("viagroup"), ["Admin", "Member"]);
        // Users with equal role sets share one.
        let mut same = d.clone();
        same.assignments.push(Assignment {
            principal_id: "none".into(),
            role: "Member".into(),
        });
        same.assignments.push(Assignment {
            principal_id: "none".into(),
            role: "Admin".into(),
        });
        let s = evaluate(&same, &ScopeSettings::default());
        assert!(Arc::ptr_eq(
            s.roles.get("none").unwrap(),
            s.roles.get("viagroup").unwrap()
        ));
    }

    #[test]
    fn all_scope_takes_everyone_enabled() {
        let settings = ScopeSettings {
            mode: ScopeMode::All,
            ..ScopeSettings::default()
        };
        let s = evaluate(&dir(), &settings);
        assert_eq!(*s.users.get("none").unwrap(), Ok(()));
        assert_eq!(*s.users.get("nested").unwrap(), Ok(()));
        assert_eq!(*s.users.get("off").unwrap(), Err(OutOfScope::Disabled));
        assert_eq!(*s.groups.get("inner").unwrap(), Ok(()));
    }

    #[test]
    fn excluded_roles_are_configurable() {
        let settings = ScopeSettings {
            excluded_roles: vec![],
            ..ScopeSettings::default()
        };
        let s = evaluate(&dir(), &settings);
        assert_eq!(*s.users.get("default").unwrap(), Ok(()));
    }

    #[test]
    fn a_filter_puts_objects_out_of_scope() {
        let f = ScopingFilter::compile(FilterSpec {
            title: Some("Sales only".into()),
            clauses: vec![ClauseSpec {
                attribute: "department".into(),
                operator: "EQUALS".into(),
                value: Some("Sales".into()),
            }],
        })
        .unwrap();
        let settings = ScopeSettings {
            user_filters: vec![f.clone()],
            ..ScopeSettings::default()
        };
        let s = evaluate(&dir(), &settings);
        assert!(
            matches!(s.users.get("direct").unwrap(), Err(OutOfScope::Filtered(why)) if why.contains("Sales only"))
        );
        assert_eq!(
            *s.groups.get("g").unwrap(),
            Ok(()),
            "user filters do not apply to groups"
        );
        let settings = ScopeSettings {
            group_filters: vec![f],
            ..ScopeSettings::default()
        };
        let s = evaluate(&dir(), &settings);
        assert!(matches!(
            *s.groups.get("g").unwrap(),
            Err(OutOfScope::Filtered(_))
        ));
        assert_eq!(
            *s.users.get("viagroup").unwrap(),
            Err(OutOfScope::NotAssigned),
            "a filtered-out group brings no members"
        );
    }
}
