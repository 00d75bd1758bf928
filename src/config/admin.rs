//! `[admin]`: the admin HTTP endpoint (health, readiness, metrics, status). Off unless
//! `listen` is set; an address other than loopback must be asked for with `allow_remote`,
//! since the endpoint has no authentication and `/status` names the jobs and their targets.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// The `[admin]` table as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    #[serde(default)]
    pub(super) allow_remote: bool,
}

/// The admin endpoint's checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens: an IP address and port.
    pub listen: SocketAddr,
}

/// Check `[admin]`: `None` when the endpoint is off (no table, or no `listen`).
pub(super) fn check(raw: RawAdmin, file: &Path) -> Result<Option<AdminSettings>, ConfigError> {
    let error = |key: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        key: format!("admin.{key}"),
        message,
    };
    let Some(listen) = raw.listen else {
        return Ok(None);
    };
    let addr: SocketAddr = listen.parse().map_err(|_| {
        error(
            "listen",
            format!("{listen:?} is not an IP address and port, e.g. \"127.0.0.1:9464\""),
        )
    })?;
    if !addr.ip().is_loopback() && !raw.allow_remote {
        return Err(error(
            "listen",
            format!(
                "{addr} is not a loopback address: the admin endpoint has no authentication, \
                 so listening beyond this host needs allow_remote = true in [admin]"
            ),
        ));
    }
    Ok(Some(AdminSettings { listen: addr }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_str(
        listen: Option<&str>,
        allow_remote: bool,
    ) -> Result<Option<AdminSettings>, ConfigError> {
        check(
            RawAdmin {
                listen: listen.map(str::to_string),
                allow_remote,
            },
            Path::new("/etc/provisiond/provisiond.toml"),
        )
    }

    #[test]
    fn the_endpoint_is_off_without_listen() {
        assert_eq!(check_str(None, false).unwrap(), None);
        assert_eq!(check_str(None, true).unwrap(), None);
    }

    #[test]
    fn loopback_listens_without_allow_remote() {
        let s = check_str(Some("127.0.0.1:9464"), false).unwrap().unwrap();
        assert_eq!(s.listen, "127.0.0.1:9464".parse().unwrap());
        assert!(check_str(Some("[::1]:9464"), false).unwrap().is_some());
    }

    #[test]
    fn a_remote_listen_needs_allow_remote() {
        let e = check_str(Some("0.0.0.0:9464"), false).unwrap_err();
        assert_eq!(e.key, "admin.listen");
        assert!(e.message.contains("allow_remote = true"), "{}", e.message);
        assert!(e.to_string().contains("/etc/provisiond/provisiond.toml"));
        assert!(check_str(Some("0.0.0.0:9464"), true).unwrap().is_some());
    }

    #[test]
    fn a_listen_that_is_not_an_address_is_refused() {
        let e = check_str(Some("localhost:9464"), false).unwrap_err();
        assert_eq!(e.key, "admin.listen");
        assert!(check_str(Some("127.0.0.1"), false).is_err());
    }
}
