//! Matching on chain inputs only: the order's spec, its bids (frozen after the deadline), the
//! bidders' profiles from the on-chain registry at the order's reference block, and the seed
//! the market derives from the chain (`seedOf`). No measured latency enters. Every operator
//! runs it and signs the result; the tenant runs the same code to explain the decision (the
//! score breakdown and every provider skipped).

use crate::error::{Error, Result};
use crate::registry::provider_from_record;
use alloy::primitives::Address;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use spheron_chain::bindings::SpheronMarket;
use spheron_chain::registry::model_of;
use spheron_chain::{Chain, registry};
use spheron_core::{
    AccountId, Amount, Bid, Candidate, GpuModel, GpuRequest, Matcher, MatcherConfig, Order,
    OrderId, RejectReason, Rejection, Timestamp, TrustTier, WeightedMatcher,
};
use std::collections::BTreeMap;

/// Version of the matching rules below; bump when they change.
pub const MATCHER_VERSION: u32 = 1;

/// A bid as the chain holds it (the latest per provider).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBid {
    /// The bidder.
    pub provider: Address,
    /// Price per GPU-hour, base units.
    pub price: u128,
    /// The model offered (`None`: not a catalog name).
    pub model: Option<GpuModel>,
}

/// The request an order without a readable spec stands for: any model, the on-chain count,
/// duration and ceiling.
pub fn bare_request(gpus: u32, duration_secs: u32, ceiling: u128) -> GpuRequest {
    GpuRequest {
        models: Vec::new(),
        min_memory_gib: 0,
        count: gpus,
        duration_secs: u64::from(duration_secs),
        max_price_per_gpu_hour: Amount(ceiling),
        regions: Vec::new(),
        deny_regions: Vec::new(),
        location: None,
        max_latency_ms: None,
        min_tier: TrustTier(0),
        allow_providers: Vec::new(),
        deny_providers: Vec::new(),
        max_spend: None,
        idle_timeout_secs: None,
    }
}

/// The request an order's spec stands for, when it agrees with what the contract locked
/// (`bare`, from [`bare_request`]); `None` for an unreadable or disagreeing spec.
pub fn spec_request(spec: &[u8], bare: &GpuRequest) -> Option<GpuRequest> {
    let r: GpuRequest = serde_json::from_slice(spec).ok()?;
    (r.count == bare.count
        && r.duration_secs == bare.duration_secs
        && r.max_price_per_gpu_hour == bare.max_price_per_gpu_hour)
        .then_some(r)
}

/// The default matcher of a round with the chain's seed `seed` (the market's `seedOf`).
pub fn matcher(seed: u64) -> Result<WeightedMatcher> {
    Ok(WeightedMatcher::new(MatcherConfig {
        round_seed: seed,
        stake_half: Amount(1_000 * 10u128.pow(18)),
        ..Default::default()
    })?)
}

/// The outcome of a round.
#[derive(Clone, Debug)]
pub struct Round {
    /// The ranking (best first) with every rejection.
    pub ranking: spheron_core::Ranking,
}

/// What a round decides on, all of it read from the chain.
#[derive(Clone, Copy, Debug)]
pub struct RoundInput<'a> {
    /// The order id.
    pub id: u64,
    /// Its tenant.
    pub tenant: Address,
    /// Its request (from the order's spec).
    pub request: &'a GpuRequest,
    /// Its bid deadline, unix seconds.
    pub deadline: u64,
    /// Its bids (the latest per provider).
    pub bids: &'a [ChainBid],
    /// The block the registry is read at (`None`: the latest).
    pub block: Option<u64>,
}

