//! Reading the provisioning logs back: `provisiond logs`.
//!
//! A day of a busy job is a million entries (about a gigabyte), so a query is designed not to
//! parse what it does not return: segments are chosen by the hour in their names, each line
//! is tested first on its raw bytes (a needle that every matching entry's JSON must contain),
//! only the lines that pass are parsed, and segments are read on several threads, newest
//! first, stopping once `limit` entries are certain.

use super::entry::{Entry, ProvisioningAction, Status};
use super::store::{segments, LogError, Segment};
use chrono::{DateTime, Utc};
use memchr::memmem;
use std::path::Path;

/// What `provisiond logs` asks for. Every filter that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub job: Option<String>,
    /// `activityDateTime >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `activityDateTime <= to`.
    pub to: Option<DateTime<Utc>>,
    pub status: Option<Status>,
    pub action: Option<ProvisioningAction>,
    /// A substring (ASCII case-insensitive) of the source or target identity's id or name.
    pub identity: Option<String>,
    pub cycle_id: Option<String>,
    pub change_id: Option<String>,
    /// A prefix of the entry's own id (`logs show ID`).
    pub id: Option<String>,
    /// At most this many entries, the newest; `None`: all.
    pub limit: Option<usize>,
}

/// What a query found, newest first, and how many damaged lines it skipped.
#[derive(Debug, Default)]
pub struct Found {
    pub entries: Vec<Entry>,
    /// Lines that did not parse (a line torn by a crash, a damaged file): skipped.
    pub skipped_lines: usize,
}

/// Raw-line needles: JSON text every matching entry's line must contain. A needle is a
/// necessary condition only; the parsed entry is checked in full.
struct Needles {
    exact: Vec<memmem::Finder<'static>>,
    /// The first exact needle, searched backwards over a whole segment to find candidate
    /// lines (the filters are rare among the entries, or `limit` stops the search early).
    rare: Option<memmem::FinderRev<'static>>,
    /// The identity text, lowercased (ASCII), matched case-insensitively.
    identity: Option<Vec<u8>>,
}

/// A string as it appears inside a JSON string literal (quotes, backslashes, control
/// characters escaped), without the surrounding quotes.
fn json_inner(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or("")
        .to_string()
}

impl Needles {
    fn of(q: &Query) -> Needles {
        let mut texts: Vec<String> = Vec::new();
        let mut add = |s: String| texts.push(s);
        if let Some(a) = q.action {
            add(format!("\"provisioningAction\":\"{}\"", a.as_str()));
        }
        if let Some(s) = q.status {
            add(format!("\"status\":\"{}\"", s.as_str()));
        }
        if let Some(c) = &q.cycle_id {
            add(format!("\"cycleId\":\"{}\"", json_inner(c)));
        }
        if let Some(c) = &q.change_id {
            add(format!("\"changeId\":\"{}\"", json_inner(c)));
        }
        if let Some(id) = &q.id {
            // A prefix: no closing quote.
            add(format!("\"id\":\"{}", json_inner(id)));
        }
        // The most selective first: ids, then the action, then the status (which steps
        // carry too).
        texts.reverse();
        Needles {
            rare: texts
                .first()
                .map(|t| memmem::FinderRev::new(t.as_bytes()).into_owned()),
            exact: texts
                .iter()
                .map(|t| memmem::Finder::new(t.as_bytes()).into_owned())
                .collect(),
            identity: q
                .identity
                .as_ref()
                .map(|t| json_inner(t).to_ascii_lowercase().into_bytes()),
        }
    }

    fn pass(&self, line: &[u8]) -> bool {
        self.exact.iter().all(|f| f.find(line).is_some())
            && self
                .identity
                .as_ref()
                .is_none_or(|n| contains_ignore_ascii_case(line, n))
    }
}

/// Whether `hay` contains `needle` (already lowercase), ASCII case-insensitively.
fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    let upper = first.to_ascii_uppercase();
    let last_start = hay.len() - needle.len();
    // Candidates by the first byte in either case (memchr2 is vectorised), then compare.
    memchr::memchr2_iter(first, upper, hay)
        .take_while(|&i| i <= last_start)
        .any(|i| {
            hay.get(i..i + needle.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(needle))
        })
}

/// Whether `e` satisfies every filter of `q` (the exact test after the raw pre-filter).
pub(crate) fn matches(q: &Query, e: &Entry) -> bool {
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    q.from.is_none_or(|f| e.activity_date_time >= f)
        && q.to.is_none_or(|t| e.activity_date_time <= t)
        && q.status
            .is_none_or(|s| e.provisioning_status_info.status == s)
        && q.action.is_none_or(|a| e.provisioning_action == a)
        && eq(&q.job, &e.job_id)
        && eq(&q.cycle_id, &e.cycle_id)
        && eq(&q.change_id, &e.change_id)
        && q.id.as_deref().is_none_or(|p| e.id.starts_with(p))
        && q.identity.as_deref().is_none_or(|t| {
            let t = t.to_ascii_lowercase();
            [
                &e.source_identity.id,
                &e.source_identity.display_name,
                &e.target_identity.id,
                &e.target_identity.display_name,
            ]
            .iter()
            .any(|v| contains_ignore_ascii_case(v.as_bytes(), t.as_bytes()))
        })
}

