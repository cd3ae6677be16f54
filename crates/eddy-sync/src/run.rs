//! One run of one sync: read → diff → send → remember, on three threads of work.
//!
//! The reader thread fills blocks of rows; the differ thread compares them with the state loaded
//! at the start and batches the changes; the async sender posts batches with bounded
//! concurrency and appends each confirmed object to the journal as its answer arrives. Nothing
//! is remembered before the target confirms it, so an interrupted run leaves exactly the
//! unconfirmed rows to the next one.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::SyncError;
use crate::config::{Source, Sync, SyncFile, Target};
use crate::diff::{Change, ChangeKind, DiffStats, Differ, MAX_ERRORS, Msg, Plan, RowError, Stop};
use crate::encode::lookalike_warning;
use crate::report::Report;
use crate::source::{self, Block};
use crate::state::{self, Header, Journal, State};
use crate::target::{Client, Outcome};

/// How a run behaves.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print what would be sent; send and remember nothing.
    pub dry_run: bool,
    /// Remember the source as sent without sending (the target already has it).
    pub mark_synced: bool,
    /// Draw a progress line on standard error.
    pub progress: bool,
    /// Where `--dry-run` writes its NDJSON lines (standard output when `None`).
    pub dry_run_output: Option<Arc<std::sync::Mutex<Vec<u8>>>>,
}

/// The plan of a sync (its fields and how rows become objects).
pub fn plan(sync: &Sync) -> Plan {
    let (update_existing_only, batch_size) = match &sync.target {
        Target::UsersTrack {
            update_existing_only,
            batch_size,
            ..
        } => (Some(*update_existing_only), *batch_size),
        Target::Cohort { batch_size, .. } => (None, *batch_size),
    };
    let audiences = sync.audiences.as_ref();
    Plan {
        fields: sync.fields(),
        id_kind: sync.identifier.kind,
        mode: sync.mode,
        removed_rows: sync.removed_rows,
        update_existing_only,
        audience_shape: audiences.map(|a| a.shape).unwrap_or_default(),
        audience_attribute: audiences.map_or_else(|| "audiences".into(), |a| a.attribute.clone()),
        batch_size,
    }
}

/// Warnings about the configuration, shown before a run.
pub fn warnings(sync: &Sync) -> Vec<String> {
    let mut out = Vec::new();
    for name in sync.attributes.keys() {
        if let Some(w) = lookalike_warning(name) {
            out.push(w);
        }
    }
    out
}

