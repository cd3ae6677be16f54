//! `eddy-bench memory`: `eddy serve` holding N profiles of 20 custom attributes each — resident
//! memory while serving, and the time from a restart to serving again (health, then an exact
//! segment size answered from the rebuilt index).

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::load::{ADMIN, EddyServer, rss_mib};

/// Options of `eddy-bench memory`.
#[derive(Args)]
pub struct MemoryArgs {
    /// Profiles to create.
    #[arg(long, default_value_t = 10_000_000)]
    profiles: usize,
    /// Requests in flight while loading.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<std::path::PathBuf>,
    /// Restart after SIGKILL (a crash: the segment index is rebuilt) instead of SIGTERM.
    #[arg(long)]
    kill: bool,
    /// `[store] writer_cache_profiles` of the server [default: eddy's].
    #[arg(long)]
    writer_cache_profiles: Option<usize>,
}

const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];
const CITIES: [&str; 5] = ["Seattle", "Paris", "Lisbon", "Tokyo", "Berlin"];
const DEVICES: [&str; 3] = ["ios", "android", "web"];
const LOCALES: [&str; 4] = ["en", "fr", "pt", "ja"];

/// 20 custom attributes: numbers, strings from small and large vocabularies, booleans, times.
pub(crate) fn profile(i: usize) -> Value {
    let r = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    json!({
        "external_id": format!("mem-{i:09}"),
        "plan": PLANS[(r % 4) as usize], "city": CITIES[((r >> 8) % 5) as usize],
        "score": (r >> 16) % 1000, "visits": (r >> 26) % 500, "ltv": ((r >> 30) % 100_000) as f64 / 100.0,
        "vip": (r >> 40).is_multiple_of(10), "churn_risk": (r >> 44).is_multiple_of(3), "newsletter": (r >> 46).is_multiple_of(2),
        "segment_a": (r >> 48) % 7, "segment_b": (r >> 50) % 11, "cohort_week": (r >> 52) % 52,
        "referrer": format!("ref-{}", (r >> 20) % 2000), "campaign": format!("c-{}", (r >> 24) % 300),
        "device": DEVICES[((r >> 34) % 3) as usize],
        "locale_hint": LOCALES[((r >> 36) % 4) as usize],
        "last_order_at": format!("2024-{:02}-{:02}T10:00:00Z", (r >> 38) % 12 + 1, (r >> 42) % 28 + 1),
        "signup_at": format!("2023-{:02}-{:02}T08:00:00Z", (r >> 54) % 12 + 1, (r >> 58) % 28 + 1),
        "orders": (r >> 12) % 40, "avg_basket": ((r >> 14) % 20_000) as f64 / 100.0, "nps": (r >> 18) % 11,
    })
}

/// Runs the benchmark and prints a Markdown table.
pub async fn run(args: MemoryArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let extra = args
        .writer_cache_profiles
        .map(|n| format!("[store]\nwriter_cache_profiles = {n}\n"))
        .unwrap_or_default();
    let mut server = EddyServer::start_with(&eddy, &["users.track", "admin"], None, &extra).await?;
    let client = reqwest::Client::new();
    let track = format!("{}/users/track", server.url);
    let started = Instant::now();
    let mut next = 0usize;
    let mut inflight = tokio::task::JoinSet::new();
    while next < args.profiles || !inflight.is_empty() {
        while next < args.profiles && inflight.len() < args.connections {
            let end = (next + 75).min(args.profiles);
            let objects: Vec<Value> = (next..end).map(profile).collect();
            let body = json!({"attributes": objects}).to_string();
            let request = client
                .post(&track)
                .bearer_auth(&server.key)
                .header("content-type", "application/json")
                .body(body);
            inflight.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
            next = end;
        }
        if let Some(done) = inflight.join_next().await {
            anyhow::ensure!(done?? == 201, "ingest failed");
        }
    }
    let loaded = started.elapsed();
    let filter = json!({"and": [{"attribute": "plan", "op": "equals", "value": "pro"},
                                {"attribute": "score", "op": "greater_than", "value": 500}]});
    let created: Value = client
        .post(format!(
            "{}/eddy/v1/workspaces/default/segments",
            server.url
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "pro-high", "filter": filter}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let size = created["size"].as_u64().unwrap_or(0);
    anyhow::ensure!(size > 0, "segment: {created}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (peak, serving) = rss_mib(server.child.id());
    let index_serving = index_mib(&client, &server.url).await?;

    let (stopped, healthy) = server.restart(&eddy, args.kill).await?;
    let restarted = Instant::now() - healthy;
    let segment_url = format!("{}/eddy/v1/workspaces/default/segments/{id}", server.url);
    let answered = loop {
        let body: Value = client
            .get(&segment_url)
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        if body["size"].as_u64() == Some(size) {
            break restarted.elapsed();
        }
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(300),
            "segment never answered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, after_restart) = rss_mib(server.child.id());
    let index_restarted = index_mib(&client, &server.url).await?;
    server.stop();
    println!(
        "| profiles | attributes each | load s | profiles/s | RSS serving MiB | peak RSS MiB | stop s | restart → /health s | restart → segment answered s | RSS after restart MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | 20 | {:.1} | {:.0} | {serving:.0} | {peak:.0} | {:.1} | {:.1} | {:.1} | {after_restart:.0} |",
        args.profiles,
        loaded.as_secs_f64(),
        args.profiles as f64 / loaded.as_secs_f64(),
        stopped.as_secs_f64(),
        healthy.as_secs_f64(),
        answered.as_secs_f64(),
    );
    eprintln!("segment size {size}");
    println!(
        "\nsegment index (eddy_segment_index_bytes): {index_serving:.0} MiB serving, {index_restarted:.0} MiB after the restart"
    );
    Ok(())
}

/// The segment index's own estimate of its heap, from `/metrics`.
async fn index_mib(client: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(crate::load::metric(&text, "eddy_segment_index_bytes") / (1024.0 * 1024.0))
}
