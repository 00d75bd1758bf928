//! List filters (RFC 7644 §3.4.2.2): rendered for the client's matching queries, parsed and
//! evaluated server-side (the sandbox):
//! `userName eq "bjensen"`, `emails[type eq "work" and value co "@x"]`, `not (active eq false)`.

use std::fmt;

use serde_json::Value;

use super::{get_attr, is_case_exact, is_core_schema};

/// Nesting deeper than this is refused, so a hostile filter cannot overflow the stack.
const MAX_DEPTH: usize = 64;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    /// `attrPath op value`.
    Compare {
        /// The attribute compared.
        path: AttrPath,
        /// The comparison operator.
        op: CompareOp,
        /// The literal: string, number, boolean or null.
        value: Value,
    },
    /// `attrPath pr`.
    Present(AttrPath),
    /// `a and b`.
    And(Box<Filter>, Box<Filter>),
    /// `a or b`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`.
    Not(Box<Filter>),
    /// `attr[filter]`: some element of the multi-valued `attr` matches `filter`.
    ValuePath(AttrPath, Box<Filter>),
}

/// An attribute path in a filter: optional schema URN, attribute, optional sub-attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AttrPath {
    /// Schema URN prefix, if given.
    pub schema: Option<String>,
    /// Attribute name.
    pub attr: String,
    /// Sub-attribute name, if given.
    pub sub_attr: Option<String>,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareOp {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater than or equal
    Ge,
    /// less than
    Lt,
    /// less than or equal
    Le,
}

/// A filter that does not parse; `pos` is a byte offset into the filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at position {pos}: {reason}")]
pub(crate) struct FilterError {
    /// Byte offset of the problem.
    pub pos: usize,
    /// What was expected or found.
    pub reason: String,
}

/// Renders `attr eq <value>` as a SCIM filter (the matching queries the client sends).
///
/// Strings are JSON-escaped (`\"`, `\\`, control characters) because the SCIM filter
/// grammar takes its string literals from JSON; non-ASCII is kept literally and left to
/// the URL encoder. Booleans, numbers and `null` are unquoted. Arrays and objects are not
/// valid comparison values: their compact JSON text is compared as a string, which
/// matches nothing rather than matching the wrong object.
pub(crate) fn eq_filter(attr: &str, value: &Value) -> String {
    let literal = match value {
        Value::String(_) | Value::Bool(_) | Value::Number(_) | Value::Null => value.to_string(),
        Value::Array(_) | Value::Object(_) => Value::String(value.to_string()).to_string(),
    };
    format!("{attr} eq {literal}")
}

impl Filter {
    /// Parses a filter.
    pub(crate) fn parse(input: &str) -> Result<Filter, FilterError> {
        let tokens = lex(input)?;
        let mut p = Parser {
            tokens,
            i: 0,
            depth: 0,
            end: input.len(),
        };
        let f = p.or()?;
        match p.tokens.get(p.i) {
            None => Ok(f),
            Some(t) => Err(FilterError {
                pos: t.pos,
                reason: format!("unexpected {}", t.kind),
            }),
        }
    }

    /// Whether `resource` satisfies the filter.
    pub(crate) fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(a) => !a.matches(resource),
            Filter::Present(path) => path.values(resource).iter().any(|v| match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            }),
            Filter::Compare { path, op, value } => {
                let exact = path.is_case_exact();
                let values = path.values(resource);
                match op {
                    // ne is "no value equals", so an absent attribute is not equal.
                    CompareOp::Ne => !values
                        .iter()
                        .any(|v| compare(v, CompareOp::Eq, value, exact)),
                    CompareOp::Eq if value.is_null() => values.iter().all(|v| v.is_null()),
                    _ => values.iter().any(|v| compare(v, *op, value, exact)),
                }
            }
            Filter::ValuePath(path, inner) => match path.raw(resource) {
                Some(Value::Array(items)) => items.iter().any(|e| inner.matches(e)),
                Some(other) => inner.matches(other),
                None => false,
            },
        }
    }

    /// For a filter that is exactly `name eq "string"` (the matching query), the string.
    pub(crate) fn eq_value(&self, name: &str) -> Option<&str> {
        match self {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: Value::String(s),
            } if path.sub_attr.is_none()
                && path.schema.as_deref().is_none_or(is_core_schema)
                && path.attr.eq_ignore_ascii_case(name) =>
            {
                Some(s)
            }
            _ => None,
        }
    }
}

