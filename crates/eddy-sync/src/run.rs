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
use crate::diff::{
    Change, ChangeKind, DiffMsg, DiffStats, Differ, MAX_ERRORS, Plan, RowError, Stop,
};
use crate::encode::lookalike_warning;
use crate::report::{Report, RunStatus};
use crate::source::{self, Block};
use crate::state::{self, Header, Journal, State};
use crate::target::{BatchOutcome, Client};

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
    let lock = lock_sync(&dir, &sync.name)?;
    let plan = plan(sync);
    let header = Header {
        identifier: sync.identifier.kind.name().to_string(),
        fields: plan.fields.iter().map(|f| f.name.clone()).collect(),
    };
    // Warnings go into the report (printed once), not also into the log.
    let mut warnings = warnings(sync);
    let client = if opts.dry_run || opts.mark_synced {
        None
    } else {
        Some(Arc::new(Client::new(&sync.target)?))
    };
    if let Some(client) = &client
        && let Err(why) = client.check_credentials().await
    {
        tracing::error!(sync = %sync.name, error = %why, "stopping before reading the source");
        let report = refused_report(sync, opts, started, clock, client, why, warnings);
        report.store(&dir)?;
        drop(lock);
        return Ok(report);
    }
    if !opts.dry_run {
        warnings.extend(rewrite_state_if_needed(&dir, &header).await?);
    }
    let journal = if opts.dry_run {
        None
    } else {
        Some(Journal::open(&dir, &header)?)
    };

    let counts = Progress::default();
    let progress = opts
        .progress
        .then(|| spawn_progress(sync.name.clone(), counts.clone()));
    let (rx, differ) = start_differ(sync, &plan, &dir, &header, counts.read.clone())?;
    let mut sender = Sender {
        sync,
        opts,
        client: client.clone(),
        cohort: plan.update_existing_only.is_none().then_some(plan.id_kind),
        journal,
        counts: counts.clone(),
        fatal: None,
        failed: 0,
        delivered: 0,
        errors: Vec::new(),
    };
    sender.send_all(rx).await?;
    if let Some(j) = sender.journal.as_mut() {
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
        Err(Stop::Cancelled) if sender.fatal.is_some() => DiffStats {
            rows_read: counts.read.load(Ordering::Relaxed),
            ..DiffStats::default()
        },
        Err(Stop::Cancelled) => return Err(SyncError::Source("the run was cancelled".into())),
        Err(Stop::Source(e)) => return Err(e),
    };
    if !opts.dry_run {
        compact_if_due(&dir, &header).await?;
    }
    if diff.unreadable > 0 {
        warnings.push(format!(
            "{} row(s) could not be read: rows that left the source are not removed this run",
            diff.unreadable
        ));
    }
    let report = report(
        sync,
        opts,
        started,
        clock,
        &diff,
        sender,
        client.as_deref(),
        warnings,
    );
    if !opts.dry_run {
        report.store(&dir)?;
    }
    drop(lock);
    Ok(report)
}

/// The report of a run the target refused at its credentials check: nothing read, nothing sent.
fn refused_report(
    sync: &Sync,
    opts: &RunOptions,
    started: jiff::Timestamp,
    clock: std::time::Instant,
    client: &Client,
    why: String,
    warnings: Vec<String>,
) -> Report {
    let counters = &client.counters;
    Report {
        sync: sync.name.clone(),
        status: RunStatus::Failed,
        dry_run: opts.dry_run,
        mark_synced: opts.mark_synced,
        started_at: started.to_string(),
        duration_ms: clock.elapsed().as_millis() as u64,
        requests: counters.requests.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        throttled: counters.throttled.load(Ordering::Relaxed),
        error: Some(why),
        warnings,
        ..Report::default()
    }
}

/// Takes the sync's lock file: one run per sync at a time.
fn lock_sync(dir: &std::path::Path, name: &str) -> Result<std::fs::File, SyncError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SyncError::State(format!("{}: {e}", dir.display())))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| SyncError::State(e.to_string()))?;
    if lock.try_lock().is_err() {
        return Err(SyncError::Busy(name.to_string()));
    }
    Ok(lock)
}

/// State written for other fields or another identifier is rewritten before the journal appends
/// to it (a dry run only remaps it in memory and writes nothing); answers its notice, if any.
async fn rewrite_state_if_needed(
    dir: &std::path::Path,
    header: &Header,
) -> Result<Option<String>, SyncError> {
    if !state::needs_rewrite(dir, header) {
        return Ok(None);
    }
    let (d, h) = (dir.to_path_buf(), header.clone());
    tokio::task::spawn_blocking(move || -> Result<Option<String>, SyncError> {
        let state = State::load(&d, &h)?;
        state.compact(&d, &h)?;
        Ok(state.notice)
    })
    .await
    .map_err(|e| SyncError::State(e.to_string()))?
}

