//! Canvas: linear journeys with branches (`docs/canvas.md`). A canvas is a list of steps —
//! a message (the campaign message objects), a delay (seconds, or until a time of day in the
//! user's time zone), an audience split (users who match a segment filter go on, the others
//! exit) — that users enter through `/canvas/trigger/send` and move along on the leader.
//!
//! - this file: the definition and its checks;
//! - [`entries`]: where each user is (an entry, and a due index by wake time) and entering;
//! - [`run`]: the leader moving due users, a step at a time, each move one commit.
//! - [`schedule`]: scheduled triggers, entered by the leader when due.
//! - [`stats`]: entries and sends per day, for Braze's canvas analytics.

pub mod entries;
pub mod run;
pub mod schedule;
pub mod stats;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::MessagingError;
use crate::campaign::{ConversionEvent, Messages, check_conversion_events};

/// Steps a canvas may have.
const MAX_STEPS: usize = 50;

/// Longest delay: a year.
const MAX_DELAY_SECONDS: u64 = 366 * 24 * 3600;

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    /// Sends these messages.
    Message {
        /// The campaign message objects.
        messages: Box<Messages>,
    },
    /// Waits `seconds`, or until the next `until` (`HH:MM`) in the user's time zone.
    Delay {
        /// Seconds to wait.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// A time of day.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// Users matching the filter go on; the others exit.
    Split {
        /// A segment filter (as segments take it).
        filter: Value,
    },
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Stable across edits (Braze's `canvas_step_id`).
    pub id: String,
    /// Its name (`canvas.step_name` in Liquid).
    pub name: String,
    /// What it does.
    #[serde(flatten)]
    pub kind: StepKind,
}

/// A canvas as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canvas {
    /// `canvas_id`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Email only to members of this group.
    #[serde(default)]
    pub subscription_group_id: Option<String>,
    /// What counts as converting after entry (as a campaign's conversion events).
    #[serde(default)]
    pub conversion_events: Vec<ConversionEvent>,
    /// Archived canvases take no new entries.
    #[serde(default)]
    pub archived: bool,
    /// Creation time, UTC ms.
    pub created_at: i64,
    /// Last edit, UTC ms.
    pub updated_at: i64,
}

impl Canvas {
    /// The index of a step by id.
    pub fn position(&self, step_id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == step_id)
    }

    /// Whether a step sends email (the workspace then needs a relay).
    pub fn sends_email(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(&s.kind, StepKind::Message { messages } if messages.email.is_some()))
    }
}

/// A canvas as the admin API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanvasInput {
    /// Name (1 to 255 characters).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Steps, each `{"type", "name"?, "id"?, …}`.
    pub steps: Vec<Value>,
    /// Subscription group of its email.
    #[serde(default)]
    pub subscription_group_id: Option<String>,
    /// Conversion events, as campaigns take them.
    #[serde(default)]
    pub conversion_events: Vec<ConversionEvent>,
    /// Archived.
    #[serde(default)]
    pub archived: bool,
}

impl CanvasInput {
    /// Checks the definition and builds the stored canvas; an edit keeps the ids of the steps
    /// it names by id, so users waiting in them stay where they are.
    pub fn into_canvas(
        self,
        id: String,
        existing: Option<&Canvas>,
        now: i64,
    ) -> Result<Canvas, MessagingError> {
        if self.name.trim().is_empty() || self.name.len() > 255 {
            return Err(MessagingError::invalid("'name' is 1 to 255 characters"));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(MessagingError::invalid(format!(
                "'steps' holds 1 to {MAX_STEPS} steps"
            )));
        }
        check_conversion_events(&self.conversion_events, "canvas")?;
        let mut steps = Vec::with_capacity(self.steps.len());
        for (index, value) in self.steps.iter().enumerate() {
            let step = read_step(index, value, existing)?;
            if steps.iter().any(|s: &Step| s.id == step.id) {
                return Err(MessagingError::invalid(format!(
                    "steps[{index}]: the step id '{}' is used twice",
                    step.id
                )));
            }
            steps.push(step);
        }
        Ok(Canvas {
            id,
            name: self.name,
            description: self.description,
            tags: self.tags,
            steps,
            subscription_group_id: self.subscription_group_id,
            conversion_events: self.conversion_events,
            archived: self.archived,
            created_at: existing.map_or(now, |c| c.created_at),
            updated_at: now,
        })
    }
}

