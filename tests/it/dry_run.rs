//! `sync --dry-run` as a plan an admin reviews (text and `--json`), `--detailed-exitcode`,
//! the configuration error's exit code, and problems where admins look: one log event per
//! problem from the daemon, counted as the summary counts them, and the text `status`.

use crate::support::cli::*;
use crate::support::common::{base_directory, edit, full_user, user_mut};
use serde_json::{json, Value};
use std::time::Duration;

/// The fixture of these tests: the sandbox, and the base directory (users in and out of
/// scope, two assigned groups) in the job's directory file.
fn fixture(sandbox: &Sandbox) -> Fixture {
    let f = Fixture::new(&sandbox.url());
    f.write_directory(&base_directory());
    f
}

/// The plan's lines (from its heading on).
fn plan_of(out: &Output) -> Vec<String> {
    let lines: Vec<String> = out
        .stdout
        .lines()
        .skip_while(|l| !l.contains("plan (dry run"))
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty(), "no plan; {out}");
    lines
}

/// The line of the plan that starts (after its mark and indentation) with `head`, and the
/// detail lines under it.
fn entry(plan: &[String], head: &str) -> Vec<String> {
    let at = plan
        .iter()
        .position(|l| {
            l.trim_start()
                .split_once(' ')
                .is_some_and(|(_, l)| l.starts_with(head))
        })
        .unwrap_or_else(|| panic!("no {head:?} in the plan:\n{}", plan.join("\n")));
    let mut out = vec![plan[at].clone()];
    out.extend(
        plan[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("        "))
            .cloned(),
    );
    out
}

#[test]
fn the_text_plan_shows_creates_with_attributes_members_by_name_and_skips() {
    let sandbox = Sandbox::start();
    let f = fixture(&sandbox);
    let out = f.run(&["sync", "--dry-run"]);
    out.assert_code(0);
    assert_eq!(sandbox.writes(), 0, "a dry run wrote; {out}");
    let plan = plan_of(&out);

    // A create names the user by her userName and lists what would be sent.
    let alice = entry(&plan, "create user \"alice@contoso.com\"");
    assert!(alice[0].contains("+ create"), "{alice:?}");
    let attrs = alice[1..].join("\n");
    for want in ["userName", "\"alice@contoso.com\"", "\"Alice\"", "active"] {
        assert!(attrs.contains(want), "{want} not among {attrs}");
    }
    let eng = entry(&plan, "create group \"Engineering\"");
    assert!(eng[1..].join("\n").contains("displayName"), "{eng:?}");

    // Members by name: the new users have no target id yet, the plan resolves them.
    let members = entry(&plan, "add 2 members to group \"Engineering\":");
    let names = members[1..].join(" ");
    assert!(
        names.contains("\"Bob Builder\"") && names.contains("\"Grace Hopper\""),
        "{members:?}"
    );
    assert!(!names.contains("(new"), "placeholder ids in {members:?}");

    // A reference to a new user (alice's manager) by name too.
    let manager = entry(&plan, "update user \"Alice Liddell\"");
    assert!(
        manager[1..]
            .iter()
            .any(|l| l.contains("manager") && l.contains("(none) → \"Bob Builder\"")),
        "{manager:?}"
    );

    // Every skipped object with why.
    let carol = entry(&plan, "skip user \"Carol Danvers\" (u-carol)");
    assert!(
        carol.join(" ").contains("disabled in the source"),
        "{carol:?}"
    );
    let erin = entry(&plan, "skip user \"Erin Brockovich\" (u-erin)");
    assert!(erin.join(" ").contains("excluded role"), "{erin:?}");
    entry(&plan, "skip group \"Platform\" (g-platform)");

    // A summary line per action.
    let summary = plan.join("\n");
    for want in [
        "create           4 users, 2 groups",
        "add members      2 groups",
        "skip             4 users, 1 group",
    ] {
        assert!(summary.contains(want), "{want:?} not in\n{summary}");
    }
    for l in &plan {
        assert!(l.chars().count() <= 100, "wider than 100 columns: {l:?}");
    }
}

