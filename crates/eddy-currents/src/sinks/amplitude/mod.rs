//! Amplitude's HTTP API v2: settings (`config`), Braze's mapping of Currents records to
//! Amplitude events (`mapping`) and the delivery task (`task`).

pub mod config;
pub mod mapping;
pub(crate) mod task;