/// One step of the input, checked.
fn read_step(
    index: usize,
    value: &Value,
    existing: Option<&Canvas>,
) -> Result<Step, MessagingError> {
    let at = |text: String| MessagingError::invalid(format!("steps[{index}]: {text}"));
    let Value::Object(map) = value else {
        return Err(at("a step is an object".into()));
    };
    let known = [
        "type", "name", "id", "messages", "seconds", "until", "filter",
    ];
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(at(format!("'{unknown}' is not a field of a step")));
    }
    let kind = match map.get("type").and_then(Value::as_str) {
        Some("message") => {
            let messages = map
                .get("messages")
                .ok_or_else(|| at("a message step needs 'messages'".into()))?;
            StepKind::Message {
                messages: Box::new(Messages::from_json(messages).map_err(|e| at(e.to_string()))?),
            }
        }
        Some("delay") => {
            let seconds = map.get("seconds").map(|s| {
                s.as_u64()
                    .filter(|s| *s <= MAX_DELAY_SECONDS)
                    .ok_or_else(|| {
                        at(format!(
                            "'seconds' is a whole number up to {MAX_DELAY_SECONDS}"
                        ))
                    })
            });
            let until = map.get("until").map(|u| {
                u.as_str()
                    .filter(|u| time_of_day(u).is_some())
                    .map(str::to_string)
                    .ok_or_else(|| at("'until' is a time of day, \"HH:MM\"".into()))
            });
            match (seconds.transpose()?, until.transpose()?) {
                (Some(seconds), None) => StepKind::Delay {
                    seconds: Some(seconds),
                    until: None,
                },
                (None, Some(until)) => StepKind::Delay {
                    seconds: None,
                    until: Some(until),
                },
                _ => {
                    return Err(at(
                        "a delay step has 'seconds' or 'until', one of them".into()
                    ));
                }
            }
        }
        Some("split") => {
            let filter = map
                .get("filter")
                .ok_or_else(|| at("a split step needs 'filter'".into()))?;
            eddy_segments::Filter::parse(filter).map_err(|e| at(e.to_string()))?;
            StepKind::Split {
                filter: filter.clone(),
            }
        }
        _ => return Err(at("'type' is message, delay or split".into())),
    };
    let id = match map.get("id") {
        None => eddy_store::ids::uuid_v4(),
        Some(Value::String(id)) => {
            let known = existing.is_some_and(|c| c.position(id).is_some());
            if !known {
                return Err(at(format!(
                    "'{id}' is not a step of this canvas (leave 'id' out for a new step)"
                )));
            }
            id.clone()
        }
        Some(_) => return Err(at("'id' is a string".into())),
    };
    let name = match map.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        None => format!("Step {}", index + 1),
        Some(_) => return Err(at("'name' is a non-empty string".into())),
    };
    Ok(Step { id, name, kind })
}

/// `HH:MM` as minutes past midnight.
pub fn time_of_day(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
}

/// The entry properties of a trigger: `canvas_entry_properties`, then `context` (Braze's newer
/// name) over them.
pub fn entry_properties(
    canvas_entry_properties: Option<&Map<String, Value>>,
    context: Option<&Map<String, Value>>,
) -> Option<Map<String, Value>> {
    if canvas_entry_properties.is_none() && context.is_none() {
        return None;
    }
    let mut properties = canvas_entry_properties.cloned().unwrap_or_default();
    for (k, v) in context.into_iter().flatten() {
        properties.insert(k.clone(), v.clone());
    }
    Some(properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(steps: Value) -> CanvasInput {
        serde_json::from_value(json!({"name": "Onboarding", "steps": steps})).unwrap()
    }

    #[test]
    fn steps_are_checked_and_edits_keep_their_ids() {
        let canvas = input(json!([
            {"type": "message", "name": "Welcome", "messages": {"webhook": {"url": "https://example.com/w"}}},
            {"type": "delay", "seconds": 2},
            {"type": "split", "filter": {"attribute": "plan", "op": "equals", "value": "gold"}},
            {"type": "delay", "until": "09:30"}
        ]))
        .into_canvas("c1".into(), None, 1)
        .unwrap();
        assert_eq!(canvas.steps[1].name, "Step 2");
        assert_eq!(canvas.steps[0].name, "Welcome");
        let kept = canvas.steps[2].id.clone();
        let edited = input(json!([
            {"type": "split", "id": kept, "filter": {"attribute": "plan", "op": "equals", "value": "gold"}},
            {"type": "message", "messages": {"webhook": {"url": "https://example.com/x"}}}
        ]))
        .into_canvas("c1".into(), Some(&canvas), 2)
        .unwrap();
        assert_eq!(edited.steps[0].id, kept);
        assert_eq!(edited.created_at, 1);
        let refused = |steps: Value| {
            input(steps)
                .into_canvas("c".into(), Some(&canvas), 3)
                .unwrap_err()
                .to_string()
        };
        assert!(refused(json!([])).contains("1 to 50"));
        assert!(refused(json!([{"type": "wait"}])).contains("message, delay or split"));
        assert!(refused(json!([{"type": "delay"}])).contains("'seconds' or 'until'"));
        assert!(refused(json!([{"type": "delay", "until": "25:00"}])).contains("time of day"));
        assert!(refused(json!([{"type": "split", "filter": {"op": "x"}}])).contains("steps[0]"));
        assert!(refused(json!([{"type": "message", "messages": {"sms": {}}}])).contains("sms"));
        assert!(
            refused(json!([{"type": "delay", "seconds": 1, "id": "nope"}])).contains("not a step")
        );
        assert!(refused(json!([{"type": "delay", "seconds": 1, "wait": 2}])).contains("'wait'"));
    }

    #[test]
    fn context_is_read_over_canvas_entry_properties() {
        let older = json!({"a": 1, "b": 1});
        let newer = json!({"b": 2});
        let merged = entry_properties(older.as_object(), newer.as_object()).unwrap();
        assert_eq!(Value::Object(merged), json!({"a": 1, "b": 2}));
        assert_eq!(entry_properties(None, None), None);
        assert_eq!(time_of_day("09:05"), Some(545));
        assert_eq!(time_of_day("9:05"), None);
    }
}
