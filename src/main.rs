//! The `provisiond` binary: parse the command line, set up logging, install the signal
//! handlers (SIGTERM/SIGINT stop, SIGHUP reloads), run the command. The only place signals are listened for: the daemon and the
//! commands take a shutdown future, so a test can drive them in-process with its own.

use clap::Parser;
use provisiond::{Cli, LogFormat};
use std::future::Future;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: glibc keeps what a cycle freed in per-thread arenas,
/// so a daemon between cycles held about as much as its last cycle's peak (3 jobs of 10k
/// users: a median of 278 MB in the benchmark's soak); mimalloc returns freed pages to the
/// system (a median of 112 MB) and costs less CPU. A one-shot cycle's peak is within a few
/// percent either way.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Libraries whose debug lines are their own internals (sled's page cache, HTTP framing,
/// TLS): held at `warn` unless `RUST_LOG` names them, so `RUST_LOG=debug` shows provisiond.
const QUIET_LIBRARIES: [&str; 5] = ["sled", "h2", "hyper", "hyper_util", "rustls"];

/// The filter: `RUST_LOG` when set, else the level `-q`/`-v` chose; either way the
/// libraries above at `warn` unless the directives name them.
fn log_filter(rust_log: Option<&str>, default_level: &str) -> String {
    let base = rust_log
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(default_level);
    let mut directives = base.to_string();
    for lib in QUIET_LIBRARIES {
        let named = base
            .split(',')
            .any(|d| d.trim().split(['=', '[', ':']).next() == Some(lib));
        if !named {
            directives.push_str(&format!(",{lib}=warn"));
        }
    }
    directives
}

fn init_logging(format: LogFormat, default_level: &str) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = log_filter(rust_log.as_deref(), default_level);
    // A RUST_LOG that does not parse falls back to the default level, as before.
    let filter = EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| EnvFilter::new(log_filter(None, default_level)));
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
        LogFormat::Text => builder.event_format(TextLine::default()).init(),
    }
}

/// The text log line: tracing-subscriber's full format, except that a field of the current
/// span (`cycle{job, cycle_id}`) is left out when the event carries it already, so a line
/// never says `job=robin` twice. Events without those fields (a source's own lines) still
/// get the span's.
#[derive(Default)]
struct TextLine {
    inner: tracing_subscriber::fmt::format::Format,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for TextLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::{FormatFields, FormattedFields};
        let Some(span) = ctx.lookup_current() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut fields = String::new();
        ctx.format_fields(Writer::new(&mut fields), event)?;
        let extensions = span.extensions();
        let span_fields = extensions
            .get::<FormattedFields<N>>()
            .map(|f| f.fields.as_str())
            .unwrap_or_default();
        let kept = span_fields_not_in(span_fields, &fields);
        let time = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        let meta = event.metadata();
        write!(writer, "{time} {:>5} {}", meta.level(), span.name())?;
        if !kept.is_empty() {
            write!(writer, "{{{kept}}}")?;
        }
        writeln!(writer, ": {}: {fields}", meta.target())
    }
}

