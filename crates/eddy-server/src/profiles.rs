//! The admin view of stored profiles: find users by any identifier or page through them, and
//! read one whole profile (the dashboard builds on these).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use eddy_model::track::{Identifier, normalize_email};
use eddy_model::wire::UserAlias;
use eddy_model::{ApiError, time};
use eddy_store::Workspace;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::AdminWorkspace;
use crate::http::{HttpError, json_response};

type Answer = Result<Response, HttpError>;

/// Most users per page.
const MAX_PAGE: usize = 200;

/// `GET …/users` parameters.
#[derive(Debug, Deserialize)]
pub struct UsersQuery {
    /// An identifier of any kind: external id, braze id, email, phone, device id, or an alias
    /// as `label:name`. Without it, every user in internal-id order.
    q: Option<String>,
    /// The `next` of the previous page.
    after: Option<u32>,
    /// Users per page [default 50, at most 200].
    limit: Option<usize>,
}

/// A user in a list: its identifiers and when it was created.
fn summary(id: u32, profile: &eddy_model::profile::Profile) -> Value {
    let full = profile.export(None);
    json!({"id": id, "braze_id": profile.braze_id, "external_id": full.get("external_id"),
           "email": full.get("email"), "phone": full.get("phone"),
           "user_aliases": full.get("user_aliases"),
           "created_at": time::format_iso(profile.created_at)})
}

/// Every kind an identifier could be, most specific first.
fn candidates(q: &str) -> Vec<Identifier> {
    let mut out = vec![
        Identifier::ExternalId(q.to_string()),
        Identifier::BrazeId(q.to_string()),
    ];
    if let Some(email) = normalize_email(q) {
        out.push(Identifier::Email(email));
    }
    out.push(Identifier::Phone(q.to_string()));
    if let Some((label, name)) = q.split_once(':') {
        out.push(Identifier::Alias(UserAlias {
            alias_name: name.to_string(),
            alias_label: label.to_string(),
        }));
    }
    out
}

/// `GET /eddy/v1/workspaces/{ws}/users?q=&after=&limit=`.
pub async fn list(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    query: Result<Query<UsersQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let Some(q) = query.q.filter(|q| !q.is_empty()) else {
        let page = state.store.profiles_page(ws.id, query.after, limit)?;
        let next = (page.len() == limit)
            .then(|| page.last().map(|(id, _)| *id))
            .flatten();
        let users: Vec<Value> = page.iter().map(|(id, p)| summary(*id, p)).collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({"users": users, "next": next}),
        ));
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut users = Vec::new();
    for ident in candidates(&q) {
        for (id, profile) in state.store.find_all(ws.id, &ident)? {
            if seen.insert(id) {
                users.push(summary(id, &profile));
            }
        }
    }
    if let Some((id, profile)) = state.store.find_device(ws.id, &q)?
        && seen.insert(id)
    {
        users.push(summary(id, &profile));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"users": users, "next": null}),
    ))
}

/// `GET /eddy/v1/workspaces/{ws}/users/{braze_id}`: the whole profile (standard fields, custom
/// attributes, identifiers, cohorts, events and purchases with counts and first and last times).
pub async fn get(
    State(state): State<SharedState>,
    Path((_, braze_id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let (id, profile) = state
        .store
        .find(ws.id, &Identifier::BrazeId(braze_id.clone()))?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("user '{braze_id}'")))?;
    let cohorts = cohorts_of(&state, &ws, id).await?;
    let mut body = profile.export(None);
    body["id"] = json!(id);
    body["created_at"] = json!(time::format_iso(profile.created_at));
    body["cohorts"] = cohorts;
    Ok(json_response(StatusCode::OK, &body))
}

/// The cohorts a profile belongs to, with their display names, read off the index.
async fn cohorts_of(state: &SharedState, ws: &Workspace, id: u32) -> Result<Value, HttpError> {
    let store = state.store.clone();
    let ws_id = ws.id;
    let memberships = tokio::task::spawn_blocking(move || {
        store
            .index()
            .workspace(ws_id)
            .map(|w| w.memberships(id))
            .unwrap_or_default()
    })
    .await
    .map_err(|_| HttpError(ApiError::Internal))?;
    let mut out = Vec::new();
    for (partner, ids) in memberships {
        for cohort_id in ids {
            let name = state
                .store
                .cohort(ws.id, &partner, &cohort_id)?
                .map(|c| c.name);
            out.push(json!({"partner": partner, "cohort_id": cohort_id, "name": name}));
        }
    }
    Ok(Value::Array(out))
}
