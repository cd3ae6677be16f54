//! Writes: [`Store`]'s typed methods, one per mutation, each answering its own result type. They
//! seal credentials before anything leaves for the writer, and wait until the group holding the
//! write is on disk.

use eddy_model::currents::OutboxEvent;
use eddy_model::track::TrackBatch;
use eddy_model::users::Lookup;
use eddy_model::wire::{
    AliasNewRequest, AliasUpdateRequest, DeleteRequest, ExternalIdRemoveRequest,
    ExternalIdRenameRequest, ExternalIdsOutcome, IdentifyRequest, TrackResponse,
};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::backend::Table;
use crate::meta::{ApiKey, ExportStorage, Partner, Segment, Workspace};
use crate::mutations::cohorts::MemberChange;
use crate::mutations::{CountWrite, Mutation, ObjectWrite, Outcome};

/// Keys a deleted workspace's purge removes per group commit: small enough that other writes
/// wait one short group, large enough to purge a million profiles in a few hundred groups.
pub const PURGE_GROUP: usize = 5_000;
use crate::{Store, StoreError, decode, writer};

/// The writer answered a mutation with another mutation's outcome: a bug, never input.
fn unexpected(what: &str, outcome: Outcome) -> StoreError {
    debug_assert!(false, "{what} answered {outcome:?}");
    StoreError::Backend(format!("internal error: {what} answered {outcome:?}"))
}

impl Store {
    /// `/users/track`: applies a validated batch; answers Braze's 201 body.
    pub async fn track(
        &self,
        ws: Workspace,
        batch: TrackBatch,
    ) -> Result<TrackResponse, StoreError> {
        match self.run(Mutation::Track { ws, batch }).await? {
            Outcome::Track(response) => Ok(response),
            other => Err(unexpected("track", other)),
        }
    }

    /// `/users/identify`: answers how many aliases were processed.
    pub async fn identify(
        &self,
        ws: Workspace,
        request: IdentifyRequest,
    ) -> Result<usize, StoreError> {
        self.count("identify", Mutation::Identify { ws, request })
            .await
    }

    /// `/users/alias/new`: answers how many aliases were processed.
    pub async fn alias_new(
        &self,
        ws: Workspace,
        request: AliasNewRequest,
    ) -> Result<usize, StoreError> {
        self.count("alias_new", Mutation::AliasNew { ws, request })
            .await
    }

    /// `/users/alias/update`: answers how many aliases were processed.
    pub async fn alias_update(
        &self,
        ws: Workspace,
        request: AliasUpdateRequest,
    ) -> Result<usize, StoreError> {
        self.count("alias_update", Mutation::AliasUpdate { ws, request })
            .await
    }

    /// `/users/external_ids/rename`: answers what was renamed and what was refused.
    pub async fn rename_external_ids(
        &self,
        ws: Workspace,
        request: ExternalIdRenameRequest,
    ) -> Result<ExternalIdsOutcome, StoreError> {
        match self
            .run(Mutation::RenameExternalIds { ws, request })
            .await?
        {
            Outcome::ExternalIds(outcome) => Ok(outcome),
            other => Err(unexpected("rename_external_ids", other)),
        }
    }

    /// `/users/external_ids/remove`: answers what was removed and what was refused.
    pub async fn remove_external_ids(
        &self,
        ws: Workspace,
        request: ExternalIdRemoveRequest,
    ) -> Result<ExternalIdsOutcome, StoreError> {
        match self
            .run(Mutation::RemoveExternalIds { ws, request })
            .await?
        {
            Outcome::ExternalIds(outcome) => Ok(outcome),
            other => Err(unexpected("remove_external_ids", other)),
        }
    }

    /// `/users/delete`: answers how many users were deleted.
    pub async fn delete_users(
        &self,
        ws: Workspace,
        request: DeleteRequest,
    ) -> Result<usize, StoreError> {
        self.count("delete", Mutation::Delete { ws, request }).await
    }

    /// `/users/merge`: folds each first profile into the second; answers how many merged.
    pub async fn merge_users(
        &self,
        ws: Workspace,
        pairs: Vec<(Lookup, Lookup)>,
    ) -> Result<usize, StoreError> {
        self.count("merge", Mutation::Merge { ws, pairs }).await
    }

    /// Creates a workspace (`Conflict` when the name is taken).
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace, StoreError> {
        let name = name.to_string();
        match self.run(Mutation::CreateWorkspace { name }).await? {
            Outcome::Workspace(ws) => Ok(ws),
            other => Err(unexpected("create_workspace", other)),
        }
    }

