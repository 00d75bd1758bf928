//! Reading the provisioning logs back: `provisiond logs`.
//!
//! A day of a busy job is a million entries (about two gigabytes), so a query is designed
//! not to parse what it does not return: segments are chosen by the hour in their names and
//! scanned in parallel (one worker per core, newest first), each in chunks from its end into
//! reused buffers; within a chunk, lines are picked by a raw needle (JSON text every matching
//! entry's line must contain, or the identity text in a lowercased copy), a picked line is
//! parsed only into the few fields the filters need (borrowed), and only the newest `limit`
//! matches are read again and parsed in full. Workers stop taking segments once `limit`
//! matches are certain.

use super::entry::{Entry, ProvisioningAction, Status};
use super::store::{segments, LogError, Segment};
use chrono::{DateTime, Utc};
use memchr::memmem;
use serde::Deserialize;
use std::borrow::Cow;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// The same, searched over a lowercased copy of a chunk when no exact needle is set.
    identity_finder: Option<memmem::FinderRev<'static>>,
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
            identity_finder: q.identity.as_ref().filter(|t| !t.is_empty()).map(|t| {
                memmem::FinderRev::new(json_inner(t).to_ascii_lowercase().as_bytes()).into_owned()
            }),
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

/// The fields a filter looks at, borrowed from the line: what each candidate line is parsed
/// into. Steps and modified properties (most of an entry's bytes) are skipped unparsed into
/// values; the full [`Entry`] is parsed only for the entries returned.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    activity_date_time: DateTime<Utc>,
    #[serde(borrow)]
    change_id: Cow<'a, str>,
    #[serde(borrow)]
    cycle_id: Cow<'a, str>,
    #[serde(borrow)]
    job_id: Cow<'a, str>,
    provisioning_action: ProvisioningAction,
    provisioning_status_info: ProbeStatus,
    #[serde(borrow)]
    source_identity: ProbeIdentity<'a>,
    #[serde(borrow)]
    target_identity: ProbeIdentity<'a>,
}

#[derive(Deserialize)]
struct ProbeStatus {
    status: Status,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProbeIdentity<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    display_name: Cow<'a, str>,
}

/// Whether the probed line satisfies every filter of `q` (the exact test after the raw
/// pre-filter).
fn probe_matches(q: &Query, p: &Probe<'_>) -> bool {
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    q.from.is_none_or(|f| p.activity_date_time >= f)
        && q.to.is_none_or(|t| p.activity_date_time <= t)
        && q.status
            .is_none_or(|s| p.provisioning_status_info.status == s)
        && q.action.is_none_or(|a| p.provisioning_action == a)
        && eq(&q.job, &p.job_id)
        && eq(&q.cycle_id, &p.cycle_id)
        && eq(&q.change_id, &p.change_id)
        && q.id.as_deref().is_none_or(|pre| p.id.starts_with(pre))
        && q.identity.as_deref().is_none_or(|t| {
            let t = t.to_ascii_lowercase();
            [
                &p.source_identity.id,
                &p.source_identity.display_name,
                &p.target_identity.id,
                &p.target_identity.display_name,
            ]
            .iter()
            .any(|v| contains_ignore_ascii_case(v.as_bytes(), t.as_bytes()))
        })
}

/// A matching line, located: enough to sort and cut to `limit` before parsing it in full.
struct Hit {
    at: DateTime<Utc>,
    id: String,
    /// Index of its segment in the query's list.
    segment: usize,
    offset: u64,
    len: usize,
}

