//! The admin commands on a job's safety state (`restart`, `allow-deletes`, `pause`,
//! `resume`), applied to a store: by the daemon (under the job's cycle lock, see
//! [`super::jobs::Daemon::admin`]) or, no daemon running, by the command itself.
//!
//! A command only changes what the store remembers; the cycle reads it. The rules that put a
//! job in quarantine, stage deletions and consume `allow_deletes` live in the cycle.

use crate::state::{JobMeta, StateError, StateStore};
use serde::{Deserialize, Serialize};

/// What `provisiond restart --reset` resets (Graph's `resetScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResetScope {
    /// Lift the quarantine (and `disabled`).
    Quarantine,
    /// Drop every escrowed action.
    Escrows,
    /// Forget the watermark and fingerprint: the next cycle is initial.
    Watermark,
    /// All of the above, and forget the links and the target binding: everything is matched
    /// again and nothing is deleted for it.
    Full,
    /// Allow the staged deletions (as `allow-deletes`).
    ForceDeletes,
}

impl ResetScope {
    /// The name as the command line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetScope::Quarantine => "quarantine",
            ResetScope::Escrows => "escrows",
            ResetScope::Watermark => "watermark",
            ResetScope::Full => "full",
            ResetScope::ForceDeletes => "force-deletes",
        }
    }
}

/// A `--reset` value that is not a scope.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown reset scope {0:?} (expected quarantine, escrows, watermark, full or force-deletes)"
)]
pub struct UnknownScope(String);

impl std::str::FromStr for ResetScope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ResetScope::Quarantine,
            ResetScope::Escrows,
            ResetScope::Watermark,
            ResetScope::Full,
            ResetScope::ForceDeletes,
        ]
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| UnknownScope(s.to_string()))
    }
}

/// An admin command on one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum AdminCommand {
    /// `provisiond restart [--reset …]`; an empty list is the portal's Restart (quarantine,
    /// escrows and watermark).
    Restart { reset: Vec<ResetScope> },
    /// `provisiond allow-deletes`.
    AllowDeletes,
    /// `provisiond pause`.
    Pause,
    /// `provisiond resume`.
    Resume,
}

/// Why an admin command was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// `allow-deletes` (or `--reset force-deletes`) with nothing staged.
    #[error("job {job} has no staged deletions to allow: nothing was held back by the deletion threshold")]
    NothingStaged { job: String },
    /// `--reset full` forgets the links the staged deletions refer to.
    #[error("--reset full forgets the links, and with them the staged deletions: it cannot be combined with force-deletes")]
    FullWithForceDeletes,
    /// The store could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

impl AdminError {
    /// The exit code: 2 for a command that does not make sense, 1 for a store failure.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            AdminError::NothingStaged { .. } | AdminError::FullWithForceDeletes => 2,
            AdminError::State(_) => 1,
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// One line for the admin: what was done, and where to look next.
    pub message: String,
    /// Whether the job's worker should look again now (a cycle may have become due).
    pub wake: bool,
}

/// Apply `cmd` to `job`'s records in `store`, and make it durable. The caller keeps cycles of
/// the job out meanwhile: a cycle writes back the `JobMeta` it read when it began.
pub(crate) fn apply(
    store: &dyn StateStore,
    job: &str,
    cmd: &AdminCommand,
) -> Result<Applied, AdminError> {
    let mut meta = store.meta(job)?;
    let look = format!("see `provisiond status --job {job}`");
    let applied = match cmd {
        AdminCommand::Pause => {
            let was = meta.paused;
            meta.paused = true;
            store.put_meta(job, &meta)?;
            Applied {
                message: format!(
                    "job {job} {}: a running cycle finishes, no new cycle starts until `provisiond resume --job {job}`; {look}",
                    if was { "was already paused" } else { "paused" }
                ),
                wake: false,
            }
        }
        AdminCommand::Resume => {
            let was = meta.paused;
            meta.paused = false;
            store.put_meta(job, &meta)?;
            let verb = if was { "resumed" } else { "was not paused" };
            Applied {
                message: format!(
                    "job {job} {verb}: its cycles run on its schedule{}; {look}",
                    held_note(&meta)
                ),
                wake: was,
            }
        }
        AdminCommand::AllowDeletes => {
            let staged = store.staged_deletes(job)?.len();
            if staged == 0 {
                return Err(AdminError::NothingStaged {
                    job: job.to_string(),
                });
            }
            meta.allow_deletes = true;
            store.put_meta(job, &meta)?;
            Applied {
                message: format!(
                    "job {job}: the next cycle sends those of the {staged} staged deletions it still plans; {look}"
                ),
                wake: true,
            }
        }
        AdminCommand::Restart { reset } => restart(store, job, &mut meta, reset, &look)?,
    };
    store.flush()?;
    tracing::info!(job, command = ?cmd, "admin command applied");
    Ok(applied)
}

