//! Delta cycles (issue 12, "Delta sources cost O(changes)"): after a Graph delta read that
//! says what changed, the cycle scopes, maps, plans and sends only the changed objects (and
//! what their scope and references need), and still disables a soft-deleted user, deletes a
//! hard-deleted one, provisions a user newly assigned through a group, removes a member and
//! retries an escrow that is due.

use crate::graph_source::{graph_job, graph_user, tenant, ROLE_USER};
use crate::safety::t0;
use crate::support::common::*;
use chrono::Duration;
use graph_emulator::{GraphEmulatorConfig, GraphHandle};
use provisiond::{CycleKind, FaultAction, FaultRule, ManualClock, SledStore};
use provisiond::{CycleStatus, CycleSummary, JobSpec};
use provisiond::{StateStore, Target};
use serde_json::json;

/// Users in the tenant besides `tenant`'s own.
const FILLERS: usize = 60;

/// `tenant` with [`FILLERS`] more users, each assigned to the app.
async fn big_tenant() -> GraphHandle {
    let g = tenant(GraphEmulatorConfig::default()).await;
    for i in 0..FILLERS {
        let id = format!("u-fill{i:03}");
        g.put_user(graph_user(&id, &format!("Fill{i:03}"), "Er", json!({})));
        g.assign(&id, ROLE_USER);
    }
    g
}

/// A cycle at the clock's time (the safety tests' runner), its summary.
async fn cycle(
    job: &JobSpec,
    store: &dyn StateStore,
    target: &dyn Target,
    clock: &ManualClock,
) -> CycleSummary {
    crate::safety::cycle(job, store, target, clock)
        .await
        .summary
}

/// Objects a cycle looked at: a delta cycle counts only those of its view.
fn looked_at(s: &CycleSummary) -> u64 {
    s.users.created + s.users.updated + s.users.unchanged + s.users.disabled + s.users.deleted
}

/// The initial cycle and a no-change one (a daemon's first two), with the one source object
/// kept across cycles as the daemon keeps it.
async fn started(
    g: &GraphHandle,
    h: &provisiond::SandboxHandle,
    clock: &ManualClock,
) -> (JobSpec, SledStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let job = graph_job(g);
    let client = client(&h.base_url());
    let s = cycle(&job, &store, &client, clock).await;
    assert_eq!(
        (s.kind, s.status),
        (CycleKind::Initial, CycleStatus::Succeeded),
        "{s:#?}"
    );
    assert!(looked_at(&s) > FILLERS as u64, "{s:#?}");
    let s = cycle(&job, &store, &client, clock).await;
    assert_eq!(s.requests.writes(), 0, "{s:#?}");
    (job, store, dir)
}

#[tokio::test]
async fn a_delta_cycle_sends_only_the_changes_and_still_disables_deletes_and_removes() {
    let g = big_tenant().await;
    let h = sandbox(vec![]).await;
    let clock = ManualClock::new(t0());
    let (job, store, _dir) = started(&g, &h, &clock).await;
    let client = client(&h.base_url());
    let bob = id(&user(&h, "bob@contoso.com"));
    let grace = id(&user(&h, "grace@contoso.com"));
    assert!(member_ids(&group(&h, "Engineering")).contains(&grace));

    // A change, a soft delete, a hard delete and a removed member (grace leaves Engineering,
    // her only assignment).
    g.update_user("u-fill007", json!({"jobTitle": "Lead"}));
    g.delete_user("u-bob", false);
    g.delete_user("u-henry", true);
    g.remove_member("g-eng", "u-grace");
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(s.kind, CycleKind::Incremental);
    assert_eq!(s.users.updated, 1, "{s:#?}");
    assert_eq!(
        s.users.disabled, 2,
        "bob (soft-deleted) and grace (unassigned): {s:#?}"
    );
    assert_eq!(s.users.deleted, 1, "henry: {s:#?}");
    assert!(
        looked_at(&s) < 20,
        "only the view is planned, not {FILLERS}+ users: {s:#?}"
    );
    // 1 PATCH for the update, 2 for the disables, 2 for the members of Engineering (bob,
    // grace) and Operations (henry); 1 DELETE. No search, no read of anyone else.
    assert_eq!(
        (
            s.requests.get,
            s.requests.post,
            s.requests.patch,
            s.requests.delete
        ),
        (0, 0, 5, 1),
        "{s:#?}"
    );
    assert_eq!(s.memberships.removed, 3, "{s:#?}");
    assert_eq!(user(&h, "fill007@contoso.com")["title"], "Lead");
    assert_eq!(user(&h, "bob@contoso.com")["active"], json!(false));
    assert_eq!(user(&h, "grace@contoso.com")["active"], json!(false));
    assert!(try_user(&h, "henry@contoso.com").is_none());
    let eng = member_ids(&group(&h, "Engineering"));
    assert!(!eng.contains(&grace) && !eng.contains(&bob), "{eng:?}");

    // The link count moved with the deletion: the next delta cycle judges the threshold
    // from it, and a cycle with no change sends nothing.
    let meta = store.meta("test").unwrap();
    let (u, gr) = store.link_counts("test").unwrap();
    assert_eq!(meta.linked, Some((u + gr) as u64));
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.requests.writes() + s.requests.get, 0, "{s:#?}");
    assert_eq!(looked_at(&s), 0, "{s:#?}");
}

