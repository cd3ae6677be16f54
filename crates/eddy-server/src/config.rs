//! The server's typed configuration (TOML). Every option has a default that works.

pub use crate::ratelimit::RateLimit;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `eddy serve` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the store and the generated admin token live.
    pub data_dir: PathBuf,
    /// Admin token; generated into `<data_dir>/admin-token` when absent.
    pub admin_token: Option<String>,
    /// Largest request body accepted, after gzip decompression (Braze: 4 MB).
    pub max_body_bytes: usize,
    /// Longest custom attribute array kept (Braze's default: 25).
    pub max_array_length: usize,
    /// Block cache of the embedded store, MiB.
    pub cache_mib: u64,
    /// Hours the Currents outbox keeps delivered events, for replays [default: 48].
    pub outbox_retention_hours: u64,
    /// Where `/users/export/segment` writes its files [default: `<data_dir>/exports`].
    pub export_dir: Option<PathBuf>,
    /// Rate limit overrides by group name (see [`crate::ratelimit::GROUPS`]).
    pub rate_limits: BTreeMap<String, RateLimit>,
    /// Longest wait for a request's headers once a connection is open or idle, seconds.
    pub header_read_timeout_seconds: u64,
    /// An idle keep-alive connection is closed after this many seconds.
    pub idle_timeout_seconds: u64,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// At SIGTERM, how long connectors may take to flush, all together, seconds.
    pub shutdown_timeout_seconds: u64,
    /// One log line per request (method, path, status, duration, key name, objects).
    pub log_requests: bool,
    /// The key that encrypts stored credentials [default: `<data_dir>.key`, created when
    /// missing]. `EDDY_SECRETS_KEY` (64 hex digits) takes precedence. Keep it apart from the data.
    pub secrets_key_file: Option<PathBuf>,
    /// The secrets key itself, 64 hex digits (the binary reads `EDDY_SECRETS_KEY` into it).
    pub secrets_key: Option<String>,
    /// The previous key, while rotating: credentials it encrypted are re-encrypted at start.
    pub previous_secrets_key_file: Option<PathBuf>,
    /// Sending: links, concurrency, retries (`[messaging]`).
    pub messaging: Messaging,
    /// Where data lives (`[store]`): the embedded store in `data_dir`, or PostgreSQL.
    pub store: StoreConfig,
    /// The dashboard and its API log (`[dashboard]`).
    pub dashboard: Dashboard,
    /// What one template render may use (`[liquid]`), wherever it runs.
    pub liquid: LiquidLimits,
    /// Refuse every outbound connection but to 127.0.0.0/8 and ::1 (webhooks, Connected
    /// Content, SMTP, Currents): what tests set so that nothing they run leaves the machine.
    pub outbound_loopback_only: bool,
}

/// The `[liquid]` table: bounds of one render, for sends, the render endpoint and previews.
/// A template past one aborts for that recipient, with the bound as the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiquidLimits {
    /// Bytes a render may print.
    pub max_output_bytes: usize,
    /// Loop iterations and tags a render may run.
    pub max_steps: u64,
    /// MiB the values a render builds may hold at once.
    pub max_memory_mib: usize,
    /// Seconds a render may take, its Connected Content calls included.
    pub max_render_seconds: u64,
    /// How deep content blocks may include each other (Braze: two levels).
    pub max_content_block_depth: usize,
}

impl Default for LiquidLimits {
    fn default() -> Self {
        let limits = eddy_liquid::Limits::default();
        LiquidLimits {
            max_output_bytes: limits.max_output_bytes,
            max_steps: limits.max_steps,
            max_memory_mib: limits.max_memory_bytes / (1024 * 1024),
            max_render_seconds: limits.max_duration.as_secs(),
            max_content_block_depth: limits.max_content_block_depth,
        }
    }
}

