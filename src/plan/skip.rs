//! Skipping the mapping of objects whose source data did not change.
//!
//! Mapping and diffing every object is most of a no-change cycle's work. When every mapping of
//! a type is pure (a function of the object alone: see [`Mapping::is_pure`]), an object whose
//! inputs are the same as when mapping them last gave exactly its link's exported values maps
//! to those values again: no change, so nothing to map or diff. The inputs are summed up in an
//! [`InputDigest`](crate::attrs::InputDigest) kept with the exported values (which drop it whenever they change), so the
//! plan with skipping is the plan without (`tests.rs` checks it on random directories).

use crate::mapping::{Mapping, MappingSource, Mappings};
use crate::model::{Directory, ObjectType, SourceObject};
use crate::plan::{Action, DigestAfter, NullPolicy, Update};
use crate::scope::Scoped;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};

/// Changes whenever what goes into a digest does, so older digests simply mismatch.
const DIGEST_FORMAT: &[u8] = b"provisiond input digest v1";

/// What lets the planner find an object unchanged without mapping it.
#[derive(Clone, Default)]
pub(crate) struct Skipping {
    /// Per type, the hash state after the parts every object of the type shares (the
    /// mappings, the null policy); `None` when the type's objects are always mapped.
    users: Option<Sha256>,
    groups: Option<Sha256>,
    /// Objects always mapped, by type: those with an escrowed action or a staged deletion,
    /// whose handling the cycle decides from the planned action.
    never_users: HashSet<String>,
    never_groups: HashSet<String>,
}

impl Skipping {
    /// Map every object (provision on demand, an initial cycle, a dry run of a test).
    pub(crate) fn off() -> Self {
        Skipping::default()
    }

    /// Skipping for every type whose mappings are all pure, except for the `never` objects.
    pub(crate) fn new(
        mappings: &Mappings,
        nulls: NullPolicy,
        never: impl IntoIterator<Item = (ObjectType, String)>,
    ) -> Self {
        let prefix = |ty: ObjectType| -> Option<Sha256> {
            let maps = mappings.of(ty);
            if !maps.iter().all(Mapping::is_pure) {
                return None;
            }
            let mut h = Sha256::new();
            put(&mut h, DIGEST_FORMAT);
            put(&mut h, ty.as_str().as_bytes());
            put(&mut h, &[nulls as u8]);
            for m in maps {
                mapping_into(&mut h, m);
            }
            Some(h)
        };
        let (mut never_users, mut never_groups) = (HashSet::new(), HashSet::new());
        for (ty, id) in never {
            match ty {
                ObjectType::User => never_users.insert(id),
                ObjectType::Group => never_groups.insert(id),
            };
        }
        Skipping {
            users: prefix(ObjectType::User),
            groups: prefix(ObjectType::Group),
            never_users,
            never_groups,
        }
    }

    /// Whether objects of this type may be skipped at all.
    pub(crate) fn is_on(&self, ty: ObjectType) -> bool {
        self.prefix(ty).is_some()
    }

    fn prefix(&self, ty: ObjectType) -> Option<&Sha256> {
        match ty {
            ObjectType::User => self.users.as_ref(),
            ObjectType::Group => self.groups.as_ref(),
        }
    }

    /// The digest of what mapping `obj` reads, or `None` when it must be mapped regardless.
    pub(crate) fn inputs(
        &self,
        ty: ObjectType,
        obj: &SourceObject,
        roles: Option<&BTreeSet<String>>,
    ) -> Option<[u8; 16]> {
        let never = match ty {
            ObjectType::User => &self.never_users,
            ObjectType::Group => &self.never_groups,
        };
        if never.contains(obj.id.as_str()) {
            return None;
        }
        let mut h = self.prefix(ty)?.clone();
        put(&mut h, obj.id.as_bytes());
        // Names written out, not as this process's numbers: the digest outlives the process.
        let mut attributes = Vec::new();
        obj.attributes
            .write_portable(&mut attributes, &mut |_| None);
        put(&mut h, &attributes);
        // Members are not mapped (phase two reads them), so they are not an input here.
        let roles = roles.into_iter().flatten();
        put(&mut h, &(roles.clone().count() as u64).to_le_bytes());
        for r in roles {
            put(&mut h, r.as_bytes());
        }
        let full = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        Some(out)
    }

    /// Give phase one's provisions and updates their object's input digest, so that the
    /// export records it in the link it writes anyway: a create leaves exactly the mapped
    /// values in its link, and an update brings the link's values to exactly them (the plan's
    /// changes are all that [`super::diff`] finds), so the next cycle need not map the object.
    /// The planner's actions carry none (the plan is the same with skipping or without):
    /// the cycle stamps them before the export. Not for phase two's reference updates, which
    /// say themselves what becomes of a digest ([`DigestAfter::Keep`]). An object this would
    /// not skip (an impure type, an escrowed action or a staged deletion) gets none.
    pub(crate) fn stamp(&self, actions: &mut [Action], dir: &Directory, scoped: &Scoped) {
        let inputs_of = |ty: ObjectType, id: &str| self.inputs_of(ty, id, dir, scoped);
        for a in actions {
            match a {
                Action::Provision(p) => p.inputs = inputs_of(p.object_type, &p.source_id),
                Action::Update(u) => {
                    if let Some(inputs) = inputs_of(u.object_type, &u.source_id) {
                        u.digest = DigestAfter::Record(inputs);
                    }
                }
                Action::Disable(_) | Action::Delete(_) => {}
            }
        }
    }

