//! Currents records of message events: the fields every message event shares, plus each
//! type's own. Only non-null fields are written (every other field is nullable).

use eddy_model::currents::OutboxEvent;
use serde_json::{Map, Value, json};

/// What every message event of one recipient of one dispatch shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// The profile's Braze id.
    pub braze_id: String,
    /// Its external id.
    pub external_id: Option<String>,
    /// Its time zone.
    pub timezone: Option<String>,
    /// The workspace's app group id.
    pub app_group_id: String,
    /// `dispatch_id`.
    pub dispatch_id: String,
    /// `send_id`.
    pub send_id: Option<String>,
    /// `campaign_id`.
    pub campaign_id: Option<String>,
    /// `campaign_name`.
    pub campaign_name: Option<String>,
    /// The canvas step of a canvas send.
    pub canvas: Option<crate::dispatch::CanvasStep>,
}

/// A Currents event type of a channel (`email`, `webhook`) and name (`Send`).
pub fn message_type(channel: &str, name: &str) -> String {
    format!("users.messages.{channel}.{name}")
}

impl Context {
    /// The context of a user's events for a dispatch (campaign and send id left to the caller).
    pub fn of(
        profile: &eddy_model::profile::Profile,
        app_group_id: &str,
        dispatch_id: String,
    ) -> Context {
        Context {
            braze_id: profile.braze_id.clone(),
            external_id: profile.external_id.clone(),
            timezone: profile
                .fields
                .get("time_zone")
                .and_then(Value::as_str)
                .map(str::to_string),
            app_group_id: app_group_id.to_string(),
            dispatch_id,
            send_id: None,
            campaign_id: None,
            campaign_name: None,
            canvas: None,
        }
    }

    /// An event of `event_type` at `time_ms` for `message_variation_id`, with extra fields.
    pub fn event(
        &self,
        event_type: String,
        time_ms: i64,
        variation: Option<&str>,
        extra: Vec<(&'static str, Value)>,
    ) -> OutboxEvent {
        // Fields a type's schema lacks would be dropped by the Avro writer; only known ones are
        // written, so the outbox holds what Currents will carry.
        let known = known_fields(&event_type);
        let mut record = Map::new();
        let mut put = |name: &'static str, value: Value| {
            if !value.is_null() && known.is_none_or(|fields| fields.contains(&name)) {
                record.insert(name.into(), value);
            }
        };
        put("id", Value::String(eddy_store::ids::event_id()));
        put("user_id", Value::String(self.braze_id.clone()));
        put("external_user_id", text(&self.external_id));
        put("time", json!(time_ms.div_euclid(1000)));
        put("timezone", text(&self.timezone));
        put("app_group_id", Value::String(self.app_group_id.clone()));
        put("dispatch_id", Value::String(self.dispatch_id.clone()));
        put("send_id", text(&self.send_id));
        put("campaign_id", text(&self.campaign_id));
        put("campaign_name", text(&self.campaign_name));
        if let Some(canvas) = &self.canvas {
            put("canvas_id", Value::String(canvas.canvas_id.clone()));
            put("canvas_name", Value::String(canvas.canvas_name.clone()));
            put(
                "canvas_variation_id",
                Value::String(canvas.canvas_id.clone()),
            );
            put(
                "canvas_variation_name",
                Value::String(crate::dispatch::VARIANT_NAME.into()),
            );
            put("canvas_step_id", Value::String(canvas.step_id.clone()));
            put("canvas_step_name", Value::String(canvas.step_name.clone()));
        }
        put(
            "message_variation_id",
            variation.map_or(Value::Null, Value::from),
        );
        for (name, value) in extra {
            put(name, value);
        }
        OutboxEvent { event_type, record }
    }
}

/// An optional text as a JSON value (null when absent).
fn text(value: &Option<String>) -> Value {
    value.as_deref().map_or(Value::Null, Value::from)
}

