//! The page frame and the pieces pages share.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::WsPage;
use super::session::Session;

/// The sections of a workspace, as the navigation lists them: (path after the workspace, label).
const SECTIONS: [(&str, &str); 12] = [
    ("", "Overview"),
    ("/log", "API log"),
    ("/users", "Users"),
    ("/segments", "Segments"),
    ("/cohorts", "Cohorts and partners"),
    ("/currents", "Currents"),
    ("/keys", "API keys"),
    ("/templates", "Templates"),
    ("/campaigns", "Campaigns"),
    ("/canvases", "Canvases"),
    ("/catalogs", "Catalogs"),
    ("/messaging", "Messaging settings"),
];

/// A whole page: header, navigation of the workspace (when there is one), and the body.
pub fn frame(
    title: &str,
    page: Option<(&WsPage, &str)>,
    session: Option<&Session>,
    body: Markup,
) -> Response {
    page_with_status(StatusCode::OK, title, page, session, body)
}

/// [`frame`] with another status than 200.
pub fn page_with_status(
    status: StatusCode,
    title: &str,
    page: Option<(&WsPage, &str)>,
    session: Option<&Session>,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · eddy" }
                link rel="stylesheet" href="/dashboard/assets/style.css";
                script src="/dashboard/assets/dashboard.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/dashboard" { "eddy" }
                    @if let Some((page, _)) = page {
                        nav aria-label="Workspace" {
                            label for="ws-switch" { "Workspace" }
                            select #ws-switch data-switch-workspace {
                                @for ws in &page.all {
                                    option value=(ws.name) selected[ws.name == page.ws.name] { (ws.name) }
                                }
                            }
                        }
                    }
                    @if let Some(session) = session {
                        form.signout method="post" action="/dashboard/sign-out" {
                            (csrf(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                div.shell {
                    @if let Some((page, current)) = page {
                        nav.side aria-label="Sections" {
                            ul {
                                @for (path, label) in SECTIONS {
                                    li {
                                        a href={ "/dashboard/" (page.ws.name) (path) }
                                          aria-current=[(path == current).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                    }
                    main #main {
                        @if let Some(session) = session {
                            meta name="csrf-token" content=(session.csrf);
                        }
                        (body)
                    }
                }
            }
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// The hidden CSRF field every form carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// The sign-in page.
pub fn sign_in(error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        div.signin {
            h1 { "Sign in to eddy" }
            p { "Use the admin token: " code { "EDDY_ADMIN_TOKEN" } ", or the one eddy wrote to "
                code { "<data-dir>/admin-token" } " at its first start." }
            @if let Some(error) = error {
                p.flash.error role="alert" { (error) }
            }
            form method="post" action="/dashboard/sign-in" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        }
    };
    page_with_status(status, "Sign in", None, None, body)
}

/// A 404 page for a signed-in user.
pub fn not_found(session: &Session, what: &str) -> Response {
    let body = html! {
        h1 { "Not found" }
        p { (what) }
        p { a href="/dashboard" { "Back to the workspaces" } }
    };
    page_with_status(
        StatusCode::NOT_FOUND,
        "Not found",
        None,
        Some(session),
        body,
    )
}

/// A 403 page: a form without this session's CSRF token.
pub fn forbidden(session: &Session) -> Response {
    let body = html! {
        h1 { "Refused" }
        p { "The form did not carry this session's token (an old tab, or another site posting here). Reload the page and try again." }
    };
    page_with_status(StatusCode::FORBIDDEN, "Refused", None, Some(session), body)
}

/// A message above a page: what an action did, or why it was refused.
pub fn flash(outcome: &Option<Result<String, String>>) -> Markup {
    html! {
        @match outcome {
            Some(Ok(text)) => p.flash.ok role="status" { (text) },
            Some(Err(text)) => p.flash.error role="alert" { (text) },
            None => {},
        }
    }
}

/// A JSON value shown as indented text.
pub fn json_block(value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json tabindex="0" { (text) } }
}

/// A value as text in a table cell (strings without quotes, nothing for null).
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Characters of a long value shown before it folds.
const FOLD_AFTER: usize = 120;

/// A value that may be long (an error from a remote service, an id): shown whole when short,
/// else its beginning, with the whole text one click away; it wraps anywhere, so it never
/// widens its table past the window.
pub fn long_text(value: &Value) -> Markup {
    let text = cell(value);
    let Some((cut, _)) = text.char_indices().nth(FOLD_AFTER) else {
        return html! { span.long { (text) } };
    };
    html! {
        details.long {
            summary { (&text[..cut]) "…" }
            span { (text) }
        }
    }
}

/// A number with thousands separators.
pub fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A bar chart of one or two series per label, as SVG with a text alternative (the same
/// figures as a table for screen readers and for copying).
pub fn bar_chart(title: &str, labels: &[String], series: &[(&str, &str, Vec<u64>)]) -> Markup {
    let max = series
        .iter()
        .flat_map(|(_, _, values)| values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, pad) = (640.0_f64, 160.0_f64, 20.0_f64);
    let groups = labels.len().max(1) as f64;
    let group_width = (width - pad) / groups;
    let bar_width = (group_width * 0.8 / series.len().max(1) as f64).max(1.0);
    let mut bars = String::new();
    for (s, (name, color, values)) in series.iter().enumerate() {
        for (i, value) in values.iter().enumerate() {
            let h = (*value as f64 / max as f64) * (height - pad);
            let x = pad + i as f64 * group_width + s as f64 * bar_width;
            let y = height - h;
            bars.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar_width:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{} {}: {}</title></rect>",
                html_escape(&labels[i]),
                html_escape(name),
                value
            ));
        }
    }
    let first = labels.first().map(|l| html_escape(l)).unwrap_or_default();
    let last = labels.last().map(|l| html_escape(l)).unwrap_or_default();
    let axis = height + 14.0;
    let svg = format!(
        "<svg viewBox=\"0 0 {width} {}\" class=\"chart\" aria-hidden=\"true\" focusable=\"false\"><line x1=\"{pad}\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\" stroke=\"#555\"/><text x=\"0\" y=\"12\" font-size=\"11\" fill=\"#333\">{}</text>{bars}<text x=\"{pad}\" y=\"{axis}\" font-size=\"11\" fill=\"#333\">{first}</text><text x=\"{width}\" y=\"{axis}\" font-size=\"11\" fill=\"#333\" text-anchor=\"end\">{last}</text></svg>",
        height + 18.0,
        number(max)
    );
    html! {
        figure.chart {
            figcaption { (title) }
            div.legend {
                @for (name, color, _) in series {
                    span { span.swatch style={ "background:" (color) } {} (name) }
                }
            }
            (PreEscaped(svg))
            details {
                summary { "The figures" }
                table {
                    thead { tr { th scope="col" { "Day" } @for (name, _, _) in series { th scope="col" { (name) } } } }
                    tbody {
                        @for (i, label) in labels.iter().enumerate() {
                            tr { th scope="row" { (label) } @for (_, _, values) in series { td.num { (number(values.get(i).copied().unwrap_or(0))) } } }
                        }
                    }
                }
            }
        }
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_get_separators() {
        assert_eq!(super::number(0), "0");
        assert_eq!(super::number(999), "999");
        assert_eq!(super::number(1000), "1,000");
        assert_eq!(super::number(1234567), "1,234,567");
    }
}
