//! Behaviour of the SCIM client against local mock servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use url::Url;

use super::connection::ConnectionProblem;
use super::scim::filter::eq_filter;
use super::scim::PATCH_OP_SCHEMA;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::model::ObjectType;

const TOKEN: &str = "s3cr3t-T0KEN-value";
const BASE_PATH: &str = "/v1.0/scim-2";

fn settings(base: &str) -> TargetSettings {
    let mut s = TargetSettings::new(Url::parse(base).unwrap(), SecretString::from(TOKEN));
    s.connect_timeout = Duration::from_secs(1);
    s.request_timeout = Duration::from_secs(2);
    s.max_retries = 3;
    s.backoff_base = Duration::from_millis(2);
    s.backoff_max = Duration::from_millis(10);
    s.max_retry_after = Duration::from_secs(5);
    s
}

fn client(server: &MockServer) -> ScimClient {
    ScimClient::new(settings(&format!("{}{BASE_PATH}", server.uri()))).unwrap()
}

fn scim(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/scim+json")
}

fn list(resources: Value) -> Value {
    let n = resources.as_array().map_or(0, Vec::len);
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
           "totalResults": n, "Resources": resources})
}

fn scim_error(status: &str, scim_type: &str, detail: &str) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
           "status": status, "scimType": scim_type, "detail": detail})
}

fn users() -> String {
    format!("{BASE_PATH}/Users")
}

#[test]
fn eq_filter_escapes_strings_and_leaves_scalars_unquoted() {
    assert_eq!(
        eq_filter("userName", &json!("a@b.c")),
        r#"userName eq "a@b.c""#
    );
    assert_eq!(
        eq_filter("userName", &json!("q\"b\\s\nü")),
        r#"userName eq "q\"b\\s\nü""#
    );
    assert_eq!(eq_filter("active", &json!(true)), "active eq true");
    assert_eq!(eq_filter("x", &json!(42)), "x eq 42");
    assert_eq!(eq_filter("x", &Value::Null), "x eq null");
}

#[test]
fn patch_styles_render_ops_and_booleans() {
    let ops = [
        PatchOp::replace("active", json!(false)),
        PatchOp::add("emails", json!([{"value": "a@b.c", "primary": true}])),
        PatchOp::remove(r#"members[value eq "u1"]"#),
    ];
    assert_eq!(
        scim::patch::render_patch(&ops, PatchStyle::Rfc7644),
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [
            {"op": "replace", "path": "active", "value": false},
            {"op": "add", "path": "emails", "value": [{"value": "a@b.c", "primary": true}]},
            {"op": "remove", "path": "members[value eq \"u1\"]"}]})
    );
    assert_eq!(
        scim::patch::render_patch(&ops, PatchStyle::EntraLegacy),
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Add", "path": "emails", "value": [{"value": "a@b.c", "primary": "True"}]},
            {"op": "Remove", "path": "members[value eq \"u1\"]"}]})
    );
    let style: PatchStyle = serde_json::from_value(json!("entra-legacy")).unwrap();
    assert_eq!(style, PatchStyle::EntraLegacy);
    let style: PatchStyle = serde_json::from_value(json!("rfc7644")).unwrap();
    assert_eq!(style, PatchStyle::Rfc7644);
}

#[test]
fn request_counts_serialise_with_method_names() {
    let counts = RequestCounts {
        get: 1,
        post: 2,
        put: 0,
        patch: 3,
        delete: 4,
    };
    assert_eq!(
        serde_json::to_value(counts).unwrap(),
        json!({"GET": 1, "POST": 2, "PUT": 0, "PATCH": 3, "DELETE": 4})
    );
}

#[test]
fn bad_base_urls_are_rejected() {
    for bad in [
        "ftp://h/scim",
        "https://user:pw@h/scim",
        "https://h/scim?x=1",
    ] {
        let err = ScimClient::new(settings(bad)).unwrap_err();
        assert!(matches!(err, TargetError::Settings { .. }), "{bad}: {err}");
    }
    let mut s = settings("https://h/scim");
    s.concurrency = 0;
    assert!(ScimClient::new(s).is_err());
}

