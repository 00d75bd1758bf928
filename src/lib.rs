//! provisiond: keeps a SaaS application's users and groups in step with a directory over
//! SCIM 2.0, the way the Microsoft Entra ID provisioning service does for gallery apps.
//!
//! See `ARCHITECTURE.md` for the pipeline and its invariants.

pub mod mapping;
