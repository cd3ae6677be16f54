//! Scheduled canvas triggers (`/canvas/trigger/schedule/create|update|delete`): the trigger is
//! kept as it was asked (`canvas-schedule`, by schedule id) and entered when due by the leader,
//! under the schedule id as its send id, so a pass cut short by a crash enters nobody twice.
//! With `in_local_time` the users are entered up to a day early, each waiting at the first step
//! until the schedule's time in their own time zone.

use std::sync::Arc;

use eddy_model::time;
use eddy_store::Workspace;
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
        put(self, ws.id, &scheduled).await?;
        Ok((scheduled.dispatch_id, scheduled.id))
    }

    /// `/canvas/trigger/schedule/update`: a new time for a schedule not yet entered.
    pub async fn reschedule_canvas(
        self: &Arc<Self>,
        ws: &Workspace,
        change: CanvasScheduleChange,
    ) -> Result<(), MessagingError> {
        let mut scheduled = self.canvas_schedule(ws.id, &change)?;
        let Some(schedule) = change.schedule else {
            return Err(MessagingError::invalid("schedule is required"));
        };
        scheduled.send_at = crate::send::send_at(&schedule)?;
        scheduled.in_local_time = schedule.in_local_time;
        put(self, ws.id, &scheduled).await
    }

    /// `/canvas/trigger/schedule/delete`: the schedule is dropped; nobody enters.
    pub async fn unschedule_canvas(
        self: &Arc<Self>,
        ws: &Workspace,
        change: CanvasScheduleChange,
    ) -> Result<(), MessagingError> {
        let scheduled = self.canvas_schedule(ws.id, &change)?;
        self.store()
            .delete_object(ws.id, kinds::CANVAS_SCHEDULE, scheduled.id)
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
        for (id, value) in self.store().objects(ws.id, kinds::CANVAS_SCHEDULE)? {
            let scheduled: CanvasSchedule = serde_json::from_value(value).map_err(|e| {
                MessagingError::internal(format!("stored canvas schedule '{id}': {e}"))
            })?;
            if scheduled.enter_at() > now {
                continue;
            }
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
                .delete_object(ws.id, kinds::CANVAS_SCHEDULE, id)
                .await?;
            ran += 1;
        }
        Ok(ran)
    }
}

async fn put(engine: &Engine, ws: u32, scheduled: &CanvasSchedule) -> Result<(), MessagingError> {
    let value = serde_json::to_value(scheduled)
        .map_err(|e| MessagingError::internal(format!("canvas schedule: {e}")))?;
    engine
        .store()
        .put_object(ws, kinds::CANVAS_SCHEDULE, scheduled.id.clone(), value)
        .await?;
    Ok(())
}
