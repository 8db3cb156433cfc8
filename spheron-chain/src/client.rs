//! [`Chain`]: an RPC connection with the signing keys of the accounts it acts for, which
//! sends transactions one at a time and turns reverts into named errors.

use crate::bindings::{ReentrantToken, SpheronMarket, TestToken};
use crate::bindings::{SpheronAudit, SpheronOperators};
use crate::error::{Error, Result};
use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolInterface;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long to wait for a transaction to be mined before giving up with [`Error::Rpc`].
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// An RPC connection plus the keys of the accounts it may send from.
///
/// Transactions are sent one at a time (so nonces never race) and awaited until mined.
pub struct Chain {
    provider: DynProvider,
    signers: BTreeSet<Address>,
    tx_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("signers", &self.signers)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// Connects to `rpc_url` (http or https) with the given signing keys; the first one is the
    /// default sender.
    pub fn connect(
        rpc_url: &str,
        signers: impl IntoIterator<Item = PrivateKeySigner>,
    ) -> Result<Chain> {
        let url: alloy::transports::http::reqwest::Url =
            rpc_url.parse().map_err(|e| Error::Invalid {
                field: "rpc_url",
                reason: format!("{rpc_url:?} is not a URL: {e}"),
            })?;
        let mut signers = signers.into_iter();
        let first = signers.next().ok_or_else(|| Error::Invalid {
            field: "signers",
            reason: "at least one signing key is needed".into(),
        })?;
        let mut addrs = BTreeSet::from([first.address()]);
        let mut wallet = EthereumWallet::new(first);
        for s in signers {
            addrs.insert(s.address());
            wallet.register_signer(s);
        }
        // A local node mines at once: poll receipts often.
        let local = url
            .host_str()
            .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        let poll = if local {
            Duration::from_millis(5)
        } else {
            Duration::from_secs(2)
        };
        let client = RpcClient::new_http(url).with_poll_interval(poll);
        // Nonces are read from the node for every transaction (not cached), so a transaction
        // refused before broadcast never leaves a gap that would stall the next one.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(wallet)
            .connect_client(client)
            .erased();
        Ok(Chain {
            provider,
            signers: addrs,
            tx_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The underlying alloy provider (with the wallet).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Whether this client holds the key of `account`.
    pub fn has_signer(&self, account: Address) -> bool {
        self.signers.contains(&account)
    }

    /// The accounts this client can send from.
    pub fn signers(&self) -> impl Iterator<Item = Address> + '_ {
        self.signers.iter().copied()
    }

    /// Holds the send lock: transactions sent by others wait until the guard drops. Used to
    /// make a clock warp and the transaction after it atomic.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.tx_lock.lock().await
    }

    /// Sends `call` from `from` and waits for it to be mined. Call with the guard from
    /// [`Chain::lock`] held.
    pub async fn send_locked<D: CallDecoder + Unpin>(
        &self,
        _guard: &tokio::sync::MutexGuard<'_, ()>,
        from: Address,
        call: CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt> {
        if !self.has_signer(from) {
            return Err(Error::NoSigner(from));
        }
        let pending = call.from(from).send().await.map_err(decode)?;
        mined(pending).await
    }

    /// Sends `call` from `from` and waits for it to be mined. The send lock is held only
    /// until the node has accepted the transaction (its nonce is then taken), so several
    /// transactions can wait for their blocks at once.
    pub async fn send<D: CallDecoder + Unpin>(
        &self,
        from: Address,
        call: CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt> {
        if !self.has_signer(from) {
            return Err(Error::NoSigner(from));
        }
        let pending = {
            let _guard = self.lock().await;
            call.from(from).send().await.map_err(decode)?
        };
        mined(pending).await
    }

    /// The latest block's timestamp, in seconds.
    pub async fn block_time(&self) -> Result<u64> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| Error::Rpc(e.to_string()))?
            .ok_or_else(|| Error::Rpc("no latest block".into()))?;
        Ok(block.header.timestamp)
    }
}

/// Waits for a sent transaction's receipt; a reverted one is [`Error::TxFailed`].
async fn mined(
    pending: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
) -> Result<TransactionReceipt> {
    let receipt = pending
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(|e| Error::Rpc(e.to_string()))?;
    if !receipt.status() {
        return Err(Error::TxFailed(receipt.transaction_hash.to_string()));
    }
    Ok(receipt)
}

/// Turns a contract error into [`Error::Revert`] with the custom error's name when the
/// revert data decodes against our contracts' ABIs, else [`Error::Rpc`].
pub fn decode(e: alloy::contract::Error) -> Error {
    if let Some(err) = e.as_decoded_interface_error::<SpheronMarket::SpheronMarketErrors>() {
        return Error::Revert {
            contract: "SpheronMarket",
            name: strip(format!("{err:?}")),
        };
    }
    if let Some(err) = e.as_decoded_interface_error::<SpheronOperators::SpheronOperatorsErrors>() {
        return Error::Revert {
            contract: "SpheronOperators",
            name: strip(format!("{err:?}")),
        };
    }
    if let Some(err) = e.as_decoded_interface_error::<SpheronAudit::SpheronAuditErrors>() {
        return Error::Revert {
            contract: "SpheronAudit",
            name: strip(format!("{err:?}")),
        };
    }
    if let Some(err) = e.as_decoded_interface_error::<TestToken::TestTokenErrors>() {
        return Error::Revert {
            contract: "ERC20",
            name: strip(format!("{err:?}")),
        };
    }
    if let Some(err) = e.as_decoded_interface_error::<ReentrantToken::ReentrantTokenErrors>() {
        return Error::Revert {
            contract: "ERC20",
            name: strip(format!("{err:?}")),
        };
    }
    if let Some(data) = e.as_revert_data() {
        return Error::Revert {
            contract: "unknown",
            name: format!("unknown error data 0x{}", alloy::hex::encode(&data)),
        };
    }
    Error::Rpc(e.to_string())
}

/// `Variant(Variant { .. })` → `Variant { .. }`.
fn strip(dbg: String) -> String {
    match dbg.split_once('(') {
        Some((_, inner)) if inner.ends_with(')') => inner[..inner.len() - 1].to_string(),
        _ => dbg,
    }
}

/// Decodes a revert name from any [`SolInterface`] error set (for callers with their own ABIs).
pub fn decode_with<E: SolInterface + std::fmt::Debug>(
    e: &alloy::contract::Error,
) -> Option<String> {
    e.as_decoded_interface_error::<E>()
        .map(|x| strip(format!("{x:?}")))
}
