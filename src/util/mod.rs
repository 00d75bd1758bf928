//! Leaf helpers shared by the configuration and the components that own their settings:
//! durations, secrets, cron expressions, located configuration errors, small URL checks and
//! text cut to a bound (`text`), and long CPU work inside async code (`blocking`).
//!
//! This module imports nothing from the rest of the crate, so every other module may use it
//! without creating an import cycle (the sources check their own settings with it while
//! `config` assembles them).

pub(crate) mod blocking;
pub(crate) mod clock;
pub(crate) mod config_error;
pub(crate) mod cron;
pub(crate) mod duration;
pub(crate) mod fs;
pub(crate) mod net;
pub(crate) mod secret;
pub(crate) mod text;

pub(crate) use blocking::off_worker;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config_error::ConfigError;
pub(crate) use config_error::{line_col, CheckContext};
pub(crate) use duration::{format_duration, parse_duration};
pub(crate) use fs::{create_private_dir_all, write_private_file};
pub(crate) use net::check_http_scheme;
pub(crate) use secret::SecretKeys;
