//! The control socket: how `status` and `sync` reach a running daemon, which holds the state
//! store (sled admits one process). A Unix socket in the state directory, mode 0600, one JSON
//! request and one JSON answer per line.

use super::admin::AdminCommand;
use super::jobs::{Daemon, JobStatus};
use crate::cycle::CycleReport;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// A request to the daemon: one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// `provisiond status`.
    Status { job: Option<String> },
    /// `provisiond sync`.
    Sync { job: Option<String>, dry_run: bool },
    /// `provisiond restart`, `allow-deletes`, `pause`, `resume`.
    Admin { job: String, command: AdminCommand },
}

/// The daemon's answer: one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    /// Each selected job's status.
    Status { jobs: Vec<JobStatus> },
    /// Each selected job's cycle report.
    Sync { reports: Vec<CycleReport> },
    /// What an admin command did, in one line.
    Admin { message: String },
    /// The request could not be served.
    Error { message: String },
}

/// A failed exchange on the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: the daemon gave no usable answer: {message}")]
    Protocol { path: PathBuf, message: String },
    #[error("control socket {path}: no answer within {secs} s")]
    Timeout { path: PathBuf, secs: u64 },
}

/// Bind the socket. A stale socket file (no daemon behind it) is replaced; a live one is an
/// error, since another daemon owns this state directory.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another provisiond daemon is answering on it",
            )));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Bind under a temporary name, restrict it, then rename it into place: the socket is never
    // reachable at its public path with looser permissions than 0600.
    let staging = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    let placed = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(io(e));
    }
    Ok(listener)
}

/// Serve requests until `stop` is cancelled. Requests already accepted run on: a `sync`
/// through the socket sees the same stop and finishes its in-flight requests.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // E.g. out of file descriptors: retrying at once would spin a core at 100 %.
                tracing::warn!(error = %e, "control socket: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &daemon).await {
                tracing::warn!(error = %e, "control request failed");
            }
        });
    }
}

async fn handle(stream: UnixStream, daemon: &Daemon) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(Request::Status { job }) => match daemon.status(job.as_deref()) {
            Ok(jobs) => Response::Status { jobs },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        },
        Ok(Request::Admin { job, command }) => {
            tracing::info!(job = %job, command = ?command, "admin command through the control socket");
            match daemon.admin(&job, &command).await {
                Ok(message) => Response::Admin { message },
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
        Ok(Request::Sync { job, dry_run }) => {
            tracing::info!(job = ?job, dry_run, "sync requested through the control socket");
            match daemon.sync(job.as_deref(), dry_run).await {
                Ok(reports) => Response::Sync { reports },
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            }
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Send one request to a running daemon. `Ok(None)`: no daemon answers on this socket.
pub async fn request(
    path: &Path,
    req: &Request,
    timeout: Option<Duration>,
) -> Result<Option<Response>, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stream = match tokio::time::timeout(Duration::from_secs(2), UnixStream::connect(path)).await
    {
        Ok(Ok(s)) => s,
        // Permission denied (a daemon run by another user) is reported as it is: taken for
        // "no daemon", it sent the caller to a store the daemon holds, to wait there and fail
        // with a misleading "no daemon answers".
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(io(e)),
        // Nothing listening (no file, or a stale one): the caller opens the store itself.
        Ok(Err(_)) | Err(_) => return Ok(None),
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut body = serde_json::to_vec(req).unwrap_or_default();
        body.push(b'\n');
        write.write_all(&body).await.map_err(io)?;
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .map_err(io)?;
        serde_json::from_str::<Response>(&line).map_err(|e| ControlError::Protocol {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, exchange)
            .await
            .map_err(|_| ControlError::Timeout {
                path: path.to_path_buf(),
                secs: t.as_secs(),
            })?
            .map(Some),
        None => exchange.await.map(Some),
    }
}
