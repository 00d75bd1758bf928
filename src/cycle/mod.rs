//! One provisioning cycle: import → scope → map/plan → export → record.
//!
//! The stages between import and export are pure ([`crate::scope`], [`crate::plan`]); this
//! module is the imperative shell around them.

pub(crate) mod deletions;
pub(crate) mod escrow;
pub(crate) mod export;
pub(crate) mod link_writer;
pub(crate) mod ondemand;
pub(crate) mod provlog;
pub(crate) mod quarantine;

use crate::mapping::expr::EvalEnv;
use crate::mapping::Mappings;
use crate::model::{Directory, ObjectType};
use crate::plan::{self, Action, NullPolicy, Plan, PlanSettings};
use crate::scope::{self, ScopeMode, ScopeSettings, Scoped, ScopingFilter};
use crate::source::{Source, SourceError};
use crate::state::{
    Binding, JobMeta, LinkIndex, LinkIndexBuilder, QuarantineReason, StateError, StateStore,
};
use crate::summary::{
    CycleKind, CycleStatus, CycleSummary, GroupCounts, MembershipCounts, Problem, UserCounts,
};
use crate::target::{RequestCounts, Target};
pub(crate) use deletions::DeleteThreshold;
use escrow::{Book, Verdict};
pub(crate) use export::ActionRecord;
use export::Exporter;
pub(crate) use quarantine::QuarantineSettings;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How many links an index holds, users and groups.
fn count_links(links: &LinkIndex) -> u64 {
    links.len() as u64
}

/// Whether `a` goes this cycle: not when it is escrowed, unchanged and its retry not due.
fn escrow_due(book: &Book<'_>, a: &Action) -> bool {
    book.verdict(escrow::key_of(a, false), || escrow::fingerprint(a)) != Verdict::Wait
}

/// Problems kept in a summary; the logs have them all.
const SUMMARY_PROBLEMS: usize = 100;

/// The kind of the cycle a job with this record runs: incremental when a watermark was kept
/// under the job's current settings (`fingerprint`), else initial.
pub(crate) fn cycle_kind(meta: &JobMeta, fingerprint: &str) -> CycleKind {
    if meta.watermark.is_some() && meta.fingerprint.as_deref() == Some(fingerprint) {
        CycleKind::Incremental
    } else {
        CycleKind::Initial
    }
}

/// Everything a cycle needs to know about its job.
pub struct JobSpec {
    pub name: String,
    pub source: Box<dyn Source>,
    pub scope: ScopeSettings,
    pub mappings: Mappings,
    pub null_values: NullPolicy,
    pub concurrency: usize,
    pub member_batch: usize,
    /// The deletion threshold and the quarantine thresholds.
    pub safety: SafetySettings,
}

/// A job's protective limits: what a cycle holds back and when the job is quarantined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SafetySettings {
    /// `delete_threshold` and `delete_threshold_percent`.
    pub deletions: DeleteThreshold,
    /// `[jobs.quarantine]`.
    pub quarantine: QuarantineSettings,
}

impl JobSpec {
    /// Fingerprint of what decides the desired state: a change forces a full re-evaluation.
    /// The scope part is [`scope_fingerprint`], an encoding written by hand, so renaming a
    /// settings field does not change it.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}:{}",
            self.mappings.fingerprint,
            scope_fingerprint(&self.scope, self.null_values)
        )
    }
}

/// The canonical text of the scope settings and the null policy, for [`JobSpec::fingerprint`].
///
/// The tags are fixed here, not taken from serde field names. They spell the JSON that
/// `serde_json` made of `(scope, null_values)` before this encoding existed, so fingerprints
/// stored by earlier versions still match and an upgrade forces no initial cycle:
///
/// ```text
/// [{"mode":M,"excluded_roles":[S,…],"user_filters":[F,…],"group_filters":[F,…]},N]
/// F = {"title":S,"clauses":[{"attribute":S,"operator":S,"value":V},…]}
/// ```
///
/// M is `"assigned"` or `"all"`, N `"leave"` or `"remove"`; `title` and `value` are left out
/// when absent; S and V are JSON strings and values. Changing a tag makes every job run one
/// initial cycle: do it only on purpose (the test `the_fingerprint_is_pinned` fails).
fn scope_fingerprint(scope: &ScopeSettings, nulls: NullPolicy) -> String {
    use std::fmt::Write as _;
    fn json(out: &mut String, v: &(impl serde::Serialize + ?Sized)) {
        // A string or a JSON value always serialises.
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    fn list<T>(out: &mut String, items: &[T], mut each: impl FnMut(&mut String, &T)) {
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            each(out, item);
        }
        out.push(']');
    }
    fn filter(out: &mut String, f: &ScopingFilter) {
        out.push('{');
        if let Some(title) = &f.spec.title {
            out.push_str("\"title\":");
            json(out, title.as_str());
            out.push(',');
        }
        out.push_str("\"clauses\":");
        list(out, &f.spec.clauses, |out, c| {
            out.push_str("{\"attribute\":");
            json(out, c.attribute.as_str());
            out.push_str(",\"operator\":");
            json(out, c.operator.as_str());
            if let Some(v) = &c.value {
                out.push_str(",\"value\":");
                json(out, v);
            }
            out.push('}');
        });
        out.push('}');
    }

    let mut out = String::new();
    let mode = match scope.mode {
        ScopeMode::Assigned => "assigned",
        ScopeMode::All => "all",
    };
    let _ = write!(out, "[{{\"mode\":\"{mode}\",\"excluded_roles\":");
    list(&mut out, &scope.excluded_roles, |out, r| {
        json(out, r.as_str())
    });
    out.push_str(",\"user_filters\":");
    list(&mut out, &scope.user_filters, filter);
    out.push_str(",\"group_filters\":");
    list(&mut out, &scope.group_filters, filter);
    let nulls = match nulls {
        NullPolicy::Leave => "leave",
        NullPolicy::Remove => "remove",
    };
    let _ = write!(out, "}},\"{nulls}\"]");
    out
}

/// How to run one cycle.
#[derive(Default)]
pub struct CycleOptions<'a> {
    /// Writes were only pretended (the caller passes a dry-run target and a scratch store).
    pub dry_run: bool,
    /// Keep a record per action (for `--dry-run` output and provisioning logs).
    pub record_actions: bool,
    /// Where a real cycle writes its provisioning-log entries (none for dry runs).
    pub log: Option<&'a provlog::LogSink>,
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// The wall clock for the safety rules (escrow retries, quarantine); none: the system's.
    pub clock: Option<&'a dyn crate::util::Clock>,
}

impl CycleOptions<'_> {
    /// The time by the cycle's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.map_or_else(chrono::Utc::now, |c| c.now())
    }
}

/// A cycle's summary and, when asked for, what it did object by object.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CycleReport {
    pub summary: CycleSummary,
    pub actions: Vec<ActionRecord>,
    /// How long reading the source took, when it was read: the admin endpoint's
    /// `provisiond_source_read_seconds`. Not part of the `sync --json` document.
    #[serde(skip)]
    pub source_read: Option<std::time::Duration>,
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
    // Microseconds; `u64::MAX` until the source was read.
    let source_read = AtomicU64::new(u64::MAX);
    let mut report = cycle_in_span(job, store, target, opts, stop, cycle_id, &source_read)
        .instrument(span)
        .await;
    let micros = source_read.load(Ordering::Relaxed);
    report.source_read = (micros != u64::MAX).then(|| std::time::Duration::from_micros(micros));
    report
}

