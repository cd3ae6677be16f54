//! eddy's sending: what Braze calls API-triggered campaigns and API sends, over webhook and email.
//!
//! The flow, a file per concern:
//! - [`canvas`]: canvases: their steps, the users in them, and the leader moving them.
//! - [`campaign`]: campaign definitions and message objects (Braze's `/messages/send` shapes),
//!   checked once, Liquid parsed once.
//! - [`audience`]: Braze's connected-audience filter, compiled onto eddy's segment filters.
//! - [`send`]: the send service: a Braze send request in, a committed dispatch out.
//! - [`dispatch`]: a send as the store keeps it: who (explicit recipients or a bitmap of the
//!   audience taken at request time), what, when, and how far delivery got.
//! - [`engine`]: runs dispatches: reads recipients in id order, decides eligibility, renders,
//!   delivers, and records every outcome with its Currents events in one commit.
//! - [`webhook`] and [`smtp`] (with [`mime`]): the two channels.
//! - [`events`]: the Currents records of message events.
//! - [`tracking`]: signed open, click and subscription links served by eddy.
//! - [`templates`]: a workspace's content blocks and Connected Content rules.
//! - [`library`]: content blocks and email templates as Braze's template endpoints keep them.
//! - [`catalogs`]: catalogs of non-user data, their items, and what `catalog_items` reads.
//! - [`records`]: campaigns, dispatches and email settings as typed records in the store.
//! - [`kinds`]: the names under which all of this lives in the store.

pub mod address;
pub mod audience;
pub mod campaign;
pub mod canvas;
pub mod catalogs;
pub mod dispatch;
pub mod engine;
mod error;
pub mod events;
pub mod library;
pub mod mime;
pub mod records;
pub mod send;
pub mod smtp;
pub mod templates;
pub mod tracking;
pub mod webhook;

pub use error::MessagingError;

/// The kinds of store objects messaging keeps.
pub mod kinds {
    /// Campaign definitions, by campaign id.
    pub const CAMPAIGN: &str = "campaign";
    /// Subscription groups, by id.
    pub const SUBSCRIPTION_GROUP: &str = "subscription-group";
    /// Dispatches, by dispatch id.
    pub const DISPATCH: &str = "dispatch";
    /// Dispatches not finished yet (scheduled or sending), by dispatch id: what a start resumes.
    pub const OPEN_DISPATCH: &str = "dispatch-open";
    /// Cancellations asked for and not carried out yet, by dispatch id (the engine carries
    /// them out between chunks, whichever node runs the dispatch).
    pub const DISPATCH_CANCEL: &str = "dispatch-cancel";
    /// Scheduled sends not sent yet, by schedule id → `{"dispatch_id"}`.
    pub const SCHEDULE: &str = "schedule";
    /// The counts of sends whose records expired (`expired`): what the history no longer holds.
    pub const HISTORY_TOTALS: &str = "history-totals";
    /// One recipient's outcome of one dispatch: `{profile:010}/{dispatch_id}`.
    pub const MESSAGE: &str = "message";
    /// The messages that may still convert (reached their recipient, the send has conversion
    /// events, not converted yet), by the same name → `{"until": UTC ms}`: what a tracked event
    /// is checked against, instead of the user's whole history.
    pub const CONVERTIBLE: &str = "message-convertible";
    /// A workspace's SMTP relay: `settings`.
    pub const EMAIL: &str = "email";
    /// State of an email address apart from any user (bounces, spam, blocklist, status).
    pub const EMAIL_ADDRESS: &str = "email-address";
    /// Send ids created through `/sends/id/create`: `{campaign_id}/{send_id}`.
    pub const SEND_ID: &str = "send-id";
    /// Transactional `external_send_id`s seen in the last 24 h: `{campaign_id}/{id}`.
    pub const EXTERNAL_SEND: &str = "external-send";
    /// The key that signs tracking links: `key`.
    pub const TRACKING: &str = "tracking";
    /// Canvas definitions, by canvas id.
    pub const CANVAS: &str = "canvas";
    /// Users in canvases: `{canvas_id}/{entry id}`.
    pub const CANVAS_ENTRY: &str = "canvas-entry";
    /// When canvas entries are due: `{wake_at:016}/{canvas_id}/{entry id}`.
    pub const CANVAS_DUE: &str = "canvas-due";
    /// A canvas's figures of a UTC day: `{canvas_id}/{YYYY-MM-DD}` → `{"entries"}`.
    pub const CANVAS_STATS: &str = "canvas-stats";
    /// Canvas entries that may still convert: `{profile:010}/{canvas_id}/{entry id}` →
    /// `{"at", "until"}` (what a tracked event is checked against).
    pub const CANVAS_CONVERTIBLE: &str = "canvas-convertible";
    /// Scheduled canvas triggers, by schedule id.
    pub const CANVAS_SCHEDULE: &str = "canvas-schedule";
    /// When scheduled canvas triggers are entered: `{enter_at:016}/{schedule id}`.
    pub const CANVAS_SCHEDULE_DUE: &str = "canvas-schedule-due";
    /// Who a canvas send id entered: `{canvas_id}/{send_id}/{profile}`.
    pub const CANVAS_SENT: &str = "canvas-sent";
}
