//! The LDAP source's benchmark (a report, not a timed test):
//!
//! ```sh
//! cargo run --release --example ldap_bench            # 10,000 users in 10 groups
//! cargo run --release --example ldap_bench -- 50000   # another size
//! cargo run --release --example ldap_bench -- --delta --users 100000 --changes 100 --cycles 3 \
//!     [--work DIR]                                      # delta cycles (issue 12)
//! ```
//!
//! Loads the users into a local slapd (see `tests/it/support/slapd.rs`; needs Debian's `slapd`),
//! then reports a full read (entries per second, this process's peak RSS), an incremental read
//! after 10 users changed (entries read, wall time), and the same as provisioning cycles into
//! the in-memory SCIM sandbox.
//!
//! `--delta` (issue 12, "Delta sources cost O(changes)"): `--users` users and one group of 100
//! members per 500 users (the issue's 1,000,000 users / 2,000 groups / 200,000 memberships
//! shape), `scope = "all"`, a sled store under `--work`; the initial cycle, a no-change
//! cycle, then `--cycles` delta cycles each after `--changes` users changed (a new title): for
//! each, the wall time, the entries the LDAP read fetched, the SCIM requests, the users the
//! cycle looked at and the process's RSS (now and peak).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/it/support/slapd.rs"]
mod slapd;

use provisiond::Mappings;
use provisiond::MemoryStore;
use provisiond::NullPolicy;
use provisiond::Source;
use provisiond::{run_cycle, CycleOptions, JobSpec};
use provisiond::{spawn_sandbox, SandboxConfig};
use provisiond::{Flavour, LdapSettings, LdapSource};
use provisiond::{ScimClient, TargetSettings};
use provisiond::{ScopeMode, ScopeSettings};
use secrecy::SecretString;
use slapd::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const GROUPS_N: usize = 10;
const CHANGED: usize = 10;

/// This process's peak resident set size (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Reset the peak RSS to the current RSS (Linux: `5` to clear_refs), so the next reading
/// is the peak of what follows.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn ldif(users: usize) -> String {
    let mut s = String::with_capacity(users * 400);
    for i in 0..users {
        let uid = format!("user{i:06}");
        s += &ldif_person(
            &uid,
            "Bench",
            &format!("User {i}"),
            &format!(
                "displayName: Bench User {i}\ntitle: Engineer\ndepartmentNumber: Dept {}\nemployeeNumber: {i}\n",
                i % GROUPS_N
            ),
        );
    }
    for g in 0..GROUPS_N {
        let members: Vec<String> = (0..users)
            .filter(|i| i % GROUPS_N == g)
            .map(|i| user_dn(&format!("user{i:06}")))
            .collect();
        s += &ldif_group(&format!("Group {g}"), "groupOfNames", &members);
    }
    s
}

fn settings(server: &Slapd) -> LdapSettings {
    let mut s = LdapSettings::new(Flavour::OpenLdap, &server.url(), PEOPLE);
    s.group_base = GROUPS.into();
    s.bind_dn = Some(READER_DN.into());
    s.password = Some(SecretString::from(READER_PW));
    s
}

/// The benchmark's job: every entry in scope, the generic SCIM mappings, 8 requests at once.
fn bench_job(settings: LdapSettings) -> JobSpec {
    JobSpec {
        name: "bench".into(),
        source: Box::new(LdapSource::new(settings)),
        scope: ScopeSettings {
            mode: ScopeMode::All,
            ..ScopeSettings::default()
        },
        mappings: Mappings::generic_scim().unwrap(),
        null_values: NullPolicy::Leave,
        concurrency: 8,
        member_batch: 100,
        safety: Default::default(),
    }
}

async fn change_users(server: &Slapd, round: usize) {
    let mut admin = server.admin().await;
    for i in 0..CHANGED {
        let title = format!("Engineer round {round}");
        set_title(&mut admin, &format!("user{:06}", i * 997), &title).await;
    }
    let _ = admin.unbind().await;
}

