//! The Microsoft Graph source (`kind = "graph"`): an Entra ID tenant read the way the Entra
//! provisioning service reads it for its own enterprise applications.
//!
//! - **Assignments** come from the application's service principal:
//!   `GET /servicePrincipals/{id}/appRoleAssignedTo` (microsoft-graph-docs
//!   `api-reference/v1.0/api/serviceprincipal-list-approleassignedto.md`), role names from its
//!   `appRoles`; the all-zero role id is the default role, shown by Entra as "Default Access"
//!   (`resources/approleassignment.md`: "a default app role ID of
//!   `00000000-0000-0000-0000-000000000000` … without any specific app roles"), so a job's
//!   `excluded_roles` applies to it.
//! - **Users and groups** come from `/users/delta` and `/groups/delta` (`api/user-delta.md`,
//!   `api/group-delta.md`, `concepts/delta-query-overview.md`), with `$select` of what the job
//!   reads, `manager` tracked through `manager@delta` and memberships through `members@delta`.
//!   The source keeps the merged snapshot in memory between cycles (the daemon keeps the
//!   source alive): an incremental read follows the stored `@odata.deltaLink` and applies only
//!   the changes. With no snapshot (first cycle, after a restart, no watermark) or an expired
//!   delta token (410 Gone, `syncStateNotFound`, `resyncRequired`), it reads everything.
//! - **Assigned groups' members** are re-read from `/groups/{id}/members`
//!   (`api/group-list-members.md`) on every full read of groups, as Entra expands a group
//!   assignment to the group's direct members; incremental reads then follow `members@delta`.
//!
//! A read that fails part-way (a page that still fails after the retries, `read_timeout`)
//! returns what it has with `Directory::complete == false`, so the planner disables and deletes
//! nothing; the snapshot of a collection is only replaced by a round that finished. Only a
//! failure before anything was read (the token, the service principal) fails the cycle.

pub(crate) mod attributes;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod credential;
mod persist;

pub use attributes::Selection;
pub(crate) use client::GraphError;
pub(crate) use credential::CertificateError;
pub use credential::ClientCertificate;
pub use credential::GraphCredential;

use super::{OneQuery, OneRead, SnapshotError, Source, SourceError, SourceRead};
use crate::model::{Assignment, Changes, Directory, ObjectType, Rejected, SourceObject};
use async_trait::async_trait;
use client::{Deadline, GraphClient};
use futures::StreamExt;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use url::Url;

/// The role id of an assignment made without a specific app role.
pub(crate) const DEFAULT_ACCESS_ROLE_ID: &str = "00000000-0000-0000-0000-000000000000";
/// Entra's name for it.
pub(crate) const DEFAULT_ACCESS: &str = "Default Access";
/// The public cloud's authority and Graph endpoint.
pub(crate) const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub(crate) const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";
/// Page size asked of list endpoints (`$top`; Graph's maximum for directory objects).
const LIST_PAGE_SIZE: &str = "999";
/// Pages followed in one collection before giving up: a loop of links must not spin forever.
const MAX_PAGES: usize = 1_000_000;
/// Assigned groups whose members are read at the same time.
const MEMBER_READS_IN_FLIGHT: usize = 4;

/// How to reach one tenant and what to read. `Debug` shows neither the secret nor the key.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// Directory (tenant) id, or a verified domain name.
    pub tenant_id: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    /// A client secret, or a certificate and its private key.
    pub credential: GraphCredential,
    /// Object id of the enterprise application (service principal) whose assignments say who
    /// is provisioned.
    pub service_principal_id: String,
    /// `https://login.microsoftonline.com`, or a sovereign cloud's authority.
    pub authority: Url,
    /// `https://graph.microsoft.com/v1.0`, or a sovereign cloud's Graph endpoint.
    pub graph_url: Url,
    /// The `$select` of the delta queries.
    pub select: Selection,
    pub connect_timeout: Duration,
    /// One request, response body included.
    pub request_timeout: Duration,
    /// A whole read; past it the read stops, incomplete.
    pub read_timeout: Duration,
    /// A snapshot whose last full read is older than this is read again whole (so that
    /// anything a delta could have missed is corrected, and a persisted snapshot does not
    /// live for ever).
    pub full_read_interval: Duration,
    /// Retries of one request after the first attempt.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Upper bound applied to Graph's `Retry-After`.
    pub max_retry_after: Duration,
}

impl GraphSettings {
    /// Settings for the public cloud with the defaults: 10 s connect and 60 s request
    /// timeouts, 30 min per read, 5 retries, backoff from 500 ms to 30 s, `Retry-After` capped
    /// at 5 min, and the `$select` scope needs.
    pub fn new(
        tenant_id: &str,
        client_id: &str,
        credential: impl Into<GraphCredential>,
        service_principal_id: &str,
    ) -> Result<GraphSettings, url::ParseError> {
        Ok(GraphSettings {
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            credential: credential.into(),
            service_principal_id: service_principal_id.to_string(),
            authority: Url::parse(DEFAULT_AUTHORITY)?,
            graph_url: Url::parse(DEFAULT_GRAPH_URL)?,
            select: Selection::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(30 * 60),
            full_read_interval: Duration::from_secs(7 * 24 * 3600),
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        })
    }
}

impl PartialEq for GraphSettings {
    fn eq(&self, o: &Self) -> bool {
        self.tenant_id == o.tenant_id
            && self.client_id == o.client_id
            && self.credential == o.credential
            && self.service_principal_id == o.service_principal_id
            && self.authority == o.authority
            && self.graph_url == o.graph_url
            && self.select == o.select
            && self.connect_timeout == o.connect_timeout
            && self.request_timeout == o.request_timeout
            && self.read_timeout == o.read_timeout
            && self.full_read_interval == o.full_read_interval
            && self.max_retries == o.max_retries
            && self.backoff_base == o.backoff_base
            && self.backoff_max == o.backoff_max
            && self.max_retry_after == o.max_retry_after
    }
}

impl Eq for GraphSettings {}

/// One collection as of its delta link.
#[derive(Debug, Clone)]
struct Collection {
    objects: BTreeMap<String, SourceObject>,
    delta_link: Url,
    /// Objects rejected with a known id (an `accountEnabled` that is neither true nor false),
    /// by id: reported, and taken as present, every cycle until a later entry fixes them; a
    /// rejection reported once would let the next incremental read take them as deleted.
    invalid: BTreeMap<String, Rejected>,
}