    /// Phase two's updates that would keep a digest the export's index left in the store
    /// (`stored`: `crate::model::LinkRef::digest_stored`), which the link they write back
    /// would lose: they record the digest of the object's inputs instead. It is the one
    /// kept: only phase one's writes leave a digest in the store, each stamped this cycle
    /// ([`Skipping::stamp`]) from the same directory, and no user has two reference updates
    /// in a cycle.
    pub(crate) fn stamp_kept(
        &self,
        updates: &mut [Update],
        stored: impl Fn(&str) -> bool,
        dir: &Directory,
        scoped: &Scoped,
    ) {
        for u in updates {
            if u.digest == DigestAfter::Keep && stored(&u.source_id) {
                u.digest = match self.inputs_of(u.object_type, &u.source_id, dir, scoped) {
                    Some(inputs) => DigestAfter::Record(inputs),
                    None => DigestAfter::Drop,
                };
            }
        }
    }

    /// [`Skipping::inputs`] of the object `id` of `dir`, with its roles as the planner reads
    /// them (`plan_type`), whatever the type.
    fn inputs_of(
        &self,
        ty: ObjectType,
        id: &str,
        dir: &Directory,
        scoped: &Scoped,
    ) -> Option<[u8; 16]> {
        // Cheap before the lookups: an impure type never has a digest.
        if !self.is_on(ty) {
            return None;
        }
        let obj = dir.objects(ty).get(id)?;
        let roles = scoped.roles.get(id).map(|r| &**r);
        self.inputs(ty, obj, roles)
    }
}

/// Length-prefixed, so that no two sequences of parts hash alike.
fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// One mapping as written, in a form of our own: a mapping's Rust representation may change
/// without every digest changing with it.
fn mapping_into(h: &mut Sha256, m: &Mapping) {
    put(h, m.target.as_bytes());
    match &m.source {
        MappingSource::Attribute(a) => {
            put(h, b"attribute");
            put(h, a.as_bytes());
        }
        MappingSource::Constant(c) => {
            put(h, b"constant");
            put(h, c.to_string().as_bytes());
        }
        MappingSource::Expression(e) => {
            put(h, b"expression");
            put(h, e.text().as_bytes());
        }
    }
    put(h, format!("{:?}", m.apply).as_bytes());
    put(
        h,
        m.default
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    put(h, &m.matching.map_or(0, |p| u64::from(p) + 1).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CompactMap;
    use serde_json::json;

    fn user(id: &str, title: &str) -> SourceObject {
        SourceObject {
            id: id.into(),
            object_type: ObjectType::User,
            attributes: CompactMap::from_map(
                &[
                    ("userPrincipalName", json!("a@x")),
                    ("jobTitle", json!(title)),
                ]
                .into_iter()
                .collect(),
            ),
            members: vec![],
        }
    }

    #[test]
    fn the_digest_follows_every_input() {
        let m = Mappings::generic_scim().unwrap();
        let s = Skipping::new(&m, NullPolicy::Leave, []);
        let ty = ObjectType::User;
        let a = s.inputs(ty, &user("a", "T"), None).unwrap();
        assert_eq!(
            Some(a),
            s.inputs(ty, &user("a", "T"), None),
            "deterministic"
        );
        assert_ne!(Some(a), s.inputs(ty, &user("a", "U"), None), "attributes");
        assert_ne!(Some(a), s.inputs(ty, &user("b", "T"), None), "id");
        let roles: BTreeSet<String> = ["Admin".to_string()].into();
        assert_ne!(
            Some(a),
            s.inputs(ty, &user("a", "T"), Some(&roles)),
            "roles"
        );
        let remove = Skipping::new(&m, NullPolicy::Remove, []);
        assert_ne!(
            Some(a),
            remove.inputs(ty, &user("a", "T"), None),
            "null policy"
        );
        let mut changed = m.clone();
        changed.users[0].target = "nickName".into();
        let other = Skipping::new(&changed, NullPolicy::Leave, []);
        assert_ne!(Some(a), other.inputs(ty, &user("a", "T"), None), "mappings");
        let never = Skipping::new(&m, NullPolicy::Leave, [(ty, "a".to_string())]);
        assert_eq!(None, never.inputs(ty, &user("a", "T"), None), "escrowed");
        assert!(Skipping::off().inputs(ty, &user("a", "T"), None).is_none());
    }

    #[test]
    fn impure_mappings_turn_skipping_off_for_their_type() {
        let mut m = Mappings::generic_scim().unwrap();
        let s = Skipping::new(&m, NullPolicy::Leave, []);
        assert!(s.is_on(ObjectType::User) && s.is_on(ObjectType::Group));
        for text in [
            "Now()",
            "Guid()",
            "FormatDateTime([x], , \"yyyyMMdd\", \"yyyy\")",
        ] {
            let e = crate::mapping::expr::Expression::parse(text).unwrap();
            assert!(!e.is_pure(), "{text}");
            m.users[0].source = MappingSource::Expression(e);
            let s = Skipping::new(&m, NullPolicy::Leave, []);
            assert!(
                !s.is_on(ObjectType::User) && s.is_on(ObjectType::Group),
                "{text}"
            );
        }
        let e = crate::mapping::expr::Expression::parse("ToLower(Join(\"@\", [a], [b]))").unwrap();
        assert!(e.is_pure());
    }
}
