//! The part of a directory a delta cycle needs (issue 12, "Delta sources cost O(changes)"):
//! the objects a source read changed, and what deciding their scope, their mapping and their
//! references needs, so that the cycle scopes, maps and plans those alone instead of the
//! whole directory.
//!
//! The rule that makes the delta plan the full plan (`cycle` falls back to the full path
//! whenever it cannot hold): when the links were in step with the directory before the
//! changes, an object outside [`Changes`] and outside [`membership_groups`] plans nothing in
//! a full cycle either, so leaving it out changes nothing. For that, the view holds:
//! - the changed users and groups that still exist (a removed one is absent, and its link,
//!   loaded by id, plans its deletion);
//! - every group with a changed user among its direct members (their memberships change), and
//!   every direct member of those groups and of the changed groups (the membership planned is
//!   the whole member list, and a member missing from the directory, a group too, would read
//!   as invalid);
//! - every group holding an app role assignment, whole (scope and roles come from them: a
//!   member of a planned group may be in scope through another group);
//! - the users a changed user references (her manager: resolved to its target id).
//!
//! Not needed, so not there (each was taken out with the property test
//! `plan::tests::the_delta_path_plans_what_the_full_path_plans` still green; the parts above
//! each fail it when taken out):
//! - the users whose manager is a changed user: their manager attribute changes only when
//!   her target id does, which takes her being provisioned (and a cycle that provisions
//!   plans the whole directory), and a manager removed or out of scope leaves it as it is.

use super::{Assignment, Directory, Rejected, SourceObject};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// What a source read changed: ids of users and groups added, changed or removed (softly or
/// for good). For a group whose members changed, the members added and removed are among
/// `users`. A source gives none when anything that decides the scope of many objects changed
/// (assignments), or after a full read: the cycle then plans everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

impl Changes {
    /// No change at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// The view of a directory the cycle plans for `focus` (see the module doc). `references`
/// names the source attributes holding a user's reference to another user (the manager).
pub(crate) fn view(
    users: &BTreeMap<String, SourceObject>,
    groups: &BTreeMap<String, SourceObject>,
    assignments: &[Assignment],
    rejected: &[Rejected],
    complete: bool,
    focus: &Changes,
    references: &[String],
) -> Directory {
    // Groups whose membership is planned, then every group whose data scope needs.
    let planned: BTreeSet<&String> = groups
        .iter()
        .filter(|(id, g)| plans_membership(id, g, focus))
        .map(|(id, _)| id)
        .collect();
    let assigned: HashSet<&str> = assignments
        .iter()
        .map(|a| a.principal_id.as_str())
        .collect();
    let mut group_ids: BTreeSet<&String> = planned.clone();
    let mut user_ids: BTreeSet<&String> = BTreeSet::new();
    for id in &planned {
        if let Some(g) = groups.get(*id) {
            for m in &g.members {
                if let Some((k, _)) = users.get_key_value(m) {
                    user_ids.insert(k);
                } else if let Some((k, _)) = groups.get_key_value(m) {
                    group_ids.insert(k);
                }
            }
        }
    }
    group_ids.extend(groups.keys().filter(|id| assigned.contains(id.as_str())));
    for id in &focus.users {
        if let Some((k, u)) = users.get_key_value(id) {
            user_ids.insert(k);
            for r in references {
                if let Some(m) = u.attributes.get_str_any_case(r) {
                    if let Some((mk, _)) = users.get_key_value(m) {
                        user_ids.insert(mk);
                    }
                }
            }
        }
    }
    Directory {
        users: user_ids
            .into_iter()
            .filter_map(|id| users.get(id).cloned())
            .collect(),
        groups: group_ids
            .into_iter()
            .filter_map(|id| groups.get(id).cloned())
            .collect(),
        assignments: assignments.to_vec(),
        rejected: rejected.to_vec(),
        complete,
    }
}

/// The groups of a view whose memberships a delta cycle plans: the changed ones and those
/// with a changed user among their direct members. The other groups of the view are there for
/// scope and as members; their membership is not planned (their members are not all there).
pub(crate) fn membership_groups(dir: &Directory, focus: &Changes) -> BTreeSet<String> {
    dir.groups
        .iter()
        .filter(|(id, g)| plans_membership(id, g, focus))
        .map(|(id, _)| id.clone())
        .collect()
}

/// Whether a delta cycle plans group `id`'s membership: it changed, or a changed user is
/// among its direct members. (The LDAP source asks it too, to build only the users a view
/// holds.)
pub(crate) fn plans_membership(id: &str, group: &SourceObject, focus: &Changes) -> bool {
    focus.groups.contains(id) || group.members.iter().any(|m| focus.users.contains(m))
}

/// The ids whose links a delta cycle loads: every object of the view and every changed one
/// (a removed object is not in the view; its link says what to delete).
pub(crate) fn link_ids<'a>(
    dir: &'a Directory,
    focus: &'a Changes,
) -> (BTreeSet<&'a str>, BTreeSet<&'a str>) {
    let users = dir
        .users
        .keys()
        .chain(focus.users.iter())
        .map(String::as_str)
        .collect();
    let groups = dir
        .groups
        .keys()
        .chain(focus.groups.iter())
        .map(String::as_str)
        .collect();
    (users, groups)
}

/// Add to `changes` what moved between two reads' app role assignments (each sorted by
/// principal and role): a user whose assignment or role changed is a changed user; a group's
/// is a changed group, and its direct members before and after are changed users (their
/// scope and roles come from it). `groups_before` and `groups_after` are the two reads'
/// groups.
pub(crate) fn assignment_changes(
    before: &[Assignment],
    after: &[Assignment],
    groups_before: &BTreeMap<String, SourceObject>,
    groups_after: &BTreeMap<String, SourceObject>,
    changes: &mut Changes,
) {
    let key = |a: &Assignment| (a.principal_id.clone(), a.role.clone());
    let b: BTreeSet<(String, String)> = before.iter().map(key).collect();
    let a: BTreeSet<(String, String)> = after.iter().map(key).collect();
    let moved: BTreeSet<&String> = b.symmetric_difference(&a).map(|(p, _)| p).collect();
    for principal in moved {
        let group_before = groups_before.get(principal);
        let group_after = groups_after.get(principal);
        if group_before.is_none() && group_after.is_none() {
            changes.users.insert(principal.clone());
            continue;
        }
        changes.groups.insert(principal.clone());
        for g in group_before.into_iter().chain(group_after) {
            changes.users.extend(g.members.iter().cloned());
        }
    }
}

/// [`view`] of a whole directory taken as complete: what a source's own view is compared with
/// in the delta property tests.
#[cfg(test)]
pub(crate) fn view_of(d: &Directory, focus: &Changes, references: &[String]) -> Directory {
    view(
        &d.users.to_tree(),
        &d.groups.to_tree(),
        &d.assignments,
        &d.rejected,
        true,
        focus,
        references,
    )
}
