//! End-to-end cycles against the sandbox SCIM server on 127.0.0.1: the initial cycle, no-change
//! cycles, every kind of change, matching and adoption, state persistence, dry runs, incomplete
//! source reads and bad input.

use crate::support::common::{self, *};
use async_trait::async_trait;
use provisiond::parse_export;
use provisiond::ObjectType;
use provisiond::SandboxHandle;
use provisiond::{run_cycle, CycleOptions, JobSpec};
use provisiond::{CycleKind, CycleStatus, GroupCounts, MembershipCounts, UserCounts};
use provisiond::{DryRunTarget, RequestCounts};
use provisiond::{MemoryStore, SledStore, StateStore};
use provisiond::{Source, SourceError, SourceRead};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// 1 and 2: the initial cycle, exactly; then a cycle with no change.

/// What the base directory must look like in the target after a successful cycle.
fn check_base_state(h: &SandboxHandle) {
    let names: BTreeSet<String> = h
        .users()
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = ["alice", "bob", "grace", "henry"]
        .iter()
        .map(|n| format!("{n}@contoso.com"))
        .collect();
    assert_eq!(names, want);
    assert_eq!(h.users().len(), 4, "no duplicates");
    assert!(h.users().iter().all(|u| u["active"] == json!(true)));
    let groups: BTreeSet<String> = h
        .groups()
        .iter()
        .map(|g| g["displayName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        groups,
        ["Engineering", "Operations"].map(String::from).into()
    );
    assert_eq!(
        member_ids(&group(h, "Engineering")),
        ids_of(h, &["bob@contoso.com", "grace@contoso.com"])
    );
    assert_eq!(
        member_ids(&group(h, "Operations")),
        ids_of(h, &["alice@contoso.com", "henry@contoso.com"])
    );
    let bob = id(&user(h, "bob@contoso.com"));
    assert_eq!(
        user(h, "alice@contoso.com")[ENTERPRISE]["manager"]["value"],
        json!(bob)
    );
}

#[tokio::test]
async fn initial_cycle_provisions_exactly_the_assigned_objects() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());

    let report = run(&job, &store, &client).await;
    let s = &report.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(s.kind, CycleKind::Initial);
    assert!(s.source_complete);
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    // Created: alice, bob, grace, henry. Skipped: carol (disabled), dave (soft-deleted), erin
    // (Default Access), frank (only in the nested, unassigned Platform group).
    assert_eq!(s.users, users(4, 0, 0, 0, 0, 4, 0), "{s:#?}");
    assert_eq!(s.groups, groups(2, 0, 0, 0, 1, 0), "{s:#?}");
    assert_eq!(s.memberships, memberships(4, 0));
    // One matching GET and one POST per object; PATCHes: alice's manager, one per group.
    assert_eq!(s.requests, requests(6, 6, 3, 0), "{s:#?}");
    let server = h.request_counts();
    assert_eq!(
        (
            server.get,
            server.post,
            server.patch,
            server.delete,
            server.total
        ),
        (6, 6, 3, 0, 15)
    );

    // The users, attribute by attribute.
    let alice = user(&h, "alice@contoso.com");
    let bob = user(&h, "bob@contoso.com");
    assert_eq!(
        without_meta(&alice),
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE],
            "userName": "alice@contoso.com",
            "active": true,
            "displayName": "Alice Liddell",
            "title": "Engineer",
            "preferredLanguage": "en-GB",
            "emails": [{"type": "work", "value": "alice@contoso.com"}],
            "name": {"givenName": "Alice", "familyName": "Liddell", "formatted": "Alice Liddell"},
            "addresses": [{"type": "work", "locality": "Oxford", "country": "GB"}],
            "phoneNumbers": [
                {"type": "mobile", "value": "+44 7700 900000"},
                {"type": "work", "value": "+44 1865 000000"},
            ],
            "externalId": "alice",
            ENTERPRISE: {
                "employeeNumber": "1001",
                "department": "R&D",
                "manager": {"value": id(&bob)},
            },
        })
    );
    assert_eq!(
        without_meta(&bob),
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE],
            "userName": "bob@contoso.com",
            "active": true,
            "displayName": "Bob Builder",
            "title": "Engineer",
            "emails": [{"type": "work", "value": "bob@contoso.com"}],
            "name": {"givenName": "Bob", "familyName": "Builder", "formatted": "Bob Builder"},
            "externalId": "bob",
            ENTERPRISE: {"employeeNumber": "1002", "department": "Ops"},
        })
    );
    for absent in ["carol", "dave", "erin", "frank"] {
        assert!(
            try_user(&h, &format!("{absent}@contoso.com")).is_none(),
            "{absent} must not be created"
        );
    }

    // The groups: created with externalId = the source id, members = target ids.
    let eng = group(&h, "Engineering");
    assert_eq!(eng["externalId"], "g-eng");
    assert_eq!(
        member_ids(&eng),
        ids_of(&h, &["bob@contoso.com", "grace@contoso.com"])
    );
    assert_eq!(
        member_ids(&group(&h, "Operations")),
        ids_of(&h, &["alice@contoso.com", "henry@contoso.com"])
    );
    assert!(
        try_group(&h, "Platform").is_none(),
        "a nested, unassigned group is not provisioned"
    );
    check_base_state(&h);

    // The links remember what was created.
    let links = store.links("test").unwrap();
    assert_eq!(
        links
            .iter()
            .filter(|l| l.object_type == ObjectType::User)
            .count(),
        4
    );
    assert!(links.iter().all(|l| l.created));
    let alice_link = links.iter().find(|l| l.source_id == "u-alice").unwrap();
    assert_eq!(alice_link.target_id, id(&alice));

    // Actions were recorded for each object.
    let creates = report
        .actions
        .iter()
        .filter(|a| a.action == "create")
        .count();
    assert_eq!(creates, 6, "{:#?}", report.actions);

    // 2: the same directory again: nothing to write, not even a matching query.
    let before = h.request_counts();
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.kind, CycleKind::Incremental);
    assert_eq!(s.requests.writes(), 0, "{s:#?}");
    assert_eq!(s.requests.total(), 0, "{s:#?}");
    assert_eq!(s.users, users(0, 0, 0, 0, 4, 4, 0));
    assert_eq!(s.groups, groups(0, 0, 0, 2, 1, 0));
    assert_eq!(s.memberships, MembershipCounts::default());
    assert_eq!(h.request_counts().total, before.total);
    check_base_state(&h);
}

