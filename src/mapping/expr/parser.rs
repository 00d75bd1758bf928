//! Recursive-descent parser for the expression syntax.

use regex::Regex;

use super::value::Num;
use super::{ParseError, MAX_EXPRESSION_CHARS, MAX_NESTING_DEPTH};

/// Every documented function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Append,
    AppRoleAssignmentsComplex,
    BitAnd,
    CBool,
    CDate,
    Coalesce,
    ConvertToBase64,
    ConvertToUTF8Hex,
    Count,
    CStr,
    DateAdd,
    DateDiff,
    DateFromNum,
    FormatDateTime,
    Guid,
    IgnoreFlowIfNullOrEmpty,
    Iif,
    InStr,
    IsNull,
    IsNullOrEmpty,
    IsPresent,
    IsString,
    Item,
    Join,
    Left,
    Mid,
    NormalizeDiacritics,
    Not,
    Now,
    NumFromDate,
    PCase,
    RandomString,
    Redact,
    RemoveDuplicates,
    Replace,
    SelectUniqueValue,
    SingleAppRoleAssignment,
    Split,
    StripSpaces,
    Switch,
    ToLower,
    ToUpper,
    Word,
}

/// Name, function, minimum and maximum argument count (`usize::MAX`: no upper bound).
const FUNCTIONS: &[(&str, Func, usize, usize)] = &[
    ("Append", Func::Append, 2, 2),
    (
        "AppRoleAssignmentsComplex",
        Func::AppRoleAssignmentsComplex,
        1,
        1,
    ),
    ("BitAnd", Func::BitAnd, 2, 2),
    ("CBool", Func::CBool, 1, 1),
    ("CDate", Func::CDate, 1, 1),
    ("Coalesce", Func::Coalesce, 1, usize::MAX),
    ("ConvertToBase64", Func::ConvertToBase64, 1, 1),
    ("ConvertToUTF8Hex", Func::ConvertToUTF8Hex, 1, 1),
    ("Count", Func::Count, 1, 1),
    ("CStr", Func::CStr, 1, 1),
    ("DateAdd", Func::DateAdd, 3, 3),
    ("DateDiff", Func::DateDiff, 3, 3),
    ("DateFromNum", Func::DateFromNum, 1, 1),
    // The current signature has 4 arguments; older Entra docs had no dateTimeStyles, and
    // migrated mappings still use that 3-argument form.
    ("FormatDateTime", Func::FormatDateTime, 3, 4),
    ("Guid", Func::Guid, 0, 0),
    (
        "IgnoreFlowIfNullOrEmpty",
        Func::IgnoreFlowIfNullOrEmpty,
        1,
        1,
    ),
    ("IIF", Func::Iif, 3, 3),
    ("InStr", Func::InStr, 2, 4),
    ("IsNull", Func::IsNull, 1, 1),
    ("IsNullOrEmpty", Func::IsNullOrEmpty, 1, 1),
    ("IsPresent", Func::IsPresent, 1, 1),
    ("IsString", Func::IsString, 1, 1),
    ("Item", Func::Item, 2, 2),
    ("Join", Func::Join, 2, usize::MAX),
    ("Left", Func::Left, 2, 2),
    ("Mid", Func::Mid, 3, 3),
    ("NormalizeDiacritics", Func::NormalizeDiacritics, 1, 1),
    ("Not", Func::Not, 1, 1),
    ("Now", Func::Now, 0, 0),
    ("NumFromDate", Func::NumFromDate, 1, 1),
    ("PCase", Func::PCase, 1, 2),
    ("RandomString", Func::RandomString, 5, 6),
    ("Redact", Func::Redact, 1, 1),
    ("RemoveDuplicates", Func::RemoveDuplicates, 1, 1),
    ("Replace", Func::Replace, 7, 7),
    ("SelectUniqueValue", Func::SelectUniqueValue, 2, usize::MAX),
    (
        "SingleAppRoleAssignment",
        Func::SingleAppRoleAssignment,
        1,
        1,
    ),
    ("Split", Func::Split, 2, 2),
    ("StripSpaces", Func::StripSpaces, 1, 1),
    ("Switch", Func::Switch, 4, usize::MAX),
    ("ToLower", Func::ToLower, 1, 2),
    ("ToUpper", Func::ToUpper, 1, 2),
    ("Word", Func::Word, 3, 3),
];

impl Func {
    /// The function's name as written in expressions.
    pub(crate) fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|(_, f, _, _)| *f == self)
            .map(|(n, _, _, _)| *n)
            .unwrap_or("?")
    }
}

