//! The top-level file and one `[[jobs]]` entry as written, before any check. Each
//! component's own table (source, target) is that component's raw type.

use crate::mapping::MappingSpec;
use crate::notify::config::{RawAddresses, RawSmtp};
use crate::plan::NullPolicy;
use crate::scope::{FilterSpec, ScopeMode};
use crate::source::graph::config::RawGraph;
use crate::source::ldap::config::RawLdap;
use crate::target::config::RawTarget;
use serde::Deserialize;
use std::path::PathBuf;

use super::LogFormat;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) control_socket: Option<PathBuf>,
    /// How long provisioning-log entries are kept (`30d`).
    pub(super) log_retention: Option<String>,
    /// The provisioning logs' size cap (`2GiB`).
    pub(super) log_max_size: Option<String>,
    /// `[admin]`: the admin HTTP endpoint.
    #[serde(default)]
    pub(super) admin: super::admin::RawAdmin,
    /// `[smtp]`: the mail server of notification emails.
    pub(super) smtp: Option<RawSmtp>,
    #[serde(default)]
    pub(super) jobs: Vec<RawJob>,
}

/// One `[[jobs]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) name: String,
    pub(super) interval: Option<String>,
    pub(super) cron: Option<String>,
    #[serde(default)]
    pub(super) scope: ScopeMode,
    pub(super) excluded_roles: Option<Vec<String>>,
    #[serde(default)]
    pub(super) null_values: NullPolicy,
    pub(super) preset: Option<String>,
    pub(super) source: RawSource,
    pub(super) target: RawTarget,
    #[serde(default)]
    pub(super) mappings: RawMappings,
    #[serde(default)]
    pub(super) scoping: RawScoping,
    pub(super) delete_threshold: Option<u64>,
    pub(super) delete_threshold_percent: Option<f64>,
    pub(super) quarantine: Option<RawQuarantine>,
    /// Entra's "Notification Email": an address or a list.
    pub(super) notification_email: Option<RawAddresses>,
    /// Entra's "Send an email notification when a failure occurs".
    pub(super) notify_on_failure: Option<bool>,
    pub(super) digest_interval: Option<String>,
}

/// `[jobs.quarantine]`: the escrow thresholds that quarantine a job.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuarantine {
    pub(super) min_failures: Option<u64>,
    pub(super) failure_percent: Option<f64>,
    pub(super) base_escrows: Option<u64>,
    pub(super) total_escrows: Option<u64>,
}

/// `[[jobs.scoping.users]]` and `[[jobs.scoping.groups]]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScoping {
    #[serde(default)]
    pub(super) users: Vec<FilterSpec>,
    #[serde(default)]
    pub(super) groups: Vec<FilterSpec>,
}

/// `[jobs.source]`, by `kind`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawSource {
    /// A JSON directory file.
    File { path: PathBuf },
    /// An Entra ID tenant through Microsoft Graph (`docs/graph.md`).
    Graph(Box<RawGraph>),
    /// An LDAP directory (`docs/ldap.md`).
    Ldap(Box<RawLdap>),
}

/// `[[jobs.mappings.users]]` and `[[jobs.mappings.groups]]`, on top of the preset's.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMappings {
    #[serde(default)]
    pub(super) users: Vec<MappingSpec>,
    #[serde(default)]
    pub(super) groups: Vec<MappingSpec>,
}
