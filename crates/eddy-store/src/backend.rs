//! The storage trait: ordered tables of bytes, point reads, prefix scans and one atomic,
//! durable commit per write set. The domain logic above it (identity, profiles, outbox) is
//! the same for every backend.

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
