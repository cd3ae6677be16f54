//! Connector configuration (Braze's Currents settings), key layout and field transformations.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;

use crate::catalogue;
pub use crate::sinks::amplitude::config::AmplitudeConnector;
use crate::sinks::files::config::s3_settings;
pub use crate::sinks::files::config::{
    AzureConnector, CLUSTER, CURRENTS_VERSION, ENVIRONMENT, FileOptions, FileSettings,
    GcsConnector, S3Connector, hour_of, object_key,
};

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
    /// Paused: no task runs, its cursor keeps its place (and holds back the outbox's trimming).
    #[serde(default)]
    pub paused: bool,
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
    /// The `type` of the admin API: `s3`, `azure`, `gcs` or `amplitude`.
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::S3(_) => "s3",
            Sink::Azure(_) => "azure",
            Sink::Gcs(_) => "gcs",
            Sink::Amplitude(_) => "amplitude",
        }
    }

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

/// The admin API's creation body (settings flat beside `name` and `type`, as the README shows).
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
    /// Whether the destination is checked (a test write, a key check) before the connector is
    /// saved [default: true]; `false` saves settings for a destination that is not up yet.
    #[serde(default = "check_by_default")]
    pub validate: bool,
    /// The sink's settings.
    #[serde(flatten)]
    pub settings: Map<String, Value>,
}

fn check_by_default() -> bool {
    true
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
            "azure" => Sink::Azure(AzureConnector::from_settings(self.settings)?),
            "gcs" => Sink::Gcs(GcsConnector::from_settings(self.settings)?),
            "amplitude" => Sink::Amplitude(AmplitudeConnector::from_settings(self.settings)?),
            other => {
                return Err(format!(
                    "unknown connector type '{other}' (s3, azure, gcs or amplitude)"
                ));
            }
        };
        if let Some(files) = sink.files() {
            files.settings.validate()?;
        }
        Ok(Connector {
            name: self.name,
            integration_id,
            event_types: self.event_types,
            transforms: self.transforms,
            sink,
            paused: false,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_connector_type_refuses_a_misspelt_setting_by_name() {
        let base = |kind: &str, settings: Value| {
            let mut body = json!({"name": "c", "type": kind});
            for (k, v) in settings.as_object().unwrap() {
                body[k] = v.clone();
            }
            serde_json::from_value::<CreateRequest>(body)
                .unwrap()
                .into_connector("0".repeat(24))
        };
        let cases = [
            ("s3", json!({"bucket": "b", "bukcet": "typo"})),
            (
                "azure",
                json!({"account": "a", "container": "c", "bukcet": "typo"}),
            ),
            ("gcs", json!({"bucket": "b", "bukcet": "typo"})),
            ("amplitude", json!({"api_key": "k", "bukcet": "typo"})),
        ];
        for (kind, settings) in cases {
            let error = base(kind, settings).unwrap_err();
            assert!(error.contains("bukcet"), "{kind}: {error}");
        }
        // The shared file options are validated once for every file connector.
        for (kind, settings) in [
            ("s3", json!({"bucket": "b", "flush_interval_seconds": 0})),
            (
                "azure",
                json!({"account": "a", "container": "c", "max_events_per_file": 0}),
            ),
            ("gcs", json!({"bucket": "b", "flush_interval_seconds": 0})),
        ] {
            let error = base(kind, settings).unwrap_err();
            assert!(error.contains("at least 1"), "{kind}: {error}");
        }
    }

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
            paused: false,
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
                s3.files.flush_interval_seconds,
                s3.files.max_events_per_file
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
                files.settings.flush_interval_seconds
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
