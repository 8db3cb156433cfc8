//! The default matcher: hard filters, then a fixed-point weighted score.

use super::filters::{StandardFilters, place_of, sort_rejections, tie_break};
use super::geo::{self, Unit};
use super::{Contribution, Criterion, Matcher, Ranked, Ranking, RejectReason, Rejection};
use crate::gpu::GpuModel;
use crate::ids::{OrderId, ProviderId};
use crate::money::Amount;
use crate::order::{Candidate, Order};
use crate::provider::{ProviderProfile, ProviderStats, RatingPrior, TrustTier};
use crate::{Error, Result};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One in fixed point: criterion values and weights are parts per million.
pub(crate) const ONE: u64 = 1_000_000;
/// Score points per unit of score (`weight ppm * value ppm`).
pub(crate) const POINTS_PER_UNIT: f64 = 1e12;

/// Number of criteria.
pub(crate) const N_CRITERIA: usize = 7;
/// The criteria in breakdown order.
pub(crate) const CRITERIA: [Criterion; N_CRITERIA] = [
    Criterion::Latency,
    Criterion::Availability,
    Criterion::Cost,
    Criterion::Rating,
    Criterion::Tier,
    Criterion::Stake,
    Criterion::Random,
];
pub(crate) const LAT: usize = 0;
pub(crate) const AVAIL: usize = 1;
pub(crate) const COST: usize = 2;
pub(crate) const RATING: usize = 3;
pub(crate) const TIER: usize = 4;
pub(crate) const STAKE: usize = 5;
/// The random term is last: `0..RANDOM` are the deterministic criteria.
pub(crate) const RANDOM: usize = 6;

/// Weights of the [`WeightedMatcher`]'s criteria. Validated by [`WeightedMatcher::new`].
///
/// Weights are relative: the matcher normalises them to sum to 1 (each becomes an integer
/// share of 1 000 000), so `{cost: 3, rating: 1}` and `{cost: 0.75, rating: 0.25}` rank
/// alike. The breakdown reports the normalised weight.
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
    /// Trust-tier weight.
    pub tier: f64,
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
            cost: 0.25,
            rating: 0.15,
            tier: 0.10,
            stake: 0.10,
            random: 0.10,
        }
    }
}

impl Weights {
    fn named(&self) -> [(&'static str, f64); N_CRITERIA] {
        [
            ("latency", self.latency),
            ("availability", self.availability),
            ("cost", self.cost),
            ("rating", self.rating),
            ("tier", self.tier),
            ("stake", self.stake),
            ("random", self.random),
        ]
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
    /// Prior mean rating (`1..=5`) for the rating criterion (default
    /// [`RatingPrior::STANDARD`], the tier policy's prior).
    pub rating_prior_mean: f64,
    /// Prior weight in ratings (`0.001..=1e9`), as a number of pseudo-ratings.
    pub rating_prior_weight: f64,
    /// RTT at which the latency criterion reaches 0.5, in ms (`0.001..=1e6`).
    pub latency_half_ms: f64,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            weights: Weights::default(),
            round_seed: 0,
            stake_half: Amount(1_000 * 10u128.pow(18)),
            // The one rating prior (also the tier policy's).
            rating_prior_mean: f64::from(RatingPrior::STANDARD.mean_milli) / 1000.0,
            rating_prior_weight: RatingPrior::STANDARD.weight_milli as f64 / 1000.0,
            latency_half_ms: 50.0,
        }
    }
}

/// The configuration in fixed point.
#[derive(Clone, Debug)]
pub(crate) struct Fixed {
    /// Weights in ppm, in [`CRITERIA`] order.
    pub w: [u64; N_CRITERIA],
    stake_half: u128,
    prior: RatingPrior,
    half_us: u64,
}

/// Relative weights (each finite and `>= 0`) as integer shares of [`ONE`]: each over the
/// largest, then over the sum of those, rounded. All zero stays all zero.
pub(crate) fn normalise(values: &[f64]) -> Vec<u64> {
    let max = values.iter().fold(0.0f64, |m, &v| m.max(v));
    if max <= 0.0 {
        return vec![0; values.len()];
    }
    let rel: Vec<f64> = values.iter().map(|&v| v / max).collect();
    let sum = rel.iter().fold(0.0, |a, &r| a + r);
    rel.iter()
        .map(|r| (r / sum * ONE as f64).round() as u64)
        .collect()
}

