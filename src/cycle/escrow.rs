//! Escrow (Entra's retry of failed objects): every failed action is kept in the store with its
//! attempts and last error, and retried by later cycles on a schedule that backs off: every
//! cycle during the first 6 hours after the first failure, then at +6 h, +12 h and +24 h, then
//! daily, until 28 days after the first failure, when the entry expires (`EscrowExpired`).
//! A change of the object in the source (a different [`fingerprint`]) retries it at once.
//!
//! Failed actions are planned again by every cycle on their own (a failure updates no link);
//! the [`Book`] only decides whether a planned action that failed before is due, and records
//! the outcome of each attempt.

use super::quarantine::backoff_after;
use crate::model::ObjectType;
use crate::plan::{Action, MembershipChange, Update};
use crate::state::{EscrowAction, EscrowEntry, StateError, StateStore};
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// How long an action is retried after its first failure.
pub(crate) const ESCROW_LIFETIME_DAYS: i64 = 28;
/// During this long after the first failure, every cycle retries.
const EVERY_CYCLE_HOURS: i64 = 6;
/// Longest reason kept in an entry: a target's error body can be large.
const REASON_MAX: usize = 512;

/// An escrow's key: object type, source id, and whether it is a reference failure.
pub(crate) type Key = (ObjectType, String, bool);

/// When an action that first failed at `first` and failed again at `now` is next due.
pub(crate) fn next_attempt(first: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if now < first + Duration::hours(EVERY_CYCLE_HOURS) {
        return now;
    }
    backoff_after(first, now).min(first + Duration::days(ESCROW_LIFETIME_DAYS))
}

/// Whether an entry that first failed at `first` has expired at `now`.
pub(crate) fn is_expired(first: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now >= first + Duration::days(ESCROW_LIFETIME_DAYS)
}

fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// [`fingerprint`] of an update (a reference update of phase two).
pub(crate) fn update_fingerprint(u: &Update) -> String {
    let parts = update_parts(u);
    digest(&parts.iter().map(String::as_str).collect::<Vec<_>>())
}

fn update_parts(u: &Update) -> Vec<String> {
    let mut parts = vec!["update".to_string(), u.target_id.clone()];
    for c in &u.changes {
        parts.push(c.path.clone());
        parts.push(c.new.as_ref().map(|v| v.to_string()).unwrap_or_default());
    }
    parts
}

/// A digest of what `action` would send: equal from cycle to cycle while the object does not
/// change in the source (a failure updates no link, so the same action is planned again).
pub(crate) fn fingerprint(action: &Action) -> String {
    let parts: Vec<String> = match action {
        Action::Provision(p) => std::iter::once("create".to_string())
            .chain(
                p.mapped
                    .values
                    .iter()
                    .chain(p.mapped.create_only.iter())
                    .flat_map(|(k, v)| [k.to_string(), v.to_string()]),
            )
            .collect(),
        Action::Update(u) => return update_fingerprint(u),
        Action::Disable(d) => vec!["disable".into(), d.target_id.clone()],
        Action::Delete(d) => vec!["delete".into(), d.target_id.clone()],
    };
    digest(&parts.iter().map(String::as_str).collect::<Vec<_>>())
}

/// [`fingerprint`] of a membership change.
pub(crate) fn membership_fingerprint(m: &MembershipChange) -> String {
    let parts: Vec<&str> = ["members", m.group_target_id.as_str(), "+"]
        .into_iter()
        .chain(m.add.iter().map(String::as_str))
        .chain(std::iter::once("-"))
        .chain(m.remove.iter().map(String::as_str))
        .collect();
    digest(&parts)
}

/// The key of an object action (phase one, or a reference update in phase two).
pub(crate) fn key_of(action: &Action, reference: bool) -> Key {
    let (ty, id) = match action {
        Action::Provision(p) => (p.object_type, &p.source_id),
        Action::Update(u) => (u.object_type, &u.source_id),
        Action::Disable(d) => (ObjectType::User, &d.source_id),
        Action::Delete(d) => (d.object_type, &d.source_id),
    };
    (ty, id.clone(), reference)
}

