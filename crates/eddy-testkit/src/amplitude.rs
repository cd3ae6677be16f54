//! An emulator of Amplitude's HTTP API v2 with scripted faults.

use serde_json::{Value, json};

/// A fault the Amplitude emulator answers with on its next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This HTTP status with an Amplitude-shaped body.
    Status(u16),
    /// 429 for the events of this device or user.
    Throttle(String),
    /// 413 (when the batch has more than one event).
    TooLarge,
    /// 400 naming these event positions as invalid.
    Invalid(Vec<usize>),
    /// Ingests the batch, then answers only after this many milliseconds: a client that times
    /// out first must retry, and Amplitude receives those events twice (same `insert_id`).
    Hang(u64),
}

/// How the emulator behaves beyond Amplitude's documented answers.
#[derive(Debug, Clone)]
pub struct AmplitudeOptions {
    /// Keep every ingested event (tests read them back); without, only their `insert_id`s
    /// (benchmarks, where copying 300,000 events would compete with eddy for the CPU).
    pub keep_events: bool,
    /// Every n-th request fails, alternately a 429 for its first event's user and a 503; 0 never.
    pub fail_every: usize,
}

impl Default for AmplitudeOptions {
    fn default() -> Self {
        AmplitudeOptions {
            keep_events: true,
            fail_every: 0,
        }
    }
}

#[derive(Default)]
struct AmplitudeState {
    api_key: String,
    options: AmplitudeOptions,
    faults: std::collections::VecDeque<Fault>,
    ingested: std::collections::BTreeMap<String, Value>,
    received: usize,
    requests: usize,
    recent: std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>,
}

/// An emulator of Amplitude's HTTP API v2 following its documented limits and error bodies.
pub struct AmplitudeEmulator {
    /// Its base URL; the API is under `/2/httpapi`.
    pub url: String,
    state: std::sync::Arc<std::sync::Mutex<AmplitudeState>>,
}

impl AmplitudeEmulator {
    /// Starts an emulator that accepts `api_key`, with the default options.
    pub async fn start(api_key: &str) -> AmplitudeEmulator {
        AmplitudeEmulator::start_with(api_key, AmplitudeOptions::default()).await
    }

