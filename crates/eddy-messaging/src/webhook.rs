//! One webhook request and how its answer is classified: 2xx sent; 429, 5xx and network errors
//! worth another attempt; any other status a terminal failure.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A rendered webhook request, in the client's own types: what could not be sent is found
/// while rendering (and aborts that recipient), not at each attempt.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: hyper::Method,
    /// URL, as rendered.
    pub url: String,
    /// The URL parsed (and checked) once.
    pub parsed: reqwest::Url,
    /// The same URL as the client takes it, built once for every attempt.
    pub uri: hyper::Uri,
    /// Headers (never `Host`: the host is the URL's).
    pub headers: hyper::HeaderMap,
    /// Body; attempts share it.
    pub body: Option<Bytes>,
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The status, when the receiver answered.
    pub status: Option<u16>,
    /// The start of the answer's body, or the network error.
    pub detail: String,
    /// How long the attempt took.
    pub duration: Duration,
    /// The destination was refused (a private address the workspace does not allow): no
    /// attempt can succeed.
    pub refused: bool,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Sent,
    /// Try again later.
    Retry,
    /// Give up.
    Fail,
}

impl Attempt {
    /// Sent, retry or fail, by Braze's rules for webhooks.
    pub fn verdict(&self) -> Verdict {
        if self.refused {
            return Verdict::Fail;
        }
        match self.status {
            Some(s) if (200..300).contains(&s) => Verdict::Sent,
            Some(429) | None => Verdict::Retry,
            Some(s) if s >= 500 => Verdict::Retry,
            Some(_) => Verdict::Fail,
        }
    }
}

/// The most of an answer's body kept in events.
const MAX_DETAIL: usize = 1024;

/// The client webhooks are sent with: hyper's pooled HTTP/1 client over the policy's
/// connector. A general client's layers (following redirects, retrying, turning each request's
/// URI back into a URL) cost a broadcast more CPU than the request itself and serve nothing
/// here: webhooks never follow redirects and retry by Braze's rules, above this.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<eddy_net::Connector, Full<Bytes>>,
}

impl Client {
    /// A client keeping at most `idle_per_host` idle connections to each host.
    pub fn new(connector: eddy_net::Connector, idle_per_host: usize) -> Client {
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(idle_per_host)
            .build(connector);
        Client { inner }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends one request, giving it `timeout` to be answered and its answer read.
pub async fn send(client: &Client, request: &Request, timeout: Duration) -> Attempt {
    let started = Instant::now();
    let answer = tokio::time::timeout(timeout, exchange(client, request)).await;
    let duration = started.elapsed();
    match answer {
        Ok(Ok((status, detail))) => Attempt {
            status: Some(status),
            detail,
            duration,
            refused: false,
        },
        Ok(Err(e)) => Attempt {
            status: None,
            detail: error_text(e.as_ref()),
            duration,
            refused: is_refusal(e.as_ref()),
        },
        Err(_) => Attempt {
            status: None,
            detail: format!("no answer within {} ms", timeout.as_millis()),
            duration,
            refused: false,
        },
    }
}

/// The request and the start of its answer.
async fn exchange(client: &Client, request: &Request) -> Result<(u16, String), BoxError> {
    let mut outgoing = hyper::Request::new(Full::new(request.body.clone().unwrap_or_default()));
    *outgoing.method_mut() = request.method.clone();
    *outgoing.uri_mut() = request.uri.clone();
    *outgoing.headers_mut() = request.headers.clone();
    let response = client.inner.request(outgoing).await?;
    let status = response.status().as_u16();
    // Only the start of the answer is kept, so only that much is read: a receiver that
    // answers without end costs no memory.
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < MAX_DETAIL {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let mut detail = String::from_utf8_lossy(&bytes).into_owned();
    truncate(&mut detail, MAX_DETAIL);
    Ok((status, detail))
}

/// Whether the client's resolver refused every address of the host.
fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(inner) = source {
        if inner.is::<eddy_net::Refused>() {
            return true;
        }
        source = inner.source();
    }
    false
}

/// The error and each of its causes, as one line.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Cuts text to at most `max` bytes at a character boundary.
pub fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: Option<u16>) -> Attempt {
        Attempt {
            status,
            detail: String::new(),
            duration: Duration::ZERO,
            refused: false,
        }
    }

    #[test]
    fn verdicts_follow_brazes_retry_rules() {
        assert_eq!(attempt(Some(204)).verdict(), Verdict::Sent);
        assert_eq!(attempt(Some(429)).verdict(), Verdict::Retry);
        assert_eq!(attempt(Some(503)).verdict(), Verdict::Retry);
        assert_eq!(attempt(None).verdict(), Verdict::Retry);
        assert_eq!(attempt(Some(404)).verdict(), Verdict::Fail);
        assert_eq!(attempt(Some(301)).verdict(), Verdict::Fail);
    }

    fn get(url: &str) -> Request {
        let parsed = reqwest::Url::parse(url).unwrap();
        Request {
            method: hyper::Method::GET,
            url: url.to_string(),
            uri: hyper::Uri::try_from(parsed.as_str()).unwrap(),
            parsed,
            headers: hyper::HeaderMap::new(),
            body: None,
        }
    }

    #[tokio::test]
    async fn https_urls_are_spoken_in_tls_and_http_urls_in_plain_text() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = Client::new(eddy_net::connector(eddy_net::Policy::Operator).unwrap(), 4);
        // A TLS connection opens with a handshake record (0x16); plain HTTP with the method.
        for (scheme, first_byte) in [("https", 0x16), ("http", b'G')] {
            let request = get(&format!("{scheme}://localhost:{port}/hook"));
            let client = client.clone();
            let sending =
                tokio::spawn(async move { send(&client, &request, Duration::from_secs(5)).await });
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut socket, &mut byte)
                .await
                .unwrap();
            assert_eq!(byte[0], first_byte, "{scheme}");
            drop(socket);
            let attempt = sending.await.unwrap();
            assert_eq!(attempt.status, None);
            assert_eq!(attempt.verdict(), Verdict::Retry, "{}", attempt.detail);
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_a_refusal_not_a_network_error() {
        let client = Client::new(
            eddy_net::connector(eddy_net::Policy::Workspace(Default::default())).unwrap(),
            4,
        );
        let attempt = send(&client, &get("http://localhost:9/"), Duration::from_secs(5)).await;
        assert!(attempt.refused, "{}", attempt.detail);
        assert!(
            attempt.detail.contains("private address"),
            "{}",
            attempt.detail
        );
        assert_eq!(attempt.verdict(), Verdict::Fail);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut text = "ééé".to_string();
        truncate(&mut text, 3);
        assert_eq!(text, "é");
    }
}
