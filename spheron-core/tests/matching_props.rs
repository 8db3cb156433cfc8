//! Property tests of the matching engine: determinism under permutation, filters always
//! honoured, capacity never over-booked, the index equal to the full scan, greedy never
//! above optimal, and each criterion monotone in its input.
#![allow(clippy::unwrap_used, missing_docs)]

mod matching_common;

use matching_common::*;
use proptest::prelude::*;
use spheron_core::{
    Amount, Assignment, Candidate, Criterion, GeoPoint, GpuModel, Matcher, MatcherConfig, Order,
    ProviderIndex, ProviderStats, Ranked, WeightedMatcher, greedy_assign, improved_assign,
    optimal_assign,
};
use std::collections::BTreeMap;

fn matcher(seed: u64) -> WeightedMatcher {
    WeightedMatcher::new(MatcherConfig {
        round_seed: seed,
        ..MatcherConfig::default()
    })
    .unwrap()
}

/// Every filter, re-stated independently of the matcher.
fn passes(order: &Order, c: &Candidate) -> bool {
    let r = &order.request;
    let p = &c.profile;
    let rtt = WeightedMatcher::rtt_ms(order, c);
    c.bid.order == order.id
        && r.accepts_model(c.bid.model)
        && p.free_gpus >= r.count
        && c.bid.price_per_gpu_hour <= r.max_price_per_gpu_hour
        && p.tier >= r.min_tier
        && !r.deny_regions.contains(&p.region)
        && (r.regions.is_empty() || r.regions.contains(&p.region))
        && !r.deny_providers.contains(&p.id)
        && (r.allow_providers.is_empty() || r.allow_providers.contains(&p.id))
        && match (r.max_latency_ms, rtt) {
            (Some(max), Some(rtt)) => rtt <= f64::from(max),
            _ => true,
        }
}

fn check_capacity(
    a: &Assignment,
    orders: &[Order],
    free: &BTreeMap<(spheron_core::ProviderId, GpuModel), u32>,
) {
    let count: BTreeMap<_, _> = orders.iter().map(|o| (o.id, o.request.count)).collect();
    let mut used: BTreeMap<_, u32> = BTreeMap::new();
    for (o, r) in &a.matched {
        *used
            .entry((r.provider(), r.candidate.bid.model))
            .or_default() += count[o];
    }
    for (k, u) in used {
        assert!(u <= free[&k], "{k:?} booked {u} of {}", free[&k]);
    }
}

