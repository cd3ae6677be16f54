//! The admin API under `/eddy/v1` (admin token): workspaces, API keys and usage in this file;
//! Currents connectors ([`currents`]), Liquid and Connected Content ([`liquid`]), stored
//! profiles ([`profiles`]). Campaigns, dispatches and segments are with their Braze side
//! (`crate::braze`).

pub mod currents;
pub mod liquid;
pub mod profiles;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_model::ApiError;
use eddy_model::usage::Points;
use eddy_model::wire::PERMISSIONS;
use eddy_store::meta::{ExportStorage, Partner};
use eddy_store::{ApiKey, Workspace, ids};
use serde::Deserialize;
use serde_json::json;

use crate::SharedState;
use crate::extract::{Admin, AdminWorkspace, JsonBody};
use crate::http::{HttpError, json_response};
type Answer = Result<Response, HttpError>;

fn workspace_json(ws: &Workspace) -> serde_json::Value {
    json!({"id": ws.id, "name": ws.name, "app_group_id": ws.app_group_id, "created_at": eddy_model::time::format_iso(ws.created_at)})
}

/// 404 unless the partner is registered.
fn require_partner(state: &SharedState, partner: &str) -> Result<(), HttpError> {
    match state.store.partner(partner)? {
        Some(_) => Ok(()),
        None => Err(ApiError::ResourceNotFound(format!("partner '{partner}'")).into()),
    }
}

/// A secret could not be made: refuse rather than hand out a predictable one.
fn no_secret(e: ids::RandomnessError) -> HttpError {
    tracing::error!(error = %e, "no secret could be generated");
    HttpError(ApiError::Internal)
}

/// Checks a workspace name: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn valid_workspace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The body of `POST /eddy/v1/workspaces`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    name: String,
}

/// `POST /eddy/v1/workspaces`.
pub async fn create_workspace(
    State(state): State<SharedState>,
    _: Admin,
    JsonBody(req): JsonBody<NewWorkspace>,
) -> Answer {
    if !valid_workspace_name(&req.name) {
        return Err(ApiError::BadRequest(
            "workspace names are 1 to 64 letters, digits, '_' or '-'".into(),
        )
        .into());
    }
    let ws = state.store.create_workspace(&req.name).await?;
    Ok(json_response(StatusCode::CREATED, &workspace_json(&ws)))
}

/// `GET /eddy/v1/workspaces`.
pub async fn list_workspaces(State(state): State<SharedState>, _: Admin) -> Answer {
    let list: Vec<_> = state
        .store
        .workspaces()?
        .iter()
        .map(workspace_json)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"workspaces": list})))
}

/// The body of `POST …/api-keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    name: String,
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

/// `POST /eddy/v1/workspaces/{ws}/api-keys` → `{"id","key"}`; the key is shown only here.
pub async fn create_api_key(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(req): JsonBody<NewApiKey>,
) -> Answer {
    let permissions = match req.permissions {
        None => PERMISSIONS.iter().map(|p| (*p).to_string()).collect(),
        Some(list) => {
            if let Some(unknown) = list.iter().find(|p| !PERMISSIONS.contains(&p.as_str())) {
                return Err(ApiError::BadRequest(format!("unknown permission '{unknown}'")).into());
            }
            list
        }
    };
    let secret = ids::secret_uuid().map_err(no_secret)?;
    let key = ApiKey {
        id: ids::id_hex(8),
        workspace: ws.id,
        name: req.name,
        permissions,
        created_at: eddy_model::time::now_ms(),
        last_used_at: None,
    };
    let id = key.id.clone();
    let permissions = key.permissions.clone();
    state
        .store
        .create_api_key(key, ids::sha256_hex(&secret))
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"id": id, "key": secret, "workspace": ws.name, "permissions": permissions}),
    ))
}

