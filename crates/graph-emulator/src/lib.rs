//! A Microsoft Graph emulator: one Entra tenant in memory, with the token endpoint and the
//! Graph endpoints the Graph source reads, shaped as the Graph docs describe them, plus fault
//! injection. For provisiond's tests; built like its SCIM sandbox (hyper, one task per
//! connection, a handle to change the data and inject faults).
//!
//! A dev-only crate, not part of the product: it is written from Microsoft's docs, not from
//! provisiond's Graph client, and depends on nothing in provisiond, so the client is tested
//! against an independent reading of the docs.
//!
//! Served on one address: the authority is `http://ADDR`, Graph is `http://ADDR/v1.0`.
//!
//! | Endpoint | Follows (microsoft-graph-docs) |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/token` | `concepts/auth-v2-service.md`, "4. Request an access token"; errors as the identity platform's `{"error", "error_description": "AADSTS…", "error_codes"}`. A client secret, or a certificate credential's client assertion (entra-docs `identity-platform/certificate-credentials.md`), checked against [`GraphEmulatorConfig::client_certificates`] |
//! | `GET /v1.0/users/delta`, `/v1.0/groups/delta` | `api-reference/v1.0/api/user-delta.md`, `group-delta.md`, `concepts/delta-query-overview.md`, `delta-query-groups.md` |
//! | `GET /v1.0/servicePrincipals/{id}` | `api/serviceprincipal-get.md` (`$select` honoured) |
//! | `GET /v1.0/servicePrincipals/{id}/appRoleAssignedTo` | `api/serviceprincipal-list-approleassignedto.md` |
//! | `GET /v1.0/groups/{id}/members` | `api/group-list-members.md` |
//! | `GET /v1.0/directory/deletedItems/microsoft.graph.user/{id}` | `api/directory-deleteditems-get.md`: a soft-deleted user with its `deletedDateTime`; `404 Request_ResourceNotFound` for one deleted permanently or never there |
//!
//! Delta tokens encode the tenant's version: a round started from a `deltaLink` returns only
//! objects changed since that version, `@removed` entries for deleted ones (reason `changed`
//! for a soft delete, `deleted` for a permanent one), `manager@delta` and `members@delta`
//! with what changed. [`GraphHandle::expire_delta_tokens`] makes every earlier delta token
//! answer `410 Gone` with code `syncStateNotFound` (`delta-query-overview.md`, "Synchronization
//! reset", "Token duration"). Every list is paged with `@odata.nextLink` at
//! [`GraphEmulatorConfig::page_size`] entries; in the first round a group's members are split
//! over several entries of the same group, as `delta-query-groups.md` describes for large
//! groups. Errors use Graph's `{"error": {"code", "message", "innerError"}}`
//! (`concepts/errors.md`); a request without a valid token gets `401`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};

mod certificate;
mod docs;
mod fault;

pub use fault::{DropWhen, FaultAction, FaultRule};

use docs::{CLIENT_ASSERTION_TYPE, GROUP_PROPERTIES, USER_PROPERTIES};
use fault::{active, lock, ActiveFault};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

const JSON: &str = "application/json";
const MAX_BODY: usize = 1024 * 1024;

/// The tenant the emulator plays.
#[derive(Debug, Clone)]
pub struct GraphEmulatorConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Certificates (DER) uploaded to the app registration ("Certificates & secrets"): a
    /// client assertion signed by one of their keys is accepted as well as the secret.
    pub client_certificates: Vec<Vec<u8>>,
    /// Object id of the enterprise application whose assignments are listed.
    pub service_principal_id: String,
    pub app_display_name: String,
    /// Entries per page of every list (small, so tests page).
    pub page_size: usize,
    /// `expires_in` of the access tokens issued.
    pub token_lifetime: Duration,
    /// Faults injected from the start (paths as requested, e.g. `/v1.0/users/delta`).
    pub faults: Vec<FaultRule>,
}

impl Default for GraphEmulatorConfig {
    fn default() -> Self {
        GraphEmulatorConfig {
            tenant_id: "11111111-2222-3333-4444-555555555555".into(),
            client_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            client_secret: SecretString::from("emulator-client-secret"),
            client_certificates: Vec::new(),
            service_principal_id: "99999999-8888-7777-6666-555555555555".into(),
            app_display_name: "Robin".into(),
            page_size: 2,
            token_lifetime: Duration::from_secs(3599),
            faults: Vec::new(),
        }
    }
}

/// Which collection an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    #[serde(rename = "users")]
    User,
    #[serde(rename = "groups")]
    Group,
}

