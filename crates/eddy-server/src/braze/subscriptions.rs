//! Subscriptions as Braze documents them: subscription groups (defined in the admin API), their
//! per-user state (`/subscription/*`, v1 and v2), and the global email state with the address
//! lists a sender keeps (`/email/*`: hard bounces, unsubscribes, spam, blocklist). Every change
//! to a user is a `/users/track` write, so it carries the same Currents state-change events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_messaging::kinds;
use eddy_model::time;
use eddy_model::track::{Identifier, normalize_email, validate_track};
use eddy_model::wire::TrackRequest;
use eddy_store::{ObjectWrite, Workspace};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{
    AdminWorkspace, EmailBlocklist, EmailBounceRemove, EmailHardBounces, EmailSpamRemove,
    EmailStatus, EmailUnsubscribes, JsonBody, Paging, Rest, SubscriptionStatusGet,
    SubscriptionStatusSet, SubscriptionUserStatus,
};
use crate::http::{HttpError, bad, json_response, query_params};

type Answer = Result<Response, HttpError>;

const MAX_IDS: usize = 50;

/// A subscription group as the admin API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    name: String,
    #[serde(default = "email_channel")]
    channel: String,
}

fn email_channel() -> String {
    "email".into()
}

/// `PUT /eddy/v1/workspaces/{ws}/subscription-groups/{id}` `{"name", "channel"?}`.
pub async fn put_group(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(input): JsonBody<GroupInput>,
) -> Answer {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad(
            "subscription group ids are 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if !matches!(input.channel.as_str(), "email" | "sms" | "whats_app") {
        return Err(bad("channel is email, sms or whats_app"));
    }
    let value = json!({"id": id, "name": input.name, "channel": input.channel});
    state
        .store
        .put_object(ws.id, kinds::SUBSCRIPTION_GROUP, id, value.clone())
        .await?;
    Ok(json_response(StatusCode::OK, &value))
}

/// `GET /eddy/v1/workspaces/{ws}/subscription-groups`.
pub async fn list_groups(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let groups: Vec<Value> = state
        .store
        .objects(ws.id, kinds::SUBSCRIPTION_GROUP)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"subscription_groups": groups}),
    ))
}

/// `DELETE /eddy/v1/workspaces/{ws}/subscription-groups/{id}`.
pub async fn delete_group(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state
        .store
        .delete_object(ws.id, kinds::SUBSCRIPTION_GROUP, id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn group(state: &SharedState, ws: u32, id: &str) -> Result<Value, HttpError> {
    state
        .store
        .object(ws, kinds::SUBSCRIPTION_GROUP, id)?
        .ok_or_else(|| {
            bad(format!(
                "subscription_group_id '{id}' is not a subscription group of this workspace"
            ))
        })
}

/// A value or an array of values.
fn one_or_many(value: Option<&Value>, name: &str) -> Result<Vec<String>, HttpError> {
    let list: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("{name} holds strings")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad(format!("{name} is a string or an array of strings"))),
    };
    if list.len() > MAX_IDS {
        return Err(bad(format!("{name} takes at most {MAX_IDS} values")));
    }
    Ok(list)
}

/// Applies attributes objects through `/users/track`'s path.
async fn track(
    state: &SharedState,
    ws: &Workspace,
    attributes: Vec<Value>,
) -> Result<(), HttpError> {
    for chunk in attributes.chunks(75) {
        let request = TrackRequest {
            attributes: Some(chunk.to_vec()),
            events: None,
            purchases: None,
        };
        let batch = validate_track(&request, time::now_ms()).map_err(HttpError)?;
        state.store.track(ws.clone(), batch).await?;
    }
    Ok(())
}

fn group_change(ident_key: &str, ident: &str, group: &str, subscription_state: &str) -> Value {
    json!({ident_key: ident, "subscription_groups": [{"subscription_group_id": group, "subscription_state": subscription_state}]})
}

