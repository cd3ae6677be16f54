//! Braze's template endpoints: `/content_blocks/*` and `/templates/email/*`, over the content
//! blocks the admin API and Liquid already use and the email templates sends can name.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use eddy_messaging::library::{self, BlockChange, ContentBlock, EmailTemplate};
use eddy_model::error::ApiError;
use eddy_model::time;
use serde_json::{Map, Value, json};

use crate::SharedState;
use crate::extract::{
    ContentBlocksCreate, ContentBlocksInfo, ContentBlocksList, ContentBlocksUpdate, Paging, Rest,
    TemplatesEmailCreate, TemplatesEmailInfo, TemplatesEmailList, TemplatesEmailUpdate,
};
use crate::http::{HttpError, json_response, query_param};

type Answer = Result<Response, HttpError>;

fn bad(text: &str) -> HttpError {
    HttpError(ApiError::BadRequest(text.to_string()))
}

/// The body as a JSON object.
fn object<P>(rest: &Rest<P>) -> Result<Map<String, Value>, HttpError> {
    match rest.json::<Value>()? {
        Value::Object(map) => Ok(map),
        _ => Err(bad("the body must be a JSON object")),
    }
}

/// The id an update names, or the text saying it is missing.
fn id_in(body: &Map<String, Value>, field: &str, missing: &str) -> Result<String, HttpError> {
    match body.get(field) {
        Some(Value::String(id)) if !id.trim().is_empty() => Ok(id.clone()),
        _ => Err(bad(missing)),
    }
}

/// `modified_after` and `modified_before` of a list, as UTC ms, with Braze's texts.
fn modified_window(query: Option<&str>) -> Result<(Option<i64>, Option<i64>), HttpError> {
    let read = |name: &str, text: &str| -> Result<Option<i64>, HttpError> {
        match query_param(query, name) {
            None => Ok(None),
            Some(value) => time::parse_time(&value).map(Some).ok_or_else(|| bad(text)),
        }
    };
    let after = read("modified_after", "Modified after time is invalid.")?;
    let before = read("modified_before", "Modified before time is invalid.")?;
    if let (Some(a), Some(b)) = (after, before)
        && a > b
    {
        return Err(bad(
            "Modified after time must be earlier than or the same as modified before time.",
        ));
    }
    Ok((after, before))
}

fn within(window: (Option<i64>, Option<i64>), at: &str) -> bool {
    let Some(at) = time::parse_time(at) else {
        return window == (None, None);
    };
    window.0.is_none_or(|a| at >= a) && window.1.is_none_or(|b| at <= b)
}

/// The answer to a create or an update of a block.
fn block_saved(status: StatusCode, name: &str, block: &ContentBlock) -> Response {
    json_response(
        status,
        &json!({
            "content_block_id": block.id,
            "liquid_tag": library::liquid_tag(name),
            "created_at": block.created_at.as_deref().unwrap_or(&block.updated_at),
            "message": "success",
        }),
    )
}

/// `POST /content_blocks/create`.
pub async fn create_block(
    State(state): State<SharedState>,
    rest: Rest<ContentBlocksCreate>,
) -> Answer {
    let change = BlockChange::read(&object(&rest)?)?;
    let now = time::format_iso(time::now_ms());
    let (name, block) =
        library::create_block(&state.store, rest.workspace.id, change, &now).await?;
    Ok(block_saved(StatusCode::CREATED, &name, &block))
}

/// `POST /content_blocks/update`.
pub async fn update_block(
    State(state): State<SharedState>,
    rest: Rest<ContentBlocksUpdate>,
) -> Answer {
    let body = object(&rest)?;
    let id = id_in(
        &body,
        "content_block_id",
        "Content Block ID cannot be blank.",
    )?;
    let change = BlockChange::read(&body)?;
    let now = time::format_iso(time::now_ms());
    let (name, block) =
        library::update_block(&state.store, rest.workspace.id, &id, change, &now).await?;
    Ok(block_saved(StatusCode::OK, &name, &block))
}

/// `GET /content_blocks/list`.
pub async fn list_blocks(
    State(state): State<SharedState>,
    rest: Rest<ContentBlocksList>,
) -> Answer {
    let query = rest.query.as_deref();
    let window = modified_window(query)?;
    let paging = Paging::<100, 1000>::read(query)?;
    let ws = rest.workspace.id;
    let mut blocks: Vec<(String, ContentBlock)> = library::blocks(&state.store, ws)?
        .into_iter()
        .filter(|(_, b)| within(window, &b.updated_at))
        .collect();
    blocks.sort_by(|a, b| created(&a.1).cmp(created(&b.1)).then(a.0.cmp(&b.0)));
    let mut listed = Vec::new();
    for (name, block) in blocks.into_iter().skip(paging.offset).take(paging.limit) {
        listed.push(json!({
            "content_block_id": block.id,
            "name": name,
            "content_type": block.content_type(),
            "liquid_tag": library::liquid_tag(&name),
            "inclusion_count": library::inclusions(&state.store, ws, &name)?.len(),
            "created_at": created(&block),
            "last_edited": block.updated_at,
            "tags": block.tags,
        }));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"count": listed.len(), "content_blocks": listed, "message": "success"}),
    ))
}

