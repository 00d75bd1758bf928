//! `provisiond provision` (provision on demand) with the real binary against the sandbox:
//! on the file source and on LDAP (a real slapd), without and with a running daemon, and
//! while the job is quarantined.

use crate::support::cli::*;
use crate::support::slapd::{self, Slapd};
use chrono::{Duration as Days, Utc};
use provisiond::{
    ObjectType, Quarantine, QuarantineError, QuarantineReason, SledStore, StagedAction,
    StagedDelete, StateStore,
};
use serde_json::{json, Value};
use std::time::Duration;

/// `provision ARGS… --json` for job robin: its JSON outcome, after checking the exit code.
fn provision(fixture: &Fixture, args: &[&str], code: i32) -> Value {
    let mut all = vec!["provision", "--job", "robin"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = fixture.run(&all);
    out.assert_code(code);
    assert!(!out.all().contains(TOKEN), "the token is printed; {out}");
    out.json()
}

/// The step of `ty` (`import`, `scoping`, …) whose description mentions `about`.
fn step<'a>(outcome: &'a Value, ty: &str, about: &str) -> &'a Value {
    outcome["steps"]
        .as_array()
        .and_then(|s| {
            s.iter().find(|s| {
                s["provisioningStepType"] == ty
                    && s["description"].as_str().is_some_and(|d| d.contains(about))
            })
        })
        .unwrap_or_else(|| panic!("no {ty} step about {about}: {outcome:#}"))
}

/// The on-demand entries of the job's provisioning log so far, oldest first, as
/// `provisiond logs --json` shows them (with the cycles' entries beside them).
fn log_entries(fixture: &Fixture) -> Vec<Value> {
    let out = fixture.run(&["logs", "--job", "robin", "--json"]);
    out.assert_code(0);
    let mut entries: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a log line is JSON"))
        .filter(|e: &Value| e["initiatedBy"]["initiatorType"] == "onDemand")
        .collect();
    entries.reverse();
    entries
}

/// One request on the daemon's control socket, and its answer.
fn socket_request(fixture: &Fixture, request: &Value) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(fixture.socket_path()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn user_named<'a>(sandbox_users: &'a [Value], name: &str) -> Option<&'a Value> {
    sandbox_users.iter().find(|u| u["userName"] == name)
}

