//! The node's error type.

use crate::wire::GatewayError;

/// What can go wrong in a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration or network file is missing a field or has a bad one.
    #[error("config: {field}: {reason}")]
    Config {
        /// The field (or file) at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The chain refused or could not be reached.
    #[error(transparent)]
    Chain(#[from] spheron_chain::Error),
    /// A domain rule refused.
    #[error(transparent)]
    Core(#[from] spheron_core::Error),
    /// The embedded database failed.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A provider's gateway refused or could not be reached.
    #[error("gateway: {0}")]
    Gateway(#[from] GatewayError),
    /// File or socket I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A configuration error naming `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The node's result type.
pub type Result<T> = std::result::Result<T, Error>;
