//! The SCIM 2.0 client that the export stage uses to talk to the target application.
//!
//! It speaks the requests the Entra ID provisioning service sends (see
//! `shared/docs/entra-provisioning.md`, section 2): `eq` filter queries for matching,
//! `POST`, `PATCH` (RFC 7644 or Entra's legacy rendering), `DELETE`, and Test Connection.
//! Every request goes through one retry loop that bounds concurrency across clones,
//! honours `Retry-After`, backs off on 5xx and transport failures, and never blindly
//! retries a `POST` that may already have been processed.

mod client;
mod connection;
mod dry_run;
mod error;
mod filter;
pub(crate) mod patch;
mod settings;

#[cfg(test)]
mod tests;

pub use client::{RequestCounts, ScimClient};
pub use connection::{ConnectionProblem, ConnectionReport};
pub use dry_run::{DryRunTarget, Target};
pub use error::TargetError;
pub use filter::eq_filter;
pub use patch::{PatchKind, PatchOp, PATCH_OP_SCHEMA};
pub use settings::{PatchStyle, TargetSettings};
