//! Matching: the [`Matcher`] plug point, its explainable result types, and the default
//! [`WeightedMatcher`].
//!
//! A matcher is a pure, synchronous function of the order, the candidates and its
//! configuration (including a round seed), so independent operators running it agree.

use crate::gpu::GpuModel;
use crate::ids::{OrderId, ProviderId};
use crate::money::Amount;
use crate::order::{Candidate, Order};
use crate::provider::TrustTier;
use crate::{Error, Result};
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A scoring criterion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Criterion {
    /// Closeness: measured RTT, or great-circle distance.
    Latency,
    /// Free GPUs left after this order.
    Availability,
    /// Price below the budget.
    Cost,
    /// Feedback mean with a prior.
    Rating,
    /// Stake, with diminishing returns.
    Stake,
    /// The seeded random term.
    Random,
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Criterion::Latency => "latency",
            Criterion::Availability => "availability",
            Criterion::Cost => "cost",
            Criterion::Rating => "rating",
            Criterion::Stake => "stake",
            Criterion::Random => "random",
        };
        f.write_str(s)
    }
}

/// One criterion's part of a score: `weight * value`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Which criterion.
    pub criterion: Criterion,
    /// The normalised value in `[0, 1]`.
    pub value: f64,
    /// Its weight.
    pub weight: f64,
    /// `weight * value`: what it added to the score.
    pub points: f64,
}

/// A candidate that passed the filters, with its score and the score's breakdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The candidate.
    pub candidate: Candidate,
    /// Total score (higher is better).
    pub score: f64,
    /// Per-criterion contributions summing to `score`.
    pub breakdown: Vec<Contribution>,
}

impl Ranked {
    /// The provider.
    pub fn provider(&self) -> ProviderId {
        self.candidate.bid.provider
    }
}

/// Why a provider was dropped before scoring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    /// Its GPU model is not one the order accepts.
    ModelNotAccepted(GpuModel),
    /// Not enough free GPUs on one node.
    InsufficientGpus {
        /// Largest free block.
        free: u32,
        /// GPUs wanted.
        wanted: u32,
    },
    /// Price above the order's ceiling.
    AboveCeiling {
        /// Bid price per GPU-hour.
        price: Amount,
        /// Ceiling.
        ceiling: Amount,
    },
    /// Trust tier below the order's minimum.
    TierTooLow {
        /// The provider's tier.
        tier: TrustTier,
        /// The minimum.
        min: TrustTier,
    },
    /// Region not in the allow list.
    RegionNotAllowed(String),
    /// Region in the deny list.
    RegionDenied(String),
    /// Provider not in the allow list.
    ProviderNotAllowed,
    /// Provider in the deny list.
    ProviderDenied,
    /// Latency above the maximum.
    LatencyTooHigh {
        /// Measured or estimated RTT in ms.
        rtt_ms: f64,
        /// Maximum.
        max_ms: u32,
    },
    /// Banned for fraud.
    Banned,
    /// The bid was for another order.
    WrongOrder,
    /// The provider failed its proof-of-GPU challenge for this order.
    ChallengeFailed(String),
    /// The provider's capacity went to an earlier order in the batch.
    CapacityTaken,
    /// A custom matcher's reason.
    Other(String),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::ModelNotAccepted(m) => write!(f, "offers {m}, not a requested model"),
            RejectReason::InsufficientGpus { free, wanted } => {
                write!(f, "only {free} GPUs free on one node, {wanted} wanted")
            }
            RejectReason::AboveCeiling { price, ceiling } => {
                write!(f, "price {price} above ceiling {ceiling}")
            }
            RejectReason::TierTooLow { tier, min } => write!(f, "{tier} below minimum {min}"),
            RejectReason::RegionNotAllowed(r) => write!(f, "region {r} not allowed"),
            RejectReason::RegionDenied(r) => write!(f, "region {r} denied"),
            RejectReason::ProviderNotAllowed => f.write_str("not in the allow list"),
            RejectReason::ProviderDenied => f.write_str("in the deny list"),
            RejectReason::LatencyTooHigh { rtt_ms, max_ms } => {
                write!(f, "latency {rtt_ms:.1} ms above {max_ms} ms")
            }
            RejectReason::Banned => f.write_str("banned"),
            RejectReason::WrongOrder => f.write_str("bid for another order"),
            RejectReason::ChallengeFailed(r) => write!(f, "failed proof-of-GPU: {r}"),
            RejectReason::CapacityTaken => f.write_str("capacity taken by an earlier order"),
            RejectReason::Other(s) => f.write_str(s),
        }
    }
}

