//! `eddy-bench currents-s3`: end-to-end Currents delivery into a local S3-compatible server.
//! Events are ingested through `/users/track`, then a replay delivers them from the outbox into
//! Avro files in the test kit's S3 server; every file is decoded afterwards and its distinct event
//! ids counted, so the figure is events stored and readable per second, with loss and duplicates.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clap::Args;
use eddy_testkit::TestS3;
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

/// Runs the benchmark and prints a Markdown row.
pub async fn run(args: CurrentsS3Args) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let s3 = TestS3::start().await;
    let endpoint = s3.endpoint.clone();

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
    // Done when the connector reports every event stored (S3 acknowledged its file); every file
    // is decoded afterwards, so the figure still means stored and readable.
    let status_url = format!("{}/eddy/v1/workspaces/default/currents/s3", server.url);
    loop {
        let status: Value = client
            .get(&status_url)
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        let delivered = status["delivered"].as_u64().unwrap_or(0);
        if delivered >= args.events as u64 || started.elapsed() > Duration::from_secs(300) {
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
    let (mut files, mut bytes, mut records) = (0u64, 0usize, 0u64);
    let mut ids = HashSet::new();
    for key in s3.keys() {
        let file = s3.get(&key).unwrap_or_default();
        let decoded = eddy_currents::avro::read_container(&file)
            .map_err(|e| anyhow::anyhow!("{key} could not be decoded: {e}"))?;
        files += 1;
        bytes += file.len();
        for record in decoded {
            records += 1;
            if let Some(id) = record.get("id").and_then(Value::as_str) {
                ids.insert(id.to_string());
            }
        }
    }
    println!("| events | seconds | events/s | files | MB | lost | duplicates |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {elapsed:.2} | {:.0} | {} | {:.1} | {} | {} |",
        args.events,
        ids.len() as f64 / elapsed,
        files,
        bytes as f64 / 1e6,
        args.events.saturating_sub(ids.len()),
        records.saturating_sub(ids.len() as u64)
    );
    eprintln!("connector: {status}");
    Ok(())
}
