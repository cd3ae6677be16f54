//! The ingest benchmark: request generation, the load loop, the baseline server, the report.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use clap::Args;
use eddy_model::track::validate_track;
use eddy_model::wire::TrackRequest;
use serde_json::{Value, json};

use crate::zipf::{Rng, Zipf};

/// Options of `eddy-bench ingest`.
#[derive(Args, Clone)]
pub struct IngestArgs {
    /// Seconds of measured load per target.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of unmeasured warm-up per target.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Distinct external ids (Zipf ranks).
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Distinct request bodies generated up front.
    #[arg(long, default_value_t = 2000)]
    bodies: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<PathBuf>,
    /// Keep eddy's data in this PostgreSQL database (`postgres://…`; created when missing, and
    /// best empty) instead of the embedded store.
    #[arg(long)]
    store: Option<String>,
    /// With `--store`: put the database this many milliseconds away (a round trip, half each
    /// way, through a delaying proxy), as a database on another machine would be.
    #[arg(long, requires = "store")]
    db_delay_ms: Option<f64>,
    /// Drive an already running server at this base URL instead (no baseline); for profiling.
    #[arg(long, requires = "key")]
    url: Option<String>,
    /// REST API key for `--url`.
    #[arg(long)]
    key: Option<String>,
    /// Instead of the baseline comparison: eddy with its API log on and off, alternating,
    /// `--pairs` runs each, to show what keeping requests for the dashboard costs ingest.
    #[arg(long)]
    api_log_cost: bool,
    /// Runs of each setting for `--api-log-cost`.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Run the internal parse-and-discard server (used by the harness itself).
    #[arg(long, hide = true)]
    discard_server: bool,
}

const OBJECTS_PER_REQUEST: usize = 150;
/// The admin token of servers the harness starts.
pub(crate) const ADMIN: &str = "bench-admin-token";

/// Builds one `/users/track` body: 75 attribute objects and 75 events on Zipf-drawn users.
pub(crate) fn request_body(zipf: &Zipf, rng: &mut Rng) -> Bytes {
    const EVENTS: [&str; 8] = [
        "opened_app",
        "viewed_item",
        "added_to_cart",
        "searched",
        "shared",
        "rated",
        "played",
        "paused",
    ];
    let mut attributes = Vec::with_capacity(75);
    let mut events = Vec::with_capacity(75);
    const PLANS: [&str; 3] = ["free", "pro", "team"];
    for _ in 0..75 {
        let user = format!("user-{}", zipf.sample(rng));
        let plan = PLANS[(rng.next_u64() % 3) as usize];
        attributes.push(json!({
            "external_id": user,
            "first_name": format!("name{}", rng.next_u64() % 1000),
            "plan": plan,
            "score": rng.next_u64() % 10_000,
            "active": rng.next_u64().is_multiple_of(2),
            "last_seen": "2024-05-01T12:00:00Z",
        }));
        let user = format!("user-{}", zipf.sample(rng));
        events.push(json!({
            "external_id": user,
            "name": EVENTS[(rng.next_u64() % 8) as usize],
            "time": "2024-05-01T12:00:00Z",
            "properties": {"item": format!("sku-{}", rng.next_u64() % 5000), "value": rng.next_u64() % 100},
        }));
    }
    Bytes::from(json!({"attributes": attributes, "events": events}).to_string())
}

