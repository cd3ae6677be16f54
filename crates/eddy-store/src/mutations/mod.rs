//! The mutations the writer applies, by domain ([`users`], [`cohorts`], [`admin`]), each a
//! function over the group's overlay (`Txn`). A mutation validates what it needs before it
//! writes, so one that is refused (`Conflict`, `NotFound`) leaves nothing in the group; any other
//! error fails the whole group.
//!
//! Nothing outside the store builds a `Mutation`: callers use [`crate::Store`]'s typed methods.

pub mod admin;
pub mod cohorts;
pub mod users;

use eddy_model::currents::OutboxEvent;
use eddy_model::profile::Limits;
use eddy_model::track::TrackBatch;
use eddy_model::users::Lookup;
use eddy_model::wire::{
    AliasNewRequest, AliasUpdateRequest, DeleteRequest, ExternalIdRemoveRequest,
    ExternalIdRenameRequest, ExternalIdsOutcome, IdentifyRequest, TrackResponse,
};
use serde_json::Value;

use crate::StoreError;
use crate::backend::Table;
use crate::identity::Read;
use crate::meta;
use crate::meta::{ApiKey, ExportStorage, Partner, Segment, Workspace};
use crate::overlay::Txn;
use cohorts::MemberChange;

/// A write, as the writer's queue carries it.
#[derive(Debug)]
pub(crate) enum Mutation {
    Track {
        ws: Workspace,
        batch: TrackBatch,
    },
    Identify {
        ws: Workspace,
        request: IdentifyRequest,
    },
    AliasNew {
        ws: Workspace,
        request: AliasNewRequest,
    },
    AliasUpdate {
        ws: Workspace,
        request: AliasUpdateRequest,
    },
    RenameExternalIds {
        ws: Workspace,
        request: ExternalIdRenameRequest,
    },
    RemoveExternalIds {
        ws: Workspace,
        request: ExternalIdRemoveRequest,
    },
    Delete {
        ws: Workspace,
        request: DeleteRequest,
    },
    Merge {
        ws: Workspace,
        pairs: Vec<(Lookup, Lookup)>,
    },
    CreateWorkspace {
        name: String,
    },
    RenameWorkspace {
        from: String,
        to: String,
    },
    DeleteWorkspace {
        name: String,
    },
    PurgeWorkspace {
        ws: u32,
        limit: usize,
    },
    CreateApiKey {
        key: ApiKey,
        secret_hash: String,
    },
    DeleteApiKey {
        ws: u32,
        id: String,
    },
    PutPartner {
        partner: Partner,
    },
    /// `key_hash: None` invalidates the workspace's key for the partner.
    SetDataImportKey {
        ws: u32,
        partner: String,
        key_hash: Option<String>,
    },
    UpsertCohort {
        ws: u32,
        partner: String,
        cohort_id: String,
        name: String,
        created_at: String,
    },
    CohortChanges {
        ws: u32,
        partner: String,
        cohort_id: String,
        changes: Vec<MemberChange>,
    },
    PutSegment {
        ws: u32,
        segment: Segment,
    },
    DeleteSegment {
        ws: u32,
        id: String,
    },
    SetExportStorage {
        ws: u32,
        storage: ExportStorage,
    },
    PutConnectorConfig {
        ws: u32,
        name: String,
        config: Value,
    },
    PutConnectorState {
        ws: u32,
        name: String,
        state: Value,
    },
    TouchApiKey {
        hash: String,
        at: i64,
    },
    DeletePartner {
        name: String,
        workspaces: Vec<u32>,
    },
    /// Forgets a connector: its settings and its cursor.
    DeleteConnector {
        ws: u32,
        name: String,
    },
    PutObject {
        ws: u32,
        kind: String,
        name: String,
        value: Value,
        /// Refuse (`Conflict`) when the object exists: one creator wins across processes.
        if_absent: bool,
    },
    DeleteObject {
        ws: u32,
        kind: String,
        name: String,
    },
    DeleteOutbox {
        seqs: Vec<u64>,
    },
    /// Producer-posted events; with `to`, for that connector alone.
    Emit {
        ws: u32,
        events: Vec<OutboxEvent>,
        to: Option<String>,
    },
    /// Settings objects written or removed together with the Currents events that record the
    /// same facts (a message outcome and its event), in one commit.
    Record {
        ws: u32,
        objects: Vec<ObjectWrite>,
        events: Vec<OutboxEvent>,
        counts: Vec<CountWrite>,
    },
    /// One 64 KiB record, to learn whether commits succeed (readiness).
    Probe,
}