async fn cycle_in_span(
    job: &JobSpec,
    store: &dyn StateStore,
    target: &dyn Target,
    opts: &CycleOptions<'_>,
    stop: &CancellationToken,
    cycle_id: String,
    source_read: &AtomicU64,
) -> CycleReport {
    let now = opts.now();
    let cycle = Cycle {
        job,
        store,
        target,
        opts,
        stop,
        cycle_id: &cycle_id,
        started: Instant::now(),
        now,
        requests_before: target.request_counts(),
        source_read,
    };
    let mut summary = cycle.new_summary();
    let (mut meta, fingerprint) = match cycle.begin(&mut summary) {
        Ok(m) => m,
        Err(e) => {
            return CycleReport {
                summary: cycle.fail(summary, e.to_string()),
                actions: vec![],
                source_read: None,
            };
        }
    };
    if let Err(e) = cycle.check_binding(&mut meta) {
        return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]);
    }
    let book = match Book::load(store, &job.name, now, !opts.dry_run) {
        Ok(b) => b,
        Err(e) => return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]),
    };
    // Read once: the objects it holds are never skipped, and the threshold starts from it.
    let staged_before = match store.staged_deletes(&job.name) {
        Ok(s) => s,
        Err(e) => return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]),
    };
    // A delta cycle also plans every object with an escrow or a staged deletion: their
    // actions are decided as a full cycle decides them.
    let always: Vec<(ObjectType, String)> = book
        .objects()
        .into_iter()
        .chain(
            staged_before
                .iter()
                .map(|s| (s.object_type, s.source_id.clone())),
        )
        .collect();
    let delta_linked = (summary.kind == CycleKind::Incremental)
        .then_some(meta.linked)
        .flatten();
    let imported = match cycle
        .import(
            &mut summary,
            meta.watermark.as_deref(),
            delta_linked,
            &always,
        )
        .await
    {
        Ok(i) => i,
        Err(e) => {
            cycle.keep_quarantine(&mut meta);
            summary.quarantine = quarantine_reason(&meta);
            return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]);
        }
    };
    cycle.phase("links loaded");

    let env = EvalEnv {
        now: chrono::Utc::now(),
    };
    let settings = PlanSettings {
        null_values: job.null_values,
        env: &env,
    };
    // The digests the export records with the links it writes: in an initial cycle too, so
    // that the next one need not map what this one created or updated.
    // (A dry run writes no link: none.)
    let digesting = cycle.digesting(&book, &staged_before);
    let skipping = match summary.kind {
        CycleKind::Incremental => digesting.clone(),
        _ => plan::Skipping::off(),
    };
    let stamping = if opts.dry_run {
        plan::Skipping::off()
    } else {
        digesting
    };
    let mut imported = imported;
    let mut plan = match cycle.plan_objects(
        &imported.dir,
        &imported.scoped,
        &mut imported.links,
        &settings,
        &skipping,
    ) {
        Ok(p) => p,
        Err(e) => return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]),
    };
    if imported.delta.is_some() && plan.provisions() {
        // A new object's matching values must be unique among every object in scope, which
        // only the whole directory can tell: this cycle takes the full path.
        tracing::info!(job = %job.name, "a new object to provision: planning the whole directory");
        imported = match cycle.widen(&mut summary, imported).await {
            Ok(i) => i,
            Err(e) => return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]),
        };
        plan = match cycle.plan_objects(
            &imported.dir,
            &imported.scoped,
            &mut imported.links,
            &settings,
            &skipping,
        ) {
            Ok(p) => p,
            Err(e) => return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]),
        };
    }
    let Imported {
        dir,
        scoped,
        links,
        watermark,
        delta,
    } = imported;
    let duplicates = plan.problems.iter().any(|p| p.code == plan::DUPLICATE);
    let mut links = links;
    cycle.record_digests(&mut links, &mut plan);
    let skips = if opts.record_actions {
        skip_records(&dir, &scoped, &links, &plan)
    } else {
        Vec::new()
    };
    let mut problems: Vec<Problem> = plan.problems.clone();
    let view_linked = count_links(&links);
    // A delta cycle holds the links of its view only: the threshold counts from the job's.
    let linked = match &delta {
        Some(d) => d.linked,
        None => view_linked,
    };
    let quarantine_before = meta.quarantine.clone();
    let held = match cycle.hold_deletions(
        &mut plan,
        &mut meta,
        linked,
        &book,
        staged_before,
        &mut problems,
    ) {
        Ok(h) => h,
        Err(e) => return cycle.fail_and_record(summary, &mut meta, e.to_string(), vec![]),
    };
    cycle.defer_escrowed(&mut plan, &book);
    if let Some(log) = opts.log.filter(|_| !opts.dry_run) {
        let initial = summary.kind == CycleKind::Initial;
        let threshold = job.safety.deletions.describe();
        log.before_export(
            &cycle_id,
            initial,
            &plan.problems,
            &held.staged,
            &threshold,
            &dir,
            &scoped,
            &links,
        );
    }
    let exporter = cycle.exporter(links, &book);
    cycle
        .export_objects(
            &exporter, &mut plan, &dir, &scoped, &settings, &book, &stamping,
        )
        .await;
    cycle
        .export_references(
            &exporter,
            &dir,
            &scoped,
            &settings,
            &mut problems,
            &book,
            &held.staged,
            delta.as_ref().map(|d| &d.membership_groups),
            &stamping,
        )
        .await;
    let tally = book.tally();
    escrow_problems(&tally, &mut problems);
    let (aborted, links, mut actions) = cycle.summarise(&mut summary, &plan, problems, exporter);
    actions.extend(skips);
    summary.escrowed = tally.escrowed;
    summary.escrow_retried = tally.retried;
    summary.staged_deletes = held.staged.len() as u64;
    cycle.bind(&mut meta, &links);
    // Recorded with whatever record of this cycle is kept (failed ones too): the links the
    // export made or removed are in the store already.
    if !opts.dry_run {
        // Objects left unprovisioned for a shared matching value may become provisionable
        // by a change to another object: no count, so the next cycle is a full one.
        meta.linked = (!duplicates).then(|| match &delta {
            Some(d) => (d.linked + count_links(&links)).saturating_sub(view_linked),
            None => count_links(&links),
        });
    }

    if let Some(abort) = aborted {
        let error = format!("cycle stopped: {}: {}", abort.code, abort.reason);
        if abort.quarantine_exception {
            meta.quarantine = quarantine_before;
            let e = crate::state::QuarantineError {
                code: abort.code.clone(),
                message: abort.reason.clone(),
            };
            quarantine::impose(
                &mut meta,
                &job.name,
                QuarantineReason::EncounteredQuarantineException,
                e,
                now,
            );
        } else if held.staged.is_empty() {
            cycle.keep_quarantine(&mut meta);
        }
        summary.quarantine = quarantine_reason(&meta);
        return cycle.fail_and_record(summary, &mut meta, error, actions);
    }
    if stop.is_cancelled() {
        summary.quarantine = quarantine_reason(&meta);
        return cycle.interrupt_and_record(summary, &mut meta, actions);
    }
    // Escrows of objects this cycle planned nothing for are done. Deprovisioning withheld
    // for an incomplete read says nothing about disables and deletes.
    let withheld = plan.withheld_deprovisions > 0;
    book.prune(|_, e| {
        !(withheld
            && matches!(
                e.action,
                crate::state::EscrowAction::Disable | crate::state::EscrowAction::Delete
            ))
    });
    let tally = book.tally();
    meta.quarantine = quarantine_before;
    let findings = quarantine::Findings {
        exception: None,
        held: (!held.staged.is_empty())
            .then(|| (held.staged.len() as u64, job.safety.deletions.describe())),
        attempts: tally.object_attempts,
        failures: tally.object_failures,
        base_escrows: tally.base,
        total_escrows: tally.total,
    };
    match quarantine::judge(&findings, &job.safety.quarantine) {
        Some((reason, error)) => quarantine::impose(&mut meta, &job.name, reason, error, now),
        None => quarantine::lift(&mut meta, &job.name),
    }
    summary.quarantine = quarantine_reason(&meta);
    if summary.status == CycleStatus::Succeeded && summary.requests.writes() == 0 {
        meta.steady_state_first.get_or_insert(now);
        meta.steady_state_last = Some(now);
    }
    if let Some(log) = opts.log.filter(|_| !opts.dry_run) {
        log.flush().await;
    }
    if let Err(e) = cycle
        .commit(&summary, &mut meta, fingerprint, watermark, &held)
        .await
    {
        return CycleReport {
            summary: cycle.fail(summary, e.to_string()),
            actions,
            source_read: None,
        };
    }
    cycle.log_finished(&summary);
    // Freeing the directory, scope and links of 100k objects takes a few hundred
    // milliseconds: the blocking pool does it while the caller gets on with the summary.
    drop(tokio::task::spawn_blocking(move || {
        drop((dir, scoped, links))
    }));
    CycleReport {
        summary,
        actions,
        source_read: None,
    }
}

/// A record of each object the plan skips, with why: out of scope and never provisioned, or a
/// problem of its own (invalid, duplicate matching value, unmappable). A dry run lists them so
/// an admin reviewing the plan sees what will *not* be provisioned as well as what will.
fn skip_records(
    dir: &Directory,
    scoped: &Scoped,
    links: &LinkIndex,
    plan: &Plan,
) -> Vec<ActionRecord> {
    let mut out = Vec::new();
    for ty in [ObjectType::User, ObjectType::Group] {
        for (id, obj) in dir.objects(ty) {
            if let Some(Err(why)) = scoped.decision(ty, id) {
                if links.get(ty, id).is_none() {
                    let detail = format!("out of scope: {why}");
                    let name = obj.display_name();
                    out.push(ActionRecord::new("skip", ty, id, None, name, detail));
                }
            }
        }
    }
    for p in &plan.problems {
        let ty = match p.object_type.as_deref() {
            Some("user") => ObjectType::User,
            Some("group") => ObjectType::Group,
            // An object whose type could not be told: the summary's problems list it.
            _ => continue,
        };
        let id = p.id.as_deref().unwrap_or("-");
        let name = p.name.as_deref().unwrap_or(id);
        let detail = format!("{}: {}", p.code, p.reason);
        out.push(ActionRecord::new("skip", ty, id, None, name, detail));
    }
    out
}

