//! Users: find one by any identifier; a profile page with everything eddy knows about them;
//! delete and merge after a confirmation.

use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::api::encode;
use super::layout::{self, cell, csrf, flash, json_block, number};
use super::{Dash, WsForm, WsPage};
use crate::http::query_param;

/// Standard fields shown in this order (the rest follow alphabetically).
const IDENTIFIERS: [&str; 5] = ["braze_id", "external_id", "user_aliases", "email", "phone"];

/// Keys of the profile answer that get their own section rather than the standard fields.
const SECTIONS: [&str; 13] = [
    "custom_attributes",
    "custom_events",
    "purchases",
    "cohorts",
    "segments",
    "merged",
    "subscription_groups",
    "devices",
    "push_tokens",
    "id",
    "braze_id",
    "external_id",
    "user_aliases",
];

/// `GET /dashboard/{ws}/users?q=&after=`: search; one match opens the profile.
pub async fn search(State(dash): State<Dash>, page: WsPage, RawQuery(query): RawQuery) -> Response {
    let ws = page.ws.name.clone();
    let q = query_param(query.as_deref(), "q")
        .map(|q| q.trim().to_string())
        .unwrap_or_default();
    let after = query_param(query.as_deref(), "after").unwrap_or_default();
    // A search, a later page of every user, or the first page.
    let path = if !q.is_empty() {
        format!("/workspaces/{ws}/users?q={}", encode(&q))
    } else if !after.is_empty() {
        format!("/workspaces/{ws}/users?limit=50&after={}", encode(&after))
    } else {
        format!("/workspaces/{ws}/users?limit=50")
    };
    let reply = dash.get(&path).await;
    let users = reply.list("users");
    if !q.is_empty() && users.len() == 1 {
        let braze_id = cell(&users[0]["braze_id"]);
        return Redirect::to(&format!("/dashboard/{ws}/users/{}", encode(&braze_id)))
            .into_response();
    }
    let body = html! {
        h1 { "Users" }
        form.filters method="get" role="search" {
            div {
                label for="q" { "Identifier" }
                input #q name="q" value=(q) placeholder="external id, braze id, email, phone, or alias as label:name";
            }
            button type="submit" { "Find" }
        }
        @if !reply.ok() {
            p.flash.error role="alert" { (reply.message()) }
        } @else if users.is_empty() {
            p { @if q.is_empty() { "No users yet." } @else { "No user has the identifier “" (q) "”." } }
        } @else {
            @if q.is_empty() { p { "Every user, oldest first." } }
            (user_table(&ws, users))
            @if let Some(next) = reply.get("next").as_u64() {
                p { a href={ "/dashboard/" (ws) "/users?after=" (next) } { "Next users" } }
            }
        }
    };
    layout::frame("Users", Some((&page, "/users")), Some(&page.session), body)
}

fn user_table(ws: &str, users: &[Value]) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { "Braze id" } th scope="col" { "External id" } th scope="col" { "Email" } th scope="col" { "Phone" } th scope="col" { "Aliases" } th scope="col" { "Created" } } }
            tbody {
                @for u in users {
                    tr {
                        td { a href={ "/dashboard/" (ws) "/users/" (encode(&cell(&u["braze_id"]))) } { (cell(&u["braze_id"])) } }
                        td { (cell(&u["external_id"])) }
                        td { (cell(&u["email"])) }
                        td { (cell(&u["phone"])) }
                        td { (aliases(&u["user_aliases"])) }
                        td { (cell(&u["created_at"])) }
                    }
                }
            }
        }
    }
}

