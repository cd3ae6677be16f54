//! Keeps this process's segment index following what other processes commit to a shared
//! backend (see `backend.rs`): it reads the change feed after its cursor and re-reads the keys
//! each change names, so the index ends with their current values whatever the order.
//!
//! Three callers move the cursor, always under its mutex: the writer at the start of each group
//! (it must see other processes' cohort memberships before applying; the profiles they wrote it
//! leaves pending, outside its lock) and after its own commit (whose profiles it feeds to the
//! indexer itself), readers asking for the index, and a background tick; the last two also
//! re-read the pending profiles. Because the writer holds the mutex from its group's start until
//! its own changes are fed, a reader can never hand the indexer an older value of a key after
//! the writer handed it a newer one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};

use eddy_segments::Index;

use crate::StoreError;
use crate::backend::{Backend, Change, Table};
use crate::indexer::{Batch, Progress};
use crate::keys;

/// Where the index stands in the change feed.
#[derive(Debug, Default)]
pub(crate) struct Position {
    /// The last change number whose memberships the index reflects.
    pub cursor: u64,
    /// Profile keys other processes wrote (up to the cursor) not yet re-read into the index.
    pending: BTreeSet<Vec<u8>>,
}

/// Sets a position to `head` with nothing pending, after the index was rebuilt from the backend.
pub(crate) fn follower_reset(position: &mut Position, head: u64) {
    position.cursor = head;
    position.pending.clear();
}

/// The index's position in a shared backend's change feed, and how to move it.
pub(crate) struct Follower {
    position: Mutex<Position>,
    backend: Arc<dyn Backend>,
    index: Arc<RwLock<Index>>,
    indexer: mpsc::Sender<Batch>,
    progress: Arc<Progress>,
    /// Change records of other processes applied.
    pub applied: AtomicU64,
    /// How old the last applied record was when it was applied, ms.
    pub lag_ms: AtomicI64,
}

impl Follower {
    pub(crate) fn new(
        cursor: u64,
        backend: Arc<dyn Backend>,
        index: Arc<RwLock<Index>>,
        indexer: mpsc::Sender<Batch>,
        progress: Arc<Progress>,
    ) -> Follower {
        Follower {
            position: Mutex::new(Position {
                cursor,
                pending: BTreeSet::new(),
            }),
            backend,
            index,
            indexer,
            progress,
            applied: AtomicU64::new(0),
            lag_ms: AtomicI64::new(0),
        }
    }

    /// The position, held while the index is moved.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Position> {
        match self.position.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Applies every change committed so far (by any process), pending profiles included.
    pub(crate) fn catch_up(&self) -> Result<(), StoreError> {
        let Some(cluster) = self.backend.cluster() else {
            return Ok(());
        };
        let mut position = self.lock();
        let feed = cluster.changes(position.cursor)?;
        match feed.changes {
            Some(records) => self.apply(&mut position, &records)?,
            None => self.reload(&mut position, feed.head)?,
        }
        self.reread(&mut position)
    }

    /// Applies the memberships of the records numbered after the cursor that other processes
    /// committed, leaves their profiles pending, and moves the cursor to the last record. This
    /// process's own records were fed when they committed.
    pub(crate) fn apply(
        &self,
        position: &mut Position,
        records: &[Change],
    ) -> Result<(), StoreError> {
        let Some(cluster) = self.backend.cluster() else {
            return Ok(());
        };
        let node = cluster.node();
        let mut members = BTreeSet::new();
        let mut last = None;
        for record in records {
            if record.seq <= position.cursor {
                continue;
            }
            last = Some(record);
            if record.node == node {
                continue;
            }
            self.applied.fetch_add(1, Ordering::Relaxed);
            for (table, key) in &record.keys {
                match table {
                    Table::Profiles => {
                        position.pending.insert(key.clone());
                    }
                    Table::Members => {
                        members.insert(key.clone());
                    }
                    _ => {}
                }
            }
        }
        let Some(last) = last else {
            return Ok(());
        };
        if !members.is_empty() {
            let members: Vec<Vec<u8>> = members.into_iter().collect();
            let present = self.backend.get_many(Table::Members, &members)?;
            let mut index = match self.index.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (key, value) in members.iter().zip(present) {
                if let Some((ws, partner, cohort_id, id)) = keys::parse_member(key) {
                    index
                        .workspace_mut(ws)
                        .set_member(&partner, &cohort_id, id, value.is_some());
                }
            }
        }
        if last.node != node {
            self.lag_ms.store(
                (eddy_model::time::now_ms() - last.at_ms).max(0),
                Ordering::Relaxed,
            );
        }
        position.cursor = last.seq;
        Ok(())
    }

    /// Re-reads the pending profiles and hands them to the indexer.
    fn reread(&self, position: &mut Position) -> Result<(), StoreError> {
        if position.pending.is_empty() {
            return Ok(());
        }
        let profiles: Vec<Vec<u8>> = std::mem::take(&mut position.pending).into_iter().collect();
        let values = match self.backend.get_many(Table::Profiles, &profiles) {
            Ok(values) => values,
            Err(e) => {
                position.pending = profiles.into_iter().collect();
                return Err(e);
            }
        };
        let mut batch: Batch = Vec::with_capacity(profiles.len());
        for (key, value) in profiles.iter().zip(values) {
            if let (Some(ws), Some(id)) = (keys::decode_id(key), keys::profile_id(key)) {
                batch.push(((ws, id), value));
            }
        }
        self.progress.committed();
        if self.indexer.send(batch).is_err() {
            tracing::error!("the indexer stopped; segment sizes no longer follow changes");
        }
        Ok(())
    }

    /// Rebuilds the index from the backend when the records after the cursor are gone.
    pub(crate) fn reload(&self, position: &mut Position, head: u64) -> Result<(), StoreError> {
        tracing::warn!(
            cursor = position.cursor,
            head,
            "this process fell behind the change feed; rebuilding the segment index"
        );
        self.progress.wait(std::time::Duration::from_secs(60));
        let fresh = crate::rebuild_index(self.backend.as_ref())?;
        match self.index.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        follower_reset(position, head);
        Ok(())
    }
}
