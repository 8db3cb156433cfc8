//! Behaviour of the matching engine on fixed cases: the golden ranking, explanations, bad
//! input, the index's upkeep and batch assignment.
#![allow(clippy::unwrap_used, missing_docs)]

mod matching_common;

use matching_common::*;
use spheron_core::{
    Amount, Criterion, Error, GeoPoint, GpuModel, Inventory, Matcher, MatcherConfig, Offer,
    Provider, ProviderIndex, ProviderStats, RejectReason, TrustTier, WeightedMatcher, Weights,
    greedy_assign, optimal_assign,
};

/// A fixed market of eight offers that exercises every criterion and most filters.
fn golden_market() -> Vec<Offer> {
    let mk = |name: &str, region: &str, lat: f64, lon: f64, price: u128, free: u32| {
        let mut p = profile(name);
        p.region = region.into();
        p.location = GeoPoint { lat, lon };
        p.free_gpus = free;
        p.total_free_gpus = free + 2;
        Offer {
            profile: p,
            model: GpuModel::H100Sxm,
            price_per_gpu_hour: Amount(price),
        }
    };
    let mut v = vec![
        mk("frankfurt", "eu-west", 50.11, 8.68, 2_100_000, 8),
        mk("paris", "eu-west", 48.86, 2.35, 1_900_000, 4),
        mk("ashburn", "us-east", 39.04, -77.49, 1_200_000, 8),
        mk("mumbai", "ap-south", 19.08, 72.88, 900_000, 8),
        mk("over-ceiling", "eu-west", 50.0, 8.0, 3_500_000, 8),
        mk("too-small", "eu-west", 50.0, 8.0, 1_000_000, 1),
        mk("amsterdam", "eu-west", 52.37, 4.90, 2_400_000, 16),
        mk("low-tier", "eu-west", 51.0, 7.0, 1_000_000, 8),
    ];
    v[0].profile.stake = Amount(5_000 * 10u128.pow(18));
    v[0].profile.stats = ProviderStats {
        feedback_sum: 96,
        feedback_count: 20,
        ..Default::default()
    };
    v[1].profile.rtt_ms = Some(12.5);
    v[2].profile.stats = ProviderStats {
        feedback_sum: 30,
        feedback_count: 15,
        ..Default::default()
    };
    v[6].model = GpuModel::H100Pcie;
    v[6].profile.stake = Amount(200 * 10u128.pow(18));
    v[7].profile.tier = TrustTier(0);
    v
}

fn golden_order() -> spheron_core::Order {
    let mut req = request("h100", 2, 3_000_000);
    req.location = Some(GeoPoint {
        lat: 50.94,
        lon: 6.96,
    });
    req.min_tier = TrustTier(1);
    order_of(42, req)
}

fn golden_matcher() -> WeightedMatcher {
    WeightedMatcher::new(MatcherConfig {
        round_seed: 2026,
        ..MatcherConfig::default()
    })
    .unwrap()
}

/// One line per ranked candidate: name, score and the per-criterion values in ppm; one
/// line per rejection.
fn summary(r: &spheron_core::Ranking) -> String {
    let mut s = String::new();
    for x in &r.ranked {
        let vals: Vec<String> = x
            .breakdown
            .iter()
            .map(|c| format!("{}={}", c.criterion, (c.value * 1e6).round() as u64))
            .collect();
        s += &format!(
            "{} {} {}\n",
            x.candidate.profile.name,
            (x.score * 1e12).round() as u64,
            vals.join(",")
        );
    }
    for x in &r.rejected {
        s += &format!("- {}: {}\n", x.provider.short(), x.reason);
    }
    s
}

const GOLDEN: &str = concat!(
    "frankfurt 684611700000 latency=920996,availability=800000,cost=300000,rating=920000,tier=428571,stake=833333,random=812221\n",
    "amsterdam 594768200000 latency=905829,availability=888888,cost=200000,rating=800000,tier=428571,stake=166666,random=951899\n",
    "paris 574414300000 latency=800000,availability=666666,cost=366666,rating=800000,tier=428571,stake=0,random=932241\n",
    "mumbai 527889700000 latency=328025,availability=800000,cost=700000,rating=800000,tier=428571,stake=0,random=444276\n",
    "ashburn 490666000000 latency=337826,availability=800000,cost=600000,rating=387500,tier=428571,stake=0,random=921187\n",
    "- 0x0d8f…781f: price 3500000 above ceiling 3000000\n",
    "- 0x1e0a…da35: tier 0 below minimum tier 1\n",
    "- 0x35d9…46f9: only 1 GPUs free on one node, 2 wanted\n",
);
const GOLDEN_JSON_BLAKE3: &str = "6cc6757047e5548a77d2511f6b766d8f3459567b010fa757ede29d791d84f719";

