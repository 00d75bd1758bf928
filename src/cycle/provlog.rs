//! A cycle's provisioning-log entries: what the export did to each object, the objects held
//! by the deletion threshold (`stagedDelete`) and the objects skipped for a reason worth
//! knowing, each as Graph's `provisioningObjectSummary` with Entra's steps.
//!
//! The cycle and the export only call [`LogSink`]'s methods with what they already have;
//! the entry is built and appended here, so writing logs stays out of their code paths.
//! A log that cannot be written never fails a cycle: it is reported once and dropped.

use super::export::INTERRUPTED;
use crate::model::ObjectType;
use crate::plan::{Action, MembershipChange};
use crate::provlog::{
    Entry, ErrorInfo, Identity, InitiatedBy, ModifiedProperty, ProvisioningAction, Status,
    StatusInfo, Step, StepType, SystemInfo, Writer,
};
use crate::state::{StagedAction, StagedDelete};
use crate::summary::Problem;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};

/// What became of one exported action, as the export saw it.
pub(crate) enum Done<'a> {
    /// `create`, `adopt`, `update`, `disable`, `delete` or `gone` (already absent).
    Ok {
        verb: &'a str,
        target_id: Option<&'a str>,
    },
    Failed {
        code: &'a str,
        reason: &'a str,
        /// The failure may be the target's (a timeout, a refused connection): retried later.
        transient: bool,
    },
}

/// Entries queued for the writer thread before a sender waits: bounds the memory while the
/// disk is slower than the cycle.
const QUEUE: usize = 8192;

/// What the writer thread is asked to do.
enum Msg {
    Entry(Box<Entry>),
    /// Make everything so far durable, then answer.
    Sync(SyncSender<()>),
    /// The same, answered to an async waiter.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where a real (not dry) cycle's entries go: one job's log writer and what every entry
/// names (systems, initiator). Encoding and writing happen on a thread of their own, so the
/// cycle's tasks only build the entry and queue it.
pub struct LogSink {
    /// `None` once dropped (which ends the thread).
    tx: Option<SyncSender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    job: String,
    source_system: String,
    target_system: String,
    initiated_by: InitiatedBy,
}

/// A value as a log shows it: strings bare, everything else as JSON.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_name(ty: ObjectType) -> &'static str {
    match ty {
        ObjectType::User => "User",
        ObjectType::Group => "Group",
    }
}

fn step(name: &str, ty: StepType, status: Status, description: String) -> Step {
    Step {
        name: name.into(),
        provisioning_step_type: ty,
        status,
        description,
        details: BTreeMap::new(),
    }
}

/// What Entra's error table recommends for a code, where it says something.
fn recommended(code: &str) -> Option<&'static str> {
    Some(match code {
        "EntryConflict" | "Conflict" | "DuplicateTargetEntries" => "Another object in the target already has this value: fix the value in the source or the target, or change the matching attributes.",
        "SchemaAttributeNotFound" => "Remove the attribute's mapping or add the attribute to the application's schema.",
        "TooManyRequests" | "Timeout" | "InternalServerError" | "InternalError" => "None: the action is retried by a later cycle (escrow).",
        "InvalidAnchor" => "The object was deleted in the target: run `provisiond restart` to match it again.",
        "MandatoryFieldsMissing" | "MissingValues" => "Give the object the values the mappings need in the source.",
        "DuplicateSourceEntries" => "Make the object's matching value unique in the source.",
        _ => return None,
    })
}

