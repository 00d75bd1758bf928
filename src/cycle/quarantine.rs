//! Quarantine (Entra's protection of a job whose calls keep failing): when a cycle meets one
//! of the conditions below, the job is quarantined with Graph's reason; its scheduled cycles
//! then run only at +6 h, +12 h and +24 h after the series began, then daily; a cycle that
//! meets none lifts it; after 28 days in quarantine the job is disabled until restarted.
//!
//! The conditions, in the order they are reported when several hold:
//! `EncounteredQuarantineException` (token refused, target not SCIM), `TooManyDeletes`,
//! `EncounteredTotalEscrowThreshold`, `EncounteredBaseEscrowThreshold`,
//! `EncounteredEscrowProportionThreshold`.

use crate::state::{JobMeta, Quarantine, QuarantineError, QuarantineReason};
use chrono::{DateTime, Duration, Utc};

/// How long a job may stay in quarantine before it is disabled.
pub(crate) const QUARANTINE_LIFETIME_DAYS: i64 = 28;

/// The escrow thresholds of `[jobs.quarantine]` (Entra's figures by default).
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineSettings {
    /// A cycle's failure proportion is judged only from this many failures on.
    pub min_failures: u64,
    /// Quarantine when more than this percentage of a cycle's attempted operations failed.
    pub failure_percent: f64,
    /// Quarantine over this many live non-reference escrows.
    pub base_escrows: u64,
    /// Quarantine over this many live escrows, references included.
    pub total_escrows: u64,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        QuarantineSettings {
            min_failures: 5_000,
            failure_percent: 40.0,
            base_escrows: 40_000,
            total_escrows: 60_000,
        }
    }
}

/// The first of +6 h, +12 h, +24 h, then every 24 h after `began` that is later than `now`.
pub(crate) fn backoff_after(began: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let elapsed = now - began;
    if elapsed < Duration::hours(6) {
        began + Duration::hours(6)
    } else if elapsed < Duration::hours(12) {
        began + Duration::hours(12)
    } else if elapsed < Duration::hours(24) {
        began + Duration::hours(24)
    } else {
        began + Duration::days(elapsed.num_days() + 1)
    }
}

/// When a quarantined job whose series began at `series_began` may next run, seen at `now`.
pub(crate) fn next_attempt(series_began: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    backoff_after(series_began, now)
}

/// What a cycle found, for [`judge`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Findings {
    /// The cycle stopped because the token was refused or the target does not speak SCIM:
    /// the error's code and message.
    pub exception: Option<(String, String)>,
    /// Disables and deletes held by the deletion threshold, and the threshold.
    pub held: Option<(u64, String)>,
    /// Object (non-reference) operations attempted and failed.
    pub attempts: u64,
    pub failures: u64,
    /// Live escrows after the cycle: non-reference ones and all.
    pub base_escrows: u64,
    pub total_escrows: u64,
}

/// The quarantine a cycle's findings call for, if any.
pub(crate) fn judge(
    f: &Findings,
    s: &QuarantineSettings,
) -> Option<(QuarantineReason, QuarantineError)> {
    let err = |code: &str, message: String| QuarantineError {
        code: code.to_string(),
        message,
    };
    if let Some((code, message)) = &f.exception {
        return Some((
            QuarantineReason::EncounteredQuarantineException,
            err(code, message.clone()),
        ));
    }
    if let Some((count, threshold)) = &f.held {
        return Some((
            QuarantineReason::TooManyDeletes,
            err(
                "TooManyDeletes",
                format!("{count} disable(s)/delete(s) reach the deletion threshold ({threshold}); they are staged"),
            ),
        ));
    }
    if f.total_escrows > s.total_escrows {
        return Some((
            QuarantineReason::EncounteredTotalEscrowThreshold,
            err(
                "EscrowThreshold",
                format!(
                    "{} escrowed actions exceed the limit of {}",
                    f.total_escrows, s.total_escrows
                ),
            ),
        ));
    }
    if f.base_escrows > s.base_escrows {
        return Some((
            QuarantineReason::EncounteredBaseEscrowThreshold,
            err(
                "EscrowThreshold",
                format!(
                    "{} escrowed object actions exceed the limit of {}",
                    f.base_escrows, s.base_escrows
                ),
            ),
        ));
    }
    if f.failures > 0
        && f.failures >= s.min_failures
        && f.failures as f64 * 100.0 > s.failure_percent * f.attempts as f64
    {
        return Some((
            QuarantineReason::EncounteredEscrowProportionThreshold,
            err(
                "EscrowThreshold",
                format!(
                    "{} of {} attempted operations failed (more than {}%)",
                    f.failures, f.attempts, s.failure_percent
                ),
            ),
        ));
    }
    None
}

