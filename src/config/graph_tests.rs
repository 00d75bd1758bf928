//! Configuration of `kind = "graph"` sources.

use super::job::SourceConfig;
use super::*;
use crate::source::graph::{GraphCredential, GraphSettings};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::time::Duration;

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

fn secret(g: &GraphSettings) -> &str {
    match &g.credential {
        GraphCredential::Secret(s) => s.expose_secret(),
        other => panic!("not a client secret: {other:?}"),
    }
}

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
    assert_eq!(secret(g), "gr4ph-s3cret");
    assert_eq!(g.authority.as_str(), "https://login.microsoftonline.com/");
    assert_eq!(g.graph_url.as_str(), "https://graph.microsoft.com/v1.0");
    assert_eq!(g.full_read_interval, Duration::from_secs(7 * 86_400));
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
                    "client_secret_env = \"GRAPH_SECRET\"\nauthority = \"https://login.microsoftonline.us\"\ngraph_url = \"https://graph.microsoft.us/v1.0\"\nuser_attributes = [\"extension_0a1b2c_costCenter\"]\nread_timeout = \"10m\"\nfull_read_interval = \"2d\"\nmax_retries = 2",
                )
                .replace(
                    "[jobs.target]",
                    "[[jobs.mappings.users]]\ntarget = \"title\"\nsource = \"extension_0a1b2c_costCenter\"\n[jobs.target]",
                ),
        )
        .unwrap();
    let g = graph(&c);
    assert_eq!(secret(g), "from-env-secret");
    assert_eq!(g.graph_url.host_str(), Some("graph.microsoft.us"));
    assert_eq!(g.read_timeout, Duration::from_secs(600));
    assert_eq!(g.full_read_interval, Duration::from_secs(2 * 86_400));
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
            "no credential",
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

// ---------------------------------------------------------------------------------------------
// Certificate credentials.

/// `openssl req -x509 -newkey rsa:2048 -nodes` into `{name}.crt` / `{name}.key` of the
/// fixture's directory; `None` (skipped) without openssl, which CI must have.
fn self_signed(f: &Fixture, name: &str) -> Option<String> {
    let ok = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have openssl: see .ci/run"
        );
        eprintln!("skipped: the certificate credential tests need the openssl command");
        return None;
    }
    let out = std::process::Command::new("openssl")
        .current_dir(f.dir.path())
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A line of the key's body: it must never be shown.
    let key = std::fs::read_to_string(f.dir.path().join(format!("{name}.key"))).unwrap();
    Some(key.lines().nth(5).unwrap().to_string())
}

fn with_certificate(keys: &str) -> String {
    GOOD.replace("client_secret_file = \"graph-secret\"", keys)
}

#[test]
fn a_certificate_credential() {
    let f = Fixture::new();
    let Some(key_line) = self_signed(&f, "app") else {
        return;
    };
    let c = f
        .parse(&with_certificate(
            "client_certificate_file = \"app.crt\"\nclient_key_file = \"app.key\"",
        ))
        .unwrap();
    let GraphCredential::Certificate(cert) = &graph(&c).credential else {
        panic!("not a certificate credential");
    };
    assert!(cert.subject().contains("app"), "{}", cert.subject());
    assert_eq!(cert.sha1_thumbprint().len(), 40);
    let debug = format!("{c:?}");
    assert!(debug.contains(cert.sha1_thumbprint()), "{debug}");
    assert!(
        !debug.contains(&key_line),
        "Debug must not show the key: {debug}"
    );

    // One PEM file holding certificate and key.
    let both = [
        std::fs::read(f.dir.path().join("app.crt")).unwrap(),
        std::fs::read(f.dir.path().join("app.key")).unwrap(),
    ]
    .concat();
    std::fs::write(f.dir.path().join("both.pem"), &both).unwrap();
    let c2 = f
        .parse(&with_certificate("client_certificate_file = \"both.pem\""))
        .unwrap();
    assert_eq!(graph(&c2).credential, graph(&c).credential);

    // The key from the environment.
    let key = std::fs::read_to_string(f.dir.path().join("app.key")).unwrap();
    let env: HashMap<&str, String> = [("GRAPH_KEY", key)].into_iter().collect();
    let c3 = Config::parse(
        &with_certificate("client_certificate_file = \"app.crt\"\nclient_key_env = \"GRAPH_KEY\""),
        &f.dir.path().join("provisiond.toml"),
        &|k| env.get(k).cloned(),
    )
    .unwrap();
    assert_eq!(graph(&c3).credential, graph(&c).credential);
}

