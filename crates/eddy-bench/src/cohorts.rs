//! `eddy-bench cohorts`: partner cohort import through `eddy serve`, 1,000 user ids per
//! request, every id a real membership change; membership changes per second.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::load::{ADMIN, EddyServer, rss_mib};

/// Options of `eddy-bench cohorts`.
#[derive(Args)]
pub struct CohortArgs {
    /// Users created before the import (cohorts only match existing users).
    #[arg(long, default_value_t = 200_000)]
    users: usize,
    /// Cohorts each user joins (each a fresh cohort, so every id is a change).
    #[arg(long, default_value_t = 10)]
    cohorts: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<std::path::PathBuf>,
}

const PARTNER_KEY: &str = "bench-partner-key";

/// Sends `bodies` to `url` over `connections` connections; returns the elapsed time.
async fn send_all(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    bodies: Vec<String>,
    connections: usize,
) -> anyhow::Result<Duration> {
    let requests = bodies.into_iter().map(|b| (url.to_string(), b)).collect();
    post_all(client, key, requests, connections).await
}

/// POSTs each `(url, JSON body)` over `connections` connections, failing on any non-2xx;
/// returns the elapsed time.
pub(crate) async fn post_all(
    client: &reqwest::Client,
    key: Option<&str>,
    requests: Vec<(String, String)>,
    connections: usize,
) -> anyhow::Result<Duration> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(requests));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, queue, key) = (client.clone(), queue.clone(), key.map(str::to_string));
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((url, body)) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(key) = &key {
                    request = request.bearer_auth(key);
                }
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{url}: {}",
                    response.status()
                );
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// Runs the benchmark.
pub async fn run(args: CohortArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let server = EddyServer::start(&eddy, &["users.track", "partners"]).await?;
    let (url, key) = (server.url.clone(), server.key.clone());
    let client = reqwest::Client::new();
    let users: Vec<String> = (0..args.users).map(|i| format!("member-{i}")).collect();
    let track: Vec<String> = users
        .chunks(75)
        .map(|chunk| json!({"attributes": chunk.iter().map(|u| json!({"external_id": u})).collect::<Vec<_>>()}).to_string())
        .collect();
    let created_in = send_all(
        &client,
        &format!("{url}/users/track"),
        Some(&key),
        track,
        args.connections,
    )
    .await?;
    eprintln!(
        "created {} users in {:.1} s",
        args.users,
        created_in.as_secs_f64()
    );
    client
        .put(format!("{url}/eddy/v1/partners/amplitude"))
        .bearer_auth(ADMIN)
        .json(&json!({"partner_api_key": PARTNER_KEY}))
        .send()
        .await?;
    let secret: Value = client
        .post(format!(
            "{url}/eddy/v1/workspaces/default/partners/amplitude/data-import-key"
        ))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .json()
        .await?;
    let secret = secret["key"].as_str().unwrap_or_default().to_string();
    let mut bodies = Vec::new();
    for cohort in 0..args.cohorts {
        for chunk in users.chunks(1000) {
            bodies.push(
                json!({"partner_api_key": PARTNER_KEY, "client_secret": secret, "cohort_id": format!("cohort-{cohort}"),
                       "cohort_changes": [{"user_ids": chunk}]})
                .to_string(),
            );
        }
    }
    let requests = bodies.len();
    let changes = args.users * args.cohorts;
    let elapsed = send_all(
        &client,
        &format!("{url}/partners/amplitude/cohorts/users"),
        None,
        bodies,
        args.connections,
    )
    .await?;
    // Check every change landed: a segment on the last cohort has every user.
    let segment: Value = client
        .post(format!("{url}/eddy/v1/workspaces/default/segments"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "check", "filter": {"attribute": "amplitude_cohorts", "op": "includes_value", "value": format!("cohort-{}", args.cohorts - 1)}}))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        segment["size"].as_u64() == Some(args.users as u64),
        "cohort size {} != {}",
        segment["size"],
        args.users
    );
    let (peak, _) = rss_mib(server.child.id());
    server.stop();
    println!(
        "| requests | ids per request | membership changes | seconds | changes/s | peak RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {requests} | 1000 | {changes} | {:.2} | {:.0} | {peak:.0} |",
        elapsed.as_secs_f64(),
        changes as f64 / elapsed.as_secs_f64()
    );
    println!(
        "settings: {} users, {} cohorts, {} connections; durable (every 201 fsync'd)",
        args.users, args.cohorts, args.connections
    );
    Ok(())
}
