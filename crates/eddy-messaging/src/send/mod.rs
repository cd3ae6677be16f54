//! The send service: a Braze send request in, a committed [`Dispatch`] out. It checks the
//! request, resolves who it names (identifiers, a segment, a connected audience, everyone),
//! builds the dispatch and commits it; the engine delivers it from there, across restarts.
//! HTTP handlers only parse, call and answer.
//!
//! - [`request`]: the bodies, read strictly.
//! - [`recipients`]: who a request names, as profiles or a bitmap of the audience now.
//! - [`schedule`]: schedule times, and changing or deleting a scheduled send.

mod recipients;
mod request;
mod schedule;

use std::sync::Arc;

use eddy_model::time;
use eddy_store::Workspace;
use serde_json::json;

use crate::MessagingError;
use crate::campaign::{Campaign, Messages};
use crate::dispatch::{Audience, Dispatch};
use crate::engine::{Engine, relay_of};
use crate::{kinds, library};
use recipients::Who;

pub use request::{
    Schedule, ScheduleChange, SendRequest, TransactionalRequest, TriggerRecipient, TriggerRequest,
};
pub use schedule::ScheduledSend;
pub(crate) use schedule::send_at;

/// Recipients named in one request, at most (Braze's limit).
const MAX_RECIPIENTS: usize = 50;

/// How long an `external_send_id` is remembered.
const EXTERNAL_SEND_TTL_MS: i64 = 24 * 3_600_000;

/// Whether a request sends now or at its `schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// `…/send`: a `schedule` is refused.
    Now,
    /// `…/schedule/create`: a `schedule` is required.
    Scheduled,
}

/// What a transactional send answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transactional {
    /// The dispatch (the first one, for a repeated `external_send_id`).
    pub dispatch_id: String,
    /// The `external_send_id` it was given.
    pub external_send_id: Option<String>,
}

impl Engine {
    /// `/messages/send` and `/messages/schedule/create`: the dispatch, committed and handed to
    /// delivery.
    pub async fn send_messages(
        self: &Arc<Self>,
        ws: &Workspace,
        req: SendRequest,
        when: When,
    ) -> Result<Dispatch, MessagingError> {
        check_when(req.schedule.as_ref(), when, "/messages/schedule/create")?;
        let Some(messages) = &req.messages else {
            return Err(MessagingError::invalid("'messages' is required"));
        };
        let messages = Messages::from_json(&library::with_email_template(
            self.store(),
            ws.id,
            messages,
        )?)?;
        check_send_id(req.send_id.as_deref(), req.campaign_id.as_deref())?;
        self.check_relay(ws.id, &messages)?;
        let campaign = match &req.campaign_id {
            Some(id) => Some(self.campaign(ws.id, id)?),
            None => None,
        };
        let who = self.who_of_send(ws.id, &req).await?;
        let broadcast = who.broadcast;
        let mut dispatch = Dispatch::new("api", messages, who.into_audience()?, time::now_ms());
        if let Some(campaign) = &campaign {
            dispatch.apply_campaign(campaign);
        }
        dispatch.broadcast = broadcast;
        dispatch.send_id = req.send_id.clone();
        dispatch.recipient_subscription_state =
            subscription_state(req.recipient_subscription_state.as_deref())?;
        self.commit_send(ws, dispatch, req.schedule.as_ref()).await
    }

    /// `/campaigns/trigger/send` and `/campaigns/trigger/schedule/create`.
    pub async fn send_trigger(
        self: &Arc<Self>,
        ws: &Workspace,
        req: TriggerRequest,
        when: When,
    ) -> Result<Dispatch, MessagingError> {
        check_when(
            req.schedule.as_ref(),
            when,
            "/campaigns/trigger/schedule/create",
        )?;
        let Some(campaign_id) = &req.campaign_id else {
            return Err(MessagingError::invalid("campaign_id is required"));
        };
        let campaign = self.campaign(ws.id, campaign_id)?;
        if campaign.archived {
            return Err(MessagingError::invalid(format!(
                "campaign '{campaign_id}' is archived"
            )));
        }
        check_send_id(req.send_id.as_deref(), Some(campaign_id))?;
        self.check_relay(ws.id, &campaign.messages)?;
        let who = self.who_of_trigger(ws, &req).await?;
        let broadcast = who.broadcast;
        let mut dispatch = Dispatch::new(
            "trigger",
            campaign.messages.clone(),
            who.into_audience()?,
            time::now_ms(),
        );
        dispatch.apply_campaign(&campaign);
        dispatch.broadcast = broadcast;
        dispatch.send_id = req.send_id.clone();
        dispatch.trigger_properties = req.trigger_properties.clone().unwrap_or_default();
        self.commit_send(ws, dispatch, req.schedule.as_ref()).await
    }

    /// Schedules the dispatch when asked, commits it and hands it to delivery.
    async fn commit_send(
        self: &Arc<Self>,
        ws: &Workspace,
        mut dispatch: Dispatch,
        schedule: Option<&Schedule>,
    ) -> Result<Dispatch, MessagingError> {
        schedule::apply(&mut dispatch, schedule)?;
        self.accept(ws, dispatch.clone()).await?;
        Ok(dispatch)
    }