/// The job's quarantine reason, for the summary.
fn quarantine_reason(meta: &JobMeta) -> Option<String> {
    meta.quarantine
        .as_ref()
        .map(|q| q.reason.as_str().to_string())
}

/// A user whose disable or delete the threshold holds stays in her groups: removing her from
/// them is part of taking her away, and would go out while the admin has not decided.
fn keep_held_members(
    memberships: &mut Vec<plan::MembershipChange>,
    held: &[crate::state::StagedDelete],
) {
    let held_users: std::collections::HashSet<&str> = held
        .iter()
        .filter(|s| s.object_type == ObjectType::User)
        .map(|s| s.target_id.as_str())
        .collect();
    if held_users.is_empty() {
        return;
    }
    for m in memberships.iter_mut() {
        m.remove.retain(|t| !held_users.contains(t.as_str()));
    }
    memberships.retain(|m| !m.add.is_empty() || !m.remove.is_empty());
}

/// One problem for the escrowed actions this cycle did not retry (they are not due yet, or
/// expired unchanged): never a silent success while failures wait.
fn escrow_problems(tally: &escrow::Tally, problems: &mut Vec<Problem>) {
    if tally.deferred == 0 {
        return;
    }
    let next = tally
        .earliest_deferred
        .map(|t| format!("; the next retry is due at {}", t.to_rfc3339()))
        .unwrap_or_default();
    problems.push(Problem {
        object_type: None,
        id: None,
        name: None,
        code: "Escrowed".into(),
        reason: format!(
            "{} earlier failed action(s) not retried this cycle (escrow schedule){next}",
            tally.deferred
        ),
        count: 1,
    });
}

/// One cycle under way: what every phase needs, and the clock and request counts its
/// summary is measured against.
struct Cycle<'c> {
    job: &'c JobSpec,
    store: &'c dyn StateStore,
    target: &'c dyn Target,
    opts: &'c CycleOptions<'c>,
    stop: &'c CancellationToken,
    cycle_id: &'c str,
    started: Instant,
    /// The cycle's start by its clock: every safety rule of the cycle judges at this time.
    now: chrono::DateTime<chrono::Utc>,
    requests_before: RequestCounts,
    /// Set to the source read's duration in microseconds once it ends (see [`run_cycle`]).
    source_read: &'c AtomicU64,
}

/// Refuse a job whose config names another target or source than its links were made
/// against (`JobMeta::binding`); a target moved by `previous_url` moves the binding in `meta`.
fn check_binding(
    job_spec: &JobSpec,
    target: &dyn Target,
    meta: &mut JobMeta,
) -> Result<(), BindingError> {
    let Some(binding) = meta.binding.as_mut() else {
        return Ok(());
    };
    let job = &job_spec.name;
    if let Some(url) = target.base_url() {
        if binding.target_url != url {
            if target.previous_url().as_deref() != Some(binding.target_url.as_str()) {
                return Err(BindingError::Target {
                    job: job.clone(),
                    stored: binding.target_url.clone(),
                    configured: url,
                });
            }
            tracing::warn!(job = %job, from = %binding.target_url, to = %url, "target moved (previous_url): the links now belong to the new URL");
            binding.target_url = url;
        }
    }
    if let Some(source) = job_spec.source.identity() {
        if binding.source.is_empty() {
            binding.source = source;
        } else if binding.source != source {
            return Err(BindingError::Source {
                job: job.clone(),
                stored: binding.source.clone(),
                configured: source,
            });
        }
    }
    Ok(())
}

/// The config names another target or source than the one the job's links were made against.
#[derive(Debug, thiserror::Error)]
enum BindingError {
    #[error("job {job}: its links were made against the target {stored} but the config now names {configured}; nothing was sent. To provision {configured} from scratch (every object matched again there, nothing deleted for the move) run `provisiond restart --job {job} --reset full`; if it is the same application at a new address, set previous_url = \"{stored}\" in the job's [jobs.target] table")]
    Target {
        job: String,
        stored: String,
        configured: String,
    },
    #[error("job {job}: its links were made from the source {stored} but the config now reads {configured}; nothing was sent. To provision from the new source (every object matched again, nothing deleted for the move) run `provisiond restart --job {job} --reset full`, or put the previous source back in the config")]
    Source {
        job: String,
        stored: String,
        configured: String,
    },
}

/// Why the import phase failed: nothing was changed.
#[derive(Debug, thiserror::Error)]
enum ImportError {
    #[error("source read failed, nothing was changed: {0}")]
    Source(SourceError),
    #[error("{0}")]
    Links(#[from] StateError),
    #[error("loading the links failed: {0}")]
    Loading(tokio::task::JoinError),
    /// A source said what changed but then had no directory to give (a bug of the source).
    #[error("the source gave changes but no directory; nothing was changed")]
    NoView,
}

/// What the import phase produced: the directory read, its scope, and the links loaded
/// meanwhile.
struct Imported {
    dir: Directory,
    scoped: Scoped,
    links: LinkIndex,
    /// The source's position after this read: stored only once the cycle is flushed.
    watermark: Option<String>,
    /// Set when this is a delta cycle: `dir` is a view of the changes
    /// (`crate::model::view`) and `links` are the view's.
    delta: Option<Delta>,
}

/// What a delta cycle knows beyond its view.
struct Delta {
    /// The job's links before the cycle (`JobMeta::linked`).
    linked: u64,
    /// The groups whose memberships are planned (`model::view::membership_groups`).
    membership_groups: std::collections::BTreeSet<String>,
}

impl<'c> Cycle<'c> {
    /// Where the time goes, at debug level: `RUST_LOG=provisiond::cycle=debug`.
    fn phase(&self, name: &'static str) {
        tracing::debug!(job = %self.job.name, phase = name, elapsed_ms = self.started.elapsed().as_millis() as u64, peak_rss_kb = peak_rss_kb(), "cycle phase done");
    }

    /// The summary of a cycle that has not got anywhere yet: failed until it succeeds.
    fn new_summary(&self) -> CycleSummary {
        CycleSummary {
            job: self.job.name.clone(),
            cycle_id: self.cycle_id.to_string(),
            kind: CycleKind::Initial,
            status: CycleStatus::Failed,
            dry_run: self.opts.dry_run,
            started_at: self.now,
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
            escrowed: 0,
            escrow_retried: 0,
            staged_deletes: 0,
            quarantine: None,
        }
    }

    /// Mark `summary` failed with `error`, measured up to now.
    fn fail(&self, mut summary: CycleSummary, error: String) -> CycleSummary {
        tracing::error!(job = %self.job.name, cycle_id = %self.cycle_id, error = %error, problems = summary.problem_count, "cycle failed");
        summary.error = Some(error);
        summary.status = CycleStatus::Failed;
        summary.duration_ms = self.started.elapsed().as_millis() as u64;
        summary.requests = self.target.request_counts().since(&self.requests_before);
        summary
    }

    /// [`Cycle::fail`], and remember the failed cycle without moving the watermark.
    fn fail_and_record(
        &self,
        summary: CycleSummary,
        meta: &mut JobMeta,
        error: String,
        actions: Vec<ActionRecord>,
    ) -> CycleReport {
        let s = self.fail(summary, error);
        record_failure(self.store, &self.job.name, meta, &s, self.opts.dry_run);
        CycleReport {
            summary: s,
            actions,
            source_read: None,
        }
    }

    /// A cycle a stop ended (SIGTERM, Ctrl-C): `Interrupted`, not failed. The objects whose
    /// writes were not sent are no problem of theirs (the next cycle sends them): `summarise`
    /// left their `Interrupted` entries out. Recorded without moving the watermark.
    fn interrupt_and_record(
        &self,
        mut summary: CycleSummary,
        meta: &mut JobMeta,
        actions: Vec<ActionRecord>,
    ) -> CycleReport {
        tracing::warn!(job = %self.job.name, cycle_id = %self.cycle_id, "cycle interrupted by a stop; the next cycle carries on");
        summary.error = Some("interrupted by a stop; the next cycle carries on".into());
        summary.status = CycleStatus::Interrupted;
        summary.duration_ms = self.started.elapsed().as_millis() as u64;
        summary.requests = self.target.request_counts().since(&self.requests_before);
        record_failure(
            self.store,
            &self.job.name,
            meta,
            &summary,
            self.opts.dry_run,
        );
        CycleReport {
            summary,
            actions,
            source_read: None,
        }
    }

    /// Load the job's memory and decide whether this cycle is incremental.
    fn begin(&self, summary: &mut CycleSummary) -> Result<(JobMeta, String), StateError> {
        let meta = self.store.meta(&self.job.name)?;
        let fingerprint = self.job.fingerprint();
        summary.kind = cycle_kind(&meta, &fingerprint);
        tracing::info!(job = %self.job.name, cycle_id = %self.cycle_id, kind = %summary.kind, source = %self.job.source.describe(), "cycle started");
        Ok((meta, fingerprint))
    }