/// Run `q` over the logs under `state_dir`: the matching entries, newest first.
pub fn query(state_dir: &Path, q: &Query) -> Result<Found, LogError> {
    let mut segs = segments(state_dir, q.job.as_deref())?;
    // Only segments whose hour overlaps [from, to].
    segs.retain(|s| {
        let end = s.hour + chrono::Duration::hours(1);
        q.from.is_none_or(|f| end > f) && q.to.is_none_or(|t| s.hour <= t)
    });
    segs.reverse();
    let needles = Needles::of(q);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8));
    let mut found = Found::default();
    // Newest segments first, `threads` at a time: once `limit` entries are in hand, older
    // segments (whose hours all end before the hour of any entry found) cannot displace them.
    for batch in segs.chunks(threads) {
        let results = read_batch(batch, q, &needles)?;
        for (entries, skipped) in results {
            found.entries.extend(entries);
            found.skipped_lines += skipped;
        }
        if q.limit.is_some_and(|l| found.entries.len() >= l) {
            break;
        }
    }
    found.entries.sort_by(|a, b| {
        b.activity_date_time
            .cmp(&a.activity_date_time)
            .then_with(|| b.id.cmp(&a.id))
    });
    if let Some(l) = q.limit {
        found.entries.truncate(l);
    }
    Ok(found)
}

type SegmentResult = (Vec<Entry>, usize);

/// Read and filter several segments at once, one thread each.
fn read_batch(
    batch: &[Segment],
    q: &Query,
    needles: &Needles,
) -> Result<Vec<SegmentResult>, LogError> {
    if batch.len() == 1 {
        return batch.iter().map(|s| read_segment(s, q, needles)).collect();
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = batch
            .iter()
            .map(|s| {
                let w = std::thread::Builder::new()
                    .name("provisiond-logs".into())
                    .spawn_scoped(scope, move || read_segment(s, q, needles));
                (s, w)
            })
            .collect();
        workers
            .into_iter()
            .map(|(s, w)| match w.map(|h| h.join()) {
                Ok(Ok(r)) => r,
                // No thread could be started (or one failed): read that segment here.
                _ => read_segment(s, q, needles),
            })
            .collect()
    })
}

/// The matching entries of one segment, newest first (lines are appended in time order),
/// and the count of lines that did not parse. With a raw needle, only the lines it occurs in
/// are looked at (a vectorised search over the whole file, backwards); without one, every
/// line from the end. Either way it stops once `limit` entries are found.
fn read_segment(s: &Segment, q: &Query, needles: &Needles) -> Result<SegmentResult, LogError> {
    let bytes = match std::fs::read(&s.path) {
        Ok(b) => b,
        // Deleted by retention between listing and reading.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(source) => {
            return Err(LogError::Io {
                path: s.path.clone(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    let mut skipped = 0;
    let limit = q.limit.unwrap_or(usize::MAX);
    // Whether to go on: false once `limit` entries are in hand.
    let mut take = |line: &[u8]| -> bool {
        if line.is_empty() || !needles.pass(line) {
            return true;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) if matches(q, &e) => out.push(e),
            Ok(_) => {}
            // A torn line (a crash mid-write) or damage: skipped, the rest is read.
            Err(_) => skipped += 1,
        }
        out.len() < limit
    };
    match &needles.rare {
        Some(finder) => {
            // Each hit's line, once, from the end of the file.
            let mut seen_start = usize::MAX;
            for pos in finder.rfind_iter(&bytes) {
                let start = memchr::memrchr(b'\n', bytes.get(..pos).unwrap_or_default())
                    .map_or(0, |i| i + 1);
                if start == seen_start {
                    continue;
                }
                seen_start = start;
                let rest = bytes.get(pos..).unwrap_or_default();
                let end = memchr::memchr(b'\n', rest).map_or(bytes.len(), |i| pos + i);
                if !take(bytes.get(start..end).unwrap_or_default()) {
                    break;
                }
            }
        }
        None => {
            let mut end = bytes.len();
            let mut go_on = true;
            for nl in memchr::memrchr_iter(b'\n', &bytes) {
                go_on = take(bytes.get(nl + 1..end).unwrap_or_default());
                end = nl;
                if !go_on {
                    break;
                }
            }
            if go_on {
                take(bytes.get(..end).unwrap_or_default());
            }
        }
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_search() {
        assert!(contains_ignore_ascii_case(b"xx Alice yy", b"alice"));
        assert!(contains_ignore_ascii_case(b"ALICE", b"alice"));
        assert!(!contains_ignore_ascii_case(b"alic", b"alice"));
        assert!(contains_ignore_ascii_case(b"anything", b""));
    }

    #[test]
    fn needles_use_json_escaping() {
        assert_eq!(json_inner("a\"b\\c"), "a\\\"b\\\\c");
    }
}
