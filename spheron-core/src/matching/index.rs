//! [`ProviderIndex`]: standing offers bucketed by GPU model and region, with per-block
//! bounds so that one order does not score every provider.

use super::geo::{self, Unit};
use super::weighted::{
    AVAIL, COST, Features, Fixed, LAT, N_CRITERIA, ONE, OrderCtx, Place, RANDOM, RATING, STAKE,
    Scored, TIER, WeightedMatcher,
};
use super::{Assignment, Matcher, Ranked, Ranking, RejectReason, check_unique_ids};
use crate::gpu::GpuModel;
use crate::ids::{OrderId, ProviderId};
use crate::money::Amount;
use crate::order::{Bid, Candidate, Order};
use crate::provider::{Provider, ProviderProfile, TrustTier};
use crate::{Error, Result};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Entries per block: the unit of pruning.
const BLOCK: usize = 32;
/// Candidates fetched per order at a time by [`ProviderIndex::assign`].
const ASSIGN_FETCH: usize = 4;
/// Safety margin (score points, 10^-12 each) on the floating-point block bound.
const FLOAT_MARGIN: f64 = 1e7;

/// A provider's standing offer: GPUs of one model at a price per GPU-hour.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// The provider as the marketplace knows it (`free_gpus`, `total_free_gpus` for `model`).
    pub profile: ProviderProfile,
    /// The GPU model offered.
    pub model: GpuModel,
    /// Asking price per GPU-hour.
    pub price_per_gpu_hour: Amount,
}

/// Sizes of a [`ProviderIndex`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// Offers held.
    pub offers: usize,
    /// Non-empty (model, region) buckets.
    pub buckets: usize,
    /// Blocks over all buckets.
    pub blocks: usize,
}

#[derive(Clone, Debug)]
struct Entry {
    f: Features,
    /// `w_rating * rating + w_stake * stake`.
    static_pts: u64,
    /// Sort key: the score without latency and random for a reference order
    /// (ceiling = the bucket's reference price, one GPU), as a float.
    q: f64,
    profile: Box<ProviderProfile>,
}

#[derive(Clone, Debug)]
struct Block {
    start: usize,
    end: usize,
    max_static: u64,
    max_q: f64,
    min_price: u128,
    max_price: u128,
    max_free: u32,
    max_total: u32,
    max_tier: TrustTier,
    /// Box around the located entries' unit vectors (empty when none).
    lo: [f64; 3],
    hi: [f64; 3],
    located: bool,
    /// Smallest measured RTT (µs), `u64::MAX` when none is measured.
    min_measured: u64,
    measured: bool,
}

#[derive(Clone, Debug)]
struct Bucket {
    entries: Vec<Entry>,
    blocks: Vec<Block>,
    /// Reference price of the sort key.
    cref: f64,
}

/// A scored hit of a query.
#[derive(Clone, Copy, Debug)]
struct Hit {
    points: u64,
    price: u128,
    provider: ProviderId,
    model: GpuModel,
    bucket: usize,
    pos: usize,
    values: [u32; N_CRITERIA],
}

impl Hit {
    /// Better first: higher points, lower price, lower provider, lower model.
    fn cmp_rank(&self, o: &Hit) -> Ordering {
        o.points
            .cmp(&self.points)
            .then(self.price.cmp(&o.price))
            .then(self.provider.cmp(&o.provider))
            .then(self.model.cmp(&o.model))
    }
}

/// The best `k` hits seen so far.
struct TopK {
    k: usize,
    hits: Vec<Hit>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            hits: Vec::with_capacity(k + 1),
        }
    }

    /// Entries scoring below this cannot enter (ties may, by tie-break).
    fn threshold(&self) -> Option<u64> {
        (self.hits.len() == self.k).then(|| self.hits[self.k - 1].points)
    }

    fn offer(&mut self, h: Hit) {
        if self.hits.len() == self.k {
            if h.cmp_rank(&self.hits[self.k - 1]) != Ordering::Less {
                return;
            }
            self.hits.pop();
        }
        let at = self
            .hits
            .partition_point(|x| x.cmp_rank(&h) == Ordering::Less);
        self.hits.insert(at, h);
    }
}

