//! Cohort mutations: partner cohorts named and their members added or removed.

use eddy_model::usage::Points;
use eddy_model::wire::UserAlias;

use crate::StoreError;
use crate::backend::Table;
use crate::identity::Read;
use crate::keys::{self, kind};
use crate::meta::{self, Cohort};
use crate::overlay::Txn;

impl Txn<'_> {
    /// Creates a cohort or renames it (an idempotent upsert, as partners call it repeatedly).
    pub(crate) fn upsert_cohort(
        &mut self,
        ws: u32,
        partner: &str,
        cohort_id: &str,
        name: &str,
        created_at: &str,
    ) -> Result<(), StoreError> {
        let key = meta::cohort_key(ws, partner, cohort_id);
        let existing: Option<Cohort> = match self.get(Table::Meta, &key)? {
            Some(bytes) => serde_json::from_slice(&bytes).ok(),
            None => None,
        };
        let cohort = Cohort {
            partner: partner.to_string(),
            cohort_id: cohort_id.to_string(),
            name: name.to_string(),
            created_at: created_at.to_string(),
            imported_at: existing.as_ref().map_or(self.now_ms, |c| c.imported_at),
            changed_at: existing.as_ref().and_then(|c| c.changed_at),
        };
        if existing.as_ref() == Some(&cohort) {
            return Ok(());
        }
        let cohort = Cohort {
            changed_at: Some(self.now_ms),
            ..cohort
        };
        let bytes = serde_json::to_vec(&cohort).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, key, bytes);
        Ok(())
    }

    /// Records that a cohort's members changed now.
    fn touch_cohort(&mut self, ws: u32, partner: &str, cohort_id: &str) -> Result<(), StoreError> {
        let key = meta::cohort_key(ws, partner, cohort_id);
        let Some(bytes) = self.get(Table::Meta, &key)? else {
            return Ok(());
        };
        let mut cohort: Cohort =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                table: "meta",
                reason: format!("cohort '{cohort_id}': {e}"),
            })?;
        cohort.changed_at = Some(self.now_ms);
        let bytes = serde_json::to_vec(&cohort).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.put(Table::Meta, key, bytes);
        Ok(())
    }

    /// Adds and removes cohort members. Only existing users are matched; a device id matches
    /// only an anonymous profile. Returns how many memberships changed.
    pub(crate) fn cohort_changes(
        &mut self,
        ws: u32,
        partner: &str,
        cohort_id: &str,
        changes: &[MemberChange],
    ) -> Result<usize, StoreError> {
        if self
            .get(Table::Meta, &meta::cohort_key(ws, partner, cohort_id))?
            .is_none()
        {
            let created = eddy_model::time::format_iso(self.now_ms);
            self.upsert_cohort(ws, partner, cohort_id, cohort_id, &created)?;
        }
        let mut resolved = Vec::with_capacity(changes.len());
        for change in changes {
            let id = match &change.member {
                CohortMember::ExternalId(ext) => self.ident(ws, kind::EXTERNAL, ext.as_bytes())?,
                CohortMember::Alias(a) => self.ident(
                    ws,
                    kind::ALIAS,
                    &keys::alias_value(&a.alias_label, &a.alias_name),
                )?,
                CohortMember::DeviceId(device) => {
                    match self.ident(ws, kind::DEVICE, device.as_bytes())? {
                        // Braze: a device id never matches an identified user.
                        Some(id) if self.load(ws, id)?.is_some_and(|p| p.external_id.is_none()) => {
                            Some(id)
                        }
                        _ => None,
                    }
                }
            };
            if let Some(id) = id {
                resolved.push((id, change.add));
            }
        }
        let changed = self.set_members(ws, partner, cohort_id, &resolved);
        if changed > 0 {
            self.touch_cohort(ws, partner, cohort_id)?;
        }
        // Assignments are billable; those that changed nothing are filed as non-billable.
        self.meter(
            ws,
            Points {
                billable: changed as u64,
                non_billable: (resolved.len() - changed) as u64,
            },
        );
        Ok(changed)
    }
}

/// A user named in a cohort change.
#[derive(Debug, Clone, PartialEq)]
pub enum CohortMember {
    /// By external id.
    ExternalId(String),
    /// By device id (anonymous users only).
    DeviceId(String),
    /// By alias.
    Alias(UserAlias),
}

/// Add or remove one user.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberChange {
    /// Who.
    pub member: CohortMember,
    /// True to add, false to remove.
    pub add: bool,
}
