//! The dashboard under `/dashboard`: server-rendered pages for people, signed in with the admin
//! token.
//!
//! - [`session`]: the session cookie, CSRF tokens, sign-out.
//! - [`api`]: how every page reads and every form acts: an in-process call of the admin API
//!   (the same handlers, checks and store operations as `curl` against `/eddy/v1`).
//! - [`layout`]: the page frame, navigation and shared pieces (tables, charts, messages).
//! - One file per page: [`overview`], [`log`], [`users`], [`segments`], [`cohorts`],
//!   [`currents`], [`keys`], [`templates`] (the Liquid playground), [`campaigns`] (definitions
//!   and their sends, with cancel), [`canvases`] (steps and who waits where), [`catalogs`]
//!   (fields, sizes, items), [`messaging`] (the SMTP relay, content blocks, Connected Content
//!   hosts and credentials, subscription groups).
//!
//! Pages answer only to a valid session; everything else under `/dashboard` redirects to the
//! sign-in page. Forms post `csrf`, and `fetch` calls send `x-csrf-token`.

pub mod api;
pub mod campaigns;
pub mod canvases;
pub mod catalogs;
pub mod cohorts;
pub mod currents;
pub mod keys;
pub mod layout;
pub mod log;
pub mod messaging;
pub mod overview;
pub mod segments;
pub mod session;
pub mod templates;
pub mod users;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use eddy_store::Workspace;
use maud::html;

use crate::SharedState;
use session::Session;

/// The marker the dashboard puts on its in-process admin API calls (see [`api`]).
#[derive(Debug, Clone, Copy)]
pub struct SignedIn;

/// The dashboard's state: the server's, and the admin API router its pages call.
#[derive(Clone)]
pub struct Dash {
    /// The server's state.
    pub app: SharedState,
    /// The API routes, called in process.
    pub api: Router,
}

/// The dashboard's routes.
pub fn routes(app: SharedState, api: Router) -> Router {
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route("/dashboard/sign-in", get(sign_in_page).post(sign_in))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dashboard/assets/style.css", get(style))
        .route("/dashboard/assets/dashboard.js", get(script))
        .route("/dashboard/{ws}", get(overview::page))
        .route("/dashboard/{ws}/log", get(log::page))
        .route("/dashboard/{ws}/log/{id}", get(log::entry))
        .route("/dashboard/{ws}/users", get(users::search))
        .route("/dashboard/{ws}/users/{braze_id}", get(users::profile))
        .route(
            "/dashboard/{ws}/users/{braze_id}/delete",
            post(users::delete),
        )
        .route("/dashboard/{ws}/users/{braze_id}/merge", post(users::merge))
        .route(
            "/dashboard/{ws}/segments",
            get(segments::list).post(segments::save),
        )
        .route("/dashboard/{ws}/segments/new", get(segments::editor))
        .route("/dashboard/{ws}/segments/size", post(segments::size))
        .route(
            "/dashboard/{ws}/segments/{id}",
            get(segments::editor).post(segments::save),
        )
        .route(
            "/dashboard/{ws}/segments/{id}/delete",
            post(segments::delete),
        )
        .route(
            "/dashboard/{ws}/segments/{id}/export",
            post(segments::export),
        )
        .route("/dashboard/{ws}/cohorts", get(cohorts::page))
        .route(
            "/dashboard/{ws}/partners/{partner}/key",
            post(cohorts::generate_key),
        )
        .route(
            "/dashboard/{ws}/partners/{partner}/key/delete",
            post(cohorts::invalidate_key),
        )
        .route(
            "/dashboard/{ws}/currents",
            get(currents::page).post(currents::create),
        )
        .route(
            "/dashboard/{ws}/currents/{name}/{action}",
            post(currents::act),
        )
        .route("/dashboard/{ws}/keys", get(keys::page).post(keys::create))
        .route("/dashboard/{ws}/keys/{id}/revoke", post(keys::revoke))
        .route(
            "/dashboard/{ws}/templates",
            get(templates::playground).post(templates::render),
        )
        .route(
            "/dashboard/{ws}/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .route("/dashboard/{ws}/campaigns/{id}", get(campaigns::campaign))
        .route("/dashboard/{ws}/campaigns/{id}/edit", post(campaigns::edit))
        .route(
            "/dashboard/{ws}/campaigns/{id}/preview",
            post(campaigns::preview),
        )
        .route(
            "/dashboard/{ws}/campaigns/{id}/test-send",
            post(campaigns::test_send),
        )
        .route(
            "/dashboard/{ws}/dispatches/{id}/cancel",
            post(campaigns::cancel),
        )
        .route("/dashboard/{ws}/canvases", get(canvases::list))
        .route("/dashboard/{ws}/canvases/{id}", get(canvases::canvas))
        .route("/dashboard/{ws}/catalogs", get(catalogs::list))
        .route("/dashboard/{ws}/catalogs/{name}", get(catalogs::catalog))
        .route("/dashboard/{ws}/messaging", get(messaging::page))
        .route(
            "/dashboard/{ws}/messaging/email",
            post(messaging::save_email),
        )
        .route(
            "/dashboard/{ws}/messaging/content-blocks",
            post(messaging::save_block),
        )
        .route(
            "/dashboard/{ws}/messaging/content-blocks/{name}/delete",
            post(messaging::delete_block),
        )
        .route(
            "/dashboard/{ws}/messaging/hosts",
            post(messaging::save_hosts),
        )
        .route(
            "/dashboard/{ws}/messaging/credentials",
            post(messaging::save_credential),
        )
        .route(
            "/dashboard/{ws}/messaging/credentials/{name}/delete",
            post(messaging::delete_credential),
        )
        .route(
            "/dashboard/{ws}/messaging/subscription-groups",
            post(messaging::save_group),
        )
        .route(
            "/dashboard/{ws}/messaging/subscription-groups/{id}/delete",
            post(messaging::delete_group),
        )
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Dash { app, api })
}

