//! User mutations: `/users/track`, identify, aliases, delete and merge. Each validates what it
//! needs first and then writes, so a refused mutation leaves nothing behind in the group.

use eddy_model::ObjectError;
use eddy_model::currents::{self, UserRef};
use eddy_model::profile::{Limits, Profile, SubscriptionChange};
use eddy_model::track::{Identifier, Target, TrackBatch};
use eddy_model::usage::{Activity, Points};
use eddy_model::users::Lookup;
use eddy_model::wire::{
    AliasNewRequest, AliasUpdateRequest, DeleteRequest, ExternalIdRemoveRequest,
    ExternalIdRenameRequest, ExternalIdsOutcome, IdentifyRequest, TrackResponse, UserAlias,
};

use crate::identity::Read;
use crate::keys::{self, kind};
use crate::meta::Workspace;
use crate::overlay::Txn;
use crate::{StoreError, ids};

impl Txn<'_> {
    pub(crate) fn find(&mut self, ws: u32, lookup: &Lookup) -> Result<Option<u32>, StoreError> {
        match &lookup.ident {
            Identifier::Email(v) if !lookup.prioritization.is_empty() => {
                self.pick(ws, kind::EMAIL, v, &lookup.prioritization)
            }
            Identifier::Phone(v) if !lookup.prioritization.is_empty() => {
                self.pick(ws, kind::PHONE, v, &lookup.prioritization)
            }
            ident => self.resolve(ws, ident),
        }
    }

    /// Takes the target's profile out for update, creating it when the rules allow. The
    /// caller must save it back.
    pub(crate) fn target(
        &mut self,
        ws: u32,
        target: &Target,
    ) -> Result<Option<(u32, Profile)>, StoreError> {
        if let Some(id) = self.resolve(ws, &target.ident)? {
            return Ok(self.take(ws, id)?.map(|p| (id, p)));
        }
        if target.update_existing_only {
            return Ok(None);
        }
        let (id, mut profile) = match &target.ident {
            // A braze_id is assigned by eddy: an unknown one names nobody.
            Identifier::BrazeId(_) => return Ok(None),
            _ => self.create_profile(ws),
        };
        match &target.ident {
            Identifier::ExternalId(ext) => {
                profile.external_id = Some(ext.clone());
                self.link(ws, kind::EXTERNAL, ext.as_bytes(), id);
            }
            Identifier::Alias(alias) => {
                self.link(
                    ws,
                    kind::ALIAS,
                    &keys::alias_value(&alias.alias_label, &alias.alias_name),
                    id,
                );
                profile.aliases.push(alias.clone());
            }
            Identifier::Email(email) => {
                profile
                    .fields
                    .insert("email".into(), serde_json::Value::String(email.clone()));
                self.link_shared(ws, kind::EMAIL, email, id)?;
            }
            Identifier::Phone(phone) => {
                profile
                    .fields
                    .insert("phone".into(), serde_json::Value::String(phone.clone()));
                self.link_shared(ws, kind::PHONE, phone, id)?;
            }
            Identifier::BrazeId(_) => {}
        }
        // The identifier itself is a non-billable data point.
        self.meter(
            ws,
            Points {
                billable: 0,
                non_billable: 1,
            },
        );
        Ok(Some((id, profile)))
    }

    /// Keeps the email and phone indexes in line with a profile's fields.
    pub(crate) fn reindex_contacts(
        &mut self,
        ws: u32,
        id: u32,
        (old_email, old_phone): (Option<&str>, Option<&str>),
        after: &Profile,
    ) -> Result<(), StoreError> {
        for (kind, old, new) in [
            (kind::EMAIL, old_email, after.email()),
            (kind::PHONE, old_phone, after.phone()),
        ] {
            if old == new {
                continue;
            }
            if let Some(old) = old {
                self.unlink_shared(ws, kind, old, id)?;
            }
            if let Some(new) = new {
                self.link_shared(ws, kind, new, id)?;
            }
        }
        Ok(())
    }

    /// `/users/track`: attributes, then events, then purchases, as Braze orders them.
    pub(crate) fn track(
        &mut self,
        ws: &Workspace,
        batch: TrackBatch,
        limits: Limits,
    ) -> Result<TrackResponse, StoreError> {
        let mut response = batch.response;
        let now = self.now_ms;
        for update in batch.attributes {
            let Some((id, mut profile)) = self.target(ws.id, &update.target)? else {
                continue;
            };
            let old_email = profile.email().map(str::to_string);
            let old_phone = profile.phone().map(str::to_string);
            let mut changed = false;
            let mut points = Points::default();
            let mut changes = Vec::new();
            for op in &update.standard {
                changed |= profile.apply_standard(op, &mut points, &mut changes);
            }
            for (name, op) in &update.custom {
                match profile.apply_custom(name, op, limits, &mut points) {
                    Ok(c) => changed |= c,
                    Err(message) => response.errors.push(ObjectError {
                        kind: message,
                        input_array: "attributes".into(),
                        index: update.index,
                    }),
                }
            }
            let old_contacts = (old_email.as_deref(), old_phone.as_deref());
            self.reindex_contacts(ws.id, id, old_contacts, &profile)?;
            self.register_devices(ws.id, id, &mut profile);
            for change in changes {
                let user = UserRef {
                    braze_id: &profile.braze_id,
                    external_id: profile.external_id.as_deref(),
                    app_group_id: &ws.app_group_id,
                };
                let event = match change {
                    SubscriptionChange::Global { channel, state } => currents::global_state_change(
                        ids::event_id(),
                        user,
                        now,
                        channel,
                        &state,
                        profile.email(),
                    ),
                    SubscriptionChange::Group { id: group, state } => currents::group_state_change(
                        ids::event_id(),
                        user,
                        now,
                        &group,
                        &state,
                        profile.email(),
                        profile.phone(),
                    ),
                };
                self.emit(ws.id, event);
            }
            if changed {
                profile.updated_at = now;
            }
            self.meter(ws.id, points);
            self.save(ws.id, id, profile);
        }
        for event in batch.events {
            let Some((id, mut profile)) = self.target(ws.id, &event.target)? else {
                continue;
            };
            profile.record_event(&event.name, event.time_ms);
            profile.updated_at = now;
            let user = UserRef {
                braze_id: &profile.braze_id,
                external_id: profile.external_id.as_deref(),
                app_group_id: &ws.app_group_id,
            };
            let record = currents::custom_event(ids::event_id(), user, &event);
            self.emit(ws.id, record);
            self.count(
                ws.id,
                Activity {
                    events: 1,
                    ..Activity::default()
                },
            );
            self.meter(
                ws.id,
                Points {
                    billable: 1,
                    non_billable: 0,
                },
            );
            self.save(ws.id, id, profile);
        }
        for purchase in batch.purchases {
            let Some((id, mut profile)) = self.target(ws.id, &purchase.target)? else {
                continue;
            };
            profile.record_purchase(
                &purchase.product_id,
                purchase.price,
                purchase.quantity,
                purchase.time_ms,
            );
            profile.updated_at = now;
            for _ in 0..purchase.quantity {
                let user = UserRef {
                    braze_id: &profile.braze_id,
                    external_id: profile.external_id.as_deref(),
                    app_group_id: &ws.app_group_id,
                };
                let record = currents::purchase(ids::event_id(), user, &purchase);
                self.emit(ws.id, record);
            }
            self.count(
                ws.id,
                Activity {
                    purchases: u64::from(purchase.quantity),
                    ..Activity::default()
                },
            );
            self.meter(
                ws.id,
                Points {
                    billable: u64::from(purchase.quantity),
                    non_billable: 0,
                },
            );
            self.save(ws.id, id, profile);
        }
        Ok(response)
    }

    /// Folds profile `gone` into `keep`: data, devices and contacts move, `gone` is deleted and
    /// remembered as merged into `keep`. Aliases move when `move_aliases` (identify) and their
    /// label is free on `keep`.
    pub(crate) fn merge_profiles(
        &mut self,
        ws: u32,
        keep: u32,
        gone: u32,
        move_aliases: bool,
    ) -> Result<(), StoreError> {
        let (Some(mut survivor), Some(merged)) = (self.load(ws, keep)?, self.load(ws, gone)?)
        else {
            return Ok(());
        };
        let before = survivor.clone();
        survivor.absorb(&merged);
        survivor.remember_merge(&merged, self.now_ms);
        if move_aliases {
            for alias in &merged.aliases {
                if survivor
                    .aliases
                    .iter()
                    .any(|a| a.alias_label == alias.alias_label)
                {
                    continue;
                }
                survivor.aliases.push(alias.clone());
                self.link(
                    ws,
                    kind::ALIAS,
                    &keys::alias_value(&alias.alias_label, &alias.alias_name),
                    keep,
                );
            }
        }
        for device in &merged.devices {
            self.link(ws, kind::DEVICE, device.as_bytes(), keep);
        }
        self.drop_identifiers(ws, gone, &merged, &survivor)?;
        self.reindex_contacts(ws, keep, (before.email(), before.phone()), &survivor)?;
        survivor.updated_at = self.now_ms;
        self.save(ws, keep, survivor);
        for (partner, cohort_id) in self.memberships(ws, gone) {
            self.set_member(ws, &partner, &cohort_id, keep, true);
            self.set_member(ws, &partner, &cohort_id, gone, false);
        }
        self.remove_profile(ws, gone);
        self.link(ws, kind::MERGED, &gone.to_be_bytes(), keep);
        Ok(())
    }

    /// Removes the identifiers of a profile that is going away, except those now on `heir`.
    pub(crate) fn drop_identifiers(
        &mut self,
        ws: u32,
        id: u32,
        profile: &Profile,
        heir: &Profile,
    ) -> Result<(), StoreError> {
        self.unlink(ws, kind::BRAZE, profile.braze_id.as_bytes());
        if let Some(ext) = &profile.external_id {
            self.unlink(ws, kind::EXTERNAL, ext.as_bytes());
        }
        for deprecated in &profile.deprecated_external_ids {
            self.unlink(ws, kind::EXTERNAL, deprecated.as_bytes());
        }
        for alias in &profile.aliases {
            if !heir.aliases.contains(alias) {
                self.unlink(
                    ws,
                    kind::ALIAS,
                    &keys::alias_value(&alias.alias_label, &alias.alias_name),
                );
            }
        }
        for device in &profile.devices {
            if !heir.devices.contains(device) {
                self.unlink(ws, kind::DEVICE, device.as_bytes());
            }
        }
        if let Some(email) = profile.email() {
            self.unlink_shared(ws, kind::EMAIL, email, id)?;
        }
        if let Some(phone) = profile.phone() {
            self.unlink_shared(ws, kind::PHONE, phone, id)?;
        }
        Ok(())
    }

    /// Makes sure an identified profile exists for `external_id`; `Some(id)` if it already did.
    pub(crate) fn identified(
        &mut self,
        ws: u32,
        external_id: &str,
    ) -> Result<Option<u32>, StoreError> {
        self.ident(ws, kind::EXTERNAL, external_id.as_bytes())
    }

    /// Gives an unidentified profile an external id.
    pub(crate) fn assign_external_id(
        &mut self,
        ws: u32,
        id: u32,
        external_id: &str,
    ) -> Result<(), StoreError> {
        let Some(mut profile) = self.load(ws, id)? else {
            return Ok(());
        };
        if profile.external_id.is_some() {
            return Ok(());
        }
        profile.external_id = Some(external_id.to_string());
        profile.updated_at = self.now_ms;
        self.link(ws, kind::EXTERNAL, external_id.as_bytes(), id);
        self.save(ws, id, profile);
        Ok(())
    }

    /// `/users/identify`: merges alias-only, email-only and phone-only profiles into identified ones.
    pub(crate) fn identify(
        &mut self,
        ws: &Workspace,
        req: &IdentifyRequest,
    ) -> Result<usize, StoreError> {
        let mut processed = 0;
        for entry in &req.aliases_to_identify {
            processed += 1;
            let alias = &entry.user_alias;
            let Some(alias_id) = self.ident(
                ws.id,
                kind::ALIAS,
                &keys::alias_value(&alias.alias_label, &alias.alias_name),
            )?
            else {
                continue;
            };
            match self.identified(ws.id, &entry.external_id)? {
                None => self.assign_external_id(ws.id, alias_id, &entry.external_id)?,
                Some(keep) if keep == alias_id => {}
                Some(keep) => {
                    let Some(target) = self.load(ws.id, keep)? else {
                        continue;
                    };
                    // Braze: if the identified user already has an alias with this label, no merge.
                    if target
                        .aliases
                        .iter()
                        .any(|a| a.alias_label == alias.alias_label)
                    {
                        continue;
                    }
                    let Some(source) = self.load(ws.id, alias_id)? else {
                        continue;
                    };
                    if source.external_id.is_some() {
                        continue;
                    }
                    self.merge_profiles(ws.id, keep, alias_id, true)?;
                }
            }
        }
        let contacts = req
            .emails_to_identify
            .iter()
            .filter_map(|e| {
                e.email
                    .as_ref()
                    .map(|v| (e, kind::EMAIL, v.to_ascii_lowercase()))
            })
            .chain(
                req.phone_numbers_to_identify
                    .iter()
                    .filter_map(|e| e.phone.as_ref().map(|v| (e, kind::PHONE, v.clone()))),
            );
        let contacts: Vec<_> = contacts.collect();
        for (entry, kind, value) in contacts {
            processed += 1;
            let mut rules = entry.prioritization.clone();
            if !rules.iter().any(|r| r == "unidentified") {
                rules.insert(0, "unidentified".into());
            }
            let Some(source) = self.pick(ws.id, kind, &value, &rules)? else {
                continue;
            };
            match self.identified(ws.id, &entry.external_id)? {
                None => self.assign_external_id(ws.id, source, &entry.external_id)?,
                Some(keep) if keep == source => {}
                Some(keep) => self.merge_profiles(ws.id, keep, source, true)?,
            }
        }
        Ok(processed)
    }

    /// `/users/alias/new`.
    pub(crate) fn alias_new(
        &mut self,
        ws: &Workspace,
        req: &AliasNewRequest,
    ) -> Result<usize, StoreError> {
        let mut processed = 0;
        for entry in &req.user_aliases {
            processed += 1;
            let value = keys::alias_value(&entry.alias_label, &entry.alias_name);
            if self.ident(ws.id, kind::ALIAS, &value)?.is_some() {
                continue;
            }
            let alias = UserAlias {
                alias_name: entry.alias_name.clone(),
                alias_label: entry.alias_label.clone(),
            };
            let (id, mut profile) = match &entry.external_id {
                Some(ext) => {
                    // Braze: an alias for an external id that does not exist is not added.
                    let Some(id) = self.identified(ws.id, ext)? else {
                        continue;
                    };
                    let Some(profile) = self.load(ws.id, id)? else {
                        continue;
                    };
                    (id, profile)
                }
                None => self.create_profile(ws.id),
            };
            // One alias per label: a new name under a label replaces the old one.
            if let Some(old) = profile
                .aliases
                .iter()
                .position(|a| a.alias_label == alias.alias_label)
            {
                let old = profile.aliases.remove(old);
                self.unlink(
                    ws.id,
                    kind::ALIAS,
                    &keys::alias_value(&old.alias_label, &old.alias_name),
                );
            }
            profile.aliases.push(alias);
            profile.updated_at = self.now_ms;
            self.link(ws.id, kind::ALIAS, &value, id);
            self.save(ws.id, id, profile);
            self.meter(
                ws.id,
                Points {
                    billable: 0,
                    non_billable: 1,
                },
            );
        }
        Ok(processed)
    }

    /// `/users/alias/update`.
    pub(crate) fn alias_update(
        &mut self,
        ws: &Workspace,
        req: &AliasUpdateRequest,
    ) -> Result<usize, StoreError> {
        let mut processed = 0;
        for entry in &req.alias_updates {
            processed += 1;
            let old = keys::alias_value(&entry.alias_label, &entry.old_alias_name);
            let new = keys::alias_value(&entry.alias_label, &entry.new_alias_name);
            let Some(id) = self.ident(ws.id, kind::ALIAS, &old)? else {
                continue;
            };
            if self.ident(ws.id, kind::ALIAS, &new)?.is_some() {
                continue;
            }
            let Some(mut profile) = self.load(ws.id, id)? else {
                continue;
            };
            for alias in profile.aliases.iter_mut() {
                if alias.alias_label == entry.alias_label
                    && alias.alias_name == entry.old_alias_name
                {
                    alias.alias_name = entry.new_alias_name.clone();
                }
            }
            profile.updated_at = self.now_ms;
            self.unlink(ws.id, kind::ALIAS, &old);
            self.link(ws.id, kind::ALIAS, &new, id);
            self.save(ws.id, id, profile);
        }
        Ok(processed)
    }

    /// `/users/external_ids/rename`: each entry in order, so a later one sees an earlier one's
    /// result. The current id stays linked to the user as a deprecated id.
    pub(crate) fn rename_external_ids(
        &mut self,
        ws: &Workspace,
        req: &ExternalIdRenameRequest,
    ) -> Result<ExternalIdsOutcome, StoreError> {
        let mut outcome = ExternalIdsOutcome::default();
        for (index, rename) in req.external_id_renames.iter().enumerate() {
            let (current, new) = (&rename.current_external_id, &rename.new_external_id);
            if current == new {
                outcome.errors.push((
                    index,
                    "current_external_id and new_external_id are the same".into(),
                ));
                continue;
            }
            let Some(id) = self.ident(ws.id, kind::EXTERNAL, current.as_bytes())? else {
                outcome
                    .errors
                    .push((index, format!("no user has the external id '{current}'")));
                continue;
            };
            if self.ident(ws.id, kind::EXTERNAL, new.as_bytes())?.is_some() {
                outcome
                    .errors
                    .push((index, format!("the external id '{new}' is already in use")));
                continue;
            }
            let Some(mut profile) = self.load(ws.id, id)? else {
                outcome
                    .errors
                    .push((index, format!("no user has the external id '{current}'")));
                continue;
            };
            if profile.external_id.as_deref() != Some(current.as_str()) {
                outcome.errors.push((
                    index,
                    format!("'{current}' is a deprecated external id, not the user's primary one"),
                ));
                continue;
            }
            profile.deprecated_external_ids.push(current.clone());
            profile.external_id = Some(new.clone());
            profile.updated_at = self.now_ms;
            self.link(ws.id, kind::EXTERNAL, new.as_bytes(), id);
            self.save(ws.id, id, profile);
            outcome.done.push(current.clone());
        }
        Ok(outcome)
    }

    /// `/users/external_ids/remove`: only deprecated ids are removed; a primary one is refused.
    pub(crate) fn remove_external_ids(
        &mut self,
        ws: &Workspace,
        req: &ExternalIdRemoveRequest,
    ) -> Result<ExternalIdsOutcome, StoreError> {
        let mut outcome = ExternalIdsOutcome::default();
        for (index, external_id) in req.external_ids.iter().enumerate() {
            let profile = match self.ident(ws.id, kind::EXTERNAL, external_id.as_bytes())? {
                Some(id) => self.load(ws.id, id)?.map(|p| (id, p)),
                None => None,
            };
            let Some((id, mut profile)) = profile else {
                outcome.errors.push((
                    index,
                    format!("no user has the external id '{external_id}'"),
                ));
                continue;
            };
            let Some(at) = profile
                .deprecated_external_ids
                .iter()
                .position(|d| d == external_id)
            else {
                outcome.errors.push((
                    index,
                    format!(
                        "'{external_id}' is a primary external id; only deprecated ones are removed"
                    ),
                ));
                continue;
            };
            profile.deprecated_external_ids.remove(at);
            profile.updated_at = self.now_ms;
            self.unlink(ws.id, kind::EXTERNAL, external_id.as_bytes());
            self.save(ws.id, id, profile);
            outcome.done.push(external_id.clone());
        }
        Ok(outcome)
    }

    /// `/users/delete`: returns how many profiles were deleted.
    pub(crate) fn delete_users(
        &mut self,
        ws: &Workspace,
        req: &DeleteRequest,
    ) -> Result<usize, StoreError> {
        let lookups = eddy_model::users::delete_lookups(req);
        let mut deleted = 0;
        for lookup in &lookups {
            let Some(id) = self.find(ws.id, lookup)? else {
                continue;
            };
            let Some(profile) = self.load(ws.id, id)? else {
                continue;
            };
            self.drop_identifiers(ws.id, id, &profile, &Profile::default())?;
            for (partner, cohort_id) in self.memberships(ws.id, id) {
                self.set_member(ws.id, &partner, &cohort_id, id, false);
            }
            self.remove_profile(ws.id, id);
            let event = currents::user_delete_request(
                ids::event_id(),
                &profile.braze_id,
                &ws.app_group_id,
                self.now_ms,
            );
            self.emit(ws.id, event);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// `/users/merge`: each pair folds the first profile into the second.
    pub(crate) fn merge_users(
        &mut self,
        ws: &Workspace,
        pairs: &[(Lookup, Lookup)],
    ) -> Result<usize, StoreError> {
        let mut merged = 0;
        for (gone, keep) in pairs {
            let (Some(gone), Some(keep)) = (self.find(ws.id, gone)?, self.find(ws.id, keep)?)
            else {
                continue;
            };
            if gone == keep {
                continue;
            }
            self.merge_profiles(ws.id, keep, gone, false)?;
            merged += 1;
        }
        Ok(merged)
    }

    /// Records the device ids of a profile's push tokens, so cohorts can match them.
    pub(crate) fn register_devices(&mut self, ws: u32, id: u32, profile: &mut Profile) {
        let devices: Vec<String> = profile
            .push_tokens
            .iter()
            .filter_map(|t| t.device_id.clone())
            .filter(|d| !profile.devices.contains(d))
            .collect();
        for device in devices {
            self.link(ws, kind::DEVICE, device.as_bytes(), id);
            profile.devices.push(device);
        }
    }
}