/// The users a subscription change names, by identifier kind.
struct Users<'a> {
    external: &'a [String],
    emails: &'a [String],
    phones: &'a [String],
}

/// One `/users/track` attributes object per user named, setting the group's state.
fn group_changes(
    attributes: &mut Vec<Value>,
    users: &Users<'_>,
    group_id: &str,
    subscription_state: &str,
) -> Result<(), HttpError> {
    for id in users.external {
        attributes.push(group_change(
            "external_id",
            id,
            group_id,
            subscription_state,
        ));
    }
    for email in users.emails {
        let email = normalize_email(email)
            .ok_or_else(|| bad(format!("'{email}' is not an email address")))?;
        attributes.push(group_change("email", &email, group_id, subscription_state));
    }
    for phone in users.phones {
        attributes.push(group_change("phone", phone, group_id, subscription_state));
    }
    Ok(())
}

fn check_state(subscription_state: &str) -> Result<(), HttpError> {
    if matches!(subscription_state, "subscribed" | "unsubscribed") {
        Ok(())
    } else {
        Err(bad("subscription_state is subscribed or unsubscribed"))
    }
}

/// `POST /subscription/status/set` (v1).
pub async fn status_set(
    State(state): State<SharedState>,
    rest: Rest<SubscriptionStatusSet>,
) -> Answer {
    let body: Value = rest.json()?;
    let group_id = body["subscription_group_id"]
        .as_str()
        .ok_or_else(|| bad("subscription_group_id is required"))?;
    group(&state, rest.workspace.id, group_id)?;
    let subscription_state = body["subscription_state"]
        .as_str()
        .ok_or_else(|| bad("subscription_state is required"))?;
    check_state(subscription_state)?;
    let external = one_or_many(body.get("external_id"), "external_id")?;
    let emails = one_or_many(body.get("email"), "email")?;
    let phones = one_or_many(body.get("phone"), "phone")?;
    if !emails.is_empty() && !phones.is_empty() {
        return Err(bad("email and phone cannot be used together"));
    }
    if external.is_empty() && emails.is_empty() && phones.is_empty() {
        return Err(bad("name users: external_id, email or phone"));
    }
    let mut attributes = Vec::new();
    let users = Users {
        external: &external,
        emails: &emails,
        phones: &phones,
    };
    group_changes(&mut attributes, &users, group_id, subscription_state)?;
    rest.processed(attributes.len());
    track(&state, &rest.workspace, attributes).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// `POST /v2/subscription/status/set` `{"subscription_groups": [...]}`.
pub async fn status_set_v2(
    State(state): State<SharedState>,
    rest: Rest<SubscriptionStatusSet>,
) -> Answer {
    let body: Value = rest.json()?;
    let Some(groups) = body["subscription_groups"].as_array() else {
        return Err(bad("subscription_groups is required"));
    };
    if groups.is_empty() || groups.len() > 25 {
        return Err(bad("subscription_groups holds 1 to 25 objects"));
    }
    let mut attributes = Vec::new();
    for g in groups {
        let group_id = g["subscription_group_id"]
            .as_str()
            .ok_or_else(|| bad("subscription_group_id is required"))?;
        group(&state, rest.workspace.id, group_id)?;
        let subscription_state = g["subscription_state"]
            .as_str()
            .ok_or_else(|| bad("subscription_state is required"))?;
        check_state(subscription_state)?;
        let external = one_or_many(g.get("external_ids"), "external_ids")?;
        let emails = one_or_many(g.get("emails"), "emails")?;
        let phones = one_or_many(g.get("phones"), "phones")?;
        if [!external.is_empty(), !emails.is_empty(), !phones.is_empty()]
            .iter()
            .filter(|x| **x)
            .count()
            != 1
        {
            return Err(bad(
                "each subscription group names exactly one of external_ids, emails or phones",
            ));
        }
        let users = Users {
            external: &external,
            emails: &emails,
            phones: &phones,
        };
        group_changes(&mut attributes, &users, group_id, subscription_state)?;
    }
    rest.processed(attributes.len());
    track(&state, &rest.workspace, attributes).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

fn braze_status(profile_state: Option<&str>) -> &'static str {
    match profile_state {
        Some("subscribed") => "Subscribed",
        Some("unsubscribed") => "Unsubscribed",
        _ => "Unknown",
    }
}

/// `GET /subscription/status/get?subscription_group_id=&external_id[]=|email=|phone=`.
pub async fn status_get(
    State(state): State<SharedState>,
    rest: Rest<SubscriptionStatusGet>,
) -> Answer {
    let query = rest.query.as_deref();
    let group_id = rest
        .query_param("subscription_group_id")
        .ok_or_else(|| bad("subscription_group_id is required"))?;
    group(&state, rest.workspace.id, &group_id)?;
    let external = query_params(query, "external_id");
    let emails = query_params(query, "email");
    let phones = query_params(query, "phone");
    if external.len() + emails.len() + phones.len() == 0 {
        return Err(bad("name users: external_id, email or phone"));
    }
    if external.len().max(emails.len()).max(phones.len()) > MAX_IDS {
        return Err(bad(format!("at most {MAX_IDS} users")));
    }
    let mut status = serde_json::Map::new();
    let mut lookup = |key: String, ident: Identifier| -> Result<(), HttpError> {
        let found = state.store.find(rest.workspace.id, &ident)?;
        let value = found
            .as_ref()
            .and_then(|(_, p)| p.subscription_groups.get(&group_id).map(String::as_str));
        status.insert(key, json!(braze_status(value)));
        Ok(())
    };
    for id in external {
        lookup(id.clone(), Identifier::ExternalId(id))?;
    }
    for email in emails {
        match normalize_email(&email) {
            Some(e) => lookup(email, Identifier::Email(e))?,
            None => return Err(bad(format!("'{email}' is not an email address"))),
        }
    }
    for phone in phones {
        lookup(phone.clone(), Identifier::Phone(phone))?;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": status, "message": "success"}),
    ))
}

