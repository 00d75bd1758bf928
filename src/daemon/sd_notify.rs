//! The systemd notify protocol (`Type=notify`): `READY=1` once the configuration is checked
//! and the store is open, `RELOADING=1` and `READY=1` around a reload, a `STATUS=` line saying
//! what each job is doing, `WATCHDOG=1` from the scheduler loop and `STOPPING=1` on the way
//! out. Nothing is sent when `NOTIFY_SOCKET` is unset (the `sd-notify` crate checks it on
//! every call), so the daemon run by hand or in a test behaves as before.

use super::jobs::{Gate, JobRuntime};
use crate::state::StateStore;
use ::sd_notify::NotifyState;
use chrono::{DateTime, Local, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Whether a service manager listens: `NOTIFY_SOCKET` is set.
pub(super) fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty())
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises,
/// so one late tick does not get the service killed. `None` when no watchdog is asked for.
pub(super) fn watchdog_interval() -> Option<Duration> {
    ::sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

fn send(states: &[NotifyState<'_>]) {
    // A manager that went away is no reason to stop provisioning: log and go on.
    if let Err(e) = ::sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// `READY=1` with the status line.
pub(super) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=`, which `Type=notify-reload` requires to match the
/// reload to the signal it sent.
pub(super) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]),
    }
}

/// `STOPPING=1`.
pub(super) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight requests"),
    ]);
}

/// `WATCHDOG=1`.
pub(super) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// A `STATUS=` line.
pub(super) fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// What every job is doing, in one line for `systemctl status`: `robin: incremental cycle,
/// exporting 120/800; hr: idle, next cycle 18:40`.
pub(super) fn status_line(jobs: &[Arc<JobRuntime>], store: &dyn StateStore) -> String {
    if jobs.is_empty() {
        return "no jobs configured".into();
    }
    jobs.iter()
        .map(|j| format!("{}: {}", j.config.name, job_status(j, store)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn job_status(job: &JobRuntime, store: &dyn StateStore) -> String {
    if job.is_busy() {
        let kind = job.running_kind().map_or("a", |k| k.as_str());
        let (done, planned) = (job.progress.position(), job.progress.length().unwrap_or(0));
        return if planned > 0 {
            format!("{kind} cycle, exporting {done}/{planned}")
        } else {
            format!("{kind} cycle running")
        };
    }
    let Ok(meta) = store.meta(&job.config.name) else {
        return "cannot read its record".into();
    };
    match Gate::of(&meta, Utc::now()) {
        Gate::Disabled => "disabled (provisiond restart to resume)".into(),
        Gate::Paused => "paused".into(),
        Gate::Quarantined(at) => {
            let reason = meta
                .quarantine
                .as_ref()
                .map(|q| format!("{:?}", q.reason))
                .unwrap_or_default();
            format!("quarantined ({reason}) until {}", clock(at))
        }
        Gate::Run => match job.next_run() {
            Some(at) => format!("idle, next cycle {}", clock(at)),
            None => "idle".into(),
        },
    }
}

/// A time as an admin reading `systemctl status` on that machine expects it: local, to the
/// minute, with the date only when it is not today.
fn clock(at: DateTime<Utc>) -> String {
    let local = at.with_timezone(&Local);
    if local.date_naive() == Local::now().date_naive() {
        local.format("%H:%M").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{JobMeta, MemoryStore, Quarantine, QuarantineError, QuarantineReason};

    fn job() -> Arc<JobRuntime> {
        let config = crate::daemon::test_support::config();
        Arc::new(JobRuntime::new(config.jobs[0].clone()).unwrap())
    }

    #[test]
    fn the_status_line_says_what_each_job_does() {
        let store = MemoryStore::default();
        let j = job();
        assert_eq!(status_line(std::slice::from_ref(&j), &store), "robin: idle");
        let at = Utc::now() + chrono::Duration::minutes(5);
        j.set_next_run(Some(at));
        assert_eq!(
            status_line(std::slice::from_ref(&j), &store),
            format!("robin: idle, next cycle {}", clock(at))
        );
        let q = Quarantine {
            reason: QuarantineReason::TooManyDeletes,
            series_began: Utc::now(),
            current_began: Utc::now(),
            next_attempt: at,
            series_count: 1,
            error: QuarantineError {
                code: "TooManyDeletes".into(),
                message: "m".into(),
            },
        };
        let meta = JobMeta {
            quarantine: Some(q),
            ..JobMeta::default()
        };
        store.put_meta("robin", &meta).unwrap();
        assert_eq!(
            status_line(std::slice::from_ref(&j), &store),
            format!("robin: quarantined (TooManyDeletes) until {}", clock(at))
        );
        let meta = JobMeta {
            paused: true,
            ..meta
        };
        store.put_meta("robin", &meta).unwrap();
        assert_eq!(status_line(&[j], &store), "robin: paused");
        assert_eq!(status_line(&[], &store), "no jobs configured");
    }
}
