//! The API log: the last requests of each workspace with their bodies and answers, for the
//! dashboard. A bounded ring per workspace in memory; the edge appends after the answer is
//! made, so a request pays one lock and a few reference-counted copies.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use serde_json::Value;

/// One logged request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Increasing across the process; the dashboard links entries by it.
    pub id: u64,
    /// When the answer was sent, UTC ms.
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Path, with the query's secrets redacted.
    pub path: String,
    /// The key's name (a REST key, or `partner NAME`).
    pub key: String,
    /// Status answered.
    pub status: u16,
    /// Time to answer, microseconds.
    pub micros: u64,
    /// Objects the request carried (attributes, events, purchases, ids).
    pub objects: u64,
    /// The body sent, at most the configured bytes.
    pub request: Bytes,
    /// True when `request` is only the body's beginning.
    pub request_truncated: bool,
    /// The answer's body when it was small enough to keep.
    pub response: Option<Bytes>,
    /// The answer refused some of the objects (Braze's `errors` with `input_array`).
    pub refused: bool,
}

/// Which entries to list.
#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    /// Path contains this.
    pub endpoint: Option<String>,
    /// `2xx`, `4xx`, `5xx`, `errors` (4xx, 5xx, and answers that refused objects), or an
    /// exact status.
    pub status: Option<String>,
    /// The request's body contains this identifier.
    pub identifier: Option<String>,
}

