//! Sending, as Braze's API offers it: `/messages/send`, `/campaigns/trigger/send`, the
//! transactional send, send ids, schedules, `/campaigns/list` and `/details`; and the admin side:
//! campaign definitions, a workspace's SMTP relay, dispatch status and a user's message history.
//!
//! A send answers 2xx once its dispatch (audience included) is committed; the engine
//! (`eddy_messaging::engine`) delivers it from there, across restarts.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_messaging::campaign::{Campaign, CampaignInput, Messages};
use eddy_messaging::dispatch::{
    Audience, Dispatch, Recipient, State as DispatchState, encode_bitmap,
};
use eddy_messaging::engine::message_name;
use eddy_messaging::kinds;
use eddy_messaging::smtp::{Connection, Relay};
use eddy_model::ApiError;
use eddy_model::time;
use eddy_model::track::{Identifier, validate_track};
use eddy_model::wire::TrackRequest;
use eddy_model::wire::UserAlias;
use eddy_store::{Workspace, ids};
use roaring::RoaringBitmap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::SharedState;
use crate::extract::{
    AdminWorkspace, CampaignsDetails, CampaignsList, CampaignsTriggerScheduleCreate,
    CampaignsTriggerScheduleDelete, CampaignsTriggerScheduleUpdate, CampaignsTriggerSend, JsonBody,
    MessagesScheduleCreate, MessagesScheduleDelete, MessagesScheduleUpdate,
    MessagesScheduledBroadcasts, MessagesSend, Rest, SendsIdCreate, TransactionalSend,
};
use crate::http::{HttpError, bad, json_response};

type Answer = Result<Response, HttpError>;

/// Recipients named in one request, at most (Braze's limit).
const MAX_RECIPIENTS: usize = 50;

/// The body of `/messages/send` and `/messages/schedule/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default)]
    broadcast: Option<bool>,
    #[serde(default)]
    external_user_ids: Option<Vec<String>>,
    #[serde(default)]
    user_aliases: Option<Vec<UserAlias>>,
    #[serde(default)]
    segment_id: Option<String>,
    #[serde(default)]
    audience: Option<Value>,
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    send_id: Option<String>,
    #[serde(default)]
    override_frequency_capping: Option<bool>,
    #[serde(default)]
    recipient_subscription_state: Option<String>,
    #[serde(default)]
    messages: Option<Value>,
    #[serde(default)]
    schedule: Option<Schedule>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

/// Braze's `schedule` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    time: String,
    #[serde(default)]
    in_local_time: bool,
    #[serde(default)]
    at_optimal_time: bool,
}

/// One recipient of a trigger send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRecipient {
    #[serde(default)]
    external_user_id: Option<String>,
    #[serde(default)]
    user_alias: Option<UserAlias>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    trigger_properties: Option<Map<String, Value>>,
    #[serde(default)]
    canvas_entry_properties: Option<Map<String, Value>>,
    #[serde(default = "yes")]
    send_to_existing_only: bool,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

/// The body of `/campaigns/trigger/send` and its schedule endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    send_id: Option<String>,
    #[serde(default)]
    trigger_properties: Option<Map<String, Value>>,
    #[serde(default)]
    broadcast: Option<bool>,
    #[serde(default)]
    audience: Option<Value>,
    #[serde(default)]
    recipients: Option<Vec<TriggerRecipient>>,
    #[serde(default)]
    schedule: Option<Schedule>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

/// Who a request names, before it becomes a dispatch's audience.
struct Who {
    explicit: Option<Vec<Recipient>>,
    bitmap: Option<RoaringBitmap>,
    broadcast: bool,
}

fn identifier_of(
    external_id: Option<&str>,
    alias: Option<&UserAlias>,
    email: Option<&str>,
) -> Result<Identifier, HttpError> {
    match (external_id, alias, email) {
        (Some(id), None, None) => Ok(Identifier::ExternalId(id.to_string())),
        (None, Some(alias), None) => Ok(Identifier::Alias(alias.clone())),
        (None, None, Some(email)) => eddy_model::track::normalize_email(email)
            .map(Identifier::Email)
            .ok_or_else(|| bad(format!("'{email}' is not an email address"))),
        _ => Err(bad(
            "each recipient has exactly one of external_user_id, user_alias or email",
        )),
    }
}