#[tokio::test]
async fn find_sends_escaped_filter_and_headers() {
    let server = MockServer::start().await;
    let value = "o'\"q\\x\tü@contoso.com";
    let expected = "userName eq \"o'\\\"q\\\\x\\tü@contoso.com\"";
    Mock::given(method("GET"))
        .and(path(users()))
        .and(query_param("filter", expected))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(scim(200, list(json!([{"id": "u1", "userName": value}]))))
        .expect(1)
        .mount(&server)
        .await;
    let found = client(&server)
        .find(ObjectType::User, "userName", &json!(value))
        .await
        .unwrap();
    assert_eq!(found, vec![json!({"id": "u1", "userName": value})]);

    let received = server.received_requests().await.unwrap();
    let accept = received[0].headers.get("accept").unwrap().to_str().unwrap();
    assert_eq!(accept, "application/scim+json, application/json");
    assert!(received[0].headers.get("content-type").is_none());
    let url = &received[0].url;
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs, vec![("filter".to_owned(), expected.to_owned())]);
    // Non-ASCII goes over the wire percent-encoded as UTF-8, spaces and quotes too.
    let raw = url.query().unwrap();
    assert!(raw.contains("%C3%BC"), "{raw}");
    assert!(!raw.contains('"') && !raw.contains(' '), "{raw}");
}

#[tokio::test]
async fn find_groups_excludes_members_and_tolerates_missing_resources() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{BASE_PATH}/Groups")))
        .and(query_param("excludedAttributes", "members"))
        .and(query_param("filter", "displayName eq \"Engineering\""))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let found = client(&server)
        .find(ObjectType::Group, "displayName", &json!("Engineering"))
        .await
        .unwrap();
    assert!(found.is_empty());
}

#[tokio::test]
async fn find_accepts_lowercase_resources_and_trailing_slash_base() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(users()))
        .respond_with(scim(
            200,
            json!({"totalResults": 2, "resources": [{"id": "a"}, {"id": "b"}]}),
        ))
        .mount(&server)
        .await;
    let c = ScimClient::new(settings(&format!("{}{BASE_PATH}/", server.uri()))).unwrap();
    let found = c
        .find(ObjectType::User, "userName", &json!("x"))
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
}

#[tokio::test]
async fn create_returns_resource_with_id_from_body() {
    let server = MockServer::start().await;
    let body =
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice"});
    Mock::given(method("POST"))
        .and(path(users()))
        .and(header("content-type", "application/scim+json"))
        .and(body_json(&body))
        .respond_with(
            scim(201, json!({"id": "body-id", "userName": "alice"}))
                .insert_header("Location", "https://elsewhere/Users/location-id"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let created = c.create(ObjectType::User, body).await.unwrap();
    assert_eq!(created["id"], "body-id");
    assert_eq!(c.request_counts().post, 1);
}

/// The export's `create_id` parses only the id, yet answers every body as `create` does: the
/// same id, or an error with the same code and text (strings it skips are decoded all the
/// same: invalid UTF-8 and lone surrogates are errors to both).
#[tokio::test]
async fn create_id_answers_every_body_as_create_does() {
    let bodies: [&[u8]; 18] = [
        b"{\"id\": \"u1\", \"userName\": \"\xff\"}",
        br#"{"userName": "alice", "\u0069d": "u3"}"#,
        br#"{"\ud800": 1, "id": "u1"}"#,
        b"{\"id\": \"u1\", \"emails\": [\"\xc3\"]}",
        b"{\"id\": \"u1\", \"\xe2\x82\": 1}",
        br#"{"id": "u1", "userName": "alice", "emails": [{"value": "a@x"}], "meta": {}}"#,
        br#"{"id": "u1", "userName": "\ud800"}"#,
        br#"{"id": "u1", "meta": {"version": "W/\"\udfff\""}}"#,
        br#"  {"userName": "alice", "id": "u2"}"#,
        br#"{"userName": "alice"}"#,
        br#"{"id": ""}"#,
        br#"{"id": 7}"#,
        br#"{"id": null}"#,
        br#"{"id": "a/b"}"#,
        br#"{"id": "first", "id": "second"}"#,
        br#"["u1"]"#,
        br#"{"id": "u1", "userName": "#,
        b"",
    ];
    for raw in bodies {
        let body = String::from_utf8_lossy(raw);
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201).set_body_raw(raw, "application/scim+json"))
            .mount(&server)
            .await;
        let c = client(&server);
        let full = c.create(ObjectType::User, json!({})).await;
        let light = c.create_id(ObjectType::User, json!({})).await;
        match (full, light) {
            (Ok(full), Ok(id)) => assert_eq!(full["id"], json!(id), "{body}"),
            (Err(a), Err(b)) => {
                assert_eq!(a.code(), b.code(), "{body}");
                assert_eq!(a.to_string(), b.to_string(), "{body}");
            }
            (full, light) => panic!("{body}: create {full:?}, create_id {light:?}"),
        }
    }
}

