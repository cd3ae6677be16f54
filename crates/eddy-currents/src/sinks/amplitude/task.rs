//! Delivery to Amplitude's HTTP API v2, with every response code handled as Amplitude documents
//! (<https://amplitude.com/docs/apis/analytics/http-v2>): a 400 drops only the events it names (an
//! invalid key pauses the connector), a 413 halves the batch, a 429 holds back only the throttled
//! devices for `throttle_seconds`, 5xx and timeouts back off and retry. The cursor never passes an
//! event that is neither delivered nor dropped-and-counted; `insert_id` makes resending safe.

use crate::CurrentsError;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::checkpoint::{Checkpoint, Request, Status, next_round, retention_horizon};
use crate::connector::DeliveryState;
use crate::sinks::amplitude::config::AmplitudeConnector;
use crate::sinks::amplitude::mapping as amplitude;
use crate::source::OutboxReader;

/// Most events per request (Amplitude: fewer than 2,000).
const MAX_BATCH: usize = 1000;
/// Largest request body we build (Amplitude: under 1 MB).
const MAX_BATCH_BYTES: usize = 900_000;
/// Most events held in memory waiting to be sent; the rest waits in the outbox.
const MAX_QUEUE: usize = 20_000;
/// How long an invalid API key pauses the connector before it tries again.
const INVALID_KEY_PAUSE: Duration = Duration::from_secs(60);

/// One mapped event waiting to be delivered.
struct Pending {
    seq: u64,
    at: i64,
    /// The event, serialized once.
    json: Vec<u8>,
    /// Its `user_id` and `device_id`, for 429 answers.
    user_id: Option<String>,
    device_id: Option<String>,
    /// The device (or, without one, the user) the per-device limits apply to.
    device: String,
    not_before: Option<Instant>,
}

/// Per device (or user) rate and throttle state.
struct Device {
    tokens: f64,
    refilled: Instant,
    throttled_until: Option<Instant>,
}

/// The task delivering one Amplitude connector.
pub(crate) struct AmplitudeTask {
    source: OutboxReader,
    settings: AmplitudeConnector,
    url: String,
    checkpoint: Checkpoint,
    queue: VecDeque<Pending>,
    devices: HashMap<String, Device>,
    batch_limit: usize,
    paused_until: Option<Instant>,
    client: reqwest::Client,
}

impl AmplitudeTask {
    pub(crate) fn new(
        source: OutboxReader,
        settings: AmplitudeConnector,
        state: DeliveryState,
        status: Arc<Mutex<Status>>,
    ) -> Result<AmplitudeTask, CurrentsError> {
        let url = settings.url().ok_or_else(|| {
            CurrentsError::Invalid(format!(
                "no Amplitude endpoint for region '{}'",
                settings.region
            ))
        })?;
        eddy_net::check_operator_url(Some(&url))
            .map_err(|refused| CurrentsError::Invalid(refused.to_string()))?;
        // Without the configured timeout a hung endpoint would hold deliveries forever.
        let client = eddy_net::client_builder(eddy_net::Policy::Operator)
            .timeout(Duration::from_secs(settings.timeout_seconds.max(1)))
            .build()
            .map_err(|e| CurrentsError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let max_backoff = settings.max_backoff_seconds;
        Ok(AmplitudeTask {
            source,
            settings,
            url,
            checkpoint: Checkpoint::new(state, status, Duration::from_secs(max_backoff)),
            queue: VecDeque::new(),
            devices: HashMap::new(),
            batch_limit: MAX_BATCH,
            paused_until: None,
            client,
        })
    }

    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        self.source.read_pos = self.checkpoint.state.cursor;
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        while let Some(request) = next_round(&mut ticker, &mut requests).await {
            let mut sent = 0;
            loop {
                let more = self.read();
                self.expire();
                let round = self.send_ready().await;
                sent += round;
                // Keep going while the outbox has more and sending makes progress.
                if !more || round == 0 {
                    break;
                }
            }
            let waiting = !self.queue.is_empty();
            let reply = match request {
                None => None,
                Some(Request::Flush(reply)) => {
                    let result = match (&self.checkpoint.state.last_error, waiting) {
                        (Some(e), true) => Err(e.clone()),
                        _ => Ok(sent),
                    };
                    Some((reply, result))
                }
                Some(Request::Replay(seq, reply)) => {
                    // Queued events after `seq` are read again; those before it stay ahead of it.
                    let from = self.queue.front().map_or(seq, |p| p.seq.min(seq));
                    self.queue.clear();
                    self.source.read_pos = from;
                    self.checkpoint.state.cursor = from;
                    Some((reply, Ok(seq)))
                }
            };
            self.save().await;
            if let Some((reply, result)) = reply {
                let _ = reply.send(result);
            }
        }
    }

