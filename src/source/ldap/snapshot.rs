//! The directory as last read, kept between cycles so an incremental read only has to fetch
//! what changed; and the conversion of that snapshot into a [`Directory`] (DNs resolved to
//! anchors, nested groups flattened on request, assignments from the job's settings).

use super::conn::RawEntry;
use super::dn;
use super::values::{self, AttributeMap};
use super::{LdapSettings, Nested};
use crate::model::{Assignment, Directory, ObjectType, Rejected, SourceObject};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One user or group as read, already in our terms except for its references (DNs).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub dn: String,
    pub attributes: Map<String, Value>,
    /// Normalised DN of the manager (users).
    pub manager: Option<String>,
    /// Normalised DNs of `member` / `uniqueMember` values (groups).
    pub member_dns: Vec<String>,
    /// `memberUid` values (posixGroup): user names, not DNs.
    pub member_uids: Vec<String>,
    /// The user's login name, which `memberUid` refers to.
    pub uid: Option<String>,
    pub changed: Option<DateTime<Utc>>,
    /// Matched the job's `disabled_filter`.
    pub disabled_by_filter: bool,
    /// Matched the job's `assigned_users_filter`.
    pub assigned_by_filter: bool,
}

/// What one read (full or incremental) produced, by anchor.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    pub users: BTreeMap<String, Entry>,
    pub groups: BTreeMap<String, Entry>,
    /// Entries that could not be used (no anchor, the same anchor twice, an enabled value
    /// that is neither true nor false).
    pub rejected: Vec<Rejected>,
    /// Users rejected with a known anchor, by anchor: not provisioned, but group members
    /// still resolve to them so their memberships are kept, like their accounts.
    pub invalid_users: BTreeMap<String, Entry>,
    /// Anchors seen more than once in this read: none of the copies is used.
    pub duplicate: BTreeSet<String>,
    /// The newest change timestamp among the entries.
    pub newest: Option<DateTime<Utc>>,
}

impl Snapshot {
    pub(super) fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.rejected.is_empty()
            && self.invalid_users.is_empty()
    }

    /// Add an entry read from the server.
    pub(super) fn add(&mut self, ty: ObjectType, raw: &RawEntry, settings: &LdapSettings) {
        let (anchor, entry, invalid) = match convert(ty, raw, settings) {
            Ok(x) => x,
            Err(reason) => {
                tracing::warn!(dn = %raw.dn, object_type = %ty, reason = %reason, "LDAP entry skipped");
                self.rejected.push(Rejected {
                    object_type: Some(ty),
                    id: None,
                    position: raw.dn.clone(),
                    reason: reason.to_string(),
                });
                return;
            }
        };
        if let Some(t) = entry.changed {
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
        let map = match ty {
            ObjectType::User => &mut self.users,
            ObjectType::Group => &mut self.groups,
        };
        let seen_invalid = ty == ObjectType::User && self.invalid_users.contains_key(&anchor);
        if self.duplicate.contains(&anchor) || map.contains_key(&anchor) || seen_invalid {
            let first = match map.remove(&anchor) {
                Some(first) => Some(first),
                None if ty == ObjectType::User => self.invalid_users.remove(&anchor),
                None => None,
            };
            if let Some(first) = first {
                self.rejected.push(Rejected {
                    object_type: Some(ty),
                    id: Some(anchor.clone()),
                    position: first.dn,
                    reason: format!(
                        "duplicate {}: every entry with it is skipped",
                        settings.anchor_attribute
                    ),
                });
            }
            self.rejected.push(Rejected {
                object_type: Some(ty),
                id: Some(anchor.clone()),
                position: entry.dn,
                reason: format!(
                    "duplicate {}: every entry with it is skipped",
                    settings.anchor_attribute
                ),
            });
            self.duplicate.insert(anchor);
            return;
        }
        if let Some(reason) = invalid {
            tracing::warn!(dn = %raw.dn, anchor = %anchor, object_type = %ty, reason = %reason, "LDAP entry skipped");
            self.rejected.push(Rejected {
                object_type: Some(ty),
                id: Some(anchor.clone()),
                position: raw.dn.clone(),
                reason: reason.to_string(),
            });
            self.invalid_users.insert(anchor, entry);
            return;
        }
        map.insert(anchor, entry);
    }

    /// Mark the users whose normalised DN is in `dns` (the result of a filter search).
    pub(super) fn mark(&mut self, dns: &HashSet<String>, disabled: bool) {
        for e in self.users.values_mut() {
            if dns.contains(&dn::normalize(&e.dn)) {
                if disabled {
                    e.disabled_by_filter = true;
                } else {
                    e.assigned_by_filter = true;
                }
            }
        }
    }

    /// Merge the changes of an incremental read: changed entries replace their old version
    /// (by anchor, so a renamed entry moves), new ones are added.
    pub(super) fn merge(&mut self, changes: Snapshot) {
        // A rejected entry is reported once, and forgotten when it is read fine again; a
        // rejected changed entry keeps its previous version.
        let reread: HashSet<String> = changes
            .users
            .values()
            .chain(changes.groups.values())
            .map(|e| e.dn.clone())
            .chain(changes.rejected.iter().map(|r| r.position.clone()))
            .collect();
        self.rejected.retain(|r| !reread.contains(&r.position));
        self.rejected.extend(changes.rejected);
        // A user whose enabled value went bad is skipped as a full read would skip it, not
        // provisioned from its previous version.
        for (anchor, e) in changes.invalid_users {
            self.users.remove(&anchor);
            self.invalid_users.insert(anchor, e);
        }
        for (anchor, e) in changes.users {
            self.groups.remove(&anchor);
            if let Some(old) = self.invalid_users.remove(&anchor) {
                // Read fine again (perhaps renamed): its rejection goes.
                self.rejected
                    .retain(|r| r.id.as_deref() != Some(anchor.as_str()) || r.position != old.dn);
            }
            self.users.insert(anchor, e);
        }
        for (anchor, e) in changes.groups {
            self.users.remove(&anchor);
            self.groups.insert(anchor, e);
        }
        if let Some(t) = changes.newest {
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
        }
    }
}

