//! Phase one: users and groups are provisioned (matched, then adopted or created), updated,
//! disabled or deleted.

use super::{diff, map_all, problem, Action, Change, Delete, Disable, Plan, PlanSettings};
use super::{Provision, Skipping, Update};
use crate::attrs::InputDigest;
use crate::mapping::{map_object, MapContext, Mapped, Mappings};
use crate::model::{Directory, ObjectType, SourceObject};
use crate::model::{LinkIndex, LinkRef};
use crate::scope::{OutOfScope, Scoped};
use crate::summary::Problem;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The duplicate-detection key of a matching value, hashed without building lowercase copies.
/// Case-insensitive: SCIM `userName` and `displayName` are not case-exact (RFC 7643), so
/// "Alice@x" and "alice@x" would match the same target object. FNV-1a over the lowercased
/// UTF-8, a function of the value alone: links keep these keys beside their input digests,
/// so they must mean the same in the next process.
pub(crate) fn match_hash(path: &str, v: &Value) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    fn feed(h: &mut u64, bytes: &[u8]) {
        for b in bytes {
            *h = (*h ^ u64::from(*b)).wrapping_mul(PRIME);
        }
    }
    fn feed_lower(h: &mut u64, s: &str) {
        let mut buf = [0u8; 4];
        for c in s.chars().flat_map(char::to_lowercase) {
            feed(h, c.encode_utf8(&mut buf).as_bytes());
        }
    }
    let mut h = OFFSET;
    feed_lower(&mut h, path);
    // 0xff never occurs in UTF-8: the path ends here.
    feed(&mut h, &[0xff]);
    match v {
        Value::String(s) => feed_lower(&mut h, s),
        other => {
            feed(&mut h, &[0]);
            feed(&mut h, other.to_string().as_bytes());
        }
    }
    h
}

/// The duplicate-detection hashes of an object's matching values, in precedence order: what
/// an input digest keeps beside its inputs.
pub(crate) fn matching_hashes(mapped: &Mapped) -> Box<[u64]> {
    mapped
        .matching
        .iter()
        .map(|(p, v)| match_hash(p, v))
        .collect()
}

/// The input digest a create of `p` leaves in its link, when `p` carries its object's inputs
/// ([`Skipping::stamp`]): the link then holds exactly `p`'s mapped values, which is what
/// the digest vouches for.
pub(crate) fn created_digest(p: &Provision) -> Option<InputDigest> {
    p.inputs.map(|inputs| InputDigest {
        inputs,
        matching: matching_hashes(&p.mapped),
    })
}

/// Phase one: users and groups, every in-scope object mapped.
pub(crate) fn plan_objects(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
) -> Plan {
    plan_objects_skipping(dir, scoped, mappings, links, settings, &Skipping::off())
}

/// Phase one, not mapping the objects `skip` finds unchanged: the same plan as
/// [`plan_objects`], plus the digests to record (`Plan::digests`).
pub(crate) fn plan_objects_skipping(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
    skip: &Skipping,
) -> Plan {
    plan_all(dir, scoped, mappings, links, settings, skip, false)
}

/// [`plan_objects_skipping`] with the provisions left unmapped: `Plan::deferred` names them,
/// in plan order, and [`provisions`] makes their actions a chunk at a time. The mapped values
/// of an initial cycle's million objects are never all held at once (gigabytes): planning
/// keeps only the hashes of their matching values, for duplicate detection. The same plan:
/// the actions [`plan_objects_skipping`] gives are `actions` with [`provisions`] of
/// `deferred`, each type's provisions in the same order.
pub(crate) fn plan_objects_deferring(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
    skip: &Skipping,
) -> Plan {
    plan_all(dir, scoped, mappings, links, settings, skip, true)
}

