//! Connector configuration (Braze's Currents settings), key layout and field transformations.

use eddy_store::meta::S3Settings;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;

use crate::avro::Codec;
use crate::catalogue;

/// Currents release of the embedded schemas (the `version=` path segment).
pub const CURRENTS_VERSION: u32 = 10;
/// The cluster segment of file keys.
pub const CLUSTER: &str = "eddy-01";
/// The environment segment of file keys.
pub const ENVIRONMENT: &str = "eddy";

/// A field transformation applied to every event type that has the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// The field.
    pub field: String,
    /// `remove` (→ `"[REDACTED]"`) or `hash` (→ SHA-256, lowercase hex).
    pub action: TransformAction,
}

/// What a transformation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransformAction {
    /// Replace with `"[REDACTED]"`.
    Remove,
    /// Replace with the SHA-256 of the value, lowercase hex.
    Hash,
}

/// S3 connector settings, Braze's names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S3Connector {
    /// Bucket, region, endpoint and credentials.
    pub s3: S3Settings,
    /// Seconds between flushes [default: 300].
    #[serde(default = "default_flush")]
    pub flush_interval_seconds: u64,
    /// Events per file at most [default: 15,000].
    #[serde(default = "default_max_events")]
    pub max_events_per_file: usize,
    /// Block codec [default: null, as Braze].
    #[serde(default)]
    pub codec: Codec,
    /// `x-amz-server-side-encryption` value, e.g. `AES256`.
    #[serde(default)]
    pub server_side_encryption: Option<String>,
    /// Hours an undeliverable file is retried before its events are dropped and counted [default: 48].
    #[serde(default = "default_retention")]
    pub retention_hours: u64,
}

/// Azure Blob Storage connector settings (Braze's "Azure Blob Storage" Currents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// Google Cloud Storage connector settings (Braze's "Google Cloud Storage" Currents).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

impl GcsConnector {
    /// The file options of this connector.
    pub fn files(&self) -> FileOptions {
        FileOptions {
            prefix: self.prefix.clone(),
            connection: "GCS",
            flush_interval_seconds: self.flush_interval_seconds,
            max_events_per_file: self.max_events_per_file,
            codec: self.codec,
            retention_hours: self.retention_hours,
        }
    }
}

fn default_prefix() -> String {
    "currents".into()
}

/// What a file-writing connector needs, whatever the object store.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    /// Key prefix.
    pub prefix: String,
    /// Braze's connection-type identifier in keys: `S3`, `AzureBlob` or `GCS`.
    pub connection: &'static str,
    /// Seconds between flushes.
    pub flush_interval_seconds: u64,
    /// Events per file at most.
    pub max_events_per_file: usize,
    /// Block codec.
    pub codec: Codec,
    /// Hours before undeliverable events are dropped.
    pub retention_hours: u64,
}

impl S3Connector {
    /// The file options of this connector.
    pub fn files(&self) -> FileOptions {
        FileOptions {
            prefix: self.s3.prefix.clone(),
            connection: "S3",
            flush_interval_seconds: self.flush_interval_seconds,
            max_events_per_file: self.max_events_per_file,
            codec: self.codec,
            retention_hours: self.retention_hours,
        }
    }
}

impl AzureConnector {
    /// The file options of this connector.
    pub fn files(&self) -> FileOptions {
        FileOptions {
            prefix: self.prefix.clone(),
            connection: "AzureBlob",
            flush_interval_seconds: self.flush_interval_seconds,
            max_events_per_file: self.max_events_per_file,
            codec: self.codec,
            retention_hours: self.retention_hours,
        }
    }
}

fn default_flush() -> u64 {
    300
}

fn default_max_events() -> usize {
    15_000
}

/// A connector as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    /// Unique per workspace.
    pub name: String,
    /// 24-hex integration id (the `integration.<id>` of keys).
    pub integration_id: String,
    /// Event types delivered; all when absent.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Field transformations.
    #[serde(default)]
    pub transforms: Vec<Transform>,
    /// Where events go.
    pub sink: Sink,
}

/// A destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Sink {
    /// Avro files in an S3 bucket.
    S3(S3Connector),
    /// Avro files in an Azure Blob Storage container.
    Azure(AzureConnector),
    /// Avro files in a Google Cloud Storage bucket.
    Gcs(GcsConnector),
    /// Amplitude's HTTP API v2.
    Amplitude(AmplitudeConnector),
}

impl Sink {
    /// The file options of a file-writing sink (`None` for Amplitude).
    pub fn files(&self) -> Option<FileOptions> {
        match self {
            Sink::S3(s3) => Some(s3.files()),
            Sink::Azure(azure) => Some(azure.files()),
            Sink::Gcs(gcs) => Some(gcs.files()),
            Sink::Amplitude(_) => None,
        }
    }
}

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

fn default_retention() -> u64 {
    48
}

impl AmplitudeConnector {
    /// The URL events are posted to.
    pub fn url(&self) -> Option<String> {
        match &self.endpoint {
            Some(base) => Some(format!("{}/2/httpapi", base.trim_end_matches('/'))),
            None => crate::amplitude::endpoint(&self.region).map(str::to_string),
        }
    }
}

