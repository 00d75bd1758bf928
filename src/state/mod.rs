//! The state store: what provisiond remembers between cycles. Behind a trait so the planner's
//! tests run in memory and the store can change without touching the cycle.
//!
//! Per job: one [`Link`] per provisioned object (source anchor ↔ target id, matching value,
//! last exported values) and a [`JobMeta`] (watermark, mapping fingerprint, last cycle).
//! Every record carries the schema version it was written with.

pub(crate) mod memory;
pub(crate) mod outbox;
pub(crate) mod safety;
pub(crate) mod sled_store;

use crate::model::ObjectType;
use crate::summary::CycleSummary;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub(crate) use crate::attrs::Exported;
/// Links are domain types (the planner reads them); the store persists them.
pub(crate) use crate::model::{Link, LinkIndex, LinkIndexBuilder};
pub use memory::MemoryStore;
pub(crate) use outbox::{OutboxMessage, ReportedFailures, NOTIFY_RECORD_VERSION, OUTBOX_CAPACITY};
pub use safety::{
    EscrowAction, EscrowEntry, Quarantine, QuarantineError, QuarantineReason, StagedAction,
    StagedDelete,
};
pub use sled_store::SledStore;
/// sled's page-cache cap for one-shot commands (the daemon opens the store with more).
pub(crate) use sled_store::CACHE_BYTES as STORE_CACHE_BYTES;

/// The version of the persisted records. Bump it with a migration in `sled_store`.
///
/// 3 added quarantine, escrow and staged deletions: a provisiond that predates them would
/// send deletions an admin has not allowed, so it must refuse such a store.
/// 4 appended the input digest to a link's exported values (`attrs::exported`): a provisiond
/// that predates it would take such a link for a damaged record, so it refuses the store by
/// its version instead, naming it. Stores of 3 are read as they are (no digest: the object is
/// mapped) and marked 4 when opened.
pub(crate) const SCHEMA_VERSION: u32 = 4;

/// Per-job memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobMeta {
    /// The source's position after the last completed cycle; none = next cycle is initial.
    #[serde(default)]
    pub watermark: Option<String>,
    /// Fingerprint of the mappings and scope the watermark was reached with.
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub last_cycle: Option<CycleSummary>,
    #[serde(default)]
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    /// The job's quarantine, if it is in one.
    #[serde(default)]
    pub quarantine: Option<Quarantine>,
    /// Paused by an admin (`provisiond pause`): no cycle starts until `resume`.
    #[serde(default)]
    pub paused: bool,
    /// Disabled after 28 days in quarantine: no cycle starts until `restart`.
    #[serde(default)]
    pub disabled: bool,
    /// Set by `provisiond allow-deletes`: the next cycle sends the staged deletions that it
    /// still plans, then clears it.
    #[serde(default)]
    pub allow_deletes: bool,
    /// The first and the last cycle that found nothing to do (Graph's steady-state times).
    #[serde(default)]
    pub steady_state_first: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub steady_state_last: Option<chrono::DateTime<chrono::Utc>>,
    /// Which target and source the links belong to; a cycle refuses when the config names
    /// another (the links would be wrong there).
    #[serde(default)]
    pub binding: Option<Binding>,
    /// How many links (users and groups) the job has, as of its last committed cycle: the
    /// deletion threshold of a delta cycle, which loads only the links it concerns, counts
    /// from it. Set by every full cycle (the count of the links it loaded), moved by each
    /// delta cycle by the links it created and removed; `None` (an older record) makes the
    /// next cycle a full one.
    #[serde(default)]
    pub linked: Option<u64>,
}

/// The target and source a job's links were made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The target's base URL, without credentials.
    pub target_url: String,
    /// The source's identity (file path, LDAP URL and base, Graph tenant and app).
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path} is in use by another process{}", holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked {
        path: PathBuf,
        holder: Option<String>,
    },
    #[error("state store {path}: {message}")]
    Storage { path: PathBuf, message: String },
    #[error("state store {path}: record {key:?} is unreadable: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("state store {path} was written by a newer provisiond (schema {found}, this one reads up to {SCHEMA_VERSION})")]
    TooNew { path: PathBuf, found: u32 },
}

/// A deferred [`StateStore::links`], to run on another thread, indexed as it loads.
pub(crate) type LinksLoader = Box<dyn FnOnce() -> Result<LinkIndex, StateError> + Send>;

/// Writes batches of one job's links (see [`StateStore::links_writer`]).
pub(crate) type LinksWriter = Box<dyn FnMut(&[Link]) -> Result<(), StateError> + Send>;