#[test]
fn certificate_errors_name_the_key_and_never_show_it() {
    let f = Fixture::new();
    let Some(key_line) = self_signed(&f, "app") else {
        return;
    };
    let Some(other_line) = self_signed(&f, "other") else {
        return;
    };
    std::fs::write(f.dir.path().join("garbage.pem"), "hello\n").unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            GOOD.replace(
                "client_secret_file = \"graph-secret\"",
                "client_secret_file = \"graph-secret\"\nclient_certificate_file = \"app.crt\"\nclient_key_file = \"app.key\"",
            ),
            "jobs[0].source.client_certificate_file",
            "not both",
        ),
        (
            GOOD.replace(
                "client_secret_file = \"graph-secret\"",
                "client_secret_env = \"GRAPH_SECRET\"\nclient_key_file = \"app.key\"",
            ),
            "jobs[0].source.client_key_file",
            "not both",
        ),
        (
            with_certificate("client_certificate_file = \"app.crt\"\nclient_key_file = \"missing.key\""),
            "jobs[0].source.client_key_file",
            "cannot read",
        ),
        (
            with_certificate("client_certificate_file = \"missing.crt\"\nclient_key_file = \"app.key\""),
            "jobs[0].source.client_certificate_file",
            "cannot read",
        ),
        (
            with_certificate("client_certificate_file = \"app.crt\"\nclient_key_file = \"other.key\""),
            "jobs[0].source.client_key_file",
            "does not belong to the certificate",
        ),
        (
            with_certificate("client_certificate_file = \"app.crt\""),
            "jobs[0].source.client_certificate_file",
            "no private key in the certificate file",
        ),
        (
            with_certificate("client_key_file = \"app.key\""),
            "jobs[0].source.client_key_file",
            "needs client_certificate_file",
        ),
        (
            with_certificate("client_certificate_file = \"app.key\"\nclient_key_file = \"app.key\""),
            "jobs[0].source.client_certificate_file",
            "no certificate in it",
        ),
        (
            with_certificate("client_certificate_file = \"app.crt\"\nclient_key_file = \"garbage.pem\""),
            "jobs[0].source.client_key_file",
            "no private key in it",
        ),
        (
            with_certificate("client_certificate_file = \"app.crt\"\nclient_key_file = \"app.key\"\nclient_key_env = \"GRAPH_SECRET\""),
            "jobs[0].source.client_key_file",
            "only one of",
        ),
        (
            with_certificate("client_certificate_file = \"app.crt\"\nclient_key_env = \"NOPE\""),
            "jobs[0].source.client_key_env",
            "NOPE is not set",
        ),
    ];
    for (text, key, message) in cases {
        let e = f.parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(message), "{e}");
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(&key_line) && !shown.contains(&other_line),
            "{shown}"
        );
    }
}