/// A comparison operator (`IIF` / `CBool` conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Which documented mode a `Replace` call uses, decided from which arguments are given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplaceMode {
    /// oldValue + replacementValue: plain, case-sensitive replace of every occurrence.
    Plain,
    /// oldValue + template: oldValue in the template is replaced by the source.
    Template,
    /// regexPattern + replacementValue: regex replace; `${group}` substitutions allowed.
    Regex,
    /// regexPattern + regexGroupName + replacementValue: replace the group's text in each match.
    RegexGroup,
    /// regexPattern + regexGroupName + replacementAttributeName: source if it has a value,
    /// else the group's text extracted from the replacement attribute.
    RegexFallback,
}

/// A parsed expression tree.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// An omitted argument (`Switch([x], , "a", "b")`); evaluates to null.
    Empty,
    Str(String),
    Num(Num),
    Bool(bool),
    /// `vbTextCompare` / `vbBinaryCompare`; evaluates to its name.
    Ident(String),
    Attr(String),
    Call {
        func: Func,
        args: Vec<Node>,
        /// For `Replace`: its mode, and the regex when the pattern is a literal (compiled
        /// once here, which also reports a bad pattern as a parse error).
        replace: Option<(ReplaceMode, Option<Regex>)>,
    },
    Compare {
        op: CmpOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
}

impl Node {
    /// Whether `func` is called anywhere in the tree.
    pub(crate) fn uses(&self, func: Func) -> bool {
        match self {
            Node::Call { func: f, args, .. } => *f == func || args.iter().any(|a| a.uses(func)),
            Node::Compare { lhs, rhs, .. } => lhs.uses(func) || rhs.uses(func),
            _ => false,
        }
    }
}

/// Parses `text` into a tree and the attribute names it references.
pub(crate) fn parse(text: &str) -> Result<(Node, Vec<String>), ParseError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_EXPRESSION_CHARS {
        return Err(ParseError::new(
            text,
            MAX_EXPRESSION_CHARS,
            format!(
                "expression is {} characters long; the limit is {MAX_EXPRESSION_CHARS}",
                chars.len()
            ),
        ));
    }
    let mut p = Parser {
        text,
        chars,
        pos: 0,
        depth: 0,
        attributes: Vec::new(),
    };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error(0, "empty expression"));
    }
    let root = p.expr()?;
    p.skip_ws();
    if !p.at_end() {
        let c = p.peek().unwrap_or(' ');
        return Err(p.error(
            p.pos,
            format!("unexpected '{c}' after the end of the expression"),
        ));
    }
    Ok((root, p.attributes))
}

const NESTED_SUV: &str = "SelectUniqueValue must be the top-level function and can't be nested";

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    attributes: Vec<String>,
}

