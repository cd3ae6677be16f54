//! Errors of the store.

/// What can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed; the batch was not applied.
    #[error("storage error: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("corrupt value in {table}: {reason}")]
    Corrupt {
        /// The table it was read from.
        table: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A named thing already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The writer has stopped (shutdown or a fatal storage error).
    #[error("writer stopped")]
    Closed,
    /// Another process holds the data directory.
    #[error("another eddy holds {}", .0.display())]
    Locked(std::path::PathBuf),
    /// Stored credentials cannot be sealed or opened (a missing or wrong key).
    #[error("{0}")]
    Secrets(String),
    /// The database connection closed during a commit and no new connection could tell
    /// whether the commit was made: the write may or may not be applied.
    #[error("commit outcome unknown: {0}")]
    CommitOutcomeUnknown(String),
    /// The writer panicked while applying the group; nothing of it was applied.
    #[error("internal error while applying the write; nothing of it was applied")]
    Panicked,
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}
