//! The daemon (`provisiond run`): one worker per job, each running a cycle at start-up and
//! then on its schedule, never two cycles of one job at once. The next run is scheduled after
//! each cycle ends, on tokio's monotonic clock (a wall-clock jump neither skips nor repeats a
//! cycle); cron schedules fire through tokio-cron-scheduler in UTC.

use crate::config::{cron_schedule, Config, JobConfig, Schedule};
use crate::cycle::{run_cycle, CycleOptions, CycleReport, JobSpec};
use crate::state::{MemoryStore, StateStore};
use crate::summary::CycleSummary;
use crate::target::{DryRunTarget, ScimClient, TargetError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A job as the daemon runs it.
pub struct JobRuntime {
    pub config: JobConfig,
    pub spec: JobSpec,
    pub client: ScimClient,
    /// Held for the whole of a cycle: scheduled, triggered and `sync` cycles queue on it.
    running: tokio::sync::Mutex<()>,
    busy: AtomicBool,
    next_run: Mutex<Option<DateTime<Utc>>>,
    /// A cron tick: the worker runs a cycle when it is free.
    tick: Notify,
}

impl JobRuntime {
    pub fn new(config: JobConfig) -> Result<Self, TargetError> {
        let client = ScimClient::new(config.target.clone())?;
        Ok(JobRuntime {
            spec: config.spec(),
            config,
            client,
            running: tokio::sync::Mutex::new(()),
            busy: AtomicBool::new(false),
            next_run: Mutex::new(None),
            tick: Notify::new(),
        })
    }

    fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        *self.next_run.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    fn next_run(&self) -> Option<DateTime<Utc>> {
        *self.next_run.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `status` shows per job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    pub schedule: String,
    pub running: bool,
    pub next_run: Option<DateTime<Utc>>,
    pub users_linked: usize,
    pub groups_linked: usize,
    pub last_success: Option<DateTime<Utc>>,
    pub last_cycle: Option<CycleSummary>,
    /// Why next_run is empty, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Status of a job read from the store alone (no daemon running).
pub fn offline_status(
    job: &JobConfig,
    store: &dyn StateStore,
) -> Result<JobStatus, crate::state::StateError> {
    let meta = store.meta(&job.name)?;
    let (users_linked, groups_linked) = store.link_counts(&job.name)?;
    Ok(JobStatus {
        job: job.name.clone(),
        schedule: job.schedule.to_string(),
        running: false,
        next_run: None,
        users_linked,
        groups_linked,
        last_success: meta.last_success,
        last_cycle: meta.last_cycle,
        note: Some("the daemon is not running: no cycle is scheduled".into()),
    })
}

/// Run one cycle of a job with a store, for real or as a dry run.
pub async fn run_job_cycle(
    job: &JobRuntime,
    store: &dyn StateStore,
    dry_run: bool,
    progress: Option<&indicatif::ProgressBar>,
    stop: &AtomicBool,
) -> CycleReport {
    let _guard = job.running.lock().await;
    job.busy.store(true, Ordering::SeqCst);
    let opts = CycleOptions {
        dry_run,
        record_actions: dry_run,
        progress,
    };
    let report = if dry_run {
        // Plan against a copy of the state; reads go to the target, writes are pretended.
        match MemoryStore::from_store(store, &job.config.name) {
            Ok(scratch) => {
                let target = DryRunTarget::new(job.client.clone());
                run_cycle(&job.spec, &scratch, &target, &opts, stop).await
            }
            Err(e) => failed_report(&job.config.name, dry_run, e.to_string()),
        }
    } else {
        run_cycle(&job.spec, store, &job.client, &opts, stop).await
    };
    job.busy.store(false, Ordering::SeqCst);
    report
}

fn failed_report(job: &str, dry_run: bool, error: String) -> CycleReport {
    CycleReport {
        summary: CycleSummary {
            job: job.to_string(),
            cycle_id: uuid::Uuid::new_v4().to_string(),
            kind: crate::summary::CycleKind::Incremental,
            status: crate::summary::CycleStatus::Failed,
            dry_run,
            started_at: Utc::now(),
            duration_ms: 0,
            users: Default::default(),
            groups: Default::default(),
            memberships: Default::default(),
            requests: Default::default(),
            source_complete: false,
            withheld_deprovisions: 0,
            error: Some(error),
            problems: vec![],
            problem_count: 0,
        },
        actions: vec![],
    }
}

/// The running daemon's shared state: what the control socket talks to.
pub struct Daemon {
    pub config: Config,
    pub jobs: Vec<Arc<JobRuntime>>,
    pub store: Arc<dyn StateStore>,
    /// Set on SIGTERM/SIGINT: cycles take no new work and workers exit.
    pub stop: Arc<AtomicBool>,
    stopped: Notify,
}

impl Daemon {
    pub fn new(config: Config, store: Arc<dyn StateStore>) -> Result<Self, TargetError> {
        let jobs = config
            .jobs
            .iter()
            .map(|j| JobRuntime::new(j.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Daemon {
            config,
            jobs,
            store,
            stop: Arc::new(AtomicBool::new(false)),
            stopped: Notify::new(),
        })
    }

    pub fn job(&self, name: &str) -> Option<&Arc<JobRuntime>> {
        self.jobs.iter().find(|j| j.config.name == name)
    }

    /// Ask every worker to stop after its in-flight requests.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stopped.notify_waiters();
    }

    pub fn status(&self, job: Option<&str>) -> Result<Vec<JobStatus>, String> {
        let mut out = Vec::new();
        for j in &self.jobs {
            if job.is_some_and(|n| n != j.config.name) {
                continue;
            }
            let mut s =
                offline_status(&j.config, self.store.as_ref()).map_err(|e| e.to_string())?;
            s.running = j.busy.load(Ordering::SeqCst);
            s.next_run = j.next_run();
            s.note = None;
            out.push(s);
        }
        if let Some(n) = job {
            if out.is_empty() {
                return Err(format!("no job named {n:?}"));
            }
        }
        Ok(out)
    }

    /// `sync` through the control socket: one cycle now, queued behind a running one.
    pub async fn sync(&self, job: Option<&str>, dry_run: bool) -> Result<Vec<CycleReport>, String> {
        let selected: Vec<&Arc<JobRuntime>> = self
            .jobs
            .iter()
            .filter(|j| job.is_none_or(|n| n == j.config.name))
            .collect();
        if selected.is_empty() {
            return Err(format!("no job named {:?}", job.unwrap_or_default()));
        }
        let mut reports = Vec::new();
        for j in selected {
            reports.push(run_job_cycle(j, self.store.as_ref(), dry_run, None, &self.stop).await);
        }
        Ok(reports)
    }

    /// Run every job's worker until shutdown.
    pub async fn run_workers(
        self: &Arc<Self>,
    ) -> Result<(), tokio_cron_scheduler::JobSchedulerError> {
        // The cron scheduler only exists when a job uses cron: an idle scheduler that is
        // created but never started logs two spurious ERROR lines ("Error receiving …
        // Closed") when it is dropped at shutdown.
        let mut scheduler = None;
        for job in &self.jobs {
            if let Schedule::Cron(expr) = &job.config.schedule {
                let s = match scheduler.take() {
                    Some(s) => s,
                    None => tokio_cron_scheduler::JobScheduler::new().await?,
                };
                let j = job.clone();
                s.add(tokio_cron_scheduler::Job::new_async(
                    expr.as_str(),
                    move |_, _| {
                        let j = j.clone();
                        Box::pin(async move { j.tick.notify_one() })
                    },
                )?)
                .await?;
                scheduler = Some(s);
            }
        }
        if let Some(s) = scheduler.as_mut() {
            s.start().await?;
        }
        let workers: Vec<_> = self
            .jobs
            .iter()
            .map(|job| {
                let daemon = self.clone();
                let job = job.clone();
                tokio::spawn(async move { daemon.worker(job).await })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
        if let Some(mut s) = scheduler {
            let _ = s.shutdown().await;
        }
        Ok(())
    }

    async fn worker(&self, job: Arc<JobRuntime>) {
        let name = job.config.name.clone();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            job.set_next_run(None);
            let report = run_job_cycle(&job, self.store.as_ref(), false, None, &self.stop).await;
            tracing::info!(job = %name, status = ?report.summary.status, "scheduled cycle done");
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let wait = match &job.config.schedule {
                Schedule::Interval(d) => {
                    job.set_next_run(
                        chrono::Duration::from_std(*d)
                            .ok()
                            .and_then(|d| Utc::now().checked_add_signed(d)),
                    );
                    WaitFor::Sleep(*d)
                }
                Schedule::Cron(expr) => {
                    let next = cron_schedule(expr)
                        .ok()
                        .and_then(|c| c.find_next_occurrence(&Utc::now(), false).ok());
                    job.set_next_run(next);
                    WaitFor::Tick
                }
            };
            let stopped = self.stopped.notified();
            tokio::pin!(stopped);
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            match wait {
                WaitFor::Sleep(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = &mut stopped => break,
                },
                WaitFor::Tick => tokio::select! {
                    _ = job.tick.notified() => {}
                    _ = &mut stopped => break,
                },
            }
        }
        job.set_next_run(None);
        tracing::info!(job = %name, "worker stopped");
    }
}

enum WaitFor {
    Sleep(Duration),
    Tick,
}
