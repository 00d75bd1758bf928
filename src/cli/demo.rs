//! `provisiond demo`: the whole cycle, visibly, on a fresh machine: a sandbox SCIM server on a
//! free loopback port, an initial cycle from `config/examples/directory.json`, a change to the
//! directory, the incremental cycle that follows, and a no-change cycle.

use super::out::{out, outln};
use super::render::render_report;
use crate::config::{Config, ConfigError};
use crate::daemon::jobs::{run_job_cycle, JobRuntime};
use crate::sandbox::{self, SandboxConfig, SandboxError};
use crate::state::{SledStore, StateError};
use crate::target::TargetError;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const EXAMPLE_DIRECTORY: &str = include_str!("../../config/examples/directory.json");
const TOKEN: &str = "demo-token";

/// Why the demo could not run (its cycles' failures are in their reports instead).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The sandbox did not start.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The demo's files could not be written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The example directory is not JSON (it is compiled in: a build problem).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The demo's configuration did not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state store did not open.
    #[error(transparent)]
    State(#[from] StateError),
    /// The demo's target settings do not make a client.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The demo's configuration has no job.
    #[error("the demo configuration has no job")]
    NoJob,
}

/// Run the demo; the exit code is the last cycle's.
pub(crate) async fn demo() -> Result<i32, DemoError> {
    let handle = sandbox::spawn(
        ([127, 0, 0, 1], 0).into(),
        SandboxConfig {
            token: Some(TOKEN.to_string().into()),
            ..Default::default()
        },
    )
    .await?;
    let guard = TempDir::new()?;
    let dir = guard.0.clone();
    let directory_path = dir.join("directory.json");
    std::fs::write(&directory_path, EXAMPLE_DIRECTORY)?;
    std::fs::write(dir.join("token"), TOKEN)?;
    let config_text = format!(
        "state_dir = \"state\"\n[[jobs]]\nname = \"demo\"\n[jobs.source]\nkind = \"file\"\npath = \"directory.json\"\n\
         [jobs.target]\nurl = \"{}\"\ntoken_file = \"token\"\n",
        handle.base_url()
    );
    let config_path = dir.join("provisiond.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = Config::load(&config_path)?;
    let store = SledStore::open(&config.state_dir.join("state"))?;
    let job = config.jobs.first().cloned().ok_or(DemoError::NoJob)?;
    let runtime = JobRuntime::new(job)?;
    let stop = CancellationToken::new();

    outln!("provisiond demo");
    outln!("  sandbox SCIM server: {} (in memory)", handle.base_url());
    outln!(
        "  directory:           {} (copy of config/examples/directory.json)",
        directory_path.display()
    );
    outln!("  state:               {}", config.state_dir.display());
    outln!();
    outln!("== 1. Initial cycle: every assigned user and group is matched or created ==");
    let report = run_job_cycle(&runtime, &store, false, None, &stop).await;
    out!("{}", render_report(&report));
    show_target(&handle);
    if super::out::closed() {
        // Nobody reads on (`provisiond demo | head -5`): stop here; the guard cleans up.
        handle.shutdown().await;
        return Ok(super::exit::OK);
    }

    outln!();
    outln!("== 2. The directory changes ==");
    let mut d: Value = serde_json::from_str(EXAMPLE_DIRECTORY)?;
    change_directory(&mut d);
    std::fs::write(&directory_path, serde_json::to_vec_pretty(&d)?)?;
    outln!("  - Carol Danvers is promoted: jobTitle \"Account Executive\" -> \"Sales Director\"");
    outln!("  - Dave Bowman leaves the Engineering group (and so the app's scope)");
    outln!("  - Erin O'Brien is deleted from the directory");
    outln!("  - Frank Castle joins and is assigned to the app");
    outln!();
    outln!("== 3. Incremental cycle: only what changed is sent ==");
    let mut report = run_job_cycle(&runtime, &store, false, None, &stop).await;
    report.actions.clear();
    out!("{}", render_report(&report));
    show_target(&handle);

    outln!();
    outln!("== 4. Nothing changed: no writing request at all ==");
    let report = run_job_cycle(&runtime, &store, false, None, &stop).await;
    out!("{}", render_report(&report));

    outln!();
    outln!("Run it against your own app: see README.md (\"Configure it for Robin, end to end\").");
    handle.shutdown().await;
    drop(guard);
    Ok(super::cycle_exit(report.summary.status))
}

/// The demo's directory, removed when dropped: on every way out, errors included.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, std::io::Error> {
        let dir = std::env::temp_dir().join(format!("provisiond-demo-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn change_directory(d: &mut Value) {
    let carol = "0c6b4b1e-5c0a-4bd8-9b59-1d1a6c1c0003";
    let dave = "0c6b4b1e-5c0a-4bd8-9b59-1d1a6c1c0004";
    let erin = "0c6b4b1e-5c0a-4bd8-9b59-1d1a6c1c0005";
    let frank = "0c6b4b1e-5c0a-4bd8-9b59-1d1a6c1c0010";
    if let Some(users) = d["users"].as_array_mut() {
        for u in users.iter_mut() {
            if u["id"] == carol {
                u["jobTitle"] = "Sales Director".into();
            }
        }
        users.retain(|u| u["id"] != erin);
        users.push(serde_json::json!({"id": frank, "userPrincipalName": "frank@contoso.com", "mail": "frank@contoso.com",
            "givenName": "Frank", "surname": "Castle", "displayName": "Frank Castle", "accountEnabled": true,
            "jobTitle": "Engineer", "department": "R&D", "mailNickname": "frank"}));
    }
    if let Some(groups) = d["groups"].as_array_mut() {
        for g in groups.iter_mut() {
            if let Some(m) = g["members"].as_array_mut() {
                m.retain(|x| x != dave);
            }
        }
    }
    if let Some(a) = d["assignments"].as_array_mut() {
        a.retain(|x| x["principalId"] != erin);
        a.push(serde_json::json!({"principalId": frank, "role": "User"}));
    }
}

fn show_target(handle: &sandbox::SandboxHandle) {
    let users = handle.users();
    let name_of = |id: &str| {
        users
            .iter()
            .find(|u| u["id"] == id)
            .and_then(|u| u["userName"].as_str())
            .unwrap_or(id)
            .to_string()
    };
    outln!("  In the app now:");
    outln!(
        "    {:<22} {:<16} {:<7} {:<20} manager",
        "userName",
        "displayName",
        "active",
        "title"
    );
    let mut sorted = users.clone();
    sorted.sort_by(|a, b| a["userName"].as_str().cmp(&b["userName"].as_str()));
    for u in &sorted {
        let manager = u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"]
            ["value"]
            .as_str()
            .map(name_of)
            .unwrap_or_default();
        outln!(
            "    {:<22} {:<16} {:<7} {:<20} {}",
            u["userName"].as_str().unwrap_or(""),
            u["displayName"].as_str().unwrap_or(""),
            u["active"].to_string(),
            u["title"].as_str().unwrap_or(""),
            manager
        );
    }
    for g in handle.groups() {
        let members: Vec<String> = g["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|x| x["value"].as_str())
                    .map(name_of)
                    .collect()
            })
            .unwrap_or_default();
        outln!(
            "    group {:<16} members: {}",
            g["displayName"].as_str().unwrap_or(""),
            members.join(", ")
        );
    }
}
