//! `eddy-bench cluster`: the ingest harness on the embedded store, then on PostgreSQL with 1, 2
//! and 3 `eddy serve` nodes sharing one database (the load spread over the nodes), with the CPU
//! each side spends per object; then, on 3 nodes, a segment's size asked of one node while the
//! others ingest, and the Currents connector's failover when its node is `kill -9`ed.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::load::{ADMIN, cpu_seconds, free_port, request_body, run_spread, wait_healthy};
use crate::zipf::{Rng, Zipf};

/// Options of `eddy-bench cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    /// The PostgreSQL server; each configuration gets a fresh database there, dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    server: String,
    /// Seconds of measured ingest per configuration.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Seconds of unmeasured warm-up per configuration.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Concurrent connections, spread over the nodes.
    #[arg(long, default_value_t = 48)]
    connections: usize,
    /// Distinct external ids (Zipf ranks).
    #[arg(long, default_value_t = 1_000_000)]
    profiles: usize,
    /// Path of the eddy binary [default: next to eddy-bench].
    #[arg(long)]
    eddy: Option<std::path::PathBuf>,
}

/// One `eddy serve` process of a configuration.
struct Node {
    child: std::process::Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Starts a node on `store` (embedded when `None`), Braze's `/users/track` limit lifted, every
/// node with the same secrets key (connector credentials are sealed with it).
async fn start_node(eddy: &std::path::Path, store: Option<&str>) -> anyhow::Result<Node> {
    let data = tempfile::tempdir()?;
    let config = data.path().join("eddy.toml");
    let mut text = format!("secrets_key = \"{}\"\n", "cd".repeat(32));
    text.push_str("[rate_limits]\n\"users.track\" = { limit = 1000000000, window_seconds = 1 }\n");
    if let Some(url) = store {
        text.push_str(&format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n"));
    }
    std::fs::write(&config, text)?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let child = crate::load::spawn_serve(eddy, port, data.path(), &config)?;
    wait_healthy(&url).await?;
    Ok(Node {
        child,
        url,
        _data: data,
    })
}

async fn admin_post(url: &str, body: Value) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    crate::messaging::admin(&client, reqwest::Method::POST, url, body).await
}

/// CPU seconds used so far by every PostgreSQL server process of the machine.
fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += cpu_seconds(pid);
        }
    }
    total
}

