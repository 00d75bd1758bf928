//! The SCIM HTTP client and its retry loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use memchr::memmem;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;

use super::error::TargetError;
use super::scim::filter::eq_filter;
use super::scim::patch::{render_patch, PatchOp};
use super::{PatchStyle, TargetSettings};
use crate::http::{error_chain, parse_retry_after};
use crate::model::ObjectType;
use crate::summary::RequestCounts;

const SCIM_JSON: &str = "application/scim+json";
/// The schema of a SCIM error body (RFC 7644, section 3.12).
const SCIM_ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Most bytes reserved for a body before any arrives.
const PREALLOCATE: u64 = 1 << 20;
/// Longest piece of an id shown in an error message.
const ID_SNIPPET: usize = 64;
/// What stands for a server's text that echoed the token in an encoding not replaced in place.
const ECHOED_TOKEN: &str = "[REDACTED: it echoed the token]";
/// Longest piece of a non-SCIM error body kept in an error message.
const BODY_SNIPPET: usize = 200;
/// Servers commonly close idle keep-alive connections after 30–60 s; dropping ours
/// earlier avoids sending a request on a connection the server is closing, which would
/// turn a `POST` into an ambiguous failure.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Counters {
    get: AtomicU64,
    post: AtomicU64,
    put: AtomicU64,
    patch: AtomicU64,
    delete: AtomicU64,
    /// Connection attempts refused (or timed out connecting) in a row, across every request,
    /// with no response between: the shared retry budget of an unreachable target.
    unreached: AtomicU64,
    /// Attempts by method and HTTP status (0: no response), for the admin endpoint's
    /// `provisiond_requests_total`. A map, not fixed counters: a target may answer anything.
    responses: std::sync::Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    /// Retries by reason, in the order of [`RetryReason::ALL`].
    retries: [AtomicU64; 4],
}

/// Why the client sent a request again: the `reason` label of `provisiond_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    /// 429 or 503: the target asked us to slow down.
    Throttled,
    /// 500, 502 or 504 to a request that may be repeated.
    ServerError,
    /// No complete answer in time.
    Timeout,
    /// The connection was refused or dropped.
    Connection,
}

impl RetryReason {
    /// Every reason, in the counters' order.
    pub(crate) const ALL: [RetryReason; 4] = [
        RetryReason::Throttled,
        RetryReason::ServerError,
        RetryReason::Timeout,
        RetryReason::Connection,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RetryReason::Throttled => "throttled",
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::Connection => "connection",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The method's name, for the methods the client sends.
fn method_name(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => return None,
    })
}

impl Counters {
    fn record(&self, method: &Method) {
        let counter = match *method {
            Method::GET => &self.get,
            Method::POST => &self.post,
            Method::PUT => &self.put,
            Method::PATCH => &self.patch,
            Method::DELETE => &self.delete,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one attempt's outcome: its HTTP status, or 0 when no response came.
    fn record_response(&self, method: &Method, status: u16) {
        let Some(name) = method_name(method) else {
            return;
        };
        let mut map = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((name, status)).or_insert(0) += 1;
    }

    fn record_retry(&self, reason: RetryReason) {
        self.retries[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            get: self.get.load(Ordering::Relaxed),
            post: self.post.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            patch: self.patch.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

/// A SCIM 2.0 client for one target. Cheap to clone; clones share the connection pool,
/// the concurrency limit and the request counters.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Base URL normalised to end with `/`, without query or fragment.
    base: Url,
    token: secrecy::SecretString,
    /// `previous_url`, normalised like `base`.
    previous: Option<Url>,
    patch_style: PatchStyle,
    concurrency: usize,
    permits: Semaphore,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_retry_after: Duration,
    max_response_bytes: u64,
    counts: Counters,
}

impl std::fmt::Debug for ScimClient {
    // Written by hand so that neither the token nor the auth header can ever be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.inner.base.as_str())
            .field("patch_style", &self.inner.patch_style)
            .field("concurrency", &self.inner.concurrency)
            .field("max_retries", &self.inner.max_retries)
            .finish_non_exhaustive()
    }
}

/// One request, kept so that it can be sent again.
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Option<Bytes>,
}

impl Req {
    fn path(&self) -> String {
        self.url.path().to_owned()
    }
}

/// A complete HTTP response.
pub(crate) struct Raw {
    /// The HTTP status, or the status of a SCIM Error carried by a 2xx body.
    pub(crate) status: StatusCode,
    /// What a 2xx body carrying a SCIM Error did to `status`.
    pub(crate) body_error: BodyError,
    pub(crate) retry_after: Option<String>,
    /// Scrubbed: never the token, even when the server echoed it there.
    pub(crate) location: Option<String>,
    pub(crate) body: Bytes,
    /// An earlier attempt of this request may have been processed by the server.
    pub(crate) after_ambiguous: bool,
}

/// A SCIM Error in the body of a 2xx response, which is that error, not a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// None: the status is the HTTP status.
    None,
    /// The body's 4xx/5xx status replaced this 2xx HTTP status.
    Replaced(StatusCode),
    /// A SCIM Error without a 4xx/5xx status: neither a success nor a known error.
    NoStatus,
}

/// Why one attempt got no usable response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The transport failed.
    Http(reqwest::Error),
    /// The body grew past `max_response_bytes` (or its declared length was already past it).
    TooLarge,
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> Self {
        SendError::Http(e)
    }
}

