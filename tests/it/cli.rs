//! The `provisiond` command line, one-shot commands: `check-config` and configuration
//! errors, `sync` (`--json`, `--dry-run`, exit codes), secrets in output, and
//! `test-connection`, each against a sandbox on 127.0.0.1.

use crate::support::cli::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// check-config and configuration errors
// ---------------------------------------------------------------------------------------

/// A bad configuration: how to break the good one, and what the error must name.
struct BadConfig {
    what: &'static str,
    /// (text in the good config, its replacement)
    edit: (&'static str, &'static str),
    /// Fragments stderr must contain (besides the config file's path).
    fragments: &'static [&'static str],
    /// For TOML-level errors: stderr must give the line of the first line containing this.
    line_of: Option<&'static str>,
}

const BAD_CONFIGS: &[BadConfig] = &[
    BadConfig {
        what: "unknown key",
        edit: (
            "token_file = \"token\"",
            "token_file = \"token\"\ncolour = \"blue\"",
        ),
        fragments: &["colour"],
        line_of: Some("colour"),
    },
    BadConfig {
        what: "unknown top-level key",
        edit: (
            "state_dir = \"state\"",
            "state_dir = \"state\"\nstate_dri = \"x\"",
        ),
        fragments: &["state_dri"],
        line_of: Some("state_dri"),
    },
    BadConfig {
        what: "missing token file",
        edit: ("token_file = \"token\"", "token_file = \"no-such-token\""),
        fragments: &["jobs[0].target.token_file", "no-such-token"],
        line_of: None,
    },
    BadConfig {
        what: "unset token env",
        edit: (
            "token_file = \"token\"",
            "token_env = \"PROVISIOND_TEST_UNSET_TOKEN_VAR\"",
        ),
        fragments: &[
            "jobs[0].target.token_env",
            "PROVISIOND_TEST_UNSET_TOKEN_VAR",
        ],
        line_of: None,
    },
    BadConfig {
        what: "invalid interval",
        edit: ("interval = \"40m\"", "interval = \"40 minutes\""),
        fragments: &["jobs[0].interval", "40 minutes"],
        line_of: None,
    },
    BadConfig {
        what: "invalid request_timeout",
        edit: (
            "token_file = \"token\"",
            "token_file = \"token\"\nrequest_timeout = \"soon\"",
        ),
        fragments: &["jobs[0].target.request_timeout", "soon"],
        line_of: None,
    },
    BadConfig {
        what: "invalid cron (5 fields)",
        edit: ("interval = \"40m\"", "cron = \"0 * * * *\""),
        fragments: &["jobs[0].cron", "0 * * * *"],
        line_of: None,
    },
    BadConfig {
        what: "invalid cron (words)",
        edit: ("interval = \"40m\"", "cron = \"every day\""),
        fragments: &["jobs[0].cron", "every day"],
        line_of: None,
    },
    BadConfig {
        what: "plain http to a non-loopback host",
        edit: (
            "url = \"http://127.0.0.1:",
            "url = \"http://scim.example.com:",
        ),
        fragments: &["jobs[0].target.url", "loopback"],
        line_of: None,
    },
    BadConfig {
        what: "mapping to an unparsable SCIM path",
        edit: (
            "token_file = \"token\"",
            "token_file = \"token\"\n\n[[jobs.mappings.users]]\ntarget = \"emails[type eq\"\nsource = \"mail\"",
        ),
        fragments: &["jobs[0].mappings.users", "emails[type eq"],
        line_of: None,
    },
    BadConfig {
        what: "missing source file",
        edit: (
            "path = \"directory.json\"",
            "path = \"no-such-directory.json\"",
        ),
        fragments: &["jobs[0].source.path", "no-such-directory.json"],
        line_of: None,
    },
];

