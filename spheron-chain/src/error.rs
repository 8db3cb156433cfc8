//! The error type of spheron-chain.

use alloy::primitives::Address;

/// Everything that can go wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No anvil binary was found.
    #[error(
        "anvil not found (looked in: {searched}). Install it with `bash scripts/chain-setup.sh` \
         (npm package @foundry-rs/anvil-linux-amd64) or point SPHERON_ANVIL at an anvil binary"
    )]
    AnvilMissing {
        /// The places searched.
        searched: String,
    },
    /// anvil was found but did not start.
    #[error("anvil failed to start: {0}")]
    Anvil(String),
    /// The RPC endpoint failed or returned something unexpected.
    #[error("rpc error: {0}")]
    Rpc(String),
    /// A contract call reverted with a named error.
    #[error("{contract} reverted with {name}")]
    Revert {
        /// The contract.
        contract: &'static str,
        /// The custom error, with its arguments (e.g. `InsufficientBalance { needed: 5, available: 1 }`).
        name: String,
    },
    /// A transaction was mined but failed.
    #[error("transaction {0} failed on chain")]
    TxFailed(String),
    /// A value given to this crate is outside what it accepts.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What was wrong and what is expected.
        reason: String,
    },
    /// A transaction must come from an account whose key this client does not hold.
    #[error("no signer for account {0}: register its key with the client's wallet")]
    NoSigner(Address),
    /// Signing or recovering a signature failed.
    #[error("signature error: {0}")]
    Signature(String),
    /// A manifest was signed by someone other than the lease's tenant.
    #[error(
        "manifest for lease {lease} signed by {signer}, but the lease's tenant on chain is {tenant}"
    )]
    WrongManifestSigner {
        /// The lease.
        lease: u64,
        /// Who signed.
        signer: Address,
        /// The tenant recorded on chain.
        tenant: Address,
    },
}

impl Error {
    /// Whether retrying may help (transport trouble, not a revert or bad input).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Rpc(_))
    }

    /// The name of the custom error a revert carried, e.g. `"BidAboveCeiling"`.
    pub fn revert_name(&self) -> Option<&str> {
        match self {
            Error::Revert { name, .. } => {
                Some(name.split([' ', '(', '{']).next().unwrap_or_default())
            }
            _ => None,
        }
    }
}

impl From<Error> for spheron_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, reason } => spheron_core::Error::InvalidField { field, reason },
            other => spheron_core::Error::Backend {
                backend: "evm",
                message: other.to_string(),
            },
        }
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
