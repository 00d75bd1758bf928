//! Helpers shared by the integration tests.
//!
//! - [`common`]: in-process fixtures: a directory file, a job reading it, the SCIM sandbox, a
//!   client with tiny backoffs, cycle runners and sandbox inspection.
//! - [`cli`]: driving the real `provisiond` binary (`cli`, `daemon`).
//! - [`certs`]: self-signed certificates made with `openssl`.
//! - [`slapd`]: a throwaway OpenLDAP server (also used by `examples/ldap_bench.rs`).

pub mod certs;
pub mod cli;
pub mod common;
pub mod slapd;
