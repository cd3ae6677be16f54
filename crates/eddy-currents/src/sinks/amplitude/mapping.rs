//! Braze's Currents → Amplitude mapping
//! (<https://www.braze.com/docs/partners/data_and_analytics/analytics/amplitude/amplitude_for_currents/>): one Currents
//! record to one Amplitude HTTP API v2 event. Pure; the delivery loop is built on it.

use serde_json::{Map, Value, json};

/// Amplitude's HTTP API v2 endpoints by region.
pub fn endpoint(region: &str) -> Option<&'static str> {
    match region {
        "US" => Some("https://api2.amplitude.com/2/httpapi"),
        "EU" => Some("https://api.eu.amplitude.com/2/httpapi"),
        _ => None,
    }
}

/// Display labels of event types whose label is not derived from the type name.
const LABELS: &[(&str, &str)] = &[
    ("users.behaviors.Purchase", "Purchase"),
    ("users.behaviors.InstallAttribution", "Install Attribution"),
    ("users.behaviors.Location", "Location"),
    ("users.behaviors.Uninstall", "Uninstall"),
    ("users.behaviors.app.FirstSession", "First Session"),
    ("users.behaviors.app.SessionStart", "Session Start"),
    ("users.behaviors.app.SessionEnd", "Session End"),
    (
        "users.behaviors.app.NewsFeedImpression",
        "News Feed Impression",
    ),
    (
        "users.behaviors.subscription.GlobalStateChange",
        "Global Subscription State Change",
    ),
    (
        "users.behaviors.subscriptiongroup.StateChange",
        "Subscription Group State Change",
    ),
    (
        "users.behaviors.liveactivity.PushToStartTokenChange",
        "Live Activity Push To Start Token Change",
    ),
    (
        "users.behaviors.liveactivity.UpdateTokenChange",
        "Live Activity Update Token Change",
    ),
    (
        "users.behaviors.pushnotification.TokenStateChange",
        "Push Notification Token State Change",
    ),
    (
        "users.messages.pushnotification.IosForeground",
        "Push Notification iOS Foreground Open",
    ),
    ("users.messages.sms.CarrierSend", "SMS Send To Carrier"),
    ("users.messages.email.MarkAsSpam", "Email Mark As Spam"),
    ("users.messages.email.SoftBounce", "Email Soft Bounce"),
    ("users.campaigns.Conversion", "Campaign Conversion Event"),
    ("users.canvas.Conversion", "Canvas Conversion Event"),
    ("users.canvas.Entry", "Canvas Entry"),
    (
        "users.campaigns.EnrollInControl",
        "Campaign Control Group Enrollment",
    ),
];

/// Channel names as Braze writes them in labels.
const CHANNELS: &[(&str, &str)] = &[
    ("pushnotification", "Push Notification"),
    ("email", "Email"),
    ("sms", "SMS"),
    ("inappmessage", "In-App Message"),
    ("contentcard", "Content Card"),
    ("newsfeedcard", "News Feed Card"),
    ("webhook", "Webhook"),
    ("whatsapp", "WhatsApp"),
    ("line", "LINE"),
    ("rcs", "RCS"),
    ("banner", "Banner"),
    ("featureflag", "Feature Flag"),
    ("liveactivity", "Live Activity"),
];

