//! The Microsoft Graph source against the Graph emulator (`crates/graph-emulator`) on 127.0.0.1: full and
//! incremental reads, paging, expired delta tokens, throttling, incomplete reads, token
//! failures and secrets; then whole cycles from the emulator into the SCIM sandbox.

use crate::support::certs;
use crate::support::common::*;
use graph_emulator::{self as emulator, FaultAction, FaultRule, GraphEmulatorConfig, GraphHandle};
use provisiond::Directory;
use provisiond::Mappings;
use provisiond::MemoryStore;
use provisiond::{evaluate_scope, OutOfScope, ScopeSettings};
use provisiond::{ClientCertificate, GraphCredential, GraphSettings, GraphSource, Selection};
use provisiond::{CycleKind, CycleStatus};
use provisiond::{Source, SourceError};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub(crate) const ROLE_USER: &str = "18d14569-c3bd-439b-9a66-3a2aee01d14f";
const ROLE_ADMIN: &str = "7b5a1c3e-7f0e-4b4b-9a58-27bcd5a0a6a1";
const DEFAULT_ACCESS: &str = "00000000-0000-0000-0000-000000000000";

/// A Graph user with the default-mapped attributes, under Graph's property names.
pub(crate) fn graph_user(id: &str, first: &str, last: &str, extra: Value) -> Value {
    let nick = first.to_lowercase();
    let mut u = json!({
        "id": id,
        "userPrincipalName": format!("{nick}@contoso.com"),
        "mail": format!("{nick}@contoso.com"),
        "givenName": first,
        "surname": last,
        "displayName": format!("{first} {last}"),
        "accountEnabled": true,
        "jobTitle": "Engineer",
        "department": "R&D",
        "mailNickname": nick,
        "usageLocation": "GB",
    });
    for (k, v) in extra.as_object().unwrap() {
        u[k] = v.clone();
    }
    u
}

/// The tenant of `support::common::base_directory`, in Graph: alice (assigned, manager bob),
/// bob and grace (via the assigned group Engineering), henry (assigned), carol (disabled,
/// assigned), erin (Default Access only), frank (in the unassigned Platform group, nested in
/// Engineering). Operations is assigned with the Admin role.
pub(crate) async fn tenant(config: GraphEmulatorConfig) -> GraphHandle {
    let h = emulator::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    h.put_user(graph_user(
        "u-alice",
        "Alice",
        "Liddell",
        json!({"preferredLanguage": "en-GB", "city": "Oxford", "country": "GB",
               "businessPhones": ["+44 1865 000000"], "mobilePhone": "+44 7700 900000",
               "employeeId": "1001"}),
    ));
    h.put_user(graph_user(
        "u-bob",
        "Bob",
        "Builder",
        json!({"department": "Ops", "employeeId": "1002"}),
    ));
    h.put_user(graph_user(
        "u-grace",
        "Grace",
        "Hopper",
        json!({"employeeId": "1003"}),
    ));
    h.put_user(graph_user(
        "u-henry",
        "Henry",
        "Higgins",
        json!({"employeeId": "1004"}),
    ));
    h.put_user(graph_user(
        "u-carol",
        "Carol",
        "Danvers",
        json!({"accountEnabled": false}),
    ));
    h.put_user(graph_user("u-erin", "Erin", "Brockovich", json!({})));
    h.put_user(graph_user("u-frank", "Frank", "Poole", json!({})));
    h.set_manager("u-alice", Some("u-bob"));
    h.put_group(
        json!({"id": "g-platform", "displayName": "Platform", "mailNickname": "platform",
                       "securityEnabled": true, "members": ["u-frank"]}),
    );
    h.put_group(
        json!({"id": "g-eng", "displayName": "Engineering", "mailNickname": "eng",
                       "securityEnabled": true,
                       "members": ["u-bob", "u-grace", "g-platform", "u-carol"]}),
    );
    h.put_group(
        json!({"id": "g-ops", "displayName": "Operations", "mailNickname": "ops",
                       "securityEnabled": true, "members": ["u-alice", "u-henry"]}),
    );
    h.set_app_roles(vec![
        json!({"id": ROLE_USER, "displayName": "User", "value": "User", "isEnabled": true,
               "allowedMemberTypes": ["User"], "description": "User"}),
        json!({"id": ROLE_ADMIN, "displayName": "Admin", "value": "admin", "isEnabled": true,
               "allowedMemberTypes": ["User"], "description": "Admin"}),
    ]);
    h.assign("u-alice", ROLE_USER);
    h.assign("u-henry", ROLE_USER);
    h.assign("g-eng", ROLE_USER);
    h.assign("g-ops", ROLE_ADMIN);
    h.assign("u-carol", ROLE_USER);
    h.assign("u-erin", DEFAULT_ACCESS);
    h
}

/// Settings for the emulator with the generic SCIM mappings' `$select`, tiny backoffs and
/// `Retry-After` honoured up to 3 s.
pub(crate) fn settings(h: &GraphHandle) -> GraphSettings {
    let c = h.config();
    let mut s = GraphSettings::new(
        &c.tenant_id,
        &c.client_id,
        c.client_secret.clone(),
        &c.service_principal_id,
    )
    .unwrap();
    s.authority = url::Url::parse(&h.authority()).unwrap();
    s.graph_url = url::Url::parse(&h.graph_url()).unwrap();
    s.select = Selection::for_job(
        &Mappings::generic_scim().unwrap(),
        &ScopeSettings::default(),
        &[],
        &[],
    )
    .unwrap();
    s.connect_timeout = Duration::from_secs(2);
    s.request_timeout = Duration::from_secs(5);
    s.read_timeout = Duration::from_secs(30);
    s.max_retries = 3;
    s.backoff_base = Duration::from_millis(2);
    s.backoff_max = Duration::from_millis(20);
    s.max_retry_after = Duration::from_secs(3);
    s
}

