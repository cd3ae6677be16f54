//! Braze's dialect on top of Shopify Liquid: its filters, `abort_message`, `connected_content`,
//! and the variables a user's profile gives a template (`${first_name}`, `custom_attribute`…).
//! What is implemented, with the pages it follows, is listed in `docs/liquid.md`.

use std::fmt::Write;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest;

use crate::filters::{base64_encode, cgi_escape};
use crate::markup::{Expr, parse_expr};
use crate::parse::Block;
use crate::render::{Context, Stop};
use crate::value::{Number, Object, Value};

/// `abort_message()`, `abort_message('reason')`: the reason's expression.
pub fn abort_reason(markup: &str) -> Option<Expr> {
    let inner = markup.trim();
    let inner = inner
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(inner)
        .trim();
    if inner.is_empty() {
        None
    } else {
        Some(parse_expr(inner))
    }
}

/// (least, most) arguments of Braze's filters, counting the input.
pub fn filter_arity(name: &str) -> Option<(usize, Option<usize>)> {
    Some(match name {
        "md5"
        | "sha1"
        | "sha2"
        | "url_escape"
        | "url_param_escape"
        | "json_escape"
        | "number_with_delimiter" => (1, Some(1)),
        "hmac_sha1_hex" | "hmac_sha1_base64" | "hmac_sha256_hex" | "hmac_sha256_base64"
        | "property_accessor" | "time_zone" => (2, Some(2)),
        _ => return None,
    })
}

/// Applies one of Braze's filters (arity already checked).
pub fn filter(
    name: &str,
    input: Value,
    args: &[std::borrow::Cow<'_, Value>],
) -> Result<Value, Stop> {
    let text = input.to_string_lossy();
    let key = || {
        args.first()
            .map(|a| a.to_string_lossy())
            .unwrap_or_default()
    };
    Ok(match name {
        "md5" => Value::Str(hex(&md5::Md5::digest(text.as_bytes()))),
        "sha1" => Value::Str(hex(&sha1::Sha1::digest(text.as_bytes()))),
        "sha2" => Value::Str(hex(&sha2::Sha256::digest(text.as_bytes()))),
        "hmac_sha1_hex" => Value::Str(hex(&hmac_sha1(&key(), &text))),
        "hmac_sha1_base64" => Value::Str(base64_encode(&hmac_sha1(&key(), &text), false)),
        "hmac_sha256_hex" => Value::Str(hex(&hmac_sha256(&key(), &text))),
        "hmac_sha256_base64" => Value::Str(base64_encode(&hmac_sha256(&key(), &text), false)),
        "url_escape" => Value::Str(url_escape(&text)),
        "url_param_escape" => Value::Str(cgi_escape(&text).replace('+', "%20")),
        "json_escape" => Value::Str(json_escape(&text)),
        "property_accessor" => match (&input, args.first().map(|a| a.as_ref())) {
            (Value::Object(o), Some(Value::Str(k))) => o.get(k).cloned().unwrap_or_default(),
            _ => Value::Nil,
        },
        "number_with_delimiter" => number_with_delimiter(&input),
        "time_zone" => crate::dates::time_zone_filter(input, &key()),
        _ => input,
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn hmac_sha1(key: &str, message: &str) -> Vec<u8> {
    match <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn hmac_sha256(key: &str, message: &str) -> Vec<u8> {
    match <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Ruby's `URI::DEFAULT_PARSER.escape`: characters outside the URI's reserved and unreserved
/// sets are percent-encoded; `/ : ? & = #` stay.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-_.!~*'();/?:@&=+$,[]#".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The text escaped for a JSON string (without the surrounding quotes).
fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// `1234567.891` → `1,234,567.891`.
fn number_with_delimiter(input: &Value) -> Value {
    let text = match input {
        Value::Int(_) | Value::Big(_) | Value::Float(_) => input.to_string_lossy(),
        Value::Str(s)
            if matches!(
                Number::from_value(input),
                Number::Int(_) | Number::Decimal(..)
            ) && !s.trim().is_empty() =>
        {
            s.trim().to_string()
        }
        other => return other.clone(),
    };
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) {
        return input.clone();
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Value::Str(out)
}

/// An HTTP method Connected Content may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (the default).
    Get,
    /// POST.
    Post,
}

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

/// One Connected Content request, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// GET or POST.
    pub method: Method,
    /// The URL.
    pub url: String,
    /// Headers, as given in `:headers` (and the content type).
    pub headers: Vec<(String, String)>,
    /// The body of a POST.
    pub body: Option<String>,
    /// The name of a stored credential for HTTP basic auth.
    pub basic_auth: Option<String>,
    /// Seconds an answer may be reused; `None`: the default (GET 5 minutes, POST never).
    pub cache_max_age: Option<u64>,
    /// Never reuse an answer.
    pub no_cache: bool,
    /// Retry failures (up to 5 attempts); the message aborts if all fail.
    pub retry: bool,
    /// What is left of the render's time: every attempt and pause ends within it.
    pub time_left: std::time::Duration,
}

/// An answer to a Connected Content request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body (shared: a cache hit does not copy it).
    pub body: std::sync::Arc<str>,
    /// The body read as JSON (an object or array), when it is; cached answers keep it, so a
    /// cache hit is not parsed again.
    pub json: Option<std::sync::Arc<Value>>,
    /// What `json` weighs toward a render's memory, measured once with it.
    pub json_weight: usize,
}

impl Response {
    /// An answer; its body is read as JSON once, here.
    pub fn new(status: u16, body: String) -> Response {
        let json = match serde_json::from_str::<serde_json::Value>(&body) {
            // Objects carry the status, as Braze's `__http_status_code__`.
            Ok(mut v) if v.is_object() || v.is_array() => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("__http_status_code__".into(), status.into());
                }
                Some(std::sync::Arc::new(Value::from_json(&v)))
            }
            _ => None,
        };
        let json_weight = json.as_ref().map_or(0, |v| v.weight());
        Response {
            status,
            body: body.into(),
            json,
            json_weight,
        }
    }
}

/// Why a Connected Content request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// The request may not be made (a host that is not allowed, an unknown credential).
    #[error("{0}")]
    Refused(String),
    /// No usable answer: a network error, a timeout, a 5xx after its retries.
    #[error("{0}")]
    Failed(String),
}

