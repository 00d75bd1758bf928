//! The `provisiond` binary: parse the command line, set up logging, install the signal
//! handlers (SIGTERM/SIGINT stop, SIGHUP reloads), run the command. The only place signals are listened for: the daemon and the
//! commands take a shutdown future, so a test can drive them in-process with its own.

use clap::Parser;
use provisiond::{Cli, LogFormat};
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

/// One message per SIGHUP: the daemon reloads its configuration. Installed when called (by
/// `run` only, before the store opens), so a SIGHUP from then on never stops the daemon.
fn reload_signal() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: reload by restarting"),
    }
    rx
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = provisiond::dispatch(cli, init_logging, shutdown_signal, reload_signal).await;
    std::process::exit(code);
}
