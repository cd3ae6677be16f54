//! The Braze-compatible `/users/*` endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use eddy_messaging::engine::Behaviour;
use eddy_model::time;
use eddy_model::track::{Identifier, validate_track};
use eddy_model::users::{
    parse_merge, validate_alias_new, validate_alias_update, validate_delete, validate_export_ids,
    validate_external_id_remove, validate_external_id_rename, validate_identify,
};
use eddy_model::wire::{
    AliasNewRequest, AliasUpdateRequest, DeleteRequest, ExportIdsRequest, ExternalIdRemoveRequest,
    ExternalIdRenameRequest, ExternalIdsOutcome, IdentifyRequest, TrackRequest,
};
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{
    Rest, UsersAliasNew, UsersAliasUpdate, UsersDelete, UsersExportIds, UsersExternalIdsRemove,
    UsersExternalIdsRename, UsersIdentify, UsersMerge, UsersTrack,
};
use crate::http::{HttpError, json_response};

type Answer = Result<Response, HttpError>;

/// The 201 of identify and the alias endpoints.
fn aliases_processed(n: usize) -> Response {
    json_response(
        StatusCode::CREATED,
        &json!({"aliases_processed": n, "message": "success"}),
    )
}

/// `POST /users/track`.
pub async fn track(State(state): State<SharedState>, rest: Rest<UsersTrack>) -> Answer {
    let req: TrackRequest = rest.json()?;
    let objects = [&req.attributes, &req.events, &req.purchases]
        .iter()
        .map(|list| list.as_ref().map_or(0, Vec::len))
        .sum();
    rest.processed(objects);
    let ws = rest.workspace;
    let batch = validate_track(&req, time::now_ms())?;
    // Only workspaces with conversion campaigns pay for collecting them.
    let behaviours = if state.engine.watches_conversions(ws.id) {
        behaviours(&batch)
    } else {
        Vec::new()
    };
    let response = state.store.track(ws.clone(), batch).await?;
    if !behaviours.is_empty()
        && let Err(e) = state.engine.conversions(&ws, &behaviours).await
    {
        // The track is durable and answered; a conversion that cannot be recorded is logged.
        tracing::error!(error = %e, workspace = ws.name, "cannot record campaign conversions");
    }
    Ok(json_response(StatusCode::CREATED, &json!(response)))
}

/// The custom events and purchases of a batch, as conversion candidates.
fn behaviours(batch: &eddy_model::track::TrackBatch) -> Vec<Behaviour> {
    let mut out = Vec::new();
    for e in &batch.events {
        out.push(Behaviour {
            ident: e.target.ident.clone(),
            event: Some(e.name.clone()),
            product: None,
            time_ms: e.time_ms,
            app_id: e.app_id.clone(),
        });
    }
    for p in &batch.purchases {
        out.push(Behaviour {
            ident: p.target.ident.clone(),
            event: None,
            product: Some(p.product_id.clone()),
            time_ms: p.time_ms,
            app_id: p.app_id.clone(),
        });
    }
    out
}

/// `POST /users/identify`.
pub async fn identify(State(state): State<SharedState>, rest: Rest<UsersIdentify>) -> Answer {
    let req: IdentifyRequest = rest.json()?;
    let ws = rest.workspace;
    validate_identify(&req)?;
    let n = state.store.identify(ws, req).await?;
    Ok(aliases_processed(n))
}

/// `POST /users/alias/new`.
pub async fn alias_new(State(state): State<SharedState>, rest: Rest<UsersAliasNew>) -> Answer {
    let req: AliasNewRequest = rest.json()?;
    let ws = rest.workspace;
    validate_alias_new(&req)?;
    let n = state.store.alias_new(ws, req).await?;
    Ok(aliases_processed(n))
}

/// `POST /users/alias/update`.
pub async fn alias_update(
    State(state): State<SharedState>,
    rest: Rest<UsersAliasUpdate>,
) -> Answer {
    let req: AliasUpdateRequest = rest.json()?;
    let ws = rest.workspace;
    validate_alias_update(&req)?;
    let n = state.store.alias_update(ws, req).await?;
    Ok(aliases_processed(n))
}

