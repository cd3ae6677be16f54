//! Catalogs: the list with their fields and sizes, and a catalog's items, 50 a page. Catalogs
//! are written through Braze's catalog endpoints with a REST key, as the page says.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use maud::html;

use super::api::encode;
use super::layout::{self, cell, number};
use super::{Dash, WsPage};
use crate::http::query_param;

/// `GET /dashboard/{ws}/catalogs`.
pub async fn list(State(dash): State<Dash>, page: WsPage) -> Response {
    let ws = page.ws.name.clone();
    let list = dash.get(&format!("/workspaces/{ws}/catalogs")).await;
    let body = html! {
        h1 { "Catalogs" }
        p { "Catalogs are written through Braze's endpoints (" code { "POST /catalogs" } ", " code { "PUT /catalogs/{name}/items" } ") and read in messages with " code { "{% catalog_items name id %}" } "." }
        @if list.list("catalogs").is_empty() {
            p { "No catalogs yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Description" } th scope="col" { "Fields" } th scope="col" { "Items" } th scope="col" { "Updated" } } }
                tbody {
                    @for c in list.list("catalogs") {
                        tr {
                            td { a href={ "/dashboard/" (ws) "/catalogs/" (encode(&cell(&c["name"]))) } { (cell(&c["name"])) } }
                            td { (cell(&c["description"])) }
                            td {
                                @for (i, f) in c["fields"].as_array().map_or(&[][..], Vec::as_slice).iter().enumerate() {
                                    @if i > 0 { ", " }
                                    code { (cell(&f["name"])) } " " (cell(&f["type"]))
                                }
                            }
                            td.num { (number(c["num_items"].as_u64().unwrap_or(0))) }
                            td.when { (cell(&c["updated_at"])) }
                        }
                    }
                }
            }
        }
    };
    layout::frame(
        "Catalogs",
        Some((&page, "/catalogs")),
        Some(&page.session),
        body,
    )
}

/// `GET /dashboard/{ws}/catalogs/{name}[?cursor=…]`.
pub async fn catalog(
    State(dash): State<Dash>,
    page: WsPage,
    Path((_, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let ws = page.ws.name.clone();
    let cursor = query_param(query.as_deref(), "cursor");
    let path = match &cursor {
        Some(c) => format!(
            "/workspaces/{ws}/catalogs/{}/items?cursor={}",
            encode(&name),
            encode(c)
        ),
        None => format!("/workspaces/{ws}/catalogs/{}/items", encode(&name)),
    };
    let items = dash.get(&path).await;
    if !items.ok() {
        return layout::not_found(&page.session, &items.message());
    }
    let fields: Vec<String> = items
        .get("fields")
        .as_array()
        .map(|f| f.iter().map(|f| cell(&f["name"])).collect())
        .unwrap_or_default();
    let link = |cursor: &serde_json::Value| {
        format!(
            "/dashboard/{ws}/catalogs/{}?cursor={}",
            encode(&name),
            encode(&cell(cursor))
        )
    };
    let body = html! {
        h1 { "Catalog " (name) }
        table {
            caption { "Items, 50 a page, by id" }
            thead { tr { @for f in &fields { th scope="col" { (f) } } } }
            tbody {
                @for item in items.list("items") {
                    tr { @for f in &fields { td { (cell(&item[f.as_str()])) } } }
                }
            }
        }
        nav aria-label="Pages" {
            @if !items.get("prev").is_null() { a href=(link(items.get("prev"))) { "Previous page" } " " }
            @if !items.get("next").is_null() { a href=(link(items.get("next"))) { "Next page" } }
        }
    };
    layout::frame(
        &format!("Catalog {name}"),
        Some((&page, "/catalogs")),
        Some(&page.session),
        body,
    )
}
