//! `KubeLauncher` against a real kube-apiserver (with etcd, controller-manager, scheduler, and
//! kwok playing the GPU nodes' kubelets). One control plane serves every scenario in this file;
//! each scenario uses its own lease ids.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::ListParams;
use spheron_core::{
    Clock, GpuModel, LaunchSpec, LeaseId, ProviderId, Secret as SecretValue, SimClock, Timestamp,
    Workload, WorkloadId, WorkloadKind, WorkloadLauncher, WorkloadStatus,
};
use spheron_k8s::test_utils::{TestCluster, cluster_or_skip};
use spheron_k8s::{Error, KubeLauncher};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn spec(clock: &SimClock, lease: u64, model: GpuModel, gpus: u32) -> LaunchSpec {
    LaunchSpec {
        lease: LeaseId(lease),
        provider: ProviderId::from_label("k8s-test-provider"),
        model,
        gpus,
        node: None,
        ends_at: clock.now().add(Duration::from_secs(3600)),
    }
}

fn image() -> &'static str {
    "nvcr.io/nvidia/pytorch:24.05-py3"
}

async fn namespace_exists(c: &TestCluster, ns: &str) -> bool {
    Api::<Namespace>::all(c.client())
        .get_opt(ns)
        .await
        .expect("get namespace")
        .is_some()
}

