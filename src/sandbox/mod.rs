//! An in-memory SCIM 2.0 server with fault injection, for tests, the benchmark,
//! `provisiond demo` and `provisiond sandbox`.
//!
//! Connections are served one hyper connection per task (not `axum::serve`) so that a fault
//! can close a connection without answering, as a crashed or overloaded target would.

mod server;
mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use store::{Kind, Store};

/// How the sandbox behaves.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Bearer token required on every request; `None` accepts anything.
    pub token: Option<SecretString>,
    /// Faults injected from the start.
    pub faults: Vec<FaultRule>,
    /// Largest page a list request gets (default 1000).
    pub max_page_size: usize,
    /// Answer PATCH with 200 and the resource instead of 204 No Content.
    pub patch_returns_resource: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            token: None,
            faults: Vec::new(),
            max_page_size: 1000,
            patch_returns_resource: false,
        }
    }
}

/// A fault to inject into matching requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// HTTP method to match (any case); absent matches every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path prefix to match, e.g. `/Users`; absent matches every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Let the first `skip` matching requests through untouched.
    #[serde(default)]
    pub skip: u64,
    /// Affect only the next `times` matching requests; absent = every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// What to do.
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule applying `action` to every request.
    pub fn new(action: FaultAction) -> FaultRule {
        FaultRule {
            method: None,
            path_prefix: None,
            skip: 0,
            times: None,
            action,
        }
    }

    /// Restricts the rule to one method.
    pub fn method(mut self, method: &str) -> FaultRule {
        self.method = Some(method.to_string());
        self
    }

    /// Restricts the rule to paths starting with `prefix`.
    pub fn path_prefix(mut self, prefix: &str) -> FaultRule {
        self.path_prefix = Some(prefix.to_string());
        self
    }

    /// Lets the first `n` matching requests through.
    pub fn skip(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }

    /// Affects only `n` matching requests.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }

    fn applies_to(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_prefix.as_deref().is_none_or(|p| {
                path.get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p))
            })
    }
}

