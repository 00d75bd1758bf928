//! `provisiond run` as a process: interval and cron schedules, `status` and `sync` through
//! the control socket while the daemon holds the store, a second daemon refused at once,
//! SIGTERM, and `kill -9` in the middle of a cycle.

use crate::support::cli::*;
use provisiond::{FaultAction, FaultRule};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `status --json` (an array with one entry per job), for the one job.
fn status(fixture: &Fixture) -> Value {
    let out = fixture.run(&["status", "--json"]);
    out.assert_code(0);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}); {out}"));
    let jobs = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array; {out}"));
    assert_eq!(jobs.len(), 1, "{out}");
    jobs[0].clone()
}

/// Wait for this daemon to answer on its control socket with a last cycle. Asked on the
/// socket itself, not through `provisiond status`: that reads the store offline whenever no
/// daemon answers (a stale socket left by `kill -9`, a daemon not yet holding the store), and
/// an offline answer with the previous daemon's last cycle let this return before the new
/// daemon had even written its pid file.
fn wait_daemon_ready(fixture: &Fixture, daemon: &mut Proc) {
    wait_for(Duration::from_secs(20), "the daemon answers status", || {
        if let Some(s) = daemon.try_status() {
            panic!("the daemon exited early ({s}); {}", daemon.output());
        }
        let jobs = fixture.daemon_status()?;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        jobs[0]["last_cycle"].is_object().then_some(())
    });
}

/// SIGTERM (or SIGINT), then exit 0 within 10 s with the socket and pid file gone.
fn terminate(fixture: &Fixture, mut daemon: Proc, signal: &str) {
    let sent = Instant::now();
    daemon.signal(signal);
    let status = daemon
        .wait_until(sent + Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of SIG{signal}; {}", daemon.output()));
    assert_eq!(status.code(), Some(0), "{}", daemon.output());
    assert!(
        !fixture.socket_path().exists(),
        "control socket left behind"
    );
    assert!(!fixture.pid_path().exists(), "pid file left behind");
}

#[test]
fn daemon_interval_status_sync_second_daemon_and_sigterm() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut o = JobOptions::new(&sandbox.url());
    o.interval = "1s".into();
    fixture.write_job(&o);

    let mut daemon = fixture.spawn(&["run"]);
    wait_for(
        Duration::from_secs(20),
        "the daemon provisions users",
        || (sandbox.users().len() == 5).then_some(()),
    );
    wait_daemon_ready(&fixture, &mut daemon);

    // The pid file names the daemon.
    let pid = std::fs::read_to_string(fixture.pid_path()).unwrap();
    assert_eq!(pid.trim(), daemon.pid().to_string());

    // status: linked counts and a next run, through the socket.
    let s = wait_for(Duration::from_secs(10), "status shows a next_run", || {
        let s = status(&fixture);
        s["next_run"].is_string().then_some(s)
    });
    assert_eq!(s["job"], "robin", "{s}");
    assert_eq!(s["users_linked"], 5, "{s}");
    assert_eq!(s["groups_linked"], 1, "{s}");
    assert_eq!(s["last_cycle"]["status"], "succeeded", "{s}");
    let next: chrono::DateTime<chrono::Utc> = s["next_run"].as_str().unwrap().parse().unwrap();
    let ahead = next - chrono::Utc::now();
    assert!(
        ahead <= chrono::Duration::seconds(2),
        "next_run too far ahead for a 1 s interval: {s}"
    );
    let out = fixture.run(&["status"]);
    out.assert_code(0);
    assert!(out.stdout.contains("linked: 5 users, 1 groups"), "{out}");

    // Cycles keep coming on the interval.
    let first = s["last_cycle"]["cycle_id"].clone();
    wait_for(Duration::from_secs(10), "another scheduled cycle", || {
        (status(&fixture)["last_cycle"]["cycle_id"] != first).then_some(())
    });

    // sync goes through the daemon (which holds the store) and runs a cycle there.
    let mut d = directory(6);
    d["users"][5]["displayName"] = "Newcomer".into();
    fixture.write_directory(&d);
    let writes = sandbox.writes();
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["job"], "robin", "{v}");
    assert_eq!(v["status"], "succeeded", "{v}");
    // The daemon's own schedule may have picked the change up first.
    assert!(v["users"]["created"].as_u64().unwrap() <= 1, "{v}");
    wait_for(
        Duration::from_secs(10),
        "the new user is provisioned",
        || (sandbox.users().len() == 6).then_some(()),
    );
    assert_eq!(sandbox.writes(), writes + 1, "one POST for the new user");
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["kind"], "incremental", "{v}");
    assert_eq!(v["users"]["unchanged"], 6, "{v}");

    // A dry run through the daemon writes nothing.
    fixture.write_directory(&directory(7));
    let writes = sandbox.writes();
    let out = fixture.run(&["sync", "--dry-run"]);
    out.assert_code(0);
    assert!(out.stdout.contains("plan (dry run"), "{out}");
    assert_eq!(sandbox.writes(), writes);
    fixture.write_directory(&d);

    // A second daemon on the same state dir is refused at once, naming the first.
    let started = Instant::now();
    let out = run_command(
        fixture.command(&["run"]),
        fixture.dir.path(),
        Duration::from_secs(10),
    );
    assert!(started.elapsed() < Duration::from_secs(5), "slow refusal");
    out.assert_code(4);
    assert!(
        out.stderr
            .contains(&format!("provisiond run (pid {})", daemon.pid())),
        "the running daemon is not named; {out}"
    );
    assert!(
        !out.stderr.contains("does not answer"),
        "the daemon's socket does answer; {out}"
    );
    // ...and the first one is unharmed.
    assert!(daemon.try_status().is_none(), "{}", daemon.output());
    assert_eq!(status(&fixture)["users_linked"], 6);

    terminate(&fixture, daemon, "TERM");
    assert_eq!(sandbox.user_names().len(), 6);

    // The store is consistent and free again: status and sync work offline.
    let s = status(&fixture);
    assert_eq!(s["users_linked"], 6, "{s}");
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["kind"], "incremental");
}

