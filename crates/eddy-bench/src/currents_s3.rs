//! `eddy-bench currents-s3`: end-to-end Currents delivery into a local S3-compatible server.
//! Events are ingested through `/users/track`, then a replay delivers them from the outbox into
//! Avro files; the server decodes every file it receives and counts distinct event ids, so the
//! figure is events stored and readable per second, with loss and duplicates.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clap::Args;
use serde_json::{Value, json};

use crate::load::{ADMIN, EddyServer};

/// Options of `eddy-bench currents-s3`.
#[derive(Args)]
pub struct CurrentsS3Args {
    /// Events to deliver.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Sink {
    ids: HashSet<String>,
    records: u64,
    files: u64,
    bytes: u64,
    bad: u64,
}

async fn put(
    State(sink): State<Arc<Mutex<Sink>>>,
    Path((_bucket, _key)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let records = eddy_currents::avro::read_container(&body);
    let Ok(mut s) = sink.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    s.files += 1;
    s.bytes += body.len() as u64;
    match records {
        Ok(records) => {
            for r in records {
                s.records += 1;
                if let Some(id) = r.get("id").and_then(Value::as_str) {
                    s.ids.insert(id.to_string());
                }
            }
        }
        Err(_) => s.bad += 1,
    }
    // S3 answers a PUT with the object's ETag; clients check that it is there.
    (StatusCode::OK, [("ETag", format!("\"{:x}\"", body.len()))]).into_response()
}

/// Runs the benchmark and prints a Markdown row.
pub async fn run(args: CurrentsS3Args) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let sink = Arc::new(Mutex::new(Sink::default()));
    let app = axum::Router::new()
        .route("/{bucket}/{*key}", axum::routing::put(put))
        .layer(DefaultBodyLimit::disable())
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = EddyServer::start(&eddy, &["users.track"]).await?;
    let client = reqwest::Client::new();
    let before = jiff::Timestamp::now().to_string();
    crate::load::ingest_events(&server, args.events, "s3-user").await?;
    let created = client
        .post(format!(
            "{}/eddy/v1/workspaces/default/currents",
            server.url
        ))
        .bearer_auth(ADMIN)
        .json(
            &json!({"name": "s3", "type": "s3", "bucket": "bench", "endpoint": endpoint,
                      "access_key_id": "bench", "secret_access_key": "bench",
                      "event_types": ["users.behaviors.CustomEvent"], "flush_interval_seconds": 1}),
        )
        .send()
        .await?;
    anyhow::ensure!(
        created.status().as_u16() == 201,
        "connector: {}",
        created.text().await?
    );
    let started = Instant::now();
    let replay = client
        .post(format!(
            "{}/eddy/v1/workspaces/default/currents/s3/replay",
            server.url
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"from": before}))
        .send()
        .await?;
    anyhow::ensure!(
        replay.status().is_success(),
        "replay: {}",
        replay.text().await?
    );
    loop {
        let done = sink.lock().map(|s| s.ids.len()).unwrap_or(0);
        if done >= args.events || started.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let status: Value = client
        .get(format!(
            "{}/eddy/v1/workspaces/default/currents/s3",
            server.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .json()
        .await?;
    server.stop();
    let s = sink.lock().map_err(|_| anyhow::anyhow!("sink poisoned"))?;
    anyhow::ensure!(s.bad == 0, "{} files could not be decoded", s.bad);
    println!("| events | seconds | events/s | files | MB | lost | duplicates |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {elapsed:.2} | {:.0} | {} | {:.1} | {} | {} |",
        args.events,
        s.ids.len() as f64 / elapsed,
        s.files,
        s.bytes as f64 / 1e6,
        args.events.saturating_sub(s.ids.len()),
        s.records.saturating_sub(s.ids.len() as u64)
    );
    eprintln!("connector: {status}");
    Ok(())
}
