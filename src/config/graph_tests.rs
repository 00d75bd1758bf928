//! Configuration of `kind = "graph"` sources.

use super::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
        std::fs::write(dir.path().join("graph-secret"), "gr4ph-s3cret\n").unwrap();
        Fixture { dir }
    }
    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        let env: HashMap<&str, &str> = [("GRAPH_SECRET", "from-env-secret")].into_iter().collect();
        Config::parse(text, &self.dir.path().join("provisiond.toml"), &|k| {
            env.get(k).map(|s| s.to_string())
        })
    }
}

const GOOD: &str = r#"
[[jobs]]
name = "robin"
[jobs.source]
kind = "graph"
tenant_id = "contoso.onmicrosoft.com"
client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
client_secret_file = "graph-secret"
service_principal_id = "99999999-8888-7777-6666-555555555555"
[jobs.target]
url = "https://api.robinpowered.com/v1.0/scim-2"
token_file = "token"
"#;

fn graph(c: &Config) -> &GraphSettings {
    match &c.jobs[0].source {
        SourceConfig::Graph(g) => g,
        other => panic!("not a graph source: {other:?}"),
    }
}

#[test]
fn a_graph_source_with_defaults() {
    let f = Fixture::new();
    let c = f.parse(GOOD).unwrap();
    let g = graph(&c);
    assert_eq!(g.tenant_id, "contoso.onmicrosoft.com");
    assert_eq!(g.client_secret.expose_secret(), "gr4ph-s3cret");
    assert_eq!(g.authority.as_str(), "https://login.microsoftonline.com/");
    assert_eq!(g.graph_url.as_str(), "https://graph.microsoft.com/v1.0");
    // The default mappings' attributes are selected under their Graph names.
    for p in [
        "userPrincipalName",
        "businessPhones",
        "manager",
        "employeeId",
    ] {
        assert!(
            g.select.users.iter().any(|s| s == p),
            "{p}: {:?}",
            g.select.users
        );
    }
    assert!(g.select.groups.iter().any(|s| s == "members"));
    let text = format!("{c:?}");
    assert!(!text.contains("gr4ph"), "Debug must not show the secret");
    assert!(c.jobs[0]
        .spec()
        .source
        .describe()
        .contains("graph.microsoft.com"));
}

#[test]
fn sovereign_cloud_env_secret_and_extras() {
    let f = Fixture::new();
    let c = f
        .parse(
            &GOOD
                .replace(
                    "client_secret_file = \"graph-secret\"",
                    "client_secret_env = \"GRAPH_SECRET\"\nauthority = \"https://login.microsoftonline.us\"\ngraph_url = \"https://graph.microsoft.us/v1.0\"\nuser_attributes = [\"extension_0a1b2c_costCenter\"]\nread_timeout = \"10m\"\nmax_retries = 2",
                )
                .replace(
                    "[jobs.target]",
                    "[[jobs.mappings.users]]\ntarget = \"title\"\nsource = \"extension_0a1b2c_costCenter\"\n[jobs.target]",
                ),
        )
        .unwrap();
    let g = graph(&c);
    assert_eq!(g.client_secret.expose_secret(), "from-env-secret");
    assert_eq!(g.graph_url.host_str(), Some("graph.microsoft.us"));
    assert_eq!(g.read_timeout, Duration::from_secs(600));
    assert_eq!(g.max_retries, 2);
    assert!(g
        .select
        .users
        .contains(&"extension_0a1b2c_costCenter".to_string()));
}

#[test]
fn graph_errors_name_the_key() {
    let f = Fixture::new();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            GOOD.replace("client_secret_file = \"graph-secret\"\n", ""),
            "jobs[0].source.client_secret_file",
            "no client secret",
        ),
        (
            GOOD.replace("\"graph-secret\"", "\"missing\""),
            "jobs[0].source.client_secret_file",
            "cannot read",
        ),
        (
            GOOD.replace(
                "client_secret_file = \"graph-secret\"",
                "client_secret_env = \"NOPE\"",
            ),
            "jobs[0].source.client_secret_env",
            "NOPE is not set",
        ),
        (
            GOOD.replace("kind = \"graph\"", "kind = \"graph\"\ngraph_url = \"http://graph.example.com/v1.0\""),
            "jobs[0].source.graph_url",
            "loopback",
        ),
        (
            GOOD.replace("kind = \"graph\"", "kind = \"graph\"\ngraph_url = \"https://graph.microsoft.com\""),
            "jobs[0].source.graph_url",
            "API version",
        ),
        (
            GOOD.replace("service_principal_id = \"99999999-8888-7777-6666-555555555555\"", "service_principal_id = \"\""),
            "jobs[0].source.service_principal_id",
            "not a valid id",
        ),
        (
            GOOD.replace("kind = \"graph\"", "kind = \"graph\"\nbogus = 1"),
            "line 4, column 1",
            "unknown field `bogus`",
        ),
        (
            GOOD.replace(
                "[jobs.target]",
                "[[jobs.mappings.users]]\ntarget = \"title\"\nsource = \"costCentre\"\n[jobs.target]",
            ),
            "jobs[0].mappings.users",
            "user_attributes",
        ),
    ];
    for (text, key, message) in cases {
        let e = f.parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(message), "{e}");
        assert!(!e.to_string().contains("gr4ph"), "{e}");
    }
}
