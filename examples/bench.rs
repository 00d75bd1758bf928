//! The provisiond benchmark: (a) an initial cycle and (b) a no-change incremental cycle
//! against the sandbox, each run as separate processes so that the provisiond figures
//! (wall time, peak RSS, CPU) are provisiond's alone.
//!
//! Run it with `bench/run.sh` (builds the release binary and this example, then runs it):
//!
//! ```text
//! bench/run.sh [--users 10000] [--groups 500] [--members-per-group 100]
//!              [--incremental-users 100000] [--incremental-groups 1000]
//!              [--only initial|floor|incremental] [--concurrency 8] [--log info|warn]
//!              [--repeat 5]
//!              [--bin PATH] [--work DIR]
//! bench/run.sh --only soak [--soak-jobs 3] [--soak-users 10000] [--soak-minutes 8]
//!              [--soak-interval-s 5] [--soak-change-every-s 60]
//! bench/run.sh --only crash [--crash-users 1000000] [--crash-groups 2000]
//! ```
//!
//! The crash scenario (`--only crash`): an initial cycle of `--crash-users` users against a
//! sandbox (a separate process, so it outlives the daemon), `kill -9` of `provisiond sync`
//! once the sandbox holds about half the users (its `GET /Users?count=0`, whose
//! `totalResults` costs the sandbox a length and no resource, polled twice a second), then
//! `sync` again until one succeeds, then checks against the sandbox: every directory user
//! exists exactly once (by `userName` and by `externalId`), every group once with exactly its
//! members, and a last `sync` sends no write.
//!
//! The soak (`--only soak`) runs `provisiond run` with `--soak-jobs` file-source jobs of
//! `--soak-users` users each against one sandbox, rewrites one job's directory with a changed
//! user every `--soak-change-every-s` seconds, samples the daemon's RSS every second and
//! reports its minimum, median and maximum after the first cycles (warm-up) and the trend
//! (MB per minute, least squares), with the cycles and warnings its log counted.
//!
//! For each scenario it writes a deterministic Entra-style directory export, starts
//! `provisiond sandbox --listen 127.0.0.1:0 --token …` as a child, writes a config, runs
//! `provisiond sync --json` under `/usr/bin/time` (peak RSS, CPU) and reads the cycle
//! summary. Results go to stdout as a table and to `target/bench-results.json`.
//!
//! The floor (part of (a), and alone with `--only floor`, which repeats (a) `--repeat` times
//! and reports the median ratio): `wrk` with `bench/floor.lua`, as many connections as the
//! daemon's concurrency, replays the request mix the daemon's initial cycle just sent (its
//! searches, then its creates with unique bodies, then its membership and manager patches)
//! against a fresh sandbox. Floor seconds are the three phases' sum; the ratio is the
//! daemon's wall time (process start to exit) over the floor. The same creates are then sent
//! by HTTP clients alone (provisiond's SCIM client, reqwest, hyper's bare connections) on one
//! async worker, for their wall time and CPU per request: how much of the daemon's distance
//! from the floor is its client.

use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

const TOKEN: &str = "bench-token";

struct Args {
    users: usize,
    groups: usize,
    members_per_group: usize,
    incremental_users: usize,
    incremental_groups: usize,
    /// No-change cycles to run: this machine's wall times vary by ±20% from run to run, so
    /// the median is reported, with the fastest and slowest.
    repeat: usize,
    only: Option<String>,
    concurrency: usize,
    log: String,
    bin: PathBuf,
    work: PathBuf,
    soak_jobs: usize,
    soak_users: usize,
    soak_minutes: f64,
    soak_interval_s: u64,
    soak_change_every_s: u64,
    crash_users: usize,
    crash_groups: usize,
}

fn usage() -> String {
    "usage: bench [--users N] [--groups N] [--members-per-group N] [--incremental-users N] \
     [--incremental-groups N] [--only initial|floor|incremental] [--concurrency N] \
     [--log info|warn|FILTER] [--repeat N] [--bin PATH] [--work DIR]\n       bench --only soak [--soak-jobs N] \
     [--soak-users N] [--soak-minutes M] [--soak-interval-s S] [--soak-change-every-s S]\n       \
     bench --only crash [--crash-users N] [--crash-groups N] [--members-per-group N]"
        .to_string()
}

fn parse_args() -> Result<Args> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The example lives in <target>/release/examples/; the binary in <target>/release/.
    let default_bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("provisiond")))
        .unwrap_or_else(|| repo.join("target/release/provisiond"));
    let mut a = Args {
        users: 10_000,
        groups: 500,
        members_per_group: 100,
        incremental_users: 100_000,
        incremental_groups: 0,
        repeat: 5,
        only: None,
        concurrency: 8,
        log: "info".into(),
        bin: default_bin,
        work: repo.join("target/bench"),
        soak_jobs: 3,
        soak_users: 10_000,
        soak_minutes: 8.0,
        soak_interval_s: 5,
        soak_change_every_s: 60,
        crash_users: 1_000_000,
        crash_groups: 2_000,
    };
    let mut incremental_groups = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let num = || {
            value
                .replace('_', "")
                .parse::<usize>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--users" => a.users = num()?,
            "--groups" => a.groups = num()?,
            "--members-per-group" => a.members_per_group = num()?,
            "--incremental-users" => a.incremental_users = num()?,
            "--incremental-groups" => incremental_groups = Some(num()?),
            "--repeat" => a.repeat = num()?.max(1),
            "--concurrency" => a.concurrency = num()?.max(1),
            "--only"
                if ["initial", "floor", "incremental", "soak", "crash"]
                    .contains(&value.as_str()) =>
            {
                a.only = Some(value)
            }
            "--crash-users" => a.crash_users = num()?.max(2),
            "--crash-groups" => a.crash_groups = num()?,
            "--soak-jobs" => a.soak_jobs = num()?.max(1),
            "--soak-users" => a.soak_users = num()?.max(1),
            "--soak-minutes" => {
                a.soak_minutes = value
                    .parse::<f64>()
                    .map_err(|e| format!("{flag}: {e}"))?
                    .max(0.1)
            }
            "--soak-interval-s" => a.soak_interval_s = num()?.max(1) as u64,
            "--soak-change-every-s" => a.soak_change_every_s = num()?.max(1) as u64,
            // `info`, `warn`, or any filter (`info,provisiond::cycle=debug` logs each phase
            // with its peak RSS).
            "--log" => a.log = value,
            "--bin" => a.bin = PathBuf::from(value),
            "--work" => a.work = PathBuf::from(value),
            _ => return Err(format!("unknown option {flag} {value}\n{}", usage())),
        }
    }
    // Same shape as (a) by default: a group per 100 users, `members_per_group` members each.
    a.incremental_groups = incremental_groups.unwrap_or(a.incremental_users / 100);
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// The synthetic directory

const GIVEN: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë",
];
const SURNAMES: &[&str] = &[
    "Liddell", "Marley", "Danvers", "Bowman", "Okafor", "Nakamura", "Hopper", "Lamarr", "Lovelace",
    "Turing", "Müller", "García", "O'Brien", "Dubois", "Kowalski", "Haddad",
];
const DEPARTMENTS: &[&str] = &[
    "R&D",
    "Sales",
    "Marketing",
    "Finance",
    "Legal",
    "Support",
    "Operations",
    "HR",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Account Executive",
    "Analyst",
    "Manager",
    "Director",
    "Designer",
    "Specialist",
];
const CITIES: &[(&str, &str)] = &[
    ("Oxford", "GB"),
    ("Paris", "FR"),
    ("Berlin", "DE"),
    ("Seattle", "US"),
    ("Tokyo", "JP"),
];

fn user_id(i: usize) -> String {
    format!("6f1c{:04x}-5c0a-4bd8-9b59-{:012x}", i % 0xffff, i)
}

