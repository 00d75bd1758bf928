//! The command line: argument definitions and one function per command. `main.rs` only parses,
//! sets up logging and turns the outcome into an exit code.

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::control::{self, Request, Response};
use crate::cycle::CycleReport;
use crate::schedule::{self, Daemon, JobRuntime, JobStatus};
use crate::state::{SledStore, StateError, StateStore};
use crate::summary::{CycleStatus, CycleSummary};
use clap::{Parser, Subcommand};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "provisiond",
    version,
    about = "Keeps a SaaS application's users and groups in step with a directory over SCIM 2.0"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "PROVISIOND_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log format on stderr (overrides the config's log_format).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: a cycle per job at start-up, then on each job's schedule.
    Run,
    /// Run one cycle now and exit (through the daemon when it is running).
    Sync {
        #[arg(long)]
        job: Option<String>,
        /// Plan and show what would change; send no writing request.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object per job.
        #[arg(long)]
        json: bool,
    },
    /// Check that the target's URL, TLS, token and SCIM answers are right.
    TestConnection {
        #[arg(long)]
        job: Option<String>,
    },
    /// Show each job's last cycle, linked objects and next run.
    Status {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration and exit.
    CheckConfig,
    /// Print a job's effective attribute mappings and scoping filters.
    Mappings {
        #[arg(long)]
        job: Option<String>,
    },
    /// Serve an in-memory SCIM 2.0 server for trying provisiond and for tests.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Require this bearer token (default: accept any request).
        #[arg(long, env = "PROVISIOND_SANDBOX_TOKEN")]
        token: Option<String>,
        /// JSON file with a list of fault rules to inject (see README).
        #[arg(long)]
        faults: Option<PathBuf>,
    },
    /// Show provisiond at work: a sandbox, an initial cycle and an incremental one.
    Demo,
    /// Evaluate one Entra mapping expression against one source object.
    Expr {
        expression: String,
        /// The source object, as JSON.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        #[arg(long)]
        input_file: Option<PathBuf>,
    },
}

impl Command {
    /// Commands that start from the configuration file.
    pub fn needs_config(&self) -> bool {
        !matches!(
            self,
            Command::Sandbox { .. } | Command::Demo | Command::Expr { .. }
        )
    }
}

/// A command's failure: a message for stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::usage(e.to_string())
    }
}

/// The pid file next to the store, written by the daemon (`run`) for service managers.
pub fn pid_file(config: &Config) -> PathBuf {
    config.state_dir.join("provisiond.pid")
}

/// Who holds the state store: rewritten by every process (daemon or one-shot command) right
/// after it has opened the store, so that a process finding the store locked can name the
/// holder. It is never removed: a record whose pid is gone describes an earlier process (the
/// current holder has only just opened the store and not written its record yet).
pub fn holder_file(config: &Config) -> PathBuf {
    config.state_dir.join("holder")
}

/// How long a command waits for a store whose holder is about to let go of it or about to
/// answer on its control socket (a `status` reading offline, a daemon starting up).
const STORE_SETTLE: Duration = Duration::from_secs(5);

/// What a process holding the store is doing, as `open_store` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUser {
    /// `provisiond run`.
    Daemon,
    /// `sync` or `status` with no daemon answering on the control socket.
    Command(&'static str),
}

impl StoreUser {
    fn name(self) -> &'static str {
        match self {
            StoreUser::Daemon => "run",
            StoreUser::Command(c) => c,
        }
    }
}

/// A record of the holder file.
struct Holder {
    /// `provisiond sync (pid 123)`.
    text: String,
    /// `sync`.
    command: String,
    alive: bool,
}

fn read_holder(config: &Config) -> Option<Holder> {
    let text = std::fs::read_to_string(holder_file(config)).ok()?;
    let text = text.trim().to_string();
    let (head, tail) = text.split_once(" (pid ")?;
    let command = head.strip_prefix("provisiond ")?.to_string();
    let pid: u32 = tail.strip_suffix(')')?.parse().ok()?;
    Some(Holder {
        alive: pid_alive(pid),
        text,
        command,
    })
}

