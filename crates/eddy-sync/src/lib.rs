//! `eddy sync`: an Amperity-style delta sync of a table into Braze or eddy.
//!
//! A sync file ([`config`]) names a source ([`source`]: CSV, NDJSON, a PostgreSQL query, Avro
//! files), an identifier, typed attribute and audience columns ([`encode`]) and a target
//! ([`target`]: `/users/track` or the partner cohort API, spoken over HTTP so it works against
//! Braze itself). A run ([`run`]) diffs the source against what the target last confirmed
//! ([`state`], [`diff`]) and sends only the changes; [`report`] is what it says afterwards, and
//! [`schedule`] runs syncs on their [`cron`] expressions, counting them in [`metrics`].

pub mod config;
pub mod cron;
pub mod diff;
pub mod encode;
pub mod metrics;
pub mod report;
pub mod run;
pub mod schedule;
pub mod source;
pub mod state;
pub mod target;

pub use config::SyncFile;
pub use report::{Report, RunStatus};
pub use run::{RunOptions, run};

/// Why a sync could not run.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The sync file is wrong.
    #[error("{0}")]
    Config(String),
    /// The source cannot be read.
    #[error("source: {0}")]
    Source(String),
    /// The change-tracking state cannot be read or written.
    #[error("state: {0}")]
    State(String),
    /// The target failed outside of a batch.
    #[error("target: {0}")]
    Target(String),
    /// Another run of the same sync holds its lock.
    #[error("sync '{0}' is already running")]
    Busy(String),
}
