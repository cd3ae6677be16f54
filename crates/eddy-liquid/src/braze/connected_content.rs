//! `{% connected_content URL [:option value]… %}`: Liquid in the URL, headers and body is
//! rendered when the tag runs, the answer is saved to a variable or printed in place. A failed
//! call renders nothing (an abort with `:retry`), as Braze documents.

use crate::fetch::{FetchError, Method, Request};
use crate::stop::Stop;
use crate::tree::{Block, Runtime, Tag};
use crate::value::Value;

use super::Braze;

/// A `{% connected_content … %}` call as written: Liquid in the URL, headers and body is
/// rendered when the tag runs.
#[derive(Debug, Clone)]
pub struct ConnectedContent {
    url: Block,
    method: Method,
    headers: Option<Block>,
    body: Option<Block>,
    content_type: Option<String>,
    basic_auth: Option<String>,
    save: Option<String>,
    cache_max_age: Option<u64>,
    no_cache: bool,
    retry: bool,
}

const OPTIONS: &[&str] = &[
    "method",
    "headers",
    "body",
    "content_type",
    "basic_auth",
    "save",
    "cache_max_age",
    "cache",
    "no_cache",
    "retry",
];

impl ConnectedContent {
    /// Reads the tag's markup: `URL [:option value]…`.
    pub fn parse(markup: &str) -> Result<ConnectedContent, String> {
        let mut parts: Vec<(&str, &str)> = Vec::new();
        let mut cuts: Vec<(usize, usize, &str)> = Vec::new();
        let b = markup.as_bytes();
        for (i, _) in markup.match_indices(':') {
            let preceded = i == 0 || b[i - 1].is_ascii_whitespace();
            if !preceded {
                continue;
            }
            let name_len = markup[i + 1..]
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            let name = &markup[i + 1..i + 1 + name_len];
            let ends = markup[i + 1 + name_len..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace);
            if OPTIONS.contains(&name) && ends {
                cuts.push((i, i + 1 + name_len, name));
            }
        }
        let url_end = cuts.first().map(|c| c.0).unwrap_or(markup.len());
        let url = markup[..url_end].trim();
        if url.is_empty() {
            return Err("connected_content needs a URL".into());
        }
        for (k, (_, value_start, name)) in cuts.iter().enumerate() {
            let value_end = cuts.get(k + 1).map(|c| c.0).unwrap_or(markup.len());
            parts.push((name, markup[*value_start..value_end].trim()));
        }
        let fragment = |text: &str| {
            crate::parse::parse(text, &Braze)
                .map_err(|e| format!("in connected_content: {}", e.message))
        };
        let mut call = ConnectedContent {
            url: fragment(url)?,
            method: Method::Get,
            headers: None,
            body: None,
            content_type: None,
            basic_auth: None,
            save: None,
            cache_max_age: None,
            no_cache: false,
            retry: false,
        };
        for (name, value) in parts {
            match name {
                "method" => {
                    call.method = match value.to_ascii_lowercase().as_str() {
                        "get" => Method::Get,
                        "post" => Method::Post,
                        other => {
                            return Err(format!(
                                "connected_content supports GET and POST, not '{other}'"
                            ));
                        }
                    }
                }
                "headers" => call.headers = Some(fragment(value)?),
                "body" => call.body = Some(fragment(value)?),
                "content_type" => call.content_type = Some(value.to_string()),
                "basic_auth" => call.basic_auth = Some(value.to_string()),
                "save" => {
                    if value.is_empty() {
                        return Err(":save needs a variable name".into());
                    }
                    call.save = Some(value.to_string());
                }
                "cache_max_age" | "cache" => {
                    let seconds: u64 = value
                        .parse()
                        .map_err(|_| format!(":{name} takes a number of seconds, not '{value}'"))?;
                    call.cache_max_age = Some(seconds);
                }
                "no_cache" => call.no_cache = true,
                "retry" => call.retry = true,
                _ => {}
            }
        }
        Ok(call)
    }
}

impl Tag for ConnectedContent {
    /// Renders its parts, fetches, and saves or prints the answer.
    fn render(&self, runtime: &mut dyn Runtime, out: &mut String) -> Result<(), Stop> {
        let call = self;
        let ctx = runtime;
        let url = ctx.render_fragment(&call.url)?.trim().to_string();
        let mut headers = Vec::new();
        if let Some(block) = &call.headers {
            let text = ctx.render_fragment(block)?;
            let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .map_err(|e| {
                    Stop::Error(format!(
                        "connected_content :headers must be a JSON object: {e}"
                    ))
                })?;
            for (k, v) in parsed {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                headers.push((k, v));
            }
        }
        if let Some(ct) = &call.content_type {
            headers.push(("Content-Type".into(), ct.clone()));
            headers.push(("Accept".into(), ct.clone()));
        }
        let body = match &call.body {
            Some(block) => Some(ctx.render_fragment(block)?),
            None => None,
        };
        let time_left = ctx.time_left()?;
        let request = Request {
            time_left,
            method: call.method,
            url,
            headers,
            body,
            basic_auth: call.basic_auth.clone(),
            cache_max_age: call.cache_max_age,
            no_cache: call.no_cache,
            retry: call.retry,
        };
        let answer = ctx.fetch(&request);
        let response = match answer {
            Ok(response) => response,
            // A host eddy refuses is an unavailable URL to the message (empty, or an abort with
            // `:retry`, as Braze treats one), and the operator is told why.
            Err(FetchError::Refused(reason)) => {
                let reason = format!("connected_content: {reason}");
                ctx.warn(reason.clone());
                if call.retry {
                    return Err(Stop::Abort(reason));
                }
                return Ok(());
            }
            Err(FetchError::Failed(reason)) if call.retry => {
                return Err(Stop::Abort(format!(
                    "connected_content failed after its retries: {reason}"
                )));
            }
            // Braze renders an empty string for a call that fails.
            Err(FetchError::Failed(_)) => return Ok(()),
        };
        match &response.json {
            Some(json) => {
                let value = Value::clone(json);
                match &call.save {
                    Some(name) => ctx.assign_weighed(name, value, response.json_weight)?,
                    None => out.push_str(&response.body),
                }
            }
            _ => {
                // A 404 and other failures render nothing; a text answer is printed in place.
                if (200..300).contains(&response.status) {
                    out.push_str(&response.body);
                }
            }
        }
        Ok(())
    }
}