/// How Connected Content reaches the network (and its cache); eddy's is `crate::http`.
pub trait Fetch: Sync {
    /// Makes the request (with the retries it asks for).
    fn fetch(&self, request: &Request) -> Result<Response, FetchError>;
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
            crate::parse::parse(text).map_err(|e| format!("in connected_content: {}", e.message))
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

/// Runs a Connected Content call: renders its parts, fetches, and saves or prints the answer.
pub fn connected_content(
    ctx: &mut Context<'_>,
    call: &ConnectedContent,
    out: &mut String,
) -> Result<(), Stop> {
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
    let answer = match ctx.fetch {
        Some(fetch) => fetch.fetch(&request),
        None => Err(FetchError::Refused(
            "connected content is not available here".into(),
        )),
    };
    let response = match answer {
        Ok(response) => response,
        // A host eddy refuses is an unavailable URL to the message (empty, or an abort with
        // `:retry`, as Braze treats one), and the operator is told why.
        Err(FetchError::Refused(reason)) => {
            let reason = format!("connected_content: {reason}");
            ctx.warnings.push(reason.clone());
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

/// The variables a Braze template sees for a user, from the user's `/users/export/ids` object:
/// the standard tags (`first_name`, `email_address`, `user_id`…) and `custom_attribute`.
pub fn user_variables(user: &serde_json::Value) -> Object {
    let mut vars = Object::default();
    let field = |name: &str| user.get(name).map(Value::from_json).unwrap_or_default();
    let standard = [
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("email_address", "email"),
        ("phone_number", "phone"),
        ("user_id", "external_id"),
        ("braze_id", "braze_id"),
        ("city", "home_city"),
        ("country", "country"),
        ("date_of_birth", "dob"),
        ("gender", "gender"),
        ("language", "language"),
        ("time_zone", "time_zone"),
        ("random_bucket_number", "random_bucket"),
        ("email_subscribe", "email_subscribe"),
        ("push_subscribe", "push_subscribe"),
    ];
    for (tag, export) in standard {
        vars.insert(tag.to_string(), field(export));
    }
    let custom = match user.get("custom_attributes") {
        Some(serde_json::Value::Object(o)) => {
            Value::from_json(&serde_json::Value::Object(o.clone()))
        }
        _ => Value::object(Object::default()),
    };
    vars.insert("custom_attribute".into(), custom);
    // eddy keeps a profile's device ids only: the most recent one is `${id}`.
    if let Some(serde_json::Value::Array(devices)) = user.get("devices")
        && let Some(last) = devices.last()
    {
        let mut device = Object::default();
        if let Some(id) = last.get("device_id") {
            device.insert("id".into(), Value::from_json(id));
        }
        vars.insert("most_recently_used_device".into(), Value::object(device));
    }
    // Braze gives every user a fixed bucket in 0..=9999; eddy derives it from the braze id.
    if matches!(vars.get("random_bucket_number"), None | Some(Value::Nil))
        && let Some(braze_id) = user.get("braze_id").and_then(|v| v.as_str())
    {
        let digest = sha2::Sha256::digest(braze_id.as_bytes());
        let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        vars.insert(
            "random_bucket_number".into(),
            Value::Int((n % 10_000) as i64),
        );
    }
    if let Some(serde_json::Value::Array(groups)) = user.get("subscription_groups") {
        let mut states = Object::default();
        for g in groups {
            if let (Some(id), Some(state)) = (
                g.get("id").and_then(|v| v.as_str()),
                g.get("status").and_then(|v| v.as_str()),
            ) {
                states.insert(id.to_string(), Value::str(state.to_ascii_lowercase()));
            }
        }
        vars.insert("subscribed_state".into(), Value::object(states));
    }
    vars
}
