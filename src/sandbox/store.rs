//! The sandbox's in-memory resources, indexed by id and by lowercased name so that the
//! matching query (`userName eq "…"`) does not scan every user.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use crate::target::scim::filter::Filter;
use crate::target::scim::{get_attr, GROUP_SCHEMA, USER_SCHEMA};

/// Which collection a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Group,
}

impl Kind {
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "/Users",
            Kind::Group => "/Groups",
        }
    }

    pub(crate) fn resource_type(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }

    /// The attribute indexed for `eq` lookups (and unique, for users).
    pub(crate) fn name_attr(self) -> &'static str {
        match self {
            Kind::User => "userName",
            Kind::Group => "displayName",
        }
    }
}

/// One resource collection.
#[derive(Default)]
pub(crate) struct Collection {
    items: BTreeMap<String, Value>,
    names: HashMap<String, BTreeSet<String>>,
}

impl Collection {
    fn name_key(kind: Kind, resource: &Value) -> Option<String> {
        get_attr(resource, kind.name_attr())
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    }

    fn unindex(&mut self, kind: Kind, id: &str) {
        if let Some(key) = self.items.get(id).and_then(|r| Self::name_key(kind, r)) {
            if let Some(ids) = self.names.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.names.remove(&key);
                }
            }
        }
    }

    fn put(&mut self, kind: Kind, id: &str, resource: Value) {
        self.unindex(kind, id);
        if let Some(key) = Self::name_key(kind, &resource) {
            self.names.entry(key).or_default().insert(id.to_string());
        }
        self.items.insert(id.to_string(), resource);
    }

    fn remove(&mut self, kind: Kind, id: &str) -> Option<Value> {
        self.unindex(kind, id);
        self.items.remove(id)
    }

    /// Another resource already holding `resource`'s name (users only: userName is unique).
    fn conflicting(&self, kind: Kind, resource: &Value, except: Option<&str>) -> Option<&str> {
        if kind != Kind::User {
            return None;
        }
        let key = Self::name_key(kind, resource)?;
        self.names
            .get(&key)?
            .iter()
            .map(String::as_str)
            .find(|id| Some(*id) != except)
    }
}

/// Why a write was refused.
#[derive(Debug)]
pub(crate) enum StoreError {
    NotFound,
    Conflict(String),
    Invalid(String),
}

/// Users and groups.
#[derive(Default)]
pub(crate) struct Store {
    users: Collection,
    groups: Collection,
    version: u64,
}