/// Providers' standing offers, bucketed by GPU model and region and kept current as
/// availability changes, so that ranking one order touches only the buckets the order
/// accepts and, inside them, only the blocks whose score bound can still beat the best
/// found so far.
///
/// The model, region, provider allow/deny, price, tier, free-GPU and latency filters are
/// pushed into the index: buckets are chosen by model and region; each block of 32 offers
/// keeps its lowest price, highest tier, largest free block, the box around its locations
/// and the best static score, so a block that no entry of could pass or win is skipped
/// whole. Results are exactly those of [`WeightedMatcher::rank`] over every offer as a bid
/// (the same scores, the same order): [`ProviderIndex::explain`] is that full scan.
///
/// ```
/// use spheron_core::{
///     AccountId, Amount, GeoPoint, GpuModel, GpuRequest, Offer, Order, OrderId,
///     ProviderIndex, ProviderProfile, ProviderStats, Timestamp, TrustTier, WeightedMatcher,
/// };
///
/// let mut index = ProviderIndex::new(WeightedMatcher::default());
/// for (i, price) in [2_000_000u128, 1_500_000, 2_500_000].into_iter().enumerate() {
///     let name = format!("p{i}");
///     index.insert(Offer {
///         profile: ProviderProfile {
///             id: AccountId::from_label(&name),
///             name,
///             region: "eu-west".into(),
///             location: GeoPoint::new(50.1, 8.7)?,
///             rtt_ms: None,
///             stake: Amount(0),
///             stats: ProviderStats::default(),
///             tier: TrustTier(3),
///             free_gpus: 8,
///             total_free_gpus: 8,
///         },
///         model: GpuModel::H100Sxm,
///         price_per_gpu_hour: Amount(price),
///     })?;
/// }
/// let order = Order {
///     id: OrderId(1),
///     tenant: AccountId::from_label("tenant"),
///     request: GpuRequest::builder()
///         .gpu("h100")
///         .count(2)
///         .hours(1)
///         .max_price_per_gpu_hour(Amount(3_000_000))
///         .build()?,
///     created_at: Timestamp(0),
///     bid_deadline: Timestamp(0),
/// };
/// let best = index.top(&order, 1)?;
/// assert_eq!(best.ranked[0].candidate.profile.name, "p1"); // the cheapest
/// # Ok::<(), spheron_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProviderIndex {
    matcher: WeightedMatcher,
    region_ids: BTreeMap<String, u16>,
    regions: Vec<String>,
    buckets: Vec<Bucket>,
    bucket_of: BTreeMap<(GpuModel, u16), usize>,
    where_is: BTreeMap<(ProviderId, GpuModel), usize>,
}

/// A candidate block of a query, with its bound.
#[derive(PartialEq, Eq)]
struct Cand {
    ub: u64,
    bucket: usize,
    block: usize,
    lat_ub: u32,
}

impl Ord for Cand {
    /// Higher bound first, then lower bucket and block (for a fixed visiting order).
    fn cmp(&self, o: &Self) -> Ordering {
        self.ub
            .cmp(&o.ub)
            .then(o.bucket.cmp(&self.bucket))
            .then(o.block.cmp(&self.block))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl ProviderIndex {
    /// An empty index scoring with `matcher`.
    pub fn new(matcher: WeightedMatcher) -> Self {
        ProviderIndex {
            matcher,
            region_ids: BTreeMap::new(),
            regions: Vec::new(),
            buckets: Vec::new(),
            bucket_of: BTreeMap::new(),
            where_is: BTreeMap::new(),
        }
    }

    /// The matcher whose scores the index reproduces.
    pub fn matcher(&self) -> &WeightedMatcher {
        &self.matcher
    }

    /// Number of offers.
    pub fn len(&self) -> usize {
        self.where_is.len()
    }

    /// Whether the index holds no offer.
    pub fn is_empty(&self) -> bool {
        self.where_is.is_empty()
    }

    /// Sizes.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            offers: self.len(),
            buckets: self
                .buckets
                .iter()
                .filter(|b| !b.entries.is_empty())
                .count(),
            blocks: self.buckets.iter().map(|b| b.blocks.len()).sum(),
        }
    }

