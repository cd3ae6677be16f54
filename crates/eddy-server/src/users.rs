//! The Braze-compatible `/users/*` endpoints.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use eddy_model::track::{Identifier, parse_alias, validate_track};
use eddy_model::wire::{
    AliasNewRequest, AliasUpdateRequest, DeleteRequest, ExportIdsRequest, IdentifyRequest,
    TrackRequest,
};
use eddy_model::{ApiError, time};
use eddy_store::apply::Lookup;
use eddy_store::{Mutation, Outcome};
use serde_json::{Value, json};

use crate::SharedState;
use crate::http::{HttpError, authorize, body_bytes, json_response, parse};

/// Most identifiers per request on identify, alias, delete, merge and export.
const MAX_IDS: usize = 50;

type Body = Result<Bytes, BytesRejection>;
type Answer = Result<Response, HttpError>;

async fn mutate(state: &SharedState, mutation: Mutation) -> Result<Outcome, HttpError> {
    Ok(state.store.apply(mutation).await?)
}

/// Applies a mutation that answers a count.
async fn mutate_count(state: &SharedState, mutation: Mutation) -> Result<usize, HttpError> {
    match mutate(state, mutation).await? {
        Outcome::Count(n) => Ok(n),
        _ => Err(ApiError::Internal.into()),
    }
}

/// The 201 of identify and the alias endpoints.
fn aliases_processed(n: usize) -> Response {
    json_response(
        StatusCode::CREATED,
        &json!({"aliases_processed": n, "message": "success"}),
    )
}

/// `POST /users/track`.
pub async fn track(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(&state, &headers, q.as_deref(), &bytes, "users.track")?;
    let req: TrackRequest = parse(&bytes)?;
    let batch = validate_track(&req, time::now_ms())?;
    match mutate(&state, Mutation::Track(ws, batch)).await? {
        Outcome::Track(response) => Ok(json_response(StatusCode::CREATED, &json!(response))),
        _ => Err(ApiError::Internal.into()),
    }
}

/// `POST /users/identify`.
pub async fn identify(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(&state, &headers, q.as_deref(), &bytes, "users.identify")?;
    let req: IdentifyRequest = parse(&bytes)?;
    let total = req.aliases_to_identify.len()
        + req.emails_to_identify.len()
        + req.phone_numbers_to_identify.len();
    if total == 0 {
        return Err(ApiError::BadRequest(
            "one of 'aliases_to_identify', 'emails_to_identify' or 'phone_numbers_to_identify' is required".into(),
        )
        .into());
    }
    if total > MAX_IDS {
        return Err(ApiError::TooManyIds.into());
    }
    for entry in &req.aliases_to_identify {
        if entry.external_id.is_empty()
            || entry.user_alias.alias_name.is_empty()
            || entry.user_alias.alias_label.is_empty()
        {
            return Err(ApiError::BadRequest(
                "'external_id' and 'user_alias' must be non-empty".into(),
            )
            .into());
        }
    }
    for entry in &req.emails_to_identify {
        if entry.external_id.is_empty() || entry.email.as_deref().is_none_or(str::is_empty) {
            return Err(
                ApiError::BadRequest("'external_id' and 'email' must be non-empty".into()).into(),
            );
        }
    }
    for entry in &req.phone_numbers_to_identify {
        if entry.external_id.is_empty() || entry.phone.as_deref().is_none_or(str::is_empty) {
            return Err(
                ApiError::BadRequest("'external_id' and 'phone' must be non-empty".into()).into(),
            );
        }
    }
    let n = mutate_count(&state, Mutation::Identify(ws, req)).await?;
    Ok(aliases_processed(n))
}

/// `POST /users/alias/new`.
pub async fn alias_new(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(&state, &headers, q.as_deref(), &bytes, "users.alias.new")?;
    let req: AliasNewRequest = parse(&bytes)?;
    if req.user_aliases.len() > MAX_IDS {
        return Err(ApiError::TooManyIds.into());
    }
    for alias in &req.user_aliases {
        if alias.alias_name.is_empty() || alias.alias_label.is_empty() {
            return Err(ApiError::BadRequest(
                "'alias_name' and 'alias_label' must be non-empty strings".into(),
            )
            .into());
        }
    }
    let n = mutate_count(&state, Mutation::AliasNew(ws, req)).await?;
    Ok(aliases_processed(n))
}

