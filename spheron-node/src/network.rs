//! `network.json`: what every party of a network reads to find the chain, the contracts, the
//! payment token and (on a devnet) the funded tenant accounts and the running parties.

use crate::error::{Error, Result};
use alloy::primitives::Address;
use serde::{Deserialize, Serialize};
use spheron_core::Token;
use std::path::{Path, PathBuf};

/// The token rents are paid in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentToken {
    /// ERC-20 address.
    pub address: Address,
    /// Symbol, e.g. `USDS`.
    pub symbol: String,
    /// Decimals of its base unit.
    pub decimals: u8,
}

impl PaymentToken {
    /// The core token description (for parsing and formatting amounts).
    pub fn token(&self) -> Token {
        Token {
            symbol: self.symbol.clone(),
            decimals: self.decimals,
        }
    }
}

/// A funded development account (devnets only: never put real keys in a network file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevAccount {
    /// The account.
    pub address: Address,
    /// Its private key, 0x-hex.
    pub key: String,
}

/// A running party of a devnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// `provider`, `operator` or `verifier`.
    pub role: String,
    /// Its chain account.
    pub address: Address,
    /// Its OS process id.
    pub pid: u32,
    /// Its gateway URL (providers), else empty.
    pub endpoint: String,
    /// The command line that starts it again (devnets), e.g. after a crash.
    #[serde(default)]
    pub restart: Vec<String>,
}

/// The contents of `network.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFile {
    /// JSON-RPC URL of the chain.
    pub rpc_url: String,
    /// Chain id.
    pub chain_id: u64,
    /// The `SpheronMarket` contract.
    pub market: Address,
    /// The `SpheronOperators` contract (operator quorum and verifiers).
    pub operators: Address,
    /// The `SpheronAudit` contract (verifiers' checks, cases, rewards, tiers), when deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Address>,
    /// The native SPHN token (stake; no fee).
    pub sphn: Address,
    /// The token rents are paid in.
    pub payment: PaymentToken,
    /// The block the market was deployed in: followers start there.
    pub deploy_block: u64,
    /// Bid window of orders published by clients of this network, seconds.
    pub bid_window_secs: u32,
    /// Funded tenant accounts (devnets).
    #[serde(default)]
    pub tenants: Vec<DevAccount>,
    /// Running parties (devnets).
    #[serde(default)]
    pub parties: Vec<Party>,
}

impl NetworkFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<NetworkFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(path.display().to_string(), format!("cannot read: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::config(
                path.display().to_string(),
                format!("not a network file: {e}"),
            )
        })
    }

    /// Writes it to `path` atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::config("network", e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Where `spheron devnet` keeps its files when no `--dir` is given:
/// `$SPHERON_HOME/devnet`, else `${XDG_DATA_HOME:-~/.local/share}/spheron/devnet`.
pub fn default_devnet_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("SPHERON_HOME") {
        return PathBuf::from(h).join("devnet");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("spheron/devnet")
}

/// Parses a 0x-hex private key.
pub fn parse_key(key: &str) -> Result<alloy::signers::local::PrivateKeySigner> {
    key.trim()
        .parse()
        .map_err(|e| Error::config("key", format!("not a 0x-hex private key: {e}")))
}

/// Reads and parses the 0x-hex private key in `key_file`.
pub fn load_key(key_file: &Path) -> Result<alloy::signers::local::PrivateKeySigner> {
    let text = std::fs::read_to_string(key_file)
        .map_err(|e| Error::config(key_file.display().to_string(), format!("cannot read: {e}")))?;
    parse_key(&text)
}

/// Registers `me` as a party of `kind` at `endpoint` in the operators contract of `net`
/// unless it is registered there already with stake: staking `stake` SPHN when it has none,
/// and re-registering (no new stake) when its endpoint changed.
pub async fn ensure_party(
    chain: &spheron_chain::Chain,
    net: &NetworkFile,
    me: Address,
    kind: spheron_chain::quorum::Kind,
    endpoint: &str,
    stake: u128,
) -> Result<()> {
    use spheron_chain::quorum;
    let party = quorum::parties(chain, net.operators, kind)
        .await
        .map_err(Error::Chain)?
        .into_iter()
        .find(|p| p.address == me);
    let staked = party.as_ref().is_some_and(|p| p.staked > 0);
    if staked && party.as_ref().is_some_and(|p| p.endpoint == endpoint) {
        return Ok(());
    }
    quorum::register_party(
        chain,
        net.operators,
        net.sphn,
        me,
        kind,
        endpoint,
        if staked { 0 } else { stake },
    )
    .await
    .map_err(Error::Chain)?;
    Ok(())
}
