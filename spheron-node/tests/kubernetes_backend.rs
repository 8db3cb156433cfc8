//! A provider node whose config says `launcher = "kubernetes"`, against a real kube-apiserver
//! (etcd, controller-manager, scheduler, kwok playing the GPU nodes; `spheron_k8s::test_utils`)
//! reached with the shipped least-privilege role through the kubeconfig its config names:
//!
//! 1. the config's launcher, inventory and bidding agent: the cluster's priced GPU nodes are
//!    the inventory, bids follow the cluster, a lease runs in a `[kubernetes]`-shaped namespace
//!    on the reserved node, a pod that never starts fails with the typed reason, and a
//!    restarted node's backend reattaches the running lease;
//! 2. the whole network path on anvil: the node registers the cluster's GPUs, bids, is matched
//!    by an operator node, launches the tenant's manifest on the cluster, and the lease
//!    completes and settles when the pod succeeds.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used, missing_docs)]

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use spheron_chain::MarketConfig;
use spheron_chain::anvil::{AnvilOptions, TestChain, find_anvil};
use spheron_chain::bindings::{SpheronMarket, TestToken};
use spheron_core::{
    AccountId, Amount, BidStrategy, CloseReason, GeoPoint, GpuModel, GpuRequest, LaunchSpec,
    LeaseId, LeaseState, Order, OrderId, Provider, ProviderStats, Registry, StrategyAgent,
    Timestamp, Token, TrustTier, Workload, WorkloadStatus,
};
use spheron_k8s::k8s_openapi;
use spheron_k8s::k8s_openapi::api::core::v1::{Namespace, Pod};
use spheron_k8s::k8s_openapi::api::networking::v1::NetworkPolicy;
use spheron_k8s::kube::Api;
use spheron_k8s::kube::api::ListParams;
use spheron_k8s::render::{cpu_quantity, mib_quantity};
use spheron_k8s::test_utils::{TestCluster, cluster_or_skip};
use spheron_node::backend::{Backend, LauncherKind};
use spheron_node::network::{NetworkFile, PaymentToken};
use spheron_node::operator::{OperatorConfig, OperatorNode};
use spheron_node::provider::{ProviderConfig, ProviderNode};
use spheron_node::tenant::NetworkMarket;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SPHN: u128 = 1_000_000_000_000_000_000;
const USDS: u128 = 1_000_000;
const IMAGE: &str = "nvcr.io/nvidia/pytorch:24.05-py3";

async fn namespace_exists(c: &TestCluster, ns: &str) -> bool {
    Api::<Namespace>::all(c.client())
        .get_opt(ns)
        .await
        .unwrap()
        .is_some()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A provider config on the cluster: the kubeconfig copied next to it (a relative path), and
/// `[kubernetes]` settings that differ from every default.
fn write_config(dir: &Path, c: &TestCluster, chain_part: &str) -> std::path::PathBuf {
    std::fs::copy(c.provider_kubeconfig(), dir.join("cluster.kubeconfig")).unwrap();
    let path = dir.join("provider.toml");
    std::fs::write(
        &path,
        format!(
            "{chain_part}launcher = \"kubernetes\"\n\n\
             [[gpus]]\nmodel = \"h100-sxm\"\nprice = \"2.00\"\n\n\
             [kubernetes]\nkubeconfig = \"cluster.kubeconfig\"\nnamespace_prefix = \"acme\"\n\
             runtime_class = \"nvidia\"\ningress_namespaces = [\"edge\"]\n\
             blocked_cidrs = [\"10.244.0.0/16\", \"10.0.0.0/24\"]\nstart_timeout_secs = 8\n\n\
             [kubernetes.per_gpu]\ncpu_millis = 4000\nmemory_mib = 32768\nshm_mib = 2048\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_node_configured_for_kubernetes() {
    let Some(cluster) = cluster_or_skip("a_provider_node_configured_for_kubernetes").await else {
        return;
    };
    cluster
        .add_gpu_node("h100-node-a", "NVIDIA-H100-80GB-HBM3", 8)
        .await
        .unwrap();
    // An L4 node the config prices no model for: never offered.
    cluster
        .add_gpu_node("l4-node-a", "NVIDIA-L4", 4)
        .await
        .unwrap();
    // The RuntimeClass the config names (the admission plugin refuses pods naming none).
    let rc: k8s_openapi::api::node::v1::RuntimeClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nvidia"}, "handler": "nvidia"
    }))
    .unwrap();
    Api::all(cluster.client())
        .create(&Default::default(), &rc)
        .await
        .unwrap();

    config_to_launcher_and_inventory(&cluster).await;
    network_lease_on_the_cluster(&cluster).await;
}

