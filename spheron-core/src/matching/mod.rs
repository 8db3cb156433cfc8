//! Matching: the [`Matcher`] plug point, its explainable result types, the default
//! [`WeightedMatcher`], the [`ProviderIndex`] for marketplace-scale queries, and batch
//! assignment ([`greedy_assign`], [`optimal_assign`]).
//!
//! A matcher is a pure, synchronous function of the order, the candidates and its
//! configuration (including a round seed), so independent operators running it agree.
//!
//! # Determinism
//!
//! The default matcher scores in fixed point: every criterion value is an integer in
//! parts per million (`0..=1_000_000`), every weight is an integer share of 1 000 000,
//! and a score is the integer sum of `weight * value` (units of 10^-12). Distances use
//! trigonometry built from IEEE-754 `+ - * / sqrt` only (no platform `libm`), the random
//! term comes from ChaCha8, and ties break on price, then provider id, then model. The
//! `f64` fields of [`Ranked`] and [`Contribution`] are exact images of those integers,
//! so the same orders, bids and seed give byte-identical results on every machine.
//!
//! # Custom matchers
//!
//! A custom matcher changes only what it means to change:
//! - [`StandardFilters`] are the default's hard filters with their [`RejectReason`]s (the
//!   code [`WeightedMatcher`] itself runs), so a matcher of its own ranking cannot forget
//!   one; [`tie_break`] and [`sort_rejections`] give it the default's orders;
//! - [`CriteriaMatcher`] keeps the filters, criteria, fixed-point score, tie-break and
//!   breakdowns of the default and adds [`Scorer`]s under their own names
//!   ([`Criterion::Custom`]), or re-weights the built-in ones (weight 0 replaces one). The
//!   determinism rules a criterion must follow are on [`Scorer`].
//!
//! ```
//! use spheron_core::{
//!     AccountId, Amount, Bid, Candidate, GeoPoint, GpuModel, GpuRequest, Matcher, Order,
//!     OrderId, ProviderProfile, ProviderStats, Timestamp, TrustTier, WeightedMatcher,
//! };
//!
//! let order = Order {
//!     id: OrderId(1),
//!     tenant: AccountId::from_label("tenant"),
//!     request: GpuRequest::builder()
//!         .gpu("h100")
//!         .hours(1)
//!         .max_price_per_gpu_hour(Amount(3_000_000))
//!         .build()?,
//!     created_at: Timestamp(0),
//!     bid_deadline: Timestamp(0),
//! };
//! let bid = |name: &str, model, price| {
//!     let id = AccountId::from_label(name);
//!     Candidate {
//!         bid: Bid {
//!             order: order.id,
//!             provider: id,
//!             model,
//!             price_per_gpu_hour: Amount(price),
//!             placed_at: Timestamp(0),
//!         },
//!         profile: ProviderProfile {
//!             id,
//!             name: name.into(),
//!             region: "eu-west".into(),
//!             location: GeoPoint::new(50.1, 8.7).unwrap(),
//!             rtt_ms: None,
//!             stake: Amount(0),
//!             stats: ProviderStats::default(),
//!             tier: TrustTier(3),
//!             free_gpus: 4,
//!             total_free_gpus: 4,
//!         },
//!     }
//! };
//! let bids = [
//!     bid("cheap", GpuModel::H100Sxm, 1_000_000),
//!     bid("t4-box", GpuModel::T4, 100_000),
//! ];
//! let ranking = WeightedMatcher::default().rank(&order, &bids)?;
//! let best = ranking.best()?;
//! assert_eq!(best.candidate.profile.name, "cheap");
//! for c in &best.breakdown {
//!     println!("{:>12}: {:.3} x {:.3} = {:.4}", c.criterion, c.weight, c.value, c.points);
//! }
//! assert_eq!(ranking.rejected.len(), 1); // the T4 is not an H100
//! # Ok::<(), spheron_core::Error>(())
//! ```

mod criteria;
mod filters;
mod geo;
mod index;
mod weighted;

pub use criteria::{CriteriaMatcher, CriteriaMatcherBuilder, CriterionName, PPM_ONE, Scorer};
pub use filters::{Screened, StandardFilters, sort_rejections, tie_break};
pub use index::{IndexStats, Offer, ProviderIndex};
pub use weighted::{MatcherConfig, WeightedMatcher, Weights};

