//! Entra's protective loop, cycle by cycle against the sandbox with a clock the tests move:
//! the accidental-deletion threshold (staged deletes, allow-deletes, recovery), escrow (retry
//! schedule, change retries, 28-day expiry) and quarantine (each reason, backoff, lifting,
//! the 28-day disable).

use crate::support::common::*;
use chrono::{DateTime, Duration, Utc};
use provisiond::CycleStatus;
use provisiond::ManualClock;
use provisiond::RequestCounts;
use provisiond::SandboxRequestCounts as SandboxCounts;
use provisiond::Target;
use provisiond::{run_cycle, CycleOptions, CycleReport, JobSpec};
use provisiond::{
    EscrowAction, MemoryStore, QuarantineReason, SledStore, StagedAction, StateStore,
};
use provisiond::{FaultAction, FaultRule, SandboxHandle};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Requests the sandbox received since `before`.
fn since(h: &SandboxHandle, before: &SandboxCounts) -> RequestCounts {
    let now = h.request_counts();
    RequestCounts {
        get: now.get - before.get,
        post: now.post - before.post,
        put: now.put - before.put,
        patch: now.patch - before.patch,
        delete: now.delete - before.delete,
    }
}

pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000, 0).unwrap()
}

pub(crate) async fn cycle(
    job: &JobSpec,
    store: &dyn StateStore,
    target: &dyn Target,
    clock: &ManualClock,
) -> CycleReport {
    let opts = CycleOptions {
        record_actions: true,
        clock: Some(clock),
        ..CycleOptions::default()
    };
    run_cycle(job, store, target, &opts, &CancellationToken::new()).await
}

fn fail_creates() -> Vec<FaultRule> {
    vec![FaultRule::new(FaultAction::Status {
        status: 500,
        retry_after: None,
        body: None,
    })
    .method("POST")
    .path_prefix("/Users")]
}

fn active(h: &SandboxHandle, name: &str) -> bool {
    user(h, &format!("{name}@contoso.com"))["active"] == json!(true)
}

/// alice, bob and grace disabled (alice unassigned; Engineering unassigned) and both groups
/// deleted: 5 deprovisioning actions. Henry stays; ivan is new.
fn five_deletions() -> Value {
    edit(base_directory(), |d| {
        remove_assignment(d, "u-alice");
        remove_assignment(d, "g-eng");
        remove_assignment(d, "g-ops");
        d["users"]
            .as_array_mut()
            .unwrap()
            .push(full_user("u-ivan", "Ivan", "Drago", json!({})));
        d["assignments"]
            .as_array_mut()
            .unwrap()
            .push(json!({"principalId": "u-ivan"}));
    })
}