#[test]
fn daemon_cron_every_second() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut o = JobOptions::new(&sandbox.url());
    o.cron = Some("*/1 * * * * *".into());
    fixture.write_job(&o);

    // At trace level, so the check that the token is never logged means something.
    let mut cmd = fixture.command(&["run"]);
    cmd.env("RUST_LOG", "trace");
    let mut daemon = Proc::spawn(cmd, fixture.dir.path());
    wait_daemon_ready(&fixture, &mut daemon);
    assert_eq!(sandbox.users().len(), 5);

    let s = wait_for(Duration::from_secs(10), "status shows a next_run", || {
        let s = status(&fixture);
        s["next_run"].is_string().then_some(s)
    });
    assert!(s["schedule"].as_str().unwrap().contains("cron"), "{s}");
    let next: chrono::DateTime<chrono::Utc> = s["next_run"].as_str().unwrap().parse().unwrap();
    let ahead = next - chrono::Utc::now();
    assert!(
        ahead <= chrono::Duration::seconds(2),
        "next_run too far ahead for every second: {s}"
    );

    // The cron fires: new cycles, and a change in the directory is picked up.
    let first = s["last_cycle"]["cycle_id"].clone();
    wait_for(Duration::from_secs(10), "a cron cycle", || {
        (status(&fixture)["last_cycle"]["cycle_id"] != first).then_some(())
    });
    fixture.write_directory(&directory(6));
    wait_for(
        Duration::from_secs(10),
        "the cron cycle adds a user",
        || (sandbox.users().len() == 6).then_some(()),
    );
    let logs = daemon.stderr();
    assert!(logs.contains("TRACE"), "not at trace level");
    assert!(!logs.contains(TOKEN), "the daemon logged the token");
    terminate(&fixture, daemon, "INT");
}