/// `floor(a * b / c)` for `a <= c` (so the result is `<= b`): the crate's one mul-div,
/// [`mul_div_floor_wide`](crate::money::mul_div_floor_wide).
pub(crate) fn mul_div(a: u128, b: u64, c: u128) -> u64 {
    debug_assert!(a <= c && c > 0);
    crate::money::mul_div_floor_wide(a, u128::from(b), c).map_or(0, |q| q.min(u128::from(b)) as u64)
}

impl Fixed {
    fn new(config: &MatcherConfig) -> Result<Self> {
        let named = config.weights.named();
        for (name, value) in named {
            if !value.is_finite() || value < 0.0 {
                return Err(Error::InvalidWeight { name, value });
            }
        }
        let mut w = [0u64; N_CRITERIA];
        let values: Vec<f64> = named.iter().map(|&(_, v)| v).collect();
        for (slot, n) in w.iter_mut().zip(normalise(&values)) {
            *slot = n;
        }
        let in_range = |field: &'static str, v: f64, lo: f64, hi: f64| -> Result<f64> {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(Error::invalid(field, format!("{v} is outside {lo}..={hi}")))
            }
        };
        let mean = in_range("rating_prior_mean", config.rating_prior_mean, 1.0, 5.0)?;
        let weight = in_range(
            "rating_prior_weight",
            config.rating_prior_weight,
            0.001,
            1e9,
        )?;
        let half = in_range("latency_half_ms", config.latency_half_ms, 0.001, 1e6)?;
        Ok(Fixed {
            w,
            stake_half: config.stake_half.0,
            prior: RatingPrior {
                mean_milli: (mean * 1000.0).round() as u32,
                weight_milli: ((weight * 1000.0).round() as u64).max(1),
            },
            half_us: (half * 1000.0).round() as u64,
        })
    }

    /// Price against the ceiling: `(ceiling - price) / ceiling`.
    pub(crate) fn cost_ppm(ceiling: u128, price: u128) -> u32 {
        if price >= ceiling {
            0
        } else {
            mul_div(ceiling - price, ONE, ceiling) as u32
        }
    }

    /// GPUs left after the order over GPUs free now, over all of the provider's nodes.
    pub(crate) fn availability_ppm(total: u32, count: u32) -> u32 {
        if total == 0 {
            return 0;
        }
        (u64::from(total - count.min(total)) * ONE / u64::from(total)) as u32
    }

    /// `half / (half + rtt)`.
    pub(crate) fn latency_ppm(&self, rtt_us: Option<u64>) -> u32 {
        match rtt_us {
            None => (ONE / 2) as u32,
            Some(rtt) => {
                let h = u128::from(self.half_us);
                (h * u128::from(ONE) / (h + u128::from(rtt))) as u32
            }
        }
    }

    /// The Bayesian mean rating ([`ProviderStats::rating_micro`]) mapped from `1..=5` onto
    /// `0..=1`.
    pub(crate) fn rating_ppm(&self, s: &ProviderStats) -> u32 {
        let micro = s.rating_micro(self.prior);
        (micro.saturating_sub(1_000_000) / 4).min(ONE) as u32
    }

    /// Trust tier mapped from `0..=7` onto `0..=1`.
    pub(crate) fn tier_ppm(tier: TrustTier) -> u32 {
        (u64::from(tier.0.min(TrustTier::MAX.0)) * ONE / u64::from(TrustTier::MAX.0)) as u32
    }

    /// `stake / (stake + stake_half)`: diminishing returns.
    pub(crate) fn stake_ppm(&self, stake: Amount) -> u32 {
        if self.stake_half == 0 {
            return ONE as u32;
        }
        mul_div(stake.0, ONE, stake.0.saturating_add(self.stake_half)) as u32
    }
}

/// Where a provider is, for the latency criterion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Place {
    /// A measured round trip, in µs.
    Measured(u64),
    /// A location; the round trip is estimated from the distance to the tenant.
    At(Unit),
}

