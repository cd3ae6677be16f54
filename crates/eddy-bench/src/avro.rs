//! `eddy-bench avro`: encoding CustomEvent records into Avro container files (15,000 records a
//! file, null codec), eddy's encoder against fastavro on the same records in the same run.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Args;
use eddy_currents::avro::{Codec, Container};
use eddy_currents::catalogue;
use serde_json::{Map, Value, json};

use crate::zipf::Rng;

/// Options of `eddy-bench avro`.
#[derive(Args)]
pub struct AvroArgs {
    /// Records to encode.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Python with `fastavro` installed; without it only eddy is measured.
    #[arg(long)]
    python: Option<PathBuf>,
}

const PER_FILE: usize = 15_000;

fn record(i: usize, rng: &mut Rng) -> Map<String, Value> {
    const NAMES: [&str; 4] = ["played", "paused", "shared", "rated"];
    let name = NAMES[i % 4];
    let value = json!({
        "id": format!("{:08x}-0000-4000-8000-{:012x}", rng.next_u64() as u32, i),
        "user_id": format!("{:024x}", rng.next_u64()),
        "external_user_id": format!("user-{}", rng.next_u64() % 1_000_000),
        "app_id": "3f1c2e44-1111-4c2b-9a77-0d9e8f2a1b3c",
        "time": 1_714_564_800 + (i as i64 % 86_400),
        "name": name,
        "properties": format!("{{\"item\":\"sku-{}\",\"value\":{}}}", rng.next_u64() % 5000, rng.next_u64() % 100),
        "platform": if i.is_multiple_of(3) { Value::Null } else { json!("ios") },
        "app_group_id": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: AvroArgs) -> anyhow::Result<()> {
    let event_type = "users.behaviors.CustomEvent";
    let schema = catalogue::schema(event_type).ok_or_else(|| anyhow::anyhow!("no schema"))?;
    let mut rng = Rng::new(7);
    let records: Vec<Map<String, Value>> = (0..args.records).map(|i| record(i, &mut rng)).collect();
    let mut best = f64::INFINITY;
    let mut bytes = 0;
    let mut first_file = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        bytes = 0;
        for (n, chunk) in records.chunks(PER_FILE).enumerate() {
            let mut file = Container::new(schema, Codec::Null, [n as u8; 16]);
            for r in chunk {
                file.append(r)?;
            }
            let out = file.finish()?;
            bytes += out.len();
            if n == 0 {
                first_file = out;
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("| encoder | records | best s | records/s | MB written |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| eddy | {} | {best:.3} | {:.0} | {:.1} |",
        args.records,
        args.records as f64 / best,
        bytes as f64 / 1e6
    );
    let Some(python) = &args.python else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let ndjson = dir.path().join("records.ndjson");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&ndjson)?);
    for r in &records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    let eddy_file = dir.path().join("eddy.avro");
    std::fs::write(&eddy_file, &first_file)?;
    let schema_path = dir.path().join("schema.avsc");
    std::fs::write(&schema_path, schema.json)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/avro_fastavro.py");
    let output = Command::new(python)
        .arg(script)
        .arg(&ndjson)
        .arg(&schema_path)
        .arg(&eddy_file)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "fastavro failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout)?;
    let fast = result["best_s"].as_f64().unwrap_or(f64::NAN);
    anyhow::ensure!(
        result["read_back"].as_u64() == Some(PER_FILE.min(args.records) as u64),
        "fastavro read back {}",
        result["read_back"]
    );
    println!(
        "| fastavro {} | {} | {fast:.3} | {:.0} | |",
        result["fastavro"].as_str().unwrap_or("?"),
        result["records"],
        args.records as f64 / fast
    );
    println!();
    println!(
        "eddy is {:.1}x faster than fastavro (best of 3 runs each); fastavro read eddy's first file back",
        fast / best
    );
    Ok(())
}
