use super::job::SourceConfig;
use super::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::time::Duration;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.json"), "{}").unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
        Fixture { dir }
    }
    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        let env: HashMap<&str, &str> = [("ROBIN_TOKEN", "from-env")].into_iter().collect();
        Config::parse(text, &self.dir.path().join("provisiond.toml"), &|k| {
            env.get(k).map(|s| s.to_string())
        })
    }
}

const GOOD: &str = r#"
state_dir = "state"
[[jobs]]
name = "robin"
interval = "40m"
[jobs.source]
kind = "file"
path = "directory.json"
[jobs.target]
url = "https://api.robinpowered.com/v1.0/scim-2"
token_file = "token"
"#;

#[test]
fn a_good_config_resolves_relative_paths_and_reads_the_token() {
    let f = Fixture::new();
    let c = f.parse(GOOD).unwrap();
    assert_eq!(c.state_dir, f.dir.path().join("state"));
    assert_eq!(c.control_socket, f.dir.path().join("state/control.sock"));
    let j = &c.jobs[0];
    assert_eq!(j.schedule, Schedule::Interval(Duration::from_secs(2400)));
    assert_eq!(j.target.token.expose_secret(), "s3cret-token");
    assert_eq!(j.scope.excluded_roles, vec!["Default Access"]);
    assert_eq!(j.member_batch, 100);
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must not show the token"
    );
}

fn error_for(f: &Fixture, text: &str) -> ConfigError {
    f.parse(text).unwrap_err()
}

#[test]
fn errors_name_the_file_and_key() {
    let f = Fixture::new();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            GOOD.replace("interval = \"40m\"", "interval = \"40 minutes\""),
            "jobs[0].interval",
            "not a duration",
        ),
        (
            GOOD.replace("interval = \"40m\"", "interval = \"100000000d\""),
            "jobs[0].interval",
            "longer than a year",
        ),
        (
            GOOD.replace("token_file = \"token\"", "token_file = \"missing\""),
            "jobs[0].target.token_file",
            "cannot read",
        ),
        (
            GOOD.replace("token_file = \"token\"", "token_env = \"NOPE\""),
            "jobs[0].target.token_env",
            "NOPE is not set",
        ),
        (
            GOOD.replace("token_file = \"token\"", ""),
            "jobs[0].target.token_file",
            "no token",
        ),
        (
            GOOD.replace("https://api", "http://api"),
            "jobs[0].target.url",
            "loopback",
        ),
        (
            GOOD.replace("path = \"directory.json\"", "path = \"nope.json\""),
            "jobs[0].source.path",
            "not a readable file",
        ),
        (
            GOOD.replace("interval = \"40m\"", "cron = \"0 0 * * *\""),
            "jobs[0].cron",
            "not a valid cron",
        ),
        (
            format!("{GOOD}\n[[jobs.mappings.users]]\ntarget = \"x\"\n"),
            "jobs[0].mappings.users",
            "exactly one of",
        ),
        (
            GOOD.replace("name = \"robin\"", "name = \"robin\"\nbogus = 1"),
            "line 5, column 1",
            "unknown field `bogus`",
        ),
        (
            format!("{GOOD}\n[[jobs.scoping.users]]\nclauses = [{{attribute = \"upn\", operator = \"REGEX MATCH\", value = \"(\"}}]\n"),
            "jobs[0].scoping.users[0]",
            "invalid regular expression",
        ),
        (
            format!("{GOOD}\n[[jobs.scoping.groups]]\nclauses = [{{attribute = \"n\", operator = \"Greater_Than\", value = \"x\"}}]\n"),
            "jobs[0].scoping.groups[0]",
            "must be an integer",
        ),
    ];
    for (text, key, message) in cases {
        let e = error_for(&f, &text);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(message), "{e}");
        assert!(e.to_string().contains("provisiond.toml"), "{e}");
    }
}

