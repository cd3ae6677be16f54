//! One folder per sink, as Vector lays them out: its settings (`config`) and its delivery task
//! (`task`), plus what only it needs.

pub mod amplitude;
pub mod files;