impl LogFilter {
    fn keeps(&self, entry: &Entry) -> bool {
        if let Some(endpoint) = &self.endpoint
            && !entry.path.contains(endpoint.as_str())
        {
            return false;
        }
        if let Some(status) = &self.status {
            let class = entry.status / 100;
            let matches = match status.as_str() {
                "2xx" => class == 2,
                "4xx" => class == 4,
                "5xx" => class == 5,
                "errors" => class >= 4 || entry.refused,
                exact => exact.parse::<u16>().is_ok_and(|s| s == entry.status),
            };
            if !matches {
                return false;
            }
        }
        if let Some(identifier) = &self.identifier
            && !contains(&entry.request, identifier.as_bytes())
        {
            return false;
        }
        true
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The rings of every workspace.
#[derive(Debug)]
pub struct ApiLog {
    capacity: usize,
    body_bytes: usize,
    next_id: AtomicU64,
    rings: Mutex<HashMap<u32, VecDeque<Arc<Entry>>>>,
}

impl ApiLog {
    /// A log keeping `capacity` requests per workspace and `body_bytes` of each body; a
    /// capacity of 0 turns it off.
    pub fn new(capacity: usize, body_bytes: usize) -> ApiLog {
        ApiLog {
            capacity,
            body_bytes,
            next_id: AtomicU64::new(1),
            rings: Mutex::new(HashMap::new()),
        }
    }

    /// Whether requests are kept at all.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The largest answer body kept.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// Keeps a request, forgetting the workspace's oldest past the capacity.
    pub fn push(&self, ws: u32, mut entry: Entry) {
        if !self.enabled() {
            return;
        }
        if entry.request.len() > self.body_bytes {
            // A copy, so that the ring does not hold the whole body alive.
            entry.request = Bytes::copy_from_slice(&entry.request[..self.body_bytes]);
            entry.request_truncated = true;
        }
        entry.refused = entry
            .response
            .as_ref()
            .is_some_and(|answer| contains(answer, b"\"input_array\""));
        entry.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut rings = match self.rings.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let ring = rings.entry(ws).or_default();
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(Arc::new(entry));
    }

    /// The workspace's entries the filter keeps, newest first, at most `limit`, older than
    /// entry `before` when given.
    pub fn list(
        &self,
        ws: u32,
        filter: &LogFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Vec<Arc<Entry>> {
        let rings = match self.rings.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(ring) = rings.get(&ws) else {
            return Vec::new();
        };
        ring.iter()
            .rev()
            .filter(|e| before.is_none_or(|b| e.id < b))
            .filter(|e| filter.keeps(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// One entry of a workspace.
    pub fn get(&self, ws: u32, id: u64) -> Option<Arc<Entry>> {
        let rings = match self.rings.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        rings.get(&ws)?.iter().find(|e| e.id == id).cloned()
    }

    /// Forgets a workspace's entries (it was deleted).
    pub fn forget(&self, ws: u32) {
        let mut rings = match self.rings.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        rings.remove(&ws);
    }
}

/// Field names whose values never show: keys, secrets, passwords, tokens.
pub const SECRET_FIELDS: [&str; 9] = [
    "api_key",
    "partner_api_key",
    "client_secret",
    "secret",
    "secret_access_key",
    "password",
    "token",
    "authorization",
    "account_key",
];

/// A JSON value with every secret field's value replaced by `[REDACTED]`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map.iter_mut() {
                if SECRET_FIELDS.contains(&name.to_ascii_lowercase().as_str()) {
                    *inner = Value::String("[REDACTED]".into());
                } else {
                    redact(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A query string with the value of `api_key` (Braze's legacy key parameter) redacted.
pub fn redact_query(path: &str, query: Option<&str>) -> String {
    let Some(query) = query else {
        return path.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_FIELDS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=[REDACTED]")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

/// The refused objects of an answer, as `(input_array, index, error text)`: Braze's
/// `/users/track` reports each by the array it came from and its place there.
pub fn refused_objects(answer: &Value) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    let Some(errors) = answer.get("errors").and_then(Value::as_array) else {
        return out;
    };
    for error in errors {
        let (Some(array), Some(index)) = (
            error.get("input_array").and_then(Value::as_str),
            error.get("index").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let text = error
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        out.push((array.to_string(), index as usize, text.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(path: &str, status: u16, body: &str) -> Entry {
        Entry {
            id: 0,
            at_ms: 0,
            method: "POST".into(),
            path: path.into(),
            key: "k".into(),
            status,
            micros: 1,
            objects: 1,
            request: Bytes::copy_from_slice(body.as_bytes()),
            request_truncated: false,
            response: None,
            refused: false,
        }
    }

    #[test]
    fn a_ring_keeps_the_newest_and_filters() {
        let log = ApiLog::new(3, 8);
        for i in 0..5 {
            log.push(
                1,
                entry("/users/track", 200 + i, "{\"external_id\":\"u1\"}"),
            );
        }
        log.push(2, entry("/users/delete", 400, "{}"));
        let all = log.list(1, &LogFilter::default(), None, 10);
        assert_eq!(
            all.iter().map(|e| e.status).collect::<Vec<_>>(),
            [204, 203, 202]
        );
        assert!(all[0].request_truncated);
        assert_eq!(all[0].request.len(), 8);
        let errors = LogFilter {
            status: Some("errors".into()),
            ..LogFilter::default()
        };
        assert!(log.list(1, &errors, None, 10).is_empty());
        assert_eq!(log.list(2, &errors, None, 10).len(), 1);
        let older = log.list(1, &LogFilter::default(), Some(all[0].id), 10);
        assert_eq!(older.len(), 2);
        let by_id = LogFilter {
            identifier: Some("{\"ex".into()),
            ..LogFilter::default()
        };
        assert_eq!(log.list(1, &by_id, None, 10).len(), 3);
        assert!(
            ApiLog::new(0, 8)
                .list(1, &LogFilter::default(), None, 1)
                .is_empty()
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let mut body = json!({"api_key": "k", "attributes": [{"external_id": "u", "Password": "p"}],
                              "client_secret": "s", "partner_api_key": "x"});
        redact(&mut body);
        assert_eq!(
            body,
            json!({"api_key": "[REDACTED]", "attributes": [{"external_id": "u", "Password": "[REDACTED]"}],
                   "client_secret": "[REDACTED]", "partner_api_key": "[REDACTED]"})
        );
        assert_eq!(
            redact_query("/segments/list", Some("page=1&api_key=abc")),
            "/segments/list?page=1&api_key=[REDACTED]"
        );
    }

    #[test]
    fn refused_objects_are_read_from_the_answer() {
        let answer = json!({"message": "success", "errors": [
            {"type": "'external_id' or 'braze_id' or 'user_alias' is required", "input_array": "attributes", "index": 1}]});
        assert_eq!(
            refused_objects(&answer),
            [(
                "attributes".to_string(),
                1,
                "'external_id' or 'braze_id' or 'user_alias' is required".to_string()
            )]
        );
    }
}