fn group_id(g: usize) -> String {
    format!("0a9e{:04x}-77aa-4c1e-8e0f-{:012x}", g % 0xffff, g)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// What a generated directory holds, for the report.
#[derive(Clone, Copy)]
struct Shape {
    users: usize,
    groups: usize,
    memberships: usize,
    managers: usize,
    direct_assignments: usize,
}

/// A step coprime with `n`, so that `start + k * step (mod n)` visits distinct users.
fn coprime_step(n: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let mut step = (n / 7).max(1) + 1;
    while n > 1 && gcd(step, n) != 1 {
        step += 1;
    }
    step
}

/// Writes a deterministic Entra-style export: every group assigned to the app (users are in
/// scope as direct members of assigned groups), users in no group assigned directly, and a
/// manager for three users out of four (the one above them in a tree of span 8).
///
/// `generation` > 0 changes one user's job title (user `generation % users`), for the soak's
/// directory changes.
fn write_directory(
    path: &Path,
    users: usize,
    groups: usize,
    per_group: usize,
    generation: usize,
) -> Result<Shape> {
    let per_group = per_group.min(users);
    let mut covered = vec![false; users];
    let step = coprime_step(users);
    let mut out = String::with_capacity(users * 480 + groups * per_group * 40);
    let mut managers = 0;
    out.push_str("{\"users\": [\n");
    for i in 0..users {
        let given = GIVEN[i % GIVEN.len()];
        let surname = SURNAMES[(i / GIVEN.len()) % SURNAMES.len()];
        let nick = format!("user{i:06}");
        let upn = format!("{nick}@contoso.com");
        let (city, country) = CITIES[i % CITIES.len()];
        if i > 0 {
            out.push_str(",\n");
        }
        let _ = write!(
            out,
            "{{\"id\": \"{}\", \"userPrincipalName\": \"{upn}\", \"mail\": \"{upn}\", \
             \"givenName\": {}, \"surname\": {}, \"displayName\": {}, \"accountEnabled\": true, \
             \"jobTitle\": \"{}\", \"department\": \"{}\", \"employeeId\": \"{}\", \
             \"mailNickname\": \"{nick}\", \"city\": \"{city}\", \"country\": \"{country}\"",
            user_id(i),
            json_str(given),
            json_str(surname),
            json_str(&format!("{given} {surname} {i}")),
            if generation > 0 && i == generation % users {
                format!("Title {generation}")
            } else {
                TITLES[(i / 3) % TITLES.len()].to_string()
            },
            DEPARTMENTS[(i / 5) % DEPARTMENTS.len()],
            100_000 + i,
        );
        if i >= 8 && i % 4 != 0 {
            managers += 1;
            let _ = write!(out, ", \"manager\": \"{}\"", user_id(i / 8));
        }
        out.push('}');
    }
    out.push_str("\n],\n\"groups\": [\n");
    let mut memberships = 0;
    for g in 0..groups {
        if g > 0 {
            out.push_str(",\n");
        }
        let dept = DEPARTMENTS[g % DEPARTMENTS.len()];
        let _ = write!(
            out,
            "{{\"id\": \"{}\", \"displayName\": {}, \"mailNickname\": \"group{g:05}\", \"members\": [",
            group_id(g),
            json_str(&format!("{dept} team {g:05}")),
        );
        let start = g * per_group;
        for k in 0..per_group {
            let u = (start + k * step) % users;
            covered[u] = true;
            memberships += 1;
            if k > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{}\"", user_id(u));
        }
        out.push_str("]}");
    }
    out.push_str("\n],\n\"assignments\": [\n");
    let mut first = true;
    let mut direct = 0;
    let mut assign = |out: &mut String, id: String| {
        if !first {
            out.push_str(",\n");
        }
        first = false;
        let _ = write!(out, "{{\"principalId\": \"{id}\", \"role\": \"User\"}}");
    };
    for g in 0..groups {
        assign(&mut out, group_id(g));
    }
    for (i, c) in covered.iter().enumerate() {
        if !c {
            direct += 1;
            assign(&mut out, user_id(i));
        }
    }
    out.push_str("\n]}\n");
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Shape {
        users,
        groups,
        memberships,
        managers,
        direct_assignments: direct,
    })
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The sandbox child; killed (by its pid) when dropped.
struct Sandbox {
    child: Child,
    url: String,
}

impl Sandbox {
    fn start(bin: &Path, log: &Path) -> Result<Sandbox> {
        let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(bin)
            .args(["sandbox", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {} sandbox: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("sandbox stdout not captured")?;
        let mut lines = BufReader::new(stdout).lines();
        // "SCIM 2.0 sandbox listening on http://127.0.0.1:PORT (bearer token required); …"
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                        break url.to_string();
                    }
                }
                Some(Err(e)) => return Err(format!("reading the sandbox's stdout: {e}")),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the sandbox exited before printing its URL (see {})",
                        log.display()
                    ));
                }
            }
        };
        // Keep draining its stdout so that it can never block on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Sandbox { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sandbox's own count of requests received, per method (`/_sandbox/stats`).
    fn stats(&self) -> Result<Value> {
        let addr = self.url.trim_start_matches("http://");
        let mut s =
            std::net::TcpStream::connect(addr).map_err(|e| format!("sandbox stats: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        write!(
            s,
            "GET /_sandbox/stats HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n"
        )
        .map_err(|e| format!("sandbox stats: {e}"))?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)
            .map_err(|e| format!("sandbox stats: {e}"))?;
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).map_err(|e| format!("sandbox stats: {e}: {resp}"))
    }

    /// `GET path` (with its query) from the sandbox, as JSON.
    fn get(&self, path: &str) -> Result<Value> {
        let addr = self.url.trim_start_matches("http://");
        let mut s =
            std::net::TcpStream::connect(addr).map_err(|e| format!("sandbox {path}: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Connection: close\r\n\r\n"
        )
        .map_err(|e| format!("sandbox {path}: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .map_err(|e| format!("sandbox {path}: {e}"))?;
        let resp = String::from_utf8_lossy(&resp);
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).map_err(|e| format!("sandbox {path}: {e}"))
    }

    /// How many resources a collection (`Users`, `Groups`) holds: `count=0` asks for the total
    /// alone, which the sandbox answers without reading a resource.
    fn count(&self, collection: &str) -> Result<u64> {
        let v = self.get(&format!("/{collection}?count=0"))?;
        v["totalResults"]
            .as_u64()
            .ok_or_else(|| format!("sandbox {collection}: no totalResults in {v}"))
    }

    /// `each` over every resource of a collection with the given attributes (and `id`), page
    /// by page. A page that times out (a loaded machine: the sandbox walks to `startIndex`
    /// for every page) is asked again, up to three times.
    fn each(
        &self,
        collection: &str,
        attributes: &str,
        mut each: impl FnMut(&Value),
    ) -> Result<usize> {
        let mut seen = 0;
        loop {
            let path = format!(
                "/{collection}?startIndex={}&count=1000&attributes={attributes}",
                seen + 1
            );
            let mut tries = 0;
            let page = loop {
                match self.get(&path) {
                    Ok(p) => break p,
                    Err(e) if tries < 3 => {
                        tries += 1;
                        eprintln!("crash: {e}; asking again");
                    }
                    Err(e) => return Err(e),
                }
            };
            let resources = page["Resources"].as_array().map_or(&[][..], Vec::as_slice);
            let total = page["totalResults"].as_u64().unwrap_or(0) as usize;
            resources.iter().for_each(&mut each);
            seen += resources.len();
            if resources.is_empty() || seen >= total {
                return Ok(seen);
            }
        }
    }

    fn stop(mut self) -> Result<()> {
        self.kill()
    }

    fn kill(&mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_none() {
            // `Child::kill` signals exactly this pid.
            self.child
                .kill()
                .map_err(|e| format!("cannot stop the sandbox (pid {}): {e}", self.pid()))?;
        }
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// CPU seconds (user + system) a live process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A `/proc/<pid>/status` field in kB.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What one `provisiond sync --json` run measured.
struct Run {
    summary: Value,
    wall_s: f64,
    peak_rss_kb: u64,
    cpu_s: Option<f64>,
    rss_method: &'static str,
}

fn sync(bin: &Path, config: &Path, log_level: &str, log: &Path) -> Result<Run> {
    let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let time = Path::new("/usr/bin/time");
    let time_out = log.with_extension("time");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(&time_out)
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg("--config")
        .arg(config)
        .args(["--log-format", "json", "sync", "--json"])
        .env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut stdout = child.stdout.take().ok_or("sync stdout not captured")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (status, peak_rss_kb, cpu_s, rss_method) = if time.exists() {
        let status = child.wait().map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&time_out).unwrap_or_default();
        // GNU time prints "Command exited with non-zero status N" first when it fails.
        let last = text.lines().last().unwrap_or("");
        let f: Vec<f64> = last
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (
            status,
            f.first().copied().unwrap_or(0.0) as u64,
            f.get(1).zip(f.get(2)).map(|(u, s)| u + s),
            "/usr/bin/time %M",
        )
    } else {
        // Without GNU time: poll VmHWM (the kernel's own high-water mark) until exit.
        let pid = child.id();
        let mut peak = 0;
        let mut cpu = None;
        let status = loop {
            if let Some(hwm) = proc_status_kb(pid, "VmHWM:") {
                peak = peak.max(hwm);
                cpu = cpu_seconds(pid).or(cpu);
            }
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        (status, peak, cpu, "polled /proc/<pid>/status VmHWM")
    };
    let wall_s = started.elapsed().as_secs_f64();
    let out = reader.join().unwrap_or_default();
    let summary: Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "provisiond sync exited with {status} and printed no summary; see {}",
                log.display()
            )
        })?;
    Ok(Run {
        summary,
        wall_s,
        peak_rss_kb,
        cpu_s,
        rss_method,
    })
}

