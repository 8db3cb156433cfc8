//! The scoring seam: the default matcher's filters, criteria, determinism, tie-break and
//! explanations, with criteria added or re-weighted by an integrator.

use super::filters::{StandardFilters, sort_rejections, tie_break};
use super::weighted::{CRITERIA, N_CRITERIA, ONE, POINTS_PER_UNIT, RANDOM, normalise};
use super::{
    Contribution, Criterion, Matcher, MatcherConfig, Ranked, Ranking, Rejection, WeightedMatcher,
};
use crate::ids::ProviderId;
use crate::order::{Candidate, Order};
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// One in parts per million: the largest value a criterion takes.
pub const PPM_ONE: u32 = 1_000_000;

/// The name of a custom criterion, as breakdowns show it: 1 to
/// [`CriterionName::MAX_LEN`] bytes of UTF-8, stored inline so that [`Criterion`] stays
/// `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CriterionName {
    bytes: [u8; CriterionName::MAX_LEN],
    len: u8,
}

impl CriterionName {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = 23;

    /// A name; empty or longer than [`MAX_LEN`](Self::MAX_LEN) bytes is
    /// [`Error::InvalidField`].
    pub fn new(name: &str) -> Result<Self> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "criterion",
                format!(
                    "name {name:?} must be 1 to {} bytes long",
                    CriterionName::MAX_LEN
                ),
            ));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(CriterionName {
            bytes,
            len: b.len() as u8,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Built from a `&str` cut at its own length, so always valid UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Display for CriterionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CriterionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for CriterionName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CriterionName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CriterionName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A custom scoring criterion: the value of one candidate for one order, in parts per
/// million (`0..=`[`PPM_ONE`]; larger is better, values above are clamped).
///
/// Closures `Fn(&Order, &Candidate) -> u32 + Send + Sync` implement it.
///
/// # Determinism rules
///
/// Operators running the same matcher must agree to the last bit, so a criterion must be a
/// pure function of the order and the candidate:
/// - compute in integers (prices are `u128` base units, tiers, GPU counts and stakes are
///   integers) and round once, at the end, to ppm; where `f64` is unavoidable use only the
///   IEEE-754 correctly rounded operations `+ - * / sqrt` (not `sin`, `exp`, `powf`, `ln`,
///   whose results differ between platform `libm`s) and convert with `as u32` after
///   clamping;
/// - read no clock, no thread-local or OS randomness, no `HashMap` iteration order and no
///   state that differs between operators (seed any randomness from the order id, as the
///   default's random term does);
/// - do not depend on the position of the candidate in the list.
///
/// The matcher then weighs each value by an integer share of 1 000 000 and sums in `u64`,
/// so the score and every [`Contribution`] are exact.
pub trait Scorer: Send + Sync {
    /// The value of `candidate` for `order` in ppm.
    fn value_ppm(&self, order: &Order, candidate: &Candidate) -> u32;
}

impl<F> Scorer for F
where
    F: Fn(&Order, &Candidate) -> u32 + Send + Sync,
{
    fn value_ppm(&self, order: &Order, candidate: &Candidate) -> u32 {
        self(order, candidate)
    }
}

#[derive(Clone)]
struct Extra {
    name: CriterionName,
    scorer: Arc<dyn Scorer>,
}

/// The default matcher with criteria added: the [`StandardFilters`], the seven built-in
/// criteria of [`WeightedMatcher`] (re-weight one, or set its weight to 0 to replace it),
/// then each custom [`Scorer`] under its name, all weights normalised together to integer
/// shares of 1 000 000. Score, tie-break (lower price, provider id, model: see
/// [`tie_break`]), rejections and breakdowns follow the default, and the breakdown lists
/// the built-in criteria first, then the custom ones in the order they were added.
///
/// With no custom criterion it ranks exactly as [`WeightedMatcher`] with the same config.
///
/// ```
/// use spheron_core::matching::{CriteriaMatcher, PPM_ONE};
/// use spheron_core::{Candidate, Criterion, MatcherConfig, Order, Weights};
///
/// // Prefer providers with more GPUs free beyond the order, and drop the random term.
/// let matcher = CriteriaMatcher::builder(MatcherConfig {
///     weights: Weights { random: 0.0, ..Weights::default() },
///     ..MatcherConfig::default()
/// })
/// .criterion("headroom", 0.2, |o: &Order, c: &Candidate| {
///     let spare = c.profile.free_gpus.saturating_sub(o.request.count).min(8);
///     spare * (PPM_ONE / 8)
/// })
/// .build()?;
/// let name = spheron_core::matching::CriterionName::new("headroom")?;
/// assert!(matcher.weight(Criterion::Custom(name)) > 0.0);
/// # Ok::<(), spheron_core::Error>(())
/// ```
#[derive(Clone)]
pub struct CriteriaMatcher {
    base: WeightedMatcher,
    extras: Vec<Extra>,
    /// Weights in ppm: [`CRITERIA`] order, then `extras`.
    w: Vec<u64>,
}

impl fmt::Debug for CriteriaMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CriteriaMatcher")
            .field("config", self.base.config())
            .field(
                "custom",
                &self.extras.iter().map(|e| e.name).collect::<Vec<_>>(),
            )
            .field("weights_ppm", &self.w)
            .finish()
    }
}

/// Builds a [`CriteriaMatcher`]; validation happens once, in [`build`](Self::build).
#[derive(Clone)]
#[must_use]
pub struct CriteriaMatcherBuilder {
    config: MatcherConfig,
    extras: Vec<(String, f64, Arc<dyn Scorer>)>,
}

