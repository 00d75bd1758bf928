//! PATCH (RFC 7644 §3.5.2): operations as the client builds and renders them, in RFC 7644 or
//! Entra's legacy style, and their semantics on a resource held as JSON (the sandbox).

use serde_json::{json, Map, Value};

use super::path::{PathError, ScimPath};
use super::wire::PatchOperation;
use super::{get_attr, resolve_key, ENTERPRISE_USER_SCHEMA, PATCH_OP_SCHEMA};

/// How `PATCH` operations are rendered on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchStyle {
    /// RFC 7644: lowercase `op` names and JSON booleans.
    #[default]
    #[serde(rename = "rfc7644")]
    Rfc7644,
    /// What Entra sends without the `aadOptscim062020` flag: capitalised `op` names
    /// (`Add`, `Replace`, `Remove`) and booleans as the strings `"True"` / `"False"`,
    /// for targets built against that behaviour.
    EntraLegacy,
}

/// The kind of a PATCH operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchKind {
    /// `add`
    Add,
    /// `replace`
    Replace,
    /// `remove`
    Remove,
}

impl PatchKind {
    fn wire_name(self, style: PatchStyle) -> &'static str {
        match (self, style) {
            (PatchKind::Add, PatchStyle::Rfc7644) => "add",
            (PatchKind::Replace, PatchStyle::Rfc7644) => "replace",
            (PatchKind::Remove, PatchStyle::Rfc7644) => "remove",
            (PatchKind::Add, PatchStyle::EntraLegacy) => "Add",
            (PatchKind::Replace, PatchStyle::EntraLegacy) => "Replace",
            (PatchKind::Remove, PatchStyle::EntraLegacy) => "Remove",
        }
    }
}

/// One operation of a SCIM PATCH request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PatchOp {
    /// add, replace or remove.
    pub kind: PatchKind,
    /// The attribute path (`active`, `emails[type eq "work"].value`, `members[value eq "id"]`);
    /// `None` means the value is an object of attributes applied to the resource.
    pub path: Option<String>,
    /// The value; `None` for removals.
    pub value: Option<Value>,
}

impl PatchOp {
    /// `add` of `value` at `path`.
    pub fn add(path: impl Into<String>, value: Value) -> Self {
        PatchOp {
            kind: PatchKind::Add,
            path: Some(path.into()),
            value: Some(value),
        }
    }

    /// `replace` of `path` with `value`.
    pub fn replace(path: impl Into<String>, value: Value) -> Self {
        PatchOp {
            kind: PatchKind::Replace,
            path: Some(path.into()),
            value: Some(value),
        }
    }

    /// `remove` of `path`.
    pub fn remove(path: impl Into<String>) -> Self {
        PatchOp {
            kind: PatchKind::Remove,
            path: Some(path.into()),
            value: None,
        }
    }

    fn render(&self, style: PatchStyle) -> Value {
        let mut op = Map::new();
        op.insert("op".into(), Value::from(self.kind.wire_name(style)));
        if let Some(path) = &self.path {
            op.insert("path".into(), Value::from(path.as_str()));
        }
        if let Some(value) = &self.value {
            let value = match style {
                PatchStyle::Rfc7644 => value.clone(),
                PatchStyle::EntraLegacy => legacy_value(value),
            };
            op.insert("value".into(), value);
        }
        Value::Object(op)
    }
}