/// The provision actions of `ids` (from `Plan::deferred`), in order: each object mapped again,
/// as planning mapped it. An object that no longer maps (its source object gone, a mapping
/// error, which a pure mapping of the same inputs cannot give) is left out.
pub(crate) fn provisions(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    settings: &PlanSettings<'_>,
    ids: &[(ObjectType, String)],
) -> Vec<Action> {
    ids.iter()
        .filter_map(|(ty, id)| {
            let obj = dir.objects(*ty).get(id)?;
            let mapped = map_one(*ty, id, obj, scoped, mappings, settings).ok()?;
            Some(Action::Provision(Provision {
                object_type: *ty,
                source_id: id.clone(),
                display_name: obj.display_name().to_string(),
                mapped,
                inputs: None,
            }))
        })
        .collect()
}

/// One in-scope object's mapped values.
fn map_one(
    ty: ObjectType,
    id: &str,
    obj: &SourceObject,
    scoped: &Scoped,
    mappings: &Mappings,
    settings: &PlanSettings<'_>,
) -> Result<Mapped, crate::mapping::MapObjectError> {
    let ctx = MapContext {
        soft_deleted: false,
        roles: scoped.roles.get(id).map(|r| &**r),
        env: settings.env,
    };
    map_object(obj, mappings.of(ty), &ctx)
}

fn plan_all(
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
    skip: &Skipping,
    defer: bool,
) -> Plan {
    let mut plan = Plan::default();
    let rejected: HashSet<&str> = dir
        .rejected
        .iter()
        .filter_map(|r| r.id.as_deref())
        .collect();
    for r in &dir.rejected {
        plan.problems.push(Problem {
            object_type: r.object_type.map(|t| t.as_str().to_string()),
            id: r.id.clone(),
            name: None,
            code: "InvalidSourceObject".into(),
            reason: format!("{}: {}", r.position, r.reason),
            count: 1,
        });
    }
    for ty in [ObjectType::User, ObjectType::Group] {
        plan_type(
            ty, dir, scoped, mappings, links, settings, skip, &rejected, defer, &mut plan,
        );
    }
    plan
}

