//! One group commit's overlay: reads see the group's own earlier writes, and every write lands in
//! one [`WriteSet`] at the end, with the counters it moved, the usage it metered and the outbox
//! events it emitted.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use eddy_model::currents::OutboxEvent;
use eddy_model::profile::Profile;
use eddy_model::usage::{Activity, Day, Points};
use eddy_segments::Index;
use roaring::RoaringBitmap;

use crate::backend::{Backend, Pair, Table, WriteSet};
use crate::cache::WriterCache;
use crate::codec::{decode_profile, encode_profile};
use crate::identity::Read;
use crate::keys::{self, kind};
use crate::meta;
use crate::written::{CohortDelta, Written};
use crate::{StoreError, ids};

/// Counters the writer keeps in memory and persists with every batch.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Next global outbox sequence number.
    pub next_outbox: u64,
    /// Next workspace id.
    pub next_workspace: u32,
    /// Next internal profile id per workspace; ids are never reused.
    pub next_profile: HashMap<u32, u32>,
}

/// A group commit in progress.
pub struct Txn<'a> {
    backend: &'a dyn Backend,
    counters: &'a mut Counters,
    cache: &'a mut WriterCache,
    raw: Vec<FxHashMap<Vec<u8>, Option<Vec<u8>>>>,
    profiles: FxHashMap<(u32, u32), Option<Profile>>,
    order: Vec<(Table, Vec<u8>)>,
    outbox: Vec<(u32, OutboxEvent, Option<String>)>,
    usage: FxHashMap<(u32, String), Day>,
    touched_profile_counters: Vec<u32>,
    index: &'a Index,
    members: FxHashMap<(u32, String, String), CohortDelta>,
    /// The time this group is applied at, UTC ms.
    pub now_ms: i64,
}

