//! Validation of the `/users/identify`, `/users/alias/*`, `/users/delete`, `/users/merge` and
//! `/users/export/ids` bodies, beside `/users/track`'s in [`crate::track`].
//!
//! These endpoints have no per-object errors in Braze's answers, so an invalid entry fails the
//! request with a 400 naming it, before anything is applied.

use serde_json::Value;

use crate::ApiError;
use crate::limits::{MAX_IDENTIFIER_BYTES, check_identifier};
use crate::track::{Identifier, normalize_email, parse_alias};
use crate::wire::{
    AliasNewRequest, AliasUpdateRequest, DeleteRequest, ExportIdsRequest, ExternalIdRemoveRequest,
    ExternalIdRenameRequest, IdentifyRequest, UserAlias,
};

/// Most identifiers per request on identify, alias, delete, merge and export.
pub const MAX_IDS: usize = 50;

/// A user identifier in merge and delete requests, with its prioritization for emails and phones.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The identifier.
    pub ident: Identifier,
    /// Rules choosing among profiles sharing an email or phone.
    pub prioritization: Vec<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

fn check_alias(alias: &UserAlias) -> Result<(), ApiError> {
    check_identifier("alias_name", &alias.alias_name).map_err(bad)?;
    check_identifier("alias_label", &alias.alias_label).map_err(bad)
}

/// `/users/identify`: at least one entry, at most [`MAX_IDS`], every identifier valid.
pub fn validate_identify(req: &IdentifyRequest) -> Result<(), ApiError> {
    let total = req.aliases_to_identify.len()
        + req.emails_to_identify.len()
        + req.phone_numbers_to_identify.len();
    if total == 0 {
        return Err(bad(
            "one of 'aliases_to_identify', 'emails_to_identify' or 'phone_numbers_to_identify' is required".into(),
        ));
    }
    if total > MAX_IDS {
        return Err(ApiError::TooManyIds);
    }
    for entry in &req.aliases_to_identify {
        check_identifier("external_id", &entry.external_id).map_err(bad)?;
        check_alias(&entry.user_alias)?;
    }
    for entry in &req.emails_to_identify {
        check_identifier("external_id", &entry.external_id).map_err(bad)?;
        let email = entry.email.as_deref().unwrap_or_default();
        if email.is_empty() {
            return Err(bad("'external_id' and 'email' must be non-empty".into()));
        }
        if normalize_email(email).is_none() {
            return Err(bad(crate::track::INVALID_EMAIL.into()));
        }
    }
    for entry in &req.phone_numbers_to_identify {
        check_identifier("external_id", &entry.external_id).map_err(bad)?;
        let phone = entry.phone.as_deref().unwrap_or_default();
        if phone.is_empty() {
            return Err(bad("'external_id' and 'phone' must be non-empty".into()));
        }
        check_identifier("phone", phone).map_err(bad)?;
    }
    Ok(())
}

/// `/users/alias/new`: at most [`MAX_IDS`] aliases, every name, label and external id valid.
pub fn validate_alias_new(req: &AliasNewRequest) -> Result<(), ApiError> {
    if req.user_aliases.len() > MAX_IDS {
        return Err(ApiError::TooManyIds);
    }
    for alias in &req.user_aliases {
        if alias.alias_name.is_empty() || alias.alias_label.is_empty() {
            return Err(bad(
                "'alias_name' and 'alias_label' must be non-empty strings".into(),
            ));
        }
        check_identifier("alias_name", &alias.alias_name).map_err(bad)?;
        check_identifier("alias_label", &alias.alias_label).map_err(bad)?;
        if let Some(external_id) = &alias.external_id {
            check_identifier("external_id", external_id).map_err(bad)?;
        }
    }
    Ok(())
}

/// `/users/external_ids/rename`: 1 to [`MAX_IDS`] renames, every id valid.
pub fn validate_external_id_rename(req: &ExternalIdRenameRequest) -> Result<(), ApiError> {
    if req.external_id_renames.is_empty() {
        return Err(bad("'external_id_renames' must be a non-empty array".into()));
    }
    if req.external_id_renames.len() > MAX_IDS {
        return Err(ApiError::TooManyIds);
    }
    for rename in &req.external_id_renames {
        check_identifier("current_external_id", &rename.current_external_id).map_err(bad)?;
        check_identifier("new_external_id", &rename.new_external_id).map_err(bad)?;
    }
    Ok(())
}

/// `/users/external_ids/remove`: 1 to [`MAX_IDS`] ids, each valid.
pub fn validate_external_id_remove(req: &ExternalIdRemoveRequest) -> Result<(), ApiError> {
    if req.external_ids.is_empty() {
        return Err(bad("'external_ids' must be a non-empty array".into()));
    }
    if req.external_ids.len() > MAX_IDS {
        return Err(ApiError::TooManyIds);
    }
    for id in &req.external_ids {
        check_identifier("external_ids", id).map_err(bad)?;
    }
    Ok(())
}

