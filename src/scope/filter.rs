//! Scoping filters, as Entra defines them (E/define-conditional-rules-for-provisioning-user-accounts.md):
//! clauses within one filter are ANDed, filters are ORed, and an object that passes none is out
//! of scope. Compiled once at configuration load, so a bad regex or a non-integer value for an
//! integer operator is a configuration error, never a cycle-time surprise.
//!
//! Choices where Entra's documentation is silent or vague (also in the README):
//! - A null or empty attribute makes every clause false except `IS NULL` (Entra: "scoping
//!   filters return false if the value is null / empty").
//! - `&` / `!&`: with integer values (the common use: `userAccountControl & 2`), a bitwise test:
//!   `&` is true when `attribute & value != 0`, `!&` when it is 0. With non-integer values, the
//!   documented reading: `&` is true when the attribute's value occurs in the clause's value
//!   string, `!&` when it does not.
//! - `EQUALS`, `NOT EQUALS`, `Includes`, `ENDS_WITH` and the regex operators are case-sensitive.
//!   Booleans compare as Entra renders them, `True` / `False`.
//! - `REGEX MATCH` searches (like .NET's `Regex.IsMatch`): anchor with `^…$` to match whole values.
//! - Multi-valued attributes (Entra: unsupported): a positive clause holds when any value
//!   satisfies it; `NOT EQUALS`, `!&` and `NOT REGEX MATCH` hold when no value violates them.

use crate::model::SourceObject;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One filter as written in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Entra's "Scoping Filter Title": shown in reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub clauses: Vec<ClauseSpec>,
}

/// One clause: `attribute operator value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClauseSpec {
    pub attribute: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

#[derive(Debug, Clone)]
enum Op {
    BitAnd(i64),
    NotBitAnd(i64),
    OccursIn(String),
    NotOccursIn(String),
    EndsWith(String),
    Equals(String),
    NotEquals(String),
    GreaterThan(i64),
    GreaterOrEqual(i64),
    Includes(String),
    IsTrue,
    IsFalse,
    IsNull,
    IsNotNull,
    Regex(Regex),
    NotRegex(Regex),
}

#[derive(Debug, Clone)]
struct Clause {
    attribute: String,
    op: Op,
    text: String,
}

/// A checked filter.
#[derive(Debug, Clone)]
pub struct ScopingFilter {
    pub spec: FilterSpec,
    clauses: Vec<Clause>,
}

impl PartialEq for ScopingFilter {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Serialize for ScopingFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.spec.serialize(s)
    }
}

/// The operator names, normalised: upper case, spaces and underscores folded.
fn op_key(name: &str) -> String {
    name.trim()
        .to_ascii_uppercase()
        .split([' ', '_'])
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Why a scoping filter is invalid: names the clause (1-based) and what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterError {
    #[error("a scoping filter needs at least one clause")]
    NoClauses,
    #[error("clause {n} ({attribute} {operator}): needs a value")]
    NeedsValue {
        n: usize,
        attribute: String,
        operator: String,
    },
    #[error("clause {n} ({attribute} {operator}): the value must be an integer")]
    NotAnInteger {
        n: usize,
        attribute: String,
        operator: String,
    },
    #[error(
        "clause {n} ({attribute} {operator}): invalid regular expression {pattern:?}: {source}"
    )]
    InvalidRegex {
        n: usize,
        attribute: String,
        operator: String,
        pattern: String,
        source: regex::Error,
    },
    #[error(
        "clause {n}: unknown operator {operator:?} (one of: &, !&, ENDS_WITH, EQUALS, NOT EQUALS, Greater_Than, \
         Greater_Than_OR_EQUALS, Includes, IS TRUE, IS FALSE, IS NULL, IS NOT NULL, REGEX MATCH, NOT REGEX MATCH)"
    )]
    UnknownOperator { n: usize, operator: String },
    #[error("clause {n}: no attribute")]
    NoAttribute { n: usize },
}

/// The first clause of a filter that an object fails, as the scope reason shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{clause} is false", .title.as_ref().map(|t| format!("{t}: ")).unwrap_or_default())]
pub struct ClauseFalse {
    /// The filter's title, when it has one.
    pub title: Option<String>,
    /// The clause as written: `attribute operator value`.
    pub clause: String,
}

/// An object passes none of the filters: one failed clause per filter, in order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub(crate) struct NoFilterPasses(pub Vec<ClauseFalse>);

