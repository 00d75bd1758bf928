//! Issue-3 features end to end, from a configuration file through a cycle against the sandbox:
//! presets, job overrides, scoping filters with Entra's operators, expressions,
//! SelectUniqueValue, and a mapping change forcing a full re-evaluation.

use crate::support::common::*;
use provisiond::Config;
use provisiond::CycleKind;
use provisiond::MemoryStore;
use serde_json::{json, Value};

/// A job from config text (with `{URL}` replaced by the sandbox URL), reading `dir`.
fn job_from(
    config: &str,
    dir: &DirFile,
    url: &str,
) -> (provisiond::JobSpec, provisiond::ScimClient) {
    let folder = dir.path.parent().unwrap();
    std::fs::write(folder.join("token"), TOKEN).unwrap();
    let text = config
        .replace("{URL}", url)
        .replace("{DIR}", &dir.path.display().to_string());
    let c = Config::parse(&text, &folder.join("provisiond.toml"), &|_| None).unwrap();
    let j = &c.jobs[0];
    let mut s = settings(url, TOKEN);
    s.patch_style = j.target.patch_style;
    (j.spec(), client_with(s))
}

fn people() -> Value {
    json!({
        "users": [
            {"id": "u1", "userPrincipalName": "ann@contoso.com", "mail": "ann@contoso.com", "givenName": "Ann", "surname": "Lee",
             "displayName": "Ann Lee", "department": "Sales", "employeeId": "1500", "jobTitle": "Rep", "mailNickname": "ann",
             "userAccountControl": 512, "isContractor": false},
            {"id": "u2", "userPrincipalName": "bo@fabrikam.com", "mail": "bo@fabrikam.com", "givenName": "Bo", "surname": "Li",
             "displayName": "Bo Li", "department": "Sales", "employeeId": "1600", "mailNickname": "bo",
             "userAccountControl": 512},
            {"id": "u3", "userPrincipalName": "cy@contoso.com", "mail": "cy@contoso.com", "givenName": "Cy", "surname": "Ng",
             "displayName": "Cy Ng", "department": "R&D", "employeeId": "900", "mailNickname": "cy",
             "userAccountControl": 514},
            {"id": "u4", "userPrincipalName": "di@contoso.com", "mail": "di@contoso.com", "givenName": "Di", "surname": "Ox",
             "displayName": "Di Ox", "department": "Sales", "employeeId": "2000", "mailNickname": "di",
             "userAccountControl": 512, "isContractor": true}
        ],
        "groups": [{"id": "g1", "displayName": "Sales", "members": ["u1", "u2", "u3", "u4"]}],
        "assignments": [{"principalId": "g1"}]
    })
}

