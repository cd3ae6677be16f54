//! Real receivers for messages: an HTTP webhook receiver that records or counts what it gets
//! (with scripted failures), and a real SMTP server (`aiosmtpd`, run from Python).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (lowercase names).
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: String,
}

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Received>>,
    /// Path → (answers left, status) to give before answering 200.
    failures: Mutex<HashMap<String, (u32, u16)>>,
    count: AtomicU64,
}

/// An HTTP server answering 200 to everything (unless scripted otherwise), keeping every
/// request.
#[derive(Clone)]
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    inner.count.fetch_add(1, Ordering::Relaxed);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    inner.requests.lock().unwrap().push(Received {
        method: method.to_string(),
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut failures = inner.failures.lock().unwrap();
    let key = uri.path().to_string();
    if let Some((left, status)) = failures.get_mut(&key)
        && *left > 0
    {
        *left -= 1;
        return StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    StatusCode::OK
}

impl WebhookReceiver {
    /// Starts a receiver that keeps every request.
    pub async fn start() -> WebhookReceiver {
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, inner }
    }

    /// A URL on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers `status` to the next `times` requests for `path`.
    pub fn fail(&self, path: &str, times: u32, status: u16) {
        self.inner
            .failures
            .lock()
            .unwrap()
            .insert(path.to_string(), (times, status));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

/// One message the SMTP server accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Delivered {
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The message as received.
    pub data: String,
}

impl Delivered {
    /// The text of one part of the message (`text/html`, `text/plain`), base64 decoded.
    pub fn part(&self, content_type: &str) -> String {
        use base64::Engine as _;
        let start = self
            .data
            .find(&format!("Content-Type: {content_type}"))
            .expect("part");
        let rest = &self.data[start..];
        let body_start = rest
            .find("\r\n\r\n")
            .or_else(|| rest.find("\n\n"))
            .expect("body")
            + 2;
        let body: String = rest[body_start..]
            .lines()
            .take_while(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .concat();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .expect("base64");
        String::from_utf8(bytes).expect("utf-8")
    }
}

/// `aiosmtpd` on a free port; recipients starting with `bounce` get 550, `soft` get 451.
pub struct SmtpServer {
    /// Its port.
    pub port: u16,
    child: std::process::Child,
    delivered: Arc<Mutex<Vec<Delivered>>>,
}

impl SmtpServer {
    /// Starts the server with `EDDY_TEST_SMTP_PYTHON` (a Python with `aiosmtpd`), or `python3`;
    /// `None` when that Python lacks aiosmtpd, unless `EDDY_TEST_SMTP_PYTHON` is set (then it
    /// panics: CI must run these tests).
    pub fn start() -> Option<SmtpServer> {
        use std::io::BufRead;
        let required = std::env::var("EDDY_TEST_SMTP_PYTHON").ok();
        let python = required.clone().unwrap_or_else(|| "python3".into());
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr").port()
        };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp_sink.py");
        let mut command = std::process::Command::new(&python);
        command.arg(script).arg("--port").arg(port.to_string());
        let spawned = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if required.is_none() => {
                eprintln!("skipping: cannot run {python}: {e}");
                return None;
            }
            Err(e) => panic!("cannot run {python}: {e}"),
        };
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let ready = matches!(lines.next(), Some(Ok(line)) if line == "ready");
        if !ready {
            let _ = child.kill();
            if required.is_none() {
                eprintln!(
                    "skipping: {python} has no aiosmtpd (set EDDY_TEST_SMTP_PYTHON to require it)"
                );
                return None;
            }
            panic!("{python} could not start aiosmtpd");
        }
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = delivered.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(message) = serde_json::from_str::<Delivered>(&line) {
                    sink.lock().unwrap().push(message);
                }
            }
        });
        std::thread::spawn(move || for _ in lines {});
        Some(SmtpServer {
            port,
            child,
            delivered,
        })
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Messages accepted so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.delivered.lock().unwrap().clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