fn created(block: &ContentBlock) -> &str {
    block.created_at.as_deref().unwrap_or(&block.updated_at)
}

/// `GET /content_blocks/info`.
pub async fn block_info(State(state): State<SharedState>, rest: Rest<ContentBlocksInfo>) -> Answer {
    let query = rest.query.as_deref();
    let Some(id) = query_param(query, "content_block_id").filter(|id| !id.trim().is_empty()) else {
        return Err(bad("Content Block ID cannot be blank."));
    };
    let ws = rest.workspace.id;
    let Some((name, block)) = library::block_by_id(&state.store, ws, &id)? else {
        return Err(bad("Content Block ID is invalid for this App Group."));
    };
    let campaigns = library::inclusions(&state.store, ws, &name)?;
    let mut answer = json!({
        "content_block_id": block.id,
        "name": name,
        "content": block.content,
        "description": block.description,
        "content_type": block.content_type(),
        "tags": block.tags,
        "created_at": created(&block),
        "last_edited": block.updated_at,
        "inclusion_count": campaigns.len(),
        "message": "success",
    });
    if query_param(query, "include_inclusion_data").as_deref() == Some("true") {
        answer["inclusion_data"] = campaigns
            .iter()
            .map(|id| json!({"campaign_id": id}))
            .collect();
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /templates/email/create`.
pub async fn create_email_template(
    State(state): State<SharedState>,
    rest: Rest<TemplatesEmailCreate>,
) -> Answer {
    let body = object(&rest)?;
    let now = time::format_iso(time::now_ms());
    let mut template = EmailTemplate {
        created_at: now.clone(),
        updated_at: now,
        ..EmailTemplate::default()
    };
    template.apply(&body)?;
    let ws = rest.workspace.id;
    template.check_blocks(&state.store, ws)?;
    let id = eddy_store::ids::uuid_v4();
    let value = template.to_stored()?;
    state
        .store
        .create_object(ws, library::EMAIL_TEMPLATE, id.clone(), value)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"email_template_id": id, "message": "success"}),
    ))
}

/// `POST /templates/email/update`: at least one field besides the id.
pub async fn update_email_template(
    State(state): State<SharedState>,
    rest: Rest<TemplatesEmailUpdate>,
) -> Answer {
    let body = object(&rest)?;
    let id = id_in(&body, "email_template_id", "email_template_id is required")?;
    if body
        .keys()
        .all(|k| k == "email_template_id" || k == "api_key")
    {
        return Err(bad(
            "give at least one field to update besides email_template_id",
        ));
    }
    let ws = rest.workspace.id;
    let Some(mut template) = library::email_template(&state.store, ws, &id)? else {
        return Err(unknown_template(&id));
    };
    template.apply(&body)?;
    template.check_blocks(&state.store, ws)?;
    template.updated_at = time::format_iso(time::now_ms());
    let value = template.to_stored()?;
    state
        .store
        .put_object(ws, library::EMAIL_TEMPLATE, id.clone(), value)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"email_template_id": id, "message": "success"}),
    ))
}

fn unknown_template(id: &str) -> HttpError {
    bad(&format!(
        "email_template_id '{id}' names no email template of this workspace"
    ))
}

/// `GET /templates/email/list`.
pub async fn list_email_templates(
    State(state): State<SharedState>,
    rest: Rest<TemplatesEmailList>,
) -> Answer {
    let query = rest.query.as_deref();
    let window = modified_window(query)?;
    let paging = Paging::<100, 1000>::read(query)?;
    let mut templates: Vec<(String, EmailTemplate)> =
        library::email_templates(&state.store, rest.workspace.id)?
            .into_iter()
            .filter(|(_, t)| within(window, &t.updated_at))
            .collect();
    templates.sort_by(|a, b| a.1.created_at.cmp(&b.1.created_at).then(a.0.cmp(&b.0)));
    let listed: Vec<Value> = templates
        .into_iter()
        .skip(paging.offset)
        .take(paging.limit)
        .map(|(id, t)| {
            json!({
                "email_template_id": id,
                "template_name": t.template_name,
                "created_at": t.created_at,
                "updated_at": t.updated_at,
                "tags": t.tags,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"count": listed.len(), "templates": listed, "message": "success"}),
    ))
}

/// `GET /templates/email/info`.
pub async fn email_template_info(
    State(state): State<SharedState>,
    rest: Rest<TemplatesEmailInfo>,
) -> Answer {
    let Some(id) =
        query_param(rest.query.as_deref(), "email_template_id").filter(|id| !id.trim().is_empty())
    else {
        return Err(bad("email_template_id is required"));
    };
    let Some(t) = library::email_template(&state.store, rest.workspace.id, &id)? else {
        return Err(unknown_template(&id));
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "email_template_id": id,
            "template_name": t.template_name,
            "subject": t.subject,
            "preheader": t.preheader,
            "body": t.body,
            "plaintext_body": t.plaintext_body,
            "should_inline_css": t.should_inline_css,
            "tags": t.tags,
            "created_at": t.created_at,
            "updated_at": t.updated_at,
            "message": "success",
        }),
    ))
}