fn pid_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    // Without procfs we cannot tell: trust the record.
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Whether the holder will let go of the store, or answer on its control socket, within
/// moments: then it is worth waiting (bounded by [`STORE_SETTLE`]) instead of failing.
fn holder_settling(holder: Option<&Holder>, user: StoreUser) -> bool {
    match holder {
        // No live record: the holder has only just opened the store.
        None => true,
        Some(h) if !h.alive => true,
        // A `status` reading the store offline lets go at once.
        Some(h) if h.command == "status" => true,
        // A daemon that is starting: its control socket is coming (`status`/`sync`); a
        // second daemon must not wait for it.
        Some(h) if h.command == "run" => user != StoreUser::Daemon,
        // A one-shot `sync` may hold the store for a whole cycle.
        Some(_) => false,
    }
}

/// The store, or (for `status` and `sync`, with `probe`) the running daemon's answer.
enum Reached {
    Store(SledStore),
    Daemon(Response),
}

/// Reach the state: through a running daemon's control socket when `probe` is given and a
/// daemon answers, else by opening the store. A store held by a process that lets go (or
/// starts answering) within moments is waited for, at most [`STORE_SETTLE`]; otherwise this
/// fails at once, naming the holder.
///
/// Before, the daemon's pid file was the only source for the name: a one-shot `sync` holding
/// the store showed up as "another process", a stale pid file (left by a `kill -9`) named a
/// dead daemon, and a `status` run while the daemon was starting (store open, socket not yet
/// bound) failed, as did a daemon starting while a `status` read the store.
async fn reach(
    config: &Config,
    user: StoreUser,
    probe: Option<(&Request, Option<Duration>)>,
) -> Result<Reached, Failure> {
    let deadline = tokio::time::Instant::now() + STORE_SETTLE;
    loop {
        if let Some((req, timeout)) = probe {
            if let Some(answer) = control::request(&config.control_socket, req, timeout)
                .await
                .map_err(|e| Failure::usage(e.to_string()))?
            {
                return Ok(Reached::Daemon(answer));
            }
        }
        let path = match SledStore::open(&config.state_dir.join("state")) {
            Ok(store) => {
                let line = format!("provisiond {} (pid {})\n", user.name(), std::process::id());
                if let Err(e) = std::fs::write(holder_file(config), line) {
                    tracing::debug!(error = %e, "cannot record the state store's holder");
                }
                return Ok(Reached::Store(store));
            }
            Err(StateError::Locked { path, .. }) => path,
            Err(other) => return Err(Failure::usage(other.to_string())),
        };
        let holder = read_holder(config);
        if holder_settling(holder.as_ref(), user) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let name = holder
            .filter(|h| h.alive)
            .map(|h| h.text)
            .unwrap_or_else(|| "another process".into());
        let advice = match user {
            // `run` has not tried the control socket: do not claim it is silent.
            StoreUser::Daemon => {
                "; only one daemon may run per state directory (`provisiond status` and \
                 `provisiond sync` reach a running daemon through its control socket)"
                    .to_string()
            }
            StoreUser::Command(_) => format!(
                ", and no daemon answers on the control socket {}: try again when it is done",
                config.control_socket.display()
            ),
        };
        return Err(Failure::usage(format!(
            "state store {} is in use by {name}{advice}",
            path.display()
        )));
    }
}

/// Open the store, or explain who holds it (see [`reach`]).
pub async fn open_store(config: &Config, user: StoreUser) -> Result<SledStore, Failure> {
    match reach(config, user, None).await? {
        Reached::Store(s) => Ok(s),
        Reached::Daemon(_) => Err(Failure::usage("unexpected answer from the daemon")),
    }
}

