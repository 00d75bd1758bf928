//! Entra's CSV download: three files joined by change id, `ProvisioningLogs.csv`,
//! `ProvisioningLogs_ProvisioningSteps.csv` and `ProvisioningLogs_ModifiedProperties.csv`.
//!
//! Values come from the directory and the target, so they are hostile: every field is quoted
//! as RFC 4180 says (quotes doubled, newlines kept inside quotes), and a value a spreadsheet
//! would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) gets a leading `'`.

use super::entry::Entry;
use super::store::LogError;
use std::path::{Path, PathBuf};

/// The three file names, as Entra's download names them.
pub(crate) const FILES: [&str; 3] = [
    "ProvisioningLogs.csv",
    "ProvisioningLogs_ProvisioningSteps.csv",
    "ProvisioningLogs_ModifiedProperties.csv",
];

/// One CSV field, quoted and defused.
pub(crate) fn field(v: &str) -> String {
    let defused = match v.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{v}"),
        _ => v.to_string(),
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

fn row(fields: &[&str]) -> String {
    let mut line = fields
        .iter()
        .map(|f| field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// The three files' contents for `entries`.
pub(crate) fn render(entries: &[Entry]) -> [String; 3] {
    let mut logs = row(&[
        "Date (UTC)",
        "Id",
        "Change ID",
        "Cycle ID",
        "Job ID",
        "Initiated By",
        "Action",
        "Status",
        "Error Code",
        "Status Reason",
        "Error Category",
        "Recommended Action",
        "Source Identity ID",
        "Source Identity Name",
        "Source Identity Type",
        "Target Identity ID",
        "Target Identity Name",
        "Target Identity Type",
        "Source System",
        "Target System",
        "Duration (ms)",
    ]);
    let mut steps = row(&[
        "Change ID",
        "Step",
        "Name",
        "Type",
        "Status",
        "Description",
        "Details",
    ]);
    let mut props = row(&["Change ID", "Display Name", "Old Value", "New Value"]);
    for e in entries {
        let info = &e.provisioning_status_info;
        let err = info.error_information.as_ref();
        let date = e.activity_date_time.to_rfc3339();
        let duration = e.duration_in_milliseconds.to_string();
        logs.push_str(&row(&[
            &date,
            &e.id,
            &e.change_id,
            &e.cycle_id,
            &e.job_id,
            &e.initiated_by.initiator_type,
            e.provisioning_action.as_str(),
            info.status.as_str(),
            err.map_or("", |i| i.error_code.as_str()),
            err.map_or("", |i| i.reason.as_str()),
            err.and_then(|i| i.error_category.as_deref()).unwrap_or(""),
            err.and_then(|i| i.recommended_action.as_deref())
                .unwrap_or(""),
            &e.source_identity.id,
            &e.source_identity.display_name,
            &e.source_identity.identity_type,
            &e.target_identity.id,
            &e.target_identity.display_name,
            &e.target_identity.identity_type,
            &e.source_system.display_name,
            &e.target_system.display_name,
            &duration,
        ]));
        for (i, s) in e.provisioning_steps.iter().enumerate() {
            let details = serde_json::to_string(&s.details).unwrap_or_default();
            let n = (i + 1).to_string();
            let ty = s.provisioning_step_type.as_str();
            steps.push_str(&row(&[
                &e.change_id,
                &n,
                &s.name,
                ty,
                s.status.as_str(),
                &s.description,
                &details,
            ]));
        }
        for p in &e.modified_properties {
            props.push_str(&row(&[
                &e.change_id,
                &p.display_name,
                p.old_value.as_deref().unwrap_or(""),
                p.new_value.as_deref().unwrap_or(""),
            ]));
        }
    }
    [logs, steps, props]
}

/// Write the three files into `dir` (made when missing; files 0600: they hold personal
/// data). Returns their paths.
pub fn write(dir: &Path, entries: &[Entry]) -> Result<Vec<PathBuf>, LogError> {
    std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for (name, text) in FILES.iter().zip(render(entries)) {
        let path = dir.join(name);
        let err = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        crate::util::write_private_file(&path, text.as_bytes()).map_err(err)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_quoted_and_defused() {
        assert_eq!(field("plain"), "\"plain\"");
        assert_eq!(field("a\"b"), "\"a\"\"b\"");
        assert_eq!(field("x,y\nz"), "\"x,y\nz\"");
        assert_eq!(
            field("=HYPERLINK(\"evil\")"),
            "\"'=HYPERLINK(\"\"evil\"\")\""
        );
        assert_eq!(field("+1"), "\"'+1\"");
        assert_eq!(field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(field(""), "\"\"");
    }
}
