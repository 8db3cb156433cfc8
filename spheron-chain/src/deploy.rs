//! Deploying the contracts: the market on any chain, or a complete local setup with test
//! tokens on a development node.

use crate::bindings::{SpheronMarket, TestToken};
use crate::client::{Chain, decode};
use crate::error::{Error, Result};
use alloy::primitives::{Address, FixedBytes};
use serde::{Deserialize, Serialize};

/// Addresses of a spheron deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// The `SpheronMarket` contract.
    pub market: Address,
    /// The native SPHN token (staking, no fee).
    pub sphn: Address,
    /// A second payment token (the 6-decimal stable token in local setups).
    pub stable: Address,
}

/// Parameters of a market deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketConfig {
    /// Seconds between an unstake request and its withdrawal.
    pub unbonding_secs: u64,
    /// Minimum stake (SPHN base units) to bid.
    pub min_stake: u128,
    /// Share of a slash paid to the reporting verifier, basis points (10000: all of it,
    /// which is what the `Escrow` trait's `slash` promises).
    pub slash_reporter_bps: u16,
    /// Protocol fee charged on provider payouts in the stable token, basis points (SPHN is
    /// always fee-free).
    pub stable_fee_bps: u16,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            unbonding_secs: 7 * 24 * 3600,
            min_stake: 1,
            slash_reporter_bps: 10_000,
            stable_fee_bps: 100,
        }
    }
}

/// The role identifiers of the market contract.
pub mod roles {
    use alloy::primitives::{FixedBytes, keccak256};

    /// May match orders to bids.
    pub fn matcher() -> FixedBytes<32> {
        keccak256("MATCHER_ROLE")
    }
    /// May slash stake.
    pub fn slasher() -> FixedBytes<32> {
        keccak256("SLASHER_ROLE")
    }
    /// May set trust tiers.
    pub fn tier() -> FixedBytes<32> {
        keccak256("TIER_ROLE")
    }
}

/// Deploys `SpheronMarket` administered by `admin` (a signer of `chain`) with `sphn` as the
/// native token.
pub async fn deploy_market(
    chain: &Chain,
    admin: Address,
    sphn: Address,
    config: &MarketConfig,
) -> Result<Address> {
    if !chain.has_signer(admin) {
        return Err(Error::NoSigner(admin));
    }
    let unbonding =
        alloy::primitives::Uint::<40, 1>::try_from(config.unbonding_secs).map_err(|_| {
            Error::Invalid {
                field: "unbonding_secs",
                reason: format!("{} does not fit 40 bits", config.unbonding_secs),
            }
        })?;
    let _guard = chain.lock().await;
    let builder = SpheronMarket::deploy_builder(
        chain.provider(),
        admin,
        sphn,
        unbonding,
        config.min_stake,
        config.slash_reporter_bps,
    )
    .from(admin);
    builder.deploy().await.map_err(decode)
}

/// Deploys a test token (anyone may mint; local networks only).
pub async fn deploy_test_token(
    chain: &Chain,
    from: Address,
    name: &str,
    symbol: &str,
    decimals: u8,
) -> Result<Address> {
    let _guard = chain.lock().await;
    TestToken::deploy_builder(
        chain.provider(),
        name.to_string(),
        symbol.to_string(),
        decimals,
    )
    .from(from)
    .deploy()
    .await
    .map_err(decode)
}

/// A complete local setup: SPHN (18 decimals) and USDS (6 decimals) test tokens, the market,
/// the stable token allowed with `config.stable_fee_bps`, and `operator` granted the matcher,
/// slasher and tier roles.
pub async fn deploy_local(
    chain: &Chain,
    admin: Address,
    operator: Address,
    config: &MarketConfig,
) -> Result<Addresses> {
    let sphn = deploy_test_token(chain, admin, "Spheron", "SPHN", 18).await?;
    let stable = deploy_test_token(chain, admin, "Spheron USD", "USDS", 6).await?;
    let market = deploy_market(chain, admin, sphn, config).await?;
    let m = SpheronMarket::new(market, chain.provider().clone());
    chain
        .send(admin, m.configureToken(stable, true, config.stable_fee_bps))
        .await?;
    for role in [roles::matcher(), roles::slasher(), roles::tier()] {
        grant(chain, &m, admin, role, operator).await?;
    }
    Ok(Addresses {
        market,
        sphn,
        stable,
    })
}

async fn grant(
    chain: &Chain,
    m: &SpheronMarket::SpheronMarketInstance<alloy::providers::DynProvider>,
    admin: Address,
    role: FixedBytes<32>,
    to: Address,
) -> Result<()> {
    chain.send(admin, m.grantRole(role, to)).await?;
    Ok(())
}
