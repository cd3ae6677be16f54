//! eddy's durable store.
//!
//! [`Store`] is the handle the server holds. Reads (this file) go straight to the backend and see
//! committed data; writes (`writes`: one typed method per operation) go to the single writer
//! and return once their group is on disk.
//!
//! Inside, a file per concern:
//! - [`backend`]: the storage trait and what every engine must guarantee;
//!   [`fjall_backend`] is the embedded default, [`postgres_backend`] keeps the same tables in
//!   PostgreSQL, shared by as many eddy processes as point at it.
//! - `keys` and [`meta`]: what lives under which key (every key bounded by construction).
//! - `codec`: how a profile is stored. `identity`: which profile an identifier names, written
//!   once over any reader. `cache`: what the writer keeps between groups. `overlay`: one group's
//!   reads-own-writes view and its write set.
//! - [`mutations`]: the operations by domain (users, cohorts, admin, and settings objects recorded
//!   with Currents events in one commit), each a function over the overlay; `writer`: the
//!   thread that groups them, commits once and recovers from failures.
//! - `indexer`: re-indexing committed profiles for segments, off the writer. `snapshot`: the
//!   index saved at a clean stop and loaded at the next start, only for the exact state it was
//!   taken from. `follower`: on a backend several processes share, the index (and the writer's
//!   cache) following what the others commit.
//! - [`secrets`]: credentials in connector and export settings, encrypted at rest.
//! - [`ids`]: secrets (fail closed) and unique ids.

pub mod backend;
mod cache;
mod codec;
mod error;
pub mod fjall_backend;
mod follower;
pub mod histogram;
mod identity;
pub mod ids;
mod indexer;
mod keys;
pub mod meta;
pub mod mutations;
mod overlay;
pub mod postgres_backend;
pub mod secrets;
mod snapshot;
mod writer;
mod writes;
mod written;

use std::path::Path;
use std::sync::{Arc, RwLock};

use eddy_model::profile::{Limits, Profile};
use eddy_model::track::Identifier;
use eddy_model::usage::Day;
use eddy_segments::Index;
use serde_json::Value;
use tokio::sync::mpsc;

pub use error::StoreError;
pub use meta::{ApiKey, Workspace};
pub use mutations::cohorts::{CohortMember, MemberChange};
pub use mutations::{CountWrite, ObjectWrite};
pub use writer::WriterStats;

use backend::{Backend, Table};
use identity::{Read, View};

/// The settings-object namespace of process-wide objects (the key that signs tracking links):
/// no workspace has this id (ids count up from 0), so deleting a workspace never touches them.
pub const GLOBAL_OBJECTS: u32 = u32::MAX;

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Block cache of the embedded engine, bytes.
    pub cache_bytes: u64,
    /// Profile rules (array caps).
    pub limits: Limits,
    /// Mutations that may wait for the writer before callers wait too.
    pub queue: usize,
    /// Decoded profiles the writer keeps in memory between group commits.
    pub cache_profiles: usize,
    /// Encrypts credentials at rest; without one they are stored as given.
    pub sealer: Option<secrets::Sealer>,
    /// Where the segment index is saved at a clean shutdown and loaded from at the next start
    /// (instead of re-reading every profile); none: always rebuilt.
    pub index_snapshot: Option<std::path::PathBuf>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 256 * 1024 * 1024,
            limits: Limits::default(),
            queue: 4096,
            cache_profiles: 200_000,
            sealer: None,
            index_snapshot: None,
        }
    }
}

/// The handle to a store: cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    tx: mpsc::Sender<writer::Msg>,
    stats: Arc<WriterStats>,
    index: Arc<RwLock<Index>>,
    progress: Arc<indexer::Progress>,
    sealer: Option<Arc<secrets::Sealer>>,
    index_start: IndexStart,
    follower: Option<Arc<follower::Follower>>,
}

/// How the segment index was made at start.
#[derive(Debug, Clone, Copy)]
pub struct IndexStart {
    /// Loaded from the snapshot of the last clean shutdown (else rebuilt from the profiles).
    pub from_snapshot: bool,
    /// How long it took, seconds.
    pub seconds: f64,
}