/// `POST /users/alias/update`.
pub async fn alias_update(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(&state, &headers, q.as_deref(), &bytes, "users.alias.update")?;
    let req: AliasUpdateRequest = parse(&bytes)?;
    if req.alias_updates.len() > MAX_IDS {
        return Err(ApiError::TooManyIds.into());
    }
    for update in &req.alias_updates {
        if update.alias_label.is_empty()
            || update.old_alias_name.is_empty()
            || update.new_alias_name.is_empty()
        {
            return Err(ApiError::BadRequest(
                "'alias_label', 'old_alias_name' and 'new_alias_name' must be non-empty strings"
                    .into(),
            )
            .into());
        }
    }
    let n = mutate_count(&state, Mutation::AliasUpdate(ws, req)).await?;
    Ok(aliases_processed(n))
}

/// `POST /users/delete`.
pub async fn delete(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(&state, &headers, q.as_deref(), &bytes, "users.delete")?;
    let req: DeleteRequest = parse(&bytes)?;
    let total = req.external_ids.len()
        + req.user_aliases.len()
        + req.braze_ids.len()
        + req.email_addresses.len()
        + req.phone_numbers.len();
    if total == 0 {
        return Err(ApiError::BadRequest(
            "one of 'external_ids', 'user_aliases', 'braze_ids', 'email_addresses' or 'phone_numbers' is required".into(),
        )
        .into());
    }
    if total > MAX_IDS {
        return Err(ApiError::TooManyIds.into());
    }
    let n = mutate_count(&state, Mutation::Delete(ws, req)).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"deleted": n, "message": "success"}),
    ))
}

const MERGE_NOT_ARRAY: &str = "'merge_updates' must be an array of objects";
const MERGE_TOO_MANY: &str = "a single request may not contain more than 50 merge updates";
const MERGE_KEYS: &str =
    "'merge_updates' must only have 'identifier_to_merge' and 'identifier_to_keep'";
const MERGE_IDENTIFIER: &str = "identifiers must be objects with an 'external_id' property that is a string, 'user_alias' property that is an object, 'email' property that is a string, or 'phone' property that is a string";

/// `POST /users/merge`, with Braze's exact 400 texts.
pub async fn merge(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(&state, &headers, q.as_deref(), &bytes, "users.merge")?;
    let req: Value = parse(&bytes)?;
    let pairs = parse_merge(&req).map_err(|m| ApiError::BadRequest(m.into()))?;
    mutate(&state, Mutation::Merge(ws, pairs)).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"message": "success"}),
    ))
}

fn parse_merge(req: &Value) -> Result<Vec<(Lookup, Lookup)>, &'static str> {
    let Some(Value::Array(updates)) = req.get("merge_updates") else {
        return Err(MERGE_NOT_ARRAY);
    };
    if updates.len() > MAX_IDS {
        return Err(MERGE_TOO_MANY);
    }
    let mut pairs = Vec::with_capacity(updates.len());
    for update in updates {
        let Value::Object(map) = update else {
            return Err(MERGE_NOT_ARRAY);
        };
        if map.len() != 2
            || !map.contains_key("identifier_to_merge")
            || !map.contains_key("identifier_to_keep")
        {
            return Err(MERGE_KEYS);
        }
        let gone = merge_identifier(&map["identifier_to_merge"]).ok_or(MERGE_IDENTIFIER)?;
        let keep = merge_identifier(&map["identifier_to_keep"]).ok_or(MERGE_IDENTIFIER)?;
        pairs.push((gone, keep));
    }
    Ok(pairs)
}