// ---------------------------------------------------------------------------------------------
// 3: changes, one table.

struct Case {
    name: &'static str,
    /// Directories applied one cycle each before the measured cycle (each must succeed).
    history: Vec<Value>,
    /// The directory of the measured cycle.
    after: Value,
    /// Changes made directly in the target before the measured cycle.
    tamper: Option<fn(&SandboxHandle)>,
    users: UserCounts,
    groups: GroupCounts,
    memberships: MembershipCounts,
    /// Requests of the measured cycle.
    requests: RequestCounts,
    /// The PATCH operations sent to users in the measured cycle (see `user_patch_ops`), when
    /// they hold no generated id.
    user_ops: Option<&'static [&'static str]>,
    check: fn(&SandboxHandle),
}

/// Runs the history, then the measured cycle (which must succeed with exactly the expected
/// counts), checks the target, then runs once more and expects no write at all.
async fn run_case(case: Case) {
    let name = case.name;
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&case.history[0]);
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = Recorder::new(client(&h.base_url()));
    for d in &case.history {
        file.write(d);
        let s = run(&job, &store, &client).await.summary;
        assert_eq!(
            s.status,
            CycleStatus::Succeeded,
            "{name}: history cycle: {s:#?}"
        );
    }
    if let Some(tamper) = case.tamper {
        tamper(&h);
    }
    file.write(&case.after);
    client.take();
    let report = run(&job, &store, &client).await;
    let s = &report.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{name}: {s:#?}");
    assert_eq!(s.kind, CycleKind::Incremental, "{name}");
    assert_eq!(s.users, case.users, "{name}: users\n{:#?}", report.actions);
    assert_eq!(
        s.groups, case.groups,
        "{name}: groups\n{:#?}",
        report.actions
    );
    assert_eq!(s.memberships, case.memberships, "{name}: memberships");
    assert_eq!(
        s.requests, case.requests,
        "{name}: requests\n{:#?}",
        report.actions
    );
    if let Some(want) = case.user_ops {
        assert_eq!(
            user_patch_ops(&client.take()),
            want,
            "{name}: PATCH operations sent to users"
        );
    }
    (case.check)(&h);
    assert_converged(&job, &store, &client).await;
    (case.check)(&h);
}

fn alice_with(f: impl FnOnce(&mut Value)) -> Value {
    edit(base_directory(), |d| f(user_mut(d, "u-alice")))
}

fn members_of<'a>(d: &'a mut Value, group: &str) -> &'a mut Vec<Value> {
    group_mut(d, group)["members"].as_array_mut().unwrap()
}

fn drop_member(d: &mut Value, group: &str, member: &str) {
    members_of(d, group).retain(|m| m != member);
}

