//! Who a send request names: profiles found by identifier (trigger recipients may be created or
//! updated first), or the members of a segment and/or a connected audience at request time.

use std::sync::Arc;

use eddy_model::time;
use eddy_model::track::{Identifier, normalize_email, validate_track};
use eddy_model::wire::{TrackRequest, UserAlias};
use eddy_store::Workspace;
use roaring::RoaringBitmap;
use serde_json::{Value, json};

use super::{MAX_RECIPIENTS, SendRequest, TriggerRecipient, TriggerRequest};
use crate::MessagingError;
use crate::dispatch::Recipient;
use crate::engine::Engine;

/// Who a request names, before it becomes a dispatch's audience.
pub(crate) struct Who {
    /// Named profiles (those that exist).
    pub(crate) explicit: Option<Vec<Recipient>>,
    /// The members of the audience now.
    pub(crate) bitmap: Option<RoaringBitmap>,
    /// `broadcast: true`.
    pub(crate) broadcast: bool,
}

impl Engine {
    /// `/messages/send`: named users, or a segment and/or an audience, or everyone.
    pub(super) async fn who_of_send(
        &self,
        ws: u32,
        req: &SendRequest,
    ) -> Result<Who, MessagingError> {
        let ids = req.external_user_ids.as_deref().unwrap_or_default();
        let aliases = req.user_aliases.as_deref().unwrap_or_default();
        if ids.len() > MAX_RECIPIENTS || aliases.len() > MAX_RECIPIENTS {
            return Err(MessagingError::invalid(format!(
                "external_user_ids and user_aliases take at most {MAX_RECIPIENTS} each"
            )));
        }
        let broadcast = req.broadcast.unwrap_or(false);
        let named = !ids.is_empty() || !aliases.is_empty();
        if broadcast && named {
            return Err(MessagingError::invalid(
                "broadcast cannot be combined with external_user_ids or user_aliases",
            ));
        }
        if named {
            let idents = ids
                .iter()
                .map(|id| Identifier::ExternalId(id.clone()))
                .chain(aliases.iter().map(|a| Identifier::Alias(a.clone())));
            let mut list = Vec::new();
            for ident in idents {
                if let Some(id) = self.profile_of(ws, &ident)? {
                    list.push(Recipient {
                        id,
                        trigger_properties: None,
                    });
                }
            }
            return Ok(Who {
                explicit: Some(list),
                bitmap: None,
                broadcast: false,
            });
        }
        if !broadcast && req.segment_id.is_none() && req.audience.is_none() {
            return Err(MessagingError::invalid(
                "there are no recipients: name external_user_ids or user_aliases, a segment_id or audience, or set broadcast to true",
            ));
        }
        let bitmap = self
            .audience_members(ws, req.segment_id.as_deref(), req.audience.as_ref())
            .await?;
        Ok(Who {
            explicit: None,
            bitmap: Some(bitmap),
            broadcast,
        })
    }

    /// `/campaigns/trigger/send`: recipients (narrowed by an audience), or an audience, or
    /// everyone.
    pub(crate) async fn who_of_trigger(
        self: &Arc<Self>,
        ws: &Workspace,
        req: &TriggerRequest,
    ) -> Result<Who, MessagingError> {
        let broadcast = req.broadcast.unwrap_or(false);
        let recipients = req.recipients.as_deref().unwrap_or_default();
        if broadcast && !recipients.is_empty() {
            return Err(MessagingError::invalid(
                "broadcast cannot be combined with recipients",
            ));
        }
        if !recipients.is_empty() {
            let mut list = self.trigger_recipients(ws, recipients).await?;
            if let Some(audience) = &req.audience {
                let members = self.audience_members(ws.id, None, Some(audience)).await?;
                list.retain(|r| members.contains(r.id));
            }
            return Ok(Who {
                explicit: Some(list),
                bitmap: None,
                broadcast: false,
            });
        }
        if !broadcast && req.audience.is_none() {
            return Err(MessagingError::invalid(
                "there are no recipients: name recipients, an audience, or set broadcast to true",
            ));
        }
        let bitmap = self
            .audience_members(ws.id, None, req.audience.as_ref())
            .await?;
        Ok(Who {
            explicit: None,
            bitmap: Some(bitmap),
            broadcast,
        })
    }

