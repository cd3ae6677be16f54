//! Extractors: authentication and body parsing happen here, once, so that a handler reads as
//! what it does.
//!
//! - [`Rest<P>`]: a REST API key holding permission `P` (header, or Braze's legacy `api_key`
//!   query parameter or body field); gives the key's workspace and the raw body.
//! - [`Admin`]: the admin token. [`AdminWorkspace`]: the admin token and the path's `{ws}`.
//! - [`JsonBody<T>`]: a JSON body, with the 413 and 400 texts of the error table.
//! - [`Paging<DEFAULT, MAX>`]: `limit` and `offset` of a list, read one way everywhere.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use eddy_model::ApiError;
use eddy_store::Workspace;
use serde::de::DeserializeOwned;

use crate::SharedState;
use crate::http::{HttpError, authorize, authorize_admin, body_bytes, parse};
use crate::request_log::RequestLog;

/// A REST API permission, by Braze's name.
pub trait Permission: Send + Sync + 'static {
    /// The permission's name, e.g. `users.track`.
    const NAME: &'static str;
}

macro_rules! permissions {
    ($($(#[$doc:meta])* $ty:ident = $name:literal;)*) => {
        $(
            $(#[$doc])*
            pub struct $ty;
            impl Permission for $ty {
                const NAME: &'static str = $name;
            }
        )*
    };
}

permissions! {
    /// `users.track`.
    UsersTrack = "users.track";
    /// `users.identify`.
    UsersIdentify = "users.identify";
    /// `users.alias.new`.
    UsersAliasNew = "users.alias.new";
    /// `users.alias.update`.
    UsersAliasUpdate = "users.alias.update";
    /// `users.external_ids.rename`.
    UsersExternalIdsRename = "users.external_ids.rename";
    /// `users.external_ids.remove`.
    UsersExternalIdsRemove = "users.external_ids.remove";
    /// `users.delete`.
    UsersDelete = "users.delete";
    /// `content_blocks.create`.
    ContentBlocksCreate = "content_blocks.create";
    /// `content_blocks.update`.
    ContentBlocksUpdate = "content_blocks.update";
    /// `content_blocks.list`.
    ContentBlocksList = "content_blocks.list";
    /// `content_blocks.info`.
    ContentBlocksInfo = "content_blocks.info";
    /// `templates.email.create`.
    TemplatesEmailCreate = "templates.email.create";
    /// `templates.email.update`.
    TemplatesEmailUpdate = "templates.email.update";
    /// `templates.email.list`.
    TemplatesEmailList = "templates.email.list";
    /// `templates.email.info`.
    TemplatesEmailInfo = "templates.email.info";
    /// `canvas.trigger.send`.
    CanvasTriggerSend = "canvas.trigger.send";
    /// `canvas.trigger.schedule.create`.
    CanvasTriggerScheduleCreate = "canvas.trigger.schedule.create";
    /// `canvas.trigger.schedule.update`.
    CanvasTriggerScheduleUpdate = "canvas.trigger.schedule.update";
    /// `canvas.trigger.schedule.delete`.
    CanvasTriggerScheduleDelete = "canvas.trigger.schedule.delete";
    /// `canvas.data_series`.
    CanvasDataSeries = "canvas.data_series";
    /// `canvas.data_summary`.
    CanvasDataSummary = "canvas.data_summary";
    /// `canvas.list`.
    CanvasList = "canvas.list";
    /// `canvas.details`.
    CanvasDetails = "canvas.details";
    /// `catalogs.get`.
    CatalogsGet = "catalogs.get";
    /// `catalogs.create`.
    CatalogsCreate = "catalogs.create";
    /// `catalogs.delete`.
    CatalogsDelete = "catalogs.delete";
    /// `catalogs.create_fields`.
    CatalogsCreateFields = "catalogs.create_fields";
    /// `catalogs.delete_fields`.
    CatalogsDeleteFields = "catalogs.delete_fields";
    /// `catalogs.get_items`.
    CatalogsGetItems = "catalogs.get_items";
    /// `catalogs.add_items`.
    CatalogsAddItems = "catalogs.add_items";
    /// `catalogs.replace_items`.
    CatalogsReplaceItems = "catalogs.replace_items";
    /// `catalogs.update_items`.
    CatalogsUpdateItems = "catalogs.update_items";
    /// `catalogs.delete_items`.
    CatalogsDeleteItems = "catalogs.delete_items";
    /// `catalogs.get_item`.
    CatalogsGetItem = "catalogs.get_item";
    /// `catalogs.create_item`.
    CatalogsCreateItem = "catalogs.create_item";
    /// `catalogs.replace_item`.
    CatalogsReplaceItem = "catalogs.replace_item";
    /// `catalogs.update_item`.
    CatalogsUpdateItem = "catalogs.update_item";
    /// `catalogs.delete_item`.
    CatalogsDeleteItem = "catalogs.delete_item";
    /// `users.merge`.
    UsersMerge = "users.merge";
    /// `users.export.ids`.
    UsersExportIds = "users.export.ids";
    /// `users.export.segment`.
    UsersExportSegment = "users.export.segment";
    /// `segments.list`.
    SegmentsList = "segments.list";
    /// `segments.details`.
    SegmentsDetails = "segments.details";
    /// `currents.events`.
    CurrentsEvents = "currents.events";
    /// `messages.send`.
    MessagesSend = "messages.send";
    /// `messages.schedule.create`.
    MessagesScheduleCreate = "messages.schedule.create";
    /// `messages.schedule.update`.
    MessagesScheduleUpdate = "messages.schedule.update";
    /// `messages.schedule.delete`.
    MessagesScheduleDelete = "messages.schedule.delete";
    /// `messages.schedule_broadcasts`.
    MessagesScheduledBroadcasts = "messages.schedule_broadcasts";
    /// `campaigns.trigger.send`.
    CampaignsTriggerSend = "campaigns.trigger.send";
    /// `campaigns.trigger.schedule.create`.
    CampaignsTriggerScheduleCreate = "campaigns.trigger.schedule.create";
    /// `campaigns.trigger.schedule.update`.
    CampaignsTriggerScheduleUpdate = "campaigns.trigger.schedule.update";
    /// `campaigns.trigger.schedule.delete`.
    CampaignsTriggerScheduleDelete = "campaigns.trigger.schedule.delete";
    /// `transactional.send`.
    TransactionalSend = "transactional.send";
    /// `sends.id.create`.
    SendsIdCreate = "sends.id.create";
    /// `campaigns.list`.
    CampaignsList = "campaigns.list";
    /// `campaigns.details`.
    CampaignsDetails = "campaigns.details";
    /// `subscription.status.set`.
    SubscriptionStatusSet = "subscription.status.set";
    /// `subscription.status.get`.
    SubscriptionStatusGet = "subscription.status.get";
    /// `subscription.groups.get`.
    SubscriptionUserStatus = "subscription.groups.get";
    /// `email.status`.
    EmailStatus = "email.status";
    /// `email.hard_bounces`.
    EmailHardBounces = "email.hard_bounces";
    /// `email.unsubscribe`.
    EmailUnsubscribes = "email.unsubscribe";
    /// `email.bounce.remove`.
    EmailBounceRemove = "email.bounce.remove";
    /// `email.spam.remove`.
    EmailSpamRemove = "email.spam.remove";
    /// `email.blacklist`.
    EmailBlocklist = "email.blacklist";
}

/// A request authenticated by a REST API key that holds `P`.
pub struct Rest<P> {
    /// The key's workspace.
    pub workspace: Workspace,
    /// The raw body (already read: the legacy `api_key` may be in it).
    pub body: Bytes,
    /// The raw query string.
    pub query: Option<String>,
    log: Option<std::sync::Arc<RequestLog>>,
    permission: PhantomData<P>,
}

impl<P> Rest<P> {
    /// The body as JSON of type `T`, or Braze's 400.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        Ok(parse(&self.body)?)
    }

    /// Counts objects the request carried, for its log line.
    pub fn processed(&self, objects: usize) {
        if let Some(log) = &self.log {
            log.add_objects(objects as u64);
        }
    }

    /// One query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        crate::http::query_param(self.query.as_deref(), name)
    }
}

impl<P: Permission> FromRequest<SharedState> for Rest<P> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, HttpError> {
        let headers = req.headers().clone();
        let query = req.uri().query().map(str::to_string);
        let log = req
            .extensions()
            .get::<std::sync::Arc<RequestLog>>()
            .cloned();
        let body = body_bytes(Bytes::from_request(req, state).await)?;
        let (key, workspace) = authorize(state, &headers, query.as_deref(), &body, P::NAME)?;
        if let Some(log) = &log {
            log.set_key(&key.name);
            log.set_workspace(workspace.id, &body);
        }
        Ok(Rest {
            workspace,
            body,
            query,
            log,
            permission: PhantomData,
        })
    }
}

