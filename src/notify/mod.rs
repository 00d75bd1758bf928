//! Notification emails (Entra's "Notification Email"): a job's quarantine entered, its reason
//! changed, lifted ("resolved") or the job disabled after 28 days, and digests of new
//! entry-level failures.
//!
//! Pure parts: `notice` (which notices a cycle's outcome gives) and `render` (subject, text
//! and HTML). Imperative parts: [`after_cycle`] queues the notices in the store's outbox (it
//! never fails a cycle: problems are logged), `send` delivers the outbox with backoff, from
//! the daemon's sender task or once after a one-shot `sync`. `config` checks `[smtp]` and a
//! job's keys.

pub(crate) mod config;
mod notice;
mod render;
mod send;

pub(crate) use config::{JobNotify, SmtpSettings};
pub(crate) use send::{run_sender, Mailer};

use crate::state::{JobMeta, OutboxMessage, StateStore, NOTIFY_RECORD_VERSION, OUTBOX_CAPACITY};
use crate::summary::CycleSummary;
use chrono::{DateTime, Utc};
use notice::Event;

/// The host name, for the signature and `Message-ID`s.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
        })
        .unwrap_or_else(|| "localhost".to_string())
}

/// What a notice needs of its job.
pub(crate) struct JobRef<'a> {
    pub name: &'a str,
    pub notify: &'a JobNotify,
    pub target_url: &'a url::Url,
}

/// The outbox record of `event`, rendered, due now.
fn message(
    job: &JobRef<'_>,
    event: &Event,
    summary: Option<&CycleSummary>,
    now: DateTime<Utc>,
) -> OutboxMessage {
    let host = host_name();
    let r = render::render(
        event,
        &render::Context {
            job: job.name,
            at: now,
            target_url: job.target_url,
            summary,
            host: &host,
        },
    );
    OutboxMessage {
        version: NOTIFY_RECORD_VERSION,
        id: 0,
        job: job.name.to_string(),
        to: job.notify.to.clone(),
        subject: r.subject,
        text: r.text,
        html: r.html,
        created: now,
        message_id: format!("<{}@{host}>", uuid::Uuid::new_v4()),
        attempts: 0,
        next_attempt: now,
        last_error: None,
    }
}

/// Queue the notices of a cycle that turned the job's record from `before` into the one now
/// stored, with `summary` its outcome. Called where a cycle's outcome is committed; never
/// fails the cycle (a store error is logged and the notices of this cycle are lost).
pub(crate) fn after_cycle(
    store: &dyn StateStore,
    job: &JobRef<'_>,
    before: &JobMeta,
    summary: &CycleSummary,
    now: DateTime<Utc>,
) {
    if !job.notify.on_failure || summary.dry_run {
        return;
    }
    if let Err(e) = queue_notices(store, job, before, summary, now) {
        tracing::warn!(job = %job.name, error = %e, "cannot queue the notification emails of this cycle");
    }
}

fn queue_notices(
    store: &dyn StateStore,
    job: &JobRef<'_>,
    before: &JobMeta,
    summary: &CycleSummary,
    now: DateTime<Utc>,
) -> Result<(), crate::state::StateError> {
    let after = store.meta(job.name)?;
    let mut events = notice::quarantine_events(before, &after);
    let reported = store.reported_failures(job.name)?;
    let escrows = store.escrows(job.name)?;
    let mut problems = summary.problems.clone();
    // A cycle that failed as a whole (the source unreadable, the store, a stop of the export)
    // is a failure too, even with no object to name: reported once while it lasts.
    if summary.status == crate::summary::CycleStatus::Failed {
        if let Some(error) = &summary.error {
            problems.push(crate::summary::Problem {
                object_type: None,
                id: None,
                name: None,
                code: CYCLE_FAILED.into(),
                reason: error.clone(),
                count: 1,
            });
        }
    }
    let failures = notice::cycle_failures(&problems, &escrows, summary.started_at);
    let (digest, next) = notice::failure_digest(
        &failures,
        &reported,
        &escrows,
        now,
        job.notify.digest_interval,
    );
    // A quarantine or disabling notice lists the cycle's first failures itself: no digest
    // beside it (the failures count as reported).
    if !events.iter().any(Event::lists_failures) {
        events.extend(digest);
    }
    for event in &events {
        let (id, dropped) =
            store.push_outbox(message(job, event, Some(summary), now), OUTBOX_CAPACITY)?;
        tracing::info!(job = %job.name, id, event = event.kind(), "notification email queued");
        if dropped > 0 {
            tracing::warn!(job = %job.name, dropped, capacity = OUTBOX_CAPACITY, "notification outbox full: the oldest messages were dropped");
        }
    }
    if next != reported {
        store.put_reported_failures(job.name, &next)?;
    }
    Ok(())
}

/// The error code of a cycle that failed as a whole, in the failure digest.
pub(crate) const CYCLE_FAILED: &str = "CycleFailed";

/// The test message of `provisiond test-email`, not queued: sent at once by the command.
pub(crate) fn test_message(job: &JobRef<'_>, now: DateTime<Utc>) -> OutboxMessage {
    message(job, &Event::Test, None, now)
}

/// How long a one-shot command spends delivering the outbox after its cycles.
pub(crate) const ONE_SHOT_DELIVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Deliver every queued message once, within `limit` (a one-shot `sync`: what is left waits
/// for the next run or the daemon). Never fails: problems are logged.
pub(crate) async fn deliver_once(
    smtp: Option<&SmtpSettings>,
    store: &dyn StateStore,
    limit: std::time::Duration,
) {
    let Some(smtp) = smtp else {
        return;
    };
    let mailer = match Mailer::new(smtp) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up the SMTP transport");
            return;
        }
    };
    match tokio::time::timeout(limit, send::deliver(&mailer, store, Utc::now(), true)).await {
        Ok(Ok(round)) => {
            if round.waiting > 0 {
                tracing::warn!(
                    sent = round.sent,
                    waiting = round.waiting,
                    "notification emails left in the outbox for the next run"
                );
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read or update the notification outbox"),
        Err(_) => tracing::warn!(
            limit_s = limit.as_secs(),
            "notification emails not all delivered in time: the rest wait for the next run"
        ),
    }
}
