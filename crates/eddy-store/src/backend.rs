//! The storage trait: ordered tables of bytes, point reads, prefix scans and one atomic,
//! durable commit per write set. The domain logic above it (identity, profiles, outbox) is
//! the same for every backend.
//!
//! What a backend must guarantee, whatever it is (an embedded LSM tree, or a database server
//! that several eddy processes share):
//! - **Atomic, durable commits.** [`Backend::commit`] applies the whole write set or nothing, and
//!   returns only once it would survive a crash (fsync, or the server's durable commit). A 2xx
//!   is answered only after it returns.
//! - **Read-your-commits.** A read issued after `commit` returned sees that write set.
//! - **Ordered keys.** Scans return keys in byte order; the outbox is keyed by a big-endian
//!   sequence number, so its scan order is its commit order. With several writers, sequence
//!   numbers must still be handed out in commit order (one allocator in the database, not one per
//!   process), or a connector's cursor could pass an event committed later with a smaller number.
//! - **Keys up to a few KiB.** Every key is built by `keys`/`meta`, which bound each variable part
//!   (1 KiB, else a hash); values are at most a few MiB (the body limit).
//! - **Recovery.** After a failed commit the writer calls [`Backend::recover`] before the next
//!   one; the backend must then answer with exactly what is durable.
//!
//! What is cached, and where: the writer caches committed profiles, identifier values and the id
//! and sequence counters (`cache`, `overlay::Counters`), and the segment index lives in memory.
//! That is only correct while this process is the only writer. A backend shared by several
//! processes must tell each writer what the others committed (for example a change feed of
//! written keys) so that it can drop those entries, or run with the caches off and the counters
//! allocated in the database; until then, one writer per database.

use crate::StoreError;

/// The tables eddy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Workspaces, API keys, partners, counters.
    Meta,
    /// Profiles by (workspace, internal id).
    Profiles,
    /// Identifier → internal id indexes.
    Idents,
    /// The Currents outbox by global sequence number.
    Outbox,
    /// Data points by (workspace, day).
    Usage,
    /// Cohort memberships by (workspace, partner, cohort id, internal id).
    Members,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 6] = [
        Table::Meta,
        Table::Profiles,
        Table::Idents,
        Table::Outbox,
        Table::Usage,
        Table::Members,
    ];

    /// The table's position in [`Table::ALL`].
    pub fn position(self) -> usize {
        self as usize
    }

    /// The table's storage name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Profiles => "profiles",
            Table::Idents => "idents",
            Table::Outbox => "outbox",
            Table::Usage => "usage",
            Table::Members => "members",
        }
    }
}

/// Writes applied together: all or nothing, on disk when `commit` returns.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// `(table, key, Some(value))` puts, `(table, key, None)` deletes, in order.
    pub ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

/// A key-value pair from a scan.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A storage engine.
pub trait Backend: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads several keys of one table, answers in the same order. Engines with a round trip
    /// per read (a database server) answer them in one.
    fn get_many(&self, table: Table, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|key| self.get(table, key)).collect()
    }
    /// Reads up to `limit` pairs whose key starts with `prefix` and sorts after `after`.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError>;
    /// Applies a write set atomically and durably (fsync'd before it returns).
    fn commit(&self, writes: WriteSet) -> Result<(), StoreError>;
    /// Makes the backend writable again after a failed commit (for example once a full disk has
    /// room again), with exactly what is durable. The writer calls it before its next commit and
    /// then reloads everything it caches; an engine that needs nothing does nothing.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