/// The admin token, or a call the dashboard makes for a signed-in session (the marker is an
/// in-process extension no client can set).
fn admin(parts: &Parts, state: &SharedState) -> Result<(), HttpError> {
    if parts
        .extensions
        .get::<crate::dashboard::SignedIn>()
        .is_some()
    {
        return Ok(());
    }
    let client = parts
        .extensions
        .get::<crate::throttle::ClientAddr>()
        .map(|c| c.0);
    Ok(authorize_admin(state, &parts.headers, client)?)
}

/// A request that presented the admin token.
pub struct Admin;

impl FromRequestParts<SharedState> for Admin {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, HttpError> {
        admin(parts, state)?;
        Ok(Admin)
    }
}

/// The admin token, and the workspace named by the path's `{ws}` (404 when there is none).
pub struct AdminWorkspace(pub Workspace);

impl FromRequestParts<SharedState> for AdminWorkspace {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, HttpError> {
        admin(parts, state)?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| HttpError(ApiError::NotFound))?;
        let Some((_, name)) = params.iter().find(|(key, _)| *key == "ws") else {
            return Err(HttpError(ApiError::Internal));
        };
        let workspace = state
            .store
            .workspace(name)?
            .ok_or_else(|| ApiError::ResourceNotFound(format!("workspace '{name}'")))?;
        Ok(AdminWorkspace(workspace))
    }
}

