//! Shared helpers for the tests that drive the real `provisiond` binary (the `cli` and
//! `daemon` modules): an in-process sandbox on 127.0.0.1 with its own runtime, a temp
//! directory per test with a config, a directory export and a token file, and child
//! processes that are always killed (by PID) when a test ends, also on failure.
//!
//! Every wait is bounded: helpers poll with a deadline and never sleep longer than a few
//! tens of milliseconds at a time.

#![allow(dead_code)]

use provisiond::{FaultRule, SandboxConfig, SandboxHandle, SandboxRequestCounts as RequestCounts};
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The token the sandbox requires unless a test says otherwise. Distinctive, so a test can
/// search output for it.
pub const TOKEN: &str = "tok-7f3a9c-SECRET-do-not-log-41b2";

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_provisiond")
}

// ---------------------------------------------------------------------------------------
// Sandbox
// ---------------------------------------------------------------------------------------

/// An in-process sandbox SCIM server with its own small runtime, so tests stay synchronous
/// and the server keeps serving while a test thread blocks on a child process.
pub struct Sandbox {
    handle: Option<SandboxHandle>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Sandbox {
    /// A sandbox requiring [`TOKEN`].
    pub fn start() -> Sandbox {
        Sandbox::with_config(SandboxConfig {
            token: Some(TOKEN.to_string().into()),
            ..Default::default()
        })
    }

    pub fn with_faults(faults: Vec<FaultRule>) -> Sandbox {
        Sandbox::with_config(SandboxConfig {
            token: Some(TOKEN.to_string().into()),
            faults,
            ..Default::default()
        })
    }

    pub fn with_config(config: SandboxConfig) -> Sandbox {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("sandbox runtime");
        let handle = rt.block_on(super::common::sandbox_with(config));
        Sandbox {
            handle: Some(handle),
            rt: Some(rt),
        }
    }

    fn h(&self) -> &SandboxHandle {
        self.handle.as_ref().expect("sandbox running")
    }

    pub fn url(&self) -> String {
        self.h().base_url()
    }

    pub fn users(&self) -> Vec<Value> {
        self.h().users()
    }

    pub fn groups(&self) -> Vec<Value> {
        self.h().groups()
    }

    pub fn counts(&self) -> RequestCounts {
        self.h().request_counts()
    }

    /// POST + PATCH + PUT + DELETE received so far.
    pub fn writes(&self) -> u64 {
        let c = self.counts();
        c.post + c.patch + c.put + c.delete
    }

    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        self.h().set_faults(rules)
    }

    /// userNames in the sandbox, sorted (duplicates kept).
    pub fn user_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .users()
            .iter()
            .filter_map(|u| u["userName"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let (Some(h), Some(rt)) = (self.handle.take(), self.rt.as_ref()) {
            // Bounded: a request held by a delay fault must not hold up the test.
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), h.shutdown()).await;
            });
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", super::free_port())
}

// ---------------------------------------------------------------------------------------
// Directory exports
// ---------------------------------------------------------------------------------------

pub fn user_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

pub fn group_id(i: usize) -> String {
    format!("00000000-0000-4000-9000-{i:012}")
}

pub fn user_name(i: usize) -> String {
    format!("user{i:04}@contoso.test")
}

/// A directory of `n` users, each assigned to the app directly, and one assigned group
/// holding the first few users.
pub fn directory(n: usize) -> Value {
    let users: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": user_id(i),
                "userPrincipalName": user_name(i),
                "mail": user_name(i),
                "givenName": format!("Given{i}"),
                "surname": format!("Sur{i}"),
                "displayName": format!("User {i}"),
                "accountEnabled": true,
                "jobTitle": "Engineer",
                "mailNickname": format!("user{i}"),
            })
        })
        .collect();
    let mut assignments: Vec<Value> = (0..n)
        .map(|i| json!({"principalId": user_id(i), "role": "User"}))
        .collect();
    assignments.push(json!({"principalId": group_id(0), "role": "User"}));
    json!({
        "users": users,
        "groups": [{
            "id": group_id(0),
            "displayName": "Engineering",
            "mailNickname": "eng",
            "members": (0..n.min(3)).map(user_id).collect::<Vec<_>>(),
        }],
        "assignments": assignments,
    })
}

// ---------------------------------------------------------------------------------------
// A test's files: config, directory, token, state
// ---------------------------------------------------------------------------------------

/// A temp dir holding one test's `provisiond.toml`, `directory.json`, `token` and `state/`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

/// How the job is written into the config.
pub struct JobOptions {
    pub url: String,
    /// `interval = "…"` (ignored when `cron` is set).
    pub interval: String,
    pub cron: Option<String>,
    /// Extra lines for `[jobs.target]`.
    pub target_extra: String,
}

impl JobOptions {
    pub fn new(url: &str) -> JobOptions {
        JobOptions {
            url: url.to_string(),
            interval: "40m".into(),
            cron: None,
            target_extra: String::new(),
        }
    }
}

impl Fixture {
    /// A fixture with a token file holding [`TOKEN`], a 5-user directory and a config for
    /// `url` (not written until [`Fixture::write_config`] or [`Fixture::new`]).
    pub fn new(url: &str) -> Fixture {
        let f = Fixture::empty();
        f.write_token(TOKEN);
        f.write_directory(&directory(5));
        f.write_job(&JobOptions::new(url));
        f
    }