#[test]
fn token_sources_and_loopback_http() {
    let f = Fixture::new();
    let c = f
        .parse(
            &GOOD
                .replace("token_file = \"token\"", "token_env = \"ROBIN_TOKEN\"")
                .replace(
                    "https://api.robinpowered.com/v1.0/scim-2",
                    "http://127.0.0.1:9999/scim",
                ),
        )
        .unwrap();
    assert_eq!(c.jobs[0].target.token.expose_secret(), "from-env");
    assert!(f
        .parse(
            &GOOD
                .replace("https://api", "http://api")
                .replace("[jobs.target]", "[jobs.target]\nallow_insecure_http = true")
        )
        .is_ok());
    let cron = f
        .parse(&GOOD.replace("interval = \"40m\"", "cron = \"0 */40 * * * *\""))
        .unwrap();
    assert_eq!(
        cron.jobs[0].schedule,
        Schedule::Cron("0 */40 * * * *".into())
    );
}

#[test]
fn scoping_filters_load() {
    let f = Fixture::new();
    let c = f
        .parse(&format!(
            "{GOOD}\n[[jobs.scoping.users]]\ntitle = \"Sales\"\nclauses = [\n  {{attribute = \"department\", operator = \"EQUALS\", value = \"Sales\"}},\n  {{attribute = \"employeeId\", operator = \"Greater_Than\", value = 1000}},\n  {{attribute = \"jobTitle\", operator = \"IS NOT NULL\"}},\n]\n"
        ))
        .unwrap();
    assert_eq!(c.jobs[0].scope.user_filters.len(), 1);
    assert_eq!(c.jobs[0].scope.user_filters[0].spec.clauses.len(), 3);
}

#[test]
fn presets_by_name_or_file() {
    let f = Fixture::new();
    let robin = GOOD
        .replace("url = \"https://api.robinpowered.com/v1.0/scim-2\"\n", "")
        .replace("interval", "preset = \"robin\"\ninterval");
    let c = f.parse(&robin).unwrap();
    let j = &c.jobs[0];
    assert_eq!(
        j.target.base_url.as_str(),
        "https://api.robinpowered.com/v1.0/scim-2"
    );
    let targets: Vec<&str> = j.mappings.users.iter().map(|m| m.target.as_str()).collect();
    assert!(
        targets.contains(&"name.familyName") && !targets.iter().any(|t| t.contains("department"))
    );
    std::fs::write(
        f.dir.path().join("mine.toml"),
        "[[users]]\ntarget = \"userName\"\nsource = \"mail\"\nmatching = 1\n",
    )
    .unwrap();
    let c = f
        .parse(&GOOD.replace("interval", "preset = \"mine.toml\"\ninterval"))
        .unwrap();
    assert_eq!(c.jobs[0].mappings.users.len(), 1);
    let e = f
        .parse(&GOOD.replace("interval", "preset = \"nope\"\ninterval"))
        .unwrap_err();
    assert_eq!(e.key, "jobs[0].preset");
    assert!(e.message.contains("robin"), "{e}");
}

#[test]
fn job_selection() {
    let f = Fixture::new();
    let c = f.parse(GOOD).unwrap();
    assert_eq!(c.select(Some("robin")).unwrap().len(), 1);
    assert!(c
        .select(Some("other"))
        .unwrap_err()
        .message
        .contains("robin"));
}

const LDAP: &str = r#"
[[jobs]]
name = "corp"
[jobs.source]
kind = "ldap"
url = "ldaps://dc1.corp.example.com"
flavour = "ad"
bind_dn = "CN=svc-provisiond,OU=Service,DC=corp,DC=example,DC=com"
password_file = "ldap-password"
user_base = "OU=Staff,DC=corp,DC=example,DC=com"
assigned_groups = ["CN=Robin users,OU=Groups,DC=corp,DC=example,DC=com"]
nested = "flatten"
page_size = 1000
timeout = "30s"
full_read_interval = "12h"
[jobs.source.attributes]
jobTitle = "extensionAttribute5"
employeeId = ["employeeNumber", "employeeID"]
companyName = ""
[jobs.target]
url = "https://api.robinpowered.com/v1.0/scim-2"
token_file = "token"
"#;

fn ldap_fixture() -> Fixture {
    let f = Fixture::new();
    std::fs::write(f.dir.path().join("ldap-password"), "p@ss word-LDAP\n").unwrap();
    f
}

fn ldap_settings_of(c: &Config) -> &crate::source::ldap::LdapSettings {
    match &c.jobs[0].source {
        SourceConfig::Ldap(s) => s,
        other => panic!("not an LDAP source: {other:?}"),
    }
}