/// Bytes per profile of each of eddy's tables (rows, indexes and TOAST) in `name`.
fn print_table_sizes(server: &str, name: &str) {
    let query = "SELECT string_agg(t || ' ' || pg_total_relation_size('eddy_' || t) / \
                 greatest((SELECT count(*) FROM eddy_profiles), 1), ', ') \
                 FROM unnest(ARRAY['profiles','idents','members','meta','outbox','usage','changes']) AS t";
    let out = Command::new("psql")
        .arg(format!("{server}/{name}"))
        .args(["-tAc", query])
        .output();
    if let Ok(out) = out {
        println!();
        println!(
            "PostgreSQL bytes per profile, by table: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}

fn drop_database(server: &str, name: &str) {
    let _ = Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args([
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .status();
}

async fn is_leader(url: &str) -> bool {
    match reqwest::get(format!("{url}/metrics")).await {
        Ok(r) => r
            .text()
            .await
            .is_ok_and(|t| t.contains("\neddy_cluster_leader 1\n")),
        Err(_) => false,
    }
}

/// Runs the benchmark and prints Markdown tables.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let zipf = Zipf::new(args.profiles, 1.0);
    let mut rng = Rng::new(42);
    let bodies: Vec<_> = (0..2000).map(|_| request_body(&zipf, &mut rng)).collect();
    let (warmup, measured) = (
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.seconds),
    );
    println!(
        "| store | nodes | objects/s | p50 ms | p99 ms | eddy CPU µs/object (per node) | PostgreSQL CPU µs/object |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|");
    let mut last: Option<(Vec<Node>, String, String)> = None;
    for (store, nodes) in [(false, 1), (true, 1), (true, 2), (true, 3)] {
        if let Some((running, _, name)) = last.take() {
            drop(running);
            drop_database(&args.server, &name);
        }
        let name = format!("eddy_bench_{}", std::process::id() * 10 + nodes as u32);
        let url = store.then(|| format!("{}/{name}", args.server));
        let mut running = Vec::new();
        for _ in 0..nodes {
            running.push(start_node(&eddy, url.as_deref()).await?);
        }
        let created = admin_post(
            &format!("{}/eddy/v1/workspaces/default/api-keys", running[0].url),
            json!({"name": "bench"}),
        )
        .await?;
        let key = created["key"].as_str().unwrap_or_default().to_string();
        let urls: Vec<String> = running.iter().map(|n| n.url.clone()).collect();
        run_spread(&urls, &key, &bodies, args.connections, warmup).await;
        let eddy_before: Vec<f64> = running.iter().map(|n| cpu_seconds(n.child.id())).collect();
        let pg_before = postgres_cpu_seconds();
        let stats = run_spread(&urls, &key, &bodies, args.connections, measured).await;
        let pg_cpu = postgres_cpu_seconds() - pg_before;
        let objects = stats.objects_per_second() * stats.elapsed.as_secs_f64();
        let per_node: Vec<String> = running
            .iter()
            .zip(&eddy_before)
            .map(|(n, before)| {
                format!(
                    "{:.1}",
                    (cpu_seconds(n.child.id()) - before) * 1e6 / objects.max(1.0)
                )
            })
            .collect();
        let eddy_total: f64 = running
            .iter()
            .zip(&eddy_before)
            .map(|(n, before)| cpu_seconds(n.child.id()) - before)
            .sum();
        println!(
            "| {} | {nodes} | {:.0} | {:.1} | {:.1} | {:.1} ({}) | {} |",
            if store { "PostgreSQL" } else { "embedded" },
            stats.objects_per_second(),
            stats.percentile_ms(0.50),
            stats.percentile_ms(0.99),
            eddy_total * 1e6 / objects.max(1.0),
            per_node.join(" + "),
            if store {
                format!("{:.1}", pg_cpu * 1e6 / objects.max(1.0))
            } else {
                "–".into()
            },
        );
        if stats.errors > 0 {
            println!("({} requests failed)", stats.errors);
        }
        last = Some((running, key, name));
    }
    let Some((mut running, key, name)) = last else {
        return Ok(());
    };
    print_table_sizes(&args.server, &name);
    let outcome = three_nodes(&mut running, &key, &bodies, &args).await;
    drop(running);
    drop_database(&args.server, &name);
    outcome
}

/// On 3 nodes: segment size latency on one while the others ingest; connector failover.
async fn three_nodes(
    running: &mut [Node],
    key: &str,
    bodies: &[axum::body::Bytes],
    args: &ClusterArgs,
) -> anyhow::Result<()> {
    let segment = admin_post(
        &format!("{}/eddy/v1/workspaces/default/segments", running[0].url),
        json!({"name": "pro", "filter": {"attribute": "plan", "op": "equals", "value": "pro"}}),
    )
    .await?;
    let id = segment["id"].as_str().unwrap_or_default().to_string();
    let writers: Vec<String> = running[1..].iter().map(|n| n.url.clone()).collect();
    let load = {
        let (writers, key, bodies) = (writers.clone(), key.to_string(), bodies.to_vec());
        let connections = args.connections;
        tokio::spawn(async move {
            run_spread(
                &writers,
                &key,
                &bodies,
                connections,
                Duration::from_secs(10),
            )
            .await
        })
    };
    let client = reqwest::Client::new();
    let size_url = format!(
        "{}/eddy/v1/workspaces/default/segments/{id}",
        running[0].url
    );
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let asked = Instant::now();
        let answer: Value = client
            .get(&size_url)
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(answer["size"].is_u64(), "{answer}");
        latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    let ingest = load.await?;
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!();
    println!(
        "Segment size on node 1 while nodes 2 and 3 ingest {:.0} objects/s: {} answers, p50 {:.1} ms, p99 {:.1} ms",
        ingest.objects_per_second(),
        latencies.len(),
        at(0.5),
        at(0.99)
    );

    // Failover: a connector to an Amplitude emulator, its node killed under load.
    let amp = eddy_testkit::AmplitudeEmulator::start("amp-key").await;
    admin_post(
        &format!("{}/eddy/v1/workspaces/default/currents", running[0].url),
        json!({"name": "amp", "type": "amplitude", "api_key": "amp-key", "endpoint": amp.url,
               "throttle_seconds": 1, "event_types": ["users.behaviors.CustomEvent"]}),
    )
    .await?;
    let mut leader = None;
    for _ in 0..100 {
        for (i, node) in running.iter().enumerate() {
            if is_leader(&node.url).await {
                leader = Some(i);
            }
        }
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = leader.ok_or_else(|| anyhow::anyhow!("no node leads"))?;
    let survivors: Vec<String> = (0..running.len())
        .filter(|i| *i != leader)
        .map(|i| running[i].url.clone())
        .collect();
    let load = {
        let (writers, key, bodies) = (survivors.clone(), key.to_string(), bodies.to_vec());
        tokio::spawn(
            async move { run_spread(&writers, &key, &bodies, 4, Duration::from_secs(8)).await },
        )
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = Instant::now();
    let _ = running[leader].child.kill();
    let _ = running[leader].child.wait();
    let mut took_over = None;
    while took_over.is_none() && killed.elapsed() < Duration::from_secs(60) {
        for url in &survivors {
            if is_leader(url).await {
                took_over = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_takeover = amp.distinct();
    let mut delivering = None;
    while delivering.is_none() && killed.elapsed() < Duration::from_secs(60) {
        if amp.distinct() > at_takeover {
            delivering = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = load.await?;
    // Every event of every acknowledged request (75 each) must arrive.
    let expected = acked.requests as usize * 75;
    let deadline = Instant::now() + Duration::from_secs(180);
    while amp.distinct() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "Failover: node {} (the leader) killed under load; another node held the lease after {:.2} s and its connector delivered again after {:.2} s; {} of {} events acknowledged meanwhile reached Amplitude",
        leader + 1,
        took_over.map_or(f64::NAN, |d| d.as_secs_f64()),
        delivering.map_or(f64::NAN, |d| d.as_secs_f64()),
        amp.distinct(),
        expected
    );
    Ok(())
}
