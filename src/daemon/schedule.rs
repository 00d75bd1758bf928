//! When each job's cycles run: one worker per job runs a cycle at start-up, then on the job's
//! schedule, never two cycles of one job at once. An interval counts from the end of a cycle on
//! tokio's monotonic clock (a wall-clock jump neither skips nor repeats a cycle). A cron
//! schedule (UTC) is computed with tokio-cron-scheduler's parser, the one cron engine, and
//! slept for: no scheduler task that could stop firing after a clock jump.

use super::jobs::{run_scheduled_cycle, Daemon, Gate, JobRuntime};
use crate::config::Schedule;
use crate::util::cron::{CronError, CronSchedule};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Run every job's worker until the daemon's stop token is cancelled. Fails at once, running
/// nothing, when a cron expression does not parse (the configuration check rejects those).
pub(super) async fn run_workers(daemon: Arc<Daemon>) -> Result<(), CronError> {
    let mut planned = Vec::new();
    for job in &daemon.jobs {
        let plan = match &job.config.schedule {
            Schedule::Cron(expr) => Plan::Cron(CronSchedule::parse(expr)?),
            Schedule::Interval(d) => Plan::Interval(*d),
        };
        planned.push((job.clone(), plan));
    }
    let workers: Vec<_> = planned
        .into_iter()
        .map(|(job, plan)| {
            let daemon = daemon.clone();
            tokio::spawn(async move { worker(&daemon, job, plan).await })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

/// A job's schedule, parsed.
enum Plan {
    Interval(Duration),
    Cron(CronSchedule),
}

async fn worker(daemon: &Daemon, job: Arc<JobRuntime>, plan: Plan) {
    let name = job.config.name.clone();
    let stop = &daemon.stop;
    // The time the coming cycle stands for: the start-up, or the cron occurrence it runs for.
    // Occurrences after it that pass during the cycle make one more cycle at once, as a tick
    // queued behind a running cycle did.
    let mut due = Utc::now();
    loop {
        if stop.is_cancelled() {
            break;
        }
        job.set_next_run(None);
        // Paused, disabled or quarantined jobs start no cycle (decided under the cycle lock).
        if let Some(report) = run_scheduled_cycle(&job, daemon.store.as_ref(), stop).await {
            daemon.metrics.record(&report);
            tracing::info!(job = %name, status = ?report.summary.status, "scheduled cycle done");
        }
        if stop.is_cancelled() {
            break;
        }
        let scheduled = match &plan {
            Plan::Interval(d) => Some(*d),
            Plan::Cron(cron) => cron.next_after(due).map(|at| {
                due = at;
                until(at)
            }),
        };
        // The job's record may hold the next cycle back: a quarantine until its next attempt
        // (slept to exactly, whatever the schedule), a pause or disabling until an admin
        // command wakes the worker.
        let gate = match daemon.store.meta(&name) {
            Ok(meta) => Gate::of(&meta, Utc::now()),
            Err(_) => Gate::Run,
        };
        let wait = match gate {
            Gate::Run => scheduled,
            Gate::Quarantined(at) => {
                due = at;
                Some(until(at))
            }
            Gate::Paused | Gate::Disabled => None,
        };
        job.set_next_run(wait.and_then(|d| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d))
        }));
        match wait {
            Some(d) => tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = job.wake.notified() => due = Utc::now(),
                () = stop.cancelled() => break,
            },
            None => tokio::select! {
                () = job.wake.notified() => due = Utc::now(),
                () = stop.cancelled() => break,
            },
        }
        // A wake-up behind the wall clock (a jump forward) runs once, for now, rather than
        // once per missed occurrence.
        due = due.max(Utc::now());
    }
    job.set_next_run(None);
    tracing::info!(job = %name, "worker stopped");
}

/// How long until `at` by the wall clock; zero when it has passed.
fn until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}
