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
    let _ = PROVIDER_CLIENT.set(cluster.provider_client());
    // The launcher runs as the shipped least-privilege role, not as a cluster admin.
    let launcher = KubeLauncher::builder(cluster.provider_client())
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
    start_failures_and_races(&cluster, &clock).await;
    reconcile_after_a_restart(&cluster, &launcher, &clock).await;
}

static PROVIDER_CLIENT: std::sync::OnceLock<kube::Client> = std::sync::OnceLock::new();

/// The least-privilege client the launchers of this file use.
fn l_client(_: &KubeLauncher) -> kube::Client {
    PROVIDER_CLIENT.get().cloned().expect("set at start")
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
        ("requests.cpu", "16"),
        ("limits.cpu", "16"),
        ("requests.memory", "128Gi"),
        ("limits.memory", "128Gi"),
        ("requests.ephemeral-storage", "200Gi"),
        ("limits.ephemeral-storage", "200Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect();
    assert_eq!(hard, want);

    // Network policy: ingress from this namespace's pods and the ingress namespace only;
    // egress to the own pods, cluster DNS, and the internet minus link-local and cluster ranges.
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .get("tenant-isolation")
        .await
        .expect("network policy")
        .spec
        .unwrap();
    assert_eq!(
        np.policy_types.as_deref(),
        Some(&["Ingress".to_string(), "Egress".to_string()][..])
    );
    assert_eq!(np.pod_selector, Some(Default::default()));
    let ingress = np.ingress.unwrap();
    assert_eq!(ingress.len(), 2);
    assert_eq!(
        ingress[0].from.as_ref().unwrap()[0].pod_selector,
        Some(Default::default())
    );
    let req = &ingress[1].from.as_ref().unwrap()[0]
        .namespace_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (req.key.as_str(), req.operator.as_str(), req.values.clone()),
        (
            "kubernetes.io/metadata.name",
            "In",
            Some(vec!["ingress-nginx".to_string()])
        )
    );
    let egress = np.egress.unwrap();
    assert_eq!(egress.len(), 3);
    let dns_ports: Vec<(i32, String)> = egress[1]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| match p.port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                (n, p.protocol.unwrap())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(dns_ports, [(53, "UDP".into()), (53, "TCP".into())]);
    let blocks: Vec<_> = egress[2]
        .to
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| p.ip_block.unwrap())
        .collect();
    assert_eq!(blocks[0].cidr, "0.0.0.0/0");
    assert_eq!(
        blocks[0].except.as_deref().unwrap(),
        [
            "169.254.0.0/16",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10"
        ]
        .map(String::from)
    );
    assert_eq!(blocks[1].cidr, "::/0");
    assert_eq!(
        blocks[1].except.as_deref().unwrap(),
        ["fe80::/10", "fc00::/7"].map(String::from)
    );

    // PodSecurity: enforce baseline, warn and audit restricted.
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");

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
    let js_deadline = js.active_deadline_seconds;
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
    let share: BTreeMap<String, Quantity> = [
        ("nvidia.com/gpu", "2"),
        ("cpu", "16"),
        ("memory", "128Gi"),
        ("ephemeral-storage", "200Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
    .collect();
    assert_eq!(res.limits, Some(share.clone()));
    assert_eq!(res.requests, Some(share));
    // Hardened: no privilege escalation, no capabilities, seccomp, non-root.
    let sc = ctr.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let psc = pod.security_context.clone().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    // /dev/shm is memory-backed and sized per GPU (8 GiB each by default).
    let shm = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "dshm")
        .unwrap()
        .empty_dir
        .clone()
        .unwrap();
    assert_eq!(shm.medium.as_deref(), Some("Memory"));
    assert_eq!(shm.size_limit, Some(Quantity("16Gi".into())));
    assert!(
        ctr.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "dshm" && m.mount_path == "/dev/shm")
    );
    // The Job's own deadline backs the launcher's expiry up: the paid hour plus the grace.
    assert_eq!(js_deadline, Some(3600));
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
    // Requests equal limits for every resource: the API server classes the pod Guaranteed.
    assert_eq!(
        pods.items[0].status.as_ref().unwrap().qos_class.as_deref(),
        Some("Guaranteed")
    );
    // The tenant pod was admitted; a pod asking for privileges (host network, added
    // capabilities) in the same namespace is refused by PodSecurity admission, even for a
    // cluster admin. (`privileged: true` itself is refused earlier by this API server's
    // `--allow-privileged=false`.)
    let privileged: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape"},
        "spec": {"hostNetwork": true, "containers": [{
            "name": "x",
            "image": "busybox",
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}}
        }]}
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(client.clone(), ns)
        .create(&Default::default(), &privileged)
        .await
        .expect_err("a privileged pod must be refused");
    match refused {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("PodSecurity"), "{}", s.message);
            assert!(s.message.contains("baseline"), "{}", s.message);
            assert!(s.message.contains("hostNetwork"), "{}", s.message);
        }
        other => panic!("unexpected error {other}"),
    }
    // The launcher's own role cannot create pods directly, nor read secrets.
    let lc = l_client(l);
    let direct = Api::<Pod>::namespaced(lc.clone(), ns)
        .create(&Default::default(), &privileged)
        .await
        .expect_err("the provider role creates no pods");
    assert!(
        matches!(direct, kube::Error::Api(ref s) if s.code == 403),
        "{direct}"
    );
    let read = Api::<Secret>::namespaced(lc, ns)
        .get("workload-secrets")
        .await
        .expect_err("the provider role reads no secrets");
    assert!(
        matches!(read, kube::Error::Api(ref s) if s.code == 403),
        "{read}"
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
        vec![WorkloadStatus::Running, WorkloadStatus::Succeeded],
        "launch resolves once the container runs; then the status follows the pod"
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
    // `wait` resolves when the pod ends (the clock stops there); `stop` finishes the clean-up.
    l.stop(&id).await.expect("stop");
    assert!(!namespace_exists(c, "spheron-lease-3").await);
    assert_eq!(
        l.status(&id).await.unwrap(),
        WorkloadStatus::Failed { exit_code: Some(3) }
    );
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

async fn start_failures_and_races(c: &TestCluster, clock: &Arc<SimClock>) {
    let quick = KubeLauncher::builder(c.provider_client())
        .clock(clock.clone())
        .start_timeout(Duration::from_secs(6))
        .build()
        .expect("launcher");

    // A pod that never starts (its image cannot be pulled) fails the launch with the reason,
    // and leaves nothing behind.
    let stuck = Workload::command(["python", "train.py"])
        .image("registry.invalid/nothing:here")
        .env("SPHERON_FAKE_WAITING", "ImagePullBackOff");
    let e = quick
        .launch_named(&spec(clock, 20, GpuModel::H100Sxm, 1), &stuck, "workload")
        .await
        .unwrap_err();
    match &e {
        Error::NotStarted {
            namespace, reason, ..
        } => {
            assert_eq!(namespace, "spheron-lease-20");
            assert!(reason.contains("ImagePullBackOff"), "{reason}");
        }
        other => panic!("expected NotStarted, got {other}"),
    }
    assert!(e.is_retryable());
    assert!(!namespace_exists(c, "spheron-lease-20").await);
    // Through the trait, the typed core error.
    let core: spheron_core::Error = e.into();
    assert!(
        matches!(core, spheron_core::Error::NotStarted { .. }),
        "{core}"
    );

    // Two leases race for all 8 GPUs of the node: exactly one runs, the other fails to start
    // with the scheduler's reason.
    let w = Workload::command(["python", "serve.py"]).image(image());
    let (sa, sb) = (
        spec(clock, 21, GpuModel::H100Sxm, 8),
        spec(clock, 22, GpuModel::H100Sxm, 8),
    );
    let (a, b) = tokio::join!(quick.launch(&sa, &w), quick.launch(&sb, &w));
    let (won, lost) = match (a, b) {
        (Ok(id), Err(e)) | (Err(e), Ok(id)) => (id, e),
        (a, b) => panic!("exactly one may win: {a:?} {b:?}"),
    };
    assert_eq!(quick.status(&won).await.unwrap(), WorkloadStatus::Running);
    match &lost {
        spheron_core::Error::NotStarted { reason, .. } => assert!(
            reason.contains("Insufficient nvidia.com/gpu") || reason.contains("FailedScheduling"),
            "{reason}"
        ),
        other => panic!("expected NotStarted, got {other}"),
    }

    // A launch whose future is dropped (the tenant gave up) leaves no objects.
    let cancelled = tokio::time::timeout(
        Duration::from_secs(2),
        quick.launch(&spec(clock, 23, GpuModel::L4, 1), &stuck),
    )
    .await;
    assert!(cancelled.is_err(), "the launch was still waiting");
    let gone = async {
        while namespace_exists(c, "spheron-lease-23").await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, gone)
        .await
        .expect("a cancelled launch's namespace is deleted");
    quick.stop(&won).await.expect("stop");
}

async fn reconcile_after_a_restart(c: &TestCluster, l: &KubeLauncher, clock: &Arc<SimClock>) {
    // A live lease of the launcher that "crashes".
    let w = Workload::command(["python", "serve.py"]).image(image());
    let live = l
        .launch(&spec(clock, 30, GpuModel::L4, 1), &w)
        .await
        .expect("launch");
    // An orphan: a lease namespace whose launch died before its workload was created.
    let objects = l
        .render(&spec(clock, 31, GpuModel::L4, 1), &w)
        .expect("render");
    Api::<Namespace>::all(c.client())
        .create(&Default::default(), &objects.namespace)
        .await
        .expect("orphan namespace");
    // An expired lease (its paid time ended an hour ago).
    let mut old = spec(clock, 32, GpuModel::L4, 1);
    old.ends_at = Timestamp(clock.now().0 - 3_600_000);
    let expired = l.render(&old, &w).expect("render");
    Api::<Namespace>::all(c.client())
        .create(&Default::default(), &expired.namespace)
        .await
        .expect("expired namespace");

    // A new launcher (the restarted provider) knows nothing until it reconciles.
    let restarted = KubeLauncher::builder(c.provider_client())
        .clock(clock.clone())
        .state_retention(Duration::from_secs(1))
        .build()
        .expect("launcher");
    assert!(restarted.status(&live).await.is_err());
    let r = restarted.reconcile().await.expect("reconcile");
    assert_eq!(r.reattached, vec![live.clone()]);
    assert_eq!(
        r.deleted,
        vec![
            "spheron-lease-31".to_string(),
            "spheron-lease-32".to_string()
        ]
    );
    assert!(!namespace_exists(c, "spheron-lease-31").await);
    assert!(!namespace_exists(c, "spheron-lease-32").await);
    wait_status(&restarted, &live, WorkloadStatus::Running).await;
    // A second reconcile finds nothing new.
    assert_eq!(restarted.reconcile().await.unwrap(), Default::default());
    restarted.stop(&live).await.expect("stop");
    assert!(!namespace_exists(c, "spheron-lease-30").await);
    // The stopped lease's state is pruned after the retention.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(restarted.status(&live).await.is_err(), "state pruned");
    assert!(restarted.workloads().is_empty());
    // Stopping a pruned lease whose namespace is gone is harmless.
    restarted.stop(&live).await.expect("stop after prune");
}
