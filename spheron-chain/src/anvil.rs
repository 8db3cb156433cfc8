//! The anvil harness: finds the anvil binary, starts a node on a free loopback port, and
//! deploys a local setup on it. The node stops when the [`TestChain`] drops.

use crate::client::Chain;
use crate::deploy::{Addresses, MarketConfig, deploy_local};
use crate::error::{Error, Result};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use std::path::PathBuf;

/// Where anvil is looked for, in order: `$SPHERON_ANVIL`, this crate's
/// `node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil` (installed by
/// `scripts/chain-setup.sh`), the spheron cache (`$XDG_CACHE_HOME` or `~/.cache`, then
/// `spheron/anvil/bin/anvil`), then `anvil` on `PATH`.
pub fn find_anvil() -> Result<PathBuf> {
    let mut searched = Vec::new();
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("SPHERON_ANVIL") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
    );
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        candidates.push(c.join("spheron/anvil/bin/anvil"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            candidates.push(dir.join("anvil"));
        }
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        searched.push(c.display().to_string());
    }
    Err(Error::AnvilMissing {
        searched: searched.join(", "),
    })
}

/// A running anvil node with a local spheron deployment.
pub struct TestChain {
    /// The node (killed on drop).
    pub anvil: AnvilInstance,
    /// A client holding every dev account's key.
    pub chain: Chain,
    /// The dev accounts: `[0]` admin, `[1]` operator (matcher, slasher, tier), the rest free.
    pub accounts: Vec<Address>,
    /// The deployed contracts.
    pub addresses: Addresses,
    /// The dev accounts' keys, in the order of `accounts`.
    pub keys: Vec<PrivateKeySigner>,
}

impl std::fmt::Debug for TestChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestChain")
            .field("endpoint", &self.anvil.endpoint())
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl TestChain {
    /// Starts anvil (20 funded dev accounts, loopback only) and deploys with `config`.
    pub async fn start(config: &MarketConfig) -> Result<TestChain> {
        let bin = find_anvil()?;
        let anvil = Anvil::at(bin)
            .args(["--host", "127.0.0.1", "--accounts", "20"])
            .try_spawn()
            .map_err(|e| Error::Anvil(e.to_string()))?;
        let keys: Vec<PrivateKeySigner> = anvil
            .keys()
            .iter()
            .map(|k| PrivateKeySigner::from(k.clone()))
            .collect();
        let accounts: Vec<Address> = keys.iter().map(|k| k.address()).collect();
        let chain = Chain::connect(&anvil.endpoint(), keys.clone())?;
        let addresses = deploy_local(&chain, accounts[0], accounts[1], config).await?;
        Ok(TestChain {
            anvil,
            chain,
            accounts,
            addresses,
            keys,
        })
    }

    /// The node's RPC URL.
    pub fn endpoint(&self) -> String {
        self.anvil.endpoint()
    }

    /// The admin account.
    pub fn admin(&self) -> Address {
        self.accounts[0]
    }

    /// The operator account (matcher, slasher and tier roles).
    pub fn operator(&self) -> Address {
        self.accounts[1]
    }
}
