//! Entra ID attribute-mapping expressions: parser and evaluator.
//!
//! The language is the one documented by Microsoft in "Reference for writing expressions for
//! attribute mappings in Microsoft Entra ID" (`functions-for-customizing-application-data.md`):
//! `Function(arg, ...)` calls, `[attribute]` references, `"string"` constants with `\"` and `\\`
//! escapes, omitted (empty) arguments, bare numbers, and the comparison operators that `IIF`
//! and `CBool` conditions use (`=`, `<>`, `<`, `<=`, `>`, `>=`).
//!
//! This module is pure: no I/O. The clock comes from [`EvalEnv`]; only `Guid()` and
//! `RandomString()` use randomness.
//!
//! `SelectUniqueValue` returns its first non-null candidate; checking candidates for uniqueness
//! in the target is the caller's job (see [`Expression::candidates`]).

mod datetime;
mod functions;
mod parser;
mod text;
mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

use parser::Node;

/// Longest expression accepted, in characters (Entra's documented limit).
pub(crate) const MAX_EXPRESSION_CHARS: usize = 10_000;

/// Deepest nesting of calls and comparisons accepted; deeper input is a parse error, so
/// evaluation never recurses without bound.
pub(crate) const MAX_NESTING_DEPTH: usize = 64;

/// A parsed attribute-mapping expression, ready to evaluate against source objects.
#[derive(Clone, Debug)]
pub struct Expression {
    text: String,
    root: Node,
    attributes: Vec<String>,
}

