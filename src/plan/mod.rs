//! The planner: what must change in the target so it matches the source. Pure — a function of
//! the directory, its scope, the mappings and the links — so every rule here is testable
//! without a network, and planning the same inputs twice gives the same plan.
//!
//! Planning has two phases because references need target ids that only exist once objects
//! are exported: [`plan_objects`] (create/match, update, disable, delete users and groups),
//! then, after export, [`plan_references`] (managers and group memberships).

mod diff;
mod objects;
mod references;
mod skip;
#[cfg(test)]
pub(crate) mod tests;

pub use diff::NullPolicy;
pub(crate) use diff::{describe_changes, diff, record_update, Change};
pub(crate) use objects::created_digest;
pub(crate) use objects::plan_objects_skipping;
pub(crate) use objects::{match_hash, plan_objects, plan_objects_deferring, provisions};
pub(crate) use references::{plan_memberships, plan_reference_updates, plan_references};
pub(crate) use skip::Skipping;

use crate::mapping::expr::EvalEnv;
use crate::mapping::Mapped;
use crate::model::{ObjectType, SourceObject};
use crate::summary::Problem;
use serde_json::Value;

/// An in-scope object without a link: match it in the target, then adopt or create it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Provision {
    pub object_type: ObjectType,
    pub source_id: String,
    pub display_name: String,
    pub mapped: Mapped,
    /// The object's input digest ([`Skipping::stamp`]; the planner leaves it `None`): a
    /// create recorded with these values keeps it in its link, so the next cycle need not
    /// map the object.
    pub inputs: Option<[u8; 16]>,
}

/// What a confirmed update does with its link's input digest (see `skip.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DigestAfter {
    /// Drop it: the values it vouched for change.
    Drop,
    /// Keep it: only reference paths change, which phase two decides for every object each
    /// cycle and no diff of the object's own values reads (see [`diff`]).
    Keep,
    /// Record this one: the update brings the values to exactly the mapping of the inputs
    /// with this digest ([`Skipping::stamp`]).
    Record([u8; 16]),
}

/// A linked object whose mapped values changed since they were last exported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Update {
    pub object_type: ObjectType,
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    pub changes: Vec<Change>,
    /// The matching value after the update, kept in the link.
    pub matching: Option<(String, Value)>,
    /// What to do on 404: provision again with these values.
    pub mapped: Mapped,
    /// What becomes of the link's input digest once the target confirmed.
    pub digest: DigestAfter,
}

/// A linked user to set `active=false`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Disable {
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    pub reason: String,
}

/// A linked object to delete in the target.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delete {
    pub object_type: ObjectType,
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Provision(Provision),
    Update(Update),
    Disable(Disable),
    Delete(Delete),
}

impl Action {
    pub(crate) fn object_type(&self) -> ObjectType {
        match self {
            Action::Provision(p) => p.object_type,
            Action::Update(u) => u.object_type,
            Action::Disable(_) => ObjectType::User,
            Action::Delete(d) => d.object_type,
        }
    }
    #[cfg(test)]
    pub(crate) fn is_deprovisioning(&self) -> bool {
        matches!(self, Action::Disable(_) | Action::Delete(_))
    }
}

/// Phase one of a cycle's plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
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
    /// Of the unchanged objects, those found so by their input digest, without mapping.
    pub unmapped: u64,
    /// Unchanged objects whose link has no digest of their current inputs yet: recorded in
    /// the link, so the next cycle need not map them.
    pub digests: Vec<(ObjectType, String, crate::attrs::InputDigest)>,
    /// Provisions planned but not mapped yet ([`plan_objects_deferring`]), in plan order:
    /// [`provisions`] makes their actions, a chunk at a time.
    pub deferred: Vec<(ObjectType, String)>,
    /// Links held slim (`crate::model::LinkIndexBuilder::slim`) this plan would have read or
    /// changed beyond what a slim link holds: an object whose input digest did not match, a
    /// disable or a delete. Not empty, the plan is not the one to carry out: the cycle puts
    /// these links whole into the index and plans again, which gives the plan of the whole
    /// links (a property test checks it).
    pub whole: Vec<(ObjectType, String)>,
}