/// One settings object to write (`Some`) or remove (`None`) in a [`crate::Store::record`] commit.
#[derive(Debug, Clone)]
pub struct ObjectWrite {
    /// The object's kind, e.g. `message`.
    pub kind: String,
    /// Its name within the kind.
    pub name: String,
    /// The new value, or `None` to remove it (absent is not an error).
    pub value: Option<Value>,
}

/// A number added to a field of a settings object (created when absent) in a
/// [`crate::Store::record_counted`] commit. Applied by the writer, in the order of commits, so
/// counts kept this way lose no addition however many requests add at once.
#[derive(Debug, Clone)]
pub struct CountWrite {
    /// The object's kind.
    pub kind: String,
    /// Its name within the kind.
    pub name: String,
    /// The field counted.
    pub field: String,
    /// What is added.
    pub delta: i64,
}

/// What a mutation answers once durable.
#[derive(Debug)]
pub(crate) enum Outcome {
    Track(TrackResponse),
    Count(usize),
    ExternalIds(ExternalIdsOutcome),
    Workspace(Workspace),
    Done,
}

/// The identifier index keys the `/users/track` writes of a group will look up (external ids,
/// Braze ids, aliases), so that they can be read in one go.
pub(crate) fn ident_keys(mutations: &[Mutation]) -> Vec<Vec<u8>> {
    use crate::keys::kind;
    use eddy_model::track::Identifier;
    let mut out = Vec::new();
    for mutation in mutations {
        let Mutation::Track { ws, batch } = mutation else {
            continue;
        };
        let targets = batch
            .attributes
            .iter()
            .map(|a| &a.target)
            .chain(batch.events.iter().map(|e| &e.target))
            .chain(batch.purchases.iter().map(|p| &p.target));
        for target in targets {
            let key = match &target.ident {
                Identifier::ExternalId(v) => {
                    crate::keys::ident(ws.id, kind::EXTERNAL, v.as_bytes())
                }
                Identifier::BrazeId(v) => crate::keys::ident(ws.id, kind::BRAZE, v.as_bytes()),
                Identifier::Alias(a) => crate::keys::ident(
                    ws.id,
                    kind::ALIAS,
                    &crate::keys::alias_value(&a.alias_label, &a.alias_name),
                ),
                // Emails and phones are prefix scans over the profiles sharing them.
                Identifier::Email(_) | Identifier::Phone(_) => continue,
            };
            out.push(key);
        }
    }
    out
}

