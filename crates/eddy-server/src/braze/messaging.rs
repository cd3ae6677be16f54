//! Sending, as Braze's API offers it: `/messages/send`, `/campaigns/trigger/send`, the
//! transactional send, send ids, schedules, `/campaigns/list` and `/details`; and the admin side:
//! campaign definitions, a workspace's SMTP relay, dispatch status and a user's message history.
//!
//! Handlers parse, call the send service (`eddy_messaging::send`) and answer; a send answers
//! 2xx once its dispatch (audience included) is committed, and the engine delivers it from
//! there, across restarts.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_messaging::campaign::{Campaign, CampaignInput};
use eddy_messaging::dispatch::{Dispatch, State as DispatchState};
use eddy_messaging::engine::message_name;
use eddy_messaging::library;
use eddy_messaging::send::{
    ScheduleChange, SendRequest, TransactionalRequest, TriggerRequest, When, check_send_id,
};
use eddy_messaging::smtp::{Connection, Relay};
use eddy_messaging::{kinds, records};
use eddy_model::ApiError;
use eddy_model::time;
use eddy_model::track::Identifier;
use eddy_store::ids;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::SharedState;
use crate::extract::{
    AdminWorkspace, CampaignsDetails, CampaignsList, CampaignsTriggerScheduleCreate,
    CampaignsTriggerSend, JsonBody, ListQuery, MessagesScheduleCreate, MessagesScheduledBroadcasts,
    MessagesSend, Permission, Rest, SendsIdCreate, TransactionalSend,
};
use crate::http::{HttpError, bad, json_response};

type Answer = Result<Response, HttpError>;

/// Braze's 201 for a send: the `dispatch_id`, and the `schedule_id` of a scheduled one.
fn accepted(dispatch: &Dispatch) -> Response {
    let mut body = json!({"dispatch_id": dispatch.id, "message": "success"});
    if let Some(schedule_id) = &dispatch.schedule_id {
        body["schedule_id"] = json!(schedule_id);
    }
    json_response(StatusCode::CREATED, &body)
}

fn yes() -> bool {
    true
}

fn success() -> Response {
    json_response(StatusCode::CREATED, &json!({"message": "success"}))
}

fn campaign_of(state: &SharedState, ws: u32, id: &str) -> Result<Campaign, HttpError> {
    Ok(state.engine.campaign(ws, id)?)
}

/// A campaign the admin API names in its path: 404 when the workspace has none of that id.
fn admin_campaign(state: &SharedState, ws: u32, id: &str) -> Result<Campaign, HttpError> {
    records::campaign(&state.store, ws, id)?
        .ok_or_else(|| HttpError(ApiError::ResourceNotFound(format!("campaign '{id}'"))))
}

/// `POST /messages/send` → 201 `{"dispatch_id", "message": "success"}`.
pub async fn messages_send(State(state): State<SharedState>, rest: Rest<MessagesSend>) -> Answer {
    let req: SendRequest = rest.json()?;
    let dispatch = state
        .engine
        .send_messages(&rest.workspace, req, When::Now)
        .await?;
    Ok(accepted(&dispatch))
}

/// `POST /messages/schedule/create` → 201 `{"dispatch_id", "schedule_id", "message"}`.
pub async fn messages_schedule_create(
    State(state): State<SharedState>,
    rest: Rest<MessagesScheduleCreate>,
) -> Answer {
    let req: SendRequest = rest.json()?;
    let dispatch = state
        .engine
        .send_messages(&rest.workspace, req, When::Scheduled)
        .await?;
    Ok(accepted(&dispatch))
}

/// `POST /messages/schedule/update` `{"schedule_id", "schedule"?, "messages"?}` and
/// `POST /campaigns/trigger/schedule/update` `{"campaign_id", "schedule_id", "schedule"}`: the
/// same change, under each endpoint's permission.
pub async fn schedule_update<P: Permission>(
    State(state): State<SharedState>,
    rest: Rest<P>,
) -> Answer {
    let change: ScheduleChange = rest.json()?;
    state
        .engine
        .update_schedule(&rest.workspace, change)
        .await?;
    Ok(success())
}

/// `POST /messages/schedule/delete` `{"schedule_id"}` and `POST
/// /campaigns/trigger/schedule/delete` `{"campaign_id", "schedule_id"}`.
pub async fn schedule_delete<P: Permission>(
    State(state): State<SharedState>,
    rest: Rest<P>,
) -> Answer {
    let change: ScheduleChange = rest.json()?;
    state
        .engine
        .delete_schedule(&rest.workspace, change)
        .await?;
    Ok(success())
}

