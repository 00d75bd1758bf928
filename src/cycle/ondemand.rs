//! Provision on demand (`provisiond provision`): one user, or one group with up to
//! [`MAX_MEMBERS`] members, run through Entra's steps at once, each step reported.
//!
//! The object is read alone from the source ([`Source::read_one`]), scoped with
//! [`crate::scope::evaluate`], planned with the cycle's planner against the job's links and
//! exported with the cycle's [`Exporter`], so a link is written exactly as a cycle writes it
//! (after the target confirmed). Only the asked objects are acted on: the one-object
//! directory is never taken as "everything else was deleted". Staged deletes and the
//! quarantine are left alone (an on-demand run sends no staged delete), and the job's record
//! (watermark, last cycle) is not touched.
//!
//! [`Source::read_one`]: crate::source::Source::read_one

use super::escrow::Book;
use super::export::{ActionRecord, Exporter};
use super::JobSpec;
use crate::mapping::expr::EvalEnv;
use crate::mapping::Mapped;
use crate::model::{Directory, LinkIndex, ObjectType, SourceObject};
use crate::plan::{self, Action, PlanSettings};
use crate::provlog::{
    Entry, ErrorInfo, Identity, InitiatedBy, ModifiedProperty, ProvisioningAction, Status,
    StatusInfo, Step, StepType, SystemInfo,
};
use crate::scope::{self, OutOfScope, ScopeMode, ScopeSettings, Scoped};
use crate::source::{OneQuery, OneRead};
use crate::state::StateStore;
use crate::summary::Problem;
use crate::target::{PatchOp, RequestCounts, Target, TargetError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most members a group takes on demand, as Entra's on-demand API.
pub(crate) const MAX_MEMBERS: usize = 5;

/// The code of a disable or delete held because the deletion threshold staged it.
const STAGED_HELD: &str = "StagedDeleteHeld";

/// What to provision on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemandRequest {
    pub object_type: ObjectType,
    /// A user: id, `userPrincipalName` or `mail`; a group: id or `displayName`.
    pub key: String,
    /// Groups only: at most [`MAX_MEMBERS`] member keys.
    #[serde(default)]
    pub members: Vec<String>,
    /// Who asked (`$USER`), for the log entry's `initiatedBy`.
    pub initiated_by: String,
}

/// The outcome of an on-demand run: `provisiond provision --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnDemandResult {
    /// `create`, `update`, `disable`, `delete` or `skip` (`other` when nothing could be run).
    pub action: String,
    pub status: Status,
    pub steps: Vec<Step>,
    /// The provisioning log entry's id.
    pub log_id: String,
    /// Why the log entry could not be written, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
}

/// Append `entry` to the job's provisioning log (`<state_dir>/logs/<job>/`, the hourly
/// segment of its time, like a cycle's entries), durably: `provisiond logs` finds it with the
/// cycles' entries, and it is also a tracing event.
pub(crate) fn write_log_entry(
    state_dir: &Path,
    entry: &Entry,
) -> Result<(), crate::provlog::LogError> {
    let mut writer = crate::provlog::Writer::open(state_dir, &entry.job_id)?;
    writer.append(entry)?;
    writer.sync()
}

/// Run `req` for `job` and write its log entry under `state_dir` (none: not written).
pub(crate) async fn provision_on_demand(
    job: &JobSpec,
    store: &dyn StateStore,
    target: &dyn Target,
    req: &OnDemandRequest,
    state_dir: Option<&Path>,
    stop: &CancellationToken,
) -> OnDemandResult {
    let started = Instant::now();
    let mut run = Run::new(req);
    let span =
        tracing::info_span!("provision_on_demand", job = %job.name, cycle_id = %run.cycle_id);
    let remembered = Remembered::new(target);
    tracing::Instrument::instrument(run.go(job, store, &remembered, req, stop), span).await;
    let entry = run.entry(job, target, started);
    let log_error = state_dir.and_then(|dir| write_log_entry(dir, &entry).err());
    if let Some(e) = &log_error {
        tracing::error!(job = %job.name, error = %e, "on-demand log entry not written");
    }
    tracing::info!(
        job = %job.name,
        log_id = %entry.id,
        action = %run.action,
        status = entry.provisioning_status_info.status.as_str(),
        "provisioned on demand"
    );
    OnDemandResult {
        action: run.action.clone(),
        status: entry.provisioning_status_info.status,
        steps: entry.provisioning_steps.clone(),
        log_id: entry.id.clone(),
        log_error: log_error.map(|e| e.to_string()),
    }
}

/// The run's target, answering the export's search with the matching step's answer: the step
/// searches each matching attribute to report what it finds, and the export then searches
/// the same attribute again before it creates; the target is asked once. Each answer the step
/// got is given once, to the next identical search, and only the step's: a search after that
/// (the export's after a 409, to adopt what appeared meanwhile) goes to the target.
struct Remembered<'a> {
    inner: &'a dyn Target,
    /// The step's answers by type, attribute and value (rendered as JSON), not yet given.
    found: std::sync::Mutex<HashMap<(ObjectType, String, String), Vec<Value>>>,
}

