//! Trust tiers on chain: the operator quorum computes each provider's tier once an epoch's
//! records are final and writes it with `SpheronAudit.submitTiers`.
//!
//! An epoch `e`'s records are final once epoch `e + 2` starts (verifiers post an epoch's
//! tallies during it or the next one; a tenant's rating counts for the epoch it was given
//! in). Every operator then reads the same inputs:
//!
//! - the providers that may bid and their tiers, at the *reference block* (the first block
//!   stamped at or after the start of epoch `e + 2`);
//! - uptime: the verifiers' passes and fails for `e` (`uptimeOf`);
//! - task completion: leases closed in `e` (completed) against matched orders cancelled
//!   unstarted in `e` (failed), from the market's events;
//! - feedback: the tenants' ratings given in `e` (`feedbackOf`);
//!
//! and runs the [`ReputationTierPolicy`] with the standard table. Hysteresis is kept on chain
//! by the tier itself: a provider climbs at most one tier per epoch and drops straight to the
//! tier it earned; an epoch without challenge results leaves it where it is. The result is
//! signed (EIP-712 `Tiers`), exchanged at `GET /v1/tiers/{epoch}` like matches, and
//! submitted once signers hold 2/3 of the operator stake at the epoch's end; the contract
//! then pays each provider its tier's reward.

use crate::error::{Error, Result};
use alloy::primitives::{Address, Signature};
use serde::{Deserialize, Serialize};
use spheron_chain::Chain;
use spheron_chain::audit;
use spheron_chain::bindings::SpheronMarket;
use spheron_chain::follow::{ChainEvent, Follower};
use spheron_core::provider::{ProviderStats, TrustTier};
use spheron_core::tier::{ReputationTierPolicy, TierConfig, TierHistory, TierPolicy};
use std::collections::{BTreeMap, BTreeSet};

/// One epoch's tiers as operators sign and exchange them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierResult {
    /// The epoch.
    pub epoch: u64,
    /// Providers, ascending.
    pub providers: Vec<Address>,
    /// Their tiers, in the same order.
    pub tiers: Vec<u8>,
}

/// A signed [`TierResult`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTiers {
    /// The result.
    pub result: TierResult,
    /// Who signed it.
    pub signer: Address,
    /// 65-byte signature, 0x-hex.
    pub signature: String,
}

/// The inputs of one provider's tier, as read from the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TierInputs {
    /// Tier held at the reference block.
    pub current: u8,
    /// The epoch's statistics.
    pub stats: ProviderStats,
}

fn chain_err(e: spheron_chain::Error) -> Error {
    Error::Chain(e)
}

/// The tier a provider holding `current` moves to with `stats` (see the module docs).
pub fn next_tier(policy: &ReputationTierPolicy, current: u8, stats: &ProviderStats) -> u8 {
    if stats.challenges_answered + stats.challenges_missed + stats.challenges_failed == 0 {
        return current;
    }
    let held = TrustTier::new(current).unwrap_or(TrustTier::UNRANKED);
    let target = policy
        .evaluate(held, stats, &TierHistory::default())
        .target
        .0;
    if target > current {
        current + 1
    } else {
        target
    }
}

/// The first block stamped at or after `t`.
async fn block_at(chain: &Chain, from: u64, t: u64) -> Result<u64> {
    crate::matching::reference_block(chain, from, t.saturating_sub(1)).await
}