impl Read for Txn<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.raw[table.position()].get(key) {
            return Ok(value.clone());
        }
        if table != Table::Idents {
            return self.backend.get(table, key);
        }
        if let Some(value) = self.cache.ident(key) {
            return Ok(value.clone());
        }
        // A backend read is committed state, so it may enter the cache at once.
        let value = self.backend.get(table, key)?;
        self.cache.remember_ident(key.to_vec(), value.clone());
        Ok(value)
    }

    /// Like [`Read::ident`], decoding in place instead of copying the stored value.
    fn ident(&mut self, ws: u32, kind: u8, value: &[u8]) -> Result<Option<u32>, StoreError> {
        let key = keys::ident(ws, kind, value);
        if let Some(stored) = self.raw[Table::Idents.position()].get(&key) {
            return Ok(stored.as_deref().and_then(keys::decode_id));
        }
        if let Some(stored) = self.cache.ident(&key) {
            return Ok(stored.as_deref().and_then(keys::decode_id));
        }
        let stored = self.backend.get(Table::Idents, &key)?;
        let id = stored.as_deref().and_then(keys::decode_id);
        self.cache.remember_ident(key, stored);
        Ok(id)
    }

    fn profile(&mut self, ws: u32, id: u32) -> Result<Option<Profile>, StoreError> {
        if let Some(p) = self.profiles.get(&(ws, id)) {
            return Ok(p.clone());
        }
        if let Some(p) = self.cache.profile(ws, id) {
            return Ok(Some(p.clone()));
        }
        match self.backend.get(Table::Profiles, &keys::profile(ws, id))? {
            Some(bytes) => decode_profile(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

impl<'a> Txn<'a> {
    /// Reads the identifier entries a group will look up in one backend call, into the cache,
    /// then the profiles they name that the cache lacks in one more, so that applying the group
    /// does not pay a round trip per identifier or profile.
    pub fn prefetch_idents(&mut self, mut wanted: Vec<Vec<u8>>) -> Result<(), StoreError> {
        // Without a cache the answers would have nowhere to wait.
        if !self.cache.enabled() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let missing: Vec<Vec<u8>> = wanted
            .iter()
            .filter(|key| {
                !self.raw[Table::Idents.position()].contains_key(*key)
                    && self.cache.ident(key).is_none()
            })
            .cloned()
            .collect();
        let values = self.backend.get_many(Table::Idents, &missing)?;
        for (key, value) in missing.into_iter().zip(values) {
            self.cache.remember_ident(key, value);
        }
        // The profiles they name, where the cache lacks them (on a store other processes write,
        // their copies are dropped whenever another process writes them).
        let mut profiles: Vec<Vec<u8>> = Vec::new();
        for key in &wanted {
            let stored = match self.raw[Table::Idents.position()].get(key) {
                Some(stored) => stored.as_deref(),
                None => self.cache.ident(key).and_then(|v| v.as_deref()),
            };
            let (Some(ws), Some(id)) = (keys::decode_id(key), stored.and_then(keys::decode_id))
            else {
                continue;
            };
            if self.cache.profile(ws, id).is_none() && !self.profiles.contains_key(&(ws, id)) {
                profiles.push(keys::profile(ws, id));
            }
        }
        profiles.sort_unstable();
        profiles.dedup();
        let values = self.backend.get_many(Table::Profiles, &profiles)?;
        for (key, value) in profiles.iter().zip(values) {
            let (Some(ws), Some(id), Some(bytes)) =
                (keys::decode_id(key), keys::profile_id(key), value)
            else {
                continue;
            };
            self.cache.remember_profile(ws, id, decode_profile(&bytes)?);
        }
        Ok(())
    }

    /// Starts a group over `backend`.
    pub fn new(
        backend: &'a dyn Backend,
        counters: &'a mut Counters,
        cache: &'a mut WriterCache,
        index: &'a Index,
        now_ms: i64,
    ) -> Txn<'a> {
        Txn {
            backend,
            counters,
            cache,
            raw: Table::ALL.iter().map(|_| FxHashMap::default()).collect(),
            profiles: FxHashMap::default(),
            order: Vec::new(),
            outbox: Vec::new(),
            usage: FxHashMap::default(),
            touched_profile_counters: Vec::new(),
            index,
            members: FxHashMap::default(),
            now_ms,
        }
    }

    fn committed_members(
        &self,
        ws: u32,
        partner: &str,
        cohort_id: &str,
    ) -> Option<&'a RoaringBitmap> {
        let index: &'a Index = self.index;
        index
            .workspace(ws)
            .and_then(|w| w.cohort_bitmap(partner, cohort_id))
    }

    /// Adds a profile to a cohort or removes it; true when that changed anything.
    pub fn set_member(
        &mut self,
        ws: u32,
        partner: &str,
        cohort_id: &str,
        id: u32,
        member: bool,
    ) -> bool {
        self.set_members(ws, partner, cohort_id, &[(id, member)]) == 1
    }

    /// Applies membership changes to one cohort in order; returns how many changed anything.
    pub fn set_members(
        &mut self,
        ws: u32,
        partner: &str,
        cohort_id: &str,
        changes: &[(u32, bool)],
    ) -> usize {
        let committed = self.committed_members(ws, partner, cohort_id);
        let delta = self
            .members
            .entry((ws, partner.to_string(), cohort_id.to_string()))
            .or_default();
        let mut changed = 0;
        for (id, member) in changes {
            if delta.contains(committed, *id) != *member {
                delta.set(committed, *id, *member);
                changed += 1;
            }
        }
        changed
    }

    /// The cohorts a profile is in, this group's changes included, as (partner, cohort id).
    pub fn memberships(&self, ws: u32, id: u32) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(index) = self.index.workspace(ws) {
            for (partner, ids) in index.memberships(id) {
                for cohort_id in ids {
                    out.push((partner.clone(), cohort_id));
                }
            }
        }
        for ((w, partner, cohort_id), delta) in &self.members {
            if *w != ws {
                continue;
            }
            let pair = (partner.clone(), cohort_id.clone());
            if delta.added.contains(id) && !out.contains(&pair) {
                out.push(pair);
            } else if delta.removed.contains(id) {
                out.retain(|p| *p != pair);
            }
        }
        out
    }

    /// Writes a raw key.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.set_raw(table, key, Some(value));
    }

    /// Deletes a raw key.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.set_raw(table, key, None);
    }

    fn set_raw(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.raw[table.position()]
            .insert(key.clone(), value)
            .is_none()
        {
            self.order.push((table, key));
        }
    }

    /// Committed keys of `table` under `prefix` (the group's own writes are not seen: the
    /// callers scan what earlier groups left).
    pub fn backend_scan(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        self.backend.scan(table, prefix, None, limit)
    }

    /// Committed meta entries under `prefix`.
    pub fn meta_scan(&self, prefix: &[u8]) -> Result<Vec<Pair>, StoreError> {
        self.backend_scan(Table::Meta, prefix, usize::MAX)
    }

    /// Loads a profile for update.
    pub fn load(&mut self, ws: u32, id: u32) -> Result<Option<Profile>, StoreError> {
        Read::profile(self, ws, id)
    }

    /// Moves a profile out for update without copying it; the caller must [`Txn::save`] it
    /// back (or remove it), or the group forgets its earlier changes to it.
    pub fn take(&mut self, ws: u32, id: u32) -> Result<Option<Profile>, StoreError> {
        if let Some(entry) = self.profiles.get_mut(&(ws, id)) {
            return Ok(entry.take());
        }
        if let Some(p) = self.cache.take_profile(ws, id) {
            return Ok(Some(p));
        }
        match self.backend.get(Table::Profiles, &keys::profile(ws, id))? {
            Some(bytes) => decode_profile(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores a profile.
    pub fn save(&mut self, ws: u32, id: u32, profile: Profile) {
        self.profiles.insert((ws, id), Some(profile));
    }

    /// Removes a profile.
    pub fn remove_profile(&mut self, ws: u32, id: u32) {
        self.profiles.insert((ws, id), None);
    }

    /// Allocates the next internal id of a workspace and a new profile for it.
    pub fn create_profile(&mut self, ws: u32) -> (u32, Profile) {
        let next = self.counters.next_profile.entry(ws).or_insert(0);
        let id = *next;
        *next += 1;
        self.touched_profile_counters.push(ws);
        self.count(
            ws,
            Activity {
                new_profiles: 1,
                ..Activity::default()
            },
        );
        let profile = Profile::new(ids::braze_id(self.now_ms), self.now_ms);
        self.put(
            Table::Idents,
            keys::ident(ws, kind::BRAZE, profile.braze_id.as_bytes()),
            id.to_be_bytes().to_vec(),
        );
        (id, profile)
    }

    /// Allocates the next workspace id.
    pub fn next_workspace_id(&mut self) -> u32 {
        let id = self.counters.next_workspace;
        self.counters.next_workspace += 1;
        let next = self.counters.next_workspace.to_be_bytes().to_vec();
        self.put(Table::Meta, meta::NEXT_WORKSPACE.to_vec(), next);
        id
    }

    /// Points a single-valued identifier at `id`.
    pub fn link(&mut self, ws: u32, kind: u8, value: &[u8], id: u32) {
        self.put(
            Table::Idents,
            keys::ident(ws, kind, value),
            id.to_be_bytes().to_vec(),
        );
    }

    /// Removes a single-valued identifier.
    pub fn unlink(&mut self, ws: u32, kind: u8, value: &[u8]) {
        self.delete(Table::Idents, keys::ident(ws, kind, value));
    }

    /// Adds `id` to an email or phone's list.
    pub fn link_shared(
        &mut self,
        ws: u32,
        kind: u8,
        value: &str,
        id: u32,
    ) -> Result<(), StoreError> {
        let mut ids = self.ident_list(ws, kind, value.as_bytes())?;
        if !ids.contains(&id) {
            ids.push(id);
            self.put(
                Table::Idents,
                keys::ident(ws, kind, value.as_bytes()),
                keys::encode_ids(&ids),
            );
        }
        Ok(())
    }

    /// Removes `id` from an email or phone's list.
    pub fn unlink_shared(
        &mut self,
        ws: u32,
        kind: u8,
        value: &str,
        id: u32,
    ) -> Result<(), StoreError> {
        let mut ids = self.ident_list(ws, kind, value.as_bytes())?;
        let before = ids.len();
        ids.retain(|x| *x != id);
        if ids.len() == before {
            return Ok(());
        }
        let key = keys::ident(ws, kind, value.as_bytes());
        if ids.is_empty() {
            self.delete(Table::Idents, key);
        } else {
            self.put(Table::Idents, key, keys::encode_ids(&ids));
        }
        Ok(())
    }

    /// Queues a Currents event in the outbox of this batch.
    pub fn emit(&mut self, ws: u32, event: OutboxEvent) {
        self.outbox.push((ws, event, None));
    }

    /// Queues a Currents event for one connector only (test events).
    pub fn emit_to(&mut self, ws: u32, event: OutboxEvent, connector: String) {
        self.outbox.push((ws, event, Some(connector)));
    }

    /// Adds data points to a workspace's tally for today.
    pub fn meter(&mut self, ws: u32, points: Points) {
        if points.is_zero() {
            return;
        }
        let day = eddy_model::time::utc_day(self.now_ms);
        self.usage.entry((ws, day)).or_default().points.add(points);
    }

    /// Adds events, purchases or new profiles to a workspace's tally for today.
    pub fn count(&mut self, ws: u32, activity: Activity) {
        let day = eddy_model::time::utc_day(self.now_ms);
        self.usage
            .entry((ws, day))
            .or_default()
            .activity
            .add(activity);
    }

    /// Turns the group into one write set, assigning outbox sequence numbers. Also returns what
    /// was written, for the cache once the write set is committed.
    pub fn finish(mut self) -> Result<(WriteSet, u64, Written), StoreError> {
        let mut writes = WriteSet::default();
        let mut written = Written {
            profiles: std::mem::take(&mut self.profiles).into_iter().collect(),
            idents: Vec::new(),
            members: std::mem::take(&mut self.members).into_iter().collect(),
            encoded: Vec::new(),
        };
        written.profiles.sort_unstable_by_key(|(key, _)| *key);
        for ((ws, id), profile) in &written.profiles {
            let key = keys::profile(*ws, *id);
            let bytes = profile.as_ref().map(encode_profile).transpose()?;
            written.encoded.push(((*ws, *id), bytes.clone()));
            writes.ops.push((Table::Profiles, key, bytes));
        }
        for (table, key) in std::mem::take(&mut self.order) {
            let value = self.raw[table.position()].remove(&key).flatten();
            if table == Table::Idents {
                written.idents.push((key.clone(), value.clone()));
            }
            writes.ops.push((table, key, value));
        }
        for ((ws, partner, cohort_id), delta) in &written.members {
            for id in &delta.added {
                writes.ops.push((
                    Table::Members,
                    keys::member(*ws, partner, cohort_id, id),
                    Some(Vec::new()),
                ));
            }
            for id in &delta.removed {
                writes.ops.push((
                    Table::Members,
                    keys::member(*ws, partner, cohort_id, id),
                    None,
                ));
            }
        }
        let mut emitted = 0;
        for (ws, event, to) in std::mem::take(&mut self.outbox) {
            let seq = self.counters.next_outbox;
            self.counters.next_outbox += 1;
            let entry = OutboxEntry {
                ws,
                at: self.now_ms,
                event_type: &event.event_type,
                record: &event.record,
                to: to.as_deref(),
            };
            let bytes =
                serde_json::to_vec(&entry).map_err(|e| StoreError::Backend(e.to_string()))?;
            writes
                .ops
                .push((Table::Outbox, keys::outbox(seq), Some(bytes)));
            emitted += 1;
        }
        if emitted > 0 {
            writes.ops.push((
                Table::Meta,
                meta::NEXT_OUTBOX.to_vec(),
                Some(self.counters.next_outbox.to_be_bytes().to_vec()),
            ));
        }
        for ((ws, day), tally) in std::mem::take(&mut self.usage) {
            let key = keys::usage(ws, &day);
            let mut total: Day = match self.backend.get(Table::Usage, &key)? {
                Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    table: "usage",
                    reason: e.to_string(),
                })?,
                None => Day::default(),
            };
            total.add(tally);
            let bytes =
                serde_json::to_vec(&total).map_err(|e| StoreError::Backend(e.to_string()))?;
            writes.ops.push((Table::Usage, key, Some(bytes)));
        }
        let mut touched = std::mem::take(&mut self.touched_profile_counters);
        touched.sort_unstable();
        touched.dedup();
        for ws in touched {
            let next = self.counters.next_profile.get(&ws).copied().unwrap_or(0);
            writes.ops.push((
                Table::Meta,
                meta::next_profile_key(ws),
                Some(next.to_be_bytes().to_vec()),
            ));
        }
        Ok((writes, emitted, written))
    }
}

