//! Export: carries a plan out against the target, one object at a time, with bounded
//! concurrency, writing each link to the state store as soon as the target confirmed it.

use super::escrow::{self, Book};
use super::link_writer::LinkWriter;
use crate::model::ObjectType;
use crate::plan::{describe_changes, Action, Delete, Disable, MembershipChange, Provision, Update};
use crate::state::{EscrowAction, Link, LinkIndex, StateStore};
use crate::summary::{GroupCounts, MembershipCounts, Problem, UserCounts};
use crate::target::scim::path::ScimPath;
use crate::target::scim::resource::{
    change_ops, element_key, has_element, quote, render_resource, set_ops,
};
use crate::target::{PatchOp, Reach, Target, TargetError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

/// One thing the export did (or, in a dry run, would do): the seed of a provisioning-log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// `create`, `adopt`, `update`, `disable`, `delete`, `add_members`, `remove_members`, `failed`.
    pub action: String,
    pub object_type: ObjectType,
    pub source_id: String,
    pub target_id: Option<String>,
    pub name: String,
    pub detail: String,
    /// A create's attributes as sent, by target path: what `sync --dry-run` shows for review.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, Value>,
    /// An update's attribute changes, old and new value; a reference (a manager) by the
    /// referenced object's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<RecordedChange>,
    /// `add_members`/`remove_members`: the members' names (a dry run's new objects have no
    /// target id worth showing), in the order of their target ids in `detail`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// One attribute an update changes: `None` is absent (old) or removed (new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedChange {
    pub attribute: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl ActionRecord {
    /// A record with no attributes, changes or members.
    pub(crate) fn new(
        action: &str,
        object_type: ObjectType,
        source_id: &str,
        target_id: Option<String>,
        name: &str,
        detail: String,
    ) -> Self {
        ActionRecord {
            action: action.to_string(),
            object_type,
            source_id: source_id.to_string(),
            target_id,
            name: name.to_string(),
            detail,
            attributes: serde_json::Map::new(),
            changes: Vec::new(),
            members: Vec::new(),
        }
    }
}

/// The attributes a create sends (its mapped values and the create-only ones), for the record.
fn sent_attributes(mapped: &crate::mapping::Mapped) -> serde_json::Map<String, Value> {
    mapped
        .values
        .iter()
        .chain(mapped.create_only.iter())
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[derive(Debug, Default)]
struct Tally {
    users: UserCounts,
    groups: GroupCounts,
    memberships: MembershipCounts,
    problems: Vec<Problem>,
    records: Vec<ActionRecord>,
    /// Objects already counted this cycle: each is counted once (see `finish`). By a 64-bit
    /// hash of the id ([`Tally::counted_key`]), not the id: an initial cycle counts every
    /// object, and a million ids as strings weigh about 80 MB. Two ids colliding (odds of
    /// about 3 in 10^8 for a million objects) would only leave one object out of the counts.
    counted: HashSet<(ObjectType, u64)>,
    /// The hash of `counted`, with keys of this process's own: a fixed one would let a
    /// directory hold ids made to collide, each pair leaving an object out of the counts.
    ids: std::collections::hash_map::RandomState,
    /// Objects the planner counted unchanged that phase two updated (or failed on) after all.
    unchanged_then_changed: u64,
    /// Groups planned as unchanged whose membership export then failed.
    groups_unchanged_then_failed: u64,
}

impl Tally {
    /// Counts the object once: whether it had not been counted yet this cycle.
    fn count_once(&mut self, ty: ObjectType, source_id: &str) -> bool {
        let key = self.counted_key(ty, source_id);
        self.counted.insert(key)
    }

    /// The key of an object in `counted`: its type and a hash of its id.
    fn counted_key(&self, ty: ObjectType, source_id: &str) -> (ObjectType, u64) {
        use std::hash::BuildHasher;
        (ty, self.ids.hash_one(source_id))
    }
}

/// Why the export gave up on the whole cycle: the failure's Entra-style code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Abort {
    pub code: String,
    pub reason: String,
    /// The target refused the token or does not speak SCIM: the job is quarantined with
    /// `EncounteredQuarantineException` (see [`TargetError::is_quarantine_exception`]).
    pub quarantine_exception: bool,
}

pub(crate) struct Exporter<'a> {
    pub job: &'a str,
    pub cycle_id: &'a str,
    pub target: &'a dyn Target,
    pub store: &'a dyn StateStore,
    pub concurrency: usize,
    pub member_batch: usize,
    pub record_actions: bool,
    /// Where a real cycle's provisioning-log entries go.
    pub log: Option<&'a super::provlog::LogSink>,
    pub stop: &'a CancellationToken,
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// Where failed actions are escrowed and succeeded ones leave escrow.
    escrow: &'a Book<'a>,
    links: Mutex<LinkIndex>,
    /// (type, target id) → source id: one target object is never linked to two source objects.
    /// Built from `links` on first use, so a cycle that links nothing new (a no-change cycle
    /// over 100k users) never pays for it. Lock order: `owners`, then `links`.
    owners: Mutex<Option<Owners>>,
    tally: Mutex<Tally>,
    abort: Mutex<Option<Abort>>,
    breaker: CircuitBreaker,
    /// The last target-wide refusal (403, a collection answering nonsense) while nothing
    /// was answered: see [`Exporter::settle`].
    refused: Mutex<Option<Failure>>,
    /// Set while phase two (references, memberships) runs.
    in_references: AtomicBool,
    /// Per type, whether the target's collection was empty when this cycle's export began
    /// (probed once, by the first chunk with enough provisions): the later chunks of an
    /// initial cycle find it holding only what this export created, and their creates need
    /// no search either.
    empty_at_start: Mutex<HashMap<ObjectType, bool>>,
    /// The matching values (lowercased, with their paths) of every provision this export has
    /// seen, across chunks: a value shared with an earlier chunk's object is searched for.
    /// Hashed with the planner's duplicate key: a million users' values would weigh ~100 MB
    /// as strings; a collision only costs one search.
    matching_seen: Mutex<HashMap<u64, u32>>,
    /// Links of confirmed writes not yet in the store: written [`LINK_BATCH`] at a time
    /// (see [`Exporter::persist`]), and whatever is left at the end of every run.
    pending: Mutex<Vec<Link>>,
    /// Where full batches go when the store can write from another thread (see
    /// [`LinkWriter`]); `None`: written in place.
    writer: Option<LinkWriter>,
}