#[tokio::test]
async fn a_user_newly_assigned_through_a_group_is_provisioned_and_added() {
    let g = big_tenant().await;
    let h = sandbox(vec![]).await;
    let clock = ManualClock::new(t0());
    let (job, store, _dir) = started(&g, &h, &clock).await;
    let client = client(&h.base_url());

    g.put_user(graph_user("u-ivan", "Ivan", "Drago", json!({})));
    g.add_member("g-eng", "u-ivan");
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(s.users.created, 1, "{s:#?}");
    assert_eq!(s.memberships.added, 1, "{s:#?}");
    // The create (and its matching search) and one membership PATCH: nothing for the others.
    assert_eq!(s.requests.post, 1, "{s:#?}");
    assert_eq!(s.requests.patch, 1, "{s:#?}");
    assert_eq!(s.requests.delete, 0, "{s:#?}");
    let ivan = id(&user(&h, "ivan@contoso.com"));
    assert!(member_ids(&group(&h, "Engineering")).contains(&ivan));

    // Then a plain change is a delta cycle again.
    g.update_user("u-ivan", json!({"jobTitle": "Boxer"}));
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!((s.users.updated, s.requests.patch), (1, 1), "{s:#?}");
    assert!(looked_at(&s) < 20, "{s:#?}");
}

#[tokio::test]
async fn a_due_escrow_is_retried_by_a_delta_cycle_that_did_not_read_its_object() {
    let g = big_tenant().await;
    let h = sandbox(vec![]).await;
    let clock = ManualClock::new(t0());
    let (job, store, _dir) = started(&g, &h, &clock).await;
    let client = client(&h.base_url());

    g.update_user("u-fill003", json!({"jobTitle": "Lead"}));
    h.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 500,
        retry_after: None,
        body: None,
    })
    .method("PATCH")
    .path_prefix("/Users")]);
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.escrowed, 1, "{s:#?}");
    assert_eq!(store.escrows("test").unwrap().len(), 1);

    // The target recovers; the next delta read brings another user only. The escrow is due
    // (within the first hours every cycle retries): its update goes out too.
    h.set_faults(vec![]);
    clock.set(t0() + Duration::hours(1));
    g.update_user("u-fill004", json!({"jobTitle": "Lead"}));
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!((s.users.updated, s.escrow_retried), (2, 1), "{s:#?}");
    assert!(looked_at(&s) < 20, "{s:#?}");
    assert!(store.escrows("test").unwrap().is_empty());
    assert_eq!(user(&h, "fill003@contoso.com")["title"], "Lead");
}

#[tokio::test]
async fn after_a_failed_cycle_the_changes_it_read_are_still_sent() {
    let g = big_tenant().await;
    let h = sandbox(vec![]).await;
    let clock = ManualClock::new(t0());
    let (job, store, _dir) = started(&g, &h, &clock).await;
    let client = client(&h.base_url());

    // The read brings the change, then the target refuses the token: the cycle fails and
    // its watermark stays where it was.
    g.update_user("u-fill005", json!({"jobTitle": "Lead"}));
    h.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 401,
        retry_after: None,
        body: None,
    })]);
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.status, CycleStatus::Failed, "{s:#?}");

    // Nothing new in the source: the next read has no change of its own, but the failed
    // cycle's change is sent (the whole directory is planned once).
    h.set_faults(vec![]);
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.status, CycleStatus::Succeeded, "{s:#?}");
    assert_eq!(s.users.updated, 1, "{s:#?}");
    assert_eq!(user(&h, "fill005@contoso.com")["title"], "Lead");
}

/// A new user whose matching value (userName, from the UPN) is a linked user's, who is not in
/// the delta's view: the cycle plans the whole directory, which reports the duplicate, and
/// neither creates a second account nor links the new user to the other's.
#[tokio::test]
async fn a_new_user_sharing_a_linked_users_matching_value_is_a_duplicate() {
    let g = big_tenant().await;
    let h = sandbox(vec![]).await;
    let clock = ManualClock::new(t0());
    let (job, store, _dir) = started(&g, &h, &clock).await;
    let client = client(&h.base_url());
    let links_before = store.link_counts("test").unwrap();

    g.put_user(graph_user("u-twin", "Fill007", "Twin", json!({})));
    g.assign("u-twin", ROLE_USER);
    let s = cycle(&job, &store, &client, &clock).await;
    assert_eq!(s.users.created, 0, "{s:#?}");
    assert!(
        s.problems
            .iter()
            .any(|p| p.code == "DuplicateSourceEntries" && p.id.as_deref() == Some("u-twin")),
        "{s:#?}"
    );
    assert_eq!(store.link_counts("test").unwrap(), links_before);
    assert_eq!(users_named(&h, "fill007@contoso.com").len(), 1);
}
