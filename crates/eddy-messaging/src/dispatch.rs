//! A dispatch: one send as the store keeps it, from the request's 2xx to its last recipient.
//!
//! The audience is fixed when the request is accepted (explicit recipients, or the bitmap of a
//! segment or connected audience taken at that moment), so a restart resumes the same send.
//! Recipients are visited in ascending profile id; `next` says every id below it is settled and
//! `claimed` that ids below it may have been handed to a channel. After a crash, recipients in
//! `next..claimed` without a recorded outcome are sent again: those are the only possible
//! duplicates, and the engine counts them in `counts.resent_after_restart`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use eddy_store::ObjectWrite;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::campaign::{Campaign, ConversionEvent, Messages};
use crate::{MessagingError, kinds};

/// Who a dispatch goes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Named recipients, sorted by profile id, with their own trigger properties.
    Recipients(Vec<Recipient>),
    /// Every member of a bitmap (serialized roaring, base64).
    Bitmap(String),
}

/// One named recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    /// Internal profile id.
    pub id: u32,
    /// Per-recipient `trigger_properties`, merged over the dispatch's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_properties: Option<Map<String, Value>>,
}

/// Where a dispatch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for `send_at`.
    Scheduled,
    /// Being delivered.
    Sending,
    /// Every recipient settled.
    Done,
    /// Cancelled before every recipient was settled (deleted before it was sent, or stopped
    /// in flight); never resumed.
    Cancelled,
    /// Given up: its runs kept failing or kept being cut off without progress; `failure`
    /// says why. Never resumed.
    Failed,
}

/// How a recipient's visit ended, counted per dispatch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Handed to a channel and accepted (webhook 2xx, SMTP 2xx).
    pub sent: u64,
    /// Aborted by `abort_message` or Connected Content.
    pub aborted: u64,
    /// Webhook failures and email bounces after the last attempt.
    pub failed: u64,
    /// Held out as control.
    pub control: u64,
    /// Not eligible (no longer exists, unsubscribed, bounced, not in the group, no address).
    pub skipped: u64,
    /// Recipients in flight at a crash, sent again after the restart.
    pub resent_after_restart: u64,
    /// Recipients not sent because the send was cancelled.
    #[serde(default)]
    pub cancelled: u64,
}

/// What the sends whose records expired had counted, kept once they are gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpiredTotals {
    /// Sends removed.
    pub sends: u64,
    /// Their counts, added up.
    #[serde(flatten)]
    pub counts: Counts,
}

/// A send, durable from the request's 2xx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// `dispatch_id`.
    pub id: String,
    /// `api` (`/messages/send`), `trigger` (`/campaigns/trigger/send`) or `transactional`.
    pub kind: String,
    /// The campaign, when the send names one.
    #[serde(default)]
    pub campaign_id: Option<String>,
    /// Its name at send time.
    #[serde(default)]
    pub campaign_name: Option<String>,
    /// `send_id`.
    #[serde(default)]
    pub send_id: Option<String>,
    /// What to send.
    pub messages: Messages,
    /// `trigger_properties` of the request.
    #[serde(default)]
    pub trigger_properties: Map<String, Value>,
    /// Who.
    pub audience: Audience,
    /// `opted_in`, `subscribed` (default: subscribed or opted in) or `all`.
    pub recipient_subscription_state: String,
    /// Email only to members of this group.
    #[serde(default)]
    pub subscription_group_id: Option<String>,
    /// Share held out.
    #[serde(default)]
    pub control_group_percent: u8,
    /// Rate cap.
    #[serde(default)]
    pub messages_per_minute: Option<u32>,
    /// Conversion behaviours of the campaign, copied at send time.
    #[serde(default)]
    pub conversion_events: Vec<ConversionEvent>,
    /// When to send, UTC ms (the request time for immediate sends).
    pub send_at: i64,
    /// `send_at` is a wall-clock time in each recipient's time zone.
    #[serde(default)]
    pub in_local_time: bool,
    /// Set for scheduled sends.
    #[serde(default)]
    pub schedule_id: Option<String>,
    /// Whether the schedule targets everyone (`broadcast`).
    #[serde(default)]
    pub broadcast: bool,
    /// Life cycle.
    pub state: State,
    /// Ids below this are settled.
    #[serde(default)]
    pub next: u64,
    /// Ids below this may have been handed to a channel.
    #[serde(default)]
    pub claimed: u64,
    /// Outcomes so far.
    #[serde(default)]
    pub counts: Counts,
    /// Creation time, UTC ms.
    pub created_at: i64,
    /// When the last recipient settled, UTC ms.
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// Runs started since the last committed chunk: a dispatch whose runs keep ending
    /// without progress (an error, or the process stopping under it) is parked as failed.
    #[serde(default)]
    pub starts_without_progress: u32,
    /// Why the dispatch failed (state `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The canvas step that made this send (kind `canvas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canvas: Option<CanvasStep>,
}

/// The name of a canvas's one variant (`canvas_variation_name`, `/canvas/details`).
pub const VARIANT_NAME: &str = "Variant 1";

/// The canvas and step a canvas send comes from: its events carry them, and its Liquid sees
/// `canvas.${name}`, `canvas.${id}`, `canvas.${step_name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanvasStep {
    /// `canvas_id`.
    pub canvas_id: String,
    /// The canvas's name at send time.
    pub canvas_name: String,
    /// `canvas_step_id`.
    pub step_id: String,
    /// The step's name.
    pub step_name: String,
}