async fn wait_status(l: &KubeLauncher, id: &WorkloadId, want: WorkloadStatus) {
    let mut rx = l.status_changes(id).expect("known workload");
    let reached = tokio::time::timeout(TIMEOUT, rx.wait_for(|s| *s == want))
        .await
        .is_ok();
    assert!(
        reached,
        "{id} never reached {want:?}, is {:?}",
        *rx.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launcher_against_a_real_api_server() {
    let Some(cluster) = cluster_or_skip("launcher_against_a_real_api_server").await else {
        return;
    };
    cluster
        .add_gpu_node("h100-node-a", "NVIDIA-H100-80GB-HBM3", 8)
        .await
        .expect("H100 node");
    cluster
        .add_gpu_node("l4-node-a", "NVIDIA-L4", 4)
        .await
        .expect("L4 node");
    let clock = Arc::new(SimClock::new(Timestamp(1_800_000_000_000)));
    let launcher = KubeLauncher::builder(cluster.client())
        .clock(clock.clone())
        .expiry_grace(Duration::ZERO)
        .deletion_timeout(Duration::from_secs(90))
        .build()
        .expect("launcher");

    exact_objects_for_a_two_h100_job(&cluster, &launcher, &clock).await;
    state_follows_pods_and_logs_arrive(&cluster, &launcher, &clock).await;
    failed_pods_fail_the_workload(&cluster, &launcher, &clock).await;
    expiry_tears_down(&cluster, &launcher, &clock).await;
    bad_input_is_rejected_before_anything_is_created(&cluster, &launcher, &clock).await;
    services_get_a_deployment_and_a_service(&cluster, &launcher, &clock).await;
}

async fn exact_objects_for_a_two_h100_job(c: &TestCluster, l: &KubeLauncher, clock: &SimClock) {
    let s = spec(clock, 1, GpuModel::H100Sxm, 2);
    let mut w = Workload::command(["python", "train.py", "--epochs", "3"])
        .image(image())
        .env("EPOCHS", "3");
    w.secrets
        .insert("HF_TOKEN".into(), SecretValue::new("hf_not_a_real_token"));
    let id = l.launch(&s, &w).await.expect("launch");
    let ns = "spheron-lease-1";
    assert_eq!(id.0, ns);
    let client = c.client();

    // Namespace, labelled with the lease.
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace");
    let labels = namespace.metadata.labels.expect("labels");
    assert_eq!(labels["spheron.io/lease"], "lease-1");
    assert_eq!(labels["spheron.io/tenant"], "true");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "spheron");

    // Quota: exactly the leased GPUs, one pod, no services.
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), ns)
        .get("lease-quota")
        .await
        .expect("quota");
    let hard = quota.spec.unwrap().hard.unwrap();
    let want: BTreeMap<String, Quantity> = [
        ("requests.nvidia.com/gpu", "2"),
        ("pods", "1"),
        ("services", "0"),
        ("services.nodeports", "0"),
        ("services.loadbalancers", "0"),
        ("secrets", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect();
    assert_eq!(hard, want);

    // Network policy: ingress only from this namespace's pods and non-tenant namespaces.
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .get("tenant-isolation")
        .await
        .expect("network policy")
        .spec
        .unwrap();
    assert_eq!(
        np.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    assert_eq!(np.pod_selector, Some(Default::default()));
    let from = np.ingress.unwrap()[0].from.clone().unwrap();
    assert_eq!(from.len(), 2);
    assert_eq!(from[0].pod_selector, Some(Default::default()));
    assert!(from[0].namespace_selector.is_none());
    let req = &from[1]
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (req.key.as_str(), req.operator.as_str()),
        ("spheron.io/tenant", "DoesNotExist")
    );

    // Secret holds the value; the pod spec only refers to it.
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("workload-secrets")
        .await
        .expect("secret");
    assert_eq!(
        secret.data.unwrap()["HF_TOKEN"].0,
        b"hf_not_a_real_token".to_vec()
    );

    // The Job: limits, affinity, toleration, env, labels.
    let job = Api::<Job>::namespaced(client.clone(), ns)
        .get("workload")
        .await
        .expect("job");
    assert_eq!(
        job.metadata.labels.as_ref().unwrap()["spheron.io/lease"],
        "lease-1"
    );
    let js = job.spec.unwrap();
    assert_eq!(js.backoff_limit, Some(0));
    assert_eq!(js.completions, Some(1));
    let tmpl = js.template;
    assert_eq!(
        tmpl.metadata.unwrap().labels.unwrap()["spheron.io/lease"],
        "lease-1"
    );
    let pod = tmpl.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let ctr = &pod.containers[0];
    assert_eq!(ctr.image.as_deref(), Some(image()));
    assert_eq!(
        ctr.command.as_deref(),
        Some(&["python", "train.py", "--epochs", "3"].map(String::from)[..])
    );
    let res = ctr.resources.clone().unwrap();
    let gpus = BTreeMap::from([("nvidia.com/gpu".to_string(), Quantity("2".into()))]);
    assert_eq!(res.limits, Some(gpus.clone()));
    assert_eq!(res.requests, Some(gpus));
    let env = ctr.env.clone().unwrap();
    assert_eq!(env[0].name, "EPOCHS");
    assert_eq!(env[0].value.as_deref(), Some("3"));
    assert_eq!(env[1].name, "HF_TOKEN");
    assert!(env[1].value.is_none());
    let sref = env[1]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (sref.name.as_str(), sref.key.as_str()),
        ("workload-secrets", "HF_TOKEN")
    );
    let terms = pod
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    let expr = &terms[0].match_expressions.as_ref().unwrap()[0];
    assert_eq!(expr.key, "nvidia.com/gpu.product");
    assert_eq!(expr.operator, "In");
    assert_eq!(
        expr.values.as_deref(),
        Some(
            &[
                "NVIDIA-H100-80GB-HBM3".to_string(),
                "NVIDIA-H100-SXM5-80GB".to_string()
            ][..]
        )
    );
    let tol = &pod.tolerations.unwrap()[0];
    assert_eq!(
        (
            tol.key.as_deref(),
            tol.operator.as_deref(),
            tol.effect.as_deref()
        ),
        (Some("nvidia.com/gpu"), Some("Exists"), Some("NoSchedule"))
    );

    // The scheduler placed it on the H100 node, and it runs.
    wait_status(l, &id, WorkloadStatus::Running).await;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("spheron.io/lease=lease-1"))
        .await
        .expect("pods");
    assert_eq!(pods.items.len(), 1);
    assert_eq!(
        pods.items[0].spec.as_ref().unwrap().node_name.as_deref(),
        Some("h100-node-a")
    );

    // Stop removes everything.
    l.stop(&id).await.expect("stop");
    assert!(
        !namespace_exists(c, ns).await,
        "namespace must be gone after stop"
    );
    assert_eq!(l.status(&id).await.unwrap(), WorkloadStatus::Stopped);
    let leftover = Api::<Pod>::all(client)
        .list(&ListParams::default().labels("spheron.io/lease=lease-1"))
        .await
        .unwrap();
    assert!(leftover.items.is_empty());
    // A second stop of a stopped lease is harmless.
    l.stop(&id).await.expect("second stop");
}

