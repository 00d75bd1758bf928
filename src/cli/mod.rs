//! The command line: argument definitions and one function per command. `main.rs` only parses,
//! sets up logging and turns the outcome into an exit code.

mod admin;
mod check_config;
mod demo;
mod expr;
mod mappings;
pub(crate) mod render;
mod run;
mod sandbox;
mod status;
mod sync;
mod test_connection;

pub(crate) use admin::admin;
pub(crate) use check_config::check_config;
pub(crate) use demo::demo;
pub(crate) use expr::expr;
pub(crate) use mappings::mappings;
pub(crate) use sandbox::sandbox;
pub(crate) use status::status;
pub(crate) use sync::sync;
pub(crate) use test_connection::test_connection;

use crate::config::{Config, LogFormat};
use crate::config::{ConfigError, DEFAULT_CONFIG_PATH};
use crate::daemon::admin::AdminCommand;
use crate::daemon::admin::ResetScope;
use crate::daemon::lock::LockError;
use clap::{Parser, Subcommand};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    #[arg(long, global = true, env = "PROVISIOND_LOG_FORMAT", value_parser = ["text", "json"])]
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
    /// Restart a job: lift its quarantine, drop its escrows and clear its watermark, so the
    /// next cycle is initial (Graph's restart; `--reset` picks the parts).
    Restart {
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
        #[arg(long)]
        job: String,
    },
    /// Pause a job: a running cycle finishes, no new one starts until `resume`.
    Pause {
        #[arg(long)]
        job: String,
    },
    /// Resume a paused job.
    Resume {
        #[arg(long)]
        job: String,
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
pub(crate) struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
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

impl From<LockError> for Failure {
    fn from(e: LockError) -> Self {
        Failure::usage(e.to_string())
    }
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
            eprintln!("provisiond: {message}");
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
    if !cli.command.needs_config() {
        init_logging(flag_format.unwrap_or_default(), "warn");
        return match cli.command {
            Command::Sandbox {
                listen,
                token,
                faults,
            } => sandbox(listen, token, faults.as_deref(), shutdown_signal()).await,
            Command::Demo => demo().await.map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            }),
            Command::Expr {
                expression,
                input,
                input_file,
            } => expr(&expression, input.as_deref(), input_file.as_deref()),
            _ => Ok(0),
        };
    }
    let config = Config::load(&cli.config)?;
    let daemon = matches!(cli.command, Command::Run);
    init_logging(
        flag_format.unwrap_or(config.log_format),
        if daemon { "info" } else { "warn" },
    );
    crate::util::secret::warn_about_loose_secret_files();
    match cli.command {
        // Installed before the store opens: see `shutdown_signal`.
        Command::Run => run::run(config, shutdown_signal(), reload_signal()).await,
        Command::Sync { job, dry_run, json } => {
            sync(&config, job.as_deref(), dry_run, json, shutdown_signal).await
        }
        Command::TestConnection { job } => test_connection(&config, job.as_deref()).await,
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
        Command::CheckConfig => Ok(check_config(&config)),
        Command::Mappings { job } => mappings(&config, job.as_deref()),
        Command::Sandbox { .. } | Command::Demo | Command::Expr { .. } => Ok(0),
    }
}