/// What the score needs of one (provider, model, price), validated and in fixed point.
#[derive(Clone, Debug)]
pub(crate) struct Features {
    pub provider: ProviderId,
    pub model: GpuModel,
    pub price: u128,
    /// Largest free block (what the order must fit in).
    pub free: u32,
    /// Free GPUs over all nodes (the availability criterion's basis).
    pub total: u32,
    pub tier: TrustTier,
    pub place: Place,
    pub rating_ppm: u32,
    pub stake_ppm: u32,
    /// The provider's ChaCha stream for the random term.
    pub stream: u64,
}

/// The ChaCha stream of a provider: the first 8 bytes of a BLAKE3 hash of its id.
pub(crate) fn provider_stream(p: &ProviderId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"spheron.matcher.stream.v1");
    h.update(&p.0);
    let b = h.finalize();
    let mut s = [0u8; 8];
    s.copy_from_slice(&b.as_bytes()[..8]);
    u64::from_le_bytes(s)
}

/// A measured RTT in µs, or why it is unusable.
pub(crate) fn measured_us(ms: f64) -> std::result::Result<u64, String> {
    if ms.is_finite() && (0.0..=1e9).contains(&ms) {
        Ok((ms * 1000.0).round() as u64)
    } else {
        Err(format!("measured rtt {ms} ms is not in 0..=1e9"))
    }
}

/// The per-order part of scoring, computed once per order.
pub(crate) struct OrderCtx {
    pub ceiling: u128,
    pub count: u32,
    pub min_tier: TrustTier,
    pub loc: Option<Unit>,
    pub max_rtt_us: Option<u64>,
    rng: ChaCha8Rng,
}

impl OrderCtx {
    /// The round trip to a provider in µs, `None` when neither measured nor locatable.
    pub(crate) fn rtt_us(&self, place: &Place) -> Option<u64> {
        super::filters::rtt_us(self.loc, place)
    }
}

/// A scored candidate in fixed point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scored {
    /// Criterion values in ppm, [`CRITERIA`] order.
    pub values: [u32; N_CRITERIA],
    /// `sum(w * value)`.
    pub points: u64,
}

/// The default matcher: hard filters, then a weighted score over latency, availability,
/// cost, rating, stake and a seeded random term.
///
/// Filters (each dropped provider gets a [`RejectReason`]): bid for this order, not banned,
/// provider allow/deny lists, GPU model and memory, enough free GPUs on one node, price
/// at most the ceiling, trust tier at least the minimum, region allow/deny lists, round
/// trip at most `max_latency_ms`: the [`StandardFilters`], public for custom matchers.
///
/// Criteria, each in `[0, 1]`:
/// - latency: `h / (h + rtt)` with `h = latency_half_ms`; the measured RTT when the
///   profile has one, else estimated from the great-circle distance to the tenant, else 0.5;
/// - availability: free GPUs left after the order over free GPUs now (all nodes);
/// - cost: `(ceiling - price) / ceiling`;
/// - rating: [`ProviderStats::rating_micro`], the feedback mean with a prior
///   (`rating_prior_weight` pseudo-ratings at `rating_prior_mean`, by default
///   [`RatingPrior::STANDARD`], the tier policy's), mapped from 1..5 onto 0..1;
/// - stake: `stake / (stake + stake_half)`;
/// - random: a ChaCha8 draw keyed by the round seed and the order id, on the provider's own
///   stream, so it does not depend on the order candidates arrive in.
///
/// Ties break by lower price, then lower provider id, then lower model.
#[derive(Clone, Debug)]
pub struct WeightedMatcher {
    config: MatcherConfig,
    fixed: Fixed,
}

impl WeightedMatcher {
    /// A matcher with validated weights (each finite and `>= 0`, else
    /// [`Error::InvalidWeight`]) and parameters (in range, else [`Error::InvalidField`]).
    pub fn new(config: MatcherConfig) -> Result<Self> {
        let fixed = Fixed::new(&config)?;
        Ok(WeightedMatcher { config, fixed })
    }

    /// The configuration.
    pub fn config(&self) -> &MatcherConfig {
        &self.config
    }

