//! [`ObjectMap`]: a directory's users (or groups) by id, held as one vector sorted by id.
//!
//! A `BTreeMap<String, SourceObject>` held every id twice (the key and `SourceObject::id`) and
//! its nodes' slack: about 100 bytes an object beyond the object itself, 100 MB at a million
//! users. Here each object is held once, its id read from the object; lookups are binary
//! searches. A clone shares the objects (copy on write), so the scope's decisions
//! ([`crate::scope::Scoped`]) are vectors in the map's order beside a clone of it instead of
//! hash maps of copied ids.
//!
//! Inserting in id order (a sorted source, a snapshot's B-tree) appends; inserting out of
//! order moves the tail, so many unordered objects are better collected ([`FromIterator`]):
//! that sorts once.

use super::SourceObject;
use std::sync::Arc;

/// Source objects by id, sorted, each id once. Iterates in id order, as the B-tree it replaces.
/// A clone is a second handle on the same objects; a change to either copies them first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectMap {
    /// Sorted by `id`, no two with the same id.
    objects: Arc<Vec<SourceObject>>,
}

impl ObjectMap {
    /// An empty map.
    pub fn new() -> Self {
        ObjectMap::default()
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// No object at all.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The objects to change: copied first when another handle shares them.
    fn objects_mut(&mut self) -> &mut Vec<SourceObject> {
        Arc::make_mut(&mut self.objects)
    }

    fn search(&self, id: &str) -> Result<usize, usize> {
        self.objects.binary_search_by(|o| o.id.as_str().cmp(id))
    }

    /// Where the object with this id is in the iteration order (`None` when absent).
    pub fn position(&self, id: &str) -> Option<usize> {
        self.search(id).ok()
    }

    /// The object with this id.
    pub fn get(&self, id: &str) -> Option<&SourceObject> {
        self.position(id).map(|i| &self.objects[i])
    }

    /// Whether an object has this id.
    pub fn contains_key(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    /// Changes the object with this id in place, keeping the order should `change` alter the
    /// id. False when no object has the id.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut SourceObject)) -> bool {
        let Some(i) = self.position(id) else {
            return false;
        };
        let objects = self.objects_mut();
        change(&mut objects[i]);
        if objects[i].id != id {
            let moved = objects.remove(i);
            self.insert(moved);
        }
        true
    }

    /// Adds an object under its own id; an object already there with that id is replaced and
    /// returned (as `BTreeMap::insert` does).
    pub fn insert(&mut self, object: SourceObject) -> Option<SourceObject> {
        // In order: the usual case of a sorted source, one comparison.
        if self.objects.last().is_none_or(|last| last.id < object.id) {
            self.objects_mut().push(object);
            return None;
        }
        match self.search(&object.id) {
            Ok(i) => Some(std::mem::replace(&mut self.objects_mut()[i], object)),
            Err(i) => {
                self.objects_mut().insert(i, object);
                None
            }
        }
    }

    /// Takes out the object with this id.
    pub fn remove(&mut self, id: &str) -> Option<SourceObject> {
        let i = self.position(id)?;
        Some(self.objects_mut().remove(i))
    }

    /// `(id, object)` in id order, as a `BTreeMap`'s `iter`.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.objects.iter())
    }

    /// `(id, object)` in id order from the first id after `after` (from the start if `None`),
    /// as a `BTreeMap`'s `range` with an excluded start.
    pub fn after(&self, after: Option<&str>) -> Iter<'_> {
        let start = match after.map(|id| self.search(id)) {
            None => 0,
            Some(Ok(i)) => i + 1,
            Some(Err(i)) => i,
        };
        Iter(self.objects[start..].iter())
    }

    /// Whether `other` is a handle on the same objects, not a copy (then an object's
    /// position in one is its position in the other).
    pub(crate) fn shares_with(&self, other: &ObjectMap) -> bool {
        Arc::ptr_eq(&self.objects, &other.objects)
    }

    /// The ids, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator + '_ {
        self.objects.iter().map(|o| &o.id)
    }

    /// The objects, in id order.
    pub fn values(&self) -> std::slice::Iter<'_, SourceObject> {
        self.objects.iter()
    }

    /// The objects, in id order (copied if another handle shares them).
    pub fn into_values(self) -> std::vec::IntoIter<SourceObject> {
        Arc::unwrap_or_clone(self.objects).into_iter()
    }

    /// A copy as the B-tree by id that the sources' snapshots and `model::view` work on.
    pub(crate) fn to_tree(&self) -> std::collections::BTreeMap<String, SourceObject> {
        self.objects
            .iter()
            .map(|o| (o.id.clone(), o.clone()))
            .collect()
    }
}

/// `(id, object)` pairs of an [`ObjectMap`], in id order.
#[derive(Debug, Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, SourceObject>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a String, &'a SourceObject);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|o| (&o.id, o))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|o| (&o.id, o))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a ObjectMap {
    type Item = (&'a String, &'a SourceObject);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for ObjectMap {
    type Item = SourceObject;
    type IntoIter = std::vec::IntoIter<SourceObject>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_values()
    }
}

