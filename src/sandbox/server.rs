//! Connection handling, routing and the SCIM endpoints of the sandbox.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::store::{Kind, Store, StoreError};
use super::{active, lock, DropWhen, FaultAction, FaultRule, SandboxError, Shared, StopSignal};
use crate::target::scim::filter::Filter;
use crate::target::scim::patch::{apply_patch, normalise_entra_booleans};
use crate::target::scim::path::ScimPath;
use crate::target::scim::wire::{ListResponse, PatchRequest, ScimErrorBody};
use crate::target::scim::{
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA,
    SERVICE_PROVIDER_CONFIG_SCHEMA, USER_SCHEMA,
};

/// Request bodies larger than this are refused (a group PATCH with thousands of members fits).
const MAX_BODY: usize = 16 * 1024 * 1024;
const SCIM_JSON: &str = "application/scim+json";

/// Accepts connections until `shutdown` completes, then closes every connection.
pub(super) async fn run(
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SandboxError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::debug!(%addr, "sandbox listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(serve_connection(stream, shared.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Usually per-connection (reset before accept) or fd exhaustion: pause
                    // briefly rather than spin or give up.
                    tracing::warn!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    tracing::debug!(%addr, "sandbox stopped");
    Ok(())
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, mut stop: StopSignal) {
    let _ = stream.set_nodelay(true);
    // A handler triggers `kill` to close the connection without a response (drop faults).
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
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = kill.notified() => tracing::debug!("connection dropped by fault"),
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}

/// A response before it is turned into HTTP, so faults can still alter it.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
    location: Option<String>,
    retry_after: Option<String>,
}

impl Reply {
    fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                body,
                content_type: SCIM_JSON,
                location: None,
                retry_after: None,
            },
            Err(e) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string()),
        }
    }

    fn error(status: StatusCode, scim_type: Option<&str>, detail: impl Into<String>) -> Reply {
        Reply::json(
            status,
            &ScimErrorBody::new(status.as_u16(), scim_type, detail),
        )
    }

    fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            body: Vec::new(),
            content_type: SCIM_JSON,
            location: None,
            retry_after: None,
        }
    }

    fn store_error(kind: Kind, id: &str, e: StoreError) -> Reply {
        match e {
            StoreError::NotFound => not_found(kind, id),
            StoreError::Conflict(d) => Reply::error(StatusCode::CONFLICT, Some("uniqueness"), d),
            StoreError::Invalid(d) => {
                Reply::error(StatusCode::BAD_REQUEST, Some("invalidValue"), d)
            }
        }
    }

    /// The first half of the body, still announced as success: a broken proxy or a crash
    /// mid-write as the client sees it.
    fn truncated(mut self) -> Reply {
        if self.body.is_empty() {
            self.body =
                br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"#.to_vec();
        }
        if !self.status.is_success() || self.status == StatusCode::NO_CONTENT {
            self.status = StatusCode::OK;
        }
        let half = self.body.len() / 2;
        self.body.truncate(half.max(1));
        self
    }

    fn into_response(self) -> Response<Body> {
        let has_body = !self.body.is_empty();
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        }
        if let Some(v) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(LOCATION, v);
        }
        if let Some(v) = self
            .retry_after
            .and_then(|r| HeaderValue::from_str(&r).ok())
        {
            headers.insert(RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

fn not_found(kind: Kind, id: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        None,
        format!("{} {id} not found", kind.resource_type()),
    )
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &shared.token else {
        return true;
    };
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match value.trim().split_once(' ') {
        Some((scheme, given)) => {
            scheme.eq_ignore_ascii_case("bearer") && given.trim() == token.expose_secret()
        }
        None => false,
    }
}

async fn handle(shared: Arc<Shared>, kill: Arc<Notify>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let admin = path.starts_with("/_sandbox/");
    if !admin {
        shared.counts.count(&method);
    }
    if !authorized(&shared, req.headers()) {
        tracing::debug!(method = %method, path = %path, status = 401, "sandbox request");
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        )
        .into_response();
    }
    let fault = if admin {
        None
    } else {
        shared.fault_for(&method, &path)
    };
    match &fault {
        Some(FaultAction::Status {
            status,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::debug!(method = %method, path = %path, status = status.as_u16(), "sandbox fault");
            let mut reply = match body {
                Some(raw) => Reply {
                    status,
                    body: raw.clone().into_bytes(),
                    content_type: "text/plain",
                    location: None,
                    retry_after: None,
                },
                None => Reply::error(status, None, "fault injected by the sandbox"),
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
            tracing::debug!(method = %method, path = %path, "sandbox fault: drop before");
            kill.notify_one();
            return std::future::pending().await;
        }
        _ => {}
    }
    let body = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                format!("unreadable body: {e}"),
            )
            .into_response()
        }
    };
    let reply = if admin {
        admin_route(&shared, &method, &path, &body)
    } else {
        route(&shared, &method, &path, &query, &body)
    };
    tracing::debug!(method = %method, path = %path, status = reply.status.as_u16(), "sandbox request");
    match fault {
        Some(FaultAction::Drop {
            drop: DropWhen::After,
        }) => {
            tracing::debug!(method = %method, path = %path, "sandbox fault: drop after");
            kill.notify_one();
            std::future::pending().await
        }
        Some(FaultAction::Truncate { truncate: true }) => reply.truncated().into_response(),
        _ => reply.into_response(),
    }
}

