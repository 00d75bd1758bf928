//! A job's preset: a built-in one by name, or a preset file.

use crate::mapping::{PresetFile, BUILT_IN_PRESETS};
use std::path::{Path, PathBuf};

/// Why a job's preset cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PresetError {
    /// A `*.toml` preset that cannot be read.
    #[error("cannot read preset file {}: {error}", path.display())]
    Read {
        /// The preset file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Neither a built-in name nor a `*.toml` path.
    #[error("unknown preset {name:?} (built in: {built_in}; or a path to a .toml preset file)")]
    Unknown {
        /// The name given.
        name: String,
        /// The built-in presets' names, comma-separated.
        built_in: String,
    },
    /// The preset's text is not a valid preset.
    #[error("preset {name:?} is invalid: {error}")]
    Invalid {
        /// The name given.
        name: String,
        /// What is wrong.
        error: toml::de::Error,
    },
}

/// A built-in preset by name (`generic-scim` when none), or a preset file (`*.toml`, relative
/// to the config file: `resolve` makes it so).
pub(super) fn load_preset(
    name: Option<&str>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<PresetFile, PresetError> {
    let name = name.unwrap_or("generic-scim");
    let text = match BUILT_IN_PRESETS.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => (*text).to_string(),
        None if name.ends_with(".toml") => {
            let path = resolve(Path::new(name));
            std::fs::read_to_string(&path).map_err(|error| PresetError::Read { path, error })?
        }
        None => {
            let names: Vec<&str> = BUILT_IN_PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(PresetError::Unknown {
                name: name.to_string(),
                built_in: names.join(", "),
            });
        }
    };
    toml::from_str(&text).map_err(|error| PresetError::Invalid {
        name: name.to_string(),
        error,
    })
}