    /// Refuse to run against another target or source than the links were made against
    /// (`JobMeta::binding`): the links would point at nothing there, an incremental cycle
    /// would send nothing and the new target would stay empty. A `previous_url` equal to
    /// the stored target moves the binding (written with the cycle's record).
    fn check_binding(&self, meta: &mut JobMeta) -> Result<(), BindingError> {
        check_binding(self.job, self.target, meta)
    }

    /// Remember which target and source the links belong to, once there are links (a first
    /// cycle that reached nothing binds nothing, so fixing a wrong URL is not refused).
    fn bind(&self, meta: &mut JobMeta, links: &LinkIndex) {
        if meta.binding.is_some() || self.opts.dry_run || links.is_empty() {
            return;
        }
        if let Some(target_url) = self.target.base_url() {
            meta.binding = Some(Binding {
                target_url,
                source: self.job.source.identity().unwrap_or_default(),
            });
        }
    }

    /// Read the source and decide the scope, while the links load. The error is the
    /// summary's: nothing was changed.
    ///
    /// With `delta_linked` (an incremental cycle of a job whose link count is known) and a
    /// read that says what changed, this is a delta cycle: the directory is the source's view
    /// of the changes and of `always` (`crate::model::view`), and only the view's links are
    /// loaded, by id.
    async fn import(
        &self,
        summary: &mut CycleSummary,
        watermark: Option<&str>,
        delta_linked: Option<u64>,
        always: &[(ObjectType, String)],
    ) -> Result<Imported, ImportError> {
        // The links load on the blocking pool (a second for 100k from sled) while this task
        // reads the source and decides the scope; not when the cycle may need only a few.
        let may_delta = delta_linked.is_some() && self.job.source.reads_changes();
        let loading = (!may_delta).then(|| {
            tokio::task::spawn_blocking(
                self.store
                    .links_loader(&self.job.name, self.links_builder(summary.kind)),
            )
        });
        let reading = Instant::now();
        // An initial cycle (new mappings or scope) reads everything, as before.
        if watermark.is_some() && summary.kind == CycleKind::Incremental {
            self.restore_source_snapshot().await;
        }
        let read = if may_delta {
            self.job.source.read_changes(watermark).await
        } else {
            self.job.source.read(watermark).await
        };
        let micros = u64::try_from(reading.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.source_read.store(micros, Ordering::Relaxed);
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                // The loader holds a handle on the store (a sled tree): joined before the
                // cycle returns, so that no task of this cycle still holds the store when the
                // caller closes or reopens it. Its result is of no use now.
                if let Some(loading) = loading {
                    drop(loading.await);
                }
                return Err(ImportError::Source(e));
            }
        };
        let mut dir = read.directory;
        if let (Some(changes), Some(linked), true) =
            (read.changes.as_ref(), delta_linked, dir.complete)
        {
            if let Some(imported) = self
                .import_delta(summary, changes, linked, always, read.watermark.clone())
                .await?
            {
                if let Some(loading) = loading {
                    drop(loading.await);
                }
                return Ok(imported);
            }
        }
        if read.changes.is_some() {
            // The read handed over no objects: the whole directory as of it.
            dir = self
                .job
                .source
                .view(None)
                .await
                .ok_or(ImportError::NoView)?;
        }
        let loading = match loading {
            Some(l) => l,
            None => tokio::task::spawn_blocking(
                self.store
                    .links_loader(&self.job.name, self.links_builder(summary.kind)),
            ),
        };
        self.import_whole(
            summary,
            dir,
            loading,
            read.watermark,
            "source read and scope decided",
        )
        .await
    }

    /// The whole directory's scope and every link (`loading`), for a full cycle: after a
    /// complete read, linked users the read did not return are put to the source first
    /// ([`Cycle::find_soft_deleted`]).
    async fn import_whole(
        &self,
        summary: &mut CycleSummary,
        mut dir: Directory,
        loading: tokio::task::JoinHandle<Result<LinkIndex, StateError>>,
        watermark: Option<String>,
        phase: &'static str,
    ) -> Result<Imported, ImportError> {
        let (scoped, links) = if dir.complete && self.job.source.checks_deleted_items().await {
            // The links say which users the read should have found; deciding the scope
            // waits for them.
            let links = loading.await.map_err(ImportError::Loading)??;
            self.find_soft_deleted(&mut dir, &links).await;
            (self.decide_scope(&dir), links)
        } else {
            let scoped = self.decide_scope(&dir);
            let links = loading.await.map_err(ImportError::Loading)??;
            (scoped, links)
        };
        summary.source_complete = dir.complete;
        self.phase(phase);
        Ok(Imported {
            dir,
            scoped,
            links,
            watermark,
            delta: None,
        })
    }

    /// The delta path of [`Cycle::import`]: the view of `changes` and `always`, its scope and
    /// its links. `None` when the source has no view to give (the full path then runs).
    async fn import_delta(
        &self,
        summary: &mut CycleSummary,
        changes: &crate::model::Changes,
        linked: u64,
        always: &[(ObjectType, String)],
        watermark: Option<String>,
    ) -> Result<Option<Imported>, ImportError> {
        let mut focus = changes.clone();
        for (ty, id) in always {
            match ty {
                ObjectType::User => focus.users.insert(id.clone()),
                ObjectType::Group => focus.groups.insert(id.clone()),
            };
        }
        let references: Vec<String> = self
            .job
            .mappings
            .users
            .iter()
            .filter_map(|m| m.reference_attribute().map(str::to_string))
            .collect();
        let Some(dir) = self.job.source.view(Some((&focus, &references))).await else {
            return Ok(None);
        };
        let (user_ids, group_ids) = crate::model::view::link_ids(&dir, &focus);
        let user_ids: Vec<&str> = user_ids.into_iter().collect();
        let group_ids: Vec<&str> = group_ids.into_iter().collect();
        let job = &self.job.name;
        let mut links = self.store.links_for(job, ObjectType::User, &user_ids)?;
        links.extend(self.store.links_for(job, ObjectType::Group, &group_ids)?);
        let links = LinkIndex::new(links);
        let scoped = self.decide_scope(&dir);
        let membership_groups = crate::model::view::membership_groups(&dir, &focus);
        summary.source_complete = dir.complete;
        tracing::info!(
            job = %job,
            changed_users = changes.users.len(),
            changed_groups = changes.groups.len(),
            view_users = dir.users.len(),
            view_groups = dir.groups.len(),
            links = count_links(&links),
            "delta cycle: planning the changed objects only"
        );
        self.phase("source read and scope decided");
        Ok(Some(Imported {
            dir,
            scoped,
            links,
            watermark,
            delta: Some(Delta {
                linked,
                membership_groups,
            }),
        }))
    }

    /// A delta cycle that must plan the whole directory after all: the source's whole
    /// directory as of the same read, every link, the scope of everything.
    async fn widen(
        &self,
        summary: &mut CycleSummary,
        imported: Imported,
    ) -> Result<Imported, ImportError> {
        let watermark = imported.watermark;
        drop((imported.dir, imported.scoped, imported.links));
        let loading = tokio::task::spawn_blocking(
            self.store
                .links_loader(&self.job.name, LinkIndexBuilder::default()),
        );
        let dir = match self.job.source.view(None).await {
            Some(d) => d,
            None => {
                drop(loading.await);
                return Err(ImportError::NoView);
            }
        };
        self.import_whole(
            summary,
            dir,
            loading,
            watermark,
            "widened to the whole directory",
        )
        .await
    }

    /// After a restart (or in a one-shot `sync`) the source has no snapshot in memory: hand it
    /// the one the store kept, so that it reads only changes. Anything wrong with the record
    /// only means a full read, which is complete and therefore safe.
    async fn restore_source_snapshot(&self) {
        let source = &self.job.source;
        if !source.wants_snapshot().await {
            return;
        }
        match self.store.source_snapshot(&self.job.name) {
            Ok(Some(bytes)) => match source.restore(&bytes).await {
                Ok(()) => {
                    tracing::info!(job = %self.job.name, bytes = bytes.len(), "source snapshot restored from the state store")
                }
                Err(e) => {
                    tracing::warn!(job = %self.job.name, error = %e, "stored source snapshot not used: reading the whole directory")
                }
            },
            Ok(None) => {
                tracing::info!(job = %self.job.name, "no stored source snapshot: reading the whole directory")
            }
            Err(e) => {
                tracing::warn!(job = %self.job.name, error = %e, "stored source snapshot unreadable: reading the whole directory")
            }
        }
    }

