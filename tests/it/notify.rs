//! `provisiond run` under a service manager: the systemd notify protocol on a Unix datagram
//! socket this test listens on (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), and reload on SIGHUP with a
//! valid configuration (a job added runs) and an invalid one (the old one stays, the error is
//! logged with its file and key, the daemon lives on).

use crate::support::cli::*;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every notify message received, one entry per line (`READY=1`, `STATUS=…`), in order.
struct Listener {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    fn bind(path: &std::path::Path) -> Listener {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        // Ends when the test (holding the only other reference) is done with it.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while Arc::strong_count(&sink) > 1 {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    let mut l = sink.lock().unwrap();
                    l.extend(text.lines().map(str::to_string));
                }
            }
        });
        Listener { lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The index of the first line equal to (or, for `STATUS=`, starting with) `want` after
    /// index `from`, waiting for it.
    fn wait(&self, from: usize, want: &str, what: &str) -> usize {
        wait_for(Duration::from_secs(20), what, || {
            self.lines()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| {
                    l.as_str() == want
                        || ((want.ends_with(' ') || want.ends_with('=')) && l.starts_with(want))
                })
                .map(|(i, _)| i)
        })
    }
}

/// A second job, `hr`, provisioning its own sandbox.
fn second_job(url: &str, interval: &str) -> String {
    format!(
        r#"
[[jobs]]
name = "hr"
interval = "{interval}"
scope = "assigned"

[jobs.source]
kind = "file"
path = "directory.json"

[jobs.target]
url = "{url}"
token_file = "token"
"#
    )
}

#[test]
fn notify_protocol_and_reload_on_sighup() {
    let robin = Sandbox::start();
    let hr = Sandbox::start();
    let fixture = Fixture::new(&robin.url());
    let first = job_config(&JobOptions::new(&robin.url()));
    let notify = fixture.path("notify.sock");
    let listener = Listener::bind(&notify);

    let mut cmd = fixture.command(&["run"]);
    // 400 ms: a ping every 200 ms.
    cmd.env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID");
    let mut daemon = Proc::spawn(cmd, fixture.dir.path());

    let ready = listener.wait(0, "READY=1", "READY=1");
    // The startup cycle provisions robin; the status line then says the job idles.
    wait_for(Duration::from_secs(20), "robin provisioned", || {
        (robin.users().len() == 5).then_some(())
    });
    let idle = listener.wait(ready, "STATUS=robin: idle, next cycle ", "an idle status");
    let ping = listener.wait(ready, "WATCHDOG=1", "WATCHDOG=1");
    // Pings keep coming: at least three more within a second and a half.
    std::thread::sleep(Duration::from_millis(1500));
    let pings = listener.lines()[ping..]
        .iter()
        .filter(|l| *l == "WATCHDOG=1")
        .count();
    assert!(pings >= 4, "{pings} pings: {:?}", listener.lines());

    // A valid reload: the job added runs, robin keeps going.
    fixture.write_config(&format!("{first}{}", second_job(&hr.url(), "40m")));
    daemon.signal("HUP");
    let reloading = listener.wait(idle, "RELOADING=1", "RELOADING=1");
    let monotonic = listener.wait(reloading, "MONOTONIC_USEC=", "MONOTONIC_USEC");
    assert_eq!(monotonic, reloading + 1, "{:?}", listener.lines());
    let reloaded = listener.wait(reloading, "READY=1", "READY=1 after the reload");
    wait_for(Duration::from_secs(20), "the added job provisions", || {
        (hr.users().len() == 5).then_some(())
    });
    let jobs = wait_for(Duration::from_secs(20), "status names both jobs", || {
        let jobs = fixture.daemon_status()?;
        (jobs.len() == 2 && jobs[1]["last_cycle"].is_object()).then_some(jobs)
    });
    assert_eq!(jobs[1]["job"], "hr", "{jobs:?}");
    assert_eq!(jobs[1]["last_cycle"]["status"], "succeeded", "{jobs:?}");
    listener.wait(
        reloaded,
        "STATUS=robin: idle, next cycle ",
        "the status after it",
    );
    assert!(
        listener
            .lines()
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("; hr: ")),
        "{:?}",
        listener.lines()
    );

    // An invalid reload: the old configuration stays, the error names the file and key.
    fixture.write_config(&format!("{first}{}", second_job(&hr.url(), "soon")));
    daemon.signal("HUP");
    let reloading = listener.wait(reloaded + 1, "RELOADING=1", "the second RELOADING=1");
    let reloaded = listener.wait(reloading, "READY=1", "READY=1 after the refused reload");
    let logged = wait_for(Duration::from_secs(10), "the refusal is logged", || {
        let err = daemon.stderr();
        err.contains("configuration not reloaded").then_some(err)
    });
    let line = logged
        .lines()
        .find(|l| l.contains("configuration not reloaded"))
        .unwrap();
    assert!(line.contains("provisiond.toml"), "{line}");
    assert!(line.contains("jobs[1]"), "{line}");
    assert!(daemon.try_status().is_none(), "{}", daemon.output());
    let jobs = fixture.daemon_status().expect("the daemon still answers");
    assert_eq!(jobs.len(), 2, "{jobs:?}");

    // A stop: STOPPING=1, then a clean exit.
    let sent = Instant::now();
    daemon.signal("TERM");
    let status = daemon
        .wait_until(sent + Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s; {}", daemon.output()));
    assert_eq!(status.code(), Some(0), "{}", daemon.output());
    let stopping = listener.wait(reloaded, "STOPPING=1", "STOPPING=1");
    assert!(ready < ping && ping < reloading && reloading < stopping);
    // No READY after STOPPING, and nothing sent before READY but its status line.
    let lines = listener.lines();
    assert!(
        !lines[stopping..].iter().any(|l| l == "READY=1"),
        "{lines:?}"
    );
    assert!(
        lines[..ready].iter().all(|l| l.starts_with("STATUS=")),
        "{lines:?}"
    );
}

#[test]
fn sighup_reloads_and_never_stops_the_daemon_without_notify_socket() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    // Not inherited from whatever runs the tests: this daemon has no service manager.
    let mut cmd = fixture.command(&["run"]);
    cmd.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC");
    let mut daemon = Proc::spawn(cmd, fixture.dir.path());
    wait_for(Duration::from_secs(20), "the daemon answers", || {
        fixture.daemon_status()
    });
    // Each SIGHUP is handled (its reload logged) before the next is sent, so none coalesce.
    for n in 1..=3 {
        daemon.signal("HUP");
        wait_for(Duration::from_secs(10), "the reload is logged", || {
            (daemon.stderr().matches("configuration reloaded").count() >= n).then_some(())
        });
    }
    assert!(daemon.try_status().is_none(), "{}", daemon.output());
    assert!(fixture.daemon_status().is_some());
    let sent = Instant::now();
    daemon.signal("TERM");
    let status = daemon
        .wait_until(sent + Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit; {}", daemon.output()));
    assert_eq!(status.code(), Some(0), "{}", daemon.output());
}
