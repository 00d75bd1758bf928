//! Where a secret is read from: a file, an environment variable or a systemd credential.
//! Every secret of the configuration (SCIM token, LDAP password, Graph client secret and
//! private key) is one [`SecretRef`], read the same way; errors name where it was looked for,
//! never its value.

use secrecy::zeroize::Zeroizing;
use secrecy::{SecretSlice, SecretString};
use std::path::{Path, PathBuf};

/// Where one secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretRef {
    /// A file (already resolved against the configuration file's directory).
    File(PathBuf),
    /// An environment variable's name.
    Env(String),
    /// A systemd credential's name (`LoadCredential=`): `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

/// Why a secret could not be read. Names the file, variable or credential; never the value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretError {
    /// The file (or the credential's file) cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable {0} is not set")]
    EnvNotSet(String),
    /// A credential is named but the service runs without credentials.
    #[error("CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the systemd unit)")]
    NoCredentialsDirectory,
}

/// The three keys one secret may be given by in a table, e.g. `token_file`, `token_env` and
/// `token_credential`: exactly one of them names the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SecretKeys {
    /// The key naming a file.
    pub file: &'static str,
    /// The key naming an environment variable.
    pub env: &'static str,
    /// The key naming a systemd credential.
    pub credential: &'static str,
}

/// More than one of a secret's keys is set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("set only one of {}, {} and {}", keys.file, keys.env, keys.credential)]
pub(crate) struct SeveralSecrets {
    /// The keys, for the message.
    pub keys: SecretKeys,
}

impl SecretKeys {
    /// The secret the table names, with the key that names it; `None` when no key is set.
    /// `file` is already resolved.
    pub(crate) fn pick(
        self,
        file: Option<PathBuf>,
        env: Option<&str>,
        credential: Option<&str>,
    ) -> Result<Option<(&'static str, SecretRef)>, SeveralSecrets> {
        match (file, env, credential) {
            (None, None, None) => Ok(None),
            (Some(f), None, None) => Ok(Some((self.file, SecretRef::File(f)))),
            (None, Some(v), None) => Ok(Some((self.env, SecretRef::Env(v.to_string())))),
            (None, None, Some(c)) => Ok(Some((
                self.credential,
                SecretRef::Credential(c.to_string()),
            ))),
            _ => Err(SeveralSecrets { keys: self }),
        }
    }
}

/// The permission bits of `mode` that let the file's group or others read it, if any.
fn readable_by_others(mode: u32) -> Option<u32> {
    let loose = mode & 0o044;
    (loose != 0).then_some(mode & 0o777)
}

/// Secret files found readable by others, each with whether it was warned about yet.
static LOOSE: std::sync::Mutex<Vec<(PathBuf, u32, bool)>> = std::sync::Mutex::new(Vec::new());

/// Warn, once per file and process, when a secret file is readable by its group or by
/// others (a token written with the default umask is 0644). The path only, never the content.
/// Credentials are left out: systemd keeps them private. Secrets are read while the
/// configuration loads, before logging is set up (its format is configured): the warning
/// then waits for [`warn_about_loose_secret_files`].
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let Some(mode) = readable_by_others(meta.permissions().mode()) else {
        return;
    };
    if let Ok(mut loose) = LOOSE.lock() {
        if !loose.iter().any(|(p, _, _)| p == path) {
            loose.push((path.to_path_buf(), mode, false));
        }
    }
    if tracing::dispatcher::has_been_set() {
        warn_about_loose_secret_files();
    }
}

/// Log the warnings for secret files readable by others not logged yet (see
/// [`warn_if_readable_by_others`]); called once logging is set up.
pub(crate) fn warn_about_loose_secret_files() {
    let Ok(mut loose) = LOOSE.lock() else {
        return;
    };
    for (path, mode, warned) in loose.iter_mut().filter(|(_, _, w)| !*w) {
        *warned = true;
        tracing::warn!(
            path = %path.display(),
            mode = %format_args!("{mode:04o}"),
            "a secret file is readable by its group or by others: chmod 600 it"
        );
    }
}

impl SecretRef {
    /// The secret, with the line break a file ends with dropped (a secret may hold spaces),
    /// environment variables looked up by `env`.
    pub(crate) fn read_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SecretString, SecretError> {
        let text = Zeroizing::new(match self {
            SecretRef::Env(name) => {
                env(name).ok_or_else(|| SecretError::EnvNotSet(name.clone()))?
            }
            SecretRef::File(_) | SecretRef::Credential(_) => {
                let path = self.path(env)?;
                std::fs::read_to_string(&path).map_err(|error| SecretError::Read { path, error })?
            }
        });
        Ok(SecretString::from(
            text.trim_end_matches(['\n', '\r']).to_string(),
        ))
    }

