//! The command line: argument definitions and one function per command. `main.rs` only parses,
//! sets up logging and turns the outcome into an exit code.

mod admin;
mod check_config;
mod demo;
mod expr;
mod logs;
mod mappings;
pub(crate) mod out;
mod provision;
pub(crate) mod render;
mod run;
mod sandbox;
mod status;
mod sync;
mod test_connection;
mod test_email;

pub(crate) use admin::admin;
pub(crate) use check_config::check_config;
pub(crate) use demo::demo;
pub(crate) use expr::expr;
pub(crate) use logs::logs;
pub(crate) use mappings::mappings;
pub(crate) use provision::provision;
pub(crate) use sandbox::sandbox;
pub(crate) use status::status;
pub(crate) use sync::{sync, SyncMode};
pub(crate) use test_connection::test_connection;
pub(crate) use test_email::test_email;

use crate::config::{Config, LogFormat};
use crate::config::{ConfigError, DEFAULT_CONFIG_PATH};
use crate::daemon::admin::AdminCommand;
use crate::daemon::admin::ResetScope;
use crate::daemon::lock::LockError;
use clap::{Parser, Subcommand};
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The exit codes, for `--help` and the README: scripts and systemd tell the outcomes apart.
pub(crate) mod exit {
    /// Done: every cycle succeeded, the check passed.
    pub(crate) const OK: i32 = 0;
    /// Done, but some objects failed (entry-level errors), or `test-connection` or `test-email`
    /// found a problem.
    pub(crate) const ENTRY_ERRORS: i32 = 1;
    /// The command line is wrong (clap uses 2 too), or `--job` names no job.
    pub(crate) const USAGE: i32 = 2;
    /// `sync --dry-run --detailed-exitcode` planned changes (as `terraform plan`): a script or
    /// a CI job gates on it. Never used otherwise, so each code means one thing.
    pub(crate) const PENDING_CHANGES: i32 = 3;
    /// A cycle failed, or the command could not do its work (daemon, store, socket).
    pub(crate) const FAILED: i32 = 4;
    /// The configuration file is missing or wrong (the message names the file and the key).
    /// Not 3: that is `--detailed-exitcode`'s "changes pending", as in `terraform plan`.
    pub(crate) const CONFIG: i32 = 5;
    /// A stop (Ctrl-C, SIGTERM) interrupted a cycle: 128 + SIGINT, as shells report it.
    pub(crate) const INTERRUPTED: i32 = 130;
}

/// Shown after `--help`: the exit codes.
const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  some objects failed (entry-level errors), or test-connection or test-email found a problem
  2  usage error (command line, unknown --job)
  3  sync --dry-run --detailed-exitcode: changes are pending
  4  a cycle failed, or the daemon, the store or the socket could not be used
  5  configuration error (the message names the file and the key)
  130 a stop (Ctrl-C, SIGTERM) interrupted a cycle; the next cycle carries on";

