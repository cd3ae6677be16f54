//! The Liquid playground: a template rendered for a stored user with trigger properties,
//! through the admin API's renderer.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::html;
use serde_json::{Map, Value, json};

use super::layout::{self, cell, csrf};
use super::{Dash, WsForm, WsPage};

/// What the playground shows: the inputs, and the rendering when there is one.
#[derive(Default)]
struct Playground {
    template: String,
    user_kind: String,
    user: String,
    properties: String,
    result: Option<Result<Value, String>>,
}

/// `GET /dashboard/{ws}/templates`.
pub async fn playground(page: WsPage) -> Response {
    let draft = Playground {
        template: "Hi {{${first_name} | default: 'there'}}!".into(),
        user_kind: "external_id".into(),
        ..Playground::default()
    };
    render_page(&page, draft, StatusCode::OK)
}

fn render_page(page: &WsPage, draft: Playground, status: StatusCode) -> Response {
    let ws = &page.ws.name;
    let body = html! {
        h1 { "Liquid playground" }
        p { "Renders a template as a message to one stored user would be, with Braze's Liquid (Connected Content included)." }
        form method="post" action={ "/dashboard/" (ws) "/templates" } {
            (csrf(&page.session))
            div { label for="template" { "Template" } textarea #template name="template" rows="8" spellcheck="false" { (draft.template) } }
            div.row {
                div {
                    label for="user-kind" { "Render as the user with" }
                    select #user-kind name="user_kind" {
                        @for (value, label) in [("external_id", "external id"), ("braze_id", "braze id"), ("email", "email"), ("alias", "alias (label:name)"), ("none", "no user")] {
                            option value=(value) selected[draft.user_kind == value] { (label) }
                        }
                    }
                }
                div { label for="user" { "Identifier" } input #user name="user" value=(draft.user); }
            }
            div { label for="properties" { "Trigger properties (JSON object)" } textarea #properties name="properties" rows="3" spellcheck="false" { (draft.properties) } }
            button type="submit" { "Render" }
        }
        @match &draft.result {
            Some(Ok(answer)) => {
                @if answer["aborted"].as_bool() == Some(true) {
                    h2 { "Aborted" }
                    p.flash.error role="alert" { "The message would not be sent: " (cell(&answer["abort_reason"])) }
                } @else {
                    h2 { "Output" }
                    pre.output #output tabindex="0" { (cell(&answer["output"])) }
                }
            }
            Some(Err(message)) => { h2 { "Refused" } p.flash.error role="alert" { (message) } }
            None => {}
        }
    };
    layout::page_with_status(
        status,
        "Liquid playground",
        Some((page, "/templates")),
        Some(&page.session),
        body,
    )
}

/// `POST /dashboard/{ws}/templates`.
pub async fn render(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let mut draft = Playground {
        template: form.get("template"),
        user_kind: form.get("user_kind"),
        user: form.get("user"),
        properties: form.get("properties"),
        result: None,
    };
    let mut request = Map::new();
    request.insert("template".into(), json!(draft.template));
    if draft.user_kind != "none" && !draft.user.is_empty() {
        let user = match draft.user_kind.as_str() {
            "alias" => match draft.user.split_once(':') {
                Some((label, name)) => {
                    json!({"user_alias": {"alias_label": label, "alias_name": name}})
                }
                None => {
                    draft.result = Some(Err("write an alias as label:name".into()));
                    return render_page(&page, draft, StatusCode::BAD_REQUEST);
                }
            },
            kind => json!({ kind: draft.user }),
        };
        request.insert("user".into(), user);
    }
    if !draft.properties.is_empty() {
        match serde_json::from_str::<Value>(&draft.properties) {
            Ok(Value::Object(properties)) => {
                request.insert("api_trigger_properties".into(), Value::Object(properties));
            }
            _ => {
                draft.result = Some(Err("trigger properties must be a JSON object".into()));
                return render_page(&page, draft, StatusCode::BAD_REQUEST);
            }
        }
    }
    let ws = &page.ws.name;
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/liquid/render"),
            Some(&Value::Object(request)),
        )
        .await;
    let status = reply.status;
    draft.result = Some(if reply.ok() {
        Ok(reply.body)
    } else {
        let line = reply
            .get("line")
            .as_u64()
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        Err(format!("{}{line}", reply.message()))
    });
    render_page(&page, draft, status)
}
