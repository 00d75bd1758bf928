//! What an incremental LDAP read changed (issue 12, "Delta sources cost O(changes)"): the
//! parts of the built directory a delta read keeps up to date entry by entry (the reference
//! index, the groups with their resolved and flattened members, the assignments), and the
//! [`Changes`] a read made to them, so that the cycle scopes, maps and plans those alone.
//!
//! The users' built form is not kept (a second copy of the largest part of the snapshot):
//! [`Built::view`] builds the few a view needs from the snapshot.

use super::snapshot::{self, Index, Snapshot};
use super::LdapSettings;
use crate::model::{Assignment, Changes, Directory, ObjectType, Rejected, SourceObject};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The directory built from the snapshot, less its users, as of the last read.
#[derive(Debug)]
pub(super) struct Built {
    pub index: Index,
    pub groups: BTreeMap<String, SourceObject>,
    /// Rejections the groups add (entries matching both filters).
    pub group_rejects: Vec<Rejected>,
    /// Users `assigned_users_filter` marked.
    pub assigned_users: BTreeSet<String>,
    pub assignments: Vec<Assignment>,
    /// The watermark the last read answered with.
    pub watermark: Option<String>,
    /// The reads answered since the last committed cycle ([`Built::confirm`]): changes that
    /// may not have been planned to the end. A read that continues from the same watermark
    /// answers them again (an entry re-read by a failed cycle may fall out of the next read's
    /// window; only a moved watermark proves a commit, and it does not always move).
    pending: Changes,
    /// A whole directory was answered since the last committed cycle: only another whole
    /// one is sure to hold what it held (a full read's deletions).
    whole_pending: bool,
}

/// Where an anchor was in a snapshot: `(type, normalised DN, uid)` for each map holding it.
pub(super) type Presence = Vec<(ObjectType, String, Option<String>)>;

/// The presences of `anchors` in `snap`.
pub(super) fn presences(snap: &Snapshot, anchors: &BTreeSet<String>) -> BTreeMap<String, Presence> {
    anchors
        .iter()
        .map(|a| {
            let mut p = Presence::new();
            if let Some(e) = snap.users.get(a) {
                p.push((ObjectType::User, super::dn::normalize(&e.dn), e.uid.clone()));
            }
            if let Some(e) = snap.groups.get(a) {
                p.push((ObjectType::Group, super::dn::normalize(&e.dn), None));
            }
            if let Some(e) = snap.invalid_users.get(a) {
                p.push((ObjectType::User, super::dn::normalize(&e.dn), e.uid.clone()));
            }
            (a.clone(), p)
        })
        .collect()
}

/// The anchors an incremental read's entries name (each replaces what the snapshot had).
pub(super) fn touched(fresh: &Snapshot) -> BTreeSet<String> {
    fresh
        .users
        .keys()
        .chain(fresh.groups.keys())
        .chain(fresh.invalid_users.keys())
        .chain(fresh.rejected.iter().filter_map(|r| r.id.as_ref()))
        .cloned()
        .collect()
}

impl Built {
    /// From a whole build (`directory` is what was answered).
    pub(super) fn new(
        directory: &Directory,
        index: Index,
        group_rejects: Vec<Rejected>,
        snap: &Snapshot,
        watermark: Option<String>,
    ) -> Built {
        let assigned_users = snap
            .users
            .iter()
            .filter(|(a, e)| e.assigned_by_filter && !snap.groups.contains_key(*a))
            .map(|(a, _)| a.clone())
            .collect();
        Built {
            index,
            groups: directory.groups.to_tree(),
            group_rejects,
            assigned_users,
            assignments: directory.assignments.clone(),
            watermark,
            pending: Changes::default(),
            whole_pending: true,
        }
    }

    /// The cycle that used the last read committed: what it answered was planned.
    pub(super) fn confirm(&mut self) {
        self.pending = Changes::default();
        self.whole_pending = false;
    }

    /// Whether a read continuing from `watermark` can be answered with changes.
    pub(super) fn in_step(&self, watermark: Option<&str>) -> bool {
        !self.whole_pending && !self.index.ambiguous && self.watermark.as_deref() == watermark
    }

    /// The rejected objects of the directory as of `snap`.
    pub(super) fn rejected(&self, snap: &Snapshot) -> Vec<Rejected> {
        let mut r = snap.rejected.clone();
        r.extend(self.group_rejects.iter().cloned());
        r
    }

