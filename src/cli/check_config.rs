//! `provisiond check-config`: the configuration loaded; what it says, in a few lines.

use crate::config::Config;

/// Describe the loaded configuration (loading it is the check).
pub(crate) fn check_config(config: &Config) -> i32 {
    println!(
        "{}: OK, {} job(s)",
        config.path.display(),
        config.jobs.len()
    );
    println!("  state: {}", config.state_dir.display());
    for j in &config.jobs {
        println!(
            "  {}: {}; source {}; target {} ({} user and {} group mappings); scope {:?}",
            j.name,
            j.schedule,
            j.spec().source.describe(),
            j.target.base_url,
            j.mappings.users.len(),
            j.mappings.groups.len(),
            j.scope.mode
        );
    }
    0
}
