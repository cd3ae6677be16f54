//! Cohorts and partners: registered partners with this workspace's Data Import Keys (generate,
//! rotate, invalidate; a new key is shown once), and the cohorts partners imported.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use maud::html;

use super::api::encode;
use super::layout::{self, cell, csrf, flash, number};
use super::{Dash, WsForm, WsPage};

/// `GET /dashboard/{ws}/cohorts`.
pub async fn page(State(dash): State<Dash>, page: WsPage) -> Response {
    render(&dash, &page, None, None).await
}

/// The page, with the outcome of an action and a key to show once.
async fn render(
    dash: &Dash,
    page: &WsPage,
    outcome: Option<Result<String, String>>,
    new_key: Option<(String, String)>,
) -> Response {
    let ws = page.ws.name.clone();
    let partners = dash.get("/partners").await;
    let mut keys = Vec::new();
    for p in partners.list("partners") {
        let name = cell(&p["name"]);
        let key = dash.get(&key_path(&ws, &name)).await;
        keys.push((name, cell(&p["display_name"]), key));
    }
    let cohorts = dash.get(&format!("/workspaces/{ws}/cohorts")).await;
    let body = html! {
        h1 { "Cohorts and partners" }
        (flash(&outcome))
        @if let Some((partner, key)) = &new_key {
            div.flash.ok role="status" {
                p { "The new Data Import Key for " strong { (partner) } ". Copy it now: it is not shown again." }
                p { code #new-key { (key) } }
            }
        }
        h2 { "Partners and Data Import Keys" }
        @if keys.is_empty() {
            p { "No partner is registered. Register one with " code { "PUT /eddy/v1/partners/{name}" } " (see the README)." }
        } @else {
            table {
                thead { tr { th scope="col" { "Partner" } th scope="col" { "Data Import Key" } th scope="col" { "Actions" } } }
                tbody {
                    @for (name, display, key) in &keys {
                        tr {
                            td { (display) " " code { (name) } }
                            td {
                                @if key.get("exists").as_bool() == Some(true) {
                                    "set"
                                    @if let Some(at) = key.get("created_at").as_str() { ", made " (at) }
                                } @else { "none" }
                            }
                            td.actions {
                                form method="post" action={ "/dashboard/" (ws) "/partners/" (encode(name)) "/key" } {
                                    (csrf(&page.session))
                                    button type="submit" {
                                        @if key.get("exists").as_bool() == Some(true) { "Rotate key for " (name) } @else { "Generate key for " (name) }
                                    }
                                }
                                @if key.get("exists").as_bool() == Some(true) {
                                    form method="post" action={ "/dashboard/" (ws) "/partners/" (encode(name)) "/key/delete" } {
                                        (csrf(&page.session))
                                        button.danger type="submit" { "Invalidate key for " (name) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Cohorts" }
        @if cohorts.list("cohorts").is_empty() {
            p { "No cohort was imported into this workspace yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Partner" } th scope="col" { "Cohort id" } th scope="col" { "Users" } th scope="col" { "Created (partner)" } th scope="col" { "First imported" } th scope="col" { "Last change" } } }
                tbody {
                    @for c in cohorts.list("cohorts") {
                        tr {
                            td { (cell(&c["name"])) }
                            td { (cell(&c["partner"])) }
                            td { code { (cell(&c["cohort_id"])) } }
                            td.num { (number(c["size"].as_u64().unwrap_or(0))) }
                            td { (cell(&c["created_at"])) }
                            td { (cell(&c["imported_at"])) }
                            td { (cell(&c["changed_at"])) }
                        }
                    }
                }
            }
        }
    };
    layout::frame(
        "Cohorts and partners",
        Some((page, "/cohorts")),
        Some(&page.session),
        body,
    )
}

/// The admin API path of a partner's Data Import Key in a workspace.
fn key_path(ws: &str, partner: &str) -> String {
    format!(
        "/workspaces/{ws}/partners/{}/data-import-key",
        encode(partner)
    )
}

/// `POST /dashboard/{ws}/partners/{partner}/key`: a new key (the previous one stops working).
pub async fn generate_key(
    State(dash): State<Dash>,
    Path((_, partner)): Path<(String, String)>,
    WsForm { page, .. }: WsForm,
) -> Response {
    let ws = &page.ws.name;
    let reply = dash.call(Method::POST, &key_path(ws, &partner), None).await;
    if !reply.ok() {
        return render(&dash, &page, Some(Err(reply.message())), None).await;
    }
    let key = cell(reply.get("key"));
    render(&dash, &page, None, Some((partner, key))).await
}

/// `POST /dashboard/{ws}/partners/{partner}/key/delete`: the key stops working.
pub async fn invalidate_key(
    State(dash): State<Dash>,
    Path((_, partner)): Path<(String, String)>,
    WsForm { page, .. }: WsForm,
) -> Response {
    let ws = &page.ws.name;
    let reply = dash
        .call(Method::DELETE, &key_path(ws, &partner), None)
        .await;
    let outcome = if reply.ok() {
        Ok(format!("the Data Import Key of {partner} no longer works"))
    } else {
        Err(reply.message())
    };
    render(&dash, &page, Some(outcome), None).await
}
