//! `provisiond logs`: the provisioning logs, read straight from `<state_dir>/logs` (the
//! segments are append-only, so this works while the daemon writes; no secret, no store,
//! nothing created).

use super::out::{out, outln};
use super::Failure;
use crate::config::Config;
use crate::provlog::{Entry, ProvisioningAction, Query, Status};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::path::PathBuf;

/// Entries a table shows when `--limit` says nothing; `--json` and `--csv` give all.
const TABLE_LIMIT: usize = 100;

/// `provisiond logs` as parsed.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LogsArgs {
    #[command(subcommand)]
    pub show: Option<LogsCommand>,
    /// Only this job's entries (default: every job).
    #[arg(long)]
    pub job: Option<String>,
    /// Only entries of this last period, e.g. 24h, 7d, 90m.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub since: Option<String>,
    /// Only entries at or after this time (RFC 3339, or `2026-12-05`, `2026-12-05T10:00`; UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// Only entries at or before this time (same forms as --from).
    #[arg(long)]
    pub to: Option<String>,
    /// success, failure, skipped or warning.
    #[arg(long)]
    pub status: Option<String>,
    /// create, update, delete, disable, stagedDelete or other.
    #[arg(long)]
    pub action: Option<String>,
    /// Part of the source or target identity's id or name (case-insensitive).
    #[arg(long)]
    pub identity: Option<String>,
    /// Only this cycle's entries (`sync --json`'s cycle_id).
    #[arg(long)]
    pub cycle: Option<String>,
    /// Only the entry with this change id.
    #[arg(long)]
    pub change: Option<String>,
    /// At most this many entries, the newest (default: 100 for the table, all for --json
    /// and --csv).
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON entry per line (Graph's provisioningObjectSummary), newest first.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Write Entra's three CSV files (entries, steps, modified properties, joined by change
    /// id) into --output.
    #[arg(long)]
    pub csv: bool,
    /// The directory for --csv (default: the current directory).
    #[arg(long, requires = "csv")]
    pub output: Option<PathBuf>,
}

/// `provisiond logs show ID`.
#[derive(Debug, clap::Subcommand)]
pub enum LogsCommand {
    /// Print one entry with its steps and modified properties.
    Show {
        /// The entry's id (a unique prefix is enough: the table shows the first 8 characters).
        id: String,
        /// Only look in this job's entries.
        #[arg(long)]
        job: Option<String>,
        /// Print the entry as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A time given on the command line: RFC 3339, a date, or a date and time without zone (UTC).
fn parse_time(s: &str, end_of_day: bool) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = if end_of_day {
            d.and_hms_nano_opt(23, 59, 59, 999_999_999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = t {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    Err(Failure::usage(format!(
        "{s:?} is not a time (examples: 2026-12-05T10:00:00Z, 2026-12-05T10:00, 2026-12-05)"
    )))
}

fn parse_status(s: &str) -> Result<Status, Failure> {
    [
        Status::Success,
        Status::Failure,
        Status::Skipped,
        Status::Warning,
    ]
    .into_iter()
    .find(|v| v.as_str().eq_ignore_ascii_case(s))
    .ok_or_else(|| {
        Failure::usage(format!(
            "--status {s:?}: use success, failure, skipped or warning"
        ))
    })
}

fn parse_action(s: &str) -> Result<ProvisioningAction, Failure> {
    use ProvisioningAction as A;
    [
        A::Create,
        A::Update,
        A::Delete,
        A::Disable,
        A::StagedDelete,
        A::Other,
    ]
    .into_iter()
    .find(|v| v.as_str().eq_ignore_ascii_case(s))
    .ok_or_else(|| {
        Failure::usage(format!(
            "--action {s:?}: use create, update, delete, disable, stagedDelete or other"
        ))
    })
}

/// The query the flags describe.
fn query_of(a: &LogsArgs, now: DateTime<Utc>) -> Result<Query, Failure> {
    let from = match (&a.since, &a.from) {
        (Some(s), _) => {
            let d = crate::util::duration::parse_duration(s)
                .map_err(|e| Failure::usage(format!("--since: {e}")))?;
            let d = chrono::Duration::from_std(d)
                .map_err(|_| Failure::usage(format!("--since {s:?} is too long")))?;
            Some(now - d)
        }
        (None, Some(f)) => Some(parse_time(f, false)?),
        (None, None) => None,
    };
    let to = a.to.as_deref().map(|t| parse_time(t, true)).transpose()?;
    let limit = match a.limit {
        Some(l) => Some(l),
        None if a.json || a.csv => None,
        None => Some(TABLE_LIMIT),
    };
    Ok(Query {
        job: a.job.clone(),
        from,
        to,
        status: a.status.as_deref().map(parse_status).transpose()?,
        action: a.action.as_deref().map(parse_action).transpose()?,
        identity: a.identity.clone(),
        cycle_id: a.cycle.clone(),
        change_id: a.change.clone(),
        id: None,
        limit,
    })
}

/// `provisiond logs …`.
pub(crate) fn logs(config: &Config, args: &LogsArgs) -> Result<i32, Failure> {
    if let Some(LogsCommand::Show { id, job, json }) = &args.show {
        return show(config, id, job.as_deref(), *json);
    }
    if let Some(j) = &args.job {
        super::select(config, Some(j))?;
    }
    let q = query_of(args, Utc::now())?;
    let found =
        crate::provlog::query(&config.state_dir, &q).map_err(|e| Failure::failed(e.to_string()))?;
    warn_skipped(found.skipped_lines);
    if args.csv {
        let dir = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
        let paths = crate::provlog::write_csv(&dir, &found.entries)
            .map_err(|e| Failure::failed(e.to_string()))?;
        outln!(
            "wrote {} entries (newest first) to {}:",
            found.entries.len(),
            dir.display()
        );
        for p in paths {
            outln!("  {}", p.display());
        }
        return Ok(super::exit::OK);
    }
    if args.json {
        for e in &found.entries {
            outln!("{}", serde_json::to_string(e).unwrap_or_default());
        }
        return Ok(super::exit::OK);
    }
    out!("{}", table(&found.entries, q.job.is_none()));
    let more = q.limit.is_some_and(|l| found.entries.len() >= l);
    outln!(
        "{} entries, newest first{}; `provisiond logs show ID` shows one with its steps",
        found.entries.len(),
        if more { " (--limit reached)" } else { "" }
    );
    Ok(super::exit::OK)
}

fn warn_skipped(n: usize) {
    if n > 0 {
        eprintln!("warning: {n} damaged log line(s) skipped (a line torn by a crash is expected)");
    }
}

/// `s` cut to `w` characters (an ellipsis marks the cut), padded to `w`.
fn cell(s: &str, w: usize) -> String {
    let n = s.chars().count();
    let mut c: String = if n > w {
        s.chars()
            .take(w.saturating_sub(1))
            .chain(std::iter::once('…'))
            .collect()
    } else {
        s.to_string()
    };
    // Control characters (a hostile name) would break the table.
    c = c
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect();
    let pad = w.saturating_sub(c.chars().count());
    c.push_str(&" ".repeat(pad));
    c
}

/// The table: fits 100 columns (with the JOB column when several jobs are shown).
pub(crate) fn table(entries: &[Entry], with_job: bool) -> String {
    let ident = if with_job { 20 } else { 31 };
    let mut out = String::new();
    let mut line = |cols: [&str; 7]| {
        let mut l = String::new();
        l.push_str(&cell(cols[0], 19));
        l.push(' ');
        if with_job {
            l.push_str(&cell(cols[1], 10));
            l.push(' ');
        }
        l.push_str(&cell(cols[2], 12));
        l.push(' ');
        l.push_str(&cell(cols[3], 7));
        l.push(' ');
        l.push_str(&cell(cols[4], ident));
        l.push(' ');
        l.push_str(&cell(cols[5], 18));
        l.push(' ');
        l.push_str(&cell(cols[6], 8));
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line([
        "TIME (UTC)",
        "JOB",
        "ACTION",
        "STATUS",
        "IDENTITY",
        "ERROR",
        "ID",
    ]);
    for e in entries {
        let time = e.activity_date_time.format("%Y-%m-%d %H:%M:%S").to_string();
        let who = format!(
            "{} {}",
            e.source_identity.identity_type, e.source_identity.display_name
        );
        let code = e
            .provisioning_status_info
            .error_information
            .as_ref()
            .map_or("", |i| i.error_code.as_str());
        line([
            &time,
            &e.job_id,
            e.provisioning_action.as_str(),
            e.provisioning_status_info.status.as_str(),
            &who,
            code,
            // The first 8 characters: enough for `logs show`.
            &e.id.chars().take(8).collect::<String>(),
        ]);
    }
    out
}

/// `provisiond logs show ID`.
fn show(config: &Config, id: &str, job: Option<&str>, json: bool) -> Result<i32, Failure> {
    if id.is_empty() {
        return Err(Failure::usage("logs show: give an entry id"));
    }
    let q = Query {
        job: job.map(str::to_string),
        id: Some(id.to_string()),
        limit: Some(2),
        ..Query::default()
    };
    let found =
        crate::provlog::query(&config.state_dir, &q).map_err(|e| Failure::failed(e.to_string()))?;
    warn_skipped(found.skipped_lines);
    let e = match found.entries.as_slice() {
        [e] => e,
        [] => return Err(Failure::failed(format!("no provisioning log entry {id:?}"))),
        _ => {
            return Err(Failure::usage(format!(
                "{id:?} names more than one entry: give more of the id"
            )))
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(e).unwrap_or_default());
    } else {
        out!("{}", render(e));
    }
    Ok(super::exit::OK)
}

/// One entry for a reader: its summary, steps and modified properties.
pub(crate) fn render(e: &Entry) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let info = &e.provisioning_status_info;
    let _ = writeln!(s, "Entry        {}", e.id);
    let _ = writeln!(
        s,
        "Date (UTC)   {}",
        e.activity_date_time.format("%Y-%m-%d %H:%M:%S")
    );
    let _ = writeln!(s, "Job          {}", e.job_id);
    let _ = writeln!(s, "Cycle        {}", e.cycle_id);
    let _ = writeln!(s, "Change       {}", e.change_id);
    let _ = writeln!(
        s,
        "Initiated by {} ({})",
        e.initiated_by.initiator_type, e.initiated_by.display_name
    );
    let _ = writeln!(s, "Action       {}", e.provisioning_action.as_str());
    let _ = writeln!(s, "Status       {}", info.status.as_str());
    if let Some(i) = &info.error_information {
        let _ = writeln!(s, "Error        {}: {}", i.error_code, i.reason);
        if let Some(c) = &i.error_category {
            let _ = writeln!(s, "Category     {c}");
        }
        if let Some(d) = &i.additional_details {
            let _ = writeln!(s, "Details      {d}");
        }
        if let Some(r) = &i.recommended_action {
            let _ = writeln!(s, "Recommended  {r}");
        }
    }
    let ident = |i: &crate::provlog::Identity| {
        format!(
            "{} {:?} (id {})",
            i.identity_type,
            i.display_name,
            if i.id.is_empty() { "none" } else { &i.id }
        )
    };
    let _ = writeln!(
        s,
        "Source       {} in {}",
        ident(&e.source_identity),
        e.source_system.display_name
    );
    let _ = writeln!(
        s,
        "Target       {} in {}",
        ident(&e.target_identity),
        e.target_system.display_name
    );
    let _ = writeln!(s, "Duration     {} ms", e.duration_in_milliseconds);
    let _ = writeln!(s, "\nSteps");
    for (n, st) in e.provisioning_steps.iter().enumerate() {
        let ty = st.provisioning_step_type.as_str();
        let _ = writeln!(
            s,
            "  {}. {:<19} {:<8} {}",
            n + 1,
            ty,
            st.status.as_str(),
            st.name
        );
        let _ = writeln!(s, "     {}", st.description);
        for (k, v) in &st.details {
            let _ = writeln!(s, "     {k}: {v}");
        }
    }
    if !e.modified_properties.is_empty() {
        let _ = writeln!(s, "\nModified properties");
        for p in &e.modified_properties {
            let _ = writeln!(
                s,
                "  {}: {} -> {}",
                p.display_name,
                p.old_value.as_deref().unwrap_or("(none)"),
                p.new_value.as_deref().unwrap_or("(none)")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_filters_parse() {
        assert_eq!(
            parse_time("2026-12-05", false).unwrap().to_rfc3339(),
            "2026-12-05T00:00:00+00:00"
        );
        assert!(parse_time("2026-12-05", true)
            .unwrap()
            .to_rfc3339()
            .starts_with("2026-12-05T23:59:59"));
        assert_eq!(
            parse_time("2026-12-05T10:30", false).unwrap().to_rfc3339(),
            "2026-12-05T10:30:00+00:00"
        );
        assert!(parse_time("yesterday", false).is_err());
        assert_eq!(
            parse_action("stageddelete").unwrap(),
            ProvisioningAction::StagedDelete
        );
        assert!(parse_status("broken").is_err());
    }

    #[test]
    fn the_table_fits_100_columns_whatever_the_names() {
        let mut e: Entry = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "activityDateTime": "2026-12-05T10:00:00Z",
            "changeId": "c", "cycleId": "y", "jobId": "a-very-long-job-name",
            "durationInMilliseconds": 1,
            "initiatedBy": {"initiatorType": "system", "displayName": "provisiond"},
            "provisioningAction": "stagedDelete",
            "provisioningStatusInfo": {"status": "failure", "errorInformation": {"errorCode": "DuplicateTargetEntries", "reason": "r"}},
            "sourceIdentity": {"id": "s", "displayName": "x", "identityType": "User"},
            "targetIdentity": {"id": "", "displayName": "", "identityType": "User"},
            "sourceSystem": {"displayName": "file"}, "targetSystem": {"displayName": "t"}
        }))
        .unwrap();
        e.source_identity.display_name = "Ünïcode\nname ".repeat(20);
        for with_job in [true, false] {
            let t = table(&[e.clone()], with_job);
            for l in t.lines() {
                assert!(l.chars().count() <= 100, "{l:?}");
            }
            assert_eq!(t.lines().count(), 2);
        }
    }
}
