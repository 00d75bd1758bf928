//! The integration tests, as one crate: one link step and one test binary instead of one per
//! file. Each module is one former `tests/*.rs` file; the helpers they share are in
//! `support/`. Every server these tests talk to listens on 127.0.0.1.
//!
//! Nothing here changes process-wide state (environment variables, a global tracing
//! subscriber, the current directory): tests run as threads of one process, and what runs as
//! a separate process (the `provisiond` binary, slapd, scim2-server) is started as a child.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admin;
mod admin_http;
mod architecture;
mod binding;
mod cli;
mod cli_conventions;
mod cycle_faults;
mod cycle_sandbox;
mod daemon;
mod delta_cycles;
mod dry_run;
mod email;
mod graph_source;
mod hostile_input;
mod hostile_target;
mod initial_export;
mod ldap_ad;
mod ldap_source;
mod mappings_config;
mod notify;
mod ondemand;
mod provlog;
mod safety;
mod scim2_server;
mod skip_unchanged;
mod source_snapshots;