#[test]
fn golden_ranking_is_byte_identical() {
    let o = golden_order();
    let r = golden_matcher()
        .rank(&o, &bids(&o, &golden_market()))
        .unwrap();
    let text = summary(&r);
    let json = serde_json::to_vec(&r).unwrap();
    let hash = blake3::hash(&json).to_hex().to_string();
    println!("{text}{hash}");
    assert_eq!(text, GOLDEN, "ranking summary changed:\n{text}");
    assert_eq!(hash, GOLDEN_JSON_BLAKE3, "serialised ranking changed");
}

#[test]
fn the_index_reproduces_the_golden_ranking() {
    let o = golden_order();
    let full = golden_matcher()
        .rank(&o, &bids(&o, &golden_market()))
        .unwrap();
    let mut index = ProviderIndex::new(golden_matcher());
    index.insert_many(golden_market()).unwrap();
    let top = index.top(&o, full.ranked.len()).unwrap();
    assert_eq!(top.ranked, full.ranked);
}

#[test]
fn breakdown_explains_the_score() {
    let o = golden_order();
    let r = golden_matcher()
        .rank(&o, &bids(&o, &golden_market()))
        .unwrap();
    for x in &r.ranked {
        let crits: Vec<Criterion> = x.breakdown.iter().map(|c| c.criterion).collect();
        assert_eq!(
            crits,
            [
                Criterion::Latency,
                Criterion::Availability,
                Criterion::Cost,
                Criterion::Rating,
                Criterion::Tier,
                Criterion::Stake,
                Criterion::Random
            ]
        );
        let sum: f64 = x.breakdown.iter().map(|c| c.points).sum();
        assert!((sum - x.score).abs() < 1e-9);
        for c in &x.breakdown {
            assert!((0.0..=1.0).contains(&c.value));
            assert!((c.points - c.weight * c.value).abs() < 1e-12);
        }
    }
    let reasons: Vec<String> = r.rejected.iter().map(|x| x.reason.to_string()).collect();
    assert!(
        reasons.iter().any(|s| s.contains("above ceiling")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|s| s.contains("GPUs free")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|s| s.contains("below minimum")),
        "{reasons:?}"
    );
}

#[test]
fn a_new_provider_rates_at_the_shared_prior() {
    let o = order(1, "h100", 1, 3_000_000);
    let offer = Offer {
        profile: profile("new"),
        model: GpuModel::H100Sxm,
        price_per_gpu_hour: Amount(1),
    };
    let r = WeightedMatcher::default()
        .rank(&o, &[bid(&o, &offer)])
        .unwrap();
    let rating = r.ranked[0]
        .breakdown
        .iter()
        .find(|c| c.criterion == Criterion::Rating)
        .unwrap();
    // The one prior (4.20 stars, the tier policy's): (4.2 - 1) / 4.
    assert_eq!(rating.value, 0.8);
}

#[test]
fn negative_or_non_finite_weights_are_typed_errors() {
    for bad in [-0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for field in 0..6 {
            let mut w = Weights::default();
            let slot = [
                &mut w.latency,
                &mut w.availability,
                &mut w.cost,
                &mut w.rating,
                &mut w.stake,
                &mut w.random,
            ];
            *slot.into_iter().nth(field).unwrap() = bad;
            let err = WeightedMatcher::new(MatcherConfig {
                weights: w,
                ..MatcherConfig::default()
            })
            .unwrap_err();
            match err {
                Error::InvalidWeight { name, .. } => assert_eq!(
                    name,
                    [
                        "latency",
                        "availability",
                        "cost",
                        "rating",
                        "stake",
                        "random"
                    ][field]
                ),
                other => panic!("expected InvalidWeight, got {other:?}"),
            }
        }
    }
    for (cfg, field) in [
        (
            MatcherConfig {
                rating_prior_mean: 7.0,
                ..MatcherConfig::default()
            },
            "rating_prior_mean",
        ),
        (
            MatcherConfig {
                rating_prior_weight: 0.0,
                ..MatcherConfig::default()
            },
            "rating_prior_weight",
        ),
        (
            MatcherConfig {
                latency_half_ms: f64::NAN,
                ..MatcherConfig::default()
            },
            "latency_half_ms",
        ),
    ] {
        assert!(
            matches!(WeightedMatcher::new(cfg), Err(Error::InvalidField { field: f, .. }) if f == field)
        );
    }
}

