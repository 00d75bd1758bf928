//! The command line: argument definitions and one function per command. `main.rs` only parses,
//! sets up logging and turns the outcome into an exit code.

mod admin;
mod check_config;
mod demo;
mod expr;
mod mappings;
pub mod render;
mod run;
mod sandbox;
mod status;
mod sync;
mod test_connection;

pub use admin::admin;
pub use check_config::check_config;
pub use demo::{demo, DemoError};
pub use expr::expr;
pub use mappings::mappings;
pub use run::run;
pub use sandbox::sandbox;
pub use status::status;
pub use sync::sync;
pub use test_connection::test_connection;

use crate::config::{ConfigError, DEFAULT_CONFIG_PATH};
use crate::daemon::admin::ResetScope;
use crate::daemon::lock::LockError;
use clap::{Parser, Subcommand};
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

impl From<LockError> for Failure {
    fn from(e: LockError) -> Self {
        Failure::usage(e.to_string())
    }
}
