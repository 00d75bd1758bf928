//! One provisioning-log entry: Graph's `provisioningObjectSummary`, in its camelCase names,
//! so that scripts written against Entra's logs read ours.

use serde::{Deserialize, Serialize};

/// One object action attempted in a cycle or on demand, or one object skipped for a reason
/// worth knowing. Unchanged objects of an incremental cycle have no entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Unique per entry (a UUID): what `provisiond logs show ID` takes.
    pub id: String,
    /// When the action ended (RFC 3339, UTC).
    pub activity_date_time: chrono::DateTime<chrono::Utc>,
    /// Joins this entry with its steps and modified properties in the CSV download; one per
    /// object action (a create and the membership changes that follow it share none).
    pub change_id: String,
    /// The cycle's id (`sync --json`'s `cycle_id`); on demand: the on-demand run's id.
    pub cycle_id: String,
    /// The job's name.
    pub job_id: String,
    pub duration_in_milliseconds: u64,
    pub initiated_by: InitiatedBy,
    pub provisioning_action: ProvisioningAction,
    pub provisioning_status_info: StatusInfo,
    #[serde(default)]
    pub provisioning_steps: Vec<Step>,
    #[serde(default)]
    pub modified_properties: Vec<ModifiedProperty>,
    pub source_identity: Identity,
    pub target_identity: Identity,
    /// `{displayName}` of the source system, e.g. "file", "LDAP", "Microsoft Entra ID".
    pub source_system: SystemInfo,
    /// `{displayName}` of the target: the SCIM base URL (never a token).
    pub target_system: SystemInfo,
}

/// Who started the run that made the entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiatedBy {
    /// `system` (a scheduled or `sync` cycle) or `onDemand`.
    pub initiator_type: String,
    /// `provisiond` for cycles; the invoking user (`$USER`) on demand, when known.
    pub display_name: String,
}

impl InitiatedBy {
    /// A cycle of the daemon or of `provisiond sync`.
    pub fn system() -> Self {
        InitiatedBy {
            initiator_type: "system".into(),
            display_name: "provisiond".into(),
        }
    }
    /// `provisiond provision`.
    pub fn on_demand(who: &str) -> Self {
        InitiatedBy {
            initiator_type: "onDemand".into(),
            display_name: who.into(),
        }
    }
}

/// Graph's `provisioningAction`, plus `stagedDelete` (a disable or delete the deletion
/// threshold held back) as Entra names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningAction {
    Create,
    Update,
    Delete,
    Disable,
    StagedDelete,
    Other,
}

impl ProvisioningAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisioningAction::Create => "create",
            ProvisioningAction::Update => "update",
            ProvisioningAction::Delete => "delete",
            ProvisioningAction::Disable => "disable",
            ProvisioningAction::StagedDelete => "stagedDelete",
            ProvisioningAction::Other => "other",
        }
    }
}

/// Graph's `provisioningResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    Success,
    Failure,
    Skipped,
    Warning,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Skipped => "skipped",
            Status::Warning => "warning",
        }
    }
}

/// Graph's `provisioningStatusInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusInfo {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_information: Option<ErrorInfo>,
}

/// Graph's `provisioningErrorInfo`. `error_code` from Entra's table where one fits
/// (`DuplicateTargetEntries`, `SchemaAttributeNotFound`, `EntryConflict`, `TooManyRequests`,
/// `Timeout`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    pub error_code: String,
    pub reason: String,
    #[serde(default)]
    pub additional_details: Option<String>,
    /// `failure` (retried: escrow) or `nonServiceFailure` (needs the admin), as Graph.
    #[serde(default)]
    pub error_category: Option<String>,
    #[serde(default)]
    pub recommended_action: Option<String>,
}

/// Graph's `provisioningStep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// e.g. `EntryImport`, `EntryEvaluation`, `EntrySynchronizationScoping`, `EntryExport`.
    pub name: String,
    pub provisioning_step_type: StepType,
    pub status: Status,
    pub description: String,
    /// Name/value pairs shown with the step (attributes sent, matching attribute, …).
    #[serde(default)]
    pub details: std::collections::BTreeMap<String, String>,
}

/// Graph's `provisioningStepType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepType {
    Import,
    Scoping,
    Matching,
    Processing,
    ReferenceResolution,
    Export,
}

impl StepType {
    pub fn as_str(self) -> &'static str {
        match self {
            StepType::Import => "import",
            StepType::Scoping => "scoping",
            StepType::Matching => "matching",
            StepType::Processing => "processing",
            StepType::ReferenceResolution => "referenceResolution",
            StepType::Export => "export",
        }
    }
}

/// Graph's `modifiedProperty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModifiedProperty {
    pub display_name: String,
    #[serde(default)]
    pub old_value: Option<String>,
    #[serde(default)]
    pub new_value: Option<String>,
}

/// Graph's `provisionedIdentity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The object's id in its system; empty when it has none yet (a failed create).
    pub id: String,
    pub display_name: String,
    /// `User` or `Group`.
    pub identity_type: String,
}

/// Graph's `provisioningSystem` (its `details` left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    pub display_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_type_names_are_the_serialised_ones() {
        for t in [
            StepType::Import,
            StepType::Scoping,
            StepType::Matching,
            StepType::Processing,
            StepType::ReferenceResolution,
            StepType::Export,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
    }

    #[test]
    fn serialises_with_graphs_names() {
        let e = Entry {
            id: "e1".into(),
            activity_date_time: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
            change_id: "c1".into(),
            cycle_id: "cy".into(),
            job_id: "robin".into(),
            duration_in_milliseconds: 3,
            initiated_by: InitiatedBy::system(),
            provisioning_action: ProvisioningAction::StagedDelete,
            provisioning_status_info: StatusInfo {
                status: Status::Skipped,
                error_information: None,
            },
            provisioning_steps: vec![Step {
                name: "EntryExport".into(),
                provisioning_step_type: StepType::ReferenceResolution,
                status: Status::Success,
                description: "d".into(),
                details: Default::default(),
            }],
            modified_properties: vec![],
            source_identity: Identity::default(),
            target_identity: Identity::default(),
            source_system: SystemInfo::default(),
            target_system: SystemInfo::default(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["provisioningAction"], "stagedDelete");
        assert_eq!(v["provisioningStatusInfo"]["status"], "skipped");
        assert_eq!(v["initiatedBy"]["initiatorType"], "system");
        assert_eq!(
            v["provisioningSteps"][0]["provisioningStepType"],
            "referenceResolution"
        );
        assert_eq!(v["activityDateTime"], "1970-01-01T00:00:00Z");
        let back: Entry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
