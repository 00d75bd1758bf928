//! TEMPORARY shim until the expression-language branch lands: only `[attr]`, `"const"`,
//! `Join(sep, ...)` and `Switch(src, default, k, v, ...)`.
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    text: String,
    node: Node,
}
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Attr(String),
    Str(String),
    Empty,
    Call(String, Vec<Node>),
}
pub trait Attributes {
    fn get(&self, name: &str) -> Option<&Value>;
}
pub struct EvalEnv {
    pub now: chrono::DateTime<chrono::Utc>,
}
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Value(Value),
    Ignored,
}
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} at {position}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(String);

impl Expression {
    pub fn parse(text: &str) -> Result<Expression, ParseError> {
        let chars: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let node = parse_node(&chars, &mut pos)?;
        skip_ws(&chars, &mut pos);
        if pos != chars.len() {
            return Err(ParseError { position: pos, message: "trailing input".into() });
        }
        Ok(Expression { text: text.into(), node })
    }
    pub fn text(&self) -> &str {
        &self.text
    }
    pub fn attributes(&self) -> Vec<String> {
        Vec::new()
    }
    pub fn evaluate(&self, attrs: &dyn Attributes, _env: &EvalEnv) -> Result<Outcome, EvalError> {
        Ok(Outcome::Value(eval(&self.node, attrs)?))
    }
}
fn skip_ws(c: &[char], p: &mut usize) {
    while c.get(*p).is_some_and(|c| c.is_whitespace()) {
        *p += 1;
    }
}
fn parse_node(c: &[char], p: &mut usize) -> Result<Node, ParseError> {
    skip_ws(c, p);
    match c.get(*p) {
        Some('[') => {
            let start = *p + 1;
            while c.get(*p).is_some_and(|&x| x != ']') {
                *p += 1;
            }
            let name: String = c.get(start..*p).unwrap_or_default().iter().collect();
            *p += 1;
            Ok(Node::Attr(name))
        }
        Some('"') => {
            *p += 1;
            let mut s = String::new();
            loop {
                match c.get(*p) {
                    Some('"') => break,
                    Some('\\') => {
                        *p += 1;
                        if let Some(x) = c.get(*p) {
                            s.push(*x)
                        }
                    }
                    Some(x) => s.push(*x),
                    None => return Err(ParseError { position: *p, message: "unterminated".into() }),
                }
                *p += 1;
            }
            *p += 1;
            Ok(Node::Str(s))
        }
        Some(',') | Some(')') => Ok(Node::Empty),
        Some(_) => {
            let start = *p;
            while c.get(*p).is_some_and(|x| x.is_alphanumeric()) {
                *p += 1;
            }
            let name: String = c.get(start..*p).unwrap_or_default().iter().collect();
            skip_ws(c, p);
            if c.get(*p) != Some(&'(') {
                return Err(ParseError { position: *p, message: "expected (".into() });
            }
            *p += 1;
            let mut args = Vec::new();
            loop {
                args.push(parse_node(c, p)?);
                skip_ws(c, p);
                match c.get(*p) {
                    Some(',') => *p += 1,
                    Some(')') => {
                        *p += 1;
                        break;
                    }
                    _ => return Err(ParseError { position: *p, message: "expected , or )".into() }),
                }
            }
            if name != "Join" && name != "Switch" {
                return Err(ParseError { position: start, message: format!("unknown function {name}") });
            }
            Ok(Node::Call(name, args))
        }
        None => Err(ParseError { position: *p, message: "unexpected end".into() }),
    }
}
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        other => Some(other.to_string()),
    }
}
fn eval(n: &Node, a: &dyn Attributes) -> Result<Value, EvalError> {
    Ok(match n {
        Node::Attr(x) => a.get(x).cloned().unwrap_or(Value::Null),
        Node::Str(s) => Value::String(s.clone()),
        Node::Empty => Value::Null,
        Node::Call(f, args) if f == "Join" => {
            let sep = args.first().map(|x| eval(x, a)).transpose()?.and_then(|v| text(&v)).unwrap_or_default();
            let mut parts = Vec::new();
            for x in args.iter().skip(1) {
                if let Some(t) = text(&eval(x, a)?) {
                    parts.push(t)
                }
            }
            Value::String(parts.join(&sep))
        }
        Node::Call(_, args) => {
            let src = args.first().map(|x| eval(x, a)).transpose()?.and_then(|v| text(&v));
            let mut i = 2;
            while i + 1 < args.len() {
                let k = args.get(i).map(|x| eval(x, a)).transpose()?.and_then(|v| text(&v));
                if k.is_some() && k == src {
                    return args.get(i + 1).map(|x| eval(x, a)).transpose().map(|v| v.unwrap_or(Value::Null));
                }
                i += 2;
            }
            args.get(1).map(|x| eval(x, a)).transpose()?.unwrap_or(Value::Null)
        }
    })
}