async fn state_follows_pods_and_logs_arrive(c: &TestCluster, l: &KubeLauncher, clock: &SimClock) {
    c.set_log_lines(&["epoch 1 loss=0.91", "epoch 2 loss=0.47", "saved checkpoint"])
        .expect("log file");
    let s = spec(clock, 2, GpuModel::H100Sxm, 1);
    let w = Workload::command(["python", "train.py"])
        .image(image())
        .env("SPHERON_FAKE_EXIT", "0")
        .env("SPHERON_FAKE_RUN", "3s");
    let id = l.launch(&s, &w).await.expect("launch");
    let mut rx = l.status_changes(&id).unwrap();
    let mut seen = vec![rx.borrow().clone()];
    let collect = async {
        while rx.changed().await.is_ok() {
            let s = rx.borrow().clone();
            let done = s.is_terminal();
            seen.push(s);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(TIMEOUT, collect)
        .await
        .expect("terminal status");
    assert_eq!(
        seen,
        vec![
            WorkloadStatus::Pending,
            WorkloadStatus::Running,
            WorkloadStatus::Succeeded
        ],
        "status must follow the pod: Pending, Running, Succeeded"
    );
    assert_eq!(l.wait(&id).await.unwrap(), WorkloadStatus::Succeeded);
    let lines: Vec<String> =
        tokio::time::timeout(TIMEOUT, l.logs(&id).unwrap().collect::<Vec<_>>())
            .await
            .expect("log stream ends after the workload")
            .into_iter()
            .filter(|l| l.source == spheron_core::LogSource::Stdout)
            .map(|l| l.line)
            .collect();
    assert_eq!(
        lines,
        ["epoch 1 loss=0.91", "epoch 2 loss=0.47", "saved checkpoint"]
    );
    // A finished lease leaves nothing behind, even before anyone calls stop.
    assert!(!namespace_exists(c, "spheron-lease-2").await);
    l.stop(&id).await.expect("stop");
    // Finished before stop: the status stays what the pod said.
    assert_eq!(l.status(&id).await.unwrap(), WorkloadStatus::Succeeded);
}

async fn failed_pods_fail_the_workload(c: &TestCluster, l: &KubeLauncher, clock: &SimClock) {
    let s = spec(clock, 3, GpuModel::L4, 1);
    let w = Workload::command(["python", "crash.py"])
        .image(image())
        .env("SPHERON_FAKE_EXIT", "3")
        .env("SPHERON_FAKE_RUN", "500ms");
    let id = l.launch(&s, &w).await.expect("launch");
    let st = tokio::time::timeout(TIMEOUT, l.wait(&id))
        .await
        .expect("ends")
        .unwrap();
    assert_eq!(st, WorkloadStatus::Failed { exit_code: Some(3) });
    assert!(!namespace_exists(c, "spheron-lease-3").await);
    l.stop(&id).await.expect("stop");
}

async fn expiry_tears_down(c: &TestCluster, l: &KubeLauncher, clock: &SimClock) {
    let mut s = spec(clock, 4, GpuModel::H100Sxm, 4);
    s.ends_at = clock.now().add(Duration::from_secs(60));
    let w = Workload::command(["python", "serve_forever.py"]).image(image());
    let id = l.launch(&s, &w).await.expect("launch");
    wait_status(l, &id, WorkloadStatus::Running).await;
    clock.advance(Duration::from_secs(59));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        namespace_exists(c, "spheron-lease-4").await,
        "not expired yet"
    );
    clock.advance(Duration::from_secs(2));
    wait_status(l, &id, WorkloadStatus::Stopped).await;
    assert!(!namespace_exists(c, "spheron-lease-4").await);
    let logs: Vec<String> = l.logs(&id).unwrap().map(|l| l.line).collect().await;
    assert!(logs.iter().any(|l| l.contains("lease expired")), "{logs:?}");
}

async fn bad_input_is_rejected_before_anything_is_created(
    c: &TestCluster,
    l: &KubeLauncher,
    clock: &SimClock,
) {
    let before = c
        .namespaces_with("app.kubernetes.io/managed-by=spheron")
        .await
        .unwrap();

    let bad_image = Workload::command(["python"]).image("NVCR.io/Bad Image:latest");
    let e = l
        .launch_named(
            &spec(clock, 10, GpuModel::H100Sxm, 1),
            &bad_image,
            "workload",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidImage { image, .. } if image == "NVCR.io/Bad Image:latest"),
        "{e}"
    );
    // Through the trait, the same rejection is a typed core error naming the field.
    let core = l
        .launch(&spec(clock, 10, GpuModel::H100Sxm, 1), &bad_image)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &core,
            spheron_core::Error::InvalidField { field: "image", .. }
        ),
        "{core}"
    );

    let ok = Workload::command(["python"]).image(image());
    let e = l
        .launch_named(&spec(clock, 11, GpuModel::H100Sxm, 9), &ok, "workload")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoNodeFits {
                model: GpuModel::H100Sxm,
                requested: 9,
                largest: 8
            }
        ),
        "{e}"
    );
    let e = l
        .launch_named(&spec(clock, 12, GpuModel::A100_80G, 1), &ok, "workload")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoNodeFits { largest: 0, .. }), "{e}");

    let e = l
        .launch_named(&spec(clock, 13, GpuModel::H100Sxm, 1), &ok, "Trainer_1")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidName { field: "name", name, .. } if name == "Trainer_1"),
        "{e}"
    );
    assert!(e.is_invalid_input() && !e.is_retryable());

    for lease in 10..=13 {
        assert!(!namespace_exists(c, &format!("spheron-lease-{lease}")).await);
    }
    let after = c
        .namespaces_with("app.kubernetes.io/managed-by=spheron")
        .await
        .unwrap();
    assert_eq!(
        before, after,
        "nothing may be created for rejected launches"
    );
    // Unknown workloads are typed errors too.
    assert!(
        l.status(&WorkloadId("spheron-lease-99".into()))
            .await
            .is_err()
    );
}

