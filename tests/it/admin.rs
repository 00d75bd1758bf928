//! The admin commands (`restart`, `allow-deletes`, `pause`, `resume`) on the store and
//! through a running daemon, the safety fields of `status`, and the daemon's worker honouring
//! a pause and a quarantine's next attempt.

use crate::support::cli::*;
use chrono::{DateTime, Duration as Days, Utc};
use provisiond::ObjectType;
use provisiond::{
    EscrowAction, EscrowEntry, Quarantine, QuarantineError, QuarantineReason, SledStore,
    StagedAction, StagedDelete, StateStore,
};
use serde_json::Value;
use std::time::Duration;

/// `status --json` for the one job.
fn status(fixture: &Fixture) -> Value {
    let out = fixture.run(&["status", "--json"]);
    out.assert_code(0);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}); {out}"));
    v[0].clone()
}

/// Run a command that must succeed and print one line naming the next command to look.
fn admin_ok(fixture: &Fixture, args: &[&str]) -> String {
    let out = fixture.run(args);
    out.assert_code(0);
    assert_eq!(out.stdout.lines().count(), 1, "one line; {out}");
    assert!(
        out.stdout.contains("`provisiond status --job robin`"),
        "{out}"
    );
    assert!(!out.all().contains(TOKEN), "the token is printed; {out}");
    out.stdout
}

/// Edit the store directly (no process holds it).
fn with_store(fixture: &Fixture, f: impl FnOnce(&SledStore)) {
    let store = SledStore::open(&fixture.state_dir().join("state")).expect("open the store");
    f(&store);
    store.flush().expect("flush");
}

fn quarantine(reason: QuarantineReason, next_attempt: DateTime<Utc>) -> Quarantine {
    let began = Utc::now() - Days::hours(1);
    Quarantine {
        reason,
        series_began: began,
        current_began: began,
        next_attempt,
        series_count: 2,
        error: QuarantineError {
            code: reason.as_str().into(),
            message: "held for the test".into(),
        },
    }
}

/// Put the job in a TooManyDeletes quarantine with two staged deletes and two escrows.
fn hold(fixture: &Fixture) -> DateTime<Utc> {
    let oldest = Utc::now() - Days::days(2);
    with_store(fixture, |store| {
        let mut meta = store.meta("robin").unwrap();
        meta.quarantine = Some(quarantine(
            QuarantineReason::TooManyDeletes,
            Utc::now() + Days::hours(5),
        ));
        store.put_meta("robin", &meta).unwrap();
        let staged: Vec<_> = ["u-1", "u-2"]
            .iter()
            .map(|id| StagedDelete {
                object_type: ObjectType::User,
                source_id: id.to_string(),
                target_id: format!("t-{id}"),
                display_name: id.to_string(),
                action: StagedAction::Delete,
                staged_at: Utc::now(),
            })
            .collect();
        store.set_staged_deletes("robin", &staged).unwrap();
        for (id, action, first) in [
            ("u-3", EscrowAction::Create, oldest),
            ("u-4", EscrowAction::Membership, Utc::now()),
        ] {
            store
                .put_escrow(
                    "robin",
                    &EscrowEntry {
                        object_type: ObjectType::User,
                        source_id: id.into(),
                        display_name: id.into(),
                        action,
                        attempts: 1,
                        first_failure: first,
                        last_attempt: first,
                        next_attempt: first,
                        code: "ServiceUnavailable".into(),
                        reason: "503".into(),
                        fingerprint: String::new(),
                        expired: false,
                    },
                )
                .unwrap();
        }
    });
    oldest
}