/// Why a transport-level attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The connection was never established: the request was not sent.
    NotSent { timeout: bool },
    /// Sent (possibly), no complete response in time.
    Timeout,
    /// Sent (possibly), connection dropped before a complete response.
    Dropped,
}

fn classify(err: &reqwest::Error) -> Failure {
    if err.is_connect() {
        Failure::NotSent {
            timeout: err.is_timeout(),
        }
    } else if err.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Dropped
    }
}

impl ScimClient {
    /// Builds a client. Fails on an unusable base URL (not http/https, credentials in
    /// the URL, query or fragment) or zero concurrency.
    pub fn new(settings: TargetSettings) -> Result<Self, TargetError> {
        let base = normalise_base(&settings.base_url)?;
        let previous = settings
            .previous_url
            .as_ref()
            .map(normalise_base)
            .transpose()?;
        if settings.concurrency == 0 {
            return Err(settings_error("concurrency must be at least 1"));
        }

        let mut auth = HeaderValue::try_from(format!("Bearer {}", settings.token.expose_secret()))
            .map_err(|_| settings_error("the token contains characters not allowed in a header"))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/scim+json, application/json"),
        );

        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .user_agent(concat!("provisiond/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_max_idle_per_host(settings.concurrency)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            // A redirect would turn a POST into a GET and may carry the token elsewhere;
            // a SCIM base URL that redirects is a configuration problem to report.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| settings_error(&format!("HTTP client: {}", error_chain(e))))?;

        Ok(ScimClient {
            inner: Arc::new(Inner {
                http,
                base,
                token: settings.token,
                previous,
                patch_style: settings.patch_style,
                concurrency: settings.concurrency,
                permits: Semaphore::new(settings.concurrency),
                max_retries: settings.max_retries,
                backoff_base: settings.backoff_base,
                backoff_max: settings.backoff_max,
                max_retry_after: settings.max_retry_after,
                max_response_bytes: settings.max_response_bytes,
                counts: Counters::default(),
            }),
        })
    }

    /// The base URL, normalised to end with `/` (it never holds credentials).
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The `previous_url` of the settings, normalised like [`ScimClient::base_url`].
    pub fn previous_url(&self) -> Option<&str> {
        self.inner.previous.as_ref().map(Url::as_str)
    }

    /// Every HTTP request sent so far by this client and its clones, retries included.
    pub fn request_counts(&self) -> RequestCounts {
        self.inner.counts.snapshot()
    }

    /// Attempts since the client was made, by method and HTTP status (0: no response came).
    pub(crate) fn response_counts(&self) -> Vec<(&'static str, u16, u64)> {
        let map = self
            .inner
            .counts
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(&(m, s), &n)| (m, s, n)).collect()
    }

    /// Retries since the client was made, by reason.
    pub(crate) fn retry_counts(&self) -> Vec<(RetryReason, u64)> {
        RetryReason::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    self.inner.counts.retries[r.index()].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// `GET /{Users|Groups}?filter=<attr> eq "<value>"` (groups also with
    /// `excludedAttributes=members`). Returns the matching resources: zero, one or more;
    /// more than one is for the caller to report as duplicates.
    pub async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        let mut query = Vec::with_capacity(2);
        if ty == ObjectType::Group {
            // Large groups' member lists are irrelevant to matching and can be huge.
            query.push(("excludedAttributes", "members".to_owned()));
        }
        query.push(("filter", eq_filter(attr, value)));
        let req = Req {
            method: Method::GET,
            url: self.url(&Method::GET, &[ty.endpoint()])?,
            query,
            body: None,
        };
        let raw = self.execute(&req, self.inner.max_retries).await?;
        if raw.status == StatusCode::NOT_FOUND {
            // On a collection a 404 means a wrong base URL, not a missing object.
            return Err(collection_incompatible(
                &req,
                raw.status,
                "404 on the resource collection: check the base URL".into(),
            ));
        }
        let status = raw.status;
        let body = self.success_json(&req, raw).map_err(on_collection)?;
        let resources = parse_list(body).map_err(|e| match e {
            // Taken as "no match" it could create a duplicate: fail this object instead.
            ListError::Incomplete { .. } => TargetError::InvalidResponse {
                method: req.method.clone(),
                path: req.path(),
                status: status.as_u16(),
                reason: e.to_string(),
            },
            _ => collection_incompatible(&req, status, e.to_string()),
        })?;
        for resource in &resources {
            if resource_id(resource).is_none() {
                return Err(incompatible(
                    &req,
                    status,
                    "a resource in the list has no non-empty string \"id\"".into(),
                ));
            }
            check_returned_id(&req, resource)?;
        }
        Ok(resources)
    }