/// Puts the job in quarantine (or keeps it there, one more evaluation of the series); after
/// 28 days in the series the job is disabled.
pub(crate) fn impose(
    meta: &mut JobMeta,
    job: &str,
    reason: QuarantineReason,
    error: QuarantineError,
    now: DateTime<Utc>,
) {
    let (series_began, series_count) = match &meta.quarantine {
        Some(q) => (q.series_began, q.series_count.saturating_add(1)),
        None => (now, 0),
    };
    let q = Quarantine {
        reason,
        series_began,
        current_began: now,
        next_attempt: next_attempt(series_began, now),
        series_count,
        error,
    };
    if meta.quarantine.is_none() {
        tracing::warn!(event = "Quarantine", job, reason = %reason, code = %q.error.code, message = %q.error.message, next_attempt = %q.next_attempt, "job quarantined");
    } else {
        tracing::warn!(event = "Quarantine", job, reason = %reason, series_count, next_attempt = %q.next_attempt, "job stays in quarantine");
    }
    if now >= series_began + Duration::days(QUARANTINE_LIFETIME_DAYS) && !meta.disabled {
        tracing::error!(event = "QuarantineDisabled", job, series_began = %series_began, "job disabled after 28 days in quarantine: restart it once the cause is fixed");
        meta.disabled = true;
    }
    meta.quarantine = Some(q);
}

/// Takes the job out of quarantine.
pub(crate) fn lift(meta: &mut JobMeta, job: &str) {
    if let Some(q) = meta.quarantine.take() {
        tracing::info!(event = "QuarantineLifted", job, reason = %q.reason, series_count = q.series_count, "quarantine lifted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn error() -> QuarantineError {
        QuarantineError {
            code: "Unauthorized".into(),
            message: "401".into(),
        }
    }

    #[test]
    fn next_attempts_back_off_to_daily() {
        let b = t0();
        let h = Duration::hours;
        assert_eq!(next_attempt(b, b), b + h(6));
        assert_eq!(next_attempt(b, b + h(6)), b + h(12));
        assert_eq!(next_attempt(b, b + h(13)), b + h(24));
        assert_eq!(next_attempt(b, b + h(24)), b + h(48));
        assert_eq!(next_attempt(b, b + h(50)), b + h(72));
    }

    #[test]
    fn a_series_keeps_its_start_counts_and_disables_after_28_days() {
        let b = t0();
        let mut meta = JobMeta::default();
        let r = QuarantineReason::TooManyDeletes;
        impose(&mut meta, "j", r, error(), b);
        impose(&mut meta, "j", r, error(), b + Duration::hours(6));
        let q = meta.quarantine.clone().unwrap();
        assert_eq!(
            (q.series_began, q.current_began, q.series_count),
            (b, b + Duration::hours(6), 1)
        );
        assert_eq!(q.next_attempt, b + Duration::hours(12));
        impose(&mut meta, "j", r, error(), b + Duration::days(27));
        assert!(!meta.disabled);
        impose(&mut meta, "j", r, error(), b + Duration::days(28));
        assert!(meta.disabled);
    }

    #[test]
    fn judge_applies_the_thresholds() {
        let s = QuarantineSettings {
            min_failures: 5,
            failure_percent: 40.0,
            base_escrows: 10,
            total_escrows: 15,
        };
        let judged = |f: Findings| judge(&f, &s).map(|(r, _)| r);
        assert_eq!(judged(Findings::default()), None);
        // 4 failures: under min_failures whatever the proportion.
        let few = Findings {
            attempts: 4,
            failures: 4,
            ..Findings::default()
        };
        assert_eq!(judged(few), None);
        let prop = Findings {
            attempts: 12,
            failures: 5,
            ..Findings::default()
        };
        assert_eq!(
            judged(prop),
            Some(QuarantineReason::EncounteredEscrowProportionThreshold)
        );
        // 5 of 13 is under 40%.
        let under = Findings {
            attempts: 13,
            failures: 5,
            ..Findings::default()
        };
        assert_eq!(judged(under), None);
        let base = Findings {
            base_escrows: 11,
            total_escrows: 11,
            ..Findings::default()
        };
        assert_eq!(
            judged(base),
            Some(QuarantineReason::EncounteredBaseEscrowThreshold)
        );
        let total = Findings {
            base_escrows: 2,
            total_escrows: 16,
            ..Findings::default()
        };
        assert_eq!(
            judged(total),
            Some(QuarantineReason::EncounteredTotalEscrowThreshold)
        );
        let exc = Findings {
            exception: Some(("Unauthorized".into(), "401".into())),
            held: Some((3, "2".into())),
            ..Findings::default()
        };
        assert_eq!(
            judged(exc),
            Some(QuarantineReason::EncounteredQuarantineException)
        );
    }
}
