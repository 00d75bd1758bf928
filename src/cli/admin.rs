//! `provisiond restart`, `allow-deletes`, `pause` and `resume`: through the daemon when it
//! runs (it applies them between the job's cycles), else on the store directly.

use super::out::outln;
use super::Failure;
use crate::config::Config;
use crate::daemon::admin::{self, AdminCommand};
use crate::daemon::control::{self, Request, Response};
use crate::daemon::lock::{reach, Reached, StoreUser};
use std::time::Duration;

/// Apply `command` to `job` and print what was done in one line.
pub(crate) async fn admin(
    config: &Config,
    job: &str,
    command: AdminCommand,
    name: &'static str,
) -> Result<i32, Failure> {
    super::select(config, Some(job))?;
    warn_if_running(config, job).await;
    let req = Request::Admin {
        job: job.to_string(),
        command: command.clone(),
    };
    // No timeout: a command sent while a cycle runs is applied when that cycle ends.
    let message = match reach(config, StoreUser::Command(name), Some((&req, None))).await? {
        Reached::Daemon(Response::Admin { message }) => message,
        // The daemon refused the command (nothing staged, say), as the store path does.
        Reached::Daemon(Response::Error { message }) => return Err(Failure::usage(message)),
        Reached::Daemon(other) => {
            return Err(Failure::failed(format!(
                "unexpected answer from the daemon: {other:?}"
            )))
        }
        Reached::Store(store) => match admin::apply(&store, job, &command) {
            Ok(applied) => applied.message,
            Err(e) => {
                return Err(Failure {
                    code: e.exit_code(),
                    message: e.to_string(),
                })
            }
        },
    };
    outln!("{message}");
    Ok(0)
}

/// Say so when the daemon is running a cycle of the job: the command waits for its end.
async fn warn_if_running(config: &Config, job: &str) {
    let req = Request::Status {
        job: Some(job.to_string()),
    };
    if let Ok(Some(Response::Status { jobs })) =
        control::request(&config.control_socket, &req, Some(Duration::from_secs(10))).await
    {
        if jobs.iter().any(|j| j.running) {
            eprintln!("a cycle of job {job} is running: the command applies when it ends");
        }
    }
}