/// After a `kill -9` of the daemon (stale socket and pid file left behind), the store opens
/// offline and a new daemon starts and serves.
#[test]
fn daemon_restarts_after_kill_9() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut daemon = fixture.spawn(&["run"]);
    wait_daemon_ready(&fixture, &mut daemon);
    daemon.kill9();
    assert!(fixture.socket_path().exists(), "expected a stale socket");
    assert!(fixture.pid_path().exists(), "expected a stale pid file");

    let s = status(&fixture);
    assert_eq!(s["users_linked"], 5, "{s}");
    assert!(s["next_run"].is_null(), "{s}");

    // Start the daemon and, at the same moment, a few `status` commands: whichever opens
    // the store first, the others wait for it (or for the daemon's socket) instead of
    // failing, and the daemon starts.
    let mut daemon = fixture.spawn(&["run"]);
    let mut statuses: Vec<Proc> = (0..3)
        .map(|_| fixture.spawn(&["status", "--json"]))
        .collect();
    for p in &mut statuses {
        let code = p.wait_until(Instant::now() + Duration::from_secs(15));
        assert_eq!(
            code.and_then(|c| c.code()),
            Some(0),
            "status racing the daemon's start; {}",
            p.output()
        );
    }
    wait_daemon_ready(&fixture, &mut daemon);
    let pid = std::fs::read_to_string(fixture.pid_path()).unwrap();
    assert_eq!(pid.trim(), daemon.pid().to_string());
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["kind"], "incremental");
    terminate(&fixture, daemon, "TERM");
    assert_eq!(sandbox.user_names().len(), 5);
}

/// SIGTERM while a request hangs: the daemon gives in-flight requests a bounded time and
/// exits 0 within 10 s.
#[test]
fn daemon_sigterm_with_a_hung_request_exits_within_10s() {
    let sandbox = Sandbox::with_faults(vec![FaultRule::new(FaultAction::Delay {
        delay_ms: 60_000,
    })
    .method("POST")]);
    let fixture = Fixture::new(&sandbox.url());
    let mut daemon = fixture.spawn(&["run"]);
    wait_for(Duration::from_secs(20), "a POST in flight", || {
        if let Some(s) = daemon.try_status() {
            panic!("the daemon exited early ({s}); {}", daemon.output());
        }
        (sandbox.counts().post >= 1).then_some(())
    });
    terminate(&fixture, daemon, "TERM");
}

/// A one-shot `sync` holds the store: `status`, `sync` and `run` fail at once naming it;
/// SIGTERM stops it cleanly and the next sync converges.
#[test]
fn one_shot_sync_holding_the_store_is_named_and_stops_on_sigterm() {
    let sandbox = Sandbox::with_faults(vec![
        FaultRule::new(FaultAction::Delay { delay_ms: 20 }).method("POST")
    ]);
    let fixture = Fixture::new(&sandbox.url());
    let mut o = JobOptions::new(&sandbox.url());
    o.target_extra = "concurrency = 1\n".into();
    fixture.write_job(&o);
    fixture.write_directory(&directory(200));

    let mut sync = fixture.spawn(&["sync"]);
    wait_for(Duration::from_secs(20), "the sync creates users", || {
        if let Some(s) = sync.try_status() {
            panic!("sync ended early ({s}); {}", sync.output());
        }
        (sandbox.users().len() >= 5).then_some(())
    });
    let holder = format!("provisiond sync (pid {})", sync.pid());
    for args in [&["status"][..], &["sync", "--json"], &["run"]] {
        let started = Instant::now();
        let out = run_command(
            fixture.command(args),
            fixture.dir.path(),
            Duration::from_secs(10),
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}: slow");
        out.assert_code(4);
        assert!(
            out.stderr.contains(&holder),
            "{args:?}: holder not named; {out}"
        );
        assert!(out.stdout.is_empty(), "{args:?}; {out}");
    }
    assert!(
        sync.try_status().is_none(),
        "the sync died; {}",
        sync.output()
    );

    let sent = Instant::now();
    sync.signal("TERM");
    let code = sync
        .wait_until(sent + Duration::from_secs(10))
        .unwrap_or_else(|| panic!("sync did not stop within 10 s; {}", sync.output()));
    // An interrupted cycle is no failure: its own exit code, no problem per object not sent.
    assert_eq!(code.code(), Some(130), "{}", sync.output());
    assert!(sync.stdout().contains("interrupted"), "{}", sync.output());
    assert!(!sync.stdout().contains("FAILED"), "{}", sync.output());
    assert!(!sync.stdout().contains("Interrupted"), "{}", sync.output());
    let users = sandbox.users().len();
    assert!(users < 200, "the sync was not interrupted");
    let out = fixture.run(&["status"]);
    out.assert_code(0);
    assert!(out.stdout.contains("cycle interrupted at"), "{out}");

    sandbox.set_faults(vec![]);
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert_eq!(sandbox.user_names().len(), 200);
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["kind"], "incremental");
}

