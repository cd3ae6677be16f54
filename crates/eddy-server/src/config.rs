//! The server's typed configuration (TOML). Every option has a default that works.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `eddy serve` settings.
#[derive(Debug, Clone, Deserialize)]
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
    /// The key that encrypts stored credentials [default: `<data_dir>.key`, created when
    /// missing]. `EDDY_SECRETS_KEY` (64 hex digits) takes precedence. Keep it apart from the data.
    pub secrets_key_file: Option<PathBuf>,
    /// The secrets key itself, 64 hex digits (the binary reads `EDDY_SECRETS_KEY` into it).
    pub secrets_key: Option<String>,
    /// The previous key, while rotating: credentials it encrypted are re-encrypted at start.
    pub previous_secrets_key_file: Option<PathBuf>,
}

/// A fixed-window request limit.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length in seconds.
    pub window_seconds: u64,
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
            secrets_key_file: None,
            secrets_key: None,
            previous_secrets_key_file: None,
        }
    }
}

impl Config {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}