#[allow(clippy::too_many_arguments)]
fn plan_type(
    ty: ObjectType,
    dir: &Directory,
    scoped: &Scoped,
    mappings: &Mappings,
    links: &LinkIndex,
    settings: &PlanSettings<'_>,
    skip: &Skipping,
    rejected: &HashSet<&str>,
    defer: bool,
    plan: &mut Plan,
) {
    let objects = dir.objects(ty);
    let type_links = links.of(ty);
    // One hash per object instead of a dozen comparisons of long ids in the B-tree.
    let link_of = type_links.lookup();
    let deprovision_allowed = dir.complete;
    // An object rejected without a readable id might be any linked object: "gone from the
    // source" can't be told apart from "unreadable", so no delete-by-absence of this type.
    let absence_is_deletion = deprovision_allowed
        && !dir
            .rejected
            .iter()
            .any(|r| r.id.is_none() && r.object_type.is_none_or(|t| t == ty));
    // A rejected group or assignment may be what put a user in scope: until it reads again,
    // "not assigned" is not known, so no disable or delete for that reason.
    let assignment_is_known = !dir
        .rejected
        .iter()
        .any(|r| r.object_type != Some(ObjectType::User));

    // Map every in-scope object first, so duplicate matching values can be found before any
    // object is provisioned on the strength of one. A linked object is diffed right away and,
    // when unchanged, only its matching values are kept: keeping every `Mapped` of a no-change
    // cycle over 100k users cost hundreds of megabytes.
    // The scope's decisions and roles by position when they were decided on these very
    // objects (always, in a cycle): a million binary searches of long ids cost a tenth of a
    // no-change cycle's planning at 1M. By id otherwise.
    let decided = scoped.of(ty).in_order_of(objects);
    let roles_in_order = match ty {
        ObjectType::User => scoped.roles.in_order_of(objects),
        ObjectType::Group => None,
    };
    let decision_at = |i: usize, id: &str| match decided {
        Some(d) => d.get(i),
        None => scoped.decision(ty, id),
    };
    let roles_at = |i: usize, id: &str| match roles_in_order {
        Some(r) => r.get(i).and_then(Option::as_ref).map(|r| &**r),
        None => scoped.roles.get(id).map(|r| &**r),
    };
    let mapped = map_all(objects, |i, id, obj| {
        if !matches!(decision_at(i, id), Some(Ok(()))) {
            return None;
        }
        let roles = roles_at(i, id);
        let link = link_of.get(id.as_str());
        // Only a linked object can be unchanged; its digest says whether mapping can be
        // skipped, or else is taken for the next cycle if the mapping finds no change.
        let inputs = link.and_then(|_| skip.inputs(ty, obj, roles));
        if let (Some(l), Some(inputs)) = (link, &inputs) {
            // The 16 bytes compared in place; the digest's hashes stay in the link.
            if l.exported().digest_is(inputs) {
                return Some(Ok(Examined {
                    wanted: Wanted::Matched(l),
                    digest: None,
                    unmapped: true,
                }));
            }
        }
        // A slim link (see `LinkIndexBuilder::slim`) cannot be diffed: the cycle takes it
        // whole from the store and plans again.
        if link.is_some_and(|l| l.is_slim()) {
            return Some(Ok(Examined {
                wanted: Wanted::Whole,
                digest: None,
                unmapped: false,
            }));
        }
        let mapped = map_one(ty, id, obj, scoped, mappings, settings).map_err(Box::new);
        Some(mapped.map(|m| {
            let wanted = Wanted::new(link, m, settings, defer);
            let digest = match (&wanted, inputs) {
                (Wanted::Unchanged { matching }, Some(inputs)) => Some(Box::new(InputDigest {
                    inputs,
                    matching: matching.clone(),
                })),
                _ => None,
            };
            Examined {
                wanted,
                digest,
                unmapped: false,
            }
        }))
    });
    // Sized once (one entry per mapped object): growing it by doubling held half as much
    // again beside it at the cycle's peak.
    let in_scope = mapped.iter().filter(|m| matches!(m, Some(Ok(_)))).count();
    let mut wanted: Vec<(&SourceObject, Wanted<'_>)> = Vec::with_capacity(in_scope);
    for (i, ((id, obj), mapped)) in objects.iter().zip(mapped).enumerate() {
        let decision = decision_at(i, id);
        match decision {
            Some(Ok(())) => match mapped {
                Some(Ok(m)) => {
                    plan.unmapped += u64::from(m.unmapped);
                    if let Some(d) = m.digest {
                        plan.digests.push((ty, id.clone(), *d));
                    }
                    wanted.push((obj, m.wanted))
                }
                failed => plan.problems.push(problem(
                    Some(ty),
                    id,
                    Some(obj.display_name()),
                    "AttributeMappingFailed",
                    match failed {
                        Some(Err(e)) => e.to_string(),
                        _ => "not mapped".into(),
                    },
                )),
            },
            Some(Err(why)) => match link_of.get(id.as_str()) {
                None => bump_skipped(plan, ty),
                Some(l) if ty == ObjectType::User && l.disabled() => plan.unchanged_users += 1,
                Some(_) if !deprovision_allowed => plan.withheld_deprovisions += 1,
                Some(_)
                    if !assignment_is_known
                        && matches!(why, OutOfScope::NotAssigned | OutOfScope::ExcludedRole(_)) =>
                {
                    plan.withheld_deprovisions += 1
                }
                Some(l) if l.is_slim() => plan.whole.push((ty, id.clone())),
                Some(l) => plan.actions.push(match ty {
                    ObjectType::User => Action::Disable(Disable {
                        source_id: id.clone(),
                        target_id: l.target_id().to_string(),
                        display_name: obj.display_name().to_string(),
                        reason: why.to_string(),
                    }),
                    ObjectType::Group => Action::Delete(Delete {
                        object_type: ty,
                        source_id: id.clone(),
                        target_id: l.target_id().to_string(),
                        display_name: obj.display_name().to_string(),
                        reason: why.to_string(),
                    }),
                }),
            },
            None => bump_skipped(plan, ty),
        }
    }

    // Duplicate matching values: linked objects keep their target object; unlinked objects
    // sharing a value with any other in-scope object are skipped, since either could match.
    // Values are compared by a 64-bit hash of (path, value) ignoring case; only values some
    // unlinked object has are indexed, so a cycle without new objects indexes nothing.
    let wanted_by_unlinked: HashSet<u64> = wanted
        .iter()
        .filter(|(_, w)| matches!(w, Wanted::Unlinked { .. }))
        .flat_map(|(_, w)| w.matching_hashes())
        .collect();
    let mut by_value: HashMap<u64, Vec<&str>> = HashMap::new();
    if !wanted_by_unlinked.is_empty() {
        for (obj, w) in &wanted {
            for h in w.matching_hashes() {
                if wanted_by_unlinked.contains(&h) {
                    by_value.entry(h).or_default().push(&obj.id);
                }
            }
        }
    }

    for (obj, w) in wanted {
        let id = &obj.id;
        match w {
            Wanted::Unchanged { .. } | Wanted::Matched(_) => bump_unchanged(plan, ty),
            Wanted::Whole => plan.whole.push((ty, id.clone())),
            Wanted::Changed(c) => {
                let Changed {
                    link,
                    changes,
                    mapped,
                } = *c;
                plan.actions.push(Action::Update(Update {
                    object_type: ty,
                    source_id: id.clone(),
                    target_id: link.target_id().to_string(),
                    display_name: obj.display_name().to_string(),
                    changes,
                    matching: mapped.matching.first().cloned(),
                    mapped,
                    digest: super::DigestAfter::Drop,
                }))
            }
            Wanted::Unlinked { matching, mapped } => {
                if matching.is_empty() {
                    plan.problems.push(problem(
                        Some(ty),
                        id,
                        Some(obj.display_name()),
                        "MissingMatchingValue",
                        "no value for any matching attribute".into(),
                    ));
                    continue;
                }
                let clash = matching.iter().enumerate().find_map(|(i, h)| {
                    let others: Vec<&str> = by_value
                        .get(h)
                        .map(|ids| ids.iter().copied().filter(|o| o != id).collect())
                        .unwrap_or_default();
                    (!others.is_empty()).then(|| (i, crate::util::text::bounded_list(&others)))
                });
                if let Some((i, others)) = clash {
                    // The value itself, for the message: a deferred object is mapped again
                    // (rare: only objects that clash).
                    let again;
                    let values = match &mapped {
                        Some(m) => &m.matching,
                        None => {
                            again = map_one(ty, id, obj, scoped, mappings, settings)
                                .map(|m| m.matching)
                                .unwrap_or_default();
                            &again
                        }
                    };
                    let (path, v) = values
                        .get(i)
                        .map(|(p, v)| (p.clone(), v.clone()))
                        .unwrap_or_default();
                    plan.problems.push(problem(
                        Some(ty),
                        id,
                        Some(obj.display_name()),
                        super::DUPLICATE,
                        format!("{path} {v} is also the value of {others}"),
                    ));
                    continue;
                }
                match mapped {
                    Some(mapped) => plan.actions.push(Action::Provision(Provision {
                        object_type: ty,
                        source_id: id.clone(),
                        display_name: obj.display_name().to_string(),
                        mapped: *mapped,
                        inputs: None,
                    })),
                    None => plan.deferred.push((ty, id.clone())),
                }
            }
        }
    }

    // Links whose source object is gone: deleted in the source. A rejected object is present
    // but unreadable, never gone.
    // Both maps are in id order: one merge instead of a lookup per link.
    let mut present = objects.keys().peekable();
    for (id, link) in type_links.iter() {
        while present.next_if(|o| o.as_str() < id).is_some() {}
        if present.peek().map(|o| o.as_str()) == Some(id) || rejected.contains(id) {
            continue;
        }
        if !absence_is_deletion {
            plan.withheld_deprovisions += 1;
            continue;
        }
        if link.is_slim() {
            plan.whole.push((ty, id.to_string()));
            continue;
        }
        plan.actions.push(Action::Delete(Delete {
            object_type: ty,
            source_id: id.to_string(),
            target_id: link.target_id().to_string(),
            display_name: link.display_name().to_string(),
            reason: "deleted in the source".into(),
        }));
    }
}

/// What the mapping of one in-scope object gave. One is held for every object of the
/// directory while planning, twice over for some of them as the planning threads hand
/// theirs over: kept small (48 bytes; the rare parts boxed), as at a million objects each
/// word of it weighs 12 MB.
struct Examined<'l> {
    wanted: Wanted<'l>,
    /// Unchanged, with a digest the link lacks: to record.
    digest: Option<Box<InputDigest>>,
    /// Found unchanged by its digest, not mapped.
    unmapped: bool,
}

