//! `provisiond expr`: one Entra mapping expression evaluated against one source object.

use super::out::outln;
use super::Failure;
use std::collections::BTreeSet;
use std::path::Path;

/// Evaluate `expression` against the object given as JSON (default: an empty object).
pub(crate) fn expr(
    expression: &str,
    input: Option<&str>,
    input_file: Option<&Path>,
) -> Result<i32, Failure> {
    use crate::mapping::expr::{EvalEnv, Expression, Outcome};
    use crate::mapping::{evaluate_for, MapContext};
    use crate::model::{ObjectType, SourceObject};
    let parsed = Expression::parse(expression).map_err(|e| Failure::usage(e.to_string()))?;
    let text = match (input, input_file) {
        (Some(s), _) => s.to_string(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", p.display())))?,
        (None, None) => "{}".to_string(),
    };
    let mut attributes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("the input is not a JSON object: {e}")))?;
    // The object as a cycle sees it: `id` is the anchor; the service's virtual attributes
    // come from the object's state unless the input sets them.
    let id = match attributes.remove("id") {
        Some(serde_json::Value::String(s)) => s,
        _ => "00000000-0000-0000-0000-000000000000".to_string(),
    };
    let soft_deleted_given = attributes.remove("IsSoftDeleted");
    let roles_given = attributes.remove("appRoleAssignments");
    let obj = SourceObject {
        id,
        object_type: ObjectType::User,
        attributes: attributes.into(),
        members: Vec::new(),
    };
    let soft_deleted = match soft_deleted_given {
        Some(serde_json::Value::Bool(b)) => b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => !obj.enabled() || obj.soft_deleted(),
    };
    // Role names, given as strings or as objects with a displayName.
    let roles: BTreeSet<String> = match roles_given {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|r| match r {
                serde_json::Value::String(s) => Some(s.clone()),
                other => other["displayName"].as_str().map(str::to_string),
            })
            .collect(),
        _ => BTreeSet::new(),
    };
    let env = EvalEnv {
        now: chrono::Utc::now(),
    };
    let ctx = MapContext {
        soft_deleted,
        roles: Some(&roles),
        env: &env,
    };
    match evaluate_for(&parsed, &obj, &ctx) {
        Ok(Outcome::Value(v)) => outln!("{v}"),
        Ok(Outcome::Ignored) => outln!("{}", serde_json::json!({"ignored": true})),
        Err(e) => {
            return Err(Failure {
                code: 1,
                message: e.to_string(),
            })
        }
    }
    Ok(0)
}
