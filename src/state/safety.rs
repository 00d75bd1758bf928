//! The records of Entra's protective loop, as the store keeps them: a job's quarantine, its
//! escrowed (failed, to be retried) actions and the deletions held back by the accidental
//! deletion threshold. Plain data: the rules that create and lift them live in the cycle and
//! the daemon; here is only what survives a restart.

use crate::model::ObjectType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a job is quarantined, with Graph's names (`synchronizationQuarantine.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuarantineReason {
    /// The token was refused or the target does not speak SCIM: every call would fail.
    EncounteredQuarantineException,
    /// A cycle with at least `min_failures` failures in which more than 40% of the attempted
    /// operations failed.
    EncounteredEscrowProportionThreshold,
    /// More than 40,000 (settable) non-reference escrows.
    EncounteredBaseEscrowThreshold,
    /// More than 60,000 (settable) escrows, references included.
    EncounteredTotalEscrowThreshold,
    /// The accidental-deletion threshold was reached: the deletions are staged.
    TooManyDeletes,
}

impl QuarantineReason {
    /// The name as Graph and our config, logs and emails spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::EncounteredQuarantineException => "EncounteredQuarantineException",
            QuarantineReason::EncounteredEscrowProportionThreshold => {
                "EncounteredEscrowProportionThreshold"
            }
            QuarantineReason::EncounteredBaseEscrowThreshold => "EncounteredBaseEscrowThreshold",
            QuarantineReason::EncounteredTotalEscrowThreshold => "EncounteredTotalEscrowThreshold",
            QuarantineReason::TooManyDeletes => "TooManyDeletes",
        }
    }
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error that put a job in quarantine (Graph's `error {code, message}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineError {
    /// An Entra-style error code (`Unauthorized`, `TooManyDeletes`, …).
    pub code: String,
    /// What happened, in words, without any secret.
    pub message: String,
}

/// A job's quarantine (Graph's `synchronizationQuarantine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub reason: QuarantineReason,
    /// When this series of quarantines began; it resets when the quarantine is lifted.
    pub series_began: DateTime<Utc>,
    /// When the quarantine was last evaluated and imposed.
    pub current_began: DateTime<Utc>,
    /// When the next cycle may run (+6 h, +12 h, +24 h after the series began, then daily).
    pub next_attempt: DateTime<Utc>,
    /// How many times it was re-evaluated and left in effect.
    pub series_count: u32,
    pub error: QuarantineError,
}

/// What a failed action was, for its escrow entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscrowAction {
    Create,
    Update,
    Disable,
    Delete,
    /// A reference (manager) update: counted apart, as Entra does.
    Manager,
    /// A group membership change: a reference failure too.
    Membership,
}

impl EscrowAction {
    /// Reference failures (manager, membership) are counted apart from object failures.
    pub fn is_reference(self) -> bool {
        matches!(self, EscrowAction::Manager | EscrowAction::Membership)
    }
}

/// One failed action kept for retry (Entra's escrow). Keyed by object type, source id and
/// whether it is a reference failure: an object has at most one object escrow and one
/// reference escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowEntry {
    pub object_type: ObjectType,
    pub source_id: String,
    /// The object's name as the admin knows it (userName or displayName), for status and logs.
    pub display_name: String,
    pub action: EscrowAction,
    /// Attempts so far, the first failure included.
    pub attempts: u32,
    pub first_failure: DateTime<Utc>,
    pub last_attempt: DateTime<Utc>,
    /// Retries are due at this time or later (every cycle during the first 6 hours, then
    /// +6 h, +12 h, +24 h, then daily until 28 days after the first failure).
    pub next_attempt: DateTime<Utc>,
    /// The last error's Entra-style code and reason (bounded, no secret).
    pub code: String,
    pub reason: String,
    /// A digest of what the action would send: when the object changes in the source, the
    /// digest differs and the action is retried at the next cycle, whatever the schedule.
    #[serde(default)]
    pub fingerprint: String,
    /// Dropped after 28 days of failures (`EscrowExpired`): no longer retried nor counted,
    /// kept only so the unchanged object is not retried again until it changes in the source.
    #[serde(default)]
    pub expired: bool,
}

impl EscrowEntry {
    /// Whether this is a reference (manager, membership) failure.
    pub fn is_reference(&self) -> bool {
        self.action.is_reference()
    }
}

/// Whether a staged deletion disables or deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StagedAction {
    Disable,
    Delete,
}

/// A disable or delete held back because the cycle reached the deletion threshold
/// (Entra's `stagedDelete`). Sent only when an admin allows it and the next cycle still plans it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedDelete {
    pub object_type: ObjectType,
    pub source_id: String,
    pub target_id: String,
    pub display_name: String,
    pub action: StagedAction,
    pub staged_at: DateTime<Utc>,
}
