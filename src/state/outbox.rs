//! The records of notification emails, as the store keeps them: the outbox (messages waiting
//! for the mail server) and, per job, which failures were already reported. Plain data: what
//! to send and when is `notify`'s business; here is only what survives a restart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The version of [`OutboxMessage`] and [`ReportedFailures`] records, kept in each record so
/// a later layout can tell them apart (the store's schema version is not bumped for them).
pub(crate) const NOTIFY_RECORD_VERSION: u32 = 1;

/// How many messages the outbox keeps: when a mail server is down for long, the oldest are
/// dropped (with a warning) rather than letting the store grow without bound.
pub(crate) const OUTBOX_CAPACITY: usize = 1000;

/// One rendered notification waiting to be delivered. The sender builds the MIME message
/// from it with the `[smtp]` settings in force, so a changed `from` applies to queued mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// [`NOTIFY_RECORD_VERSION`] when written.
    #[serde(default)]
    pub version: u32,
    /// Set by the store when the message is queued; increases with each message.
    #[serde(default)]
    pub id: u64,
    /// The job the notice is about.
    pub job: String,
    /// The recipients (checked addresses).
    pub to: Vec<String>,
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part (everything from the directory or the target escaped).
    pub html: String,
    /// When the event happened: the message's `Date`.
    pub created: DateTime<Utc>,
    /// The `Message-ID`, fixed when queued so that a retry is recognisably the same message.
    pub message_id: String,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not retried before this time.
    pub next_attempt: DateTime<Utc>,
    /// The last delivery error, for the log (never a secret: lettre's errors name no password).
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Per job: the failures already reported in a digest, so the next digest lists only new
/// ones, and when the last digest was queued (at most one per `digest_interval`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedFailures {
    /// [`NOTIFY_RECORD_VERSION`] when written.
    #[serde(default)]
    pub version: u32,
    /// `<object type>|<object id>|<error code>` of each failure reported and still failing.
    #[serde(default)]
    pub keys: BTreeSet<String>,
    /// When the last digest was queued.
    #[serde(default)]
    pub last_digest: Option<DateTime<Utc>>,
}
