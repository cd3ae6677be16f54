//! Connected Content's HTTP: one client, Braze's limits (2 s timeout, up to 5 attempts with
//! `:retry`), its cache (GET answers 5 minutes by default, `:cache_max_age` 5 minutes to 4 hours,
//! POST only when asked, never bodies over 1 MB), and the hosts a template may call: public
//! addresses on ports 80 and 443, plus the hosts a workspace allows (any port).
//!
//! Rendering is synchronous, so a fetch blocks its thread on the runtime: callers render on a
//! blocking thread (`spawn_blocking`), never on an async worker.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use eddy_net::{AllowedHosts, Policy};

use crate::fetch::{Fetch, FetchError, Method, Request, Response};

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

/// The shared clients and cache.
pub struct HttpClient {
    /// One client per set of allowed hosts: its resolver admits public addresses and those
    /// hosts, so a connection goes only where the check let it.
    clients: RwLock<HashMap<AllowedHosts, reqwest::Client>>,
    runtime: tokio::runtime::Handle,
    cache: RwLock<HashMap<String, (Instant, Response), foldhash::fast::RandomState>>,
    retry_pause: Duration,
    /// Requests sent (not answered from the cache), for tests and metrics.
    pub sent: std::sync::atomic::AtomicU64,
}

/// What one workspace's templates may do: extra hosts, and named basic-auth credentials.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Hosts allowed beyond public ones (`127.0.0.1`, `api.internal:8443`).
    pub allowed_hosts: AllowedHosts,
    /// `:basic_auth NAME` → (username, password).
    pub credentials: HashMap<String, (String, String)>,
}

impl HttpClient {
    /// A client on `runtime`; `retry_pause` is the first wait between attempts (doubling).
    pub fn new(
        runtime: tokio::runtime::Handle,
        retry_pause: Duration,
    ) -> Result<HttpClient, String> {
        let http = HttpClient {
            clients: RwLock::new(HashMap::new()),
            runtime,
            cache: RwLock::new(HashMap::default()),
            retry_pause,
            sent: std::sync::atomic::AtomicU64::new(0),
        };
        // The client of workspaces that allow nothing more is made now, so that a failure to
        // build one shows at start.
        http.client(&AllowedHosts::default())?;
        Ok(http)
    }

    /// The client whose resolver admits public addresses and `allowed`.
    fn client(&self, allowed: &AllowedHosts) -> Result<reqwest::Client, String> {
        if let Some(client) = self
            .clients
            .read()
            .ok()
            .and_then(|c| c.get(allowed).cloned())
        {
            return Ok(client);
        }
        let client = eddy_net::client_builder(Policy::Workspace(allowed.clone()))
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        if let Ok(mut clients) = self.clients.write() {
            // Each workspace's list is one entry; lists that change leave old entries, which a
            // bound keeps from growing without end.
            if clients.len() > 1024 {
                clients.clear();
            }
            clients.insert(allowed.clone(), client.clone());
        }
        Ok(client)
    }

    /// A view for one workspace (its cache space and rules).
    pub fn scoped<'a>(&'a self, scope: &'a str, rules: &'a Rules) -> Scoped<'a> {
        Scoped {
            http: self,
            scope,
            rules,
            catalogs: None,
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
    catalogs: Option<&'a dyn crate::fetch::Catalogs>,
}

impl<'a> Scoped<'a> {
    /// The same view, with the workspace's catalogs for `{% catalog_items %}`.
    pub fn with_catalogs(mut self, catalogs: &'a dyn crate::fetch::Catalogs) -> Scoped<'a> {
        self.catalogs = Some(catalogs);
        self
    }
}

impl Fetch for Scoped<'_> {
    fn catalog_items(
        &self,
        catalog: &str,
        ids: &[String],
    ) -> Result<Vec<serde_json::Value>, FetchError> {
        match self.catalogs {
            Some(catalogs) => catalogs.items(catalog, ids).map_err(FetchError::Failed),
            None => Err(FetchError::Refused(
                "catalogs are not available here".into(),
            )),
        }
    }

    fn fetch(&self, request: &Request) -> Result<Response, FetchError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| FetchError::Refused(format!("'{}' is not a URL: {e}", request.url)))?;
        eddy_net::check_url_for(Some(&self.rules.allowed_hosts), &url, true)
            .map_err(|refused| FetchError::Refused(refused.0))?;
        let ttl = cache_lifetime(request);
        let key = ttl.map(|_| cache_key(self.scope, request));
        if let Some(key) = &key
            && let Some(hit) = self.http.cached(key)
        {
            return Ok(hit);
        }
        let attempts = if request.retry { ATTEMPTS } else { 1 };
        let deadline = Instant::now() + request.time_left;
        let mut pause = self.http.retry_pause;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last_error = "the render's time for connected content ran out".into();
                break;
            }
            match self.send(&url, request, left.min(TIMEOUT)) {
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
                Err(FetchError::Refused(reason)) => return Err(FetchError::Refused(reason)),
                Err(FetchError::Failed(reason)) => last_error = reason,
            }
            if attempt < attempts {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause *= 2;
            }
        }
        Err(FetchError::Failed(last_error))
    }
}

impl Scoped<'_> {
    fn send(
        &self,
        url: &reqwest::Url,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, FetchError> {
        let client = self
            .http
            .client(&self.rules.allowed_hosts)
            .map_err(FetchError::Failed)?;
        let mut builder = match request.method {
            Method::Get => client.get(url.clone()),
            Method::Post => client.post(url.clone()),
        }
        .timeout(timeout);
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if let Some(name) = &request.basic_auth {
            let (user, password) = self.rules.credentials.get(name).ok_or_else(|| {
                FetchError::Failed(format!("no basic auth credential named '{name}'"))
            })?;
            builder = builder.basic_auth(user, Some(password));
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        self.http
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.http.runtime.block_on(async {
            let mut response = builder.send().await.map_err(|e| failure(&e))?;
            let status = response.status().as_u16();
            // The answer is read as it comes and given up past the cap: a large answer costs
            // no more memory than the cap, whatever it announces.
            if response
                .content_length()
                .is_some_and(|length| length > MAX_BODY as u64)
            {
                return Err(FetchError::Failed(too_large()));
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| failure(&e))? {
                if bytes.len() + chunk.len() > MAX_BODY {
                    return Err(FetchError::Failed(too_large()));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Response::new(
                status,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        })
    }
}

/// A request that failed: refused when the resolver refused every address of the host (the
/// same refusal as a literal address gets), else failed.
fn failure(error: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<eddy_net::Refused>() {
            return FetchError::Refused(refused.0.clone());
        }
        source = e.source();
    }
    FetchError::Failed(error.to_string())
}

fn too_large() -> String {
    format!("the answer is larger than {} bytes", MAX_BODY)
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

#[cfg(test)]
mod tests {
    use super::*;

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
            time_left: Duration::from_secs(1),
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