use crate::gpu::GpuModel;
use crate::ids::{OrderId, ProviderId};
use crate::money::Amount;
use crate::order::{Candidate, Order};
use crate::provider::TrustTier;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
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
    /// Trust tier (0..=7) from the tier policy.
    Tier,
    /// Stake, with diminishing returns.
    Stake,
    /// The seeded random term.
    Random,
    /// A criterion a custom matcher added (see [`CriteriaMatcher`]), by its name.
    Custom(CriterionName),
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Criterion::Latency => "latency",
            Criterion::Availability => "availability",
            Criterion::Cost => "cost",
            Criterion::Rating => "rating",
            Criterion::Tier => "tier",
            Criterion::Stake => "stake",
            Criterion::Random => "random",
            Criterion::Custom(name) => name.as_str(),
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
    /// The provider's launcher never started the workload ([`crate::Error::NotStarted`]):
    /// the lease was refunded and the next bid taken.
    NotStarted(String),
    /// The provider's profile holds a value the matcher cannot use (a non-finite or
    /// negative measured RTT, a location off the globe).
    InvalidProfile(String),
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
            RejectReason::NotStarted(r) => write!(f, "workload never started: {r}"),
            RejectReason::InvalidProfile(s) => write!(f, "invalid profile: {s}"),
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
///
/// Implementations must be deterministic functions of their inputs so that several
/// operators agree; [`WeightedMatcher`] is the default.
pub trait Matcher: Send + Sync {
    /// Ranks `candidates` for `order`: filtered, scored, explained.
    ///
    /// An order nobody can serve gives a ranking with no `ranked` entries and a reason per
    /// provider in `rejected`; [`Ranking::best`] turns that into [`Error::NoMatch`].
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> Result<Ranking>;

    /// Assigns many orders at once without booking more GPUs on a provider than its free
    /// block holds. The default is [`improved_assign`]: global greedy by score, then a
    /// local search of moves and swaps.
    fn assign(&self, orders: &[Order], candidates: &[Candidate]) -> Result<Assignment> {
        improved_assign(self, orders, candidates)
    }
}

/// The order in which a batch assignment considers (order, candidate) pairs: higher score
/// first, then lower order id, lower price, lower provider id, lower model.
pub(crate) fn pair_cmp((oa, a): (OrderId, &Ranked), (ob, b): (OrderId, &Ranked)) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then(oa.cmp(&ob))
        .then(
            a.candidate
                .bid
                .price_per_gpu_hour
                .cmp(&b.candidate.bid.price_per_gpu_hour),
        )
        .then(a.provider().cmp(&b.provider()))
        .then(a.candidate.bid.model.cmp(&b.candidate.bid.model))
}

fn check_unique_ids(orders: &[Order]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for o in orders {
        if !seen.insert(o.id) {
            return Err(Error::invalid(
                "orders",
                format!("{} appears twice in one batch", o.id),
            ));
        }
    }
    Ok(())
}

/// Greedy batch assignment over any matcher's `rank`: global greedy by score.
///
/// Every order is ranked; all (order, candidate) pairs are then taken in one sequence:
/// higher score first, ties by lower order id, lower price, lower provider id, lower model.
/// A pair is booked when its order is still open and the provider's free block for that
/// model (the smallest `free_gpus` any candidate of that provider and model reports, minus
/// what this batch already booked there) still holds the order's GPU count. Unmatched orders carry the filter reasons from `rank` plus
/// [`RejectReason::CapacityTaken`] for every provider lost to a better pair.
///
/// Capacity is tracked per (provider, model) as the largest free block: conservative,
/// never over-booked. Runs in `O(P log P)` for `P` pairs after ranking.
pub fn greedy_assign<M: Matcher + ?Sized>(
    matcher: &M,
    orders: &[Order],
    candidates: &[Candidate],
) -> Result<Assignment> {
    let batch = Batch::rank(matcher, orders, candidates)?;
    let chosen = batch.greedy();
    Ok(batch.finish(&chosen))
}

