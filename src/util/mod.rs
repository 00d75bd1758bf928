//! Leaf helpers shared by the configuration and the components that own their settings:
//! durations, secrets, cron expressions, located configuration errors and small URL checks.
//!
//! This module imports nothing from the rest of the crate, so every other module may use it
//! without creating an import cycle (the sources check their own settings with it while
//! `config` assembles them).

pub mod clock;
pub mod config_error;
pub mod cron;
pub mod duration;
pub mod net;
pub mod secret;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config_error::{line_col, CheckContext, ConfigError};
pub use duration::{format_duration, parse_duration, DurationError};
pub use net::is_loopback;
pub use secret::{SecretError, SecretKeys, SecretRef, SeveralSecrets};
