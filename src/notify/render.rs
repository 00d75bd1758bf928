//! A notice in words: the subject, a plain-text body and an HTML body with the same content.
//! Pure. Both bodies are made from one [`Doc`], so they cannot say different things; names
//! from the directory or the target are cut short, their control characters replaced, and
//! HTML-escaped in the HTML part (a user called `<script>` is text, not markup).

use super::notice::Event;
use crate::summary::{CycleSummary, Problem};
use crate::util::text::bounded_text;
use chrono::{DateTime, Utc};

/// How many of a cycle's problems a quarantine notice lists.
const QUARANTINE_FAILURES: usize = 10;

/// What a notice is about, besides the event.
pub(crate) struct Context<'a> {
    pub job: &'a str,
    /// When the event happened.
    pub at: DateTime<Utc>,
    /// The target's URL (never with credentials: see [`display_url`]).
    pub target_url: &'a url::Url,
    /// The cycle that gave the event, if any.
    pub summary: Option<&'a CycleSummary>,
    /// The host provisiond runs on, for the signature.
    pub host: &'a str,
}

/// A rendered notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The content of a notice, before it is written as text or HTML.
struct Doc {
    subject: String,
    /// What happened, in words (one paragraph).
    what: String,
    /// Label and value lines.
    facts: Vec<(&'static str, String)>,
    /// The failures listed, each a line.
    failures: Vec<String>,
    /// "… and N more", when some are not listed.
    more: Option<String>,
    /// Commands to look at the job.
    look: Vec<String>,
    /// Commands to act on it.
    act: Vec<String>,
}

/// A URL as a notice shows it: scheme, host, port and path only (no userinfo, no query, where
/// a misplaced token could hide).
pub(crate) fn display_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Text from outside (a directory name, a target's reason) made safe to show: control
/// characters (line breaks that would fake lines of the message included) replaced, cut.
fn clean(text: &str, max: usize) -> String {
    let t: String = text
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    bounded_text(&t, max)
}

/// HTML-escape.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One failure as a line: object, code, reason.
fn failure_line(p: &Problem) -> String {
    let what = match (&p.object_type, &p.name, &p.id) {
        (t, Some(n), Some(id)) if n != id => format!(
            "{} {} (id {})",
            t.as_deref().unwrap_or("object"),
            clean(n, 200),
            clean(id, 200)
        ),
        (t, Some(n), _) | (t, None, Some(n)) => {
            format!("{} {}", t.as_deref().unwrap_or("object"), clean(n, 200))
        }
        (t, None, None) => t.as_deref().unwrap_or("object").to_string(),
    };
    let count = if p.count > 1 {
        format!(" ({} objects)", p.count)
    } else {
        String::new()
    };
    format!(
        "{what}: {}: {}{count}",
        clean(&p.code, 100),
        clean(&p.reason, 500)
    )
}

fn counts(s: &CycleSummary) -> String {
    let u = &s.users;
    let g = &s.groups;
    format!(
        "users: {} created, {} updated, {} disabled, {} deleted, {} failed; groups: {} created, \
         {} updated, {} deleted, {} failed; {} deletions staged, {} actions escrowed for retry",
        u.created,
        u.updated,
        u.disabled,
        u.deleted,
        u.failed,
        g.created,
        g.updated,
        g.deleted,
        g.failed,
        s.staged_deletes,
        s.escrowed
    )
}

/// The notice for `event`.
pub(crate) fn render(event: &Event, ctx: &Context<'_>) -> Rendered {
    doc(event, ctx).write()
}

fn doc(event: &Event, ctx: &Context<'_>) -> Doc {
    let job = ctx.job;
    let status = format!("provisiond status --job {job}");
    let restart = format!("provisiond restart --job {job}");
    let mut failures: Vec<String> = Vec::new();
    let mut more = None;
    let mut facts = vec![
        ("Job", job.to_string()),
        ("When", time(ctx.at)),
        ("Target", display_url(ctx.target_url)),
    ];
    let (subject, what, look, act) = match event {
        Event::Quarantined {
            reason,
            error,
            next_attempt,
        }
        | Event::ReasonChanged {
            reason,
            error,
            next_attempt,
            ..
        } => {
            let (subject, lead) = match event {
                Event::ReasonChanged { from, .. } => (
                    format!("[provisiond] {job}: quarantined ({reason}, was {from})"),
                    format!(
                        "The quarantine of job {job} has a new reason: {reason} (it was {from})."
                    ),
                ),
                _ => (
                    format!("[provisiond] {job}: quarantined ({reason})"),
                    format!("Job {job} is in quarantine: {reason}."),
                ),
            };
            facts.push((
                "Error",
                format!(
                    "{}: {}",
                    clean(&error.code, 100),
                    clean(&error.message, 500)
                ),
            ));
            facts.push(("Next attempt", time(*next_attempt)));
            if reason.as_str() == "TooManyDeletes" {
                let what = format!(
                    "{lead} A cycle planned more disables and deletes than the deletion \
                     threshold allows, so none of them was sent: they are staged until an \
                     admin allows them. Other changes go on at the next attempt."
                );
                (
                    subject,
                    what,
                    vec![
                        format!("provisiond logs --job {job} --action stagedDelete"),
                        status,
                    ],
                    vec![format!("provisiond allow-deletes --job {job}"), restart],
                )
            } else {
                let what = format!(
                    "{lead} Cycles run less often until the cause is fixed (at the next \
                     attempt, then every 6, 12 and 24 hours, then daily); after 28 days the \
                     job is disabled."
                );
                (
                    subject,
                    what,
                    vec![
                        status,
                        format!("provisiond test-connection --job {job}"),
                        format!("provisiond logs --job {job} --status failure"),
                    ],
                    vec![restart],
                )
            }
        }
        Event::Resolved { was, series_began } => {
            facts.push(("In quarantine since", time(*series_began)));
            (
                format!("[provisiond] {job}: resolved (quarantine {was} lifted)"),
                format!(
                    "Job {job} is out of quarantine ({was}): a cycle went well, and cycles run \
                     on the job's schedule again."
                ),
                vec![status],
                vec![],
            )
        }
        Event::Disabled {
            reason,
            series_began,
        } => {
            let reason = reason.map(|r| r.as_str()).unwrap_or("quarantine");
            if let Some(b) = series_began {
                facts.push(("In quarantine since", time(*b)));
            }
            (
                format!("[provisiond] {job}: disabled after 28 days in quarantine ({reason})"),
                format!(
                    "Job {job} was in quarantine ({reason}) for 28 days and is now disabled: \
                     no cycle runs until an admin restarts it, once the cause is fixed."
                ),
                vec![status, format!("provisiond test-connection --job {job}")],
                vec![restart],
            )
        }
        Event::Failures { listed, more: rest } => {
            let n = listed
                .iter()
                .map(|p| p.count.max(1) as usize)
                .sum::<usize>()
                + rest;
            failures = listed.iter().map(failure_line).collect();
            if *rest > 0 {
                more = Some(format!("… and {rest} more"));
            }
            let noun = if n == 1 { "failure" } else { "failures" };
            (
                format!("[provisiond] {job}: {n} new provisioning {noun}"),
                format!(
                    "The last cycle of job {job} ended with {n} entry-level {noun} not \
                     reported before. Failed actions are retried by later cycles; fix what \
                     the reasons name in the directory or the application."
                ),
                vec![
                    format!("provisiond logs --job {job} --status failure"),
                    status,
                ],
                vec![restart],
            )
        }
        Event::Test => (
            format!("[provisiond] {job}: test message"),
            format!(
                "This is a test message of provisiond for job {job}: notices about this job \
                 reach this address."
            ),
            vec![status],
            vec![],
        ),
    };
    if let Some(s) = ctx.summary {
        facts.push((
            "Cycle",
            format!("{} ({}, {:?})", s.cycle_id, s.kind, s.status),
        ));
        facts.push(("Counts", counts(s)));
        if failures.is_empty() && event.lists_failures() {
            failures = s
                .problems
                .iter()
                .take(QUARANTINE_FAILURES)
                .map(failure_line)
                .collect();
            let rest = (s.problem_count as usize).saturating_sub(failures.len());
            if rest > 0 {
                more = Some(format!("… and {rest} more"));
            }
        }
    }
    Doc {
        subject,
        what,
        facts,
        failures,
        more,
        look,
        act,
    }
    .with_host(ctx.host)
}

impl Doc {
    fn with_host(mut self, host: &str) -> Self {
        self.facts
            .push(("Sent by", format!("provisiond on {}", clean(host, 200))));
        self
    }

    fn write(&self) -> Rendered {
        let mut text = format!("{}\n\n", self.what);
        for (k, v) in &self.facts {
            text.push_str(&format!("{k}: {v}\n"));
        }
        if !self.failures.is_empty() {
            text.push_str("\nFirst failures:\n");
            for f in &self.failures {
                text.push_str(&format!("  - {f}\n"));
            }
            if let Some(m) = &self.more {
                text.push_str(&format!("  {m}\n"));
            }
        }
        for (title, cmds) in [("To look", &self.look), ("To act", &self.act)] {
            if !cmds.is_empty() {
                text.push_str(&format!("\n{title}:\n"));
                for c in cmds {
                    text.push_str(&format!("  {c}\n"));
                }
            }
        }
        text.push_str("\n-- \nAn automatic message from provisiond; replies are not read.\n");

        let mut html = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
        html.push_str(&esc(&self.subject));
        html.push_str("</title></head><body>\n");
        html.push_str(&format!("<p>{}</p>\n<table>\n", esc(&self.what)));
        for (k, v) in &self.facts {
            html.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>\n",
                esc(k),
                esc(v)
            ));
        }
        html.push_str("</table>\n");
        if !self.failures.is_empty() {
            html.push_str("<h3>First failures</h3>\n<ul>\n");
            for f in &self.failures {
                html.push_str(&format!("<li>{}</li>\n", esc(f)));
            }
            html.push_str("</ul>\n");
            if let Some(m) = &self.more {
                html.push_str(&format!("<p>{}</p>\n", esc(m)));
            }
        }
        for (title, cmds) in [("To look", &self.look), ("To act", &self.act)] {
            if !cmds.is_empty() {
                html.push_str(&format!("<h3>{title}</h3>\n"));
                for c in cmds {
                    html.push_str(&format!("<pre>{}</pre>\n", esc(c)));
                }
            }
        }
        html.push_str("<p><small>An automatic message from provisiond; replies are not read.</small></p>\n</body></html>\n");
        Rendered {
            subject: self.subject.clone(),
            text,
            html,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{QuarantineError, QuarantineReason};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn render_for(event: &Event) -> Rendered {
        let url = url::Url::parse("https://robin.example.com/scim/v2?token=abc").unwrap();
        render(
            event,
            &Context {
                job: "robin",
                at: t0(),
                target_url: &url,
                summary: None,
                host: "h1",
            },
        )
    }

    #[test]
    fn a_deletion_threshold_quarantine_says_what_and_how_to_act() {
        let r = render_for(&Event::Quarantined {
            reason: QuarantineReason::TooManyDeletes,
            error: QuarantineError {
                code: "TooManyDeletes".into(),
                message: "600 deletes planned, threshold 500".into(),
            },
            next_attempt: t0(),
        });
        assert_eq!(
            r.subject,
            "[provisiond] robin: quarantined (TooManyDeletes)"
        );
        for needle in [
            "provisiond logs --job robin --action stagedDelete",
            "provisiond allow-deletes --job robin",
            "provisiond restart --job robin",
            "600 deletes planned",
            "2027-01-15 08:00:00 UTC",
            "https://robin.example.com/scim/v2",
        ] {
            assert!(r.text.contains(needle), "{needle} in {}", r.text);
            assert!(r.html.contains(needle), "{needle} in {}", r.html);
        }
        assert!(!r.text.contains("token=abc") && !r.html.contains("token=abc"));
    }

    #[test]
    fn the_subjects_name_the_event_and_reason() {
        use QuarantineReason::*;
        let err = QuarantineError {
            code: "Unauthorized".into(),
            message: "401".into(),
        };
        let r = render_for(&Event::ReasonChanged {
            from: TooManyDeletes,
            reason: EncounteredQuarantineException,
            error: err,
            next_attempt: t0(),
        });
        assert_eq!(
            r.subject,
            "[provisiond] robin: quarantined (EncounteredQuarantineException, was TooManyDeletes)"
        );
        let r = render_for(&Event::Resolved {
            was: TooManyDeletes,
            series_began: t0(),
        });
        assert_eq!(
            r.subject,
            "[provisiond] robin: resolved (quarantine TooManyDeletes lifted)"
        );
        let r = render_for(&Event::Disabled {
            reason: Some(EncounteredQuarantineException),
            series_began: Some(t0()),
        });
        assert!(r.subject.starts_with("[provisiond] robin: disabled"));
        assert!(r.text.contains("provisiond restart --job robin"));
    }

    #[test]
    fn hostile_names_are_escaped_in_html_and_cannot_fake_lines() {
        let p = Problem {
            object_type: Some("user".into()),
            id: Some("u1".into()),
            name: Some("<script>alert(1)</script>\r\nTo act: rm -rf".into()),
            code: "EntryConflict".into(),
            reason: "a \"quoted\" & <b>bold</b> reason".into(),
            count: 1,
        };
        let r = render_for(&Event::Failures {
            listed: vec![p],
            more: 3,
        });
        assert_eq!(r.subject, "[provisiond] robin: 4 new provisioning failures");
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;"));
        assert!(!r.html.contains("<b>bold"));
        assert!(!r.text.contains("\r\nTo act: rm"), "{}", r.text);
        assert!(r.text.contains("EntryConflict"));
        assert!(r.text.contains("… and 3 more"));
    }
}
