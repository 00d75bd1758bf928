//! Notification emails end to end: the real binary, the SCIM sandbox, and a real SMTP server
//! (PyPI aiosmtpd, `support/smtp_sink.py`) requiring STARTTLS with a certificate trusted
//! through `ca_file`, and AUTH. The messages for each event, their dedup, the outbox through
//! a mail-server outage and a restart, no secret in any message, and `test-email`.
//!
//! Needs `PROVISIOND_SMTP_PYTHON` (see support/smtp.rs); without it, outside CI, each test
//! says so and passes.

use crate::support::cli::*;
use crate::support::smtp::{html_part, subject, text_part, SmtpSink, SMTP_PASSWORD};
use provisiond::{FaultAction, FaultRule};
use std::time::Duration;

/// The config of one job `robin` on `sandbox`, with the sink's `[smtp]` and `job_extra`
/// lines in the job.
fn configure(fixture: &Fixture, sandbox: &Sandbox, sink: &SmtpSink, job_extra: &str) {
    use std::os::unix::fs::PermissionsExt;
    let pw = fixture.path("smtp-password");
    std::fs::write(&pw, SMTP_PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = job_config(&JobOptions::new(&sandbox.url()))
        .replacen(
            "state_dir = \"state\"\n",
            &format!("state_dir = \"state\"\n{}\n", sink.smtp_table(&pw)),
            1,
        )
        .replacen(
            "scope = \"assigned\"",
            &format!(
                "scope = \"assigned\"\nnotification_email = [\"admin@example.com\", \"Ops <ops@example.com>\"]\n{job_extra}"
            ),
            1,
        );
    fixture.write_config(&text);
}

/// No secret in a message: neither the SCIM token nor the SMTP password.
fn assert_no_secret(messages: &[String]) {
    for m in messages {
        assert!(!m.contains(TOKEN), "the SCIM token in\n{m}");
        assert!(!m.contains(SMTP_PASSWORD), "the SMTP password in\n{m}");
        assert!(!text_part(m).contains(TOKEN) && !html_part(m).contains(TOKEN));
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_deletion_threshold_breach_is_mailed_once_then_its_reason_change_and_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sink) = SmtpSink::start("email quarantine", tmp.path()) else {
        return;
    };
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    configure(&fixture, &sandbox, &sink, "delete_threshold = 2");
    fixture.run(&["sync"]).assert_code(0);
    assert!(sink.messages().is_empty(), "a good cycle sends nothing");

    // 3 of 5 users gone from the export: the threshold holds them and quarantines the job.
    fixture.write_directory(&directory(2));
    fixture.run(&["sync"]);
    let m = sink.wait_for(1, WAIT);
    assert_eq!(m.len(), 1);
    assert_eq!(
        subject(&m[0]),
        "[provisiond] robin: quarantined (TooManyDeletes)"
    );
    for header in [
        "Auto-Submitted: auto-generated",
        "Message-ID: <",
        "Date: ",
        "multipart/alternative",
        "To: admin@example.com, Ops <ops@example.com>",
    ] {
        assert!(m[0].contains(header), "{header} in\n{}", m[0]);
    }
    let text = text_part(&m[0]);
    for needle in [
        "provisiond logs --job robin --action stagedDelete",
        "provisiond allow-deletes --job robin",
        "provisiond restart --job robin",
        &sandbox.url(),
        "3 deletions staged",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    assert!(html_part(&m[0]).contains("provisiond allow-deletes --job robin"));

    // Kept with the same reason: no second message (one per quarantine, as Entra).
    fixture.run(&["sync"]);
    assert_eq!(sink.messages().len(), 1);

    // A new user to create, and the token is refused: the reason changes, a new message.
    let mut d = directory(6);
    d["users"].as_array_mut().unwrap().retain(|u| {
        [user_id(0), user_id(1), user_id(5)]
            .iter()
            .any(|id| u["id"] == **id)
    });
    fixture.write_directory(&d);
    fixture.write_token("not-the-token");
    fixture.run(&["sync"]);
    let m = sink.wait_for(2, WAIT);
    assert_eq!(
        subject(&m[1]),
        "[provisiond] robin: quarantined (EncounteredQuarantineException, was TooManyDeletes)"
    );
    assert!(
        text_part(&m[1]).contains("Unauthorized"),
        "{}",
        text_part(&m[1])
    );

    // The token fixed and the deletes allowed: the quarantine is lifted, "resolved".
    fixture.write_token(TOKEN);
    fixture
        .run(&["allow-deletes", "--job", "robin"])
        .assert_code(0);
    fixture.run(&["sync"]).assert_code(1); // a member the source no longer has is skipped
                                           // Resolved. The skipped member this cycle found waits for the next digest: the
                                           // reason-change notice listed failures less than digest_interval (1 h) ago.
    let m = sink.wait_for(3, WAIT);
    assert_eq!(
        subject(&m[2]),
        "[provisiond] robin: resolved (quarantine EncounteredQuarantineException lifted)"
    );
    assert_eq!(sink.messages().len(), 3);
    assert_no_secret(&m);
}

#[test]
fn new_failures_are_mailed_once_in_a_digest_with_hostile_text_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sink) = SmtpSink::start("email digest", tmp.path()) else {
        return;
    };
    // After 3 creates every POST is refused with a reason that is markup.
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400","scimType":"invalidValue","detail":"<script>alert(1)</script> & <b>bold</b>"}"#;
    let mut rule = FaultRule::new(FaultAction::Status {
        status: 400,
        retry_after: None,
        body: Some(body.into()),
    })
    .method("POST");
    rule.skip = 3;
    rule.path_prefix = Some("/Users".into());
    let sandbox = Sandbox::with_faults(vec![rule]);
    let fixture = Fixture::new(&sandbox.url());
    configure(&fixture, &sandbox, &sink, "digest_interval = \"1s\"");
    fixture.run(&["sync"]).assert_code(1);
    let m = sink.wait_for(1, WAIT);
    assert_eq!(
        subject(&m[0]),
        "[provisiond] robin: 2 new provisioning failures"
    );
    let text = text_part(&m[0]);
    assert!(
        text.contains("provisiond logs --job robin --status failure"),
        "{text}"
    );
    let listed = text
        .lines()
        .filter(|l| l.starts_with("  - user User ") && l.contains("WebExceptionProtocolError"))
        .count();
    assert_eq!(listed, 2, "each failed user is named: {text}");
    let html = html_part(&m[0]);
    assert!(
        !html.contains("<script>") && !html.contains("<b>bold"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;"), "{html}");

    // The same two failures again, after the digest interval: nothing new, no message.
    std::thread::sleep(Duration::from_millis(1100));
    fixture.run(&["sync"]).assert_code(1);
    assert_eq!(
        sink.messages().len(),
        1,
        "{:?}",
        sink.messages()
            .iter()
            .map(|m| subject(m))
            .collect::<Vec<_>>()
    );
    assert_no_secret(&sink.messages());
}

#[test]
fn the_outbox_keeps_a_notice_through_an_outage_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut sink) = SmtpSink::stopped("email outage", tmp.path()) else {
        return;
    };
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    configure(&fixture, &sandbox, &sink, "delete_threshold = 2");
    fixture.run(&["sync"]).assert_code(0);
    fixture.write_directory(&directory(2));
    // The mail server is down: the cycle is not held up nor failed by it.
    let out = fixture.run(&["sync"]);
    assert!(!out.all().contains(SMTP_PASSWORD), "{}", out.all());
    assert!(sink.messages().is_empty());

    // Up again. A dry run sends nothing, not even what earlier cycles queued.
    sink.restart();
    fixture.run(&["sync", "--dry-run"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sink.messages().is_empty(), "a dry run delivered mail");
    // The next real run (a new process: the outbox outlived the last) delivers it once.
    fixture.run(&["sync"]);
    let m = sink.wait_for(1, WAIT);
    assert_eq!(
        subject(&m[0]),
        "[provisiond] robin: quarantined (TooManyDeletes)"
    );
    fixture.run(&["sync"]);
    assert_eq!(sink.messages().len(), 1, "delivered once");
    assert_no_secret(&sink.messages());
}

#[test]
fn the_daemon_sends_a_quarantine_notice_without_holding_its_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sink) = SmtpSink::start("email daemon", tmp.path()) else {
        return;
    };
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    configure(&fixture, &sandbox, &sink, "delete_threshold = 2");
    fixture.run(&["sync"]).assert_code(0);
    fixture.write_directory(&directory(2));
    let mut daemon = fixture.spawn(&["run"]);
    let m = sink.wait_for(1, WAIT);
    assert_eq!(
        subject(&m[0]),
        "[provisiond] robin: quarantined (TooManyDeletes)"
    );
    daemon.signal("TERM");
    assert!(daemon
        .wait_until(std::time::Instant::now() + WAIT)
        .is_some());
    assert_no_secret(&m);
}