    fn entry_of(&self, offer: Offer) -> Result<Entry> {
        let f = self
            .matcher
            .features(&offer.profile, offer.model, offer.price_per_gpu_hour)
            .map_err(|r| Error::invalid("offer.profile", r.to_string()))?;
        let w = &self.matcher.fixed().w;
        let static_pts = w[RATING] * u64::from(f.rating_ppm)
            + w[TIER] * u64::from(Fixed::tier_ppm(f.tier))
            + w[STAKE] * u64::from(f.stake_ppm);
        let mut profile = offer.profile;
        profile.free_gpus = f.free;
        profile.total_free_gpus = f.total;
        Ok(Entry {
            f,
            static_pts,
            q: 0.0,
            profile: Box::new(profile),
        })
    }

    fn bucket_for(&mut self, model: GpuModel, region: &str) -> usize {
        let rid = match self.region_ids.get(region) {
            Some(r) => *r,
            None => {
                let r = self.regions.len() as u16;
                self.regions.push(region.to_string());
                self.region_ids.insert(region.to_string(), r);
                r
            }
        };
        *self.bucket_of.entry((model, rid)).or_insert_with(|| {
            self.buckets.push(Bucket {
                entries: Vec::new(),
                blocks: Vec::new(),
                cref: 1.0,
            });
            self.buckets.len() - 1
        })
    }

    /// Adds or replaces one offer (keyed by provider and model).
    ///
    /// Fails with [`Error::InvalidField`] when the profile is unusable (a location off the
    /// globe, a non-finite RTT).
    pub fn insert(&mut self, offer: Offer) -> Result<()> {
        self.insert_many([offer])
    }

    /// Adds or replaces many offers, re-sorting each touched bucket once. Nothing is
    /// inserted when one offer is invalid.
    pub fn insert_many(&mut self, offers: impl IntoIterator<Item = Offer>) -> Result<()> {
        let mut staged = Vec::new();
        for offer in offers {
            if offer.profile.region.len() > 256 {
                return Err(Error::invalid(
                    "offer.profile.region",
                    "region labels are at most 256 bytes",
                ));
            }
            let region = offer.profile.region.clone();
            staged.push((region, self.entry_of(offer)?));
        }
        let new_regions: BTreeSet<&str> = staged
            .iter()
            .map(|(r, _)| r.as_str())
            .filter(|r| !self.region_ids.contains_key(*r))
            .collect();
        if self.regions.len() + new_regions.len() > usize::from(u16::MAX) {
            return Err(Error::invalid("offer.profile.region", "too many regions"));
        }
        let mut touched = BTreeSet::new();
        for (region, entry) in staged {
            let key = (entry.f.provider, entry.f.model);
            if let Some(old) = self.where_is.get(&key).copied() {
                self.buckets[old]
                    .entries
                    .retain(|e| (e.f.provider, e.f.model) != key);
                touched.insert(old);
            }
            let b = self.bucket_for(entry.f.model, &region);
            self.buckets[b].entries.push(entry);
            self.where_is.insert(key, b);
            touched.insert(b);
        }
        for b in touched {
            self.rebuild(b);
        }
        Ok(())
    }

