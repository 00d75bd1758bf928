//! The daemon (`provisiond run`), shaped like mini-redis's server: [`run`] takes the
//! configuration and a `shutdown` future (signals, in `main`; anything, in a test) and owns
//! everything else: the store lock and pid file, the job workers and their schedule, and the
//! control socket. One [`CancellationToken`] is the only stop mechanism: every worker, cycle
//! and control request sees it.

pub(crate) mod admin;
pub(crate) mod control;
mod http;
pub(crate) mod jobs;
pub(crate) mod lock;
mod metrics;
mod schedule;
mod sd_notify;

use crate::config::Config;
use crate::state::{StateError, StateStore};
use crate::target::TargetError;
use crate::util::cron::CronError;
use control::ControlError;
pub use http::AdminHttpError;
use jobs::Daemon;
use lock::{LockError, StoreUser};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the daemon could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state store is held by another process or cannot be opened.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The control socket cannot be bound.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The admin HTTP endpoint cannot listen.
    #[error(transparent)]
    AdminHttp(#[from] AdminHttpError),
    /// A job's target settings do not make a client.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A job's cron expression does not parse.
    #[error("the cron scheduler failed: {0}")]
    Cron(#[source] CronError),
    /// The workers ended before any shutdown was asked for.
    #[error("the job workers stopped unexpectedly")]
    WorkersStopped,
    /// The workers' task failed (a panic).
    #[error("the job workers failed: {0}")]
    WorkersFailed(#[source] tokio::task::JoinError),
    /// The store could not be flushed on the way out.
    #[error("could not persist the state on shutdown: {0}")]
    Persist(#[source] StateError),
}

/// How long in-flight requests may run on after the shutdown future completes: what is left
/// of the 10 s systemd allows, less the time to persist and go.
const DRAIN: Duration = Duration::from_secs(8);

/// Run the daemon until `shutdown` completes: a cycle per job at start-up, then on each job's
/// schedule; `status` and `sync` answered on the control socket. On shutdown, cycles take no
/// new work, in-flight requests get [`DRAIN`], and the store is flushed.
///
/// `shutdown` should be created before this is called when it wraps signals, so that one
/// arriving while the store opens still means a clean stop.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    // No reload ever comes: the sender is dropped at once.
    let (_, reloads) = tokio::sync::mpsc::unbounded_channel();
    run_reloadable(config, shutdown, reloads).await
}

/// [`run`], reloading the configuration file (`config.path`) on each message of `reloads`
/// (SIGHUP, in `main`): if it loads and checks, new and changed jobs take effect between
/// cycles and removed jobs stop after their in-flight cycle; if not, the configuration in
/// force stays and the error is logged with its file and key. With `NOTIFY_SOCKET` set, the
/// service manager hears `READY=1`, `RELOADING=1`, the status line, `WATCHDOG=1` and
/// `STOPPING=1` (the `sd_notify` module).
pub(crate) async fn run_reloadable(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<(), DaemonError> {
    let store = lock::open_store(&config, StoreUser::Daemon).await?;
    // The pid file first: once the socket answers, the pid file names this daemon.
    let pid_path = lock::pid_file(&config);
    if let Err(e) = lock::write_pid_file(&config) {
        tracing::warn!(path = %pid_path.display(), error = %e, "cannot write the pid file");
    }
    let listener = match control::bind(&config.control_socket).await {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&pid_path);
            return Err(e.into());
        }
    };
    let admin_listener = match &config.admin {
        Some(admin) => match http::bind(admin.listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = std::fs::remove_file(&config.control_socket);
                let _ = std::fs::remove_file(&pid_path);
                return Err(e.into());
            }
        },
        None => None,
    };
    let stop = CancellationToken::new();
    let store: Arc<dyn StateStore> = Arc::new(store);
    let daemon = match Daemon::new(config.clone(), store.clone(), stop.clone()) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            let _ = std::fs::remove_file(&config.control_socket);
            let _ = std::fs::remove_file(&pid_path);
            return Err(e.into());
        }
    };
    tracing::info!(jobs = daemon.jobs().len(), socket = %config.control_socket.display(), pid = std::process::id(), "provisiond started");
    // The socket stops accepting only once the workers have drained, so that `status` keeps
    // answering during the drain: a token of its own, cancelled after them.
    let closing = CancellationToken::new();
    let control_task = tokio::spawn(control::serve(listener, daemon.clone(), closing.clone()));
    // The admin endpoint, like the socket, answers through the drain (`/status`, `/metrics`).
    let admin_task =
        admin_listener.map(|l| tokio::spawn(http::serve(l, daemon.clone(), closing.clone())));

    // Notification emails leave from their own task: a slow or absent mail server never
    // holds a cycle. It reads `[smtp]` from the configuration in force, so a reload applies.
    let sender = tokio::spawn(crate::notify::run_sender(
        {
            let d = daemon.clone();
            move || d.config().smtp
        },
        store.clone(),
        stop.clone(),
    ));
    let mut workers = tokio::spawn(schedule::run_workers(daemon.clone(), reloads));
    // The workers only end on shutdown; if they end first, say so and stop rather than idle
    // on as a daemon that never runs a cycle.
    let early_end = tokio::select! {
        () = shutdown => None,
        r = &mut workers => Some(r),
    };
    stop.cancel();
    let failure = match early_end {
        None => {
            sd_notify::stopping();
            tracing::info!("shutting down: finishing in-flight requests");
            if tokio::time::timeout(DRAIN, workers).await.is_err() {
                tracing::warn!(
                    "requests still in flight after 8 s: abandoning them (the next cycle re-matches)"
                );
            }
            None
        }
        Some(r) => {
            let e = match r {
                Ok(Ok(())) => DaemonError::WorkersStopped,
                Ok(Err(e)) => DaemonError::Cron(e),
                Err(e) => DaemonError::WorkersFailed(e),
            };
            tracing::error!(error = %e, "provisiond cannot go on");
            Some(e)
        }
    };
    closing.cancel();
    let _ = sender.await;
    let _ = control_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    let flushed = store.flush();
    let _ = std::fs::remove_file(&config.control_socket);
    let _ = std::fs::remove_file(&pid_path);
    if let Some(e) = failure {
        return Err(e);
    }
    flushed.map_err(DaemonError::Persist)?;
    tracing::info!("provisiond stopped");
    Ok(())
}

/// For the daemon's tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::config::Config;

    /// One file-source job, `robin`, whose target is never reached.
    pub(crate) fn config() -> Config {
        let text = r#"
[[jobs]]
name = "robin"
interval = "40m"
[jobs.source]
kind = "file"
path = "directory.json"
[jobs.target]
url = "http://127.0.0.1:1/scim/v2"
token_env = "TOKEN"
"#;
        // Relative paths resolve beside the config: the example directory file.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/p.toml");
        Config::parse(text, &path, &|_| Some("t".into())).unwrap()
    }
}
