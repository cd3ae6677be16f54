//! `eddy-bench dashboard`: every dashboard page's answer time with N profiles stored (20
//! custom attributes each, events, three saved segments, a full API log), asked one at a time
//! as a person would; the time includes the loopback round trip, so it bounds the server's.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::cohorts::post_all;
use crate::load::{ADMIN, EddyServer};

/// Options of `eddy-bench dashboard`.
#[derive(Args)]
pub struct DashboardArgs {
    /// Profiles to create.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Times each page is asked for.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Requests in flight while loading.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<std::path::PathBuf>,
}

/// Runs the benchmark and prints a Markdown table.
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let server = EddyServer::start(&eddy, &["users.track", "admin", "dashboard"]).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = server.url.clone();
    let track = format!("{url}/users/track");
    let mut requests = Vec::new();
    for start in (0..args.profiles).step_by(75) {
        let end = (start + 75).min(args.profiles);
        let attributes: Vec<Value> = (start..end).map(crate::memory::profile).collect();
        let events: Vec<Value> = (start..end)
            .step_by(3)
            .map(|i| json!({"external_id": format!("mem-{i:09}"), "name": "played", "time": "2026-11-20T10:00:00Z"}))
            .collect();
        requests.push((
            track.clone(),
            json!({"attributes": attributes, "events": events}).to_string(),
        ));
    }
    eprintln!("loading {} profiles", args.profiles);
    let loaded = post_all(&client, Some(&server.key), requests, args.connections).await?;
    eprintln!("loaded in {:.0} s", loaded.as_secs_f64());
    let filters = [
        json!({"attribute": "plan", "op": "equals", "value": "pro"}),
        json!({"and": [{"attribute": "score", "op": "greater_than", "value": 500}, {"attribute": "vip", "op": "equals", "value": true}]}),
        json!({"event": "played", "op": "count_at_least", "value": 1, "within_days": 30}),
    ];
    let mut segment = String::new();
    for (i, filter) in filters.iter().enumerate() {
        let created: Value = client
            .post(format!("{url}/eddy/v1/workspaces/default/segments"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": format!("segment {i}"), "filter": filter}))
            .send()
            .await?
            .json()
            .await?;
        segment = created["id"].as_str().unwrap_or_default().to_string();
    }
    let signed = client
        .post(format!("{url}/dashboard/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}"))
        .send()
        .await?;
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let overview = client
        .get(format!("{url}/dashboard/default"))
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let marker = "name=\"csrf-token\" content=\"";
    let csrf = overview
        .find(marker)
        .map(|at| {
            overview[at + marker.len()..]
                .split('"')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    let found = client
        .get(format!("{url}/dashboard/default/users?q=mem-000000123"))
        .header("cookie", &cookie)
        .send()
        .await?;
    let profile_page = found
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("/dashboard/default/users")
        .to_string();
    let pages = [
        ("overview", "/dashboard/default".to_string()),
        ("API log", "/dashboard/default/log".to_string()),
        (
            "API log, by identifier",
            "/dashboard/default/log?identifier=mem-000000123".to_string(),
        ),
        ("users, first page", "/dashboard/default/users".to_string()),
        (
            "users, search",
            "/dashboard/default/users?q=mem-000000123".to_string(),
        ),
        ("user profile", profile_page),
        (
            "segments (3, with sizes)",
            "/dashboard/default/segments".to_string(),
        ),
        (
            "segment editor",
            format!("/dashboard/default/segments/{segment}"),
        ),
        (
            "cohorts and partners",
            "/dashboard/default/cohorts".to_string(),
        ),
        ("currents", "/dashboard/default/currents".to_string()),
        ("API keys", "/dashboard/default/keys".to_string()),
        ("templates", "/dashboard/default/templates".to_string()),
        ("campaigns", "/dashboard/default/campaigns".to_string()),
    ];
    println!(
        "{} profiles, {} asks per page, one at a time\n",
        args.profiles, args.repeats
    );
    println!("| page | p50 ms | max ms |");
    println!("|---|---:|---:|");
    let mut slowest = (String::new(), Duration::ZERO);
    for (name, path) in &pages {
        let mut times = Vec::new();
        for _ in 0..args.repeats {
            let started = Instant::now();
            let response = client
                .get(format!("{url}{path}"))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = response.status().as_u16();
            response.bytes().await?;
            times.push(started.elapsed());
            anyhow::ensure!(status == 200 || status == 303, "{path}: {status}");
        }
        report(name, &mut times, &mut slowest);
    }
    let mut times = Vec::new();
    for i in 0..args.repeats {
        let filter = json!({"and": [{"attribute": "plan", "op": "equals", "value": "pro"}, {"attribute": "score", "op": "at_least", "value": i * 10}]});
        let started = Instant::now();
        let response = client
            .post(format!("{url}/dashboard/default/segments/size"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"filter": filter}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "size: {}", response.status());
        response.bytes().await?;
        times.push(started.elapsed());
    }
    report("segment builder: live size", &mut times, &mut slowest);
    println!();
    println!(
        "slowest: {} at {:.1} ms",
        slowest.0,
        slowest.1.as_secs_f64() * 1000.0
    );
    server.stop();
    Ok(())
}

fn report(name: &str, times: &mut [Duration], slowest: &mut (String, Duration)) {
    times.sort();
    let p50 = times[times.len() / 2];
    let max = times[times.len() - 1];
    if p50 > slowest.1 {
        *slowest = (format!("{name} (p50)"), p50);
    }
    println!(
        "| {name} | {:.1} | {:.1} |",
        p50.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
}