fn admin_route(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Reply {
    match (method, path.trim_end_matches('/')) {
        ("GET", "/_sandbox/stats") => Reply::json(StatusCode::OK, &shared.counts.snapshot()),
        ("GET", "/_sandbox/dump") => {
            let store = lock(&shared.store);
            Reply::json(
                StatusCode::OK,
                &json!({"users": store.all(Kind::User), "groups": store.all(Kind::Group)}),
            )
        }
        ("GET", "/_sandbox/faults") => {
            let rules: Vec<FaultRule> = lock(&shared.faults)
                .iter()
                .map(|f| f.rule.clone())
                .collect();
            Reply::json(StatusCode::OK, &rules)
        }
        ("PUT", "/_sandbox/faults") => match serde_json::from_slice::<Vec<FaultRule>>(body) {
            Ok(rules) => {
                *lock(&shared.faults) = active(rules);
                Reply::empty(StatusCode::NO_CONTENT)
            }
            Err(e) => Reply::error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                format!("fault rules: {e}"),
            ),
        },
        // Back to an empty server: no resources, zero counts, fault counters restarted.
        ("POST", "/_sandbox/reset") => {
            *lock(&shared.store) = Store::default();
            shared.counts.reset();
            let mut faults = lock(&shared.faults);
            for f in faults.iter_mut() {
                f.seen = 0;
                f.applied = 0;
            }
            Reply::empty(StatusCode::NO_CONTENT)
        }
        _ => Reply::error(
            StatusCode::NOT_FOUND,
            None,
            format!("no admin endpoint {method} {path}"),
        ),
    }
}

fn route(shared: &Shared, method: &str, path: &str, query: &str, body: &[u8]) -> Reply {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let kind_of = |s: &str| {
        if s.eq_ignore_ascii_case("Users") {
            Some(Kind::User)
        } else if s.eq_ignore_ascii_case("Groups") {
            Some(Kind::Group)
        } else {
            None
        }
    };
    match segments.as_slice() {
        [c] if kind_of(c).is_some() => {
            let Some(kind) = kind_of(c) else {
                return Reply::empty(StatusCode::NOT_FOUND);
            };
            match method {
                "GET" => list(shared, kind, query),
                "POST" => create(shared, kind, body),
                _ => method_not_allowed(method, path),
            }
        }
        [c, id] if kind_of(c).is_some() => {
            let Some(kind) = kind_of(c) else {
                return Reply::empty(StatusCode::NOT_FOUND);
            };
            match method {
                "GET" => get_one(shared, kind, id, query),
                "PUT" => put(shared, kind, id, body),
                "PATCH" => patch(shared, kind, id, body),
                "DELETE" => match lock(&shared.store).delete(kind, id) {
                    Ok(()) => Reply::empty(StatusCode::NO_CONTENT),
                    Err(e) => Reply::store_error(kind, id, e),
                },
                _ => method_not_allowed(method, path),
            }
        }
        [s] if s.eq_ignore_ascii_case("ServiceProviderConfig") && method == "GET" => {
            Reply::json(StatusCode::OK, &service_provider_config(shared))
        }
        [s] if s.eq_ignore_ascii_case("ResourceTypes") && method == "GET" => {
            let all = resource_types(shared);
            let n = all.len() as u64;
            Reply::json(StatusCode::OK, &ListResponse::new(all, n, 1))
        }
        [s, id] if s.eq_ignore_ascii_case("ResourceTypes") && method == "GET" => {
            match resource_types(shared).into_iter().find(|r| r["id"] == *id) {
                Some(r) => Reply::json(StatusCode::OK, &r),
                None => Reply::error(
                    StatusCode::NOT_FOUND,
                    None,
                    format!("no resource type {id}"),
                ),
            }
        }
        [s] if s.eq_ignore_ascii_case("Schemas") && method == "GET" => {
            let all = schemas(shared);
            let n = all.len() as u64;
            Reply::json(StatusCode::OK, &ListResponse::new(all, n, 1))
        }
        [s, id] if s.eq_ignore_ascii_case("Schemas") && method == "GET" => {
            match schemas(shared).into_iter().find(|r| r["id"] == *id) {
                Some(r) => Reply::json(StatusCode::OK, &r),
                None => Reply::error(StatusCode::NOT_FOUND, None, format!("no schema {id}")),
            }
        }
        _ => Reply::error(
            StatusCode::NOT_FOUND,
            None,
            format!("no endpoint {method} {path}"),
        ),
    }
}

