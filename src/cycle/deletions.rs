//! Accidental-deletion prevention (Entra's "Prevent accidental deletions", on by default
//! here): when the disables and deletes a cycle plans reach the threshold, none is sent; they
//! are staged until an admin allows them (`provisiond allow-deletes`), and then only those the
//! next cycle still plans are sent.

use crate::model::ObjectType;
use crate::plan::Action;
use crate::state::{StagedAction, StagedDelete};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// The deletion threshold of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteThreshold {
    /// Hold every disable and delete of a cycle that plans at least this many (500 lets 499
    /// pass, as in Entra); 0 turns the count off.
    pub count: u64,
    /// Also hold them when they are at least this percentage of the objects provisioned for
    /// the job (its links).
    pub percent: Option<f64>,
}

impl Default for DeleteThreshold {
    fn default() -> Self {
        DeleteThreshold {
            count: 500,
            percent: None,
        }
    }
}

impl DeleteThreshold {
    /// Whether `planned` disables and deletes, out of `linked` provisioned objects, reach it.
    pub fn reached(&self, planned: u64, linked: u64) -> bool {
        if planned == 0 {
            return false;
        }
        let by_count = self.count > 0 && planned >= self.count;
        let by_percent = self
            .percent
            .is_some_and(|p| linked > 0 && planned as f64 * 100.0 >= p * linked as f64);
        by_count || by_percent
    }

    /// The threshold in words, for problems and the quarantine record.
    pub fn describe(&self) -> String {
        match (self.count, self.percent) {
            (0, Some(p)) => format!("{p}% of the provisioned objects"),
            (n, Some(p)) => format!("{n}, or {p}% of the provisioned objects"),
            (n, None) => n.to_string(),
        }
    }
}

/// What an admin's allowance is matched on: the object and the action. A staged disable does
/// not allow a delete of the same user (deleted in the source since): that is judged again.
fn allowance(a: &Action) -> Option<(ObjectType, &str, StagedAction)> {
    match a {
        Action::Disable(d) => Some((
            ObjectType::User,
            d.source_id.as_str(),
            StagedAction::Disable,
        )),
        Action::Delete(d) => Some((d.object_type, d.source_id.as_str(), StagedAction::Delete)),
        _ => None,
    }
}

fn staged_of(a: &Action, at: DateTime<Utc>) -> Option<StagedDelete> {
    let (object_type, source_id, target_id, display_name, action) = match a {
        Action::Disable(d) => (
            ObjectType::User,
            &d.source_id,
            &d.target_id,
            &d.display_name,
            StagedAction::Disable,
        ),
        Action::Delete(d) => (
            d.object_type,
            &d.source_id,
            &d.target_id,
            &d.display_name,
            StagedAction::Delete,
        ),
        _ => return None,
    };
    Some(StagedDelete {
        object_type,
        source_id: source_id.clone(),
        target_id: target_id.clone(),
        display_name: display_name.clone(),
        action,
        staged_at: at,
    })
}

/// What the threshold did to a cycle's plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Held {
    /// The staged deletions after this cycle: the ones it held (empty when none).
    pub staged: Vec<StagedDelete>,
    /// Staged deletions an admin allowed that this cycle still plans: sent.
    pub released: u64,
}

/// Applies the threshold to `actions`: takes out and returns the disables and deletes to hold.
/// With `allow`, the ones in `staged_before` that are still planned are sent and only the
/// others are judged.
pub(crate) fn hold(
    actions: &mut Vec<Action>,
    staged_before: &[StagedDelete],
    allow: bool,
    linked: u64,
    threshold: &DeleteThreshold,
    now: DateTime<Utc>,
) -> Held {
    let allowed: HashSet<(ObjectType, &str, StagedAction)> = if allow {
        staged_before
            .iter()
            .map(|s| (s.object_type, s.source_id.as_str(), s.action))
            .collect()
    } else {
        HashSet::new()
    };
    let mut released = 0;
    let mut judged = 0;
    for a in actions.iter() {
        if let Some(k) = allowance(a) {
            if allowed.contains(&k) {
                released += 1;
            } else {
                judged += 1;
            }
        }
    }
    if !threshold.reached(judged, linked) {
        return Held {
            staged: Vec::new(),
            released,
        };
    }
    // Keep the time each was first staged: a re-held set is the same set.
    let since: HashMap<(ObjectType, &str), DateTime<Utc>> = staged_before
        .iter()
        .map(|s| ((s.object_type, s.source_id.as_str()), s.staged_at))
        .collect();
    let mut staged = Vec::new();
    let mut kept = Vec::with_capacity(actions.len());
    for a in actions.drain(..) {
        let held = allowance(&a)
            .filter(|k| !allowed.contains(k))
            .and_then(|(t, id, _)| staged_of(&a, since.get(&(t, id)).copied().unwrap_or(now)));
        match held {
            Some(s) => staged.push(s),
            None => kept.push(a),
        }
    }
    *actions = kept;
    Held { staged, released }
}

/// Whether two staged sets hold the same actions on the same objects.
pub(crate) fn same_set(a: &[StagedDelete], b: &[StagedDelete]) -> bool {
    let keys = |s: &[StagedDelete]| -> HashSet<(ObjectType, String, StagedAction)> {
        s.iter()
            .map(|d| (d.object_type, d.source_id.clone(), d.action))
            .collect()
    };
    a.len() == b.len() && keys(a) == keys(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_reached_at_its_value() {
        let t = DeleteThreshold::default();
        assert!(!t.reached(499, 10_000));
        assert!(t.reached(500, 10_000));
        let off = DeleteThreshold {
            count: 0,
            percent: None,
        };
        assert!(!off.reached(1_000_000, 1));
        let pct = DeleteThreshold {
            count: 0,
            percent: Some(30.0),
        };
        assert!(!pct.reached(2, 10));
        assert!(pct.reached(3, 10));
        assert!(!pct.reached(0, 10));
    }
}