/// An in-scope object, mapped, and what it needs.
enum Wanted<'l> {
    /// Linked and up to date: only the matching values are kept (for duplicate detection).
    /// Linked and up to date: only the hashes of its matching values are kept (for
    /// duplicate detection), not the values: 100k of them cost about 20 MB.
    Unchanged { matching: Box<[u64]> },
    /// Linked and found unchanged by its input digest, without mapping: the hashes of its
    /// matching values are the digest's, read from the link when needed (a cycle without
    /// new objects never needs them; a million boxes of them weighed about 40 MB).
    Matched(LinkRef<'l>),
    /// Linked, with attribute changes to export.
    Changed(Box<Changed<'l>>),
    /// Not linked yet: to match, then adopt or create. The hashes of its matching values,
    /// in precedence order; its mapped values unless its provision is deferred.
    Unlinked {
        matching: Box<[u64]>,
        mapped: Option<Box<Mapped>>,
    },
    /// Linked, its digest not matching, and its link slim: to take whole and plan again.
    Whole,
}

impl<'l> Wanted<'l> {
    fn new(
        link: Option<LinkRef<'l>>,
        mapped: Mapped,
        settings: &PlanSettings<'_>,
        defer: bool,
    ) -> Self {
        let Some(link) = link else {
            return Wanted::Unlinked {
                matching: matching_hashes(&mapped),
                mapped: (!defer).then(|| Box::new(mapped)),
            };
        };
        let changes = diff(link, &mapped, settings.null_values);
        if changes.is_empty() {
            Wanted::Unchanged {
                matching: matching_hashes(&mapped),
            }
        } else {
            Wanted::Changed(Box::new(Changed {
                link,
                changes,
                mapped,
            }))
        }
    }

    fn matching_hashes(&self) -> Vec<u64> {
        match self {
            Wanted::Unchanged { matching } | Wanted::Unlinked { matching, .. } => matching.to_vec(),
            Wanted::Whole => Vec::new(),
            Wanted::Matched(l) => l
                .exported()
                .digest()
                .map(|d| d.matching.to_vec())
                .unwrap_or_default(),
            Wanted::Changed(c) => matching_hashes(&c.mapped).into_vec(),
        }
    }
}

/// A linked object whose mapped values differ from its link's exported ones.
struct Changed<'l> {
    link: LinkRef<'l>,
    changes: Vec<Change>,
    mapped: Mapped,
}

fn bump_skipped(plan: &mut Plan, ty: ObjectType) {
    match ty {
        ObjectType::User => plan.skipped_users += 1,
        ObjectType::Group => plan.skipped_groups += 1,
    }
}

fn bump_unchanged(plan: &mut Plan, ty: ObjectType) {
    match ty {
        ObjectType::User => plan.unchanged_users += 1,
        ObjectType::Group => plan.unchanged_groups += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Planning holds one of these per object (see [`Examined`]).
    #[test]
    fn what_planning_holds_per_object_stays_small() {
        type PerObject<'l> = Option<Result<Examined<'l>, Box<crate::mapping::MapObjectError>>>;
        assert!(std::mem::size_of::<Wanted<'_>>() <= 32);
        assert!(std::mem::size_of::<PerObject<'_>>() <= 48);
    }
}