/// `GET /subscription/user/status?external_id=|email=|phone=&limit=&offset=`: every group of
/// the users named.
pub async fn user_status(
    State(state): State<SharedState>,
    rest: Rest<SubscriptionUserStatus>,
) -> Answer {
    let query = rest.query.as_deref();
    let Paging { limit, offset } = Paging::<100, 100>::read(query)?;
    let mut idents = Vec::new();
    for id in query_params(query, "external_id") {
        idents.push(Identifier::ExternalId(id));
    }
    for email in query_params(query, "email") {
        idents
            .push(Identifier::Email(normalize_email(&email).ok_or_else(
                || bad(format!("'{email}' is not an email address")),
            )?));
    }
    for phone in query_params(query, "phone") {
        idents.push(Identifier::Phone(phone));
    }
    if idents.is_empty() {
        return Err(bad("name users: external_id, email or phone"));
    }
    let groups = state
        .store
        .objects(rest.workspace.id, kinds::SUBSCRIPTION_GROUP)?;
    let mut users = Vec::new();
    for ident in idents {
        for (_, profile) in state.store.find_all(rest.workspace.id, &ident)? {
            let list: Vec<Value> = groups
                .iter()
                .map(|(id, g)| json!({"id": id, "name": g["name"], "channel": capitalize(g["channel"].as_str().unwrap_or("email")),
                                      "status": braze_status(profile.subscription_groups.get(id).map(String::as_str))}))
                .collect();
            users.push(
                json!({"external_id": profile.external_id, "email": profile.email(),
                              "phone": profile.fields.get("phone"), "subscription_groups": list}),
            );
        }
    }
    let page: Vec<Value> = users.into_iter().skip(offset).take(limit).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"users": page, "message": "success"}),
    ))
}

fn capitalize(s: &str) -> String {
    match s {
        "sms" => "SMS".into(),
        "whats_app" => "WhatsApp".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
    }
}

