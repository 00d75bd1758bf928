//! One `[[jobs]]` entry: its checked form and the check, which calls each component's own.

use super::preset::load_preset;
use super::raw::{RawJob, RawSource};
use super::ConfigError;
use crate::cycle::SafetySettings;
use crate::mapping::{MappingError, Mappings};
use crate::plan::NullPolicy;
use crate::scope::{FilterSpec, ScopeSettings, ScopingFilter};
use crate::source::graph::{GraphSettings, GraphSource, Selection};
use crate::target::TargetSettings;
use crate::util::cron::CronSchedule;
use crate::util::{format_duration, parse_duration, CheckContext};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// `delete_threshold`, `delete_threshold_percent` and `[jobs.quarantine]`.
    pub safety: SafetySettings,
    /// False when loaded by `Config::load_without_secrets`: the secrets hold a placeholder,
    /// and [`JobConfig::require_secrets`] keeps such a job from reaching a target or source.
    pub secrets_read: bool,
    /// `notification_email` and its keys; `None` when the job has no address.
    pub notify: Option<crate::notify::JobNotify>,
    /// Where its provisioning logs go (`state_dir`, `log_retention`, `log_max_size`): set
    /// by [`super::Config`] from the top-level keys.
    pub(crate) logs: Option<crate::provlog::LogTarget>,
}

impl JobConfig {
    /// Refuses a job whose secrets were not read: its target token or source password is a
    /// placeholder, which must never be sent (a read-only command's config reaching a client
    /// would be a bug; this makes it a clear error, not a request with a wrong token).
    pub(crate) fn require_secrets(&self) -> Result<(), crate::target::TargetError> {
        if self.secrets_read {
            Ok(())
        } else {
            Err(crate::target::TargetError::Settings {
                reason: format!(
                    "job {}: the configuration was loaded without its secrets",
                    self.name
                ),
            })
        }
    }

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
            safety: self.safety.clone(),
        }
    }
}

