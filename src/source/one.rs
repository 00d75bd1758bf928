//! Reading one object for `provisiond provision` (provision on demand): which object is
//! asked for ([`OneQuery`]), and the small [`Directory`] that stands for it ([`OneRead`]).
//!
//! The directory of an on-demand read holds only what deciding about that object needs: the
//! user, the groups it is a direct member of (their members cut down to it) and the
//! assignments of both; or the group, the asked members and their assignments. The caller
//! acts on the asked objects alone, so the missing rest of the directory is never taken as
//! deleted.

use crate::model::{Directory, ObjectType, SourceObject};
use std::collections::{BTreeMap, HashSet};

/// The object an on-demand run asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneQuery {
    pub object_type: ObjectType,
    /// A user: its id (anchor), `userPrincipalName` or `mail`; a group: its id or
    /// `displayName`. Names compare without regard to case.
    pub key: String,
    /// Groups only: the members to provision with it (ids, `userPrincipalName`s or mails).
    pub members: Vec<String>,
}

/// What an on-demand read found.
#[derive(Debug, Clone)]
pub struct OneRead {
    /// The asked object and what its scope depends on (see the module docs).
    pub directory: Directory,
    /// The asked object's id.
    pub id: String,
    /// Groups only: the ids of the members found, in the order asked.
    pub member_ids: Vec<String>,
    /// Groups only: the member keys no user answers to.
    pub missing_members: Vec<String>,
}

/// Whether `obj` answers to `key`: its id exactly, or one of the names, ignoring case.
pub(crate) fn answers_to(obj: &SourceObject, key: &str) -> bool {
    if obj.id == key {
        return true;
    }
    let names: &[&str] = match obj.object_type {
        ObjectType::User => &["userPrincipalName", "mail"],
        ObjectType::Group => &["displayName"],
    };
    names.iter().any(|n| {
        obj.attributes
            .get_str(n)
            .is_some_and(|v| v.eq_ignore_ascii_case(key))
    })
}

/// The id of the one object of `ty` in `dir` that answers to `key`: the id first (an id
/// equal to another object's name wins), else the first by id order among the names.
fn find(dir: &Directory, ty: ObjectType, key: &str) -> Option<String> {
    let objects = dir.objects(ty);
    if objects.contains_key(key) {
        return Some(key.to_string());
    }
    objects
        .values()
        .find(|o| answers_to(o, key))
        .map(|o| o.id.clone())
}

/// Cut a whole directory down to what `query` needs; `None` when no object answers to its
/// key. Used by sources that read the object from a complete read (the file source), and by
/// the LDAP source on the few entries its searches returned.
pub(crate) fn pick_one(dir: Directory, query: &OneQuery) -> Option<OneRead> {
    let id = find(&dir, query.object_type, &query.key)?;
    let mut out = Directory {
        complete: dir.complete,
        ..Directory::default()
    };
    let mut member_ids = Vec::new();
    let mut missing_members = Vec::new();
    let mut principals: HashSet<String> = HashSet::new();
    match query.object_type {
        ObjectType::User => {
            let user = dir.users.get(&id)?.clone();
            // The groups the user is a direct member of: through them an assignment reaches
            // her (Entra does not expand nested groups).
            for (gid, g) in &dir.groups {
                if g.members.contains(&id) {
                    let mut g = g.clone();
                    g.members = vec![id.clone()];
                    principals.insert(gid.clone());
                    out.groups.insert(g);
                }
            }
            principals.insert(id.clone());
            out.users.insert(user);
        }
        ObjectType::Group => {
            let mut group = dir.groups.get(&id)?.clone();
            let mut users: BTreeMap<String, SourceObject> = BTreeMap::new();
            for key in &query.members {
                match find(&dir, ObjectType::User, key) {
                    Some(uid) if !member_ids.contains(&uid) => {
                        if let Some(u) = dir.users.get(&uid) {
                            users.insert(uid.clone(), u.clone());
                        }
                        principals.insert(uid.clone());
                        member_ids.push(uid);
                    }
                    Some(_) => {}
                    None => missing_members.push(key.clone()),
                }
            }
            // Only the asked members who are members: a user asked for but not in the group
            // is still read (its scope is shown) but not added to it.
            group.members.retain(|m| member_ids.contains(m));
            principals.insert(id.clone());
            out.groups.insert(group);
            out.users = users.into_values().collect();
        }
    }
    out.assignments = dir
        .assignments
        .into_iter()
        .filter(|a| principals.contains(&a.principal_id))
        .collect();
    // A rejected object among those read stays rejected (the planner then leaves it alone);
    // rejections of others say nothing about these.
    out.rejected = dir
        .rejected
        .into_iter()
        .filter(|r| r.id.as_ref().is_some_and(|i| principals.contains(i)))
        .collect();
    Some(OneRead {
        directory: out,
        id,
        member_ids,
        missing_members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::parse_export;
    use std::path::Path;

    fn dir() -> Directory {
        parse_export(
            br#"{"users":[
                {"id":"u1","userPrincipalName":"ann@x","mail":"ann.m@x"},
                {"id":"u2","userPrincipalName":"bob@x"},
                {"id":"u3","userPrincipalName":"cy@x"}],
              "groups":[{"id":"g1","displayName":"Sales","members":["u1","u2","u3"]},
                        {"id":"g2","displayName":"Other","members":["u2"]}],
              "assignments":[{"principalId":"g1"},{"principalId":"u2"},{"principalId":"g2"}]}"#,
            Path::new("d.json"),
        )
        .unwrap()
    }

    fn user(key: &str) -> OneQuery {
        OneQuery {
            object_type: ObjectType::User,
            key: key.into(),
            members: vec![],
        }
    }

    #[test]
    fn a_user_is_found_by_id_upn_or_mail_with_its_groups_and_assignments() {
        for key in ["u1", "ANN@x", "ann.m@X"] {
            let one = pick_one(dir(), &user(key)).unwrap();
            assert_eq!(one.id, "u1");
            let d = &one.directory;
            assert_eq!(d.users.keys().collect::<Vec<_>>(), ["u1"]);
            assert_eq!(d.groups.keys().collect::<Vec<_>>(), ["g1"]);
            assert_eq!(d.groups["g1"].members, ["u1"], "other members are cut");
            assert_eq!(d.assignments.len(), 1);
            assert_eq!(d.assignments[0].principal_id, "g1");
        }
        assert!(pick_one(dir(), &user("nobody@x")).is_none());
    }

    #[test]
    fn a_group_keeps_only_the_asked_members() {
        let q = OneQuery {
            object_type: ObjectType::Group,
            key: "sales".into(),
            members: vec!["bob@x".into(), "u3".into(), "ghost".into()],
        };
        let one = pick_one(dir(), &q).unwrap();
        assert_eq!(one.id, "g1");
        assert_eq!(one.member_ids, ["u2", "u3"]);
        assert_eq!(one.missing_members, ["ghost"]);
        let d = &one.directory;
        assert_eq!(d.groups["g1"].members, ["u2", "u3"]);
        assert_eq!(d.users.len(), 2);
        let principals: Vec<_> = d.assignments.iter().map(|a| &a.principal_id).collect();
        assert_eq!(principals, ["g1", "u2"]);
    }
}