impl Kind {
    fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
        }
    }
    fn collection(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Group => "groups",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Entity {
    /// Graph properties, `id` excluded; a null value is a property set to null.
    data: Map<String, Value>,
    /// Version of the last change of a property.
    changed: u64,
    manager: Option<String>,
    /// The manager before the last manager change (for `@removed` in `manager@delta`).
    previous_manager: Option<String>,
    manager_changed: u64,
    members: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Removal {
    kind: Kind,
    id: String,
    version: u64,
    reason: &'static str,
}

#[derive(Debug, Default)]
struct Tenant {
    version: u64,
    users: BTreeMap<String, Entity>,
    groups: BTreeMap<String, Entity>,
    removed: Vec<Removal>,
    /// (group, member, version) of every membership change.
    member_log: Vec<(String, String, u64)>,
    /// Delta tokens older than this are expired.
    oldest_valid_token: u64,
    app_roles: Vec<Value>,
    /// appRoleAssignment objects, in creation order.
    assignments: Vec<Value>,
    /// Soft-deleted users (Entra's recycle bin), by id, with their `deletedDateTime`.
    deleted_users: BTreeMap<String, Entity>,
}

impl Tenant {
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn objects(&self, kind: Kind) -> &BTreeMap<String, Entity> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    fn objects_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Entity> {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    fn kind_of(&self, id: &str) -> Option<Kind> {
        if self.users.contains_key(id) {
            Some(Kind::User)
        } else if self.groups.contains_key(id) {
            Some(Kind::Group)
        } else {
            None
        }
    }

    fn put(&mut self, kind: Kind, mut value: Value) -> String {
        let v = self.bump();
        let obj = value
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut data = obj;
        let id = match data.remove("id") {
            Some(Value::String(s)) => s,
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let members = data.remove("members");
        let manager = data.remove("manager");
        // Put back (restored, or created again with the same id): no longer in the bin.
        self.deleted_users.remove(&id);
        let e = self.objects_mut(kind).entry(id.clone()).or_default();
        e.data = data;
        e.changed = v;
        if let Some(Value::String(m)) = manager {
            e.previous_manager = e.manager.replace(m);
            e.manager_changed = v;
        }
        if let Some(Value::Array(ms)) = members {
            let ids: Vec<String> = ms
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect();
            for m in ids {
                self.add_member(&id, &m);
            }
        }
        id
    }

    fn update(&mut self, kind: Kind, id: &str, patch: &Value) -> bool {
        let v = self.bump();
        let Some(e) = self.objects_mut(kind).get_mut(id) else {
            return false;
        };
        if let Some(p) = patch.as_object() {
            for (k, val) in p {
                e.data.insert(k.clone(), val.clone());
            }
        }
        e.changed = v;
        true
    }

    fn remove(&mut self, kind: Kind, id: &str, permanently: bool) -> bool {
        let v = self.bump();
        let Some(mut gone) = self.objects_mut(kind).remove(id) else {
            return false;
        };
        if kind == Kind::User && !permanently {
            // directory-deleteditems-get.md: a soft-deleted object keeps its properties and
            // gains deletedDateTime; it stays readable under /directory/deletedItems.
            gone.data
                .insert("deletedDateTime".into(), json!("2026-01-01T00:00:00Z"));
            self.deleted_users.insert(id.to_string(), gone);
        }
        self.removed.push(Removal {
            kind,
            id: id.to_string(),
            version: v,
            reason: if permanently { "deleted" } else { "changed" },
        });
        // A deleted object leaves its groups, and its assignments go with it.
        let groups: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.members.contains(id))
            .map(|(gid, _)| gid.clone())
            .collect();
        for g in groups {
            self.remove_member(&g, id);
        }
        self.assignments
            .retain(|a| a.get("principalId").and_then(Value::as_str) != Some(id));
        true
    }

    fn add_member(&mut self, group: &str, member: &str) -> bool {
        let v = self.bump();
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        g.members.insert(member.to_string());
        self.member_log
            .push((group.to_string(), member.to_string(), v));
        true
    }

    fn remove_member(&mut self, group: &str, member: &str) -> bool {
        let v = self.bump();
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        let was = g.members.remove(member);
        self.member_log
            .push((group.to_string(), member.to_string(), v));
        was
    }

    fn set_manager(&mut self, user: &str, manager: Option<&str>) -> bool {
        let v = self.bump();
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        u.previous_manager = u.manager.take();
        u.manager = manager.map(str::to_string);
        u.manager_changed = v;
        u.changed = v;
        true
    }

    fn member_ref(&self, id: &str) -> Value {
        let kind = self.kind_of(id).unwrap_or(Kind::User);
        json!({"@odata.type": kind.odata_type(), "id": id})
    }

    /// The entries `offset..offset + page_size` of one delta round (`since` = None: the first
    /// round), at version `snap`, and whether more follow. Only the page's entries are built
    /// (building every entry for each page made a 1,000,000-user round quadratic).
    fn delta_entries(
        &self,
        kind: Kind,
        since: Option<u64>,
        snap: u64,
        select: &[String],
        page_size: usize,
        offset: usize,
    ) -> (Vec<Value>, bool) {
        let in_window = |v: u64| since.is_none_or(|s| v > s) && v <= snap;
        let selected = |name: &str| select.iter().any(|s| s.eq_ignore_ascii_case(name));
        let page_size = page_size.max(1);
        let end = offset.saturating_add(page_size);
        let mut out = Vec::new();
        // Entries counted so far; past `end`, more follow.
        let mut n = 0usize;
        // The members each group gained or lost in the window, in one pass over the log.
        let mut touched_by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        if since.is_some() && kind == Kind::Group {
            for (g, m, v) in &self.member_log {
                if in_window(*v) {
                    touched_by.entry(g.as_str()).or_default().insert(m.as_str());
                }
            }
        }
        for (id, e) in self.objects(kind) {
            if n > end {
                break;
            }
            // How many entries this object gives, decided before building any.
            let count = match kind {
                Kind::User => {
                    let manager_changed = in_window(e.manager_changed) && e.manager_changed > 0;
                    usize::from(since.is_none() || in_window(e.changed) || manager_changed)
                }
                Kind::Group => {
                    let touched = touched_by.get(id.as_str()).map_or(0, BTreeSet::len);
                    if since.is_some() && !in_window(e.changed) && touched == 0 {
                        0
                    } else if !selected("members") {
                        1
                    } else {
                        let refs = if since.is_none() {
                            e.members.len()
                        } else {
                            touched
                        };
                        refs.div_ceil(page_size).max(1)
                    }
                }
            };
            if count == 0 || n + count <= offset || n >= end {
                n += count;
                continue;
            }
            let first = n;
            n += count;
            let mut props = Map::new();
            props.insert("id".into(), Value::String(id.clone()));
            for (k, v) in &e.data {
                if selected(k) {
                    props.insert(k.clone(), v.clone());
                }
            }
            match kind {
                Kind::User => {
                    let manager_changed = in_window(e.manager_changed) && e.manager_changed > 0;
                    if selected("manager") {
                        let delta = match (&e.manager, since.is_none(), manager_changed) {
                            (Some(m), true, _) | (Some(m), false, true) => {
                                Some(vec![self.member_ref(m)])
                            }
                            (None, false, true) => e.previous_manager.as_ref().map(|p| {
                                let mut r = self.member_ref(p);
                                if let Some(o) = r.as_object_mut() {
                                    o.insert("@removed".into(), json!({"reason": "deleted"}));
                                }
                                vec![r]
                            }),
                            _ => None,
                        };
                        if let Some(d) = delta {
                            props.insert("manager@delta".into(), Value::Array(d));
                        }
                    }
                    out.push(Value::Object(props));
                }
                Kind::Group => {
                    // Objects outside the window gave `count == 0` above and were skipped.
                    let touched = touched_by.remove(id.as_str()).unwrap_or_default();
                    if !selected("members") {
                        out.push(Value::Object(props));
                        continue;
                    }
                    let refs: Vec<Value> = if since.is_none() {
                        e.members.iter().map(|m| self.member_ref(m)).collect()
                    } else {
                        touched
                            .iter()
                            .map(|m| {
                                let mut r = self.member_ref(m);
                                if !e.members.contains(*m) {
                                    if let Some(o) = r.as_object_mut() {
                                        o.insert("@removed".into(), json!({"reason": "deleted"}));
                                    }
                                }
                                r
                            })
                            .collect()
                    };
                    if refs.is_empty() {
                        out.push(Value::Object(props));
                        continue;
                    }
                    // A group with many members comes back several times, each time with
                    // a part of its members (delta-query-groups.md, "Paging through members
                    // in a large group").
                    for (i, chunk) in refs.chunks(page_size).enumerate() {
                        if (offset..end).contains(&(first + i)) {
                            let mut p = props.clone();
                            p.insert("members@delta".into(), Value::Array(chunk.to_vec()));
                            out.push(Value::Object(p));
                        }
                    }
                }
            }
        }
        if since.is_some() {
            let mut seen = BTreeSet::new();
            for r in self.removed.iter().rev() {
                if r.kind == kind
                    && in_window(r.version)
                    && !self.objects(kind).contains_key(&r.id)
                    && seen.insert(r.id.clone())
                {
                    if (offset..end).contains(&n) {
                        out.push(json!({"id": r.id, "@removed": {"reason": r.reason}}));
                    }
                    n += 1;
                }
            }
        }
        (out, n > end)
    }
}

/// A delta round's position, carried in `$skiptoken` / `$deltatoken` as Graph does (opaque to
/// clients; here base64url JSON).
#[derive(Debug, Serialize, Deserialize)]
struct DeltaState {
    kind: Kind,
    since: Option<u64>,
    snap: u64,
    offset: usize,
    select: Vec<String>,
}

fn encode_state(s: &DeltaState) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(s).unwrap_or_default())
}

fn decode_state(t: &str) -> Option<DeltaState> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t.trim())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

