//! .NET custom date and time format strings (invariant culture), for parsing and formatting.
//!
//! Every date-time is kept in UTC: Entra's servers run in UTC, so .NET's "local time" (which
//! `RoundtripKind` parsing of an input with an offset converts to) is UTC too.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

/// How Entra prints a date-time that wasn't formatted explicitly (CDate, DateAdd, Now).
pub(crate) const DEFAULT_OUTPUT_FORMAT: &str = "M/d/yyyy h:mm:ss tt";

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Formats for reading date strings that weren't given an explicit format (CDate, DateAdd,
/// NumFromDate...): ISO 8601 with or without time and offset, Entra's own
/// `M/d/yyyy h:mm:ss tt`, and LDAP generalized time.
const LENIENT_FORMATS: &[&str] = &[
    "yyyy-MM-ddTHH:mm:ss.FFFFFFFK",
    "yyyy-MM-ddTHH:mm:ssK",
    "yyyy-MM-ddTHH:mmK",
    "yyyy-MM-dd HH:mm:ss.FFFFFFFK",
    "yyyy-MM-dd HH:mm:ssK",
    "yyyy-MM-dd HH:mmK",
    "yyyy-MM-ddK",
    "M/d/yyyy h:mm:ss tt",
    "M/d/yyyy h:mm tt",
    "M/d/yyyy H:mm:ss",
    "M/d/yyyy H:mm",
    "M/d/yyyy",
    "yyyyMMddHHmmss.FFFFFFFK",
    "yyyyMMddHHmmssK",
];

/// A date-time as Entra prints it by default.
pub(crate) fn default_text(dt: &DateTime<Utc>) -> String {
    format(dt, DEFAULT_OUTPUT_FORMAT).unwrap_or_else(|_| dt.to_rfc3339())
}

/// Reads a date string in any of the common forms.
pub(crate) fn parse_lenient(input: &str, now: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    LENIENT_FORMATS
        .iter()
        .find_map(|f| parse_exact(input, f, now).ok())
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Year(usize),
    Month(usize),
    Day(usize),
    Hour12(usize),
    Hour24(usize),
    Minute(usize),
    Second(usize),
    /// `f`: exactly n fraction digits.
    Frac(usize),
    /// `F`: up to n fraction digits, trailing zeros dropped.
    FracOpt(usize),
    AmPm(usize),
    /// `z`, `zz`, `zzz`.
    Offset(usize),
    /// `K`: "Z" for UTC.
    Kind,
    Era,
    Lit(char),
}

/// .NET's standard (one-letter) formats, expanded for the invariant culture.
fn standard_format(f: &str) -> Option<&'static str> {
    Some(match f {
        "d" => "MM/dd/yyyy",
        "D" => "dddd, dd MMMM yyyy",
        "f" => "dddd, dd MMMM yyyy HH:mm",
        "F" => "dddd, dd MMMM yyyy HH:mm:ss",
        "g" => "MM/dd/yyyy HH:mm",
        "G" => "MM/dd/yyyy HH:mm:ss",
        "M" | "m" => "MMMM dd",
        "O" | "o" => "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffK",
        "R" | "r" => "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'",
        "s" => "yyyy'-'MM'-'dd'T'HH':'mm':'ss",
        "t" => "HH:mm",
        "T" => "HH:mm:ss",
        "u" => "yyyy'-'MM'-'dd HH':'mm':'ss'Z'",
        "U" => "dddd, dd MMMM yyyy HH:mm:ss",
        "Y" | "y" => "yyyy MMMM",
        _ => return None,
    })
}

/// Why a date format is unusable, or a value does not match it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DateFormatError {
    #[error("the format is empty")]
    Empty,
    #[error("\"{0}\" is not a valid date format")]
    Unknown(String),
    #[error("\"{0}\" has more than 7 '{1}' characters")]
    TooLong(String, char),
    #[error("unterminated quote in \"{0}\"")]
    UnterminatedQuote(String),
    #[error("\"{0}\" ends with a backslash")]
    TrailingBackslash(String),
    #[error("misplaced '%' in \"{0}\"")]
    MisplacedPercent(String),
    #[error("value \"{input}\" does not match input format \"{format}\"")]
    NoMatch { input: String, format: String },
    #[error("value \"{0}\" is not a valid date and time")]
    InvalidDate(String),
}

