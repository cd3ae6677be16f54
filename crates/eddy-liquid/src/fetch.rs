//! How a render reaches the network: the host gives a render a [`Fetch`], and tags that call out
//! (Braze's `connected_content`) make their [`Request`]s through it. eddy's is [`crate::http`].

use crate::value::Value;

/// An HTTP method Connected Content may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (the default).
    Get,
    /// POST.
    Post,
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

/// How Connected Content reaches the network (and its cache), and `catalog_items` the
/// workspace's catalogs; eddy's is `crate::http`.
pub trait Fetch: Sync {
    /// Makes the request (with the retries it asks for).
    fn fetch(&self, request: &Request) -> Result<Response, FetchError>;

    /// The items of a catalog with these ids (see [`Catalogs::items`]); a host that keeps no
    /// catalogs refuses.
    fn catalog_items(
        &self,
        _catalog: &str,
        _ids: &[String],
    ) -> Result<Vec<serde_json::Value>, FetchError> {
        Err(FetchError::Refused(
            "catalogs are not available here".into(),
        ))
    }
}

/// A workspace's catalogs, as `{% catalog_items %}` reads them.
pub trait Catalogs: Sync {
    /// The items of `catalog` with these ids, in the order asked, leaving out ids it does not
    /// hold (an unknown catalog holds none); the error is a failure to read them.
    fn items(&self, catalog: &str, ids: &[String]) -> Result<Vec<serde_json::Value>, String>;
}
