//! Why a render stops early.

/// Why a render stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Stop {
    /// A Liquid error, printed in place where Liquid prints it.
    #[error("Liquid error: {0}")]
    Error(String),
    /// `abort_message`: the message is not sent.
    #[error("aborted: {0}")]
    Abort(String),
    /// The render cannot go on: past its limits (output size, steps), or a content block
    /// that includes itself.
    #[error("{0}")]
    Fatal(String),
}
