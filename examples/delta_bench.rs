//! Delta-cycle benchmark (issue 12, "Delta sources cost O(changes)"): in ONE process, as in the
//! daemon (the Graph snapshot in memory between cycles), the library's cycle against the Graph
//! emulator (`crates/graph-emulator`, pages of 999) and the SCIM sandbox, both on 127.0.0.1.
//!
//! ```text
//! cargo build --release --example delta_bench
//! target/release/examples/delta_bench [--users 1000000] [--cycles 5] [--changes 100] [--work DIR]
//! ```
//!
//! Steps: the initial cycle (full read, everything created), one no-change cycle (it records
//! the users' input digests, as any daemon's second cycle), then `--cycles` delta cycles each
//! after `--changes` users changed (a new job title), then the restart case: a new source over
//! the same store (a one-shot `sync`), after as many changes, which restores the persisted
//! snapshot and plans the whole directory. For each: wall time, Graph requests, SCIM requests,
//! the users the cycle looked at (created + updated + unchanged + disabled + deleted) and the
//! process's peak RSS so far. Set `RUST_LOG=info,provisiond::cycle=debug` for phase timings.

use graph_emulator::GraphHandle;
use provisiond::{
    run_cycle, CycleOptions, CycleSummary, GraphSettings, GraphSource, JobSpec, Mappings,
    NullPolicy, ScimClient, ScopeMode, ScopeSettings, Selection, SledStore, TargetSettings,
};
use secrecy::SecretString;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

type Result<T> = std::result::Result<T, String>;

mod common;
use common::graph::{user_id, TOKEN};

struct Args {
    users: usize,
    cycles: usize,
    changes: usize,
    work: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        users: 100_000,
        cycles: 5,
        changes: 100,
        work: PathBuf::from("target/bench-delta"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--users" => a.users = number()?,
            "--cycles" => a.cycles = number()?,
            "--changes" => a.changes = number()?,
            "--work" => a.work = PathBuf::from(&value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn job(g: &GraphHandle) -> Result<JobSpec> {
    let mappings = Mappings::generic_scim().map_err(|e| e.to_string())?;
    let scope = ScopeSettings {
        mode: ScopeMode::All,
        ..ScopeSettings::default()
    };
    let c = g.config();
    let mut s = GraphSettings::new(
        &c.tenant_id,
        &c.client_id,
        c.client_secret.clone(),
        &c.service_principal_id,
    )
    .map_err(|e| e.to_string())?;
    s.authority = url::Url::parse(&g.authority()).map_err(|e| e.to_string())?;
    s.graph_url = url::Url::parse(&g.graph_url()).map_err(|e| e.to_string())?;
    s.select = Selection::for_job(&mappings, &scope, &[], &[]).map_err(|e| e.to_string())?;
    s.read_timeout = Duration::from_secs(3600);
    s.full_read_interval = Duration::from_secs(7 * 86_400);
    Ok(JobSpec {
        name: "bench".into(),
        source: Box::new(GraphSource::new(s)),
        scope,
        mappings,
        null_values: NullPolicy::Leave,
        concurrency: 8,
        member_batch: 100,
        safety: Default::default(),
    })
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Users a cycle looked at: a delta cycle counts only those of its view.
fn looked_at(s: &CycleSummary) -> u64 {
    s.users.created + s.users.updated + s.users.unchanged + s.users.disabled + s.users.deleted
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("delta_bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let a = parse_args()?;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if a.work.exists() {
        std::fs::remove_dir_all(&a.work).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&a.work).map_err(|e| e.to_string())?;
    let (g, h) = common::graph::start(a.users).await?;
    let url = url::Url::parse(&h.base_url()).map_err(|e| e.to_string())?;
    let mut target = TargetSettings::new(url, SecretString::from(TOKEN));
    target.concurrency = 8;
    let client = ScimClient::new(target).map_err(|e| e.to_string())?;
    let store = SledStore::open(&a.work.join("state")).map_err(|e| e.to_string())?;
    let job = job(&g)?;
    let stop = CancellationToken::new();

    println!(
        "{} users, {} changes per cycle (load: {})",
        a.users,
        a.changes,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut results = Vec::new();
    let mut round = 0usize;
    let mut step = |name: String, s: CycleSummary, wall: f64, g: &GraphHandle| {
        let graph = g.requests().len();
        let r = &s.requests;
        println!(
            "{name:<28} {wall:>8.3} s  graph requests {graph:>5}  scim GET {} POST {} PATCH {} DELETE {}  users looked at {:>8} (updated {}, created {})  kind {}  peak RSS {:.0} MB",
            r.get, r.post, r.patch, r.delete, looked_at(&s), s.users.updated, s.users.created, s.kind, peak_rss_mb()
        );
        results.push(
            json!({"step": name, "wall_s": wall, "graph_requests": graph,
            "scim": r, "looked_at": looked_at(&s), "users": s.users, "kind": s.kind.to_string(),
            "peak_rss_mb": peak_rss_mb()}),
        );
    };
    let opts = CycleOptions::default();
    let timed = |g: &GraphHandle| {
        g.clear_requests();
        Instant::now()
    };

    let t = timed(&g);
    let s = run_cycle(&job, &store, &client, &opts, &stop).await.summary;
    step("initial".into(), s, t.elapsed().as_secs_f64(), &g);
    let t = timed(&g);
    let s = run_cycle(&job, &store, &client, &opts, &stop).await.summary;
    step(
        "no change (digests)".into(),
        s,
        t.elapsed().as_secs_f64(),
        &g,
    );
    let change = |g: &GraphHandle, round: usize| {
        for i in 0..a.changes {
            let id = user_id((i * 7919 + round * 104_729) % a.users);
            g.update_user(&id, json!({"jobTitle": format!("Title {round}")}));
        }
    };
    for c in 0..a.cycles {
        round += 1;
        change(&g, round);
        let t = timed(&g);
        let s = run_cycle(&job, &store, &client, &opts, &stop).await.summary;
        step(
            format!("delta cycle {}", c + 1),
            s,
            t.elapsed().as_secs_f64(),
            &g,
        );
    }
    // The restart: a new source (nothing in memory) over the same store.
    round += 1;
    change(&g, round);
    drop(job);
    let restarted = self::job(&g)?;
    let t = timed(&g);
    let s = run_cycle(&restarted, &store, &client, &opts, &stop)
        .await
        .summary;
    step(
        "restart (restored snapshot)".into(),
        s,
        t.elapsed().as_secs_f64(),
        &g,
    );
    round += 1;
    change(&g, round);
    let t = timed(&g);
    let s = run_cycle(&restarted, &store, &client, &opts, &stop)
        .await
        .summary;
    step(
        "delta cycle after restart".into(),
        s,
        t.elapsed().as_secs_f64(),
        &g,
    );

    let out = a.work.join("results.json");
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(&results).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!("results: {}", out.display());
    drop(store);
    std::fs::remove_dir_all(a.work.join("state")).map_err(|e| e.to_string())?;
    Ok(())
}
