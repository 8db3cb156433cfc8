//! The crate's error type.

use spheron_core::{GpuModel, WorkloadId};

/// What can go wrong launching workloads on Kubernetes or reading a cluster's inventory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A container image reference that is not a valid `[registry/]repository[:tag][@digest]`.
    #[error("invalid image reference `{image}`: {reason}")]
    InvalidImage {
        /// The reference as given.
        image: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A name that must be a DNS label (RFC 1123: at most 63 lower-case letters, digits or `-`,
    /// starting and ending with a letter or digit) is not one.
    #[error("invalid `{field}` `{name}`: {reason}")]
    InvalidName {
        /// Which name.
        field: &'static str,
        /// The name as given.
        name: String,
        /// What was wrong and what is expected.
        reason: String,
    },
    /// The workload itself is invalid (no command or image, bad environment variable name, ...).
    #[error("invalid workload: {0}")]
    InvalidWorkload(#[source] spheron_core::Error),
    /// Some other field of a launch is out of range.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What was wrong and what is expected.
        reason: String,
    },
    /// No node of the cluster has that many GPUs of the model, so no single pod could ever get
    /// them.
    #[error(
        "{requested} x {model} requested, but the largest node with {model} has {largest} allocatable"
    )]
    NoNodeFits {
        /// The model asked for.
        model: GpuModel,
        /// GPUs asked for.
        requested: u32,
        /// Allocatable GPUs of that model on the largest node (0 when none has the model).
        largest: u32,
    },
    /// The workload id is not one this launcher started (or it was already stopped).
    #[error("unknown workload `{0}`")]
    UnknownWorkload(WorkloadId),
    /// A lease already has a namespace in the cluster.
    #[error("namespace `{0}` already exists: the lease was launched before")]
    AlreadyLaunched(String),
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call `{action}` failed: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Something did not happen in time (for example a namespace that does not go away).
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// The workload's container did not start within the start timeout; the lease's namespace
    /// was deleted again.
    #[error("workload in `{namespace}` did not start within {}s: {reason}", waited.as_secs())]
    NotStarted {
        /// The lease's namespace.
        namespace: String,
        /// How long the launcher waited.
        waited: std::time::Duration,
        /// The last waiting reason seen (`ImagePullBackOff: ...`, `Unschedulable: ...`,
        /// `FailedCreate: ...`).
        reason: String,
    },
    /// The launcher was built with an invalid configuration.
    #[error("invalid launcher configuration `{field}`: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn api(action: impl Into<String>, e: kube::Error) -> Self {
        Error::Api {
            action: action.into(),
            source: Box::new(e),
        }
    }

    /// Whether the input was at fault (retrying the same launch cannot help).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidImage { .. }
                | Error::InvalidName { .. }
                | Error::InvalidWorkload(_)
                | Error::InvalidField { .. }
                | Error::NoNodeFits { .. }
        )
    }

    /// Whether retrying later may succeed (API unavailable, timeouts).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::NotStarted { .. } => true,
            Error::Api { source, .. } => match source.as_ref() {
                kube::Error::Api(s) => s.code == 429 || s.code >= 500,
                _ => true,
            },
            _ => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for spheron_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidImage { .. } => spheron_core::Error::invalid("image", e.to_string()),
            Error::InvalidName { field, .. } => spheron_core::Error::invalid(field, e.to_string()),
            Error::InvalidWorkload(inner) => inner,
            Error::InvalidField { field, reason } => spheron_core::Error::invalid(field, reason),
            Error::NoNodeFits { .. } => spheron_core::Error::invalid("count", e.to_string()),
            Error::UnknownWorkload(_) | Error::AlreadyLaunched(_) | Error::Config { .. } => {
                spheron_core::Error::Launch(e.to_string())
            }
            Error::NotStarted { waited, reason, .. } => spheron_core::Error::NotStarted {
                reason,
                after_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            },
            Error::Api { .. } | Error::Timeout { .. } => spheron_core::Error::Backend {
                backend: "kubernetes",
                message: e.to_string(),
            },
        }
    }
}