#[test]
fn weights_are_relative() {
    let scaled = WeightedMatcher::new(MatcherConfig {
        weights: Weights {
            latency: 2.0,
            availability: 1.0,
            cost: 2.5,
            rating: 1.5,
            tier: 1.0,
            stake: 1.0,
            random: 1.0,
        },
        ..MatcherConfig::default()
    })
    .unwrap();
    let o = golden_order();
    let a = scaled.rank(&o, &bids(&o, &golden_market())).unwrap();
    let b = WeightedMatcher::default()
        .rank(&o, &bids(&o, &golden_market()))
        .unwrap();
    assert_eq!(a, b);
    // All-zero weights are allowed: every score is 0 and price breaks the tie.
    let zero = WeightedMatcher::new(MatcherConfig {
        weights: Weights {
            latency: 0.0,
            availability: 0.0,
            cost: 0.0,
            rating: 0.0,
            tier: 0.0,
            stake: 0.0,
            random: 0.0,
        },
        ..MatcherConfig::default()
    })
    .unwrap();
    let z = zero.rank(&o, &bids(&o, &golden_market())).unwrap();
    assert!(z.ranked.iter().all(|r| r.score == 0.0));
    assert_eq!(z.ranked[0].candidate.profile.name, "mumbai");
}

#[test]
fn nobody_can_serve_gives_no_match_with_every_reason() {
    let o = order(9, "h200", 1, 3_000_000);
    let offers = golden_market();
    let r = WeightedMatcher::default()
        .rank(&o, &bids(&o, &offers))
        .unwrap();
    assert!(r.ranked.is_empty());
    match r.best() {
        Err(Error::NoMatch { order, rejected }) => {
            assert_eq!(order, o.id);
            assert_eq!(rejected.len(), offers.len());
            assert!(
                rejected
                    .iter()
                    .all(|x| matches!(x.reason, RejectReason::ModelNotAccepted(_)))
            );
        }
        other => panic!("expected NoMatch, got {other:?}"),
    }
    let mut index = ProviderIndex::new(WeightedMatcher::default());
    index.insert_many(offers.clone()).unwrap();
    match index.top(&o, 1) {
        Err(Error::NoMatch { rejected, .. }) => assert_eq!(rejected.len(), offers.len()),
        other => panic!("expected NoMatch, got {other:?}"),
    }
    let a = index.assign(std::slice::from_ref(&o)).unwrap();
    assert!(a.matched.is_empty());
    assert_eq!(a.unmatched[0].1.len(), offers.len());
}

#[test]
fn unusable_profiles_and_orders_are_typed() {
    let o = order(1, "h100", 1, 3_000_000);
    let mut bad = profile("nan-rtt");
    bad.rtt_ms = Some(f64::NAN);
    let mut off_globe = profile("off-globe");
    off_globe.location = GeoPoint {
        lat: 123.0,
        lon: 0.0,
    };
    let offers: Vec<Offer> = [bad, off_globe]
        .into_iter()
        .map(|p| Offer {
            profile: p,
            model: GpuModel::H100Sxm,
            price_per_gpu_hour: Amount(1),
        })
        .collect();
    let r = WeightedMatcher::default()
        .rank(&o, &bids(&o, &offers))
        .unwrap();
    assert!(r.ranked.is_empty());
    assert!(
        r.rejected
            .iter()
            .all(|x| matches!(x.reason, RejectReason::InvalidProfile(_)))
    );
    let mut index = ProviderIndex::new(WeightedMatcher::default());
    assert!(matches!(
        index.insert(offers[0].clone()),
        Err(Error::InvalidField {
            field: "offer.profile",
            ..
        })
    ));
    let mut lost = order(2, "h100", 1, 3_000_000);
    lost.request.location = Some(GeoPoint {
        lat: f64::NAN,
        lon: 0.0,
    });
    assert!(matches!(
        WeightedMatcher::default().rank(&lost, &[]),
        Err(Error::InvalidField {
            field: "location",
            ..
        })
    ));
    assert!(matches!(
        index.top(&o, 0),
        Err(Error::InvalidField { field: "k", .. })
    ));
}