async fn services_get_a_deployment_and_a_service(
    c: &TestCluster,
    l: &KubeLauncher,
    clock: &SimClock,
) {
    let s = spec(clock, 5, GpuModel::L4, 2);
    let mut w = Workload::command(["vllm", "serve", "meta-llama/Llama-3.1-8B"])
        .image("vllm/vllm-openai:v0.6.0");
    w.kind = WorkloadKind::Service;
    w.ports = vec![8000];
    let id = l.launch(&s, &w).await.expect("launch");
    let ns = "spheron-lease-5";
    let dep = Api::<Deployment>::namespaced(c.client(), ns)
        .get("workload")
        .await
        .expect("deployment")
        .spec
        .unwrap();
    assert_eq!(dep.replicas, Some(1));
    assert_eq!(dep.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let svc = Api::<Service>::namespaced(c.client(), ns)
        .get("workload")
        .await
        .expect("service")
        .spec
        .unwrap();
    let port = &svc.ports.unwrap()[0];
    assert_eq!((port.port, port.name.as_deref()), (8000, Some("p-8000")));
    assert_eq!(svc.selector.unwrap()["spheron.io/lease"], "lease-5");
    wait_status(l, &id, WorkloadStatus::Running).await;
    let pods = Api::<Pod>::namespaced(c.client(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        pods.items[0].spec.as_ref().unwrap().node_name.as_deref(),
        Some("l4-node-a")
    );
    l.stop(&id).await.expect("stop");
    assert!(!namespace_exists(c, ns).await);
}
