//! Attribute mappings: how a source object becomes the SCIM attributes the application should
//! have. Pure: a function of the object, its scope and the job's mappings.
//!
//! A mapping is data (`config/presets/*.toml` and the job's own `[[jobs.mappings.*]]`): a
//! target SCIM path and one of a source attribute, a constant or an expression, with Entra's
//! options "apply on create only", "default value if null" and matching precedence.

pub(crate) mod expr;

use crate::model::{AttrMap, ObjectType, SourceObject};
use expr::{EvalEnv, Expression, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};

/// Source attributes whose value is the id of another source object; they are exported as
/// that object's target id once it is known (Entra's "reference resolution" step).
pub(crate) const REFERENCE_ATTRIBUTES: &[&str] = &["manager"];

/// The generic SCIM preset, shipped as data.
pub const GENERIC_SCIM_PRESET: &str = include_str!("../../config/presets/generic-scim.toml");

/// The built-in presets, by the name a job's `preset` uses.
pub(crate) const BUILT_IN_PRESETS: &[(&str, &str)] = &[
    ("generic-scim", GENERIC_SCIM_PRESET),
    ("robin", include_str!("../../config/presets/robin.toml")),
];

/// Entra's "Apply this mapping".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Apply {
    #[default]
    Always,
    /// Only when the object is created.
    Create,
}

/// One mapping as written in a preset or a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Target SCIM attribute path, e.g. `emails[type eq "work"].value`.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default)]
    pub apply: Apply,
    /// Used on create when the mapping yields null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Matching precedence, 1 first. Absent: not a matching attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<u32>,
    /// `false` removes a preset's mapping for this target.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

impl Default for MappingSpec {
    fn default() -> Self {
        MappingSpec {
            target: String::new(),
            source: None,
            constant: None,
            expression: None,
            apply: Apply::Always,
            default: None,
            matching: None,
            enabled: true,
        }
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// A preset file: mappings per object type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetFile {
    /// Defaults for the job's target (the app's tenant URL).
    #[serde(default)]
    pub target: Option<PresetTarget>,
    #[serde(default)]
    pub users: Vec<MappingSpec>,
    #[serde(default)]
    pub groups: Vec<MappingSpec>,
}

/// Target defaults a preset may carry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetTarget {
    pub url: Option<String>,
}

/// Where a mapping's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MappingSource {
    Attribute(String),
    Constant(Value),
    Expression(Expression),
}

/// A checked mapping, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub target: String,
    /// `target` as an [`AttrMap`] key, shared by the mapped values of every object.
    pub key: crate::attrs::map::Key,
    pub source: MappingSource,
    pub apply: Apply,
    pub default: Option<Value>,
    pub matching: Option<u32>,
}

impl Mapping {
    /// A reference mapping exports another object's target id (e.g. the manager's).
    pub fn is_reference(&self) -> bool {
        self.reference_attribute().is_some()
    }
    /// The source attribute of a reference mapping (see [`Mapping::is_reference`]).
    pub fn reference_attribute(&self) -> Option<&str> {
        match &self.source {
            MappingSource::Attribute(a) if REFERENCE_ATTRIBUTES.contains(&a.as_str()) => Some(a),
            _ => None,
        }
    }
    /// Whether the mapped value is a function of the object alone (see
    /// [`Expression::is_pure`]).
    pub fn is_pure(&self) -> bool {
        match &self.source {
            MappingSource::Attribute(_) | MappingSource::Constant(_) => true,
            MappingSource::Expression(e) => e.is_pure(),
        }
    }
    /// The group `members` mapping turns membership sync on.
    pub fn is_members(&self) -> bool {
        self.target.eq_ignore_ascii_case("members")
    }
}

/// A mapping that cannot be used, named by its target.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("mapping for {object_type} attribute {target:?}: {message}")]
pub struct MappingError {
    pub object_type: ObjectType,
    pub target: String,
    pub message: String,
}

/// The effective mappings of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Mappings {
    pub users: Vec<Mapping>,
    pub groups: Vec<Mapping>,
    /// Hash of the effective specs: a change forces a full re-evaluation.
    pub fingerprint: String,
}

impl Mappings {
    pub fn of(&self, ty: ObjectType) -> &[Mapping] {
        match ty {
            ObjectType::User => &self.users,
            ObjectType::Group => &self.groups,
        }
    }

