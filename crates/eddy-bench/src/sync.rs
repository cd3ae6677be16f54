//! `eddy-bench sync`: a source of N rows of which 1% changed since the last sync. Measures the
//! time to only read the source, eddy sync's diff (a dry run: read + state + diff), the whole
//! run against `eddy serve`, and DuckDB computing the same diff from the two snapshots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Args;
use eddy_sync::RunOptions;
use serde_json::Value;

use crate::load::EddyServer;
use crate::zipf::Rng;

/// Options of `eddy-bench sync`.
#[derive(Args)]
pub struct SyncArgs {
    /// Rows in the source.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// One row in this many changes between the snapshots.
    #[arg(long, default_value_t = 100)]
    change_every: u64,
    /// The `eddy` binary [default: next to this one].
    #[arg(long)]
    eddy: Option<PathBuf>,
    /// Python with `duckdb` installed; without it only eddy is measured.
    #[arg(long)]
    python: Option<PathBuf>,
}

const HEADER: &str = "external_id,first_name,home_city,score,ltv,vip,signup";
const CITIES: [&str; 5] = ["Seattle", "Paris", "Lisbon", "Tokyo", "Berlin"];

fn write_snapshot(path: &Path, rows: u64, change_every: u64, changed: bool) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "{HEADER}")?;
    let mut rng = Rng::new(7);
    for i in 0..rows {
        let r = rng.next_u64();
        let mut score = r % 1000;
        if changed && i % change_every == 0 {
            score += 1000;
        }
        writeln!(
            out,
            "user-{i:08},Name{},{},{score},{}.{:02},{},20{:02}-{:02}-{:02}",
            r % 5000,
            CITIES[(r >> 20) as usize % 5],
            (r >> 8) % 10_000,
            (r >> 24) % 100,
            (r >> 30).is_multiple_of(10),
            (r >> 34) % 25,
            (r >> 40) % 12 + 1,
            (r >> 44) % 28 + 1,
        )?;
    }
    out.flush()?;
    Ok(())
}

fn sync_file(
    dir: &Path,
    source: &Path,
    url: &str,
    key: &str,
) -> anyhow::Result<eddy_sync::SyncFile> {
    let text = format!(
        r#"
[[sync]]
name = "bench"
source = {{ type = "csv", path = "{source}" }}
target = {{ type = "users_track", url = "{url}", api_key = "{key}", concurrency = 8 }}
[sync.attributes]
first_name = "string"
home_city = "string"
score = "integer"
ltv = "decimal"
signup = "date"
[sync.audiences]
columns = ["vip"]
"#,
        source = source.display()
    );
    let path = dir.join("sync.toml");
    std::fs::write(&path, text)?;
    Ok(eddy_sync::SyncFile::load(&path)?)
}

/// Reads every row of the source and nothing else: the floor of any sync.
fn read_only(file: &eddy_sync::SyncFile, prepare: bool) -> anyhow::Result<(u64, f64)> {
    let sync = &file.syncs[0];
    let mut columns = sync.id_columns();
    columns.extend(sync.fields().into_iter().map(|f| f.column));
    let plan = eddy_sync::run::plan(sync);
    let started = Instant::now();
    let mut reader = eddy_sync::source::open(&sync.source, &columns)?;
    let mut rows = 0u64;
    loop {
        let mut block = eddy_sync::source::Block::new(columns.len());
        let more = reader.fill(&mut block)?;
        if prepare {
            eddy_sync::diff::prepare(&plan, &mut block);
        }
        rows += block.rows() as u64;
        if !more {
            break;
        }
    }
    Ok((rows, started.elapsed().as_secs_f64()))
}

/// Runs the benchmark and prints a Markdown table.
pub async fn run(args: SyncArgs) -> anyhow::Result<()> {
    let eddy = args.eddy.clone().unwrap_or_else(crate::sibling_eddy);
    let dir = tempfile::tempdir_in(".")?;
    let before = dir.path().join("before.csv");
    let after = dir.path().join("after.csv");
    let t = Instant::now();
    write_snapshot(&before, args.rows, args.change_every, false)?;
    write_snapshot(&after, args.rows, args.change_every, true)?;
    let size = std::fs::metadata(&after)?.len();
    eprintln!(
        "wrote two snapshots of {} rows ({:.0} MB each) in {:.1} s",
        args.rows,
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let server = EddyServer::start(&eddy, &["users.track"]).await?;
    let file = sync_file(dir.path(), &before, &server.url, &server.key)?;
    let t = Instant::now();
    let marked = eddy_sync::run(
        &file,
        &file.syncs[0],
        &RunOptions {
            mark_synced: true,
            ..Default::default()
        },
    )
    .await?;
    eprintln!(
        "baseline state of {} rows in {:.1} s",
        marked.rows_read,
        t.elapsed().as_secs_f64()
    );

    let file = sync_file(dir.path(), &after, &server.url, &server.key)?;
    let (rows, read_s) = read_only(&file, false)?;
    let (_, prepare_s) = read_only(&file, true)?;
    anyhow::ensure!(rows == args.rows, "read {rows} rows");
    let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t = Instant::now();
    let dry = eddy_sync::run(
        &file,
        &file.syncs[0],
        &RunOptions {
            dry_run: true,
            dry_run_output: Some(sink),
            ..Default::default()
        },
    )
    .await?;
    let diff_s = t.elapsed().as_secs_f64();
    let expected = args.rows.div_ceil(args.change_every);
    anyhow::ensure!(
        dry.changed == expected,
        "dry run found {} changed rows, expected {expected}",
        dry.changed
    );

    let t = Instant::now();
    let real = eddy_sync::run(&file, &file.syncs[0], &RunOptions::default()).await?;
    let run_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(real.sent == expected && real.failed == 0, "run: {real}");
    server.stop();

    println!("| step | rows | changed | seconds | rows/s | × read |");
    println!("|---|---:|---:|---:|---:|---:|");
    let line = |name: &str, s: f64, changed: u64| {
        println!(
            "| {name} | {} | {changed} | {s:.2} | {:.0} | {:.2} |",
            args.rows,
            args.rows as f64 / s,
            s / read_s
        );
    };
    line("read the source only (CSV parse)", read_s, 0);
    line("read + fingerprint every row (one thread)", prepare_s, 0);
    line(
        "eddy sync diff (dry run: read + state + diff)",
        diff_s,
        dry.changed,
    );
    line(
        "eddy sync run against eddy serve (diff + send + journal)",
        run_s,
        real.sent,
    );
    if let Some(python) = &args.python {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sync_duckdb.py");
        let output = Command::new(python)
            .arg(script)
            .arg(&before)
            .arg(&after)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "duckdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let duck: Value = serde_json::from_slice(&output.stdout)?;
        anyhow::ensure!(
            duck["changed"].as_u64() == Some(expected),
            "duckdb found {}",
            duck["changed"]
        );
        let total = duck["total_s"].as_f64().unwrap_or(0.0);
        line(
            &format!(
                "DuckDB {} diff of the two snapshots (load both + EXCEPT)",
                duck["duckdb"].as_str().unwrap_or("")
            ),
            total,
            expected,
        );
        eprintln!(
            "duckdb: load {:.2} s, diff {:.2} s",
            duck["load_s"].as_f64().unwrap_or(0.0),
            duck["diff_s"].as_f64().unwrap_or(0.0)
        );
    }
    eprintln!("run report:\n{real}");
    Ok(())
}
