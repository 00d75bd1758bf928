use super::*;
use crate::provlog::entry::*;
use crate::provlog::query::{query, Query};
use std::os::unix::fs::PermissionsExt;

pub(crate) fn entry(
    id: &str,
    at: DateTime<Utc>,
    action: ProvisioningAction,
    status: Status,
) -> Entry {
    Entry {
        id: id.into(),
        activity_date_time: at,
        change_id: format!("ch-{id}"),
        cycle_id: "cy1".into(),
        job_id: "robin".into(),
        duration_in_milliseconds: 1,
        initiated_by: InitiatedBy::system(),
        provisioning_action: action,
        provisioning_status_info: StatusInfo {
            status,
            error_information: None,
        },
        provisioning_steps: vec![],
        modified_properties: vec![],
        source_identity: Identity {
            id: format!("src-{id}"),
            display_name: format!("User {id}"),
            identity_type: "User".into(),
        },
        target_identity: Identity::default(),
        source_system: SystemInfo::default(),
        target_system: SystemInfo::default(),
    }
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, h, m, 0).single().unwrap()
}

#[test]
fn round_trip_newest_first_with_modes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path(), "robin").unwrap();
    w.append(&entry(
        "a",
        at(10, 1),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    w.append(&entry(
        "b",
        at(11, 2),
        ProvisioningAction::Update,
        Status::Failure,
    ))
    .unwrap();
    w.append(&entry(
        "c",
        at(11, 3),
        ProvisioningAction::Delete,
        Status::Success,
    ))
    .unwrap();
    w.sync().unwrap();
    let found = query(dir.path(), &Query::default()).unwrap();
    let ids: Vec<_> = found.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["c", "b", "a"]);
    let segs = segments(dir.path(), None).unwrap();
    assert_eq!(segs.len(), 2);
    assert!(segs[0].path.ends_with("logs/robin/2026-12-05T10.jsonl"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&segs[0].path), 0o600);
    assert_eq!(mode(&dir.path().join("logs/robin")), 0o700);
}

#[test]
fn a_torn_line_is_skipped_and_the_next_append_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path(), "robin").unwrap();
    w.append(&entry(
        "a",
        at(10, 1),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    w.sync().unwrap();
    drop(w);
    // A crash mid-write: half a line, no newline.
    let path = dir.path().join("logs/robin/2026-12-05T10.jsonl");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"id\":\"torn\",\"activityDa").unwrap();
    drop(f);
    let mut w = Writer::open(dir.path(), "robin").unwrap();
    w.append(&entry(
        "b",
        at(10, 5),
        ProvisioningAction::Update,
        Status::Success,
    ))
    .unwrap();
    w.sync().unwrap();
    let found = query(dir.path(), &Query::default()).unwrap();
    let ids: Vec<_> = found.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    assert_eq!(found.skipped_lines, 1);
}