struct Shared {
    config: GraphEmulatorConfig,
    base_url: String,
    tenant: Mutex<Tenant>,
    faults: Mutex<Vec<ActiveFault>>,
    /// Access tokens issued, with their expiry.
    tokens: Mutex<HashMap<String, Instant>>,
    log: Mutex<Vec<String>>,
    tokens_issued: std::sync::atomic::AtomicU64,
    /// Header and claims of the last client assertion received.
    last_assertion: Mutex<Option<(Value, Value)>>,
}

impl Shared {
    fn fault_for(&self, method: &str, path: &str) -> Option<FaultAction> {
        fault::fault_for(&self.faults, method, path)
    }

    fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }
}

/// A running emulator. Dropping it or [`GraphHandle::shutdown`] stops it.
pub struct GraphHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts an emulator on `listen` (`127.0.0.1:0` picks a free port).
pub async fn spawn(
    listen: SocketAddr,
    config: GraphEmulatorConfig,
) -> Result<GraphHandle, EmulatorError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: listen,
            source,
        })?;
    let faults = active(config.faults.clone());
    let shared = Arc::new(Shared {
        config,
        base_url: format!("http://{addr}"),
        tenant: Mutex::new(Tenant::default()),
        faults: Mutex::new(faults),
        tokens: Mutex::new(HashMap::new()),
        log: Mutex::new(Vec::new()),
        tokens_issued: Default::default(),
        last_assertion: Mutex::new(None),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, shared.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(GraphHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

impl GraphHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The authority (`http://ADDR`), to configure as `authority`.
    pub fn authority(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The Graph endpoint (`http://ADDR/v1.0`), to configure as `graph_url`.
    pub fn graph_url(&self) -> String {
        self.shared.graph_url()
    }

    pub fn config(&self) -> &GraphEmulatorConfig {
        &self.shared.config
    }

    /// Creates or replaces a user (`id` kept if given). `manager` (an id) sets its manager.
    pub fn put_user(&self, user: Value) -> String {
        lock(&self.shared.tenant).put(Kind::User, user)
    }

    /// Sets properties of a user (a null clears one). False if there is no such user.
    pub fn update_user(&self, id: &str, patch: Value) -> bool {
        lock(&self.shared.tenant).update(Kind::User, id, &patch)
    }

    /// Deletes a user: soft (restorable, `@removed` reason `changed`) or permanently
    /// (`deleted`). Its memberships and assignments go with it.
    pub fn delete_user(&self, id: &str, permanently: bool) -> bool {
        lock(&self.shared.tenant).remove(Kind::User, id, permanently)
    }

    pub fn set_manager(&self, user: &str, manager: Option<&str>) -> bool {
        lock(&self.shared.tenant).set_manager(user, manager)
    }

    /// Creates or replaces a group; `members` (ids) adds members.
    pub fn put_group(&self, group: Value) -> String {
        lock(&self.shared.tenant).put(Kind::Group, group)
    }

    pub fn update_group(&self, id: &str, patch: Value) -> bool {
        lock(&self.shared.tenant).update(Kind::Group, id, &patch)
    }

    pub fn delete_group(&self, id: &str, permanently: bool) -> bool {
        lock(&self.shared.tenant).remove(Kind::Group, id, permanently)
    }

    pub fn add_member(&self, group: &str, member: &str) -> bool {
        lock(&self.shared.tenant).add_member(group, member)
    }

    pub fn remove_member(&self, group: &str, member: &str) -> bool {
        lock(&self.shared.tenant).remove_member(group, member)
    }

    /// The service principal's `appRoles` (objects with `id`, `displayName`, `value`, …).
    pub fn set_app_roles(&self, roles: Vec<Value>) {
        lock(&self.shared.tenant).app_roles = roles;
    }

    /// Assigns a user or group to the application with `app_role_id`; returns the
    /// assignment's id.
    pub fn assign(&self, principal_id: &str, app_role_id: &str) -> String {
        let mut t = lock(&self.shared.tenant);
        let (ptype, name) = match t.kind_of(principal_id) {
            Some(Kind::Group) => ("Group", t.groups.get(principal_id)),
            _ => ("User", t.users.get(principal_id)),
        };
        let name = name
            .and_then(|e| e.data.get("displayName").cloned())
            .unwrap_or(Value::Null);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let a = json!({
            "id": id,
            "deletedDateTime": null,
            "appRoleId": app_role_id,
            "createdDateTime": chrono::Utc::now().to_rfc3339(),
            "principalDisplayName": name,
            "principalId": principal_id,
            "principalType": ptype,
            "resourceDisplayName": self.shared.config.app_display_name,
            "resourceId": self.shared.config.service_principal_id,
        });
        t.assignments.push(a);
        id
    }

    /// Removes every assignment of a principal.
    pub fn unassign(&self, principal_id: &str) {
        lock(&self.shared.tenant)
            .assignments
            .retain(|a| a.get("principalId").and_then(Value::as_str) != Some(principal_id));
    }

    /// Every delta token issued so far answers 410 Gone (`syncStateNotFound`) from now on.
    pub fn expire_delta_tokens(&self) {
        let mut t = lock(&self.shared.tenant);
        t.oldest_valid_token = t.version + 1;
    }

    /// Every access token issued so far is refused (401) from now on.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared
            .tokens_issued
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the fault rules (counters start afresh).
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        *lock(&self.shared.faults) = active(rules);
    }

    /// Requests received, as `METHOD /path?decoded=query` (token requests included, without
    /// their body).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// Header and claims (decoded JSON) of the last client assertion a token request carried,
    /// valid or not.
    pub fn last_client_assertion(&self) -> Option<(Value, Value)> {
        lock(&self.shared.last_assertion).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GraphHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, shared.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Graph emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    let handler_kill = kill.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let kill = handler_kill.clone();
        async move { Ok::<_, Infallible>(handle(shared, kill, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "Graph emulator connection ended with an error");
            }
        }
        () = kill.notified() => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    retry_after: Option<String>,
    location: Option<String>,
}

impl Reply {
    fn json(status: StatusCode, v: &Value) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(v).unwrap_or_default(),
            retry_after: None,
            location: None,
        }
    }

    /// Graph's error body (`concepts/errors.md`).
    fn error(status: StatusCode, code: &str, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"error": {"code": code, "message": message, "innerError": {
                "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "request-id": uuid::Uuid::new_v4().to_string(),
                "client-request-id": uuid::Uuid::new_v4().to_string(),
            }}}),
        )
    }

    /// The identity platform's token error body.
    fn token_error(status: StatusCode, error: &str, code: u64, description: &str) -> Reply {
        let trace = uuid::Uuid::new_v4();
        let correlation = uuid::Uuid::new_v4();
        let now = chrono::Utc::now();
        Reply::json(
            status,
            &json!({
                "error": error,
                "error_description": format!(
                    "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {}",
                    now.format("%Y-%m-%d %H:%M:%SZ")
                ),
                "error_codes": [code],
                "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                "trace_id": trace.to_string(),
                "correlation_id": correlation.to_string(),
            }),
        )
    }

    fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
        if let Some(v) = self
            .retry_after
            .and_then(|r| HeaderValue::from_str(&r).ok())
        {
            h.insert(RETRY_AFTER, v);
        }
        if let Some(v) = self.location.and_then(|r| HeaderValue::from_str(&r).ok()) {
            h.insert(LOCATION, v);
        }
        resp
    }
}