impl LiquidLimits {
    /// The engine's limits.
    pub fn limits(&self) -> eddy_liquid::Limits {
        eddy_liquid::Limits {
            max_output_bytes: self.max_output_bytes,
            max_steps: self.max_steps,
            max_memory_bytes: self.max_memory_mib.saturating_mul(1024 * 1024),
            max_duration: std::time::Duration::from_secs(self.max_render_seconds),
            max_content_block_depth: self.max_content_block_depth,
        }
    }
}

/// The `[dashboard]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dashboard {
    /// Requests the API log keeps per workspace, in memory (0 turns the log off).
    pub api_log_entries: usize,
    /// Bytes of each request and answer body the API log keeps.
    pub api_log_body_bytes: usize,
    /// How long a sign-in lasts, seconds.
    pub session_seconds: u64,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            api_log_entries: 500,
            api_log_body_bytes: 64 * 1024,
            session_seconds: 12 * 3600,
        }
    }
}

/// The `[store]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded` (fjall under `data_dir`) or `postgres`.
    pub kind: String,
    /// For `postgres`: `postgres://user:password@host:port/database` (`EDDY_STORE` or
    /// `eddy serve --store` set it too).
    pub url: Option<String>,
    /// For `postgres`: connections in the pool for reads (the writer and the leader lease each
    /// hold one more).
    pub connections: usize,
    /// Decoded profiles the writer keeps in memory between commits (and as many identifier
    /// entries); 0 turns the cache off. Each costs about 1 KiB with 20 attributes.
    pub writer_cache_profiles: usize,
    /// For `postgres` with several nodes: the base URL other nodes reach this node's admin API
    /// at, so that a node carries to the leader what only the leader does (connector flush,
    /// test events, replay) [default: `http://<listen>`].
    pub advertise_url: Option<String>,
}

impl StoreConfig {
    /// Where other nodes reach this node: `advertise_url`, else the listen address.
    pub fn advertised(&self, listen: std::net::SocketAddr) -> String {
        match &self.advertise_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{listen}"),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: "embedded".into(),
            url: None,
            connections: 8,
            writer_cache_profiles: 200_000,
            advertise_url: None,
        }
    }
}

/// The `[messaging]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Messaging {
    /// The base URL recipients reach this eddy at, for open, click and unsubscribe links
    /// [default: `http://<listen>`]; a workspace's `tracking_domain` overrides it.
    pub public_url: Option<String>,
    /// Deliveries in flight per dispatch.
    pub concurrency: usize,
    /// Requests in flight per webhook host, across dispatches.
    pub host_concurrency: usize,
    /// Open connections per SMTP relay.
    pub smtp_connections: usize,
    /// Attempts per message before it counts as failed (webhook 5xx/429/network, SMTP 4xx).
    pub attempts: u32,
    /// Delay before the first retry, milliseconds; each next retry waits twice as long.
    pub retry_base_ms: u64,
    /// Timeout of one webhook request, seconds.
    pub webhook_timeout_seconds: u64,
    /// Recipients committed together.
    pub chunk: usize,
    /// Days a finished send's records (the dispatch, each recipient's message) are kept; their
    /// counts stay in the workspace's totals.
    pub history_days: u64,
}

impl Default for Messaging {
    fn default() -> Self {
        Messaging {
            public_url: None,
            concurrency: 256,
            host_concurrency: 128,
            smtp_connections: 8,
            attempts: 5,
            retry_base_ms: 2_000,
            webhook_timeout_seconds: 30,
            chunk: 512,
            history_days: 400,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8780)),
            data_dir: PathBuf::from("./eddy-data"),
            admin_token: None,
            max_body_bytes: 4 * 1024 * 1024,
            max_array_length: 25,
            cache_mib: 256,
            export_dir: None,
            outbox_retention_hours: 48,
            rate_limits: BTreeMap::new(),
            header_read_timeout_seconds: 30,
            idle_timeout_seconds: 120,
            max_connections: 4096,
            shutdown_timeout_seconds: 10,
            log_requests: true,
            secrets_key_file: None,
            secrets_key: None,
            previous_secrets_key_file: None,
            messaging: Messaging::default(),
            store: StoreConfig::default(),
            dashboard: Dashboard::default(),
            liquid: LiquidLimits::default(),
            outbound_loopback_only: false,
        }
    }
}