#[test]
fn the_text_plan_shows_updates_old_to_new_disables_deletes_and_invalid_objects() {
    let sandbox = Sandbox::start();
    let f = fixture(&sandbox);
    f.run(&["sync"]).assert_code(0);
    let d = edit(base_directory(), |d| {
        user_mut(d, "u-bob")["jobTitle"] = json!("Manager");
        // Henry leaves (disable), Operations is unassigned (delete).
        user_mut(d, "u-henry")["accountEnabled"] = json!(false);
        d["assignments"]
            .as_array_mut()
            .unwrap()
            .retain(|a| a["principalId"] != "g-ops");
        // Two new users with one userPrincipalName: neither is provisioned.
        for id in ["u-twin1", "u-twin2"] {
            let mut u = full_user(id, "Twin", id, json!({}));
            u["userPrincipalName"] = json!("twin@contoso.com");
            d["users"].as_array_mut().unwrap().push(u);
            d["assignments"]
                .as_array_mut()
                .unwrap()
                .push(json!({"principalId": id}));
        }
    });
    f.write_directory(&d);
    let writes = sandbox.writes();
    let out = f.run(&["sync", "--dry-run"]);
    assert_eq!(sandbox.writes(), writes, "a dry run wrote; {out}");
    out.assert_code(1);
    let plan = plan_of(&out);

    let bob = entry(&plan, "update user \"Bob Builder\"");
    assert!(bob[0].contains("~ update"), "{bob:?}");
    assert!(
        bob[1..]
            .iter()
            .any(|l| l.contains("title") && l.contains("\"Engineer\" → \"Manager\"")),
        "{bob:?}"
    );
    let henry = entry(&plan, "disable user \"Henry Higgins\"");
    assert!(
        henry.join(" ").contains("disabled in the source"),
        "{henry:?}"
    );
    entry(&plan, "delete group \"Operations\"");
    let twin = entry(&plan, "skip user \"Twin u-twin1\" (u-twin1)");
    assert!(
        twin.join(" ").contains("DuplicateSourceEntries"),
        "{twin:?}"
    );
    let summary = plan.join("\n");
    for want in [
        "update           1 user",
        "disable          1 user",
        "delete           1 group",
    ] {
        assert!(summary.contains(want), "{want:?} not in\n{summary}");
    }
}

#[test]
fn the_json_plan_has_actions_with_attributes_members_by_name_skips_and_counts() {
    let sandbox = Sandbox::start();
    let f = fixture(&sandbox);
    let out = f.run(&["sync", "--dry-run", "--json"]);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["dry_run"], true, "{v}");
    let actions = v["actions"].as_array().unwrap();
    let create = actions
        .iter()
        .find(|a| a["action"] == "create" && a["attributes"]["userName"] == "alice@contoso.com")
        .unwrap_or_else(|| panic!("no create of alice; {v}"));
    assert_eq!(create["object_type"], "user", "{create}");
    assert_eq!(create["attributes"]["name.givenName"], "Alice", "{create}");
    let add = actions
        .iter()
        .find(|a| a["action"] == "add_members" && a["name"] == "Engineering")
        .unwrap_or_else(|| panic!("no members of Engineering; {v}"));
    let mut names: Vec<&str> = add["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Bob Builder", "Grace Hopper"], "{add}");
    assert!(
        actions.iter().all(|a| a["action"] != "skip"),
        "skips among the actions; {v}"
    );
    let skipped = v["skipped"].as_array().unwrap();
    let carol = skipped
        .iter()
        .find(|s| s["source_id"] == "u-carol")
        .unwrap_or_else(|| panic!("carol not skipped; {v}"));
    assert!(
        carol["reason"].as_str().unwrap().contains("disabled"),
        "{carol}"
    );
    assert_eq!(v["counts"]["create"], 6, "{v}");
    assert_eq!(v["counts"]["skip"], 5, "{v}");
    assert_eq!(v["counts"]["add_members"], 2, "{v}");
}

#[test]
fn detailed_exitcode_says_3_for_pending_changes_and_0_for_none() {
    let sandbox = Sandbox::start();
    let f = fixture(&sandbox);
    let out = f.run(&["sync", "--dry-run", "--detailed-exitcode"]);
    out.assert_code(3);
    assert_eq!(sandbox.writes(), 0, "{out}");
    assert!(out.stdout.contains("create"), "{out}");
    // Also as JSON.
    f.run(&["sync", "--dry-run", "--detailed-exitcode", "--json"])
        .assert_code(3);

    f.run(&["sync"]).assert_code(0);
    let out = f.run(&["sync", "--dry-run", "--detailed-exitcode"]);
    out.assert_code(0);
    assert!(out.stdout.contains("no changes"), "{out}");
    // Without it, a dry run with changes pending still succeeds with 0.
    f.write_directory(&edit(base_directory(), |d| {
        user_mut(d, "u-bob")["jobTitle"] = json!("Manager");
    }));
    f.run(&["sync", "--dry-run"]).assert_code(0);
    f.run(&["sync", "--dry-run", "--detailed-exitcode"])
        .assert_code(3);

    // Entry-level problems keep exit code 1: a gate never reads them as a clean plan.
    f.write_directory(&edit(base_directory(), |d| {
        d["users"]
            .as_array_mut()
            .unwrap()
            .push(json!({"userPrincipalName": "noid@contoso.com"}));
    }));
    f.run(&["sync", "--dry-run", "--detailed-exitcode"])
        .assert_code(1);

    // Only with --dry-run: a usage error otherwise, and nothing is sent.
    let writes = sandbox.writes();
    let out = f.run(&["sync", "--detailed-exitcode"]);
    out.assert_code(2);
    assert!(out.stderr.contains("--dry-run"), "{out}");
    assert_eq!(sandbox.writes(), writes);
}

