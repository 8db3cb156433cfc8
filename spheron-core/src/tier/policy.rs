//! The default tier policy and its documented tier table.

use super::{Penalty, TierDecision, TierHistory, TierPolicy, Violation};
use crate::gpu::HardwareClass;
use crate::provider::{ProviderStats, RatingPrior, TrustTier};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Uptime thresholds (basis points, strictly above) for tiers 7 down to 1, as one public
/// network tiers its providers: >99%, >98%, >97%, >95%, >90%, >85%, >75%.
pub const UPTIME_TIERS_BPS: [u32; 7] = [9_900, 9_800, 9_700, 9_500, 9_000, 8_500, 7_500];

/// What one tier asks for and what it pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRow {
    /// Uptime must be strictly above this, in basis points.
    pub uptime_above_bps: u32,
    /// Completion rate must be at least this, in basis points (ignored with no finished lease).
    pub completion_min_bps: u32,
    /// Mean rating must be at least this, in hundredths of a star (1..=5 stars).
    pub rating_min_centi: u32,
    /// Reward multiplier of the tier, in basis points (10 000 = 1.0x).
    pub multiplier_bps: u32,
}

const fn row(uptime: u32, completion: u32, rating: u32, multiplier: u32) -> TierRow {
    TierRow {
        uptime_above_bps: uptime,
        completion_min_bps: completion,
        rating_min_centi: rating,
        multiplier_bps: multiplier,
    }
}

/// The settings of [`ReputationTierPolicy`]; [`TierConfig::STANDARD`] is the default.
///
/// **Metrics** (over the statistics window the [`EpochProcessor`](super::EpochProcessor)
/// passes, by default the last four epochs):
/// - *uptime*: challenges answered and passed over all challenges issued (a miss and a
///   failed proof both count against it);
/// - *completion*: leases completed (or stopped by the tenant) over all finished leases;
/// - *rating*: the Bayesian mean of the 1..=5 feedback ratings with a prior of
///   `rating_prior_weight` ratings at `rating_prior_centi`, so a provider without feedback
///   is neither best nor worst, and one bad rating among many good ones does not sink it.
///
/// **The standard table**: a provider earns the highest tier whose every threshold it meets.
///
/// | tier | uptime | completion | rating | multiplier |
/// |---|---|---|---|---|
/// | 7 | > 99% | ≥ 98% | ≥ 4.00 | 2.00x |
/// | 6 | > 98% | ≥ 95% | ≥ 3.80 | 1.65x |
/// | 5 | > 97% | ≥ 92% | ≥ 3.60 | 1.30x |
/// | 4 | > 95% | ≥ 90% | ≥ 3.40 | 1.00x |
/// | 3 | > 90% | ≥ 85% | ≥ 3.00 | 0.75x |
/// | 2 | > 85% | ≥ 80% | ≥ 2.50 | 0.50x |
/// | 1 | > 75% | ≥ 70% | ≥ 2.00 | 0.25x |
/// | 0 | otherwise | | | 0 |
///
/// The rating prior is 4.20 stars weighing 5 ratings. The multiplier is then scaled by the
/// hardware class: UltraHigh 1.5x, Medium 1.2x, Entry 1.0x (an UltraHigh tier-7 provider
/// earns 3.0x per GPU-hour).
///
/// **Hysteresis**: a provider climbs one tier after `up_epochs` (3) consecutive epochs that
/// earn more than it holds, and drops straight to the earned tier after `down_epochs` (2)
/// consecutive epochs that earn less. Epochs without challenge results leave it where it is.
///
/// **Penalties**: a missed challenge costs uptime only; a failed proof slashes 10% of the
/// stake and drops two tiers, and bans on the third failure; a fraudulent proof slashes 50%,
/// drops to tier 0, and bans when the provider had failed a proof before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierConfig {
    /// Rows for tiers 7 (index 0) down to 1 (index 6); each at least as demanding as the next.
    pub rows: [TierRow; 7],
    /// Class factor of UltraHigh GPUs, basis points.
    pub ultra_high_bps: u32,
    /// Class factor of Medium GPUs, basis points.
    pub medium_bps: u32,
    /// Class factor of Entry GPUs, basis points.
    pub entry_bps: u32,
    /// Prior mean rating, hundredths of a star (100..=500).
    pub rating_prior_centi: u32,
    /// Prior weight, in ratings.
    pub rating_prior_weight: u64,
    /// Consecutive better epochs needed to climb one tier (at least 1).
    pub up_epochs: u32,
    /// Consecutive worse epochs needed to drop to the earned tier (at least 1).
    pub down_epochs: u32,
    /// What a missed challenge costs.
    pub missed: Penalty,
    /// What a failed proof costs.
    pub failed_proof: Penalty,
    /// What a fraudulent proof costs.
    pub fraud: Penalty,
    /// A failed proof bans when the provider had already failed this many proofs.
    pub failed_ban_after: u64,
    /// A fraudulent proof bans when the provider had already failed this many proofs.
    pub fraud_ban_after: u64,
}

