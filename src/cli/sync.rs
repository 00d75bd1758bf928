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

/// Run one cycle of each selected job and print the reports. `stop_on` makes the future that
/// stops a cycle run in this process (signals, from `main`): it is only made then, so that a
/// signal while the daemon runs the cycle keeps its default action.
pub(crate) async fn sync<F>(
    config: &Config,
    job: Option<&str>,
    dry_run: bool,
    json: bool,
    stop_on: impl FnOnce() -> F,
) -> Result<i32, Failure>
where
    F: Future<Output = ()> + Send + 'static,
{
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
            reports
        }
    };
    let mut code = 0;
    for r in &reports {
        code = code.max(super::cycle_exit(r.summary.status));
        if json {
            let mut out = serde_json::to_value(&r.summary).unwrap_or_default();
            // A dry run's point is the plan: its actions go in the JSON too.
            if let (true, Some(map)) = (r.summary.dry_run, out.as_object_mut()) {
                map.insert(
                    "actions".into(),
                    serde_json::to_value(&r.actions).unwrap_or_default(),
                );
            }
            outln!("{out}");
        } else {
            out!("{}", render_report(r));
        }
    }
    Ok(code)
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
