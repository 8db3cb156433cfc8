//! Two figures on a real control plane (etcd, kube-apiserver, controller-manager, scheduler,
//! kwok):
//!
//! - reconcile time for 100 orphaned lease namespaces: a fresh `KubeLauncher` finds 100
//!   expired lease namespaces and deletes them, waiting until every one is gone;
//! - inventory query time with 1,000 pods in the cluster: `KubeInventory::sync` (watch-fed
//!   caches, what a bid uses) against `KubeInventory::fetch` (fresh lists).
//!
//! ```text
//! export SPHERON_K8S_ASSETS="$(scripts/k8s-setup.sh)"
//! cargo bench -p spheron-k8s --bench reconcile_inventory
//! ```

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::PostParams;
use spheron_core::{
    Amount, Clock, GeoPoint, GpuModel, Inventory, LaunchSpec, LeaseId, Provider, ProviderId,
    ProviderStats, Registry, SystemClock, Timestamp, TrustTier, Workload,
};
use spheron_k8s::KubeInventory;
use spheron_k8s::KubeLauncher;
use spheron_k8s::test_utils::{HarnessError, TestCluster};
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = match rt.block_on(TestCluster::start()) {
        Ok(c) => c,
        Err(e @ HarnessError::Missing { .. }) => {
            eprintln!("SKIPPED reconcile_inventory: {e}");
            return;
        }
        Err(e) => panic!("test cluster: {e}"),
    };
    rt.block_on(run(&cluster));
    drop(cluster);
}

async fn run(cluster: &TestCluster) {
    for i in 0..10 {
        cluster
            .add_gpu_node(&format!("h100-{i}"), "NVIDIA-H100-80GB-HBM3", 8)
            .await
            .expect("node");
    }
    let admin = cluster.client();
    let launcher = KubeLauncher::new(cluster.provider_client());
    let clock = SystemClock;
    let w = Workload::command(["python", "train.py"]).image("nvcr.io/nvidia/pytorch:24.05-py3");

    // 100 lease namespaces whose paid time ended an hour ago (as after a provider crash).
    for round in 0..3u64 {
        for i in 0..100u64 {
            let spec = LaunchSpec {
                lease: LeaseId(round * 1000 + i),
                provider: ProviderId::from_label("bench"),
                model: GpuModel::H100Sxm,
                gpus: 1,
                node: None,
                ends_at: Timestamp(clock.now().0.saturating_sub(3_600_000)),
            };
            let ns = launcher.render(&spec, &w).expect("render").namespace;
            Api::<Namespace>::all(admin.clone())
                .create(&PostParams::default(), &ns)
                .await
                .expect("namespace");
        }
        let fresh = KubeLauncher::new(cluster.provider_client());
        let start = Instant::now();
        let r = fresh.reconcile().await.expect("reconcile");
        let took = start.elapsed();
        assert_eq!(r.deleted.len(), 100);
        println!(
            "reconcile of 100 orphaned lease namespaces (deleted and gone), run {}: {:.0} ms",
            round + 1,
            ms(took)
        );
    }

    // 1,000 pods (unscheduled: a scheduler name nobody serves), plus the nodes.
    let load = "bench-load";
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": load}}))
                .expect("namespace"),
        )
        .await
        .expect("namespace");
    let pods = Api::<Pod>::namespaced(admin.clone(), load);
    for i in 0..1000 {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p-{i}")},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &p).await.expect("pod");
    }
    let provider = ProviderId::from_label("bench");
    let registry = Registry::new();
    registry.register(Provider {
        id: provider,
        name: "bench".into(),
        endpoint: cluster.url().to_string(),
        region: "eu-west".into(),
        location: GeoPoint::new(50.1, 8.7).expect("location"),
        inventory: Inventory::default(),
        stake: Amount(1),
        stats: ProviderStats::default(),
        tier: TrustTier(3),
        banned: false,
    });
    let inv = KubeInventory::new(cluster.provider_client());
    let start = Instant::now();
    inv.sync(&registry, provider).await.expect("first sync");
    println!(
        "inventory: first sync (fills the watch caches): {:.1} ms",
        ms(start.elapsed())
    );
    for (what, cached) in [
        ("sync (cached, per bid)", true),
        ("fetch (fresh lists)", false),
    ] {
        let mut v = Vec::new();
        for _ in 0..50 {
            let start = Instant::now();
            if cached {
                inv.sync(&registry, provider).await.expect("sync");
            } else {
                inv.fetch().await.expect("fetch");
            }
            v.push(start.elapsed());
        }
        v.sort();
        println!(
            "inventory with 1,000 pods, {what}: p50 {:.2} ms, p95 {:.2} ms over 50",
            ms(pct(&v, 0.5)),
            ms(pct(&v, 0.95))
        );
    }
}