/// What every dashboard answer says to the browser: never inside a frame, scripts and styles
/// from eddy only (style attributes allowed: the charts' colours), nothing sent elsewhere.
async fn security_headers(response: Response) -> Response {
    with_security_headers(response)
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    response
}

/// A signed-in request: its session (pages without a valid one redirect to sign-in).
pub struct Signed(pub Session);

impl FromRequestParts<Dash> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, Response> {
        session_of(&parts.headers, dash)
            .map(Signed)
            .ok_or_else(to_sign_in)
    }
}

fn session_of(headers: &HeaderMap, dash: &Dash) -> Option<Session> {
    let cookie = session::cookie_of(headers)?;
    dash.app.sessions.check(&cookie)
}

fn to_sign_in() -> Response {
    Redirect::to("/dashboard/sign-in").into_response()
}

/// A signed-in request about the path's workspace (404 page when there is none).
pub struct WsPage {
    /// The session.
    pub session: Session,
    /// The path's workspace.
    pub ws: Workspace,
    /// Every workspace, for the switcher.
    pub all: Vec<Workspace>,
}

impl FromRequestParts<Dash> for WsPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, Response> {
        let Signed(session) = Signed::from_request_parts(parts, dash).await?;
        let params = RawPathParams::from_request_parts(parts, dash)
            .await
            .map_err(|_| StatusCode::NOT_FOUND.into_response())?;
        let name = params
            .iter()
            .find(|(key, _)| *key == "ws")
            .map(|(_, value)| value.to_string())
            .unwrap_or_default();
        let all = dash.app.store.workspaces().unwrap_or_default();
        let Some(ws) = all.iter().find(|w| w.name == name).cloned() else {
            return Err(layout::not_found(
                &session,
                &format!("no workspace '{name}'"),
            ));
        };
        Ok(WsPage { session, ws, all })
    }
}

/// A form body, with its CSRF token checked against the session.
pub struct Form {
    text: String,
}

impl Form {
    /// Checks the body's `csrf` field; a 403 page otherwise.
    pub fn checked(body: &Bytes, session: &Session, dash: &Dash) -> Result<Form, Box<Response>> {
        let text = String::from_utf8_lossy(body).into_owned();
        let presented = crate::http::query_param(Some(&text), "csrf").unwrap_or_default();
        if !dash.app.sessions.csrf_ok(session, &presented) {
            return Err(Box::new(layout::forbidden(session)));
        }
        Ok(Form { text })
    }

    /// A field's value, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> String {
        crate::http::query_param(Some(&self.text), name)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// A field's value exactly as typed (passwords, template text); empty when absent.
    pub fn exact(&self, name: &str) -> String {
        crate::http::query_param(Some(&self.text), name).unwrap_or_default()
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        crate::http::query_params(Some(&self.text), name)
    }
}