    /// The secret's bytes as they are (a PEM private key), environment variables looked up by
    /// `env`.
    pub(crate) fn read_bytes_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SecretSlice<u8>, SecretError> {
        let bytes = match self {
            SecretRef::Env(name) => env(name)
                .ok_or_else(|| SecretError::EnvNotSet(name.clone()))?
                .into_bytes(),
            SecretRef::File(_) | SecretRef::Credential(_) => {
                let path = self.path(env)?;
                std::fs::read(&path).map_err(|error| SecretError::Read { path, error })?
            }
        };
        Ok(SecretSlice::from(bytes))
    }

    /// Where it is, for messages: a path, `environment variable NAME` or
    /// `systemd credential NAME`.
    pub(crate) fn describe(&self) -> String {
        match self {
            SecretRef::File(p) => p.display().to_string(),
            SecretRef::Env(name) => format!("environment variable {name}"),
            SecretRef::Credential(name) => format!("systemd credential {name}"),
        }
    }

    /// The file holding a file or credential secret, warned about when others may read a
    /// file secret (credentials are left out: systemd keeps them private).
    fn path(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, SecretError> {
        match self {
            SecretRef::File(p) => {
                warn_if_readable_by_others(p);
                Ok(p.clone())
            }
            SecretRef::Credential(name) => {
                let dir =
                    env("CREDENTIALS_DIRECTORY").ok_or(SecretError::NoCredentialsDirectory)?;
                Ok(Path::new(&dir).join(name))
            }
            SecretRef::Env(name) => Err(SecretError::EnvNotSet(name.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const KEYS: SecretKeys = SecretKeys {
        file: "token_file",
        env: "token_env",
        credential: "token_credential",
    };

    fn env_of(dir: &Path) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| match name {
            "TOKEN" => Some("from env\n".into()),
            "CREDENTIALS_DIRECTORY" => Some(dir.display().to_string()),
            _ => None,
        }
    }

    #[test]
    fn group_or_world_readable_modes_are_found() {
        assert_eq!(readable_by_others(0o100644), Some(0o644));
        assert_eq!(readable_by_others(0o100640), Some(0o640));
        assert_eq!(readable_by_others(0o100604), Some(0o604));
        assert_eq!(readable_by_others(0o100600), None);
        assert_eq!(readable_by_others(0o100400), None);
        // Writable but not readable by others is not a leak of the secret.
        assert_eq!(readable_by_others(0o100622), None);
    }

    #[test]
    fn a_file_loses_its_trailing_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, " pass word \r\n").unwrap();
        let s = SecretRef::File(p).read_with(&env_of(dir.path())).unwrap();
        assert_eq!(s.expose_secret(), " pass word ");
    }

    #[test]
    fn env_and_credential() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scim-token"), "cr3d\n").unwrap();
        let env = env_of(dir.path());
        let s = SecretRef::Env("TOKEN".into()).read_with(&env).unwrap();
        assert_eq!(s.expose_secret(), "from env");
        let s = SecretRef::Credential("scim-token".into())
            .read_with(&env)
            .unwrap();
        assert_eq!(s.expose_secret(), "cr3d");
        let b = SecretRef::Credential("scim-token".into())
            .read_bytes_with(&env)
            .unwrap();
        assert_eq!(b.expose_secret(), b"cr3d\n", "bytes are not trimmed");
    }

    #[test]
    fn missing_secrets_name_where_they_were_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(dir.path());
        let e = SecretRef::File(dir.path().join("nope"))
            .read_with(&env)
            .unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
        let e = SecretRef::Env("NOPE".into()).read_with(&env).unwrap_err();
        assert_eq!(e.to_string(), "environment variable NOPE is not set");
        let e = SecretRef::Credential("absent".into())
            .read_with(&env)
            .unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
        let e = SecretRef::Credential("x".into())
            .read_with(&|_| None)
            .unwrap_err();
        assert!(matches!(e, SecretError::NoCredentialsDirectory), "{e}");
    }

    #[test]
    fn exactly_one_key_names_the_secret() {
        assert_eq!(KEYS.pick(None, None, None), Ok(None));
        assert_eq!(
            KEYS.pick(None, None, Some("c")),
            Ok(Some((
                "token_credential",
                SecretRef::Credential("c".into())
            )))
        );
        assert_eq!(
            KEYS.pick(Some("/t".into()), None, None),
            Ok(Some(("token_file", SecretRef::File("/t".into()))))
        );
        let e = KEYS.pick(None, Some("V"), Some("c")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "set only one of token_file, token_env and token_credential"
        );
        assert_eq!(
            SecretRef::Env("V".into()).describe(),
            "environment variable V"
        );
    }
}