impl Store {
    fn coll(&self, kind: Kind) -> &Collection {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    fn coll_mut(&mut self, kind: Kind) -> &mut Collection {
        match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    pub(crate) fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.coll(kind).items.get(id)
    }

    pub(crate) fn all(&self, kind: Kind) -> Vec<Value> {
        self.coll(kind).items.values().cloned().collect()
    }

    /// Resources matching `filter` (all of them when `None`), in id order, as
    /// `(total, page)` for a 1-based `start` and `count`.
    pub(crate) fn query(
        &self,
        kind: Kind,
        filter: Option<&Filter>,
        start: usize,
        count: usize,
    ) -> (usize, Vec<Value>) {
        let coll = self.coll(kind);
        let skip = start.saturating_sub(1);
        match filter {
            None => (
                coll.items.len(),
                coll.items
                    .values()
                    .skip(skip)
                    .take(count)
                    .cloned()
                    .collect(),
            ),
            Some(f) => {
                if let Some(name) = f.eq_value(kind.name_attr()) {
                    let hits: Vec<&Value> = coll
                        .names
                        .get(&name.to_lowercase())
                        .into_iter()
                        .flatten()
                        .filter_map(|id| coll.items.get(id))
                        .collect();
                    return (
                        hits.len(),
                        hits.into_iter().skip(skip).take(count).cloned().collect(),
                    );
                }
                let mut total = 0;
                let mut page = Vec::new();
                for r in coll.items.values().filter(|r| f.matches(r)) {
                    if total >= skip && page.len() < count {
                        page.push(r.clone());
                    }
                    total += 1;
                }
                (total, page)
            }
        }
    }

    fn stamp(
        &mut self,
        kind: Kind,
        id: &str,
        resource: &mut Value,
        base_url: &str,
        created: Option<Value>,
    ) {
        self.version += 1;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let Some(obj) = resource.as_object_mut() else {
            return;
        };
        obj.insert("id".to_string(), Value::String(id.to_string()));
        if !obj.get("schemas").is_some_and(Value::is_array) {
            obj.insert("schemas".to_string(), json!([kind.schema()]));
        }
        // Entra's legacy form sends booleans as strings; store what a compliant server would.
        if let Some(active) = obj.get_mut("active") {
            if let Some(s) = active.as_str() {
                if s.eq_ignore_ascii_case("true") {
                    *active = Value::Bool(true);
                } else if s.eq_ignore_ascii_case("false") {
                    *active = Value::Bool(false);
                }
            }
        }
        let created = created.unwrap_or_else(|| Value::String(now.clone()));
        obj.insert(
            "meta".to_string(),
            json!({
                "resourceType": kind.resource_type(),
                "created": created,
                "lastModified": now,
                "location": format!("{base_url}{}/{id}", kind.endpoint()),
                "version": format!("W/\"{}\"", self.version),
            }),
        );
    }

    /// Every member value must name an existing user or group: a client sending source ids
    /// instead of target ids is a bug the sandbox should surface.
    fn check_members(&self, kind: Kind, resource: &Value) -> Result<(), StoreError> {
        if kind != Kind::Group {
            return Ok(());
        }
        let Some(members) = get_attr(resource, "members") else {
            return Ok(());
        };
        let Some(members) = members.as_array() else {
            return Err(StoreError::Invalid("members must be an array".to_string()));
        };
        for m in members {
            let Some(id) = get_attr(m, "value").and_then(Value::as_str) else {
                return Err(StoreError::Invalid(format!(
                    "member {m} has no string value"
                )));
            };
            if !self.users.items.contains_key(id) && !self.groups.items.contains_key(id) {
                return Err(StoreError::Invalid(format!("member {id:?} does not exist")));
            }
        }
        Ok(())
    }

    fn check(&self, kind: Kind, resource: &Value, except: Option<&str>) -> Result<(), StoreError> {
        if !resource.is_object() {
            return Err(StoreError::Invalid(
                "the resource must be a JSON object".to_string(),
            ));
        }
        match get_attr(resource, kind.name_attr()).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {}
            _ => {
                return Err(StoreError::Invalid(format!(
                    "{} is required",
                    kind.name_attr()
                )))
            }
        }
        if let Some(other) = self.coll(kind).conflicting(kind, resource, except) {
            return Err(StoreError::Conflict(format!(
                "{} already taken by {other}",
                kind.name_attr()
            )));
        }
        self.check_members(kind, resource)
    }

    /// Creates a resource (POST), returning it as stored.
    pub(crate) fn create(
        &mut self,
        kind: Kind,
        mut resource: Value,
        base_url: &str,
    ) -> Result<Value, StoreError> {
        self.check(kind, &resource, None)?;
        let id = uuid::Uuid::new_v4().to_string();
        self.stamp(kind, &id, &mut resource, base_url, None);
        self.coll_mut(kind).put(kind, &id, resource.clone());
        Ok(resource)
    }

    /// Seeds a resource without validation, keeping its `id` if it has one.
    pub(crate) fn insert(&mut self, kind: Kind, mut resource: Value, base_url: &str) -> String {
        if !resource.is_object() {
            resource = Value::Object(Map::new());
        }
        let id = get_attr(&resource, "id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.stamp(kind, &id, &mut resource, base_url, None);
        self.coll_mut(kind).put(kind, &id, resource);
        id
    }

    /// Replaces a resource (PUT, or the result of a PATCH), keeping `id` and `meta.created`.
    pub(crate) fn replace(
        &mut self,
        kind: Kind,
        id: &str,
        mut resource: Value,
        base_url: &str,
    ) -> Result<Value, StoreError> {
        let created = self
            .get(kind, id)
            .ok_or(StoreError::NotFound)?
            .pointer("/meta/created")
            .cloned();
        self.check(kind, &resource, Some(id))?;
        self.stamp(kind, id, &mut resource, base_url, created);
        self.coll_mut(kind).put(kind, id, resource.clone());
        Ok(resource)
    }

    /// Deletes a resource, and drops it from every group's members.
    pub(crate) fn delete(&mut self, kind: Kind, id: &str) -> Result<(), StoreError> {
        self.coll_mut(kind)
            .remove(kind, id)
            .ok_or(StoreError::NotFound)?;
        for group in self.groups.items.values_mut() {
            if let Some(Value::Array(members)) = group.get_mut("members") {
                members.retain(|m| get_attr(m, "value").and_then(Value::as_str) != Some(id));
            }
        }
        Ok(())
    }
}
