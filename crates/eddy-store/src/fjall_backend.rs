//! The embedded default backend: fjall, a pure-Rust LSM tree, one keyspace per table.
//!
//! fjall refuses every write after a failed fsync (it "poisons" itself: nothing it holds in
//! memory can be trusted to match the disk). [`Backend::recover`] closes the database and opens
//! it again, which replays the journal from disk; that is how writes come back after a full
//! disk is freed, without a restart.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::StoreError;
use crate::backend::{Backend, Pair, Table, WriteSet};

/// fjall's longest key, in bytes; a longer one makes it panic.
pub const MAX_KEY_BYTES: usize = 65_535;

/// fjall database with one keyspace per [`Table`].
pub struct FjallBackend {
    dir: PathBuf,
    cache_bytes: u64,
    // `None` only while a reopen failed; reads and writes answer an error until one succeeds.
    open: RwLock<Option<Open>>,
}

struct Open {
    db: Database,
    keyspaces: Vec<Keyspace>,
}

impl Open {
    fn at(dir: &Path, cache_bytes: u64) -> Result<Open, StoreError> {
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => StoreError::Locked(dir.to_path_buf()),
                other => StoreError::from(other),
            })?;
        let mut keyspaces = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            keyspaces.push(db.keyspace(table.name(), KeyspaceCreateOptions::default)?);
        }
        Ok(Open { db, keyspaces })
    }

    fn keyspace(&self, table: Table) -> &Keyspace {
        &self.keyspaces[table.position()]
    }
}

impl FjallBackend {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<FjallBackend, StoreError> {
        let open = Open::at(dir, cache_bytes)?;
        Ok(FjallBackend {
            dir: dir.to_path_buf(),
            cache_bytes,
            open: RwLock::new(Some(open)),
        })
    }

    fn with_open<T>(
        &self,
        f: impl FnOnce(&Open) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = match self.open.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.as_ref() {
            Some(open) => f(open),
            None => Err(StoreError::Backend(
                "the store is closed after a failed reopen; retrying on the next write".into(),
            )),
        }
    }
}

impl Backend for FjallBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // No such key can have been stored.
        if key.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        self.with_open(|open| Ok(open.keyspace(table).get(key)?.map(|v| v.to_vec())))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        if prefix.len() > MAX_KEY_BYTES || after.is_some_and(|a| a.len() >= MAX_KEY_BYTES) {
            return Ok(Vec::new());
        }
        self.with_open(|open| {
            let keyspace = open.keyspace(table);
            let mut out = Vec::new();
            // An `after` below the prefix excludes nothing of it.
            let iter = match after.filter(|a| *a >= prefix) {
                Some(after) => {
                    let mut start = after.to_vec();
                    start.push(0);
                    keyspace.range(start..)
                }
                None => keyspace.prefix(prefix),
            };
            for guard in iter {
                let (key, value) = guard.into_inner()?;
                if !key.starts_with(prefix) {
                    break;
                }
                out.push((key.to_vec(), value.to_vec()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        if writes.ops.is_empty() {
            return Ok(());
        }
        // The key layout keeps keys short (`keys::push_part`); this is the last line, so that a
        // mistake there fails one group instead of panicking inside the engine.
        if let Some((table, key, _)) = writes.ops.iter().find(|(_, k, _)| k.len() > MAX_KEY_BYTES) {
            return Err(StoreError::Backend(format!(
                "a key of {} bytes in {} is longer than the engine's {MAX_KEY_BYTES}",
                key.len(),
                table.name()
            )));
        }
        self.with_open(|open| {
            let mut batch = open.db.batch().durability(Some(PersistMode::SyncAll));
            for (table, key, value) in writes.ops {
                let keyspace = open.keyspace(table);
                match value {
                    Some(value) => batch.insert(keyspace, key, value),
                    None => batch.remove(keyspace, key),
                }
            }
            batch.commit()?;
            Ok(())
        })
    }

    fn recover(&self) -> Result<(), StoreError> {
        let mut guard = match self.open.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // The old database must be gone (its lock file released) before it can open again.
        drop(guard.take());
        let open = Open::at(&self.dir, self.cache_bytes)?;
        *guard = Some(open);
        tracing::info!(dir = %self.dir.display(), "store reopened");
        Ok(())
    }
}