#[tokio::test]
async fn reaching_the_deletion_threshold_holds_every_deletion_and_quarantines() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let state = tempfile::tempdir().unwrap();
    let store = SledStore::open(state.path()).unwrap();
    let mut job = job(&file.path);
    job.safety.deletions.count = 5;
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");

    file.write(&five_deletions());
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.status, CycleStatus::EntryLevelErrors, "{s:#?}");
    assert_eq!(s.staged_deletes, 5, "{s:#?}");
    assert_eq!(s.quarantine.as_deref(), Some("TooManyDeletes"));
    assert!(s.problems.iter().any(|p| p.code == "TooManyDeletes"));
    // Nothing disabled or deleted; the create went through.
    let sent = since(&h, &before);
    assert_eq!((sent.delete, s.users.created), (0, 1), "{s:#?}");
    for n in ["alice", "bob", "grace", "henry", "ivan"] {
        assert!(active(&h, n), "{n}");
    }
    assert_eq!(h.groups().len(), 2);
    let staged = store.staged_deletes("test").unwrap();
    assert_eq!(staged.len(), 5);
    assert_eq!(
        staged
            .iter()
            .filter(|d| d.action == StagedAction::Disable)
            .count(),
        3
    );
    let meta = store.meta("test").unwrap();
    let q = meta.quarantine.unwrap();
    assert_eq!(q.reason, QuarantineReason::TooManyDeletes);
    assert_eq!((q.series_began, q.series_count), (t0(), 0));
    assert_eq!(q.next_attempt, t0() + Duration::hours(6));

    // Still the same next cycle: held again, one more evaluation of the series.
    clock.advance(Duration::hours(6));
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.staged_deletes, 5);
    assert_eq!(since(&h, &before).writes(), 0, "{s:#?}");
    let q = store.meta("test").unwrap().quarantine.unwrap();
    assert_eq!(q.series_count, 1);
    assert_eq!(q.next_attempt, t0() + Duration::hours(12));

    // The admin allows the deletions, but alice came back meanwhile: exactly the four still
    // planned are sent.
    file.write(&edit(five_deletions(), |d| {
        d["assignments"]
            .as_array_mut()
            .unwrap()
            .push(json!({"principalId": "u-alice"}));
    }));
    let mut meta = store.meta("test").unwrap();
    meta.allow_deletes = true;
    store.put_meta("test", &meta).unwrap();
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!((s.users.disabled, s.groups.deleted), (2, 2), "{s:#?}");
    assert_eq!(since(&h, &before).delete, 2);
    assert!(active(&h, "alice"));
    assert!(!active(&h, "bob") && !active(&h, "grace"));
    assert!(h.groups().is_empty());
    let meta = store.meta("test").unwrap();
    assert!(!meta.allow_deletes);
    assert_eq!(meta.quarantine, None);
    assert_eq!(s.quarantine, None);
    assert!(store.staged_deletes("test").unwrap().is_empty());
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn a_source_that_recovers_lifts_the_quarantine_and_deletes_nothing() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let mut job = job(&file.path);
    job.safety.deletions.count = 5;
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    cycle(&job, &store, &client, &clock).await;
    file.write(&five_deletions());
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.quarantine.as_deref(), Some("TooManyDeletes"));

    // A bad export replaced by a good one: under the threshold, the quarantine is lifted.
    file.write(&with_ivan("Engineer"));
    clock.advance(Duration::hours(1));
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.staged_deletes, 0);
    assert_eq!(s.quarantine, None, "{s:#?}");
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(since(&h, &before).writes(), 0);
    assert_eq!(store.meta("test").unwrap().quarantine, None);
    assert!(store.staged_deletes("test").unwrap().is_empty());
    for n in ["alice", "bob", "grace", "henry"] {
        assert!(active(&h, n), "{n}");
    }
    assert_eq!(h.groups().len(), 2);
}

/// A held delete or disable keeps its user's memberships too: removing a user from her
/// groups is part of taking her away, and the threshold holds all of it.
#[tokio::test]
async fn held_deletions_keep_the_users_memberships() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let mut job = job(&file.path);
    job.safety.deletions.count = 2;
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    cycle(&job, &store, &client, &clock).await;
    let ops = ids_of(&h, &["alice@contoso.com", "henry@contoso.com"]);
    assert_eq!(member_ids(&group(&h, "Operations")), ops);

    // Alice and henry are gone from the export (and from Operations): 2 deletes, held.
    file.write(&edit(base_directory(), |d| {
        remove_user(d, "u-alice");
        remove_user(d, "u-henry");
        remove_assignment(d, "u-alice");
        remove_assignment(d, "u-henry");
        group_mut(d, "g-ops")["members"] = json!([]);
    }));
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.staged_deletes, 2, "{s:#?}");
    assert_eq!(s.quarantine.as_deref(), Some("TooManyDeletes"));
    assert_eq!(s.memberships.removed, 0, "{s:#?}");
    assert_eq!(since(&h, &before).writes(), 0, "{s:#?}");
    assert_eq!(member_ids(&group(&h, "Operations")), ops);

    // Allowed: the deletes and the membership removals go out together.
    let mut meta = store.meta("test").unwrap();
    meta.allow_deletes = true;
    store.put_meta("test", &meta).unwrap();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.users.deleted, 2, "{s:#?}");
    assert!(member_ids(&group(&h, "Operations")).is_empty());
    assert_eq!(s.quarantine, None);
}