fn tokenize(format: &str) -> Result<Vec<Tok>, DateFormatError> {
    if format.is_empty() {
        return Err(DateFormatError::Empty);
    }
    if format.chars().count() == 1 {
        return match standard_format(format) {
            Some(f) => tokenize(f),
            None => Err(DateFormatError::Unknown(format.to_string())),
        };
    }
    let chars: Vec<char> = format.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let run = chars.iter().skip(i).take_while(|x| **x == c).count();
        match c {
            'y' => toks.push(Tok::Year(run)),
            'M' => toks.push(Tok::Month(run)),
            'd' => toks.push(Tok::Day(run)),
            'h' => toks.push(Tok::Hour12(run.min(2))),
            'H' => toks.push(Tok::Hour24(run.min(2))),
            'm' => toks.push(Tok::Minute(run.min(2))),
            's' => toks.push(Tok::Second(run.min(2))),
            't' => toks.push(Tok::AmPm(run.min(2))),
            'z' => toks.push(Tok::Offset(run.min(3))),
            'g' => toks.push(Tok::Era),
            'f' | 'F' => {
                if run > 7 {
                    return Err(DateFormatError::TooLong(format.to_string(), c));
                }
                toks.push(if c == 'f' {
                    Tok::Frac(run)
                } else {
                    Tok::FracOpt(run)
                });
            }
            'K' => {
                for _ in 0..run {
                    toks.push(Tok::Kind);
                }
            }
            '\'' | '"' => {
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(DateFormatError::UnterminatedQuote(format.to_string())),
                        Some(q) if *q == c => break,
                        Some('\\') => {
                            let Some(n) = chars.get(j + 1) else {
                                return Err(DateFormatError::TrailingBackslash(format.to_string()));
                            };
                            toks.push(Tok::Lit(*n));
                            j += 2;
                        }
                        Some(x) => {
                            toks.push(Tok::Lit(*x));
                            j += 1;
                        }
                    }
                }
                i = j + 1;
                continue;
            }
            '\\' => {
                let Some(n) = chars.get(i + 1) else {
                    return Err(DateFormatError::TrailingBackslash(format.to_string()));
                };
                toks.push(Tok::Lit(*n));
                i += 2;
                continue;
            }
            '%' => {
                // `%d` is the single-letter custom specifier `d`.
                match chars.get(i + 1) {
                    Some(n) if *n != '%' => {
                        let single: String = n.to_string();
                        let mut inner = tokenize(&format!("{single}{single}"))?;
                        // Re-tokenise as a run of one.
                        inner = match inner.first() {
                            Some(Tok::Year(_)) => vec![Tok::Year(1)],
                            Some(Tok::Month(_)) => vec![Tok::Month(1)],
                            Some(Tok::Day(_)) => vec![Tok::Day(1)],
                            Some(Tok::Hour12(_)) => vec![Tok::Hour12(1)],
                            Some(Tok::Hour24(_)) => vec![Tok::Hour24(1)],
                            Some(Tok::Minute(_)) => vec![Tok::Minute(1)],
                            Some(Tok::Second(_)) => vec![Tok::Second(1)],
                            Some(Tok::Frac(_)) => vec![Tok::Frac(1)],
                            Some(Tok::FracOpt(_)) => vec![Tok::FracOpt(1)],
                            Some(Tok::AmPm(_)) => vec![Tok::AmPm(1)],
                            Some(Tok::Offset(_)) => vec![Tok::Offset(1)],
                            Some(Tok::Kind) => vec![Tok::Kind],
                            Some(Tok::Era) => vec![Tok::Era],
                            _ => vec![Tok::Lit(*n)],
                        };
                        toks.extend(inner);
                        i += 2;
                        continue;
                    }
                    _ => return Err(DateFormatError::MisplacedPercent(format.to_string())),
                }
            }
            other => {
                for _ in 0..run {
                    toks.push(Tok::Lit(other));
                }
            }
        }
        i += run;
    }
    Ok(toks)
}