/// Every bad config makes every config-reading command exit 5 before any request, with an
/// error naming the file and the key (or line).
#[test]
fn bad_configs_exit_3_naming_file_and_key_before_any_request() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let good = job_config(&JobOptions::new(&sandbox.url()));
    let config_path = fixture.config_path().display().to_string();
    for case in BAD_CONFIGS {
        assert!(
            good.contains(case.edit.0),
            "{}: edit does not apply",
            case.what
        );
        let text = good.replacen(case.edit.0, case.edit.1, 1);
        fixture.write_config(&text);
        let line = case.line_of.map(|needle| {
            let n = text.lines().position(|l| l.contains(needle)).unwrap() + 1;
            format!("line {n}")
        });
        for args in [
            &["check-config"][..],
            &["sync", "--json"],
            &["sync", "--dry-run"],
            &["test-connection"],
            &["status"],
            &["run"],
        ] {
            // `status` needs no secret: a missing token is no error for it.
            if args == ["status"] && case.what.contains("token") {
                continue;
            }
            let out = fixture.run(args);
            let ctx = format!("{} / {args:?}; {out}", case.what);
            assert_eq!(out.code(), Some(5), "exit code: {ctx}");
            assert!(out.stderr.contains(&config_path), "file not named: {ctx}");
            for f in case.fragments.iter().copied().chain(line.as_deref()) {
                assert!(out.stderr.contains(f), "{f:?} not named: {ctx}");
            }
            assert!(out.stdout.trim().is_empty(), "stdout not empty: {ctx}");
        }
        assert_eq!(
            sandbox.counts().total,
            0,
            "{}: a request reached the sandbox",
            case.what
        );
        assert!(
            !fixture.state_dir().exists(),
            "{}: the state dir was created",
            case.what
        );
    }
    // The good config passes.
    fixture.write_config(&good);
    let out = fixture.run(&["check-config"]);
    out.assert_code(0);
    assert!(out.stdout.contains("OK"), "{out}");
    assert!(out.stdout.contains("robin"), "{out}");
    assert_eq!(sandbox.counts().total, 0, "check-config sent a request");
}

/// `--config` can come from `PROVISIOND_CONFIG`; a missing file names the file.
#[test]
fn config_from_env_and_missing_config_file() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut c = std::process::Command::new(bin());
    c.arg("check-config")
        .env("PROVISIOND_CONFIG", fixture.config_path())
        .env_remove("RUST_LOG");
    run_command(c, fixture.dir.path(), RUN_LIMIT).assert_code(0);

    let missing = fixture.path("nope.toml");
    let mut c = std::process::Command::new(bin());
    c.arg("--config").arg(&missing).arg("check-config");
    let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(5);
    assert!(out.stderr.contains(&missing.display().to_string()), "{out}");
}

// ---------------------------------------------------------------------------------------
// sync --json
// ---------------------------------------------------------------------------------------

/// The keys of `sync --json`, per the interface.
fn assert_summary_shape(v: &Value) {
    for k in ["job", "cycle_id", "kind", "status"] {
        assert!(v[k].is_string(), "{k} missing or not a string: {v}");
    }
    assert!(v["duration_ms"].is_u64(), "duration_ms: {v}");
    let sections: [(&str, &[&str]); 4] = [
        (
            "users",
            &[
                "created",
                "updated",
                "disabled",
                "deleted",
                "unchanged",
                "skipped",
                "failed",
            ],
        ),
        (
            "groups",
            &[
                "created",
                "updated",
                "deleted",
                "unchanged",
                "skipped",
                "failed",
            ],
        ),
        ("memberships", &["added", "removed"]),
        ("requests", &["GET", "POST", "PATCH", "PUT", "DELETE"]),
    ];
    for (section, keys) in sections {
        for k in keys {
            assert!(v[section][k].is_u64(), "{section}.{k} missing: {v}");
        }
    }
    assert!(
        ["initial", "incremental"].contains(&v["kind"].as_str().unwrap()),
        "kind: {v}"
    );
    assert!(
        ["succeeded", "entry_level_errors", "failed"].contains(&v["status"].as_str().unwrap()),
        "status: {v}"
    );
}

fn writes_of(v: &Value) -> u64 {
    ["POST", "PATCH", "PUT", "DELETE"]
        .iter()
        .map(|m| v["requests"][m].as_u64().unwrap())
        .sum()
}