/// Ranks the round's bids with `matcher`, the bidders' profiles read from the registry.
pub async fn rank(
    chain: &Chain,
    market: Address,
    matcher: &dyn Matcher,
    input: RoundInput<'_>,
) -> Result<Round> {
    let RoundInput {
        id,
        tenant,
        request,
        deadline,
        bids,
        block,
    } = input;
    let order = Order {
        id: OrderId(id),
        tenant: AccountId(tenant.into_array()),
        request: request.clone(),
        created_at: Timestamp(0),
        bid_deadline: Timestamp(deadline.saturating_mul(1000)),
    };
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for b in bids {
        let pid = AccountId(b.provider.into_array());
        let Some(model) = b.model else {
            skipped.push(Rejection {
                provider: pid,
                reason: RejectReason::Other("bid names no catalog GPU model".into()),
            });
            continue;
        };
        let record = registry::provider_at(chain, market, b.provider, block).await?;
        let provider = match record.as_ref().map(provider_from_record) {
            Some(Ok(p)) => p,
            Some(Err(why)) => {
                skipped.push(Rejection {
                    provider: pid,
                    reason: RejectReason::Other(why),
                });
                continue;
            }
            None => {
                skipped.push(Rejection {
                    provider: pid,
                    reason: RejectReason::Other("not registered".into()),
                });
                continue;
            }
        };
        if provider.banned {
            skipped.push(Rejection {
                provider: pid,
                reason: RejectReason::Banned,
            });
            continue;
        }
        candidates.push(Candidate {
            profile: provider.profile(model),
            bid: Bid {
                order: OrderId(id),
                provider: pid,
                model,
                price_per_gpu_hour: Amount(b.price),
                placed_at: Timestamp(0),
            },
        });
    }
    let mut ranking = matcher.rank(&order, &candidates)?;
    ranking.rejected.extend(skipped);
    Ok(Round { ranking })
}

/// The first block stamped after `deadline`, searched from `from` (the order's block).
pub(crate) async fn reference_block(chain: &Chain, from: u64, deadline: u64) -> Result<u64> {
    let stamp = |n: u64| async move {
        chain
            .provider()
            .get_block_by_number(n.into())
            .await
            .map_err(|e| Error::Chain(spheron_chain::Error::Rpc(e.to_string())))?
            .map(|b| b.header.timestamp)
            .ok_or_else(|| Error::Chain(spheron_chain::Error::Rpc(format!("no block {n}"))))
    };
    let mut hi = spheron_chain::follow::head(chain).await?;
    if stamp(hi).await? <= deadline {
        return Err(Error::config(
            "order",
            "no block after the deadline yet".to_string(),
        ));
    }
    let mut lo = from;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if stamp(mid).await? > deadline {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(hi)
}

/// The order's bids as of block `at`: the latest per provider, withdrawn ones left out.
pub(crate) async fn bids_at(
    chain: &Chain,
    market: Address,
    id: u64,
    from: u64,
    at: u64,
) -> Result<Vec<ChainBid>> {
    let filter = alloy::rpc::types::Filter::new()
        .address(market)
        .event_signature(SpheronMarket::BidPlaced::SIGNATURE_HASH)
        .topic1(B256::from(alloy::primitives::U256::from(id)))
        .from_block(from)
        .to_block(at);
    let logs = chain
        .provider()
        .get_logs(&filter)
        .await
        .map_err(|e| Error::Chain(spheron_chain::Error::Rpc(e.to_string())))?;
    let mut latest: BTreeMap<Address, Option<spheron_core::GpuModel>> = BTreeMap::new();
    for l in &logs {
        if let Ok(ev) = SpheronMarket::BidPlaced::decode_log(&l.inner) {
            latest.insert(ev.provider, model_of(ev.model));
        }
    }
    let m = SpheronMarket::new(market, chain.provider().clone());
    let mut out = Vec::new();
    for (provider, model) in latest {
        let b = m
            .getBid(id, provider)
            .block(alloy::eips::BlockId::number(at))
            .call()
            .await
            .map_err(|e| Error::Chain(spheron_chain::client::decode(e)))?;
        let price = b.price.to::<u128>();
        if price > 0 {
            out.push(ChainBid {
                provider,
                price,
                model,
            });
        }
    }
    Ok(out)
}
