//! The provisioning-log benchmark (a report, not a timed test):
//!
//! ```sh
//! cargo run --release --example logs_bench -- /work/tmp/provlog/bench           # 1,000,000 entries
//! cargo run --release --example logs_bench -- /work/tmp/provlog/bench 200000    # another size
//! ```
//!
//! Writes the entries through the real writer (`provisiond::ProvisioningLogWriter`) into
//! `<DIR>/logs/robin/`, spread evenly over the last 24 hours (one hourly segment per hour),
//! each shaped like a cycle's create (five steps, ten modified properties; 1% failures), then
//! times the queries `provisiond logs` runs, through the same library function. The directory
//! is deleted at the end (it holds about 2.3 GB for a million entries). Each query runs three
//! times; the median is reported with the three times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use provisiond::{
    query_provisioning_logs, InitiatedBy, ModifiedProperty, ProvisionedIdentity,
    ProvisioningAction, ProvisioningErrorInfo, ProvisioningLogEntry, ProvisioningLogQuery,
    ProvisioningLogWriter, ProvisioningStatus, ProvisioningStatusInfo, ProvisioningStep,
    ProvisioningStepType, ProvisioningSystem,
};
use std::path::PathBuf;
use std::time::Instant;

fn step(name: &str, ty: ProvisioningStepType, description: String) -> ProvisioningStep {
    ProvisioningStep {
        name: name.into(),
        provisioning_step_type: ty,
        status: ProvisioningStatus::Success,
        description,
        details: [("SourceAnchor".to_string(), "x".to_string())].into(),
    }
}

fn entry(i: usize, at: chrono::DateTime<chrono::Utc>, cycle: &str) -> ProvisioningLogEntry {
    let name = format!("user{i:07}@contoso.test");
    let failed = i % 100 == 0;
    ProvisioningLogEntry {
        id: uuid::Uuid::new_v4().to_string(),
        activity_date_time: at,
        change_id: uuid::Uuid::new_v4().to_string(),
        cycle_id: cycle.to_string(),
        job_id: "robin".into(),
        duration_in_milliseconds: 12,
        initiated_by: InitiatedBy::system(),
        provisioning_action: ProvisioningAction::Create,
        provisioning_status_info: ProvisioningStatusInfo {
            status: if failed {
                ProvisioningStatus::Failure
            } else {
                ProvisioningStatus::Success
            },
            error_information: failed.then(|| ProvisioningErrorInfo {
                error_code: "EntryConflict".into(),
                reason: "409 Conflict: userName already exists".into(),
                additional_details: None,
                error_category: Some("nonServiceFailure".into()),
                recommended_action: None,
            }),
        },
        provisioning_steps: vec![
            step(
                "EntryImport",
                ProvisioningStepType::Import,
                format!("Received User '{name}' from file"),
            ),
            step(
                "EntrySynchronizationScoping",
                ProvisioningStepType::Scoping,
                "In scope".into(),
            ),
            step(
                "EntrySynchronizationMatching",
                ProvisioningStepType::Matching,
                format!("No matching User in the target (matched on userName = {name})"),
            ),
            step(
                "EntrySynchronizationProcessing",
                ProvisioningStepType::Processing,
                "Determined the action: create".into(),
            ),
            step(
                "EntryExportAdd",
                ProvisioningStepType::Export,
                format!("Created in the target (t-{i})"),
            ),
        ],
        modified_properties: [
            "userName",
            "displayName",
            "name.givenName",
            "name.familyName",
            "emails[type eq \"work\"].value",
            "title",
            "department",
            "active",
            "externalId",
            "preferredLanguage",
        ]
        .iter()
        .map(|p| ModifiedProperty {
            display_name: p.to_string(),
            old_value: None,
            new_value: Some(format!("{p}-{i}")),
        })
        .collect(),
        source_identity: ProvisionedIdentity {
            id: format!("00000000-0000-4000-8000-{i:012}"),
            display_name: name.clone(),
            identity_type: "User".into(),
        },
        target_identity: ProvisionedIdentity {
            id: format!("t-{i}"),
            display_name: name,
            identity_type: "User".into(),
        },
        source_system: ProvisioningSystem {
            display_name: "file".into(),
        },
        target_system: ProvisioningSystem {
            display_name: "https://robin.example/scim/v2".into(),
        },
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: logs_bench DIR [ENTRIES]"));
    let n: usize = args
        .next()
        .map_or(1_000_000, |s| s.parse().expect("ENTRIES"));
    std::fs::create_dir_all(&dir).unwrap();
    let now = chrono::Utc::now();
    let start = now - chrono::Duration::hours(24);
    let step_ns = 86_400_000_000_000i64 / n as i64;
    let cycles: Vec<String> = (0..24).map(|_| uuid::Uuid::new_v4().to_string()).collect();

    let t = Instant::now();
    let mut w = ProvisioningLogWriter::open(&dir, "robin").unwrap();
    for i in 0..n {
        let at = start + chrono::Duration::nanoseconds(step_ns * i as i64);
        w.append(&entry(i, at, &cycles[i * 24 / n])).unwrap();
    }
    w.sync().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(dir.join("logs/robin"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "write: {n} entries in {secs:.2} s ({:.0} entries/s), {:.0} MB on disk ({} bytes/entry)",
        n as f64 / secs,
        bytes as f64 / 1e6,
        bytes / n as u64
    );

    let q = |label: &str, q: ProvisioningLogQuery| {
        // Three times, the median reported (the first may read from disk, the others from
        // the page cache).
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let found = query_provisioning_logs(&dir, &q).unwrap();
            times.push(t.elapsed().as_secs_f64());
            n = found.entries.len();
        }
        let runs: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        times.sort_by(f64::total_cmp);
        println!(
            "query {label:<58} {n:>7} entries, median {:.3} s (runs {})",
            times[1],
            runs.join(" / ")
        );
    };
    let day = Some(now - chrono::Duration::hours(24));
    let base = || ProvisioningLogQuery {
        from: day,
        ..Default::default()
    };
    q(
        "--since 24h (table: newest 100)",
        ProvisioningLogQuery {
            limit: Some(100),
            ..base()
        },
    );
    q(
        "--since 24h --status failure (all)",
        ProvisioningLogQuery {
            status: Some(ProvisioningStatus::Failure),
            ..base()
        },
    );
    q(
        "--since 24h --identity USER0123456 (all)",
        ProvisioningLogQuery {
            identity: Some("USER0123456".into()),
            ..base()
        },
    );
    q(
        "--since 24h --cycle <one hour's cycle> --limit 1000",
        ProvisioningLogQuery {
            cycle_id: Some(cycles[5].clone()),
            limit: Some(1000),
            ..base()
        },
    );
    q(
        "--since 24h --change <one id> (all)",
        ProvisioningLogQuery {
            change_id: Some("no-such-change".into()),
            ..base()
        },
    );
    q(
        "--since 24h --action create --limit 100000 (parse-heavy)",
        ProvisioningLogQuery {
            action: Some(ProvisioningAction::Create),
            limit: Some(100_000),
            ..base()
        },
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