impl TierConfig {
    /// The standard table (see the type's documentation).
    pub const STANDARD: TierConfig = TierConfig {
        rows: [
            row(9_900, 9_800, 400, 20_000),
            row(9_800, 9_500, 380, 16_500),
            row(9_700, 9_200, 360, 13_000),
            row(9_500, 9_000, 340, 10_000),
            row(9_000, 8_500, 300, 7_500),
            row(8_500, 8_000, 250, 5_000),
            row(7_500, 7_000, 200, 2_500),
        ],
        ultra_high_bps: 15_000,
        medium_bps: 12_000,
        entry_bps: 10_000,
        rating_prior_centi: RatingPrior::STANDARD.mean_milli / 10,
        rating_prior_weight: RatingPrior::STANDARD.weight_milli / 1_000,
        up_epochs: 3,
        down_epochs: 2,
        missed: Penalty::NONE,
        failed_proof: Penalty {
            slash_bps: 1_000,
            demote_by: 2,
            ban: false,
        },
        fraud: Penalty {
            slash_bps: 5_000,
            demote_by: 7,
            ban: false,
        },
        failed_ban_after: 2,
        fraud_ban_after: 1,
    };

    /// The uptime-only reference table ([`UPTIME_TIERS_BPS`]): completion and rating are
    /// not weighed.
    pub const UPTIME_ONLY: TierConfig = TierConfig {
        rows: [
            row(UPTIME_TIERS_BPS[0], 0, 0, 20_000),
            row(UPTIME_TIERS_BPS[1], 0, 0, 16_500),
            row(UPTIME_TIERS_BPS[2], 0, 0, 13_000),
            row(UPTIME_TIERS_BPS[3], 0, 0, 10_000),
            row(UPTIME_TIERS_BPS[4], 0, 0, 7_500),
            row(UPTIME_TIERS_BPS[5], 0, 0, 5_000),
            row(UPTIME_TIERS_BPS[6], 0, 0, 2_500),
        ],
        ..TierConfig::STANDARD
    };

