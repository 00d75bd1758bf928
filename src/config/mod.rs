//! Configuration: a TOML file, checked whole before anything runs. Every error names the file
//! and the key (or the line and column) so an admin can fix it without guessing.
//!
//! This module keeps the top-level file, the job list and their assembly; each component
//! checks its own table (`source::ldap::config`, `source::graph::config`, `target::config`).

mod admin;
mod job;
mod preset;
mod raw;

pub(crate) use crate::util::ConfigError;
pub use admin::AdminSettings;
pub(crate) use job::{JobConfig, Schedule};

use crate::util::line_col;
use raw::RawConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the config is looked for when neither `--config` nor `PROVISIOND_CONFIG` says.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/provisiond/provisiond.toml";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub log_format: LogFormat,
    /// The admin HTTP endpoint (`[admin]`), when it is on.
    pub admin: Option<AdminSettings>,
    /// The mail server of notification emails (`[smtp]`), when set.
    pub smtp: Option<crate::notify::SmtpSettings>,
    /// Retention of the provisioning logs (`log_retention`, `log_max_size`).
    pub logs: crate::provlog::LogSettings,
    pub jobs: Vec<JobConfig>,
}

impl Config {
    /// The jobs a command applies to: one by name, or all.
    pub fn select(&self, name: Option<&str>) -> Result<Vec<&JobConfig>, ConfigError> {
        match name {
            None => Ok(self.jobs.iter().collect()),
            Some(n) => self
                .jobs
                .iter()
                .find(|j| j.name == n)
                .map(|j| vec![j])
                .ok_or_else(|| ConfigError {
                    file: self.path.clone(),
                    key: "jobs".into(),
                    message: format!(
                        "no job named {n:?} (jobs: {})",
                        self.jobs
                            .iter()
                            .map(|j| j.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
        }
    }

    /// Read and check a configuration file, including the token files it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, false)
    }

    /// Read and check a configuration file, but leave the secrets it names unread (every
    /// other key is checked, and which key names each secret): for the read-only commands
    /// (`status`, `mappings`), which need no secret and so run without access to the token
    /// or outside systemd's credentials. The job's secrets then hold a placeholder, and
    /// `JobConfig::require_secrets` refuses such a job where a target or source client is built. A Graph certificate's private key is
    /// still read, as it is checked against its certificate.
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, true)
    }

    fn load_with(path: &Path, defer_secrets: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        // Absolute, so relative paths in it resolve the same from any working directory.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let env = |name: &str| std::env::var(name).ok();
        Config::parse_with(&text, &path, &env, defer_secrets)
    }

    /// Check configuration text; `env` looks up environment variables (tests pass their own).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, env, false)
    }

    /// [`Config::parse`], with the secrets left unread when `defer_secrets`.
    pub(crate) fn parse_with(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        defer_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError {
                file: path.to_path_buf(),
                key: format!("line {line}, column {col}"),
                message: e.message().to_string(),
            }
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let state_dir = resolve(
            raw.state_dir
                .as_deref()
                .unwrap_or(Path::new("/var/lib/provisiond")),
        );
        let control_socket = raw
            .control_socket
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| state_dir.join("control.sock"));
        let admin = admin::check(raw.admin, path)?;
        let smtp = match raw.smtp {
            None => None,
            Some(raw_smtp) => {
                let ctx = crate::util::CheckContext {
                    file: path,
                    table: "smtp".into(),
                    env,
                    defer_secrets,
                };
                Some(crate::notify::config::check_smtp(raw_smtp, &ctx)?)
            }
        };
        let logs = check_logs(
            raw.log_retention.as_deref(),
            raw.log_max_size.as_deref(),
            path,
        )?;
        if raw.jobs.is_empty() {
            return Err(ConfigError {
                file: path.to_path_buf(),
                key: "jobs".into(),
                message: "no [[jobs]] defined".into(),
            });
        }
        let mut jobs = Vec::new();
        for (i, rj) in raw.jobs.into_iter().enumerate() {
            let mut checked = job::check(i, rj, &jobs, path, env, defer_secrets)?;
            // Addresses without a mail server would be a notice silently never sent.
            if checked.notify.is_some() && smtp.is_none() {
                return Err(ConfigError {
                    file: path.to_path_buf(),
                    key: format!("jobs[{i}].notification_email"),
                    message: "notification emails need a mail server: add an [smtp] table \
                              (url, from)"
                        .into(),
                });
            }
            checked.logs = Some(crate::provlog::LogTarget {
                state_dir: state_dir.clone(),
                settings: logs,
            });
            jobs.push(checked);
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            control_socket,
            log_format: raw.log_format.unwrap_or_default(),
            admin,
            smtp,
            logs,
            jobs,
        })
    }
}

/// The top-level `log_retention` and `log_max_size`.
fn check_logs(
    retention: Option<&str>,
    max_size: Option<&str>,
    path: &Path,
) -> Result<crate::provlog::LogSettings, ConfigError> {
    let mut s = crate::provlog::LogSettings::default();
    let err = |key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        key: key.into(),
        message,
    };
    if let Some(r) = retention {
        s.retention = crate::util::duration::parse_duration(r)
            .map_err(|e| err("log_retention", e.to_string()))?;
    }
    if let Some(m) = max_size {
        s.max_size = crate::provlog::parse_size(m).ok_or_else(|| {
            err(
                "log_max_size",
                format!("{m:?} is not a size (examples: 2GiB, 500MB, 64MiB)"),
            )
        })?;
    }
    Ok(s)
}

#[cfg(test)]
mod graph_tests;
#[cfg(test)]
mod tests;