#[test]
fn sync_json_initial_then_incremental_with_no_writes() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());

    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    let s = out.json();
    assert_summary_shape(&s);
    assert_eq!(s["job"], "robin");
    assert_eq!(s["kind"], "initial", "{s}");
    assert_eq!(s["status"], "succeeded", "{s}");
    assert_eq!(s["users"]["created"], 5, "{s}");
    assert_eq!(s["groups"]["created"], 1, "{s}");
    assert_eq!(s["memberships"]["added"], 3, "{s}");
    // The summary's request counts are what the sandbox received.
    let c = sandbox.counts();
    assert_eq!(s["requests"]["GET"], c.get, "{s}");
    assert_eq!(s["requests"]["POST"], c.post, "{s}");
    assert_eq!(s["requests"]["PATCH"], c.patch, "{s}");
    assert_eq!(s["requests"]["PUT"], c.put, "{s}");
    assert_eq!(s["requests"]["DELETE"], c.delete, "{s}");
    assert_eq!(
        sandbox.user_names(),
        (0..5).map(user_name).collect::<Vec<_>>()
    );

    let writes_before = sandbox.writes();
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    let s2 = out.json();
    assert_summary_shape(&s2);
    assert_eq!(s2["kind"], "incremental", "{s2}");
    assert_eq!(s2["status"], "succeeded", "{s2}");
    assert_ne!(s2["cycle_id"], s["cycle_id"]);
    assert_eq!(writes_of(&s2), 0, "{s2}");
    assert_eq!(s2["users"]["unchanged"], 5, "{s2}");
    assert_eq!(sandbox.writes(), writes_before, "the no-change cycle wrote");

    // Without --json: a readable summary.
    let out = fixture.run(&["sync"]);
    out.assert_code(0);
    assert!(out.stdout.contains("incremental cycle succeeded"), "{out}");
    assert!(out.stdout.contains("users:"), "{out}");
}

#[test]
fn sync_exit_1_on_entry_level_errors() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut d = directory(4);
    // Users 2 and 3 share a userName.
    d["users"][3]["userPrincipalName"] = json!(user_name(2));
    fixture.write_directory(&d);

    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(1);
    let s = out.json();
    assert_summary_shape(&s);
    assert_eq!(s["status"], "entry_level_errors", "{s}");
    assert_eq!(s["users"]["created"], 2, "{s}");
    assert!(s["users"]["skipped"].as_u64().unwrap() >= 1, "{s}");
    let names = sandbox.user_names();
    assert_eq!(names, vec![user_name(0), user_name(1)], "{s}");
}

#[test]
fn sync_exit_4_on_failed_cycle_without_requests() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    fixture.write_raw_directory("{\"users\": [ {\"id\": \"1\", ");

    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(4);
    let s = out.json();
    assert_summary_shape(&s);
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(
        s["requests"],
        json!({"GET": 0, "POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0})
    );
    assert_eq!(sandbox.counts().total, 0, "a request reached the sandbox");

    // Readable form says why.
    let out = fixture.run(&["sync"]);
    out.assert_code(4);
    assert!(out.stdout.contains("directory.json"), "{out}");
    assert_eq!(sandbox.counts().total, 0);
}

#[test]
fn sync_unknown_job_is_a_usage_error() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let out = fixture.run(&["sync", "--job", "nope", "--json"]);
    out.assert_code(2);
    assert!(out.stderr.contains("nope"), "{out}");
    assert_eq!(sandbox.counts().total, 0);
}

// ---------------------------------------------------------------------------------------
// sync --dry-run
// ---------------------------------------------------------------------------------------

#[test]
fn dry_run_sends_no_write_and_does_not_advance_state() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());

    let out = fixture.run(&["sync", "--dry-run"]);
    out.assert_code(0);
    assert_eq!(sandbox.writes(), 0, "dry run wrote: {:?}", sandbox.counts());
    assert!(out.stdout.contains("plan (dry run"), "{out}");
    for i in 0..5 {
        let name = format!("\"User {i}\"");
        assert!(out.stdout.contains(&name), "{name} not listed; {out}");
    }
    assert!(out.stdout.contains("Engineering"), "{out}");

    let out = fixture.run(&["sync", "--dry-run", "--json"]);
    out.assert_code(0);
    let s = out.json();
    assert_summary_shape(&s);
    assert_eq!(s["users"]["created"], 5, "{s}");
    assert_eq!(s["kind"], "initial", "{s}");
    assert_eq!(sandbox.writes(), 0);
    assert!(sandbox.users().is_empty());

    // The state did not move: a real sync is still the initial one.
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    let s = out.json();
    assert_eq!(s["kind"], "initial", "{s}");
    assert_eq!(s["users"]["created"], 5, "{s}");

    // A dry run over converged state plans nothing and writes nothing.
    let writes = sandbox.writes();
    let out = fixture.run(&["sync", "--dry-run"]);
    out.assert_code(0);
    assert!(out.stdout.contains("no changes"), "{out}");
    assert_eq!(sandbox.writes(), writes);
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

