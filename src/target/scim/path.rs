//! SCIM attribute paths (RFC 7644 §3.5.2 and §3.10), as used in PATCH operations and in
//! attribute mappings: `userName`, `name.givenName`, `emails[type eq "work"].value`,
//! `members[value eq "abc"]`, `urn:...:enterprise:2.0:User:manager.value`.

use std::fmt;

use serde_json::{Map, Value};

use super::{get_attr, is_case_exact, is_core_schema, resolve_key, ENTERPRISE_USER_SCHEMA};

/// A parsed SCIM attribute path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScimPath {
    schema: Option<String>,
    attr: String,
    filter: Option<ValueFilter>,
    sub_attr: Option<String>,
}

/// The value filter inside brackets of a path: `eq` comparisons joined with `and`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValueFilter {
    /// The comparisons, all of which must hold.
    pub clauses: Vec<EqClause>,
}

/// One `attr eq value` comparison of a [`ValueFilter`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EqClause {
    /// Sub-attribute of the multi-valued element, e.g. `type`.
    pub attr: String,
    /// The literal compared with: string, bool, number or null.
    pub value: Value,
}

/// Why a path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// The path was empty or only whitespace.
    #[error("empty SCIM attribute path")]
    Empty,
    /// The path is malformed at byte `pos`.
    #[error("invalid SCIM attribute path {path:?} at byte {pos}: {reason}")]
    Syntax {
        /// The whole path as given.
        path: String,
        /// Byte offset of the problem.
        pos: usize,
        /// What was expected.
        reason: &'static str,
    },
}

impl ValueFilter {
    /// Whether a multi-valued element satisfies every comparison.
    pub(crate) fn matches(&self, element: &Value) -> bool {
        self.clauses.iter().all(|c| c.matches(element))
    }

    /// An element carrying the filter's literals, used when `set` adds a new element
    /// (`emails[type eq "work"].value` on a user without a work email).
    fn template(&self) -> Map<String, Value> {
        let mut map = Map::new();
        for c in &self.clauses {
            if !c.value.is_null() {
                map.insert(c.attr.clone(), c.value.clone());
            }
        }
        map
    }
}

impl EqClause {
    /// Whether `element`'s sub-attribute equals the literal.
    pub(crate) fn matches(&self, element: &Value) -> bool {
        let actual = get_attr(element, &self.attr);
        values_equal(&self.attr, actual, &self.value)
    }
}

/// SCIM `eq`: strings ignore case unless the attribute is caseExact; numbers by value; a null
/// literal matches an absent attribute.
pub(crate) fn values_equal(attr: &str, actual: Option<&Value>, expected: &Value) -> bool {
    match (actual, expected) {
        (None | Some(Value::Null), Value::Null) => true,
        (Some(Value::String(a)), Value::String(b)) => {
            if is_case_exact(attr) {
                a == b
            } else {
                a.to_lowercase() == b.to_lowercase()
            }
        }
        (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Some(Value::Bool(a)), Value::Bool(b)) => a == b,
        _ => false,
    }
}

