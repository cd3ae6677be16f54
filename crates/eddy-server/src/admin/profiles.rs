//! The admin view of stored profiles: find users by any identifier or page through them, and
//! read one whole profile (the dashboard builds on these).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use eddy_model::track::{Identifier, normalize_email};
use eddy_model::wire::UserAlias;
use eddy_model::{ApiError, time};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{AdminWorkspace, JsonBody};
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
    let memberships = memberships_of(&state, ws.id, id).await?;
    let segments = segments_of(&state, ws.id, &profile, &memberships)?;
    let cohorts = cohorts_json(&state, ws.id, memberships)?;
    let mut body = profile.export(None);
    body["id"] = json!(id);
    body["created_at"] = json!(time::format_iso(profile.created_at));
    body["cohorts"] = cohorts;
    body["merged"] = json!(profile
        .merged
        .iter()
        .map(|m| json!({"braze_id": m.braze_id, "external_id": m.external_id, "merged_at": time::format_iso(m.at_ms)}))
        .collect::<Vec<_>>());
    body["segments"] = segments;
    Ok(json_response(StatusCode::OK, &body))
}

/// The saved segments a profile is in now: each filter tested on this one profile (the
/// per-profile predicate the index is checked against), not evaluated over the workspace.
fn segments_of(
    state: &SharedState,
    ws: u32,
    profile: &eddy_model::profile::Profile,
    memberships: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Value, HttpError> {
    let now = time::now_ms();
    let mut out = Vec::new();
    for segment in state.store.segments(ws)? {
        let filter = crate::segments::parse_filter(&segment.filter)?;
        if eddy_segments::filter::matches(&filter, profile, memberships, now) {
            out.push(json!({"id": segment.id, "name": segment.name}));
        }
    }
    Ok(Value::Array(out))
}

/// The cohorts a profile belongs to (partner → cohort ids), read off the index once it holds
/// every acknowledged write.
async fn memberships_of(
    state: &SharedState,
    ws: u32,
    id: u32,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, HttpError> {
    crate::segments::with_index(state, move |index| {
        index
            .workspace(ws)
            .map(|w| w.memberships(id))
            .unwrap_or_default()
    })
    .await
}

/// Memberships with the cohorts' display names.
fn cohorts_json(
    state: &SharedState,
    ws: u32,
    memberships: std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Value, HttpError> {
    let mut out = Vec::new();
    for (partner, ids) in memberships {
        for cohort_id in ids {
            let name = state
                .store
                .cohort(ws, &partner, &cohort_id)?
                .map(|c| c.name);
            out.push(json!({"partner": partner, "cohort_id": cohort_id, "name": name}));
        }
    }
    Ok(Value::Array(out))
}

/// `DELETE /eddy/v1/workspaces/{ws}/users/{braze_id}`: deletes the user as `/users/delete`
/// does (the same store operation, its Currents event included).
pub async fn delete(
    State(state): State<SharedState>,
    Path((_, braze_id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let request = eddy_model::wire::DeleteRequest {
        braze_ids: vec![braze_id.clone()],
        ..Default::default()
    };
    let deleted = state.store.delete_users(ws, request).await?;
    if deleted == 0 {
        return Err(ApiError::ResourceNotFound(format!("user '{braze_id}'")).into());
    }
    Ok(json_response(StatusCode::OK, &json!({"deleted": deleted})))
}

/// `POST /eddy/v1/workspaces/{ws}/users/merge` with `/users/merge`'s body and checks: the
/// same store operation, for the admin token.
pub async fn merge(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(req): JsonBody<Value>,
) -> Answer {
    let pairs = eddy_model::users::parse_merge(&req)?;
    state.store.merge_users(ws, pairs).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"message": "success"}),
    ))
}

/// How far back `…/users/{braze_id}/events` looks: the newest outbox entries of all workspaces.
const RECENT_EVENTS_WINDOW: u64 = 20_000;

/// `GET /eddy/v1/workspaces/{ws}/users/{braze_id}/events`: the user's Currents events among the
/// newest outbox entries (what connectors deliver), newest first, at most 100.
pub async fn events(
    State(state): State<SharedState>,
    Path((_, braze_id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || {
        let head = store.outbox_head()?;
        let from = head.saturating_sub(RECENT_EVENTS_WINDOW);
        let mut found = Vec::new();
        let candidates =
            store.outbox_containing(from, RECENT_EVENTS_WINDOW as usize, braze_id.as_bytes())?;
        for (seq, entry) in candidates {
            if entry.get("ws").and_then(Value::as_u64) != Some(u64::from(ws.id)) {
                continue;
            }
            let record = entry.get("record").cloned().unwrap_or(Value::Null);
            if record.get("user_id").and_then(Value::as_str) != Some(braze_id.as_str()) {
                continue;
            }
            found.push(json!({"seq": seq, "type": entry.get("type"),
                              "at": entry.get("at").and_then(Value::as_i64).map(time::format_iso),
                              "record": record}));
        }
        found.reverse();
        found.truncate(100);
        Ok::<_, eddy_store::StoreError>(found)
    })
    .await
    .map_err(|_| HttpError(ApiError::Internal))??;
    Ok(json_response(StatusCode::OK, &json!({"events": found})))
}
