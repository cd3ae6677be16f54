//! The per-request log line: method, path, status, duration, and what only the handler knows
//! (the API key's name, how many objects it processed), filled in as the request goes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a request did beyond its status; the edge puts one in every request's extensions.
#[derive(Debug, Default)]
pub struct RequestLog {
    key: OnceLock<String>,
    objects: AtomicU64,
}

impl RequestLog {
    /// The name of the REST API key that authenticated the request.
    pub fn set_key(&self, name: &str) {
        let _ = self.key.set(name.to_string());
    }

    /// Objects (attributes, events, purchases, ids) the request carried.
    pub fn add_objects(&self, n: u64) {
        self.objects.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes the line (target `eddy::request`, so `RUST_LOG=eddy::request=off` silences it).
    pub fn emit(&self, method: &axum::http::Method, path: &str, status: u16, took: Duration) {
        tracing::info!(
            target: "eddy::request",
            %method,
            path,
            status,
            duration_ms = took.as_secs_f64() * 1000.0,
            key = self.key.get().map(String::as_str).unwrap_or("-"),
            objects = self.objects.load(Ordering::Relaxed),
            "request"
        );
    }
}
