//! Currents events produced by writes, shaped as their Avro schemas in `currents-schemas/`.
//!
//! The writer stores each in the outbox in the same atomic batch as the profile change; the
//! Currents connectors turn records into Avro files or Amplitude events. Only non-null fields are
//! kept: every other field of these schemas is nullable with a null default.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::track::{EventInput, PurchaseInput};

/// `users.behaviors.CustomEvent`.
pub const CUSTOM_EVENT: &str = "users.behaviors.CustomEvent";
/// `users.behaviors.Purchase`.
pub const PURCHASE: &str = "users.behaviors.Purchase";
/// `users.behaviors.subscription.GlobalStateChange`.
pub const GLOBAL_STATE_CHANGE: &str = "users.behaviors.subscription.GlobalStateChange";
/// `users.behaviors.subscriptiongroup.StateChange`.
pub const GROUP_STATE_CHANGE: &str = "users.behaviors.subscriptiongroup.StateChange";
/// `users.UserDeleteRequest`.
pub const USER_DELETE_REQUEST: &str = "users.UserDeleteRequest";

/// One outbox entry: an event type and its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// The Currents event type, e.g. `users.behaviors.CustomEvent`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The record's fields by their schema names.
    pub record: Map<String, Value>,
}

/// Who an event is about.
#[derive(Debug, Clone, Copy)]
pub struct UserRef<'a> {
    /// The profile's Braze id (`user_id` in Currents).
    pub braze_id: &'a str,
    /// The profile's external id, if identified.
    pub external_id: Option<&'a str>,
    /// The workspace's app group id.
    pub app_group_id: &'a str,
}

fn base(id: String, user: UserRef<'_>, time_ms: i64) -> Map<String, Value> {
    let mut record = Map::new();
    record.insert("id".into(), json!(id));
    record.insert("user_id".into(), json!(user.braze_id));
    if let Some(ext) = user.external_id {
        record.insert("external_user_id".into(), json!(ext));
    }
    record.insert("time".into(), json!(time_ms.div_euclid(1000)));
    record.insert("app_group_id".into(), json!(user.app_group_id));
    record
}

/// A custom event.
pub fn custom_event(id: String, user: UserRef<'_>, event: &EventInput) -> OutboxEvent {
    let mut record = base(id, user, event.time_ms);
    if let Some(app) = &event.app_id {
        record.insert("app_id".into(), json!(app));
    }
    record.insert("name".into(), json!(event.name));
    record.insert(
        "properties".into(),
        json!(Value::Object(event.properties.clone()).to_string()),
    );
    OutboxEvent {
        event_type: CUSTOM_EVENT.into(),
        record,
    }
}

/// One unit of a purchase (Braze records quantity q as q purchases of one).
pub fn purchase(id: String, user: UserRef<'_>, p: &PurchaseInput) -> OutboxEvent {
    let mut record = base(id, user, p.time_ms);
    if let Some(app) = &p.app_id {
        record.insert("app_id".into(), json!(app));
    }
    record.insert("product_id".into(), json!(p.product_id));
    record.insert("price".into(), json!(p.price));
    record.insert("currency".into(), json!(p.currency));
    record.insert(
        "properties".into(),
        json!(Value::Object(p.properties.clone()).to_string()),
    );
    OutboxEvent {
        event_type: PURCHASE.into(),
        record,
    }
}

/// The Currents text of a global subscription state.
pub fn global_status(state: &str) -> &'static str {
    match state {
        "opted_in" => "Opted In",
        "unsubscribed" => "Unsubscribed",
        _ => "Subscribed",
    }
}

/// A change of `email_subscribe` or `push_subscribe`.
pub fn global_state_change(
    id: String,
    user: UserRef<'_>,
    time_ms: i64,
    channel: &str,
    state: &str,
    email: Option<&str>,
) -> OutboxEvent {
    let mut record = base(id, user, time_ms);
    if let Some(email) = email.filter(|_| channel == "email") {
        record.insert("email_address".into(), json!(email));
    }
    record.insert("state_change_source".into(), json!("REST API"));
    record.insert("subscription_status".into(), json!(global_status(state)));
    record.insert("channel".into(), json!(channel));
    OutboxEvent {
        event_type: GLOBAL_STATE_CHANGE.into(),
        record,
    }
}

/// A change of a subscription group's state.
pub fn group_state_change(
    id: String,
    user: UserRef<'_>,
    time_ms: i64,
    group_id: &str,
    state: &str,
    email: Option<&str>,
    phone: Option<&str>,
) -> OutboxEvent {
    let mut record = base(id, user, time_ms);
    if let Some(email) = email {
        record.insert("email_address".into(), json!(email));
    }
    if let Some(phone) = phone {
        record.insert("phone_number".into(), json!(phone));
    }
    record.insert("subscription_group_id".into(), json!(group_id));
    let status = if state == "subscribed" {
        "Subscribed"
    } else {
        "Unsubscribed"
    };
    record.insert("subscription_status".into(), json!(status));
    record.insert("state_change_source".into(), json!("REST API"));
    OutboxEvent {
        event_type: GROUP_STATE_CHANGE.into(),
        record,
    }
}

/// A deleted user. The schema carries no external id.
pub fn user_delete_request(
    id: String,
    braze_id: &str,
    app_group_id: &str,
    time_ms: i64,
) -> OutboxEvent {
    let mut record = Map::new();
    record.insert("id".into(), json!(id));
    record.insert("user_id".into(), json!(braze_id));
    record.insert("app_group_id".into(), json!(app_group_id));
    record.insert("time".into(), json!(time_ms.div_euclid(1000)));
    OutboxEvent {
        event_type: USER_DELETE_REQUEST.into(),
        record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{Identifier, Target};

    #[test]
    fn custom_event_matches_schema_fields() {
        let user = UserRef {
            braze_id: "b",
            external_id: Some("e"),
            app_group_id: "g",
        };
        let mut properties = Map::new();
        properties.insert("k".into(), json!(1));
        let ev = EventInput {
            target: Target {
                ident: Identifier::ExternalId("e".into()),
                update_existing_only: false,
            },
            app_id: None,
            name: "n".into(),
            time_ms: 1_500,
            properties,
        };
        let out = custom_event("id1".into(), user, &ev);
        assert_eq!(out.event_type, CUSTOM_EVENT);
        assert_eq!(
            Value::Object(out.record),
            json!({"id": "id1", "user_id": "b", "external_user_id": "e", "time": 1, "app_group_id": "g",
                   "name": "n", "properties": "{\"k\":1}"})
        );
    }
}