/// Compacts the journal into the snapshot once it passes a quarter of it.
async fn compact_if_due(dir: &std::path::Path, header: &Header) -> Result<(), SyncError> {
    let (snap, journal_bytes) = state::file_sizes(dir);
    if journal_bytes == 0 || (snap > 0 && journal_bytes * 4 <= snap) {
        return Ok(());
    }
    let (d, h) = (dir.to_path_buf(), header.clone());
    tokio::task::spawn_blocking(move || State::load(&d, &h)?.compact(&d, &h))
        .await
        .map_err(|e| SyncError::State(e.to_string()))?
}

/// Counters shared with the progress line.
#[derive(Clone, Default)]
struct Progress {
    read: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

/// Starts the reader and differ thread; answers the channel of its batches and its handle.
#[allow(clippy::type_complexity)]
fn start_differ(
    sync: &Sync,
    plan: &Plan,
    dir: &std::path::Path,
    header: &Header,
    read: Arc<AtomicU64>,
) -> Result<
    (
        mpsc::Receiver<DiffMsg>,
        std::thread::JoinHandle<Result<DiffStats, Stop>>,
    ),
    SyncError,
> {
    let (tx, rx) = mpsc::channel::<DiffMsg>(4 * sync_concurrency(sync).max(1));
    let mut columns = sync.id_columns();
    columns.extend(plan.fields.iter().map(|f| f.column.clone()));
    let source = sync.source.clone();
    let diff_plan = plan.clone();
    let (diff_dir, diff_header) = (dir.to_path_buf(), header.clone());
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
                read,
            )
        })
        .map_err(|e| SyncError::Source(e.to_string()))?;
    Ok((rx, differ))
}

/// The async sender: posts the differ's batches with bounded concurrency and remembers each
/// confirmed object as its answer arrives.
struct Sender<'a> {
    sync: &'a Sync,
    opts: &'a RunOptions,
    client: Option<Arc<Client>>,
    cohort: Option<crate::config::IdKind>,
    journal: Option<Journal>,
    counts: Progress,
    /// Why the target refused the sync, once it did: the run stops.
    fatal: Option<String>,
    failed: u64,
    delivered: u64,
    errors: Vec<RowError>,
}

