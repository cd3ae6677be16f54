//! Segments: the list with exact sizes, and an editor whose builder shows the exact size as
//! the filter changes (the admin API's `segments/size`); save, delete, export.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::{Value, json};

use super::api::encode;
use super::layout::{self, cell, csrf, flash, json_block, number};
use super::{Dash, WsForm, WsPage, csrf_header_ok};

/// Fields a dashboard export writes unless the form names others.
const DEFAULT_EXPORT_FIELDS: &str = "external_id, braze_id, email, phone, first_name, last_name";

/// `GET /dashboard/{ws}/segments`.
pub async fn list(State(dash): State<Dash>, page: WsPage) -> Response {
    let ws = page.ws.name.clone();
    let reply = dash.get(&format!("/workspaces/{ws}/segments")).await;
    let body = html! {
        h1 { "Segments" }
        p { a.button href={ "/dashboard/" (ws) "/segments/new" } { "New segment" } }
        @if !reply.ok() {
            p.flash.error role="alert" { (reply.message()) }
        } @else if reply.list("segments").is_empty() {
            p { "No segments yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Size" } th scope="col" { "Created" } th scope="col" { "Id" } } }
                tbody {
                    @for s in reply.list("segments") {
                        tr {
                            td { a href={ "/dashboard/" (ws) "/segments/" (cell(&s["id"])) } { (cell(&s["name"])) } }
                            td.num data-segment-size { (number(s["size"].as_u64().unwrap_or(0))) }
                            td { (cell(&s["created_at"])) }
                            td { code { (cell(&s["id"])) } }
                        }
                    }
                }
            }
        }
    };
    layout::frame(
        "Segments",
        Some((&page, "/segments")),
        Some(&page.session),
        body,
    )
}

/// What the editor shows: a saved segment, or what the user typed.
struct Draft {
    id: Option<String>,
    name: String,
    filter: String,
    size: Option<u64>,
}

/// `GET /dashboard/{ws}/segments/new` and `/dashboard/{ws}/segments/{id}`.
pub async fn editor(
    State(dash): State<Dash>,
    page: WsPage,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let Some(id) = params.get("id") else {
        let draft = Draft {
            id: None,
            name: String::new(),
            filter: "{\"and\": []}".into(),
            size: None,
        };
        return editor_page(&dash, &page, draft, None, StatusCode::OK).await;
    };
    let ws = &page.ws.name;
    let reply = dash
        .get(&format!("/workspaces/{ws}/segments/{}", encode(id)))
        .await;
    if !reply.ok() {
        return layout::not_found(&page.session, &reply.message());
    }
    let draft = Draft {
        id: Some(id.clone()),
        name: cell(reply.get("name")),
        filter: serde_json::to_string_pretty(reply.get("filter")).unwrap_or_default(),
        size: reply.get("size").as_u64(),
    };
    editor_page(&dash, &page, draft, None, StatusCode::OK).await
}

async fn editor_page(
    dash: &Dash,
    page: &WsPage,
    draft: Draft,
    outcome: Option<Result<String, String>>,
    status: StatusCode,
) -> Response {
    let ws = &page.ws.name;
    let cohorts = dash.get(&format!("/workspaces/{ws}/cohorts")).await;
    let cohort_options: Vec<Value> = cohorts
        .list("cohorts")
        .iter()
        .map(|c| json!({"id": c["cohort_id"], "name": c["name"], "partner": c["partner"]}))
        .collect();
    let action = match &draft.id {
        Some(id) => format!("/dashboard/{ws}/segments/{}", encode(id)),
        None => format!("/dashboard/{ws}/segments"),
    };
    let title = if draft.id.is_some() {
        format!("Segment {}", draft.name)
    } else {
        "New segment".to_string()
    };
    let body = html! {
        h1 { (title) }
        (flash(&outcome))
        form #segment-form method="post" action=(action) {
            (csrf(&page.session))
            div { label for="name" { "Name" } input #name name="name" value=(draft.name) required; }
            div #builder data-builder data-size-url={ "/dashboard/" (ws) "/segments/size" }
                data-cohorts=(Value::Array(cohort_options).to_string()) {}
            p.size {
                "Size now: "
                output #size aria-live="polite" for="filter" {
                    @match draft.size { Some(n) => (number(n)), None => "—" }
                }
            }
            details #filter-json open[draft.id.is_none()] {
                summary { "Filter as JSON (every leaf, and nested groups)" }
                label for="filter" { "Filter" }
                textarea #filter name="filter" rows="10" spellcheck="false" { (draft.filter) }
            }
            button type="submit" { "Save segment" }
        }
        @if let Some(id) = &draft.id {
            h2 { "Export" }
            form method="post" action={ "/dashboard/" (ws) "/segments/" (encode(id)) "/export" } {
                (csrf(&page.session))
                div { label for="fields" { "Fields to export (comma-separated)" } input #fields name="fields" value=(DEFAULT_EXPORT_FIELDS); }
                button type="submit" { "Export members" }
            }
            h2 { "Delete" }
            form.danger method="post" action={ "/dashboard/" (ws) "/segments/" (encode(id)) "/delete" } {
                (csrf(&page.session))
                div.check { input #confirm-delete type="checkbox" name="confirm" value="yes" required; label for="confirm-delete" { "Yes, delete this segment" } }
                button.danger type="submit" { "Delete segment" }
            }
        }
        p { a href={ "/dashboard/" (ws) "/segments" } { "All segments" } }
    };
    layout::page_with_status(
        status,
        &title,
        Some((page, "/segments")),
        Some(&page.session),
        body,
    )
}