#[test]
fn token_never_appears_in_output_even_at_trace() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    for args in [
        &["sync"][..],
        &["sync", "--json"],
        &["sync", "--dry-run"],
        &["test-connection"],
        &["status", "--json"],
        &["check-config"],
    ] {
        let mut c = fixture.command(args);
        // The HTTP and TLS libraries are held at warn unless named: name them, as they see
        // the token's header.
        c.env(
            "RUST_LOG",
            "trace,sled=trace,h2=trace,hyper=trace,hyper_util=trace,rustls=trace",
        );
        let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
        assert!(matches!(out.code(), Some(0)), "{args:?} failed; {out}");
        assert!(!out.all().contains(TOKEN), "{args:?} printed the token");
        // Trace logging is on: the check above is not vacuous.
        if args[0] == "sync" {
            assert!(
                out.stderr.contains("TRACE"),
                "{args:?}: no trace output; {out}"
            );
        }
    }
    assert_eq!(sandbox.users().len(), 5);
}

#[test]
fn wrong_token_is_reported_without_the_token() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let wrong = "wrong-tok-Zq81-distinctive-do-not-print";
    fixture.write_token(wrong);

    for (args, json) in [(&["sync", "--json"][..], true), (&["sync"][..], false)] {
        let mut c = fixture.command(args);
        c.env("RUST_LOG", "trace");
        let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
        out.assert_code(4);
        assert!(!out.all().contains(wrong), "{args:?} printed the token");
        assert!(!out.all().contains(TOKEN));
        let reported = if json {
            out.json()["error"].as_str().unwrap_or_default().to_string()
        } else {
            out.stdout.clone()
        };
        let lower = reported.to_lowercase();
        assert!(
            lower.contains("token") || lower.contains("unauthorized"),
            "{args:?}: the token problem is not named; {out}"
        );
        assert!(lower.contains("401"), "{args:?}: no status; {out}");
    }
    assert!(sandbox.users().is_empty());
    assert_eq!(sandbox.writes(), 0);
}

// ---------------------------------------------------------------------------------------
// test-connection
// ---------------------------------------------------------------------------------------

/// One `test-connection` case: where the job points, with which token, and what the report
/// must say.
struct ConnectionCase {
    what: &'static str,
    /// The job's URL, made from the sandbox's.
    url: fn(&str) -> String,
    token: &'static str,
    code: i32,
    /// Fragments of the output (lowercased).
    fragments: &'static [&'static str],
}

const CONNECTION_CASES: &[ConnectionCase] = &[
    ConnectionCase {
        what: "working target",
        url: |u| u.to_string(),
        token: TOKEN,
        code: 0,
        fragments: &["connection ok"],
    },
    ConnectionCase {
        what: "wrong token",
        url: |u| u.to_string(),
        token: "not-the-right-token-5521",
        code: 1,
        fragments: &["token", "401"],
    },
    ConnectionCase {
        what: "nothing listening",
        url: |_| dead_url(),
        token: TOKEN,
        code: 1,
        fragments: &["connect"],
    },
    ConnectionCase {
        what: "not the SCIM base path",
        url: |u| format!("{u}/v9/not-scim"),
        token: TOKEN,
        code: 1,
        fragments: &["scim", "404", "path"],
    },
    ConnectionCase {
        what: "https to a plain-http server",
        url: |u| u.replace("http://", "https://"),
        token: TOKEN,
        code: 1,
        fragments: &["tls"],
    },
];

#[test]
fn test_connection_diagnoses_url_tls_token_and_connect() {
    let sandbox = Sandbox::start();
    for case in CONNECTION_CASES {
        let fixture = Fixture::new(&(case.url)(&sandbox.url()));
        fixture.write_token(case.token);
        let out = fixture.run(&["test-connection"]);
        assert_eq!(out.code(), Some(case.code), "{}; {out}", case.what);
        let all = out.all().to_lowercase();
        for f in case.fragments {
            assert!(all.contains(f), "{}: {f:?} not said; {out}", case.what);
        }
        assert!(
            !out.all().contains(case.token),
            "{}: the token was printed",
            case.what
        );
    }
    assert_eq!(sandbox.writes(), 0, "test-connection wrote");
}