/// [`greedy_assign`], then a local search that only ever raises the total score: an order
/// moves to a better candidate with spare capacity, or two orders with the same GPU count
/// swap providers when the sum of their scores rises. Orders are visited by id and their
/// candidates best first, so the result is deterministic; at most 16 passes.
///
/// This is the default [`Matcher::assign`]. It closes most of greedy's gap to
/// [`optimal_assign`] at a fraction of its cost.
pub fn improved_assign<M: Matcher + ?Sized>(
    matcher: &M,
    orders: &[Order],
    candidates: &[Candidate],
) -> Result<Assignment> {
    let batch = Batch::rank(matcher, orders, candidates)?;
    let mut chosen = batch.greedy();
    batch.improve(&mut chosen);
    Ok(batch.finish(&chosen))
}

type SlotKey = (ProviderId, GpuModel);

/// A ranked batch: orders by id with their rankings and capacities.
struct Batch {
    orders: Vec<Order>,
    rankings: Vec<Ranking>,
    /// Free block per (provider, model): the smallest any candidate reports.
    capacity: BTreeMap<SlotKey, u32>,
}

fn key_of(r: &Ranked) -> SlotKey {
    (r.provider(), r.candidate.bid.model)
}

impl Batch {
    fn rank<M: Matcher + ?Sized>(
        matcher: &M,
        orders: &[Order],
        candidates: &[Candidate],
    ) -> Result<Self> {
        check_unique_ids(orders)?;
        let mut by_order: BTreeMap<OrderId, Vec<Candidate>> = BTreeMap::new();
        for c in candidates {
            by_order.entry(c.bid.order).or_default().push(c.clone());
        }
        let mut sorted: Vec<Order> = orders.to_vec();
        sorted.sort_by_key(|o| o.id);
        let mut rankings = Vec::with_capacity(sorted.len());
        let mut capacity: BTreeMap<SlotKey, u32> = BTreeMap::new();
        for order in &sorted {
            let cands = by_order.remove(&order.id).unwrap_or_default();
            let ranking = matcher.rank(order, &cands)?;
            for r in &ranking.ranked {
                if !r.score.is_finite() {
                    return Err(Error::Matcher(format!(
                        "score {} for {} on {} is not finite",
                        r.score,
                        r.provider(),
                        order.id
                    )));
                }
                let free = r.candidate.profile.free_gpus;
                capacity
                    .entry(key_of(r))
                    .and_modify(|f| *f = (*f).min(free))
                    .or_insert(free);
            }
            rankings.push(ranking);
        }
        Ok(Batch {
            orders: sorted,
            rankings,
            capacity,
        })
    }

    /// Global greedy: per order the index of its chosen candidate.
    fn greedy(&self) -> Vec<Option<usize>> {
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for (i, r) in self.rankings.iter().enumerate() {
            pairs.extend((0..r.ranked.len()).map(|j| (i, j)));
        }
        pairs.sort_by(|&(ia, ja), &(ib, jb)| {
            pair_cmp(
                (self.orders[ia].id, &self.rankings[ia].ranked[ja]),
                (self.orders[ib].id, &self.rankings[ib].ranked[jb]),
            )
        });
        let mut used: BTreeMap<SlotKey, u32> = BTreeMap::new();
        let mut chosen = vec![None; self.orders.len()];
        for (i, j) in pairs {
            if chosen[i].is_some() {
                continue;
            }
            let r = &self.rankings[i].ranked[j];
            let count = self.orders[i].request.count;
            let key = key_of(r);
            let taken = used.get(&key).copied().unwrap_or(0);
            if self.capacity[&key].saturating_sub(taken) >= count {
                *used.entry(key).or_default() += count;
                chosen[i] = Some(j);
            }
        }
        chosen
    }

    fn score(&self, i: usize, j: usize) -> f64 {
        self.rankings[i].ranked[j].score
    }

