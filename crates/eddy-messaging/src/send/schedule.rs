//! Scheduled sends: the time a `schedule` names, and changing, deleting and listing sends that
//! have not gone out yet (Braze's schedule endpoints).

use std::sync::Arc;

use eddy_model::time;
use eddy_store::{Workspace, ids};

use super::{Schedule, ScheduleChange};
use crate::MessagingError;
use crate::campaign::Messages;
use crate::dispatch::{Dispatch, State};
use crate::engine::Engine;
use crate::{kinds, library};

/// A send waiting for its time, with its campaign's tags.
#[derive(Debug, Clone)]
pub struct ScheduledSend {
    /// The dispatch.
    pub dispatch: Dispatch,
    /// Its campaign's tags (none for an API send, or a campaign deleted since).
    pub tags: Vec<String>,
}

/// Makes the dispatch wait for the schedule's time, under a new schedule id.
pub(super) fn apply(
    dispatch: &mut Dispatch,
    schedule: Option<&Schedule>,
) -> Result<(), MessagingError> {
    let Some(schedule) = schedule else {
        return Ok(());
    };
    dispatch.send_at = send_at(schedule)?;
    dispatch.in_local_time = schedule.in_local_time;
    dispatch.schedule_id = Some(ids::uuid_v4());
    dispatch.state = State::Scheduled;
    Ok(())
}

/// The UTC ms a schedule names; for `in_local_time`, the wall-clock time read as UTC (each
/// recipient's zone shifts it when sent).
pub(crate) fn send_at(schedule: &Schedule) -> Result<i64, MessagingError> {
    if schedule.at_optimal_time {
        return Err(MessagingError::invalid(
            "at_optimal_time needs Intelligent Delivery, which eddy does not have; use in_local_time or a time",
        ));
    }
    let ms = if schedule.in_local_time {
        let civil: Option<jiff::civil::DateTime> = schedule
            .time
            .get(..19)
            .and_then(|t| t.replace(' ', "T").parse().ok());
        civil
            .and_then(|c| c.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp().as_millisecond())
    } else {
        time::parse_time(&schedule.time)
    };
    ms.ok_or_else(|| {
        MessagingError::invalid(format!(
            "schedule.time '{}' is not an ISO 8601 time",
            schedule.time
        ))
    })
}

impl Engine {
    /// `…/schedule/update`: a new time and/or new messages for a send not sent yet.
    pub async fn update_schedule(
        &self,
        ws: &Workspace,
        change: ScheduleChange,
    ) -> Result<(), MessagingError> {
        let mut dispatch =
            self.scheduled(ws.id, &change.schedule_id, change.campaign_id.as_deref())?;
        if let Some(schedule) = &change.schedule {
            dispatch.send_at = send_at(schedule)?;
            dispatch.in_local_time = schedule.in_local_time;
        }
        if let Some(messages) = &change.messages {
            if dispatch.campaign_id.is_some() && dispatch.kind == "trigger" {
                return Err(MessagingError::invalid(
                    "a campaign's scheduled trigger takes its messages from the campaign",
                ));
            }
            dispatch.messages = Messages::from_json(&library::with_email_template(
                self.store(),
                ws.id,
                messages,
            )?)?;
        }
        self.save_schedule(ws.id, &dispatch).await
    }

    /// `…/schedule/delete`: the send is cancelled; the engine carries the cancellation out if
    /// the schedule turned due meanwhile.
    pub async fn delete_schedule(
        self: &Arc<Self>,
        ws: &Workspace,
        change: ScheduleChange,
    ) -> Result<(), MessagingError> {
        let mut dispatch =
            self.scheduled(ws.id, &change.schedule_id, change.campaign_id.as_deref())?;
        self.request_cancel(ws.id, &dispatch.id).await?;
        dispatch.state = State::Cancelled;
        self.save_schedule(ws.id, &dispatch).await
    }

    /// `/messages/scheduled_broadcasts`: sends scheduled up to `end_ms`, soonest first.
    pub fn scheduled_sends(
        &self,
        ws: u32,
        end_ms: i64,
    ) -> Result<Vec<ScheduledSend>, MessagingError> {
        let mut out = Vec::new();
        // Several sends of one campaign read its tags once.
        let mut tags_of: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for (schedule_id, entry) in self.store().objects(ws, kinds::SCHEDULE)? {
            let dispatch = self.dispatch_of_schedule(ws, &schedule_id, &entry)?;
            let Some(dispatch) = dispatch else {
                continue;
            };
            if dispatch.state != State::Scheduled || dispatch.send_at > end_ms {
                continue;
            }
            let tags = match &dispatch.campaign_id {
                Some(id) => match tags_of.get(id) {
                    Some(tags) => tags.clone(),
                    None => {
                        let tags = crate::records::campaign(self.store(), ws, id)?
                            .map(|campaign| campaign.tags)
                            .unwrap_or_default();
                        tags_of.insert(id.clone(), tags.clone());
                        tags
                    }
                },
                None => Vec::new(),
            };
            out.push(ScheduledSend { dispatch, tags });
        }
        out.sort_by_key(|s| s.dispatch.send_at);
        Ok(out)
    }

    /// The dispatch of a schedule that has not been sent or deleted.
    fn scheduled(
        &self,
        ws: u32,
        schedule_id: &str,
        campaign_id: Option<&str>,
    ) -> Result<Dispatch, MessagingError> {
        let not_found = || MessagingError::NotFound(format!("schedule '{schedule_id}'"));
        let entry = self
            .store()
            .object(ws, kinds::SCHEDULE, schedule_id)?
            .ok_or_else(not_found)?;
        let dispatch = self
            .dispatch_of_schedule(ws, schedule_id, &entry)?
            .ok_or_else(not_found)?;
        if campaign_id.is_some() && dispatch.campaign_id.as_deref() != campaign_id {
            return Err(not_found());
        }
        if dispatch.state != State::Scheduled {
            return Err(MessagingError::invalid(format!(
                "schedule '{schedule_id}' has already been sent or deleted"
            )));
        }
        Ok(dispatch)
    }

    /// The dispatch a schedule entry names (`None` once the dispatch has expired).
    fn dispatch_of_schedule(
        &self,
        ws: u32,
        schedule_id: &str,
        entry: &serde_json::Value,
    ) -> Result<Option<Dispatch>, MessagingError> {
        let Some(dispatch_id) = entry["dispatch_id"].as_str() else {
            return Err(MessagingError::internal(format!(
                "stored schedule '{schedule_id}' has no dispatch_id"
            )));
        };
        crate::records::dispatch(self.store(), ws, dispatch_id)
    }

    /// Commits a changed dispatch and wakes the scheduler.
    async fn save_schedule(&self, ws: u32, dispatch: &Dispatch) -> Result<(), MessagingError> {
        self.store()
            .record(ws, dispatch.writes()?, Vec::new())
            .await?;
        self.wake();
        Ok(())
    }
}
