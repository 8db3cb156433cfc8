//! Launch → Running on a real control plane: from `KubeLauncher::launch` (validation, capacity
//! check, namespace, quota, network policy, Job) until the pod watch reports Running (Job
//! controller creates the pod, the scheduler binds it to a GPU node, kwok's kubelet starts it).
//!
//! ```text
//! export SPHERON_K8S_ASSETS="$(scripts/k8s-setup.sh)"
//! cargo bench -p spheron-k8s --bench launch_to_running
//! ```
//!
//! One lease per sample, 50 samples, each lease 1 x H100 on a cluster of eight 8-GPU nodes;
//! leases stay up (the control plane is discarded at the end), so no teardown overlaps a
//! measurement. Prints p50 and p95
//! over the 50 measured leases after criterion's report.

use criterion::{Criterion, SamplingMode};
use spheron_core::{
    Clock, GpuModel, LaunchSpec, LeaseId, ProviderId, SystemClock, Workload, WorkloadLauncher,
    WorkloadStatus,
};
use spheron_k8s::KubeLauncher;
use spheron_k8s::test_utils::{HarnessError, TestCluster};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = match rt.block_on(TestCluster::start()) {
        Ok(c) => c,
        Err(e @ HarnessError::Missing { .. }) => {
            eprintln!("SKIPPED launch_to_running: {e}");
            return;
        }
        Err(e) => panic!("test cluster: {e}"),
    };
    rt.block_on(async {
        for i in 0..8 {
            cluster
                .add_gpu_node(&format!("h100-{i}"), "NVIDIA-H100-80GB-HBM3", 8)
                .await
                .expect("node");
        }
    });
    // As the shipped least-privilege role.
    let launcher = KubeLauncher::new(cluster.provider_client());
    let clock = SystemClock;
    let provider = ProviderId::from_label("bench-provider");
    let workload =
        Workload::command(["python", "train.py"]).image("nvcr.io/nvidia/pytorch:24.05-py3");
    let next = Arc::new(Mutex::new(0u64));
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();

    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
        .configure_from_args();
    {
        let mut g = c.benchmark_group("k8s");
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("launch_to_running_1xh100", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let launcher = launcher.clone();
                let workload = workload.clone();
                let next = next.clone();
                let samples = samples.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let lease = {
                            let mut n = next.lock().expect("counter");
                            *n += 1;
                            *n
                        };
                        let spec = LaunchSpec {
                            lease: LeaseId(lease),
                            provider,
                            model: GpuModel::H100Sxm,
                            gpus: 1,
                            node: None,
                            ends_at: clock.now().add(Duration::from_secs(3600)),
                        };
                        let start = Instant::now();
                        let id = launcher.launch(&spec, &workload).await.expect("launch");
                        let mut rx = launcher.status_changes(&id).expect("status");
                        rx.wait_for(|s| *s == WorkloadStatus::Running)
                            .await
                            .expect("running");
                        let d = start.elapsed();
                        total += d;
                        samples.lock().expect("samples").push(d);
                        drop(id);
                    }
                    total
                }
            });
        });
        g.finish();
    }
    c.final_summary();

    let mut all = samples.lock().expect("samples").clone();
    let n = all.len().min(50);
    let mut last: Vec<Duration> = all.split_off(all.len() - n);
    last.sort();
    let pct = |p: f64| last[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    println!(
        "launch -> Running over the last {n} leases: p50 {:.1} ms, p95 {:.1} ms, min {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        last[0].as_secs_f64() * 1e3,
        last[n - 1].as_secs_f64() * 1e3,
    );
    // The whole control plane goes away with `cluster`; no per-lease teardown needed.
    drop(cluster);
}