/// Check `jobs[i]`; `earlier` are the jobs checked before it (names must differ). Relative
/// paths resolve from the directory of `file`; `env` looks up environment variables;
/// `defer_secrets` leaves text secrets unread (see `Config::load_without_secrets`).
pub(super) fn check(
    i: usize,
    rj: RawJob,
    earlier: &[JobConfig],
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    defer_secrets: bool,
) -> Result<JobConfig, ConfigError> {
    let job = CheckContext {
        file,
        table: format!("jobs[{i}]"),
        env,
        defer_secrets,
    };
    let component = |table: &str| CheckContext {
        file,
        table: format!("jobs[{i}].{table}"),
        env,
        defer_secrets,
    };
    let err = |key: &str, message: String| job.error(key, message);
    if rj.name.is_empty()
        || !rj
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(err(
            "name",
            format!(
                "{:?} is not a valid job name (letters, digits, - _ .)",
                rj.name
            ),
        ));
    }
    if earlier.iter().any(|j| j.name == rj.name) {
        return Err(err("name", format!("job name {:?} is used twice", rj.name)));
    }
    let schedule = match (&rj.interval, &rj.cron) {
        (Some(_), Some(_)) => {
            return Err(err("cron", "set either interval or cron, not both".into()))
        }
        (None, Some(c)) => {
            CronSchedule::parse(c).map_err(|e| err("cron", e.to_string()))?;
            Schedule::Cron(c.clone())
        }
        (Some(s), None) => {
            let d = parse_duration(s).map_err(|e| err("interval", e.to_string()))?;
            // Past a year it is surely a typo, and far-future times overflow clocks.
            if d > Duration::from_secs(366 * 86400) {
                return Err(err("interval", format!("{s:?} is longer than a year")));
            }
            Schedule::Interval(d)
        }
        (None, None) => Schedule::Interval(Duration::from_secs(40 * 60)),
    };
    let safety = check_safety(&rj, &err)?;
    let notify = crate::notify::config::check_job(
        rj.notification_email.clone(),
        rj.notify_on_failure,
        rj.digest_interval.as_deref(),
        &job,
    )?;
    // Graph's `$select` depends on the mappings: completed once they are built.
    let mut graph_extras = None;
    let source_ctx = component("source");
    let mut source = match rj.source {
        RawSource::File { path } => {
            let p = source_ctx.resolve(&path);
            if !p.is_file() {
                return Err(
                    source_ctx.error("path", format!("{} is not a readable file", p.display()))
                );
            }
            SourceConfig::File { path: p }
        }
        RawSource::Graph(g) => {
            let (settings, extras) = crate::source::graph::config::check(*g, &source_ctx)?;
            graph_extras = Some(extras);
            SourceConfig::Graph(Box::new(settings))
        }
        RawSource::Ldap(raw) => {
            let settings = crate::source::ldap::config::check(*raw, rj.scope, &source_ctx)?;
            SourceConfig::Ldap(Box::new(settings))
        }
    };
    let preset = load_preset(rj.preset.as_deref(), &|p| job.resolve(p))
        .map_err(|e| err("preset", e.to_string()))?;
    let preset_url = preset.target.as_ref().and_then(|p| p.url.as_deref());
    let (settings, member_batch) =
        crate::target::config::check(rj.target, preset_url, &component("target"))?;
    let mappings = Mappings::build(&preset, &rj.mappings.users, &rj.mappings.groups).map_err(
        |e: MappingError| {
            let list = match e.object_type {
                crate::model::ObjectType::User => "users",
                crate::model::ObjectType::Group => "groups",
            };
            err(&format!("mappings.{list}"), e.to_string())
        },
    )?;
    let compile = |list: &str, specs: Vec<FilterSpec>| -> Result<Vec<ScopingFilter>, ConfigError> {
        specs
            .into_iter()
            .enumerate()
            .map(|(f, spec)| {
                ScopingFilter::compile(spec)
                    .map_err(|m| err(&format!("scoping.{list}[{f}]"), m.to_string()))
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
    if let (SourceConfig::Graph(g), Some(extras)) = (&mut source, graph_extras) {
        g.select =
            Selection::for_job(&mappings, &scope, &extras.users, &extras.groups).map_err(|e| {
                let list = match e.object_type {
                    crate::model::ObjectType::User => "users",
                    crate::model::ObjectType::Group => "groups",
                };
                err(&format!("mappings.{list}"), e.to_string())
            })?;
    }
    Ok(JobConfig {
        name: rj.name,
        schedule,
        scope,
        null_values: rj.null_values,
        mappings,
        source,
        target: settings,
        member_batch,
        safety,
        secrets_read: !defer_secrets,
        notify,
        logs: None,
    })
}

/// `delete_threshold`, `delete_threshold_percent` and `[jobs.quarantine]`.
fn check_safety(
    rj: &RawJob,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<SafetySettings, ConfigError> {
    let percent = |key: &str, v: f64| -> Result<f64, ConfigError> {
        if v.is_finite() && v > 0.0 && v <= 100.0 {
            Ok(v)
        } else {
            Err(err(
                key,
                format!("{v} is not a percentage above 0 and at most 100"),
            ))
        }
    };
    let mut safety = SafetySettings::default();
    if let Some(n) = rj.delete_threshold {
        safety.deletions.count = n;
    }
    if let Some(p) = rj.delete_threshold_percent {
        safety.deletions.percent = Some(percent("delete_threshold_percent", p)?);
    }
    if let Some(q) = &rj.quarantine {
        let s = &mut safety.quarantine;
        if let Some(n) = q.min_failures {
            s.min_failures = n;
        }
        if let Some(p) = q.failure_percent {
            s.failure_percent = percent("quarantine.failure_percent", p)?;
        }
        if let Some(n) = q.base_escrows {
            s.base_escrows = n;
        }
        if let Some(n) = q.total_escrows {
            s.total_escrows = n;
        }
    }
    Ok(safety)
}
