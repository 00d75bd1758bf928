//! Provisioning logs: one entry per object action, as Entra's provisioning logs
//! (Graph's `provisioningObjectSummary`). The entry type is the contract between the cycle
//! and on-demand runs that write entries and `provisiond logs` that reads them.

pub(crate) mod entry;

pub use entry::{
    Entry, ErrorInfo, Identity, InitiatedBy, ModifiedProperty, ProvisioningAction, Status,
    StatusInfo, Step, StepType, SystemInfo,
};