    /// `GET /{Users|Groups}?attributes=id&count=1` (no filter): whether the collection holds
    /// nothing. Only an explicit `totalResults` of 0 with no resource counts as empty; a
    /// non-list answer or any resource means "not known to be empty" (`Ok(false)`), so a
    /// target that mis-answers unfiltered lists is searched before each create as usual. An
    /// error status or a transport failure is returned as the error it is.
    pub async fn collection_empty(&self, ty: ObjectType) -> Result<bool, TargetError> {
        let mut query = vec![("attributes", "id".to_owned()), ("count", "1".to_owned())];
        if ty == ObjectType::Group {
            query.push(("excludedAttributes", "members".to_owned()));
        }
        let req = Req {
            method: Method::GET,
            url: self.url(&Method::GET, &[ty.endpoint()])?,
            query,
            body: None,
        };
        let raw = self.execute(&req, self.inner.max_retries).await?;
        // `success` refuses a 2xx that carries a SCIM Error: what passes is a plain answer.
        let raw = self.success(&req, raw)?;
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&raw.body) else {
            return Ok(false);
        };
        let total_zero = match body.get("totalResults") {
            Some(Value::Number(n)) => n.as_u64() == Some(0),
            _ => false,
        };
        let no_resources = match body.get("Resources").or_else(|| body.get("resources")) {
            None | Some(Value::Null) => true,
            Some(Value::Array(items)) => items.is_empty(),
            Some(_) => false,
        };
        let empty = total_zero && no_resources;
        tracing::debug!(object_type = %ty, empty, "collection probe");
        Ok(empty)
    }

    /// `GET /{Users|Groups}/{id}`: the resource.
    pub async fn get(&self, ty: ObjectType, id: &str) -> Result<Value, TargetError> {
        let req = Req {
            method: Method::GET,
            url: self.url(&Method::GET, &[ty.endpoint(), id])?,
            query: Vec::new(),
            body: None,
        };
        let raw = self.execute(&req, self.inner.max_retries).await?;
        let status = raw.status;
        let body = self.success_json(&req, raw)?;
        if !body.is_object() {
            return Err(incompatible(
                &req,
                status,
                "the resource is not a JSON object".into(),
            ));
        }
        Ok(body)
    }

    /// `POST /{Users|Groups}`: creates the resource and returns it as the server stored it.
    ///
    /// Its `id` is checked to be a non-empty string usable as one URL path segment (not a
    /// dot segment, no control character, no `/`); ids are taken from the body, never
    /// from `Location`. On an error with [`TargetError::is_ambiguous`] the object may
    /// exist: match again before creating again.
    pub async fn create(&self, ty: ObjectType, body: Value) -> Result<Value, TargetError> {
        let req = self.create_request(ty, &body)?;
        let raw = self.execute(&req, self.inner.max_retries).await?;
        Ok(self.created(&req, raw)?.1)
    }

    /// [`ScimClient::create`] for the export, which keeps nothing of the created resource but
    /// its `id`: the body is parsed for that one field (the rest is skipped, not built into
    /// a `serde_json::Value`, a few percent of an initial cycle's CPU). The same checks and
    /// errors as `create`: a body that is not a JSON object with one `id` takes `create`'s
    /// path, so its error is exactly the one `create` gives.
    pub(crate) async fn create_id(
        &self,
        ty: ObjectType,
        body: Value,
    ) -> Result<String, TargetError> {
        let req = self.create_request(ty, &body)?;
        let raw = self.execute(&req, self.inner.max_retries).await?;
        let raw = self.success(&req, raw)?;
        if let Some(id) = created_id(&raw.body) {
            check_target_id(&id)
                .map_err(|reason| invalid_id(&req.method, req.path(), &id, reason))?;
            return Ok(id);
        }
        Ok(self.created(&req, raw)?.0)
    }

    /// The `POST` that creates `body` in `ty`'s collection.
    fn create_request(&self, ty: ObjectType, body: &Value) -> Result<Req, TargetError> {
        Ok(Req {
            method: Method::POST,
            url: self.url(&Method::POST, &[ty.endpoint()])?,
            query: Vec::new(),
            body: Some(to_bytes(body)),
        })
    }

    /// The id and the resource a create's answer holds, both checked: a JSON resource with a
    /// non-empty string `id` usable as one URL path segment.
    fn created(&self, req: &Req, raw: Raw) -> Result<(String, Value), TargetError> {
        let status = raw.status;
        let created = self.success_json(req, raw)?;
        let Some(id) = resource_id(&created).map(str::to_owned) else {
            return Err(incompatible(
                req,
                status,
                "the created resource has no non-empty string \"id\"".into(),
            ));
        };
        check_returned_id(req, &created)?;
        Ok((id, created))
    }

    /// `PATCH /{Users|Groups}/{id}` with `ops`, rendered in the configured [`PatchStyle`].
    /// 200 (with or without a body) and 204 are success; the body is not used.
    pub async fn patch(
        &self,
        ty: ObjectType,
        id: &str,
        ops: &[PatchOp],
    ) -> Result<(), TargetError> {
        let body = render_patch(ops, self.inner.patch_style);
        let req = Req {
            method: Method::PATCH,
            url: self.url(&Method::PATCH, &[ty.endpoint(), id])?,
            query: Vec::new(),
            body: Some(to_bytes(&body)),
        };
        let raw = self.execute(&req, self.inner.max_retries).await?;
        self.success(&req, raw).map(drop)
    }

    /// `DELETE /{Users|Groups}/{id}`. A 404 after an earlier attempt that may have been
    /// processed counts as deleted.
    pub async fn delete(&self, ty: ObjectType, id: &str) -> Result<(), TargetError> {
        let req = Req {
            method: Method::DELETE,
            url: self.url(&Method::DELETE, &[ty.endpoint(), id])?,
            query: Vec::new(),
            body: None,
        };
        let raw = self.execute(&req, self.inner.max_retries).await?;
        if raw.status == StatusCode::NOT_FOUND && raw.after_ambiguous {
            return Ok(());
        }
        self.success(&req, raw).map(drop)
    }

    /// `{base}/{segments...}` for a request with `method`, each segment percent-encoded
    /// as one path segment (`/`, `%`, `?`, `#` included).
    ///
    /// A segment that is empty, `.` or `..` (or would become one: URL parsers drop tabs and
    /// newlines) or holds a control character is refused with
    /// [`TargetError::InvalidId`]: no encoding keeps it one segment, since URL parsers treat
    /// `%2E%2E` as `..` too, and it would otherwise address the collection or its parent.
    pub(crate) fn url(&self, method: &Method, segments: &[&str]) -> Result<Url, TargetError> {
        let base = &self.inner.base;
        let mut path = base.path().to_owned();
        // Where the path of the segments before the current one ends: an error names it.
        let mut parent_len = path.len();
        for (i, segment) in segments.iter().enumerate() {
            parent_len = path.len();
            if let Err(reason) = check_segment(segment) {
                return Err(invalid_id(method, path, segment, reason));
            }
            if i > 0 {
                path.push('/');
            }
            encode_segment(segment, &mut path);
        }
        let mut url = base.clone();
        url.set_path(&path);
        // Defence in depth: if the URL parser changed the path anyhow, send nothing.
        if url.path() != path {
            let id = segments.last().copied().unwrap_or_default();
            path.truncate(parent_len);
            return Err(invalid_id(
                method,
                path,
                id,
                "it does not stay one URL path segment",
            ));
        }
        Ok(url)
    }

    /// One attempt: waits for a concurrency permit, sends, reads the body chunk by chunk up
    /// to `max_response_bytes`. The permit is released on return, so it is never held while
    /// sleeping between retries.
    pub(crate) async fn send_once(&self, req: &Req) -> Result<Raw, SendError> {
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, going
        // ahead unbounded is better than failing the request.
        let _permit = self.inner.permits.acquire().await.ok();
        self.inner.counts.record(&req.method);
        let mut builder = self.inner.http.request(req.method.clone(), req.url.clone());
        if !req.query.is_empty() {
            builder = builder.query(&req.query);
        }
        if let Some(body) = &req.body {
            // A static value: `header(_, &str)` would check and copy the text every time.
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON))
                .body(body.clone());
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                self.inner.counts.record_response(&req.method, 0);
                return Err(e.into());
            }
        };
        self.inner.counts.unreached.store(0, Ordering::Relaxed);
        let status = response.status();
        self.inner
            .counts
            .record_response(&req.method, status.as_u16());
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(RETRY_AFTER);
        let location = header(reqwest::header::LOCATION).map(|l| self.scrub_header(&l));
        let body = self.read_body(&mut response).await?;
        let (status, body_error) = match status.is_success().then(|| scim_error_status(&body)) {
            Some(BodyError::Replaced(inner)) => (inner, BodyError::Replaced(status)),
            Some(BodyError::NoStatus) => (status, BodyError::NoStatus),
            Some(BodyError::None) | None => (status, BodyError::None),
        };
        Ok(Raw {
            status,
            body_error,
            retry_after,
            location,
            body,
            after_ambiguous: false,
        })
    }

    /// The body, read chunk by chunk so that a server sending without end is cut at
    /// `max_response_bytes` instead of filling memory. Dropping the response mid-body
    /// closes the connection.
    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Bytes, SendError> {
        let limit = self.inner.max_response_bytes;
        let declared = response.content_length().unwrap_or(0);
        if declared > limit {
            return Err(SendError::TooLarge);
        }
        // Preallocate what was declared, within reason: the cap may be set high.
        let mut body = Vec::with_capacity(usize::try_from(declared.min(PREALLOCATE)).unwrap_or(0));
        while let Some(chunk) = response.chunk().await? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(SendError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    /// Sends `req`, retrying throttling, server errors and transport failures up to
    /// `max_retries` times. Returns the final response whatever its status, or a
    /// transport error.
    pub(crate) async fn execute(&self, req: &Req, max_retries: u32) -> Result<Raw, TargetError> {
        let inner = &*self.inner;
        let is_post = req.method == Method::POST;
        let mut after_ambiguous = false;
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let result = self.send_once(req).await;
            let (status, reason, delay) = match result {
                Ok(mut raw) => {
                    tracing::debug!(
                        method = %req.method,
                        path = req.url.path(),
                        status = raw.status.as_u16(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "SCIM response"
                    );
                    let status = raw.status.as_u16();
                    let throttled = status == 429 || status == 503;
                    // 429/503 mean the request was not processed, so even a POST can be
                    // sent again; other 5xx may come after the POST was processed.
                    let retryable = throttled || (!is_post && matches!(status, 500 | 502 | 504));
                    if !retryable || attempt >= max_retries {
                        raw.after_ambiguous = after_ambiguous;
                        return Ok(raw);
                    }
                    let delay = if throttled {
                        raw.retry_after
                            .as_deref()
                            .and_then(|v| parse_retry_after(v, SystemTime::now()))
                            .map(|d| d.min(inner.max_retry_after))
                    } else {
                        None
                    };
                    inner.counts.record_retry(if throttled {
                        RetryReason::Throttled
                    } else {
                        RetryReason::ServerError
                    });
                    (
                        Some(status),
                        format!("HTTP {status}"),
                        delay.unwrap_or_else(|| self.backoff(attempt)),
                    )
                }
                Err(SendError::TooLarge) => {
                    // The same request would get the same answer: not retried.
                    return Err(TargetError::ResponseTooLarge {
                        method: req.method.clone(),
                        path: req.path(),
                        limit: inner.max_response_bytes,
                        ambiguous: is_post,
                    });
                }
                Err(SendError::Http(err)) => {
                    let failure = classify(&err);
                    let sent = !matches!(failure, Failure::NotSent { .. });
                    let reason = error_chain(err);
                    // Requests in flight together share one retry budget while the target
                    // cannot be reached at all: once as many connections were refused in a
                    // row as one request may try, every request gives up at its next refusal
                    // (six objects used to make 36 attempts against a closed port).
                    let unreached = if sent {
                        0
                    } else {
                        inner.counts.unreached.fetch_add(1, Ordering::Relaxed) + 1
                    };
                    // A POST that may have reached the server must not be replayed: the
                    // caller re-matches first, or a duplicate could be created.
                    let give_up = (is_post && sent)
                        || attempt >= max_retries
                        || unreached > u64::from(max_retries);
                    if give_up {
                        let ambiguous = is_post && sent;
                        let method = req.method.clone();
                        let path = req.path();
                        return Err(match failure {
                            Failure::Timeout | Failure::NotSent { timeout: true } => {
                                TargetError::Timeout {
                                    method,
                                    path,
                                    connected: sent,
                                    ambiguous,
                                }
                            }
                            Failure::Dropped | Failure::NotSent { timeout: false } => {
                                TargetError::Connection {
                                    method,
                                    path,
                                    reason,
                                    connected: sent,
                                    ambiguous,
                                }
                            }
                        });
                    }
                    after_ambiguous |= sent;
                    inner.counts.record_retry(match failure {
                        Failure::Timeout | Failure::NotSent { timeout: true } => {
                            RetryReason::Timeout
                        }
                        Failure::Dropped | Failure::NotSent { timeout: false } => {
                            RetryReason::Connection
                        }
                    });
                    (None, reason, self.backoff(attempt))
                }
            };
            attempt += 1;
            tracing::warn!(
                method = %req.method,
                path = req.url.path(),
                status,
                reason = %reason,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying SCIM request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Full-jitter exponential backoff within the configured bounds.
    fn backoff(&self, attempt: u32) -> Duration {
        crate::http::backoff(self.inner.backoff_base, self.inner.backoff_max, attempt)
    }

    /// The body of a 2xx response, or the error the status means.
    fn success(&self, req: &Req, raw: Raw) -> Result<Raw, TargetError> {
        if raw.body_error == BodyError::NoStatus {
            return Err(incompatible(
                req,
                raw.status,
                "the body is a SCIM Error without a 4xx or 5xx status".into(),
            ));
        }
        if raw.status.is_success() {
            return Ok(raw);
        }
        if raw.status.is_redirection() || raw.status.is_informational() {
            let target = raw.location.as_deref().unwrap_or("no Location");
            return Err(incompatible(
                req,
                raw.status,
                format!("unexpected redirect ({target}): use the final SCIM base URL"),
            ));
        }
        let (scim_type, mut detail) = self.error_details(&raw.body);
        if let BodyError::Replaced(http) = raw.body_error {
            let note = format!("answered HTTP {} with a SCIM Error", http.as_u16());
            detail = Some(match detail {
                Some(d) => format!("{note}: {d}"),
                None => note,
            });
        }
        let status = raw.status.as_u16();
        Err(TargetError::Status {
            method: req.method.clone(),
            path: req.path(),
            status,
            scim_type,
            detail,
            ambiguous: req.method == Method::POST && matches!(status, 500 | 502 | 504),
        })
    }

    /// The JSON body of a 2xx response, whatever its content type.
    fn success_json(&self, req: &Req, raw: Raw) -> Result<Value, TargetError> {
        let raw = self.success(req, raw)?;
        if raw.body.iter().all(u8::is_ascii_whitespace) {
            return Err(incompatible(
                req,
                raw.status,
                "empty body where JSON was expected".into(),
            ));
        }
        serde_json::from_slice(&raw.body).map_err(|e| {
            incompatible(
                req,
                raw.status,
                format!(
                    "body is not valid JSON ({e}): {}",
                    self.safe_snippet(&raw.body)
                ),
            )
        })
    }

    /// `scimType` and `detail` of a SCIM error body, or a snippet of any other body.
    /// The token is scrubbed in case a server echoes the `Authorization` header.
    fn error_details(&self, body: &[u8]) -> (Option<String>, Option<String>) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => {
                let text = |key: &str| match map.get(key) {
                    Some(Value::String(s)) if !s.is_empty() => Some(self.scrub(s)),
                    Some(Value::Number(n)) => Some(self.scrub(&n.to_string())),
                    _ => None,
                };
                (text("scimType"), text("detail").or_else(|| text("message")))
            }
            _ if body.iter().all(u8::is_ascii_whitespace) => (None, None),
            // Already scrubbed.
            _ => (None, Some(self.safe_snippet(body))),
        }
    }

    /// Remove the token from text a server sent back (a server may echo the `Authorization`
    /// header): its plain and URL-encoded forms are replaced in place; any other encoding
    /// [`ScimClient::echoes_token`] finds redacts the whole text.
    fn scrub(&self, text: &str) -> String {
        let token = self.inner.token.expose_secret();
        if token.is_empty() {
            return text.to_owned();
        }
        let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
        let scrubbed = text
            .replace(token, "[REDACTED]")
            .replace(&encoded, "[REDACTED]");
        if self.echoes_token(&scrubbed) {
            return ECHOED_TOKEN.to_owned();
        }
        scrubbed
    }

    /// Whether `text` holds the token in any encoding: percent-decoding up to three times
    /// catches plain, encoded and double-encoded echoes, whatever the hex digits' case.
    fn echoes_token(&self, text: &str) -> bool {
        let token = self.inner.token.expose_secret();
        if token.is_empty() {
            return false;
        }
        let mut text = text.to_owned();
        for _ in 0..4 {
            if text.contains(token) {
                return true;
            }
            let decoded = percent_decode(&text);
            if decoded == text {
                return false;
            }
            text = decoded;
        }
        false
    }

    /// A response header's value for an error message: wholly redacted when it holds the
    /// token in any encoding (a redirect echoing `Authorization` into its `Location`), and
    /// cut to a bounded length.
    fn scrub_header(&self, value: &str) -> String {
        if self.echoes_token(value) {
            return ECHOED_TOKEN.to_owned();
        }
        snippet(value.as_bytes())
    }

    /// The start of a body for an error message, scrubbed *before* it is cut so no part of
    /// the token can survive at the cut.
    pub(crate) fn safe_snippet(&self, body: &[u8]) -> String {
        snippet(self.scrub(&String::from_utf8_lossy(body)).as_bytes())
    }
}

fn settings_error(reason: &str) -> TargetError {
    TargetError::Settings {
        reason: reason.to_owned(),
    }
}

pub(crate) fn incompatible(req: &Req, status: StatusCode, reason: String) -> TargetError {
    TargetError::Incompatible {
        method: req.method.clone(),
        path: req.path(),
        status: status.as_u16(),
        reason,
        collection: false,
    }
}

/// [`incompatible`], for an answer from a resource collection (see [`TargetError::reach`]).
fn collection_incompatible(req: &Req, status: StatusCode, reason: String) -> TargetError {
    on_collection(incompatible(req, status, reason))
}

/// Marks a not-SCIM answer as coming from a resource collection.
fn on_collection(e: TargetError) -> TargetError {
    match e {
        TargetError::Incompatible {
            method,
            path,
            status,
            reason,
            ..
        } => TargetError::Incompatible {
            method,
            path,
            status,
            reason,
            collection: true,
        },
        other => other,
    }
}

fn normalise_base(url: &Url) -> Result<Url, TargetError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(settings_error("the base URL must be http:// or https://"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(settings_error("the base URL must have a host"));
    }
    // The token goes in a header; credentials in the URL would end up in error messages.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(settings_error("the base URL must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(settings_error(
            "the base URL must not have a query or fragment",
        ));
    }
    let mut base = url.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// Why `segment` cannot be one URL path segment (see [`ScimClient::url`]).