    /// Renames a workspace; everything in it stays.
    pub async fn rename_workspace(&self, from: &str, to: &str) -> Result<Workspace, StoreError> {
        let (from, to) = (from.to_string(), to.to_string());
        match self.run(Mutation::RenameWorkspace { from, to }).await? {
            Outcome::Workspace(ws) => Ok(ws),
            other => Err(unexpected("rename_workspace", other)),
        }
    }

    /// Deletes a workspace: its name and admin objects in one commit, then its profiles,
    /// identifiers, memberships and usage in groups of [`PURGE_GROUP`] keys. Stop its
    /// connectors first; a purge cut short (a crash) is finished by [`Store::purge_deleted`].
    pub async fn delete_workspace(&self, name: &str) -> Result<Workspace, StoreError> {
        let name = name.to_string();
        let workspace = match self.run(Mutation::DeleteWorkspace { name }).await? {
            Outcome::Workspace(ws) => ws,
            other => return Err(unexpected("delete_workspace", other)),
        };
        self.purge(workspace.id).await?;
        Ok(workspace)
    }

    /// Purges the data of workspaces deleted before a purge could finish; at start.
    pub async fn purge_deleted(&self) -> Result<usize, StoreError> {
        let mut purged = 0;
        for ws in self.workspace_ids_with_data()? {
            // Asked now, not from an earlier list: a workspace created since holds data too.
            if self.workspace_by_id(ws)?.is_none() {
                tracing::info!(workspace_id = ws, "purging the data of a deleted workspace");
                purged += self.purge(ws).await?;
            }
        }
        Ok(purged)
    }

