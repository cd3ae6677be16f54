//! The links eddy puts in emails: the open pixel, click redirects, subscription links, and the
//! one-click `List-Unsubscribe` (RFC 8058: `GET` shows a confirmation, `POST` unsubscribes, so
//! that a mail scanner following links changes nothing). Links are signed: a bad one is a 404.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_messaging::dispatch::Dispatch;
use eddy_messaging::events::{Context, message_type};
use eddy_messaging::kinds;
use eddy_messaging::tracking::Link;
use eddy_model::ApiError;
use eddy_model::time;
use eddy_model::track::validate_track;
use eddy_model::wire::TrackRequest;
use serde_json::{Value, json};

use crate::SharedState;
use crate::http::HttpError;

type Answer = Result<Response, HttpError>;

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// What a valid link is about.
struct Subject {
    link: Link,
    ws: eddy_store::Workspace,
    context: Context,
    email: Option<String>,
    variation: Option<String>,
}

fn subject(state: &SharedState, token: &str, kind: char) -> Result<Subject, HttpError> {
    let not_found = || HttpError(ApiError::NotFound);
    let link = state.engine.signer().open(token).ok_or_else(not_found)?;
    if link.k != kind {
        return Err(not_found());
    }
    let ws = state.store.workspace_by_id(link.w)?.ok_or_else(not_found)?;
    let profile = state.store.profile(ws.id, link.p)?.ok_or_else(not_found)?;
    // The dispatch may have expired with the history; the link still works.
    let dispatch: Option<Dispatch> =
        eddy_messaging::records::dispatch(&state.store, ws.id, &link.d)?;
    let (campaign_id, campaign_name, send_id, variation) = match &dispatch {
        Some(d) => {
            let own = d
                .messages
                .email
                .as_ref()
                .and_then(|e| e.message_variation_id.clone());
            let variation = eddy_messaging::campaign::variation_id(
                d.campaign_id.as_deref(),
                "email",
                own.as_deref(),
            );
            (
                d.campaign_id.clone(),
                d.campaign_name.clone(),
                d.send_id.clone(),
                variation,
            )
        }
        None => (None, None, None, None),
    };
    let context = Context {
        send_id,
        campaign_id,
        campaign_name,
        ..Context::of(&profile, &ws.app_group_id, link.d.clone())
    };
    Ok(Subject {
        email: profile.email().map(str::to_string),
        link,
        ws,
        context,
        variation,
    })
}

fn user_agent(headers: &HeaderMap) -> Value {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map_or(Value::Null, |s| json!(s))
}

async fn emit(
    state: &SharedState,
    s: &Subject,
    name: &str,
    extra: Vec<(&'static str, Value)>,
) -> Result<(), HttpError> {
    let mut fields = vec![("email_address", json!(s.email))];
    fields.extend(extra);
    let event = s.context.event(
        message_type("email", name),
        time::now_ms(),
        s.variation.as_deref(),
        fields,
    );
    state.store.record(s.ws.id, Vec::new(), vec![event]).await?;
    Ok(())
}

/// `GET /eddy/t/o/{token}`: an Open, and the pixel.
pub async fn open(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let s = subject(&state, &token, 'o')?;
    emit(
        &state,
        &s,
        "Open",
        vec![("user_agent", user_agent(&headers))],
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PIXEL,
    )
        .into_response())
}

/// `GET /eddy/t/c/{token}`: a Click, and a redirect to where the email pointed.
pub async fn click(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let s = subject(&state, &token, 'c')?;
    let url = s.link.u.clone().ok_or(HttpError(ApiError::NotFound))?;
    emit(
        &state,
        &s,
        "Click",
        vec![("url", json!(url)), ("user_agent", user_agent(&headers))],
    )
    .await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
}

/// Sets the user's global email state (a `/users/track` write with its state-change event),
/// and records the Unsubscribe when that is what it was.
async fn set_state(state: &SharedState, s: &Subject, email_state: &str) -> Result<(), HttpError> {
    let request = TrackRequest {
        attributes: Some(vec![
            json!({"braze_id": s.context.braze_id, "email_subscribe": email_state}),
        ]),
        events: None,
        purchases: None,
    };
    let batch = validate_track(&request, time::now_ms()).map_err(HttpError)?;
    state.store.track(s.ws.clone(), batch).await?;
    if email_state == "unsubscribed" {
        // The address joins `/email/unsubscribes` in the commit that records the event.
        let mut writes = Vec::new();
        if let Some(email) = &s.email {
            let mut record = state
                .store
                .object(s.ws.id, kinds::EMAIL_ADDRESS, email)?
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            record["unsubscribed_at"] = json!(time::now_ms());
            record["subscription_state"] = json!("unsubscribed");
            writes.push(eddy_store::ObjectWrite {
                kind: kinds::EMAIL_ADDRESS.into(),
                name: email.clone(),
                value: Some(record),
            });
        }
        let event = s.context.event(
            message_type("email", "Unsubscribe"),
            time::now_ms(),
            s.variation.as_deref(),
            vec![("email_address", json!(s.email))],
        );
        state.store.record(s.ws.id, writes, vec![event]).await?;
    }
    Ok(())
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:32em;margin:4em auto\"><h1>{title}</h1>{body}</body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn state_text(email_state: &str) -> &'static str {
    match email_state {
        "unsubscribed" => "You are unsubscribed",
        "opted_in" => "You are opted in",
        _ => "You are subscribed",
    }
}

/// `GET /eddy/t/s/{token}`: `${set_user_to_…_url}` links change the state when followed, as
/// Braze's do.
pub async fn subscription(
    State(state): State<SharedState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let s = subject(&state, &token, 's')?;
    let email_state = s.link.s.clone().unwrap_or_else(|| "unsubscribed".into());
    if !matches!(
        email_state.as_str(),
        "unsubscribed" | "subscribed" | "opted_in"
    ) {
        return Err(HttpError(ApiError::NotFound));
    }
    emit(
        &state,
        &s,
        "Click",
        vec![
            ("url", json!(format!("/eddy/t/s/{token}"))),
            ("user_agent", user_agent(&headers)),
        ],
    )
    .await?;
    set_state(&state, &s, &email_state).await?;
    Ok(page(
        state_text(&email_state),
        "<p>Your email preferences are saved.</p>",
    ))
}

/// `GET /eddy/t/l/{token}`: asks for confirmation (a button that posts).
pub async fn list_unsubscribe_page(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Answer {
    subject(&state, &token, 'l')?;
    Ok(page(
        "Unsubscribe",
        &format!(
            "<form method=\"post\" action=\"/eddy/t/l/{token}\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>"
        ),
    ))
}

/// `POST /eddy/t/l/{token}`: RFC 8058 one-click unsubscribe.
pub async fn list_unsubscribe(
    State(state): State<SharedState>,
    Path(token): Path<String>,
) -> Answer {
    let s = subject(&state, &token, 'l')?;
    set_state(&state, &s, "unsubscribed").await?;
    Ok(page(
        state_text("unsubscribed"),
        "<p>You will not get these emails any more.</p>",
    ))
}
