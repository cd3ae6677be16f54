//! Where each user of a canvas is: an entry (`canvas-entry`, by `{canvas_id}/{entry id}`, so a
//! canvas's users are one prefix) and beside it a due index (`canvas-due`, by
//! `{wake_at:016}/{canvas_id}/{entry id}`) written and removed in the same commits, so that who
//! is due is a range scan, never a scan of every waiting user. Entering is a
//! commit like any send's: the 2xx means the users are in the canvas.

use std::sync::Arc;

use eddy_model::currents::OutboxEvent;
use eddy_model::profile::Profile;
use eddy_model::time;
use eddy_store::{ObjectWrite, Workspace};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Canvas, StepKind, entry_properties, time_of_day};
use crate::engine::Engine;
use crate::send::{TriggerRecipient, TriggerRequest};
use crate::{MessagingError, kinds, records};

/// Entries written per commit when a broadcast enters a canvas.
const ENTER_CHUNK: usize = 512;

/// One user in one canvas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Braze's `canvas_entry_id`.
    pub id: String,
    /// The canvas.
    pub canvas_id: String,
    /// The user's internal id.
    pub profile: u32,
    /// The step the user is at.
    pub step_id: String,
    /// When the step is due, UTC ms.
    pub wake_at: i64,
    /// `canvas_entry_properties` (and `context`).
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// When the user entered, UTC ms.
    pub entered_at: i64,
}

fn due_name(wake_at: i64, entry: &str) -> String {
    format!("{:016}/{entry}", wake_at.max(0))
}

/// When a due-index name is due, and the entry (its store name) it points at.
pub(crate) fn parse_due(name: &str) -> Option<(i64, &str)> {
    let (wake, entry) = name.split_once('/')?;
    Some((wake.parse().ok()?, entry))
}

impl Entry {
    /// The entry's name in the store: under its canvas.
    pub fn name(&self) -> String {
        format!("{}/{}", self.canvas_id, self.id)
    }

    /// The writes that put the entry where it now is (and take its old due mark away).
    pub(crate) fn writes(
        &self,
        previous_wake: Option<i64>,
    ) -> Result<Vec<ObjectWrite>, MessagingError> {
        let value = serde_json::to_value(self)
            .map_err(|e| MessagingError::internal(format!("canvas entry {}: {e}", self.id)))?;
        let mut writes = Vec::with_capacity(3);
        let name = self.name();
        if let Some(previous) = previous_wake
            && previous != self.wake_at
        {
            writes.push(due_write(previous, &name, false));
        }
        writes.push(due_write(self.wake_at, &name, true));
        writes.push(ObjectWrite {
            kind: kinds::CANVAS_ENTRY.into(),
            name,
            value: Some(value),
        });
        Ok(writes)
    }

    /// The writes that take the entry out of its canvas.
    pub(crate) fn exit_writes(&self) -> Vec<ObjectWrite> {
        let name = self.name();
        vec![
            due_write(self.wake_at, &name, false),
            ObjectWrite {
                kind: kinds::CANVAS_ENTRY.into(),
                name,
                value: None,
            },
        ]
    }
}

fn due_write(wake_at: i64, entry: &str, present: bool) -> ObjectWrite {
    ObjectWrite {
        kind: kinds::CANVAS_DUE.into(),
        name: due_name(wake_at, entry),
        value: present.then(|| json!({})),
    }
}

/// When a user arriving at step `index` at `now` is due there: a delay's end (its `until` in
/// the user's time zone), or at once.
pub(crate) fn due_at(canvas: &Canvas, index: usize, now: i64, profile: Option<&Profile>) -> i64 {
    let Some(step) = canvas.steps.get(index) else {
        return now;
    };
    match &step.kind {
        StepKind::Delay {
            seconds: Some(seconds),
            ..
        } => now.saturating_add((*seconds as i64).saturating_mul(1000)),
        StepKind::Delay {
            until: Some(until), ..
        } => next_time_of_day(now, until, profile),
        _ => now,
    }
}