    /// A full read cannot tell a user soft-deleted in the source (restorable, to be disabled)
    /// from one gone for good (to be deleted): ask the source about the linked users it did
    /// not return. If it cannot answer, the read counts as incomplete: nothing is deleted.
    async fn find_soft_deleted(&self, dir: &mut Directory, links: &LinkIndex) {
        let rejected: std::collections::HashSet<&str> = dir
            .rejected
            .iter()
            .filter_map(|r| r.id.as_deref())
            .collect();
        let missing: Vec<String> = links
            .of(ObjectType::User)
            .keys()
            .filter(|id| !dir.users.contains_key(id) && !rejected.contains(*id))
            .map(str::to_string)
            .collect();
        if missing.is_empty() {
            return;
        }
        match self.job.source.soft_deleted(&missing).await {
            Ok(found) => {
                for o in found {
                    dir.users.insert(o);
                }
            }
            Err(e) => {
                tracing::warn!(job = %self.job.name, error = %e, missing = missing.len(), "cannot tell soft-deleted users from deleted ones: nothing is disabled or deleted this cycle");
                dir.complete = false;
            }
        }
    }

    /// Phase one of the plan: users and groups.
    /// How the links of a whole-directory cycle are held: an incremental cycle whose user
    /// mappings are all pure (so the planner finds unchanged users by their input digest,
    /// without diffing) holds the user links slim, with only the exported values of the
    /// reference paths ([`LinkIndexBuilder::slim`]); [`Cycle::plan_objects`] takes whole the
    /// few the plan needs. Otherwise every link is whole, as every user is diffed.
    fn links_builder(&self, kind: CycleKind) -> LinkIndexBuilder {
        let users = &self.job.mappings.users;
        if kind != CycleKind::Incremental || !users.iter().all(crate::mapping::Mapping::is_pure) {
            return LinkIndexBuilder::default();
        }
        LinkIndexBuilder::slim(
            users
                .iter()
                .filter(|m| m.is_reference())
                .map(|m| m.key.to_string())
                .collect(),
        )
    }

    /// The scope of `dir`, off the async worker: seconds at a million users.
    fn decide_scope(&self, dir: &Directory) -> Scoped {
        crate::util::off_worker(|| scope::evaluate(dir, &self.job.scope))
    }

    /// The plan of the objects, with every link it needs whole: when a plan names slim links
    /// it would read or change (`Plan::whole`), they are taken whole from the store and the
    /// objects planned again; should the store not have them all (it changed under the
    /// cycle), every link is loaded whole. Off the async worker: seconds at a million users.
    fn plan_objects(
        &self,
        dir: &Directory,
        scoped: &Scoped,
        links: &mut LinkIndex,
        settings: &PlanSettings<'_>,
        skipping: &plan::Skipping,
    ) -> Result<Plan, StateError> {
        crate::util::off_worker(|| {
            let job = &self.job.name;
            let mut plan = self.plan_once(dir, scoped, links, settings, skipping);
            if !plan.whole.is_empty() {
                let wanted = plan.whole.len();
                for ty in [ObjectType::User, ObjectType::Group] {
                    let ids: Vec<&str> = plan
                        .whole
                        .iter()
                        .filter(|(t, _)| *t == ty)
                        .map(|(_, id)| id.as_str())
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    for l in self.store.links_for(job, ty, &ids)? {
                        links.insert(&l);
                    }
                }
                tracing::debug!(job = %job, links = wanted, "links taken whole from the store: planning again");
                plan = self.plan_once(dir, scoped, links, settings, skipping);
            }
            if !plan.whole.is_empty() {
                tracing::warn!(job = %job, links = plan.whole.len(), "links missing from the store while planning: loading every link whole");
                *links = self.store.links_loader(job, LinkIndexBuilder::default())()?;
                plan = self.plan_once(dir, scoped, links, settings, skipping);
            }
            self.phase("planned");
            self.log_plan(&plan, dir.complete);
            Ok(plan)
        })
    }

    /// One planning of the objects (see [`Cycle::plan_objects`]).
    fn plan_once(
        &self,
        dir: &Directory,
        scoped: &Scoped,
        links: &LinkIndex,
        settings: &PlanSettings<'_>,
        skipping: &plan::Skipping,
    ) -> Plan {
        let job = self.job;
        // Provisions are mapped again a chunk at a time by the export (`export_deferred`):
        // an initial cycle's mapped values are never all held at once. A directory of at most
        // `MAP_ONCE_MAX` objects keeps the values planning mapped (the same plan, see
        // `plan_objects_deferring`): mapping each again cost a sixth of the export's CPU, and
        // the memory it saves is bounded by that constant.
        let objects = scoped.users.len() + scoped.groups.len();
        if objects <= MAP_ONCE_MAX {
            plan::plan_objects_skipping(dir, scoped, &job.mappings, links, settings, skipping)
        } else {
            plan::plan_objects_deferring(dir, scoped, &job.mappings, links, settings, skipping)
        }
    }

    /// What a plan holds, in the log and the progress bar.
    fn log_plan(&self, plan: &Plan, complete: bool) {
        let job = self.job;
        if !complete {
            tracing::warn!(job = %job.name, withheld = plan.withheld_deprovisions, "source read incomplete: no disable and no delete this cycle");
        }
        tracing::info!(
            job = %job.name,
            actions = plan.actions.len() + plan.deferred.len(),
            unchanged_users = plan.unchanged_users,
            unchanged_groups = plan.unchanged_groups,
            unmapped = plan.unmapped,
            problems = plan.problems.len(),
            "planned"
        );
        if let Some(p) = self.opts.progress {
            p.set_length((plan.actions.len() + plan.deferred.len()) as u64);
        }
    }

    /// Which objects have an input digest: the planner may find them unchanged by it,
    /// without mapping them, in an incremental cycle (an initial one re-evaluates
    /// everything), and the export records it with the links it writes (`Skipping::stamp`),
    /// in every kind of cycle. Never an object with an escrowed action or a staged deletion.
    /// Unreadable records only mean more mapping.
    fn digesting(&self, book: &Book<'_>, staged: &[crate::state::StagedDelete]) -> plan::Skipping {
        let job = &self.job.name;
        let never = book
            .objects()
            .into_iter()
            .chain(staged.iter().map(|s| (s.object_type, s.source_id.clone())));
        let skipping = plan::Skipping::new(&self.job.mappings, self.job.null_values, never);
        for ty in [ObjectType::User, ObjectType::Group] {
            if !skipping.is_on(ty) {
                tracing::debug!(job = %job, object_type = %ty, "a mapping reads the clock or randomness: every object of this type is mapped");
            }
        }
        skipping
    }

