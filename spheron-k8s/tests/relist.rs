//! A lease's watch across a partition long enough that its resource version is compacted away:
//! the resumed watch gets `410 Gone`, the watcher relists, and a pod deleted in the gap is
//! dropped (the lease fails instead of reading Running until expiry). Real API server (pod
//! watches served from etcd, so compaction reaches them), the launcher behind a TCP proxy that
//! the test severs, running as the shipped least-privilege role.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, WatchEvent, WatchParams};
use spheron_core::{
    Clock, GpuModel, LaunchSpec, LeaseId, ProviderId, SimClock, Timestamp, Workload,
    WorkloadLauncher, WorkloadStatus,
};
use spheron_k8s::KubeLauncher;
use spheron_k8s::test_utils::{ClusterOptions, CutProxy, cluster_with_or_skip};
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_410_drops_pods_deleted_in_the_gap() {
    let opts = ClusterOptions {
        pod_watch_cache: false,
    };
    let Some(cluster) =
        cluster_with_or_skip("a_relist_after_410_drops_pods_deleted_in_the_gap", &opts).await
    else {
        return;
    };
    cluster
        .add_gpu_node("h100-node-r", "NVIDIA-H100-80GB-HBM3", 8)
        .await
        .expect("H100 node");
    let proxy = CutProxy::start(cluster.api_addr()).await.expect("proxy");
    let clock = Arc::new(SimClock::new(Timestamp(1_800_000_000_000)));
    let launcher = KubeLauncher::builder(
        cluster
            .provider_client_via(proxy.url())
            .await
            .expect("client"),
    )
    .clock(clock.clone())
    .build()
    .expect("launcher");
    let spec = LaunchSpec {
        lease: LeaseId(40),
        provider: ProviderId::from_label("k8s-test-provider"),
        model: GpuModel::H100Sxm,
        gpus: 1,
        node: None,
        ends_at: clock.now().add(Duration::from_secs(3600)),
    };
    // A batch workload that runs until its pod goes.
    let w = Workload::command(["python", "train.py"]).image("nvcr.io/nvidia/pytorch:24.05-py3");
    let id = launcher.launch(&spec, &w).await.expect("launch");
    let ns = id.0.clone();
    assert_eq!(launcher.status(&id).await.unwrap(), WorkloadStatus::Running);
    let admin = cluster.client();
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    let seen = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(seen.items.len(), 1);
    // The newest resource version the launcher can have seen is this one or older.
    let before_cut = seen.metadata.resource_version.clone().unwrap();

    // The partition: the launcher's watches drop and cannot reconnect.
    proxy.cut();
    // Meanwhile the Job and its pod are deleted.
    Api::<Job>::namespaced(admin.clone(), &ns)
        .delete("workload", &DeleteParams::background())
        .await
        .unwrap();
    pods.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
        &ListParams::default(),
    )
    .await
    .unwrap();
    let emptied = async {
        while !pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, emptied)
        .await
        .expect("the pod is deleted");
    // One more write elsewhere, then everything before it is compacted away.
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "after-the-gap"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let rev = cluster.compact_etcd().await.expect("compact etcd");
    assert!(rev > before_cut.parse::<i64>().unwrap());
    // What the launcher's resumed watch will meet: 410 Gone for the old resource version.
    let mut probe = pods
        .watch(&WatchParams::default(), &before_cut)
        .await
        .expect("watch starts")
        .boxed();
    match tokio::time::timeout(TIMEOUT, probe.next()).await.unwrap() {
        Some(Ok(WatchEvent::Error(s))) => assert_eq!(s.code, 410, "{s:?}"),
        other => panic!("expected 410 Gone for a compacted resource version, got {other:?}"),
    }
    drop(probe);
    // Cut off, the launcher still believes the pod runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(launcher.status(&id).await.unwrap(), WorkloadStatus::Running);

    // Reconnected: the resumed watch gets 410, the relist misses the pod, and the lease ends.
    proxy.restore();
    let mut rx = launcher.status_changes(&id).unwrap();
    let ended = tokio::time::timeout(TIMEOUT, rx.wait_for(|s| s.is_terminal()))
        .await
        .map(|r| r.map(|s| s.clone()));
    match ended {
        Ok(Ok(WorkloadStatus::Failed { exit_code: None })) => {}
        other => panic!("expected Failed after the relist, got {other:?}"),
    }
    let mut logs = launcher.logs(&id).unwrap();
    let mut lines = Vec::new();
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(5), logs.next()).await {
        lines.push(l.line);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("was deleted before it finished")),
        "{lines:?}"
    );
    // The finished lease's namespace is cleaned up as usual.
    let gone = async {
        while Api::<Namespace>::all(admin.clone())
            .get_opt(&ns)
            .await
            .unwrap()
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), gone)
        .await
        .expect("namespace deleted");
}
