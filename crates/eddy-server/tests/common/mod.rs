//! `spawn_app()`: a real server on port 0 with a fresh data dir, and a REST key for it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use eddy_currents::avro::{Schema, Type};
use eddy_server::{App, Config};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub key: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    pub store: eddy_store::Store,
    pub currents: std::sync::Arc<eddy_currents::Currents>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let mut app = start(dir, tweak).await;
    app._tmp = Some(tmp);
    app
}

/// Starts a server on an existing data dir (for restarts).
pub async fn start(dir: PathBuf, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config {
        data_dir: dir.clone(),
        admin_token: Some("admin-secret".into()),
        // Inside the data dir in tests, so that a restart finds it and nothing outlives the test.
        secrets_key_file: Some(dir.join("test-secrets.key")),
        ..Config::default()
    };
    tweak(&mut config);
    let app = App::build(&config).await.expect("app builds");
    let store = app.store.clone();
    let currents = app.currents.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        app.serve(listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    let mut test = TestApp {
        addr,
        key: String::new(),
        admin_token: config.admin_token.clone().unwrap_or_default(),
        client: reqwest::Client::new(),
        dir,
        store,
        currents,
        stop: Some(stop),
        done: Some(done),
        _tmp: None,
    };
    test.key = test.create_key("default", None).await;
    test
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn create_key(&self, ws: &str, permissions: Option<&[&str]>) -> String {
        let mut body = json!({"name": "test"});
        if let Some(p) = permissions {
            body["permissions"] = json!(p);
        }
        let (status, body) = self
            .admin_post(&format!("/eddy/v1/workspaces/{ws}/api-keys"), body)
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"].as_str().expect("key").to_string()
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin_send(reqwest::Method::POST, path, body).await
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin_send(reqwest::Method::PUT, path, body).await
    }

    async fn admin_send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON with this app's REST key.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(&self.key, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn track(&self, body: Value) -> (u16, Value) {
        self.post("/users/track", body).await
    }

    /// The exported profile of an external id, or `None`.
    pub async fn user(&self, external_id: &str) -> Option<Value> {
        let (status, body) = self
            .post("/users/export/ids", json!({"external_ids": [external_id]}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["users"].as_array().and_then(|u| u.first().cloned())
    }

    pub async fn user_by(&self, query: Value) -> Option<Value> {
        let (status, body) = self.post("/users/export/ids", query).await;
        assert_eq!(status, 201, "{body}");
        body["users"].as_array().and_then(|u| u.first().cloned())
    }

    pub async fn usage_total(&self) -> (u64, u64) {
        let (_, body) = self.admin_get("/eddy/v1/workspaces/default/usage").await;
        (
            body["total"]["billable"].as_u64().unwrap_or(0),
            body["total"]["non_billable"].as_u64().unwrap_or(0),
        )
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Graceful stop: in-flight requests finish, the writer commits and stops.
    pub async fn stop(mut self) -> PathBuf {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        let dir = self.dir.clone();
        // Keep the temp dir alive for a restart by leaking it into the caller's hands.
        if let Some(tmp) = self._tmp.take() {
            let _ = tmp.keep();
        }
        dir
    }
}

/// A small in-process S3-compatible server for tests: path-style PUT and GET of objects,
/// keys kept exactly as sent (`+` included). It ignores signatures and refuses overwrites.
pub struct TestS3 {
    pub endpoint: String,
    objects: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TestS3 {
    pub async fn start() -> TestS3 {
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        type Objects =
            std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>;
        type Failing = std::sync::Arc<std::sync::atomic::AtomicBool>;
        let objects: Objects = Default::default();
        let failing: Failing = Default::default();
        async fn put(
            State((objects, failing)): State<(Objects, Failing)>,
            Path((bucket, key)): Path<(String, String)>,
            body: axum::body::Bytes,
        ) -> Response {
            if failing.load(std::sync::atomic::Ordering::SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let etag = format!("\"{:x}\"", body.len());
            let mut objects = objects.lock().unwrap();
            // eddy never overwrites an object: refusing makes any attempt fail its test.
            if objects.contains_key(&format!("{bucket}/{key}")) {
                return (StatusCode::CONFLICT, "object exists").into_response();
            }
            objects.insert(format!("{bucket}/{key}"), body.to_vec());
            (StatusCode::OK, [("ETag", etag)]).into_response()
        }
        async fn get(
            State((objects, _)): State<(Objects, Failing)>,
            Path((bucket, key)): Path<(String, String)>,
        ) -> Response {
            match objects.lock().unwrap().get(&format!("{bucket}/{key}")) {
                Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        let app = axum::Router::new()
            .route("/{bucket}/{*key}", axum::routing::put(put).get(get))
            .with_state((objects.clone(), failing.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind s3");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestS3 {
            endpoint,
            objects,
            failing,
        }
    }

    /// Makes every PUT answer 503 (an outage) or work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every object key (`bucket/key`).
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// One object's bytes.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().unwrap().get(key).cloned()
    }
}

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

#[derive(Default)]
struct AmplitudeState {
    api_key: String,
    faults: std::collections::VecDeque<Fault>,
    ingested: std::collections::BTreeMap<String, Value>,
    received: usize,
    requests: usize,
    recent: std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>,
}

/// An emulator of Amplitude's HTTP API v2 following its documented limits and error bodies.
pub struct AmplitudeEmulator {
    pub url: String,
    state: std::sync::Arc<std::sync::Mutex<AmplitudeState>>,
}

impl AmplitudeEmulator {
    pub async fn start(api_key: &str) -> AmplitudeEmulator {
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        type Shared = std::sync::Arc<std::sync::Mutex<AmplitudeState>>;
        let state: Shared = std::sync::Arc::new(std::sync::Mutex::new(AmplitudeState {
            api_key: api_key.to_string(),
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
            let Some(events) = request["events"].as_array().cloned() else {
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
            let fault = s.faults.pop_front();
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
                s.ingested.insert(
                    e["insert_id"].as_str().unwrap_or_default().to_string(),
                    e.clone(),
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

    /// (events received including duplicates, requests).
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.received, s.requests)
    }
}

/// Avro reading for tests: enough of the spec for the Currents schemas (null codec).
fn read_long(b: &[u8], pos: &mut usize) -> i64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let byte = b[*pos];
        *pos += 1;
        n |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn read_bytes<'a>(b: &'a [u8], pos: &mut usize) -> &'a [u8] {
    let len = read_long(b, pos) as usize;
    let out = &b[*pos..*pos + len];
    *pos += len;
    out
}

fn read_value(ty: &Type, b: &[u8], pos: &mut usize) -> Value {
    match ty {
        Type::Null => Value::Null,
        Type::Boolean => {
            *pos += 1;
            json!(b[*pos - 1] == 1)
        }
        Type::Int | Type::Long => json!(read_long(b, pos)),
        Type::Float => {
            let v = f32::from_le_bytes(b[*pos..*pos + 4].try_into().unwrap());
            *pos += 4;
            json!(v)
        }
        Type::Double => {
            let v = f64::from_le_bytes(b[*pos..*pos + 8].try_into().unwrap());
            *pos += 8;
            json!(v)
        }
        Type::String => json!(String::from_utf8(read_bytes(b, pos).to_vec()).unwrap()),
        Type::Union(branches) => {
            let i = read_long(b, pos) as usize;
            read_value(&branches[i], b, pos)
        }
        Type::Array(items) => {
            let mut out = Vec::new();
            loop {
                let n = read_long(b, pos);
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    out.push(read_value(items, b, pos));
                }
            }
            json!(out)
        }
    }
}

/// Reads an Object Container File (null codec): its schema JSON and records.
pub fn read_avro(file: &[u8]) -> (String, Vec<Map<String, Value>>) {
    assert_eq!(&file[..4], b"Obj\x01");
    let mut pos = 4;
    let mut schema_json = String::new();
    loop {
        let entries = read_long(file, &mut pos);
        if entries == 0 {
            break;
        }
        for _ in 0..entries {
            let key = String::from_utf8(read_bytes(file, &mut pos).to_vec()).unwrap();
            let value = read_bytes(file, &mut pos).to_vec();
            if key == "avro.schema" {
                schema_json = String::from_utf8(value).unwrap();
            } else {
                assert_eq!(
                    (key.as_str(), value.as_slice()),
                    ("avro.codec", b"null".as_slice())
                );
            }
        }
    }
    let sync = file[pos..pos + 16].to_vec();
    pos += 16;
    let schema = Schema::parse(Box::leak(schema_json.clone().into_boxed_str())).unwrap();
    let mut records = Vec::new();
    while pos < file.len() {
        let count = read_long(file, &mut pos);
        let _size = read_long(file, &mut pos);
        for _ in 0..count {
            let mut record = Map::new();
            for field in &schema.fields {
                record.insert(field.name.clone(), read_value(&field.ty, file, &mut pos));
            }
            records.push(record);
        }
        assert_eq!(
            &file[pos..pos + 16],
            sync.as_slice(),
            "sync marker after the block"
        );
        pos += 16;
    }
    (schema_json, records)
}
