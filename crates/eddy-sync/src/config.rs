//! The sync file: TOML with one `[[sync]]` table per sync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::SyncError;
use crate::cron::Cron;
use crate::encode::ColumnType;

/// A sync file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    /// Where change-tracking state and run reports live; relative paths are relative to the file.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The syncs.
    #[serde(default, rename = "sync")]
    pub syncs: Vec<Sync>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("eddy-sync-state")
}

/// One sync: a source table, how its rows map to Braze users, and a target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    /// A unique name (letters, digits, `-`, `_`); it names the state folder.
    pub name: String,
    /// What to send for a changed row.
    #[serde(default)]
    pub mode: Mode,
    /// A five-field cron expression for `eddy sync schedule`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The IANA time zone of `schedule`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// What happens to users whose row left the source.
    #[serde(default)]
    pub removed_rows: RemovedRows,
    /// Where rows come from.
    pub source: Source,
    /// Which column(s) identify the user.
    #[serde(default)]
    pub identifier: Identifier,
    /// Braze attribute name → column type (or `{ type, column }` when the column is named
    /// differently).
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeSpec>,
    /// Audience membership columns.
    #[serde(default)]
    pub audiences: Option<Audiences>,
    /// Where changes go.
    pub target: Target,
}

fn default_timezone() -> String {
    "UTC".to_string()
}

/// Attribute mode sends only the attributes that changed; row mode resends a changed row whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only changed attributes (Amperity's current behaviour).
    #[default]
    Attribute,
    /// Every attribute of a row in which anything changed.
    Row,
}

/// Users whose row disappeared from the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemovedRows {
    /// Send `null` for every attribute the sync had set and leave their audiences.
    #[default]
    Unset,
    /// Send nothing and forget them.
    Keep,
}

/// A source table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// A CSV file with a header row; an empty cell is null.
    Csv {
        /// The file.
        path: PathBuf,
        /// The field delimiter (one byte).
        #[serde(default = "default_delimiter")]
        delimiter: char,
    },
    /// One JSON object per line; a missing key is null.
    Ndjson {
        /// The file.
        path: PathBuf,
    },
    /// The rows of a PostgreSQL query.
    Postgres {
        /// A libpq connection string or URL; `url_env` names a variable holding it instead.
        #[serde(default)]
        url: Option<String>,
        /// The environment variable holding the connection string.
        #[serde(default)]
        url_env: Option<String>,
        /// The query.
        query: String,
    },
    /// Avro object container files, such as Currents exports: a local file or folder, or an
    /// S3 bucket and prefix.
    Avro {
        /// A local `.avro` file or a folder searched recursively.
        #[serde(default)]
        path: Option<PathBuf>,
        /// An S3 bucket.
        #[serde(default)]
        bucket: Option<String>,
        /// The key prefix in the bucket.
        #[serde(default)]
        prefix: String,
        /// The bucket's region.
        #[serde(default = "default_region")]
        region: String,
        /// An S3-compatible endpoint.
        #[serde(default)]
        endpoint: Option<String>,
        /// Access key id (else the environment's AWS credentials).
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret access key.
        #[serde(default)]
        secret_access_key: Option<String>,
    },
}

fn default_delimiter() -> char {
    ','
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// The identifier type and its column(s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifier {
    /// `external_id`, `braze_id`, `user_alias` or (cohort targets only) `device_id`.
    #[serde(rename = "type", default)]
    pub kind: IdKind,
    /// The column; defaults to the type's name.
    #[serde(default)]
    pub column: Option<String>,
    /// The alias name column of `user_alias`.
    #[serde(default = "default_alias_name")]
    pub alias_name_column: String,
    /// The alias label column of `user_alias`.
    #[serde(default = "default_alias_label")]
    pub alias_label_column: String,
}

impl Default for Identifier {
    fn default() -> Self {
        Identifier {
            kind: IdKind::ExternalId,
            column: None,
            alias_name_column: default_alias_name(),
            alias_label_column: default_alias_label(),
        }
    }
}

fn default_alias_name() -> String {
    "alias_name".to_string()
}

fn default_alias_label() -> String {
    "alias_label".to_string()
}

