//! The provider registry on chain: registering a provider (endpoint, region, public key, TLS
//! certificate hash and metadata), reading one provider or the whole enumerable registry, and
//! publishing orders with the tenant's full request attached.
//!
//! ```no_run
//! # async fn demo(chain: &spheron_chain::Chain, market: alloy::primitives::Address,
//! #               me: alloy::primitives::Address) -> spheron_chain::Result<()> {
//! use spheron_chain::registry::{self, Registration};
//!
//! registry::register(chain, market, me, &Registration {
//!     endpoint: "https://gpu.example:8443".into(),
//!     region: "eu-west".into(),
//!     public_key: vec![2u8; 33],
//!     cert_hash: Default::default(),
//!     meta: r#"{"name":"gpu-1"}"#.into(),
//! }).await?;
//! for p in registry::providers(chain, market).await? {
//!     println!("{} at {} (tier {}, can bid: {})", p.address, p.endpoint, p.tier, p.can_bid);
//! }
//! # Ok(()) }
//! ```

use crate::bindings::SpheronMarket;
use crate::client::{Chain, decode};
use crate::error::{Error, Result};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::DynProvider;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

/// How many addresses [`providers`] reads per `providersPage` call.
pub const PAGE_SIZE: u64 = 100;

/// How many providers [`providers`] reads at once.
const CONCURRENCY: usize = 8;

/// What a provider registers (or updates) about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The provider gateway's URL.
    pub endpoint: String,
    /// The provider's region, e.g. `eu-west`.
    pub region: String,
    /// The provider's public key.
    pub public_key: Vec<u8>,
    /// Hash of the gateway's TLS certificate; zero for plain-HTTP loopback devnets.
    pub cert_hash: B256,
    /// Opaque JSON (name, coordinates, GPU inventory summary), at most
    /// `MAX_META_BYTES` (4096) bytes.
    pub meta: String,
}

/// A registered provider as the chain knows it: its registration, trust tier and stake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    /// The provider's account.
    pub address: Address,
    /// The provider gateway's URL.
    pub endpoint: String,
    /// The provider's region.
    pub region: String,
    /// The provider's public key.
    pub public_key: Vec<u8>,
    /// Hash of the gateway's TLS certificate (zero: plain HTTP).
    pub cert_hash: B256,
    /// The opaque metadata document.
    pub meta: String,
    /// Trust tier, 0..=7 (higher is better).
    pub tier: u8,
    /// SPHN staked (base units).
    pub staked: u128,
    /// SPHN unbonding (base units).
    pub unbonding: u128,
    /// Whether the provider may bid now (registered and staked at least the minimum).
    pub can_bid: bool,
}

/// An order to publish with [`create_order`] (the contract assigns its id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderParams {
    /// The payment token (must be allowed by the market).
    pub token: Address,
    /// The ceiling per GPU-hour, in the token's base units.
    pub max_price_per_gpu_hour: u128,
    /// How many GPUs.
    pub gpus: u32,
    /// The lease's length in seconds.
    pub duration_secs: u32,
    /// How long providers may bid, in seconds from the block the order is mined in.
    pub bid_window_secs: u32,
    /// The tenant's full request (JSON), logged in an `OrderSpec` event, at most
    /// `MAX_SPEC_BYTES` (8192) bytes.
    pub spec: Vec<u8>,
}

fn instance(chain: &Chain, market: Address) -> SpheronMarket::SpheronMarketInstance<DynProvider> {
    SpheronMarket::new(market, chain.provider().clone())
}

/// Registers `from` (a signer of `chain`) as a provider on the market at `market`, or updates
/// its registration. Reverts come back as [`Error::Revert`], e.g. `EmptyRegistration` or
/// `MetaTooLong`.
pub async fn register(
    chain: &Chain,
    market: Address,
    from: Address,
    r: &Registration,
) -> Result<()> {
    let m = instance(chain, market);
    let call = m.register(
        r.endpoint.clone(),
        r.region.clone(),
        Bytes::from(r.public_key.clone()),
        r.cert_hash,
        r.meta.clone(),
    );
    chain.send(from, call).await?;
    Ok(())
}

/// The registration, tier and stake of `who`, or `None` when it never registered.
pub async fn provider(
    chain: &Chain,
    market: Address,
    who: Address,
) -> Result<Option<ProviderRecord>> {
    provider_at(chain, market, who, None).await
}

