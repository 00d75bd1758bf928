//! The jobs as the daemon runs them: one runtime per job (its SCIM client, the lock that keeps
//! two cycles of one job apart, what `status` shows), and the daemon's shared state, which the
//! workers and the control socket use.

use crate::config::{Config, JobConfig};
use crate::cycle::{run_cycle, CycleOptions, CycleReport, JobSpec};
use crate::state::{MemoryStore, StateError, StateStore};
use crate::summary::CycleSummary;
use crate::target::{DryRunTarget, ScimClient, TargetError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Why a control request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request named a job the configuration does not have.
    #[error("no job named {0:?}")]
    NoSuchJob(String),
    /// The store could not be read.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A job as the daemon runs it.
pub struct JobRuntime {
    /// The job's configuration.
    pub config: JobConfig,
    /// What a cycle needs of it.
    pub spec: JobSpec,
    /// Its target.
    pub client: ScimClient,
    /// Held for the whole of a cycle: scheduled, triggered and `sync` cycles queue on it.
    running: tokio::sync::Mutex<()>,
    busy: AtomicBool,
    next_run: Mutex<Option<DateTime<Utc>>>,
}

impl JobRuntime {
    /// The runtime of a job: fails when its target settings do not make a client.
    pub fn new(config: JobConfig) -> Result<Self, TargetError> {
        let client = ScimClient::new(config.target.clone())?;
        Ok(JobRuntime {
            spec: config.spec(),
            config,
            client,
            running: tokio::sync::Mutex::new(()),
            busy: AtomicBool::new(false),
            next_run: Mutex::new(None),
        })
    }

    pub(super) fn set_next_run(&self, at: Option<DateTime<Utc>>) {
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
pub fn offline_status(job: &JobConfig, store: &dyn StateStore) -> Result<JobStatus, StateError> {
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
    stop: &CancellationToken,
) -> CycleReport {
    let _guard = job.running.lock().await;
    job.busy.store(true, Ordering::SeqCst);
    let opts = CycleOptions {
        dry_run,
        record_actions: dry_run,
        progress,
        ..CycleOptions::default()
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
            escrowed: 0,
            escrow_retried: 0,
            staged_deletes: 0,
            quarantine: None,
        },
        actions: vec![],
    }
}

/// The running daemon's shared state: what the workers and the control socket talk to.
pub struct Daemon {
    /// The configuration the daemon started with.
    pub config: Config,
    /// One runtime per job, in the configuration's order.
    pub jobs: Vec<Arc<JobRuntime>>,
    /// The state store this process holds.
    pub store: Arc<dyn StateStore>,
    /// Cancelled on shutdown: cycles take no new work and workers exit.
    pub stop: CancellationToken,
}

impl Daemon {
    /// The daemon's state: fails when a job's target settings do not make a client.
    pub fn new(
        config: Config,
        store: Arc<dyn StateStore>,
        stop: CancellationToken,
    ) -> Result<Self, TargetError> {
        let jobs = config
            .jobs
            .iter()
            .map(|j| JobRuntime::new(j.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Daemon {
            config,
            jobs,
            store,
            stop,
        })
    }

    /// A job by name.
    pub fn job(&self, name: &str) -> Option<&Arc<JobRuntime>> {
        self.jobs.iter().find(|j| j.config.name == name)
    }

    /// `status` through the control socket: every job, or the one named.
    pub fn status(&self, job: Option<&str>) -> Result<Vec<JobStatus>, RequestError> {
        let mut out = Vec::new();
        for j in &self.jobs {
            if job.is_some_and(|n| n != j.config.name) {
                continue;
            }
            let mut s = offline_status(&j.config, self.store.as_ref())?;
            s.running = j.busy.load(Ordering::SeqCst);
            s.next_run = j.next_run();
            s.note = None;
            out.push(s);
        }
        if let Some(n) = job {
            if out.is_empty() {
                return Err(RequestError::NoSuchJob(n.to_string()));
            }
        }
        Ok(out)
    }

    /// `sync` through the control socket: one cycle now, queued behind a running one.
    pub async fn sync(
        &self,
        job: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<CycleReport>, RequestError> {
        let selected: Vec<&Arc<JobRuntime>> = self
            .jobs
            .iter()
            .filter(|j| job.is_none_or(|n| n == j.config.name))
            .collect();
        if selected.is_empty() {
            return Err(RequestError::NoSuchJob(job.unwrap_or_default().to_string()));
        }
        let mut reports = Vec::new();
        for j in selected {
            reports.push(run_job_cycle(j, self.store.as_ref(), dry_run, None, &self.stop).await);
        }
        Ok(reports)
    }
}
