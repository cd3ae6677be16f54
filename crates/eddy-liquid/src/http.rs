//! Connected Content's HTTP: one client, Braze's limits (2 s timeout, up to 5 attempts with
//! `:retry`), its cache (GET answers 5 minutes by default, `:cache_max_age` 5 minutes to 4 hours,
//! POST only when asked, never bodies over 1 MB), and the hosts a template may call: public
//! addresses on ports 80 and 443, plus the hosts a workspace allows (any port).
//!
//! Rendering is synchronous, so a fetch blocks its thread on the runtime: callers render on a
//! blocking thread (`spawn_blocking`), never on an async worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::braze::{Fetch, FetchError, Method, Request, Response};

/// How long one attempt may take (Braze's).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts with `:retry`.
pub const ATTEMPTS: u32 = 5;
/// The default cache lifetime of a GET answer.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(300);
/// Bounds of `:cache_max_age`.
pub const CACHE_RANGE: (u64, u64) = (300, 4 * 3600);
/// Answers larger than this are never cached.
pub const MAX_CACHED_BODY: usize = 1024 * 1024;
/// Cache entries kept at most (the oldest go first).
const MAX_ENTRIES: usize = 10_000;
/// Bytes of an answer read at most.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// The shared client and cache.
pub struct HttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    cache: RwLock<HashMap<String, (Instant, Response), foldhash::fast::RandomState>>,
    retry_pause: Duration,
    /// Requests sent (not answered from the cache), for tests and metrics.
    pub sent: std::sync::atomic::AtomicU64,
}

/// What one workspace's templates may do: extra hosts, and named basic-auth credentials.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Hosts allowed beyond public ones (`127.0.0.1`, `api.internal:8443`): any port.
    pub allowed_hosts: Vec<String>,
    /// `:basic_auth NAME` → (username, password).
    pub credentials: HashMap<String, (String, String)>,
}

impl HttpClient {
    /// A client on `runtime`; `retry_pause` is the first wait between attempts (doubling).
    pub fn new(
        runtime: tokio::runtime::Handle,
        retry_pause: Duration,
    ) -> Result<HttpClient, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpClient {
            client,
            runtime,
            cache: RwLock::new(HashMap::default()),
            retry_pause,
            sent: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A view for one workspace (its cache space and rules).
    pub fn scoped<'a>(&'a self, scope: &'a str, rules: &'a Rules) -> Scoped<'a> {
        Scoped {
            http: self,
            scope,
            rules,
        }
    }

    fn cached(&self, key: &str) -> Option<Response> {
        // Hits only read: renders on several threads do not wait on each other.
        {
            let cache = self.cache.read().ok()?;
            match cache.get(key) {
                Some((until, response)) if *until > Instant::now() => {
                    return Some(response.clone());
                }
                Some(_) => {}
                None => return None,
            }
        }
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(key);
        }
        None
    }

    fn remember(&self, key: String, response: &Response, ttl: Duration) {
        let Ok(mut cache) = self.cache.write() else {
            return;
        };
        if cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_ENTRIES
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (Instant::now() + ttl, response.clone()));
    }
}

/// One workspace's view of the client: it implements [`Fetch`].
pub struct Scoped<'a> {
    http: &'a HttpClient,
    scope: &'a str,
    rules: &'a Rules,
}

impl Fetch for Scoped<'_> {
    fn fetch(&self, request: &Request) -> Result<Response, FetchError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| FetchError::Refused(format!("'{}' is not a URL: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Refused(format!(
                "only http and https URLs are called, not '{}'",
                url.scheme()
            )));
        }
        self.check_host(&url)?;
        let ttl = cache_lifetime(request);
        let key = ttl.map(|_| cache_key(self.scope, request));
        if let Some(key) = &key
            && let Some(hit) = self.http.cached(key)
        {
            return Ok(hit);
        }
        let attempts = if request.retry { ATTEMPTS } else { 1 };
        let mut pause = self.http.retry_pause;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            match self.send(&url, request) {
                Ok(response) if response.status < 500 => {
                    if let (Some(key), Some(ttl)) = (key, ttl)
                        && (200..300).contains(&response.status)
                        && response.body.len() <= MAX_CACHED_BODY
                    {
                        self.http.remember(key, &response, ttl);
                    }
                    return Ok(response);
                }
                Ok(response) => last_error = format!("HTTP {}", response.status),
                Err(e) => last_error = e,
            }
            if attempt < attempts {
                std::thread::sleep(pause);
                pause *= 2;
            }
        }
        Err(FetchError::Failed(last_error))
    }
}