    /// Applies recipients' `attributes` (creating users when `send_to_existing_only` is false)
    /// and resolves them to profiles.
    pub(super) async fn trigger_recipients(
        &self,
        ws: &Workspace,
        recipients: &[TriggerRecipient],
    ) -> Result<Vec<Recipient>, MessagingError> {
        if recipients.len() > MAX_RECIPIENTS {
            return Err(MessagingError::invalid(format!(
                "recipients takes at most {MAX_RECIPIENTS} objects"
            )));
        }
        let mut attributes = Vec::new();
        let mut idents = Vec::new();
        for r in recipients {
            let ident = identifier_of(
                r.external_user_id.as_deref(),
                r.user_alias.as_ref(),
                r.email.as_deref(),
            )?;
            if !r.send_to_existing_only && r.attributes.is_none() {
                return Err(MessagingError::invalid(
                    "a recipient with send_to_existing_only false needs 'attributes' to create the user with",
                ));
            }
            if let Some(attrs) = &r.attributes {
                attributes.push(attributes_object(attrs, &ident, r.send_to_existing_only));
            }
            idents.push((ident, r.trigger_properties.clone()));
        }
        if !attributes.is_empty() {
            let request = TrackRequest {
                attributes: Some(attributes),
                events: None,
                purchases: None,
            };
            let batch = validate_track(&request, time::now_ms())
                .map_err(|e| MessagingError::invalid(e.to_string()))?;
            self.store().track(ws.clone(), batch).await?;
        }
        let mut list = Vec::new();
        for (ident, properties) in idents {
            if let Some(id) = self.profile_of(ws.id, &ident)? {
                list.push(Recipient {
                    id,
                    trigger_properties: properties,
                });
            }
        }
        Ok(list)
    }

    /// The members of a segment and/or a connected audience (intersected), or everyone.
    async fn audience_members(
        &self,
        ws: u32,
        segment_id: Option<&str>,
        audience: Option<&Value>,
    ) -> Result<RoaringBitmap, MessagingError> {
        let mut filters = Vec::new();
        if let Some(segment_id) = segment_id {
            let segment = self.store().segment(ws, segment_id)?.ok_or_else(|| {
                MessagingError::invalid(format!(
                    "segment_id '{segment_id}' is not a segment of this workspace"
                ))
            })?;
            filters.push(segment.filter);
        }
        if let Some(audience) = audience {
            filters.push(crate::audience::compile(audience)?);
        }
        let parsed = filters
            .iter()
            .map(|f| {
                eddy_segments::Filter::parse(f).map_err(|e| MessagingError::invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.members(ws, parsed).await
    }

    /// The profile an identifier names now, if any.
    fn profile_of(&self, ws: u32, ident: &Identifier) -> Result<Option<u32>, MessagingError> {
        Ok(self.store().find(ws, ident)?.map(|(id, _)| id))
    }
}

fn identifier_of(
    external_id: Option<&str>,
    alias: Option<&UserAlias>,
    email: Option<&str>,
) -> Result<Identifier, MessagingError> {
    match (external_id, alias, email) {
        (Some(id), None, None) => Ok(Identifier::ExternalId(id.to_string())),
        (None, Some(alias), None) => Ok(Identifier::Alias(alias.clone())),
        (None, None, Some(email)) => normalize_email(email)
            .map(Identifier::Email)
            .ok_or_else(|| MessagingError::invalid(format!("'{email}' is not an email address"))),
        _ => Err(MessagingError::invalid(
            "each recipient has exactly one of external_user_id, user_alias or email",
        )),
    }
}

/// A recipient's `attributes` as a `/users/track` attributes object for its identifier.
fn attributes_object(
    attrs: &serde_json::Map<String, Value>,
    ident: &Identifier,
    update_existing_only: bool,
) -> Value {
    let mut object = attrs.clone();
    match ident {
        Identifier::ExternalId(id) => {
            object.insert("external_id".into(), json!(id));
        }
        Identifier::Alias(alias) => {
            object.insert("user_alias".into(), json!(alias));
        }
        Identifier::Email(email) => {
            object.insert("email".into(), json!(email));
        }
        _ => {}
    }
    object.insert("_update_existing_only".into(), json!(update_existing_only));
    Value::Object(object)
}
