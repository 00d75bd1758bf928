//! `provisiond test-connection`: the target's URL, TLS, token and SCIM answers, and the source.

use super::out::outln;
use super::Failure;
use crate::config::Config;

/// Check each selected job's target and source; exit code 1 when one fails.
pub(crate) async fn test_connection(config: &Config, job: Option<&str>) -> Result<i32, Failure> {
    let mut code = 0;
    for j in super::select(config, job)? {
        let client = j
            .require_secrets()
            .and_then(|()| crate::target::ScimClient::new(j.target.clone()));
        let report = match client {
            Ok(c) => c.test_connection().await,
            Err(e) => crate::target::ConnectionReport::invalid_settings(&e),
        };
        outln!("{} target ({}): {report}", j.name, j.target.base_url);
        if !report.ok {
            code = 1;
        }
        if let Err(e) = j.require_secrets() {
            outln!("{} source: {e}", j.name);
            code = 1;
            continue;
        }
        match j.spec().source.test_connection().await {
            Ok(what) => outln!("{} source: OK: {what}", j.name),
            Err(e) => {
                outln!("{} source: {e}", j.name);
                code = 1;
            }
        }
    }
    Ok(code)
}
