//! Cycles against the sandbox with injected faults: throttling, server errors, slow answers,
//! dropped connections (before and after the request was applied), broken bodies, a wrong
//! token, and a cycle cut off mid-way.

use crate::support::common::{self, *};
use provisiond::run_cycle;
use provisiond::CycleOptions;
use provisiond::CycleStatus;
use provisiond::RequestCounts;
use provisiond::{DropWhen, FaultAction, FaultRule, SandboxHandle};
use provisiond::{MemoryStore, SledStore, StateStore};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn status(status: u16) -> FaultAction {
    FaultAction::Status {
        status,
        retry_after: None,
        body: None,
    }
}

fn throttle(status: u16, retry_after: &str) -> FaultAction {
    FaultAction::Status {
        status,
        retry_after: Some(retry_after.into()),
        body: None,
    }
}

fn body(status: u16, body: &str) -> FaultAction {
    FaultAction::Status {
        status,
        retry_after: None,
        body: Some(body.into()),
    }
}

fn drop(when: DropWhen) -> FaultAction {
    FaultAction::Drop { drop: when }
}

/// The target after the base directory was provisioned: four users, no duplicate, the two
/// groups with their members, alice's manager.
fn check_base_state(h: &SandboxHandle) {
    let names: Vec<String> = h
        .users()
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4, "duplicates or missing users: {names:?}");
    let names: BTreeSet<String> = names.into_iter().collect();
    let want: BTreeSet<String> = ["alice", "bob", "grace", "henry"]
        .iter()
        .map(|n| format!("{n}@contoso.com"))
        .collect();
    assert_eq!(names, want);
    assert_eq!(h.groups().len(), 2, "{:#?}", h.groups());
    let eng = group(h, "Engineering");
    assert_eq!(
        member_ids(&eng),
        ids_of(h, &["bob@contoso.com", "grace@contoso.com"])
    );
    assert_eq!(
        eng["members"].as_array().unwrap().len(),
        2,
        "no duplicate member entries"
    );
    let ops = group(h, "Operations");
    assert_eq!(
        member_ids(&ops),
        ids_of(h, &["alice@contoso.com", "henry@contoso.com"])
    );
    assert_eq!(
        ops["members"].as_array().unwrap().len(),
        2,
        "no duplicate member entries"
    );
    let bob = id(&user(h, "bob@contoso.com"));
    assert_eq!(
        user(h, "alice@contoso.com")[ENTERPRISE]["manager"]["value"],
        json!(bob)
    );
    assert!(h.users().iter().all(|u| u["active"] == json!(true)));
}

struct FaultCase {
    name: &'static str,
    faults: Vec<FaultRule>,
    /// Status of the cycle run with the faults.
    status: CycleStatus,
    /// Problem codes of that cycle, sorted.
    codes: &'static [&'static str],
    /// Whether that cycle must already leave the target in its final state (and count it
    /// exactly as a cycle without faults would).
    converged_at_once: bool,
    /// Requests of that cycle, retries included, when they are deterministic.
    requests: Option<RequestCounts>,
}

