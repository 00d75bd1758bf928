//! One provisioning cycle: import → scope → map/plan → export → record.
//!
//! The stages between import and export are pure ([`crate::scope`], [`crate::plan`]); this
//! module is the imperative shell around them.

pub mod export;

use crate::mapping::expr::EvalEnv;
use crate::mapping::Mappings;
use crate::plan::{self, Action, NullPolicy, PlanSettings};
use crate::scope::{self, ScopeSettings};
use crate::source::Source;
use crate::state::{LinkIndex, StateStore};
use crate::summary::{
    CycleKind, CycleStatus, CycleSummary, GroupCounts, MembershipCounts, Problem, UserCounts,
};
use crate::target::Target;
pub use export::ActionRecord;
use export::Exporter;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Problems kept in a summary; the logs have them all.
const SUMMARY_PROBLEMS: usize = 100;

/// Everything a cycle needs to know about its job.
pub struct JobSpec {
    pub name: String,
    pub source: Box<dyn Source>,
    pub scope: ScopeSettings,
    pub mappings: Mappings,
    pub null_values: NullPolicy,
    pub concurrency: usize,
    pub member_batch: usize,
}

impl JobSpec {
    /// Fingerprint of what decides the desired state: a change forces a full re-evaluation.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}:{}",
            self.mappings.fingerprint,
            serde_json::to_string(&(&self.scope, self.null_values)).unwrap_or_default()
        )
    }
}

/// How to run one cycle.
#[derive(Default)]
pub struct CycleOptions<'a> {
    /// Writes were only pretended (the caller passes a dry-run target and a scratch store).
    pub dry_run: bool,
    /// Keep a record per action (for `--dry-run` output and provisioning logs).
    pub record_actions: bool,
    pub progress: Option<&'a indicatif::ProgressBar>,
}

/// A cycle's summary and, when asked for, what it did object by object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CycleReport {
    pub summary: CycleSummary,
    pub actions: Vec<ActionRecord>,
}

/// Run one cycle of `job`. Never panics and never returns early without a summary: failures
/// are reported in it (`status = failed`, `error`).
pub async fn run_cycle(
    job: &JobSpec,
    store: &dyn StateStore,
    target: &dyn Target,
    opts: &CycleOptions<'_>,
    stop: &CancellationToken,
) -> CycleReport {
    let cycle_id = uuid::Uuid::new_v4().to_string();
    // Instrumented, not entered: an entered span's guard held across `.await`s stays entered
    // on whichever thread first polled the cycle, and is missing wherever it is polled next.
    let span = tracing::info_span!("cycle", job = %job.name, cycle_id = %cycle_id);
    cycle_in_span(job, store, target, opts, stop, cycle_id)
        .instrument(span)
        .await
}