#[test]
fn an_in_scope_user_is_created_then_updated_and_logged() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let name = user_name(1);

    let first = provision(&fixture, &["--user", &name], 0);
    assert_eq!(first["action"], "create", "{first:#}");
    assert_eq!(first["status"], "success", "{first:#}");
    let types: Vec<&str> = first["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["provisioningStepType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["import", "scoping", "matching", "export"],
        "{first:#}"
    );
    let matching = step(&first, "matching", "User 1");
    assert_eq!(matching["details"]["Matches"], "0", "{first:#}");
    assert!(
        matching["details"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("userName eq")),
        "the matching attribute is named: {first:#}"
    );
    let export = step(&first, "export", "Created User");
    assert_eq!(export["details"]["userName"], name.as_str(), "{first:#}");
    // Each matching attribute the step reports was searched once: the export's search before
    // its create is answered by the step's.
    let searched = matching["details"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("Matching attribute"))
        .count();
    assert!(searched >= 1, "{first:#}");
    assert_eq!(sandbox.counts().get, searched as u64, "{first:#}");
    // Exactly that user, nothing else of the directory.
    assert_eq!(sandbox.user_names(), std::slice::from_ref(&name));
    assert!(sandbox.groups().is_empty());

    // The log entry, under the id the result names.
    let entries = log_entries(&fixture);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["id"], first["logId"]);
    assert_eq!(e["initiatedBy"]["initiatorType"], "onDemand");
    assert_eq!(e["provisioningAction"], "create");
    assert_eq!(e["provisioningStatusInfo"]["status"], "success");
    assert_eq!(e["sourceIdentity"]["id"], user_id(1).as_str());
    assert!(e["targetIdentity"]["id"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(e["modifiedProperties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["displayName"] == "userName" && p["newValue"] == name.as_str()));

    // A change in the source: the second run updates through the link, by id this time.
    let mut d = directory(5);
    d["users"][1]["displayName"] = json!("Renamed One");
    fixture.write_directory(&d);
    let second = provision(&fixture, &["--user", &user_id(1)], 0);
    assert_eq!(second["action"], "update", "{second:#}");
    let matching = step(&second, "matching", "Renamed One");
    assert!(
        matching["details"]["Matched by"]
            .as_str()
            .unwrap()
            .contains("link"),
        "{second:#}"
    );
    let export = step(&second, "export", "Updated User");
    assert!(
        export["details"]["displayName"]
            .as_str()
            .unwrap()
            .contains("Renamed One"),
        "{second:#}"
    );
    assert_eq!(sandbox.users().len(), 1);
    assert_eq!(sandbox.users()[0]["displayName"], "Renamed One");
    // Nothing left to do: skipped as redundant.
    let third = provision(&fixture, &["--user", &name], 0);
    assert_eq!(third["action"], "skip", "{third:#}");
    assert_eq!(third["status"], "skipped", "{third:#}");
    assert_eq!(log_entries(&fixture).len(), 3);

    // The link is the cycle's: a sync creates the others and no duplicate.
    fixture.run(&["sync"]).assert_code(0);
    let names = sandbox.user_names();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn an_out_of_scope_user_is_skipped_with_each_reason_and_nothing_is_sent() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut d = directory(5);
    d["users"].as_array_mut().unwrap().push(
        json!({"id": "outsider", "userPrincipalName": "out@contoso.test",
                     "mail": "out.mail@contoso.test", "displayName": "Out Sider"}),
    );
    d["users"][2]["accountEnabled"] = json!(false);
    fixture.write_directory(&d);

    let outcome = provision(&fixture, &["--user", "OUT.MAIL@contoso.test"], 0);
    assert_eq!(outcome["action"], "skip", "{outcome:#}");
    assert_eq!(outcome["status"], "skipped", "{outcome:#}");
    let scoping = step(&outcome, "scoping", "Out Sider");
    assert_eq!(scoping["status"], "skipped");
    let details = &scoping["details"];
    assert_eq!(details["Active in source system"], "True", "{details:#}");
    assert_eq!(details["Assigned to application"], "False", "{details:#}");
    assert_eq!(details["Scope sync all"], "False", "{details:#}");
    assert!(details["User has required role"]
        .as_str()
        .unwrap()
        .starts_with("False"));
    assert_eq!(details["Scoping filters"], "None configured");
    assert!(details["Result"].as_str().unwrap().contains("not assigned"));
    assert!(
        !outcome["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["provisioningStepType"] == "matching"),
        "nothing to match for an unlinked out-of-scope user: {outcome:#}"
    );
    assert_eq!(step(&outcome, "export", "")["status"], "skipped");

    // A disabled user: the text output shows each step with its status and details.
    let out = fixture.run(&["provision", "--job", "robin", "--user", &user_name(2)]);
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("[skipped] Determine if User User 2 is in scope"),
        "{out}"
    );
    assert!(out.stdout.contains("Active in source system"), "{out}");
    assert!(
        out.stdout.contains("False (accountEnabled is false)"),
        "{out}"
    );
    assert!(
        out.stdout.contains("action: skip, status: skipped"),
        "{out}"
    );

    assert_eq!(sandbox.writes(), 0, "nothing was sent");
    assert!(sandbox.users().is_empty());
    // Each skip is logged.
    let entries = log_entries(&fixture);
    assert_eq!(entries.len(), 2);
    assert!(entries
        .iter()
        .all(|e| e["provisioningStatusInfo"]["status"] == "skipped"));
    assert_eq!(
        entries[0]["provisioningStatusInfo"]["errorInformation"]["errorCode"],
        "NotEffectivelyEntitled"
    );

    // An unknown user: a failure naming the key, exit 1.
    let missing = provision(&fixture, &["--user", "nobody@contoso.test"], 1);
    assert_eq!(missing["status"], "failure");
    assert!(step(&missing, "import", "nobody")["details"]["Error"]
        .as_str()
        .unwrap()
        .contains("nobody@contoso.test"));
}

#[test]
fn an_existing_target_user_is_matched_by_its_matching_attribute_and_adopted() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let name = user_name(3);
    provision(&fixture, &["--user", &name], 0);
    let target_id = sandbox.users()[0]["id"].clone();
    // A fresh store knows no link: the user is found again in the target, not duplicated.
    std::fs::remove_dir_all(fixture.state_dir()).unwrap();

    let outcome = provision(&fixture, &["--user", &name], 0);
    assert_eq!(outcome["action"], "update", "{outcome:#}");
    assert_eq!(outcome["status"], "success", "{outcome:#}");
    let matching = step(&outcome, "matching", "User 3");
    assert_eq!(matching["details"]["Matches"], "1", "{outcome:#}");
    assert_eq!(matching["details"]["Target id"], target_id, "{outcome:#}");
    assert!(step(&outcome, "export", "Matched the existing target User")["status"] == "success");
    assert_eq!(sandbox.users().len(), 1, "no duplicate");

    // The adopted link holds: the next run goes by it.
    let again = provision(&fixture, &["--user", &name], 0);
    assert!(step(&again, "matching", "User 3")["details"]["Matched by"]
        .as_str()
        .unwrap()
        .contains("link"));
}

#[test]
fn a_group_is_provisioned_with_the_asked_members_only() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    // Engineering holds users 0, 1 and 2; two are asked.
    let outcome = provision(
        &fixture,
        &[
            "--group",
            "engineering",
            "--member",
            &user_name(0),
            "--member",
            &user_id(1),
        ],
        0,
    );
    assert_eq!(outcome["action"], "create", "{outcome:#}");
    assert_eq!(outcome["status"], "success", "{outcome:#}");
    let members = step(&outcome, "referenceResolution", "members");
    let added = members["details"]["Members added"].as_str().unwrap();
    assert!(
        added.contains("User 0") && added.contains("User 1"),
        "{outcome:#}"
    );
    step(&outcome, "scoping", "Group Engineering");
    step(&outcome, "scoping", "User User 0");
    let mut names = sandbox.user_names();
    names.sort();
    assert_eq!(names, [user_name(0), user_name(1)]);
    let groups = sandbox.groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["members"].as_array().map(Vec::len), Some(2));
    // The group and each member were searched once per matching attribute their steps report.
    let searched: usize = outcome["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["provisioningStepType"] == "matching")
        .map(|s| {
            s["details"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with("Matching attribute"))
                .count()
        })
        .sum();
    assert!(searched >= 3, "{outcome:#}");
    assert_eq!(sandbox.counts().get, searched as u64, "{outcome:#}");

    // More than Entra's five members: a usage error naming the limit, nothing sent.
    let writes = sandbox.writes();
    let mut args = vec!["provision", "--job", "robin", "--group", "Engineering"];
    let ids: Vec<String> = (0..6).map(user_name).collect();
    for id in &ids {
        args.extend(["--member", id.as_str()]);
    }
    let out = fixture.run(&args);
    out.assert_code(2);
    assert!(out.stderr.contains("at most 5 --member"), "{out}");
    assert_eq!(sandbox.writes(), writes);
}

#[test]
fn through_the_daemons_control_socket_while_run_is_going() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut daemon = fixture.spawn(&["run"]);
    wait_for(Duration::from_secs(20), "the daemon's first cycle", || {
        if let Some(s) = daemon.try_status() {
            panic!("the daemon exited early ({s}); {}", daemon.output());
        }
        let jobs = fixture.daemon_status()?;
        jobs[0]["last_cycle"].is_object().then_some(())
    });
    assert_eq!(sandbox.users().len(), 5);

    let mut d = directory(5);
    d["users"][4]["displayName"] = json!("Changed Four");
    fixture.write_directory(&d);
    // The daemon holds the store: only its control socket can have run this.
    let outcome = provision(&fixture, &["--user", &user_name(4)], 0);
    assert_eq!(outcome["action"], "update", "{outcome:#}");
    assert_eq!(
        user_named(&sandbox.users(), &user_name(4)).unwrap()["displayName"],
        "Changed Four"
    );
    assert_eq!(log_entries(&fixture).len(), 1);

    // The daemon checks a request itself: six members on the socket are refused, nothing sent.
    let writes = sandbox.writes();
    let members: Vec<String> = (0..6).map(user_name).collect();
    let request = json!({"cmd": "provision", "job": "robin", "request": {
        "object_type": "group", "key": "Engineering", "members": members,
        "initiated_by": "test"}});
    let answer = socket_request(&fixture, &request);
    assert_eq!(answer["result"], "provision", "{answer}");
    assert_eq!(answer["outcome"]["status"], "failure", "{answer}");
    assert_eq!(sandbox.writes(), writes);
    daemon.signal("TERM");
    let status = daemon.wait_until(std::time::Instant::now() + Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.output()
    );
    assert!(
        daemon
            .stderr()
            .contains("provision on demand through the control socket"),
        "{}",
        daemon.output()
    );
}