#[test]
fn an_ldap_source_loads_with_flavour_defaults_and_overrides() {
    use crate::source::ldap::{Flavour, Nested};
    let f = ldap_fixture();
    let c = f.parse(LDAP).unwrap();
    let s = ldap_settings_of(&c);
    assert_eq!(s.flavour, Flavour::Ad);
    assert_eq!(s.anchor_attribute, "objectGUID");
    assert_eq!(s.timestamp_attribute, "whenChanged");
    assert_eq!(
        s.user_filter,
        "(&(objectCategory=person)(objectClass=user))"
    );
    assert_eq!(s.group_base, s.user_base, "groups default to the user base");
    assert_eq!(s.nested, Nested::Flatten);
    assert_eq!(s.page_size, 1000);
    assert_eq!(s.timeout, Duration::from_secs(30));
    assert_eq!(s.full_read_interval, Duration::from_secs(12 * 3600));
    assert_eq!(s.user_attributes["jobTitle"], vec!["extensionAttribute5"]);
    assert_eq!(
        s.user_attributes["employeeId"],
        vec!["employeeNumber", "employeeID"]
    );
    assert!(
        !s.user_attributes.contains_key("companyName"),
        "\"\" drops a default"
    );
    assert_eq!(
        s.user_attributes["accountEnabled"],
        vec!["userAccountControl"]
    );
    // Only the line break is trimmed: a password may hold spaces.
    assert_eq!(
        s.password.as_ref().unwrap().expose_secret(),
        "p@ss word-LDAP"
    );
    for shown in [
        format!("{c:?}"),
        format!("{:?}", c.jobs[0].spec().source.describe()),
    ] {
        assert!(!shown.contains("p@ss"), "{shown}");
    }

    let open = f
        .parse(
            &LDAP
                .replace("flavour = \"ad\"\n", "")
                .replace("url = \"ldaps://dc1.corp.example.com\"", "url = \"ldap://ldap.example.com\"\nstarttls = true")
                .replace("password_file = \"ldap-password\"", "password_env = \"ROBIN_TOKEN\"")
                .replace("nested = \"flatten\"", "enabled_attribute = \"employeeActive\"\ndisabled_filter = \"pwdAccountLockedTime=*\""),
        )
        .unwrap();
    let s = ldap_settings_of(&open);
    assert_eq!(s.flavour, Flavour::OpenLdap);
    assert!(s.starttls);
    assert_eq!(s.anchor_attribute, "entryUUID");
    assert_eq!(s.user_attributes["accountEnabled"], vec!["employeeActive"]);
    assert_eq!(
        s.disabled_filter.as_deref(),
        Some("(pwdAccountLockedTime=*)")
    );
    assert_eq!(s.password.as_ref().unwrap().expose_secret(), "from-env");
}

