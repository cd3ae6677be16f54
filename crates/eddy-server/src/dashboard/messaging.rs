//! What sending needs besides campaigns, on one page: the SMTP relay, content blocks, the
//! hosts and credentials Connected Content may use, and subscription groups. Each form saves
//! through the admin API, so the dashboard checks exactly what `curl` would.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::html;
use serde_json::{Value, json};

use super::api::encode;
use super::layout::{self, cell, csrf, flash, long_text};
use super::{Dash, WsForm, WsPage};

/// `GET /dashboard/{ws}/messaging`.
pub async fn page(State(dash): State<Dash>, page: WsPage) -> Response {
    render(&dash, &page, None, StatusCode::OK).await
}

async fn render(
    dash: &Dash,
    page: &WsPage,
    outcome: Option<Result<String, String>>,
    status: StatusCode,
) -> Response {
    let ws = page.ws.name.clone();
    let email = dash.get(&format!("/workspaces/{ws}/email")).await;
    let blocks = dash.get(&format!("/workspaces/{ws}/content-blocks")).await;
    let connected = dash
        .get(&format!("/workspaces/{ws}/connected-content"))
        .await;
    let groups = dash
        .get(&format!("/workspaces/{ws}/subscription-groups"))
        .await;
    let hosts: Vec<String> = connected.list("allowed_hosts").iter().map(cell).collect();
    let action = |what: &str| format!("/dashboard/{ws}/messaging/{what}");
    let body = html! {
        h1 { "Messaging settings" }
        (flash(&outcome))

        h2 { "Email: the SMTP relay" }
        @if email.ok() {
            dl.facts {
                dt { "Relay" } dd { code { (cell(email.get("smtp_url"))) } }
                dt { "STARTTLS" } dd { @if email.get("starttls").as_bool() == Some(true) { "yes" } @else { "no" } }
                dt { "Tracking domain" } dd { @if email.get("tracking_domain").is_null() { "none (this server's address)" } @else { (cell(email.get("tracking_domain"))) } }
                dt { "Custom footer" } dd { @if email.get("custom_footer").is_null() { "none" } @else { (long_text(email.get("custom_footer"))) } }
            }
        } @else {
            p { "No relay yet: email sends are refused until one is saved." }
        }
        form method="post" action=(action("email")) {
            (csrf(&page.session))
            div {
                label for="smtp-url" { "Relay URL (with its password; the saved one is never shown)" }
                input #smtp-url name="smtp_url" required placeholder="smtp://user:password@smtp.example.com:587";
            }
            div.check { input #starttls type="checkbox" name="starttls" checked; label for="starttls" { "STARTTLS" } }
            div { label for="tracking-domain" { "Tracking domain (optional)" } input #tracking-domain name="tracking_domain"; }
            div { label for="custom-footer" { "Custom footer (optional; must hold ${set_user_to_unsubscribed_url})" } textarea #custom-footer name="custom_footer" rows="3" {} }
            div.check { input #validate type="checkbox" name="validate" checked; label for="validate" { "Connect to the relay before saving" } }
            button type="submit" { "Save the relay" }
        }

        h2 { "Content blocks" }
        @if blocks.list("content_blocks").is_empty() {
            p { "No content blocks yet. A message includes one with " code { "{{content_blocks.${name}}}" } "." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Description" } th scope="col" { "Content" } th scope="col" { "Updated" } th scope="col" { "Delete" } } }
                tbody {
                    @for block in blocks.list("content_blocks") {
                        tr {
                            th scope="row" { code { (cell(&block["name"])) } }
                            td { (cell(&block["description"])) }
                            td { (long_text(&block["content"])) }
                            td { (cell(&block["updated_at"])) }
                            td {
                                form method="post" action=(action(&format!("content-blocks/{}/delete", encode(&cell(&block["name"]))))) {
                                    (csrf(&page.session))
                                    button.danger type="submit" { "Delete " span.visually-hidden { (cell(&block["name"])) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action=(action("content-blocks")) {
            (csrf(&page.session))
            div { label for="block-name" { "Name" } input #block-name name="name" required; }
            div { label for="block-description" { "Description (optional)" } input #block-description name="description"; }
            div { label for="block-content" { "Content (Liquid)" } textarea #block-content name="content" rows="4" required {} }
            button type="submit" { "Save the content block" }
        }

        h2 { "Connected Content" }
        p { "Hosts on private networks that " code { "{% connected_content %}" } " and webhooks may reach (public hosts need no entry)." }
        form method="post" action=(action("hosts")) {
            (csrf(&page.session))
            div {
                label for="allowed-hosts" { "Allowed hosts, one per line (host, host:port, or an address)" }
                textarea #allowed-hosts name="allowed_hosts" rows="3" { (hosts.join("\n")) }
            }
            button type="submit" { "Save the hosts" }
        }
        h3 { "Credentials for " code { ":basic_auth" } }
        @if connected.list("credentials").is_empty() {
            p { "No credentials yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Delete" } } }
                tbody {
                    @for name in connected.list("credentials") {
                        tr {
                            th scope="row" { code { (cell(name)) } }
                            td {
                                form method="post" action=(action(&format!("credentials/{}/delete", encode(&cell(name))))) {
                                    (csrf(&page.session))
                                    button.danger type="submit" { "Delete " span.visually-hidden { (cell(name)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action=(action("credentials")) {
            (csrf(&page.session))
            div { label for="credential-name" { "Name" } input #credential-name name="name" required; }
            div { label for="credential-username" { "Username" } input #credential-username name="username" required autocomplete="off"; }
            div { label for="credential-password" { "Password (sealed; never shown again)" } input #credential-password name="password" type="password" required autocomplete="new-password"; }
            button type="submit" { "Save the credential" }
        }

        h2 { "Subscription groups" }
        @if groups.list("subscription_groups").is_empty() {
            p { "No subscription groups yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Channel" } th scope="col" { "Delete" } } }
                tbody {
                    @for group in groups.list("subscription_groups") {
                        tr {
                            th scope="row" { code { (cell(&group["id"])) } }
                            td { (cell(&group["name"])) }
                            td { (cell(&group["channel"])) }
                            td {
                                form method="post" action=(action(&format!("subscription-groups/{}/delete", encode(&cell(&group["id"]))))) {
                                    (csrf(&page.session))
                                    button.danger type="submit" { "Delete " span.visually-hidden { (cell(&group["id"])) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action=(action("subscription-groups")) {
            (csrf(&page.session))
            div { label for="group-id" { "Id" } input #group-id name="id" required; }
            div { label for="group-name" { "Name" } input #group-name name="name" required; }
            div {
                label for="group-channel" { "Channel" }
                select #group-channel name="channel" {
                    option value="email" { "email" }
                    option value="sms" { "sms" }
                    option value="whats_app" { "whats_app" }
                }
            }
            button type="submit" { "Save the group" }
        }
    };
    layout::page_with_status(
        status,
        "Messaging settings",
        Some((page, "/messaging")),
        Some(&page.session),
        body,
    )
}

/// Saves through the admin API and shows the page again with what happened.
async fn save(
    dash: &Dash,
    page: &WsPage,
    method: Method,
    path: &str,
    body: Option<Value>,
    done: String,
) -> Response {
    let reply = dash.call(method, path, body.as_ref()).await;
    if reply.ok() {
        render(dash, page, Some(Ok(done)), StatusCode::OK).await
    } else {
        let status = reply.status;
        render(dash, page, Some(Err(reply.message())), status).await
    }
}

/// Deletes one object of the workspace's `collection` (its admin API path) and shows the page.
async fn remove(dash: &Dash, page: &WsPage, collection: &str, label: &str, name: &str) -> Response {
    let path = format!("/workspaces/{}/{collection}/{}", page.ws.name, encode(name));
    let done = format!("{label} {name} deleted");
    save(dash, page, Method::DELETE, &path, None, done).await
}

/// `POST /dashboard/{ws}/messaging/email`.
pub async fn save_email(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let optional = |name: &str| Some(form.get(name)).filter(|v| !v.trim().is_empty());
    let request = json!({
        "smtp_url": form.get("smtp_url"),
        "starttls": !form.get("starttls").is_empty(),
        "tracking_domain": optional("tracking_domain"),
        "custom_footer": optional("custom_footer"),
        "validate": !form.get("validate").is_empty(),
    });
    let path = format!("/workspaces/{}/email", page.ws.name);
    let done = "the SMTP relay is saved".to_string();
    save(&dash, &page, Method::PUT, &path, Some(request), done).await
}

/// `POST /dashboard/{ws}/messaging/content-blocks`.
pub async fn save_block(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let name = form.get("name");
    let description = Some(form.get("description")).filter(|d| !d.trim().is_empty());
    let request = json!({"content": form.exact("content"), "description": description});
    let path = format!(
        "/workspaces/{}/content-blocks/{}",
        page.ws.name,
        encode(&name)
    );
    let done = format!("content block {name} saved");
    save(&dash, &page, Method::PUT, &path, Some(request), done).await
}

/// `POST /dashboard/{ws}/messaging/content-blocks/{name}/delete`.
pub async fn delete_block(
    State(dash): State<Dash>,
    Path((_, name)): Path<(String, String)>,
    WsForm { page, .. }: WsForm,
) -> Response {
    remove(&dash, &page, "content-blocks", "content block", &name).await
}

/// `POST /dashboard/{ws}/messaging/hosts`: the allowed hosts, one per line.
pub async fn save_hosts(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let hosts: Vec<String> = form
        .get("allowed_hosts")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    let path = format!("/workspaces/{}/connected-content", page.ws.name);
    let done = format!("{} allowed hosts saved", hosts.len());
    let request = json!({"allowed_hosts": hosts});
    save(&dash, &page, Method::PUT, &path, Some(request), done).await
}

/// `POST /dashboard/{ws}/messaging/credentials`.
pub async fn save_credential(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let name = form.get("name");
    let request = json!({"username": form.get("username"), "password": form.exact("password")});
    let path = format!(
        "/workspaces/{}/connected-content/credentials/{}",
        page.ws.name,
        encode(&name)
    );
    let done = format!("credential {name} saved");
    save(&dash, &page, Method::PUT, &path, Some(request), done).await
}

/// `POST /dashboard/{ws}/messaging/credentials/{name}/delete`.
pub async fn delete_credential(
    State(dash): State<Dash>,
    Path((_, name)): Path<(String, String)>,
    WsForm { page, .. }: WsForm,
) -> Response {
    remove(
        &dash,
        &page,
        "connected-content/credentials",
        "credential",
        &name,
    )
    .await
}

/// `POST /dashboard/{ws}/messaging/subscription-groups`.
pub async fn save_group(State(dash): State<Dash>, WsForm { page, form }: WsForm) -> Response {
    let id = form.get("id");
    let request = json!({"name": form.get("name"), "channel": form.get("channel")});
    let path = format!(
        "/workspaces/{}/subscription-groups/{}",
        page.ws.name,
        encode(&id)
    );
    let done = format!("subscription group {id} saved");
    save(&dash, &page, Method::PUT, &path, Some(request), done).await
}

/// `POST /dashboard/{ws}/messaging/subscription-groups/{id}/delete`.
pub async fn delete_group(
    State(dash): State<Dash>,
    Path((_, id)): Path<(String, String)>,
    WsForm { page, .. }: WsForm,
) -> Response {
    remove(
        &dash,
        &page,
        "subscription-groups",
        "subscription group",
        &id,
    )
    .await
}