async fn handle(shared: Arc<Shared>, kill: Arc<Notify>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let query: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let decoded = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    lock(&shared.log).push(if decoded.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{decoded}")
    });
    let fault = shared.fault_for(&method, &path);
    match &fault {
        Some(FaultAction::Status {
            status,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut reply = match body {
                Some(raw) => Reply {
                    status,
                    body: raw.clone().into_bytes(),
                    retry_after: None,
                    location: None,
                },
                None => {
                    let code = match status.as_u16() {
                        429 => "TooManyRequests",
                        503 => "serviceNotAvailable",
                        403 => "Authorization_RequestDenied",
                        _ => "generalException",
                    };
                    let message = match status.as_u16() {
                        403 => "Insufficient privileges to complete the operation.",
                        _ => "fault injected by the Graph emulator",
                    };
                    Reply::error(status, code, message)
                }
            };
            reply.retry_after = retry_after.clone();
            return reply.into_response();
        }
        Some(FaultAction::Delay { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
        }
        Some(FaultAction::Drop {
            drop: DropWhen::Before,
        }) => {
            kill.notify_one();
            return std::future::pending().await;
        }
        _ => {}
    }
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
                .into_response()
        }
    };
    let reply = route(&shared, &method, &path, &query, &headers, &body);
    match fault {
        Some(FaultAction::Drop {
            drop: DropWhen::After,
        }) => {
            kill.notify_one();
            std::future::pending().await
        }
        Some(FaultAction::Truncate { truncate: true }) => {
            let mut r = reply;
            let half = r.body.len() / 2;
            r.body.truncate(half.max(1));
            r.into_response()
        }
        _ => reply.into_response(),
    }
}

