//! `provisiond sync`: one cycle now, through the daemon when it runs, else in this process.

use super::out::{out, outln};
use super::render::render_report;
use super::Failure;
use crate::config::Config;
use crate::daemon::control::{Request, Response};
use crate::daemon::jobs::{run_job_cycle, JobRuntime};
use crate::daemon::lock::{reach, Reached, StoreUser};
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How `sync` runs and reports.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SyncMode {
    /// Plan only: send no writing request, print the plan.
    pub dry_run: bool,
    /// With `dry_run`: exit 3 when changes are pending, 0 when none (`terraform plan`).
    pub detailed_exitcode: bool,
    /// One JSON document per job instead of text.
    pub json: bool,
}

/// Run one cycle of each selected job and print the reports. `stop_on` makes the future that
/// stops a cycle run in this process (signals, from `main`): it is only made then, so that a
/// signal while the daemon runs the cycle keeps its default action.
pub(crate) async fn sync<F>(
    config: &Config,
    job: Option<&str>,
    mode: SyncMode,
    stop_on: impl FnOnce() -> F,
) -> Result<i32, Failure>
where
    F: Future<Output = ()> + Send + 'static,
{
    let SyncMode {
        dry_run,
        detailed_exitcode,
        json,
    } = mode;
    // clap refuses it too; a caller building the mode by hand gets the same answer.
    if detailed_exitcode && !dry_run {
        return Err(Failure::usage("--detailed-exitcode needs --dry-run"));
    }
    super::select(config, job)?;
    let req = Request::Sync {
        job: job.map(str::to_string),
        dry_run,
    };
    let reports = match reach(config, StoreUser::Command("sync"), Some((&req, None))).await? {
        Reached::Daemon(Response::Sync { reports }) => reports,
        Reached::Daemon(Response::Error { message }) => return Err(Failure::failed(message)),
        Reached::Daemon(other) => {
            return Err(Failure::failed(format!(
                "unexpected answer from the daemon: {other:?}"
            )))
        }
        Reached::Store(store) => {
            let stop = stop_when(stop_on());
            let store = Arc::new(store);
            let mut reports = Vec::new();
            for j in super::select(config, job)? {
                let rt = JobRuntime::new(j.clone()).map_err(|e| Failure::failed(e.to_string()))?;
                let bar = progress_bar(json);
                // On a runtime worker, as in the daemon, rather than on the main thread: the
                // HTTP connections' tasks run on the workers, and every response handed across
                // threads cost a wake-up (a tenth of the initial cycle's CPU time).
                let cycle = tokio::spawn({
                    let (store, stop, bar) = (store.clone(), stop.clone(), bar.clone());
                    async move {
                        let report =
                            run_job_cycle(&rt, &*store, dry_run, bar.as_ref(), &stop).await;
                        rt.settle_logs().await;
                        report
                    }
                });
                let report = cycle.await.map_err(|e| {
                    Failure::failed(format!("the cycle of job {} failed: {e}", j.name))
                })?;
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                reports.push(report);
            }
            // The notices these cycles queued: one try now; what is left waits in the outbox.
            // A dry run queues none and sends none: it changes nothing anywhere, and mail left
            // by earlier cycles waits for a real one (or the daemon).
            if !dry_run {
                let smtp = config.smtp.as_ref();
                crate::notify::deliver_once(smtp, &*store, crate::notify::ONE_SHOT_DELIVERY).await;
            }
            reports
        }
    };
    let mut code = 0;
    let mut pending = false;
    for r in &reports {
        code = code.max(super::cycle_exit(r.summary.status));
        pending |= has_changes(r);
        if json {
            let mut out = serde_json::to_value(&r.summary).unwrap_or_default();
            // A dry run's point is the plan: it goes in the JSON too.
            if let (true, Some(map)) = (r.summary.dry_run, out.as_object_mut()) {
                map.extend(plan_json(r));
            }
            outln!("{out}");
        } else {
            out!("{}", render_report(r));
        }
    }
    // Problems and failures keep their codes: 3 only says "changes pending" when nothing is
    // wrong, so a gate never takes a failed plan for a clean one.
    if detailed_exitcode && code == super::exit::OK && pending {
        code = super::exit::PENDING_CHANGES;
    }
    Ok(code)
}

/// Whether the cycle did (or, dry, would do) anything to the target.
fn has_changes(r: &crate::cycle::CycleReport) -> bool {
    let (u, g, m) = (&r.summary.users, &r.summary.groups, &r.summary.memberships);
    u.created + u.updated + u.disabled + u.deleted + g.created + g.updated + g.deleted > 0
        || m.added + m.removed > 0
}

/// A dry run's plan as data: `actions` (what would be sent, with a create's attributes, an
/// update's changes and members by name), `skipped` (objects left out, with why) and `counts`
/// (actions by kind).
fn plan_json(r: &crate::cycle::CycleReport) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{json, Value};
    let (skipped, actions): (Vec<_>, Vec<_>) = r.actions.iter().partition(|a| a.action == "skip");
    let mut counts = serde_json::Map::new();
    for a in &r.actions {
        let n = counts.entry(a.action.clone()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    let skipped: Vec<Value> = skipped
        .iter()
        .map(|a| {
            json!({
                "object_type": a.object_type,
                "source_id": a.source_id,
                "name": a.name,
                "reason": a.detail,
            })
        })
        .collect();
    let mut out = serde_json::Map::new();
    out.insert(
        "actions".into(),
        serde_json::to_value(&actions).unwrap_or_default(),
    );
    out.insert("skipped".into(), Value::Array(skipped));
    out.insert("counts".into(), Value::Object(counts));
    out
}

fn progress_bar(json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} objects [{elapsed_precise}] {wide_bar}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// A token cancelled when `shutdown` completes.
fn stop_when(shutdown: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        s.cancel();
        eprintln!("interrupted: finishing in-flight requests");
    });
    stop
}