/// Braze's identifier types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// `external_id`.
    #[default]
    ExternalId,
    /// `braze_id`.
    BrazeId,
    /// `user_alias` from two columns.
    UserAlias,
    /// `device_id` (cohort targets).
    DeviceId,
}

impl IdKind {
    /// The Braze field name.
    pub fn name(self) -> &'static str {
        match self {
            IdKind::ExternalId => "external_id",
            IdKind::BrazeId => "braze_id",
            IdKind::UserAlias => "user_alias",
            IdKind::DeviceId => "device_id",
        }
    }
}

/// An attribute's type, with an optional source column.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AttributeSpec {
    /// Just the type; the column has the attribute's name.
    Type(ColumnType),
    /// A type and the column it reads.
    Full {
        /// The type.
        #[serde(rename = "type")]
        ty: ColumnType,
        /// The column.
        column: String,
    },
}

/// Membership columns: a row is in an audience when its column is true.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audiences {
    /// The audience columns; each column's name is the audience's name.
    pub columns: Vec<String>,
    /// How membership is written on the profile.
    #[serde(default)]
    pub shape: AudienceShape,
    /// The array attribute of the `array` shape.
    #[serde(default = "default_audience_attribute")]
    pub attribute: String,
}

fn default_audience_attribute() -> String {
    "audiences".to_string()
}

/// How audience membership is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudienceShape {
    /// One boolean attribute per audience: `true` on entry, `false` on exit.
    #[default]
    Boolean,
    /// One array attribute, edited with `{"add": […]}` and `{"remove": […]}`.
    Array,
}

/// Where changes are sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// `POST /users/track` of Braze or eddy.
    UsersTrack {
        /// The REST endpoint, such as `https://rest.iad-03.braze.com` or `http://127.0.0.1:8780`.
        url: String,
        /// The REST API key (`api_key_env` names a variable holding it instead).
        #[serde(default)]
        api_key: Option<String>,
        /// The environment variable holding the key.
        #[serde(default)]
        api_key_env: Option<String>,
        /// Send `_update_existing_only: true` so that no user is created.
        #[serde(default)]
        update_existing_only: bool,
        /// Objects per request (Braze allows 75; 50 on newer contracts).
        #[serde(default = "default_batch")]
        batch_size: usize,
        /// Requests in flight.
        #[serde(default = "default_concurrency")]
        concurrency: usize,
        /// Retries of a request after a 5xx or a network error.
        #[serde(default = "default_retries")]
        max_retries: u32,
        /// Per-request timeout.
        #[serde(default = "default_timeout")]
        timeout_seconds: u64,
    },
    /// Braze's partner cohort import API.
    Cohort {
        /// The REST endpoint.
        url: String,
        /// The partner's name in the path.
        partner: String,
        /// The partner API key.
        #[serde(default)]
        partner_api_key: Option<String>,
        /// The environment variable holding the partner API key.
        #[serde(default)]
        partner_api_key_env: Option<String>,
        /// The customer's Data Import Key.
        #[serde(default)]
        client_secret: Option<String>,
        /// The environment variable holding the Data Import Key.
        #[serde(default)]
        client_secret_env: Option<String>,
        /// The cohort's id at the partner.
        cohort_id: String,
        /// The cohort's name in Braze.
        cohort_name: String,
        /// Ids per request (at most 1,000).
        #[serde(default = "default_cohort_batch")]
        batch_size: usize,
        /// Requests in flight.
        #[serde(default = "default_concurrency")]
        concurrency: usize,
        /// Retries of a request after a 5xx or a network error.
        #[serde(default = "default_retries")]
        max_retries: u32,
        /// Per-request timeout.
        #[serde(default = "default_timeout")]
        timeout_seconds: u64,
    },
}

fn default_batch() -> usize {
    75
}

fn default_cohort_batch() -> usize {
    1000
}

fn default_concurrency() -> usize {
    4
}

fn default_retries() -> u32 {
    5
}

fn default_timeout() -> u64 {
    30
}

/// A tracked output field of a sync: an attribute or an audience.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The Braze attribute (or audience) name; the state is keyed by it.
    pub name: String,
    /// The source column.
    pub column: String,
    /// What the field is.
    pub kind: FieldKind,
}

/// An attribute with a type, or an audience membership column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldKind {
    /// A typed attribute.
    Attribute(ColumnType),
    /// Membership of the audience named by the field.
    Audience,
}