fn route(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Reply {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let [tenant, "oauth2", "v2.0", "token"] = segments.as_slice() {
        if method != "POST" {
            return Reply::error(StatusCode::METHOD_NOT_ALLOWED, "BadRequest", "POST only");
        }
        return token(shared, tenant, body);
    }
    let rest: &[&str] = match segments.split_first() {
        Some((&"v1.0", rest)) => rest,
        _ => return Reply::error(StatusCode::NOT_FOUND, "BadRequest", "no such endpoint"),
    };
    if !authorized(shared, headers) {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        );
    }
    if method != "GET" {
        return Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "the emulator serves GET only",
        );
    }
    let param = Query(query);
    match rest {
        ["users", "delta"] => delta(shared, Kind::User, &param),
        ["groups", "delta"] => delta(shared, Kind::Group, &param),
        ["servicePrincipals", id] => service_principal(shared, id, &param),
        ["servicePrincipals", id, "appRoleAssignedTo"] => assignments(shared, id, &param),
        ["groups", id, "members"] => members(shared, id, &param),
        // Provision on demand reads one object and what its scope depends on.
        ["users"] => list_filtered(shared, Kind::User, &param),
        ["groups"] => list_filtered(shared, Kind::Group, &param),
        ["users", id] => get_one(shared, Kind::User, id, &param),
        ["groups", id] => get_one(shared, Kind::Group, id, &param),
        ["users", id, "memberOf"] => member_of(shared, id, &param),
        ["users", id, "appRoleAssignments"] => {
            principal_assignments(shared, Kind::User, id, &param)
        }
        ["groups", id, "appRoleAssignments"] => {
            principal_assignments(shared, Kind::Group, id, &param)
        }
        ["directory", "deletedItems", "microsoft.graph.user", id] => deleted_user(shared, id),
        _ => Reply::error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{}'.", rest.join("/")),
        ),
    }
}

/// The decoded query parameters of a request (names case-insensitive).
struct Query<'a>(&'a [(String, String)]);

impl Query<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn authorized(shared: &Shared, headers: &hyper::HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    lock(&shared.tokens)
        .get(token.trim())
        .is_some_and(|exp| Instant::now() < *exp)
}

/// `POST /{tenant}/oauth2/v2.0/token`, client credentials only.
fn token(shared: &Shared, tenant: &str, body: &[u8]) -> Reply {
    let c = &shared.config;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if tenant != c.tenant_id {
        return Reply::token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    if get("grant_type") != "client_credentials" {
        return Reply::token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if get("client_id") != c.client_id {
        return Reply::token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'.",
                get("client_id")
            ),
        );
    }
    let assertion_type = form.get("client_assertion_type");
    let assertion = form.get("client_assertion");
    if assertion_type.is_some() || assertion.is_some() {
        let (Some(CLIENT_ASSERTION_TYPE), Some(assertion)) =
            (assertion_type.map(String::as_str), assertion)
        else {
            return Reply::token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                &format!("Invalid JWT token. client_assertion_type must be '{CLIENT_ASSERTION_TYPE}' and come with a client_assertion."),
            );
        };
        let audience = format!("{}/{tenant}/oauth2/v2.0/token", shared.base_url);
        if let Err(reply) = check_assertion(shared, assertion, &audience) {
            return reply;
        }
    } else if get("client_secret").is_empty() {
        return Reply::token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    } else if get("client_secret") != c.client_secret.expose_secret() {
        return Reply::token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", c.client_id),
        );
    }
    let want_scope = format!("{}/.default", shared.base_url);
    if get("scope") != want_scope {
        return Reply::token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                get("scope")
            ),
        );
    }
    let access = format!("emu.{}", uuid::Uuid::new_v4().simple());
    lock(&shared.tokens).insert(access.clone(), Instant::now() + c.token_lifetime);
    shared
        .tokens_issued
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = c.token_lifetime.as_secs();
    Reply::json(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": access}),
    )
}