fn check_segment(segment: &str) -> Result<(), &'static str> {
    if segment.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    match segment {
        "" => Err("it is empty"),
        "." | ".." => {
            Err("it is a dot segment (\".\" or \"..\"), which would address another path")
        }
        _ => Ok(()),
    }
}

/// Why an id a target returned must not be linked: unusable in a URL, or holding `/`
/// (which could only ever be sent escaped, and no SCIM server hands out such ids).
fn check_target_id(id: &str) -> Result<(), &'static str> {
    check_segment(id)?;
    if id.contains('/') {
        return Err("it contains \"/\"");
    }
    Ok(())
}

/// The id of a resource the target returned, checked before anything links it.
fn check_returned_id(req: &Req, resource: &Value) -> Result<(), TargetError> {
    let id = resource
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    check_target_id(id).map_err(|reason| TargetError::InvalidId {
        method: req.method.clone(),
        path: req.path(),
        id: shown_id(id),
        reason,
    })
}

/// `path`: the URL path of the collection (the segments before the id).
fn invalid_id(method: &Method, path: String, id: &str, reason: &'static str) -> TargetError {
    TargetError::InvalidId {
        method: method.clone(),
        path,
        id: shown_id(id),
        reason,
    }
}

/// An id for a message: quoted with control characters escaped, cut to a bounded length.
fn shown_id(id: &str) -> String {
    let cut: String = id.chars().take(ID_SNIPPET).collect();
    if cut.len() < id.len() {
        format!("{cut:?}… ({} bytes)", id.len())
    } else {
        format!("{cut:?}")
    }
}

