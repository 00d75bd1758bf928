//! The real binary against hostile targets: a body without end, ids that would turn later
//! requests into requests on the collection, a redirect echoing the token in its headers, a
//! 2xx carrying a SCIM Error, a `totalResults` above the resources returned, and credentials
//! in the target URL. Each fails its object (or the config check), never the process, and
//! nothing of the token leaves it.

use crate::support::cli::*;
use crate::support::hostile::{list, Hostile, Reply};
use provisiond::{FaultAction, FaultRule};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The codes of a summary's problems.
fn codes(summary: &Value) -> Vec<String> {
    summary["problems"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| p["code"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn job(fixture: &Fixture, url: &str, target_extra: &str) {
    let mut o = JobOptions::new(url);
    o.target_extra = target_extra.to_string();
    fixture.write_job(&o);
}

#[test]
fn an_endless_body_fails_its_object_not_the_process() {
    let hostile = Hostile::start(|seen, _| match seen.method.as_str() {
        "GET" => Reply::endless(),
        _ => Reply::empty(500),
    });
    let fixture = Fixture::new(&hostile.url());
    // Without a cap, each GET would read for the whole request timeout (gigabytes on
    // loopback): the time bound below is what shows reading stopped.
    job(
        &fixture,
        &hostile.url(),
        "max_response_bytes = 65536\nrequest_timeout = \"25s\"",
    );
    let started = Instant::now();
    let out = fixture.run(&["sync", "--json"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}; {out}",
        started.elapsed()
    );
    out.assert_code(1);
    let s = out.json();
    assert_eq!(s["status"], "entry_level_errors", "{s}");
    assert_eq!(s["users"]["failed"], 5, "{s}");
    assert_eq!(s["groups"]["failed"], 1, "{s}");
    let codes = codes(&s);
    assert!(!codes.is_empty(), "{s}");
    assert!(codes.iter().all(|c| c == "ResponseTooLarge"), "{s}");
    // Not retried, and nothing was written on the strength of a cut answer.
    let seen = hostile.seen();
    assert!(seen.iter().all(|r| r.method == "GET"), "{seen:?}");
    assert_eq!(seen.len(), 6, "{seen:?}");
}

/// Ids a target must not hand out: dot segments (also once a URL parser drops the tab),
/// control characters, `/`.
const HOSTILE_IDS: [&str; 7] = ["..", ".", ".\t.", "\t", "a/b", "x\r\ny", "nul\0"];

#[test]
fn hostile_ids_are_refused_and_never_reach_a_url() {
    let matching = Arc::new(AtomicBool::new(false));
    let posts = Arc::new(AtomicUsize::new(0));
    let (m, p) = (matching.clone(), posts.clone());
    let hostile = Hostile::start(move |seen, index| {
        let id = HOSTILE_IDS[index % HOSTILE_IDS.len()];
        match seen.method.as_str() {
            // Phase 2: matching finds an object with a hostile id.
            "GET" if m.load(Ordering::SeqCst) => {
                Reply::json(200, list(vec![json!({"id": id, "userName": "x"})]))
            }
            "GET" => Reply::json(200, list(Vec::new())),
            "POST" => {
                let id = HOSTILE_IDS[p.fetch_add(1, Ordering::SeqCst) % HOSTILE_IDS.len()];
                Reply::json(201, json!({"id": id, "userName": "x", "displayName": "x"}))
            }
            _ => Reply::empty(204),
        }
    });
    let fixture = Fixture::new(&hostile.url());

    for phase in ["create", "match"] {
        matching.store(phase == "match", Ordering::SeqCst);
        let out = fixture.run(&["sync", "--json"]);
        out.assert_code(1);
        let s = out.json();
        assert_eq!(s["users"]["failed"], 5, "{phase}: {s}");
        assert_eq!(s["groups"]["failed"], 1, "{phase}: {s}");
        assert_eq!(s["users"]["created"], 0, "{phase}: {s}");
        let codes = codes(&s);
        assert!(!codes.is_empty(), "{s}");
        assert!(codes.iter().all(|c| c == "InvalidTargetId"), "{phase}: {s}");
        let reasons = s["problems"].to_string();
        assert!(reasons.contains("refused target id"), "{phase}: {s}");
        // Shown escaped, never as a raw control character.
        for p in s["problems"].as_array().unwrap() {
            let reason = p["reason"].as_str().unwrap();
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
        }
    }
    assert_eq!(posts.load(Ordering::SeqCst), 6, "one create per object");

    // Nothing was linked, so nothing can be patched or deleted through those ids later.
    let out = fixture.run(&["status", "--json"]);
    out.assert_code(0);
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status[0]["users_linked"], 0, "{status}");
    assert_eq!(status[0]["groups_linked"], 0, "{status}");
    for r in hostile.seen() {
        assert!(
            matches!(r.method.as_str(), "GET" | "POST"),
            "unexpected request {r:?}"
        );
        assert!(
            r.path == "/scim/v2/Users" || r.path == "/scim/v2/Groups",
            "request outside the collections: {r:?}"
        );
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_redirect_echoing_the_token_leaks_it_nowhere() {
    let encoded: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
    let location = format!("https://evil.example/cb?auth=Bearer%20{encoded}&t={TOKEN}");
    let hostile = Hostile::start(move |seen, _| {
        // Echo whatever Authorization came in, in every header a server could use.
        let auth = seen
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Reply::json(302, json!({"detail": format!("moved; you sent {auth}")}))
            .header("location", &location)
            .header("x-echo-authorization", &auth)
            .header("set-cookie", &format!("session={TOKEN}"))
            .header("www-authenticate", &format!("Bearer realm=\"{auth}\""))
    });
    let fixture = Fixture::new(&hostile.url());
    let leaks = |text: &str| text.contains(TOKEN) || text.contains(&encoded);

    let mut said_302 = 0;
    for args in [
        &["sync", "--json"][..],
        &["sync"],
        &["status", "--json"],
        &["status"],
        &["test-connection"],
        &["check-config"],
    ] {
        let mut c = fixture.command(args);
        c.env("RUST_LOG", "trace");
        let out = run_command(c, fixture.dir.path(), RUN_LIMIT);
        assert!(!leaks(&out.all()), "{args:?} leaked the token; {out}");
        if out.all().contains("302") {
            said_302 += 1;
        }
    }
    // Not vacuous: the redirect was reached and reported (both syncs, status, test-connection).
    assert!(said_302 >= 4, "the redirect was not reported");
    // The server did echo it: the token was sent to the configured target only.
    let seen = hostile.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| r.path.starts_with("/scim/v2/")),
        "{seen:?}"
    );

    let files = files_under(&fixture.state_dir());
    assert!(!files.is_empty(), "no state written");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!leaks(&text), "{} holds the token", file.display());
    }
}

