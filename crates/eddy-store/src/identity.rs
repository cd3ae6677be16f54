//! Identity resolution, written once over [`Read`]: which profile an identifier names, and which
//! of several profiles sharing an email or phone a prioritization picks. [`View`] reads committed
//! data (request handlers); the writer's overlay reads its group's own writes too.

use eddy_model::profile::Profile;
use eddy_model::track::Identifier;

use crate::StoreError;
use crate::backend::{Backend, Table};
use crate::codec::decode_profile;
use crate::keys::{self, kind};

/// Point reads, answered by the backend or by a transaction's overlay.
pub trait Read {
    /// Reads one key.
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads and decodes one profile.
    fn profile(&mut self, ws: u32, id: u32) -> Result<Option<Profile>, StoreError> {
        match self.get(Table::Profiles, &keys::profile(ws, id))? {
            Some(bytes) => decode_profile(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The single id an identifier kind maps to.
    fn ident(&mut self, ws: u32, kind: u8, value: &[u8]) -> Result<Option<u32>, StoreError> {
        Ok(self
            .get(Table::Idents, &keys::ident(ws, kind, value))?
            .as_deref()
            .and_then(keys::decode_id))
    }

    /// Every id an email or phone maps to.
    fn ident_list(&mut self, ws: u32, kind: u8, value: &[u8]) -> Result<Vec<u32>, StoreError> {
        Ok(self
            .get(Table::Idents, &keys::ident(ws, kind, value))?
            .as_deref()
            .map(keys::decode_ids)
            .unwrap_or_default())
    }

    /// Resolves an identifier to an internal id, by Braze's rules for shared emails and phones:
    /// the most recently updated profile with an external id, else the most recently updated.
    fn resolve(&mut self, ws: u32, ident: &Identifier) -> Result<Option<u32>, StoreError> {
        match ident {
            Identifier::ExternalId(v) => self.ident(ws, kind::EXTERNAL, v.as_bytes()),
            Identifier::BrazeId(v) => self.ident(ws, kind::BRAZE, v.as_bytes()),
            Identifier::Alias(a) => self.ident(
                ws,
                kind::ALIAS,
                &keys::alias_value(&a.alias_label, &a.alias_name),
            ),
            Identifier::Email(v) => self.pick(ws, kind::EMAIL, v, &[]),
            Identifier::Phone(v) => self.pick(ws, kind::PHONE, v, &[]),
        }
    }

    /// Picks one of the profiles sharing an email or phone, following `prioritization`
    /// (`identified`, `unidentified`, `most_recently_updated`, `least_recently_updated`).
    fn pick(
        &mut self,
        ws: u32,
        kind: u8,
        value: &str,
        prioritization: &[String],
    ) -> Result<Option<u32>, StoreError> {
        let ids = self.ident_list(ws, kind, value.as_bytes())?;
        let mut candidates = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.profile(ws, id)? {
                candidates.push((id, p.external_id.is_some(), p.updated_at));
            }
        }
        if prioritization.is_empty() && candidates.iter().any(|c| c.1) {
            candidates.retain(|c| c.1);
        }
        for rule in prioritization {
            match rule.as_str() {
                "identified" => candidates.retain(|c| c.1),
                "unidentified" => candidates.retain(|c| !c.1),
                _ => {}
            }
        }
        let least = prioritization.iter().any(|r| r == "least_recently_updated");
        let chosen = if least {
            candidates.iter().min_by_key(|c| (c.2, c.0))
        } else {
            candidates.iter().max_by_key(|c| (c.2, c.0))
        };
        Ok(chosen.map(|c| c.0))
    }
}

/// Reads straight from the backend (committed data only).
pub struct View<'a> {
    /// The backend read from.
    pub backend: &'a dyn Backend,
}

impl Read for View<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get(table, key)
    }
}