#[test]
fn test_email_reports_the_smtp_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sink) = SmtpSink::start("email test-email", tmp.path()) else {
        return;
    };
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    configure(&fixture, &sandbox, &sink, "");
    let out = fixture.run(&["test-email", "--job", "robin"]);
    out.assert_code(0);
    let all = out.all();
    assert!(
        all.contains("robin: sent to admin@example.com, Ops <ops@example.com>"),
        "{all}"
    );
    assert!(all.contains("STARTTLS"), "{all}");
    assert!(all.contains("server replied 250"), "{all}");
    let m = sink.wait_for(1, WAIT);
    assert_eq!(subject(&m[0]), "[provisiond] robin: test message");
    assert_no_secret(&m);

    // A wrong password: refused, exit 1, and the output names no password.
    std::fs::write(fixture.path("smtp-password"), "wrong-password-5c1").unwrap();
    let out = fixture.run(&["test-email"]);
    out.assert_code(1);
    let all = out.all();
    assert!(all.contains("robin: NOT sent"), "{all}");
    assert!(
        !all.contains("wrong-password-5c1") && !all.contains(SMTP_PASSWORD),
        "{all}"
    );

    // A job without addresses is a usage error.
    let plain = job_config(&JobOptions::new(&sandbox.url()));
    fixture.write_config(&plain);
    fixture.run(&["test-email"]).assert_code(5);
}