/// Confirmed links written to the store together. A sled insert per confirmed write was a
/// tenth of an initial cycle's CPU; one batch shares the store's locking and logging among
/// them. What a crash loses is at most one batch of links whose objects exist in the target:
/// the next cycle matches them again (a search, or a create's 409), as it does for a write
/// confirmed just before a crash, since the store is flushed (made durable) only at the end
/// of a cycle anyway.
const LINK_BATCH: usize = 256;

type Owners = HashMap<(ObjectType, String), String>;

/// (type, target id) → source id, from the links.
fn owner_index(links: &LinkIndex) -> Owners {
    [ObjectType::User, ObjectType::Group]
        .into_iter()
        .flat_map(|ty| {
            links
                .of(ty)
                .values()
                .map(move |l| ((ty, l.target_id().to_string()), l.source_id().to_string()))
        })
        .collect()
}

/// The result of one object's processing.
enum Outcome {
    Created(Link),
    Adopted(Link),
    Updated(Link),
    Disabled(Link),
    Deleted,
    /// The object was already gone from the target (a 404 on disable): the link is forgotten;
    /// nothing was sent that changed anything, so it is logged but not counted.
    Gone,
}

#[derive(Clone)]
struct Failure {
    code: String,
    reason: String,
    /// How far it reaches: this object, perhaps the whole target (the circuit breaker
    /// counts it), or the whole cycle (credentials refused, the store failing).
    reach: Reach,
    /// The target was never reached (connection refused, connect timeout).
    never_reached: bool,
    /// See [`Abort::quarantine_exception`].
    quarantine_exception: bool,
}

impl Failure {
    /// A failure of this object only.
    fn object(code: &str, reason: String) -> Failure {
        Failure {
            code: code.to_string(),
            reason,
            reach: Reach::Object,
            never_reached: false,
            quarantine_exception: false,
        }
    }
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        Failure {
            code: e.code().to_string(),
            reason: e.to_string(),
            reach: e.reach(),
            never_reached: e.never_reached(),
            quarantine_exception: e.is_quarantine_exception(),
        }
    }
}

/// Target-wide failures (connection failures, timeouts, 403s, collections answering
/// nonsense) in a row, with no answer between, that open the circuit breaker.
pub(crate) const BREAKER_THRESHOLD: u32 = 20;

/// The export's circuit breaker. One connection reset fails one object (the client has
/// already retried it); a run of [`BREAKER_THRESHOLD`] target-wide failures with nothing
/// answered between means the target is down, and every further request would only wait
/// for its timeout. A target never reached at all this cycle (refused before anything
/// succeeded) opens it at once: an unreachable target gives up after one object's retries.
#[derive(Debug, Default)]
struct CircuitBreaker {
    /// Target-wide failures since the last answer.
    run: AtomicU32,
    /// Something was answered this cycle: the target is reachable.
    answered: AtomicBool,
}

impl CircuitBreaker {
    /// The target answered (success, or an error about this object).
    fn answered(&self) {
        self.run.store(0, Ordering::SeqCst);
        self.answered.store(true, Ordering::SeqCst);
    }

    /// Whether the target has answered anything this cycle.
    fn reached(&self) -> bool {
        self.answered.load(Ordering::SeqCst)
    }

    /// Records a target-wide failure; `Some(why)` when the breaker opens with it.
    fn failed(&self, never_reached: bool) -> Option<String> {
        let run = self.run.fetch_add(1, Ordering::SeqCst) + 1;
        if never_reached && !self.reached() {
            Some("the target was never reached this cycle".into())
        } else if run >= BREAKER_THRESHOLD {
            Some(format!(
                "{run} target-wide failures in a row with no answer between"
            ))
        } else {
            None
        }
    }
}

/// A target object already linked to another source object.
#[derive(Debug, thiserror::Error)]
#[error("already linked to source object {owner}")]
struct Claimed {
    /// The source object that holds it.
    owner: String,
}

/// Fewest provisions of one type for which the export asks whether the target's collection is
/// empty (one request) to skip their matching searches: below it the probe saves little, and
/// small cycles keep Entra's search-before-create request for request.
const PROBE_MIN_PROVISIONS: usize = 32;

