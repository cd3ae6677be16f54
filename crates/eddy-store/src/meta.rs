//! Records of the `meta` table: workspaces and API keys.

use crate::keys::bounded_str;
use serde::{Deserialize, Serialize};

/// A workspace (Braze's app group): its profiles, keys and usage are its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    /// Dense internal id, the prefix of all its keys.
    pub id: u32,
    /// Unique name.
    pub name: String,
    /// The `app_group_id` of its Currents events (a UUID).
    pub app_group_id: String,
    /// Creation time, UTC ms.
    pub created_at: i64,
}

/// A REST API key; only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public identifier, used to delete it.
    pub id: String,
    /// The workspace it acts on.
    pub workspace: u32,
    /// A label for people.
    pub name: String,
    /// Braze permission names, e.g. `users.track`.
    pub permissions: Vec<String>,
    /// Creation time, UTC ms.
    pub created_at: i64,
    /// When it last authenticated a request, UTC ms (recorded at most once a minute).
    #[serde(default)]
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    /// True when the key holds `permission`.
    pub fn allows(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }
}

pub(crate) fn workspace_key(name: &str) -> Vec<u8> {
    format!("ws/name/{}", bounded_str(name)).into_bytes()
}

pub(crate) fn workspace_id_key(id: u32) -> Vec<u8> {
    format!("ws/id/{id:010}").into_bytes()
}

pub(crate) fn api_key_key(hash: &str) -> Vec<u8> {
    format!("key/hash/{}", bounded_str(hash)).into_bytes()
}

pub(crate) fn api_key_ids_prefix(ws: u32) -> Vec<u8> {
    format!("key/id/{ws:010}/").into_bytes()
}

pub(crate) fn api_key_id_key(ws: u32, id: &str) -> Vec<u8> {
    format!("key/id/{ws:010}/{}", bounded_str(id)).into_bytes()
}

pub(crate) const NEXT_WORKSPACE: &[u8] = b"next/workspace";
pub(crate) const NEXT_OUTBOX: &[u8] = b"next/outbox";
/// The token of the segment index snapshot saved at the last clean shutdown (see `snapshot`).
pub(crate) const INDEX_SNAPSHOT: &[u8] = b"snapshot/index";
/// When readiness last proved that a commit succeeds.
pub(crate) const PROBE: &[u8] = b"probe/last";

pub(crate) fn next_profile_key(ws: u32) -> Vec<u8> {
    format!("next/profile/{ws:010}").into_bytes()
}

/// A cohort-import partner (amplitude, mixpanel, segment, …) and the hash of its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partner {
    /// Path name, e.g. `amplitude`.
    pub name: String,
    /// Shown in cohort names, e.g. `Amplitude`.
    pub display_name: String,
    /// SHA-256 of its `partner_api_key`.
    pub key_hash: String,
}

/// Which workspace and partner a Data Import Key belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataImportKey {
    /// The workspace cohorts are imported into.
    pub workspace: u32,
    /// The partner the key was generated for.
    pub partner: String,
    /// When it was generated, UTC ms.
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// A partner cohort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cohort {
    /// Partner name.
    pub partner: String,
    /// The partner's id for it.
    pub cohort_id: String,
    /// Its current name.
    pub name: String,
    /// When the partner created it (as sent).
    pub created_at: String,
    /// When eddy first saw it, UTC ms.
    pub imported_at: i64,
    /// When it was last renamed or its members last changed, UTC ms.
    #[serde(default)]
    pub changed_at: Option<i64>,
}

/// A segment defined through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Its id (a UUID).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The filter as given (JSON).
    pub filter: serde_json::Value,
    /// Creation time, UTC ms.
    pub created_at: i64,
}

pub(crate) fn partner_key(name: &str) -> Vec<u8> {
    format!("partner/{}", bounded_str(name)).into_bytes()
}

pub(crate) fn import_key_hash_key(hash: &str) -> Vec<u8> {
    format!("dik/hash/{}", bounded_str(hash)).into_bytes()
}

pub(crate) fn import_key_owners_prefix(ws: u32) -> Vec<u8> {
    format!("dik/ws/{ws:010}/").into_bytes()
}

pub(crate) fn import_key_owner_key(ws: u32, partner: &str) -> Vec<u8> {
    format!("dik/ws/{ws:010}/{}", bounded_str(partner)).into_bytes()
}

pub(crate) fn cohort_key(ws: u32, partner: &str, cohort_id: &str) -> Vec<u8> {
    format!(
        "cohort/{ws:010}/{}/{}",
        bounded_str(partner),
        bounded_str(cohort_id)
    )
    .into_bytes()
}

pub(crate) fn cohorts_prefix(ws: u32) -> Vec<u8> {
    format!("cohort/{ws:010}/").into_bytes()
}

pub(crate) fn segment_key(ws: u32, id: &str) -> Vec<u8> {
    format!("segment/{ws:010}/{}", bounded_str(id)).into_bytes()
}

pub(crate) fn segments_prefix(ws: u32) -> Vec<u8> {
    format!("segment/{ws:010}/").into_bytes()
}

/// Where a workspace's segment exports go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExportStorage {
    /// The server's export directory.
    Local,
    /// An S3 bucket (AWS or any S3-compatible server).
    S3(S3Settings),
}

/// An S3 destination. Credentials are kept in the data directory as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Region [default: us-east-1].
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Access key id; taken from the environment when absent.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

pub(crate) fn export_storage_key(ws: u32) -> Vec<u8> {
    format!("export-storage/{ws:010}").into_bytes()
}

/// A workspace's named settings object of a kind (content blocks, credentials…).
pub(crate) fn object_key(ws: u32, kind: &str, name: &str) -> Vec<u8> {
    format!(
        "object/{ws:010}/{}/{}",
        bounded_str(kind),
        bounded_str(name)
    )
    .into_bytes()
}

pub(crate) fn objects_prefix(ws: u32, kind: &str) -> Vec<u8> {
    format!("object/{ws:010}/{}/", bounded_str(kind)).into_bytes()
}

pub(crate) fn workspace_objects_prefix(ws: u32) -> Vec<u8> {
    format!("object/{ws:010}/").into_bytes()
}

pub(crate) fn connectors_prefix(ws: u32) -> Vec<u8> {
    format!("currents/{ws:010}/").into_bytes()
}

pub(crate) fn connector_states_prefix(ws: u32) -> Vec<u8> {
    format!("currents-state/{ws:010}/").into_bytes()
}

pub(crate) fn connector_key(ws: u32, name: &str) -> Vec<u8> {
    format!("currents/{ws:010}/{}", bounded_str(name)).into_bytes()
}

pub(crate) fn connector_state_key(ws: u32, name: &str) -> Vec<u8> {
    format!("currents-state/{ws:010}/{}", bounded_str(name)).into_bytes()
}
