//! A small S3-compatible server, in process, for the Currents and export tests.

/// A small in-process S3-compatible server for tests: path-style PUT, GET and DELETE of objects,
/// keys kept exactly as sent (`+` included). It ignores signatures and refuses overwrites.
pub struct TestS3 {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    objects: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TestS3 {
    /// Starts the server on a free loopback port.
    pub async fn start() -> TestS3 {
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        type Objects =
            std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>;
        type Failing = std::sync::Arc<std::sync::atomic::AtomicBool>;
        let objects: Objects = Default::default();
        let failing: Failing = Default::default();
        async fn put(
            State((objects, failing)): State<(Objects, Failing)>,
            Path((bucket, key)): Path<(String, String)>,
            body: axum::body::Bytes,
        ) -> Response {
            if failing.load(std::sync::atomic::Ordering::SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let etag = format!("\"{:x}\"", body.len());
            let mut objects = objects.lock().unwrap();
            // eddy never overwrites an object: refusing makes any attempt fail its test.
            if objects.contains_key(&format!("{bucket}/{key}")) {
                return (StatusCode::CONFLICT, "object exists").into_response();
            }
            objects.insert(format!("{bucket}/{key}"), body.to_vec());
            (StatusCode::OK, [("ETag", etag)]).into_response()
        }
        async fn get(
            State((objects, _)): State<(Objects, Failing)>,
            Path((bucket, key)): Path<(String, String)>,
        ) -> Response {
            match objects.lock().unwrap().get(&format!("{bucket}/{key}")) {
                Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        async fn delete(
            State((objects, _)): State<(Objects, Failing)>,
            Path((bucket, key)): Path<(String, String)>,
        ) -> Response {
            objects.lock().unwrap().remove(&format!("{bucket}/{key}"));
            StatusCode::NO_CONTENT.into_response()
        }
        let app = axum::Router::new()
            .route(
                "/{bucket}/{*key}",
                axum::routing::put(put).get(get).delete(delete),
            )
            // A Currents file of 15,000 events is larger than axum's default body limit.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state((objects.clone(), failing.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind s3");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestS3 {
            endpoint,
            objects,
            failing,
        }
    }

    /// Makes every PUT answer 503 (an outage) or work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every object key (`bucket/key`).
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// One object's bytes.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.lock().unwrap().get(key).cloned()
    }
}
