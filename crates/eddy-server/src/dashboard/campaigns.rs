//! Campaigns: the list with a form for a new one (its definition as JSON, checked by the admin
//! API, Liquid included), a campaign's page with its sends (live while one is going out, each
//! scheduled or sending one with a Cancel button), a preview of every message field for a
//! chosen user, a test send to one user, and its definition, editable in place.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::Value;

use super::api::encode;
use super::layout::{self, cell, csrf, flash, number};
use super::{Dash, WsForm, WsPage};

/// What a new campaign's form starts with: Braze's webhook message, personalised.
const EXAMPLE: &str = r#"{
  "name": "Welcome",
  "messages": {
    "webhook": {
      "url": "https://example.com/hooks/welcome",
      "request_method": "POST",
      "request_headers": {"Content-Type": "application/json"},
      "body": "{\"user\": \"{{${user_id}}}\", \"name\": \"{{${first_name} | default: 'there'}}\"}"
    }
  }
}"#;

/// `GET /dashboard/{ws}/campaigns`.
pub async fn list(State(dash): State<Dash>, page: WsPage) -> Response {
    render_list(&dash, &page, None, EXAMPLE.to_string(), StatusCode::OK).await
}

async fn render_list(
    dash: &Dash,
    page: &WsPage,
    outcome: Option<Result<String, String>>,
    draft: String,
    status: StatusCode,
) -> Response {
    let ws = page.ws.name.clone();
    let list = dash.get(&format!("/workspaces/{ws}/campaigns")).await;
    let sends = dash
        .get(&format!("/workspaces/{ws}/dispatches?limit=20"))
        .await;
    let body = html! {
        h1 { "Campaigns" }
        (flash(&outcome))
        @if list.list("campaigns").is_empty() {
            p { "No campaigns yet: create one below." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Channels" } th scope="col" { "Created" } th scope="col" { "Id" } } }
                tbody {
                    @for c in list.list("campaigns") {
                        tr {
                            td { a href={ "/dashboard/" (ws) "/campaigns/" (encode(&cell(&c["id"]))) } { (cell(&c["name"])) } }
                            td { (c["messages"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                            td.when { (cell(&c["created_at"])) }
                            td { code { (cell(&c["id"])) } }
                        }
                    }
                }
            }
        }
        h2 { "Latest sends" }
        (dispatch_table(&ws, page, sends.list("dispatches")))
        h2 { "New campaign" }
        form method="post" action={ "/dashboard/" (ws) "/campaigns" } {
            (csrf(&page.session))
            div {
                label for="definition" { "Definition (JSON, as " code { "POST /eddy/v1/workspaces/" (ws) "/campaigns" } " takes it; see docs/messaging.md)" }
                textarea #definition name="definition" rows="16" spellcheck="false" { (draft) }
            }
            button type="submit" { "Create campaign" }
        }
    };
    layout::page_with_status(
        status,
        "Campaigns",
        Some((page, "/campaigns")),
        Some(&page.session),
        body,
    )
}

/// `POST /dashboard/{ws}/campaigns` (`definition`): created, then its page.
pub async fn create(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let draft = form.get("definition");
    let definition = match parse_definition(&draft) {
        Ok(definition) => definition,
        Err(why) => {
            return render_list(&dash, &page, Some(Err(why)), draft, StatusCode::BAD_REQUEST).await;
        }
    };
    let ws = page.ws.name.clone();
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/campaigns"),
            Some(&definition),
        )
        .await;
    if !reply.ok() {
        let status = reply.status;
        return render_list(&dash, &page, Some(Err(reply.message())), draft, status).await;
    }
    let id = cell(reply.get("id"));
    Redirect::to(&format!("/dashboard/{ws}/campaigns/{}", encode(&id))).into_response()
}

fn parse_definition(draft: &str) -> Result<Value, String> {
    serde_json::from_str(draft).map_err(|e| format!("the definition is not JSON: {e}"))
}

/// `GET /dashboard/{ws}/campaigns/{id}`: the campaign and its sends with their outcomes.
pub async fn campaign(
    State(dash): State<Dash>,
    page: WsPage,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    render_campaign(&dash, &page, &id, None, None, None, StatusCode::OK).await
}

async fn render_campaign(
    dash: &Dash,
    page: &WsPage,
    id: &str,
    outcome: Option<Result<String, String>>,
    draft: Option<String>,
    preview: Option<Preview>,
    status: StatusCode,
) -> Response {
    let ws = page.ws.name.clone();
    let campaign = dash
        .get(&format!("/workspaces/{ws}/campaigns/{}", encode(id)))
        .await;
    if !campaign.ok() {
        return layout::not_found(&page.session, &campaign.message());
    }
    let sends = dash
        .get(&format!(
            "/workspaces/{ws}/dispatches?campaign_id={}&limit=100",
            encode(id)
        ))
        .await;
    let draft = draft.unwrap_or_else(|| editable(&campaign.body));
    let body = html! {
        h1 { "Campaign " (cell(campaign.get("name"))) }
        (flash(&outcome))
        h2 { "Sends" }
        (dispatch_table(&ws, page, sends.list("dispatches")))
        h2 { "Preview" }
        form method="post" action={ "/dashboard/" (ws) "/campaigns/" (encode(id)) "/preview" } {
            (csrf(&page.session))
            div {
                label for="preview-user" { "External id of the user to render for" }
                input #preview-user name="external_id" required value=(preview.as_ref().map(|p| p.external_id.as_str()).unwrap_or_default());
            }
            button type="submit" { "Preview" }
        }
        @if let Some(preview) = &preview {
            @for (field, rendered) in &preview.fields {
                h3 { code { (field) } }
                @match rendered {
                    Ok(output) => pre.output { (output) },
                    Err(why) => p.flash.error role="alert" { (why) },
                }
            }
        }
        h2 { "Test send" }
        form method="post" action={ "/dashboard/" (ws) "/campaigns/" (encode(id)) "/test-send" } {
            (csrf(&page.session))
            div {
                label for="test-user" { "External id of the user to send a test to now" }
                input #test-user name="external_id" required;
            }
            button type="submit" { "Send a test" }
        }
        h2 { "Definition" }
        form method="post" action={ "/dashboard/" (ws) "/campaigns/" (encode(id)) "/edit" } {
            (csrf(&page.session))
            div {
                label for="definition" { "Definition (JSON; saving replaces it, sends already accepted keep theirs)" }
                textarea #definition name="definition" rows="18" spellcheck="false" { (draft) }
            }
            button type="submit" { "Save campaign" }
        }
    };
    layout::page_with_status(
        status,
        "Campaign",
        Some((page, "/campaigns")),
        Some(&page.session),
        body,
    )
}

/// Every Liquid field of a campaign's messages rendered for one user: the text as it would be
/// sent, or why it would not be (an abort, a refused host, a missing user).
struct Preview {
    external_id: String,
    fields: Vec<(String, Result<String, String>)>,
}

/// `POST /dashboard/{ws}/campaigns/{id}/preview` (`external_id`).
pub async fn preview(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let ws = page.ws.name.clone();
    let external_id = form.get("external_id");
    let campaign = dash
        .get(&format!("/workspaces/{ws}/campaigns/{}", encode(&id)))
        .await;
    if !campaign.ok() {
        return layout::not_found(&page.session, &campaign.message());
    }
    let messages = match eddy_messaging::campaign::Messages::from_json(campaign.get("messages")) {
        Ok(messages) => messages,
        Err(e) => {
            let why = Err(format!("the stored definition does not read: {e}"));
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            return render_campaign(&dash, &page, &id, Some(why), None, None, status).await;
        }
    };
    let mut texts: Vec<(String, String)> = Vec::new();
    if let Some(webhook) = &messages.webhook {
        texts.extend(
            webhook
                .texts()
                .into_iter()
                .map(|(f, t)| (format!("webhook.{f}"), t.to_string())),
        );
    }
    if let Some(email) = &messages.email {
        texts.extend(
            email
                .texts()
                .into_iter()
                .map(|(f, t)| (format!("email.{f}"), t.to_string())),
        );
    }
    let mut fields = Vec::with_capacity(texts.len());
    for (field, template) in texts {
        let request = serde_json::json!({
            "template": template,
            "user": {"external_id": external_id},
            "campaign": {"api_id": id, "name": campaign.get("name")},
        });
        let reply = dash
            .call(
                Method::POST,
                &format!("/workspaces/{ws}/liquid/render"),
                Some(&request),
            )
            .await;
        let rendered = if !reply.ok() {
            Err(reply.message())
        } else if reply.get("aborted").as_bool() == Some(true) {
            Err(format!("aborted: {}", cell(reply.get("abort_reason"))))
        } else {
            Ok(cell(reply.get("output")))
        };
        fields.push((field, rendered));
    }
    let preview = Preview {
        external_id,
        fields,
    };
    render_campaign(&dash, &page, &id, None, None, Some(preview), StatusCode::OK).await
}

/// `POST /dashboard/{ws}/campaigns/{id}/test-send` (`external_id`): the campaign sent now to
/// that one user; the send shows in the table with its outcome.
pub async fn test_send(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let ws = page.ws.name.clone();
    let user = form.get("external_id");
    let request = serde_json::json!({"external_user_id": user});
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/campaigns/{}/test-send", encode(&id)),
            Some(&request),
        )
        .await;
    let (outcome, status) = if reply.ok() {
        let dispatch = cell(reply.get("dispatch_id"));
        (
            Ok(format!("test send {dispatch} to {user} accepted")),
            StatusCode::OK,
        )
    } else {
        (Err(reply.message()), reply.status)
    };
    render_campaign(&dash, &page, &id, Some(outcome), None, None, status).await
}

/// The part of a stored campaign its definition form edits (not its id or timestamps).
fn editable(campaign: &Value) -> String {
    let mut definition = campaign.clone();
    if let Some(object) = definition.as_object_mut() {
        for derived in ["id", "created_at", "updated_at", "first_sent", "last_sent"] {
            object.remove(derived);
        }
    }
    serde_json::to_string_pretty(&definition).unwrap_or_default()
}

/// `POST /dashboard/{ws}/campaigns/{id}/edit` (`definition`).
pub async fn edit(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let draft = form.get("definition");
    let definition = match parse_definition(&draft) {
        Ok(definition) => definition,
        Err(why) => {
            let status = StatusCode::BAD_REQUEST;
            return render_campaign(&dash, &page, &id, Some(Err(why)), Some(draft), None, status)
                .await;
        }
    };
    let ws = page.ws.name.clone();
    let reply = dash
        .call(
            Method::PUT,
            &format!("/workspaces/{ws}/campaigns/{}", encode(&id)),
            Some(&definition),
        )
        .await;
    if !reply.ok() {
        let status = reply.status;
        let outcome = Some(Err(reply.message()));
        return render_campaign(&dash, &page, &id, outcome, Some(draft), None, status).await;
    }
    let outcome = Some(Ok("campaign saved".to_string()));
    render_campaign(&dash, &page, &id, outcome, None, None, StatusCode::OK).await
}

/// `POST /dashboard/{ws}/dispatches/{id}/cancel`: back to where the button was.
pub async fn cancel(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let ws = page.ws.name.clone();
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/dispatches/{}/cancel", encode(&id)),
            None,
        )
        .await;
    let outcome = if reply.ok() {
        Ok(format!(
            "send {id} cancelled: {} recipients will not get it",
            number(reply.get("counts")["cancelled"].as_u64().unwrap_or(0))
        ))
    } else {
        Err(reply.message())
    };
    let campaign = form.get("campaign");
    if campaign.is_empty() {
        return render_list(
            &dash,
            &page,
            Some(outcome),
            EXAMPLE.to_string(),
            StatusCode::OK,
        )
        .await;
    }
    render_campaign(
        &dash,
        &page,
        &campaign,
        Some(outcome),
        None,
        None,
        StatusCode::OK,
    )
    .await
}

