//! eddy's Currents: every event eddy records, exported.
//!
//! - [`catalogue`]: every Currents event type with its Avro writer schema (from `schemas/`).
//! - [`avro`]: Avro binary encoding and Object Container Files for those schemas.
//! - [`connector`]: connector settings (Braze's), the object key layout, field transformations.
//! - [`runtime`]: one delivery task per connector, from a durable outbox cursor to S3.
//! - [`amplitude`]: Braze's mapping of Currents records to Amplitude HTTP API v2 events.

pub mod amplitude;
pub mod avro;
pub mod catalogue;
pub mod connector;
pub mod deliver;
pub mod runtime;
mod source;

pub use runtime::{Currents, CurrentsError, s3_store};