/// `DELETE /eddy/v1/workspaces/{ws}/api-keys/{id}`.
pub async fn delete_api_key(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.store.delete_api_key(ws.id, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /eddy/v1/workspaces/{ws}/usage`: data points per day (billable and not), with the
/// events, purchases and new profiles of each day, and how many profiles there are now.
pub async fn usage(State(state): State<SharedState>, AdminWorkspace(ws): AdminWorkspace) -> Answer {
    let mut total = Points::default();
    let mut days = Vec::new();
    for (day, tally) in state.store.usage(ws.id)? {
        total.add(tally.points);
        let (points, activity) = (tally.points, tally.activity);
        days.push(
            json!({"date": day, "billable": points.billable, "non_billable": points.non_billable,
                         "events": activity.events, "purchases": activity.purchases,
                         "new_profiles": activity.new_profiles}),
        );
    }
    let profiles = crate::segments::profile_count(&state, ws.id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"workspace": ws.name, "days": days, "profiles": profiles,
                "total": {"billable": total.billable, "non_billable": total.non_billable}}),
    ))
}

/// The body of `PUT /eddy/v1/partners/{partner}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutPartner {
    partner_api_key: String,
    #[serde(default)]
    display_name: Option<String>,
}

/// Checks a partner name: 1 to 64 of `a-z 0-9 _ -`.
fn valid_partner_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `PUT /eddy/v1/partners/{partner}` `{"partner_api_key", "display_name"?}`.
pub async fn put_partner(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    _: Admin,
    JsonBody(req): JsonBody<PutPartner>,
) -> Answer {
    if !valid_partner_name(&name) {
        return Err(ApiError::BadRequest(
            "partner names are 1 to 64 of a-z, 0-9, '_' or '-'".into(),
        )
        .into());
    }
    if req.partner_api_key.len() < 8 {
        return Err(
            ApiError::BadRequest("partner_api_key must be at least 8 characters".into()).into(),
        );
    }
    let display_name = req
        .display_name
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| crate::partners::default_display_name(&name));
    let partner = Partner {
        name: name.clone(),
        display_name: display_name.clone(),
        key_hash: ids::sha256_hex(&req.partner_api_key),
    };
    state.store.put_partner(partner).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "display_name": display_name}),
    ))
}

/// `POST /eddy/v1/workspaces/{ws}/partners/{partner}/data-import-key` → 201 `{"key"}`; a new key
/// replaces (invalidates) the previous one.
pub async fn create_data_import_key(
    State(state): State<SharedState>,
    Path((_, partner)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    require_partner(&state, &partner)?;
    let key = ids::secret_uuid().map_err(no_secret)?;
    state
        .store
        .set_data_import_key(ws.id, partner.clone(), ids::sha256_hex(&key))
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"key": key, "workspace": ws.name, "partner": partner}),
    ))
}

/// `DELETE /eddy/v1/workspaces/{ws}/partners/{partner}/data-import-key`: invalidates the key.
pub async fn delete_data_import_key(
    State(state): State<SharedState>,
    Path((_, partner)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.store.clear_data_import_key(ws.id, partner).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The export storage setting as answered: the secret never leaves the server.
fn redacted(storage: &ExportStorage) -> serde_json::Value {
    let mut value = serde_json::to_value(storage).unwrap_or_default();
    if let Some(secret) = value.get_mut("secret_access_key")
        && !secret.is_null()
    {
        *secret = json!("[REDACTED]");
    }
    value
}

/// `PUT /eddy/v1/workspaces/{ws}/export-storage` `{"type":"local"}` or
/// `{"type":"s3","bucket","prefix"?,"region"?,"endpoint"?,"access_key_id"?,"secret_access_key"?}`.
pub async fn put_export_storage(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(storage): JsonBody<ExportStorage>,
) -> Answer {
    if let ExportStorage::S3(settings) = &storage {
        crate::segment_export::s3_store(settings)
            .map_err(|e| ApiError::BadRequest(format!("invalid S3 settings: {e}")))?;
    }
    state
        .store
        .set_export_storage(ws.id, storage.clone())
        .await?;
    Ok(json_response(StatusCode::OK, &redacted(&storage)))
}

/// `GET /eddy/v1/workspaces/{ws}/export-storage`.
pub async fn get_export_storage(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    Ok(json_response(
        StatusCode::OK,
        &redacted(&state.store.export_storage(ws.id)?),
    ))
}

fn api_key_json(key: &ApiKey) -> serde_json::Value {
    let iso = eddy_model::time::format_iso;
    json!({"id": key.id, "name": key.name, "permissions": key.permissions,
           "created_at": iso(key.created_at), "last_used_at": key.last_used_at.map(iso)})
}

/// `GET /eddy/v1/workspaces/{ws}`.
pub async fn get_workspace(AdminWorkspace(ws): AdminWorkspace) -> Answer {
    Ok(json_response(StatusCode::OK, &workspace_json(&ws)))
}

/// The body of `PATCH /eddy/v1/workspaces/{ws}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceChange {
    name: String,
}

/// `PATCH` (or `PUT`) `/eddy/v1/workspaces/{ws}` `{"name"}`: renames the workspace; its keys,
/// profiles and connectors stay (metrics follow the new name).
pub async fn rename_workspace(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(change): JsonBody<WorkspaceChange>,
) -> Answer {
    if !valid_workspace_name(&change.name) {
        return Err(ApiError::BadRequest(
            "workspace names are 1 to 64 letters, digits, '_' or '-'".into(),
        )
        .into());
    }
    let renamed = state.store.rename_workspace(&ws.name, &change.name).await?;
    tracing::info!(from = %ws.name, to = %renamed.name, "workspace renamed");
    Ok(json_response(StatusCode::OK, &workspace_json(&renamed)))
}

/// `DELETE /eddy/v1/workspaces/{ws}` → 204: stops its connectors, then removes the workspace
/// with its API keys, Data Import Keys, cohorts, segments, export storage, connectors,
/// profiles and usage. Answers once everything is gone.
pub async fn delete_workspace(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.currents.stop_workspace(ws.id).await;
    state.store.delete_workspace(&ws.name).await?;
    state.api_log.forget(ws.id);
    tracing::info!(workspace = %ws.name, "workspace deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /eddy/v1/workspaces/{ws}/api-keys`: names, permissions, creation and last use; never a
/// secret (only its hash is stored).
pub async fn list_api_keys(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let keys: Vec<_> = state
        .store
        .api_keys(ws.id)?
        .iter()
        .map(api_key_json)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"api_keys": keys})))
}