/// Initial cycle of the base directory with the faults, then without them: the target must end
/// up exactly as without faults, and a further cycle must write nothing.
async fn run_fault_case(case: FaultCase) {
    let name = case.name;
    let h = sandbox(case.faults).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let report = run(&job, &store, &client).await;
    let s = &report.summary;
    assert_eq!(s.status, case.status, "{name}: {s:#?}");
    let mut codes: Vec<&str> = s.problems.iter().map(|p| p.code.as_str()).collect();
    codes.sort();
    assert_eq!(codes, case.codes, "{name}: {s:#?}");
    for p in &s.problems {
        assert!(
            !p.reason.is_empty(),
            "{name}: a problem without a reason: {p:?}"
        );
        if p.code == "ServiceIncompatible" {
            // Says which request, and what was wrong with the answer.
            assert!(
                p.reason.contains("response is not valid SCIM")
                    && (p.reason.contains("JSON") || p.reason.contains("\"id\"")),
                "{name}: {}",
                p.reason
            );
        }
    }
    let server = h.request_counts();
    assert_eq!(
        (server.get, server.post, server.patch, server.delete),
        (
            s.requests.get,
            s.requests.post,
            s.requests.patch,
            s.requests.delete
        ),
        "{name}: the client counts every request the server saw"
    );
    if let Some(want) = case.requests {
        assert_eq!(s.requests, want, "{name}: {s:#?}");
    }
    // Whatever happened, no object exists twice.
    let mut seen = BTreeSet::new();
    for u in h.users() {
        assert!(
            seen.insert(u["userName"].as_str().unwrap().to_lowercase()),
            "{name}: duplicate {u}"
        );
    }
    if case.converged_at_once {
        check_base_state(&h);
        // Counted as a cycle without faults is: a lost response is still a create.
        assert_eq!(s.users, users(4, 0, 0, 0, 0, 4, 0), "{name}: {s:#?}");
        assert_eq!(s.groups, groups(2, 0, 0, 0, 1, 0), "{name}: {s:#?}");
        assert_eq!(s.memberships, memberships(4, 0), "{name}: {s:#?}");
        assert!(
            store.links("test").unwrap().iter().all(|l| l.created),
            "{name}"
        );
    }
    h.set_faults(vec![]);
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(
        s.status,
        CycleStatus::Succeeded,
        "{name}: the cycle after the faults: {s:#?}"
    );
    check_base_state(&h);
    assert_converged(&job, &store, &client).await;
    // Every object is linked to the target object that exists.
    for l in store.links("test").unwrap() {
        let exists = match l.object_type {
            provisiond::ObjectType::User => {
                h.users().iter().any(|u| u["id"] == l.target_id.as_str())
            }
            provisiond::ObjectType::Group => {
                h.groups().iter().any(|g| g["id"] == l.target_id.as_str())
            }
        };
        assert!(exists, "{name}: link to a missing object {l:?}");
    }
}