/// Why an LDAP entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EntryError {
    #[error("no {0} (the anchor attribute; can the bind account read it?)")]
    NoAnchor(String),
    /// A lenient reading (anything unrecognised is enabled) would provision a disabled
    /// account as active.
    #[error("accountEnabled: {attribute} is neither true nor false: {value:?}")]
    InvalidEnabled { attribute: String, value: String },
}

/// An LDAP entry in our terms: its anchor, and its attributes named as ours; and why it can't
/// be provisioned when it has an anchor but an unusable value.
fn convert(
    ty: ObjectType,
    raw: &RawEntry,
    settings: &LdapSettings,
) -> Result<(String, Entry, Option<EntryError>), EntryError> {
    let anchor = raw
        .values(&settings.anchor_attribute)
        .first()
        .and_then(|v| values::anchor_value(&settings.anchor_attribute, v))
        .ok_or_else(|| EntryError::NoAnchor(settings.anchor_attribute.clone()))?;
    let map: &AttributeMap = match ty {
        ObjectType::User => &settings.user_attributes,
        ObjectType::Group => &settings.group_attributes,
    };
    let mut attributes = Map::new();
    let mut manager = None;
    let mut invalid = None;
    for (ours, theirs) in map {
        for ldap_name in theirs {
            let vals = raw.values(ldap_name);
            if vals.is_empty() {
                continue;
            }
            if ours == "manager" {
                manager = vals.first().map(|v| dn::normalize(&values::text(v)));
            } else if ours == "accountEnabled" {
                let text = vals.first().map(|v| values::text(v)).unwrap_or_default();
                match values::enabled_value(ldap_name, &text) {
                    Some(b) => {
                        attributes.insert(ours.clone(), Value::Bool(b));
                    }
                    None => {
                        invalid = Some(EntryError::InvalidEnabled {
                            attribute: ldap_name.clone(),
                            value: crate::source::file::bounded_key(&text),
                        })
                    }
                }
            } else if let Some(v) = values::attribute_value(ours, ldap_name, vals) {
                attributes.insert(ours.clone(), v);
            }
            break;
        }
    }
    attributes.insert("distinguishedName".into(), Value::String(raw.dn.clone()));
    let changed = raw
        .first_text(&settings.timestamp_attribute)
        .and_then(|t| values::parse_generalized_time(&t));
    let mut entry = Entry {
        dn: raw.dn.clone(),
        attributes,
        manager,
        member_dns: Vec::new(),
        member_uids: Vec::new(),
        uid: None,
        changed,
        disabled_by_filter: false,
        assigned_by_filter: false,
    };
    match ty {
        ObjectType::User => {
            entry.uid = raw.first_text(&settings.member_uid_attribute);
        }
        ObjectType::Group => {
            for attr in ["member", "uniquemember"] {
                for v in raw.values(attr) {
                    // uniqueMember may carry an optional UID suffix (`dn#'0101'B`).
                    let text = values::text(v);
                    let dn_text = match (attr, text.rsplit_once("#'")) {
                        ("uniquemember", Some((d, _))) => d.to_string(),
                        _ => text,
                    };
                    entry.member_dns.push(dn::normalize(&dn_text));
                }
            }
            entry.member_uids = raw
                .values("memberuid")
                .iter()
                .map(|v| values::text(v))
                .collect();
        }
    }
    Ok((anchor, entry, invalid))
}