/// Splits `CamelCase` into `Camel Case`.
fn words(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i > 0 && c.is_uppercase() {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The label Braze exports an event type under (without the `[Appboy] ` prefix).
pub fn label(event_type: &str) -> String {
    if let Some((_, label)) = LABELS.iter().find(|(t, _)| *t == event_type) {
        return (*label).to_string();
    }
    let parts: Vec<&str> = event_type.split('.').collect();
    let action = words(parts.last().copied().unwrap_or(event_type));
    if parts.len() >= 4 && parts[1] == "messages" {
        let channel = CHANNELS
            .iter()
            .find(|(c, _)| *c == parts[2])
            .map_or_else(|| words(parts[2]), |(_, l)| (*l).to_string());
        return format!("{channel} {action}");
    }
    if parts.len() >= 3 {
        let area = words(parts[parts.len() - 2]);
        return format!("{} {action}", capitalize(&area));
    }
    action
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Fields that become top-level Amplitude keys or are otherwise not event properties.
const NOT_PROPERTIES: &[&str] = &[
    "id",
    "user_id",
    "external_user_id",
    "device_id",
    "time",
    "time_ms",
    "name",
    "properties",
];

/// Maps one Currents record to an Amplitude event, or `None` when Braze would skip it (neither
/// an external id nor a device id).
pub fn event(event_type: &str, record: &Map<String, Value>) -> Option<Value> {
    let user_id = record
        .get("external_user_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let device_id = record
        .get("device_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if user_id.is_none() && device_id.is_none() {
        return None;
    }
    let custom = event_type == "users.behaviors.CustomEvent";
    let purchase = event_type == "users.behaviors.Purchase";
    let name = if custom {
        format!(
            "[Appboy] [Custom Event] {}",
            record
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        )
    } else {
        format!("[Appboy] {}", label(event_type))
    };
    let time_ms = match record.get("time_ms").and_then(Value::as_i64) {
        Some(ms) => ms,
        None => {
            record
                .get("time")
                .and_then(Value::as_i64)
                .unwrap_or_default()
                * 1000
        }
    };
    let mut out = Map::new();
    if let Some(u) = user_id {
        out.insert("user_id".into(), json!(u));
    }
    if let Some(d) = device_id {
        out.insert("device_id".into(), json!(d));
    }
    out.insert("event_type".into(), json!(name));
    out.insert("time".into(), json!(time_ms));
    if let Some(id) = record.get("id").and_then(Value::as_str) {
        out.insert("insert_id".into(), json!(id));
    }
    out.insert("library".into(), json!("Braze"));
    if let Some(ad_id) = record.get("ad_id").and_then(Value::as_str) {
        match record.get("ad_id_type").and_then(Value::as_str) {
            Some("ios_idfa") => {
                out.insert("idfa".into(), json!(ad_id));
            }
            Some("google_ad_id") => {
                out.insert("adid".into(), json!(ad_id));
            }
            _ => {}
        }
    }
    let mut properties = Map::new();
    for (key, value) in record {
        if value.is_null() || NOT_PROPERTIES.contains(&key.as_str()) {
            continue;
        }
        if purchase && key == "price" {
            out.insert("price".into(), value.clone());
            continue;
        }
        if purchase && key == "product_id" {
            out.insert("productId".into(), value.clone());
            continue;
        }
        properties.insert(key.clone(), value.clone());
    }
    let prefix = if custom {
        Some("[Custom event property] ")
    } else if purchase {
        Some("[Purchase property] ")
    } else {
        None
    };
    if let (Some(prefix), Some(Value::String(raw))) = (prefix, record.get("properties"))
        && let Ok(Value::Object(custom_properties)) = serde_json::from_str::<Value>(raw)
    {
        for (key, value) in custom_properties {
            properties.insert(format!("{prefix}{key}"), value);
        }
    }
    out.insert("event_properties".into(), Value::Object(properties));
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label("users.messages.email.Send"), "Email Send");
        assert_eq!(
            label("users.messages.pushnotification.Open"),
            "Push Notification Open"
        );
        assert_eq!(
            label("users.messages.inappmessage.Impression"),
            "In-App Message Impression"
        );
        assert_eq!(
            label("users.messages.sms.DeliveryFailure"),
            "SMS Delivery Failure"
        );
        assert_eq!(
            label("users.behaviors.subscription.GlobalStateChange"),
            "Global Subscription State Change"
        );
        assert_eq!(label("users.behaviors.app.SessionStart"), "Session Start");
        assert_eq!(
            label("users.canvas.exit.MatchedAudience"),
            "Exit Matched Audience"
        );
        for event_type in crate::catalogue::event_types() {
            assert!(!label(event_type).is_empty(), "{event_type}");
        }
    }

    #[test]
    fn custom_event_mapping() {
        let record = json!({"id": "f47ac10b", "user_id": "b", "external_user_id": "ext", "device_id": "dev",
            "time": 2_033_802_504, "name": "rented", "properties": "{\"color\":\"red\",\"n\":1}",
            "platform": "android", "ad_id": "ad", "ad_id_type": "ios_idfa", "app_group_id": "g", "timezone": null});
        let event =
            super::event("users.behaviors.CustomEvent", record.as_object().unwrap()).unwrap();
        assert_eq!(
            event,
            json!({"user_id": "ext", "device_id": "dev", "event_type": "[Appboy] [Custom Event] rented",
                   "time": 2_033_802_504_000_i64, "insert_id": "f47ac10b", "library": "Braze", "idfa": "ad",
                   "event_properties": {"platform": "android", "ad_id": "ad", "ad_id_type": "ios_idfa", "app_group_id": "g",
                                        "[Custom event property] color": "red", "[Custom event property] n": 1}})
        );
    }

    #[test]
    fn purchase_and_skips() {
        let record = json!({"id": "p1", "user_id": "b", "external_user_id": "ext", "time": 10, "product_id": "book",
            "price": 2.5, "currency": "USD", "properties": "{\"gift\":true}"});
        let event = super::event("users.behaviors.Purchase", record.as_object().unwrap()).unwrap();
        assert_eq!(event["event_type"], "[Appboy] Purchase");
        assert_eq!(
            (event["price"].as_f64(), event["productId"].as_str()),
            (Some(2.5), Some("book"))
        );
        assert_eq!(
            event["event_properties"],
            json!({"currency": "USD", "[Purchase property] gift": true})
        );
        let anonymous = json!({"id": "x", "user_id": "b", "time": 1});
        assert!(
            super::event("users.UserDeleteRequest", anonymous.as_object().unwrap()).is_none(),
            "no external id nor device id: skipped"
        );
        assert_eq!(
            endpoint("EU"),
            Some("https://api.eu.amplitude.com/2/httpapi")
        );
        assert_eq!(endpoint("APAC"), None);
    }
}