    /// Replaces all offers of `provider` with one per `(model, price)` ask, each with the
    /// provider's free GPUs of that model. A banned provider only loses its offers.
    pub fn upsert_provider(
        &mut self,
        provider: &Provider,
        asks: &[(GpuModel, Amount)],
    ) -> Result<()> {
        self.remove_provider(provider.id);
        if provider.banned {
            return Ok(());
        }
        self.insert_many(asks.iter().map(|&(model, price)| Offer {
            profile: provider.profile(model),
            model,
            price_per_gpu_hour: price,
        }))
    }

    /// Removes one offer; whether it existed.
    pub fn remove(&mut self, provider: ProviderId, model: GpuModel) -> bool {
        let Some(b) = self.where_is.remove(&(provider, model)) else {
            return false;
        };
        self.buckets[b]
            .entries
            .retain(|e| (e.f.provider, e.f.model) != (provider, model));
        self.rebuild(b);
        true
    }

    /// Removes every offer of `provider` (banned, gone); how many there were.
    pub fn remove_provider(&mut self, provider: ProviderId) -> usize {
        let models: Vec<GpuModel> = self
            .where_is
            .range((provider, GpuModel::H200)..)
            .take_while(|((p, _), _)| *p == provider)
            .map(|((_, m), _)| *m)
            .collect();
        for m in &models {
            self.remove(provider, *m);
        }
        models.len()
    }

    /// Records a change of availability: `free_block` GPUs free on the provider's best
    /// node and `total_free` over all nodes, for `model`.
    pub fn set_free(
        &mut self,
        provider: ProviderId,
        model: GpuModel,
        free_block: u32,
        total_free: u32,
    ) -> Result<()> {
        let b = *self
            .where_is
            .get(&(provider, model))
            .ok_or(Error::UnknownProvider(provider))?;
        let bucket = &mut self.buckets[b];
        if let Some(e) = bucket
            .entries
            .iter_mut()
            .find(|e| e.f.provider == provider && e.f.model == model)
        {
            e.f.free = free_block;
            e.f.total = total_free.max(free_block);
            e.profile.free_gpus = e.f.free;
            e.profile.total_free_gpus = e.f.total;
        }
        self.rebuild(b);
        Ok(())
    }

    /// Recomputes a bucket's reference price, sort keys, order and blocks.
    fn rebuild(&mut self, b: usize) {
        let w = self.matcher.fixed().w;
        let bucket = &mut self.buckets[b];
        if bucket.entries.is_empty() {
            bucket.blocks.clear();
            return;
        }
        let mut prices: Vec<u128> = bucket.entries.iter().map(|e| e.f.price).collect();
        prices.sort_unstable();
        bucket.cref = (prices[prices.len() / 2] as f64).max(1.0);
        let cref = bucket.cref;
        for e in &mut bucket.entries {
            e.q = e.static_pts as f64
                + w[COST] as f64 * ONE as f64 * (1.0 - e.f.price as f64 / cref)
                + (w[AVAIL] * u64::from(Fixed::availability_ppm(e.f.total, 1))) as f64;
        }
        bucket.entries.sort_by(|a, b| {
            b.q.total_cmp(&a.q)
                .then(a.f.provider.cmp(&b.f.provider))
                .then(a.f.model.cmp(&b.f.model))
        });
        bucket.blocks = (0..bucket.entries.len())
            .step_by(BLOCK)
            .map(|start| {
                let end = (start + BLOCK).min(bucket.entries.len());
                summarise(&bucket.entries, start, end)
            })
            .collect();
    }