/// Entra's legacy form sends every boolean, nested ones included (e.g. `primary` in
/// `emails`), as the capitalised strings .NET produces.
fn legacy_value(value: &Value) -> Value {
    match value {
        Value::Bool(true) => Value::from("True"),
        Value::Bool(false) => Value::from("False"),
        Value::Array(items) => Value::Array(items.iter().map(legacy_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), legacy_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The full PATCH request body for `ops` in `style`.
pub(crate) fn render_patch(ops: &[PatchOp], style: PatchStyle) -> Value {
    let operations: Vec<Value> = ops.iter().map(|op| op.render(style)).collect();
    json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": operations })
}

/// Why a PATCH operation could not be applied. [`PatchError::scim_type`] gives the RFC 7644
/// `scimType` to answer with (all are 400 Bad Request).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum PatchError {
    /// `op` is not add, replace or remove.
    #[error("unknown PATCH op {0:?}: expected add, replace or remove")]
    InvalidOp(String),
    /// The path does not parse.
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    /// The operation needs a target it does not have (e.g. remove without path).
    #[error("PATCH {op} has no target: {reason}")]
    NoTarget {
        /// The op as sent.
        op: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The value is missing or of the wrong shape.
    #[error("invalid value for PATCH {op} {path}: {reason}")]
    InvalidValue {
        /// The op as sent.
        op: String,
        /// The path, or `(none)`.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The operation tries to change a read-only attribute.
    #[error("attribute {0:?} is read-only")]
    Mutability(String),
}

impl PatchError {
    /// The SCIM `scimType` error keyword for this error.
    pub(crate) fn scim_type(&self) -> &'static str {
        match self {
            PatchError::InvalidOp(_) => "invalidSyntax",
            PatchError::InvalidPath(_) => "invalidPath",
            PatchError::NoTarget { .. } => "noTarget",
            PatchError::InvalidValue { .. } => "invalidValue",
            PatchError::Mutability(_) => "mutability",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// Applies one PATCH operation to `resource`. Op names are case-insensitive (Entra's legacy
/// form sends `Add`/`Replace`/`Remove`). Removing something absent succeeds, so that a
/// retried PATCH whose first response was lost is harmless.
pub(crate) fn apply_patch(resource: &mut Value, op: &PatchOperation) -> Result<(), PatchError> {
    let kind = match op.op.to_ascii_lowercase().as_str() {
        "add" => Op::Add,
        "replace" => Op::Replace,
        "remove" => Op::Remove,
        _ => return Err(PatchError::InvalidOp(op.op.clone())),
    };
    let invalid = |reason: &'static str| PatchError::InvalidValue {
        op: op.op.clone(),
        path: op.path.clone().unwrap_or_else(|| "(none)".to_string()),
        reason,
    };
    match op.path.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => match kind {
            Op::Remove => Err(PatchError::NoTarget {
                op: op.op.clone(),
                reason: "remove requires a path",
            }),
            Op::Add | Op::Replace => match &op.value {
                Some(Value::Object(attrs)) => apply_object(resource, kind, attrs),
                _ => Err(invalid("without a path the value must be an object")),
            },
        },
        Some(path) => {
            let path = ScimPath::parse(path)?;
            check_mutable(&path)?;
            match (kind, &op.value) {
                (Op::Remove, value) => {
                    remove(resource, &path, value.as_ref());
                    Ok(())
                }
                // Clearing by replacing with null is what users expect (Entra cannot).
                (Op::Replace, None | Some(Value::Null)) => {
                    path.remove(resource);
                    Ok(())
                }
                (Op::Add, None | Some(Value::Null)) => Err(invalid("add requires a value")),
                (kind, Some(value)) => {
                    apply_at(resource, kind, &path, value.clone());
                    Ok(())
                }
            }
        }
    }
}

/// Converts Entra's legacy string booleans (`"active": "False"`) to JSON booleans, in the
/// value of an operation on `active`/`primary` or in an object value's attributes.
pub(crate) fn normalise_entra_booleans(op: &mut PatchOperation) {
    const BOOLEANS: [&str; 2] = ["active", "primary"];
    let path_is_bool = op.path.as_deref().is_some_and(|p| {
        ScimPath::parse(p).is_ok_and(|p| {
            let name = p.sub_attr().unwrap_or(p.attr());
            BOOLEANS.iter().any(|b| b.eq_ignore_ascii_case(name))
        })
    });
    match &mut op.value {
        Some(v @ Value::String(_)) if path_is_bool => string_to_bool(v),
        Some(Value::Object(map)) if op.path.is_none() => {
            for (k, v) in map.iter_mut() {
                if BOOLEANS.iter().any(|b| b.eq_ignore_ascii_case(k)) {
                    string_to_bool(v);
                }
            }
        }
        _ => {}
    }
}

fn string_to_bool(v: &mut Value) {
    let b = match v.as_str() {
        Some(s) if s.eq_ignore_ascii_case("true") => true,
        Some(s) if s.eq_ignore_ascii_case("false") => false,
        _ => return,
    };
    *v = Value::Bool(b);
}

/// `id` and `meta` belong to the service provider.
fn check_mutable(path: &ScimPath) -> Result<(), PatchError> {
    if path.extension().is_none()
        && (path.attr().eq_ignore_ascii_case("id") || path.attr().eq_ignore_ascii_case("meta"))
    {
        return Err(PatchError::Mutability(path.to_string()));
    }
    Ok(())
}

/// add/replace without a path: each attribute of the value is applied as if it were a path
/// (Entra sends keys such as `name.givenName` or enterprise URNs here).
fn apply_object(
    resource: &mut Value,
    kind: Op,
    attrs: &Map<String, Value>,
) -> Result<(), PatchError> {
    for (key, value) in attrs {
        if key.eq_ignore_ascii_case("schemas") || key.eq_ignore_ascii_case("meta") {
            continue;
        }
        if key.eq_ignore_ascii_case("id") {
            if get_attr(resource, "id") != Some(value) {
                return Err(PatchError::Mutability("id".to_string()));
            }
            continue;
        }
        if let Value::Object(inner) = value {
            if is_extension_key(resource, key) {
                for (k, v) in inner {
                    let path = ScimPath::parse(&format!("{key}:{k}"))?;
                    apply_at(resource, kind, &path, v.clone());
                }
                continue;
            }
        }
        let path = ScimPath::parse(key)?;
        if value.is_null() {
            path.remove(resource);
        } else {
            apply_at(resource, kind, &path, value.clone());
        }
    }
    Ok(())
}

/// Whether an attribute key of a path-less value names a schema extension object rather than
/// a URN-qualified attribute (`...:User` versus `...:User:manager`).
fn is_extension_key(resource: &Value, key: &str) -> bool {
    if key.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        return true;
    }
    if !key.get(..4).is_some_and(|h| h.eq_ignore_ascii_case("urn:")) {
        return false;
    }
    let listed = get_attr(resource, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(key)))
        });
    listed || get_attr(resource, key).is_some_and(Value::is_object)
}