fn key(r: &Ranked) -> (spheron_core::ProviderId, GpuModel, u64) {
    (
        r.provider(),
        r.candidate.bid.model,
        (r.score * 1e12).round() as u64,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn permuting_candidates_changes_nothing(seed in any::<u64>(), n in 1usize..60, rot in 0usize..60) {
        let offers = market(seed, n);
        let o = random_order(seed, 7, &offers);
        let m = matcher(seed);
        let cands = bids(&o, &offers);
        let mut shuffled = cands.clone();
        shuffled.reverse();
        let len = shuffled.len();
        shuffled.rotate_left(rot % len);
        let a = m.rank(&o, &cands).unwrap();
        let b = m.rank(&o, &shuffled).unwrap();
        prop_assert_eq!(serde_json::to_vec(&a).unwrap(), serde_json::to_vec(&b).unwrap());
    }

    #[test]
    fn no_filtered_out_provider_is_ranked_or_chosen(seed in any::<u64>(), n in 1usize..60) {
        let offers = market(seed, n);
        let o = random_order(seed, 3, &offers);
        let m = matcher(seed);
        let cands = bids(&o, &offers);
        let r = m.rank(&o, &cands).unwrap();
        prop_assert_eq!(r.ranked.len() + r.rejected.len(), cands.len());
        for c in &cands {
            let ranked = r.ranked.iter().any(|x| x.candidate == *c);
            prop_assert_eq!(ranked, passes(&o, c), "{:?}", c.profile.name);
        }
        for w in r.ranked.windows(2) {
            prop_assert!(w[0].score >= w[1].score);
        }
        let mut index = ProviderIndex::new(m.clone());
        index.insert_many(offers.clone()).unwrap();
        if let Ok(top) = index.top(&o, 3) {
            for x in &top.ranked {
                prop_assert!(passes(&o, &x.candidate));
            }
        }
    }

    #[test]
    fn index_equals_the_full_scan(seed in any::<u64>(), n in 1usize..1500, k in 1usize..6) {
        let offers = market(seed, n);
        let m = matcher(seed);
        let mut index = ProviderIndex::new(m.clone());
        index.insert_many(offers.clone()).unwrap();
        for i in 0..4u64 {
            let o = random_order(seed.wrapping_add(i), i, &offers);
            let full = m.rank(&o, &bids(&o, &offers)).unwrap();
            match index.top(&o, k) {
                Ok(top) => {
                    let want: Vec<_> = full.ranked.iter().take(k).map(key).collect();
                    let got: Vec<_> = top.ranked.iter().map(key).collect();
                    prop_assert_eq!(got, want);
                    for (a, b) in top.ranked.iter().zip(&full.ranked) {
                        prop_assert_eq!(&a.breakdown, &b.breakdown);
                    }
                }
                Err(spheron_core::Error::NoMatch { rejected, .. }) => {
                    prop_assert!(full.ranked.is_empty());
                    prop_assert_eq!(rejected.len(), offers.len());
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }

    #[test]
    fn capacity_is_never_overbooked(seed in any::<u64>(), n in 1usize..40, orders_n in 1usize..25) {
        let offers = market(seed, n);
        let m = matcher(seed);
        let orders: Vec<Order> = (0..orders_n as u64)
            .map(|i| random_order(seed.wrapping_mul(31).wrapping_add(i), i, &offers))
            .collect();
        let cands: Vec<Candidate> = orders.iter().flat_map(|o| bids(o, &offers)).collect();
        let free: BTreeMap<_, _> = offers
            .iter()
            .map(|o| ((o.profile.id, o.model), o.profile.free_gpus))
            .collect();
        let greedy = greedy_assign(&m, &orders, &cands).unwrap();
        check_capacity(&greedy, &orders, &free);
        prop_assert_eq!(greedy.matched.len() + greedy.unmatched.len(), orders.len());
        for (oid, r) in &greedy.matched {
            let o = orders.iter().find(|o| o.id == *oid).unwrap();
            prop_assert!(passes(o, &r.candidate));
        }
        // The index's batch assignment is the same global greedy.
        let mut index = ProviderIndex::new(m.clone());
        index.insert_many(offers.clone()).unwrap();
        let via_index = index.assign(&orders).unwrap();
        check_capacity(&via_index, &orders, &free);
        let pairs = |a: &Assignment| -> Vec<_> {
            a.matched.iter().map(|(o, r)| (*o, key(r))).collect()
        };
        prop_assert_eq!(pairs(&via_index), pairs(&greedy));
        // ... and it booked what it assigned.
        for (_, r) in &via_index.matched {
            let after: u32 = index
                .candidates(&orders[0])
                .iter()
                .find(|c| c.profile.id == r.provider() && c.bid.model == r.candidate.bid.model)
                .map(|c| c.profile.free_gpus)
                .unwrap();
            prop_assert!(after < free[&(r.provider(), r.candidate.bid.model)]);
        }
    }

    #[test]
    fn greedy_never_beats_optimal(seed in any::<u64>(), n in 1usize..30, orders_n in 1usize..20, count in 1u32..3) {
        let offers = market(seed, n);
        let m = matcher(seed);
        let orders: Vec<Order> = (0..orders_n as u64)
            .map(|i| {
                let mut o = random_order(seed.wrapping_add(i * 7), i, &offers);
                o.request.count = count;
                o
            })
            .collect();
        let cands: Vec<Candidate> = orders.iter().flat_map(|o| bids(o, &offers)).collect();
        let free: BTreeMap<_, _> = offers
            .iter()
            .map(|o| ((o.profile.id, o.model), o.profile.free_gpus))
            .collect();
        let greedy = greedy_assign(&m, &orders, &cands).unwrap();
        let improved = improved_assign(&m, &orders, &cands).unwrap();
        let opt = optimal_assign(&m, &orders, &cands).unwrap();
        check_capacity(&opt, &orders, &free);
        check_capacity(&improved, &orders, &free);
        prop_assert_eq!(improved.matched.len() + improved.unmatched.len(), orders.len());
        let total = |a: &Assignment| a.matched.iter().map(|(_, r)| (r.score * 1e12).round() as u64).sum::<u64>();
        prop_assert!(total(&greedy) <= total(&improved), "local search lowered the total");
        prop_assert!(total(&improved) <= total(&opt), "improved {} > optimal {}", total(&improved), total(&opt));
        for (oid, r) in &improved.matched {
            let o = orders.iter().find(|o| o.id == *oid).unwrap();
            prop_assert!(passes(o, &r.candidate));
        }
        for (oid, r) in &opt.matched {
            let o = orders.iter().find(|o| o.id == *oid).unwrap();
            prop_assert!(passes(o, &r.candidate));
        }
    }

    #[test]
    fn each_criterion_is_monotone(
        seed in any::<u64>(),
        price in 1u128..3_000_000,
        cheaper in 0u128..3_000_000,
        km in 0.0f64..15.0,
        closer in 0.0f64..1.0,
        fb in 0u64..100,
        better in 1u64..100,
        stake in 0u128..10_000,
        more in 1u128..10_000,
    ) {
        let m = matcher(seed);
        let mut req = request("h100", 1, 3_000_000);
        req.location = Some(GeoPoint { lat: 50.0, lon: 8.0 });
        let o = order_of(1, req);
        let value = |p: &spheron_core::ProviderProfile, price: u128, crit: Criterion| -> f64 {
            let c = bid(&o, &spheron_core::Offer {
                profile: p.clone(),
                model: GpuModel::H100Sxm,
                price_per_gpu_hour: Amount(price),
            });
            let r = m.rank(&o, &[c]).unwrap();
            r.ranked[0].breakdown.iter().find(|b| b.criterion == crit).unwrap().value
        };
        let base = profile("base");
        // Cost.
        let lower = price.saturating_sub(cheaper).max(1);
        prop_assert!(value(&base, lower, Criterion::Cost) >= value(&base, price, Criterion::Cost));
        // Latency: a point further along the same meridian.
        let mut far = base.clone();
        far.location = GeoPoint { lat: 50.0 + km, lon: 8.0 };
        let mut near = base.clone();
        near.location = GeoPoint { lat: 50.0 + km * closer, lon: 8.0 };
        prop_assert!(value(&near, price, Criterion::Latency) >= value(&far, price, Criterion::Latency));
        // Rating: the same number of ratings, a higher sum.
        let mut worse = base.clone();
        worse.stats = ProviderStats { feedback_count: 100, feedback_sum: 100 + fb, ..Default::default() };
        let mut rated = worse.clone();
        rated.stats.feedback_sum = (100 + fb + better).min(500);
        prop_assert!(value(&rated, price, Criterion::Rating) >= value(&worse, price, Criterion::Rating));
        // Stake.
        let mut small = base.clone();
        small.stake = Amount(stake * 10u128.pow(18));
        let mut big = base.clone();
        big.stake = Amount((stake + more) * 10u128.pow(18));
        prop_assert!(value(&big, price, Criterion::Stake) >= value(&small, price, Criterion::Stake));
    }
}