/// A provider that was dropped, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The provider.
    pub provider: ProviderId,
    /// The reason.
    pub reason: RejectReason,
}

pub(crate) fn format_rejections(r: &[Rejection]) -> String {
    if r.is_empty() {
        return "no bids arrived".into();
    }
    r.iter()
        .map(|r| format!("{}: {}", r.provider.short(), r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The ranking of one order's candidates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// The order.
    pub order: OrderId,
    /// Candidates that passed the filters, best first.
    pub ranked: Vec<Ranked>,
    /// Candidates dropped, with reasons (sorted by provider).
    pub rejected: Vec<Rejection>,
}

impl Ranking {
    /// The best candidate, or [`Error::NoMatch`] with every reason.
    pub fn best(&self) -> Result<&Ranked> {
        self.ranked.first().ok_or_else(|| Error::NoMatch {
            order: self.order,
            rejected: self.rejected.clone(),
        })
    }
}

/// The result of assigning a batch of orders.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Matched orders with the chosen candidate.
    pub matched: Vec<(OrderId, Ranked)>,
    /// Orders left unmatched, with the reasons for every provider.
    pub unmatched: Vec<(OrderId, Vec<Rejection>)>,
}

/// The matching plug point.
pub trait Matcher: Send + Sync {
    /// Ranks `candidates` for `order`: filtered, scored, explained.
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> Result<Ranking>;

    /// Assigns many orders at once without booking more GPUs on a provider than its free
    /// block holds. The default is greedy: orders in id order, each taking its best
    /// remaining candidate.
    fn assign(&self, orders: &[Order], candidates: &[Candidate]) -> Result<Assignment> {
        greedy_assign(self, orders, candidates)
    }
}

/// Greedy batch assignment over any matcher's `rank` (orders by id, best remaining candidate).
pub fn greedy_assign<M: Matcher + ?Sized>(
    matcher: &M,
    orders: &[Order],
    candidates: &[Candidate],
) -> Result<Assignment> {
    let mut by_order: BTreeMap<OrderId, Vec<Candidate>> = BTreeMap::new();
    for c in candidates {
        by_order.entry(c.bid.order).or_default().push(c.clone());
    }
    let mut sorted: Vec<&Order> = orders.iter().collect();
    sorted.sort_by_key(|o| o.id);
    let mut used: BTreeMap<(ProviderId, GpuModel), u32> = BTreeMap::new();
    let mut out = Assignment::default();
    for order in sorted {
        let cands = by_order.remove(&order.id).unwrap_or_default();
        let ranking = matcher.rank(order, &cands)?;
        let mut rejected = ranking.rejected.clone();
        let pick = ranking.ranked.into_iter().find(|r| {
            let key = (r.provider(), r.candidate.bid.model);
            let taken = used.get(&key).copied().unwrap_or(0);
            let fits = r.candidate.profile.free_gpus.saturating_sub(taken) >= order.request.count;
            if !fits {
                rejected.push(Rejection {
                    provider: r.provider(),
                    reason: RejectReason::CapacityTaken,
                });
            }
            fits
        });
        match pick {
            Some(r) => {
                *used
                    .entry((r.provider(), r.candidate.bid.model))
                    .or_default() += order.request.count;
                out.matched.push((order.id, r));
            }
            None => out.unmatched.push((order.id, rejected)),
        }
    }
    Ok(out)
}

/// Weights of the [`WeightedMatcher`]'s criteria. Validated by [`WeightedMatcher::new`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Latency weight.
    pub latency: f64,
    /// Availability weight.
    pub availability: f64,
    /// Cost weight.
    pub cost: f64,
    /// Rating weight.
    pub rating: f64,
    /// Stake weight.
    pub stake: f64,
    /// Random-term weight.
    pub random: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            latency: 0.20,
            availability: 0.10,
            cost: 0.30,
            rating: 0.20,
            stake: 0.10,
            random: 0.10,
        }
    }
}