/// Results of one load run.
pub(crate) struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Stats {
    pub(crate) fn objects_per_second(&self) -> f64 {
        (self.requests * OBJECTS_PER_REQUEST as u64) as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

async fn run_load(
    url: &str,
    key: &str,
    bodies: &[Bytes],
    connections: usize,
    duration: Duration,
) -> Stats {
    run_spread(&[url.to_string()], key, bodies, connections, duration).await
}

/// Load spread over several servers: connection `c` talks to `urls[c % urls.len()]`.
pub(crate) async fn run_spread(
    urls: &[String],
    key: &str,
    bodies: &[Bytes],
    connections: usize,
    duration: Duration,
) -> Stats {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let client = client.clone();
        let url = format!("{}/users/track", urls[c % urls.len()]);
        let key = key.to_string();
        let bodies = bodies.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(1 + c as u64);
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let body = bodies[(rng.next_u64() % bodies.len() as u64) as usize].clone();
                let sent = Instant::now();
                let result = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let _ = r.bytes().await;
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut stats = Stats {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            stats.requests += latencies.len() as u64;
            stats.errors += errors;
            stats.latencies_us.extend(latencies);
        }
    }
    stats.elapsed = start.elapsed();
    stats.latencies_us.sort_unstable();
    stats
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    // Up to two minutes: a restart over millions of profiles rebuilds the segment index.
    for _ in 0..2400 {
        if let Ok(r) = client.get(format!("{url}/health")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} did not become healthy")
}

/// Peak and current resident memory of a process, MiB, from `/proc`.
pub(crate) fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time a process has used (user and system), from `/proc/PID/stat`.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat: 11 and 12 counting from the state (0).
    let ticks_per_second = 100.0;
    (ticks(11) + ticks(12)) / ticks_per_second
}

pub(crate) fn stop(mut child: Child) {
    terminate(&mut child);
}

/// SIGTERM, then wait for the process to exit.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

/// The parse-and-discard endpoint: same HTTP stack, JSON parsing and validation, no storage.
async fn discard(body: Bytes) -> axum::response::Response {
    let Ok(req) = serde_json::from_slice::<TrackRequest>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match validate_track(&req, eddy_model::time::now_ms()) {
        Ok(batch) => (StatusCode::CREATED, json!(batch.response).to_string()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.body().to_string()).into_response(),
    }
}

async fn discard_server(port: u16) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/users/track", post(discard))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Runs the ingest benchmark (or, with `--discard-server`, the baseline server itself).
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if args.discard_server {
        let port = std::env::var("EDDY_BENCH_PORT")?.parse()?;
        return discard_server(port).await;
    }
    eprintln!(
        "generating {} request bodies over {} Zipf({}) ids",
        args.bodies, args.profiles, args.zipf
    );
    let zipf = Zipf::new(args.profiles, args.zipf);
    let mut rng = Rng::new(42);
    let bodies: Vec<Bytes> = (0..args.bodies)
        .map(|_| request_body(&zipf, &mut rng))
        .collect();
    let warmup = Duration::from_secs(args.warmup);
    let measured = Duration::from_secs(args.seconds);

    if let (Some(url), Some(key)) = (&args.url, &args.key) {
        run_load(url, key, &bodies, args.connections, warmup).await;
        let stats = run_load(url, key, &bodies, args.connections, measured).await;
        println!(
            "{url}: {:.0} objects/s, p50 {:.1} ms, p99 {:.1} ms, {} errors",
            stats.objects_per_second(),
            stats.percentile_ms(0.50),
            stats.percentile_ms(0.99),
            stats.errors
        );
        return Ok(());
    }

    if args.api_log_cost {
        return api_log_cost(&args, &bodies, warmup, measured).await;
    }

    // Baseline: a separate process, like eddy, so the load generator competes the same way.
    let port = free_port()?;
    let baseline = Command::new(std::env::current_exe()?)
        .args(["ingest", "--discard-server"])
        .env("EDDY_BENCH_PORT", port.to_string())
        .stdout(Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    wait_healthy(&url).await?;
    run_load(&url, "none", &bodies, args.connections, warmup).await;
    let base = run_load(&url, "none", &bodies, args.connections, measured).await;
    let (base_peak, _) = rss_mib(baseline.id());
    stop(baseline);

    // eddy serve, durable, on a fresh data dir, Braze's rate limits lifted.
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let (store, _proxy) = match (&args.store, args.db_delay_ms) {
        (Some(url), Some(ms)) => {
            let (through, proxy) = delayed(url, Duration::from_secs_f64(ms / 2000.0))?;
            (Some(through), Some(proxy))
        }
        (store, _) => (store.clone(), None),
    };
    let server = EddyServer::start_with(
        &eddy,
        &["users.track", "users.export.ids"],
        store.as_deref(),
        "",
    )
    .await?;
    let (url, key) = (server.url.clone(), server.key.clone());
    run_load(&url, &key, &bodies, args.connections, warmup).await;
    let before = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    let probe = tokio::spawn(probe_reads(url.clone(), key.clone(), measured));
    let stats = run_load(&url, &key, &bodies, args.connections, measured).await;
    let reads = probe.await?;
    let metrics = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    let (peak, now) = rss_mib(server.child.id());
    server.stop();
    let delta = |name: &str| metric(&metrics, name) - metric(&before, name);
    let writer_seconds = delta("eddy_writer_commit_seconds_total");
    let writer_mutations = delta("eddy_writer_mutations_total");
    let sync_seconds = delta("eddy_writer_sync_seconds_total");

    let ratio = stats.objects_per_second() / base.objects_per_second().max(1.0);
    let commits = delta("eddy_writer_commits_total");
    let mutations = writer_mutations;
    println!("| target | objects/s | requests/s | p50 ms | p99 ms | errors | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, s, rss) in [
        ("parse-and-discard baseline", &base, base_peak),
        ("eddy serve (durable)", &stats, peak),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.0} |",
            s.objects_per_second(),
            s.requests as f64 / s.elapsed.as_secs_f64(),
            s.percentile_ms(0.50),
            s.percentile_ms(0.99),
            s.errors,
            rss
        );
    }
    println!(
        "| a one-user `/users/export/ids` beside it, one at a time | {:.0} reads/s | | {:.1} | {:.1} | {} | |",
        reads.requests as f64 / reads.elapsed.as_secs_f64(),
        reads.percentile_ms(0.50),
        reads.percentile_ms(0.99),
        reads.errors,
    );
    println!();
    if let Some(ms) = args.db_delay_ms {
        println!("the database {ms} ms away (round trip) through a delaying proxy");
    }
    println!("eddy / baseline: {:.0}%", ratio * 100.0);
    println!(
        "writer: busy {:.0}% of the measured time, {:.0} µs per request ({:.2} µs per object); {:.0} group commits of {:.1} requests",
        100.0 * writer_seconds / stats.elapsed.as_secs_f64(),
        1e6 * writer_seconds / writer_mutations.max(1.0),
        1e6 * writer_seconds / (writer_mutations.max(1.0) * OBJECTS_PER_REQUEST as f64),
        commits,
        mutations / commits.max(1.0)
    );
    println!(
        "writer: {:.0}% of its busy time writing and fsyncing; eddy RSS at end: {now:.0} MiB",
        100.0 * sync_seconds / writer_seconds.max(1e-9)
    );
    println!(
        "settings: {} connections, {} s measured after {} s warm-up, {} ids Zipf({}), {} objects per request",
        args.connections, args.seconds, args.warmup, args.profiles, args.zipf, OBJECTS_PER_REQUEST
    );
    Ok(())
}