#[derive(Debug, Default)]
struct Snapshot {
    users: Option<Collection>,
    groups: Option<Collection>,
    /// When the last read of both collections from scratch finished (wall clock: it is
    /// persisted with the snapshot and compared with `full_read_interval` after a restart).
    full_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Changed since it was last handed to the state store ([`Source::snapshot`]).
    dirty: bool,
    /// When [`Source::snapshot`] last handed it over.
    taken_at: Option<Instant>,
    /// The last read of users was from scratch: a user it did not find may be soft-deleted
    /// (in Entra's recycle bin) rather than gone, which only deleted items can tell.
    users_read_whole: bool,
    /// What the last read had besides the objects, for [`Source::view`]; in memory only (a
    /// restored snapshot has none, so the first read after a restart gives no changes).
    last: Option<LastRead>,
}

/// The parts of the last read's directory that are not in the collections.
#[derive(Debug, Default)]
struct LastRead {
    /// Sorted by principal and role: compared with the next read's to tell whether the
    /// scope of many objects may have changed.
    assignments: Vec<Assignment>,
    rejected: Vec<Rejected>,
    complete: bool,
}

/// What one delta round produced.
struct Round {
    /// A round from scratch: every object read. An incremental round leaves it empty and
    /// keeps its changes in `overlay` over the snapshot's collection (copying a million
    /// objects each round to change a hundred was most of a delta cycle).
    objects: BTreeMap<String, SourceObject>,
    /// Incremental rounds: each object an entry changed, as it is now (`None`: gone).
    overlay: BTreeMap<String, Option<SourceObject>>,
    /// Set when the round reached its `@odata.deltaLink`.
    delta_link: Option<Url>,
    full: bool,
    /// Entries applied (changes on an incremental round).
    entries: usize,
    pages: usize,
    rejected: Vec<Rejected>,
    /// See [`Collection::invalid`].
    invalid: BTreeMap<String, Rejected>,
    error: Option<GraphError>,
}

/// The Graph source. Keeps the last merged snapshot between reads.
pub struct GraphSource {
    settings: GraphSettings,
    client: Result<GraphClient, GraphError>,
    snapshot: tokio::sync::Mutex<Snapshot>,
}

impl std::fmt::Debug for GraphSource {
    // By hand: the snapshot can hold a whole tenant, and the client holds the access token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.snapshot.try_lock().ok().map(|s| {
            (
                s.users.as_ref().map(|c| c.objects.len()),
                s.groups.as_ref().map(|c| c.objects.len()),
            )
        });
        f.debug_struct("GraphSource")
            .field("settings", &self.settings)
            .field("client", &self.client)
            .field("snapshot_users_groups", &snapshot)
            .finish()
    }
}

impl GraphSource {
    pub fn new(settings: GraphSettings) -> GraphSource {
        // A client that cannot be built (TLS setup) is reported by the first read, which
        // can fail; building the source cannot.
        let client = GraphClient::new(&settings);
        if let GraphCredential::Certificate(c) = &settings.credential {
            warn_if_expiring(c, chrono::Utc::now().timestamp());
        }
        GraphSource {
            settings,
            client,
            snapshot: tokio::sync::Mutex::new(Snapshot::default()),
        }
    }

    fn client(&self) -> Result<&GraphClient, SourceError> {
        // A client that could not be built stays unusable: never worth retrying.
        self.client.as_ref().map_err(|e| SourceError::Graph {
            context: None,
            source: e.clone(),
        })
    }

    /// What a persisted snapshot must have been read with to be continued from: the tenant,
    /// app and service principal, and the `$select` (a snapshot read without an attribute the
    /// mappings now need would never get it from a delta).
    fn snapshot_context(&self) -> String {
        format!(
            "{}\n{:?}",
            self.identity().unwrap_or_default(),
            self.settings.select
        )
    }

    /// Token and Graph requests sent so far (token requests, GETs, retries), for tests and
    /// benchmarks.
    pub fn request_counts(&self) -> (u64, u64, u64) {
        match &self.client {
            Ok(c) => (
                c.counters.tokens.load(Ordering::Relaxed),
                c.counters.gets.load(Ordering::Relaxed),
                c.counters.retries.load(Ordering::Relaxed),
            ),
            Err(_) => (0, 0, 0),
        }
    }