#[tokio::test]
async fn faults_that_the_cycle_absorbs() {
    let cases = vec![
        FaultCase {
            name: "429 with Retry-After seconds on POSTs",
            faults: vec![FaultRule::new(throttle(429, "1")).method("POST").times(2)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(6, 8, 3, 0)),
        },
        FaultCase {
            name: "503 with Retry-After as an HTTP date",
            faults: vec![FaultRule::new(throttle(
                503,
                &httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2)),
            ))
            .times(3)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(9, 6, 3, 0)),
        },
        FaultCase {
            name: "500 on the first requests",
            faults: vec![FaultRule::new(status(500)).times(5)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(11, 6, 3, 0)),
        },
        FaultCase {
            name: "500, 502 and 504 on the first POSTs (maybe processed: match again)",
            faults: vec![
                FaultRule::new(status(500)).method("POST").times(1),
                FaultRule::new(status(502)).method("POST").times(1),
                FaultRule::new(status(504)).method("POST").times(1),
            ],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(9, 9, 3, 0)),
        },
        FaultCase {
            name: "500s on membership PATCHes",
            faults: vec![FaultRule::new(status(500))
                .method("PATCH")
                .path_prefix("/Groups")
                .times(2)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(6, 6, 5, 0)),
        },
        FaultCase {
            name: "slow answers",
            faults: vec![FaultRule::new(FaultAction::Delay { delay_ms: 150 })],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(6, 6, 3, 0)),
        },
        FaultCase {
            name: "connection dropped before a POST was applied",
            faults: vec![FaultRule::new(drop(DropWhen::Before))
                .method("POST")
                .path_prefix("/Users")
                .times(2)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(8, 8, 3, 0)),
        },
        FaultCase {
            name: "connection dropped before GETs and PATCHes were applied",
            faults: vec![
                FaultRule::new(drop(DropWhen::Before))
                    .method("GET")
                    .times(2),
                FaultRule::new(drop(DropWhen::Before))
                    .method("PATCH")
                    .times(2),
            ],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(8, 6, 5, 0)),
        },
        FaultCase {
            name: "response to a user POST lost (applied, connection dropped)",
            faults: vec![FaultRule::new(drop(DropWhen::After))
                .method("POST")
                .path_prefix("/Users")
                .times(2)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(8, 6, 3, 0)),
        },
        FaultCase {
            name: "response to a group POST lost",
            faults: vec![FaultRule::new(drop(DropWhen::After))
                .method("POST")
                .path_prefix("/Groups")
                .times(1)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(7, 6, 3, 0)),
        },
        FaultCase {
            name: "response to membership PATCHes lost (retried: no duplicate member)",
            faults: vec![FaultRule::new(drop(DropWhen::After))
                .method("PATCH")
                .path_prefix("/Groups")
                .times(2)],
            status: CycleStatus::Succeeded,
            codes: &[],
            converged_at_once: true,
            requests: Some(requests(6, 6, 5, 0)),
        },
        FaultCase {
            name: "a non-JSON body on a create",
            faults: vec![
                FaultRule::new(body(201, "<html><body>Created!</body></html>"))
                    .method("POST")
                    .path_prefix("/Users")
                    .skip(1)
                    .times(1),
            ],
            status: CycleStatus::EntryLevelErrors,
            codes: &["ServiceIncompatible"],
            converged_at_once: false,
            requests: None,
        },
        FaultCase {
            name: "a truncated body on a create (the object exists: adopted next cycle)",
            faults: vec![FaultRule::new(FaultAction::Truncate { truncate: true })
                .method("POST")
                .path_prefix("/Users")
                .skip(1)
                .times(1)],
            status: CycleStatus::EntryLevelErrors,
            codes: &["ServiceIncompatible"],
            converged_at_once: false,
            requests: None,
        },
        FaultCase {
            name: "a created resource without id",
            faults: vec![FaultRule::new(body(
                201,
                r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x"}"#,
            ))
            .method("POST")
            .path_prefix("/Users")
            .times(1)],
            status: CycleStatus::EntryLevelErrors,
            codes: &["ServiceIncompatible"],
            converged_at_once: false,
            requests: None,
        },
        FaultCase {
            name: "a non-JSON body on a matching query",
            faults: vec![FaultRule::new(body(200, "OK"))
                .method("GET")
                .path_prefix("/Groups")
                .times(1)],
            status: CycleStatus::EntryLevelErrors,
            codes: &["ServiceIncompatible"],
            converged_at_once: false,
            requests: Some(requests(6, 5, 2, 0)),
        },
        FaultCase {
            name: "a 400 on one create",
            faults: vec![FaultRule::new(status(400))
                .method("POST")
                .path_prefix("/Users")
                .times(1)],
            status: CycleStatus::EntryLevelErrors,
            codes: &["WebExceptionProtocolError"],
            converged_at_once: false,
            requests: None,
        },
    ];
    for case in cases {
        run_fault_case(case).await;
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let h = sandbox(vec![FaultRule::new(throttle(429, "1"))
        .method("POST")
        .path_prefix("/Groups")
        .times(1)])
    .await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let started = Instant::now();
    let s = run_ok(&job, &store, &client).await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    // The throttled POST was sent again, and only once more.
    assert_eq!(s.requests.post, 7, "{s:#?}");
    assert_eq!(h.request_counts().post, 7);
    check_base_state(&h);
}

