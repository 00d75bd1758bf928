//! What the Graph benchmarks (`delta_bench`, `graph_restart_bench`) share: the users they
//! give the Graph emulator, and the emulator and sandbox they start in-process.

use graph_emulator::{GraphEmulatorConfig, GraphHandle};
use provisiond::{spawn_sandbox, SandboxConfig, SandboxHandle};
use secrecy::SecretString;
use serde_json::{json, Value};

/// The sandbox's bearer token.
pub const TOKEN: &str = "bench-token";

/// The Entra id of the benchmark's user `i`.
pub fn user_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The benchmark's user `i`, as Graph returns a user.
pub fn user(i: usize) -> Value {
    json!({
        "id": user_id(i),
        "userPrincipalName": format!("user{i}@contoso.com"),
        "mail": format!("user{i}@contoso.com"),
        "givenName": format!("Given{i}"),
        "surname": format!("Surname{i}"),
        "displayName": format!("Given{i} Surname{i}"),
        "accountEnabled": true,
        "jobTitle": "Engineer",
        "department": format!("Dept{}", i % 50),
        "mailNickname": format!("user{i}"),
    })
}

/// The Graph emulator (pages of 999) holding `users` users, and an empty sandbox that takes
/// [`TOKEN`], both on 127.0.0.1.
pub async fn start(users: usize) -> Result<(GraphHandle, SandboxHandle), String> {
    let config = GraphEmulatorConfig {
        page_size: 999,
        ..GraphEmulatorConfig::default()
    };
    let g = graph_emulator::spawn("127.0.0.1:0".parse().map_err(|_| "addr")?, config)
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..users {
        g.put_user(user(i));
    }
    let h = spawn_sandbox(
        "127.0.0.1:0".parse().map_err(|_| "addr")?,
        SandboxConfig {
            token: Some(SecretString::from(TOKEN)),
            ..SandboxConfig::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok((g, h))
}