/// `/users/alias/update`: at most [`MAX_IDS`] renames, every label and name valid.
pub fn validate_alias_update(req: &AliasUpdateRequest) -> Result<(), ApiError> {
    if req.alias_updates.len() > MAX_IDS {
        return Err(ApiError::TooManyIds);
    }
    for update in &req.alias_updates {
        if update.alias_label.is_empty()
            || update.old_alias_name.is_empty()
            || update.new_alias_name.is_empty()
        {
            return Err(bad(
                "'alias_label', 'old_alias_name' and 'new_alias_name' must be non-empty strings"
                    .into(),
            ));
        }
        check_identifier("alias_label", &update.alias_label).map_err(bad)?;
        check_identifier("old_alias_name", &update.old_alias_name).map_err(bad)?;
        check_identifier("new_alias_name", &update.new_alias_name).map_err(bad)?;
    }
    Ok(())
}

/// `/users/delete`: at least one identifier, at most [`MAX_IDS`], every one valid.
pub fn validate_delete(req: &DeleteRequest) -> Result<(), ApiError> {
    let total = req.external_ids.len()
        + req.user_aliases.len()
        + req.braze_ids.len()
        + req.email_addresses.len()
        + req.phone_numbers.len();
    if total == 0 {
        return Err(bad(
            "one of 'external_ids', 'user_aliases', 'braze_ids', 'email_addresses' or 'phone_numbers' is required".into(),
        ));
    }
    if total > MAX_IDS {
        return Err(ApiError::TooManyIds);
    }
    for id in &req.external_ids {
        check_identifier("external_ids", id).map_err(bad)?;
    }
    for alias in &req.user_aliases {
        check_alias(alias)?;
    }
    for id in &req.braze_ids {
        check_identifier("braze_ids", id).map_err(bad)?;
    }
    for email in &req.email_addresses {
        check_identifier("email_addresses", &email.email).map_err(bad)?;
    }
    for phone in &req.phone_numbers {
        check_identifier("phone_numbers", phone).map_err(bad)?;
    }
    Ok(())
}

/// The lookups of a delete request, in Braze's order of identifier kinds.
pub fn delete_lookups(req: &DeleteRequest) -> Vec<Lookup> {
    let plain = |ident| Lookup {
        ident,
        prioritization: Vec::new(),
    };
    let mut lookups = Vec::new();
    lookups.extend(
        req.external_ids
            .iter()
            .map(|v| plain(Identifier::ExternalId(v.clone()))),
    );
    lookups.extend(
        req.user_aliases
            .iter()
            .map(|a| plain(Identifier::Alias(a.clone()))),
    );
    lookups.extend(
        req.braze_ids
            .iter()
            .map(|v| plain(Identifier::BrazeId(v.clone()))),
    );
    lookups.extend(req.email_addresses.iter().map(|e| Lookup {
        ident: Identifier::Email(e.email.to_ascii_lowercase()),
        prioritization: e.prioritization.clone(),
    }));
    lookups.extend(
        req.phone_numbers
            .iter()
            .map(|p| plain(Identifier::Phone(p.clone()))),
    );
    lookups
}

/// `/users/export/ids`: at most [`MAX_IDS`] external ids and aliases together.
///
/// Identifiers over the limits are not refused: no profile can hold one, so they are reported
/// as not found, like any other unknown identifier.
pub fn validate_export_ids(req: &ExportIdsRequest) -> Result<(), ApiError> {
    if req.external_ids.len() + req.user_aliases.len() > MAX_IDS {
        return Err(ApiError::TooManyIds);
    }
    Ok(())
}

/// Whether an identifier could name a stored profile at all (within the limits).
pub fn could_exist(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_IDENTIFIER_BYTES
}

/// Braze's 400 text: `merge_updates` is not an array of objects.
pub const MERGE_NOT_ARRAY: &str = "'merge_updates' must be an array of objects";
/// Braze's 400 text: more than 50 merges.
pub const MERGE_TOO_MANY: &str = "a single request may not contain more than 50 merge updates";
/// Braze's 400 text: a merge update with other keys.
pub const MERGE_KEYS: &str =
    "'merge_updates' must only have 'identifier_to_merge' and 'identifier_to_keep'";
/// Braze's 400 text: an identifier of the wrong shape.
pub const MERGE_IDENTIFIER: &str = "identifiers must be objects with an 'external_id' property that is a string, 'user_alias' property that is an object, 'email' property that is a string, or 'phone' property that is a string";