fn ids<'a, T>(m: impl IntoIterator<Item = (&'a String, T)>) -> BTreeSet<String> {
    m.into_iter().map(|(id, _)| id.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn roles_of(d: &Directory, principal: &str) -> Vec<String> {
    d.assignments
        .iter()
        .filter(|a| a.principal_id == principal)
        .map(|a| a.role.clone())
        .collect()
}

/// Requests the emulator saw that start with `prefix`.
pub(crate) fn seen(h: &GraphHandle, prefix: &str) -> Vec<String> {
    h.requests()
        .into_iter()
        .filter(|r| r.starts_with(prefix))
        .collect()
}

fn service_error(e: SourceError) -> (String, bool) {
    let retryable = e.is_retryable();
    match e {
        SourceError::Graph { context, source } => {
            let message = match context {
                Some(c) => format!("{c}: {source}"),
                None => source.to_string(),
            };
            (message, retryable)
        }
        other => panic!("not a Graph error: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Reads.

#[tokio::test]
async fn a_full_read_pages_through_everything() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));
    let read = source.read(None).await.unwrap();
    let d = &read.directory;
    assert!(d.complete, "{:?}", d.rejected);
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert!(read.watermark.as_deref().unwrap().contains("deltatoken"));
    assert_eq!(
        ids(&d.users),
        set(&["u-alice", "u-bob", "u-carol", "u-erin", "u-frank", "u-grace", "u-henry"])
    );
    assert_eq!(ids(&d.groups), set(&["g-eng", "g-ops", "g-platform"]));

    // Attributes under the names the mappings use, Entra aliases included.
    let alice = &d.users.get("u-alice").unwrap();
    assert_eq!(
        alice.attr("userPrincipalName"),
        Some(json!("alice@contoso.com"))
    );
    assert_eq!(
        alice.attr("telephoneNumber"),
        Some(json!("+44 1865 000000"))
    );
    assert_eq!(alice.attr("mobile"), Some(json!("+44 7700 900000")));
    assert_eq!(alice.attr("manager"), Some(json!("u-bob")));
    assert_eq!(alice.attr("employeeId"), Some(json!("1001")));
    assert!(
        alice.attr("usageLocation").is_none(),
        "not mapped, so not selected"
    );
    assert!(!d.users.get("u-carol").unwrap().enabled());

    // Groups with their direct members, devices and nesting as Graph lists them.
    assert_eq!(
        d.groups.get("g-eng").unwrap().members,
        vec!["g-platform", "u-bob", "u-carol", "u-grace"]
    );
    assert_eq!(
        d.groups.get("g-ops").unwrap().members,
        vec!["u-alice", "u-henry"]
    );
    assert_eq!(
        d.groups.get("g-platform").unwrap().attr("displayName"),
        Some(json!("Platform"))
    );

    // Role names from the service principal; the zero GUID is Default Access.
    assert_eq!(roles_of(d, "u-alice"), vec!["User"]);
    assert_eq!(roles_of(d, "g-ops"), vec!["Admin"]);
    assert_eq!(roles_of(d, "u-erin"), vec!["Default Access"]);
    assert_eq!(d.assignments.len(), 6);

    // Scope as Entra computes it from this.
    let s = evaluate_scope(d, &ScopeSettings::default());
    assert_eq!(*s.users.get("u-alice").unwrap(), Ok(()));
    assert_eq!(
        *s.users.get("u-bob").unwrap(),
        Ok(()),
        "member of an assigned group"
    );
    assert_eq!(*s.users.get("u-grace").unwrap(), Ok(()));
    assert_eq!(
        *s.users.get("u-erin").unwrap(),
        Err(OutOfScope::ExcludedRole("Default Access".into()))
    );
    assert_eq!(
        *s.users.get("u-frank").unwrap(),
        Err(OutOfScope::NotAssigned)
    );
    assert_eq!(*s.users.get("u-carol").unwrap(), Err(OutOfScope::Disabled));
    assert!(
        s.roles.get("u-alice").unwrap().contains("Admin"),
        "via Operations"
    );

    // Paged (2 per page): 7 users, 3 groups in 4 entries (Engineering's 4 members in 2),
    // 6 assignments, and the assigned groups' members read from /members.
    assert_eq!(seen(&h, "GET /v1.0/users/delta").len(), 4);
    assert_eq!(seen(&h, "GET /v1.0/groups/delta").len(), 2);
    assert_eq!(
        seen(
            &h,
            "GET /v1.0/servicePrincipals/99999999-8888-7777-6666-555555555555/appRoleAssignedTo"
        )
        .len(),
        3
    );
    assert_eq!(seen(&h, "GET /v1.0/groups/g-eng/members").len(), 2);
    assert_eq!(seen(&h, "GET /v1.0/groups/g-ops/members").len(), 1);
    assert!(seen(&h, "GET /v1.0/groups/g-platform/members").is_empty());
    let first = &seen(&h, "GET /v1.0/users/delta")[0];
    for p in [
        "$select=",
        "userPrincipalName",
        "businessPhones",
        "manager",
        "employeeId",
    ] {
        assert!(first.contains(p), "{p} in {first}");
    }
    assert_eq!(seen(&h, "POST /").len(), 1, "one token for the whole read");
    assert_eq!(source.request_counts().0, 1);
    // Neither the client secret nor the access token (the emulator's start with "emu.").
    let debug = format!("{source:?}");
    assert!(
        !debug.contains("emulator-client-secret") && !debug.contains("emu."),
        "{debug}"
    );
}

#[tokio::test]
async fn an_incremental_read_applies_only_the_changes() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));
    let first = source.read(None).await.unwrap();
    assert!(first.directory.complete);

    h.update_user("u-alice", json!({"jobTitle": "Principal Engineer"}));
    h.set_manager("u-alice", Some("u-grace"));
    h.delete_user("u-henry", true);
    h.delete_user("u-frank", false);
    h.remove_member("g-eng", "u-grace");
    h.add_member("g-ops", "u-erin");
    h.update_group("g-platform", json!({"displayName": "Platform team"}));
    h.clear_requests();

    let read = source.read(first.watermark.as_deref()).await.unwrap();
    let d = &read.directory;
    assert!(d.complete);
    assert_ne!(read.watermark, first.watermark);
    assert_eq!(
        d.users.get("u-alice").unwrap().attr("jobTitle"),
        Some(json!("Principal Engineer"))
    );
    assert_eq!(
        d.users.get("u-alice").unwrap().attr("manager"),
        Some(json!("u-grace"))
    );
    assert!(!d.users.contains_key("u-henry"), "deleted for good: gone");
    assert!(
        d.users.get("u-frank").unwrap().soft_deleted(),
        "soft-deleted: kept, marked, so Entra's disable applies"
    );
    assert_eq!(
        d.users.get("u-bob").unwrap().attr("department"),
        Some(json!("Ops")),
        "unchanged users stay as they were"
    );
    assert_eq!(d.users.get("u-bob").unwrap().attr("manager"), None);
    assert_eq!(
        d.groups.get("g-eng").unwrap().members,
        vec!["g-platform", "u-bob", "u-carol"]
    );
    assert_eq!(
        d.groups.get("g-ops").unwrap().members,
        vec!["u-alice", "u-erin"]
    );
    assert_eq!(
        d.groups.get("g-platform").unwrap().attr("displayName"),
        Some(json!("Platform team"))
    );
    assert!(
        roles_of(d, "u-henry").is_empty(),
        "assignments go with the user"
    );

    // Only the delta links were followed: no initial query, no member lists.
    let users = seen(&h, "GET /v1.0/users/delta");
    assert!(!users.is_empty());
    assert!(users.iter().all(|r| !r.contains("$select")), "{users:?}");
    assert!(users[0].contains("$deltatoken"), "{users:?}");
    assert!(seen(&h, "GET /v1.0/groups/g-").is_empty());
    assert!(seen(&h, "POST /").is_empty(), "the token is cached");

    // And with nothing changed, nothing changes.
    let again = source.read(read.watermark.as_deref()).await.unwrap();
    assert!(again.directory.complete);
    assert_eq!(ids(&again.directory.users), ids(&d.users));
    assert_eq!(
        again.directory.groups.get("g-eng").unwrap().members,
        d.groups.get("g-eng").unwrap().members
    );
}

