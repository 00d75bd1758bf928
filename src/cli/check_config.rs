//! `provisiond check-config`: the configuration loaded; what it says, in a few lines.

use super::out::outln;
use crate::config::Config;

/// Describe the loaded configuration (loading it is the check).
pub(crate) fn check_config(config: &Config) -> i32 {
    outln!(
        "{}: OK, {} job(s)",
        config.path.display(),
        config.jobs.len()
    );
    outln!("  state: {}", config.state_dir.display());
    for j in &config.jobs {
        outln!(
            "  {}: {}; source {}; target {} ({} user and {} group mappings); scope {}",
            j.name,
            j.schedule,
            j.spec().source.describe(),
            j.target.base_url,
            j.mappings.users.len(),
            j.mappings.groups.len(),
            // As the config spells it (`assigned`), not the Debug form.
            serde_json::to_value(j.scope.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        );
    }
    0
}
