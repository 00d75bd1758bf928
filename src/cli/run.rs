//! `provisiond run`: the daemon, until `shutdown` completes.

use super::Failure;
use crate::config::Config;
use crate::daemon::DaemonError;
use std::future::Future;

/// Run the daemon (see [`crate::daemon::run_reloadable`]), reloading on each of `reloads`; its errors become exit codes 5 (a job's target
/// settings make no client) or 4 (the store, the socket or the workers failed): see
/// [`super::exit`]. A stop (SIGTERM) is a clean end, 0, also mid-cycle.
pub(super) async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<i32, Failure> {
    match crate::daemon::run_reloadable(config, shutdown, reloads).await {
        Ok(()) => Ok(0),
        Err(e @ DaemonError::Target(_)) => Err(Failure {
            code: super::exit::CONFIG,
            message: e.to_string(),
        }),
        Err(e) => Err(Failure::failed(e.to_string())),
    }
}