    /// Checks every field; the error names the first field that is out of range.
    pub fn validate(&self) -> Result<()> {
        for (i, r) in self.rows.iter().enumerate() {
            let tier = 7 - i;
            if r.uptime_above_bps >= 10_000 {
                return Err(Error::invalid(
                    "rows.uptime_above_bps",
                    format!(
                        "tier {tier}: {} leaves no uptime above it; expected < 10000",
                        r.uptime_above_bps
                    ),
                ));
            }
            if r.completion_min_bps > 10_000 {
                return Err(Error::invalid(
                    "rows.completion_min_bps",
                    format!("tier {tier}: {} is above 10000", r.completion_min_bps),
                ));
            }
            if r.rating_min_centi > 500 {
                return Err(Error::invalid(
                    "rows.rating_min_centi",
                    format!("tier {tier}: {} is above 500 (5 stars)", r.rating_min_centi),
                ));
            }
            if r.multiplier_bps > 100_000 {
                return Err(Error::invalid(
                    "rows.multiplier_bps",
                    format!("tier {tier}: {} is above 100000 (10x)", r.multiplier_bps),
                ));
            }
            if let Some(next) = self.rows.get(i + 1) {
                let easier = next.uptime_above_bps <= r.uptime_above_bps
                    && next.completion_min_bps <= r.completion_min_bps
                    && next.rating_min_centi <= r.rating_min_centi
                    && next.multiplier_bps <= r.multiplier_bps;
                if !easier {
                    return Err(Error::invalid(
                        "rows",
                        format!(
                            "tier {} asks or pays more than tier {tier}; each tier must ask and pay at most what the tier above does",
                            tier - 1
                        ),
                    ));
                }
            }
        }
        for (field, v) in [
            ("ultra_high_bps", self.ultra_high_bps),
            ("medium_bps", self.medium_bps),
            ("entry_bps", self.entry_bps),
        ] {
            if v > 100_000 {
                return Err(Error::invalid(field, format!("{v} is above 100000 (10x)")));
            }
        }
        if !(100..=500).contains(&self.rating_prior_centi) {
            return Err(Error::invalid(
                "rating_prior_centi",
                format!(
                    "{} is outside 100..=500 (1 to 5 stars)",
                    self.rating_prior_centi
                ),
            ));
        }
        if self.up_epochs == 0 {
            return Err(Error::invalid("up_epochs", "must be at least 1"));
        }
        if self.down_epochs == 0 {
            return Err(Error::invalid("down_epochs", "must be at least 1"));
        }
        for (field, p) in [
            ("missed", self.missed),
            ("failed_proof", self.failed_proof),
            ("fraud", self.fraud),
        ] {
            if p.slash_bps > 10_000 {
                return Err(Error::invalid(
                    field,
                    format!("slash_bps {} is above 10000 (the whole stake)", p.slash_bps),
                ));
            }
            if p.demote_by > TrustTier::MAX.0 {
                return Err(Error::invalid(
                    field,
                    format!("demote_by {} is above {}", p.demote_by, TrustTier::MAX.0),
                ));
            }
        }
        Ok(())
    }
}

impl TierConfig {
    /// The rating prior of this table ([`RatingPrior::STANDARD`] in the standard table).
    pub fn rating_prior(&self) -> RatingPrior {
        RatingPrior {
            mean_milli: self.rating_prior_centi.saturating_mul(10),
            weight_milli: self.rating_prior_weight.saturating_mul(1_000),
        }
    }
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig::STANDARD
    }
}

/// What the statistics show, in integer units.
#[derive(Clone, Copy, Debug)]
struct Metrics {
    uptime_bps: u32,
    passed: u64,
    challenges: u64,
    completion_bps: Option<u32>,
    leases: u64,
    rating_centi: u32,
    ratings: u64,
}

impl Metrics {
    fn of(cfg: &TierConfig, s: &ProviderStats) -> Option<Metrics> {
        let challenges = s.challenges();
        let uptime_bps = s.uptime_bps()?;
        let leases = s.leases_completed.saturating_add(s.leases_failed);
        let rating_centi =
            (s.rating_micro(cfg.rating_prior()) / 10_000).min(u64::from(u32::MAX)) as u32;
        Some(Metrics {
            uptime_bps,
            passed: s.challenges_answered,
            challenges,
            completion_bps: s.completion_bps(),
            leases,
            rating_centi,
            ratings: s.feedback_count,
        })
    }

    /// The highest tier whose row `ok` accepts (rows run from tier 7 down).
    fn tier_by(cfg: &TierConfig, ok: impl Fn(&TierRow) -> bool) -> u8 {
        cfg.rows
            .iter()
            .position(ok)
            .map(|i| 7 - i as u8)
            .unwrap_or(0)
    }

    /// (earned tier, tier by each criterion: uptime, completion, rating).
    fn earned(&self, cfg: &TierConfig) -> (u8, [u8; 3]) {
        let uptime = Self::tier_by(cfg, |r| self.uptime_bps > r.uptime_above_bps);
        let completion = match self.completion_bps {
            Some(c) => Self::tier_by(cfg, |r| c >= r.completion_min_bps),
            None => 7,
        };
        let rating = Self::tier_by(cfg, |r| self.rating_centi >= r.rating_min_centi);
        (
            uptime.min(completion).min(rating),
            [uptime, completion, rating],
        )
    }

