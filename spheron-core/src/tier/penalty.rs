//! The one penalty path: what a violation costs, slashed and recorded as applied.
//!
//! The rent flow (a challenge it ran failed) and the [`EpochProcessor`](super::EpochProcessor)
//! (a verifier's confirmed verdict, a missed challenge, a trusted report) both charge a
//! provider through [`apply_penalty`], so a violation costs the same and pays the same
//! accounts whoever caught it, and the [`PenaltyRecord`] it returns is what reports carry:
//! the violation and slash actually applied, never recomputed later.

use super::{PenaltyRecord, TierPolicy, Violation};
use crate::Result;
use crate::clock::Timestamp;
use crate::error::Error;
use crate::ids::{AccountId, ProviderId};
use crate::money::Amount;
use crate::provider::TrustTier;
use crate::registry::Registry;
use crate::stake::StakeVault;
use serde::{Deserialize, Serialize};

/// Where slashed stake goes: the reporter's bounty share, the rest to the treasury.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PenaltyRoute {
    /// Receives what the reporter's bounty leaves of a slash.
    pub treasury: AccountId,
    /// The reporter's share of a slash, basis points (capped at 10 000).
    pub bounty_bps: u32,
}

impl Default for PenaltyRoute {
    fn default() -> Self {
        PenaltyRoute {
            treasury: AccountId::from_label("spheron.treasury"),
            bounty_bps: super::VerifierConfig::default().bounty_bps,
        }
    }
}

/// A violation to charge.
#[derive(Clone, Debug)]
pub struct Charge {
    /// When it was observed.
    pub at: Timestamp,
    /// Who committed it.
    pub provider: ProviderId,
    /// What it was.
    pub violation: Violation,
    /// Who caught it (earns the bounty share); `None` sends the whole slash to the treasury.
    pub reporter: Option<AccountId>,
    /// Details for the record.
    pub reason: String,
}

/// What [`apply_penalty`] did.
#[derive(Debug)]
pub struct Applied {
    /// The penalty as applied.
    pub record: PenaltyRecord,
    /// The treasury's part of the slash failed after the bounty was paid: the record holds
    /// what was slashed; the caller reports the error.
    pub failure: Option<Error>,
}

/// Charges `charge` to its provider: the policy's penalty given the failures it already
/// had, the slash through `stake` (bounty to the reporter, the rest to `route.treasury`),
/// and the registry's record (challenge counters, tier, ban, and the stake re-read from the
/// vault, which is where stake lives).
///
/// Errors (nothing applied): an unknown provider, a vault that cannot say the stake, or a
/// bounty slash that failed.
pub async fn apply_penalty(
    stake: &dyn StakeVault,
    registry: &Registry,
    policy: &dyn TierPolicy,
    route: PenaltyRoute,
    charge: Charge,
) -> Result<Applied> {
    let Charge {
        at,
        provider,
        violation,
        reporter,
        reason,
    } = charge;
    let prior = registry.get(provider)?.stats.challenges_failed;
    let penalty = policy.penalty(violation, prior);
    let staked = stake.staked(provider).await?;
    let amount = penalty.slash_amount(staked);
    let bounty_share = match reporter {
        Some(_) => amount.share_bps(route.bounty_bps),
        None => Amount::ZERO,
    };
    let mut bounty = Amount::ZERO;
    if let (Some(r), true) = (reporter, bounty_share.0 > 0) {
        bounty = stake.slash(provider, bounty_share, r).await?;
    }
    let rest = Amount(amount.0 - bounty_share.0);
    let mut failure = None;
    let mut to_treasury = Amount::ZERO;
    if rest.0 > 0 {
        match stake.slash(provider, rest, route.treasury).await {
            Ok(a) => to_treasury = a,
            Err(e) => failure = Some(e),
        }
    }
    let slashed = Amount(bounty.0.saturating_add(to_treasury.0));
    // The vault holds stake; the registry's copy (what the matcher sees) is re-read from it.
    let left = match stake.staked(provider).await {
        Ok(left) => Some(left),
        Err(e) => {
            tracing::warn!(provider = %provider.short(), error = %e, "re-reading stake failed");
            None
        }
    };
    let (tier_after, banned) = registry.update(provider, |pr| {
        if violation == Violation::MissedChallenge {
            pr.stats.challenges_missed += 1;
        } else {
            pr.stats.challenges_failed += 1;
        }
        pr.stake = left.unwrap_or(Amount(pr.stake.0.saturating_sub(slashed.0)));
        pr.tier = TrustTier(pr.tier.0.saturating_sub(penalty.demote_by));
        pr.banned |= penalty.ban;
        (pr.tier, pr.banned)
    })?;
    tracing::info!(
        provider = %provider.short(),
        %violation,
        slashed = %slashed,
        tier = %tier_after,
        banned,
        "penalty applied"
    );
    Ok(Applied {
        record: PenaltyRecord {
            at,
            provider,
            violation,
            penalty,
            slashed,
            bounty,
            reporter,
            tier_after,
            banned,
            reason,
        },
        failure,
    })
}
