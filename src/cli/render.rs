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
        if s.dry_run {
            // A dry run records nothing: the job's real state is unchanged.
            let _ = writeln!(
                out,
                "  quarantine:  {reason}: a real cycle would quarantine the job (nothing was \
                 recorded: dry run)"
            );
        } else {
            let _ = writeln!(
                out,
                "  quarantine:  {reason}: scheduled cycles back off (+6 h, +12 h, +24 h, then \
                 daily); `provisiond status` says why"
            );
        }
    }
    if s.problem_count > 0 {
        let _ = writeln!(out, "  problems ({}):", s.problem_count);
        for p in &s.problems {
            let _ = writeln!(out, "    {}", problem_line(p, &p.reason));
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

/// One problem as `sync` and `status` list it: the object (type, id, name; none for a problem
/// of the whole cycle, such as held deletions), the code, then `reason` (the caller may have
/// shortened it).
pub(crate) fn problem_line(p: &crate::summary::Problem, reason: &str) -> String {
    let object = match (&p.object_type, &p.id, &p.name) {
        (None, None, None) => String::new(),
        (ty, id, name) => format!(
            "{} {}{}: ",
            ty.as_deref().unwrap_or("object"),
            id.as_deref().unwrap_or("-"),
            name.as_deref()
                .map(|n| format!(" {n:?}"))
                .unwrap_or_default()
        ),
    };
    format!("{object}{}: {reason}", p.code)
}

/// A cycle report as an admin reads it: the summary, and a dry run's plan.
pub(crate) fn render_report(r: &CycleReport) -> String {
    let mut out = render_summary(&r.summary);
    if r.summary.dry_run {
        let finished = matches!(
            r.summary.status,
            CycleStatus::Succeeded | CycleStatus::EntryLevelErrors
        );
        out.push_str(&render_plan(&r.actions, finished));
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
/// why, then one summary line per kind of action. `finished`: the dry cycle ran to its end
/// (else the plan is only what it got to).
pub(crate) fn render_plan(actions: &[ActionRecord], finished: bool) -> String {
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
    let failed = actions.iter().any(|a| a.action == "failed");
    if !finished {
        let _ = writeln!(
            out,
            "    incomplete: the dry run stopped (see the error above); this is not the whole plan"
        );
    } else if !any_change && failed {
        let _ = writeln!(
            out,
            "    no changes besides the failed objects above, which are not in step"
        );
    } else if !any_change {
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
    // The heading, and the reason after it (on the lines below when both don't fit).
    let (head, why) = match a.action.as_str() {
        "create" => (format!("create {ty} {name:?}"), ""),
        "update" => (format!("update {ty} {name:?}"), ""),
        "add_members" => (
            format!(
                "add {} to group {name:?}:",
                plural(a.members.len() as u64, "member")
            ),
            "",
        ),
        "remove_members" => (
            format!(
                "remove {} from group {name:?}:",
                plural(a.members.len() as u64, "member")
            ),
            "",
        ),
        "skip" | "failed" => (
            format!("{} {ty} {name:?} ({})", a.action, a.source_id),
            a.detail.as_str(),
        ),
        other => (format!("{other} {ty} {name:?}"), a.detail.as_str()),
    };
    let one_line = format!("{head}: {why}");
    if why.is_empty() {
        let _ = writeln!(out, "    {mark} {}", clip(&head, WIDTH - 6));
    } else if one_line.chars().count() <= WIDTH - 6 {
        let _ = writeln!(out, "    {mark} {one_line}");
    } else {
        let _ = writeln!(out, "    {mark} {}:", clip(&head, WIDTH - 7));
        let words: Vec<String> = why.split_whitespace().map(str::to_string).collect();
        for line in fill(&words, WIDTH - 8) {
            let _ = writeln!(out, "        {line}");
        }
    }
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
    let n = items.len();
    let pieces: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if i + 1 < n {
                format!("{item},")
            } else {
                item.clone()
            }
        })
        .collect();
    fill(&pieces, max)
}

/// Words over as many lines of at most `max` characters as they need, a space apart (a word
/// longer than a line has a line of its own).
fn fill(words: &[String], max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in words {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > max {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(action: &str, ty: ObjectType, name: &str, detail: &str) -> ActionRecord {
        ActionRecord::new(action, ty, "src-1", None, name, detail.to_string())
    }

    #[test]
    fn lines_are_filled_to_the_width_and_a_long_word_keeps_its_own_line() {
        let words: Vec<String> = ["aaa", "bbb", "ccc", "dddddddddd", "e"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert_eq!(fill(&words, 7), ["aaa bbb", "ccc", "dddddddddd", "e"]);
        let items: Vec<String> = ["x", "y", "z"].iter().map(|w| w.to_string()).collect();
        assert_eq!(wrap(&items, 5), ["x, y,", "z"]);
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }

    #[test]
    fn a_problem_names_its_object_and_a_cycle_wide_one_none() {
        let p = |ty: Option<&str>, id: Option<&str>, name: Option<&str>| crate::summary::Problem {
            object_type: ty.map(str::to_string),
            id: id.map(str::to_string),
            name: name.map(str::to_string),
            code: "C".into(),
            reason: "r".into(),
            count: 1,
        };
        assert_eq!(
            problem_line(&p(Some("user"), Some("u1"), Some("Ann")), "why"),
            "user u1 \"Ann\": C: why"
        );
        assert_eq!(
            problem_line(&p(Some("group"), Some("g1"), None), "r"),
            "group g1: C: r"
        );
        assert_eq!(problem_line(&p(None, None, None), "held"), "C: held");
    }

    #[test]
    fn a_dry_runs_quarantine_says_nothing_was_recorded() {
        let mut s: CycleSummary = serde_json::from_value(json!({
            "job": "robin", "cycle_id": "c", "kind": "initial", "status": "failed",
            "dry_run": true, "started_at": "2026-12-05T00:00:00Z", "duration_ms": 1,
            "users": {"created": 0, "updated": 0, "disabled": 0, "deleted": 0, "unchanged": 0,
                      "skipped": 0, "failed": 0},
            "groups": {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0, "skipped": 0,
                       "failed": 0},
            "memberships": {"added": 0, "removed": 0},
            "requests": {"GET": 1, "POST": 0, "PUT": 0, "PATCH": 0, "DELETE": 0},
            "source_complete": true,
            "quarantine": "EncounteredQuarantineException"
        }))
        .unwrap();
        let text = render_summary(&s);
        assert!(text.contains("nothing was recorded: dry run"), "{text}");
        assert!(!text.contains("back off"), "{text}");
        s.dry_run = false;
        let text = render_summary(&s);
        assert!(text.contains("scheduled cycles back off"), "{text}");
    }

    #[test]
    fn the_plan_names_creates_by_user_name_and_sums_up_each_action() {
        let mut create = record("create", ObjectType::User, "Alice Liddell", "");
        create
            .attributes
            .insert("userName".into(), json!("alice@contoso.com"));
        create.attributes.insert("active".into(), json!(true));
        let mut members = record("add_members", ObjectType::Group, "Eng", "2 member(s): a, b");
        members.members = vec!["Alice Liddell".into(), "Bob Builder".into()];
        let long = "out of scope: ".to_string() + &"very long reason ".repeat(10);
        let skip = record("skip", ObjectType::User, "Carol", &long);
        let plan = render_plan(&[skip, members, create], true);
        let lines: Vec<&str> = plan.lines().collect();
        // Creates first whatever the order of the records, named by userName.
        assert_eq!(
            lines[1], "    + create user \"alice@contoso.com\"",
            "{plan}"
        );
        assert!(lines[2].trim_start().starts_with("active"), "{plan}");
        assert!(
            plan.contains("\"Alice Liddell\", \"Bob Builder\""),
            "{plan}"
        );
        // A reason too long for the heading's line continues below it, whole.
        assert!(
            plan.contains("    · skip user \"Carol\" (src-1):\n"),
            "{plan}"
        );
        assert_eq!(plan.matches("reason").count(), 10, "{plan}");
        for want in [
            "create           1 user",
            "add members      1 group",
            "skip             1 user",
        ] {
            assert!(plan.contains(want), "{want:?} not in {plan}");
        }
        assert!(!plan.contains("no changes"), "{plan}");
        assert!(plan.lines().all(|l| l.chars().count() <= WIDTH), "{plan}");
        let skip = record("skip", ObjectType::Group, "G", "out of scope");
        let none = render_plan(std::slice::from_ref(&skip), true);
        assert!(none.contains("no changes: the target is in step"), "{none}");
        let stopped = render_plan(std::slice::from_ref(&skip), false);
        assert!(stopped.contains("incomplete"), "{stopped}");
        assert!(!stopped.contains("in step"), "{stopped}");
        let failed = record("failed", ObjectType::User, "U", "EntryConflict: x");
        let failing = render_plan(&[skip, failed], true);
        assert!(failing.contains("which are not in step"), "{failing}");
    }
}
