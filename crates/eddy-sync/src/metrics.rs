//! What `eddy sync schedule --metrics-listen` shows Prometheus: per sync, runs by outcome and
//! rows by what became of them since the scheduler started, and when the last run (and the last
//! successful one) finished and how long it took.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::{Report, RunStatus, SyncError};

/// The outcomes a run is counted under: the report's status, or `error` when the run stopped
/// before it could report (the source could not be read, the state could not be saved).
const OUTCOMES: [&str; 4] = ["succeeded", "partial", "failed", "error"];

/// Figures of every scheduled sync.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    by_sync: Mutex<BTreeMap<String, Figures>>,
}

#[derive(Debug, Default, Clone)]
struct Figures {
    runs: [u64; 4],
    rows_read: u64,
    added: u64,
    changed: u64,
    removed: u64,
    unchanged: u64,
    failed: u64,
    sent: u64,
    requests: u64,
    retries: u64,
    throttled: u64,
    last_run_at: Option<f64>,
    last_success_at: Option<f64>,
    last_duration_seconds: Option<f64>,
}

impl SyncMetrics {
    /// Figures for these syncs, at zero until they run (so a sync that never ran still shows).
    pub fn new<'a>(syncs: impl IntoIterator<Item = &'a str>) -> SyncMetrics {
        let by_sync = syncs
            .into_iter()
            .map(|name| (name.to_string(), Figures::default()))
            .collect();
        SyncMetrics {
            by_sync: Mutex::new(by_sync),
        }
    }

    /// Counts one finished run of `sync`, at `now` (Unix seconds).
    pub fn record(&self, sync: &str, result: &Result<Report, SyncError>, now: f64) {
        let Ok(mut map) = self.by_sync.lock() else {
            return;
        };
        let figures = map.entry(sync.to_string()).or_default();
        figures.last_run_at = Some(now);
        let report = match result {
            Ok(report) => report,
            Err(_) => {
                figures.runs[3] += 1;
                return;
            }
        };
        let outcome = match report.status {
            RunStatus::Succeeded => 0,
            RunStatus::Partial => 1,
            RunStatus::Failed => 2,
        };
        figures.runs[outcome] += 1;
        if report.status == RunStatus::Succeeded {
            figures.last_success_at = Some(now);
        }
        figures.last_duration_seconds = Some(report.duration_ms as f64 / 1000.0);
        figures.rows_read += report.rows_read;
        figures.added += report.added;
        figures.changed += report.changed;
        figures.removed += report.removed;
        figures.unchanged += report.unchanged;
        figures.failed += report.failed;
        figures.sent += report.sent;
        figures.requests += report.requests;
        figures.retries += report.retries;
        figures.throttled += report.throttled;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let map = match self.by_sync.lock() {
            Ok(map) => map.clone(),
            Err(_) => return String::new(),
        };
        let mut out = String::new();
        out.push_str("# HELP eddy_sync_runs_total Runs finished, by outcome.\n");
        out.push_str("# TYPE eddy_sync_runs_total counter\n");
        for (sync, f) in &map {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "eddy_sync_runs_total{{sync=\"{}\",outcome=\"{outcome}\"}} {}",
                    escape(sync),
                    f.runs[i]
                );
            }
        }
        out.push_str(
            "# HELP eddy_sync_rows_total Rows of finished runs, by what became of them.\n",
        );
        out.push_str("# TYPE eddy_sync_rows_total counter\n");
        for (sync, f) in &map {
            let rows = [
                ("read", f.rows_read),
                ("added", f.added),
                ("changed", f.changed),
                ("removed", f.removed),
                ("unchanged", f.unchanged),
                ("failed", f.failed),
            ];
            for (what, n) in rows {
                let _ = writeln!(
                    out,
                    "eddy_sync_rows_total{{sync=\"{}\",rows=\"{what}\"}} {n}",
                    escape(sync)
                );
            }
        }
        let counters: [(&str, &str, Count); 4] = [
            (
                "eddy_sync_objects_sent_total",
                "Objects the target confirmed.",
                |f| f.sent,
            ),
            (
                "eddy_sync_requests_total",
                "HTTP requests made to the target.",
                |f| f.requests,
            ),
            (
                "eddy_sync_retries_total",
                "Requests repeated after a 5xx, a timeout or a network error.",
                |f| f.retries,
            ),
            (
                "eddy_sync_throttled_total",
                "429 answers waited out.",
                |f| f.throttled,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (sync, f) in &map {
                let _ = writeln!(out, "{name}{{sync=\"{}\"}} {}", escape(sync), value(f));
            }
        }
        let gauges: [(&str, &str, Time); 3] = [
            (
                "eddy_sync_last_run_timestamp_seconds",
                "When the last run finished (Unix time).",
                |f| f.last_run_at,
            ),
            (
                "eddy_sync_last_success_timestamp_seconds",
                "When the last run that sent every row finished (Unix time).",
                |f| f.last_success_at,
            ),
            (
                "eddy_sync_last_run_duration_seconds",
                "How long the last reported run took.",
                |f| f.last_duration_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            // A sync that has not run yet has no such time: no sample rather than a false 0.
            for (sync, f) in &map {
                if let Some(v) = value(f) {
                    let _ = writeln!(out, "{name}{{sync=\"{}\"}} {v}", escape(sync));
                }
            }
        }
        out
    }
}