#[test]
fn a_quarantined_job_provisions_on_demand_and_sends_no_staged_delete() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    fixture.run(&["sync"]).assert_code(0);
    assert_eq!(sandbox.users().len(), 5);
    let staged_user = user_id(3);
    {
        let store = SledStore::open(&fixture.state_dir().join("state")).unwrap();
        let link = store
            .links("robin")
            .unwrap()
            .into_iter()
            .find(|l| l.source_id == staged_user)
            .unwrap();
        let mut meta = store.meta("robin").unwrap();
        let began = Utc::now() - Days::hours(1);
        meta.quarantine = Some(Quarantine {
            reason: QuarantineReason::TooManyDeletes,
            series_began: began,
            current_began: began,
            next_attempt: Utc::now() + Days::hours(5),
            series_count: 1,
            error: QuarantineError {
                code: "TooManyDeletes".into(),
                message: "held for the test".into(),
            },
        });
        store.put_meta("robin", &meta).unwrap();
        store
            .set_staged_deletes(
                "robin",
                &[StagedDelete {
                    object_type: ObjectType::User,
                    source_id: staged_user.clone(),
                    target_id: link.target_id,
                    display_name: "User 3".into(),
                    action: StagedAction::Delete,
                    staged_at: Utc::now(),
                }],
            )
            .unwrap();
        store.flush().unwrap();
    }
    // User 3 was unassigned (its disable is staged), user 0 changed.
    let mut d = directory(5);
    d["users"][0]["displayName"] = json!("Zero Changed");
    d["assignments"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["principalId"] != staged_user.as_str());
    fixture.write_directory(&d);

    let outcome = provision(&fixture, &["--user", &user_name(0)], 0);
    assert_eq!(outcome["action"], "update", "{outcome:#}");
    assert_eq!(
        user_named(&sandbox.users(), &user_name(0)).unwrap()["displayName"],
        "Zero Changed"
    );
    // The staged user asked for on demand: held, not sent.
    let writes = sandbox.writes();
    let held = provision(&fixture, &["--user", &user_name(3)], 0);
    assert_eq!(held["action"], "skip", "{held:#}");
    assert!(
        step(&held, "export", "staged deletion")["details"]["Reason"]
            .as_str()
            .unwrap()
            .contains("allow-deletes --job robin")
    );
    assert_eq!(
        sandbox.writes(),
        writes,
        "nothing was sent for the staged user"
    );
    assert_eq!(
        user_named(&sandbox.users(), &user_name(3)).unwrap()["active"],
        true
    );
    assert_eq!(sandbox.counts().delete, 0, "no staged delete was sent");
    assert_eq!(sandbox.users().len(), 5);
    let store = SledStore::open(&fixture.state_dir().join("state")).unwrap();
    assert_eq!(store.staged_deletes("robin").unwrap().len(), 1);
    assert!(
        store.meta("robin").unwrap().quarantine.is_some(),
        "the quarantine stays"
    );
}