const ROBIN: &str = r#"
state_dir = "state"
[[jobs]]
name = "robin"
preset = "robin"
[jobs.source]
kind = "file"
path = "{DIR}"
[jobs.target]
url = "{URL}"
token_file = "token"
[[jobs.mappings.users]]
target = "title"
expression = 'IIF(IsPresent([jobTitle]), ToUpper([jobTitle]), "STAFF")'
[[jobs.scoping.users]]
title = "Contoso sales staff"
clauses = [
  {attribute = "userPrincipalName", operator = "REGEX MATCH", value = '.*\@contoso\.com$'},
  {attribute = "department", operator = "EQUALS", value = "Sales"},
  {attribute = "employeeId", operator = "Greater_Than_OR_EQUALS", value = 1000},
  {attribute = "userAccountControl", operator = "!&", value = 2},
  {attribute = "isContractor", operator = "IS NOT NULL"},
  {attribute = "isContractor", operator = "IS FALSE"},
]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn robin_preset_with_scoping_filters_and_expressions() {
    let h = sandbox(vec![]).await;
    let dir = DirFile::new(&people());
    let (job, client) = job_from(ROBIN, &dir, &h.base_url());
    let store = MemoryStore::new();
    let s = run_ok(&job, &store, &client).await;
    // Only Ann passes every clause: Bo is @fabrikam, Cy is R&D (and disabled by UAC bit 2),
    // Di is a contractor.
    assert_eq!(s.users.created, 1, "{s:#?}");
    assert_eq!(s.users.skipped, 3);
    let ann = user(&h, "ann@contoso.com");
    assert_eq!(ann["title"], json!("REP"));
    assert_eq!(ann["name"]["familyName"], json!("Lee"));
    assert_eq!(ann["emails"][0]["value"], json!("ann@contoso.com"));
    assert!(
        ann.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
            .is_none(),
        "the Robin preset sends no department or enterprise attributes: {ann}"
    );
    assert_eq!(
        member_ids(&group(&h, "Sales")),
        ids_of(&h, &["ann@contoso.com"])
    );
    assert_converged(&job, &store, &client).await;

    // Ann becomes a contractor: she fails the filter and is disabled, and leaves the group.
    dir.write(&edit(people(), |d| {
        user_mut(d, "u1")["isContractor"] = json!(true);
    }));
    let s = run_ok(&job, &store, &client).await;
    assert_eq!(s.users.disabled, 1, "{s:#?}");
    assert_eq!(user(&h, "ann@contoso.com")["active"], json!(false));
    assert!(member_ids(&group(&h, "Sales")).is_empty());
    assert_converged(&job, &store, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mapping_change_forces_an_initial_cycle_that_sends_only_real_changes() {
    let h = sandbox(vec![]).await;
    let dir = DirFile::new(&people());
    let config = r#"
state_dir = "state"
[[jobs]]
name = "j"
[jobs.source]
kind = "file"
path = "{DIR}"
[jobs.target]
url = "{URL}"
token_file = "token"
"#;
    let (job, client) = job_from(config, &dir, &h.base_url());
    let store = MemoryStore::new();
    run_ok(&job, &store, &client).await;
    assert_eq!(
        run_ok(&job, &store, &client).await.kind,
        CycleKind::Incremental
    );

    // Same mappings written differently for one attribute, one really different.
    let changed = format!(
        "{config}\n[[jobs.mappings.users]]\ntarget = \"title\"\nexpression = 'Coalesce([jobTitle], \"Staff\")'\n"
    );
    let (job2, _) = job_from(&changed, &dir, &h.base_url());
    let s = run_ok(&job2, &store, &client).await;
    assert_eq!(
        s.kind,
        CycleKind::Initial,
        "a mapping change re-evaluates everything"
    );
    // Ann keeps "Rep"; the three users without a title get "Staff": three PATCHes, no more.
    assert_eq!(s.requests.patch, 3, "{s:#?}");
    assert_eq!(s.requests.post, 0);
    assert_eq!(user(&h, "bo@fabrikam.com")["title"], json!("Staff"));
    assert_converged(&job2, &store, &client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn select_unique_value_skips_values_taken_in_the_target() {
    let h = sandbox(vec![]).await;
    h.insert_user(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "someone-else",
        "nickName": "ann"}));
    let dir = DirFile::new(&json!({
        "users": [{"id": "u1", "userPrincipalName": "ann@contoso.com", "mailNickname": "ann", "givenName": "Ann"}],
        "groups": [],
        "assignments": [{"principalId": "u1"}]
    }));
    let config = r#"
state_dir = "state"
[[jobs]]
name = "j"
[jobs.source]
kind = "file"
path = "{DIR}"
[jobs.target]
url = "{URL}"
token_file = "token"
[[jobs.mappings.users]]
target = "nickName"
expression = 'SelectUniqueValue([mailNickname], Join("", [mailNickname], "1"), Join("", [mailNickname], "2"))'
"#;
    let (job, client) = job_from(config, &dir, &h.base_url());
    let store = MemoryStore::new();
    run_ok(&job, &store, &client).await;
    assert_eq!(user(&h, "ann@contoso.com")["nickName"], json!("ann1"));
    assert_converged(&job, &store, &client).await;
}

/// Each of Entra's 14 scoping operators through a whole cycle: which of the four users the
/// sandbox ends up with.
#[tokio::test(flavor = "multi_thread")]
async fn every_scoping_operator_through_a_cycle() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("userAccountControl", "&", "2", &["cy"]),
        ("userAccountControl", "!&", "2", &["ann", "bo", "di"]),
        (
            "userPrincipalName",
            "ENDS_WITH",
            r#""@fabrikam.com""#,
            &["bo"],
        ),
        ("department", "EQUALS", r#""Sales""#, &["ann", "bo", "di"]),
        ("department", "NOT EQUALS", r#""Sales""#, &["cy"]),
        ("employeeId", "Greater_Than", "1500", &["bo", "di"]),
        (
            "employeeId",
            "Greater_Than_OR_EQUALS",
            "1500",
            &["ann", "bo", "di"],
        ),
        ("displayName", "Includes", r#""Li""#, &["bo"]),
        ("isContractor", "IS TRUE", "", &["di"]),
        ("isContractor", "IS FALSE", "", &["ann"]),
        ("jobTitle", "IS NULL", "", &["bo", "cy", "di"]),
        ("jobTitle", "IS NOT NULL", "", &["ann"]),
        (
            "userPrincipalName",
            "REGEX MATCH",
            r#"'^[ab].*\@'"#,
            &["ann", "bo"],
        ),
        (
            "userPrincipalName",
            "NOT REGEX MATCH",
            r#"'^[ab].*\@'"#,
            &["cy", "di"],
        ),
    ];
    for (attribute, operator, value, expected) in cases {
        let h = sandbox(vec![]).await;
        let dir = DirFile::new(&people());
        let value = if value.is_empty() {
            String::new()
        } else {
            format!(", value = {value}")
        };
        let config = format!(
            "state_dir = \"state\"\n[[jobs]]\nname = \"j\"\n[jobs.source]\nkind = \"file\"\npath = \"{{DIR}}\"\n\
             [jobs.target]\nurl = \"{{URL}}\"\ntoken_file = \"token\"\n[[jobs.scoping.users]]\n\
             clauses = [{{attribute = \"{attribute}\", operator = \"{operator}\"{value}}}]\n"
        );
        let (job, client) = job_from(&config, &dir, &h.base_url());
        let store = MemoryStore::new();
        run_ok(&job, &store, &client).await;
        let mut got: Vec<String> = h
            .users()
            .iter()
            .filter_map(|u| u["userName"].as_str())
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        got.sort();
        assert_eq!(got, *expected, "{attribute} {operator}{value}");
    }
}