    /// The earned tier and which criteria hold it down, in words.
    fn target(&self, cfg: &TierConfig) -> (TrustTier, String) {
        let (earned, by) = self.earned(cfg);
        let limits: Vec<&str> = ["uptime", "completion", "rating"]
            .into_iter()
            .zip(by)
            .filter(|&(_, t)| earned < 7 && t == earned)
            .map(|(name, _)| name)
            .collect();
        let limited = if limits.is_empty() {
            String::new()
        } else {
            format!(" (limited by {})", limits.join(" and "))
        };
        (TrustTier(earned), limited)
    }

    fn describe(&self) -> String {
        let pct = |bps: u32| format!("{}.{:02}%", bps / 100, bps % 100);
        let completion = match self.completion_bps {
            Some(c) => format!("completion {} ({} leases)", pct(c), self.leases),
            None => "no finished lease".to_string(),
        };
        format!(
            "uptime {} ({} of {} challenges passed), {completion}, rating {}.{:02}/5 ({} ratings)",
            pct(self.uptime_bps),
            self.passed,
            self.challenges,
            self.rating_centi / 100,
            self.rating_centi % 100,
            self.ratings
        )
    }
}

/// The tier `cfg` grants `stats` from `current` with hysteresis `history`.
fn evaluate_with(
    cfg: &TierConfig,
    current: TrustTier,
    stats: &ProviderStats,
    history: &TierHistory,
) -> TierDecision {
    let current = TrustTier(current.0.min(TrustTier::MAX.0));
    let Some(m) = Metrics::of(cfg, stats) else {
        return TierDecision {
            tier: current,
            target: current,
            history: *history,
            reason: format!("no challenge results in the window: stays at {current}"),
        };
    };
    let (target, limited) = m.target(cfg);
    let mut h = *history;
    let (tier, movement) = if target > current {
        h.below = 0;
        h.above = h.above.saturating_add(1);
        if h.above >= cfg.up_epochs {
            h.above = 0;
            let to = TrustTier(current.0 + 1);
            (
                to,
                format!(
                    "climbs from {current} to {to} after {} better epochs",
                    cfg.up_epochs
                ),
            )
        } else {
            (
                current,
                format!(
                    "{} of {} better epochs needed to climb from {current}",
                    h.above, cfg.up_epochs
                ),
            )
        }
    } else if target < current {
        h.above = 0;
        h.below = h.below.saturating_add(1);
        if h.below >= cfg.down_epochs {
            h.below = 0;
            (
                target,
                format!(
                    "drops from {current} to {target} after {} worse epochs",
                    cfg.down_epochs
                ),
            )
        } else {
            (
                current,
                format!(
                    "{} of {} worse epochs before dropping from {current}",
                    h.below, cfg.down_epochs
                ),
            )
        }
    } else {
        h = TierHistory::default();
        (current, format!("stays at {current}"))
    };
    TierDecision {
        tier,
        target,
        history: h,
        reason: format!("{}: earns {target}{limited}; {movement}", m.describe()),
    }
}

/// Why a provider holding `tier` with `stats` stands there, without hysteresis state.
fn explain_with(cfg: &TierConfig, tier: TrustTier, stats: &ProviderStats) -> String {
    let Some(m) = Metrics::of(cfg, stats) else {
        return format!("{tier}: no challenge results yet");
    };
    let (target, limited) = m.target(cfg);
    let movement = if target > tier {
        format!("; climbs one tier per {} better epochs", cfg.up_epochs)
    } else if target < tier {
        format!("; drops after {} worse epochs", cfg.down_epochs)
    } else {
        String::new()
    };
    format!(
        "{tier}: {}; these earn {target}{limited}{movement}",
        m.describe()
    )
}

fn multiplier_with(cfg: &TierConfig, tier: TrustTier, class: HardwareClass) -> u32 {
    if tier.0 == 0 {
        return 0;
    }
    let by_tier = cfg.rows[usize::from(7 - tier.0.min(7))].multiplier_bps;
    let class_bps = match class {
        HardwareClass::UltraHigh => cfg.ultra_high_bps,
        HardwareClass::Medium => cfg.medium_bps,
        HardwareClass::Entry => cfg.entry_bps,
    };
    (u64::from(by_tier) * u64::from(class_bps) / 10_000).min(u64::from(u32::MAX)) as u32
}