    /// The buckets an order accepts (model and region filters).
    fn buckets_for(&self, order: &Order) -> Vec<usize> {
        let req = &order.request;
        let regions: Vec<u16> = if req.regions.is_empty() {
            (0..self.regions.len() as u16).collect()
        } else {
            let mut r: Vec<u16> = req
                .regions
                .iter()
                .filter_map(|r| self.region_ids.get(r).copied())
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        let mut out = Vec::new();
        for model in GpuModel::ALL {
            if !req.accepts_model(model) {
                continue;
            }
            for &rid in &regions {
                if req.deny_regions.contains(&self.regions[usize::from(rid)]) {
                    continue;
                }
                if let Some(&b) = self.bucket_of.get(&(model, rid)) {
                    out.push(b);
                }
            }
        }
        out
    }

    /// Scores one entry if it passes the filters and can still enter `top`.
    fn consider(
        &self,
        ctx: &OrderCtx,
        order: &Order,
        b: usize,
        pos: usize,
        lat_ub: u32,
        top: &mut TopK,
    ) {
        let e = &self.buckets[b].entries[pos];
        let f = &e.f;
        if f.free < ctx.count || f.price > ctx.ceiling || f.tier < ctx.min_tier {
            return;
        }
        if !order.request.deny_providers.is_empty()
            && order.request.deny_providers.contains(&f.provider)
        {
            return;
        }
        let w = &self.matcher.fixed().w;
        let base = e.static_pts
            + w[COST] * u64::from(Fixed::cost_ppm(ctx.ceiling, f.price))
            + w[AVAIL] * u64::from(Fixed::availability_ppm(f.total, ctx.count));
        let rand_max = w[RANDOM] * ONE;
        let thr = top.threshold();
        if let Some(t) = thr
            && base + w[LAT] * u64::from(lat_ub) + rand_max < t
        {
            return;
        }
        let rtt = ctx.rtt_us(&f.place);
        if let (Some(max), Some(r)) = (ctx.max_rtt_us, rtt)
            && r > max
        {
            return;
        }
        let (mut values, det) = self.matcher.det(ctx, f, rtt);
        if let Some(t) = thr
            && det + rand_max < t
        {
            return;
        }
        values[RANDOM] = WeightedMatcher::random_ppm(ctx, f.stream);
        top.offer(Hit {
            points: det + w[RANDOM] * u64::from(values[RANDOM]),
            price: f.price,
            provider: f.provider,
            model: f.model,
            bucket: b,
            pos,
            values,
        });
    }

    /// The best `k` hits for an order (no rejections; see [`ProviderIndex::explain`]).
    fn query(&self, ctx: &OrderCtx, order: &Order, k: usize) -> Vec<Hit> {
        let mut top = TopK::new(k);
        let req = &order.request;
        if !req.allow_providers.is_empty() {
            // Allow list: look the providers up, no scan.
            let allowed: BTreeSet<usize> = self.buckets_for(order).into_iter().collect();
            let mut seen = BTreeSet::new();
            for p in &req.allow_providers {
                for model in GpuModel::ALL {
                    let Some(&b) = self.where_is.get(&(*p, model)) else {
                        continue;
                    };
                    if !allowed.contains(&b) || !seen.insert((*p, model)) {
                        continue;
                    }
                    if let Some(pos) = self.buckets[b]
                        .entries
                        .iter()
                        .position(|e| e.f.provider == *p && e.f.model == model)
                    {
                        self.consider(ctx, order, b, pos, ONE as u32, &mut top);
                    }
                }
            }
            return top.hits;
        }
        let w = self.matcher.fixed().w;
        let mut cands = Vec::new();
        for b in self.buckets_for(order) {
            for (i, blk) in self.buckets[b].blocks.iter().enumerate() {
                if let Some(c) = self.bound(ctx, &w, b, i, blk) {
                    cands.push(c);
                }
            }
        }
        // Best bound first; a heap pops only the blocks that get visited.
        let mut heap = BinaryHeap::from(cands);
        while let Some(c) = heap.pop() {
            if let Some(t) = top.threshold()
                && c.ub < t
            {
                break;
            }
            let blk = &self.buckets[c.bucket].blocks[c.block];
            for pos in blk.start..blk.end {
                self.consider(ctx, order, c.bucket, pos, c.lat_ub, &mut top);
            }
        }
        top.hits
    }

    /// An upper bound of every score in a block, or `None` when no entry can pass.
    fn bound(
        &self,
        ctx: &OrderCtx,
        w: &[u64; N_CRITERIA],
        b: usize,
        i: usize,
        blk: &Block,
    ) -> Option<Cand> {
        if blk.max_free < ctx.count || blk.min_price > ctx.ceiling || blk.max_tier < ctx.min_tier {
            return None;
        }
        let fixed = self.matcher.fixed();
        // Smallest round trip any entry can have, and the best latency value.
        let mut rtt_lb = u64::MAX;
        let mut lat_ub = 0u32;
        let mut unknown_rtt = false;
        if blk.measured {
            rtt_lb = blk.min_measured;
            lat_ub = lat_ub.max(fixed.latency_ppm(Some(blk.min_measured)));
        }
        if blk.located {
            match ctx.loc {
                Some(o) => {
                    let m = geo::metres_lower_bound(geo::chord_to_box(&o, &blk.lo, &blk.hi));
                    // One µs of slack for rounding.
                    let lb = geo::rtt_us_for_metres(m).saturating_sub(1);
                    rtt_lb = rtt_lb.min(lb);
                    lat_ub = lat_ub.max(fixed.latency_ppm(Some(lb)));
                }
                None => {
                    unknown_rtt = true;
                    lat_ub = lat_ub.max(fixed.latency_ppm(None));
                }
            }
        }
        if let Some(max) = ctx.max_rtt_us
            && !unknown_rtt
            && rtt_lb > max
        {
            return None;
        }
        let rest = w[LAT] * u64::from(lat_ub) + w[RANDOM] * ONE;
        let component = blk.max_static
            + w[COST] * u64::from(Fixed::cost_ppm(ctx.ceiling, blk.min_price))
            + w[AVAIL] * u64::from(Fixed::availability_ppm(blk.max_total, ctx.count))
            + rest;
        // The sort-key bound: q holds the cost at the reference price; correct it to this
        // order's ceiling (linear in price, so an end of the block's price range bounds it).
        let cref = self.buckets[b].cref;
        let k = 1.0 / cref - 1.0 / ctx.ceiling as f64;
        let wc = w[COST] as f64 * ONE as f64;
        let shift = (wc * k * blk.min_price as f64).max(wc * k * blk.max_price as f64);
        let qb = blk.max_q + shift + FLOAT_MARGIN + rest as f64;
        // Float error stays far below the margin while prices are within 1e6 of each other.
        let tame = (blk.max_price as f64) <= 1e6 * cref
            && (blk.max_price as f64) <= 1e6 * ctx.ceiling as f64;
        let ub = if tame && qb.is_finite() && qb >= 0.0 && qb < component as f64 {
            (qb.ceil() as u64).min(component)
        } else {
            component
        };
        Some(Cand {
            ub,
            bucket: b,
            block: i,
            lat_ub,
        })
    }

    fn ranked(&self, order: &Order, h: &Hit) -> Ranked {
        let e = &self.buckets[h.bucket].entries[h.pos];
        let (score, breakdown) = self.matcher.explain(&Scored {
            values: h.values,
            points: h.points,
        });
        Ranked {
            candidate: Candidate {
                bid: Bid {
                    order: order.id,
                    provider: e.f.provider,
                    model: e.f.model,
                    price_per_gpu_hour: Amount(e.f.price),
                    placed_at: order.created_at,
                },
                profile: (*e.profile).clone(),
            },
            score,
            breakdown,
        }
    }

    /// The best `k` offers for `order`, best first, exactly as [`WeightedMatcher::rank`]
    /// would rank every offer as a bid (`rejected` stays empty: the index does not visit
    /// what it can rule out). An order nobody can serve gives [`Error::NoMatch`] with the
    /// reason for every provider (a full scan, only then).
    pub fn top(&self, order: &Order, k: usize) -> Result<Ranking> {
        if k == 0 {
            return Err(Error::invalid("k", "ask for at least one candidate"));
        }
        let ctx = self.matcher.ctx(order)?;
        let hits = self.query(&ctx, order, k);
        if hits.is_empty() {
            return Err(Error::NoMatch {
                order: order.id,
                rejected: self.explain(order)?.rejected,
            });
        }
        Ok(Ranking {
            order: order.id,
            ranked: hits.iter().map(|h| self.ranked(order, h)).collect(),
            rejected: Vec::new(),
        })
    }

    /// Every offer as a bid on `order`, in index order.
    pub fn candidates(&self, order: &Order) -> Vec<Candidate> {
        let mut out = Vec::with_capacity(self.len());
        for b in &self.buckets {
            for e in &b.entries {
                out.push(Candidate {
                    bid: Bid {
                        order: order.id,
                        provider: e.f.provider,
                        model: e.f.model,
                        price_per_gpu_hour: Amount(e.f.price),
                        placed_at: order.created_at,
                    },
                    profile: (*e.profile).clone(),
                });
            }
        }
        out
    }

    /// The full scan: [`WeightedMatcher::rank`] over every offer as a bid, with a reason
    /// for every provider dropped. The naive baseline of [`ProviderIndex::top`].
    pub fn explain(&self, order: &Order) -> Result<Ranking> {
        self.matcher.rank(order, &self.candidates(order))
    }

    /// Assigns a batch of orders to offers and books their GPUs in the index.
    ///
    /// The result equals [`super::greedy_assign`] with this index's matcher over every
    /// offer as a bid on every order: global greedy by score (ties by order id, price,
    /// provider, model), scores taken on the availability at the start of the batch, a
    /// pair booked only while the offer's free block still holds the order. Each order
    /// fetches its next few best offers from the index only when the previous ones were
    /// taken. Afterwards each booked offer has its free block and total reduced by what it
    /// took. Unmatched orders carry a reason per provider ([`RejectReason::CapacityTaken`]
    /// for offers lost to better pairs).
    pub fn assign(&mut self, orders: &[Order]) -> Result<Assignment> {
        check_unique_ids(orders)?;
        let mut sorted: Vec<&Order> = orders.iter().collect();
        sorted.sort_by_key(|o| o.id);
        let ctxs = sorted
            .iter()
            .map(|o| self.matcher.ctx(o))
            .collect::<Result<Vec<_>>>()?;

        #[derive(PartialEq, Eq)]
        struct Item {
            order: OrderId,
            i: usize,
            hit: HitKey,
        }
        #[derive(PartialEq, Eq, Clone, Copy)]
        struct HitKey {
            points: u64,
            price: u128,
            provider: ProviderId,
            model: GpuModel,
            bucket: usize,
            pos: usize,
            values: [u32; N_CRITERIA],
        }
        impl Ord for Item {
            // Max-heap: the better pair is the greater.
            fn cmp(&self, o: &Self) -> Ordering {
                self.hit
                    .points
                    .cmp(&o.hit.points)
                    .then(o.order.cmp(&self.order))
                    .then(o.hit.price.cmp(&self.hit.price))
                    .then(o.hit.provider.cmp(&self.hit.provider))
                    .then(o.hit.model.cmp(&self.hit.model))
            }
        }
        impl PartialOrd for Item {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        let item = |i: usize, order: OrderId, h: Hit| Item {
            order,
            i,
            hit: HitKey {
                points: h.points,
                price: h.price,
                provider: h.provider,
                model: h.model,
                bucket: h.bucket,
                pos: h.pos,
                values: h.values,
            },
        };

        let mut heap = BinaryHeap::new();
        let mut remaining = vec![0usize; sorted.len()];
        for (i, (o, ctx)) in sorted.iter().zip(&ctxs).enumerate() {
            let hits = self.query(ctx, o, ASSIGN_FETCH);
            remaining[i] = hits.len();
            heap.extend(hits.into_iter().map(|h| item(i, o.id, h)));
        }
        let mut chosen: Vec<Option<Ranked>> = vec![None; sorted.len()];
        let mut lost: Vec<Vec<ProviderId>> = vec![Vec::new(); sorted.len()];
        let mut booked: Vec<(usize, ProviderId, GpuModel, u32)> = Vec::new();
        while let Some(Item { i, hit, .. }) = heap.pop() {
            if chosen[i].is_some() {
                continue;
            }
            remaining[i] -= 1;
            let count = ctxs[i].count;
            if self.buckets[hit.bucket].entries[hit.pos].f.free >= count {
                let h = Hit {
                    points: hit.points,
                    price: hit.price,
                    provider: hit.provider,
                    model: hit.model,
                    bucket: hit.bucket,
                    pos: hit.pos,
                    values: hit.values,
                };
                // The candidate as it was when this pair was taken.
                chosen[i] = Some(self.ranked(sorted[i], &h));
                let e = &mut self.buckets[hit.bucket].entries[hit.pos];
                e.f.free -= count;
                e.profile.free_gpus = e.f.free;
                booked.push((hit.bucket, hit.provider, hit.model, count));
                continue;
            }
            lost[i].push(hit.provider);
            if remaining[i] == 0 {
                let hits = self.query(&ctxs[i], sorted[i], ASSIGN_FETCH);
                remaining[i] = hits.len();
                heap.extend(hits.into_iter().map(|h| item(i, sorted[i].id, h)));
            }
        }

        let mut out = Assignment::default();
        let mut unmatched = Vec::new();
        for (i, o) in sorted.iter().enumerate() {
            match chosen[i].take() {
                Some(r) => out.matched.push((o.id, r)),
                None => unmatched.push(i),
            }
        }
        for i in unmatched {
            let mut rejected = self.explain(sorted[i])?.rejected;
            for r in &mut rejected {
                if lost[i].contains(&r.provider)
                    && matches!(r.reason, RejectReason::InsufficientGpus { .. })
                {
                    r.reason = RejectReason::CapacityTaken;
                }
            }
            out.unmatched.push((sorted[i].id, rejected));
        }
        // The batch is over: availability scores now see what it booked.
        let mut touched = BTreeSet::new();
        for (b, provider, model, count) in booked {
            if let Some(e) = self.buckets[b]
                .entries
                .iter_mut()
                .find(|e| e.f.provider == provider && e.f.model == model)
            {
                e.f.total = e.f.total.saturating_sub(count).max(e.f.free);
                e.profile.total_free_gpus = e.f.total;
            }
            touched.insert(b);
        }
        for b in touched {
            self.rebuild(b);
        }
        Ok(out)
    }
}

fn summarise(entries: &[Entry], start: usize, end: usize) -> Block {
    let mut blk = Block {
        start,
        end,
        max_static: 0,
        max_q: f64::NEG_INFINITY,
        min_price: u128::MAX,
        max_price: 0,
        max_free: 0,
        max_total: 0,
        max_tier: TrustTier(0),
        lo: [f64::INFINITY; 3],
        hi: [f64::NEG_INFINITY; 3],
        located: false,
        min_measured: u64::MAX,
        measured: false,
    };
    for e in &entries[start..end] {
        let f = &e.f;
        blk.max_static = blk.max_static.max(e.static_pts);
        blk.max_q = blk.max_q.max(e.q);
        blk.min_price = blk.min_price.min(f.price);
        blk.max_price = blk.max_price.max(f.price);
        blk.max_free = blk.max_free.max(f.free);
        blk.max_total = blk.max_total.max(f.total);
        blk.max_tier = blk.max_tier.max(f.tier);
        match &f.place {
            Place::Measured(us) => {
                blk.measured = true;
                blk.min_measured = blk.min_measured.min(*us);
            }
            Place::At(Unit(v)) => {
                blk.located = true;
                for (i, x) in v.iter().enumerate() {
                    blk.lo[i] = blk.lo[i].min(*x);
                    blk.hi[i] = blk.hi[i].max(*x);
                }
            }
        }
    }
    blk
}
