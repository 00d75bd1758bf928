//! Helpers shared by the integration tests: a directory file in a temp dir, a job reading it,
//! a SCIM client with tiny backoffs, cycle runners and sandbox inspection.
//!
//! Every server these tests talk to listens on 127.0.0.1.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use async_trait::async_trait;
use provisiond::FileSource;
use provisiond::Mappings;
use provisiond::NullPolicy;
use provisiond::ObjectType;
use provisiond::ScopeSettings;
use provisiond::Source;
use provisiond::StateStore;
use provisiond::{run_cycle, CycleOptions, CycleReport, JobSpec};
use provisiond::{spawn_sandbox, FaultRule, SandboxConfig, SandboxHandle};
use provisiond::{CycleStatus, CycleSummary, GroupCounts, MembershipCounts, UserCounts};
use provisiond::{PatchOp, RequestCounts, ScimClient, Target, TargetError, TargetSettings};
use secrecy::SecretString;
use serde_json::{json, Value};

/// The bearer token every sandbox of these tests requires.
pub const TOKEN: &str = "test-token-0123456789";

pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// A directory export file in its own temp dir (removed on drop).
pub struct DirFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl DirFile {
    pub fn new(directory: &Value) -> DirFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.json");
        let f = DirFile { _dir: dir, path };
        f.write(directory);
        f
    }

    /// Replace the directory (what an admin's export job does between cycles).
    pub fn write(&self, directory: &Value) {
        self.write_raw(serde_json::to_vec_pretty(directory).unwrap().as_slice());
    }

    pub fn write_raw(&self, bytes: &[u8]) {
        std::fs::write(&self.path, bytes).unwrap();
    }
}

/// A job reading `path` with the generic SCIM defaults and the default (assigned) scope.
/// Reopen a sled store this process has just dropped. sled lets go of its lock file only when
/// the last reference to its page cache goes, and its own I/O threads hold one for a moment
/// after `Db` is dropped (a buffer write that has signalled completion but not yet returned):
/// on a loaded machine an immediate reopen found the store "still locked". Waits for that
/// release, bounded, and fails naming the cause. Not for a store another handle still holds.
pub async fn reopen_store(dir: &Path) -> provisiond::SledStore {
    use provisiond::{SledStore, StateError};
    let limit = Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match SledStore::open(dir) {
            Ok(store) => return store,
            Err(StateError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!(
                "reopening the sled store {} (waited up to {limit:?} for the dropped handle's \
                 lock to be released): {e}",
                dir.display()
            ),
        }
    }
}

pub fn job(path: &Path) -> JobSpec {
    job_with_source(Box::new(FileSource::new(path.to_path_buf())))
}

pub fn job_with_source(source: Box<dyn Source>) -> JobSpec {
    JobSpec {
        name: "test".into(),
        source,
        scope: ScopeSettings::default(),
        mappings: Mappings::generic_scim().unwrap(),
        null_values: NullPolicy::Leave,
        concurrency: 4,
        member_batch: 100,
        safety: Default::default(),
    }
}

/// A sandbox on a free loopback port requiring [`TOKEN`], with `faults` from the start.
pub async fn sandbox(faults: Vec<FaultRule>) -> SandboxHandle {
    sandbox_with(SandboxConfig {
        token: Some(SecretString::from(TOKEN)),
        faults,
        ..SandboxConfig::default()
    })
    .await
}

