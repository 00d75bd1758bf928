//! The attribute comparison: what changed between a link's last exported values and what the
//! mappings want now, with the no-change shortcut that decides the common case on the compact
//! form.

use crate::mapping::Mapped;
use crate::model::{Link, LinkRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What to do when a mapped value becomes null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NullPolicy {
    /// Entra's behaviour: leave the old value in the target.
    #[default]
    Leave,
    /// Clear it with a PATCH `remove`.
    Remove,
}

/// One attribute change of an update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Change {
    pub path: String,
    pub old: Option<Value>,
    /// `None` removes the attribute.
    pub new: Option<Value>,
}

/// The attribute changes between what was last exported and what the mappings want now.
pub(crate) fn diff(link: LinkRef<'_>, mapped: &Mapped, nulls: NullPolicy) -> Vec<Change> {
    // The common case, decided on the compact form without decoding it: exactly the
    // conditions under which the code below finds nothing. (Exported values no mapping
    // produces any more, and references, which phase two owns, are not compared.)
    let unchanged = link.exported().covers(&mapped.values)
        && (!link.disabled() || mapped.values.contains_key("active"))
        && (nulls == NullPolicy::Leave
            || mapped
                .nulls
                .iter()
                .all(|p| !link.exported().contains_key(p)));
    if unchanged {
        return Vec::new();
    }
    diff_decoded(link, mapped, nulls)
}

/// [`diff`] without its shortcut, on the decoded values.
fn diff_decoded(link: LinkRef<'_>, mapped: &Mapped, nulls: NullPolicy) -> Vec<Change> {
    let exported = link.exported().to_map();
    let mut changes = Vec::new();
    for (path, new, old) in mapped.values.zip_get(&exported) {
        if old != Some(new) {
            changes.push(Change {
                path: path.to_string(),
                old: old.cloned(),
                new: Some(new.clone()),
            });
        }
    }
    // An account provisiond disabled comes back into scope: enable it even when no mapping
    // produces `active`.
    if link.disabled() && !mapped.values.contains_key("active") {
        changes.push(Change {
            path: "active".into(),
            old: Some(Value::Bool(false)),
            new: Some(Value::Bool(true)),
        });
    }
    if nulls == NullPolicy::Remove {
        for path in &mapped.nulls {
            if let Some(old) = exported.get(path) {
                changes.push(Change {
                    path: path.to_string(),
                    old: Some(old.clone()),
                    new: None,
                });
            }
        }
    }
    changes
}

/// Apply a change set to a link's memory of exported values (which drops its input digest).
pub(crate) fn record_changes(link: &mut Link, changes: &[Change]) {
    if let Some(changed) = changed_values(link, changes) {
        link.exported = changed.into();
    }
}

/// The link's exported values with `changes` applied; `None` when there is none.
fn changed_values(link: &Link, changes: &[Change]) -> Option<crate::attrs::map::AttrMap> {
    if changes.is_empty() {
        return None;
    }
    let mut exported = link.exported.to_map();
    for c in changes {
        match &c.new {
            Some(v) => {
                exported.insert(&c.path, v.clone());
            }
            None => {
                exported.remove(&c.path);
            }
        }
    }
    Some(exported)
}

/// Apply a confirmed update to its link: the changes, then what [`super::Update::digest`]
/// says of the link's input digest (the changes alone drop it).
pub(crate) fn record_update(link: &mut Link, u: &super::Update) {
    match u.digest {
        super::DigestAfter::Drop => record_changes(link, &u.changes),
        super::DigestAfter::Keep => {
            if let Some(changed) = changed_values(link, &u.changes) {
                link.exported.replace_keeping_digest(&changed);
            }
        }
        super::DigestAfter::Record(inputs) => {
            record_changes(link, &u.changes);
            link.exported.set_digest(crate::attrs::InputDigest {
                inputs,
                matching: super::objects::matching_hashes(&u.mapped),
            });
        }
    }
}

/// The changes in words, for action records and logs (bounded: see
/// [`bounded_list`](crate::util::text::bounded_list)).
pub(crate) fn describe_changes(changes: &[Change]) -> String {
    let parts = changes
        .iter()
        .map(|c| match (&c.old, &c.new) {
            (None, Some(n)) => format!("{} = {n}", c.path),
            (Some(o), Some(n)) => format!("{}: {o} -> {n}", c.path),
            (_, None) => format!("{} removed", c.path),
        })
        .collect::<Vec<_>>();
    crate::util::text::bounded_list(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::map::AttrMap;
    use crate::model::ObjectType;
    use proptest::prelude::*;
    use serde_json::json;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            "[ab]{0,2}".prop_map(Value::String),
            (0..3i64).prop_map(|n| json!(n)),
        ]
    }

    proptest! {
        /// The shortcut says "unchanged" exactly when the full comparison finds nothing.
        #[test]
        fn the_shortcut_agrees_with_the_full_diff(
            exported in prop::collection::btree_map("active|[a-d]", value(), 0..5),
            values in prop::collection::btree_map("active|[a-d]", value(), 0..5),
            nulls in prop::collection::btree_set("[a-e]", 0..3),
            remove in any::<bool>(),
        ) {
            let link = Link {
                object_type: ObjectType::User,
                source_id: "s".into(),
                target_id: "t".into(),
                display_name: "d".into(),
                matching: Default::default(),
                exported: AttrMap::from(exported).into(),
                members: Default::default(),
                created: true,
            };
            let values = AttrMap::from(values);
            let nulls = nulls
                .into_iter()
                .filter(|p| !values.contains_key(p))
                .map(|p| crate::attrs::map::intern(&p))
                .collect();
            let mapped = Mapped { values, nulls, ..Mapped::default() };
            let policy = if remove { NullPolicy::Remove } else { NullPolicy::Leave };
            let index = crate::model::LinkIndex::new([link]);
            let Some(link) = index.get(ObjectType::User, "s") else {
                return Err(proptest::test_runner::TestCaseError::fail("the link is indexed"));
            };
            prop_assert_eq!(diff(link, &mapped, policy), diff_decoded(link, &mapped, policy));
        }
    }
}