impl Config {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks what parsing cannot: values in range, rate-limit groups that exist. `eddy serve`
    /// refuses to start, and `eddy config check` reports, on the same errors.
    pub fn validate(&self) -> Result<(), String> {
        crate::ratelimit::RateLimiter::new(&self.rate_limits)?;
        if self.max_array_length == 0 {
            return Err("max_array_length must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        let liquid = &self.liquid;
        if liquid.max_output_bytes == 0
            || liquid.max_steps == 0
            || liquid.max_memory_mib == 0
            || liquid.max_render_seconds == 0
        {
            return Err(
                "liquid limits must be at least 1 (max_content_block_depth may be 0)".into(),
            );
        }
        if self.header_read_timeout_seconds == 0 || self.idle_timeout_seconds == 0 {
            return Err(
                "header_read_timeout_seconds and idle_timeout_seconds must be at least 1".into(),
            );
        }
        match (self.store.kind.as_str(), &self.store.url) {
            ("embedded", None) => {}
            ("embedded", Some(_)) => {
                return Err("store.url applies to kind = \"postgres\"".into());
            }
            ("postgres", Some(url))
                if url.starts_with("postgres://") || url.starts_with("postgresql://") => {}
            ("postgres", _) => {
                return Err(
                    "store kind = \"postgres\" needs url = \"postgres://user@host/database\""
                        .into(),
                );
            }
            (other, _) => {
                return Err(format!("store.kind '{other}' is not embedded or postgres"));
            }
        }
        if self.store.connections == 0 {
            return Err("store.connections must be at least 1".into());
        }
        if let Some(url) = &self.store.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err("store.advertise_url starts with http:// or https://".into());
        }
        let m = &self.messaging;
        if m.concurrency == 0 || m.host_concurrency == 0 || m.smtp_connections == 0 || m.chunk == 0
        {
            return Err("messaging concurrency, host_concurrency, smtp_connections and chunk must be at least 1".into());
        }
        if m.attempts == 0 || m.webhook_timeout_seconds == 0 {
            return Err("messaging attempts and webhook_timeout_seconds must be at least 1".into());
        }
        if let Some(url) = &m.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err("messaging.public_url starts with http:// or https://".into());
        }
        if self.dashboard.session_seconds == 0 {
            return Err("dashboard.session_seconds must be at least 1".into());
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be at least 1".into());
        }
        if let Some(key) = &self.secrets_key {
            eddy_store::secrets::SecretKey::from_hex(key).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../eddy.example.toml");

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let parsed = Config::from_toml(EXAMPLE).expect("the example parses");
        assert_eq!(parsed, Config::default());
        parsed.validate().expect("the example is valid");
    }

    #[test]
    fn the_example_file_shows_every_option() {
        let defaults = serde_json::to_value(Config::default()).expect("serialize");
        for key in defaults.as_object().expect("object").keys() {
            let shown = EXAMPLE.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} =")) || l == format!("[{key}]")
            });
            assert!(shown, "eddy.example.toml does not show '{key}'");
        }
    }

    #[test]
    fn validation_refuses_what_parsing_accepts() {
        for text in [
            "max_array_length = 0",
            "max_connections = 0",
            "[rate_limits]\n\"no.such.group\" = { limit = 1, window_seconds = 1 }",
            "secrets_key = \"abc\"",
        ] {
            let config = Config::from_toml(text).expect(text);
            assert!(config.validate().is_err(), "{text}");
        }
        assert!(Config::from_toml("lisen = \"127.0.0.1:1\"").is_err());
    }
}
