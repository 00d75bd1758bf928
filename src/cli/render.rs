//! How summaries and reports read: shared by `sync`, `status` and `demo`.

use crate::cycle::CycleReport;
use crate::summary::{CycleStatus, CycleSummary};

/// A cycle summary as an admin reads it.
pub(crate) fn render_summary(s: &CycleSummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let status = match s.status {
        CycleStatus::Succeeded => "succeeded",
        CycleStatus::EntryLevelErrors => "finished with errors on some objects",
        CycleStatus::Failed => "FAILED",
        CycleStatus::Interrupted => "interrupted",
    };
    let kind = s.kind.as_str();
    let _ = writeln!(
        out,
        "{}: {}{kind} cycle {status} in {:.1} s (cycle {})",
        s.job,
        if s.dry_run { "dry-run " } else { "" },
        s.duration_ms as f64 / 1000.0,
        s.cycle_id
    );
    if let Some(e) = &s.error {
        let _ = writeln!(out, "  error: {e}");
    }
    let u = &s.users;
    let _ = writeln!(
        out,
        "  users:       created {}, updated {}, disabled {}, deleted {}, unchanged {}, skipped {}, failed {}",
        u.created, u.updated, u.disabled, u.deleted, u.unchanged, u.skipped, u.failed
    );
    let g = &s.groups;
    let _ = writeln!(
        out,
        "  groups:      created {}, updated {}, deleted {}, unchanged {}, skipped {}, failed {}",
        g.created, g.updated, g.deleted, g.unchanged, g.skipped, g.failed
    );
    let _ = writeln!(
        out,
        "  memberships: added {}, removed {}",
        s.memberships.added, s.memberships.removed
    );
    let r = &s.requests;
    let _ = writeln!(
        out,
        "  requests:    GET {}, POST {}, PATCH {}, PUT {}, DELETE {}",
        r.get, r.post, r.patch, r.put, r.delete
    );
    if !s.source_complete && s.error.is_none() {
        let _ = writeln!(
            out,
            "  source read incomplete: {} disable(s)/delete(s) withheld, none done",
            s.withheld_deprovisions
        );
    } else if s.withheld_deprovisions > 0 {
        let _ = writeln!(
            out,
            "  {} disable(s)/delete(s) withheld: some source objects could not be read",
            s.withheld_deprovisions
        );
    }

    if s.staged_deletes > 0 {
        let _ = writeln!(
            out,
            "  staged:      {} disable(s)/delete(s) held by the deletion threshold, none sent; \
             check the source, then run `provisiond allow-deletes --job {}`",
            s.staged_deletes, s.job
        );
    }
    if s.escrowed > 0 || s.escrow_retried > 0 {
        let _ = writeln!(
            out,
            "  escrow:      {} failed action(s) escrowed (retried by later cycles), {} retried",
            s.escrowed, s.escrow_retried
        );
    }
    if let Some(reason) = &s.quarantine {
        let _ = writeln!(
            out,
            "  quarantine:  {reason}: scheduled cycles back off (+6 h, +12 h, +24 h, then daily); \
             `provisiond status` says why"
        );
    }
    if s.problem_count > 0 {
        let _ = writeln!(out, "  problems ({}):", s.problem_count);
        for p in &s.problems {
            let _ = writeln!(
                out,
                "    {} {} {}: {}: {}",
                p.object_type.as_deref().unwrap_or("object"),
                p.id.as_deref().unwrap_or("-"),
                p.name
                    .as_deref()
                    .map(|n| format!("{n:?}"))
                    .unwrap_or_default(),
                p.code,
                p.reason
            );
            if p.count > 1 {
                let _ = writeln!(out, "      (and {} more object(s) alike)", p.count - 1);
            }
        }
        let listed: u64 = s.problems.iter().map(|p| p.count).sum();
        if s.problem_count > listed {
            let _ = writeln!(
                out,
                "    … and {} more in the logs",
                s.problem_count - listed
            );
        }
    }
    out
}

/// A cycle report as an admin reads it: the summary, and a dry run's planned actions.
pub(crate) fn render_report(r: &CycleReport) -> String {
    let mut out = render_summary(&r.summary);
    if r.summary.dry_run {
        out.push_str("  dry run: no writing request was sent; planned actions:\n");
        if r.actions.is_empty() {
            out.push_str("    (none)\n");
        }
        for a in &r.actions {
            out.push_str(&format!(
                "    {:<14} {} {:?} {}{}\n",
                a.action,
                a.object_type,
                a.name,
                a.target_id
                    .as_deref()
                    .map(|t| format!("[{t}] "))
                    .unwrap_or_default(),
                a.detail
            ));
        }
    }
    out
}