/// `GET /messages/scheduled_broadcasts?end_time=`: scheduled sends up to `end_time`.
pub async fn scheduled_broadcasts(
    State(state): State<SharedState>,
    rest: Rest<MessagesScheduledBroadcasts>,
) -> Answer {
    let Some(end) = rest.query_param("end_time") else {
        return Err(bad("end_time is required"));
    };
    let end_ms = time::parse_time(&end)
        .ok_or_else(|| bad(format!("end_time '{end}' is not an ISO 8601 time")))?;
    let sends = state.engine.scheduled_sends(rest.workspace.id, end_ms)?;
    let list: Vec<Value> = sends
        .into_iter()
        .map(|send| {
            let dispatch = send.dispatch;
            json!({
                "name": dispatch.campaign_name.clone().unwrap_or_else(|| "API send".into()),
                "dispatch_id": dispatch.id,
                "type": if dispatch.campaign_id.is_some() { "Campaign" } else { "API Campaign" },
                "campaign_id": dispatch.campaign_id,
                "schedule_id": dispatch.schedule_id,
                "send_at": time::format_iso(dispatch.send_at),
                "in_local_time": dispatch.in_local_time,
                "tags": send.tags,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"scheduled_broadcasts": list, "message": "success"}),
    ))
}

/// `POST /campaigns/trigger/send` → 201 `{"dispatch_id", "message": "success"}`.
pub async fn trigger_send(
    State(state): State<SharedState>,
    rest: Rest<CampaignsTriggerSend>,
) -> Answer {
    let req: TriggerRequest = rest.json()?;
    let dispatch = state
        .engine
        .send_trigger(&rest.workspace, req, When::Now)
        .await?;
    Ok(accepted(&dispatch))
}

/// `POST /campaigns/trigger/schedule/create` → 201 `{"dispatch_id", "schedule_id", "message"}`.
pub async fn trigger_schedule_create(
    State(state): State<SharedState>,
    rest: Rest<CampaignsTriggerScheduleCreate>,
) -> Answer {
    let req: TriggerRequest = rest.json()?;
    let dispatch = state
        .engine
        .send_trigger(&rest.workspace, req, When::Scheduled)
        .await?;
    Ok(accepted(&dispatch))
}

/// `POST /transactional/v1/campaigns/{campaign_id}/send` → 201 `{"dispatch_id", "status":
/// "queued", "metadata"}`; a repeated `external_send_id` within 24 h answers the first dispatch
/// and sends nothing.
pub async fn transactional_send(
    State(state): State<SharedState>,
    Path(campaign_id): Path<String>,
    rest: Rest<TransactionalSend>,
) -> Answer {
    let req: TransactionalRequest = rest.json()?;
    let sent = state
        .engine
        .send_transactional(&rest.workspace, &campaign_id, req)
        .await?;
    let mut metadata = json!({});
    if let Some(external) = &sent.external_send_id {
        metadata["external_send_id"] = json!(external);
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"dispatch_id": sent.dispatch_id, "status": "queued", "metadata": metadata}),
    ))
}

/// The body of `/sends/id/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendIdRequest {
    campaign_id: String,
    #[serde(default)]
    send_id: Option<String>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

/// `POST /sends/id/create` → 201 `{"send_id", "message": "success"}`.
pub async fn sends_id_create(
    State(state): State<SharedState>,
    rest: Rest<SendsIdCreate>,
) -> Answer {
    let req: SendIdRequest = rest.json()?;
    campaign_of(&state, rest.workspace.id, &req.campaign_id)?;
    let send_id = req.send_id.clone().unwrap_or_else(|| ids::id_hex(16));
    check_send_id(Some(&send_id), Some(&req.campaign_id))?;
    state
        .store
        .put_object(
            rest.workspace.id,
            kinds::SEND_ID,
            format!("{}/{send_id}", req.campaign_id),
            json!({"created_at": time::now_ms()}),
        )
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"send_id": send_id, "message": "success"}),
    ))
}

fn campaigns(state: &SharedState, ws: u32) -> Result<Vec<Campaign>, HttpError> {
    Ok(records::campaigns(&state.store, ws)?)
}

/// `GET /campaigns/list?page=&include_archived=&sort_direction=&last_edit.time[gt]=`: 100 per
/// page, oldest first unless `sort_direction=desc`.
pub async fn campaigns_list(State(state): State<SharedState>, rest: Rest<CampaignsList>) -> Answer {
    let query = ListQuery::read(&rest)?;
    let mut list = campaigns(&state, rest.workspace.id)?;
    list.retain(|c| query.keeps(c.archived, c.updated_at));
    list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let items: Vec<Value> = query
        .page_of(list)
        .iter()
        .map(|c| {
            json!({"id": c.id, "last_edited": time::format_iso(c.updated_at), "name": c.name,
                        "is_api_campaign": true, "tags": c.tags})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"campaigns": items, "message": "success"}),
    ))
}