/// Reads epoch `epoch`'s inputs and computes its tiers; `Ok(None)` while the epoch's
/// records are not final yet.
pub async fn compute(
    chain: &Chain,
    market: Address,
    audit_at: Address,
    deploy_block: u64,
    epoch: u64,
) -> Result<Option<(TierResult, BTreeMap<Address, TierInputs>)>> {
    let (start, end) = audit::epoch_bounds(chain, audit_at, epoch)
        .await
        .map_err(chain_err)?;
    let (final_at, _) = audit::epoch_bounds(chain, audit_at, epoch + 2)
        .await
        .map_err(chain_err)?;
    if chain.block_time().await? < final_at {
        return Ok(None);
    }
    let reference = block_at(chain, deploy_block, final_at).await?;
    let first = block_at(chain, deploy_block, start).await?;
    let last = block_at(chain, first, end).await?;

    // Providers and their tiers at the reference block.
    let m = SpheronMarket::new(market, chain.provider().clone());
    let at = alloy::eips::BlockId::number(reference);
    let count = m
        .providerCount()
        .block(at)
        .call()
        .await
        .map_err(|e| chain_err(spheron_chain::client::decode(e)))?;
    let page = m
        .providersPage(alloy::primitives::U256::ZERO, count)
        .block(at)
        .call()
        .await
        .map_err(|e| chain_err(spheron_chain::client::decode(e)))?;
    let mut inputs: BTreeMap<Address, TierInputs> = BTreeMap::new();
    for p in page {
        let can_bid = m
            .canBid(p)
            .block(at)
            .call()
            .await
            .map_err(|e| chain_err(spheron_chain::client::decode(e)))?;
        if !can_bid {
            continue;
        }
        let info = m
            .providerInfo(p)
            .block(at)
            .call()
            .await
            .map_err(|e| chain_err(spheron_chain::client::decode(e)))?;
        let (passes, fails) = audit::uptime(chain, audit_at, epoch, p)
            .await
            .map_err(chain_err)?;
        let (count, sum) = audit::feedback(chain, audit_at, epoch, p)
            .await
            .map_err(chain_err)?;
        inputs.insert(
            p,
            TierInputs {
                current: info.tier,
                stats: ProviderStats {
                    challenges_answered: u64::from(passes),
                    challenges_missed: u64::from(fails),
                    feedback_sum: u64::from(sum),
                    feedback_count: u64::from(count),
                    ..ProviderStats::default()
                },
            },
        );
    }

    // Task completion from the market's events in [first, last).
    let mut follower = Follower::new(market, first, 0, 500);
    let mut matched: BTreeMap<u64, Address> = BTreeMap::new();
    let mut done: BTreeSet<u64> = BTreeSet::new();
    'read: loop {
        let logs = follower.poll(chain).await.map_err(chain_err)?;
        if logs.is_empty() {
            break;
        }
        for l in logs {
            if l.block >= last {
                break 'read;
            }
            match l.event {
                ChainEvent::LeaseMatched { id, provider, .. } => {
                    matched.insert(id, provider);
                }
                ChainEvent::LeaseClosed { id, provider, .. } => {
                    done.insert(id);
                    if let Some(i) = inputs.get_mut(&provider) {
                        i.stats.leases_completed += 1;
                    }
                }
                ChainEvent::OrderCancelled { id, .. } => {
                    if let Some(p) = matched.get(&id)
                        && !done.contains(&id)
                        && let Some(i) = inputs.get_mut(p)
                    {
                        i.stats.leases_failed += 1;
                    }
                }
                _ => {}
            }
        }
    }

    let policy = ReputationTierPolicy::new(TierConfig::STANDARD)
        .map_err(|e| Error::config("tier policy", e.to_string()))?;
    let mut result = TierResult {
        epoch,
        providers: Vec::with_capacity(inputs.len()),
        tiers: Vec::with_capacity(inputs.len()),
    };
    for (p, i) in &inputs {
        result.providers.push(*p);
        result.tiers.push(next_tier(&policy, i.current, &i.stats));
    }
    Ok(Some((result, inputs)))
}

/// Who signed `result` with `signature`.
pub fn signer_of(
    chain_id: u64,
    audit_at: Address,
    result: &TierResult,
    signature: &[u8],
) -> Result<Address> {
    let digest = audit::tiers_digest_local(
        chain_id,
        audit_at,
        result.epoch,
        &result.providers,
        &result.tiers,
    );
    let sig =
        Signature::try_from(signature).map_err(|e| Error::config("signature", e.to_string()))?;
    sig.recover_address_from_prehash(&digest)
        .map_err(|e| Error::config("signature", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(passes: u64, fails: u64) -> ProviderStats {
        ProviderStats {
            challenges_answered: passes,
            challenges_missed: fails,
            ..ProviderStats::default()
        }
    }

    #[test]
    fn a_provider_climbs_one_tier_per_epoch_and_drops_to_what_it_earned() {
        let policy =
            ReputationTierPolicy::new(TierConfig::STANDARD).unwrap_or_else(|e| panic!("{e}"));
        // Perfect uptime, no leases, no ratings (the prior): it earns the top tier, one step at a time.
        assert_eq!(next_tier(&policy, 0, &stats(10, 0)), 1);
        assert_eq!(next_tier(&policy, 6, &stats(10, 0)), 7);
        assert_eq!(next_tier(&policy, 7, &stats(10, 0)), 7);
        // Half its challenges failed: straight down to what that earns (0).
        assert_eq!(next_tier(&policy, 7, &stats(5, 5)), 0);
        // No challenge results: it stays where it is.
        assert_eq!(next_tier(&policy, 4, &stats(0, 0)), 4);
    }
}
