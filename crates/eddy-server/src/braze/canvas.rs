//! Canvas, as Braze's API offers it: `/canvas/trigger/send`, `/canvas/list`, `/canvas/details`;
//! and the admin side: canvas definitions (`docs/canvas.md`). Entering answers 2xx once the
//! users are in the canvas; the leader moves them along from there, across restarts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_messaging::canvas::entries::{self, CanvasTriggerRequest};
use eddy_messaging::canvas::schedule::CanvasScheduleChange;
use eddy_messaging::canvas::{Canvas, CanvasInput, StepKind, stats};
use eddy_messaging::records;
use eddy_model::{ApiError, time};
use eddy_store::ids;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{
    AdminWorkspace, CanvasDataSeries, CanvasDataSummary, CanvasDetails, CanvasList,
    CanvasTriggerScheduleCreate, CanvasTriggerScheduleDelete, CanvasTriggerScheduleUpdate,
    CanvasTriggerSend, JsonBody, ListQuery, Rest,
};
use crate::http::{HttpError, bad, json_response};

type Answer = Result<Response, HttpError>;

/// The channels a step sends on.
fn channels(kind: &StepKind) -> Vec<&'static str> {
    match kind {
        StepKind::Message { messages } => [
            messages.webhook.is_some().then_some("webhook"),
            messages.email.is_some().then_some("email"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        _ => Vec::new(),
    }
}

fn admin_json(canvas: &Canvas) -> Result<Value, HttpError> {
    let mut v = serde_json::to_value(canvas).map_err(|e| {
        tracing::error!(error = %e, canvas_id = canvas.id, "a canvas does not encode");
        HttpError(ApiError::Internal)
    })?;
    v["created_at"] = json!(time::format_iso(canvas.created_at));
    v["updated_at"] = json!(time::format_iso(canvas.updated_at));
    Ok(v)
}

fn admin_canvas(state: &SharedState, ws: u32, id: &str) -> Result<Canvas, HttpError> {
    records::canvas(&state.store, ws, id)?
        .ok_or_else(|| HttpError(ApiError::ResourceNotFound(format!("canvas '{id}'"))))
}

/// `POST /eddy/v1/workspaces/{ws}/canvases` → 201 the canvas with its id and step ids.
pub async fn create_canvas(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(input): JsonBody<CanvasInput>,
) -> Answer {
    let canvas = input.into_canvas(ids::uuid_v4(), None, time::now_ms())?;
    records::put_canvas(&state.store, ws.id, &canvas).await?;
    state.engine.campaigns_changed(ws.id)?;
    Ok(json_response(StatusCode::CREATED, &admin_json(&canvas)?))
}

/// `PUT /eddy/v1/workspaces/{ws}/canvases/{id}`: replaces the definition; steps named by id
/// keep their users.
pub async fn put_canvas(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(input): JsonBody<CanvasInput>,
) -> Answer {
    let existing = admin_canvas(&state, ws.id, &id)?;
    let canvas = input.into_canvas(id, Some(&existing), time::now_ms())?;
    records::put_canvas(&state.store, ws.id, &canvas).await?;
    state.engine.campaigns_changed(ws.id)?;
    Ok(json_response(StatusCode::OK, &admin_json(&canvas)?))
}

/// `GET /eddy/v1/workspaces/{ws}/canvases`.
pub async fn list_canvases(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let list = records::canvases(&state.store, ws.id)?
        .iter()
        .map(admin_json)
        .collect::<Result<Vec<Value>, HttpError>>()?;
    Ok(json_response(StatusCode::OK, &json!({"canvases": list})))
}

/// `GET /eddy/v1/workspaces/{ws}/canvases/{id}`: the definition, and how many users wait at
/// each step (`waiting`, by step id).
pub async fn get_canvas(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let canvas = admin_canvas(&state, ws.id, &id)?;
    let mut answer = admin_json(&canvas)?;
    answer["waiting"] = json!(entries::waiting(&state.store, ws.id, &id)?);
    Ok(json_response(StatusCode::OK, &answer))
}

/// `DELETE /eddy/v1/workspaces/{ws}/canvases/{id}`: users still in it leave when next due;
/// sends already made still finish.
pub async fn delete_canvas(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    admin_canvas(&state, ws.id, &id)?;
    records::delete_canvas(&state.store, ws.id, &id).await?;
    state.engine.campaigns_changed(ws.id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /canvas/trigger/send` → 201 `{"dispatch_id", "message"}`.
pub async fn trigger_send(
    State(state): State<SharedState>,
    rest: Rest<CanvasTriggerSend>,
) -> Answer {
    let req: CanvasTriggerRequest = rest.json()?;
    let dispatch_id = state.engine.trigger_canvas(&rest.workspace, req).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"dispatch_id": dispatch_id, "message": "success"}),
    ))
}

/// `POST /canvas/trigger/schedule/create` → 201 `{"dispatch_id", "schedule_id", "message"}`.
pub async fn schedule_create(
    State(state): State<SharedState>,
    rest: Rest<CanvasTriggerScheduleCreate>,
) -> Answer {
    let body: Value = rest.json()?;
    let (dispatch_id, schedule_id) = state.engine.schedule_canvas(&rest.workspace, body).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"dispatch_id": dispatch_id, "schedule_id": schedule_id, "message": "success"}),
    ))
}

/// `POST /canvas/trigger/schedule/update`.
pub async fn schedule_update(
    State(state): State<SharedState>,
    rest: Rest<CanvasTriggerScheduleUpdate>,
) -> Answer {
    let change: CanvasScheduleChange = rest.json()?;
    state
        .engine
        .reschedule_canvas(&rest.workspace, change)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// `POST /canvas/trigger/schedule/delete`.
pub async fn schedule_delete(
    State(state): State<SharedState>,
    rest: Rest<CanvasTriggerScheduleDelete>,
) -> Answer {
    let change: CanvasScheduleChange = rest.json()?;
    state
        .engine
        .unschedule_canvas(&rest.workspace, change)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// `GET /canvas/list`: 100 a page, Braze's filters and order.
pub async fn list(State(state): State<SharedState>, rest: Rest<CanvasList>) -> Answer {
    let query = ListQuery::read(&rest)?;
    let mut canvases = records::canvases(&state.store, rest.workspace.id)?;
    canvases.retain(|c| query.keeps(c.archived, c.updated_at));
    canvases.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let items: Vec<Value> = query
        .page_of(canvases)
        .iter()
        .map(|c| {
            json!({"id": c.id, "last_edited": time::format_iso(c.updated_at), "name": c.name,
                   "tags": c.tags})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"canvases": items, "message": "success"}),
    ))
}

/// The canvas and the days a data endpoint asks for (Braze's `canvas_id`, `ending_at`,
/// `starting_at` or `length`), and whether it wants each step's figures.
fn data_request<P>(
    state: &SharedState,
    rest: &Rest<P>,
) -> Result<(Canvas, Vec<String>, bool), HttpError> {
    let Some(id) = rest.query_param("canvas_id") else {
        return Err(bad("canvas_id is required"));
    };
    let Some(canvas) = records::canvas(&state.store, rest.workspace.id, &id)? else {
        return Err(bad(format!(
            "canvas_id '{id}' is not a canvas of this workspace"
        )));
    };
    let when = |name: &str| -> Result<Option<i64>, HttpError> {
        match rest.query_param(name) {
            None => Ok(None),
            Some(t) => time::parse_time(&t)
                .map(Some)
                .ok_or_else(|| bad(format!("{name} '{t}' is not an ISO 8601 time"))),
        }
    };
    let ending_at = when("ending_at")?.unwrap_or_else(time::now_ms);
    let length = match rest.query_param("length") {
        None => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| bad(format!("length '{l}' is not a number of days")))?,
        ),
    };
    let days = stats::days(ending_at, when("starting_at")?, length)?;
    let steps = rest.query_param("include_step_breakdown").as_deref() == Some("true");
    Ok((canvas, days, steps))
}

/// `GET /canvas/data_series`: entries (and with `include_step_breakdown`, what each message
/// step sent) per UTC day.
pub async fn data_series(State(state): State<SharedState>, rest: Rest<CanvasDataSeries>) -> Answer {
    let (canvas, days, steps) = data_request(&state, &rest)?;
    let body = stats::series(&state.store, rest.workspace.id, &canvas, &days, steps)?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /canvas/data_summary`: the same figures added up over the days.
pub async fn data_summary(
    State(state): State<SharedState>,
    rest: Rest<CanvasDataSummary>,
) -> Answer {
    let (canvas, days, steps) = data_request(&state, &rest)?;
    let body = stats::summary(&state.store, rest.workspace.id, &canvas, &days, steps)?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /canvas/details?canvas_id=`.
pub async fn details(State(state): State<SharedState>, rest: Rest<CanvasDetails>) -> Answer {
    let Some(id) = rest.query_param("canvas_id") else {
        return Err(bad("canvas_id is required"));
    };
    let Some(canvas) = records::canvas(&state.store, rest.workspace.id, &id)? else {
        return Err(bad(format!(
            "canvas_id '{id}' is not a canvas of this workspace"
        )));
    };
    let mut all_channels: Vec<&str> = canvas
        .steps
        .iter()
        .flat_map(|s| channels(&s.kind))
        .collect();
    all_channels.sort_unstable();
    all_channels.dedup();
    let steps: Vec<Value> = canvas
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let next: Vec<&str> = canvas.steps.get(i + 1).map(|n| n.id.as_str()).into_iter().collect();
            json!({"name": s.name, "id": s.id, "next_step_ids": next, "channels": channels(&s.kind),
                   "type": match s.kind { StepKind::Message { .. } => "message", StepKind::Delay { .. } => "delay", StepKind::Split { .. } => "split" }})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "created_at": time::format_iso(canvas.created_at),
            "updated_at": time::format_iso(canvas.updated_at),
            "name": canvas.name,
            "description": canvas.description,
            "archived": canvas.archived,
            "draft": false,
            "schedule_type": "api_triggered",
            "channels": all_channels,
            "tags": canvas.tags,
            "variants": [{"name": eddy_messaging::dispatch::VARIANT_NAME, "id": canvas.id, "first_step_ids": canvas.steps.first().map(|s| vec![s.id.clone()]).unwrap_or_default()}],
            "steps": steps,
            "message": "success",
        }),
    ))
}
