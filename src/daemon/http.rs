//! The admin HTTP endpoint (`[admin] listen`), off by default: `GET /healthz` (the process
//! serves), `GET /readyz` (ready to provision: the config is loaded and the store open, which
//! hold once this serves, and no job's credentials are refused), `GET /metrics` (Prometheus,
//! see [`super::metrics`]) and `GET /status` (the `provisiond status --json` document).
//! Read-only: nothing here changes a job, so it needs no authentication on loopback.

use super::jobs::{Daemon, JobStatus};
use super::metrics::CONTENT_TYPE;
use crate::state::QuarantineReason;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The endpoint could not listen.
#[derive(Debug, thiserror::Error)]
#[error("admin endpoint {addr} (config key admin.listen): cannot listen: {source}")]
pub struct AdminHttpError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Bind the endpoint's address: done before the daemon starts its jobs, so a port in use
/// stops the start-up with a clear error rather than leaving a daemon nobody can probe.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminHttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminHttpError { addr, source })
}

/// Serve the endpoint until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, daemon: Arc<Daemon>, stop: CancellationToken) {
    let addr = listener.local_addr().ok();
    tracing::info!(listen = ?addr, "admin endpoint listening");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(daemon);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(listen = ?addr, error = %e, "admin endpoint stopped");
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The status of every job, or the 503 to answer instead (the store cannot be read).
fn statuses(daemon: &Daemon) -> Result<Vec<JobStatus>, Box<Response>> {
    daemon.status(None).map_err(|e| {
        tracing::warn!(error = %e, "admin endpoint: cannot read the jobs' status");
        Box::new(unavailable(format!("cannot read the state store: {e}")))
    })
}

fn unavailable(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "ready": false, "reason": reason })),
    )
        .into_response()
}

/// Why the daemon is not ready, by its jobs' status: a job whose credentials were refused (or
/// whose target does not speak SCIM) is quarantined with `EncounteredQuarantineException`,
/// and nothing it should provision will be until an admin fixes its token.
pub(crate) fn not_ready(statuses: &[JobStatus]) -> Option<String> {
    let failing: Vec<String> = statuses
        .iter()
        .filter_map(|s| {
            let q = s.quarantine.as_ref()?;
            (q.reason == QuarantineReason::EncounteredQuarantineException)
                .then(|| format!("job {}: {}: {}", s.job, q.error.code, q.error.message))
        })
        .collect();
    (!failing.is_empty()).then(|| {
        format!(
            "the target refuses the credentials or does not speak SCIM: {}",
            crate::util::text::bounded_list(&failing)
        )
    })
}

async fn readyz(State(daemon): State<Arc<Daemon>>) -> Response {
    let statuses = match statuses(&daemon) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match not_ready(&statuses) {
        Some(reason) => unavailable(reason),
        None => Json(serde_json::json!({ "ready": true })).into_response(),
    }
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    let statuses = match statuses(&daemon) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match daemon.metrics.render(&daemon, &statuses) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "admin endpoint: cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn status(State(daemon): State<Arc<Daemon>>) -> Response {
    match statuses(&daemon) {
        Ok(s) => Json(s).into_response(),
        Err(r) => *r,
    }
}
