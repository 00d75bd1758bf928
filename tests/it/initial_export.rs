//! An initial export to an empty target creates without a matching search per object (one
//! unfiltered list proves the collection empty), and every way back to Entra's
//! search-then-create stays: a target that is not empty is searched and its users adopted,
//! and an object that appears after the probe is adopted on the create's conflict.

use crate::support::common::*;
use async_trait::async_trait;
use provisiond::{
    MemoryStore, ObjectType, PatchOp, RequestCounts, ScimClient, StateStore, Target, TargetError,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// More users than the export's probe threshold (32).
const USERS: usize = 40;

fn names() -> Vec<String> {
    names_of(USERS)
}

fn names_of(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i}@contoso.com")).collect()
}

fn directory() -> Value {
    directory_of(USERS)
}

fn directory_of(n: usize) -> Value {
    let names = names_of(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    directory_of_upns(&refs)
}

#[tokio::test]
async fn an_empty_target_gets_creates_without_searches() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.created, USERS as u64, "{s:#?}");
    assert_eq!(
        s.requests,
        requests(1, USERS as u64, 0, 0),
        "one probe of /Users, then only creates: {s:#?}"
    );
    let server = h.request_counts();
    assert_eq!((server.get, server.post), (1, USERS as u64));
    for name in names() {
        assert_eq!(users_named(&h, &name).len(), 1, "{name} exactly once");
    }
    assert_converged(&job, &store, &client).await;
}

/// The export goes a chunk of 4096 actions at a time: the collection is proven empty once, at
/// the start, and the later chunks (which find it holding only what this export created)
/// create without searches too.
#[tokio::test]
async fn the_probe_holds_for_every_chunk_of_the_export() {
    exported_without_searches(4096 + 300).await;
}

/// An initial export of `many` users into an empty sandbox, checked: every user created once,
/// one probe of `/Users` and no search. The store is returned for more checks.
async fn exported_without_searches(many: usize) -> MemoryStore {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&directory_of(many));
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.created, many as u64, "{s:#?}");
    assert_eq!(
        s.requests,
        requests(1, many as u64, 0, 0),
        "one probe of /Users for the whole export: {s:#?}"
    );
    assert_eq!(h.users().len(), many);
    store
}

/// Past 16,384 users and groups the cycle no longer keeps each provision's mapped values from
/// planning: it maps them again a chunk at a time as it sends them. The export is the same:
/// every user created once, one probe, no search.
#[tokio::test]
async fn a_directory_too_large_to_map_once_is_mapped_again_a_chunk_at_a_time() {
    const MANY: usize = 16_384 + 200;
    let store = exported_without_searches(MANY).await;
    assert_eq!(
        store.links("test").unwrap().len(),
        MANY,
        "every link stored"
    );
}

#[tokio::test]
async fn a_target_with_users_is_searched_and_they_are_adopted() {
    let h = sandbox(vec![]).await;
    let seeded = h.insert_user(json!({"userName": "USER7@contoso.com", "active": true}));
    let file = DirFile::new(&directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.created, USERS as u64 - 1, "{s:#?}");
    assert_eq!(s.users.updated, 1, "adopted: {s:#?}");
    assert_eq!(
        s.requests.get,
        1 + USERS as u64,
        "probe, then a search each: {s:#?}"
    );
    let adopted = users_named(&h, "user7@contoso.com");
    assert_eq!(adopted.len(), 1, "adopted, not duplicated: {adopted:#?}");
    assert_eq!(id(&adopted[0]), seeded);
    assert_converged(&job, &store, &client).await;
}

/// A client whose probe always says "empty", as if every object appeared after it.
struct ProbeSaysEmpty(ScimClient);

#[async_trait]
impl Target for ProbeSaysEmpty {
    async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        self.0.find(ty, attr, value).await
    }
    async fn create(&self, ty: ObjectType, body: Value) -> Result<Value, TargetError> {
        self.0.create(ty, body).await
    }
    async fn patch(&self, ty: ObjectType, id: &str, ops: &[PatchOp]) -> Result<(), TargetError> {
        self.0.patch(ty, id, ops).await
    }
    async fn delete(&self, ty: ObjectType, id: &str) -> Result<(), TargetError> {
        self.0.delete(ty, id).await
    }
    async fn collection_empty(&self, _ty: ObjectType) -> Result<bool, TargetError> {
        Ok(true)
    }
    fn request_counts(&self) -> RequestCounts {
        self.0.request_counts()
    }
}

