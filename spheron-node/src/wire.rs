//! The gateway's wire types, shared by the provider's server and the tenant's client: lease
//! status, node status, and the typed JSON error every refused request gets.

use alloy::primitives::Address;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use spheron_core::{GpuModel, Inventory};

/// What happened to a lease's workload on the provider's side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WorkState {
    /// Matched on chain; no valid manifest yet.
    AwaitingManifest,
    /// A valid manifest arrived; the workload is starting.
    Launching,
    /// The workload runs (billing on chain started at the match).
    Running,
    /// The workload ended by itself with this exit code (`0`: success; `None`: killed by a
    /// signal).
    Exited {
        /// Exit code, when the process had one.
        exit_code: Option<i32>,
    },
    /// Stopped at the tenant's request, or because the lease closed on chain.
    Stopped,
    /// The provider could not run it.
    Failed {
        /// Why.
        reason: String,
    },
}

impl WorkState {
    /// Whether the workload will not run (again).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            WorkState::Exited { .. } | WorkState::Stopped | WorkState::Failed { .. }
        )
    }
}

/// `GET /lease/{id}/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The lease (its order id on chain).
    pub lease: u64,
    /// The lease's tenant as recorded on chain.
    pub tenant: Address,
    /// The workload's state.
    pub work: WorkState,
    /// Whether the lease is still open on chain, as the provider last saw it.
    pub open_on_chain: bool,
    /// Unix seconds when the workload started running.
    pub started_at: Option<u64>,
    /// Unix seconds when it ended.
    pub ended_at: Option<u64>,
    /// The workload's recent activity (time since its last output line, GPU utilisation
    /// when measured), for the tenant's idle detector; absent when the node cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<spheron_core::Activity>,
}

/// `PUT /lease/{id}/workdir`: the working directory archive the provider stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkdirReceipt {
    /// The lease.
    pub lease: u64,
    /// keccak-256 of the archive, `0x` hex (what the manifest's workload must name).
    pub hash: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// `GET /status`: the node as a whole (unauthenticated, nothing lease-specific).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The provider's chain account.
    pub provider: Address,
    /// Its human name.
    pub name: String,
    /// Region label.
    pub region: String,
    /// GPU models offered.
    pub models: Vec<GpuModel>,
    /// Inventory now (free GPUs per node).
    pub inventory: Inventory,
    /// Leases whose workload runs.
    pub running_leases: usize,
    /// The last chain block the node has processed.
    pub last_block: u64,
    /// Software version.
    pub version: String,
}

/// `POST /quote`: what the provider would bid on a request now (unauthenticated; nothing is
/// published, reserved or promised: the bid on an order decides).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteReply {
    /// The provider's chain account.
    pub provider: Address,
    /// Its bid, or `None` when it would not bid (no fitting free GPUs, price over the ceiling).
    pub bid: Option<QuotedBid>,
}

/// A provider's would-be bid in a [`QuoteReply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotedBid {
    /// The GPU model it would offer.
    pub model: GpuModel,
    /// Its price per GPU-hour in base units of the payment token (a decimal string: JSON
    /// numbers do not hold 128 bits).
    pub price_per_gpu_hour: String,
    /// GPUs of that model free now, on its largest machine.
    pub free_gpus: u32,
}

/// Machine-readable reason of a refused gateway request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No signature headers (401).
    Unsigned,
    /// The signature does not parse or does not cover this request (401).
    BadSignature,
    /// The request or manifest expired, or expires too far in the future (401).
    Expired,
    /// The nonce was used before (401).
    Replayed,
    /// The signer is not the lease's tenant on chain (403).
    WrongTenant,
    /// The manifest names another provider (403).
    WrongProvider,
    /// The manifest names another lease, chain or contract (403).
    WrongLease,
    /// The manifest's workload hash does not match the workload sent (400).
    WorkloadMismatch,
    /// No such lease on chain, or not this provider's (404).
    UnknownLease,
    /// The lease is not active on chain (409).
    LeaseNotActive,
    /// A manifest for this lease was already accepted (409).
    AlreadyLaunched,
    /// The request body or parameters are malformed (400).
    BadRequest,
    /// The node could not reach the chain or its launcher (503).
    Unavailable,
    /// Anything else that went wrong on the provider's side (500).
    Internal,
    /// The body is larger than the route accepts (413): a working directory over the limit.
    TooLarge,
    /// No such file in the lease's working directory, or it is no longer kept (404).
    NoSuchFile,
    /// The server presented another TLS certificate than the one its registration pins
    /// (`cert_hash`): a client-side refusal, never sent by a gateway (502 if it ever were).
    UntrustedCertificate,
    /// The lease token sent to a port is not that lease's (401).
    BadToken,
    /// The lease's workload declared no such port (404).
    NoSuchPort,
    /// The lease's workload does not run (yet or any more): its ports are closed (409).
    NotRunning,
    /// The workload's port did not answer a proxied request (502).
    UpstreamFailed,
    /// The workload's port did not answer a proxied request in time (504).
    UpstreamTimeout,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unsigned
            | ErrorCode::BadSignature
            | ErrorCode::Expired
            | ErrorCode::Replayed
            | ErrorCode::BadToken => StatusCode::UNAUTHORIZED,
            ErrorCode::WrongTenant | ErrorCode::WrongProvider | ErrorCode::WrongLease => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::WorkloadMismatch | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::UnknownLease | ErrorCode::NoSuchFile | ErrorCode::NoSuchPort => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::LeaseNotActive | ErrorCode::AlreadyLaunched | ErrorCode::NotRunning => {
                StatusCode::CONFLICT
            }
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::UntrustedCertificate | ErrorCode::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// The JSON body of every refused request: `{"error": "wrong_tenant", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{error:?}: {message}")]
pub struct GatewayError {
    /// What kind of refusal.
    pub error: ErrorCode,
    /// Details for a human.
    pub message: String,
}

impl GatewayError {
    /// An error of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        GatewayError {
            error: code,
            message: message.into(),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        (self.error.status(), axum::Json(self)).into_response()
    }
}