fn apply_at(resource: &mut Value, kind: Op, path: &ScimPath, value: Value) {
    let plain = path.filter().is_none() && path.sub_attr().is_none();
    if plain {
        match (path.get(resource), &value) {
            // add to a multi-valued attribute appends, without duplicates.
            (Some(Value::Array(existing)), _) if kind == Op::Add => {
                let mut merged = existing.clone();
                let new = match value {
                    Value::Array(items) => items,
                    single => vec![single],
                };
                for item in new {
                    if !merged.iter().any(|e| same_element(e, &item)) {
                        merged.push(item);
                    }
                }
                path.set(resource, Value::Array(merged));
                return;
            }
            // add or replace on a complex attribute updates the given sub-attributes only.
            (Some(Value::Object(existing)), Value::Object(new)) => {
                let mut merged = existing.clone();
                for (k, v) in new {
                    let key = resolve_key(&merged, k);
                    if v.is_null() {
                        merged.remove(&key);
                    } else {
                        merged.insert(key, v.clone());
                    }
                }
                path.set(resource, Value::Object(merged));
                return;
            }
            _ => {}
        }
    }
    path.set(resource, value);
}

/// Multi-valued elements are the same when their `value` sub-attributes are equal (members,
/// emails), otherwise when they are equal as a whole.
fn same_element(a: &Value, b: &Value) -> bool {
    match (get_attr(a, "value"), get_attr(b, "value")) {
        (Some(x), Some(y)) => {
            x == y
                && get_attr(a, "type").map(|t| t.as_str())
                    == get_attr(b, "type").map(|t| t.as_str())
        }
        _ => a == b,
    }
}