/// The next moment after `now` when the user's clock shows `until` (UTC without a time zone).
fn next_time_of_day(now: i64, until: &str, profile: Option<&Profile>) -> i64 {
    let Some(minutes) = time_of_day(until) else {
        return now;
    };
    let tz = profile
        .and_then(|p| p.fields.get("time_zone"))
        .and_then(Value::as_str)
        .and_then(|name| jiff::tz::TimeZone::get(name).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(at) = jiff::Timestamp::from_millisecond(now) else {
        return now;
    };
    let local = at.to_zoned(tz.clone());
    let target = jiff::civil::Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
    let Ok(target) = target else {
        return now;
    };
    for days in 0..2 {
        let Ok(date) = local.date().checked_add(jiff::Span::new().days(days)) else {
            continue;
        };
        if let Ok(zoned) = date.to_datetime(target).to_zoned(tz.clone()) {
            let ms = zoned.timestamp().as_millisecond();
            if ms > now {
                return ms;
            }
        }
    }
    now
}

/// A canvas event for one user (`users.canvas.Entry`, `users.canvasstep.Progression`, …).
pub(crate) fn canvas_event(
    event_type: &str,
    canvas: &Canvas,
    step_index: usize,
    profile: &Profile,
    app_group_id: &str,
    now: i64,
    extra: Vec<(&'static str, Value)>,
) -> OutboxEvent {
    let mut record = Map::new();
    record.insert("id".into(), json!(eddy_store::ids::event_id()));
    record.insert("user_id".into(), json!(profile.braze_id));
    if let Some(external) = &profile.external_id {
        record.insert("external_user_id".into(), json!(external));
    }
    record.insert("time".into(), json!(now.div_euclid(1000)));
    record.insert("app_group_id".into(), json!(app_group_id));
    record.insert("canvas_id".into(), json!(canvas.id));
    record.insert("canvas_name".into(), json!(canvas.name));
    // A canvas has one variant, named as Braze names a canvas's first.
    record.insert("canvas_variation_id".into(), json!(canvas.id));
    record.insert(
        "canvas_variation_name".into(),
        json!(crate::dispatch::VARIANT_NAME),
    );
    if let Some(step) = canvas.steps.get(step_index) {
        record.insert("canvas_step_id".into(), json!(step.id));
        record.insert("canvas_step_name".into(), json!(step.name));
    }
    for (name, value) in extra {
        if !value.is_null() {
            record.insert(name.into(), value);
        }
    }
    OutboxEvent {
        event_type: event_type.to_string(),
        record,
    }
}

/// How many users wait at each step of a canvas, by step id (a scan of the canvas's entries,
/// a page at a time).
pub fn waiting(
    store: &eddy_store::Store,
    ws: u32,
    canvas_id: &str,
) -> Result<std::collections::BTreeMap<String, u64>, MessagingError> {
    let prefix = format!("{canvas_id}/");
    let mut counts = std::collections::BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.objects_page(ws, kinds::CANVAS_ENTRY, &prefix, after.as_deref(), 1_000)?;
        let Some((last, _)) = page.last() else {
            return Ok(counts);
        };
        after = Some(last.clone());
        for (_, value) in page {
            if let Some(step) = value.get("step_id").and_then(Value::as_str) {
                *counts.entry(step.to_string()).or_insert(0) += 1;
            }
        }
    }
}

/// Braze's bound on canvas entry properties.
const MAX_PROPERTIES_BYTES: usize = 50 * 1024;

/// Entry properties past Braze's 50 KB are refused (each entry keeps its own).
fn check_size(properties: &Map<String, Value>) -> Result<(), MessagingError> {
    let bytes = serde_json::to_vec(properties).map_or(usize::MAX, |b| b.len());
    if bytes > MAX_PROPERTIES_BYTES {
        return Err(MessagingError::invalid(
            "canvas_entry_properties (with context) are at most 50 KB",
        ));
    }
    Ok(())
}

/// When a user arrives at a canvas's first step: now, or for a schedule in local time, that
/// wall-clock time in the user's time zone (now if it has passed).
fn arrival(now: i64, local: Option<i64>, profile: &Profile) -> i64 {
    let Some(naive) = local else {
        return now;
    };
    let zone = profile.fields.get("time_zone").and_then(Value::as_str);
    crate::engine::local_due(naive, zone).max(now)
}

/// The body of `/canvas/trigger/send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanvasTriggerRequest {
    #[serde(default)]
    pub(crate) canvas_id: Option<String>,
    #[serde(default)]
    pub(crate) send_id: Option<String>,
    #[serde(default)]
    pub(crate) canvas_entry_properties: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) context: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) broadcast: Option<bool>,
    #[serde(default)]
    pub(crate) audience: Option<Value>,
    #[serde(default)]
    pub(crate) recipients: Option<Vec<TriggerRecipient>>,
    /// Braze's old in-body key: accepted, never used (the header decides).
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