    /// Whether group memberships are provisioned.
    pub fn sync_members(&self) -> bool {
        self.groups.iter().any(Mapping::is_members)
    }

    /// Build from a preset and a job's overrides (per target path, case-insensitively).
    pub fn build(
        preset: &PresetFile,
        users: &[MappingSpec],
        groups: &[MappingSpec],
    ) -> Result<Mappings, MappingError> {
        let users_eff = merge(&preset.users, users);
        let groups_eff = merge(&preset.groups, groups);
        let mut hasher = Sha256::new();
        if let Ok(bytes) = serde_json::to_vec(&(&users_eff, &groups_eff)) {
            hasher.update(bytes);
        }
        let fingerprint = hasher
            .finalize()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Mappings {
            users: compile_all(ObjectType::User, &users_eff)?,
            groups: compile_all(ObjectType::Group, &groups_eff)?,
            fingerprint,
        })
    }

    /// The generic SCIM defaults.
    pub fn generic_scim() -> Result<Mappings, MappingError> {
        let preset: PresetFile = toml::from_str(GENERIC_SCIM_PRESET).map_err(|e| MappingError {
            object_type: ObjectType::User,
            target: String::new(),
            message: format!("built-in preset is invalid: {e}"),
        })?;
        Mappings::build(&preset, &[], &[])
    }
}

fn merge(preset: &[MappingSpec], overrides: &[MappingSpec]) -> Vec<MappingSpec> {
    let mut out: Vec<MappingSpec> = preset.to_vec();
    for o in overrides {
        match out
            .iter_mut()
            .find(|m| m.target.eq_ignore_ascii_case(&o.target))
        {
            Some(slot) => *slot = o.clone(),
            None => out.push(o.clone()),
        }
    }
    out.retain(|m| m.enabled);
    out
}

fn compile_all(ty: ObjectType, specs: &[MappingSpec]) -> Result<Vec<Mapping>, MappingError> {
    let mut seen_precedence = BTreeMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let err = |message: String| MappingError {
            object_type: ty,
            target: spec.target.clone(),
            message,
        };
        let source = match (&spec.source, &spec.constant, &spec.expression) {
            (Some(a), None, None) if !a.is_empty() => MappingSource::Attribute(a.clone()),
            (None, Some(c), None) => MappingSource::Constant(c.clone()),
            (None, None, Some(e)) => MappingSource::Expression(
                Expression::parse(e).map_err(|pe| err(format!("invalid expression: {pe}")))?,
            ),
            _ => {
                return Err(err(
                    "needs exactly one of `source`, `constant` or `expression`".into(),
                ))
            }
        };
        if spec.target.trim().is_empty() {
            return Err(err("empty target path".into()));
        }
        // A target path that does not parse was accepted here and then silently left out of
        // every request (render_resource skips it): refuse it with the configuration.
        if let Err(e) = crate::target::scim::path::ScimPath::parse(&spec.target) {
            return Err(err(e.to_string()));
        }
        if let Some(p) = spec.matching {
            if let Some(other) = seen_precedence.insert(p, spec.target.clone()) {
                return Err(err(format!(
                    "matching precedence {p} is also used by {other:?}"
                )));
            }
        }
        let m = Mapping {
            target: spec.target.clone(),
            key: crate::attrs::map::intern(&spec.target),
            source,
            apply: spec.apply,
            default: spec.default.clone(),
            matching: spec.matching,
        };
        if m.is_members() && ty == ObjectType::User {
            return Err(err("`members` is a group attribute".into()));
        }
        if (m.is_members() || m.is_reference()) && m.matching.is_some() {
            return Err(err("a reference cannot be a matching attribute".into()));
        }
        if matches!(&m.source, MappingSource::Expression(e) if e.selects_unique_value())
            && m.matching.is_some()
        {
            // Its value is only chosen at creation, against the target: there is nothing
            // to match an existing object on.
            return Err(err(
                "a SelectUniqueValue mapping cannot be a matching attribute".into(),
            ));
        }
        out.push(m);
    }
    Ok(out)
}

