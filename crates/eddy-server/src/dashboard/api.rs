//! The dashboard's only way to read and change data: a call of the admin API in process.
//!
//! A page builds the request `curl` would send to `/eddy/v1/…`, marks it [`SignedIn`] (an
//! extension, which no client can set) instead of the admin token, and runs it through the API
//! router. So every check, error text and store operation is the admin API's own.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use super::{Dash, SignedIn};

/// An answer of the admin API.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body (`null` when it had none).
    pub body: Value,
}

impl Reply {
    /// True for a 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The error text of a refusal (`message`, else `error`, else the status).
    pub fn message(&self) -> String {
        for field in ["message", "error"] {
            if let Some(text) = self.body.get(field).and_then(Value::as_str) {
                return text.to_string();
            }
        }
        self.status.to_string()
    }

    /// A field of the body.
    pub fn get(&self, field: &str) -> &Value {
        self.body.get(field).unwrap_or(&Value::Null)
    }

    /// A field of the body that holds a list (empty otherwise).
    pub fn list(&self, field: &str) -> &[Value] {
        self.get(field).as_array().map_or(&[], Vec::as_slice)
    }
}

/// Largest answer the dashboard reads (exports and lists are paginated well below it).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

impl Dash {
    /// Calls the admin API: `path` is under `/eddy/v1`, already percent-encoded.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let uri = format!("/eddy/v1{path}");
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body));
        let mut request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(error = %e, uri, "dashboard: cannot build an admin request");
                return failure();
            }
        };
        request.extensions_mut().insert(SignedIn);
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let status = response.status();
        let bytes = match axum::body::to_bytes(response.into_body(), MAX_ANSWER).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, uri, "dashboard: cannot read an admin answer");
                return failure();
            }
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply { status, body }
    }

    /// `GET` of the admin API.
    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }
}

fn failure() -> Reply {
    Reply {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: serde_json::json!({"message": "internal error; see the log"}),
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoding_round_trips_through_the_query_parser() {
        for text in ["plain", "a b&c=d/é", "label:name", "%41+"] {
            let query = format!("q={}", super::encode(text));
            assert_eq!(
                crate::http::query_param(Some(&query), "q").as_deref(),
                Some(text)
            );
        }
    }
}
