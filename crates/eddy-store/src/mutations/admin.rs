//! Admin mutations: workspaces, API keys, partners, Data Import Keys, segments, export storage
//! and Currents connectors.

use crate::backend::Table;
use crate::identity::Read;
use crate::meta::{self, ApiKey, DataImportKey, ExportStorage, Partner, Segment, Workspace};
use crate::overlay::Txn;
use crate::{StoreError, ids, keys};

impl Txn<'_> {
    /// Creates a workspace; `Conflict` if the name is taken.
    pub(crate) fn create_workspace(&mut self, name: &str) -> Result<Workspace, StoreError> {
        if self.get(Table::Meta, &meta::workspace_key(name))?.is_some() {
            return Err(StoreError::Conflict(format!("workspace '{name}'")));
        }
        let id = self.next_workspace_id();
        let workspace = Workspace {
            id,
            name: name.to_string(),
            app_group_id: ids::uuid_v4(),
            created_at: self.now_ms,
        };
        let bytes =
            serde_json::to_vec(&workspace).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, meta::workspace_key(name), bytes);
        self.put(
            Table::Meta,
            meta::workspace_id_key(id),
            name.as_bytes().to_vec(),
        );
        Ok(workspace)
    }

    /// Gives a workspace a new name; its id (the prefix of its data) stays. `NotFound` for an
    /// unknown workspace, `Conflict` if the new name is taken.
    pub(crate) fn rename_workspace(
        &mut self,
        from: &str,
        to: &str,
    ) -> Result<Workspace, StoreError> {
        let Some(bytes) = self.get(Table::Meta, &meta::workspace_key(from))? else {
            return Err(StoreError::NotFound(format!("workspace '{from}'")));
        };
        if from == to {
            return serde_json::from_slice(&bytes).map_err(|e| corrupt_workspace(from, e));
        }
        if self.get(Table::Meta, &meta::workspace_key(to))?.is_some() {
            return Err(StoreError::Conflict(format!("workspace '{to}'")));
        }
        let mut workspace: Workspace =
            serde_json::from_slice(&bytes).map_err(|e| corrupt_workspace(from, e))?;
        workspace.name = to.to_string();
        let bytes =
            serde_json::to_vec(&workspace).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.delete(Table::Meta, meta::workspace_key(from));
        self.put(Table::Meta, meta::workspace_key(to), bytes);
        self.put(
            Table::Meta,
            meta::workspace_id_key(workspace.id),
            to.as_bytes().to_vec(),
        );
        Ok(workspace)
    }

    /// Forgets a workspace's name and every admin object of it (API keys, Data Import Keys,
    /// cohorts, segments, export storage, connectors): from this commit on nothing can reach it.
    /// Its profiles, identifiers, memberships and usage are purged afterwards in bounded groups
    /// ([`Txn::purge_workspace`]); ids are never reused, so nothing can see them meanwhile.
    pub(crate) fn delete_workspace(&mut self, name: &str) -> Result<Workspace, StoreError> {
        let Some(bytes) = self.get(Table::Meta, &meta::workspace_key(name))? else {
            return Err(StoreError::NotFound(format!("workspace '{name}'")));
        };
        let workspace: Workspace =
            serde_json::from_slice(&bytes).map_err(|e| corrupt_workspace(name, e))?;
        let ws = workspace.id;
        self.delete(Table::Meta, meta::workspace_key(name));
        self.delete(Table::Meta, meta::workspace_id_key(ws));
        // Keys found by their secret's hash go with the per-workspace entry naming the hash.
        for (key, hash) in self.meta_scan(&meta::api_key_ids_prefix(ws))? {
            self.delete(
                Table::Meta,
                meta::api_key_key(&String::from_utf8_lossy(&hash)),
            );
            self.delete(Table::Meta, key);
        }
        for (key, hash) in self.meta_scan(&meta::import_key_owners_prefix(ws))? {
            self.delete(
                Table::Meta,
                meta::import_key_hash_key(&String::from_utf8_lossy(&hash)),
            );
            self.delete(Table::Meta, key);
        }
        for prefix in [
            meta::cohorts_prefix(ws),
            meta::segments_prefix(ws),
            meta::connectors_prefix(ws),
            meta::connector_states_prefix(ws),
            meta::workspace_objects_prefix(ws),
        ] {
            for (key, _) in self.meta_scan(&prefix)? {
                self.delete(Table::Meta, key);
            }
        }
        self.delete(Table::Meta, meta::export_storage_key(ws));
        Ok(workspace)
    }

    /// Deletes up to `limit` keys of a deleted workspace's data (profiles, identifiers,
    /// memberships, usage); returns how many. Zero means the workspace's data is gone.
    pub(crate) fn purge_workspace(&mut self, ws: u32, limit: usize) -> Result<usize, StoreError> {
        debug_assert!(
            self.get(Table::Meta, &meta::workspace_id_key(ws))?
                .is_none(),
            "only a deleted workspace is purged"
        );
        let prefix = keys::workspace_prefix(ws);
        let mut purged = 0;
        for table in [Table::Profiles, Table::Idents, Table::Members, Table::Usage] {
            let left = limit - purged;
            if left == 0 {
                break;
            }
            for (key, _) in self.backend_scan(table, &prefix, left)? {
                match (table, keys::profile_id(&key)) {
                    // Through the profile path, so the cache and the segment index forget it.
                    (Table::Profiles, Some(id)) => self.remove_profile(ws, id),
                    _ => self.delete(table, key),
                }
                purged += 1;
            }
        }
        if purged == 0 {
            self.delete(Table::Meta, meta::next_profile_key(ws));
        }
        Ok(purged)
    }

    /// Stores a new API key under the hash of its secret.
    pub(crate) fn create_api_key(&mut self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(key).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, meta::api_key_key(hash), bytes);
        self.put(
            Table::Meta,
            meta::api_key_id_key(key.workspace, &key.id),
            hash.as_bytes().to_vec(),
        );
        Ok(())
    }

    /// Revokes an API key by its id; `NotFound` if it does not exist.
    pub(crate) fn delete_api_key(&mut self, ws: u32, id: &str) -> Result<(), StoreError> {
        let id_key = meta::api_key_id_key(ws, id);
        let Some(hash) = self.get(Table::Meta, &id_key)? else {
            return Err(StoreError::NotFound(format!("api key '{id}'")));
        };
        let hash = String::from_utf8_lossy(&hash).to_string();
        self.delete(Table::Meta, meta::api_key_key(&hash));
        self.delete(Table::Meta, id_key);
        Ok(())
    }

    /// Records when an API key last authenticated a request (a key deleted meanwhile stays
    /// deleted).
    pub(crate) fn touch_api_key(&mut self, hash: &str, at: i64) -> Result<(), StoreError> {
        let key = meta::api_key_key(hash);
        let Some(bytes) = self.get(Table::Meta, &key)? else {
            return Ok(());
        };
        let mut record: ApiKey =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                table: "meta",
                reason: e.to_string(),
            })?;
        record.last_used_at = Some(at);
        let bytes = serde_json::to_vec(&record).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, key, bytes);
        Ok(())
    }

    /// Removes a partner and invalidates its Data Import Keys in these workspaces.
    pub(crate) fn delete_partner(
        &mut self,
        name: &str,
        workspaces: &[u32],
    ) -> Result<(), StoreError> {
        if self.get(Table::Meta, &meta::partner_key(name))?.is_none() {
            return Err(StoreError::NotFound(format!("partner '{name}'")));
        }
        for ws in workspaces {
            self.set_data_import_key(*ws, name, None)?;
        }
        self.delete(Table::Meta, meta::partner_key(name));
        Ok(())
    }

    /// Registers a partner or replaces its key.
    pub(crate) fn put_partner(&mut self, partner: &Partner) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(partner).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, meta::partner_key(&partner.name), bytes);
        Ok(())
    }

    /// Sets (or with `None` invalidates) a workspace's Data Import Key for a partner; the previous
    /// key stops working either way.
    pub(crate) fn set_data_import_key(
        &mut self,
        ws: u32,
        partner: &str,
        hash: Option<&str>,
    ) -> Result<(), StoreError> {
        let owner_key = meta::import_key_owner_key(ws, partner);
        if let Some(old) = self.get(Table::Meta, &owner_key)? {
            self.delete(
                Table::Meta,
                meta::import_key_hash_key(&String::from_utf8_lossy(&old)),
            );
        }
        match hash {
            Some(hash) => {
                let record = DataImportKey {
                    workspace: ws,
                    partner: partner.to_string(),
                    created_at: Some(self.now_ms),
                };
                let bytes =
                    serde_json::to_vec(&record).map_err(|e| StoreError::Backend(e.to_string()))?;
                self.put(Table::Meta, meta::import_key_hash_key(hash), bytes);
                self.put(Table::Meta, owner_key, hash.as_bytes().to_vec());
            }
            None => self.delete(Table::Meta, owner_key),
        }
        Ok(())
    }

    /// Sets where a workspace's segment exports go.
    pub(crate) fn set_export_storage(
        &mut self,
        ws: u32,
        storage: &ExportStorage,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(storage).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, meta::export_storage_key(ws), bytes);
        Ok(())
    }

    /// Saves a Currents connector's configuration (JSON owned by eddy-currents).
    pub(crate) fn put_connector_config(
        &mut self,
        ws: u32,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.put(
            Table::Meta,
            meta::connector_key(ws, name),
            config.to_string().into_bytes(),
        );
        Ok(())
    }

    /// Forgets a Currents connector: its configuration and its delivery state.
    pub(crate) fn delete_connector(&mut self, ws: u32, name: &str) -> Result<(), StoreError> {
        if self
            .get(Table::Meta, &meta::connector_key(ws, name))?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("connector '{name}'")));
        }
        self.delete(Table::Meta, meta::connector_key(ws, name));
        self.delete(Table::Meta, meta::connector_state_key(ws, name));
        Ok(())
    }

    /// Saves a Currents connector's delivery state (cursor and counters).
    pub(crate) fn put_connector_state(
        &mut self,
        ws: u32,
        name: &str,
        state: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.put(
            Table::Meta,
            meta::connector_state_key(ws, name),
            state.to_string().into_bytes(),
        );
        Ok(())
    }

    /// Saves a segment definition.
    pub(crate) fn put_segment(&mut self, ws: u32, segment: &Segment) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(segment).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, meta::segment_key(ws, &segment.id), bytes);
        Ok(())
    }

    /// Deletes a segment definition; `NotFound` if there is none.
    pub(crate) fn delete_segment(&mut self, ws: u32, id: &str) -> Result<(), StoreError> {
        let key = meta::segment_key(ws, id);
        if self.get(Table::Meta, &key)?.is_none() {
            return Err(StoreError::NotFound(format!("segment '{id}'")));
        }
        self.delete(Table::Meta, key);
        Ok(())
    }
}

fn corrupt_workspace(name: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table: "meta",
        reason: format!("workspace '{name}': {e}"),
    }
}
