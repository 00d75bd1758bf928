//! Which notices a cycle's outcome gives. Pure: the job's record before and after the cycle,
//! the cycle's problems and what was reported before go in; events and the new record of
//! reported failures come out.

use crate::state::{EscrowEntry, NOTIFY_RECORD_VERSION};
use crate::state::{JobMeta, QuarantineError, QuarantineReason, ReportedFailures};
use crate::summary::Problem;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::time::Duration;

/// A digest lists at most this many failures; the rest are counted.
pub(crate) const DIGEST_LIMIT: usize = 50;

/// What happened, as a notice tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The job entered quarantine (Entra emails once per quarantine).
    Quarantined {
        reason: QuarantineReason,
        error: QuarantineError,
        next_attempt: DateTime<Utc>,
    },
    /// The quarantine's reason changed (Entra emails again).
    ReasonChanged {
        from: QuarantineReason,
        reason: QuarantineReason,
        error: QuarantineError,
        next_attempt: DateTime<Utc>,
    },
    /// The quarantine was lifted by a cycle that went well.
    Resolved {
        was: QuarantineReason,
        series_began: DateTime<Utc>,
    },
    /// The job was disabled after 28 days in quarantine.
    Disabled {
        reason: Option<QuarantineReason>,
        series_began: Option<DateTime<Utc>>,
    },
    /// Entry-level failures not reported before: the first [`DIGEST_LIMIT`] and how many
    /// more (a listed problem may stand for several objects: its `count`).
    Failures { listed: Vec<Problem>, more: usize },
    /// `provisiond test-email`.
    Test,
}

impl Event {
    /// Whether its notice lists the cycle's failures (so no digest is needed beside it).
    pub(crate) fn lists_failures(&self) -> bool {
        matches!(
            self,
            Event::Quarantined { .. } | Event::ReasonChanged { .. } | Event::Disabled { .. }
        )
    }

    /// A short name for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Event::Quarantined { .. } => "quarantined",
            Event::ReasonChanged { .. } => "quarantine_reason_changed",
            Event::Resolved { .. } => "resolved",
            Event::Disabled { .. } => "disabled",
            Event::Failures { .. } => "failures",
            Event::Test => "test",
        }
    }
}

/// The quarantine notices of a cycle that turned the job's record from `before` into `after`.
pub(crate) fn quarantine_events(before: &JobMeta, after: &JobMeta) -> Vec<Event> {
    if !before.disabled && after.disabled {
        // Disabling is the last word of a quarantine series: one notice, not two.
        let q = after.quarantine.as_ref().or(before.quarantine.as_ref());
        return vec![Event::Disabled {
            reason: q.map(|q| q.reason),
            series_began: q.map(|q| q.series_began),
        }];
    }
    match (&before.quarantine, &after.quarantine) {
        (None, Some(q)) => vec![Event::Quarantined {
            reason: q.reason,
            error: q.error.clone(),
            next_attempt: q.next_attempt,
        }],
        (Some(b), Some(a)) if b.reason != a.reason => vec![Event::ReasonChanged {
            from: b.reason,
            reason: a.reason,
            error: a.error.clone(),
            next_attempt: a.next_attempt,
        }],
        (Some(b), None) => vec![Event::Resolved {
            was: b.reason,
            series_began: b.series_began,
        }],
        _ => Vec::new(),
    }
}

/// The entry-level failures of a cycle, one per object where possible: the escrows the
/// cycle wrote (attempted at or after `started`: each names its object, code and reason),
/// then the summary's problems of other codes (skipped source objects, and failures the
/// cycle did not escrow). The summary lists identical problems once with a count, which
/// would hide all but the first object; the escrows do not.
pub(crate) fn cycle_failures(
    problems: &[Problem],
    escrows: &[EscrowEntry],
    started: DateTime<Utc>,
) -> Vec<Problem> {
    let mut out: Vec<Problem> = escrows
        .iter()
        .filter(|e| !e.expired && e.last_attempt >= started)
        .map(|e| Problem {
            object_type: Some(e.object_type.as_str().to_string()),
            id: Some(e.source_id.clone()),
            name: Some(e.display_name.clone()),
            code: e.code.clone(),
            reason: e.reason.clone(),
            count: 1,
        })
        .collect();
    let escrowed_codes: BTreeSet<String> = out.iter().map(|p| p.code.clone()).collect();
    out.extend(
        problems
            .iter()
            .filter(|p| !escrowed_codes.contains(&p.code))
            .cloned(),
    );
    out
}

/// The key a failure is deduplicated by: object type, object id and error code.
fn key(object_type: &str, id: &str, code: &str) -> String {
    format!("{object_type}|{id}|{code}")
}