/// Checks a client assertion as Entra does for a certificate credential (entra-docs
/// `identity-platform/certificate-credentials.md`): the current format (`PS256`, `x5t#S256`)
/// and the earlier one (`RS256`, `x5t`) are both accepted; the thumbprint must name a
/// certificate of [`GraphEmulatorConfig::client_certificates`] whose key verifies the
/// signature; `aud` must be this token endpoint, `iss` and `sub` the client id, and now must
/// lie between `nbf` and `exp`. The AADSTS codes and wording follow Entra's answers as quoted
/// in public reports of them (700027 key not found or bad signature, 700023 audience, 700024
/// time range, 50027 no thumbprint; 7000218 no credential at all); 700021 for a wrong
/// `iss`/`sub` is Entra's code as we know it, not checked against a quoted answer.
fn check_assertion(shared: &Shared, assertion: &str, audience: &str) -> Result<(), Reply> {
    use certificate::{rsa_public_key, x5t_s256, x5t_sha1};
    use ring::signature::{
        UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    };
    let c = &shared.config;
    let invalid = |what: &str| {
        Reply::token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            50027,
            &format!("Invalid JWT token. {what}"),
        )
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts.as_slice() else {
        return Err(invalid("The token is not a signed JWT (three parts)."));
    };
    let object = |part: &str| -> Option<Value> {
        let bytes = b64.decode(part).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    let (Some(header), Some(claims)) = (object(header_b64), object(claims_b64)) else {
        return Err(invalid(
            "The token header or payload is not base64url JSON.",
        ));
    };
    *lock(&shared.last_assertion) = Some((header.clone(), claims.clone()));
    let Ok(signature) = b64.decode(signature_b64) else {
        return Err(invalid("The signature is not base64url."));
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let algorithm: &dyn ring::signature::VerificationAlgorithm =
        match text(&header, "alg").as_deref() {
            Some("PS256") => &RSA_PSS_2048_8192_SHA256,
            Some("RS256") => &RSA_PKCS1_2048_8192_SHA256,
            other => {
                return Err(invalid(&format!(
                    "Unsupported signing algorithm {other:?} in token header."
                )))
            }
        };
    let (thumbprint, found) = if let Some(t) = text(&header, "x5t#S256") {
        let found = c.client_certificates.iter().find(|d| x5t_s256(d) == t);
        (t, found)
    } else if let Some(t) = text(&header, "x5t") {
        let found = c.client_certificates.iter().find(|d| x5t_sha1(d) == t);
        (t, found)
    } else {
        return Err(invalid(
            "No certificate thumbprint specified in token header.",
        ));
    };
    // Entra quotes the thumbprint in hex.
    let thumbprint_hex: String = b64
        .decode(&thumbprint)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let keys_hint = format!(
        "Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.",
        c.client_id
    );
    let bad_signature = |reason: &str| {
        Reply::token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
            &format!("Client assertion contains an invalid signature. [Reason - {reason}, Thumbprint of key used by client: '{thumbprint_hex}', {keys_hint}]"),
        )
    };
    let Some(der) = found else {
        return Err(bad_signature("The key was not found."));
    };
    let Some(rsa_public_key) = rsa_public_key(der) else {
        return Err(bad_signature(
            "The key was found, but it is not an RSA key.",
        ));
    };
    let signed = format!("{header_b64}.{claims_b64}");
    if UnparsedPublicKey::new(algorithm, &rsa_public_key)
        .verify(signed.as_bytes(), &signature)
        .is_err()
    {
        return Err(bad_signature(
            "Key was found, but use of the key to verify the signature failed.",
        ));
    }
    if text(&claims, "aud").as_deref() != Some(audience) {
        return Err(Reply::token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700023,
            "Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        ));
    }
    if text(&claims, "iss").as_deref() != Some(c.client_id.as_str())
        || text(&claims, "sub").as_deref() != Some(c.client_id.as_str())
    {
        return Err(Reply::token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        ));
    }
    let now = chrono::Utc::now();
    let when = |k: &str| claims.get(k).and_then(Value::as_i64);
    let nbf = when("nbf").unwrap_or(0);
    let exp = when("exp");
    let valid = exp.is_some_and(|exp| nbf <= now.timestamp() && now.timestamp() < exp);
    if !valid {
        let show = |t: Option<i64>| {
            t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "(none)".into())
        };
        return Err(Reply::token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                show(Some(now.timestamp())),
                show(Some(nbf)),
                show(exp)
            ),
        ));
    }
    Ok(())
}

/// A `$select` list, checked against the resource's properties (Graph answers 400 to an
/// unknown one).
fn parse_select(kind: Kind, raw: Option<&str>) -> Result<Vec<String>, Reply> {
    let Some(raw) = raw else {
        // user-delta.md, "Example 1: Default properties"; groups also track members.
        let default: &[&str] = match kind {
            Kind::User => &[
                "businessPhones",
                "displayName",
                "givenName",
                "jobTitle",
                "mail",
                "mobilePhone",
                "officeLocation",
                "preferredLanguage",
                "surname",
                "userPrincipalName",
            ],
            Kind::Group => &[
                "description",
                "displayName",
                "groupTypes",
                "mail",
                "members",
            ],
        };
        return Ok(default.iter().map(|s| s.to_string()).collect());
    };
    let (known, nav, type_name): (&[&str], &str, &str) = match kind {
        Kind::User => (USER_PROPERTIES, "manager", "microsoft.graph.user"),
        Kind::Group => (GROUP_PROPERTIES, "members", "microsoft.graph.group"),
    };
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok =
            name == "id" || name == nav || name.starts_with("extension_") || known.contains(&name);
        if !ok {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                &format!("Could not find a property named '{name}' on type '{type_name}'."),
            ));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// `GET /directory/deletedItems/microsoft.graph.user/{id}` (`api/directory-deleteditems-get.md`).
