//! SCIM resources as the export writes them: a resource rendered from target paths and
//! values, and the PATCH operations that set or change attributes of one in the target.

use serde_json::Value;

use super::patch::PatchOp;
use super::path::ScimPath;
use super::{GROUP_SCHEMA, USER_SCHEMA};
use crate::model::ObjectType;

/// A SCIM filter string literal.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The value as the target wants it: the enterprise `manager` is complex (`{"value": id}`).
pub(crate) fn wire_value(path: &str, v: Value) -> Value {
    let leaf = path.rsplit([':', '.']).next().unwrap_or(path);
    match v {
        Value::String(id) if leaf.eq_ignore_ascii_case("manager") => {
            serde_json::json!({"value": id})
        }
        other => other,
    }
}

/// PATCH operations applying `changes` (path, new value; `None` removes): the sets as
/// [`set_ops`] renders them, then the removals.
/// `element_exists(path)`: whether the target has the element a filtered path addresses.
pub(crate) fn change_ops<'c>(
    changes: impl Iterator<Item = (&'c str, Option<&'c Value>)> + Clone,
    element_exists: impl Fn(&str) -> bool,
) -> Vec<PatchOp> {
    let sets: Vec<(String, Value)> = changes
        .clone()
        .filter_map(|(path, new)| new.map(|v| (path.to_string(), v.clone())))
        .collect();
    let mut ops = set_ops(&sets, element_exists);
    ops.extend(
        changes
            .filter(|(_, new)| new.is_none())
            .map(|(path, _)| PatchOp::remove(path)),
    );
    ops
}

/// The multi-valued element a filtered path addresses (`addresses[type eq "work"]`), as a
/// comparable key; `None` for any other path.
pub(crate) fn element_key(path: &str) -> Option<String> {
    let p = ScimPath::parse(path).ok()?;
    let filter = p.filter()?;
    Some(format!(
        "{}|{}|{filter:?}",
        p.schema().unwrap_or("").to_lowercase(),
        p.attr().to_lowercase()
    ))
}

/// Whether `resource` has an element matching the filter of `path` (`addresses[type eq "work"]`).
pub(crate) fn has_element(resource: &Value, path: &str) -> bool {
    let Ok(p) = ScimPath::parse(path) else {
        return false;
    };
    let attr = match p.schema() {
        Some(urn) => format!("{urn}:{}", p.attr()),
        None => p.attr().to_string(),
    };
    match (
        ScimPath::parse(&attr)
            .ok()
            .and_then(|a| a.get(resource).cloned()),
        p.filter(),
    ) {
        (Some(Value::Array(items)), Some(f)) => items.iter().any(|e| f.matches(e)),
        _ => false,
    }
}

/// PATCH operations setting `values`. RFC 7644 §3.5.2.3: a `replace` whose value filter
/// matches no element must fail with 400 `noTarget` (scim2-server does; `add` likewise), so a
/// sub-attribute of an element the target does not have yet — `addresses[type eq
/// "work"].locality` for a user created without an address — is sent as an `add` of a new
/// element to the multi-valued attribute, one per element:
/// `{"op":"add","path":"addresses","value":[{"type":"work","locality":"Oxford"}]}`.
/// `element_exists(path)` says whether the target has the element a filtered path addresses.
pub(crate) fn set_ops(
    values: &[(String, Value)],
    element_exists: impl Fn(&str) -> bool,
) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    // (element key, path of the multi-valued attribute, scratch resource holding the element)
    let mut new_elements: Vec<(String, String, Value)> = Vec::new();
    for (path, v) in values {
        let parsed = ScimPath::parse(path)
            .ok()
            .filter(|p| p.sub_attr().is_some());
        match (parsed, element_key(path)) {
            (Some(p), Some(key)) if !element_exists(path) => {
                let i = match new_elements.iter().position(|(k, _, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        let attr_path = match p.schema() {
                            Some(urn) => format!("{urn}:{}", p.attr()),
                            None => p.attr().to_string(),
                        };
                        new_elements.push((key, attr_path, serde_json::json!({})));
                        new_elements.len() - 1
                    }
                };
                p.set(&mut new_elements[i].2, v.clone());
            }
            _ => ops.push(PatchOp::replace(path.clone(), wire_value(path, v.clone()))),
        }
    }
    for (_, attr_path, scratch) in new_elements {
        if let Some(element) = ScimPath::parse(&attr_path)
            .ok()
            .and_then(|p| p.get(&scratch).cloned())
        {
            ops.push(PatchOp::add(attr_path, element));
        }
    }
    ops
}

/// Build a SCIM resource from target paths and values (null values are never sent).
pub(crate) fn render_resource<'v>(
    ty: ObjectType,
    attrs: impl Iterator<Item = (&'v str, &'v Value)>,
) -> Value {
    let schema = match ty {
        ObjectType::User => USER_SCHEMA,
        ObjectType::Group => GROUP_SCHEMA,
    };
    let mut body = serde_json::json!({ "schemas": [schema] });
    for (path, v) in attrs {
        if v.is_null() {
            continue;
        }
        if let Ok(p) = ScimPath::parse(path) {
            p.set(&mut body, v.clone());
        }
    }
    body
}