fn penalty_with(cfg: &TierConfig, violation: Violation, prior_failures: u64) -> Penalty {
    match violation {
        Violation::MissedChallenge => cfg.missed,
        Violation::FailedProof => Penalty {
            ban: cfg.failed_proof.ban || prior_failures >= cfg.failed_ban_after,
            ..cfg.failed_proof
        },
        Violation::Fraud => Penalty {
            ban: cfg.fraud.ban || prior_failures >= cfg.fraud_ban_after,
            ..cfg.fraud
        },
    }
}

/// The default policy: uptime, completion rate and feedback against the tier table of
/// [`TierConfig`], with hysteresis, class-scaled multipliers and penalties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReputationTierPolicy {
    config: TierConfig,
}

impl ReputationTierPolicy {
    /// A policy with `config`, validated.
    pub fn new(config: TierConfig) -> Result<Self> {
        config.validate()?;
        Ok(ReputationTierPolicy { config })
    }

    /// The settings in force.
    pub fn config(&self) -> &TierConfig {
        &self.config
    }
}

impl TierPolicy for ReputationTierPolicy {
    fn evaluate(
        &self,
        current: TrustTier,
        stats: &ProviderStats,
        history: &TierHistory,
    ) -> TierDecision {
        evaluate_with(&self.config, current, stats, history)
    }

    fn explain(&self, tier: TrustTier, stats: &ProviderStats) -> String {
        explain_with(&self.config, tier, stats)
    }

    fn reward_multiplier_bps(&self, tier: TrustTier, class: HardwareClass) -> u32 {
        multiplier_with(&self.config, tier, class)
    }

    fn penalty(&self, violation: Violation, prior_failures: u64) -> Penalty {
        penalty_with(&self.config, violation, prior_failures)
    }
}

/// The uptime-only reference policy ([`TierConfig::UPTIME_ONLY`]): tiers by uptime alone,
/// with the standard hysteresis, multipliers and penalties. Prefer
/// [`ReputationTierPolicy`], which also weighs completion and feedback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UptimeTierPolicy;

impl TierPolicy for UptimeTierPolicy {
    fn evaluate(
        &self,
        current: TrustTier,
        stats: &ProviderStats,
        history: &TierHistory,
    ) -> TierDecision {
        evaluate_with(&TierConfig::UPTIME_ONLY, current, stats, history)
    }

    fn explain(&self, tier: TrustTier, stats: &ProviderStats) -> String {
        explain_with(&TierConfig::UPTIME_ONLY, tier, stats)
    }

    fn reward_multiplier_bps(&self, tier: TrustTier, class: HardwareClass) -> u32 {
        multiplier_with(&TierConfig::UPTIME_ONLY, tier, class)
    }