impl Drop for LogSink {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which writes out what is left.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: appends what it is sent; the first write error stops the writing (one
/// warning, not one per entry), never the cycle.
fn write_loop(mut writer: Writer, job: &str, rx: std::sync::mpsc::Receiver<Msg>) {
    let mut failed = false;
    for msg in rx {
        match msg {
            Msg::Entry(e) if !failed => {
                if let Err(err) = writer.append(&e) {
                    tracing::warn!(job, error = %err, "provisioning log write failed; no further entries this run");
                    failed = true;
                }
            }
            Msg::Entry(_) => {}
            Msg::Sync(ack) => {
                sync(&mut writer, job, failed);
                let _ = ack.send(());
            }
            Msg::Flush(ack) => {
                sync(&mut writer, job, failed);
                let _ = ack.send(());
            }
        }
    }
    // The sink is gone: whatever came after the last sync is made durable too.
    sync(&mut writer, job, failed);
}

fn sync(writer: &mut Writer, job: &str, failed: bool) {
    if !failed {
        if let Err(err) = writer.sync() {
            tracing::warn!(job, error = %err, "provisioning log sync failed");
        }
    }
}

impl LogSink {
    /// The sink of `job`'s logs under `state_dir`; `None` (with a warning) when the log
    /// directory cannot be made: the cycle then runs without logs.
    pub fn open(
        state_dir: &Path,
        job: &str,
        source_system: String,
        target_system: String,
        initiated_by: InitiatedBy,
    ) -> Option<LogSink> {
        let writer = match Writer::open(state_dir, job) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(job, error = %e, "provisioning logs cannot be written; the cycle runs without them");
                return None;
            }
        };
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let name = job.to_string();
        let thread = std::thread::Builder::new()
            .name("provisiond-provlog".into())
            .spawn(move || write_loop(writer, &name, rx));
        match thread {
            Ok(thread) => Some(LogSink {
                tx: Some(tx),
                thread: Some(thread),
                job: job.to_string(),
                source_system,
                target_system,
                initiated_by,
            }),
            Err(e) => {
                tracing::warn!(job, error = %e, "no thread for the provisioning logs; the cycle runs without them");
                None
            }
        }
    }

    fn append(&self, entry: Entry) {
        if let Some(tx) = &self.tx {
            // The thread ends only when this sink is dropped: a send cannot fail before.
            let _ = tx.send(Msg::Entry(Box::new(entry)));
        }
    }