pub async fn run(config: Config) -> Result<i32, Failure> {
    // Catch SIGTERM/SIGINT from the start: one arriving while the store opens or the first
    // cycle starts must still mean a clean stop (exit 0), not death by the default action.
    let signal = ShutdownSignal::install();
    let store = open_store(&config, StoreUser::Daemon).await?;
    // The pid file first: once the socket answers, the pid file names this daemon.
    let pid_path = pid_file(&config);
    if let Err(e) = std::fs::write(&pid_path, std::process::id().to_string()) {
        tracing::warn!(path = %pid_path.display(), error = %e, "cannot write the pid file");
    }
    let listener = match control::bind(&config.control_socket).await {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&pid_path);
            return Err(Failure::usage(e.to_string()));
        }
    };
    let store: Arc<dyn StateStore> = Arc::new(store);
    let daemon = match Daemon::new(config.clone(), store.clone()) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            let _ = std::fs::remove_file(&config.control_socket);
            let _ = std::fs::remove_file(&pid_path);
            return Err(Failure::usage(e.to_string()));
        }
    };
    tracing::info!(jobs = daemon.jobs.len(), socket = %config.control_socket.display(), pid = std::process::id(), "provisiond started");
    let control_task = tokio::spawn(control::serve(listener, daemon.clone()));

    let mut workers = {
        let d = daemon.clone();
        tokio::spawn(async move { d.run_workers().await })
    };
    // The workers only end on shutdown; if they end first (the cron scheduler failed to
    // start), say so and stop rather than idle on as a daemon that never runs a cycle.
    let early_end = tokio::select! {
        () = signal.recv() => None,
        r = &mut workers => Some(r),
    };
    let mut code = 0;
    let mut failure = None;
    match early_end {
        None => {
            tracing::info!("shutting down: finishing in-flight requests");
            daemon.shutdown();
            // In-flight requests get what is left of the 10 s systemd allows; then we persist
            // and go.
            let finished = tokio::time::timeout(Duration::from_secs(8), workers).await;
            if finished.is_err() {
                tracing::warn!(
                    "requests still in flight after 8 s: abandoning them (the next cycle re-matches)"
                );
            }
        }
        Some(r) => {
            daemon.shutdown();
            let why = match r {
                Ok(Ok(())) => "the job workers stopped unexpectedly".to_string(),
                Ok(Err(e)) => format!("the cron scheduler failed: {e}"),
                Err(e) => format!("the job workers failed: {e}"),
            };
            tracing::error!(error = %why, "provisiond cannot go on");
            code = 1;
            failure = Some(why);
        }
    }
    control_task.abort();
    let flushed = store.flush();
    let _ = std::fs::remove_file(&config.control_socket);
    let _ = std::fs::remove_file(&pid_path);
    if let Some(message) = failure {
        return Err(Failure { code, message });
    }
    match flushed {
        Ok(()) => {
            tracing::info!("provisiond stopped");
            Ok(code)
        }
        Err(e) => Err(Failure {
            code: 1,
            message: format!("could not persist the state on shutdown: {e}"),
        }),
    }
}