/// How references (manager and member DNs, `memberUid` names) resolve to anchors, as
/// [`build_directory`] resolves them. Kept between incremental reads, so that a delta read
/// resolves the changed entries' references without indexing the whole snapshot again.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    /// Normalised DN → the entry's type and anchor (users, then groups, then rejected users).
    pub by_dn: HashMap<String, (ObjectType, String)>,
    /// `uid` → the anchor of the user (valid or rejected) with that login name.
    pub by_uid: HashMap<String, String>,
    /// Two entries share a DN or a `uid`: which one a reference means then depends on the
    /// order of a whole build, which keeping the index up to date entry by entry cannot
    /// follow (a delta read then answers with the whole directory).
    pub ambiguous: bool,
}

impl Index {
    /// The index of a whole snapshot.
    pub(super) fn of(snap: &Snapshot) -> Index {
        let mut ix = Index::default();
        for (anchor, e) in &snap.users {
            ix.put_dn(&e.dn, ObjectType::User, anchor, true);
        }
        for (anchor, e) in &snap.groups {
            ix.put_dn(&e.dn, ObjectType::Group, anchor, true);
        }
        // Rejected users stay members (the planner leaves their memberships as they are).
        for (anchor, e) in &snap.invalid_users {
            ix.put_dn(&e.dn, ObjectType::User, anchor, false);
        }
        for (anchor, e) in snap.users.iter().chain(&snap.invalid_users) {
            if let Some(uid) = &e.uid {
                ix.put_uid(uid, anchor);
            }
        }
        ix
    }

    /// Index `dn` as `anchor`'s; `overwrite` decides who wins a DN two entries share.
    pub(super) fn put_dn(&mut self, dn: &str, ty: ObjectType, anchor: &str, overwrite: bool) {
        match self.by_dn.entry(dn::normalize(dn)) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if o.get().0 != ty || o.get().1 != anchor {
                    self.ambiguous = true;
                }
                if overwrite {
                    o.insert((ty, anchor.to_string()));
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((ty, anchor.to_string()));
            }
        }
    }

    /// Index login name `uid` as `anchor`'s (the last one wins, as in a whole build).
    pub(super) fn put_uid(&mut self, uid: &str, anchor: &str) {
        if let Some(old) = self.by_uid.insert(uid.to_string(), anchor.to_string()) {
            if old != anchor {
                self.ambiguous = true;
            }
        }
    }

    fn user_anchor(&self, normalized_dn: &str) -> Option<&str> {
        match self.by_dn.get(normalized_dn) {
            Some((ObjectType::User, id)) => Some(id.as_str()),
            _ => None,
        }
    }
}

/// The [`Directory`] a snapshot stands for.
pub(super) fn build_directory(
    snap: &Snapshot,
    settings: &LdapSettings,
    complete: bool,
) -> Directory {
    build(snap, settings, complete).0
}

/// The [`Directory`] a snapshot stands for, with the index that resolved its references and
/// the rejections the groups added (entries matching both filters).
pub(super) fn build(
    snap: &Snapshot,
    settings: &LdapSettings,
    complete: bool,
) -> (Directory, Index, Vec<Rejected>) {
    // References are DNs; the pipeline wants anchors.
    let index = Index::of(snap);
    let mut dir = Directory {
        complete,
        rejected: snap.rejected.clone(),
        ..Directory::default()
    };
    for (anchor, e) in &snap.users {
        if snap.groups.contains_key(anchor) {
            continue;
        }
        dir.users.insert(build_user(anchor, e, &index));
    }
    let assigned = snap
        .users
        .iter()
        .filter(|(anchor, e)| e.assigned_by_filter && !snap.groups.contains_key(*anchor))
        .map(|(anchor, _)| anchor);
    dir.assignments = assignments(assigned, &index, settings, complete);
    let (groups, group_rejects) = build_groups(snap, &index, settings);
    dir.groups = groups.into_values().collect();
    dir.rejected.extend(group_rejects.iter().cloned());
    (dir, index, group_rejects)
}