    /// [`LogSink::sync`] for async code: the cycle calls it before it commits, so its entries
    /// are durable before its watermark moves.
    pub(crate) async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = tokio::sync::oneshot::channel();
        if tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Make the cycle's entries durable (once per cycle, not per entry). Blocks until the
    /// writer thread has written and fsynced everything queued.
    pub fn sync(&self) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = sync_channel(1);
        if tx.send(Msg::Sync(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        cycle_id: &str,
        action: ProvisioningAction,
        status: StatusInfo,
        ty: ObjectType,
        source_id: &str,
        name: &str,
        target_id: Option<&str>,
        steps: Vec<Step>,
        modified: Vec<ModifiedProperty>,
        duration_ms: u64,
    ) -> Entry {
        Entry {
            id: uuid::Uuid::new_v4().to_string(),
            activity_date_time: chrono::Utc::now(),
            change_id: uuid::Uuid::new_v4().to_string(),
            cycle_id: cycle_id.to_string(),
            job_id: self.job.clone(),
            duration_in_milliseconds: duration_ms,
            initiated_by: self.initiated_by.clone(),
            provisioning_action: action,
            provisioning_status_info: status,
            provisioning_steps: steps,
            modified_properties: modified,
            source_identity: Identity {
                id: source_id.to_string(),
                display_name: name.to_string(),
                identity_type: type_name(ty).into(),
            },
            target_identity: Identity {
                id: target_id.unwrap_or_default().to_string(),
                display_name: name.to_string(),
                identity_type: type_name(ty).into(),
            },
            source_system: SystemInfo {
                display_name: self.source_system.clone(),
            },
            target_system: SystemInfo {
                display_name: self.target_system.clone(),
            },
        }
    }

    fn import_step(&self, ty: ObjectType, source_id: &str, name: &str) -> Step {
        let mut s = step(
            "EntryImport",
            StepType::Import,
            Status::Success,
            format!(
                "Received {} '{name}' from {}",
                type_name(ty),
                self.source_system
            ),
        );
        s.details.insert("SourceAnchor".into(), source_id.into());
        s
    }

    /// One exported action (phase one, or a reference update of phase two).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn exported(
        &self,
        cycle_id: &str,
        ty: ObjectType,
        source_id: &str,
        name: &str,
        action: &Action,
        done: Done<'_>,
        duration_ms: u64,
    ) {
        if matches!(done, Done::Failed { code, .. } if code == INTERRUPTED) {
            // Never sent: the next cycle does it, and logs it then.
            return;
        }
        let tn = type_name(ty);
        let (kind, scoping, modified) = match action {
            Action::Provision(p) => {
                let modified = p
                    .mapped
                    .values
                    .iter()
                    .chain(p.mapped.create_only.iter())
                    .map(|(k, v)| ModifiedProperty {
                        display_name: k.to_string(),
                        old_value: None,
                        new_value: Some(show(v)),
                    })
                    .collect();
                (
                    ProvisioningAction::Create,
                    format!("{tn} '{name}' is in scope"),
                    modified,
                )
            }
            Action::Update(u) => {
                let modified = u
                    .changes
                    .iter()
                    .map(|c| ModifiedProperty {
                        display_name: c.path.clone(),
                        old_value: c.old.as_ref().map(show),
                        new_value: c.new.as_ref().map(show),
                    })
                    .collect();
                (
                    ProvisioningAction::Update,
                    format!("{tn} '{name}' is in scope"),
                    modified,
                )
            }
            Action::Disable(d) => (
                ProvisioningAction::Disable,
                d.reason.clone(),
                vec![ModifiedProperty {
                    display_name: "active".into(),
                    old_value: Some("true".into()),
                    new_value: Some("false".into()),
                }],
            ),
            Action::Delete(d) => (ProvisioningAction::Delete, d.reason.clone(), vec![]),
        };
        // A create that matched an existing object is an update of it, as Entra logs it.
        let kind = match done {
            Done::Ok { verb: "adopt", .. } => ProvisioningAction::Update,
            _ => kind,
        };
        let target_id = match (&done, action) {
            (Done::Ok { target_id, .. }, _) => *target_id,
            (_, Action::Update(u)) => Some(u.target_id.as_str()),
            (_, Action::Disable(d)) => Some(d.target_id.as_str()),
            (_, Action::Delete(d)) => Some(d.target_id.as_str()),
            (_, Action::Provision(_)) => None,
        };
        let mut steps = vec![
            self.import_step(ty, source_id, name),
            step(
                "EntrySynchronizationScoping",
                StepType::Scoping,
                Status::Success,
                scoping,
            ),
        ];
        let matching = match (action, &done) {
            (Action::Provision(_), Done::Ok { verb: "adopt", .. }) => {
                format!(
                    "Matched an existing {tn} in the target ({})",
                    target_id.unwrap_or("")
                )
            }
            (Action::Provision(p), _) => {
                let on = p
                    .mapped
                    .matching
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", show(v)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("No matching {tn} was found in the target (matched on {on}); it will be created")
            }
            _ => format!(
                "Linked to the target {tn} {} by an earlier cycle",
                target_id.unwrap_or("")
            ),
        };
        steps.push(step(
            "EntrySynchronizationMatching",
            StepType::Matching,
            Status::Success,
            matching,
        ));
        steps.push(step(
            "EntrySynchronizationProcessing",
            StepType::Processing,
            Status::Success,
            format!("Determined the action: {}", kind.as_str()),
        ));
        let export_name = match kind {
            ProvisioningAction::Create => "EntryExportAdd",
            ProvisioningAction::Delete => "EntryExportDelete",
            _ => "EntryExportUpdate",
        };
        let (status, export) = match done {
            Done::Ok { verb: "gone", .. } => (
                StatusInfo {
                    status: Status::Warning,
                    error_information: None,
                },
                step(
                    export_name,
                    StepType::Export,
                    Status::Warning,
                    format!("The {tn} was already absent from the target; its link was forgotten"),
                ),
            ),
            Done::Ok { .. } => (
                StatusInfo {
                    status: Status::Success,
                    error_information: None,
                },
                step(
                    export_name,
                    StepType::Export,
                    Status::Success,
                    format!(
                        "{} {tn} '{name}' in the target ({})",
                        match kind {
                            ProvisioningAction::Create => "Created",
                            ProvisioningAction::Delete => "Deleted",
                            ProvisioningAction::Disable => "Disabled",
                            _ => "Updated",
                        },
                        target_id.unwrap_or("")
                    ),
                ),
            ),
            Done::Failed {
                code,
                reason,
                transient,
            } => (
                StatusInfo {
                    status: Status::Failure,
                    error_information: Some(ErrorInfo {
                        error_code: code.to_string(),
                        reason: reason.to_string(),
                        additional_details: Some(
                            "The action is kept in escrow and retried by later cycles.".into(),
                        ),
                        error_category: Some(
                            if transient {
                                "failure"
                            } else {
                                "nonServiceFailure"
                            }
                            .into(),
                        ),
                        recommended_action: recommended(code).map(str::to_string),
                    }),
                },
                step(
                    export_name,
                    StepType::Export,
                    Status::Failure,
                    format!("{code}: {reason}"),
                ),
            ),
        };
        let mut export = export;
        export
            .details
            .insert("ReportableIdentifier".into(), name.to_string());
        steps.push(export);
        let e = self.entry(
            cycle_id,
            kind,
            status,
            ty,
            source_id,
            name,
            target_id,
            steps,
            modified,
            duration_ms,
        );
        self.append(e);
    }

