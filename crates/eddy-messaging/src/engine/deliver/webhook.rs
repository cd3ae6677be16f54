//! A webhook: one request per recipient, retried by Braze's rules, with its Currents events.

use super::*;

impl Engine {
    pub(super) async fn deliver_webhook(
        &self,
        http: &crate::webhook::Client,
        work: &mut Work,
        request: &crate::webhook::Request,
        variation: Option<&str>,
        extras: Option<Map<String, Value>>,
    ) -> Value {
        let permits = self.host_permits(&request.parsed);
        let attempts = self.settings.attempts.max(1);
        let mut attempt_no = 0;
        loop {
            attempt_no += 1;
            let attempt = {
                let _permit = permits.acquire().await;
                crate::webhook::send(http, request, self.settings.webhook_timeout).await
            };
            let now = eddy_model::time::now_ms();
            let verdict = attempt.verdict();
            if verdict == Verdict::Sent {
                let extras = extras.map(|e| Value::String(Value::Object(e).to_string()));
                work.events.push(work.context.event(
                    message_type("webhook", "Send"),
                    now,
                    variation,
                    vec![("message_extras", extras.unwrap_or(Value::Null))],
                ));
                work.counts.sent += 1;
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                return json!({"status": "sent", "http_status": attempt.status, "attempts": attempt_no});
            }
            let retry = verdict == Verdict::Retry && attempt_no < attempts;
            let (host, path) = split_url(&request.url);
            if retry {
                work.events.push(work.context.event(
                    message_type("webhook", "Retry"),
                    now,
                    variation,
                    vec![
                        ("retry_type", json!(retry_type(attempt.status))),
                        ("retry_log", json!(attempt.detail)),
                    ],
                ));
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(self.settings.retry_base, attempt_no)).await;
                continue;
            }
            work.events.push(work.context.event(
                message_type("webhook", "Failure"),
                now,
                variation,
                vec![
                    (
                        "http_status_code",
                        attempt.status.map_or(Value::Null, |s| json!(s)),
                    ),
                    ("endpoint_url", json!(request.url)),
                    ("host", json!(host)),
                    ("url_path", json!(path)),
                    ("raw_response", json!(attempt.detail)),
                    ("retry_count", json!(attempt_no - 1)),
                    (
                        "webhook_duration",
                        json!(attempt.duration.as_millis() as i64),
                    ),
                    (
                        "webhook_failure_source",
                        json!(if attempt.status.is_some() {
                            "http"
                        } else {
                            "network"
                        }),
                    ),
                    ("is_terminal", json!(true)),
                ],
            ));
            work.counts.failed += 1;
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return json!({"status": "failed", "http_status": attempt.status, "attempts": attempt_no,
                          "reason": attempt.detail});
        }
    }
}
