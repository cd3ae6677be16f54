//! eddy's segments.
//!
//! - [`filter`]: the filter language (see the README's "Segments"), parsed into a typed tree, and
//!   [`filter::matches`], the per-profile predicate that is the oracle for everything faster.
//! - [`index`]: per-workspace roaring bitmaps (cohorts, string and boolean values, array items)
//!   and dense typed columns (numbers, times) over internal profile ids, plus event counts;
//!   the writer keeps it current after every commit, and it answers a filter exactly.

pub mod filter;
pub mod index;

pub use filter::{Filter, FilterError};
pub use index::{Index, WorkspaceIndex};