/// Configuration of the [`WeightedMatcher`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatcherConfig {
    /// Criterion weights.
    pub weights: Weights,
    /// Seed of this matching round: all operators use the same one.
    pub round_seed: u64,
    /// Stake at which the stake criterion reaches 0.5 (diminishing returns beyond).
    pub stake_half: Amount,
    /// Prior mean rating (1..=5) for the rating criterion.
    pub rating_prior_mean: f64,
    /// Prior weight in ratings.
    pub rating_prior_weight: f64,
    /// RTT at which the latency criterion reaches 0.5, in ms.
    pub latency_half_ms: f64,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            weights: Weights::default(),
            round_seed: 0,
            stake_half: Amount(1_000 * 10u128.pow(18)),
            rating_prior_mean: 3.0,
            rating_prior_weight: 5.0,
            latency_half_ms: 50.0,
        }
    }
}

/// The default matcher: hard filters, then a weighted score over latency, availability,
/// cost, rating, stake and a seeded random term. Ties break by lower price, then lower
/// provider id.
#[derive(Clone, Debug)]
pub struct WeightedMatcher {
    config: MatcherConfig,
}

impl WeightedMatcher {
    /// A matcher with validated weights: each must be finite and `>= 0`.
    pub fn new(config: MatcherConfig) -> Result<Self> {
        let w = config.weights;
        for (name, value) in [
            ("latency", w.latency),
            ("availability", w.availability),
            ("cost", w.cost),
            ("rating", w.rating),
            ("stake", w.stake),
            ("random", w.random),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(Error::InvalidWeight { name, value });
            }
        }
        for (name, value) in [
            ("rating_prior_weight", config.rating_prior_weight),
            ("latency_half_ms", config.latency_half_ms),
        ] {
            if !value.is_finite() || value <= 0.0 {
                return Err(Error::InvalidWeight { name, value });
            }
        }
        Ok(WeightedMatcher { config })
    }

    /// The configuration.
    pub fn config(&self) -> &MatcherConfig {
        &self.config
    }

    /// The RTT used for `candidate`: measured when known, else estimated from distance,
    /// else `None` when the tenant gave no location.
    pub fn rtt_ms(order: &Order, c: &Candidate) -> Option<f64> {
        c.profile.rtt_ms.or_else(|| {
            order
                .request
                .location
                .map(|loc| loc.estimated_rtt_ms(&c.profile.location))
        })
    }

    fn filter(&self, order: &Order, c: &Candidate, banned: bool) -> Option<RejectReason> {
        let req = &order.request;
        let p = &c.profile;
        if c.bid.order != order.id {
            return Some(RejectReason::WrongOrder);
        }
        if banned {
            return Some(RejectReason::Banned);
        }
        if req.deny_providers.contains(&p.id) {
            return Some(RejectReason::ProviderDenied);
        }
        if !req.allow_providers.is_empty() && !req.allow_providers.contains(&p.id) {
            return Some(RejectReason::ProviderNotAllowed);
        }
        if !req.accepts_model(c.bid.model) {
            return Some(RejectReason::ModelNotAccepted(c.bid.model));
        }
        if p.free_gpus < req.count {
            return Some(RejectReason::InsufficientGpus {
                free: p.free_gpus,
                wanted: req.count,
            });
        }
        if c.bid.price_per_gpu_hour > req.max_price_per_gpu_hour {
            return Some(RejectReason::AboveCeiling {
                price: c.bid.price_per_gpu_hour,
                ceiling: req.max_price_per_gpu_hour,
            });
        }
        if p.tier < req.min_tier {
            return Some(RejectReason::TierTooLow {
                tier: p.tier,
                min: req.min_tier,
            });
        }
        if req.deny_regions.contains(&p.region) {
            return Some(RejectReason::RegionDenied(p.region.clone()));
        }
        if !req.regions.is_empty() && !req.regions.contains(&p.region) {
            return Some(RejectReason::RegionNotAllowed(p.region.clone()));
        }
        if let (Some(max_ms), Some(rtt_ms)) = (req.max_latency_ms, Self::rtt_ms(order, c)) {
            if rtt_ms > f64::from(max_ms) {
                return Some(RejectReason::LatencyTooHigh { rtt_ms, max_ms });
            }
        }
        None
    }

    /// The random term for (`order`, `provider`) in this round: a ChaCha draw keyed by both,
    /// so it does not depend on the order the candidates arrive in.
    pub fn random_term(&self, order: OrderId, provider: ProviderId) -> f64 {
        let mut h = blake3::Hasher::new();
        h.update(b"spheron.matcher.random.v1");
        h.update(&self.config.round_seed.to_le_bytes());
        h.update(&order.0.to_le_bytes());
        h.update(&provider.0);
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(*h.finalize().as_bytes());
        // 53 random bits → [0, 1)
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn score(&self, order: &Order, c: &Candidate) -> (f64, Vec<Contribution>) {
        let cfg = &self.config;
        let w = cfg.weights;
        let req = &order.request;
        let p = &c.profile;
        let latency = match Self::rtt_ms(order, c) {
            Some(rtt) => cfg.latency_half_ms / (cfg.latency_half_ms + rtt.max(0.0)),
            None => 0.5,
        };
        let availability = if p.free_gpus == 0 {
            0.0
        } else {
            f64::from(p.free_gpus.saturating_sub(req.count)) / f64::from(p.free_gpus)
        };
        let ceiling = req.max_price_per_gpu_hour.0 as f64;
        let cost = ((ceiling - c.bid.price_per_gpu_hour.0 as f64) / ceiling).clamp(0.0, 1.0);
        let rating = ((p
            .stats
            .rating(cfg.rating_prior_mean, cfg.rating_prior_weight)
            - 1.0)
            / 4.0)
            .clamp(0.0, 1.0);
        let stake = if cfg.stake_half.0 == 0 {
            1.0
        } else {
            let s = p.stake.0 as f64;
            s / (s + cfg.stake_half.0 as f64)
        };
        let random = self.random_term(order.id, p.id);
        let parts = [
            (Criterion::Latency, latency, w.latency),
            (Criterion::Availability, availability, w.availability),
            (Criterion::Cost, cost, w.cost),
            (Criterion::Rating, rating, w.rating),
            (Criterion::Stake, stake, w.stake),
            (Criterion::Random, random, w.random),
        ];
        let breakdown: Vec<Contribution> = parts
            .iter()
            .map(|&(criterion, value, weight)| Contribution {
                criterion,
                value,
                weight,
                points: weight * value,
            })
            .collect();
        // Summed in a fixed order so the result is identical everywhere.
        let score = breakdown.iter().fold(0.0, |acc, c| acc + c.points);
        (score, breakdown)
    }

    /// Ranks like [`Matcher::rank`], additionally dropping providers in `banned`.
    pub fn rank_excluding(
        &self,
        order: &Order,
        candidates: &[Candidate],
        banned: &dyn Fn(ProviderId) -> bool,
    ) -> Ranking {
        let mut ranked = Vec::new();
        let mut rejected = Vec::new();
        for c in candidates {
            match self.filter(order, c, banned(c.profile.id)) {
                Some(reason) => rejected.push(Rejection {
                    provider: c.profile.id,
                    reason,
                }),
                None => {
                    let (score, breakdown) = self.score(order, c);
                    ranked.push(Ranked {
                        candidate: c.clone(),
                        score,
                        breakdown,
                    });
                }
            }
        }
        ranked.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(
                    a.candidate
                        .bid
                        .price_per_gpu_hour
                        .cmp(&b.candidate.bid.price_per_gpu_hour),
                )
                .then(a.provider().cmp(&b.provider()))
                .then(a.candidate.bid.model.cmp(&b.candidate.bid.model))
        });
        rejected.sort_by(|a, b| a.provider.cmp(&b.provider));
        Ranking {
            order: order.id,
            ranked,
            rejected,
        }
    }
}

