//! `eddy sync schedule`: each sync on its cron expression in its time zone, one run at a time
//! per sync; a failed run is logged and the schedule goes on.

use std::sync::Arc;
use std::time::Duration;

use crate::cron::Cron;
use crate::run::{RunOptions, run};
use crate::{SyncError, SyncFile};

/// Runs the scheduled syncs of `file` until `shutdown` completes.
pub async fn schedule(
    file: SyncFile,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SyncError> {
    let file = Arc::new(file);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sync) in file.syncs.iter().enumerate() {
        let Some(expr) = &sync.schedule else {
            tracing::info!(sync = %sync.name, "no schedule; run it with `eddy sync run`");
            continue;
        };
        let cron = Cron::parse(expr).map_err(SyncError::Config)?;
        let tz = jiff::tz::TimeZone::get(&sync.timezone)
            .map_err(|e| SyncError::Config(format!("{}: {e}", sync.timezone)))?;
        let file = file.clone();
        tasks.spawn(async move {
            let sync = &file.syncs[i];
            loop {
                let now = jiff::Timestamp::now();
                let Some(next) = cron.next_after(now, &tz) else {
                    tracing::error!(sync = %sync.name, "the schedule never fires again");
                    return;
                };
                tracing::info!(sync = %sync.name, next = %next.to_zoned(tz.clone()), "next run");
                let wait = (next - now).total(jiff::Unit::Millisecond).unwrap_or(0.0).max(0.0);
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                match run(&file, sync, &RunOptions::default()).await {
                    Ok(report) => {
                        tracing::info!(sync = %sync.name, status = %report.status, rows = report.rows_read, sent = report.sent, failed = report.failed, "run finished");
                        print!("{report}");
                    }
                    Err(e) => tracing::error!(sync = %sync.name, error = %e, "run failed; the schedule goes on"),
                }
            }
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