/// Appends `segment` percent-encoded as one path segment: every byte but RFC 3986's
/// unreserved characters, sub-delimiters, `:` and `@` is encoded, so `/`, `%`, `?`, `#`
/// and spaces cannot change the URL's structure.
fn encode_segment(segment: &str, out: &mut String) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// `text` with `%XX` sequences decoded and `+` read as a space (query-string style);
/// invalid sequences are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a 2xx body is a SCIM Error (its `schemas` names the Error schema, or it has no
/// `id` and a 4xx/5xx `status`), and with which status. Bodies that cannot be one are not
/// parsed twice.
fn scim_error_status(body: &[u8]) -> BodyError {
    if !names_error_schema(body) && !mentions(body, &STATUS_KEY) {
        return BodyError::None;
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return BodyError::None;
    };
    let declared = map
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter().any(|v| {
                v.as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case(SCIM_ERROR_SCHEMA))
            })
        });
    let status = match map.get("status") {
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
    .filter(|s| (400..=599).contains(s))
    .and_then(|s| StatusCode::from_u16(s).ok());
    match status {
        Some(status) if declared || !map.contains_key("id") => BodyError::Replaced(status),
        None if declared => BodyError::NoStatus,
        _ => BodyError::None,
    }
}

/// The two texts every 2xx body is searched for, each searcher built once: `memmem::find`
/// builds one per call, about 1% of an initial cycle's export CPU.
static SCHEMA_VERSION: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(VERSION));
/// What precedes the last part of every SCIM schema URN (`…:2.0:User`, `…:2.0:Error`).
const VERSION: &[u8] = b":2.0:";
static STATUS_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"status\""));