/// What an escrow entry calls `action`.
pub(crate) fn escrow_action(action: &Action, reference: bool) -> EscrowAction {
    match action {
        _ if reference => EscrowAction::Manager,
        Action::Provision(_) => EscrowAction::Create,
        Action::Update(_) => EscrowAction::Update,
        Action::Disable(_) => EscrowAction::Disable,
        Action::Delete(_) => EscrowAction::Delete,
    }
}

/// Whether a planned action that failed before is sent this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No escrow: a first attempt.
    Send,
    /// Escrowed and due (or changed in the source): a retry.
    Retry,
    /// Escrowed and not due yet, or expired and unchanged: not sent this cycle.
    Wait,
}

/// The job's escrow during one cycle: the entries as loaded, updated as actions finish, and
/// what the cycle counted.
pub(crate) struct Book<'s> {
    job: &'s str,
    store: &'s dyn StateStore,
    now: DateTime<Utc>,
    /// False in a dry run: nothing is written.
    record: bool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, EscrowEntry>,
    /// Every key the cycle planned an action for (sent, deferred or held).
    planned: HashSet<Key>,
    escrowed: u64,
    retried: u64,
    deferred: u64,
    earliest_deferred: Option<DateTime<Utc>>,
    object_attempts: u64,
    object_failures: u64,
}

