//! An in-memory [`StateStore`] for tests and dry runs.

use super::{
    EscrowEntry, JobMeta, Link, OutboxMessage, ReportedFailures, StagedDelete, StateError,
    StateStore,
};
use crate::model::ObjectType;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Tests: every flush waits while a test holds this for writing (a stalled disk).
    #[cfg(test)]
    pub(crate) flush_gate: std::sync::RwLock<()>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    links: BTreeMap<(String, ObjectType, String), Link>,
    meta: BTreeMap<String, JobMeta>,
    escrows: BTreeMap<(String, ObjectType, String, bool), EscrowEntry>,
    staged: BTreeMap<String, Vec<StagedDelete>>,
    outbox: BTreeMap<u64, OutboxMessage>,
    next_outbox_id: u64,
    reported: BTreeMap<String, ReportedFailures>,
    snapshots: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of a job's links, meta, escrows and staged deletions, to seed another store
    /// (dry runs plan on a copy).
    pub fn from_store(store: &dyn StateStore, job: &str) -> Result<Self, StateError> {
        let m = MemoryStore::new();
        for l in store.links(job)? {
            m.put_link(job, &l)?;
        }
        m.put_meta(job, &store.meta(job)?)?;
        for e in store.escrows(job)? {
            m.put_escrow(job, &e)?;
        }
        m.set_staged_deletes(job, &store.staged_deletes(job)?)?;
        // A dry run may continue from the kept source snapshot; an unreadable one only
        // means a full read, as in a real cycle.
        if let Ok(Some(b)) = store.source_snapshot(job) {
            m.put_source_snapshot(job, &b)?;
        }
        Ok(m)
    }
}

impl StateStore for MemoryStore {
    fn source_snapshot(&self, job: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.lock().snapshots.get(job).cloned())
    }
    fn put_source_snapshot(&self, job: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.lock()
            .snapshots
            .insert(job.to_string(), bytes.to_vec());
        Ok(())
    }
    fn links(&self, job: &str) -> Result<Vec<Link>, StateError> {
        Ok(self
            .lock()
            .links
            .iter()
            .filter(|((j, _, _), _)| j == job)
            .map(|(_, l)| l.clone())
            .collect())
    }
    fn put_link(&self, job: &str, link: &Link) -> Result<(), StateError> {
        self.lock().links.insert(
            (job.to_string(), link.object_type, link.source_id.clone()),
            link.clone(),
        );
        Ok(())
    }
    fn put_links(&self, job: &str, links: &[Link]) -> Result<(), StateError> {
        let mut state = self.lock();
        for link in links {
            state.links.insert(
                (job.to_string(), link.object_type, link.source_id.clone()),
                link.clone(),
            );
        }
        Ok(())
    }
    fn remove_link(&self, job: &str, ty: ObjectType, source_id: &str) -> Result<(), StateError> {
        self.lock()
            .links
            .remove(&(job.to_string(), ty, source_id.to_string()));
        Ok(())
    }
    fn meta(&self, job: &str) -> Result<JobMeta, StateError> {
        Ok(self.lock().meta.get(job).cloned().unwrap_or_default())
    }
    fn put_meta(&self, job: &str, meta: &JobMeta) -> Result<(), StateError> {
        self.lock().meta.insert(job.to_string(), meta.clone());
        Ok(())
    }
    fn flush(&self) -> Result<(), StateError> {
        #[cfg(test)]
        drop(self.flush_gate.read().unwrap_or_else(|e| e.into_inner()));
        Ok(())
    }
    fn clear_links(&self, job: &str) -> Result<(), StateError> {
        self.lock().links.retain(|(j, _, _), _| j != job);
        Ok(())
    }
    fn escrows(&self, job: &str) -> Result<Vec<EscrowEntry>, StateError> {
        Ok(self
            .lock()
            .escrows
            .iter()
            .filter(|((j, ..), _)| j == job)
            .map(|(_, e)| e.clone())
            .collect())
    }
    fn put_escrow(&self, job: &str, entry: &EscrowEntry) -> Result<(), StateError> {
        let key = (
            job.to_string(),
            entry.object_type,
            entry.source_id.clone(),
            entry.is_reference(),
        );
        self.lock().escrows.insert(key, entry.clone());
        Ok(())
    }
    fn remove_escrow(
        &self,
        job: &str,
        ty: ObjectType,
        source_id: &str,
        reference: bool,
    ) -> Result<(), StateError> {
        let key = (job.to_string(), ty, source_id.to_string(), reference);
        self.lock().escrows.remove(&key);
        Ok(())
    }
    fn clear_escrows(&self, job: &str) -> Result<(), StateError> {
        self.lock().escrows.retain(|(j, ..), _| j != job);
        Ok(())
    }
    fn staged_deletes(&self, job: &str) -> Result<Vec<StagedDelete>, StateError> {
        Ok(self.lock().staged.get(job).cloned().unwrap_or_default())
    }
    fn set_staged_deletes(&self, job: &str, staged: &[StagedDelete]) -> Result<(), StateError> {
        self.lock().staged.insert(job.to_string(), staged.to_vec());
        Ok(())
    }
    fn outbox(&self) -> Result<Vec<OutboxMessage>, StateError> {
        Ok(self.lock().outbox.values().cloned().collect())
    }
    fn push_outbox(
        &self,
        mut msg: OutboxMessage,
        capacity: usize,
    ) -> Result<(u64, usize), StateError> {
        let mut inner = self.lock();
        inner.next_outbox_id += 1;
        let id = inner.next_outbox_id;
        msg.id = id;
        inner.outbox.insert(id, msg);
        let mut dropped = 0;
        while inner.outbox.len() > capacity {
            inner.outbox.pop_first();
            dropped += 1;
        }
        Ok((id, dropped))
    }
    fn update_outbox(&self, msg: &OutboxMessage) -> Result<(), StateError> {
        if let Some(m) = self.lock().outbox.get_mut(&msg.id) {
            *m = msg.clone();
        }
        Ok(())
    }
    fn remove_outbox(&self, id: u64) -> Result<(), StateError> {
        self.lock().outbox.remove(&id);
        Ok(())
    }
    fn reported_failures(&self, job: &str) -> Result<ReportedFailures, StateError> {
        Ok(self.lock().reported.get(job).cloned().unwrap_or_default())
    }
    fn put_reported_failures(&self, job: &str, rec: &ReportedFailures) -> Result<(), StateError> {
        self.lock().reported.insert(job.to_string(), rec.clone());
        Ok(())
    }
}

/// For tests of code that must not hold the async worker while the store is slow.
#[cfg(test)]
pub(crate) mod test_support {
    use super::MemoryStore;

    /// Runs `task` on a one-worker runtime while every flush of `store` waits (a stalled
    /// disk), asserting that it waited and that the runtime's other tasks went on (see
    /// [`crate::util::blocking::test_support::assert_worker_free_while`]); then lets the
    /// flushes through and returns what the task returned.
    pub(crate) fn with_stalled_flushes<T: Send + 'static>(
        store: &MemoryStore,
        what: &str,
        task: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let stalled = store.flush_gate.write().unwrap();
        crate::util::blocking::test_support::assert_worker_free_while(what, task, || drop(stalled))
    }
}