// The tree is a pure function of the text (and holds compiled regexes, which have no
// equality), so two expressions are equal when their texts are.
impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Expression {
    /// Parses `text`; fails on syntax errors, unknown or mis-cased function names, wrong
    /// argument counts, invalid literal regexes and expressions over 10,000 characters.
    pub fn parse(text: &str) -> Result<Expression, ParseError> {
        let (root, attributes) = parser::parse(text)?;
        Ok(Expression {
            text: text.to_string(),
            root,
            attributes,
        })
    }

    /// The expression's source text, as given to [`Expression::parse`].
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Names of the `[attribute]`s referenced, deduplicated, in order of first appearance.
    pub fn attributes(&self) -> Vec<String> {
        self.attributes.clone()
    }

    /// True when the value depends on nothing but the object: no clock (`Now()`, and the date
    /// functions, which read a date without a year or day against today), no randomness
    /// (`Guid()`, `RandomString()`). Only then may a planner skip mapping an object whose
    /// inputs did not change.
    pub fn is_pure(&self) -> bool {
        use parser::Func;
        ![
            Func::Now,
            Func::Guid,
            Func::RandomString,
            Func::CDate,
            Func::DateAdd,
            Func::DateDiff,
            Func::DateFromNum,
            Func::FormatDateTime,
            Func::NumFromDate,
        ]
        .into_iter()
        .any(|f| self.root.uses(f))
    }

    /// True when the expression uses `Redact`, so its value must be logged as `[Redact]`.
    pub fn redacts(&self) -> bool {
        self.root.uses(parser::Func::Redact)
    }

    /// Evaluates the expression against one source object.
    pub fn evaluate(&self, attrs: &dyn Attributes, env: &EvalEnv) -> Result<Outcome, EvalError> {
        let ctx = functions::Ctx { attrs, env };
        match functions::eval_root(&ctx, &self.root) {
            Ok(v) => Ok(Outcome::Value(v.into_json())),
            Err(functions::Flow::Ignore) => Ok(Outcome::Ignored),
            Err(functions::Flow::Error(e)) => Err(e),
        }
    }

    /// Whether the expression is a top-level `SelectUniqueValue(...)`, whose candidates the
    /// export stage checks against the target one by one.
    pub fn selects_unique_value(&self) -> bool {
        matches!(
            &self.root,
            parser::Node::Call {
                func: parser::Func::SelectUniqueValue,
                ..
            }
        )
    }

    /// The values to try, in order, for a uniqueness check in the target: for a top-level
    /// `SelectUniqueValue` every non-null candidate, otherwise the single evaluated value
    /// (none when it is null or ignored).
    pub fn candidates(
        &self,
        attrs: &dyn Attributes,
        env: &EvalEnv,
    ) -> Result<Vec<Json>, EvalError> {
        let ctx = functions::Ctx { attrs, env };
        match functions::eval_candidates(&ctx, &self.root) {
            Ok(vs) => Ok(vs.into_iter().map(value::Value::into_json).collect()),
            Err(functions::Flow::Ignore) => Ok(Vec::new()),
            Err(functions::Flow::Error(e)) => Err(e),
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A source object's attributes, looked up by name.
pub trait Attributes {
    /// The value of attribute `name`, or `None` when absent.
    fn get(&self, name: &str) -> Option<&Json>;
}

// Exact name first, then case-insensitive: Entra attribute names are case-insensitive, but
// an exact match must win when two keys differ only in case.
impl Attributes for serde_json::Map<String, Json> {
    fn get(&self, name: &str) -> Option<&Json> {
        serde_json::Map::get(self, name).or_else(|| {
            self.iter()
                .find(|(k, _)| same_name(k, name))
                .map(|(_, v)| v)
        })
    }
}

impl Attributes for BTreeMap<String, Json> {
    fn get(&self, name: &str) -> Option<&Json> {
        BTreeMap::get(self, name).or_else(|| {
            self.iter()
                .find(|(k, _)| same_name(k, name))
                .map(|(_, v)| v)
        })
    }
}

impl Attributes for crate::model::AttrMap {
    fn get(&self, name: &str) -> Option<&Json> {
        crate::model::AttrMap::get(self, name).or_else(|| {
            self.iter()
                .find(|(k, _)| same_name(k, name))
                .map(|(_, v)| v)
        })
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

/// What an evaluation depends on besides the source object.
#[derive(Clone, Debug)]
pub struct EvalEnv {
    /// The current time, returned by `Now()`; fixed by tests for determinism.
    pub now: chrono::DateTime<chrono::Utc>,
}

impl EvalEnv {
    /// An environment whose clock reads the system time.
    pub fn current() -> Self {
        EvalEnv {
            now: chrono::Utc::now(),
        }
    }
}

/// The result of evaluating an expression for one object.
///
/// Date-times that weren't formatted explicitly come out as strings in Entra's documented
/// form, `M/d/yyyy h:mm:ss tt` in UTC (e.g. `"3/16/2020 7:00:00 AM"`); use `FormatDateTime`
/// for ISO 8601. Booleans (`Not`, `CBool`, `IsNull`...) come out as JSON booleans, while
/// `Switch`/`IIF` return whatever strings the mapping gives (`"True"`/`"False"`).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The value to flow to the target (null: nothing to flow).
    Value(Json),
    /// `IgnoreFlowIfNullOrEmpty` dropped the attribute from the flow.
    Ignored,
}

/// A syntax error, with the character position it was found at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Index (in characters, from 0) of the offending character in the expression.
    pub position: usize,
    /// What is wrong.
    pub message: String,
    expression: String,
}

impl ParseError {
    fn new(expression: &str, position: usize, message: impl Into<String>) -> Self {
        ParseError {
            position,
            message: message.into(),
            expression: expression.to_string(),
        }
    }
}

impl fmt::Display for ParseError {
    /// The message, then the offending line of the expression, then a caret under the
    /// offending column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show only the offending line so the caret lines up in multi-line expressions.
        let mut line_start = 0;
        let mut line_no = 1;
        for (i, c) in self.expression.chars().enumerate() {
            if i >= self.position {
                break;
            }
            if c == '\n' {
                line_start = i + 1;
                line_no += 1;
            }
        }
        let line: String = self
            .expression
            .chars()
            .skip(line_start)
            .take_while(|c| *c != '\n' && *c != '\r')
            .collect();
        // Copy tabs into the caret line so it stays aligned whatever the tab width.
        let pad: String = line
            .chars()
            .take(self.position.saturating_sub(line_start))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        if line_no > 1 {
            writeln!(
                f,
                "{} (line {}, column {})",
                self.message,
                line_no,
                self.position - line_start + 1
            )?;
        } else {
            writeln!(f, "{} (at character {})", self.message, self.position + 1)?;
        }
        writeln!(f, "{line}")?;
        write!(f, "{pad}^")
    }
}

/// An evaluation failure for one object (wrong type, bad date, ...): names the function.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{function}: {message}")]
pub struct EvalError {
    /// The function that failed (or `expression` for operators and attribute reads).
    pub function: String,
    /// What went wrong, with the offending value.
    pub message: String,
}
