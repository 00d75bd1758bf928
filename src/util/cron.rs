//! Cron expressions: 6 fields (seconds first), in UTC. tokio-cron-scheduler is the one cron
//! engine: the configuration checks expressions with its parser here and the daemon computes
//! next runs from it. A leaf module (nothing from `crate::`), since both config and daemon use it.

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::job::job_data::JobStoredData;
use tokio_cron_scheduler::Job;

/// An expression tokio-cron-scheduler does not accept.
#[derive(Debug, thiserror::Error)]
#[error("{expr:?} is not a valid cron expression (6 fields, seconds first, UTC)")]
pub struct CronError {
    /// The expression as written.
    pub expr: String,
}

/// A parsed cron schedule.
pub(crate) struct CronSchedule {
    /// The scheduler's own record of a job with this schedule: it is what exposes the parsed
    /// expression (the parser itself is not part of tokio-cron-scheduler's API).
    data: JobStoredData,
}

impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronSchedule").finish_non_exhaustive()
    }
}

impl CronSchedule {
    /// Parse a 6-field expression the way tokio-cron-scheduler does.
    pub(crate) fn parse(expr: &str) -> Result<Self, CronError> {
        let invalid = || CronError {
            expr: expr.to_string(),
        };
        let mut job = Job::new(expr, |_, _| {}).map_err(|_| invalid())?;
        let data = job.job_data().map_err(|_| invalid())?;
        if data.schedule().is_none() {
            return Err(invalid());
        }
        Ok(CronSchedule { data })
    }

    /// The first occurrence strictly after `t`.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.data.schedule()?.find_next_occurrence(&t, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_seconds_first() {
        let s = CronSchedule::parse("0 */40 * * * *").unwrap();
        let t = DateTime::parse_from_rfc3339("2024-01-01T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            s.next_after(t).unwrap().to_rfc3339(),
            "2024-01-01T10:40:00+00:00"
        );
        let err = CronSchedule::parse("0 0 * * *").unwrap_err();
        assert!(err.to_string().contains("not a valid cron"), "{err}");
    }
}