/// `allow-deletes` allows what was staged: a staged disable whose user is then deleted from
/// the source is a hard delete the admin never saw, judged by the threshold again.
#[tokio::test]
async fn allowed_disables_do_not_release_deletes() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let mut job = job(&file.path);
    job.safety.deletions.count = 2;
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    cycle(&job, &store, &client, &clock).await;

    // Alice and henry unassigned (and out of Operations): 2 disables, staged.
    let unassigned = |d: &mut Value| {
        remove_assignment(d, "u-alice");
        remove_assignment(d, "u-henry");
        group_mut(d, "g-ops")["members"] = json!([]);
    };
    file.write(&edit(base_directory(), unassigned));
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.staged_deletes, 2, "{s:#?}");
    let staged = store.staged_deletes("test").unwrap();
    assert!(staged.iter().all(|d| d.action == StagedAction::Disable));

    // The admin allows the two disables; meanwhile both users were deleted in the source.
    file.write(&edit(base_directory(), |d| {
        unassigned(d);
        remove_user(d, "u-alice");
        remove_user(d, "u-henry");
    }));
    let mut meta = store.meta("test").unwrap();
    meta.allow_deletes = true;
    store.put_meta("test", &meta).unwrap();
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(since(&h, &before).delete, 0, "{s:#?}");
    assert_eq!(s.users.deleted, 0, "{s:#?}");
    assert_eq!(s.staged_deletes, 2, "{s:#?}");
    assert_eq!(s.quarantine.as_deref(), Some("TooManyDeletes"));
    assert!(store
        .staged_deletes("test")
        .unwrap()
        .iter()
        .all(|d| d.action == StagedAction::Delete));
    assert!(try_user(&h, "alice@contoso.com").is_some());
}

#[tokio::test]
async fn the_percent_threshold_counts_against_the_provisioned_objects() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let mut job = job(&file.path);
    // Off by count; 50% of the 6 provisioned objects.
    job.safety.deletions.count = 0;
    job.safety.deletions.percent = Some(50.0);
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    cycle(&job, &store, &client, &clock).await;

    // 5 of 6: held.
    file.write(&five_deletions());
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.staged_deletes, 5, "{s:#?}");
    assert_eq!(h.groups().len(), 2);

    // 2 of 7 (ivan was created, and is gone again; alice is disabled): sent.
    file.write(&edit(base_directory(), |d| {
        user_mut(d, "u-alice")["accountEnabled"] = json!(false);
    }));
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.staged_deletes, 0, "{s:#?}");
    assert_eq!((s.users.disabled, s.users.deleted), (1, 1), "{s:#?}");
    assert_eq!(s.quarantine, None);
}

fn with_ivan(job_title: &str) -> Value {
    edit(base_directory(), |d| {
        d["users"].as_array_mut().unwrap().push(full_user(
            "u-ivan",
            "Ivan",
            "Drago",
            json!({"jobTitle": job_title}),
        ));
        d["assignments"]
            .as_array_mut()
            .unwrap()
            .push(json!({"principalId": "u-ivan"}));
    })
}

#[tokio::test]
async fn escrowed_actions_are_retried_on_the_schedule_and_at_once_when_changed() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let job = job(&file.path);
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    cycle(&job, &store, &client, &clock).await;

    file.write(&with_ivan("Boxer"));
    h.set_faults(fail_creates());
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!((s.escrowed, s.escrow_retried), (1, 0), "{s:#?}");
    let escrows = store.escrows("test").unwrap();
    assert_eq!(escrows.len(), 1);
    let e = &escrows[0];
    assert_eq!(
        (e.source_id.as_str(), e.action),
        ("u-ivan", EscrowAction::Create)
    );
    assert_eq!(
        (e.attempts, e.first_failure, e.next_attempt),
        (1, t0(), t0())
    );
    assert_eq!(e.code, "InternalServerError");

    // During the first 6 hours: every cycle retries.
    for hours in [1, 7] {
        clock.set(t0() + Duration::hours(hours));
        let s = cycle(&job, &store, &client, &clock).await.summary;
        assert_eq!((s.escrowed, s.escrow_retried), (1, 1), "+{hours}h {s:#?}");
    }
    let e = store.escrows("test").unwrap().remove(0);
    assert_eq!(e.attempts, 3);
    assert_eq!(e.next_attempt, t0() + Duration::hours(12));

    // Not due at +8 h: not sent, and said so.
    clock.set(t0() + Duration::hours(8));
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(since(&h, &before).post, 0);
    assert_eq!((s.escrowed, s.escrow_retried), (0, 0), "{s:#?}");
    assert_eq!(s.status, CycleStatus::EntryLevelErrors);
    assert!(s.problems.iter().any(|p| p.code == "Escrowed"), "{s:#?}");

    // Due at +12 h, then +24 h.
    clock.set(t0() + Duration::hours(12));
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.escrow_retried, 1);
    assert_eq!(
        store.escrows("test").unwrap()[0].next_attempt,
        t0() + Duration::hours(24)
    );

    // A change in the source retries at once, whatever the schedule: a new series.
    clock.set(t0() + Duration::hours(13));
    file.write(&with_ivan("Champion"));
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.escrow_retried, 1, "{s:#?}");
    let e = store.escrows("test").unwrap().remove(0);
    assert_eq!(
        (e.attempts, e.first_failure),
        (1, t0() + Duration::hours(13))
    );

    // The target recovers: the retry succeeds and the escrow is gone.
    h.set_faults(vec![]);
    clock.set(t0() + Duration::hours(14));
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!((s.status, s.users.created), (CycleStatus::Succeeded, 1));
    assert!(store.escrows("test").unwrap().is_empty());
    assert_eq!(user(&h, "ivan@contoso.com")["title"], "Champion");
}

