//! Prometheus text for `/metrics`: request counters by route group and status, and the
//! writer's counters. Plain atomics: the label sets are small and fixed.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use eddy_store::WriterStats;

use crate::ratelimit::GROUPS;

const STATUSES: &[u16] = &[200, 201, 202, 400, 401, 403, 404, 409, 413, 429, 500, 503];

/// Request counters.
pub struct Metrics {
    requests: Vec<AtomicU64>,
    other_status: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..GROUPS.len() * STATUSES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            other_status: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, group: &str, status: u16) {
        let g = GROUPS.iter().position(|(name, _, _)| *name == group);
        let s = STATUSES.iter().position(|x| *x == status);
        match (g, s) {
            (Some(g), Some(s)) => {
                self.requests[g * STATUSES.len() + s].fetch_add(1, Ordering::Relaxed)
            }
            _ => self.other_status.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self, writer: &WriterStats) -> String {
        let mut out = String::new();
        out.push_str("# HELP eddy_http_requests_total HTTP requests answered, by endpoint group and status.\n");
        out.push_str("# TYPE eddy_http_requests_total counter\n");
        for (g, (group, _, _)) in GROUPS.iter().enumerate() {
            for (s, status) in STATUSES.iter().enumerate() {
                let n = self.requests[g * STATUSES.len() + s].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "eddy_http_requests_total{{group=\"{group}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "eddy_http_requests_total{{group=\"other\",status=\"other\"}} {}",
            self.other_status.load(Ordering::Relaxed)
        );
        let counters = [
            (
                "eddy_writer_commits_total",
                "Group commits written.",
                &writer.commits,
            ),
            (
                "eddy_writer_mutations_total",
                "Mutations applied by the writer.",
                &writer.mutations,
            ),
            (
                "eddy_outbox_events_total",
                "Currents events written to the outbox.",
                &writer.outbox_events,
            ),
            (
                "eddy_writer_commit_seconds_total",
                "",
                &writer.commit_micros,
            ),
            (
                "eddy_writer_commit_failures_total",
                "Group commits that failed (nothing applied).",
                &writer.commit_failures,
            ),
        ];
        for (name, help, value) in counters {
            let v = value.load(Ordering::Relaxed);
            if name == "eddy_writer_commit_seconds_total" {
                let _ = writeln!(
                    out,
                    "# HELP {name} Time spent applying and syncing group commits.\n# TYPE {name} counter"
                );
                let _ = writeln!(out, "{name} {}", v as f64 / 1e6);
                continue;
            }
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        out
    }
}