/// Whether `body` may name the SCIM Error schema, in any case (`schemas` is compared
/// case-insensitively, as URNs are): a `:2.0:` followed by `error`. A resource's own schema
/// URNs go on with `User` or `Group`, so they pass.
fn names_error_schema(body: &[u8]) -> bool {
    const TAIL: &[u8] = b"error";
    SCHEMA_VERSION.find_iter(body).any(|at| {
        let from = at + VERSION.len();
        body.get(from..from + TAIL.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(TAIL))
    })
}

/// Whether `needle` occurs in `haystack` (every 2xx body is checked twice: memchr's
/// substring search, as the provisioning-log queries use).
fn mentions(haystack: &[u8], needle: &memmem::Finder<'_>) -> bool {
    needle.find(haystack).is_some()
}

fn to_bytes(body: &Value) -> Bytes {
    // Serialising a `Value` to a Vec cannot fail (string keys, no I/O).
    Bytes::from(serde_json::to_vec(body).unwrap_or_default())
}

/// The start of a body, printable, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_SNIPPET)
        .collect();
    let text = text.trim().to_owned();
    if body.len() > text.len() {
        format!("{text}…")
    } else {
        text
    }
}

/// The non-empty string `id` of a created resource's body when the body is a JSON object
/// holding exactly one `id`; `None` for anything else (not JSON, not an object, no `id`, a
/// non-string or empty one, a repeated key), which the caller parses in full to report.
fn created_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<IdOnly>(body)
        .ok()?
        .0
        .filter(|id| !id.is_empty())
}

