/// Why a messaging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The request or definition is invalid; the text says why.
    #[error("{0}")]
    Invalid(String),
    /// A named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] eddy_store::StoreError),
}

impl MessagingError {
    /// An invalid-input error.
    pub fn invalid(text: impl Into<String>) -> MessagingError {
        MessagingError::Invalid(text.into())
    }
}
