//! eddy's pure domain: everything about Braze's data model that needs no I/O.
//!
//! - [`time`]: Braze's accepted date formats.
//! - [`error`]: the API error table (status + Braze text) and per-object errors.
//! - [`wire`]: request and response types of the Braze REST API, shared by the server and clients.
//! - [`track`]: validation of `/users/track` objects into typed operations.
//! - [`attrs`]: standard profile fields and custom attribute values and operations.
//! - [`profile`]: the stored profile and how operations, events, merges and exports act on it.
//! - [`usage`]: data-point metering rules.
//! - [`currents`]: the Currents events that writes produce, shaped as their Avro schemas.
//! - [`geo`]: country and language code tables.
//! - [`limits`]: the length limits of identifiers and names, checked at the edge.
//! - [`users`]: validation of the identify, alias, delete, merge and export bodies.

pub mod attrs;
pub mod currents;
pub mod error;
pub mod geo;
pub mod limits;
pub mod profile;
pub mod time;
pub mod track;
pub mod usage;
pub mod users;
pub mod wire;

pub use error::{ApiError, ObjectError};
