//! Custom matchers built on the public pieces: the standard filters, the tie-break and the
//! scoring seam. A matcher built on them never books a provider the order excludes, a
//! custom criterion is explained like a built-in one, and with no custom criterion the seam
//! ranks exactly as the default.
#![allow(clippy::unwrap_used, missing_docs)]

mod matching_common;

use matching_common::*;
use proptest::prelude::*;
use spheron_core::matching::{
    CriteriaMatcher, CriterionName, PPM_ONE, StandardFilters, sort_rejections, tie_break,
};
use spheron_core::{
    Candidate, Contribution, Criterion, Error, GeoPoint, GpuModel, Matcher, MatcherConfig, Order,
    Ranked, Ranking, RejectReason, TrustTier, WeightedMatcher, Weights,
};

/// "Cheapest first": the standard filters, one criterion of its own, the default tie-break.
struct Cheapest;

impl Matcher for Cheapest {
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> spheron_core::Result<Ranking> {
        let screened = StandardFilters::new(order)?.screen(candidates);
        let mut ranked: Vec<&Candidate> = screened.eligible;
        ranked.sort_by(|a, b| tie_break(a, b));
        let mut rejected = screened.rejected;
        sort_rejections(&mut rejected);
        let n = ranked.len();
        Ok(Ranking {
            order: order.id,
            ranked: ranked
                .into_iter()
                .enumerate()
                .map(|(i, c)| Ranked {
                    candidate: c.clone(),
                    score: (n - i) as f64,
                    breakdown: Vec::new(),
                })
                .collect(),
            rejected,
        })
    }
}

/// The seam with a criterion that likes what the filters must still keep out: cheap,
/// low-tier providers.
fn seam(seed: u64) -> CriteriaMatcher {
    CriteriaMatcher::builder(MatcherConfig {
        round_seed: seed,
        ..MatcherConfig::default()
    })
    .criterion("low_tier", 5.0, |_: &Order, c: &Candidate| {
        u32::from(7 - c.profile.tier.0.min(7)) * (PPM_ONE / 7)
    })
    .build()
    .unwrap()
}

/// The three exclusions the issue names, re-stated independently of the library.
fn excluded(order: &Order, c: &Candidate) -> bool {
    let r = &order.request;
    r.deny_providers.contains(&c.profile.id)
        || c.bid.price_per_gpu_hour > r.max_price_per_gpu_hour
        || c.profile.tier < r.min_tier
}