async fn config_to_launcher_and_inventory(c: &TestCluster) {
    let dir = tempfile::tempdir().unwrap();
    let chain_part = "name = \"acme\"\nnetwork = \"network.json\"\nkey_file = \"key\"\n\
        listen = \"127.0.0.1:1\"\nregion = \"eu-west\"\nlat = 50.1\nlon = 8.7\nstake = \"100\"\n\
        data_dir = \"data\"\n";
    let cfg = ProviderConfig::load(&write_config(dir.path(), c, chain_part)).unwrap();
    assert_eq!(cfg.launcher, LauncherKind::Kubernetes);
    let (configured, prices) = cfg.inventory_and_prices(&Token::usd()).unwrap();
    let backend = Backend::new(cfg.launcher, cfg.kubernetes.as_ref())
        .await
        .unwrap();
    assert_eq!(backend.kind(), LauncherKind::Kubernetes);

    // The inventory is the cluster's priced nodes.
    let inv = backend.inventory(configured, &prices).await.unwrap();
    assert_eq!(inv.nodes.len(), 1, "{inv:?}");
    assert_eq!(inv.nodes[0].name, "h100-node-a");
    assert_eq!((inv.nodes[0].total, inv.nodes[0].free), (8, 8));

    // Bids follow the cluster: the agent refreshes the registry's inventory first.
    let me = AccountId([7; 20]);
    let registry = Arc::new(Registry::new());
    registry.register(Provider {
        id: me,
        name: "acme".into(),
        endpoint: "https://acme.invalid".into(),
        region: "eu-west".into(),
        location: GeoPoint {
            lat: 50.1,
            lon: 8.7,
        },
        inventory: inv,
        stake: Amount(100 * SPHN),
        stats: ProviderStats::default(),
        tier: TrustTier(0),
        banned: false,
    });
    let agent = backend.agent(
        StrategyAgent::new(me, registry.clone(), prices, BidStrategy::ListPrice),
        registry.clone(),
    );
    let order = |id: u64, gpu: &str, count: u32| Order {
        id: OrderId(id),
        tenant: AccountId([9; 20]),
        request: GpuRequest::builder()
            .gpu(gpu)
            .count(count)
            .hours(1)
            .max_price_per_gpu_hour(Amount(5 * USDS))
            .build()
            .unwrap(),
        created_at: Timestamp(unix_ms()),
        bid_deadline: Timestamp(unix_ms() + 60_000),
    };
    let bid = agent.on_order(&order(1, "h100", 2)).await.expect("a bid");
    assert_eq!(bid.model, GpuModel::H100Sxm);
    assert!(
        agent.on_order(&order(2, "l4", 1)).await.is_none(),
        "unpriced"
    );
    assert!(
        agent.on_order(&order(3, "h100", 9)).await.is_none(),
        "no node has 9"
    );
    let node = registry.reserve(me, GpuModel::H100Sxm, 2).unwrap();
    assert_eq!(node, "h100-node-a");

    // The lease runs as `[kubernetes]` says, pinned to the reserved node.
    let launcher = backend.launcher();
    let spec = LaunchSpec {
        lease: LeaseId(101),
        provider: me,
        model: GpuModel::H100Sxm,
        gpus: 2,
        node: Some(node),
        ends_at: Timestamp(unix_ms() + 3_600_000),
    };
    let w = Workload::command(["python", "train.py"]).image(IMAGE);
    let id = launcher.launch(&spec, &w).await.expect("launch");
    assert_eq!(id.0, "acme-lease-101");
    assert_eq!(launcher.status(&id).await.unwrap(), WorkloadStatus::Running);
    assert!(backend.pid(&id).is_none());
    let pod = Api::<Pod>::namespaced(c.client(), &id.0)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let ps = pod.spec.unwrap();
    assert_eq!(ps.node_name.as_deref(), Some("h100-node-a"));
    assert_eq!(ps.runtime_class_name.as_deref(), Some("nvidia"));
    let limits = ps.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .clone()
        .unwrap();
    assert_eq!(limits["cpu"], cpu_quantity(8_000));
    assert_eq!(limits["memory"], mib_quantity(65_536));
    let shm = ps
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|v| {
            v.empty_dir
                .filter(|e| e.medium.as_deref() == Some("Memory"))
        })
        .unwrap();
    assert_eq!(shm.size_limit, Some(mib_quantity(4_096)));
    let np = Api::<NetworkPolicy>::namespaced(c.client(), &id.0)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let np = serde_json::to_string(&np.spec).unwrap();
    for want in ["\"edge\"", "10.244.0.0/16", "10.0.0.0/24", "169.254.0.0/16"] {
        assert!(np.contains(want), "{want} in {np}");
    }

    // A pod that never starts fails within the configured start timeout, typed, and leaves
    // nothing behind.
    let stuck = Workload::command(["python", "train.py"])
        .image("registry.invalid/nothing:here")
        .env("SPHERON_FAKE_WAITING", "ImagePullBackOff");
    let mut sspec = spec.clone();
    sspec.lease = LeaseId(102);
    sspec.node = None;
    sspec.gpus = 1;
    match launcher.launch(&sspec, &stuck).await {
        Err(spheron_core::Error::NotStarted { reason, .. }) => {
            assert!(reason.contains("ImagePullBackOff"), "{reason}")
        }
        other => panic!("expected NotStarted, got {other:?}"),
    }
    assert!(!namespace_exists(c, "acme-lease-102").await);

    // The node restarts: a new backend from the same config reattaches the running lease.
    let again = Backend::new(cfg.launcher, cfg.kubernetes.as_ref())
        .await
        .unwrap();
    let reattached = again.reattach().await.unwrap();
    assert_eq!(reattached.get(&101), Some(&id), "{reattached:?}");
    // Followed again: its watch reports the pod running.
    let followed = async {
        while again.launcher().status(&id).await.unwrap() != WorkloadStatus::Running {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), followed)
        .await
        .expect("reattached lease reads Running");
    again.launcher().stop(&id).await.unwrap();
    assert!(!namespace_exists(c, &id.0).await);
}