#[tokio::test]
async fn an_escrow_expires_after_28_days_until_the_object_changes() {
    let h = sandbox(fail_creates()).await;
    let file = DirFile::new(&with_ivan("Boxer"));
    let store = MemoryStore::new();
    let mut job = job(&file.path);
    // Only ivan's create fails; keep this test about escrow, not quarantine.
    job.safety.quarantine.min_failures = 1_000;
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    // Every user create fails from the start: 5 escrows; then daily cycles.
    for day in 0..28 {
        clock.set(t0() + Duration::days(day));
        cycle(&job, &store, &client, &clock).await;
    }
    let e = store
        .escrows("test")
        .unwrap()
        .into_iter()
        .find(|e| e.source_id == "u-ivan")
        .unwrap();
    assert!(!e.expired);
    assert_eq!(e.next_attempt, t0() + Duration::days(28));

    clock.set(t0() + Duration::days(28));
    let before = h.request_counts();
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(since(&h, &before).post, 0, "{s:#?}");
    assert!(store.escrows("test").unwrap().iter().all(|e| e.expired));
    clock.set(t0() + Duration::days(40));
    let before = h.request_counts();
    cycle(&job, &store, &client, &clock).await;
    assert_eq!(since(&h, &before).post, 0);

    // Ivan changes: retried (and now the target accepts him).
    h.set_faults(vec![]);
    file.write(&with_ivan("Champion"));
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.users.created, 1, "{s:#?}");
    assert!(try_user(&h, "ivan@contoso.com").is_some());
    assert!(try_user(&h, "alice@contoso.com").is_none());
}

#[tokio::test]
async fn a_refused_token_quarantines_backs_off_and_a_good_cycle_lifts_it() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let job = job(&file.path);
    let clock = ManualClock::new(t0());
    let wrong = client_with(settings(&h.base_url(), "not-the-token"));
    let s = cycle(&job, &store, &wrong, &clock).await.summary;
    assert_eq!(s.status, CycleStatus::Failed);
    assert_eq!(
        s.quarantine.as_deref(),
        Some("EncounteredQuarantineException")
    );
    let meta = store.meta("test").unwrap();
    let q = meta.quarantine.clone().unwrap();
    assert_eq!(q.error.code, "Unauthorized");
    assert!(!q.error.message.contains("not-the-token"));
    // The daemon runs it again from then on (`Gate::of`, unit-tested in daemon/jobs.rs).
    assert_eq!(q.next_attempt, t0() + Duration::hours(6));

    clock.set(t0() + Duration::hours(6));
    cycle(&job, &store, &wrong, &clock).await;
    let q = store.meta("test").unwrap().quarantine.unwrap();
    assert_eq!((q.series_began, q.series_count), (t0(), 1));
    assert_eq!(q.next_attempt, t0() + Duration::hours(12));

    let s = cycle(&job, &store, &client(&h.base_url()), &clock)
        .await
        .summary;
    assert_eq!(s.status, CycleStatus::Succeeded);
    assert_eq!(s.quarantine, None);
    assert_eq!(store.meta("test").unwrap().quarantine, None);
}