fn write_config(dir: &Path, url: &str, directory: &Path, concurrency: usize) -> Result<PathBuf> {
    let state = dir.join("state");
    let config = dir.join("provisiond.toml");
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).map_err(|e| e.to_string())?;
    let text = format!(
        "state_dir = {state:?}\ncontrol_socket = {sock:?}\nlog_format = \"json\"\n\n\
         [[jobs]]\nname = \"bench\"\ninterval = \"40m\"\nscope = \"assigned\"\n\n\
         [jobs.source]\nkind = \"file\"\npath = {directory:?}\n\n\
         [jobs.target]\nurl = {url:?}\ntoken_file = {token:?}\nconcurrency = {concurrency}\n",
        sock = dir.join("control.sock"),
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    Ok(config)
}

/// A fresh scenario directory (the state of an earlier run is removed).
fn scenario_dir(work: &Path, name: &str) -> Result<PathBuf> {
    let dir = work.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// The soak: a daemon between cycles

/// `provisiond run` with several jobs on a short interval, its RSS sampled every second.
fn soak(a: &Args) -> Result<Value> {
    let dir = scenario_dir(&a.work, "soak")?;
    // A sandbox per job: the jobs' directories are alike, and jobs sharing a target would
    // match each other's users and groups.
    let sandboxes = (0..a.soak_jobs)
        .map(|j| Sandbox::start(&a.bin, &dir.join(format!("sandbox-{j}.log"))))
        .collect::<Result<Vec<_>>>()?;
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).map_err(|e| e.to_string())?;
    // Owner-only, as provisiond asks of a secret file (else it warns, and warnings are counted).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", token.display()))?;
    }
    let mut text = format!(
        "state_dir = {:?}\ncontrol_socket = {:?}\nlog_format = \"json\"\n",
        dir.join("state"),
        dir.join("control.sock")
    );
    let mut directories = Vec::new();
    for (j, sandbox) in sandboxes.iter().enumerate() {
        let directory = dir.join(format!("directory-{j}.json"));
        write_directory(
            &directory,
            a.soak_users,
            a.soak_users / 100,
            a.members_per_group,
            0,
        )?;
        let _ = write!(
            text,
            "\n[[jobs]]\nname = \"soak{j}\"\ninterval = \"{}s\"\nscope = \"assigned\"\n\n\
             [jobs.source]\nkind = \"file\"\npath = {directory:?}\n\n\
             [jobs.target]\nurl = {:?}\ntoken_file = {token:?}\nconcurrency = {}\n",
            a.soak_interval_s, sandbox.url, a.concurrency
        );
        directories.push(directory);
    }
    let config = dir.join("provisiond.toml");
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let log = dir.join("daemon.log");
    let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut daemon = Command::new(&a.bin)
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "run"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {} run: {e}", a.bin.display()))?;
    let pid = daemon.id();
    eprintln!(
        "soak: provisiond run (pid {pid}), {} jobs × {} users, interval {} s, {} min…",
        a.soak_jobs, a.soak_users, a.soak_interval_s, a.soak_minutes
    );
    let started = Instant::now();
    let total = Duration::from_secs_f64(a.soak_minutes * 60.0);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut generation = 0;
    let mut next_change = Duration::from_secs(a.soak_change_every_s);
    let mut failure = None;
    while started.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1));
        if let Ok(Some(status)) = daemon.try_wait() {
            failure = Some(format!(
                "provisiond run exited early with {status}; see {}",
                log.display()
            ));
            break;
        }
        let t = started.elapsed();
        if let Some(kb) = proc_status_kb(pid, "VmRSS:") {
            samples.push((t.as_secs_f64(), kb as f64 / 1024.0));
        }
        if t >= next_change {
            generation += 1;
            let d = &directories[generation % directories.len()];
            write_directory(
                d,
                a.soak_users,
                a.soak_users / 100,
                a.members_per_group,
                generation,
            )?;
            next_change += Duration::from_secs(a.soak_change_every_s);
        }
    }
    let peak = proc_status_kb(pid, "VmHWM:");
    let cpu = cpu_seconds(pid);
    // `Child::kill` signals exactly this pid.
    let _ = daemon.kill();
    let _ = daemon.wait();
    for sandbox in sandboxes {
        sandbox.stop()?;
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let cycles = text
        .lines()
        .filter(|l| l.contains("\"cycle finished\""))
        .count();
    let warnings = text
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\""))
        .count();
    let errors = text
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .count();
    // The first cycles provision everything: the figures are taken after them.
    let warm_up = (a.soak_minutes * 60.0 / 8.0).clamp(10.0, 60.0);
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warm_up)
        .collect();
    let mut rss: Vec<f64> = steady.iter().map(|s| s.1).collect();
    rss.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let at = |q: f64| {
        rss.get(((rss.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    Ok(json!({
        "jobs": a.soak_jobs,
        "users_per_job": a.soak_users,
        "interval_s": a.soak_interval_s,
        "change_every_s": a.soak_change_every_s,
        "minutes": a.soak_minutes,
        "warm_up_s": warm_up,
        "cycles": cycles,
        "directory_changes": generation,
        "warnings": warnings,
        "errors": errors,
        "samples": steady.len(),
        "rss_mb_min": rss.first().copied().map(round),
        "rss_mb_median": at(0.5).map(round),
        "rss_mb_p90": at(0.9).map(round),
        "rss_mb_max": rss.last().copied().map(round),
        "rss_trend_mb_per_min": slope(&steady).map(|s| (s * 60.0 * 100.0).round() / 100.0),
        "peak_rss_mb": peak.map(|k| round(k as f64 / 1024.0)),
        "provisiond_cpu_s": cpu.map(|c| (c * 100.0).round() / 100.0),
    }))
}

/// Least-squares slope of `(t, y)`, in y per unit of t.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let (mt, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, y)| (a + t / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (t, y)| {
        (num + (t - mt) * (y - my), den + (t - mt) * (t - mt))
    });
    (den > 0.0).then(|| num / den)
}