/// `GET /campaigns/details?campaign_id=`.
pub async fn campaigns_details(
    State(state): State<SharedState>,
    rest: Rest<CampaignsDetails>,
) -> Answer {
    let Some(id) = rest.query_param("campaign_id") else {
        return Err(bad("campaign_id is required"));
    };
    let campaign = campaign_of(&state, rest.workspace.id, &id)?;
    Ok(json_response(StatusCode::OK, &details(&campaign)))
}

fn details(c: &Campaign) -> Value {
    let mut messages = Map::new();
    if let Some(w) = &c.messages.webhook {
        let variation = eddy_messaging::campaign::variation_id(
            Some(&c.id),
            "webhook",
            w.message_variation_id.as_deref(),
        );
        messages.insert(variation.unwrap_or_default(), json!({"channel": "webhook", "name": "Webhook",
            "url": w.url, "request_method": w.request_method, "body": w.body, "request_headers": w.request_headers}));
    }
    if let Some(e) = &c.messages.email {
        let variation = eddy_messaging::campaign::variation_id(
            Some(&c.id),
            "email",
            e.message_variation_id.as_deref(),
        );
        messages.insert(variation.unwrap_or_default(), json!({"channel": "email", "name": "Email",
            "subject": e.subject, "body": e.body, "from": e.from, "reply_to": e.reply_to, "preheader": e.preheader}));
    }
    let conversions: Vec<Value> = c
        .conversion_events
        .iter()
        .map(|e| json!({"type": e.braze_type(), "window": e.window_seconds, "custom_event_name": e.custom_event_name, "product": e.product}))
        .collect();
    json!({
        "message": "success",
        "created_at": time::format_iso(c.created_at),
        "updated_at": time::format_iso(c.updated_at),
        "archived": c.archived,
        "draft": false,
        "enabled": !c.archived,
        "has_post_launch_draft": false,
        "name": c.name,
        "description": c.description.clone().unwrap_or_default(),
        "schedule_type": "api_triggered",
        "channels": c.messages.channels(),
        "first_sent": c.first_sent.map(time::format_iso),
        "last_sent": c.last_sent.map(time::format_iso),
        "tags": c.tags,
        "teams": [],
        "messages": messages,
        "conversion_behaviors": conversions,
    })
}

// ---- admin ----

fn admin_campaign_json(c: &Campaign) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
    v["created_at"] = json!(time::format_iso(c.created_at));
    v["updated_at"] = json!(time::format_iso(c.updated_at));
    v
}

/// `POST /eddy/v1/workspaces/{ws}/campaigns` → 201 `{"id", ...}`.
pub async fn create_campaign(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(mut input): JsonBody<CampaignInput>,
) -> Answer {
    let now = time::now_ms();
    input.messages = library::with_email_template(&state.store, ws.id, &input.messages)?;
    let campaign = input.into_campaign(ids::uuid_v4(), now, now)?;
    records::put_campaign(&state.store, ws.id, &campaign).await?;
    state.engine.campaigns_changed(ws.id)?;
    Ok(json_response(
        StatusCode::CREATED,
        &admin_campaign_json(&campaign),
    ))
}

/// `PUT /eddy/v1/workspaces/{ws}/campaigns/{id}`: replaces the definition.
pub async fn put_campaign(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(mut input): JsonBody<CampaignInput>,
) -> Answer {
    let existing = admin_campaign(&state, ws.id, &id)?;
    input.messages = library::with_email_template(&state.store, ws.id, &input.messages)?;
    let mut campaign = input.into_campaign(id.clone(), existing.created_at, time::now_ms())?;
    campaign.first_sent = existing.first_sent;
    campaign.last_sent = existing.last_sent;
    records::put_campaign(&state.store, ws.id, &campaign).await?;
    state.engine.campaigns_changed(ws.id)?;
    Ok(json_response(
        StatusCode::OK,
        &admin_campaign_json(&campaign),
    ))
}

/// `GET /eddy/v1/workspaces/{ws}/campaigns`.
pub async fn list_campaigns(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let list: Vec<Value> = campaigns(&state, ws.id)?
        .iter()
        .map(admin_campaign_json)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"campaigns": list})))
}

