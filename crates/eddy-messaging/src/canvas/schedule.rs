//! Scheduled canvas triggers (`/canvas/trigger/schedule/create|update|delete`): the trigger is
//! kept as it was asked (`canvas-schedule`, by schedule id, with a mark in a due index by time)
//! and entered when due by the leader,
//! under the schedule id as its send id, so a pass cut short by a crash enters nobody twice.
//! With `in_local_time` the users are entered up to a day early, each waiting at the first step
//! until the schedule's time in their own time zone.

use std::sync::Arc;

use eddy_model::time;
use eddy_store::{ObjectWrite, Workspace};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::entries::CanvasTriggerRequest;
use crate::engine::Engine;
use crate::send::Schedule;
use crate::{MessagingError, kinds};

/// How early `in_local_time` schedules are entered: the widest gap between a wall-clock time
/// read as UTC and the same time in a real time zone (UTC+14).
const LOCAL_TIME_LEAD_MS: i64 = 14 * 3600 * 1000;

/// A scheduled canvas trigger, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanvasSchedule {
    /// `schedule_id`.
    pub id: String,
    /// The canvas.
    pub canvas_id: String,
    /// The `dispatch_id` the create answered.
    pub dispatch_id: String,
    /// When, UTC ms (for `in_local_time`, the wall-clock time read as UTC).
    pub send_at: i64,
    /// In each user's time zone.
    pub in_local_time: bool,
    /// The trigger body, without its schedule.
    pub request: Value,
}

impl CanvasSchedule {
    /// When the leader enters its users.
    fn enter_at(&self) -> i64 {
        if self.in_local_time {
            self.send_at - LOCAL_TIME_LEAD_MS
        } else {
            self.send_at
        }
    }
}

/// The body of `/canvas/trigger/schedule/update` and `/delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanvasScheduleChange {
    #[serde(default)]
    pub(crate) canvas_id: Option<String>,
    pub(crate) schedule_id: String,
    #[serde(default)]
    pub(crate) schedule: Option<Schedule>,
    #[serde(default, rename = "api_key")]
    _api_key: serde::de::IgnoredAny,
}

impl Engine {
    /// `/canvas/trigger/schedule/create`: checks the trigger as a send would be checked, keeps
    /// it, and answers `(dispatch_id, schedule_id)`.
    pub async fn schedule_canvas(
        self: &Arc<Self>,
        ws: &Workspace,
        mut body: Value,
    ) -> Result<(String, String), MessagingError> {
        let schedule: Schedule = match body.as_object_mut().and_then(|b| b.remove("schedule")) {
            Some(s) => serde_json::from_value(s)
                .map_err(|e| MessagingError::invalid(format!("schedule: {e}")))?,
            None => return Err(MessagingError::invalid("schedule is required")),
        };
        let send_at = crate::send::send_at(&schedule)?;
        let req: CanvasTriggerRequest = serde_json::from_value(body.clone())
            .map_err(|e| MessagingError::invalid(e.to_string()))?;
        if req.send_id.is_some() {
            return Err(MessagingError::invalid(
                "a scheduled canvas trigger is sent under its schedule_id; leave send_id out",
            ));
        }
        let canvas = self.entered_canvas(ws, &req)?;
        let scheduled = CanvasSchedule {
            id: eddy_store::ids::id_hex(16),
            canvas_id: canvas.id,
            dispatch_id: eddy_store::ids::id_hex(24),
            send_at,
            in_local_time: schedule.in_local_time,
            request: body,
        };
        put(self, ws.id, &scheduled, None).await?;
        Ok((scheduled.dispatch_id, scheduled.id))
    }

    /// `/canvas/trigger/schedule/update`: a new time for a schedule not yet entered.
    pub async fn reschedule_canvas(
        self: &Arc<Self>,
        ws: &Workspace,
        change: CanvasScheduleChange,
    ) -> Result<(), MessagingError> {
        let previous = self.canvas_schedule(ws.id, &change)?;
        let Some(schedule) = change.schedule else {
            return Err(MessagingError::invalid("schedule is required"));
        };
        let mut scheduled = previous.clone();
        scheduled.send_at = crate::send::send_at(&schedule)?;
        scheduled.in_local_time = schedule.in_local_time;
        put(self, ws.id, &scheduled, Some(&previous)).await
    }

    /// `/canvas/trigger/schedule/delete`: the schedule is dropped; nobody enters.
    pub async fn unschedule_canvas(
        self: &Arc<Self>,
        ws: &Workspace,
        change: CanvasScheduleChange,
    ) -> Result<(), MessagingError> {
        let scheduled = self.canvas_schedule(ws.id, &change)?;
        self.store()
            .record(ws.id, removal(&scheduled), Vec::new())
            .await?;
        Ok(())
    }

