//! An initial export to an empty target creates without a matching search per object (one
//! unfiltered list proves the collection empty), and every way back to Entra's
//! search-then-create stays: a target that is not empty is searched and its users adopted,
//! and an object that appears after the probe is adopted on the create's conflict.

use crate::support::common::*;
use async_trait::async_trait;
use provisiond::{
    MemoryStore, ObjectType, PatchOp, RequestCounts, ScimClient, Target, TargetError,
};
use serde_json::{json, Value};

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
    const MANY: usize = 4096 + 300;
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&directory_of(MANY));
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.created, MANY as u64, "{s:#?}");
    assert_eq!(
        s.requests,
        requests(1, MANY as u64, 0, 0),
        "one probe of /Users for the whole export: {s:#?}"
    );
    assert_eq!(h.users().len(), MANY);
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