fn method_not_allowed(method: &str, path: &str) -> Reply {
    Reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        format!("{method} is not supported on {path}"),
    )
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.9) from the query string.
struct Projection {
    attributes: Vec<ScimPath>,
    excluded: Vec<ScimPath>,
}

impl Projection {
    fn from_params(params: &[(String, String)]) -> Projection {
        let paths = |name: &str| -> Vec<ScimPath> {
            params
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.split(','))
                .filter_map(|p| ScimPath::parse(p).ok())
                .collect()
        };
        Projection {
            attributes: paths("attributes"),
            excluded: paths("excludedAttributes"),
        }
    }

    fn apply(&self, resource: Value) -> Value {
        let mut out = if self.attributes.is_empty() {
            resource
        } else {
            // `id` and `schemas` are always returned (RFC 7643 §2.4 "returned: always").
            let mut out = json!({});
            for key in ["schemas", "id", "meta"] {
                if let Some(v) = resource.get(key) {
                    out[key] = v.clone();
                }
            }
            for p in &self.attributes {
                if let Some(v) = p.get(&resource) {
                    p.set(&mut out, v.clone());
                }
            }
            out
        };
        for p in &self.excluded {
            if !p.is_attr("id") && !p.is_attr("schemas") {
                p.remove(&mut out);
            }
        }
        out
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn list(shared: &Shared, kind: Kind, query: &str) -> Reply {
    let params = parse_query(query);
    let filter = match param(&params, "filter").filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(f) => match Filter::parse(f) {
            Ok(f) => Some(f),
            Err(e) => {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    Some("invalidFilter"),
                    e.to_string(),
                )
            }
        },
    };
    // Out-of-range values are clamped as RFC 7644 §3.4.2.4 says, not rejected.
    let start = param(&params, "startIndex")
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(1, |s| s.max(1) as usize);
    let count = param(&params, "count")
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(shared.max_page_size, |c| {
            (c.max(0) as usize).min(shared.max_page_size)
        });
    let projection = Projection::from_params(&params);
    let (total, page) = lock(&shared.store).query(kind, filter.as_ref(), start, count);
    let page: Vec<Value> = page.into_iter().map(|r| projection.apply(r)).collect();
    Reply::json(
        StatusCode::OK,
        &ListResponse::new(page, total as u64, start as u64),
    )
}

fn parse_resource(body: &[u8]) -> Result<Value, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            "the body must be a JSON object",
        )),
        Err(e) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            Some("invalidSyntax"),
            format!("invalid JSON: {e}"),
        )),
    }
}

fn created_reply(resource: Value) -> Reply {
    let location = resource
        .pointer("/meta/location")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut reply = Reply::json(StatusCode::CREATED, &resource);
    reply.location = location;
    reply
}

fn create(shared: &Shared, kind: Kind, body: &[u8]) -> Reply {
    let resource = match parse_resource(body) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let result = lock(&shared.store).create(kind, resource, &shared.base_url);
    match result {
        Ok(r) => created_reply(r),
        Err(e) => Reply::store_error(kind, "", e),
    }
}

fn get_one(shared: &Shared, kind: Kind, id: &str, query: &str) -> Reply {
    let resource = lock(&shared.store).get(kind, id).cloned();
    match resource {
        Some(r) => {
            let projection = Projection::from_params(&parse_query(query));
            Reply::json(StatusCode::OK, &projection.apply(r))
        }
        None => not_found(kind, id),
    }
}

