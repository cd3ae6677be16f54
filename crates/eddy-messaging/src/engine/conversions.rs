//! Conversions: a tracked event or purchase that matches a campaign's conversion events
//! within its window after a send reached the user, found through the index of messages that
//! may still convert.

use super::*;

impl Engine {
    /// Re-reads whether a workspace has campaigns or canvases with conversion events.
    pub fn campaigns_changed(&self, ws: u32) -> Result<(), MessagingError> {
        let any = crate::records::campaigns(&self.store, ws)?
            .iter()
            .any(|campaign| !campaign.conversion_events.is_empty())
            || crate::records::canvases(&self.store, ws)?
                .iter()
                .any(|canvas| !canvas.conversion_events.is_empty());
        let mut converting = self.converting.lock().unwrap_or_else(|p| p.into_inner());
        if any {
            converting.insert(ws);
        } else {
            converting.remove(&ws);
        }
        Ok(())
    }

    /// Whether tracked events of a workspace can convert (it has campaigns with conversion
    /// events); `/users/track` asks before collecting them.
    pub fn watches_conversions(&self, ws: u32) -> bool {
        self.converting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ws)
    }

    /// Records `users.campaigns.Conversion` for tracked behaviours that follow a message of a
    /// campaign with a matching conversion event, within its window; once per recipient and
    /// send, in the commit that marks the send converted.
    pub async fn conversions(
        &self,
        ws: &Workspace,
        behaviours: &[Behaviour],
    ) -> Result<usize, MessagingError> {
        if !self.watches_conversions(ws.id) {
            return Ok(0);
        }
        let mut writes: HashMap<String, Map<String, Value>> = HashMap::new();
        let mut settled: Vec<String> = Vec::new();
        let mut events = Vec::new();
        for behaviour in behaviours {
            let Some((id, profile)) = self.store.find(ws.id, &behaviour.ident)? else {
                continue;
            };
            // Only the messages that may still convert are read, whatever the history's size.
            let prefix = format!("{id:010}/");
            for (name, index) in
                self.store
                    .objects_page(ws.id, kinds::CONVERTIBLE, &prefix, None, usize::MAX)?
            {
                let until = index["until"].as_i64().unwrap_or(i64::MAX);
                if until < eddy_model::time::now_ms() {
                    settled.push(name);
                    continue;
                }
                let record = match writes.entry(name) {
                    std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        match self.store.object(ws.id, kinds::MESSAGE, slot.key())? {
                            Some(Value::Object(stored)) => slot.insert(stored),
                            _ => {
                                settled.push(slot.key().clone());
                                continue;
                            }
                        }
                    }
                };
                let Some(found) = conversion_of(record, behaviour) else {
                    continue;
                };
                record.insert("converted_at".into(), json!(behaviour.time_ms));
                let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_string);
                let context = Context {
                    send_id: text("send_id"),
                    campaign_id: text("campaign_id"),
                    campaign_name: text("campaign_name"),
                    ..Context::of(
                        &profile,
                        &ws.app_group_id,
                        text("dispatch_id").unwrap_or_default(),
                    )
                };
                let variation = found
                    .channel
                    .and_then(|c| campaign::variation_id(context.campaign_id.as_deref(), c, None));
                events.push(context.event(
                    "users.campaigns.Conversion".into(),
                    behaviour.time_ms,
                    variation.as_deref(),
                    vec![
                        ("conversion_behavior_index", json!(found.index)),
                        ("conversion_behavior", json!(found.behaviour.to_string())),
                        ("app_id", json!(behaviour.app_id)),
                    ],
                ));
            }
        }
        let (canvas_marks, canvas_events, counts) = self.canvas_conversions(ws, behaviours)?;
        events.extend(canvas_events);
        let converted: Vec<(String, Map<String, Value>)> = writes
            .into_iter()
            .filter(|(_, r)| r.contains_key("converted_at"))
            .collect();
        if converted.is_empty() && settled.is_empty() && canvas_marks.is_empty() {
            return Ok(0);
        }
        // A converted or expired message leaves the index with the conversion's commit.
        let mut objects = Vec::with_capacity(converted.len() * 2 + settled.len());
        objects.extend(canvas_marks);
        for name in settled {
            objects.push(ObjectWrite {
                kind: kinds::CONVERTIBLE.into(),
                name,
                value: None,
            });
        }
        for (name, record) in converted {
            objects.push(ObjectWrite {
                kind: kinds::CONVERTIBLE.into(),
                name: name.clone(),
                value: None,
            });
            objects.push(ObjectWrite {
                kind: kinds::MESSAGE.into(),
                name,
                value: Some(Value::Object(record)),
            });
        }
        Ok(self
            .store
            .record_counted(ws.id, objects, events, counts)
            .await?)
    }

    /// Canvas conversions of tracked behaviours: each entry that may still convert and whose
    /// canvas has a matching conversion event within its window after entry gets one
    /// `users.canvas.Conversion`, counted on the day it happened and the day of entry. Answers
    /// the marks that leave the index (converted or expired), the events and the counts.
    fn canvas_conversions(
        &self,
        ws: &Workspace,
        behaviours: &[Behaviour],
    ) -> Result<CanvasConversions, MessagingError> {
        let mut marks = Vec::new();
        let mut events = Vec::new();
        let mut counts = Vec::new();
        let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut canvases: HashMap<String, Option<crate::canvas::Canvas>> = HashMap::new();
        let now = eddy_model::time::now_ms();
        for behaviour in behaviours {
            let Some((id, profile)) = self.store.find(ws.id, &behaviour.ident)? else {
                continue;
            };
            let prefix = format!("{id:010}/");
            for (name, mark) in self.store.objects_page(
                ws.id,
                kinds::CANVAS_CONVERTIBLE,
                &prefix,
                None,
                usize::MAX,
            )? {
                if done.contains(&name) {
                    continue;
                }
                let until = mark["until"].as_i64().unwrap_or(i64::MAX);
                let at = mark["at"].as_i64().unwrap_or(0);
                let canvas_id = name.split('/').nth(1).unwrap_or_default().to_string();
                let canvas = match canvases.entry(canvas_id.clone()) {
                    std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(crate::records::canvas(&self.store, ws.id, &canvas_id)?)
                    }
                };
                let Some(canvas) = canvas.as_ref().filter(|_| until >= now) else {
                    done.insert(name.clone());
                    marks.push(ObjectWrite {
                        kind: kinds::CANVAS_CONVERTIBLE.into(),
                        name,
                        value: None,
                    });
                    continue;
                };
                let found = canvas.conversion_events.iter().enumerate().find(|(_, c)| {
                    behaviour.time_ms >= at
                        && behaviour.time_ms - at <= c.window_seconds * 1000
                        && c.matches(behaviour.event.as_deref(), behaviour.product.as_deref())
                });
                let Some((index, conversion)) = found else {
                    continue;
                };
                done.insert(name.clone());
                marks.push(ObjectWrite {
                    kind: kinds::CANVAS_CONVERTIBLE.into(),
                    name,
                    value: None,
                });
                events.push(crate::canvas::entries::canvas_event(
                    "users.canvas.Conversion",
                    canvas,
                    usize::MAX,
                    &profile,
                    &ws.app_group_id,
                    behaviour.time_ms,
                    vec![
                        ("conversion_behavior_index", json!(index)),
                        (
                            "conversion_behavior",
                            json!(json!({"type": conversion.braze_type(), "window": conversion.window_seconds}).to_string()),
                        ),
                    ],
                ));
                counts.extend(crate::canvas::stats::conversion_counts(
                    &canvas.id,
                    behaviour.time_ms,
                    at,
                ));
            }
        }
        Ok((marks, events, counts))
    }
}