/// The `key=value` pairs of `span_fields` whose key `event_fields` does not have.
fn span_fields_not_in(span_fields: &str, event_fields: &str) -> String {
    let has = |key: &str| {
        event_fields
            .split(' ')
            .any(|pair| pair.split_once('=').is_some_and(|(k, _)| k == key))
    };
    span_fields
        .split(' ')
        .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| !has(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// mimalloc's environment variable for how long freed memory stays committed before it is
/// returned to the system (milliseconds).
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// The daemon's purge delay: none. mimalloc returns freed pages only when the thread that
/// freed them allocates again after the delay; a daemon's worker threads go quiet at the end
/// of a cycle, so what the cycle freed within the last second stayed resident until the next
/// cycle (3 jobs of 10,000 users: 84 MB idle instead of 70, and a higher median).
const DAEMON_PURGE_DELAY: &str = "0";

/// `sync`'s purge delay: a millisecond. Reading a large directory frees as much as it keeps
/// (parse buffers, the store's pages) while the links load on another thread; at mimalloc's
/// default that memory stayed committed through the read, the cycle's peak: the 1,000,000-user
/// no-change cycle peaked at 1,020-1,050 MiB, with 1 ms at 957-963 MiB, in the same time
/// (8.2-9.3 s either way; 0 ms cost it 0.4 s more system time). An initial cycle pays a few
/// percent of its time for it (14.1-14.8 s against 14.6-15.8 s at 100,000 users). README,
/// "Performance".
const SYNC_PURGE_DELAY: &str = "1";

/// The purge delay `cli`'s command runs with when the environment does not choose one;
/// `None`: mimalloc's default (the other commands read little and exit).
fn purge_delay_for(cli: &Cli) -> Option<&'static str> {
    if cli.runs_daemon() {
        Some(DAEMON_PURGE_DELAY)
    } else if cli.runs_sync() {
        Some(SYNC_PURGE_DELAY)
    } else {
        None
    }
}

/// For `run` and `sync`, when the environment does not choose a purge delay: the same
/// program again (same pid, arguments and `argv[0]`) with [`purge_delay_for`]'s delay.
/// mimalloc reads its options once, before `main`, and setting them in-process needs
/// `unsafe`, hence the `exec`. Any failure (no `/proc/self/exe`, a binary replaced on disk)
/// just runs on with the default.
fn reexec_with_purge_delay(cli: &Cli) {
    use std::os::unix::process::CommandExt;
    let Some(delay) = purge_delay_for(cli) else {
        return;
    };
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // Only returns on failure.
    let _ = command.args(args).env(PURGE_DELAY_VAR, delay).exec();
}

/// tokio's own variable for the number of worker threads: when it is set, it decides.
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// The async worker threads of `cli`'s command; `None`: tokio's default, one per core.
///
/// `run` and `sync` drive each cycle's export from one task, and what is heavy besides
/// (reading the source, loading links, planning, the provisioning log) runs on threads of its
/// own. A second worker only moves the connections' tasks away from the export's, and every
/// answer then crosses threads: against the benchmark's sandbox on 2 cores, the initial
/// 10,000-user cycle took 1.49-1.58 s and 1.6 s of CPU with two workers, 1.24-1.34 s and
/// 1.3 s with one (README, "Performance"). The sandbox keeps one worker per core.
fn worker_threads_for(cli: &Cli) -> Option<usize> {
    if std::env::var_os(WORKER_THREADS_VAR).is_some() {
        return None;
    }
    (cli.runs_daemon() || cli.runs_sync()).then_some(1)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    reexec_with_purge_delay(&cli);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads_for(&cli) {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let code = provisiond::dispatch(cli, init_logging, shutdown_signal, reload_signal).await;
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::{log_filter, purge_delay_for, span_fields_not_in, worker_threads_for};
    use clap::Parser;

    #[test]
    fn run_and_sync_choose_their_purge_delay_the_rest_keep_mimallocs() {
        let delay = |args: &[&str]| {
            let cli = provisiond::Cli::try_parse_from(args).unwrap();
            purge_delay_for(&cli)
        };
        assert_eq!(delay(&["provisiond", "run"]), Some("0"));
        assert_eq!(delay(&["provisiond", "sync"]), Some("1"));
        assert_eq!(delay(&["provisiond", "sync", "--dry-run"]), Some("1"));
        assert_eq!(delay(&["provisiond", "status"]), None);
        assert_eq!(delay(&["provisiond", "check-config"]), None);
    }

    #[test]
    fn run_and_sync_get_one_async_worker_the_rest_one_per_core() {
        let threads = |args: &[&str]| {
            let cli = provisiond::Cli::try_parse_from(args).unwrap();
            worker_threads_for(&cli)
        };
        // The test's environment must not choose for every command.
        if std::env::var_os(super::WORKER_THREADS_VAR).is_some() {
            assert_eq!(threads(&["provisiond", "run"]), None);
            return;
        }
        assert_eq!(threads(&["provisiond", "run"]), Some(1));
        assert_eq!(threads(&["provisiond", "sync"]), Some(1));
        assert_eq!(threads(&["provisiond", "sync", "--dry-run"]), Some(1));
        assert_eq!(threads(&["provisiond", "sandbox"]), None);
        assert_eq!(threads(&["provisiond", "status"]), None);
    }

    #[test]
    fn a_text_line_never_repeats_a_span_field_the_event_has() {
        let span = "job=robin cycle_id=c1";
        assert_eq!(
            span_fields_not_in(span, "code=X job=\"robin\" cycle_id=\"c1\""),
            ""
        );
        assert_eq!(
            span_fields_not_in(span, "job=robin withheld=3"),
            "cycle_id=c1"
        );
        assert_eq!(span_fields_not_in(span, "entries=10 base=dc=x"), span);
        // A key that only ends like a span field's is not that field.
        assert_eq!(span_fields_not_in(span, "subjob=x"), span);
    }

    #[test]
    fn library_internals_are_held_at_warn_unless_named() {
        assert_eq!(
            log_filter(Some("debug"), "warn"),
            "debug,sled=warn,h2=warn,hyper=warn,hyper_util=warn,rustls=warn"
        );
        assert!(log_filter(None, "info").starts_with("info,sled=warn"));
        let named = log_filter(Some("debug,sled=trace"), "warn");
        assert!(named.starts_with("debug,sled=trace,h2=warn"), "{named}");
        assert!(!named.contains("sled=warn"), "{named}");
    }
}