/// `GET /eddy/v1/workspaces/{ws}/campaigns/{id}`.
pub async fn get_campaign(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let campaign = admin_campaign(&state, ws.id, &id)?;
    Ok(json_response(
        StatusCode::OK,
        &admin_campaign_json(&campaign),
    ))
}

/// The body of a test send: the one user it goes to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSend {
    external_user_id: String,
    #[serde(default)]
    trigger_properties: Option<Map<String, Value>>,
}

/// `POST /eddy/v1/workspaces/{ws}/campaigns/{id}/test-send` `{"external_user_id",
/// "trigger_properties"?}` → 201 `{"dispatch_id"}`: the campaign sent now to one user, as
/// `/campaigns/trigger/send` would send it (its subscription group and control group apply).
pub async fn test_send(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(test): JsonBody<TestSend>,
) -> Answer {
    let request = TriggerRequest::to_one(&id, &test.external_user_id, test.trigger_properties);
    let dispatch = state.engine.send_trigger(&ws, request, When::Now).await?;
    Ok(accepted(&dispatch))
}

/// `DELETE /eddy/v1/workspaces/{ws}/campaigns/{id}`: sends already accepted still finish.
pub async fn delete_campaign(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    records::delete_campaign(&state.store, ws.id, &id).await?;
    state.engine.campaigns_changed(ws.id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /eddy/v1/workspaces/{ws}/dispatches/{id}/cancel`: stops a send that is scheduled or
/// in flight. The engine running it stops before its next chunk and counts what was not sent;
/// the answer is the cancelled dispatch, or 202 while the node running it has not stopped yet
/// (it will: the request is stored). A finished send answers 409.
pub async fn cancel_dispatch(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let read = |state: &SharedState| -> Result<Dispatch, HttpError> {
        records::dispatch(&state.store, ws.id, &id)?
            .ok_or_else(|| HttpError(ApiError::ResourceNotFound(format!("dispatch '{id}'"))))
    };
    let dispatch = read(&state)?;
    match dispatch.state {
        DispatchState::Cancelled => {}
        DispatchState::Done | DispatchState::Failed => {
            return Err(HttpError(ApiError::Conflict(format!(
                "dispatch '{id}' has ended ({}); nothing is left to cancel",
                serde_json::to_value(dispatch.state).unwrap_or_default()
            ))));
        }
        DispatchState::Scheduled | DispatchState::Sending => {
            state.engine.request_cancel(ws.id, &id).await?;
            // The engine stops within a chunk; wait for it a little, as a caller would.
            for _ in 0..200 {
                if read(&state)?.state == DispatchState::Cancelled {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let now = read(&state)?;
    let status = if now.state == DispatchState::Cancelled {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(json_response(status, &dispatch_json(&now)?))
}

/// `GET /eddy/v1/workspaces/{ws}/dispatches/{id}`: where a send is (the audience as its size).
pub async fn get_dispatch(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let dispatch = records::dispatch(&state.store, ws.id, &id)?
        .ok_or_else(|| HttpError(ApiError::ResourceNotFound(format!("dispatch '{id}'"))))?;
    Ok(json_response(StatusCode::OK, &dispatch_json(&dispatch)?))
}

/// A stored dispatch as the admin API shows it: the audience as its size, times as ISO 8601.
fn dispatch_json(dispatch: &Dispatch) -> Result<Value, HttpError> {
    let size = dispatch.audience_size()?;
    let mut v = serde_json::to_value(dispatch).map_err(|_| HttpError(ApiError::Internal))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("audience");
        o.insert("audience_size".into(), json!(size));
        o.insert("send_at".into(), json!(time::format_iso(dispatch.send_at)));
        o.insert(
            "created_at".into(),
            json!(time::format_iso(dispatch.created_at)),
        );
        o.insert(
            "finished_at".into(),
            json!(dispatch.finished_at.map(time::format_iso)),
        );
    }
    Ok(v)
}

/// Most dispatches `GET …/dispatches` reads before filtering.
const DISPATCH_SCAN: usize = 10_000;

/// `GET /eddy/v1/workspaces/{ws}/dispatches?campaign_id=&limit=`: sends, newest first (at
/// most `limit`, default 50), with their state and counts.
pub async fn list_dispatches(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    RawQuery(query): RawQuery,
) -> Answer {
    let campaign = crate::http::query_param(query.as_deref(), "campaign_id");
    let limit = crate::extract::Paging::<50, 500>::read(query.as_deref())?.limit;
    let mut found = Vec::new();
    for dispatch in records::dispatches(&state.store, ws.id, DISPATCH_SCAN)? {
        if campaign.is_some() && dispatch.campaign_id != campaign {
            continue;
        }
        found.push(dispatch_json(&dispatch)?);
    }
    // ISO 8601 times of one format sort as the instants they name.
    found.sort_by(|a, b| {
        let at = |v: &Value| {
            v.get("created_at")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        at(b).cmp(&at(a))
    });
    found.truncate(limit);
    Ok(json_response(StatusCode::OK, &json!({"dispatches": found})))
}

/// The body of `PUT /eddy/v1/workspaces/{ws}/email`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    smtp_url: String,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    tracking_domain: Option<String>,
    /// The workspace's custom footer (Liquid), which emails insert with `{{${email_footer}}}`;
    /// as Braze asks, it holds an unsubscribe link.
    #[serde(default)]
    custom_footer: Option<String>,
    /// Connect and greet the relay before saving (default true).
    #[serde(default = "yes")]
    validate: bool,
}

/// `PUT /eddy/v1/workspaces/{ws}/email`: the SMTP relay; the password is sealed and never shown.
pub async fn put_email(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(settings): JsonBody<EmailSettings>,
) -> Answer {
    let relay = Relay::parse(&settings.smtp_url, settings.starttls).map_err(bad)?;
    if let Some(domain) = &settings.tracking_domain
        && (domain.is_empty() || domain.contains(char::is_whitespace))
    {
        return Err(bad("tracking_domain is a host name or a base URL"));
    }
    if let Some(footer) = &settings.custom_footer {
        eddy_liquid::Template::parse(footer).map_err(|e| {
            bad(format!(
                "custom_footer: Liquid syntax error on line {}: {}",
                e.line, e.message
            ))
        })?;
        if !footer.contains("set_user_to_unsubscribed_url") {
            return Err(bad(
                "custom_footer must hold an unsubscribe link (${set_user_to_unsubscribed_url})",
            ));
        }
    }
    if settings.validate {
        match Connection::open(&relay, "eddy").await {
            Ok(connection) => connection.quit().await,
            Err(e) => {
                return Err(bad(format!(
                    "cannot use {}: {e} (\"validate\": false saves it anyway)",
                    relay.redacted()
                )));
            }
        }
    }
    let stored =
        records::EmailSettings::new(relay, settings.tracking_domain, settings.custom_footer);
    records::put_email_settings(&state.store, ws.id, &stored).await?;
    Ok(json_response(StatusCode::OK, &email_json(&stored)))
}

/// Email settings as the admin API shows them: the relay's URL without its password.
fn email_json(settings: &records::EmailSettings) -> Value {
    let relay = settings.relay();
    json!({"smtp_url": relay.redacted(), "starttls": relay.starttls,
           "tracking_domain": settings.tracking_domain, "custom_footer": settings.custom_footer})
}

/// `GET /eddy/v1/workspaces/{ws}/email`.
pub async fn get_email(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let stored = records::email_settings(&state.store, ws.id)?
        .ok_or_else(|| HttpError(ApiError::ResourceNotFound("email settings".into())))?;
    Ok(json_response(StatusCode::OK, &email_json(&stored)))
}

/// `DELETE /eddy/v1/workspaces/{ws}/email`.
pub async fn delete_email(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    records::delete_email_settings(&state.store, ws.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /eddy/v1/workspaces/{ws}/users/messages?external_id=|braze_id=|email=&limit=`: what
/// each dispatch did for the user, newest first.
pub async fn user_messages(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Answer {
    let q = query.as_deref();
    let param = |n: &str| crate::http::query_param(q, n);
    let ident = if let Some(id) = param("external_id") {
        Identifier::ExternalId(id)
    } else if let Some(id) = param("braze_id") {
        Identifier::BrazeId(id)
    } else if let Some(email) = param("email") {
        Identifier::Email(
            eddy_model::track::normalize_email(&email)
                .ok_or_else(|| bad("not an email address"))?,
        )
    } else {
        return Err(bad("name the user: external_id, braze_id or email"));
    };
    let limit = crate::extract::Paging::<100, 1000>::read(query.as_deref())?.limit;
    let (id, _) = state
        .store
        .find(ws.id, &ident)?
        .ok_or_else(|| HttpError(ApiError::ResourceNotFound("user".into())))?;
    let prefix = format!("{id:010}/");
    let mut records: Vec<Value> = state
        .store
        .objects_page(ws.id, kinds::MESSAGE, &prefix, None, usize::MAX)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    records.sort_by(|a, b| b["at"].as_str().cmp(&a["at"].as_str()));
    records.truncate(limit);
    let _ = message_name;
    Ok(json_response(StatusCode::OK, &json!({"messages": records})))
}
