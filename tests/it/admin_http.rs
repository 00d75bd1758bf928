//! The admin HTTP endpoint (`[admin] listen`) of the real daemon against the sandbox:
//! `/healthz`, `/readyz` (200, and 503 for a job whose token is refused), `/status` (the
//! `status --json` document) and `/metrics` (parsed strictly, with the expected families and
//! values); a non-loopback `listen` without `allow_remote` is a config error.

use crate::support::cli::*;
use crate::support::free_port;
use crate::support::openmetrics::{get, parse};
use serde_json::Value;
use std::time::Duration;

/// A one-job config for the sandbox at `url`, with the admin endpoint on `listen`.
fn config_with_admin(url: &str, admin: &str) -> String {
    // At the end: top-level keys (`state_dir`) must come before the first table.
    format!("{}\n{admin}", job_config(&JobOptions::new(url)))
}

/// Start the daemon with the endpoint on a free port; wait until its first cycle is done.
fn start(fixture: &Fixture, url: &str) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    fixture.write_config(&config_with_admin(
        url,
        &format!("[admin]\nlisten = \"{addr}\"\n"),
    ));
    let mut daemon = fixture.spawn(&["run"]);
    wait_for(Duration::from_secs(30), "a first cycle", || {
        if let Some(s) = daemon.try_status() {
            panic!("the daemon exited early ({s}); {}", daemon.output());
        }
        let jobs = fixture.daemon_status()?;
        // Recorded, over *and* rescheduled: a cycle records its summary before it returns,
        // and the worker names the next run only after that, so a status read in between
        // says `running`, or no `next_run`, where the next read says otherwise.
        (jobs[0]["last_cycle"].is_object()
            && jobs[0]["running"] == false
            && !jobs[0]["next_run"].is_null())
        .then_some(())
    });
    (daemon, addr)
}

fn stop(mut daemon: Proc) {
    daemon.signal("TERM");
    let status = daemon
        .wait_until(std::time::Instant::now() + Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s; {}", daemon.output()));
    assert_eq!(status.code(), Some(0), "{}", daemon.output());
}

#[test]
fn admin_endpoint_serves_health_readiness_status_and_metrics() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let (daemon, addr) = start(&fixture, &sandbox.url());

    let (code, _, body) = get(&addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = get(&addr, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ready"], true);

    // /status is the document `status --json` prints (the daemon answers both).
    let (code, _, body) = get(&addr, "/status");
    assert_eq!(code, 200, "{body}");
    let http: Value = serde_json::from_str(&body).unwrap();
    let out = fixture.run(&["status", "--json"]);
    out.assert_code(0);
    let cli: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(http, cli);
    assert_eq!(http[0]["users_linked"], 5, "{http}");

    let (code, content_type, text) = get(&addr, "/metrics");
    assert_eq!(code, 200, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let m = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let robin = [("job", "robin")];
    for family in [
        "provisiond_cycles",
        "provisiond_cycle_duration_seconds",
        "provisiond_objects",
        "provisiond_requests",
        "provisiond_retries",
        "provisiond_escrows",
        "provisiond_quarantined",
        "provisiond_staged_deletes",
        "provisiond_last_success_timestamp_seconds",
        "provisiond_source_read_seconds",
        "provisiond_build_info",
    ] {
        assert!(m.types.contains_key(family), "no {family}:\n{text}");
    }
    let succeeded = m.find(
        "provisiond_cycles_total",
        &[("job", "robin"), ("status", "succeeded")],
    );
    assert!(
        succeeded.iter().map(|s| s.value).sum::<f64>() >= 1.0,
        "{text}"
    );
    assert_eq!(
        m.value(
            "provisiond_cycles_total",
            &[
                ("job", "robin"),
                ("kind", "initial"),
                ("status", "succeeded")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "provisiond_objects_total",
            &[
                ("job", "robin"),
                ("type", "user"),
                ("action", "create"),
                ("result", "success")
            ]
        ),
        5.0,
        "objects created = the directory's users"
    );
    assert_eq!(
        m.value("provisiond_cycle_duration_seconds_count", &robin),
        1.0
    );
    assert!(m.value("provisiond_source_read_seconds", &robin) >= 0.0);
    // Every request the sandbox served, by method and status, came from this job.
    let posts = m.value(
        "provisiond_requests_total",
        &[("job", "robin"), ("method", "POST"), ("code", "201")],
    );
    assert_eq!(posts, sandbox.counts().post as f64, "{text}");
    assert_eq!(
        m.value(
            "provisiond_retries_total",
            &[("job", "robin"), ("reason", "throttled")]
        ),
        0.0
    );
    assert_eq!(m.value("provisiond_escrows", &robin), 0.0);
    assert_eq!(m.value("provisiond_staged_deletes", &robin), 0.0);
    assert_eq!(
        m.find("provisiond_quarantined", &robin)
            .iter()
            .map(|s| s.value)
            .sum::<f64>(),
        0.0
    );
    let last = m.value("provisiond_last_success_timestamp_seconds", &robin);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(last > now - 120.0 && last <= now + 1.0, "{last} vs {now}");
    assert_eq!(
        m.value(
            "provisiond_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    stop(daemon);
    // The endpoint stopped with the daemon.
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

#[test]
fn admin_readyz_is_503_while_a_job_token_is_refused() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    fixture.write_token("not-the-token");
    let (daemon, addr) = start(&fixture, &sandbox.url());
    let (code, _, body) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false, "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("robin"), "{reason}");
    assert!(!body.contains("not-the-token"), "{body}");
    // The process still serves, and metrics say why.
    assert_eq!(get(&addr, "/healthz").0, 200);
    let (_, _, text) = get(&addr, "/metrics");
    let m = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        m.value(
            "provisiond_quarantined",
            &[
                ("job", "robin"),
                ("reason", "EncounteredQuarantineException")
            ]
        ),
        1.0,
        "{text}"
    );
    assert!(
        m.value(
            "provisiond_requests_total",
            &[("job", "robin"), ("method", "GET"), ("code", "401")]
        ) >= 1.0,
        "{text}"
    );
    stop(daemon);
}

#[test]
fn admin_listen_beyond_loopback_needs_allow_remote() {
    let fixture = Fixture::new("http://127.0.0.1:9");
    fixture.write_config(&config_with_admin(
        "http://127.0.0.1:9",
        "[admin]\nlisten = \"0.0.0.0:9464\"\n",
    ));
    let out = fixture.run(&["check-config"]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.all().contains("admin.listen"), "{out}");
    assert!(out.all().contains("allow_remote = true"), "{out}");
    assert!(out.all().contains("provisiond.toml"), "{out}");

    fixture.write_config(&config_with_admin(
        "http://127.0.0.1:9",
        "[admin]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n",
    ));
    let out = fixture.run(&["check-config"]);
    assert!(!out.all().contains("admin.listen"), "{out}");
}
