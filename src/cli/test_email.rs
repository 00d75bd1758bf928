//! `provisiond test-email`: a test message to each selected job's notification addresses,
//! sent at once (not through the outbox), with the SMTP conversation's outcome.

use super::out::outln;
use super::{exit, Failure};
use crate::config::Config;
use crate::notify::{JobRef, Mailer};

/// Send the test message of each selected job that has addresses (`--job`: that job, which
/// must have some). Exit 1 when a message was not accepted.
pub(crate) async fn test_email(config: &Config, job: Option<&str>) -> Result<i32, Failure> {
    let Some(smtp) = &config.smtp else {
        return Err(Failure {
            code: exit::CONFIG,
            message: format!(
                "{}: smtp: no [smtp] table: notification emails are off",
                config.path.display()
            ),
        });
    };
    let jobs: Vec<_> = super::select(config, job)?
        .into_iter()
        .filter_map(|j| j.notify.as_ref().map(|n| (j, n)))
        .collect();
    if jobs.is_empty() {
        return Err(Failure::usage(match job {
            Some(j) => format!("job {j} has no notification_email"),
            None => "no job has a notification_email".to_string(),
        }));
    }
    let mailer = match Mailer::new(smtp) {
        Ok(m) => m,
        Err(e) => {
            outln!("SMTP {}: {e}", smtp.url);
            return Ok(exit::ENTRY_ERRORS);
        }
    };
    let mut code = exit::OK;
    for (j, notify) in jobs {
        let job_ref = JobRef {
            name: &j.name,
            notify,
            target_url: &j.target.base_url,
        };
        let msg = crate::notify::test_message(&job_ref, chrono::Utc::now());
        let to = notify.to.join(", ");
        match mailer.send(&msg).await {
            Ok(accepted) => outln!(
                "{}: sent to {to} via {} (TLS: {}): server replied {}",
                j.name,
                smtp.url,
                mailer.security.describe(),
                accepted.reply
            ),
            Err(e) => {
                outln!(
                    "{}: NOT sent to {to} via {} (TLS: {}): {e}",
                    j.name,
                    smtp.url,
                    mailer.security.describe()
                );
                code = exit::ENTRY_ERRORS;
            }
        }
    }
    Ok(code)
}