    /// Keep the digests of the objects the plan found unchanged in their links, in memory and
    /// in the store, so the next cycle need not map them. A digest that is not stored only
    /// means mapping the object again.
    fn record_digests(&self, links: &mut LinkIndex, plan: &mut Plan) {
        let digests = std::mem::take(&mut plan.digests);
        if self.opts.dry_run || digests.is_empty() {
            return;
        }
        let job = &self.job.name;
        let mut failed = 0u64;
        for (ty, id, digest) in digests {
            let Some(mut link) = links.of_mut(ty).get_mut(&id) else {
                continue;
            };
            link.exported.set_digest(digest);
            if self.store.put_link(job, &link).is_err() {
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::warn!(job = %job, failed, "input digests not stored: those objects are mapped again next cycle");
        }
        self.phase("input digests recorded");
    }

    /// The accidental-deletion threshold: holds the plan's disables and deletes when they
    /// reach it (except those an admin allowed), records them as staged and quarantines the
    /// job at once, so a crash during the export loses neither.
    fn hold_deletions(
        &self,
        plan: &mut Plan,
        meta: &mut JobMeta,
        linked: u64,
        book: &Book<'_>,
        staged_before: Vec<crate::state::StagedDelete>,
        problems: &mut Vec<Problem>,
    ) -> Result<deletions::Held, StateError> {
        let job = &self.job.name;
        let allow = meta.allow_deletes;
        let threshold = &self.job.safety.deletions;
        let held = deletions::hold(
            &mut plan.actions,
            &staged_before,
            allow,
            linked,
            threshold,
            self.now,
        );
        for s in &held.staged {
            book.planned((s.object_type, s.source_id.clone(), false));
        }
        if allow {
            tracing::info!(job = %job, released = held.released, "allowed deletions: sending the staged ones still planned");
        }
        if !held.staged.is_empty() {
            tracing::warn!(event = "TooManyDeletes", job = %job, held = held.staged.len(), threshold = %threshold.describe(), "deletion threshold reached: no disable or delete sent");
            problems.push(Problem {
                object_type: None,
                id: None,
                name: None,
                code: "TooManyDeletes".into(),
                reason: format!(
                    "{} disable(s)/delete(s) held: the deletion threshold ({}) was reached; \
                     check the source, then run `provisiond allow-deletes --job {job}` to send \
                     them",
                    held.staged.len(),
                    threshold.describe()
                ),
                count: 1,
            });
        }
        if self.opts.dry_run {
            return Ok(held);
        }
        let imposed = (!held.staged.is_empty()).then(|| {
            let error = crate::state::QuarantineError {
                code: "TooManyDeletes".into(),
                message: format!(
                    "{} disable(s)/delete(s) reach the deletion threshold ({}); they are staged",
                    held.staged.len(),
                    threshold.describe()
                ),
            };
            let mut imposed = meta.clone();
            quarantine::impose(
                &mut imposed,
                job,
                QuarantineReason::TooManyDeletes,
                error,
                self.now,
            );
            imposed
        });
        let store = self.store;
        // Every cycle ends this step with an fsync: off the async worker, which a stalled
        // disk would otherwise hold before the export even began.
        crate::util::off_worker(|| {
            // An allowed set stays recorded until the cycle that sends it is committed: a
            // crash half-way leaves it for the next cycle.
            if !allow && !deletions::same_set(&staged_before, &held.staged) {
                store.set_staged_deletes(job, &held.staged)?;
            }
            if let Some(imposed) = &imposed {
                store.put_meta(job, imposed)?;
            }
            store.flush()
        })?;
        if let Some(imposed) = imposed {
            meta.quarantine = imposed.quarantine;
            meta.disabled = imposed.disabled;
        }
        Ok(held)
    }

    /// Escrowed actions whose retry is not due (and unchanged) are not sent this cycle.
    fn defer_escrowed(&self, plan: &mut Plan, book: &Book<'_>) {
        plan.actions.retain(|a| escrow_due(book, a));
    }

    /// A cycle that failed without a quarantine condition of its own leaves a quarantine in
    /// effect: one more evaluation, and the next attempt moves on (the scheduler does not
    /// retry a quarantined job at once).
    fn keep_quarantine(&self, meta: &mut JobMeta) {
        if let Some(q) = meta.quarantine.clone() {
            quarantine::impose(meta, &self.job.name, q.reason, q.error, self.now);
        }
    }

    fn exporter<'b>(&self, links: LinkIndex, book: &'b Book<'b>) -> Exporter<'b>
    where
        'c: 'b,
    {
        let mut exporter = Exporter::new(
            &self.job.name,
            self.cycle_id,
            self.target,
            self.store,
            links,
            self.job.concurrency,
            self.job.member_batch,
            self.stop,
            book,
        );
        exporter.record_actions = self.opts.record_actions;
        exporter.log = self.opts.log.filter(|_| !self.opts.dry_run);
        exporter.progress = self.opts.progress;
        exporter
    }

    /// Export phase one: users first, then groups (group members and managers need user ids).
    /// Of each type, the planned actions, then the deferred provisions.
    #[allow(clippy::too_many_arguments)]
    async fn export_objects(
        &self,
        exporter: &Exporter<'_>,
        plan: &mut Plan,
        dir: &Directory,
        scoped: &Scoped,
        settings: &PlanSettings<'_>,
        book: &Book<'_>,
        stamp: &plan::Skipping,
    ) {
        stamp.stamp(&mut plan.actions, dir, scoped);
        // The actions are moved, not cloned: each carries its object's mapped values.
        let (users, groups): (Vec<Action>, Vec<Action>) = std::mem::take(&mut plan.actions)
            .into_iter()
            .partition(|a| a.object_type() == ObjectType::User);
        let (new_users, new_groups): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.deferred)
            .into_iter()
            .partition(|(ty, _)| *ty == ObjectType::User);
        run_in_chunks(exporter, users).await;
        self.export_deferred(exporter, new_users, dir, scoped, settings, book, stamp)
            .await;
        run_in_chunks(exporter, groups).await;
        self.export_deferred(exporter, new_groups, dir, scoped, settings, book, stamp)
            .await;
        exporter.settle().await;
        self.phase("users and groups exported");
    }

    /// The deferred provisions, mapped and sent a chunk at a time: memory is set by the chunk,
    /// not by the directory. Escrowed ones whose retry is not due are left out, as
    /// [`Cycle::defer_escrowed`] does for the planned actions. A chunk is mapped when the
    /// last action of the one before has started, while its requests are still in flight:
    /// the pipe does not drain at each chunk's end.
    #[allow(clippy::too_many_arguments)]
    async fn export_deferred(
        &self,
        exporter: &Exporter<'_>,
        ids: Vec<(ObjectType, String)>,
        dir: &Directory,
        scoped: &Scoped,
        settings: &PlanSettings<'_>,
        book: &Book<'_>,
        stamp: &plan::Skipping,
    ) {
        use futures::StreamExt;
        let mappings = &self.job.mappings;
        let limit = exporter.in_flight();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        // Taken off the list a chunk at a time (from its end, the list reversed once: in
        // plan order, with no shifting), so each chunk's ids are freed once its actions are
        // made: held to the end, an initial cycle's million ids were ~50 MB of its peak.
        let mut rest = ids;
        rest.reverse();
        while !rest.is_empty() {
            if exporter.aborted().is_some() || self.stop.is_cancelled() {
                // Planned all the same: their escrows are not taken for done.
                for (ty, id) in rest.drain(..) {
                    book.planned((ty, id, false));
                }
                break;
            }
            let mut chunk = rest.split_off(rest.len().saturating_sub(EXPORT_CHUNK));
            chunk.reverse();
            let mut actions = plan::provisions(dir, scoped, mappings, settings, &chunk);
            drop(chunk);
            actions.retain(|a| escrow_due(book, a));
            stamp.stamp(&mut actions, dir, scoped);
            let unsearched = exporter.unsearched(&actions).await;
            for (i, action) in actions.into_iter().enumerate() {
                while in_flight.len() >= limit {
                    in_flight.next().await;
                }
                in_flight.push(exporter.run_owned(action, !unsearched.contains(&i)));
            }
        }
        while in_flight.next().await.is_some() {}
        exporter.flush_links();
    }

    /// Plan and export phase two (managers, memberships), unless the export gave up or a
    /// stop was asked for.
    #[allow(clippy::too_many_arguments)]
    async fn export_references(
        &self,
        exporter: &Exporter<'_>,
        dir: &Directory,
        scoped: &Scoped,
        settings: &PlanSettings<'_>,
        problems: &mut Vec<Problem>,
        book: &Book<'_>,
        held: &[crate::state::StagedDelete],
        membership_groups: Option<&std::collections::BTreeSet<String>>,
        stamp: &plan::Skipping,
    ) {
        if exporter.aborted().is_some() || self.stop.is_cancelled() {
            return;
        }
        let mut refs = crate::util::off_worker(|| {
            plan::plan_memberships(
                dir,
                scoped,
                &self.job.mappings,
                &exporter.links(),
                membership_groups,
            )
        });
        keep_held_members(&mut refs.memberships, held);
        refs.memberships.retain(|m| {
            let key = (ObjectType::Group, m.group_source_id.clone(), true);
            book.verdict(key, || escrow::membership_fingerprint(m)) != Verdict::Wait
        });
        if let Some(p) = self.opts.progress {
            p.inc_length(refs.memberships.len() as u64);
        }
        problems.extend(refs.problems.iter().cloned());
        self.phase("memberships planned");
        // The memberships go while the reference updates are planned and sent a chunk at a
        // time (each chunk planned on the links as the export left them): they touch group
        // links, the updates user links.
        futures::join!(
            exporter.run_memberships(&refs.memberships),
            self.export_reference_updates(exporter, dir, scoped, settings, book, stamp),
        );
        exporter.settle().await;
        self.phase("references exported");
    }

    /// Reference (manager) updates, planned and sent [`EXPORT_CHUNK`] users at a time: an
    /// initial cycle's are one per user with a manager, too many to hold at once.
    async fn export_reference_updates(
        &self,
        exporter: &Exporter<'_>,
        dir: &Directory,
        scoped: &Scoped,
        settings: &PlanSettings<'_>,
        book: &Book<'_>,
        stamp: &plan::Skipping,
    ) {
        // No reference mapping, no reference update: no walk of the directory to find none.
        if !self.job.mappings.users.iter().any(|m| m.is_reference()) {
            return;
        }
        let mut after: Option<String> = None;
        loop {
            if exporter.aborted().is_some() || self.stop.is_cancelled() {
                return;
            }
            let (mut updates, next) = plan::plan_reference_updates(
                dir,
                scoped,
                &self.job.mappings,
                &exporter.links(),
                settings,
                after.as_deref(),
                EXPORT_CHUNK,
            );
            updates.retain(|u| {
                let key = (u.object_type, u.source_id.clone(), true);
                book.verdict(key, || escrow::update_fingerprint(u)) != Verdict::Wait
            });
            self.take_whole(exporter, &mut updates);
            {
                let links = exporter.links();
                let stored = |id: &str| {
                    links
                        .get(ObjectType::User, id)
                        .is_some_and(|l| l.digest_stored())
                };
                stamp.stamp_kept(&mut updates, stored, dir, scoped);
            }
            if let Some(p) = self.opts.progress {
                p.inc_length(updates.len() as u64);
            }
            exporter.run_reference_updates(updates).await;
            match next {
                Some(n) => after = Some(n),
                None => return,
            }
        }
    }

