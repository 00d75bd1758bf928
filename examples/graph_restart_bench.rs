//! Restart benchmark for the Graph source (issue 12, "Restart resumes"): what a one-shot
//! `provisiond sync` costs after a restart, with the snapshot and delta links kept in the
//! state store, against the full read every restart used to need.
//!
//! ```text
//! cargo build --release --bin provisiond --example graph_restart_bench
//! target/release/examples/graph_restart_bench [--users 100000] [--changes 100] [--work DIR] [--bin PATH]
//! ```
//!
//! In this process: the Graph emulator (`crates/graph-emulator`, pages of 999) with N users and
//! the SCIM sandbox, both on 127.0.0.1. As child processes, each a fresh provisiond (a
//! restart): (1) the initial `sync` (full read, everything created); (1b) `sync` with no
//! change (it records the users' input digests); (2) after `--changes`
//! users changed, `sync` again: it continues from the stored delta links; (3) after as many
//! changes again, `sync` with `full_read_interval = "1s"`, so the stored snapshot is too old
//! and the tenant is read whole, which is what every restart cost before. For each: wall time,
//! peak RSS (`/usr/bin/time %M`), Graph requests and the cycle's counts.

use graph_emulator::GraphHandle;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

type Result<T> = std::result::Result<T, String>;

mod common;
use common::graph::TOKEN;

struct Args {
    users: usize,
    changes: usize,
    work: PathBuf,
    bin: PathBuf,
}

fn parse_args() -> Result<Args> {
    let default_bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("provisiond")))
        .unwrap_or_else(|| PathBuf::from("target/release/provisiond"));
    let mut a = Args {
        users: 100_000,
        changes: 100,
        work: PathBuf::from("target/bench-graph-restart"),
        bin: default_bin,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--users" => a.users = number()?,
            "--changes" => a.changes = number()?,
            "--work" => a.work = PathBuf::from(&value),
            "--bin" => a.bin = PathBuf::from(&value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn write_config(
    dir: &Path,
    g: &GraphHandle,
    scim_url: &str,
    full_read_interval: &str,
) -> Result<PathBuf> {
    let c = g.config();
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).map_err(|e| e.to_string())?;
    let config = dir.join(format!("provisiond-{full_read_interval}.toml"));
    let text = format!(
        "state_dir = {state:?}\ncontrol_socket = {sock:?}\nlog_format = \"json\"\n\n\
         [[jobs]]\nname = \"bench\"\ninterval = \"40m\"\nscope = \"all\"\n\n\
         [jobs.source]\nkind = \"graph\"\ntenant_id = {tenant:?}\nclient_id = {client:?}\n\
         client_secret_env = \"BENCH_GRAPH_SECRET\"\nservice_principal_id = {sp:?}\n\
         authority = {authority:?}\ngraph_url = {graph:?}\nfull_read_interval = {full_read_interval:?}\n\n\
         [jobs.target]\nurl = {scim_url:?}\ntoken_file = {token:?}\nconcurrency = 8\n",
        state = dir.join("state"),
        sock = dir.join("control.sock"),
        tenant = c.tenant_id,
        client = c.client_id,
        sp = c.service_principal_id,
        authority = g.authority(),
        graph = g.graph_url(),
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    Ok(config)
}

/// One `provisiond sync --json` as a new process: (summary, wall seconds, peak RSS in KiB).
fn sync(bin: &Path, config: &Path, secret: &str, log: &Path) -> Result<(Value, f64, u64)> {
    let stderr = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let time_out = log.with_extension("time");
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&time_out)
        .arg(bin)
        .arg("--config")
        .arg(config)
        .args(["sync", "--json"])
        .env("BENCH_GRAPH_SECRET", secret)
        .env("RUST_LOG", "info,provisiond::cycle=debug")
        .stdin(Stdio::null())
        .stderr(stderr)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string(&time_out)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("sync printed no summary; see {}", log.display()))?;
    Ok((summary, wall, rss))
}

fn graph_requests(g: &GraphHandle) -> Value {
    let all = g.requests();
    let count = |p: &str| all.iter().filter(|r| r.contains(p)).count();
    json!({
        "total": all.len(),
        "users_delta_pages": count("/users/delta"),
        "from_delta_link": count("$deltatoken"),
    })
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("graph_restart_bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let a = parse_args()?;
    if a.work.exists() {
        std::fs::remove_dir_all(&a.work).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&a.work).map_err(|e| e.to_string())?;
    let (g, h) = common::graph::start(a.users).await?;
    let secret = g.config().client_secret.expose_secret().to_string();
    let resume = write_config(&a.work, &g, &h.base_url(), "7d")?;
    let expired = write_config(&a.work, &g, &h.base_url(), "1s")?;

    let mut results = Vec::new();
    let mut step = |name: &str, config: &Path, g: &GraphHandle| -> Result<()> {
        g.clear_requests();
        let bin = a.bin.clone();
        let log = a.work.join(format!("{name}.log"));
        let (summary, wall, rss) = sync(&bin, config, &secret, &log)?;
        let requests = graph_requests(g);
        println!(
            "{name:<28} {wall:>7.2} s  {:>7.1} MB peak RSS  graph requests {}  users created {} updated {}",
            rss as f64 / 1024.0,
            requests,
            summary.pointer("/users/created").unwrap_or(&Value::Null),
            summary.pointer("/users/updated").unwrap_or(&Value::Null),
        );
        results.push(json!({"step": name, "wall_s": wall, "peak_rss_kb": rss,
                            "graph_requests": requests, "users": summary.get("users")}));
        Ok(())
    };
    println!("{} users, {} changes per restart", a.users, a.changes);
    step("initial (full read)", &resume, &g)?;
    // A no-change restart: it maps every user once more and stores each one's input digest,
    // as any daemon's second cycle does; from then on an unchanged user is not mapped.
    step("restart, no change", &resume, &g)?;
    let change = |g: &GraphHandle, round: usize| {
        for i in 0..a.changes {
            let id = format!(
                "00000000-0000-4000-8000-{:012}",
                (i * 7919 + round) % a.users
            );
            g.update_user(&id, json!({"jobTitle": format!("Title {round}")}));
        }
    };
    change(&g, 1);
    step("restart, resumes from delta", &resume, &g)?;
    change(&g, 2);
    // Past full_read_interval: the pre-persistence cost of every restart.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    step("restart, full read", &expired, &g)?;
    let out = a.work.join("results.json");
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(&results).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!("results: {}", out.display());
    std::fs::remove_dir_all(a.work.join("state")).map_err(|e| e.to_string())?;
    Ok(())
}
