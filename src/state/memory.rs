//! An in-memory [`StateStore`] for tests and dry runs.

use super::{JobMeta, Link, StateError, StateStore};
use crate::model::ObjectType;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    links: BTreeMap<(String, ObjectType, String), Link>,
    meta: BTreeMap<String, JobMeta>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of a job's links and meta, to seed another store (dry runs plan on a copy).
    pub fn from_store(store: &dyn StateStore, job: &str) -> Result<Self, StateError> {
        let m = MemoryStore::new();
        for l in store.links(job)? {
            m.put_link(job, &l)?;
        }
        m.put_meta(job, &store.meta(job)?)?;
        Ok(m)
    }
}

impl StateStore for MemoryStore {
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
        Ok(())
    }
}
