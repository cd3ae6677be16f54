//! Currents over HTTP: connectors in the admin API, and `POST /currents/events` for producers
//! (a messaging system routing email, push, SMS, … events through eddy).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_currents::catalogue;
use eddy_currents::connector::CreateRequest;
use eddy_model::ApiError;
use eddy_model::currents::OutboxEvent;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{AdminWorkspace, CurrentsEvents, JsonBody, Rest};
use crate::http::{HttpError, json_response};
type Answer = Result<Response, HttpError>;

/// How long flush and test wait for the sink before answering 202 with the connector's state.
const SINK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const STILL_WRITING: &str = "the sink did not answer within 3 s; the connector keeps retrying in the background (see state and last_error)";

/// Most events in one `POST /currents/events`.
const MAX_EVENTS: usize = 1000;

/// `POST /eddy/v1/workspaces/{ws}/currents` → 201 with the connector's status.
pub async fn create(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(request): JsonBody<CreateRequest>,
) -> Answer {
    let connector = state.currents.create(ws.id, request).await?;
    // On a node that does not lead, the connector runs elsewhere: its stored state answers.
    let status = state
        .currents
        .describe(ws.id, &connector.name)?
        .unwrap_or_default();
    Ok(json_response(StatusCode::CREATED, &status))
}

/// `GET /eddy/v1/workspaces/{ws}/currents` → every connector's status (secrets never shown).
pub async fn list(State(state): State<SharedState>, AdminWorkspace(ws): AdminWorkspace) -> Answer {
    let connectors = state.currents.list(ws.id)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"connectors": connectors}),
    ))
}

/// `GET /eddy/v1/workspaces/{ws}/currents/{name}` → state, delivered, pending, dropped, last error.
pub async fn get(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let status = state
        .currents
        .describe(ws.id, &name)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("connector '{name}'")))?;
    Ok(json_response(StatusCode::OK, &status))
}

/// `PUT /eddy/v1/workspaces/{ws}/currents/{name}`: new settings, checked as at creation; the
/// cursor stays, so delivery goes on from where it was.
pub async fn update(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(request): JsonBody<CreateRequest>,
) -> Answer {
    state.currents.update(ws.id, &name, request).await?;
    let status = state.currents.describe(ws.id, &name)?.unwrap_or_default();
    Ok(json_response(StatusCode::OK, &status))
}