/// Delivery state, saved through the store's writer after each delivered file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// The next outbox sequence number not yet delivered (or dropped).
    pub cursor: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Events dropped (never silently: counted here).
    pub dropped: u64,
    /// Events not sent because Braze would not send them (Amplitude: no external id or device id).
    #[serde(default)]
    pub skipped: u64,
    /// The last delivery error, cleared by the next success.
    pub last_error: Option<String>,
    /// Incremented at each start: the `<partition>` of file names, so a restart never reuses a key.
    pub generation: u64,
}

/// The admin API's creation body (settings flat, as `PRODUCT.md` §3.4 lists them).
#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    /// Name.
    pub name: String,
    /// `s3`, `azure`, `gcs` or `amplitude`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Selected event types.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Field transformations.
    #[serde(default)]
    pub transforms: Vec<Transform>,
    /// The sink's settings.
    #[serde(flatten)]
    pub settings: Map<String, Value>,
}

impl CreateRequest {
    /// Validates the request into a connector with the given integration id.
    pub fn into_connector(self, integration_id: String) -> Result<Connector, String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("connector names are 1 to 64 letters, digits, '-' or '_'".into());
        }
        if let Some(types) = &self.event_types {
            if types.is_empty() {
                return Err("event_types, when given, must name at least one event type".into());
            }
            if let Some(unknown) = types.iter().find(|t| catalogue::schema(t).is_none()) {
                return Err(format!("unknown event type '{unknown}'"));
            }
        }
        let sink = match self.kind.as_str() {
            "s3" => Sink::S3(s3_settings(self.settings)?),
            "azure" => {
                let settings: AzureConnector = serde_json::from_value(Value::Object(self.settings))
                    .map_err(|e| format!("invalid azure settings: {e}"))?;
                if settings.account.is_empty() || settings.container.is_empty() {
                    return Err("azure connectors need an account and a container".into());
                }
                if settings.flush_interval_seconds == 0 || settings.max_events_per_file == 0 {
                    return Err(
                        "flush_interval_seconds and max_events_per_file must be at least 1".into(),
                    );
                }
                Sink::Azure(settings)
            }
            "gcs" => {
                let settings: GcsConnector = serde_json::from_value(Value::Object(self.settings))
                    .map_err(|e| format!("invalid gcs settings: {e}"))?;
                if settings.bucket.is_empty() {
                    return Err("gcs connectors need a bucket".into());
                }
                if settings.flush_interval_seconds == 0 || settings.max_events_per_file == 0 {
                    return Err(
                        "flush_interval_seconds and max_events_per_file must be at least 1".into(),
                    );
                }
                Sink::Gcs(settings)
            }
            "amplitude" => {
                let settings: AmplitudeConnector =
                    serde_json::from_value(Value::Object(self.settings))
                        .map_err(|e| format!("invalid amplitude settings: {e}"))?;
                if settings.api_key.is_empty() || settings.url().is_none() {
                    return Err(
                        "amplitude connectors need an api_key and a region of US or EU".into(),
                    );
                }
                if settings.events_per_second_per_device == 0 || settings.retention_hours == 0 {
                    return Err(
                        "events_per_second_per_device and retention_hours must be at least 1"
                            .into(),
                    );
                }
                Sink::Amplitude(settings)
            }
            other => {
                return Err(format!(
                    "unknown connector type '{other}' (s3, azure, gcs or amplitude)"
                ));
            }
        };
        Ok(Connector {
            name: self.name,
            integration_id,
            event_types: self.event_types,
            transforms: self.transforms,
            sink,
        })
    }
}

/// The S3 settings of a creation body.
fn s3_settings(mut flat: Map<String, Value>) -> Result<S3Connector, String> {
    const S3_KEYS: [&str; 6] = [
        "bucket",
        "prefix",
        "region",
        "endpoint",
        "access_key_id",
        "secret_access_key",
    ];
    const SINK_KEYS: [&str; 5] = [
        "flush_interval_seconds",
        "max_events_per_file",
        "codec",
        "server_side_encryption",
        "retention_hours",
    ];
    if let Some(unknown) = flat
        .keys()
        .find(|k| !S3_KEYS.contains(&k.as_str()) && !SINK_KEYS.contains(&k.as_str()))
    {
        return Err(format!("unknown s3 setting '{unknown}'"));
    }
    flat.entry("prefix")
        .or_insert_with(|| Value::String("currents".into()));
    let mut s3 = Map::new();
    for key in S3_KEYS {
        if let Some(v) = flat.remove(key) {
            s3.insert(key.to_string(), v);
        }
    }
    flat.insert("s3".into(), Value::Object(s3));
    let settings: S3Connector = serde_json::from_value(Value::Object(flat))
        .map_err(|e| format!("invalid s3 settings: {e}"))?;
    if settings.flush_interval_seconds == 0 || settings.max_events_per_file == 0 {
        return Err("flush_interval_seconds and max_events_per_file must be at least 1".into());
    }
    Ok(settings)
}