#[tokio::test]
async fn a_wrong_token_fails_the_cycle_quickly_without_hammering() {
    let h = sandbox(vec![]).await;
    // Enough users that a cycle that did not stop would send hundreds of requests.
    let mut d = base_directory();
    for i in 0..200 {
        d["users"].as_array_mut().unwrap().push(full_user(
            &format!("u-x{i}"),
            &format!("X{i}"),
            "Extra",
            json!({}),
        ));
        d["assignments"]
            .as_array_mut()
            .unwrap()
            .push(json!({"principalId": format!("u-x{i}")}));
    }
    let file = DirFile::new(&d);
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client_with(settings(&h.base_url(), "wrong-token"));
    let started = Instant::now();
    let s = run(&job, &store, &client).await.summary;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    let error = s.error.clone().unwrap();
    assert!(
        error.contains("401") && error.contains("Unauthorized"),
        "{error}"
    );
    assert!(
        !error.contains("wrong-token"),
        "the token never appears: {error}"
    );
    let server = h.request_counts();
    // At most the requests already in flight when the first 401 came back.
    assert!(server.total <= 2 * job.concurrency as u64, "{server:?}");
    assert_eq!(server.total, s.requests.total());
    assert!(h.users().is_empty());
    assert!(store.links("test").unwrap().is_empty());
    assert!(
        store.meta("test").unwrap().watermark.is_none(),
        "a failed cycle does not advance"
    );

    // With the right token the next cycle is still initial and provisions everything.
    let s = run_ok(&job, &store, &common::client(&h.base_url())).await;
    assert_eq!(s.users.created, 204);
}

#[tokio::test]
async fn a_server_failing_every_request_fails_objects_not_the_process() {
    let h = sandbox(vec![FaultRule::new(status(500))]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run(&job, &store, &client).await.summary;
    assert_ne!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert!(h.users().is_empty());
    // Bounded retries: (1 + max_retries) GETs per object at most.
    assert!(s.requests.total() <= 6 * 5, "{s:#?}");
    h.set_faults(vec![]);
    run_ok(&job, &store, &client).await;
    check_base_state(&h);
    assert_converged(&job, &store, &client).await;
}

/// Cancels `stop` once the sandbox has seen `after` POSTs: a shutdown (or a crash) mid-way.
/// The sandbox counts a POST on arrival and the test delays its answer, so the token is
/// cancelled before the exporter can send another write (as when the count was polled).
async fn stop_after_posts(h: &SandboxHandle, after: u64, stop: &CancellationToken) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.request_counts().post < after && Instant::now() < deadline && !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.cancel();
}

#[tokio::test]
async fn a_cycle_stopped_mid_way_is_completed_by_the_next_one_without_duplicates() {
    for after in [1, 3, 5] {
        let h = sandbox(vec![
            FaultRule::new(FaultAction::Delay { delay_ms: 50 }).method("POST")
        ])
        .await;
        let file = DirFile::new(&base_directory());
        let mut job = job(&file.path);
        job.concurrency = 1;
        let state = tempfile::tempdir().unwrap();
        let client = client(&h.base_url());
        {
            let store = SledStore::open(state.path()).unwrap();
            let stop = CancellationToken::new();
            let opts = CycleOptions::default();
            let (report, ()) = tokio::join!(
                run_cycle(&job, &store, &client, &opts, &stop),
                stop_after_posts(&h, after, &stop)
            );
            let s = report.summary;
            // A stop is no failure, and the writes it kept from being sent are no problems.
            assert_eq!(s.status, CycleStatus::Interrupted, "{s:#?}");
            assert!(s.problems.iter().all(|p| p.code != "Interrupted"), "{s:#?}");
            assert!(s.error.unwrap().contains("interrupted"));
            let done = h.users().len()
                + h.groups().len()
                + h.groups()
                    .iter()
                    .map(|g| member_ids(g).len())
                    .sum::<usize>();
            assert!(done < 10, "stopped before the end");
        }
        h.set_faults(vec![]);
        // The first handle is dropped: wait for sled to release its lock.
        let store = reopen_store(state.path()).await;
        let s = run_ok(&job, &store, &client).await;
        assert_eq!(
            s.kind,
            provisiond::CycleKind::Initial,
            "the watermark did not advance"
        );
        check_base_state(&h);
        assert_converged(&job, &store, &client).await;
    }
}