/// A JSON object's `id` (if any): every other member is checked as `Value` would check it
/// ([`Checked`]) but not built. A repeated `id` is an error.
struct IdOnly(Option<String>);

impl<'de> serde::Deserialize<'de> for IdOnly {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(IdOnlyVisitor)
    }
}

struct IdOnlyVisitor;

impl<'de> serde::de::Visitor<'de> for IdOnlyVisitor {
    type Value = IdOnly;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<IdOnly, A::Error> {
        let mut id: Option<Option<String>> = None;
        while let Some(IsId(is_id)) = map.next_key::<IsId>()? {
            if is_id {
                if id.is_some() {
                    return Err(serde::de::Error::duplicate_field("id"));
                }
                id = Some(map.next_value()?);
            } else {
                map.next_value::<Checked>()?;
            }
        }
        Ok(IdOnly(id.flatten()))
    }
}

/// Whether an object's key is `id`, decoded as a `String` key would be (escapes included),
/// without allocating one for every member of every created resource.
struct IsId(bool);

impl<'de> serde::Deserialize<'de> for IsId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(IsIdVisitor)
    }
}

struct IsIdVisitor;

impl<'de> serde::de::Visitor<'de> for IsIdVisitor {
    type Value = IsId;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, key: &str) -> Result<IsId, E> {
        Ok(IsId(key == "id"))
    }
}