/// The profile id an identifier names now, if any.
fn resolve(state: &SharedState, ws: u32, ident: &Identifier) -> Result<Option<u32>, HttpError> {
    Ok(state.store.find(ws, ident)?.map(|(id, _)| id))
}

/// The members of a segment and/or a connected audience (intersected), or everyone.
async fn audience_bitmap(
    state: &SharedState,
    ws: u32,
    segment_id: Option<&str>,
    audience: Option<&Value>,
) -> Result<RoaringBitmap, HttpError> {
    let mut filters = Vec::new();
    if let Some(segment_id) = segment_id {
        let segment = state.store.segment(ws, segment_id)?.ok_or_else(|| {
            bad(format!(
                "segment_id '{segment_id}' is not a segment of this workspace"
            ))
        })?;
        filters.push(segment.filter);
    }
    if let Some(audience) = audience {
        filters.push(eddy_messaging::audience::compile(audience)?);
    }
    let parsed = filters
        .iter()
        .map(crate::segments::parse_filter)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(state.engine.members(ws, parsed).await?)
}

fn campaign_of(state: &SharedState, ws: u32, id: &str) -> Result<Campaign, HttpError> {
    let value = state
        .store
        .object(ws, kinds::CAMPAIGN, id)?
        .ok_or_else(|| {
            bad(format!(
                "campaign_id '{id}' is not a campaign of this workspace"
            ))
        })?;
    serde_json::from_value(value)
        .map_err(|e| HttpError(ApiError::BadRequest(format!("stored campaign: {e}"))))
}

