//! The HTTP client of a sync's target: `/users/track` or the partner cohort API, with Braze's
//! rate-limit headers honoured, 429 waited out, 5xx and network errors retried with backoff,
//! 413 split, and per-object errors mapped back by index.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eddy_model::wire::TrackRequest;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::SyncError;
use crate::config::{self, Target};

/// What became of one request's objects.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// Sent; these positions were refused, with why.
    Sent(Vec<(usize, String)>),
    /// Nothing was applied (after retries); the rows are retried next run.
    Failed(String),
    /// The target refuses the sync itself (bad key, wrong URL): stop the run.
    Fatal(String),
}

/// Counters shown in the report.
#[derive(Debug, Default)]
pub struct Counters {
    /// HTTP requests made.
    pub requests: AtomicU64,
    /// Requests repeated after a 5xx, a timeout or a network error.
    pub retries: AtomicU64,
    /// 429 answers waited out.
    pub throttled: AtomicU64,
}

/// A target's connection, shared by the sending tasks.
pub struct Client {
    http: reqwest::Client,
    kind: Kind,
    max_retries: u32,
    /// No request before this instant (from `X-RateLimit-*` and 429s).
    paused_until: Mutex<Option<Instant>>,
    /// Set once the cohort exists at the partner.
    cohort_ready: Mutex<bool>,
    /// Requests, retries and 429s.
    pub counters: Arc<Counters>,
}

enum Kind {
    Track {
        url: String,
        key: String,
    },
    Cohort {
        base: String,
        partner_api_key: String,
        client_secret: String,
        cohort_id: String,
        cohort_name: String,
    },
}