#[test]
fn index_keeps_availability_current() {
    let mut index = ProviderIndex::new(WeightedMatcher::default());
    index.insert_many(golden_market()).unwrap();
    let o = golden_order();
    let first = index.top(&o, 1).unwrap().ranked[0].clone();
    let (p, m) = (first.provider(), first.candidate.bid.model);
    // The winner runs out of GPUs: it drops out.
    index.set_free(p, m, 1, 1).unwrap();
    let next = index.top(&o, 1).unwrap().ranked[0].clone();
    assert_ne!(next.provider(), p);
    // It comes back with capacity.
    index.set_free(p, m, 8, 10).unwrap();
    assert_eq!(index.top(&o, 1).unwrap().ranked[0].provider(), p);
    // Removed offers are gone; unknown providers are typed errors.
    assert!(index.remove(p, m));
    assert!(!index.remove(p, m));
    assert_ne!(index.top(&o, 1).unwrap().ranked[0].provider(), p);
    assert!(matches!(
        index.set_free(p, m, 1, 1),
        Err(Error::UnknownProvider(_))
    ));
}

#[test]
fn upsert_provider_follows_the_inventory_and_bans() {
    let mut prov = Provider {
        id: spheron_core::AccountId::from_label("dc-1"),
        name: "dc-1".into(),
        endpoint: "local".into(),
        region: "eu-west".into(),
        location: GeoPoint {
            lat: 50.0,
            lon: 8.0,
        },
        inventory: Inventory::uniform(GpuModel::H100Sxm, 2, 4),
        stake: Amount(0),
        stats: ProviderStats::default(),
        tier: TrustTier(3),
        banned: false,
    };
    let mut index = ProviderIndex::new(WeightedMatcher::default());
    index
        .upsert_provider(
            &prov,
            &[
                (GpuModel::H100Sxm, Amount(2_000_000)),
                (GpuModel::A100_80G, Amount(1_000_000)),
            ],
        )
        .unwrap();
    assert_eq!(index.len(), 2);
    let top = index.top(&order(1, "h100", 4, 3_000_000), 1).unwrap();
    assert_eq!(top.ranked[0].candidate.profile.free_gpus, 4);
    assert_eq!(top.ranked[0].candidate.profile.total_free_gpus, 8);
    // No A100 in the inventory: the offer exists but has no free GPUs.
    assert!(index.top(&order(2, "a100-80g", 1, 3_000_000), 1).is_err());
    prov.banned = true;
    index
        .upsert_provider(&prov, &[(GpuModel::H100Sxm, Amount(1))])
        .unwrap();
    assert!(index.is_empty());
}

#[test]
fn batch_assignment_books_and_explains() {
    let m = WeightedMatcher::default();
    // Three orders of 2 GPUs, one provider with 4: one order loses.
    let offers = vec![Offer {
        profile: {
            let mut p = profile("only");
            p.free_gpus = 4;
            p.total_free_gpus = 4;
            p
        },
        model: GpuModel::H100Sxm,
        price_per_gpu_hour: Amount(1_000_000),
    }];
    let orders: Vec<_> = (1..=3).map(|i| order(i, "h100", 2, 3_000_000)).collect();
    let cands: Vec<_> = orders.iter().flat_map(|o| bids(o, &offers)).collect();
    let a = greedy_assign(&m, &orders, &cands).unwrap();
    assert_eq!(a.matched.len(), 2);
    assert_eq!(a.unmatched.len(), 1);
    assert!(matches!(
        a.unmatched[0].1[0].reason,
        RejectReason::CapacityTaken
    ));
    let mut index = ProviderIndex::new(m.clone());
    index.insert_many(offers).unwrap();
    let b = index.assign(&orders).unwrap();
    assert_eq!(b.matched.len(), 2);
    assert!(matches!(
        b.unmatched[0].1[0].reason,
        RejectReason::CapacityTaken
    ));
    // The index now shows the provider full.
    assert!(matches!(
        index.top(&orders[0], 1),
        Err(Error::NoMatch { .. })
    ));
    // Duplicate ids in one batch are refused.
    let dup = vec![orders[0].clone(), orders[0].clone()];
    assert!(matches!(
        greedy_assign(&m, &dup, &cands),
        Err(Error::InvalidField {
            field: "orders",
            ..
        })
    ));
    // The optimal assignment needs one GPU count per batch.
    let mixed = vec![
        order(1, "h100", 1, 3_000_000),
        order(2, "h100", 2, 3_000_000),
    ];
    assert!(matches!(
        optimal_assign(&m, &mixed, &cands),
        Err(Error::InvalidField {
            field: "orders",
            ..
        })
    ));
}

