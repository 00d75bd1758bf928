//! `provisiond provision`: one user, or one group with up to five members, provisioned now
//! and shown step by step (Entra's "Provision on demand"). Through the daemon when it runs
//! (the run waits for a cycle of the job in progress), else on the store, locked as `sync`
//! locks it.

use super::out::{out, outln};
use super::{exit, Failure};
use crate::config::Config;
use crate::cycle::ondemand::{OnDemandRequest, OnDemandResult, MAX_MEMBERS};
use crate::daemon::control::{Request, Response};
use crate::daemon::jobs::{provision_on_demand, JobRuntime};
use crate::daemon::lock::{reach, Reached, StoreUser};
use crate::model::ObjectType;
use crate::provlog::Status;
use tokio_util::sync::CancellationToken;

/// Run the on-demand provisioning of `--user` or `--group` (with `--member`s) of `job`.
pub(crate) async fn provision(
    config: &Config,
    job: &str,
    user: Option<String>,
    group: Option<String>,
    members: Vec<String>,
    json: bool,
) -> Result<i32, Failure> {
    let request = build_request(user, group, members, invoking_user())?;
    let jobs = super::select(config, Some(job))?;
    let req = Request::Provision {
        job: job.to_string(),
        request: request.clone(),
    };
    let outcome = match reach(config, StoreUser::Command("provision"), Some((&req, None))).await? {
        Reached::Daemon(Response::Provision { outcome }) => outcome,
        Reached::Daemon(Response::Error { message }) => return Err(Failure::failed(message)),
        Reached::Daemon(other) => {
            return Err(Failure::failed(format!(
                "unexpected answer from the daemon: {other:?}"
            )))
        }
        Reached::Store(store) => {
            let Some(j) = jobs.into_iter().next() else {
                return Err(Failure::usage(format!("no job named {job:?}")));
            };
            let rt = JobRuntime::new(j.clone()).map_err(|e| Failure::failed(e.to_string()))?;
            let stop = CancellationToken::new();
            provision_on_demand(&rt, &store, &request, &config.state_dir, &stop).await
        }
    };
    if json {
        outln!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    } else {
        out!("{}", render(&outcome));
    }
    if let Some(e) = &outcome.log_error {
        eprintln!("warning: {e}");
    }
    Ok(match outcome.status {
        Status::Success | Status::Skipped => exit::OK,
        Status::Warning | Status::Failure => exit::ENTRY_ERRORS,
    })
}

/// The request from the command line: `--user` or `--group`, at most [`MAX_MEMBERS`]
/// `--member`s (clap already refuses both, neither, and members without a group).
fn build_request(
    user: Option<String>,
    group: Option<String>,
    members: Vec<String>,
    initiated_by: String,
) -> Result<OnDemandRequest, Failure> {
    if members.len() > MAX_MEMBERS {
        return Err(Failure::usage(format!(
            "at most {MAX_MEMBERS} --member values: on-demand provisioning takes one group with up to {MAX_MEMBERS} members, as Entra's (got {})",
            members.len()
        )));
    }
    let (object_type, key) = match (user, group) {
        (Some(u), None) => (ObjectType::User, u),
        (None, Some(g)) => (ObjectType::Group, g),
        _ => return Err(Failure::usage("give either --user or --group")),
    };
    if key.trim().is_empty() {
        return Err(Failure::usage("the --user or --group value is empty"));
    }
    Ok(OnDemandRequest {
        object_type,
        key,
        members,
        initiated_by,
    })
}

/// Who runs the command, for the log entry's `initiatedBy`.
fn invoking_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The outcome for a terminal: each step with its status and details.
pub(crate) fn render(r: &OnDemandResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for (i, step) in r.steps.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}. [{}] {}",
            i + 1,
            step.status.as_str(),
            step.description
        );
        let width = step.details.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in &step.details {
            let _ = writeln!(s, "     {k:<width$}  {v}");
        }
    }
    let _ = writeln!(
        s,
        "action: {}, status: {} (log entry {})",
        r.action,
        r.status.as_str(),
        r.log_id
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provlog::{Step, StepType};

    #[test]
    fn more_than_five_members_is_a_usage_error_naming_the_limit() {
        let members: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
        let e = build_request(None, Some("g".into()), members, "ann".into()).unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.message.contains("at most 5 --member"), "{}", e.message);
        let ok = build_request(None, Some("g".into()), vec!["a".into(); 5], "ann".into()).unwrap();
        assert_eq!(ok.object_type, ObjectType::Group);
        assert_eq!(ok.members.len(), 5);
    }

    #[test]
    fn the_text_shows_each_step_with_status_and_details() {
        let r = OnDemandResult {
            action: "skip".into(),
            status: Status::Skipped,
            steps: vec![Step {
                name: "EntrySynchronizationScoping".into(),
                provisioning_step_type: StepType::Scoping,
                status: Status::Skipped,
                description: "Determine if User ann is in scope".into(),
                details: [("Assigned to application".to_string(), "False".to_string())].into(),
            }],
            log_id: "L1".into(),
            log_error: None,
        };
        let text = render(&r);
        assert!(
            text.contains("1. [skipped] Determine if User ann is in scope"),
            "{text}"
        );
        assert!(text.contains("Assigned to application  False"), "{text}");
        assert!(
            text.contains("action: skip, status: skipped (log entry L1)"),
            "{text}"
        );
    }
}
