//! Request and response bodies of the Braze REST API, shared by eddy's server and its clients.
//!
//! `/users/track` objects stay `serde_json::Value` on the way in so that one malformed object
//! is reported at its index instead of failing the whole request; [`crate::track`] validates them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ObjectError;

/// A user alias: one name per label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserAlias {
    /// The alias value, for example an email or a partner's id.
    pub alias_name: String,
    /// The alias namespace, for example `amplitude_id`.
    pub alias_label: String,
}

/// `POST /users/track`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackRequest {
    /// User attributes objects (≤ 75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Value>>,
    /// Event objects (≤ 75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Value>>,
    /// Purchase objects (≤ 75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchases: Option<Vec<Value>>,
}

/// The 201 answer of `/users/track`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackResponse {
    /// `success`.
    pub message: String,
    /// Present when the request had `attributes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes_processed: Option<usize>,
    /// Present when the request had `events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_processed: Option<usize>,
    /// Present when the request had `purchases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchases_processed: Option<usize>,
    /// Non-fatal errors of single objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ObjectError>,
}

/// One entry of `aliases_to_identify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasToIdentify {
    /// The identified user to merge into.
    pub external_id: String,
    /// The alias whose profile is merged.
    pub user_alias: UserAlias,
}

/// One entry of `emails_to_identify` or `phone_numbers_to_identify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactToIdentify {
    /// The identified user to merge into.
    pub external_id: String,
    /// Set for `emails_to_identify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Set for `phone_numbers_to_identify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Which of several matching profiles wins.
    #[serde(default)]
    pub prioritization: Vec<String>,
}

/// `POST /users/identify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdentifyRequest {
    /// Alias-only profiles to identify.
    #[serde(default)]
    pub aliases_to_identify: Vec<AliasToIdentify>,
    /// Email-only profiles to identify.
    #[serde(default)]
    pub emails_to_identify: Vec<ContactToIdentify>,
    /// Phone-only profiles to identify.
    #[serde(default)]
    pub phone_numbers_to_identify: Vec<ContactToIdentify>,
}

/// One entry of `/users/alias/new`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAlias {
    /// Adds the alias to this user; without it an alias-only user is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The alias value.
    pub alias_name: String,
    /// The alias label.
    pub alias_label: String,
}

/// `POST /users/alias/new`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AliasNewRequest {
    /// Aliases to create (≤ 50).
    #[serde(default)]
    pub user_aliases: Vec<NewAlias>,
}

/// One entry of `/users/alias/update`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasUpdate {
    /// The label of the alias to rename.
    pub alias_label: String,
    /// Its current name.
    pub old_alias_name: String,
    /// Its new name.
    pub new_alias_name: String,
}

/// `POST /users/alias/update`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AliasUpdateRequest {
    /// Renames (≤ 50).
    #[serde(default)]
    pub alias_updates: Vec<AliasUpdate>,
}

/// One entry of `/users/external_ids/rename`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIdRename {
    /// The user's primary external id.
    pub current_external_id: String,
    /// The id that becomes primary; the current one stays as a deprecated id.
    pub new_external_id: String,
}

/// `POST /users/external_ids/rename`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExternalIdRenameRequest {
    /// Renames (1 to 50).
    #[serde(default)]
    pub external_id_renames: Vec<ExternalIdRename>,
}

/// `POST /users/external_ids/remove`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExternalIdRemoveRequest {
    /// Deprecated external ids to remove (1 to 50).
    #[serde(default)]
    pub external_ids: Vec<String>,
}

/// What a rename or a removal did: the ids it handled, and the index of each entry it
/// refused with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalIdsOutcome {
    /// The external ids handled (for a rename, each entry's `current_external_id`).
    pub done: Vec<String>,
    /// `(index in the request, reason)` of each refused entry.
    pub errors: Vec<(usize, String)>,
}

/// An email or phone with the rule choosing among several profiles that share it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrioritizedEmail {
    /// The email address.
    pub email: String,
    /// Which of several matching profiles wins.
    #[serde(default)]
    pub prioritization: Vec<String>,
}

/// `POST /users/delete`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// External ids to delete.
    #[serde(default)]
    pub external_ids: Vec<String>,
    /// Aliases to delete.
    #[serde(default)]
    pub user_aliases: Vec<UserAlias>,
    /// Braze ids to delete.
    #[serde(default)]
    pub braze_ids: Vec<String>,
    /// Emails to delete.
    #[serde(default)]
    pub email_addresses: Vec<PrioritizedEmail>,
    /// Phone numbers to delete.
    #[serde(default)]
    pub phone_numbers: Vec<String>,
}

/// `POST /users/export/ids`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportIdsRequest {
    /// External ids to export (≤ 50 with aliases).
    #[serde(default)]
    pub external_ids: Vec<String>,
    /// Aliases to export.
    #[serde(default)]
    pub user_aliases: Vec<UserAlias>,
    /// One device id.
    #[serde(default)]
    pub device_id: Option<String>,
    /// One Braze id.
    #[serde(default)]
    pub braze_id: Option<String>,
    /// One email address.
    #[serde(default)]
    pub email_address: Option<String>,
    /// One phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Fields to include; all when absent.
    #[serde(default)]
    pub fields_to_export: Option<Vec<String>>,
}

/// The REST API permissions a key can hold (Braze's names), one per endpoint eddy implements.
pub const PERMISSIONS: &[&str] = &[
    "users.track",
    "users.delete",
    "users.alias.new",
    "users.alias.update",
    "users.external_ids.rename",
    "users.external_ids.remove",
    "users.identify",
    "users.export.ids",
    "users.export.segment",
    "users.merge",
    "segments.list",
    "segments.details",
    "currents.events",
    "messages.send",
    "messages.schedule.create",
    "messages.schedule.update",
    "messages.schedule.delete",
    "messages.schedule_broadcasts",
    "campaigns.trigger.send",
    "campaigns.trigger.schedule.create",
    "campaigns.trigger.schedule.update",
    "campaigns.trigger.schedule.delete",
    "transactional.send",
    "sends.id.create",
    "campaigns.list",
    "campaigns.details",
    "subscription.status.set",
    "subscription.status.get",
    "subscription.groups.get",
    "content_blocks.create",
    "content_blocks.update",
    "content_blocks.list",
    "content_blocks.info",
    "templates.email.create",
    "templates.email.update",
    "templates.email.list",
    "templates.email.info",
    "canvas.trigger.send",
    "canvas.trigger.schedule.create",
    "canvas.trigger.schedule.update",
    "canvas.trigger.schedule.delete",
    "canvas.data_series",
    "canvas.data_summary",
    "canvas.list",
    "canvas.details",
    "catalogs.get",
    "catalogs.create",
    "catalogs.delete",
    "catalogs.create_fields",
    "catalogs.delete_fields",
    "catalogs.get_items",
    "catalogs.add_items",
    "catalogs.replace_items",
    "catalogs.update_items",
    "catalogs.delete_items",
    "catalogs.get_item",
    "catalogs.create_item",
    "catalogs.replace_item",
    "catalogs.update_item",
    "catalogs.delete_item",
    "email.status",
    "email.hard_bounces",
    "email.unsubscribe",
    "email.bounce.remove",
    "email.spam.remove",
    "email.blacklist",
];
