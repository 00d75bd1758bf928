//! Provisioning logs through the real binary: the entries a cycle writes (create, update,
//! disable, delete, stagedDelete, failures, skipped), `provisiond logs` with its filters,
//! `--json`, `--csv` and `show`, retention, and no entries for dry runs.

use crate::support::cli::*;
use provisiond::{FaultAction, FaultRule};
use serde_json::{json, Value};

/// `logs ARGS --json`: the entries, newest first.
fn entries(f: &Fixture, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["logs", "--json"];
    a.extend_from_slice(args);
    let out = f.run(&a);
    out.assert_code(0);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn by<'a>(es: &'a [Value], action: &str, status: &str) -> Vec<&'a Value> {
    es.iter()
        .filter(|e| {
            e["provisioningAction"] == action && e["provisioningStatusInfo"]["status"] == status
        })
        .collect()
}

/// The fixture's directory plus one user nobody assigned (skipped: out of scope).
fn with_unassigned(n: usize) -> Value {
    let mut d = directory(n);
    d["users"].as_array_mut().unwrap().push(json!({
        "id": "u-outsider", "userPrincipalName": "outsider@contoso.test",
        "mail": "outsider@contoso.test", "displayName": "Outsider", "accountEnabled": true,
        "mailNickname": "outsider"
    }));
    d
}

