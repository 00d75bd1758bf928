//! The planner: what must change in the target so it matches the source. Pure — a function of
//! the directory, its scope, the mappings and the links — so every rule here is testable
//! without a network, and planning the same inputs twice gives the same plan.
//!
//! Planning has two phases because references need target ids that only exist once objects
//! are exported: [`plan_objects`] (create/match, update, disable, delete users and groups),
//! then, after export, [`plan_references`] (managers and group memberships).

use crate::mapping::expr::EvalEnv;
use crate::mapping::{map_object, MapContext, Mapped, Mappings};
use crate::model::{Directory, ObjectType, SourceObject};
use crate::scope::{OutOfScope, Scoped};
use crate::state::{Link, LinkIndex};
use crate::summary::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What to do when a mapped value becomes null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NullPolicy {
    /// Entra's behaviour: leave the old value in the target.
    #[default]
    Leave,
    /// Clear it with a PATCH `remove`.
    Remove,
}

/// One attribute change of an update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub path: String,
    pub old: Option<Value>,
    /// `None` removes the attribute.
    pub new: Option<Value>,
}

/// An in-scope object without a link: match it in the target, then adopt or create it.
#[derive(Debug, Clone, PartialEq)]
pub struct Provision {
    pub object_type: ObjectType,
    pub source_id: String,
    pub display_name: String,
    pub mapped: Mapped,
}

/// A linked object whose mapped values changed since they were last exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub object_type: ObjectType,
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    pub changes: Vec<Change>,
    /// The matching value after the update, kept in the link.
    pub matching: Option<(String, Value)>,
    /// What to do on 404: provision again with these values.
    pub mapped: Mapped,
}

/// A linked user to set `active=false`.
#[derive(Debug, Clone, PartialEq)]
pub struct Disable {
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    pub reason: String,
}

/// A linked object to delete in the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub object_type: ObjectType,
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Provision(Provision),
    Update(Update),
    Disable(Disable),
    Delete(Delete),
}

impl Action {
    pub fn object_type(&self) -> ObjectType {
        match self {
            Action::Provision(p) => p.object_type,
            Action::Update(u) => u.object_type,
            Action::Disable(_) => ObjectType::User,
            Action::Delete(d) => d.object_type,
        }
    }
    pub fn is_deprovisioning(&self) -> bool {
        matches!(self, Action::Disable(_) | Action::Delete(_))
    }
}

/// Phase one of a cycle's plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub unchanged_users: u64,
    pub unchanged_groups: u64,
    /// Out-of-scope objects that have no link: nothing to do.
    pub skipped_users: u64,
    pub skipped_groups: u64,
    /// Objects that cannot be processed this cycle, with why.
    pub problems: Vec<Problem>,
    /// Disables and deletes not planned because the source read was incomplete.
    pub withheld_deprovisions: u64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Settings the planner needs from the job.
pub struct PlanSettings<'a> {
    pub null_values: NullPolicy,
    pub env: &'a EvalEnv,
}

fn problem(
    ty: Option<ObjectType>,
    id: &str,
    name: Option<&str>,
    code: &str,
    reason: String,
) -> Problem {
    Problem {
        object_type: ty.map(|t| t.as_str().to_string()),
        id: Some(id.to_string()),
        name: name.map(str::to_string),
        code: code.to_string(),
        reason,
    }
}

/// The duplicate-detection key of a matching value, hashed without building lowercase copies.
/// Case-insensitive: SCIM `userName` and `displayName` are not case-exact (RFC 7643), so
/// "Alice@x" and "alice@x" would match the same target object.
fn match_hash(path: &str, v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in path.chars().flat_map(char::to_lowercase) {
        c.hash(&mut h);
    }
    0xffu8.hash(&mut h);
    match v {
        Value::String(s) => {
            for c in s.chars().flat_map(char::to_lowercase) {
                c.hash(&mut h);
            }
        }
        other => {
            0u8.hash(&mut h);
            other.to_string().hash(&mut h);
        }
    }
    h.finish()
}

/// Phase one: users and groups.
pub fn plan_objects(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
) -> Plan {
    let mut plan = Plan::default();
    let rejected: HashSet<&str> = dir
        .rejected
        .iter()
        .filter_map(|r| r.id.as_deref())
        .collect();
    for r in &dir.rejected {
        plan.problems.push(Problem {
            object_type: r.object_type.map(|t| t.as_str().to_string()),
            id: r.id.clone(),
            name: None,
            code: "InvalidSourceObject".into(),
            reason: format!("{}: {}", r.position, r.reason),
        });
    }
    for ty in [ObjectType::User, ObjectType::Group] {
        plan_type(
            ty, dir, scoped, mappings, links, settings, &rejected, &mut plan,
        );
    }
    plan
}

