//! The single writer: one thread that takes whatever mutations are waiting, applies them in
//! order to one transaction, commits it with one fsync, and only then answers every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use eddy_model::profile::Limits;
use eddy_model::track::TrackBatch;
use eddy_model::wire::{
    AliasNewRequest, AliasUpdateRequest, DeleteRequest, IdentifyRequest, TrackResponse,
};
use eddy_segments::Index;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::apply::{Lookup, MemberChange};
use crate::backend::Backend;
use crate::meta::{ApiKey, ExportStorage, Partner, Segment, Workspace};
use crate::txn::{Counters, Txn, WriterCache, load_counters};

/// A mutation the writer applies.
#[derive(Debug)]
pub enum Mutation {
    /// `/users/track`.
    Track(Workspace, TrackBatch),
    /// `/users/identify`.
    Identify(Workspace, IdentifyRequest),
    /// `/users/alias/new`.
    AliasNew(Workspace, AliasNewRequest),
    /// `/users/alias/update`.
    AliasUpdate(Workspace, AliasUpdateRequest),
    /// `/users/delete`.
    Delete(Workspace, DeleteRequest),
    /// `/users/merge`.
    Merge(Workspace, Vec<(Lookup, Lookup)>),
    /// Create a workspace by name.
    CreateWorkspace(String),
    /// Store an API key under its hash.
    CreateApiKey(ApiKey, String),
    /// Revoke an API key of a workspace by id.
    DeleteApiKey(u32, String),
    /// Register a partner or replace its key.
    PutPartner(Partner),
    /// Set (`Some(hash)`) or invalidate (`None`) a workspace's Data Import Key for a partner.
    SetDataImportKey(u32, String, Option<String>),
    /// Create or rename a cohort: workspace, partner, cohort id, name, created_at.
    UpsertCohort(u32, String, String, String, String),
    /// Change a cohort's members: workspace, partner, cohort id, changes.
    CohortChanges(u32, String, String, Vec<MemberChange>),
    /// Save a segment.
    PutSegment(u32, Segment),
    /// Delete a segment by id.
    DeleteSegment(u32, String),
    /// Set where a workspace's segment exports go.
    SetExportStorage(u32, ExportStorage),
    /// Save a Currents connector's configuration (JSON owned by eddy-currents).
    PutConnector(u32, String, serde_json::Value),
    /// Save a Currents connector's delivery state (cursor and counters).
    PutConnectorState(u32, String, serde_json::Value),
    /// Delete outbox entries (past retention and every connector's cursor).
    DeleteOutbox(Vec<u64>),
    /// Append producer-posted events to the outbox; with a connector name, for it alone.
    Emit(u32, Vec<eddy_model::currents::OutboxEvent>, Option<String>),
}

/// What a mutation answers once durable.
#[derive(Debug)]
pub enum Outcome {
    /// `/users/track`'s body.
    Track(TrackResponse),
    /// A count (aliases processed, users deleted, merges done).
    Count(usize),
    /// The created workspace.
    Workspace(Workspace),
    /// Done.
    Done,
}

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
#[derive(Debug, Default)]
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
}

pub(crate) fn run(mut writer: Writer, mut rx: mpsc::Receiver<Msg>) {
    let mut counters = match load_counters(writer.backend.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "writer could not load its counters");
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
    if let Some(ack) = stop {
        let _ = ack.send(());
    }
}

