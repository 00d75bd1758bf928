//! Configuration: a TOML file, checked whole before anything runs. Every error names the file
//! and the key (or the line and column) so an admin can fix it without guessing.

mod duration;

pub use duration::{format_duration, parse_duration};

use crate::mapping::{MappingError, MappingSpec, Mappings, PresetFile, BUILT_IN_PRESETS};
use crate::plan::NullPolicy;
use crate::scope::{FilterSpec, ScopeMode, ScopeSettings, ScopingFilter};
use crate::source::graph::{
    CertificateError, ClientCertificate, GraphCredential, GraphSettings, GraphSource, Selection,
};
use crate::target::{PatchStyle, TargetSettings};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config is looked for when neither `--config` nor `PROVISIOND_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/provisiond/provisiond.toml";

/// A configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// The key, as a TOML path (`jobs[0].target.token_file`), or where in the file.
    pub key: String,
    pub message: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    control_socket: Option<PathBuf>,
    #[serde(default)]
    jobs: Vec<RawJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    interval: Option<String>,
    cron: Option<String>,
    #[serde(default)]
    scope: ScopeMode,
    excluded_roles: Option<Vec<String>>,
    #[serde(default)]
    null_values: NullPolicy,
    preset: Option<String>,
    source: RawSource,
    target: RawTarget,
    #[serde(default)]
    mappings: RawMappings,
    #[serde(default)]
    scoping: RawScoping,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScoping {
    #[serde(default)]
    users: Vec<FilterSpec>,
    #[serde(default)]
    groups: Vec<FilterSpec>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawSource {
    File { path: PathBuf },
    Graph(Box<RawGraph>),
    Ldap(Box<RawLdap>),
}

/// `kind = "graph"`: an Entra ID tenant through Microsoft Graph (`docs/graph.md`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraph {
    tenant_id: String,
    client_id: String,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    /// A certificate credential: the PEM certificate (it may hold the private key too).
    client_certificate_file: Option<PathBuf>,
    /// Its PEM private key, from a file or an environment variable.
    client_key_file: Option<PathBuf>,
    client_key_env: Option<String>,
    service_principal_id: String,
    authority: Option<String>,
    graph_url: Option<String>,
    /// Graph properties read besides those the mappings name (directory extensions, …).
    #[serde(default)]
    user_attributes: Vec<String>,
    #[serde(default)]
    group_attributes: Vec<String>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    read_timeout: Option<String>,
    max_retries: Option<u32>,
    #[serde(default)]
    allow_insecure_http: bool,
}

/// `kind = "ldap"`: see docs/ldap.md for every key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: String,
    #[serde(default)]
    starttls: bool,
    ca_file: Option<PathBuf>,
    bind_dn: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    /// A systemd credential name, read from `$CREDENTIALS_DIRECTORY`.
    password_credential: Option<String>,
    #[serde(default)]
    flavour: crate::source::ldap::Flavour,
    user_base: String,
    user_filter: Option<String>,
    group_base: Option<String>,
    group_filter: Option<String>,
    /// Our attribute name → the LDAP attribute (or attributes, first present wins); `""`
    /// drops a default.
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, OneOrMany>,
    #[serde(default)]
    group_attributes: std::collections::BTreeMap<String, OneOrMany>,
    anchor_attribute: Option<String>,
    disabled_filter: Option<String>,
    enabled_attribute: Option<String>,
    #[serde(default)]
    assigned_groups: Vec<String>,
    assigned_users_filter: Option<String>,
    #[serde(default)]
    nested: crate::source::ldap::Nested,
    member_uid_attribute: Option<String>,
    page_size: Option<u32>,
    timeout: Option<String>,
    full_read_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    /// Optional when the preset names the app's tenant URL.
    url: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    /// A systemd credential name (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    token_credential: Option<String>,
    #[serde(default)]
    patch_style: PatchStyle,
    concurrency: Option<usize>,
    member_batch: Option<usize>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    max_retries: Option<u32>,
    #[serde(default)]
    allow_insecure_http: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMappings {
    #[serde(default)]
    users: Vec<MappingSpec>,
    #[serde(default)]
    groups: Vec<MappingSpec>,
}

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// The next cycle starts this long after the previous one ended.
    Interval(Duration),
    /// A 6-field cron expression (seconds first), in UTC.
    Cron(String),
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Interval(d) => {
                write!(f, "every {} after the previous cycle", format_duration(*d))
            }
            Schedule::Cron(c) => write!(f, "cron {c:?} (UTC)"),
        }
    }
}

/// Where a job reads its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    File {
        path: PathBuf,
    },
    /// Holds the client secret; its `Debug` redacts it.
    Graph(Box<GraphSettings>),
    /// Holds the bind password; its `Debug` redacts it.
    Ldap(Box<crate::source::ldap::LdapSettings>),
}

impl SourceConfig {
    pub fn build(&self) -> Box<dyn crate::source::Source> {
        match self {
            SourceConfig::File { path } => {
                Box::new(crate::source::file::FileSource::new(path.clone()))
            }
            SourceConfig::Graph(settings) => Box::new(GraphSource::new((**settings).clone())),
            SourceConfig::Ldap(settings) => Box::new(crate::source::ldap::LdapSource::new(
                settings.as_ref().clone(),
            )),
        }
    }
}

/// One checked job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub schedule: Schedule,
    pub scope: ScopeSettings,
    pub null_values: NullPolicy,
    pub mappings: Mappings,
    pub source: SourceConfig,
    /// Holds the token; its `Debug` redacts it.
    pub target: TargetSettings,
    pub member_batch: usize,
}

impl JobConfig {
    /// The pipeline's view of this job.
    pub fn spec(&self) -> crate::cycle::JobSpec {
        crate::cycle::JobSpec {
            name: self.name.clone(),
            source: self.source.build(),
            scope: self.scope.clone(),
            mappings: self.mappings.clone(),
            null_values: self.null_values,
            concurrency: self.target.concurrency,
            member_batch: self.member_batch,
        }
    }
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub log_format: LogFormat,
    pub jobs: Vec<JobConfig>,
}

impl Config {
    /// The jobs a command applies to: one by name, or all.
    pub fn select(&self, name: Option<&str>) -> Result<Vec<&JobConfig>, ConfigError> {
        match name {
            None => Ok(self.jobs.iter().collect()),
            Some(n) => self
                .jobs
                .iter()
                .find(|j| j.name == n)
                .map(|j| vec![j])
                .ok_or_else(|| ConfigError {
                    file: self.path.clone(),
                    key: "jobs".into(),
                    message: format!(
                        "no job named {n:?} (jobs: {})",
                        self.jobs
                            .iter()
                            .map(|j| j.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
        }
    }

    /// Read and check a configuration file, including the token files it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        // Absolute, so relative paths in it resolve the same from any working directory.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Config::parse(&text, &path, &|name| std::env::var(name).ok())
    }

    /// Check configuration text; `env` looks up environment variables (tests pass their own).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let err = |key: String, message: String| ConfigError {
            file: path.to_path_buf(),
            key,
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            err(
                format!("line {line}, column {col}"),
                e.message().to_string(),
            )
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let state_dir = resolve(
            raw.state_dir
                .as_deref()
                .unwrap_or(Path::new("/var/lib/provisiond")),
        );
        let control_socket = raw
            .control_socket
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| state_dir.join("control.sock"));
        if raw.jobs.is_empty() {
            return Err(err("jobs".into(), "no [[jobs]] defined".into()));
        }
        let mut jobs = Vec::new();
        for (i, rj) in raw.jobs.into_iter().enumerate() {
            let k = |rest: &str| format!("jobs[{i}]{rest}");
            if rj.name.is_empty()
                || !rj
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(err(
                    k(".name"),
                    format!(
                        "{:?} is not a valid job name (letters, digits, - _ .)",
                        rj.name
                    ),
                ));
            }
            if jobs.iter().any(|j: &JobConfig| j.name == rj.name) {
                return Err(err(
                    k(".name"),
                    format!("job name {:?} is used twice", rj.name),
                ));
            }
            let schedule = match (&rj.interval, &rj.cron) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        k(".cron"),
                        "set either interval or cron, not both".into(),
                    ))
                }
                (None, Some(c)) => {
                    check_cron(c).map_err(|m| err(k(".cron"), m))?;
                    Schedule::Cron(c.clone())
                }
                (Some(s), None) => {
                    let d = parse_duration(s).map_err(|m| err(k(".interval"), m))?;
                    // Past a year it is surely a typo, and far-future times overflow clocks.
                    if d > Duration::from_secs(366 * 86400) {
                        return Err(err(k(".interval"), format!("{s:?} is longer than a year")));
                    }
                    Schedule::Interval(d)
                }
                (None, None) => Schedule::Interval(Duration::from_secs(40 * 60)),
            };
            // Graph's `$select` depends on the mappings: completed once they are built.
            let mut graph_extras = None;
            let mut source = match rj.source {
                RawSource::File { path } => {
                    let p = resolve(&path);
                    if !p.is_file() {
                        return Err(err(
                            k(".source.path"),
                            format!("{} is not a readable file", p.display()),
                        ));
                    }
                    SourceConfig::File { path: p }
                }
                RawSource::Graph(g) => {
                    let settings = graph_settings(&g, &resolve, env)
                        .map_err(|(key, m)| err(k(&format!(".source.{key}")), m))?;
                    let RawGraph {
                        user_attributes,
                        group_attributes,
                        ..
                    } = *g;
                    graph_extras = Some((user_attributes, group_attributes));
                    SourceConfig::Graph(Box::new(settings))
                }
                RawSource::Ldap(raw) => {
                    let settings = ldap_settings(*raw, rj.scope, &resolve, env)
                        .map_err(|(key, m)| err(k(&format!(".source.{key}")), m))?;
                    SourceConfig::Ldap(Box::new(settings))
                }
            };
            let preset =
                load_preset(rj.preset.as_deref(), &resolve).map_err(|m| err(k(".preset"), m))?;
            let t = rj.target;
            let url_text = t
                .url
                .clone()
                .or_else(|| preset.target.as_ref().and_then(|p| p.url.clone()))
                .ok_or_else(|| {
                    err(
                        k(".target.url"),
                        "missing (and the preset names no tenant URL)".into(),
                    )
                })?;
            let url = url::Url::parse(&url_text)
                .map_err(|e| err(k(".target.url"), format!("{url_text:?} is not a URL: {e}")))?;
            match url.scheme() {
                "https" => {}
                "http" if t.allow_insecure_http || is_loopback(&url) => {}
                "http" => {
                    return Err(err(
                        k(".target.url"),
                        "plain http:// is only allowed for loopback hosts; use https:// or set allow_insecure_http = true".into(),
                    ))
                }
                other => return Err(err(k(".target.url"), format!("unsupported scheme {other:?}"))),
            }
            let token = read_token(&t, &resolve, env)
                .map_err(|(key, m)| err(k(&format!(".target.{key}")), m))?;
            let mut settings = TargetSettings::new(url, token);
            settings.patch_style = t.patch_style;
            if let Some(c) = t.concurrency {
                if c == 0 || c > 256 {
                    return Err(err(
                        k(".target.concurrency"),
                        "must be between 1 and 256".into(),
                    ));
                }
                settings.concurrency = c;
            }
            if let Some(s) = &t.connect_timeout {
                settings.connect_timeout =
                    parse_duration(s).map_err(|m| err(k(".target.connect_timeout"), m))?;
            }
            if let Some(s) = &t.request_timeout {
                settings.request_timeout =
                    parse_duration(s).map_err(|m| err(k(".target.request_timeout"), m))?;
            }
            if let Some(r) = t.max_retries {
                settings.max_retries = r;
            }
            let member_batch = t.member_batch.unwrap_or(100);
            if member_batch == 0 {
                return Err(err(k(".target.member_batch"), "must be at least 1".into()));
            }
            let mappings = Mappings::build(&preset, &rj.mappings.users, &rj.mappings.groups)
                .map_err(|e: MappingError| {
                    let list = match e.object_type {
                        crate::model::ObjectType::User => "users",
                        crate::model::ObjectType::Group => "groups",
                    };
                    err(k(&format!(".mappings.{list}")), e.to_string())
                })?;
            let compile = |list: &str,
                           specs: Vec<FilterSpec>|
             -> Result<Vec<ScopingFilter>, ConfigError> {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(f, spec)| {
                        ScopingFilter::compile(spec)
                            .map_err(|m| err(k(&format!(".scoping.{list}[{f}]")), m.to_string()))
                    })
                    .collect()
            };
            let user_filters = compile("users", rj.scoping.users)?;
            let group_filters = compile("groups", rj.scoping.groups)?;
            let scope = ScopeSettings {
                mode: rj.scope,
                excluded_roles: rj
                    .excluded_roles
                    .unwrap_or_else(|| vec!["Default Access".into()]),
                user_filters,
                group_filters,
            };
            if let (SourceConfig::Graph(g), Some((users, groups))) = (&mut source, graph_extras) {
                g.select = Selection::for_job(&mappings, &scope, &users, &groups).map_err(|e| {
                    let list = match e.object_type {
                        crate::model::ObjectType::User => "users",
                        crate::model::ObjectType::Group => "groups",
                    };
                    err(k(&format!(".mappings.{list}")), e.to_string())
                })?;
            }
            jobs.push(JobConfig {
                name: rj.name,
                schedule,
                scope,
                null_values: rj.null_values,
                mappings,
                source,
                target: settings,
                member_batch,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            control_socket,
            log_format: raw.log_format.unwrap_or_default(),
            jobs,
        })
    }
}

/// A built-in preset by name, or a preset file (`*.toml`, relative to the config file).
fn load_preset(
    name: Option<&str>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<PresetFile, String> {
    let name = name.unwrap_or("generic-scim");
    let text = match BUILT_IN_PRESETS.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => (*text).to_string(),
        None if name.ends_with(".toml") => {
            let p = resolve(Path::new(name));
            std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read preset file {}: {e}", p.display()))?
        }
        None => {
            let names: Vec<&str> = BUILT_IN_PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown preset {name:?} (built in: {}; or a path to a .toml preset file)",
                names.join(", ")
            ));
        }
    };
    toml::from_str(&text).map_err(|e| format!("preset {name:?} is invalid: {e}"))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The 6-field (seconds first) cron dialect of tokio-cron-scheduler.
pub fn cron_schedule(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| {
            format!("{expr:?} is not a valid cron expression (6 fields, seconds first, UTC): {e}")
        })
}

fn check_cron(expr: &str) -> Result<(), String> {
    cron_schedule(expr).map(|_| ())
}

/// A Graph source's credential: a client secret, or a certificate and its private key.
/// Exactly one kind; errors name the key and never quote the secret or the key.
fn graph_credential(
    g: &RawGraph,
    resolve: &dyn Fn(&Path) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GraphCredential, (&'static str, String)> {
    use secrecy::zeroize::Zeroizing;
    let secret_key = match (&g.client_secret_file, &g.client_secret_env) {
        (Some(_), _) => Some("client_secret_file"),
        (None, Some(_)) => Some("client_secret_env"),
        (None, None) => None,
    };
    let certificate_key = match (
        &g.client_certificate_file,
        &g.client_key_file,
        &g.client_key_env,
    ) {
        (Some(_), _, _) => Some("client_certificate_file"),
        (None, Some(_), _) => Some("client_key_file"),
        (None, None, Some(_)) => Some("client_key_env"),
        (None, None, None) => None,
    };
    match (secret_key, certificate_key) {
        (Some(_), Some(key)) => {
            return Err((
                key,
                "set either a client secret (client_secret_file or client_secret_env) or a \
                 certificate (client_certificate_file), not both"
                    .into(),
            ))
        }
        (None, None) => {
            return Err((
                "client_secret_file",
                "no credential: set client_secret_file or client_secret_env, or \
                 client_certificate_file (with client_key_file or client_key_env unless the \
                 certificate file holds the key)"
                    .into(),
            ))
        }
        (None, Some(_)) => {}
        (Some(_), None) => {
            let (key, raw) = match (&g.client_secret_file, &g.client_secret_env) {
                (Some(_), Some(_)) => {
                    return Err((
                        "client_secret_file",
                        "set only one of client_secret_file and client_secret_env".into(),
                    ))
                }
                (Some(f), None) => {
                    let p = resolve(f);
                    let s = std::fs::read_to_string(&p).map_err(|e| {
                        (
                            "client_secret_file",
                            format!("cannot read {}: {e}", p.display()),
                        )
                    })?;
                    ("client_secret_file", Zeroizing::new(s))
                }
                (None, Some(name)) => {
                    let s = env(name).ok_or_else(|| {
                        (
                            "client_secret_env",
                            format!("environment variable {name} is not set"),
                        )
                    })?;
                    ("client_secret_env", Zeroizing::new(s))
                }
                (None, None) => return Err(("client_secret_file", "no client secret".into())),
            };
            let secret = raw.trim();
            if secret.is_empty() {
                return Err((key, "the client secret is empty".into()));
            }
            return Ok(GraphCredential::Secret(SecretString::from(
                secret.to_string(),
            )));
        }
    }
    let Some(cert_file) = &g.client_certificate_file else {
        let key = certificate_key.unwrap_or("client_certificate_file");
        return Err((
            key,
            format!("{key} needs client_certificate_file: the certificate uploaded to the app registration"),
        ));
    };
    let cert_path = resolve(cert_file);
    let cert_pem = Zeroizing::new(std::fs::read(&cert_path).map_err(|e| {
        (
            "client_certificate_file",
            format!("cannot read {}: {e}", cert_path.display()),
        )
    })?);
    let (key_key, key_origin, key_pem) = match (&g.client_key_file, &g.client_key_env) {
        (Some(_), Some(_)) => {
            return Err((
                "client_key_file",
                "set only one of client_key_file and client_key_env".into(),
            ))
        }
        (Some(f), None) => {
            let p = resolve(f);
            let pem = std::fs::read(&p).map_err(|e| {
                (
                    "client_key_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            (
                "client_key_file",
                p.display().to_string(),
                Some(Zeroizing::new(pem)),
            )
        }
        (None, Some(name)) => {
            let pem = env(name).ok_or_else(|| {
                (
                    "client_key_env",
                    format!("environment variable {name} is not set"),
                )
            })?;
            (
                "client_key_env",
                format!("environment variable {name}"),
                Some(Zeroizing::new(pem.into_bytes())),
            )
        }
        (None, None) => (
            "client_certificate_file",
            cert_path.display().to_string(),
            None,
        ),
    };
    let certificate =
        ClientCertificate::from_pem(&cert_pem, key_pem.as_ref().map(|k| k.as_slice())).map_err(
            |e| match e {
                CertificateError::Certificate(m) => (
                    "client_certificate_file",
                    format!("{}: {m}", cert_path.display()),
                ),
                other => (key_key, format!("{key_origin}: {other}")),
            },
        )?;
    Ok(GraphCredential::Certificate(certificate))
}

/// A Graph source's settings, with the credential read; errors name the key.
fn graph_settings(
    g: &RawGraph,
    resolve: &dyn Fn(&Path) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GraphSettings, (&'static str, String)> {
    for (key, value) in [
        ("tenant_id", &g.tenant_id),
        ("client_id", &g.client_id),
        ("service_principal_id", &g.service_principal_id),
    ] {
        let v = value.trim();
        if v.is_empty() || v.contains(['/', '?', '#']) || v.chars().any(char::is_whitespace) {
            return Err((key, format!("{value:?} is not a valid id")));
        }
    }
    let credential = graph_credential(g, resolve, env)?;
    let mut s = GraphSettings::new(
        &g.tenant_id,
        &g.client_id,
        credential,
        &g.service_principal_id,
    )
    .map_err(|e| ("authority", e.to_string()))?;
    let check_url = |key: &'static str, text: &str| -> Result<url::Url, (&'static str, String)> {
        let url =
            url::Url::parse(text).map_err(|e| (key, format!("{text:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if g.allow_insecure_http || is_loopback(&url) => {}
            "http" => {
                return Err((
                    key,
                    "plain http:// is only allowed for loopback hosts; use https:// or set \
                     allow_insecure_http = true"
                        .into(),
                ))
            }
            other => return Err((key, format!("unsupported scheme {other:?}"))),
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err((key, format!("{text:?} has no host")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err((key, "must not contain credentials".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err((key, "must not have a query or fragment".into()));
        }
        Ok(url)
    };
    if let Some(a) = &g.authority {
        s.authority = check_url("authority", a)?;
    }
    if let Some(u) = &g.graph_url {
        s.graph_url = check_url("graph_url", u)?;
        if s.graph_url.path().trim_matches('/').is_empty() {
            return Err((
                "graph_url",
                format!("{u:?} has no API version: use e.g. https://graph.microsoft.com/v1.0"),
            ));
        }
    }
    let duration = |key: &'static str, v: &Option<String>, d: Duration| match v {
        None => Ok(d),
        Some(text) => match parse_duration(text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err((key, "must be longer than zero".to_string())),
            Err(m) => Err((key, m)),
        },
    };
    s.connect_timeout = duration("connect_timeout", &g.connect_timeout, s.connect_timeout)?;
    s.request_timeout = duration("request_timeout", &g.request_timeout, s.request_timeout)?;
    s.read_timeout = duration("read_timeout", &g.read_timeout, s.read_timeout)?;
    if let Some(r) = g.max_retries {
        s.max_retries = r;
    }
    for (key, list) in [
        ("user_attributes", &g.user_attributes),
        ("group_attributes", &g.group_attributes),
    ] {
        if let Some(bad) = list
            .iter()
            .find(|a| a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err((key, format!("{bad:?} is not a Graph property name")));
        }
    }
    Ok(s)
}

/// Check an LDAP source's keys and read its password and CA file. Errors name the key.
fn ldap_settings(
    raw: RawLdap,
    scope: ScopeMode,
    resolve: &dyn Fn(&Path) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::source::ldap::LdapSettings, (&'static str, String)> {
    use crate::source::ldap::{and_filters, LdapSettings};
    let url = url::Url::parse(raw.url.trim())
        .map_err(|e| ("url", format!("{:?} is not a URL: {e}", raw.url)))?;
    match url.scheme() {
        "ldap" => {}
        "ldaps" if raw.starttls => {
            return Err((
                "starttls",
                "starttls is for ldap:// URLs; ldaps:// is TLS from the start".into(),
            ))
        }
        "ldaps" => {}
        other => {
            return Err((
                "url",
                format!("unsupported scheme {other:?} (use ldap:// or ldaps://)"),
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(("url", "no host".into()));
    }
    if raw.user_base.trim().is_empty() {
        return Err(("user_base", "must not be empty".into()));
    }
    let mut s = LdapSettings::new(raw.flavour, raw.url.trim(), raw.user_base.trim());
    s.starttls = raw.starttls;
    if let Some(g) = &raw.group_base {
        if g.trim().is_empty() {
            return Err(("group_base", "must not be empty".into()));
        }
        s.group_base = g.trim().to_string();
    }
    let check_filter = |key: &'static str, f: &str| -> Result<String, (&'static str, String)> {
        let f = f.trim();
        let wrapped = and_filters(&[f]);
        if f.is_empty() || ldap3::parse_filter(&wrapped).is_err() {
            return Err((key, format!("{f:?} is not a valid LDAP filter")));
        }
        Ok(wrapped)
    };
    if let Some(f) = &raw.user_filter {
        s.user_filter = check_filter("user_filter", f)?;
    }
    if let Some(f) = &raw.group_filter {
        s.group_filter = check_filter("group_filter", f)?;
    }
    s.disabled_filter = raw
        .disabled_filter
        .as_deref()
        .map(|f| check_filter("disabled_filter", f))
        .transpose()?;
    s.assigned_users_filter = raw
        .assigned_users_filter
        .as_deref()
        .map(|f| check_filter("assigned_users_filter", f))
        .transpose()?;
    for (i, g) in raw.assigned_groups.iter().enumerate() {
        if !g.contains('=') {
            return Err((
                "assigned_groups",
                format!("[{i}] {g:?} is not a distinguished name"),
            ));
        }
    }
    s.assigned_groups = raw.assigned_groups.clone();
    if scope == ScopeMode::Assigned
        && s.assigned_groups.is_empty()
        && s.assigned_users_filter.is_none()
    {
        return Err((
            "assigned_groups",
            "LDAP has no app assignments: with scope = \"assigned\" set assigned_groups and/or assigned_users_filter (or scope = \"all\")".into(),
        ));
    }
    s.nested = raw.nested;
    let attr_name = |key: &'static str, name: &str| -> Result<String, (&'static str, String)> {
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-;.".contains(c))
        {
            return Err((key, format!("{name:?} is not an LDAP attribute name")));
        }
        Ok(name.to_string())
    };
    if let Some(a) = &raw.anchor_attribute {
        s.anchor_attribute = attr_name("anchor_attribute", a)?;
    }
    if let Some(a) = &raw.member_uid_attribute {
        s.member_uid_attribute = attr_name("member_uid_attribute", a)?;
    }
    for (key, table, map) in [
        ("attributes", &raw.attributes, &mut s.user_attributes),
        (
            "group_attributes",
            &raw.group_attributes,
            &mut s.group_attributes,
        ),
    ] {
        for (ours, theirs) in table {
            if ours.is_empty() || ["id", "members"].contains(&ours.as_str()) {
                return Err((
                    key,
                    format!("{ours:?} cannot be mapped (the anchor and members are read apart)"),
                ));
            }
            let names: Vec<&str> = match theirs {
                OneOrMany::One(n) => vec![n.as_str()],
                OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
            };
            let names: Vec<&str> = names.into_iter().filter(|n| !n.trim().is_empty()).collect();
            if names.is_empty() {
                map.remove(ours);
                continue;
            }
            let checked = names
                .into_iter()
                .map(|n| attr_name(key, n))
                .collect::<Result<Vec<_>, _>>()?;
            map.insert(ours.clone(), checked);
        }
    }
    if let Some(a) = &raw.enabled_attribute {
        let a = attr_name("enabled_attribute", a)?;
        s.user_attributes.insert("accountEnabled".into(), vec![a]);
    }
    if let Some(p) = raw.page_size {
        if p == 0 || p > 100_000 {
            return Err(("page_size", "must be between 1 and 100000".into()));
        }
        s.page_size = p;
    }
    if let Some(t) = &raw.timeout {
        s.timeout = parse_duration(t).map_err(|m| ("timeout", m))?;
    }
    if let Some(t) = &raw.full_read_interval {
        s.full_read_interval = parse_duration(t).map_err(|m| ("full_read_interval", m))?;
    }
    if let Some(f) = &raw.ca_file {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let p = resolve(f);
        let bytes = std::fs::read(&p)
            .map_err(|e| ("ca_file", format!("cannot read {}: {e}", p.display())))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("ca_file", format!("{} is not PEM: {e}", p.display())))?;
        if certs.is_empty() {
            return Err((
                "ca_file",
                format!("{} holds no PEM certificate", p.display()),
            ));
        }
        s.ca_certs = certs;
    }
    s.bind_dn = raw
        .bind_dn
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let password = read_password(
        raw.password_file.as_deref(),
        raw.password_env.as_deref(),
        raw.password_credential.as_deref(),
        resolve,
        env,
    )?;
    match (&s.bind_dn, password) {
        (Some(_), Some(p)) => s.password = Some(p),
        (Some(_), None) => {
            return Err((
                "password_file",
                "bind_dn needs a password: set password_file, password_env or password_credential"
                    .into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                "bind_dn",
                "a password is set but no bind_dn (leave both out for an anonymous bind)".into(),
            ))
        }
        (None, None) => {}
    }
    Ok(s)
}

/// The bind password from exactly one of `password_file`, `password_env` or
/// `password_credential` (a systemd credential); None when none is set.
fn read_password(
    file: Option<&Path>,
    var: Option<&str>,
    credential: Option<&str>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SecretString>, (&'static str, String)> {
    let keys = ("password_file", "password_env", "password_credential");
    let (key, raw) = match (file, var, credential) {
        (None, None, None) => return Ok(None),
        (Some(f), None, None) => {
            let p = resolve(f);
            let s = std::fs::read_to_string(&p)
                .map_err(|e| (keys.0, format!("cannot read {}: {e}", p.display())))?;
            (keys.0, s)
        }
        (None, Some(name), None) => {
            let s = env(name)
                .ok_or_else(|| (keys.1, format!("environment variable {name} is not set")))?;
            (keys.1, s)
        }
        (None, None, Some(name)) => {
            let dir = env("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                (
                    keys.2,
                    "CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the systemd unit)"
                        .to_string(),
                )
            })?;
            let p = Path::new(&dir).join(name);
            let s = std::fs::read_to_string(&p)
                .map_err(|e| (keys.2, format!("cannot read {}: {e}", p.display())))?;
            (keys.2, s)
        }
        _ => {
            return Err((
                keys.0,
                format!("set only one of {}, {} and {}", keys.0, keys.1, keys.2),
            ))
        }
    };
    // Only the line break a file ends with is dropped: a password may hold spaces.
    let secret = raw.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err((key, "the password is empty".into()));
    }
    Ok(Some(SecretString::from(secret.to_string())))
}

fn read_token(
    t: &RawTarget,
    resolve: &dyn Fn(&Path) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, (&'static str, String)> {
    let (key, raw) = match (&t.token_file, &t.token_env, &t.token_credential) {
        (Some(f), None, None) => {
            let p = resolve(f);
            let s = std::fs::read_to_string(&p)
                .map_err(|e| ("token_file", format!("cannot read {}: {e}", p.display())))?;
            ("token_file", s)
        }
        (None, Some(name), None) => {
            let s = env(name).ok_or_else(|| {
                (
                    "token_env",
                    format!("environment variable {name} is not set"),
                )
            })?;
            ("token_env", s)
        }
        (None, None, Some(name)) => {
            let dir = env("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                (
                    "token_credential",
                    "CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the systemd unit)"
                        .to_string(),
                )
            })?;
            let p = Path::new(&dir).join(name);
            let s = std::fs::read_to_string(&p).map_err(|e| {
                (
                    "token_credential",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            ("token_credential", s)
        }
        (None, None, None) => {
            return Err((
                "token_file",
                "no token: set token_file, token_env or token_credential".into(),
            ))
        }
        _ => {
            return Err((
                "token_file",
                "set only one of token_file, token_env and token_credential".into(),
            ))
        }
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err((key, "the token is empty".into()));
    }
    Ok(SecretString::from(token.to_string()))
}

#[cfg(test)]
mod graph_tests;
#[cfg(test)]
mod tests;
