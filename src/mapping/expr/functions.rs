//! Evaluation: the documented semantics of every function.

use std::cmp::Ordering;

use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use rand::seq::SliceRandom;
use rand::Rng;
use regex::{Captures, Regex};
use serde_json::Value as Json;

use super::parser::{compile_regex, CmpOp, Func, Node, ReplaceMode};
use super::value::{bool_text, Num, Value};
use super::{datetime, text, Attributes, EvalEnv, EvalError};

/// What evaluation needs besides the tree.
pub(crate) struct Ctx<'a> {
    pub(crate) attrs: &'a dyn Attributes,
    pub(crate) env: &'a EvalEnv,
}

/// Why evaluation stopped early.
pub(crate) enum Flow {
    /// `IgnoreFlowIfNullOrEmpty` met a null or empty value: drop the attribute.
    Ignore,
    Error(EvalError),
}

type R<T> = Result<T, Flow>;

fn fail(func: Func, message: impl Into<String>) -> Flow {
    Flow::Error(EvalError {
        function: func.name().to_string(),
        message: message.into(),
    })
}

/// The largest value (in bytes of text) one function may produce. Nested `Replace` calls
/// multiply lengths: without a bound, `provisiond expr` allocated gigabytes and aborted.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

fn too_large(f: Func) -> Flow {
    fail(
        f,
        format!(
            "the result would be larger than {} MiB",
            MAX_VALUE_BYTES >> 20
        ),
    )
}

/// Fail when `bytes` (a result's size, computed before building it) is over the limit.
fn check_size(f: Func, bytes: usize) -> R<()> {
    if bytes > MAX_VALUE_BYTES {
        return Err(too_large(f));
    }
    Ok(())
}

/// Seconds from 1601-01-01 (the AD FileTime epoch) to 1970-01-01.
const FILETIME_EPOCH_OFFSET_SECS: i64 = 11_644_473_600;

/// The role `type` Entra sends with AppRoleAssignmentsComplex.
const ROLE_TYPE: &str = "WindowsAzureActiveDirectoryRole";

/// Special characters for RandomString: the Windows password-complexity list the doc links.
const SPECIAL_CHARS: &str = "~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/";

pub(crate) fn eval_root(ctx: &Ctx<'_>, node: &Node) -> R<Value> {
    eval(ctx, node)
}

pub(crate) fn eval_candidates(ctx: &Ctx<'_>, node: &Node) -> R<Vec<Value>> {
    match node {
        Node::Call {
            func: Func::SelectUniqueValue,
            args,
            ..
        } => {
            let mut out = Vec::new();
            for a in args {
                let v = eval(ctx, a)?;
                if !v.is_null() {
                    out.push(v);
                }
            }
            Ok(out)
        }
        _ => {
            let v = eval(ctx, node)?;
            Ok(if v.is_null() { Vec::new() } else { vec![v] })
        }
    }
}

fn eval(ctx: &Ctx<'_>, node: &Node) -> R<Value> {
    match node {
        Node::Empty => Ok(Value::Null),
        Node::Str(s) => Ok(Value::String(s.clone())),
        Node::Num(n) => Ok(Value::Number(*n)),
        Node::Bool(b) => Ok(Value::Bool(*b)),
        Node::Ident(s) => Ok(Value::String(s.clone())),
        Node::Attr(name) => Ok(ctx
            .attrs
            .get(name)
            .map(Value::from_json)
            .unwrap_or(Value::Null)),
        Node::Compare { op, lhs, rhs } => {
            let a = eval(ctx, lhs)?;
            let b = eval(ctx, rhs)?;
            compare(ctx, *op, &a, &b).map(Value::Bool)
        }
        Node::Call {
            func,
            args,
            replace,
        } => {
            let v = call(ctx, *func, args, replace.as_ref())?;
            // Functions that could build a huge value check before building it; this catches
            // the rest (e.g. Append of two large values) before the next call doubles it.
            check_size(*func, v.text_size())?;
            Ok(v)
        }
    }
}

fn arg(ctx: &Ctx<'_>, args: &[Node], i: usize) -> R<Value> {
    match args.get(i) {
        Some(n) => eval(ctx, n),
        None => Ok(Value::Null),
    }
}

/// A single value: a one-element multi-valued attribute counts as its element.
fn single(f: Func, v: Value) -> R<Value> {
    match v {
        Value::Multi(mut items) if items.len() <= 1 => Ok(items.pop().unwrap_or(Value::Null)),
        Value::Multi(items) => Err(fail(
            f,
            format!(
                "expected a single value, got a multi-valued attribute with {} values",
                items.len()
            ),
        )),
        other => Ok(other),
    }
}

/// The value as text; `None` for null.
fn text_of(f: Func, v: Value) -> R<Option<String>> {
    let v = single(f, v)?;
    if v.is_null() {
        return Ok(None);
    }
    v.scalar_text()
        .map(Some)
        .ok_or_else(|| fail(f, format!("expected a string, got {}", v.describe())))
}

