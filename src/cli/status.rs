//! `provisiond status`: each job's last cycle, linked objects and next run.

use super::out::outln;
use super::Failure;
use crate::config::Config;
use crate::daemon::control::{Request, Response};
use crate::daemon::jobs::{offline_status, JobState, JobStatus};
use crate::daemon::lock::{reach, Reached, StoreUser};
use crate::state::QuarantineReason;
use crate::summary::CycleStatus;
use std::time::Duration;

/// Times in text output are to the second.
const SECS: chrono::SecondsFormat = chrono::SecondsFormat::Secs;

/// Print each selected job's status, from the daemon or (none running) from the store.
pub(crate) async fn status(config: &Config, job: Option<&str>, json: bool) -> Result<i32, Failure> {
    let selected = super::select(config, job)?;
    // No state directory: nothing has run and no daemon serves this config. Read-only, so it
    // creates nothing (opening the store would create the directory, as root under sudo).
    if !config.state_dir.exists() {
        let empty = crate::state::MemoryStore::new();
        let jobs: Vec<JobStatus> = selected
            .into_iter()
            .map(|j| offline_status(j, &empty))
            .collect::<Result<_, _>>()
            .map_err(|e| Failure::failed(e.to_string()))?;
        return Ok(print_status(&jobs, json));
    }
    let req = Request::Status {
        job: job.map(str::to_string),
    };
    let probe = (&req, Some(Duration::from_secs(10)));
    let jobs: Vec<JobStatus> =
        match reach(config, StoreUser::Command("status"), Some(probe)).await? {
            Reached::Daemon(Response::Status { jobs }) => jobs,
            Reached::Daemon(Response::Error { message }) => return Err(Failure::failed(message)),
            Reached::Daemon(other) => {
                return Err(Failure::failed(format!(
                    "unexpected answer from the daemon: {other:?}"
                )))
            }
            Reached::Store(store) => selected
                .into_iter()
                .map(|j| offline_status(j, &store))
                .collect::<Result<_, _>>()
                .map_err(|e| Failure::failed(e.to_string()))?,
        };
    Ok(print_status(&jobs, json))
}

/// Print the statuses, as text or JSON; the exit code.
fn print_status(jobs: &[JobStatus], json: bool) -> i32 {
    if json {
        // One line, like `sync --json` and `mappings --json`: machine output (`jq` reads it).
        outln!("{}", serde_json::to_string(&jobs).unwrap_or_default());
        return super::exit::OK;
    }
    for s in jobs {
        outln!("{} ({})", s.job, s.schedule);
        for line in state_lines(s) {
            outln!("  {line}");
        }
        outln!(
            "  linked: {} users, {} groups",
            s.users_linked,
            s.groups_linked
        );
        match &s.last_cycle {
            Some(c) => {
                // The kind as `sync` and `--json` spell it (was its Debug form, "Initial").
                outln!(
                    "  last cycle: {} cycle {} at {} ({} ms)",
                    c.kind.as_str(),
                    match c.status {
                        CycleStatus::Succeeded => "succeeded",
                        CycleStatus::EntryLevelErrors => "with entry-level errors",
                        CycleStatus::Failed => "failed",
                        CycleStatus::Interrupted => "interrupted",
                    },
                    c.started_at.to_rfc3339_opts(SECS, true),
                    c.duration_ms
                );
                if let Some(e) = &c.error {
                    outln!("    error: {e}");
                }
                for line in problem_lines(c, &s.job, STATUS_PROBLEMS) {
                    outln!("    {line}");
                }
            }
            None => outln!("  last cycle: none yet"),
        }
        if let Some(t) = s.last_success {
            outln!("  last success: {}", t.to_rfc3339_opts(SECS, true));
        }
        if s.running {
            outln!("  a cycle is running now");
        }
        if s.escrows.total > 0 {
            outln!(
                "  escrows: {} failed actions are retried by later cycles ({} of them references){}",
                s.escrows.total,
                s.escrows.reference,
                s.escrows
                    .oldest
                    .map(|t| format!(", the oldest failing since {}", t.to_rfc3339_opts(SECS, true)))
                    .unwrap_or_default()
            );
        }
        if let Some(first) = s.steady_state_first {
            outln!(
                "  steady state: nothing to do since {}{}",
                first.to_rfc3339_opts(SECS, true),
                s.steady_state_last
                    .map(|t| format!(" (last checked {})", t.to_rfc3339_opts(SECS, true)))
                    .unwrap_or_default()
            );
        }
        match (&s.next_run, &s.note) {
            (Some(t), _) => outln!("  next run: {}", t.to_rfc3339_opts(SECS, true)),
            (None, Some(n)) => outln!("  next run: none ({n})"),
            (None, None) if s.running => {}
            (None, None) => outln!("  next run: not scheduled"),
        }
    }
    super::exit::OK
}

/// Problems of the last cycle the text `status` lists; the rest are counted.
const STATUS_PROBLEMS: usize = 10;

/// The last cycle's problems as `status` lists them: a heading with their count, the first
/// `limit` (identical ones once, with their count), then how many more and where they are.
fn problem_lines(c: &crate::summary::CycleSummary, job: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    if c.problem_count == 0 {
        return out;
    }
    out.push(format!("problems ({}):", c.problem_count));
    let mut listed = 0;
    for p in c.problems.iter().take(limit) {
        out.push(format!(
            "  {}",
            super::render::problem_line(p, &crate::util::text::bounded_text(&p.reason, 160))
        ));
        if p.count > 1 {
            out.push(format!("    (and {} more object(s) alike)", p.count - 1));
        }
        listed += p.count;
    }
    if c.problem_count > listed {
        out.push(format!(
            "  and {} more: every problem is a \"problem\" event in the log (cycle {}); \
             `provisiond sync --job {job} --dry-run` lists the skipped objects",
            c.problem_count - listed,
            c.cycle_id
        ));
    }
    out
}

