//! Hostile or misshaped input through the real binary: a misshaped export fails the cycle
//! before any write (instead of deprovisioning everyone), an unusable `accountEnabled` skips
//! that user without touching her account or her memberships, an over-long control request
//! is refused, and state files are private whatever the umask.

use crate::support::cli::*;
use serde_json::{json, Value};

/// `directory(6)` with a second assigned group, so both object types are at stake.
fn six_users_two_groups() -> Value {
    let mut d = directory(6);
    d["groups"].as_array_mut().unwrap().push(json!({
        "id": group_id(1),
        "displayName": "Sales",
        "mailNickname": "sales",
        "members": [user_id(3), user_id(4)],
    }));
    d["assignments"]
        .as_array_mut()
        .unwrap()
        .push(json!({"principalId": group_id(1), "role": "User"}));
    d
}

fn active_users(sandbox: &Sandbox) -> usize {
    sandbox
        .users()
        .iter()
        .filter(|u| u["active"] != json!(false))
        .count()
}

#[test]
fn a_misshaped_export_fails_the_cycle_before_any_write() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let good = six_users_two_groups();
    fixture.write_directory(&good);
    fixture.run(&["sync", "--json"]).assert_code(0);
    assert_eq!(active_users(&sandbox), 6);
    assert_eq!(sandbox.groups().len(), 2);

    let users = good["users"].clone();
    let cases: Vec<(String, &str)> = vec![
        ("{}".into(), "users"),
        ("[]".into(), "users"),
        (json!({"Users": users}).to_string(), "Users"),
        (json!({"value": users}).to_string(), "value"),
        (
            json!({"users": users, "groups": good["groups"], "assignment": good["assignments"]})
                .to_string(),
            "assignment",
        ),
        (
            json!({"users": users, "groups": {}, "assignments": good["assignments"]}).to_string(),
            "groups",
        ),
    ];
    for (doc, key) in cases {
        fixture.write_raw_directory(&doc);
        let writes = sandbox.writes();
        let out = fixture.run(&["sync", "--json"]);
        out.assert_code(4);
        let s = out.json();
        assert_eq!(s["status"], "failed", "{doc}: {s}");
        assert_eq!(
            sandbox.writes(),
            writes,
            "{doc}: a write reached the target"
        );
        let text = out.all();
        assert!(text.contains(&format!("`{key}`")), "{doc}: {out}");
        assert!(text.contains("directory.json"), "{doc}: {out}");
        assert_eq!(active_users(&sandbox), 6, "{doc}");
        assert_eq!(sandbox.groups().len(), 2, "{doc}");
    }
    // The same in the readable form.
    fixture.write_raw_directory("{}");
    let out = fixture.run(&["sync"]);
    out.assert_code(4);
    assert!(out.all().contains("missing top-level key `users`"), "{out}");

    // Back to the good export: nothing to do, nothing was lost.
    fixture.write_directory(&good);
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert_eq!(active_users(&sandbox), 6);
    assert_eq!(sandbox.groups().len(), 2);
}

#[test]
fn account_enabled_text_is_read_and_a_bad_value_keeps_the_account_and_memberships() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let mut d = six_users_two_groups();
    d["users"][5]["accountEnabled"] = json!("False");
    fixture.write_directory(&d);
    fixture.run(&["sync", "--json"]).assert_code(0);
    let users = sandbox.users();
    let created: Vec<&Value> = users
        .iter()
        .filter(|u| u["userName"] == json!(user_name(5)))
        .collect();
    // Entra does not create a user disabled in the source: out of scope.
    assert!(
        created.iter().all(|u| u["active"] == json!(false)),
        "a user disabled by \"False\" was created active: {created:?}"
    );
    assert_eq!(active_users(&sandbox), 5);

    // User 3 (a member of Sales) gets an unusable flag: skipped with a reason naming her
    // and the key; her account stays active and her membership stays.
    let before = sandbox.groups();
    let mut d2 = d.clone();
    d2["users"][3]["accountEnabled"] = json!(0);
    fixture.write_directory(&d2);
    let writes = sandbox.writes();
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(1);
    let text = out.all();
    assert!(text.contains(&user_id(3)), "{out}");
    assert!(text.contains("accountEnabled"), "{out}");
    assert_eq!(sandbox.writes(), writes, "{out}");
    assert_eq!(active_users(&sandbox), 5);
    assert_eq!(sandbox.groups(), before);

    d2["users"][3]["accountEnabled"] = json!("no");
    fixture.write_directory(&d2);
    fixture.run(&["sync", "--json"]).assert_code(1);
    assert_eq!(sandbox.writes(), writes);
    assert_eq!(sandbox.groups(), before);
}

/// `provisiond --config <fixture's config> ARGS…` started through `sh` with umask 022, the
/// common default under which files are created 0644.
fn under_umask_022(fixture: &Fixture, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(bin())
        .arg("--config")
        .arg(fixture.config_path())
        .args(args)
        .current_dir("/")
        .env_remove("PROVISIOND_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    c
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file and directory under `dir` (recursively), with its mode.
fn modes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        out.push((p.clone(), mode(&p)));
        if p.is_dir() {
            out.extend(modes_under(&p));
        }
    }
    out
}

#[test]
fn state_files_are_private_under_umask_022_and_a_readable_token_draws_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let token = fixture.path("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = run_command(
        under_umask_022(&fixture, &["sync", "--json"]),
        fixture.dir.path(),
        std::time::Duration::from_secs(60),
    );
    out.assert_code(0);
    assert_eq!(sandbox.users().len(), 5);
    let state = fixture.state_dir();
    assert_eq!(mode(&state), 0o700, "state_dir");
    for (p, m) in modes_under(&state) {
        assert_eq!(m & 0o077, 0, "{} is {m:o}", p.display());
    }
    assert_eq!(mode(&state.join("holder")), 0o600);
    // The token: a warning naming the file, never its content.
    assert!(
        out.stderr.contains("readable by its group or by others"),
        "{out}"
    );
    assert!(out.stderr.contains(&token.display().to_string()), "{out}");
    assert!(!out.all().contains(TOKEN), "{out}");

    // 0600: no warning.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert!(!out.stderr.contains("readable by its group"), "{out}");

    // The daemon's pid file and socket, and an over-long control request.
    let mut daemon = Proc::spawn(under_umask_022(&fixture, &["run"]), fixture.dir.path());
    let socket = fixture.socket_path();
    wait_for(
        std::time::Duration::from_secs(20),
        "the daemon's control socket",
        || {
            if let Some(s) = daemon.try_status() {
                panic!("the daemon exited ({s}); {}", daemon.output());
            }
            std::os::unix::net::UnixStream::connect(&socket)
                .ok()
                .filter(|_| fixture.pid_path().exists())
        },
    );
    assert_eq!(mode(&fixture.pid_path()), 0o600);
    assert_eq!(mode(&socket), 0o600);

    // 8 MiB without a newline: refused after 64 KiB, and the connection is closed (the
    // write fails or the daemon stops reading; the answer arrives either way).
    use std::io::{Read, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    conn.set_write_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let _ = conn.write_all(&vec![b' '; 8 << 20]);
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.contains("at most 64 KiB"), "{answer:?}");
    // The daemon still serves.
    let out = fixture.run(&["status", "--json"]);
    out.assert_code(0);
    daemon.signal("TERM");
    daemon.wait_until(std::time::Instant::now() + std::time::Duration::from_secs(10));
}
