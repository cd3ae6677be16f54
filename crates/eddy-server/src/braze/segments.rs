//! Segments: admin definitions with exact sizes, and Braze's `/segments/list` and
//! `/segments/details`. The export of a segment's members is [`crate::segment_export`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_model::{ApiError, time};
use eddy_segments::Filter;
use eddy_store::ids;
use eddy_store::meta::Segment;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{AdminWorkspace, JsonBody, Rest, SegmentsDetails, SegmentsList};
use crate::http::{HttpError, json_response};

type Answer = Result<Response, HttpError>;

/// Runs `read` on the segment index once it holds every write acknowledged before the call.
/// Waiting for the index and walking bitmaps is blocking work, so it runs off the async workers.
pub(crate) async fn with_index<T: Send + 'static>(
    state: &SharedState,
    read: impl FnOnce(&eddy_segments::Index) -> T + Send + 'static,
) -> Result<T, HttpError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || read(&store.index()))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading the segment index failed");
            HttpError(ApiError::Internal)
        })
}

/// The members of a segment now.
pub(crate) async fn members(
    state: &SharedState,
    ws: u32,
    filter: Filter,
    now_ms: i64,
) -> Result<roaring::RoaringBitmap, HttpError> {
    with_index(state, move |index| {
        index
            .workspace(ws)
            .map(|w| w.eval(&filter, now_ms))
            .unwrap_or_default()
    })
    .await
}

/// How many profiles a workspace holds now (every write acknowledged before included).
pub(crate) async fn profile_count(state: &SharedState, ws: u32) -> Result<u64, HttpError> {
    with_index(state, move |index| {
        index.workspace(ws).map_or(0, |w| w.all().len())
    })
    .await
}

/// The exact size of a segment now.
async fn size(state: &SharedState, ws: u32, filter: Filter) -> Result<u64, HttpError> {
    Ok(members(state, ws, filter, time::now_ms()).await?.len())
}

pub(crate) fn parse_filter(value: &Value) -> Result<Filter, HttpError> {
    Filter::parse(value).map_err(|e| ApiError::BadRequest(e.to_string()).into())
}

fn segment_json(segment: &Segment, size: u64) -> Value {
    json!({"id": segment.id, "name": segment.name, "filter": segment.filter, "size": size,
           "created_at": time::format_iso(segment.created_at)})
}

/// The body of `POST …/segments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSegment {
    name: String,
    filter: Value,
}

/// `POST /eddy/v1/workspaces/{ws}/segments` → 201 `{"id", "size"}`.
pub async fn create(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(req): JsonBody<NewSegment>,
) -> Answer {
    let filter = check_segment(&req)?;
    let segment = Segment {
        id: ids::uuid_v4(),
        name: req.name,
        filter: req.filter,
        created_at: time::now_ms(),
    };
    state.store.put_segment(ws.id, segment.clone()).await?;
    let size = size(&state, ws.id, filter).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &segment_json(&segment, size),
    ))
}

/// The body of `POST …/segments/size`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeQuestion {
    filter: Value,
}

/// `POST /eddy/v1/workspaces/{ws}/segments/size` `{"filter"}` → `{"size"}`: the exact size a
/// filter has now, without saving it (the dashboard's builder asks as the user edits).
pub async fn preview_size(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(req): JsonBody<SizeQuestion>,
) -> Answer {
    let filter = parse_filter(&req.filter)?;
    let size = size(&state, ws.id, filter).await?;
    Ok(json_response(StatusCode::OK, &json!({"size": size})))
}

/// The checks of a segment body, for creation and update alike.
fn check_segment(req: &NewSegment) -> Result<Filter, HttpError> {
    if req.name.trim().is_empty() {
        return Err(ApiError::BadRequest("segment names must be non-empty".into()).into());
    }
    eddy_model::limits::check_name("name", &req.name).map_err(ApiError::BadRequest)?;
    parse_filter(&req.filter)
}

/// `GET /eddy/v1/workspaces/{ws}/segments` → every segment with its exact size, oldest first.
pub async fn list_admin(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let mut out = Vec::new();
    for segment in state.store.segments(ws.id)? {
        let filter = parse_filter(&segment.filter)?;
        let size = size(&state, ws.id, filter).await?;
        out.push(segment_json(&segment, size));
    }
    Ok(json_response(StatusCode::OK, &json!({"segments": out})))
}

/// `PUT /eddy/v1/workspaces/{ws}/segments/{id}` `{"name","filter"}`: same checks as creation;
/// the id and creation time stay.
pub async fn update(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(req): JsonBody<NewSegment>,
) -> Answer {
    let current = state
        .store
        .segment(ws.id, &id)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("segment '{id}'")))?;
    let filter = check_segment(&req)?;
    let segment = Segment {
        id: current.id,
        name: req.name,
        filter: req.filter,
        created_at: current.created_at,
    };
    state.store.put_segment(ws.id, segment.clone()).await?;
    let size = size(&state, ws.id, filter).await?;
    Ok(json_response(StatusCode::OK, &segment_json(&segment, size)))
}

/// `GET /eddy/v1/workspaces/{ws}/segments/{id}` → `{"id","name","filter","size"}`.
pub async fn get(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let segment = state
        .store
        .segment(ws.id, &id)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("segment '{id}'")))?;
    let filter = parse_filter(&segment.filter)?;
    let size = size(&state, ws.id, filter).await?;
    Ok(json_response(StatusCode::OK, &segment_json(&segment, size)))
}

/// `DELETE /eddy/v1/workspaces/{ws}/segments/{id}`.
pub async fn delete(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.store.delete_segment(ws.id, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /segments/list?page=&sort_direction=` (100 per page, by creation time).
pub async fn list(State(state): State<SharedState>, rest: Rest<SegmentsList>) -> Answer {
    let ws = &rest.workspace;
    let page: usize = match rest.query_param("page") {
        Some(p) => p
            .parse()
            .map_err(|_| ApiError::BadRequest("page must be a non-negative integer".into()))?,
        None => 0,
    };
    let mut segments = state.store.segments(ws.id)?;
    match rest.query_param("sort_direction").as_deref() {
        None | Some("asc") => {}
        Some("desc") => segments.reverse(),
        Some(_) => {
            return Err(ApiError::BadRequest("sort_direction must be asc or desc".into()).into());
        }
    }
    let items: Vec<Value> = segments
        .iter()
        .skip(page.saturating_mul(100))
        .take(100)
        .map(|s| json!({"id": s.id, "name": s.name, "analytics_tracking_enabled": false, "tags": []}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"message": "success", "segments": items}),
    ))
}

/// `GET /segments/details?segment_id=`.
pub async fn details(State(state): State<SharedState>, rest: Rest<SegmentsDetails>) -> Answer {
    let ws = &rest.workspace;
    let Some(id) = rest.query_param("segment_id") else {
        return Err(ApiError::BadRequest("segment_id is required".into()).into());
    };
    let segment = state
        .store
        .segment(ws.id, &id)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("segment '{id}'")))?;
    let created = time::format_iso(segment.created_at);
    Ok(json_response(
        StatusCode::OK,
        &json!({"message": "success", "name": segment.name, "description": "",
                "text_description": segment.filter.to_string(), "created_at": created, "updated_at": created,
                "tags": [], "teams": []}),
    ))
}