fn restart(
    store: &dyn StateStore,
    job: &str,
    meta: &mut JobMeta,
    reset: &[ResetScope],
    look: &str,
) -> Result<Applied, AdminError> {
    let has = |s| reset.contains(&s);
    let full = has(ResetScope::Full);
    if full && has(ResetScope::ForceDeletes) {
        return Err(AdminError::FullWithForceDeletes);
    }
    // No scope: the portal's Restart.
    let default = reset.is_empty();
    let quarantine = default || full || has(ResetScope::Quarantine);
    let escrows = default || full || has(ResetScope::Escrows);
    let watermark = default || full || has(ResetScope::Watermark);
    let mut done = Vec::new();
    if has(ResetScope::ForceDeletes) {
        let staged = store.staged_deletes(job)?.len();
        if staged == 0 {
            return Err(AdminError::NothingStaged {
                job: job.to_string(),
            });
        }
        meta.allow_deletes = true;
        done.push(format!("{staged} staged deletions allowed"));
    }
    if quarantine {
        let reason = meta.quarantine.take().map(|q| q.reason);
        let was_disabled = std::mem::take(&mut meta.disabled);
        done.push(match (reason, was_disabled) {
            (Some(r), true) => format!("quarantine ({r}) lifted and job re-enabled"),
            (Some(r), false) => format!("quarantine ({r}) lifted"),
            (None, true) => "job re-enabled".to_string(),
            (None, false) => "no quarantine to lift".to_string(),
        });
    }
    if escrows {
        let n = store.escrows(job)?.iter().filter(|e| !e.expired).count();
        store.clear_escrows(job)?;
        done.push(format!("{n} escrowed actions dropped"));
    }
    if watermark {
        // The fingerprint too: with either gone the next cycle is initial.
        meta.watermark = None;
        meta.fingerprint = None;
        done.push("watermark cleared".into());
    }
    if full {
        let (users, groups) = store.link_counts(job)?;
        store.clear_links(job)?;
        // The staged deletions name target ids of links that are gone: nothing is deleted
        // for a full reset.
        store.set_staged_deletes(job, &[])?;
        meta.allow_deletes = false;
        meta.binding = None;
        meta.steady_state_first = None;
        meta.steady_state_last = None;
        done.push(format!(
            "links forgotten ({users} users, {groups} groups: matched again, none deleted for it)"
        ));
    }
    store.put_meta(job, meta)?;
    let next = if watermark {
        "the next cycle is initial"
    } else {
        "the next cycle runs as scheduled"
    };
    let paused = if meta.paused {
        format!(" (the job is still paused: `provisiond resume --job {job}`)")
    } else {
        String::new()
    };
    Ok(Applied {
        message: format!(
            "job {job} restarted: {}; {next}{paused}; {look}",
            done.join(", ")
        ),
        wake: true,
    })
}