#[test]
fn ldap_errors_name_the_key() {
    let f = ldap_fixture();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            LDAP.replace(
                "password_file = \"ldap-password\"",
                "password_file = \"missing\"",
            ),
            "jobs[0].source.password_file",
            "cannot read",
        ),
        (
            LDAP.replace("password_file = \"ldap-password\"", ""),
            "jobs[0].source.password_file",
            "bind_dn needs a password",
        ),
        (
            LDAP.replace(
                "password_file = \"ldap-password\"",
                "password_env = \"NOPE\"",
            ),
            "jobs[0].source.password_env",
            "NOPE is not set",
        ),
        (
            LDAP.replace("ldaps://", "https://"),
            "jobs[0].source.url",
            "unsupported scheme",
        ),
        (
            LDAP.replace("page_size = 1000", "starttls = true"),
            "jobs[0].source.starttls",
            "ldap:// URLs",
        ),
        (
            LDAP.replace(
                "nested = \"flatten\"",
                "user_filter = \"(&(objectClass=user)\"",
            ),
            "jobs[0].source.user_filter",
            "not a valid LDAP filter",
        ),
        (
            LDAP.replace(
                "assigned_groups = [\"CN=Robin users,OU=Groups,DC=corp,DC=example,DC=com\"]",
                "",
            ),
            "jobs[0].source.assigned_groups",
            "scope = \"all\"",
        ),
        (
            LDAP.replace("timeout = \"30s\"", "timeout = \"soon\""),
            "jobs[0].source.timeout",
            "not a duration",
        ),
        (
            LDAP.replace("page_size = 1000", "page_size = 0"),
            "jobs[0].source.page_size",
            "between 1",
        ),
        (
            LDAP.replace(
                "jobTitle = \"extensionAttribute5\"",
                "jobTitle = \"bad name!\"",
            ),
            "jobs[0].source.attributes",
            "not an LDAP attribute name",
        ),
        (
            LDAP.replace("jobTitle = \"extensionAttribute5\"", "id = \"cn\""),
            "jobs[0].source.attributes",
            "cannot be mapped",
        ),
        (
            LDAP.replace("page_size = 1000", "ca_file = \"nope.pem\""),
            "jobs[0].source.ca_file",
            "cannot read",
        ),
        (
            LDAP.replace("page_size = 1000", "ca_file = \"token\""),
            "jobs[0].source.ca_file",
            "no PEM certificate",
        ),
        (
            LDAP.replace("page_size = 1000", "bogus = 1"),
            "line 4, column 1",
            "unknown field `bogus`",
        ),
    ];
    for (text, key, message) in cases {
        let e = error_for(&f, &text);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(message), "{e}");
        assert!(!e.to_string().contains("p@ss"), "{e}");
    }
    // Anonymous bind: neither a bind DN nor a password; scope = "all" needs no assignment.
    let anon = LDAP
        .replace(
            "bind_dn = \"CN=svc-provisiond,OU=Service,DC=corp,DC=example,DC=com\"\n",
            "",
        )
        .replace("password_file = \"ldap-password\"\n", "")
        .replace(
            "[[jobs]]\nname = \"corp\"",
            "[[jobs]]\nname = \"corp\"\nscope = \"all\"",
        )
        .replace(
            "assigned_groups = [\"CN=Robin users,OU=Groups,DC=corp,DC=example,DC=com\"]\n",
            "",
        );
    let c = f.parse(&anon).unwrap();
    assert!(ldap_settings_of(&c).bind_dn.is_none());
}

#[test]
fn safety_keys_have_entras_defaults_and_are_checked() {
    let f = Fixture::new();
    let j = &f.parse(GOOD).unwrap().jobs[0];
    assert_eq!(j.safety, crate::cycle::SafetySettings::default());
    assert_eq!(j.safety.deletions.count, 500);
    assert_eq!(j.safety.quarantine.min_failures, 5000);

    let set = GOOD.replace(
        "interval = \"40m\"",
        "interval = \"40m\"\ndelete_threshold = 0\ndelete_threshold_percent = 12.5",
    ) + "[jobs.quarantine]\nmin_failures = 3\nfailure_percent = 50\nbase_escrows = 7\ntotal_escrows = 9\n";
    let j = &f.parse(&set).unwrap().jobs[0];
    assert_eq!(j.safety.deletions.count, 0);
    assert_eq!(j.safety.deletions.percent, Some(12.5));
    let q = &j.safety.quarantine;
    assert_eq!(
        (
            q.min_failures,
            q.failure_percent,
            q.base_escrows,
            q.total_escrows
        ),
        (3, 50.0, 7, 9)
    );

    let bad = GOOD.replace(
        "interval = \"40m\"",
        "interval = \"40m\"\ndelete_threshold_percent = 120",
    );
    let e = error_for(&f, &bad).to_string();
    assert!(e.contains("delete_threshold_percent"), "{e}");
    let unknown = GOOD.to_string() + "[jobs.quarantine]\nmin_failure = 3\n";
    let e = error_for(&f, &unknown).to_string();
    assert!(e.contains("min_failure"), "{e}");
}

/// A config loaded without its secrets never reaches a target or a source: the placeholder
/// token is refused where a client would be built, not sent.
#[test]
fn a_config_without_its_secrets_is_refused_before_a_client() {
    let f = Fixture::new();
    let path = f.dir.path().join("provisiond.toml");
    let deferred = Config::parse_with(GOOD, &path, &|_| None, true).unwrap();
    let j = &deferred.jobs[0];
    assert!(!j.secrets_read);
    assert_ne!(j.target.token.expose_secret(), "s3cret-token");
    let err = j.require_secrets().unwrap_err();
    assert!(err.to_string().contains("without its secrets"), "{err}");
    assert!(crate::daemon::jobs::JobRuntime::new(j.clone()).is_err());
    let read = f.parse(GOOD).unwrap();
    assert!(read.jobs[0].require_secrets().is_ok());
}