fn print_soak(r: &Value) {
    println!();
    println!(
        "soak: {} jobs x {} users, interval {} s, a change every {} s, {} min: {} cycles, {} warnings, {} errors",
        r["jobs"], r["users_per_job"], r["interval_s"], r["change_every_s"], r["minutes"],
        r["cycles"], r["warnings"], r["errors"]
    );
    println!(
        "    RSS after {} s warm-up ({} samples): min {} MB, median {} MB, p90 {} MB, max {} MB; trend {} MB/min; peak {} MB",
        r["warm_up_s"], r["samples"], r["rss_mb_min"], r["rss_mb_median"], r["rss_mb_p90"],
        r["rss_mb_max"], r["rss_trend_mb_per_min"], r["peak_rss_mb"]
    );
}

// ---------------------------------------------------------------------------------------------
// Reporting

fn n(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

fn run_json(run: &Run, sandbox_cpu_s: Option<f64>, sandbox_requests: Value) -> Value {
    json!({
        "wall_s": (run.wall_s * 1000.0).round() / 1000.0,
        "cycle_duration_ms": n(&run.summary, "/duration_ms"),
        "peak_rss_mb": (run.peak_rss_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "peak_rss_method": run.rss_method,
        "provisiond_cpu_s": run.cpu_s.map(|c| (c * 100.0).round() / 100.0),
        "sandbox_cpu_s": sandbox_cpu_s,
        "status": run.summary["status"],
        "kind": run.summary["kind"],
        "users": run.summary["users"],
        "groups": run.summary["groups"],
        "memberships": run.summary["memberships"],
        "requests": run.summary["requests"],
        "requests_received_by_sandbox": sandbox_requests,
        "problem_count": run.summary["problem_count"],
    })
}

fn delta(after: &Value, before: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["get", "post", "put", "patch", "delete", "total"] {
        out.insert(
            k.to_uppercase(),
            json!(n(after, &format!("/{k}")).saturating_sub(n(before, &format!("/{k}")))),
        );
    }
    Value::Object(out)
}

fn requests_line(r: &Value) -> String {
    format!(
        "GET {} POST {} PATCH {} PUT {} DELETE {}",
        n(r, "/GET"),
        n(r, "/POST"),
        n(r, "/PATCH"),
        n(r, "/PUT"),
        n(r, "/DELETE")
    )
}

/// Runs one measured sync and the sandbox bookkeeping around it.
fn measured_sync(
    a: &Args,
    log: &str,
    sandbox: &Sandbox,
    config: &Path,
    dir: &Path,
    name: &str,
) -> Result<Value> {
    let before = sandbox.stats()?;
    let cpu_before = cpu_seconds(sandbox.pid());
    let run = sync(&a.bin, config, log, &dir.join(format!("{name}.log")))?;
    let cpu_after = cpu_seconds(sandbox.pid());
    let received = delta(&sandbox.stats()?, &before);
    let sandbox_cpu = cpu_before
        .zip(cpu_after)
        .map(|(b, a)| ((a - b) * 100.0).round() / 100.0);
    if run.summary["status"] != "succeeded" {
        eprintln!(
            "warning: {name} cycle status {} ({} problems); see {}",
            run.summary["status"],
            n(&run.summary, "/problem_count"),
            dir.join(format!("{name}.log")).display()
        );
    }
    Ok(run_json(&run, sandbox_cpu, received))
}

/// The cycle's phases from a JSON log: `{phase: ms since the cycle began}`, and the export's
/// own time (`export_ms`: exporting objects and exporting references), the part of the cycle
/// that is requests.
fn phase_timings(log: &Path) -> Value {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut phases = serde_json::Map::new();
    let mut last = 0;
    let mut export = 0;
    for line in text.lines().filter(|l| l.contains("cycle phase done")) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let f = v.get("fields").unwrap_or(&v);
        let (Some(phase), Some(ms)) = (f["phase"].as_str(), f["elapsed_ms"].as_u64()) else {
            continue;
        };
        if phase.contains("exported") {
            export += ms.saturating_sub(last);
        }
        last = ms;
        phases.insert(phase.to_string(), json!(ms));
    }
    phases.insert("export_ms".into(), json!(export));
    Value::Object(phases)
}

fn initial(a: &Args) -> Result<Value> {
    let dir = scenario_dir(&a.work, "initial")?;
    let directory = dir.join("directory.json");
    let shape = write_directory(&directory, a.users, a.groups, a.members_per_group, 0)?;
    let sandbox = Sandbox::start(&a.bin, &dir.join("sandbox.log"))?;
    let config = write_config(&dir, &sandbox.url, &directory, a.concurrency)?;
    // The cycle's phase timings (debug events of provisiond::cycle) tell the export's share.
    // The export's own debug lines (one per object) stay at the level asked for: the cycle is
    // measured as it runs at that level, not with a debug line per request.
    let log = if a.log.contains([',', '=']) {
        format!("{},provisiond::cycle=debug", a.log)
    } else {
        format!(
            "{0},provisiond::cycle=debug,provisiond::cycle::export={0}",
            a.log
        )
    };
    let mut r = measured_sync(a, &log, &sandbox, &config, &dir, "initial")?;
    r["phases_ms"] = phase_timings(&dir.join("initial.log"));
    let sandbox_rss = proc_status_kb(sandbox.pid(), "VmHWM:");
    sandbox.stop()?;
    let users = n(&r, "/users/created");
    let groups = n(&r, "/groups/created");
    let members = n(&r, "/memberships/added");
    let wall = r["wall_s"].as_f64().unwrap_or(f64::NAN);
    r["directory"] = json!({
        "users": shape.users, "groups": shape.groups, "memberships": shape.memberships,
        "users_with_manager": shape.managers, "users_assigned_directly": shape.direct_assignments,
    });
    r["objects"] = json!(users + groups + members);
    r["objects_counted"] = json!("users created + groups created + memberships added");
    r["objects_per_s"] = json!(((users + groups + members) as f64 / wall).round());
    r["users_groups_per_s"] = json!(((users + groups) as f64 / wall).round());
    r["sandbox_peak_rss_mb"] = json!(sandbox_rss.map(|k| (k as f64 / 102.4).round() / 10.0));
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// The floor: a plain load generator sending the same requests to a fresh sandbox

/// Members per group `PATCH`: the target's default `member_batch`, which the config leaves.
const MEMBER_BATCH: u64 = 100;
/// wrk threads: one per core of the machines this runs on; connections are `--concurrency`.
const WRK_THREADS: usize = 2;

fn wrk_missing() -> String {
    "wrk not found: the floor needs it. Install it with `sudo apt-get install -y wrk` (Debian, \
     Ubuntu), `brew install wrk` (macOS) or from https://github.com/wg/wrk, or run \
     `--only initial` without the floor"
        .to_string()
}

fn wrk_available() -> bool {
    Command::new("wrk")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// One `GET` of the sandbox's admin or SCIM API, over a fresh connection: the JSON body.
fn sandbox_get(sandbox: &Sandbox, path_and_query: &str) -> Result<Value> {
    let addr = sandbox.url.trim_start_matches("http://");
    let (host, _) = addr.split_once('/').unwrap_or((addr, ""));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| format!("sandbox: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("sandbox: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("sandbox: {e}"))?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).map_err(|e| format!("sandbox {path_and_query}: {e}"))
}

/// The first `limit` ids of a sandbox collection, as `<Kind> <id>` lines (the floor's patch
/// targets).
fn list_ids(
    sandbox: &Sandbox,
    collection: &str,
    kind: &str,
    limit: usize,
    out: &mut String,
) -> Result<usize> {
    let path = sandbox
        .url
        .trim_start_matches("http://")
        .split_once('/')
        .map_or(String::new(), |(_, p)| format!("/{p}"));
    let mut start = 1;
    let mut found = 0;
    loop {
        let page = sandbox_get(
            sandbox,
            &format!("{path}/{collection}?attributes=id&startIndex={start}&count=1000"),
        )?;
        let items = page["Resources"].as_array().cloned().unwrap_or_default();
        for r in &items {
            if let Some(id) = r["id"].as_str() {
                let _ = writeln!(out, "{kind} {id}");
                found += 1;
            }
        }
        if items.is_empty()
            || found >= limit
            || start + items.len() > n(&page, "/totalResults") as usize
        {
            return Ok(found);
        }
        start += items.len();
    }
}

/// How long wrk runs each phase: it measures a rate (see bench/floor.lua).
const WRK_PHASE: &str = "2s";

/// One wrk phase: requests about users and about groups in the proportion `users : groups`,
/// for [`WRK_PHASE`]; the seconds that `users + groups` such requests take at the rate seen.
fn wrk_phase(
    a: &Args,
    sandbox: &Sandbox,
    dir: &Path,
    mode: &str,
    users: u64,
    groups: u64,
    ids: Option<&Path>,
) -> Result<Value> {
    if users + groups == 0 {
        return Ok(json!({"requests": 0, "seconds": 0.0, "per_s": null, "errors": 0}));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/floor.lua");
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{}", a.concurrency.max(WRK_THREADS)))
        .arg(format!("-d{WRK_PHASE}"))
        .args(["--timeout", "30s", "-s"])
        .arg(&script)
        .arg(&sandbox.url)
        .arg("--")
        .arg(mode)
        .arg(TOKEN)
        .arg(WRK_THREADS.to_string())
        .arg(users.to_string())
        .arg(groups.to_string());
    if let Some(ids) = ids {
        cmd.arg(ids).arg(MEMBER_BATCH.to_string());
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", wrk_missing()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::write(dir.join(format!("wrk-{mode}.log")), stdout.as_bytes());
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FLOOR "))
        .ok_or_else(|| {
            format!(
                "wrk {mode} printed no FLOOR line: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rate = field("requests") as f64 / (field("duration_us") as f64 / 1e6);
    let errors = field("http_errors") + field("socket_errors");
    if errors > 0 {
        eprintln!(
            "warning: floor {mode}: {errors} HTTP or socket errors (see {})",
            dir.join(format!("wrk-{mode}.log")).display()
        );
    }
    let requests = users + groups;
    Ok(json!({
        "requests": requests,
        "seconds": (requests as f64 / rate * 10000.0).round() / 10000.0,
        "per_s": rate.round(),
        "wrk_requests": field("requests"),
        "errors": errors,
    }))
}

/// The floor of `daemon` (scenario (a)'s result): the same requests from wrk, phase by phase.
fn floor(a: &Args, daemon: &Value, per_group: usize) -> Result<Value> {
    let dir = scenario_dir(&a.work, "floor")?;
    let sent = &daemon["requests_received_by_sandbox"];
    let groups = n(daemon, "/groups/created");
    // Each group is searched for (unless the daemon knew the target empty: then its GETs
    // are a probe or two) and created once; the rest are users.
    let get_groups = groups.min(n(sent, "/GET"));
    let get_users = n(sent, "/GET") - get_groups;
    let post_users = n(sent, "/POST").saturating_sub(groups);
    let group_patches = groups * (per_group as u64).div_ceil(MEMBER_BATCH);
    let manager_patches = n(sent, "/PATCH").saturating_sub(group_patches);
    let sandbox = Sandbox::start(&a.bin, &dir.join("sandbox.log"))?;
    let get = wrk_phase(a, &sandbox, &dir, "get", get_users, get_groups, None)?;
    let post = wrk_phase(a, &sandbox, &dir, "post", post_users, groups, None)?;
    let mut ids = String::new();
    list_ids(&sandbox, "Users", "User", post_users as usize, &mut ids)?;
    list_ids(&sandbox, "Groups", "Group", groups as usize, &mut ids)?;
    let ids_file = dir.join("ids.txt");
    std::fs::write(&ids_file, ids).map_err(|e| format!("{}: {e}", ids_file.display()))?;
    // Manager patches are about users, membership patches about groups.
    let patch = wrk_phase(
        a,
        &sandbox,
        &dir,
        "patch",
        manager_patches,
        group_patches,
        Some(&ids_file),
    )?;
    // The same creates again from HTTP clients alone, once wrk is done (their objects change
    // none of its figures): what the daemon's client costs, apart from its bookkeeping.
    let clients = client_posts(a, &sandbox, post_users, groups)?;
    sandbox.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    let secs = |v: &Value| v["seconds"].as_f64().unwrap_or(f64::NAN);
    let floor_s = secs(&get) + secs(&post) + secs(&patch);
    let daemon_s = daemon["wall_s"].as_f64().unwrap_or(f64::NAN);
    let cycle_s = n(daemon, "/cycle_duration_ms") as f64 / 1000.0;
    let export_s = n(daemon, "/phases_ms/export_ms") as f64 / 1000.0;
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(json!({
        "generator": format!("wrk -t{WRK_THREADS} -c{} -s bench/floor.lua", a.concurrency.max(WRK_THREADS)),
        "get": get,
        "post": post,
        "patch": patch,
        "clients": clients,
        "floor_s": round(floor_s),
        "daemon_s": round(daemon_s),
        "ratio": (daemon_s / floor_s * 100.0).round() / 100.0,
        "daemon_cycle_s": round(cycle_s),
        "ratio_cycle": (cycle_s / floor_s * 100.0).round() / 100.0,
        "daemon_export_s": round(export_s),
        "ratio_export": (export_s / floor_s * 100.0).round() / 100.0,
    }))
}

/// The create phase's POSTs (`users` user and `groups` group bodies, interleaved as wrk's)
/// sent by HTTP clients alone on one async worker, as `sync` runs, with the daemon's
/// concurrency: provisiond's SCIM client (`ScimClient::create`: its checks, counting and
/// parsing of the answer), reqwest configured as that client configures it, and hyper's HTTP/1
/// connections with no pool, redirect policy or timeout layer. Each variant's wall time and
/// this process's CPU per request (nothing else runs in it meanwhile): how far a client alone
/// is from wrk, and what a leaner one than reqwest would save.
fn client_posts(a: &Args, sandbox: &Sandbox, users: u64, groups: u64) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("client floor: runtime: {e}"))?;
    let total = (users + groups) as usize;
    let mut out = serde_json::Map::new();
    for variant in ["scim", "reqwest", "hyper"] {
        let cpu0 = cpu_seconds(std::process::id());
        let t0 = Instant::now();
        rt.block_on(client_variant(
            variant,
            a.concurrency,
            &sandbox.url,
            users,
            groups,
        ))?;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(std::process::id())
            .zip(cpu0)
            .map(|(after, before)| after - before);
        out.insert(
            variant.to_string(),
            json!({
                "requests": total,
                "seconds": (wall * 1000.0).round() / 1000.0,
                "cpu_us_per_request": cpu.map(|c| (c / total.max(1) as f64 * 1e7).round() / 10.0),
            }),
        );
    }
    Ok(Value::Object(out))
}

/// Request number `i` of a client variant: a user or a group body (as wrk's, names unique
/// to the variant), built as a JSON value as the export builds its bodies.
fn client_body(variant: &str, i: usize, users: u64, groups: u64) -> (bool, Value) {
    let user = (i as u64 % (users + groups).max(1)) < users;
    if user {
        let name = format!("{variant}{i}@contoso.com");
        (
            true,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "userName": name, "active": true, "displayName": format!("Client User {i}"),
                "title": "Engineer",
                "emails": [{"type": "work", "value": name, "primary": true}],
                "name": {"givenName": "Client", "familyName": format!("User {i}")},
                "addresses": [{"type": "work", "locality": "Oxford", "country": "GB"}],
                "externalId": format!("{variant}{i}"),
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
                    {"department": "R&D", "employeeNumber": (100000 + i).to_string()},
            }),
        )
    } else {
        (
            false,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": format!("{variant} team {i}"),
                "externalId": format!("{variant}group{i}"),
            }),
        )
    }
}

async fn client_variant(
    variant: &'static str,
    concurrency: usize,
    base: &str,
    users: u64,
    groups: u64,
) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let total = (users + groups) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let url = url::Url::parse(&format!("{}/", base.trim_end_matches('/')))
        .map_err(|e| format!("client floor: {base}: {e}"))?;
    let scim = provisiond::ScimClient::new(provisiond::TargetSettings::new(
        url.clone(),
        TOKEN.to_string().into(),
    ))
    .map_err(|e| format!("client floor: {e}"))?;
    // The sandbox's token, as the SCIM client sends it (made once: not part of a request).
    let auth = reqwest::header::HeaderValue::try_from(format!("Bearer {TOKEN}"))
        .map_err(|e| format!("client floor: {e}"))?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .default_headers(reqwest::header::HeaderMap::from_iter([
            (reqwest::header::AUTHORIZATION, auth.clone()),
            (
                reqwest::header::ACCEPT,
                reqwest::header::HeaderValue::from_static(
                    "application/scim+json, application/json",
                ),
            ),
        ]))
        .user_agent("provisiond-bench")
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("client floor: reqwest: {e}"))?;
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(80)
    );
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, url, scim, http, addr, auth) = (
            next.clone(),
            url.clone(),
            scim.clone(),
            http.clone(),
            addr.clone(),
            auth.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // hyper: one connection per task, kept for every request of the task.
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), String>(());
                }
                let (user, body) = client_body(variant, i, users, groups);
                let (ty, endpoint) = if user {
                    (provisiond::ObjectType::User, "Users")
                } else {
                    (provisiond::ObjectType::Group, "Groups")
                };
                match variant {
                    "scim" => {
                        scim.create(ty, body)
                            .await
                            .map_err(|e| format!("client floor: {e}"))?;
                    }
                    "reqwest" => {
                        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                        let url = url.join(endpoint).map_err(|e| e.to_string())?;
                        let mut r = http
                            .post(url)
                            .header(
                                reqwest::header::CONTENT_TYPE,
                                reqwest::header::HeaderValue::from_static("application/scim+json"),
                            )
                            .body(bytes)
                            .send()
                            .await
                            .map_err(|e| format!("client floor: reqwest: {e}"))?;
                        if !r.status().is_success() {
                            return Err(format!("client floor: reqwest: HTTP {}", r.status()));
                        }
                        while r.chunk().await.map_err(|e| e.to_string())?.is_some() {}
                    }
                    _ => {
                        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
                        hyper_post(&mut conn, &addr, &auth, url.path(), endpoint, bytes).await?;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("client floor: {e}"))??;
    }
    Ok(())
}

type HyperSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// One POST on the task's hyper connection (opened on first use).
async fn hyper_post(
    conn: &mut Option<HyperSender>,
    addr: &str,
    auth: &hyper::header::HeaderValue,
    base_path: &str,
    endpoint: &str,
    body: Vec<u8>,
) -> Result<()> {
    use http_body_util::BodyExt;
    let err = |e: &dyn std::fmt::Display| format!("client floor: hyper: {e}");
    if conn.is_none() {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| err(&e))?;
        stream.set_nodelay(true).map_err(|e| err(&e))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| err(&e))?;
        tokio::spawn(connection);
        *conn = Some(sender);
    }
    let Some(sender) = conn.as_mut() else {
        return Err("client floor: hyper: no connection".into());
    };
    sender.ready().await.map_err(|e| err(&e))?;
    let request = hyper::Request::post(format!("{base_path}{endpoint}"))
        .header(hyper::header::HOST, addr)
        .header(hyper::header::AUTHORIZATION, auth.clone())
        .header(
            hyper::header::ACCEPT,
            "application/scim+json, application/json",
        )
        .header(hyper::header::USER_AGENT, "provisiond-bench")
        .header(hyper::header::CONTENT_TYPE, "application/scim+json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| err(&e))?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .map_err(|e| err(&e))?
        .map_err(|e| err(&e))?;
    if !response.status().is_success() {
        return Err(format!("client floor: hyper: HTTP {}", response.status()));
    }
    response.into_body().collect().await.map_err(|e| err(&e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The crash: kill -9 during an initial cycle, then convergence

/// `--only crash`: an initial cycle killed (SIGKILL) half-way, `sync` again until one
/// succeeds, then the sandbox checked object by object and a last `sync` that must send no
/// write.
fn crash(a: &Args) -> Result<Value> {
    let dir = scenario_dir(&a.work, "crash")?;
    let directory = dir.join("directory.json");
    let shape = write_directory(
        &directory,
        a.crash_users,
        a.crash_groups,
        a.members_per_group,
        0,
    )?;
    let sandbox = Sandbox::start(&a.bin, &dir.join("sandbox.log"))?;
    let config = write_config(&dir, &sandbox.url, &directory, a.concurrency)?;
    eprintln!(
        "crash: initial cycle of {} users, {} groups, {} memberships, killed (SIGKILL) at {} \
         users in the sandbox…",
        shape.users,
        shape.groups,
        shape.memberships,
        shape.users / 2
    );
    let killed = killed_sync(
        a,
        &sandbox,
        &config,
        &dir.join("killed.log"),
        shape.users / 2,
    )?;
    let mut resumed = Vec::new();
    for i in 0..5 {
        eprintln!("crash: sync after the kill, attempt {}…", i + 1);
        match measured_sync(a, &a.log, &sandbox, &config, &dir, &format!("resume-{i}")) {
            Ok(r) => {
                let done = r["status"] == "succeeded";
                resumed.push(r);
                if done {
                    break;
                }
            }
            Err(e) => resumed.push(json!({ "error": e })),
        }
    }
    eprintln!("crash: checking the sandbox…");
    let checks = check_sandbox(&sandbox, &shape, a.members_per_group)?;
    eprintln!("crash: a last sync, which must send nothing…");
    let last = measured_sync(a, &a.log, &sandbox, &config, &dir, "final")?;
    let writes = ["POST", "PATCH", "PUT", "DELETE"]
        .iter()
        .map(|m| n(&last, &format!("/requests_received_by_sandbox/{m}")))
        .sum::<u64>();
    sandbox.stop()?;
    let converged = resumed.last().is_some_and(|r| r["status"] == "succeeded");
    let ok = converged && checks["ok"] == true && writes == 0;
    Ok(json!({
        "directory": {"users": shape.users, "groups": shape.groups,
                      "memberships": shape.memberships, "users_with_manager": shape.managers},
        "killed": killed,
        "resumed": resumed,
        "checks": checks,
        "final": last,
        "final_writes": writes,
        "ok": ok,
    }))
}

/// `provisiond sync` of `config`, killed with SIGKILL once the sandbox holds `at` users.
/// Its peak RSS is polled (VmHWM) until the kill.
fn killed_sync(a: &Args, sandbox: &Sandbox, config: &Path, log: &Path, at: usize) -> Result<Value> {
    let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let started = Instant::now();
    let mut child = Command::new(&a.bin)
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json", "sync", "--json"])
        .env("RUST_LOG", &a.log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", a.bin.display()))?;
    let pid = child.id();
    let mut peak_kb = 0;
    let mut polls = 0u64;
    let users = loop {
        if let Some(hwm) = proc_status_kb(pid, "VmHWM:") {
            peak_kb = peak_kb.max(hwm);
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "provisiond sync ended ({status}) before the sandbox held {at} users: \
                 use more --crash-users; see {}",
                log.display()
            ));
        }
        let held = sandbox.count("Users")?;
        polls += 1;
        if held >= at as u64 {
            break held;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // `Child::kill` is SIGKILL on Unix: no handler runs, nothing is flushed.
    child
        .kill()
        .map_err(|e| format!("cannot kill provisiond (pid {pid}): {e}"))?;
    let _ = child.wait();
    Ok(json!({
        "killed_after_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "users_in_sandbox_at_kill": users,
        "users_in_sandbox_after_kill": sandbox.count("Users")?,
        "peak_rss_mb": (peak_kb as f64 / 1024.0 * 10.0).round() / 10.0,
        "peak_rss_method": "polled /proc/<pid>/status VmHWM until the kill",
        "count_polls": polls,
    }))
}

/// Every directory user exactly once (by `userName`, and by `externalId`), no other user,
/// every group exactly once with exactly its members, read from the sandbox page by page.
fn check_sandbox(sandbox: &Sandbox, shape: &Shape, per_group: usize) -> Result<Value> {
    use std::collections::{BTreeSet, HashMap};
    let mut by_name: HashMap<String, u32> = HashMap::new();
    let mut by_external: HashMap<String, u32> = HashMap::new();
    let mut name_of: HashMap<String, String> = HashMap::new();
    let users = sandbox.each("Users", "userName,externalId", |u| {
        let name = u["userName"].as_str().unwrap_or("").to_lowercase();
        *by_name.entry(name.clone()).or_default() += 1;
        *by_external
            .entry(u["externalId"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        name_of.insert(u["id"].as_str().unwrap_or("").to_string(), name);
    })?;
    let user_name = |i: usize| format!("user{i:06}@contoso.com");
    let mut missing = 0u64;
    for i in 0..shape.users {
        if !by_name.contains_key(&user_name(i)) {
            missing += 1;
        }
    }
    let duplicate_names = by_name.values().filter(|c| **c > 1).count();
    let duplicate_external = by_external.values().filter(|c| **c > 1).count();
    let mut group_count: HashMap<String, u32> = HashMap::new();
    let mut members_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    let groups = sandbox.each("Groups", "displayName,members", |g| {
        let name = g["displayName"].as_str().unwrap_or("").to_string();
        *group_count.entry(name.clone()).or_default() += 1;
        let members = g["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|v| {
                        let id = v["value"].as_str().unwrap_or("");
                        name_of.get(id).cloned().unwrap_or_else(|| format!("?{id}"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        members_of.insert(name, members);
    })?;
    // The generator's memberships (`write_directory`), by userName.
    let per_group = per_group.min(shape.users);
    let step = coprime_step(shape.users);
    let (mut groups_missing, mut wrong_members) = (0u64, 0u64);
    for g in 0..shape.groups {
        let name = format!("{} team {g:05}", DEPARTMENTS[g % DEPARTMENTS.len()]);
        let want: BTreeSet<String> = (0..per_group)
            .map(|k| user_name((g * per_group + k * step) % shape.users))
            .collect();
        match members_of.get(&name) {
            None => groups_missing += 1,
            Some(have) if *have != want => wrong_members += 1,
            Some(_) => {}
        }
    }
    let duplicate_groups = group_count.values().filter(|c| **c > 1).count();
    let ok = users == shape.users
        && missing == 0
        && duplicate_names == 0
        && duplicate_external == 0
        && groups == shape.groups
        && groups_missing == 0
        && wrong_members == 0
        && duplicate_groups == 0;
    Ok(json!({
        "users_expected": shape.users,
        "users_in_sandbox": users,
        "users_missing": missing,
        "duplicate_userNames": duplicate_names,
        "duplicate_externalIds": duplicate_external,
        "groups_expected": shape.groups,
        "groups_in_sandbox": groups,
        "groups_missing": groups_missing,
        "groups_with_wrong_members": wrong_members,
        "duplicate_groups": duplicate_groups,
        "ok": ok,
    }))
}

fn print_crash(r: &Value) {
    let k = &r["killed"];
    println!();
    println!(
        "crash: {} users, {} groups, {} memberships",
        n(r, "/directory/users"),
        n(r, "/directory/groups"),
        n(r, "/directory/memberships")
    );
    println!(
        "  killed (SIGKILL) after {} s with {} users in the sandbox ({} after); peak RSS {} MB",
        k["killed_after_s"],
        k["users_in_sandbox_at_kill"],
        k["users_in_sandbox_after_kill"],
        k["peak_rss_mb"]
    );
    for (i, s) in r["resumed"].as_array().into_iter().flatten().enumerate() {
        println!(
            "  sync {}: {} {} in {} s, peak RSS {} MB; users {}, groups {}, memberships {}; \
             requests {}{}",
            i + 1,
            s["kind"],
            s["status"],
            s["wall_s"],
            s["peak_rss_mb"],
            s["users"],
            s["groups"],
            s["memberships"],
            s["requests_received_by_sandbox"],
            s.get("error")
                .map(|e| format!("; error {e}"))
                .unwrap_or_default()
        );
    }
    println!("  checks: {}", r["checks"]);
    let f = &r["final"];
    println!(
        "  last sync: {} {} in {} s, peak RSS {} MB, {} writes",
        f["kind"], f["status"], f["wall_s"], f["peak_rss_mb"], r["final_writes"]
    );
    println!("  converged with no duplicate: {}", r["ok"]);
}

/// `--only floor`: scenario (a) and its floor, `--repeat` times; the run with the median
/// ratio is reported, with every ratio.
fn floor_runs(a: &Args) -> Result<Value> {
    let mut runs = Vec::new();
    for i in 0..a.repeat {
        eprintln!(
            "(a) initial cycle and its floor, run {} of {}…",
            i + 1,
            a.repeat
        );
        let mut r = initial(a)?;
        r["floor"] = floor(a, &r, a.members_per_group.min(a.users))?;
        runs.push(r);
    }
    let ratio = |r: &Value| r["floor"]["ratio"].as_f64().unwrap_or(f64::NAN);
    runs.sort_by(|x, y| ratio(x).total_cmp(&ratio(y)));
    let all: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({"ratio": r["floor"]["ratio"], "floor_s": r["floor"]["floor_s"],
                   "daemon_s": r["floor"]["daemon_s"],
                   "ratio_export": r["floor"]["ratio_export"]})
        })
        .collect();
    let mut r = runs.swap_remove(runs.len() / 2);
    r["floor"]["runs"] = json!(all);
    Ok(r)
}

fn incremental(a: &Args) -> Result<Value> {
    let dir = scenario_dir(&a.work, "incremental")?;
    let directory = dir.join("directory.json");
    let shape = write_directory(
        &directory,
        a.incremental_users,
        a.incremental_groups,
        a.members_per_group,
        0,
    )?;
    let sandbox = Sandbox::start(&a.bin, &dir.join("sandbox.log"))?;
    let config = write_config(&dir, &sandbox.url, &directory, a.concurrency)?;
    eprintln!(
        "(b) initial cycle of {} users, {} groups, {} memberships (setup; measured too)…",
        shape.users, shape.groups, shape.memberships
    );
    let setup = measured_sync(a, &a.log, &sandbox, &config, &dir, "setup")?;
    // The initial cycle leaves its writes (the store, a provisioning-log entry per object,
    // hundreds of MB at a million users) for the kernel to write back over the next half
    // minute, which then competed with the first no-change cycles for the two cores (the
    // first 0.6 s slower at 1M, 0.2-0.4 s at 100k). A job's cycles are 40 minutes apart:
    // write them back before measuring.
    let _ = Command::new("sync").status();
    eprintln!("(b) no-change incremental cycle, {} runs…", a.repeat);
    let mut runs = Vec::new();
    for i in 0..a.repeat {
        runs.push(measured_sync(
            a,
            &a.log,
            &sandbox,
            &config,
            &dir,
            &format!("incremental-{i}"),
        )?);
    }
    sandbox.stop()?;
    let wall = |r: &Value| r["wall_s"].as_f64().unwrap_or(f64::NAN);
    runs.sort_by(|x, y| wall(x).total_cmp(&wall(y)));
    let walls: Vec<f64> = runs.iter().map(wall).collect();
    let rss: Vec<Value> = runs.iter().map(|r| r["peak_rss_mb"].clone()).collect();
    let mut r = runs.swap_remove(runs.len() / 2);
    r["runs"] = json!(walls.len());
    r["wall_s_all"] = json!(walls);
    r["peak_rss_mb_all"] = json!(rss);
    r["directory"] = json!({
        "users": shape.users, "groups": shape.groups, "memberships": shape.memberships,
        "users_with_manager": shape.managers, "users_assigned_directly": shape.direct_assignments,
    });
    r["writes"] = json!(
        n(&r, "/requests/POST")
            + n(&r, "/requests/PATCH")
            + n(&r, "/requests/PUT")
            + n(&r, "/requests/DELETE")
    );
    let s_users = n(&setup, "/users/created");
    let s_groups = n(&setup, "/groups/created");
    let s_members = n(&setup, "/memberships/added");
    let s_wall = setup["wall_s"].as_f64().unwrap_or(f64::NAN);
    let mut setup = setup;
    setup["objects_per_s"] = json!(((s_users + s_groups + s_members) as f64 / s_wall).round());
    r["setup_initial_cycle"] = setup;
    Ok(r)
}

fn machine() -> Value {
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    json!({
        "nproc": out("nproc", &[]),
        "mem_total_gb": proc_meminfo_gb(),
        "cpu": cpu,
        "kernel": out("uname", &["-r"]),
    })
}

fn proc_meminfo_gb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
}

fn print_table(results: &Value) {
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(r) = results.get("initial") {
        rows.push((
            "(a) initial cycle".into(),
            format!(
                "{} users, {} groups, {} memberships",
                n(r, "/directory/users"),
                n(r, "/directory/groups"),
                n(r, "/directory/memberships")
            ),
        ));
        rows.push((
            "    objects/s".into(),
            format!(
                "{} ({} objects = {} / {:.2} s wall); users+groups/s {}",
                r["objects_per_s"],
                r["objects"],
                r["objects_counted"].as_str().unwrap_or(""),
                r["wall_s"].as_f64().unwrap_or(0.0),
                r["users_groups_per_s"]
            ),
        ));
        rows.push(("    requests".into(), requests_line(&r["requests"])));
        rows.push(("    peak RSS".into(), format!("{} MB", r["peak_rss_mb"])));
        rows.push((
            "    CPU".into(),
            format!(
                "provisiond {} s, sandbox {} s",
                r["provisiond_cpu_s"], r["sandbox_cpu_s"]
            ),
        ));
        rows.push(("    status".into(), format!("{}", r["status"])));
        if let Some(f) = r.get("floor") {
            let phase = |p: &str| {
                format!(
                    "{} {} in {:.3} s ({}/s)",
                    p.to_uppercase(),
                    f[p]["requests"],
                    f[p]["seconds"].as_f64().unwrap_or(0.0),
                    f[p]["per_s"]
                )
            };
            rows.push((
                "    floor (wrk)".into(),
                format!("{}; {}; {}", phase("get"), phase("post"), phase("patch")),
            ));
            if let Some(c) = f.get("clients") {
                let client = |v: &str| {
                    format!(
                        "{v} {:.3} s, {} µs CPU a request",
                        c[v]["seconds"].as_f64().unwrap_or(0.0),
                        c[v]["cpu_us_per_request"]
                    )
                };
                rows.push((
                    "    POSTs, client alone".into(),
                    format!(
                        "{}; {}; {}",
                        client("scim"),
                        client("reqwest"),
                        client("hyper")
                    ),
                ));
            }
            rows.push((
                "    daemon / floor".into(),
                format!(
                    "{:.3} s / {:.3} s = {}× (cycle alone {:.3} s = {}×; its export phases \
                     {:.3} s = {}×){}",
                    f["daemon_s"].as_f64().unwrap_or(0.0),
                    f["floor_s"].as_f64().unwrap_or(0.0),
                    f["ratio"],
                    f["daemon_cycle_s"].as_f64().unwrap_or(0.0),
                    f["ratio_cycle"],
                    f["daemon_export_s"].as_f64().unwrap_or(0.0),
                    f["ratio_export"],
                    f.get("runs")
                        .map(|r| format!("; median of {}: {}", r.as_array().map_or(0, Vec::len), r))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    if let Some(r) = results.get("incremental") {
        let s = &r["setup_initial_cycle"];
        rows.push((
            "(b) setup: initial cycle".into(),
            format!(
                "{} users, {} groups, {} memberships: {:.1} s wall, {} objects/s, {} MB",
                n(r, "/directory/users"),
                n(r, "/directory/groups"),
                n(r, "/directory/memberships"),
                s["wall_s"].as_f64().unwrap_or(0.0),
                s["objects_per_s"],
                s["peak_rss_mb"]
            ),
        ));
        let all: Vec<f64> = r["wall_s_all"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        rows.push((
            "(b) no-change incremental".into(),
            format!(
                "{:.3} s wall, median of {} runs (fastest {:.3} s, slowest {:.3} s; cycle {} ms)",
                r["wall_s"].as_f64().unwrap_or(0.0),
                all.len(),
                all.first().copied().unwrap_or(0.0),
                all.last().copied().unwrap_or(0.0),
                r["cycle_duration_ms"]
            ),
        ));
        rows.push((
            "    peak RSS".into(),
            format!(
                "{} MB (all runs: {})",
                r["peak_rss_mb"], r["peak_rss_mb_all"]
            ),
        ));
        rows.push((
            "    requests".into(),
            format!(
                "{} (writes: {})",
                requests_line(&r["requests"]),
                r["writes"]
            ),
        ));
        rows.push((
            "    status".into(),
            format!(
                "{} {}, unchanged users {}",
                r["kind"],
                r["status"],
                n(r, "/users/unchanged")
            ),
        ));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!();
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

fn main() {
    match real_main() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
}

fn real_main() -> Result<()> {
    let a = parse_args()?;
    if !a.bin.exists() {
        return Err(format!(
            "{} not found: build it first (`cargo build --release`) or pass --bin; \
             bench/run.sh does both",
            a.bin.display()
        ));
    }
    std::fs::create_dir_all(&a.work).map_err(|e| format!("{}: {e}", a.work.display()))?;
    let mut results = json!({
        "machine": machine(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "binary": a.bin.display().to_string(),
        "log_level": a.log,
        "concurrency": a.concurrency,
    });
    if a.only.as_deref() == Some("soak") {
        results["soak"] = soak(&a)?;
        print_soak(&results["soak"]);
        return write_results(&results);
    }
    if a.only.as_deref() == Some("crash") {
        results["crash"] = crash(&a)?;
        print_crash(&results["crash"]);
        return write_results(&results);
    }
    let with_floor = wrk_available();
    if a.only.as_deref() == Some("floor") {
        if !with_floor {
            return Err(wrk_missing());
        }
        results["initial"] = floor_runs(&a)?;
    } else if a.only.as_deref() != Some("incremental") {
        eprintln!(
            "(a) initial cycle of {} users, {} groups × {} members…",
            a.users, a.groups, a.members_per_group
        );
        results["initial"] = initial(&a)?;
        if with_floor {
            eprintln!("(a) its floor: the same requests from wrk…");
            let floor = floor(&a, &results["initial"], a.members_per_group.min(a.users))?;
            results["initial"]["floor"] = floor;
        } else {
            eprintln!("note: no floor measured. {}", wrk_missing());
        }
    }
    if a.only.is_none() || a.only.as_deref() == Some("incremental") {
        results["incremental"] = incremental(&a)?;
    }
    print_table(&results);
    write_results(&results)
}

/// `target/bench-results.json`.
fn write_results(results: &Value) -> Result<()> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.json");
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let text = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    std::fs::write(&out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    println!("\nresults: {}", out.display());
    Ok(())
}