/// The version line: the crate's version and the commit it was built from (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PROVISIOND_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "provisiond",
    version = VERSION,
    about = "Keeps a SaaS application's users and groups in step with a directory over SCIM 2.0",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, env = "PROVISIOND_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log format on stderr (overrides the config's log_format).
    #[arg(long, env = "PROVISIOND_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Log less: errors only (repeat for none). RUST_LOG, when set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log more: one level per -v (one-shot commands start at warn, `run` at info; then
    /// info, debug, trace). RUST_LOG, when set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the command is `run` (the daemon), for what `main` sets up before the runtime.
    pub fn runs_daemon(&self) -> bool {
        matches!(self.command, Command::Run)
    }

    /// Whether the command is `sync` (cycles run once), for what `main` sets up before the
    /// runtime.
    pub fn runs_sync(&self) -> bool {
        matches!(self.command, Command::Sync { .. })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: a cycle per job at start-up, then on each job's schedule.
    Run,
    /// Run one cycle now and exit (through the daemon when it is running).
    Sync {
        /// The job to run (default: every job).
        #[arg(long)]
        job: Option<String>,
        /// Plan and show what would change; send no writing request.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run, as `terraform plan`: exit 0 when nothing would change, 3 when
        /// changes are pending (1 and 4 as usual).
        #[arg(long, requires = "dry_run")]
        detailed_exitcode: bool,
        /// Print one JSON object per job.
        #[arg(long)]
        json: bool,
    },
    /// Check that the target's URL, TLS, token and SCIM answers are right.
    TestConnection {
        /// The job whose target and source to check (default: every job).
        #[arg(long)]
        job: Option<String>,
    },
    /// Send a test notification email to each job's notification_email and show the mail
    /// server's answer.
    TestEmail {
        /// The job whose addresses to write to (default: every job with one).
        #[arg(long)]
        job: Option<String>,
    },
    /// Show each job's last cycle, linked objects and next run.
    Status {
        /// The job to show (default: every job).
        #[arg(long)]
        job: Option<String>,
        /// Print the status as one JSON document (a list with one object per job).
        #[arg(long)]
        json: bool,
    },
    /// Restart a job: lift its quarantine, drop its escrows and clear its watermark, so the
    /// next cycle is initial (Graph's restart; `--reset` picks the parts).
    Restart {
        /// The job to restart.
        #[arg(long)]
        job: String,
        /// Comma-separated: quarantine, escrows, watermark, full (also forget the links and
        /// the target binding: everything is matched again), force-deletes (allow the staged
        /// deletions).
        #[arg(long, value_delimiter = ',')]
        reset: Vec<ResetScope>,
    },
    /// Let the next cycle send the deletions the deletion threshold staged, those it still
    /// plans.
    AllowDeletes {
        /// The job whose staged deletions to allow.
        #[arg(long)]
        job: String,
    },
    /// Pause a job: a running cycle finishes, no new one starts until `resume`.
    Pause {
        /// The job to pause.
        #[arg(long)]
        job: String,
    },
    /// Resume a paused job.
    Resume {
        /// The job to resume.
        #[arg(long)]
        job: String,
    },
    /// Provision one user (or one group with up to 5 members) now, showing each of Entra's
    /// steps: import, scope, match, action (through the daemon when it is running).
    Provision {
        /// The job whose source, mappings and target to use.
        #[arg(long)]
        job: String,
        /// The user: its source id, userPrincipalName or mail.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        user: Option<String>,
        /// The group: its source id or displayName.
        #[arg(long)]
        group: Option<String>,
        /// With --group: a member to provision with it (id, userPrincipalName or mail); up
        /// to 5, as Entra's on-demand provisioning.
        #[arg(long, requires = "group")]
        member: Vec<String>,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show the provisioning logs: one entry per object action of the cycles (Entra's
    /// provisioning logs). Read-only; works while the daemon runs.
    Logs(Box<logs::LogsArgs>),
    /// Check the configuration and exit.
    CheckConfig,
    /// Print a job's effective attribute mappings and scoping filters.
    Mappings {
        /// The job to show (default: every job).
        #[arg(long)]
        job: Option<String>,
        /// Print one JSON object per job, a line each.
        #[arg(long)]
        json: bool,
    },
    /// Serve an in-memory SCIM 2.0 server for trying provisiond and for tests.
    Sandbox {
        /// The address and port to serve on.
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
        /// The expression, as in a mapping's `expression` key, e.g. 'Join(" ", [givenName], [surname])'.
        expression: String,
        /// The source object, as JSON.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// A file holding the source object, as JSON.
        #[arg(long)]
        input_file: Option<PathBuf>,
    },
    /// Print a shell completion script to stdout, e.g.
    /// `provisiond completions bash > /etc/bash_completion.d/provisiond`.
    Completions {
        /// The shell.
        shell: CompletionShell,
    },
    /// Print the manual page (roff) to stdout, e.g. `provisiond man | man -l -`.
    Man,
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

impl Command {
    /// Commands that start from the configuration file.
    pub fn needs_config(&self) -> bool {
        !matches!(
            self,
            Command::Sandbox { .. }
                | Command::Demo
                | Command::Expr { .. }
                | Command::Completions { .. }
                | Command::Man
        )
    }

    /// Commands that use the target or the source, and so read their secrets as the config
    /// loads. `check-config` is one: it is the admin's check that the secrets are readable.
    fn reads_secrets(&self) -> bool {
        !matches!(
            self,
            Command::Status { .. }
                | Command::Logs(_)
                | Command::Mappings { .. }
                | Command::Restart { .. }
                | Command::AllowDeletes { .. }
                | Command::Pause { .. }
                | Command::Resume { .. }
        )
    }
}

/// A command's failure: a message for stderr and an exit code (see [`exit`]).
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    /// The command line asks for something that is not there (e.g. `--job` names no job).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// The command could not do its work (the daemon, the store, a cycle).
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: exit::FAILED,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure {
            code: exit::CONFIG,
            message: e.to_string(),
        }
    }
}

impl From<LockError> for Failure {
    fn from(e: LockError) -> Self {
        Failure::failed(e.to_string())
    }
}

/// The jobs a command applies to; an unknown `--job` is a usage error, not a config error.
pub(crate) fn select<'a>(
    config: &'a Config,
    job: Option<&str>,
) -> Result<Vec<&'a crate::config::JobConfig>, Failure> {
    config
        .select(job)
        .map_err(|e| Failure::usage(e.to_string()))
}