    /// A group's membership change: an `update` of the group, modified property `members`.
    pub(crate) fn membership(
        &self,
        cycle_id: &str,
        m: &MembershipChange,
        adding: bool,
        ids: &[String],
        failure: Option<(&str, &str)>,
    ) {
        let listed = crate::util::text::bounded_list(ids);
        let modified = vec![ModifiedProperty {
            display_name: "members".into(),
            old_value: (!adding).then(|| listed.clone()),
            new_value: adding.then(|| listed.clone()),
        }];
        let verb = if adding { "Added" } else { "Removed" };
        let (status, export) = match failure {
            None => (
                StatusInfo {
                    status: Status::Success,
                    error_information: None,
                },
                step(
                    "EntryExportUpdate",
                    StepType::Export,
                    Status::Success,
                    format!("{verb} {} member(s)", ids.len()),
                ),
            ),
            Some((code, reason)) => (
                StatusInfo {
                    status: Status::Failure,
                    error_information: Some(ErrorInfo {
                        error_code: code.into(),
                        reason: reason.into(),
                        additional_details: None,
                        error_category: Some("nonServiceFailure".into()),
                        recommended_action: recommended(code).map(str::to_string),
                    }),
                },
                step(
                    "EntryExportUpdate",
                    StepType::Export,
                    Status::Failure,
                    format!("{code}: {reason}"),
                ),
            ),
        };
        let steps = vec![
            self.import_step(ObjectType::Group, &m.group_source_id, &m.display_name),
            step(
                "EntryReferenceResolution",
                StepType::ReferenceResolution,
                Status::Success,
                format!("Resolved {} member reference(s) to target ids", ids.len()),
            ),
            export,
        ];
        let e = self.entry(
            cycle_id,
            ProvisioningAction::Update,
            status,
            ObjectType::Group,
            &m.group_source_id,
            &m.display_name,
            Some(&m.group_target_id),
            steps,
            modified,
            0,
        );
        self.append(e);
    }

    /// A disable or delete the deletion threshold held back.
    pub(crate) fn staged(&self, cycle_id: &str, s: &StagedDelete, threshold: &str) {
        let what = match s.action {
            StagedAction::Disable => "disable",
            StagedAction::Delete => "delete",
        };
        let reason = format!(
            "The {what} was held back: this cycle's disables and deletes reached the deletion threshold ({threshold}). Review with `provisiond logs --job {job} --action stagedDelete`, then `provisiond allow-deletes --job {job}`.",
            job = self.job
        );
        let steps = vec![
            self.import_step(s.object_type, &s.source_id, &s.display_name),
            step(
                "EntrySynchronizationProcessing",
                StepType::Processing,
                Status::Skipped,
                reason.clone(),
            ),
        ];
        let status = StatusInfo {
            status: Status::Skipped,
            error_information: Some(ErrorInfo {
                error_code: "TooManyDeletes".into(),
                reason,
                additional_details: None,
                error_category: Some("nonServiceFailure".into()),
                recommended_action: Some(format!(
                    "Allow the deletions with `provisiond allow-deletes --job {}` if they are intended.",
                    self.job
                )),
            }),
        };
        let e = self.entry(
            cycle_id,
            ProvisioningAction::StagedDelete,
            status,
            s.object_type,
            &s.source_id,
            &s.display_name,
            Some(&s.target_id),
            steps,
            vec![],
            0,
        );
        self.append(e);
    }

