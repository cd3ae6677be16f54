//! Braze Liquid in eddy: render a template for a stored user (`POST …/liquid/render`), the
//! workspace's content blocks, and what Connected Content may call (extra hosts, named basic
//! auth credentials). Rendering runs on a blocking thread: Connected Content waits on HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eddy_liquid::http::{HttpClient, Rules};
use eddy_liquid::{Object, Rendered, Stop, Template, Value};
use eddy_model::ApiError;
use eddy_model::track::{Identifier, normalize_email};
use eddy_model::wire::UserAlias;
use eddy_store::Workspace;
use serde::Deserialize;
use serde_json::{Map, json};

use crate::SharedState;
use crate::extract::{AdminWorkspace, JsonBody};
use crate::http::{HttpError, json_response};

type Answer = Result<Response, HttpError>;

use eddy_messaging::library;
use eddy_messaging::templates::{CONNECTED_CONTENT, CONTENT_BLOCK, CREDENTIAL};

/// The body of `POST /eddy/v1/workspaces/{ws}/liquid/render`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    template: String,
    #[serde(default)]
    variables: Option<Map<String, serde_json::Value>>,
    #[serde(default)]
    user: Option<serde_json::Value>,
    #[serde(default)]
    api_trigger_properties: Option<Map<String, serde_json::Value>>,
    #[serde(default)]
    canvas_entry_properties: Option<Map<String, serde_json::Value>>,
    #[serde(default)]
    event_properties: Option<Map<String, serde_json::Value>>,
    #[serde(default)]
    campaign: Option<Map<String, serde_json::Value>>,
}

/// `POST /eddy/v1/workspaces/{ws}/liquid/render` → `{"output", "aborted"}`, or
/// `{"output": null, "aborted": true, "abort_reason"}`; 400 `{"message", "line"}` when the
/// template does not parse.
pub async fn render(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(req): JsonBody<RenderRequest>,
) -> Answer {
    let template = match Template::parse(&req.template) {
        Ok(t) => t,
        Err(e) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": e.message, "line": e.line}),
            ));
        }
    };
    let mut variables = match &req.user {
        Some(identifier) => eddy_liquid::user_variables(&find_user(&state, &ws, identifier)?),
        None => Object::default(),
    };
    let objects = [
        ("api_trigger_properties", req.api_trigger_properties),
        ("canvas_entry_properties", req.canvas_entry_properties),
        ("event_properties", req.event_properties),
        ("campaign", req.campaign),
    ];
    for (name, object) in objects {
        let value = object.map(serde_json::Value::Object).unwrap_or(json!({}));
        variables.insert(name.to_string(), Value::from_json(&value));
    }
    for (k, v) in req.variables.unwrap_or_default() {
        variables.insert(k, Value::from_json(&v));
    }
    let blocks = content_blocks(&state, &ws)?;
    let rules = rules(&state, &ws)?;
    let http = state.liquid_http.clone();
    let scope = ws.id.to_string();
    let limits = state.liquid_limits;
    let store = state.store.clone();
    let ws_id = ws.id;
    let rendered = tokio::task::spawn_blocking(move || {
        let catalogs = eddy_messaging::catalogs::StoreCatalogs {
            store: &store,
            ws: ws_id,
        };
        let fetch = http.scoped(&scope, &rules).with_catalogs(&catalogs);
        template.render_report(&variables, limits, Some(&fetch), Some(&blocks))
    })
    .await
    .map_err(|_| ApiError::Internal)?;
    // A preview keeps Shopify's inline error text, and lists what a send would abort on.
    let report = match rendered {
        Ok(report) => report,
        Err(Stop::Fatal(message)) | Err(Stop::Error(message)) => {
            return Err(ApiError::BadRequest(message).into());
        }
        Err(Stop::Abort(reason)) => {
            let body = json!({"output": null, "aborted": true, "abort_reason": reason});
            return Ok(json_response(StatusCode::OK, &body));
        }
    };
    let mut body = match report.rendered {
        Rendered::Output(output) => json!({"output": output, "aborted": false}),
        Rendered::Aborted(reason) => {
            json!({"output": null, "aborted": true, "abort_reason": reason})
        }
    };
    if !report.errors.is_empty() {
        body["errors"] = json!(report.errors);
    }
    if !report.warnings.is_empty() {
        body["warnings"] = json!(report.warnings);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// The user an identifier object names, as `/users/export/ids` exports it.
fn find_user(
    state: &SharedState,
    ws: &Workspace,
    identifier: &serde_json::Value,
) -> Result<serde_json::Value, HttpError> {
    let invalid = || {
        ApiError::BadRequest(
            "'user' is one identifier object: {\"external_id\"}, {\"user_alias\": {\"alias_name\", \"alias_label\"}}, {\"braze_id\"} or {\"email\"}".into(),
        )
    };
    let object = identifier.as_object().ok_or_else(invalid)?;
    if object.len() != 1 {
        return Err(invalid().into());
    }
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string).ok_or_else(invalid);
    let ident = match object.iter().next().ok_or_else(invalid)? {
        (k, v) if k == "external_id" => Identifier::ExternalId(text(v)?),
        (k, v) if k == "braze_id" => Identifier::BrazeId(text(v)?),
        (k, v) if k == "email" => {
            Identifier::Email(normalize_email(&text(v)?).ok_or_else(invalid)?)
        }
        (k, v) if k == "user_alias" => {
            let alias: UserAlias = serde_json::from_value(v.clone()).map_err(|_| invalid())?;
            Identifier::Alias(alias)
        }
        _ => return Err(invalid().into()),
    };
    let (_, profile) = state
        .store
        .find(ws.id, &ident)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("user {identifier}")))?;
    Ok(profile.export(None))
}

