//! provisiond: keeps a SaaS application's users and groups in step with a directory over
//! SCIM 2.0, the way the Microsoft Entra ID provisioning service does for gallery apps.
//!
//! See `ARCHITECTURE.md` for the pipeline and its invariants.
//!
//! Every module is private; what the binary, the integration tests and the benchmarks use is
//! re-exported below, by purpose. `unreachable_pub` keeps the rest `pub(crate)`, so a reader
//! knows that anything `pub` inside is part of this list.

#![deny(unreachable_pub)]

mod attrs;
mod cli;
mod config;
mod cycle;
mod daemon;
mod http;
mod mapping;
mod model;
mod notify;
mod plan;
mod provlog;
mod sandbox;
mod scope;
mod source;
mod state;
mod summary;
mod target;
mod util;

// The command line: the binary parses it and hands over logging and the stop signal.
pub use cli::{dispatch, Cli};
pub use config::{AdminSettings, Config, LogFormat};
pub use util::ConfigError;

// The daemon, driven in-process with a shutdown future of the caller's, and its control
// socket.
pub use daemon::control::{
    request as control_request, Request as ControlRequest, Response as ControlResponse,
};
pub use daemon::{run as run_daemon, AdminHttpError, DaemonError};

// One cycle of one job, with the pieces a job is made of.
pub use cycle::ondemand::{OnDemandRequest, OnDemandResult};
pub use cycle::{run_cycle, CycleOptions, CycleReport, JobSpec};
pub use mapping::{MappingSpec, Mappings, PresetFile, GENERIC_SCIM_PRESET};
pub use model::{Changes, Directory, ObjectType, SourceObject};
pub use plan::NullPolicy;
pub use scope::{evaluate as evaluate_scope, OutOfScope, ScopeMode, ScopeSettings};
pub use summary::{
    CycleKind, CycleStatus, CycleSummary, GroupCounts, MembershipCounts, RequestCounts, UserCounts,
};

// Provisioning logs: one entry per object action (Graph's provisioningObjectSummary).
pub use provlog::{
    Entry as ProvisioningLogEntry, ErrorInfo as ProvisioningErrorInfo,
    Identity as ProvisionedIdentity, InitiatedBy, ModifiedProperty, ProvisioningAction,
    Status as ProvisioningStatus, StatusInfo as ProvisioningStatusInfo, Step as ProvisioningStep,
    StepType as ProvisioningStepType, SystemInfo as ProvisioningSystem,
};
// Their store: the writer (cycles, on-demand runs, the benchmark), queries, retention, CSV.
/// A cycle's provisioning-log sink (`CycleOptions::log`).
pub use cycle::provlog::LogSink as ProvisioningLogSink;
pub use provlog::{
    prune as prune_provisioning_logs, query as query_provisioning_logs,
    write_csv as write_provisioning_log_csv, Found as ProvisioningLogFound,
    LogError as ProvisioningLogError, LogSettings as ProvisioningLogSettings,
    Pruned as ProvisioningLogsPruned, Query as ProvisioningLogQuery,
    Writer as ProvisioningLogWriter,
};

// Sources.
pub use source::file::{parse_export, FileSource};
pub use source::graph::{
    ClientCertificate, GraphCredential, GraphSettings, GraphSource, Selection,
};
pub use source::ldap::{Flavour, LdapError, LdapSettings, LdapSource, Nested};
pub use source::{OneQuery, OneRead, SnapshotError, Source, SourceError, SourceRead};

// The state store.
pub use state::{
    EscrowAction, EscrowEntry, MemoryStore, Quarantine, QuarantineError, QuarantineReason,
    SledStore, StagedAction, StagedDelete, StateError, StateStore,
};

// Time, injectable so the safety rules' hours and days can be stepped through in tests.
pub use util::{Clock, ManualClock, SystemClock};

// The SCIM target.
pub use target::{
    DryRunTarget, PatchOp, PatchStyle, ScimClient, Target, TargetError, TargetSettings,
};

// The SCIM sandbox with fault injection (`provisiond sandbox`, the demo, the tests).
pub use sandbox::{
    spawn as spawn_sandbox, DropWhen, FaultAction, FaultRule,
    RequestCounts as SandboxRequestCounts, SandboxConfig, SandboxHandle,
};