fn deleted_user(shared: &Shared, id: &str) -> Reply {
    let t = lock(&shared.tenant);
    match t.deleted_users.get(id) {
        Some(e) => {
            let mut body = e.data.clone();
            body.insert("id".into(), json!(id));
            body.insert(
                "@odata.context".into(),
                json!(format!("{}/$metadata#directoryObjects/$entity", shared.graph_url())),
            );
            body.insert("@odata.type".into(), json!("#microsoft.graph.user"));
            Reply::json(StatusCode::OK, &Value::Object(body))
        }
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
        ),
    }
}

fn delta(shared: &Shared, kind: Kind, param: &Query<'_>) -> Reply {
    let t = lock(&shared.tenant);
    let page_size = shared.config.page_size.max(1);
    let base = format!("{}/{}/delta", shared.graph_url(), kind.collection());
    let state = if let Some(token) = param.get("$deltatoken") {
        let Some(s) = decode_state(token).filter(|s| s.kind == kind) else {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Invalid delta token.",
            );
        };
        if s.snap < t.oldest_valid_token {
            // delta-query-overview.md: "410 (gone) and a Location header containing a
            // request URL with an empty $deltaToken"; expiry: code syncStateNotFound.
            let mut r = Reply::error(
                StatusCode::GONE,
                "syncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
            );
            r.location = Some(base.clone());
            return r;
        }
        DeltaState {
            kind,
            since: Some(s.snap),
            snap: t.version,
            offset: 0,
            select: s.select,
        }
    } else if let Some(token) = param.get("$skiptoken") {
        match decode_state(token).filter(|s| s.kind == kind) {
            Some(s) => s,
            None => {
                return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid skip token.")
            }
        }
    } else {
        match parse_select(kind, param.get("$select")) {
            Ok(select) => DeltaState {
                kind,
                since: None,
                snap: t.version,
                offset: 0,
                select,
            },
            Err(r) => return r,
        }
    };
    let (page, more) = t.delta_entries(
        kind,
        state.since,
        state.snap,
        &state.select,
        page_size,
        state.offset,
    );
    let end = state.offset + page.len();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Value::String(format!(
            "{}/$metadata#{}",
            shared.graph_url(),
            kind.collection()
        )),
    );
    if more {
        let next = DeltaState {
            offset: end,
            ..state
        };
        body.insert(
            "@odata.nextLink".into(),
            Value::String(format!("{base}?$skiptoken={}", encode_state(&next))),
        );
    } else {
        let done = DeltaState {
            offset: 0,
            since: None,
            ..state
        };
        body.insert(
            "@odata.deltaLink".into(),
            Value::String(format!("{base}?$deltatoken={}", encode_state(&done))),
        );
    }
    body.insert("value".into(), Value::Array(page));
    Reply::json(StatusCode::OK, &Value::Object(body))
}

fn not_found(id: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

fn service_principal(shared: &Shared, id: &str, param: &Query<'_>) -> Reply {
    let c = &shared.config;
    if id != c.service_principal_id {
        return not_found(id);
    }
    let t = lock(&shared.tenant);
    let full = json!({
        "id": c.service_principal_id,
        "appId": c.client_id,
        "appDisplayName": c.app_display_name,
        "displayName": c.app_display_name,
        "servicePrincipalType": "Application",
        "appRoles": t.app_roles,
    });
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        Value::String(format!(
            "{}/$metadata#servicePrincipals/$entity",
            shared.graph_url()
        )),
    );
    match param.get("$select") {
        Some(sel) => {
            out.insert("id".into(), full["id"].clone());
            for name in sel.split(',').map(str::trim) {
                if let Some(v) = full.get(name) {
                    out.insert(name.to_string(), v.clone());
                }
            }
        }
        None => {
            if let Some(m) = full.as_object() {
                out.extend(m.clone());
            }
        }
    }
    Reply::json(StatusCode::OK, &Value::Object(out))
}

/// One page of a plain list, with `@odata.nextLink` carrying the offset.
fn list_page(
    shared: &Shared,
    link_base: &str,
    items: Vec<Value>,
    param: &Query<'_>,
    context: &str,
) -> Reply {
    let top = param
        .get("$top")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(100);
    let size = top.min(shared.config.page_size.max(1)).max(1);
    let offset = param
        .get("$skiptoken")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let end = (offset + size).min(items.len());
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        Value::String(format!("{}/$metadata#{context}", shared.graph_url())),
    );
    if end < items.len() {
        body.insert(
            "@odata.nextLink".into(),
            Value::String(format!("{link_base}?$top={top}&$skiptoken={end}")),
        );
    }
    body.insert(
        "value".into(),
        Value::Array(
            items
                .get(offset..end)
                .map(<[Value]>::to_vec)
                .unwrap_or_default(),
        ),
    );
    Reply::json(StatusCode::OK, &Value::Object(body))
}

fn assignments(shared: &Shared, id: &str, param: &Query<'_>) -> Reply {
    if id != shared.config.service_principal_id {
        return not_found(id);
    }
    let items = lock(&shared.tenant).assignments.clone();
    let base = format!(
        "{}/servicePrincipals/{id}/appRoleAssignedTo",
        shared.graph_url()
    );
    list_page(
        shared,
        &base,
        items,
        param,
        &format!("servicePrincipals('{id}')/appRoleAssignedTo"),
    )
}