fn text_arg(ctx: &Ctx<'_>, f: Func, args: &[Node], i: usize) -> R<Option<String>> {
    text_of(f, arg(ctx, args, i)?)
}

/// The value as an integer; `None` for null. Numeric strings are accepted.
fn int_of(f: Func, what: &str, v: Value) -> R<Option<i64>> {
    let v = single(f, v)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| {
            fail(
                f,
                format!("{what} must be a whole number, got {}", n.to_text()),
            )
        }),
        Value::String(s) => {
            let t = s.trim();
            let parsed = match t.strip_prefix("&H").or_else(|| t.strip_prefix("&h")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok().map(|u| u as i64),
                None => t.parse::<i64>().ok(),
            };
            parsed.map(Some).ok_or_else(|| {
                fail(
                    f,
                    format!("{what} must be a whole number, got {}", v.describe()),
                )
            })
        }
        _ => Err(fail(
            f,
            format!("{what} must be a whole number, got {}", v.describe()),
        )),
    }
}

fn required_int(ctx: &Ctx<'_>, f: Func, args: &[Node], i: usize, what: &str) -> R<i64> {
    int_of(f, what, arg(ctx, args, i)?)?.ok_or_else(|| fail(f, format!("{what} is required")))
}

/// The value as a date-time; `None` for null. Strings are read in the common formats.
fn date_of(ctx: &Ctx<'_>, f: Func, v: Value) -> R<Option<DateTime<Utc>>> {
    match single(f, v)? {
        Value::Null => Ok(None),
        Value::DateTime(dt) => Ok(Some(dt)),
        Value::String(s) => datetime::parse_lenient(&s, &ctx.env.now)
            .map(Some)
            .ok_or_else(|| {
                fail(
                    f,
                    format!("value \"{s}\" is not a recognised date and time"),
                )
            }),
        other => Err(fail(
            f,
            format!("expected a date and time, got {}", other.describe()),
        )),
    }
}

/// Truthiness for IIF and CBool: booleans, "True"/"False", and numbers (non-zero = true).
fn bool_of(f: Func, v: Value) -> R<bool> {
    match single(f, v)? {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(b),
        Value::Number(n) => Ok(n.as_f64() != 0.0),
        Value::String(s) => {
            let t = s.trim();
            if t.eq_ignore_ascii_case("true") {
                Ok(true)
            } else if t.eq_ignore_ascii_case("false") || t.is_empty() {
                Ok(false)
            } else if let Ok(n) = t.parse::<f64>() {
                Ok(n != 0.0)
            } else {
                Err(fail(f, format!("value \"{s}\" is not a boolean")))
            }
        }
        other => Err(fail(
            f,
            format!("expected a boolean, got {}", other.describe()),
        )),
    }
}