/// `url` reached through a proxy on this machine that delays each direction by `each_way`.
fn delayed(url: &str, each_way: Duration) -> anyhow::Result<(String, eddy_testkit::TcpProxy)> {
    let rest = url
        .strip_prefix("postgres://")
        .context("--db-delay-ms needs a postgres:// URL")?;
    let at = rest.rfind('@').map_or(0, |i| i + 1);
    let end = rest[at..].find('/').map_or(rest.len(), |i| at + i);
    let host = &rest[at..end];
    let target = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .context("the database's host does not resolve")?;
    let proxy = eddy_testkit::TcpProxy::start(target, each_way);
    let through = format!("postgres://{}{}{}", &rest[..at], proxy.addr(), &rest[end..]);
    Ok((through, proxy))
}

/// Reads one user at a time for `duration` (the cheap request beside the load): its latency
/// shows whether reads wait behind the ingest.
async fn probe_reads(url: String, key: String, duration: Duration) -> Stats {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    while start.elapsed() < duration {
        let sent = Instant::now();
        let answer = client
            .post(format!("{url}/users/export/ids"))
            .bearer_auth(&key)
            .json(&json!({"external_ids": ["user-1"], "fields_to_export": ["external_id"]}))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().as_u16() == 201 => {
                let _ = r.bytes().await;
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            _ => errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort_unstable();
    Stats {
        requests: latencies.len() as u64,
        errors,
        elapsed: start.elapsed(),
        latencies_us: latencies,
    }
}

/// Ingests `events` custom events through `/users/track`, 75 per request and 64 requests in
/// flight, spread over 50,000 users named `<prefix>-<n>` (so per-user limits downstream are not
/// what a Currents benchmark measures).
pub(crate) async fn ingest_events(
    server: &EddyServer,
    events: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let bodies: Vec<String> = (0..events)
        .collect::<Vec<_>>()
        .chunks(75)
        .map(|chunk| {
            let events: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"external_id": format!("{prefix}-{}", i % 50_000), "name": "tick", "time": "2024-05-01T12:00:00Z", "properties": {"i": i}}))
                .collect();
            json!({"events": events}).to_string()
        })
        .collect();
    let track = format!("{}/users/track", server.url);
    for chunk in bodies.chunks(64) {
        let mut tasks = Vec::new();
        for body in chunk {
            tasks.push(
                client
                    .post(&track)
                    .bearer_auth(&server.key)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send(),
            );
        }
        for task in tasks {
            anyhow::ensure!(task.await?.status().as_u16() == 201, "ingest failed");
        }
    }
    Ok(())
}

