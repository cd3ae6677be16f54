//! Currents: every connector with its delivery state, a creation form checked by the admin
//! API, and the flush, test, replay, pause, resume and delete actions.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::html;
use serde_json::{Map, Value, json};

use super::api::encode;
use super::layout::{self, cell, csrf, flash, long_text, number};
use super::{Dash, Form, WsForm, WsPage};

/// The settings the creation form has a field for, by connector type; anything else goes in
/// "more settings (JSON)".
const FIELDS: [(&str, &str); 11] = [
    ("bucket", "Bucket (S3, GCS)"),
    ("prefix", "Prefix"),
    ("region", "Region (S3; Amplitude: US or EU)"),
    (
        "endpoint",
        "Endpoint (S3-compatible server, Azurite, Amplitude override)",
    ),
    ("access_key_id", "Access key id (S3)"),
    ("secret_access_key", "Secret access key (S3)"),
    ("account", "Account (Azure)"),
    ("container", "Container (Azure)"),
    ("access_key", "Access key (Azure)"),
    ("api_key", "API key (Amplitude)"),
    ("service_account_key", "Service account key JSON (GCS)"),
];

/// The fields holding secrets: password inputs, never echoed back.
const SECRET_FIELDS: [&str; 4] = [
    "secret_access_key",
    "access_key",
    "api_key",
    "service_account_key",
];

/// `GET /dashboard/{ws}/currents`.
pub async fn page(State(dash): State<Dash>, page: WsPage) -> Response {
    render(&dash, &page, None, None, StatusCode::OK).await
}