#[test]
fn a_configuration_error_exits_5() {
    let sandbox = Sandbox::start();
    let f = fixture(&sandbox);
    let text = job_config(&JobOptions::new(&sandbox.url())).replace("scope =", "scoop =");
    f.write_config(&text);
    for args in [
        &["sync", "--dry-run"][..],
        &["sync", "--dry-run", "--detailed-exitcode"],
    ] {
        let out = f.run(args);
        out.assert_code(5);
        assert!(out.stderr.contains("scoop"), "{out}");
    }
    let out = f.run(&["--help"]);
    assert!(out.stdout.contains("5  configuration error"), "{out}");
    assert!(
        out.stdout.contains("3  sync --dry-run --detailed-exitcode"),
        "{out}"
    );
}

/// The base directory and `pairs` pairs of new users sharing a userPrincipalName: each of the
/// `2 * pairs` users is a problem of its own (`DuplicateSourceEntries`).
fn problem_directory(pairs: usize) -> Value {
    edit(base_directory(), |d| {
        for i in 0..2 * pairs {
            let id = format!("u-twin{i}");
            let mut u = full_user(&id, &format!("Twin{i}"), "X", json!({}));
            u["userPrincipalName"] = json!(format!("twin{}@contoso.com", i / 2));
            d["users"].as_array_mut().unwrap().push(u);
            d["assignments"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "principalId": id }));
        }
    })
}

#[test]
fn every_problem_is_one_daemon_log_event_and_status_lists_the_first() {
    let sandbox = Sandbox::start();
    let f = fixture(&sandbox);
    // More than the 100 problems a summary keeps: the log has every one.
    const N: usize = 120;
    f.write_directory(&problem_directory(N / 2));
    let mut daemon = f.spawn(&["--log-format", "json", "run"]);
    let job = wait_for(Duration::from_secs(30), "the first cycle", || {
        if let Some(s) = daemon.try_status() {
            panic!("the daemon exited ({s}); {}", daemon.output());
        }
        let jobs = f.daemon_status()?;
        jobs[0]["last_cycle"].is_object().then(|| jobs[0].clone())
    });
    let last = &job["last_cycle"];
    let count = last["problem_count"].as_u64().unwrap();
    assert!(count >= N as u64, "{last}");
    assert!(last["problems"].as_array().unwrap().len() <= 100, "{last}");
    let cycle_id = last["cycle_id"].as_str().unwrap().to_string();

    // The text status: the count, the first ten, and how many more.
    let out = f.run(&["status"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains(&format!("problems ({count}):")),
        "{out}"
    );
    let listed = out
        .stdout
        .lines()
        .filter(|l| l.contains("DuplicateSourceEntries"))
        .count();
    assert_eq!(listed, 10, "{out}");
    assert!(out.stdout.contains(" more: every problem"), "{out}");

    // The log: one "problem" event per problem of the cycle, each with its fields, and the
    // "cycle finished" line with the same count.
    let events = wait_for(Duration::from_secs(10), "the finished line", || {
        let events: Vec<Value> = daemon
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| json_field(e, "cycle_id") == Some(cycle_id.clone()))
            .collect();
        events
            .iter()
            .any(|e| message(e) == "cycle finished")
            .then_some(events)
    });
    let problems: Vec<&Value> = events.iter().filter(|e| message(e) == "problem").collect();
    assert_eq!(problems.len() as u64, count, "{events:#?}");
    let finished = events
        .iter()
        .find(|e| message(e) == "cycle finished")
        .unwrap();
    assert_eq!(
        json_field(finished, "problems"),
        Some(count.to_string()),
        "{finished}"
    );
    for i in 0..N {
        let id = format!("u-twin{i}");
        let e = problems
            .iter()
            .find(|e| json_field(e, "id") == Some(id.clone()))
            .unwrap_or_else(|| panic!("no problem event for {id}; {problems:#?}"));
        assert_eq!(json_field(e, "job").as_deref(), Some("robin"), "{e}");
        assert_eq!(json_field(e, "object_type").as_deref(), Some("user"), "{e}");
        assert_eq!(
            json_field(e, "code").as_deref(),
            Some("DuplicateSourceEntries"),
            "{e}"
        );
        assert!(json_field(e, "name").is_some(), "{e}");
        assert!(json_field(e, "reason").is_some(), "{e}");
    }
    daemon.signal("TERM");
}

/// A JSON log event's message.
fn message(e: &Value) -> String {
    json_field(e, "message").unwrap_or_default()
}

/// A field of a JSON log event, as text, wherever the formatter put it (top level, `fields`,
/// or the enclosing span).
fn json_field(e: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    e.get(name)
        .or_else(|| e.get("fields").and_then(|f| f.get(name)))
        .or_else(|| e.get("span").and_then(|f| f.get(name)))
        .map(text)
}