/// Persistence of links and job metadata.
pub trait StateStore: Send + Sync {
    fn links(&self, job: &str) -> Result<Vec<Link>, StateError>;
    /// The job's links, loaded into `index` when the returned closure runs: a cycle loads
    /// them on the blocking pool while it reads the source. The default loads them here and
    /// now. The index is the crate's own type: a store outside the crate keeps the default.
    #[allow(private_interfaces)]
    fn links_loader(&self, job: &str, mut index: LinkIndexBuilder) -> LinksLoader {
        let links = self.links(job).map(|links| {
            for l in &links {
                index.push(l);
            }
            index.build()
        });
        Box::new(move || links)
    }
    /// Writes the job's links as [`StateStore::put_links`] does, from a thread of its own:
    /// the export hands its batches of confirmed links to one, so that storing them does not
    /// hold up the task that sends the requests. `None` (the default): the caller writes them
    /// with `put_links` itself.
    fn links_writer(&self, _job: &str) -> Option<LinksWriter> {
        None
    }
    /// The links of `ids` of type `ty` that exist, looked up by key: a delta cycle loads
    /// only the links of the objects it concerns, not every link of the job. The default
    /// filters [`StateStore::links`] (stores where that is cheap).
    fn links_for(&self, job: &str, ty: ObjectType, ids: &[&str]) -> Result<Vec<Link>, StateError> {
        let wanted: std::collections::HashSet<&str> = ids.iter().copied().collect();
        Ok(self
            .links(job)?
            .into_iter()
            .filter(|l| l.object_type == ty && wanted.contains(l.source_id.as_str()))
            .collect())
    }
    fn put_link(&self, job: &str, link: &Link) -> Result<(), StateError>;
    /// Several links written together, in order (a later link of the same key wins): the
    /// export gathers the links of writes the target has confirmed and writes them a batch
    /// at a time. The default writes them one by one.
    fn put_links(&self, job: &str, links: &[Link]) -> Result<(), StateError> {
        links.iter().try_for_each(|l| self.put_link(job, l))
    }
    fn remove_link(&self, job: &str, ty: ObjectType, source_id: &str) -> Result<(), StateError>;
    fn meta(&self, job: &str) -> Result<JobMeta, StateError>;
    fn put_meta(&self, job: &str, meta: &JobMeta) -> Result<(), StateError>;
    /// Make everything written so far durable. Called before a watermark advances.
    fn flush(&self) -> Result<(), StateError>;
    /// Forgets every link of the job (`restart --reset full`): objects are matched again.
    fn clear_links(&self, job: &str) -> Result<(), StateError>;
    /// The job's escrowed actions.
    fn escrows(&self, job: &str) -> Result<Vec<EscrowEntry>, StateError>;
    /// Records (or replaces) the escrow of one object's object or reference failure.
    fn put_escrow(&self, job: &str, entry: &EscrowEntry) -> Result<(), StateError>;
    /// Drops one object's object (`reference = false`) or reference escrow.
    fn remove_escrow(
        &self,
        job: &str,
        ty: ObjectType,
        source_id: &str,
        reference: bool,
    ) -> Result<(), StateError>;
    /// Drops every escrow of the job.
    fn clear_escrows(&self, job: &str) -> Result<(), StateError>;
    /// The deletions held back by the deletion threshold.
    fn staged_deletes(&self, job: &str) -> Result<Vec<StagedDelete>, StateError>;
    /// Replaces the job's staged deletions (empty: none).
    fn set_staged_deletes(&self, job: &str, staged: &[StagedDelete]) -> Result<(), StateError>;
    /// The notification emails waiting for the mail server (tree `outbox`), oldest first.
    fn outbox(&self) -> Result<Vec<OutboxMessage>, StateError>;
    /// Queues a message, giving it the next id; when more than `capacity` are waiting, the
    /// oldest are dropped. Returns the new id and how many were dropped.
    fn push_outbox(&self, msg: OutboxMessage, capacity: usize) -> Result<(u64, usize), StateError>;
    /// Records a queued message's delivery attempt; a message no longer queued (delivered or
    /// dropped meanwhile) stays gone.
    fn update_outbox(&self, msg: &OutboxMessage) -> Result<(), StateError>;
    /// Removes a delivered message.
    fn remove_outbox(&self, id: u64) -> Result<(), StateError>;
    /// The failures already reported for the job (tree `notified`); empty when none.
    fn reported_failures(&self, job: &str) -> Result<ReportedFailures, StateError>;
    /// Replaces the job's record of reported failures.
    fn put_reported_failures(&self, job: &str, rec: &ReportedFailures) -> Result<(), StateError>;
    /// The source snapshot kept for the job (see [`crate::source::Source::snapshot`]): the
    /// bytes of the last complete record, or none. A damaged record is an error naming it.
    fn source_snapshot(&self, job: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Replaces the job's source snapshot, durably and atomically: a crash at any point
    /// leaves the previous record or this one, never a mix.
    fn put_source_snapshot(&self, job: &str, bytes: &[u8]) -> Result<(), StateError>;
    /// Number of links per type, for `status`.
    fn link_counts(&self, job: &str) -> Result<(usize, usize), StateError> {
        let links = self.links(job)?;
        let users = links
            .iter()
            .filter(|l| l.object_type == ObjectType::User)
            .count();
        Ok((users, links.len() - users))
    }
}