    /// An object skipped: out of scope (step `scoping`), or a problem of the planner
    /// (duplicate, invalid: step `processing`), with the problem's code.
    pub(crate) fn skipped(
        &self,
        cycle_id: &str,
        ty: ObjectType,
        source_id: &str,
        name: &str,
        code: Option<&str>,
        reason: &str,
    ) {
        let scoping = code.is_none();
        let mut steps = vec![self.import_step(ty, source_id, name)];
        steps.push(step(
            "EntrySynchronizationScoping",
            StepType::Scoping,
            if scoping {
                Status::Skipped
            } else {
                Status::Success
            },
            if scoping {
                format!("{} '{name}' is out of scope: {reason}", type_name(ty))
            } else {
                format!("{} '{name}' is in scope", type_name(ty))
            },
        ));
        if !scoping {
            steps.push(step(
                "EntrySynchronizationSkip",
                StepType::Processing,
                Status::Skipped,
                reason.to_string(),
            ));
        }
        let status = StatusInfo {
            status: Status::Skipped,
            error_information: code.map(|c| ErrorInfo {
                error_code: c.into(),
                reason: reason.into(),
                additional_details: None,
                error_category: Some("nonServiceFailure".into()),
                recommended_action: recommended(c).map(str::to_string),
            }),
        };
        let e = self.entry(
            cycle_id,
            ProvisioningAction::Other,
            status,
            ty,
            source_id,
            name,
            None,
            steps,
            vec![],
            0,
        );
        self.append(e);
    }

    /// Everything decided before the export: the planner's per-object problems, the held
    /// disables and deletes, and, in an initial cycle, the unlinked out-of-scope objects
    /// (a linked one newly out of scope is a disable or delete, logged by the export).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn before_export(
        &self,
        cycle_id: &str,
        initial: bool,
        problems: &[Problem],
        staged: &[StagedDelete],
        threshold: &str,
        dir: &crate::model::Directory,
        scoped: &crate::scope::Scoped,
        links: &crate::state::LinkIndex,
    ) {
        self.problems(cycle_id, problems);
        for s in staged {
            self.staged(cycle_id, s, threshold);
        }
        if !initial {
            return;
        }
        for ty in [ObjectType::User, ObjectType::Group] {
            let decisions = match ty {
                ObjectType::User => &scoped.users,
                ObjectType::Group => &scoped.groups,
            };
            // Sorted, so the log reads in the directory's order.
            let mut out: Vec<(&String, String)> = decisions
                .iter()
                .filter_map(|(id, d)| d.as_ref().err().map(|why| (id, why.to_string())))
                .filter(|(id, _)| !links.of(ty).contains_key(id.as_str()))
                .collect();
            out.sort();
            for (id, why) in out {
                let name = dir
                    .objects(ty)
                    .get(id)
                    .map_or(id.as_str(), |o| o.display_name());
                self.skipped(cycle_id, ty, id, name, None, &why);
            }
        }
    }

    /// The planner's per-object problems (duplicate, invalid objects) as skipped entries.
    fn problems(&self, cycle_id: &str, problems: &[Problem]) {
        for p in problems {
            // An invalid source object may have no id (its position is in the reason); one
            // of no known type, or a problem about no object, is no entry.
            let Some(ty) = p.object_type.as_deref() else {
                continue;
            };
            let id = p.id.as_deref().unwrap_or("");
            let ty = if ty == "group" {
                ObjectType::Group
            } else {
                ObjectType::User
            };
            self.skipped(
                cycle_id,
                ty,
                id,
                p.name.as_deref().unwrap_or(id),
                Some(&p.code),
                &p.reason,
            );
        }
    }
}