/// `GET /eddy/v1/workspaces/{ws}/api-keys/{id}`.
pub async fn get_api_key(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let key = state
        .store
        .api_keys(ws.id)?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::ResourceNotFound(format!("api key '{id}'")))?;
    Ok(json_response(StatusCode::OK, &api_key_json(&key)))
}

fn partner_json(partner: &Partner) -> serde_json::Value {
    json!({"name": partner.name, "display_name": partner.display_name})
}

/// `GET /eddy/v1/partners`: registered partners (never their keys).
pub async fn list_partners(State(state): State<SharedState>, _: Admin) -> Answer {
    let partners: Vec<_> = state.store.partners()?.iter().map(partner_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"partners": partners}),
    ))
}

/// `GET /eddy/v1/partners/{partner}`.
pub async fn get_partner(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    _: Admin,
) -> Answer {
    let partner = state
        .store
        .partner(&name)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("partner '{name}'")))?;
    Ok(json_response(StatusCode::OK, &partner_json(&partner)))
}

/// `DELETE /eddy/v1/partners/{partner}`: removes it and invalidates its Data Import Keys.
pub async fn delete_partner(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    _: Admin,
) -> Answer {
    state.store.delete_partner(name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /eddy/v1/workspaces/{ws}/partners/{partner}/data-import-key`: whether one exists and
/// when it was made (the key itself is shown only when generated).
pub async fn get_data_import_key(
    State(state): State<SharedState>,
    Path((_, partner)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    require_partner(&state, &partner)?;
    let record = state.store.data_import_key_of(ws.id, &partner)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"workspace": ws.name, "partner": partner, "exists": record.is_some(),
                "created_at": record.and_then(|r| r.created_at).map(eddy_model::time::format_iso)}),
    ))
}

/// `DELETE /eddy/v1/workspaces/{ws}/export-storage`: exports go to the local directory again.
pub async fn delete_export_storage(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state
        .store
        .set_export_storage(ws.id, ExportStorage::Local)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /eddy/v1/workspaces/{ws}/cohorts`: the cohorts partners imported, with their sizes now.
pub async fn list_cohorts(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let cohorts = state.store.cohorts(ws.id)?;
    let ws_id = ws.id;
    let sizes = crate::segments::with_index(&state, move |index| {
        let workspace = index.workspace(ws_id);
        cohorts
            .into_iter()
            .map(|c| {
                let size = workspace
                    .and_then(|w| w.cohort_bitmap(&c.partner, &c.cohort_id))
                    .map_or(0, |b| b.len());
                (c, size)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    let list: Vec<_> = sizes
        .iter()
        .map(|(c, size)| {
            json!({"partner": c.partner, "cohort_id": c.cohort_id, "name": c.name, "size": size,
                   "created_at": c.created_at,
                   "imported_at": eddy_model::time::format_iso(c.imported_at),
                   "changed_at": c.changed_at.map(eddy_model::time::format_iso)})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"cohorts": list})))
}
