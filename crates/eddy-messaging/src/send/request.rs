//! The bodies of Braze's send endpoints, read strictly: an unknown field is refused.

use eddy_model::wire::UserAlias;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The body of `/messages/send` and `/messages/schedule/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default)]
    pub(crate) broadcast: Option<bool>,
    #[serde(default)]
    pub(crate) external_user_ids: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) user_aliases: Option<Vec<UserAlias>>,
    #[serde(default)]
    pub(crate) segment_id: Option<String>,
    #[serde(default)]
    pub(crate) audience: Option<Value>,
    #[serde(default)]
    pub(crate) campaign_id: Option<String>,
    #[serde(default)]
    pub(crate) send_id: Option<String>,
    /// Accepted as Braze accepts it; eddy has no frequency capping to override.
    #[serde(default, rename = "override_frequency_capping")]
    _override_frequency_capping: Option<bool>,
    #[serde(default)]
    pub(crate) recipient_subscription_state: Option<String>,
    #[serde(default)]
    pub(crate) messages: Option<Value>,
    #[serde(default)]
    pub(crate) schedule: Option<Schedule>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

/// Braze's `schedule` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub(crate) time: String,
    #[serde(default)]
    pub(crate) in_local_time: bool,
    #[serde(default)]
    pub(crate) at_optimal_time: bool,
}

/// One recipient of a trigger or transactional send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRecipient {
    #[serde(default)]
    pub(crate) external_user_id: Option<String>,
    #[serde(default)]
    pub(crate) user_alias: Option<UserAlias>,
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) trigger_properties: Option<Map<String, Value>>,
    /// A canvas entry's own properties (`/canvas/trigger/send`).
    #[serde(default)]
    pub(crate) canvas_entry_properties: Option<Map<String, Value>>,
    /// Braze's newer name for them.
    #[serde(default)]
    pub(crate) context: Option<Map<String, Value>>,
    #[serde(default = "yes")]
    pub(crate) send_to_existing_only: bool,
    #[serde(default)]
    pub(crate) attributes: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

/// The body of `/campaigns/trigger/send` and `/campaigns/trigger/schedule/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    #[serde(default)]
    pub(crate) campaign_id: Option<String>,
    #[serde(default)]
    pub(crate) send_id: Option<String>,
    #[serde(default)]
    pub(crate) trigger_properties: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) broadcast: Option<bool>,
    #[serde(default)]
    pub(crate) audience: Option<Value>,
    #[serde(default)]
    pub(crate) recipients: Option<Vec<TriggerRecipient>>,
    #[serde(default)]
    pub(crate) schedule: Option<Schedule>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

impl TriggerRequest {
    /// Who a canvas trigger names, as a campaign trigger would name them.
    pub(crate) fn for_canvas(
        broadcast: Option<bool>,
        audience: Option<Value>,
        recipients: Option<Vec<TriggerRecipient>>,
    ) -> TriggerRequest {
        TriggerRequest {
            campaign_id: None,
            send_id: None,
            trigger_properties: None,
            broadcast,
            audience,
            recipients,
            schedule: None,
            _api_key: serde::de::IgnoredAny,
        }
    }

    /// A send of `campaign_id` now to the one existing user `external_user_id` (a test send).
    pub fn to_one(
        campaign_id: &str,
        external_user_id: &str,
        trigger_properties: Option<Map<String, Value>>,
    ) -> TriggerRequest {
        let recipient = TriggerRecipient {
            external_user_id: Some(external_user_id.to_string()),
            user_alias: None,
            email: None,
            trigger_properties: None,
            canvas_entry_properties: None,
            context: None,
            send_to_existing_only: true,
            attributes: None,
        };
        TriggerRequest {
            campaign_id: Some(campaign_id.to_string()),
            send_id: None,
            trigger_properties,
            broadcast: None,
            audience: None,
            recipients: Some(vec![recipient]),
            schedule: None,
            _api_key: serde::de::IgnoredAny,
        }
    }
}

/// The body of `/transactional/v1/campaigns/{id}/send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionalRequest {
    #[serde(default)]
    pub(crate) external_send_id: Option<String>,
    #[serde(default)]
    pub(crate) trigger_properties: Option<Map<String, Value>>,
    pub(crate) recipient: TriggerRecipient,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

/// The body of the schedule update and delete endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleChange {
    pub(crate) schedule_id: String,
    #[serde(default)]
    pub(crate) campaign_id: Option<String>,
    #[serde(default)]
    pub(crate) schedule: Option<Schedule>,
    #[serde(default)]
    pub(crate) messages: Option<Value>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}