pub async fn sandbox_with(config: SandboxConfig) -> SandboxHandle {
    spawn_sandbox("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// Client settings for tests: tiny backoffs, short timeouts, `Retry-After` honoured up to 3 s.
pub fn settings(base_url: &str, token: &str) -> TargetSettings {
    let mut s = TargetSettings::new(
        url::Url::parse(base_url).unwrap(),
        SecretString::from(token.to_string()),
    );
    s.concurrency = 4;
    s.connect_timeout = Duration::from_secs(2);
    s.request_timeout = Duration::from_secs(5);
    s.max_retries = 4;
    s.backoff_base = Duration::from_millis(2);
    s.backoff_max = Duration::from_millis(20);
    s.max_retry_after = Duration::from_secs(3);
    s
}

pub fn client(base_url: &str) -> ScimClient {
    ScimClient::new(settings(base_url, TOKEN)).unwrap()
}

pub fn client_with(settings: TargetSettings) -> ScimClient {
    ScimClient::new(settings).unwrap()
}

/// One cycle with default options, recording actions.
pub async fn run(job: &JobSpec, store: &dyn StateStore, target: &dyn Target) -> CycleReport {
    let opts = CycleOptions {
        record_actions: true,
        ..CycleOptions::default()
    };
    run_cycle(job, store, target, &opts, &CancellationToken::new()).await
}

/// One cycle, asserting it succeeded without problems; returns the summary.
pub async fn run_ok(job: &JobSpec, store: &dyn StateStore, target: &dyn Target) -> CycleSummary {
    let report = run(job, store, target).await;
    assert_eq!(
        report.summary.status,
        CycleStatus::Succeeded,
        "cycle did not succeed: {:#?}",
        report.summary
    );
    report.summary
}

/// Runs another cycle and asserts the target is converged: no writing request at all.
pub async fn assert_converged(job: &JobSpec, store: &dyn StateStore, target: &dyn Target) {
    let s = run(job, store, target).await.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(s.requests.writes(), 0, "not converged: {s:#?}");
    assert_eq!(
        s.users.created + s.users.updated + s.users.disabled + s.users.deleted,
        0,
        "{s:#?}"
    );
    assert_eq!(
        s.groups.created + s.groups.updated + s.groups.deleted,
        0,
        "{s:#?}"
    );
    assert_eq!(s.memberships, MembershipCounts::default(), "{s:#?}");
}

/// Counts in struct form, for compact expectations.
pub fn users(
    created: u64,
    updated: u64,
    disabled: u64,
    deleted: u64,
    unchanged: u64,
    skipped: u64,
    failed: u64,
) -> UserCounts {
    UserCounts {
        created,
        updated,
        disabled,
        deleted,
        unchanged,
        skipped,
        failed,
    }
}

pub fn groups(
    created: u64,
    updated: u64,
    deleted: u64,
    unchanged: u64,
    skipped: u64,
    failed: u64,
) -> GroupCounts {
    GroupCounts {
        created,
        updated,
        deleted,
        unchanged,
        skipped,
        failed,
    }
}

pub fn memberships(added: u64, removed: u64) -> MembershipCounts {
    MembershipCounts { added, removed }
}

pub fn requests(get: u64, post: u64, patch: u64, delete: u64) -> RequestCounts {
    RequestCounts {
        get,
        post,
        put: 0,
        patch,
        delete,
    }
}

/// The sandbox users whose userName equals `name` case-insensitively.
pub fn users_named(h: &SandboxHandle, name: &str) -> Vec<Value> {
    h.users()
        .into_iter()
        .filter(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// The one sandbox user with this userName (case-insensitive); panics on none or several.
pub fn user(h: &SandboxHandle, name: &str) -> Value {
    let mut found = users_named(h, name);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one user {name:?}, found {found:#?}"
    );
    found.remove(0)
}

pub fn try_user(h: &SandboxHandle, name: &str) -> Option<Value> {
    let mut found = users_named(h, name);
    assert!(found.len() <= 1, "duplicate users {name:?}: {found:#?}");
    found.pop()
}

/// The one sandbox group with this displayName; panics on none or several.
pub fn group(h: &SandboxHandle, name: &str) -> Value {
    let mut found: Vec<Value> = h
        .groups()
        .into_iter()
        .filter(|g| g["displayName"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one group {name:?}, found {found:#?}"
    );
    found.remove(0)
}

pub fn try_group(h: &SandboxHandle, name: &str) -> Option<Value> {
    let mut found: Vec<Value> = h
        .groups()
        .into_iter()
        .filter(|g| g["displayName"] == name)
        .collect();
    assert!(found.len() <= 1, "duplicate groups {name:?}: {found:#?}");
    found.pop()
}

pub fn id(resource: &Value) -> String {
    resource["id"].as_str().unwrap().to_string()
}

/// A group's member ids.
pub fn member_ids(group: &Value) -> BTreeSet<String> {
    group["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| m["value"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The target ids of the users named, as a set (to compare with [`member_ids`]).
pub fn ids_of(h: &SandboxHandle, names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| id(&user(h, n))).collect()
}

/// A resource without the server-managed `id` and `meta`, for exact comparisons.
pub fn without_meta(resource: &Value) -> Value {
    let mut r = resource.clone();
    if let Some(m) = r.as_object_mut() {
        m.remove("id");
        m.remove("meta");
    }
    r
}

/// A user of the test directory with every default-mapped attribute.
pub fn full_user(id: &str, first: &str, last: &str, extra: Value) -> Value {
    let nick = first.to_lowercase();
    let mut u = json!({
        "id": id,
        "userPrincipalName": format!("{nick}@contoso.com"),
        "mail": format!("{nick}@contoso.com"),
        "givenName": first,
        "surname": last,
        "displayName": format!("{first} {last}"),
        "accountEnabled": true,
        "jobTitle": "Engineer",
        "department": "R&D",
        "mailNickname": nick,
    });
    if let (Some(u), Some(extra)) = (u.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            u.insert(k.clone(), v.clone());
        }
    }
    u
}

/// The directory most tests start from.
///
/// In scope: alice (assigned directly, manager bob, every default attribute), bob and grace
/// (direct members of the assigned group Engineering), henry (assigned directly), the
/// assigned groups Engineering and Operations. Out of scope: carol (disabled), dave
/// (soft-deleted), erin ("Default Access" only), frank (member of Platform, which is nested
/// in Engineering but not assigned: no nested expansion), and Platform itself.
pub fn base_directory() -> Value {
    json!({
        "users": [
            full_user("u-alice", "Alice", "Liddell", json!({
                "manager": "u-bob", "preferredLanguage": "en-GB", "city": "Oxford",
                "country": "GB", "telephoneNumber": "+44 1865 000000", "mobile": "+44 7700 900000",
                "employeeId": "1001"})),
            full_user("u-bob", "Bob", "Builder", json!({"department": "Ops", "employeeId": "1002"})),
            full_user("u-grace", "Grace", "Hopper", json!({"employeeId": "1003"})),
            full_user("u-henry", "Henry", "Higgins", json!({"employeeId": "1004"})),
            full_user("u-carol", "Carol", "Danvers", json!({"accountEnabled": false})),
            full_user("u-dave", "Dave", "Bowman", json!({"deletedDateTime": "2026-01-01T00:00:00Z"})),
            full_user("u-erin", "Erin", "Brockovich", json!({})),
            full_user("u-frank", "Frank", "Poole", json!({})),
        ],
        "groups": [
            {"id": "g-eng", "displayName": "Engineering", "mailNickname": "eng",
             "members": ["u-bob", "u-grace", "g-platform", "u-carol", "u-dave"]},
            {"id": "g-platform", "displayName": "Platform", "members": ["u-frank"]},
            {"id": "g-ops", "displayName": "Operations", "members": ["u-alice", "u-henry"]},
        ],
        "assignments": [
            {"principalId": "u-alice"},
            {"principalId": "u-henry", "role": "User"},
            {"principalId": "g-eng", "role": "User"},
            {"principalId": "g-ops"},
            {"principalId": "u-carol"},
            {"principalId": "u-dave"},
            {"principalId": "u-erin", "role": "Default Access"},
        ],
    })
}

/// A directory of one assigned user per name, as its `userPrincipalName` (ids `u0`, `u1`, …),
/// with no group.
pub fn directory_of_upns(names: &[&str]) -> Value {
    let users: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"id": format!("u{i}"), "userPrincipalName": n, "displayName": format!("User {i}")}))
        .collect();
    let assignments: Vec<Value> = (0..names.len())
        .map(|i| json!({"principalId": format!("u{i}")}))
        .collect();
    json!({"users": users, "groups": [], "assignments": assignments})
}

/// Edit a directory in place: `f` gets the whole document.
pub fn edit(mut directory: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut directory);
    directory
}

/// The user with source id `id` in a directory document.
pub fn user_mut<'a>(directory: &'a mut Value, id: &str) -> &'a mut Value {
    directory["users"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|u| u["id"] == id)
        .unwrap_or_else(|| panic!("no user {id}"))
}