impl ScimPath {
    /// Parses a path such as `emails[type eq "work"].value`.
    pub(crate) fn parse(input: &str) -> Result<ScimPath, PathError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PathError::Empty);
        }
        let lead = input.len() - input.trim_start().len();
        let err = |pos: usize, reason: &'static str| PathError::Syntax {
            path: input.to_string(),
            pos: lead + pos,
            reason,
        };

        // A schema URN prefix ends at the last ':' before any bracket: the attribute name
        // itself never contains ':' but the filter literal might.
        let is_urn = trimmed
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case("urn:"));
        let (schema, start) = if is_urn {
            let head_end = trimmed.find('[').unwrap_or(trimmed.len());
            match trimmed[..head_end].rfind(':') {
                Some(i) if i > 4 => (Some(trimmed[..i].to_string()), i + 1),
                _ => return Err(err(0, "schema URN without an attribute name")),
            }
        } else {
            (None, 0)
        };

        let mut cur = Cursor {
            s: trimmed,
            pos: start,
        };
        let attr = cur
            .attr_name()
            .ok_or_else(|| err(cur.pos, "expected an attribute name"))?;
        let mut filter = None;
        if cur.eat('[') {
            let mut clauses = Vec::new();
            loop {
                cur.skip_ws();
                let a = cur
                    .attr_name()
                    .ok_or_else(|| err(cur.pos, "expected an attribute name in the filter"))?;
                if !cur.skip_ws() {
                    return Err(err(cur.pos, "expected whitespace before the operator"));
                }
                let op_pos = cur.pos;
                match cur.word() {
                    Some(op) if op.eq_ignore_ascii_case("eq") => {}
                    _ => return Err(err(op_pos, "only the eq operator is supported in a path")),
                }
                if !cur.skip_ws() {
                    return Err(err(cur.pos, "expected whitespace after the operator"));
                }
                let value = cur.literal().map_err(|(p, r)| err(p, r))?;
                clauses.push(EqClause { attr: a, value });
                cur.skip_ws();
                if cur.eat(']') {
                    break;
                }
                let and_pos = cur.pos;
                match cur.word() {
                    Some(w) if w.eq_ignore_ascii_case("and") => {}
                    _ => return Err(err(and_pos, "expected ']' or 'and'")),
                }
                if !cur.skip_ws() {
                    return Err(err(cur.pos, "expected whitespace after 'and'"));
                }
            }
            filter = Some(ValueFilter { clauses });
        }
        let mut sub_attr = None;
        if cur.eat('.') {
            sub_attr = Some(
                cur.attr_name()
                    .ok_or_else(|| err(cur.pos, "expected a sub-attribute name"))?,
            );
        }
        if cur.pos != trimmed.len() {
            return Err(err(cur.pos, "unexpected character"));
        }
        Ok(ScimPath {
            schema,
            attr,
            filter,
            sub_attr,
        })
    }

    /// The schema URN prefix, if the path had one.
    pub(crate) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The attribute name (after any URN prefix, before any filter).
    pub(crate) fn attr(&self) -> &str {
        &self.attr
    }

    /// The value filter in brackets, if any.
    pub(crate) fn filter(&self) -> Option<&ValueFilter> {
        self.filter.as_ref()
    }

    /// The sub-attribute after the dot, if any.
    pub(crate) fn sub_attr(&self) -> Option<&str> {
        self.sub_attr.as_deref()
    }

    /// The extension object key this path lives in, `None` for core attributes.
    pub(crate) fn extension(&self) -> Option<&str> {
        self.schema.as_deref().filter(|s| !is_core_schema(s))
    }

    /// Whether the path is `attr` alone (no filter, no sub-attribute) named `name`, ignoring
    /// case and a core schema prefix.
    pub(crate) fn is_attr(&self, name: &str) -> bool {
        self.extension().is_none()
            && self.filter.is_none()
            && self.sub_attr.is_none()
            && self.attr.eq_ignore_ascii_case(name)
    }

    fn container<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        match self.extension() {
            None => Some(resource),
            Some(urn) => get_attr(resource, urn),
        }
    }

    /// The value at this path. For a filtered multi-valued path, the element (or its
    /// sub-attribute) of the first matching element.
    pub(crate) fn get<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        let v = get_attr(self.container(resource)?, &self.attr)?;
        match (&self.filter, &self.sub_attr) {
            (None, None) => Some(v),
            (None, Some(sub)) => match v {
                Value::Array(items) => items.iter().find_map(|e| get_attr(e, sub)),
                other => get_attr(other, sub),
            },
            (Some(f), sub) => {
                let elem = v.as_array()?.iter().find(|e| f.matches(e))?;
                match sub {
                    None => Some(elem),
                    Some(s) => get_attr(elem, s),
                }
            }
        }
    }

    /// Sets the value at this path, creating intermediate objects, extension objects and
    /// multi-valued elements as needed.
    pub(crate) fn set(&self, resource: &mut Value, value: Value) {
        let value = self.normalise(value);
        if !resource.is_object() {
            *resource = Value::Object(Map::new());
        }
        let Some(root) = resource.as_object_mut() else {
            return;
        };
        let container = match self.extension() {
            None => root,
            Some(urn) => {
                add_schema(root, urn);
                match child_object(root, urn) {
                    Some(m) => m,
                    None => return,
                }
            }
        };
        self.set_in(container, value);
    }

    fn set_in(&self, container: &mut Map<String, Value>, value: Value) {
        match (&self.filter, &self.sub_attr) {
            (None, None) => {
                container.insert(resolve_key(container, &self.attr), value);
            }
            (None, Some(sub)) => {
                let key = resolve_key(container, &self.attr);
                // A sub-attribute of a multi-valued attribute without a filter applies to
                // every element (RFC 7644 §3.5.2.3).
                if let Some(Value::Array(items)) = container.get_mut(&key) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        item.insert(resolve_key(item, sub), value.clone());
                    }
                    return;
                }
                if let Some(child) = child_object(container, &self.attr) {
                    child.insert(resolve_key(child, sub), value);
                }
            }
            (Some(f), sub) => {
                let Some(items) = child_array(container, &self.attr) else {
                    return;
                };
                match sub {
                    Some(sub) => {
                        match items
                            .iter_mut()
                            .find(|e| f.matches(e))
                            .and_then(Value::as_object_mut)
                        {
                            Some(elem) => {
                                elem.insert(resolve_key(elem, sub), value);
                            }
                            None => {
                                let mut elem = f.template();
                                elem.insert(sub.clone(), value);
                                items.push(Value::Object(elem));
                            }
                        }
                    }
                    None => {
                        let mut matched = false;
                        for elem in items.iter_mut().filter(|e| f.matches(e)) {
                            matched = true;
                            match (elem.as_object_mut(), &value) {
                                (Some(e), Value::Object(new)) => {
                                    for (k, v) in new {
                                        e.insert(resolve_key(e, k), v.clone());
                                    }
                                }
                                _ => *elem = value.clone(),
                            }
                        }
                        if !matched {
                            let elem = match value {
                                Value::Object(new) => {
                                    let mut elem = f.template();
                                    elem.extend(new);
                                    Value::Object(elem)
                                }
                                other => other,
                            };
                            items.push(elem);
                        }
                    }
                }
            }
        }
    }

    /// Removes the value at this path; `true` when something was removed. Removing the last
    /// element of a multi-valued attribute removes the attribute (RFC 7644 §3.5.2.2).
    pub(crate) fn remove(&self, resource: &mut Value) -> bool {
        let Some(root) = resource.as_object_mut() else {
            return false;
        };
        let container = match self.extension() {
            None => root,
            Some(urn) => {
                let key = resolve_key(root, urn);
                match root.get_mut(&key).and_then(Value::as_object_mut) {
                    Some(m) => m,
                    None => return false,
                }
            }
        };
        let key = resolve_key(container, &self.attr);
        match (&self.filter, &self.sub_attr) {
            (None, None) => container.remove(&key).is_some(),
            (None, Some(sub)) => match container.get_mut(&key) {
                Some(Value::Array(items)) => {
                    let mut removed = false;
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        removed |= item.remove(&resolve_key(item, sub)).is_some();
                    }
                    removed
                }
                Some(Value::Object(obj)) => obj.remove(&resolve_key(obj, sub)).is_some(),
                _ => false,
            },
            (Some(f), None) => {
                let Some(Value::Array(items)) = container.get_mut(&key) else {
                    return false;
                };
                let before = items.len();
                items.retain(|e| !f.matches(e));
                let removed = items.len() != before;
                if items.is_empty() {
                    container.remove(&key);
                }
                removed
            }
            (Some(f), Some(sub)) => {
                let Some(Value::Array(items)) = container.get_mut(&key) else {
                    return false;
                };
                let mut removed = false;
                for item in items.iter_mut().filter(|e| f.matches(e)) {
                    if let Some(obj) = item.as_object_mut() {
                        removed |= obj.remove(&resolve_key(obj, sub)).is_some();
                    }
                }
                removed
            }
        }
    }

    /// The enterprise `manager` attribute is complex: a bare id becomes `{"value": id}`.
    fn normalise(&self, value: Value) -> Value {
        let is_manager = self
            .extension()
            .is_some_and(|s| s.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA))
            && self.filter.is_none()
            && self.sub_attr.is_none()
            && self.attr.eq_ignore_ascii_case("manager");
        match value {
            Value::String(id) if is_manager => {
                let mut m = Map::new();
                m.insert("value".to_string(), Value::String(id));
                Value::Object(m)
            }
            other => other,
        }
    }
}