/// What a fault does. In JSON: `{"status": 429, "retry_after": "2"}`, `{"delay_ms": 500}`,
/// `{"drop": "before"}`, `{"drop": "after"}`, `{"truncate": true}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FaultAction {
    /// Answer with this status without applying the request.
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After` header: seconds or an HTTP date.
        #[serde(
            default,
            deserialize_with = "opt_string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after: Option<String>,
        /// A raw body to send instead of a SCIM error (may be anything, even not JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// Wait, then handle the request normally.
    Delay {
        /// Milliseconds to wait.
        delay_ms: u64,
    },
    /// Close the connection without answering.
    Drop {
        /// Before or after applying the request.
        drop: DropWhen,
    },
    /// Apply the request, then send only the first half of the JSON body.
    Truncate {
        /// Must be `true`.
        truncate: bool,
    },
}

/// When a `drop` fault closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DropWhen {
    /// Without applying the request.
    Before,
    /// After applying it: the "lost response".
    After,
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "retry_after must be a string or number, got {other}"
        ))),
    }
}

/// Requests received per method (admin requests excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// GET requests.
    pub get: u64,
    /// POST requests.
    pub post: u64,
    /// PUT requests.
    pub put: u64,
    /// PATCH requests.
    pub patch: u64,
    /// DELETE requests.
    pub delete: u64,
    /// All requests, including other methods.
    pub total: u64,
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Default)]
struct Counters {
    get: AtomicU64,
    post: AtomicU64,
    put: AtomicU64,
    patch: AtomicU64,
    delete: AtomicU64,
    total: AtomicU64,
}

impl Counters {
    fn count(&self, method: &str) {
        let c = match method {
            "GET" => Some(&self.get),
            "POST" => Some(&self.post),
            "PUT" => Some(&self.put),
            "PATCH" => Some(&self.patch),
            "DELETE" => Some(&self.delete),
            _ => None,
        };
        if let Some(c) = c {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            get: self.get.load(Ordering::Relaxed),
            post: self.post.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            patch: self.patch.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for c in [
            &self.get,
            &self.post,
            &self.put,
            &self.patch,
            &self.delete,
            &self.total,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// A rule with its counters: matching requests seen, and faults applied.
struct ActiveFault {
    rule: FaultRule,
    seen: u64,
    applied: u64,
}

fn active(rules: Vec<FaultRule>) -> Vec<ActiveFault> {
    rules
        .into_iter()
        .map(|rule| ActiveFault {
            rule,
            seen: 0,
            applied: 0,
        })
        .collect()
}

/// State shared by every connection.
struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Vec<ActiveFault>>,
    counts: Counters,
    token: Option<SecretString>,
    max_page_size: usize,
    patch_returns_resource: bool,
    base_url: String,
}

/// Locks ignoring poisoning: a panicking test thread must not take the sandbox down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(config: SandboxConfig, addr: SocketAddr) -> Shared {
        Shared {
            store: Mutex::new(Store::default()),
            faults: Mutex::new(active(config.faults)),
            counts: Counters::default(),
            token: config.token,
            max_page_size: config.max_page_size.max(1),
            patch_returns_resource: config.patch_returns_resource,
            base_url: format!("http://{addr}"),
        }
    }

    /// The action of the first rule firing for this request, advancing every matching
    /// rule's counters.
    fn fault_for(&self, method: &str, path: &str) -> Option<FaultAction> {
        let mut faults = lock(&self.faults);
        let mut chosen = None;
        for f in faults.iter_mut() {
            if !f.rule.applies_to(method, path) {
                continue;
            }
            f.seen += 1;
            let fires = f.seen > f.rule.skip && f.rule.times.is_none_or(|t| f.applied < t);
            if fires && chosen.is_none() {
                f.applied += 1;
                chosen = Some(f.rule.action.clone());
            }
        }
        chosen
    }
}

/// A running sandbox. Dropping it or calling [`SandboxHandle::shutdown`] stops the server.
pub struct SandboxHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), SandboxError>>>,
}

/// Starts a sandbox on `listen` (`127.0.0.1:0` picks a free port) in a background task.
pub async fn spawn(
    listen: SocketAddr,
    config: SandboxConfig,
) -> Result<SandboxHandle, SandboxError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
        addr: listen,
        source,
    })?;
    let shared = Arc::new(Shared::new(config, addr));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(listener, addr, shared.clone(), async move {
        // A dropped sender (handle dropped) stops the server as well.
        let _ = stopped.await;
    }));
    Ok(SandboxHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Runs a sandbox on `listen` until `shutdown` completes.
#[cfg(test)]
pub(crate) async fn serve_until(
    listen: SocketAddr,
    config: SandboxConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), SandboxError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| SandboxError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
        addr: listen,
        source,
    })?;
    let shared = Arc::new(Shared::new(config, addr));
    server::run(listener, addr, shared, shutdown).await
}

impl SandboxHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the SCIM base URL (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// A snapshot of every user.
    pub fn users(&self) -> Vec<Value> {
        lock(&self.shared.store).all(Kind::User)
    }

    /// A snapshot of every group.
    pub fn groups(&self) -> Vec<Value> {
        lock(&self.shared.store).all(Kind::Group)
    }

    /// Requests received so far, per method.
    pub fn request_counts(&self) -> RequestCounts {
        self.shared.counts.snapshot()
    }

    /// Replaces the fault rules (their counters start afresh).
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        *lock(&self.shared.faults) = active(rules);
    }

    /// Seeds a user (kept `id` if given, else a new one), bypassing validation; returns its id.
    pub fn insert_user(&self, resource: Value) -> String {
        lock(&self.shared.store).insert(Kind::User, resource, &self.shared.base_url)
    }

    /// Seeds a group like [`SandboxHandle::insert_user`]; returns its id.
    pub fn insert_group(&self, resource: Value) -> String {
        lock(&self.shared.store).insert(Kind::Group, resource, &self.shared.base_url)
    }

    /// Stops the server and waits for it to finish; open connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Ok(Err(e)) = task.await {
                tracing::warn!(error = %e, "sandbox stopped with an error");
            }
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Closes every connection when the server stops.
type StopSignal = watch::Receiver<bool>;

#[cfg(test)]
mod tests;