/// Fields of the message event types eddy writes, from their schemas in `currents-schemas/`
/// (`campaigns.*` lack `dispatch_id`, and `webhook.Send` lacks `timezone`-less variants).
fn known_fields(event_type: &str) -> Option<&'static [&'static str]> {
    const COMMON: &[&str] = &[
        "id",
        "user_id",
        "external_user_id",
        "time",
        "timezone",
        "app_group_id",
        "dispatch_id",
        "send_id",
        "campaign_id",
        "campaign_name",
        "canvas_id",
        "canvas_name",
        "canvas_variation_id",
        "canvas_variation_name",
        "canvas_step_id",
        "canvas_step_name",
        "message_variation_id",
        "email_address",
        "message_extras",
        "from_domain",
        "bounce_reason",
        "url",
        "user_agent",
        "abort_type",
        "abort_log",
        "deferral_reason",
        "attempt_count",
        "retry_type",
        "retry_log",
        "recipient_domain",
        "http_status_code",
        "endpoint_url",
        "host",
        "url_path",
        "raw_response",
        "retry_count",
        "webhook_duration",
        "webhook_failure_source",
        "is_terminal",
        "content_length",
        "conversion_behavior_index",
        "conversion_behavior",
        "app_id",
    ];
    const CAMPAIGN: &[&str] = &[
        "id",
        "user_id",
        "external_user_id",
        "time",
        "timezone",
        "app_group_id",
        "send_id",
        "campaign_id",
        "campaign_name",
        "message_variation_id",
        "conversion_behavior_index",
        "conversion_behavior",
        "app_id",
        "abort_type",
        "abort_log",
        "dispatch_id",
    ];
    match event_type {
        "users.campaigns.Conversion" | "users.campaigns.EnrollInControl" => {
            Some(&CAMPAIGN[..CAMPAIGN.len() - 3])
        }
        "users.campaigns.Abort" => Some(CAMPAIGN),
        t if t.starts_with("users.messages.") => Some(COMMON),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            braze_id: "b".into(),
            external_id: Some("u1".into()),
            timezone: None,
            app_group_id: "ag".into(),
            dispatch_id: "d".into(),
            send_id: None,
            campaign_id: Some("c".into()),
            campaign_name: Some("Welcome".into()),
            canvas: None,
        }
    }

    #[test]
    fn events_carry_the_shared_fields_and_drop_nulls() {
        let event = context().event(
            message_type("email", "Delivery"),
            5_500,
            Some("v"),
            vec![
                ("email_address", json!("a@b.co")),
                ("bounce_reason", Value::Null),
            ],
        );
        assert_eq!(event.event_type, "users.messages.email.Delivery");
        assert_eq!(event.record["time"], 5);
        assert_eq!(event.record["dispatch_id"], "d");
        assert_eq!(event.record["message_variation_id"], "v");
        assert!(!event.record.contains_key("bounce_reason"));
    }

    #[test]
    fn control_enrolment_has_no_dispatch_id() {
        let event = context().event("users.campaigns.EnrollInControl".into(), 0, None, vec![]);
        assert!(!event.record.contains_key("dispatch_id"));
        assert_eq!(event.record["campaign_id"], "c");
    }

    #[test]
    fn every_field_written_is_in_its_schema() {
        let types = [
            "users.campaigns.EnrollInControl",
            "users.campaigns.Conversion",
            "users.campaigns.Abort",
            "users.messages.webhook.Send",
            "users.messages.webhook.Failure",
            "users.messages.webhook.Retry",
            "users.messages.email.Send",
            "users.messages.email.Delivery",
            "users.messages.email.Bounce",
            "users.messages.email.SoftBounce",
            "users.messages.email.Deferral",
            "users.messages.email.Retry",
            "users.messages.email.Click",
            "users.messages.email.Open",
            "users.messages.email.Abort",
            "users.messages.email.Unsubscribe",
        ];
        for event_type in types {
            let schema = eddy_currents::catalogue::schema(event_type)
                .unwrap_or_else(|| panic!("no schema for {event_type}"));
            let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
            let allowed = known_fields(event_type).unwrap();
            for field in written_fields(event_type) {
                assert!(
                    allowed.contains(field),
                    "{event_type}: {field} is filtered out"
                );
                assert!(names.contains(field), "{event_type} has no field {field}");
            }
        }
    }

    /// The fields the engine writes per type (kept beside the test that checks them).
    fn written_fields(event_type: &str) -> &'static [&'static str] {
        match event_type {
            "users.campaigns.EnrollInControl" | "users.campaigns.Conversion" => &[
                "id",
                "user_id",
                "external_user_id",
                "time",
                "app_group_id",
                "campaign_id",
                "campaign_name",
                "message_variation_id",
                "send_id",
            ],
            "users.campaigns.Abort" => &["abort_type", "abort_log", "dispatch_id", "campaign_id"],
            "users.messages.webhook.Send" => &["dispatch_id", "message_extras", "send_id"],
            "users.messages.webhook.Failure" => &[
                "http_status_code",
                "endpoint_url",
                "host",
                "url_path",
                "raw_response",
                "retry_count",
                "is_terminal",
                "webhook_failure_source",
            ],
            "users.messages.webhook.Retry" => &["retry_type", "retry_log", "dispatch_id"],
            "users.messages.email.Send" => &["email_address", "message_extras", "from_domain"],
            "users.messages.email.Delivery" => &["email_address", "from_domain"],
            "users.messages.email.Bounce" | "users.messages.email.SoftBounce" => {
                &["email_address", "bounce_reason"]
            }
            "users.messages.email.Deferral" => &[
                "email_address",
                "deferral_reason",
                "attempt_count",
                "recipient_domain",
            ],
            "users.messages.email.Retry" => &["email_address", "retry_type", "retry_log"],
            "users.messages.email.Click" => &["email_address", "url", "user_agent"],
            "users.messages.email.Open" => &["email_address", "user_agent"],
            "users.messages.email.Abort" => &["email_address", "abort_type", "abort_log"],
            _ => &[],
        }
    }
}
