//! Sources: where the directory comes from. Each adapter converts its own wire format into
//! [`Directory`](crate::model::Directory); nothing past this module knows which source it was.
//!
//! A source may return an incomplete read (`Directory::complete == false`) instead of failing,
//! and receives the previous watermark so it can read only what changed. `graph` reads an
//! Entra ID tenant through Microsoft Graph (see `docs/graph.md`).

pub(crate) mod file;
pub(crate) mod graph;
pub(crate) mod ldap;
pub(crate) mod one;

use crate::model::{Changes, Directory, SourceObject};
use async_trait::async_trait;
pub use one::{OneQuery, OneRead};
use std::path::PathBuf;

/// What one read of a source produced.
#[derive(Debug, Clone)]
pub struct SourceRead {
    pub directory: Directory,
    /// Opaque position to hand back next time (a content hash for files, a delta link for
    /// Graph). Stored only after the cycle that used it has been flushed.
    pub watermark: Option<String>,
    /// What this read changed, when the source can say (a delta read from a snapshot whose
    /// assignments did not change) and was asked ([`Source::read_changes`]); `None`: a full
    /// read, or the source cannot tell. With
    /// `Some`, `directory` holds no users and no groups (its assignments, rejected objects and
    /// `complete` are the read's): the cycle asks [`Source::view`] for the objects it plans.
    pub changes: Option<Changes>,
}

/// A directory provisiond reads from.
#[async_trait]
pub trait Source: Send + Sync {
    /// A short description for logs and `status` (never contains secrets).
    fn describe(&self) -> String;

    /// The kind of system this is, as provisioning logs name it (`sourceSystem`):
    /// "file", "LDAP", "Microsoft Entra ID" (the default serves sources of tests).
    fn system_name(&self) -> &'static str {
        "source"
    }

    /// Which directory this is, for the job's binding (`state::Binding`): links made from one
    /// directory mean nothing for another. `None` when it cannot be told (then no check).
    fn identity(&self) -> Option<String> {
        None
    }
    /// Read the directory. `watermark` is what the previous successful cycle stored.
    async fn read(&self, watermark: Option<&str>) -> Result<SourceRead, SourceError>;

    /// Read one object for provision on demand (see [`one`]): `Ok(None)` when no object
    /// answers to the query's key. The default reads the whole directory and picks, for
    /// sources with nothing better (a test's); the file, LDAP and Graph sources read only
    /// what the object needs.
    async fn read_one(&self, query: &OneQuery) -> Result<Option<OneRead>, SourceError> {
        let read = self.read(None).await?;
        Ok(one::pick_one(read.directory, query))
    }

    /// Whether [`Source::read_changes`] may say what changed: the cycle then waits for the
    /// read before loading any link, since a delta cycle loads only a few.
    fn reads_changes(&self) -> bool {
        false
    }

    /// [`Source::read`] for a cycle that can plan from what changed: a source that can tell
    /// answers with [`SourceRead::changes`] and no objects (the cycle asks
    /// [`Source::view`] for them). The default reads the whole directory.
    async fn read_changes(&self, watermark: Option<&str>) -> Result<SourceRead, SourceError> {
        self.read(watermark).await
    }

    /// After a read that returned [`SourceRead::changes`]: the directory as of that read,
    /// restricted to `focus` and what their scope and references need
    /// (`crate::model::view`; `references` names the source attributes holding references to
    /// users), or whole with no `focus`. `None` when the source keeps no such directory (the
    /// cycle then fails rather than plan from nothing).
    async fn view(&self, _focus: Option<(&Changes, &[String])>) -> Option<Directory> {
        None
    }

    /// Whether the source reads incrementally from a snapshot it keeps and has none in
    /// memory: the cycle then hands it the one the state store kept ([`Source::restore`]),
    /// so a restarted daemon or a one-shot `sync` reads only changes.
    async fn wants_snapshot(&self) -> bool {
        false
    }

    /// Continue from a snapshot the store kept (what [`Source::snapshot`] returned after an
    /// earlier cycle). A record this source cannot read (damaged, another format version,
    /// another source) is refused and the next read is a full one, which is complete and
    /// therefore safe.
    async fn restore(&self, _bytes: &[u8]) -> Result<(), SnapshotError> {
        Err(SnapshotError::Unsupported)
    }

    /// The snapshot to persist after a committed cycle, with its delta link or watermark,
    /// encoded compactly; `None` when there is none or nothing changed since the last one
    /// taken, or the last one was taken less than [`SNAPSHOT_EVERY`] ago (the stored pair
    /// then stays: an older snapshot with its own older position is still a consistent place
    /// to continue from).
    async fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Whether the last read could have missed soft-deleted users that only
    /// [`Source::soft_deleted`] can find (a full read of a source with a recycle bin): the
    /// cycle then asks about the linked users the read did not return.
    async fn checks_deleted_items(&self) -> bool {
        false
    }

    /// Users the cycle still has links for but the last read did not return. A source that
    /// can tell a soft delete from a hard one after a full read (Graph's deleted items)
    /// returns those still restorable, marked soft-deleted, so that they are disabled rather
    /// than deleted; the rest are gone. The default knows nothing: none.
    async fn soft_deleted(&self, _missing: &[String]) -> Result<Vec<SourceObject>, SourceError> {
        Ok(Vec::new())
    }

    /// A cheap probe for `provisiond test-connection` (a bind and a one-entry search, a token
    /// and one API call, a file read): what was checked, or precisely what failed.
    async fn test_connection(&self) -> Result<String, SourceError>;
}