/// Runs one sync once.
pub async fn run(file: &SyncFile, sync: &Sync, opts: &RunOptions) -> Result<Report, SyncError> {
    let started = jiff::Timestamp::now();
    let clock = std::time::Instant::now();
    let dir = state::sync_dir(&file.state_dir, &sync.name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| SyncError::State(format!("{}: {e}", dir.display())))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| SyncError::State(e.to_string()))?;
    if lock.try_lock().is_err() {
        return Err(SyncError::Busy(sync.name.clone()));
    }
    let plan = plan(sync);
    let header = Header {
        identifier: sync.identifier.kind.name().to_string(),
        fields: plan.fields.iter().map(|f| f.name.clone()).collect(),
    };
    let mut warnings = warnings(sync);
    for w in &warnings {
        tracing::warn!(sync = %sync.name, "{w}");
    }
    let client = if opts.dry_run || opts.mark_synced {
        None
    } else {
        Some(Arc::new(Client::new(&sync.target)?))
    };

    // State written for other fields or another identifier is rewritten before the journal
    // appends to it; a dry run only remaps it in memory and writes nothing.
    if !opts.dry_run && state::needs_rewrite(&dir, &header) {
        let (d, h) = (dir.clone(), header.clone());
        let notice = tokio::task::spawn_blocking(move || -> Result<Option<String>, SyncError> {
            let state = State::load(&d, &h)?;
            state.compact(&d, &h)?;
            Ok(state.notice)
        })
        .await
        .map_err(|e| SyncError::State(e.to_string()))??;
        warnings.extend(notice);
    }
    let mut journal = if opts.dry_run {
        None
    } else {
        Some(Journal::open(&dir, &header)?)
    };

    let read = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let failed_count = Arc::new(AtomicU64::new(0));
    let progress = opts.progress.then(|| {
        spawn_progress(
            sync.name.clone(),
            read.clone(),
            sent.clone(),
            failed_count.clone(),
        )
    });

    // Reader and differ threads.
    let (tx, mut rx) = mpsc::channel::<Msg>(4 * sync_concurrency(sync).max(1));
    let mut columns = sync.id_columns();
    columns.extend(plan.fields.iter().map(|f| f.column.clone()));
    let source = sync.source.clone();
    let diff_plan = plan.clone();
    let diff_read = read.clone();
    let (diff_dir, diff_header) = (dir.clone(), header.clone());
    let differ = std::thread::Builder::new()
        .name("eddy-sync-diff".into())
        .spawn(move || {
            diff_thread(
                source,
                columns,
                diff_plan,
                &diff_dir,
                &diff_header,
                tx,
                diff_read,
            )
        })
        .map_err(|e| SyncError::Source(e.to_string()))?;

    // Sender.
    let concurrency = sync_concurrency(sync);
    let mut inflight: JoinSet<(Vec<Change>, Outcome)> = JoinSet::new();
    let mut fatal: Option<String> = None;
    let mut failed = 0u64;
    let mut delivered = 0u64;
    let mut errors: Vec<RowError> = Vec::new();
    let mut receiving = true;
    while receiving || !inflight.is_empty() {
        tokio::select! {
            msg = rx.recv(), if receiving && inflight.len() < concurrency && fatal.is_none() => {
                let Some(msg) = msg else {
                    receiving = false;
                    continue;
                };
                match msg {
                    Msg::Remember(list) => {
                        if let Some(j) = journal.as_mut() {
                            for (key, prints) in list {
                                if prints.is_empty() { j.delete(&key) } else { j.upsert(&key, &prints) }
                            }
                            j.flush(false)?;
                        }
                    }
                    Msg::Batch(batch) => {
                        if opts.dry_run {
                            let mut text = String::new();
                            for c in &batch {
                                let line = json!({"change": c.kind.name(), "object": c.object});
                                text.push_str(&line.to_string());
                                text.push('\n');
                            }
                            match &opts.dry_run_output {
                                Some(buf) => buf.lock().map_err(|_| SyncError::Target("dry-run output poisoned".into()))?.extend_from_slice(text.as_bytes()),
                                None => {
                                    let _ = std::io::stdout().lock().write_all(text.as_bytes());
                                }
                            }
                            delivered += batch.len() as u64;
                            continue;
                        }
                        let Some(client) = client.clone() else {
                            // --mark-synced: remember as if confirmed.
                            if let Some(j) = journal.as_mut() {
                                remember(j, &batch, &[])?;
                            }
                            delivered += batch.len() as u64;
                            sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            continue;
                        };
                        let cohort = plan.update_existing_only.is_none().then_some(plan.id_kind);
                        inflight.spawn(async move {
                            let outcome = send(&client, cohort, &batch).await;
                            (batch, outcome)
                        });
                    }
                }
            }
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                let (batch, outcome) = done.map_err(|e| SyncError::Target(e.to_string()))?;
                let refused: Vec<(usize, String)> = match outcome {
                    Outcome::Sent(refused) => refused,
                    Outcome::Failed(why) => (0..batch.len()).map(|i| (i, why.clone())).collect(),
                    Outcome::Fatal(why) => {
                        if fatal.is_none() {
                            tracing::error!(sync = %sync.name, error = %why, "the target refused the sync; stopping");
                            fatal = Some(why.clone());
                            // Hanging up stops the differ at its next batch.
                            rx.close();
                        }
                        (0..batch.len()).map(|i| (i, why.clone())).collect()
                    }
                };
                for (i, why) in &refused {
                    if errors.len() < MAX_ERRORS
                        && let Some(c) = batch.get(*i) {
                            errors.push(RowError { row: crate::diff::display_key(&c.key), error: why.clone() });
                        }
                }
                failed += refused.len() as u64;
                failed_count.fetch_add(refused.len() as u64, Ordering::Relaxed);
                let ok = batch.len() as u64 - refused.len() as u64;
                delivered += ok;
                sent.fetch_add(ok, Ordering::Relaxed);
                if let Some(j) = journal.as_mut() {
                    remember(j, &batch, &refused)?;
                }
            }
        }
        if fatal.is_some() && receiving {
            // Drain what the differ already queued without sending it.
            while let Ok(msg) = rx.try_recv() {
                if let Msg::Batch(batch) = msg {
                    failed += batch.len() as u64;
                }
            }
            receiving = false;
        }
    }
    if let Some(j) = journal.as_mut() {
        j.flush(true)?;
    }
    let diff = differ
        .join()
        .map_err(|_| SyncError::Source("the diff thread panicked".into()))?;
    if let Some(p) = progress {
        p.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[2K");
        }
    }
    let diff: DiffStats = match diff {
        Ok(stats) => stats,
        Err(Stop::Cancelled) if fatal.is_some() => DiffStats {
            rows_read: read.load(Ordering::Relaxed),
            ..DiffStats::default()
        },
        Err(Stop::Cancelled) => return Err(SyncError::Source("the run was cancelled".into())),
        Err(Stop::Source(e)) => return Err(e),
    };

    if !opts.dry_run {
        let (snap, journal_bytes) = state::file_sizes(&dir);
        if journal_bytes > 0 && (snap == 0 || journal_bytes * 4 > snap) {
            let (d, h) = (dir.clone(), header.clone());
            tokio::task::spawn_blocking(move || State::load(&d, &h)?.compact(&d, &h))
                .await
                .map_err(|e| SyncError::State(e.to_string()))??;
        }
    }

    if diff.unreadable > 0 {
        warnings.push(format!(
            "{} row(s) could not be read: rows that left the source are not removed this run",
            diff.unreadable
        ));
    }
    let mut all_errors = diff.errors.clone();
    for e in errors {
        if all_errors.len() < MAX_ERRORS {
            all_errors.push(e);
        }
    }
    let status = if fatal.is_some() {
        "failed"
    } else if failed > 0 || diff.invalid > 0 {
        "partial"
    } else {
        "succeeded"
    };
    let report = Report {
        sync: sync.name.clone(),
        status: status.into(),
        dry_run: opts.dry_run,
        mark_synced: opts.mark_synced,
        started_at: started.to_string(),
        duration_ms: clock.elapsed().as_millis() as u64,
        rows_read: diff.rows_read,
        added: diff.added,
        changed: diff.changed,
        removed: diff.removed,
        unchanged: diff.unchanged,
        failed: failed + diff.invalid,
        sent: delivered,
        requests: client
            .as_ref()
            .map_or(0, |c| c.counters.requests.load(Ordering::Relaxed)),
        retries: client
            .as_ref()
            .map_or(0, |c| c.counters.retries.load(Ordering::Relaxed)),
        throttled: client
            .as_ref()
            .map_or(0, |c| c.counters.throttled.load(Ordering::Relaxed)),
        error: fatal,
        errors: all_errors,
        warnings,
    };
    if !opts.dry_run {
        report.store(&dir)?;
    }
    drop(lock);
    Ok(report)
}

