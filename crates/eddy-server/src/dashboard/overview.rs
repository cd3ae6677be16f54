//! The overview: profiles, activity and data points per day, connectors, latest errors.

use axum::extract::State;
use axum::response::Response;
use maud::html;
use serde_json::Value;

use super::layout::{self, bar_chart, cell, long_text, number};
use super::{Dash, WsPage};
use crate::api_log::LogFilter;

/// Days the charts show.
const DAYS: usize = 30;

/// `GET /dashboard/{ws}`.
pub async fn page(State(dash): State<Dash>, page: WsPage) -> Response {
    let ws = page.ws.name.clone();
    let usage = dash.get(&format!("/workspaces/{ws}/usage")).await;
    let connectors = dash.get(&format!("/workspaces/{ws}/currents")).await;
    // The last 30 calendar days, today last; days without a record count zero.
    let now = eddy_model::time::now_ms();
    let labels: Vec<String> = (0..DAYS as i64)
        .rev()
        .map(|back| eddy_model::time::utc_day(now - back * 86_400_000))
        .collect();
    let by_day: std::collections::HashMap<String, &Value> = usage
        .list("days")
        .iter()
        .map(|d| (cell(&d["date"]), d))
        .collect();
    let series = |field: &str| -> Vec<u64> {
        labels
            .iter()
            .map(|day| by_day.get(day).and_then(|d| d[field].as_u64()).unwrap_or(0))
            .collect()
    };
    let sum = |field: &str| series(field).iter().sum::<u64>();
    let quiet = labels.iter().all(|day| !by_day.contains_key(day));
    let errors = dash.app.api_log.list(
        page.ws.id,
        &LogFilter {
            status: Some("errors".into()),
            ..LogFilter::default()
        },
        None,
        10,
    );
    let body = html! {
        h1 { "Overview of " (ws) }
        ul.figures {
            li { span.figure { (number(usage.get("profiles").as_u64().unwrap_or(0))) } " profiles" }
            li { span.figure { (number(sum("events"))) } " events, last 30 days" }
            li { span.figure { (number(sum("purchases"))) } " purchases, last 30 days" }
            li { span.figure { (number(sum("billable"))) } " billable data points, last 30 days" }
            li { span.figure { (number(sum("non_billable"))) } " non-billable data points, last 30 days" }
        }
        @if quiet {
            p { "Nothing has arrived yet. Send a " code { "/users/track" } " request with a REST API key ("
                a href={ "/dashboard/" (ws) "/keys" } { "create one" } ") and it shows here." }
        } @else {
            div.charts {
                (bar_chart("New profiles per day", &labels, &[("new profiles", "#1f5f99", series("new_profiles"))]))
                (bar_chart("Events and purchases per day", &labels, &[("events", "#1f5f99", series("events")), ("purchases", "#b35900", series("purchases"))]))
                (bar_chart("Data points per day", &labels, &[("billable", "#1f5f99", series("billable")), ("non-billable", "#6b6b6b", series("non_billable"))]))
            }
        }
        h2 { "Currents connectors" }
        @if connectors.list("connectors").is_empty() {
            p { "No connectors. " a href={ "/dashboard/" (ws) "/currents" } { "Create one" } " to export events." }
        } @else {
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "State" } th scope="col" { "Delivered" } th scope="col" { "Pending" } th scope="col" { "Lag" } th scope="col" { "Last error" } } }
                tbody {
                    @for c in connectors.list("connectors") {
                        tr {
                            td { (cell(&c["name"])) }
                            td { (cell(&c["type"])) }
                            td { span class={ "state " (cell(&c["state"])) } { (cell(&c["state"])) } }
                            td.num { (number(c["delivered"].as_u64().unwrap_or(0))) }
                            td.num { (number(c["pending"].as_u64().unwrap_or(0))) }
                            td.num { (c["lag_seconds"].as_u64().unwrap_or(0)) " s" }
                            td.error { (long_text(&c["last_error"])) }
                        }
                    }
                }
            }
        }
        h2 { "Latest errors" }
        @if errors.is_empty() {
            p { "No refused requests in the API log." }
        } @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Request" } th scope="col" { "Status" } th scope="col" { "Why" } } }
                tbody {
                    @for e in &errors {
                        tr {
                            td { (eddy_model::time::format_iso(e.at_ms)) }
                            td { a href={ "/dashboard/" (ws) "/log/" (e.id) } { (e.method) " " (e.path) } }
                            td.num { (e.status) }
                            td { (error_text(e)) }
                        }
                    }
                }
            }
        }
    };
    layout::frame(
        &format!("Overview of {ws}"),
        Some((&page, "")),
        Some(&page.session),
        body,
    )
}

/// The reason an answer gives: its `message`, or its first refused object's error.
fn error_text(entry: &crate::api_log::Entry) -> String {
    let Some(answer) = entry
        .response
        .as_ref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
    else {
        return String::new();
    };
    if let Some((_, _, text)) = crate::api_log::refused_objects(&answer).first() {
        return text.clone();
    }
    cell(answer.get("message").unwrap_or(&Value::Null))
}
