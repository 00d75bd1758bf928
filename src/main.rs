//! The `provisiond` binary: parse the command line, set up logging, install the signal
//! handlers, run the command. The only place signals are listened for: the daemon and the
//! commands take a shutdown future, so a test can drive them in-process with its own.

use clap::Parser;
use provisiond::cli::{self, Cli, Command, Failure};
use provisiond::config::{Config, LogFormat};
use provisiond::daemon::admin::AdminCommand;
use std::future::Future;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// SIGTERM or SIGINT. The handlers are installed when this is called, not when the future is
/// first polled: a signal arriving in between (the daemon opening its store, say) is caught
/// and completes the future, rather than killing the process by the default action.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        match (term, int) {
            (Some(mut term), Some(mut int)) => {
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

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // tracing-subscriber colours its output whenever NO_COLOR is unset, terminal or not:
    // escape codes would end up in journald and in log files. Colour only a terminal.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        // The current span is enough: the list of entered spans repeated it on every line, a
        // third of the cost of the per-object provisioning log.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
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
            } => cli::sandbox(listen, token, faults.as_deref(), shutdown_signal()).await,
            Command::Demo => cli::demo().await.map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            }),
            Command::Expr {
                expression,
                input,
                input_file,
            } => cli::expr(&expression, input.as_deref(), input_file.as_deref()),
            _ => Ok(0),
        };
    }
    let config = Config::load(&cli.config)?;
    let daemon = matches!(cli.command, Command::Run);
    init_logging(
        flag_format.unwrap_or(config.log_format),
        if daemon { "info" } else { "warn" },
    );
    provisiond::util::secret::warn_about_loose_secret_files();
    match cli.command {
        // Installed before the store opens: see `shutdown_signal`.
        Command::Run => cli::run(config, shutdown_signal()).await,
        Command::Sync { job, dry_run, json } => {
            cli::sync(&config, job.as_deref(), dry_run, json, shutdown_signal).await
        }
        Command::TestConnection { job } => cli::test_connection(&config, job.as_deref()).await,
        Command::Status { job, json } => cli::status(&config, job.as_deref(), json).await,
        Command::Restart { job, reset } => {
            let cmd = AdminCommand::Restart { reset };
            cli::admin(&config, &job, cmd, "restart").await
        }
        Command::AllowDeletes { job } => {
            cli::admin(&config, &job, AdminCommand::AllowDeletes, "allow-deletes").await
        }
        Command::Pause { job } => cli::admin(&config, &job, AdminCommand::Pause, "pause").await,
        Command::Resume { job } => cli::admin(&config, &job, AdminCommand::Resume, "resume").await,
        Command::CheckConfig => Ok(cli::check_config(&config)),
        Command::Mappings { job } => cli::mappings(&config, job.as_deref()),
        Command::Sandbox { .. } | Command::Demo | Command::Expr { .. } => Ok(0),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = match dispatch(cli).await {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            eprintln!("provisiond: {message}");
            code
        }
    };
    std::process::exit(code);
}
