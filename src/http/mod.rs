//! HTTP helpers shared by the SCIM client (`crate::target`) and the Microsoft Graph source:
//! `Retry-After` parsing, full-jitter backoff and transport error text. Both clients retry the
//! same way, so the rules live here once; nothing here knows SCIM or Graph.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// The error and its sources, without the URL (errors name the path separately).
pub(crate) fn error_chain(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest often repeat the inner message in the outer one.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Parses `Retry-After` as delta-seconds or an HTTP date (a past date means now).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, base * 2^attempt)]`.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(2u32.saturating_pow(attempt)).min(max);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(50);
        for attempt in 0..40 {
            let ceiling = (base * 2u32.saturating_pow(attempt.min(20))).min(max);
            assert!(backoff(base, max, attempt) <= ceiling);
        }
        assert_eq!(backoff(Duration::ZERO, max, 3), Duration::ZERO);
    }
}