#[tokio::test]
async fn an_expired_delta_token_falls_back_to_a_full_read() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));
    let first = source.read(None).await.unwrap();
    h.expire_delta_tokens();
    h.delete_user("u-henry", true);
    h.update_user("u-bob", json!({"jobTitle": "Builder"}));
    h.clear_requests();

    let read = source.read(first.watermark.as_deref()).await.unwrap();
    let d = &read.directory;
    assert!(d.complete);
    assert!(!d.users.contains_key("u-henry"));
    assert_eq!(
        d.users.get("u-bob").unwrap().attr("jobTitle"),
        Some(json!("Builder"))
    );
    assert_eq!(d.users.len(), 6);
    let users = seen(&h, "GET /v1.0/users/delta");
    assert!(users[0].contains("$deltatoken"), "{users:?}");
    assert!(
        users[1].contains("$select="),
        "after 410 Gone, a new initial query: {users:?}"
    );
    assert_eq!(
        seen(&h, "GET /v1.0/groups/g-eng/members").len(),
        2,
        "a full group read lists assigned groups' members again"
    );
}

#[tokio::test]
async fn no_watermark_means_a_full_read() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));
    source.read(None).await.unwrap();
    h.clear_requests();
    let read = source.read(None).await.unwrap();
    assert!(read.directory.complete);
    assert!(seen(&h, "GET /v1.0/users/delta")[0].contains("$select="));
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    h.set_faults(vec![
        FaultRule::new(FaultAction::Status {
            status: 429,
            retry_after: Some("1".into()),
            body: None,
        })
        .path_prefix("/v1.0/users/delta")
        .skip(1)
        .times(1),
        FaultRule::new(FaultAction::Status {
            status: 503,
            retry_after: Some("1".into()),
            body: None,
        })
        .path_prefix("/v1.0/groups/delta")
        .times(1),
    ]);
    let source = GraphSource::new(settings(&h));
    let started = Instant::now();
    let read = source.read(None).await.unwrap();
    assert!(read.directory.complete);
    assert_eq!(read.directory.users.len(), 7);
    assert_eq!(read.directory.groups.len(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was honoured ({:?})",
        started.elapsed()
    );
    assert_eq!(source.request_counts().2, 2, "two retries");
    // The throttled page was asked again, not skipped.
    assert_eq!(seen(&h, "GET /v1.0/users/delta").len(), 5);
}