    /// Reads and maps events while the queue has room; true when the outbox may hold more.
    fn read(&mut self) -> bool {
        let room = MAX_QUEUE.saturating_sub(self.queue.len());
        if room == 0 {
            return true;
        }
        let (items, more) = match self.source.read(room) {
            Ok(read) => read,
            Err(e) => {
                self.checkpoint.state.last_error = Some(format!("reading the outbox: {e}"));
                return false;
            }
        };
        for item in items {
            let Some(event) = amplitude::event(&item.event_type, &item.record) else {
                // Braze sends only events with an external id or a device id.
                self.checkpoint.state.skipped += 1;
                continue;
            };
            let user_id = event
                .get("user_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            let device_id = event
                .get("device_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            let device = device_id
                .clone()
                .or_else(|| user_id.clone())
                .unwrap_or_default();
            let json = match serde_json::to_vec(&event) {
                Ok(json) => json,
                Err(_) => continue,
            };
            self.queue.push_back(Pending {
                seq: item.seq,
                at: item.at,
                json,
                user_id,
                device_id,
                device,
                not_before: None,
            });
        }
        more
    }

    /// Drops, and counts, events older than the retention window.
    fn expire(&mut self) {
        let horizon = retention_horizon(self.settings.retention_hours);
        let before = self.queue.len();
        self.queue.retain(|p| p.at >= horizon);
        let expired = before - self.queue.len();
        if expired > 0 {
            tracing::warn!(
                connector = self.source.connector.name,
                expired,
                "undeliverable events dropped after the retention window"
            );
            self.checkpoint.state.dropped += expired as u64;
        }
    }

    /// Picks the next batch: ready events in order, within the per-device rate, never an event of
    /// a device after one of the same device that has to wait (Amplitude keeps device order).
    fn pick(&mut self, now: Instant) -> Vec<usize> {
        let rate = f64::from(self.settings.events_per_second_per_device);
        let mut picked = Vec::new();
        let mut bytes = 0;
        let mut blocked: HashSet<String> = HashSet::new();
        for (i, p) in self.queue.iter().enumerate() {
            if picked.len() >= self.batch_limit || bytes + p.json.len() + 1 > MAX_BATCH_BYTES {
                break;
            }
            if blocked.contains(&p.device) {
                continue;
            }
            if !self.devices.contains_key(&p.device) {
                self.devices.insert(
                    p.device.clone(),
                    Device {
                        tokens: rate,
                        refilled: now,
                        throttled_until: None,
                    },
                );
            }
            let Some(device) = self.devices.get_mut(&p.device) else {
                continue;
            };
            device.tokens = (device.tokens
                + now.duration_since(device.refilled).as_secs_f64() * rate)
                .min(rate);
            device.refilled = now;
            let waiting = p.not_before.is_some_and(|t| t > now)
                || device.throttled_until.is_some_and(|t| t > now);
            if waiting || device.tokens < 1.0 {
                blocked.insert(p.device.clone());
                continue;
            }
            device.tokens -= 1.0;
            bytes += p.json.len() + 1;
            picked.push(i);
        }
        picked
    }

    /// The request body of a batch, from the events' serialized forms.
    fn body(&self, batch: &[usize]) -> Vec<u8> {
        let size: usize = batch.iter().map(|i| self.queue[*i].json.len() + 1).sum();
        let mut body = Vec::with_capacity(size + self.settings.api_key.len() + 64);
        body.extend_from_slice(b"{\"api_key\":");
        body.extend_from_slice(json!(self.settings.api_key).to_string().as_bytes());
        body.extend_from_slice(b",\"events\":[");
        for (n, i) in batch.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&self.queue[*i].json);
        }
        body.extend_from_slice(b"],\"options\":{\"min_id_length\":1}}");
        body
    }

    fn remove(&mut self, indexes: &BTreeSet<usize>) {
        let mut i = 0;
        self.queue.retain(|_| {
            let keep = !indexes.contains(&i);
            i += 1;
            keep
        });
    }