impl Plan {
    /// Whether the plan has an object to provision, or found one unprovisionable for a
    /// matching value it shares: whether its matching values are unique can only be told
    /// against every object in scope, so a delta cycle (`crate::model::view`) plans the
    /// whole directory instead.
    ///
    /// A deferred provision ([`plan_objects_deferring`]) is one as much as a planned one.
    pub(crate) fn provisions(&self) -> bool {
        !self.deferred.is_empty()
            || self
                .actions
                .iter()
                .any(|a| matches!(a, Action::Provision(_)))
            || self.problems.iter().any(|p| p.code == DUPLICATE)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The problem code of an object not provisioned for a matching value it shares.
pub(crate) const DUPLICATE: &str = "DuplicateSourceEntries";

/// Settings the planner needs from the job.
pub(crate) struct PlanSettings<'a> {
    pub null_values: NullPolicy,
    pub env: &'a EvalEnv,
}

/// A group's membership delta, in target ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MembershipChange {
    pub group_source_id: String,
    pub group_target_id: String,
    pub display_name: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// Phase two of a cycle's plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReferencePlan {
    /// Manager (and other reference) updates, as user updates.
    pub updates: Vec<Update>,
    pub memberships: Vec<MembershipChange>,
    pub problems: Vec<Problem>,
}

impl ReferencePlan {
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.memberships.is_empty()
    }
}

pub(super) fn problem(
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
        count: 1,
    }
}

/// `f(position, id, object)` over every object, in order. Mapping and diffing is most of the planning of a large
/// directory (100k users: about a second of one core), so from `PARALLEL_FROM` objects on it
/// is split over the available cores (at most 4). The result is the same either way.
pub(super) fn map_all<'a, T: Send>(
    objects: &'a crate::model::ObjectMap,
    f: impl Fn(usize, &'a String, &'a SourceObject) -> T + Sync,
) -> Vec<T> {
    if objects.len() < PARALLEL_FROM {
        return objects
            .iter()
            .enumerate()
            .map(|(i, (id, o))| f(i, id, o))
            .collect();
    }
    par_map(objects.iter().collect(), PARALLEL_FROM, f)
}

/// From how many objects [`map_items`] splits the work over threads.
const PARALLEL_FROM: usize = 4096;

/// [`map_all`] over some of the objects, in their order.
pub(super) fn map_items<'a, T: Send>(
    items: Vec<(&'a String, &'a SourceObject)>,
    f: impl Fn(&'a String, &'a SourceObject) -> T + Sync,
) -> Vec<T> {
    par_map(items, PARALLEL_FROM, |_, id, o| f(id, o))
}

/// [`map_items`] for items that are each much work (a group and its members): split over
/// threads from `from` items.
pub(super) fn map_items_from<'a, T: Send>(
    items: Vec<(&'a String, &'a SourceObject)>,
    from: usize,
    f: impl Fn(&'a String, &'a SourceObject) -> T + Sync,
) -> Vec<T> {
    par_map(items, from, |_, id, o| f(id, o))
}

/// `f(position, id, object)` over `items`, in their order, on up to 4 threads once there
/// are `from` of them.
fn par_map<'a, T: Send>(
    items: Vec<(&'a String, &'a SourceObject)>,
    from: usize,
    f: impl Fn(usize, &'a String, &'a SourceObject) -> T + Sync,
) -> Vec<T> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if items.len() < from.max(2) || threads < 2 {
        return items
            .iter()
            .enumerate()
            .map(|(i, (id, o))| f(i, id, o))
            .collect();
    }
    let size = items.len().div_ceil(threads);
    let run = |start: usize, part: &[(&'a String, &'a SourceObject)]| -> Vec<T> {
        part.iter()
            .enumerate()
            .map(|(k, (id, o))| f(start + k, id, o))
            .collect()
    };
    std::thread::scope(|scope| {
        let mut parts = items.chunks(size);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .enumerate()
            .map(|(k, part)| {
                let start = (k + 1) * size;
                let worker = std::thread::Builder::new()
                    .name("provisiond-plan".into())
                    .spawn_scoped(scope, move || run(start, part));
                (start, part, worker)
            })
            .collect();
        // Sized once and the first part mapped straight into it: extending the first part's
        // own vector by the others' reallocated it, twice every result held at once.
        let mut out = Vec::with_capacity(items.len());
        out.extend(first.iter().enumerate().map(|(i, (id, o))| f(i, id, o)));
        for (start, part, worker) in others {
            // No thread (or, against the crate's rules, a panic in one): do that part here.
            match worker.map(|w| w.join()) {
                Ok(Ok(done)) => out.extend(done),
                _ => out.extend(run(start, part)),
            }
        }
        out
    })
}
