//! The planner over both phases: the lifecycle of objects and the convergence property.

use super::*;
use crate::mapping::Mappings;
use crate::model::Directory;
use crate::model::{Link, LinkIndex};
use crate::scope::OutOfScope;
use crate::scope::{self, ScopeMode, ScopeSettings};
use crate::source::file::parse_export;
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::collections::HashSet;
use std::path::Path;

fn env() -> EvalEnv {
    EvalEnv {
        now: chrono::Utc::now(),
    }
}

/// Apply a plan to the links as if the target accepted every request: the state a
/// successful export leaves behind.
fn simulate(plan: &Plan, links: &mut LinkIndex) {
    for a in &plan.actions {
        match a {
            Action::Provision(p) => {
                let mut exported: crate::attrs::Exported = (&p.mapped.values).into();
                if let Some(d) = created_digest(p) {
                    exported.set_digest(d);
                }
                links.of_mut(p.object_type).insert(&Link {
                    object_type: p.object_type,
                    source_id: p.source_id.clone(),
                    target_id: format!("t-{}", p.source_id),
                    display_name: p.display_name.clone(),
                    matching: p.mapped.matching.first().cloned().into(),
                    exported,
                    members: BTreeSet::new(),
                    created: true,
                });
            }
            Action::Update(u) => {
                if let Some(mut l) = links.of_mut(u.object_type).get_mut(&u.source_id) {
                    record_update(&mut l, u);
                }
            }
            Action::Disable(d) => {
                if let Some(mut l) = links.of_mut(ObjectType::User).get_mut(&d.source_id) {
                    l.exported.insert("active", Value::Bool(false));
                }
            }
            Action::Delete(d) => {
                links.of_mut(d.object_type).remove(&d.source_id);
            }
        }
    }
}

fn simulate_refs(plan: &ReferencePlan, links: &mut LinkIndex) {
    for u in &plan.updates {
        if let Some(mut l) = links.of_mut(ObjectType::User).get_mut(&u.source_id) {
            record_update(&mut l, u);
        }
    }
    for m in &plan.memberships {
        if let Some(mut l) = links.of_mut(ObjectType::Group).get_mut(&m.group_source_id) {
            l.members.extend(m.add.iter().cloned());
            for r in &m.remove {
                l.members.remove(r);
            }
        }
    }
}

fn run(dir: &Directory, settings: &ScopeSettings, links: &mut LinkIndex) -> (Plan, ReferencePlan) {
    let mappings = Mappings::generic_scim().unwrap();
    let scoped = scope::evaluate(dir, settings);
    let env = env();
    let ps = PlanSettings {
        null_values: NullPolicy::Leave,
        env: &env,
    };
    let plan = plan_objects(dir, &scoped, &mappings, links, &ps);
    simulate(&plan, links);
    let refs = plan_references(dir, &scoped, &mappings, links, &ps);
    simulate_refs(&refs, links);
    (plan, refs)
}

/// A generated directory with the scope it asks for (`_all`) and whether its read was
/// complete (`_partial`), as every cycle-shaped property test takes them.
fn scoped_input(raw: Value) -> (ScopeSettings, Directory) {
    let settings = ScopeSettings {
        mode: if raw["_all"] == json!(true) {
            ScopeMode::All
        } else {
            ScopeMode::Assigned
        },
        ..ScopeSettings::default()
    };
    let partial = raw["_partial"] == json!(true);
    let mut dir = parse(raw);
    dir.complete = !partial;
    (settings, dir)
}

/// Tests write only the lists they need (an export has all three) and may carry their own
/// settings in `_`-prefixed keys (an export has no other key).
fn parse(mut v: Value) -> Directory {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with('_'));
    }
    for key in ["users", "groups", "assignments"] {
        if v.get(key).is_none() {
            v[key] = Value::Array(Vec::new());
        }
    }
    parse_export(v.to_string().as_bytes(), Path::new("d.json")).unwrap()
}

#[test]
fn mapping_on_several_threads_keeps_the_order() {
    let objects: crate::model::ObjectMap = (0..10_000)
        .map(|i| SourceObject {
            id: format!("u{i:05}"),
            object_type: ObjectType::User,
            attributes: Default::default(),
            members: vec![],
        })
        .collect();
    let ids = map_all(&objects, |i, id, o| (i, id.clone(), o.id.len()));
    let expected: Vec<(usize, String, usize)> = objects
        .keys()
        .enumerate()
        .map(|(i, k)| (i, k.clone(), 6))
        .collect();
    assert_eq!(ids, expected);
}

/// Enough members in all to plan memberships on several threads: the same changes and
/// problems, in the same order, as each group planned alone (one group is few members,
/// planned on the calling thread).
#[test]
fn memberships_planned_on_several_threads_are_each_groups_own_in_order() {
    // 300 groups of 80 members (24,000 in all), their members picked by `step`, and a member
    // that does not exist in every `ghosts`-th group.
    let directory = |step: usize, ghosts: usize| -> Value {
        let users: Vec<Value> = (0..1_500)
            .map(|i| json!({"id": format!("u{i:04}"), "userPrincipalName": format!("u{i}@x")}))
            .collect();
        let groups: Vec<Value> = (0..300)
            .map(|g| {
                let mut members: Vec<String> = (0..80)
                    .map(|k| format!("u{:04}", (g * step + k * (step + 2)) % 1_500))
                    .collect();
                if g % ghosts == 0 {
                    members.push(format!("ghost{g}"));
                }
                json!({"id": format!("g{g:03}"), "displayName": format!("G{g}"), "members": members})
            })
            .collect();
        json!({"users": users, "groups": groups, "assignments": []})
    };
    let settings = ScopeSettings {
        mode: ScopeMode::All,
        ..ScopeSettings::default()
    };
    let mut links = LinkIndex::default();
    let (plan, _) = run(&parse(directory(7, 17)), &settings, &mut links);
    assert!(!plan.actions.is_empty());
    // Other members in every group: removals and additions.
    let dir = parse(directory(11, 13));
    let mappings = Mappings::generic_scim().unwrap();
    let scoped = scope::evaluate(&dir, &settings);
    let all = plan_memberships(&dir, &scoped, &mappings, &links, None);
    assert_eq!(all.memberships.len(), 300);
    let (mut one_by_one, mut problems) = (Vec::new(), Vec::new());
    for id in dir.groups.keys() {
        let only: std::collections::BTreeSet<String> = [id.clone()].into();
        let one = plan_memberships(&dir, &scoped, &mappings, &links, Some(&only));
        one_by_one.extend(one.memberships);
        problems.extend(one.problems);
    }
    assert_eq!(all.memberships, one_by_one);
    assert_eq!(all.problems.len(), 24, "{:?}", all.problems);
    assert_eq!(all.problems, problems);
}