/// What the mappings produce for one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Mapped {
    /// `apply = "always"` values that are not null, by target path.
    pub values: AttrMap,
    /// Values sent only when creating: `apply = "create"` mappings and defaults for nulls.
    pub create_only: AttrMap,
    /// Always-mappings that evaluated to null (cleared in the target with `null_values = "remove"`).
    pub nulls: BTreeSet<crate::attrs::map::Key>,
    /// Matching attributes with a value, in precedence order.
    pub matching: Vec<(String, Value)>,
    /// Reference attributes: target path → the referenced source object's id.
    pub references: BTreeMap<crate::attrs::map::Key, Option<String>>,
    /// `SelectUniqueValue` mappings: target path → candidates in order. The first candidate is
    /// in `create_only`; the export stage picks the first one not used in the target.
    pub unique: BTreeMap<String, Vec<Value>>,
}

/// What the service knows about an object beyond its attributes.
pub(crate) struct MapContext<'a> {
    /// Entra's virtual `IsSoftDeleted`: true when the object is out of scope.
    pub soft_deleted: bool,
    /// Role names for the virtual `appRoleAssignments`.
    pub roles: Option<&'a BTreeSet<String>>,
    pub env: &'a EvalEnv,
}

/// The source object as expressions see it: its attributes plus the virtual ones. The
/// virtual `objectId` and `appRoleAssignments` are built only if a mapping reads them:
/// building them for every object was a measurable part of planning 100k users.
type AttrSlot<'a> = (
    crate::attrs::compact::Name<'a>,
    crate::attrs::compact::Raw<'a>,
    OnceCell<Value>,
);

struct View<'a> {
    obj: &'a SourceObject,
    /// The object's attributes undecoded, each with a slot for its value once read.
    attributes: OnceCell<Vec<AttrSlot<'a>>>,
    soft_deleted: Value,
    object_id: std::cell::OnceCell<Value>,
    role_names: Option<&'a BTreeSet<String>>,
    roles: std::cell::OnceCell<Value>,
}

impl<'a> View<'a> {
    fn new(obj: &'a SourceObject, ctx: &MapContext<'a>) -> Self {
        View {
            obj,
            attributes: OnceCell::new(),
            soft_deleted: Value::Bool(ctx.soft_deleted),
            object_id: std::cell::OnceCell::new(),
            role_names: ctx.roles,
            roles: std::cell::OnceCell::new(),
        }
    }

    fn roles(&self) -> &Value {
        self.roles.get_or_init(|| {
            Value::Array(
                self.role_names
                    .into_iter()
                    .flatten()
                    .map(|name| serde_json::json!({"id": name, "displayName": name, "value": name}))
                    .collect(),
            )
        })
    }
}

impl expr::Attributes for View<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        match name {
            "IsSoftDeleted" => Some(&self.soft_deleted),
            "objectId" | "id" => Some(
                self.object_id
                    .get_or_init(|| Value::String(self.obj.id.clone())),
            ),
            "appRoleAssignments" => Some(self.roles()),
            _ => {
                // The entries are listed once per object; only the values read are decoded,
                // each once (phase two reads just the manager).
                let slots = self.attributes.get_or_init(|| {
                    self.obj
                        .attributes
                        .raw_entries()
                        .into_iter()
                        .map(|(n, v)| (n, v, OnceCell::new()))
                        .collect()
                });
                let id = crate::attrs::compact::known_id(name);
                let (_, raw, cell) =
                    slots.iter().find(|(n, _, _)| n.is(name, id)).or_else(|| {
                        // Most misses are names no object has: known without a scan.
                        crate::attrs::compact::may_have_ignoring_case(name)
                            .then(|| slots.iter().find(|(n, _, _)| n.is_ignoring_case(name)))
                            .flatten()
                    })?;
                Some(cell.get_or_init(|| raw.to_value()))
            }
        }
    }
}

/// Evaluate one expression for one object exactly as a cycle would, virtual attributes
/// (`IsSoftDeleted`, `objectId`, `appRoleAssignments`) included: `provisiond expr`.
pub(crate) fn evaluate_for(
    expression: &Expression,
    obj: &SourceObject,
    ctx: &MapContext<'_>,
) -> Result<Outcome, expr::EvalError> {
    expression.evaluate(&View::new(obj, ctx), ctx.env)
}

