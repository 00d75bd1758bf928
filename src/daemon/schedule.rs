//! When each job's cycles run: one worker per job runs a cycle at start-up, then on the job's
//! schedule, never two cycles of one job at once. An interval counts from the end of a cycle on
//! tokio's monotonic clock (a wall-clock jump neither skips nor repeats a cycle). A cron
//! schedule (UTC) is computed with tokio-cron-scheduler's parser, the one cron engine, and
//! slept for: no scheduler task that could stop firing after a clock jump.

use super::jobs::{run_scheduled_cycle, Daemon, Gate, JobRuntime};
use super::sd_notify;
use crate::config::{Config, Schedule};
use crate::util::cron::{CronError, CronSchedule};
use crate::util::ConfigError;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the status line is refreshed when no watchdog sets a faster pace.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Why a reload was refused: the configuration in force stays.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReloadError {
    /// The file does not load or check.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A job's target settings do not make a client.
    #[error("job {job:?}: {source}")]
    Target {
        job: String,
        #[source]
        source: Box<crate::target::TargetError>,
    },
    /// A job's cron expression does not parse.
    #[error("job {job:?}: {source}")]
    Cron {
        job: String,
        #[source]
        source: CronError,
    },
}

/// A job's worker as the scheduler keeps it.
struct Worker {
    job: Arc<JobRuntime>,
    /// Cancelled when a reload removes or replaces the job: the worker ends after its
    /// in-flight cycle (which only the daemon's stop token interrupts).
    retire: CancellationToken,
    /// Ends with the time the worker's next cycle was due, for its replacement.
    handle: JoinHandle<Option<DateTime<Utc>>>,
}

/// Run every job's worker until the daemon's stop token is cancelled, reloading the
/// configuration on each message of `reloads` (SIGHUP) and keeping the service manager told
/// (`READY=1`, the status line, `WATCHDOG=1` at half its period). Fails at once, running
/// nothing, when a cron expression does not parse (the configuration check rejects those).
pub(super) async fn run_workers(
    daemon: Arc<Daemon>,
    mut reloads: UnboundedReceiver<()>,
) -> Result<(), CronError> {
    let mut planned = Vec::new();
    for job in daemon.jobs() {
        let plan = Plan::of(&job.config.schedule)?;
        planned.push((job, plan));
    }
    let mut workers: HashMap<String, Worker> = HashMap::new();
    for (job, plan) in planned {
        let worker = spawn_worker(&daemon, job.clone(), plan, None);
        workers.insert(job.config.name.clone(), worker);
    }
    // Retired workers still finishing their in-flight cycle: awaited on the way out.
    let mut retired: Vec<JoinHandle<Option<DateTime<Utc>>>> = Vec::new();
    let notifying = sd_notify::enabled();
    let watchdog = sd_notify::watchdog_interval();
    let mut status_line = sd_notify::status_line(&daemon.jobs(), daemon.store.as_ref());
    // The configuration is checked and the store is open: ready.
    sd_notify::ready(&status_line);
    let mut tick = tokio::time::interval(watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reloads_open = true;
    loop {
        tokio::select! {
            () = daemon.stop.cancelled() => break,
            r = reloads.recv(), if reloads_open => match r {
                Some(()) => {
                    sd_notify::reloading();
                    match reload(&daemon, &mut workers, &mut retired) {
                        Ok(()) => {}
                        Err(e) => log_refused(&daemon.config(), &e),
                    }
                    status_line = sd_notify::status_line(&daemon.jobs(), daemon.store.as_ref());
                    sd_notify::ready(&status_line);
                }
                None => reloads_open = false,
            },
            _ = tick.tick(), if notifying => {
                // From this loop, not a task of its own: a scheduler that stopped turning
                // stops the watchdog pings too, and systemd restarts the service.
                if watchdog.is_some() {
                    sd_notify::watchdog();
                }
                let line = sd_notify::status_line(&daemon.jobs(), daemon.store.as_ref());
                if line != status_line {
                    sd_notify::status(&line);
                    status_line = line;
                }
            }
        }
    }
    for w in workers.into_values() {
        let _ = w.handle.await;
    }
    for h in retired {
        let _ = h.await;
    }
    Ok(())
}

fn spawn_worker(
    daemon: &Arc<Daemon>,
    job: Arc<JobRuntime>,
    plan: Plan,
    after: Option<Worker>,
) -> Worker {
    let retire = CancellationToken::new();
    let handle = {
        let daemon = daemon.clone();
        let job = job.clone();
        let retire = retire.clone();
        tokio::spawn(async move {
            // A replacement starts once the worker it replaces has finished its in-flight
            // cycle, at the time that one's next cycle was due (or sooner, by its own
            // schedule): the new settings take effect between cycles, and a reload costs no
            // extra cycle.
            let start_at = match after {
                Some(old) => old.handle.await.ok().flatten().map(|due| {
                    let now = Utc::now();
                    plan.next_from(now).map_or(due, |own| own.min(due)).max(now)
                }),
                None => None,
            };
            worker(&daemon, job, plan, retire, start_at).await
        })
    };
    Worker {
        job,
        retire,
        handle,
    }
}

/// Read the configuration file again and put it in force: new jobs start (a cycle at once, as
/// at start-up), every kept job gets a new runtime (its token and settings read again) whose
/// worker takes over after the old one's in-flight cycle, removed jobs stop after theirs. On
/// any error nothing changes.
fn reload(
    daemon: &Arc<Daemon>,
    workers: &mut HashMap<String, Worker>,
    retired: &mut Vec<JoinHandle<Option<DateTime<Utc>>>>,
) -> Result<(), ReloadError> {
    let old = daemon.config();
    let new = Config::load(&old.path)?;
    if new.state_dir != old.state_dir || new.control_socket != old.control_socket {
        tracing::warn!(
            file = %old.path.display(),
            "state_dir and control_socket changes take effect at the next start, not on a reload"
        );
    }
    // Everything that can fail first, so that a refused reload leaves all as it was.
    let mut prepared = Vec::new();
    for jc in &new.jobs {
        let plan = Plan::of(&jc.schedule).map_err(|source| ReloadError::Cron {
            job: jc.name.clone(),
            source,
        })?;
        let runtime = match workers.get(&jc.name) {
            Some(w) => JobRuntime::replacing(jc.clone(), &w.job),
            None => JobRuntime::new(jc.clone()),
        }
        .map_err(|source| ReloadError::Target {
            job: jc.name.clone(),
            source: Box::new(source),
        })?;
        prepared.push((Arc::new(runtime), plan));
    }
    let jobs: Vec<Arc<JobRuntime>> = prepared.iter().map(|(j, _)| j.clone()).collect();
    let mut added = Vec::new();
    let mut kept = Vec::new();
    let mut next: HashMap<String, Worker> = HashMap::new();
    for (job, plan) in prepared {
        let name = job.config.name.clone();
        let previous = workers.remove(&name);
        match &previous {
            Some(w) => {
                w.retire.cancel();
                kept.push(name.clone());
            }
            None => added.push(name.clone()),
        }
        next.insert(name, spawn_worker(daemon, job, plan, previous));
    }
    let removed: Vec<String> = workers.keys().cloned().collect();
    for (_, w) in workers.drain() {
        w.retire.cancel();
        retired.push(w.handle);
    }
    *workers = next;
    daemon.replace(new, jobs);
    tracing::info!(
        file = %old.path.display(),
        added = ?added,
        removed = ?removed,
        kept = ?kept,
        "configuration reloaded: changes take effect between cycles"
    );
    Ok(())
}

fn log_refused(config: &Config, e: &ReloadError) {
    match e {
        ReloadError::Config(c) => tracing::error!(
            file = %c.file.display(),
            key = %c.key,
            error = %c,
            "configuration not reloaded: the previous one stays in force"
        ),
        other => tracing::error!(
            file = %config.path.display(),
            error = %other,
            "configuration not reloaded: the previous one stays in force"
        ),
    }
}

/// A job's schedule, parsed.
enum Plan {
    Interval(Duration),
    Cron(CronSchedule),
}

impl Plan {
    fn of(schedule: &Schedule) -> Result<Plan, CronError> {
        Ok(match schedule {
            Schedule::Cron(expr) => Plan::Cron(CronSchedule::parse(expr)?),
            Schedule::Interval(d) => Plan::Interval(*d),
        })
    }

    /// When a cycle would be due by this schedule alone if the last one ended at `now`.
    fn next_from(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Plan::Interval(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| now.checked_add_signed(d)),
            Plan::Cron(cron) => cron.next_after(now),
        }
    }
}