#[test]
fn lifecycle_create_update_disable_delete() {
    let settings = ScopeSettings::default();
    let mut links = LinkIndex::default();
    let d1 = parse(json!({
        "users": [{"id":"a","userPrincipalName":"a@x","givenName":"A","manager":"b"},
                  {"id":"b","userPrincipalName":"b@x"}],
        "groups": [{"id":"g","displayName":"G","members":["a","b","ghost"]}],
        "assignments": [{"principalId":"g"}]}));
    let (p, r) = run(&d1, &settings, &mut links);
    assert_eq!(p.actions.len(), 3, "{p:#?}");
    assert!(p.actions.iter().all(|a| matches!(a, Action::Provision(_))));
    assert_eq!(r.memberships.len(), 1);
    assert_eq!(r.memberships[0].add, vec!["t-a", "t-b"]);
    assert_eq!(r.updates.len(), 1, "a's manager resolves to b's target id");
    assert_eq!(r.updates[0].changes[0].new, Some(json!("t-b")));
    assert!(r.problems.iter().any(|p| p.reason.contains("ghost")));

    // Same directory again: nothing to do.
    let (p, r) = run(&d1, &settings, &mut links);
    assert!(p.is_empty() && r.is_empty(), "{p:#?} {r:#?}");
    assert_eq!(p.unchanged_users, 2);

    // b leaves the group (out of scope → disabled, membership removed); a renamed.
    let d2 = parse(json!({
        "users": [{"id":"a","userPrincipalName":"a@x","givenName":"Alice","manager":"b"},
                  {"id":"b","userPrincipalName":"b@x"}],
        "groups": [{"id":"g","displayName":"G","members":["a"]}],
        "assignments": [{"principalId":"g"}]}));
    let (p, r) = run(&d2, &settings, &mut links);
    let kinds: Vec<_> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::Update(u) => format!("update {}", u.source_id),
            Action::Disable(d) => format!("disable {}", d.source_id),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, vec!["disable b", "update a"]);
    assert_eq!(r.memberships[0].remove, vec!["t-b"]);
    assert!(r.updates.is_empty(), "manager out of scope: left alone");

    // b deleted from the source: deleted in the target; g unassigned: deleted.
    let d3 = parse(json!({
        "users": [{"id":"a","userPrincipalName":"a@x","givenName":"Alice"}],
        "groups": [{"id":"g","displayName":"G","members":["a"]}],
        "assignments": [{"principalId":"a"}]}));
    let (p, _) = run(&d3, &settings, &mut links);
    let deletes: Vec<_> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete(d) => Some(d.source_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deletes, vec!["b", "g"]);
}

#[test]
fn an_incomplete_read_never_deprovisions() {
    let settings = ScopeSettings::default();
    let mut links = LinkIndex::default();
    let full = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "assignments":[{"principalId":"a"},{"principalId":"b"}]}),
    );
    run(&full, &settings, &mut links);
    let mut partial =
        parse(json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[]}));
    partial.complete = false;
    let (p, _) = run(&partial, &settings, &mut links);
    assert!(p.actions.iter().all(|a| !a.is_deprovisioning()), "{p:#?}");
    assert_eq!(p.withheld_deprovisions, 2);
}

#[test]
fn duplicates_and_missing_matching_values_are_skipped() {
    let d = parse(json!({"users":[
        {"id":"a","userPrincipalName":"Same@x"},{"id":"b","userPrincipalName":"same@x"},
        {"id":"c"}],
        "assignments":[{"principalId":"a"},{"principalId":"b"},{"principalId":"c"}]}));
    let mut links = LinkIndex::default();
    let (p, _) = run(&d, &ScopeSettings::default(), &mut links);
    assert!(p.actions.is_empty(), "{p:#?}");
    let codes: Vec<_> = p.problems.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(
        codes,
        vec![
            "DuplicateSourceEntries",
            "DuplicateSourceEntries",
            "MissingMatchingValue"
        ]
    );
}

#[test]
fn rejected_objects_are_never_taken_as_deleted() {
    let mut links = LinkIndex::default();
    let d1 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[{"principalId":"a"}]}),
    );
    run(&d1, &ScopeSettings::default(), &mut links);
    let d2 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"a"}],"assignments":[{"principalId":"a"}]}),
    );
    let (p, _) = run(&d2, &ScopeSettings::default(), &mut links);
    assert!(p.actions.is_empty(), "{p:#?}");
}

#[test]
fn an_object_without_id_withholds_deletion_by_absence() {
    let mut links = LinkIndex::default();
    let d1 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "assignments":[{"principalId":"a"},{"principalId":"b"}]}),
    );
    run(&d1, &ScopeSettings::default(), &mut links);
    // b's anchor became unreadable: it arrives without an id.
    let d2 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"userPrincipalName":"b@x"}],
        "assignments":[{"principalId":"a"},{"principalId":"b"}]}),
    );
    let (p, _) = run(&d2, &ScopeSettings::default(), &mut links);
    assert!(p.actions.is_empty(), "{p:#?}");
    assert_eq!(p.withheld_deprovisions, 1);
}

#[test]
fn a_group_of_unknown_members_reports_a_bounded_reason() {
    let mut links = LinkIndex::default();
    let members: Vec<String> = (0..20_000).map(|i| format!("unknown-{i:06}")).collect();
    let d = parse(
        json!({"groups":[{"id":"g","displayName":"G","members":members}],
        "assignments":[{"principalId":"g"}]}),
    );
    let (_, r) = run(&d, &ScopeSettings::default(), &mut links);
    let p = r
        .problems
        .iter()
        .find(|p| p.code == "InvalidMember")
        .unwrap_or_else(|| panic!("{r:#?}"));
    assert!(p.reason.len() < 1_000, "{} bytes", p.reason.len());
    assert!(p.reason.contains("unknown-000000"), "{}", p.reason);
    assert!(p.reason.ends_with("and 19990 more"), "{}", p.reason);
}

