//! The one table of API errors: each maps to its HTTP status and its JSON body.
//!
//! Texts follow Braze where Braze defines one (<https://www.braze.com/docs/api/errors/> and each
//! endpoint's page under <https://www.braze.com/docs/api/endpoints/>).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One entry of the `errors` array of `/users/track` (non-fatal, per object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectError {
    /// The error text, for example `'quantity' is not valid`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `attributes`, `events` or `purchases`.
    pub input_array: String,
    /// Zero-based position of the object in its array.
    pub index: usize,
}

/// An error answered by the HTTP API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Missing, unknown or revoked REST API key.
    #[error("Invalid API Key")]
    InvalidApiKey,
    /// The key exists but lacks the endpoint's permission.
    #[error("The REST API key you are using does not have sufficient permissions for {0}")]
    AccessDenied(&'static str),
    /// Missing or wrong admin token.
    #[error("invalid admin token")]
    InvalidAdminToken,
    /// A 401 with its own text (partner keys and client secrets).
    #[error("{0}")]
    Unauthorized(String),
    /// No such route.
    #[error("Invalid URL")]
    NotFound,
    /// A documented Braze endpoint eddy does not implement (`METHOD /path`).
    #[error("eddy does not implement {0}")]
    NotImplemented(String),
    /// A route that exists, called with another method (`METHOD /path`).
    #[error("{0} is not allowed; see the Allow header")]
    MethodNotAllowed(String),
    /// Over the per-key, per-endpoint limit.
    #[error("API rate limit exceeded")]
    RateLimited,
    /// Too many wrong admin tokens from one address: refused for the seconds given.
    #[error("too many wrong admin tokens from this address; try again in {0} s")]
    TooManyAuthFailures(u64),
    /// Body larger than the configured limit (after decompression).
    #[error("Request Entity Too Large")]
    PayloadTooLarge,
    /// The body is not the JSON the endpoint expects.
    #[error("Invalid JSON in request body: {0}")]
    BadJson(String),
    /// More than 75 objects in one of the `/users/track` arrays.
    #[error("Max Input Length Exceeded")]
    MaxInputLength,
    /// More than 50 identifiers on identify, alias, delete, merge or export.
    #[error("The max number of external_ids and aliases per request was exceeded")]
    TooManyIds,
    /// `/users/track` with no valid object; carries the per-object errors.
    #[error("Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.")]
    NoValidTrackData(Vec<ObjectError>),
    /// Any other 400 with its own text.
    #[error("{0}")]
    BadRequest(String),
    /// A named admin resource does not exist.
    #[error("{0} not found")]
    ResourceNotFound(String),
    /// A named admin resource already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The server is shutting down or its writer stopped.
    #[error("service unavailable")]
    Unavailable,
    /// Work only the cluster's leader node does (a connector's flush, replay or test events),
    /// asked of another node: a 503 that says so; the request may go to any node again.
    #[error("{0}")]
    NotLeader(String),
    /// A destination eddy writes to (S3, Amplitude, …) failed; eddy keeps retrying.
    #[error("{0}")]
    Upstream(String),
    /// The store could not commit (a full or failing disk); nothing was applied, retry later.
    #[error("storage unavailable: the write was not applied; retry later")]
    StorageUnavailable,
    /// A storage or internal failure; the request was not applied.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The HTTP status code of this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidApiKey | ApiError::InvalidAdminToken | ApiError::Unauthorized(_) => {
                401
            }
            ApiError::AccessDenied(_) => 403,
            ApiError::NotFound | ApiError::ResourceNotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::NotImplemented(_) => 501,
            ApiError::PayloadTooLarge => 413,
            ApiError::RateLimited | ApiError::TooManyAuthFailures(_) => 429,
            ApiError::BadJson(_)
            | ApiError::MaxInputLength
            | ApiError::TooManyIds
            | ApiError::NoValidTrackData(_)
            | ApiError::BadRequest(_) => 400,
            ApiError::Unavailable | ApiError::StorageUnavailable | ApiError::NotLeader(_) => 503,
            ApiError::Internal => 500,
            ApiError::Upstream(_) => 502,
        }
    }

    /// The JSON body: `{"message": …}`, plus `errors` where Braze sends them.
    pub fn body(&self) -> Value {
        match self {
            ApiError::NoValidTrackData(errors) => {
                json!({"message": self.to_string(), "errors": errors})
            }
            _ => json!({"message": self.to_string()}),
        }
    }
}