#[allow(clippy::too_many_arguments)]
fn plan_type(
    ty: ObjectType,
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
    rejected: &HashSet<&str>,
    plan: &mut Plan,
) {
    let objects = dir.objects(ty);
    let type_links = links.of(ty);
    // One hash per object instead of a dozen comparisons of long ids in the B-tree.
    let link_of: HashMap<&str, &Link> = type_links.iter().map(|(id, l)| (id.as_str(), l)).collect();
    let maps = mappings.of(ty);
    let deprovision_allowed = dir.complete;
    // An object rejected without a readable id might be any linked object: "gone from the
    // source" can't be told apart from "unreadable", so no delete-by-absence of this type.
    let absence_is_deletion = deprovision_allowed
        && !dir
            .rejected
            .iter()
            .any(|r| r.id.is_none() && r.object_type.is_none_or(|t| t == ty));
    // A rejected group or assignment may be what put a user in scope: until it reads again,
    // "not assigned" is not known, so no disable or delete for that reason.
    let assignment_is_known = !dir
        .rejected
        .iter()
        .any(|r| r.object_type != Some(ObjectType::User));

    // Map every in-scope object first, so duplicate matching values can be found before any
    // object is provisioned on the strength of one. A linked object is diffed right away and,
    // when unchanged, only its matching values are kept: keeping every `Mapped` of a no-change
    // cycle over 100k users cost hundreds of megabytes.
    let mapped = map_all(objects, |id, obj| {
        if !scoped.in_scope(ty, id) {
            return None;
        }
        let ctx = MapContext {
            soft_deleted: false,
            roles: scoped.roles.get(id).map(|r| &**r),
            env: settings.env,
        };
        let link = link_of.get(id.as_str()).copied();
        Some(map_object(obj, maps, &ctx).map(|m| Wanted::new(link, m, settings)))
    });
    let mut wanted: Vec<(&SourceObject, Wanted<'_>)> = Vec::new();
    for ((id, obj), mapped) in objects.iter().zip(mapped) {
        let decision = scoped.decision(ty, id);
        match decision {
            Some(Ok(())) => match mapped.unwrap_or_else(|| Err("not mapped".into())) {
                Ok(w) => wanted.push((obj, w)),
                Err(reason) => plan.problems.push(problem(
                    Some(ty),
                    id,
                    Some(obj.display_name()),
                    "AttributeMappingFailed",
                    reason,
                )),
            },
            Some(Err(why)) => match link_of.get(id.as_str()) {
                None => bump_skipped(plan, ty),
                Some(l) if ty == ObjectType::User && l.disabled() => plan.unchanged_users += 1,
                Some(_) if !deprovision_allowed => plan.withheld_deprovisions += 1,
                Some(_)
                    if !assignment_is_known
                        && matches!(why, OutOfScope::NotAssigned | OutOfScope::ExcludedRole(_)) =>
                {
                    plan.withheld_deprovisions += 1
                }
                Some(l) => plan.actions.push(match ty {
                    ObjectType::User => Action::Disable(Disable {
                        source_id: id.clone(),
                        target_id: l.target_id.clone(),
                        display_name: obj.display_name().to_string(),
                        reason: why.to_string(),
                    }),
                    ObjectType::Group => Action::Delete(Delete {
                        object_type: ty,
                        source_id: id.clone(),
                        target_id: l.target_id.clone(),
                        display_name: obj.display_name().to_string(),
                        reason: why.to_string(),
                    }),
                }),
            },
            None => bump_skipped(plan, ty),
        }
    }

    // Duplicate matching values: linked objects keep their target object; unlinked objects
    // sharing a value with any other in-scope object are skipped, since either could match.
    // Values are compared by a 64-bit hash of (path, value) ignoring case; only values some
    // unlinked object has are indexed, so a cycle without new objects indexes nothing.
    let wanted_by_unlinked: HashSet<u64> = wanted
        .iter()
        .filter(|(_, w)| matches!(w, Wanted::Unlinked { .. }))
        .flat_map(|(_, w)| w.matching_hashes())
        .collect();
    let mut by_value: HashMap<u64, Vec<&str>> = HashMap::new();
    if !wanted_by_unlinked.is_empty() {
        for (obj, w) in &wanted {
            for h in w.matching_hashes() {
                if wanted_by_unlinked.contains(&h) {
                    by_value.entry(h).or_default().push(&obj.id);
                }
            }
        }
    }

    for (obj, w) in wanted {
        let id = &obj.id;
        match w {
            Wanted::Unchanged { .. } => bump_unchanged(plan, ty),
            Wanted::Changed {
                link,
                changes,
                mapped,
            } => plan.actions.push(Action::Update(Update {
                object_type: ty,
                source_id: id.clone(),
                target_id: link.target_id.clone(),
                display_name: obj.display_name().to_string(),
                changes,
                matching: mapped.matching.first().cloned(),
                mapped: *mapped,
            })),
            Wanted::Unlinked { mapped } => {
                if mapped.matching.is_empty() {
                    plan.problems.push(problem(
                        Some(ty),
                        id,
                        Some(obj.display_name()),
                        "MissingMatchingValue",
                        "no value for any matching attribute".into(),
                    ));
                    continue;
                }
                let clash = mapped.matching.iter().find_map(|(path, v)| {
                    let others: Vec<&str> = by_value
                        .get(&match_hash(path, v))
                        .map(|ids| ids.iter().copied().filter(|o| o != id).collect())
                        .unwrap_or_default();
                    (!others.is_empty()).then(|| (path.clone(), v.clone(), others.join(", ")))
                });
                if let Some((path, v, others)) = clash {
                    plan.problems.push(problem(
                        Some(ty),
                        id,
                        Some(obj.display_name()),
                        "DuplicateSourceEntries",
                        format!("{path} {v} is also the value of {others}"),
                    ));
                    continue;
                }
                plan.actions.push(Action::Provision(Provision {
                    object_type: ty,
                    source_id: id.clone(),
                    display_name: obj.display_name().to_string(),
                    mapped: *mapped,
                }));
            }
        }
    }

    // Links whose source object is gone: deleted in the source. A rejected object is present
    // but unreadable, never gone.
    // Both maps are in id order: one merge instead of a lookup per link.
    let mut present = objects.keys().peekable();
    for (id, link) in type_links {
        while present.next_if(|o| *o < id).is_some() {}
        if present.peek() == Some(&id) || rejected.contains(id.as_str()) {
            continue;
        }
        if !absence_is_deletion {
            plan.withheld_deprovisions += 1;
            continue;
        }
        plan.actions.push(Action::Delete(Delete {
            object_type: ty,
            source_id: id.clone(),
            target_id: link.target_id.clone(),
            display_name: link.display_name.clone(),
            reason: "deleted in the source".into(),
        }));
    }
}

/// `f` over every object, in order. Mapping and diffing is most of the planning of a large
/// directory (100k users: about a second of one core), so from `PARALLEL_FROM` objects on it
/// is split over the available cores (at most 4). The result is the same either way.
fn map_all<'a, T: Send>(
    objects: &'a BTreeMap<String, SourceObject>,
    f: impl Fn(&'a String, &'a SourceObject) -> T + Sync,
) -> Vec<T> {
    const PARALLEL_FROM: usize = 4096;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if objects.len() < PARALLEL_FROM || threads < 2 {
        return objects.iter().map(|(id, o)| f(id, o)).collect();
    }
    let items: Vec<(&'a String, &'a SourceObject)> = objects.iter().collect();
    let size = items.len().div_ceil(threads);
    let run = |part: &[(&'a String, &'a SourceObject)]| -> Vec<T> {
        part.iter().map(|(id, o)| f(id, o)).collect()
    };
    std::thread::scope(|scope| {
        let mut parts = items.chunks(size);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| {
                let worker = std::thread::Builder::new()
                    .name("provisiond-plan".into())
                    .spawn_scoped(scope, move || run(part));
                (part, worker)
            })
            .collect();
        let mut out = run(first);
        for (part, worker) in others {
            // No thread (or, against the crate's rules, a panic in one): do that part here.
            match worker.map(|w| w.join()) {
                Ok(Ok(done)) => out.extend(done),
                _ => out.extend(run(part)),
            }
        }
        out
    })
}