#[tokio::test]
async fn a_page_that_keeps_failing_makes_the_read_incomplete() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));
    // The second users page fails, retries included.
    h.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 500,
        retry_after: None,
        body: None,
    })
    .path_prefix("/v1.0/users/delta")
    .skip(1)]);
    let read = source.read(None).await.unwrap();
    let d = &read.directory;
    assert!(!d.complete);
    assert_eq!(d.users.len(), 2, "what was read is returned");
    assert_eq!(d.groups.len(), 3, "the other collections are whole");
    assert_eq!(d.assignments.len(), 6);
    assert_eq!(seen(&h, "GET /v1.0/users/delta").len(), 1 + 1 + 3);

    // Once Graph recovers, the next read completes.
    h.set_faults(vec![]);
    let read = source.read(read.watermark.as_deref()).await.unwrap();
    assert!(read.directory.complete);
    assert_eq!(read.directory.users.len(), 7);

    // An incremental read that fails keeps every user it knew: not "these users are gone".
    h.delete_user("u-henry", true);
    h.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 502,
        retry_after: None,
        body: None,
    })
    .path_prefix("/v1.0/users/delta")]);
    let failed = source.read(read.watermark.as_deref()).await.unwrap();
    assert!(!failed.directory.complete);
    assert_eq!(failed.directory.users.len(), 7);
    assert!(failed.directory.users.contains_key("u-henry"));

    // The snapshot did not move: the deletion is seen once Graph answers again.
    h.set_faults(vec![]);
    let read = source.read(failed.watermark.as_deref()).await.unwrap();
    assert!(read.directory.complete);
    assert!(!read.directory.users.contains_key("u-henry"));
}

#[tokio::test]
async fn a_timeout_makes_the_read_incomplete() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let mut s = settings(&h);
    s.request_timeout = Duration::from_millis(300);
    s.max_retries = 1;
    let source = GraphSource::new(s);
    h.set_faults(vec![
        FaultRule::new(FaultAction::Delay { delay_ms: 2000 }).path_prefix("/v1.0/groups/delta")
    ]);
    let read = source.read(None).await.unwrap();
    assert!(!read.directory.complete);
    assert_eq!(read.directory.users.len(), 7);
    assert!(read.directory.groups.is_empty());
}

#[tokio::test]
async fn a_revoked_token_is_renewed_once() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));
    let first = source.read(None).await.unwrap();
    assert_eq!(h.tokens_issued(), 1);
    h.revoke_tokens();
    let read = source.read(first.watermark.as_deref()).await.unwrap();
    assert!(read.directory.complete);
    assert_eq!(
        h.tokens_issued(),
        2,
        "401 → a new token, then the request again"
    );
}