/// `eddy serve` on a fresh data directory with some rate-limit groups lifted, and a REST key.
pub(crate) struct EddyServer {
    pub child: Child,
    pub url: String,
    pub key: String,
    port: u16,
    config: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl EddyServer {
    /// Starts the binary at `eddy` and creates a key with every permission.
    pub async fn start(eddy: &std::path::Path, lifted: &[&str]) -> anyhow::Result<EddyServer> {
        Self::start_with(eddy, lifted, None, "").await
    }

    /// As [`EddyServer::start`], with data in the PostgreSQL database `store` when given, and
    /// `extra` appended to the configuration file.
    pub async fn start_with(
        eddy: &std::path::Path,
        lifted: &[&str],
        store: Option<&str>,
        extra: &str,
    ) -> anyhow::Result<EddyServer> {
        let data = tempfile::tempdir()?;
        let config = data.path().join("eddy.toml");
        let mut text = String::from("[rate_limits]\n");
        for group in lifted {
            text.push_str(&format!(
                "\"{group}\" = {{ limit = 1000000000, window_seconds = 1 }}\n"
            ));
        }
        if let Some(url) = store {
            text.push_str(&format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n"));
        }
        text.push_str(extra);
        std::fs::write(&config, text)?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let child = spawn_serve(eddy, port, data.path(), &config)?;
        wait_healthy(&url).await?;
        let created: Value = reqwest::Client::new()
            .post(format!("{url}/eddy/v1/workspaces/default/api-keys"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "bench"}))
            .send()
            .await?
            .json()
            .await?;
        let key = created["key"].as_str().unwrap_or_default().to_string();
        Ok(EddyServer {
            child,
            url,
            key,
            port,
            config,
            _data: data,
        })
    }

    /// SIGTERM (SIGKILL with `kill`), then the same server again on the same data; returns how
    /// long the stop took
    /// (the segment index is saved then) and the time from the new start until it answers
    /// `/health`.
    pub async fn restart(
        &mut self,
        eddy: &std::path::Path,
        kill: bool,
    ) -> anyhow::Result<(Duration, Duration)> {
        let stopping = std::time::Instant::now();
        if kill {
            // A crash: nothing is saved, the next start rebuilds what it keeps in memory.
            let _ = self.child.kill();
            let _ = self.child.wait();
        } else {
            terminate(&mut self.child);
        }
        let stopped = stopping.elapsed();
        let started = std::time::Instant::now();
        self.child = spawn_serve(eddy, self.port, self._data.path(), &self.config)?;
        wait_healthy(&self.url).await?;
        Ok((stopped, started.elapsed()))
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

pub(crate) fn spawn_serve(
    eddy: &std::path::Path,
    port: u16,
    data: &std::path::Path,
    config: &std::path::Path,
) -> anyhow::Result<Child> {
    Ok(Command::new(eddy)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data.join("data"))
        .arg("--config")
        .arg(config)
        .env("EDDY_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "warn")
        .spawn()?)
}

impl Drop for EddyServer {
    /// A harness that fails half-way must not leave a server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `ingest --api-log-cost`: the same load against eddy with the API log on (the default) and
/// off, alternating so that drift on a shared machine hits both alike.
async fn api_log_cost(
    args: &IngestArgs,
    bodies: &[Bytes],
    warmup: Duration,
    measured: Duration,
) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let off = "[dashboard]\napi_log_entries = 0\n";
    // (setting, objects/s, eddy's CPU µs per object)
    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    for _ in 0..args.pairs {
        for (label, extra) in [("on", ""), ("off", off)] {
            let server =
                EddyServer::start_with(&eddy, &["users.track"], args.store.as_deref(), extra)
                    .await?;
            let (url, key) = (server.url.clone(), server.key.clone());
            run_load(&url, &key, bodies, args.connections, warmup).await;
            let cpu_before = cpu_seconds(server.child.id());
            let stats = run_load(&url, &key, bodies, args.connections, measured).await;
            let cpu = cpu_seconds(server.child.id()) - cpu_before;
            server.stop();
            let objects = (stats.requests * OBJECTS_PER_REQUEST as u64) as f64;
            let micros = 1e6 * cpu / objects.max(1.0);
            eprintln!(
                "api log {label}: {:.0} objects/s, {micros:.2} CPU µs per object, {} errors",
                stats.objects_per_second(),
                stats.errors
            );
            results.push((label, stats.objects_per_second(), micros));
        }
    }
    let mean = |which: &str, pick: fn(&(&str, f64, f64)) -> f64| {
        let runs: Vec<f64> = results.iter().filter(|r| r.0 == which).map(pick).collect();
        runs.iter().sum::<f64>() / runs.len().max(1) as f64
    };
    println!(
        "| API log | objects/s (runs) | mean objects/s | eddy CPU µs per object (runs) | mean µs |"
    );
    println!("|---|---|---:|---|---:|");
    for which in ["off", "on"] {
        let runs = |pick: fn(&(&str, f64, f64)) -> String| {
            results
                .iter()
                .filter(|r| r.0 == which)
                .map(pick)
                .collect::<Vec<_>>()
                .join(" · ")
        };
        println!(
            "| {which} | {} | {:.0} | {} | {:.2} |",
            runs(|r| format!("{:.0}", r.1)),
            mean(which, |r| r.1),
            runs(|r| format!("{:.2}", r.2)),
            mean(which, |r| r.2)
        );
    }
    let cpu_cost = 100.0 * (mean("on", |r| r.2) / mean("off", |r| r.2).max(1e-9) - 1.0);
    println!();
    println!("API log: CPU per object {cpu_cost:+.1}%");
    let throughput = 100.0 * (1.0 - mean("on", |r| r.1) / mean("off", |r| r.1).max(1.0));
    println!("API log: throughput lower by {throughput:.1}%");
    Ok(())
}
