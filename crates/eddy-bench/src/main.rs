//! eddy's benchmark harness. Each benchmark runs eddy and its peer side by side in one run and
//! prints a Markdown row for `BENCHMARKS.md`.
//!
//! `eddy-bench ingest`: `/users/track` with 75 attribute objects and 75 events per request,
//! Zipf-distributed external ids over 1M profiles, many connections, against `eddy serve`
//! (durable: every 201 is fsync'd) and against a parse-and-discard endpoint that runs the same
//! HTTP stack, JSON parsing and Braze validation but stores nothing.
//!
//! `eddy-bench liquid`: a Braze email rendered for 100,000 users by eddy's Liquid, liquidjs and
//! Ruby Liquid.
//!
//! `eddy-bench ingest --api-log-cost`: the same load with the dashboard's API log on and off.
//!
//! `eddy-bench dashboard`: every dashboard page's answer time with 1M profiles stored.
//!
//! `eddy-bench segments`: the exact size of a 4-leaf segment over 10M profiles, eddy's bitmap
//! index against DuckDB on the same data.

mod amplitude;
mod avro;
mod cluster;
mod cohorts;
mod conversions;
mod currents_s3;
mod dashboard;
mod liquid;
mod load;
mod memory;
mod messaging;
mod segments;
mod sync;
mod zipf;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "eddy-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `/users/track` ingest: eddy (durable) vs a parse-and-discard baseline.
    Ingest(load::IngestArgs),
    /// Exact size of a 4-leaf segment: eddy's index vs DuckDB on the same data.
    Segments(segments::SegmentArgs),
    /// Partner cohort import through `eddy serve`: membership changes per second.
    Cohorts(cohorts::CohortArgs),
    /// Avro encoding of CustomEvent records: eddy vs fastavro.
    Avro(avro::AvroArgs),
    /// Currents delivery to an Amplitude emulator, unthrottled and under a storm.
    Amplitude(amplitude::AmplitudeArgs),
    /// Currents into a local S3-compatible server: ingest, replay, events stored per second.
    CurrentsS3(currents_s3::CurrentsS3Args),
    /// Memory while serving N profiles of 20 attributes, and restart-to-serving time.
    Memory(memory::MemoryArgs),
    /// Ingest on the embedded store and on PostgreSQL with 1, 2 and 3 nodes; segment sizes
    /// while other nodes write; connector failover after `kill -9`.
    Cluster(cluster::ClusterArgs),
    /// Every dashboard page's answer time with 1M profiles stored.
    Dashboard(dashboard::DashboardArgs),
    /// eddy sync over a 10M-row CSV with 1% changed: read, diff, run, and DuckDB's diff.
    Sync(sync::SyncArgs),
    /// A Braze email rendered for N users: eddy's Liquid vs liquidjs and Ruby Liquid.
    Liquid(liquid::LiquidArgs),
    /// A webhook broadcast to a segment and an email send: deliveries per second against the
    /// receivers' own ceilings.
    Messaging(messaging::MessagingArgs),
    /// `/users/track` with a conversion campaign active: users with 1,000 past messages beside
    /// users with none.
    Conversions(conversions::ConversionsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Ingest(args) => runtime.block_on(load::ingest(args)),
        Command::Segments(args) => segments::run(args),
        Command::Cohorts(args) => runtime.block_on(cohorts::run(args)),
        Command::Avro(args) => avro::run(args),
        Command::Amplitude(args) => runtime.block_on(amplitude::run(args)),
        Command::CurrentsS3(args) => runtime.block_on(currents_s3::run(args)),
        Command::Memory(args) => runtime.block_on(memory::run(args)),
        Command::Cluster(args) => runtime.block_on(cluster::run(args)),
        Command::Dashboard(args) => runtime.block_on(dashboard::run(args)),
        Command::Sync(args) => runtime.block_on(sync::run(args)),
        Command::Messaging(args) => runtime.block_on(messaging::run(args)),
        Command::Conversions(args) => runtime.block_on(conversions::run(args)),
        Command::Liquid(args) => runtime.block_on(liquid::run(args)),
    }
}

/// The `eddy` binary next to this one (both built by the same `cargo build`).
fn sibling_eddy() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("eddy")))
        .unwrap_or_else(|| PathBuf::from("eddy"))
}