impl Default for WeightedMatcher {
    fn default() -> Self {
        WeightedMatcher {
            config: MatcherConfig::default(),
        }
    }
}

impl Matcher for WeightedMatcher {
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> Result<Ranking> {
        Ok(self.rank_excluding(order, candidates, &|_| false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{candidate, order};

    #[test]
    fn filters_and_ranks_with_breakdown() {
        let o = order(1, "h100", 1, 3_000_000);
        let cheap = candidate(&o, "cheap", GpuModel::H100Sxm, 1_000_000, 4);
        let pricey = candidate(&o, "pricey", GpuModel::H100Sxm, 2_900_000, 4);
        let too_expensive = candidate(&o, "over", GpuModel::H100Sxm, 3_100_000, 4);
        let wrong = candidate(&o, "t4", GpuModel::T4, 100, 4);
        let m = WeightedMatcher::new(MatcherConfig {
            weights: Weights {
                random: 0.0,
                ..Weights::default()
            },
            ..MatcherConfig::default()
        })
        .unwrap();
        let r = m.rank(&o, &[pricey, too_expensive, cheap, wrong]).unwrap();
        assert_eq!(r.ranked.len(), 2);
        assert_eq!(r.ranked[0].candidate.profile.name, "cheap");
        let sum: f64 = r.ranked[0].breakdown.iter().map(|c| c.points).sum();
        assert!((sum - r.ranked[0].score).abs() < 1e-12);
        assert_eq!(r.rejected.len(), 2);
    }

    #[test]
    fn no_match_is_an_error_with_reasons() {
        let o = order(1, "h100", 8, 3_000_000);
        let small = candidate(&o, "small", GpuModel::H100Sxm, 1_000_000, 4);
        let r = WeightedMatcher::default().rank(&o, &[small]).unwrap();
        match r.best() {
            Err(Error::NoMatch { rejected, .. }) => assert!(matches!(
                rejected[0].reason,
                RejectReason::InsufficientGpus { free: 4, wanted: 8 }
            )),
            other => panic!("expected NoMatch, got {other:?}"),
        }
    }

    #[test]
    fn bad_weights_are_rejected() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let cfg = MatcherConfig {
                weights: Weights {
                    cost: bad,
                    ..Weights::default()
                },
                ..MatcherConfig::default()
            };
            assert!(matches!(
                WeightedMatcher::new(cfg),
                Err(Error::InvalidWeight { name: "cost", .. })
            ));
        }
    }

    #[test]
    fn random_term_is_keyed_not_positional() {
        let m = WeightedMatcher::default();
        let p = ProviderId::from_label("x");
        assert_eq!(m.random_term(OrderId(3), p), m.random_term(OrderId(3), p));
        assert_ne!(m.random_term(OrderId(3), p), m.random_term(OrderId(4), p));
    }

    #[test]
    fn greedy_assign_never_overbooks() {
        let orders: Vec<Order> = (1..=3).map(|i| order(i, "h100", 2, 3_000_000)).collect();
        let cands: Vec<Candidate> = orders
            .iter()
            .map(|o| candidate(o, "only", GpuModel::H100Sxm, 1_000_000, 4))
            .collect();
        let a = WeightedMatcher::default().assign(&orders, &cands).unwrap();
        assert_eq!(a.matched.len(), 2);
        assert_eq!(a.unmatched.len(), 1);
        assert!(matches!(
            a.unmatched[0].1[0].reason,
            RejectReason::CapacityTaken
        ));
    }
}