impl Writer {
    fn commit_group(&mut self, counters: &mut Counters, jobs: &mut Vec<Job>) {
        let (backend, limits, stats) = (self.backend.as_ref(), self.limits, self.stats.as_ref());
        let (cache, index, feed) = (&mut self.cache, self.index.as_ref(), &self.feed);
        let started = Instant::now();
        let mut saved = counters.clone();
        // The writer is the index's only writer, so reading it while applying cannot race.
        let committed_index = match index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut txn = Txn::new(
            backend,
            counters,
            cache,
            &committed_index,
            eddy_model::time::now_ms(),
        );
        let (mutations, replies): (Vec<Mutation>, Vec<_>) =
            jobs.drain(..).map(|job| (job.mutation, job.reply)).unzip();
        let mut results: Vec<Result<Outcome, StoreError>> = Vec::with_capacity(replies.len());
        let mut fatal = None;
        for mutation in mutations {
            match apply(&mut txn, mutation, limits) {
                Ok(outcome) => results.push(Ok(outcome)),
                // Domain refusals touch nothing; storage failures poison the whole group.
                Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => {
                    results.push(Err(e))
                }
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        let finished = match fatal {
            Some(e) => Err(e),
            None => txn.finish(),
        };
        drop(committed_index);
        let committed = finished.and_then(|(writes, emitted, written)| {
            let syncing = Instant::now();
            let result = backend.commit(writes);
            stats
                .sync_micros
                .fetch_add(syncing.elapsed().as_micros() as u64, Ordering::Relaxed);
            result?;
            Ok((emitted, written))
        });
        match committed {
            Ok((emitted, written)) => {
                match index.write() {
                    Ok(mut guard) => written.feed_members(&mut guard),
                    Err(poisoned) => written.feed_members(&mut poisoned.into_inner()),
                }
                let mut written = written;
                let encoded = std::mem::take(&mut written.encoded);
                feed.progress.committed();
                if feed.tx.send(encoded).is_err() {
                    tracing::error!(
                        "the indexer stopped; segment sizes no longer follow profile changes"
                    );
                }
                cache.absorb(written);
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .mutations
                    .fetch_add(replies.len() as u64, Ordering::Relaxed);
                stats.outbox_events.fetch_add(emitted, Ordering::Relaxed);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, mutations = replies.len(), "group commit failed, nothing of it was applied");
                // Ids handed out in the failed group may be reused: nothing refers to them.
                std::mem::swap(counters, &mut saved);
                // Profiles taken out of the cache by the failed group are gone from it; drop the
                // rest too so that nothing unsure survives a storage error.
                cache.clear();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
        stats
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

fn apply(txn: &mut Txn<'_>, mutation: Mutation, limits: Limits) -> Result<Outcome, StoreError> {
    match mutation {
        Mutation::Track(ws, batch) => txn.track(&ws, batch, limits).map(Outcome::Track),
        Mutation::Identify(ws, req) => txn.identify(&ws, &req).map(Outcome::Count),
        Mutation::AliasNew(ws, req) => txn.alias_new(&ws, &req).map(Outcome::Count),
        Mutation::AliasUpdate(ws, req) => txn.alias_update(&ws, &req).map(Outcome::Count),
        Mutation::Delete(ws, req) => txn.delete_users(&ws, &req).map(Outcome::Count),
        Mutation::Merge(ws, pairs) => txn.merge_users(&ws, &pairs).map(Outcome::Count),
        Mutation::CreateWorkspace(name) => txn.create_workspace(&name).map(Outcome::Workspace),
        Mutation::CreateApiKey(key, hash) => txn.create_api_key(&key, &hash).map(|_| Outcome::Done),
        Mutation::DeleteApiKey(ws, id) => txn.delete_api_key(ws, &id).map(|_| Outcome::Done),
        Mutation::PutPartner(partner) => txn.put_partner(&partner).map(|_| Outcome::Done),
        Mutation::SetDataImportKey(ws, partner, hash) => txn
            .set_data_import_key(ws, &partner, hash.as_deref())
            .map(|_| Outcome::Done),
        Mutation::UpsertCohort(ws, partner, id, name, created_at) => txn
            .upsert_cohort(ws, &partner, &id, &name, &created_at)
            .map(|_| Outcome::Done),
        Mutation::CohortChanges(ws, partner, id, changes) => txn
            .cohort_changes(ws, &partner, &id, &changes)
            .map(Outcome::Count),
        Mutation::PutSegment(ws, segment) => txn.put_segment(ws, &segment).map(|_| Outcome::Done),
        Mutation::DeleteSegment(ws, id) => txn.delete_segment(ws, &id).map(|_| Outcome::Done),
        Mutation::SetExportStorage(ws, storage) => {
            txn.set_export_storage(ws, &storage).map(|_| Outcome::Done)
        }
        Mutation::PutConnector(ws, name, config) => txn
            .put_connector(ws, &name, &config, false)
            .map(|_| Outcome::Done),
        Mutation::PutConnectorState(ws, name, state) => txn
            .put_connector(ws, &name, &state, true)
            .map(|_| Outcome::Done),
        Mutation::DeleteOutbox(seqs) => {
            let n = seqs.len();
            for seq in seqs {
                txn.delete(crate::backend::Table::Outbox, crate::keys::outbox(seq));
            }
            Ok(Outcome::Count(n))
        }
        Mutation::Emit(ws, events, to) => {
            let n = events.len();
            for event in events {
                match &to {
                    Some(connector) => txn.emit_to(ws, event, connector.clone()),
                    None => txn.emit(ws, event),
                }
            }
            Ok(Outcome::Count(n))
        }
    }
}
