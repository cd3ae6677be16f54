//! Prometheus text for `/metrics`: request counters by route group and status, and the
//! writer's counters. Plain atomics: the label sets are small and fixed.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use eddy_currents::ConnectorMetrics;
use eddy_store::WriterStats;
use eddy_store::histogram::Histogram;

use crate::ratelimit::GROUPS;
use crate::segment_export::ExportFigures;

/// The `group` labels: the rate-limit groups, and `unmatched` for answers no route gave (404 on
/// an unknown path, 501 on a Braze endpoint eddy lacks, 405 on a wrong method).
fn labels() -> impl Iterator<Item = &'static str> {
    GROUPS
        .iter()
        .map(|(name, _, _)| *name)
        .chain(std::iter::once("unmatched"))
}

const STATUSES: &[u16] = &[
    200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 429, 500, 501, 502, 503,
];

/// Request and connection counters.
pub struct Metrics {
    requests: Vec<AtomicU64>,
    durations: Vec<Histogram>,
    other_status: AtomicU64,
    /// Handlers that panicked (answered 500).
    pub handler_panics: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections refused at the cap.
    pub connections_refused: AtomicU64,
    /// Connections closed by the header-read or idle timeout.
    pub connections_timed_out: AtomicU64,
    /// Failed `accept` calls (for example, out of file descriptors).
    pub accept_errors: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..labels().count() * STATUSES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: labels().map(|_| Histogram::default()).collect(),
            other_status: AtomicU64::new(0),
            handler_panics: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_timed_out: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one answered request and how long it took.
    pub fn record(&self, group: &str, status: u16, took: std::time::Duration) {
        let g = labels().position(|name| name == group);
        if let Some(g) = g {
            self.durations[g].observe(took);
        }
        let s = STATUSES.iter().position(|x| *x == status);
        match (g, s) {
            (Some(g), Some(s)) => {
                self.requests[g * STATUSES.len() + s].fetch_add(1, Ordering::Relaxed)
            }
            _ => self.other_status.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Renders the Prometheus text exposition.
    pub fn render(
        &self,
        writer: &WriterStats,
        queue_depth: usize,
        connectors: &[(String, ConnectorMetrics)],
        exports: ExportFigures,
    ) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP eddy_http_request_duration_seconds Time to answer, by endpoint group.\n",
        );
        out.push_str("# TYPE eddy_http_request_duration_seconds histogram\n");
        for (g, group) in labels().enumerate() {
            self.durations[g].render(
                &mut out,
                "eddy_http_request_duration_seconds",
                &format!("group=\"{group}\""),
            );
        }
        out.push_str("# HELP eddy_writer_commit_duration_seconds Time of each group commit (apply, write, fsync).\n");
        out.push_str("# TYPE eddy_writer_commit_duration_seconds histogram\n");
        writer
            .commit_seconds
            .render(&mut out, "eddy_writer_commit_duration_seconds", "");
        render_connectors(&mut out, connectors);
        out.push_str("# HELP eddy_http_requests_total HTTP requests answered, by endpoint group and status.\n");
        out.push_str("# TYPE eddy_http_requests_total counter\n");
        for (g, group) in labels().enumerate() {
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
        // (name, help, counter, whether it counts microseconds shown as seconds)
        let counters = [
            (
                "eddy_writer_commits_total",
                "Group commits written.",
                &writer.commits,
                false,
            ),
            (
                "eddy_writer_mutations_total",
                "Mutations applied by the writer.",
                &writer.mutations,
                false,
            ),
            (
                "eddy_outbox_events_total",
                "Currents events written to the outbox.",
                &writer.outbox_events,
                false,
            ),
            (
                "eddy_writer_commit_seconds_total",
                "Time spent in group commits: applying, writing and fsyncing.",
                &writer.commit_micros,
                true,
            ),
            (
                "eddy_writer_sync_seconds_total",
                "Time spent writing and fsyncing group commits.",
                &writer.sync_micros,
                true,
            ),
            (
                "eddy_writer_commit_failures_total",
                "Group commits that failed (nothing applied).",
                &writer.commit_failures,
                false,
            ),
            (
                "eddy_writer_panics_total",
                "Groups failed by a panic in the writer (a bug; the writer went on).",
                &writer.panics,
                false,
            ),
            (
                "eddy_store_recoveries_total",
                "Times the store was reopened after a failed commit.",
                &writer.recoveries,
                false,
            ),
            (
                "eddy_http_handler_panics_total",
                "Requests whose handler panicked (answered 500).",
                &self.handler_panics,
                false,
            ),
            (
                "eddy_connections_refused_total",
                "Connections refused because max_connections were open.",
                &self.connections_refused,
                false,
            ),
            (
                "eddy_connections_timed_out_total",
                "Connections closed by the header-read or idle timeout.",
                &self.connections_timed_out,
                false,
            ),
            (
                "eddy_accept_errors_total",
                "Failed accepts (for example, out of file descriptors).",
                &self.accept_errors,
                false,
            ),
        ];
        let export_counters = [
            (
                "eddy_segment_exports_succeeded_total",
                "Segment exports that wrote their files.",
                exports.succeeded,
            ),
            (
                "eddy_segment_exports_failed_total",
                "Segment exports that failed (the reason is in their status and callback).",
                exports.failed,
            ),
            (
                "eddy_segment_export_users_total",
                "Users written by segment exports that succeeded.",
                exports.users_exported,
            ),
        ];
        for (name, help, v) in export_counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        for (name, help, counter, micros) in counters {
            let v = counter.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if micros {
                let _ = writeln!(out, "{name} {}", v as f64 / 1e6);
            } else {
                let _ = writeln!(out, "{name} {v}");
            }
        }
        let gauges = [
            (
                "eddy_connections_open",
                "Connections open now.",
                self.connections_open.load(Ordering::Relaxed),
            ),
            (
                "eddy_writer_last_group_size",
                "Mutations in the writer's last group commit.",
                writer.last_group.load(Ordering::Relaxed),
            ),
            (
                "eddy_writer_queue_depth",
                "Mutations waiting for the writer.",
                queue_depth as u64,
            ),
            (
                "eddy_segment_exports_running",
                "Segment exports running now.",
                exports.running,
            ),
            (
                "eddy_ready",
                "1 while writes can commit (GET /ready answers 200), else 0.",
                u64::from(writer.writable.load(Ordering::Relaxed)),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// Per-connector figures, labelled by workspace name, connector name and type.
fn render_connectors(out: &mut String, connectors: &[(String, ConnectorMetrics)]) {
    type Figure = fn(&ConnectorMetrics) -> f64;
    let figures: [(&str, &str, &str, Figure); 6] = [
        (
            "eddy_currents_delivered_total",
            "counter",
            "Events delivered.",
            |c| c.delivered as f64,
        ),
        (
            "eddy_currents_dropped_total",
            "counter",
            "Events dropped (undeliverable past retention).",
            |c| c.dropped as f64,
        ),
        (
            "eddy_currents_skipped_total",
            "counter",
            "Events Braze would not send to this destination.",
            |c| c.skipped as f64,
        ),
        (
            "eddy_currents_pending",
            "gauge",
            "Events read and not yet delivered.",
            |c| c.pending as f64,
        ),
        (
            "eddy_currents_lag_seconds",
            "gauge",
            "Age of the oldest undelivered event.",
            |c| c.lag_seconds,
        ),
        (
            "eddy_currents_failing",
            "gauge",
            "1 while the connector's last attempt failed.",
            |c| f64::from(u8::from(c.failing)),
        ),
    ];
    for (name, kind, help, value) in figures {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (workspace, c) in connectors {
            let _ = writeln!(
                out,
                "{name}{{workspace=\"{workspace}\",connector=\"{}\",type=\"{}\"}} {}",
                c.name,
                c.kind,
                value(c)
            );
        }
    }
}