fn check_send_id(send_id: Option<&str>, campaign_id: Option<&str>) -> Result<(), HttpError> {
    let Some(send_id) = send_id else {
        return Ok(());
    };
    if campaign_id.is_none() {
        return Err(bad("send_id needs a campaign_id"));
    }
    if send_id.is_empty()
        || send_id.len() > 64
        || !send_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("send_id is 1 to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

fn schedule_time(schedule: &Schedule) -> Result<i64, HttpError> {
    if schedule.at_optimal_time {
        return Err(bad(
            "at_optimal_time needs Intelligent Delivery, which eddy does not have; use in_local_time or a time",
        ));
    }
    let ms = if schedule.in_local_time {
        // A wall-clock time: read without its offset, as if it were UTC.
        let civil: Option<jiff::civil::DateTime> = schedule
            .time
            .get(..19)
            .and_then(|t| t.replace(' ', "T").parse().ok());
        civil
            .and_then(|c| c.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp().as_millisecond())
    } else {
        time::parse_time(&schedule.time)
    };
    ms.ok_or_else(|| {
        bad(format!(
            "schedule.time '{}' is not an ISO 8601 time",
            schedule.time
        ))
    })
}

/// Commits a dispatch, hands it to the engine, and answers Braze's 201: the `dispatch_id`, and
/// the `schedule_id` of a scheduled one.
async fn accept(state: &SharedState, ws: &Workspace, dispatch: Dispatch) -> Answer {
    let mut body = json!({"dispatch_id": dispatch.id, "message": "success"});
    if let Some(schedule_id) = &dispatch.schedule_id {
        body["schedule_id"] = json!(schedule_id);
    }
    state.engine.accept(ws, dispatch).await?;
    Ok(json_response(StatusCode::CREATED, &body))
}

fn audience_of(who: Who) -> Result<Audience, HttpError> {
    match (who.explicit, who.bitmap) {
        (Some(mut list), _) => {
            list.sort_by_key(|r| r.id);
            list.dedup_by_key(|r| r.id);
            Ok(Audience::Recipients(list))
        }
        (None, Some(bitmap)) => Ok(Audience::Bitmap(encode_bitmap(&bitmap)?)),
        (None, None) => Ok(Audience::Recipients(Vec::new())),
    }
}

fn apply_schedule(dispatch: &mut Dispatch, schedule: Option<&Schedule>) -> Result<(), HttpError> {
    let Some(schedule) = schedule else {
        return Ok(());
    };
    dispatch.send_at = schedule_time(schedule)?;
    dispatch.in_local_time = schedule.in_local_time;
    dispatch.schedule_id = Some(ids::uuid_v4());
    dispatch.state = DispatchState::Scheduled;
    Ok(())
}

async fn who_of_send(state: &SharedState, ws: u32, req: &SendRequest) -> Result<Who, HttpError> {
    let ids = req.external_user_ids.as_deref().unwrap_or_default();
    let aliases = req.user_aliases.as_deref().unwrap_or_default();
    if ids.len() > MAX_RECIPIENTS || aliases.len() > MAX_RECIPIENTS {
        return Err(bad(format!(
            "external_user_ids and user_aliases take at most {MAX_RECIPIENTS} each"
        )));
    }
    let broadcast = req.broadcast.unwrap_or(false);
    let named = !ids.is_empty() || !aliases.is_empty();
    if broadcast && named {
        return Err(bad(
            "broadcast cannot be combined with external_user_ids or user_aliases",
        ));
    }
    if named {
        let mut list = Vec::new();
        for id in ids {
            if let Some(pid) = resolve(state, ws, &Identifier::ExternalId(id.clone()))? {
                list.push(Recipient {
                    id: pid,
                    trigger_properties: None,
                });
            }
        }
        for alias in aliases {
            if let Some(pid) = resolve(state, ws, &Identifier::Alias(alias.clone()))? {
                list.push(Recipient {
                    id: pid,
                    trigger_properties: None,
                });
            }
        }
        return Ok(Who {
            explicit: Some(list),
            bitmap: None,
            broadcast: false,
        });
    }
    if !broadcast && req.segment_id.is_none() && req.audience.is_none() {
        return Err(bad(
            "there are no recipients: name external_user_ids or user_aliases, a segment_id or audience, or set broadcast to true",
        ));
    }
    let bitmap =
        audience_bitmap(state, ws, req.segment_id.as_deref(), req.audience.as_ref()).await?;
    Ok(Who {
        explicit: None,
        bitmap: Some(bitmap),
        broadcast,
    })
}

fn subscription_state(value: Option<&str>) -> Result<String, HttpError> {
    match value.unwrap_or("subscribed") {
        s @ ("opted_in" | "subscribed" | "all") => Ok(s.to_string()),
        other => Err(bad(format!(
            "recipient_subscription_state '{other}' is not opted_in, subscribed or all"
        ))),
    }
}

async fn prepare_send(
    state: &SharedState,
    ws: &Workspace,
    req: &SendRequest,
) -> Result<Dispatch, HttpError> {
    let Some(messages) = &req.messages else {
        return Err(bad("'messages' is required"));
    };
    let messages = Messages::from_json(messages)?;
    check_send_id(req.send_id.as_deref(), req.campaign_id.as_deref())?;
    if messages.email.is_some() && eddy_messaging::engine::relay_of(&state.store, ws.id)?.is_none()
    {
        return Err(bad(
            "this workspace has no SMTP relay: PUT /eddy/v1/workspaces/{ws}/email first",
        ));
    }
    let campaign = match &req.campaign_id {
        Some(id) => Some(campaign_of(state, ws.id, id)?),
        None => None,
    };
    let who = who_of_send(state, ws.id, req).await?;
    let broadcast = who.broadcast;
    let now = time::now_ms();
    let mut dispatch = Dispatch::new("api", messages, audience_of(who)?, now);
    if let Some(campaign) = &campaign {
        dispatch.apply_campaign(campaign);
    }
    dispatch.broadcast = broadcast;
    dispatch.send_id = req.send_id.clone();
    dispatch.recipient_subscription_state =
        subscription_state(req.recipient_subscription_state.as_deref())?;
    let _ = req.override_frequency_capping;
    apply_schedule(&mut dispatch, req.schedule.as_ref())?;
    Ok(dispatch)
}

/// `POST /messages/send` → 201 `{"dispatch_id", "message": "success"}`.
pub async fn messages_send(State(state): State<SharedState>, rest: Rest<MessagesSend>) -> Answer {
    let req: SendRequest = rest.json()?;
    if req.schedule.is_some() {
        return Err(bad("'schedule' belongs to /messages/schedule/create"));
    }
    let dispatch = prepare_send(&state, &rest.workspace, &req).await?;
    accept(&state, &rest.workspace, dispatch).await
}

/// `POST /messages/schedule/create` → 201 `{"dispatch_id", "schedule_id", "message"}`.
pub async fn messages_schedule_create(
    State(state): State<SharedState>,
    rest: Rest<MessagesScheduleCreate>,
) -> Answer {
    let req: SendRequest = rest.json()?;
    if req.schedule.is_none() {
        return Err(bad("'schedule' is required"));
    }
    let dispatch = prepare_send(&state, &rest.workspace, &req).await?;
    accept(&state, &rest.workspace, dispatch).await
}

/// The body of the schedule update and delete endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleChange {
    schedule_id: String,
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    messages: Option<Value>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

fn scheduled(
    state: &SharedState,
    ws: u32,
    schedule_id: &str,
    campaign_id: Option<&str>,
) -> Result<Dispatch, HttpError> {
    let not_found = || {
        HttpError(ApiError::ResourceNotFound(format!(
            "schedule '{schedule_id}'"
        )))
    };
    let entry = state
        .store
        .object(ws, kinds::SCHEDULE, schedule_id)?
        .ok_or_else(not_found)?;
    let dispatch_id = entry["dispatch_id"].as_str().unwrap_or_default();
    let value = state
        .store
        .object(ws, kinds::DISPATCH, dispatch_id)?
        .ok_or_else(not_found)?;
    let dispatch: Dispatch =
        serde_json::from_value(value).map_err(|_| HttpError(ApiError::Internal))?;
    if campaign_id.is_some() && dispatch.campaign_id.as_deref() != campaign_id {
        return Err(not_found());
    }
    if dispatch.state != DispatchState::Scheduled {
        return Err(bad(format!(
            "schedule '{schedule_id}' has already been sent or deleted"
        )));
    }
    Ok(dispatch)
}

async fn save(state: &SharedState, ws: u32, dispatch: &Dispatch) -> Result<(), HttpError> {
    state
        .store
        .record(ws, dispatch.writes()?, Vec::new())
        .await?;
    state.engine.wake();
    Ok(())
}

async fn update_schedule(state: &SharedState, ws: &Workspace, change: ScheduleChange) -> Answer {
    let mut dispatch = scheduled(
        state,
        ws.id,
        &change.schedule_id,
        change.campaign_id.as_deref(),
    )?;
    if let Some(schedule) = &change.schedule {
        dispatch.send_at = schedule_time(schedule)?;
        dispatch.in_local_time = schedule.in_local_time;
    }
    if let Some(messages) = &change.messages {
        if dispatch.campaign_id.is_some() && dispatch.kind == "trigger" {
            return Err(bad(
                "a campaign's scheduled trigger takes its messages from the campaign",
            ));
        }
        dispatch.messages = Messages::from_json(messages)?;
    }
    save(state, ws.id, &dispatch).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

async fn delete_schedule(state: &SharedState, ws: &Workspace, change: ScheduleChange) -> Answer {
    let mut dispatch = scheduled(
        state,
        ws.id,
        &change.schedule_id,
        change.campaign_id.as_deref(),
    )?;
    // The engine carries the request out if the schedule turned due meanwhile.
    state.engine.request_cancel(ws.id, &dispatch.id).await?;
    dispatch.state = DispatchState::Cancelled;
    save(state, ws.id, &dispatch).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// `POST /messages/schedule/update` `{"schedule_id", "schedule"?, "messages"?}`.
pub async fn messages_schedule_update(
    State(state): State<SharedState>,
    rest: Rest<MessagesScheduleUpdate>,
) -> Answer {
    update_schedule(&state, &rest.workspace, rest.json()?).await
}

/// `POST /messages/schedule/delete` `{"schedule_id"}`.
pub async fn messages_schedule_delete(
    State(state): State<SharedState>,
    rest: Rest<MessagesScheduleDelete>,
) -> Answer {
    delete_schedule(&state, &rest.workspace, rest.json()?).await
}

/// `POST /campaigns/trigger/schedule/update` `{"campaign_id", "schedule_id", "schedule"}`.
pub async fn trigger_schedule_update(
    State(state): State<SharedState>,
    rest: Rest<CampaignsTriggerScheduleUpdate>,
) -> Answer {
    update_schedule(&state, &rest.workspace, rest.json()?).await
}

/// `POST /campaigns/trigger/schedule/delete` `{"campaign_id", "schedule_id"}`.
pub async fn trigger_schedule_delete(
    State(state): State<SharedState>,
    rest: Rest<CampaignsTriggerScheduleDelete>,
) -> Answer {
    delete_schedule(&state, &rest.workspace, rest.json()?).await
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
    let mut out = Vec::new();
    for (_, entry) in state.store.objects(rest.workspace.id, kinds::SCHEDULE)? {
        let dispatch_id = entry["dispatch_id"].as_str().unwrap_or_default();
        let Some(value) = state
            .store
            .object(rest.workspace.id, kinds::DISPATCH, dispatch_id)?
        else {
            continue;
        };
        let Ok(dispatch) = serde_json::from_value::<Dispatch>(value) else {
            continue;
        };
        if dispatch.state != DispatchState::Scheduled || dispatch.send_at > end_ms {
            continue;
        }
        let tags = match &dispatch.campaign_id {
            Some(id) => campaign_of(&state, rest.workspace.id, id)
                .map(|c| c.tags)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        out.push((
            dispatch.send_at,
            json!({
                "name": dispatch.campaign_name.clone().unwrap_or_else(|| "API send".into()),
                "dispatch_id": dispatch.id,
                "type": if dispatch.campaign_id.is_some() { "Campaign" } else { "API Campaign" },
                "campaign_id": dispatch.campaign_id,
                "schedule_id": dispatch.schedule_id,
                "send_at": time::format_iso(dispatch.send_at),
                "in_local_time": dispatch.in_local_time,
                "tags": tags,
            }),
        ));
    }
    out.sort_by_key(|(at, _)| *at);
    let list: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"scheduled_broadcasts": list, "message": "success"}),
    ))
}

/// Applies recipients' `attributes` (creating users when `send_to_existing_only` is false) and
/// resolves them to profiles.
async fn trigger_recipients(
    state: &SharedState,
    ws: &Workspace,
    recipients: &[TriggerRecipient],
) -> Result<Vec<Recipient>, HttpError> {
    if recipients.len() > MAX_RECIPIENTS {
        return Err(bad(format!(
            "recipients takes at most {MAX_RECIPIENTS} objects"
        )));
    }
    let mut attributes = Vec::new();
    let mut idents = Vec::new();
    for r in recipients {
        let ident = identifier_of(
            r.external_user_id.as_deref(),
            r.user_alias.as_ref(),
            r.email.as_deref(),
        )?;
        if !r.send_to_existing_only && r.attributes.is_none() {
            return Err(bad(
                "a recipient with send_to_existing_only false needs 'attributes' to create the user with",
            ));
        }
        if let Some(attrs) = &r.attributes {
            let mut object = attrs.clone();
            match &ident {
                Identifier::ExternalId(id) => {
                    object.insert("external_id".into(), json!(id));
                }
                Identifier::Alias(alias) => {
                    object.insert("user_alias".into(), json!(alias));
                }
                Identifier::Email(email) => {
                    object.insert("email".into(), json!(email));
                }
                _ => {}
            }
            object.insert(
                "_update_existing_only".into(),
                json!(r.send_to_existing_only),
            );
            attributes.push(Value::Object(object));
        }
        let _ = &r.canvas_entry_properties;
        idents.push((ident, r.trigger_properties.clone()));
    }
    if !attributes.is_empty() {
        let request = TrackRequest {
            attributes: Some(attributes),
            events: None,
            purchases: None,
        };
        let batch = validate_track(&request, time::now_ms()).map_err(HttpError)?;
        state.store.track(ws.clone(), batch).await?;
    }
    let mut list = Vec::new();
    for (ident, properties) in idents {
        if let Some(id) = resolve(state, ws.id, &ident)? {
            list.push(Recipient {
                id,
                trigger_properties: properties,
            });
        }
    }
    Ok(list)
}

async fn prepare_trigger(
    state: &SharedState,
    ws: &Workspace,
    req: &TriggerRequest,
) -> Result<Dispatch, HttpError> {
    let Some(campaign_id) = &req.campaign_id else {
        return Err(bad("campaign_id is required"));
    };
    let campaign = campaign_of(state, ws.id, campaign_id)?;
    if campaign.archived {
        return Err(bad(format!("campaign '{campaign_id}' is archived")));
    }
    check_send_id(req.send_id.as_deref(), Some(campaign_id))?;
    if campaign.messages.email.is_some()
        && eddy_messaging::engine::relay_of(&state.store, ws.id)?.is_none()
    {
        return Err(bad(
            "this workspace has no SMTP relay: PUT /eddy/v1/workspaces/{ws}/email first",
        ));
    }
    let broadcast = req.broadcast.unwrap_or(false);
    let recipients = req.recipients.as_deref().unwrap_or_default();
    if broadcast && !recipients.is_empty() {
        return Err(bad("broadcast cannot be combined with recipients"));
    }
    let who = if !recipients.is_empty() {
        let mut list = trigger_recipients(state, ws, recipients).await?;
        if let Some(audience) = &req.audience {
            let members = audience_bitmap(state, ws.id, None, Some(audience)).await?;
            list.retain(|r| members.contains(r.id));
        }
        Who {
            explicit: Some(list),
            bitmap: None,
            broadcast: false,
        }
    } else if broadcast || req.audience.is_some() {
        let bitmap = audience_bitmap(state, ws.id, None, req.audience.as_ref()).await?;
        Who {
            explicit: None,
            bitmap: Some(bitmap),
            broadcast,
        }
    } else {
        return Err(bad(
            "there are no recipients: name recipients, an audience, or set broadcast to true",
        ));
    };
    let now = time::now_ms();
    let mut dispatch = Dispatch::new("trigger", campaign.messages.clone(), audience_of(who)?, now);
    dispatch.apply_campaign(&campaign);
    dispatch.broadcast = broadcast;
    dispatch.send_id = req.send_id.clone();
    dispatch.trigger_properties = req.trigger_properties.clone().unwrap_or_default();
    apply_schedule(&mut dispatch, req.schedule.as_ref())?;
    Ok(dispatch)
}

/// `POST /campaigns/trigger/send` → 201 `{"dispatch_id", "message": "success"}`.
pub async fn trigger_send(
    State(state): State<SharedState>,
    rest: Rest<CampaignsTriggerSend>,
) -> Answer {
    let req: TriggerRequest = rest.json()?;
    if req.schedule.is_some() {
        return Err(bad(
            "'schedule' belongs to /campaigns/trigger/schedule/create",
        ));
    }
    let dispatch = prepare_trigger(&state, &rest.workspace, &req).await?;
    accept(&state, &rest.workspace, dispatch).await
}

/// `POST /campaigns/trigger/schedule/create` → 201 `{"dispatch_id", "schedule_id", "message"}`.
pub async fn trigger_schedule_create(
    State(state): State<SharedState>,
    rest: Rest<CampaignsTriggerScheduleCreate>,
) -> Answer {
    let req: TriggerRequest = rest.json()?;
    if req.schedule.is_none() {
        return Err(bad("'schedule' is required"));
    }
    let dispatch = prepare_trigger(&state, &rest.workspace, &req).await?;
    accept(&state, &rest.workspace, dispatch).await
}

/// The body of `/transactional/v1/campaigns/{id}/send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionalRequest {
    #[serde(default)]
    external_send_id: Option<String>,
    #[serde(default)]
    trigger_properties: Option<Map<String, Value>>,
    recipient: TriggerRecipient,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

/// How long an `external_send_id` is remembered.
const EXTERNAL_SEND_TTL_MS: i64 = 24 * 3_600_000;

/// `POST /transactional/v1/campaigns/{campaign_id}/send` → 201 `{"dispatch_id", "status":
/// "queued", "metadata"}`; a repeated `external_send_id` within 24 h answers the first dispatch
/// and sends nothing.
pub async fn transactional_send(
    State(state): State<SharedState>,
    Path(campaign_id): Path<String>,
    rest: Rest<TransactionalSend>,
) -> Answer {
    let req: TransactionalRequest = rest.json()?;
    let ws = &rest.workspace;
    let campaign = campaign_of(&state, ws.id, &campaign_id)?;
    let mut metadata = json!({});
    if let Some(external) = &req.external_send_id {
        let valid = !external.is_empty()
            && external.len() <= 64
            && external
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b));
        if !valid {
            return Err(bad(
                "external_send_id matches ^[a-zA-Z0-9-_+/=]+$ (at most 64 characters)",
            ));
        }
        metadata["external_send_id"] = json!(external);
        let key = format!("{campaign_id}/{external}");
        if let Some(seen) = state.store.object(ws.id, kinds::EXTERNAL_SEND, &key)?
            && time::now_ms() - seen["at"].as_i64().unwrap_or(0) < EXTERNAL_SEND_TTL_MS
        {
            return Ok(json_response(
                StatusCode::CREATED,
                &json!({
                "dispatch_id": seen["dispatch_id"], "status": "queued", "metadata": metadata}),
            ));
        }
    }
    if campaign.messages.email.is_some()
        && eddy_messaging::engine::relay_of(&state.store, ws.id)?.is_none()
    {
        return Err(bad(
            "this workspace has no SMTP relay: PUT /eddy/v1/workspaces/{ws}/email first",
        ));
    }
    let recipients = trigger_recipients(&state, ws, std::slice::from_ref(&req.recipient)).await?;
    let now = time::now_ms();
    let mut dispatch = Dispatch::new(
        "transactional",
        campaign.messages.clone(),
        Audience::Recipients(recipients),
        now,
    );
    dispatch.apply_campaign(&campaign);
    // Transactional email is sent whatever the marketing subscription state (Braze's rule).
    dispatch.recipient_subscription_state = "all".into();
    dispatch.control_group_percent = 0;
    dispatch.trigger_properties = req.trigger_properties.clone().unwrap_or_default();
    let id = dispatch.id.clone();
    if let Some(external) = &req.external_send_id {
        state
            .store
            .put_object(
                ws.id,
                kinds::EXTERNAL_SEND,
                format!("{campaign_id}/{external}"),
                json!({"dispatch_id": id, "at": now}),
            )
            .await?;
    }
    state.engine.accept(ws, dispatch).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"dispatch_id": id, "status": "queued", "metadata": metadata}),
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
    let mut out = Vec::new();
    for (_, value) in state.store.objects(ws, kinds::CAMPAIGN)? {
        if let Ok(c) = serde_json::from_value::<Campaign>(value) {
            out.push(c);
        }
    }
    Ok(out)
}

