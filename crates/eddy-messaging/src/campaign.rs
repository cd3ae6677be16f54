//! Campaign definitions and the message objects of Braze's `/messages/send`, checked once.

use std::collections::BTreeMap;

use eddy_liquid::Template;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::MessagingError;

/// A webhook message: one HTTP request per recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookMessage {
    /// The URL (Liquid).
    pub url: String,
    /// `POST` (default), `PUT`, `PATCH`, `GET` or `DELETE`.
    #[serde(default = "default_method")]
    pub request_method: String,
    /// Header name → value (Liquid).
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// The body (Liquid).
    #[serde(default)]
    pub body: Option<String>,
    /// Reported as `message_variation_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_variation_id: Option<String>,
    /// Key-value pairs reported as `message_extras` of the Send event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Map<String, Value>>,
}

fn default_method() -> String {
    "POST".into()
}

/// An email message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailMessage {
    /// Braze's app identifier; kept for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// `Name <address>` or an address (Liquid).
    pub from: String,
    /// Reply-To address (Liquid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Blind copy address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bcc: Option<String>,
    /// Subject (Liquid).
    pub subject: String,
    /// HTML body (Liquid).
    pub body: String,
    /// Plain-text body (Liquid); derived from the HTML when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_body: Option<String>,
    /// Preview text shown after the subject (Liquid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preheader: Option<String>,
    /// Extra headers (Liquid values).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Reported as `message_variation_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_variation_id: Option<String>,
    /// Key-value pairs reported as `message_extras` of the Send event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extras: Option<Map<String, Value>>,
    /// Accepted for compatibility; eddy sends the HTML as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_inline_css: Option<bool>,
}

/// The messages of a send or campaign, one per channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Messages {
    /// The webhook message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookMessage>,
    /// The email message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailMessage>,
}

/// Channels Braze has that eddy does not send on.
const OTHER_CHANNELS: &[&str] = &[
    "apple_push",
    "android_push",
    "kindle_push",
    "web_push",
    "windows_phone8_push",
    "windows_universal_push",
    "content_card",
    "sms",
    "whats_app",
    "line",
    "kakao",
    "live_activity",
];

impl Messages {
    /// Reads a `messages` object: `webhook` and `email` are sent; Braze's other channels and
    /// unknown keys are refused by name.
    pub fn from_json(value: &Value) -> Result<Messages, MessagingError> {
        let Value::Object(map) = value else {
            return Err(MessagingError::invalid("'messages' must be an object"));
        };
        let mut messages = Messages::default();
        for (channel, object) in map {
            match channel.as_str() {
                "webhook" => {
                    let webhook: WebhookMessage = serde_json::from_value(object.clone())
                        .map_err(|e| MessagingError::invalid(format!("messages.webhook: {e}")))?;
                    messages.webhook = Some(webhook);
                }
                "email" => {
                    if let Some(bad) = ["attachments", "amp_body"]
                        .iter()
                        .find(|k| object.get(**k).is_some())
                    {
                        return Err(MessagingError::invalid(format!(
                            "messages.email.{bad} is not supported by eddy"
                        )));
                    }
                    let email: EmailMessage = serde_json::from_value(object.clone())
                        .map_err(|e| MessagingError::invalid(format!("messages.email: {e}")))?;
                    messages.email = Some(email);
                }
                other if OTHER_CHANNELS.contains(&other) => {
                    return Err(MessagingError::invalid(format!(
                        "eddy sends webhook and email messages; '{other}' is not supported"
                    )));
                }
                other => {
                    return Err(MessagingError::invalid(format!(
                        "'{other}' is not a message channel"
                    )));
                }
            }
        }
        if messages.webhook.is_none() && messages.email.is_none() {
            return Err(MessagingError::invalid(
                "'messages' needs a 'webhook' or an 'email' object",
            ));
        }
        messages.check()?;
        Ok(messages)
    }

