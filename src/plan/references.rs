//! Phase two, after the objects are exported: references (managers) and group memberships,
//! resolved to the target ids phase one produced.

use super::{
    map_items, map_items_from, problem, Change, MembershipChange, NullPolicy, PlanSettings,
    ReferencePlan,
};
use super::{DigestAfter, Update};
use crate::mapping::{map_object, MapContext, Mappings};
use crate::model::{Directory, ObjectType, SourceObject};
use crate::model::{LinkIndex, LinkRef};
use crate::scope::{OutOfScope, Scoped};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

/// Phase two: resolve references (managers, members) to target ids now that objects exist.
pub(crate) fn plan_references(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
) -> ReferencePlan {
    // Looked up three times per user (own link, manager's, memberships): hashing an id once
    // beats a dozen comparisons of long ids in the B-tree.
    let user_links = links.users().lookup();
    let lookup = |id: &str| user_links.get(id);
    let mut out = memberships_with(dir, scoped, mappings, links, &lookup, None);
    out.updates = updates_with(
        dir.users.iter().collect(),
        scoped,
        mappings,
        settings,
        &lookup,
    );
    out
}

/// Phase two's group memberships alone (`updates` left empty): with
/// [`plan_reference_updates`] over every user, [`plan_references`]. With `groups`, only
/// those groups' memberships: a delta cycle's directory is a view (`crate::model::view`)
/// whose other groups are there for scope, without all their members.
pub(crate) fn plan_memberships(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    groups: Option<&BTreeSet<String>>,
) -> ReferencePlan {
    let lookup = |id: &str| links.users().get(id);
    memberships_with(dir, scoped, mappings, links, &lookup, groups)
}

/// Phase two's reference updates of at most `limit` users, from the first user after `after`
/// in id order, and the last user looked at when there may be more. Over consecutive calls
/// (each from the last one's end), the updates [`plan_references`] gives: a cycle plans and
/// sends them a chunk at a time instead of holding every user's (an initial cycle of a
/// million users with managers: hundreds of megabytes).
pub(crate) fn plan_reference_updates(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<Update>, Option<String>) {
    let users: Vec<(&String, &SourceObject)> = dir.users.after(after).take(limit.max(1)).collect();
    let next = (users.len() == limit.max(1))
        .then(|| users.last().map(|(id, _)| (*id).clone()))
        .flatten();
    let lookup = |id: &str| links.users().get(id);
    let updates = updates_with(users, scoped, mappings, settings, &lookup);
    (updates, next)
}

/// How a user's link is found: a hash map over every link (a whole plan) or the index itself
/// (a chunk, which can't afford to build one).
type UserLink<'l, 'f> = dyn Fn(&str) -> Option<LinkRef<'l>> + Sync + 'f;

/// The reference (manager) updates of `users`, in their order.
fn updates_with<'a, 'l>(
    users: Vec<(&'a String, &'a SourceObject)>,
    scoped: &Scoped,
    mappings: &Mappings,
    settings: &PlanSettings<'_>,
    user_links: &UserLink<'l, '_>,
) -> Vec<Update> {
    let user_target = |source_id: &str| -> Option<&'l str> {
        user_links(source_id)
            .filter(|l| !l.disabled() && scoped.in_scope(ObjectType::User, source_id))
            .map(|l| l.target_id())
    };
    let reference_maps: Vec<crate::mapping::Mapping> = mappings
        .users
        .iter()
        .filter(|m| m.is_reference())
        .cloned()
        .collect();
    if reference_maps.is_empty() {
        return Vec::new();
    }
    // The paths a user's own values are mapped to: a reference update that changes none of
    // them (nor `active`) leaves what a diff of those values finds as it was, so the link's
    // input digest still holds.
    let own_paths: HashSet<&str> = mappings
        .users
        .iter()
        .filter(|m| !m.is_reference() && !m.is_members())
        .map(|m| &*m.key)
        .collect();
    {
        // One user's reference changes; on several threads for large directories (a manager
        // lookup per user), in directory order either way.
        let update_of = |id: &String, user: &SourceObject| -> Option<Box<Update>> {
            let link = user_links(id.as_str())?;
            if !scoped.in_scope(ObjectType::User, id) || link.disabled() {
                return None;
            }
            let ctx = MapContext {
                soft_deleted: false,
                roles: None,
                env: settings.env,
            };
            // The references alone first (no mapping of the whole object): most users'
            // manager hasn't changed, and then nothing else is needed.
            let mut changes = Vec::new();
            for (path, referenced) in crate::mapping::reference_values(user, &reference_maps) {
                // Unchanged, the common case: decided on the compact form.
                if let Some(t) = referenced.and_then(user_target) {
                    if link.exported().get_str_is(path, t) {
                        continue;
                    }
                }
                let old = link.exported().get(path);
                let old = old.as_ref();
                let new = match referenced {
                    None => None,
                    Some(r) => match user_target(r) {
                        Some(t) => Some(Value::String(t.to_string())),
                        None => {
                            // The manager is not provisioned (out of scope, or failed): leave
                            // the attribute as it is rather than clear it.
                            continue;
                        }
                    },
                };
                match (&new, old) {
                    (Some(n), o) if o != Some(n) => changes.push(Change {
                        path: path.to_string(),
                        old: o.cloned(),
                        new: Some(n.clone()),
                    }),
                    (None, Some(o)) if settings.null_values == NullPolicy::Remove => {
                        changes.push(Change {
                            path: path.to_string(),
                            old: Some(o.clone()),
                            new: None,
                        })
                    }
                    _ => {}
                }
            }
            if changes.is_empty() {
                return None;
            }
            let mapped = map_object(user, &reference_maps, &ctx).ok()?;
            let keeps = changes
                .iter()
                .all(|c| c.path != "active" && !own_paths.contains(c.path.as_str()));
            Some(Box::new(Update {
                object_type: ObjectType::User,
                source_id: id.clone(),
                target_id: link.target_id().to_string(),
                display_name: link.display_name().to_string(),
                changes,
                matching: link.matching().get(),
                mapped,
                digest: if keeps {
                    DigestAfter::Keep
                } else {
                    DigestAfter::Drop
                },
            }))
        };
        map_items(users, update_of)
            .into_iter()
            .flatten()
            .map(|u| *u)
            .collect()
    }
}