fn aliases(value: &Value) -> String {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .map(|a| format!("{}:{}", cell(&a["alias_label"]), cell(&a["alias_name"])))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The JSON type of an attribute's value, as people call it.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(s) if eddy_model::time::parse_time(s).is_some() => "time",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `GET /dashboard/{ws}/users/{braze_id}`.
pub async fn profile(
    State(dash): State<Dash>,
    page: WsPage,
    Path((_, braze_id)): Path<(String, String)>,
) -> Response {
    profile_page(&dash, &page, &braze_id, None).await
}

async fn profile_page(
    dash: &Dash,
    page: &WsPage,
    braze_id: &str,
    outcome: Option<Result<String, String>>,
) -> Response {
    let ws = page.ws.name.clone();
    let id = encode(braze_id);
    let user = dash.get(&format!("/workspaces/{ws}/users/{id}")).await;
    if !user.ok() {
        let body = html! {
            h1 { "User " (braze_id) }
            (flash(&outcome))
            p.flash.error role="alert" { (user.message()) }
            p { a href={ "/dashboard/" (ws) "/users" } { "Find another user" } }
        };
        return layout::page_with_status(
            user.status,
            "User",
            Some((page, "/users")),
            Some(&page.session),
            body,
        );
    }
    let events = dash
        .get(&format!("/workspaces/{ws}/users/{id}/events"))
        .await;
    let messages = dash
        .get(&format!(
            "/workspaces/{ws}/users/messages?braze_id={id}&limit=20"
        ))
        .await;
    let profile = &user.body;
    let standard: Vec<(&String, &Value)> = profile
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !SECTIONS.contains(&k.as_str()) && !IDENTIFIERS.contains(&k.as_str())
                })
                .collect()
        })
        .unwrap_or_default();
    let title = profile["external_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| braze_id.to_string());
    let body = html! {
        h1 { "User " (title) }
        (flash(&outcome))
        section aria-labelledby="identifiers" {
            h2 #identifiers { "Identifiers" }
            dl.facts {
                dt { "Braze id" } dd { code { (cell(&profile["braze_id"])) } }
                dt { "External id" } dd { (or_none(cell(&profile["external_id"]))) }
                dt { "Aliases" } dd { (aliases(&profile["user_aliases"])) }
                dt { "Email" } dd { (or_none(cell(&profile["email"]))) }
                dt { "Phone" } dd { (or_none(cell(&profile["phone"]))) }
                dt { "Devices" } dd { (or_none(profile["devices"].as_array().map(|d| d.iter().map(|x| cell(&x["device_id"])).collect::<Vec<_>>().join(", ")).unwrap_or_default())) }
            }
        }
        section aria-labelledby="standard" {
            h2 #standard { "Standard fields" }
            @if standard.is_empty() { p { "None set." } } @else {
                table { thead { tr { th scope="col" { "Field" } th scope="col" { "Value" } } }
                    tbody { @for (k, v) in &standard { tr { th scope="row" { (k) } td { (cell(v)) } } } } }
            }
        }
        section aria-labelledby="custom" {
            h2 #custom { "Custom attributes" }
            @match profile["custom_attributes"].as_object() {
                Some(attrs) if !attrs.is_empty() => {
                    table { thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Value" } } }
                        tbody { @for (k, v) in attrs { tr { th scope="row" { (k) } td { (type_of(v)) } td { (cell(v)) } } } } }
                }
                _ => p { "None." },
            }
        }
        section aria-labelledby="activity" {
            h2 #activity { "Events and purchases" }
            (occurrences("Custom events", &profile["custom_events"]))
            (occurrences("Purchases", &profile["purchases"]))
        }
        section aria-labelledby="membership" {
            h2 #membership { "Cohorts and segments" }
            h3 { "Cohorts" }
            @if user.list("cohorts").is_empty() { p { "In no cohort." } } @else {
                ul { @for c in user.list("cohorts") { li { (cell(&c["name"])) " (" (cell(&c["partner"])) " " code { (cell(&c["cohort_id"])) } ")" } } }
            }
            h3 { "Segments" }
            @if user.list("segments").is_empty() { p { "In no saved segment." } } @else {
                ul { @for s in user.list("segments") { li { a href={ "/dashboard/" (ws) "/segments/" (cell(&s["id"])) } { (cell(&s["name"])) } } } }
            }
        }
        section aria-labelledby="subscriptions" {
            h2 #subscriptions { "Subscriptions" }
            dl.facts {
                dt { "Email" } dd { (or_none(cell(&profile["email_subscribe"]))) }
                dt { "Push" } dd { (or_none(cell(&profile["push_subscribe"]))) }
                @for g in user.list("subscription_groups") {
                    dt { "Group " code { (cell(&g["id"])) } } dd { (cell(&g["status"])) }
                }
            }
        }
        section aria-labelledby="merges" {
            h2 #merges { "Merge history" }
            @if user.list("merged").is_empty() { p { "No profile was merged into this one." } } @else {
                table { thead { tr { th scope="col" { "Merged profile" } th scope="col" { "Its external id" } th scope="col" { "When" } } }
                    tbody { @for m in user.list("merged") { tr { td { code { (cell(&m["braze_id"])) } } td { (cell(&m["external_id"])) } td { (cell(&m["merged_at"])) } } } } }
            }
        }
        section aria-labelledby="currents" {
            h2 #currents { "Recent Currents events" }
            @if events.list("events").is_empty() { p { "None among the latest events." } } @else {
                table { thead { tr { th scope="col" { "When" } th scope="col" { "Type" } th scope="col" { "Record" } } }
                    tbody { @for e in events.list("events") { tr { td { (cell(&e["at"])) } td { (cell(&e["type"])) } td { details { summary { "record" } (json_block(&e["record"])) } } } } } }
            }
        }
        section aria-labelledby="messages" {
            h2 #messages { "Messages" }
            @if messages.list("messages").is_empty() { p { "No message was sent to this user." } } @else {
                (messages_table(messages.list("messages")))
            }
        }
        section aria-labelledby="actions" {
            h2 #actions { "Delete or merge" }
            form.danger method="post" action={ "/dashboard/" (ws) "/users/" (id) "/delete" } {
                (csrf(&page.session))
                p { "Deleting removes the profile and its identifiers, as " code { "/users/delete" } " does." }
                div.check { input #confirm-delete type="checkbox" name="confirm" value="yes" required; label for="confirm-delete" { "Yes, delete this user" } }
                button.danger type="submit" { "Delete user" }
            }
            form.danger method="post" action={ "/dashboard/" (ws) "/users/" (id) "/merge" } {
                (csrf(&page.session))
                p { "Merging folds this user into another, as " code { "/users/merge" } " does: this profile goes away." }
                div { label for="merge-into" { "External id of the user to keep" } input #merge-into name="into" required; }
                div.check { input #confirm-merge type="checkbox" name="confirm" value="yes" required; label for="confirm-merge" { "Yes, merge this user into that one" } }
                button.danger type="submit" { "Merge user" }
            }
        }
        p { "Raw profile: " } details { summary { "JSON" } (json_block(profile)) }
    };
    layout::frame(
        &format!("User {title}"),
        Some((page, "/users")),
        Some(&page.session),
        body,
    )
}

/// A fact that may be unset: "none" (muted) rather than an empty cell.
fn or_none(text: String) -> Markup {
    html! {
        @if text.is_empty() { span.muted { "none" } } @else { (text) }
    }
}

/// What each send did for the user, newest first: one row per channel it used (or its outcome
/// when it used none, e.g. the control group), with the reason of anything not sent.
fn messages_table(records: &[Value]) -> Markup {
    let rows = records.iter().flat_map(|record| {
        let channels: Vec<(String, Value)> = match record["channels"].as_object() {
            Some(map) if !map.is_empty() => {
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            _ => vec![("-".to_string(), record.clone())],
        };
        channels
            .into_iter()
            .map(move |(channel, outcome)| (record, channel, outcome))
    });
    html! {
        table {
            thead { tr { th scope="col" { "When" } th scope="col" { "Campaign" } th scope="col" { "Send" } th scope="col" { "Channel" } th scope="col" { "Outcome" } th scope="col" { "Reason" } } }
            tbody {
                @for (record, channel, outcome) in rows {
                    tr {
                        td { (cell(&record["at"])) }
                        td { (or_none(cell(&record["campaign_name"]))) }
                        td { code { (cell(&record["dispatch_id"])) } }
                        td { (channel) }
                        td { (cell(&outcome["status"])) }
                        td { (cell(&outcome["reason"])) }
                    }
                }
            }
        }
    }
}

fn occurrences(title: &str, list: &Value) -> Markup {
    let empty = Vec::new();
    let items = list.as_array().unwrap_or(&empty);
    html! {
        h3 { (title) }
        @if items.is_empty() { p { "None." } } @else {
            table { thead { tr { th scope="col" { "Name" } th scope="col" { "Count" } th scope="col" { "First" } th scope="col" { "Last" } } }
                tbody { @for o in items { tr { th scope="row" { (cell(&o["name"])) } td.num { (number(o["count"].as_u64().unwrap_or(0))) } td { (cell(&o["first"])) } td { (cell(&o["last"])) } } } } }
        }
    }
}

/// `POST /dashboard/{ws}/users/{braze_id}/delete` (`confirm=yes`).
pub async fn delete(
    State(dash): State<Dash>,
    Path((_, braze_id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    if form.get("confirm") != "yes" {
        return profile_page(
            &dash,
            &page,
            &braze_id,
            Some(Err("tick the confirmation to delete".into())),
        )
        .await;
    }
    let ws = &page.ws.name;
    let reply = dash
        .call(
            Method::DELETE,
            &format!("/workspaces/{ws}/users/{}", encode(&braze_id)),
            None,
        )
        .await;
    if !reply.ok() {
        return profile_page(&dash, &page, &braze_id, Some(Err(reply.message()))).await;
    }
    let body = html! {
        h1 { "User deleted" }
        p.flash.ok role="status" { "User " code { (braze_id) } " was deleted." }
        p { a href={ "/dashboard/" (ws) "/users" } { "Back to users" } }
    };
    layout::frame(
        "User deleted",
        Some((&page, "/users")),
        Some(&page.session),
        body,
    )
}

/// `POST /dashboard/{ws}/users/{braze_id}/merge` (`into=EXTERNAL_ID&confirm=yes`).
pub async fn merge(
    State(dash): State<Dash>,
    Path((_, braze_id)): Path<(String, String)>,
    WsForm { page, form }: WsForm,
) -> Response {
    let into = form.get("into");
    if form.get("confirm") != "yes" || into.is_empty() {
        return profile_page(
            &dash,
            &page,
            &braze_id,
            Some(Err(
                "name the user to keep and tick the confirmation to merge".into(),
            )),
        )
        .await;
    }
    let ws = &page.ws.name;
    let user = dash
        .get(&format!("/workspaces/{ws}/users/{}", encode(&braze_id)))
        .await;
    let Some(to_merge) = merge_identifier(&user.body) else {
        return profile_page(
            &dash,
            &page,
            &braze_id,
            Some(Err(
                "this user has no external id, alias, email or phone, which merging needs".into(),
            )),
        )
        .await;
    };
    let request = json!({"merge_updates": [{"identifier_to_merge": to_merge, "identifier_to_keep": {"external_id": into}}]});
    let reply = dash
        .call(
            Method::POST,
            &format!("/workspaces/{ws}/users/merge"),
            Some(&request),
        )
        .await;
    if !reply.ok() {
        return profile_page(&dash, &page, &braze_id, Some(Err(reply.message()))).await;
    }
    // The kept user's page, now with this one in its merge history.
    let found = dash
        .get(&format!("/workspaces/{ws}/users?q={}", encode(&into)))
        .await;
    match found.list("users").first() {
        Some(user) => {
            let kept = cell(&user["braze_id"]);
            profile_page(
                &dash,
                &page,
                &kept,
                Some(Ok(format!("merged {braze_id} into this user"))),
            )
            .await
        }
        None => (StatusCode::OK, "merged").into_response(),
    }
}

/// How `/users/merge` can name this user: its external id, else its first alias, else its
/// email or phone.
fn merge_identifier(profile: &Value) -> Option<Value> {
    if let Some(id) = profile["external_id"].as_str() {
        return Some(json!({"external_id": id}));
    }
    if let Some(alias) = profile["user_aliases"].as_array().and_then(|a| a.first()) {
        return Some(json!({"user_alias": alias}));
    }
    for field in ["email", "phone"] {
        if let Some(value) = profile[field].as_str() {
            return Some(json!({ field: value }));
        }
    }
    None
}