/// An in-scope object, mapped, and what it needs.
enum Wanted<'l> {
    /// Linked and up to date: only the matching values are kept (for duplicate detection).
    /// Linked and up to date: only the hashes of its matching values are kept (for
    /// duplicate detection), not the values: 100k of them cost about 20 MB.
    Unchanged { matching: Box<[u64]> },
    /// Linked, with attribute changes to export.
    Changed {
        link: &'l Link,
        changes: Vec<Change>,
        mapped: Box<Mapped>,
    },
    /// Not linked yet: to match, then adopt or create.
    Unlinked { mapped: Box<Mapped> },
}

impl<'l> Wanted<'l> {
    fn new(link: Option<&'l Link>, mapped: Mapped, settings: &PlanSettings<'_>) -> Self {
        let Some(link) = link else {
            return Wanted::Unlinked {
                mapped: Box::new(mapped),
            };
        };
        let changes = diff(link, &mapped, settings.null_values);
        if changes.is_empty() {
            Wanted::Unchanged {
                matching: mapped
                    .matching
                    .iter()
                    .map(|(p, v)| match_hash(p, v))
                    .collect(),
            }
        } else {
            Wanted::Changed {
                link,
                changes,
                mapped: Box::new(mapped),
            }
        }
    }

    fn matching_hashes(&self) -> Vec<u64> {
        match self {
            Wanted::Unchanged { matching } => matching.to_vec(),
            Wanted::Changed { mapped, .. } | Wanted::Unlinked { mapped } => mapped
                .matching
                .iter()
                .map(|(p, v)| match_hash(p, v))
                .collect(),
        }
    }
}

fn bump_skipped(plan: &mut Plan, ty: ObjectType) {
    match ty {
        ObjectType::User => plan.skipped_users += 1,
        ObjectType::Group => plan.skipped_groups += 1,
    }
}

fn bump_unchanged(plan: &mut Plan, ty: ObjectType) {
    match ty {
        ObjectType::User => plan.unchanged_users += 1,
        ObjectType::Group => plan.unchanged_groups += 1,
    }
}

/// The attribute changes between what was last exported and what the mappings want now.
pub fn diff(link: &Link, mapped: &Mapped, nulls: NullPolicy) -> Vec<Change> {
    // The common case, decided on the compact form without decoding it: exactly the
    // conditions under which the code below finds nothing. (Exported values no mapping
    // produces any more, and references, which phase two owns, are not compared.)
    let unchanged = link.exported.covers(&mapped.values)
        && (!link.disabled() || mapped.values.contains_key("active"))
        && (nulls == NullPolicy::Leave
            || mapped.nulls.iter().all(|p| !link.exported.contains_key(p)));
    if unchanged {
        return Vec::new();
    }
    diff_decoded(link, mapped, nulls)
}