/// Logs on a pipe (journald, a file) carry no terminal colour codes; `--log-format json`
/// gives one JSON object per line.
#[test]
fn logs_are_plain_text_or_json_lines_off_a_terminal() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut c = fixture.command(&["sync"]);
    c.env("RUST_LOG", "info").env_remove("NO_COLOR");
    let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(0);
    assert!(out.stderr.contains("cycle finished"), "{out}");
    assert!(
        !out.all().contains('\x1b'),
        "ANSI escape codes in output; {out}"
    );

    let mut c = fixture.command(&["--log-format", "json", "sync"]);
    c.env("RUST_LOG", "info");
    let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
    out.assert_code(0);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(!lines.is_empty(), "{out}");
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(v["level"].is_string(), "{l}");
    }
}

/// The shipped example configuration passes `check-config` as installed in `/etc/provisiond/`
/// (here a temporary copy), from any working directory, and creates no state directory.
#[test]
fn example_config_checks() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/provisiond.toml"
    );
    // As installed: the directory export beside it, the token as the unit's credential.
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let config = std::fs::read_to_string(example).unwrap().replace(
        "/var/lib/provisiond",
        dir.path().join("state").to_str().unwrap(),
    );
    std::fs::write(etc.join("provisiond.toml"), config).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/examples/directory.json"
        ),
        etc.join("directory.json"),
    )
    .unwrap();
    std::fs::write(etc.join("robin-token"), "example-token").unwrap();
    let mut c = std::process::Command::new(bin());
    c.arg("--config")
        .arg(etc.join("provisiond.toml"))
        .arg("check-config")
        .current_dir("/")
        .env("CREDENTIALS_DIRECTORY", &etc)
        .env_remove("RUST_LOG");
    let out = run_command(c, dir.path(), RUN_LIMIT);
    out.assert_code(0);
    assert!(out.stdout.contains("robin"), "{out}");
    assert!(!out.all().contains("example-token"), "{out}");
    assert!(
        !dir.path().join("state").exists(),
        "check-config created state_dir"
    );
}

/// `provisiond expr`: the expression builder's "test" button, with the service's virtual
/// attributes as a cycle computes them. One table: expression, input, exit code, stdout.
#[test]
fn expr_evaluates_like_a_cycle() {
    let active = r#"Switch([IsSoftDeleted], , "False", "True", "True", "False")"#;
    let cases: &[(&str, &str, i32, &str)] = &[
        (active, r#"{"accountEnabled": true}"#, 0, "\"True\""),
        (active, r#"{"accountEnabled": false}"#, 0, "\"False\""),
        (active, r#"{"IsSoftDeleted": true}"#, 0, "\"False\""),
        (
            r#"Join(" ", [givenName], [surname])"#,
            r#"{"givenName": "Ann", "surname": "Lee"}"#,
            0,
            "\"Ann Lee\"",
        ),
        (
            r#"ToLower(Replace([userPrincipalName], , "@contoso.com", , "", , ))"#,
            r#"{"userPrincipalName": "Ann@contoso.com"}"#,
            0,
            "\"ann\"",
        ),
        ("[objectId]", r#"{"id": "6f1c"}"#, 0, "\"6f1c\""),
        (
            "SingleAppRoleAssignment([appRoleAssignments])",
            r#"{"appRoleAssignments": ["Admin"]}"#,
            0,
            "\"Admin\"",
        ),
        (
            "Split([proxy], \",\")",
            r#"{"proxy": "a,b"}"#,
            0,
            "[\"a\",\"b\"]",
        ),
        ("IsPresent([mail])", "{}", 0, "false"),
        ("[nothing]", "{}", 0, "null"),
        (
            "IgnoreFlowIfNullOrEmpty([mail])",
            "{}",
            0,
            "{\"ignored\":true}",
        ),
        ("CDate(\"not a date\")", "{}", 1, ""),
        ("Join(\" \", [a]", "{}", 2, ""),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (expression, input, code, stdout) in cases {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["expr", expression, "--input", input]);
        let out = run_command(cmd, dir.path(), std::time::Duration::from_secs(20));
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{expression} on {input}: {out:?}"
        );
        assert_eq!(out.stdout.trim(), *stdout, "{expression} on {input}");
        if *code == 2 {
            assert!(
                out.stderr.contains('^'),
                "a parse error shows a caret: {}",
                out.stderr
            );
        }
    }
}
