//! `eddy-bench amplitude`: Currents delivery to an Amplitude HTTP API v2 emulator, unthrottled,
//! then under a storm of 429s and 5xx; events/s and loss (distinct `insert_id`s received).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::Args;
use serde_json::{Value, json};

use crate::load::{ADMIN, EddyServer};

/// Options of `eddy-bench amplitude`.
#[derive(Args)]
pub struct AmplitudeArgs {
    /// Events to deliver.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Emulator {
    seen: HashSet<String>,
    received: u64,
    requests: u64,
    /// Every n-th request fails (alternating 429 and 503); 0 never.
    fail_every: u64,
    /// When each request arrived.
    arrivals: Vec<Instant>,
}

async fn upload(State(state): State<Arc<Mutex<Emulator>>>, body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "{\"code\":400,\"error\":\"Invalid JSON request body\"}",
        )
            .into_response();
    };
    let Some(events) = request["events"].as_array() else {
        return (StatusCode::BAD_REQUEST, "{\"code\":400}").into_response();
    };
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    s.requests += 1;
    s.arrivals.push(Instant::now());
    if s.fail_every > 0 && s.requests.is_multiple_of(s.fail_every) {
        if (s.requests / s.fail_every).is_multiple_of(2) {
            let first = events
                .first()
                .and_then(|e| e["user_id"].as_str())
                .unwrap_or_default()
                .to_string();
            let body = json!({"code": 429, "error": "Too many requests for some devices and users", "eps_threshold": 30,
                              "throttled_users": {first: 31}, "throttled_events": [0]});
            return (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "{\"code\":503}").into_response();
    }
    for e in events {
        s.received += 1;
        if let Some(id) = e["insert_id"].as_str() {
            s.seen.insert(id.to_string());
        }
    }
    (
        StatusCode::OK,
        axum::Json(json!({"code": 200, "events_ingested": events.len()})),
    )
        .into_response()
}

/// Runs both rounds and prints a Markdown table.
pub async fn run(args: AmplitudeArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    println!(
        "| round | events | seconds | events/s | distinct received | lost | duplicates | requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (round, fail_every) in [
        ("unthrottled", 0u64),
        ("storm: every 5th request 429 or 503", 5),
    ] {
        let state = Arc::new(Mutex::new(Emulator {
            fail_every,
            ..Emulator::default()
        }));
        let app = axum::Router::new()
            .route("/2/httpapi", axum::routing::post(upload))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });

        let server = EddyServer::start(&eddy, &["users.track"]).await?;
        let client = reqwest::Client::new();
        let before = jiff::Timestamp::now().to_string();
        // Many users: Amplitude's per-device limit is not what this measures.
        crate::load::ingest_events(&server, args.events, "amp-user").await?;
        let created = client
            .post(format!("{}/eddy/v1/workspaces/default/currents", server.url))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "amp", "type": "amplitude", "api_key": "k", "endpoint": endpoint, "throttle_seconds": 1}))
            .send()
            .await?;
        anyhow::ensure!(
            created.status().as_u16() == 201,
            "connector: {}",
            created.text().await?
        );
        let started = Instant::now();
        client
            .post(format!(
                "{}/eddy/v1/workspaces/default/currents/amp/replay",
                server.url
            ))
            .bearer_auth(ADMIN)
            .json(&json!({"from": before}))
            .send()
            .await?;
        loop {
            let done = state.lock().map(|s| s.seen.len()).unwrap_or(0);
            if done >= args.events || started.elapsed() > Duration::from_secs(300) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        if std::env::var("EDDY_BENCH_TIMELINE").is_ok()
            && let Ok(s) = state.lock()
            && let (Some(first), Some(last)) = (s.arrivals.first(), s.arrivals.last())
        {
            eprintln!(
                "first request after {:.3} s, last after {:.3} s, {} requests",
                first.duration_since(started).as_secs_f64(),
                last.duration_since(started).as_secs_f64(),
                s.arrivals.len()
            );
        }
        let (distinct, received, requests) = state
            .lock()
            .map(|s| (s.seen.len(), s.received, s.requests))
            .unwrap_or_default();
        server.stop();
        println!(
            "| {round} | {} | {elapsed:.2} | {:.0} | {distinct} | {} | {} | {requests} |",
            args.events,
            distinct as f64 / elapsed,
            args.events.saturating_sub(distinct),
            received.saturating_sub(distinct as u64)
        );
    }
    Ok(())
}