/// Adds an extension URN to the resource's `schemas` list when that list exists.
fn add_schema(root: &mut Map<String, Value>, urn: &str) {
    if let Some(Value::Array(schemas)) = root.get_mut("schemas") {
        let present = schemas
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)));
        if !present {
            schemas.push(Value::String(urn.to_string()));
        }
    }
}

/// The object under `name`, replacing a missing or non-object value with `{}`.
fn child_object<'a>(
    parent: &'a mut Map<String, Value>,
    name: &str,
) -> Option<&'a mut Map<String, Value>> {
    let key = resolve_key(parent, name);
    let child = parent
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    child.as_object_mut()
}

/// The array under `name`, replacing a missing value with `[]` and wrapping a single value.
fn child_array<'a>(parent: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Vec<Value>> {
    let key = resolve_key(parent, name);
    let child = parent
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !child.is_array() {
        let old = std::mem::take(child);
        *child = Value::Array(if old.is_null() { Vec::new() } else { vec![old] });
    }
    child.as_array_mut()
}

impl fmt::Display for ScimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.schema {
            write!(f, "{s}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ValueFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            // JSON string syntax is SCIM's string literal syntax (RFC 7644 §3.4.2.2).
            write!(f, "{} eq {}", c.attr, c.value)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ScimPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScimPath::parse(s)
    }
}