fn problem_key(p: &Problem) -> String {
    key(
        p.object_type.as_deref().unwrap_or(""),
        p.id.as_deref().or(p.name.as_deref()).unwrap_or(""),
        &p.code,
    )
}

/// The failure digest of a cycle with these `problems`, given what was `reported` before and
/// the job's escrows after the cycle, and the new record. A failure is reported once while it
/// lasts: its key stays in the record while the cycle still shows it or its object is still
/// escrowed (an escrowed object not retried this cycle has not recovered), and is forgotten
/// after, so a failure that comes back is reported again. New failures wait while a digest
/// was queued less than `interval` ago, and are reported by the first cycle after it that
/// still shows them.
pub(crate) fn failure_digest(
    problems: &[Problem],
    reported: &ReportedFailures,
    escrows: &[EscrowEntry],
    now: DateTime<Utc>,
    interval: Duration,
) -> (Option<Event>, ReportedFailures) {
    let current: BTreeSet<String> = problems.iter().map(problem_key).collect();
    let escrowed: BTreeSet<String> = escrows
        .iter()
        .filter(|e| !e.expired)
        .map(|e| key(e.object_type.as_str(), &e.source_id, &e.code))
        .collect();
    let mut next = ReportedFailures {
        version: NOTIFY_RECORD_VERSION,
        keys: reported
            .keys
            .iter()
            .filter(|k| current.contains(*k) || escrowed.contains(*k))
            .cloned()
            .collect(),
        last_digest: reported.last_digest,
    };
    let mut seen = BTreeSet::new();
    let new: Vec<&Problem> = problems
        .iter()
        .filter(|p| {
            let k = problem_key(p);
            !next.keys.contains(&k) && seen.insert(k)
        })
        .collect();
    if new.is_empty() {
        return (None, next);
    }
    let due = match reported.last_digest {
        None => true,
        Some(last) => chrono::Duration::from_std(interval)
            .map(|i| now >= last + i)
            .unwrap_or(false),
    };
    if !due {
        return (None, next);
    }
    next.keys.extend(new.iter().map(|p| problem_key(p)));
    next.last_digest = Some(now);
    let more = new.len().saturating_sub(DIGEST_LIMIT);
    let listed = new.into_iter().take(DIGEST_LIMIT).cloned().collect();
    (Some(Event::Failures { listed, more }), next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectType;
    use crate::state::{EscrowAction, Quarantine};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn q(reason: QuarantineReason) -> Quarantine {
        Quarantine {
            reason,
            series_began: t0(),
            current_began: t0(),
            next_attempt: t0() + chrono::Duration::hours(6),
            series_count: 0,
            error: QuarantineError {
                code: reason.as_str().into(),
                message: "why".into(),
            },
        }
    }

    fn meta(quarantine: Option<Quarantine>, disabled: bool) -> JobMeta {
        JobMeta {
            quarantine,
            disabled,
            ..JobMeta::default()
        }
    }

    fn problem(id: &str, code: &str) -> Problem {
        Problem {
            object_type: Some("user".into()),
            id: Some(id.into()),
            name: Some(format!("{id}@example.com")),
            code: code.into(),
            reason: "the target said no".into(),
            count: 1,
        }
    }

    #[test]
    fn entering_changing_lifting_and_disabling_each_give_one_notice() {
        use QuarantineReason::*;
        let none = meta(None, false);
        let tmd = meta(Some(q(TooManyDeletes)), false);
        let exc = meta(Some(q(EncounteredQuarantineException)), false);
        let e = quarantine_events(&none, &tmd);
        assert!(matches!(
            e.as_slice(),
            [Event::Quarantined {
                reason: TooManyDeletes,
                ..
            }]
        ));
        // Kept with the same reason: nothing (one message per quarantine).
        assert!(quarantine_events(&tmd, &tmd).is_empty());
        let e = quarantine_events(&tmd, &exc);
        assert!(matches!(
            e.as_slice(),
            [Event::ReasonChanged {
                from: TooManyDeletes,
                reason: EncounteredQuarantineException,
                ..
            }]
        ));
        let e = quarantine_events(&exc, &none);
        assert!(matches!(
            e.as_slice(),
            [Event::Resolved {
                was: EncounteredQuarantineException,
                ..
            }]
        ));
        let disabled = meta(Some(q(EncounteredQuarantineException)), true);
        let e = quarantine_events(&exc, &disabled);
        assert!(matches!(
            e.as_slice(),
            [Event::Disabled {
                reason: Some(EncounteredQuarantineException),
                ..
            }]
        ));
        assert!(quarantine_events(&disabled, &disabled).is_empty());
        assert!(quarantine_events(&none, &none).is_empty());
    }

    #[test]
    fn a_failure_is_reported_once_and_again_only_after_it_went_away() {
        let hour = Duration::from_secs(3600);
        let p = vec![
            problem("u1", "EntryConflict"),
            problem("u2", "EntryConflict"),
        ];
        let (d, rec) = failure_digest(&p, &ReportedFailures::default(), &[], t0(), hour);
        assert!(matches!(&d, Some(Event::Failures { listed, more: 0 }) if listed.len() == 2));
        assert_eq!(rec.keys.len(), 2);
        assert_eq!(rec.version, NOTIFY_RECORD_VERSION);
        // The same failures two hours later: nothing new.
        let later = t0() + chrono::Duration::hours(2);
        let (d, rec2) = failure_digest(&p, &rec, &[], later, hour);
        assert_eq!(d, None);
        assert_eq!(rec2.keys, rec.keys);
        // Same object, other code: new.
        let p3 = vec![problem("u1", "SchemaAttributeNotFound")];
        let (d, rec3) = failure_digest(&p3, &rec2, &[], later, hour);
        assert!(
            matches!(&d, Some(Event::Failures { listed, .. }) if listed[0].code == "SchemaAttributeNotFound")
        );
        // u1/EntryConflict and u2 went away: forgotten, so a recurrence is reported.
        assert_eq!(rec3.keys.len(), 1);
    }

    #[test]
    fn an_escrowed_object_not_retried_stays_reported() {
        let hour = Duration::from_secs(3600);
        let p = vec![problem("u1", "EntryConflict")];
        let (_, rec) = failure_digest(&p, &ReportedFailures::default(), &[], t0(), hour);
        let escrow = EscrowEntry {
            object_type: ObjectType::User,
            source_id: "u1".into(),
            display_name: "u1".into(),
            action: EscrowAction::Create,
            attempts: 1,
            first_failure: t0(),
            last_attempt: t0(),
            next_attempt: t0(),
            code: "EntryConflict".into(),
            reason: "no".into(),
            fingerprint: String::new(),
            expired: false,
        };
        let later = t0() + chrono::Duration::hours(3);
        let (_, rec2) = failure_digest(&[], &rec, &[escrow], later, hour);
        assert_eq!(rec2.keys, rec.keys);
        let (d, _) = failure_digest(&p, &rec2, &[], later, hour);
        assert_eq!(d, None);
    }

    #[test]
    fn failures_come_one_per_object_from_the_cycles_escrows() {
        let escrow = |id: &str, at: DateTime<Utc>| EscrowEntry {
            object_type: ObjectType::User,
            source_id: id.into(),
            display_name: format!("{id}@example.com"),
            action: EscrowAction::Create,
            attempts: 1,
            first_failure: at,
            last_attempt: at,
            next_attempt: at,
            code: "EntryConflict".into(),
            reason: "no".into(),
            fingerprint: String::new(),
            expired: false,
        };
        let mut summarised = problem("u1", "EntryConflict");
        summarised.count = 2;
        let skipped = problem("u9", "InvalidSourceObject");
        let escrows = [
            escrow("u1", t0()),
            escrow("u2", t0()),
            escrow("old", t0() - chrono::Duration::hours(1)),
        ];
        let f = cycle_failures(&[summarised, skipped], &escrows, t0());
        let ids: Vec<&str> = f.iter().filter_map(|p| p.id.as_deref()).collect();
        assert_eq!(ids, ["u1", "u2", "u9"]);
    }

    #[test]
    fn at_most_one_digest_per_interval_and_fifty_listed() {
        let hour = Duration::from_secs(3600);
        let (_, rec) = failure_digest(
            &[problem("a", "X")],
            &ReportedFailures::default(),
            &[],
            t0(),
            hour,
        );
        let many: Vec<Problem> = (0..70)
            .map(|i| problem(&format!("u{i}"), "Timeout"))
            .collect();
        let soon = t0() + chrono::Duration::minutes(10);
        let (d, rec2) = failure_digest(&many, &rec, &[], soon, hour);
        assert_eq!(d, None, "a digest went out 10 minutes ago");
        assert!(
            rec2.keys.iter().all(|k| !k.contains("Timeout")),
            "held, not reported"
        );
        let after = t0() + chrono::Duration::minutes(61);
        let (d, _) = failure_digest(&many, &rec2, &[], after, hour);
        match d {
            Some(Event::Failures { listed, more }) => assert_eq!((listed.len(), more), (50, 20)),
            other => panic!("{other:?}"),
        }
    }
}