/// People and one group; the job assigns the group (`assigned_groups`).
fn ldap_directory() -> String {
    let mut s = String::new();
    s += &slapd::ldif_person("alice", "Alice", "Liddell", "displayName: Alice Liddell\n");
    s += &slapd::ldif_person("bob", "Bob", "Builder", "");
    s += &slapd::ldif_person("carol", "Carol", "Off", "employeeType: disabled\n");
    s += &slapd::ldif_group(
        "Engineering",
        "groupOfNames",
        &[slapd::user_dn("alice"), slapd::user_dn("carol")],
    );
    s += &slapd::ldif_group("Other", "groupOfNames", &[slapd::user_dn("bob")]);
    s
}

#[test]
fn on_the_ldap_source_a_user_and_a_group_are_read_alone() {
    if !slapd::available() {
        return;
    }
    let server = Slapd::start(&ldap_directory(), &slapd::Options::default());
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    std::fs::write(fixture.path("ldap-password"), slapd::READER_PW).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(fixture.path("ldap-password"), mode).unwrap();
    }
    fixture.write_config(&format!(
        r#"state_dir = "state"
[[jobs]]
name = "robin"
interval = "40m"
scope = "assigned"
[jobs.source]
kind = "ldap"
url = "{url}"
bind_dn = "{reader}"
password_file = "ldap-password"
user_base = "{people}"
group_base = "{groups}"
group_filter = "(objectClass=groupOfNames)"
disabled_filter = "(employeeType=disabled)"
assigned_groups = ["{eng}"]
[jobs.target]
url = "{target}"
token_file = "token"
"#,
        url = server.url(),
        reader = slapd::READER_DN,
        people = slapd::PEOPLE,
        groups = slapd::GROUPS,
        eng = slapd::group_dn("Engineering"),
        target = sandbox.url(),
    ));

    // Alice: a member of the assigned group.
    let alice = provision(&fixture, &["--user", "alice@example.org"], 0);
    assert_eq!(alice["action"], "create", "{alice:#}");
    let scoping = step(&alice, "scoping", "Alice Liddell");
    assert_eq!(
        scoping["details"]["Assigned to application"], "True (through group Engineering)",
        "{alice:#}"
    );
    assert_eq!(sandbox.user_names(), ["alice@example.org"]);

    // Bob: in a group that is not assigned.
    let bob = provision(&fixture, &["--user", "bob@example.org"], 0);
    assert_eq!(bob["action"], "skip", "{bob:#}");
    assert_eq!(
        step(&bob, "scoping", "Bob")["details"]["Assigned to application"],
        "False"
    );
    // Carol: assigned through the group, but disabled by the disabled_filter.
    let carol = provision(&fixture, &["--user", "carol@example.org"], 0);
    assert_eq!(carol["action"], "skip", "{carol:#}");
    assert!(
        step(&carol, "scoping", "Carol")["details"]["Active in source system"]
            .as_str()
            .unwrap()
            .starts_with("False")
    );
    assert_eq!(sandbox.users().len(), 1, "bob and carol were not sent");

    // The group with one asked member: created with alice only.
    let group = provision(
        &fixture,
        &["--group", "Engineering", "--member", "alice@example.org"],
        0,
    );
    assert_eq!(group["action"], "create", "{group:#}");
    let groups = sandbox.groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(sandbox.users().len(), 1, "alice was linked already");
}