#[tokio::test]
async fn a_cycle_killed_mid_request_leaves_no_duplicate() {
    // Slow POSTs; the cycle future is dropped while requests are in flight (what a kill does
    // to the process's view), the store is reopened, and the next cycle converges.
    let h = sandbox(vec![
        FaultRule::new(FaultAction::Delay { delay_ms: 300 }).method("POST")
    ])
    .await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let state = tempfile::tempdir().unwrap();
    let client = client(&h.base_url());
    {
        let store = SledStore::open(state.path()).unwrap();
        let cycle = run(&job, &store, &client);
        let cut = tokio::time::timeout(Duration::from_millis(450), cycle).await;
        assert!(cut.is_err(), "the cycle should still be running");
    }
    // Let the requests the server already accepted finish.
    tokio::time::sleep(Duration::from_millis(400)).await;
    h.set_faults(vec![]);
    let store = reopen_store(state.path()).await;
    run_ok(&job, &store, &client).await;
    check_base_state(&h);
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn a_timed_out_post_is_matched_again_and_never_duplicated() {
    // The first user POST is answered after the client gave up; the server applies it late.
    let h = sandbox(vec![FaultRule::new(FaultAction::Delay { delay_ms: 1200 })
        .method("POST")
        .path_prefix("/Users")
        .times(1)])
    .await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let mut settings = settings(&h.base_url(), TOKEN);
    settings.request_timeout = Duration::from_millis(400);
    let client = client_with(settings);
    let s = run(&job, &store, &client).await.summary;
    assert_ne!(s.status, CycleStatus::Failed, "{s:#?}");
    // Let the late POST land (or be dropped with its connection), then converge.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    check_base_state(&h);
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn an_unreachable_target_fails_the_cycle_quickly() {
    // A port nobody listens on.
    let port = crate::support::free_port();
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = common::client(&format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    let s = run(&job, &store, &client).await.summary;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    let error = s.error.unwrap();
    assert!(error.contains("ConnectionFailed"), "{error}");
    assert!(
        error.contains("provisiond test-connection --job test"),
        "the next step: {error}"
    );
    // Issue 9: the requests in flight share one retry budget (1 + max_retries refusals in a
    // row), so at most one more attempt each: it was 20 GETs here (5 per user), 36 for six
    // users with the default settings.
    assert!(s.requests.total() <= 8, "{:?}", s.requests);
    assert_eq!(s.requests.writes(), 0, "{:?}", s.requests);
    // Identical problems once, with a count.
    assert_eq!(s.problems.len(), 1, "{:#?}", s.problems);
    assert_eq!(s.problems[0].code, "ConnectionFailed");
    assert_eq!(s.problems[0].count as u64, s.problem_count);
    assert!(store.links("test").unwrap().is_empty());
}

/// Enough assigned users that a breaker that never opened would send hundreds of requests.
fn many_users(n: usize) -> serde_json::Value {
    let mut d = base_directory();
    for i in 0..n {
        d["users"].as_array_mut().unwrap().push(full_user(
            &format!("u-x{i}"),
            &format!("X{i}"),
            "Extra",
            json!({}),
        ));
        d["assignments"]
            .as_array_mut()
            .unwrap()
            .push(json!({"principalId": format!("u-x{i}")}));
    }
    d
}

/// Issue 9: one connection reset fails one object, never the cycle: the groups' matching
/// queries are dropped on every attempt, so both groups fail (entry-level) and the users
/// proceed; it used to end the cycle `failed` at the first one.
#[tokio::test]
async fn a_connection_failure_fails_one_object_not_the_cycle() {
    let h = sandbox(vec![FaultRule::new(drop(DropWhen::Before))
        .method("GET")
        .path_prefix("/Groups")])
    .await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::EntryLevelErrors, "{s:#?}");
    assert!(s.error.is_none(), "{s:#?}");
    assert_eq!(s.users.created, 4, "{s:#?}");
    assert_eq!(s.groups.failed, 2, "{s:#?}");
    // The same failure twice: listed once, with its count.
    assert_eq!(s.problem_count, 2, "{s:#?}");
    assert_eq!(s.problems.len(), 1, "{s:#?}");
    assert_eq!(s.problems[0].code, "ConnectionFailed");
    assert_eq!(s.problems[0].count, 2);
    // The next cycle provisions the groups.
    h.set_faults(vec![]);
    run_ok(&job, &store, &client).await;
    check_base_state(&h);
    assert_converged(&job, &store, &client).await;
}

/// Issue 9: a target that goes down mid-cycle opens the breaker after 20 target-wide
/// failures in a row: the cycle fails with one clear error and stops sending.
#[tokio::test]
async fn a_run_of_connection_failures_opens_the_breaker() {
    // The first user is provisioned (the target answered), then every request is dropped.
    let h = sandbox(vec![FaultRule::new(drop(DropWhen::Before)).skip(3)]).await;
    let file = DirFile::new(&many_users(200));
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let started = Instant::now();
    let s = run(&job, &store, &client).await.summary;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    let error = s.error.clone().unwrap();
    assert!(
        error.contains("target unreachable")
            && error.contains("20 target-wide failures in a row")
            && error.contains("provisiond test-connection --job test"),
        "{error}"
    );
    // 20 failed objects, plus at most those already in flight (twice the concurrency);
    // each with its create and the five attempts of the search that follows a create
    // without an answer (the target was empty, so no search came first). Not 204 objects'
    // worth.
    assert!(s.users.failed >= 20, "{s:#?}");
    assert!(s.users.failed <= 20 + 2 * job.concurrency as u64, "{s:#?}");
    assert!(
        s.requests.total() <= 3 + 6 * (20 + 2 * job.concurrency as u64),
        "{s:#?}"
    );
    // Identical failures (the same query path) are listed once.
    assert!(s.problems.len() <= 2, "{:#?}", s.problems);
    assert_eq!(
        s.problems.iter().map(|p| p.count).sum::<u64>(),
        s.problem_count
    );

    // Back up: the next cycle finishes the job, without duplicates.
    h.set_faults(vec![]);
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(h.users().len(), 204);
}

/// A 404 on the resource collection is a wrong base URL: the cycle stops at once.
#[tokio::test]
async fn a_missing_collection_fails_the_cycle_at_once() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&many_users(50));
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&format!("{}/nope", h.base_url()));
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    let error = s.error.clone().unwrap();
    assert!(error.contains("404 on the resource collection"), "{error}");
    assert!(
        s.requests.total() <= 1 + 2 * job.concurrency as u64,
        "{s:#?}"
    );
}