pub fn group_mut<'a>(directory: &'a mut Value, id: &str) -> &'a mut Value {
    directory["groups"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|g| g["id"] == id)
        .unwrap_or_else(|| panic!("no group {id}"))
}

pub fn remove_user(directory: &mut Value, id: &str) {
    directory["users"]
        .as_array_mut()
        .unwrap()
        .retain(|u| u["id"] != id);
}

pub fn remove_assignment(directory: &mut Value, principal: &str) {
    directory["assignments"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["principalId"] != principal);
}

/// Send one raw request to a server with the test token (to change the target behind
/// provisiond's back).
pub async fn raw(method: reqwest::Method, url: String, body: Option<Value>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    req.send().await.unwrap()
}

/// One request the export asked a target for, as [`Recorder`] saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Find(ObjectType, String, Value),
    Create(ObjectType, Value),
    Patch(ObjectType, String, Vec<PatchOp>),
    Delete(ObjectType, String),
}

/// A [`Target`] that forwards to another and records what was asked: what the exporter sends,
/// operation by operation, whatever the server makes of it.
pub struct Recorder<T> {
    pub inner: T,
    pub sent: Mutex<Vec<Sent>>,
}

impl<T> Recorder<T> {
    pub fn new(inner: T) -> Self {
        Recorder {
            inner,
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Everything recorded so far, and forget it.
    pub fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }

    fn push(&self, s: Sent) {
        self.sent.lock().unwrap().push(s);
    }
}

#[async_trait]
impl<T: Target> Target for Recorder<T> {
    async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        self.push(Sent::Find(ty, attr.to_string(), value.clone()));
        self.inner.find(ty, attr, value).await
    }
    async fn create(&self, ty: ObjectType, body: Value) -> Result<Value, TargetError> {
        self.push(Sent::Create(ty, body.clone()));
        self.inner.create(ty, body).await
    }
    async fn patch(&self, ty: ObjectType, id: &str, ops: &[PatchOp]) -> Result<(), TargetError> {
        self.push(Sent::Patch(ty, id.to_string(), ops.to_vec()));
        self.inner.patch(ty, id, ops).await
    }
    async fn delete(&self, ty: ObjectType, id: &str) -> Result<(), TargetError> {
        self.push(Sent::Delete(ty, id.to_string()));
        self.inner.delete(ty, id).await
    }
    fn request_counts(&self) -> RequestCounts {
        self.inner.request_counts()
    }
}

/// `replace title "CTO"`: one PATCH operation as text.
pub fn describe(op: &PatchOp) -> String {
    let kind = format!("{:?}", op.kind).to_lowercase();
    match &op.value {
        Some(v) => format!("{kind} {} {v}", op.path.as_deref().unwrap_or("")),
        None => format!("{kind} {}", op.path.as_deref().unwrap_or("")),
    }
}

/// The PATCH operations sent to users, as text, sorted.
pub fn user_patch_ops(sent: &[Sent]) -> Vec<String> {
    let mut ops: Vec<String> = sent
        .iter()
        .filter_map(|s| match s {
            Sent::Patch(ObjectType::User, _, ops) => {
                Some(ops.iter().map(describe).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    ops.sort();
    ops
}