impl Sync {
    /// Checks what serde cannot: names, the identifier against the target, batch limits.
    pub fn check(&self) -> Result<(), SyncError> {
        let bad = |why: String| Err(SyncError::Config(format!("sync '{}': {why}", self.name)));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("the name must be letters, digits, '-' or '_'".into());
        }
        if let Some(expr) = &self.schedule
            && let Err(e) = Cron::parse(expr)
        {
            return bad(format!("schedule: {e}"));
        }
        if jiff::tz::TimeZone::get(&self.timezone).is_err() {
            return bad(format!("'{}' is not an IANA time zone", self.timezone));
        }
        let (batch_size, most, concurrency) = match &self.target {
            Target::UsersTrack {
                batch_size,
                concurrency,
                ..
            } => (*batch_size, 75, *concurrency),
            Target::Cohort {
                batch_size,
                concurrency,
                ..
            } => (*batch_size, 1000, *concurrency),
        };
        if !(1..=most).contains(&batch_size) {
            return bad(format!("batch_size must be between 1 and {most}"));
        }
        if concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        let cohort = matches!(self.target, Target::Cohort { .. });
        if !cohort && self.identifier.kind == IdKind::DeviceId {
            return bad("device_id identifies users only for cohort targets".into());
        }
        if cohort && self.identifier.kind == IdKind::BrazeId {
            return bad("cohorts take external_id, device_id or user_alias".into());
        }
        if cohort && (!self.attributes.is_empty() || self.audiences.is_some()) {
            return bad(
                "a cohort target sends membership only: remove attributes and audiences".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for field in self.fields() {
            if !seen.insert(field.name.clone()) {
                return bad(format!("'{}' is mapped twice", field.name));
            }
            if matches!(
                field.name.as_str(),
                "external_id" | "braze_id" | "user_alias" | "_update_existing_only"
            ) {
                return bad(format!(
                    "'{}' is an identifier, not an attribute",
                    field.name
                ));
            }
        }
        if let Some(a) = &self.audiences
            && a.shape == AudienceShape::Array
            && seen.contains(&a.attribute)
        {
            return bad(format!(
                "'{}' is both an attribute and the audience array",
                a.attribute
            ));
        }
        if let Source::Avro { path, bucket, .. } = &self.source
            && path.is_some() == bucket.is_some()
        {
            return bad("an avro source needs either path or bucket".into());
        }
        Ok(())
    }

    /// The tracked fields, attributes first (in name order), then audiences.
    pub fn fields(&self) -> Vec<Field> {
        let mut out = Vec::new();
        for (name, spec) in &self.attributes {
            let (ty, column) = match spec {
                AttributeSpec::Type(ty) => (*ty, name.clone()),
                AttributeSpec::Full { ty, column } => (*ty, column.clone()),
            };
            out.push(Field {
                name: name.clone(),
                column,
                kind: FieldKind::Attribute(ty),
            });
        }
        if let Some(a) = &self.audiences {
            for column in &a.columns {
                out.push(Field {
                    name: column.clone(),
                    column: column.clone(),
                    kind: FieldKind::Audience,
                });
            }
        }
        out
    }

    /// The identifier's source columns (one, or two for an alias).
    pub fn id_columns(&self) -> Vec<String> {
        match self.identifier.kind {
            IdKind::UserAlias => vec![
                self.identifier.alias_name_column.clone(),
                self.identifier.alias_label_column.clone(),
            ],
            kind => vec![
                self.identifier
                    .column
                    .clone()
                    .unwrap_or_else(|| kind.name().to_string()),
            ],
        }
    }
}

impl SyncFile {
    /// Reads and checks a sync file; relative paths become relative to the file's folder.
    pub fn load(path: &Path) -> Result<SyncFile, SyncError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SyncError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut file: SyncFile = toml::from_str(&text)
            .map_err(|e| SyncError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if file.state_dir.is_relative() {
            file.state_dir = base.join(&file.state_dir);
        }
        let mut names = std::collections::BTreeSet::new();
        for sync in &mut file.syncs {
            sync.check()?;
            if !names.insert(sync.name.clone()) {
                return Err(SyncError::Config(format!(
                    "two syncs are named '{}'",
                    sync.name
                )));
            }
            match &mut sync.source {
                Source::Csv { path, .. } | Source::Ndjson { path } if path.is_relative() => {
                    *path = base.join(&*path);
                }
                Source::Avro {
                    path: Some(path), ..
                } if path.is_relative() => {
                    *path = base.join(&*path);
                }
                _ => {}
            }
        }
        if file.syncs.is_empty() {
            return Err(SyncError::Config(format!(
                "{} defines no [[sync]]",
                path.display()
            )));
        }
        Ok(file)
    }