    /// The reference updates' user links held slim ([`LinkIndexBuilder::slim`]) put whole
    /// into the exporter's index from the store: the export writes a link back after its
    /// update, with every exported value. An update whose link the store cannot give is
    /// left to the next cycle.
    fn take_whole(&self, exporter: &Exporter<'_>, updates: &mut Vec<plan::Update>) {
        let slim: Vec<String> = exporter
            .links()
            .slim_users(updates.iter().map(|u| u.source_id.as_str()))
            .into_iter()
            .map(str::to_string)
            .collect();
        if slim.is_empty() {
            return;
        }
        let ids: Vec<&str> = slim.iter().map(String::as_str).collect();
        let job = &self.job.name;
        // Up to a chunk's links read from the store: off the async worker, like the other
        // store work whose size the directory sets.
        let whole = crate::util::off_worker(|| self.store.links_for(job, ObjectType::User, &ids));
        match whole {
            Ok(whole) => {
                let mut links = exporter.links();
                for l in &whole {
                    links.insert(l);
                }
            }
            Err(e) => {
                tracing::warn!(job = %job, error = %e, updates = slim.len(), "links not read from the store: those reference updates wait for the next cycle")
            }
        }
        let links = exporter.links();
        updates.retain(|u| {
            !links
                .get(ObjectType::User, &u.source_id)
                .is_some_and(|l| l.is_slim())
        });
    }

    /// Count what the plan and the export did into `summary`; hand back why the export gave
    /// up (if it did), the links as the export left them, and the action records.
    fn summarise(
        &self,
        summary: &mut CycleSummary,
        plan: &Plan,
        mut problems: Vec<Problem>,
        exporter: Exporter<'_>,
    ) -> (Option<Abort>, LinkIndex, Vec<ActionRecord>) {
        let aborted = exporter.aborted();
        let unchanged_then_changed = exporter.unchanged_then_changed();
        let groups_unchanged_then_failed = exporter.groups_unchanged_then_failed();
        let links = std::mem::take(&mut *exporter.links());
        let (users_c, groups_c, memberships, export_problems, actions) = exporter.into_results();
        problems.extend(export_problems);
        // A stop (not an abort) left writes unsent: no problem of those objects' (the next
        // cycle sends them). Taken out before the summary's problems are merged and cut.
        if aborted.is_none() && self.stop.is_cancelled() {
            problems.retain(|p| p.code != export::INTERRUPTED);
        }

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
                count: 1,
            });
        }
        // One event per problem, where admins look (journald, log shippers): the summary keeps
        // only the first `SUMMARY_PROBLEMS`, and `problem_count` (also in "cycle finished")
        // counts exactly these events.
        for p in &problems {
            tracing::warn!(
                job = %self.job.name,
                cycle_id = %self.cycle_id,
                object_type = p.object_type.as_deref(),
                id = p.id.as_deref(),
                name = p.name.as_deref(),
                code = %p.code,
                reason = %p.reason,
                "problem"
            );
        }
        summary.problem_count = problems.len() as u64;
        summary.problems = crate::summary::dedup_problems(problems)
            .into_iter()
            .take(SUMMARY_PROBLEMS)
            .collect();
        summary.requests = self.target.request_counts().since(&self.requests_before);
        summary.duration_ms = self.started.elapsed().as_millis() as u64;
        summary.status = if summary.problem_count > 0 {
            CycleStatus::EntryLevelErrors
        } else {
            CycleStatus::Succeeded
        };
        (aborted, links, actions)
    }

    /// Record a completed cycle: the links are durable before the watermark moves past them.
    /// A dry run records nothing.
    async fn commit(
        &self,
        summary: &CycleSummary,
        meta: &mut JobMeta,
        fingerprint: String,
        watermark: Option<String>,
        held: &deletions::Held,
    ) -> Result<(), StateError> {
        if self.opts.dry_run {
            return Ok(());
        }
        let store = self.store;
        let job = &self.job.name;
        // Two fsyncs: off the async worker, which a stalled disk would otherwise hold.
        let done = crate::util::off_worker(|| {
            store.flush().and_then(|()| {
                // An allowance is used up by the cycle that sent the allowed deletions: what it
                // held instead (new ones, past the threshold again) is the staged set now.
                if meta.allow_deletes {
                    store.set_staged_deletes(job, &held.staged)?;
                    meta.allow_deletes = false;
                }
                meta.watermark = watermark;
                meta.fingerprint = Some(fingerprint);
                meta.last_success = Some(self.now);
                meta.last_cycle = Some(summary.clone());
                store.put_meta(&self.job.name, meta)?;
                store.flush()
            })
        });
        self.phase("state flushed");
        if done.is_ok() {
            self.persist_source_snapshot().await;
        }
        done
    }

    /// The source's snapshot and its delta link or watermark, once the cycle that read them
    /// is committed. A failure keeps the previous pair, which is still a consistent place to
    /// continue from (an older snapshot with its own older position).
    async fn persist_source_snapshot(&self) {
        let Some(bytes) = self.job.source.snapshot().await else {
            return;
        };
        let stored =
            crate::util::off_worker(|| self.store.put_source_snapshot(&self.job.name, &bytes));
        match stored {
            Ok(()) => {
                tracing::debug!(job = %self.job.name, bytes = bytes.len(), "source snapshot stored")
            }
            Err(e) => {
                tracing::warn!(job = %self.job.name, error = %e, "source snapshot not stored: after a restart the next read is a full one")
            }
        }
    }

    fn log_finished(&self, summary: &CycleSummary) {
        tracing::info!(
            job = %self.job.name,
            cycle_id = %self.cycle_id,
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
    }
}

use export::Abort;

/// Actions exported per chunk by [`run_in_chunks`].
const EXPORT_CHUNK: usize = 4096;

/// Users and groups up to which a cycle plans with every provision's mapped values kept,
/// rather than mapping provisions again at export ([`Cycle::plan_objects`]): their values
/// take a few tens of megabytes at most.
const MAP_ONCE_MAX: usize = 16_384;