impl Parser<'_> {
    fn error(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(self.text, pos, message)
    }

    fn slice(&self, from: usize, to: usize) -> String {
        self.chars.get(from..to).unwrap_or(&[]).iter().collect()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            return Err(self.error(
                pos,
                format!("expression is nested more than {MAX_NESTING_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    /// operand [comparison operand]
    fn expr(&mut self) -> Result<Node, ParseError> {
        let start = self.pos;
        let lhs = self.operand()?;
        self.skip_ws();
        let op_pos = self.pos;
        let op = match (self.peek(), self.peek_at(1)) {
            (Some('='), _) => Some((CmpOp::Eq, 1)),
            (Some('<'), Some('>')) => Some((CmpOp::Ne, 2)),
            (Some('<'), Some('=')) => Some((CmpOp::Le, 2)),
            (Some('>'), Some('=')) => Some((CmpOp::Ge, 2)),
            (Some('<'), _) => Some((CmpOp::Lt, 1)),
            (Some('>'), _) => Some((CmpOp::Gt, 1)),
            _ => None,
        };
        let node = match op {
            None => lhs,
            Some((op, len)) => {
                self.pos += len;
                self.skip_ws();
                if self.at_end() || matches!(self.peek(), Some(',') | Some(')')) {
                    return Err(self.error(self.pos, "expected a value after the comparison"));
                }
                let rhs = self.operand()?;
                self.skip_ws();
                if matches!(self.peek(), Some('=') | Some('<') | Some('>')) {
                    return Err(self.error(
                        self.pos,
                        "comparisons can't be chained; nest IIF calls instead",
                    ));
                }
                if lhs.uses(Func::SelectUniqueValue) || rhs.uses(Func::SelectUniqueValue) {
                    return Err(self.error(start, NESTED_SUV));
                }
                let _ = op_pos;
                Node::Compare {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                }
            }
        };
        Ok(node)
    }

    fn operand(&mut self) -> Result<Node, ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(self.error(start, "expected a value but the expression ended")),
            Some('"') => self.string(),
            Some('[') => self.attribute(),
            Some('&') => self.hex(),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => self.name(),
            Some(c) => Err(self.error(start, format!("unexpected '{c}'"))),
        }
    }

    fn string(&mut self) -> Result<Node, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error(start, "unterminated string: missing closing '\"'")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(Node::Str(out));
                }
                Some('\\') => match self.peek_at(1) {
                    Some(c @ ('"' | '\\')) => {
                        out.push(c);
                        self.pos += 2;
                    }
                    // Entra documents only \" and \\; any other backslash is kept as is, so
                    // a regex written with single backslashes ("\d") still works.
                    _ => {
                        out.push('\\');
                        self.pos += 1;
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn attribute(&mut self) -> Result<Node, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut name = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error(start, "unterminated attribute name: missing ']'")),
                Some(']') => {
                    self.pos += 1;
                    break;
                }
                Some('[') => return Err(self.error(self.pos, "'[' inside an attribute name")),
                Some(c) => {
                    name.push(c);
                    self.pos += 1;
                }
            }
        }
        let name = name.trim().to_string();
        if name.is_empty() {
            return Err(self.error(start, "empty attribute name"));
        }
        if !self.attributes.contains(&name) {
            self.attributes.push(name.clone());
        }
        Ok(Node::Attr(name))
    }

    /// VBA hexadecimal literal: `&HF7`.
    fn hex(&mut self) -> Result<Node, ParseError> {
        let start = self.pos;
        if !matches!(self.peek_at(1), Some('H') | Some('h')) {
            return Err(self.error(
                start,
                "unexpected '&' (hexadecimal numbers are written &HFF)",
            ));
        }
        self.pos += 2;
        let digits_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.pos += 1;
        }
        let digits = self.slice(digits_start, self.pos);
        if digits.is_empty() {
            return Err(self.error(self.pos, "expected hexadecimal digits after &H"));
        }
        // VBA reads &H literals as two's-complement bit patterns, so &HFFFFFFFFFFFFFFFF is -1.
        u64::from_str_radix(&digits, 16)
            .map(|v| Node::Num(Num::Int(v as i64)))
            .map_err(|_| self.error(start, "hexadecimal number too large"))
    }

    fn number(&mut self) -> Result<Node, ParseError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-') | Some('+')) {
            self.pos += 1;
        }
        let mut seen_digit = false;
        let mut seen_dot = false;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                seen_digit = true;
            } else if c == '.' && !seen_dot {
                seen_dot = true;
            } else {
                break;
            }
            self.pos += 1;
        }
        let literal = self.slice(start, self.pos);
        if !seen_digit {
            return Err(self.error(start, format!("'{literal}' is not a number")));
        }
        if self.peek().is_some_and(|c| c.is_alphabetic() || c == '_') {
            return Err(self.error(self.pos, "unexpected letter after a number"));
        }
        if !seen_dot {
            if let Ok(i) = literal.parse::<i64>() {
                return Ok(Node::Num(Num::Int(i)));
            }
        }
        literal
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| Node::Num(Num::Float(f)))
            .ok_or_else(|| self.error(start, format!("'{literal}' is not a valid number")))
    }

    fn name(&mut self) -> Result<Node, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let name = self.slice(start, self.pos);
        let after_name = self.pos;
        self.skip_ws();
        if self.peek() == Some('(') {
            return self.call(&name, start);
        }
        self.pos = after_name;
        match name.as_str() {
            "true" | "True" | "TRUE" => Ok(Node::Bool(true)),
            "false" | "False" | "FALSE" => Ok(Node::Bool(false)),
            "vbTextCompare" | "vbBinaryCompare" => Ok(Node::Ident(name)),
            _ => {
                let hint = if lookup_function(&name).is_some() || suggest(&name).is_some() {
                    " (a function call needs parentheses)"
                } else {
                    " (attributes are written [name], strings \"text\")"
                };
                Err(self.error(start, format!("unknown name '{name}'{hint}")))
            }
        }
    }

    fn call(&mut self, name: &str, start: usize) -> Result<Node, ParseError> {
        let Some((func, min, max)) = lookup_function(name) else {
            let message = match suggest(name) {
                Some(s) => format!(
                    "unknown function '{name}'; did you mean '{s}'? (names are case-sensitive)"
                ),
                None => format!("unknown function '{name}'"),
            };
            return Err(self.error(start, message));
        };
        // Depth counts enclosing calls: 0 is the top level.
        if func == Func::SelectUniqueValue && self.depth != 0 {
            return Err(self.error(start, NESTED_SUV));
        }
        self.enter(start)?;
        // Skip '('.
        self.pos += 1;
        let mut args: Vec<(Node, usize)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let arg_pos = self.pos;
                let arg = match self.peek() {
                    Some(',') | Some(')') => Node::Empty,
                    _ => self.expr()?,
                };
                args.push((arg, arg_pos));
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    None => {
                        return Err(
                            self.error(start, format!("missing ')' to close the call to {name}"))
                        )
                    }
                    Some(c) => {
                        return Err(self.error(
                            self.pos,
                            format!("expected ',' or ')' in the call to {name}, found '{c}'"),
                        ))
                    }
                }
            }
        }
        self.depth -= 1;
        let n = args.len();
        if n < min || n > max {
            let expected = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.error(
                start,
                format!("{name} takes {expected} arguments, but {n} were given"),
            ));
        }
        if func == Func::Switch && n % 2 != 0 {
            return Err(self.error(
                start,
                "Switch takes source, defaultValue, then key/value pairs: an even number of arguments",
            ));
        }
        let replace = if func == Func::Replace {
            Some(self.replace_plan(&args, start)?)
        } else {
            None
        };
        Ok(Node::Call {
            func,
            args: args.into_iter().map(|(a, _)| a).collect(),
            replace,
        })
    }

    /// Decides the `Replace` mode from which arguments are present (the doc's table).
    fn replace_plan(
        &self,
        args: &[(Node, usize)],
        start: usize,
    ) -> Result<(ReplaceMode, Option<Regex>), ParseError> {
        let given = |i: usize| args.get(i).is_some_and(|(a, _)| !matches!(a, Node::Empty));
        let (old, pattern, group, replacement, attr, template) =
            (given(1), given(2), given(3), given(4), given(5), given(6));
        let mode = if old && pattern {
            return Err(self.error(
                start,
                "Replace: give either oldValue or regexPattern, not both",
            ));
        } else if old {
            if template {
                ReplaceMode::Template
            } else if replacement {
                ReplaceMode::Plain
            } else {
                return Err(self.error(
                    start,
                    "Replace: oldValue needs a replacementValue (5th argument) or a template (7th)",
                ));
            }
        } else if pattern {
            if group && attr {
                ReplaceMode::RegexFallback
            } else if group && replacement {
                ReplaceMode::RegexGroup
            } else if !group && replacement {
                ReplaceMode::Regex
            } else if group {
                return Err(self.error(
                    start,
                    "Replace: regexGroupName needs a replacementValue (5th argument) or a replacementAttributeName (6th)",
                ));
            } else {
                return Err(self.error(
                    start,
                    "Replace: regexPattern needs a replacementValue (5th argument)",
                ));
            }
        } else {
            return Err(self.error(
                start,
                "Replace: give an oldValue (2nd argument) or a regexPattern (3rd)",
            ));
        };
        let regex = match args.get(2) {
            Some((Node::Str(p), pos)) => {
                Some(compile_regex(p).map_err(|m| self.error(*pos, m.to_string()))?)
            }
            _ => None,
        };
        Ok((mode, regex))
    }
}

