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
    workspace: OnceLock<u32>,
    body: OnceLock<axum::body::Bytes>,
}

impl RequestLog {
    /// The name of the REST API key that authenticated the request.
    pub fn set_key(&self, name: &str) {
        let _ = self.key.set(name.to_string());
    }

    /// The workspace the request's key belongs to, and the body it sent: what the API log
    /// keeps (set by the extractors that authenticate REST and partner keys).
    pub fn set_workspace(&self, ws: u32, body: &axum::body::Bytes) {
        let _ = self.workspace.set(ws);
        let _ = self.body.set(body.clone());
    }

    /// The workspace of the request's key, once authenticated.
    pub fn workspace(&self) -> Option<u32> {
        self.workspace.get().copied()
    }

    /// The request body, once an extractor read it.
    pub fn body(&self) -> Option<&axum::body::Bytes> {
        self.body.get()
    }

    /// The key's name, once authenticated.
    pub fn key(&self) -> Option<&str> {
        self.key.get().map(String::as_str)
    }

    /// Objects counted so far.
    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
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
