//! Provider inventory read from a real kube-apiserver: fragmentation, mixed GPU models, pods that
//! finish freeing their GPUs, and a provider agent that never bids for capacity no single node has.
#![allow(clippy::unwrap_used)]

use spheron_core::market::ProviderAgent;
use spheron_core::test_utils::order;
use spheron_core::{
    Amount, BidStrategy, Clock, GeoPoint, GpuModel, Inventory, LaunchSpec, LeaseId, Provider,
    ProviderId, ProviderStats, Registry, SimClock, StrategyAgent, Timestamp, TrustTier, Workload,
    WorkloadLauncher, WorkloadStatus,
};
use spheron_k8s::test_utils::cluster_or_skip;
use spheron_k8s::{KubeInventory, KubeLauncher, KubeProviderAgent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn free_per_node(inv: &Inventory) -> BTreeMap<String, (GpuModel, u32, u32)> {
    inv.nodes
        .iter()
        .map(|n| (n.name.clone(), (n.model, n.free, n.total)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_against_a_real_api_server() {
    let Some(c) = cluster_or_skip("inventory_against_a_real_api_server").await else {
        return;
    };
    // 8 H100s spread over four nodes, one 8 x A100 node, one 4 x L4 node, and a CPU-only node.
    for i in 1..=4 {
        c.add_gpu_node(&format!("h100-{i}"), "NVIDIA-H100-80GB-HBM3", 2)
            .await
            .unwrap();
    }
    c.add_gpu_node("a100-1", "NVIDIA-A100-SXM4-80GB", 8)
        .await
        .unwrap();
    c.add_gpu_node("l4-1", "NVIDIA-L4", 4).await.unwrap();
    c.add_gpu_node("mig-1", "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", 7)
        .await
        .unwrap();

    // Inventory and launcher run as the shipped least-privilege role.
    let inv = KubeInventory::new(c.provider_client());
    let now = inv.fetch().await.unwrap();
    // Mixed models, per node; the MIG-partitioned node is not whole GPUs and is left out.
    assert_eq!(
        free_per_node(&now),
        BTreeMap::from([
            ("a100-1".to_string(), (GpuModel::A100_80G, 8, 8)),
            ("h100-1".to_string(), (GpuModel::H100Sxm, 2, 2)),
            ("h100-2".to_string(), (GpuModel::H100Sxm, 2, 2)),
            ("h100-3".to_string(), (GpuModel::H100Sxm, 2, 2)),
            ("h100-4".to_string(), (GpuModel::H100Sxm, 2, 2)),
            ("l4-1".to_string(), (GpuModel::L4, 4, 4)),
        ])
    );
    // Fragmentation: 8 free H100s, but no node holds more than 2.
    assert_eq!(now.free(GpuModel::H100Sxm), 8);
    assert_eq!(now.largest_free_block(GpuModel::H100Sxm), 2);

    // A provider agent on this cluster: its registry entry starts with a stale, flattering
    // claim (one node of 8 H100s); the agent refreshes it from the cluster before bidding.
    let provider = ProviderId::from_label("k8s-provider");
    let registry = Arc::new(Registry::new());
    registry.register(Provider {
        id: provider,
        name: "k8s-provider".into(),
        endpoint: c.url().to_string(),
        region: "eu-west".into(),
        location: GeoPoint::new(50.1, 8.7).unwrap(),
        inventory: Inventory::uniform(GpuModel::H100Sxm, 1, 8),
        stake: Amount(1_000_000),
        stats: ProviderStats::default(),
        tier: TrustTier(3),
        banned: false,
    });
    let prices = BTreeMap::from([
        (GpuModel::H100Sxm, Amount(2_000_000)),
        (GpuModel::A100_80G, Amount(1_500_000)),
        (GpuModel::L4, Amount(500_000)),
    ]);
    let agent = KubeProviderAgent::new(
        inv.clone(),
        registry.clone(),
        Arc::new(StrategyAgent::new(
            provider,
            registry.clone(),
            prices,
            BidStrategy::ListPrice,
        )),
    );
    let ceiling = 10_000_000;
    assert!(
        agent
            .on_order(&order(1, "h100", 8, ceiling))
            .await
            .is_none(),
        "8 free H100s on 4 nodes cannot serve one 8-GPU pod"
    );
    assert_eq!(
        registry.get(provider).unwrap().inventory,
        now,
        "the registry now holds the cluster's inventory"
    );
    let bid = agent
        .on_order(&order(2, "h100", 2, ceiling))
        .await
        .expect("2 fit on a node");
    assert_eq!(bid.model, GpuModel::H100Sxm);
    assert!(
        agent
            .on_order(&order(3, "a100", 8, ceiling))
            .await
            .is_some()
    );
    assert!(agent.on_order(&order(4, "l4", 5, ceiling)).await.is_none());

    // Running pods hold GPUs; pods that finish free them.
    let clock = Arc::new(SimClock::new(Timestamp(1_800_000_000_000)));
    // Keep finished pods around: a Succeeded pod must not count against its node.
    let launcher = KubeLauncher::builder(c.provider_client())
        .clock(clock.clone())
        .finished_retention(None)
        .build()
        .unwrap();
    let spec = |lease: u64, model: GpuModel, gpus: u32| LaunchSpec {
        lease: LeaseId(lease),
        provider,
        model,
        gpus,
        node: None,
        ends_at: clock.now().add(Duration::from_secs(3600)),
    };
    let short = Workload::command(["python", "train.py"])
        .image("nvcr.io/nvidia/pytorch:24.05-py3")
        .env("SPHERON_FAKE_EXIT", "0")
        .env("SPHERON_FAKE_RUN", "3s");
    let long = Workload::command(["python", "serve.py"]).image("nvcr.io/nvidia/pytorch:24.05-py3");

    let job = launcher
        .launch(&spec(20, GpuModel::H100Sxm, 2), &short)
        .await
        .unwrap();
    let a100 = launcher
        .launch(&spec(21, GpuModel::A100_80G, 6), &long)
        .await
        .unwrap();
    let mut rx = launcher.status_changes(&job).unwrap();
    rx.wait_for(|s| *s == WorkloadStatus::Running)
        .await
        .unwrap();
    let mut rx2 = launcher.status_changes(&a100).unwrap();
    rx2.wait_for(|s| *s == WorkloadStatus::Running)
        .await
        .unwrap();

    let busy = inv.fetch().await.unwrap();
    assert_eq!(busy.free(GpuModel::H100Sxm), 6);
    assert_eq!(busy.largest_free_block(GpuModel::H100Sxm), 2);
    assert_eq!(
        busy.nodes
            .iter()
            .filter(|n| n.model == GpuModel::H100Sxm && n.free == 0)
            .count(),
        1,
        "the 2-GPU job fills exactly one H100 node"
    );
    assert_eq!(busy.free(GpuModel::A100_80G), 2);
    assert!(
        agent
            .on_order(&order(5, "a100", 4, ceiling))
            .await
            .is_none(),
        "only 2 A100s are left on the node"
    );
    assert!(
        agent
            .on_order(&order(6, "a100", 2, ceiling))
            .await
            .is_some()
    );

    // The job finishes (its pod is Succeeded but still exists): its GPUs are free again.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), launcher.wait(&job))
            .await
            .unwrap()
            .unwrap(),
        WorkloadStatus::Succeeded
    );
    let after = inv.fetch().await.unwrap();
    assert_eq!(after.free(GpuModel::H100Sxm), 8);
    assert_eq!(after.free(GpuModel::A100_80G), 2);

    // Stopping the service returns its GPUs.
    launcher.stop(&a100).await.unwrap();
    launcher.stop(&job).await.unwrap();
    assert_eq!(inv.fetch().await.unwrap(), now);

    // A reservation the registry holds for a lease whose pod does not exist yet survives the
    // next sync (the same GPUs are never sold twice).
    let settle = async {
        loop {
            let synced = inv.sync(&registry, provider).await.unwrap();
            if synced == now {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), settle)
        .await
        .expect("the cache catches up");
    let node = registry.reserve(provider, GpuModel::A100_80G, 8).unwrap();
    assert_eq!(node, "a100-1");
    let synced = inv.sync(&registry, provider).await.unwrap();
    assert_eq!(
        synced.free(GpuModel::A100_80G),
        0,
        "the reservation is kept"
    );
    assert!(
        agent
            .on_order(&order(7, "a100", 1, ceiling))
            .await
            .is_none(),
        "reserved GPUs are not offered again"
    );
    registry.release(provider, &node, 8).unwrap();
    assert_eq!(
        inv.sync(&registry, provider)
            .await
            .unwrap()
            .free(GpuModel::A100_80G),
        8
    );
}
