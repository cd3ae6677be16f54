//! An emulator of Amplitude's User Profile API (`GET /v1/userprofile`), as Amplitude documents
//! it: `Authorization: Api-Key <secret>` with its 401 texts, `user_id`/`device_id`,
//! recommendations (`get_recs`, `rec_id`), user properties (`get_amp_props`), cohorts
//! (`get_cohort_ids`), computations (`get_computations`, `comp_id`, answered inside `amp_props`),
//! the "not seen before" error, and a per-minute request limit answered with 429.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// One user Amplitude knows.
#[derive(Debug, Clone, Default)]
pub struct ProfileUser {
    /// Its device id.
    pub device_id: String,
    /// Recommendation id → items.
    pub recommendations: HashMap<String, Vec<String>>,
    /// User properties.
    pub amp_props: Map<String, Value>,
    /// Cohorts the user is in.
    pub cohort_ids: Vec<String>,
    /// Computation id → value.
    pub computations: Map<String, Value>,
}

#[derive(Default)]
struct State {
    secret: String,
    per_minute: usize,
    users: HashMap<String, ProfileUser>,
    window: Option<(Instant, usize)>,
    requests: usize,
}

/// The running emulator.
pub struct AmplitudeProfileApi {
    /// Its base URL (`http://127.0.0.1:PORT`); the endpoint is `{url}/v1/userprofile`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl AmplitudeProfileApi {
    /// Starts an emulator that accepts `secret` and answers at most `per_minute` requests a
    /// minute (Amplitude's limit is 600).
    pub async fn start(secret: &str, per_minute: usize) -> AmplitudeProfileApi {
        let state = Arc::new(Mutex::new(State {
            secret: secret.to_string(),
            per_minute,
            ..State::default()
        }));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/v1/userprofile",
            axum::routing::get(
                move |headers: axum::http::HeaderMap,
                      axum::extract::Query(query): axum::extract::Query<
                    HashMap<String, String>,
                >| {
                    let state = shared.clone();
                    async move { answer(&state, &headers, &query) }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind profile api");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        AmplitudeProfileApi { url, state }
    }

    /// Adds (or replaces) a user, by user id.
    pub fn add_user(&self, user_id: &str, user: ProfileUser) {
        self.state
            .lock()
            .unwrap()
            .users
            .insert(user_id.to_string(), user);
    }

    /// Requests received (answered or refused).
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }
}

fn answer(
    state: &Mutex<State>,
    headers: &axum::http::HeaderMap,
    query: &HashMap<String, String>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let mut s = state.lock().unwrap();
    s.requests += 1;
    let now = Instant::now();
    let (started, count) = match s.window {
        Some((start, n)) if now.duration_since(start) < Duration::from_secs(60) => (start, n + 1),
        _ => (now, 1),
    };
    s.window = Some((started, count));
    if count > s.per_minute {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": "Number of requests per minute exceeds system limit. Contact Support if you need this limit raised"})),
        )
            .into_response();
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(key) = auth.strip_prefix("Api-Key ") else {
        return (
            StatusCode::UNAUTHORIZED,
            "Missing Api-Key in Authorization header",
        )
            .into_response();
    };
    if key != s.secret {
        return (StatusCode::UNAUTHORIZED, "Invalid Api-Key").into_response();
    }
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "true");
    let found = match (query.get("user_id"), query.get("device_id")) {
        (Some(id), _) => s.users.get(id).map(|u| (id.clone(), u.clone())),
        (None, Some(device)) => s
            .users
            .iter()
            .find(|(_, u)| &u.device_id == device)
            .map(|(id, u)| (id.clone(), u.clone())),
        (None, None) => None,
    };
    let Some((user_id, user)) = found else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "User id and device id not seen before"})),
        )
            .into_response();
    };
    let recommendations = if flag("get_recs") || query.contains_key("rec_id") {
        let ids = query.get("rec_id").cloned().unwrap_or_default();
        let recs: Vec<Value> = ids
            .split(',')
            .filter(|id| !id.is_empty())
            .filter_map(|id| {
                user.recommendations.get(id).map(|items| {
                    json!({"rec_id": id, "child_rec_id": id, "items": items, "is_control": false,
                           "recommendation_source": "model", "last_updated": 1608670720})
                })
            })
            .collect();
        Value::Array(recs)
    } else {
        Value::Null
    };
    let mut props: Option<Map<String, Value>> = None;
    if flag("get_amp_props") {
        props = Some(user.amp_props.clone());
    }
    if flag("get_computations") {
        props
            .get_or_insert_with(Map::new)
            .extend(user.computations.clone());
    } else if let Some(comp) = query.get("comp_id") {
        let p = props.get_or_insert_with(Map::new);
        for id in comp.split(',') {
            p.insert(
                id.to_string(),
                user.computations.get(id).cloned().unwrap_or(Value::Null),
            );
        }
    }
    let cohorts = if flag("get_cohort_ids") {
        json!(user.cohort_ids)
    } else {
        Value::Null
    };
    axum::Json(json!({"userData": {
        "recommendations": recommendations,
        "user_id": user_id,
        "device_id": user.device_id,
        "amp_props": props.map(Value::Object).unwrap_or(Value::Null),
        "cohort_ids": cohorts,
    }}))
    .into_response()
}
