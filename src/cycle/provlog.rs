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
use std::sync::Arc;

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

/// Records handed to the writer thread at a time: one channel message (and at most one
/// wake-up of the thread) per batch, not per entry.
const BATCH: usize = 256;

/// Batches queued for the writer thread before a sender waits (8,192 records): bounds the
/// memory while the disk is slower than the cycle.
const QUEUE: usize = 32;

/// The writer thread syncs its segment once this much was appended since the last sync
/// (4 MiB: ~1,500 entries of an initial cycle). An initial cycle of 10,000 users writes
/// ~40 MB of entries, and one sync of them all at the end held the cycle's commit ~30 ms;
/// synced as they go, the disk writes while the export runs, and a crash loses less.
const SYNC_EVERY: u64 = 4 << 20;

/// What the writer thread is asked to do.
enum Msg {
    Records(Vec<Record>),
    /// Make everything so far durable, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// One entry as the cycle's tasks hand it over: the ids, names and values they already
/// hold, moved or cheaply cloned (interned keys, JSON values), nothing formatted. The writer
/// thread turns it into an [`Entry`] (texts, ids) and encodes it, so a cycle's tasks pay
/// for a few clones per entry, not for building and stringifying 2 KB of JSON.
struct Record {
    at: chrono::DateTime<chrono::Utc>,
    cycle_id: Arc<str>,
    ty: ObjectType,
    source_id: String,
    name: String,
    target_id: Option<String>,
    duration_ms: u64,
    what: What,
}

/// The kind of entry a [`Record`] becomes, with what only that kind needs.
enum What {
    Exported {
        /// The action as logged (an adopted create is an update).
        kind: ProvisioningAction,
        /// The planned action was a create (matched or not).
        provision: bool,
        /// A disable's or delete's reason (the scoping step's text).
        reason: Option<String>,
        /// A create's matching attributes (the matching step names them).
        matching: Vec<(String, Value)>,
        modified: Vec<Prop>,
        outcome: Outcome,
    },
    Membership {
        adding: bool,
        /// The member ids as `bounded_list` shows them, and how many there are.
        listed: String,
        count: usize,
        failure: Option<(String, String)>,
    },
    Staged {
        action: StagedAction,
        threshold: String,
    },
    Skipped {
        code: Option<String>,
        reason: String,
    },
}

/// A modified property before it is shown: the attribute's name and its values as the plan
/// holds them.
struct Prop {
    name: PropName,
    old: Option<Value>,
    new: Option<Value>,
}

/// An attribute's name: owned (a diff's path), a mapping's interned target path (shared:
/// the export's task clones an `Arc`, the writer thread copies the text) or fixed.
enum PropName {
    Owned(String),
    Shared(crate::attrs::map::Key),
    Static(&'static str),
}

impl PropName {
    fn into_string(self) -> String {
        match self {
            PropName::Owned(s) => s,
            PropName::Shared(s) => s.to_string(),
            PropName::Static(s) => s.to_string(),
        }
    }
}

/// [`Done`], owned.
enum Outcome {
    Ok {
        gone: bool,
        adopted: bool,
    },
    Failed {
        code: String,
        reason: String,
        transient: bool,
    },
}

/// Where a real (not dry) cycle's entries go: one job's log writer and what every entry
/// names (systems, initiator). Building, encoding and writing the entries happen on a
/// thread of their own, so the cycle's tasks only queue a compact [`Record`].
pub struct LogSink {
    /// `None` once dropped (which ends the thread).
    tx: Option<SyncSender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The records not yet handed over, and the cycle's shared id.
    pending: std::sync::Mutex<Pending>,
}

/// What the cycle's tasks add to before a batch goes to the writer thread.
#[derive(Default)]
struct Pending {
    records: Vec<Record>,
    /// The cycle id of the last record, shared by the records of a cycle (one allocation
    /// per cycle, not per entry).
    cycle: Option<Arc<str>>,
}

/// What every entry of a sink names: built into each entry on the writer thread.
struct Context {
    job: String,
    source_system: String,
    target_system: String,
    initiated_by: InitiatedBy,
}

/// A value as a log shows it: strings bare, everything else as JSON.
fn show(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A value as a log shows it, borrowed.
fn show_ref(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
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

/// A random UUID (v4) from the thread's fast generator: `Uuid::new_v4` asks the kernel for
/// every id, two system calls per entry.
fn fast_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
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
        self.hand_over();
        // Closing the queue ends the thread, which writes out what is left.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: builds and appends the entries it is sent; the first write error stops
/// the writing (one warning, not one per entry), never the cycle. Entries not written are
/// still tracing events: with a provisioning log the export logs each object at `debug`
/// only, counting on this event at `info`.
fn write_loop(mut writer: Writer, ctx: &Context, rx: std::sync::mpsc::Receiver<Msg>) {
    let job = ctx.job.as_str();
    let mut failed = false;
    // A sync on the way that failed is not tried again before the next flush: one warning,
    // not one every few megabytes of a failing disk.
    let mut sync_failed = false;
    for msg in rx {
        match msg {
            Msg::Records(batch) => {
                for r in batch {
                    let e = ctx.build(r);
                    if failed {
                        crate::provlog::trace_entry(&e);
                    } else if let Err(err) = writer.append(&e) {
                        tracing::warn!(job, error = %err, "provisioning log write failed; no further entries this run");
                        failed = true;
                    }
                }
                if !sync_failed && writer.unsynced() >= SYNC_EVERY {
                    sync_failed = !sync(&mut writer, job, failed);
                }
            }
            Msg::Flush(ack) => {
                sync_failed = !sync(&mut writer, job, failed);
                let _ = ack.send(());
            }
        }
    }
    // The sink is gone: whatever came after the last sync is made durable too.
    sync(&mut writer, job, failed);
}

/// Hands `msg` to the writer thread. A full queue (a disk slower than the cycle, or stalled)
/// is waited for off the async worker: the daemon's other tasks (its control socket, its
/// signal handlers) go on meanwhile.
fn queue(tx: &std::sync::mpsc::SyncSender<Msg>, msg: Msg) {
    if let Err(std::sync::mpsc::TrySendError::Full(msg)) = tx.try_send(msg) {
        let _ = crate::util::off_worker(|| tx.send(msg));
    }
}

/// Syncs the writer (unless its writing failed already); false, with a warning, when the
/// sync failed.
fn sync(writer: &mut Writer, job: &str, failed: bool) -> bool {
    if failed {
        return true;
    }
    match writer.sync() {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(job, error = %err, "provisioning log sync failed");
            false
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
        let ctx = Context {
            job: job.to_string(),
            source_system,
            target_system,
            initiated_by,
        };
        let thread = std::thread::Builder::new()
            .name("provisiond-provlog".into())
            .spawn(move || write_loop(writer, &ctx, rx));
        match thread {
            Ok(thread) => Some(LogSink {
                tx: Some(tx),
                thread: Some(thread),
                pending: std::sync::Mutex::new(Pending::default()),
            }),
            Err(e) => {
                tracing::warn!(job, error = %e, "no thread for the provisioning logs; the cycle runs without them");
                None
            }
        }
    }

    /// Queue one record, stamped now.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        cycle_id: &str,
        ty: ObjectType,
        source_id: &str,
        name: &str,
        target_id: Option<&str>,
        duration_ms: u64,
        what: What,
    ) {
        let Some(tx) = &self.tx else { return };
        // A poisoned lock (a task panicked while holding it) still holds sound records.
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cycle_id = match &pending.cycle {
            Some(c) if &**c == cycle_id => c.clone(),
            _ => {
                let c: Arc<str> = Arc::from(cycle_id);
                pending.cycle = Some(c.clone());
                c
            }
        };
        // Stamped under the lock, so records reach the file in time order (a query relies
        // on it to stop early).
        let r = Record {
            at: chrono::Utc::now(),
            cycle_id,
            ty,
            source_id: source_id.to_string(),
            name: name.to_string(),
            target_id: target_id.map(str::to_string),
            duration_ms,
            what,
        };
        pending.records.push(r);
        if pending.records.len() >= BATCH {
            let batch = std::mem::replace(&mut pending.records, Vec::with_capacity(BATCH));
            // Sent under the lock, for the order. The thread ends only when this sink is
            // dropped: a send cannot fail before.
            queue(tx, Msg::Records(batch));
        }
    }

    /// Hand the records not yet sent to the writer thread (before a sync, and at the end).
    fn hand_over(&self) {
        let Some(tx) = &self.tx else { return };
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !pending.records.is_empty() {
            let batch = std::mem::take(&mut pending.records);
            queue(tx, Msg::Records(batch));
        }
    }

    /// Makes every entry so far durable: the cycle calls it before it commits, so its
    /// entries are durable before its watermark moves.
    pub(crate) async fn flush(&self) {
        self.hand_over();
        let Some(tx) = &self.tx else { return };
        let (ack, done) = tokio::sync::oneshot::channel();
        // A thread gone drops the message with its `ack`: `done` then ends at once.
        queue(tx, Msg::Flush(ack));
        let _ = done.await;
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
        let (kind, reason, matching, modified) = match action {
            Action::Provision(p) => (
                ProvisioningAction::Create,
                None,
                p.mapped.matching.clone(),
                p.mapped
                    .values
                    .shared()
                    .chain(p.mapped.create_only.shared())
                    .map(|(k, v)| Prop {
                        name: PropName::Shared(k.clone()),
                        old: None,
                        new: Some(v.clone()),
                    })
                    .collect(),
            ),
            Action::Update(u) => (
                ProvisioningAction::Update,
                None,
                vec![],
                u.changes
                    .iter()
                    .map(|c| Prop {
                        name: PropName::Owned(c.path.clone()),
                        old: c.old.clone(),
                        new: c.new.clone(),
                    })
                    .collect(),
            ),
            Action::Disable(d) => (
                ProvisioningAction::Disable,
                Some(d.reason.clone()),
                vec![],
                vec![Prop {
                    name: PropName::Static("active"),
                    old: Some(Value::Bool(true)),
                    new: Some(Value::Bool(false)),
                }],
            ),
            Action::Delete(d) => (
                ProvisioningAction::Delete,
                Some(d.reason.clone()),
                vec![],
                vec![],
            ),
        };
        let adopted = matches!(done, Done::Ok { verb: "adopt", .. });
        // A create that matched an existing object is an update of it, as Entra logs it.
        let kind = if adopted {
            ProvisioningAction::Update
        } else {
            kind
        };
        // The export names the target id of what it created or changed; a delete names none
        // (the object is gone), so its id comes from the action, as for a failure.
        let target_id = match (&done, action) {
            (
                Done::Ok {
                    target_id: Some(id),
                    ..
                },
                _,
            ) => Some(*id),
            (_, Action::Update(u)) => Some(u.target_id.as_str()),
            (_, Action::Disable(d)) => Some(d.target_id.as_str()),
            (_, Action::Delete(d)) => Some(d.target_id.as_str()),
            (_, Action::Provision(_)) => None,
        };
        let outcome = match done {
            Done::Ok { verb, .. } => Outcome::Ok {
                gone: verb == "gone",
                adopted,
            },
            Done::Failed {
                code,
                reason,
                transient,
            } => Outcome::Failed {
                code: code.to_string(),
                reason: reason.to_string(),
                transient,
            },
        };
        self.send(
            cycle_id,
            ty,
            source_id,
            name,
            target_id,
            duration_ms,
            What::Exported {
                kind,
                provision: matches!(action, Action::Provision(_)),
                reason,
                matching,
                modified,
                outcome,
            },
        );
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
        self.send(
            cycle_id,
            ObjectType::Group,
            &m.group_source_id,
            &m.display_name,
            Some(&m.group_target_id),
            0,
            What::Membership {
                adding,
                listed: crate::util::text::bounded_list(ids),
                count: ids.len(),
                failure: failure.map(|(c, r)| (c.to_string(), r.to_string())),
            },
        );
    }

    /// A disable or delete the deletion threshold held back.
    pub(crate) fn staged(&self, cycle_id: &str, s: &StagedDelete, threshold: &str) {
        self.send(
            cycle_id,
            s.object_type,
            &s.source_id,
            &s.display_name,
            Some(&s.target_id),
            0,
            What::Staged {
                action: s.action,
                threshold: threshold.to_string(),
            },
        );
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
        self.send(
            cycle_id,
            ty,
            source_id,
            name,
            None,
            0,
            What::Skipped {
                code: code.map(str::to_string),
                reason: reason.to_string(),
            },
        );
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

impl Context {
    /// The entry of a record, with Entra's steps: the texts are written here, on the writer
    /// thread, from what the cycle handed over.
    fn build(&self, r: Record) -> Entry {
        let Record {
            at,
            cycle_id,
            ty,
            source_id,
            name,
            target_id,
            duration_ms,
            what,
        } = r;
        let tn = type_name(ty);
        let mut steps = vec![self.import_step(ty, &source_id, &name)];
        let (kind, status, modified) = match what {
            What::Exported {
                kind,
                provision,
                reason,
                matching,
                modified,
                outcome,
            } => {
                let tid = target_id.as_deref().unwrap_or("");
                steps.push(step(
                    "EntrySynchronizationScoping",
                    StepType::Scoping,
                    Status::Success,
                    // The identities name the object: each step says only what it adds (entries
                    // stay small, and a cycle writes hundreds of thousands).
                    reason.unwrap_or_else(|| "In scope".to_string()),
                ));
                let adopted = matches!(outcome, Outcome::Ok { adopted: true, .. });
                let matched = if provision && adopted {
                    format!("Matched an existing {tn} in the target ({tid})")
                } else if provision {
                    let on = matching
                        .iter()
                        .map(|(k, v)| format!("{k} = {}", show_ref(v)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("No matching {tn} in the target (matched on {on})")
                } else {
                    format!("Linked to the target {tn} {tid} by an earlier cycle")
                };
                steps.push(step(
                    "EntrySynchronizationMatching",
                    StepType::Matching,
                    Status::Success,
                    matched,
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
                let (status, mut export) = match outcome {
                    Outcome::Ok { gone: true, .. } => (
                        ok(Status::Warning),
                        step(
                            export_name,
                            StepType::Export,
                            Status::Warning,
                            format!("The {tn} was already absent from the target; its link was forgotten"),
                        ),
                    ),
                    Outcome::Ok { .. } => (
                        ok(Status::Success),
                        step(
                            export_name,
                            StepType::Export,
                            Status::Success,
                            format!(
                                "{} in the target ({tid})",
                                match kind {
                                    ProvisioningAction::Create => "Created",
                                    ProvisioningAction::Delete => "Deleted",
                                    ProvisioningAction::Disable => "Disabled",
                                    _ => "Updated",
                                },
                            ),
                        ),
                    ),
                    Outcome::Failed {
                        code,
                        reason,
                        transient,
                    } => {
                        let description = format!("{code}: {reason}");
                        (
                            StatusInfo {
                                status: Status::Failure,
                                error_information: Some(ErrorInfo {
                                    recommended_action: recommended(&code).map(str::to_string),
                                    error_code: code,
                                    reason,
                                    additional_details: Some(
                                        "The action is kept in escrow and retried by later cycles."
                                            .into(),
                                    ),
                                    error_category: Some(
                                        if transient {
                                            "failure"
                                        } else {
                                            "nonServiceFailure"
                                        }
                                        .into(),
                                    ),
                                }),
                            },
                            step(export_name, StepType::Export, Status::Failure, description),
                        )
                    }
                };
                export
                    .details
                    .insert("ReportableIdentifier".into(), name.clone());
                steps.push(export);
                let modified = modified
                    .into_iter()
                    .map(|p| ModifiedProperty {
                        display_name: p.name.into_string(),
                        old_value: p.old.map(show),
                        new_value: p.new.map(show),
                    })
                    .collect();
                (kind, status, modified)
            }
            What::Membership {
                adding,
                listed,
                count,
                failure,
            } => {
                let verb = if adding { "Added" } else { "Removed" };
                let (status, export) = match failure {
                    None => (
                        ok(Status::Success),
                        step(
                            "EntryExportUpdate",
                            StepType::Export,
                            Status::Success,
                            format!("{verb} {count} member(s)"),
                        ),
                    ),
                    Some((code, reason)) => {
                        let description = format!("{code}: {reason}");
                        (
                            StatusInfo {
                                status: Status::Failure,
                                error_information: Some(ErrorInfo {
                                    recommended_action: recommended(&code).map(str::to_string),
                                    error_code: code,
                                    reason,
                                    additional_details: None,
                                    error_category: Some("nonServiceFailure".into()),
                                }),
                            },
                            step(
                                "EntryExportUpdate",
                                StepType::Export,
                                Status::Failure,
                                description,
                            ),
                        )
                    }
                };
                steps.push(step(
                    "EntryReferenceResolution",
                    StepType::ReferenceResolution,
                    Status::Success,
                    format!("Resolved {count} member reference(s) to target ids"),
                ));
                steps.push(export);
                let (old_value, new_value) = if adding {
                    (None, Some(listed))
                } else {
                    (Some(listed), None)
                };
                let modified = vec![ModifiedProperty {
                    display_name: "members".into(),
                    old_value,
                    new_value,
                }];
                (ProvisioningAction::Update, status, modified)
            }
            What::Staged { action, threshold } => {
                let what = match action {
                    StagedAction::Disable => "disable",
                    StagedAction::Delete => "delete",
                };
                let reason = format!(
                    "The {what} was held back: this cycle's disables and deletes reached the deletion threshold ({threshold}). Review with `provisiond logs --job {job} --action stagedDelete`, then `provisiond allow-deletes --job {job}`.",
                    job = self.job
                );
                steps.push(step(
                    "EntrySynchronizationProcessing",
                    StepType::Processing,
                    Status::Skipped,
                    reason.clone(),
                ));
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
                (ProvisioningAction::StagedDelete, status, vec![])
            }
            What::Skipped { code, reason } => {
                let scoping = code.is_none();
                steps.push(step(
                    "EntrySynchronizationScoping",
                    StepType::Scoping,
                    if scoping {
                        Status::Skipped
                    } else {
                        Status::Success
                    },
                    if scoping {
                        format!("{tn} '{name}' is out of scope: {reason}")
                    } else {
                        format!("{tn} '{name}' is in scope")
                    },
                ));
                if !scoping {
                    steps.push(step(
                        "EntrySynchronizationSkip",
                        StepType::Processing,
                        Status::Skipped,
                        reason.clone(),
                    ));
                }
                let status = StatusInfo {
                    status: Status::Skipped,
                    error_information: code.map(|c| ErrorInfo {
                        recommended_action: recommended(&c).map(str::to_string),
                        error_code: c,
                        reason,
                        additional_details: None,
                        error_category: Some("nonServiceFailure".into()),
                    }),
                };
                (ProvisioningAction::Other, status, vec![])
            }
        };
        Entry {
            id: fast_uuid(),
            activity_date_time: at,
            change_id: fast_uuid(),
            cycle_id: cycle_id.to_string(),
            job_id: self.job.clone(),
            duration_in_milliseconds: duration_ms,
            initiated_by: self.initiated_by.clone(),
            provisioning_action: kind,
            provisioning_status_info: status,
            provisioning_steps: steps,
            modified_properties: modified,
            target_identity: Identity {
                id: target_id.unwrap_or_default(),
                display_name: name.clone(),
                identity_type: tn.into(),
            },
            source_identity: Identity {
                id: source_id,
                display_name: name,
                identity_type: tn.into(),
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
}

/// A status with no error.
fn ok(status: Status) -> StatusInfo {
    StatusInfo {
        status,
        error_information: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{queue, Msg};
    use std::sync::mpsc;

    /// A full queue (a stalled disk behind the writer thread) is waited for off the async
    /// worker: on a one-worker runtime, as `run` and `sync` build, a timer task still fires
    /// while a record waits for room, and the record arrives once there is room.
    #[test]
    fn a_full_queue_leaves_the_only_async_worker_to_other_tasks() {
        let (tx, rx) = mpsc::sync_channel::<Msg>(1);
        queue(&tx, Msg::Records(Vec::new()));
        crate::util::blocking::test_support::assert_worker_free_while(
            "a record waiting for room",
            async move { queue(&tx, Msg::Records(Vec::new())) },
            // Room made.
            || assert!(matches!(rx.recv(), Ok(Msg::Records(_)))),
        );
        assert!(matches!(rx.recv(), Ok(Msg::Records(_))));
    }
}