impl Client {
    /// A client for a configured target; secrets may come from the environment.
    pub fn new(target: &Target) -> Result<Client, SyncError> {
        let (kind, max_retries, timeout) = match target {
            Target::UsersTrack {
                url,
                api_key,
                api_key_env,
                max_retries,
                timeout_seconds,
                ..
            } => (
                Kind::Track {
                    url: format!("{}/users/track", url.trim_end_matches('/')),
                    key: config::secret(api_key, api_key_env, "the REST API key")?,
                },
                *max_retries,
                *timeout_seconds,
            ),
            Target::Cohort {
                url,
                partner,
                partner_api_key,
                partner_api_key_env,
                client_secret,
                client_secret_env,
                cohort_id,
                cohort_name,
                max_retries,
                timeout_seconds,
                ..
            } => (
                Kind::Cohort {
                    base: format!("{}/partners/{partner}", url.trim_end_matches('/')),
                    partner_api_key: config::secret(
                        partner_api_key,
                        partner_api_key_env,
                        "the partner API key",
                    )?,
                    client_secret: config::secret(
                        client_secret,
                        client_secret_env,
                        "the Data Import Key",
                    )?,
                    cohort_id: cohort_id.clone(),
                    cohort_name: cohort_name.clone(),
                },
                *max_retries,
                *timeout_seconds,
            ),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout.max(1)))
            .build()
            .map_err(|e| SyncError::Config(format!("http client: {e}")))?;
        Ok(Client {
            http,
            kind,
            max_retries,
            paused_until: Mutex::new(None),
            cohort_ready: Mutex::new(false),
            counters: Arc::new(Counters::default()),
        })
    }

    /// One cheap authenticated request, so that a wrong key fails the run even when nothing
    /// changed: `/users/track` with nothing to track (400 with a valid key, 401 without), or an
    /// empty cohort change (201 with valid keys). Answers why the target refuses the credentials
    /// (401, 403, 404), if it does; an unreachable target is left to the run.
    pub async fn check_credentials(&self) -> Result<(), String> {
        let reply = match &self.kind {
            Kind::Track { url, key } => self.post(url, Some(key), &json!({})).await,
            Kind::Cohort {
                base,
                partner_api_key,
                client_secret,
                cohort_id,
                ..
            } => {
                let body = json!({
                    "partner_api_key": partner_api_key,
                    "client_secret": client_secret,
                    "cohort_id": cohort_id,
                    "cohort_changes": [],
                });
                self.post(&format!("{base}/cohorts/users"), None, &body)
                    .await
            }
        };
        match reply {
            Reply::Ok(_) | Reply::Refused(_, _) | Reply::TooLarge => Ok(()),
            Reply::Fatal(why) => Err(format!("the target refused the credentials: {why}")),
            // An outage is not a verdict on the credentials: the run goes on, and rows that
            // cannot be delivered fail and are retried next run, as before.
            Reply::Failed(why) => {
                tracing::warn!(error = %why, "could not check the target's credentials");
                Ok(())
            }
        }
    }

    /// Sends attribute objects to `/users/track`.
    pub async fn track(&self, objects: &[Value]) -> BatchOutcome {
        let Kind::Track { url, key } = &self.kind else {
            return BatchOutcome::Fatal("not a users_track target".into());
        };
        // A 413 splits the batch; halves are sent one after the other.
        let mut stack = vec![(0usize, objects.len())];
        let mut refused = Vec::new();
        while let Some((start, end)) = stack.pop() {
            let body = TrackRequest {
                attributes: Some(objects[start..end].to_vec()),
                ..TrackRequest::default()
            };
            match self.post(url, Some(key), &body).await {
                Reply::Ok(text) => {
                    // Read leniently: an error entry without an index must not hide the others.
                    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    for e in parsed
                        .get("errors")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let array = e
                            .get("input_array")
                            .and_then(Value::as_str)
                            .unwrap_or("attributes");
                        let kind = e.get("type").and_then(Value::as_str).unwrap_or("refused");
                        match e.get("index").and_then(Value::as_u64) {
                            Some(i) if array == "attributes" && start + (i as usize) < end => {
                                refused.push((start + i as usize, kind.to_string()));
                            }
                            _ => {}
                        }
                    }
                }
                Reply::TooLarge if end - start > 1 => {
                    let mid = start + (end - start) / 2;
                    stack.push((mid, end));
                    stack.push((start, mid));
                }
                Reply::TooLarge => refused.push((start, "the object is too large (413)".into())),
                Reply::Refused(status, text) => {
                    // A 400 applies nothing: every object fails, with its own error if listed.
                    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let message = parsed
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("HTTP {status}: {}", text.trim()));
                    let mut listed = std::collections::BTreeMap::new();
                    if let Some(errors) = parsed.get("errors").and_then(Value::as_array) {
                        for e in errors {
                            if let (Some(i), Some(t)) = (
                                e.get("index").and_then(Value::as_u64),
                                e.get("type").and_then(Value::as_str),
                            ) {
                                listed.insert(i as usize, t.to_string());
                            }
                        }
                    }
                    for i in start..end {
                        let why = listed
                            .get(&(i - start))
                            .cloned()
                            .unwrap_or_else(|| message.clone());
                        refused.push((i, why));
                    }
                }
                Reply::Failed(why) => {
                    for i in start..end {
                        refused.push((i, why.clone()));
                    }
                }
                Reply::Fatal(why) => return BatchOutcome::Fatal(why),
            }
        }
        BatchOutcome::Sent(refused)
    }

    /// Sends membership changes to the partner cohort API: `ids` are the identifier values of
    /// the batch (strings, or alias objects), `remove` tells which leave the cohort.
    pub async fn cohort(&self, id_kind: config::IdKind, ids: &[(Value, bool)]) -> BatchOutcome {
        let Kind::Cohort {
            base,
            partner_api_key,
            client_secret,
            cohort_id,
            cohort_name,
        } = &self.kind
        else {
            return BatchOutcome::Fatal("not a cohort target".into());
        };
        {
            let mut ready = self.cohort_ready.lock().await;
            if !*ready {
                let body = json!({
                    "partner_api_key": partner_api_key,
                    "client_secret": client_secret,
                    "cohort_id": cohort_id,
                    "name": cohort_name,
                    "created_at": jiff::Timestamp::now().to_string(),
                });
                match self.post(&format!("{base}/cohorts"), None, &body).await {
                    Reply::Ok(_) => *ready = true,
                    Reply::Refused(status, text) => {
                        return BatchOutcome::Fatal(format!(
                            "creating the cohort: HTTP {status}: {}",
                            text.trim()
                        ));
                    }
                    Reply::TooLarge => {
                        return BatchOutcome::Fatal("creating the cohort: 413".into());
                    }
                    Reply::Failed(why) | Reply::Fatal(why) => {
                        return BatchOutcome::Fatal(format!("creating the cohort: {why}"));
                    }
                }
            }
        }
        let field = match id_kind {
            config::IdKind::DeviceId => "device_ids",
            config::IdKind::UserAlias => "aliases",
            _ => "user_ids",
        };
        let mut changes = Vec::new();
        for remove in [false, true] {
            let list: Vec<Value> = ids
                .iter()
                .filter(|(_, r)| *r == remove)
                .map(|(v, _)| v.clone())
                .collect();
            if list.is_empty() {
                continue;
            }
            let mut change = serde_json::Map::new();
            change.insert(field.into(), Value::Array(list));
            if remove {
                change.insert("should_remove".into(), Value::Bool(true));
            }
            changes.push(Value::Object(change));
        }
        let body = json!({
            "partner_api_key": partner_api_key,
            "client_secret": client_secret,
            "cohort_id": cohort_id,
            "cohort_changes": changes,
        });
        match self
            .post(&format!("{base}/cohorts/users"), None, &body)
            .await
        {
            Reply::Ok(_) => BatchOutcome::Sent(Vec::new()),
            Reply::Refused(status, text) => {
                BatchOutcome::Failed(format!("HTTP {status}: {}", text.trim()))
            }
            Reply::TooLarge => BatchOutcome::Failed("the request is too large (413)".into()),
            Reply::Failed(why) => BatchOutcome::Failed(why),
            Reply::Fatal(why) => BatchOutcome::Fatal(why),
        }
    }

    async fn wait_for_pause(&self) {
        let until = *self.paused_until.lock().await;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    async fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().await;
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    async fn post<B: serde::Serialize>(&self, url: &str, key: Option<&str>, body: &B) -> Reply {
        let mut failures = 0u32;
        let mut throttles = 0u32;
        loop {
            self.wait_for_pause().await;
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self.http.post(url).json(body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            // A failure to send or to read the answer is a network error either way.
            let answer = async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                Ok::<_, reqwest::Error>((status, headers, response.text().await?))
            };
            let (status, headers, text) = match answer.await {
                Ok(a) => a,
                Err(e) => {
                    failures += 1;
                    if failures > self.max_retries {
                        return Reply::Failed(format!("network error: {e}"));
                    }
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            let reset = header_u64(&headers, "x-ratelimit-reset").map(until_epoch);
            if header_u64(&headers, "x-ratelimit-remaining") == Some(0)
                && let Some(wait) = reset
            {
                self.pause(wait).await;
            }
            match status {
                200..=299 => return Reply::Ok(text),
                429 => {
                    throttles += 1;
                    self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    // Braze's limits reset at most an hour later; a target that never lets up
                    // is given up on for this run.
                    if throttles > 120 {
                        return Reply::Failed("still rate limited (429) after 120 waits".into());
                    }
                    let wait = header_u64(&headers, "retry-after")
                        .map(Duration::from_secs)
                        .or(reset)
                        .unwrap_or_else(|| backoff(throttles));
                    self.pause(wait.max(Duration::from_millis(100))).await;
                }
                413 => return Reply::TooLarge,
                401 | 403 | 404 => {
                    return Reply::Fatal(format!("HTTP {status} from {url}: {}", text.trim()));
                }
                400..=499 => return Reply::Refused(status, text),
                _ => {
                    failures += 1;
                    if failures > self.max_retries {
                        return Reply::Failed(format!("HTTP {status}: {}", text.trim()));
                    }
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }
}

enum Reply {
    Ok(String),
    TooLarge,
    Refused(u16, String),
    Failed(String),
    Fatal(String),
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Time until an epoch-seconds instant (Braze's `X-RateLimit-Reset`).
fn until_epoch(reset: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(reset).saturating_sub(now)
}

/// 0.5 s, 1 s, 2 s … up to 30 s, with jitter so that parallel senders spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(30_000);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(base / 2 + u64::from(nanos) % (base / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            let base = 500u64 * (1 << (attempt - 1).min(6));
            assert!(
                d >= Duration::from_millis(base.min(30_000) / 2),
                "{attempt}"
            );
            assert!(d <= Duration::from_millis(30_000), "{attempt}");
        }
    }

    #[test]
    fn reset_in_the_past_waits_nothing() {
        assert_eq!(until_epoch(0), Duration::ZERO);
        assert!(until_epoch(u64::MAX / 2) > Duration::from_secs(3600));
    }
}