/// A signed-in form post about the path's workspace, its CSRF token checked: the rejection is
/// the sign-in redirect, the 404 page, or the 403 page.
pub struct WsForm {
    /// The page's session and workspace.
    pub page: WsPage,
    /// The form's fields.
    pub form: Form,
}

impl FromRequest<Dash> for WsForm {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, dash: &Dash) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let page = WsPage::from_request_parts(&mut parts, dash).await?;
        let request = axum::extract::Request::from_parts(parts, body);
        let bytes = Bytes::from_request(request, dash)
            .await
            .map_err(IntoResponse::into_response)?;
        let form = Form::checked(&bytes, &page.session, dash).map_err(|refused| *refused)?;
        Ok(WsForm { page, form })
    }
}

/// Checks the `x-csrf-token` header of a script's call.
pub fn csrf_header_ok(headers: &HeaderMap, session: &Session, dash: &Dash) -> bool {
    let presented = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    dash.app.sessions.csrf_ok(session, presented)
}

/// `/dashboard`: the workspaces when signed in, else the sign-in page.
async fn home(State(dash): State<Dash>, headers: HeaderMap) -> Response {
    let Some(session) = session_of(&headers, &dash) else {
        return to_sign_in();
    };
    let workspaces = dash.app.store.workspaces().unwrap_or_default();
    let body = html! {
        h1 { "Workspaces" }
        p { "Pick the workspace to look at." }
        ul.cards {
            @for ws in &workspaces {
                li { a href={ "/dashboard/" (ws.name) } { (ws.name) } }
            }
        }
    };
    layout::frame("Workspaces", None, Some(&session), body)
}

async fn sign_in_page(State(dash): State<Dash>, headers: HeaderMap) -> Response {
    if session_of(&headers, &dash).is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    layout::sign_in(None, StatusCode::OK)
}

async fn sign_in(
    State(dash): State<Dash>,
    client: Option<axum::Extension<crate::throttle::ClientAddr>>,
    body: Bytes,
) -> Response {
    let client = client.map(|c| c.0.0);
    if let Err(wait) = dash.app.auth_throttle.check(client) {
        return layout::sign_in(
            Some(&format!(
                "Too many wrong admin tokens from this address; try again in {wait} s."
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let text = String::from_utf8_lossy(&body);
    let token = crate::http::query_param(Some(&text), "token").unwrap_or_default();
    if token.is_empty() || !session::Sessions::token_ok(&dash.app.admin_token_hash, &token) {
        dash.app.auth_throttle.failed(client);
        tracing::warn!("dashboard sign-in refused: wrong admin token");
        return layout::sign_in(
            Some("That is not the admin token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let (_, cookie) = match dash.app.sessions.issue() {
        Ok(issued) => issued,
        Err(e) => {
            tracing::error!(error = %e, "no session could be made");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, dash.app.sessions.set_cookie(&cookie)),
            (header::LOCATION, "/dashboard".to_string()),
        ],
    )
        .into_response()
}

async fn sign_out(State(dash): State<Dash>, Signed(session): Signed, body: Bytes) -> Response {
    if let Err(refused) = Form::checked(&body, &session, &dash) {
        return *refused;
    }
    if let Err(e) = dash.app.sessions.sign_out(&session).await {
        tracing::error!(error = %e, "a sign-out could not be stored");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, dash.app.sessions.clear_cookie()),
            (header::LOCATION, "/dashboard/sign-in".to_string()),
        ],
    )
        .into_response()
}

async fn style() -> Response {
    asset("text/css", include_str!("assets/style.css"))
}

async fn script() -> Response {
    asset("text/javascript", include_str!("assets/dashboard.js"))
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        text,
    )
        .into_response()
}

/// Any other path under `/dashboard` (the router's fallback sends them here): sign-in first,
/// then a 404 page.
pub fn unknown(app: &crate::AppState, headers: &HeaderMap) -> Response {
    let session = session::cookie_of(headers).and_then(|cookie| app.sessions.check(&cookie));
    let page = match session {
        Some(session) => layout::not_found(&session, "no such page"),
        None => to_sign_in(),
    };
    with_security_headers(page)
}