#[tokio::test]
async fn create_without_id_is_service_incompatible() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(scim(201, json!({"userName": "alice"})).insert_header("Location", "/Users/x"))
        .mount(&server)
        .await;
    let err = client(&server)
        .create(ObjectType::User, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ServiceIncompatible", "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn non_json_and_truncated_bodies_are_service_incompatible() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{BASE_PATH}/Users/html")))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>login</html>", "text/html"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_raw(r#"{"id":"u1","userName":"#, "application/json"),
        )
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c.get(ObjectType::User, "html").await.unwrap_err();
    assert_eq!(err.code(), "ServiceIncompatible", "{err}");
    assert!(err.to_string().contains("<html>login</html>"), "{err}");
    let err = c.create(ObjectType::User, json!({})).await.unwrap_err();
    assert_eq!(err.code(), "ServiceIncompatible", "{err}");
}

#[tokio::test]
async fn conflict_is_entry_conflict_with_scim_detail() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(scim(
            409,
            scim_error("409", "uniqueness", "userName alice is taken"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .create(ObjectType::User, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "EntryConflict");
    assert!(err.is_conflict() && !err.is_retryable() && !err.is_ambiguous());
    let text = err.to_string();
    assert!(text.contains("POST /v1.0/scim-2/Users"), "{text}");
    assert!(
        text.contains("409") && text.contains("uniqueness"),
        "{text}"
    );
    assert!(text.contains("userName alice is taken"), "{text}");
}

#[tokio::test]
async fn patch_accepts_200_with_and_without_body_and_204() {
    let server = MockServer::start().await;
    let ops = [PatchOp::replace("active", json!(false))];
    let expected = json!({"schemas": [PATCH_OP_SCHEMA],
        "Operations": [{"op": "replace", "path": "active", "value": false}]});
    for (id, response) in [
        ("a", scim(200, json!({"id": "a", "active": false}))),
        ("b", ResponseTemplate::new(200)),
        ("c", ResponseTemplate::new(204)),
    ] {
        Mock::given(method("PATCH"))
            .and(path(format!("{BASE_PATH}/Users/{id}")))
            .and(header("content-type", "application/scim+json"))
            .and(body_json(&expected))
            .respond_with(response)
            .expect(1)
            .mount(&server)
            .await;
    }
    let c = client(&server);
    for id in ["a", "b", "c"] {
        c.patch(ObjectType::User, id, &ops).await.unwrap();
    }
    assert_eq!(c.request_counts().patch, 3);
}

#[tokio::test]
async fn patch_legacy_style_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path(format!("{BASE_PATH}/Users/u1")))
        .and(body_json(json!({"schemas": [PATCH_OP_SCHEMA],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}]})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut s = settings(&format!("{}{BASE_PATH}", server.uri()));
    s.patch_style = PatchStyle::EntraLegacy;
    let c = ScimClient::new(s).unwrap();
    c.patch(
        ObjectType::User,
        "u1",
        &[PatchOp::replace("active", json!(false))],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn not_found_is_invalid_anchor_and_delete_succeeds_on_204() {
    let server = MockServer::start().await;
    Mock::given(path(format!("{BASE_PATH}/Users/gone")))
        .respond_with(scim(404, scim_error("404", "", "not found")))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{BASE_PATH}/Groups/g%2F1")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c.get(ObjectType::User, "gone").await.unwrap_err();
    assert_eq!(err.code(), "InvalidAnchor");
    assert!(err.is_not_found());
    let err = c.patch(ObjectType::User, "gone", &[]).await.unwrap_err();
    assert_eq!(err.code(), "InvalidAnchor");
    let err = c.delete(ObjectType::User, "gone").await.unwrap_err();
    assert_eq!(err.code(), "InvalidAnchor");
    // An id with a slash stays one path segment.
    c.delete(ObjectType::Group, "g/1").await.unwrap();
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after_seconds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            scim(429, scim_error("429", "", "slow down")).insert_header("Retry-After", "1"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(scim(200, list(json!([]))))
        .mount(&server)
        .await;
    let c = client(&server);
    let started = Instant::now();
    c.find(ObjectType::User, "userName", &json!("a"))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(c.request_counts().get, 2);
}

#[tokio::test]
async fn service_unavailable_honours_retry_after_http_date_even_for_post() {
    let server = MockServer::start().await;
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", at.as_str()))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(scim(201, json!({"id": "u1"})))
        .mount(&server)
        .await;
    let mut s = settings(&format!("{}{BASE_PATH}", server.uri()));
    // Without the date being honoured the retry would come at once.
    s.backoff_max = Duration::from_millis(1);
    let c = ScimClient::new(s).unwrap();
    let started = Instant::now();
    c.create(ObjectType::User, json!({})).await.unwrap();
    let elapsed = started.elapsed();
    // The date has one-second resolution: the wait is between 1 and 2 s.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(c.request_counts().post, 2);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(scim(200, json!({"id": "u1"})))
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(c.get(ObjectType::User, "u1").await.unwrap()["id"], "u1");
    assert_eq!(c.request_counts().get, 3);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_max_retries() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(scim(502, scim_error("502", "", "upstream down")))
        .expect(4)
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c.get(ObjectType::User, "u1").await.unwrap_err();
    assert_eq!(err.code(), "InternalServerError");
    assert!(err.is_retryable() && !err.is_ambiguous());
    assert!(err.to_string().contains("upstream down"), "{err}");
    assert_eq!(c.request_counts().get, 4);
}

#[tokio::test]
async fn post_answered_500_is_ambiguous_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .create(ObjectType::User, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InternalServerError");
    assert!(err.is_ambiguous());
}

#[tokio::test]
async fn post_timeout_is_ambiguous_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(scim(201, json!({"id": "u1"})).set_delay(Duration::from_secs(2)))
        .expect(1)
        .mount(&server)
        .await;
    let mut s = settings(&format!("{}{BASE_PATH}", server.uri()));
    s.request_timeout = Duration::from_millis(200);
    let c = ScimClient::new(s).unwrap();
    let err = c.create(ObjectType::User, json!({})).await.unwrap_err();
    assert_eq!(err.code(), "Timeout");
    assert!(err.is_ambiguous() && err.is_retryable(), "{err}");
    assert_eq!(c.request_counts().post, 1);
}

#[tokio::test]
async fn get_timeouts_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(scim(200, json!({"id": "u1"})).set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(scim(200, json!({"id": "u1"})))
        .mount(&server)
        .await;
    let mut s = settings(&format!("{}{BASE_PATH}", server.uri()));
    s.request_timeout = Duration::from_millis(200);
    let c = ScimClient::new(s).unwrap();
    c.get(ObjectType::User, "u1").await.unwrap();
    assert_eq!(c.request_counts().get, 2);
}

/// A server that reads each request and hangs up without answering.
async fn hang_up_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    (format!("http://{addr}{BASE_PATH}"), accepted)
}

#[tokio::test]
async fn dropped_connections_retry_get_but_not_post() {
    let (base, accepted) = hang_up_server().await;
    let c = ScimClient::new(settings(&base)).unwrap();
    let err = c.get(ObjectType::User, "u1").await.unwrap_err();
    assert_eq!(err.code(), "ConnectionFailed", "{err}");
    assert!(!err.is_ambiguous());
    assert_eq!(c.request_counts().get, 4);

    let before = accepted.load(Ordering::SeqCst);
    let err = c.create(ObjectType::User, json!({})).await.unwrap_err();
    assert_eq!(err.code(), "ConnectionFailed", "{err}");
    assert!(err.is_ambiguous());
    // Broken after it was sent: maybe done, so the export matches before creating again; the
    // target was reached, so this alone never opens the circuit breaker's fast path.
    assert!(!err.never_reached());
    assert!(!err.is_fatal_for_cycle());
    assert_eq!(c.request_counts().post, 1);
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn connection_refused_post_is_retried_and_not_ambiguous() {
    let base = format!("http://{}{BASE_PATH}", free_addr().await);
    let c = ScimClient::new(settings(&base)).unwrap();
    let err = c.create(ObjectType::User, json!({})).await.unwrap_err();
    assert_eq!(err.code(), "ConnectionFailed", "{err}");
    assert!(!err.is_ambiguous());
    assert!(err.never_reached());
    assert_eq!(c.request_counts().post, 4);
}

#[tokio::test]
async fn concurrency_is_bounded_across_clones() {
    use axum::{extract::State, routing::get, Json, Router};

    #[derive(Default)]
    struct Load {
        now: AtomicUsize,
        max: AtomicUsize,
    }
    async fn slow(State(load): State<Arc<Load>>) -> Json<Value> {
        let now = load.now.fetch_add(1, Ordering::SeqCst) + 1;
        load.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        load.now.fetch_sub(1, Ordering::SeqCst);
        Json(json!({"totalResults": 0, "Resources": []}))
    }

    let load = Arc::new(Load::default());
    let app = Router::new()
        .route(&users(), get(slow))
        .with_state(load.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut s = settings(&format!("http://{addr}{BASE_PATH}"));
    s.concurrency = 3;
    let c = ScimClient::new(s).unwrap();
    let calls = (0..20).map(|i| {
        let c = c.clone();
        async move {
            c.find(ObjectType::User, "userName", &json!(format!("u{i}")))
                .await
        }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(load.max.load(Ordering::SeqCst), 3);
    assert_eq!(c.request_counts().get, 20);
}

async fn free_addr() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn test_connection_diagnoses_problems() {
    let ok = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(users()))
        .respond_with(scim(200, json!({"totalResults": 0, "Resources": []})))
        .mount(&ok)
        .await;
    let report = client(&ok).test_connection().await;
    assert!(report.ok && report.problem.is_none(), "{report}");
    let filter = ok.received_requests().await.unwrap()[0]
        .url
        .query_pairs()
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert!(
        filter.starts_with("userName eq \"") && filter.len() == 13 + 36 + 1,
        "{filter}"
    );

    for (response, problem) in [
        (
            scim(401, scim_error("401", "", "bad token")),
            ConnectionProblem::Token,
        ),
        (ResponseTemplate::new(403), ConnectionProblem::Token),
        (
            ResponseTemplate::new(200).set_body_raw("<html>sign in</html>", "text/html"),
            ConnectionProblem::ScimCompliance,
        ),
        (
            scim(200, list(json!([{"id": "x"}]))),
            ConnectionProblem::ScimCompliance,
        ),
        (
            scim(200, json!({"id": "x"})),
            ConnectionProblem::ScimCompliance,
        ),
        (
            ResponseTemplate::new(404),
            ConnectionProblem::ScimCompliance,
        ),
        (ResponseTemplate::new(503), ConnectionProblem::Server),
        (
            ResponseTemplate::new(302).insert_header("Location", "https://login.example/"),
            ConnectionProblem::Url,
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(response)
            .mount(&server)
            .await;
        let report = client(&server).test_connection().await;
        assert!(!report.ok);
        assert_eq!(report.problem, Some(problem), "{report}");
        assert!(!report.to_string().contains(TOKEN));
    }

    let base = format!("http://{}{BASE_PATH}", free_addr().await);
    let report = ScimClient::new(settings(&base))
        .unwrap()
        .test_connection()
        .await;
    assert_eq!(report.problem, Some(ConnectionProblem::Connect), "{report}");
    assert!(report.to_string().contains("check"), "{report}");

    let mut s = settings(&format!("{}{BASE_PATH}", ok.uri()));
    s.request_timeout = Duration::from_millis(100);
    let slow = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(1)))
        .mount(&slow)
        .await;
    s.base_url = Url::parse(&slow.uri()).unwrap();
    let report = ScimClient::new(s).unwrap().test_connection().await;
    assert_eq!(report.problem, Some(ConnectionProblem::Timeout), "{report}");
}

#[tokio::test]
async fn token_never_appears_in_debug_or_errors() {
    let server = MockServer::start().await;
    // A server that echoes the Authorization header back in its error detail.
    Mock::given(method("GET"))
        .respond_with(scim(
            401,
            scim_error("401", "invalidToken", &format!("bad token Bearer {TOKEN}")),
        ))
        .mount(&server)
        .await;
    let s = settings(&format!("{}{BASE_PATH}", server.uri()));
    let c = ScimClient::new(s.clone()).unwrap();
    let err = c.get(ObjectType::User, "u1").await.unwrap_err();
    assert_eq!(err.code(), "Unauthorized");
    let report = c.test_connection().await;
    for text in [
        format!("{s:?}"),
        format!("{c:?}"),
        format!("{err:?}"),
        err.to_string(),
        format!("{report:?}"),
        report.to_string(),
    ] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
}

/// A 2xx body that is not JSON and echoes the token (plainly, URL-encoded, or cut at the
/// snippet limit) never carries it into an error.
#[tokio::test]
async fn token_echoed_in_a_non_json_success_body_is_scrubbed() {
    let server = MockServer::start().await;
    // Put the token across the snippet limit, so a scrub after the cut would leak its start.
    let padding = "x".repeat(200 - 6 - 8 - 5);
    let encoded: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string(format!(
            "<html>{padding} Bearer {TOKEN} and {encoded}</html>"
        )))
        .mount(&server)
        .await;
    let c = ScimClient::new(settings(&format!("{}{BASE_PATH}", server.uri()))).unwrap();
    let err = c
        .create(ObjectType::User, serde_json::json!({"userName": "a"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ServiceIncompatible");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    assert!(!text.contains(&encoded), "token leaked: {text}");
    assert!(!text.contains(&TOKEN[..8]), "a cut token leaked: {text}");
}

/// An error body echoing the token in an encoding the in-place scrub does not rewrite
/// (lowercase hex, double-encoded) is redacted whole, as a header echoing it is.
#[tokio::test]
async fn token_echoed_in_any_encoding_in_an_error_body_is_scrubbed() {
    let lower: String = TOKEN.bytes().map(|b| format!("%{b:02x}")).collect();
    let double: String = TOKEN.bytes().map(|b| format!("%25{b:02X}")).collect();
    for echo in [lower, double] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(scim(
                400,
                scim_error("400", "invalidValue", &format!("t={echo}")),
            ))
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(500).set_body_string(format!("<p>t={echo}</p>")))
            .mount(&server)
            .await;
        let mut s = settings(&format!("{}{BASE_PATH}", server.uri()));
        s.max_retries = 0;
        let c = ScimClient::new(s).unwrap();
        let get = c.get(ObjectType::User, "u1").await.unwrap_err();
        let delete = c.delete(ObjectType::User, "u1").await.unwrap_err();
        for text in [get.to_string(), format!("{get:?}"), delete.to_string()] {
            assert!(text.contains("REDACTED"), "{text}");
            assert!(!text.contains(&echo), "token leaked: {text}");
        }
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(301).insert_header("Location", "https://elsewhere/"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .create(ObjectType::User, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ServiceIncompatible", "{err}");
    assert!(err.to_string().contains("https://elsewhere/"), "{err}");
}

#[tokio::test]
async fn delete_404_after_a_timed_out_attempt_counts_as_deleted() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(scim(404, scim_error("404", "", "no such user")))
        .mount(&server)
        .await;
    let mut s = settings(&format!("{}{BASE_PATH}", server.uri()));
    s.request_timeout = Duration::from_millis(200);
    let c = ScimClient::new(s).unwrap();
    c.delete(ObjectType::User, "u1").await.unwrap();
    assert_eq!(c.request_counts().delete, 2);
}

#[tokio::test]
async fn http_1_0_server_without_keep_alive() {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            // No Content-Length: the body ends when the server closes the connection.
            let _ = socket
                .write_all(
                    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\":\"u1\"}",
                )
                .await;
            let _ = socket.shutdown().await;
        }
    });
    let c = ScimClient::new(settings(&format!("http://{addr}{BASE_PATH}"))).unwrap();
    for _ in 0..3 {
        assert_eq!(c.get(ObjectType::User, "u1").await.unwrap()["id"], "u1");
    }
    assert_eq!(c.request_counts().get, 3);
}

// ---------------------------------------------------------------------------------------
// Hostile targets
// ---------------------------------------------------------------------------------------

/// A server answering every request with `head` then, forever, 64 KiB chunks of spaces
/// (chunked encoding), until the client hangs up. Counts the bytes it managed to send.
async fn endless_server(head: &'static str) -> (String, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {
                    counter.fetch_add(0x10000, Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}{BASE_PATH}"), sent)
}

#[tokio::test]
async fn an_endless_body_is_cut_at_max_response_bytes() {
    let (base, sent) = endless_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    let mut s = settings(&base);
    s.max_response_bytes = 1 << 20;
    s.request_timeout = Duration::from_secs(30);
    let c = ScimClient::new(s).unwrap();
    let started = Instant::now();
    let err = c
        .find(ObjectType::User, "userName", &json!("a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ResponseTooLarge", "{err}");
    assert!(!err.is_retryable() && !err.is_fatal_for_cycle(), "{err}");
    assert!(err.to_string().contains("1048576"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Not retried: one request, and reading stopped near the cap.
    assert_eq!(c.request_counts().get, 1);
    let err = c.create(ObjectType::User, json!({})).await.unwrap_err();
    assert_eq!(err.code(), "ResponseTooLarge", "{err}");
    // The POST was processed (its answer was too long): match again before creating again.
    assert!(err.is_ambiguous());
    assert!(sent.load(Ordering::SeqCst) < 64 << 20);
}

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_before_reading() {
    let (base, _) = endless_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .await;
    let mut s = settings(&base);
    s.max_response_bytes = 4096;
    let c = ScimClient::new(s).unwrap();
    let err = c.get(ObjectType::User, "u1").await.unwrap_err();
    assert_eq!(err.code(), "ResponseTooLarge", "{err}");
    let report = c.test_connection().await;
    assert_eq!(
        report.problem,
        Some(ConnectionProblem::ScimCompliance),
        "{report}"
    );
}

#[test]
fn max_response_bytes_defaults_to_8_mib() {
    let s = TargetSettings::new(
        Url::parse("https://h/scim").unwrap(),
        SecretString::from("t"),
    );
    assert_eq!(s.max_response_bytes, 8 * 1024 * 1024);
}

/// Ids that cannot stay one path segment, or that a target has no business returning.
const UNUSABLE_IDS: [&str; 8] = ["", ".", "..", ".\t.", "\t", "a\nb", "a\rb", "a\0b"];

#[tokio::test]
async fn the_url_builder_refuses_dot_and_control_ids_and_escapes_the_rest() {
    let server = MockServer::start().await;
    let c = client(&server);
    for id in UNUSABLE_IDS {
        let err = c.url(&reqwest::Method::DELETE, &["Users", id]).unwrap_err();
        assert_eq!(err.code(), "InvalidTargetId", "{id:?}: {err}");
        // The error names the collection, not the refused id.
        let named = format!("DELETE {BASE_PATH}/Users: refused target id");
        assert!(err.to_string().starts_with(&named), "{err}");
        for err in [
            c.get(ObjectType::User, id).await.unwrap_err(),
            c.patch(
                ObjectType::User,
                id,
                &[PatchOp::replace("active", json!(false))],
            )
            .await
            .unwrap_err(),
            c.delete(ObjectType::Group, id).await.unwrap_err(),
        ] {
            assert_eq!(err.code(), "InvalidTargetId", "{id:?}: {err}");
            assert!(!err.is_retryable() && !err.is_fatal_for_cycle(), "{err}");
            // The message shows the id escaped, never a raw control character.
            assert!(!err.to_string().chars().any(char::is_control), "{err:?}");
        }
    }
    assert!(server.received_requests().await.unwrap().is_empty());

    for (id, segment) in [
        ("a/b", "a%2Fb"),
        ("a%2Fb", "a%252Fb"),
        ("%2e%2e", "%252e%252e"),
        ("a?b#c", "a%3Fb%23c"),
        ("...", "..."),
        ("a..", "a.."),
        ("x y\"ü", "x%20y%22%C3%BC"),
        (
            "2819c223-7f76-453a-919d-413861904646",
            "2819c223-7f76-453a-919d-413861904646",
        ),
    ] {
        let url = c.url(&reqwest::Method::PATCH, &["Users", id]).unwrap();
        assert_eq!(url.path(), format!("{BASE_PATH}/Users/{segment}"), "{id:?}");
        assert_eq!(url.query(), None, "{id:?}");
        assert_eq!(url.fragment(), None, "{id:?}");
    }
}

#[tokio::test]
async fn ids_a_target_returns_are_checked_before_they_are_used() {
    for id in UNUSABLE_IDS.into_iter().chain(["a/b", "../Users"]) {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(scim(201, json!({"id": id, "userName": "a"})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(scim(200, list(json!([{"id": id, "userName": "a"}]))))
            .mount(&server)
            .await;
        let c = client(&server);
        let err = c
            .create(ObjectType::User, json!({"userName": "a"}))
            .await
            .unwrap_err();
        // An empty id was already refused as incompatible; every other one is an invalid id.
        let expected = if id.is_empty() {
            "ServiceIncompatible"
        } else {
            "InvalidTargetId"
        };
        assert_eq!(err.code(), expected, "{id:?}: {err}");
        assert!(!err.is_ambiguous(), "{err}");
        let err = c
            .find(ObjectType::User, "userName", &json!("a"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), expected, "{id:?}: {err}");
    }
}

/// A SCIM Error body with `urn` as its schema and no status.
fn error_without_status(urn: &str) -> Value {
    json!({"schemas": [urn], "detail": "?"})
}

/// `PATCH` user `u1` inactive.
async fn deactivate(c: &ScimClient) -> Result<(), TargetError> {
    c.patch(
        ObjectType::User,
        "u1",
        &[PatchOp::replace("active", json!(false))],
    )
    .await
}

#[tokio::test]
async fn a_2xx_carrying_a_scim_error_is_that_error() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(scim(200, scim_error("404", "", "no such user")))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(scim(200, json!({"status": 500, "detail": "db down"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(scim(201, scim_error("409", "uniqueness", "exists")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(scim(
            200,
            error_without_status("urn:ietf:params:scim:api:messages:2.0:Error"),
        ))
        .mount(&server)
        .await;
    let c = client(&server);
    let err = deactivate(&c).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.code(), "InvalidAnchor");
    assert!(err.to_string().contains("HTTP 200"), "{err}");

    let err = c.delete(ObjectType::User, "u1").await.unwrap_err();
    assert_eq!(err.code(), "InternalServerError", "{err}");
    assert!(err.is_retryable());
    // Retried like any 500 on an idempotent request.
    assert_eq!(c.request_counts().delete, 4);

    let err = c.create(ObjectType::User, json!({})).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");

    // An Error without a usable status is not a success either.
    let err = c.get(ObjectType::User, "u1").await.unwrap_err();
    assert_eq!(err.code(), "ServiceIncompatible", "{err}");

    // Nor is one whose schema URN is in capitals (URNs compare case-insensitively), on a
    // PATCH, whose answer is otherwise not read at all.
    let caps = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(scim(
            200,
            error_without_status("URN:IETF:PARAMS:SCIM:API:MESSAGES:2.0:ERROR"),
        ))
        .mount(&caps)
        .await;
    let err = deactivate(&client(&caps)).await.unwrap_err();
    assert_eq!(err.code(), "ServiceIncompatible", "{err}");

    // A resource with an attribute called status is not an error.
    let ok = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(scim(200, json!({"id": "u1", "status": "404"})))
        .mount(&ok)
        .await;
    assert_eq!(
        client(&ok).get(ObjectType::User, "u1").await.unwrap()["id"],
        "u1"
    );
}

#[tokio::test]
async fn total_results_above_the_resources_returned_is_never_no_match() {
    for body in [
        r#"{"totalResults": 1e18, "Resources": []}"#,
        r#"{"totalResults": 1000000000000000000, "Resources": []}"#,
        r#"{"totalResults": "3", "Resources": [{"id": "u1"}]}"#,
        r#"{"totalResults": 2, "Resources": [{"id": "u1"}]}"#,
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/scim+json"))
            .mount(&server)
            .await;
        let c = client(&server);
        let err = c
            .find(ObjectType::User, "userName", &json!("a"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "InvalidResponse", "{body}: {err}");
        assert!(!err.is_fatal_for_cycle(), "{err}");
        let report = c.test_connection().await;
        assert_eq!(report.problem, Some(ConnectionProblem::ScimCompliance));
    }
}

#[tokio::test]
async fn a_redirect_echoing_the_token_never_carries_it_into_errors_or_reports() {
    let encoded: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
    // Lowercase hex, as some servers write it.
    let lower: String = TOKEN.bytes().map(|b| format!("%{b:02x}")).collect();
    for location in [
        format!("https://evil.example/?auth=Bearer {TOKEN}"),
        format!("https://evil.example/?auth=Bearer+{encoded}"),
        format!("https://evil.example/?t={lower}"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(302)
                    .insert_header("Location", location.as_str())
                    .insert_header("X-Echo", format!("Bearer {TOKEN}").as_str()),
            )
            .mount(&server)
            .await;
        Mock::given(method("PATCH"))
            .respond_with(ResponseTemplate::new(307).insert_header("Location", location.as_str()))
            .mount(&server)
            .await;
        let c = client(&server);
        let find = c
            .find(ObjectType::User, "userName", &json!("a"))
            .await
            .unwrap_err();
        let patch = c
            .patch(
                ObjectType::User,
                "u1",
                &[PatchOp::replace("active", json!(false))],
            )
            .await
            .unwrap_err();
        let report = c.test_connection().await;
        assert_eq!(report.problem, Some(ConnectionProblem::Url), "{report}");
        for text in [
            find.to_string(),
            format!("{find:?}"),
            patch.to_string(),
            report.to_string(),
            format!("{report:?}"),
        ] {
            assert!(text.contains("302") || text.contains("307"), "{text}");
            assert!(!text.contains(TOKEN), "token leaked: {text}");
            assert!(!text.contains(&encoded), "token leaked: {text}");
            assert!(!text.contains(&lower), "token leaked: {text}");
            assert!(!text.contains(&TOKEN[..8]), "token leaked: {text}");
        }
        // Never followed: nothing but our own requests reached anything.
        assert_eq!(c.request_counts().get, 2);
    }
}