/// [`diff`] without its shortcut, on the decoded values.
fn diff_decoded(link: &Link, mapped: &Mapped, nulls: NullPolicy) -> Vec<Change> {
    let exported = link.exported.to_map();
    let mut changes = Vec::new();
    for (path, new, old) in mapped.values.zip_get(&exported) {
        if old != Some(new) {
            changes.push(Change {
                path: path.to_string(),
                old: old.cloned(),
                new: Some(new.clone()),
            });
        }
    }
    // An account provisiond disabled comes back into scope: enable it even when no mapping
    // produces `active`.
    if link.disabled() && !mapped.values.contains_key("active") {
        changes.push(Change {
            path: "active".into(),
            old: Some(Value::Bool(false)),
            new: Some(Value::Bool(true)),
        });
    }
    if nulls == NullPolicy::Remove {
        for path in &mapped.nulls {
            if let Some(old) = exported.get(path) {
                changes.push(Change {
                    path: path.to_string(),
                    old: Some(old.clone()),
                    new: None,
                });
            }
        }
    }
    changes
}

/// Apply a change set to a link's memory of exported values.
pub fn record_changes(link: &mut Link, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    let mut exported = link.exported.to_map();
    for c in changes {
        match &c.new {
            Some(v) => {
                exported.insert(&c.path, v.clone());
            }
            None => {
                exported.remove(&c.path);
            }
        }
    }
    link.exported = exported.into();
}

/// A group's membership delta, in target ids.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipChange {
    pub group_source_id: String,
    pub group_target_id: String,
    pub display_name: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// Phase two of a cycle's plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferencePlan {
    /// Manager (and other reference) updates, as user updates.
    pub updates: Vec<Update>,
    pub memberships: Vec<MembershipChange>,
    pub problems: Vec<Problem>,
}

impl ReferencePlan {
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.memberships.is_empty()
    }
}

/// Phase two: resolve references (managers, members) to target ids now that objects exist.
pub fn plan_references(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
) -> ReferencePlan {
    let mut out = ReferencePlan::default();
    // Looked up three times per user (own link, manager's, memberships): hashing an id once
    // beats a dozen comparisons of long ids in the B-tree.
    let user_links: HashMap<&str, &Link> =
        links.users.iter().map(|(id, l)| (id.as_str(), l)).collect();
    let user_target = |source_id: &str| -> Option<&str> {
        user_links
            .get(source_id)
            .filter(|l| !l.disabled() && scoped.in_scope(ObjectType::User, source_id))
            .map(|l| l.target_id.as_str())
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
    // A linked user whose membership can't be judged this cycle (see `plan_type`).
    let undecided = |source_id: &str| -> Option<&str> {
        let link = user_links.get(source_id)?;
        let unknown_scope = !assignment_is_known
            && matches!(
                scoped.decision(ObjectType::User, source_id),
                Some(Err(OutOfScope::NotAssigned | OutOfScope::ExcludedRole(_)))
            );
        (rejected.contains(source_id) || unknown_scope).then_some(link.target_id.as_str())
    };

    let reference_maps: Vec<crate::mapping::Mapping> = mappings
        .users
        .iter()
        .filter(|m| m.is_reference())
        .cloned()
        .collect();
    if !reference_maps.is_empty() {
        // One user's reference changes; on several threads for large directories (a manager
        // lookup per user), in directory order either way.
        let update_of = |id: &String, user: &SourceObject| -> Option<Box<Update>> {
            let link = *user_links.get(id.as_str())?;
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
                    if link.exported.get_str_is(path, t) {
                        continue;
                    }
                }
                let old = link.exported.get(path);
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
            Some(Box::new(Update {
                object_type: ObjectType::User,
                source_id: id.clone(),
                target_id: link.target_id.clone(),
                display_name: link.display_name.clone(),
                changes,
                matching: link.matching.clone(),
                mapped,
            }))
        };
        out.updates = map_all(&dir.users, update_of)
            .into_iter()
            .flatten()
            .map(|u| *u)
            .collect();
    }

    if mappings.sync_members() {
        for (id, group) in &dir.groups {
            let Some(link) = links.groups.get(id) else {
                continue;
            };
            if !scoped.in_scope(ObjectType::Group, id) {
                continue;
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
                    if link.members.contains(t) {
                        desired.push(t);
                    }
                } else if !dir.users.contains_key(m) && !dir.groups.contains_key(m) {
                    missing.push(m);
                }
            }
            if !missing.is_empty() {
                out.problems.push(problem(
                    Some(ObjectType::Group),
                    id,
                    Some(group.display_name()),
                    "InvalidMember",
                    format!(
                        "members that do not exist in the source were skipped: {}",
                        missing.join(", ")
                    ),
                ));
            }
            desired.sort_unstable();
            desired.dedup();
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            let mut had = link.members.iter().map(String::as_str).peekable();
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
            if !add.is_empty() || !remove.is_empty() {
                out.memberships.push(MembershipChange {
                    group_source_id: id.clone(),
                    group_target_id: link.target_id.clone(),
                    display_name: link.display_name.clone(),
                    add,
                    remove,
                });
            }
        }
    }
    out
}