impl Scoped<'_> {
    fn check_host(&self, url: &reqwest::Url) -> Result<(), FetchError> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let allowed = self.rules.allowed_hosts.iter().any(|h| {
            h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(&format!("{host}:{port}"))
        });
        if allowed {
            return Ok(());
        }
        if port != 80 && port != 443 {
            return Err(FetchError::Refused(format!(
                "port {port} of {host} is not allowed (80 and 443 only, unless the host is in the workspace's allowed_hosts)"
            )));
        }
        let addresses = self
            .http
            .runtime
            .block_on(tokio::net::lookup_host((host, port)))
            .map_err(|e| FetchError::Failed(format!("cannot resolve {host}: {e}")))?;
        for address in addresses {
            if !is_public(address.ip()) {
                return Err(FetchError::Refused(format!(
                    "{host} resolves to {}, a private address (add the host to the workspace's allowed_hosts to call it)",
                    address.ip()
                )));
            }
        }
        Ok(())
    }

    fn send(&self, url: &reqwest::Url, request: &Request) -> Result<Response, String> {
        let mut builder = match request.method {
            Method::Get => self.http.client.get(url.clone()),
            Method::Post => self.http.client.post(url.clone()),
        };
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if let Some(name) = &request.basic_auth {
            let (user, password) = self
                .rules
                .credentials
                .get(name)
                .ok_or_else(|| format!("no basic auth credential named '{name}'"))?;
            builder = builder.basic_auth(user, Some(password));
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        self.http
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.http.runtime.block_on(async {
            let response = builder.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY)]).into_owned();
            Ok(Response::new(status, body))
        })
    }
}

/// How long an answer may be reused; `None`: not cached.
fn cache_lifetime(request: &Request) -> Option<Duration> {
    if request.no_cache {
        return None;
    }
    match (request.method, request.cache_max_age) {
        (_, Some(seconds)) => Some(Duration::from_secs(
            seconds.clamp(CACHE_RANGE.0, CACHE_RANGE.1),
        )),
        (Method::Get, None) => Some(DEFAULT_CACHE),
        (Method::Post, None) => None,
    }
}

fn cache_key(scope: &str, request: &Request) -> String {
    let mut key = String::with_capacity(scope.len() + request.url.len() + 16);
    key.push_str(scope);
    key.push('\0');
    key.push_str(match request.method {
        Method::Get => "GET",
        Method::Post => "POST",
    });
    key.push('\0');
    key.push_str(&request.url);
    let mut headers: Vec<&(String, String)> = request.headers.iter().collect();
    headers.sort();
    for (k, v) in headers {
        key.push('\0');
        key.push_str(k);
        key.push(':');
        key.push_str(v);
    }
    key.push('\0');
    key.push_str(request.body.as_deref().unwrap_or(""));
    key.push('\0');
    key.push_str(request.basic_auth.as_deref().unwrap_or(""));
    key
}

/// Whether an address is on the public internet (not loopback, private, link-local…).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        assert!(is_public("93.184.216.34".parse().unwrap()));
    }

    #[test]
    fn posts_are_cached_only_when_asked_and_ages_are_bounded() {
        let mut r = Request {
            method: Method::Post,
            url: "https://x".into(),
            headers: Vec::new(),
            body: None,
            basic_auth: None,
            cache_max_age: None,
            no_cache: false,
            retry: false,
        };
        assert_eq!(cache_lifetime(&r), None);
        r.cache_max_age = Some(10);
        assert_eq!(cache_lifetime(&r), Some(Duration::from_secs(300)));
        r.method = Method::Get;
        r.cache_max_age = Some(100_000);
        assert_eq!(cache_lifetime(&r), Some(Duration::from_secs(14_400)));
        r.no_cache = true;
        assert_eq!(cache_lifetime(&r), None);
    }
}
