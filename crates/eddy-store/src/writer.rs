//! The single writer: one thread that takes whatever mutations are waiting, applies them in
//! order to one transaction, commits it with one fsync, and only then answers every request.
//! On a backend several processes share, each process has one, and their groups take turns
//! under the backend's write lock (see `backend.rs` and `follower`).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use eddy_model::profile::Limits;
use eddy_segments::Index;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::backend::{Backend, Change, Table};
use crate::cache::WriterCache;
use crate::follower::{Follower, Position, follower_reset};
use crate::mutations::{Mutation, Outcome, apply};
use crate::overlay::{Counters, Txn, load_counters, set_counter};
use crate::written::Written;

pub(crate) struct Job {
    pub mutation: Mutation,
    pub reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// What the writer's queue carries.
pub(crate) enum Msg {
    /// A mutation to apply.
    Job(Box<Job>),
    /// Commit what is queued before this, acknowledge, and stop.
    Stop(oneshot::Sender<()>),
}

/// Counters the writer exposes for `/metrics`.
#[derive(Debug)]
pub struct WriterStats {
    /// Group commits done.
    pub commits: AtomicU64,
    /// Mutations applied.
    pub mutations: AtomicU64,
    /// Outbox events written.
    pub outbox_events: AtomicU64,
    /// Microseconds spent in group commits, applying included.
    pub commit_micros: AtomicU64,
    /// Microseconds of those spent writing and syncing the write set to disk.
    pub sync_micros: AtomicU64,
    /// Failed commits.
    pub commit_failures: AtomicU64,
    /// Groups failed by a panic while applying them (a bug; the writer went on).
    pub panics: AtomicU64,
    /// Times the backend was reopened after a failed commit.
    pub recoveries: AtomicU64,
    /// Whether the last commit (or probe) succeeded: readiness.
    pub writable: AtomicBool,
    /// When a commit last failed, UTC ms (0: never).
    pub last_failure_ms: AtomicU64,
    /// Mutations in the last group.
    pub last_group: AtomicU64,
    /// Duration of each group commit, applying, writing and fsyncing.
    pub commit_seconds: crate::histogram::Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            commits: AtomicU64::new(0),
            mutations: AtomicU64::new(0),
            outbox_events: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            writable: AtomicBool::new(true),
            last_failure_ms: AtomicU64::new(0),
            last_group: AtomicU64::new(0),
            commit_seconds: crate::histogram::Histogram::default(),
        }
    }
}

/// Where the writer hands committed profiles for re-indexing.
pub(crate) struct IndexFeed {
    pub tx: std::sync::mpsc::Sender<crate::indexer::Batch>,
    pub progress: Arc<crate::indexer::Progress>,
}

/// Most mutations folded into one group commit.
const MAX_GROUP: usize = 512;

/// The writer thread's state.
pub(crate) struct Writer {
    pub backend: Arc<dyn Backend>,
    pub limits: Limits,
    pub cache: WriterCache,
    pub index: Arc<RwLock<Index>>,
    pub feed: IndexFeed,
    pub stats: Arc<WriterStats>,
    /// A commit failed: the backend must be recovered (and caches reloaded) before the next.
    pub needs_recovery: bool,
    /// Where to save the segment index once the last group is committed at a clean stop.
    pub snapshot: Option<std::path::PathBuf>,
    /// On a backend shared with other processes: the index's place in the change feed.
    pub follower: Option<Arc<Follower>>,
    /// On a shared backend: the last change number whose keys the cache and counters reflect.
    pub seen: u64,
}

pub(crate) fn run(mut writer: Writer, mut rx: mpsc::Receiver<Msg>) {
    let mut counters = match load_counters(writer.backend.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            // Every write now answers 503 and readiness says so; nothing is guessed.
            writer.stats.writable.store(false, Ordering::SeqCst);
            tracing::error!(error = %e, "writer could not load its counters; writes are refused");
            return;
        }
    };
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut stop = None;
    while stop.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        match first {
            Msg::Job(job) => jobs.push(*job),
            Msg::Stop(ack) => stop = Some(ack),
        }
        while stop.is_none() && jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => jobs.push(*job),
                Ok(Msg::Stop(ack)) => stop = Some(ack),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            writer.commit_group(&mut counters, &mut jobs);
        }
    }
    rx.close();
    tracing::info!("writer stopped");
    if stop.is_some() {
        writer.save_index();
    }
    if let Some(ack) = stop {
        let _ = ack.send(());
    }
}

/// What applying and committing a group produced.
struct Committed {
    results: Vec<Result<Outcome, StoreError>>,
    emitted: u64,
    written: Written,
}

/// Why a group was not committed.
enum GroupFailure {
    /// Applying failed before anything was written (a corrupt value, a decoding error).
    Apply(StoreError),
    /// The backend refused the commit: it may need recovery.
    Commit(StoreError),
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        return (*s).to_string();
    }
    if let Some(s) = panic.downcast_ref::<String>() {
        return s.clone();
    }
    "unknown panic".into()
}