async fn cycle_in_span(
    job: &JobSpec,
    store: &dyn StateStore,
    target: &dyn Target,
    opts: &CycleOptions<'_>,
    stop: &CancellationToken,
    cycle_id: String,
) -> CycleReport {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let requests_before = target.request_counts();

    let mut summary = CycleSummary {
        job: job.name.clone(),
        cycle_id: cycle_id.clone(),
        kind: CycleKind::Initial,
        status: CycleStatus::Failed,
        dry_run: opts.dry_run,
        started_at,
        duration_ms: 0,
        users: UserCounts::default(),
        groups: GroupCounts::default(),
        memberships: MembershipCounts::default(),
        requests: Default::default(),
        source_complete: false,
        withheld_deprovisions: 0,
        error: None,
        problems: Vec::new(),
        problem_count: 0,
    };
    // Where the time goes, at debug level: `RUST_LOG=provisiond::cycle=debug`.
    let phase = |name: &'static str| {
        tracing::debug!(job = %job.name, phase = name, elapsed_ms = started.elapsed().as_millis() as u64, peak_rss_kb = peak_rss_kb(), "cycle phase done");
    };
    let fail = |mut s: CycleSummary, error: String| {
        tracing::error!(job = %job.name, cycle_id = %cycle_id, error = %error, "cycle failed");
        s.error = Some(error);
        s.status = CycleStatus::Failed;
        s.duration_ms = started.elapsed().as_millis() as u64;
        s.requests = target.request_counts().since(&requests_before);
        s
    };

    let mut meta = match store.meta(&job.name) {
        Ok(m) => m,
        Err(e) => {
            return CycleReport {
                summary: fail(summary, e.to_string()),
                actions: vec![],
            };
        }
    };
    let fingerprint = job.fingerprint();
    summary.kind =
        if meta.watermark.is_some() && meta.fingerprint.as_deref() == Some(fingerprint.as_str()) {
            CycleKind::Incremental
        } else {
            CycleKind::Initial
        };
    tracing::info!(job = %job.name, cycle_id = %cycle_id, kind = ?summary.kind, source = %job.source.describe(), "cycle started");

    // The links load on the blocking pool (a second for 100k from sled) while this task reads
    // the source and decides the scope.
    let loading = tokio::task::spawn_blocking(store.links_loader(&job.name));
    let read = match job.source.read(meta.watermark.as_deref()).await {
        Ok(r) => r,
        Err(e) => {
            let s = fail(
                summary,
                format!("source read failed, nothing was changed: {e}"),
            );
            record_failure(store, &job.name, &mut meta, &s, opts.dry_run);
            return CycleReport {
                summary: s,
                actions: vec![],
            };
        }
    };
    let dir = read.directory;
    summary.source_complete = dir.complete;
    let scoped = scope::evaluate(&dir, &job.scope);
    phase("source read and scope decided");
    let loaded = match loading.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("loading the links failed: {e}")),
    };
    let links = match loaded {
        Ok(l) => LinkIndex::new(l),
        Err(error) => {
            let s = fail(summary, error);
            record_failure(store, &job.name, &mut meta, &s, opts.dry_run);
            return CycleReport {
                summary: s,
                actions: vec![],
            };
        }
    };

    phase("links loaded");
    let env = EvalEnv {
        now: chrono::Utc::now(),
    };
    let settings = PlanSettings {
        null_values: job.null_values,
        env: &env,
    };
    let mut plan = plan::plan_objects(&dir, &scoped, &job.mappings, &links, &settings);
    phase("planned");
    if !dir.complete {
        tracing::warn!(job = %job.name, withheld = plan.withheld_deprovisions, "source read incomplete: no disable and no delete this cycle");
    }
    tracing::info!(
        job = %job.name,
        actions = plan.actions.len(),
        unchanged_users = plan.unchanged_users,
        unchanged_groups = plan.unchanged_groups,
        problems = plan.problems.len(),
        "planned"
    );

    if let Some(p) = opts.progress {
        p.set_length(plan.actions.len() as u64);
    }
    let mut exporter = Exporter::new(
        &job.name,
        &cycle_id,
        target,
        store,
        links,
        job.concurrency,
        job.member_batch,
        stop,
    );
    exporter.record_actions = opts.record_actions;
    exporter.progress = opts.progress;
    // Users first, then groups, then references: group members and managers need user ids.
    // The actions are moved, not cloned: each carries its object's mapped values.
    let (users, groups): (Vec<Action>, Vec<Action>) = std::mem::take(&mut plan.actions)
        .into_iter()
        .partition(|a| a.object_type() == crate::model::ObjectType::User);
    exporter.run(&users).await;
    drop(users);
    exporter.run(&groups).await;
    drop(groups);
    phase("users and groups exported");
    let mut problems: Vec<Problem> = plan.problems.clone();
    if exporter.aborted().is_none() && !stop.is_cancelled() {
        let refs =
            plan::plan_references(&dir, &scoped, &job.mappings, &exporter.links(), &settings);
        if let Some(p) = opts.progress {
            p.inc_length((refs.updates.len() + refs.memberships.len()) as u64);
        }
        problems.extend(refs.problems.iter().cloned());
        phase("references planned");
        exporter
            .run_references(&refs.updates, &refs.memberships)
            .await;
        phase("references exported");
    }
    let aborted = exporter.aborted();
    let unchanged_then_changed = exporter.unchanged_then_changed();
    let groups_unchanged_then_failed = exporter.groups_unchanged_then_failed();
    let links = std::mem::take(&mut *exporter.links());
    let (users_c, groups_c, memberships, export_problems, actions) = exporter.into_results();
    problems.extend(export_problems);

    summary.users = users_c;
    // Users the plan found unchanged but whose manager changed were counted as updated.
    summary.users.unchanged += plan.unchanged_users.saturating_sub(unchanged_then_changed);
    summary.users.skipped = plan.skipped_users + count(&plan.problems, "user");
    summary.groups = groups_c;
    summary.groups.unchanged += plan
        .unchanged_groups
        .saturating_sub(groups_unchanged_then_failed);
    summary.groups.skipped = plan.skipped_groups + count(&plan.problems, "group");
    summary.memberships = memberships;
    summary.withheld_deprovisions = plan.withheld_deprovisions;
    if plan.withheld_deprovisions > 0 {
        // Never a silent success: a source that is always partial would otherwise suppress
        // deprovisioning forever without anyone noticing.
        problems.push(Problem {
            object_type: None,
            id: None,
            name: None,
            code: if summary.source_complete {
                "DeprovisioningWithheld".into()
            } else {
                "SourceReadIncomplete".into()
            },
            reason: format!(
                "{} disable(s)/delete(s) withheld: {}",
                plan.withheld_deprovisions,
                if summary.source_complete {
                    "some source objects could not be read (see the other problems)"
                } else {
                    "the source read was incomplete"
                }
            ),
        });
    }
    summary.problem_count = problems.len() as u64;
    summary.problems = problems.into_iter().take(SUMMARY_PROBLEMS).collect();
    summary.requests = target.request_counts().since(&requests_before);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.status = if summary.problem_count > 0 {
        CycleStatus::EntryLevelErrors
    } else {
        CycleStatus::Succeeded
    };
    if let Some(Abort(reason)) = aborted {
        let s = fail(summary, format!("cycle stopped: {reason}"));
        record_failure(store, &job.name, &mut meta, &s, opts.dry_run);
        return CycleReport {
            summary: s,
            actions,
        };
    }
    if stop.is_cancelled() {
        let s = fail(
            summary,
            "interrupted by shutdown; the next cycle continues".into(),
        );
        record_failure(store, &job.name, &mut meta, &s, opts.dry_run);
        return CycleReport {
            summary: s,
            actions,
        };
    }

    if !opts.dry_run {
        // Links are durable before the watermark moves past them.
        let done = store.flush().and_then(|()| {
            meta.watermark = read.watermark;
            meta.fingerprint = Some(fingerprint);
            meta.last_success = Some(chrono::Utc::now());
            meta.last_cycle = Some(summary.clone());
            store.put_meta(&job.name, &meta)?;
            store.flush()
        });
        phase("state flushed");
        if let Err(e) = done {
            return CycleReport {
                summary: fail(summary, e.to_string()),
                actions,
            };
        }
    }
    tracing::info!(
        job = %job.name,
        cycle_id = %cycle_id,
        status = ?summary.status,
        duration_ms = summary.duration_ms,
        users_created = summary.users.created,
        users_updated = summary.users.updated,
        users_disabled = summary.users.disabled,
        users_deleted = summary.users.deleted,
        groups_created = summary.groups.created,
        memberships_added = summary.memberships.added,
        memberships_removed = summary.memberships.removed,
        problems = summary.problem_count,
        "cycle finished"
    );
    // Freeing the directory, scope and links of 100k objects takes a few hundred
    // milliseconds: the blocking pool does it while the caller gets on with the summary.
    drop(tokio::task::spawn_blocking(move || {
        drop((dir, scoped, links))
    }));
    CycleReport { summary, actions }
}

use export::Abort;

/// The process's peak resident memory so far (Linux; `None` elsewhere), for the phase log.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn count(problems: &[Problem], ty: &str) -> u64 {
    problems
        .iter()
        .filter(|p| p.object_type.as_deref() == Some(ty))
        .count() as u64
}

/// Remember a failed cycle without advancing the watermark.
fn record_failure(
    store: &dyn StateStore,
    job: &str,
    meta: &mut crate::state::JobMeta,
    summary: &CycleSummary,
    dry_run: bool,
) {
    if dry_run {
        return;
    }
    meta.last_cycle = Some(summary.clone());
    if let Err(e) = store.put_meta(job, meta).and_then(|()| store.flush()) {
        tracing::error!(job, error = %e, "could not record the failed cycle");
    }
}
