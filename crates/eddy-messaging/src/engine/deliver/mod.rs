//! Delivering a prepared recipient on its channels, paced and bounded per host; each channel
//! in its own file.

use super::*;

mod email;
mod webhook;

impl Engine {
    /// Delivers one recipient on each channel it has work for, and says how it ended.
    pub(super) async fn deliver(
        self: Arc<Self>,
        mut work: Box<Work>,
        via: Channels,
        in_doubt: bool,
    ) -> Finished {
        let Channels { http, pool, pacer } = via;
        let mut extra = Vec::new();
        let mut channels = match work.history.remove("channels") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut attempted = false;
        if let Some(WebhookWork {
            request,
            variation,
            extras,
        }) = work.webhook.take()
        {
            if let Some(p) = &pacer {
                p.wait().await;
            }
            attempted = true;
            let entry = self
                .deliver_webhook(&http, &mut work, &request, variation.as_deref(), extras)
                .await;
            channels.insert("webhook".into(), entry);
        }
        if let Some(email) = work.email.take() {
            if let Some(p) = &pacer {
                p.wait().await;
            }
            attempted = true;
            let mut entry = match channels.remove("email") {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            let (status, reason, bounced) = match &pool {
                Some(pool) => self.deliver_email(&mut work, pool, &email).await,
                None => (
                    "failed",
                    Some("the workspace has no SMTP relay".to_string()),
                    false,
                ),
            };
            entry.insert("status".into(), json!(status));
            if let Some(reason) = reason {
                entry.insert("reason".into(), json!(reason));
            }
            if bounced {
                extra.extend(self.hard_bounce(work.ws, &email.to));
            }
            channels.insert("email".into(), Value::Object(entry));
        }
        if attempted && in_doubt {
            work.counts.resent_after_restart += 1;
            self.stats
                .resent_after_restart
                .fetch_add(1, Ordering::Relaxed);
        }
        if !channels.is_empty() {
            work.history
                .insert("channels".into(), Value::Object(channels));
        }
        self.stats
            .aborted
            .fetch_add(work.counts.aborted, Ordering::Relaxed);
        Finished {
            id: work.id,
            history: work.history,
            events: work.events,
            counts: work.counts,
            extra,
        }
    }

    /// The permits of a URL's host (its name and port): at most `host_concurrency` requests
    /// to one host at a time.
    pub(super) fn host_permits(&self, url: &reqwest::Url) -> Arc<Semaphore> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let of_port = hosts.entry(port).or_default();
        if let Some(permits) = of_port.get(host) {
            return permits.clone();
        }
        let permits = Arc::new(Semaphore::new(self.settings.host_concurrency.max(1)));
        of_port.insert(host.to_string(), permits.clone());
        permits
    }
}

/// What a recipient's delivery goes through: the dispatch's webhook client, its SMTP pool and
/// its pacer.
#[derive(Clone)]
pub(super) struct Channels {
    pub(super) http: crate::webhook::Client,
    pub(super) pool: Option<Arc<Pool>>,
    pub(super) pacer: Option<Arc<Pacer>>,
}

pub(super) fn retry_type(status: Option<u16>) -> String {
    match status {
        Some(s) => format!("http_{s}"),
        None => "network".into(),
    }
}

pub(super) fn split_url(url: &str) -> (String, String) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".into()),
    }
}

/// The delay before attempt `n + 1`: the base doubled per attempt, capped at ten minutes.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (base * factor).min(Duration::from_secs(600))
}

/// Spaces deliveries of one dispatch to `messages_per_minute`.
pub struct Pacer {
    pub(super) interval: Duration,
    pub(super) next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// A pacer for a rate per minute.
    pub fn new(per_minute: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(60) / per_minute.max(1),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), Duration::from_secs(600));
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("https://h.test:8/a/b?c"),
            ("h.test:8".into(), "/a/b?c".into())
        );
        assert_eq!(split_url("http://h.test"), ("h.test".into(), "/".into()));
    }
}
