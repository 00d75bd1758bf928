//! The daemon's Prometheus metrics, for the admin endpoint's `GET /metrics`.
//!
//! What only a cycle's end can tell (cycles, their duration, objects, the source read) is
//! counted here as each daemon cycle ends ([`Metrics::record`]). Everything else is read at
//! scrape time from where it already lives: escrows, quarantine, staged deletes and the last
//! success from the jobs' status (the store), requests and retries from each job's SCIM client.
//! Each scrape therefore builds a fresh registry: the kept families are registered by clone
//! (they share their values), the derived ones are made for it.

use super::jobs::{Daemon, JobStatus};
use crate::cycle::CycleReport;
use crate::state::QuarantineReason;
use crate::summary::CycleStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A metric's labels, in the order they are written.
type Labels = Vec<(&'static str, String)>;
/// A gauge holding a float (seconds, timestamps).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every quarantine reason, for `provisiond_quarantined{reason}`: each is written, 0 or 1, so
/// that an alert on `== 1` never meets a missing series.
const QUARANTINE_REASONS: [QuarantineReason; 5] = [
    QuarantineReason::EncounteredQuarantineException,
    QuarantineReason::EncounteredEscrowProportionThreshold,
    QuarantineReason::EncounteredBaseEscrowThreshold,
    QuarantineReason::EncounteredTotalEscrowThreshold,
    QuarantineReason::TooManyDeletes,
];

/// The content type of [`Metrics::render`]'s text: the OpenMetrics text format, which
/// Prometheus reads.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Cycle durations from 0.1 s to about 1.8 h (0.1 × 4⁸ s).
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 4.0, 9))
}

/// The metrics kept across scrapes.
pub(crate) struct Metrics {
    cycles: Family<Labels, Counter>,
    cycle_duration: Family<Labels, Histogram, fn() -> Histogram>,
    objects: Family<Labels, Counter>,
    source_read: Family<Labels, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            cycles: Family::default(),
            cycle_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            objects: Family::default(),
            source_read: Family::default(),
        }
    }
}

fn job(name: &str) -> Labels {
    vec![("job", name.to_string())]
}

fn with(name: &str, more: &[(&'static str, &str)]) -> Labels {
    let mut l = job(name);
    l.extend(more.iter().map(|&(k, v)| (k, v.to_string())));
    l
}

impl Metrics {
    /// Count a cycle the daemon ran. Dry runs change nothing, so they are not counted.
    pub(crate) fn record(&self, report: &CycleReport) {
        let s = &report.summary;
        if s.dry_run {
            return;
        }
        let kind = s.kind.as_str();
        let status = match s.status {
            CycleStatus::Succeeded => "succeeded",
            CycleStatus::EntryLevelErrors => "entry_level_errors",
            CycleStatus::Failed => "failed",
            CycleStatus::Interrupted => "interrupted",
        };
        self.cycles
            .get_or_create(&with(&s.job, &[("kind", kind), ("status", status)]))
            .inc();
        self.cycle_duration
            .get_or_create(&job(&s.job))
            .observe(s.duration_ms as f64 / 1000.0);
        // The summary's counts as (type, action, result): successful writes by their action;
        // unchanged, skipped and failed objects with no single action to name.
        let u = &s.users;
        let g = &s.groups;
        let m = &s.memberships;
        let counts: [(&str, &str, &str, u64); 16] = [
            ("user", "create", "success", u.created),
            ("user", "update", "success", u.updated),
            ("user", "disable", "success", u.disabled),
            ("user", "delete", "success", u.deleted),
            ("user", "none", "unchanged", u.unchanged),
            ("user", "none", "skipped", u.skipped),
            ("user", "any", "failed", u.failed),
            ("group", "create", "success", g.created),
            ("group", "update", "success", g.updated),
            ("group", "delete", "success", g.deleted),
            ("group", "none", "unchanged", g.unchanged),
            ("group", "none", "skipped", g.skipped),
            ("group", "any", "failed", g.failed),
            ("membership", "add", "success", m.added),
            ("membership", "remove", "success", m.removed),
            ("membership", "any", "failed", 0),
        ];
        for (ty, action, result, n) in counts {
            // Written from the first cycle on, even at 0, so rates have a starting point; the
            // membership failures are part of the groups' count, so that series stays 0.
            self.objects
                .get_or_create(&with(
                    &s.job,
                    &[("type", ty), ("action", action), ("result", result)],
                ))
                .inc_by(n);
        }
        if let Some(d) = report.source_read {
            self.source_read
                .get_or_create(&job(&s.job))
                .set(d.as_secs_f64());
        }
    }

    /// The metrics in the OpenMetrics text format, for a daemon whose jobs have `statuses`.
    pub(crate) fn render(
        &self,
        daemon: &Daemon,
        statuses: &[JobStatus],
    ) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("provisiond");
        registry.register(
            "cycles",
            "Cycles the daemon ran, by kind and status",
            self.cycles.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "How long each cycle took",
            self.cycle_duration.clone(),
        );
        registry.register(
            "objects",
            "Users, groups and memberships by what a cycle did with them",
            self.objects.clone(),
        );
        registry.register(
            "source_read_seconds",
            "How long the last cycle took to read the source",
            self.source_read.clone(),
        );

        let requests = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        for j in &daemon.jobs() {
            let name = &j.config.name;
            for (method, code, n) in j.client.response_counts() {
                // 0 is "no response": a refused connection, a timeout.
                let code = if code == 0 {
                    "none".to_string()
                } else {
                    code.to_string()
                };
                requests
                    .get_or_create(&with(name, &[("method", method), ("code", &code)]))
                    .inc_by(n);
            }
            for (reason, n) in j.client.retry_counts() {
                retries
                    .get_or_create(&with(name, &[("reason", reason.as_str())]))
                    .inc_by(n);
            }
        }
        registry.register(
            "requests",
            "SCIM requests sent to the target, retries included, by method and HTTP status (none: no response)",
            requests,
        );
        registry.register("retries", "SCIM requests sent again, by reason", retries);

        let escrows = Family::<Labels, Gauge>::default();
        let quarantined = Family::<Labels, Gauge>::default();
        let staged = Family::<Labels, Gauge>::default();
        let last_success = Family::<Labels, FloatGauge>::default();
        for s in statuses {
            escrows
                .get_or_create(&job(&s.job))
                .set(i64::try_from(s.escrows.total).unwrap_or(i64::MAX));
            let current = s.quarantine.as_ref().map(|q| q.reason);
            for reason in QUARANTINE_REASONS {
                quarantined
                    .get_or_create(&with(&s.job, &[("reason", reason.as_str())]))
                    .set(i64::from(current == Some(reason)));
            }
            staged
                .get_or_create(&job(&s.job))
                .set(i64::try_from(s.staged_deletes).unwrap_or(i64::MAX));
            if let Some(t) = s.last_success {
                last_success
                    .get_or_create(&job(&s.job))
                    .set(t.timestamp_millis() as f64 / 1000.0);
            }
        }
        registry.register(
            "escrows",
            "Failed actions kept for retry by later cycles",
            escrows,
        );
        registry.register(
            "quarantined",
            "1 when the job is quarantined for this reason, else 0",
            quarantined,
        );
        registry.register(
            "staged_deletes",
            "Disables and deletes held back by the deletion threshold",
            staged,
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When the job's last successful cycle began (Unix time)",
            last_success,
        );

        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        registry.register(
            "build_info",
            "The running provisiond's version (always 1)",
            build,
        );

        let mut out = String::new();
        encode(&mut out, &registry)?;
        Ok(out)
    }
}
