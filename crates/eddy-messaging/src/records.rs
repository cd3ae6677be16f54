//! Messaging's records in the store, typed: campaigns, dispatches and a workspace's email
//! settings. A record that no longer reads as its type is an internal failure, never a default
//! (a default would then be written back over it).

use eddy_store::Store;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::MessagingError;
use crate::campaign::Campaign;
use crate::canvas::Canvas;
use crate::dispatch::Dispatch;
use crate::kinds;
use crate::smtp::Relay;

/// The name of a workspace's email settings record.
const EMAIL_SETTINGS: &str = "settings";

/// A workspace's email settings as stored: its SMTP relay (the password is sealed at rest by
/// the store, as every `password` field is), its tracking domain and custom footer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailSettings {
    /// The relay's host.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// TLS from the first byte (`smtps://`).
    pub implicit_tls: bool,
    /// STARTTLS required.
    pub starttls: bool,
    /// AUTH PLAIN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// AUTH PLAIN password.
    #[serde(default)]
    pub password: Option<String>,
    /// The host (or base URL) tracking and unsubscribe links use instead of eddy's own.
    #[serde(default)]
    pub tracking_domain: Option<String>,
    /// The footer emails insert with `{{${email_footer}}}`.
    #[serde(default)]
    pub custom_footer: Option<String>,
}

impl EmailSettings {
    /// Settings for this relay.
    pub fn new(
        relay: Relay,
        tracking_domain: Option<String>,
        custom_footer: Option<String>,
    ) -> EmailSettings {
        EmailSettings {
            host: relay.host,
            port: relay.port,
            implicit_tls: relay.implicit_tls,
            starttls: relay.starttls,
            username: relay.username,
            password: relay.password,
            tracking_domain,
            custom_footer,
        }
    }

    /// How to reach the relay.
    pub fn relay(&self) -> Relay {
        Relay {
            host: self.host.clone(),
            port: self.port,
            implicit_tls: self.implicit_tls,
            starttls: self.starttls,
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}

/// A workspace's email settings, if it has any.
pub fn email_settings(store: &Store, ws: u32) -> Result<Option<EmailSettings>, MessagingError> {
    read(store, ws, kinds::EMAIL, EMAIL_SETTINGS)
}

/// Saves a workspace's email settings.
pub async fn put_email_settings(
    store: &Store,
    ws: u32,
    settings: &EmailSettings,
) -> Result<(), MessagingError> {
    write(store, ws, kinds::EMAIL, EMAIL_SETTINGS, settings).await
}

/// Removes a workspace's email settings.
pub async fn delete_email_settings(store: &Store, ws: u32) -> Result<(), MessagingError> {
    store
        .delete_object(ws, kinds::EMAIL, EMAIL_SETTINGS.into())
        .await?;
    Ok(())
}

/// A campaign, if the workspace has it.
pub fn campaign(store: &Store, ws: u32, id: &str) -> Result<Option<Campaign>, MessagingError> {
    read(store, ws, kinds::CAMPAIGN, id)
}

/// Every campaign of the workspace.
pub fn campaigns(store: &Store, ws: u32) -> Result<Vec<Campaign>, MessagingError> {
    let mut out = Vec::new();
    for (id, value) in store.objects(ws, kinds::CAMPAIGN)? {
        out.push(decode(kinds::CAMPAIGN, &id, value)?);
    }
    Ok(out)
}

/// A canvas, if the workspace has it.
pub fn canvas(store: &Store, ws: u32, id: &str) -> Result<Option<Canvas>, MessagingError> {
    read(store, ws, kinds::CANVAS, id)
}

/// Every canvas of the workspace.
pub fn canvases(store: &Store, ws: u32) -> Result<Vec<Canvas>, MessagingError> {
    let mut out = Vec::new();
    for (id, value) in store.objects(ws, kinds::CANVAS)? {
        out.push(decode(kinds::CANVAS, &id, value)?);
    }
    Ok(out)
}

/// Saves a canvas under its id.
pub async fn put_canvas(store: &Store, ws: u32, canvas: &Canvas) -> Result<(), MessagingError> {
    write(store, ws, kinds::CANVAS, &canvas.id, canvas).await
}

/// Removes a canvas; its users leave it when they are next due.
pub async fn delete_canvas(store: &Store, ws: u32, id: &str) -> Result<(), MessagingError> {
    store
        .delete_object(ws, kinds::CANVAS, id.to_string())
        .await?;
    Ok(())
}

/// Saves a campaign under its id.
pub async fn put_campaign(
    store: &Store,
    ws: u32,
    campaign: &Campaign,
) -> Result<(), MessagingError> {
    write(store, ws, kinds::CAMPAIGN, &campaign.id, campaign).await
}

/// Removes a campaign (sends already accepted still finish).
pub async fn delete_campaign(store: &Store, ws: u32, id: &str) -> Result<(), MessagingError> {
    store
        .delete_object(ws, kinds::CAMPAIGN, id.to_string())
        .await?;
    Ok(())
}

/// A dispatch, if the workspace has it (finished ones expire with the history).
pub fn dispatch(store: &Store, ws: u32, id: &str) -> Result<Option<Dispatch>, MessagingError> {
    read(store, ws, kinds::DISPATCH, id)
}

/// The workspace's dispatches, at most `limit`, in id order.
pub fn dispatches(store: &Store, ws: u32, limit: usize) -> Result<Vec<Dispatch>, MessagingError> {
    let mut out = Vec::new();
    for (id, value) in store.objects_page(ws, kinds::DISPATCH, "", None, limit)? {
        out.push(decode(kinds::DISPATCH, &id, value)?);
    }
    Ok(out)
}

fn read<T: DeserializeOwned>(
    store: &Store,
    ws: u32,
    kind: &str,
    name: &str,
) -> Result<Option<T>, MessagingError> {
    match store.object(ws, kind, name)? {
        Some(value) => decode(kind, name, value).map(Some),
        None => Ok(None),
    }
}

fn decode<T: DeserializeOwned>(
    kind: &str,
    name: &str,
    value: serde_json::Value,
) -> Result<T, MessagingError> {
    serde_json::from_value(value)
        .map_err(|e| MessagingError::internal(format!("stored {kind} '{name}' does not read: {e}")))
}

async fn write<T: Serialize>(
    store: &Store,
    ws: u32,
    kind: &str,
    name: &str,
    record: &T,
) -> Result<(), MessagingError> {
    let value = serde_json::to_value(record)
        .map_err(|e| MessagingError::internal(format!("encoding {kind} '{name}': {e}")))?;
    store.put_object(ws, kind, name.to_string(), value).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_past_u16_does_not_read_as_another_port() {
        let stored = serde_json::json!({"host": "smtp.example.com", "port": 65_561,
            "implicit_tls": false, "starttls": true});
        let read: Result<EmailSettings, MessagingError> = decode(kinds::EMAIL, "settings", stored);
        let Err(MessagingError::Internal(message)) = read else {
            panic!("a damaged port must not read: {read:?}");
        };
        assert!(message.contains("stored email 'settings'"), "{message}");
    }

    #[test]
    fn settings_keep_the_relay_they_were_made_from() {
        let relay =
            Relay::parse("smtp://user:secret@smtp.example.com:2525", true).expect("a relay URL");
        let settings = EmailSettings::new(relay.clone(), Some("links.example.com".into()), None);
        let json = serde_json::to_value(&settings).expect("encodes");
        let back: EmailSettings = decode(kinds::EMAIL, "settings", json).expect("decodes");
        assert_eq!(back.relay(), relay);
        assert_eq!(back.tracking_domain.as_deref(), Some("links.example.com"));
    }
}
