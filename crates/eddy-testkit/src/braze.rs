//! An emulated Braze REST endpoint (`/users/track`) with scripted faults, for `eddy sync`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// What the emulator does with the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with `Retry-After: 1` and `X-RateLimit-Remaining: 0`.
    Throttle,
    /// 500.
    ServerError,
    /// 401.
    Unauthorized,
}

#[derive(Default)]
pub struct EmulatorState {
    /// Every attributes object applied, in order.
    pub applied: Vec<Value>,
    /// Requests answered 2xx, with the external ids they carried.
    pub answered: Vec<Vec<String>>,
    /// Scripted faults, consumed one per request.
    pub faults: std::collections::VecDeque<Fault>,
    /// Objects whose external id starts with this are refused (non-fatal, by index).
    pub refuse_prefix: Option<String>,
    /// Milliseconds to wait before answering.
    pub delay_ms: u64,
    pub requests: usize,
}

/// An emulated Braze `/users/track`: 75-object limit, per-object errors by index, scripted
/// 429/500/401, and Braze's rate-limit headers.
pub struct Braze {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<EmulatorState>>,
}

pub async fn spawn_braze() -> Braze {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let state = Arc::new(Mutex::new(EmulatorState::default()));
    let shared = state.clone();
    let handler = move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
        let state = shared.clone();
        async move {
            let delay = state.lock().unwrap().delay_ms;
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            let mut s = state.lock().unwrap();
            s.requests += 1;
            let reset = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1)
            .to_string();
            let mut out = HeaderMap::new();
            out.insert("x-ratelimit-limit", "250000".parse().unwrap());
            out.insert("x-ratelimit-reset", reset.parse().unwrap());
            if headers.get("authorization").and_then(|v| v.to_str().ok())
                != Some("Bearer braze-key")
            {
                return (
                    StatusCode::UNAUTHORIZED,
                    out,
                    axum::Json(json!({"message": "Invalid API key: "})),
                )
                    .into_response();
            }
            match s.faults.pop_front() {
                Some(Fault::Throttle) => {
                    out.insert("x-ratelimit-remaining", "0".parse().unwrap());
                    out.insert("retry-after", "1".parse().unwrap());
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        out,
                        axum::Json(json!({"message": "API rate limit reached"})),
                    )
                        .into_response();
                }
                Some(Fault::ServerError) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, out, "oops").into_response();
                }
                Some(Fault::Unauthorized) => {
                    return (
                        StatusCode::UNAUTHORIZED,
                        out,
                        axum::Json(json!({"message": "Invalid API key: "})),
                    )
                        .into_response();
                }
                None => {}
            }
            out.insert("x-ratelimit-remaining", "249999".parse().unwrap());
            let objects = body["attributes"].as_array().cloned().unwrap_or_default();
            if objects.len() > 75 {
                return (
                    StatusCode::BAD_REQUEST,
                    out,
                    axum::Json(json!({"message": "Too many objects"})),
                )
                    .into_response();
            }
            let mut errors = Vec::new();
            let mut ids = Vec::new();
            for (i, o) in objects.iter().enumerate() {
                let id = o["external_id"].as_str().unwrap_or("").to_string();
                if s.refuse_prefix
                    .as_deref()
                    .is_some_and(|p| id.starts_with(p))
                {
                    errors.push(json!({"type": "'first_name' is not valid", "input_array": "attributes", "index": i}));
                    continue;
                }
                s.applied.push(o.clone());
                ids.push(id);
            }
            s.answered.push(ids);
            let mut reply =
                json!({"message": "success", "attributes_processed": objects.len() - errors.len()});
            if !errors.is_empty() {
                reply["errors"] = json!(errors);
            }
            (StatusCode::CREATED, out, axum::Json(reply)).into_response()
        }
    };
    let router = axum::Router::new().route("/users/track", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Braze { addr, state }
}

impl Braze {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The applied objects' external ids.
    pub fn applied_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .applied
            .iter()
            .map(|o| o["external_id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn take_applied(&self) -> Vec<Value> {
        std::mem::take(&mut self.state.lock().unwrap().applied)
    }
}