#[tokio::test]
async fn a_user_that_appeared_after_the_probe_is_adopted_on_the_conflict() {
    let h = sandbox(vec![]).await;
    let seeded = h.insert_user(json!({"userName": "user3@contoso.com", "active": true}));
    let file = DirFile::new(&directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let target = ProbeSaysEmpty(client(&h.base_url()));
    let report = run(&job, &store, &target).await;
    let s = &report.summary;
    assert_eq!(s.status, provisiond::CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(
        (s.users.created, s.users.updated),
        (USERS as u64 - 1, 1),
        "{s:#?}"
    );
    assert_eq!(
        s.requests.post, USERS as u64,
        "one create refused with 409: {s:#?}"
    );
    assert_eq!(
        s.requests.get, 1,
        "only the conflicting user searched: {s:#?}"
    );
    let adopted = users_named(&h, "user3@contoso.com");
    assert_eq!(adopted.len(), 1, "{adopted:#?}");
    assert_eq!(id(&adopted[0]), seeded);
    assert!(report
        .actions
        .iter()
        .any(|a| a.action == "adopt" && a.source_id == "u3"));
    assert_converged(&job, &store, &target).await;
}

/// More users than one batch of links (256): the export writes links a batch at a time.
const BATCHED: usize = 300;

/// A client that remembers the target id of every create the target answered, and, before
/// each create, checks the store: every link in it names an object whose create was
/// answered (a link is never written before its write is confirmed).
struct Confirming<'s> {
    client: ScimClient,
    store: &'s MemoryStore,
    confirmed: Mutex<HashSet<String>>,
    /// Creates seen while the store lagged behind the answered creates (links batched).
    lagging: Mutex<usize>,
    /// The answered creates after which the caller drops the cycle, as a crash would.
    crash_after: Option<(usize, Arc<tokio::sync::Notify>)>,
}

impl<'s> Confirming<'s> {
    fn new(client: ScimClient, store: &'s MemoryStore) -> Self {
        Confirming {
            client,
            store,
            confirmed: Mutex::new(HashSet::new()),
            lagging: Mutex::new(0),
            crash_after: None,
        }
    }

    fn check_store(&self) {
        let confirmed = self.confirmed.lock().unwrap();
        let links = self.store.links("test").unwrap();
        for l in &links {
            assert!(
                confirmed.contains(&l.target_id),
                "link of {} stored before its create was answered",
                l.source_id
            );
        }
        if links.len() < confirmed.len() {
            *self.lagging.lock().unwrap() += 1;
        }
    }
}

#[async_trait]
impl Target for Confirming<'_> {
    async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        self.client.find(ty, attr, value).await
    }
    async fn create(&self, ty: ObjectType, body: Value) -> Result<Value, TargetError> {
        self.check_store();
        let created = self.client.create(ty, body).await?;
        let answered = {
            let mut confirmed = self.confirmed.lock().unwrap();
            confirmed.insert(id(&created));
            confirmed.len()
        };
        if let Some((at, crash)) = &self.crash_after {
            if answered >= *at {
                crash.notify_one();
            }
        }
        Ok(created)
    }
    async fn patch(&self, ty: ObjectType, id: &str, ops: &[PatchOp]) -> Result<(), TargetError> {
        self.client.patch(ty, id, ops).await
    }
    async fn delete(&self, ty: ObjectType, id: &str) -> Result<(), TargetError> {
        self.client.delete(ty, id).await
    }
    async fn collection_empty(&self, ty: ObjectType) -> Result<bool, TargetError> {
        self.client.collection_empty(ty).await
    }
    fn request_counts(&self) -> RequestCounts {
        self.client.request_counts()
    }
}

/// Links are written in batches, never before the target answered their object's create,
/// and all of them by the end of the cycle.
#[tokio::test]
async fn batched_links_are_stored_only_after_their_creates_were_answered() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&directory_of(BATCHED));
    let job = job(&file.path);
    let store = MemoryStore::new();
    let target = Confirming::new(client(&h.base_url()), &store);
    let s = run_ok(&job, &store, &target).await;
    assert_eq!(s.users.created, BATCHED as u64, "{s:#?}");
    target.check_store();
    assert!(
        *target.lagging.lock().unwrap() > 0,
        "the links were written one by one, not batched"
    );
    let links = store.links("test").unwrap();
    assert_eq!(
        links.len(),
        BATCHED,
        "every confirmed create is linked at the end"
    );
    assert_converged(&job, &store, &client(&h.base_url())).await;
}

/// A crash in the middle of a batch (the cycle's future dropped: no code of it runs again)
/// loses only links not yet written, of objects the target holds; the next cycle matches
/// them (a search each, the target no longer being empty) and adopts them: no duplicate.
#[tokio::test]
async fn a_crash_mid_batch_loses_only_unwritten_links_which_the_next_cycle_adopts() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&directory_of(BATCHED));
    let job = job(&file.path);
    let store = MemoryStore::new();
    let crash = Arc::new(tokio::sync::Notify::new());
    let mut target = Confirming::new(client(&h.base_url()), &store);
    // Past the first batch, inside the second.
    target.crash_after = Some((280, crash.clone()));
    tokio::select! {
        report = run(&job, &store, &target) => panic!("the cycle ended before the crash: {:#?}", report.summary),
        () = crash.notified() => {}
    }
    // Requests already sent when the cycle died may still be answered.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    target.check_store();
    let stored = store.links("test").unwrap().len();
    let answered = target.confirmed.lock().unwrap().len();
    assert!(
        stored < answered,
        "some confirmed links were still waiting for their batch ({stored} of {answered})"
    );
    let in_target = h.users().len();
    let s = run_ok(&job, &store, &client(&h.base_url())).await;
    assert_eq!(
        s.users.updated,
        (in_target - stored) as u64,
        "every created but unlinked user adopted: {s:#?}"
    );
    assert_eq!(s.users.created, (BATCHED - in_target) as u64, "{s:#?}");
    for name in names_of(BATCHED) {
        assert_eq!(users_named(&h, &name).len(), 1, "{name} exactly once");
    }
    assert_eq!(store.links("test").unwrap().len(), BATCHED);
    assert_converged(&job, &store, &client(&h.base_url())).await;
}
