//! The outcome of one cycle, as `sync --json`, `status` and the state store show it.

use serde::{Deserialize, Serialize};

/// Per-type counts of what a cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCounts {
    pub created: u64,
    pub updated: u64,
    pub disabled: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCounts {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipCounts {
    pub added: u64,
    pub removed: u64,
}

/// HTTP requests sent to the target, retries included, by method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// GET requests.
    #[serde(rename = "GET")]
    pub get: u64,
    /// POST requests.
    #[serde(rename = "POST")]
    pub post: u64,
    /// PUT requests.
    #[serde(rename = "PUT")]
    pub put: u64,
    /// PATCH requests.
    #[serde(rename = "PATCH")]
    pub patch: u64,
    /// DELETE requests.
    #[serde(rename = "DELETE")]
    pub delete: u64,
}

impl RequestCounts {
    /// Requests that change the target.
    pub fn writes(&self) -> u64 {
        self.post + self.put + self.patch + self.delete
    }
    /// All requests.
    pub fn total(&self) -> u64 {
        self.get + self.writes()
    }
    /// The requests counted since `earlier` (counters only grow).
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get.saturating_sub(earlier.get),
            post: self.post.saturating_sub(earlier.post),
            put: self.put.saturating_sub(earlier.put),
            patch: self.patch.saturating_sub(earlier.patch),
            delete: self.delete.saturating_sub(earlier.delete),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CycleKind {
    Initial,
    Incremental,
}

impl CycleKind {
    /// The name as the JSON documents and the config spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CycleKind::Initial => "initial",
            CycleKind::Incremental => "incremental",
        }
    }
}

impl std::fmt::Display for CycleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleStatus {
    Succeeded,
    /// The cycle ran, but some objects failed or were skipped as bad input.
    EntryLevelErrors,
    /// The cycle could not run (source unreadable, target unreachable, state store error).
    Failed,
    /// A stop (SIGTERM, Ctrl-C) ended the cycle before it finished: not a failure. What it
    /// sent is recorded, the watermark stays, and the next cycle carries on.
    Interrupted,
}

/// One object that was skipped or failed, with why: what an admin reads first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub object_type: Option<String>,
    pub id: Option<String>,
    pub name: Option<String>,
    /// Entra-style error code (`EntryConflict`, `DuplicateTargetEntries`, `InvalidSourceObject`…).
    pub code: String,
    pub reason: String,
    /// How many objects had this very problem (same code and reason); 1 is left out of JSON.
    /// Above 1, `id` and `name` are the first such object's.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Lists identical problems (same code and reason) once, with their count, in the order each
/// first appeared: an unreachable target or one bad answer repeated for every object makes
/// one line, not thousands.
pub(crate) fn dedup_problems(problems: Vec<Problem>) -> Vec<Problem> {
    let mut index: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    let mut out: Vec<Problem> = Vec::new();
    for p in problems {
        match index.get(&(p.code.clone(), p.reason.clone())) {
            Some(&i) => out[i].count += p.count,
            None => {
                index.insert((p.code.clone(), p.reason.clone()), out.len());
                out.push(p);
            }
        }
    }
    out
}

/// The summary of one cycle. The JSON shape is the `sync --json` interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleSummary {
    pub job: String,
    pub cycle_id: String,
    pub kind: CycleKind,
    pub status: CycleStatus,
    pub dry_run: bool,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: u64,
    pub users: UserCounts,
    pub groups: GroupCounts,
    pub memberships: MembershipCounts,
    pub requests: RequestCounts,
    /// False when the source read was incomplete: no disable or delete was done.
    pub source_complete: bool,
    /// Disables and deletes not done because the source read was incomplete or some source
    /// objects could not be read.
    #[serde(default)]
    pub withheld_deprovisions: u64,
    /// Why the cycle failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first problems (capped, so a summary stays small); `problem_count` has them all.
    #[serde(default)]
    pub problems: Vec<Problem>,
    #[serde(default)]
    pub problem_count: u64,
    /// Failed actions this cycle put in escrow (kept and retried by later cycles).
    #[serde(default)]
    pub escrowed: u64,
    /// Escrowed actions this cycle retried (due by the schedule, or changed in the source).
    #[serde(default)]
    pub escrow_retried: u64,
    /// Disables and deletes held back by the deletion threshold this cycle (`stagedDelete`).
    #[serde(default)]
    pub staged_deletes: u64,
    /// The job's quarantine reason after this cycle (`TooManyDeletes`, …), or null.
    #[serde(default)]
    pub quarantine: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(id: &str, code: &str, reason: &str) -> Problem {
        Problem {
            object_type: Some("user".into()),
            id: Some(id.into()),
            name: None,
            code: code.into(),
            reason: reason.into(),
            count: 1,
        }
    }

    #[test]
    fn identical_problems_are_listed_once_with_a_count() {
        let refused = "GET /Users: connection failed: refused";
        let problems = vec![
            problem("a", "ConnectionFailed", refused),
            problem("b", "InvalidSourceObject", "no id"),
            problem("c", "ConnectionFailed", refused),
            problem(
                "d",
                "ConnectionFailed",
                "GET /Groups: connection failed: refused",
            ),
            problem("e", "ConnectionFailed", refused),
        ];
        let out = dedup_problems(problems);
        let seen: Vec<(&str, &str, u64)> = out
            .iter()
            .map(|p| (p.id.as_deref().unwrap(), p.code.as_str(), p.count))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a", "ConnectionFailed", 3),
                ("b", "InvalidSourceObject", 1),
                ("d", "ConnectionFailed", 1),
            ]
        );
    }

    #[test]
    fn a_count_of_one_is_left_out_of_json_and_defaults_when_read() {
        let p = problem("a", "X", "y");
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("count").is_none(), "{json}");
        let back: Problem = serde_json::from_value(json).unwrap();
        assert_eq!(back.count, 1);
        let many = Problem { count: 3, ..p };
        let json = serde_json::to_value(&many).unwrap();
        assert_eq!(json["count"], 3);
    }
}