/// SIGTERM and SIGINT, listened for from the moment of `install`.
struct ShutdownSignal {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        ShutdownSignal {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(mut self) {
        match (self.term.as_mut(), self.int.as_mut()) {
            (Some(term), Some(int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

pub async fn sync(
    config: &Config,
    job: Option<&str>,
    dry_run: bool,
    json: bool,
) -> Result<i32, Failure> {
    config.select(job)?;
    let req = Request::Sync {
        job: job.map(str::to_string),
        dry_run,
    };
    let reports = match reach(config, StoreUser::Command("sync"), Some((&req, None))).await? {
        Reached::Daemon(Response::Sync { reports }) => reports,
        Reached::Daemon(Response::Error { message }) => return Err(Failure::usage(message)),
        Reached::Daemon(other) => {
            return Err(Failure::usage(format!(
                "unexpected answer from the daemon: {other:?}"
            )))
        }
        Reached::Store(store) => {
            let stop = stop_on_signal();
            let store = Arc::new(store);
            let mut reports = Vec::new();
            for j in config.select(job)? {
                let rt = JobRuntime::new(j.clone()).map_err(|e| Failure::usage(e.to_string()))?;
                let bar = progress_bar(json);
                // On a runtime worker, as in the daemon, rather than on the main thread: the
                // HTTP connections' tasks run on the workers, and every response handed across
                // threads cost a wake-up (a tenth of the initial cycle's CPU time).
                let cycle = tokio::spawn({
                    let (store, stop, bar) = (store.clone(), stop.clone(), bar.clone());
                    async move {
                        schedule::run_job_cycle(&rt, &*store, dry_run, bar.as_ref(), &stop).await
                    }
                });
                let report = cycle.await.map_err(|e| Failure {
                    code: 2,
                    message: format!("the cycle of job {} failed: {e}", j.name),
                })?;
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                reports.push(report);
            }
            reports
        }
    };
    let mut code = 0;
    for r in &reports {
        code = code.max(r.summary.status.exit_code());
        if json {
            let mut out = serde_json::to_value(&r.summary).unwrap_or_default();
            // A dry run's point is the plan: its actions go in the JSON too.
            if let (true, Some(map)) = (r.summary.dry_run, out.as_object_mut()) {
                map.insert(
                    "actions".into(),
                    serde_json::to_value(&r.actions).unwrap_or_default(),
                );
            }
            println!("{out}");
        } else {
            print!("{}", render_report(r));
        }
    }
    Ok(code)
}

fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let signal = ShutdownSignal::install();
    tokio::spawn(async move {
        signal.recv().await;
        s.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("interrupted: finishing in-flight requests");
    });
    stop
}

fn progress_bar(json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} objects [{elapsed_precise}] {wide_bar}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

fn kind_name(kind: crate::summary::CycleKind) -> &'static str {
    match kind {
        crate::summary::CycleKind::Initial => "initial",
        crate::summary::CycleKind::Incremental => "incremental",
    }
}

/// A cycle summary as an admin reads it.
pub fn render_summary(s: &CycleSummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let status = match s.status {
        CycleStatus::Succeeded => "succeeded",
        CycleStatus::EntryLevelErrors => "finished with errors on some objects",
        CycleStatus::Failed => "FAILED",
    };
    let kind = kind_name(s.kind);
    let _ = writeln!(
        out,
        "{}: {}{kind} cycle {status} in {:.1} s (cycle {})",
        s.job,
        if s.dry_run { "dry-run " } else { "" },
        s.duration_ms as f64 / 1000.0,
        s.cycle_id
    );
    if let Some(e) = &s.error {
        let _ = writeln!(out, "  error: {e}");
    }
    let u = &s.users;
    let _ = writeln!(
        out,
        "  users:       created {}, updated {}, disabled {}, deleted {}, unchanged {}, skipped {}, failed {}",
        u.created, u.updated, u.disabled, u.deleted, u.unchanged, u.skipped, u.failed
    );
    let g = &s.groups;
    let _ = writeln!(
        out,
        "  groups:      created {}, updated {}, deleted {}, unchanged {}, skipped {}, failed {}",
        g.created, g.updated, g.deleted, g.unchanged, g.skipped, g.failed
    );
    let _ = writeln!(
        out,
        "  memberships: added {}, removed {}",
        s.memberships.added, s.memberships.removed
    );
    let r = &s.requests;
    let _ = writeln!(
        out,
        "  requests:    GET {}, POST {}, PATCH {}, PUT {}, DELETE {}",
        r.get, r.post, r.patch, r.put, r.delete
    );
    if !s.source_complete && s.error.is_none() {
        let _ = writeln!(
            out,
            "  source read incomplete: {} disable(s)/delete(s) withheld, none done",
            s.withheld_deprovisions
        );
    } else if s.withheld_deprovisions > 0 {
        let _ = writeln!(
            out,
            "  {} disable(s)/delete(s) withheld: some source objects could not be read",
            s.withheld_deprovisions
        );
    }

    if s.problem_count > 0 {
        let _ = writeln!(out, "  problems ({}):", s.problem_count);
        for p in &s.problems {
            let _ = writeln!(
                out,
                "    {} {} {}: {}: {}",
                p.object_type.as_deref().unwrap_or("object"),
                p.id.as_deref().unwrap_or("-"),
                p.name
                    .as_deref()
                    .map(|n| format!("{n:?}"))
                    .unwrap_or_default(),
                p.code,
                p.reason
            );
        }
        if s.problem_count as usize > s.problems.len() {
            let _ = writeln!(
                out,
                "    … and {} more in the logs",
                s.problem_count as usize - s.problems.len()
            );
        }
    }
    out
}

pub fn render_report(r: &CycleReport) -> String {
    let mut out = render_summary(&r.summary);
    if r.summary.dry_run {
        out.push_str("  dry run: no writing request was sent; planned actions:\n");
        if r.actions.is_empty() {
            out.push_str("    (none)\n");
        }
        for a in &r.actions {
            out.push_str(&format!(
                "    {:<14} {} {:?} {}{}\n",
                a.action,
                a.object_type,
                a.name,
                a.target_id
                    .as_deref()
                    .map(|t| format!("[{t}] "))
                    .unwrap_or_default(),
                a.detail
            ));
        }
    }
    out
}

pub async fn status(config: &Config, job: Option<&str>, json: bool) -> Result<i32, Failure> {
    config.select(job)?;
    let req = Request::Status {
        job: job.map(str::to_string),
    };
    let probe = (&req, Some(Duration::from_secs(10)));
    let jobs: Vec<JobStatus> =
        match reach(config, StoreUser::Command("status"), Some(probe)).await? {
            Reached::Daemon(Response::Status { jobs }) => jobs,
            Reached::Daemon(Response::Error { message }) => return Err(Failure::usage(message)),
            Reached::Daemon(other) => {
                return Err(Failure::usage(format!(
                    "unexpected answer from the daemon: {other:?}"
                )))
            }
            Reached::Store(store) => config
                .select(job)?
                .into_iter()
                .map(|j| schedule::offline_status(j, &store))
                .collect::<Result<_, _>>()
                .map_err(|e| Failure::usage(e.to_string()))?,
        };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).unwrap_or_default()
        );
        return Ok(0);
    }
    for s in &jobs {
        println!("{} ({})", s.job, s.schedule);
        println!(
            "  linked: {} users, {} groups",
            s.users_linked, s.groups_linked
        );
        match &s.last_cycle {
            Some(c) => {
                // The kind as `sync` and `--json` spell it (was its Debug form, "Initial").
                println!(
                    "  last cycle: {} cycle {} at {} ({} ms)",
                    kind_name(c.kind),
                    match c.status {
                        CycleStatus::Succeeded => "succeeded",
                        CycleStatus::EntryLevelErrors => "with entry-level errors",
                        CycleStatus::Failed => "failed",
                    },
                    c.started_at.to_rfc3339(),
                    c.duration_ms
                );
                if let Some(e) = &c.error {
                    println!("    error: {e}");
                }
            }
            None => println!("  last cycle: none yet"),
        }
        if let Some(t) = s.last_success {
            println!("  last success: {}", t.to_rfc3339());
        }
        if s.running {
            println!("  a cycle is running now");
        }
        match (&s.next_run, &s.note) {
            (Some(t), _) => println!("  next run: {}", t.to_rfc3339()),
            (None, Some(n)) => println!("  next run: none ({n})"),
            (None, None) if s.running => {}
            (None, None) => println!("  next run: not scheduled"),
        }
    }
    Ok(0)
}

pub async fn test_connection(config: &Config, job: Option<&str>) -> Result<i32, Failure> {
    let mut code = 0;
    for j in config.select(job)? {
        let client = crate::target::ScimClient::new(j.target.clone());
        let report = match client {
            Ok(c) => c.test_connection().await,
            Err(e) => crate::target::ConnectionReport::invalid_settings(&e),
        };
        println!("{} target ({}): {report}", j.name, j.target.base_url);
        if !report.ok {
            code = 1;
        }
        match j.spec().source.test_connection().await {
            Ok(what) => println!("{} source: OK: {what}", j.name),
            Err(e) => {
                println!("{} source: {e}", j.name);
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn check_config(config: &Config) -> i32 {
    println!(
        "{}: OK, {} job(s)",
        config.path.display(),
        config.jobs.len()
    );
    println!("  state: {}", config.state_dir.display());
    for j in &config.jobs {
        println!(
            "  {}: {}; source {}; target {} ({} user and {} group mappings); scope {:?}",
            j.name,
            j.schedule,
            j.spec().source.describe(),
            j.target.base_url,
            j.mappings.users.len(),
            j.mappings.groups.len(),
            j.scope.mode
        );
    }
    0
}

/// The effective mappings (preset merged with the job's overrides) and scoping filters.
pub fn mappings(config: &Config, job: Option<&str>) -> Result<i32, Failure> {
    use crate::mapping::{Apply, MappingSource};
    for j in config.select(job)? {
        println!("{} (fingerprint {})", j.name, j.mappings.fingerprint);
        let mut rows: Vec<[String; 6]> = vec![[
            "type".into(),
            "target".into(),
            "from".into(),
            "apply".into(),
            "default".into(),
            "matching".into(),
        ]];
        for (ty, list) in [("user", &j.mappings.users), ("group", &j.mappings.groups)] {
            for m in list.iter() {
                let from = match &m.source {
                    MappingSource::Attribute(a) => format!("[{a}]"),
                    MappingSource::Constant(c) => format!("constant {c}"),
                    MappingSource::Expression(e) => e.text().to_string(),
                };
                rows.push([
                    ty.into(),
                    m.target.clone(),
                    from,
                    match m.apply {
                        Apply::Always => "always".into(),
                        Apply::Create => "create".into(),
                    },
                    m.default
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    m.matching.map(|p| p.to_string()).unwrap_or_default(),
                ]);
            }
        }
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            println!("  {}", line.join("  ").trim_end());
        }
        for (ty, filters) in [
            ("users", &j.scope.user_filters),
            ("groups", &j.scope.group_filters),
        ] {
            if filters.is_empty() {
                println!("  scoping filters for {ty}: none (everything in the assignment scope)");
                continue;
            }
            println!(
                "  scoping filters for {ty} (an object must pass one filter; all clauses of it):"
            );
            for (i, f) in filters.iter().enumerate() {
                let title = f
                    .spec
                    .title
                    .clone()
                    .unwrap_or_else(|| format!("filter {}", i + 1));
                let clauses: Vec<String> = f
                    .spec
                    .clauses
                    .iter()
                    .map(|c| match &c.value {
                        Some(serde_json::Value::String(v)) => {
                            format!("{} {} {v}", c.attribute, c.operator)
                        }
                        Some(v) => format!("{} {} {v}", c.attribute, c.operator),
                        None => format!("{} {}", c.attribute, c.operator),
                    })
                    .collect();
                println!("    {title}: {}", clauses.join(" AND "));
            }
        }
    }
    Ok(0)
}

pub async fn sandbox(
    listen: SocketAddr,
    token: Option<String>,
    faults: Option<&Path>,
) -> Result<i32, Failure> {
    let faults = match faults {
        None => Vec::new(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", p.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::usage(format!("{}: not a list of fault rules: {e}", p.display()))
            })?
        }
    };
    let config = crate::sandbox::SandboxConfig {
        token: token.map(secrecy::SecretString::from),
        faults,
        ..Default::default()
    };
    let has_token = config.token.is_some();
    let signal = ShutdownSignal::install();
    let handle = crate::sandbox::spawn(listen, config)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    println!(
        "SCIM 2.0 sandbox listening on {} ({}); Ctrl-C stops it",
        handle.base_url(),
        if has_token {
            "bearer token required"
        } else {
            "any token accepted"
        }
    );
    signal.recv().await;
    handle.shutdown().await;
    Ok(0)
}

pub fn expr(
    expression: &str,
    input: Option<&str>,
    input_file: Option<&Path>,
) -> Result<i32, Failure> {
    use crate::mapping::expr::{EvalEnv, Expression, Outcome};
    use crate::mapping::{evaluate_for, MapContext};
    use crate::model::{ObjectType, SourceObject};
    let parsed = Expression::parse(expression).map_err(|e| Failure::usage(e.to_string()))?;
    let text = match (input, input_file) {
        (Some(s), _) => s.to_string(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", p.display())))?,
        (None, None) => "{}".to_string(),
    };
    let mut attributes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("the input is not a JSON object: {e}")))?;
    // The object as a cycle sees it: `id` is the anchor; the service's virtual attributes
    // come from the object's state unless the input sets them.
    let id = match attributes.remove("id") {
        Some(serde_json::Value::String(s)) => s,
        _ => "00000000-0000-0000-0000-000000000000".to_string(),
    };
    let soft_deleted_given = attributes.remove("IsSoftDeleted");
    let roles_given = attributes.remove("appRoleAssignments");
    let obj = SourceObject {
        id,
        object_type: ObjectType::User,
        attributes: attributes.into(),
        members: Vec::new(),
    };
    let soft_deleted = match soft_deleted_given {
        Some(serde_json::Value::Bool(b)) => b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => !obj.enabled() || obj.soft_deleted(),
    };
    // Role names, given as strings or as objects with a displayName.
    let roles: BTreeSet<String> = match roles_given {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|r| match r {
                serde_json::Value::String(s) => Some(s.clone()),
                other => other["displayName"].as_str().map(str::to_string),
            })
            .collect(),
        _ => BTreeSet::new(),
    };
    let env = EvalEnv {
        now: chrono::Utc::now(),
    };
    let ctx = MapContext {
        soft_deleted,
        roles: Some(&roles),
        env: &env,
    };
    match evaluate_for(&parsed, &obj, &ctx) {
        Ok(Outcome::Value(v)) => println!("{v}"),
        Ok(Outcome::Ignored) => println!("{}", serde_json::json!({"ignored": true})),
        Err(e) => {
            return Err(Failure {
                code: 1,
                message: e.to_string(),
            })
        }
    }
    Ok(0)
}