/// A JSON body of type `T`: 413 past the body limit, 400 with the parser's reason otherwise.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        let bytes = body_bytes(Bytes::from_request(req, state).await)?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

/// Braze's parameters of `/campaigns/list` and `/canvas/list`: `page` (100 a page),
/// `include_archived`, `sort_direction=desc`, `last_edit.time[gt]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    /// The page, from 0.
    pub page: usize,
    /// Archived ones too.
    pub include_archived: bool,
    /// Newest first.
    pub descending: bool,
    /// Only those edited after this, UTC ms.
    pub edited_after: Option<i64>,
}

impl ListQuery {
    /// Reads a request's query.
    pub fn read<P>(rest: &Rest<P>) -> Result<ListQuery, HttpError> {
        let bad = |m: String| HttpError(ApiError::BadRequest(m));
        let page = match rest.query_param("page") {
            Some(p) => p
                .parse()
                .map_err(|_| bad("page is a number from 0".into()))?,
            None => 0,
        };
        let edited_after = match rest.query_param("last_edit.time[gt]") {
            Some(t) => Some(
                eddy_model::time::parse_time(&t)
                    .ok_or_else(|| bad(format!("last_edit.time[gt] '{t}' is not a time")))?,
            ),
            None => None,
        };
        Ok(ListQuery {
            page,
            include_archived: rest.query_param("include_archived").as_deref() == Some("true"),
            descending: rest.query_param("sort_direction").as_deref() == Some("desc"),
            edited_after,
        })
    }

    /// Whether an item with these flags is listed.
    pub fn keeps(&self, archived: bool, updated_at: i64) -> bool {
        (self.include_archived || !archived) && self.edited_after.is_none_or(|t| updated_at > t)
    }

    /// The page asked for, of items sorted oldest first.
    pub fn page_of<T>(&self, mut items: Vec<T>) -> Vec<T> {
        if self.descending {
            items.reverse();
        }
        items.into_iter().skip(self.page * 100).take(100).collect()
    }
}

/// `?limit=&offset=` of a list: `limit` defaults to `DEFAULT` and is capped at `MAX` (Braze
/// documents its lists' limits as maxima); a value that is not a number, or a limit of 0, is a
/// 400 that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging<const DEFAULT: usize, const MAX: usize> {
    /// Items at most.
    pub limit: usize,
    /// Items skipped first.
    pub offset: usize,
}

impl<const DEFAULT: usize, const MAX: usize> Paging<DEFAULT, MAX> {
    /// Reads a query string.
    pub fn read(query: Option<&str>) -> Result<Self, HttpError> {
        let number = |name: &str| -> Result<Option<usize>, HttpError> {
            match crate::http::query_param(query, name) {
                None => Ok(None),
                Some(text) => text.trim().parse::<usize>().map(Some).map_err(|_| {
                    HttpError(ApiError::BadRequest(format!(
                        "{name} is a whole number, not '{text}'"
                    )))
                }),
            }
        };
        let limit = match number("limit")? {
            Some(0) => {
                return Err(HttpError(ApiError::BadRequest(format!(
                    "limit is 1 to {MAX}"
                ))));
            }
            Some(limit) => limit.min(MAX),
            None => DEFAULT,
        };
        Ok(Paging {
            limit,
            offset: number("offset")?.unwrap_or(0),
        })
    }
}

impl<S: Send + Sync, const DEFAULT: usize, const MAX: usize> FromRequestParts<S>
    for Paging<DEFAULT, MAX>
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        Paging::read(parts.uri.query())
    }
}

#[cfg(test)]
mod paging_tests {
    use super::Paging;

    #[test]
    fn limits_default_cap_and_refuse_what_is_not_a_number() {
        let read = |q: &str| Paging::<100, 500>::read(Some(q)).map_err(|e| e.0);
        assert_eq!(
            read("").unwrap(),
            Paging {
                limit: 100,
                offset: 0
            }
        );
        assert_eq!(
            read("limit=20&offset=40").unwrap(),
            Paging {
                limit: 20,
                offset: 40
            }
        );
        assert_eq!(read("limit=9000").unwrap().limit, 500);
        assert!(read("limit=0").is_err());
        assert!(read("limit=ten").is_err());
        assert!(read("offset=-1").is_err());
    }
}