    /// Checks methods and addresses, and that every Liquid field parses.
    pub fn check(&self) -> Result<(), MessagingError> {
        if let Some(webhook) = &self.webhook {
            let method = webhook.request_method.to_ascii_uppercase();
            if !matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "GET" | "DELETE") {
                return Err(MessagingError::invalid(format!(
                    "messages.webhook.request_method '{}' is not POST, PUT, PATCH, GET or DELETE",
                    webhook.request_method
                )));
            }
            if webhook.url.trim().is_empty() {
                return Err(MessagingError::invalid("messages.webhook.url is required"));
            }
            if let Some(name) = webhook
                .request_headers
                .keys()
                .find(|name| reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err())
            {
                return Err(MessagingError::invalid(format!(
                    "messages.webhook.request_headers: '{name}' is not a valid header name"
                )));
            }
            for (field, text) in webhook.texts() {
                parse_field(&format!("messages.webhook.{field}"), text)?;
            }
        }
        if let Some(email) = &self.email {
            if email.from.trim().is_empty() {
                return Err(MessagingError::invalid("messages.email.from is required"));
            }
            // Addresses written without Liquid are checked now; rendered ones at each send.
            let literal = [
                ("from", Some(&email.from)),
                ("reply_to", email.reply_to.as_ref()),
                ("bcc", email.bcc.as_ref()),
            ];
            for (field, text) in literal {
                let Some(text) = text else { continue };
                let is_liquid = field != "bcc" && (text.contains("{{") || text.contains("{%"));
                if is_liquid {
                    continue;
                }
                crate::address::Mailbox::parse(text)
                    .map_err(|e| MessagingError::invalid(format!("messages.email.{field}: {e}")))?;
            }
            for (field, text) in email.texts() {
                parse_field(&format!("messages.email.{field}"), text)?;
            }
        }
        Ok(())
    }

    /// The channels present, in Braze's names.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.email.is_some() {
            out.push("email");
        }
        if self.webhook.is_some() {
            out.push("webhook");
        }
        out
    }
}

impl WebhookMessage {
    /// Every Liquid field with its name.
    pub fn texts(&self) -> Vec<(String, &str)> {
        let mut out = vec![("url".to_string(), self.url.as_str())];
        if let Some(body) = &self.body {
            out.push(("body".into(), body));
        }
        for (name, value) in &self.request_headers {
            out.push((format!("request_headers.{name}"), value));
        }
        out
    }
}

impl EmailMessage {
    /// Every Liquid field with its name.
    pub fn texts(&self) -> Vec<(String, &str)> {
        let mut out = vec![
            ("from".to_string(), self.from.as_str()),
            ("subject".into(), &self.subject),
            ("body".into(), &self.body),
        ];
        let optional = [
            ("reply_to", &self.reply_to),
            ("plaintext_body", &self.plaintext_body),
            ("preheader", &self.preheader),
        ];
        for (name, value) in optional {
            if let Some(text) = value {
                out.push((name.into(), text));
            }
        }
        for (name, value) in &self.headers {
            out.push((format!("headers.{name}"), value));
        }
        out
    }
}

fn parse_field(field: &str, text: &str) -> Result<Template, MessagingError> {
    Template::parse(text).map_err(|e| {
        MessagingError::invalid(format!(
            "{field}: Liquid syntax error on line {}: {}",
            e.line, e.message
        ))
    })
}

/// A behaviour that counts as a conversion after a send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionEvent {
    /// `custom_event` or `purchase`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The custom event's name (for `custom_event`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_event_name: Option<String>,
    /// Only this product (for `purchase`); any product when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// How long after a send it counts, seconds (Braze's default: 3 days).
    #[serde(default = "default_window")]
    pub window_seconds: i64,
}

fn default_window() -> i64 {
    3 * 24 * 3600
}

/// Braze's rules for conversion events (of a campaign or a canvas): at most 4, each a custom
/// event by name or a purchase, with a positive window.
pub fn check_conversion_events(
    conversions: &[ConversionEvent],
    of: &str,
) -> Result<(), MessagingError> {
    if conversions.len() > 4 {
        return Err(MessagingError::invalid(format!(
            "a {of} has at most 4 conversion events"
        )));
    }
    for conversion in conversions {
        let valid = match conversion.kind.as_str() {
            "custom_event" => conversion
                .custom_event_name
                .as_deref()
                .is_some_and(|n| !n.is_empty()),
            "purchase" => true,
            _ => false,
        };
        if !valid || conversion.window_seconds <= 0 {
            return Err(MessagingError::invalid(
                "a conversion event is {\"type\": \"custom_event\", \"custom_event_name\"} or {\"type\": \"purchase\", \"product\"?}, with a positive 'window_seconds'",
            ));
        }
    }
    Ok(())
}

impl ConversionEvent {
    /// Whether a tracked custom event (`Some(name)`, product `None`) or purchase (`None`,
    /// `Some(product)`) matches this behaviour.
    pub fn matches(&self, event: Option<&str>, product: Option<&str>) -> bool {
        match self.kind.as_str() {
            "custom_event" => event.is_some() && event == self.custom_event_name.as_deref(),
            "purchase" => {
                product.is_some() && (self.product.is_none() || product == self.product.as_deref())
            }
            _ => false,
        }
    }

    /// Braze's label of the behaviour in `/campaigns/details`.
    pub fn braze_type(&self) -> &'static str {
        match (self.kind.as_str(), &self.product) {
            ("custom_event", _) => "Performs Custom Event",
            ("purchase", Some(_)) => "Makes Specific Purchase",
            _ => "Makes Any Purchase",
        }
    }
}