/// Shutdown takes no new work: objects whose matching queries are in flight when the stop
/// signal comes up send no write afterwards, and the next cycle provisions them.
#[tokio::test(flavor = "multi_thread")]
async fn no_write_is_sent_after_the_stop_signal() {
    let h = sandbox(vec![
        FaultRule::new(FaultAction::Delay { delay_ms: 400 }).method("GET")
    ])
    .await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let job = job(&file.path);
    let stop = CancellationToken::new();
    // Raise the stop signal as soon as the first matching query reaches the sandbox: every
    // query then still has ~400 ms to go, so no write can have been sent yet.
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.request_counts().get == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.cancel();
    };
    let opts = CycleOptions::default();
    let (report, ()) = tokio::join!(run_cycle(&job, &store, &client, &opts, &stop), watch);
    assert_eq!(
        report.summary.status,
        CycleStatus::Interrupted,
        "{:#?}",
        report.summary
    );
    let counts = h.request_counts();
    assert!(counts.get > 0, "matching queries were in flight");
    assert_eq!(
        (counts.post, counts.patch, counts.delete),
        (0, 0, 0),
        "{counts:?}"
    );
    h.set_faults(vec![]);
    assert_eq!(
        run(&job, &store, &client).await.summary.status,
        CycleStatus::Succeeded
    );
    assert_converged(&job, &store, &client).await;
}