    fn canvas_schedule(
        &self,
        ws: u32,
        change: &CanvasScheduleChange,
    ) -> Result<CanvasSchedule, MessagingError> {
        let not_found = || {
            MessagingError::invalid(format!(
                "schedule_id '{}' is not a scheduled canvas trigger of this workspace",
                change.schedule_id
            ))
        };
        let value = self
            .store()
            .object(ws, kinds::CANVAS_SCHEDULE, &change.schedule_id)?
            .ok_or_else(not_found)?;
        let scheduled: CanvasSchedule = serde_json::from_value(value).map_err(|e| {
            MessagingError::internal(format!(
                "stored canvas schedule '{}': {e}",
                change.schedule_id
            ))
        })?;
        if change
            .canvas_id
            .as_ref()
            .is_some_and(|c| *c != scheduled.canvas_id)
        {
            return Err(not_found());
        }
        Ok(scheduled)
    }

    /// Enters the users of every schedule that is due; answers how many schedules ran.
    pub(crate) async fn enter_due_schedules(
        self: &Arc<Self>,
        ws: &Workspace,
    ) -> Result<usize, MessagingError> {
        let now = time::now_ms();
        let mut ran = 0;
        // The due index, earliest first: a second's look reads the schedules that are due, not
        // every schedule kept.
        let due = self
            .store()
            .objects_page(ws.id, kinds::CANVAS_SCHEDULE_DUE, "", None, 100)?;
        for (mark, _) in due {
            let Some((enter_at, id)) = super::entries::parse_due(&mark) else {
                return Err(MessagingError::internal(format!(
                    "canvas schedule mark '{mark}' does not read"
                )));
            };
            if enter_at > now {
                break;
            }
            let id = id.to_string();
            let Some(value) = self.store().object(ws.id, kinds::CANVAS_SCHEDULE, &id)? else {
                // Marks and schedules are written together; a lone mark is removed.
                self.store()
                    .record(ws.id, vec![due_mark(enter_at, &id, false)], Vec::new())
                    .await?;
                continue;
            };
            let scheduled: CanvasSchedule = serde_json::from_value(value).map_err(|e| {
                MessagingError::internal(format!("stored canvas schedule '{id}': {e}"))
            })?;
            let mut req: CanvasTriggerRequest = serde_json::from_value(scheduled.request.clone())
                .map_err(|e| {
                MessagingError::internal(format!("stored canvas schedule '{id}': {e}"))
            })?;
            req.send_id = Some(scheduled.id.clone());
            let local = scheduled.in_local_time.then_some(scheduled.send_at);
            // What made the trigger invalid since it was scheduled (its canvas deleted or
            // archived, the relay its email needs removed) drops it, said in the log; it is
            // not tried every second for ever.
            match self.enter_canvas(ws, req, local).await {
                Ok(_) => {}
                Err(MessagingError::Invalid(reason)) => tracing::warn!(
                    schedule_id = id,
                    canvas_id = scheduled.canvas_id,
                    reason,
                    "a scheduled canvas trigger can no longer be entered; nobody enters"
                ),
                Err(other) => return Err(other),
            }
            self.store()
                .record(ws.id, removal(&scheduled), Vec::new())
                .await?;
            ran += 1;
        }
        Ok(ran)
    }
}

/// The mark of a schedule in the due index: `{enter_at:016}/{schedule id}`.
fn due_mark(enter_at: i64, id: &str, present: bool) -> ObjectWrite {
    ObjectWrite {
        kind: kinds::CANVAS_SCHEDULE_DUE.into(),
        name: format!("{:016}/{id}", enter_at.max(0)),
        value: present.then(|| serde_json::json!({})),
    }
}

/// Saves a schedule and its due mark (moving the mark of its earlier time) in one commit.
async fn put(
    engine: &Engine,
    ws: u32,
    scheduled: &CanvasSchedule,
    previous: Option<&CanvasSchedule>,
) -> Result<(), MessagingError> {
    let value = serde_json::to_value(scheduled)
        .map_err(|e| MessagingError::internal(format!("canvas schedule: {e}")))?;
    let mut writes = Vec::with_capacity(3);
    if let Some(previous) = previous {
        writes.push(due_mark(previous.enter_at(), &previous.id, false));
    }
    writes.push(due_mark(scheduled.enter_at(), &scheduled.id, true));
    writes.push(ObjectWrite {
        kind: kinds::CANVAS_SCHEDULE.into(),
        name: scheduled.id.clone(),
        value: Some(value),
    });
    engine.store().record(ws, writes, Vec::new()).await?;
    Ok(())
}

/// The writes that drop a schedule and its mark.
fn removal(scheduled: &CanvasSchedule) -> Vec<ObjectWrite> {
    vec![
        due_mark(scheduled.enter_at(), &scheduled.id, false),
        ObjectWrite {
            kind: kinds::CANVAS_SCHEDULE.into(),
            name: scheduled.id.clone(),
            value: None,
        },
    ]
}