/// An API-triggered campaign, as `POST /eddy/v1/workspaces/{ws}/campaigns` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The messages, as `/messages/send` takes them.
    pub messages: Value,
    /// Only members of this subscription group get its email.
    #[serde(default)]
    pub subscription_group_id: Option<String>,
    /// Conversion behaviours (at most 4, as Braze).
    #[serde(default)]
    pub conversion_events: Vec<ConversionEvent>,
    /// Share of recipients held out, 0–100.
    #[serde(default)]
    pub control_group_percent: u8,
    /// Send rate cap.
    #[serde(default)]
    pub messages_per_minute: Option<u32>,
    /// Archived campaigns are hidden from `/campaigns/list` unless asked for and cannot send.
    #[serde(default)]
    pub archived: bool,
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// `campaign_id`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The messages.
    pub messages: Messages,
    /// Subscription group of its email.
    #[serde(default)]
    pub subscription_group_id: Option<String>,
    /// Conversion behaviours.
    #[serde(default)]
    pub conversion_events: Vec<ConversionEvent>,
    /// Share held out.
    #[serde(default)]
    pub control_group_percent: u8,
    /// Send rate cap.
    #[serde(default)]
    pub messages_per_minute: Option<u32>,
    /// Archived.
    #[serde(default)]
    pub archived: bool,
    /// Creation time, UTC ms.
    pub created_at: i64,
    /// Last edit, UTC ms.
    pub updated_at: i64,
    /// First and last send, UTC ms.
    #[serde(default)]
    pub first_sent: Option<i64>,
    /// Last send, UTC ms.
    #[serde(default)]
    pub last_sent: Option<i64>,
}

impl CampaignInput {
    /// Checks the definition and builds the stored campaign.
    pub fn into_campaign(
        self,
        id: String,
        created_at: i64,
        now: i64,
    ) -> Result<Campaign, MessagingError> {
        if self.name.trim().is_empty() || self.name.len() > 255 {
            return Err(MessagingError::invalid("'name' is 1 to 255 characters"));
        }
        if self.control_group_percent > 100 {
            return Err(MessagingError::invalid(
                "'control_group_percent' is between 0 and 100",
            ));
        }
        if self.messages_per_minute == Some(0) {
            return Err(MessagingError::invalid(
                "'messages_per_minute' is at least 1",
            ));
        }
        check_conversion_events(&self.conversion_events, "campaign")?;
        let messages = Messages::from_json(&self.messages)?;
        Ok(Campaign {
            id,
            name: self.name,
            description: self.description,
            tags: self.tags,
            messages,
            subscription_group_id: self.subscription_group_id,
            conversion_events: self.conversion_events,
            control_group_percent: self.control_group_percent,
            messages_per_minute: self.messages_per_minute,
            archived: self.archived,
            created_at,
            updated_at: now,
            first_sent: None,
            last_sent: None,
        })
    }
}

/// The `message_variation_id` of a channel of a campaign (or the message's own).
pub fn variation_id(campaign_id: Option<&str>, channel: &str, own: Option<&str>) -> Option<String> {
    if let Some(own) = own {
        return Some(own.to_string());
    }
    campaign_id.map(|id| format!("{id}-{channel}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webhook_and_email_are_read_and_other_channels_named() {
        let m = Messages::from_json(&json!({"webhook": {"url": "https://x.test/{{${user_id}}}"}}))
            .unwrap();
        assert_eq!(m.webhook.unwrap().request_method, "POST");
        let err = Messages::from_json(&json!({"sms": {}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "eddy sends webhook and email messages; 'sms' is not supported"
        );
        let err = Messages::from_json(
            &json!({"email": {"from": "a@b.co", "subject": "s", "body": "b", "attachments": []}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("attachments"));
        assert!(Messages::from_json(&json!({})).is_err());
    }

    #[test]
    fn liquid_errors_name_the_field() {
        let err = Messages::from_json(
            &json!({"email": {"from": "a@b.co", "subject": "{% if %}", "body": "b"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("messages.email.subject: Liquid syntax error on line 1"),
            "{err}"
        );
        let err = Messages::from_json(&json!({"webhook": {"url": "u", "request_method": "TRACE"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TRACE"));
        let err = Messages::from_json(
            &json!({"webhook": {"url": "u", "request_headers": {"X-A\r\nX-B": "v"}}}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a valid header name"), "{err}");
    }

    #[test]
    fn conversions_match_events_and_purchases() {
        let event = ConversionEvent {
            kind: "custom_event".into(),
            custom_event_name: Some("bought".into()),
            product: None,
            window_seconds: 10,
        };
        assert!(event.matches(Some("bought"), None));
        assert!(!event.matches(Some("viewed"), None));
        assert!(!event.matches(None, Some("bought")));
        let any = ConversionEvent {
            kind: "purchase".into(),
            custom_event_name: None,
            product: None,
            window_seconds: 10,
        };
        assert!(any.matches(None, Some("p")));
        assert_eq!(any.braze_type(), "Makes Any Purchase");
    }
}