#[tokio::test]
async fn the_token_is_cached_until_shortly_before_it_expires() {
    let h = tenant(GraphEmulatorConfig {
        token_lifetime: Duration::from_secs(2),
        ..GraphEmulatorConfig::default()
    })
    .await;
    let source = GraphSource::new(settings(&h));
    let w = source.read(None).await.unwrap().watermark;
    let w = source.read(w.as_deref()).await.unwrap().watermark;
    assert_eq!(h.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let read = source.read(w.as_deref()).await.unwrap();
    assert!(read.directory.complete);
    assert_eq!(h.tokens_issued(), 2);
}

// ---------------------------------------------------------------------------------------------
// Failures before anything was read, and secrets.

#[tokio::test]
async fn a_bad_client_secret_is_a_precise_error_without_the_secret() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let mut s = settings(&h);
    s.credential = SecretString::from("wrong-s3cret-value").into();
    let source = GraphSource::new(s);
    let e = source.read(None).await.unwrap_err();
    let text = e.to_string();
    assert!(!e.is_retryable());
    let (message, retryable) = service_error(e);
    assert!(!retryable);
    assert!(message.contains("AADSTS7000215"), "{message}");
    assert!(message.contains("invalid_client"), "{message}");
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(message.contains("Trace ID"), "{message}");
    assert!(!text.contains("wrong-s3cret"), "{text}");
    let e = source.test_connection().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("AADSTS7000215") && text.contains("no access token"),
        "{text}"
    );
    assert!(!text.contains("wrong-s3cret"), "{text}");
    assert!(!format!("{source:?}").contains("wrong-s3cret"));
    assert!(!format!("{e:?}").contains("wrong-s3cret"));
    assert!(
        seen(&h, "GET /v1.0").is_empty(),
        "no Graph call without a token"
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate credentials (entra-docs identity-platform/certificate-credentials.md).

/// A certificate credential from the PEM files of `pair`.
fn certificate(pair: &certs::Pair) -> ClientCertificate {
    ClientCertificate::from_pem(&pair.cert_pem(), Some(&pair.key_pem())).unwrap()
}

/// An emulator tenant with `uploaded` as the app registration's certificate.
async fn tenant_with_certificate(uploaded: &ClientCertificate) -> GraphHandle {
    tenant(GraphEmulatorConfig {
        client_certificates: vec![uploaded.certificate_der().to_vec()],
        ..GraphEmulatorConfig::default()
    })
    .await
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_certificate_credential_reads_end_to_end() {
    if !certs::openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(&certs::self_signed(dir.path(), "provisiond-graph"));
    let h = tenant_with_certificate(&cert).await;
    let mut s = settings(&h);
    s.credential = GraphCredential::Certificate(cert.clone());
    let source = GraphSource::new(s);

    let read = source.read(None).await.unwrap();
    assert!(read.directory.complete, "{:?}", read.directory.rejected);
    assert!(read.directory.users.contains_key("u-alice"));
    assert_eq!(h.tokens_issued(), 1);

    // The assertion is the one certificate-credentials.md describes.
    let (header, claims) = h.last_client_assertion().unwrap();
    assert_eq!(text(&header, "alg"), "PS256");
    assert_eq!(text(&header, "typ"), "JWT");
    assert_eq!(text(&header, "x5t#S256"), cert.x5t_s256());
    let c = h.config();
    let token_url = format!("{}/{}/oauth2/v2.0/token", h.authority(), c.tenant_id);
    assert_eq!(text(&claims, "aud"), token_url);
    assert_eq!(text(&claims, "iss"), c.client_id);
    assert_eq!(text(&claims, "sub"), c.client_id);
    assert!(
        uuid::Uuid::parse_str(&text(&claims, "jti")).is_ok(),
        "{claims}"
    );
    let (nbf, iat, exp) = (
        claims["nbf"].as_i64().unwrap(),
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(nbf, iat);
    assert!(exp - nbf > 0 && exp - nbf <= 600, "{claims}");
    assert!(
        (nbf - chrono::Utc::now().timestamp()).abs() < 60,
        "{claims}"
    );

    // Incremental reads reuse the cached token; test-connection names the certificate.
    let again = source.read(read.watermark.as_deref()).await.unwrap();
    assert!(again.directory.complete);
    assert_eq!(h.tokens_issued(), 1);
    let ok = source.test_connection().await.unwrap();
    assert!(ok.contains(cert.sha1_thumbprint()), "{ok}");
}

#[tokio::test]
async fn a_certificate_not_uploaded_is_a_precise_error_without_the_key() {
    if !certs::openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uploaded = certificate(&certs::self_signed(dir.path(), "uploaded"));
    let other_pair = certs::self_signed(dir.path(), "other");
    let other = certificate(&other_pair);
    let h = tenant_with_certificate(&uploaded).await;
    let mut s = settings(&h);
    s.credential = GraphCredential::Certificate(other.clone());
    let settings_debug = format!("{s:?}");
    let source = GraphSource::new(s);
    let e = source.read(None).await.unwrap_err();
    assert!(!e.is_retryable());
    let debug = format!("{e:?}");
    let (message, _) = service_error(e);
    assert!(message.contains("AADSTS700027"), "{message}");
    assert!(message.contains("The key was not found"), "{message}");
    assert!(message.contains("invalid_client"), "{message}");
    // What to do: upload the certificate provisiond signs with, named by its thumbprint.
    assert!(message.contains(other.sha1_thumbprint()), "{message}");
    // Entra quotes the SHA-256 thumbprint it was sent; the hint repeats it.
    assert_eq!(
        message.matches(&other.sha256_thumbprint()).count(),
        2,
        "{message}"
    );
    assert!(
        message.contains("uploaded to the app registration"),
        "{message}"
    );
    let tc = source.test_connection().await.unwrap_err().to_string();
    assert!(tc.contains("AADSTS700027"), "{tc}");
    for line in other_pair.key_lines() {
        for shown in [
            &message,
            &debug,
            &tc,
            &settings_debug,
            &format!("{source:?}"),
        ] {
            assert!(!shown.contains(&line), "key material shown: {shown}");
        }
    }
    assert!(settings_debug.contains("[REDACTED]"), "{settings_debug}");
    assert!(
        seen(&h, "GET /v1.0").is_empty(),
        "no Graph call without a token"
    );
}

/// The emulator's checks of an assertion, with hand-made bad ones.
#[tokio::test]
async fn the_emulator_checks_signature_audience_and_time() {
    if !certs::openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uploaded = certificate(&certs::self_signed(dir.path(), "uploaded"));
    let other = certificate(&certs::self_signed(dir.path(), "other"));
    let h = tenant_with_certificate(&uploaded).await;
    let c = h.config();
    let token_url = format!("{}/{}/oauth2/v2.0/token", h.authority(), c.tenant_id);
    let http = reqwest::Client::new();
    let post = |assertion: String| {
        let form = vec![
            ("client_id", c.client_id.clone()),
            ("scope", format!("{}/.default", h.authority())),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", assertion),
            ("grant_type", "client_credentials".to_string()),
        ];
        let req = http.post(&token_url).form(&form);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    use secrecy::ExposeSecret;
    let sign = |cert: &ClientCertificate, aud: &str, at: std::time::SystemTime| {
        cert.assertion(&c.client_id, aud, at)
            .unwrap()
            .expose_secret()
            .to_string()
    };
    let now = std::time::SystemTime::now();

    let (status, body) = post(sign(&uploaded, &token_url, now)).await;
    assert_eq!(status, 200, "{body}");

    // The uploaded certificate's thumbprint over another key's signature.
    let forged = sign(&other, &token_url, now);
    let header = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": uploaded.x5t_s256()}).to_string(),
    );
    let rest = forged.split_once('.').unwrap().1;
    let (status, body) = post(format!("{header}.{rest}")).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("AADSTS700027") && body.contains("verify the signature failed"),
        "{body}"
    );

    let (status, body) = post(sign(
        &uploaded,
        "https://login.example/t/oauth2/v2.0/token",
        now,
    ))
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AADSTS700023"), "{body}");

    let an_hour_ago = now - Duration::from_secs(3600);
    let (status, body) = post(sign(&uploaded, &token_url, an_hour_ago)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AADSTS700024"), "{body}");

    let (status, body) = post("not.a-jwt".into()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AADSTS50027"), "{body}");
}

#[tokio::test]
async fn other_token_failures_say_what_is_wrong() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let mut s = settings(&h);
    s.tenant_id = "contoso.onmicrosoft.com".into();
    let (m, retryable) = service_error(GraphSource::new(s).read(None).await.unwrap_err());
    assert!(m.contains("AADSTS90002") && m.contains("Tenant"), "{m}");
    assert!(!retryable);

    let mut s = settings(&h);
    s.client_id = "00000000-1111-2222-3333-444444444444".into();
    let (m, _) = service_error(GraphSource::new(s).read(None).await.unwrap_err());
    assert!(m.contains("AADSTS700016"), "{m}");

    // Nothing listens there: unreachable, retryable.
    let port = crate::support::free_port();
    let mut s = settings(&h);
    s.authority = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    s.max_retries = 1;
    let e = GraphSource::new(s).test_connection().await.unwrap_err();
    assert!(e.is_retryable());
    let m = e.to_string();
    assert!(
        m.contains("unreachable") && m.contains(&port.to_string()),
        "{m}"
    );
}

#[tokio::test]
async fn test_connection_checks_token_and_one_graph_call() {
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));
    let ok = source.test_connection().await.unwrap();
    assert!(ok.contains("\"Robin\""), "{ok}");
    assert!(ok.contains("99999999-8888-7777-6666-555555555555"), "{ok}");
    assert_eq!(
        seen(&h, "GET /v1.0"),
        vec!["GET /v1.0/servicePrincipals/99999999-8888-7777-6666-555555555555?$select=id,appDisplayName"]
    );

    // A missing permission names the permissions.
    h.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 403,
        retry_after: None,
        body: None,
    })
    .path_prefix("/v1.0/servicePrincipals")]);
    let m = source.test_connection().await.unwrap_err().to_string();
    for p in [
        "HTTP 403",
        "Authorization_RequestDenied",
        "Application.Read.All",
        "User.Read.All",
        "GroupMember.Read.All",
        "Directory.Read.All",
    ] {
        assert!(m.contains(p), "{p} in {m}");
    }
    let (m, _) = service_error(source.read(None).await.unwrap_err());
    assert!(m.contains("Application.Read.All"), "{m}");

    // A wrong service principal id says which id to use.
    h.set_faults(vec![]);
    let mut s = settings(&h);
    s.service_principal_id = "12345678-0000-0000-0000-000000000000".into();
    let m = GraphSource::new(s)
        .test_connection()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("not found") && m.contains("enterprise application"),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// End to end: cycles from the emulator into the SCIM sandbox.

