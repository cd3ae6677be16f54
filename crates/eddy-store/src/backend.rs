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
//! That is only correct while this process sees every write. A backend that several processes
//! share says so through [`Backend::cluster`], and then guarantees three more things:
//! - **One group at a time, cluster-wide.** [`Cluster::begin_group`] takes a lock that only the
//!   group's commit (or [`Cluster::abort_group`]) releases, so a group reads what every earlier
//!   group of every process committed, and nothing commits between its reads and its commit.
//!   Sequence numbers handed out under that lock (the outbox's, profile ids) commit in order.
//! - **A change feed.** Every commit made under the lock also records the keys it wrote, under
//!   the next change number; [`Cluster::changes`] returns them in order, so each process drops
//!   what it cached of those keys and re-indexes them (see `follower`).
//! - **A leader lease** and **shared rate-limit counters** for work that must happen once in the
//!   cluster (Currents connectors, dispatches, trimming) and limits that hold per key.

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
    /// The cluster hooks of a backend that several processes share; `None` for one process.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
}

/// What one commit of some process wrote, from the change feed.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its change number: commits are numbered 1, 2, … in commit order.
    pub seq: u64,
    /// The process that committed it ([`Cluster::node`]).
    pub node: u64,
    /// When it committed, UTC ms (the database's clock).
    pub at_ms: i64,
    /// The keys it wrote (put or deleted) in the tables that processes cache or index.
    pub keys: Vec<(Table, Vec<u8>)>,
    /// The counters it moved (`next/…` meta keys) with their new values.
    pub counters: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The change feed as a group or a reader finds it.
#[derive(Debug, Clone)]
pub struct GroupStart {
    /// The last change number committed.
    pub head: u64,
    /// The changes after the caller's position, in order; `None` when some were trimmed
    /// already (the caller must then reload everything it derives from the backend).
    pub changes: Option<Vec<Change>>,
}

/// How processes sharing one backend stay consistent (see the module's documentation).
pub trait Cluster: Send + Sync {
    /// This process's id in the change feed (random per start).
    fn node(&self) -> u64;
    /// Takes the cluster-wide write lock for one group and returns the changes committed after
    /// `after`; the group's [`Backend::commit`] records the next number and releases the lock.
    fn begin_group(&self, after: u64) -> Result<GroupStart, StoreError>;
    /// Releases the write lock of a group that will not commit.
    fn abort_group(&self);
    /// The last change number committed.
    fn head(&self) -> Result<u64, StoreError>;
    /// The changes committed after `after`, without the lock.
    fn changes(&self, after: u64) -> Result<GroupStart, StoreError>;
    /// Takes or keeps the leader lease: true while this process holds it. A process that dies
    /// loses it with its connection. On taking it, records `url`, where this process's admin API
    /// answers.
    fn lead(&self, url: &str) -> Result<bool, StoreError>;
    /// Where the leader's admin API answers, as its last holder recorded it.
    fn leader_url(&self) -> Result<Option<String>, StoreError>;
    /// Gives the leader lease up, if held (at a clean shutdown).
    fn resign(&self);
    /// Counts up to `want` requests of `caller` in a fixed window shared by the cluster, never
    /// past `limit`: returns (the window's count after this, how many of `want` were granted).
    fn take_tokens(
        &self,
        caller: u64,
        group: &str,
        window_start: u64,
        want: u64,
        limit: u64,
    ) -> Result<(u64, u64), StoreError>;
}