async fn chain() -> Option<TestChain> {
    if let Err(e) = find_anvil() {
        if std::env::var_os("SPHERON_REQUIRE_ANVIL").is_some_and(|v| v != "0") {
            panic!("this test needs anvil: {e}");
        }
        eprintln!("*** SKIPPED the network part: this test needs anvil: {e}");
        return None;
    }
    let config = MarketConfig {
        match_window_secs: 20,
        start_window_secs: 120,
        ..MarketConfig::default()
    };
    Some(
        TestChain::start_with(
            &config,
            &AnvilOptions {
                block_time_secs: Some(1),
                accounts: 12,
            },
        )
        .await
        .unwrap(),
    )
}

async fn mint(tc: &TestChain, token: Address, to: Address, amount: u128) {
    let t = TestToken::new(token, tc.chain.provider().clone());
    tc.chain
        .send(tc.admin(), t.mint(to, U256::from(amount)))
        .await
        .unwrap();
}

fn key_hex(k: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::hex::encode(k.to_bytes()))
}

async fn network_lease_on_the_cluster(c: &TestCluster) {
    let Some(tc) = chain().await else { return };
    let net = NetworkFile {
        rpc_url: tc.endpoint(),
        chain_id: 31337,
        market: tc.addresses.market,
        operators: tc.addresses.operators,
        audit: None,
        sphn: tc.addresses.sphn,
        payment: PaymentToken {
            address: tc.addresses.stable,
            symbol: "USDS".into(),
            decimals: 6,
        },
        deploy_block: tc.deploy_block,
        bid_window_secs: 4,
        tenants: Vec::new(),
        parties: Vec::new(),
    };
    // One operator node matches.
    let op = tc.keys[2].clone();
    mint(&tc, tc.addresses.sphn, op.address(), 1_000 * SPHN).await;
    let operator = OperatorNode::start_with_key(
        net.clone(),
        op,
        OperatorConfig {
            stake: 1_000 * SPHN,
            submit_grace: Duration::from_millis(500),
            poll: Duration::from_millis(200),
            ..OperatorConfig::default()
        },
    )
    .await
    .unwrap();
    let (stop_op, op_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(operator.run(async {
        let _ = op_rx.await;
    }));

    // The provider node, from its config file, on the cluster.
    let dir = tempfile::tempdir().unwrap();
    net.save(&dir.path().join("network.json")).unwrap();
    let pkey = tc.keys[6].clone();
    std::fs::write(dir.path().join("key"), key_hex(&pkey)).unwrap();
    mint(&tc, tc.addresses.sphn, pkey.address(), 500 * SPHN).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let chain_part = format!(
        "name = \"acme\"\nnetwork = \"network.json\"\nkey_file = \"key\"\n\
         listen = \"127.0.0.1:{port}\"\nregion = \"eu-west\"\nlat = 50.1\nlon = 8.7\n\
         stake = \"100\"\ndata_dir = \"data\"\npoll_ms = 200\n"
    );
    let cfg = ProviderConfig::load(&write_config(dir.path(), c, &chain_part)).unwrap();
    let prover = Arc::new(spheron_gpu::Simulation::standard().prover(
        GpuModel::H100Sxm,
        Some("NVIDIA H100 (simulated)".into()),
        spheron_gpu::Fault::None,
    ));
    let node = ProviderNode::start(cfg, prover).await.unwrap();
    // Registered with the cluster's GPUs: one node of 8 H100 (the L4 node is unpriced).
    let reg = spheron_chain::registry::provider(&tc.chain, tc.addresses.market, node.address())
        .await
        .unwrap()
        .unwrap();
    let meta: spheron_node::registry::ProviderMeta = serde_json::from_str(&reg.meta).unwrap();
    assert_eq!(meta.gpus.len(), 1, "{meta:?}");
    assert_eq!(meta.gpus[0].model, GpuModel::H100Sxm);
    assert_eq!((meta.gpus[0].nodes, meta.gpus[0].per_node), (1, 8));
    let (stop_node, node_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let node = node.clone();
        async move {
            node.run(listener, async {
                let _ = node_rx.await;
            })
            .await
        }
    });

    // A tenant rents through the network; the pod succeeds after 2 s.
    let tenant = tc.keys[8].clone();
    mint(&tc, tc.addresses.stable, tenant.address(), 1_000 * USDS).await;
    let t = TestToken::new(tc.addresses.stable, tc.chain.provider().clone());
    tc.chain
        .send(
            tenant.address(),
            t.approve(tc.addresses.market, U256::from(1_000 * USDS)),
        )
        .await
        .unwrap();
    let m = SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone());
    tc.chain
        .send(
            tenant.address(),
            m.deposit(tc.addresses.stable, U256::from(1_000 * USDS)),
        )
        .await
        .unwrap();
    let market = NetworkMarket::connect(net.clone(), tenant).await.unwrap();
    let job = Workload::command(["python", "train.py"])
        .image(IMAGE)
        .env("SPHERON_FAKE_EXIT", "0")
        .env("SPHERON_FAKE_RUN", "2s");
    let request = || {
        GpuRequest::builder()
            .gpu("h100")
            .hours(1)
            .max_price_per_gpu_hour(Amount(5 * USDS))
            .build()
            .unwrap()
    };
    // Retried once: on a loaded machine the paced simulated prover can miss a challenge.
    let lease = match market.rent(request(), job.clone()).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("first rent failed, retrying: {e}");
            market
                .rent(request(), job)
                .await
                .expect("rent on Kubernetes")
        }
    };
    let lease_id = lease.id().0;
    let report = tokio::time::timeout(Duration::from_secs(120), lease.wait())
        .await
        .expect("the lease ends");
    assert_eq!(report.state, LeaseState::Closed(CloseReason::Completed));
    let s = report.settlement.expect("settled on chain");
    assert_eq!(s.paid.0 + s.refunded.0, report.budget.0);
    assert!(s.refunded.0 > 0, "billed for seconds, not the hour: {s:?}");
    // It ran on the cluster, and its namespace is gone.
    let ns = format!("acme-lease-{lease_id}");
    let gone = async {
        while namespace_exists(c, &ns).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), gone)
        .await
        .expect("namespace deleted");
    let row = node
        .store()
        .lease(lease_id)
        .unwrap()
        .expect("the node's row");
    assert_eq!(row.node, "h100-node-a", "reserved on the cluster's node");
    assert_eq!(
        row.work,
        spheron_node::WorkState::Exited { exit_code: Some(0) },
        "the pod's success"
    );

    let _ = stop_node.send(());
    running.await.unwrap().unwrap();
    let _ = stop_op.send(());
}