pub(crate) fn graph_job(g: &GraphHandle) -> provisiond::JobSpec {
    job_with_source(Box::new(GraphSource::new(settings(g))))
}

#[tokio::test]
async fn a_graph_job_provisions_and_follows_changes() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let h = sandbox(vec![]).await;
    let job = graph_job(&g);
    let store = MemoryStore::new();
    let client = client(&h.base_url());

    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.kind, CycleKind::Initial);
    assert!(s.source_complete);
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    // Created alice, bob, grace, henry; skipped carol (disabled), erin (Default Access only),
    // frank (only in the unassigned, nested Platform group).
    assert_eq!(s.users, users(4, 0, 0, 0, 0, 3, 0), "{s:#?}");
    assert_eq!(s.groups, groups(2, 0, 0, 0, 1, 0), "{s:#?}");
    assert_eq!(s.memberships, memberships(4, 0));

    let bob = user(&h, "bob@contoso.com");
    assert_eq!(
        without_meta(&user(&h, "alice@contoso.com")),
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE],
            "userName": "alice@contoso.com",
            "active": true,
            "displayName": "Alice Liddell",
            "title": "Engineer",
            "preferredLanguage": "en-GB",
            "emails": [{"type": "work", "value": "alice@contoso.com"}],
            "name": {"givenName": "Alice", "familyName": "Liddell", "formatted": "Alice Liddell"},
            "addresses": [{"type": "work", "locality": "Oxford", "country": "GB"}],
            "phoneNumbers": [
                {"type": "mobile", "value": "+44 7700 900000"},
                {"type": "work", "value": "+44 1865 000000"},
            ],
            "externalId": "alice",
            ENTERPRISE: {
                "employeeNumber": "1001",
                "department": "R&D",
                "manager": {"value": id(&bob)},
            },
        })
    );
    assert_eq!(bob[ENTERPRISE]["department"], "Ops");
    for absent in ["carol", "erin", "frank"] {
        assert!(
            try_user(&h, &format!("{absent}@contoso.com")).is_none(),
            "{absent}"
        );
    }
    let eng = group(&h, "Engineering");
    assert_eq!(eng["externalId"], "g-eng");
    assert_eq!(
        member_ids(&eng),
        ids_of(&h, &["bob@contoso.com", "grace@contoso.com"])
    );
    assert_eq!(
        member_ids(&group(&h, "Operations")),
        ids_of(&h, &["alice@contoso.com", "henry@contoso.com"])
    );
    assert!(try_group(&h, "Platform").is_none());

    // Changes in the tenant flow through an incremental cycle.
    g.update_user("u-alice", json!({"jobTitle": "Principal Engineer"}));
    g.remove_member("g-eng", "u-grace");
    g.delete_user("u-henry", true);
    g.add_member("g-ops", "u-erin");
    g.clear_requests();
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.kind, CycleKind::Incremental);
    assert!(s.source_complete);
    assert_eq!(s.users.created, 1, "erin, via Operations: {s:#?}");
    assert_eq!(s.users.updated, 1, "alice: {s:#?}");
    assert_eq!(s.users.disabled, 1, "grace: {s:#?}");
    assert_eq!(s.users.deleted, 1, "henry: {s:#?}");
    assert_eq!(s.memberships, memberships(1, 2), "{s:#?}");
    assert_eq!(user(&h, "alice@contoso.com")["title"], "Principal Engineer");
    assert_eq!(user(&h, "grace@contoso.com")["active"], json!(false));
    assert!(try_user(&h, "henry@contoso.com").is_none());
    assert_eq!(
        member_ids(&group(&h, "Engineering")),
        ids_of(&h, &["bob@contoso.com"])
    );
    assert_eq!(
        member_ids(&group(&h, "Operations")),
        ids_of(&h, &["alice@contoso.com", "erin@contoso.com"])
    );
    let delta = seen(&g, "GET /v1.0/users/delta");
    assert_eq!(delta.len(), 1, "one page of changes: {delta:?}");
    assert!(delta[0].contains("$deltatoken"), "{delta:?}");

    assert_converged(&job, &store, &client).await;
}