#[test]
fn a_user_without_id_keeps_her_account_and_her_memberships() {
    let mut links = LinkIndex::default();
    let d1 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
        "assignments":[{"principalId":"g"}]}),
    );
    run(&d1, &ScopeSettings::default(), &mut links);
    assert_eq!(links.groups().get("g").unwrap().members().count(), 2);
    // b's id became unreadable: she arrives without one, still listed in g.
    let d2 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"userPrincipalName":"b@x"}],
        "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
        "assignments":[{"principalId":"g"}]}),
    );
    let (p, r) = run(&d2, &ScopeSettings::default(), &mut links);
    assert!(p.actions.is_empty(), "{p:#?}");
    assert!(r.memberships.is_empty(), "{r:#?}");
    assert_eq!(links.groups().get("g").unwrap().members().count(), 2);
    assert!(
        !r.problems.iter().any(|p| p.code == "InvalidMember"),
        "{r:#?}"
    );
    // Once her id reads again and she has left g, her membership goes.
    let d3 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "groups":[{"id":"g","displayName":"G","members":["a"]}],
        "assignments":[{"principalId":"g"},{"principalId":"b"}]}),
    );
    let (_, r) = run(&d3, &ScopeSettings::default(), &mut links);
    assert_eq!(r.memberships.len(), 1, "{r:#?}");
    assert_eq!(r.memberships[0].remove.len(), 1, "{r:#?}");
}

#[test]
fn a_rejected_group_or_assignment_disables_nobody_and_keeps_memberships() {
    let mut links = LinkIndex::default();
    let d1 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "groups":[{"id":"g","displayName":"G","members":["a","b"]},{"id":"h","displayName":"H","members":["b"]}],
        "assignments":[{"principalId":"g"},{"principalId":"h"}]}),
    );
    run(&d1, &ScopeSettings::default(), &mut links);
    // h is unreadable this cycle (a bad member entry): b's scope through h is unknown.
    let d2 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "groups":[{"id":"g","displayName":"G","members":["a"]},{"id":"h","displayName":"H","members":[7]}],
        "assignments":[{"principalId":"g"},{"principalId":"h"}]}),
    );
    let (p, r) = run(&d2, &ScopeSettings::default(), &mut links);
    assert!(p.actions.is_empty(), "{p:#?}");
    assert!(r.memberships.iter().all(|m| m.add.is_empty()));
    // A bad assignment entry: the same.
    let d3 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
        "assignments":[{"principalId":"g"},{"role":"User"}]}),
    );
    let (p, _) = run(&d3, &ScopeSettings::default(), &mut links);
    assert!(p.actions.iter().all(|a| !a.is_deprovisioning()), "{p:#?}");
}

#[test]
fn a_rejected_linked_user_keeps_its_group_memberships() {
    let mut links = LinkIndex::default();
    let d1 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"}],
        "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
        "assignments":[{"principalId":"g"}]}),
    );
    run(&d1, &ScopeSettings::default(), &mut links);
    assert_eq!(links.groups().get("g").unwrap().members().count(), 2);
    // b is duplicated in this export: rejected, but still there.
    let d2 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"},{"id":"b","userPrincipalName":"b@x"},{"id":"b"}],
        "groups":[{"id":"g","displayName":"G","members":["a","b"]}],
        "assignments":[{"principalId":"g"}]}),
    );
    let (p, r) = run(&d2, &ScopeSettings::default(), &mut links);
    assert!(p.actions.is_empty(), "{p:#?}");
    assert!(r.memberships.is_empty(), "{r:#?}");
    assert!(
        !r.problems.iter().any(|p| p.code == "InvalidMember"),
        "{r:#?}"
    );
}

#[test]
fn null_values_follow_the_policy() {
    let mut links = LinkIndex::default();
    let d1 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x","jobTitle":"T"}],"assignments":[{"principalId":"a"}]}),
    );
    run(&d1, &ScopeSettings::default(), &mut links);
    let d2 = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[{"principalId":"a"}]}),
    );
    let (p, _) = run(&d2, &ScopeSettings::default(), &mut links);
    assert!(p.actions.is_empty(), "Entra's default leaves nulls alone");
    let mappings = Mappings::generic_scim().unwrap();
    let scoped = scope::evaluate(&d2, &ScopeSettings::default());
    let env = env();
    let ps = PlanSettings {
        null_values: NullPolicy::Remove,
        env: &env,
    };
    let p = plan_objects(&d2, &scoped, &mappings, &links, &ps);
    match &p.actions[..] {
        [Action::Update(u)] => assert_eq!(
            u.changes,
            vec![Change {
                path: "title".into(),
                old: Some(json!("T")),
                new: None
            }]
        ),
        other => panic!("{other:#?}"),
    }
}

#[test]
fn re_enabling_sets_active_true() {
    let mut links = LinkIndex::default();
    let on = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x"}],"assignments":[{"principalId":"a"}]}),
    );
    let off = parse(
        json!({"users":[{"id":"a","userPrincipalName":"a@x","accountEnabled":false}],"assignments":[{"principalId":"a"}]}),
    );
    run(&on, &ScopeSettings::default(), &mut links);
    let (p, _) = run(&off, &ScopeSettings::default(), &mut links);
    assert!(matches!(&p.actions[..], [Action::Disable(_)]));
    let (p, _) = run(&off, &ScopeSettings::default(), &mut links);
    assert!(p.is_empty(), "an already disabled user stays unchanged");
    let (p, _) = run(&on, &ScopeSettings::default(), &mut links);
    match &p.actions[..] {
        [Action::Update(u)] => assert_eq!(u.changes[0].new, Some(json!(true))),
        other => panic!("{other:#?}"),
    }
}