/// What canvas conversions leave to commit: the marks that leave the index, the events, the
/// counts.
type CanvasConversions = (
    Vec<ObjectWrite>,
    Vec<OutboxEvent>,
    Vec<eddy_store::CountWrite>,
);

/// A tracked custom event or purchase, checked for conversions.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Who did it.
    pub ident: eddy_model::track::Identifier,
    /// The custom event's name.
    pub event: Option<String>,
    /// The purchased product.
    pub product: Option<String>,
    /// When, UTC ms.
    pub time_ms: i64,
    /// The app it came from.
    pub app_id: Option<String>,
}

pub(super) struct Found {
    pub(super) index: usize,
    pub(super) behaviour: Value,
    pub(super) channel: Option<&'static str>,
}

/// The channel by which a message record reached its recipient, if one did.
pub(super) fn reached(record: &Map<String, Value>) -> Option<&'static str> {
    let channels = record.get("channels")?.as_object()?;
    ["email", "webhook"].into_iter().find(|c| {
        let status = channels.get(*c).and_then(|v| v["status"].as_str());
        matches!(status, Some("sent" | "delivered"))
    })
}

/// Whether a behaviour converts a recipient's message record: the message reached them, the
/// record is not converted yet, and a conversion event matches within its window.
pub(super) fn conversion_of(record: &Map<String, Value>, behaviour: &Behaviour) -> Option<Found> {
    if record.contains_key("converted_at") {
        return None;
    }
    let at = record.get("at_ms")?.as_i64()?;
    let channel = reached(record)?;
    let conversions: Vec<campaign::ConversionEvent> =
        serde_json::from_value(record.get("conversion_events")?.clone()).ok()?;
    for (index, conversion) in conversions.iter().enumerate() {
        let in_window =
            behaviour.time_ms >= at && behaviour.time_ms - at <= conversion.window_seconds * 1000;
        if in_window && conversion.matches(behaviour.event.as_deref(), behaviour.product.as_deref())
        {
            let mut described =
                json!({"type": conversion.braze_type(), "window": conversion.window_seconds});
            if let Some(name) = &conversion.custom_event_name {
                described["custom_event_name"] = json!(name);
            }
            if let Some(product) = &conversion.product {
                described["product"] = json!(product);
            }
            return Some(Found {
                index,
                behaviour: described,
                channel: Some(channel),
            });
        }
    }
    None
}
