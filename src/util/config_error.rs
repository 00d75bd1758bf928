//! A configuration problem located by file and key, and what a component's `check` needs to
//! produce one. Here (not in `config`) so the components that own their settings can check
//! them without importing the configuration assembly.

use super::secret::{SecretError, SecretRef};
use secrecy::{SecretSlice, SecretString};
use std::path::{Path, PathBuf};

/// A configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The key, as a TOML path (`jobs[0].target.token_file`), or where in the file.
    pub key: String,
    /// What is wrong, and how to fix it when that is not obvious.
    pub message: String,
}

/// Where a component's table is checked: the file (for errors and relative paths), the TOML
/// path of the table, and how environment variables are looked up (tests pass their own).
pub(crate) struct CheckContext<'a> {
    /// The configuration file, absolute; relative paths resolve from its directory.
    pub file: &'a Path,
    /// The TOML path of the table being checked, e.g. `jobs[0].source`.
    pub table: String,
    /// Looks up an environment variable.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Leave text secrets unread (read-only commands, which need none): see
    /// [`CheckContext::read_secret`].
    pub defer_secrets: bool,
}

/// What [`CheckContext::read_secret`] hands back when secrets are deferred. Never sent: the
/// commands that load the config so use neither the target nor the source.
pub(crate) const UNREAD_SECRET: &str = "(secret not read)";

impl CheckContext<'_> {
    /// A path from the file, relative to the configuration file's directory.
    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
                .join(p)
        }
    }

    /// An error at `key` of this table.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: format!("{}.{key}", self.table),
            message: message.into(),
        }
    }

    /// The secret's text, environment variables looked up as this context does; when secrets
    /// are deferred, [`UNREAD_SECRET`] without looking (the key naming it is still checked).
    pub(crate) fn read_secret(&self, secret: &SecretRef) -> Result<SecretString, SecretError> {
        if self.defer_secrets {
            return Ok(SecretString::from(UNREAD_SECRET));
        }
        secret.read_with(self.env)
    }

    /// The secret's bytes, untrimmed (a PEM key).
    pub(crate) fn read_secret_bytes(
        &self,
        secret: &SecretRef,
    ) -> Result<SecretSlice<u8>, SecretError> {
        secret.read_bytes_with(self.env)
    }
}

/// The 1-based line and column (in characters) of a byte offset of `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_located_in_the_table_and_paths_resolve_beside_the_file() {
        let env = |_: &str| None;
        let ctx = CheckContext {
            file: Path::new("/etc/p/provisiond.toml"),
            table: "jobs[1].source".into(),
            env: &env,
            defer_secrets: false,
        };
        let e = ctx.error("url", "bad");
        assert_eq!(e.key, "jobs[1].source.url");
        assert_eq!(
            e.to_string(),
            "/etc/p/provisiond.toml: jobs[1].source.url: bad"
        );
        assert_eq!(ctx.resolve(Path::new("ca.pem")), Path::new("/etc/p/ca.pem"));
        assert_eq!(ctx.resolve(Path::new("/x/ca.pem")), Path::new("/x/ca.pem"));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
