//! Provisioning logs: one entry per object action, as Entra's provisioning logs
//! (Graph's `provisioningObjectSummary`). The entry type is the contract between the cycle
//! and on-demand runs that write entries and `provisiond logs` that reads them.
//!
//! `store.rs` keeps them (hourly JSON-lines segments under `<state_dir>/logs/<job>/`, the
//! writer, retention), `query.rs` reads them back with filters, `csv.rs` is Entra's
//! three-file CSV download.

pub(crate) mod csv;
pub(crate) mod entry;
pub(crate) mod query;
pub(crate) mod store;

pub use csv::write as write_csv;
pub use entry::{
    Entry, ErrorInfo, Identity, InitiatedBy, ModifiedProperty, ProvisioningAction, Status,
    StatusInfo, Step, StepType, SystemInfo,
};
pub use query::{query, Found, Query};
pub(crate) use store::{parse_size, trace_entry, LogTarget};
pub use store::{prune, LogError, LogSettings, Pruned, Writer};