fn members(shared: &Shared, id: &str, param: &Query<'_>) -> Reply {
    let t = lock(&shared.tenant);
    let Some(g) = t.groups.get(id) else {
        return not_found(id);
    };
    let items: Vec<Value> = g.members.iter().map(|m| t.member_ref(m)).collect();
    drop(t);
    let base = format!("{}/groups/{id}/members", shared.graph_url());
    list_page(shared, &base, items, param, "directoryObjects")
}

/// The selected properties of one object, as `GET /users/{id}` answers them (`members` is a
/// navigation property: never inline).
fn object_props(id: &str, e: &Entity, select: &[String]) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert("id".into(), Value::String(id.to_string()));
    for (k, v) in &e.data {
        if select.iter().any(|s| s.eq_ignore_ascii_case(k)) {
            props.insert(k.clone(), v.clone());
        }
    }
    props
}

/// `GET /users/{id}`, `GET /groups/{id}` (user-get.md, group-get.md): the object with its
/// `$select`ed properties, 404 when there is none.
fn get_one(shared: &Shared, kind: Kind, id: &str, param: &Query<'_>) -> Reply {
    let select = match parse_select(kind, param.get("$select")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let t = lock(&shared.tenant);
    let Some(e) = t.objects(kind).get(id) else {
        return not_found(id);
    };
    let mut props = object_props(id, e, &select);
    props.insert(
        "@odata.context".into(),
        Value::String(format!(
            "{}/$metadata#{}/$entity",
            shared.graph_url(),
            kind.collection()
        )),
    );
    Reply::json(StatusCode::OK, &Value::Object(props))
}

/// `$filter` as provision on demand sends it: `prop eq 'value'` clauses joined by `or`
/// (values with `''` for a quote), compared without regard to case as Graph compares these
/// properties. `None` when the filter is not of that form or names another property.
fn parse_eq_filter(kind: Kind, raw: &str) -> Option<Vec<(String, String)>> {
    let allowed: &[&str] = match kind {
        Kind::User => &["id", "userPrincipalName", "mail"],
        Kind::Group => &["id", "displayName", "mail"],
    };
    let mut out = Vec::new();
    for clause in raw.split(" or ") {
        let (prop, value) = clause.trim().split_once(" eq ")?;
        let prop = prop.trim();
        let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(prop)) {
            return None;
        }
        out.push((prop.to_string(), value.replace("''", "'")));
    }
    Some(out)
}

/// `GET /users?$filter=…`, `GET /groups?$filter=…` (user-list.md, group-list.md), filtered
/// by [`parse_eq_filter`]; a list without a filter is not served (a cycle reads by delta).
fn list_filtered(shared: &Shared, kind: Kind, param: &Query<'_>) -> Reply {
    let Some(clauses) = param.get("$filter").and_then(|f| parse_eq_filter(kind, f)) else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "the emulator lists objects only with a $filter of eq clauses joined by or",
        );
    };
    let select = match parse_select(kind, param.get("$select")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let t = lock(&shared.tenant);
    let items: Vec<Value> = t
        .objects(kind)
        .iter()
        .filter(|(id, e)| {
            clauses.iter().any(|(prop, value)| {
                let have = if prop.eq_ignore_ascii_case("id") {
                    Some(id.as_str())
                } else {
                    e.data.get(prop.as_str()).and_then(Value::as_str)
                };
                have.is_some_and(|h| h.eq_ignore_ascii_case(value))
            })
        })
        .map(|(id, e)| Value::Object(object_props(id, e, &select)))
        .collect();
    drop(t);
    let base = format!("{}/{}", shared.graph_url(), kind.collection());
    list_page(shared, &base, items, param, kind.collection())
}

/// `GET /users/{id}/memberOf` (user-list-memberof.md): the groups the user is a direct
/// member of, as directory objects with their `@odata.type`.
fn member_of(shared: &Shared, id: &str, param: &Query<'_>) -> Reply {
    let select = match parse_select(Kind::Group, param.get("$select")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let t = lock(&shared.tenant);
    if !t.users.contains_key(id) {
        return not_found(id);
    }
    let items: Vec<Value> = t
        .groups
        .iter()
        .filter(|(_, g)| g.members.contains(id))
        .map(|(gid, g)| {
            let mut props = object_props(gid, g, &select);
            props.insert(
                "@odata.type".into(),
                Value::String(Kind::Group.odata_type().into()),
            );
            Value::Object(props)
        })
        .collect();
    drop(t);
    let base = format!("{}/users/{id}/memberOf", shared.graph_url());
    list_page(shared, &base, items, param, "directoryObjects")
}

/// `GET /users/{id}/appRoleAssignments`, `GET /groups/{id}/appRoleAssignments`
/// (user-list-approleassignments.md): the principal's assignments, to any application.
fn principal_assignments(shared: &Shared, kind: Kind, id: &str, param: &Query<'_>) -> Reply {
    let t = lock(&shared.tenant);
    if !t.objects(kind).contains_key(id) {
        return not_found(id);
    }
    let items: Vec<Value> = t
        .assignments
        .iter()
        .filter(|a| a.get("principalId").and_then(Value::as_str) == Some(id))
        .cloned()
        .collect();
    drop(t);
    let base = format!(
        "{}/{}/{id}/appRoleAssignments",
        shared.graph_url(),
        kind.collection()
    );
    list_page(shared, &base, items, param, "appRoleAssignments")
}