/// Formats `dt` with a .NET custom (or one-letter standard) format string.
pub(crate) fn format(dt: &DateTime<Utc>, format: &str) -> Result<String, DateFormatError> {
    let mut out = String::new();
    let frac7 = dt.nanosecond() % 1_000_000_000 / 100;
    for tok in tokenize(format)? {
        match tok {
            Tok::Year(1) => out.push_str(&(dt.year() % 100).to_string()),
            Tok::Year(2) => out.push_str(&format!("{:02}", dt.year() % 100)),
            Tok::Year(n) => out.push_str(&format!("{:0n$}", dt.year(), n = n)),
            Tok::Month(1) => out.push_str(&dt.month().to_string()),
            Tok::Month(2) => out.push_str(&format!("{:02}", dt.month())),
            Tok::Month(n) => {
                let name = MONTHS.get(dt.month0() as usize).copied().unwrap_or("");
                out.push_str(if n == 3 {
                    name.get(..3).unwrap_or(name)
                } else {
                    name
                });
            }
            Tok::Day(1) => out.push_str(&dt.day().to_string()),
            Tok::Day(2) => out.push_str(&format!("{:02}", dt.day())),
            Tok::Day(n) => {
                let name = DAYS
                    .get(dt.weekday().num_days_from_sunday() as usize)
                    .copied()
                    .unwrap_or("");
                out.push_str(if n == 3 {
                    name.get(..3).unwrap_or(name)
                } else {
                    name
                });
            }
            Tok::Hour12(n) => {
                let h = match dt.hour() % 12 {
                    0 => 12,
                    h => h,
                };
                out.push_str(&pad(h, n));
            }
            Tok::Hour24(n) => out.push_str(&pad(dt.hour(), n)),
            Tok::Minute(n) => out.push_str(&pad(dt.minute(), n)),
            Tok::Second(n) => out.push_str(&pad(dt.second(), n)),
            Tok::Frac(n) => out.push_str(format!("{frac7:07}").get(..n).unwrap_or("")),
            Tok::FracOpt(n) => {
                let digits = format!("{frac7:07}");
                let digits = digits.get(..n).unwrap_or("").trim_end_matches('0');
                if digits.is_empty() {
                    // .NET drops the decimal point before an all-zero `F` fraction.
                    if out.ends_with('.') {
                        out.pop();
                    }
                } else {
                    out.push_str(digits);
                }
            }
            Tok::AmPm(n) => {
                let s = if dt.hour() < 12 { "AM" } else { "PM" };
                out.push_str(if n == 1 { s.get(..1).unwrap_or(s) } else { s });
            }
            // Always UTC, see the module comment.
            Tok::Offset(1) => out.push_str("+0"),
            Tok::Offset(2) => out.push_str("+00"),
            Tok::Offset(_) => out.push_str("+00:00"),
            Tok::Kind => out.push('Z'),
            Tok::Era => out.push_str("A.D."),
            Tok::Lit(c) => out.push(c),
        }
    }
    Ok(out)
}

fn pad(v: u32, width: usize) -> String {
    if width >= 2 {
        format!("{v:02}")
    } else {
        v.to_string()
    }
}

struct Cursor<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Reads between `min` and `max` ASCII digits.
    fn digits(&mut self, min: usize, max: usize) -> Option<(u64, usize)> {
        let mut value: u64 = 0;
        let mut n = 0;
        while n < max {
            match self
                .peek()
                .and_then(|c| c.to_digit(10).filter(|_| c.is_ascii_digit()))
            {
                Some(d) => {
                    value = value.checked_mul(10)?.checked_add(u64::from(d))?;
                    self.pos += 1;
                    n += 1;
                }
                None => break,
            }
        }
        (n >= min).then_some((value, n))
    }

    /// Consumes `word` case-insensitively.
    fn word(&mut self, word: &str) -> bool {
        let len = word.chars().count();
        let Some(slice) = self.chars.get(self.pos..self.pos + len) else {
            return false;
        };
        let matches = slice
            .iter()
            .zip(word.chars())
            .all(|(a, b)| a.to_lowercase().eq(b.to_lowercase()));
        if matches {
            self.pos += len;
        }
        matches
    }

    /// `+HH:mm`, `+HHmm`, `+HH` or `+H` (for `z`); returns the offset in seconds.
    fn offset(&mut self, hour_digits_min: usize, minutes: bool) -> Option<i64> {
        let sign = match self.peek()? {
            '+' => 1,
            '-' | '\u{2212}' => -1,
            _ => return None,
        };
        self.pos += 1;
        let (h, _) = self.digits(hour_digits_min, 2)?;
        let mut m = 0;
        if minutes {
            if self.peek() == Some(':') {
                self.pos += 1;
                m = self.digits(2, 2)?.0;
            } else if let Some((mm, _)) = self.digits(2, 2) {
                m = mm;
            }
        }
        if h > 14 || m > 59 {
            return None;
        }
        Some(sign * (h as i64 * 3600 + m as i64 * 60))
    }
}