/// `exporter.run` over `actions` in order, a chunk at a time, each action dropped once sent:
/// an initial cycle's actions carry every object's mapped values (a million users:
/// gigabytes), which are freed as the export goes instead of living beside the links it
/// builds until the end. The next chunk starts while the last actions of the one before are
/// in flight, as [`Cycle::export_deferred`] does: the pipe drains once, at the end.
async fn run_in_chunks(exporter: &Exporter<'_>, mut actions: Vec<Action>) {
    use futures::StreamExt;
    let limit = exporter.in_flight();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    // Reversed once, so that each chunk comes off the end (no shifting of the rest), and the
    // vector's own buffer shrinks with it.
    actions.reverse();
    while !actions.is_empty() {
        let mut chunk = actions.split_off(actions.len().saturating_sub(EXPORT_CHUNK));
        chunk.reverse();
        if actions.capacity() > 2 * actions.len() + EXPORT_CHUNK {
            actions.shrink_to_fit();
        }
        let unsearched = exporter.unsearched(&chunk).await;
        for (i, action) in chunk.into_iter().enumerate() {
            while in_flight.len() >= limit {
                in_flight.next().await;
            }
            in_flight.push(exporter.run_owned(action, !unsearched.contains(&i)));
        }
    }
    while in_flight.next().await.is_some() {}
    exporter.flush_links();
}

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
    meta: &mut JobMeta,
    summary: &CycleSummary,
    dry_run: bool,
) {
    if dry_run {
        return;
    }
    meta.last_cycle = Some(summary.clone());
    // An fsync: off the async worker, as the commit's.
    let recorded =
        crate::util::off_worker(|| store.put_meta(job, meta).and_then(|()| store.flush()));
    if let Err(e) = recorded {
        tracing::error!(job, error = %e, "could not record the failed cycle");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::FilterSpec;
    use crate::source::file::FileSource;
    use serde_json::json;

    fn filter(spec: serde_json::Value) -> ScopingFilter {
        let spec: FilterSpec = serde_json::from_value(spec).unwrap();
        ScopingFilter::compile(spec).unwrap()
    }

    fn sample_scopes() -> Vec<(ScopeSettings, NullPolicy)> {
        let filtered = ScopeSettings {
            mode: ScopeMode::All,
            excluded_roles: vec!["Default Access".into(), "Quote \" and \\ é".into()],
            user_filters: vec![
                filter(json!({"title": "Sales", "clauses": [
                    {"attribute": "department", "operator": "EQUALS", "value": "Sales"},
                    {"attribute": "userAccountControl", "operator": "&", "value": 2},
                    {"attribute": "extensionAttribute1", "operator": "IS NULL"}]})),
                filter(json!({"clauses": [
                    {"attribute": "accountEnabled", "operator": "IS TRUE"},
                    {"attribute": "jobTitle", "operator": "REGEX MATCH", "value": "^(a|b)\\d+$"}]})),
            ],
            group_filters: vec![filter(json!({"clauses": [
                {"attribute": "displayName", "operator": "Greater_Than", "value": "10"}]}))],
        };
        vec![
            (ScopeSettings::default(), NullPolicy::Leave),
            (ScopeSettings::default(), NullPolicy::Remove),
            (
                ScopeSettings {
                    excluded_roles: vec![],
                    ..ScopeSettings::default()
                },
                NullPolicy::Leave,
            ),
            (filtered, NullPolicy::Remove),
        ]
    }

    /// The hand-written encoding is byte for byte the serde form fingerprints were made of
    /// before it existed: upgrading forces no initial cycle.
    #[test]
    fn the_scope_encoding_matches_the_earlier_serde_form() {
        for (scope, nulls) in sample_scopes() {
            assert_eq!(
                scope_fingerprint(&scope, nulls),
                serde_json::to_string(&(&scope, nulls)).unwrap()
            );
        }
    }

    /// A target that takes every write: searches find nothing, creates get the next id.
    pub(super) struct Accepting(pub(super) AtomicU64);

    #[async_trait::async_trait]
    impl Target for Accepting {
        async fn find(
            &self,
            _: ObjectType,
            _: &str,
            _: &serde_json::Value,
        ) -> Result<Vec<serde_json::Value>, crate::target::TargetError> {
            Ok(Vec::new())
        }
        async fn create(
            &self,
            _: ObjectType,
            _: serde_json::Value,
        ) -> Result<serde_json::Value, crate::target::TargetError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(json!({ "id": format!("t{n}") }))
        }
        async fn patch(
            &self,
            _: ObjectType,
            _: &str,
            _: &[crate::target::PatchOp],
        ) -> Result<(), crate::target::TargetError> {
            Ok(())
        }
        async fn delete(&self, _: ObjectType, _: &str) -> Result<(), crate::target::TargetError> {
            Ok(())
        }
        fn request_counts(&self) -> RequestCounts {
            RequestCounts::default()
        }
    }

    /// A stalled disk holds a cycle, not the daemon: on a one-worker runtime, as `run` and
    /// `sync` build theirs, a timer task still fires while the state store's flushes wait.
    /// A cycle that succeeds flushes in the deletion threshold's step and in its commit; one
    /// whose source is misshaped flushes once, recording the failure.
    #[test]
    fn a_stalled_store_flush_leaves_the_only_async_worker_to_other_tasks() {
        let users: Vec<_> = (0..3)
            .map(|i| {
                json!({"id": format!("u{i}"), "userPrincipalName": format!("u{i}@x.test"),
                            "displayName": format!("User {i}"), "accountEnabled": true})
            })
            .collect();
        let good = json!({ "users": users, "groups": [], "assignments": [] });
        stalled_flush_case(&good, CycleStatus::Succeeded, 3);
        stalled_flush_case(&json!({ "users": users }), CycleStatus::Failed, 0);
    }

    fn stalled_flush_case(directory: &serde_json::Value, status: CycleStatus, created: u64) {
        use std::sync::Arc;
        let (_dir, job) = all_users_job(directory);
        let store = Arc::new(crate::state::MemoryStore::new());
        let store2 = Arc::clone(&store);
        let report = crate::state::memory::test_support::with_stalled_flushes(
            &store,
            &format!("a cycle ending {status:?}"),
            async move {
                let target = Accepting(AtomicU64::new(0));
                let opts = CycleOptions::default();
                run_cycle(&job, &*store2, &target, &opts, &CancellationToken::new()).await
            },
        );
        let s = &report.summary;
        assert_eq!((s.status, s.users.created), (status, created), "{s:#?}");
    }

    /// A reference update writes its user's link back whole: after an initial cycle with
    /// managers, every stored user link holds every value it exported and its input digest,
    /// the manager's value included, and a second cycle sends nothing.
    #[test]
    fn after_an_initial_cycle_with_managers_every_stored_link_is_whole() {
        let users: Vec<_> = (0..4)
            .map(|i| {
                let mut u = json!({"id": format!("u{i}"), "userPrincipalName": format!("u{i}@x.test"),
                    "displayName": format!("User {i}"), "givenName": "Ann", "surname": format!("S{i}"),
                    "mail": format!("u{i}@x.test"), "accountEnabled": true, "jobTitle": "Engineer"});
                if i > 0 {
                    u["manager"] = json!("u0");
                }
                u
            })
            .collect();
        let directory = json!({ "users": users, "groups": [], "assignments": [] });
        let (_dir, job) = all_users_job(&directory);
        let store = crate::state::MemoryStore::new();
        let target = Accepting(AtomicU64::new(0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cycle = |store: &crate::state::MemoryStore| {
            let opts = CycleOptions::default();
            rt.block_on(run_cycle(
                &job,
                store,
                &target,
                &opts,
                &CancellationToken::new(),
            ))
            .summary
        };
        let first = cycle(&store);
        assert_eq!(
            (first.status, first.users.created, first.users.updated),
            // The manager updates of objects created in the cycle count as their creates.
            (CycleStatus::Succeeded, 4, 0),
            "{first:#?}"
        );
        let links = store.links("all").unwrap();
        let manager_target = links
            .iter()
            .find(|l| l.source_id == "u0")
            .unwrap()
            .target_id
            .clone();
        let manager_path = job
            .mappings
            .users
            .iter()
            .find(|m| m.is_reference())
            .unwrap()
            .key
            .to_string();
        for l in &links {
            for path in [
                "userName",
                "displayName",
                "title",
                "active",
                "name.familyName",
            ] {
                assert!(
                    l.exported.get(path).is_some(),
                    "{}: no {path} stored: {l:?}",
                    l.source_id
                );
            }
            assert!(
                l.exported.digest().is_some(),
                "{}: no digest stored",
                l.source_id
            );
            let manager = l.exported.get(&manager_path);
            if l.source_id == "u0" {
                assert_eq!(manager, None);
            } else {
                assert_eq!(manager, Some(json!(manager_target)), "{}", l.source_id);
            }
        }
        let second = cycle(&store);
        assert_eq!(second.status, CycleStatus::Succeeded, "{second:#?}");
        assert_eq!(
            (
                second.users.created,
                second.users.updated,
                second.users.unchanged
            ),
            (0, 0, 4),
            "{second:#?}"
        );
    }

    /// A job of every user of `directory` (an export, written to the temporary directory
    /// returned with the job), the generic SCIM mappings.
    pub(super) fn all_users_job(directory: &serde_json::Value) -> (tempfile::TempDir, JobSpec) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.json");
        std::fs::write(&path, directory.to_string()).unwrap();
        let job = JobSpec {
            name: "all".into(),
            source: Box::new(FileSource::new(path)),
            scope: ScopeSettings {
                mode: ScopeMode::All,
                ..ScopeSettings::default()
            },
            mappings: Mappings::generic_scim().unwrap(),
            null_values: NullPolicy::Leave,
            concurrency: 1,
            member_batch: 1,
            safety: Default::default(),
        };
        (dir, job)
    }

    /// A change here makes every job run one initial cycle after an upgrade: only on purpose.
    #[test]
    fn the_fingerprint_is_pinned() {
        let (scope, null_values) = sample_scopes().pop().unwrap();
        let job = JobSpec {
            name: "pinned".into(),
            source: Box::new(FileSource::new("directory.json".into())),
            scope,
            mappings: Mappings::generic_scim().unwrap(),
            null_values,
            concurrency: 1,
            member_batch: 1,
            safety: Default::default(),
        };
        // The built-in preset's mapping fingerprint, then the scope encoding.
        let pinned = concat!(
            "f88f696f8bc252b76cb4d5cf:",
            r#"[{"mode":"all","excluded_roles":["Default Access","Quote \" and \\ é"],"#,
            r#""user_filters":[{"title":"Sales","clauses":[{"attribute":"department","operator":"EQUALS","value":"Sales"},{"attribute":"userAccountControl","operator":"&","value":2},{"attribute":"extensionAttribute1","operator":"IS NULL"}]},"#,
            r#"{"clauses":[{"attribute":"accountEnabled","operator":"IS TRUE"},{"attribute":"jobTitle","operator":"REGEX MATCH","value":"^(a|b)\\d+$"}]}],"#,
            r#""group_filters":[{"clauses":[{"attribute":"displayName","operator":"Greater_Than","value":"10"}]}]},"#,
            r#""remove"]"#,
        );
        assert_eq!(job.fingerprint(), pinned);
    }
}