/// Run `q` over the logs under `state_dir`: the matching entries, newest first.
///
/// Segments are scanned in parallel (one worker per available core), newest first; each
/// worker takes the next segment until `limit` matches are in hand (a segment not taken is
/// older than every segment taken, so it cannot hold a newer match). Matching lines are only
/// located; the newest `limit` are then read again and parsed in full.
pub fn query(state_dir: &Path, q: &Query) -> Result<Found, LogError> {
    let mut segs = segments(state_dir, q.job.as_deref())?;
    // Only segments whose hour overlaps [from, to].
    segs.retain(|s| {
        let end = s.hour + chrono::Duration::hours(1);
        q.from.is_none_or(|f| end > f) && q.to.is_none_or(|t| s.hour <= t)
    });
    segs.reverse();
    let needles = Needles::of(q);
    let threads_max = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = threads_max.clamp(1, segs.len().max(1));
    let next = AtomicUsize::new(0);
    let total = AtomicUsize::new(0);
    let limit = q.limit.unwrap_or(usize::MAX);
    let work = || -> Result<(Vec<Hit>, usize), LogError> {
        let mut hits = Vec::new();
        let mut skipped = 0;
        let mut buf = Scratch::new(CHUNK);
        while total.load(Ordering::Relaxed) < limit {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(s) = segs.get(i) else { break };
            let before = hits.len();
            skipped += scan_segment(s, i, q, &needles, &mut buf, &mut hits)?;
            total.fetch_add(hits.len() - before, Ordering::Relaxed);
        }
        Ok((hits, skipped))
    };
    let results: Vec<Result<(Vec<Hit>, usize), LogError>> = if threads <= 1 {
        vec![work()]
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .name("provisiond-logs".into())
                        .spawn_scoped(scope, work)
                        .ok()
                })
                .collect();
            let mut out: Vec<_> = workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(LogError::Io {
                            path: state_dir.to_path_buf(),
                            source: std::io::Error::other("a log reader thread failed"),
                        })
                    })
                })
                .collect();
            // No thread could be started: read here.
            if out.is_empty() {
                out.push(work());
            }
            out
        })
    };
    let mut hits = Vec::new();
    let mut found = Found::default();
    for r in results {
        let (h, skipped) = r?;
        hits.extend(h);
        found.skipped_lines += skipped;
    }
    hits.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
    hits.truncate(limit);
    found.entries = read_hits(
        &segs,
        &hits,
        threads_max,
        PARSE_PER_THREAD,
        &mut found.skipped_lines,
    )?;
    Ok(found)
}

/// Parsing entries in full is the costly part of a large answer: below this many per thread,
/// one thread does it.
const PARSE_PER_THREAD: usize = 2048;

/// Parse the chosen lines in full, reading each again from its segment (in file order, so
/// the reads are sequential; in parallel when there are many), and return them in the order
/// of `hits`.
fn read_hits(
    segs: &[Segment],
    hits: &[Hit],
    threads: usize,
    per_thread: usize,
    skipped: &mut usize,
) -> Result<Vec<Entry>, LogError> {
    let mut order: Vec<usize> = (0..hits.len()).collect();
    order.sort_by_key(|&i| hits.get(i).map(|h| (h.segment, h.offset)));
    let parts = threads.min(order.len() / per_thread.max(1)).max(1);
    let per = order.len().div_ceil(parts).max(1);
    let results: Vec<Result<Parsed, LogError>> = if parts == 1 {
        vec![parse_lines(segs, hits, &order)]
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = order
                .chunks(per)
                .map(|part| {
                    let w = std::thread::Builder::new()
                        .name("provisiond-logs".into())
                        .spawn_scoped(scope, move || parse_lines(segs, hits, part));
                    (part, w)
                })
                .collect();
            workers
                .into_iter()
                .map(|(part, w)| match w.map(|h| h.join()) {
                    Ok(Ok(r)) => r,
                    // No thread could be started (or one failed): parse that part here.
                    _ => parse_lines(segs, hits, part),
                })
                .collect()
        })
    };
    let mut parsed: Vec<Option<Entry>> = (0..hits.len()).map(|_| None).collect();
    for r in results {
        let (entries, bad) = r?;
        *skipped += bad;
        for (i, e) in entries {
            if let Some(slot) = parsed.get_mut(i) {
                *slot = Some(e);
            }
        }
    }
    Ok(parsed.into_iter().flatten().collect())
}

/// Entries parsed in full, each with its index in the hits, and the count of lines that did
/// not parse.
type Parsed = (Vec<(usize, Entry)>, usize);