#[test]
fn optimal_beats_greedy_where_greedy_is_myopic() {
    // Order 1 likes A a little more than B; order 2 can only use A. Greedy gives A to
    // order 1 and leaves order 2 unmatched; the optimum serves both.
    let m = WeightedMatcher::new(MatcherConfig {
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
    .unwrap();
    let one = |name: &str, price: u128| Offer {
        profile: {
            let mut p = profile(name);
            p.free_gpus = 1;
            p.total_free_gpus = 1;
            p
        },
        model: GpuModel::H100Sxm,
        price_per_gpu_hour: Amount(price),
    };
    let a = one("a", 1_000_000);
    let b = one("b", 1_100_000);
    let o1 = order(1, "h100", 1, 3_000_000);
    let mut o2 = order(2, "h100", 1, 3_000_000);
    o2.request.allow_providers = vec![a.profile.id];
    let cands = vec![bid(&o1, &a), bid(&o1, &b), bid(&o2, &a), bid(&o2, &b)];
    let orders = vec![o1, o2];
    let g = greedy_assign(&m, &orders, &cands).unwrap();
    let opt = optimal_assign(&m, &orders, &cands).unwrap();
    // The local search finds the swap too.
    let improved = m.assign(&orders, &cands).unwrap();
    assert_eq!(improved.matched.len(), 2);
    assert_eq!(improved.total_score(), opt.total_score());
    assert_eq!(g.matched.len(), 1);
    assert_eq!(opt.matched.len(), 2);
    assert!(opt.total_score() > g.total_score());
}

/// The committed golden ranking, byte for byte (regenerate with
/// `SPHERON_GOLDEN_CHILD=1 cargo test -p spheron-core --test matching same_ranking_in_every_process -- --nocapture`
/// and copy the line after `GOLDEN-JSON:`, only when a change is meant to alter the ranking).
const GOLDEN_FILE: &str = include_str!("golden/ranking.json");

fn golden_json() -> String {
    let o = golden_order();
    let r = golden_matcher()
        .rank(&o, &bids(&o, &golden_market()))
        .unwrap();
    serde_json::to_string(&r).unwrap()
}

/// The ranking is the same in separate processes (their own hash seeds, addresses and
/// thread timing) as in the committed golden file: run as a child (`SPHERON_GOLDEN_CHILD`
/// set), it prints its ranking; the parent runs two children and compares every one, and its
/// own, with the file.
#[test]
fn same_ranking_in_every_process() {
    if std::env::var_os("SPHERON_GOLDEN_CHILD").is_some() {
        println!("GOLDEN-JSON:{}", golden_json());
        return;
    }
    let want = GOLDEN_FILE.trim_end();
    assert_eq!(
        golden_json(),
        want,
        "this process differs from the golden file"
    );
    let exe = std::env::current_exe().unwrap();
    for child in 0..2 {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "same_ranking_in_every_process", "--nocapture"])
            .env("SPHERON_GOLDEN_CHILD", child.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "child {child} failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got = stdout
            .lines()
            .find_map(|l| l.strip_prefix("GOLDEN-JSON:"))
            .unwrap_or_else(|| panic!("child {child} printed no ranking: {stdout}"));
        assert_eq!(
            got, want,
            "child process {child} differs from the golden file"
        );
    }
}