/// The job's state in words, with the command to run next.
fn state_lines(s: &JobStatus) -> Vec<String> {
    let job = &s.job;
    let mut out = Vec::new();
    let quarantine = s.quarantine.as_ref().map(|q| {
        format!(
            "{} since {} (attempt {}): {}",
            q.reason,
            q.series_began.to_rfc3339_opts(SECS, true),
            q.series_count,
            q.error.message
        )
    });
    match s.state {
        JobState::Disabled => {
            out.push(format!(
                "state: disabled after 28 days in quarantine{}",
                quarantine.map(|q| format!(" ({q})")).unwrap_or_default()
            ));
            out.push(format!(
                "  no cycle runs: fix the cause, then `provisiond restart --job {job}`"
            ));
        }
        JobState::Paused => {
            out.push("state: paused: no cycle starts".to_string());
            out.push(format!("  to go on: `provisiond resume --job {job}`"));
        }
        JobState::Quarantine => {
            if let Some(q) = &s.quarantine {
                out.push(format!(
                    "state: quarantined, {}",
                    quarantine.unwrap_or_default()
                ));
                let next = if s.allow_deletes && q.reason == QuarantineReason::TooManyDeletes {
                    "deletions allowed: the next cycle sends those still planned".to_string()
                } else {
                    format!(
                        "next attempt at {}",
                        q.next_attempt.to_rfc3339_opts(SECS, true)
                    )
                };
                out.push(format!("  {next}"));
                out.push(format!("  {}", quarantine_advice(q.reason, s)));
            }
        }
        JobState::NotRun => out.push("state: no cycle has run yet".into()),
        JobState::Active => out.push("state: active".into()),
    }
    if s.staged_deletes > 0
        && s.quarantine.as_ref().map(|q| q.reason) != Some(QuarantineReason::TooManyDeletes)
    {
        out.push(format!(
            "staged deletions: {}{}",
            s.staged_deletes,
            if s.allow_deletes {
                " (allowed: the next cycle sends those still planned)"
            } else {
                ""
            }
        ));
    }
    out
}

/// What to do about a quarantine, by its reason.
fn quarantine_advice(reason: QuarantineReason, s: &JobStatus) -> String {
    let job = &s.job;
    match reason {
        QuarantineReason::TooManyDeletes => format!(
            "{} deletions are staged: review them (`provisiond sync --job {job} --dry-run`), \
             then `provisiond allow-deletes --job {job}`, or fix the source and wait for the \
             next cycle",
            s.staged_deletes
        ),
        QuarantineReason::EncounteredQuarantineException => format!(
            "the target refused the token or does not speak SCIM: check with \
             `provisiond test-connection --job {job}`, fix it, then `provisiond restart --job {job}`"
        ),
        QuarantineReason::EncounteredEscrowProportionThreshold
        | QuarantineReason::EncounteredBaseEscrowThreshold
        | QuarantineReason::EncounteredTotalEscrowThreshold => format!(
            "too many actions failed: see the last cycle's problems, fix the cause, then \
             `provisiond restart --job {job}` (or `--reset quarantine` to keep retrying the escrows)"
        ),
    }
}

#[cfg(test)]
mod problem_tests {
    use super::problem_lines;
    use serde_json::json;

    fn summary(problems: serde_json::Value, count: u64) -> crate::summary::CycleSummary {
        let zero = json!({"created": 0, "updated": 0, "disabled": 0, "deleted": 0,
            "unchanged": 0, "skipped": 0, "failed": 0});
        serde_json::from_value(json!({
            "job": "robin", "cycle_id": "c-1", "kind": "incremental",
            "status": "entry_level_errors", "dry_run": false,
            "started_at": "2026-01-01T00:00:00Z", "duration_ms": 1,
            "users": zero, "groups": zero, "memberships": {"added": 0, "removed": 0},
            "requests": {"GET": 0, "POST": 0, "PUT": 0, "PATCH": 0, "DELETE": 0},
            "source_complete": true,
            "problems": problems, "problem_count": count,
        }))
        .unwrap()
    }

    #[test]
    fn the_first_problems_are_listed_then_how_many_more() {
        let problems: Vec<_> = (0..12)
            .map(|i| {
                json!({"object_type": "user", "id": format!("u{i}"), "name": format!("U {i}"),
                "code": "DuplicateSourceEntries", "reason": format!("value {i}")})
            })
            .collect();
        let lines = problem_lines(&summary(json!(problems), 30), "robin", 10);
        assert_eq!(lines[0], "problems (30):");
        assert_eq!(
            lines[1],
            "  user u0 \"U 0\": DuplicateSourceEntries: value 0"
        );
        assert_eq!(lines.len(), 12, "{lines:#?}");
        assert!(lines[11].starts_with("  and 20 more: "), "{lines:#?}");
        assert!(lines[11].contains("cycle c-1"), "{lines:#?}");
    }

    #[test]
    fn a_cycle_wide_problem_names_no_object_and_alike_ones_are_counted() {
        let problems = json!([
            {"code": "TooManyDeletes", "reason": "6 held"},
            {"object_type": "user", "id": "u1", "code": "EntryConflict", "reason": "x", "count": 3},
        ]);
        let lines = problem_lines(&summary(problems, 4), "robin", 10);
        assert_eq!(
            lines,
            [
                "problems (4):",
                "  TooManyDeletes: 6 held",
                "  user u1: EntryConflict: x",
                "    (and 2 more object(s) alike)",
            ]
        );
        assert!(problem_lines(&summary(json!([]), 0), "robin", 10).is_empty());
    }
}
