//! PATCH operations and their two wire renderings.

use serde_json::{json, Map, Value};

use super::PatchStyle;

/// The schema URN of a SCIM PATCH request body.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

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