/// What still holds a resumed job's cycles back, for the resume line.
fn held_note(meta: &JobMeta) -> String {
    if meta.disabled {
        " once restarted (it is disabled: `provisiond restart`)".into()
    } else if let Some(q) = &meta.quarantine {
        format!(
            " (quarantined, {}: next attempt at {})",
            q.reason,
            q.next_attempt.to_rfc3339()
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Link, ObjectType};
    use crate::state::{
        Binding, EscrowAction, EscrowEntry, MemoryStore, Quarantine, QuarantineError,
        QuarantineReason, StagedAction, StagedDelete,
    };
    use chrono::Utc;

    fn quarantine(reason: QuarantineReason) -> Quarantine {
        let now = Utc::now();
        Quarantine {
            reason,
            series_began: now,
            current_began: now,
            next_attempt: now + chrono::Duration::hours(6),
            series_count: 1,
            error: QuarantineError {
                code: reason.as_str().into(),
                message: "held".into(),
            },
        }
    }

    fn escrow(id: &str, action: EscrowAction) -> EscrowEntry {
        let now = Utc::now();
        EscrowEntry {
            object_type: ObjectType::User,
            source_id: id.into(),
            display_name: id.into(),
            action,
            attempts: 1,
            first_failure: now,
            last_attempt: now,
            next_attempt: now,
            code: "ServiceUnavailable".into(),
            reason: "503".into(),
            fingerprint: String::new(),
            expired: false,
        }
    }

    fn staged(id: &str) -> StagedDelete {
        StagedDelete {
            object_type: ObjectType::User,
            source_id: id.into(),
            target_id: format!("t-{id}"),
            display_name: id.into(),
            action: StagedAction::Delete,
            staged_at: Utc::now(),
        }
    }

    /// A store with a quarantined, disabled job that has links, escrows and staged deletes.
    fn held_store() -> MemoryStore {
        let store = MemoryStore::default();
        let meta = JobMeta {
            watermark: Some("w".into()),
            fingerprint: Some("f".into()),
            quarantine: Some(quarantine(QuarantineReason::TooManyDeletes)),
            disabled: true,
            binding: Some(Binding {
                target_url: "https://a.example/scim".into(),
                source: "file".into(),
            }),
            ..JobMeta::default()
        };
        store.put_meta("j", &meta).unwrap();
        store
            .put_link(
                "j",
                &Link {
                    object_type: ObjectType::User,
                    source_id: "u1".into(),
                    target_id: "t1".into(),
                    display_name: "u1".into(),
                    matching: Default::default(),
                    exported: Default::default(),
                    members: Default::default(),
                    created: true,
                },
            )
            .unwrap();
        store
            .put_escrow("j", &escrow("u2", EscrowAction::Create))
            .unwrap();
        store
            .put_escrow("j", &escrow("u3", EscrowAction::Membership))
            .unwrap();
        store.set_staged_deletes("j", &[staged("u9")]).unwrap();
        store
    }

    #[test]
    fn reset_scopes_parse_as_the_command_line_spells_them() {
        assert_eq!(
            "force-deletes".parse::<ResetScope>().unwrap(),
            ResetScope::ForceDeletes
        );
        assert_eq!("Full".parse::<ResetScope>().unwrap(), ResetScope::Full);
        assert!("links".parse::<ResetScope>().is_err());
    }

    #[test]
    fn plain_restart_lifts_quarantine_clears_escrows_and_watermark_but_keeps_links() {
        let store = held_store();
        let done = apply(&store, "j", &AdminCommand::Restart { reset: vec![] }).unwrap();
        assert!(done.wake);
        assert!(done.message.contains("TooManyDeletes"), "{}", done.message);
        let meta = store.meta("j").unwrap();
        assert!(meta.quarantine.is_none() && !meta.disabled);
        assert!(meta.watermark.is_none() && meta.fingerprint.is_none());
        assert!(meta.binding.is_some());
        assert!(store.escrows("j").unwrap().is_empty());
        assert_eq!(store.links("j").unwrap().len(), 1);
        assert_eq!(store.staged_deletes("j").unwrap().len(), 1);
        assert!(!meta.allow_deletes);
    }

    #[test]
    fn each_reset_scope_resets_only_its_part() {
        let store = held_store();
        apply(
            &store,
            "j",
            &AdminCommand::Restart {
                reset: vec![ResetScope::Escrows],
            },
        )
        .unwrap();
        let meta = store.meta("j").unwrap();
        assert!(store.escrows("j").unwrap().is_empty());
        assert!(meta.quarantine.is_some() && meta.disabled);
        assert_eq!(meta.watermark.as_deref(), Some("w"));

        apply(
            &store,
            "j",
            &AdminCommand::Restart {
                reset: vec![ResetScope::Quarantine, ResetScope::ForceDeletes],
            },
        )
        .unwrap();
        let meta = store.meta("j").unwrap();
        assert!(meta.quarantine.is_none() && !meta.disabled && meta.allow_deletes);
        assert_eq!(meta.watermark.as_deref(), Some("w"));
    }

    #[test]
    fn full_reset_forgets_links_binding_and_staged_deletes() {
        let store = held_store();
        let done = apply(
            &store,
            "j",
            &AdminCommand::Restart {
                reset: vec![ResetScope::Full],
            },
        )
        .unwrap();
        assert!(done.message.contains("1 users"), "{}", done.message);
        let meta = store.meta("j").unwrap();
        assert!(store.links("j").unwrap().is_empty());
        assert!(store.staged_deletes("j").unwrap().is_empty());
        assert!(store.escrows("j").unwrap().is_empty());
        assert!(meta.binding.is_none() && meta.quarantine.is_none() && meta.watermark.is_none());
        assert!(matches!(
            apply(
                &store,
                "j",
                &AdminCommand::Restart {
                    reset: vec![ResetScope::Full, ResetScope::ForceDeletes]
                }
            ),
            Err(AdminError::FullWithForceDeletes)
        ));
    }

    #[test]
    fn allow_deletes_needs_staged_deletes() {
        let store = held_store();
        apply(&store, "j", &AdminCommand::AllowDeletes).unwrap();
        assert!(store.meta("j").unwrap().allow_deletes);

        let empty = MemoryStore::default();
        let err = apply(&empty, "j", &AdminCommand::AllowDeletes).unwrap_err();
        assert!(matches!(err, AdminError::NothingStaged { .. }));
        assert_eq!(err.exit_code(), 2);
        assert!(!empty.meta("j").unwrap().allow_deletes);
        assert!(apply(
            &empty,
            "j",
            &AdminCommand::Restart {
                reset: vec![ResetScope::ForceDeletes]
            }
        )
        .is_err());
    }

    #[test]
    fn pause_and_resume_toggle_paused_and_say_what_next() {
        let store = MemoryStore::default();
        let done = apply(&store, "j", &AdminCommand::Pause).unwrap();
        assert!(store.meta("j").unwrap().paused);
        assert!(!done.wake);
        assert!(done.message.contains("provisiond resume --job j"));
        assert!(done.message.contains("provisiond status --job j"));
        let again = apply(&store, "j", &AdminCommand::Pause).unwrap();
        assert!(again.message.contains("already paused"));
        let done = apply(&store, "j", &AdminCommand::Resume).unwrap();
        assert!(done.wake);
        assert!(!store.meta("j").unwrap().paused);
    }
}