/// What a cycle's escrow came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub escrowed: u64,
    pub retried: u64,
    /// Planned actions not sent because their retry was not due (or they expired unchanged).
    pub deferred: u64,
    pub earliest_deferred: Option<DateTime<Utc>>,
    /// Object (non-reference) actions attempted and failed this cycle.
    pub object_attempts: u64,
    pub object_failures: u64,
    /// Live (unexpired) escrows after the cycle, object ones and all.
    pub base: u64,
    pub total: u64,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'s> Book<'s> {
    /// Loads the job's escrows and expires those 28 days past their first failure.
    pub(crate) fn load(
        store: &'s dyn StateStore,
        job: &'s str,
        now: DateTime<Utc>,
        record: bool,
    ) -> Result<Self, StateError> {
        let mut entries = HashMap::new();
        for mut e in store.escrows(job)? {
            if !e.expired && is_expired(e.first_failure, now) {
                e.expired = true;
                tracing::warn!(
                    event = "EscrowExpired",
                    job,
                    object_type = %e.object_type,
                    source_id = %e.source_id,
                    name = %e.display_name,
                    action = ?e.action,
                    attempts = e.attempts,
                    first_failure = %e.first_failure,
                    code = %e.code,
                    "escrow expired: no more retries until the object changes in the source"
                );
                if record {
                    store.put_escrow(job, &e)?;
                }
            }
            entries.insert((e.object_type, e.source_id.clone(), e.is_reference()), e);
        }
        Ok(Book {
            job,
            store,
            now,
            record,
            inner: Mutex::new(Inner {
                entries,
                ..Inner::default()
            }),
        })
    }

    /// The objects with an escrow entry (expired ones too), as loaded.
    pub(crate) fn objects(&self) -> Vec<(ObjectType, String)> {
        lock(&self.inner)
            .entries
            .keys()
            .map(|(ty, id, _)| (*ty, id.clone()))
            .collect()
    }

    /// Decides whether a planned action is sent; `fingerprint` runs only for escrowed keys.
    pub(crate) fn verdict(&self, key: Key, fingerprint: impl FnOnce() -> String) -> Verdict {
        let mut inner = lock(&self.inner);
        let verdict = match inner.entries.get(&key) {
            None => Verdict::Send,
            Some(e) => {
                let unchanged = e.fingerprint == fingerprint();
                if unchanged && (e.expired || e.next_attempt > self.now) {
                    let next = (!e.expired).then_some(e.next_attempt);
                    inner.deferred += 1;
                    if let Some(n) = next {
                        inner.earliest_deferred =
                            Some(inner.earliest_deferred.map_or(n, |d| d.min(n)));
                    }
                    Verdict::Wait
                } else {
                    inner.retried += 1;
                    Verdict::Retry
                }
            }
        };
        inner.planned.insert(key);
        verdict
    }

    /// Marks a key as planned without deciding (actions held by the deletion threshold).
    pub(crate) fn planned(&self, key: Key) {
        lock(&self.inner).planned.insert(key);
    }

    /// An action succeeded: its escrow, if any, is done.
    pub(crate) fn succeeded(&self, key: Key) {
        let mut inner = lock(&self.inner);
        if !key.2 {
            inner.object_attempts += 1;
        }
        if inner.entries.remove(&key).is_some() && self.record {
            if let Err(e) = self.store.remove_escrow(self.job, key.0, &key.1, key.2) {
                tracing::error!(job = self.job, source_id = %key.1, error = %e, "could not remove an escrow entry");
            }
        }
    }

    /// An action failed: escrow it (or count one more attempt of its escrow).
    pub(crate) fn failed(
        &self,
        key: Key,
        name: &str,
        action: EscrowAction,
        fingerprint: String,
        code: &str,
        reason: &str,
    ) {
        let mut inner = lock(&self.inner);
        if !key.2 {
            inner.object_attempts += 1;
            inner.object_failures += 1;
        }
        inner.escrowed += 1;
        let now = self.now;
        let previous = inner
            .entries
            .get(&key)
            .filter(|e| !e.expired && e.fingerprint == fingerprint);
        let (attempts, first) = previous.map_or((1, now), |e| (e.attempts + 1, e.first_failure));
        let mut reason = reason.to_string();
        if reason.len() > REASON_MAX {
            let mut cut = REASON_MAX;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        let entry = EscrowEntry {
            object_type: key.0,
            source_id: key.1.clone(),
            display_name: name.to_string(),
            action,
            attempts,
            first_failure: first,
            last_attempt: now,
            next_attempt: next_attempt(first, now),
            code: code.to_string(),
            reason,
            fingerprint,
            expired: false,
        };
        if self.record {
            if let Err(e) = self.store.put_escrow(self.job, &entry) {
                tracing::error!(job = self.job, source_id = %key.1, error = %e, "could not record an escrow entry");
            }
        }
        tracing::info!(job = self.job, object_type = %key.0, source_id = %key.1, attempts, next_attempt = %entry.next_attempt, "escrowed");
        inner.entries.insert(key, entry);
    }

    /// Drops the escrows of objects the cycle no longer plans anything for (fixed meanwhile,
    /// out of scope, gone), among those `judged` says this cycle could judge.
    pub(crate) fn prune(&self, judged: impl Fn(&Key, &EscrowEntry) -> bool) {
        let mut inner = lock(&self.inner);
        let Inner {
            entries, planned, ..
        } = &mut *inner;
        let stale: Vec<Key> = entries
            .iter()
            .filter(|(k, e)| !planned.contains(*k) && judged(k, e))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            entries.remove(&k);
            if self.record {
                if let Err(e) = self.store.remove_escrow(self.job, k.0, &k.1, k.2) {
                    tracing::error!(job = self.job, source_id = %k.1, error = %e, "could not remove an escrow entry");
                }
            }
        }
    }

    /// What the cycle counted, and the live escrows now.
    pub(crate) fn tally(&self) -> Tally {
        let inner = lock(&self.inner);
        let live = inner.entries.values().filter(|e| !e.expired);
        let (mut base, mut total) = (0, 0);
        for e in live {
            total += 1;
            if !e.is_reference() {
                base += 1;
            }
        }
        Tally {
            escrowed: inner.escrowed,
            retried: inner.retried,
            deferred: inner.deferred,
            earliest_deferred: inner.earliest_deferred,
            object_attempts: inner.object_attempts,
            object_failures: inner.object_failures,
            base,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn every_cycle_for_six_hours_then_backing_off_to_daily() {
        let first = t0();
        let h = Duration::hours;
        assert_eq!(next_attempt(first, first), first);
        assert_eq!(next_attempt(first, first + h(5)), first + h(5));
        assert_eq!(next_attempt(first, first + h(6)), first + h(12));
        assert_eq!(next_attempt(first, first + h(12)), first + h(24));
        assert_eq!(next_attempt(first, first + h(24)), first + h(48));
        assert_eq!(next_attempt(first, first + h(49)), first + h(72));
        // Never past the end of its life: the last attempt is the one that expires it.
        assert_eq!(
            next_attempt(first, first + h(27 * 24 + 1)),
            first + Duration::days(28)
        );
        assert!(!is_expired(first, first + Duration::days(28) - h(1)));
        assert!(is_expired(first, first + Duration::days(28)));
    }
}