    /// The syncs selected by `--name` (all when none is given).
    pub fn select(&self, name: Option<&str>) -> Result<Vec<&Sync>, SyncError> {
        let Some(name) = name else {
            return Ok(self.syncs.iter().collect());
        };
        match self.syncs.iter().find(|s| s.name == name) {
            Some(s) => Ok(vec![s]),
            None => Err(SyncError::Config(format!("no sync is named '{name}'"))),
        }
    }
}

/// Reads a secret given inline or through an environment variable.
pub fn secret(
    inline: &Option<String>,
    env: &Option<String>,
    what: &str,
) -> Result<String, SyncError> {
    if let Some(v) = inline {
        return Ok(v.clone());
    }
    if let Some(var) = env {
        return std::env::var(var).map_err(|_| {
            SyncError::Config(format!("{what}: environment variable {var} is not set"))
        });
    }
    Err(SyncError::Config(format!("{what} is not set")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SyncFile, String> {
        let file: SyncFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for s in &file.syncs {
            s.check().map_err(|e| e.to_string())?;
        }
        Ok(file)
    }

    const BASE: &str = r#"
[[sync]]
name = "customers"
source = { type = "csv", path = "c.csv" }
target = { type = "users_track", url = "http://x", api_key = "k" }
[sync.attributes]
first_name = "string"
ltv = { type = "decimal", column = "L12M_monetary" }
"#;

    #[test]
    fn reads_a_minimal_sync_with_defaults() {
        let file = parse(BASE).unwrap();
        let s = &file.syncs[0];
        assert_eq!(s.mode, Mode::Attribute);
        assert_eq!(s.identifier.kind, IdKind::ExternalId);
        assert_eq!(s.id_columns(), vec!["external_id"]);
        let fields = s.fields();
        assert_eq!(fields[0].name, "first_name");
        assert_eq!(fields[1].column, "L12M_monetary");
        match &s.target {
            Target::UsersTrack { batch_size, .. } => assert_eq!(*batch_size, 75),
            _ => panic!(),
        }
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(parse(&format!("{BASE}\nbogus = 1")).is_err());
        assert!(
            parse(&BASE.replace("api_key = \"k\"", "api_key = \"k\", batch_size = 76")).is_err()
        );
        assert!(parse(&BASE.replace("\"string\"", "\"text\"")).is_err());
        assert!(parse(&BASE.replace("name = \"customers\"", "name = \"a b\"")).is_err());
        let cron = BASE.replace(
            "name = \"customers\"",
            "name = \"c\"\nschedule = \"61 * * * *\"",
        );
        assert!(parse(&cron).unwrap_err().contains("schedule"));
        let tz = BASE.replace(
            "name = \"customers\"",
            "name = \"c\"\ntimezone = \"Mars/Base\"",
        );
        assert!(parse(&tz).unwrap_err().contains("time zone"));
        let dup = BASE.replace(
            "first_name = \"string\"",
            "first_name = \"string\"\nexternal_id = \"string\"",
        );
        assert!(parse(&dup).unwrap_err().contains("identifier"));
    }

    #[test]
    fn cohort_targets_send_membership_only() {
        let text = r#"
[[sync]]
name = "vip"
source = { type = "csv", path = "c.csv" }
target = { type = "cohort", url = "http://x", partner = "amperity", partner_api_key = "p", client_secret = "s", cohort_id = "vip", cohort_name = "VIP" }
"#;
        assert!(parse(text).is_ok());
        let with_attr = format!("{text}[sync.attributes]\na = \"string\"\n");
        assert!(parse(&with_attr).unwrap_err().contains("membership only"));
        let braze_id = text.replace("[[sync]]", "[[sync]]\nidentifier = { type = \"braze_id\" }");
        assert!(parse(&braze_id).is_err());
    }
}
