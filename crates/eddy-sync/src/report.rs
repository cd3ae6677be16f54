//! The run report: printed after each run and stored beside the sync's state.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SyncError;
use crate::diff::RowError;

/// Reports kept per sync.
const KEEP: usize = 100;

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every row was sent or had nothing to send.
    #[default]
    Succeeded,
    /// Some rows failed (refused before sending or by the target); they are retried next run.
    Partial,
    /// The target refused the sync itself (a wrong key, a wrong URL).
    Failed,
}

impl RunStatus {
    /// The status as printed and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RunStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The sync's name.
    pub sync: String,
    /// How the run ended.
    pub status: RunStatus,
    /// True for `--dry-run`.
    pub dry_run: bool,
    /// True for `--mark-synced`.
    pub mark_synced: bool,
    /// When the run started (UTC).
    pub started_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows new to the target.
    pub added: u64,
    /// Rows with a changed value.
    pub changed: u64,
    /// Rows that left the source.
    pub removed: u64,
    /// Rows with nothing to send.
    pub unchanged: u64,
    /// Rows refused before sending or by the target; they are retried next run.
    pub failed: u64,
    /// Objects the target confirmed (or, for a dry run, would have been sent).
    pub sent: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Requests repeated after a 5xx, a timeout or a network error.
    pub retries: u64,
    /// 429 answers waited out.
    pub throttled: u64,
    /// Why the run stopped, when the target refused the sync.
    pub error: Option<String>,
    /// The first row errors.
    pub errors: Vec<RowError>,
    /// Configuration warnings.
    pub warnings: Vec<String>,
}

impl Report {
    /// Writes `last-run.json` and `runs/<start>.json` in the sync's folder, keeping the last 100.
    pub fn store(&self, dir: &Path) -> Result<(), SyncError> {
        let io = |e: std::io::Error| SyncError::State(format!("run report: {e}"));
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).map_err(io)?;
        let text =
            serde_json::to_string_pretty(self).map_err(|e| SyncError::State(e.to_string()))?;
        let name = self.started_at.replace(':', "-");
        std::fs::write(runs.join(format!("{name}.json")), &text).map_err(io)?;
        std::fs::write(dir.join("last-run.json"), &text).map_err(io)?;
        let mut old: Vec<_> = std::fs::read_dir(&runs)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        if old.len() > KEEP {
            old.sort();
            for p in &old[..old.len() - KEEP] {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.dry_run {
            " (dry run: nothing sent)"
        } else if self.mark_synced {
            " (marked as synced: nothing sent)"
        } else {
            ""
        };
        writeln!(
            f,
            "sync {}: {}{what} in {:.1} s",
            self.sync,
            self.status,
            self.duration_ms as f64 / 1000.0
        )?;
        writeln!(
            f,
            "  rows read {} · added {} · changed {} · removed {} · unchanged {} · failed {}",
            self.rows_read, self.added, self.changed, self.removed, self.unchanged, self.failed
        )?;
        if self.dry_run {
            writeln!(f, "  objects that would be sent {}", self.sent)?;
        } else {
            writeln!(
                f,
                "  objects sent {} in {} requests ({} retries, {} rate-limited)",
                self.sent, self.requests, self.retries, self.throttled
            )?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "  stopped: {e}")?;
        }
        for e in &self.errors {
            writeln!(f, "  failed {}: {}", e.row, e.error)?;
        }
        if self.failed > self.errors.len() as u64 && !self.errors.is_empty() {
            writeln!(
                f,
                "  … and {} more failed rows",
                self.failed - self.errors.len() as u64
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}
