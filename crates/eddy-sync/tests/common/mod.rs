//! Test helpers for `eddy sync`: sync files in a temp dir and runs of them; eddy's own test
//! server and the emulated Braze endpoint come from the shared test kit.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use eddy_sync::{Report, RunOptions, SyncFile};
use serde_json::{Value, json};

pub use eddy_testkit::TestApp as Eddy;

/// eddy's own test server (`spawn_app`: port 0, fresh data dir, a REST key).
pub async fn spawn_eddy() -> Eddy {
    eddy_testkit::spawn_app().await
}

/// Exported profiles by external id (custom attributes and standard fields).
pub async fn export_users(eddy: &Eddy, ids: &[&str]) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for chunk in ids.chunks(50) {
        let (status, body) = eddy
            .post("/users/export/ids", json!({"external_ids": chunk}))
            .await;
        assert_eq!(status, 201, "{body}");
        for u in body["users"].as_array().cloned().unwrap_or_default() {
            out.insert(u["external_id"].as_str().unwrap().to_string(), u);
        }
    }
    out
}

/// A folder with a sync file and its sources.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes `sync.toml` and loads it.
    pub fn config(&self, text: &str) -> SyncFile {
        let p = self.write("sync.toml", text);
        SyncFile::load(&p).unwrap()
    }
}

pub async fn run(file: &SyncFile, opts: RunOptions) -> Report {
    eddy_sync::run(file, &file.syncs[0], &opts).await.unwrap()
}

pub async fn run_once(file: &SyncFile) -> Report {
    run(file, RunOptions::default()).await
}

/// Writes a CSV file: a header line, then the rows.
pub fn csv(path: &Path, header: &str, rows: &[String]) {
    let mut text = format!("{header}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}
