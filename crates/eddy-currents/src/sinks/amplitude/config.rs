//! Settings of the Amplitude connector.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sinks::default_retention;

/// Amplitude settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmplitudeConnector {
    /// The Amplitude project's API key.
    pub api_key: String,
    /// `US` or `EU`.
    #[serde(default = "default_amplitude_region")]
    pub region: String,
    /// Base URL replacing the region's (an emulator, a proxy); `/2/httpapi` is appended.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds a throttled device waits after a 429 [default: 30, Amplitude's guidance].
    #[serde(default = "default_throttle")]
    pub throttle_seconds: u64,
    /// Events per second per device or user [default: 30, Amplitude's limit].
    #[serde(default = "default_device_rate")]
    pub events_per_second_per_device: u32,
    /// Hours an undeliverable event is kept before it is dropped and counted [default: 48].
    #[serde(default = "default_retention")]
    pub retention_hours: u64,
    /// Seconds a request may take before it is abandoned and retried [default: 10].
    #[serde(default = "default_request_timeout")]
    pub timeout_seconds: u64,
    /// Longest wait between attempts while Amplitude fails, seconds [default: 60].
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
}

fn default_max_backoff() -> u64 {
    60
}

fn default_request_timeout() -> u64 {
    10
}

fn default_amplitude_region() -> String {
    "US".into()
}

fn default_throttle() -> u64 {
    30
}

fn default_device_rate() -> u32 {
    30
}

impl AmplitudeConnector {
    /// The settings of a creation body; unknown settings are refused by name.
    pub fn from_settings(settings: Map<String, Value>) -> Result<AmplitudeConnector, String> {
        let settings: AmplitudeConnector = serde_json::from_value(Value::Object(settings))
            .map_err(|e| format!("invalid amplitude settings: {e}"))?;
        if settings.api_key.is_empty() || settings.url().is_none() {
            return Err("amplitude connectors need an api_key and a region of US or EU".into());
        }
        if settings.events_per_second_per_device == 0 || settings.retention_hours == 0 {
            return Err(
                "events_per_second_per_device and retention_hours must be at least 1".into(),
            );
        }
        Ok(settings)
    }

    /// The URL events are posted to.
    pub fn url(&self) -> Option<String> {
        match &self.endpoint {
            Some(base) => Some(format!("{}/2/httpapi", base.trim_end_matches('/'))),
            None => crate::sinks::amplitude::mapping::endpoint(&self.region).map(str::to_string),
        }
    }
}
