//! `provisiond run`: the daemon, until `shutdown` completes.

use super::Failure;
use crate::config::Config;
use std::future::Future;

/// Run the daemon (see [`crate::daemon::run`]); its errors become exit codes 2 (it could not
/// start) or 1 (it failed).
pub(super) async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<i32, Failure> {
    match crate::daemon::run(config, shutdown).await {
        Ok(()) => Ok(0),
        Err(e) => Err(Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }),
    }
}
