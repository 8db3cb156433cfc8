//! Matching benchmarks: rank one order against 1k / 10k / 100k providers through the
//! [`ProviderIndex`] and through the naive full scan ([`WeightedMatcher::rank`] over every
//! provider as a bid), assign 10k orders against 100k providers, and the quality of the
//! greedy assignment against the Kuhn-Munkres optimum on 200 x 200 instances.
//!
//! `cargo bench -p spheron-core --bench matching` (a few minutes on 2 cores). The quality
//! figures are printed as `quality:` lines.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use spheron_core::{
    AccountId, Amount, Bid, Candidate, GeoPoint, GpuModel, GpuRequest, Matcher, MatcherConfig,
    Offer, Order, OrderId, ProviderIndex, ProviderProfile, ProviderStats, Timestamp, TrustTier,
    WeightedMatcher, greedy_assign, improved_assign, optimal_assign,
};
use std::hint::black_box;
use std::time::Duration;

const REGIONS: [(&str, f64, f64); 8] = [
    ("eu-west", 50.1, 8.7),
    ("eu-north", 59.3, 18.1),
    ("us-east", 39.0, -77.5),
    ("us-west", 37.4, -122.1),
    ("ap-south", 19.1, 72.9),
    ("ap-northeast", 35.7, 139.7),
    ("ap-southeast", 1.35, 103.8),
    ("sa-east", -23.5, -46.6),
];

/// Typical price per GPU-hour of each model, in 6-decimal base units.
fn list_price(m: GpuModel) -> u128 {
    match m {
        GpuModel::H200 => 3_800_000,
        GpuModel::H100Sxm => 2_900_000,
        GpuModel::H100Pcie => 2_400_000,
        GpuModel::A100_80G => 1_700_000,
        GpuModel::A100_40G => 1_200_000,
        GpuModel::L40S => 1_000_000,
        GpuModel::Rtx4090 => 600_000,
        GpuModel::A10 => 500_000,
        GpuModel::L4 => 450_000,
        _ => 300_000,
    }
}

