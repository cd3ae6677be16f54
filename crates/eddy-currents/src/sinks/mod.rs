//! One folder per sink, as Vector lays them out: its settings (`config`) and its delivery task
//! (`task`), plus what only it needs.

pub mod amplitude;
pub mod files;
pub(crate) mod probe;

/// Hours an undeliverable event is retried before it is dropped and counted [default: 48].
pub(crate) fn default_retention() -> u64 {
    48
}