impl AttrPath {
    fn parse(text: &str) -> Option<AttrPath> {
        let (schema, rest) = if text
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case("urn:"))
        {
            let i = text.rfind(':')?;
            (Some(text[..i].to_string()), &text[i + 1..])
        } else {
            (None, text)
        };
        let mut parts = rest.split('.');
        let attr = parts.next().filter(|a| valid_name(a))?.to_string();
        let sub_attr = match parts.next() {
            Some(s) if valid_name(s) => Some(s.to_string()),
            Some(_) => return None,
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(AttrPath {
            schema,
            attr,
            sub_attr,
        })
    }

    fn is_case_exact(&self) -> bool {
        match &self.sub_attr {
            None => is_case_exact(&self.attr),
            Some(sub) => {
                self.attr.eq_ignore_ascii_case("meta") && sub.eq_ignore_ascii_case("version")
            }
        }
    }

    /// The attribute itself, before sub-attribute selection.
    fn raw<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        let container = match self.schema.as_deref().filter(|s| !is_core_schema(s)) {
            Some(urn) => get_attr(resource, urn)?,
            None => resource,
        };
        get_attr(container, &self.attr)
    }

    /// Every value the path designates, multi-valued attributes flattened. A complex element
    /// without a sub-attribute stands for its `value` (`emails co "@x"`).
    fn values<'a>(&self, resource: &'a Value) -> Vec<&'a Value> {
        let Some(raw) = self.raw(resource) else {
            return Vec::new();
        };
        let items: Vec<&Value> = match raw {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        items
            .into_iter()
            .filter_map(|v| match (&self.sub_attr, v) {
                (Some(sub), v) => get_attr(v, sub),
                (None, Value::Object(_)) if raw.is_array() => get_attr(v, "value"),
                (None, v) => Some(v),
            })
            .collect()
    }
}

fn valid_name(s: &str) -> bool {
    let s = s.strip_prefix('$').unwrap_or(s);
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn compare(actual: &Value, op: CompareOp, expected: &Value, case_exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordering = match (actual, expected) {
        (Value::String(a), Value::String(b)) => {
            let (a, b) = if case_exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => return a.contains(&b),
                CompareOp::Sw => return a.starts_with(&b),
                CompareOp::Ew => return a.ends_with(&b),
                _ => a.cmp(&b),
            }
        }
        (Value::Number(a), Value::Number(b)) => match a.as_f64().partial_cmp(&b.as_f64()) {
            Some(o) => o,
            None => return false,
        },
        (Value::Bool(a), Value::Bool(b)) => {
            return matches!(op, CompareOp::Eq) && a == b;
        }
        (Value::Null, Value::Null) => return matches!(op, CompareOp::Eq),
        _ => return false,
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Word(String),
    Literal(Value),
    LParen,
    RParen,
    LBracket,
    RBracket,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Word(w) => write!(f, "'{w}'"),
            TokenKind::Literal(v) => write!(f, "value {v}"),
            TokenKind::LParen => f.write_str("'('"),
            TokenKind::RParen => f.write_str("')'"),
            TokenKind::LBracket => f.write_str("'['"),
            TokenKind::RBracket => f.write_str("']'"),
        }
    }
}

struct Token {
    kind: TokenKind,
    pos: usize,
}

