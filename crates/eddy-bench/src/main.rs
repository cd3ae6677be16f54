//! eddy's benchmark harness. Each benchmark runs eddy and its peer side by side in one run and
//! prints a Markdown row for `BENCHMARKS.md`.
//!
//! `eddy-bench ingest`: `/users/track` with 75 attribute objects and 75 events per request,
//! Zipf-distributed external ids over 1M profiles, many connections, against `eddy serve`
//! (durable: every 201 is fsync'd) and against a parse-and-discard endpoint that runs the same
//! HTTP stack, JSON parsing and Braze validation but stores nothing.
//!
//! `eddy-bench segments`: the exact size of a 4-leaf segment over 10M profiles, eddy's bitmap
//! index against DuckDB on the same data.

mod amplitude;
mod avro;
mod cohorts;
mod load;
mod segments;
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Ingest(args) => runtime.block_on(load::ingest(args)),
        Command::Segments(args) => segments::run(args),
        Command::Cohorts(args) => runtime.block_on(cohorts::run(args)),
        Command::Avro(args) => avro::run(args),
        Command::Amplitude(args) => runtime.block_on(amplitude::run(args)),
    }
}

/// The `eddy` binary next to this one (both built by the same `cargo build`).
fn sibling_eddy() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("eddy")))
        .unwrap_or_else(|| PathBuf::from("eddy"))
}