impl fmt::Debug for CriteriaMatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CriteriaMatcherBuilder")
            .field("config", &self.config)
            .field(
                "custom",
                &self
                    .extras
                    .iter()
                    .map(|(n, w, _)| (n.as_str(), *w))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CriteriaMatcherBuilder {
    /// Adds a criterion `name` with relative `weight` (on the same scale as
    /// [`Weights`](super::Weights)) computed by `scorer`.
    pub fn criterion(
        mut self,
        name: impl Into<String>,
        weight: f64,
        scorer: impl Scorer + 'static,
    ) -> Self {
        self.extras.push((name.into(), weight, Arc::new(scorer)));
        self
    }

    /// [`criterion`](Self::criterion) with a shared scorer.
    pub fn criterion_arc(
        mut self,
        name: impl Into<String>,
        weight: f64,
        scorer: Arc<dyn Scorer>,
    ) -> Self {
        self.extras.push((name.into(), weight, scorer));
        self
    }

    /// The matcher: the config as [`WeightedMatcher::new`] validates it, each custom weight
    /// finite and `>= 0` and each name valid ([`CriterionName::new`]), distinct from the
    /// built-in criteria and from the others.
    pub fn build(self) -> Result<CriteriaMatcher> {
        let base = WeightedMatcher::new(self.config)?;
        let w = &self.config.weights;
        let mut weights = vec![
            w.latency,
            w.availability,
            w.cost,
            w.rating,
            w.tier,
            w.stake,
            w.random,
        ];
        let mut extras: Vec<Extra> = Vec::with_capacity(self.extras.len());
        for (name, weight, scorer) in self.extras {
            let n = CriterionName::new(&name)?;
            if CRITERIA.iter().any(|c| c.to_string() == name) || extras.iter().any(|e| e.name == n)
            {
                return Err(Error::invalid(
                    "criterion",
                    format!("{name:?} is already a criterion of this matcher"),
                ));
            }
            if !weight.is_finite() || weight < 0.0 {
                return Err(Error::invalid(
                    "criterion",
                    format!("weight {weight} of {name:?} must be finite and >= 0"),
                ));
            }
            weights.push(weight);
            extras.push(Extra { name: n, scorer });
        }
        Ok(CriteriaMatcher {
            base,
            extras,
            w: normalise(&weights),
        })
    }
}

impl CriteriaMatcher {
    /// A builder from the default matcher's configuration (weights, seed, parameters).
    pub fn builder(config: MatcherConfig) -> CriteriaMatcherBuilder {
        CriteriaMatcherBuilder {
            config,
            extras: Vec::new(),
        }
    }

    /// The configuration of the built-in criteria.
    pub fn config(&self) -> &MatcherConfig {
        self.base.config()
    }

    /// The normalised weight of `criterion`, as a share of 1 (0 for one it does not have).
    pub fn weight(&self, criterion: Criterion) -> f64 {
        self.position(criterion)
            .map_or(0.0, |i| self.w[i] as f64 / ONE as f64)
    }

    /// The criteria in breakdown order.
    pub fn criteria(&self) -> Vec<Criterion> {
        CRITERIA
            .iter()
            .copied()
            .chain(self.extras.iter().map(|e| Criterion::Custom(e.name)))
            .collect()
    }

    fn position(&self, criterion: Criterion) -> Option<usize> {
        match criterion {
            Criterion::Custom(n) => self
                .extras
                .iter()
                .position(|e| e.name == n)
                .map(|i| N_CRITERIA + i),
            c => CRITERIA.iter().position(|x| *x == c),
        }
    }

    /// Ranks like [`Matcher::rank`], additionally dropping providers for which `banned`
    /// holds. Fails only when the order itself is unusable (a location off the globe).
    pub fn rank_excluding(
        &self,
        order: &Order,
        candidates: &[Candidate],
        banned: &dyn Fn(ProviderId) -> bool,
    ) -> Result<Ranking> {
        let ctx = self.base.ctx(order)?;
        let filters = StandardFilters::new(order)?;
        let mut scored: Vec<(u64, usize, Vec<u32>)> = Vec::new();
        let mut rejected = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let place = match filters.screen_one(c, banned(c.profile.id)) {
                Ok(place) => place,
                Err(reason) => {
                    rejected.push(Rejection {
                        provider: c.profile.id,
                        reason,
                    });
                    continue;
                }
            };
            let f = self
                .base
                .features_at(&c.profile, c.bid.model, c.bid.price_per_gpu_hour, place);
            let (builtin, _) = self.base.det(&ctx, &f, ctx.rtt_us(&f.place));
            let mut values: Vec<u32> = builtin.to_vec();
            values[RANDOM] = WeightedMatcher::random_ppm(&ctx, f.stream);
            values.extend(
                self.extras
                    .iter()
                    .map(|e| e.scorer.value_ppm(order, c).min(PPM_ONE)),
            );
            let points = values
                .iter()
                .zip(&self.w)
                .fold(0u64, |acc, (v, w)| acc + w * u64::from(*v));
            scored.push((points, i, values));
        }
        scored.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| tie_break(&candidates[a.1], &candidates[b.1]))
                .then(a.1.cmp(&b.1))
        });
        let criteria = self.criteria();
        let ranked = scored
            .into_iter()
            .map(|(points, i, values)| Ranked {
                candidate: candidates[i].clone(),
                score: points as f64 / POINTS_PER_UNIT,
                breakdown: criteria
                    .iter()
                    .zip(values.iter().zip(&self.w))
                    .map(|(&criterion, (&v, &w))| Contribution {
                        criterion,
                        value: f64::from(v) / ONE as f64,
                        weight: w as f64 / ONE as f64,
                        points: (w * u64::from(v)) as f64 / POINTS_PER_UNIT,
                    })
                    .collect(),
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

impl Matcher for CriteriaMatcher {
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> Result<Ranking> {
        self.rank_excluding(order, candidates, &|_| false)
    }
}