    /// Moves, displacements and pairwise swaps while the total score rises.
    ///
    /// For each order `i` (by id) and each of its candidates better than its current one
    /// (best first), the first of these that raises the total is applied:
    /// 1. move: the candidate has spare capacity;
    /// 2. displace: a holder `k` of the candidate moves to its best other candidate with
    ///    spare capacity and `i` takes its place;
    /// 3. swap: a holder `k` with the same GPU count takes `i`'s current candidate.
    fn improve(&self, chosen: &mut [Option<usize>]) {
        // Dense slot ids, in key order.
        let keys: Vec<SlotKey> = self.capacity.keys().copied().collect();
        let cap: Vec<u32> = self.capacity.values().copied().collect();
        let slot = |k: SlotKey| keys.binary_search(&k).unwrap_or(0);
        let slots: Vec<Vec<usize>> = self
            .rankings
            .iter()
            .map(|r| r.ranked.iter().map(|x| slot(key_of(x))).collect())
            .collect();
        // Per order: (slot, best index in its ranking), sorted by slot.
        let lookup: Vec<Vec<(usize, usize)>> = slots
            .iter()
            .map(|ss| {
                let mut v: Vec<(usize, usize)> =
                    ss.iter().enumerate().map(|(j, &s)| (s, j)).collect();
                v.sort_unstable();
                v.dedup_by_key(|x| x.0);
                v
            })
            .collect();
        let find = |k: usize, s: usize| -> Option<usize> {
            let v = &lookup[k];
            v.binary_search_by_key(&s, |x| x.0).ok().map(|i| v[i].1)
        };
        let count = |i: usize| self.orders[i].request.count;
        let mut used = vec![0u32; keys.len()];
        let mut holders: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
        let mut at: Vec<Option<usize>> = vec![None; chosen.len()];
        for (i, c) in chosen.iter().enumerate() {
            if let Some(j) = c {
                let s = slots[i][*j];
                used[s] += count(i);
                holders[s].push(i);
                at[i] = Some(s);
            }
        }
        let spare_slots: BTreeSet<usize> = (0..keys.len()).filter(|&s| used[s] < cap[s]).collect();
        let spare = |used: &[u32], s: usize| cap[s].saturating_sub(used[s]);

        // Books `i` on slot `s` at ranking index `j`, leaving its current slot.
        struct State<'a> {
            chosen: &'a mut [Option<usize>],
            at: Vec<Option<usize>>,
            used: Vec<u32>,
            holders: Vec<Vec<usize>>,
            spare_slots: BTreeSet<usize>,
            cap: &'a [u32],
        }
        impl State<'_> {
            fn touch(&mut self, s: usize) {
                if self.used[s] < self.cap[s] {
                    self.spare_slots.insert(s);
                } else {
                    self.spare_slots.remove(&s);
                }
            }
            fn put(&mut self, i: usize, count: u32, s: usize, j: usize) {
                if let Some(old) = self.at[i] {
                    self.used[old] -= count;
                    self.holders[old].retain(|&x| x != i);
                    self.touch(old);
                }
                self.used[s] += count;
                let h = &mut self.holders[s];
                let pos = h.partition_point(|&x| x < i);
                h.insert(pos, i);
                self.touch(s);
                self.at[i] = Some(s);
                self.chosen[i] = Some(j);
            }
        }
        for h in &mut holders {
            h.sort_unstable();
        }
        let mut st = State {
            chosen,
            at,
            used,
            holders,
            spare_slots,
            cap: &cap,
        };
        for _pass in 0..16 {
            let mut improved = false;
            for i in 0..self.orders.len() {
                let ci = count(i);
                let cur = st.chosen[i];
                let cur_slot = st.at[i];
                let cur_score = cur.map_or(0.0, |c| self.score(i, c));
                let limit = cur.unwrap_or(self.rankings[i].ranked.len());
                'cands: for j in 0..limit {
                    let gain_i = self.score(i, j) - cur_score;
                    if gain_i <= 0.0 {
                        break;
                    }
                    let s = slots[i][j];
                    if Some(s) == cur_slot {
                        continue;
                    }
                    if spare(&st.used, s) >= ci {
                        st.put(i, ci, s, j);
                        improved = true;
                        break 'cands;
                    }
                    let others = st.holders[s].clone();
                    for &k in &others {
                        if k == i {
                            continue;
                        }
                        let ck = count(k);
                        if spare(&st.used, s) + ck < ci {
                            continue;
                        }
                        let Some(kc) = st.chosen[k] else { continue };
                        // k's best other candidate with spare capacity.
                        let fits =
                            |q: usize| q != s && Some(q) != cur_slot && spare(&st.used, q) >= ck;
                        let best = if st.spare_slots.len() < slots[k].len() {
                            st.spare_slots
                                .iter()
                                .filter(|&&q| fits(q))
                                .filter_map(|&q| find(k, q).map(|jq| (q, jq)))
                                .min_by_key(|&(_, jq)| jq)
                        } else {
                            slots[k]
                                .iter()
                                .enumerate()
                                .find(|&(_, &q)| fits(q))
                                .map(|(jq, &q)| (q, jq))
                        };
                        if let Some((q, jq)) = best
                            && gain_i + self.score(k, jq) - self.score(k, kc) > 0.0
                        {
                            st.put(k, ck, q, jq);
                            st.put(i, ci, s, j);
                            improved = true;
                            break 'cands;
                        }
                    }
                    let Some(old) = cur_slot else { continue };
                    for &k in &others {
                        if k == i || count(k) != ci {
                            continue;
                        }
                        let (Some(kc), Some(kj)) = (st.chosen[k], find(k, old)) else {
                            continue;
                        };
                        if gain_i + self.score(k, kj) - self.score(k, kc) > 0.0 {
                            // Equal counts: both slots keep their usage.
                            st.put(k, ci, old, kj);
                            st.put(i, ci, s, j);
                            improved = true;
                            break 'cands;
                        }
                    }
                }
            }
            if !improved {
                break;
            }
        }
    }

    fn finish(&self, chosen: &[Option<usize>]) -> Assignment {
        let mut used: BTreeMap<SlotKey, u32> = BTreeMap::new();
        for (i, c) in chosen.iter().enumerate() {
            if let Some(j) = c {
                *used
                    .entry(key_of(&self.rankings[i].ranked[*j]))
                    .or_default() += self.orders[i].request.count;
            }
        }
        let mut out = Assignment::default();
        for (i, ranking) in self.rankings.iter().enumerate() {
            match chosen[i] {
                Some(j) => out.matched.push((ranking.order, ranking.ranked[j].clone())),
                None => {
                    let count = self.orders[i].request.count;
                    let mut rejected = ranking.rejected.clone();
                    for r in &ranking.ranked {
                        let key = key_of(r);
                        let left = self.capacity[&key]
                            .saturating_sub(used.get(&key).copied().unwrap_or(0));
                        rejected.push(Rejection {
                            provider: r.provider(),
                            reason: if left >= count {
                                // Only reachable when a candidate scores <= 0 after a swap.
                                RejectReason::Other("left unmatched by the assignment".into())
                            } else {
                                RejectReason::CapacityTaken
                            },
                        });
                    }
                    rejected.sort_by_key(|r| r.provider);
                    out.unmatched.push((ranking.order, rejected));
                }
            }
        }
        out
    }
}