/// Any JSON value, parsed as `serde_json::Value` parses it (strings decoded, so invalid
/// UTF-8 and lone surrogates are errors, as they are to `create`) and dropped. Skipping with
/// `IgnoredAny` would not decode strings: `create_id` would take bodies `create` rejects.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

pub(crate) fn resource_id(resource: &Value) -> Option<&str> {
    resource
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// Why a body is not a usable ListResponse.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListError {
    #[error("not a ListResponse (not a JSON object)")]
    NotAnObject,
    #[error("Resources contains something other than objects")]
    NonObjectResource,
    #[error("totalResults is {0} but Resources is missing")]
    MissingResources(u64),
    #[error("not a ListResponse (no totalResults nor Resources)")]
    NotAList,
    #[error("Resources is not an array")]
    ResourcesNotAnArray,
    #[error(
        "totalResults is {total} but {returned} resource(s) were returned: \
         the result is incomplete, so it is not taken as a match or as no match"
    )]
    Incomplete { total: String, returned: usize },
}

/// The `Resources` of a ListResponse, leniently: `resources` is accepted, and
/// `Resources` may be missing when `totalResults` is 0.
pub(crate) fn parse_list(body: Value) -> Result<Vec<Value>, ListError> {
    let Value::Object(mut map) = body else {
        return Err(ListError::NotAnObject);
    };
    let total_value = map.get("totalResults").cloned();
    let total = match &total_value {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    // `1e18` is a float to serde_json: compare as a float when it is not an integer.
    let total_above = |returned: usize| match &total_value {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t) => t > returned as u64,
            None => n.as_f64().is_some_and(|t| t > returned as f64),
        },
        Some(Value::String(s)) => {
            let s = s.trim();
            match s.parse::<u64>() {
                Ok(t) => t > returned as u64,
                Err(_) => s.parse::<f64>().is_ok_and(|t| t > returned as f64),
            }
        }
        _ => false,
    };
    let shown_total = || match &total_value {
        Some(Value::String(s)) => s.trim().chars().take(32).collect(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let resources = map.remove("Resources").or_else(|| map.remove("resources"));
    match resources {
        Some(Value::Array(items)) => {
            if !items.iter().all(Value::is_object) {
                Err(ListError::NonObjectResource)
            } else if total_above(items.len()) {
                Err(ListError::Incomplete {
                    total: shown_total(),
                    returned: items.len(),
                })
            } else {
                Ok(items)
            }
        }
        None | Some(Value::Null) => match total {
            Some(0) => Ok(Vec::new()),
            Some(n) => Err(ListError::MissingResources(n)),
            None => Err(ListError::NotAList),
        },
        Some(_) => Err(ListError::ResourcesNotAnArray),
    }
}

#[cfg(test)]
mod mentions_tests {
    use super::{mentions, names_error_schema, STATUS_KEY};
    use memchr::memmem::Finder;

    #[test]
    fn finds_a_needle_anywhere_and_only_whole() {
        assert!(mentions(b"{\"status\": \"400\"}", &STATUS_KEY));
        assert!(mentions(b"xx\"status\"", &STATUS_KEY));
        assert!(mentions(b"\"status\"", &STATUS_KEY));
        assert!(!mentions(b"\"statu\"", &STATUS_KEY));
        assert!(!mentions(b"\"stat", &STATUS_KEY));
        assert!(!mentions(b"", &STATUS_KEY));
        assert!(mentions(b"ssstatus", &Finder::new(b"sstatus")));
    }

    #[test]
    fn the_error_schema_is_found_in_any_case_and_a_resource_schema_is_not() {
        assert!(names_error_schema(
            br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"]}"#
        ));
        assert!(names_error_schema(
            br#"{"schemas":["URN:IETF:PARAMS:SCIM:API:MESSAGES:2.0:ERROR"]}"#
        ));
        assert!(!names_error_schema(
            br#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1"}"#
        ));
        assert!(!names_error_schema(b"ends with :2.0:err"));
        assert!(!names_error_schema(b""));
    }
}