    /// Starts an emulator that accepts `api_key`.
    pub async fn start_with(api_key: &str, options: AmplitudeOptions) -> AmplitudeEmulator {
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        type Shared = std::sync::Arc<std::sync::Mutex<AmplitudeState>>;
        let state: Shared = std::sync::Arc::new(std::sync::Mutex::new(AmplitudeState {
            api_key: api_key.to_string(),
            options,
            ..Default::default()
        }));
        async fn upload(
            axum::extract::State(state): axum::extract::State<Shared>,
            body: axum::body::Bytes,
        ) -> Response {
            let mut hang = None;
            let response = answer(&state, &body, &mut hang);
            if let Some(ms) = hang {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            response
        }
        fn answer(state: &Shared, body: &[u8], hang: &mut Option<u64>) -> Response {
            let reply = |code: u16, body: Value| {
                (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
            };
            let Ok(request) = serde_json::from_slice::<Value>(body) else {
                return reply(
                    400,
                    json!({"code": 400, "error": "Invalid JSON request body"}),
                );
            };
            let mut s = state.lock().unwrap();
            s.requests += 1;
            if request["api_key"].as_str() != Some(s.api_key.as_str()) {
                return reply(400, json!({"code": 400, "error": "Invalid API key"}));
            }
            let Some(events) = request["events"]
                .as_array()
                .filter(|events| !events.is_empty())
                .cloned()
            else {
                return reply(
                    400,
                    json!({"code": 400, "error": "Request missing required field", "missing_field": "events"}),
                );
            };
            if events.len() >= 2000 || body.len() >= 1_000_000 {
                return reply(413, json!({"code": 413, "error": "Payload too large"}));
            }
            let missing: Vec<usize> = events
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e["event_type"].as_str().is_none()
                        || (e["user_id"].is_null() && e["device_id"].is_null())
                })
                .map(|(i, _)| i)
                .collect();
            if !missing.is_empty() {
                return reply(
                    400,
                    json!({"code": 400, "error": "Request missing required field", "events_with_missing_fields": {"event_type": missing}}),
                );
            }
            let periodic = s.options.fail_every;
            let fault = if periodic > 0 && s.requests.is_multiple_of(periodic) {
                if (s.requests / periodic).is_multiple_of(2) {
                    let first = events.first().and_then(|e| e["user_id"].as_str());
                    Some(Fault::Throttle(first.unwrap_or_default().to_string()))
                } else {
                    Some(Fault::Status(503))
                }
            } else {
                s.faults.pop_front()
            };
            match fault {
                Some(Fault::Hang(ms)) => *hang = Some(ms),
                Some(Fault::Status(code)) => {
                    return reply(code, json!({"code": code, "error": "injected"}));
                }
                Some(Fault::TooLarge) if events.len() > 1 => {
                    return reply(413, json!({"code": 413, "error": "Payload too large"}));
                }
                Some(Fault::Invalid(positions)) => {
                    return reply(
                        400,
                        json!({"code": 400, "error": "Invalid field values on some events", "events_with_invalid_fields": {"time": positions}}),
                    );
                }
                Some(Fault::Throttle(id)) => {
                    let hits: Vec<usize> = events
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| {
                            e["device_id"] == id.as_str() || e["user_id"] == id.as_str()
                        })
                        .map(|(i, _)| i)
                        .collect();
                    if !hits.is_empty() {
                        return reply(
                            429,
                            json!({"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 30,
                                                 "throttled_users": {id: 31}, "throttled_events": hits}),
                        );
                    }
                }
                _ => {}
            }
            // Amplitude's limit: 30 events/s per device or user, averaged over a recent window.
            let now = std::time::Instant::now();
            let mut throttled = Vec::new();
            for (i, e) in events.iter().enumerate() {
                let id = e["device_id"]
                    .as_str()
                    .or(e["user_id"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let window = s.recent.entry(id).or_default();
                while window
                    .front()
                    .is_some_and(|t| now.duration_since(*t).as_secs() >= 10)
                {
                    window.pop_front();
                }
                if window.len() >= 300 {
                    throttled.push(i);
                }
            }
            if !throttled.is_empty() {
                return reply(
                    429,
                    json!({"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 30, "throttled_events": throttled}),
                );
            }
            for e in &events {
                let id = e["device_id"]
                    .as_str()
                    .or(e["user_id"].as_str())
                    .unwrap_or_default()
                    .to_string();
                s.recent.entry(id).or_default().push_back(now);
                s.received += 1;
                let kept = if s.options.keep_events {
                    e.clone()
                } else {
                    Value::Null
                };
                s.ingested.insert(
                    e["insert_id"].as_str().unwrap_or_default().to_string(),
                    kept,
                );
            }
            reply(
                200,
                json!({"code": 200, "events_ingested": events.len(), "payload_size_bytes": body.len(), "server_upload_time": 0}),
            )
        }
        let app = axum::Router::new()
            .route("/2/httpapi", axum::routing::post(upload))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind amplitude");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        AmplitudeEmulator { url, state }
    }

    /// Scripts the next answers.
    pub fn fail_next(&self, faults: Vec<Fault>) {
        self.state.lock().unwrap().faults.extend(faults);
    }

    /// Events ingested, by insert_id (Amplitude dedups on it).
    pub fn ingested(&self) -> std::collections::BTreeMap<String, Value> {
        self.state.lock().unwrap().ingested.clone()
    }

    /// Distinct events ingested (by `insert_id`).
    pub fn distinct(&self) -> usize {
        self.state.lock().unwrap().ingested.len()
    }

    /// (events received including duplicates, requests).
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.received, s.requests)
    }
}