// ---------------------------------------------------------------------------------------
// kill -9 mid-cycle
// ---------------------------------------------------------------------------------------

const CRASH_USERS: usize = 300;

/// When to kill the first `sync`.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Once this many users exist in the sandbox.
    Users(usize),
    /// Once the group exists (member PATCHes under way).
    GroupCreated,
}

/// A large group, so the membership phase takes a while too.
fn crash_directory() -> Value {
    let mut d = directory(CRASH_USERS);
    d["groups"][0]["members"] = (0..CRASH_USERS).map(user_id).collect::<Vec<_>>().into();
    d
}

fn crash_case(at: KillAt) {
    // Every write is slowed, so a cycle takes a few seconds.
    let sandbox = Sandbox::with_faults(vec![
        FaultRule::new(FaultAction::Delay { delay_ms: 20 }).method("POST"),
        FaultRule::new(FaultAction::Delay { delay_ms: 20 }).method("PATCH"),
    ]);
    let fixture = Fixture::new(&sandbox.url());
    let mut o = JobOptions::new(&sandbox.url());
    o.target_extra = "concurrency = 2\nmember_batch = 10\n".into();
    fixture.write_job(&o);
    fixture.write_directory(&crash_directory());

    let mut first = fixture.spawn(&["sync", "--json"]);
    wait_for(Duration::from_secs(30), &format!("{at:?}"), || {
        if let Some(s) = first.try_status() {
            panic!(
                "sync ended before the kill ({at:?}, {s}); {}",
                first.output()
            );
        }
        match at {
            KillAt::Users(n) => sandbox.users().len() >= n,
            KillAt::GroupCreated => !sandbox.groups().is_empty(),
        }
        .then_some(())
    });
    first.kill9();
    let users_at_kill = sandbox.users().len();
    assert!(users_at_kill < CRASH_USERS || matches!(at, KillAt::GroupCreated));

    // Converge: the next sync finishes the job, the one after has nothing to do.
    let out = fixture.run(&["sync", "--json"]);
    let second = out.json();
    assert_eq!(out.code(), Some(0), "{at:?}: second sync; {out}");
    assert_eq!(second["status"], "succeeded", "{at:?}: {second}");
    assert_eq!(second["users"]["failed"], 0, "{at:?}: {second}");

    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    let third = out.json();
    assert_eq!(third["kind"], "incremental", "{at:?}: {third}");
    let writes: u64 = ["POST", "PATCH", "PUT", "DELETE"]
        .iter()
        .map(|m| third["requests"][m].as_u64().unwrap())
        .sum();
    assert_eq!(writes, 0, "{at:?}: the last cycle wrote: {third}");

    // Exactly one target user per source user, all there, all active; one complete group.
    let expected: Vec<String> = (0..CRASH_USERS).map(user_name).collect();
    assert_eq!(sandbox.user_names(), expected, "{at:?}: users differ");
    assert!(
        sandbox.users().iter().all(|u| u["active"] == true),
        "{at:?}: an inactive user"
    );
    let groups = sandbox.groups();
    assert_eq!(groups.len(), 1, "{at:?}: {groups:?}");
    let members = groups[0]["members"].as_array().cloned().unwrap_or_default();
    let mut member_ids: Vec<&str> = members.iter().filter_map(|m| m["value"].as_str()).collect();
    member_ids.sort_unstable();
    member_ids.dedup();
    assert_eq!(member_ids.len(), CRASH_USERS, "{at:?}: group members");
    let status = status(&fixture);
    assert_eq!(status["users_linked"], CRASH_USERS, "{at:?}: {status}");
    assert_eq!(status["groups_linked"], 1, "{at:?}: {status}");
}