impl Sender<'_> {
    async fn send_all(&mut self, mut rx: mpsc::Receiver<DiffMsg>) -> Result<(), SyncError> {
        let concurrency = sync_concurrency(self.sync);
        let mut inflight: JoinSet<(Vec<Change>, BatchOutcome)> = JoinSet::new();
        let mut receiving = true;
        while receiving || !inflight.is_empty() {
            tokio::select! {
                msg = rx.recv(), if receiving && inflight.len() < concurrency && self.fatal.is_none() => {
                    match msg {
                        None => receiving = false,
                        Some(DiffMsg::Remember(list)) => self.remember_only(list)?,
                        Some(DiffMsg::Batch(batch)) => self.dispatch(batch, &mut inflight)?,
                    }
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    let (batch, outcome) = done.map_err(|e| SyncError::Target(e.to_string()))?;
                    if self.answered(&batch, outcome)? {
                        // Hanging up stops the differ at its next batch.
                        rx.close();
                    }
                }
            }
            if self.fatal.is_some() && receiving {
                // Drain what the differ already queued without sending it.
                while let Ok(msg) = rx.try_recv() {
                    if let DiffMsg::Batch(batch) = msg {
                        self.failed += batch.len() as u64;
                    }
                }
                receiving = false;
            }
        }
        Ok(())
    }

    /// State updates that need no request (a fingerprint refresh, a forgotten row).
    fn remember_only(&mut self, list: Vec<(Vec<u8>, Vec<u64>)>) -> Result<(), SyncError> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(());
        };
        for (key, prints) in list {
            if prints.is_empty() {
                j.delete(&key)
            } else {
                j.upsert(&key, &prints)
            }
        }
        j.flush(false)
    }

    /// Prints (dry run), remembers (mark-synced) or sends one batch.
    fn dispatch(
        &mut self,
        batch: Vec<Change>,
        inflight: &mut JoinSet<(Vec<Change>, BatchOutcome)>,
    ) -> Result<(), SyncError> {
        if self.opts.dry_run {
            self.print_dry_run(&batch)?;
            self.delivered += batch.len() as u64;
            return Ok(());
        }
        let Some(client) = self.client.clone() else {
            // --mark-synced: remember as if confirmed.
            if let Some(j) = self.journal.as_mut() {
                remember(j, &batch, &[])?;
            }
            self.delivered += batch.len() as u64;
            self.counts
                .sent
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            return Ok(());
        };
        let cohort = self.cohort;
        inflight.spawn(async move {
            let outcome = send(&client, cohort, &batch).await;
            (batch, outcome)
        });
        Ok(())
    }

    fn print_dry_run(&self, batch: &[Change]) -> Result<(), SyncError> {
        let mut text = String::new();
        for c in batch {
            let line = json!({"change": c.kind.name(), "object": c.object});
            text.push_str(&line.to_string());
            text.push('\n');
        }
        match &self.opts.dry_run_output {
            Some(buf) => buf
                .lock()
                .map_err(|_| SyncError::Target("dry-run output poisoned".into()))?
                .extend_from_slice(text.as_bytes()),
            None => {
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
            }
        }
        Ok(())
    }

    /// Counts and remembers a batch's answer; true when the target refused the sync itself.
    fn answered(&mut self, batch: &[Change], outcome: BatchOutcome) -> Result<bool, SyncError> {
        let mut stop = false;
        let refused: Vec<(usize, String)> = match outcome {
            BatchOutcome::Sent(refused) => refused,
            BatchOutcome::Failed(why) => (0..batch.len()).map(|i| (i, why.clone())).collect(),
            BatchOutcome::Fatal(why) => {
                if self.fatal.is_none() {
                    tracing::error!(sync = %self.sync.name, error = %why, "the target refused the sync; stopping");
                    self.fatal = Some(why.clone());
                    stop = true;
                }
                (0..batch.len()).map(|i| (i, why.clone())).collect()
            }
        };
        for (i, why) in &refused {
            if self.errors.len() < MAX_ERRORS
                && let Some(c) = batch.get(*i)
            {
                self.errors.push(RowError {
                    row: crate::diff::display_key(&c.key),
                    error: why.clone(),
                });
            }
        }
        self.failed += refused.len() as u64;
        self.counts
            .failed
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        let ok = batch.len() as u64 - refused.len() as u64;
        self.delivered += ok;
        self.counts.sent.fetch_add(ok, Ordering::Relaxed);
        if let Some(j) = self.journal.as_mut() {
            remember(j, batch, &refused)?;
        }
        Ok(stop)
    }
}

/// The run's report, from the differ's and the sender's counts.
#[allow(clippy::too_many_arguments)]
fn report(
    sync: &Sync,
    opts: &RunOptions,
    started: jiff::Timestamp,
    clock: std::time::Instant,
    diff: &DiffStats,
    sender: Sender<'_>,
    client: Option<&Client>,
    warnings: Vec<String>,
) -> Report {
    let mut errors = diff.errors.clone();
    for e in sender.errors {
        if errors.len() < MAX_ERRORS {
            errors.push(e);
        }
    }
    let status = if sender.fatal.is_some() {
        RunStatus::Failed
    } else if sender.failed > 0 || diff.invalid > 0 {
        RunStatus::Partial
    } else {
        RunStatus::Succeeded
    };
    let counter = |read: fn(&Client) -> u64| client.map_or(0, read);
    Report {
        sync: sync.name.clone(),
        status,
        dry_run: opts.dry_run,
        mark_synced: opts.mark_synced,
        started_at: started.to_string(),
        duration_ms: clock.elapsed().as_millis() as u64,
        rows_read: diff.rows_read,
        added: diff.added,
        changed: diff.changed,
        removed: diff.removed,
        unchanged: diff.unchanged,
        failed: sender.failed + diff.invalid,
        sent: sender.delivered,
        requests: counter(|c| c.counters.requests.load(Ordering::Relaxed)),
        retries: counter(|c| c.counters.retries.load(Ordering::Relaxed)),
        throttled: counter(|c| c.counters.throttled.load(Ordering::Relaxed)),
        error: sender.fatal,
        errors,
        warnings,
    }
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
) -> BatchOutcome {
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
    tx: mpsc::Sender<DiffMsg>,
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
    let out = |msg: DiffMsg| tx.blocking_send(msg).is_ok();
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

fn spawn_progress(name: String, counts: Progress) -> tokio::task::JoinHandle<()> {
    let Progress { read, sent, failed } = counts;
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
