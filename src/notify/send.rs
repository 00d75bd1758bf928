//! Delivery: the MIME message built from an outbox record, the SMTP transport (lettre, rustls
//! with ring), the outbox delivered with backoff, and the sender task of the daemon. Nothing
//! here is awaited by a cycle: a mail server that is down or slow delays only its mail.

use super::config::{SmtpSecurity, SmtpSettings};
use crate::state::{OutboxMessage, StateError, StateStore};
use chrono::{DateTime, Utc};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the daemon's sender looks at the outbox: a queued notice leaves within this
/// (reading an empty sled tree costs next to nothing).
const POLL: Duration = Duration::from_secs(2);

/// The first retry after a failed delivery; it doubles with each attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);

/// A message the mail server refused for good (a 5xx) is dropped after this many attempts.
const MAX_PERMANENT_ATTEMPTS: u32 = 5;

/// Why a notice could not be delivered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The TLS settings (`ca_file`) are unusable.
    #[error("TLS settings: {0}")]
    Tls(#[source] lettre::transport::smtp::Error),
    /// An address or the message could not be built.
    #[error("cannot build the message: {0}")]
    Build(String),
    /// The SMTP conversation failed (connection, TLS, AUTH or a refusal); lettre's message
    /// quotes the server's reply, never the password.
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The whole conversation took longer than `timeout` (a server that stops answering).
    #[error("no complete answer from the mail server within {0:?}")]
    Timeout(Duration),
    /// The outbox could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

impl SendError {
    /// Whether retrying the same message cannot help (the server refused it for good).
    fn is_permanent(&self) -> bool {
        match self {
            SendError::Smtp(e) => e.is_permanent(),
            SendError::Build(_) => true,
            SendError::Tls(_) | SendError::State(_) | SendError::Timeout(_) => false,
        }
    }
}

/// The SMTP transport built from `[smtp]`.
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// What protects the connection, for `test-email`.
    pub security: SmtpSecurity,
    /// The longest one message's conversation may take: lettre bounds connecting and each
    /// read, but a server that answers slowly line by line could hold a send for long.
    timeout: Duration,
}

/// What the server answered to an accepted message.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    /// The reply code and text, e.g. `250 OK queued as 1234`.
    pub reply: String,
}

impl Mailer {
    /// The transport for `settings`: STARTTLS required, implicit TLS or (loopback only)
    /// plain; `ca_file`'s certificates trusted besides the usual roots.
    pub(crate) fn new(settings: &SmtpSettings) -> Result<Self, SendError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| SendError::Build(format!("from: {e}")))?;
        let mut params = TlsParameters::builder(settings.host.clone());
        if let Some(pem) = &settings.ca_pem {
            params =
                params.add_root_certificate(Certificate::from_pem(pem).map_err(SendError::Tls)?);
        }
        let tls = match settings.security {
            SmtpSecurity::Plain => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(params.build_rustls().map_err(SendError::Tls)?),
            SmtpSecurity::ImplicitTls => {
                Tls::Wrapper(params.build_rustls().map_err(SendError::Tls)?)
            }
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
                .port(settings.port)
                .tls(tls)
                .timeout(Some(settings.timeout));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            security: settings.security,
            timeout: settings.timeout,
        })
    }

    /// Send one message; the server's reply when it accepted it.
    pub(crate) async fn send(&self, msg: &OutboxMessage) -> Result<Accepted, SendError> {
        let email = build(msg, &self.from)?;
        let response = tokio::time::timeout(self.timeout, self.transport.send(email))
            .await
            .map_err(|_| SendError::Timeout(self.timeout))??;
        let text: Vec<&str> = response.message().collect();
        Ok(Accepted {
            reply: format!("{} {}", response.code(), text.join(" ")),
        })
    }
}

/// The MIME message of an outbox record: multipart/alternative (text, HTML), `Date` the
/// event's time, the record's `Message-ID`, `Auto-Submitted: auto-generated` (RFC 3834, so
/// that auto-responders stay quiet).
pub(crate) fn build(msg: &OutboxMessage, from: &Mailbox) -> Result<Message, SendError> {
    let mut b = Message::builder()
        .from(from.clone())
        .subject(msg.subject.clone())
        .date(std::time::SystemTime::from(msg.created))
        .message_id(Some(msg.message_id.clone()))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ));
    for to in &msg.to {
        let m: Mailbox = to
            .parse()
            .map_err(|e| SendError::Build(format!("recipient {to:?}: {e}")))?;
        b = b.to(m);
    }
    b.multipart(MultiPart::alternative_plain_html(
        msg.text.clone(),
        msg.html.clone(),
    ))
    .map_err(|e| SendError::Build(e.to_string()))
}