/// Compares two values: numbers numerically, dates chronologically, booleans as booleans,
/// anything else as case-sensitive strings. Null equals only null and "" (Entra's IIF
/// documents null conditions as unsupported; this is the behaviour admins expect).
fn compare(ctx: &Ctx<'_>, op: CmpOp, a: &Value, b: &Value) -> R<bool> {
    const F: Func = Func::Iif;
    let ordering_op = !matches!(op, CmpOp::Eq | CmpOp::Ne);
    if ordering_op && (a.is_null() || b.is_null()) {
        return Err(Flow::Error(EvalError {
            function: "comparison".to_string(),
            message: format!("can't order {} and {}", a.describe(), b.describe()),
        }));
    }
    let norm = |v: &Value| -> R<Value> {
        match single(F, v.clone())? {
            Value::Null => Ok(Value::String(String::new())),
            other => Ok(other),
        }
    };
    let (a, b) = (norm(a)?, norm(b)?);
    let num = |v: &Value| match v {
        Value::Number(n) => Some(*n),
        Value::String(s) => s.trim().parse::<i64>().map(Num::Int).ok().or_else(|| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Num::Float)
        }),
        _ => None,
    };
    let ord = match (&a, &b) {
        (Value::Number(_), _) | (_, Value::Number(_)) if num(&a).is_some() && num(&b).is_some() => {
            match (num(&a), num(&b)) {
                (Some(Num::Int(x)), Some(Num::Int(y))) => x.cmp(&y),
                (Some(x), Some(y)) => x
                    .as_f64()
                    .partial_cmp(&y.as_f64())
                    .unwrap_or(Ordering::Less),
                _ => Ordering::Less,
            }
        }
        (Value::DateTime(x), Value::DateTime(y)) => x.cmp(y),
        (Value::DateTime(x), Value::String(s)) => match datetime::parse_lenient(s, &ctx.env.now) {
            Some(y) => x.cmp(&y),
            None => text_cmp(&a, &b)?,
        },
        (Value::String(s), Value::DateTime(y)) => match datetime::parse_lenient(s, &ctx.env.now) {
            Some(x) => x.cmp(y),
            None => text_cmp(&a, &b)?,
        },
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x))
            if s.trim().eq_ignore_ascii_case(bool_text(*x)) =>
        {
            Ordering::Equal
        }
        _ => text_cmp(&a, &b)?,
    };
    Ok(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

fn text_cmp(a: &Value, b: &Value) -> R<Ordering> {
    match (a.scalar_text(), b.scalar_text()) {
        (Some(x), Some(y)) => Ok(x.cmp(&y)),
        _ => Err(Flow::Error(EvalError {
            function: "comparison".to_string(),
            message: format!("can't compare {} and {}", a.describe(), b.describe()),
        })),
    }
}

fn call(
    ctx: &Ctx<'_>,
    f: Func,
    args: &[Node],
    replace: Option<&(ReplaceMode, Option<Regex>)>,
) -> R<Value> {
    match f {
        Func::Append => {
            // A null source stays null: appending a suffix to nothing isn't a value.
            let Some(source) = text_arg(ctx, f, args, 0)? else {
                return Ok(Value::Null);
            };
            let suffix = text_arg(ctx, f, args, 1)?.unwrap_or_default();
            Ok(Value::String(source + &suffix))
        }
        Func::AppRoleAssignmentsComplex => {
            let roles: Vec<Value> = role_assignments(f, arg(ctx, args, 0)?)?
                .into_iter()
                .map(|(value, display)| {
                    let mut m = serde_json::Map::new();
                    m.insert("primary".into(), Json::Bool(false));
                    m.insert("type".into(), Json::String(ROLE_TYPE.into()));
                    m.insert("display".into(), Json::String(display));
                    m.insert("value".into(), Json::String(value));
                    Value::Object(m)
                })
                .collect();
            Ok(if roles.is_empty() {
                Value::Null
            } else {
                Value::Multi(roles)
            })
        }
        Func::SingleAppRoleAssignment => Ok(role_assignments(f, arg(ctx, args, 0)?)?
            .into_iter()
            .next()
            .map(|(value, _)| Value::String(value))
            .unwrap_or(Value::Null)),
        Func::BitAnd => {
            let a = int_of(f, "value1", arg(ctx, args, 0)?)?;
            let b = int_of(f, "value2", arg(ctx, args, 1)?)?;
            Ok(match (a, b) {
                (Some(a), Some(b)) => Value::Number(Num::Int(a & b)),
                _ => Value::Null,
            })
        }
        Func::CBool => Ok(Value::Bool(bool_of(f, arg(ctx, args, 0)?)?)),
        Func::CDate => Ok(date_of(ctx, f, arg(ctx, args, 0)?)?
            .map(Value::DateTime)
            .unwrap_or(Value::Null)),
        Func::Coalesce | Func::SelectUniqueValue => {
            // SelectUniqueValue: the uniqueness check against the target is the caller's
            // (Expression::candidates); here it yields its first non-null candidate.
            for a in args {
                let v = eval(ctx, a)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Ok(Value::Null)
        }
        Func::ConvertToBase64 => Ok(match text_arg(ctx, f, args, 0)? {
            None => Value::Null,
            Some(s) => {
                // "Unicode" in .NET is UTF-16 little-endian.
                let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }),
        Func::ConvertToUTF8Hex => Ok(match text_arg(ctx, f, args, 0)? {
            None => Value::Null,
            Some(s) => Value::String(s.bytes().map(|b| format!("{b:02X}")).collect()),
        }),
        Func::Count => Ok(Value::Number(Num::Int(match arg(ctx, args, 0)? {
            Value::Null => 0,
            Value::Multi(items) => items.len() as i64,
            _ => 1,
        }))),
        Func::CStr => Ok(text_arg(ctx, f, args, 0)?
            .map(Value::String)
            .unwrap_or(Value::Null)),
        Func::DateAdd => {
            let interval = text_arg(ctx, f, args, 0)?.unwrap_or_default();
            let n = required_int(ctx, f, args, 1, "value")?;
            let Some(dt) = date_of(ctx, f, arg(ctx, args, 2)?)? else {
                return Ok(Value::Null);
            };
            date_add(f, &interval, n, dt).map(Value::DateTime)
        }
        Func::DateDiff => {
            let interval = text_arg(ctx, f, args, 0)?.unwrap_or_default();
            let d1 = date_of(ctx, f, arg(ctx, args, 1)?)?;
            let d2 = date_of(ctx, f, arg(ctx, args, 2)?)?;
            match (d1, d2) {
                (Some(d1), Some(d2)) => {
                    date_diff(f, &interval, d1, d2).map(|n| Value::Number(Num::Int(n)))
                }
                _ => Ok(Value::Null),
            }
        }
        Func::DateFromNum => {
            let Some(ticks) = int_of(f, "value", arg(ctx, args, 0)?)? else {
                return Ok(Value::Null);
            };
            from_filetime(ticks)
                .map(Value::DateTime)
                .ok_or_else(|| fail(f, format!("{ticks} is not a valid AD date (FileTime)")))
        }
        Func::NumFromDate => {
            let Some(dt) = date_of(ctx, f, arg(ctx, args, 0)?)? else {
                return Ok(Value::Null);
            };
            to_filetime(&dt)
                .map(|n| Value::Number(Num::Int(n)))
                .ok_or_else(|| fail(f, "date is outside the AD date range"))
        }
        Func::FormatDateTime => format_date_time(ctx, f, args),
        Func::Guid => Ok(Value::String(uuid::Uuid::new_v4().to_string())),
        Func::IgnoreFlowIfNullOrEmpty => {
            let v = arg(ctx, args, 0)?;
            if v.is_null_or_empty() {
                Err(Flow::Ignore)
            } else {
                Ok(v)
            }
        }
        Func::Iif => {
            let cond = bool_of(f, arg(ctx, args, 0)?)?;
            arg(ctx, args, if cond { 1 } else { 2 })
        }
        Func::InStr => {
            let hay = text_arg(ctx, f, args, 0)?;
            let needle = text_arg(ctx, f, args, 1)?;
            let start = int_of(f, "start", arg(ctx, args, 2)?)?.unwrap_or(1);
            if start < 1 {
                return Err(fail(f, format!("start must be 1 or greater, got {start}")));
            }
            let ignore_case = match single(f, arg(ctx, args, 3)?)? {
                Value::Null => false,
                Value::Number(n) => n.as_f64() == 1.0,
                Value::String(s) if s.eq_ignore_ascii_case("vbTextCompare") || s == "1" => true,
                Value::String(s) if s.eq_ignore_ascii_case("vbBinaryCompare") || s == "0" => false,
                other => {
                    return Err(fail(
                        f,
                        format!(
                            "compareType must be vbTextCompare or vbBinaryCompare, got {}",
                            other.describe()
                        ),
                    ))
                }
            };
            Ok(match (hay, needle) {
                (Some(h), Some(n)) => Value::Number(Num::Int(text::instr(
                    &h,
                    &n,
                    usize::try_from(start).unwrap_or(usize::MAX),
                    ignore_case,
                ) as i64)),
                _ => Value::Null,
            })
        }
        Func::IsNull => Ok(Value::Bool(arg(ctx, args, 0)?.is_null())),
        Func::IsNullOrEmpty => Ok(Value::Bool(arg(ctx, args, 0)?.is_null_or_empty())),
        Func::IsPresent => Ok(Value::Bool(!arg(ctx, args, 0)?.is_null_or_empty())),
        Func::IsString => Ok(Value::Bool(matches!(
            single(f, arg(ctx, args, 0)?),
            Ok(Value::String(_))
        ))),
        Func::Item => {
            let index = required_int(ctx, f, args, 1, "index")?;
            if index < 1 {
                return Err(fail(f, format!("index must be 1 or greater, got {index}")));
            }
            let i = usize::try_from(index - 1).unwrap_or(usize::MAX);
            Ok(match arg(ctx, args, 0)? {
                Value::Multi(items) => items.into_iter().nth(i).unwrap_or(Value::Null),
                Value::Null => Value::Null,
                single if i == 0 => single,
                _ => Value::Null,
            })
        }
        Func::Join => {
            let sep = text_arg(ctx, f, args, 0)?.unwrap_or_default();
            let mut parts = Vec::new();
            for a in args.iter().skip(1) {
                let items = match eval(ctx, a)? {
                    Value::Multi(items) => items,
                    v => vec![v],
                };
                for item in items {
                    if item.is_null() {
                        continue;
                    }
                    let t = item
                        .scalar_text()
                        .ok_or_else(|| fail(f, format!("can't join {}", item.describe())))?;
                    // The doc's Join(", ", "", [surname], [givenName]) -> "Doe, John" shows
                    // empty strings are skipped like nulls.
                    if !t.is_empty() {
                        parts.push(t);
                    }
                }
            }
            let size = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
            let seps = sep.len().saturating_mul(parts.len().saturating_sub(1));
            check_size(f, size.saturating_add(seps))?;
            Ok(if parts.is_empty() {
                Value::Null
            } else {
                Value::String(parts.join(&sep))
            })
        }
        Func::Left => {
            let s = text_arg(ctx, f, args, 0)?.unwrap_or_default();
            let n = required_int(ctx, f, args, 1, "NumChars")?;
            Ok(Value::String(if n < 0 {
                s
            } else {
                s.chars()
                    .take(usize::try_from(n).unwrap_or(usize::MAX))
                    .collect()
            }))
        }
        Func::Mid => {
            let s = text_arg(ctx, f, args, 0)?;
            let start = required_int(ctx, f, args, 1, "start")?;
            let len = required_int(ctx, f, args, 2, "length")?;
            if start < 1 {
                return Err(fail(f, format!("start must be 1 or greater, got {start}")));
            }
            if len < 0 {
                return Err(fail(f, format!("length must not be negative, got {len}")));
            }
            Ok(match s {
                None => Value::Null,
                Some(s) => Value::String(
                    s.chars()
                        .skip(usize::try_from(start - 1).unwrap_or(usize::MAX))
                        .take(usize::try_from(len).unwrap_or(usize::MAX))
                        .collect(),
                ),
            })
        }
        Func::NormalizeDiacritics => Ok(text_arg(ctx, f, args, 0)?
            .map(|s| Value::String(text::normalize_diacritics(&s)))
            .unwrap_or(Value::Null)),
        Func::Not => {
            // "If source value is True, returns False. Otherwise, returns True."
            let is_true = match single(f, arg(ctx, args, 0)?)? {
                Value::Bool(b) => b,
                Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
                Value::Number(n) => n.as_f64() != 0.0,
                Value::Null => false,
                other => {
                    return Err(fail(
                        f,
                        format!("expected a boolean, got {}", other.describe()),
                    ))
                }
            };
            Ok(Value::Bool(!is_true))
        }
        Func::Now => Ok(Value::DateTime(ctx.env.now)),
        Func::PCase => {
            let Some(s) = text_arg(ctx, f, args, 0)? else {
                return Ok(Value::Null);
            };
            // An empty separator list means "not specified": the default set applies.
            let seps = text_arg(ctx, f, args, 1)?.filter(|s| !s.is_empty());
            Ok(Value::String(text::pcase(&s, seps.as_deref())))
        }
        Func::RandomString => random_string(ctx, f, args),
        Func::Redact => arg(ctx, args, 0),
        Func::RemoveDuplicates => Ok(match arg(ctx, args, 0)? {
            Value::Multi(items) => {
                let mut out: Vec<Value> = Vec::with_capacity(items.len());
                for item in items {
                    if !out.contains(&item) {
                        out.push(item);
                    }
                }
                Value::Multi(out)
            }
            other => other,
        }),
        Func::Replace => replace_fn(ctx, f, args, replace),
        Func::Split => {
            let Some(s) = text_arg(ctx, f, args, 0)? else {
                return Ok(Value::Null);
            };
            let delim = text_arg(ctx, f, args, 1)?.unwrap_or_default();
            let pieces: Vec<&str> = if delim.is_empty() {
                vec![s.as_str()]
            } else {
                s.split(delim.as_str()).collect()
            };
            // The doc's example splits "PermissionSetOne, PermissionSetTwo" on "," into
            // values without the leading space, so each value is trimmed.
            Ok(Value::Multi(
                pieces
                    .into_iter()
                    .map(|p| Value::String(p.trim().to_string()))
                    .collect(),
            ))
        }
        Func::StripSpaces => Ok(text_arg(ctx, f, args, 0)?
            .map(|s| Value::String(s.replace(' ', "")))
            .unwrap_or(Value::Null)),
        Func::Switch => {
            // A null source matches the key "" (the doc's recommended null check).
            let source = text_arg(ctx, f, args, 0)?.unwrap_or_default();
            let mut i = 2;
            while i + 1 < args.len() {
                let key = text_arg(ctx, f, args, i)?.unwrap_or_default();
                if key == source {
                    return arg(ctx, args, i + 1);
                }
                i += 2;
            }
            arg(ctx, args, 1)
        }
        Func::ToLower | Func::ToUpper => {
            let Some(s) = text_arg(ctx, f, args, 0)? else {
                return Ok(Value::Null);
            };
            let culture = text_arg(ctx, f, args, 1)?.filter(|c| !c.is_empty());
            if let Some(c) = &culture {
                if !text::valid_culture(c) {
                    return Err(fail(
                        f,
                        format!("\"{c}\" is not a culture name such as en-US"),
                    ));
                }
            }
            Ok(Value::String(if f == Func::ToLower {
                text::to_lower(&s, culture.as_deref())
            } else {
                text::to_upper(&s, culture.as_deref())
            }))
        }
        Func::Word => {
            let s = text_arg(ctx, f, args, 0)?.unwrap_or_default();
            let n = required_int(ctx, f, args, 1, "WordNumber")?;
            let delims = text_arg(ctx, f, args, 2)?.unwrap_or_default();
            if n < 1 {
                return Ok(Value::String(String::new()));
            }
            let word = s
                .split(|c| delims.contains(c))
                .filter(|w| !w.is_empty())
                .nth(usize::try_from(n - 1).unwrap_or(usize::MAX))
                .unwrap_or("");
            Ok(Value::String(word.to_string()))
        }
    }
}

/// (value, displayName) of each app role assignment, in order, without repeats.
/// Assignments are objects `{"id", "displayName", "value"}`; a role with no value uses its
/// display name (and vice versa). Plain strings are accepted as role names.
fn role_assignments(f: Func, v: Value) -> R<Vec<(String, String)>> {
    let items = match v {
        Value::Null => Vec::new(),
        Value::Multi(items) => items,
        other => vec![other],
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let pair = match &item {
            Value::Null => continue,
            Value::Object(m) => {
                let field = |k: &str| {
                    m.get(k)
                        .and_then(Json::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                };
                match (field("value"), field("displayName")) {
                    (Some(v), Some(d)) => (v, d),
                    (Some(v), None) => (v.clone(), v),
                    (None, Some(d)) => (d.clone(), d),
                    (None, None) => continue,
                }
            }
            Value::String(s) if !s.is_empty() => (s.clone(), s.clone()),
            Value::String(_) => continue,
            other => {
                return Err(fail(
                    f,
                    format!("expected app role assignments, got {}", other.describe()),
                ))
            }
        };
        if !out.iter().any(|(v, _)| *v == pair.0) {
            out.push(pair);
        }
    }
    Ok(out)
}

fn date_add(f: Func, interval: &str, n: i64, dt: DateTime<Utc>) -> R<DateTime<Utc>> {
    let overflow = || fail(f, "the result is outside the supported date range");
    let months = |m: i64| -> R<DateTime<Utc>> {
        let abs = u32::try_from(m.unsigned_abs()).map_err(|_| overflow())?;
        if m >= 0 {
            dt.checked_add_months(Months::new(abs))
        } else {
            dt.checked_sub_months(Months::new(abs))
        }
        .ok_or_else(overflow)
    };
    let span = |secs_per_unit: i64| -> R<DateTime<Utc>> {
        let secs = n.checked_mul(secs_per_unit).ok_or_else(overflow)?;
        let d = Duration::try_seconds(secs).ok_or_else(overflow)?;
        dt.checked_add_signed(d).ok_or_else(overflow)
    };
    match interval.trim().to_ascii_lowercase().as_str() {
        "yyyy" => months(n.checked_mul(12).ok_or_else(overflow)?),
        "m" => months(n),
        "d" => span(86_400),
        "ww" => span(7 * 86_400),
        "h" => span(3_600),
        "n" => span(60),
        "s" => span(1),
        other => Err(fail(
            f,
            format!("interval \"{other}\" is not one of yyyy, m, d, ww, h, n, s"),
        )),
    }
}

/// VB's DateDiff: years and months count calendar boundaries crossed, weeks count
/// Sunday-started calendar weeks (which gives the doc's -493), smaller units count whole
/// elapsed units.
fn date_diff(f: Func, interval: &str, d1: DateTime<Utc>, d2: DateTime<Utc>) -> R<i64> {
    let span = d2.signed_duration_since(d1);
    Ok(match interval.trim().to_ascii_lowercase().as_str() {
        "yyyy" => i64::from(d2.year()) - i64::from(d1.year()),
        "m" => {
            (i64::from(d2.year()) - i64::from(d1.year())) * 12 + i64::from(d2.month())
                - i64::from(d1.month())
        }
        "d" => span.num_days(),
        "ww" => {
            let week_start = |d: DateTime<Utc>| {
                d.date_naive() - Duration::days(i64::from(d.weekday().num_days_from_sunday()))
            };
            (week_start(d2) - week_start(d1)).num_days() / 7
        }
        "h" => span.num_hours(),
        "n" => span.num_minutes(),
        "s" => span.num_seconds(),
        other => {
            return Err(fail(
                f,
                format!("interval \"{other}\" is not one of yyyy, m, d, ww, h, n, s"),
            ))
        }
    })
}

/// AD FileTime (100-ns ticks since 1601-01-01 UTC) to a date-time.
fn from_filetime(ticks: i64) -> Option<DateTime<Utc>> {
    if ticks < 0 {
        return None;
    }
    let secs = ticks / 10_000_000 - FILETIME_EPOCH_OFFSET_SECS;
    let nanos = u32::try_from(ticks % 10_000_000 * 100).ok()?;
    // .NET's DateTime ends with year 9999, so larger values (such as accountExpires'
    // "never", 0x7FFFFFFFFFFFFFFF) are not dates.
    Utc.timestamp_opt(secs, nanos)
        .single()
        .filter(|dt| dt.year() <= 9999)
}

fn to_filetime(dt: &DateTime<Utc>) -> Option<i64> {
    let secs = dt.timestamp().checked_add(FILETIME_EPOCH_OFFSET_SECS)?;
    if secs < 0 {
        return None;
    }
    secs.checked_mul(10_000_000)?
        .checked_add(i64::from(dt.timestamp_subsec_nanos() / 100))
}

const DATETIME_STYLES: &[&str] = &[
    "none",
    "allowleadingwhite",
    "allowtrailingwhite",
    "allowinnerwhite",
    "allowwhitespaces",
    "nocurrentdatedefault",
    "adjusttouniversal",
    "assumelocal",
    "assumeuniversal",
    "roundtripkind",
];

fn format_date_time(ctx: &Ctx<'_>, f: Func, args: &[Node]) -> R<Value> {
    // 3-argument form (older docs): source, inputFormat, outputFormat.
    let (styles_i, in_i, out_i) = if args.len() == 3 {
        (None, 1, 2)
    } else {
        (Some(1), 2, 3)
    };
    if let Some(i) = styles_i {
        if let Some(styles) = text_arg(ctx, f, args, i)? {
            // Every style only changes how local time and white space are treated; all
            // times here are UTC and white space around the value is always allowed.
            for s in styles
                .split([',', '|'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let name = s
                    .strip_prefix("DateTimeStyles.")
                    .unwrap_or(s)
                    .to_ascii_lowercase();
                if !DATETIME_STYLES.contains(&name.as_str()) {
                    return Err(fail(f, format!("\"{s}\" is not a DateTimeStyles value")));
                }
            }
        }
    }
    let input_format = text_arg(ctx, f, args, in_i)?;
    let output_format =
        text_arg(ctx, f, args, out_i)?.ok_or_else(|| fail(f, "outputFormat is required"))?;
    let dt = match single(f, arg(ctx, args, 0)?)? {
        Value::Null => return Ok(Value::Null),
        Value::DateTime(dt) => dt,
        other => {
            let s = other.scalar_text().ok_or_else(|| {
                fail(
                    f,
                    format!("expected a date string, got {}", other.describe()),
                )
            })?;
            let input_format = input_format.ok_or_else(|| fail(f, "inputFormat is required"))?;
            datetime::parse_exact(&s, &input_format, &ctx.env.now)
                .map_err(|m| fail(f, m.to_string()))?
        }
    };
    datetime::format(&dt, &output_format)
        .map(Value::String)
        .map_err(|m| fail(f, m.to_string()))
}

fn random_string(ctx: &Ctx<'_>, f: Func, args: &[Node]) -> R<Value> {
    let names = [
        "Length",
        "MinimumNumbers",
        "MinimumSpecialCharacters",
        "MinimumCapital",
        "MinimumLowerCase",
    ];
    let mut n = [0usize; 5];
    for (i, name) in names.iter().enumerate() {
        let v = required_int(ctx, f, args, i, name)?;
        let v = usize::try_from(v).map_err(|_| fail(f, format!("{name} must not be negative")))?;
        if let Some(slot) = n.get_mut(i) {
            *slot = v;
        }
    }
    let [length, min_num, min_special, min_cap, min_lower] = n;
    if length == 0 || length > 256 {
        return Err(fail(f, format!("Length must be 1 to 256, got {length}")));
    }
    let total = min_num
        .saturating_add(min_special)
        .saturating_add(min_cap)
        .saturating_add(min_lower);
    if total > length {
        return Err(fail(f, "the minimums add up to more than Length"));
    }
    let avoid = text_arg(ctx, f, args, 5)?.unwrap_or_default();
    let pool =
        |chars: &str| -> Vec<char> { chars.chars().filter(|c| !avoid.contains(*c)).collect() };
    let digits = pool("0123456789");
    let special = pool(SPECIAL_CHARS);
    let upper = pool("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    let lower = pool("abcdefghijklmnopqrstuvwxyz");
    let mut rng = rand::thread_rng();
    let mut out: Vec<char> = Vec::with_capacity(length);
    for (set, min, what) in [
        (&digits, min_num, "numbers"),
        (&special, min_special, "special characters"),
        (&upper, min_cap, "capital letters"),
        (&lower, min_lower, "lower case letters"),
    ] {
        if min > 0 && set.is_empty() {
            return Err(fail(f, format!("CharactersToAvoid excludes all {what}")));
        }
        for _ in 0..min {
            if let Some(c) = set.choose(&mut rng) {
                out.push(*c);
            }
        }
    }
    let all: Vec<char> = [&digits, &special, &upper, &lower]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    if all.is_empty() && out.len() < length {
        return Err(fail(f, "CharactersToAvoid excludes every character"));
    }
    while out.len() < length {
        match all.get(rng.gen_range(0..all.len().max(1))) {
            Some(c) => out.push(*c),
            None => break,
        }
    }
    out.shuffle(&mut rng);
    Ok(Value::String(out.into_iter().collect()))
}

fn replace_fn(
    ctx: &Ctx<'_>,
    f: Func,
    args: &[Node],
    plan: Option<&(ReplaceMode, Option<Regex>)>,
) -> R<Value> {
    let Some((mode, compiled)) = plan else {
        return Err(fail(f, "internal: no replace plan"));
    };
    let source = text_arg(ctx, f, args, 0)?;
    let regex = |ctx: &Ctx<'_>| -> R<Regex> {
        match compiled {
            Some(re) => Ok(re.clone()),
            None => {
                let pattern = text_arg(ctx, f, args, 2)?.unwrap_or_default();
                compile_regex(&pattern).map_err(|m| fail(f, m.to_string()))
            }
        }
    };
    match mode {
        ReplaceMode::Plain => {
            let Some(source) = source else {
                return Ok(Value::Null);
            };
            let old = text_arg(ctx, f, args, 1)?.unwrap_or_default();
            let new = text_arg(ctx, f, args, 4)?.unwrap_or_default();
            if old.is_empty() {
                return Ok(Value::String(source));
            }
            let count = source.matches(old.as_str()).count();
            check_size(
                f,
                source.len().saturating_add(count.saturating_mul(new.len())),
            )?;
            Ok(Value::String(source.replace(&old, &new)))
        }
        ReplaceMode::Template => {
            let Some(source) = source else {
                return Ok(Value::Null);
            };
            let old = text_arg(ctx, f, args, 1)?.unwrap_or_default();
            let template = text_arg(ctx, f, args, 6)?.unwrap_or_default();
            if old.is_empty() {
                return Ok(Value::String(template));
            }
            let count = template.matches(old.as_str()).count();
            check_size(
                f,
                template
                    .len()
                    .saturating_add(count.saturating_mul(source.len())),
            )?;
            Ok(Value::String(template.replace(&old, &source)))
        }
        ReplaceMode::Regex => {
            let Some(source) = source else {
                return Ok(Value::Null);
            };
            let re = regex(ctx)?;
            let repl = text_arg(ctx, f, args, 4)?.unwrap_or_default();
            // What `replace_all` does, with the size checked as the result grows.
            let mut out = String::with_capacity(source.len());
            let mut last = 0;
            for caps in re.captures_iter(&source) {
                let Some(m) = caps.get(0) else { continue };
                out.push_str(source.get(last..m.start()).unwrap_or(""));
                out.push_str(&expand_dotnet(&caps, &repl));
                last = m.end();
                check_size(f, out.len())?;
            }
            out.push_str(source.get(last..).unwrap_or(""));
            check_size(f, out.len())?;
            Ok(Value::String(out))
        }
        ReplaceMode::RegexGroup => {
            let Some(source) = source else {
                return Ok(Value::Null);
            };
            let re = regex(ctx)?;
            let group = text_arg(ctx, f, args, 3)?.unwrap_or_default();
            check_group(f, &re, &group)?;
            let repl = text_arg(ctx, f, args, 4)?.unwrap_or_default();
            let mut out = String::with_capacity(source.len());
            let mut last = 0;
            for caps in re.captures_iter(&source) {
                if let Some(m) = caps.name(&group) {
                    out.push_str(source.get(last..m.start()).unwrap_or(""));
                    out.push_str(&repl);
                    last = m.end();
                    check_size(f, out.len())?;
                }
            }
            out.push_str(source.get(last..).unwrap_or(""));
            Ok(Value::String(out))
        }
        ReplaceMode::RegexFallback => {
            if let Some(s) = source.filter(|s| !s.is_empty()) {
                return Ok(Value::String(s));
            }
            let re = regex(ctx)?;
            let group = text_arg(ctx, f, args, 3)?.unwrap_or_default();
            check_group(f, &re, &group)?;
            // The doc passes the attribute itself ([mobile]); a quoted name ("mobile") is
            // taken as the attribute's name, matching the parameter's name.
            let other = match args.get(5) {
                Some(Node::Str(name)) => ctx
                    .attrs
                    .get(name)
                    .map(Value::from_json)
                    .unwrap_or(Value::Null),
                _ => arg(ctx, args, 5)?,
            };
            let Some(other) = text_of(f, other)? else {
                return Ok(Value::Null);
            };
            Ok(re
                .captures(&other)
                .and_then(|c| {
                    c.name(&group)
                        .map(|m| Value::String(m.as_str().to_string()))
                })
                .unwrap_or(Value::Null))
        }
    }
}

fn check_group(f: Func, re: &Regex, group: &str) -> R<()> {
    if re.capture_names().flatten().any(|n| n == group) {
        Ok(())
    } else {
        Err(fail(f, format!("the regex has no group named \"{group}\"")))
    }
}

/// .NET substitutions in a replacement: `$$`, `${name}`, `$number`, `$&`; anything else is
/// literal.
fn expand_dotnet(caps: &Captures<'_>, repl: &str) -> String {
    let chars: Vec<char> = repl.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('&') => {
                out.push_str(caps.get(0).map_or("", |m| m.as_str()));
                i += 2;
            }
            Some('{') => {
                let close = chars.iter().skip(i + 2).position(|x| *x == '}');
                let name: Option<String> =
                    close.map(|len| chars.iter().skip(i + 2).take(len).collect());
                let found = name.as_ref().and_then(|n| match n.parse::<usize>() {
                    Ok(idx) => caps.get(idx),
                    Err(_) => caps.name(n),
                });
                match (found, name, close) {
                    (Some(m), _, Some(len)) => {
                        out.push_str(m.as_str());
                        i += len + 3;
                    }
                    // An unknown group stays literal, as in .NET.
                    _ => {
                        out.push('$');
                        i += 1;
                    }
                }
            }
            Some(d) if d.is_ascii_digit() => {
                let digits: String = chars
                    .iter()
                    .skip(i + 1)
                    .take_while(|x| x.is_ascii_digit())
                    .collect();
                match digits.parse::<usize>().ok().and_then(|idx| caps.get(idx)) {
                    Some(m) => {
                        out.push_str(m.as_str());
                        i += 1 + digits.len();
                    }
                    None => {
                        out.push('$');
                        i += 1;
                    }
                }
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}
