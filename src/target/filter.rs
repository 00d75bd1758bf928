//! Rendering of the `eq` filters used for matching.

use serde_json::Value;

/// Renders `attr eq <value>` as a SCIM filter.
///
/// Strings are JSON-escaped (`\"`, `\\`, control characters) because the SCIM filter
/// grammar takes its string literals from JSON; non-ASCII is kept literally and left to
/// the URL encoder. Booleans, numbers and `null` are unquoted. Arrays and objects are not
/// valid comparison values: their compact JSON text is compared as a string, which
/// matches nothing rather than matching the wrong object.
pub fn eq_filter(attr: &str, value: &Value) -> String {
    let literal = match value {
        Value::String(_) | Value::Bool(_) | Value::Number(_) | Value::Null => value.to_string(),
        Value::Array(_) | Value::Object(_) => Value::String(value.to_string()).to_string(),
    };
    format!("{attr} eq {literal}")
}
