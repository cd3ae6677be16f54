//! What every surface shares between the socket and a handler: the accept loop
//! ([`connections`]), extractors ([`extract`]), rate limits ([`ratelimit`]), wrong admin tokens
//! throttled ([`throttle`]), the request log line and the dashboard's API log ([`request_log`],
//! [`api_log`]), `/metrics` ([`metrics`]); and, in this file, the mapping of every domain error to
//! its HTTP answer (store, Currents, API errors), JSON bodies, key and admin authentication.

pub mod api_log;
pub mod connections;
pub mod extract;
pub mod metrics;
pub mod ratelimit;
pub mod request_log;
pub mod throttle;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_model::ApiError;
use eddy_store::{ApiKey, StoreError, Workspace, ids};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;

/// An [`ApiError`] as an HTTP response.
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        HttpError(store_error(e))
    }
}

/// Maps a store failure to the API error a client sees.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Closed => ApiError::Unavailable,
        StoreError::Conflict(what) => ApiError::Conflict(what),
        StoreError::NotFound(what) => ApiError::ResourceNotFound(what),
        // A commit the disk refused (full, failing): nothing was applied, and the writer
        // recovers by itself once the cause is gone; /ready says so meanwhile.
        StoreError::Backend(reason) => {
            tracing::error!(error = %reason, "storage failure");
            ApiError::StorageUnavailable
        }
        other => {
            tracing::error!(error = %other, "store failure");
            ApiError::Internal
        }
    }
}

impl From<eddy_currents::CurrentsError> for HttpError {
    fn from(e: eddy_currents::CurrentsError) -> Self {
        use eddy_currents::CurrentsError;
        HttpError(match e {
            CurrentsError::Invalid(m) => ApiError::BadRequest(m),
            CurrentsError::Exists(name) => ApiError::Conflict(format!("connector '{name}'")),
            CurrentsError::NotFound(name) => {
                ApiError::ResourceNotFound(format!("connector '{name}'"))
            }
            CurrentsError::Unavailable(m) => {
                tracing::warn!(error = %m, "currents connector unavailable");
                ApiError::Unavailable
            }
            CurrentsError::Upstream(m) => ApiError::Upstream(m),
            // Both are a 503 whose text says where or when to ask again.
            e @ (CurrentsError::NotLeader(_) | CurrentsError::Starting(_)) => {
                ApiError::NotLeader(e.to_string())
            }
            CurrentsError::Store(e) => store_error(e),
        })
    }
}

/// A 400 with Braze's body: `{"message": text}`.
pub fn bad(text: impl Into<String>) -> HttpError {
    HttpError(ApiError::BadRequest(text.into()))
}

impl From<eddy_messaging::MessagingError> for HttpError {
    fn from(e: eddy_messaging::MessagingError) -> Self {
        use eddy_messaging::MessagingError;
        HttpError(match e {
            MessagingError::Invalid(m) => ApiError::BadRequest(m),
            MessagingError::NotFound(m) => ApiError::ResourceNotFound(m),
            MessagingError::Internal(m) => {
                tracing::error!(error = %m, "messaging failure");
                ApiError::Internal
            }
            MessagingError::Store(e) => store_error(e),
        })
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self.0.body())
    }
}

/// A JSON response with a status.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Turns the raw body into bytes, answering 413 for bodies over the limit.
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    match body {
        Ok(bytes) => Ok(bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge)
        }
        Err(rejection) => Err(ApiError::BadJson(rejection.body_text())),
    }
}

/// Parses a JSON body into `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadJson("empty body".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadJson(e.to_string()))
}

/// The REST API key of a request: `Authorization: Bearer KEY`, else the legacy `api_key`
/// query parameter or body field Braze still accepts.
pub fn presented_key(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let token = bearer_token(value)?;
        // Braze: the key must not be quoted.
        if token.is_empty() || token.starts_with('"') || token.starts_with('\'') {
            return None;
        }
        return Some(token.to_string());
    }
    if let Some(key) = query_param(query, "api_key") {
        return Some(key);
    }
    #[derive(serde::Deserialize)]
    struct Legacy {
        api_key: Option<String>,
    }
    serde_json::from_slice::<Legacy>(body)
        .ok()
        .and_then(|l| l.api_key)
}

/// The token of `Authorization: Bearer TOKEN`; the scheme is case-insensitive (RFC 9110 §11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim())
}

/// One query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return Some(percent_decode(v));
        }
    }
    None
}

/// Every value of a query parameter, also under its `name[]` spelling (Braze's array form).
pub fn query_params(query: Option<&str>, name: &str) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    let bracketed = format!("{name}[]");
    let bracketed_encoded = format!("{name}%5B%5D");
    let mut out = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name || k == bracketed || k.eq_ignore_ascii_case(&bracketed_encoded) {
            out.push(percent_decode(v));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Authenticates a REST API key and checks one permission.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    permission: &'static str,
) -> Result<(ApiKey, Workspace), ApiError> {
    let Some(secret) = presented_key(headers, query, body) else {
        return Err(ApiError::InvalidApiKey);
    };
    let hash = ids::sha256_hex(&secret);
    let key = state
        .store
        .api_key(&hash)
        .map_err(store_error)?
        .ok_or(ApiError::InvalidApiKey)?;
    if !key.allows(permission) {
        return Err(ApiError::AccessDenied(permission));
    }
    note_use(state, &key, hash);
    let workspace = state
        .store
        .workspace_by_id(key.workspace)
        .map_err(store_error)?
        .ok_or(ApiError::InvalidApiKey)?;
    Ok((key, workspace))
}

/// Records a key's last use, at most once a minute per key, off the request's path.
fn note_use(state: &AppState, key: &ApiKey, hash: String) {
    let now = eddy_model::time::now_ms();
    if key.last_used_at.is_some_and(|at| now - at < 60_000) {
        return;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.touch_api_key(hash, now).await {
            tracing::warn!(error = %e, "could not record an API key's last use");
        }
    });
}

/// Checks the admin token; wrong ones count against the client's address, which is refused
/// for a while once it has too many.
pub fn authorize_admin(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<std::net::IpAddr>,
) -> Result<(), ApiError> {
    if let Err(wait) = state.auth_throttle.check(client) {
        return Err(ApiError::TooManyAuthFailures(wait));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    // Compare hashes so the comparison time does not depend on the secret's prefix.
    match presented {
        Some(token) if ids::sha256_hex(token) == state.admin_token_hash => Ok(()),
        _ => {
            state.auth_throttle.failed(client);
            Err(ApiError::InvalidAdminToken)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value}");
        }
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