/// Parses `/users/merge`'s body into (merged, kept) pairs, with Braze's exact 400 texts.
pub fn parse_merge(req: &Value) -> Result<Vec<(Lookup, Lookup)>, ApiError> {
    let text = |m: &str| bad(m.to_string());
    let Some(Value::Array(updates)) = req.get("merge_updates") else {
        return Err(text(MERGE_NOT_ARRAY));
    };
    if updates.len() > MAX_IDS {
        return Err(text(MERGE_TOO_MANY));
    }
    let mut pairs = Vec::with_capacity(updates.len());
    for update in updates {
        let Value::Object(map) = update else {
            return Err(text(MERGE_NOT_ARRAY));
        };
        if map.len() != 2
            || !map.contains_key("identifier_to_merge")
            || !map.contains_key("identifier_to_keep")
        {
            return Err(text(MERGE_KEYS));
        }
        let gone = merge_identifier(&map["identifier_to_merge"])?;
        let keep = merge_identifier(&map["identifier_to_keep"])?;
        pairs.push((gone, keep));
    }
    Ok(pairs)
}

fn merge_identifier(value: &Value) -> Result<Lookup, ApiError> {
    let shape = || bad(MERGE_IDENTIFIER.to_string());
    let map = value.as_object().ok_or_else(shape)?;
    let prioritization: Vec<String> = match map.get("prioritization") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(shape)?,
        Some(_) => return Err(shape()),
    };
    let ident = if let Some(v) = map.get("external_id") {
        let id = v.as_str().filter(|s| !s.is_empty()).ok_or_else(shape)?;
        check_identifier("external_id", id).map_err(bad)?;
        Identifier::ExternalId(id.to_string())
    } else if let Some(v) = map.get("user_alias") {
        if !v.is_object() {
            return Err(shape());
        }
        let alias = parse_alias(v).map_err(|_| shape())?;
        check_alias(&alias)?;
        Identifier::Alias(alias)
    } else if let Some(v) = map.get("email") {
        let email = v.as_str().ok_or_else(shape)?;
        check_identifier("email", email).map_err(bad)?;
        Identifier::Email(email.to_ascii_lowercase())
    } else if let Some(v) = map.get("phone") {
        let phone = v.as_str().ok_or_else(shape)?;
        check_identifier("phone", phone).map_err(bad)?;
        Identifier::Phone(phone.to_string())
    } else {
        return Err(shape());
    };
    Ok(Lookup {
        ident,
        prioritization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn merge_texts() {
        let err = |v: Value| message(parse_merge(&v).unwrap_err());
        assert_eq!(err(json!({})), MERGE_NOT_ARRAY);
        assert_eq!(err(json!({"merge_updates": [1]})), MERGE_NOT_ARRAY);
        let many: Vec<Value> = (0..51)
            .map(|_| json!({"identifier_to_merge": {"external_id": "a"}, "identifier_to_keep": {"external_id": "b"}}))
            .collect();
        assert_eq!(err(json!({"merge_updates": many})), MERGE_TOO_MANY);
        let extra = json!({"merge_updates": [{"identifier_to_merge": {"external_id": "a"}, "identifier_to_keep": {"external_id": "b"}, "x": 1}]});
        assert_eq!(err(extra), MERGE_KEYS);
        let bad = json!({"merge_updates": [{"identifier_to_merge": {"external_id": 1}, "identifier_to_keep": {"external_id": "b"}}]});
        assert_eq!(err(bad), MERGE_IDENTIFIER);
        let long = json!({"merge_updates": [{"identifier_to_merge": {"external_id": "x".repeat(998)}, "identifier_to_keep": {"external_id": "b"}}]});
        assert_eq!(err(long), "'external_id' is longer than 997 bytes");
        let ok = json!({"merge_updates": [{"identifier_to_merge": {"email": "A@b.co", "prioritization": ["unidentified"]},
                                           "identifier_to_keep": {"user_alias": {"alias_name": "n", "alias_label": "l"}}}]});
        let pairs = parse_merge(&ok).unwrap();
        assert_eq!(pairs[0].0.ident, Identifier::Email("a@b.co".into()));
        assert_eq!(pairs[0].0.prioritization, vec!["unidentified".to_string()]);
    }

    #[test]
    fn long_identifiers_are_refused_by_name() {
        let long = "x".repeat(70_000);
        let identify: IdentifyRequest = serde_json::from_value(json!({"aliases_to_identify": [
            {"external_id": "u1", "user_alias": {"alias_name": long, "alias_label": "l"}}]}))
        .unwrap();
        assert_eq!(
            message(validate_identify(&identify).unwrap_err()),
            "'alias_name' is longer than 997 bytes"
        );
        let alias: AliasNewRequest = serde_json::from_value(
            json!({"user_aliases": [{"alias_name": "n", "alias_label": long}]}),
        )
        .unwrap();
        assert!(validate_alias_new(&alias).is_err());
        let update: AliasUpdateRequest = serde_json::from_value(json!({"alias_updates": [
            {"alias_label": "l", "old_alias_name": "a", "new_alias_name": long}]}))
        .unwrap();
        assert!(validate_alias_update(&update).is_err());
        let delete: DeleteRequest = serde_json::from_value(json!({"braze_ids": [long]})).unwrap();
        assert!(validate_delete(&delete).is_err());
        let fine: DeleteRequest =
            serde_json::from_value(json!({"external_ids": ["x".repeat(997)]})).unwrap();
        assert!(validate_delete(&fine).is_ok());
    }
}