impl Connector {
    /// Whether this connector delivers an event type.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }

    /// Applies the field transformations to a record.
    pub fn transform(&self, record: &mut Map<String, Value>) {
        for t in &self.transforms {
            if let Some(Value::String(value)) = record.get_mut(&t.field) {
                *value = match t.action {
                    TransformAction::Remove => "[REDACTED]".to_string(),
                    TransformAction::Hash => sha2::Sha256::digest(value.as_bytes())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                };
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_follow_braze_layout() {
        assert_eq!(
            object_key(
                "S3",
                "currents",
                "69cadaaed2d51b7c75b1a3e5",
                "users.behaviors.CustomEvent",
                "2025-04-01-17",
                0,
                123456
            ),
            "currents/dataexport.eddy-01.S3.integration.69cadaaed2d51b7c75b1a3e5/event_type=users.behaviors.CustomEvent/date=2025-04-01-17/version=10/eddy/dataexport.eddy-01.S3.integration.69cadaaed2d51b7c75b1a3e5+0+123456.avro"
        );
        assert_eq!(hour_of(1_743_526_800_000), "2025-04-01-17");
    }

    #[test]
    fn transforms() {
        let c = Connector {
            name: "c".into(),
            integration_id: "i".into(),
            event_types: None,
            transforms: vec![
                Transform {
                    field: "email_address".into(),
                    action: TransformAction::Remove,
                },
                Transform {
                    field: "external_user_id".into(),
                    action: TransformAction::Hash,
                },
            ],
            sink: Sink::S3(
                s3_settings(json!({"bucket": "b"}).as_object().unwrap().clone()).unwrap(),
            ),
        };
        let mut record = json!({"email_address": "a@b.c", "external_user_id": "abc", "time": 1})
            .as_object()
            .unwrap()
            .clone();
        c.transform(&mut record);
        assert_eq!(record["email_address"], "[REDACTED]");
        assert_eq!(
            record["external_user_id"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn creation_checks() {
        let req = |v: Value| {
            serde_json::from_value::<CreateRequest>(v)
                .unwrap()
                .into_connector("i".into())
        };
        let ok =
            req(json!({"name": "s3-main", "type": "s3", "bucket": "b", "endpoint": "http://x"}))
                .unwrap();
        let Sink::S3(s3) = &ok.sink else {
            panic!("not s3")
        };
        assert_eq!(
            (
                s3.s3.prefix.as_str(),
                s3.flush_interval_seconds,
                s3.max_events_per_file
            ),
            ("currents", 300, 15_000)
        );
        assert!(
            req(json!({"name": "x", "type": "s3", "bucket": "b", "event_types": ["nope"]}))
                .unwrap_err()
                .contains("unknown event type")
        );
        assert!(
            req(json!({"name": "x", "type": "kafka"}))
                .unwrap_err()
                .contains("unknown connector type")
        );
        assert!(
            req(json!({"name": "x", "type": "s3"}))
                .unwrap_err()
                .contains("bucket")
        );
        let azure =
            req(json!({"name": "blob", "type": "azure", "account": "acct", "container": "c"}))
                .unwrap();
        let Sink::Azure(a) = &azure.sink else {
            panic!("not azure")
        };
        let files = a.files();
        assert_eq!(
            (
                files.prefix.as_str(),
                files.connection,
                files.flush_interval_seconds
            ),
            ("currents", "AzureBlob", 300)
        );
        assert!(
            req(json!({"name": "x", "type": "azure", "account": "a"}))
                .unwrap_err()
                .contains("container")
        );
        assert!(req(json!({"name": "x", "type": "azure", "account": "a", "container": "c", "bucket": "b"}))
            .unwrap_err()
            .contains("bucket"));
    }

    #[test]
    fn gcs_settings() {
        let req = |v: Value| {
            serde_json::from_value::<CreateRequest>(v)
                .unwrap()
                .into_connector("i".into())
        };
        let ok = req(json!({"name": "g", "type": "gcs", "bucket": "b"})).unwrap();
        let Sink::Gcs(g) = &ok.sink else {
            panic!("not gcs")
        };
        assert_eq!(
            (g.files().connection, g.files().prefix.as_str()),
            ("GCS", "currents")
        );
        assert!(
            req(json!({"name": "g", "type": "gcs"}))
                .unwrap_err()
                .contains("bucket")
        );
        assert!(
            req(json!({"name": "g", "type": "gcs", "bucket": "b", "region": "x"}))
                .unwrap_err()
                .contains("region")
        );
    }

    #[test]
    fn azure_keys_name_the_connection_type() {
        let key = object_key(
            "AzureBlob",
            "p",
            "abc",
            "users.behaviors.CustomEvent",
            "2025-04-01-17",
            1,
            7,
        );
        assert_eq!(
            key,
            "p/dataexport.eddy-01.AzureBlob.integration.abc/event_type=users.behaviors.CustomEvent/date=2025-04-01-17/version=10/eddy/dataexport.eddy-01.AzureBlob.integration.abc+1+7.avro"
        );
    }
}