    /// Bring the built parts up to `snap` (the snapshot after merging a read whose entries
    /// name `before`'s anchors, which held `before` until then) and say what changed. `None`
    /// when that cannot be told entry by entry (two entries came to share a DN or a uid):
    /// the caller builds the whole directory again.
    pub(super) fn advance(
        &mut self,
        snap: &Snapshot,
        before: &BTreeMap<String, Presence>,
        settings: &LdapSettings,
        watermark: Option<String>,
    ) -> Option<Changes> {
        let anchors: BTreeSet<String> = before.keys().cloned().collect();
        let after = presences(snap, &anchors);
        let mut changes = std::mem::take(&mut self.pending);

        // The index: the keys these entries held and hold, with what they resolved to.
        let mut dns_then: HashMap<String, Option<(ObjectType, String)>> = HashMap::new();
        let mut uids_then: HashMap<String, Option<String>> = HashMap::new();
        for p in before.values().chain(after.values()) {
            for (_, dn, uid) in p {
                dns_then
                    .entry(dn.clone())
                    .or_insert_with(|| self.index.by_dn.get(dn).cloned());
                if let Some(uid) = uid {
                    uids_then
                        .entry(uid.clone())
                        .or_insert_with(|| self.index.by_uid.get(uid).cloned());
                }
            }
        }
        for (anchor, p) in before {
            for (ty, dn, uid) in p {
                if self.index.by_dn.get(dn) == Some(&(*ty, anchor.clone())) {
                    self.index.by_dn.remove(dn);
                }
                if let Some(uid) = uid {
                    if self.index.by_uid.get(uid) == Some(anchor) {
                        self.index.by_uid.remove(uid);
                    }
                }
            }
        }
        for (anchor, p) in &after {
            for (ty, dn, uid) in p {
                self.index.put_dn(dn, *ty, anchor, true);
                if let Some(uid) = uid {
                    self.index.put_uid(uid, anchor);
                }
            }
        }
        if self.index.ambiguous {
            return None;
        }
        let moved_dns: BTreeSet<&String> = dns_then
            .iter()
            .filter(|(dn, then)| self.index.by_dn.get(*dn) != then.as_ref())
            .map(|(dn, _)| dn)
            .collect();
        let moved_uids = uids_then
            .iter()
            .any(|(uid, then)| self.index.by_uid.get(uid) != then.as_ref());

        // The entries read, as what they were and what they are.
        for (anchor, p) in before.iter().chain(&after) {
            for (ty, _, _) in p {
                match ty {
                    ObjectType::User => changes.users.insert(anchor.clone()),
                    ObjectType::Group => changes.groups.insert(anchor.clone()),
                };
            }
        }
        for r in &snap.rejected {
            if let (Some(id), true) = (&r.id, anchors.contains(r.id.as_deref().unwrap_or(""))) {
                match r.object_type {
                    Some(ObjectType::Group) => changes.groups.insert(id.clone()),
                    _ => changes.users.insert(id.clone()),
                };
            }
        }
        // A DN that now means another entry (or none) moves the manager of the users naming
        // it: one pass over the users, comparing a string each, only when a DN moved.
        if !moved_dns.is_empty() {
            for (anchor, e) in &snap.users {
                if e.manager.as_ref().is_some_and(|m| moved_dns.contains(m)) {
                    changes.users.insert(anchor.clone());
                }
            }
        }

        // Groups: resolved (and flattened) again when anything they resolve may have moved,
        // and compared; a group whose members changed is changed, and so is every member it
        // gained or lost (flattening makes that the users of nested groups too).
        let groups_read = after
            .values()
            .chain(before.values())
            .flatten()
            .any(|(ty, _, _)| *ty == ObjectType::Group);
        let groups_before = if groups_read || !moved_dns.is_empty() || moved_uids {
            let (groups, rejects) = snapshot::build_groups(snap, &self.index, settings);
            self.group_rejects = rejects;
            let old = std::mem::replace(&mut self.groups, groups);
            let ids: BTreeSet<&String> = old.keys().chain(self.groups.keys()).collect();
            for id in ids {
                let (then, now) = (old.get(id), self.groups.get(id));
                if then == now {
                    continue;
                }
                changes.groups.insert(id.clone());
                let members = |g: Option<&SourceObject>| -> BTreeSet<String> {
                    g.map(|g| g.members.iter().cloned().collect())
                        .unwrap_or_default()
                };
                for m in members(then).symmetric_difference(&members(now)) {
                    if snap.groups.contains_key(m) || old.contains_key(m) {
                        changes.groups.insert(m.clone());
                    } else {
                        changes.users.insert(m.clone());
                    }
                }
            }
            Some(old)
        } else {
            None
        };

        // Assignments: a user's mark comes with her entry; an assigned group may appear, go
        // or become another entry.
        for anchor in &anchors {
            let assigned = snap
                .users
                .get(anchor)
                .is_some_and(|e| e.assigned_by_filter && !snap.groups.contains_key(anchor));
            if assigned {
                self.assigned_users.insert(anchor.clone());
            } else {
                self.assigned_users.remove(anchor);
            }
        }
        let assignments =
            snapshot::assignments(self.assigned_users.iter(), &self.index, settings, true);
        if assignments != self.assignments {
            let old_groups = groups_before.as_ref().unwrap_or(&self.groups);
            crate::model::view::assignment_changes(
                &self.assignments,
                &assignments,
                old_groups,
                &self.groups,
                &mut changes,
            );
            self.assignments = assignments;
        }
        self.watermark = watermark;
        self.pending = changes.clone();
        Some(changes)
    }