    /// Role id → name, from the service principal's `appRoles`
    /// (`GET /servicePrincipals/{id}?$select=id,appDisplayName,appRoles`).
    async fn app_roles(
        &self,
        client: &GraphClient,
        deadline: Deadline,
    ) -> Result<HashMap<String, String>, GraphError> {
        let url = client.url(
            &["servicePrincipals", &self.settings.service_principal_id],
            &[("$select", "id,appDisplayName,appRoles")],
        )?;
        let sp = client.get(&url, deadline).await?;
        let mut roles = HashMap::new();
        roles.insert(
            DEFAULT_ACCESS_ROLE_ID.to_string(),
            DEFAULT_ACCESS.to_string(),
        );
        for role in sp
            .get("appRoles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = role.get("id").and_then(Value::as_str) else {
                continue;
            };
            // Entra shows (and a job's excluded_roles names) the role's display name.
            let name = ["displayName", "value"]
                .iter()
                .find_map(|k| {
                    role.get(*k)
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                })
                .unwrap_or(id);
            roles.insert(id.to_ascii_lowercase(), name.to_string());
        }
        Ok(roles)
    }

    /// Every assignment of users and groups to the application, paged.
    async fn assignments(
        &self,
        client: &GraphClient,
        roles: &HashMap<String, String>,
        deadline: Deadline,
    ) -> (Vec<Assignment>, Vec<Rejected>, Option<GraphError>) {
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        let first = client.url(
            &[
                "servicePrincipals",
                &self.settings.service_principal_id,
                "appRoleAssignedTo",
            ],
            &[("$top", LIST_PAGE_SIZE)],
        );
        let error = match first {
            Err(e) => Some(e),
            Ok(url) => pages(client, url, deadline, |page, i, item| {
                let position = format!("appRoleAssignedTo page {page} item {i}");
                let principal = item
                    .get("principalId")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                let Some(principal) = principal else {
                    rejected.push(Rejected {
                        object_type: None,
                        id: item.get("id").and_then(Value::as_str).map(str::to_string),
                        position,
                        reason: "an app role assignment without principalId".into(),
                    });
                    return;
                };
                // Service principals can be assigned app roles too; they are not provisioned.
                match item.get("principalType").and_then(Value::as_str) {
                    Some("User") | Some("Group") | None => {}
                    Some(_) => return,
                }
                let role_id = item
                    .get("appRoleId")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_ACCESS_ROLE_ID)
                    .to_ascii_lowercase();
                let role = match roles.get(&role_id) {
                    Some(name) => name.clone(),
                    None => {
                        // A role removed from the app while still assigned: keep its id, so
                        // it counts as a role that is not excluded, as in Entra.
                        tracing::warn!(principal, role_id = %role_id, "assignment with a role the service principal does not declare");
                        role_id
                    }
                };
                out.push(Assignment {
                    principal_id: principal.to_string(),
                    role,
                });
            })
            .await
            .err(),
        };
        (out, rejected, error)
    }

    /// One delta round of users or groups, from `base` (incremental) or from scratch.
    async fn delta(
        &self,
        client: &GraphClient,
        ty: ObjectType,
        base: Option<&Collection>,
        deadline: Deadline,
    ) -> Round {
        let mut round = Round {
            objects: BTreeMap::new(),
            overlay: BTreeMap::new(),
            delta_link: None,
            full: base.is_none(),
            entries: 0,
            pages: 0,
            rejected: Vec::new(),
            invalid: BTreeMap::new(),
            error: None,
        };
        let collection = ty.endpoint().to_ascii_lowercase();
        let select = attributes::select_param(self.settings.select.of(ty));
        let initial = || {
            client.url(
                &[collection.as_str(), "delta"],
                &[("$select", select.as_str())],
            )
        };
        let mut url = match base {
            Some(c) => {
                round.invalid = c.invalid.clone();
                c.delta_link.clone()
            }
            None => match initial() {
                Ok(u) => u,
                Err(e) => {
                    round.error = Some(e);
                    return round;
                }
            },
        };
        loop {
            let page = match client.get(&url, deadline).await {
                Ok(p) => p,
                Err(GraphError::DeltaExpired { code, status, .. }) if !round.full => {
                    tracing::warn!(object_type = %ty, status, code = %code, "delta token no longer valid; reading everything");
                    round.objects.clear();
                    round.overlay.clear();
                    round.invalid.clear();
                    round.full = true;
                    round.pages = 0;
                    round.entries = 0;
                    match initial() {
                        Ok(u) => url = u,
                        Err(e) => {
                            round.error = Some(e);
                            return round;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    round.error = Some(e);
                    return round;
                }
            };
            round.pages += 1;
            let Some(Value::Array(items)) = page.get("value") else {
                round.error = Some(GraphError::Misshaped {
                    path: url.path().to_string(),
                    reason: "no \"value\" array".into(),
                });
                return round;
            };
            for (i, item) in items.iter().enumerate() {
                let position = format!("{}/delta page {} item {i}", ty.endpoint(), round.pages);
                match item {
                    Value::Object(entry) => {
                        round.entries += 1;
                        let applied = match base.filter(|_| !round.full) {
                            Some(c) => apply_over(&c.objects, &mut round.overlay, ty, entry),
                            None => apply_entry(&mut round.objects, ty, entry),
                        };
                        match applied {
                            Ok(id) => {
                                round.invalid.remove(&id);
                            }
                            Err(e) => {
                                let reason = e.to_string();
                                match e {
                                    EntryError::NoId => round.rejected.push(Rejected {
                                        object_type: Some(ty),
                                        id: None,
                                        position,
                                        reason,
                                    }),
                                    EntryError::InvalidEnabled { id, .. } => {
                                        // Skipped as a full read skips it: not provisioned
                                        // from a previous version, but present (account and
                                        // memberships kept).
                                        tracing::warn!(object_type = %ty, id = %id, reason = %reason, "Graph entry skipped");
                                        round.objects.remove(&id);
                                        if !round.full {
                                            round.overlay.insert(id.clone(), None);
                                        }
                                        let rejected = Rejected {
                                            object_type: Some(ty),
                                            id: Some(id.clone()),
                                            position,
                                            reason,
                                        };
                                        round.invalid.insert(id, rejected);
                                    }
                                }
                            }
                        }
                    }
                    _ => round.rejected.push(Rejected {
                        object_type: Some(ty),
                        id: None,
                        position,
                        reason: "not a JSON object".into(),
                    }),
                }
            }
            let link = |k: &str| page.get(k).and_then(Value::as_str);
            match (link("@odata.nextLink"), link("@odata.deltaLink")) {
                (Some(next), _) => match client.link(&url, next) {
                    Ok(next) if round.pages < MAX_PAGES => url = next,
                    Ok(_) => {
                        round.error = Some(GraphError::Invalid {
                            path: url.path().to_string(),
                            reason: format!("more than {MAX_PAGES} pages"),
                        });
                        return round;
                    }
                    Err(e) => {
                        round.error = Some(e);
                        return round;
                    }
                },
                (None, Some(delta)) => {
                    match client.link(&url, delta) {
                        Ok(d) => round.delta_link = Some(d),
                        Err(e) => round.error = Some(e),
                    }
                    return round;
                }
                (None, None) => {
                    round.error = Some(GraphError::Invalid {
                        path: url.path().to_string(),
                        reason: "a delta page with neither @odata.nextLink nor @odata.deltaLink"
                            .into(),
                    });
                    return round;
                }
            }
        }
    }

    /// A read; with `changes`, one that continued from the snapshot answers with what
    /// changed and no objects ([`Source::read_changes`]).
    async fn read_as(
        &self,
        watermark_in: Option<&str>,
        want_changes: bool,
    ) -> Result<SourceRead, SourceError> {
        let client = self.client()?;

        let started = Instant::now();
        let requests_before = self.request_counts();
        let deadline = Deadline::after(self.settings.read_timeout);
        // One read at a time: the snapshot is read and replaced as a whole.
        let mut snapshot = self.snapshot.lock().await;
        if watermark_in.is_none() && (snapshot.users.is_some() || snapshot.groups.is_some()) {
            // No watermark: the cycle is an initial one (a new or reset store); read it all
            // rather than trust a snapshot the store knows nothing about.
            tracing::info!("no watermark stored: reading the whole directory, not only changes");
            *snapshot = Snapshot::default();
        }
        let now = chrono::Utc::now();
        if snapshot.users.is_some() || snapshot.groups.is_some() {
            let age = snapshot
                .full_at
                .and_then(|t| (now - t).to_std().ok())
                .unwrap_or(Duration::MAX);
            if age >= self.settings.full_read_interval {
                tracing::info!(
                    full_read_interval_s = self.settings.full_read_interval.as_secs(),
                    snapshot_age_s = age.as_secs(),
                    "snapshot older than full_read_interval: reading the whole directory"
                );
                *snapshot = Snapshot::default();
            }
        }

        // Changes can be told only from the position the last committed cycle stored: when
        // a cycle failed or was stopped after its read, what that read brought was never
        // planned to the end, and only the whole directory has it.
        let in_step = watermark(&snapshot).as_deref() == watermark_in;
        // The roles decide which assignments count; without them nothing can be decided, and
        // a failure here (token, permission, wrong id) comes before anything was read.
        let roles = self
            .app_roles(client, deadline)
            .await
            .map_err(|e| self.first_call_error(e))?;

        let (users, groups, (assignments, assignment_rejects, assignment_error)) = tokio::join!(
            self.delta(client, ObjectType::User, snapshot.users.as_ref(), deadline),
            self.delta(
                client,
                ObjectType::Group,
                snapshot.groups.as_ref(),
                deadline
            ),
            self.assignments(client, &roles, deadline),
        );
        let mut groups = groups;
        let mut errors: Vec<(String, GraphError)> = Vec::new();

        // A full read of groups takes assigned groups' direct members from the list endpoint,
        // as Entra does for a group assignment; later rounds follow members@delta.
        let mut members_read = 0usize;
        if groups.full && assignment_error.is_none() {
            let assigned: BTreeSet<String> = assignments
                .iter()
                .filter(|a| groups.objects.contains_key(&a.principal_id))
                .map(|a| a.principal_id.clone())
                .collect();
            let mut results = futures::stream::iter(assigned)
                .map(|g: String| async move {
                    let members = self.group_members(client, &g, deadline).await;
                    (g, members)
                })
                .buffer_unordered(MEMBER_READS_IN_FLIGHT);
            while let Some((g, result)) = results.next().await {
                match result {
                    Ok(members) => {
                        members_read += 1;
                        if let Some(obj) = groups.objects.get_mut(&g) {
                            obj.members = members;
                        }
                    }
                    Err(e) => errors.push((format!("members of group {g}"), e)),
                }
            }
        }

        let mut dir = Directory {
            complete: false,
            ..Directory::default()
        };
        dir.rejected.extend(assignment_rejects);
        dir.rejected.extend(users.rejected.iter().cloned());
        dir.rejected.extend(groups.rejected.iter().cloned());
        dir.rejected.extend(users.invalid.values().cloned());
        dir.rejected.extend(groups.invalid.values().cloned());
        if let Some(e) = assignment_error {
            errors.push(("app role assignments".into(), e));
        }
        let summary = |r: &Round| {
            format!(
                "{} ({} entries in {} pages)",
                if r.full { "full" } else { "incremental" },
                r.entries,
                r.pages
            )
        };
        let users_mode = summary(&users);
        let groups_mode = summary(&groups);
        let both_whole = users.full && groups.full;
        snapshot.users_read_whole = false;
        let mut assignments = assignments;
        assignments.sort_by(|a, b| (&a.principal_id, &a.role).cmp(&(&b.principal_id, &b.role)));
        // Changes can be told when both rounds continued from a snapshot whose last read was
        // complete. Assignments are read whole every time: what moved there is a change of
        // its principal (and, for a group, of its members).
        let mut changes = (want_changes
            && in_step
            && !users.full
            && !groups.full
            && errors.is_empty()
            && users.error.is_none()
            && groups.error.is_none()
            && users.delta_link.is_some()
            && groups.delta_link.is_some()
            && snapshot.last.as_ref().is_some_and(|l| l.complete))
        .then(Changes::default);
        if let (Some(c), Some(kept_users), Some(kept_groups), Some(last)) = (
            changes.as_mut(),
            snapshot.users.as_ref(),
            snapshot.groups.as_ref(),
            snapshot.last.as_ref(),
        ) {
            round_changes(&kept_users.objects, &users.overlay, ObjectType::User, c);
            round_changes(&kept_groups.objects, &groups.overlay, ObjectType::Group, c);
            if last.assignments != assignments {
                // The groups after this read: the snapshot's with this round's changes.
                let mut groups_after: BTreeMap<String, SourceObject> = BTreeMap::new();
                for a in last.assignments.iter().chain(&assignments) {
                    let id = &a.principal_id;
                    let now = match groups.overlay.get(id) {
                        Some(o) => o.clone(),
                        None => kept_groups.objects.get(id).cloned(),
                    };
                    if let Some(g) = now {
                        groups_after.insert(id.clone(), g);
                    }
                }
                crate::model::view::assignment_changes(
                    &last.assignments,
                    &assignments,
                    &kept_groups.objects,
                    &groups_after,
                    c,
                );
            }
        }
        // A collection's snapshot moves only with a round that reached its delta link.
        for (ty, round) in [(ObjectType::User, users), (ObjectType::Group, groups)] {
            let Round {
                objects,
                overlay,
                delta_link,
                error,
                invalid,
                full,
                entries,
                ..
            } = round;
            let snapshot = &mut *snapshot;
            let (out, kept) = match ty {
                ObjectType::User => (&mut dir.users, &mut snapshot.users),
                ObjectType::Group => (&mut dir.groups, &mut snapshot.groups),
            };
            match (delta_link, error) {
                (Some(link), None) => {
                    if full || entries > 0 {
                        snapshot.dirty = true;
                    }
                    if ty == ObjectType::User {
                        snapshot.users_read_whole = full;
                    }
                    let objects = match (full, kept.take()) {
                        (false, Some(mut c)) => {
                            // In place: O(changes), not a copy of the collection.
                            apply_overlay(&mut c.objects, overlay);
                            c.objects
                        }
                        _ => objects,
                    };
                    if changes.is_none() {
                        *out = objects.values().cloned().collect();
                    }
                    *kept = Some(Collection {
                        objects,
                        delta_link: link,
                        invalid,
                    });
                }
                (_, error) => {
                    // What was read is returned; the stored snapshot stays as it was.
                    *out = match (full, kept.as_ref()) {
                        (false, Some(c)) => {
                            let mut all = c.objects.clone();
                            apply_overlay(&mut all, overlay);
                            all.into_values().collect()
                        }
                        _ => objects.into_values().collect(),
                    };
                    let e = error.unwrap_or_else(|| GraphError::Invalid {
                        path: format!("/{}/delta", ty.endpoint().to_ascii_lowercase()),
                        reason: "the round ended without a delta link".into(),
                    });
                    errors.push((format!("{}/delta", ty.endpoint()), e));
                }
            }
        }
        dir.assignments = assignments;
        dir.complete = errors.is_empty();
        if dir.complete && both_whole {
            snapshot.full_at = Some(now);
        }
        snapshot.last = Some(LastRead {
            assignments: dir.assignments.clone(),
            rejected: dir.rejected.clone(),
            complete: dir.complete,
        });
        for (what, e) in &errors {
            tracing::warn!(what = %what, error = %e, "Graph read incomplete");
        }
        let after = self.request_counts();
        tracing::info!(
            users = dir.users.len(),
            groups = dir.groups.len(),
            changed_users = changes.as_ref().map(|c| c.users.len()),
            changed_groups = changes.as_ref().map(|c| c.groups.len()),
            assignments = dir.assignments.len(),
            rejected = dir.rejected.len(),
            users_read = %users_mode,
            groups_read = %groups_mode,
            assigned_groups_members_read = members_read,
            complete = dir.complete,
            token_requests = after.0 - requests_before.0,
            graph_requests = after.1 - requests_before.1,
            retries = after.2 - requests_before.2,
            duration_ms = started.elapsed().as_millis() as u64,
            "Graph read"
        );
        Ok(SourceRead {
            directory: dir,
            watermark: watermark(&snapshot).or_else(|| watermark_in.map(str::to_string)),
            changes,
        })
    }

    /// The direct members of one group (`GET /groups/{id}/members?$select=id`), paged.
    async fn group_members(
        &self,
        client: &GraphClient,
        group: &str,
        deadline: Deadline,
    ) -> Result<Vec<String>, GraphError> {
        let url = client.url(
            &["groups", group, "members"],
            &[("$select", "id"), ("$top", LIST_PAGE_SIZE)],
        )?;
        let mut members = BTreeSet::new();
        pages(client, url, deadline, |_, _, item| {
            if attributes::provisionable_member(item) {
                if let Some(id) = item.get("id").and_then(Value::as_str) {
                    members.insert(id.to_string());
                }
            }
        })
        .await?;
        Ok(members.into_iter().collect())
    }

    /// One object by key for provision on demand: `GET /{users|groups}/{key}` when the key
    /// can be an id, else (or on a 404) a `$filter` on the names the key may be
    /// (`userPrincipalName` or `mail`; `displayName`), the first match by id order. `None`
    /// when nothing answers.
    async fn find_one(
        &self,
        client: &GraphClient,
        ty: ObjectType,
        key: &str,
        deadline: Deadline,
    ) -> Result<Option<Map<String, Value>>, GraphError> {
        let collection = ty.endpoint().to_ascii_lowercase();
        let select = attributes::select_param(self.settings.select.of(ty));
        // A name with `@` is never an id; anything else is tried as one first (Graph answers
        // 404, or 400 for what is no object id, and then the names are searched).
        if !key.contains('@') {
            let url = client.url(&[collection.as_str(), key], &[("$select", select.as_str())])?;
            match client.get(&url, deadline).await {
                Ok(obj) => return Ok(Some(obj)),
                Err(GraphError::Status {
                    status: 400 | 404, ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        let quoted = key.replace('\'', "''");
        let filter = match ty {
            ObjectType::User => {
                format!("userPrincipalName eq '{quoted}' or mail eq '{quoted}'")
            }
            ObjectType::Group => format!("displayName eq '{quoted}'"),
        };
        let url = client.url(
            &[collection.as_str()],
            &[("$filter", filter.as_str()), ("$select", select.as_str())],
        )?;
        let mut found: Vec<Map<String, Value>> = Vec::new();
        pages(client, url, deadline, |_, _, item| found.push(item.clone())).await?;
        found.sort_by(|a, b| {
            let id =
                |m: &Map<String, Value>| m.get("id").and_then(Value::as_str).map(str::to_string);
            id(a).cmp(&id(b))
        });
        Ok(found.into_iter().next())
    }

    /// The app role assignments of one principal to this application
    /// (`GET /{users|groups}/{id}/appRoleAssignments`, kept when `resourceId` is the job's
    /// service principal), with role names.
    async fn assignments_of(
        &self,
        client: &GraphClient,
        ty: ObjectType,
        id: &str,
        roles: &HashMap<String, String>,
        deadline: Deadline,
    ) -> Result<Vec<Assignment>, GraphError> {
        let collection = ty.endpoint().to_ascii_lowercase();
        let url = client.url(
            &[collection.as_str(), id, "appRoleAssignments"],
            &[("$top", LIST_PAGE_SIZE)],
        )?;
        let sp = &self.settings.service_principal_id;
        let mut out = Vec::new();
        pages(client, url, deadline, |_, _, item| {
            let text = |k: &str| item.get(k).and_then(Value::as_str);
            if !text("resourceId").is_some_and(|r| r.eq_ignore_ascii_case(sp)) {
                return;
            }
            let role_id = text("appRoleId")
                .unwrap_or(DEFAULT_ACCESS_ROLE_ID)
                .to_ascii_lowercase();
            out.push(Assignment {
                principal_id: id.to_string(),
                role: roles.get(&role_id).cloned().unwrap_or(role_id),
            });
        })
        .await?;
        Ok(out)
    }

    /// The directory provision on demand needs (see [`super::one`]), read object by object.
    async fn read_one_dir(
        &self,
        client: &GraphClient,
        query: &OneQuery,
        deadline: Deadline,
    ) -> Result<Option<Directory>, SourceError> {
        let roles = self
            .app_roles(client, deadline)
            .await
            .map_err(|e| self.first_call_error(e))?;
        let err = |what: String| move |e: GraphError| self.service_error(&what, e);
        let mut dir = Directory {
            complete: true,
            ..Directory::default()
        };
        let mut principals: Vec<(ObjectType, String)> = Vec::new();
        // Read as the snapshot's collections are, then handed to the directory.
        let mut one_users: BTreeMap<String, SourceObject> = BTreeMap::new();
        let mut one_groups: BTreeMap<String, SourceObject> = BTreeMap::new();
        let keep = |objects: &mut BTreeMap<String, SourceObject>,
                    rejected: &mut Vec<Rejected>,
                    ty: ObjectType,
                    entry: &Map<String, Value>|
         -> Option<String> {
            match apply_entry(objects, ty, entry) {
                Ok(id) => Some(id),
                Err(e) => {
                    rejected.push(Rejected {
                        object_type: Some(ty),
                        id: entry.get("id").and_then(Value::as_str).map(str::to_string),
                        position: format!("{} {}", ty.endpoint(), query.key),
                        reason: e.to_string(),
                    });
                    entry.get("id").and_then(Value::as_str).map(str::to_string)
                }
            }
        };
        let Some(found) = self
            .find_one(client, query.object_type, &query.key, deadline)
            .await
            .map_err(err(format!("reading {} {}", query.object_type, query.key)))?
        else {
            return Ok(None);
        };
        match query.object_type {
            ObjectType::User => {
                let Some(id) = keep(&mut one_users, &mut dir.rejected, ObjectType::User, &found)
                else {
                    return Ok(None);
                };
                let select = attributes::select_param(self.settings.select.of(ObjectType::Group));
                let url = client
                    .url(
                        &["users", &id, "memberOf"],
                        &[("$select", select.as_str()), ("$top", LIST_PAGE_SIZE)],
                    )
                    .map_err(err(format!("groups of user {id}")))?;
                let mut groups: Vec<Map<String, Value>> = Vec::new();
                pages(client, url, deadline, |_, _, item| {
                    if item.get("@odata.type").and_then(Value::as_str)
                        == Some("#microsoft.graph.group")
                    {
                        groups.push(item.clone());
                    }
                })
                .await
                .map_err(err(format!("groups of user {id}")))?;
                for g in &groups {
                    if let Some(gid) =
                        keep(&mut one_groups, &mut dir.rejected, ObjectType::Group, g)
                    {
                        if let Some(obj) = one_groups.get_mut(&gid) {
                            obj.members = vec![id.clone()];
                        }
                        principals.push((ObjectType::Group, gid));
                    }
                }
                principals.push((ObjectType::User, id));
            }
            ObjectType::Group => {
                let Some(id) = keep(
                    &mut one_groups,
                    &mut dir.rejected,
                    ObjectType::Group,
                    &found,
                ) else {
                    return Ok(None);
                };
                let members = self
                    .group_members(client, &id, deadline)
                    .await
                    .map_err(err(format!("members of group {id}")))?;
                if let Some(obj) = one_groups.get_mut(&id) {
                    obj.members = members;
                }
                for key in &query.members {
                    let user = self
                        .find_one(client, ObjectType::User, key, deadline)
                        .await
                        .map_err(err(format!("reading user {key}")))?;
                    if let Some(u) = user {
                        if let Some(uid) =
                            keep(&mut one_users, &mut dir.rejected, ObjectType::User, &u)
                        {
                            principals.push((ObjectType::User, uid));
                        }
                    }
                }
                principals.push((ObjectType::Group, id));
            }
        }
        dir.users = one_users.into_values().collect();
        dir.groups = one_groups.into_values().collect();
        for (ty, id) in principals {
            let mut a = self
                .assignments_of(client, ty, &id, &roles, deadline)
                .await
                .map_err(err(format!("app role assignments of {ty} {id}")))?;
            dir.assignments.append(&mut a);
        }
        Ok(Some(dir))
    }

    fn service_error(&self, context: &str, e: GraphError) -> SourceError {
        SourceError::Graph {
            context: Some(context.to_string()),
            source: e,
        }
    }

    /// What went wrong with the first call, in words an admin can act on.
    fn first_call_error(&self, e: GraphError) -> SourceError {
        let sp = &self.settings.service_principal_id;
        let context = match &e {
            GraphError::Status { status: 404, .. } => format!(
                "service principal {sp} not found: service_principal_id must be the object ID \
                 of the enterprise application (not the app registration's)"
            ),
            _ => format!("reading service principal {sp}"),
        };
        self.service_error(&context, e)
    }
}

/// Follow a paged list from `url` to its end, calling `each(page, index, item)`.
async fn pages(
    client: &GraphClient,
    mut url: Url,
    deadline: Deadline,
    mut each: impl FnMut(usize, usize, &Map<String, Value>),
) -> Result<(), GraphError> {
    for page in 1..=MAX_PAGES {
        let body = client.get(&url, deadline).await?;
        // A page of another shape is never read as "nothing here": a list that reads short
        // would take assignments or members as removed.
        let Some(Value::Array(items)) = body.get("value") else {
            return Err(GraphError::Misshaped {
                path: url.path().to_string(),
                reason: "no \"value\" array".into(),
            });
        };
        for (i, item) in items.iter().enumerate() {
            let Value::Object(m) = item else {
                return Err(GraphError::Misshaped {
                    path: url.path().to_string(),
                    reason: format!("item {i} of page {page} is not a JSON object"),
                });
            };
            each(page, i, m);
        }
        match body.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => url = client.link(&url, next)?,
            None => return Ok(()),
        }
    }
    Err(GraphError::Invalid {
        path: url.path().to_string(),
        reason: format!("more than {MAX_PAGES} pages"),
    })
}

/// Why a delta entry was rejected.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    /// No non-blank string `id`.
    #[error("no id")]
    NoId,
    /// A lenient reading (anything but `false` is enabled) would create a disabled user
    /// active.
    #[error("accountEnabled is neither true nor false: {}", crate::source::file::bounded_key(&value.to_string()))]
    InvalidEnabled { id: String, value: Value },
}

/// An incremental round's overlay applied to a collection: each object as the round left it,
/// or removed.
fn apply_overlay(
    objects: &mut BTreeMap<String, SourceObject>,
    overlay: BTreeMap<String, Option<SourceObject>>,
) {
    for (id, now) in overlay {
        match now {
            Some(o) => objects.insert(id, o),
            None => objects.remove(&id),
        };
    }
}

/// A delta entry's non-blank string `id`.
fn entry_id(entry: &Map<String, Value>) -> Result<&str, EntryError> {
    entry
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or(EntryError::NoId)
}

/// Apply one delta entry to the objects of its collection; its id.
fn apply_entry(
    objects: &mut BTreeMap<String, SourceObject>,
    ty: ObjectType,
    entry: &Map<String, Value>,
) -> Result<String, EntryError> {
    let id = entry_id(entry)?;
    if let Some(removed) = entry.get("@removed") {
        let reason = removed.get("reason").and_then(Value::as_str);
        if reason == Some("deleted") {
            // Permanently deleted: gone from the source, so the planner deletes it.
            objects.remove(id);
        } else {
            // "changed": deleted but restorable from deletedItems
            // (delta-query-overview.md). Entra treats a soft-deleted user as out of scope and
            // disables it, so the object stays, marked the way the model knows soft deletion.
            // An unknown reason is taken as the reversible one.
            let obj = objects
                .entry(id.to_string())
                .or_insert_with(|| SourceObject {
                    id: id.to_string(),
                    object_type: ty,
                    attributes: Default::default(),
                    members: Vec::new(),
                });
            if obj.attr("deletedDateTime").is_none() {
                obj.attributes.insert(
                    "deletedDateTime",
                    Value::String(
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ),
                );
            }
        }
        return Ok(id.to_string());
    }
    // Graph documents a boolean; text "true"/"false" is taken, anything else rejects the user.
    let mut entry = std::borrow::Cow::Borrowed(entry);
    let as_text = match entry.get("accountEnabled") {
        _ if ty != ObjectType::User => None,
        // Absent or null: enabled, as in Entra.
        value => super::enabled_from_json(value).map_err(|()| EntryError::InvalidEnabled {
            id: id.to_string(),
            value: value.cloned().unwrap_or_default(),
        })?,
    };
    if let Some(b) = as_text {
        entry
            .to_mut()
            .insert("accountEnabled".into(), Value::Bool(b));
    }
    let entry = entry.as_ref();
    let previous = objects.remove(id);
    // Without `Prefer: return=minimal` a changed object comes with every selected property
    // that has a value, so its attributes are replaced whole (user-delta.md, "Default: return
    // the same properties as initial delta request"). Relationships come as `@delta`
    // annotations of what changed only; absent means unchanged.
    let mut obj = attributes::to_source_object(ty, id, entry);
    match ty {
        ObjectType::User => {
            let manager = match attributes::manager_delta(entry) {
                Some(m) => m.map(Value::String),
                None => previous
                    .as_ref()
                    .and_then(|p| p.attributes.get(attributes::MANAGER)),
            };
            if let Some(m) = manager {
                obj.attributes.insert(attributes::MANAGER, m);
            }
        }
        ObjectType::Group => {
            let mut members: BTreeSet<String> = previous
                .map(|p| p.members.into_iter().collect())
                .unwrap_or_default();
            // In a first round a large group's members arrive over several entries of the same
            // group; later rounds list additions and `@removed` members
            // (delta-query-groups.md, "Paging through members in a large group").
            if let Some(Value::Array(changes)) = entry.get("members@delta") {
                for m in changes.iter().filter_map(Value::as_object) {
                    let Some(mid) = m.get("id").and_then(Value::as_str) else {
                        continue;
                    };
                    if m.contains_key("@removed") {
                        members.remove(mid);
                    } else if attributes::provisionable_member(m) {
                        members.insert(mid.to_string());
                    }
                }
            }
            obj.members = members.into_iter().collect();
        }
    }
    objects.insert(id.to_string(), obj);
    Ok(id.to_string())
}

/// [`apply_entry`] for an incremental round: the entry applies to the object as the overlay
/// has it, or else as the snapshot's collection has it, and the result goes to the overlay.
fn apply_over(
    base: &BTreeMap<String, SourceObject>,
    overlay: &mut BTreeMap<String, Option<SourceObject>>,
    ty: ObjectType,
    entry: &Map<String, Value>,
) -> Result<String, EntryError> {
    let id = entry_id(entry)?;
    let current = match overlay.get_mut(id) {
        Some(o) => o.take(),
        None => base.get(id).cloned(),
    };
    let mut one: BTreeMap<String, SourceObject> =
        current.map(|o| (id.to_string(), o)).into_iter().collect();
    let result = apply_entry(&mut one, ty, entry);
    // Also on an error: the object as it was stays in the overlay (nothing applied).
    overlay.insert(id.to_string(), one.remove(id));
    result
}

/// What an incremental round changed, as [`Changes`] ids: every object an entry named and,
/// for a group, the members it gained or lost.
fn round_changes(
    base: &BTreeMap<String, SourceObject>,
    overlay: &BTreeMap<String, Option<SourceObject>>,
    ty: ObjectType,
    changes: &mut Changes,
) {
    for (id, now) in overlay {
        match ty {
            ObjectType::User => {
                changes.users.insert(id.clone());
            }
            ObjectType::Group => {
                changes.groups.insert(id.clone());
                let before: BTreeSet<&String> = base
                    .get(id)
                    .map(|g| g.members.iter().collect())
                    .unwrap_or_default();
                let after: BTreeSet<&String> = now
                    .as_ref()
                    .map(|g| g.members.iter().collect())
                    .unwrap_or_default();
                for m in before.symmetric_difference(&after) {
                    changes.users.insert((*m).clone());
                }
            }
        }
    }
}

/// Entra refuses an expired certificate: say so ahead of time (30 days).
fn warn_if_expiring(c: &ClientCertificate, now: i64) {
    const SOON: i64 = 30 * 24 * 3600;
    let left = c.not_after() - now;
    if left <= 0 {
        tracing::warn!(certificate = %c.subject(), thumbprint = %c.sha1_thumbprint(), "the Graph client certificate has expired: Entra will refuse it; upload a new one");
    } else if left < SOON {
        tracing::warn!(certificate = %c.subject(), thumbprint = %c.sha1_thumbprint(), days_left = left / 86_400, "the Graph client certificate expires soon: upload a new one to the app registration");
    }
}

/// The watermark: both delta links, once both collections have one.
fn watermark(s: &Snapshot) -> Option<String> {
    let (u, g) = (s.users.as_ref()?, s.groups.as_ref()?);
    Some(
        serde_json::json!({"users": u.delta_link.as_str(), "groups": g.delta_link.as_str()})
            .to_string(),
    )
}

#[async_trait]
impl Source for GraphSource {
    fn system_name(&self) -> &'static str {
        "Microsoft Entra ID"
    }

    fn describe(&self) -> String {
        format!(
            "Microsoft Graph {} (tenant {}, service principal {})",
            self.settings.graph_url, self.settings.tenant_id, self.settings.service_principal_id
        )
    }

    /// The tenant, the app reading it and the service principal whose assignments count.
    fn identity(&self) -> Option<String> {
        Some(format!(
            "graph tenant {} client {} service principal {}",
            self.settings.tenant_id, self.settings.client_id, self.settings.service_principal_id
        ))
    }

    async fn read(&self, watermark_in: Option<&str>) -> Result<SourceRead, SourceError> {
        self.read_as(watermark_in, false).await
    }

    async fn read_changes(&self, watermark: Option<&str>) -> Result<SourceRead, SourceError> {
        self.read_as(watermark, true).await
    }

    /// A few GETs for the object, its groups or members and their assignments, never a
    /// delta round: the snapshot of the cycles is left as it is.
    async fn read_one(&self, query: &OneQuery) -> Result<Option<OneRead>, SourceError> {
        let client = self.client()?;
        let deadline = Deadline::after(self.settings.read_timeout);
        let dir = self.read_one_dir(client, query, deadline).await?;
        Ok(dir.and_then(|d| super::one::pick_one(d, query)))
    }

    fn reads_changes(&self) -> bool {
        true
    }

    async fn view(&self, focus: Option<(&Changes, &[String])>) -> Option<Directory> {
        let s = self.snapshot.lock().await;
        let (users, groups, last) = (s.users.as_ref()?, s.groups.as_ref()?, s.last.as_ref()?);
        Some(match focus {
            Some((changes, references)) => crate::model::view::view(
                &users.objects,
                &groups.objects,
                &last.assignments,
                &last.rejected,
                last.complete,
                changes,
                references,
            ),
            None => Directory {
                users: users.objects.values().cloned().collect(),
                groups: groups.objects.values().cloned().collect(),
                assignments: last.assignments.clone(),
                rejected: last.rejected.clone(),
                complete: last.complete,
            },
        })
    }

    async fn wants_snapshot(&self) -> bool {
        let s = self.snapshot.lock().await;
        s.users.is_none() && s.groups.is_none()
    }

    async fn restore(&self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let restored = persist::decode(bytes, &self.snapshot_context())?;
        let mut s = self.snapshot.lock().await;
        // A snapshot the source built itself meanwhile is newer: keep it.
        if s.users.is_none() && s.groups.is_none() {
            tracing::info!(
                users = restored.users.as_ref().map(|c| c.objects.len()),
                groups = restored.groups.as_ref().map(|c| c.objects.len()),
                full_read_at = ?restored.full_at,
                "Graph snapshot restored from the state store: reading only changes"
            );
            *s = restored;
        }
        Ok(())
    }

    async fn snapshot(&self) -> Option<Vec<u8>> {
        let mut s = self.snapshot.lock().await;
        let recent = s
            .taken_at
            .is_some_and(|t| t.elapsed() < super::SNAPSHOT_EVERY);
        if !s.dirty || recent || s.users.is_none() || s.groups.is_none() {
            return None;
        }
        s.dirty = false;
        s.taken_at = Some(Instant::now());
        Some(persist::encode(&s, &self.snapshot_context()))
    }

    async fn checks_deleted_items(&self) -> bool {
        self.snapshot.lock().await.users_read_whole
    }

    /// `GET /directory/deletedItems/microsoft.graph.user/{id}` for each (`api/
    /// directory-deleteditems-get.md`): found ⇒ soft-deleted, restorable, returned with its
    /// `deletedDateTime` so that it is disabled as Entra does; `404` ⇒ gone. Any other failure
    /// fails the lot: the cycle then deletes nothing rather than guess.
    async fn soft_deleted(&self, missing: &[String]) -> Result<Vec<SourceObject>, SourceError> {
        let client = self.client()?;
        let deadline = Deadline::after(self.settings.read_timeout);
        let mut results = futures::stream::iter(missing.iter().cloned())
            .map(|id| async move {
                let url = client.url(
                    &["directory", "deletedItems", "microsoft.graph.user", &id],
                    &[],
                )?;
                match client.get(&url, deadline).await {
                    Ok(entry) => Ok(Some((id, entry))),
                    Err(GraphError::Status { status: 404, .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(MEMBER_READS_IN_FLIGHT);
        let mut out = Vec::new();
        let mut gone = 0usize;
        while let Some(result) = results.next().await {
            match result {
                Ok(Some((id, entry))) => {
                    let mut obj = attributes::to_source_object(ObjectType::User, &id, &entry);
                    if !obj.soft_deleted() {
                        // In the recycle bin whatever the answer says: soft-deleted.
                        obj.attributes.insert(
                            "deletedDateTime",
                            Value::String(chrono::Utc::now().to_rfc3339()),
                        );
                    }
                    out.push(obj);
                }
                Ok(None) => gone += 1,
                Err(e) => {
                    return Err(SourceError::Graph {
                        context: Some("deleted items".into()),
                        source: e,
                    })
                }
            }
        }
        tracing::info!(
            asked = missing.len(),
            soft_deleted = out.len(),
            gone,
            "Graph deleted items consulted for users a full read did not find"
        );
        Ok(out)
    }

    async fn test_connection(&self) -> Result<String, SourceError> {
        let client = self.client()?;
        let deadline = Deadline::after(self.settings.request_timeout * 4);
        client.token(deadline).await.map_err(|e| {
            self.service_error(
                &format!(
                    "no access token for client {} in tenant {}",
                    self.settings.client_id, self.settings.tenant_id
                ),
                e,
            )
        })?;
        let url = client
            .url(
                &["servicePrincipals", &self.settings.service_principal_id],
                &[("$select", "id,appDisplayName")],
            )
            .map_err(|e| self.service_error("graph_url", e))?;
        let sp = client
            .get(&url, deadline)
            .await
            .map_err(|e| self.first_call_error(e))?;
        let name = sp
            .get("appDisplayName")
            .and_then(Value::as_str)
            .unwrap_or("(no appDisplayName)");
        Ok(format!(
            "token from {} for client {} with {}; service principal {} ({name:?}) readable at {}",
            client.token_url(),
            self.settings.client_id,
            self.settings.credential.describe(),
            self.settings.service_principal_id,
            self.settings.graph_url
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    fn apply(objects: &mut BTreeMap<String, SourceObject>, ty: ObjectType, v: Value) {
        apply_entry(objects, ty, v.as_object().unwrap()).unwrap();
    }

    #[test]
    fn removals_soft_and_hard() {
        let mut o = BTreeMap::new();
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "a", "displayName": "A"}),
        );
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "b", "displayName": "B"}),
        );
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "a", "@removed": {"reason": "changed"}}),
        );
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "b", "@removed": {"reason": "deleted"}}),
        );
        assert!(o["a"].soft_deleted());
        assert_eq!(o["a"].attr("displayName"), Some(json!("A")));
        assert!(!o.contains_key("b"));
        // Restored: the object comes back whole, no longer soft-deleted.
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "a", "displayName": "A"}),
        );
        assert!(!o["a"].soft_deleted());
    }

    #[test]
    fn manager_is_kept_unless_the_delta_says_otherwise() {
        let mut o = BTreeMap::new();
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "a", "manager@delta": [{"id": "m"}]}),
        );
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "a", "jobTitle": "X"}),
        );
        assert_eq!(o["a"].attr("manager"), Some(json!("m")));
        apply(
            &mut o,
            ObjectType::User,
            json!({"id": "a", "manager@delta": [{"id": "m", "@removed": {"reason": "deleted"}}]}),
        );
        assert!(o["a"].attr("manager").is_none());
    }

    #[test]
    fn members_accumulate_and_change() {
        let mut o = BTreeMap::new();
        apply(
            &mut o,
            ObjectType::Group,
            json!({"id": "g", "displayName": "G", "members@delta": [
                {"@odata.type": "#microsoft.graph.user", "id": "a"},
                {"@odata.type": "#microsoft.graph.device", "id": "d"}]}),
        );
        apply(
            &mut o,
            ObjectType::Group,
            json!({"id": "g", "displayName": "G", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "b"}]}),
        );
        assert_eq!(o["g"].members, vec!["a", "b"]);
        apply(
            &mut o,
            ObjectType::Group,
            json!({"id": "g", "displayName": "G2", "members@delta": [
                {"@odata.type": "#microsoft.graph.user", "id": "a", "@removed": {"reason": "deleted"}},
                {"@odata.type": "#microsoft.graph.group", "id": "h"}]}),
        );
        assert_eq!(o["g"].members, vec!["b", "h"]);
        assert_eq!(o["g"].attr("displayName"), Some(json!("G2")));
        apply(
            &mut o,
            ObjectType::Group,
            json!({"id": "g", "displayName": "G3"}),
        );
        assert_eq!(
            o["g"].members,
            vec!["b", "h"],
            "no members@delta: unchanged"
        );
    }

    #[test]
    fn settings_debug_redacts_the_secret() {
        let s = GraphSettings::new("t", "c", SecretString::from("hunter2-secret"), "sp").unwrap();
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2"), "{text}");
        let source = GraphSource::new(s);
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
