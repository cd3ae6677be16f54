//! Avro files in an object store: settings and key layout (`config`), the clients (`stores`) and
//! the delivery task (`task`).

pub mod config;
pub(crate) mod stores;
pub(crate) mod task;
