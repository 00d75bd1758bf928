//! The state store: what provisiond remembers between cycles. Behind a trait so the planner's
//! tests run in memory and the store can change without touching the cycle.
//!
//! Per job: one [`Link`] per provisioned object (source anchor ↔ target id, matching value,
//! last exported values) and a [`JobMeta`] (watermark, mapping fingerprint, last cycle).
//! Every record carries the schema version it was written with.

pub mod memory;
pub mod sled_store;

use crate::model::ObjectType;
use crate::summary::CycleSummary;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::attrs::Exported;
/// Links are domain types (the planner reads them); the store persists them.
pub use crate::model::{Link, LinkIndex};
pub use memory::MemoryStore;
pub use sled_store::SledStore;

/// The version of the persisted records. Bump it with a migration in `sled_store`.
pub const SCHEMA_VERSION: u32 = 2;

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

/// A deferred [`StateStore::links`], to run on another thread.
pub type LinksLoader = Box<dyn FnOnce() -> Result<Vec<Link>, StateError> + Send>;

/// Persistence of links and job metadata.
pub trait StateStore: Send + Sync {
    fn links(&self, job: &str) -> Result<Vec<Link>, StateError>;
    /// The job's links, loaded when the returned closure runs: a cycle loads them on the
    /// blocking pool while it reads the source. The default loads them here and now.
    fn links_loader(&self, job: &str) -> LinksLoader {
        let links = self.links(job);
        Box::new(move || links)
    }
    fn put_link(&self, job: &str, link: &Link) -> Result<(), StateError>;
    fn remove_link(&self, job: &str, ty: ObjectType, source_id: &str) -> Result<(), StateError>;
    fn meta(&self, job: &str) -> Result<JobMeta, StateError>;
    fn put_meta(&self, job: &str, meta: &JobMeta) -> Result<(), StateError>;
    /// Make everything written so far durable. Called before a watermark advances.
    fn flush(&self) -> Result<(), StateError>;
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