#[tokio::test]
async fn a_job_quarantined_for_28_days_is_disabled() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let job = job(&file.path);
    let clock = ManualClock::new(t0());
    let wrong = client_with(settings(&h.base_url(), "not-the-token"));
    for day in [0, 1, 27] {
        clock.set(t0() + Duration::days(day));
        cycle(&job, &store, &wrong, &clock).await;
        assert!(!store.meta("test").unwrap().disabled, "day {day}");
    }
    clock.set(t0() + Duration::days(28));
    cycle(&job, &store, &wrong, &clock).await;
    let meta = store.meta("test").unwrap();
    // Disabled: the daemon runs it no more, quarantine or not, until a restart.
    assert!(meta.disabled);
}

#[tokio::test]
async fn escrow_thresholds_quarantine_with_their_reasons() {
    // (min_failures, base, total) → reason; 4 user creates fail, 2 group creates succeed.
    let cases = [
        (
            (2, 100, 100),
            QuarantineReason::EncounteredEscrowProportionThreshold,
        ),
        (
            (100, 3, 100),
            QuarantineReason::EncounteredBaseEscrowThreshold,
        ),
        (
            (100, 100, 3),
            QuarantineReason::EncounteredTotalEscrowThreshold,
        ),
    ];
    for ((min_failures, base, total), reason) in cases {
        let h = sandbox(fail_creates()).await;
        let file = DirFile::new(&base_directory());
        let store = MemoryStore::new();
        let mut job = job(&file.path);
        job.safety.quarantine.min_failures = min_failures;
        job.safety.quarantine.base_escrows = base;
        job.safety.quarantine.total_escrows = total;
        let clock = ManualClock::new(t0());
        let client = client(&h.base_url());
        let s = cycle(&job, &store, &client, &clock).await.summary;
        assert_eq!(s.escrowed, 4, "{s:#?}");
        assert_eq!(s.quarantine.as_deref(), Some(reason.as_str()), "{s:#?}");
        assert_eq!(
            store.meta("test").unwrap().quarantine.unwrap().reason,
            reason
        );

        // The target recovers: the next (due) cycle sends the escrowed creates and lifts it.
        h.set_faults(vec![]);
        clock.advance(Duration::hours(6));
        let s = cycle(&job, &store, &client, &clock).await.summary;
        assert_eq!(s.escrow_retried, 4, "{s:#?}");
        assert_eq!(s.quarantine, None, "{s:#?}");
        assert!(store.escrows("test").unwrap().is_empty());
    }
    // Under min_failures (default 5000) the same cycle quarantines nothing.
    let h = sandbox(fail_creates()).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let job = job(&file.path);
    let clock = ManualClock::new(t0());
    let s = cycle(&job, &store, &client(&h.base_url()), &clock)
        .await
        .summary;
    assert_eq!((s.escrowed, s.quarantine.clone()), (4, None), "{s:#?}");
}

#[tokio::test]
async fn a_cycle_that_finds_nothing_to_do_marks_the_steady_state() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let job = job(&file.path);
    let client = client(&h.base_url());
    let clock = ManualClock::new(t0());
    cycle(&job, &store, &client, &clock).await;
    assert_eq!(store.meta("test").unwrap().steady_state_first, None);
    for hours in [1, 2] {
        clock.set(t0() + Duration::hours(hours));
        cycle(&job, &store, &client, &clock).await;
    }
    let meta = store.meta("test").unwrap();
    assert_eq!(meta.steady_state_first, Some(t0() + Duration::hours(1)));
    assert_eq!(meta.steady_state_last, Some(t0() + Duration::hours(2)));
}

// ---------------------------------------------------------------------------------------
// kill -9 during the new transitions, with the real binary
// ---------------------------------------------------------------------------------------

mod crash {
    use crate::support::cli::*;
    use provisiond::{FaultAction, FaultRule};
    use provisiond::{SledStore, StateStore};
    use serde_json::Value;
    use std::time::Duration;

    const USERS: usize = 40;
    const KEPT: usize = 10;

    fn store(f: &Fixture) -> SledStore {
        SledStore::open(&f.state_dir().join("state")).unwrap()
    }

    fn json_of(out: &Output) -> Value {
        out.json()
    }