#[test]
fn an_encrypted_key_is_refused_with_the_fix() {
    let f = Fixture::new();
    if self_signed(&f, "app").is_none() {
        return;
    }
    let out = std::process::Command::new("openssl")
        .current_dir(f.dir.path())
        .args([
            "pkcs8", "-topk8", "-in", "app.key", "-out", "enc.key", "-passout", "pass:pw",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = f
        .parse(&with_certificate(
            "client_certificate_file = \"app.crt\"\nclient_key_file = \"enc.key\"",
        ))
        .unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_key_file", "{e}");
    assert!(e.message.contains("encrypted"), "{e}");
}

#[test]
fn pkcs1_keys_work_and_ec_certificates_are_refused() {
    let f = Fixture::new();
    if self_signed(&f, "app").is_none() {
        return;
    }
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(f.dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // -----BEGIN RSA PRIVATE KEY----- (PKCS#1), as older tools write it.
    openssl(&["rsa", "-traditional", "-in", "app.key", "-out", "rsa.key"]);
    assert!(std::fs::read_to_string(f.dir.path().join("rsa.key"))
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let pkcs8 = f
        .parse(&with_certificate(
            "client_certificate_file = \"app.crt\"\nclient_key_file = \"app.key\"",
        ))
        .unwrap();
    let pkcs1 = f
        .parse(&with_certificate(
            "client_certificate_file = \"app.crt\"\nclient_key_file = \"rsa.key\"",
        ))
        .unwrap();
    let thumbprint = |c: &Config| match &graph(c).credential {
        GraphCredential::Certificate(cert) => cert.sha1_thumbprint().to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(thumbprint(&pkcs1), thumbprint(&pkcs8));

    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ec",
        "-keyout",
        "ec.key",
        "-out",
        "ec.crt",
    ]);
    let e = f
        .parse(&with_certificate(
            "client_certificate_file = \"ec.crt\"\nclient_key_file = \"ec.key\"",
        ))
        .unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_certificate_file", "{e}");
    assert!(e.message.contains("not an RSA key"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// systemd credentials (`LoadCredential=`), as the target's token and the LDAP password have.

/// Parse with `CREDENTIALS_DIRECTORY` set to `creds` of the fixture's directory.
fn parse_with_credentials(f: &Fixture, text: &str) -> Result<Config, ConfigError> {
    let dir = f.dir.path().join("creds").display().to_string();
    Config::parse(text, &f.dir.path().join("provisiond.toml"), &|k| {
        (k == "CREDENTIALS_DIRECTORY").then(|| dir.clone())
    })
}

#[test]
fn a_client_secret_from_a_systemd_credential() {
    let f = Fixture::new();
    std::fs::create_dir(f.dir.path().join("creds")).unwrap();
    std::fs::write(f.dir.path().join("creds/graph-secret"), "cr3d-s3cret\n").unwrap();
    let text = GOOD.replace(
        "client_secret_file = \"graph-secret\"",
        "client_secret_credential = \"graph-secret\"",
    );
    let c = parse_with_credentials(&f, &text).unwrap();
    assert_eq!(secret(graph(&c)), "cr3d-s3cret");

    // Named but absent, or without a credentials directory: the key is named.
    let e =
        parse_with_credentials(&f, &text.replace("\"graph-secret\"", "\"absent\"")).unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_secret_credential", "{e}");
    assert!(e.message.contains("cannot read"), "{e}");
    let e = f.parse(&text).unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_secret_credential", "{e}");
    assert!(e.message.contains("CREDENTIALS_DIRECTORY"), "{e}");

    // Only one way to give the secret, and not with a certificate.
    let e = parse_with_credentials(
        &f,
        &GOOD.replace(
            "client_secret_file = \"graph-secret\"",
            "client_secret_file = \"graph-secret\"\nclient_secret_credential = \"graph-secret\"",
        ),
    )
    .unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_secret_file", "{e}");
    assert!(e.message.contains("set only one of"), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let e = parse_with_credentials(
        &f,
        &text.replace(
            "[jobs.target]",
            "client_key_credential = \"app-key\"\n[jobs.target]",
        ),
    )
    .unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_key_credential", "{e}");
    assert!(e.message.contains("not both"), "{e}");
}

#[test]
fn a_certificate_key_from_a_systemd_credential() {
    let f = Fixture::new();
    let Some(key_line) = self_signed(&f, "app") else {
        return;
    };
    std::fs::create_dir(f.dir.path().join("creds")).unwrap();
    std::fs::copy(
        f.dir.path().join("app.key"),
        f.dir.path().join("creds/app-key"),
    )
    .unwrap();
    let by_file = f
        .parse(&with_certificate(
            "client_certificate_file = \"app.crt\"\nclient_key_file = \"app.key\"",
        ))
        .unwrap();
    let c = parse_with_credentials(
        &f,
        &with_certificate(
            "client_certificate_file = \"app.crt\"\nclient_key_credential = \"app-key\"",
        ),
    )
    .unwrap();
    assert_eq!(graph(&c).credential, graph(&by_file).credential);

    // Without the certificate it names the key that needs it; the key never shows.
    let e = parse_with_credentials(&f, &with_certificate("client_key_credential = \"app-key\""))
        .unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_key_credential", "{e}");
    assert!(e.message.contains("needs client_certificate_file"), "{e}");
    let e = parse_with_credentials(
        &f,
        &with_certificate(
            "client_certificate_file = \"app.crt\"\nclient_key_env = \"K\"\nclient_key_credential = \"app-key\"",
        ),
    )
    .unwrap_err();
    assert_eq!(e.key, "jobs[0].source.client_key_file", "{e}");
    assert!(e.message.contains("set only one of"), "{e}");
    assert!(!e.to_string().contains(&key_line), "{e}");
}