/// Applies one mutation to the group's overlay.
pub(crate) fn apply(
    txn: &mut Txn<'_>,
    mutation: Mutation,
    limits: Limits,
) -> Result<Outcome, StoreError> {
    match mutation {
        Mutation::Track { ws, batch } => txn.track(&ws, batch, limits).map(Outcome::Track),
        Mutation::Identify { ws, request } => txn.identify(&ws, &request).map(Outcome::Count),
        Mutation::AliasNew { ws, request } => txn.alias_new(&ws, &request).map(Outcome::Count),
        Mutation::AliasUpdate { ws, request } => {
            txn.alias_update(&ws, &request).map(Outcome::Count)
        }
        Mutation::RenameExternalIds { ws, request } => txn
            .rename_external_ids(&ws, &request)
            .map(Outcome::ExternalIds),
        Mutation::RemoveExternalIds { ws, request } => txn
            .remove_external_ids(&ws, &request)
            .map(Outcome::ExternalIds),
        Mutation::Delete { ws, request } => txn.delete_users(&ws, &request).map(Outcome::Count),
        Mutation::Merge { ws, pairs } => txn.merge_users(&ws, &pairs).map(Outcome::Count),
        Mutation::CreateWorkspace { name } => txn.create_workspace(&name).map(Outcome::Workspace),
        Mutation::RenameWorkspace { from, to } => {
            txn.rename_workspace(&from, &to).map(Outcome::Workspace)
        }
        Mutation::DeleteWorkspace { name } => txn.delete_workspace(&name).map(Outcome::Workspace),
        Mutation::PurgeWorkspace { ws, limit } => {
            txn.purge_workspace(ws, limit).map(Outcome::Count)
        }
        Mutation::CreateApiKey { key, secret_hash } => {
            txn.create_api_key(&key, &secret_hash).map(done)
        }
        Mutation::DeleteApiKey { ws, id } => txn.delete_api_key(ws, &id).map(done),
        Mutation::PutPartner { partner } => txn.put_partner(&partner).map(done),
        Mutation::SetDataImportKey {
            ws,
            partner,
            key_hash,
        } => txn
            .set_data_import_key(ws, &partner, key_hash.as_deref())
            .map(done),
        Mutation::UpsertCohort {
            ws,
            partner,
            cohort_id,
            name,
            created_at,
        } => txn
            .upsert_cohort(ws, &partner, &cohort_id, &name, &created_at)
            .map(done),
        Mutation::CohortChanges {
            ws,
            partner,
            cohort_id,
            changes,
        } => txn
            .cohort_changes(ws, &partner, &cohort_id, &changes)
            .map(Outcome::Count),
        Mutation::PutSegment { ws, segment } => txn.put_segment(ws, &segment).map(done),
        Mutation::DeleteSegment { ws, id } => txn.delete_segment(ws, &id).map(done),
        Mutation::SetExportStorage { ws, storage } => {
            txn.set_export_storage(ws, &storage).map(done)
        }
        Mutation::PutConnectorConfig { ws, name, config } => {
            txn.put_connector_config(ws, &name, &config).map(done)
        }
        Mutation::PutConnectorState { ws, name, state } => {
            txn.put_connector_state(ws, &name, &state).map(done)
        }
        Mutation::TouchApiKey { hash, at } => txn.touch_api_key(&hash, at).map(done),
        Mutation::DeletePartner { name, workspaces } => {
            txn.delete_partner(&name, &workspaces).map(done)
        }
        Mutation::DeleteConnector { ws, name } => txn.delete_connector(ws, &name).map(done),
        Mutation::PutObject {
            ws,
            kind,
            name,
            value,
            if_absent,
        } => {
            let key = meta::object_key(ws, &kind, &name);
            if if_absent && txn.get(Table::Meta, &key)?.is_some() {
                return Err(StoreError::Conflict(format!("{kind} '{name}'")));
            }
            txn.put(Table::Meta, key, value.to_string().into_bytes());
            Ok(Outcome::Done)
        }
        Mutation::DeleteObject { ws, kind, name } => {
            let key = meta::object_key(ws, &kind, &name);
            if txn.get(Table::Meta, &key)?.is_none() {
                return Err(StoreError::NotFound(format!("{kind} '{name}'")));
            }
            txn.delete(Table::Meta, key);
            Ok(Outcome::Done)
        }
        Mutation::DeleteOutbox { seqs } => {
            let n = seqs.len();
            for seq in seqs {
                txn.delete(Table::Outbox, crate::keys::outbox(seq));
            }
            Ok(Outcome::Count(n))
        }
        Mutation::Emit { ws, events, to } => {
            let n = events.len();
            for event in events {
                match &to {
                    Some(connector) => txn.emit_to(ws, event, connector.clone()),
                    None => txn.emit(ws, event),
                }
            }
            Ok(Outcome::Count(n))
        }
        Mutation::Record {
            ws,
            objects,
            events,
            counts,
        } => {
            let n = events.len();
            for write in objects {
                let key = meta::object_key(ws, &write.kind, &write.name);
                match write.value {
                    Some(value) => txn.put(Table::Meta, key, value.to_string().into_bytes()),
                    None => txn.delete(Table::Meta, key),
                }
            }
            for count in counts {
                let key = meta::object_key(ws, &count.kind, &count.name);
                let mut object = match txn.get(Table::Meta, &key)? {
                    Some(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                        Ok(Value::Object(map)) => map,
                        _ => {
                            return Err(StoreError::Corrupt {
                                table: "meta",
                                reason: format!(
                                    "counted object {}/{} is not a JSON object",
                                    count.kind, count.name
                                ),
                            });
                        }
                    },
                    None => serde_json::Map::new(),
                };
                let now = object
                    .get(&count.field)
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                object.insert(count.field, Value::from(now.saturating_add(count.delta)));
                txn.put(
                    Table::Meta,
                    key,
                    Value::Object(object).to_string().into_bytes(),
                );
            }
            for event in events {
                txn.emit(ws, event);
            }
            Ok(Outcome::Count(n))
        }
        Mutation::Probe => {
            // As large as a sizeable group, so that a nearly full disk that still takes a few
            // bytes into a page already allocated does not pass for a writable one.
            let mut record = vec![0u8; 64 * 1024];
            record[..8].copy_from_slice(&eddy_model::time::now_ms().to_be_bytes());
            txn.put(Table::Meta, crate::meta::PROBE.to_vec(), record);
            Ok(Outcome::Done)
        }
    }
}

fn done(_: ()) -> Outcome {
    Outcome::Done
}