/// One user of the directory: her attributes, disabled by `disabled_filter`, her manager's
/// DN resolved to its anchor.
pub(super) fn build_user(anchor: &str, e: &Entry, index: &Index) -> SourceObject {
    let mut attributes = e.attributes.clone();
    if e.disabled_by_filter {
        attributes.insert("accountEnabled".into(), Value::Bool(false));
    }
    if let Some(m) = &e.manager {
        // A manager outside the user base or filter is not in the directory: left out,
        // so the target's value is left alone rather than pointed at nothing.
        if let Some(id) = index.user_anchor(m) {
            attributes.insert("manager".into(), Value::String(id.to_string()));
        }
    }
    SourceObject {
        id: anchor.to_string(),
        object_type: ObjectType::User,
        attributes: attributes.into(),
        members: Vec::new(),
    }
}

/// The app role assignments: the users `assigned_users_filter` marked (in anchor order),
/// then the `assigned_groups` found.
pub(super) fn assignments<'a>(
    assigned_users: impl Iterator<Item = &'a String>,
    index: &Index,
    settings: &LdapSettings,
    complete: bool,
) -> Vec<Assignment> {
    let mut out: Vec<Assignment> = assigned_users
        .map(|anchor| Assignment {
            principal_id: anchor.clone(),
            role: "User".into(),
        })
        .collect();
    for g in &settings.assigned_groups {
        match index.by_dn.get(&dn::normalize(g)) {
            Some((ObjectType::Group, id)) => out.push(Assignment {
                principal_id: id.clone(),
                role: "User".into(),
            }),
            Some((ObjectType::User, _)) => {
                tracing::warn!(dn = %g, "an assigned group is a user entry; ignored")
            }
            None if complete => tracing::warn!(
                dn = %g,
                "an assigned group was not found under group_base with group_filter"
            ),
            None => {}
        }
    }
    out
}