fn remove(resource: &mut Value, path: &ScimPath, value: Option<&Value>) {
    // Entra (and others) remove members with `"path": "members"` and the members to remove in
    // the value, rather than a filter; removing the whole attribute would drop everyone.
    if path.filter().is_none() && path.sub_attr().is_none() {
        if let Some(value) = value.filter(|v| !v.is_null()) {
            let targets: Vec<Value> = match value {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            if let Some(Value::Array(existing)) = path.get(resource) {
                let kept: Vec<Value> = existing
                    .iter()
                    .filter(|e| !targets.iter().any(|t| same_element(e, t)))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    path.remove(resource);
                } else {
                    path.set(resource, Value::Array(kept));
                }
                return;
            }
        }
    }
    path.remove(resource);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(o: &str, path: Option<&str>, value: Option<Value>) -> PatchOperation {
        PatchOperation::new(o, path.map(str::to_string), value)
    }

    fn apply(resource: &mut Value, ops: &[PatchOperation]) {
        for o in ops {
            apply_patch(resource, o).unwrap();
        }
    }

    #[test]
    fn replace_add_remove_with_paths() {
        let mut u = json!({"id": "1", "userName": "a", "active": true,
            "emails": [{"type": "work", "value": "a@x", "primary": true}]});
        apply(
            &mut u,
            &[
                op("Replace", Some("active"), Some(json!(false))),
                op(
                    "replace",
                    Some("emails[type eq \"work\"].value"),
                    Some(json!("b@x")),
                ),
                op("add", Some("name.givenName"), Some(json!("Al"))),
                op(
                    "Add",
                    Some(
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                    ),
                    Some(json!("9")),
                ),
                op(
                    "ADD",
                    Some("emails"),
                    Some(json!([{"type": "home", "value": "h@x"}])),
                ),
                op("remove", Some("emails[type eq \"home\"]"), None),
            ],
        );
        assert_eq!(u["active"], json!(false));
        assert_eq!(
            u["emails"],
            json!([{"type": "work", "value": "b@x", "primary": true}])
        );
        assert_eq!(u["name"], json!({"givenName": "Al"}));
        assert_eq!(u[ENTERPRISE_USER_SCHEMA], json!({"employeeNumber": "9"}));
        apply(
            &mut u,
            &[op(
                "replace",
                Some("name"),
                Some(json!({"familyName": "L"})),
            )],
        );
        assert_eq!(u["name"], json!({"givenName": "Al", "familyName": "L"}));
        apply(&mut u, &[op("replace", Some("name.givenName"), None)]);
        assert_eq!(u["name"], json!({"familyName": "L"}));
    }

    #[test]
    fn without_path_merges() {
        let mut u = json!({"id": "1", "userName": "a", "name": {"givenName": "A"},
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]});
        apply(
            &mut u,
            &[
                op(
                    "Replace",
                    None,
                    Some(json!({"displayName": "Al", "name.familyName": "L",
                        "emails[type eq \"work\"].value": "w@x",
                        ENTERPRISE_USER_SCHEMA: {"department": "R&D"}})),
                ),
                op("add", None, Some(json!({"name": {"formatted": "A L"}}))),
            ],
        );
        assert_eq!(u["displayName"], json!("Al"));
        assert_eq!(
            u["name"],
            json!({"givenName": "A", "familyName": "L", "formatted": "A L"})
        );
        assert_eq!(u["emails"], json!([{"type": "work", "value": "w@x"}]));
        assert_eq!(u[ENTERPRISE_USER_SCHEMA], json!({"department": "R&D"}));
        let manager = format!("{ENTERPRISE_USER_SCHEMA}:manager");
        apply(
            &mut u,
            &[op("replace", None, Some(json!({manager.clone(): "m1"})))],
        );
        assert_eq!(u[ENTERPRISE_USER_SCHEMA]["manager"], json!({"value": "m1"}));
    }

    #[test]
    fn members_forms() {
        let mut g = json!({"id": "g", "displayName": "G"});
        apply(
            &mut g,
            &[
                op(
                    "add",
                    Some("members"),
                    Some(json!([{"value": "a"}, {"value": "b"}])),
                ),
                op(
                    "Add",
                    Some("members"),
                    Some(json!([{"value": "b"}, {"value": "c"}])),
                ),
            ],
        );
        assert_eq!(
            g["members"],
            json!([{"value": "a"}, {"value": "b"}, {"value": "c"}])
        );
        apply(
            &mut g,
            &[op("remove", Some("members[value eq \"b\"]"), None)],
        );
        assert_eq!(g["members"], json!([{"value": "a"}, {"value": "c"}]));
        // Entra's form: path members, the members to drop in the value.
        apply(
            &mut g,
            &[op("Remove", Some("members"), Some(json!([{"value": "a"}])))],
        );
        assert_eq!(g["members"], json!([{"value": "c"}]));
        // Removing an absent member is idempotent.
        apply(
            &mut g,
            &[op("remove", Some("members[value eq \"zz\"]"), None)],
        );
        apply(
            &mut g,
            &[op(
                "replace",
                Some("members"),
                Some(json!([{"value": "d"}])),
            )],
        );
        assert_eq!(g["members"], json!([{"value": "d"}]));
        apply(&mut g, &[op("remove", Some("members"), None)]);
        assert!(g.get("members").is_none());
    }

    #[test]
    fn errors_map_to_scim_types() {
        let mut u = json!({"id": "1"});
        let cases = [
            (op("move", Some("a"), Some(json!(1))), "invalidSyntax"),
            (op("add", Some("a[b"), Some(json!(1))), "invalidPath"),
            (op("remove", None, None), "noTarget"),
            (op("add", None, Some(json!("x"))), "invalidValue"),
            (op("add", Some("nick"), None), "invalidValue"),
            (op("replace", Some("id"), Some(json!("2"))), "mutability"),
            (op("replace", None, Some(json!({"id": "2"}))), "mutability"),
        ];
        for (o, t) in cases {
            let e = apply_patch(&mut u, &o).unwrap_err();
            assert_eq!(e.scim_type(), t, "{o:?}: {e}");
        }
        assert_eq!(u, json!({"id": "1"}));
    }

    #[test]
    fn entra_booleans() {
        let mut o = op("Replace", Some("active"), Some(json!("False")));
        normalise_entra_booleans(&mut o);
        assert_eq!(o.value, Some(json!(false)));
        let mut o = op(
            "Replace",
            None,
            Some(json!({"active": "True", "title": "False"})),
        );
        normalise_entra_booleans(&mut o);
        assert_eq!(o.value, Some(json!({"active": true, "title": "False"})));
        let mut o = op("Replace", Some("title"), Some(json!("False")));
        normalise_entra_booleans(&mut o);
        assert_eq!(o.value, Some(json!("False")));
    }
}
