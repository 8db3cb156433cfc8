//! Time of the embedded flow from `rent()` to a running workload: zero-length bid window,
//! trivial command (`true`), the standard fleet, a Freivalds challenge with a 20 ms simulated
//! commit phase.
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
            // A 20 ms simulated commit phase instead of the default 250 ms.
            .simulation(spheron::gpu::Simulation {
                target_ms: 20,
                ..spheron::gpu::Simulation::standard()
            })
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