/// Every group of the directory with its members resolved (and flattened on request), and
/// the entries rejected for matching both the user and the group filter.
pub(super) fn build_groups(
    snap: &Snapshot,
    index: &Index,
    settings: &LdapSettings,
) -> (BTreeMap<String, SourceObject>, Vec<Rejected>) {
    // Direct members: users and groups, as Entra has them.
    let mut direct: BTreeMap<&str, Vec<(ObjectType, String)>> = BTreeMap::new();
    for (anchor, e) in &snap.groups {
        let mut members: Vec<(ObjectType, String)> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut unknown = 0usize;
        for m in &e.member_dns {
            match index.by_dn.get(m) {
                Some((ty, id)) if id != anchor => {
                    if seen.insert(id.as_str()) {
                        members.push((*ty, id.clone()));
                    }
                }
                // A group listing itself: a placeholder some tools add to keep
                // groupOfNames (which needs a member) valid.
                Some(_) => {}
                None => unknown += 1,
            }
        }
        for uid in &e.member_uids {
            match index.by_uid.get(uid.as_str()) {
                Some(id) => {
                    if seen.insert(id.as_str()) {
                        members.push((ObjectType::User, id.clone()));
                    }
                }
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            // Service accounts, placeholders, entries outside the bases: not ours to provision.
            tracing::debug!(group = %e.dn, unknown, "members outside the user and group bases were left out");
        }
        direct.insert(anchor.as_str(), members);
    }

    let mut groups = BTreeMap::new();
    let mut rejected = Vec::new();
    for (anchor, e) in &snap.groups {
        if snap.users.contains_key(anchor) {
            rejected.push(Rejected {
                object_type: None,
                id: Some(anchor.clone()),
                position: e.dn.clone(),
                reason: "the entry matches both the user and the group filter".into(),
            });
            continue;
        }
        let members: Vec<String> = match settings.nested {
            Nested::Direct => direct
                .get(anchor.as_str())
                .map(|m| m.iter().map(|(_, id)| id.clone()).collect())
                .unwrap_or_default(),
            Nested::Flatten => {
                let (users, cycle) = flatten(anchor, &direct);
                if let Some(path) = cycle {
                    tracing::warn!(group = %e.dn, cycle = %path, "nested groups form a cycle; each group is expanded once");
                }
                users
            }
        };
        groups.insert(
            anchor.clone(),
            SourceObject {
                id: anchor.clone(),
                object_type: ObjectType::Group,
                attributes: e.attributes.clone().into(),
                members,
            },
        );
    }
    (groups, rejected)
}

/// Every user under `start`, through nested groups, each group expanded once. Also the first
/// cycle found, as a readable path of anchors.
fn flatten(
    start: &str,
    direct: &BTreeMap<&str, Vec<(ObjectType, String)>>,
) -> (Vec<String>, Option<String>) {
    let mut users: BTreeSet<String> = BTreeSet::new();
    let mut expanded: HashSet<&str> = HashSet::new();
    let mut on_path: Vec<&str> = Vec::new();
    let mut cycle: Option<String> = None;
    // Iterative depth-first walk: (group, index of the next member to visit).
    let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
    expanded.insert(start);
    on_path.push(start);
    while let Some((group, i)) = stack.pop() {
        let members = direct.get(group).map(Vec::as_slice).unwrap_or(&[]);
        let Some((ty, id)) = members.get(i) else {
            on_path.pop();
            continue;
        };
        stack.push((group, i + 1));
        match ty {
            ObjectType::User => {
                users.insert(id.clone());
            }
            ObjectType::Group => {
                if let Some(pos) = on_path.iter().position(|g| *g == id.as_str()) {
                    if cycle.is_none() {
                        let mut path: Vec<&str> = on_path[pos..].to_vec();
                        path.push(id.as_str());
                        cycle = Some(path.join(" -> "));
                    }
                } else if let Some((key, _)) = direct.get_key_value(id.as_str()) {
                    if expanded.insert(key) {
                        on_path.push(key);
                        stack.push((key, 0));
                    }
                }
            }
        }
    }
    (users.into_iter().collect(), cycle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ldap::Flavour;

    fn raw(dn: &str, attrs: &[(&str, &str)]) -> RawEntry {
        RawEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(n, v)| (n.to_string(), vec![v.as_bytes().to_vec()]))
                .collect(),
        }
    }

    fn person(uid: &str, enabled: &str) -> RawEntry {
        raw(
            &format!("uid={uid},ou=people,dc=x"),
            &[("entryUUID", uid), ("mail", uid), ("employeeType", enabled)],
        )
    }

    fn enabled_by_employee_type() -> LdapSettings {
        let mut s = LdapSettings::new(Flavour::OpenLdap, "ldap://x", "ou=people,dc=x");
        s.user_attributes
            .insert("accountEnabled".into(), vec!["employeeType".into()]);
        s
    }

    #[test]
    fn an_unrecognised_enabled_value_rejects_the_entry_and_keeps_its_memberships() {
        let s = enabled_by_employee_type();
        let mut snap = Snapshot::default();
        snap.add(ObjectType::User, &person("on", "TRUE"), &s);
        snap.add(ObjectType::User, &person("off", "no"), &s);
        snap.add(ObjectType::User, &person("odd", "maybe"), &s);
        let group = RawEntry {
            dn: "cn=g,ou=groups,dc=x".into(),
            attrs: vec![
                ("entryUUID".into(), vec![b"g".to_vec()]),
                (
                    "member".into(),
                    vec![
                        b"uid=on,ou=people,dc=x".to_vec(),
                        b"uid=odd,ou=people,dc=x".to_vec(),
                    ],
                ),
            ],
        };
        snap.add(ObjectType::Group, &group, &s);
        let dir = build_directory(&snap, &s, true);
        assert!(dir.users["on"].enabled());
        assert!(!dir.users["off"].enabled());
        assert!(
            !dir.users.contains_key("odd"),
            "skipped, not taken as enabled"
        );
        assert_eq!(dir.rejected.len(), 1, "{:?}", dir.rejected);
        let r = &dir.rejected[0];
        assert_eq!(r.id.as_deref(), Some("odd"), "rejected with its anchor");
        assert_eq!(r.object_type, Some(ObjectType::User));
        assert_eq!(r.position, "uid=odd,ou=people,dc=x");
        assert!(
            r.reason.contains("employeeType") && r.reason.contains("maybe"),
            "{}",
            r.reason
        );
        // The group still lists her, so the planner keeps her membership as it is.
        assert_eq!(dir.groups["g"].members, vec!["on", "odd"]);
    }

    #[test]
    fn user_account_control_keeps_its_bit_and_rejects_what_is_not_a_number() {
        let s = LdapSettings::new(Flavour::Ad, "ldap://x", "ou=people,dc=x");
        let uac = |name: &str, v: &str| {
            raw(
                &format!("cn={name},dc=x"),
                &[("objectGUID", name), ("userAccountControl", v)],
            )
        };
        let mut snap = Snapshot::default();
        snap.add(ObjectType::User, &uac("a", "512"), &s);
        snap.add(ObjectType::User, &uac("b", "514"), &s);
        snap.add(ObjectType::User, &uac("c", "enabled"), &s);
        let dir = build_directory(&snap, &s, true);
        assert!(dir.users["a"].enabled());
        assert!(!dir.users["b"].enabled());
        assert!(!dir.users.contains_key("c"));
        assert_eq!(dir.rejected[0].id.as_deref(), Some("c"));
        assert!(dir.rejected[0].reason.contains("userAccountControl"));
    }

    #[test]
    fn an_incremental_read_rejects_like_a_full_one_and_forgets_when_fixed() {
        let s = enabled_by_employee_type();
        let mut snap = Snapshot::default();
        snap.add(ObjectType::User, &person("u", "true"), &s);
        let mut bad = Snapshot::default();
        bad.add(ObjectType::User, &person("u", "sometimes"), &s);
        snap.merge(bad);
        let dir = build_directory(&snap, &s, true);
        assert!(!dir.users.contains_key("u"), "not its previous version");
        assert_eq!(dir.rejected.len(), 1);
        // Unchanged entries are not read again: the rejection stays.
        snap.merge(Snapshot::default());
        assert_eq!(build_directory(&snap, &s, true).rejected.len(), 1);
        let mut fixed = Snapshot::default();
        fixed.add(ObjectType::User, &person("u", "FALSE"), &s);
        snap.merge(fixed);
        let dir = build_directory(&snap, &s, true);
        assert!(!dir.users["u"].enabled());
        assert!(dir.rejected.is_empty(), "{:?}", dir.rejected);
        assert!(snap.invalid_users.is_empty());
    }

    fn groups(
        spec: &[(&'static str, &[&str])],
    ) -> BTreeMap<&'static str, Vec<(ObjectType, String)>> {
        spec.iter()
            .map(|(g, members)| {
                (
                    *g,
                    members
                        .iter()
                        .map(|m| {
                            let ty = if m.starts_with('g') {
                                ObjectType::Group
                            } else {
                                ObjectType::User
                            };
                            (ty, m.to_string())
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn flattening_expands_nested_groups_once() {
        let d = groups(&[
            ("g1", &["u1", "g2", "g3"]),
            ("g2", &["u2", "g3"]),
            ("g3", &["u3", "u1"]),
        ]);
        let (users, cycle) = flatten("g1", &d);
        assert_eq!(users, vec!["u1", "u2", "u3"]);
        assert!(cycle.is_none(), "a diamond is not a cycle");
    }

    #[test]
    fn flattening_survives_cycles_and_names_them() {
        let d = groups(&[
            ("g1", &["u1", "g2"]),
            ("g2", &["u2", "g3"]),
            ("g3", &["u3", "g1", "g3"]),
        ]);
        let (users, cycle) = flatten("g2", &d);
        assert_eq!(users, vec!["u1", "u2", "u3"]);
        assert_eq!(cycle.as_deref(), Some("g2 -> g3 -> g1 -> g2"));
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let names: Vec<String> = (0..20_000).map(|i| format!("g{i}")).collect();
        let mut d: BTreeMap<&str, Vec<(ObjectType, String)>> = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            let next = names
                .get(i + 1)
                .map(|m| (ObjectType::Group, m.clone()))
                .unwrap_or((ObjectType::User, "u".into()));
            d.insert(n.as_str(), vec![next]);
        }
        let (users, cycle) = flatten("g0", &d);
        assert_eq!(users, vec!["u"]);
        assert!(cycle.is_none());
    }
}