impl<'a> Remembered<'a> {
    fn new(inner: &'a dyn Target) -> Self {
        Remembered {
            inner,
            found: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn answers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(ObjectType, String, String), Vec<Value>>> {
        // A panic while holding the lock cannot leave the map half-written (one insert or
        // remove), so a poisoned lock's map is still sound.
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The matching step's search: asks the target and keeps the answer for the export.
    async fn search(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        let hits = self.inner.find(ty, attr, value).await?;
        self.answers()
            .insert((ty, attr.to_string(), value.to_string()), hits.clone());
        Ok(hits)
    }
}

#[async_trait::async_trait]
impl Target for Remembered<'_> {
    async fn find(
        &self,
        ty: ObjectType,
        attr: &str,
        value: &Value,
    ) -> Result<Vec<Value>, TargetError> {
        let kept = self
            .answers()
            .remove(&(ty, attr.to_string(), value.to_string()));
        match kept {
            Some(hits) => Ok(hits),
            None => self.inner.find(ty, attr, value).await,
        }
    }
    async fn create(&self, ty: ObjectType, body: Value) -> Result<Value, TargetError> {
        self.inner.create(ty, body).await
    }
    async fn patch(&self, ty: ObjectType, id: &str, ops: &[PatchOp]) -> Result<(), TargetError> {
        self.inner.patch(ty, id, ops).await
    }
    async fn delete(&self, ty: ObjectType, id: &str) -> Result<(), TargetError> {
        self.inner.delete(ty, id).await
    }
    async fn collection_empty(&self, ty: ObjectType) -> Result<bool, TargetError> {
        self.inner.collection_empty(ty).await
    }
    fn request_counts(&self) -> RequestCounts {
        self.inner.request_counts()
    }
    fn base_url(&self) -> Option<String> {
        self.inner.base_url()
    }
    fn previous_url(&self) -> Option<String> {
        self.inner.previous_url()
    }
}

/// One on-demand run as it goes: the steps so far and what the entry will say.
struct Run {
    cycle_id: String,
    steps: Vec<Step>,
    action: String,
    status: Status,
    error: Option<ErrorInfo>,
    modified: Vec<ModifiedProperty>,
    source: Identity,
    target: Identity,
    initiated_by: String,
}

/// A step with its details.
fn step(
    name: &str,
    ty: StepType,
    status: Status,
    description: String,
    details: BTreeMap<String, String>,
) -> Step {
    Step {
        name: name.into(),
        provisioning_step_type: ty,
        status,
        description,
        details,
    }
}

fn kind(ty: ObjectType) -> &'static str {
    match ty {
        ObjectType::User => "User",
        ObjectType::Group => "Group",
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Run {
    fn new(req: &OnDemandRequest) -> Run {
        Run {
            cycle_id: uuid::Uuid::new_v4().to_string(),
            steps: Vec::new(),
            action: "other".into(),
            status: Status::Failure,
            error: None,
            modified: Vec::new(),
            source: Identity {
                id: String::new(),
                display_name: req.key.clone(),
                identity_type: kind(req.object_type).into(),
            },
            target: Identity {
                id: String::new(),
                display_name: String::new(),
                identity_type: kind(req.object_type).into(),
            },
            initiated_by: req.initiated_by.clone(),
        }
    }

    /// End the run with a failure of `code`.
    fn fail(&mut self, code: &str, reason: String) {
        self.status = Status::Failure;
        self.error = Some(ErrorInfo {
            error_code: code.into(),
            reason,
            additional_details: None,
            error_category: Some("nonServiceFailure".into()),
            recommended_action: None,
        });
    }

    async fn go(
        &mut self,
        job: &JobSpec,
        store: &dyn StateStore,
        target: &Remembered<'_>,
        req: &OnDemandRequest,
        stop: &CancellationToken,
    ) {
        // The command line checks these too; a request on the control socket may not have.
        if req.members.len() > MAX_MEMBERS
            || (req.object_type == ObjectType::User && !req.members.is_empty())
        {
            return self.fail(
                "InvalidRequest",
                format!(
                    "members are given with a group only, at most {MAX_MEMBERS} (got {})",
                    req.members.len()
                ),
            );
        }
        // The job's links must belong to this target and source, as for a cycle.
        let mut meta = match store.meta(&job.name) {
            Ok(m) => m,
            Err(e) => return self.fail("StateStoreFailure", e.to_string()),
        };
        if let Err(e) = super::check_binding(job, target, &mut meta) {
            return self.fail("JobBindingMismatch", e.to_string());
        }

        // 1. Import: just this object.
        let query = OneQuery {
            object_type: req.object_type,
            key: req.key.clone(),
            members: req.members.clone(),
        };
        let read = match job.source.read_one(&query).await {
            Ok(Some(one)) => Ok(one),
            Ok(None) => {
                let how = match req.object_type {
                    ObjectType::User => "id, userPrincipalName or mail",
                    ObjectType::Group => "id or displayName",
                };
                let reason = format!(
                    "no {} answers to {:?} in the source ({how})",
                    req.object_type, req.key
                );
                Err(("EntryNotFound", reason))
            }
            Err(e) => Err(("SourceReadFailed", e.to_string())),
        };
        let one = match read {
            Ok(one) => one,
            Err((code, reason)) => {
                self.steps.push(step(
                    "EntryImport",
                    StepType::Import,
                    Status::Failure,
                    format!(
                        "Retrieve {} {} from the source",
                        kind(req.object_type),
                        req.key
                    ),
                    BTreeMap::from([("Error".into(), reason.clone())]),
                ));
                return self.fail(code, reason);
            }
        };
        let dir = &one.directory;
        let asked = asked_objects(&one, req.object_type);
        if let Some(obj) = dir.objects(req.object_type).get(&one.id) {
            self.source = Identity {
                id: one.id.clone(),
                display_name: obj.display_name().to_string(),
                identity_type: kind(req.object_type).into(),
            };
        }
        self.steps.push(import_step(&one, req.object_type));
        if let Some(r) = dir
            .rejected
            .iter()
            .find(|r| r.id.as_deref() == Some(one.id.as_str()))
        {
            return self.fail(
                "InvalidSourceObject",
                format!("{}: {}", r.position, r.reason),
            );
        }

        // 2. Scope, with each reason.
        let scoped = scope::evaluate(dir, &job.scope);
        for (ty, id) in &asked {
            if let Some(obj) = dir.objects(*ty).get(id) {
                self.steps
                    .push(scoping_step(dir, &job.scope, &scoped, obj, *ty));
            }
        }

        // 3. Plan against the job's links (all of them: an adoption must not take a target
        // object another source object holds), keeping only the asked objects' actions.
        let links = match store.links(&job.name) {
            Ok(l) => LinkIndex::new(l),
            Err(e) => return self.fail("StateStoreFailure", e.to_string()),
        };
        let env = EvalEnv {
            now: chrono::Utc::now(),
        };
        let settings = PlanSettings {
            null_values: job.null_values,
            env: &env,
        };
        let mut plan = plan::plan_objects(dir, &scoped, &job.mappings, &links, &settings);
        let is_asked = |ty: ObjectType, id: &str| asked.iter().any(|(t, i)| *t == ty && i == id);
        plan.actions
            .retain(|a| is_asked(a.object_type(), action_source_id(a)));
        let mut problems: Vec<Problem> = plan
            .problems
            .iter()
            .filter(|p| {
                p.id.as_deref()
                    .is_some_and(|id| asked.iter().any(|(_, i)| i == id))
            })
            .cloned()
            .collect();
        // A disable or delete the deletion threshold staged goes out only with a cycle after
        // `allow-deletes`: on demand it is held too, quarantined job or not.
        let staged = match store.staged_deletes(&job.name) {
            Ok(s) => s,
            Err(e) => return self.fail("StateStoreFailure", e.to_string()),
        };
        plan.actions.retain(|a| {
            let held = matches!(a, Action::Disable(_) | Action::Delete(_))
                && staged
                    .iter()
                    .any(|s| s.object_type == a.object_type() && s.source_id == action_source_id(a));
            if held {
                problems.push(Problem {
                    object_type: Some(a.object_type().as_str().to_string()),
                    id: Some(action_source_id(a).to_string()),
                    name: None,
                    code: STAGED_HELD.into(),
                    reason: format!(
                        "this {} is staged by the deletion threshold: it is sent only by a cycle after `provisiond allow-deletes --job {}`",
                        verb_of(a),
                        job.name
                    ),
                    count: 1,
                });
            }
            !held
        });

        // 4. Match between source and target.
        for (ty, id) in &asked {
            let action = plan
                .actions
                .iter()
                .find(|a| a.object_type() == *ty && action_source_id(a) == id);
            let name = dir
                .objects(*ty)
                .get(id)
                .map(|o| o.display_name().to_string())
                .unwrap_or_else(|| id.clone());
            if let Some(s) = matching_step(
                target,
                links.get(*ty, id).map(|l| l.to_link()).as_ref(),
                action,
                *ty,
                &name,
            )
            .await
            {
                self.steps.push(s);
            }
        }

        // 5. Perform the action, users before groups, as a cycle does.
        let now = chrono::Utc::now();
        let book = match Book::load(store, &job.name, now, false) {
            Ok(b) => b,
            Err(e) => return self.fail("StateStoreFailure", e.to_string()),
        };
        let planned: Vec<Action> = plan.actions.clone();
        let mut exporter = Exporter::new(
            &job.name,
            &self.cycle_id,
            target,
            store,
            links,
            1,
            job.member_batch,
            stop,
            &book,
        );
        exporter.record_actions = true;
        let (users, groups): (Vec<Action>, Vec<Action>) = std::mem::take(&mut plan.actions)
            .into_iter()
            .partition(|a| a.object_type() == ObjectType::User);
        exporter.run(&users).await;
        exporter.run(&groups).await;
        exporter.settle().await;

        // Group members: only the asked ones are added or removed.
        if req.object_type == ObjectType::Group && exporter.aborted().is_none() {
            let memberships = {
                let links = exporter.links();
                let refs = plan::plan_references(dir, &scoped, &job.mappings, &links, &settings);
                let member_targets: HashSet<String> = one
                    .member_ids
                    .iter()
                    .filter_map(|m| Some(links.get(ObjectType::User, m)?.target_id().to_string()))
                    .collect();
                refs.memberships
                    .into_iter()
                    .filter(|m| m.group_source_id == one.id)
                    .map(|mut m| {
                        m.add.retain(|t| member_targets.contains(t));
                        m.remove.retain(|t| member_targets.contains(t));
                        m
                    })
                    .filter(|m| !m.add.is_empty() || !m.remove.is_empty())
                    .collect::<Vec<_>>()
            };
            exporter.run_memberships(&memberships).await;
            exporter.settle().await;
        }
        let aborted = exporter.aborted();
        // The job's link count (`JobMeta::linked`, what a delta cycle's deletion threshold
        // counts from) follows the links this run made.
        let linked = super::count_links(&exporter.links());
        match store.meta(&job.name) {
            Ok(mut m) if m.linked.is_some_and(|n| n != linked) => {
                m.linked = Some(linked);
                if let Err(e) = store.put_meta(&job.name, &m) {
                    tracing::warn!(job = %job.name, error = %e, "on-demand run: the job's link count was not updated (the next full cycle repairs it)");
                }
            }
            _ => {}
        }
        // An fsync: off the async worker, which the control socket's other requests share.
        if let Err(e) = crate::util::off_worker(|| store.flush()) {
            tracing::warn!(job = %job.name, error = %e, "on-demand run: flushing the store failed");
        }
        let (_, _, _, export_problems, records) = exporter.into_results();

        for (ty, id) in &asked {
            let planned_action = planned
                .iter()
                .find(|a| a.object_type() == *ty && action_source_id(a) == id);
            let record = records.iter().find(|r| {
                r.object_type == *ty && r.source_id == *id && !r.action.ends_with("_members")
            });
            let decision = scoped.decision(*ty, id).cloned();
            let problem = problems
                .iter()
                .chain(export_problems.iter())
                .find(|p| p.id.as_deref() == Some(id.as_str()));
            let name = dir
                .objects(*ty)
                .get(id)
                .map_or(id.as_str(), |o| o.display_name());
            let outcome = action_step(planned_action, record, decision, problem, *ty, name);
            if *ty == req.object_type && *id == one.id {
                self.conclude(&outcome, planned_action, record);
            }
            self.steps.push(outcome.step);
        }
        if let Some(s) = membership_step(&records, &one, &export_problems) {
            if s.status == Status::Failure && self.status == Status::Success {
                self.status = Status::Warning;
            }
            self.steps.push(s);
        }
        if let Some(a) = aborted {
            self.fail(&a.code, a.reason);
        }
    }

    /// Take the asked object's action as the run's.
    fn conclude(
        &mut self,
        outcome: &Outcome,
        planned: Option<&Action>,
        record: Option<&ActionRecord>,
    ) {
        self.action = outcome.action.clone();
        self.status = outcome.step.status;
        if let Some(r) = record {
            if let Some(t) = &r.target_id {
                self.target.id = t.clone();
            }
            self.target.display_name = r.name.clone();
        }
        if let Some((code, reason)) = &outcome.error {
            self.error = Some(ErrorInfo {
                error_code: code.clone(),
                reason: reason.clone(),
                additional_details: None,
                error_category: Some(
                    if outcome.step.status == Status::Failure {
                        "failure"
                    } else {
                        "nonServiceFailure"
                    }
                    .into(),
                ),
                recommended_action: None,
            });
        }
        if outcome.step.status == Status::Success {
            self.modified = modified_properties(planned);
        }
    }

    /// The provisioning log entry of this run.
    fn entry(&self, job: &JobSpec, target: &dyn Target, started: Instant) -> Entry {
        let action = match self.action.as_str() {
            "create" => ProvisioningAction::Create,
            "update" => ProvisioningAction::Update,
            "disable" => ProvisioningAction::Disable,
            "delete" => ProvisioningAction::Delete,
            _ => ProvisioningAction::Other,
        };
        Entry {
            id: uuid::Uuid::new_v4().to_string(),
            activity_date_time: chrono::Utc::now(),
            change_id: uuid::Uuid::new_v4().to_string(),
            cycle_id: self.cycle_id.clone(),
            job_id: job.name.clone(),
            duration_in_milliseconds: started.elapsed().as_millis() as u64,
            initiated_by: InitiatedBy::on_demand(&self.initiated_by),
            provisioning_action: action,
            provisioning_status_info: StatusInfo {
                status: self.status,
                error_information: self.error.clone(),
            },
            provisioning_steps: self.steps.clone(),
            modified_properties: self.modified.clone(),
            source_identity: self.source.clone(),
            target_identity: self.target.clone(),
            source_system: SystemInfo {
                display_name: job.source.system_name().to_string(),
            },
            target_system: SystemInfo {
                display_name: target.base_url().unwrap_or_default(),
            },
        }
    }
}

/// The asked objects, the asked one first: (type, source id).
fn asked_objects(one: &OneRead, ty: ObjectType) -> Vec<(ObjectType, String)> {
    let mut asked = vec![(ty, one.id.clone())];
    asked.extend(one.member_ids.iter().map(|m| (ObjectType::User, m.clone())));
    asked
}

fn action_source_id(a: &Action) -> &str {
    match a {
        Action::Provision(p) => &p.source_id,
        Action::Update(u) => &u.source_id,
        Action::Disable(d) => &d.source_id,
        Action::Delete(d) => &d.source_id,
    }
}

/// Entra's "Import": what was read.
fn import_step(one: &OneRead, ty: ObjectType) -> Step {
    let dir = &one.directory;
    let mut details = BTreeMap::new();
    let mut status = Status::Success;
    let mut description = format!("Retrieved {} {} from the source system", kind(ty), one.id);
    if let Some(obj) = dir.objects(ty).get(&one.id) {
        description = format!(
            "Retrieved {} {} from the source system",
            kind(ty),
            obj.display_name()
        );
        details.insert("Source id".into(), obj.id.clone());
        for name in ["displayName", "userPrincipalName", "mail", "accountEnabled"] {
            if let Some(v) = obj.attr(name) {
                details.insert(name.into(), text(&v));
            }
        }
    }
    if ty == ObjectType::User {
        let groups: Vec<&str> = dir.groups.values().map(|g| g.display_name()).collect();
        details.insert(
            "Groups".into(),
            if groups.is_empty() {
                "none".into()
            } else {
                groups.join(", ")
            },
        );
    } else {
        let names: Vec<&str> = one
            .member_ids
            .iter()
            .filter_map(|m| dir.users.get(m).map(|u| u.display_name()))
            .collect();
        details.insert("Members asked".into(), names.join(", "));
        if !one.missing_members.is_empty() {
            status = Status::Warning;
            details.insert("Members not found".into(), one.missing_members.join(", "));
        }
    }
    let assigned: Vec<String> = dir
        .assignments
        .iter()
        .map(|a| {
            let who = dir
                .users
                .get(&a.principal_id)
                .or_else(|| dir.groups.get(&a.principal_id))
                .map_or(a.principal_id.as_str(), |o| o.display_name());
            format!("{who} ({})", a.role)
        })
        .collect();
    details.insert(
        "App role assignments".into(),
        if assigned.is_empty() {
            "none".into()
        } else {
            assigned.join(", ")
        },
    );
    step(
        "EntryImport",
        StepType::Import,
        status,
        description,
        details,
    )
}

/// Entra's "Determine if user is in scope", every reason evaluated on its own.
fn scoping_step(
    dir: &Directory,
    settings: &ScopeSettings,
    scoped: &Scoped,
    obj: &SourceObject,
    ty: ObjectType,
) -> Step {
    let yes_no = |b: bool| if b { "True" } else { "False" }.to_string();
    let mut details = BTreeMap::new();
    let all = settings.mode == ScopeMode::All;
    if ty == ObjectType::User {
        let active = obj.enabled() && !obj.soft_deleted();
        let mut why = yes_no(active);
        if obj.soft_deleted() {
            why.push_str(" (soft-deleted)");
        } else if !obj.enabled() {
            why.push_str(" (accountEnabled is false)");
        }
        details.insert("Active in source system".into(), why);
    }
    details.insert("Scope sync all".into(), yes_no(all));
    // Assignment alone: no excluded roles, no filters.
    let bare = ScopeSettings {
        mode: settings.mode,
        excluded_roles: Vec::new(),
        user_filters: Vec::new(),
        group_filters: Vec::new(),
    };
    let assigned = !matches!(
        scope::evaluate(dir, &bare).decision(ty, &obj.id),
        Some(Err(OutOfScope::NotAssigned))
    );
    if !all {
        let direct = dir.assignments.iter().any(|a| a.principal_id == obj.id);
        let through: Vec<&str> = dir
            .groups
            .values()
            .filter(|g| {
                g.members.contains(&obj.id)
                    && dir.assignments.iter().any(|a| a.principal_id == g.id)
            })
            .map(|g| g.display_name())
            .collect();
        let how = match (assigned, direct, through.is_empty()) {
            (false, _, _) => "False".to_string(),
            (true, true, _) => "True (directly)".to_string(),
            (true, false, false) => format!("True (through group {})", through.join(", ")),
            (true, false, true) => "True".to_string(),
        };
        details.insert("Assigned to application".into(), how);
        // Roles: the excluded ones do not count.
        let roled = ScopeSettings {
            excluded_roles: settings.excluded_roles.clone(),
            ..bare.clone()
        };
        let role = match scope::evaluate(dir, &roled).decision(ty, &obj.id) {
            Some(Err(OutOfScope::ExcludedRole(r))) => {
                format!("False (assigned only with the excluded role {r})")
            }
            _ if !assigned => "False (not assigned)".to_string(),
            _ => match scoped.roles.get(&obj.id) {
                Some(roles) if !roles.is_empty() => format!(
                    "True ({})",
                    roles
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => "True".to_string(),
            },
        };
        let label = match ty {
            ObjectType::User => "User has required role",
            ObjectType::Group => "Group has required role",
        };
        details.insert(label.into(), role);
    }
    let filters = match ty {
        ObjectType::User => &settings.user_filters,
        ObjectType::Group => &settings.group_filters,
    };
    details.insert(
        "Scoping filters".into(),
        if filters.is_empty() {
            "None configured".to_string()
        } else {
            match scope::filter::check_any(filters, obj) {
                Ok(()) => "Passed".to_string(),
                Err(e) => format!("Failed: {e}"),
            }
        },
    );
    let (status, result) = match scoped.decision(ty, &obj.id) {
        Some(Ok(())) => (Status::Success, "In scope".to_string()),
        Some(Err(why)) => (Status::Skipped, format!("Out of scope: {why}")),
        None => (Status::Skipped, "Out of scope".to_string()),
    };
    details.insert("Result".into(), result);
    step(
        "EntrySynchronizationScoping",
        StepType::Scoping,
        status,
        format!(
            "Determine if {} {} is in scope",
            kind(ty),
            obj.display_name()
        ),
        details,
    )
}

/// Entra's "Match user between source and target": the link, or each matching attribute in
/// precedence order with its number of matches. `None` for an object out of scope that was
/// never linked (nothing to match).
async fn matching_step(
    target: &Remembered<'_>,
    link: Option<&crate::model::Link>,
    action: Option<&Action>,
    ty: ObjectType,
    name: &str,
) -> Option<Step> {
    let description = format!("Match {} {name} between source and target", kind(ty));
    let mut details = BTreeMap::new();
    if let Some(l) = link {
        details.insert(
            "Matched by".into(),
            "the link kept from an earlier run".into(),
        );
        details.insert("Target id".into(), l.target_id.clone());
        if let Some((path, v)) = &l.matching.get() {
            details.insert("Matching attribute".into(), format!("{path} = {}", text(v)));
        }
        details.insert("Matches".into(), "1".into());
        return Some(step(
            "EntryMatching",
            StepType::Matching,
            Status::Success,
            description,
            details,
        ));
    }
    let Some(Action::Provision(p)) = action else {
        return None;
    };
    for (i, (path, value)) in p.mapped.matching.iter().enumerate() {
        let label = format!("Matching attribute {} ({path} eq {})", i + 1, text(value));
        match target.search(ty, path, value).await {
            Err(e) => {
                details.insert(label, format!("search failed: {e}"));
                return Some(step(
                    "EntryMatching",
                    StepType::Matching,
                    Status::Failure,
                    description,
                    details,
                ));
            }
            Ok(hits) => {
                details.insert(label, format!("{} match(es)", hits.len()));
                match hits.len() {
                    0 => continue,
                    1 => {
                        let id = hits[0].get("id").and_then(Value::as_str).unwrap_or("");
                        details.insert("Matches".into(), "1".into());
                        details.insert("Target id".into(), id.to_string());
                        return Some(step(
                            "EntryMatching",
                            StepType::Matching,
                            Status::Success,
                            description,
                            details,
                        ));
                    }
                    n => {
                        details.insert("Matches".into(), n.to_string());
                        return Some(step(
                            "EntryMatching",
                            StepType::Matching,
                            Status::Failure,
                            description,
                            details,
                        ));
                    }
                }
            }
        }
    }
    details.insert("Matches".into(), "0".into());
    Some(step(
        "EntryMatching",
        StepType::Matching,
        Status::Success,
        description,
        details,
    ))
}

/// The "Perform action" step of one object and what it says of the run.
struct Outcome {
    step: Step,
    action: String,
    error: Option<(String, String)>,
}

/// Entra's "Perform action": what was sent (or why nothing was).
fn action_step(
    planned: Option<&Action>,
    record: Option<&ActionRecord>,
    decision: Option<Result<(), OutOfScope>>,
    problem: Option<&Problem>,
    ty: ObjectType,
    name: &str,
) -> Outcome {
    let mut details = BTreeMap::new();
    let skipped = |code: &str, reason: String, description: String| {
        let mut details = BTreeMap::new();
        details.insert("Reason".to_string(), reason.clone());
        Outcome {
            step: step(
                "EntryExport",
                StepType::Export,
                Status::Skipped,
                description,
                details,
            ),
            action: "skip".into(),
            error: Some((code.to_string(), reason)),
        }
    };
    match (record, planned) {
        (Some(r), Some(a)) if r.action != "failed" => {
            let (verb, description) = match r.action.as_str() {
                "create" => ("create", format!("Created {} {name} in the target", kind(ty))),
                "adopt" => (
                    "update",
                    format!(
                        "Matched the existing target {} and linked it; attributes that differed were updated",
                        kind(ty)
                    ),
                ),
                "update" => ("update", format!("Updated {} {name} in the target", kind(ty))),
                "disable" => ("disable", format!("Disabled {} {name} in the target", kind(ty))),
                "delete" => ("delete", format!("Deleted {} {name} in the target", kind(ty))),
                other => (other, format!("{other} {} {name}", kind(ty))),
            };
            if let Some(t) = &r.target_id {
                details.insert("Target id".into(), t.clone());
            }
            for p in modified_properties(Some(a)) {
                details.insert(
                    p.display_name,
                    match (p.old_value, p.new_value) {
                        (Some(o), Some(n)) => format!("{o} -> {n}"),
                        (None, Some(n)) => n,
                        (Some(o), None) => format!("{o} -> (removed)"),
                        (None, None) => String::new(),
                    },
                );
            }
            if !r.detail.is_empty() {
                details.insert("Detail".into(), r.detail.clone());
            }
            Outcome {
                step: step(
                    "EntryExport",
                    StepType::Export,
                    Status::Success,
                    description,
                    details,
                ),
                action: verb.to_string(),
                error: None,
            }
        }
        (Some(r), _) => {
            let (code, reason) = problem
                .map(|p| (p.code.clone(), p.reason.clone()))
                .unwrap_or_else(|| ("ExportFailed".into(), r.detail.clone()));
            details.insert("Error".into(), format!("{code}: {reason}"));
            Outcome {
                step: step(
                    "EntryExport",
                    StepType::Export,
                    Status::Failure,
                    format!("Export of {} {name} to the target failed", kind(ty)),
                    details,
                ),
                action: planned.map_or("other", verb_of).to_string(),
                error: Some((code, reason)),
            }
        }
        (None, Some(a)) => {
            // Planned but not sent: stopped, or failed before a record (a problem).
            let (code, reason) = problem
                .map(|p| (p.code.clone(), p.reason.clone()))
                .unwrap_or_else(|| ("Interrupted".into(), "the action was not sent".into()));
            details.insert("Error".into(), format!("{code}: {reason}"));
            Outcome {
                step: step(
                    "EntryExport",
                    StepType::Export,
                    Status::Failure,
                    format!(
                        "The {} of {} {name} was not carried out",
                        verb_of(a),
                        kind(ty)
                    ),
                    details,
                ),
                action: verb_of(a).to_string(),
                error: Some((code, reason)),
            }
        }
        (None, None) => match (problem, decision) {
            (Some(p), _) if p.code == STAGED_HELD => skipped(
                STAGED_HELD,
                p.reason.clone(),
                format!("Skipped {} {name}: its staged deletion is held", kind(ty)),
            ),
            (Some(p), _) => {
                details.insert("Error".into(), format!("{}: {}", p.code, p.reason));
                Outcome {
                    step: step(
                        "EntryExport",
                        StepType::Export,
                        Status::Failure,
                        format!("{} {name} cannot be provisioned", kind(ty)),
                        details,
                    ),
                    action: "skip".into(),
                    error: Some((p.code.clone(), p.reason.clone())),
                }
            }
            (None, Some(Ok(()))) => skipped(
                "RedundantExport",
                "the target already has every mapped value".into(),
                format!("Skipped {} {name}: no change to export", kind(ty)),
            ),
            (None, Some(Err(why))) => skipped(
                "NotEffectivelyEntitled",
                format!("out of scope ({why}), and nothing in the target to disable or delete"),
                format!("Skipped {} {name}: out of scope", kind(ty)),
            ),
            (None, None) => skipped(
                "NotEffectivelyEntitled",
                "not in the source read".into(),
                format!("Skipped {} {name}: not read from the source", kind(ty)),
            ),
        },
    }
}

fn verb_of(a: &Action) -> &'static str {
    match a {
        Action::Provision(_) => "create",
        Action::Update(_) => "update",
        Action::Disable(_) => "disable",
        Action::Delete(_) => "delete",
    }
}

/// The attributes an action sends, as Graph's modified properties.
fn modified_properties(action: Option<&Action>) -> Vec<ModifiedProperty> {
    let sent = |mapped: &Mapped| -> Vec<ModifiedProperty> {
        mapped
            .values
            .iter()
            .chain(mapped.create_only.iter())
            .map(|(path, v)| ModifiedProperty {
                display_name: path.to_string(),
                old_value: None,
                new_value: Some(text(v)),
            })
            .collect()
    };
    match action {
        Some(Action::Provision(p)) => sent(&p.mapped),
        Some(Action::Update(u)) => u
            .changes
            .iter()
            .map(|c| ModifiedProperty {
                display_name: c.path.clone(),
                old_value: c.old.as_ref().map(text),
                new_value: c.new.as_ref().map(text),
            })
            .collect(),
        Some(Action::Disable(_)) => vec![ModifiedProperty {
            display_name: "active".into(),
            old_value: Some("true".into()),
            new_value: Some("false".into()),
        }],
        Some(Action::Delete(_)) | None => Vec::new(),
    }
}

/// The group's member changes, by name.
fn membership_step(records: &[ActionRecord], one: &OneRead, problems: &[Problem]) -> Option<Step> {
    if one.member_ids.is_empty() {
        return None;
    }
    let mut details = BTreeMap::new();
    for r in records.iter().filter(|r| r.source_id == one.id) {
        match r.action.as_str() {
            "add_members" => {
                details.insert("Members added".to_string(), r.members.join(", "));
            }
            "remove_members" => {
                details.insert("Members removed".to_string(), r.members.join(", "));
            }
            _ => {}
        }
    }
    let failed = problems.iter().find(|p| {
        p.id.as_deref() == Some(one.id.as_str()) && p.object_type.as_deref() == Some("group")
    });
    let status = if let Some(p) = failed.filter(|_| details.is_empty()) {
        details.insert("Error".into(), format!("{}: {}", p.code, p.reason));
        Status::Failure
    } else if details.is_empty() {
        details.insert(
            "Members".into(),
            "no change: the asked members in scope are already members".into(),
        );
        Status::Skipped
    } else {
        Status::Success
    };
    Some(step(
        "EntryExportReference",
        StepType::ReferenceResolution,
        status,
        "Update the group's members in the target".into(),
        details,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::parse_export;
    use crate::source::one::pick_one;
    use std::path::Path;

    /// A target that answers every search with one hit and counts the searches it got.
    struct Counting(std::sync::atomic::AtomicU64);

    #[async_trait::async_trait]
    impl Target for Counting {
        async fn find(&self, _: ObjectType, _: &str, _: &Value) -> Result<Vec<Value>, TargetError> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![serde_json::json!({ "id": format!("t{n}") })])
        }
        async fn create(&self, _: ObjectType, _: Value) -> Result<Value, TargetError> {
            Ok(serde_json::json!({ "id": "new" }))
        }
        async fn patch(&self, _: ObjectType, _: &str, _: &[PatchOp]) -> Result<(), TargetError> {
            Ok(())
        }
        async fn delete(&self, _: ObjectType, _: &str) -> Result<(), TargetError> {
            Ok(())
        }
        fn request_counts(&self) -> RequestCounts {
            RequestCounts::default()
        }
    }

    #[tokio::test]
    async fn the_steps_answer_is_given_once_to_the_same_search_only() {
        let target = Counting(std::sync::atomic::AtomicU64::new(0));
        let r = Remembered::new(&target);
        let v = Value::from("ann");
        let step = r.search(ObjectType::User, "userName", &v).await.unwrap();
        // The export's search: the step's answer, no request.
        assert_eq!(
            r.find(ObjectType::User, "userName", &v).await.unwrap(),
            step
        );
        // Another type, attribute or value is asked.
        r.find(ObjectType::Group, "userName", &v).await.unwrap();
        r.find(ObjectType::User, "externalId", &v).await.unwrap();
        r.find(ObjectType::User, "userName", &Value::from("bob"))
            .await
            .unwrap();
        // The same search again (after a 409): asked, with the target's new answer.
        let again = r.find(ObjectType::User, "userName", &v).await.unwrap();
        assert_ne!(again, step);
        assert_eq!(target.0.load(std::sync::atomic::Ordering::SeqCst), 5);
    }

    fn dir() -> Directory {
        parse_export(
            br#"{"users":[
                {"id":"u1","userPrincipalName":"ann@x","displayName":"Ann"},
                {"id":"u2","userPrincipalName":"bob@x","accountEnabled":false},
                {"id":"u3","userPrincipalName":"cy@x"},
                {"id":"u4","userPrincipalName":"di@x"}],
              "groups":[{"id":"g1","displayName":"Sales","members":["u1","u2"]}],
              "assignments":[{"principalId":"g1"},
                             {"principalId":"u3","role":"Default Access"}]}"#,
            Path::new("d.json"),
        )
        .unwrap()
    }

    fn scoping(key: &str) -> Step {
        let q = OneQuery {
            object_type: ObjectType::User,
            key: key.into(),
            members: vec![],
        };
        let one = pick_one(dir(), &q).unwrap();
        let settings = ScopeSettings::default();
        let scoped = scope::evaluate(&one.directory, &settings);
        let obj = &one.directory.users[&one.id];
        scoping_step(&one.directory, &settings, &scoped, obj, ObjectType::User)
    }

    #[test]
    fn the_scoping_step_shows_each_reason() {
        let s = scoping("ann@x");
        assert_eq!(s.status, Status::Success);
        assert_eq!(s.provisioning_step_type, StepType::Scoping);
        assert_eq!(s.details["Active in source system"], "True");
        assert_eq!(
            s.details["Assigned to application"],
            "True (through group Sales)"
        );
        assert_eq!(s.details["User has required role"], "True (User)");
        assert_eq!(s.details["Scoping filters"], "None configured");
        assert_eq!(s.details["Result"], "In scope");

        let s = scoping("bob@x");
        assert_eq!(s.status, Status::Skipped);
        assert!(s.details["Active in source system"].starts_with("False"));
        assert!(
            s.details["Result"].starts_with("Out of scope"),
            "{:?}",
            s.details
        );

        let s = scoping("cy@x");
        assert_eq!(s.details["Assigned to application"], "True (directly)");
        assert_eq!(
            s.details["User has required role"],
            "False (assigned only with the excluded role Default Access)"
        );
        assert_eq!(s.status, Status::Skipped);

        let s = scoping("di@x");
        assert_eq!(s.details["Assigned to application"], "False");
        assert_eq!(
            s.details["Result"],
            "Out of scope: not assigned to the application"
        );
    }

    #[test]
    fn an_out_of_scope_object_without_a_link_is_skipped_with_its_reason() {
        let o = action_step(
            None,
            None,
            Some(Err(OutOfScope::NotAssigned)),
            None,
            ObjectType::User,
            "Ann",
        );
        assert_eq!(o.action, "skip");
        assert_eq!(o.step.status, Status::Skipped);
        assert_eq!(o.step.description, "Skipped User Ann: out of scope");
        assert_eq!(o.error.unwrap().0, "NotEffectivelyEntitled");
        let o = action_step(None, None, Some(Ok(())), None, ObjectType::User, "Ann");
        assert_eq!(o.error.unwrap().0, "RedundantExport");
    }

    #[test]
    fn the_log_line_is_appended_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let e: Entry = serde_json::from_value(serde_json::json!({
            "id": "e1", "activityDateTime": "2026-01-01T00:00:00Z", "changeId": "c",
            "cycleId": "y", "jobId": "robin", "durationInMilliseconds": 1,
            "initiatedBy": {"initiatorType": "onDemand", "displayName": "ann"},
            "provisioningAction": "create",
            "provisioningStatusInfo": {"status": "success"},
            "sourceIdentity": {"id": "u1", "displayName": "Ann", "identityType": "User"},
            "targetIdentity": {"id": "t1", "displayName": "Ann", "identityType": "User"},
            "sourceSystem": {"displayName": "file"}, "targetSystem": {"displayName": "x"}
        }))
        .unwrap();
        write_log_entry(tmp.path(), &e).unwrap();
        write_log_entry(tmp.path(), &e).unwrap();
        let dir = tmp.path().join("logs/robin");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].to_string_lossy().ends_with("2026-01-01T00.jsonl"),
            "{files:?}"
        );
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let lines: Vec<Entry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![e.clone(), e]);
    }

    /// An on-demand run ends with a flush of the store: on a stalled disk it waits off the
    /// async worker, which the control socket's other requests share.
    #[test]
    fn a_stalled_flush_leaves_the_only_async_worker_to_other_tasks() {
        use std::sync::Arc;
        let directory = serde_json::json!({"users": [{"id": "u1", "userPrincipalName": "ann@x",
            "displayName": "Ann", "accountEnabled": true}], "groups": [], "assignments": []});
        let (_dir, job) = super::super::tests::all_users_job(&directory);
        let store = Arc::new(crate::state::MemoryStore::new());
        let store2 = Arc::clone(&store);
        let result = crate::state::memory::test_support::with_stalled_flushes(
            &store,
            "provision on demand",
            async move {
                let target = super::super::tests::Accepting(std::sync::atomic::AtomicU64::new(0));
                let req = OnDemandRequest {
                    object_type: ObjectType::User,
                    key: "ann@x".into(),
                    members: Vec::new(),
                    initiated_by: "test".into(),
                };
                let stop = CancellationToken::new();
                provision_on_demand(&job, &*store2, &target, &req, None, &stop).await
            },
        );
        assert_eq!(
            (result.action.as_str(), result.status),
            ("create", Status::Success),
            "{result:#?}"
        );
    }
}
