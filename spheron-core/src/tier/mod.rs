//! Trust tiers, reputation, rewards and penalties.
//!
//! Providers are sorted on two axes: the hardware class of their GPUs
//! ([`HardwareClass`]) and a trust tier earned from behaviour, evaluated once per epoch.
//!
//! - [`TierPolicy`] is the plug point: from a provider's recent statistics it picks the tier
//!   (with hysteresis), prices each tier and hardware class as a reward multiplier, and says
//!   what a [`Violation`] costs.
//! - [`ReputationTierPolicy`] is the default: uptime, completion rate and user feedback, each
//!   held against the [tier table](policy::TierConfig::STANDARD); [`UptimeTierPolicy`] is the
//!   uptime-only reference table of one public network.
//! - [`EpochProcessor`] consumes the marketplace's progress events and explicit reports
//!   (feedback, missed challenges, verifier verdicts), applies penalties through the
//!   [`Escrow`](crate::Escrow) trait (so a slash becomes an on-chain slash with the chain
//!   backend), and closes epochs: tier decisions, automatic rewards from a pool paid in
//!   proportion to GPU-hours times multipliers (the rounding remainder is carried over, never
//!   lost), and verifier rewards by accuracy.
//! - Verifiers (Slark nodes) are ranked by accuracy: a sample of their verdicts, and every
//!   verdict that would cost a provider, is re-checked by a second verifier.
//!
//! ```
//! use spheron_core::{ProviderStats, ReputationTierPolicy, TierHistory, TierPolicy, TrustTier};
//!
//! let policy = ReputationTierPolicy::default();
//! let steady = ProviderStats { challenges_answered: 500, leases_completed: 20, ..Default::default() };
//! // Earns tier 7, but climbs one tier per three good epochs.
//! let mut tier = TrustTier(0);
//! let mut history = TierHistory::default();
//! for _ in 0..3 {
//!     let d = policy.evaluate(tier, &steady, &history);
//!     (tier, history) = (d.tier, d.history);
//! }
//! assert_eq!(tier, TrustTier(1));
//! ```

mod epoch;
mod penalty;
mod policy;
mod rewards;
mod verifiers;

pub use epoch::{
    EpochConfig, EpochProcessor, EpochReport, MAX_CATCH_UP, PenaltyRecord, ProviderEpoch,
    RecheckOutcome, Standing, VerdictReceipt, VerifierEpoch,
};
pub use penalty::{Applied, Charge, PenaltyRoute, apply_penalty};
pub use policy::{ReputationTierPolicy, TierConfig, TierRow, UPTIME_TIERS_BPS, UptimeTierPolicy};
pub use rewards::{PoolSplit, mul_div_floor_wide, split_pool};
pub use verifiers::{VerdictId, VerifierConfig, VerifierStanding};

use crate::gpu::HardwareClass;
use crate::money::Amount;
use crate::proof::FailReason;
use crate::provider::{ProviderStats, TrustTier};
use serde::{Deserialize, Serialize};

/// A behaviour that costs a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Violation {
    /// A challenge went unanswered in time: lowers uptime.
    MissedChallenge,
    /// A proof failed (too slow, late, malformed): the claimed GPU was not shown.
    FailedProof,
    /// A proof was fraudulent (wrong product, forged row or path, impossible speed).
    Fraud,
}

impl Violation {
    /// The violation a failed proof amounts to: answers that contradict their own
    /// commitment, or a rate no real GPU of the claimed model reaches, are fraud; slow,
    /// late or malformed answers are a failed proof.
    pub fn for_failure(reason: &FailReason) -> Violation {
        match reason {
            FailReason::BadRow(_)
            | FailReason::BadPath(_)
            | FailReason::WrongProduct { .. }
            | FailReason::ImpossibleSpeed { .. }
            | FailReason::BadSignature(_) => Violation::Fraud,
            FailReason::Busy { .. } => Violation::MissedChallenge,
            FailReason::TooSlow { .. } | FailReason::Late { .. } | FailReason::Malformed(_) => {
                Violation::FailedProof
            }
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Violation::MissedChallenge => "missed challenge",
            Violation::FailedProof => "failed proof",
            Violation::Fraud => "fraudulent proof",
        })
    }
}

/// What a violation costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Penalty {
    /// Share of the stake to slash, in basis points (capped at 10 000: never above the stake).
    pub slash_bps: u32,
    /// Tiers to drop at once.
    pub demote_by: u8,
    /// Whether the provider is banned from matching.
    pub ban: bool,
}

impl Penalty {
    /// No slash, no demotion, no ban.
    pub const NONE: Penalty = Penalty {
        slash_bps: 0,
        demote_by: 0,
        ban: false,
    };

    /// The slash amount for `stake`: `slash_bps` of it, rounded down, never above the
    /// stake (exact for every stake; nothing falls back to the whole).
    pub fn slash_amount(&self, stake: Amount) -> Amount {
        stake.share_bps(self.slash_bps)
    }
}

/// Hysteresis state: how many consecutive evaluated epochs earned a tier above (or below)
/// the one held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierHistory {
    /// Consecutive epochs whose earned tier was above the held tier.
    pub above: u32,
    /// Consecutive epochs whose earned tier was below the held tier.
    pub below: u32,
}

/// A tier decision with its reason, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierDecision {
    /// The tier after this evaluation.
    pub tier: TrustTier,
    /// The tier the statistics alone earn (before hysteresis).
    pub target: TrustTier,
    /// The hysteresis state to pass to the next evaluation.
    pub history: TierHistory,
    /// Why, in words.
    pub reason: String,
}

/// Moves providers between trust tiers and prices their behaviour.
///
/// Pure and synchronous: the [`EpochProcessor`] calls it once per provider and epoch.
pub trait TierPolicy: Send + Sync {
    /// The tier a provider should hold after an epoch, given the tier it holds (`current`),
    /// the statistics of its recent window (`stats`) and the hysteresis state (`history`)
    /// returned by the previous evaluation.
    fn evaluate(
        &self,
        current: TrustTier,
        stats: &ProviderStats,
        history: &TierHistory,
    ) -> TierDecision;

    /// Why a provider holding `tier` with `stats` stands where it does, for reports.
    fn explain(&self, tier: TrustTier, stats: &ProviderStats) -> String {
        let d = self.evaluate(tier, stats, &TierHistory::default());
        format!("holds {tier}; {}", d.reason)
    }

    /// Reward multiplier in basis points (10 000 = 1.0x) for a tier and hardware class.
    fn reward_multiplier_bps(&self, tier: TrustTier, class: HardwareClass) -> u32;

    /// What `violation` costs a provider that has already failed `prior_failures` proofs.
    fn penalty(&self, violation: Violation, prior_failures: u64) -> Penalty;
}