#[tokio::test]
async fn an_incomplete_graph_read_disables_and_deletes_nothing() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let h = sandbox(vec![]).await;
    let job = graph_job(&g);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;

    g.delete_user("u-henry", true);
    g.remove_member("g-eng", "u-grace");
    g.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 500,
        retry_after: None,
        body: None,
    })
    .path_prefix("/v1.0/users/delta")]);
    let report = run(&job, &store, &client).await;
    let s = &report.summary;
    assert!(!s.source_complete, "{s:#?}");
    assert_ne!(s.status, CycleStatus::Failed, "{s:#?}");
    assert_eq!(s.users.deleted + s.users.disabled, 0, "{s:#?}");
    assert_eq!(s.memberships.removed, 0, "{s:#?}");
    assert_eq!(user(&h, "henry@contoso.com")["active"], json!(true));
    assert_eq!(user(&h, "grace@contoso.com")["active"], json!(true));

    // Graph answers again: the withheld changes happen.
    g.set_faults(vec![]);
    let s = run_ok(&job, &store, &client).await;
    assert!(s.source_complete);
    assert!(try_user(&h, "henry@contoso.com").is_none());
    assert_eq!(user(&h, "grace@contoso.com")["active"], json!(false));

    // A user soft-deleted in Entra is disabled, as Entra does; deleted for good, deleted.
    g.delete_user("u-bob", false);
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.disabled, 1, "{s:#?}");
    assert_eq!(user(&h, "bob@contoso.com")["active"], json!(false));
    g.delete_user("u-alice", false);
    run_ok(&job, &store, &client).await;
    assert_eq!(user(&h, "alice@contoso.com")["active"], json!(false));
    assert_converged(&job, &store, &client).await;

    // Restored from the recycle bin (with its membership): enabled again.
    g.put_user(graph_user(
        "u-bob",
        "Bob",
        "Builder",
        json!({"department": "Ops", "employeeId": "1002"}),
    ));
    g.add_member("g-eng", "u-bob");
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.updated, 1, "{s:#?}");
    assert_eq!(user(&h, "bob@contoso.com")["active"], json!(true));
    assert_converged(&job, &store, &client).await;
}

// ---------------------------------------------------------------------------------------------
// Shapes: a page or a value of another shape is never read as less data.

/// A list page (app role assignments, group members) with an item that is not an object, or
/// without a `value` array, fails that list: the read is incomplete, never a shorter list
/// (which would take the missing assignments as removed).
#[tokio::test]
async fn a_list_page_of_another_shape_makes_the_read_incomplete() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let sp = g.config().service_principal_id.clone();
    let assigned_to = format!("/v1.0/servicePrincipals/{sp}/appRoleAssignedTo");
    let source = GraphSource::new(settings(&g));
    let whole = source.read(None).await.unwrap().directory;
    assert!(whole.complete);
    let assignments = whole.assignments.len();
    for body in [
        json!({"value": [42, {"principalId": "u-alice", "principalType": "User", "appRoleId": ROLE_USER}]}),
        json!({"values": []}),
        json!({}),
    ] {
        g.set_faults(vec![FaultRule::new(FaultAction::Status {
            status: 200,
            retry_after: None,
            body: Some(body.to_string()),
        })
        .path_prefix(&assigned_to)]);
        let d = GraphSource::new(settings(&g))
            .read(None)
            .await
            .unwrap()
            .directory;
        assert!(!d.complete, "{body}: read as complete");
        assert!(d.assignments.len() < assignments || d.assignments.is_empty());
    }
    // A group's members page with a stray item.
    g.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 200,
        retry_after: None,
        body: Some(
            json!({"value": [{"id": "u-bob", "@odata.type": "#microsoft.graph.user"}, "u-grace"]})
                .to_string(),
        ),
    })
    .path_prefix("/v1.0/groups/g-eng/members")]);
    let d = GraphSource::new(settings(&g))
        .read(None)
        .await
        .unwrap()
        .directory;
    assert!(!d.complete, "a members page with a stray item");
    g.set_faults(vec![]);
    // The whole cycle: nothing is deprovisioned on such a read.
    let h = sandbox(vec![]).await;
    let job = graph_job(&g);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    g.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 200,
        retry_after: None,
        body: Some(json!({"value": [null]}).to_string()),
    })
    .path_prefix(&assigned_to)]);
    let s = run(&job, &store, &client).await.summary;
    assert!(!s.source_complete, "{s:#?}");
    assert_eq!(
        s.users.disabled + s.users.deleted + s.groups.deleted,
        0,
        "{s:#?}"
    );
}