#[test]
fn check_config_reads_the_smtp_password_and_read_only_commands_need_none() {
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    let text = job_config(&JobOptions::new(&sandbox.url()))
        .replacen(
            "state_dir = \"state\"\n",
            "state_dir = \"state\"\n[smtp]\nurl = \"smtp://mail.example.com\"\nfrom = \"p@example.com\"\n\
             username = \"u\"\npassword_file = \"no-such-password\"\n",
            1,
        )
        .replacen(
            "scope = \"assigned\"",
            "scope = \"assigned\"\nnotification_email = \"admin@example.com\"",
            1,
        );
    fixture.write_config(&text);
    let out = fixture.run(&["check-config"]);
    out.assert_code(5);
    assert!(out.all().contains("smtp.password_file"), "{}", out.all());
    fixture.run(&["status"]).assert_code(0);

    // Addresses without a mail server, and plain SMTP beyond loopback, are refused by key.
    let no_smtp = job_config(&JobOptions::new(&sandbox.url())).replacen(
        "scope = \"assigned\"",
        "scope = \"assigned\"\nnotification_email = \"admin@example.com\"",
        1,
    );
    fixture.write_config(&no_smtp);
    let out = fixture.run(&["check-config"]);
    out.assert_code(5);
    assert!(
        out.all().contains("jobs[0].notification_email"),
        "{}",
        out.all()
    );
    let plain = text.replace(
        "url = \"smtp://mail.example.com\"",
        "url = \"smtp://mail.example.com\"\nstarttls = \"never\"",
    );
    fixture.write_config(&plain);
    let out = fixture.run(&["check-config"]);
    out.assert_code(5);
    assert!(out.all().contains("smtp.starttls"), "{}", out.all());
}

/// A cycle that fails as a whole (here the export file is misshaped) names no object, and is
/// still a failure the admin hears of: once while it lasts, again after it came back.
#[test]
fn a_failed_cycle_is_mailed_once_while_it_lasts() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sink) = SmtpSink::start("email failed cycle", tmp.path()) else {
        return;
    };
    let sandbox = Sandbox::start();
    let fixture = Fixture::new(&sandbox.url());
    configure(&fixture, &sandbox, &sink, "digest_interval = \"1s\"");
    fixture.write_raw_directory("{\"Users\": []}");
    fixture.run(&["sync"]).assert_code(4);
    let m = sink.wait_for(1, WAIT);
    assert_eq!(
        subject(&m[0]),
        "[provisiond] robin: 1 new provisioning failure"
    );
    let text = text_part(&m[0]);
    assert!(text.contains("CycleFailed"), "{text}");
    assert!(
        text.contains("users"),
        "the reason names the missing key: {text}"
    );

    // Failing the same way again: nothing new.
    std::thread::sleep(Duration::from_millis(1100));
    fixture.run(&["sync"]).assert_code(4);
    assert_eq!(sink.messages().len(), 1);

    // A good cycle ends it; the same failure later is news again.
    fixture.write_directory(&directory(3));
    fixture.run(&["sync"]).assert_code(0);
    std::thread::sleep(Duration::from_millis(1100));
    fixture.write_raw_directory("{\"Users\": []}");
    fixture.run(&["sync"]).assert_code(4);
    sink.wait_for(2, WAIT);
    assert_no_secret(&sink.messages());
}
