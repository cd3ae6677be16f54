//! Settings of the file connectors (S3, Azure Blob Storage, Google Cloud Storage) and Braze's
//! object key layout.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::avro::Codec;
use crate::sinks::default_retention;
use eddy_store::meta::S3Settings;

/// Currents release of the embedded schemas (the `version=` path segment).
pub const CURRENTS_VERSION: u32 = 10;
/// The cluster segment of file keys.
pub const CLUSTER: &str = "eddy-01";
/// The environment segment of file keys.
pub const ENVIRONMENT: &str = "eddy";

/// The options every file connector has, with Braze's names and defaults: one type, one
/// validation. Flattened into each connector's settings, so stored and posted JSON keep them
/// beside the connector's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSettings {
    /// Seconds between flushes [default: 300].
    #[serde(default = "default_flush")]
    pub flush_interval_seconds: u64,
    /// Events per file at most [default: 15,000].
    #[serde(default = "default_max_events")]
    pub max_events_per_file: usize,
    /// Block codec [default: null, as Braze].
    #[serde(default)]
    pub codec: Codec,
    /// Hours an undeliverable file is retried before its events are dropped and counted [default: 48].
    #[serde(default = "default_retention")]
    pub retention_hours: u64,
    /// Longest wait between attempts while the store fails, seconds [default: 300].
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
}

fn default_max_backoff() -> u64 {
    300
}

impl FileSettings {
    /// The names of these settings in a creation body.
    pub const KEYS: [&str; 5] = [
        "flush_interval_seconds",
        "max_events_per_file",
        "codec",
        "retention_hours",
        "max_backoff_seconds",
    ];

    /// The checks every file connector shares.
    pub fn validate(&self) -> Result<(), String> {
        if self.flush_interval_seconds == 0 || self.max_events_per_file == 0 {
            return Err("flush_interval_seconds and max_events_per_file must be at least 1".into());
        }
        Ok(())
    }

    fn options(&self, prefix: &str, connection: &'static str) -> FileOptions {
        FileOptions {
            prefix: prefix.to_string(),
            connection,
            settings: self.clone(),
        }
    }
}

/// Refuses a creation body's setting that neither the connector type nor [`FileSettings`] has.
/// (serde's `deny_unknown_fields` does not combine with the flattened shared settings.)
fn refuse_unknown(kind: &str, settings: &Map<String, Value>, own: &[&str]) -> Result<(), String> {
    let known = |k: &str| own.contains(&k) || FileSettings::KEYS.contains(&k);
    match settings.keys().find(|k| !known(k)) {
        Some(unknown) => Err(format!("unknown {kind} setting '{unknown}'")),
        None => Ok(()),
    }
}

/// S3 connector settings, Braze's names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S3Connector {
    /// Bucket, region, endpoint and credentials.
    pub s3: S3Settings,
    /// `x-amz-server-side-encryption` value, e.g. `AES256`.
    #[serde(default)]
    pub server_side_encryption: Option<String>,
    /// The shared file options.
    #[serde(flatten)]
    pub files: FileSettings,
}

/// Azure Blob Storage connector settings (Braze's "Azure Blob Storage" Currents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AzureConnector {
    /// Storage account name.
    pub account: String,
    /// Container the files go to.
    pub container: String,
    /// Storage account access key; taken from the environment when absent.
    #[serde(default)]
    pub access_key: Option<String>,
    /// Blob endpoint replacing Azure's (an emulator such as Azurite), e.g.
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Blob name prefix [default: currents].
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The shared file options.
    #[serde(flatten)]
    pub files: FileSettings,
}

/// Google Cloud Storage connector settings (Braze's "Google Cloud Storage" Currents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcsConnector {
    /// Bucket the files go to.
    pub bucket: String,
    /// A service account key (the JSON document); the environment's credentials when absent.
    #[serde(default)]
    pub service_account_key: Option<String>,
    /// Base URL replacing Google's (an emulator), e.g. `http://127.0.0.1:4443`; without a key,
    /// requests to it carry a placeholder token.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Object name prefix [default: currents].
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The shared file options.
    #[serde(flatten)]
    pub files: FileSettings,
}

