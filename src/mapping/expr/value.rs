//! The values expressions compute with.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::datetime;

/// A number: integers stay exact (AD FileTimes need all 64 bits), others are floats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The integer value, if the number is whole and in range.
    pub(crate) fn as_i64(self) -> Option<i64> {
        match self {
            Num::Int(i) => Some(i),
            Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
            Num::Float(_) => None,
        }
    }

    /// Text as .NET prints it with the invariant culture (no trailing `.0`).
    pub(crate) fn to_text(self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => match self.as_i64() {
                Some(i) => i.to_string(),
                None => f.to_string(),
            },
        }
    }
}

/// A value during evaluation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    String(String),
    Bool(bool),
    Number(Num),
    DateTime(DateTime<Utc>),
    /// A multi-valued attribute (or the result of `Split`, `AppRoleAssignmentsComplex`, ...).
    Multi(Vec<Value>),
    /// A complex value such as one app role assignment; opaque to most functions.
    Object(serde_json::Map<String, Json>),
}

impl Value {
    /// About how many bytes of text the value holds (its strings; other scalars count a
    /// few bytes), for the size limit of evaluation.
    pub(crate) fn text_size(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::Multi(items) => items
                .iter()
                .fold(0usize, |n, v| n.saturating_add(v.text_size())),
            Value::Object(m) => m
                .iter()
                .fold(0usize, |n, (k, v)| n.saturating_add(k.len() + json_size(v))),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::DateTime(_) => 8,
        }
    }

    pub(crate) fn from_json(json: &Json) -> Value {
        match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Number(Num::Int(i)),
                None => Value::Number(Num::Float(n.as_f64().unwrap_or(f64::NAN))),
            },
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Multi(items.iter().map(Value::from_json).collect()),
            Json::Object(map) => Value::Object(map.clone()),
        }
    }

    pub(crate) fn into_json(self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::String(s) => Json::String(s),
            Value::Bool(b) => Json::Bool(b),
            Value::Number(Num::Int(i)) => Json::from(i),
            Value::Number(Num::Float(f)) => serde_json::Number::from_f64(f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::DateTime(dt) => Json::String(datetime::default_text(&dt)),
            Value::Multi(items) => Json::Array(items.into_iter().map(Value::into_json).collect()),
            Value::Object(map) => Json::Object(map),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Null, the empty string or a multi-valued attribute with no values.
    pub(crate) fn is_null_or_empty(&self) -> bool {
        match self {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Multi(items) => items.is_empty(),
            _ => false,
        }
    }

    /// A short description for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::String(s) => {
                let short: String = s.chars().take(60).collect();
                format!("\"{short}\"")
            }
            Value::Bool(b) => bool_text(*b).to_string(),
            Value::Number(n) => n.to_text(),
            Value::DateTime(dt) => datetime::default_text(dt),
            Value::Multi(items) => format!("a multi-valued attribute of {} values", items.len()),
            Value::Object(_) => "a complex value".to_string(),
        }
    }

    /// The value as a single string, as .NET's `ToString` gives it; `None` for null and for
    /// values with no single-string form (multi-valued, complex).
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(bool_text(*b).to_string()),
            Value::Number(n) => Some(n.to_text()),
            Value::DateTime(dt) => Some(datetime::default_text(dt)),
            Value::Null | Value::Multi(_) | Value::Object(_) => None,
        }
    }
}

/// .NET's `Boolean.ToString`: "True" / "False".
pub(crate) fn bool_text(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// About how many bytes of text a JSON value holds (see [`Value::text_size`]).
fn json_size(v: &Json) -> usize {
    match v {
        Json::String(s) => s.len(),
        Json::Array(items) => items
            .iter()
            .fold(0usize, |n, v| n.saturating_add(json_size(v))),
        Json::Object(m) => m
            .iter()
            .fold(0usize, |n, (k, v)| n.saturating_add(k.len() + json_size(v))),
        Json::Null | Json::Bool(_) | Json::Number(_) => 8,
    }
}