impl Store {
    /// Opens the embedded store in `dir` and starts its writer.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        let backend = fjall_backend::FjallBackend::open(dir, options.cache_bytes)?;
        Store::start(Arc::new(backend), options)
    }

    /// Opens the store in a PostgreSQL database (created and migrated as needed) with a pool of
    /// `connections`, and starts its writer.
    pub fn open_postgres(
        url: &str,
        connections: usize,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let backend = postgres_backend::PostgresBackend::open(url, connections)?;
        Store::start(Arc::new(backend), options)
    }

    /// Loads the segment index saved at the last clean shutdown, or rebuilds it from the
    /// backend, then starts a writer over it.
    pub fn start(backend: Arc<dyn Backend>, options: StoreOptions) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        // On a shared backend the index starts at the change feed's head as of before the
        // rebuild (later changes are re-read after it), and a snapshot is never trusted: other
        // processes may have written since it was taken.
        let shared_head = match backend.cluster() {
            Some(cluster) => Some(cluster.head()?),
            None => None,
        };
        let snapshot_path = match shared_head {
            Some(_) => None,
            None => options.index_snapshot.clone(),
        };
        let saved = snapshot::take(backend.as_ref(), snapshot_path.as_deref())?;
        let (index, from_snapshot) = match saved {
            Some(index) => (index, true),
            None => (rebuild_index(backend.as_ref())?, false),
        };
        let index_start = IndexStart {
            from_snapshot,
            seconds: started.elapsed().as_secs_f64(),
        };
        let source = if from_snapshot {
            "loaded from the snapshot"
        } else {
            "rebuilt from the profiles"
        };
        tracing::info!(
            seconds = index_start.seconds,
            workspaces = index.workspace_count(),
            "segment index {source}"
        );
        let index = Arc::new(RwLock::new(index));
        let (tx, rx) = mpsc::channel(options.queue);
        let stats = Arc::new(WriterStats::default());
        let thread_backend = backend.clone();
        let thread_stats = stats.clone();
        let thread_index = index.clone();
        let progress = Arc::new(indexer::Progress::default());
        let feed = writer::IndexFeed {
            tx: indexer::start(index.clone(), progress.clone())
                .map_err(|e| StoreError::Backend(e.to_string()))?,
            progress: progress.clone(),
        };
        let follower = shared_head.map(|head| {
            Arc::new(follower::Follower::new(
                head,
                backend.clone(),
                index.clone(),
                feed.tx.clone(),
                progress.clone(),
            ))
        });
        if let Some(follower) = &follower {
            follow_in_background(Arc::downgrade(follower))?;
        }
        let writer = writer::Writer {
            backend: thread_backend,
            limits: options.limits,
            cache: cache::WriterCache::new(options.cache_profiles),
            index: thread_index,
            feed,
            stats: thread_stats,
            needs_recovery: false,
            snapshot: snapshot_path,
            follower: follower.clone(),
            seen: shared_head.unwrap_or(0),
        };
        std::thread::Builder::new()
            .name("eddy-writer".into())
            .spawn(move || writer::run(writer, rx))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Store {
            backend,
            tx,
            stats,
            index,
            progress,
            sealer: options.sealer.map(Arc::new),
            index_start,
            follower,
        })
    }

    /// On a backend shared with other processes: change records of theirs applied to this
    /// process's index, and how old the last one was when applied (seconds). `None` otherwise.
    pub fn change_feed(&self) -> Option<(u64, f64)> {
        self.follower.as_ref().map(|f| {
            (
                f.applied.load(std::sync::atomic::Ordering::Relaxed),
                f.lag_ms.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0,
            )
        })
    }

    /// Whether other processes share this store's backend.
    pub fn is_shared(&self) -> bool {
        self.follower.is_some()
    }

    /// Counts up to `want` requests of `caller` in a rate-limit window shared by the cluster,
    /// never past `limit`: (the window's count after this, how many were granted). Only on a
    /// shared store; a store of one process grants everything.
    pub fn take_tokens(
        &self,
        caller: u64,
        group: &str,
        window_start: u64,
        want: u64,
        limit: u64,
    ) -> Result<(u64, u64), StoreError> {
        match self.backend.cluster() {
            Some(cluster) => cluster.take_tokens(caller, group, window_start, want, limit),
            None => Ok((want, want)),
        }
    }

    /// Gives up the leader lease (at shutdown), so that another node takes over at once.
    pub fn resign(&self) {
        if let Some(cluster) = self.backend.cluster() {
            cluster.resign();
        }
    }

    /// Takes or keeps the cluster's leader lease (always true on a store of one process),
    /// recording `url` (this node's admin API) when it takes it.
    pub fn lead(&self, url: &str) -> Result<bool, StoreError> {
        match self.backend.cluster() {
            Some(cluster) => cluster.lead(url),
            None => Ok(true),
        }
    }

    /// Where the cluster's leader answers its admin API (none on a store of one process, or
    /// before any node has led).
    pub fn leader_url(&self) -> Result<Option<String>, StoreError> {
        match self.backend.cluster() {
            Some(cluster) => cluster.leader_url(),
            None => Ok(None),
        }
    }

    /// How the segment index was made at start (for `/metrics`).
    pub fn index_start(&self) -> IndexStart {
        self.index_start
    }

    /// The segment index, once it reflects every group committed before this call (by any
    /// process sharing the backend).
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        if let Some(follower) = &self.follower
            && let Err(e) = follower.catch_up()
        {
            tracing::warn!(error = %e, "cannot read the change feed; the segment index may miss other nodes' latest writes");
        }
        self.progress.wait(std::time::Duration::from_secs(10));
        match self.index.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A registered partner.
    pub fn partner(&self, name: &str) -> Result<Option<meta::Partner>, StoreError> {
        self.meta_record(&meta::partner_key(name))
    }

    /// The owner of a Data Import Key, by the key's hash.
    pub fn data_import_key(&self, hash: &str) -> Result<Option<meta::DataImportKey>, StoreError> {
        self.meta_record(&meta::import_key_hash_key(hash))
    }

    /// Every registered partner, by name.
    pub fn partners(&self) -> Result<Vec<meta::Partner>, StoreError> {
        self.meta_records(b"partner/")
    }

    /// The API keys of a workspace (their records: never the secret), oldest first.
    pub fn api_keys(&self, ws: u32) -> Result<Vec<ApiKey>, StoreError> {
        let prefix = format!("key/id/{ws:010}/");
        let mut out = Vec::new();
        for (_, hash) in self
            .backend
            .scan(Table::Meta, prefix.as_bytes(), None, usize::MAX)?
        {
            if let Some(key) = self.api_key(&String::from_utf8_lossy(&hash))? {
                out.push(key);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// A workspace's Data Import Key for a partner, if one is set (its record: never the key).
    pub fn data_import_key_of(
        &self,
        ws: u32,
        partner: &str,
    ) -> Result<Option<meta::DataImportKey>, StoreError> {
        match self
            .backend
            .get(Table::Meta, &meta::import_key_owner_key(ws, partner))?
        {
            Some(hash) => self.data_import_key(&String::from_utf8_lossy(&hash)),
            None => Ok(None),
        }
    }

    /// A cohort.
    pub fn cohort(
        &self,
        ws: u32,
        partner: &str,
        cohort_id: &str,
    ) -> Result<Option<meta::Cohort>, StoreError> {
        self.meta_record(&meta::cohort_key(ws, partner, cohort_id))
    }

    /// Every cohort of a workspace.
    pub fn cohorts(&self, ws: u32) -> Result<Vec<meta::Cohort>, StoreError> {
        self.meta_records(&meta::cohorts_prefix(ws))
    }

    /// A segment.
    pub fn segment(&self, ws: u32, id: &str) -> Result<Option<meta::Segment>, StoreError> {
        self.meta_record(&meta::segment_key(ws, id))
    }

    /// Where a workspace's segment exports go (the local export directory unless set).
    pub fn export_storage(&self, ws: u32) -> Result<meta::ExportStorage, StoreError> {
        let Some(mut value) = self.meta_record::<Value>(&meta::export_storage_key(ws))? else {
            return Ok(meta::ExportStorage::Local);
        };
        self.open_secrets(&mut value)?;
        serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
            table: "meta",
            reason: e.to_string(),
        })
    }

    /// A Currents connector's configuration.
    pub fn connector(&self, ws: u32, name: &str) -> Result<Option<Value>, StoreError> {
        let Some(mut value) = self.meta_record::<Value>(&meta::connector_key(ws, name))? else {
            return Ok(None);
        };
        self.open_secrets(&mut value)?;
        Ok(Some(value))
    }

    /// A Currents connector's delivery state.
    pub fn connector_state(&self, ws: u32, name: &str) -> Result<Option<Value>, StoreError> {
        self.meta_record(&meta::connector_state_key(ws, name))
    }

    fn open_secrets(&self, value: &mut Value) -> Result<(), StoreError> {
        match &self.sealer {
            Some(sealer) => sealer.open_fields(value),
            None => Ok(()),
        }
    }

    /// A workspace's settings object of a kind, credentials opened.
    pub fn object(&self, ws: u32, kind: &str, name: &str) -> Result<Option<Value>, StoreError> {
        let Some(mut value) = self.meta_record::<Value>(&meta::object_key(ws, kind, name))? else {
            return Ok(None);
        };
        self.open_secrets(&mut value)?;
        Ok(Some(value))
    }

    /// Every settings object of a kind in a workspace, by name, credentials opened.
    pub fn objects(&self, ws: u32, kind: &str) -> Result<Vec<(String, Value)>, StoreError> {
        let prefix = meta::objects_prefix(ws, kind);
        let mut out = Vec::new();
        for (key, raw) in self.backend.scan(Table::Meta, &prefix, None, usize::MAX)? {
            let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let mut value: Value = decode(&raw, "meta")?;
            self.open_secrets(&mut value)?;
            out.push((name, value));
        }
        Ok(out)
    }

    /// Settings objects of a kind whose names start with `prefix`, in name order, from after
    /// `after` (a name), at most `limit`: pages over large kinds (message history by user).
    pub fn objects_page(
        &self,
        ws: u32,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let kind_prefix = meta::objects_prefix(ws, kind);
        let mut scan_prefix = kind_prefix.clone();
        scan_prefix.extend_from_slice(prefix.as_bytes());
        let after_key = after.map(|name| meta::object_key(ws, kind, name));
        let mut out = Vec::new();
        for (key, raw) in
            self.backend
                .scan(Table::Meta, &scan_prefix, after_key.as_deref(), limit)?
        {
            let name = String::from_utf8_lossy(&key[kind_prefix.len()..]).into_owned();
            let mut value: Value = decode(&raw, "meta")?;
            self.open_secrets(&mut value)?;
            out.push((name, value));
        }
        Ok(out)
    }

    /// Every Currents connector of every workspace, as (workspace, configuration).
    pub fn connectors(&self) -> Result<Vec<(u32, Value)>, StoreError> {
        let mut out = Vec::new();
        for (key, value) in self
            .backend
            .scan(Table::Meta, b"currents/", None, usize::MAX)?
        {
            let ws = std::str::from_utf8(&key[b"currents/".len()..])
                .ok()
                .and_then(|rest| rest.get(..10))
                .and_then(|w| w.parse::<u32>().ok());
            if let Some(ws) = ws {
                let mut value: Value = decode(&value, "meta")?;
                self.open_secrets(&mut value)?;
                out.push((ws, value));
            }
        }
        Ok(out)
    }

    /// The sequence number the next outbox event will get.
    pub fn outbox_head(&self) -> Result<u64, StoreError> {
        Ok(match self.backend.get(Table::Meta, meta::NEXT_OUTBOX)? {
            Some(bytes) => keys::decode_seq(&bytes)?,
            None => 0,
        })
    }

    /// The first outbox sequence number queued at or after `ms` (the head when none is).
    pub fn outbox_seq_at(&self, ms: i64) -> Result<u64, StoreError> {
        let head = self.outbox_head()?;
        let Some((first, _)) = self.outbox(0, 1)?.into_iter().next() else {
            return Ok(head);
        };
        let (mut low, mut high) = (first, head);
        // Queue times only grow with the sequence number: binary search on point reads.
        while low < high {
            let mid = low + (high - low) / 2;
            let at = match self.backend.get(Table::Outbox, &keys::outbox(mid))? {
                Some(bytes) => decode::<Value>(&bytes, "outbox")?
                    .get("at")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MIN),
                None => i64::MIN,
            };
            if at < ms {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }

    /// Every segment of a workspace, oldest first.
    pub fn segments(&self, ws: u32) -> Result<Vec<meta::Segment>, StoreError> {
        let mut list: Vec<meta::Segment> = self.meta_records(&meta::segments_prefix(ws))?;
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(list)
    }

    fn meta_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.backend.get(Table::Meta, key)? {
            Some(bytes) => decode(&bytes, "meta").map(Some),
            None => Ok(None),
        }
    }

    fn meta_records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for (_, value) in self.backend.scan(Table::Meta, prefix, None, usize::MAX)? {
            out.push(decode(&value, "meta")?);
        }
        Ok(out)
    }

    /// Mutations waiting for the writer now.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Writer counters for metrics.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// The backend, for read-only queries.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// A workspace by name.
    pub fn workspace(&self, name: &str) -> Result<Option<Workspace>, StoreError> {
        match self.backend.get(Table::Meta, &meta::workspace_key(name))? {
            Some(bytes) => decode(&bytes, "meta").map(Some),
            None => Ok(None),
        }
    }

    /// A workspace by id.
    pub fn workspace_by_id(&self, id: u32) -> Result<Option<Workspace>, StoreError> {
        match self.backend.get(Table::Meta, &meta::workspace_id_key(id))? {
            Some(name) => self.workspace(&String::from_utf8_lossy(&name)),
            None => Ok(None),
        }
    }

    /// The ids of the workspaces that hold profiles, identifiers, memberships or usage (live
    /// or deleted and not yet purged).
    pub fn workspace_ids_with_data(&self) -> Result<Vec<u32>, StoreError> {
        let mut ids = std::collections::BTreeSet::new();
        for table in [Table::Profiles, Table::Idents, Table::Members, Table::Usage] {
            let mut after: Option<[u8; 4]> = None;
            loop {
                let first =
                    self.backend
                        .scan(table, b"", after.as_ref().map(|a| a.as_slice()), 1)?;
                let Some((key, _)) = first.first() else {
                    break;
                };
                let Some(prefix) = key.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok()) else {
                    break;
                };
                let ws = u32::from_be_bytes(prefix);
                ids.insert(ws);
                // Every key of the next workspace sorts after its bare 4-byte id.
                let Some(next) = ws.checked_add(1) else {
                    break;
                };
                after = Some(next.to_be_bytes());
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Every workspace, by id.
    pub fn workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        let mut out = Vec::new();
        for (_, value) in self
            .backend
            .scan(Table::Meta, b"ws/name/", None, usize::MAX)?
        {
            out.push(decode::<Workspace>(&value, "meta")?);
        }
        out.sort_by_key(|w| w.id);
        Ok(out)
    }

    /// The API key whose secret hashes to `hash`.
    pub fn api_key(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        match self.backend.get(Table::Meta, &meta::api_key_key(hash))? {
            Some(bytes) => decode(&bytes, "meta").map(Some),
            None => Ok(None),
        }
    }

    /// The profile an identifier names, with its internal id.
    pub fn find(&self, ws: u32, ident: &Identifier) -> Result<Option<(u32, Profile)>, StoreError> {
        let mut view = View {
            backend: self.backend.as_ref(),
        };
        let Some(id) = view.resolve(ws, ident)? else {
            return Ok(None);
        };
        Ok(view.profile(ws, id)?.map(|p| (id, p)))
    }

    /// Every profile an identifier names: one for an external id, braze id, alias or device id,
    /// possibly several for an email or phone.
    pub fn find_all(&self, ws: u32, ident: &Identifier) -> Result<Vec<(u32, Profile)>, StoreError> {
        let mut view = View {
            backend: self.backend.as_ref(),
        };
        let ids = match ident {
            Identifier::Email(email) => view.ident_list(ws, keys::kind::EMAIL, email.as_bytes())?,
            Identifier::Phone(phone) => view.ident_list(ws, keys::kind::PHONE, phone.as_bytes())?,
            other => view.resolve(ws, other)?.into_iter().collect(),
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(profile) = view.profile(ws, id)? {
                out.push((id, profile));
            }
        }
        Ok(out)
    }

    /// Profiles of a workspace in internal-id order, after `after`, at most `limit`.
    pub fn profiles_page(
        &self,
        ws: u32,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<(u32, Profile)>, StoreError> {
        let prefix = keys::workspace_prefix(ws);
        let start = after.map(|id| keys::profile(ws, id));
        let mut out = Vec::new();
        for (key, value) in self
            .backend
            .scan(Table::Profiles, &prefix, start.as_deref(), limit)?
        {
            if let Some(id) = keys::profile_id(&key) {
                out.push((id, codec::decode_profile(&value)?));
            }
        }
        Ok(out)
    }

    /// A profile by internal id.
    pub fn profile(&self, ws: u32, id: u32) -> Result<Option<Profile>, StoreError> {
        View {
            backend: self.backend.as_ref(),
        }
        .profile(ws, id)
    }

    /// The profile under a device id.
    pub fn find_device(
        &self,
        ws: u32,
        device_id: &str,
    ) -> Result<Option<(u32, Profile)>, StoreError> {
        let mut view = View {
            backend: self.backend.as_ref(),
        };
        let Some(id) = view.ident(ws, keys::kind::DEVICE, device_id.as_bytes())? else {
            return Ok(None);
        };
        Ok(view.profile(ws, id)?.map(|p| (id, p)))
    }

    /// Data points, events, purchases and new profiles per day of a workspace, oldest first.
    pub fn usage(&self, ws: u32) -> Result<Vec<(String, Day)>, StoreError> {
        let mut out = Vec::new();
        for (key, value) in
            self.backend
                .scan(Table::Usage, &keys::workspace_prefix(ws), None, usize::MAX)?
        {
            let day = String::from_utf8_lossy(&key[4..]).to_string();
            out.push((day, decode(&value, "usage")?));
        }
        Ok(out)
    }

    /// Outbox entries from sequence `from` on among the next `limit`, only those whose stored
    /// bytes contain `needle` (an id): the others are never decoded.
    pub fn outbox_containing(
        &self,
        from: u64,
        limit: usize,
        needle: &[u8],
    ) -> Result<Vec<(u64, Value)>, StoreError> {
        let after = from.checked_sub(1).map(keys::outbox);
        let start = if from == 0 { None } else { after.as_deref() };
        let mut out = Vec::new();
        for (key, value) in self.backend.scan(Table::Outbox, b"", start, limit)? {
            if needle.is_empty() || !value.windows(needle.len()).any(|w| w == needle) {
                continue;
            }
            let seq = keys::decode_seq(&key)?;
            out.push((seq, decode(&value, "outbox")?));
        }
        Ok(out)
    }

    /// Outbox entries from sequence `from` on, up to `limit`.
    pub fn outbox(&self, from: u64, limit: usize) -> Result<Vec<(u64, Value)>, StoreError> {
        let after = from.checked_sub(1).map(keys::outbox);
        let start = if from == 0 { None } else { after.as_deref() };
        let mut out = Vec::new();
        for (key, value) in self.backend.scan(Table::Outbox, b"", start, limit)? {
            let seq = keys::decode_seq(&key)?;
            out.push((seq, decode(&value, "outbox")?));
        }
        Ok(out)
    }
}

/// Moves the follower along the change feed twice a second while the store lives, so that an
/// idle process stays within the feed's retention and its index stays current between reads.
fn follow_in_background(follower: std::sync::Weak<follower::Follower>) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("eddy-follower".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let Some(follower) = follower.upgrade() else {
                    return;
                };
                if let Err(e) = follower.catch_up() {
                    tracing::warn!(error = %e, "cannot follow the change feed");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// Builds the segment index from every stored profile and cohort membership. Reading and
/// decoding profiles runs on a second thread while this one indexes them: each is about half
/// of the work, and nothing serves until the index is whole.
pub(crate) fn rebuild_index(backend: &dyn Backend) -> Result<Index, StoreError> {
    type Batch = Result<Vec<(u32, u32, eddy_model::profile::Profile)>, StoreError>;
    let mut index = Index::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
    std::thread::scope(|scope| -> Result<(), StoreError> {
        scope.spawn(move || {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = match backend.scan(Table::Profiles, b"", after.as_deref(), 4096) {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let Some((last, _)) = page.last() else { return };
                after = Some(last.clone());
                let mut decoded = Vec::with_capacity(page.len());
                for (key, value) in &page {
                    let (Some(ws), Some(id)) = (keys::decode_id(key), keys::profile_id(key)) else {
                        continue;
                    };
                    match codec::decode_profile(value) {
                        Ok(profile) => decoded.push((ws, id, profile)),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                // The indexing side stopped (it failed): nothing left to do.
                if tx.send(Ok(decoded)).is_err() {
                    return;
                }
            }
        });
        for batch in rx {
            for (ws, id, profile) in batch? {
                index.workspace_mut(ws).upsert(id, &profile);
            }
        }
        Ok(())
    })?;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = backend.scan(Table::Members, b"", after.as_deref(), 4096)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, _) in &page {
            if let Some((ws, partner, cohort_id, id)) = keys::parse_member(key) {
                index
                    .workspace_mut(ws)
                    .set_member(&partner, &cohort_id, id, true);
            }
        }
    }
    Ok(index)
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    table: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}