/// The code of an action stopped before its write was sent.
pub(crate) const INTERRUPTED: &str = "Interrupted";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning needs a panic, which the crate forbids; recover rather than propagate.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Exporter<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        job: &'a str,
        cycle_id: &'a str,
        target: &'a dyn Target,
        store: &'a dyn StateStore,
        links: LinkIndex,
        concurrency: usize,
        member_batch: usize,
        stop: &'a CancellationToken,
        escrow: &'a Book<'a>,
    ) -> Self {
        Exporter {
            job,
            cycle_id,
            target,
            store,
            concurrency: concurrency.max(1),
            member_batch: member_batch.max(1),
            record_actions: false,
            log: None,
            stop,
            progress: None,
            escrow,
            links: Mutex::new(links),
            owners: Mutex::new(None),
            tally: Mutex::new(Tally::default()),
            abort: Mutex::new(None),
            breaker: CircuitBreaker::default(),
            refused: Mutex::new(None),
            in_references: AtomicBool::new(false),
            empty_at_start: Mutex::new(HashMap::new()),
            matching_seen: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            writer: store.links_writer(job).and_then(LinkWriter::start),
        }
    }

    pub(crate) fn aborted(&self) -> Option<Abort> {
        lock(&self.abort).clone()
    }

    fn halted(&self) -> bool {
        self.stop.is_cancelled() || lock(&self.abort).is_some()
    }

    /// "Take no new work" on shutdown: an object whose reads already ran still sends no write
    /// once the stop signal is up; the next cycle picks it up (matching makes that safe).
    fn before_write(&self) -> Result<(), Failure> {
        if self.halted() {
            return Err(Failure::object(
                INTERRUPTED,
                "the cycle was stopped before this object's write was sent".into(),
            ));
        }
        Ok(())
    }

    /// The links as they are now (after phase one, for reference planning). A guard, not a
    /// copy: cloning 100k links cost a second and doubled the memory of an incremental cycle.
    /// Drop it before exporting again.
    pub(crate) fn links(&self) -> MutexGuard<'_, LinkIndex> {
        lock(&self.links)
    }

    /// Objects the plan counted as unchanged but phase two updated (a new manager) or failed on:
    /// the caller takes them out of `unchanged`.
    pub(crate) fn unchanged_then_changed(&self) -> u64 {
        lock(&self.tally).unchanged_then_changed
    }

    pub(crate) fn groups_unchanged_then_failed(&self) -> u64 {
        lock(&self.tally).groups_unchanged_then_failed
    }

    pub(crate) fn into_results(
        self,
    ) -> (
        UserCounts,
        GroupCounts,
        MembershipCounts,
        Vec<Problem>,
        Vec<ActionRecord>,
    ) {
        let t = self.tally.into_inner().unwrap_or_else(|e| e.into_inner());
        (t.users, t.groups, t.memberships, t.problems, t.records)
    }

    /// Record a link in memory (and in the owner index, once built). A user link's input
    /// digest stays in the store only (`LinkIndex::insert_leaving_digest`): nothing plans
    /// from this index again, and a reference update gives the digest back
    /// (`Skipping::stamp_kept`). Group links keep theirs: a membership change writes the
    /// link back as the index holds it.
    fn insert_link(&self, link: &Link) {
        let mut owners = lock(&self.owners);
        if let Some(o) = owners.as_mut() {
            o.insert(
                (link.object_type, link.target_id.clone()),
                link.source_id.clone(),
            );
        }
        let mut links = lock(&self.links);
        match link.object_type {
            ObjectType::User => links.insert_leaving_digest(link),
            ObjectType::Group => links.insert(link),
        }
    }

    /// Records `link` for the store once its write is confirmed (never before: the caller
    /// holds the target's answer). It is written with the other confirmed links of its batch,
    /// when the batch is full.
    fn persist(&self, link: Link) {
        let failed = {
            let mut pending = lock(&self.pending);
            pending.push(link);
            if pending.len() < LINK_BATCH {
                return;
            }
            // Queued under the lock: batches reach the store in the order they filled.
            let batch = std::mem::take(&mut *pending);
            self.write_batch(batch)
        };
        self.links_not_written(failed);
    }

    /// Hands `batch` to the writer thread (its first refusal since the last batch comes
    /// back), or writes it here when there is none.
    fn write_batch(&self, batch: Vec<Link>) -> Option<crate::state::StateError> {
        let batch = match &self.writer {
            Some(w) => match w.send(batch) {
                Ok(()) => return w.failure(),
                Err(batch) => batch,
            },
            None => batch,
        };
        self.store.put_links(self.job, &batch).err()
    }

    /// Writes the confirmed links not yet written and waits until they are. Every run ends
    /// with it, and a link is removed only after it (a pending write of the same key would
    /// bring the link back).
    pub(crate) fn flush_links(&self) {
        let (failed, gone) = {
            let mut pending = lock(&self.pending);
            let batch = std::mem::take(&mut *pending);
            let failed = if batch.is_empty() {
                None
            } else {
                self.write_batch(batch)
            };
            match &self.writer {
                Some(w) => {
                    let gone = w.drain().is_err();
                    (failed.or_else(|| w.failure()), gone)
                }
                None => (failed, false),
            }
        };
        self.links_not_written(failed);
        if gone {
            self.classify(Some(&store_failure_because(
                "the state store's link writer stopped: links of this export may not be stored"
                    .into(),
            )));
        }
    }

    /// A batch the store refused stops the export, as a refused single link did: its objects
    /// exist in the target unlinked, and the next cycle matches them again.
    fn links_not_written(&self, failed: Option<crate::state::StateError>) {
        if let Some(e) = failed {
            self.classify(Some(&store_failure(e)));
        }
    }

    /// Forget a link in memory (and in the owner index, once built).
    fn remove_link(&self, ty: ObjectType, source_id: &str) {
        let mut owners = lock(&self.owners);
        let removed = lock(&self.links).of_mut(ty).remove(source_id);
        if let (Some(o), Some(l)) = (owners.as_mut(), removed) {
            o.remove(&(ty, l.target_id));
        }
    }

    /// An update's changes for the record. A reference (phase two: a manager) names the
    /// object it points to, as members do: a dry run's new objects have only placeholder ids.
    fn recorded_changes(&self, changes: &[crate::plan::Change]) -> Vec<RecordedChange> {
        let reference = self.in_references.load(Ordering::SeqCst);
        let named = |v: &Option<Value>| -> Option<Value> {
            match v {
                Some(Value::String(id)) if reference => self
                    .member_names(std::slice::from_ref(id))
                    .pop()
                    .map(Value::String),
                other => other.clone(),
            }
        };
        changes
            .iter()
            .map(|c| RecordedChange {
                attribute: c.path.clone(),
                old: named(&c.old),
                new: named(&c.new),
            })
            .collect()
    }

    /// The names of members given by target id, from the links (a dry run links its pretended
    /// creates too); an id no link knows stays as it is.
    fn member_names(&self, ids: &[String]) -> Vec<String> {
        let mut owners = lock(&self.owners);
        let links = lock(&self.links);
        let o = owners.get_or_insert_with(|| owner_index(&links));
        ids.iter()
            .map(|id| {
                [ObjectType::User, ObjectType::Group]
                    .into_iter()
                    .find_map(|ty| {
                        let source_id = o.get(&(ty, id.clone()))?;
                        links
                            .get(ty, source_id)
                            .map(|l| l.display_name().to_string())
                    })
                    .unwrap_or_else(|| id.clone())
            })
            .collect()
    }

    /// Claim a target object for a source object, atomically: two objects provisioned at once
    /// that match the same target object (through different matching attributes) can't both
    /// adopt it. `Err` names the source object that holds it.
    fn claim(&self, ty: ObjectType, target_id: &str, source_id: &str) -> Result<(), Claimed> {
        let mut owners = lock(&self.owners);
        let o = owners.get_or_insert_with(|| owner_index(&lock(&self.links)));
        match o.get(&(ty, target_id.to_string())) {
            Some(owner) if owner != source_id => Err(Claimed {
                owner: owner.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                o.insert((ty, target_id.to_string()), source_id.to_string());
                Ok(())
            }
        }
    }

    /// Run actions concurrently. Returns when all are done or the export was halted; actions
    /// not started are left for the next cycle.
    pub(crate) async fn run(&self, actions: &[Action]) {
        let unsearched = self.unsearched(actions).await;
        // Twice the client's concurrency keeps its pipe full while results are being recorded.
        futures::stream::iter(actions.iter().enumerate())
            .for_each_concurrent(self.in_flight(), |(i, a)| {
                let search = !unsearched.contains(&i);
                async move {
                    self.run_counted(a, search).await;
                }
            })
            .await;
        self.flush_links();
    }

    /// How many actions [`Exporter::run`] keeps going at once: twice the client's
    /// concurrency, so that a permit freed while a result is being recorded finds the next
    /// request waiting.
    pub(crate) fn in_flight(&self) -> usize {
        self.concurrency * 2
    }

    /// One action, owned (see [`Exporter::run_counted`]): for a caller that maps actions as
    /// it goes and keeps no slice of them.
    pub(crate) async fn run_owned(&self, action: Action, search: bool) {
        self.run_counted(&action, search).await;
    }

    /// The provisions (by index in `actions`) whose matching search can only come back empty,
    /// so their create is sent without it: the target's collection of their type was empty
    /// when this export began (one unfiltered list says so, see [`Target::collection_empty`])
    /// and no other provision of this batch shares one of their matching values (compared
    /// case-insensitively, as SCIM compares `userName`). Adoption is kept: an object that
    /// appears meanwhile (another writer) answers the create with a 409, which matches and
    /// adopts as before, the same race a search-then-create always had. Only the export of
    /// objects does this; a cycle with fewer than [`PROBE_MIN_PROVISIONS`] provisions of a
    /// type searches as usual, since the probe would save too little.
    pub(crate) async fn unsearched(&self, actions: &[Action]) -> HashSet<usize> {
        let mut skip = HashSet::new();
        if self.in_references.load(Ordering::SeqCst) {
            return skip;
        }
        for ty in [ObjectType::User, ObjectType::Group] {
            let provisions: Vec<(usize, &Provision)> = actions
                .iter()
                .enumerate()
                .filter_map(|(i, a)| match a {
                    Action::Provision(p) if p.object_type == ty => Some((i, p)),
                    _ => None,
                })
                .collect();
            if provisions.len() < PROBE_MIN_PROVISIONS || self.halted() {
                continue;
            }
            let known = lock(&self.empty_at_start).get(&ty).copied();
            let empty = match known {
                Some(empty) => empty,
                None => match self.target.collection_empty(ty).await {
                    Ok(empty) => {
                        lock(&self.empty_at_start).insert(ty, empty);
                        empty
                    }
                    // A refused token (or a store failure) stops the export here, before the
                    // searches would each be refused; anything else leaves them to find it.
                    Err(e) if e.reach() == Reach::Cycle => {
                        self.classify(Some(&Failure::from(e)));
                        return skip;
                    }
                    Err(_) => false,
                },
            };
            if !empty {
                continue;
            }
            // The planner's duplicate key: case-insensitive, no lowercase copies.
            let key = crate::plan::match_hash;
            let mut seen = lock(&self.matching_seen);
            for (_, p) in &provisions {
                for (path, value) in &p.mapped.matching {
                    *seen.entry(key(path, value)).or_insert(0) += 1;
                }
            }
            skip.extend(
                provisions
                    .iter()
                    .filter(|(_, p)| {
                        p.mapped
                            .matching
                            .iter()
                            .all(|(path, value)| seen.get(&key(path, value)) == Some(&1))
                    })
                    .map(|(i, _)| *i),
            );
            tracing::debug!(job = self.job, cycle_id = self.cycle_id, object_type = %ty,
                provisions = provisions.len(), unsearched = skip.len(),
                "empty target collection: creates without a matching search");
        }
        skip
    }

    /// One action, unless the export was halted; counted in the progress bar. `search`: false
    /// when a provision's matching search is known to come back empty (see
    /// [`Exporter::unsearched`]).
    async fn run_counted(&self, action: &Action, search: bool) {
        if self.halted() {
            return;
        }
        self.run_one(action, search).await;
        if let Some(p) = self.progress {
            p.inc(1);
        }
    }

    async fn run_one(&self, action: &Action, search: bool) {
        let (ty, source_id, name) = match action {
            Action::Provision(p) => (p.object_type, &p.source_id, &p.display_name),
            Action::Update(u) => (u.object_type, &u.source_id, &u.display_name),
            Action::Disable(d) => (ObjectType::User, &d.source_id, &d.display_name),
            Action::Delete(d) => (d.object_type, &d.source_id, &d.display_name),
        };
        let started = std::time::Instant::now();
        let result = match action {
            Action::Provision(p) if !search => self.create(p).await,
            Action::Provision(p) => self.provision(p).await,
            Action::Update(u) => self.update(u).await,
            Action::Disable(d) => self.disable(d).await,
            Action::Delete(d) => self.delete(d).await,
        };
        self.finish(ty, source_id, name, action, result, started);
    }

    fn finish(
        &self,
        ty: ObjectType,
        source_id: &str,
        name: &str,
        action: &Action,
        result: Result<Outcome, Failure>,
        started: std::time::Instant,
    ) {
        let result = result.and_then(|outcome| {
            match &outcome {
                Outcome::Created(l)
                | Outcome::Adopted(l)
                | Outcome::Updated(l)
                | Outcome::Disabled(l) => {
                    self.insert_link(l);
                    self.persist(l.clone());
                }
                Outcome::Deleted | Outcome::Gone => self.forget(ty, source_id)?,
            }
            Ok(outcome)
        });
        self.note_escrow(name, action, &result);
        self.classify(result.as_ref().err());
        // Before the tally is locked (lock order: owners, links, tally).
        let changes = match (&result, action) {
            (Ok(Outcome::Updated(_)), Action::Update(u)) if self.record_actions => {
                self.recorded_changes(&u.changes)
            }
            _ => Vec::new(),
        };
        if let Some(log) = self.log {
            log_outcome(
                log,
                self.cycle_id,
                ty,
                source_id,
                name,
                action,
                &result,
                started,
            );
        }
        let mut t = lock(&self.tally);
        match result {
            Ok(outcome) => {
                let (verb, target_id, detail) = match (&outcome, action) {
                    (Outcome::Created(l), _) => ("create", Some(&l.target_id), String::new()),
                    (Outcome::Adopted(l), _) => (
                        "adopt",
                        Some(&l.target_id),
                        "matched an existing object".to_string(),
                    ),
                    (Outcome::Updated(l), Action::Update(u)) => {
                        ("update", Some(&l.target_id), describe_changes(&u.changes))
                    }
                    (Outcome::Updated(l), _) => ("update", Some(&l.target_id), String::new()),
                    (Outcome::Disabled(l), Action::Disable(d)) => {
                        ("disable", Some(&l.target_id), d.reason.clone())
                    }
                    (Outcome::Disabled(l), _) => ("disable", Some(&l.target_id), String::new()),
                    (Outcome::Deleted, Action::Delete(d)) => {
                        ("delete", Some(&d.target_id), d.reason.clone())
                    }
                    (Outcome::Deleted, _) => ("delete", None, String::new()),
                    (Outcome::Gone, _) => (
                        "gone",
                        None,
                        "already absent from the target; link forgotten".to_string(),
                    ),
                };
                // Count each object once per cycle. A reference update (phase two: a manager)
                // of an object created, adopted or updated in phase one is part of that
                // action, not a second update; without this an initial cycle reported every
                // user with a manager as both created and updated.
                let first = t.count_once(ty, source_id);
                if first && ty == ObjectType::User && self.in_references.load(Ordering::SeqCst) {
                    t.unchanged_then_changed += 1;
                }
                match (ty, verb) {
                    _ if !first => {}
                    (_, "gone") => {}
                    (ObjectType::User, "create") => t.users.created += 1,
                    (ObjectType::User, "adopt" | "update") => t.users.updated += 1,
                    (ObjectType::User, "disable") => t.users.disabled += 1,
                    (ObjectType::User, "delete") => t.users.deleted += 1,
                    (ObjectType::User, _) => t.users.unchanged += 1,
                    (ObjectType::Group, "create") => t.groups.created += 1,
                    (ObjectType::Group, "adopt" | "update") => t.groups.updated += 1,
                    (ObjectType::Group, "delete") => t.groups.deleted += 1,
                    (ObjectType::Group, _) => t.groups.unchanged += 1,
                }
                // At `info` only when no provisioning log is written: its entry is a tracing
                // event at `info` too (`provisiond::provlog`) naming the same object, action
                // and ids, and a second JSON line per object was a tenth of an initial
                // cycle's CPU.
                macro_rules! exported {
                    ($level:expr) => {
                        tracing::event!(
                            $level,
                            job = self.job,
                            cycle_id = self.cycle_id,
                            action = verb,
                            object_type = %ty,
                            source_id,
                            target_id = target_id.map(String::as_str),
                            name,
                            detail = %detail,
                            "exported"
                        )
                    };
                }
                if self.log.is_some() {
                    exported!(tracing::Level::DEBUG);
                } else {
                    exported!(tracing::Level::INFO);
                }
                if self.record_actions {
                    let mut r =
                        ActionRecord::new(verb, ty, source_id, target_id.cloned(), name, detail);
                    match (verb, action) {
                        ("create", Action::Provision(Provision { mapped, .. }))
                        | ("create", Action::Update(Update { mapped, .. })) => {
                            r.attributes = sent_attributes(mapped);
                        }
                        ("update", _) => r.changes = changes,
                        _ => {}
                    }
                    t.records.push(r);
                }
            }
            Err(f) => {
                // A failure always counts; one in phase two of an object the plan counted
                // unchanged is no longer unchanged.
                if t.count_once(ty, source_id)
                    && ty == ObjectType::User
                    && self.in_references.load(Ordering::SeqCst)
                {
                    t.unchanged_then_changed += 1;
                }
                match ty {
                    ObjectType::User => t.users.failed += 1,
                    ObjectType::Group => t.groups.failed += 1,
                }
                // Debug, as it happens: the cycle's one `problem` event per problem is what
                // admins and log shippers read (and count against `problem_count`).
                tracing::debug!(
                    job = self.job,
                    cycle_id = self.cycle_id,
                    object_type = %ty,
                    source_id,
                    name,
                    code = %f.code,
                    reason = %f.reason,
                    "export failed"
                );
                if self.record_actions {
                    let detail = format!("{}: {}", f.code, f.reason);
                    t.records.push(ActionRecord::new(
                        "failed", ty, source_id, None, name, detail,
                    ));
                }
                t.problems.push(Problem {
                    object_type: Some(ty.as_str().to_string()),
                    id: Some(source_id.to_string()),
                    name: Some(name.to_string()),
                    code: f.code.clone(),
                    reason: f.reason.clone(),
                    count: 1,
                });
            }
        }
    }

    /// Escrow: a failed action is kept for retry; a succeeded one leaves escrow.
    fn note_escrow(&self, name: &str, action: &Action, result: &Result<Outcome, Failure>) {
        let book = self.escrow;
        let reference = self.in_references.load(Ordering::SeqCst);
        let key = escrow::key_of(action, reference);
        match result {
            Ok(_) => book.succeeded(key),
            // Never sent, or a failure of the whole cycle (token refused, target or store
            // unreachable) rather than of this object: the next cycle simply carries on.
            Err(f) if f.reach == Reach::Cycle || f.code == INTERRUPTED => {}
            Err(f) => book.failed(
                key,
                name,
                escrow::escrow_action(action, reference),
                escrow::fingerprint(action),
                &f.code,
                &f.reason,
            ),
        }
    }

    /// Decide what one outcome means for the cycle: an answer closes the breaker's run; a
    /// target-wide failure counts towards it; a cycle-wide one (or an open breaker) stops
    /// the export, and no further request is started.
    fn classify(&self, failure: Option<&Failure>) {
        let Some(f) = failure else {
            self.breaker.answered();
            return;
        };
        let why = match f.reach {
            Reach::Object => {
                self.breaker.answered();
                return;
            }
            Reach::Cycle => f.reason.clone(),
            Reach::Target if f.quarantine_exception && !self.breaker.reached() => {
                *lock(&self.refused) = Some(f.clone());
                match self.breaker.failed(f.never_reached) {
                    None => return,
                    Some(why) => self.unreachable(f, &why),
                }
            }
            Reach::Target => match self.breaker.failed(f.never_reached) {
                None => return,
                Some(why) => self.unreachable(f, &why),
            },
        };
        self.stop_export(f, why);
    }

    fn unreachable(&self, f: &Failure, why: &str) -> String {
        format!(
            "target unreachable ({why}; last {}: {}); no further request was sent: \
             check it with `provisiond test-connection --job {}`",
            f.code, f.reason, self.job
        )
    }

    /// At the end of an export phase: a target that refused every request of the cycle
    /// (403, or collections answering nonsense) and answered nothing else refuses the token or
    /// is not SCIM, however few requests that was (the breaker needs a run of them). One
    /// search tells that apart from objects the target protects: if it is refused too, the
    /// cycle stops as for a 401 (quarantine exception); if answered, the failures stay those
    /// objects'.
    pub(crate) async fn settle(&self) {
        self.flush_links();
        if self.halted() || self.breaker.reached() {
            return;
        }
        if lock(&self.refused).take().is_none() {
            return;
        }
        let probe = Value::String("provisiond-probe".into());
        match self.target.find(ObjectType::User, "userName", &probe).await {
            Ok(_) => self.breaker.answered(),
            Err(e) => {
                let f = Failure::from(e);
                if f.quarantine_exception {
                    let why = format!(
                        "the target refused every request of this cycle ({}: {})",
                        f.code, f.reason
                    );
                    self.stop_export(&f, why);
                } else {
                    // Not a refusal after all: the earlier failures stay their objects'.
                    self.classify(Some(&f));
                }
            }
        }
    }

    /// Stops the export for `f`: no further request is started.
    fn stop_export(&self, f: &Failure, why: String) {
        let mut abort = lock(&self.abort);
        if abort.is_none() {
            tracing::error!(job = self.job, cycle_id = self.cycle_id, code = %f.code, reason = %why, "export stopped");
            *abort = Some(Abort {
                code: f.code.clone(),
                reason: why,
                quarantine_exception: f.quarantine_exception,
            });
        }
    }

    /// Entra's matching: each matching attribute alone, in precedence order; the first hit wins;
    /// more than one hit is an error for this object.
    async fn find_match(
        &self,
        ty: ObjectType,
        matching: &[(String, Value)],
    ) -> Result<Option<Value>, Failure> {
        for (path, value) in matching {
            let mut hits = self.target.find(ty, path, value).await?;
            match hits.len() {
                0 => continue,
                1 => return Ok(hits.pop()),
                n => {
                    return Err(Failure::object(
                        "DuplicateTargetEntries",
                        format!("{n} target objects match {path} eq {value}"),
                    ))
                }
            }
        }
        Ok(None)
    }

    async fn provision(&self, p: &Provision) -> Result<Outcome, Failure> {
        if let Some(found) = self.find_match(p.object_type, &p.mapped.matching).await? {
            return self.adopt(p, found).await;
        }
        self.create(p).await
    }

    /// Create `p`'s object (matching found nothing, or could find nothing); a conflict or an
    /// ambiguous failure matches again and adopts what it finds.
    async fn create(&self, p: &Provision) -> Result<Outcome, Failure> {
        let mut create_only = p.mapped.create_only.clone();
        for (path, candidates) in &p.mapped.unique {
            create_only.insert(
                path,
                self.first_unused(p.object_type, path, candidates).await?,
            );
        }
        self.before_write()?;
        // Rendered again for the rare second create rather than cloned for every first one.
        let body = || {
            render_resource(
                p.object_type,
                p.mapped.values.iter().chain(create_only.iter()),
            )
        };
        match self.target.create(p.object_type, body()).await {
            Ok(resource) => Ok(Outcome::Created(self.created_link(p, &resource)?)),
            // Someone (or a lost response of ours) created it meanwhile: match and adopt.
            Err(e) if e.is_conflict() || e.is_ambiguous() => {
                let ambiguous = e.is_ambiguous();
                match self.find_match(p.object_type, &p.mapped.matching).await? {
                    // After an ambiguous create (a lost response, a 500 after the write) the
                    // match is our own object: count and remember it as created, not adopted.
                    Some(found) if ambiguous => match self.adopt(p, found).await? {
                        Outcome::Adopted(mut link) => {
                            link.created = true;
                            Ok(Outcome::Created(link))
                        }
                        other => Ok(other),
                    },
                    Some(found) => self.adopt(p, found).await,
                    None if ambiguous => {
                        self.before_write()?;
                        let resource = self.target.create(p.object_type, body()).await?;
                        Ok(Outcome::Created(self.created_link(p, &resource)?))
                    }
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// SelectUniqueValue: the first candidate no target object uses yet.
    async fn first_unused(
        &self,
        ty: ObjectType,
        path: &str,
        candidates: &[Value],
    ) -> Result<Value, Failure> {
        for c in candidates {
            if self.target.find(ty, path, c).await?.is_empty() {
                return Ok(c.clone());
            }
        }
        Err(Failure::object(
            "NoUniqueValue",
            format!("every SelectUniqueValue candidate for {path} is already used in the target"),
        ))
    }

    fn new_link(&self, p: &Provision, resource: &Value, created: bool) -> Result<Link, Failure> {
        let target_id = resource
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Failure::object(
                    "ServiceIncompatible",
                    "the target's response has no id".into(),
                )
            })?
            .to_string();
        if let Err(Claimed { owner }) = self.claim(p.object_type, &target_id, &p.source_id) {
            return Err(Failure::object(
                "TargetObjectAlreadyLinked",
                format!("target object {target_id} is already linked to source object {owner}"),
            ));
        }
        Ok(Link {
            object_type: p.object_type,
            source_id: p.source_id.clone(),
            target_id,
            display_name: p.display_name.clone(),
            matching: p.mapped.matching.first().cloned().into(),
            exported: (&p.mapped.values).into(),
            members: Default::default(),
            created,
        })
    }

    /// The link of an object this cycle created, with the object's input digest when `p`
    /// carries one and the target's answer holds no other value than the one sent at a
    /// mapped path: a target that changed a value (normalised it, say) has an object the
    /// mapping does not describe exactly, and the next cycle maps it again rather than vouch
    /// for it. An answer of its `id` alone (the SCIM client's: the export keeps nothing
    /// else) says nothing against the values sent, which the link holds either way.
    fn created_link(&self, p: &Provision, resource: &Value) -> Result<Link, Failure> {
        let mut link = self.new_link(p, resource, true)?;
        if let Some(d) = crate::plan::created_digest(p) {
            let only_id = resource.as_object().is_some_and(|o| o.len() <= 1);
            let other = (!only_id)
                .then(|| {
                    p.mapped
                        .values
                        .iter()
                        .find(|(path, v)| answers_other(resource, path, v))
                })
                .flatten();
            match other {
                None => link.exported.set_digest(d),
                Some((path, _)) => {
                    tracing::debug!(object_type = %p.object_type, source_id = %p.source_id, path = %path, "the target answered another value than the one sent: no input digest")
                }
            }
        }
        Ok(link)
    }

    /// Link an existing target object and bring its mapped attributes up to date, sending only
    /// the attributes whose value differs.
    async fn adopt(&self, p: &Provision, resource: Value) -> Result<Outcome, Failure> {
        let link = self.new_link(p, &resource, false)?;
        let differing: Vec<(String, Value)> = p
            .mapped
            .values
            .iter()
            .filter(|(path, want)| {
                ScimPath::parse(path)
                    .ok()
                    .and_then(|sp| sp.get(&resource).cloned())
                    .as_ref()
                    != Some(*want)
            })
            .map(|(path, v)| (path.to_string(), v.clone()))
            .collect();
        let ops = set_ops(&differing, |path| has_element(&resource, path));
        if !ops.is_empty() {
            self.before_write()?;
            self.target
                .patch(p.object_type, &link.target_id, &ops)
                .await?;
        }
        Ok(Outcome::Adopted(link))
    }

    async fn update(&self, u: &Update) -> Result<Outcome, Failure> {
        // The elements the target has, keyed, only once a change addresses one: a manager
        // update (an initial cycle's phase two, one per user) has no filtered path, and the
        // keys of every exported path were about 5% of that phase's request-thread CPU.
        let exported: std::cell::OnceCell<Vec<String>> = std::cell::OnceCell::new();
        let element_keys = || -> Vec<String> {
            lock(&self.links)
                .get(u.object_type, &u.source_id)
                .map(|l| {
                    l.exported()
                        .keys()
                        .iter()
                        .filter_map(|k| element_key(k))
                        .collect()
                })
                .unwrap_or_default()
        };
        let changes = u.changes.iter().map(|c| (c.path.as_str(), c.new.as_ref()));
        let ops = change_ops(changes, |path| {
            element_key(path).is_some_and(|key| exported.get_or_init(element_keys).contains(&key))
        });
        self.before_write()?;
        match self.target.patch(u.object_type, &u.target_id, &ops).await {
            Ok(()) => {
                let mut link = lock(&self.links)
                    .get(u.object_type, &u.source_id)
                    .map(|l| l.to_link())
                    .ok_or_else(|| {
                        Failure::object("InternalError", "link vanished during the cycle".into())
                    })?;
                crate::plan::record_update(&mut link, u);
                link.display_name = u.display_name.clone();
                if u.matching.is_some() {
                    link.matching = u.matching.clone().into();
                }
                Ok(Outcome::Updated(link))
            }
            // Deleted in the target behind our back: forget the link, match again, create.
            Err(e) if e.is_not_found() => {
                self.forget(u.object_type, &u.source_id)?;
                // A reference-only update (phase two) carries no values to create from: the
                // next cycle matches and provisions the object in full.
                if u.mapped.matching.is_empty() {
                    return Err(e.into());
                }
                let p = Provision {
                    object_type: u.object_type,
                    source_id: u.source_id.clone(),
                    display_name: u.display_name.clone(),
                    mapped: u.mapped.clone(),
                    inputs: match u.digest {
                        crate::plan::DigestAfter::Record(inputs) => Some(inputs),
                        _ => None,
                    },
                };
                Box::pin(self.provision(&p)).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drop a link from the store and from memory.
    fn forget(&self, ty: ObjectType, source_id: &str) -> Result<(), Failure> {
        self.flush_links();
        self.store
            .remove_link(self.job, ty, source_id)
            .map_err(store_failure)?;
        self.remove_link(ty, source_id);
        Ok(())
    }

    async fn disable(&self, d: &Disable) -> Result<Outcome, Failure> {
        self.before_write()?;
        let ops = [PatchOp::replace("active", Value::Bool(false))];
        match self
            .target
            .patch(ObjectType::User, &d.target_id, &ops)
            .await
        {
            Ok(()) => {
                let mut link = lock(&self.links)
                    .get(ObjectType::User, &d.source_id)
                    .map(|l| l.to_link())
                    .ok_or_else(|| {
                        Failure::object("InternalError", "link vanished during the cycle".into())
                    })?;
                link.exported.insert("active", Value::Bool(false));
                Ok(Outcome::Disabled(link))
            }
            // Already gone from the target: nothing left to disable.
            Err(e) if e.is_not_found() => Ok(Outcome::Gone),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, d: &Delete) -> Result<Outcome, Failure> {
        self.before_write()?;
        match self.target.delete(d.object_type, &d.target_id).await {
            Ok(()) => Ok(Outcome::Deleted),
            Err(e) if e.is_not_found() => Ok(Outcome::Deleted),
            Err(e) => Err(e.into()),
        }
    }

    /// Phase two's reference updates (managers), moved into actions rather than cloned.
    pub(crate) async fn run_reference_updates(&self, updates: Vec<Update>) {
        self.in_references.store(true, Ordering::SeqCst);
        let actions: Vec<Action> = updates.into_iter().map(Action::Update).collect();
        self.run(&actions).await;
    }

    /// Membership deltas, with twice the client's concurrency in flight like [`Exporter::run`],
    /// so that a permit freed while a group's link is being recorded finds the next request
    /// waiting.
    pub(crate) async fn run_memberships(&self, memberships: &[MembershipChange]) {
        self.in_references.store(true, Ordering::SeqCst);
        futures::stream::iter(memberships)
            .for_each_concurrent(self.concurrency * 2, |m| async move {
                if self.halted() {
                    return;
                }
                self.members(m).await;
                if let Some(p) = self.progress {
                    p.inc(1);
                }
            })
            .await;
        self.flush_links();
    }

    async fn members(&self, m: &MembershipChange) {
        let mut chunks: Vec<(bool, Vec<PatchOp>, Vec<String>)> = Vec::new();
        for ids in m.add.chunks(self.member_batch) {
            let value = Value::Array(
                ids.iter()
                    .map(|id| serde_json::json!({"value": id}))
                    .collect(),
            );
            chunks.push((true, vec![PatchOp::add("members", value)], ids.to_vec()));
        }
        for ids in m.remove.chunks(self.member_batch) {
            let ops = ids
                .iter()
                .map(|id| PatchOp::remove(format!("members[value eq {}]", quote(id))))
                .collect();
            chunks.push((false, ops, ids.to_vec()));
        }
        for (adding, ops, ids) in chunks {
            if self.halted() {
                return;
            }
            let result = self
                .target
                .patch(ObjectType::Group, &m.group_target_id, &ops)
                .await;
            let outcome = match result {
                Ok(()) => {
                    let updated = {
                        let mut links = lock(&self.links);
                        links.groups_mut().get_mut(&m.group_source_id).map(|mut l| {
                            for id in &ids {
                                if adding {
                                    l.members.insert(id.clone());
                                } else {
                                    l.members.remove(id);
                                }
                            }
                            l.clone()
                        })
                    };
                    if let Some(l) = updated {
                        self.persist(l);
                    }
                    Ok(())
                }
                // The group is gone from the target: forget it; the next cycle recreates it.
                Err(e) if e.is_not_found() => {
                    let f: Failure = e.into();
                    let _ = self.forget(ObjectType::Group, &m.group_source_id);
                    Err(f)
                }
                Err(e) => Err(e.into()),
            };
            self.classify(outcome.as_ref().err());
            // Resolved before the tally is locked (lock order: owners, links, tally).
            let names = match (&outcome, self.record_actions) {
                (Ok(()), true) => self.member_names(&ids),
                _ => Vec::new(),
            };
            let mut t = lock(&self.tally);
            match outcome {
                Ok(()) => {
                    let n = ids.len() as u64;
                    if adding {
                        t.memberships.added += n;
                    } else {
                        t.memberships.removed += n;
                    }
                    let verb = if adding {
                        "add_members"
                    } else {
                        "remove_members"
                    };
                    // As for objects (see `finish`): the provisioning log's entry is the
                    // `info` line when there is one.
                    if let Some(log) = self.log {
                        tracing::debug!(job = self.job, cycle_id = self.cycle_id, action = verb,
                            group_id = %m.group_source_id, target_id = %m.group_target_id, count = n, "exported");
                        log.membership(self.cycle_id, m, adding, &ids, None);
                    } else {
                        tracing::info!(job = self.job, cycle_id = self.cycle_id, action = verb,
                            group_id = %m.group_source_id, target_id = %m.group_target_id, count = n, "exported");
                    }
                    if self.record_actions {
                        let mut r = ActionRecord::new(
                            verb,
                            ObjectType::Group,
                            &m.group_source_id,
                            Some(m.group_target_id.clone()),
                            &m.display_name,
                            format!("{n} member(s): {}", ids.join(", ")),
                        );
                        r.members = names;
                        t.records.push(r);
                    }
                }
                Err(f) => {
                    // Once per group: a group created this cycle whose members then failed is
                    // one object, counted as created, with the failure in `problems`.
                    if t.count_once(ObjectType::Group, &m.group_source_id) {
                        t.groups.failed += 1;
                        t.groups_unchanged_then_failed += 1;
                    }
                    // Debug: the cycle's `problem` event reports it (see `finish`).
                    tracing::debug!(job = self.job, cycle_id = self.cycle_id, group_id = %m.group_source_id,
                        code = %f.code, reason = %f.reason, "membership export failed");
                    if let Some(log) = self.log {
                        log.membership(self.cycle_id, m, adding, &ids, Some((&f.code, &f.reason)));
                    }
                    self.escrow.failed(
                        (ObjectType::Group, m.group_source_id.clone(), true),
                        &m.display_name,
                        EscrowAction::Membership,
                        escrow::membership_fingerprint(m),
                        &f.code,
                        &f.reason,
                    );
                    t.problems.push(Problem {
                        object_type: Some("group".into()),
                        id: Some(m.group_source_id.clone()),
                        name: Some(m.display_name.clone()),
                        code: f.code.clone(),
                        reason: f.reason.clone(),
                        count: 1,
                    });
                    return;
                }
            }
        }
        self.escrow
            .succeeded((ObjectType::Group, m.group_source_id.clone(), true));
    }
}

/// One action's outcome into the provisioning log.
#[allow(clippy::too_many_arguments)]
fn log_outcome(
    log: &super::provlog::LogSink,
    cycle_id: &str,
    ty: ObjectType,
    source_id: &str,
    name: &str,
    action: &Action,
    result: &Result<Outcome, Failure>,
    started: std::time::Instant,
) {
    use super::provlog::Done;
    let done = match result {
        Ok(Outcome::Created(l)) => Done::Ok {
            verb: "create",
            target_id: Some(&l.target_id),
        },
        Ok(Outcome::Adopted(l)) => Done::Ok {
            verb: "adopt",
            target_id: Some(&l.target_id),
        },
        Ok(Outcome::Updated(l)) => Done::Ok {
            verb: "update",
            target_id: Some(&l.target_id),
        },
        Ok(Outcome::Disabled(l)) => Done::Ok {
            verb: "disable",
            target_id: Some(&l.target_id),
        },
        Ok(Outcome::Deleted) => Done::Ok {
            verb: "delete",
            target_id: None,
        },
        Ok(Outcome::Gone) => Done::Ok {
            verb: "gone",
            target_id: None,
        },
        Err(f) => Done::Failed {
            code: &f.code,
            reason: &f.reason,
            transient: f.reach == Reach::Target,
        },
    };
    let ms = started.elapsed().as_millis() as u64;
    log.exported(cycle_id, ty, source_id, name, action, done, ms);
}

/// Whether `resource` holds another value than `sent` at `path` (a path that does not parse
/// holds nothing; nothing at the path is no other value).
fn answers_other(resource: &Value, path: &str, sent: &Value) -> bool {
    ScimPath::parse(path)
        .ok()
        .and_then(|sp| sp.get(resource))
        .is_some_and(|v| v != sent)
}

/// The store failing is fatal for the cycle: nothing done after it could be remembered.
fn store_failure(e: crate::state::StateError) -> Failure {
    store_failure_because(e.to_string())
}

/// A store failure for `reason`.
fn store_failure_because(reason: String) -> Failure {
    Failure {
        code: "StateStoreError".into(),
        reason,
        reach: Reach::Cycle,
        never_reached: false,
        quarantine_exception: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count's id hash is keyed by the process, not the fixed key of `DefaultHasher`
    /// (with which ids can be made to collide offline), and counts an object once.
    #[test]
    fn objects_are_counted_once_by_a_hash_with_keys_of_its_own() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let fixed = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let mut t = Tally::default();
        let ids: Vec<String> = (0..8).map(|i| format!("user-{i}")).collect();
        assert!(ids
            .iter()
            .any(|id| t.counted_key(ObjectType::User, id).1 != fixed.hash_one(id.as_str())));
        assert!(t.count_once(ObjectType::User, "a"));
        assert!(!t.count_once(ObjectType::User, "a"));
        assert!(t.count_once(ObjectType::Group, "a"));
    }

    /// A create's answer stands against the values sent only where it holds another value:
    /// an answer of the `id` alone, or without the path, does not.
    #[test]
    fn only_another_value_in_the_answer_differs_from_the_one_sent() {
        let answer = serde_json::json!({
            "id": "1",
            "userName": "alice@x",
            "emails": [{"type": "work", "value": "Alice@X"}],
        });
        let sent = |v: &str| Value::String(v.into());
        assert!(!answers_other(&answer, "userName", &sent("alice@x")));
        assert!(answers_other(&answer, "userName", &sent("bob@x")));
        let email = "emails[type eq \"work\"].value";
        assert!(
            answers_other(&answer, email, &sent("alice@x")),
            "normalised"
        );
        assert!(!answers_other(&answer, email, &sent("Alice@X")));
        assert!(
            !answers_other(&answer, "title", &sent("Engineer")),
            "absent"
        );
        assert!(!answers_other(
            &serde_json::json!({"id": "1"}),
            "userName",
            &sent("a")
        ));
    }
}
