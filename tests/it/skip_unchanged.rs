//! Issue 12: a cycle does not map the objects whose source data did not change since mapping
//! them last found nothing to send. Seen from outside: the "planned" log event's `unmapped`
//! count, across restarts of the real binary (the digests live in the store), while every
//! change still reaches the target.

use crate::support::cli::*;
use crate::support::common::ENTERPRISE;
use serde_json::{json, Value};

/// `provisiond sync` once, with JSON logs; the summary and the "planned" event's fields.
fn sync(fixture: &Fixture) -> (Value, Value) {
    let (summary, planned, _) = sync_logged(fixture);
    (summary, planned)
}

/// [`sync`], with the cycle's debug events too: the summary, the "planned" event's fields
/// and every event's fields.
fn sync_logged(fixture: &Fixture) -> (Value, Value, Vec<Value>) {
    let mut cmd = fixture.command(&["--log-format", "json", "sync", "--json"]);
    cmd.env("RUST_LOG", "info,provisiond::cycle=debug");
    let out = run_command(cmd, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(0);
    let events: Vec<Value> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|l| l.get("fields").cloned().unwrap_or(l))
        .collect();
    let planned = events
        .iter()
        .find(|f| f["message"] == "planned")
        .cloned()
        .unwrap_or_else(|| panic!("no \"planned\" event: {out}"));
    (out.json(), planned, events)
}

/// The phases a cycle's debug events name, in order.
fn phases(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["message"] == "cycle phase done")
        .filter_map(|e| e["phase"].as_str().map(str::to_string))
        .collect()
}

/// The initial cycle records each object's input digest in the link it writes anyway (the
/// create, then the manager's update, which keeps it): the `sync` after it maps no object,
/// writes no link and sends not one request.
#[test]
fn the_sync_after_an_initial_one_maps_nothing_writes_no_link_and_sends_nothing() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut d = directory(5);
    // Four users with a manager: the reference phase changes their links after the creates.
    for i in 1..5 {
        d["users"][i]["manager"] = json!(user_id(0));
    }
    fixture.write_directory(&d);
    let (s, planned, events) = sync_logged(&fixture);
    assert_eq!(
        (s["kind"].clone(), s["users"]["created"].clone()),
        (json!("initial"), json!(5)),
        "{s}"
    );
    assert_eq!(planned["unmapped"], 0, "{planned}");
    assert!(
        phases(&events).contains(&"users and groups exported".to_string()),
        "{:?}",
        phases(&events)
    );
    let managed = sandbox
        .users()
        .iter()
        .filter(|u| u[ENTERPRISE]["manager"]["value"].is_string())
        .count();
    assert_eq!(managed, 4, "{:?}", sandbox.users());

    let before = sandbox.counts();
    let (s, planned, events) = sync_logged(&fixture);
    assert_eq!(s["kind"], json!("incremental"), "{s}");
    assert_eq!(s["users"]["unchanged"], 5, "{s}");
    // 5 users and the group found unchanged by the digests the initial cycle stored.
    assert_eq!(planned["unmapped"], 6, "{planned}");
    let phases = phases(&events);
    assert!(
        !phases.contains(&"input digests recorded".to_string()),
        "{phases:?}"
    );
    assert_eq!(sandbox.counts().total, before.total, "requests sent");
}

#[test]
fn unchanged_objects_are_not_mapped_and_changes_still_reach_the_target() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let (s, planned) = sync(&fixture);
    assert_eq!(
        (s["kind"].clone(), s["users"]["created"].clone()),
        (json!("initial"), json!(5)),
        "{s}"
    );
    assert_eq!(planned["unmapped"], 0, "{planned}");
    // A new process: the digests the creates stored came from the store; 5 users and the
    // group not mapped.
    let writes = sandbox.writes();
    let (s, planned) = sync(&fixture);
    assert_eq!(s["users"]["unchanged"], 5, "{s}");
    assert_eq!(planned["unmapped"], 6, "{planned}");
    assert_eq!(sandbox.writes(), writes);

    // One user changes: only she is mapped, and updated.
    let mut d = directory(5);
    d["users"][1]["jobTitle"] = json!("Architect");
    fixture.write_directory(&d);
    let (s, planned) = sync(&fixture);
    assert_eq!(s["users"]["updated"], 1, "{s}");
    assert_eq!(planned["unmapped"], 5, "{planned}");
    let title = |sandbox: &Sandbox| -> Value {
        sandbox
            .users()
            .into_iter()
            .find(|u| u["userName"] == user_name(1))
            .map(|u| u["title"].clone())
            .unwrap_or_default()
    };
    assert_eq!(title(&sandbox), json!("Architect"));
    // The update recorded her new inputs' digest: skipped like the rest.
    let (_, planned) = sync(&fixture);
    assert_eq!(planned["unmapped"], 6, "{planned}");

    // Back to the old title: her link holds the new one, so the old digest vouches for
    // nothing and the change is sent.
    fixture.write_directory(&directory(5));
    let (s, _) = sync(&fixture);
    assert_eq!(s["users"]["updated"], 1, "{s}");
    assert_eq!(title(&sandbox), json!("Engineer"));
    // Out of scope (user 4 is in no assigned group): disabled although her digest matches.
    let mut d = directory(5);
    d["assignments"].as_array_mut().unwrap().remove(4);
    fixture.write_directory(&d);
    let (s, _) = sync(&fixture);
    assert_eq!(s["users"]["disabled"], 1, "{s}");
}
