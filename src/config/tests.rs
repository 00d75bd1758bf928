use super::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;

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