struct G(ChaCha8Rng);
impl G {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` providers with one offer each, spread over 10 models and 8 regions.
fn market(n: usize, seed: u64) -> Vec<Offer> {
    let mut g = G(ChaCha8Rng::seed_from_u64(seed));
    (0..n)
        .map(|i| {
            let name = format!("p{i}");
            let model = GpuModel::ALL[g.below(10) as usize];
            let (region, lat, lon) = REGIONS[g.below(8) as usize];
            let free = g.below(17) as u32;
            let count = g.below(200);
            Offer {
                profile: ProviderProfile {
                    id: AccountId::from_label(&name),
                    name,
                    region: region.into(),
                    location: GeoPoint {
                        lat: (lat + (g.unit() - 0.5) * 12.0).clamp(-90.0, 90.0),
                        lon: lon + (g.unit() - 0.5) * 12.0,
                    },
                    rtt_ms: (g.below(10) == 0).then(|| 1.0 + g.unit() * 200.0),
                    stake: Amount(u128::from(g.below(10_000)) * 10u128.pow(18)),
                    stats: ProviderStats {
                        feedback_count: count,
                        feedback_sum: count + g.below(4 * count + 1),
                        ..ProviderStats::default()
                    },
                    tier: TrustTier(g.below(8) as u8),
                    free_gpus: free,
                    total_free_gpus: free + g.below(17) as u32,
                },
                model,
                price_per_gpu_hour: Amount(
                    list_price(model) * (60 + u128::from(g.below(80))) / 100,
                ),
            }
        })
        .collect()
}

/// A tenant's order: a model family, 1-8 GPUs, a ceiling around list price, a location
/// near a region, sometimes a region restriction, a minimum tier or a latency bound.
fn orders(n: usize, seed: u64) -> Vec<Order> {
    let mut g = G(ChaCha8Rng::seed_from_u64(seed));
    let gpus = [
        "h100", "h200", "a100-80g", "a100-40g", "l40s", "rtx4090", "l4", "t4",
    ];
    (0..n)
        .map(|i| {
            let gpu = gpus[g.below(gpus.len() as u64) as usize];
            let models = GpuModel::parse_family(gpu).unwrap();
            let ceiling = list_price(models[0]) * (100 + u128::from(g.below(60))) / 100;
            let count = [1, 1, 1, 2, 2, 4, 8][g.below(7) as usize];
            let (region, lat, lon) = REGIONS[g.below(8) as usize];
            let mut b = GpuRequest::builder()
                .gpu(gpu)
                .count(count)
                .hours(2)
                .max_price_per_gpu_hour(Amount(ceiling))
                .location(
                    GeoPoint::new(lat + g.unit() * 4.0 - 2.0, lon + g.unit() * 4.0 - 2.0).unwrap(),
                )
                .min_tier(g.below(3) as u8);
            if g.below(10) < 3 {
                b = b.region(region);
            }
            if g.below(10) < 2 {
                b = b.max_latency_ms(60);
            }
            Order {
                id: OrderId(i as u64 + 1),
                tenant: AccountId::from_label("tenant"),
                request: b.build().unwrap(),
                created_at: Timestamp(0),
                bid_deadline: Timestamp(0),
            }
        })
        .collect()
}

fn bids(order: &Order, offers: &[Offer]) -> Vec<Candidate> {
    offers
        .iter()
        .map(|o| Candidate {
            bid: Bid {
                order: order.id,
                provider: o.profile.id,
                model: o.model,
                price_per_gpu_hour: o.price_per_gpu_hour,
                placed_at: Timestamp(0),
            },
            profile: o.profile.clone(),
        })
        .collect()
}

fn matcher() -> WeightedMatcher {
    WeightedMatcher::new(MatcherConfig {
        round_seed: 7,
        ..MatcherConfig::default()
    })
    .unwrap()
}

fn rank_one(c: &mut Criterion) {
    let pool = orders(512, 2);
    let mut group = c.benchmark_group("rank_one_order");
    group.throughput(Throughput::Elements(1));
    for n in [1_000usize, 10_000, 100_000] {
        let offers = market(n, 1);
        let mut index = ProviderIndex::new(matcher());
        index.insert_many(offers.clone()).unwrap();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("index_top1", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % pool.len();
                black_box(index.top(&pool[i], 1).ok())
            })
        });
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("index_top10", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % pool.len();
                black_box(index.top(&pool[i], 10).ok())
            })
        });
        // The naive baseline: every provider as a bid, scored and sorted.
        let m = matcher();
        let cands: Vec<(Order, Vec<Candidate>)> = pool
            .iter()
            .take(8)
            .map(|o| (o.clone(), bids(o, &offers)))
            .collect();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("naive_scan", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % cands.len();
                black_box(m.rank(&cands[i].0, &cands[i].1).unwrap().ranked.len())
            })
        });
    }
    group.finish();
}

fn assign_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("assign");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let batch = orders(10_000, 3);
    group.throughput(Throughput::Elements(batch.len() as u64));
    let mut index = ProviderIndex::new(matcher());
    index.insert_many(market(100_000, 1)).unwrap();
    let probe = index.clone().assign(&batch).unwrap();
    println!(
        "assign: 10k orders x 100k providers: {} matched, {} unmatched",
        probe.matched.len(),
        probe.unmatched.len()
    );
    group.bench_function("index_10k_orders_100k_providers", |b| {
        b.iter_batched(
            || index.clone(),
            |mut ix| black_box(ix.assign(&batch).unwrap().matched.len()),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// 200 orders x 200 providers, one GPU each, every provider bidding on every order.
fn instance(seed: u64) -> (Vec<Order>, Vec<Candidate>) {
    let mut offers = market(200, seed);
    let mut os = orders(200, seed ^ 0xabcd);
    for o in &mut offers {
        o.model = GpuModel::H100Sxm;
        o.price_per_gpu_hour =
            Amount(list_price(GpuModel::H100Sxm) * 7 / 10 + o.price_per_gpu_hour.0 % 1_000_000);
        o.profile.free_gpus = 1;
        o.profile.total_free_gpus = o.profile.total_free_gpus.max(1);
        o.profile.tier = TrustTier(3);
    }
    for o in &mut os {
        let mut r = GpuRequest::builder()
            .gpu("h100")
            .hours(1)
            .max_price_per_gpu_hour(Amount(4_000_000))
            .build()
            .unwrap();
        r.location = o.request.location;
        o.request = r;
    }
    let cands = os.iter().flat_map(|o| bids(o, &offers)).collect();
    (os, cands)
}

fn quality(c: &mut Criterion) {
    let m = matcher();
    let (mut gaps, mut greedy_gaps) = (Vec::new(), Vec::new());
    for seed in 1..=5u64 {
        let (os, cands) = instance(seed);
        let g = greedy_assign(&m, &os, &cands).unwrap();
        let d = m.assign(&os, &cands).unwrap();
        let o = optimal_assign(&m, &os, &cands).unwrap();
        let gap = 1.0 - d.total_score() / o.total_score();
        let greedy_gap = 1.0 - g.total_score() / o.total_score();
        println!(
            "quality: 200x200 seed {seed}: optimal {:.4} ({} matched), default assign {:.4} ({} matched, gap {:.3}%), plain greedy {:.4} (gap {:.3}%)",
            o.total_score(),
            o.matched.len(),
            d.total_score(),
            d.matched.len(),
            gap * 100.0,
            g.total_score(),
            greedy_gap * 100.0
        );
        gaps.push(gap);
        greedy_gaps.push(greedy_gap);
    }
    let stat = |v: &[f64]| {
        (
            v.iter().sum::<f64>() / v.len() as f64 * 100.0,
            v.iter().cloned().fold(0.0, f64::max) * 100.0,
        )
    };
    let ((mean, worst), (gmean, gworst)) = (stat(&gaps), stat(&greedy_gaps));
    println!(
        "quality: default assign (greedy + local search): mean gap {mean:.3}%, worst {worst:.3}%; plain greedy: mean {gmean:.3}%, worst {gworst:.3}%"
    );

    let (os, cands) = instance(1);
    let mut group = c.benchmark_group("assign_200x200");
    group.sample_size(10);
    group.bench_function("greedy", |b| {
        b.iter(|| black_box(greedy_assign(&m, &os, &cands).unwrap().matched.len()))
    });
    group.bench_function("greedy_local_search", |b| {
        b.iter(|| black_box(improved_assign(&m, &os, &cands).unwrap().matched.len()))
    });
    group.bench_function("optimal_kuhn_munkres", |b| {
        b.iter(|| black_box(optimal_assign(&m, &os, &cands).unwrap().matched.len()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = quality, rank_one, assign_batch
}
criterion_main!(benches);
