//! The API log: the workspace's last requests, filterable, each with its body and answer and
//! the objects the answer refused beside the error Braze gives for them.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{self, json_block, long_text, number};
use super::{Dash, WsPage};
use crate::api_log::{Entry, LogFilter, redact, refused_objects};
use crate::http::query_param;

/// Entries per page.
const PAGE: usize = 50;

/// `GET /dashboard/{ws}/log?endpoint=&status=&identifier=&before=`.
pub async fn page(State(dash): State<Dash>, page: WsPage, RawQuery(query): RawQuery) -> Response {
    let q = query.as_deref();
    let param = |name: &str| query_param(q, name).filter(|v| !v.trim().is_empty());
    let filter = LogFilter {
        endpoint: param("endpoint"),
        status: param("status"),
        identifier: param("identifier"),
    };
    let before = param("before").and_then(|b| b.parse::<u64>().ok());
    let entries = dash.app.api_log.list(page.ws.id, &filter, before, PAGE);
    let ws = &page.ws.name;
    let status = filter.status.clone().unwrap_or_default();
    let next = (entries.len() == PAGE)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let body = html! {
        h1 { "API log" }
        p { "The last requests made with this workspace's keys (REST API keys and partners' Data Import Keys), newest first. Secrets are redacted." }
        @if !dash.app.api_log.enabled() {
            p.flash.error role="alert" { "The API log is off: " code { "[dashboard] api_log_entries = 0" } "." }
        }
        form.filters method="get" {
            div { label for="endpoint" { "Endpoint" } input #endpoint name="endpoint" placeholder="/users/track" value=(filter.endpoint.clone().unwrap_or_default()); }
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    @for (value, label) in [("", "any"), ("2xx", "2xx"), ("4xx", "4xx"), ("5xx", "5xx"), ("errors", "errors and refused objects")] {
                        option value=(value) selected[status == value] { (label) }
                    }
                }
            }
            div { label for="identifier" { "Identifier" } input #identifier name="identifier" placeholder="external id, alias, email…" value=(filter.identifier.clone().unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        @if entries.is_empty() {
            p { "No requests match." }
        } @else {
            table.log {
                thead { tr { th scope="col" { "When" } th scope="col" { "Request" } th scope="col" { "Key" } th scope="col" { "Status" } th scope="col" { "Time" } th scope="col" { "Objects" } } }
                tbody {
                    @for e in &entries {
                        tr class=[e.refused.then_some("refused")] {
                            td.when { (eddy_model::time::format_iso(e.at_ms)) }
                            td { a href={ "/dashboard/" (ws) "/log/" (e.id) } { (e.method) " " (e.path) } }
                            td { (e.key) }
                            td.num { (e.status) }
                            td.num { (format!("{:.1} ms", e.micros as f64 / 1000.0)) }
                            td.num { (number(e.objects)) }
                        }
                        @let refused = refused_list(e);
                        @if !refused.is_empty() {
                            tr.refusals { td colspan="6" { (refused_markup(&refused)) } }
                        }
                        @if let Some(reason) = refusal_reason(e) {
                            tr.refusals { td colspan="6" { "Refused: " (long_text(&Value::String(reason))) } }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p { a href=(older_link(ws, &filter, next)) { "Older requests" } }
            }
        }
    };
    layout::frame("API log", Some((&page, "/log")), Some(&page.session), body)
}

fn older_link(ws: &str, filter: &LogFilter, before: u64) -> String {
    let enc = |v: &Option<String>| super::api::encode(v.as_deref().unwrap_or_default());
    format!(
        "/dashboard/{ws}/log?endpoint={}&status={}&identifier={}&before={before}",
        enc(&filter.endpoint),
        enc(&filter.status),
        enc(&filter.identifier)
    )
}

/// The request body as JSON with secrets redacted, or as text when it is not JSON.
fn request_json(entry: &Entry) -> Option<Value> {
    let mut value: Value = serde_json::from_slice(&entry.request).ok()?;
    redact(&mut value);
    Some(value)
}

/// Why an answer of 400 or more refused the request: the `message` of its JSON answer.
fn refusal_reason(entry: &Entry) -> Option<String> {
    if entry.status < 400 {
        return None;
    }
    let answer = answer_json(entry)?;
    answer.get("message")?.as_str().map(str::to_string)
}

fn answer_json(entry: &Entry) -> Option<Value> {
    let mut value: Value = serde_json::from_slice(entry.response.as_ref()?).ok()?;
    redact(&mut value);
    Some(value)
}

/// A refused object: where it was in the request, Braze's error, and the object itself.
struct Refusal {
    array: String,
    index: usize,
    error: String,
    object: Value,
}

fn refused_list(entry: &Entry) -> Vec<Refusal> {
    if !entry.refused {
        return Vec::new();
    }
    let (Some(answer), Some(request)) = (answer_json(entry), request_json(entry)) else {
        return Vec::new();
    };
    refused_objects(&answer)
        .into_iter()
        .map(|(array, index, error)| Refusal {
            object: request
                .get(&array)
                .and_then(|a| a.get(index))
                .cloned()
                .unwrap_or(Value::Null),
            array,
            index,
            error,
        })
        .collect()
}

fn refused_markup(refused: &[Refusal]) -> Markup {
    html! {
        ul.refused {
            @for r in refused {
                li {
                    strong { (r.array) "[" (r.index) "]" } ": " span.error-text { (r.error) }
                    (json_block(&r.object))
                }
            }
        }
    }
}

/// `GET /dashboard/{ws}/log/{id}`: one request whole.
pub async fn entry(
    State(dash): State<Dash>,
    page: WsPage,
    Path((_, id)): Path<(String, u64)>,
) -> Response {
    let Some(entry) = dash.app.api_log.get(page.ws.id, id) else {
        return layout::not_found(&page.session, "that request is no longer in the API log");
    };
    let refused = refused_list(&entry);
    let body = html! {
        h1 { (entry.method) " " (entry.path) }
        dl.facts {
            dt { "When" } dd { (eddy_model::time::format_iso(entry.at_ms)) }
            dt { "Key" } dd { (entry.key) }
            dt { "Status" } dd { (entry.status) }
            dt { "Time" } dd { (format!("{:.1} ms", entry.micros as f64 / 1000.0)) }
            dt { "Objects" } dd { (number(entry.objects)) }
        }
        @if !refused.is_empty() {
            h2 { "Refused objects" }
            (refused_markup(&refused))
        }
        h2 { "Request body" }
        @if entry.request_truncated {
            p { "Only the first " (number(entry.request.len() as u64)) " bytes were kept." }
        }
        @match request_json(&entry) {
            Some(value) => (json_block(&value)),
            None => (raw_body(&entry.request)),
        }
        h2 { "Answer" }
        @match answer_json(&entry) {
            Some(value) => (json_block(&value)),
            None => p { "Not kept (not JSON, streamed, or larger than the log keeps)." },
        }
        p { a href={ "/dashboard/" (page.ws.name) "/log" } { "Back to the log" } }
    };
    layout::frame(
        "API log entry",
        Some((&page, "/log")),
        Some(&page.session),
        body,
    )
}

/// A body that is not whole JSON (cut at the log's limit, or not JSON at all): shown as text
/// unless it names a secret field, which cannot be redacted reliably in broken JSON.
fn raw_body(bytes: &[u8]) -> Markup {
    let text = String::from_utf8_lossy(bytes).to_lowercase();
    let secret = crate::api_log::SECRET_FIELDS
        .iter()
        .any(|name| text.contains(&format!("\"{name}\"")));
    html! {
        @if secret {
            p { "Not shown: the body is not whole JSON and names a secret field." }
        } @else {
            pre.json tabindex="0" { (String::from_utf8_lossy(bytes)) }
        }
    }
}