impl FromIterator<SourceObject> for ObjectMap {
    /// Sorted once; of objects with the same id the last one stays, as inserting them one by
    /// one into a map would leave it.
    fn from_iter<I: IntoIterator<Item = SourceObject>>(iter: I) -> Self {
        let mut objects: Vec<SourceObject> = iter.into_iter().collect();
        // Stable, so copies keep their order; already-sorted input (a B-tree's values) is one
        // pass.
        objects.sort_by(|a, b| a.id.cmp(&b.id));
        // In place: `later` goes, after handing its object to the copy that stays.
        objects.dedup_by(|later, kept| {
            let same = later.id == kept.id;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        objects.shrink_to_fit();
        ObjectMap {
            objects: Arc::new(objects),
        }
    }
}

impl Extend<SourceObject> for ObjectMap {
    fn extend<I: IntoIterator<Item = SourceObject>>(&mut self, iter: I) {
        for o in iter {
            self.insert(o);
        }
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for ObjectMap {
    type Output = SourceObject;

    /// The object with this id; panics when there is none, as a map's index does (tests).
    fn index(&self, id: &str) -> &SourceObject {
        match self.get(id) {
            Some(o) => o,
            None => panic!("no object with id {id:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CompactMap, ObjectType};

    fn obj(id: &str, name: &str) -> SourceObject {
        let mut attributes = crate::model::AttrMap::new();
        attributes.insert("displayName", serde_json::json!(name));
        SourceObject {
            id: id.into(),
            object_type: ObjectType::User,
            attributes: CompactMap::from(&attributes),
            members: Vec::new(),
        }
    }

    #[test]
    fn behaves_as_a_map_by_id_in_id_order() {
        let mut m = ObjectMap::new();
        assert!(m.insert(obj("b", "B")).is_none());
        assert!(m.insert(obj("d", "D")).is_none());
        assert!(m.insert(obj("a", "A")).is_none(), "out of order");
        assert!(m.insert(obj("c", "C")).is_none());
        let replaced = m
            .insert(obj("b", "B2"))
            .map(|o| o.display_name().to_string());
        assert_eq!(replaced.as_deref(), Some("B"));
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m.get("b").map(SourceObject::display_name), Some("B2"));
        assert_eq!(m.position("c"), Some(2));
        assert_eq!(m.position("bb"), None);
        assert!(!m.contains_key("e"));
        assert_eq!(m.remove("a").map(|o| o.id), Some("a".to_string()));
        assert_eq!(m.remove("a"), None);
        assert!(m.iter().all(|(id, o)| *id == o.id));
        assert_eq!(m.iter().next_back().map(|(id, _)| id.as_str()), Some("d"));
        let after = |a| m.after(a).map(|(id, _)| id.as_str()).collect::<Vec<_>>();
        assert_eq!(after(None), ["b", "c", "d"]);
        assert_eq!(after(Some("b")), ["c", "d"]);
        assert_eq!(after(Some("bb")), ["c", "d"], "an absent id");
        assert!(after(Some("d")).is_empty());
    }

    #[test]
    fn collecting_sorts_and_the_last_copy_wins() {
        let m: ObjectMap = [obj("z", "1"), obj("x", "2"), obj("z", "3"), obj("y", "4")]
            .into_iter()
            .collect();
        let got: Vec<(&str, &str)> = m
            .values()
            .map(|o| (o.id.as_str(), o.display_name()))
            .collect();
        assert_eq!(got, [("x", "2"), ("y", "4"), ("z", "3")]);
        let mut one_by_one = ObjectMap::new();
        one_by_one.extend([obj("z", "1"), obj("x", "2"), obj("z", "3"), obj("y", "4")]);
        assert_eq!(one_by_one, m);
    }

    #[test]
    fn a_clone_shares_until_changed() {
        let mut m: ObjectMap = [obj("a", "A"), obj("b", "B")].into_iter().collect();
        let held = m.clone();
        assert!(m.shares_with(&held), "no copy");
        m.insert(obj("c", "C"));
        assert!(m.update("a", |o| o.members = vec!["x".into()]));
        assert!(!m.shares_with(&held));
        assert_eq!(held.len(), 2, "the other handle is not changed");
        assert!(held["a"].members.is_empty());
        assert_eq!(m.len(), 3);
        assert_eq!(held.into_values().count(), 2);
    }

    #[test]
    fn an_update_that_renames_keeps_the_order() {
        let mut m: ObjectMap = [obj("a", "A"), obj("b", "B"), obj("c", "C")]
            .into_iter()
            .collect();
        assert!(m.update("a", |o| o.id = "d".into()));
        assert!(m.update("b", |o| o.members = vec!["c".into()]));
        assert!(!m.update("nope", |_| {}));
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["b", "c", "d"]
        );
        assert_eq!(m["b"].members, ["c"]);
        assert_eq!(m.get("d").map(SourceObject::display_name), Some("A"));
    }
}
