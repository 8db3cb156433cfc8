//! The anvil harness: finds the anvil binary, starts a node on a free loopback port, and
//! deploys a local setup on it. The node stops when the [`TestChain`] drops.

use crate::client::Chain;
use crate::deploy::{Addresses, MarketConfig, deploy_local};
use crate::error::{Error, Result};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
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

/// How long to wait for anvil to start, in milliseconds.
const STARTUP_TIMEOUT_MS: u64 = 60_000;

/// How to run the anvil node of a [`TestChain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnvilOptions {
    /// Mine a block every this many seconds (`--block-time`) instead of one per transaction.
    pub block_time_secs: Option<u64>,
    /// How many funded dev accounts (at least 2: admin and operator).
    pub accounts: u32,
}

impl Default for AnvilOptions {
    fn default() -> Self {
        AnvilOptions {
            block_time_secs: None,
            accounts: 20,
        }
    }
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
    /// The block the market contract was deployed in (where a [`crate::Follower`] starts).
    pub deploy_block: u64,
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
    /// Starts anvil (20 funded dev accounts, loopback only, a block per transaction) and
    /// deploys with `config`.
    pub async fn start(config: &MarketConfig) -> Result<TestChain> {
        TestChain::start_with(config, &AnvilOptions::default()).await
    }

    /// Starts anvil as `opts` says (loopback only) and deploys with `config`.
    pub async fn start_with(config: &MarketConfig, opts: &AnvilOptions) -> Result<TestChain> {
        if opts.accounts < 2 {
            return Err(Error::Invalid {
                field: "accounts",
                reason: format!(
                    "{} dev accounts: at least 2 (admin, operator) are needed",
                    opts.accounts
                ),
            });
        }
        if opts.block_time_secs == Some(0) {
            return Err(Error::Invalid {
                field: "block_time_secs",
                reason: "0: use None to mine a block per transaction".into(),
            });
        }
        let bin = find_anvil()?;
        let mut args = vec![
            "--host".to_string(),
            "127.0.0.1".to_string(),
            "--accounts".to_string(),
            opts.accounts.to_string(),
        ];
        if let Some(secs) = opts.block_time_secs {
            args.extend(["--block-time".to_string(), secs.to_string()]);
        }
        // Generous: on a loaded machine anvil may take a while to print its accounts.
        let anvil = Anvil::at(bin)
            .args(args)
            .timeout(STARTUP_TIMEOUT_MS)
            .try_spawn()
            .map_err(|e| Error::Anvil(e.to_string()))?;
        let keys: Vec<PrivateKeySigner> = anvil
            .keys()
            .iter()
            .map(|k| PrivateKeySigner::from(k.clone()))
            .collect();
        let accounts: Vec<Address> = keys.iter().map(|k| k.address()).collect();
        let chain = Chain::connect(&anvil.endpoint(), keys.clone())?;
        let before = crate::follow::head(&chain).await?;
        let addresses = deploy_local(&chain, accounts[0], accounts[1], config).await?;
        let deploy_block = first_log_block(&chain, addresses.market, before + 1).await?;
        Ok(TestChain {
            anvil,
            chain,
            accounts,
            addresses,
            keys,
            deploy_block,
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

/// The first block from `from` on with a log of `contract` (its constructor logs, so for a
/// contract deployed after `from` this is its deployment block); `from` when it has none.
async fn first_log_block(chain: &Chain, contract: Address, from: u64) -> Result<u64> {
    let filter = Filter::new().address(contract).from_block(from);
    let logs = chain
        .provider()
        .get_logs(&filter)
        .await
        .map_err(|e| Error::Rpc(e.to_string()))?;
    Ok(logs
        .iter()
        .filter_map(|l| l.block_number)
        .min()
        .unwrap_or(from))
}