async fn render(
    dash: &Dash,
    page: &WsPage,
    outcome: Option<Result<String, String>>,
    form: Option<&Form>,
    status: StatusCode,
) -> Response {
    let ws = page.ws.name.clone();
    let reply = dash.get(&format!("/workspaces/{ws}/currents")).await;
    let typed = |name: &str| form.map(|f| f.get(name)).unwrap_or_default();
    let kind = form.map(|f| f.get("type")).unwrap_or_else(|| "s3".into());
    let body = html! {
        h1 { "Currents" }
        (flash(&outcome))
        @if reply.list("connectors").is_empty() {
            p { "No connectors yet." }
        } @else {
            table.connectors {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "State" }
                    th scope="col" { "Delivered" } th scope="col" { "Pending" } th scope="col" { "Dropped" }
                    th scope="col" { "Skipped" } th scope="col" { "Lag" } th scope="col" { "Last error" }
                } }
                tbody {
                    @for c in reply.list("connectors") {
                        @let name = cell(&c["name"]);
                        tr data-connector=(name) {
                            th scope="row" { (name) }
                            td { (cell(&c["type"])) }
                            td { span class={ "state " (cell(&c["state"])) } data-state { (cell(&c["state"])) } }
                            td.num { (number(c["delivered"].as_u64().unwrap_or(0))) }
                            td.num { (number(c["pending"].as_u64().unwrap_or(0))) }
                            td.num { (number(c["dropped"].as_u64().unwrap_or(0))) }
                            td.num { (number(c["skipped"].as_u64().unwrap_or(0))) }
                            td.num { (c["lag_seconds"].as_u64().unwrap_or(0)) " s" }
                            td.error { (long_text(&c["last_error"])) }
                        }
                        // The actions get a row of their own, so that a long error or many
                        // figures never push them out of the window.
                        tr.connector-actions data-connector=(name) {
                            td.actions colspan="9" {
                                div.action-list {
                                    @for (action, label) in actions(&cell(&c["state"])) {
                                        form method="post" action={ "/dashboard/" (ws) "/currents/" (encode(&name)) "/" (action) } {
                                            (csrf(&page.session))
                                            @if action == "replay" {
                                                label for={ "from-" (name) } { "Replay from (UTC)" }
                                                input id={ "from-" (name) } name="from" type="datetime-local" required;
                                            }
                                            button type="submit" class=[(action == "delete").then_some("danger")] { (label) " " span.visually-hidden { (name) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New connector" }
        form.create method="post" action={ "/dashboard/" (ws) "/currents" } {
            (csrf(&page.session))
            div { label for="c-name" { "Name" } input #c-name name="name" value=(typed("name")) required pattern="[A-Za-z0-9_-]{1,64}"; }
            div {
                label for="c-type" { "Type" }
                select #c-type name="type" {
                    @for (value, label) in [("s3", "Amazon S3 (or S3-compatible)"), ("azure", "Azure Blob Storage"), ("gcs", "Google Cloud Storage"), ("amplitude", "Amplitude")] {
                        option value=(value) selected[kind == value] { (label) }
                    }
                }
            }
            @for (field, label) in FIELDS {
                div {
                    label for={ "c-" (field) } { (label) }
                    @if SECRET_FIELDS.contains(&field) {
                        input id={ "c-" (field) } name=(field) type="password" autocomplete="off";
                    } @else {
                        input id={ "c-" (field) } name=(field) value=(typed(field));
                    }
                }
            }
            div {
                label for="c-more" { "More settings (JSON object: event_types, transforms, flush_interval_seconds, …)" }
                textarea #c-more name="more" rows="3" spellcheck="false" { (typed("more")) }
            }
            div.check {
                input #c-validate type="checkbox" name="validate" value="yes" checked[form.is_none() || typed("validate") == "yes"];
                label for="c-validate" { "Check the destination before saving (a test write, a key check)" }
            }
            button type="submit" { "Create connector" }
        }
    };
    layout::page_with_status(
        status,
        "Currents",
        Some((page, "/currents")),
        Some(&page.session),
        body,
    )
}

/// The actions a connector in a state offers: (path, label).
fn actions(state: &str) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("flush", "Flush"),
        ("test", "Send test events"),
        ("replay", "Replay"),
    ];
    if state == "paused" {
        out.push(("resume", "Resume"));
    } else {
        out.push(("pause", "Pause"));
    }
    out.push(("delete", "Delete"));
    out
}

/// `POST /dashboard/{ws}/currents`: the admin API's creation body from the form's fields.
pub async fn create(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let mut request = Map::new();
    request.insert("name".into(), json!(form.get("name")));
    request.insert("type".into(), json!(form.get("type")));
    for (field, _) in FIELDS {
        let value = form.get(field);
        if !value.is_empty() {
            request.insert(field.into(), json!(value));
        }
    }
    let more = form.get("more");
    if !more.is_empty() {
        match serde_json::from_str::<Value>(&more) {
            Ok(Value::Object(extra)) => request.extend(extra),
            _ => {
                let outcome = Some(Err("more settings must be a JSON object".to_string()));
                return render(&dash, &page, outcome, Some(&form), StatusCode::BAD_REQUEST).await;
            }
        }
    }
    request.insert("validate".into(), json!(form.get("validate") == "yes"));
    let ws = &page.ws.name;
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/currents"),
            Some(&Value::Object(request)),
        )
        .await;
    if !reply.ok() {
        let status = reply.status;
        return render(
            &dash,
            &page,
            Some(Err(reply.message())),
            Some(&form),
            status,
        )
        .await;
    }
    let outcome = Some(Ok(format!("connector {} created", form.get("name"))));
    render(&dash, &page, outcome, None, StatusCode::CREATED).await
}

/// `POST /dashboard/{ws}/currents/{name}/{action}`.
pub async fn act(
    State(dash): State<Dash>,
    Path((_, name, action)): Path<(String, String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let ws = &page.ws.name;
    let path = format!("/workspaces/{ws}/currents/{}", encode(&name));
    let reply = match action.as_str() {
        "flush" | "test" | "pause" | "resume" => {
            dash.call(Method::POST, &format!("{path}/{action}"), None)
                .await
        }
        "replay" => {
            // The browser sends local time without a zone; eddy reads it as UTC, and says so.
            let mut from = form.get("from");
            if from.len() == 16 {
                from.push_str(":00");
            }
            from.push('Z');
            dash.call(
                Method::POST,
                &format!("{path}/replay"),
                Some(&json!({"from": from})),
            )
            .await
        }
        "delete" => dash.call(Method::DELETE, &path, None).await,
        _ => return layout::not_found(&page.session, "no such connector action"),
    };
    let outcome = if reply.ok() {
        Ok(match action.as_str() {
            "flush" => format!("{name}: flushed"),
            "test" => format!("{name}: test events sent"),
            "replay" => format!("{name}: replaying from {} (UTC)", form.get("from")),
            "pause" => format!("{name}: paused"),
            "resume" => format!("{name}: resumed"),
            _ => format!("{name}: deleted"),
        })
    } else {
        Err(format!("{name}: {}", reply.message()))
    };
    render(&dash, &page, Some(outcome), None, StatusCode::OK).await
}
