//! `provisiond status`: each job's last cycle, linked objects and next run.

use super::render::kind_name;
use super::Failure;
use crate::config::Config;
use crate::daemon::control::{Request, Response};
use crate::daemon::jobs::{offline_status, JobStatus};
use crate::daemon::lock::{reach, Reached, StoreUser};
use crate::summary::CycleStatus;
use std::time::Duration;

/// Print each selected job's status, from the daemon or (none running) from the store.
pub async fn status(config: &Config, job: Option<&str>, json: bool) -> Result<i32, Failure> {
    config.select(job)?;
    let req = Request::Status {
        job: job.map(str::to_string),
    };
    let probe = (&req, Some(Duration::from_secs(10)));
    let jobs: Vec<JobStatus> =
        match reach(config, StoreUser::Command("status"), Some(probe)).await? {
            Reached::Daemon(Response::Status { jobs }) => jobs,
            Reached::Daemon(Response::Error { message }) => return Err(Failure::usage(message)),
            Reached::Daemon(other) => {
                return Err(Failure::usage(format!(
                    "unexpected answer from the daemon: {other:?}"
                )))
            }
            Reached::Store(store) => config
                .select(job)?
                .into_iter()
                .map(|j| offline_status(j, &store))
                .collect::<Result<_, _>>()
                .map_err(|e| Failure::usage(e.to_string()))?,
        };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).unwrap_or_default()
        );
        return Ok(0);
    }
    for s in &jobs {
        println!("{} ({})", s.job, s.schedule);
        println!(
            "  linked: {} users, {} groups",
            s.users_linked, s.groups_linked
        );
        match &s.last_cycle {
            Some(c) => {
                // The kind as `sync` and `--json` spell it (was its Debug form, "Initial").
                println!(
                    "  last cycle: {} cycle {} at {} ({} ms)",
                    kind_name(c.kind),
                    match c.status {
                        CycleStatus::Succeeded => "succeeded",
                        CycleStatus::EntryLevelErrors => "with entry-level errors",
                        CycleStatus::Failed => "failed",
                    },
                    c.started_at.to_rfc3339(),
                    c.duration_ms
                );
                if let Some(e) = &c.error {
                    println!("    error: {e}");
                }
            }
            None => println!("  last cycle: none yet"),
        }
        if let Some(t) = s.last_success {
            println!("  last success: {}", t.to_rfc3339());
        }
        if s.running {
            println!("  a cycle is running now");
        }
        match (&s.next_run, &s.note) {
            (Some(t), _) => println!("  next run: {}", t.to_rfc3339()),
            (None, Some(n)) => println!("  next run: none ({n})"),
            (None, None) if s.running => {}
            (None, None) => println!("  next run: not scheduled"),
        }
    }
    Ok(0)
}