/// `DELETE /eddy/v1/workspaces/{ws}/currents/{name}`: stops the connector and forgets it.
pub async fn delete(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.currents.delete(ws.id, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /eddy/v1/workspaces/{ws}/currents/{name}/pause`.
pub async fn pause(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.currents.set_paused(ws.id, &name, true).await?;
    let status = state.currents.describe(ws.id, &name)?.unwrap_or_default();
    Ok(json_response(StatusCode::OK, &status))
}

/// `POST /eddy/v1/workspaces/{ws}/currents/{name}/resume`.
pub async fn resume(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.currents.set_paused(ws.id, &name, false).await?;
    let status = state.currents.describe(ws.id, &name)?.unwrap_or_default();
    Ok(json_response(StatusCode::OK, &status))
}

/// Marks a request one node carried to the leader: the leader answers it itself, and a node
/// that no longer leads answers 503 rather than carry it again.
const CARRIED: &str = "x-eddy-carried";

/// Whether a request for what only the leader does must be carried to another node.
fn for_the_leader(state: &SharedState, headers: &HeaderMap) -> bool {
    let leads_here = state
        .leading
        .as_ref()
        .is_none_or(|leading| leading.load(std::sync::atomic::Ordering::SeqCst));
    !leads_here && !headers.contains_key(CARRIED)
}

/// Sends an admin API request to the node that leads (where the connector runs) and answers
/// with its answer as it is; the admin token goes with it, as nodes of one cluster share it.
async fn carry(
    state: &SharedState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: Option<&Value>,
) -> Answer {
    let leader = state.store.leader_url()?.ok_or_else(|| {
        ApiError::NotLeader(
            "no node leads the cluster yet; send the request again in a second".into(),
        )
    })?;
    // The dashboard signs in with a session of this node, which the leader cannot check.
    let Some(token) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::NotLeader(format!(
            "the connector runs on the leader node, {leader}; ask it there"
        ))
        .into());
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut request = state
        .peers
        .post(format!("{leader}{path}"))
        .header(CARRIED, "1")
        .header(header::AUTHORIZATION, token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let unreachable = |e: reqwest::Error| {
        ApiError::NotLeader(format!(
            "the connector runs on the leader node at {leader}, which did not answer: {e}"
        ))
    };
    let answer = request.send().await.map_err(unreachable)?;
    let status = answer.status();
    let bytes = answer.bytes().await.map_err(unreachable)?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// `POST /eddy/v1/workspaces/{ws}/currents/{name}/flush`: writes what is buffered now.
pub async fn flush(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Answer {
    if for_the_leader(&state, &headers) {
        return carry(&state, &headers, &uri, None).await;
    }
    let flushed = tokio::time::timeout(SINK_WAIT, state.currents.flush(ws.id, &name)).await;
    let mut status = state.currents.status(ws.id, &name).unwrap_or_default();
    match flushed {
        Ok(written) => {
            status["flushed"] = json!(written?);
            Ok(json_response(StatusCode::OK, &status))
        }
        Err(_) => {
            status["flushed"] = Value::Null;
            status["message"] = json!(STILL_WRITING);
            Ok(json_response(StatusCode::ACCEPTED, &status))
        }
    }
}

/// `POST /eddy/v1/workspaces/{ws}/currents/{name}/test`: one placeholder event per selected type.
pub async fn test(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Answer {
    if for_the_leader(&state, &headers) {
        return carry(&state, &headers, &uri, None).await;
    }
    let sent = tokio::time::timeout(SINK_WAIT, state.currents.send_test_events(ws.id, &name)).await;
    match sent {
        Ok(sent) => Ok(json_response(
            StatusCode::OK,
            &json!({"message": "success", "test_events": sent?}),
        )),
        Err(_) => {
            let mut status = state.currents.status(ws.id, &name).unwrap_or_default();
            status["message"] = json!(STILL_WRITING);
            Ok(json_response(StatusCode::ACCEPTED, &status))
        }
    }
}

/// `POST /eddy/v1/workspaces/{ws}/currents/{name}/replay` `{"from": time}`: delivers again every
/// event queued since then that the outbox still holds.
pub async fn replay(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    uri: axum::http::Uri,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Answer {
    if for_the_leader(&state, &headers) {
        return carry(&state, &headers, &uri, Some(&body)).await;
    }
    // A date or time as Braze accepts them, or epoch seconds.
    let from = match body.get("from") {
        Some(Value::String(text)) => eddy_model::time::parse_time(text),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11)
            .map(|s| (s * 1000.0) as i64),
        _ => None,
    };
    let Some(from) = from else {
        return Err(
            ApiError::BadRequest("'from' must be a date, a time or epoch seconds".into()).into(),
        );
    };
    let seq = state.currents.replay(ws.id, &name, from).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"message": "success", "from_sequence": seq}),
    ))
}

/// `POST /currents/events` `{"events": [{"event_type", "record"}]}` (permission `currents.events`):
/// each record is checked against its event type's schema; valid ones enter the outbox durably.
pub async fn events(State(state): State<SharedState>, rest: Rest<CurrentsEvents>) -> Answer {
    let body: Value = rest.json()?;
    rest.processed(body["events"].as_array().map_or(0, Vec::len));
    let ws = rest.workspace;
    let Some(Value::Array(items)) = body.get("events") else {
        return Err(ApiError::BadRequest(
            "'events' must be an array of {\"event_type\", \"record\"} objects".into(),
        )
        .into());
    };
    if items.len() > MAX_EVENTS {
        return Err(
            ApiError::BadRequest(format!("at most {MAX_EVENTS} events per request")).into(),
        );
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match check_event(item) {
            Ok(event) => valid.push(event),
            Err(message) => errors.push(json!({"type": message, "index": index})),
        }
    }
    if valid.is_empty() {
        return Ok(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": "no valid events", "errors": errors}),
        ));
    }
    let n = valid.len();
    state.store.emit(ws.id, valid, None).await?;
    let mut answer = json!({"message": "success", "events_processed": n});
    if !errors.is_empty() {
        answer["errors"] = json!(errors);
    }
    Ok(json_response(StatusCode::CREATED, &answer))
}

fn check_event(item: &Value) -> Result<OutboxEvent, String> {
    let Some(event_type) = item.get("event_type").and_then(Value::as_str) else {
        return Err("'event_type' is required".into());
    };
    let Some(schema) = catalogue::schema(event_type) else {
        return Err(format!("unknown event type '{event_type}'"));
    };
    let Some(Value::Object(record)) = item.get("record") else {
        return Err("'record' must be an object".into());
    };
    schema
        .validate(record)
        .map_err(|e| format!("{event_type}: {e}"))?;
    Ok(OutboxEvent {
        event_type: event_type.to_string(),
        record: record.clone(),
    })
}