/// The wait before the next attempt after `attempts` failed ones.
pub(crate) fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF)
}

/// What one delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    pub sent: usize,
    /// Left in the outbox (failed ones included).
    pub waiting: usize,
}

/// Deliver the outbox once: each message due at `now` (every message when `all`, as a
/// one-shot command does), oldest first. A failed one is kept with its next attempt pushed
/// back; after a failure that is not about the message (the server down, TLS, AUTH) the round
/// stops, since the others would fail alike.
pub(crate) async fn deliver(
    mailer: &Mailer,
    store: &dyn StateStore,
    now: DateTime<Utc>,
    all: bool,
) -> Result<Round, StateError> {
    deliver_queued(mailer, store, store.outbox()?, now, all).await
}

/// [`deliver`] of the messages already read from the outbox.
async fn deliver_queued(
    mailer: &Mailer,
    store: &dyn StateStore,
    queued: Vec<OutboxMessage>,
    now: DateTime<Utc>,
    all: bool,
) -> Result<Round, StateError> {
    let mut round = Round {
        waiting: queued.len(),
        ..Round::default()
    };
    for mut msg in queued {
        if !all && msg.next_attempt > now {
            continue;
        }
        match mailer.send(&msg).await {
            Ok(accepted) => {
                store.remove_outbox(msg.id)?;
                round.sent += 1;
                round.waiting -= 1;
                tracing::info!(job = %msg.job, id = msg.id, subject = %msg.subject, attempts = msg.attempts + 1, reply = %accepted.reply, "notification email delivered");
            }
            Err(e) => {
                msg.attempts += 1;
                msg.last_error = Some(e.to_string());
                let permanent = e.is_permanent();
                if permanent && msg.attempts >= MAX_PERMANENT_ATTEMPTS {
                    store.remove_outbox(msg.id)?;
                    round.waiting -= 1;
                    tracing::error!(job = %msg.job, id = msg.id, subject = %msg.subject, attempts = msg.attempts, error = %e, "notification email refused for good: dropped");
                    continue;
                }
                let wait = backoff(msg.attempts);
                msg.next_attempt = now + chrono::Duration::from_std(wait).unwrap_or_default();
                store.update_outbox(&msg)?;
                tracing::warn!(job = %msg.job, id = msg.id, subject = %msg.subject, attempts = msg.attempts, next_attempt = %msg.next_attempt, error = %e, "notification email not delivered: kept for retry");
                if !permanent {
                    break;
                }
            }
        }
    }
    Ok(round)
}

/// The daemon's sender: delivers the outbox until `stop`, with the `[smtp]` settings in force
/// at each round (`settings`, so a reload applies). An in-flight conversation is abandoned on
/// stop; its message stays queued and goes after the restart.
pub(crate) async fn run_sender(
    settings: impl Fn() -> Option<SmtpSettings>,
    store: Arc<dyn StateStore>,
    stop: CancellationToken,
) {
    loop {
        if let Some(s) = settings() {
            // The transport is set up (certificates read, TLS configured) only when a message
            // is due: an idle poll reads the outbox and nothing else.
            let now = Utc::now();
            match store.outbox() {
                Ok(queued) if queued.iter().any(|m| m.next_attempt <= now) => {
                    match Mailer::new(&s) {
                        Ok(mailer) => {
                            let round = tokio::select! {
                                () = stop.cancelled() => return,
                                r = deliver_queued(&mailer, store.as_ref(), queued, now, false) => r,
                            };
                            if let Err(e) = round {
                                tracing::warn!(error = %e, "cannot read or update the notification outbox");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot set up the SMTP transport"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the notification outbox"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> OutboxMessage {
        OutboxMessage {
            version: 1,
            id: 7,
            job: "robin".into(),
            to: vec!["admin@example.com".into(), "Ops <ops@example.com>".into()],
            subject: "[provisiond] robin: quarantined (TooManyDeletes)".into(),
            text: "plain".into(),
            html: "<p>html</p>".into(),
            created: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            message_id: "<abc@host>".into(),
            attempts: 0,
            next_attempt: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            last_error: None,
        }
    }

    #[test]
    fn the_message_has_the_headers_and_both_parts() {
        let from: Mailbox = "provisiond@example.com".parse().unwrap();
        let bytes = build(&msg(), &from).unwrap().formatted();
        let text = String::from_utf8(bytes).unwrap();
        for needle in [
            "Auto-Submitted: auto-generated",
            "Message-ID: <abc@host>",
            "Date: Fri, 15 Jan 2027 08:00:00 +0000",
            "Subject: [provisiond] robin: quarantined (TooManyDeletes)",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "To: admin@example.com, Ops <ops@example.com>",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
