//! The command line's conventions, tried as a new admin would: completions, the man page,
//! `--version` and `--help` (exit codes), read-only commands that need no secret and create
//! nothing, a closed stdout (`| head`), `mappings --json` and the 100-column table, and
//! `RUST_LOG=debug` without the storage library's internals.

use crate::support::cli::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `provisiond ARGS` without a config.
fn plain(args: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    run_command(c, std::path::Path::new("/"), RUN_LIMIT)
}

#[test]
fn completions_man_version_and_help() {
    for shell in ["bash", "zsh", "fish"] {
        let out = plain(&["completions", shell]);
        out.assert_code(0);
        assert!(out.stdout.contains("provisiond"), "{shell}: {out}");
        assert!(out.stdout.contains("check-config"), "{shell}: {out}");
    }
    plain(&["completions", "tcsh"]).assert_code(2);

    let out = plain(&["man"]);
    out.assert_code(0);
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH"),
        "{out}"
    );
    assert!(out.stdout.contains("provisiond"), "{out}");

    let out = plain(&["--version"]);
    out.assert_code(0);
    let line = out.stdout.trim();
    assert!(line.starts_with("provisiond 0."), "{line}");
    let commit = line
        .split("(commit ")
        .nth(1)
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no commit in {line:?}"));
    assert!(
        commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );

    let out = plain(&["--help"]);
    out.assert_code(0);
    for needle in [
        "Exit codes:",
        "usage error",
        "configuration error",
        "a cycle failed",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} not in --help; {out}"
        );
    }
    // Options of the top level only are not repeated on a command that ignores them.
    let out = plain(&["expr", "--help"]);
    assert!(!out.stdout.contains("--config"), "{out}");
    assert!(out.stdout.contains("EXPRESSION"), "{out}");
}

/// `status` and `mappings` need no token and create nothing; `check-config` checks it.
#[test]
fn read_only_commands_need_no_secret_and_create_nothing() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    std::fs::remove_file(fixture.path("token")).unwrap();

    for args in [&["status"][..], &["status", "--json"], &["mappings"]] {
        let out = fixture.run(args);
        out.assert_code(0);
        assert!(
            !fixture.state_dir().exists(),
            "{args:?} created the state dir"
        );
    }
    let out = fixture.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "not_run", "{out}");
    // The admin's check still reads the token.
    let out = fixture.run(&["check-config"]);
    out.assert_code(5);
    assert!(out.stderr.contains("token_file"), "{out}");

    // The unit's credential setup, run by hand outside systemd.
    let text = job_config(&JobOptions::new(&sandbox.url())).replace(
        "token_file = \"token\"",
        "token_credential = \"scim-token\"",
    );
    fixture.write_config(&text);
    for args in [&["status"][..], &["mappings", "--json"]] {
        let mut c = fixture.command(args);
        c.env_remove("CREDENTIALS_DIRECTORY");
        let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
        out.assert_code(0);
        assert!(
            !out.all().contains("CREDENTIALS_DIRECTORY"),
            "{args:?}: {out}"
        );
    }
    let mut c = fixture.command(&["check-config"]);
    c.env_remove("CREDENTIALS_DIRECTORY");
    let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(5);
    assert!(out.stderr.contains("CREDENTIALS_DIRECTORY"), "{out}");
    assert!(!fixture.state_dir().exists());
    assert_eq!(
        sandbox.counts().total,
        0,
        "a read-only command reached the target"
    );
}

/// Read `lines` lines of the command's stdout, close the pipe and wait for the exit.
fn head(mut cmd: Command, lines: usize) -> (std::process::ExitStatus, String) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "fewer than {lines} lines");
    }
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not end after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn a_closed_stdout_ends_quietly_and_the_demo_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin());
    c.arg("demo")
        .env("TMPDIR", tmp.path())
        .env_remove("RUST_LOG");
    let (status, stderr) = head(c, 5);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?}");

    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let (status, stderr) = head(fixture.command(&["test-connection"]), 1);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn mappings_as_json_and_as_a_table_of_100_columns() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let out = fixture.run(&["mappings", "--json"]);
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["job"], "robin", "{v}");
    let users = v["users"].as_array().unwrap();
    assert!(
        users
            .iter()
            .any(|m| m["target"] == "userName" && m["apply"] == "always"),
        "{v}"
    );
    assert!(users.iter().all(|m| m["source"]["kind"].is_string()), "{v}");
    assert!(v["scoping_filters"]["users"].is_array(), "{v}");

    let out = fixture.run(&["mappings"]);
    out.assert_code(0);
    for line in out.stdout.lines() {
        assert!(line.chars().count() <= 100, "too wide: {line:?}");
    }
    assert!(out.stdout.contains("[userPrincipalName]"), "{out}");

    // Enum values as the config spells them.
    let out = fixture.run(&["check-config"]);
    assert!(out.stdout.contains("scope assigned"), "{out}");
}

#[test]
fn debug_logging_shows_provisiond_not_the_store_internals() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut c = fixture.command(&["sync"]);
    c.env("RUST_LOG", "debug");
    let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(0);
    assert!(
        out.stderr.contains("provisiond"),
        "no debug lines of ours; {out}"
    );
    assert!(
        !out.stderr.contains("sled::"),
        "sled internals shown; {out}"
    );
    // -q silences the warnings too; -v shows info on a one-shot command.
    let out = fixture.run(&["-q", "sync"]);
    out.assert_code(0);
    assert!(out.stderr.trim().is_empty(), "{out}");
}

/// A text log line names the job and the cycle once: the cycle span's fields are left out
/// where the event carries them already.
#[test]
fn text_log_lines_do_not_repeat_fields() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut c = fixture.command(&["sync"]);
    c.env("RUST_LOG", "debug");
    let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(0);
    let cycle_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("provisiond::cycle"))
        .collect();
    assert!(cycle_lines.len() >= 3, "too few cycle lines; {out}");
    for line in cycle_lines {
        for key in ["job=", "cycle_id="] {
            assert!(line.matches(key).count() <= 1, "{key} twice in {line:?}");
        }
    }
}
