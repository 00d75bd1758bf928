//! Issue 9: a job's target or source changed. The store remembers which target and source
//! its links belong to; a cycle against another refuses before any request, naming both and
//! the command that re-matches everything, unless `previous_url` says the move is intended.

use crate::support::common::*;
use provisiond::CycleStatus;
use provisiond::{MemoryStore, StateStore};

#[tokio::test]
async fn another_target_is_refused_before_any_request() {
    let a = sandbox(vec![]).await;
    let b = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    run_ok(&job, &store, &client(&a.base_url())).await;
    let binding = store.meta("test").unwrap().binding.unwrap();
    assert_eq!(binding.target_url, format!("{}/", a.base_url()));
    assert!(binding.source.contains("directory.json"), "{binding:?}");

    // Only the URL changed: it used to be an incremental cycle with 0 requests, the new
    // target left empty and `status` still saying 4 users linked.
    let s = run(&job, &store, &client(&b.base_url())).await.summary;
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    let error = s.error.unwrap();
    for part in [
        a.base_url().as_str(),
        b.base_url().as_str(),
        "provisiond restart --job test --reset full",
        "previous_url",
    ] {
        assert!(error.contains(part), "{part:?} in {error}");
    }
    assert_eq!(b.request_counts().total, 0);
    // The binding still names the first target: nothing moved.
    let meta = store.meta("test").unwrap();
    assert_eq!(meta.binding.unwrap(), binding);
    assert_eq!(meta.last_cycle.unwrap().status, CycleStatus::Failed);
}

#[tokio::test]
async fn previous_url_moves_the_links_to_the_new_address() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    run_ok(&job, &store, &client(&h.base_url())).await;
    // The same application under another name.
    let moved = h.base_url().replace("127.0.0.1", "localhost");
    let s = run(&job, &store, &client(&moved)).await.summary;
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");

    let mut settings = settings(&moved, TOKEN);
    settings.previous_url = Some(url::Url::parse(&h.base_url()).unwrap());
    let client = client_with(settings);
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.requests.writes(), 0, "{s:#?}");
    let binding = store.meta("test").unwrap().binding.unwrap();
    assert_eq!(binding.target_url, format!("{moved}/"));
    // From now on the new address is the binding, even without previous_url.
    run_ok(&job, &store, &crate::support::common::client(&moved)).await;
}

#[tokio::test]
async fn another_source_is_refused_before_any_request() {
    let h = sandbox(vec![]).await;
    let first = DirFile::new(&base_directory());
    let second = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job(&first.path), &store, &client).await;
    let before = h.request_counts().total;
    let s = run(&job(&second.path), &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    let error = s.error.unwrap();
    assert!(
        error.contains(&first.path.canonicalize().unwrap().display().to_string())
            && error.contains(&second.path.canonicalize().unwrap().display().to_string())
            && error.contains("provisiond restart --job test --reset full"),
        "{error}"
    );
    assert_eq!(h.request_counts().total, before);
}

#[tokio::test]
async fn a_first_cycle_that_reached_nothing_binds_nothing() {
    // A wrong URL on the first cycle: fixing it must not be refused.
    let port = crate::support::free_port();
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let s = run(&job, &store, &client(&format!("http://127.0.0.1:{port}")))
        .await
        .summary;
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    assert!(store.meta("test").unwrap().binding.is_none());
    let h = sandbox(vec![]).await;
    run_ok(&job, &store, &client(&h.base_url())).await;
    assert!(store.meta("test").unwrap().binding.is_some());
}