#[test]
fn cycles_log_each_action_and_failure_and_logs_filters_them() {
    let sandbox = Sandbox::start();
    let f = Fixture::new(&sandbox.url());
    f.write_directory(&with_unassigned(5));
    // The first user create fails with a 400 (an entry-level error).
    let mut fail = FaultRule::new(FaultAction::Status {
        status: 400,
        retry_after: None,
        body: None,
    })
    .method("POST")
    .path_prefix("/Users");
    fail.times = Some(1);
    sandbox.set_faults(vec![fail]);

    // A dry run writes nothing.
    f.run(&["sync", "--dry-run", "--json"]).assert_code(0);
    assert!(entries(&f, &[]).is_empty());

    let out = f.run(&["sync", "--json"]);
    out.assert_code(1);
    let cycle1 = out.json()["cycle_id"].as_str().unwrap().to_string();
    let es = entries(&f, &[]);
    assert_eq!(
        by(&es, "create", "success").len(),
        4 + 1,
        "4 users, 1 group: {es:#?}"
    );
    let failed = by(&es, "create", "failure");
    assert_eq!(failed.len(), 1, "{es:#?}");
    let err = &failed[0]["provisioningStatusInfo"]["errorInformation"];
    assert!(!err["errorCode"].as_str().unwrap().is_empty(), "{err}");
    let skipped = by(&es, "other", "skipped");
    assert_eq!(skipped.len(), 1, "{es:#?}");
    assert_eq!(skipped[0]["sourceIdentity"]["id"], "u-outsider");
    assert_eq!(
        skipped[0]["provisioningSteps"][1]["provisioningStepType"],
        "scoping"
    );
    // A create names what it sent, as modified properties, and Entra's steps.
    let created = by(&es, "create", "success");
    let user = created
        .iter()
        .find(|e| e["sourceIdentity"]["identityType"] == "User")
        .unwrap();
    assert!(user["modifiedProperties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["displayName"] == "userName" && p["oldValue"].is_null()));
    let types: Vec<&str> = user["provisioningSteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["provisioningStepType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["import", "scoping", "matching", "processing", "export"]
    );
    assert!(es
        .iter()
        .all(|e| e["cycleId"] == cycle1 && e["jobId"] == "robin"));
    assert!(es
        .iter()
        .all(|e| e["initiatedBy"]["initiatorType"] == "system"));
    // Newest first.
    let times: Vec<&str> = es
        .iter()
        .map(|e| e["activityDateTime"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);

    // Second cycle: an update, a disable, a group deleted (unassigned); the failed create is
    // retried (escrow) and succeeds. Unchanged users are not logged.
    let failed_id = failed[0]["sourceIdentity"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ok: Vec<usize> = (0..5).filter(|&i| user_id(i) != failed_id).collect();
    let (changed, disabled, unchanged) = (ok[0], ok[1], ok[2]);
    let mut d = with_unassigned(5);
    d["users"][changed]["jobTitle"] = json!("Manager");
    d["users"][disabled]["accountEnabled"] = json!(false);
    d["assignments"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["principalId"] != group_id(0));
    f.write_directory(&d);
    let out = f.run(&["sync", "--json"]);
    out.assert_code(0);
    let cycle2 = out.json()["cycle_id"].as_str().unwrap().to_string();
    let es2 = entries(&f, &["--cycle", &cycle2]);
    let updates = by(&es2, "update", "success");
    let title = updates
        .iter()
        .find(|e| e["sourceIdentity"]["id"] == user_id(changed))
        .unwrap_or_else(|| panic!("no update of the changed user: {es2:#?}"));
    let prop = title["modifiedProperties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["displayName"] == "title")
        .unwrap_or_else(|| panic!("{title}"));
    assert_eq!(prop["oldValue"], "Engineer");
    assert_eq!(prop["newValue"], "Manager");
    assert_eq!(by(&es2, "disable", "success").len(), 1, "{es2:#?}");
    let deleted = by(&es2, "delete", "success");
    assert_eq!(deleted.len(), 1, "{es2:#?}");
    // A delete names the target object it removed.
    assert!(
        deleted[0]["targetIdentity"]["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{:#}",
        deleted[0]
    );
    assert_eq!(
        by(&es2, "create", "success").len(),
        1,
        "the escrowed create: {es2:#?}"
    );
    // Out-of-scope skips are an initial cycle's; an unchanged user is not logged.
    assert!(by(&es2, "other", "skipped").is_empty(), "{es2:#?}");
    assert!(!es2
        .iter()
        .any(|e| e["sourceIdentity"]["id"] == user_id(unchanged)));

    // Filters.
    assert_eq!(entries(&f, &["--status", "failure"]).len(), 1);
    assert_eq!(entries(&f, &["--action", "disable"]).len(), 1);
    assert_eq!(entries(&f, &["--identity", "OUTSIDER"]).len(), 1);
    assert_eq!(entries(&f, &["--limit", "2"]).len(), 2);
    assert_eq!(
        entries(&f, &["--since", "1h", "--job", "robin"]).len(),
        es.len() + es2.len()
    );
    assert!(entries(&f, &["--from", "2000-01-01", "--to", "2000-01-02"]).is_empty());
    let change = failed[0]["changeId"].as_str().unwrap();
    assert_eq!(entries(&f, &["--change", change]).len(), 1);

    // The table, and one entry shown in full by an id prefix.
    let out = f.run(&["logs", "--job", "robin"]);
    out.assert_code(0);
    assert!(out.stdout.starts_with("TIME (UTC)"), "{out}");
    assert!(
        out.stdout.lines().all(|l| l.chars().count() <= 100),
        "{out}"
    );
    assert!(out.stdout.contains("newest first"), "{out}");
    let id = failed[0]["id"].as_str().unwrap();
    let out = f.run(&["logs", "show", &id[..13]]);
    out.assert_code(0);
    assert!(
        out.stdout.contains(id) && out.stdout.contains("Steps"),
        "{out}"
    );
    assert!(out.stdout.contains("Modified properties"), "{out}");
    f.run(&["logs", "show", "no-such-entry"]).assert_code(4);
    f.run(&["logs", "--status", "sideways"]).assert_code(2);

    // CSV: Entra's three files, joined by change id.
    let dir = f.path("csv");
    let out = f.run(&["logs", "--csv", "--output", dir.to_str().unwrap()]);
    out.assert_code(0);
    assert!(out.stdout.contains("ProvisioningLogs.csv"), "{out}");
    let logs = std::fs::read_to_string(dir.join("ProvisioningLogs.csv")).unwrap();
    let steps =
        std::fs::read_to_string(dir.join("ProvisioningLogs_ProvisioningSteps.csv")).unwrap();
    let props =
        std::fs::read_to_string(dir.join("ProvisioningLogs_ModifiedProperties.csv")).unwrap();
    assert_eq!(logs.lines().count(), 1 + es.len() + es2.len());
    assert!(logs.contains(change) && steps.contains(change) && props.contains(change));

    // Nothing secret anywhere.
    let all = f.run(&["logs", "--json"]).stdout + &logs + &steps + &props;
    assert!(!all.contains(TOKEN));
}

#[test]
fn held_deletions_are_logged_as_staged_deletes() {
    let sandbox = Sandbox::start();
    let f = Fixture::new(&sandbox.url());
    let config = job_config(&JobOptions::new(&sandbox.url())).replace(
        "scope = \"assigned\"",
        "scope = \"assigned\"\ndelete_threshold = 1",
    );
    f.write_config(&config);
    f.run(&["sync", "--json"]).assert_code(0);
    let mut d = directory(5);
    d["assignments"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["principalId"] != user_id(3) && a["principalId"] != user_id(4));
    f.write_directory(&d);
    f.run(&["sync", "--json"]);
    let staged = entries(&f, &["--action", "stagedDelete"]);
    assert_eq!(staged.len(), 2, "{staged:#?}");
    assert!(staged
        .iter()
        .all(|e| e["provisioningStatusInfo"]["status"] == "skipped"
            && e["provisioningStatusInfo"]["errorInformation"]["errorCode"] == "TooManyDeletes"));
}

#[test]
fn retention_drops_old_segments_after_a_cycle() {
    let sandbox = Sandbox::start();
    let f = Fixture::new(&sandbox.url());
    f.write_config(&format!(
        "log_retention = \"7d\"\n{}",
        job_config(&JobOptions::new(&sandbox.url()))
    ));
    f.run(&["sync", "--json"]).assert_code(0);
    let dir = f.state_dir().join("logs/robin");
    let old_day = (chrono::Utc::now() - chrono::Duration::days(8)).format("%Y-%m-%dT%H");
    let old = dir.join(format!("{old_day}.jsonl"));
    let recent_day = (chrono::Utc::now() - chrono::Duration::days(6)).format("%Y-%m-%dT%H");
    let recent = dir.join(format!("{recent_day}.jsonl"));
    std::fs::write(&old, "{}\n").unwrap();
    std::fs::write(&recent, "{}\n").unwrap();
    f.run(&["sync", "--json"]).assert_code(0);
    assert!(
        !old.exists(),
        "an 8-day-old segment outlives log_retention = 7d"
    );
    assert!(recent.exists());
    // A bad value is a config error naming the key.
    f.write_config(&format!(
        "log_max_size = \"lots\"\n{}",
        job_config(&JobOptions::new(&sandbox.url()))
    ));
    let out = f.run(&["logs"]);
    out.assert_code(5);
    assert!(out.all().contains("log_max_size"), "{out}");
}

#[test]
fn duplicate_and_invalid_source_objects_are_logged_as_skipped() {
    let sandbox = Sandbox::start();
    let f = Fixture::new(&sandbox.url());
    let mut d = directory(3);
    // User 2 takes user 1's userPrincipalName (a duplicate matching value); one user has no id.
    d["users"][2]["userPrincipalName"] = d["users"][1]["userPrincipalName"].clone();
    d["users"][2]["mail"] = d["users"][1]["mail"].clone();
    d["users"].as_array_mut().unwrap().push(json!({
        "userPrincipalName": "noid@contoso.test", "displayName": "No Id", "accountEnabled": true
    }));
    f.write_directory(&d);
    f.run(&["sync", "--json"]);
    let es = entries(&f, &["--status", "skipped"]);
    let codes: Vec<&str> = es
        .iter()
        .filter_map(|e| e["provisioningStatusInfo"]["errorInformation"]["errorCode"].as_str())
        .collect();
    assert!(codes.contains(&"DuplicateSourceEntries"), "{es:#?}");
    assert!(codes.contains(&"InvalidSourceObject"), "{es:#?}");
}

/// A provisioning log that cannot be written (here its segment's path is a directory) stops
/// being written with one warning, never the cycle; every object exported is still named in
/// the journal by the entry's tracing event (the export's own per-object line is at `debug`
/// when a provisioning log is on).
#[test]
fn a_log_that_cannot_be_written_still_names_every_entry_in_the_journal() {
    let sandbox = Sandbox::start();
    let f = Fixture::new(&sandbox.url());
    f.write_directory(&directory(5));
    let dir = f.state_dir().join("logs/robin");
    let now = chrono::Utc::now();
    for t in [now, now + chrono::Duration::hours(1)] {
        std::fs::create_dir_all(dir.join(format!("{}.jsonl", t.format("%Y-%m-%dT%H")))).unwrap();
    }
    // `sync` logs at `warn` unless told: `-v` is the service's `info`.
    let out = f.run(&["-v", "sync", "--json"]);
    out.assert_code(0);
    let all = out.all();
    assert_eq!(
        all.matches("provisioning log write failed").count(),
        1,
        "{out}"
    );
    let traced = all.matches("provisioning log entry").count();
    assert!(
        traced >= 5,
        "{traced} entries traced for 5 users created: {out}"
    );
    assert_eq!(sandbox.users().len(), 5);
}