    pub(crate) fn fixed(&self) -> &Fixed {
        &self.fixed
    }

    /// The normalised weight of `criterion`, as a share of 1.
    pub fn weight(&self, criterion: Criterion) -> f64 {
        let i = CRITERIA
            .iter()
            .position(|c| *c == criterion)
            .unwrap_or(RANDOM);
        self.fixed.w[i] as f64 / ONE as f64
    }

    /// The RTT used for `candidate` in ms: measured when known, else estimated from the
    /// great-circle distance, else `None` when the tenant gave no location (or a value is
    /// unusable). Exact to the microsecond and identical on every machine.
    pub fn rtt_ms(order: &Order, c: &Candidate) -> Option<f64> {
        let place = match c.profile.rtt_ms {
            Some(ms) => Place::Measured(measured_us(ms).ok()?),
            None => Place::At(Unit::of(&c.profile.location)?),
        };
        let us = match place {
            Place::Measured(us) => us,
            Place::At(u) => {
                let o = Unit::of(&order.request.location?)?;
                geo::rtt_us_for_metres(geo::chord_to_metres(geo::chord(&o, &u)))
            }
        };
        Some(us as f64 / 1000.0)
    }

    /// The per-order context; an order whose location is off the globe is refused.
    pub(crate) fn ctx(&self, order: &Order) -> Result<OrderCtx> {
        let req = &order.request;
        let loc = super::filters::order_location(order)?;
        let mut h = blake3::Hasher::new();
        h.update(b"spheron.matcher.random.v2");
        h.update(&self.config.round_seed.to_le_bytes());
        h.update(&order.id.0.to_le_bytes());
        Ok(OrderCtx {
            ceiling: req.max_price_per_gpu_hour.0,
            count: req.count,
            min_tier: req.min_tier,
            loc,
            max_rtt_us: req.max_latency_ms.map(|ms| u64::from(ms) * 1000),
            rng: ChaCha8Rng::from_seed(*h.finalize().as_bytes()),
        })
    }

    /// The features of one candidate, or why its profile is unusable.
    pub(crate) fn features(
        &self,
        profile: &ProviderProfile,
        model: GpuModel,
        price: Amount,
    ) -> std::result::Result<Features, RejectReason> {
        Ok(self.features_at(profile, model, price, place_of(profile)?))
    }

    /// The features of one candidate whose place the filters already validated.
    pub(crate) fn features_at(
        &self,
        profile: &ProviderProfile,
        model: GpuModel,
        price: Amount,
        place: Place,
    ) -> Features {
        Features {
            provider: profile.id,
            model,
            price: price.0,
            free: profile.free_gpus,
            total: profile.total_free_gpus.max(profile.free_gpus),
            tier: profile.tier,
            place,
            rating_ppm: self.fixed.rating_ppm(&profile.stats),
            stake_ppm: self.fixed.stake_ppm(profile.stake),
            stream: provider_stream(&profile.id),
        }
    }

    /// The random term in ppm: the first word of the provider's ChaCha8 stream under the
    /// order's key.
    pub(crate) fn random_ppm(ctx: &OrderCtx, stream: u64) -> u32 {
        let mut rng = ctx.rng.clone();
        rng.set_stream(stream);
        ((u128::from(rng.next_u64()) * u128::from(ONE)) >> 64) as u32
    }

    /// The deterministic part of the score (everything but the random term) and the values.
    pub(crate) fn det(
        &self,
        ctx: &OrderCtx,
        f: &Features,
        rtt_us: Option<u64>,
    ) -> ([u32; N_CRITERIA], u64) {
        let mut v = [0u32; N_CRITERIA];
        v[LAT] = self.fixed.latency_ppm(rtt_us);
        v[AVAIL] = Fixed::availability_ppm(f.total, ctx.count);
        v[COST] = Fixed::cost_ppm(ctx.ceiling, f.price);
        v[RATING] = f.rating_ppm;
        v[TIER] = Fixed::tier_ppm(f.tier);
        v[STAKE] = f.stake_ppm;
        let w = &self.fixed.w;
        let points = (0..RANDOM).fold(0u64, |acc, i| acc + w[i] * u64::from(v[i]));
        (v, points)
    }

