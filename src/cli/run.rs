//! `provisiond run`: the daemon, until `shutdown` completes.

use super::Failure;
use crate::config::Config;
use std::future::Future;

/// Run the daemon (see [`crate::daemon::run_reloadable`]), reloading on each of `reloads`; its errors become exit codes 2 (it could not
/// start) or 1 (it failed).
pub(super) async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<i32, Failure> {
    match crate::daemon::run_reloadable(config, shutdown, reloads).await {
        Ok(()) => Ok(0),
        Err(e) => Err(Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }),
    }
}