fn lex(input: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => TokenKind::LParen,
            b')' => TokenKind::RParen,
            b'[' => TokenKind::LBracket,
            b']' => TokenKind::RBracket,
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if i >= bytes.len() {
                    return Err(FilterError {
                        pos: start,
                        reason: "unterminated string".to_string(),
                    });
                }
                let lit =
                    serde_json::from_str::<String>(&input[start..=i]).map_err(|e| FilterError {
                        pos: start,
                        reason: format!("invalid string literal: {e}"),
                    })?;
                TokenKind::Literal(Value::String(lit))
            }
            b'-' | b'0'..=b'9' => {
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let n = serde_json::from_str::<serde_json::Number>(&input[start..=i]).map_err(
                    |_| FilterError {
                        pos: start,
                        reason: format!("invalid number {:?}", &input[start..=i]),
                    },
                )?;
                TokenKind::Literal(Value::Number(n))
            }
            c if c.is_ascii_alphabetic() || c == b'$' => {
                while i + 1 < bytes.len()
                    && (bytes[i + 1].is_ascii_alphanumeric()
                        || matches!(bytes[i + 1], b'_' | b'-' | b'.' | b':' | b'$'))
                {
                    i += 1;
                }
                let w = &input[start..=i];
                match w.to_ascii_lowercase().as_str() {
                    "true" => TokenKind::Literal(Value::Bool(true)),
                    "false" => TokenKind::Literal(Value::Bool(false)),
                    "null" => TokenKind::Literal(Value::Null),
                    _ => TokenKind::Word(w.to_string()),
                }
            }
            _ => {
                return Err(FilterError {
                    pos: start,
                    reason: format!(
                        "unexpected character {:?}",
                        input[start..].chars().next().unwrap_or('?')
                    ),
                })
            }
        };
        tokens.push(Token { kind, pos: start });
        i += 1;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    i: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn pos(&self) -> usize {
        self.tokens.get(self.i).map_or(self.end, |t| t.pos)
    }

    fn err<T>(&self, reason: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError {
            pos: self.pos(),
            reason: reason.into(),
        })
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.i), Some(Token { kind: TokenKind::Word(w), .. }) if w.eq_ignore_ascii_case(word))
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        if self.tokens.get(self.i).map(|t| &t.kind) == Some(kind) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("filter nested too deeply");
        }
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.i += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.i += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.peek_word("not")
            && self.tokens.get(self.i + 1).map(|t| &t.kind) == Some(&TokenKind::LParen)
        {
            self.i += 2;
            let inner = self.or()?;
            if !self.eat(&TokenKind::RParen) {
                return self.err("expected ')'");
            }
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.eat(&TokenKind::LParen) {
            let inner = self.or()?;
            if !self.eat(&TokenKind::RParen) {
                return self.err("expected ')'");
            }
            return Ok(inner);
        }
        self.attr_expr()
    }

    fn attr_expr(&mut self) -> Result<Filter, FilterError> {
        let path = match self.tokens.get(self.i) {
            Some(Token {
                kind: TokenKind::Word(w),
                ..
            }) => match AttrPath::parse(w) {
                Some(p) => p,
                None => return self.err(format!("invalid attribute path {w:?}")),
            },
            Some(t) => return self.err(format!("expected an attribute path, found {}", t.kind)),
            None => return self.err("expected an attribute path, found the end"),
        };
        self.i += 1;
        if self.eat(&TokenKind::LBracket) {
            let inner = self.or()?;
            if !self.eat(&TokenKind::RBracket) {
                return self.err("expected ']'");
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let op = match self.tokens.get(self.i) {
            Some(Token {
                kind: TokenKind::Word(w),
                ..
            }) => w.to_ascii_lowercase(),
            _ => return self.err("expected an operator"),
        };
        let op = match op.as_str() {
            "pr" => {
                self.i += 1;
                return Ok(Filter::Present(path));
            }
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            other => return self.err(format!("unknown operator {other:?}")),
        };
        self.i += 1;
        match self.tokens.get(self.i) {
            Some(Token {
                kind: TokenKind::Literal(v),
                ..
            }) => {
                let value = v.clone();
                self.i += 1;
                Ok(Filter::Compare { path, op, value })
            }
            _ => self.err("expected a string, number, true, false or null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn m(filter: &str, v: &Value) -> bool {
        Filter::parse(filter).unwrap().matches(v)
    }

    fn user() -> Value {
        json!({
            "id": "AbC", "externalId": "Ext", "userName": "O\"Brien\\x@Ex.com", "active": true,
            "displayName": "Zoë", "title": null, "meta": {"version": "W/\"a\"", "created": "2024-01-02T00:00:00Z"},
            "emails": [{"type": "home", "value": "h@home.org"}, {"type": "work", "value": "w@corp.com", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "42", "costCenter": 7},
        })
    }

    #[test]
    fn comparisons() {
        let u = user();
        assert!(m(r#"userName eq "o\"brien\\x@ex.com""#, &u));
        assert!(m(r#"USERNAME Eq "O\"BRIEN\\X@EX.COM""#, &u));
        assert!(m(r#"displayName eq "zoë""#, &u));
        assert!(m(r#"id eq "AbC""#, &u));
        assert!(!m(r#"id eq "abc""#, &u));
        assert!(!m(r#"externalId eq "ext""#, &u));
        assert!(!m(r#"meta.version eq "w/\"A\"""#, &u));
        assert!(m(r#"userName sw "o\"" and userName ew "COM""#, &u));
        assert!(m(r#"userName co "BRIEN""#, &u));
        assert!(m("active eq true and not (active eq false)", &u));
        assert!(m("title pr or displayName pr", &u));
        assert!(!m("title pr", &u));
        assert!(m("nickName eq null", &u));
        assert!(m(r#"nickName ne "x""#, &u));
        assert!(m(r#"meta.created gt "2024-01-01T00:00:00Z""#, &u));
        assert!(m(r#"meta.created le "2024-01-02T00:00:00Z""#, &u));
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter ge 7",
            &u
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "42""#,
            &u
        ));
        assert!(m(r#"emails.value ew "corp.com""#, &u));
        assert!(m(r#"emails co "home.org""#, &u));
        assert!(m(r#"emails[type eq "work" and value co "@corp"]"#, &u));
        assert!(!m(r#"emails[type eq "home" and value co "@corp"]"#, &u));
        assert!(m(
            r#"(emails[primary eq true] or id eq "x") and active eq true"#,
            &u
        ));
        assert!(m(r#"userName eq "x" or userName eq "y" or active pr"#, &u));
    }

    #[test]
    fn eq_value_and_escape() {
        let v = "o\"brien\\x@ex.com";
        let f = Filter::parse(&eq_filter("userName", &Value::from(v))).unwrap();
        assert_eq!(f.eq_value("username"), Some(v));
        assert_eq!(f.eq_value("displayName"), None);
        assert_eq!(
            Filter::parse(r#"userName co "x""#)
                .unwrap()
                .eq_value("userName"),
            None
        );
    }

    #[test]
    fn errors_have_positions() {
        for (f, pos) in [
            ("userName eq", 11),
            ("userName xx \"a\"", 9),
            ("userName eq \"a", 12),
            ("(userName pr", 12),
            ("userName pr extra", 12),
            ("emails[type eq \"w\"", 18),
            ("a eq \"x\" and", 12),
            ("", 0),
            ("a eq 'x'", 5),
            ("a.b.c pr", 0),
        ] {
            let e = Filter::parse(f).unwrap_err();
            assert_eq!(e.pos, pos, "{f:?}: {e}");
        }
        let deep = format!("{}a pr{}", "(".repeat(500), ")".repeat(500));
        assert!(Filter::parse(&deep).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in any::<String>()) {
            if let Ok(f) = Filter::parse(&s) {
                let _ = f.matches(&user());
            }
        }

        #[test]
        fn parser_never_panics_on_filterish(s in r#"[a-z(\)\[\]" \\.:0-9-]{0,40}"#) {
            if let Ok(f) = Filter::parse(&s) {
                let _ = f.matches(&user());
            }
        }

        #[test]
        fn eq_filter_matches_its_value(v in any::<String>()) {
            let f = Filter::parse(&eq_filter("userName", &Value::from(v.as_str()))).unwrap();
            let user = json!({"userName": v});
            prop_assert!(f.matches(&user));
        }
    }
}