/// The workspace's content blocks, parsed (a block that does not parse is named).
fn content_blocks(
    state: &SharedState,
    ws: &Workspace,
) -> Result<HashMap<String, Template>, HttpError> {
    Ok(eddy_messaging::templates::content_blocks(
        &state.store,
        ws.id,
    )?)
}

/// What Connected Content may call for this workspace.
fn rules(state: &SharedState, ws: &Workspace) -> Result<Rules, HttpError> {
    Ok(eddy_messaging::templates::rules(&state.store, ws.id)?)
}

/// A content block as the admin API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentBlock {
    content: String,
    #[serde(default)]
    description: Option<String>,
}

fn valid_name(name: &str) -> Result<(), HttpError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(
            ApiError::BadRequest("names are 1 to 100 letters, digits, '_', '-' or '.'".into())
                .into(),
        )
    }
}

/// `PUT /eddy/v1/workspaces/{ws}/content-blocks/{name}` `{"content", "description"?}`: saved if
/// its Liquid parses (else 400 with the line).
pub async fn put_content_block(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(block): JsonBody<ContentBlock>,
) -> Answer {
    valid_name(&name)?;
    if let Err(e) = Template::parse(&block.content) {
        return Ok(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": e.message, "line": e.line}),
        ));
    }
    let now = eddy_model::time::format_iso(eddy_model::time::now_ms());
    // A block saved again keeps its id, state, tags and creation time.
    let saved = match state.store.object(ws.id, CONTENT_BLOCK, &name)? {
        Some(stored) => {
            let mut saved = library::ContentBlock::from_stored(&name, stored)?;
            saved.content = block.content;
            saved.description = block.description;
            saved.updated_at = now;
            saved
        }
        None => library::ContentBlock {
            id: eddy_store::ids::uuid_v4(),
            content: block.content,
            description: block.description,
            state: library::BlockState::Active,
            tags: Vec::new(),
            created_at: Some(now.clone()),
            updated_at: now,
        },
    };
    let value = saved.to_stored()?;
    state
        .store
        .put_object(ws.id, CONTENT_BLOCK, name.clone(), value.clone())
        .await?;
    Ok(json_response(StatusCode::OK, &with_name(&name, value)))
}

fn with_name(name: &str, mut value: serde_json::Value) -> serde_json::Value {
    if let Some(o) = value.as_object_mut() {
        o.insert("name".into(), json!(name));
    }
    value
}

/// `GET /eddy/v1/workspaces/{ws}/content-blocks`.
pub async fn list_content_blocks(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let blocks: Vec<_> = state
        .store
        .objects(ws.id, CONTENT_BLOCK)?
        .into_iter()
        .map(|(name, v)| with_name(&name, v))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"content_blocks": blocks}),
    ))
}

/// `GET /eddy/v1/workspaces/{ws}/content-blocks/{name}`.
pub async fn get_content_block(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let value = state
        .store
        .object(ws.id, CONTENT_BLOCK, &name)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("content block '{name}'")))?;
    Ok(json_response(StatusCode::OK, &with_name(&name, value)))
}

/// `DELETE /eddy/v1/workspaces/{ws}/content-blocks/{name}`.
pub async fn delete_content_block(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state
        .store
        .delete_object(ws.id, CONTENT_BLOCK, name)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Connected Content settings of a workspace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectedContentSettings {
    allowed_hosts: Vec<String>,
}

/// `PUT /eddy/v1/workspaces/{ws}/connected-content` `{"allowed_hosts": [...]}`: hosts (or
/// `host:port`) Connected Content may call beyond public addresses on ports 80 and 443.
pub async fn put_connected_content(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(settings): JsonBody<ConnectedContentSettings>,
) -> Answer {
    if let Err(invalid) = eddy_net::AllowedHosts::parse(&settings.allowed_hosts) {
        return Err(ApiError::BadRequest(invalid.to_string()).into());
    }
    let value = json!({"allowed_hosts": settings.allowed_hosts});
    state
        .store
        .put_object(ws.id, CONNECTED_CONTENT, "settings".into(), value.clone())
        .await?;
    Ok(json_response(StatusCode::OK, &value))
}

/// `GET /eddy/v1/workspaces/{ws}/connected-content`: the allowed hosts and the names of the
/// stored credentials (never their secrets).
pub async fn get_connected_content(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    let rules = rules(&state, &ws)?;
    let mut names: Vec<String> = rules.credentials.into_keys().collect();
    names.sort();
    let listed = state
        .store
        .object(ws.id, CONNECTED_CONTENT, "settings")?
        .map(|settings| settings["allowed_hosts"].clone())
        .unwrap_or_else(|| json!([]));
    Ok(json_response(
        StatusCode::OK,
        &json!({"allowed_hosts": listed, "credentials": names}),
    ))
}

/// A basic auth credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    username: String,
    password: String,
}

/// `PUT /eddy/v1/workspaces/{ws}/connected-content/credentials/{name}`
/// `{"username", "password"}`: for `:basic_auth name`; the password is sealed and never shown.
pub async fn put_credential(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(credential): JsonBody<Credential>,
) -> Answer {
    valid_name(&name)?;
    let value = json!({"username": credential.username, "password": credential.password});
    state
        .store
        .put_object(ws.id, CREDENTIAL, name.clone(), value)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "username": credential.username}),
    ))
}

/// `DELETE /eddy/v1/workspaces/{ws}/connected-content/credentials/{name}`.
pub async fn delete_credential(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    state.store.delete_object(ws.id, CREDENTIAL, name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The shared Connected Content client of a server.
pub fn http_client() -> Result<Arc<HttpClient>, String> {
    let runtime = tokio::runtime::Handle::current();
    HttpClient::new(runtime, std::time::Duration::from_millis(200)).map(Arc::new)
}