#[test]
fn filters_combine() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path(), "robin").unwrap();
    w.append(&entry(
        "a",
        at(10, 1),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    let mut b = entry("b", at(11, 2), ProvisioningAction::Update, Status::Failure);
    b.cycle_id = "cy2".into();
    w.append(&b).unwrap();
    w.append(&entry(
        "c",
        at(12, 3),
        ProvisioningAction::Create,
        Status::Failure,
    ))
    .unwrap();
    w.sync().unwrap();
    let ids = |q: Query| -> Vec<String> {
        query(dir.path(), &q)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(
        ids(Query {
            status: Some(Status::Failure),
            ..Default::default()
        }),
        ["c", "b"]
    );
    assert_eq!(
        ids(Query {
            status: Some(Status::Failure),
            action: Some(ProvisioningAction::Create),
            ..Default::default()
        }),
        ["c"]
    );
    assert_eq!(
        ids(Query {
            identity: Some("user B".into()),
            ..Default::default()
        }),
        ["b"]
    );
    assert_eq!(
        ids(Query {
            identity: Some("SRC-A".into()),
            ..Default::default()
        }),
        ["a"]
    );
    assert_eq!(
        ids(Query {
            cycle_id: Some("cy2".into()),
            ..Default::default()
        }),
        ["b"]
    );
    assert_eq!(
        ids(Query {
            change_id: Some("ch-c".into()),
            ..Default::default()
        }),
        ["c"]
    );
    assert_eq!(
        ids(Query {
            from: Some(at(11, 0)),
            to: Some(at(11, 59)),
            ..Default::default()
        }),
        ["b"]
    );
    assert_eq!(
        ids(Query {
            limit: Some(2),
            ..Default::default()
        }),
        ["c", "b"]
    );
    assert_eq!(
        ids(Query {
            job: Some("other".into()),
            ..Default::default()
        }),
        Vec::<String>::new()
    );
}

#[test]
fn retention_by_age_and_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path(), "robin").unwrap();
    let now = at(12, 30);
    let old = now - chrono::Duration::days(31);
    w.append(&entry(
        "old",
        old,
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    w.append(&entry(
        "a",
        at(10, 1),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    w.append(&entry(
        "b",
        at(11, 1),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    w.append(&entry(
        "c",
        at(12, 1),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    w.sync().unwrap();
    let ids = || -> Vec<String> {
        query(dir.path(), &Query::default())
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    let p = prune(dir.path(), &LogSettings::default(), now).unwrap();
    assert_eq!(p.files, 1);
    assert_eq!(ids(), ["c", "b", "a"]);
    // A cap of a bit more than one segment: the oldest go first, the current hour stays.
    let one = segments(dir.path(), None).unwrap()[0].size;
    let s = LogSettings {
        retention: DEFAULT_RETENTION,
        max_size: one + 1,
    };
    prune(dir.path(), &s, now).unwrap();
    assert_eq!(ids(), ["c"]);
}

#[test]
fn sizes_and_names() {
    assert_eq!(parse_size("2GiB"), Some(2 << 30));
    assert_eq!(parse_size("500MB"), Some(500_000_000));
    assert_eq!(parse_size("1000"), Some(1000));
    assert_eq!(parse_size("0"), None);
    assert_eq!(parse_size("2 parsecs"), None);
    assert!(job_dir(Path::new("/s"), "../x").is_err());
    assert_eq!(segment_hour("2026-12-05T10.jsonl"), Some(at(10, 0)));
    assert_eq!(segment_hour("notes.txt"), None);
}

#[test]
fn a_limit_takes_the_newest_of_a_segment_and_needles_hit_steps_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path(), "robin").unwrap();
    for (i, m) in [1, 2, 3].iter().enumerate() {
        let mut e = entry(
            &format!("e{i}"),
            at(10, *m),
            ProvisioningAction::Create,
            Status::Success,
        );
        // Steps carry a status too: the raw needle hits several times in one line.
        e.provisioning_steps = vec![
            Step {
                name: "EntryImport".into(),
                provisioning_step_type: StepType::Import,
                status: Status::Success,
                description: "d".into(),
                details: Default::default(),
            };
            3
        ];
        w.append(&e).unwrap();
    }
    w.sync().unwrap();
    let ids = |q: Query| -> Vec<String> {
        query(dir.path(), &q)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(
        ids(Query {
            limit: Some(1),
            ..Default::default()
        }),
        ["e2"]
    );
    assert_eq!(
        ids(Query {
            status: Some(Status::Success),
            limit: Some(2),
            ..Default::default()
        }),
        ["e2", "e1"]
    );
    assert_eq!(
        ids(Query {
            status: Some(Status::Success),
            ..Default::default()
        }),
        ["e2", "e1", "e0"]
    );
    assert_eq!(
        ids(Query {
            id: Some("e1".into()),
            ..Default::default()
        }),
        ["e1"]
    );
}

#[test]
fn unsynced_counts_the_bytes_appended_since_the_last_sync_and_a_closed_segment_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::open(dir.path(), "robin").unwrap();
    assert_eq!(w.unsynced(), 0);
    let a = entry("a", at(10, 1), ProvisioningAction::Create, Status::Success);
    w.append(&a).unwrap();
    let line = serde_json::to_vec(&a).unwrap().len() as u64 + 1;
    assert_eq!(w.unsynced(), line);
    w.append(&entry(
        "b",
        at(10, 2),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    assert!(w.unsynced() > line);
    w.sync().unwrap();
    assert_eq!(w.unsynced(), 0);
    w.append(&entry(
        "c",
        at(10, 3),
        ProvisioningAction::Create,
        Status::Success,
    ))
    .unwrap();
    // The next hour's entry closes the 10:00 segment, synced with it: only the new line is
    // left unsynced, and the closed segment holds its three whole lines.
    let d = entry("d", at(11, 0), ProvisioningAction::Create, Status::Success);
    w.append(&d).unwrap();
    assert_eq!(
        w.unsynced(),
        serde_json::to_vec(&d).unwrap().len() as u64 + 1
    );
    let ten = std::fs::read_to_string(dir.path().join("logs/robin/2026-12-05T10.jsonl")).unwrap();
    assert_eq!(ten.lines().count(), 3);
    assert!(ten.ends_with('\n'));
}
