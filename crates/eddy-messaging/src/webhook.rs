//! One webhook request and how its answer is classified: 2xx sent; 429, 5xx and network errors
//! worth another attempt; any other status a terminal failure.

use std::time::{Duration, Instant};

/// A rendered webhook request, in the client's own types: what could not be sent is found
/// while rendering (and aborts that recipient), not at each attempt.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: reqwest::Method,
    /// URL, as rendered.
    pub url: String,
    /// The URL parsed (and checked) once, handed to the client as it is.
    pub parsed: reqwest::Url,
    /// Headers (never `Host`: the host is the URL's).
    pub headers: reqwest::header::HeaderMap,
    /// Body; attempts share it.
    pub body: Option<bytes::Bytes>,
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

/// Sends one request with a timeout.
pub async fn send(client: &reqwest::Client, request: &Request, timeout: Duration) -> Attempt {
    let started = Instant::now();
    let mut builder = client
        .request(request.method.clone(), request.parsed.clone())
        .timeout(timeout)
        .headers(request.headers.clone());
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    match builder.send().await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            // Only the start of the answer is kept, so only that much is read: a receiver that
            // answers without end costs no memory.
            let mut bytes = Vec::new();
            while bytes.len() < MAX_DETAIL {
                match response.chunk().await {
                    Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut detail = String::from_utf8_lossy(&bytes).into_owned();
            truncate(&mut detail, MAX_DETAIL);
            Attempt {
                status: Some(status),
                detail,
                duration: started.elapsed(),
                refused: false,
            }
        }
        Err(e) => Attempt {
            status: None,
            detail: error_text(&e),
            duration: started.elapsed(),
            refused: is_refusal(&e),
        },
    }
}

/// Whether the client's resolver refused every address of the host.
fn is_refusal(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = source {
        if inner.is::<eddy_net::Refused>() {
            return true;
        }
        source = inner.source();
    }
    false
}

fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
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

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut text = "ééé".to_string();
        truncate(&mut text, 3);
        assert_eq!(text, "é");
    }
}
