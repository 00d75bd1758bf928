//! Where provisioning-log entries live: `<state_dir>/logs/<job>/<yyyy-mm-ddTHH>.jsonl`, one
//! JSON entry per line, one segment per hour of `activityDateTime` (UTC).
//!
//! Append-only: a line is never rewritten, so `provisiond logs` reads the files directly while
//! the daemon writes. A `kill -9` can tear only the last line being written; the reader skips
//! a line that does not parse, and the next writer starts on a fresh line, so earlier
//! entries are never lost. Hourly segments let a query skip whole files by time and let
//! retention drop old entries by deleting files.

use super::entry::Entry;
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The directory under `state_dir` that holds every job's logs.
pub(crate) const LOGS_DIR: &str = "logs";

/// The file name suffix of a segment.
const SEGMENT_EXT: &str = ".jsonl";

/// A provisioning-log file could not be written, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("provisioning log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("job name {0:?} cannot name a log directory")]
    BadJob(String),
    #[error("provisioning log {path}: cannot encode an entry: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Retention of the provisioning logs: the top-level `log_retention` and `log_max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// Segments whose hour ended longer ago than this are deleted (Entra keeps 30 days).
    pub retention: std::time::Duration,
    /// Total size of all jobs' segments; the oldest are deleted first beyond it.
    pub max_size: u64,
}

/// `log_retention` when the config says nothing.
pub(crate) const DEFAULT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(30 * 86400);
/// `log_max_size` when the config says nothing: 2 GiB.
pub(crate) const DEFAULT_MAX_SIZE: u64 = 2 << 30;

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            retention: DEFAULT_RETENTION,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// Where a job's logs go and how long they stay: what a cycle's writer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogTarget {
    pub state_dir: PathBuf,
    pub settings: LogSettings,
}

/// A size as admins write it: `2GiB`, `500MB`, `64KiB`, `1000` (bytes).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t.get(..digits)?.parse().ok()?;
    let unit: u64 = match t.get(digits..)?.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit).filter(|&v| v > 0)
}

/// The directory of one job's logs; a name that could leave `logs/` is refused.
pub(crate) fn job_dir(state_dir: &Path, job: &str) -> Result<PathBuf, LogError> {
    if job.is_empty()
        || job == "."
        || job == ".."
        || job.contains(['/', '\\', '\0'])
        || job.starts_with('.')
    {
        return Err(LogError::BadJob(job.to_string()));
    }
    Ok(state_dir.join(LOGS_DIR).join(job))
}

/// The segment file name of the hour holding `t`.
pub(crate) fn segment_name(t: DateTime<Utc>) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}{SEGMENT_EXT}",
        t.year(),
        t.month(),
        t.day(),
        t.hour()
    )
}

/// The start of the hour a segment file holds, from its name; `None` for other files.
pub(crate) fn segment_hour(name: &str) -> Option<DateTime<Utc>> {
    let stem = name.strip_suffix(SEGMENT_EXT)?;
    let naive =
        chrono::NaiveDateTime::parse_from_str(&format!("{stem}:00:00"), "%Y-%m-%dT%H:%M:%S")
            .ok()?;
    Some(Utc.from_utc_datetime(&naive))
}

/// One segment file of a job.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub job: String,
    pub path: PathBuf,
    /// The start of its hour.
    pub hour: DateTime<Utc>,
    pub size: u64,
}

/// The segments of `job` (every job when `None`), oldest first. A missing logs directory is
/// no segment (nothing was logged yet).
pub(crate) fn segments(state_dir: &Path, job: Option<&str>) -> Result<Vec<Segment>, LogError> {
    let root = state_dir.join(LOGS_DIR);
    let jobs: Vec<String> = match job {
        Some(j) => vec![j.to_string()],
        None => match std::fs::read_dir(&root) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(io(&root)(e)),
        },
    };
    let mut out = Vec::new();
    for j in jobs {
        let dir = job_dir(state_dir, &j)?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name();
            let Some(hour) = name.to_str().and_then(segment_hour) else {
                continue;
            };
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(Segment {
                job: j.clone(),
                path: e.path(),
                hour,
                size,
            });
        }
    }
    out.sort_by(|a, b| a.hour.cmp(&b.hour).then_with(|| a.job.cmp(&b.job)));
    Ok(out)
}

fn make_dir(path: &Path) -> Result<(), LogError> {
    // 0700 like the rest of state_dir: identities and attribute values are personal data.
    crate::util::create_private_dir_all(path).map_err(io(path))
}

/// Appends one job's entries. Buffered: [`Writer::sync`] makes them durable (once per
/// cycle, not per entry, so writing 100k entries costs the cycle little).
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    /// The open segment and the hour it holds (hours since the epoch: compared per entry
    /// without formatting a file name).
    current: Option<(i64, PathBuf, BufWriter<File>)>,
    /// The line being encoded, reused: one allocation per writer, not per entry.
    line: Vec<u8>,
    /// Bytes appended since the last [`Writer::sync`].
    unsynced: u64,
}

/// The hour (since the epoch) a segment of `t` holds.
fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600)
}

impl Writer {
    /// The writer of `job`'s logs under `state_dir` (directories made 0700 when missing).
    pub fn open(state_dir: &Path, job: &str) -> Result<Writer, LogError> {
        let dir = job_dir(state_dir, job)?;
        make_dir(&dir)?;
        Ok(Writer {
            dir,
            current: None,
            line: Vec::new(),
            unsynced: 0,
        })
    }

