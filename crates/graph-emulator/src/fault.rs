//! Fault injection, with the same rules as provisiond's SCIM sandbox (which the tests know),
//! kept here so that the emulator needs nothing from provisiond.

use std::sync::{Mutex, MutexGuard};

/// A fault to inject into matching requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// HTTP method to match (any case); `None` matches every method.
    pub method: Option<String>,
    /// Path prefix to match, e.g. `/v1.0/users/delta`; `None` matches every path.
    pub path_prefix: Option<String>,
    /// Let the first `skip` matching requests through untouched.
    pub skip: u64,
    /// Affect only the next `times` matching requests; `None` = every one.
    pub times: Option<u64>,
    /// What to do.
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule applying `action` to every request.
    pub fn new(action: FaultAction) -> FaultRule {
        FaultRule {
            method: None,
            path_prefix: None,
            skip: 0,
            times: None,
            action,
        }
    }

    /// Restricts the rule to one method.
    pub fn method(mut self, method: &str) -> FaultRule {
        self.method = Some(method.to_string());
        self
    }

    /// Restricts the rule to paths starting with `prefix`.
    pub fn path_prefix(mut self, prefix: &str) -> FaultRule {
        self.path_prefix = Some(prefix.to_string());
        self
    }

    /// Lets the first `n` matching requests through.
    pub fn skip(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }

    /// Affects only `n` matching requests.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }

    fn applies_to(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_prefix.as_deref().is_none_or(|p| {
                path.get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p))
            })
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer with this status without handling the request.
    Status {
        /// HTTP status code.
        status: u16,
        /// `Retry-After` header: seconds or an HTTP date.
        retry_after: Option<String>,
        /// A raw body to send instead of a Graph error (may be anything, even not JSON).
        body: Option<String>,
    },
    /// Wait, then handle the request normally.
    Delay {
        /// Milliseconds to wait.
        delay_ms: u64,
    },
    /// Close the connection without answering.
    Drop {
        /// Before or after handling the request.
        drop: DropWhen,
    },
    /// Handle the request, then send only the first half of the JSON body.
    Truncate {
        /// Must be `true`.
        truncate: bool,
    },
}

/// When a `drop` fault closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropWhen {
    /// Without handling the request.
    Before,
    /// After handling it: the "lost response".
    After,
}

/// A rule with its counters: matching requests seen, and faults applied.
pub(crate) struct ActiveFault {
    rule: FaultRule,
    seen: u64,
    applied: u64,
}

pub(crate) fn active(rules: Vec<FaultRule>) -> Vec<ActiveFault> {
    rules
        .into_iter()
        .map(|rule| ActiveFault {
            rule,
            seen: 0,
            applied: 0,
        })
        .collect()
}

/// The action of the first rule firing for this request, advancing every matching rule's
/// counters.
pub(crate) fn fault_for(
    faults: &Mutex<Vec<ActiveFault>>,
    method: &str,
    path: &str,
) -> Option<FaultAction> {
    let mut faults = lock(faults);
    let mut chosen = None;
    for f in faults.iter_mut() {
        if !f.rule.applies_to(method, path) {
            continue;
        }
        f.seen += 1;
        let fires = f.seen > f.rule.skip && f.rule.times.is_none_or(|t| f.applied < t);
        if fires && chosen.is_none() {
            f.applied += 1;
            chosen = Some(f.rule.action.clone());
        }
    }
    chosen
}

/// Locks ignoring poisoning: a panicking test thread must not take the emulator down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
