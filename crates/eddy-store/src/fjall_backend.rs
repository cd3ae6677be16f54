//! The embedded default backend: fjall, a pure-Rust LSM tree, one keyspace per table.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::StoreError;
use crate::backend::{Backend, Pair, Table, WriteSet};

/// fjall database with one keyspace per [`Table`].
pub struct FjallBackend {
    db: Database,
    keyspaces: Vec<Keyspace>,
}

impl FjallBackend {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<FjallBackend, StoreError> {
        let db = Database::builder(dir).cache_size(cache_bytes).open()?;
        let mut keyspaces = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            keyspaces.push(db.keyspace(table.name(), KeyspaceCreateOptions::default)?);
        }
        Ok(FjallBackend { db, keyspaces })
    }

    fn keyspace(&self, table: Table) -> &Keyspace {
        let index = Table::ALL.iter().position(|t| *t == table).unwrap_or(0);
        &self.keyspaces[index]
    }
}

impl Backend for FjallBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.keyspace(table).get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        let keyspace = self.keyspace(table);
        let mut out = Vec::new();
        let iter = match after {
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
    }

    fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        if writes.ops.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for (table, key, value) in writes.ops {
            let keyspace = self.keyspace(table);
            match value {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        batch.commit()?;
        Ok(())
    }
}