/// Members in all, of the groups planned, from which their memberships are planned on
/// several threads.
const MEMBERS_PARALLEL_FROM: usize = 20_000;

/// The membership deltas (and their problems) of every group, or of `groups` when given.
fn memberships_with<'l>(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &'l LinkIndex,
    user_links: &UserLink<'l, '_>,
    groups: Option<&BTreeSet<String>>,
) -> ReferencePlan {
    let mut out = ReferencePlan::default();
    let user_target = |source_id: &str| -> Option<&'l str> {
        user_links(source_id)
            .filter(|l| !l.disabled() && scoped.in_scope(ObjectType::User, source_id))
            .map(|l| l.target_id())
    };
    let rejected: HashSet<&str> = dir
        .rejected
        .iter()
        .filter_map(|r| r.id.as_deref())
        .collect();
    let assignment_is_known = !dir
        .rejected
        .iter()
        .any(|r| r.object_type != Some(ObjectType::User));
    // A user rejected without a readable id may be any linked user missing from the
    // directory: like her account (kept, see `plan_type`), her memberships stay.
    let idless_user = dir
        .rejected
        .iter()
        .any(|r| r.id.is_none() && r.object_type.is_none_or(|t| t == ObjectType::User));
    // A linked user whose membership can't be judged this cycle (see `plan_type`).
    let undecided = |source_id: &str| -> Option<&str> {
        let link = user_links(source_id)?;
        let unknown_scope = !assignment_is_known
            && matches!(
                scoped.decision(ObjectType::User, source_id),
                Some(Err(OutOfScope::NotAssigned | OutOfScope::ExcludedRole(_)))
            );
        let maybe_unreadable = idless_user && !dir.users.contains_key(source_id);
        (rejected.contains(source_id) || unknown_scope || maybe_unreadable)
            .then_some(link.target_id())
    };

    if mappings.sync_members() {
        let chosen: Vec<(&String, &SourceObject)> = dir
            .groups
            .iter()
            .filter(|(id, _)| groups.is_none_or(|only| only.contains(*id)))
            .collect();
        // Each group is one lookup of every member: split over threads once there are
        // enough members in all (a million users in 2,000 groups of 100: 0.9 s on one).
        let members: usize = chosen.iter().map(|(_, g)| g.members.len()).sum();
        let from = if members >= MEMBERS_PARALLEL_FROM {
            2
        } else {
            usize::MAX
        };
        let one_group =
            |id: &String,
             group: &SourceObject|
             -> Option<(Option<crate::summary::Problem>, Option<MembershipChange>)> {
                let link = links.groups().get(id)?;
                if !scoped.in_scope(ObjectType::Group, id) {
                    return None;
                }
                // Borrowed target ids: only the delta is copied, not every member of every group.
                // A sorted list, compared with the (sorted) last exported members in one merge.
                let mut desired: Vec<&str> = Vec::with_capacity(group.members.len());
                let mut missing: Vec<&str> = Vec::new();
                for m in &group.members {
                    if let Some(t) = user_target(m) {
                        desired.push(t);
                    } else if let Some(t) = undecided(m) {
                        // Present but unreadable, or its scope is unknown this cycle: leave its
                        // membership as it is, neither added nor removed.
                        if link.members().any(|old| old == t) {
                            desired.push(t);
                        }
                    } else if !dir.users.contains_key(m) && !dir.groups.contains_key(m) {
                        missing.push(m);
                    }
                }
                let invalid = (!missing.is_empty()).then(|| {
                    problem(
                        Some(ObjectType::Group),
                        id,
                        Some(group.display_name()),
                        "InvalidMember",
                        format!(
                            "members that do not exist in the source were skipped: {}",
                            crate::util::text::bounded_list(&missing)
                        ),
                    )
                });
                desired.sort_unstable();
                desired.dedup();
                let (mut add, mut remove) = (Vec::new(), Vec::new());
                let mut had = link.members().peekable();
                for t in desired {
                    while let Some(old) = had.next_if(|old| *old < t) {
                        remove.push(old.to_string());
                    }
                    if had.next_if_eq(&t).is_none() {
                        add.push(t.to_string());
                    }
                }
                remove.extend(had.map(str::to_string));
                // Only remove members provisiond added; and never on an incomplete read, where a
                // missing member may just be unread.
                if !dir.complete {
                    remove.clear();
                }
                let change = (!add.is_empty() || !remove.is_empty()).then(|| MembershipChange {
                    group_source_id: id.clone(),
                    group_target_id: link.target_id().to_string(),
                    display_name: link.display_name().to_string(),
                    add,
                    remove,
                });
                Some((invalid, change))
            };
        for (invalid, change) in map_items_from(chosen, from, one_group)
            .into_iter()
            .flatten()
        {
            out.problems.extend(invalid);
            out.memberships.extend(change);
        }
    }
    out
}