fn cases() -> Vec<Case> {
    let base = base_directory;
    vec![
        Case {
            name: "an attribute change PATCHes that attribute only",
            history: vec![base()],
            after: alice_with(|a| a["jobTitle"] = json!("Principal Engineer")),
            // Drift in another attribute: left alone, since only the title is sent.
            tamper: Some(|h| {
                let mut alice = user(h, "alice@contoso.com");
                alice["displayName"] = json!("Drifted");
                h.insert_user(alice);
            }),
            users: users(0, 1, 0, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 0),
            requests: requests(0, 0, 1, 0),
            user_ops: Some(&[r#"replace title "Principal Engineer""#]),
            check: |h| {
                let alice = user(h, "alice@contoso.com");
                assert_eq!(alice["title"], "Principal Engineer");
                assert_eq!(
                    alice["displayName"], "Drifted",
                    "only the title was PATCHed"
                );
                assert_eq!(alice["name"]["formatted"], "Alice Liddell");
                assert_eq!(alice[ENTERPRISE]["employeeNumber"], "1001");
            },
        },
        Case {
            name: "a user removed from the assigned group is disabled and leaves the group",
            history: vec![base()],
            after: edit(base(), |d| drop_member(d, "g-eng", "u-grace")),
            tamper: None,
            users: users(0, 0, 1, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 1),
            requests: requests(0, 0, 2, 0),
            user_ops: Some(&["replace active false"]),
            check: |h| {
                assert_eq!(user(h, "grace@contoso.com")["active"], json!(false));
                assert_eq!(
                    member_ids(&group(h, "Engineering")),
                    ids_of(h, &["bob@contoso.com"])
                );
                assert_eq!(h.users().len(), 4, "disabled, not deleted");
            },
        },
        Case {
            name: "a user deleted from the source is DELETEd",
            history: vec![base()],
            after: edit(base(), |d| {
                remove_user(d, "u-henry");
                remove_assignment(d, "u-henry");
                drop_member(d, "g-ops", "u-henry");
            }),
            tamper: None,
            users: users(0, 0, 0, 1, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 1),
            requests: requests(0, 0, 1, 1),
            user_ops: Some(&[]),
            check: |h| {
                assert!(try_user(h, "henry@contoso.com").is_none());
                assert_eq!(
                    member_ids(&group(h, "Operations")),
                    ids_of(h, &["alice@contoso.com"])
                );
            },
        },
        Case {
            name: "a manager and group member deleted from the source",
            history: vec![base()],
            after: edit(base(), |d| {
                remove_user(d, "u-bob");
                drop_member(d, "g-eng", "u-bob");
                user_mut(d, "u-alice")
                    .as_object_mut()
                    .unwrap()
                    .remove("manager");
            }),
            tamper: None,
            users: users(0, 0, 0, 1, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 1),
            requests: requests(0, 0, 1, 1),
            user_ops: Some(&[]),
            check: |h| {
                assert!(try_user(h, "bob@contoso.com").is_none());
                assert_eq!(
                    member_ids(&group(h, "Engineering")),
                    ids_of(h, &["grace@contoso.com"])
                );
            },
        },
        Case {
            name: "an unassigned group is DELETEd, its directly assigned members stay",
            history: vec![base()],
            after: edit(base(), |d| remove_assignment(d, "g-ops")),
            tamper: None,
            users: users(0, 0, 0, 0, 4, 4, 0),
            groups: groups(0, 0, 1, 1, 1, 0),
            memberships: memberships(0, 0),
            requests: requests(0, 0, 0, 1),
            user_ops: Some(&[]),
            check: |h| {
                assert!(try_group(h, "Operations").is_none());
                assert_eq!(user(h, "alice@contoso.com")["active"], json!(true));
                assert_eq!(user(h, "henry@contoso.com")["active"], json!(true));
            },
        },
        Case {
            name: "accountEnabled=false disables",
            history: vec![base()],
            after: alice_with(|a| a["accountEnabled"] = json!(false)),
            tamper: None,
            users: users(0, 0, 1, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 1),
            requests: requests(0, 0, 2, 0),
            user_ops: Some(&["replace active false"]),
            check: |h| {
                assert_eq!(user(h, "alice@contoso.com")["active"], json!(false));
                assert_eq!(
                    member_ids(&group(h, "Operations")),
                    ids_of(h, &["henry@contoso.com"])
                );
            },
        },
        Case {
            name: "soft-deleted in the source disables",
            history: vec![base()],
            after: edit(base(), |d| {
                user_mut(d, "u-henry")["deletedDateTime"] = json!("2026-03-01T10:00:00Z");
            }),
            tamper: None,
            users: users(0, 0, 1, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 1),
            requests: requests(0, 0, 2, 0),
            user_ops: Some(&["replace active false"]),
            check: |h| {
                assert_eq!(user(h, "henry@contoso.com")["active"], json!(false));
                assert_eq!(
                    member_ids(&group(h, "Operations")),
                    ids_of(h, &["alice@contoso.com"])
                );
            },
        },
        Case {
            name: "only the Default Access role left disables",
            history: vec![base()],
            after: edit(base(), |d| {
                remove_assignment(d, "u-henry");
                d["assignments"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"principalId": "u-henry", "role": "Default Access"}));
                drop_member(d, "g-ops", "u-henry");
            }),
            tamper: None,
            users: users(0, 0, 1, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 1),
            requests: requests(0, 0, 2, 0),
            user_ops: Some(&["replace active false"]),
            check: |h| assert_eq!(user(h, "henry@contoso.com")["active"], json!(false)),
        },
        Case {
            name: "a disabled user enabled again is re-activated and rejoins its group",
            history: vec![base(), alice_with(|a| a["accountEnabled"] = json!(false))],
            after: base(),
            tamper: None,
            users: users(0, 1, 0, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(1, 0),
            requests: requests(0, 0, 2, 0),
            user_ops: Some(&["replace active true"]),
            check: check_base_state,
        },
        Case {
            name: "a new member of an assigned group is created and added",
            history: vec![base()],
            after: edit(base(), |d| {
                d["users"].as_array_mut().unwrap().push(full_user(
                    "u-ivan",
                    "Ivan",
                    "Ivanov",
                    json!({"manager": "u-grace"}),
                ));
                members_of(d, "g-eng").push(json!("u-ivan"));
            }),
            tamper: None,
            users: users(1, 0, 0, 0, 4, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(1, 0),
            // Match, create, manager, membership.
            requests: requests(1, 1, 2, 0),
            user_ops: None,
            check: |h| {
                let ivan = user(h, "ivan@contoso.com");
                assert_eq!(
                    ivan[ENTERPRISE]["manager"]["value"],
                    json!(id(&user(h, "grace@contoso.com")))
                );
                assert!(member_ids(&group(h, "Engineering")).contains(&id(&ivan)));
            },
        },
        Case {
            name: "a renamed group is PATCHed",
            history: vec![base()],
            after: edit(base(), |d| {
                group_mut(d, "g-eng")["displayName"] = json!("R&D Engineering")
            }),
            tamper: None,
            users: users(0, 0, 0, 0, 4, 4, 0),
            groups: groups(0, 1, 0, 1, 1, 0),
            memberships: memberships(0, 0),
            requests: requests(0, 0, 1, 0),
            user_ops: Some(&[]),
            check: |h| {
                assert!(try_group(h, "Engineering").is_none());
                assert_eq!(group(h, "R&D Engineering")["externalId"], "g-eng");
            },
        },
        Case {
            name: "a new manager is resolved to the manager's target id",
            history: vec![base()],
            after: alice_with(|a| a["manager"] = json!("u-grace")),
            tamper: None,
            users: users(0, 1, 0, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 0),
            requests: requests(0, 0, 1, 0),
            user_ops: None,
            check: |h| {
                let grace = id(&user(h, "grace@contoso.com"));
                assert_eq!(
                    user(h, "alice@contoso.com")[ENTERPRISE]["manager"]["value"],
                    json!(grace)
                );
            },
        },
        Case {
            name: "a renamed user (new userName) keeps its target object",
            history: vec![base()],
            after: alice_with(|a| a["userPrincipalName"] = json!("alice.liddell@contoso.com")),
            tamper: None,
            users: users(0, 1, 0, 0, 3, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 0),
            requests: requests(0, 0, 1, 0),
            user_ops: Some(&[r#"replace userName "alice.liddell@contoso.com""#]),
            check: |h| {
                assert!(try_user(h, "alice@contoso.com").is_none());
                let alice = user(h, "alice.liddell@contoso.com");
                assert!(member_ids(&group(h, "Operations")).contains(&id(&alice)));
            },
        },
        Case {
            name: "a new sub-attribute of a missing element adds the element",
            history: vec![base()],
            after: edit(base(), |d| {
                let henry = user_mut(d, "u-henry");
                henry["city"] = json!("Paris");
                henry["country"] = json!("FR");
                henry["mobile"] = json!("+33 6 00 00 00 00");
                user_mut(d, "u-alice")["country"] = json!("FR");
            }),
            tamper: None,
            users: users(0, 2, 0, 0, 2, 4, 0),
            groups: groups(0, 0, 0, 2, 1, 0),
            memberships: memberships(0, 0),
            requests: requests(0, 0, 2, 0),
            // RFC 7644: a replace whose filter matches nothing fails (noTarget); a new element
            // is added to the multi-valued attribute instead, once, with all its sub-attributes.
            user_ops: Some(&[
                r#"add addresses [{"country":"FR","locality":"Paris","type":"work"}]"#,
                r#"add phoneNumbers [{"type":"mobile","value":"+33 6 00 00 00 00"}]"#,
                r#"replace addresses[type eq "work"].country "FR""#,
            ]),
            check: |h| {
                let henry = user(h, "henry@contoso.com");
                assert_eq!(
                    henry["addresses"],
                    json!([{"type": "work", "locality": "Paris", "country": "FR"}])
                );
                assert_eq!(
                    henry["phoneNumbers"],
                    json!([{"type": "mobile", "value": "+33 6 00 00 00 00"}])
                );
                let alice = user(h, "alice@contoso.com");
                assert_eq!(
                    alice["addresses"],
                    json!([{"type": "work", "locality": "Oxford", "country": "FR"}])
                );
            },
        },
    ]
}

#[tokio::test]
async fn changes_are_exported_as_minimal_requests() {
    for case in cases() {
        run_case(case).await;
    }
}

/// The same changes after two more cycles of the history's last directory: the first records
/// each unchanged object's input digest, the second maps none of them (issue 12). Each change
/// must be seen all the same.
#[tokio::test]
async fn changes_are_seen_after_cycles_that_skipped_mapping() {
    for mut case in cases() {
        let last = case.history[case.history.len() - 1].clone();
        case.history.extend([last.clone(), last]);
        run_case(case).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4: matching and adoption.

#[tokio::test]
async fn an_existing_user_is_adopted_case_insensitively_not_duplicated() {
    let h = sandbox(vec![]).await;
    let seeded = h.insert_user(
        json!({"userName": "ALICE@Contoso.COM", "active": false, "title": "Old",
        "phoneNumbers": [{"type": "work", "value": "+1 555 0100"}],
        "addresses": [{"type": "home", "locality": "Cheshire"}]}),
    );
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = Recorder::new(client(&h.base_url()));
    let report = run(&job, &store, &client).await;
    // Attributes the adopted user lacks are added as new elements; existing ones replaced.
    let ops = user_patch_ops(&client.take());
    for want in [
        r#"add addresses [{"country":"GB","locality":"Oxford","type":"work"}]"#,
        r#"add emails [{"type":"work","value":"alice@contoso.com"}]"#,
        r#"add phoneNumbers [{"type":"mobile","value":"+44 7700 900000"}]"#,
        r#"replace phoneNumbers[type eq "work"].value "+44 1865 000000""#,
        r#"replace userName "alice@contoso.com""#,
        "replace active true",
    ] {
        assert!(ops.iter().any(|o| o == want), "{want} not in {ops:#?}");
    }
    assert!(
        !ops.iter().any(|o| o.contains("replace addresses[")),
        "{ops:#?}"
    );
    let s = &report.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(s.users, users(3, 1, 0, 0, 0, 4, 0), "{s:#?}");
    assert!(report
        .actions
        .iter()
        .any(|a| a.action == "adopt" && a.source_id == "u-alice"));
    let alice = user(&h, "alice@contoso.com");
    assert_eq!(id(&alice), seeded, "adopted, not re-created");
    assert_eq!(alice["active"], json!(true));
    assert_eq!(alice["title"], "Engineer");
    assert_eq!(alice["name"]["formatted"], "Alice Liddell");
    assert_eq!(
        alice["addresses"].as_array().unwrap().len(),
        2,
        "home kept, work added"
    );
    let link = store
        .links("test")
        .unwrap()
        .into_iter()
        .find(|l| l.source_id == "u-alice")
        .unwrap();
    assert_eq!(link.target_id, seeded);
    assert!(!link.created, "matched, not created");
    check_base_state(&h);
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn two_matching_target_users_fail_that_user_only() {
    let h = sandbox(vec![]).await;
    // Seeding bypasses the sandbox's uniqueness check: a target that has duplicates.
    h.insert_user(json!({"userName": "bob@contoso.com"}));
    h.insert_user(json!({"userName": "BOB@contoso.com"}));
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::EntryLevelErrors, "{s:#?}");
    assert_eq!(s.users.created, 3, "{s:#?}");
    assert_eq!(s.users.failed, 1, "{s:#?}");
    let codes: Vec<(&str, Option<&str>)> = s
        .problems
        .iter()
        .map(|p| (p.code.as_str(), p.id.as_deref()))
        .collect();
    assert_eq!(
        codes,
        vec![("DuplicateTargetEntries", Some("u-bob"))],
        "{s:#?}"
    );
    assert_eq!(
        users_named(&h, "bob@contoso.com").len(),
        2,
        "neither duplicate touched"
    );
    for n in ["alice", "grace", "henry"] {
        user(&h, &format!("{n}@contoso.com"));
    }
    // Bob is neither a member nor alice's manager: he has no target id.
    let eng = member_ids(&group(&h, "Engineering"));
    assert_eq!(eng, ids_of(&h, &["grace@contoso.com"]));
    assert!(user(&h, "alice@contoso.com")[ENTERPRISE]
        .get("manager")
        .is_none());
}

#[tokio::test]
async fn matching_values_with_quotes_backslashes_and_non_ascii() {
    let names = [
        r#"o'brien@contoso.com"#,
        r#"say "hi"@contoso.com"#,
        r#"back\slash@contoso.com"#,
        r#"two\\back\"slashes@contoso.com"#,
        "zoë.núñez@contoso.com",
        "李雷@contoso.com",
        "plus+and&eq=pct%20hash#q?@contoso.com",
        "  spaced  out  @contoso.com",
    ];
    let h = sandbox(vec![]).await;
    let mut seeded = Vec::new();
    for n in names {
        // Pre-seeded in another case: matched case-insensitively.
        seeded.push(h.insert_user(json!({"userName": n.to_uppercase()})));
    }
    // Decoys an escaping bug could confuse with the real values.
    let decoys = [
        h.insert_user(json!({"userName": r#"say \"hi\"@contoso.com"#})),
        h.insert_user(json!({"userName": r#"back\\slash@contoso.com"#})),
        h.insert_user(json!({"userName": "zoe.nunez@contoso.com"})),
    ];
    let file = DirFile::new(&directory_of_upns(&names));
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(
        s.users.updated,
        names.len() as u64,
        "every one adopted: {s:#?}"
    );
    assert_eq!(s.requests.post, 0, "nothing created: {s:#?}");
    assert_eq!(h.users().len(), names.len() + decoys.len());
    let links = store.links("test").unwrap();
    for (i, n) in names.iter().enumerate() {
        let link = links
            .iter()
            .find(|l| l.source_id == format!("u{i}"))
            .unwrap();
        assert_eq!(link.target_id, seeded[i], "{n}");
        // The adoption PATCH fixed the case of userName.
        let u = h
            .users()
            .into_iter()
            .find(|u| u["id"] == seeded[i].as_str())
            .unwrap();
        assert_eq!(u["userName"], *n);
    }
    for d in decoys {
        let u = h
            .users()
            .into_iter()
            .find(|u| u["id"] == d.as_str())
            .unwrap();
        assert!(u.get("displayName").is_none(), "decoy {d} was touched: {u}");
    }
    assert_converged(&job, &store, &client).await;

    // From an empty target they are created, once, and match on the next initial cycle.
    let h2 = sandbox(vec![]).await;
    let client2 = common::client(&h2.base_url());
    let s = run_ok(&job, &MemoryStore::new(), &client2).await;
    assert_eq!(s.users.created, names.len() as u64);
    let s = run_ok(&job, &MemoryStore::new(), &client2).await;
    assert_eq!(
        (s.users.created, s.users.updated, s.requests.writes()),
        (0, names.len() as u64, 0),
        "{s:#?}"
    );
    assert_eq!(h2.users().len(), names.len());
}

#[tokio::test]
async fn an_existing_group_is_adopted_and_its_members_set() {
    let h = sandbox(vec![]).await;
    let seeded = h.insert_group(json!({"displayName": "ENGINEERING"}));
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.groups, groups(1, 1, 0, 0, 1, 0), "{s:#?}");
    assert_eq!(id(&group(&h, "Engineering")), seeded);
    check_base_state(&h);
    assert_converged(&job, &store, &client).await;
}

// ---------------------------------------------------------------------------------------------
// 6: an object deleted in the target behind provisiond's back.

#[tokio::test]
async fn a_linked_user_deleted_in_the_target_is_matched_again_then_created() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    let old = id(&user(&h, "alice@contoso.com"));
    let r = raw(
        reqwest::Method::DELETE,
        format!("{}/Users/{old}", h.base_url()),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);

    // A change makes provisiond touch alice: PATCH → 404 → match (none) → create.
    file.write(&alice_with(|a| a["jobTitle"] = json!("Principal Engineer")));
    let report = run(&job, &store, &client).await;
    let s = &report.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(s.users.created, 1, "{s:#?}");
    let alice = user(&h, "alice@contoso.com");
    assert_ne!(id(&alice), old);
    assert_eq!(alice["title"], "Principal Engineer");
    assert_eq!(
        alice["name"]["formatted"], "Alice Liddell",
        "created with every attribute"
    );
    assert_eq!(
        alice[ENTERPRISE]["manager"]["value"],
        json!(id(&user(&h, "bob@contoso.com")))
    );
    assert_eq!(
        member_ids(&group(&h, "Operations")),
        ids_of(&h, &["alice@contoso.com", "henry@contoso.com"])
    );
    assert_eq!(
        store
            .links("test")
            .unwrap()
            .iter()
            .find(|l| l.source_id == "u-alice")
            .unwrap()
            .target_id,
        id(&alice)
    );
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn a_linked_user_recreated_in_the_target_is_matched_again_and_adopted() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    let old = id(&user(&h, "henry@contoso.com"));
    raw(
        reqwest::Method::DELETE,
        format!("{}/Users/{old}", h.base_url()),
        None,
    )
    .await;
    let new = h.insert_user(json!({"userName": "henry@contoso.com"}));

    file.write(&edit(base_directory(), |d| {
        user_mut(d, "u-henry")["jobTitle"] = json!("Boss")
    }));
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.created, 0, "{s:#?}");
    let henry = user(&h, "henry@contoso.com");
    assert_eq!(id(&henry), new);
    assert_eq!(henry["title"], "Boss");
    assert_eq!(
        henry["name"]["givenName"], "Henry",
        "adoption sends every differing attribute"
    );
    assert_eq!(
        member_ids(&group(&h, "Operations")),
        ids_of(&h, &["alice@contoso.com", "henry@contoso.com"])
    );
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn a_linked_group_deleted_in_the_target_is_recreated() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    let eng = id(&group(&h, "Engineering"));
    raw(
        reqwest::Method::DELETE,
        format!("{}/Groups/{eng}", h.base_url()),
        None,
    )
    .await;

    // A rename (a PATCH on the group) finds it gone: match again, create with its members.
    file.write(&edit(base_directory(), |d| {
        group_mut(d, "g-eng")["displayName"] = json!("Eng")
    }));
    let s = run(&job, &store, &client).await.summary;
    assert_ne!(s.status, CycleStatus::Failed, "{s:#?}");
    // Converges within one more cycle at most.
    let s = run(&job, &store, &client).await.summary;
    assert_ne!(s.status, CycleStatus::Failed, "{s:#?}");
    assert_converged(&job, &store, &client).await;
    assert_eq!(
        member_ids(&group(&h, "Eng")),
        ids_of(&h, &["bob@contoso.com", "grace@contoso.com"])
    );
}

// ---------------------------------------------------------------------------------------------
// 7: state persistence in sled.

#[tokio::test]
async fn sled_state_survives_a_restart() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let client = client(&h.base_url());
    let state = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(state.path()).unwrap();
        let s = run_ok(&job, &store, &client).await;
        assert_eq!(s.users.created, 4);
    }
    {
        let store = reopen_store(state.path()).await;
        let meta = store.meta("test").unwrap();
        assert!(meta.watermark.is_some());
        assert_eq!(meta.last_cycle.unwrap().users.created, 4);
        let s = run_ok(&job, &store, &client).await;
        assert_eq!(s.kind, CycleKind::Incremental);
        assert_eq!(s.requests.total(), 0, "{s:#?}");
    }
    {
        // A change after a restart is a minimal update.
        let store = reopen_store(state.path()).await;
        file.write(&alice_with(|a| a["jobTitle"] = json!("CTO")));
        let s = run_ok(&job, &store, &client).await;
        assert_eq!(s.requests, requests(0, 0, 1, 0), "{s:#?}");
    }
    let store = reopen_store(state.path()).await;
    assert_converged(&job, &store, &client).await;
    assert_eq!(h.users().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// 8: dry run.

async fn dry_run(
    job: &JobSpec,
    store: &dyn StateStore,
    h: &SandboxHandle,
) -> provisiond::CycleReport {
    let scratch = MemoryStore::from_store(store, &job.name).unwrap();
    let target = DryRunTarget::new(client(&h.base_url()));
    let opts = CycleOptions {
        dry_run: true,
        record_actions: true,
        ..CycleOptions::default()
    };
    run_cycle(job, &scratch, &target, &opts, &CancellationToken::new()).await
}

#[tokio::test]
async fn a_dry_run_sends_no_write_and_reports_what_it_would_do() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();

    // Initial dry run: everything would be created; the target and the store stay empty.
    let report = dry_run(&job, &store, &h).await;
    assert!(report.summary.dry_run);
    assert_eq!(
        report.summary.status,
        CycleStatus::Succeeded,
        "{:#?}",
        report.summary
    );
    assert_eq!(report.summary.users.created, 4);
    assert_eq!(report.summary.groups.created, 2);
    assert_eq!(report.summary.memberships.added, 4);
    let server = h.request_counts();
    assert_eq!(
        (server.post, server.patch, server.put, server.delete),
        (0, 0, 0, 0)
    );
    assert_eq!(server.get, 6, "matching queries are real");
    assert!(h.users().is_empty() && h.groups().is_empty());
    assert!(store.links("test").unwrap().is_empty());
    assert_eq!(
        store.meta("test").unwrap(),
        Default::default(),
        "a dry run records nothing"
    );

    // After a real cycle, a dry run of changes lists them and changes nothing.
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    let links_before = store.links("test").unwrap();
    let snapshot = (h.users(), h.groups());
    file.write(&edit(base_directory(), |d| {
        user_mut(d, "u-alice")["jobTitle"] = json!("CTO");
        drop_member(d, "g-eng", "u-grace");
        remove_user(d, "u-henry");
        remove_assignment(d, "u-henry");
        drop_member(d, "g-ops", "u-henry");
        remove_assignment(d, "g-eng");
        d["users"]
            .as_array_mut()
            .unwrap()
            .push(full_user("u-ivan", "Ivan", "Ivanov", json!({})));
        members_of(d, "g-ops").push(json!("u-ivan"));
    }));
    let before = h.request_counts();
    let report = dry_run(&job, &store, &h).await;
    let after = h.request_counts();
    assert_eq!(
        after.total - before.total,
        after.get - before.get,
        "only GETs were sent"
    );
    assert_eq!(snapshot, (h.users(), h.groups()), "the target is untouched");
    assert_eq!(
        store.links("test").unwrap(),
        links_before,
        "the real store is untouched"
    );
    // Skipped objects are recorded too (out of scope and never provisioned).
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.action == "skip" && a.source_id == "u-carol"),
        "{:#?}",
        report.actions
    );
    let mut actions: Vec<(String, &str)> = report
        .actions
        .iter()
        .filter(|a| a.action != "skip")
        .map(|a| (a.action.to_string(), a.name.as_str()))
        .collect();
    actions.sort();
    let mut want = vec![
        ("add_members".to_string(), "Operations"),
        ("create".into(), "Ivan Ivanov"),
        ("delete".into(), "Engineering"),
        ("delete".into(), "Henry Higgins"),
        // Bob and grace were in scope only through Engineering.
        ("disable".into(), "Bob Builder"),
        ("disable".into(), "Grace Hopper"),
        ("remove_members".into(), "Operations"),
        ("update".into(), "Alice Liddell"),
    ];
    want.sort();
    assert_eq!(actions, want, "{:#?}", report.actions);
    let update = report
        .actions
        .iter()
        .find(|a| a.action == "update")
        .unwrap();
    assert!(update.detail.contains("CTO"), "{update:?}");

    // The real cycle then does exactly that.
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users, report.summary.users);
    assert_eq!(s.groups, report.summary.groups);
    assert_eq!(s.memberships, report.summary.memberships);
    assert_converged(&job, &store, &client).await;
}

// ---------------------------------------------------------------------------------------------
// 9: an incomplete source read never deprovisions.

/// A source that hands out a fixed directory, marked incomplete.
struct Partial(Value);

#[async_trait]
impl Source for Partial {
    fn describe(&self) -> String {
        "partial test source".into()
    }
    async fn read(&self, _watermark: Option<&str>) -> Result<SourceRead, SourceError> {
        let mut directory = parse_export(self.0.to_string().as_bytes(), Path::new("partial.json"))?;
        directory.complete = false;
        Ok(SourceRead {
            directory,
            watermark: Some("partial".into()),
            changes: None,
        })
    }
    async fn test_connection(&self) -> Result<String, SourceError> {
        Ok("fixed".into())
    }
}

#[tokio::test]
async fn an_incomplete_read_disables_and_deletes_nothing() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job(&file.path), &store, &client).await;

    // The read stopped early: henry, bob, g-ops are missing, grace is unread from Engineering;
    // alice's changed title was read.
    let partial = edit(base_directory(), |d| {
        remove_user(d, "u-henry");
        remove_user(d, "u-bob");
        drop_member(d, "g-eng", "u-grace");
        drop_member(d, "g-eng", "u-bob");
        d["groups"]
            .as_array_mut()
            .unwrap()
            .retain(|g| g["id"] != "g-ops");
        user_mut(d, "u-alice")["jobTitle"] = json!("CTO");
    });
    let pjob = job_with_source(Box::new(Partial(partial)));
    let s = run(&pjob, &store, &client).await.summary;
    assert!(!s.source_complete);
    assert_ne!(s.status, CycleStatus::Failed, "{s:#?}");
    assert_eq!(s.requests.delete, 0, "{s:#?}");
    assert_eq!(
        (
            s.users.disabled,
            s.users.deleted,
            s.groups.deleted,
            s.memberships.removed
        ),
        (0, 0, 0, 0),
        "{s:#?}"
    );
    assert_eq!(
        s.requests,
        requests(0, 0, 1, 0),
        "only alice's update: {s:#?}"
    );
    assert_eq!(user(&h, "alice@contoso.com")["title"], "CTO");
    assert_eq!(h.users().len(), 4);
    assert!(h.users().iter().all(|u| u["active"] == json!(true)));
    assert_eq!(member_ids(&group(&h, "Engineering")).len(), 2);
    assert!(try_group(&h, "Operations").is_some());

    // The complete read afterwards deprovisions as usual.
    let s = run_ok(&job(&file.path), &store, &client).await;
    assert_eq!(s.users.updated, 1, "alice's title back: {s:#?}");
    assert_converged(&job(&file.path), &store, &client).await;
    check_base_state(&h);
}

// ---------------------------------------------------------------------------------------------
// 10: bad input.

#[tokio::test]
async fn an_invalid_source_file_fails_the_cycle_before_any_request() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    file.write_raw(br#"{"users": [{"id": "u1", "userPrincipalName": "a@x"}"#);
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Failed);
    let error = s.error.clone().unwrap();
    assert!(error.contains(&file.path.display().to_string()), "{error}");
    assert_eq!(s.requests.total(), 0);
    assert_eq!(h.request_counts().total, 0);
    // The failure is recorded, and the next cycle is still initial.
    assert_eq!(
        store.meta("test").unwrap().last_cycle.unwrap().status,
        CycleStatus::Failed
    );

    // After a good cycle, a broken file changes nothing in the target.
    file.write(&base_directory());
    run_ok(&job, &store, &client).await;
    let before = h.request_counts();
    file.write_raw(b"not json at all");
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Failed);
    assert_eq!(h.request_counts(), before);
    // An unreadable (missing) file too.
    std::fs::remove_file(&file.path).unwrap();
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Failed);
    assert!(s.error.unwrap().contains("cannot read"));
    assert_eq!(h.request_counts(), before);
    file.write(&base_directory());
    assert_converged(&job, &store, &client).await;
    check_base_state(&h);
}