    /// Sends ready batches until none is ready or a failure stops this round; returns events delivered.
    async fn send_ready(&mut self) -> u64 {
        let mut delivered = 0;
        for _ in 0..256 {
            let now = Instant::now();
            if self.paused_until.is_some_and(|t| t > now) {
                break;
            }
            let batch = self.pick(now);
            if batch.is_empty() {
                break;
            }
            let body = self.body(&batch);
            let response = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let (code, answer) = match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let answer: Value = r.json().await.unwrap_or(Value::Null);
                    (
                        answer
                            .get("code")
                            .and_then(Value::as_u64)
                            .map_or(status, |c| c as u16),
                        answer,
                    )
                }
                Err(e) => {
                    self.retry_later(&batch, format!("sending to Amplitude: {e}"));
                    break;
                }
            };
            match code {
                200..=299 => {
                    let sent: BTreeSet<usize> = batch.iter().copied().collect();
                    delivered += sent.len() as u64;
                    self.checkpoint.state.delivered += sent.len() as u64;
                    self.remove(&sent);
                    self.checkpoint.delivered(&self.source.connector.name);
                    self.batch_limit = (self.batch_limit * 2).min(MAX_BATCH);
                }
                413 => {
                    if batch.len() == 1 {
                        self.drop_events(&batch, &[0], "an event larger than Amplitude accepts");
                    } else {
                        self.batch_limit = (batch.len() / 2).max(1);
                    }
                }
                429 => self.throttled(&batch, &answer, now),
                400 => {
                    let error = answer
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if error.starts_with("Invalid API key") {
                        self.checkpoint.state.last_error = Some(
                            "Amplitude: Invalid API key; paused, retrying every minute".into(),
                        );
                        self.paused_until = Some(now + INVALID_KEY_PAUSE);
                        break;
                    }
                    let mut bad = named_indexes(&answer);
                    if answer.get("missing_field").is_some() || bad.is_empty() {
                        // The request as a whole is refused: retrying it can never succeed.
                        bad = (0..batch.len()).collect();
                    }
                    let positions: Vec<usize> =
                        bad.into_iter().filter(|i| *i < batch.len()).collect();
                    self.drop_events(
                        &batch,
                        &positions,
                        &format!("refused by Amplitude: {error}"),
                    );
                }
                _ => {
                    self.retry_later(&batch, format!("Amplitude answered {code}"));
                    break;
                }
            }
        }
        delivered
    }

    /// 429: hold back the throttled devices and users; drop events over a daily quota.
    fn throttled(&mut self, batch: &[usize], answer: &Value, now: Instant) {
        let hold = now + Duration::from_secs(self.settings.throttle_seconds);
        for key in ["throttled_devices", "throttled_users"] {
            if let Some(Value::Object(ids)) = answer.get(key) {
                for id in ids.keys() {
                    if let Some(device) = self.devices.get_mut(id) {
                        device.throttled_until = Some(hold);
                    }
                }
            }
        }
        for i in answer
            .get("throttled_events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
        {
            if let Some(queue_index) = batch.get(i as usize) {
                let device = self.queue[*queue_index].device.clone();
                if let Some(d) = self.devices.get_mut(&device) {
                    d.throttled_until = Some(hold);
                }
            }
        }
        let mut over_quota = Vec::new();
        for key in ["exceeded_daily_quota_users", "exceeded_daily_quota_devices"] {
            if let Some(Value::Object(ids)) = answer.get(key) {
                for (position, queue_index) in batch.iter().enumerate() {
                    let pending = &self.queue[*queue_index];
                    let listed =
                        |id: &Option<String>| id.as_ref().is_some_and(|v| ids.contains_key(v));
                    if listed(&pending.user_id) || listed(&pending.device_id) {
                        over_quota.push(position);
                    }
                }
            }
        }
        if !over_quota.is_empty() {
            self.drop_events(batch, &over_quota, "over Amplitude's daily quota");
        }
    }

    fn drop_events(&mut self, batch: &[usize], positions: &[usize], why: &str) {
        let gone: BTreeSet<usize> = positions
            .iter()
            .filter_map(|p| batch.get(*p).copied())
            .collect();
        tracing::warn!(
            connector = self.source.connector.name,
            events = gone.len(),
            why,
            "events dropped"
        );
        self.checkpoint.state.dropped += gone.len() as u64;
        self.remove(&gone);
    }

    fn retry_later(&mut self, batch: &[usize], error: String) {
        self.checkpoint.fail(&self.source.connector.name, error);
        let when = self
            .checkpoint
            .backoff
            .next_retry_ms()
            .map_or(Instant::now(), |at| {
                let wait = (at - eddy_model::time::now_ms()).max(0) as u64;
                Instant::now() + Duration::from_millis(wait)
            });
        for i in batch {
            self.queue[*i].not_before = Some(when);
        }
    }

    /// Moves the cursor to the first event still queued and saves the state if it changed.
    async fn save(&mut self) {
        let first_queued = self.queue.iter().map(|p| p.seq).min();
        let pending = self.queue.len() as u64;
        let oldest = self.queue.iter().map(|p| p.at).min();
        self.checkpoint
            .save(&self.source, first_queued, pending, oldest)
            .await;
    }
}

/// The positions of events a 400 names as invalid, missing fields, bad id lengths or silenced.
fn named_indexes(answer: &Value) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for key in [
        "events_with_invalid_fields",
        "events_with_missing_fields",
        "events_with_invalid_id_lengths",
    ] {
        if let Some(Value::Object(fields)) = answer.get(key) {
            for positions in fields.values() {
                out.extend(
                    positions
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .map(|i| i as usize),
                );
            }
        }
    }
    out.extend(
        answer
            .get("silenced_events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .map(|i| i as usize),
    );
    out
}