/// The reference mappings' values for one object (target path → the referenced object's
/// source id), in path order: what [`map_object`] puts in `Mapped::references`, without
/// mapping anything else. Read as an expression would read the attribute: by exact name,
/// else ignoring case; a value that isn't a string references nothing.
pub(crate) fn reference_values<'a>(
    obj: &'a SourceObject,
    mappings: &'a [Mapping],
) -> Vec<(&'a str, Option<&'a str>)> {
    let mut out: Vec<(&str, Option<&str>)> = mappings
        .iter()
        .filter_map(|m| {
            let a = m.reference_attribute()?;
            Some((&*m.key, obj.attributes.get_str_any_case(a)))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(b.0));
    out.dedup_by(|later, earlier| {
        // As in a map, the last mapping of a path wins.
        let same = later.0 == earlier.0;
        if same {
            earlier.1 = later.1;
        }
        same
    });
    out
}

/// Why one object could not be mapped: the object is skipped this cycle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping for {target:?} failed: {source}")]
pub(crate) struct MapObjectError {
    /// The target attribute whose mapping failed.
    pub target: String,
    /// How its expression failed.
    pub source: expr::EvalError,
}

/// Evaluate every mapping for one object. `Err` skips the object, with the reason.
pub(crate) fn map_object(
    obj: &SourceObject,
    mappings: &[Mapping],
    ctx: &MapContext<'_>,
) -> Result<Mapped, MapObjectError> {
    let view = View::new(obj, ctx);
    let mut out = Mapped::default();
    let mut matching: Vec<(u32, String, Value)> = Vec::new();
    for m in mappings {
        if m.is_members() {
            continue;
        }
        if m.is_reference() {
            let id = match &m.source {
                MappingSource::Attribute(a) => expr::Attributes::get(&view, a)
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            out.references.insert(m.key.clone(), id);
            continue;
        }
        let value = match &m.source {
            MappingSource::Attribute(a) => expr::Attributes::get(&view, a).cloned(),
            MappingSource::Constant(c) => Some(c.clone()),
            // Entra: SelectUniqueValue belongs to creation; an existing account keeps its value.
            MappingSource::Expression(e) if e.selects_unique_value() => {
                let candidates: Vec<Value> = e
                    .candidates(&view, ctx.env)
                    .map_err(|source| MapObjectError {
                        target: m.target.clone(),
                        source,
                    })?
                    .into_iter()
                    .filter(|v| !is_empty(v))
                    .map(|v| coerce(&m.target, v))
                    .collect();
                if let Some(first) = candidates.first() {
                    out.create_only.insert_key(&m.key, first.clone());
                    out.unique.insert(m.target.clone(), candidates);
                }
                continue;
            }
            MappingSource::Expression(e) => match e.evaluate(&view, ctx.env) {
                Ok(Outcome::Value(v)) => Some(v),
                // IgnoreFlowIfNullOrEmpty: the attribute is not part of this flow at all.
                Ok(Outcome::Ignored) => continue,
                Err(source) => {
                    return Err(MapObjectError {
                        target: m.target.clone(),
                        source,
                    });
                }
            },
        };
        let value = value.filter(|v| !is_empty(v)).map(|v| coerce(&m.target, v));
        match (value, m.apply) {
            (Some(v), Apply::Always) => {
                if let Some(p) = m.matching {
                    matching.push((p, m.target.clone(), v.clone()));
                }
                out.values.insert_key(&m.key, v);
            }
            (Some(v), Apply::Create) => {
                if let Some(p) = m.matching {
                    matching.push((p, m.target.clone(), v.clone()));
                }
                out.create_only.insert_key(&m.key, v);
            }
            (None, apply) => {
                if let Some(d) = &m.default {
                    out.create_only
                        .insert_key(&m.key, coerce(&m.target, d.clone()));
                }
                if apply == Apply::Always {
                    out.nulls.insert(m.key.clone());
                }
            }
        }
    }
    matching.sort_by_key(|(p, _, _)| *p);
    out.matching = matching.into_iter().map(|(_, t, v)| (t, v)).collect();
    Ok(out)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// SCIM booleans arrive as Entra's "True"/"False" strings from expressions such as the
/// default `active` mapping: the target wants JSON booleans.
fn coerce(target: &str, v: Value) -> Value {
    let leaf = target.rsplit(['.', ':']).next().unwrap_or(target);
    let boolean = leaf.eq_ignore_ascii_case("active") || leaf.eq_ignore_ascii_case("primary");
    match (&v, boolean) {
        (Value::String(s), true) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        (Value::String(s), true) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(attrs: Value) -> SourceObject {
        SourceObject {
            id: "u1".into(),
            object_type: ObjectType::User,
            attributes: attrs.as_object().cloned().unwrap_or_default().into(),
            members: vec![],
        }
    }

    fn env() -> EvalEnv {
        EvalEnv {
            now: chrono::Utc::now(),
        }
    }

    #[test]
    fn reference_values_are_what_map_object_references() {
        let m = Mappings::generic_scim().unwrap();
        let e = env();
        let ctx = MapContext {
            soft_deleted: false,
            roles: None,
            env: &e,
        };
        for attrs in [
            json!({"manager": "m1"}),
            json!({"Manager": "m2", "displayName": "x"}),
            json!({"manager": 7}),
            json!({"MANAGER": ["m3"]}),
            json!({"displayName": "no manager"}),
            json!({}),
        ] {
            let u = user(attrs.clone());
            let mapped = map_object(&u, &m.users, &ctx).unwrap();
            let from_mapping: Vec<(&str, Option<&str>)> = mapped
                .references
                .iter()
                .map(|(k, v)| (&**k, v.as_deref()))
                .collect();
            assert!(!from_mapping.is_empty());
            assert_eq!(reference_values(&u, &m.users), from_mapping, "{attrs}");
        }
    }

    #[test]
    fn generic_defaults_map_an_entra_user() {
        let m = Mappings::generic_scim().unwrap();
        let u = user(
            json!({"userPrincipalName":"alice@contoso.com","mail":"alice@contoso.com",
            "givenName":"Alice","surname":"Liddell","displayName":"Alice Liddell","jobTitle":"Engineer",
            "department":"R&D","employeeId":"1001","mailNickname":"alice","manager":"u9","city":"Oxford"}),
        );
        let env = env();
        let ctx = MapContext {
            soft_deleted: false,
            roles: None,
            env: &env,
        };
        let out = map_object(&u, &m.users, &ctx).unwrap();
        assert_eq!(out.values["userName"], json!("alice@contoso.com"));
        assert_eq!(out.values["active"], json!(true));
        assert_eq!(out.values["name.formatted"], json!("Alice Liddell"));
        assert_eq!(
            out.values["emails[type eq \"work\"].value"],
            json!("alice@contoso.com")
        );
        assert_eq!(
            out.values["addresses[type eq \"work\"].locality"],
            json!("Oxford")
        );
        assert_eq!(
            out.values["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"],
            json!("R&D")
        );
        assert_eq!(
            out.matching,
            vec![("userName".to_string(), json!("alice@contoso.com"))]
        );
        assert_eq!(
            out.references["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"],
            Some("u9".to_string())
        );
        assert!(!out.nulls.contains("title"));
        assert!(out.nulls.contains("preferredLanguage"));
        let ctx = MapContext {
            soft_deleted: true,
            roles: None,
            env: &env,
        };
        assert_eq!(
            map_object(&u, &m.users, &ctx).unwrap().values["active"],
            json!(false)
        );
    }

    #[test]
    fn overrides_replace_per_target_and_can_disable() {
        let preset: PresetFile = toml::from_str(GENERIC_SCIM_PRESET).unwrap();
        let users = vec![
            MappingSpec {
                target: "USERNAME".into(),
                source: Some("mail".into()),
                matching: Some(1),
                ..MappingSpec::default()
            },
            MappingSpec {
                target: "title".into(),
                enabled: false,
                source: Some("x".into()),
                ..MappingSpec::default()
            },
            MappingSpec {
                target: "nickName".into(),
                constant: Some(json!("n")),
                apply: Apply::Create,
                ..MappingSpec::default()
            },
        ];
        let m = Mappings::build(&preset, &users, &[]).unwrap();
        assert!(m.users.iter().all(|x| x.target != "title"));
        let env = env();
        let ctx = MapContext {
            soft_deleted: false,
            roles: None,
            env: &env,
        };
        let out = map_object(&user(json!({"mail":"m@x","jobTitle":"T"})), &m.users, &ctx).unwrap();
        assert_eq!(out.values["USERNAME"], json!("m@x"));
        assert_eq!(out.create_only["nickName"], json!("n"));
        assert_ne!(m.fingerprint, Mappings::generic_scim().unwrap().fingerprint);
    }

    #[test]
    fn bad_specs_are_errors_naming_the_target() {
        let bad = vec![MappingSpec {
            target: "x".into(),
            source: Some("a".into()),
            constant: Some(json!(1)),
            ..MappingSpec::default()
        }];
        let e = Mappings::build(&PresetFile::default(), &bad, &[]).unwrap_err();
        assert_eq!(e.target, "x");
        let dup = vec![
            MappingSpec {
                target: "a".into(),
                source: Some("a".into()),
                matching: Some(1),
                ..MappingSpec::default()
            },
            MappingSpec {
                target: "b".into(),
                source: Some("b".into()),
                matching: Some(1),
                ..MappingSpec::default()
            },
        ];
        assert!(Mappings::build(&PresetFile::default(), &dup, &[]).is_err());
    }

    #[test]
    fn select_unique_value_yields_create_time_candidates() {
        let specs = vec![MappingSpec {
            target: "userName".into(),
            expression: Some(
                r#"SelectUniqueValue(Join("@", [mailNickname], "contoso.com"), Join("@", Join("", [mailNickname], "2"), "contoso.com"))"#.into(),
            ),
            ..MappingSpec::default()
        }];
        let m = Mappings::build(&PresetFile::default(), &specs, &[]).unwrap();
        let env = env();
        let ctx = MapContext {
            soft_deleted: false,
            roles: None,
            env: &env,
        };
        let out = map_object(&user(json!({"mailNickname": "al"})), &m.users, &ctx).unwrap();
        assert_eq!(
            out.unique["userName"],
            vec![json!("al@contoso.com"), json!("al2@contoso.com")]
        );
        assert_eq!(out.create_only["userName"], json!("al@contoso.com"));
        assert!(
            !out.values.contains_key("userName"),
            "never updated after creation"
        );
    }

    #[test]
    fn virtual_attributes_reach_expressions() {
        let specs = vec![
            MappingSpec {
                target: "roles".into(),
                expression: Some("AppRoleAssignmentsComplex([appRoleAssignments])".into()),
                ..MappingSpec::default()
            },
            MappingSpec {
                target: "userType".into(),
                expression: Some("SingleAppRoleAssignment([appRoleAssignments])".into()),
                ..MappingSpec::default()
            },
            MappingSpec {
                target: "externalId".into(),
                source: Some("objectId".into()),
                ..MappingSpec::default()
            },
        ];
        let m = Mappings::build(&PresetFile::default(), &specs, &[]).unwrap();
        let env = env();
        let roles: BTreeSet<String> = ["Admin".to_string()].into_iter().collect();
        let ctx = MapContext {
            soft_deleted: false,
            roles: Some(&roles),
            env: &env,
        };
        let out = map_object(&user(json!({})), &m.users, &ctx).unwrap();
        assert_eq!(out.values["userType"], json!("Admin"));
        assert_eq!(out.values["externalId"], json!("u1"));
        let r = &out.values["roles"][0];
        assert_eq!(
            (&r["display"], &r["value"]),
            (&json!("Admin"), &json!("Admin")),
            "{r}"
        );
    }

    #[test]
    fn select_unique_value_cannot_match() {
        let specs = vec![MappingSpec {
            target: "userName".into(),
            expression: Some("SelectUniqueValue([a], [b])".into()),
            matching: Some(1),
            ..MappingSpec::default()
        }];
        let e = Mappings::build(&PresetFile::default(), &specs, &[]).unwrap_err();
        assert!(e.message.contains("SelectUniqueValue"), "{e}");
    }

    #[test]
    fn defaults_apply_on_create_when_null() {
        let specs = vec![MappingSpec {
            target: "title".into(),
            source: Some("jobTitle".into()),
            default: Some(json!("Staff")),
            ..MappingSpec::default()
        }];
        let m = Mappings::build(&PresetFile::default(), &specs, &[]).unwrap();
        let env = env();
        let ctx = MapContext {
            soft_deleted: false,
            roles: None,
            env: &env,
        };
        let out = map_object(&user(json!({})), &m.users, &ctx).unwrap();
        assert_eq!(out.create_only["title"], json!("Staff"));
        assert!(out.nulls.contains("title"));
    }
}