fn scim_error(status: &str, detail: &str) -> String {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
           "status": status, "detail": detail})
    .to_string()
}

#[test]
fn a_2xx_carrying_a_scim_error_is_that_error() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    fixture.run(&["sync"]).assert_code(0);

    let mut d = directory(5);
    d["users"][0]["jobTitle"] = json!("Director");
    fixture.write_directory(&d);
    sandbox.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 200,
        retry_after: None,
        body: Some(scim_error("400", "mutability: jobTitle is readOnly")),
    })
    .method("PATCH")]);
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(1);
    let s = out.json();
    assert_eq!(s["users"]["updated"], 0, "{s}");
    assert_eq!(s["users"]["failed"], 1, "{s}");
    assert_eq!(codes(&s), ["WebExceptionProtocolError"], "{s}");
    assert!(s["problems"].to_string().contains("readOnly"), "{s}");

    // Not recorded as exported: once the target accepts it, the change is sent again.
    sandbox.set_faults(Vec::new());
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(0);
    assert_eq!(out.json()["users"]["updated"], 1, "{out}");
    let titles: Vec<Value> = sandbox.users().iter().map(|u| u["title"].clone()).collect();
    assert!(titles.contains(&json!("Director")), "{titles:?}");
}

#[test]
fn total_results_above_the_resources_returned_is_not_no_match() {
    let sandbox = Sandbox::with_faults(vec![FaultRule::new(FaultAction::Status {
        status: 200,
        retry_after: None,
        body: Some(
            r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": 1e18, "Resources": []}"#
                .into(),
        ),
    })
    .method("GET")
    .path_prefix("/Users")]);
    let fixture = Fixture::new(&sandbox.url());
    let out = fixture.run(&["sync", "--json"]);
    out.assert_code(1);
    let s = out.json();
    assert_eq!(s["users"]["failed"], 5, "{s}");
    assert_eq!(s["users"]["created"], 0, "{s}");
    assert!(codes(&s).iter().all(|c| c == "InvalidResponse"), "{s}");
    // "No match" would have created them: none was.
    assert!(sandbox.users().is_empty(), "{:?}", sandbox.users());
}

#[test]
fn credentials_in_the_target_url_are_refused_without_printing_them() {
    let password = "pw-Hx9-do-not-print";
    let fixture = Fixture::new(&format!("http://admin:{password}@127.0.0.1:9/scim"));
    for args in [&["check-config"][..], &["sync"], &["test-connection"]] {
        let out = fixture.run(args);
        out.assert_code(5);
        assert!(!out.all().contains(password), "{args:?} printed it; {out}");
        assert!(out.all().contains("jobs[0].target.url"), "{args:?}; {out}");
        assert!(out.all().contains("provisiond.toml"), "{args:?}; {out}");
    }
}