/// Parses `input` with the .NET custom format `format` (leading and trailing white space
/// allowed, as with Entra's default DateTimeStyles). Missing date parts default as in .NET:
/// no date at all = today, a missing year = this year, a missing month or day = 1.
pub(crate) fn parse_exact(
    input: &str,
    format: &str,
    now: &DateTime<Utc>,
) -> Result<DateTime<Utc>, DateFormatError> {
    let fail = || DateFormatError::NoMatch {
        input: input.to_string(),
        format: format.to_string(),
    };
    let toks = tokenize(format)?;
    let chars: Vec<char> = input.trim().chars().collect();
    let mut c = Cursor {
        chars: &chars,
        pos: 0,
    };
    let (mut year, mut month, mut day) = (None, None, None);
    let (mut hour, mut minute, mut second, mut nanos) = (0u64, 0u64, 0u64, 0u64);
    let mut pm: Option<bool> = None;
    let mut twelve_hour = false;
    let mut offset: Option<i64> = None;
    for tok in &toks {
        match *tok {
            Tok::Year(n) => {
                let (v, got) = match n {
                    1 => c.digits(1, 2),
                    2 => c.digits(2, 2),
                    n => c.digits(n, n),
                }
                .ok_or_else(fail)?;
                // Two-digit years: .NET's Gregorian window (TwoDigitYearMax 2029).
                year = Some(if got <= 2 && n <= 2 {
                    if v <= 29 {
                        2000 + v as i32
                    } else {
                        1900 + v as i32
                    }
                } else {
                    v as i32
                });
            }
            Tok::Month(n) if n <= 2 => {
                month = Some(c.digits(if n == 1 { 1 } else { 2 }, 2).ok_or_else(fail)?.0 as u32)
            }
            Tok::Month(n) => {
                let found = MONTHS.iter().position(|m| {
                    let name = if n == 3 { m.get(..3).unwrap_or(m) } else { m };
                    c.word(name)
                });
                month = Some(found.ok_or_else(fail)? as u32 + 1);
            }
            Tok::Day(n) if n <= 2 => {
                day = Some(c.digits(if n == 1 { 1 } else { 2 }, 2).ok_or_else(fail)?.0 as u32)
            }
            Tok::Day(n) => {
                // Day names are read and ignored, as .NET does once the date is known.
                let found = DAYS.iter().any(|d| {
                    let name = if n == 3 { d.get(..3).unwrap_or(d) } else { d };
                    c.word(name)
                });
                if !found {
                    return Err(fail());
                }
            }
            Tok::Hour12(n) | Tok::Hour24(n) => {
                twelve_hour |= matches!(tok, Tok::Hour12(_));
                hour = c.digits(if n == 1 { 1 } else { 2 }, 2).ok_or_else(fail)?.0;
            }
            Tok::Minute(n) => minute = c.digits(if n == 1 { 1 } else { 2 }, 2).ok_or_else(fail)?.0,
            Tok::Second(n) => second = c.digits(if n == 1 { 1 } else { 2 }, 2).ok_or_else(fail)?.0,
            Tok::Frac(n) | Tok::FracOpt(n) => {
                let min = if matches!(tok, Tok::Frac(_)) { n } else { 0 };
                let (v, got) = c.digits(min, n).ok_or_else(fail)?;
                nanos = v * 10u64.pow(9 - got as u32);
            }
            Tok::AmPm(n) => {
                let (am, pmw) = if n == 1 { ("A", "P") } else { ("AM", "PM") };
                pm = Some(if c.word(am) {
                    false
                } else if c.word(pmw) {
                    true
                } else {
                    return Err(fail());
                });
            }
            Tok::Offset(n) => {
                offset = Some(
                    c.offset(if n == 1 { 1 } else { 2 }, n >= 3)
                        .ok_or_else(fail)?,
                )
            }
            Tok::Kind => match c.peek() {
                Some('Z') | Some('z') => {
                    c.pos += 1;
                    offset = Some(0);
                }
                Some('+') | Some('-') => offset = Some(c.offset(2, true).ok_or_else(fail)?),
                _ => {}
            },
            Tok::Era => {
                let _ = c.word("A.D.") || c.word("AD");
            }
            Tok::Lit(l) => {
                if c.peek() == Some(l)
                    || (l.is_whitespace() && c.peek().is_some_and(char::is_whitespace))
                {
                    c.pos += 1;
                } else {
                    return Err(fail());
                }
            }
        }
    }
    if c.pos != chars.len() {
        return Err(fail());
    }
    if twelve_hour || pm.is_some() {
        if hour > 12 || (twelve_hour && hour == 0) {
            return Err(fail());
        }
        match pm {
            Some(true) if hour < 12 => hour += 12,
            Some(false) if hour == 12 => hour = 0,
            _ => {}
        }
    }
    let (y, m, d) = if year.is_none() && month.is_none() && day.is_none() {
        (now.year(), now.month(), now.day())
    } else {
        (
            year.unwrap_or(now.year()),
            month.unwrap_or(1),
            day.unwrap_or(1),
        )
    };
    let invalid = || DateFormatError::InvalidDate(input.to_string());
    let date = NaiveDate::from_ymd_opt(y, m, d).ok_or_else(invalid)?;
    let naive = date
        .and_hms_nano_opt(hour as u32, minute as u32, second as u32, nanos as u32)
        .ok_or_else(invalid)?;
    let utc = Utc.from_utc_datetime(&naive);
    utc.checked_sub_signed(Duration::seconds(offset.unwrap_or(0)))
        .ok_or_else(invalid)
}
