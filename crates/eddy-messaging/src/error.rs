/// Why a messaging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The request or definition is invalid; the text says why.
    #[error("{0}")]
    Invalid(String),
    /// A named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something inside eddy failed (stored data that no longer reads, a task that died): not
    /// the caller's fault, logged and answered 500.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] eddy_store::StoreError),
}

impl MessagingError {
    /// An internal failure.
    pub fn internal(text: impl Into<String>) -> MessagingError {
        MessagingError::Internal(text.into())
    }

    /// An invalid-input error.
    pub fn invalid(text: impl Into<String>) -> MessagingError {
        MessagingError::Invalid(text.into())
    }
}