/// Most orders [`optimal_assign`] accepts in one batch (Kuhn-Munkres is cubic).
pub const OPTIMAL_MAX_ORDERS: usize = 1_000;

/// Largest absolute score [`optimal_assign`] accepts (scores are scaled to integers).
pub const OPTIMAL_MAX_SCORE: f64 = 1_000.0;

/// The assignment with the highest total score (Kuhn-Munkres from the `pathfinding`
/// crate), for checking the quality of a fast assignment on small instances.
///
/// Every order must ask for the same GPU count `c`: a provider's free block for a model
/// then holds `free_gpus / c` slots and the problem is an exact bipartite matching (mixed
/// counts make it a generalised assignment problem, which is NP-hard; that gives a typed
/// error). An order may stay unmatched when that raises the total. Scores are scaled to
/// integers of 10^-12, so `|score|` must not exceed [`OPTIMAL_MAX_SCORE`]; at most
/// [`OPTIMAL_MAX_ORDERS`] orders.
pub fn optimal_assign<M: Matcher + ?Sized>(
    matcher: &M,
    orders: &[Order],
    candidates: &[Candidate],
) -> Result<Assignment> {
    use pathfinding::kuhn_munkres::kuhn_munkres;
    use pathfinding::matrix::Matrix;

    check_unique_ids(orders)?;
    if orders.len() > OPTIMAL_MAX_ORDERS {
        return Err(Error::invalid(
            "orders",
            format!(
                "{} orders exceed the optimal assignment's limit of {OPTIMAL_MAX_ORDERS}",
                orders.len()
            ),
        ));
    }
    let mut sorted: Vec<&Order> = orders.iter().collect();
    sorted.sort_by_key(|o| o.id);
    let Some(first) = sorted.first() else {
        return Ok(Assignment::default());
    };
    let count = first.request.count;
    if let Some(o) = sorted.iter().find(|o| o.request.count != count) {
        return Err(Error::invalid(
            "orders",
            format!(
                "optimal assignment needs one GPU count per batch: {} asks for {}, {} for {}",
                first.id, count, o.id, o.request.count
            ),
        ));
    }
    let mut by_order: BTreeMap<OrderId, Vec<Candidate>> = BTreeMap::new();
    for c in candidates {
        by_order.entry(c.bid.order).or_default().push(c.clone());
    }
    let mut rankings = Vec::with_capacity(sorted.len());
    for order in &sorted {
        let cands = by_order.remove(&order.id).unwrap_or_default();
        rankings.push(matcher.rank(order, &cands)?);
    }
    // Slots: one column per order-sized block on each (provider, model). The smallest
    // free block any candidate reports bounds what the batch may book there.
    let mut capacity: BTreeMap<(ProviderId, GpuModel), u32> = BTreeMap::new();
    for r in &rankings {
        for ranked in &r.ranked {
            let key = (ranked.provider(), ranked.candidate.bid.model);
            let free = ranked.candidate.profile.free_gpus;
            capacity
                .entry(key)
                .and_modify(|f| *f = (*f).min(free))
                .or_insert(free);
        }
    }
    let mut first_slot: BTreeMap<(ProviderId, GpuModel), (usize, usize)> = BTreeMap::new();
    let mut slots = 0usize;
    for (key, free) in &capacity {
        let n = (free / count) as usize;
        first_slot.insert(*key, (slots, n));
        slots += n;
    }
    let rows = sorted.len();
    // One "stay unmatched" column per order (weight 0) keeps rows <= columns.
    let cols = slots + rows;
    const FORBIDDEN: i64 = -(1 << 52);
    let mut weights = Matrix::new(rows, cols, FORBIDDEN);
    for (i, r) in rankings.iter().enumerate() {
        weights[(i, slots + i)] = 0;
        for ranked in &r.ranked {
            let s = ranked.score;
            if !s.is_finite() || s.abs() > OPTIMAL_MAX_SCORE {
                return Err(Error::Matcher(format!(
                    "score {s} for {} on {} is outside ±{OPTIMAL_MAX_SCORE}",
                    ranked.provider(),
                    r.order
                )));
            }
            // Exact for WeightedMatcher scores, which are integers of 10^-12.
            let w = (s * 1e12).round() as i64;
            let key = (ranked.provider(), ranked.candidate.bid.model);
            let (start, n) = first_slot[&key];
            for col in start..start + n {
                let cell = &mut weights[(i, col)];
                *cell = (*cell).max(w);
            }
        }
    }
    let (_, cols_of) = kuhn_munkres(&weights);
    let mut out = Assignment::default();
    for (i, ranking) in rankings.iter().enumerate() {
        let col = cols_of[i];
        let pick = (col < slots)
            .then(|| {
                let (key, _) = first_slot
                    .iter()
                    .find(|(_, (start, n))| col >= *start && col < start + n)?;
                // Among this provider's bids (one per model is usual), the best-ranked one.
                ranking
                    .ranked
                    .iter()
                    .find(|r| (r.provider(), r.candidate.bid.model) == *key)
            })
            .flatten();
        match pick {
            Some(r) if weights[(i, col)] > FORBIDDEN => {
                out.matched.push((ranking.order, r.clone()))
            }
            _ => out
                .unmatched
                .push((ranking.order, ranking.rejected.clone())),
        }
    }
    Ok(out)
}

impl Assignment {
    /// The sum of the matched pairs' scores.
    pub fn total_score(&self) -> f64 {
        self.matched.iter().fold(0.0, |acc, (_, r)| acc + r.score)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
    fn default_config_is_valid() {
        let m = WeightedMatcher::new(MatcherConfig::default()).unwrap();
        assert_eq!(m.fixed().w, WeightedMatcher::default().fixed().w);
        assert_eq!(
            m.fixed().w,
            [
                200_000, 100_000, 250_000, 150_000, 100_000, 100_000, 100_000
            ]
        );
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
