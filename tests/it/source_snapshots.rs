//! Source snapshots that survive a restart (issue 12): the Graph source's snapshot and delta
//! links are kept in the state store, so a restarted daemon or a one-shot `sync` (a new
//! source over a reopened store) reads only changes; a stale delta link, an old snapshot or an
//! unreadable record fall back to a full read, which asks Graph's deleted items before it
//! deletes anyone.

use crate::graph_source::{seen, settings, tenant};
use crate::support::common::*;
use graph_emulator::{GraphEmulatorConfig, GraphHandle};
use provisiond::{CycleKind, GraphSettings, GraphSource, JobSpec, SledStore, StateStore};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn job(s: GraphSettings) -> JobSpec {
    job_with_source(Box::new(GraphSource::new(s)))
}

/// Delta reads of users since `clear_requests`: (from scratch, from a delta link).
fn user_delta_reads(g: &GraphHandle) -> (usize, usize) {
    let all = seen(g, "GET /v1.0/users/delta");
    let incremental = all.iter().filter(|r| r.contains("$deltatoken")).count();
    let first_pages = all
        .iter()
        .filter(|r| !r.contains("$deltatoken") && !r.contains("$skiptoken"))
        .count();
    (first_pages, incremental)
}

/// An initial cycle in a store at `dir`, then the store is closed, as a process that ends.
async fn initial(g: &GraphHandle, h: &provisiond::SandboxHandle, dir: &Path) {
    let store = SledStore::open(dir).unwrap();
    let s = run_ok(&job(settings(g)), &store, &client(&h.base_url())).await;
    assert_eq!(s.kind, CycleKind::Initial);
    assert!(store.source_snapshot("test").unwrap().is_some());
}

#[tokio::test]
async fn a_restart_resumes_from_the_persisted_delta_link_and_a_soft_delete_still_disables() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let h = sandbox(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    initial(&g, &h, dir.path()).await;

    // A new process: a new source, the store reopened.
    g.update_user("u-alice", json!({"jobTitle": "Principal Engineer"}));
    g.delete_user("u-bob", false);
    g.clear_requests();
    let store = reopen_store(dir.path()).await;
    let client = client(&h.base_url());
    let job = job(settings(&g));
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.kind, CycleKind::Incremental);
    assert_eq!(
        user_delta_reads(&g),
        (0, 1),
        "only the changes are read: {:?}",
        g.requests()
    );
    assert!(seen(&g, "GET /v1.0/directory/deletedItems").is_empty());
    assert_eq!(s.users.updated, 1, "{s:#?}");
    assert_eq!(s.users.disabled, 1, "bob, soft-deleted: {s:#?}");
    assert_eq!(s.users.deleted, 0, "{s:#?}");
    assert_eq!(user(&h, "alice@contoso.com")["title"], "Principal Engineer");
    assert_eq!(user(&h, "bob@contoso.com")["active"], json!(false));

    // A daemon stores a changed snapshot at most every few minutes: the next cycle's is not
    // stored, and the older pair stays a consistent place to resume from.
    let kept = store.source_snapshot("test").unwrap().unwrap();
    g.update_user("u-grace", json!({"jobTitle": "Staff Engineer"}));
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.updated, 1, "{s:#?}");
    assert_eq!(store.source_snapshot("test").unwrap().unwrap(), kept);
    drop((job, store));

    // Two one-shot syncs in a row keep it disabled, never deleted.
    for _ in 0..2 {
        let store = reopen_store(dir.path()).await;
        g.clear_requests();
        let s = run_ok(&self::job(settings(&g)), &store, &client).await;
        assert_eq!(user_delta_reads(&g).0, 0, "{:?}", g.requests());
        assert_eq!(s.users.deleted, 0, "{s:#?}");
        assert!(try_user(&h, "bob@contoso.com").is_some());
        assert_eq!(user(&h, "grace@contoso.com")["title"], "Staff Engineer");
    }
}

#[tokio::test]
async fn a_stale_delta_link_falls_back_to_a_full_read_that_asks_deleted_items() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let h = sandbox(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    initial(&g, &h, dir.path()).await;

    // While the daemon was down: bob soft-deleted, henry deleted for good, and the delta
    // tokens expired (410 Gone).
    g.delete_user("u-bob", false);
    g.delete_user("u-henry", true);
    g.expire_delta_tokens();
    g.clear_requests();
    let store = reopen_store(dir.path()).await;
    let s = run_ok(&job(settings(&g)), &store, &client(&h.base_url())).await;
    let (full, _) = user_delta_reads(&g);
    assert_eq!(full, 1, "a full read after 410: {:?}", g.requests());
    let asked = seen(&g, "GET /v1.0/directory/deletedItems/microsoft.graph.user/");
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(s.users.disabled, 1, "bob, in the recycle bin: {s:#?}");
    assert_eq!(s.users.deleted, 1, "henry, gone: {s:#?}");
    assert_eq!(user(&h, "bob@contoso.com")["active"], json!(false));
    assert!(try_user(&h, "henry@contoso.com").is_none());
}

#[tokio::test]
async fn a_snapshot_older_than_full_read_interval_is_read_again_whole() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let h = sandbox(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    initial(&g, &h, dir.path()).await;
    let store = reopen_store(dir.path()).await;
    let client = client(&h.base_url());

    // Within the interval: changes only.
    g.clear_requests();
    run_ok(&job(settings(&g)), &store, &client).await;
    assert_eq!(user_delta_reads(&g), (0, 1));

    // Past it (1 s here): the persisted snapshot is not trusted any longer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut short = settings(&g);
    short.full_read_interval = Duration::from_secs(1);
    g.clear_requests();
    let s = run_ok(&job(short), &store, &client).await;
    assert_eq!(user_delta_reads(&g).0, 1, "{:?}", g.requests());
    assert_eq!(s.users.deleted + s.users.disabled, 0, "{s:#?}");
}

#[tokio::test]
async fn an_unreadable_snapshot_record_means_a_full_read_never_deletions() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let h = sandbox(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    initial(&g, &h, dir.path()).await;
    let client = client(&h.base_url());

    let good = reopen_store(dir.path())
        .await
        .source_snapshot("test")
        .unwrap()
        .unwrap();
    let mut other_format = good.clone();
    other_format[6] = 99; // the format byte after the magic
    for bad in [
        b"garbage".to_vec(),
        other_format,
        good[..good.len() / 2].to_vec(),
    ] {
        let store = reopen_store(dir.path()).await;
        store.put_source_snapshot("test", &bad).unwrap();
        g.clear_requests();
        let s = run_ok(&job(settings(&g)), &store, &client).await;
        assert_eq!(user_delta_reads(&g).0, 1, "full read: {:?}", g.requests());
        assert_eq!(s.users.deleted + s.users.disabled, 0, "{s:#?}");
        assert_eq!(s.groups.deleted, 0, "{s:#?}");
        // The full read's snapshot replaced the bad record.
        assert_ne!(store.source_snapshot("test").unwrap().unwrap(), bad);
    }
}