/// How an outbox entry is stored: the workspace, the event type and its record.
#[derive(serde::Serialize)]
struct OutboxEntry<'a> {
    ws: u32,
    /// Only this connector delivers it (test events).
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    /// When the event was queued, UTC ms (Currents' `date=` partition is its hour).
    at: i64,
    #[serde(rename = "type")]
    event_type: &'a str,
    record: &'a serde_json::Map<String, serde_json::Value>,
}

/// Loads the counters from the backend (at start, and after a failed commit).
pub fn load_counters(backend: &dyn Backend) -> Result<Counters, StoreError> {
    let mut counters = Counters::default();
    let mut stored = Vec::new();
    for key in [meta::NEXT_OUTBOX, meta::NEXT_WORKSPACE] {
        if let Some(value) = backend.get(Table::Meta, key)? {
            stored.push((key.to_vec(), value));
        }
    }
    stored.extend(backend.scan(Table::Meta, b"next/profile/", None, usize::MAX)?);
    for (key, value) in stored {
        set_counter(&mut counters, &key, Some(&value))?;
    }
    Ok(counters)
}

/// Sets the counter a `next/…` meta key holds to its stored value (absent: the start).
pub(crate) fn set_counter(
    counters: &mut Counters,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    if key == meta::NEXT_OUTBOX {
        counters.next_outbox = match value {
            Some(bytes) => crate::keys::decode_seq(bytes)?,
            None => 0,
        };
        return Ok(());
    }
    if key == meta::NEXT_WORKSPACE {
        counters.next_workspace = value.and_then(keys::decode_id).unwrap_or(0);
        return Ok(());
    }
    let ws = key
        .strip_prefix(b"next/profile/")
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|s| s.parse::<u32>().ok());
    if let Some(ws) = ws {
        match value.and_then(keys::decode_id) {
            Some(next) => {
                counters.next_profile.insert(ws, next);
            }
            None => {
                counters.next_profile.remove(&ws);
            }
        }
    }
    Ok(())
}