/// The exit code for a cycle's outcome.
pub(crate) fn cycle_exit(status: crate::summary::CycleStatus) -> i32 {
    use crate::summary::CycleStatus;
    match status {
        CycleStatus::Succeeded => exit::OK,
        CycleStatus::EntryLevelErrors => exit::ENTRY_ERRORS,
        CycleStatus::Failed => exit::FAILED,
        CycleStatus::Interrupted => exit::INTERRUPTED,
    }
}

/// The default log level for `-q`/`-v` counts, from `base` (the command's own default).
fn log_level(base: &'static str, quiet: u8, verbose: u8) -> &'static str {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let at = LEVELS.iter().position(|l| *l == base).unwrap_or(2);
    let at = (at + usize::from(verbose)).saturating_sub(usize::from(quiet));
    LEVELS[at.min(LEVELS.len() - 1)]
}

/// Runs one command line to its exit code. The binary supplies what belongs to a process:
/// `init_logging` (called once, with the log format and the default level, as soon as the
/// config that may choose the format is read) and `shutdown_signal`, which makes a future
/// that completes on SIGTERM or SIGINT (made only by commands that stop gracefully), and
/// `reload_signal`, which makes a channel receiving one message per SIGHUP (made by `run`
/// alone, so SIGHUP keeps its default meaning for the other commands).
pub async fn dispatch<F>(
    cli: Cli,
    init_logging: impl FnOnce(LogFormat, &'static str),
    shutdown_signal: fn() -> F,
    reload_signal: fn() -> tokio::sync::mpsc::UnboundedReceiver<()>,
) -> i32
where
    F: Future<Output = ()> + Send + 'static,
{
    match dispatch_inner(cli, init_logging, shutdown_signal, reload_signal).await {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            // A closed stderr has nobody to tell: the code says it.
            let _ = writeln!(std::io::stderr(), "provisiond: {message}");
            code
        }
    }
}

async fn dispatch_inner<F>(
    cli: Cli,
    init_logging: impl FnOnce(LogFormat, &'static str),
    shutdown_signal: fn() -> F,
    reload_signal: fn() -> tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<i32, Failure>
where
    F: Future<Output = ()> + Send + 'static,
{
    let flag_format = match cli.log_format.as_deref() {
        Some("json") => Some(LogFormat::Json),
        Some(_) => Some(LogFormat::Text),
        None => None,
    };
    let (quiet, verbose) = (cli.quiet, cli.verbose);
    if !cli.command.needs_config() {
        init_logging(
            flag_format.unwrap_or_default(),
            log_level("warn", quiet, verbose),
        );
        return match cli.command {
            Command::Sandbox {
                listen,
                token,
                faults,
            } => sandbox(listen, token, faults.as_deref(), shutdown_signal()).await,
            Command::Demo => demo().await.map_err(|e| Failure::failed(e.to_string())),
            Command::Expr {
                expression,
                input,
                input_file,
            } => expr(&expression, input.as_deref(), input_file.as_deref()),
            Command::Completions { shell } => Ok(completions(shell)),
            Command::Man => Ok(man()),
            _ => Ok(exit::OK),
        };
    }
    // Read-only commands leave the secrets unread: they need none, and an admin may run them
    // without access to the token (or outside systemd, without its credentials).
    let config = if cli.command.reads_secrets() {
        Config::load(&cli.config)?
    } else {
        Config::load_without_secrets(&cli.config)?
    };
    let daemon = matches!(cli.command, Command::Run);
    init_logging(
        flag_format.unwrap_or(config.log_format),
        log_level(if daemon { "info" } else { "warn" }, quiet, verbose),
    );
    crate::util::secret::warn_about_loose_secret_files();
    match cli.command {
        // Installed before the store opens: see `shutdown_signal`.
        Command::Run => run::run(config, shutdown_signal(), reload_signal()).await,
        Command::Sync {
            job,
            dry_run,
            detailed_exitcode,
            json,
        } => {
            let mode = SyncMode {
                dry_run,
                detailed_exitcode,
                json,
            };
            sync(&config, job.as_deref(), mode, shutdown_signal).await
        }
        Command::TestConnection { job } => test_connection(&config, job.as_deref()).await,
        Command::TestEmail { job } => test_email(&config, job.as_deref()).await,
        Command::Status { job, json } => status(&config, job.as_deref(), json).await,
        Command::Restart { job, reset } => {
            let cmd = AdminCommand::Restart { reset };
            admin(&config, &job, cmd, "restart").await
        }
        Command::AllowDeletes { job } => {
            admin(&config, &job, AdminCommand::AllowDeletes, "allow-deletes").await
        }
        Command::Pause { job } => admin(&config, &job, AdminCommand::Pause, "pause").await,
        Command::Resume { job } => admin(&config, &job, AdminCommand::Resume, "resume").await,
        Command::Provision {
            job,
            user,
            group,
            member,
            json,
        } => provision(&config, &job, user, group, member, json).await,
        Command::CheckConfig => Ok(check_config(&config)),
        Command::Logs(args) => logs(&config, &args),
        Command::Mappings { job, json } => mappings(&config, job.as_deref(), json),
        Command::Sandbox { .. }
        | Command::Demo
        | Command::Expr { .. }
        | Command::Completions { .. }
        | Command::Man => Ok(exit::OK),
    }
}

/// `provisiond completions SHELL`: the script on stdout.
fn completions(shell: CompletionShell) -> i32 {
    use clap::CommandFactory;
    use clap_complete::{generate, Shell};
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    generate(shell, &mut Cli::command(), "provisiond", &mut out);
    out::write_all(&out)
}

/// `provisiond man`: the manual page, roff, on stdout.
fn man() -> i32 {
    use clap::CommandFactory;
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        let _ = writeln!(
            std::io::stderr(),
            "provisiond: cannot render the man page: {e}"
        );
        return exit::FAILED;
    }
    out::write_all(&page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn quiet_and_verbose_move_the_default_level() {
        assert_eq!(log_level("warn", 0, 0), "warn");
        assert_eq!(log_level("warn", 1, 0), "error");
        assert_eq!(log_level("warn", 5, 0), "off");
        assert_eq!(log_level("warn", 0, 1), "info");
        assert_eq!(log_level("info", 0, 1), "debug");
        assert_eq!(log_level("info", 0, 9), "trace");
    }

    #[test]
    fn every_option_and_argument_has_help() {
        Cli::command().debug_assert();
        fn walk(cmd: &clap::Command, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() {
                    missing.push(format!("{} {}", cmd.get_name(), a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }

    #[test]
    fn subcommands_do_not_show_the_config_options() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let ids: Vec<&str> = sub.get_arguments().map(|a| a.get_id().as_str()).collect();
            assert!(!ids.contains(&"config"), "{}: {ids:?}", sub.get_name());
        }
    }
}