    fn penalty(&self, violation: Violation, prior_failures: u64) -> Penalty {
        penalty_with(&TierConfig::UPTIME_ONLY, violation, prior_failures)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::money::Amount;

    fn stats(answered: u64, missed: u64) -> ProviderStats {
        ProviderStats {
            challenges_answered: answered,
            challenges_missed: missed,
            ..Default::default()
        }
    }

    fn target(p: &dyn TierPolicy, s: &ProviderStats) -> u8 {
        p.evaluate(TrustTier(0), s, &TierHistory::default())
            .target
            .0
    }

    #[test]
    fn uptime_maps_to_tiers() {
        let p = UptimeTierPolicy;
        assert_eq!(target(&p, &stats(1000, 5)), 7);
        assert_eq!(target(&p, &stats(96, 4)), 4);
        assert_eq!(target(&p, &stats(70, 30)), 0);
        // Exactly 99% is not above 99%.
        assert_eq!(target(&p, &stats(99, 1)), 6);
        let d = p.evaluate(TrustTier(3), &stats(0, 0), &TierHistory::default());
        assert_eq!((d.tier, d.target), (TrustTier(3), TrustTier(3)));
    }

    #[test]
    fn completion_and_feedback_weigh_in() {
        let p = ReputationTierPolicy::default();
        let mut s = stats(1000, 0);
        assert_eq!(target(&p, &s), 7);
        s.leases_completed = 9;
        s.leases_failed = 1; // 90%
        assert_eq!(target(&p, &s), 4);
        let d = p.evaluate(TrustTier(0), &s, &TierHistory::default());
        assert!(d.reason.contains("limited by completion"), "{}", d.reason);
        s.leases_failed = 0;
        // Five 1-star ratings: (5*100 + 420*5) / 10 = 260 → tier 2.
        s.feedback_count = 5;
        s.feedback_sum = 5;
        assert_eq!(target(&p, &s), 2);
        // A failed proof counts against uptime.
        let f = ProviderStats {
            challenges_answered: 90,
            challenges_failed: 10,
            ..Default::default()
        };
        assert_eq!(target(&p, &f), 2);
    }

    #[test]
    fn hysteresis_climbs_slowly_and_drops_fast() {
        let p = ReputationTierPolicy::default();
        let good = stats(100, 0);
        let (mut tier, mut h) = (TrustTier(0), TierHistory::default());
        let mut path = Vec::new();
        for _ in 0..9 {
            let d = p.evaluate(tier, &good, &h);
            (tier, h) = (d.tier, d.history);
            path.push(tier.0);
        }
        assert_eq!(path, [0, 0, 1, 1, 1, 2, 2, 2, 3]);
        let bad = stats(80, 20); // tier 1
        let d = p.evaluate(tier, &bad, &h);
        assert_eq!(d.tier, TrustTier(3), "{}", d.reason);
        let d = p.evaluate(d.tier, &bad, &d.history);
        assert_eq!(d.tier, TrustTier(1), "{}", d.reason);
        assert!(
            d.reason.contains("drops from tier 3 to tier 1"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn explanations_name_the_tier_and_the_reason() {
        let p = ReputationTierPolicy::default();
        let s = ProviderStats {
            challenges_answered: 50,
            leases_completed: 9,
            leases_failed: 1,
            ..Default::default()
        };
        let e = p.explain(TrustTier(6), &s);
        assert!(e.starts_with("tier 6: uptime 100.00% (50 of 50"), "{e}");
        assert!(
            e.contains("these earn tier 4 (limited by completion); drops after 2 worse epochs"),
            "{e}"
        );
        assert_eq!(
            p.explain(TrustTier(2), &ProviderStats::default()),
            "tier 2: no challenge results yet"
        );
    }

    #[test]
    fn multipliers_scale_with_class() {
        let p = ReputationTierPolicy::default();
        assert_eq!(
            p.reward_multiplier_bps(TrustTier(7), HardwareClass::UltraHigh),
            30_000
        );
        assert_eq!(
            p.reward_multiplier_bps(TrustTier(4), HardwareClass::Entry),
            10_000
        );
        assert_eq!(
            p.reward_multiplier_bps(TrustTier(0), HardwareClass::UltraHigh),
            0
        );
    }

    #[test]
    fn slash_is_capped_and_repeated_fraud_bans() {
        let p = Penalty {
            slash_bps: 20_000,
            demote_by: 0,
            ban: false,
        };
        assert_eq!(p.slash_amount(Amount(100)), Amount(100));
        assert_eq!(p.slash_amount(Amount(u128::MAX)), Amount(u128::MAX));
        let policy = ReputationTierPolicy::default();
        assert_eq!(
            policy
                .penalty(Violation::FailedProof, 0)
                .slash_amount(Amount(1000)),
            Amount(100)
        );
        assert!(!policy.penalty(Violation::Fraud, 0).ban);
        assert!(policy.penalty(Violation::Fraud, 1).ban);
        assert!(!policy.penalty(Violation::FailedProof, 1).ban);
        assert!(policy.penalty(Violation::FailedProof, 2).ban);
        assert_eq!(policy.penalty(Violation::MissedChallenge, 9), Penalty::NONE);
    }

    #[test]
    fn bad_config_is_named() {
        let mut c = TierConfig::STANDARD;
        c.up_epochs = 0;
        let e = ReputationTierPolicy::new(c).unwrap_err().to_string();
        assert!(e.contains("up_epochs"), "{e}");
        let mut c = TierConfig::STANDARD;
        c.rows[3].uptime_above_bps = 9_990;
        let e = ReputationTierPolicy::new(c).unwrap_err().to_string();
        assert!(e.contains("rows"), "{e}");
        let mut c = TierConfig::STANDARD;
        c.fraud.slash_bps = 10_001;
        assert!(ReputationTierPolicy::new(c).is_err());
        assert!(TierConfig::UPTIME_ONLY.validate().is_ok());
    }
}