fn put(shared: &Shared, kind: Kind, id: &str, body: &[u8]) -> Reply {
    let resource = match parse_resource(body) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let result = lock(&shared.store).replace(kind, id, resource, &shared.base_url);
    match result {
        Ok(r) => Reply::json(StatusCode::OK, &r),
        Err(e) => Reply::store_error(kind, id, e),
    }
}

fn patch(shared: &Shared, kind: Kind, id: &str, body: &[u8]) -> Reply {
    let request = match serde_json::from_slice::<PatchRequest>(body) {
        Ok(r) => r,
        Err(e) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                Some("invalidSyntax"),
                format!("invalid PatchOp: {e}"),
            )
        }
    };
    let mut store = lock(&shared.store);
    let Some(mut resource) = store.get(kind, id).cloned() else {
        return not_found(kind, id);
    };
    // All operations or none (RFC 7644 §3.5.2): work on a copy.
    for mut op in request.operations {
        normalise_entra_booleans(&mut op);
        if let Err(e) = apply_patch(&mut resource, &op) {
            return Reply::error(StatusCode::BAD_REQUEST, Some(e.scim_type()), e.to_string());
        }
    }
    match store.replace(kind, id, resource, &shared.base_url) {
        Ok(r) if shared.patch_returns_resource => Reply::json(StatusCode::OK, &r),
        Ok(_) => Reply::empty(StatusCode::NO_CONTENT),
        Err(e) => Reply::store_error(kind, id, e),
    }
}

fn service_provider_config(shared: &Shared) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": shared.max_page_size},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", shared.base_url),
        },
    })
}

fn resource_types(shared: &Shared) -> Vec<Value> {
    let rt = |id: &str, endpoint: &str, schema: &str, extensions: Value| {
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": id,
            "name": id,
            "endpoint": endpoint,
            "schema": schema,
            "schemaExtensions": extensions,
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{}/ResourceTypes/{id}", shared.base_url),
            },
        })
    };
    vec![
        rt(
            "User",
            "/Users",
            USER_SCHEMA,
            json!([{"schema": ENTERPRISE_USER_SCHEMA, "required": false}]),
        ),
        rt("Group", "/Groups", GROUP_SCHEMA, json!([])),
    ]
}

fn schemas(shared: &Shared) -> Vec<Value> {
    let attr = |name: &str, ty: &str, multi: bool, required: bool, unique: &str| {
        json!({
            "name": name, "type": ty, "multiValued": multi, "required": required,
            "caseExact": false, "mutability": "readWrite", "returned": "default",
            "uniqueness": unique,
        })
    };
    let complex = |name: &str, multi: bool, subs: Vec<Value>| {
        let mut a = attr(name, "complex", multi, false, "none");
        a["subAttributes"] = Value::Array(subs);
        a
    };
    let schema = |id: &str, name: &str, attributes: Vec<Value>| {
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": id,
            "name": name,
            "attributes": attributes,
            "meta": {
                "resourceType": "Schema",
                "location": format!("{}/Schemas/{id}", shared.base_url),
            },
        })
    };
    let s = |n: &str| attr(n, "string", false, false, "none");
    let multi_string = |n: &str| {
        complex(
            n,
            true,
            vec![
                s("value"),
                s("type"),
                attr("primary", "boolean", false, false, "none"),
            ],
        )
    };
    vec![
        schema(
            USER_SCHEMA,
            "User",
            vec![
                attr("userName", "string", false, true, "server"),
                complex(
                    "name",
                    false,
                    vec![s("formatted"), s("familyName"), s("givenName")],
                ),
                s("displayName"),
                s("title"),
                s("preferredLanguage"),
                attr("active", "boolean", false, false, "none"),
                multi_string("emails"),
                multi_string("phoneNumbers"),
                complex(
                    "addresses",
                    true,
                    vec![
                        s("type"),
                        s("formatted"),
                        s("streetAddress"),
                        s("locality"),
                        s("region"),
                        s("postalCode"),
                        s("country"),
                    ],
                ),
            ],
        ),
        schema(
            GROUP_SCHEMA,
            "Group",
            vec![
                attr("displayName", "string", false, true, "none"),
                complex("members", true, vec![s("value"), s("display"), s("type")]),
            ],
        ),
        schema(
            ENTERPRISE_USER_SCHEMA,
            "EnterpriseUser",
            vec![
                s("employeeNumber"),
                s("department"),
                s("costCenter"),
                s("organization"),
                s("division"),
                complex("manager", false, vec![s("value"), s("displayName")]),
            ],
        ),
    ]
}
