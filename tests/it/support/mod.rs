//! Helpers shared by the integration tests.
//!
//! - [`common`]: in-process fixtures: a directory file, a job reading it, the SCIM sandbox, a
//!   client with tiny backoffs, cycle runners and sandbox inspection.
//! - [`cli`]: driving the real `provisiond` binary (`cli`, `daemon`).
//! - [`certs`]: self-signed certificates made with `openssl`.
//! - [`hostile`]: a scripted hostile SCIM target (endless bodies, bad ids, echoing headers).
//! - [`fault_proxy`]: a fault-injecting HTTP proxy in front of a real SCIM server.
//! - [`openmetrics`]: a GET for the admin endpoint and a strict OpenMetrics text parser.
//! - [`slapd`]: a throwaway OpenLDAP server (also used by `examples/ldap_bench.rs`).
//! - [`smtp`]: a real SMTP server (PyPI aiosmtpd) with STARTTLS and AUTH, for the emails.

pub mod certs;
pub mod cli;
pub mod common;
pub mod fault_proxy;
pub mod hostile;
pub mod openmetrics;
pub mod slapd;
pub mod smtp;

/// A port on 127.0.0.1 with nothing listening (bound, read, released): for an unreachable
/// server, or for a child process to listen on.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