fn merge_identifier(value: &Value) -> Option<Lookup> {
    let map = value.as_object()?;
    let prioritization: Vec<String> = match map.get("prioritization") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()?,
        Some(_) => return None,
    };
    let ident = if let Some(v) = map.get("external_id") {
        Identifier::ExternalId(v.as_str().filter(|s| !s.is_empty())?.to_string())
    } else if let Some(v) = map.get("user_alias") {
        if !v.is_object() {
            return None;
        }
        Identifier::Alias(parse_alias(v).ok()?)
    } else if let Some(v) = map.get("email") {
        Identifier::Email(v.as_str()?.to_ascii_lowercase())
    } else if let Some(v) = map.get("phone") {
        Identifier::Phone(v.as_str()?.to_string())
    } else {
        return None;
    };
    Some(Lookup {
        ident,
        prioritization,
    })
}

/// `POST /users/export/ids`.
pub async fn export_ids(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(&state, &headers, q.as_deref(), &bytes, "users.export.ids")?;
    let req: ExportIdsRequest = parse(&bytes)?;
    if req.external_ids.len() + req.user_aliases.len() > MAX_IDS {
        return Err(ApiError::TooManyIds.into());
    }
    let fields = req.fields_to_export.as_deref();
    let mut users = Vec::new();
    let mut seen = Vec::new();
    let mut invalid = Vec::new();
    let mut push = |found: Option<(u32, eddy_model::profile::Profile)>| {
        if let Some((id, profile)) = found
            && !seen.contains(&id)
        {
            seen.push(id);
            users.push(profile.export(fields));
            return true;
        }
        false
    };
    for ext in &req.external_ids {
        if !push(
            state
                .store
                .find(ws.id, &Identifier::ExternalId(ext.clone()))?,
        ) {
            invalid.push(ext.clone());
        }
    }
    for alias in &req.user_aliases {
        push(state.store.find(ws.id, &Identifier::Alias(alias.clone()))?);
    }
    if let Some(id) = &req.braze_id {
        push(state.store.find(ws.id, &Identifier::BrazeId(id.clone()))?);
    }
    if let Some(email) = &req.email_address {
        push(
            state
                .store
                .find(ws.id, &Identifier::Email(email.to_ascii_lowercase()))?,
        );
    }
    if let Some(phone) = &req.phone {
        push(state.store.find(ws.id, &Identifier::Phone(phone.clone()))?);
    }
    if let Some(device) = &req.device_id {
        push(state.store.find_device(ws.id, device)?);
    }
    let mut body = json!({"message": "success", "users": users});
    if !invalid.is_empty() {
        body["invalid_user_ids"] = json!(invalid);
    }
    Ok(json_response(StatusCode::CREATED, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_texts() {
        assert_eq!(parse_merge(&json!({})).unwrap_err(), MERGE_NOT_ARRAY);
        assert_eq!(
            parse_merge(&json!({"merge_updates": [1]})).unwrap_err(),
            MERGE_NOT_ARRAY
        );
        let many: Vec<Value> = (0..51)
            .map(|_| json!({"identifier_to_merge": {"external_id": "a"}, "identifier_to_keep": {"external_id": "b"}}))
            .collect();
        assert_eq!(
            parse_merge(&json!({"merge_updates": many})).unwrap_err(),
            MERGE_TOO_MANY
        );
        let extra = json!({"merge_updates": [{"identifier_to_merge": {"external_id": "a"}, "identifier_to_keep": {"external_id": "b"}, "x": 1}]});
        assert_eq!(parse_merge(&extra).unwrap_err(), MERGE_KEYS);
        let bad = json!({"merge_updates": [{"identifier_to_merge": {"external_id": 1}, "identifier_to_keep": {"external_id": "b"}}]});
        assert_eq!(parse_merge(&bad).unwrap_err(), MERGE_IDENTIFIER);
        let ok = json!({"merge_updates": [{"identifier_to_merge": {"email": "A@b.co", "prioritization": ["unidentified"]},
                                           "identifier_to_keep": {"user_alias": {"alias_name": "n", "alias_label": "l"}}}]});
        let pairs = parse_merge(&ok).unwrap();
        assert_eq!(pairs[0].0.ident, Identifier::Email("a@b.co".into()));
        assert_eq!(pairs[0].0.prioritization, vec!["unidentified".to_string()]);
    }
}