/// Replaces the `title` of the user `uid`: the change both benchmarks make.
async fn set_title(admin: &mut ldap3::Ldap, uid: &str, title: &str) {
    admin
        .modify(
            &user_dn(uid),
            vec![ldap3::Mod::Replace("title", HashSet::from([title]))],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
}

#[tokio::main]
async fn main() {
    if !available() {
        return;
    }
    if std::env::args().any(|a| a == "--delta") {
        delta::run().await;
        return;
    }
    let users: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let t = Instant::now();
    let text = ldif(users);
    let server = Slapd::start(
        &text,
        &Options {
            size_limit: 500,
            ..Options::default()
        },
    );
    drop(text);
    println!(
        "slapd loaded with {users} users in {GROUPS_N} groups in {:.1} s (slapadd)",
        t.elapsed().as_secs_f64()
    );

    // 1. The source alone.
    let source = LdapSource::new(settings(&server));
    reset_peak_rss();
    let rss_before = peak_rss_mib();
    let r = source.read(None).await.unwrap();
    let full = source.last_read().unwrap();
    let rss_peak = peak_rss_mib();
    assert!(r.directory.complete && r.directory.users.len() == users);
    let secs = full.duration.as_secs_f64();
    println!(
        "full read:        {} entries in {:.3} s = {:.0} entries/s; peak RSS {:.1} MiB (before the read {:.1} MiB)",
        full.entries_read,
        secs,
        full.entries_read as f64 / secs,
        rss_peak,
        rss_before
    );
    drop(r);

    change_users(&server, 1).await;
    let t = Instant::now();
    let r = source.read(Some("x")).await.unwrap();
    let wall = t.elapsed();
    let inc = source.last_read().unwrap();
    assert!(!inc.full && r.directory.complete && r.directory.users.len() == users);
    println!(
        "incremental read: {CHANGED} of {users} users changed: {} entries read, {:.1} ms wall (the whole {users}-user directory returned)",
        inc.entries_read,
        wall.as_secs_f64() * 1000.0
    );
    drop(r);

    // 2. Whole cycles into the SCIM sandbox.
    let h = spawn_sandbox("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .unwrap();
    let mut ts = TargetSettings::new(
        url::Url::parse(&h.base_url()).unwrap(),
        SecretString::from("bench"),
    );
    ts.request_timeout = Duration::from_secs(30);
    let target = ScimClient::new(ts).unwrap();
    let store = MemoryStore::new();
    let job = bench_job(settings(&server));
    let stop = CancellationToken::new();
    let opts = CycleOptions::default();
    let first = run_cycle(&job, &store, &target, &opts, &stop).await.summary;
    println!(
        "initial cycle:    {} users and {} groups created, {} memberships, {:.1} s",
        first.users.created,
        first.groups.created,
        first.memberships.added,
        first.duration_ms as f64 / 1000.0
    );
    change_users(&server, 2).await;
    let t = Instant::now();
    let second = run_cycle(&job, &store, &target, &opts, &stop).await.summary;
    println!(
        "incremental cycle: {} users updated, {} unchanged, {} requests, {:.1} ms wall ({:?}, source complete: {})",
        second.users.updated,
        second.users.unchanged,
        second.requests.total(),
        t.elapsed().as_secs_f64() * 1000.0,
        second.status,
        second.source_complete
    );
}

/// `--delta`: LDAP delta cycles over a big snapshot.
mod delta {
    use super::*;
    use provisiond::{CycleSummary, SledStore};
    use std::path::PathBuf;

    /// Members of each group; one group per [`USERS_PER_GROUP`] users.
    const MEMBERS: usize = 100;
    const USERS_PER_GROUP: usize = 500;

    fn rss_mib(field: &str) -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }

    fn ldif(users: usize) -> String {
        let mut s = String::with_capacity(users * 400);
        for i in 0..users {
            let uid = format!("user{i:07}");
            s += &ldif_person(
                &uid,
                "Bench",
                &format!("User {i}"),
                &format!("displayName: Bench User {i}\ntitle: Engineer\nemployeeNumber: {i}\n"),
            );
        }
        for g in 0..(users / USERS_PER_GROUP).max(1) {
            let members: Vec<String> = (0..MEMBERS)
                .map(|k| g * USERS_PER_GROUP + k)
                .filter(|i| *i < users)
                .map(|i| user_dn(&format!("user{i:07}")))
                .collect();
            s += &ldif_group(&format!("Group {g}"), "groupOfNames", &members);
        }
        s
    }

    fn looked_at(s: &CycleSummary) -> u64 {
        s.users.created + s.users.updated + s.users.unchanged + s.users.disabled + s.users.deleted
    }

    pub(super) async fn run() {
        let mut users = 100_000usize;
        let mut changes = 100usize;
        let mut cycles = 3usize;
        let mut work = PathBuf::from("target/bench-ldap-delta");
        let mut it = std::env::args().skip(1).filter(|a| a != "--delta");
        while let Some(flag) = it.next() {
            let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
            match flag.as_str() {
                "--users" => users = value.parse().unwrap(),
                "--changes" => changes = value.parse().unwrap(),
                "--cycles" => cycles = value.parse().unwrap(),
                "--work" => work = PathBuf::from(value),
                _ => panic!("unknown flag {flag}"),
            }
        }
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let t = Instant::now();
        let text = ldif(users);
        let server = Slapd::start(
            &text,
            &Options {
                size_limit: 500,
                ..Options::default()
            },
        );
        drop(text);
        let groups = (users / USERS_PER_GROUP).max(1);
        println!(
            "slapd loaded with {users} users in {groups} groups of {MEMBERS} in {:.1} s (LDIF and slapadd); load: {}",
            t.elapsed().as_secs_f64(),
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        );
        let h = spawn_sandbox("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
            .await
            .unwrap();
        let mut ts = TargetSettings::new(
            url::Url::parse(&h.base_url()).unwrap(),
            SecretString::from("bench"),
        );
        ts.request_timeout = Duration::from_secs(60);
        ts.concurrency = 8;
        let target = ScimClient::new(ts).unwrap();
        let store = SledStore::open(&work.join("state")).unwrap();
        let mut s = settings(&server);
        s.timeout = Duration::from_secs(600);
        let job = bench_job(s);
        let stop = CancellationToken::new();
        let opts = CycleOptions::default();
        let step = |name: &str, s: &CycleSummary, wall: f64| {
            let r = &s.requests;
            println!(
                "{name:<22} {wall:>8.3} s  scim GET {} POST {} PATCH {} DELETE {}  users looked at {:>8} (updated {}, created {})  kind {}  RSS {:.0} MiB, peak {:.0} MiB",
                r.get, r.post, r.patch, r.delete, looked_at(s), s.users.updated, s.users.created, s.kind,
                rss_mib("VmRSS:"), rss_mib("VmHWM:")
            );
        };
        let t = Instant::now();
        let s = run_cycle(&job, &store, &target, &opts, &stop).await.summary;
        step("initial", &s, t.elapsed().as_secs_f64());
        let t = Instant::now();
        let s = run_cycle(&job, &store, &target, &opts, &stop).await.summary;
        step("no change", &s, t.elapsed().as_secs_f64());
        for c in 1..=cycles {
            let mut admin = server.admin().await;
            let title = format!("Engineer round {c}");
            for i in 0..changes {
                let uid = format!("user{:07}", (i * 7919 + c * 104_729) % users);
                set_title(&mut admin, &uid, &title).await;
            }
            let _ = admin.unbind().await;
            let t = Instant::now();
            let s = run_cycle(&job, &store, &target, &opts, &stop).await.summary;
            step(&format!("delta cycle {c}"), &s, t.elapsed().as_secs_f64());
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&work);
    }
}
