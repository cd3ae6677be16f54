//! Braze's REST surface, as Braze's clients call it (REST keys, Braze's bodies, texts and
//! limits): users, segments and their exports, the partner cohort API, sending, subscriptions
//! and email lists, Canvas, catalogs, content blocks and email templates, the links eddy puts in emails, and the
//! endpoints eddy answers 501. The admin
//! side of segments and sends (definitions, dispatches) sits beside its Braze side.

pub mod canvas;
pub mod catalogs;
pub mod export_files;
pub mod messaging;
pub mod partners;
pub mod segment_export;
pub mod segments;
pub mod subscriptions;
pub mod templates;
pub mod tracking;
pub(crate) mod unimplemented;
pub mod users;