    /// Creates failing (escrowed) while the rest run slowly: killed once the escrow records
    /// are written (and on disk: sled flushes every 500 ms); the next sync creates the
    /// escrowed users and the rest, each once, and leaves no escrow behind.
    #[test]
    fn kill_9_after_escrow_written_converges() {
        const FAILED: usize = 3;
        let sandbox = Sandbox::start();
        let fixture = Fixture::new(&sandbox.url());
        let mut o = JobOptions::new(&sandbox.url());
        o.target_extra = "concurrency = 2\n".into();
        fixture.write_config(&job_config(&o));
        fixture.write_directory(&directory(USERS));
        // The first creates fail with an error retries can't fix (so they are escrowed at
        // once); the others are slow, so the process is still creating when killed.
        let mut fail = FaultRule::new(FaultAction::Status {
            status: 400,
            retry_after: None,
            body: None,
        })
        .method("POST")
        .path_prefix("/Users");
        fail.times = Some(FAILED as u64);
        sandbox.set_faults(vec![
            fail,
            FaultRule::new(FaultAction::Delay { delay_ms: 200 }).method("POST"),
        ]);
        let mut first = fixture.spawn(&["sync", "--json"]);
        wait_for(
            Duration::from_secs(30),
            "the failed creates and one more",
            || {
                assert!(first.try_status().is_none(), "sync ended before the kill");
                (sandbox.users().len() > 1).then_some(())
            },
        );
        // Past sled's flush interval: the escrow records are durable, the cycle is not done.
        std::thread::sleep(Duration::from_millis(1200));
        assert!(first.try_status().is_none(), "sync ended before the kill");
        first.kill9();
        let created = sandbox.users().len();
        assert!(created < USERS - FAILED, "{created}");
        {
            let s = store(&fixture);
            let escrows = s.escrows("robin").unwrap();
            assert_eq!(escrows.len(), FAILED, "{escrows:?}");
            assert!(escrows
                .iter()
                .all(|e| e.code == "WebExceptionProtocolError"));
        }

        sandbox.set_faults(vec![]);
        let out = fixture.run(&["sync", "--json"]);
        out.assert_code(0);
        let v = json_of(&out);
        assert_eq!(v["escrow_retried"], FAILED, "{v}");
        assert_eq!(v["escrowed"], 0, "{v}");
        let names = sandbox.user_names();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a duplicate userName");
        assert_eq!(names.len(), USERS, "nothing lost");
        assert!(store(&fixture).escrows("robin").unwrap().is_empty());
        let out = fixture.run(&["sync", "--json"]);
        out.assert_code(0);
        let v = json_of(&out);
        let writes: u64 = ["POST", "PATCH", "PUT", "DELETE"]
            .iter()
            .map(|m| v["requests"][m].as_u64().unwrap())
            .sum();
        assert_eq!(writes, 0, "{v}");
    }