/// The entries of `hits[i]` for each `i` of `which` (in file order), with their index, and
/// the count of lines that did not parse.
fn parse_lines(segs: &[Segment], hits: &[Hit], which: &[usize]) -> Result<Parsed, LogError> {
    let mut out = Vec::with_capacity(which.len());
    let mut skipped = 0;
    let mut open: Option<(usize, std::fs::File)> = None;
    let mut line = Vec::new();
    for &i in which {
        let Some(h) = hits.get(i) else { continue };
        if open.as_ref().map(|o| o.0) != Some(h.segment) {
            let Some(s) = segs.get(h.segment) else {
                continue;
            };
            match std::fs::File::open(&s.path) {
                Ok(f) => open = Some((h.segment, f)),
                // Deleted by retention since it was scanned.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LogError::Io {
                        path: s.path.clone(),
                        source,
                    })
                }
            }
        }
        let Some((_, f)) = open.as_ref() else {
            continue;
        };
        line.clear();
        line.resize(h.len, 0);
        if f.read_exact_at(&mut line, h.offset).is_err() {
            skipped += 1;
            continue;
        }
        // The line passed `probe_matches` when it was found, and segments are append-only.
        match serde_json::from_slice::<Entry>(&line) {
            Ok(e) => out.push((i, e)),
            Err(_) => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// How much of a segment is read at a time (from its end backwards): the buffers are reused
/// across chunks and segments, so a scan costs no page faults per gigabyte.
const CHUNK: u64 = 4 << 20;

/// A worker's reusable buffers.
struct Scratch {
    /// Bytes read at a time: [`CHUNK`] (tests use tiny chunks to cross every boundary).
    chunk: u64,
    buf: Vec<u8>,
    /// The ASCII-lowercased copy of `buf`, for the identity search.
    lower: Vec<u8>,
    /// The start of the line the previous (later) chunk began inside of.
    pending: Vec<u8>,
}

impl Scratch {
    fn new(chunk: u64) -> Scratch {
        Scratch {
            chunk: chunk.max(1),
            buf: Vec::new(),
            lower: Vec::new(),
            pending: Vec::new(),
        }
    }
}

/// Locate the matching lines of segment `index`, newest first (lines are appended in time
/// order), reading it in chunks from the end; stops once `limit` are found. Returns the count
/// of candidate lines that did not parse (a line torn by a crash, damage).
fn scan_segment(
    s: &Segment,
    index: usize,
    q: &Query,
    needles: &Needles,
    scratch: &mut Scratch,
    hits: &mut Vec<Hit>,
) -> Result<usize, LogError> {
    let io = |source| LogError::Io {
        path: s.path.clone(),
        source,
    };
    let file = match std::fs::File::open(&s.path) {
        Ok(f) => f,
        // Deleted by retention between listing and reading.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    let limit = q.limit.unwrap_or(usize::MAX);
    let mut found = 0usize;
    let mut skipped = 0usize;
    let Scratch {
        chunk,
        buf,
        lower,
        pending,
    } = scratch;
    pending.clear();
    let mut hi = len;
    loop {
        let lo = hi.saturating_sub(*chunk);
        let n = usize::try_from(hi - lo).unwrap_or(0);
        buf.clear();
        buf.resize(n, 0);
        file.read_exact_at(buf, lo).map_err(io)?;
        buf.extend_from_slice(pending);
        // The first line of the chunk may begin in an earlier chunk: it waits for it.
        let from = if lo == 0 {
            0
        } else {
            match memchr::memchr(b'\n', buf) {
                Some(i) => i + 1,
                None => buf.len(),
            }
        };
        let region = buf.get(from..).unwrap_or_default();
        let base = lo + from as u64;
        let mut take = |start: usize, line: &[u8]| -> bool {
            if line.is_empty() || !needles.pass(line) {
                return true;
            }
            match serde_json::from_slice::<Probe<'_>>(line) {
                Ok(p) if probe_matches(q, &p) => {
                    hits.push(Hit {
                        at: p.activity_date_time,
                        id: p.id.into_owned(),
                        segment: index,
                        offset: base + start as u64,
                        len: line.len(),
                    });
                    found += 1;
                }
                Ok(_) => {}
                Err(_) => skipped += 1,
            }
            found < limit
        };
        let go_on = if let Some(finder) = &needles.rare {
            each_hit_line(region, finder.rfind_iter(region), &mut take)
        } else if let Some(ident) = &needles.identity_finder {
            lower.clear();
            lower.extend_from_slice(region);
            lower.make_ascii_lowercase();
            each_hit_line(region, ident.rfind_iter(lower), &mut take)
        } else {
            each_line(region, &mut take)
        };
        if !go_on || lo == 0 {
            break;
        }
        let head = buf.get(..from).unwrap_or_default();
        pending.clear();
        pending.extend_from_slice(head);
        hi = lo;
    }
    Ok(skipped)
}

/// Call `take` on each line of `bytes` (whole lines) from the last; false once it says stop.
fn each_line(bytes: &[u8], take: &mut impl FnMut(usize, &[u8]) -> bool) -> bool {
    let mut end = bytes.len();
    for nl in memchr::memrchr_iter(b'\n', bytes) {
        if !take(nl + 1, bytes.get(nl + 1..end).unwrap_or_default()) {
            return false;
        }
        end = nl;
    }
    take(0, bytes.get(..end).unwrap_or_default())
}

/// Call `take` once on each line of `bytes` holding one of `positions` (descending).
fn each_hit_line(
    bytes: &[u8],
    positions: impl Iterator<Item = usize>,
    take: &mut impl FnMut(usize, &[u8]) -> bool,
) -> bool {
    let mut seen_start = usize::MAX;
    for pos in positions {
        let start =
            memchr::memrchr(b'\n', bytes.get(..pos).unwrap_or_default()).map_or(0, |i| i + 1);
        if start == seen_start {
            continue;
        }
        seen_start = start;
        let rest = bytes.get(pos..).unwrap_or_default();
        let end = memchr::memchr(b'\n', rest).map_or(bytes.len(), |i| pos + i);
        if !take(start, bytes.get(start..end).unwrap_or_default()) {
            return false;
        }
    }
    true
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

    /// Every chunk size finds the same lines at the same offsets as one chunk for the whole
    /// segment: lines cut by a chunk boundary are joined, none is lost or seen twice.
    #[test]
    fn chunked_scan_is_independent_of_the_chunk_size() {
        use crate::provlog::store::{segments, Writer};
        use chrono::TimeZone;
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), "robin").unwrap();
        let t0 = Utc
            .with_ymd_and_hms(2026, 12, 5, 10, 0, 0)
            .single()
            .unwrap();
        for i in 0..60 {
            let status = if i % 7 == 0 {
                Status::Failure
            } else {
                Status::Success
            };
            let mut e = crate::provlog::store::tests::entry(
                &format!("e{i:03}"),
                t0 + chrono::Duration::seconds(i),
                ProvisioningAction::Create,
                status,
            );
            e.source_identity.display_name = format!("Alice Liddell {i}");
            w.append(&e).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        // A torn line in the middle (a crash while writing), then more entries.
        let seg = segments(dir.path(), Some("robin")).unwrap().remove(0);
        let mut bytes = std::fs::read(&seg.path).unwrap();
        bytes.extend_from_slice(b"{\"id\":\"torn\",\"activity\n");
        std::fs::write(&seg.path, &bytes).unwrap();
        let queries = [
            Query::default(),
            Query {
                status: Some(Status::Failure),
                ..Query::default()
            },
            Query {
                identity: Some("LIDDELL 4".into()),
                ..Query::default()
            },
            Query {
                limit: Some(5),
                ..Query::default()
            },
        ];
        for q in &queries {
            let needles = Needles::of(q);
            let scan = |chunk: u64| {
                let mut hits = Vec::new();
                let skipped =
                    scan_segment(&seg, 0, q, &needles, &mut Scratch::new(chunk), &mut hits)
                        .unwrap();
                let ids: Vec<(String, u64, usize)> =
                    hits.into_iter().map(|h| (h.id, h.offset, h.len)).collect();
                (ids, skipped)
            };
            let whole = scan(1 << 30);
            assert!(!whole.0.is_empty(), "{q:?}");
            for chunk in [1, 2, 7, 64, 300, 1000] {
                assert_eq!(scan(chunk), whole, "chunk {chunk}, {q:?}");
            }
            // The located bytes are the entry's line.
            for (id, offset, len) in &whole.0 {
                let line = bytes.get(*offset as usize..*offset as usize + len).unwrap();
                let e: Entry = serde_json::from_slice(line).unwrap();
                assert_eq!(&e.id, id);
            }
        }
        // Parsed in full on several threads or one: the same entries in the same order.
        let q = Query::default();
        let segs = vec![seg.clone()];
        let mut hits = Vec::new();
        scan_segment(
            &seg,
            0,
            &q,
            &Needles::of(&q),
            &mut Scratch::new(CHUNK),
            &mut hits,
        )
        .unwrap();
        let one = read_hits(&segs, &hits, 1, 1, &mut 0).unwrap();
        let three = read_hits(&segs, &hits, 3, 1, &mut 0).unwrap();
        assert_eq!(one.len(), 60);
        assert_eq!(one, three);
        assert_eq!(one.first().map(|e| e.id.as_str()), Some("e059"));
        let found = query(
            dir.path(),
            &Query {
                identity: Some("liddell 4".into()),
                ..Query::default()
            },
        )
        .unwrap();
        let ids: Vec<_> = found.entries.iter().map(|e| e.id.as_str()).collect();
        // "Liddell 4" and "Liddell 40".."Liddell 49", newest first.
        assert_eq!(ids.len(), 11, "{ids:?}");
        assert_eq!(ids.first(), Some(&"e049"));
        assert_eq!(ids.last(), Some(&"e004"));
    }

    #[test]
    fn needles_use_json_escaping() {
        assert_eq!(json_inner("a\"b\\c"), "a\\\"b\\\\c");
    }
}