    /// The full fixed-point score.
    pub(crate) fn score_fixed(&self, ctx: &OrderCtx, f: &Features) -> Scored {
        let (mut values, det) = self.det(ctx, f, ctx.rtt_us(&f.place));
        values[RANDOM] = Self::random_ppm(ctx, f.stream);
        Scored {
            values,
            points: det + self.fixed.w[RANDOM] * u64::from(values[RANDOM]),
        }
    }

    /// The explainable form of a fixed-point score.
    pub(crate) fn explain(&self, s: &Scored) -> (f64, Vec<Contribution>) {
        let breakdown = CRITERIA
            .iter()
            .enumerate()
            .map(|(i, &criterion)| Contribution {
                criterion,
                value: f64::from(s.values[i]) / ONE as f64,
                weight: self.fixed.w[i] as f64 / ONE as f64,
                points: (self.fixed.w[i] * u64::from(s.values[i])) as f64 / POINTS_PER_UNIT,
            })
            .collect();
        (s.points as f64 / POINTS_PER_UNIT, breakdown)
    }

    /// The random term for (`order`, `provider`) in this round, in `[0, 1)`: a ChaCha8 draw
    /// keyed by the round seed and the order, on the provider's stream, so it does not
    /// depend on the order the candidates arrive in.
    pub fn random_term(&self, order: OrderId, provider: ProviderId) -> f64 {
        let mut h = blake3::Hasher::new();
        h.update(b"spheron.matcher.random.v2");
        h.update(&self.config.round_seed.to_le_bytes());
        h.update(&order.0.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(*h.finalize().as_bytes());
        rng.set_stream(provider_stream(&provider));
        (((u128::from(rng.next_u64()) * u128::from(ONE)) >> 64) as u32) as f64 / ONE as f64
    }

    /// Ranks like [`Matcher::rank`], additionally dropping providers for which `banned`
    /// holds. Fails only when the order itself is unusable (a location off the globe).
    pub fn rank_excluding(
        &self,
        order: &Order,
        candidates: &[Candidate],
        banned: &dyn Fn(ProviderId) -> bool,
    ) -> Result<Ranking> {
        let ctx = self.ctx(order)?;
        let filters = StandardFilters::new(order)?;
        let mut scored: Vec<(u64, usize, Scored)> = Vec::new();
        let mut rejected = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            match filters.screen_one(c, banned(c.profile.id)) {
                Ok(place) => {
                    let f =
                        self.features_at(&c.profile, c.bid.model, c.bid.price_per_gpu_hour, place);
                    let s = self.score_fixed(&ctx, &f);
                    scored.push((s.points, i, s));
                }
                Err(reason) => rejected.push(Rejection {
                    provider: c.profile.id,
                    reason,
                }),
            }
        }
        scored.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| tie_break(&candidates[a.1], &candidates[b.1]))
                .then(a.1.cmp(&b.1))
        });
        let ranked = scored
            .iter()
            .map(|(_, i, s)| {
                let (score, breakdown) = self.explain(s);
                Ranked {
                    candidate: candidates[*i].clone(),
                    score,
                    breakdown,
                }
            })
            .collect();
        sort_rejections(&mut rejected);
        Ok(Ranking {
            order: order.id,
            ranked,
            rejected,
        })
    }
}

/// A total order on reasons (by their text) so sorted rejections are reproducible.
pub(crate) fn reason_rank(a: &RejectReason, b: &RejectReason) -> Ordering {
    a.to_string().cmp(&b.to_string())
}

impl Default for WeightedMatcher {
    fn default() -> Self {
        let config = MatcherConfig::default();
        // The default configuration is valid by construction (checked in a unit test).
        let fixed = Fixed::new(&config).unwrap_or(Fixed {
            w: [
                200_000, 100_000, 250_000, 150_000, 100_000, 100_000, 100_000,
            ],
            stake_half: config.stake_half.0,
            prior: RatingPrior::STANDARD,
            half_us: 50_000,
        });
        WeightedMatcher { config, fixed }
    }
}

impl Matcher for WeightedMatcher {
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> Result<Ranking> {
        self.rank_excluding(order, candidates, &|_| false)
    }
}