/// A byte cursor over an ASCII-structured path (literals may hold any UTF-8).
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c as u8) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips spaces; `true` if any were skipped.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos != start
    }

    /// ATTRNAME = ALPHA *(nameChar), plus `$ref` which RFC 7643 uses itself.
    fn attr_name(&mut self) -> Option<String> {
        let start = self.pos;
        if self.peek() == Some(b'$') {
            self.pos += 1;
        }
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() => self.pos += 1,
            _ => {
                self.pos = start;
                return None;
            }
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            self.pos += 1;
        }
        Some(self.s[start..self.pos].to_string())
    }

    fn word(&mut self) -> Option<&str> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.s[start..self.pos])
    }

    /// A string (JSON escapes), `true`, `false`, `null` or a number.
    fn literal(&mut self) -> Result<Value, (usize, &'static str)> {
        let start = self.pos;
        if self.peek() == Some(b'"') {
            let bytes = self.s.as_bytes();
            let mut i = self.pos + 1;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            if i >= bytes.len() {
                return Err((start, "unterminated string literal"));
            }
            self.pos = i + 1;
            return serde_json::from_str::<String>(&self.s[start..self.pos])
                .map(Value::String)
                .map_err(|_| (start, "invalid escape in string literal"));
        }
        while matches!(self.peek(), Some(c) if !matches!(c, b' ' | b'\t' | b']')) {
            self.pos += 1;
        }
        let token = &self.s[start..self.pos];
        match token.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" => Ok(Value::Null),
            "" => Err((start, "expected a value")),
            _ => serde_json::from_str::<serde_json::Number>(token)
                .map(Value::Number)
                .map_err(|_| (start, "expected a string, boolean, number or null")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::scim::ENTERPRISE_USER_SCHEMA as ENT;
    use proptest::prelude::*;
    use serde_json::json;

    fn p(s: &str) -> ScimPath {
        ScimPath::parse(s).unwrap()
    }

    #[test]
    fn parses_all_forms_and_round_trips() {
        for s in [
            "userName",
            "name.givenName",
            "emails[type eq \"work\"].value",
            "addresses[type eq \"work\"].locality",
            "phoneNumbers[type eq \"mobile\"].value",
            "members[value eq \"abc\"]",
            "emails[type eq \"work\" and primary eq true].value",
            "x[n eq 3.5]",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "members[value eq \"a\\\"b\\\\c:d[]\"]",
        ] {
            let path = p(s);
            assert_eq!(path.to_string(), s, "display of {s}");
            assert_eq!(p(&path.to_string()), path);
        }
        let m = p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(m.schema(), Some(ENT));
        assert_eq!(m.attr(), "manager");
        assert_eq!(m.sub_attr(), Some("value"));
        let f = p("members[value eq \"a\\\"b\"]");
        assert_eq!(f.filter().unwrap().clauses[0].value, json!("a\"b"));
        // Operators and `and` are case-insensitive; extra spaces are fine.
        let g = p(" emails[ type EQ \"work\" AND primary eq TRUE ].value ");
        assert_eq!(g.filter().unwrap().clauses.len(), 2);
    }

    #[test]
    fn rejects_bad_paths() {
        for s in [
            "",
            "  ",
            "1abc",
            "emails[type eq \"work\"",
            "emails[type co \"work\"]",
            "emails[type eq \"work]",
            "emails[type eq]",
            "name.",
            "name.given.name",
            "a b",
            "urn:foo",
            "emails[type eq \"w\" or type eq \"x\"]",
        ] {
            assert!(ScimPath::parse(s).is_err(), "{s:?} should fail");
        }
        let e = ScimPath::parse("emails[type co \"x\"]").unwrap_err();
        assert!(matches!(e, PathError::Syntax { pos: 12, .. }), "{e:?}");
    }

    #[test]
    fn get_is_case_insensitive_and_filters() {
        let user = json!({
            "UserName": "bob",
            "name": {"givenName": "Bob"},
            "emails": [{"type": "home", "value": "h@x"}, {"type": "Work", "value": "w@x"}],
            ENT: {"employeeNumber": "7", "manager": {"value": "m1"}},
        });
        assert_eq!(p("userName").get(&user), Some(&json!("bob")));
        assert_eq!(p("NAME.GIVENNAME").get(&user), Some(&json!("Bob")));
        assert_eq!(
            p("emails[type eq \"work\"].value").get(&user),
            Some(&json!("w@x"))
        );
        assert_eq!(p("emails[type eq \"other\"].value").get(&user), None);
        assert_eq!(
            p(&format!("{ENT}:employeeNumber")).get(&user),
            Some(&json!("7"))
        );
        assert_eq!(
            p(&format!("{ENT}:manager.value")).get(&user),
            Some(&json!("m1"))
        );
        assert_eq!(
            p("urn:ietf:params:scim:schemas:core:2.0:User:userName").get(&user),
            Some(&json!("bob"))
        );
    }

    #[test]
    fn set_creates_structure() {
        let mut u = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]});
        p("name.givenName").set(&mut u, json!("Al"));
        p("emails[type eq \"work\"].value").set(&mut u, json!("a@x"));
        p("emails[type eq \"work\"].primary").set(&mut u, json!(true));
        p(&format!("{ENT}:employeeNumber")).set(&mut u, json!("42"));
        p(&format!("{ENT}:manager")).set(&mut u, json!("boss"));
        p("addresses[type eq \"work\"].locality").set(&mut u, json!("Paris"));
        assert_eq!(
            u,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
                "name": {"givenName": "Al"},
                "emails": [{"type": "work", "value": "a@x", "primary": true}],
                ENT: {"employeeNumber": "42", "manager": {"value": "boss"}},
                "addresses": [{"type": "work", "locality": "Paris"}],
            })
        );
        // Existing casing is kept instead of adding a second key.
        let mut v = json!({"UserName": "a"});
        p("username").set(&mut v, json!("b"));
        assert_eq!(v, json!({"UserName": "b"}));
    }

    #[test]
    fn remove_forms() {
        let mut g = json!({"members": [{"value": "a"}, {"value": "b"}], "displayName": "G"});
        assert!(p("members[value eq \"a\"]").remove(&mut g));
        assert_eq!(g["members"], json!([{"value": "b"}]));
        assert!(!p("members[value eq \"zz\"]").remove(&mut g));
        assert!(p("members[value eq \"b\"]").remove(&mut g));
        assert_eq!(g, json!({"displayName": "G"}));
        assert!(p("displayname").remove(&mut g));
        assert!(!p("displayName").remove(&mut g));
        let mut u = json!({ENT: {"manager": {"value": "m"}}, "name": {"givenName": "x"}});
        assert!(p(&format!("{ENT}:manager")).remove(&mut u));
        assert!(p("name.givenName").remove(&mut u));
        assert_eq!(u, json!({ENT: {}, "name": {}}));
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let name = "[a-zA-Z][a-zA-Z0-9_]{0,8}";
        let lit = any::<String>();
        prop_oneof![
            name.prop_map(|n| n),
            (name, name).prop_map(|(a, b)| format!("{a}.{b}")),
            (name, name, lit, name)
                .prop_map(|(a, f, l, s)| format!("{a}[{f} eq {}].{s}", Value::String(l))),
            name.prop_map(|n| format!("{ENT}:{n}")),
            (name, name).prop_map(|(a, b)| format!("{ENT}:{a}.{b}")),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
        ]
    }

    proptest! {
        #[test]
        fn set_then_get(path in path_strategy(), value in value_strategy()) {
            let path = ScimPath::parse(&path).unwrap();
            // Overwriting the filter's own attribute makes the element stop matching.
            if let (Some(f), Some(sub)) = (path.filter(), path.sub_attr()) {
                prop_assume!(!f.clauses[0].attr.eq_ignore_ascii_case(sub));
            }
            prop_assert_eq!(ScimPath::parse(&path.to_string()).unwrap(), path.clone());
            let mut resource = json!({"userName": "u", "emails": [{"type": "home", "value": "h"}]});
            path.set(&mut resource, value.clone());
            let expected = if path.attr().eq_ignore_ascii_case("manager") && path.schema().is_some()
                && path.sub_attr().is_none() && value.is_string() {
                json!({"value": value})
            } else {
                value
            };
            prop_assert_eq!(path.get(&resource), Some(&expected));
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = ScimPath::parse(&s);
        }
    }
}