/// Reads one counter of a sync's figures.
type Count = fn(&Figures) -> u64;

/// Reads one time of a sync's figures (none until it has one).
type Time = fn(&Figures) -> Option<f64>;

/// A label value as Prometheus' text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: RunStatus, sent: u64, failed: u64) -> Report {
        Report {
            sync: "customers".into(),
            status,
            duration_ms: 1500,
            rows_read: sent + failed,
            added: sent,
            failed,
            sent,
            requests: 2,
            ..Report::default()
        }
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn a_sync_shows_before_its_first_run_without_times() {
        let metrics = SyncMetrics::new(["customers"]);
        let text = metrics.render();
        let runs = "eddy_sync_runs_total{sync=\"customers\",outcome=\"succeeded\"}";
        assert_eq!(sample(&text, runs), Some("0"), "{text}");
        assert!(
            !text.contains("eddy_sync_last_run_timestamp_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn runs_and_rows_add_up_across_runs_and_outcomes() {
        let metrics = SyncMetrics::new(["customers"]);
        metrics.record("customers", &Ok(report(RunStatus::Succeeded, 10, 0)), 100.0);
        metrics.record("customers", &Ok(report(RunStatus::Partial, 3, 2)), 200.0);
        metrics.record(
            "customers",
            &Err(SyncError::Config("source unreadable".into())),
            300.0,
        );
        let text = metrics.render();
        let expect = [
            (
                "eddy_sync_runs_total{sync=\"customers\",outcome=\"succeeded\"}",
                "1",
            ),
            (
                "eddy_sync_runs_total{sync=\"customers\",outcome=\"partial\"}",
                "1",
            ),
            (
                "eddy_sync_runs_total{sync=\"customers\",outcome=\"error\"}",
                "1",
            ),
            (
                "eddy_sync_rows_total{sync=\"customers\",rows=\"read\"}",
                "15",
            ),
            (
                "eddy_sync_rows_total{sync=\"customers\",rows=\"failed\"}",
                "2",
            ),
            ("eddy_sync_objects_sent_total{sync=\"customers\"}", "13"),
            ("eddy_sync_requests_total{sync=\"customers\"}", "4"),
            (
                "eddy_sync_last_run_timestamp_seconds{sync=\"customers\"}",
                "300",
            ),
            (
                "eddy_sync_last_success_timestamp_seconds{sync=\"customers\"}",
                "100",
            ),
            (
                "eddy_sync_last_run_duration_seconds{sync=\"customers\"}",
                "1.5",
            ),
        ];
        for (series, value) in expect {
            assert_eq!(sample(&text, series), Some(value), "{series} in {text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
