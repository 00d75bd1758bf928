//! Issue 12: a cycle does not map the objects whose source data did not change since mapping
//! them last found nothing to send. Seen from outside: the "planned" log event's `unmapped`
//! count, across restarts of the real binary (the digests live in the store), while every
//! change still reaches the target.

use crate::support::cli::*;
use serde_json::{json, Value};

/// `provisiond sync` once, with JSON logs; the summary and the "planned" event's fields.
fn sync(fixture: &Fixture) -> (Value, Value) {
    let mut cmd = fixture.command(&["--log-format", "json", "sync", "--json"]);
    cmd.env("RUST_LOG", "info");
    let out = run_command(cmd, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(0);
    let planned = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|l| l.get("fields").cloned().unwrap_or(l))
        .find(|f| f["message"] == "planned")
        .unwrap_or_else(|| panic!("no \"planned\" event: {out}"));
    (out.json(), planned)
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
    // Linked, but without digests yet: mapped, found unchanged, digests recorded.
    let (s, planned) = sync(&fixture);
    assert_eq!(s["users"]["unchanged"], 5, "{s}");
    assert_eq!(planned["unmapped"], 0, "{planned}");
    // A new process: the digests came from the store; 5 users and the group not mapped.
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
    // Her new values have no digest yet: mapped once more, then skipped like the rest.
    let (_, planned) = sync(&fixture);
    assert_eq!(planned["unmapped"], 5, "{planned}");
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
