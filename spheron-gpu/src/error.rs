//! The error type of `spheron-gpu`.

/// Everything that can go wrong in `spheron-gpu` outside a verdict (a provider's wrong answer
/// is a [`spheron_core::proof::Verdict::Fail`], never an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A verifier or simulation setting outside what is accepted.
    #[error("invalid `{field}`: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What was wrong and what is expected.
        reason: String,
    },
    /// No usable CUDA driver or device on this machine (or the crate was built without the
    /// `cuda` feature).
    #[error("CUDA unavailable: {0}")]
    CudaUnavailable(String),
    /// A CUDA call failed at run time.
    #[error("CUDA error in {op}: {reason}")]
    Cuda {
        /// The operation.
        op: &'static str,
        /// The driver's or library's message.
        reason: String,
    },
    /// The HTTP transport failed (connection, status, body).
    #[error("transport to {url}: {reason}")]
    Transport {
        /// The endpoint.
        url: String,
        /// What failed.
        reason: String,
    },
}

impl Error {
    /// Whether retrying the same call may succeed (transport hiccups only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transport { .. })
    }
}

impl From<Error> for spheron_core::Error {
    fn from(e: Error) -> Self {
        spheron_core::Error::Prover(e.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
