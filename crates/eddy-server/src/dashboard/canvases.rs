//! Canvases: the list, and a canvas's steps with how many users wait at each. Canvases are
//! defined in the admin API (`POST /eddy/v1/workspaces/{ws}/canvases`), as the page says.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::html;
use serde_json::Value;

use super::api::encode;
use super::layout::{self, cell, number};
use super::{Dash, WsPage};

/// `GET /dashboard/{ws}/canvases`.
pub async fn list(State(dash): State<Dash>, page: WsPage) -> Response {
    let ws = page.ws.name.clone();
    let list = dash.get(&format!("/workspaces/{ws}/canvases")).await;
    let body = html! {
        h1 { "Canvases" }
        p { "A canvas is defined with " code { "POST /eddy/v1/workspaces/" (ws) "/canvases" } " and entered through " code { "POST /canvas/trigger/send" } " (see the README)." }
        @if list.list("canvases").is_empty() {
            p { "No canvases yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Steps" } th scope="col" { "Last edited" } th scope="col" { "Id" } } }
                tbody {
                    @for c in list.list("canvases") {
                        tr {
                            td { a href={ "/dashboard/" (ws) "/canvases/" (encode(&cell(&c["id"]))) } { (cell(&c["name"])) } }
                            td.num { (c["steps"].as_array().map_or(0, Vec::len)) }
                            td.when { (cell(&c["updated_at"])) }
                            td { code { (cell(&c["id"])) } }
                        }
                    }
                }
            }
        }
    };
    layout::frame(
        "Canvases",
        Some((&page, "/canvases")),
        Some(&page.session),
        body,
    )
}

/// What a step does, in a few words.
fn summary(step: &Value) -> String {
    match step["type"].as_str() {
        Some("message") => {
            let channels: Vec<String> = step["messages"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            format!("sends {}", channels.join(" and "))
        }
        Some("delay") => match (step["seconds"].as_u64(), step["until"].as_str()) {
            (Some(s), _) => format!("waits {s} s"),
            (_, Some(until)) => format!("waits until {until} in the user's time zone"),
            _ => "waits".into(),
        },
        Some("split") => format!("goes on if {}", step["filter"]),
        _ => String::new(),
    }
}

/// `GET /dashboard/{ws}/canvases/{id}`.
pub async fn canvas(
    State(dash): State<Dash>,
    page: WsPage,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    let ws = page.ws.name.clone();
    let canvas = dash
        .get(&format!("/workspaces/{ws}/canvases/{}", encode(&id)))
        .await;
    if !canvas.ok() {
        return layout::not_found(&page.session, &canvas.message());
    }
    let name = cell(canvas.get("name"));
    let body = html! {
        h1 { "Canvas " (name) }
        p { "Id " code { (id) } ", last edited " (cell(canvas.get("updated_at"))) "." }
        table {
            caption { "Steps, and the users waiting at each" }
            thead { tr { th scope="col" { "#" } th scope="col" { "Step" } th scope="col" { "What it does" } th scope="col" { "Waiting" } } }
            tbody {
                @for (i, step) in canvas.list("steps").iter().enumerate() {
                    tr {
                        td.num { (i + 1) }
                        td { (cell(&step["name"])) br; code { (cell(&step["id"])) } }
                        td { (summary(step)) }
                        td.num { (number(canvas.get("waiting")[cell(&step["id"])].as_u64().unwrap_or(0))) }
                    }
                }
            }
        }
    };
    layout::frame(
        &format!("Canvas {name}"),
        Some((&page, "/canvases")),
        Some(&page.session),
        body,
    )
}
