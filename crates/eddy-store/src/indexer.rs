//! The indexer thread: re-indexes the profiles each committed group wrote, off the writer.
//!
//! The writer applies cohort membership changes to the index itself (it reads them back when
//! applying the next group) and hands the encoded profiles of each committed group here.
//! [`Progress`] lets a reader wait until every group committed before it asked is indexed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, mpsc};
use std::time::Duration;

use eddy_segments::Index;

use crate::codec::decode_profile;

/// Encoded profiles of one committed group; `None` for deleted ones.
pub(crate) type Batch = Vec<((u32, u32), Option<Vec<u8>>)>;

/// How far the indexer is behind the writer.
#[derive(Debug, Default)]
pub struct Progress {
    committed: AtomicU64,
    indexed: Mutex<u64>,
    caught_up: Condvar,
}

impl Progress {
    /// Counts a committed group handed to the indexer.
    pub(crate) fn committed(&self) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }

    fn indexed(&self) {
        let mut indexed = match self.indexed.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *indexed += 1;
        self.caught_up.notify_all();
    }

    /// Waits (up to `timeout`) until every group committed so far is indexed.
    pub fn wait(&self, timeout: Duration) {
        let target = self.committed.load(Ordering::SeqCst);
        let guard = match self.indexed.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let waited = self
            .caught_up
            .wait_timeout_while(guard, timeout, |indexed| *indexed < target);
        if let Ok((_, result)) = waited
            && result.timed_out()
        {
            tracing::warn!(
                target,
                "segment index is more than {timeout:?} behind the writer"
            );
        }
    }
}

/// Starts the indexer thread.
pub(crate) fn start(
    index: Arc<RwLock<Index>>,
    progress: Arc<Progress>,
) -> std::io::Result<mpsc::Sender<Batch>> {
    let (tx, rx) = mpsc::channel::<Batch>();
    std::thread::Builder::new().name("eddy-indexer".into()).spawn(move || {
        for batch in rx {
            let mut decoded = Vec::with_capacity(batch.len());
            for (key, bytes) in batch {
                match bytes.map(|b| decode_profile(&b)).transpose() {
                    Ok(profile) => decoded.push((key, profile)),
                    Err(e) => tracing::error!(error = %e, "indexer could not decode a committed profile"),
                }
            }
            {
                let mut index = match index.write() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                for ((ws, id), profile) in &decoded {
                    let workspace = index.workspace_mut(*ws);
                    match profile {
                        Some(p) => workspace.upsert(*id, p),
                        None => workspace.remove(*id),
                    }
                }
            }
            progress.indexed();
        }
    })?;
    Ok(tx)
}