    pub fn empty() -> Fixture {
        Fixture {
            dir: tempfile::Builder::new()
                .prefix("pvd")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("provisiond.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.state_dir().join("control.sock")
    }

    pub fn pid_path(&self) -> PathBuf {
        self.state_dir().join("provisiond.pid")
    }

    /// The jobs' status as a running daemon gives it on its control socket, or `None` when
    /// no daemon answers there (no socket, or a stale one left by a killed daemon). Unlike
    /// `provisiond status`, never an offline read of the store: an answer here means a daemon
    /// holds the store, has written its pid file and serves requests.
    pub fn daemon_status(&self) -> Option<Vec<Value>> {
        use std::io::{BufRead, BufReader, Write};
        let path = self.socket_path();
        let mut stream = std::os::unix::net::UnixStream::connect(&path).ok()?;
        // A daemon that accepted the connection answers once its workers are set up; bounded,
        // so that a daemon that never answers fails the test clearly.
        let limit = Duration::from_secs(20);
        let fail = |what: String| -> ! { panic!("control socket {}: {what}", path.display()) };
        stream
            .set_read_timeout(Some(limit))
            .and_then(|()| stream.set_write_timeout(Some(limit)))
            .unwrap_or_else(|e| fail(format!("cannot set timeouts: {e}")));
        stream
            .write_all(b"{\"cmd\":\"status\",\"job\":null}\n")
            .unwrap_or_else(|e| fail(format!("cannot send a status request: {e}")));
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap_or_else(|e| fail(format!("no answer within {limit:?}: {e}")));
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| fail(format!("the answer is not JSON ({e}): {line:?}")));
        match (answer["result"].as_str(), answer["jobs"].as_array()) {
            (Some("status"), Some(jobs)) => Some(jobs.clone()),
            _ => fail(format!("not a status answer: {answer}")),
        }
    }

    /// The token file, 0600 as an admin keeps it (a readable one draws a warning).
    pub fn write_token(&self, token: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(self.path("token"), token).expect("write token");
        std::fs::set_permissions(self.path("token"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod token");
    }

    pub fn write_directory(&self, d: &Value) {
        std::fs::write(
            self.path("directory.json"),
            serde_json::to_vec_pretty(d).expect("json"),
        )
        .expect("write directory");
    }

    pub fn write_raw_directory(&self, text: &str) {
        std::fs::write(self.path("directory.json"), text).expect("write directory");
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write config");
    }

    pub fn write_job(&self, o: &JobOptions) {
        self.write_config(&job_config(o));
    }

    /// `provisiond --config <this config> ARGS…`, with a clean environment for logging. The
    /// working directory is `/`, so relative paths in the config must resolve against the
    /// config file's directory, not the working directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir("/")
            .env_remove("PROVISIOND_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("ROBIN_TOKEN")
            .stdin(Stdio::null());
        c
    }

    /// Run to completion (bounded by `limit`) and capture the output.
    pub fn run(&self, args: &[&str]) -> Output {
        run_command(self.command(args), self.dir.path(), RUN_LIMIT)
    }

    /// Start in the background; output goes to files in the temp dir.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args), self.dir.path())
    }
}

/// The longest any one short command may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A config with one job.
pub fn job_config(o: &JobOptions) -> String {
    let schedule = match &o.cron {
        Some(c) => format!("cron = \"{c}\""),
        None => format!("interval = \"{}\"", o.interval),
    };
    format!(
        r#"state_dir = "state"

[[jobs]]
name = "robin"
{schedule}
scope = "assigned"

[jobs.source]
kind = "file"
path = "directory.json"

[jobs.target]
url = "{url}"
token_file = "token"
{extra}
"#,
        url = o.url,
        extra = o.target_extra,
    )
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout and stderr together, for "mentions" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// stdout as exactly one JSON object.
    pub fn json(&self) -> Value {
        let text = self.stdout.trim();
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let first = stream
            .next()
            .unwrap_or_else(|| panic!("no JSON on stdout; {self}"))
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}); {self}"));
        assert!(
            stream.next().is_none(),
            "more than one JSON value on stdout; {self}"
        );
        assert!(first.is_object(), "stdout JSON is not an object; {self}");
        first
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit; {self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Run a command to completion within `limit` (killed and failed otherwise).
pub fn run_command(cmd: Command, dir: &Path, limit: Duration) -> Output {
    let mut p = Proc::spawn(cmd, dir);
    match p.wait_until(Instant::now() + limit) {
        Some(_) => p.output(),
        None => panic!("command did not finish within {limit:?}; {}", p.output()),
    }
}

/// A child process that is killed (SIGKILL, by PID) and reaped when dropped. Its stdout and
/// stderr go to files, so a chatty child can never block on a full pipe.
pub struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(mut cmd: Command, dir: &Path) -> Proc {
        // A fresh directory per process, inside the test's temp dir (removed with it).
        let unique = tempfile::Builder::new()
            .prefix("out-")
            .tempdir_in(dir)
            .expect("output dir")
            .keep();
        let stdout = unique.join("stdout");
        let stderr = unique.join("stderr");
        cmd.stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("spawn provisiond");
        Proc {
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by PID (`kill -s NAME PID`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -s {name} {} failed", self.pid());
    }

    /// SIGKILL now and reap.
    pub fn kill9(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// The exit status if the process has ended, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait for the process to end, at most until `deadline`.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What it printed so far (and its status if it has ended).
    pub fn output(&mut self) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let status = self
            .try_status()
            // Still running: report a fake "signal 0" status; callers only print it.
            .unwrap_or_else(|| ExitStatus::from_raw(0x7f));
        Output {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Poll `f` until it returns `Some`, at most `limit`; panics with `what` on timeout.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
