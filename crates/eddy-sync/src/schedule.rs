//! `eddy sync schedule`: each sync on its cron expression in its time zone, one run at a time
//! per sync; a failed run is logged and the schedule goes on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::cron::Cron;
use crate::metrics::SyncMetrics;
use crate::run::{RunOptions, run};
use crate::{Report, SyncError, SyncFile};

/// Runs the scheduled syncs of `file` until `shutdown` completes, counting each run in
/// `metrics`.
pub async fn schedule(
    file: SyncFile,
    metrics: Arc<SyncMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SyncError> {
    let file = Arc::new(file);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sync) in file.syncs.iter().enumerate() {
        let Some(expr) = &sync.schedule else {
            tracing::info!(sync = %sync.name, "no schedule; run it with `eddy sync run`");
            continue;
        };
        let cron = Cron::parse(expr).map_err(SyncError::Config)?;
        let tz = TimeZone::get(&sync.timezone)
            .map_err(|e| SyncError::Config(format!("{}: {e}", sync.timezone)))?;
        let file = file.clone();
        let metrics = metrics.clone();
        tasks.spawn(async move {
            let name = file.syncs[i].name.clone();
            every(&name, &cron, &tz, Timestamp::now, || {
                let (file, metrics) = (file.clone(), metrics.clone());
                async move {
                    let result = run(&file, &file.syncs[i], &RunOptions::default()).await;
                    let now = Timestamp::now().as_millisecond() as f64 / 1000.0;
                    metrics.record(&file.syncs[i].name, &result, now);
                    result
                }
            })
            .await;
        });
    }
    if tasks.is_empty() {
        return Err(SyncError::Config(
            "no sync in this file has a schedule".into(),
        ));
    }
    shutdown.await;
    tasks.abort_all();
    Ok(())
}

/// The loop of one sync: wait for the next time `cron` fires in `tz` (by `now`), run, repeat.
/// A run that overlaps later firings skips them (never two runs at once); a failed run is
/// logged and the loop goes on.
pub async fn every<F, Fut>(
    name: &str,
    cron: &Cron,
    tz: &TimeZone,
    now: fn() -> Timestamp,
    mut run_once: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Report, SyncError>>,
{
    loop {
        let from = now();
        let Some(next) = cron.next_after(from, tz) else {
            tracing::error!(sync = %name, "the schedule never fires again");
            return;
        };
        tracing::info!(sync = %name, next = %next.to_zoned(tz.clone()), "next run");
        let wait = (next - from)
            .total(jiff::Unit::Millisecond)
            .unwrap_or(0.0)
            .max(0.0);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        // The clock may lag the timer by a hair; never fire before the scheduled minute.
        while now() < next {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match run_once().await {
            Ok(report) => {
                tracing::info!(sync = %name, status = %report.status, rows = report.rows_read, sent = report.sent, failed = report.failed, "run finished");
                print!("{report}");
            }
            Err(e) => tracing::error!(sync = %name, error = %e, "run failed; the schedule goes on"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static START: Mutex<Option<(Timestamp, tokio::time::Instant)>> = Mutex::new(None);

    /// A wall clock that follows tokio's paused clock.
    fn virtual_now() -> Timestamp {
        let guard = START.lock().unwrap();
        let (ts, at) = guard.expect("started");
        let elapsed = tokio::time::Instant::now() - at;
        ts + jiff::SignedDuration::try_from(elapsed).unwrap()
    }

    fn report() -> Report {
        Report {
            sync: "s".into(),
            ..Report::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fires_on_schedule_survives_failures_and_never_overlaps() {
        *START.lock().unwrap() = Some((
            "2026-11-22T08:00:30Z".parse().unwrap(),
            tokio::time::Instant::now(),
        ));
        let cron = Cron::parse("*/10 * * * *").unwrap();
        let runs: Arc<Mutex<Vec<Timestamp>>> = Arc::default();
        let seen = runs.clone();
        let mut n = 0;
        let task = tokio::spawn(async move {
            every("s", &cron, &TimeZone::UTC, virtual_now, move || {
                n += 1;
                let attempt = n;
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(virtual_now());
                    if attempt == 1 {
                        return Err(SyncError::Source("the database is down".into()));
                    }
                    if attempt == 2 {
                        // A run longer than the interval: the 08:30 firing is skipped.
                        tokio::time::sleep(Duration::from_secs(15 * 60)).await;
                    }
                    Ok(report())
                }
            })
            .await;
        });
        tokio::time::sleep(Duration::from_secs(50 * 60)).await;
        task.abort();
        let minutes: Vec<String> = runs
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.strftime("%H:%M").to_string())
            .collect();
        assert_eq!(minutes, vec!["08:10", "08:20", "08:40", "08:50"]);
    }
}