fn arb_directory() -> impl Strategy<Value = Value> {
    let user = (
        0..8usize,
        0..5usize,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0..3usize,
        0..9usize,
    );
    let group = (
        0..4usize,
        proptest::collection::btree_set(0..10usize, 0..6),
        any::<bool>(),
    );
    let assignment = (0..12usize, any::<bool>());
    (
        proptest::collection::vec(user, 0..8),
        proptest::collection::vec(group, 0..4),
        proptest::collection::vec(assignment, 0..10),
        any::<bool>(),
        // One read in four is incomplete; one in six carries an object with no id.
        0..4usize,
        0..6usize,
    )
        .prop_map(|(users, groups, assignments, all, partial, idless)| {
            let users: Vec<Value> = users
                .into_iter()
                .map(|(id, upn, enabled, deleted, titled, name, manager)| {
                    let mut u = json!({"id": format!("u{id}"), "userPrincipalName": format!("user{upn}@x"),
                        "accountEnabled": enabled || id % 2 == 0, "givenName": format!("n{name}")});
                    if deleted && id % 3 == 0 {
                        u["deletedDateTime"] = json!("2026-01-01T00:00:00Z");
                    }
                    if titled {
                        u["jobTitle"] = json!("t");
                    }
                    if manager < 8 {
                        u["manager"] = json!(format!("u{manager}"));
                    }
                    u
                })
                .collect();
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(id, members, named)| {
                    let members: Vec<String> = members.into_iter().map(|m| if m < 8 { format!("u{m}") } else { format!("g{}", m - 8) }).collect();
                    json!({"id": format!("g{id}"), "displayName": if named { format!("G{id}") } else { format!("Group {id}") }, "members": members})
                })
                .collect();
            let assignments: Vec<Value> = assignments
                .into_iter()
                .map(|(p, default)| {
                    let principal = if p < 8 { format!("u{p}") } else { format!("g{}", p - 8) };
                    json!({"principalId": principal, "role": if default { "Default Access" } else { "User" }})
                })
                .collect();
            let mut users = users;
            if idless == 0 {
                users.push(json!({"userPrincipalName": "no-id@x"}));
            }
            json!({"users": users, "groups": groups, "assignments": assignments, "_all": all,
                   "_partial": partial == 0})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The planner reads the scope's decisions and roles by position when the scope was
    /// decided on the very objects it plans (a cycle), by id otherwise (a copy of them): the
    /// two give the same plan.
    #[test]
    fn decisions_by_position_plan_as_decisions_by_id(
        first in arb_directory(),
        second in arb_directory(),
    ) {
        let settings = ScopeSettings::default();
        let mut links = LinkIndex::default();
        run(&parse(first), &settings, &mut links);
        let dir = parse(second);
        let scoped = scope::evaluate(&dir, &settings);
        let mut copy = dir.clone();
        copy.users = dir.users.values().cloned().collect();
        copy.groups = dir.groups.values().cloned().collect();
        prop_assert!(scoped.of(ObjectType::User).in_order_of(&dir.users).is_some());
        prop_assert!(scoped.of(ObjectType::User).in_order_of(&copy.users).is_none());
        prop_assert!(scoped.roles.in_order_of(&copy.users).is_none());
        let mappings = Mappings::generic_scim().unwrap();
        let env = env();
        let ps = PlanSettings { null_values: NullPolicy::Leave, env: &env };
        let by_position = plan_objects(&dir, &scoped, &mappings, &links, &ps);
        let by_id = plan_objects(&copy, &scoped, &mappings, &links, &ps);
        prop_assert_eq!(format!("{:?}", by_position.actions), format!("{:?}", by_id.actions));
        prop_assert_eq!(&by_position.problems, &by_id.problems);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever sequence of directories the source goes through, applying each plan reaches
    /// the desired state, and planning again right after yields nothing.
    #[test]
    fn applying_a_plan_converges(seq in proptest::collection::vec(arb_directory(), 1..4)) {
        let mut links = LinkIndex::default();
        for raw in seq {
            let (settings, dir) = scoped_input(raw);
            let before = links.clone();
            let (plan, refs) = run(&dir, &settings, &mut links);
            // Only linked objects are ever changed or removed; only unlinked ones provisioned.
            for a in &plan.actions {
                let (ty, id) = match a {
                    Action::Provision(p) => (p.object_type, &p.source_id),
                    Action::Update(u) => (u.object_type, &u.source_id),
                    Action::Disable(d) => (ObjectType::User, &d.source_id),
                    Action::Delete(d) => (d.object_type, &d.source_id),
                };
                let linked = before.get(ty, id).is_some();
                prop_assert_eq!(linked, !matches!(a, Action::Provision(_)), "{:?}", a);
            }
            // An incomplete read never deprovisions, and never removes a member.
            if !dir.complete {
                prop_assert!(plan.actions.iter().all(|a| !a.is_deprovisioning()), "{:#?}", plan.actions);
                prop_assert!(refs.memberships.iter().all(|m| m.remove.is_empty()));
            }
            // An object rejected without an id may be any linked one: nothing is deleted
            // for being absent.
            if dir.rejected.iter().any(|r| r.id.is_none() && r.object_type == Some(ObjectType::User)) {
                for a in &plan.actions {
                    prop_assert!(!matches!(a, Action::Delete(d) if d.object_type == ObjectType::User), "{:?}", a);
                }
            }
            if !dir.complete {
                // Converging is for complete reads; the next iteration starts from here.
                continue;
            }
            let (again, refs) = run(&dir, &settings, &mut links);
            prop_assert!(again.is_empty(), "second plan not empty: {:#?}", again.actions);
            prop_assert!(refs.is_empty(), "second reference plan not empty: {:#?}", refs);
            // Desired state: every in-scope user without a problem is linked and active;
            // every linked out-of-scope user is disabled; links exist only for source objects.
            let scoped = scope::evaluate(&dir, &settings);
            let troubled: HashSet<String> = again.problems.iter().filter_map(|p| p.id.clone()).collect();
            let assignment_known = !dir.rejected.iter().any(|r| r.object_type != Some(ObjectType::User));
            for id in dir.users.keys() {
                let link = links.users().get(id);
                if scoped.in_scope(ObjectType::User, id) {
                    if !troubled.contains(id) {
                        prop_assert!(link.is_some_and(|l| !l.disabled()), "user {id} should be active");
                    }
                } else if let Some(l) = link {
                    let unknown = !assignment_known
                        && matches!(scoped.decision(ObjectType::User, id),
                            Some(Err(OutOfScope::NotAssigned | OutOfScope::ExcludedRole(_))));
                    prop_assert!(l.disabled() || unknown, "user {id} should be disabled");
                }
            }
            let rejected: HashSet<&str> = dir.rejected.iter().filter_map(|r| r.id.as_deref()).collect();
            let idless = dir.rejected.iter().any(|r| r.id.is_none() && r.object_type == Some(ObjectType::User));
            for id in links.users().keys() {
                prop_assert!(dir.users.contains_key(id) || rejected.contains(id) || idless);
            }
            if !assignment_known {
                // Group scope and membership are undecided while a group or assignment is unreadable.
                continue;
            }
            for (id, l) in links.groups().iter() {
                if rejected.contains(id) {
                    continue;
                }
                prop_assert!(scoped.in_scope(ObjectType::Group, id));
                let desired: BTreeSet<String> = dir.groups[id].members.iter()
                    .filter(|m| scoped.in_scope(ObjectType::User, m))
                    .filter_map(|m| links.users().get(m).map(|u| u.target_id().to_string()))
                    .collect();
                // Rejected (unreadable) users keep whatever membership they had; while a user
                // has no readable id, any linked user missing from the directory may be her.
                let unreadable: BTreeSet<String> = links.users().iter()
                    .filter(|(id, _)| rejected.contains(id)
                        || (idless && !dir.users.contains_key(id)))
                    .map(|(_, u)| u.target_id().to_string())
                    .collect();
                let members: BTreeSet<String> = l.members().map(str::to_string)
                    .filter(|m| !unreadable.contains(m)).collect();
                prop_assert_eq!(&members, &desired);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Skipping the objects whose inputs did not change gives the plan that mapping every
    /// object gives, whatever the directories, their changes and the null policy: the links
    /// carry the digests the skipping plans recorded from one cycle to the next, and each
    /// directory is planned twice (the second time, a no-change cycle).
    #[test]
    fn skipping_unchanged_objects_keeps_the_plan(
        seq in proptest::collection::vec((arb_directory(), any::<bool>()), 1..5),
    ) {
        let mappings = Mappings::generic_scim().unwrap();
        let mut links = LinkIndex::default();
        let env = env();
        for (raw, remove_nulls) in seq {
            let (settings, dir) = scoped_input(raw);
            let nulls = if remove_nulls { NullPolicy::Remove } else { NullPolicy::Leave };
            let ps = PlanSettings { null_values: nulls, env: &env };
            for _ in 0..2 {
                let scoped = scope::evaluate(&dir, &settings);
                let plain = plan_objects(&dir, &scoped, &mappings, &links, &ps);
                let skip = Skipping::new(&mappings, nulls, []);
                let mut skipping = plan_objects_skipping(&dir, &scoped, &mappings, &links, &ps, &skip);
                let digests = std::mem::take(&mut skipping.digests);
                prop_assert!(skipping.unmapped <= skipping.unchanged_users + skipping.unchanged_groups);
                skipping.unmapped = 0;
                prop_assert_eq!(&plain, &skipping);
                for (ty, id, d) in digests {
                    prop_assert!(links.get(ty, &id).is_some(), "a digest for an unlinked object");
                    if let Some(mut l) = links.of_mut(ty).get_mut(&id) {
                        l.exported.set_digest(d);
                    }
                }
                // Carried out as the cycle does: the creates and updates record the
                // digests the cycle stamped, which the next plan must find as good as a
                // mapping (the plan above compares the two).
                let mut stamped = plain;
                skip.stamp(&mut stamped.actions, &dir, &scoped);
                simulate(&stamped, &mut links);
                let refs = plan_references(&dir, &scoped, &mappings, &links, &ps);
                simulate_refs(&refs, &mut links);
            }
        }
    }

    /// After an initial cycle (every object mapped, the creates and updates carrying the
    /// digests the cycle stamps, then the references) the next cycle on the same directory
    /// maps no linked object and has no digest left to record: every linked in-scope object
    /// is found unchanged by its digest, and the plan is the one mapping every object gives.
    #[test]
    fn the_cycle_after_an_initial_one_maps_nothing(
        raw in arb_directory(),
        remove_nulls in any::<bool>(),
    ) {
        let mappings = Mappings::generic_scim().unwrap();
        let mut links = LinkIndex::default();
        let env = env();
        let (settings, mut dir) = scoped_input(raw);
        dir.complete = true;
        let nulls = if remove_nulls { NullPolicy::Remove } else { NullPolicy::Leave };
        let ps = PlanSettings { null_values: nulls, env: &env };
        let scoped = scope::evaluate(&dir, &settings);
        let skip = Skipping::new(&mappings, nulls, []);
        let mut initial = plan_objects(&dir, &scoped, &mappings, &links, &ps);
        skip.stamp(&mut initial.actions, &dir, &scoped);
        simulate(&initial, &mut links);
        let refs = plan_references(&dir, &scoped, &mappings, &links, &ps);
        simulate_refs(&refs, &mut links);

        let plain = plan_objects(&dir, &scoped, &mappings, &links, &ps);
        let mut next = plan_objects_skipping(&dir, &scoped, &mappings, &links, &ps, &skip);
        prop_assert!(next.digests.is_empty(), "digests to record: {:?}", next.digests);
        prop_assert!(next.actions.is_empty(), "{:#?}", next.actions);
        let linked_in_scope = links
            .users()
            .keys()
            .filter(|id| scoped.in_scope(ObjectType::User, id))
            .chain(links.groups().keys().filter(|id| scoped.in_scope(ObjectType::Group, id)))
            .count() as u64;
        prop_assert_eq!(next.unmapped, linked_in_scope);
        next.unmapped = 0;
        prop_assert_eq!(&plain, &next);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Deferring the provisions (planning keeps only their matching hashes, the export maps
    /// them a chunk at a time) gives the plan that mapping them at once gives: the same
    /// actions, each type's provisions in the same order, the same problems and counts; and
    /// the references planned in pieces (memberships, then updates a chunk of users at a
    /// time) are the references planned whole.
    #[test]
    fn deferring_provisions_keeps_the_plan(
        seq in proptest::collection::vec((arb_directory(), any::<bool>()), 1..4),
        chunk in 1..4usize,
    ) {
        let mappings = Mappings::generic_scim().unwrap();
        let mut links = LinkIndex::default();
        let env = env();
        for (raw, remove_nulls) in seq {
            let (settings, dir) = scoped_input(raw);
            let nulls = if remove_nulls { NullPolicy::Remove } else { NullPolicy::Leave };
            let ps = PlanSettings { null_values: nulls, env: &env };
            let scoped = scope::evaluate(&dir, &settings);
            let skip = Skipping::new(&mappings, nulls, []);
            let whole = plan_objects_skipping(&dir, &scoped, &mappings, &links, &ps, &skip);
            let mut deferring = plan_objects_deferring(&dir, &scoped, &mappings, &links, &ps, &skip);
            prop_assert!(deferring.actions.iter().all(|a| !matches!(a, Action::Provision(_))));
            let deferred = std::mem::take(&mut deferring.deferred);
            let made: Vec<Action> = deferred
                .chunks(chunk)
                .flat_map(|c| provisions(&dir, &scoped, &mappings, &ps, c))
                .collect();
            prop_assert_eq!(made.len(), deferred.len());
            let (provisions_whole, rest): (Vec<Action>, Vec<Action>) = whole
                .actions
                .iter()
                .cloned()
                .partition(|a| matches!(a, Action::Provision(_)));
            prop_assert_eq!(&made, &provisions_whole);
            prop_assert_eq!(&deferring.actions, &rest);
            let mut whole = whole;
            whole.actions = rest;
            prop_assert_eq!(&deferring, &whole);
            simulate(&whole, &mut links);
            let made_plan = Plan { actions: made, ..Plan::default() };
            simulate(&made_plan, &mut links);
            let refs = plan_references(&dir, &scoped, &mappings, &links, &ps);
            // The references in pieces: the memberships alone, the updates a chunk at a time.
            let members = plan_memberships(&dir, &scoped, &mappings, &links, None);
            prop_assert!(members.updates.is_empty());
            prop_assert_eq!(&members.memberships, &refs.memberships);
            prop_assert_eq!(&members.problems, &refs.problems);
            let mut updates = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let (mut some, next) = plan_reference_updates(
                    &dir, &scoped, &mappings, &links, &ps, after.as_deref(), chunk,
                );
                updates.append(&mut some);
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            prop_assert_eq!(&updates, &refs.updates);
            simulate_refs(&refs, &mut links);
        }
    }
}

/// A clash between a deferred provision and another object names the value, as when the
/// provision is mapped at once.
#[test]
fn a_deferred_duplicate_names_its_value() {
    let dir = parse(json!({
        "users": [
            {"id": "a", "userPrincipalName": "same@x", "accountEnabled": true},
            {"id": "b", "userPrincipalName": "SAME@x", "accountEnabled": true},
            {"id": "c", "userPrincipalName": "other@x", "accountEnabled": true},
        ],
    }));
    let settings = ScopeSettings {
        mode: ScopeMode::All,
        ..ScopeSettings::default()
    };
    let scoped = scope::evaluate(&dir, &settings);
    let mappings = Mappings::generic_scim().unwrap();
    let env = env();
    let ps = PlanSettings {
        null_values: NullPolicy::Leave,
        env: &env,
    };
    let links = LinkIndex::default();
    let whole = plan_objects(&dir, &scoped, &mappings, &links, &ps);
    let deferring = plan_objects_deferring(&dir, &scoped, &mappings, &links, &ps, &Skipping::off());
    assert_eq!(deferring.problems, whole.problems);
    assert_eq!(deferring.problems.len(), 2, "{:#?}", deferring.problems);
    assert!(
        deferring.problems[0].reason.contains("same@x"),
        "{:#?}",
        deferring.problems
    );
    assert_eq!(
        deferring.deferred,
        vec![(ObjectType::User, "c".to_string())]
    );
}

/// A delta cycle plans the whole directory when its plan provisions (`Plan::provisions`): a
/// provision the cycle's planner defers is one all the same, or a new user sharing a matching
/// value with a linked user outside the view would be created (or adopt her account) instead
/// of being reported as a duplicate.
#[test]
fn a_deferred_provision_counts_as_one() {
    let dir = parse(json!({
        "users": [{"id": "new", "userPrincipalName": "new@x", "accountEnabled": true}],
    }));
    let settings = ScopeSettings {
        mode: ScopeMode::All,
        ..ScopeSettings::default()
    };
    let scoped = scope::evaluate(&dir, &settings);
    let mappings = Mappings::generic_scim().unwrap();
    let env = env();
    let ps = PlanSettings {
        null_values: NullPolicy::Leave,
        env: &env,
    };
    let links = LinkIndex::default();
    let whole = plan_objects(&dir, &scoped, &mappings, &links, &ps);
    let deferring = plan_objects_deferring(&dir, &scoped, &mappings, &links, &ps, &Skipping::off());
    assert!(whole.provisions());
    assert_eq!(deferring.deferred.len(), 1);
    assert!(deferring.provisions(), "{deferring:#?}");
}

#[test]
fn a_no_change_cycle_maps_nothing_and_a_change_is_still_seen() {
    let mappings = Mappings::generic_scim().unwrap();
    let env = env();
    let ps = PlanSettings {
        null_values: NullPolicy::Leave,
        env: &env,
    };
    let skip = Skipping::new(&mappings, NullPolicy::Leave, []);
    let users = |title: &str| {
        parse(json!({"users":[
            {"id":"a","userPrincipalName":"a@x","jobTitle":title,"manager":"b"},
            {"id":"b","userPrincipalName":"b@x"}],
            "assignments":[{"principalId":"a"},{"principalId":"b"}]}))
    };
    let mut links = LinkIndex::default();
    let plan_with = |dir: &Directory, links: &mut LinkIndex| {
        let scoped = scope::evaluate(dir, &ScopeSettings::default());
        let mut p = plan_objects_skipping(dir, &scoped, &mappings, links, &ps, &skip);
        for (ty, id, d) in std::mem::take(&mut p.digests) {
            links
                .of_mut(ty)
                .get_mut(&id)
                .unwrap()
                .exported
                .set_digest(d);
        }
        simulate(&p, links);
        let refs = plan_references(dir, &scoped, &mappings, links, &ps);
        simulate_refs(&refs, links);
        p
    };
    let t = users("T");
    let first = plan_with(&t, &mut links);
    assert_eq!((first.actions.len(), first.unmapped), (2, 0));
    // Linked now but without digests: mapped once more (recording them), then not at all.
    let second = plan_with(&t, &mut links);
    assert_eq!((second.actions.len(), second.unmapped), (0, 0));
    let third = plan_with(&t, &mut links);
    assert_eq!((third.actions.len(), third.unmapped), (0, 2));
    let u = users("U");
    let changed = plan_with(&u, &mut links);
    assert_eq!(changed.unmapped, 1, "only b is skipped");
    match &changed.actions[..] {
        [Action::Update(up)] => assert_eq!(up.changes[0].new, Some(json!("U"))),
        other => panic!("{other:#?}"),
    }
    // Back to the old title: a's link now holds U, so the old digest must not vouch for it.
    let back = plan_with(&t, &mut links);
    assert!(
        matches!(&back.actions[..], [Action::Update(_)]),
        "{back:#?}"
    );
}

/// What changed between two directories, as a delta source reports it: the users and groups
/// that differ, and the members a changed group gained or lost.
fn changes_between(a: &Directory, b: &Directory) -> crate::model::Changes {
    let mut c = crate::model::Changes::default();
    for id in a.users.keys().chain(b.users.keys()) {
        if a.users.get(id) != b.users.get(id) {
            c.users.insert(id.clone());
        }
    }
    for id in a.groups.keys().chain(b.groups.keys()) {
        let (ga, gb) = (a.groups.get(id), b.groups.get(id));
        if ga != gb {
            c.groups.insert(id.clone());
            let ma: BTreeSet<&String> = ga.map(|g| g.members.iter().collect()).unwrap_or_default();
            let mb: BTreeSet<&String> = gb.map(|g| g.members.iter().collect()).unwrap_or_default();
            c.users
                .extend(ma.symmetric_difference(&mb).map(|m| (*m).clone()));
        }
    }
    c
}

/// The links of `dir`'s view that a delta cycle loads (`model::view::link_ids`).
fn links_of_view(links: &LinkIndex, dir: &Directory, focus: &crate::model::Changes) -> LinkIndex {
    let (users, groups) = crate::model::view::link_ids(dir, focus);
    let mut out = LinkIndex::default();
    for id in users {
        if let Some(l) = links.users().get(id) {
            out.insert(&l.to_link());
        }
    }
    for id in groups {
        if let Some(l) = links.groups().get(id) {
            out.insert(&l.to_link());
        }
    }
    out
}

/// The check of `the_delta_path_plans_what_the_full_path_plans` for one pair of directories
/// (`d2` after a few changes to `d1`): whether the delta path was compared (`false`: the
/// cycle would plan the whole directory, a duplicate or an object to provision).
fn delta_plans_the_full_plan(
    d1: &Directory,
    d2: &Directory,
    settings: &ScopeSettings,
) -> Result<bool, TestCaseError> {
    delta_plans_the_full_plan_given(d1, d2, settings, None)
}

/// [`delta_plans_the_full_plan`] with the focus and view a source gave (`given`: the LDAP
/// source's delta tests) instead of those the changes between `d1` and `d2` make.
pub(crate) fn delta_plans_the_full_plan_given(
    d1: &Directory,
    d2: &Directory,
    settings: &ScopeSettings,
    given: Option<(&crate::model::Changes, &Directory)>,
) -> Result<bool, TestCaseError> {
    let mappings = Mappings::generic_scim().unwrap();
    let env = env();
    let ps = PlanSettings {
        null_values: NullPolicy::Leave,
        env: &env,
    };
    // Links in step with d1; a cycle that finds duplicates makes the next one full.
    let mut links = LinkIndex::default();
    let mut last = Plan::default();
    for _ in 0..3 {
        last = run(d1, settings, &mut links).0;
    }
    if last
        .problems
        .iter()
        .any(|p| p.code == "DuplicateSourceEntries")
    {
        return Ok(false);
    }

    let (focus, view) = match given {
        Some((focus, view)) => (focus.clone(), view.clone()),
        None => {
            // The sources hand the view their snapshots' B-trees.
            let mut focus = changes_between(d1, d2);
            let sorted = |d: &Directory| {
                let mut a = d.assignments.clone();
                a.sort_by(|x, y| (&x.principal_id, &x.role).cmp(&(&y.principal_id, &y.role)));
                a
            };
            crate::model::view::assignment_changes(
                &sorted(d1),
                &sorted(d2),
                &d1.groups.to_tree(),
                &d2.groups.to_tree(),
                &mut focus,
            );
            let references = vec!["manager".to_string()];
            let view = crate::model::view::view_of(d2, &focus, &references);
            (focus, view)
        }
    };
    let mut view_links = links_of_view(&links, &view, &focus);
    let full_scope = scope::evaluate(d2, settings);
    let view_scope = scope::evaluate(&view, settings);
    let full = plan_objects(d2, &full_scope, &mappings, &links, &ps);
    let delta = plan_objects(&view, &view_scope, &mappings, &view_links, &ps);
    if delta.provisions() {
        // The cycle plans the whole directory: its plan is `full` by construction (a new
        // object may share a matching value with one outside the view).
        return Ok(false);
    }
    prop_assert_eq!(&delta.actions, &full.actions);
    for p in &delta.problems {
        prop_assert!(
            full.problems.contains(p),
            "{:?} not in {:#?}",
            p,
            full.problems
        );
    }
    prop_assert_eq!(delta.withheld_deprovisions, full.withheld_deprovisions);
    let mut full_links = links.clone();
    simulate(&full, &mut full_links);
    simulate(&delta, &mut view_links);
    let groups = crate::model::view::membership_groups(&view, &focus);
    let full_refs = plan_references(d2, &full_scope, &mappings, &full_links, &ps);
    // As the cycle plans them: the memberships of the view's membership groups, then the
    // reference updates of the view's users.
    let mut delta_refs =
        plan_memberships(&view, &view_scope, &mappings, &view_links, Some(&groups));
    delta_refs.updates = plan_reference_updates(
        &view,
        &view_scope,
        &mappings,
        &view_links,
        &ps,
        None,
        usize::MAX,
    )
    .0;
    prop_assert_eq!(&delta_refs.updates, &full_refs.updates);
    prop_assert_eq!(&delta_refs.memberships, &full_refs.memberships);
    for p in &delta_refs.problems {
        prop_assert!(
            full_refs.problems.contains(p),
            "{:?} not in {:#?}",
            p,
            full_refs.problems
        );
    }
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The delta path plans what the full path plans (issue 12): from links in step with a
    /// directory, for any next directory with the same assignments, planning the view of the
    /// changes (`model::view`) with the view's links gives the full plan's actions, and then
    /// the full plan's manager updates and membership changes. When the view has an object to
    /// provision the cycle plans the whole directory instead.
    #[test]
    fn the_delta_path_plans_what_the_full_path_plans(
        before in arb_directory(),
        after in arb_directory(),
        keep in proptest::collection::vec(proptest::bool::weighted(0.75), 12),
        moves in 0..4usize,
        adds in 0..4usize,
        assigned_group in 0..4usize,
    ) {
        let settings = ScopeSettings {
            mode: if before["_all"] == json!(true) { ScopeMode::All } else { ScopeMode::Assigned },
            ..ScopeSettings::default()
        };
        // Matching values shared by two users make the cycle after them full (and nearly every
        // generated pair of users would share one): one UPN per id, in two spellings.
        let unique = |mut v: Value| {
            if let Some(users) = v["users"].as_array_mut() {
                for u in users {
                    let (Some(id), Some(upn)) = (u["id"].as_str(), u["userPrincipalName"].as_str()) else {
                        continue;
                    };
                    let spelling = upn.as_bytes().get(4).map_or(0, |b| b % 2);
                    u["userPrincipalName"] = json!(format!("user{id}{spelling}@x"));
                }
            }
            v
        };
        // One group assigned at least, so that users are in scope through groups (a member
        // of a planned group may be in scope through another one).
        let assign = |mut v: Value| {
            if let Some(a) = v["assignments"].as_array_mut() {
                a.push(json!({"principalId": format!("g{assigned_group}"), "role": "User"}));
            }
            v
        };
        let mut d1 = parse(assign(unique(before)));
        let mut d2 = parse(assign(unique(after)));
        // Rejected objects (duplicate ids, no id) are the full path's concern: left out of
        // both. The assignments move one time in four.
        if moves != 0 {
            d2.assignments = d1.assignments.clone();
        }
        d1.rejected.clear();
        d2.rejected.clear();
        // Few changes, as a delta brings: most objects stay as they were (a changed one takes
        // `after`'s attributes: title, name, state, manager, or is gone). A new user makes
        // the cycle take the full path (nothing to compare), so one appears one time in four
        // only: the cases that need the view's parts are those that plan no provisioning.
        for (i, kept) in keep.iter().enumerate().take(8) {
            let id = format!("u{i}");
            let new = !d1.users.contains_key(&id) && d2.users.contains_key(&id);
            if *kept || (new && adds != 0) {
                match d1.users.get(&id) {
                    Some(u) => d2.users.insert(u.clone()),
                    None => d2.users.remove(&id),
                };
            }
        }
        for (i, kept) in keep[8..12].iter().enumerate() {
            let id = format!("g{i}");
            if *kept {
                match d1.groups.get(&id) {
                    Some(g) => d2.groups.insert(g.clone()),
                    None => d2.groups.remove(&id),
                };
            }
        }
        delta_plans_the_full_plan(&d1, &d2, &settings)?;
    }
}

/// The cases that decide what the view holds (`model::view`), named: an assigned group, a
/// planned group's member groups and a changed user's new manager, which the view needs, and
/// the users a removed manager managed, which it does without.
#[test]
fn each_part_of_the_view_is_needed() {
    let assigned = ScopeSettings::default();
    let all = ScopeSettings {
        mode: ScopeMode::All,
        ..ScopeSettings::default()
    };
    let user = |id: &str, title: &str, manager: Option<&str>| {
        let mut u = json!({"id": id, "userPrincipalName": format!("{id}@x"), "jobTitle": title});
        if let Some(m) = manager {
            u["manager"] = json!(m);
        }
        u
    };
    let cases: Vec<(&str, &ScopeSettings, Value, Value)> = vec![
        // u1 is in the view as a member of g0 (which holds the changed u0), and in scope only
        // through the assigned g1: without every assigned group, u1 reads as out of scope.
        (
            "every assigned group",
            &assigned,
            json!({"users": [user("u0", "a", None), user("u1", "a", None)],
                   "groups": [{"id": "g0", "displayName": "G0", "members": ["u0", "u1"]},
                              {"id": "g1", "displayName": "G1", "members": ["u1"]}],
                   "assignments": [{"principalId": "u0", "role": "User"},
                                   {"principalId": "g1", "role": "User"}]}),
            json!({"users": [user("u0", "b", None), user("u1", "a", None)]}),
        ),
        // g0 holds the changed u0 and the group g1: without g1, g0's member list would name
        // a member that does not exist (InvalidMember).
        (
            "a planned group's member groups",
            &all,
            json!({"users": [user("u0", "a", None)],
                   "groups": [{"id": "g0", "displayName": "G0", "members": ["u0", "g1"]},
                              {"id": "g1", "displayName": "G1", "members": []}]}),
            json!({"users": [user("u0", "b", None)]}),
        ),
        // u1's manager u0 is deleted: u1's manager attribute is left as it is (an
        // unprovisioned manager is not cleared), so the view does without u1.
        (
            "the users a removed user managed",
            &all,
            json!({"users": [user("u0", "a", None), user("u1", "a", Some("u0"))]}),
            json!({"users": [user("u1", "a", Some("u0"))]}),
        ),
        // u0's new manager u1 did not change: without her, u0's manager resolves to none.
        (
            "the user a changed user references",
            &all,
            json!({"users": [user("u0", "a", None), user("u1", "a", None)]}),
            json!({"users": [user("u0", "a", Some("u1")), user("u1", "a", None)]}),
        ),
    ];
    for (part, settings, before, after) in cases {
        let d1 = parse(before.clone());
        let mut after = after;
        for key in ["groups", "assignments"] {
            if after.get(key).is_none() {
                after[key] = before.get(key).cloned().unwrap_or_else(|| json!([]));
            }
        }
        let d2 = parse(after);
        match delta_plans_the_full_plan(&d1, &d2, settings) {
            Ok(compared) => assert!(compared, "{part}: the delta path was not compared"),
            Err(e) => panic!("{part}: {e}"),
        }
    }
}

/// `links` held as a cycle holds them when its user mappings are pure: user links slim.
fn slim_index(links: &LinkIndex, mappings: &Mappings) -> LinkIndex {
    let keep = mappings
        .users
        .iter()
        .filter(|m| m.is_reference())
        .map(|m| m.key.to_string())
        .collect();
    let mut b = crate::model::LinkIndexBuilder::slim(keep);
    for ty in [ObjectType::User, ObjectType::Group] {
        for l in links.of(ty).values() {
            b.push(&l.to_link());
        }
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Planning against slim user links, then again with the links the plan names whole
    /// (`Plan::whole`) taken from the store, gives the plan of the whole links: the same
    /// actions, problems, counts and digests, and no link named a second time; the
    /// references, which read only the reference paths a slim link keeps, are the same too.
    #[test]
    fn slim_links_keep_the_plan(
        seq in proptest::collection::vec((arb_directory(), any::<bool>()), 1..5),
    ) {
        let mappings = Mappings::generic_scim().unwrap();
        let mut links = LinkIndex::default();
        let env = env();
        for (raw, remove_nulls) in seq {
            let (settings, dir) = scoped_input(raw);
            let nulls = if remove_nulls { NullPolicy::Remove } else { NullPolicy::Leave };
            let ps = PlanSettings { null_values: nulls, env: &env };
            for _ in 0..2 {
                let scoped = scope::evaluate(&dir, &settings);
                let skip = Skipping::new(&mappings, nulls, []);
                let mut whole = plan_objects_skipping(&dir, &scoped, &mappings, &links, &ps, &skip);
                let mut slim = slim_index(&links, &mappings);
                prop_assert!(slim.users().values().all(|l| l.is_slim() == l.exported().digest().is_some()));
                let first = plan_objects_skipping(&dir, &scoped, &mappings, &slim, &ps, &skip);
                for (ty, id) in &first.whole {
                    let l = links.get(*ty, id).map(|l| l.to_link());
                    prop_assert!(l.is_some(), "a link named whole that does not exist");
                    if let Some(l) = l {
                        slim.insert(&l);
                    }
                }
                let again = plan_objects_skipping(&dir, &scoped, &mappings, &slim, &ps, &skip);
                prop_assert!(again.whole.is_empty());
                prop_assert_eq!(&again, &whole);
                let refs = plan_references(&dir, &scoped, &mappings, &links, &ps);
                prop_assert_eq!(&plan_references(&dir, &scoped, &mappings, &slim, &ps), &refs);
                for (ty, id, d) in std::mem::take(&mut whole.digests) {
                    if let Some(mut l) = links.of_mut(ty).get_mut(&id) {
                        l.exported.set_digest(d);
                    }
                }
                simulate(&whole, &mut links);
                simulate_refs(&refs, &mut links);
            }
        }
    }
}