impl Engine {
    /// `/canvas/trigger/send`: the users enter the canvas at its first step, committed (with
    /// their `users.canvas.Entry` events) before the answer; answers the send's dispatch id.
    /// A repeated `send_id` enters nobody twice.
    pub async fn trigger_canvas(
        self: &Arc<Self>,
        ws: &Workspace,
        req: CanvasTriggerRequest,
    ) -> Result<String, MessagingError> {
        self.enter_canvas(ws, req, None).await
    }

    /// The canvas a trigger names, checked as a send is: it exists, is not archived, has a
    /// relay for its email, and the send id is valid.
    pub(crate) fn entered_canvas(
        &self,
        ws: &Workspace,
        req: &CanvasTriggerRequest,
    ) -> Result<Canvas, MessagingError> {
        let Some(canvas_id) = &req.canvas_id else {
            return Err(MessagingError::invalid("canvas_id is required"));
        };
        let canvas = records::canvas(self.store(), ws.id, canvas_id)?.ok_or_else(|| {
            MessagingError::invalid(format!(
                "canvas_id '{canvas_id}' is not a canvas of this workspace"
            ))
        })?;
        if canvas.archived {
            return Err(MessagingError::invalid(format!(
                "canvas '{canvas_id}' is archived"
            )));
        }
        if let Some(send_id) = &req.send_id {
            crate::send::check_send_id(Some(send_id), Some(canvas_id))?;
        }
        if canvas.sends_email() && crate::engine::relay_of(self.store(), ws.id)?.is_none() {
            return Err(MessagingError::invalid(
                "this canvas sends email and the workspace has no SMTP relay: PUT /eddy/v1/workspaces/{ws}/email first",
            ));
        }
        Ok(canvas)
    }