    /// After a whole answer: nothing is known to be planned until a cycle commits.
    pub(super) fn answered_whole(&mut self) {
        self.whole_pending = true;
    }

    /// The view of `focus` (`crate::model::view::view`), its users built from `snap`: those
    /// the view can hold (the focus, the members of the groups whose membership it plans,
    /// the users a focus user references) and no other.
    pub(super) fn view(
        &self,
        snap: &Snapshot,
        focus: &Changes,
        references: &[String],
    ) -> Directory {
        let mut wanted: BTreeSet<&String> = focus.users.iter().collect();
        for (id, g) in &self.groups {
            if crate::model::view::plans_membership(id, g, focus) {
                wanted.extend(g.members.iter());
            }
        }
        let mut users: BTreeMap<String, SourceObject> = BTreeMap::new();
        let add = |users: &mut BTreeMap<String, SourceObject>, id: &str| {
            if users.contains_key(id) || snap.groups.contains_key(id) {
                return;
            }
            if let Some(e) = snap.users.get(id) {
                users.insert(id.to_string(), snapshot::build_user(id, e, &self.index));
            }
        };
        for id in wanted {
            add(&mut users, id);
        }
        let referenced: Vec<String> = focus
            .users
            .iter()
            .filter_map(|id| users.get(id))
            .flat_map(|u| {
                references
                    .iter()
                    .filter_map(|r| u.attributes.get_str_any_case(r).map(str::to_string))
            })
            .collect();
        for id in &referenced {
            add(&mut users, id);
        }
        crate::model::view::view(
            &users,
            &self.groups,
            &self.assignments,
            &self.rejected(snap),
            true,
            focus,
            references,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::Entry;
    use super::super::{Flavour, Nested};
    use super::*;
    use crate::scope::{ScopeMode, ScopeSettings};
    use proptest::prelude::*;
    use serde_json::{json, Map};

    const USERS: usize = 8;
    const GROUPS: usize = 4;

    /// One state of a user entry: present, DN variant (a rename), title, manager (a user
    /// index and that user's DN variant), uid variant, disabled and assigned marks.
    type UserState = (bool, u8, u8, Option<(usize, u8)>, u8, bool, bool);
    /// One state of a group entry: present, DN variant, member users (index, DN variant),
    /// member groups, `memberUid` members (index, uid variant).
    type GroupState = (bool, u8, Vec<(usize, u8)>, Vec<usize>, Vec<(usize, u8)>);

    fn user_dn(i: usize, v: u8) -> String {
        format!("uid=u{i}v{v},ou=people,dc=x")
    }

    fn group_dn(i: usize, v: u8) -> String {
        format!("cn=g{i}v{v},ou=groups,dc=x")
    }

    fn user_entry(i: usize, s: &UserState) -> Entry {
        let (_, v, title, manager, uid, disabled, assigned) = s;
        let mut attributes = Map::new();
        attributes.insert("userPrincipalName".into(), json!(format!("u{i}@x")));
        attributes.insert("displayName".into(), json!(format!("U{i}")));
        attributes.insert("jobTitle".into(), json!(format!("t{title}")));
        Entry {
            dn: user_dn(i, *v),
            attributes,
            manager: manager.map(|(m, mv)| dn::normalize(&user_dn(m, mv))),
            member_dns: Vec::new(),
            member_uids: Vec::new(),
            uid: Some(format!("uid{i}-{uid}")),
            changed: None,
            disabled_by_filter: *disabled,
            assigned_by_filter: *assigned,
        }
    }

    fn group_entry(i: usize, s: &GroupState) -> Entry {
        let (_, v, users, groups, uids) = s;
        let mut attributes = Map::new();
        attributes.insert("displayName".into(), json!(format!("G{i}")));
        Entry {
            dn: group_dn(i, *v),
            attributes,
            manager: None,
            member_dns: users
                .iter()
                .map(|(u, uv)| dn::normalize(&user_dn(*u, *uv)))
                .chain(groups.iter().map(|g| dn::normalize(&group_dn(*g, 0))))
                .collect(),
            member_uids: uids.iter().map(|(u, uv)| format!("uid{u}-{uv}")).collect(),
            uid: None,
            changed: None,
            disabled_by_filter: false,
            assigned_by_filter: false,
        }
    }

    use super::super::dn;

    fn arb_user() -> impl Strategy<Value = UserState> {
        (
            proptest::bool::weighted(0.9),
            0..2u8,
            0..3u8,
            proptest::option::of((0..USERS, 0..2u8)),
            0..2u8,
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.5),
        )
    }

    fn arb_group() -> impl Strategy<Value = GroupState> {
        (
            proptest::bool::weighted(0.9),
            0..2u8,
            proptest::collection::vec((0..USERS, 0..2u8), 0..4),
            proptest::collection::vec(0..GROUPS, 0..2),
            proptest::collection::vec((0..USERS, 0..2u8), 0..2),
        )
    }

    /// A snapshot of the entries present in `users` and `groups`.
    fn snapshot_of(users: &[UserState], groups: &[GroupState]) -> Snapshot {
        let mut snap = Snapshot::default();
        for (i, u) in users.iter().enumerate().filter(|(_, u)| u.0) {
            snap.users.insert(format!("u{i}"), user_entry(i, u));
        }
        for (i, g) in groups.iter().enumerate().filter(|(_, g)| g.0) {
            snap.groups.insert(format!("g{i}"), group_entry(i, g));
        }
        snap
    }

    fn settings(flatten: bool, assigned_group: usize) -> LdapSettings {
        let mut s = LdapSettings::new(Flavour::OpenLdap, "ldap://127.0.0.1", "dc=x");
        s.nested = if flatten {
            Nested::Flatten
        } else {
            Nested::Direct
        };
        s.assigned_groups = vec![group_dn(assigned_group, 0)];
        s
    }

    /// The LDAP delta answers for one incremental read: `before` is the snapshot, `reread`
    /// the entries the read brought (as incremental reads bring them: changed entries whole,
    /// never a deletion). Checks that the built parts are the whole build's, that the view is
    /// the one `model::view` gives over the whole directory, and that the plan of the view
    /// is the full plan. Whether the plans were compared (`false`: the cycle plans all).
    fn check(
        before: &Snapshot,
        reread: Snapshot,
        s: &LdapSettings,
        scope: &ScopeSettings,
    ) -> Result<bool, TestCaseError> {
        let (d1, index, rejects) = snapshot::build(before, s, true);
        prop_assume!(!index.ambiguous);
        let mut built = Built::new(&d1, index, rejects, before, Some("w".into()));
        built.confirm();
        prop_assert!(built.in_step(Some("w")));
        let was = presences(before, &touched(&reread));
        let mut after = before.clone();
        after.merge(reread);
        let (d2, _, _) = snapshot::build(&after, s, true);
        let Some(focus) = built.advance(&after, &was, s, Some("w".into())) else {
            return Ok(false);
        };
        prop_assert_eq!(&built.groups, &d2.groups.to_tree());
        prop_assert_eq!(&built.assignments, &d2.assignments);
        let references = vec!["manager".to_string()];
        let view = built.view(&after, &focus, &references);
        let whole = crate::model::view::view_of(&d2, &focus, &references);
        prop_assert_eq!(&view.users, &whole.users);
        prop_assert_eq!(&view.groups, &whole.groups);
        prop_assert_eq!(&view.assignments, &whole.assignments);
        prop_assert_eq!(&view.rejected, &whole.rejected);
        crate::plan::tests::delta_plans_the_full_plan_given(&d1, &d2, scope, Some((&focus, &view)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// A delta cycle plans what a full cycle plans, with changes as LDAP produces them
        /// (issue 12): re-read entries (renamed, retitled, another manager, members added
        /// or removed, directly, through nested groups flattened or `memberUid`), marks of
        /// `disabled_filter` and `assigned_users_filter` that moved, new entries.
        #[test]
        fn an_ldap_delta_plans_what_the_full_path_plans(
            users in proptest::collection::vec(arb_user(), USERS),
            groups in proptest::collection::vec(arb_group(), GROUPS),
            next_users in proptest::collection::vec(arb_user(), USERS),
            next_groups in proptest::collection::vec(arb_group(), GROUPS),
            reread in proptest::collection::vec(proptest::bool::weighted(0.25), USERS + GROUPS),
            flatten in proptest::bool::ANY,
            all in proptest::bool::weighted(0.25),
            assigned_group in 0..GROUPS,
        ) {
            let s = settings(flatten, assigned_group);
            let before = snapshot_of(&users, &groups);
            let next = snapshot_of(&next_users, &next_groups);
            let mut fresh = Snapshot::default();
            for (i, _) in reread.iter().enumerate().filter(|(_, r)| **r) {
                if i < USERS {
                    let id = format!("u{i}");
                    if let Some(e) = next.users.get(&id) {
                        fresh.users.insert(id, e.clone());
                    }
                } else {
                    let id = format!("g{}", i - USERS);
                    if let Some(e) = next.groups.get(&id) {
                        fresh.groups.insert(id, e.clone());
                    }
                }
            }
            let scope = ScopeSettings {
                mode: if all { ScopeMode::All } else { ScopeMode::Assigned },
                ..ScopeSettings::default()
            };
            check(&before, fresh, &s, &scope)?;
        }
    }

    /// The cases the property test must reach, named: a user moved into a nested group
    /// (her flattened membership of the parent changes, with no parent entry re-read), a
    /// user newly disabled by `disabled_filter`, a manager renamed (her reports' manager
    /// now resolves to nothing, with no report re-read), a `memberUid` that resolves to
    /// another user.
    #[test]
    fn ldap_changes_reach_what_they_move() {
        let user = |t: u8, m: Option<(usize, u8)>, uid: u8, disabled: bool| -> UserState {
            (true, 0, t, m, uid, disabled, true)
        };
        let base_users: Vec<UserState> = (0..3).map(|_| user(0, None, 0, false)).collect();
        let parent: GroupState = (true, 0, vec![(0, 0)], vec![1], vec![]);
        let child: GroupState = (true, 0, vec![], vec![], vec![(2, 0)]);
        let s = settings(true, 0);
        let scope = ScopeSettings::default();
        let before = snapshot_of(&base_users, &[parent.clone(), child.clone()]);
        // What a source that read `before` and committed reports once `fresh` is read.
        let changes_after = |before: &Snapshot, fresh: &Snapshot| {
            let (d1, index, rejects) = snapshot::build(before, &s, true);
            let mut built = Built::new(&d1, index, rejects, before, None);
            built.confirm();
            let was = presences(before, &touched(fresh));
            let mut after = before.clone();
            after.merge(fresh.clone());
            built.advance(&after, &was, &s, None).unwrap()
        };

        // u1 joins the child group: g0 (the parent) gains her through flattening.
        let mut fresh = Snapshot::default();
        let mut joined = child.clone();
        joined.2.push((1, 0));
        fresh.groups.insert("g1".into(), group_entry(1, &joined));
        let c = changes_after(&before, &fresh);
        assert!(c.groups.contains("g0") && c.groups.contains("g1"), "{c:?}");
        assert!(c.users.contains("u1"), "{c:?}");
        assert!(check(&before, fresh, &s, &scope).unwrap());

        // u2 newly disabled (her entry re-read with the mark).
        let mut fresh = Snapshot::default();
        fresh
            .users
            .insert("u2".into(), user_entry(2, &user(0, None, 0, true)));
        assert!(check(&before, fresh, &s, &scope).unwrap());

        // u0 renamed: u1's manager DN (u0's old one) dangles; u1 was not re-read.
        let mut managed = base_users.clone();
        managed[1] = user(0, Some((0, 0)), 0, false);
        let before = snapshot_of(&managed, &[parent.clone(), child.clone()]);
        let mut fresh = Snapshot::default();
        fresh.users.insert(
            "u0".into(),
            user_entry(0, &(true, 1, 0, None, 0, false, true)),
        );
        let c = changes_after(&before, &fresh);
        assert!(c.users.contains("u1"), "u1's manager moved: {c:?}");
        assert!(c.groups.contains("g0"), "u0's DN left g0: {c:?}");
        check(&before, fresh, &s, &scope).unwrap();

        // u2's uid changes: the child's memberUid no longer resolves to her.
        let mut fresh = Snapshot::default();
        fresh
            .users
            .insert("u2".into(), user_entry(2, &user(0, None, 1, false)));
        let before = snapshot_of(&base_users, &[parent, child]);
        let c = changes_after(&before, &fresh);
        assert!(c.groups.contains("g0") && c.groups.contains("g1"), "{c:?}");
        check(&before, fresh, &s, &scope).unwrap();
    }
}
