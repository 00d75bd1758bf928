//! provisiond: keeps a SaaS application's users and groups in step with a directory over
//! SCIM 2.0, the way the Microsoft Entra ID provisioning service does for gallery apps.
//!
//! See `ARCHITECTURE.md` for the pipeline and its invariants.

pub mod attrs;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod daemon;
mod http;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod sandbox;
pub mod scope;
pub mod source;
pub mod state;
pub mod summary;
pub mod target;
pub mod util;