    async fn purge(&self, ws: u32) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let limit = PURGE_GROUP;
            match self.run(Mutation::PurgeWorkspace { ws, limit }).await? {
                Outcome::Count(0) => return Ok(total),
                Outcome::Count(n) => total += n,
                other => return Err(unexpected("purge_workspace", other)),
            }
        }
    }

    /// Stores an API key under the hash of its secret.
    pub async fn create_api_key(&self, key: ApiKey, secret_hash: String) -> Result<(), StoreError> {
        self.done(Mutation::CreateApiKey { key, secret_hash }).await
    }

    /// Revokes an API key of a workspace (`NotFound` when there is none).
    pub async fn delete_api_key(&self, ws: u32, id: String) -> Result<(), StoreError> {
        self.done(Mutation::DeleteApiKey { ws, id }).await
    }

    /// Records when an API key (by its secret's hash) last authenticated a request.
    pub async fn touch_api_key(&self, hash: String, at: i64) -> Result<(), StoreError> {
        self.done(Mutation::TouchApiKey { hash, at }).await
    }

    /// Removes a partner and invalidates its Data Import Keys in every workspace.
    pub async fn delete_partner(&self, name: String) -> Result<(), StoreError> {
        let workspaces = self.workspaces()?.into_iter().map(|w| w.id).collect();
        self.done(Mutation::DeletePartner { name, workspaces })
            .await
    }

    /// Registers a partner or replaces its key.
    pub async fn put_partner(&self, partner: Partner) -> Result<(), StoreError> {
        self.done(Mutation::PutPartner { partner }).await
    }

    /// Sets a workspace's Data Import Key for a partner (by its hash), replacing the previous.
    pub async fn set_data_import_key(
        &self,
        ws: u32,
        partner: String,
        key_hash: String,
    ) -> Result<(), StoreError> {
        let key_hash = Some(key_hash);
        self.done(Mutation::SetDataImportKey {
            ws,
            partner,
            key_hash,
        })
        .await
    }

    /// Invalidates a workspace's Data Import Key for a partner.
    pub async fn clear_data_import_key(&self, ws: u32, partner: String) -> Result<(), StoreError> {
        let key_hash = None;
        self.done(Mutation::SetDataImportKey {
            ws,
            partner,
            key_hash,
        })
        .await
    }

    /// Creates or renames a partner cohort.
    pub async fn upsert_cohort(
        &self,
        ws: u32,
        partner: String,
        cohort_id: String,
        name: String,
        created_at: String,
    ) -> Result<(), StoreError> {
        let mutation = Mutation::UpsertCohort {
            ws,
            partner,
            cohort_id,
            name,
            created_at,
        };
        self.done(mutation).await
    }

    /// Adds and removes cohort members; answers how many memberships changed.
    pub async fn cohort_changes(
        &self,
        ws: u32,
        partner: String,
        cohort_id: String,
        changes: Vec<MemberChange>,
    ) -> Result<usize, StoreError> {
        let mutation = Mutation::CohortChanges {
            ws,
            partner,
            cohort_id,
            changes,
        };
        self.count("cohort_changes", mutation).await
    }

    /// Saves a segment definition.
    pub async fn put_segment(&self, ws: u32, segment: Segment) -> Result<(), StoreError> {
        self.done(Mutation::PutSegment { ws, segment }).await
    }

    /// Deletes a segment (`NotFound` when there is none).
    pub async fn delete_segment(&self, ws: u32, id: String) -> Result<(), StoreError> {
        self.done(Mutation::DeleteSegment { ws, id }).await
    }

    /// Sets where a workspace's segment exports go (credentials sealed).
    pub async fn set_export_storage(
        &self,
        ws: u32,
        storage: ExportStorage,
    ) -> Result<(), StoreError> {
        self.done(Mutation::SetExportStorage { ws, storage }).await
    }

    /// Saves a Currents connector's configuration (credentials sealed).
    pub async fn put_connector_config(
        &self,
        ws: u32,
        name: String,
        config: Value,
    ) -> Result<(), StoreError> {
        self.done(Mutation::PutConnectorConfig { ws, name, config })
            .await
    }

    /// Saves a workspace's named settings object of a kind (a content block, a credential);
    /// string fields named like credentials are sealed.
    pub async fn put_object(
        &self,
        ws: u32,
        kind: &str,
        name: String,
        value: Value,
    ) -> Result<(), StoreError> {
        self.write_object(ws, kind, name, value, false).await
    }

    /// Saves a settings object only if none has its name (`Conflict` otherwise): of processes
    /// creating one at once, exactly one wins.
    pub async fn create_object(
        &self,
        ws: u32,
        kind: &str,
        name: String,
        value: Value,
    ) -> Result<(), StoreError> {
        self.write_object(ws, kind, name, value, true).await
    }

    async fn write_object(
        &self,
        ws: u32,
        kind: &str,
        name: String,
        value: Value,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let kind = kind.to_string();
        self.done(Mutation::PutObject {
            ws,
            kind,
            name,
            value,
            if_absent,
        })
        .await
    }

    /// Removes a settings object; `NotFound` when there is none.
    pub async fn delete_object(&self, ws: u32, kind: &str, name: String) -> Result<(), StoreError> {
        let kind = kind.to_string();
        self.done(Mutation::DeleteObject { ws, kind, name }).await
    }

    /// Saves a Currents connector's delivery state (cursor and counters).
    pub async fn put_connector_state(
        &self,
        ws: u32,
        name: String,
        state: Value,
    ) -> Result<(), StoreError> {
        self.done(Mutation::PutConnectorState { ws, name, state })
            .await
    }

    /// Forgets a Currents connector: its settings and its cursor (`NotFound` when there is none).
    pub async fn delete_connector(&self, ws: u32, name: String) -> Result<(), StoreError> {
        self.done(Mutation::DeleteConnector { ws, name }).await
    }

    /// Deletes outbox entries (past retention and every connector's cursor).
    pub async fn delete_outbox(&self, seqs: Vec<u64>) -> Result<usize, StoreError> {
        self.count("delete_outbox", Mutation::DeleteOutbox { seqs })
            .await
    }

    /// Appends producer-posted events to the outbox; with `to`, for that connector alone.
    pub async fn emit(
        &self,
        ws: u32,
        events: Vec<OutboxEvent>,
        to: Option<String>,
    ) -> Result<usize, StoreError> {
        self.count("emit", Mutation::Emit { ws, events, to }).await
    }

    /// Writes settings objects and Currents events in one commit (a delivery outcome and the
    /// event that reports it); answers how many events were queued.
    pub async fn record(
        &self,
        ws: u32,
        objects: Vec<ObjectWrite>,
        events: Vec<OutboxEvent>,
    ) -> Result<usize, StoreError> {
        self.record_counted(ws, objects, events, Vec::new()).await
    }

    /// [`Store::record`], with numbers added to fields of objects in the same commit (counters
    /// kept per day, say) without a read by the caller that another commit could race.
    pub async fn record_counted(
        &self,
        ws: u32,
        objects: Vec<ObjectWrite>,
        events: Vec<OutboxEvent>,
        counts: Vec<CountWrite>,
    ) -> Result<usize, StoreError> {
        let mutation = Mutation::Record {
            ws,
            objects,
            events,
            counts,
        };
        self.count("record", mutation).await
    }

    async fn count(&self, what: &'static str, mutation: Mutation) -> Result<usize, StoreError> {
        match self.run(mutation).await? {
            Outcome::Count(n) => Ok(n),
            other => Err(unexpected(what, other)),
        }
    }

    async fn done(&self, mutation: Mutation) -> Result<(), StoreError> {
        self.run(mutation).await.map(|_| ())
    }

    /// Sends a mutation to the writer; returns once it is on disk.
    async fn run(&self, mutation: Mutation) -> Result<Outcome, StoreError> {
        let mutation = self.seal_secrets(mutation)?;
        let (reply, answer) = oneshot::channel();
        let job = writer::Msg::Job(Box::new(writer::Job { mutation, reply }));
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops the writer once everything queued before this call is committed.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(writer::Msg::Stop(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Whether writes can commit now (readiness). Within a minute of a failed commit it writes a
    /// 64 KiB probe, which also recovers the backend once the cause (a full disk) is gone.
    pub async fn ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.tx.is_closed() {
            return false;
        }
        // A small write may still fit on a nearly full disk: after a recent failure, only the
        // probe's 64 KiB tells.
        let failed_at = self.stats.last_failure_ms.load(Ordering::SeqCst) as i64;
        let recent_failure = failed_at > 0 && eddy_model::time::now_ms() - failed_at < 60_000;
        if self.stats.writable.load(Ordering::SeqCst) && !recent_failure {
            return true;
        }
        let ok = self.run(Mutation::Probe).await.is_ok();
        if ok {
            // Proven writable with room to spare: the failure is over.
            self.stats.last_failure_ms.store(0, Ordering::SeqCst);
        }
        ok
    }

    /// Seals the credentials a mutation carries, so that none reaches the disk in plain text.
    fn seal_secrets(&self, mutation: Mutation) -> Result<Mutation, StoreError> {
        let Some(sealer) = &self.sealer else {
            return Ok(mutation);
        };
        match mutation {
            Mutation::PutConnectorConfig {
                ws,
                name,
                mut config,
            } => {
                sealer.seal_fields(&mut config)?;
                Ok(Mutation::PutConnectorConfig { ws, name, config })
            }
            Mutation::PutObject {
                ws,
                kind,
                name,
                mut value,
                if_absent,
            } => {
                sealer.seal_fields(&mut value)?;
                Ok(Mutation::PutObject {
                    ws,
                    kind,
                    name,
                    value,
                    if_absent,
                })
            }
            Mutation::Record {
                ws,
                mut objects,
                events,
                counts,
            } => {
                for write in &mut objects {
                    if let Some(value) = &mut write.value {
                        sealer.seal_fields(value)?;
                    }
                }
                Ok(Mutation::Record {
                    ws,
                    objects,
                    events,
                    counts,
                })
            }
            Mutation::SetExportStorage { ws, storage } => {
                let invalid = |e: serde_json::Error| StoreError::Secrets(e.to_string());
                let mut value = serde_json::to_value(&storage).map_err(invalid)?;
                sealer.seal_fields(&mut value)?;
                let sealed = serde_json::from_value(value).map_err(invalid)?;
                Ok(Mutation::SetExportStorage {
                    ws,
                    storage: sealed,
                })
            }
            other => Ok(other),
        }
    }

    /// Seals again, with the current key, every stored credential that is in plain text (stored
    /// by an older eddy) or sealed with the previous key; answers how many records changed. A
    /// credential no configured key opens is an error: eddy does not start without its secrets.
    pub async fn reseal_secrets(&self) -> Result<usize, StoreError> {
        let Some(sealer) = self.sealer.clone() else {
            return Ok(0);
        };
        let mut changed = 0;
        for prefix in [&b"currents/"[..], &b"export-storage/"[..], &b"object/"[..]] {
            for (key, raw) in self.backend.scan(Table::Meta, prefix, None, usize::MAX)? {
                let mut value: Value = decode(&raw, "meta")?;
                if !sealer.needs_reseal(&value)? {
                    continue;
                }
                sealer.open_fields(&mut value)?;
                let rest = std::str::from_utf8(&key[prefix.len()..]).unwrap_or_default();
                let (Some(ws), name) = (
                    rest.get(..10).and_then(|w| w.parse::<u32>().ok()),
                    rest.get(11..).unwrap_or_default(),
                ) else {
                    continue;
                };
                let mutation = if prefix == b"object/" {
                    // object/<ws>/<kind>/<name>
                    let Some((kind, name)) = name.split_once('/') else {
                        continue;
                    };
                    Mutation::PutObject {
                        ws,
                        kind: kind.to_string(),
                        name: name.to_string(),
                        value,
                        if_absent: false,
                    }
                } else if prefix == b"currents/" {
                    Mutation::PutConnectorConfig {
                        ws,
                        name: name.to_string(),
                        config: value,
                    }
                } else {
                    let storage =
                        serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
                            table: "meta",
                            reason: e.to_string(),
                        })?;
                    Mutation::SetExportStorage { ws, storage }
                };
                self.run(mutation).await?;
                changed += 1;
            }
        }
        Ok(changed)
    }
}