/// One job's worker: a cycle at `start_at` (at once when `None`), then on the schedule, until
/// the daemon stops or a reload retires it. Returns, when retired, when its next cycle was due.
async fn worker(
    daemon: &Daemon,
    job: Arc<JobRuntime>,
    plan: Plan,
    retire: CancellationToken,
    start_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let name = job.config.name.clone();
    let stop = &daemon.stop;
    // The time the coming cycle stands for: the start-up, or the cron occurrence it runs for.
    // Occurrences after it that pass during the cycle make one more cycle at once, as a tick
    // queued behind a running cycle did.
    let mut due = start_at.unwrap_or_else(Utc::now);
    if let Some(at) = start_at {
        job.set_next_run(Some(at));
        tokio::select! {
            () = tokio::time::sleep(until(at)) => {}
            () = job.wake.notified() => due = Utc::now(),
            () = stop.cancelled() => {
                job.set_next_run(None);
                return None;
            }
            () = retire.cancelled() => return Some(at),
        }
        due = due.max(Utc::now());
    }
    let mut retired_at = None;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if retire.is_cancelled() {
            retired_at = Some(Utc::now());
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
                () = retire.cancelled() => {
                    retired_at = job.next_run();
                    break;
                }
            },
            None => tokio::select! {
                () = job.wake.notified() => due = Utc::now(),
                () = stop.cancelled() => break,
                // Paused or disabled: the replacement looks at the gate itself.
                () = retire.cancelled() => {
                    retired_at = Some(Utc::now());
                    break;
                }
            },
        }
        // A wake-up behind the wall clock (a jump forward) runs once, for now, rather than
        // once per missed occurrence.
        due = due.max(Utc::now());
    }
    job.set_next_run(None);
    tracing::info!(job = %name, retired = retired_at.is_some(), "worker stopped");
    retired_at
}

/// How long until `at` by the wall clock; zero when it has passed.
fn until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}