#[test]
fn admin_commands_on_the_store_and_the_status_they_leave() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let s = status(&fixture);
    assert_eq!(s["state"], "not_run", "{s}");
    assert_eq!(s["quarantine"], Value::Null, "{s}");
    assert_eq!(s["escrows"]["total"], 0, "{s}");
    assert_eq!(s["escrows"]["oldest"], Value::Null, "{s}");
    assert_eq!(s["staged_deletes"], 0, "{s}");
    fixture.run(&["sync"]).assert_code(0);
    let s = status(&fixture);
    assert_eq!(s["state"], "active", "{s}");
    assert!(s.get("steady_state_first").is_some(), "{s}");
    assert!(s.get("steady_state_last").is_some(), "{s}");

    // pause / resume.
    let line = admin_ok(&fixture, &["pause", "--job", "robin"]);
    assert!(line.contains("provisiond resume --job robin"), "{line}");
    assert_eq!(status(&fixture)["state"], "paused");
    let out = fixture.run(&["status"]);
    assert!(out.stdout.contains("state: paused"), "{out}");
    assert!(
        out.stdout.contains("`provisiond resume --job robin`"),
        "{out}"
    );
    admin_ok(&fixture, &["resume", "--job", "robin"]);
    assert_eq!(status(&fixture)["state"], "active");

    // allow-deletes with nothing staged is refused, and changes nothing.
    let out = fixture.run(&["allow-deletes", "--job", "robin"]);
    out.assert_code(2);
    assert!(out.stderr.contains("no staged deletions"), "{out}");
    assert_eq!(status(&fixture)["allow_deletes"], false);
    // An unknown job and an unknown scope are usage errors.
    fixture.run(&["pause", "--job", "nobody"]).assert_code(2);
    fixture
        .run(&["restart", "--job", "robin", "--reset", "links"])
        .assert_code(2);

    // A quarantine with staged deletes and escrows, as the cycle records them.
    let oldest = hold(&fixture);
    let s = status(&fixture);
    assert_eq!(s["state"], "quarantine", "{s}");
    assert_eq!(s["quarantine"]["reason"], "TooManyDeletes", "{s}");
    for field in [
        "series_began",
        "current_began",
        "next_attempt",
        "series_count",
    ] {
        assert!(!s["quarantine"][field].is_null(), "{field}: {s}");
    }
    assert_eq!(s["quarantine"]["error"]["code"], "TooManyDeletes", "{s}");
    assert_eq!(s["staged_deletes"], 2, "{s}");
    assert_eq!(s["escrows"]["total"], 2, "{s}");
    assert_eq!(s["escrows"]["reference"], 1, "{s}");
    let got: DateTime<Utc> = s["escrows"]["oldest"].as_str().unwrap().parse().unwrap();
    assert_eq!(got, oldest, "{s}");
    let out = fixture.run(&["status"]);
    assert!(out.stdout.contains("quarantined, TooManyDeletes"), "{out}");
    assert!(out.stdout.contains("2 deletions are staged"), "{out}");
    assert!(
        out.stdout
            .contains("`provisiond allow-deletes --job robin`"),
        "{out}"
    );
    assert!(out.stdout.contains("escrows: 2 failed actions"), "{out}");

    let line = admin_ok(&fixture, &["allow-deletes", "--job", "robin"]);
    assert!(line.contains("2 staged deletions"), "{line}");
    assert_eq!(status(&fixture)["allow_deletes"], true);

    // restart: quarantine lifted, escrows dropped, the next cycle is initial; links kept.
    let line = admin_ok(&fixture, &["restart", "--job", "robin"]);
    assert!(
        line.contains("quarantine (TooManyDeletes) lifted"),
        "{line}"
    );
    let s = status(&fixture);
    assert_eq!(s["state"], "active", "{s}");
    assert_eq!(s["quarantine"], Value::Null, "{s}");
    assert_eq!(s["escrows"]["total"], 0, "{s}");
    assert_eq!(s["users_linked"], 5, "{s}");
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["kind"], "initial", "{out}");
    assert_eq!(out.json()["users"]["created"], 0, "{out}");

    // --reset picks the parts: escrows only leaves the quarantine.
    hold(&fixture);
    admin_ok(
        &fixture,
        &["restart", "--job", "robin", "--reset", "escrows"],
    );
    let s = status(&fixture);
    assert_eq!(s["state"], "quarantine", "{s}");
    assert_eq!(s["escrows"]["total"], 0, "{s}");
    admin_ok(
        &fixture,
        &[
            "restart",
            "--job",
            "robin",
            "--reset",
            "quarantine,force-deletes",
        ],
    );
    let s = status(&fixture);
    assert_eq!(s["state"], "active", "{s}");
    assert_eq!(s["allow_deletes"], true, "{s}");
}

#[test]
fn restart_reset_full_forgets_links_and_the_next_cycle_matches_without_duplicates() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    fixture.run(&["sync"]).assert_code(0);
    assert_eq!(sandbox.users().len(), 5);
    let line = admin_ok(&fixture, &["restart", "--job", "robin", "--reset", "full"]);
    assert!(
        line.contains("links forgotten (5 users, 1 groups"),
        "{line}"
    );
    let s = status(&fixture);
    assert_eq!(s["users_linked"], 0, "{s}");
    assert_eq!(s["groups_linked"], 0, "{s}");

    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["kind"], "initial", "{v}");
    assert_eq!(v["users"]["created"], 0, "adopted, not created: {v}");
    assert_eq!(v["groups"]["created"], 0, "{v}");
    assert_eq!(sandbox.users().len(), 5, "no duplicate");
    assert_eq!(sandbox.groups().len(), 1, "no duplicate");
    assert_eq!(status(&fixture)["users_linked"], 5);
}