/// Sends with their state and counts; a scheduled or sending one has a Cancel button, and the
/// table refreshes itself while one is going out.
fn dispatch_table(ws: &str, page: &WsPage, dispatches: &[Value]) -> Markup {
    let count = |d: &Value, field: &str| number(d["counts"][field].as_u64().unwrap_or(0));
    let sending = dispatches.iter().any(|d| d["state"] == "sending");
    html! {
        @if dispatches.is_empty() {
            p { "No sends yet." }
        } @else {
            table data-live=[sending.then_some("sending")] {
                thead { tr {
                    th scope="col" { "Created" } th scope="col" { "Campaign" } th scope="col" { "Kind" } th scope="col" { "State" }
                    th scope="col" { "Audience" } th scope="col" { "Sent" } th scope="col" { "Failed" } th scope="col" { "Aborted" } th scope="col" { "Skipped" } th scope="col" { "Control" } th scope="col" { "Cancelled" } th scope="col" { "Cancel" }
                } }
                tbody {
                    @for d in dispatches {
                        tr data-dispatch=(cell(&d["id"])) {
                            td.when { (cell(&d["created_at"])) }
                            td { (cell(&d["campaign_name"])) }
                            td { (cell(&d["kind"])) }
                            td {
                                span data-state { (cell(&d["state"])) }
                                @if let Some(why) = d["failure"].as_str() {
                                    br; small { (why) }
                                }
                            }
                            td.num { (number(d["audience_size"].as_u64().unwrap_or(0))) }
                            td.num { (count(d, "sent")) }
                            td.num { (count(d, "failed")) }
                            td.num { (count(d, "aborted")) }
                            td.num { (count(d, "skipped")) }
                            td.num { (count(d, "control")) }
                            td.num { (count(d, "cancelled")) }
                            td {
                                @if d["state"] == "scheduled" || d["state"] == "sending" {
                                    form method="post" action={ "/dashboard/" (ws) "/dispatches/" (encode(&cell(&d["id"]))) "/cancel" } {
                                        (csrf(&page.session))
                                        input type="hidden" name="campaign" value=(cell(&d["campaign_id"]));
                                        button.danger type="submit" { "Cancel " span.visually-hidden { "send " (cell(&d["id"])) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