impl Dispatch {
    /// A new send of `kind` (`api`, `trigger`, `transactional`) to `audience`, sending now and
    /// to subscribed or opted-in users unless the caller changes that: a fresh id, nothing
    /// settled.
    pub fn new(kind: &str, messages: Messages, audience: Audience, now: i64) -> Dispatch {
        Dispatch {
            id: eddy_store::ids::id_hex(24),
            kind: kind.into(),
            campaign_id: None,
            campaign_name: None,
            send_id: None,
            messages,
            trigger_properties: Map::new(),
            audience,
            recipient_subscription_state: "subscribed".into(),
            subscription_group_id: None,
            control_group_percent: 0,
            messages_per_minute: None,
            conversion_events: Vec::new(),
            send_at: now,
            in_local_time: false,
            schedule_id: None,
            broadcast: false,
            state: State::Sending,
            next: 0,
            claimed: 0,
            counts: Counts::default(),
            created_at: now,
            finished_at: None,
            starts_without_progress: 0,
            failure: None,
            canvas: None,
        }
    }

    /// The store writes that save this dispatch: the record itself, the entry that finds it
    /// while it is open (resumed at start; removed once done or cancelled), and the one that
    /// finds it by its schedule id. Every save goes through here, so they always agree.
    pub fn writes(&self) -> Result<Vec<ObjectWrite>, MessagingError> {
        let value = serde_json::to_value(self)
            .map_err(|e| MessagingError::invalid(format!("dispatch {}: {e}", self.id)))?;
        let open = matches!(self.state, State::Scheduled | State::Sending);
        let mut writes = vec![
            ObjectWrite {
                kind: kinds::DISPATCH.into(),
                name: self.id.clone(),
                value: Some(value),
            },
            ObjectWrite {
                kind: kinds::OPEN_DISPATCH.into(),
                name: self.id.clone(),
                value: open.then(|| json!({})),
            },
        ];
        if let Some(schedule_id) = &self.schedule_id {
            writes.push(ObjectWrite {
                kind: kinds::SCHEDULE.into(),
                name: schedule_id.clone(),
                value: Some(json!({"dispatch_id": self.id})),
            });
        }
        Ok(writes)
    }

    /// The settings a campaign contributes to a send of it.
    pub fn apply_campaign(&mut self, campaign: &Campaign) {
        self.campaign_id = Some(campaign.id.clone());
        self.campaign_name = Some(campaign.name.clone());
        self.subscription_group_id = campaign.subscription_group_id.clone();
        self.control_group_percent = campaign.control_group_percent;
        self.messages_per_minute = campaign.messages_per_minute;
        self.conversion_events = campaign.conversion_events.clone();
    }

    /// How many recipients the audience holds.
    pub fn audience_size(&self) -> Result<u64, MessagingError> {
        Ok(match &self.audience {
            Audience::Recipients(list) => list.len() as u64,
            Audience::Bitmap(_) => self.bitmap()?.len(),
        })
    }

    /// The audience bitmap (for `Audience::Bitmap`).
    pub fn bitmap(&self) -> Result<RoaringBitmap, MessagingError> {
        match &self.audience {
            Audience::Bitmap(encoded) => decode_bitmap(encoded),
            Audience::Recipients(list) => Ok(list.iter().map(|r| r.id).collect()),
        }
    }

    /// Up to `limit` recipients with ids at or above `from`, in id order.
    pub fn recipients_from(
        &self,
        bitmap: Option<&RoaringBitmap>,
        from: u64,
        limit: usize,
    ) -> Vec<Recipient> {
        let Ok(start) = u32::try_from(from) else {
            return Vec::new();
        };
        match (&self.audience, bitmap) {
            (Audience::Recipients(list), _) => list
                .iter()
                .filter(|r| r.id >= start)
                .take(limit)
                .cloned()
                .collect(),
            (Audience::Bitmap(_), Some(bitmap)) => bitmap
                .range(start..)
                .take(limit)
                .map(|id| Recipient {
                    id,
                    trigger_properties: None,
                })
                .collect(),
            (Audience::Bitmap(_), None) => Vec::new(),
        }
    }
}

/// Serializes a bitmap for the store.
pub fn encode_bitmap(bitmap: &RoaringBitmap) -> Result<String, MessagingError> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    bitmap
        .serialize_into(&mut bytes)
        .map_err(|e| MessagingError::invalid(format!("audience: {e}")))?;
    Ok(STANDARD.encode(bytes))
}

fn decode_bitmap(encoded: &str) -> Result<RoaringBitmap, MessagingError> {
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| MessagingError::invalid(format!("stored audience: {e}")))?;
    RoaringBitmap::deserialize_from(&bytes[..])
        .map_err(|e| MessagingError::invalid(format!("stored audience: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_round_trip_and_resume_from_an_id() {
        let bitmap: RoaringBitmap = [3u32, 7, 9, 100_000].into_iter().collect();
        let encoded = encode_bitmap(&bitmap).unwrap();
        assert_eq!(decode_bitmap(&encoded).unwrap(), bitmap);
        let dispatch = Dispatch::new("api", Messages::default(), Audience::Bitmap(encoded), 0);
        let b = dispatch.bitmap().unwrap();
        let ids: Vec<u32> = dispatch
            .recipients_from(Some(&b), 8, 10)
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![9, 100_000]);
        assert_eq!(dispatch.audience_size().unwrap(), 4);
        assert!(dispatch.recipients_from(Some(&b), 1 << 32, 10).is_empty());
    }
}