    /// Enters the users a trigger names; with `local`, a wall-clock time read as UTC, each
    /// user arrives at the first step at that time in their own time zone.
    pub(crate) async fn enter_canvas(
        self: &Arc<Self>,
        ws: &Workspace,
        req: CanvasTriggerRequest,
        local: Option<i64>,
    ) -> Result<String, MessagingError> {
        let canvas = self.entered_canvas(ws, &req)?;
        let shared = entry_properties(req.canvas_entry_properties.as_ref(), req.context.as_ref())
            .unwrap_or_default();
        // Each recipient's own properties travel as trigger properties through the shared
        // resolution of recipients (attributes applied first, users created if asked).
        let recipients = req.recipients.map(|list| {
            list.into_iter()
                .map(|mut r| {
                    r.trigger_properties =
                        entry_properties(r.canvas_entry_properties.as_ref(), r.context.as_ref());
                    r
                })
                .collect()
        });
        let trigger = TriggerRequest::for_canvas(req.broadcast, req.audience, recipients);
        let who = self.who_of_trigger(ws, &trigger).await?;
        // Named recipients carry their own properties; an audience's members share the
        // request's (`None`), so a broadcast holds ids, not a copy of them per user.
        let members: Vec<(u32, Option<Map<String, Value>>)> = match (who.explicit, who.bitmap) {
            (Some(list), _) => list
                .into_iter()
                .map(|r| {
                    let mut properties = shared.clone();
                    for (k, v) in r.trigger_properties.into_iter().flatten() {
                        properties.insert(k, v);
                    }
                    (r.id, Some(properties))
                })
                .collect(),
            (None, Some(bitmap)) => bitmap.iter().map(|id| (id, None)).collect(),
            (None, None) => Vec::new(),
        };
        check_size(&shared)?;
        for properties in members.iter().filter_map(|(_, p)| p.as_ref()) {
            check_size(properties)?;
        }
        let dispatch_id = eddy_store::ids::id_hex(24);
        for chunk in members.chunks(ENTER_CHUNK) {
            self.enter(ws, &canvas, req.send_id.as_deref(), chunk, &shared, local)
                .await?;
        }
        self.wake();
        Ok(dispatch_id)
    }

    /// Writes one chunk of entries at the canvas's first step, in one commit.
    async fn enter(
        &self,
        ws: &Workspace,
        canvas: &Canvas,
        send_id: Option<&str>,
        members: &[(u32, Option<Map<String, Value>>)],
        shared: &Map<String, Value>,
        local: Option<i64>,
    ) -> Result<(), MessagingError> {
        let now = time::now_ms();
        let mut writes = Vec::with_capacity(members.len() * 3);
        let mut events = Vec::with_capacity(members.len());
        for (profile_id, properties) in members {
            if let Some(send_id) = send_id {
                let sent = format!("{}/{send_id}/{profile_id}", canvas.id);
                if self
                    .store()
                    .object(ws.id, kinds::CANVAS_SENT, &sent)?
                    .is_some()
                {
                    continue;
                }
                writes.push(ObjectWrite {
                    kind: kinds::CANVAS_SENT.into(),
                    name: sent,
                    value: Some(json!({"at": now})),
                });
            }
            let Some(profile) = self.store().profile(ws.id, *profile_id)? else {
                continue;
            };
            let entry = Entry {
                id: eddy_store::ids::uuid_v4(),
                canvas_id: canvas.id.clone(),
                profile: *profile_id,
                step_id: canvas.steps[0].id.clone(),
                wake_at: due_at(canvas, 0, arrival(now, local, &profile), Some(&profile)),
                properties: properties.clone().unwrap_or_else(|| shared.clone()),
                entered_at: now,
            };
            if let Some(longest) = canvas
                .conversion_events
                .iter()
                .map(|c| c.window_seconds)
                .max()
            {
                writes.push(ObjectWrite {
                    kind: kinds::CANVAS_CONVERTIBLE.into(),
                    name: format!("{profile_id:010}/{}/{}", canvas.id, entry.id),
                    value: Some(json!({"at": now, "until": now.saturating_add(longest.saturating_mul(1000))})),
                });
            }
            events.push(canvas_event(
                "users.canvas.Entry",
                canvas,
                0,
                &profile,
                &ws.app_group_id,
                now,
                vec![("in_control_group", json!(false))],
            ));
            writes.extend(entry.writes(None)?);
        }
        if events.is_empty() {
            // Nobody entered (all already had, or are gone); what marks exist are kept.
            if !writes.is_empty() {
                self.store().record(ws.id, writes, events).await?;
            }
            return Ok(());
        }
        let day = time::utc_day(now);
        let counts = vec![super::stats::entries_count(&canvas.id, &day, events.len())];
        self.store()
            .record_counted(ws.id, writes, events, counts)
            .await?;
        Ok(())
    }
}