    /// Append `entry` to the segment of its hour, and emit it as a tracing event (target
    /// `provisiond::provlog`) for journald and log shippers.
    pub fn append(&mut self, entry: &Entry) -> Result<(), LogError> {
        trace_entry(entry);
        let hour = hour_of(entry.activity_date_time);
        if self.current.as_ref().map(|c| c.0) != Some(hour) {
            // The segment left behind is synced as it is closed: `sync` reaches the open one
            // only, so a cycle across the hour would otherwise commit with the last hour's
            // tail written but not durable.
            if self.current.is_some() {
                self.sync()?;
            }
            let path = self.dir.join(segment_name(entry.activity_date_time));
            let file = open_segment(&path)?;
            self.current = Some((hour, path, BufWriter::with_capacity(1 << 16, file)));
        }
        let Some((_, path, w)) = self.current.as_mut() else {
            return Ok(());
        };
        // Encoded whole before any byte is written: a failed encoding leaves no partial line.
        self.line.clear();
        serde_json::to_writer(&mut self.line, entry).map_err(|source| LogError::Encode {
            path: path.clone(),
            source,
        })?;
        self.line.push(b'\n');
        w.write_all(&self.line).map_err(io(path))?;
        self.unsynced += self.line.len() as u64;
        Ok(())
    }

    /// Bytes appended since the last [`Writer::sync`]: a caller that syncs every few
    /// megabytes keeps the disk writing while it appends, and the sync that ends a cycle
    /// waits for the last few only.
    pub fn unsynced(&self) -> u64 {
        self.unsynced
    }

    fn flush(&mut self) -> Result<(), LogError> {
        if let Some((_, path, w)) = self.current.as_mut() {
            w.flush().map_err(io(path))?;
        }
        Ok(())
    }

    /// Write out the buffer and fsync the open segment (and the directory, for a new file):
    /// everything appended so far survives a crash.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.flush()?;
        if let Some((_, path, w)) = self.current.as_mut() {
            w.get_ref().sync_data().map_err(io(path))?;
        }
        // A segment created this cycle is durable only once its directory entry is.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.unsynced = 0;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Best effort: a caller that wants durability calls `sync`.
        let _ = self.flush();
    }
}

/// Open a segment for appending (0600); when its last line was torn by a crash, start on a
/// fresh line so the next entry is not glued to the torn one.
fn open_segment(path: &Path) -> Result<File, LogError> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(io(path))?;
        file.read_exact(&mut last).map_err(io(path))?;
        if last[0] != b'\n' {
            tracing::warn!(path = %path.display(), "provisioning log segment ends with a torn line (a crash while writing): it is skipped on read");
            file.write_all(b"\n").map_err(io(path))?;
        }
    }
    Ok(file)
}

/// The entry as a tracing event, with the fields a log shipper filters on. Also for entries
/// no longer written after a write error: the journal still names every object exported.
pub(crate) fn trace_entry(e: &Entry) {
    let info = &e.provisioning_status_info;
    let error_code = info
        .error_information
        .as_ref()
        .map(|i| i.error_code.as_str())
        .unwrap_or("");
    let object = if e.source_identity.display_name.is_empty() {
        e.source_identity.id.as_str()
    } else {
        e.source_identity.display_name.as_str()
    };
    // Plain `&str` fields, not `%` (Display): a JSON log writes them straight in, where a
    // Display field is first formatted into a `String` of its own, 8 of them per entry.
    tracing::info!(
        target: "provisiond::provlog",
        job = e.job_id.as_str(),
        cycle_id = e.cycle_id.as_str(),
        change_id = e.change_id.as_str(),
        action = e.provisioning_action.as_str(),
        status = info.status.as_str(),
        object,
        object_type = e.source_identity.identity_type.as_str(),
        source_id = e.source_identity.id.as_str(),
        target_id = e.target_identity.id.as_str(),
        error_code,
        log_id = e.id.as_str(),
        "provisioning log entry"
    );
}

/// What [`prune`] deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
}

/// Retention, after each cycle: delete segments older than `log_retention`, then the oldest
/// segments (of any job) while all of them together exceed `log_max_size`. The segment of the
/// current hour is never deleted (a writer may hold it open).
pub fn prune(
    state_dir: &Path,
    settings: &LogSettings,
    now: DateTime<Utc>,
) -> Result<Pruned, LogError> {
    let segs = segments(state_dir, None)?;
    let retention = chrono::Duration::from_std(settings.retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = now
        .checked_sub_signed(retention)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let this_hour = segment_hour(&segment_name(now)).unwrap_or(now);
    let mut total: u64 = segs.iter().map(|s| s.size).sum();
    let mut pruned = Pruned::default();
    for s in &segs {
        let ended = s.hour + chrono::Duration::hours(1);
        let expired = ended <= cutoff;
        let too_big = total > settings.max_size;
        if s.hour >= this_hour || !(expired || too_big) {
            continue;
        }
        match std::fs::remove_file(&s.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&s.path)(e)),
        }
        total = total.saturating_sub(s.size);
        pruned.files += 1;
        pruned.bytes += s.size;
        tracing::debug!(job = %s.job, path = %s.path.display(), expired, "provisioning log segment deleted");
    }
    if pruned.files > 0 {
        tracing::info!(
            files = pruned.files,
            bytes = pruned.bytes,
            "provisioning logs pruned (log_retention, log_max_size)"
        );
    }
    Ok(pruned)
}

#[cfg(test)]
#[path = "store/tests.rs"]
pub(crate) mod tests;
