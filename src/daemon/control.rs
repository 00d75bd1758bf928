//! The control socket: how `status` and `sync` reach a running daemon, which holds the state
//! store (sled admits one process). A Unix socket in the state directory, mode 0600, one JSON
//! request and one JSON answer per line.

use super::admin::AdminCommand;
use super::jobs::{Daemon, JobStatus};
use crate::cycle::ondemand::{OnDemandRequest, OnDemandResult};
use crate::cycle::CycleReport;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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
    /// `provisiond provision`: one object on demand.
    Provision {
        job: String,
        request: OnDemandRequest,
    },
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
    /// What an on-demand run did, step by step.
    Provision { outcome: OnDemandResult },
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
pub(crate) async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
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
        crate::util::create_private_dir_all(dir).map_err(io)?;
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
pub(crate) async fn serve(listener: UnixListener, daemon: Arc<Daemon>, stop: CancellationToken) {
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

/// The longest request line the daemon reads: requests are a few dozen bytes, and an
/// unbounded read let any local client grow the daemon's memory without limit.
const MAX_REQUEST_LINE: usize = 64 * 1024;
/// How long a client may take to send its request line.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Read one request line of at most [`MAX_REQUEST_LINE`] bytes. `Err` is the answer to give
/// instead (too long, too slow, not a request); the connection is then closed.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    read: R,
    within: Duration,
) -> Result<Request, Response> {
    let mut line = Vec::new();
    // One byte more than allowed: a line that fills it without a newline is too long.
    let mut bounded = BufReader::new(read).take(MAX_REQUEST_LINE as u64 + 1);
    let error = |message: String| Response::Error { message };
    match tokio::time::timeout(within, bounded.read_until(b'\n', &mut line)).await {
        Err(_) => {
            return Err(error(format!(
                "bad request: no request line within {} s",
                within.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(error(format!("bad request: {e}"))),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST_LINE && !line.ends_with(b"\n") {
        return Err(error(format!(
            "bad request: a request line is at most {} KiB",
            MAX_REQUEST_LINE / 1024
        )));
    }
    serde_json::from_slice::<Request>(&line).map_err(|e| error(format!("bad request: {e}")))
}

async fn handle(stream: UnixStream, daemon: &Daemon) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let response = match read_request(read, REQUEST_READ_TIMEOUT).await {
        Err(refused) => {
            tracing::warn!(
                "control socket: a request was refused (too long, too slow or malformed)"
            );
            refused
        }
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
        Ok(Request::Provision { job, request }) => {
            tracing::info!(job = %job, object_type = %request.object_type, key = %request.key, "provision on demand through the control socket");
            match daemon.provision(&job, &request).await {
                Ok(outcome) => Response::Provision { outcome },
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn refusal(r: Result<Request, Response>) -> String {
        match r {
            Err(Response::Error { message }) => message,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_over_long_request_line_is_refused_without_reading_it_all() {
        let ok = br#"{"cmd":"status","job":null}"#.to_vec();
        assert!(matches!(
            read_request(&ok[..], T).await,
            Ok(Request::Status { job: None })
        ));
        // A valid request padded with spaces to just under the limit is still read.
        let mut padded = ok.clone();
        padded.resize(MAX_REQUEST_LINE, b' ');
        padded.push(b'\n');
        assert!(read_request(&padded[..], T).await.is_ok());
        // 8 MiB without a newline: refused after 64 KiB.
        let huge = vec![b' '; 8 << 20];
        let message = refusal(read_request(&huge[..], T).await);
        assert!(message.contains("at most 64 KiB"), "{message}");
        let message = refusal(read_request(&b"{\"cmd\":\"nope\"}\n"[..], T).await);
        assert!(message.starts_with("bad request"), "{message}");
    }

    #[tokio::test]
    async fn a_silent_client_is_given_up_on() {
        let (_client, server) = tokio::io::duplex(64);
        let message = refusal(read_request(server, Duration::from_millis(50)).await);
        assert!(message.contains("no request line"), "{message}");
    }
}