    /// Held deletes staged and the quarantine entered while slow creates run: killed then;
    /// the next sync holds the same set again, creates the rest, deletes nothing. Then the
    /// allowed deletes, killed half sent: the next sync sends the rest, once each.
    #[test]
    fn kill_9_after_staging_and_during_allowed_deletes_converges() {
        let sandbox = Sandbox::start();
        let fixture = Fixture::new(&sandbox.url());
        let mut o = JobOptions::new(&sandbox.url());
        o.target_extra = "concurrency = 2\n".into();
        fixture.write_config(&job_config(&o).replace(
            "scope = \"assigned\"",
            "scope = \"assigned\"\ndelete_threshold = 10",
        ));
        fixture.write_directory(&directory(USERS));
        fixture.run(&["sync", "--json"]).assert_code(0);
        assert_eq!(sandbox.users().len(), USERS);

        // 30 users gone from the export (held), 20 new ones created slowly.
        let mut d = directory(USERS + 20);
        d["users"].as_array_mut().unwrap().retain(|u| {
            let id = u["id"].as_str().unwrap();
            (0..KEPT).any(|i| user_id(i) == id) || (USERS..USERS + 20).any(|i| user_id(i) == id)
        });
        fixture.write_directory(&d);
        sandbox.set_faults(vec![
            FaultRule::new(FaultAction::Delay { delay_ms: 100 }).method("POST")
        ]);
        let mut first = fixture.spawn(&["sync", "--json"]);
        wait_for(Duration::from_secs(30), "a few creates", || {
            assert!(first.try_status().is_none(), "sync ended before the kill");
            (sandbox.users().len() >= USERS + 3).then_some(())
        });
        first.kill9();
        assert!(sandbox.users().len() < USERS + 20);
        {
            let s = store(&fixture);
            assert_eq!(s.staged_deletes("robin").unwrap().len(), USERS - KEPT);
            let q = s.meta("robin").unwrap().quarantine.unwrap();
            assert_eq!(q.reason.as_str(), "TooManyDeletes");
        }
        sandbox.set_faults(vec![]);
        let out = fixture.run(&["sync", "--json"]);
        out.assert_code(1);
        let v = json_of(&out);
        assert_eq!(v["staged_deletes"], USERS - KEPT, "{v}");
        assert_eq!(v["quarantine"], "TooManyDeletes", "{v}");
        assert_eq!(v["requests"]["DELETE"], 0, "{v}");
        assert_eq!(
            sandbox.users().len(),
            USERS + 20,
            "no duplicate, none deleted"
        );

        // The admin allows the deletes (what `allow-deletes` records); DELETEs are slowed.
        {
            let s = store(&fixture);
            let mut meta = s.meta("robin").unwrap();
            meta.allow_deletes = true;
            s.put_meta("robin", &meta).unwrap();
            s.flush().unwrap();
        }
        sandbox.set_faults(vec![
            FaultRule::new(FaultAction::Delay { delay_ms: 100 }).method("DELETE")
        ]);
        let mut second = fixture.spawn(&["sync", "--json"]);
        wait_for(Duration::from_secs(30), "half the deletes", || {
            assert!(second.try_status().is_none(), "sync ended before the kill");
            (sandbox.users().len() <= USERS + 20 - 12).then_some(())
        });
        second.kill9();
        assert!(sandbox.users().len() > KEPT + 20);
        sandbox.set_faults(vec![]);
        let out = fixture.run(&["sync", "--json"]);
        out.assert_code(0);
        let v = json_of(&out);
        assert_eq!(v["quarantine"], Value::Null, "{v}");
        assert_eq!(sandbox.users().len(), KEPT + 20);
        {
            let s = store(&fixture);
            assert!(s.staged_deletes("robin").unwrap().is_empty());
            let meta = s.meta("robin").unwrap();
            assert!(!meta.allow_deletes && meta.quarantine.is_none());
        }
        let out = fixture.run(&["sync", "--json"]);
        out.assert_code(0);
        let v = json_of(&out);
        let writes: u64 = ["POST", "PATCH", "PUT", "DELETE"]
            .iter()
            .map(|m| v["requests"][m].as_u64().unwrap())
            .sum();
        assert_eq!(writes, 0, "{v}");
    }
}

/// A token the target refuses with 403 on every request (not 401) is a refused token too:
/// the cycle fails and the job is quarantined, however few objects there are.
#[tokio::test]
async fn forbidden_on_everything_is_a_refused_token() {
    let h = sandbox(vec![FaultRule::new(FaultAction::Status {
        status: 403,
        retry_after: None,
        body: None,
    })])
    .await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let job = job(&file.path);
    let clock = ManualClock::new(t0());
    let s = cycle(&job, &store, &client(&h.base_url()), &clock)
        .await
        .summary;
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");
    assert_eq!(
        s.quarantine.as_deref(),
        Some("EncounteredQuarantineException"),
        "{s:#?}"
    );
}

/// One object the target forbids (a protected account) in a cycle that sends nothing else
/// is that object's failure: the target still answers a search, so no quarantine.
#[tokio::test]
async fn one_forbidden_object_is_not_a_refused_token() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let job = job(&file.path);
    let clock = ManualClock::new(t0());
    let client = client(&h.base_url());
    cycle(&job, &store, &client, &clock).await;
    let alice = id(&user(&h, "alice@contoso.com"));
    h.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 403,
        retry_after: None,
        body: None,
    })
    .method("PATCH")
    .path_prefix(&format!("/Users/{alice}"))]);
    file.write(&edit(base_directory(), |d| {
        user_mut(d, "u-alice")["jobTitle"] = json!("Queen");
    }));
    let s = cycle(&job, &store, &client, &clock).await.summary;
    assert_eq!(s.status, CycleStatus::EntryLevelErrors, "{s:#?}");
    assert_eq!(s.users.failed, 1, "{s:#?}");
    assert_eq!(s.quarantine, None, "{s:#?}");
}