/// The address record of an email, and the profiles holding it.
fn address_record(state: &SharedState, ws: u32, email: &str) -> Result<Value, HttpError> {
    Ok(state
        .store
        .object(ws, kinds::EMAIL_ADDRESS, email)?
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({})))
}

fn emails_of(body: &Value) -> Result<Vec<String>, HttpError> {
    let raw = one_or_many(body.get("email"), "email")?;
    if raw.is_empty() {
        return Err(bad("email is required"));
    }
    raw.iter()
        .map(|e| normalize_email(e).ok_or_else(|| bad(format!("'{e}' is not an email address"))))
        .collect()
}

/// Sets the global email state of every profile holding each address.
async fn set_profiles_state(
    state: &SharedState,
    ws: &Workspace,
    emails: &[String],
    email_state: &str,
) -> Result<(), HttpError> {
    let mut attributes = Vec::new();
    for email in emails {
        for (_, profile) in state
            .store
            .find_all(ws.id, &Identifier::Email(email.clone()))?
        {
            attributes.push(json!({"braze_id": profile.braze_id, "email_subscribe": email_state}));
        }
    }
    track(state, ws, attributes).await
}

/// Updates address records: `set` fields to now, `clear` fields removed.
async fn update_addresses(
    state: &SharedState,
    ws: u32,
    emails: &[String],
    set: &[(&str, Value)],
    clear: &[&str],
) -> Result<(), HttpError> {
    let mut writes = Vec::new();
    for email in emails {
        let mut record = address_record(state, ws, email)?;
        for (field, value) in set {
            record[*field] = value.clone();
        }
        if let Some(o) = record.as_object_mut() {
            for field in clear {
                o.remove(*field);
            }
        }
        writes.push(ObjectWrite {
            kind: kinds::EMAIL_ADDRESS.into(),
            name: email.clone(),
            value: Some(record),
        });
    }
    state.store.record(ws, writes, Vec::new()).await?;
    Ok(())
}

