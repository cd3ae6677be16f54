//! `eddy-bench segments`: the exact size of a 4-leaf segment (cohort membership AND numeric
//! range AND string equality AND NOT boolean) over N profiles, eddy's index against DuckDB on
//! the same data in the same run.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Args;
use eddy_model::attrs::AttrValue;
use eddy_model::profile::Profile;
use eddy_segments::{Filter, WorkspaceIndex};
use serde_json::{Value, json};

use crate::zipf::Rng;

/// Options of `eddy-bench segments`.
#[derive(Args)]
pub struct SegmentArgs {
    /// Profiles to generate.
    #[arg(long, default_value_t = 10_000_000)]
    profiles: u32,
    /// Python with `duckdb` installed; without it only eddy is measured.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Query repetitions.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

const SCORE_MIN: i64 = 500;
const PLANS: [&str; 3] = ["free", "pro", "team"];

struct Row {
    in_cohort: bool,
    score: i64,
    plan: &'static str,
    vip: bool,
}

fn row(rng: &mut Rng) -> Row {
    Row {
        in_cohort: rng.next_u64() % 10 < 3,
        score: (rng.next_u64() % 1000) as i64,
        plan: PLANS[(rng.next_u64() % 3) as usize],
        vip: rng.next_u64().is_multiple_of(10),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: SegmentArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut index = WorkspaceIndex::default();
    let csv_dir = tempfile::tempdir()?;
    let csv_path = csv_dir.path().join("profiles.csv");
    let mut csv = args
        .python
        .as_ref()
        .map(|_| std::fs::File::create(&csv_path).map(std::io::BufWriter::new))
        .transpose()?;
    if let Some(out) = csv.as_mut() {
        writeln!(out, "id,in_cohort,score,plan,vip")?;
    }
    let mut rng = Rng::new(2026);
    let mut expected = 0u64;
    for id in 0..args.profiles {
        let r = row(&mut rng);
        let mut p = Profile::default();
        p.custom.insert("score".into(), AttrValue::Int(r.score));
        p.custom
            .insert("plan".into(), AttrValue::String(r.plan.into()));
        p.custom.insert("vip".into(), AttrValue::Bool(r.vip));
        index.upsert(id, &p);
        if r.in_cohort {
            index.set_member("amplitude", "abcd1234", id, true);
        }
        if r.in_cohort && r.score >= SCORE_MIN && r.plan == "pro" && !r.vip {
            expected += 1;
        }
        if let Some(out) = csv.as_mut() {
            writeln!(out, "{id},{},{},{},{}", r.in_cohort, r.score, r.plan, r.vip)?;
        }
    }
    if let Some(out) = csv.as_mut() {
        out.flush()?;
    }
    drop(csv);
    let build = started.elapsed().as_secs_f64();
    let filter = Filter::parse(&json!({"and": [
        {"attribute": "amplitude_cohorts", "op": "includes_value", "value": "abcd1234"},
        {"attribute": "score", "op": "at_least", "value": SCORE_MIN},
        {"attribute": "plan", "op": "equals", "value": "pro"},
        {"not": {"attribute": "vip", "op": "equals", "value": true}}
    ]}))?;
    let mut timings = Vec::with_capacity(args.runs);
    let mut count = 0;
    for _ in 0..args.runs {
        let t = Instant::now();
        count = index.count(&filter, 0);
        timings.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    anyhow::ensure!(
        count == expected,
        "index answered {count}, expected {expected}"
    );
    let best = timings.iter().copied().fold(f64::INFINITY, f64::min);
    let med = median(timings);
    println!("| engine | profiles | segment size | best ms | median ms | load s |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| eddy index | {} | {count} | {best:.2} | {med:.2} | {build:.1} |",
        args.profiles
    );
    if let Some(python) = &args.python {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/segment_duckdb.py");
        let output = Command::new(python)
            .arg(script)
            .arg(&csv_path)
            .arg(SCORE_MIN.to_string())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "duckdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let duck: Value = serde_json::from_slice(&output.stdout)?;
        let duck_count = duck["count"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            duck_count == count,
            "duckdb answered {duck_count}, eddy {count}"
        );
        let duck_best = duck["best_ms"].as_f64().unwrap_or(0.0);
        println!(
            "| DuckDB {} (in-memory table) | {} | {duck_count} | {duck_best:.2} | {:.2} | {:.1} |",
            duck["duckdb"].as_str().unwrap_or("?"),
            duck["rows"],
            duck["median_ms"].as_f64().unwrap_or(0.0),
            duck["load_s"].as_f64().unwrap_or(0.0)
        );
        println!();
        println!(
            "eddy is {:.1}x faster than DuckDB (best of {} runs each)",
            duck_best / best.max(1e-9),
            args.runs
        );
    }
    Ok(())
}