/// A pattern the regex engine rejects.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid regular expression: {0}")]
pub(crate) struct InvalidRegex(#[from] regex::Error);

/// Compiles a .NET-style pattern; constructs Rust's engine lacks (look-around,
/// back-references) are reported with the engine's message.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, InvalidRegex> {
    Ok(regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()?)
}

fn lookup_function(name: &str) -> Option<(Func, usize, usize)> {
    FUNCTIONS
        .iter()
        .find(|(n, _, _, _)| *n == name)
        .map(|(_, f, min, max)| (*f, *min, *max))
}

/// The function a mistyped or mis-cased name most likely meant.
fn suggest(name: &str) -> Option<&'static str> {
    if let Some((n, _, _, _)) = FUNCTIONS
        .iter()
        .find(|(n, _, _, _)| n.eq_ignore_ascii_case(name))
    {
        return Some(n);
    }
    let lower = name.to_lowercase();
    FUNCTIONS
        .iter()
        .map(|(n, _, _, _)| (n, edit_distance(&lower, &n.to_lowercase())))
        .filter(|(_, d)| *d <= 2)
        .min_by_key(|(_, d)| *d)
        .map(|(n, _)| *n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // Names are short; bail out on long input to keep this cheap.
    if a.chars().count() > 40 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}