    /// `/transactional/v1/campaigns/{campaign_id}/send`: a repeated `external_send_id` within
    /// 24 h answers the first dispatch and sends nothing.
    pub async fn send_transactional(
        self: &Arc<Self>,
        ws: &Workspace,
        campaign_id: &str,
        req: TransactionalRequest,
    ) -> Result<Transactional, MessagingError> {
        let campaign = self.campaign(ws.id, campaign_id)?;
        if let Some(external) = &req.external_send_id {
            check_external_send_id(external)?;
            let key = format!("{campaign_id}/{external}");
            if let Some(seen) = self.store().object(ws.id, kinds::EXTERNAL_SEND, &key)?
                && let Some(at) = seen["at"].as_i64()
                && time::now_ms() - at < EXTERNAL_SEND_TTL_MS
            {
                let Some(dispatch_id) = seen["dispatch_id"].as_str() else {
                    return Err(MessagingError::internal(format!(
                        "stored external send '{key}' has no dispatch_id"
                    )));
                };
                return Ok(Transactional {
                    dispatch_id: dispatch_id.to_string(),
                    external_send_id: Some(external.clone()),
                });
            }
        }
        self.check_relay(ws.id, &campaign.messages)?;
        let recipients = self
            .trigger_recipients(ws, std::slice::from_ref(&req.recipient))
            .await?;
        let now = time::now_ms();
        let mut dispatch = Dispatch::new(
            "transactional",
            campaign.messages.clone(),
            Audience::Recipients(recipients),
            now,
        );
        dispatch.apply_campaign(&campaign);
        // Transactional email is sent whatever the marketing subscription state (Braze's rule).
        dispatch.recipient_subscription_state = "all".into();
        dispatch.control_group_percent = 0;
        dispatch.trigger_properties = req.trigger_properties.clone().unwrap_or_default();
        let dispatch_id = dispatch.id.clone();
        if let Some(external) = &req.external_send_id {
            self.store()
                .put_object(
                    ws.id,
                    kinds::EXTERNAL_SEND,
                    format!("{campaign_id}/{external}"),
                    json!({"dispatch_id": dispatch_id, "at": now}),
                )
                .await?;
        }
        self.accept(ws, dispatch).await?;
        Ok(Transactional {
            dispatch_id,
            external_send_id: req.external_send_id,
        })
    }

    /// A campaign of the workspace; a stored one that no longer reads is an internal failure.
    pub fn campaign(&self, ws: u32, id: &str) -> Result<Campaign, MessagingError> {
        crate::records::campaign(self.store(), ws, id)?.ok_or_else(|| {
            MessagingError::invalid(format!(
                "campaign_id '{id}' is not a campaign of this workspace"
            ))
        })
    }

    /// Email needs the workspace's SMTP relay.
    fn check_relay(&self, ws: u32, messages: &Messages) -> Result<(), MessagingError> {
        if messages.email.is_some() && relay_of(self.store(), ws)?.is_none() {
            return Err(MessagingError::invalid(
                "this workspace has no SMTP relay: PUT /eddy/v1/workspaces/{ws}/email first",
            ));
        }
        Ok(())
    }
}

fn check_when(
    schedule: Option<&Schedule>,
    when: When,
    schedule_endpoint: &str,
) -> Result<(), MessagingError> {
    match (when, schedule) {
        (When::Now, Some(_)) => Err(MessagingError::invalid(format!(
            "'schedule' belongs to {schedule_endpoint}"
        ))),
        (When::Scheduled, None) => Err(MessagingError::invalid("'schedule' is required")),
        _ => Ok(()),
    }
}

/// A `send_id` is 1 to 64 letters, digits, `-` or `_`, and belongs to a campaign.
pub fn check_send_id(
    send_id: Option<&str>,
    campaign_id: Option<&str>,
) -> Result<(), MessagingError> {
    let Some(send_id) = send_id else {
        return Ok(());
    };
    if campaign_id.is_none() {
        return Err(MessagingError::invalid("send_id needs a campaign_id"));
    }
    let valid = !send_id.is_empty()
        && send_id.len() <= 64
        && send_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(MessagingError::invalid(
            "send_id is 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    Ok(())
}

fn check_external_send_id(external: &str) -> Result<(), MessagingError> {
    let valid = !external.is_empty()
        && external.len() <= 64
        && external
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b));
    if !valid {
        return Err(MessagingError::invalid(
            "external_send_id matches ^[a-zA-Z0-9-_+/=]+$ (at most 64 characters)",
        ));
    }
    Ok(())
}

fn subscription_state(value: Option<&str>) -> Result<String, MessagingError> {
    match value.unwrap_or("subscribed") {
        s @ ("opted_in" | "subscribed" | "all") => Ok(s.to_string()),
        other => Err(MessagingError::invalid(format!(
            "recipient_subscription_state '{other}' is not opted_in, subscribed or all"
        ))),
    }
}

impl Who {
    /// The dispatch's audience: named profiles (each once, in id order) or the bitmap.
    fn into_audience(self) -> Result<Audience, MessagingError> {
        match (self.explicit, self.bitmap) {
            (Some(mut list), _) => {
                list.sort_by_key(|r| r.id);
                list.dedup_by_key(|r| r.id);
                Ok(Audience::Recipients(list))
            }
            (None, Some(bitmap)) => Ok(Audience::Bitmap(crate::dispatch::encode_bitmap(&bitmap)?)),
            (None, None) => Ok(Audience::Recipients(Vec::new())),
        }
    }
}