#[test]
fn kill_9_mid_cycle_then_converge_without_duplicates() {
    for at in [KillAt::Users(20), KillAt::Users(170), KillAt::GroupCreated] {
        crash_case(at);
    }
}

/// The daemon driven in-process: `daemon::run` with the test's own shutdown future (no signal,
/// no child process) runs the start-up cycle, answers on its control socket, and stops
/// cleanly once the future completes, letting go of the store, the socket and the pid file.
#[test]
fn daemon_in_process_stops_when_its_shutdown_future_completes() {
    use provisiond::CycleStatus;
    use provisiond::{control_request, ControlRequest as Request, ControlResponse as Response};

    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let config = provisiond::Config::load(&fixture.config_path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(provisiond::run_daemon(config.clone(), async {
            let _ = stop_rx.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        let jobs = loop {
            assert!(
                Instant::now() < deadline,
                "no cycle reported through the socket"
            );
            let req = Request::Status { job: None };
            if let Ok(Some(Response::Status { jobs })) =
                control_request(&config.control_socket, &req, Some(Duration::from_secs(5))).await
            {
                if jobs[0].last_cycle.is_some() {
                    break jobs;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let last = jobs[0].last_cycle.as_ref().unwrap();
        assert_eq!(last.status, CycleStatus::Succeeded, "{last:?}");
        assert_eq!(sandbox.users().len(), 5);

        stop_tx.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .expect("the daemon stops within 10 s")
            .expect("the daemon task does not panic");
        assert!(result.is_ok(), "{result:?}");
    });
    assert!(!fixture.socket_path().exists(), "the socket is removed");
    assert!(!fixture.pid_path().exists(), "the pid file is removed");
    // The store is let go of: this process can open it again.
    provisiond::SledStore::open(&fixture.state_dir().join("state")).unwrap();
}

/// `run` re-executes itself (same pid) with mimalloc's purge delay at 0, so a quiet daemon
/// returns what its last cycle freed; a delay the environment sets is kept; the daemon still
/// stops on SIGTERM as the process its pid file names.
#[test]
fn daemon_runs_with_no_purge_delay_unless_the_environment_sets_one() {
    for (set, want) in [
        (None, "MIMALLOC_PURGE_DELAY=0"),
        (Some("250"), "MIMALLOC_PURGE_DELAY=250"),
    ] {
        let sandbox = Sandbox::start();
        let fixture = Fixture::new(&sandbox.url());
        fixture.write_job(&JobOptions::new(&sandbox.url()));
        let mut cmd = fixture.command(&["run"]);
        cmd.env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(v) = set {
            cmd.env("MIMALLOC_PURGE_DELAY", v);
        }
        let mut daemon = Proc::spawn(cmd, fixture.dir.path());
        wait_daemon_ready(&fixture, &mut daemon);
        let environ = std::fs::read(format!("/proc/{}/environ", daemon.pid())).unwrap();
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MIMALLOC_PURGE_DELAY="))
            .collect();
        assert_eq!(vars, [want], "{}", daemon.output());
        let pid_file = std::fs::read_to_string(fixture.pid_path()).unwrap();
        assert_eq!(pid_file.trim(), daemon.pid().to_string());
        terminate(&fixture, daemon, "TERM");
    }
}