/// `GET /campaigns/list?page=&include_archived=&sort_direction=&last_edit.time[gt]=`: 100 per
/// page, oldest first unless `sort_direction=desc`.
pub async fn campaigns_list(State(state): State<SharedState>, rest: Rest<CampaignsList>) -> Answer {
    let page: usize = match rest.query_param("page") {
        Some(p) => p.parse().map_err(|_| bad("page is a number from 0"))?,
        None => 0,
    };
    let include_archived = rest.query_param("include_archived").as_deref() == Some("true");
    let descending = rest.query_param("sort_direction").as_deref() == Some("desc");
    let edited_after = match rest.query_param("last_edit.time[gt]") {
        Some(t) => Some(
            time::parse_time(&t)
                .ok_or_else(|| bad(format!("last_edit.time[gt] '{t}' is not a time")))?,
        ),
        None => None,
    };
    let mut list = campaigns(&state, rest.workspace.id)?;
    list.retain(|c| {
        (include_archived || !c.archived) && edited_after.is_none_or(|t| c.updated_at > t)
    });
    list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    if descending {
        list.reverse();
    }
    let items: Vec<Value> = list
        .iter()
        .skip(page * 100)
        .take(100)
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
    JsonBody(input): JsonBody<CampaignInput>,
) -> Answer {
    let now = time::now_ms();
    let campaign = input.into_campaign(ids::uuid_v4(), now, now)?;
    let value = serde_json::to_value(&campaign).map_err(|_| HttpError(ApiError::Internal))?;
    state
        .store
        .put_object(ws.id, kinds::CAMPAIGN, campaign.id.clone(), value)
        .await?;
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
    JsonBody(input): JsonBody<CampaignInput>,
) -> Answer {
    let existing = campaign_of(&state, ws.id, &id)
        .map_err(|_| HttpError(ApiError::ResourceNotFound(format!("campaign '{id}'"))))?;
    let mut campaign = input.into_campaign(id.clone(), existing.created_at, time::now_ms())?;
    campaign.first_sent = existing.first_sent;
    campaign.last_sent = existing.last_sent;
    let value = serde_json::to_value(&campaign).map_err(|_| HttpError(ApiError::Internal))?;
    state
        .store
        .put_object(ws.id, kinds::CAMPAIGN, id, value)
        .await?;
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
    let campaign = campaign_of(&state, ws.id, &id)
        .map_err(|_| HttpError(ApiError::ResourceNotFound(format!("campaign '{id}'"))))?;
    Ok(json_response(
        StatusCode::OK,
        &admin_campaign_json(&campaign),
    ))
}

