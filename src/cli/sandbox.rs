//! `provisiond sandbox`: the in-memory SCIM 2.0 server, until `shutdown` completes.

use super::out::outln;
use super::Failure;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

/// Serve the sandbox on `listen` until `shutdown` completes.
pub(crate) async fn sandbox(
    listen: SocketAddr,
    token: Option<String>,
    faults: Option<&Path>,
    shutdown: impl Future<Output = ()>,
) -> Result<i32, Failure> {
    let faults = match faults {
        None => Vec::new(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", p.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::usage(format!("{}: not a list of fault rules: {e}", p.display()))
            })?
        }
    };
    let config = crate::sandbox::SandboxConfig {
        token: token.map(secrecy::SecretString::from),
        faults,
        ..Default::default()
    };
    let has_token = config.token.is_some();
    let handle = crate::sandbox::spawn(listen, config)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    outln!(
        "SCIM 2.0 sandbox listening on {} ({}); Ctrl-C stops it",
        handle.base_url(),
        if has_token {
            "bearer token required"
        } else {
            "any token accepted"
        }
    );
    shutdown.await;
    handle.shutdown().await;
    Ok(0)
}
