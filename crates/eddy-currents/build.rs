//! Embeds every `schemas/*.avsc` so the binary carries the Currents catalogue.

use std::fmt::Write;

fn main() {
    // Read at run time: a build script compiled for one checkout may run for another that
    // shares the target directory (CI's fresh copy of the checkout does).
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(&manifest_dir).join("schemas");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("schemas directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    names.sort();
    let mut out = String::from(
        "/// (event type, writer schema JSON) for every Currents event type.\npub static SCHEMAS: &[(&str, &str)] = &[\n",
    );
    for name in names {
        let event_type = name.trim_end_matches(".avsc");
        let path = dir.join(&name);
        let _ = writeln!(
            out,
            "    ({event_type:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let target =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("schemas.rs");
    std::fs::write(target, out).expect("write schemas.rs");
}