/// Like [`provider`], as of block `block` (`None`: the latest), so that parties reading at
/// one block read the same registry.
pub async fn provider_at(
    chain: &Chain,
    market: Address,
    who: Address,
    block: Option<u64>,
) -> Result<Option<ProviderRecord>> {
    let m = instance(chain, market);
    let at = block.map_or(alloy::eips::BlockId::latest(), alloy::eips::BlockId::number);
    let info_call = m.providerInfo(who).block(at);
    let stake_call = m.stakeOf(who).block(at);
    let can_bid_call = m.canBid(who).block(at);
    let (info, stake, can_bid) = futures::try_join!(
        async { info_call.call().await.map_err(decode) },
        async { stake_call.call().await.map_err(decode) },
        async { can_bid_call.call().await.map_err(decode) },
    )?;
    if !info.registered {
        return Ok(None);
    }
    Ok(Some(ProviderRecord {
        address: who,
        endpoint: info.endpoint,
        region: info.region,
        public_key: info.publicKey.to_vec(),
        cert_hash: info.certHash,
        meta: info.meta,
        tier: info.tier,
        staked: stake.staked,
        unbonding: stake.unbonding,
        can_bid,
    }))
}

/// The addresses of every registered provider, in order of first registration, read in
/// pages of [`PAGE_SIZE`].
pub async fn provider_addresses(chain: &Chain, market: Address) -> Result<Vec<Address>> {
    let m = instance(chain, market);
    let count = m.providerCount().call().await.map_err(decode)?;
    let count = u64::try_from(count)
        .map_err(|_| Error::Rpc(format!("providerCount {count} does not fit 64 bits")))?;
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or_default());
    let mut start = 0u64;
    while start < count {
        let page = m
            .providersPage(U256::from(start), U256::from(PAGE_SIZE))
            .call()
            .await
            .map_err(decode)?;
        if page.is_empty() {
            break;
        }
        start += page.len() as u64;
        out.extend(page);
    }
    Ok(out)
}

/// Every registered provider, in order of first registration (see [`provider`]).
pub async fn providers(chain: &Chain, market: Address) -> Result<Vec<ProviderRecord>> {
    let addresses = provider_addresses(chain, market).await?;
    futures::stream::iter(addresses)
        .map(|a| async move {
            provider(chain, market, a).await?.ok_or_else(|| {
                Error::Rpc(format!("{a} is in the provider list but not registered"))
            })
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

/// An order the contract created: its id (assigned in sequence) and the block it was mined in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedOrder {
    /// The order id (also the lease id once matched).
    pub id: u64,
    /// The block the order was mined in.
    pub block: u64,
}

/// Creates an order from `from` (a signer of `chain`) with `createOrderWithSpec`, locking its
/// budget and logging `o.spec` in an `OrderSpec` event; the id comes from the receipt's
/// `OrderCreated`. Reverts come back as [`Error::Revert`], e.g. `InsufficientBalance` or
/// `SpecTooLong`.
pub async fn create_order(
    chain: &Chain,
    market: Address,
    from: Address,
    o: &OrderParams,
) -> Result<CreatedOrder> {
    let m = instance(chain, market);
    let call = m.createOrderWithSpec(
        o.token,
        o.max_price_per_gpu_hour,
        o.gpus,
        o.duration_secs,
        o.bid_window_secs,
        Bytes::from(o.spec.clone()),
    );
    let receipt = chain.send(from, call).await?;
    let block = receipt.block_number.ok_or_else(|| {
        Error::Rpc(format!(
            "receipt of {} has no block number",
            receipt.transaction_hash
        ))
    })?;
    let id = receipt
        .inner
        .logs()
        .iter()
        .find_map(|l| {
            <SpheronMarket::OrderCreated as alloy::sol_types::SolEvent>::decode_log_data(l.data())
                .ok()
        })
        .map(|ev| ev.id)
        .ok_or_else(|| {
            Error::Rpc(format!(
                "receipt of {} has no OrderCreated",
                receipt.transaction_hash
            ))
        })?;
    Ok(CreatedOrder { id, block })
}

/// A GPU model's catalog name as the `bytes32` bids carry (zero-padded).
pub fn model_bytes(m: spheron_core::GpuModel) -> B256 {
    let mut b = [0u8; 32];
    let name = m.name().as_bytes();
    let n = name.len().min(32);
    b[..n].copy_from_slice(&name[..n]);
    B256::from(b)
}

/// The GPU model named by a bid's `bytes32` (its catalog name, zero-padded), if known.
pub fn model_of(b: B256) -> Option<spheron_core::GpuModel> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(32);
    std::str::from_utf8(&b[..end]).ok()?.parse().ok()
}

/// The market's order states, as `getOrder(id).state` returns them.
pub mod order_state {
    /// Never created.
    pub const NONE: u8 = 0;
    /// Taking bids, or waiting for its match.
    pub const OPEN: u8 = 1;
    /// Matched by the operator quorum; the provider has not confirmed the start yet.
    pub const MATCHED: u8 = 2;
    /// Running and billed.
    pub const LEASED: u8 = 3;
    /// Closed and settled.
    pub const CLOSED: u8 = 4;
    /// Cancelled (by its tenant, expired unmatched, or not started in time), fully refunded.
    pub const CANCELLED: u8 = 5;

    /// Whether a lease in `state` holds the provider's GPUs (matched or running).
    pub fn is_live(state: u8) -> bool {
        state == MATCHED || state == LEASED
    }
}
