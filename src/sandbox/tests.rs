use super::*;
use reqwest::StatusCode;
use serde_json::json;

const PATCH_OP: &str = crate::target::scim::PATCH_OP_SCHEMA;

async fn start(config: SandboxConfig) -> (SandboxHandle, reqwest::Client) {
    let h = spawn("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    (h, reqwest::Client::new())
}

async fn post_user(c: &reqwest::Client, h: &SandboxHandle, name: &str) -> Value {
    let r = c
        .post(format!("{}/Users", h.base_url()))
        .json(&json!({"schemas": [crate::target::scim::USER_SCHEMA], "userName": name, "active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn list(c: &reqwest::Client, h: &SandboxHandle, path: &str, query: &[(&str, &str)]) -> Value {
    let r = c
        .get(format!("{}{path}", h.base_url()))
        .query(query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn user_crud_and_conflict() {
    let (h, c) = start(SandboxConfig::default()).await;
    let u = post_user(&c, &h, "alice@contoso.com").await;
    let id = u["id"].as_str().unwrap().to_string();
    assert_eq!(u["meta"]["resourceType"], "User");
    assert_eq!(
        u["meta"]["location"],
        format!("{}/Users/{id}", h.base_url())
    );

    let dup = c
        .post(format!("{}/Users", h.base_url()))
        .json(&json!({"userName": "ALICE@contoso.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    let body: Value = dup.json().await.unwrap();
    assert_eq!(body["scimType"], "uniqueness");
    assert_eq!(body["status"], "409");

    let got: Value = c
        .get(format!("{}/Users/{id}", h.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["userName"], "alice@contoso.com");

    let put = c
        .put(format!("{}/Users/{id}", h.base_url()))
        .json(&json!({"userName": "alice2@contoso.com", "active": "False"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["active"], json!(false));
    assert_eq!(put["meta"]["created"], u["meta"]["created"]);

    let del = c
        .delete(format!("{}/Users/{id}", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let missing = c
        .get(format!("{}/Users/{id}", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["schemas"], json!([crate::target::scim::ERROR_SCHEMA]));
    assert!(h.users().is_empty());
    let counts = h.request_counts();
    assert_eq!(
        (
            counts.post,
            counts.get,
            counts.put,
            counts.delete,
            counts.total
        ),
        (2, 2, 1, 1, 6)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn filters_with_escapes_and_pagination() {
    let (h, c) = start(SandboxConfig {
        max_page_size: 3,
        ..SandboxConfig::default()
    })
    .await;
    let tricky = "o\"brien\\x@ex.com";
    post_user(&c, &h, tricky).await;
    post_user(&c, &h, "zoë@ex.com").await;
    for i in 0..5 {
        post_user(&c, &h, &format!("user{i}@ex.com")).await;
    }
    let filter =
        crate::target::scim::filter::eq_filter("userName", &serde_json::Value::from(tricky));
    let l = list(&c, &h, "/Users", &[("filter", &filter)]).await;
    assert_eq!(l["totalResults"], 1);
    assert_eq!(l["Resources"][0]["userName"], tricky);
    let l = list(
        &c,
        &h,
        "/Users",
        &[("filter", "userName eq \"ZOË@EX.COM\"")],
    )
    .await;
    assert_eq!(l["totalResults"], 1);
    // Entra's Test Connection: a random value, 200 and an empty list.
    let l = list(&c, &h, "/Users", &[("filter", "userName eq \"6f1c0000\"")]).await;
    assert_eq!(l["totalResults"], 0);
    assert_eq!(l["Resources"], json!([]));
    let l = list(&c, &h, "/Users", &[("filter", "userName sw \"user\"")]).await;
    assert_eq!(l["totalResults"], 5);
    assert_eq!(l["itemsPerPage"], 3);

    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let s = start.to_string();
        let l = list(&c, &h, "/Users", &[("startIndex", &s), ("count", "2")]).await;
        assert_eq!(l["totalResults"], 7);
        let page = l["Resources"].as_array().unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|r| r["id"].clone()));
        start += page.len();
    }
    seen.dedup();
    assert_eq!(seen.len(), 7);

    let bad = c
        .get(format!("{}/Users", h.base_url()))
        .query(&[("filter", "userName eq")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["scimType"], "invalidFilter");
}

#[tokio::test]
async fn patch_forms_and_groups() {
    let (h, c) = start(SandboxConfig::default()).await;
    let a = post_user(&c, &h, "a@x").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = post_user(&c, &h, "b@x").await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Entra legacy: capitalised ops, string boolean.
    let r = c
        .patch(format!("{}/Users/{a}", h.base_url()))
        .json(&json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@work"},
            {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": b},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let user = h
        .users()
        .into_iter()
        .find(|u| u["id"] == a.as_str())
        .unwrap();
    assert_eq!(user["active"], json!(false));
    assert_eq!(user["emails"], json!([{"type": "work", "value": "a@work"}]));
    assert_eq!(
        user[crate::target::scim::ENTERPRISE_USER_SCHEMA]["manager"],
        json!({"value": b})
    );

    let g = c
        .post(format!("{}/Groups", h.base_url()))
        .json(&json!({"displayName": "Eng", "externalId": "g1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(g.status(), StatusCode::CREATED);
    let gid = g.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = |body: Value| {
        c.patch(format!("{}/Groups/{gid}", h.base_url()))
            .json(&body)
            .send()
    };
    let r = patch(json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": a}, {"value": b}]}]}))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = patch(json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "Add", "path": "members", "value": [{"value": a}]}]}))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.groups()[0]["members"].as_array().unwrap().len(), 2);
    let r = patch(json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{a}\"]")}]}))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.groups()[0]["members"], json!([{"value": b}]));
    let r = patch(json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "Remove", "path": "members", "value": [{"value": b}]}]}))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(h.groups()[0].get("members").is_none());
    // A member that does not exist is refused.
    let r = patch(json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": "nope"}]}]}))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = patch(json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": "members[", "value": [{"value": a}]}]}))
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["scimType"], "invalidPath");

    // Matching groups the way Entra does, and excludedAttributes.
    patch(json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": a}]}]}))
    .await
    .unwrap();
    let l = list(
        &c,
        &h,
        "/Groups",
        &[
            ("excludedAttributes", "members"),
            ("filter", "displayName eq \"eng\""),
        ],
    )
    .await;
    assert_eq!(l["totalResults"], 1);
    assert!(l["Resources"][0].get("members").is_none());
    let l = list(&c, &h, "/Groups", &[("attributes", "displayName")]).await;
    assert_eq!(l["Resources"][0]["displayName"], "Eng");
    assert!(l["Resources"][0].get("externalId").is_none());
    assert!(l["Resources"][0].get("id").is_some());

    // Deleting a user drops it from groups.
    c.delete(format!("{}/Users/{a}", h.base_url()))
        .send()
        .await
        .unwrap();
    assert!(h.groups()[0]["members"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn patch_returns_resource_when_configured() {
    let (h, c) = start(SandboxConfig {
        patch_returns_resource: true,
        ..SandboxConfig::default()
    })
    .await;
    let id = post_user(&c, &h, "p@x").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .patch(format!("{}/Users/{id}", h.base_url()))
        .json(&json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "replace", "value": {"displayName": "P", "active": false}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["displayName"], "P");
    assert_eq!(body["active"], false);
    let r = c
        .patch(format!("{}/Users/missing", h.base_url()))
        .json(&json!({"Operations": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bearer_token_and_admin() {
    let (h, c) = start(SandboxConfig {
        token: Some(SecretString::from("s3cret")),
        ..SandboxConfig::default()
    })
    .await;
    let url = format!("{}/Users", h.base_url());
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let admin = |p: &str| format!("{}/_sandbox/{p}", h.base_url());
    assert_eq!(
        c.get(admin("stats")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    h.insert_user(json!({"userName": "seed"}));
    let stats: RequestCounts = c
        .get(admin("stats"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.get, 3);
    assert_eq!(stats.total, 3);
    let dump: Value = c
        .get(admin("dump"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dump["users"][0]["userName"], "seed");
    let r = c
        .put(admin("faults"))
        .bearer_auth("s3cret")
        .json(
            &json!([{"method": "GET", "path_prefix": "/Users", "times": 1,
                       "action": {"status": 503, "retry_after": 2}}]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "2");
    let r = c
        .post(admin("reset"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(h.users().is_empty());
    assert_eq!(h.request_counts(), RequestCounts::default());
    for p in ["ServiceProviderConfig", "ResourceTypes", "Schemas"] {
        let r = c
            .get(format!("{}/{p}", h.base_url()))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{p}");
    }
}

#[tokio::test]
async fn status_faults_skip_and_times() {
    let (h, c) = start(SandboxConfig {
        faults: vec![FaultRule::new(FaultAction::Status {
            status: 429,
            retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".to_string()),
            body: None,
        })
        .method("post")
        .path_prefix("/Users")
        .skip(1)
        .times(2)],
        ..SandboxConfig::default()
    })
    .await;
    post_user(&c, &h, "first").await;
    for _ in 0..2 {
        let r = c
            .post(format!("{}/Users", h.base_url()))
            .json(&json!({"userName": "second"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "Wed, 21 Oct 2015 07:28:00 GMT");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "429");
    }
    post_user(&c, &h, "second").await;
    assert_eq!(h.users().len(), 2);

    h.set_faults(vec![FaultRule::new(FaultAction::Status {
        status: 500,
        retry_after: None,
        body: Some("<html>oops</html>".to_string()),
    })]);
    let r = c
        .get(format!("{}/Users", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.text().await.unwrap(), "<html>oops</html>");
}

#[tokio::test]
async fn delay_fault() {
    let (h, c) = start(SandboxConfig::default()).await;
    h.set_faults(vec![FaultRule::new(FaultAction::Delay { delay_ms: 300 })]);
    let t = std::time::Instant::now();
    let r = c
        .get(format!("{}/Users", h.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn drop_faults() {
    let (h, c) = start(SandboxConfig::default()).await;
    h.set_faults(vec![FaultRule::new(FaultAction::Drop {
        drop: DropWhen::Before,
    })
    .method("POST")
    .times(1)]);
    let r = c
        .post(format!("{}/Users", h.base_url()))
        .json(&json!({"userName": "lost"}))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    assert!(h.users().is_empty());

    h.set_faults(vec![FaultRule::new(FaultAction::Drop {
        drop: DropWhen::After,
    })
    .method("POST")
    .times(1)]);
    let r = c
        .post(format!("{}/Users", h.base_url()))
        .json(&json!({"userName": "lost"}))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    // The lost response: the user was created nonetheless.
    assert_eq!(h.users().len(), 1);
    // The connection pool recovers and a retry sees the conflict.
    let r = c
        .post(format!("{}/Users", h.base_url()))
        .json(&json!({"userName": "lost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn truncate_fault() {
    let (h, c) = start(SandboxConfig::default()).await;
    h.set_faults(
        serde_json::from_value(json!([{"method": "POST", "action": {"truncate": true}}])).unwrap(),
    );
    let r = c
        .post(format!("{}/Users", h.base_url()))
        .json(&json!({"userName": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(h.users().len(), 1);
}

#[tokio::test]
async fn fault_rules_deserialize() {
    let rules: Vec<FaultRule> = serde_json::from_value(json!([
        {"action": {"status": 429, "retry_after": "2"}},
        {"action": {"delay_ms": 10}},
        {"action": {"drop": "before"}},
        {"action": {"drop": "after"}},
        {"action": {"truncate": true}},
    ]))
    .unwrap();
    assert_eq!(
        rules[2].action,
        FaultAction::Drop {
            drop: DropWhen::Before
        }
    );
    assert!(serde_json::from_value::<FaultRule>(json!({"method": "GET"})).is_err());
}

#[tokio::test]
async fn serve_until_and_drop_stop_the_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_until(addr, SandboxConfig::default(), async {
        let _ = rx.await;
    }));
    let c = reqwest::Client::new();
    let mut ok = false;
    for _ in 0..50 {
        if c.get(format!("http://{addr}/Users")).send().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok);
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();

    let (h, c) = start(SandboxConfig::default()).await;
    let url = format!("{}/Users", h.base_url());
    drop(h);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(c.get(&url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustains_concurrent_load() {
    let (h, c) = start(SandboxConfig::default()).await;
    for i in 0..2000 {
        h.insert_user(json!({"userName": format!("u{i}@ex.com")}));
    }
    let t = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = c.clone();
        let base = h.base_url();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let f = format!("userName eq \"u{}@ex.com\"", (w * 250 + i) % 2000);
                let r = c
                    .get(format!("{base}/Users"))
                    .query(&[("filter", f.as_str())])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let l: Value = r.json().await.unwrap();
                assert_eq!(l["totalResults"], 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t.elapsed();
    // 2000 requests; generous bound for a debug build on a shared 2-core machine.
    assert!(elapsed < std::time::Duration::from_secs(20), "{elapsed:?}");
}
