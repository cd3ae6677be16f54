//! Keeps this process's segment index following what other processes commit to a shared
//! backend (see `backend.rs`): it reads the change feed after its cursor and re-reads the keys
//! each change names, so the index ends with their current values whatever the order.
//!
//! Three callers move the cursor, always under its mutex: the writer at the start of each group
//! (it must see other processes' cohort memberships before applying) and after its own commit
//! (whose profiles it feeds to the indexer itself), readers asking for the index, and a
//! background tick. Because the writer holds the mutex from its group's start until its own
//! changes are fed, a reader can never hand the indexer an older value of a key after the
//! writer handed it a newer one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};

use eddy_segments::Index;

use crate::StoreError;
use crate::backend::{Backend, Change, Table};
use crate::indexer::{Batch, Progress};
use crate::keys;

/// The index's position in a shared backend's change feed, and how to move it.
pub(crate) struct Follower {
    cursor: Mutex<u64>,
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
            cursor: Mutex::new(cursor),
            backend,
            index,
            indexer,
            progress,
            applied: AtomicU64::new(0),
            lag_ms: AtomicI64::new(0),
        }
    }

    /// The cursor: the last change number the index reflects.
    pub(crate) fn lock(&self) -> MutexGuard<'_, u64> {
        match self.cursor.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Applies every change committed so far (by any process).
    pub(crate) fn catch_up(&self) -> Result<(), StoreError> {
        let Some(cluster) = self.backend.cluster() else {
            return Ok(());
        };
        let head = cluster.head()?;
        let mut cursor = self.lock();
        if head <= *cursor {
            return Ok(());
        }
        match cluster.changes(*cursor, head)? {
            Some(records) => self.apply(&mut cursor, &records),
            None => self.reload(&mut cursor, head),
        }
    }

    /// Applies the records numbered after the cursor that other processes committed, and moves
    /// the cursor to the last one. This process's own records were fed when they committed.
    pub(crate) fn apply(&self, cursor: &mut u64, records: &[Change]) -> Result<(), StoreError> {
        let Some(cluster) = self.backend.cluster() else {
            return Ok(());
        };
        let node = cluster.node();
        let mut profiles = BTreeSet::new();
        let mut members = BTreeSet::new();
        let mut last = None;
        for record in records {
            if record.seq <= *cursor {
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
                        profiles.insert(key.clone());
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
        let profiles: Vec<Vec<u8>> = profiles.into_iter().collect();
        let members: Vec<Vec<u8>> = members.into_iter().collect();
        let values = self.backend.get_many(Table::Profiles, &profiles)?;
        let present = self.backend.get_many(Table::Members, &members)?;
        let mut batch: Batch = Vec::with_capacity(profiles.len());
        for (key, value) in profiles.iter().zip(values) {
            if let (Some(ws), Some(id)) = (keys::decode_id(key), keys::profile_id(key)) {
                batch.push(((ws, id), value));
            }
        }
        if !members.is_empty() {
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
        if !batch.is_empty() {
            self.progress.committed();
            if self.indexer.send(batch).is_err() {
                tracing::error!("the indexer stopped; segment sizes no longer follow changes");
            }
        }
        self.lag_ms.store(
            (eddy_model::time::now_ms() - last.at_ms).max(0),
            Ordering::Relaxed,
        );
        *cursor = last.seq;
        Ok(())
    }

    /// Rebuilds the index from the backend when the records after the cursor are gone.
    pub(crate) fn reload(&self, cursor: &mut u64, head: u64) -> Result<(), StoreError> {
        tracing::warn!(
            cursor = *cursor,
            head,
            "this process fell behind the change feed; rebuilding the segment index"
        );
        self.progress.wait(std::time::Duration::from_secs(60));
        let fresh = crate::rebuild_index(self.backend.as_ref())?;
        match self.index.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        *cursor = head;
        Ok(())
    }
}