pub fn describe_changes(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| match (&c.old, &c.new) {
            (None, Some(n)) => format!("{} = {n}", c.path),
            (Some(o), Some(n)) => format!("{}: {o} -> {n}", c.path),
            (_, None) => format!("{} removed", c.path),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod diff_tests {
    use super::*;
    use crate::attrs::map::AttrMap;
    use proptest::prelude::*;
    use serde_json::json;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            "[ab]{0,2}".prop_map(Value::String),
            (0..3i64).prop_map(|n| json!(n)),
        ]
    }

    proptest! {
        /// The shortcut says "unchanged" exactly when the full comparison finds nothing.
        #[test]
        fn the_shortcut_agrees_with_the_full_diff(
            exported in prop::collection::btree_map("active|[a-d]", value(), 0..5),
            values in prop::collection::btree_map("active|[a-d]", value(), 0..5),
            nulls in prop::collection::btree_set("[a-e]", 0..3),
            remove in any::<bool>(),
        ) {
            let link = Link {
                object_type: ObjectType::User,
                source_id: "s".into(),
                target_id: "t".into(),
                display_name: "d".into(),
                matching: None,
                exported: AttrMap::from(exported).into(),
                members: Default::default(),
                created: true,
            };
            let values = AttrMap::from(values);
            let nulls = nulls
                .into_iter()
                .filter(|p| !values.contains_key(p))
                .map(|p| crate::attrs::map::intern(&p))
                .collect();
            let mapped = Mapped { values, nulls, ..Mapped::default() };
            let policy = if remove { NullPolicy::Remove } else { NullPolicy::Leave };
            prop_assert_eq!(diff(&link, &mapped, policy), diff_decoded(&link, &mapped, policy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{self, ScopeMode, ScopeSettings};
    use crate::source::file::parse_export;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn env() -> EvalEnv {
        EvalEnv {
            now: chrono::Utc::now(),
        }
    }

    /// Apply a plan to the links as if the target accepted every request: the state a
    /// successful export leaves behind.
    fn simulate(plan: &Plan, links: &mut LinkIndex) {
        for a in &plan.actions {
            match a {
                Action::Provision(p) => {
                    links.of_mut(p.object_type).insert(
                        p.source_id.clone(),
                        Link {
                            object_type: p.object_type,
                            source_id: p.source_id.clone(),
                            target_id: format!("t-{}", p.source_id),
                            display_name: p.display_name.clone(),
                            matching: p.mapped.matching.first().cloned(),
                            exported: (&p.mapped.values).into(),
                            members: BTreeSet::new(),
                            created: true,
                        },
                    );
                }
                Action::Update(u) => {
                    if let Some(l) = links.of_mut(u.object_type).get_mut(&u.source_id) {
                        record_changes(l, &u.changes);
                    }
                }
                Action::Disable(d) => {
                    if let Some(l) = links.users.get_mut(&d.source_id) {
                        l.exported.insert("active", Value::Bool(false));
                    }
                }
                Action::Delete(d) => {
                    links.of_mut(d.object_type).remove(&d.source_id);
                }
            }
        }
    }

    fn simulate_refs(plan: &ReferencePlan, links: &mut LinkIndex) {
        for u in &plan.updates {
            if let Some(l) = links.users.get_mut(&u.source_id) {
                record_changes(l, &u.changes);
            }
        }
        for m in &plan.memberships {
            if let Some(l) = links.groups.get_mut(&m.group_source_id) {
                l.members.extend(m.add.iter().cloned());
                for r in &m.remove {
                    l.members.remove(r);
                }
            }
        }
    }

    fn run(
        dir: &Directory,
        settings: &ScopeSettings,
        links: &mut LinkIndex,
    ) -> (Plan, ReferencePlan) {
        let mappings = Mappings::generic_scim().unwrap();
        let scoped = scope::evaluate(dir, settings);
        let env = env();
        let ps = PlanSettings {
            null_values: NullPolicy::Leave,
            env: &env,
        };
        let plan = plan_objects(dir, &scoped, &mappings, links, &ps);
        simulate(&plan, links);
        let refs = plan_references(dir, &scoped, &mappings, links, &ps);
        simulate_refs(&refs, links);
        (plan, refs)
    }

    fn parse(v: Value) -> Directory {
        parse_export(v.to_string().as_bytes(), Path::new("d.json")).unwrap()
    }

    #[test]
    fn mapping_on_several_threads_keeps_the_order() {
        let objects: BTreeMap<String, SourceObject> = (0..10_000)
            .map(|i| {
                let id = format!("u{i:05}");
                let o = SourceObject {
                    id: id.clone(),
                    object_type: ObjectType::User,
                    attributes: Default::default(),
                    members: vec![],
                };
                (id, o)
            })
            .collect();
        let ids = map_all(&objects, |id, o| (id.clone(), o.id.len()));
        let expected: Vec<(String, usize)> = objects.keys().map(|k| (k.clone(), 6)).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn lifecycle_create_update_disable_delete() {
        let settings = ScopeSettings::default();
        let mut links = LinkIndex::default();
        let d1 = parse(json!({
            "users": [{"id":"a","userPrincipalName":"a@x","givenName":"A","manager":"b"},
                      {"id":"b","userPrincipalName":"b@x"}],
            "groups": [{"id":"g","displayName":"G","members":["a","b","ghost"]}],
            "assignments": [{"principalId":"g"}]}));
        let (p, r) = run(&d1, &settings, &mut links);
        assert_eq!(p.actions.len(), 3, "{p:#?}");
        assert!(p.actions.iter().all(|a| matches!(a, Action::Provision(_))));
        assert_eq!(r.memberships.len(), 1);
        assert_eq!(r.memberships[0].add, vec!["t-a", "t-b"]);
        assert_eq!(r.updates.len(), 1, "a's manager resolves to b's target id");
        assert_eq!(r.updates[0].changes[0].new, Some(json!("t-b")));
        assert!(r.problems.iter().any(|p| p.reason.contains("ghost")));

        // Same directory again: nothing to do.
        let (p, r) = run(&d1, &settings, &mut links);
        assert!(p.is_empty() && r.is_empty(), "{p:#?} {r:#?}");
        assert_eq!(p.unchanged_users, 2);

        // b leaves the group (out of scope → disabled, membership removed); a renamed.
        let d2 = parse(json!({
            "users": [{"id":"a","userPrincipalName":"a@x","givenName":"Alice","manager":"b"},
                      {"id":"b","userPrincipalName":"b@x"}],
            "groups": [{"id":"g","displayName":"G","members":["a"]}],
            "assignments": [{"principalId":"g"}]}));
        let (p, r) = run(&d2, &settings, &mut links);
        let kinds: Vec<_> = p
            .actions
            .iter()
            .map(|a| match a {
                Action::Update(u) => format!("update {}", u.source_id),
                Action::Disable(d) => format!("disable {}", d.source_id),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, vec!["disable b", "update a"]);
        assert_eq!(r.memberships[0].remove, vec!["t-b"]);
        assert!(r.updates.is_empty(), "manager out of scope: left alone");

        // b deleted from the source: deleted in the target; g unassigned: deleted.
        let d3 = parse(json!({
            "users": [{"id":"a","userPrincipalName":"a@x","givenName":"Alice"}],
            "groups": [{"id":"g","displayName":"G","members":["a"]}],
            "assignments": [{"principalId":"a"}]}));
        let (p, _) = run(&d3, &settings, &mut links);
        let deletes: Vec<_> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete(d) => Some(d.source_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deletes, vec!["b", "g"]);
    }

    #[test]
    fn an_incomplete_read_never_deprovisions() {
        let settings = ScopeSettings::default();
        let mut links = LinkIndex::default();
        let full = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
            "assignments":[{"principalId":"a"},{"principalId":"b"}]}),
        );
        run(&full, &settings, &mut links);
        let mut partial =
            parse(json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[]}));
        partial.complete = false;
        let (p, _) = run(&partial, &settings, &mut links);
        assert!(p.actions.iter().all(|a| !a.is_deprovisioning()), "{p:#?}");
        assert_eq!(p.withheld_deprovisions, 2);
    }

    #[test]
    fn duplicates_and_missing_matching_values_are_skipped() {
        let d = parse(json!({"users":[
            {"id":"a","userPrincipalName":"Same@x"},{"id":"b","userPrincipalName":"same@x"},
            {"id":"c"}],
            "assignments":[{"principalId":"a"},{"principalId":"b"},{"principalId":"c"}]}));
        let mut links = LinkIndex::default();
        let (p, _) = run(&d, &ScopeSettings::default(), &mut links);
        assert!(p.actions.is_empty(), "{p:#?}");
        let codes: Vec<_> = p.problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(
            codes,
            vec![
                "DuplicateSourceEntries",
                "DuplicateSourceEntries",
                "MissingMatchingValue"
            ]
        );
    }

    #[test]
    fn rejected_objects_are_never_taken_as_deleted() {
        let mut links = LinkIndex::default();
        let d1 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[{"principalId":"a"}]}),
        );
        run(&d1, &ScopeSettings::default(), &mut links);
        let d2 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"a"}],"assignments":[{"principalId":"a"}]}),
        );
        let (p, _) = run(&d2, &ScopeSettings::default(), &mut links);
        assert!(p.actions.is_empty(), "{p:#?}");
    }

    #[test]
    fn an_object_without_id_withholds_deletion_by_absence() {
        let mut links = LinkIndex::default();
        let d1 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
            "assignments":[{"principalId":"a"},{"principalId":"b"}]}),
        );
        run(&d1, &ScopeSettings::default(), &mut links);
        // b's anchor became unreadable: it arrives without an id.
        let d2 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"userPrincipalName":"b@x"}],
            "assignments":[{"principalId":"a"},{"principalId":"b"}]}),
        );
        let (p, _) = run(&d2, &ScopeSettings::default(), &mut links);
        assert!(p.actions.is_empty(), "{p:#?}");
        assert_eq!(p.withheld_deprovisions, 1);
    }

    #[test]
    fn a_rejected_group_or_assignment_disables_nobody_and_keeps_memberships() {
        let mut links = LinkIndex::default();
        let d1 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
            "groups":[{"id":"g","displayName":"G","members":["a","b"]},{"id":"h","displayName":"H","members":["b"]}],
            "assignments":[{"principalId":"g"},{"principalId":"h"}]}),
        );
        run(&d1, &ScopeSettings::default(), &mut links);
        // h is unreadable this cycle (a bad member entry): b's scope through h is unknown.
        let d2 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
            "groups":[{"id":"g","displayName":"G","members":["a"]},{"id":"h","displayName":"H","members":[7]}],
            "assignments":[{"principalId":"g"},{"principalId":"h"}]}),
        );
        let (p, r) = run(&d2, &ScopeSettings::default(), &mut links);
        assert!(p.actions.is_empty(), "{p:#?}");
        assert!(r.memberships.iter().all(|m| m.add.is_empty()));
        // A bad assignment entry: the same.
        let d3 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
            "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
            "assignments":[{"principalId":"g"},{"role":"User"}]}),
        );
        let (p, _) = run(&d3, &ScopeSettings::default(), &mut links);
        assert!(p.actions.iter().all(|a| !a.is_deprovisioning()), "{p:#?}");
    }

    #[test]
    fn a_rejected_linked_user_keeps_its_group_memberships() {
        let mut links = LinkIndex::default();
        let d1 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
            "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
            "assignments":[{"principalId":"g"}]}),
        );
        run(&d1, &ScopeSettings::default(), &mut links);
        assert_eq!(links.groups["g"].members.len(), 2);
        // b is duplicated in this export: rejected, but still there.
        let d2 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"},{"id":"b"}],
            "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
            "assignments":[{"principalId":"g"}]}),
        );
        let (p, r) = run(&d2, &ScopeSettings::default(), &mut links);
        assert!(p.actions.is_empty(), "{p:#?}");
        assert!(r.memberships.is_empty(), "{r:#?}");
        assert!(
            !r.problems.iter().any(|p| p.code == "InvalidMember"),
            "{r:#?}"
        );
    }

    #[test]
    fn null_values_follow_the_policy() {
        let mut links = LinkIndex::default();
        let d1 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x","jobTitle":"T"}],"assignments":[{"principalId":"a"}]}),
        );
        run(&d1, &ScopeSettings::default(), &mut links);
        let d2 = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[{"principalId":"a"}]}),
        );
        let (p, _) = run(&d2, &ScopeSettings::default(), &mut links);
        assert!(p.actions.is_empty(), "Entra's default leaves nulls alone");
        let mappings = Mappings::generic_scim().unwrap();
        let scoped = scope::evaluate(&d2, &ScopeSettings::default());
        let env = env();
        let ps = PlanSettings {
            null_values: NullPolicy::Remove,
            env: &env,
        };
        let p = plan_objects(&d2, &scoped, &mappings, &links, &ps);
        match &p.actions[..] {
            [Action::Update(u)] => assert_eq!(
                u.changes,
                vec![Change {
                    path: "title".into(),
                    old: Some(json!("T")),
                    new: None
                }]
            ),
            other => panic!("{other:#?}"),
        }
    }

    #[test]
    fn re_enabling_sets_active_true() {
        let mut links = LinkIndex::default();
        let on = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[{"principalId":"a"}]}),
        );
        let off = parse(
            json!({"users":[{"id":"a","userPrincipalName":"a@x","accountEnabled":false}],"assignments":[{"principalId":"a"}]}),
        );
        run(&on, &ScopeSettings::default(), &mut links);
        let (p, _) = run(&off, &ScopeSettings::default(), &mut links);
        assert!(matches!(&p.actions[..], [Action::Disable(_)]));
        let (p, _) = run(&off, &ScopeSettings::default(), &mut links);
        assert!(p.is_empty(), "an already disabled user stays unchanged");
        let (p, _) = run(&on, &ScopeSettings::default(), &mut links);
        match &p.actions[..] {
            [Action::Update(u)] => assert_eq!(u.changes[0].new, Some(json!(true))),
            other => panic!("{other:#?}"),
        }
    }

    fn arb_directory() -> impl Strategy<Value = Value> {
        let user = (
            0..8usize,
            0..5usize,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0..3usize,
            0..9usize,
        );
        let group = (
            0..4usize,
            proptest::collection::btree_set(0..10usize, 0..6),
            any::<bool>(),
        );
        let assignment = (0..12usize, any::<bool>());
        (
            proptest::collection::vec(user, 0..8),
            proptest::collection::vec(group, 0..4),
            proptest::collection::vec(assignment, 0..10),
            any::<bool>(),
            // One read in four is incomplete; one in six carries an object with no id.
            0..4usize,
            0..6usize,
        )
            .prop_map(|(users, groups, assignments, all, partial, idless)| {
                let users: Vec<Value> = users
                    .into_iter()
                    .map(|(id, upn, enabled, deleted, titled, name, manager)| {
                        let mut u = json!({"id": format!("u{id}"), "userPrincipalName": format!("user{upn}@x"),
                            "accountEnabled": enabled || id % 2 == 0, "givenName": format!("n{name}")});
                        if deleted && id % 3 == 0 {
                            u["deletedDateTime"] = json!("2026-01-01T00:00:00Z");
                        }
                        if titled {
                            u["jobTitle"] = json!("t");
                        }
                        if manager < 8 {
                            u["manager"] = json!(format!("u{manager}"));
                        }
                        u
                    })
                    .collect();
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(id, members, named)| {
                        let members: Vec<String> = members.into_iter().map(|m| if m < 8 { format!("u{m}") } else { format!("g{}", m - 8) }).collect();
                        json!({"id": format!("g{id}"), "displayName": if named { format!("G{id}") } else { format!("Group {id}") }, "members": members})
                    })
                    .collect();
                let assignments: Vec<Value> = assignments
                    .into_iter()
                    .map(|(p, default)| {
                        let principal = if p < 8 { format!("u{p}") } else { format!("g{}", p - 8) };
                        json!({"principalId": principal, "role": if default { "Default Access" } else { "User" }})
                    })
                    .collect();
                let mut users = users;
                if idless == 0 {
                    users.push(json!({"userPrincipalName": "no-id@x"}));
                }
                json!({"users": users, "groups": groups, "assignments": assignments, "_all": all,
                       "_partial": partial == 0})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever sequence of directories the source goes through, applying each plan reaches
        /// the desired state, and planning again right after yields nothing.
        #[test]
        fn applying_a_plan_converges(seq in proptest::collection::vec(arb_directory(), 1..4)) {
            let mut links = LinkIndex::default();
            for raw in seq {
                let settings = ScopeSettings {
                    mode: if raw["_all"] == json!(true) { ScopeMode::All } else { ScopeMode::Assigned },
                    ..ScopeSettings::default()
                };
                let partial = raw["_partial"] == json!(true);
                let mut dir = parse(raw);
                dir.complete = !partial;
                let before = links.clone();
                let (plan, refs) = run(&dir, &settings, &mut links);
                // Only linked objects are ever changed or removed; only unlinked ones provisioned.
                for a in &plan.actions {
                    let (ty, id) = match a {
                        Action::Provision(p) => (p.object_type, &p.source_id),
                        Action::Update(u) => (u.object_type, &u.source_id),
                        Action::Disable(d) => (ObjectType::User, &d.source_id),
                        Action::Delete(d) => (d.object_type, &d.source_id),
                    };
                    let linked = before.get(ty, id).is_some();
                    prop_assert_eq!(linked, !matches!(a, Action::Provision(_)), "{:?}", a);
                }
                // An incomplete read never deprovisions, and never removes a member.
                if partial {
                    prop_assert!(plan.actions.iter().all(|a| !a.is_deprovisioning()), "{:#?}", plan.actions);
                    prop_assert!(refs.memberships.iter().all(|m| m.remove.is_empty()));
                }
                // An object rejected without an id may be any linked one: nothing is deleted
                // for being absent.
                if dir.rejected.iter().any(|r| r.id.is_none() && r.object_type == Some(ObjectType::User)) {
                    for a in &plan.actions {
                        prop_assert!(!matches!(a, Action::Delete(d) if d.object_type == ObjectType::User), "{:?}", a);
                    }
                }
                if partial {
                    // Converging is for complete reads; the next iteration starts from here.
                    continue;
                }
                let (again, refs) = run(&dir, &settings, &mut links);
                prop_assert!(again.is_empty(), "second plan not empty: {:#?}", again.actions);
                prop_assert!(refs.is_empty(), "second reference plan not empty: {:#?}", refs);
                // Desired state: every in-scope user without a problem is linked and active;
                // every linked out-of-scope user is disabled; links exist only for source objects.
                let scoped = scope::evaluate(&dir, &settings);
                let troubled: HashSet<String> = again.problems.iter().filter_map(|p| p.id.clone()).collect();
                let assignment_known = !dir.rejected.iter().any(|r| r.object_type != Some(ObjectType::User));
                for id in dir.users.keys() {
                    let link = links.users.get(id);
                    if scoped.in_scope(ObjectType::User, id) {
                        if !troubled.contains(id) {
                            prop_assert!(link.is_some_and(|l| !l.disabled()), "user {id} should be active");
                        }
                    } else if let Some(l) = link {
                        let unknown = !assignment_known
                            && matches!(scoped.decision(ObjectType::User, id),
                                Some(Err(OutOfScope::NotAssigned | OutOfScope::ExcludedRole(_))));
                        prop_assert!(l.disabled() || unknown, "user {id} should be disabled");
                    }
                }
                let rejected: HashSet<&str> = dir.rejected.iter().filter_map(|r| r.id.as_deref()).collect();
                let idless = dir.rejected.iter().any(|r| r.id.is_none() && r.object_type == Some(ObjectType::User));
                for id in links.users.keys() {
                    prop_assert!(dir.users.contains_key(id) || rejected.contains(id.as_str()) || idless);
                }
                if !assignment_known {
                    // Group scope and membership are undecided while a group or assignment is unreadable.
                    continue;
                }
                for (id, l) in &links.groups {
                    if rejected.contains(id.as_str()) {
                        continue;
                    }
                    prop_assert!(scoped.in_scope(ObjectType::Group, id));
                    let desired: BTreeSet<String> = dir.groups[id].members.iter()
                        .filter(|m| scoped.in_scope(ObjectType::User, m))
                        .filter_map(|m| links.users.get(m).map(|u| u.target_id.clone()))
                        .collect();
                    // Rejected (unreadable) users keep whatever membership they had.
                    let unreadable: BTreeSet<String> = rejected.iter()
                        .filter_map(|r| links.users.get(*r).map(|u| u.target_id.clone()))
                        .collect();
                    let members: BTreeSet<String> = l.members.difference(&unreadable).cloned().collect();
                    prop_assert_eq!(&members, &desired);
                }
            }
        }
    }
}