/// `POST /users/external_ids/rename`.
pub async fn rename_external_ids(
    State(state): State<SharedState>,
    rest: Rest<UsersExternalIdsRename>,
) -> Answer {
    let req: ExternalIdRenameRequest = rest.json()?;
    let ws = rest.workspace;
    validate_external_id_rename(&req)?;
    let outcome = state.store.rename_external_ids(ws, req).await?;
    Ok(external_ids_answer(
        outcome,
        "external_ids",
        "rename_errors",
    ))
}

/// `POST /users/external_ids/remove`.
pub async fn remove_external_ids(
    State(state): State<SharedState>,
    rest: Rest<UsersExternalIdsRemove>,
) -> Answer {
    let req: ExternalIdRemoveRequest = rest.json()?;
    let ws = rest.workspace;
    validate_external_id_remove(&req)?;
    let outcome = state.store.remove_external_ids(ws, req).await?;
    Ok(external_ids_answer(
        outcome,
        "removed_ids",
        "removal_errors",
    ))
}

/// Braze's answer to a rename or a removal: what was done, and each refused entry as
/// `[index in the request, reason]`.
fn external_ids_answer(outcome: ExternalIdsOutcome, done: &str, errors: &str) -> Response {
    let refused: Vec<Value> = outcome
        .errors
        .into_iter()
        .map(|(index, reason)| json!([index, reason]))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"message": "success", done: outcome.done, errors: refused}),
    )
}

/// `POST /users/delete`.
pub async fn delete(State(state): State<SharedState>, rest: Rest<UsersDelete>) -> Answer {
    let req: DeleteRequest = rest.json()?;
    let ws = rest.workspace;
    validate_delete(&req)?;
    let n = state.store.delete_users(ws, req).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"deleted": n, "message": "success"}),
    ))
}

/// `POST /users/merge`, with Braze's exact 400 texts.
pub async fn merge(State(state): State<SharedState>, rest: Rest<UsersMerge>) -> Answer {
    let req: Value = rest.json()?;
    let ws = rest.workspace;
    let pairs = parse_merge(&req)?;
    state.store.merge_users(ws, pairs).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"message": "success"}),
    ))
}

/// `POST /users/export/ids`.
pub async fn export_ids(State(state): State<SharedState>, rest: Rest<UsersExportIds>) -> Answer {
    let req: ExportIdsRequest = rest.json()?;
    let ws = rest.workspace;
    validate_export_ids(&req)?;
    let fields = req.fields_to_export.as_deref();
    let mut users = Vec::new();
    let mut seen = Vec::new();
    let mut invalid = Vec::new();
    // True when the identifier names a user (listed once, however many identifiers name it).
    let mut push = |found: Option<(u32, eddy_model::profile::Profile)>| {
        let Some((id, profile)) = found else {
            return false;
        };
        if !seen.contains(&id) {
            seen.push(id);
            users.push(profile.export(fields));
        }
        true
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
    // Every identifier that names no user is reported, whatever its kind (an alias by its name).
    for alias in &req.user_aliases {
        if !push(state.store.find(ws.id, &Identifier::Alias(alias.clone()))?) {
            invalid.push(alias.alias_name.clone());
        }
    }
    if let Some(id) = &req.braze_id
        && !push(state.store.find(ws.id, &Identifier::BrazeId(id.clone()))?)
    {
        invalid.push(id.clone());
    }
    if let Some(email) = &req.email_address
        && !push(
            state
                .store
                .find(ws.id, &Identifier::Email(email.to_ascii_lowercase()))?,
        )
    {
        invalid.push(email.clone());
    }
    if let Some(phone) = &req.phone
        && !push(state.store.find(ws.id, &Identifier::Phone(phone.clone()))?)
    {
        invalid.push(phone.clone());
    }
    if let Some(device) = &req.device_id
        && !push(state.store.find_device(ws.id, device)?)
    {
        invalid.push(device.clone());
    }
    let mut body = json!({"message": "success", "users": users});
    if !invalid.is_empty() {
        body["invalid_user_ids"] = json!(invalid);
    }
    Ok(json_response(StatusCode::CREATED, &body))
}
