//! eddy's Currents: every event eddy records, exported.
//!
//! - [`catalogue`]: every Currents event type with its Avro writer schema (from `schemas/`).
//! - [`avro`]: Avro binary encoding and Object Container Files for those schemas.
//! - [`connector`]: what every connector has (name, selected event types, field
//!   transformations, delivery state) and the admin API's creation body.
//! - [`registry`]: the running connectors: create, start, flush, replay, test events, shutdown,
//!   and the outbox trimming behind them.
//! - `source` and `checkpoint`: what every delivery task shares — reading the outbox after its
//!   cursor, and saving the cursor and counters once delivered.
//! - [`sinks`]: a folder per destination: [`sinks::files`] (Avro files in S3, Azure Blob Storage
//!   or Google Cloud Storage) and [`sinks::amplitude`] (Amplitude's HTTP API v2).

pub mod avro;
pub mod catalogue;
mod checkpoint;
pub mod connector;
pub mod registry;
pub mod sinks;
mod source;

pub use registry::{ConnectorMetrics, Currents, CurrentsError};
pub use sinks::files::stores::s3_store;