impl Writer {
    /// Applies a group, commits it once, and answers every job. Whatever happens (a storage
    /// error, a panic in the domain code), the group fails as a whole, its callers get an error,
    /// and the writer stays ready for the next group.
    fn commit_group(&mut self, counters: &mut Counters, jobs: &mut Vec<Job>) {
        let started = Instant::now();
        let (mutations, replies): (Vec<Mutation>, Vec<_>) =
            jobs.drain(..).map(|job| (job.mutation, job.reply)).unzip();
        self.stats
            .last_group
            .store(replies.len() as u64, Ordering::Relaxed);
        if self.needs_recovery
            && let Err(e) = self.recover(counters)
        {
            self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "store still not writable");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(e.to_string())));
            }
            return;
        }
        // On a shared backend the group holds the cluster's write lock from here to its commit,
        // and the follower's cursor until its changes are fed (see `follower`).
        let follower = self.follower.clone();
        let mut shared = None;
        if let Some(follower) = &follower {
            let mut position = follower.lock();
            match self.begin_shared_group(follower, &mut position, counters) {
                Ok(head) => shared = Some((position, head)),
                Err(e) => {
                    drop(position);
                    self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, mutations = replies.len(), "could not start a group on the shared store");
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return;
                }
            }
        }
        let saved = counters.clone();
        let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.apply_and_commit(counters, mutations)
        }));
        if let (Err(_) | Ok(Err(_)), Some(cluster)) = (&attempt, self.backend.cluster()) {
            cluster.abort_group();
        }
        let failure = match attempt {
            Ok(Ok(committed)) => {
                self.after_commit(replies, committed);
                if let Some((mut position, head)) = shared {
                    // This group's change record is the next number; it was fed just now.
                    self.seen = head + 1;
                    position.cursor = head + 1;
                }
                let took = started.elapsed();
                self.stats
                    .commit_micros
                    .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
                self.stats.commit_seconds.observe(took);
                return;
            }
            Ok(Err(GroupFailure::Commit(e))) => {
                // The engine may hold state that no longer matches the disk (fjall poisons
                // itself after a failed fsync): recover it before the next commit.
                self.needs_recovery = true;
                self.stats.writable.store(false, Ordering::SeqCst);
                let now = eddy_model::time::now_ms().max(0) as u64;
                self.stats.last_failure_ms.store(now, Ordering::SeqCst);
                tracing::error!(error = %e, mutations = replies.len(), "group commit failed, nothing of it was applied");
                StoreError::Backend(e.to_string())
            }
            Ok(Err(GroupFailure::Apply(e))) => {
                tracing::error!(error = %e, mutations = replies.len(), "applying a group failed, nothing of it was applied");
                e
            }
            Err(panic) => {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(panic = %panic_message(panic.as_ref()), mutations = replies.len(), "the writer panicked applying a group; nothing of it was applied");
                StoreError::Panicked
            }
        };
        self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
        // Ids handed out in the failed group may be reused: nothing refers to them.
        *counters = saved;
        // Profiles taken out of the cache by the failed group are gone from it; drop the rest
        // too so that nothing unsure survives.
        self.cache.clear();
        for reply in replies {
            let _ = reply.send(Err(failure.clone()));
        }
        self.stats
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    fn apply_and_commit(
        &mut self,
        counters: &mut Counters,
        mutations: Vec<Mutation>,
    ) -> Result<Committed, GroupFailure> {
        let (backend, limits) = (self.backend.as_ref(), self.limits);
        // Cohort memberships, what a group reads of the index, change only here and, on a shared
        // store, under the follower's mutex, which this group holds: reading them cannot race.
        let committed_index = match self.index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut txn = Txn::new(
            backend,
            counters,
            &mut self.cache,
            &committed_index,
            eddy_model::time::now_ms(),
        );
        txn.prefetch_idents(crate::mutations::ident_keys(&mutations))
            .map_err(GroupFailure::Apply)?;
        let mut results: Vec<Result<Outcome, StoreError>> = Vec::with_capacity(mutations.len());
        for mutation in mutations {
            match apply(&mut txn, mutation, limits) {
                Ok(outcome) => results.push(Ok(outcome)),
                // Domain refusals touch nothing; other failures fail the whole group.
                Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => {
                    results.push(Err(e))
                }
                Err(e) => return Err(GroupFailure::Apply(e)),
            }
        }
        let (writes, emitted, written) = txn.finish().map_err(GroupFailure::Apply)?;
        drop(committed_index);
        let syncing = Instant::now();
        let result = backend.commit(writes);
        self.stats
            .sync_micros
            .fetch_add(syncing.elapsed().as_micros() as u64, Ordering::Relaxed);
        result.map_err(GroupFailure::Commit)?;
        Ok(Committed {
            results,
            emitted,
            written,
        })
    }

    /// Takes the cluster's write lock and brings the cache, the counters and the index up to
    /// every change other processes committed before it; returns the last change number.
    fn begin_shared_group(
        &mut self,
        follower: &Follower,
        position: &mut Position,
        counters: &mut Counters,
    ) -> Result<u64, StoreError> {
        let backend = self.backend.clone();
        let Some(cluster) = backend.cluster() else {
            return Ok(0);
        };
        let start = cluster.begin_group(self.seen)?;
        let caught_up = (|| -> Result<(), StoreError> {
            match &start.changes {
                Some(records) => {
                    self.forget(cluster.node(), records, counters)?;
                    follower.apply(position, records)
                }
                None => {
                    self.cache.clear();
                    *counters = load_counters(backend.as_ref())?;
                    follower.reload(position, start.head)
                }
            }
        })();
        if let Err(e) = caught_up {
            cluster.abort_group();
            return Err(e);
        }
        self.seen = start.head;
        Ok(start.head)
    }

    /// Drops what the cache holds of keys other processes wrote, and takes the counters they
    /// moved.
    fn forget(
        &mut self,
        node: u64,
        records: &[Change],
        counters: &mut Counters,
    ) -> Result<(), StoreError> {
        for record in records.iter().filter(|r| r.node != node) {
            for (table, key) in &record.keys {
                match table {
                    Table::Profiles => {
                        if let (Some(ws), Some(id)) =
                            (crate::keys::decode_id(key), crate::keys::profile_id(key))
                        {
                            self.cache.forget_profile(ws, id);
                        }
                    }
                    Table::Idents => self.cache.forget_ident(key),
                    _ => {}
                }
            }
            for (key, value) in &record.counters {
                set_counter(counters, key, Some(value))?;
            }
        }
        Ok(())
    }

    /// Feeds the index and the cache with a durable group, then answers its callers.
    fn after_commit(
        &mut self,
        replies: Vec<oneshot::Sender<Result<Outcome, StoreError>>>,
        committed: Committed,
    ) {
        let Committed {
            results,
            emitted,
            mut written,
        } = committed;
        self.stats.writable.store(true, Ordering::SeqCst);
        let fed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match self.index.write() {
                Ok(mut guard) => written.feed_members(&mut guard),
                Err(poisoned) => written.feed_members(&mut poisoned.into_inner()),
            }
            let encoded = std::mem::take(&mut written.encoded);
            self.feed.progress.committed();
            if self.feed.tx.send(encoded).is_err() {
                tracing::error!(
                    "the indexer stopped; segment sizes no longer follow profile changes"
                );
            }
            self.cache.absorb(written);
        }));
        if let Err(panic) = fed {
            // The group is durable, so its callers get their answers; what is cached or indexed
            // in memory is reloaded from disk before the next group.
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
            self.needs_recovery = true;
            tracing::error!(panic = %panic_message(panic.as_ref()), "the writer panicked after a commit; reloading its caches");
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .mutations
            .fetch_add(replies.len() as u64, Ordering::Relaxed);
        self.stats
            .outbox_events
            .fetch_add(emitted, Ordering::Relaxed);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }

    /// At a clean stop, after the last commit: saves the segment index for the next start.
    /// A failure only costs that start a rebuild.
    fn save_index(&self) {
        let Some(path) = &self.snapshot else {
            return;
        };
        if self.needs_recovery || !self.stats.writable.load(Ordering::SeqCst) {
            tracing::warn!("the store is not writable; the segment index is not saved");
            return;
        }
        let started = Instant::now();
        self.feed.progress.wait(std::time::Duration::from_secs(60));
        let index = match self.index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match crate::snapshot::save(self.backend.as_ref(), &index, path) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                seconds = started.elapsed().as_secs_f64(),
                "segment index saved for the next start"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the segment index could not be saved; the next start rebuilds it")
            }
        }
    }

    /// Reopens the backend and reloads everything the writer derives from it: counters, the
    /// profile cache and the segment index (a failed commit may still have reached the disk).
    fn recover(&mut self, counters: &mut Counters) -> Result<(), StoreError> {
        self.backend.recover()?;
        *counters = load_counters(self.backend.as_ref())?;
        self.cache.clear();
        let follower = self.follower.clone();
        let mut position = follower.as_ref().map(|f| f.lock());
        let head = match self.backend.cluster() {
            Some(cluster) => cluster.head()?,
            None => 0,
        };
        // Let the indexer finish what it was handed, so that nothing older lands after the rebuild.
        self.feed.progress.wait(std::time::Duration::from_secs(10));
        let fresh = crate::rebuild_index(self.backend.as_ref())?;
        match self.index.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        if let Some(position) = position.as_mut() {
            // Pending profiles were just re-read with everything else.
            follower_reset(position, head);
            self.seen = head;
        }
        self.needs_recovery = false;
        self.stats.recoveries.fetch_add(1, Ordering::Relaxed);
        tracing::info!("writer recovered: counters, cache and segment index reloaded from disk");
        Ok(())
    }
}