fn assert_never_books(order: &Order, ranking: &Ranking) {
    for r in &ranking.ranked {
        assert!(
            !excluded(order, &r.candidate),
            "{} ranked for {}",
            r.candidate.profile.name,
            order.id
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn custom_matchers_on_the_public_filters_never_book_an_excluded_provider(
        seed in any::<u64>(),
        n in 1usize..40,
        orders in 1u64..5,
        cheap in any::<bool>(),
    ) {
        let offers = market(seed, n);
        let mut all_orders = Vec::new();
        let mut cands = Vec::new();
        for id in 1..=orders {
            let mut o = random_order(seed.wrapping_add(id), id, &offers);
            if cheap {
                // Deny the cheapest offer and demand a tier: what a forgetful matcher books.
                if let Some(c) = offers.iter().min_by_key(|o| o.price_per_gpu_hour) {
                    o.request.deny_providers.push(c.profile.id);
                }
                o.request.min_tier = TrustTier(3);
            }
            cands.extend(bids(&o, &offers));
            all_orders.push(o);
        }
        let matchers: [&dyn Matcher; 2] = [&Cheapest, &seam(seed)];
        for m in matchers {
            for o in &all_orders {
                let mine: Vec<Candidate> =
                    cands.iter().filter(|c| c.bid.order == o.id).cloned().collect();
                let ranking = m.rank(o, &mine).unwrap();
                assert_never_books(o, &ranking);
                // The same filters as the default, with the same reasons.
                let default = WeightedMatcher::default().rank(o, &mine).unwrap();
                prop_assert_eq!(&ranking.rejected, &default.rejected);
                prop_assert_eq!(ranking.ranked.len(), default.ranked.len());
            }
            let booked = m.assign(&all_orders, &cands).unwrap();
            for (id, r) in &booked.matched {
                let o = all_orders.iter().find(|o| o.id == *id).unwrap();
                prop_assert!(!excluded(o, &r.candidate), "{} booked for {}", r.candidate.profile.name, id);
            }
        }
    }

    #[test]
    fn the_seam_without_custom_criteria_is_the_default(seed in any::<u64>(), n in 1usize..50) {
        let offers = market(seed, n);
        let o = random_order(seed, 9, &offers);
        let cands = bids(&o, &offers);
        let config = MatcherConfig { round_seed: seed, ..MatcherConfig::default() };
        let seam = CriteriaMatcher::builder(config).build().unwrap();
        let default = WeightedMatcher::new(config).unwrap();
        prop_assert_eq!(
            serde_json::to_vec(&seam.rank(&o, &cands).unwrap()).unwrap(),
            serde_json::to_vec(&default.rank(&o, &cands).unwrap()).unwrap()
        );
    }
}

#[test]
fn a_custom_criterion_is_in_the_breakdown_with_its_weight() {
    let o = order(1, "h100", 1, 3_000_000);
    let mut green = profile("green");
    green.region = "eu-north".into();
    let mut grey = profile("grey");
    grey.region = "eu-west".into();
    let offer = |p: &spheron_core::ProviderProfile, price| spheron_core::Offer {
        profile: p.clone(),
        model: GpuModel::H100Sxm,
        price_per_gpu_hour: spheron_core::Amount(price),
    };
    let cands = bids(&o, &[offer(&green, 2_000_000), offer(&grey, 1_900_000)]);
    // Weights 1 (cost) and 3 (green): shares 0.25 and 0.75.
    let m = CriteriaMatcher::builder(MatcherConfig {
        weights: Weights {
            latency: 0.0,
            availability: 0.0,
            cost: 1.0,
            rating: 0.0,
            tier: 0.0,
            stake: 0.0,
            random: 0.0,
        },
        ..MatcherConfig::default()
    })
    .criterion("green_power", 3.0, |_: &Order, c: &Candidate| {
        if c.profile.region == "eu-north" {
            PPM_ONE
        } else {
            0
        }
    })
    .build()
    .unwrap();
    let r = m.rank(&o, &cands).unwrap();
    let best = r.best().unwrap();
    assert_eq!(best.candidate.profile.name, "green");
    let name = CriterionName::new("green_power").unwrap();
    let green_part: &Contribution = best
        .breakdown
        .iter()
        .find(|c| c.criterion == Criterion::Custom(name))
        .unwrap();
    assert_eq!(green_part.weight, 0.75);
    assert_eq!(green_part.value, 1.0);
    assert_eq!(green_part.points, 0.75);
    assert_eq!(m.weight(Criterion::Custom(name)), 0.75);
    assert_eq!(m.weight(Criterion::Cost), 0.25);
    // Eight parts, built-in first, summing to the score.
    assert_eq!(best.breakdown.len(), 8);
    assert_eq!(best.breakdown[7].criterion.to_string(), "green_power");
    let sum: f64 = best.breakdown.iter().map(|c| c.points).sum();
    assert!((sum - best.score).abs() < 1e-12);
    // Serialised under its name, and read back.
    let json = serde_json::to_string(&best.breakdown[7]).unwrap();
    assert!(json.contains(r#"{"Custom":"green_power"}"#), "{json}");
    let back: Contribution = serde_json::from_str(&json).unwrap();
    assert_eq!(back, best.breakdown[7]);
}

#[test]
fn bad_custom_criteria_are_typed_errors() {
    let build = |name: &str, w: f64| {
        CriteriaMatcher::builder(MatcherConfig::default())
            .criterion(name, w, |_: &Order, _: &Candidate| 0)
            .build()
    };
    for (name, w) in [
        ("", 1.0),
        ("a-name-longer-than-23-bytes", 1.0),
        ("cost", 1.0),
        ("fine", -1.0),
        ("fine", f64::NAN),
    ] {
        assert!(
            matches!(
                build(name, w),
                Err(Error::InvalidField {
                    field: "criterion",
                    ..
                })
            ),
            "{name:?} {w}"
        );
    }
    let twice = CriteriaMatcher::builder(MatcherConfig::default())
        .criterion("x", 1.0, |_: &Order, _: &Candidate| 0)
        .criterion("x", 1.0, |_: &Order, _: &Candidate| 0)
        .build();
    assert!(twice.is_err());
}

#[test]
fn filters_report_the_first_failure_and_refuse_an_order_off_the_globe() {
    let mut o = order(1, "h100", 2, 3_000_000);
    let mut p = profile("p");
    p.tier = TrustTier(0);
    o.request.min_tier = TrustTier(1);
    o.request.deny_providers.push(p.id);
    let c = bid(
        &o,
        &spheron_core::Offer {
            profile: p,
            model: GpuModel::H100Sxm,
            price_per_gpu_hour: spheron_core::Amount(9_000_000),
        },
    );
    let f = StandardFilters::new(&o).unwrap();
    assert_eq!(f.check(&c), Some(RejectReason::ProviderDenied));
    assert_eq!(f.check_excluding(&c, &|_| true), Some(RejectReason::Banned));
    o.request.deny_providers.clear();
    let f = StandardFilters::new(&o).unwrap();
    assert!(matches!(
        f.check(&c),
        Some(RejectReason::AboveCeiling { .. })
    ));
    o.request.location = Some(GeoPoint {
        lat: 91.0,
        lon: 0.0,
    });
    assert!(StandardFilters::new(&o).is_err());
}