fn sync_concurrency(sync: &Sync) -> usize {
    match &sync.target {
        Target::UsersTrack { concurrency, .. } | Target::Cohort { concurrency, .. } => *concurrency,
    }
}

async fn send(
    client: &Client,
    plan_cohort: Option<crate::config::IdKind>,
    batch: &[Change],
) -> Outcome {
    let Some(id_kind) = plan_cohort else {
        let objects: Vec<Value> = batch.iter().map(|c| c.object.clone()).collect();
        return client.track(&objects).await;
    };
    let ids: Vec<(Value, bool)> = batch
        .iter()
        .map(|c| (c.object.clone(), c.kind == ChangeKind::Removed))
        .collect();
    client.cohort(id_kind, &ids).await
}

fn remember(
    journal: &mut Journal,
    batch: &[Change],
    refused: &[(usize, String)],
) -> Result<(), SyncError> {
    for (i, c) in batch.iter().enumerate() {
        if refused.iter().any(|(r, _)| *r == i) {
            continue;
        }
        if c.prints.is_empty() {
            journal.delete(&c.key);
        } else {
            journal.upsert(&c.key, &c.prints);
        }
    }
    journal.flush(false)
}

fn diff_thread(
    source: Source,
    columns: Vec<String>,
    plan: Plan,
    dir: &std::path::Path,
    header: &Header,
    tx: mpsc::Sender<Msg>,
    read: Arc<AtomicU64>,
) -> Result<DiffStats, Stop> {
    let ncols = columns.len();
    // The reader starts first and may run up to this many blocks ahead while the state loads
    // on this thread: reading and loading overlap on two cores.
    let (btx, brx) = std::sync::mpsc::sync_channel::<Result<Block, SyncError>>(READ_AHEAD_BLOCKS);
    let reader_plan = plan.clone();
    let reader = std::thread::Builder::new()
        .name("eddy-sync-read".into())
        .spawn(move || {
            let mut input = match source::open(&source, &columns) {
                Ok(r) => r,
                Err(e) => {
                    let _ = btx.send(Err(e));
                    return;
                }
            };
            loop {
                let mut block = Block::new(ncols);
                match input.fill(&mut block) {
                    Ok(more) => {
                        crate::diff::prepare(&reader_plan, &mut block);
                        if btx.send(Ok(block)).is_err() || !more {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = btx.send(Err(e));
                        return;
                    }
                }
            }
        })
        .map_err(|e| Stop::Source(SyncError::Source(e.to_string())))?;
    let loading = std::time::Instant::now();
    let mut state = State::load(dir, header).map_err(Stop::Source)?;
    tracing::debug!(
        rows = state.len(),
        ms = loading.elapsed().as_millis() as u64,
        "sync state loaded"
    );
    let out = |msg: Msg| tx.blocking_send(msg).is_ok();
    let mut differ = Differ::new(&plan, &mut state, &out, read);
    let mut result = Ok(());
    for block in brx.iter() {
        match block {
            Ok(block) => {
                if let Err(stop) = differ.block(&block) {
                    result = Err(stop);
                    break;
                }
            }
            Err(e) => {
                result = Err(Stop::Source(e));
                break;
            }
        }
    }
    tracing::debug!(ms = loading.elapsed().as_millis() as u64, "diff done");
    drop(brx);
    let _ = reader.join();
    result?;
    differ.finish()
}

/// Blocks of [`source::BLOCK_ROWS`] rows the reader may run ahead of the differ (a million rows).
const READ_AHEAD_BLOCKS: usize = 256;

fn spawn_progress(
    name: String,
    read: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let spinner = ['|', '/', '-', '\\'];
        let mut n = 0usize;
        loop {
            tick.tick().await;
            n += 1;
            eprint!(
                "\r\x1b[2K{} {name}: {} rows read · {} sent · {} failed",
                spinner[n % 4],
                read.load(Ordering::Relaxed),
                sent.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            );
            let _ = std::io::stderr().flush();
        }
    })
}