#[tokio::test]
async fn bad_objects_are_skipped_with_reasons_and_the_rest_proceeds() {
    let h = sandbox(vec![]).await;
    let d = edit(base_directory(), |d| {
        let users = d["users"].as_array_mut().unwrap();
        users.push(json!({"userPrincipalName": "noid@contoso.com"}));
        users.push(json!({"id": "u-dup", "userPrincipalName": "dup1@contoso.com"}));
        users.push(json!({"id": "u-dup", "userPrincipalName": "dup2@contoso.com"}));
        users.push(json!({"id": "u-same1", "userPrincipalName": "same@contoso.com"}));
        users.push(json!({"id": "u-same2", "userPrincipalName": "SAME@contoso.com"}));
        users.push(json!({"id": "u-noupn", "displayName": "No UPN"}));
        members_of(d, "g-ops").push(json!("ghost"));
        let assignments = d["assignments"].as_array_mut().unwrap();
        for p in ["u-dup", "u-same1", "u-same2", "u-noupn"] {
            assignments.push(json!({"principalId": p}));
        }
    });
    let file = DirFile::new(&d);
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::EntryLevelErrors, "{s:#?}");
    let mut problems: Vec<(&str, Option<&str>)> = s
        .problems
        .iter()
        .map(|p| (p.code.as_str(), p.id.as_deref()))
        .collect();
    problems.sort();
    assert_eq!(
        problems,
        vec![
            ("DuplicateSourceEntries", Some("u-same1")),
            ("DuplicateSourceEntries", Some("u-same2")),
            ("InvalidMember", Some("g-ops")),
            ("InvalidSourceObject", None),
            ("InvalidSourceObject", Some("u-dup")),
            ("MissingMatchingValue", Some("u-noupn")),
        ],
        "{s:#?}"
    );
    assert!(s.problems.iter().any(|p| p.reason.contains("ghost")));
    assert!(s.problems.iter().any(|p| p.reason.contains("no id")));
    assert_eq!(s.problem_count, 6);
    // The rest proceeded exactly as without the bad objects.
    check_base_state(&h);
    for n in ["noid", "dup1", "dup2", "same"] {
        assert!(try_user(&h, &format!("{n}@contoso.com")).is_none(), "{n}");
    }
    // Next cycle: same problems, no write.
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::EntryLevelErrors);
    assert_eq!(s.requests.writes(), 0, "{s:#?}");
}

