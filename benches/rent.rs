//! Time of the embedded flow from `rent()` to a running workload: zero-length bid window,
//! trivial command (`true`), the standard fleet, provers paced to a ~24 ms commit phase, products
//! and paths verified (no speed judgement; see below).
//!
//! ```text
//! cargo bench --bench rent
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use spheron::prelude::*;
use std::time::{Duration, Instant};

fn rent_to_running(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let market = rt.block_on(async {
        Marketplace::local()
            .bid_window(Duration::ZERO)
            // Provers paced like their GPUs at the 1e-8 simulation scale; with K = 3 the commit takes
            // ~13 ms instead of the default ~250 ms. At such short phases the
            // timing check would judge scheduling noise on a busy 2-core machine, and a false
            // "too slow" slashes and eventually bans an honest provider over thousands of
            // iterations, so the bench verifies products and paths without judging speed.
            .verifier(std::sync::Arc::new(spheron::gpu::RecomputeVerifier {
                n: 32,
                batch: 3, // 2 n^3 K = 197 k int8 ops: ~13 ms at a simulated H100's INT8 pace
                samples: 16,
                deadline_us: 10_000_000,
                require_signature: false, // in-process provers have no keys
            }))
            .seed(3)
            .tenant_funds(Amount(u128::from(u64::MAX)))
            .build()
            .await
            .expect("marketplace")
    });
    let request = GpuRequest::builder()
        .gpu("h100")
        .hours(1)
        .max_price_per_gpu_hour(Amount(3_000_000))
        .region("us-east")
        .build()
        .expect("request");
    c.bench_function("rent_to_running", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let lease = market
                        .rent(request.clone(), Workload::command(["true"]))
                        .await
                        .expect("rent");
                    total += start.elapsed();
                    // Untimed: let the lease finish and settle so capacity returns.
                    lease.wait().await;
                }
                total
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(8));
    targets = rent_to_running
}
criterion_main!(benches);