/// `POST /dashboard/{ws}/segments` (create) and `/dashboard/{ws}/segments/{id}` (update).
pub async fn save(
    State(dash): State<Dash>,
    Path(params): Path<HashMap<String, String>>,
    WsForm { page, form }: WsForm,
) -> Response {
    let id = params.get("id").cloned();
    let draft = Draft {
        id: id.clone(),
        name: form.get("name"),
        filter: form.get("filter"),
        size: None,
    };
    let filter: Value = match serde_json::from_str(&draft.filter) {
        Ok(filter) => filter,
        Err(e) => {
            let message = format!("the filter is not JSON: {e}");
            return editor_page(
                &dash,
                &page,
                draft,
                Some(Err(message)),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let ws = &page.ws.name;
    let request = json!({"name": draft.name, "filter": filter});
    let reply = match &id {
        Some(id) => {
            dash.call(
                Method::PUT,
                &format!("/workspaces/{ws}/segments/{}", encode(id)),
                Some(&request),
            )
            .await
        }
        None => {
            dash.call(
                Method::POST,
                &format!("/workspaces/{ws}/segments"),
                Some(&request),
            )
            .await
        }
    };
    if !reply.ok() {
        let status = reply.status;
        return editor_page(&dash, &page, draft, Some(Err(reply.message())), status).await;
    }
    let saved = Draft {
        id: Some(cell(reply.get("id"))),
        name: cell(reply.get("name")),
        filter: serde_json::to_string_pretty(reply.get("filter")).unwrap_or_default(),
        size: reply.get("size").as_u64(),
    };
    let message = format!("saved; {} users in it now", number(saved.size.unwrap_or(0)));
    editor_page(&dash, &page, saved, Some(Ok(message)), StatusCode::OK).await
}

/// `POST /dashboard/{ws}/segments/size` `{"filter"}` with `x-csrf-token`: the builder's live size.
pub async fn size(
    State(dash): State<Dash>,
    page: WsPage,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !csrf_header_ok(&headers, &page.session, &dash) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "missing or wrong x-csrf-token"})),
        )
            .into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": e.to_string()})),
            )
                .into_response();
        }
    };
    let ws = &page.ws.name;
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/segments/size"),
            Some(&request),
        )
        .await;
    (reply.status, Json(reply.body)).into_response()
}

/// `POST /dashboard/{ws}/segments/{id}/delete` (`confirm=yes`).
pub async fn delete(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let ws = &page.ws.name;
    if form.get("confirm") != "yes" {
        return layout::frame(
            "Segment",
            Some((&page, "/segments")),
            Some(&page.session),
            html! {
                p.flash.error role="alert" { "Tick the confirmation to delete." }
            },
        );
    }
    let reply = dash
        .call(
            Method::DELETE,
            &format!("/workspaces/{ws}/segments/{}", encode(&id)),
            None,
        )
        .await;
    let outcome = if reply.ok() {
        Ok(format!("segment {id} deleted"))
    } else {
        Err(reply.message())
    };
    let body = html! {
        h1 { "Segments" }
        (flash(&Some(outcome)))
        p { a href={ "/dashboard/" (ws) "/segments" } { "All segments" } }
    };
    layout::frame(
        "Segment deleted",
        Some((&page, "/segments")),
        Some(&page.session),
        body,
    )
}

/// `POST /dashboard/{ws}/segments/{id}/export` (`fields=a, b, c`).
pub async fn export(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let fields: Vec<String> = form
        .get("fields")
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    let ws = &page.ws.name;
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/segments/{}/export", encode(&id)),
            Some(&json!({"fields_to_export": fields})),
        )
        .await;
    let body = html! {
        h1 { "Export" }
        @if reply.ok() {
            p.flash.ok role="status" { "The export started; its files go to " code { (cell(reply.get("object_prefix"))) } "." }
            (json_block(&reply.body))
            p { a href={ "/dashboard/" (ws) "/segments/" (encode(&id)) } { "Back to the segment" } }
        } @else {
            p.flash.error role="alert" { (reply.message()) }
        }
    };
    layout::frame(
        "Export",
        Some((&page, "/segments")),
        Some(&page.session),
        body,
    )
}
