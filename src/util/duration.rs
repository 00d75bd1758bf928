//! Durations as admins write them: `40m`, `1h30m`, `90s`, `500ms`.

use std::time::Duration;

/// A duration an admin wrote that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// Not digits followed by a unit, repeated.
    #[error("{0:?} is not a duration (examples: 40m, 1h30m, 90s, 500ms)")]
    Invalid(String),
    /// Well formed, but zero.
    #[error("{0:?}: a duration must be greater than zero")]
    Zero(String),
}

/// `40m`, `1h30m`, `90s`, `500ms`, `2d`: digits and a unit, repeated; zero is refused.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError::Invalid(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest
            .get(..digits)
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        rest = rest.get(digits..).unwrap_or("");
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len).unwrap_or("");
        rest = rest.get(unit_len..).unwrap_or("");
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
    }
    if total.is_zero() {
        return Err(DurationError::Zero(s.to_string()));
    }
    Ok(total)
}

/// The shortest form [`parse_duration`] reads back: `1h30m`, `90ms`.
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration("40m").unwrap(), Duration::from_secs(2400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        for bad in ["", "40", "m", "4x", "0s", "-1m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
