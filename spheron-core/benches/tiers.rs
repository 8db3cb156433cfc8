//! Tier policy, reward split and epoch processing costs.
//!
//! Run: `cargo bench -p spheron-core --bench tiers`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use spheron_core::tier::split_pool;
use spheron_core::{
    AccountId, Amount, CloseReason, EpochConfig, EpochProcessor, Escrow, GeoPoint, GpuModel,
    Inventory, LeaseId, MemoryEscrow, OrderId, ProgressEvent, Provider, ProviderStats, Registry,
    ReputationTierPolicy, Step, TierHistory, TierPolicy, Timestamp, Token, TrustTier, Verdict,
};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn provider(i: usize) -> Provider {
    let label = format!("p{i}");
    Provider {
        id: AccountId::from_label(&label),
        name: label.clone(),
        endpoint: label,
        region: "eu-west".into(),
        location: GeoPoint { lat: 1.0, lon: 1.0 },
        inventory: Inventory::uniform(GpuModel::ALL[i % GpuModel::ALL.len()], 1, 8),
        stake: Amount(1_000),
        stats: ProviderStats::default(),
        tier: TrustTier((i % 8) as u8),
        banned: false,
    }
}

/// A processor over `n` providers with one epoch of activity each: ten passed challenges
/// and one settled lease (the events an orchestrator would publish).
fn loaded(rt: &tokio::runtime::Runtime, n: usize) -> EpochProcessor {
    let registry = Arc::new(Registry::new());
    let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
    let config = EpochConfig {
        provider_pool: Amount(1_000_000_007),
        ..EpochConfig::default()
    };
    rt.block_on(escrow.deposit(config.treasury, Amount(10u128.pow(15))))
        .unwrap();
    let p = EpochProcessor::new(
        config,
        Arc::new(ReputationTierPolicy::default()),
        escrow.clone(),
        escrow,
        registry.clone(),
    )
    .unwrap();
    for i in 0..n {
        let prov = provider(i);
        let id = prov.id;
        registry.register(prov);
        for k in 0..10 {
            p.ingest(&verified(i as u64, k, id)).unwrap();
        }
        p.ingest(&ProgressEvent {
            at: Timestamp(1_000),
            order: OrderId(i as u64),
            step: Step::Settled {
                lease: LeaseId(i as u64),
                provider: id,
                gpu_seconds: 3_600 * (1 + i as u64 % 8),
                reason: CloseReason::Completed,
                paid: Amount(1),
                refunded: Amount(0),
            },
        })
        .unwrap();
    }
    p
}

fn verified(order: u64, k: u64, provider: AccountId) -> ProgressEvent {
    ProgressEvent {
        at: Timestamp(10 + k),
        order: OrderId(order),
        step: Step::Verified {
            provider,
            verdict: Verdict::Pass {
                achieved_tflops: None,
            },
        },
    }
}

fn policy(c: &mut Criterion) {
    let p = ReputationTierPolicy::default();
    let stats = ProviderStats {
        challenges_answered: 990,
        challenges_missed: 7,
        challenges_failed: 3,
        leases_completed: 48,
        leases_failed: 2,
        feedback_sum: 180,
        feedback_count: 40,
    };
    let history = TierHistory { above: 1, below: 0 };
    c.bench_function("tier/evaluate", |b| {
        b.iter(|| p.evaluate(black_box(TrustTier(4)), black_box(&stats), &history))
    });
}

fn split(c: &mut Criterion) {
    let mut g = c.benchmark_group("tier/split_pool");
    for n in [1_000usize, 100_000] {
        let weights: Vec<(AccountId, u128)> = (0..n)
            .map(|i| {
                (
                    AccountId::from_label(&format!("p{i}")),
                    (i as u128 + 1) * 3_600 * 30_000,
                )
            })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &weights, |b, w| {
            b.iter(|| split_pool(Amount(10u128.pow(24) + 7), black_box(w)).unwrap())
        });
    }
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let n = 10_000usize;
    let mut g = c.benchmark_group("tier/ingest");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("verified_events", |b| {
        b.iter_batched(
            || {
                let p = loaded(&rt, 100);
                let id = AccountId::from_label("p7");
                let events: Vec<ProgressEvent> =
                    (0..n as u64).map(|k| verified(k, k, id)).collect();
                (p, events)
            },
            |(p, events)| {
                for e in &events {
                    p.ingest(e).unwrap();
                }
                p
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn close(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tier/close_epoch");
    for n in [1_000usize, 10_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched(
                || loaded(&rt, n),
                |p| {
                    let r = rt.block_on(p.close_epoch(0)).unwrap();
                    assert_eq!(r.providers.len(), n);
                    (p, r)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = policy, split, ingest, close
}
criterion_main!(benches);
