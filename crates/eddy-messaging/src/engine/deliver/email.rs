//! An email: handed to the workspace's SMTP pool, deferrals retried, bounces recorded.

use super::*;

impl Engine {
    /// The address record after a hard bounce (merged with what the store has).
    /// The address's record with its hard bounce added; none when the record cannot be read
    /// (a fresh one would erase what it says): the bounce is then only in the recipient's
    /// message record and Currents, and the error is logged.
    pub(super) fn hard_bounce(&self, ws: u32, address: &str) -> Option<ObjectWrite> {
        let found = match self.store.object(ws, kinds::EMAIL_ADDRESS, address) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot read an address's record; its hard bounce is not added to it");
                return None;
            }
        };
        let mut record = found.filter(Value::is_object).unwrap_or_else(|| json!({}));
        record["hard_bounced_at"] = json!(eddy_model::time::now_ms());
        Some(ObjectWrite {
            kind: kinds::EMAIL_ADDRESS.into(),
            name: address.to_string(),
            value: Some(record),
        })
    }

    /// Answers (status, reason, hard bounced).
    pub(super) async fn deliver_email(
        &self,
        work: &mut Work,
        pool: &Pool,
        email: &EmailWork,
    ) -> (&'static str, Option<String>, bool) {
        let variation = email.variation.as_deref();
        let domain_of = |address: &str| address.rsplit_once('@').map(|(_, d)| d.to_string());
        let from_domain = domain_of(&email.from_address);
        let recipient_domain = domain_of(&email.to);
        let extras = email
            .extras
            .clone()
            .map(|e| Value::String(Value::Object(e).to_string()));
        let address = json!(email.to);
        work.email_event(
            "Send",
            eddy_model::time::now_ms(),
            variation,
            &address,
            vec![
                ("message_extras", extras.unwrap_or(Value::Null)),
                ("from_domain", json!(from_domain)),
            ],
        );
        let mut recipients = vec![email.to.as_str()];
        if let Some(bcc) = &email.bcc {
            recipients.push(bcc);
        }
        let attempts = self.settings.attempts.max(1);
        let mut attempt_no = 0;
        loop {
            attempt_no += 1;
            let result = pool
                .send(&email.from_address, &recipients, &email.data)
                .await;
            let now = eddy_model::time::now_ms();
            let reason = match result {
                Ok(Reply::Accepted(_)) => {
                    work.email_event(
                        "Delivery",
                        now,
                        variation,
                        &address,
                        vec![("from_domain", json!(from_domain))],
                    );
                    work.counts.sent += 1;
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    return ("delivered", None, false);
                }
                Ok(Reply::Rejected(text)) => {
                    work.email_event(
                        "Bounce",
                        now,
                        variation,
                        &address,
                        vec![("bounce_reason", json!(text))],
                    );
                    work.counts.failed += 1;
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    return ("bounced", Some(text), true);
                }
                Ok(Reply::Deferred(text)) => text,
                Err(e) => e.0,
            };
            work.email_event(
                "Deferral",
                now,
                variation,
                &address,
                vec![
                    ("deferral_reason", json!(reason)),
                    ("attempt_count", json!(attempt_no)),
                    ("recipient_domain", json!(recipient_domain)),
                ],
            );
            if attempt_no < attempts {
                work.email_event(
                    "Retry",
                    now,
                    variation,
                    &address,
                    vec![
                        ("retry_type", json!("soft_bounce")),
                        ("retry_log", json!(reason)),
                    ],
                );
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(self.settings.retry_base, attempt_no)).await;
                continue;
            }
            work.email_event(
                "SoftBounce",
                now,
                variation,
                &address,
                vec![("bounce_reason", json!(reason))],
            );
            work.counts.failed += 1;
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return ("soft_bounced", Some(reason), false);
        }
    }
}
