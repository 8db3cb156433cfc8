//! The rent flow with workloads on Kubernetes: `Marketplace::local()` with a `KubeLauncher`
//! against a real kube-apiserver (etcd, controller-manager, scheduler, kwok-run GPU nodes from
//! `spheron_k8s::test_utils`). The lease follows the pod: it completes when the pod succeeds,
//! fails with the pod's exit code, and a tenant stop deletes the lease's namespace.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use spheron::k8s::KubeLauncher;
use spheron::k8s::k8s_openapi::api::core::v1::Namespace;
use spheron::k8s::kube::Api;
use spheron::k8s::test_utils::{TestCluster, cluster_or_skip};
use spheron::prelude::*;
use spheron::{BidStrategy, LogSource, ProviderSpec};
use std::sync::Arc;
use std::time::Duration;

fn request() -> GpuRequest {
    GpuRequest::builder()
        .gpu("h100")
        .count(2)
        .hours(1)
        .max_price_per_gpu_hour(Amount(3_000_000))
        .build()
        .unwrap()
}

fn job(exit: &str) -> Workload {
    Workload::command(["python", "train.py"])
        .image("nvcr.io/nvidia/pytorch:24.05-py3")
        .env("SPHERON_FAKE_EXIT", exit)
        .env("SPHERON_FAKE_RUN", "2s")
}

async fn namespace_exists(c: &TestCluster, ns: &str) -> bool {
    Api::<Namespace>::all(c.client())
        .get_opt(ns)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rent_runs_on_kubernetes() {
    let Some(c) = cluster_or_skip("rent_runs_on_kubernetes").await else {
        return;
    };
    c.add_gpu_node("h100-a", "NVIDIA-H100-80GB-HBM3", 8)
        .await
        .unwrap();
    c.set_log_lines(&["step 1 loss=0.8", "step 2 loss=0.4"])
        .unwrap();
    let fleet = SimFleet::new().provider(ProviderSpec {
        name: "k8s-cluster",
        region: "eu-west",
        location: (50.11, 8.68),
        model: GpuModel::H100Sxm,
        nodes: 1,
        per_node: 8,
        price: 2_000_000,
        stake: 2_000_000_000,
        uptime: (990, 10),
        leases: (100, 1),
        feedback: (450, 100),
        tier: 5,
        strategy: BidStrategy::ListPrice,
        fault: spheron::gpu::Fault::None,
        actual_model: None,
    });
    let market = Marketplace::local()
        .fleet(fleet)
        .launcher(Arc::new(
            // The provider's least-privilege role; a pod that does not run within 8 s fails.
            KubeLauncher::builder(c.provider_client())
                .start_timeout(Duration::from_secs(8))
                .build()
                .unwrap(),
        ))
        .tenant_funds(Amount(50_000_000))
        .bid_window(Duration::from_millis(200))
        .build()
        .await
        .unwrap();

    // A pod that never starts (its image cannot be pulled) fails that launch with the waiting
    // reason within the start timeout; the rent flow refunds the lock and fails over to the
    // next bid. With the only provider gone the rent fails, naming why, nothing is billed
    // and the tenant is refunded in full.
    let before = market.balance(market.tenant()).await.unwrap();
    let stuck = Workload::command(["python", "train.py"])
        .image("registry.invalid/missing:1")
        .env("SPHERON_FAKE_WAITING", "ImagePullBackOff");
    let err = tokio::time::timeout(Duration::from_secs(60), market.rent(request(), stuck))
        .await
        .expect("the start timeout ends the rent")
        .expect_err("the workload never ran");
    assert!(
        matches!(
            &err,
            spheron::Error::NoMatch { rejected, .. }
                if rejected.iter().any(|r| matches!(
                    &r.reason,
                    spheron::RejectReason::NotStarted(why) if why.contains("ImagePullBackOff")
                ))
        ),
        "{err}"
    );
    let after = market.balance(market.tenant()).await.unwrap();
    assert_eq!(after, before, "refunded in full, nothing locked");
    assert!(
        c.namespaces_with("app.kubernetes.io/managed-by=spheron")
            .await
            .unwrap()
            .is_empty(),
        "the failed launch left no namespace"
    );

    // Completes when the pod succeeds; the logs come through the API server.
    let lease = market.rent(request(), job("0")).await.unwrap();
    let ns = format!("spheron-{}", lease.id());
    assert!(namespace_exists(&c, &ns).await);
    let lines: Vec<String> = lease
        .logs()
        .unwrap()
        .filter(|l| std::future::ready(l.source == LogSource::Stdout))
        .map(|l| l.line)
        .collect()
        .await;
    assert_eq!(lines, ["step 1 loss=0.8", "step 2 loss=0.4"]);
    let report = tokio::time::timeout(Duration::from_secs(60), lease.wait())
        .await
        .unwrap();
    assert_eq!(report.state, LeaseState::Closed(CloseReason::Completed));
    assert!(!namespace_exists(&c, &ns).await, "{ns} must be gone");
    // Billed from the container's start to its end: the 2 s run (kwok's script), not the
    // launch before it nor the log drain and namespace deletion after it.
    let billed = report.settlement.as_ref().unwrap().seconds;
    assert!((1..=6).contains(&billed), "billed {billed} s for a 2 s run");

    // Fails with the pod's exit code.
    let lease = market.rent(request(), job("2")).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), lease.wait())
        .await
        .unwrap();
    assert_eq!(
        report.state,
        LeaseState::Closed(CloseReason::WorkloadFailed { exit_code: Some(2) })
    );

    // A tenant stop deletes the namespace.
    let forever =
        Workload::command(["python", "serve.py"]).image("nvcr.io/nvidia/pytorch:24.05-py3");
    let lease = market.rent(request(), forever).await.unwrap();
    let ns = format!("spheron-{}", lease.id());
    assert_eq!(lease.state(), LeaseState::Active);
    let report = lease.stop().await.unwrap();
    assert_eq!(report.state, LeaseState::Closed(CloseReason::TenantStopped));
    assert!(
        !namespace_exists(&c, &ns).await,
        "{ns} must be gone after stop"
    );
}
