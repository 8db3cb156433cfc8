//! The one error type of `spheron-core`.

use crate::ids::{LeaseId, OrderId, ProviderId};
use crate::lease::LeaseState;
use crate::money::Amount;

/// Everything that can go wrong in the marketplace core.
///
/// Messages name the field or value that was wrong and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request or spec field holds a value outside what is accepted.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// The field, as spelled in the builder or YAML spec.
        field: &'static str,
        /// What was wrong and what is expected.
        reason: String,
    },
    /// A YAML or JSON spec could not be parsed.
    #[error("malformed spec: {0}")]
    MalformedSpec(String),
    /// A GPU model name that the catalog does not know.
    #[error(
        "unknown GPU model `{0}` (known: h200, h100-sxm, h100-pcie, a100-80g, a100-40g, l40s, l4, a10, rtx4090, t4)"
    )]
    UnknownGpuModel(String),
    /// An amount was zero where a positive amount is required.
    #[error("`{field}` must be greater than zero")]
    ZeroAmount {
        /// Which amount.
        field: &'static str,
    },
    /// Checked arithmetic on money or time overflowed.
    #[error("amount overflow computing {what}")]
    Overflow {
        /// The computation that overflowed.
        what: &'static str,
    },
    /// An account does not hold enough available funds.
    #[error("insufficient funds: {needed} needed, {available} available")]
    InsufficientFunds {
        /// What the operation needed.
        needed: Amount,
        /// What the account had available.
        available: Amount,
    },
    /// A rent would take a marketplace's committed spend past its cap
    /// ([`SpendLimit`](crate::cost::SpendLimit)); nothing was published.
    #[error(
        "the marketplace spend cap of {cap} would be exceeded: {committed} is committed and this rent needs {requested}"
    )]
    SpendCapExceeded {
        /// The marketplace's cap.
        cap: Amount,
        /// Committed by its leases so far (locked while running, paid once settled).
        committed: Amount,
        /// What this rent would lock.
        requested: Amount,
    },
    /// A bid's price is above the order's price ceiling.
    #[error("bid of {price} per GPU-hour is above the order's ceiling of {ceiling}")]
    BidAboveCeiling {
        /// The bid price per GPU-hour.
        price: Amount,
        /// The order's maximum price per GPU-hour.
        ceiling: Amount,
    },
    /// A bid arrived after the order's bid window closed.
    #[error("bid window for order {0} is closed")]
    BidWindowClosed(OrderId),
    /// A lease state transition that the state machine does not allow.
    #[error("illegal lease transition from {from} on `{event}`")]
    IllegalTransition {
        /// The state the lease was in.
        from: LeaseState,
        /// The event that was refused.
        event: &'static str,
    },
    /// The lease is already closed.
    #[error("lease {0} is already closed")]
    LeaseClosed(LeaseId),
    /// An order id that nobody knows.
    #[error("unknown order {0}")]
    UnknownOrder(OrderId),
    /// A lease id that nobody knows.
    #[error("unknown lease {0}")]
    UnknownLease(LeaseId),
    /// A provider id that nobody knows.
    #[error("unknown provider {0}")]
    UnknownProvider(ProviderId),
    /// An escrow operation refers to an order that already holds a lock.
    #[error("order {0} already has funds locked")]
    AlreadyLocked(OrderId),
    /// No provider can serve the order; every candidate and why it was skipped.
    #[error("no provider can serve order {order}: {}", crate::matching::format_rejections(.rejected))]
    NoMatch {
        /// The order.
        order: OrderId,
        /// Each provider that was considered and the reason it was dropped.
        rejected: Vec<crate::matching::Rejection>,
    },
    /// A matcher was configured with invalid weights.
    #[error("invalid matcher weight `{name}` = {value}: weights must be finite and >= 0")]
    InvalidWeight {
        /// The weight's name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The matcher itself failed (for example a user-supplied matcher raised).
    #[error("matcher failed: {0}")]
    Matcher(String),
    /// A proof-of-GPU challenge failed for a provider.
    #[error("challenge failed for provider {provider}: {reason}")]
    ChallengeFailed {
        /// The provider that failed.
        provider: ProviderId,
        /// The verdict's reason.
        reason: String,
    },
    /// The prover side failed to answer (transport, device, malformed message).
    #[error("prover error: {0}")]
    Prover(String),
    /// The prover is at capacity (other challenges in flight): ask again later. Not a
    /// failure of the proof.
    #[error("prover busy: retry after {retry_after_ms} ms")]
    ProverBusy {
        /// The wait the prover asks for, in milliseconds.
        retry_after_ms: u64,
    },
    /// The workload launcher failed.
    #[error("launch failed: {0}")]
    Launch(String),
    /// The workload was accepted but never started running (its image could not be pulled, no
    /// node could take it, its pods could not be created, ...) within the launcher's start
    /// timeout; the launcher removed what it had created. Nothing was billed: the rent flow
    /// refunds the lock, and another provider may succeed.
    #[error("workload did not start within {after_ms} ms: {reason}")]
    NotStarted {
        /// The last reason the launcher saw (for Kubernetes, the waiting reason and message,
        /// such as `ImagePullBackOff: ...` or `Unschedulable: ...`).
        reason: String,
        /// How long the launcher waited, in milliseconds.
        after_ms: u64,
    },
    /// A backend (chain RPC, Kubernetes API, ...) failed.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
    /// An epoch was closed twice or an event targets a closed epoch.
    #[error("epoch {0} is already closed")]
    EpochClosed(u64),
    /// A feedback rating outside the accepted range.
    #[error("feedback rating {0} is outside 1..=5")]
    FeedbackOutOfRange(u8),
    /// A remote step (bid window, match, challenge, manifest, launch, settlement) did not
    /// finish in time.
    #[error("{step} timed out after {after_ms} ms")]
    Timeout {
        /// The step.
        step: &'static str,
        /// The limit, in milliseconds.
        after_ms: u64,
    },
    /// The marketplace was shut down.
    #[error("the marketplace has shut down")]
    Shutdown,
}

impl Error {
    /// Shorthand for [`Error::InvalidField`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    /// Whether retrying the same call later may succeed (transient backend or capacity failures).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Backend { .. }
                | Error::NotStarted { .. }
                | Error::NoMatch { .. }
                | Error::Prover(_)
                | Error::ProverBusy { .. }
                | Error::Timeout { .. }
        )
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