/// `POST /email/status` `{"email", "subscription_state"}`: for users holding the address, and
/// remembered for the address itself (so it holds for users who get it later).
pub async fn email_status(State(state): State<SharedState>, rest: Rest<EmailStatus>) -> Answer {
    let body: Value = rest.json()?;
    let emails = emails_of(&body)?;
    let email_state = body["subscription_state"]
        .as_str()
        .ok_or_else(|| bad("subscription_state is required"))?;
    if !matches!(email_state, "subscribed" | "unsubscribed" | "opted_in") {
        return Err(bad(
            "subscription_state is subscribed, unsubscribed or opted_in",
        ));
    }
    let now = time::now_ms();
    if email_state == "unsubscribed" {
        update_addresses(
            &state,
            rest.workspace.id,
            &emails,
            &[
                ("subscription_state", json!(email_state)),
                ("unsubscribed_at", json!(now)),
            ],
            &[],
        )
        .await?;
    } else {
        update_addresses(
            &state,
            rest.workspace.id,
            &emails,
            &[("subscription_state", json!(email_state))],
            &["unsubscribed_at"],
        )
        .await?;
    }
    set_profiles_state(&state, &rest.workspace, &emails, email_state).await?;
    rest.processed(emails.len());
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// `POST /email/bounce/remove` `{"email"}`.
pub async fn bounce_remove(
    State(state): State<SharedState>,
    rest: Rest<EmailBounceRemove>,
) -> Answer {
    let emails = emails_of(&rest.json()?)?;
    update_addresses(
        &state,
        rest.workspace.id,
        &emails,
        &[],
        &["hard_bounced_at"],
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// `POST /email/spam/remove` `{"email"}`.
pub async fn spam_remove(State(state): State<SharedState>, rest: Rest<EmailSpamRemove>) -> Answer {
    let emails = emails_of(&rest.json()?)?;
    update_addresses(&state, rest.workspace.id, &emails, &[], &["spam_at"]).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// `POST /email/blocklist` (and `/email/blacklist`) `{"email": [...]}`: never sent to again;
/// the users holding them are unsubscribed.
pub async fn blocklist(State(state): State<SharedState>, rest: Rest<EmailBlocklist>) -> Answer {
    let emails = emails_of(&rest.json()?)?;
    let now = time::now_ms();
    update_addresses(
        &state,
        rest.workspace.id,
        &emails,
        &[
            ("blocklisted_at", json!(now)),
            ("unsubscribed_at", json!(now)),
            ("subscription_state", json!("unsubscribed")),
        ],
        &[],
    )
    .await?;
    set_profiles_state(&state, &rest.workspace, &emails, "unsubscribed").await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

fn braze_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S +0000").to_string())
        .unwrap_or_default()
}

/// Lists addresses with `field` set, by `start_date`/`end_date` (YYYY-MM-DD) or one `email`.
fn address_list(
    state: &SharedState,
    ws: u32,
    query: Option<&str>,
    field: &str,
) -> Result<Vec<(String, i64)>, HttpError> {
    let param = |n: &str| crate::http::query_param(query, n);
    let email = param("email");
    let (start, end) = (param("start_date"), param("end_date"));
    let day = |d: &str| -> Result<i64, HttpError> {
        let date: jiff::civil::Date = d
            .parse()
            .map_err(|_| bad(format!("'{d}' is not a date (YYYY-MM-DD)")))?;
        Ok(date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|_| bad("date out of range"))?
            .timestamp()
            .as_millisecond())
    };
    let range = match (&email, &start, &end) {
        (Some(_), _, _) => None,
        (None, Some(s), Some(e)) => Some((day(s)?, day(e)? + 86_400_000)),
        _ => return Err(bad("provide start_date and end_date, or an email")),
    };
    let mut out = Vec::new();
    let records = match &email {
        Some(e) => {
            let e =
                normalize_email(e).ok_or_else(|| bad(format!("'{e}' is not an email address")))?;
            vec![(e.clone(), address_record(state, ws, &e)?)]
        }
        None => state.store.objects(ws, kinds::EMAIL_ADDRESS)?,
    };
    for (address, record) in records {
        let Some(at) = record[field].as_i64() else {
            continue;
        };
        if let Some((from, to)) = range
            && !(from..to).contains(&at)
        {
            continue;
        }
        out.push((address, at));
    }
    Ok(out)
}

/// `GET /email/hard_bounces`.
pub async fn hard_bounces(
    State(state): State<SharedState>,
    rest: Rest<EmailHardBounces>,
) -> Answer {
    let Paging { limit, offset } = Paging::<100, 500>::read(rest.query.as_deref())?;
    let mut list = address_list(
        &state,
        rest.workspace.id,
        rest.query.as_deref(),
        "hard_bounced_at",
    )?;
    list.sort_by_key(|(e, at)| (*at, e.clone()));
    let emails: Vec<Value> = list
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(e, at)| json!({"email": e, "hard_bounced_at": braze_time(at)}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"emails": emails, "message": "success"}),
    ))
}

/// `GET /email/unsubscribes`.
pub async fn unsubscribes(
    State(state): State<SharedState>,
    rest: Rest<EmailUnsubscribes>,
) -> Answer {
    let Paging { limit, offset } = Paging::<100, 500>::read(rest.query.as_deref())?;
    let mut list = address_list(
        &state,
        rest.workspace.id,
        rest.query.as_deref(),
        "unsubscribed_at",
    )?;
    list.sort_by_key(|(e, at)| (*at, e.clone()));
    if rest.query_param("sort_direction").as_deref() != Some("asc") {
        list.reverse();
    }
    let emails: Vec<Value> = list
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(e, at)| json!({"email": e, "unsubscribed_at": braze_time(at)}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"emails": emails, "message": "success"}),
    ))
}
