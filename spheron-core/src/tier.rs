//! Trust tiers: the [`TierPolicy`] plug point and a first default policy.

use crate::gpu::HardwareClass;
use crate::money::Amount;
use crate::provider::{ProviderStats, TrustTier};
use serde::{Deserialize, Serialize};

/// A behaviour that costs a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Violation {
    /// A challenge went unanswered in time.
    MissedChallenge,
    /// A proof failed (too slow, wrong rows): the claimed GPU was not shown.
    FailedProof,
    /// A proof was fraudulent (wrong product, forged path, replay).
    Fraud,
}

/// What a violation costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Penalty {
    /// Share of the stake to slash, in basis points (capped at the stake by the escrow).
    pub slash_bps: u32,
    /// Tiers to drop at once.
    pub demote_by: u8,
    /// Whether the provider is banned from matching.
    pub ban: bool,
}

impl Penalty {
    /// The slash amount for `stake` (rounded down, never above the stake).
    pub fn slash_amount(&self, stake: Amount) -> Amount {
        stake
            .mul_div_floor(u128::from(self.slash_bps.min(10_000)), 10_000)
            .unwrap_or(stake)
    }
}

/// A tier decision with its reason, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierDecision {
    /// The tier after this evaluation.
    pub tier: TrustTier,
    /// Why.
    pub reason: String,
}

/// Moves providers between trust tiers and prices their behaviour.
pub trait TierPolicy: Send + Sync {
    /// The tier a provider with `stats` should hold, given its `current` tier.
    fn evaluate(&self, current: TrustTier, stats: &ProviderStats) -> TierDecision;
    /// Reward multiplier in basis points (10 000 = 1.0x) for a tier and hardware class.
    fn reward_multiplier_bps(&self, tier: TrustTier, class: HardwareClass) -> u32;
    /// What `violation` costs a provider that has already failed `prior_failures` proofs.
    fn penalty(&self, violation: Violation, prior_failures: u64) -> Penalty;
}

/// Uptime thresholds (basis points, strictly above) for tiers 7 down to 1.
pub const UPTIME_TIERS_BPS: [u32; 7] = [9_900, 9_800, 9_700, 9_500, 9_000, 8_500, 7_500];

/// A first policy: the tier follows uptime by [`UPTIME_TIERS_BPS`], capped one tier per
/// 5% of completion rate lost; multipliers from 2.0x (tier 7) down to 0 (tier 0), times
/// the hardware class factor.
#[derive(Clone, Copy, Debug, Default)]
pub struct UptimeTierPolicy;

impl TierPolicy for UptimeTierPolicy {
    fn evaluate(&self, current: TrustTier, stats: &ProviderStats) -> TierDecision {
        let Some(uptime) = stats.uptime_bps() else {
            return TierDecision {
                tier: current,
                reason: "no challenges answered yet".into(),
            };
        };
        let by_uptime = UPTIME_TIERS_BPS
            .iter()
            .position(|&t| uptime > t)
            .map(|i| 7 - i as u8)
            .unwrap_or(0);
        let completion = stats.completion_bps().unwrap_or(10_000);
        let cap = 7u8.saturating_sub(((10_000 - completion) / 500) as u8);
        let tier = by_uptime.min(cap);
        TierDecision {
            tier: TrustTier(tier),
            reason: format!(
                "uptime {}.{:02}%, completion {}.{:02}%",
                uptime / 100,
                uptime % 100,
                completion / 100,
                completion % 100
            ),
        }
    }

    fn reward_multiplier_bps(&self, tier: TrustTier, class: HardwareClass) -> u32 {
        const BY_TIER: [u32; 8] = [0, 2_500, 5_000, 7_500, 10_000, 13_000, 16_500, 20_000];
        let class_bps = match class {
            HardwareClass::UltraHigh => 15_000,
            HardwareClass::Medium => 12_000,
            HardwareClass::Entry => 10_000,
        };
        BY_TIER[usize::from(tier.0.min(7))] * class_bps / 10_000
    }

    fn penalty(&self, violation: Violation, prior_failures: u64) -> Penalty {
        match violation {
            Violation::MissedChallenge => Penalty {
                slash_bps: 0,
                demote_by: 0,
                ban: false,
            },
            Violation::FailedProof => Penalty {
                slash_bps: 1_000,
                demote_by: 2,
                ban: prior_failures >= 2,
            },
            Violation::Fraud => Penalty {
                slash_bps: 5_000,
                demote_by: 7,
                ban: prior_failures >= 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(answered: u64, missed: u64) -> ProviderStats {
        ProviderStats {
            challenges_answered: answered,
            challenges_missed: missed,
            ..Default::default()
        }
    }

    #[test]
    fn uptime_maps_to_tiers() {
        let p = UptimeTierPolicy;
        assert_eq!(p.evaluate(TrustTier(0), &stats(1000, 5)).tier, TrustTier(7));
        assert_eq!(p.evaluate(TrustTier(0), &stats(96, 4)).tier, TrustTier(4));
        assert_eq!(p.evaluate(TrustTier(0), &stats(70, 30)).tier, TrustTier(0));
        assert_eq!(p.evaluate(TrustTier(3), &stats(0, 0)).tier, TrustTier(3));
    }

    #[test]
    fn slash_is_capped() {
        let p = Penalty {
            slash_bps: 20_000,
            demote_by: 0,
            ban: false,
        };
        assert_eq!(p.slash_amount(Amount(100)), Amount(100));
        assert_eq!(
            UptimeTierPolicy
                .penalty(Violation::FailedProof, 0)
                .slash_amount(Amount(1000)),
            Amount(100)
        );
    }
}
