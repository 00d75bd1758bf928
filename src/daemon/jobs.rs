//! The jobs as the daemon runs them: one runtime per job (its SCIM client, the lock that keeps
//! two cycles of one job apart, what `status` shows), and the daemon's shared state, which the
//! workers and the control socket use.

use super::admin::{self, AdminCommand, AdminError};
use crate::config::{Config, JobConfig};
use crate::cycle::ondemand::{OnDemandRequest, OnDemandResult};
use crate::cycle::{cycle_kind, run_cycle, CycleOptions, CycleReport, JobSpec};
use crate::state::{JobMeta, MemoryStore, Quarantine, StateError, StateStore};
use crate::summary::{CycleKind, CycleSummary};
use crate::target::{DryRunTarget, ScimClient, TargetError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;

/// Why a control request could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The request named a job the configuration does not have.
    #[error("no job named {0:?}")]
    NoSuchJob(String),
    /// The store could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// An admin command was refused.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// A job as the daemon runs it.
pub(crate) struct JobRuntime {
    /// The job's configuration.
    pub config: JobConfig,
    /// What a cycle needs of it.
    pub spec: JobSpec,
    /// Its target.
    pub client: ScimClient,
    /// Held for the whole of a cycle: scheduled, triggered and `sync` cycles queue on it.
    /// Shared with the runtime that replaces this one on a reload, so that the new one's
    /// cycles queue behind an in-flight cycle of the old.
    running: Arc<tokio::sync::Mutex<()>>,
    busy: AtomicBool,
    /// The running cycle's kind, for the notify status line.
    kind: Mutex<Option<CycleKind>>,
    /// The running scheduled cycle's progress (actions done of planned), never drawn: read
    /// for the notify status line.
    pub(super) progress: indicatif::ProgressBar,
    next_run: Mutex<Option<DateTime<Utc>>>,
    /// Signalled by an admin command that may make a cycle due (resume, restart,
    /// allow-deletes): the worker looks again instead of sleeping on. A signal sent while the
    /// worker runs a cycle is kept for its next wait.
    pub(super) wake: tokio::sync::Notify,
    /// The previous run's provisioning-log closing and pruning, awaited before the next run.
    log_done: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl JobRuntime {
    /// Where this job's cycles' provisioning-log entries go (an on-demand run appends its one
    /// entry through `provlog::Writer`); `None` when the config names no state directory for
    /// them or the log directory cannot be made (the cycle then goes on without logs).
    pub(crate) fn log_sink(&self) -> Option<crate::cycle::provlog::LogSink> {
        let logs = self.config.logs.as_ref()?;
        let source = self.spec.source.system_name();
        crate::cycle::provlog::LogSink::open(
            &logs.state_dir,
            &self.config.name,
            source.to_string(),
            self.client.base_url().to_string(),
            crate::provlog::InitiatedBy::system(),
        )
    }

    /// Wait for the last run's provisioning-log closing and pruning (see `cycle_locked`):
    /// before the next run, and before a one-shot command exits.
    pub(crate) async fn settle_logs(&self) {
        let previous = self
            .log_done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = previous {
            let _ = p.await;
        }
    }

    /// The runtime of a job: fails when its target settings do not make a client.
    pub(crate) fn new(config: JobConfig) -> Result<Self, TargetError> {
        Self::with_lock(config, Arc::new(tokio::sync::Mutex::new(())))
    }

    /// The runtime of a job that replaces `previous` on a reload: same cycle lock, so the two
    /// never run cycles of the job at once.
    pub(super) fn replacing(config: JobConfig, previous: &JobRuntime) -> Result<Self, TargetError> {
        Self::with_lock(config, previous.running.clone())
    }

    fn with_lock(
        config: JobConfig,
        running: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, TargetError> {
        config.require_secrets()?;
        let client = ScimClient::new(config.target.clone())?;
        Ok(JobRuntime {
            spec: config.spec(),
            config,
            client,
            running,
            busy: AtomicBool::new(false),
            kind: Mutex::new(None),
            progress: indicatif::ProgressBar::hidden(),
            next_run: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            log_done: Mutex::new(None),
        })
    }

    pub(super) fn set_next_run(&self, at: Option<DateTime<Utc>>) {
        *self.next_run.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    pub(super) fn next_run(&self) -> Option<DateTime<Utc>> {
        *self.next_run.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a cycle of this runtime is running.
    pub(super) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// The running cycle's kind.
    pub(super) fn running_kind(&self) -> Option<CycleKind> {
        *self.kind.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_kind(&self, kind: Option<CycleKind>) {
        *self.kind.lock().unwrap_or_else(|e| e.into_inner()) = kind;
    }
}

/// A job's state as `status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Cycles run on the schedule.
    Active,
    /// Paused by an admin: no cycle starts until `resume`.
    Paused,
    /// Quarantined: cycles run only at the quarantine's next attempt.
    Quarantine,
    /// Disabled after 28 days in quarantine: no cycle until `restart`.
    Disabled,
    /// No cycle has run yet.
    NotRun,
}

impl JobState {
    /// The state a job's record puts it in. Disabled and paused come first: they stop every
    /// scheduled cycle, whatever else holds.
    pub fn of(meta: &JobMeta) -> JobState {
        if meta.disabled {
            JobState::Disabled
        } else if meta.paused {
            JobState::Paused
        } else if meta.quarantine.is_some() {
            JobState::Quarantine
        } else if meta.last_cycle.is_none() {
            JobState::NotRun
        } else {
            JobState::Active
        }
    }
}

/// A job's escrowed actions, counted for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowCounts {
    /// Every escrowed action.
    pub total: usize,
    /// Of which reference (manager, membership) failures.
    pub reference: usize,
    /// The earliest first failure among them.
    pub oldest: Option<DateTime<Utc>>,
}

/// What `status` shows per job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: String,
    pub schedule: String,
    /// `active`, `paused`, `quarantine`, `disabled` or `not_run`.
    #[serde(default = "not_run")]
    pub state: JobState,
    pub running: bool,
    pub next_run: Option<DateTime<Utc>>,
    pub users_linked: usize,
    pub groups_linked: usize,
    pub last_success: Option<DateTime<Utc>>,
    pub last_cycle: Option<CycleSummary>,
    /// The quarantine record, when the job is in one.
    #[serde(default)]
    pub quarantine: Option<Quarantine>,
    #[serde(default)]
    pub escrows: EscrowCounts,
    /// How many disables and deletes the deletion threshold holds back.
    #[serde(default)]
    pub staged_deletes: usize,
    /// Whether an admin allowed them (`allow-deletes`): the next cycle sends those it still
    /// plans.
    #[serde(default)]
    pub allow_deletes: bool,
    /// The first and the last cycle that found nothing to do.
    #[serde(default)]
    pub steady_state_first: Option<DateTime<Utc>>,
    #[serde(default)]
    pub steady_state_last: Option<DateTime<Utc>>,
    /// Why next_run is empty, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn not_run() -> JobState {
    JobState::NotRun
}

/// Status of a job read from the store alone (no daemon running).
pub(crate) fn offline_status(
    job: &JobConfig,
    store: &dyn StateStore,
) -> Result<JobStatus, StateError> {
    let meta = store.meta(&job.name)?;
    let (users_linked, groups_linked) = store.link_counts(&job.name)?;
    // Expired entries are only markers that stop retries of an unchanged object: not counted.
    let escrows: Vec<_> = store
        .escrows(&job.name)?
        .into_iter()
        .filter(|e| !e.expired)
        .collect();
    let escrows = EscrowCounts {
        total: escrows.len(),
        reference: escrows.iter().filter(|e| e.is_reference()).count(),
        oldest: escrows.iter().map(|e| e.first_failure).min(),
    };
    let staged_deletes = store.staged_deletes(&job.name)?.len();
    Ok(JobStatus {
        job: job.name.clone(),
        schedule: job.schedule.to_string(),
        state: JobState::of(&meta),
        running: false,
        next_run: None,
        users_linked,
        groups_linked,
        last_success: meta.last_success,
        last_cycle: meta.last_cycle,
        quarantine: meta.quarantine,
        escrows,
        staged_deletes,
        allow_deletes: meta.allow_deletes,
        steady_state_first: meta.steady_state_first,
        steady_state_last: meta.steady_state_last,
        note: Some("the daemon is not running: no cycle is scheduled".into()),
    })
}

/// Whether a scheduled cycle may start, by the job's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Start it.
    Run,
    /// Paused: wait for `resume`.
    Paused,
    /// Disabled: wait for `restart`.
    Disabled,
    /// Quarantined: wait until this time.
    Quarantined(DateTime<Utc>),
}

impl Gate {
    /// The gate for a job with this record at `now`. An admin's `allow-deletes` opens a
    /// quarantine at once: the deletions were held for the admin, who has now decided.
    pub(crate) fn of(meta: &JobMeta, now: DateTime<Utc>) -> Gate {
        if meta.disabled {
            return Gate::Disabled;
        }
        if meta.paused {
            return Gate::Paused;
        }
        match &meta.quarantine {
            Some(q) if !meta.allow_deletes && q.next_attempt > now => {
                Gate::Quarantined(q.next_attempt)
            }
            _ => Gate::Run,
        }
    }
}

/// A scheduled cycle of a job: run only when its record lets it ([`Gate`]), read under the
/// cycle lock, so that a `pause` applied just before is always seen. `None`: not run.
pub(super) async fn run_scheduled_cycle(
    job: &JobRuntime,
    store: &dyn StateStore,
    stop: &CancellationToken,
) -> Option<CycleReport> {
    let _guard = job.running.lock().await;
    match store.meta(&job.config.name) {
        Ok(meta) => match Gate::of(&meta, Utc::now()) {
            Gate::Run => {}
            gate => {
                tracing::info!(job = %job.config.name, gate = ?gate, "scheduled cycle not started");
                return None;
            }
        },
        // The cycle reads the record too, and reports the failure in its summary.
        Err(e) => {
            tracing::warn!(job = %job.config.name, error = %e, "cannot read the job's record")
        }
    }
    Some(cycle_locked(job, store, false, None, stop).await)
}

/// Run one cycle of a job with a store, for real or as a dry run.
/// Provision one object of `job` on demand (see [`crate::cycle::ondemand`]), taking the
/// job's cycle lock: a scheduled or `sync` cycle of the job does not run meanwhile.
pub(crate) async fn provision_on_demand(
    job: &JobRuntime,
    store: &dyn StateStore,
    req: &OnDemandRequest,
    state_dir: &std::path::Path,
    stop: &CancellationToken,
) -> OnDemandResult {
    let _guard = job.running.lock().await;
    provision_locked(job, store, req, state_dir, stop).await
}

/// [`provision_on_demand`], the job's cycle lock held.
async fn provision_locked(
    job: &JobRuntime,
    store: &dyn StateStore,
    req: &OnDemandRequest,
    state_dir: &std::path::Path,
    stop: &CancellationToken,
) -> OnDemandResult {
    // The previous cycle's log closing and pruning end first: one writer per segment.
    job.settle_logs().await;
    job.busy.store(true, Ordering::SeqCst);
    let result = crate::cycle::ondemand::provision_on_demand(
        &job.spec,
        store,
        &job.client,
        req,
        Some(state_dir),
        stop,
    )
    .await;
    job.busy.store(false, Ordering::SeqCst);
    result
}

pub(crate) async fn run_job_cycle(
    job: &JobRuntime,
    store: &dyn StateStore,
    dry_run: bool,
    progress: Option<&indicatif::ProgressBar>,
    stop: &CancellationToken,
) -> CycleReport {
    let _guard = job.running.lock().await;
    cycle_locked(job, store, dry_run, progress, stop).await
}

/// [`run_job_cycle`], the job's cycle lock held.
async fn cycle_locked(
    job: &JobRuntime,
    store: &dyn StateStore,
    dry_run: bool,
    progress: Option<&indicatif::ProgressBar>,
    stop: &CancellationToken,
) -> CycleReport {
    job.settle_logs().await;
    job.busy.store(true, Ordering::SeqCst);
    // The kind as the cycle will decide it (`Cycle::begin`), for the notify status line.
    let before = store.meta(&job.config.name);
    let kind = match &before {
        Ok(meta) => cycle_kind(meta, &job.spec.fingerprint()),
        Err(_) => CycleKind::Initial,
    };
    job.set_kind(Some(kind));
    // A cycle with no bar of the caller's counts on the job's hidden one.
    job.progress.reset();
    job.progress.set_length(0);
    // Dry runs write no provisioning-log entries.
    let sink = (!dry_run).then(|| job.log_sink()).flatten();
    let opts = CycleOptions {
        dry_run,
        record_actions: dry_run,
        log: sink.as_ref(),
        progress: progress.or(Some(&job.progress)),
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
    // Notification emails: queued here, where the outcome is committed; sent by the sender.
    if let (Some(notify), Ok(before)) = (&job.config.notify, &before) {
        let j = crate::notify::JobRef {
            name: &job.config.name,
            notify,
            target_url: &job.config.target.base_url,
        };
        crate::notify::after_cycle(store, &j, before, &report.summary, Utc::now());
    }
    job.busy.store(false, Ordering::SeqCst);
    job.set_kind(None);
    // A succeeded cycle made its entries durable before it committed. Closing the sink
    // (which syncs whatever a failed cycle left) and pruning old entries happen on the
    // blocking pool, so the cycle's end is not delayed by them; the job's next run waits
    // for them (`log_done`), so two writers never append to one segment.
    if let Some(s) = sink {
        let logs = job.config.logs.clone();
        let name = job.config.name.clone();
        let done = tokio::task::spawn_blocking(move || {
            drop(s);
            prune_logs(&name, logs.as_ref());
        });
        *job.log_done.lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
    }
    report
}

/// Provisioning-log retention (`log_retention`, `log_max_size`) after a run: a failure is
/// logged, never the run's.
fn prune_logs(job: &str, logs: Option<&crate::provlog::LogTarget>) {
    if let Some(logs) = logs {
        if let Err(e) = crate::provlog::prune(&logs.state_dir, &logs.settings, Utc::now()) {
            tracing::warn!(job, error = %e, "provisioning log retention failed");
        }
    }
}

fn failed_report(job: &str, dry_run: bool, error: String) -> CycleReport {
    CycleReport {
        summary: CycleSummary {
            job: job.to_string(),
            cycle_id: uuid::Uuid::new_v4().to_string(),
            kind: CycleKind::Incremental,
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
        source_read: None,
    }
}

/// The running daemon's shared state: what the workers and the control socket talk to.
pub(crate) struct Daemon {
    /// One runtime per job, in the configuration's order; replaced as a whole on a reload.
    jobs: RwLock<Vec<Arc<JobRuntime>>>,
    /// The configuration in force (the last one that loaded on a reload).
    config: RwLock<Config>,
    /// The state store this process holds.
    pub store: Arc<dyn StateStore>,
    /// Cancelled on shutdown: cycles take no new work and workers exit.
    pub stop: CancellationToken,
    /// What the admin endpoint's `/metrics` reports of the cycles run so far.
    pub metrics: super::metrics::Metrics,
}

impl Daemon {
    /// The daemon's state: fails when a job's target settings do not make a client.
    pub(crate) fn new(
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
            jobs: RwLock::new(jobs),
            config: RwLock::new(config),
            store,
            stop,
            metrics: super::metrics::Metrics::default(),
        })
    }

    /// The jobs now in force, in the configuration's order.
    pub(crate) fn jobs(&self) -> Vec<Arc<JobRuntime>> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration now in force.
    pub(crate) fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Put a reloaded configuration and its job runtimes in force (the workers are the
    /// scheduler's business).
    pub(super) fn replace(&self, config: Config, jobs: Vec<Arc<JobRuntime>>) {
        *self.jobs.write().unwrap_or_else(|e| e.into_inner()) = jobs;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// A job by name.
    pub(crate) fn job(&self, name: &str) -> Option<Arc<JobRuntime>> {
        self.jobs().into_iter().find(|j| j.config.name == name)
    }

    /// `status` through the control socket: every job, or the one named.
    pub(crate) fn status(&self, job: Option<&str>) -> Result<Vec<JobStatus>, RequestError> {
        let mut out = Vec::new();
        for j in &self.jobs() {
            if job.is_some_and(|n| n != j.config.name) {
                continue;
            }
            let mut s = offline_status(&j.config, self.store.as_ref())?;
            s.running = j.busy.load(Ordering::SeqCst);
            s.next_run = j.next_run();
            s.note = match s.state {
                JobState::Paused => Some("paused".into()),
                JobState::Disabled => Some("disabled".into()),
                _ => None,
            };
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
    pub(crate) async fn sync(
        &self,
        job: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<CycleReport>, RequestError> {
        let selected: Vec<Arc<JobRuntime>> = self
            .jobs()
            .into_iter()
            .filter(|j| job.is_none_or(|n| n == j.config.name))
            .collect();
        if selected.is_empty() {
            return Err(RequestError::NoSuchJob(job.unwrap_or_default().to_string()));
        }
        let mut reports = Vec::new();
        for j in selected {
            let report = run_job_cycle(&j, self.store.as_ref(), dry_run, None, &self.stop).await;
            self.metrics.record(&report);
            reports.push(report);
        }
        Ok(reports)
    }

    /// `provision` through the control socket: one object on demand, under the job's cycle
    /// lock (queued behind a running cycle, as `sync` is), its log entry written under the
    /// state directory.
    pub(crate) async fn provision(
        &self,
        job: &str,
        req: &OnDemandRequest,
    ) -> Result<OnDemandResult, RequestError> {
        let j = self
            .job(job)
            .ok_or_else(|| RequestError::NoSuchJob(job.to_string()))?;
        let state_dir = self.config().state_dir;
        let _guard = j.running.lock().await;
        Ok(provision_locked(&j, self.store.as_ref(), req, &state_dir, &self.stop).await)
    }

    /// An admin command through the control socket. Applied under the job's cycle lock: a
    /// cycle writes back at its end the `JobMeta` it read when it began, so a command applied
    /// during a cycle would be lost. A command sent during a cycle therefore waits for it to
    /// end (tokio's lock is fair: it comes before the next scheduled cycle).
    pub(crate) async fn admin(
        &self,
        job: &str,
        cmd: &AdminCommand,
    ) -> Result<String, RequestError> {
        let j = self
            .job(job)
            .ok_or_else(|| RequestError::NoSuchJob(job.to_string()))?;
        let applied = {
            let _guard = j.running.lock().await;
            // Its writes end with an fsync: off the async worker, like a cycle's commit.
            crate::util::off_worker(|| admin::apply(self.store.as_ref(), job, cmd))?
        };
        if applied.wake {
            j.wake.notify_one();
        }
        Ok(applied.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{QuarantineError, QuarantineReason};

    /// An admin command's writes end with a flush: on a stalled disk it waits off the async
    /// worker, so that on a one-worker runtime, as `run` builds, the daemon's other tasks
    /// (the control socket's other requests, the signal handlers) go on meanwhile.
    #[test]
    fn a_stalled_flush_under_an_admin_command_leaves_the_only_async_worker_free() {
        let store = Arc::new(MemoryStore::new());
        let daemon = Daemon::new(
            crate::daemon::test_support::config(),
            store.clone(),
            CancellationToken::new(),
        )
        .unwrap();
        let answer =
            crate::state::memory::test_support::with_stalled_flushes(&store, "pause", async move {
                daemon
                    .admin("robin", &super::super::admin::AdminCommand::Pause)
                    .await
            });
        assert!(answer.is_ok(), "{:?}", answer.err());
        assert!(store.meta("robin").unwrap().paused);
    }

    fn quarantined(next_attempt: DateTime<Utc>) -> JobMeta {
        JobMeta {
            quarantine: Some(Quarantine {
                reason: QuarantineReason::EncounteredQuarantineException,
                series_began: next_attempt - chrono::Duration::hours(6),
                current_began: next_attempt - chrono::Duration::hours(6),
                next_attempt,
                series_count: 1,
                error: QuarantineError {
                    code: "Unauthorized".into(),
                    message: "401".into(),
                },
            }),
            ..JobMeta::default()
        }
    }

    #[test]
    fn a_quarantined_job_runs_only_when_its_next_attempt_is_due() {
        let t = Utc::now();
        let meta = quarantined(t);
        assert_eq!(
            Gate::of(&meta, t - chrono::Duration::seconds(1)),
            Gate::Quarantined(t)
        );
        assert_eq!(Gate::of(&meta, t), Gate::Run);
        assert_eq!(Gate::of(&meta, t + chrono::Duration::hours(1)), Gate::Run);
        // An admin's allow-deletes opens it at once.
        let allowed = JobMeta {
            allow_deletes: true,
            ..meta.clone()
        };
        assert_eq!(
            Gate::of(&allowed, t - chrono::Duration::hours(5)),
            Gate::Run
        );
        // Paused and disabled hold whatever the quarantine says.
        let paused = JobMeta {
            paused: true,
            ..meta.clone()
        };
        assert_eq!(Gate::of(&paused, t), Gate::Paused);
        let disabled = JobMeta {
            disabled: true,
            paused: true,
            ..meta
        };
        assert_eq!(Gate::of(&disabled, t), Gate::Disabled);
        assert_eq!(Gate::of(&JobMeta::default(), t), Gate::Run);
    }

    #[test]
    fn the_gate_follows_a_quarantine_imposed_and_lifted_pause_and_disable() {
        // Moved from cycle::quarantine, whose `is_due` duplicated this gate.
        let now = Utc::now();
        let mut meta = JobMeta::default();
        assert_eq!(Gate::of(&meta, now), Gate::Run);
        let error = QuarantineError {
            code: "Unauthorized".into(),
            message: "401".into(),
        };
        crate::cycle::quarantine::impose(
            &mut meta,
            "j",
            QuarantineReason::EncounteredQuarantineException,
            error,
            now,
        );
        let six = now + chrono::Duration::hours(6);
        assert_eq!(
            Gate::of(&meta, now + chrono::Duration::hours(5)),
            Gate::Quarantined(six)
        );
        assert_eq!(Gate::of(&meta, six), Gate::Run);
        crate::cycle::quarantine::lift(&mut meta, "j");
        assert_eq!(Gate::of(&meta, now), Gate::Run);
        meta.paused = true;
        assert_eq!(Gate::of(&meta, now), Gate::Paused);
        meta.paused = false;
        meta.disabled = true;
        assert_eq!(Gate::of(&meta, now), Gate::Disabled);
    }

    #[test]
    fn job_state_names_what_holds_the_job() {
        let mut meta = JobMeta::default();
        assert_eq!(JobState::of(&meta), JobState::NotRun);
        meta.last_cycle = Some(failed_report("j", false, "x".into()).summary);
        assert_eq!(JobState::of(&meta), JobState::Active);
        let q = quarantined(Utc::now()).quarantine;
        meta.quarantine = q;
        assert_eq!(JobState::of(&meta), JobState::Quarantine);
        meta.paused = true;
        assert_eq!(JobState::of(&meta), JobState::Paused);
        meta.disabled = true;
        assert_eq!(JobState::of(&meta), JobState::Disabled);
        assert_eq!(
            serde_json::to_value(JobState::NotRun).unwrap(),
            serde_json::json!("not_run")
        );
    }
}
