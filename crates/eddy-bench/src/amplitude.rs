//! `eddy-bench amplitude`: Currents delivery to an Amplitude HTTP API v2 emulator, unthrottled,
//! then under a storm of 429s and 5xx; events/s and loss (distinct `insert_id`s received).

use std::time::{Duration, Instant};

use clap::Args;
use eddy_testkit::amplitude::{AmplitudeEmulator, AmplitudeOptions};
use serde_json::json;

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

/// Runs both rounds and prints a Markdown table.
pub async fn run(args: AmplitudeArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    println!(
        "| round | events | seconds | events/s | distinct received | lost | duplicates | requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (round, fail_every) in [
        ("unthrottled", 0usize),
        ("storm: every 5th request 429 or 503", 5),
    ] {
        let options = AmplitudeOptions {
            keep_events: false,
            fail_every,
        };
        let amplitude = AmplitudeEmulator::start_with("k", options).await;
        let endpoint = amplitude.url.clone();

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
        while amplitude.distinct() < args.events && started.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let distinct = amplitude.distinct();
        let (received, requests) = amplitude.counts();
        server.stop();
        println!(
            "| {round} | {} | {elapsed:.2} | {:.0} | {distinct} | {} | {} | {requests} |",
            args.events,
            distinct as f64 / elapsed,
            args.events.saturating_sub(distinct),
            received.saturating_sub(distinct)
        );
    }
    Ok(())
}
