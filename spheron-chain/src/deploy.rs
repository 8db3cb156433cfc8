//! Deploying the contracts: the market on any chain, or a complete local setup with test
//! tokens on a development node.

use crate::bindings::{SpheronMarket, SpheronOperators, TestToken};
use crate::client::{Chain, decode};
use crate::error::{Error, Result};
use alloy::primitives::{Address, FixedBytes};
use serde::{Deserialize, Serialize};

/// Addresses of a spheron deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// The `SpheronMarket` contract.
    pub market: Address,
    /// The `SpheronOperators` contract (operator quorum and verifiers).
    pub operators: Address,
    /// The native SPHN token (staking, no fee).
    pub sphn: Address,
    /// A second payment token (the 6-decimal stable token in local setups).
    pub stable: Address,
}

/// Parameters of a market deployment (and of its operators contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketConfig {
    /// Seconds between an unstake request and its withdrawal (providers, operators and
    /// verifiers alike).
    pub unbonding_secs: u64,
    /// Minimum provider stake (SPHN base units) to bid.
    pub min_stake: u128,
    /// Share of a slash paid to its reporter, basis points (at most 1000).
    pub slash_reporter_bps: u16,
    /// Most of a provider's stake one verdict slashes, basis points.
    pub max_slash_bps: u16,
    /// Protocol fee charged on provider payouts in the stable token, basis points (SPHN is
    /// always fee-free).
    pub stable_fee_bps: u16,
    /// Delay before a new default admin takes over (AccessControlDefaultAdminRules).
    pub admin_delay_secs: u64,
    /// Seconds after an order's bid deadline within which its match must land.
    pub match_window_secs: u32,
    /// Seconds after a match within which the provider must confirm the start.
    pub start_window_secs: u32,
    /// Minimum stake of an operator or verifier (SPHN base units).
    pub operator_min_stake: u128,
    /// Share of an equivocating operator's stake slashed, basis points.
    pub equivocation_slash_bps: u16,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            unbonding_secs: 7 * 24 * 3600,
            min_stake: 100 * 10u128.pow(18),
            slash_reporter_bps: 1_000,
            max_slash_bps: 5_000,
            stable_fee_bps: 100,
            admin_delay_secs: 2 * 24 * 3600,
            match_window_secs: 120,
            start_window_secs: 300,
            operator_min_stake: 1_000 * 10u128.pow(18),
            equivocation_slash_bps: 5_000,
        }
    }
}

/// The role identifiers of the market contract.
pub mod roles {
    use alloy::primitives::{FixedBytes, keccak256};

    /// May pause the market.
    pub fn pauser() -> FixedBytes<32> {
        keccak256("PAUSER_ROLE")
    }
    /// May set trust tiers.
    pub fn tier() -> FixedBytes<32> {
        keccak256("TIER_ROLE")
    }
}

fn bits<const B: usize, const L: usize>(
    v: u64,
    field: &'static str,
) -> Result<alloy::primitives::Uint<B, L>> {
    alloy::primitives::Uint::<B, L>::try_from(v).map_err(|_| Error::Invalid {
        field,
        reason: format!("{v} does not fit {B} bits"),
    })
}

/// Deploys `SpheronOperators` and `SpheronMarket` administered by `admin` (a signer of
/// `chain`) with `sphn` as the native token. Returns `(market, operators)`.
pub async fn deploy_market(
    chain: &Chain,
    admin: Address,
    sphn: Address,
    config: &MarketConfig,
) -> Result<(Address, Address)> {
    if !chain.has_signer(admin) {
        return Err(Error::NoSigner(admin));
    }
    let unbonding = bits::<40, 1>(config.unbonding_secs, "unbonding_secs")?;
    let _guard = chain.lock().await;
    let operators = SpheronOperators::deploy_builder(
        chain.provider(),
        sphn,
        unbonding,
        config.operator_min_stake,
        config.equivocation_slash_bps,
        config.slash_reporter_bps,
    )
    .from(admin)
    .deploy()
    .await
    .map_err(decode)?;
    let params = SpheronMarket::Params {
        admin,
        adminDelay: bits::<48, 1>(config.admin_delay_secs, "admin_delay_secs")?,
        sphn,
        operators,
        unbondingPeriod: unbonding,
        minStake: config.min_stake,
        slashReporterBps: config.slash_reporter_bps,
        maxSlashBps: config.max_slash_bps,
        matchWindowSecs: config.match_window_secs,
        startWindowSecs: config.start_window_secs,
    };
    let market = SpheronMarket::deploy_builder(chain.provider(), params)
        .from(admin)
        .deploy()
        .await
        .map_err(decode)?;
    Ok((market, operators))
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

/// A complete local setup: SPHN (18 decimals) and USDS (6 decimals) test tokens, the
/// operators contract and the market, the stable token allowed with `config.stable_fee_bps`,
/// and `operator` granted the tier role. Operators and verifiers register themselves
/// ([`crate::quorum::register_party`]).
pub async fn deploy_local(
    chain: &Chain,
    admin: Address,
    operator: Address,
    config: &MarketConfig,
) -> Result<Addresses> {
    let sphn = deploy_test_token(chain, admin, "Spheron", "SPHN", 18).await?;
    let stable = deploy_test_token(chain, admin, "Spheron USD", "USDS", 6).await?;
    let (market, operators) = deploy_market(chain, admin, sphn, config).await?;
    let m = SpheronMarket::new(market, chain.provider().clone());
    chain
        .send(admin, m.configureToken(stable, true, config.stable_fee_bps))
        .await?;
    grant(chain, &m, admin, roles::tier(), operator).await?;
    Ok(Addresses {
        market,
        operators,
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