impl ScopingFilter {
    /// Check a filter; the error names the clause (1-based) and what is wrong.
    pub fn compile(spec: FilterSpec) -> Result<ScopingFilter, FilterError> {
        if spec.clauses.is_empty() {
            return Err(FilterError::NoClauses);
        }
        let mut clauses = Vec::with_capacity(spec.clauses.len());
        for (i, c) in spec.clauses.iter().enumerate() {
            let n = i + 1;
            let key = op_key(&c.operator);
            let text_value = || -> Result<String, FilterError> {
                c.value
                    .as_ref()
                    .map(value_text)
                    .ok_or_else(|| FilterError::NeedsValue {
                        n,
                        attribute: c.attribute.clone(),
                        operator: c.operator.clone(),
                    })
            };
            let int_value = || -> Result<i64, FilterError> {
                c.value
                    .as_ref()
                    .and_then(as_int)
                    .ok_or_else(|| FilterError::NotAnInteger {
                        n,
                        attribute: c.attribute.clone(),
                        operator: c.operator.clone(),
                    })
            };
            let regex = || -> Result<Regex, FilterError> {
                let pattern = text_value()?;
                Regex::new(&pattern).map_err(|source| FilterError::InvalidRegex {
                    n,
                    attribute: c.attribute.clone(),
                    operator: c.operator.clone(),
                    pattern: pattern.clone(),
                    source,
                })
            };
            let op = match key.as_str() {
                "&" => match c.value.as_ref().and_then(as_int) {
                    Some(i) => Op::BitAnd(i),
                    None => Op::OccursIn(text_value()?),
                },
                "!&" => match c.value.as_ref().and_then(as_int) {
                    Some(i) => Op::NotBitAnd(i),
                    None => Op::NotOccursIn(text_value()?),
                },
                "ENDS WITH" => Op::EndsWith(text_value()?),
                "EQUALS" => Op::Equals(text_value()?),
                "NOT EQUALS" => Op::NotEquals(text_value()?),
                "GREATER THAN" => Op::GreaterThan(int_value()?),
                "GREATER THAN OR EQUALS" => Op::GreaterOrEqual(int_value()?),
                "INCLUDES" => Op::Includes(text_value()?),
                "IS TRUE" => Op::IsTrue,
                "IS FALSE" => Op::IsFalse,
                "IS NULL" => Op::IsNull,
                "IS NOT NULL" => Op::IsNotNull,
                "REGEX MATCH" => Op::Regex(regex()?),
                "NOT REGEX MATCH" => Op::NotRegex(regex()?),
                _ => {
                    return Err(FilterError::UnknownOperator {
                        n,
                        operator: c.operator.clone(),
                    })
                }
            };
            if c.attribute.trim().is_empty() {
                return Err(FilterError::NoAttribute { n });
            }
            let text = match &c.value {
                Some(v) => format!("{} {} {}", c.attribute, c.operator, value_text(v)),
                None => format!("{} {}", c.attribute, c.operator),
            };
            clauses.push(Clause {
                attribute: c.attribute.clone(),
                op,
                text,
            });
        }
        Ok(ScopingFilter { spec, clauses })
    }