/// Why a persisted source snapshot was not used (the next read is then a full one).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("this source keeps no snapshot")]
    Unsupported,
    #[error(
        "snapshot record format {found} is not one this provisiond reads (it reads {expected})"
    )]
    Version { found: u8, expected: u8 },
    #[error("snapshot record is damaged: {0}")]
    Damaged(String),
    #[error("snapshot record belongs to another source")]
    OtherSource,
}

/// How often a source hands over a changed snapshot to be stored, at most (the first one of a
/// process goes at once). Storing one is O(directory); an older stored pair is still a
/// consistent place to resume from (its position returns every change since), so waiting
/// only means more changes to read after a restart.
pub(crate) const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// A source read that produced nothing usable: the cycle fails before any write.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read source file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source file {path} is not a valid directory export: {message} (line {line}, column {column})")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The LDAP server failed: the typed error says what failed (without any secret) and
    /// whether retrying may help.
    #[error("ldap source: {source}")]
    Ldap {
        #[from]
        source: ldap::LdapError,
    },
    /// Microsoft Graph failed: `context` says what was being read (none when the client
    /// itself could not be built), `source` is the typed Graph error.
    #[error("graph source: {}{source}", in_context(.context))]
    Graph {
        context: Option<String>,
        #[source]
        source: graph::GraphError,
    },
}

/// `"{context}: "`, or nothing without a context.
fn in_context(context: &Option<String>) -> String {
    context
        .as_deref()
        .map(|c| format!("{c}: "))
        .unwrap_or_default()
}

/// A JSON `accountEnabled` as a file export or a Graph delta gives it: absent, null or a
/// boolean is taken as it is (`Ok(None)`); text `"true"` or `"false"` in any case is that
/// boolean (`Ok(Some)`); anything else is rejected. A lenient reading (anything but `false` is
/// enabled) created disabled users active.
pub(crate) fn enabled_from_json(value: Option<&serde_json::Value>) -> Result<Option<bool>, ()> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(()),
    }
}

impl SourceError {
    /// Whether trying again later may help (a file being rewritten, a network hiccup).
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Read { .. } => true,
            SourceError::Parse { .. } => false,
            SourceError::Ldap { source } => source.is_retryable(),
            SourceError::Graph { source, .. } => source.is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::graph::GraphError;
    use super::ldap::LdapError;
    use super::*;

    fn graph(source: GraphError) -> SourceError {
        SourceError::Graph {
            context: Some("reading users".into()),
            source,
        }
    }

    #[test]
    fn retryable_source_errors_are_pinned() {
        let io = || std::io::Error::other("busy");
        assert!(SourceError::Read {
            path: "d.json".into(),
            source: io()
        }
        .is_retryable());
        assert!(!SourceError::Parse {
            path: "d.json".into(),
            line: 1,
            column: 2,
            message: "x".into()
        }
        .is_retryable());
        // LDAP errors delegate to the typed inner error.
        let ldap = |source: LdapError| SourceError::Ldap { source };
        assert!(ldap(LdapError::ReadTimeout { dn: "dc=x".into() }).is_retryable());
        assert!(ldap(LdapError::SearchResult {
            base: "dc=x".into(),
            count: 0,
            page: 1,
            rc: 52,
            text: String::new(),
        })
        .is_retryable());
        assert!(!ldap(LdapError::InvalidCredentials {
            who: "bind as cn=x".into(),
            url: "ldap://h".into(),
            text: String::new(),
        })
        .is_retryable());
        assert!(!ldap(LdapError::BaseNotFound {
            what: "user",
            base: "ou=x".into(),
            text: String::new(),
        })
        .is_retryable());
        // Graph errors delegate to the typed inner error.
        let transport = GraphError::Transport {
            path: "/users/delta".into(),
            reason: "reset".into(),
        };
        assert!(graph(transport).is_retryable());
        let settings = GraphError::Settings { reason: "x".into() };
        assert!(!graph(settings).is_retryable());
    }

    #[test]
    fn ldap_errors_keep_their_message_and_type() {
        let e = SourceError::from(LdapError::InvalidCredentials {
            who: "bind as cn=x,dc=y".into(),
            url: "ldap://h:389".into(),
            text: "80090308: bad\0".into(),
        });
        assert_eq!(
            e.to_string(),
            "ldap source: bind as cn=x,dc=y to ldap://h:389: invalid credentials (LDAP result 49): 80090308: bad"
        );
        let inner = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<LdapError>());
        assert!(matches!(inner, Some(LdapError::InvalidCredentials { .. })));
        assert_eq!(inner.and_then(LdapError::rc), Some(49));
    }

    #[test]
    fn graph_errors_keep_their_message_and_type() {
        let e = graph(GraphError::Invalid {
            path: "/users/delta".into(),
            reason: "no \"value\" array".into(),
        });
        assert_eq!(
            e.to_string(),
            "graph source: reading users: GET /users/delta: unexpected answer: no \"value\" array"
        );
        let inner = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<GraphError>());
        assert!(matches!(inner, Some(GraphError::Invalid { .. })));
        let bare = SourceError::Graph {
            context: None,
            source: GraphError::Settings {
                reason: "HTTP client: x".into(),
            },
        };
        assert_eq!(
            bare.to_string(),
            "graph source: invalid Graph settings: HTTP client: x"
        );
    }
}