/// `DELETE /eddy/v1/workspaces/{ws}/campaigns/{id}`: sends already accepted still finish.
pub async fn delete_campaign(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state
        .store
        .delete_object(ws.id, kinds::CAMPAIGN, id)
        .await?;
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
        let value = state
            .store
            .object(ws.id, kinds::DISPATCH, &id)?
            .ok_or_else(|| HttpError(ApiError::ResourceNotFound(format!("dispatch '{id}'"))))?;
        serde_json::from_value(value).map_err(|e| {
            HttpError::from(eddy_messaging::MessagingError::internal(format!(
                "stored dispatch {id}: {e}"
            )))
        })
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
    let value = serde_json::to_value(&now).map_err(|_| HttpError(ApiError::Internal))?;
    Ok(json_response(status, &dispatch_json(value)?))
}

/// `GET /eddy/v1/workspaces/{ws}/dispatches/{id}`: where a send is (the audience as its size).
pub async fn get_dispatch(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let value = state
        .store
        .object(ws.id, kinds::DISPATCH, &id)?
        .ok_or_else(|| HttpError(ApiError::ResourceNotFound(format!("dispatch '{id}'"))))?;
    Ok(json_response(StatusCode::OK, &dispatch_json(value)?))
}

/// A stored dispatch as the admin API shows it: the audience as its size, times as ISO 8601.
fn dispatch_json(value: Value) -> Result<Value, HttpError> {
    let dispatch: Dispatch =
        serde_json::from_value(value).map_err(|_| HttpError(ApiError::Internal))?;
    let size = dispatch.audience_size()?;
    let mut v = serde_json::to_value(&dispatch).map_err(|_| HttpError(ApiError::Internal))?;
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
    for (_, value) in state
        .store
        .objects_page(ws.id, kinds::DISPATCH, "", None, DISPATCH_SCAN)?
    {
        let dispatch = dispatch_json(value)?;
        if campaign
            .as_deref()
            .is_some_and(|c| dispatch.get("campaign_id").and_then(Value::as_str) != Some(c))
        {
            continue;
        }
        found.push(dispatch);
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
    let value = json!({"host": relay.host, "port": relay.port, "implicit_tls": relay.implicit_tls,
        "starttls": relay.starttls, "username": relay.username, "password": relay.password,
        "tracking_domain": settings.tracking_domain, "custom_footer": settings.custom_footer});
    state
        .store
        .put_object(ws.id, kinds::EMAIL, "settings".into(), value)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"smtp_url": relay.redacted(), "starttls": relay.starttls,
                "tracking_domain": settings.tracking_domain, "custom_footer": settings.custom_footer}),
    ))
}

/// `GET /eddy/v1/workspaces/{ws}/email`.
pub async fn get_email(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let relay = eddy_messaging::engine::relay_of(&state.store, ws.id)?
        .ok_or_else(|| HttpError(ApiError::ResourceNotFound("email settings".into())))?;
    let stored = state
        .store
        .object(ws.id, kinds::EMAIL, "settings")?
        .unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({"smtp_url": relay.redacted(), "starttls": relay.starttls,
                "tracking_domain": stored["tracking_domain"], "custom_footer": stored["custom_footer"]}),
    ))
}

/// `DELETE /eddy/v1/workspaces/{ws}/email`.
pub async fn delete_email(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state
        .store
        .delete_object(ws.id, kinds::EMAIL, "settings".into())
        .await?;
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