/// `accountEnabled` as Graph should never send it: text `"true"`/`"false"` in any case is
/// taken; anything else skips that user with a reason (rejected with her id), every cycle
/// until it is fixed, her account and memberships kept.
#[tokio::test]
async fn an_account_enabled_neither_true_nor_false_skips_the_graph_user() {
    let g = tenant(GraphEmulatorConfig::default()).await;
    let h = sandbox(vec![]).await;
    let job = graph_job(&g);
    let store = MemoryStore::new();
    let client = client(&h.base_url());
    run_ok(&job, &store, &client).await;
    let ops = ids_of(&h, &["alice@contoso.com", "henry@contoso.com"]);
    assert_eq!(member_ids(&group(&h, "Operations")), ops);

    // A full read: "FALSE" is false, "maybe" and 0 are rejected.
    assert!(g.update_user("u-alice", json!({"accountEnabled": "FALSE"})));
    assert!(g.update_user("u-henry", json!({"accountEnabled": "maybe"})));
    assert!(g.update_user("u-grace", json!({"accountEnabled": 0})));
    let d = GraphSource::new(settings(&g))
        .read(None)
        .await
        .unwrap()
        .directory;
    assert!(!d.users.get("u-alice").unwrap().enabled());
    for id in ["u-henry", "u-grace"] {
        assert!(!d.users.contains_key(id), "{id} taken as a user");
        let r = d
            .rejected
            .iter()
            .find(|r| r.id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{id} not rejected: {:?}", d.rejected));
        assert!(r.reason.contains("accountEnabled"), "{}", r.reason);
    }
    assert!(d.complete);

    // Incremental cycles: henry is skipped and reported each time, never disabled, and
    // stays in Operations.
    assert!(g.update_user("u-alice", json!({"accountEnabled": true})));
    assert!(g.update_user("u-grace", json!({"accountEnabled": true})));
    for round in 0..2 {
        let s = run(&job, &store, &client).await.summary;
        assert_eq!(s.kind, CycleKind::Incremental);
        assert_eq!(s.status, CycleStatus::EntryLevelErrors, "{round}: {s:#?}");
        assert!(
            s.problems
                .iter()
                .any(|p| p.code == "InvalidSourceObject" && p.id.as_deref() == Some("u-henry")),
            "{round}: {s:#?}"
        );
        assert_eq!(s.users.disabled + s.users.deleted, 0, "{round}: {s:#?}");
        assert_eq!(user(&h, "henry@contoso.com")["active"], json!(true));
        assert_eq!(member_ids(&group(&h, "Operations")), ops);
    }
    // Fixed: taken again, the rejection gone.
    assert!(g.update_user("u-henry", json!({"accountEnabled": "False"})));
    let s = run(&job, &store, &client).await.summary;
    assert!(s.problems.is_empty(), "{s:#?}");
    assert_eq!(s.users.disabled, 1, "{s:#?}");
    assert_eq!(user(&h, "henry@contoso.com")["active"], json!(false));
}

// ---------------------------------------------------------------------------------------------
// Provision on demand.

#[tokio::test]
async fn on_demand_reads_one_user_or_group_without_a_delta_round() {
    use provisiond::{ObjectType, OneQuery};
    let h = tenant(GraphEmulatorConfig::default()).await;
    let source = GraphSource::new(settings(&h));

    // Grace by mail: assigned through Engineering.
    let q = OneQuery {
        object_type: ObjectType::User,
        key: "GRACE@contoso.com".into(),
        members: vec![],
    };
    let one = source.read_one(&q).await.unwrap().unwrap();
    assert_eq!(one.id, "u-grace");
    let d = &one.directory;
    assert_eq!(ids(&d.users), set(&["u-grace"]));
    assert_eq!(ids(&d.groups), set(&["g-eng"]));
    assert_eq!(d.groups.get("g-eng").unwrap().members, ["u-grace"]);
    assert_eq!(roles_of(d, "g-eng"), ["User"]);
    let scoped = evaluate_scope(d, &ScopeSettings::default());
    assert_eq!(*scoped.users.get("u-grace").unwrap(), Ok(()));

    // Erin by id: only the excluded Default Access role.
    let q = OneQuery {
        object_type: ObjectType::User,
        key: "u-erin".into(),
        members: vec![],
    };
    let one = source.read_one(&q).await.unwrap().unwrap();
    let scoped = evaluate_scope(&one.directory, &ScopeSettings::default());
    assert!(matches!(
        *scoped.users.get("u-erin").unwrap(),
        Err(OutOfScope::ExcludedRole(_))
    ));

    // Operations by name, with one of its members asked and one stranger.
    let q = OneQuery {
        object_type: ObjectType::Group,
        key: "operations".into(),
        members: vec!["henry@contoso.com".into(), "nobody@contoso.com".into()],
    };
    let one = source.read_one(&q).await.unwrap().unwrap();
    assert_eq!(one.id, "g-ops");
    assert_eq!(one.member_ids, ["u-henry"]);
    assert_eq!(one.missing_members, ["nobody@contoso.com"]);
    assert_eq!(
        one.directory.groups.get("g-ops").unwrap().members,
        ["u-henry"]
    );
    assert_eq!(roles_of(&one.directory, "g-ops"), ["Admin"]);

    let missing = OneQuery {
        object_type: ObjectType::User,
        key: "nobody@contoso.com".into(),
        members: vec![],
    };
    assert!(source.read_one(&missing).await.unwrap().is_none());
    // Object by object: never the whole tenant.
    assert!(
        seen(&h, "GET /v1.0/users/delta").is_empty(),
        "{:?}",
        h.requests()
    );
    assert!(seen(&h, "GET /v1.0/groups/delta").is_empty());
    assert!(seen(&h, "GET /v1.0/servicePrincipals/")
        .iter()
        .all(|r| !r.contains("appRoleAssignedTo")));
}