/// Start the daemon and wait until it answers `status` on its socket.
fn start_daemon(fixture: &Fixture) -> Proc {
    let mut daemon = fixture.spawn(&["run"]);
    wait_for(Duration::from_secs(20), "the daemon answers status", || {
        if let Some(s) = daemon.try_status() {
            panic!("the daemon exited early ({s}); {}", daemon.output());
        }
        if !fixture.socket_path().exists() {
            return None;
        }
        let s = status(fixture);
        s["last_cycle"].is_object().then_some(())
    });
    daemon
}

/// The last cycle's id.
fn last_cycle(fixture: &Fixture) -> Value {
    status(fixture)["last_cycle"]["cycle_id"].clone()
}

#[test]
fn a_paused_job_runs_no_cycle_and_commands_go_through_the_daemon() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut o = JobOptions::new(&sandbox.url());
    o.interval = "1s".into();
    fixture.write_job(&o);
    let mut daemon = start_daemon(&fixture);

    let line = admin_ok(&fixture, &["pause", "--job", "robin"]);
    assert!(line.contains("paused"), "{line}");
    let s = status(&fixture);
    assert_eq!(s["state"], "paused", "{s}");
    // A cycle running when the pause came has finished; none starts after it.
    let paused_at = wait_for(Duration::from_secs(10), "no cycle running", || {
        let s = status(&fixture);
        (s["running"] == false).then_some(s["last_cycle"]["cycle_id"].clone())
    });
    fixture.write_directory(&directory(6));
    let writes = sandbox.writes();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(last_cycle(&fixture), paused_at, "a paused job ran a cycle");
    assert_eq!(sandbox.writes(), writes);
    assert_eq!(status(&fixture)["next_run"], Value::Null);

    // allow-deletes is refused through the daemon too.
    let out = fixture.run(&["allow-deletes", "--job", "robin"]);
    out.assert_code(2);
    assert!(out.stderr.contains("no staged deletions"), "{out}");

    // resume: cycles come again, and the new user is provisioned.
    admin_ok(&fixture, &["resume", "--job", "robin"]);
    wait_for(Duration::from_secs(10), "a cycle after resume", || {
        (last_cycle(&fixture) != paused_at).then_some(())
    });
    wait_for(Duration::from_secs(10), "the new user", || {
        (sandbox.users().len() == 6).then_some(())
    });

    // restart through the daemon: the next cycle is initial.
    admin_ok(&fixture, &["restart", "--job", "robin"]);
    wait_for(Duration::from_secs(10), "an initial cycle", || {
        (status(&fixture)["last_cycle"]["kind"] == "initial").then_some(())
    });
    assert_eq!(sandbox.users().len(), 6, "no duplicate");
    daemon.signal("TERM");
    daemon.wait_until(std::time::Instant::now() + Duration::from_secs(10));
}

#[test]
fn a_quarantined_job_waits_for_its_next_attempt_and_restart_releases_it() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut o = JobOptions::new(&sandbox.url());
    o.interval = "1s".into();
    fixture.write_job(&o);
    fixture.run(&["sync"]).assert_code(0);
    let next_attempt = Utc::now() + Days::days(1);
    with_store(&fixture, |store| {
        let mut meta = store.meta("robin").unwrap();
        meta.quarantine = Some(quarantine(
            QuarantineReason::EncounteredQuarantineException,
            next_attempt,
        ));
        store.put_meta("robin", &meta).unwrap();
    });
    let before = last_cycle(&fixture);
    let mut daemon = start_daemon(&fixture);
    let s = wait_for(
        Duration::from_secs(10),
        "next_run at the next attempt",
        || {
            let s = status(&fixture);
            s["next_run"].is_string().then_some(s)
        },
    );
    assert_eq!(s["state"], "quarantine", "{s}");
    let next: DateTime<Utc> = s["next_run"].as_str().unwrap().parse().unwrap();
    assert!(
        (next - next_attempt).num_seconds().abs() <= 2,
        "next_run {next} is not the next attempt {next_attempt}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        last_cycle(&fixture),
        before,
        "a quarantined job ran a cycle"
    );
    let out = fixture.run(&["status"]);
    assert!(
        out.stdout
            .contains("`provisiond test-connection --job robin`"),
        "{out}"
    );

    // restart lifts it and wakes the worker: a cycle runs at once.
    admin_ok(
        &fixture,
        &["restart", "--job", "robin", "--reset", "quarantine"],
    );
    wait_for(Duration::from_secs(10), "a cycle after restart", || {
        (last_cycle(&fixture) != before).then_some(())
    });
    assert_eq!(status(&fixture)["state"], "active");
    daemon.signal("TERM");
    daemon.wait_until(std::time::Instant::now() + Duration::from_secs(10));
}
