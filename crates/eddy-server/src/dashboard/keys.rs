//! REST API keys: the list (name, permissions, created, last used), creation (the key is shown
//! once), revocation.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use eddy_model::wire::PERMISSIONS;
use maud::html;
use serde_json::json;

use super::api::encode;
use super::layout::{self, cell, csrf, flash};
use super::{Dash, WsForm, WsPage};

/// `GET /dashboard/{ws}/keys`.
pub async fn page(State(dash): State<Dash>, page: WsPage) -> Response {
    render(&dash, &page, None, None, StatusCode::OK).await
}

async fn render(
    dash: &Dash,
    page: &WsPage,
    outcome: Option<Result<String, String>>,
    new_key: Option<(String, String)>,
    status: StatusCode,
) -> Response {
    let ws = page.ws.name.clone();
    let reply = dash.get(&format!("/workspaces/{ws}/api-keys")).await;
    let body = html! {
        h1 { "API keys" }
        (flash(&outcome))
        @if let Some((name, key)) = &new_key {
            div.flash.ok role="status" {
                p { "The key " strong { (name) } ". Copy it now: eddy keeps only its hash and cannot show it again." }
                p { code #new-key { (key) } }
            }
        }
        @if reply.list("api_keys").is_empty() {
            p { "No keys yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Permissions" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Id" } th scope="col" { "Revoke" } } }
                tbody {
                    @for k in reply.list("api_keys") {
                        @let permissions = k["permissions"].as_array().map(|p| p.len()).unwrap_or(0);
                        tr {
                            th scope="row" { (cell(&k["name"])) }
                            td {
                                @if permissions == PERMISSIONS.len() { "all " (permissions) } @else {
                                    (k["permissions"].as_array().map(|p| p.iter().map(cell).collect::<Vec<_>>().join(", ")).unwrap_or_default())
                                }
                            }
                            td { (cell(&k["created_at"])) }
                            td { @if k["last_used_at"].is_null() { "never" } @else { (cell(&k["last_used_at"])) } }
                            td { code { (cell(&k["id"])) } }
                            td {
                                form method="post" action={ "/dashboard/" (ws) "/keys/" (encode(&cell(&k["id"]))) "/revoke" } {
                                    (csrf(&page.session))
                                    button.danger type="submit" { "Revoke " span.visually-hidden { (cell(&k["name"])) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New key" }
        form method="post" action={ "/dashboard/" (ws) "/keys" } {
            (csrf(&page.session))
            div { label for="key-name" { "Name" } input #key-name name="name" required; }
            fieldset.permissions {
                legend { "Permissions (none ticked: all)" }
                @for (i, permission) in PERMISSIONS.iter().enumerate() {
                    div.check {
                        input id={ "perm-" (i) } type="checkbox" name="permission" value=(permission);
                        label for={ "perm-" (i) } { code { (permission) } }
                    }
                }
            }
            button type="submit" { "Create key" }
        }
    };
    layout::page_with_status(
        status,
        "API keys",
        Some((page, "/keys")),
        Some(&page.session),
        body,
    )
}

/// `POST /dashboard/{ws}/keys` (`name`, `permission`…).
pub async fn create(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let name = form.get("name");
    let permissions = form.all("permission");
    let request = if permissions.is_empty() {
        json!({"name": name})
    } else {
        json!({"name": name, "permissions": permissions})
    };
    let ws = &page.ws.name;
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/api-keys"),
            Some(&request),
        )
        .await;
    if !reply.ok() {
        let status = reply.status;
        return render(&dash, &page, Some(Err(reply.message())), None, status).await;
    }
    let key = cell(reply.get("key"));
    render(&dash, &page, None, Some((name, key)), StatusCode::CREATED).await
}

/// `POST /dashboard/{ws}/keys/{id}/revoke`.
pub async fn revoke(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, .. }: WsForm,
) -> Response {
    let ws = &page.ws.name;
    let reply = dash
        .call(
            Method::DELETE,
            &format!("/workspaces/{ws}/api-keys/{}", encode(&id)),
            None,
        )
        .await;
    let outcome = if reply.ok() {
        Ok(format!("key {id} revoked: it no longer works"))
    } else {
        Err(reply.message())
    };
    render(&dash, &page, Some(outcome), None, StatusCode::OK).await
}
