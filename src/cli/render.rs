//! How summaries and reports read: shared by `sync`, `status` and `demo`.

use crate::cycle::{ActionRecord, CycleReport};
use crate::model::ObjectType;
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

/// A cycle report as an admin reads it: the summary, and a dry run's plan.
pub(crate) fn render_report(r: &CycleReport) -> String {
    let mut out = render_summary(&r.summary);
    if r.summary.dry_run {
        out.push_str(&render_plan(&r.actions));
    }
    out
}

/// Plan lines are kept to this width where the names and values allow.
const WIDTH: usize = 100;

/// The order the plan lists actions in, with each one's mark and summary label.
const KINDS: [(&str, &str, &str); 10] = [
    ("create", "+", "create"),
    ("adopt", "=", "match and adopt"),
    ("update", "~", "update"),
    ("disable", "-", "disable"),
    ("delete", "-", "delete"),
    ("add_members", "+", "add members"),
    ("remove_members", "-", "remove members"),
    ("gone", "·", "already gone"),
    ("failed", "!", "failed"),
    ("skip", "·", "skip"),
];

/// A dry run's plan, for review: each create with the attributes it would send, each update's
/// changes (old → new), disables and deletes named, members by name, every skipped object with
/// why, then one summary line per kind of action.
pub(crate) fn render_plan(actions: &[ActionRecord]) -> String {
    use std::fmt::Write;
    let mut out = String::from("  plan (dry run: no writing request was sent):\n");
    let known = |a: &ActionRecord| KINDS.iter().any(|(k, _, _)| *k == a.action);
    for (kind, mark, _) in KINDS {
        for a in actions.iter().filter(|a| a.action == kind) {
            plan_entry(&mut out, mark, a);
        }
    }
    // An action this list does not know yet still shows, after the known ones.
    for a in actions.iter().filter(|a| !known(a)) {
        plan_entry(&mut out, "?", a);
    }
    let _ = writeln!(out, "  plan summary:");
    let mut any_change = false;
    for (kind, _, label) in KINDS {
        let (users, groups) = count_of(actions, kind);
        if users + groups == 0 {
            continue;
        }
        if !matches!(kind, "skip" | "failed" | "gone") {
            any_change = true;
        }
        let what = match (users, groups) {
            (u, 0) => plural(u, "user"),
            (0, g) => plural(g, "group"),
            (u, g) => format!("{}, {}", plural(u, "user"), plural(g, "group")),
        };
        let _ = writeln!(out, "    {label:<16} {what}");
    }
    if !any_change {
        let _ = writeln!(out, "    no changes: the target is in step with the source");
    }
    out
}

fn count_of(actions: &[ActionRecord], kind: &str) -> (u64, u64) {
    let mut n = (0, 0);
    for a in actions.iter().filter(|a| a.action == kind) {
        match a.object_type {
            ObjectType::User => n.0 += 1,
            ObjectType::Group => n.1 += 1,
        }
    }
    n
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// One action of the plan: a heading line, then its attributes, changes or members.
fn plan_entry(out: &mut String, mark: &str, a: &ActionRecord) {
    use std::fmt::Write;
    let ty = a.object_type.as_str();
    // A create is named by what the target will know it by: a user's userName, a group's
    // displayName (the source's display name is often a person's full name).
    let key = match a.object_type {
        ObjectType::User => "userName",
        ObjectType::Group => "displayName",
    };
    let name = a
        .attributes
        .get(key)
        .and_then(serde_json::Value::as_str)
        .unwrap_or(&a.name);
    let head = match a.action.as_str() {
        "create" => format!("create {ty} {name:?}"),
        "adopt" => format!("adopt {ty} {name:?}: {}", a.detail),
        "update" => format!("update {ty} {name:?}"),
        "disable" | "delete" if a.detail.is_empty() => format!("{} {ty} {name:?}", a.action),
        "disable" | "delete" => format!("{} {ty} {name:?}: {}", a.action, a.detail),
        "add_members" => format!(
            "add {} to group {name:?}:",
            plural(a.members.len() as u64, "member")
        ),
        "remove_members" => {
            format!(
                "remove {} from group {name:?}:",
                plural(a.members.len() as u64, "member")
            )
        }
        "skip" | "failed" => format!("{} {ty} {name:?} ({}): {}", a.action, a.source_id, a.detail),
        other => format!("{other} {ty} {name:?}: {}", a.detail),
    };
    let _ = writeln!(out, "    {mark} {}", clip(&head, WIDTH - 6));
    for (path, value) in &a.attributes {
        let line = format!("{path:<28} {}", show(Some(value)));
        let _ = writeln!(out, "        {}", clip(&line, WIDTH - 8));
    }
    for c in &a.changes {
        let line = format!(
            "{:<28} {} → {}",
            c.attribute,
            show(c.old.as_ref()),
            show(c.new.as_ref())
        );
        let _ = writeln!(out, "        {}", clip(&line, WIDTH - 8));
    }
    if matches!(a.action.as_str(), "add_members" | "remove_members") {
        let names: Vec<String> = if a.members.is_empty() {
            // A record made before members had names: its target ids are in `detail`.
            vec![a.detail.clone()]
        } else {
            a.members.iter().map(|m| format!("{m:?}")).collect()
        };
        for line in wrap(&names, WIDTH - 8) {
            let _ = writeln!(out, "        {line}");
        }
    }
}

/// A value as the plan shows it: JSON, `(none)` for absent or removed.
fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "(none)".to_string(), |v| v.to_string())
}

/// Cut `s` to `max` characters, marking the cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Comma-separated items over as many lines of at most `max` characters as they need (an item
/// longer than a line has a line of its own).
fn wrap(items: &[String], max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{item},")
        } else {
            item.clone()
        };
        if !line.is_empty() && line.chars().count() + 1 + piece.chars().count() > max {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&piece);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