// ---------------------------------------------------------------------------------------------
// Client and job settings end to end.

#[tokio::test]
async fn entra_legacy_patch_style_and_patch_answering_200() {
    let h = sandbox_with(provisiond::SandboxConfig {
        token: Some(secrecy::SecretString::from(TOKEN)),
        patch_returns_resource: true,
        ..Default::default()
    })
    .await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let mut settings = settings(&h.base_url(), TOKEN);
    settings.patch_style = provisiond::PatchStyle::EntraLegacy;
    let client = client_with(settings);
    run_ok(&job, &store, &client).await;
    check_base_state(&h);
    file.write(&alice_with(|a| a["accountEnabled"] = json!(false)));
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.disabled, 1);
    assert_eq!(user(&h, "alice@contoso.com")["active"], json!(false));
    assert_converged(&job, &store, &client).await;
    file.write(&base_directory());
    run_ok(&job, &store, &client).await;
    check_base_state(&h);
}

#[tokio::test]
async fn memberships_are_sent_in_batches() {
    let h = sandbox(vec![]).await;
    let mut d = json!({"users": [], "groups": [{"id": "g-big", "displayName": "Big", "members": []}],
                       "assignments": [{"principalId": "g-big"}]});
    for i in 0..250 {
        d["users"].as_array_mut().unwrap().push(
            json!({"id": format!("u{i}"), "userPrincipalName": format!("user{i}@contoso.com")}),
        );
        d["groups"][0]["members"]
            .as_array_mut()
            .unwrap()
            .push(json!(format!("u{i}")));
    }
    let file = DirFile::new(&d);
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.created, 250);
    assert_eq!(s.memberships.added, 250);
    assert_eq!(s.requests.patch, 3, "250 members in chunks of 100: {s:#?}");
    assert_eq!(member_ids(&group(&h, "Big")).len(), 250);

    // 150 leave the group (and so the scope): disabled, and removed in two PATCHes.
    d["groups"][0]["members"]
        .as_array_mut()
        .unwrap()
        .truncate(100);
    file.write(&d);
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.disabled, 150);
    assert_eq!(s.memberships.removed, 150);
    assert_eq!(s.requests.patch, 150 + 2, "{s:#?}");
    assert_eq!(member_ids(&group(&h, "Big")).len(), 100);
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn a_mapping_change_forces_a_full_cycle_that_writes_only_differences() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let mut job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;

    // Title now comes from the department.
    let preset: provisiond::PresetFile = toml::from_str(provisiond::GENERIC_SCIM_PRESET).unwrap();
    let title = provisiond::MappingSpec {
        target: "title".into(),
        source: Some("department".into()),
        ..Default::default()
    };
    job.mappings = provisiond::Mappings::build(&preset, &[title], &[]).unwrap();
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.kind, CycleKind::Initial, "new mappings: full evaluation");
    assert_eq!(s.users.updated, 4);
    assert_eq!(s.requests, requests(0, 0, 4, 0), "{s:#?}");
    assert_eq!(user(&h, "bob@contoso.com")["title"], "Ops");
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn null_values_are_cleared_only_when_asked() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let mut job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    let no_title = alice_with(|a| {
        a.as_object_mut().unwrap().remove("jobTitle");
    });
    file.write(&no_title);
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(
        s.requests.writes(),
        0,
        "Entra's default: a null leaves the old value"
    );
    assert_eq!(user(&h, "alice@contoso.com")["title"], "Engineer");

    job.null_values = provisiond::NullPolicy::Remove;
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.requests, requests(0, 0, 1, 0), "{s:#?}");
    assert!(user(&h, "alice@contoso.com").get("title").is_none());
    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn a_group_deleted_in_the_target_is_recreated_when_its_members_change() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let job = job(&file.path);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    let ops = id(&group(&h, "Operations"));
    raw(
        reqwest::Method::DELETE,
        format!("{}/Groups/{ops}", h.base_url()),
        None,
    )
    .await;

    // Only a membership change: the PATCH finds the group gone.
    file.write(&edit(base_directory(), |d| {
        drop_member(d, "g-ops", "u-henry")
    }));
    let s = run(&job, &store, &client).await.summary;
    assert_ne!(s.status, CycleStatus::Failed, "{s:#?}");
    let s = run(&job, &store, &client).await.summary;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_converged(&job, &store, &client).await;
    assert_ne!(id(&group(&h, "Operations")), ops);
    assert_eq!(
        member_ids(&group(&h, "Operations")),
        ids_of(&h, &["alice@contoso.com"])
    );
}

#[tokio::test]
async fn scope_all_provisions_every_enabled_user_and_group() {
    let h = sandbox(vec![]).await;
    let file = DirFile::new(&base_directory());
    let mut job = job(&file.path);
    job.scope.mode = provisiond::ScopeMode::All;
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    let s = run_ok(&job, &store, &client).await;
    // Everyone but carol (disabled) and dave (soft-deleted); all three groups.
    assert_eq!(s.users, users(6, 0, 0, 0, 0, 2, 0), "{s:#?}");
    assert_eq!(s.groups, groups(3, 0, 0, 0, 0, 0), "{s:#?}");
    assert_eq!(
        member_ids(&group(&h, "Platform")),
        ids_of(&h, &["frank@contoso.com"])
    );
    assert_eq!(
        member_ids(&group(&h, "Engineering")),
        ids_of(&h, &["bob@contoso.com", "grace@contoso.com"]),
        "groups are not members"
    );
    assert_converged(&job, &store, &client).await;
}