impl S3Connector {
    /// The file options of this connector.
    pub fn files(&self) -> FileOptions {
        self.files.options(&self.s3.prefix, "S3")
    }
}

impl AzureConnector {
    /// The settings of a creation body; unknown settings are refused by name.
    pub fn from_settings(settings: Map<String, Value>) -> Result<AzureConnector, String> {
        refuse_unknown(
            "azure",
            &settings,
            &["account", "container", "access_key", "endpoint", "prefix"],
        )?;
        let settings: AzureConnector = serde_json::from_value(Value::Object(settings))
            .map_err(|e| format!("invalid azure settings: {e}"))?;
        if settings.account.is_empty() || settings.container.is_empty() {
            return Err("azure connectors need an account and a container".into());
        }
        Ok(settings)
    }

    /// The file options of this connector.
    pub fn files(&self) -> FileOptions {
        self.files.options(&self.prefix, "AzureBlob")
    }
}

impl GcsConnector {
    /// The settings of a creation body; unknown settings are refused by name.
    pub fn from_settings(settings: Map<String, Value>) -> Result<GcsConnector, String> {
        refuse_unknown(
            "gcs",
            &settings,
            &["bucket", "service_account_key", "endpoint", "prefix"],
        )?;
        let settings: GcsConnector = serde_json::from_value(Value::Object(settings))
            .map_err(|e| format!("invalid gcs settings: {e}"))?;
        if settings.bucket.is_empty() {
            return Err("gcs connectors need a bucket".into());
        }
        Ok(settings)
    }

    /// The file options of this connector.
    pub fn files(&self) -> FileOptions {
        self.files.options(&self.prefix, "GCS")
    }
}

fn default_prefix() -> String {
    "currents".into()
}

/// What the file task needs, whatever the object store.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    /// Key prefix.
    pub prefix: String,
    /// Braze's connection-type identifier in keys: `S3`, `AzureBlob` or `GCS`.
    pub connection: &'static str,
    /// The shared settings.
    pub settings: FileSettings,
}

fn default_flush() -> u64 {
    300
}

fn default_max_events() -> usize {
    15_000
}

/// The S3 settings of a creation body.
pub(crate) fn s3_settings(mut flat: Map<String, Value>) -> Result<S3Connector, String> {
    const S3_KEYS: [&str; 6] = [
        "bucket",
        "prefix",
        "region",
        "endpoint",
        "access_key_id",
        "secret_access_key",
    ];
    let mut own = S3_KEYS.to_vec();
    own.push("server_side_encryption");
    refuse_unknown("s3", &flat, &own)?;
    flat.entry("prefix")
        .or_insert_with(|| Value::String("currents".into()));
    let mut s3 = Map::new();
    for key in S3_KEYS {
        if let Some(v) = flat.remove(key) {
            s3.insert(key.to_string(), v);
        }
    }
    flat.insert("s3".into(), Value::Object(s3));
    serde_json::from_value(Value::Object(flat)).map_err(|e| format!("invalid s3 settings: {e}"))
}

/// The object key of a file, in Braze's layout.
pub fn object_key(
    connection: &str,
    prefix: &str,
    integration_id: &str,
    event_type: &str,
    hour: &str,
    partition: u64,
    offset: u64,
) -> String {
    let topic = format!("dataexport.{CLUSTER}.{connection}.integration.{integration_id}");
    let prefix = prefix.trim_matches('/');
    let lead = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!(
        "{lead}{topic}/event_type={event_type}/date={hour}/version={CURRENTS_VERSION}/{ENVIRONMENT}/{topic}+{partition}+{offset}.avro"
    )
}

/// The `YYYY-MM-DD-HH` UTC hour of a millisecond time.
pub fn hour_of(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d-%H").to_string())
        .unwrap_or_default()
}