    /// `Ok` when every clause holds; otherwise the first clause that failed.
    pub fn check(&self, obj: &SourceObject) -> Result<(), ClauseFalse> {
        for c in &self.clauses {
            let value = lookup(obj, &c.attribute);
            let value = value.as_deref();
            if !clause_holds(&c.op, value) {
                return Err(ClauseFalse {
                    title: self.spec.title.clone(),
                    clause: c.text.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Any-of-filters check: `Ok` when there are no filters or one passes.
pub(crate) fn check_any(
    filters: &[ScopingFilter],
    obj: &SourceObject,
) -> Result<(), NoFilterPasses> {
    if filters.is_empty() {
        return Ok(());
    }
    let mut reasons = Vec::new();
    for f in filters {
        match f.check(obj) {
            Ok(()) => return Ok(()),
            Err(r) => reasons.push(r),
        }
    }
    Err(NoFilterPasses(reasons))
}

/// The attribute a clause tests: the anchor for `objectId`/`id` (as the mappings see it), else
/// the attribute by name, exact first, then case-insensitively.
fn lookup<'a>(obj: &'a SourceObject, name: &str) -> Option<std::borrow::Cow<'a, Value>> {
    if name == "id" || name == "objectId" {
        return Some(std::borrow::Cow::Owned(Value::String(obj.id.clone())));
    }
    obj.attributes
        .get(name)
        .or_else(|| {
            obj.attributes
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .map(std::borrow::Cow::Owned)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_empty),
        _ => false,
    }
}

fn clause_holds(op: &Op, value: Option<&Value>) -> bool {
    let value = match value {
        Some(v) if !is_empty(v) => v,
        _ => return matches!(op, Op::IsNull),
    };
    let values: Vec<&Value> = match value {
        Value::Array(items) => items.iter().filter(|v| !is_empty(v)).collect(),
        single => vec![single],
    };
    let negative = matches!(
        op,
        Op::NotEquals(_) | Op::NotBitAnd(_) | Op::NotOccursIn(_) | Op::NotRegex(_)
    );
    let one = |v: &Value| -> bool {
        let text = value_text(v);
        match op {
            Op::BitAnd(mask) => as_int(v).is_some_and(|i| i & mask != 0),
            Op::NotBitAnd(mask) => as_int(v).is_some_and(|i| i & mask == 0),
            Op::OccursIn(s) => s.contains(&text),
            Op::NotOccursIn(s) => !s.contains(&text),
            Op::EndsWith(s) => text.ends_with(s.as_str()),
            Op::Equals(s) => &text == s,
            Op::NotEquals(s) => &text != s,
            Op::GreaterThan(n) => as_int(v).is_some_and(|i| i > *n),
            Op::GreaterOrEqual(n) => as_int(v).is_some_and(|i| i >= *n),
            Op::Includes(s) => text.contains(s.as_str()),
            Op::IsTrue => matches!(v, Value::Bool(true)) || text.eq_ignore_ascii_case("true"),
            Op::IsFalse => matches!(v, Value::Bool(false)) || text.eq_ignore_ascii_case("false"),
            Op::IsNull => false,
            Op::IsNotNull => true,
            Op::Regex(r) => r.is_match(&text),
            Op::NotRegex(r) => !r.is_match(&text),
        }
    };
    if negative {
        values.iter().all(|v| one(v))
    } else {
        values.iter().any(|v| one(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectType;
    use serde_json::json;

    fn obj(attrs: Value) -> SourceObject {
        SourceObject {
            id: "x".into(),
            object_type: ObjectType::User,
            attributes: attrs.as_object().cloned().unwrap_or_default().into(),
            members: vec![],
        }
    }

    fn filter(clauses: Value) -> Result<ScopingFilter, FilterError> {
        ScopingFilter::compile(FilterSpec {
            title: None,
            clauses: serde_json::from_value(clauses).unwrap(),
        })
    }

    /// Every operator, with Entra's documented semantics, one table.
    #[test]
    fn operators() {
        let cases: Vec<(&str, Value, Value, bool)> = vec![
            (
                "EQUALS",
                json!("Sales"),
                json!({"department": "Sales"}),
                true,
            ),
            (
                "EQUALS",
                json!("sales"),
                json!({"department": "Sales"}),
                false,
            ),
            ("EQUALS", json!("Sales"), json!({}), false),
            (
                "NOT EQUALS",
                json!("Sales"),
                json!({"department": "R&D"}),
                true,
            ),
            (
                "NOT EQUALS",
                json!("Sales"),
                json!({"department": "Sales"}),
                false,
            ),
            ("NOT EQUALS", json!("Sales"), json!({}), false),
            (
                "ENDS_WITH",
                json!("@contoso.com"),
                json!({"department": "a@contoso.com"}),
                true,
            ),
            (
                "ENDS_WITH",
                json!("@contoso.com"),
                json!({"department": "a@CONTOSO.com"}),
                false,
            ),
            (
                "Includes",
                json!("ale"),
                json!({"department": "Sales"}),
                true,
            ),
            (
                "Includes",
                json!("ALE"),
                json!({"department": "Sales"}),
                false,
            ),
            (
                "Greater_Than",
                json!(1000),
                json!({"department": "1001"}),
                true,
            ),
            (
                "Greater_Than",
                json!(1000),
                json!({"department": 1000}),
                false,
            ),
            (
                "Greater_Than",
                json!("1000"),
                json!({"department": "abc"}),
                false,
            ),
            (
                "Greater_Than_OR_EQUALS",
                json!(1000),
                json!({"department": 1000}),
                true,
            ),
            ("IS TRUE", Value::Null, json!({"department": true}), true),
            ("IS TRUE", Value::Null, json!({"department": "True"}), true),
            ("IS TRUE", Value::Null, json!({"department": false}), false),
            ("IS FALSE", Value::Null, json!({"department": false}), true),
            ("IS FALSE", Value::Null, json!({}), false),
            ("IS NULL", Value::Null, json!({}), true),
            ("IS NULL", Value::Null, json!({"department": ""}), true),
            ("IS NULL", Value::Null, json!({"department": "x"}), false),
            ("IS NOT NULL", Value::Null, json!({"department": "x"}), true),
            ("IS NOT NULL", Value::Null, json!({}), false),
            (
                "REGEX MATCH",
                json!(r".*\@contoso\.com"),
                json!({"department": "a@contoso.com"}),
                true,
            ),
            (
                "REGEX MATCH",
                json!("([1-9][0-9])"),
                json!({"department": "x42"}),
                true,
            ),
            (
                "REGEX MATCH",
                json!("^[0-9]+$"),
                json!({"department": "x42"}),
                false,
            ),
            (
                "NOT REGEX MATCH",
                json!(r".*\@contoso\.com"),
                json!({"department": "a@fabrikam.com"}),
                true,
            ),
            (
                "NOT REGEX MATCH",
                json!(r".*\@contoso\.com"),
                json!({}),
                false,
            ),
            ("&", json!(2), json!({"department": 514}), true),
            ("&", json!(2), json!({"department": 512}), false),
            ("!&", json!(2), json!({"department": 512}), true),
            ("!&", json!(2), json!({"department": 514}), false),
            (
                "&",
                json!("Sales,Marketing"),
                json!({"department": "Sales"}),
                true,
            ),
            (
                "!&",
                json!("Sales,Marketing"),
                json!({"department": "R&D"}),
                true,
            ),
            (
                "EQUALS",
                json!("b"),
                json!({"department": ["a", "b"]}),
                true,
            ),
            (
                "NOT EQUALS",
                json!("b"),
                json!({"department": ["a", "b"]}),
                false,
            ),
        ];
        for (op, value, attrs, expected) in cases {
            let clause = if value.is_null() {
                json!([{"attribute": "department", "operator": op}])
            } else {
                json!([{"attribute": "department", "operator": op, "value": value}])
            };
            let f = filter(clause).unwrap();
            assert_eq!(
                f.check(&obj(attrs.clone())).is_ok(),
                expected,
                "{op} {value} on {attrs}"
            );
        }
    }

    #[test]
    fn object_id_is_the_anchor() {
        let f =
            filter(json!([{"attribute": "objectId", "operator": "EQUALS", "value": "x"}])).unwrap();
        assert!(
            f.check(&obj(json!({}))).is_ok(),
            "a pilot filter on objectId must see the id"
        );
        let f =
            filter(json!([{"attribute": "objectId", "operator": "EQUALS", "value": "y"}])).unwrap();
        assert!(f.check(&obj(json!({}))).is_err());
    }

    #[test]
    fn clauses_and_filters_combine() {
        let ny = filter(json!([{"attribute":"state","operator":"EQUALS","value":"New York"},
                               {"attribute":"department","operator":"EQUALS","value":"Engineering"}])).unwrap();
        let sales = filter(json!([{"attribute":"department","operator":"EQUALS","value":"Sales"}]))
            .unwrap();
        let both = vec![ny, sales];
        assert!(check_any(
            &both,
            &obj(json!({"state":"New York","department":"Engineering"}))
        )
        .is_ok());
        assert!(check_any(&both, &obj(json!({"state":"Ohio","department":"Sales"}))).is_ok());
        let why = check_any(
            &both,
            &obj(json!({"state":"Ohio","department":"Engineering"})),
        )
        .unwrap_err()
        .to_string();
        assert!(why.contains("state EQUALS New York is false"), "{why}");
        assert!(check_any(&[], &obj(json!({}))).is_ok());
    }

    #[test]
    fn bad_filters_are_errors_at_load() {
        for (clauses, msg) in [
            (
                json!([{"attribute":"a","operator":"REGEX MATCH","value":"("}]),
                "invalid regular expression",
            ),
            (
                json!([{"attribute":"a","operator":"Greater_Than","value":"ten"}]),
                "must be an integer",
            ),
            (
                json!([{"attribute":"a","operator":"LIKE","value":"x"}]),
                "unknown operator",
            ),
            (
                json!([{"attribute":"a","operator":"EQUALS"}]),
                "needs a value",
            ),
            (json!([]), "at least one clause"),
        ] {
            let e = filter(clauses).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
    }
}
