//! The Kubernetes objects of one lease, built without touching the cluster, so that they can be
//! checked (and inspected by callers) before anything is created.

use crate::error::{Error, Result};
use crate::labels::*;
use crate::names::{validate_dns_label, validate_dns1035_label, validate_image};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceQuota, ResourceQuotaSpec, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use spheron_core::{LaunchSpec, Workload, WorkloadKind};
use std::collections::BTreeMap;

/// Name of the lease's ResourceQuota.
pub const QUOTA_NAME: &str = "lease-quota";
/// Name of the lease's LimitRange.
pub const LIMIT_RANGE_NAME: &str = "lease-limits";
/// Name of the lease's NetworkPolicy.
pub const NETWORK_POLICY_NAME: &str = "tenant-isolation";
/// Name of the Secret holding the workload's secret environment variables.
pub const SECRET_NAME: &str = "workload-secrets";
/// Name of the workload's container.
pub const CONTAINER_NAME: &str = "workload";
/// Name of the memory-backed volume mounted at `/dev/shm`.
pub const SHM_VOLUME: &str = "dshm";
/// Ranges tenant pods may never reach, whatever the configuration: link-local (the cloud
/// metadata address 169.254.169.254 among them) for IPv4 and IPv6.
pub const ALWAYS_BLOCKED: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// The workload object of a lease.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkloadObjects {
    /// Batch work: a Job that runs one pod to completion, never retried.
    Job(Box<Job>),
    /// A long-running service: a Deployment of one replica, and a Service when it exposes ports.
    Service {
        /// The Deployment.
        deployment: Box<Deployment>,
        /// The ClusterIP Service, `None` when the workload exposes no port.
        service: Option<Box<Service>>,
    },
}

/// Everything created in the cluster for one lease, in creation order.
///
/// `Debug` prints the secret's keys, never its values.
#[derive(Clone, PartialEq)]
pub struct LeaseObjects {
    /// The lease's namespace, with PodSecurity labels and the annotations the start-up
    /// reconcile reads.
    pub namespace: Namespace,
    /// GPU, CPU, memory, ephemeral-storage and object quota matching the lease.
    pub quota: ResourceQuota,
    /// Container defaults and maxima equal to the lease's share.
    pub limit_range: LimitRange,
    /// Keeps other tenants out and the cluster's own networks unreachable.
    pub network_policy: NetworkPolicy,
    /// Secret environment variables, `None` when there are none.
    pub secret: Option<Secret>,
    /// The workload.
    pub workload: WorkloadObjects,
}

impl std::fmt::Debug for LeaseObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret_keys: Option<Vec<&String>> = self
            .secret
            .as_ref()
            .map(|s| s.data.iter().flat_map(|d| d.keys()).collect());
        f.debug_struct("LeaseObjects")
            .field("namespace", &self.namespace)
            .field("quota", &self.quota)
            .field("limit_range", &self.limit_range)
            .field("network_policy", &self.network_policy)
            .field("secret_keys", &secret_keys)
            .field("workload", &self.workload)
            .finish()
    }
}

impl LeaseObjects {
    /// The namespace's name.
    pub fn namespace_name(&self) -> &str {
        self.namespace.metadata.name.as_deref().unwrap_or_default()
    }

    /// The pod spec of the workload's template.
    pub fn pod_spec(&self) -> Option<&PodSpec> {
        match &self.workload {
            WorkloadObjects::Job(j) => j.spec.as_ref()?.template.spec.as_ref(),
            WorkloadObjects::Service { deployment, .. } => {
                deployment.spec.as_ref()?.template.spec.as_ref()
            }
        }
    }
}

/// What each leased GPU brings with it. Requests equal limits, so tenant pods are Guaranteed
/// QoS (the last to be evicted), and the lease's quota holds exactly this much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerGpu {
    /// CPU, in millicores (default 8000: 8 cores).
    pub cpu_millis: u64,
    /// Memory, in MiB (default 65536: 64 GiB). The `/dev/shm` volume is memory too and counts
    /// against this limit.
    pub memory_mib: u64,
    /// Ephemeral storage (container writable layer, logs, `emptyDir`), in MiB (default 102400).
    pub ephemeral_storage_mib: u64,
    /// Size of the memory-backed `/dev/shm`, in MiB (default 8192; PyTorch DataLoader workers
    /// share batches through it and crash with the runtime's 64 MiB default).
    pub shm_mib: u64,
}

impl Default for PerGpu {
    fn default() -> Self {
        PerGpu {
            cpu_millis: 8_000,
            memory_mib: 65_536,
            ephemeral_storage_mib: 102_400,
            shm_mib: 8_192,
        }
    }
}

/// Options of one lease that differ from the launcher's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Let the image run as the user it names, root included (`runAsNonRoot` off, no
    /// `runAsUser`). For images that cannot run as another user; the pod stays within
    /// PodSecurity `baseline` (no privilege escalation, no capabilities, seccomp on), and the
    /// API server warns that it is not `restricted`. Default off.
    pub allow_root: bool,
    /// Run the pod under this RuntimeClass (for example `gvisor` or `kata`) instead of the
    /// launcher's.
    pub runtime_class: Option<String>,
}

/// How objects are named, placed and confined.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Namespaces are `<prefix>-<lease id>`.
    pub namespace_prefix: String,
    /// Pin the pod to the node the provider reserved (`LaunchSpec::node`), by `kubernetes.io/hostname`.
    pub pin_to_reserved_node: bool,
    /// CPU, memory, ephemeral storage and `/dev/shm` per GPU.
    pub per_gpu: PerGpu,
    /// The user id tenant containers run as unless the lease allows root (default 1000).
    pub run_as_user: i64,
    /// Mount the root filesystem read-only (with a writable `emptyDir` at `/tmp`). Default off:
    /// most ML images write to their home, caches and working directory.
    pub read_only_root_filesystem: bool,
    /// The RuntimeClass of tenant pods (`None`: the cluster's default runtime).
    pub runtime_class: Option<String>,
    /// Destinations tenant pods may not reach, besides [`ALWAYS_BLOCKED`]: the cluster's pod,
    /// service and node ranges. Default: the private IPv4 ranges (10/8, 172.16/12, 192.168/16),
    /// carrier-grade NAT (100.64/10) and IPv6 unique-local (fc00::/7), which hold the pod,
    /// service and node networks of common clusters; set the exact ranges of yours.
    pub blocked_cidrs: Vec<String>,
    /// The namespace of the cluster DNS (default `kube-system`).
    pub dns_namespace: String,
    /// The label (`key`, `value`) of the cluster DNS pods (default `k8s-app=kube-dns`).
    pub dns_pod_label: (String, String),
    /// Namespaces whose pods may connect to tenant pods (the provider's ingress controller);
    /// default `ingress-nginx`. Empty: only the lease's own pods.
    pub ingress_namespaces: Vec<String>,
    /// PodSecurity level enforced on lease namespaces (default `baseline`).
    pub pod_security_enforce: String,
    /// PodSecurity level warned and audited on lease namespaces (default `restricted`).
    pub pod_security_warn: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            namespace_prefix: "spheron".to_string(),
            pin_to_reserved_node: false,
            per_gpu: PerGpu::default(),
            run_as_user: 1000,
            read_only_root_filesystem: false,
            runtime_class: None,
            blocked_cidrs: [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
            dns_namespace: "kube-system".to_string(),
            dns_pod_label: ("k8s-app".to_string(), "kube-dns".to_string()),
            ingress_namespaces: vec!["ingress-nginx".to_string()],
            pod_security_enforce: "baseline".to_string(),
            pod_security_warn: "restricted".to_string(),
        }
    }
}

fn config(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        field,
        reason: reason.into(),
    }
}

/// Whether `cidr` is an IPv4 (`Some(false)`) or IPv6 (`Some(true)`) range; a typed error naming
/// `cidr` otherwise.
pub fn cidr_is_v6(cidr: &str) -> Result<bool> {
    let bad = |why: &str| {
        config(
            "blocked_cidrs",
            format!("`{cidr}` is not a CIDR range: {why}"),
        )
    };
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| bad("expected <address>/<prefix length>"))?;
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
    let len: u8 = len.parse().map_err(|_| bad("bad prefix length"))?;
    let max = if ip.is_ipv6() { 128 } else { 32 };
    if len > max {
        return Err(bad(&format!("the prefix length is at most {max}")));
    }
    Ok(ip.is_ipv6())
}

impl RenderOptions {
    /// Checks every option (once, when the launcher is built).
    pub fn validate(&self) -> Result<()> {
        let g = &self.per_gpu;
        for (field, v) in [
            ("per_gpu.cpu_millis", g.cpu_millis),
            ("per_gpu.memory_mib", g.memory_mib),
            ("per_gpu.ephemeral_storage_mib", g.ephemeral_storage_mib),
            ("per_gpu.shm_mib", g.shm_mib),
        ] {
            if v == 0 || v > 1 << 40 {
                return Err(config(field, format!("{v} is out of range (1..=2^40)")));
            }
        }
        if g.shm_mib >= g.memory_mib {
            return Err(config(
                "per_gpu.shm_mib",
                "/dev/shm is memory: it must be smaller than per_gpu.memory_mib",
            ));
        }
        if self.run_as_user <= 0 {
            return Err(config(
                "run_as_user",
                "must be a non-root user id (greater than 0)",
            ));
        }
        for c in &self.blocked_cidrs {
            cidr_is_v6(c)?;
        }
        validate_dns_label("dns_namespace", &self.dns_namespace)
            .map_err(|e| config("dns_namespace", e.to_string()))?;
        for n in &self.ingress_namespaces {
            validate_dns_label("ingress_namespaces", n)
                .map_err(|e| config("ingress_namespaces", e.to_string()))?;
        }
        if let Some(rc) = &self.runtime_class {
            validate_runtime_class(rc).map_err(|e| config("runtime_class", e.to_string()))?;
        }
        for (field, level) in [
            ("pod_security_enforce", &self.pod_security_enforce),
            ("pod_security_warn", &self.pod_security_warn),
        ] {
            if !["privileged", "baseline", "restricted"].contains(&level.as_str()) {
                return Err(config(
                    field,
                    format!(
                        "`{level}` is not a PodSecurity level (privileged, baseline, restricted)"
                    ),
                ));
            }
        }
        if self.pod_security_enforce == "privileged" {
            return Err(config(
                "pod_security_enforce",
                "tenant namespaces must enforce at least `baseline`",
            ));
        }
        Ok(())
    }
}

fn validate_runtime_class(rc: &str) -> Result<()> {
    if rc.len() > 253 {
        return Err(Error::InvalidName {
            field: "runtime_class",
            name: rc.to_string(),
            reason: "at most 253 characters".into(),
        });
    }
    rc.split('.')
        .try_for_each(|l| validate_dns_label("runtime_class", l))
}

/// A CPU quantity in the API server's canonical form (`8`, `500m`).
pub fn cpu_quantity(millis: u64) -> Quantity {
    if millis.is_multiple_of(1000) {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

/// A byte quantity given in MiB, in the API server's canonical form (`64Gi`, `1536Mi`).
pub fn mib_quantity(mib: u64) -> Quantity {
    let mut v = mib;
    let mut unit = 0;
    while v > 0 && v.is_multiple_of(1024) && unit < 3 {
        v /= 1024;
        unit += 1;
    }
    Quantity(format!("{v}{}", ["Mi", "Gi", "Ti", "Pi"][unit]))
}

/// The namespace name of a lease.
pub fn namespace_for(prefix: &str, spec: &LaunchSpec) -> String {
    format!("{prefix}-{}", spec.lease)
}

/// Builds the objects for `workload` under `spec`, named `name`, with the launcher's defaults
/// and no `activeDeadlineSeconds`; see [`render_with`].
pub fn render(
    opts: &RenderOptions,
    spec: &LaunchSpec,
    workload: &Workload,
    name: &str,
) -> Result<LeaseObjects> {
    render_with(opts, &LeaseOptions::default(), spec, workload, name, None)
}

/// Builds the objects for `workload` under `spec`, named `name`, checking every input first.
/// `active_deadline_secs`, when given, becomes the Job's `activeDeadlineSeconds`, a backstop
/// that ends the pods even if the launcher is gone.
pub fn render_with(
    opts: &RenderOptions,
    lease_opts: &LeaseOptions,
    spec: &LaunchSpec,
    workload: &Workload,
    name: &str,
    active_deadline_secs: Option<i64>,
) -> Result<LeaseObjects> {
    workload.validate().map_err(Error::InvalidWorkload)?;
    validate_dns1035_label("name", name)?;
    let ns = namespace_for(&opts.namespace_prefix, spec);
    validate_dns_label("namespace", &ns)?;
    let Some(image) = workload.image.as_deref() else {
        return Err(Error::InvalidImage {
            image: String::new(),
            reason: "Kubernetes workloads need a container image".into(),
        });
    };
    validate_image(image)?;
    if spec.gpus == 0 || spec.gpus > 1024 {
        return Err(Error::InvalidField {
            field: "gpus",
            reason: format!("{} GPUs: a lease holds 1 to 1024", spec.gpus),
        });
    }
    if product_labels(spec.model).is_empty() {
        return Err(Error::InvalidField {
            field: "model",
            reason: format!(
                "no nvidia.com/gpu.product label is known for {}",
                spec.model.name()
            ),
        });
    }
    if let Some(rc) = &lease_opts.runtime_class {
        validate_runtime_class(rc)?;
    }
    // Ports (1-65535, none twice, at most 16) are checked by `workload.validate()` above.
    let node = match &spec.node {
        Some(n) => {
            crate::names::validate_dns_label("node", n).or_else(|_| {
                // Node names are DNS subdomains: labels joined by dots.
                n.split('.')
                    .try_for_each(|l| validate_dns_label("node", l))
                    .and_then(|()| {
                        if n.len() > 253 {
                            Err(Error::InvalidName {
                                field: "node",
                                name: n.clone(),
                                reason: "a node name has at most 253 characters".into(),
                            })
                        } else {
                            Ok(())
                        }
                    })
            })?;
            Some(n.clone())
        }
        None => None,
    };
    let pin = node.clone().filter(|_| opts.pin_to_reserved_node);

    let lease = spec.lease.to_string();
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (LEASE_LABEL.to_string(), lease.clone()),
        (PROVIDER_LABEL.to_string(), provider_label(spec)),
    ]);
    let meta = |name: &str, labels: &BTreeMap<String, String>| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    };

    let mut ns_labels = labels.clone();
    ns_labels.insert(TENANT_LABEL.to_string(), "true".to_string());
    for (mode, level) in [
        ("enforce", &opts.pod_security_enforce),
        ("warn", &opts.pod_security_warn),
        ("audit", &opts.pod_security_warn),
    ] {
        ns_labels.insert(format!("pod-security.kubernetes.io/{mode}"), level.clone());
        ns_labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".to_string(),
        );
    }
    let mut ns_annotations = BTreeMap::from([
        (ENDS_AT_ANNOTATION.to_string(), spec.ends_at.0.to_string()),
        (WORKLOAD_NAME_ANNOTATION.to_string(), name.to_string()),
        (
            WORKLOAD_KIND_ANNOTATION.to_string(),
            match workload.kind {
                WorkloadKind::Batch => "batch",
                WorkloadKind::Service => "service",
            }
            .to_string(),
        ),
        (MODEL_ANNOTATION.to_string(), spec.model.name().to_string()),
        (GPUS_ANNOTATION.to_string(), spec.gpus.to_string()),
    ]);
    if let Some(n) = &node {
        ns_annotations.insert(NODE_ANNOTATION.to_string(), n.clone());
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(ns_labels),
            annotations: Some(ns_annotations),
            ..Default::default()
        },
        ..Default::default()
    };

    let n = u64::from(spec.gpus);
    let g = &opts.per_gpu;
    let gpus = Quantity(spec.gpus.to_string());
    let cpu = cpu_quantity(g.cpu_millis.saturating_mul(n));
    let memory = mib_quantity(g.memory_mib.saturating_mul(n));
    let ephemeral = mib_quantity(g.ephemeral_storage_mib.saturating_mul(n));
    let shm = mib_quantity(g.shm_mib.saturating_mul(n));
    let service_kind = workload.kind == WorkloadKind::Service;
    let count = |yes: bool| Quantity(if yes { "1" } else { "0" }.into());
    let mut hard = BTreeMap::from([
        (format!("requests.{GPU_RESOURCE}"), gpus.clone()),
        ("pods".to_string(), Quantity("1".into())),
        (
            "services".to_string(),
            count(service_kind && !workload.ports.is_empty()),
        ),
        ("services.nodeports".to_string(), Quantity("0".into())),
        ("services.loadbalancers".to_string(), Quantity("0".into())),
        ("secrets".to_string(), count(!workload.secrets.is_empty())),
    ]);
    for (res, q) in [
        ("cpu", &cpu),
        ("memory", &memory),
        ("ephemeral-storage", &ephemeral),
    ] {
        hard.insert(format!("requests.{res}"), q.clone());
        hard.insert(format!("limits.{res}"), q.clone());
    }
    let quota = ResourceQuota {
        metadata: meta(QUOTA_NAME, &labels),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        ..Default::default()
    };
    let share = BTreeMap::from([
        ("cpu".to_string(), cpu.clone()),
        ("memory".to_string(), memory.clone()),
        ("ephemeral-storage".to_string(), ephemeral.clone()),
    ]);
    let limit_range = LimitRange {
        metadata: meta(LIMIT_RANGE_NAME, &labels),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                max: Some(share.clone()),
                default: Some(share.clone()),
                default_request: Some(share.clone()),
                ..Default::default()
            }],
        }),
    };

    let network_policy = network_policy(opts, meta(NETWORK_POLICY_NAME, &labels))?;

    let secret = (!workload.secrets.is_empty()).then(|| Secret {
        metadata: meta(SECRET_NAME, &labels),
        type_: Some("Opaque".to_string()),
        data: Some(
            workload
                .secrets
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    });

    let mut env: Vec<EnvVar> = workload
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    env.extend(workload.secrets.keys().map(|k| EnvVar {
        name: k.clone(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: SECRET_NAME.to_string(),
                key: k.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }));

    let mut limits = share.clone();
    limits.insert(GPU_RESOURCE.to_string(), gpus.clone());
    let non_root = !lease_opts.allow_root;
    let seccomp = || SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    };
    let mut mounts = vec![VolumeMount {
        name: SHM_VOLUME.to_string(),
        mount_path: "/dev/shm".to_string(),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: SHM_VOLUME.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_string()),
            size_limit: Some(shm),
        }),
        ..Default::default()
    }];
    if opts.read_only_root_filesystem {
        mounts.push(VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "tmp".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(image.to_string()),
        command: (!workload.command.is_empty()).then(|| workload.command.clone()),
        env: (!env.is_empty()).then_some(env),
        ports: (!workload.ports.is_empty()).then(|| {
            workload
                .ports
                .iter()
                .map(|p| ContainerPort {
                    container_port: i32::from(*p),
                    name: Some(port_name(*p)),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                })
                .collect()
        }),
        resources: Some(ResourceRequirements {
            limits: Some(limits.clone()),
            requests: Some(limits),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            read_only_root_filesystem: Some(opts.read_only_root_filesystem),
            run_as_non_root: Some(non_root),
            run_as_user: non_root.then_some(opts.run_as_user),
            run_as_group: non_root.then_some(opts.run_as_user),
            seccomp_profile: Some(seccomp()),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let mut node_terms = vec![NodeSelectorRequirement {
        key: GPU_PRODUCT_LABEL.to_string(),
        operator: "In".to_string(),
        values: Some(
            product_labels(spec.model)
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
    }];
    if let Some(node) = pin {
        node_terms.push(NodeSelectorRequirement {
            key: "kubernetes.io/hostname".to_string(),
            operator: "In".to_string(),
            values: Some(vec![node]),
        });
    }
    labels.insert(WORKLOAD_LABEL.to_string(), name.to_string());
    let runtime_class = lease_opts
        .runtime_class
        .clone()
        .or_else(|| opts.runtime_class.clone());
    let pod_spec = |restart: &str| PodSpec {
        containers: vec![container.clone()],
        restart_policy: Some(restart.to_string()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        runtime_class_name: runtime_class.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(non_root),
            run_as_user: non_root.then_some(opts.run_as_user),
            run_as_group: non_root.then_some(opts.run_as_user),
            fs_group: non_root.then_some(opts.run_as_user),
            seccomp_profile: Some(seccomp()),
            ..Default::default()
        }),
        volumes: Some(volumes.clone()),
        affinity: Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(node_terms.clone()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tolerations: Some(vec![Toleration {
            key: Some(GPU_TAINT.to_string()),
            operator: Some("Exists".to_string()),
            effect: Some("NoSchedule".to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let template = |restart: &str| PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            ..Default::default()
        }),
        spec: Some(pod_spec(restart)),
    };

    let workload_objects = match workload.kind {
        WorkloadKind::Batch => WorkloadObjects::Job(Box::new(Job {
            metadata: meta(name, &labels),
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                completions: Some(1),
                parallelism: Some(1),
                active_deadline_seconds: active_deadline_secs.map(|s| s.max(1)),
                template: template("Never"),
                ..Default::default()
            }),
            ..Default::default()
        })),
        WorkloadKind::Service => {
            let selector = BTreeMap::from([
                (LEASE_LABEL.to_string(), lease.clone()),
                (WORKLOAD_LABEL.to_string(), name.to_string()),
            ]);
            let deployment = Deployment {
                metadata: meta(name, &labels),
                spec: Some(DeploymentSpec {
                    replicas: Some(1),
                    selector: LabelSelector {
                        match_labels: Some(selector.clone()),
                        ..Default::default()
                    },
                    // The lease holds exactly its GPUs: a rolling update would need twice as many.
                    strategy: Some(DeploymentStrategy {
                        type_: Some("Recreate".to_string()),
                        ..Default::default()
                    }),
                    template: template("Always"),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let service = (!workload.ports.is_empty()).then(|| {
                Box::new(Service {
                    metadata: meta(name, &labels),
                    spec: Some(ServiceSpec {
                        type_: Some("ClusterIP".to_string()),
                        selector: Some(selector),
                        ports: Some(
                            workload
                                .ports
                                .iter()
                                .map(|p| ServicePort {
                                    name: Some(port_name(*p)),
                                    port: i32::from(*p),
                                    target_port: Some(IntOrString::Int(i32::from(*p))),
                                    protocol: Some("TCP".to_string()),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            });
            WorkloadObjects::Service {
                deployment: Box::new(deployment),
                service,
            }
        }
    };

    Ok(LeaseObjects {
        namespace,
        quota,
        limit_range,
        network_policy,
        secret,
        workload: workload_objects,
    })
}

/// Ingress only from the lease's own pods and the allow-listed ingress namespaces. Egress
/// denied by default, then: the lease's own pods, the cluster DNS (port 53), and the internet
/// minus [`ALWAYS_BLOCKED`] and [`RenderOptions::blocked_cidrs`].
fn network_policy(opts: &RenderOptions, metadata: ObjectMeta) -> Result<NetworkPolicy> {
    let own_pods = || NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..Default::default()
    };
    let ns_named = |names: Vec<String>| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_string(),
            operator: "In".to_string(),
            values: Some(names),
        }]),
        ..Default::default()
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![own_pods()]),
        ..Default::default()
    }];
    if !opts.ingress_namespaces.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(ns_named(opts.ingress_namespaces.clone())),
                ..Default::default()
            }]),
            ..Default::default()
        });
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for c in ALWAYS_BLOCKED
        .iter()
        .map(|s| s.to_string())
        .chain(opts.blocked_cidrs.iter().cloned())
    {
        let list = if cidr_is_v6(&c)? { &mut v6 } else { &mut v4 };
        if !list.contains(&c) {
            list.push(c);
        }
    }
    let dns_port = |proto: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(proto.to_string()),
        ..Default::default()
    };
    let egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![own_pods()]),
            ..Default::default()
        },
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(ns_named(vec![opts.dns_namespace.clone()])),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([opts.dns_pod_label.clone()])),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![
                NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: "0.0.0.0/0".to_string(),
                        except: Some(v4),
                    }),
                    ..Default::default()
                },
                NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: "::/0".to_string(),
                        except: Some(v6),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
    ];
    Ok(NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    })
}

fn port_name(p: u16) -> String {
    format!("p-{p}")
}

/// Label values hold at most 63 characters: the provider id's hex form fits (42).
fn provider_label(spec: &LaunchSpec) -> String {
    let s = spec.provider.to_string();
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(63)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use spheron_core::{GpuModel, LeaseId, ProviderId, Secret, Timestamp};

    fn spec(gpus: u32) -> LaunchSpec {
        LaunchSpec {
            lease: LeaseId(7),
            provider: ProviderId::from_label("p"),
            model: GpuModel::H100Sxm,
            gpus,
            node: Some("gpu-node-1".into()),
            ends_at: Timestamp(1_000),
        }
    }

    #[test]
    fn job_carries_limits_affinity_toleration_and_secret_refs() {
        let mut w = Workload::command(["python", "train.py"])
            .image("nvcr.io/nvidia/pytorch:24.05-py3")
            .env("EPOCHS", "3");
        w.secrets.insert("HF_TOKEN".into(), Secret::new("hunter2"));
        let o = render(&RenderOptions::default(), &spec(2), &w, "workload").unwrap();
        assert_eq!(o.namespace_name(), "spheron-lease-7");
        let WorkloadObjects::Job(job) = &o.workload else {
            panic!("batch must be a Job")
        };
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()[GPU_RESOURCE],
            Quantity("2".into())
        );
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0].value.as_deref(), Some("3"));
        assert!(
            env[1].value.is_none(),
            "secret values never sit in the pod spec"
        );
        let shown = format!("{o:?}");
        assert!(shown.contains("HF_TOKEN") && !shown.contains("hunter2"));
        assert!(!shown.contains(&format!("{:?}", b"hunter2")[1..10]));
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some(GPU_TAINT)
        );
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
        let q = o.quota.spec.as_ref().unwrap().hard.as_ref().unwrap();
        assert_eq!(q["requests.nvidia.com/gpu"], Quantity("2".into()));
    }

    #[test]
    fn pinning_adds_the_hostname_term() {
        let w = Workload::command(["x"]).image("busybox");
        let opts = RenderOptions {
            pin_to_reserved_node: true,
            ..Default::default()
        };
        let o = render(&opts, &spec(1), &w, "workload").unwrap();
        let WorkloadObjects::Job(job) = &o.workload else {
            panic!()
        };
        let terms = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0]
            .match_expressions
            .clone()
            .unwrap();
        assert_eq!(terms.len(), 2);
        assert_eq!(
            terms[1].values.as_deref(),
            Some(&["gpu-node-1".to_string()][..])
        );
    }

    #[test]
    fn bad_input_is_typed() {
        let w = Workload::command(["x"]).image("Not A Ref");
        assert!(matches!(
            render(&RenderOptions::default(), &spec(1), &w, "workload"),
            Err(Error::InvalidImage { .. })
        ));
        let w = Workload::command(["x"]).image("busybox");
        assert!(matches!(
            render(&RenderOptions::default(), &spec(1), &w, "Trainer_1"),
            Err(Error::InvalidName { field: "name", .. })
        ));
        assert!(matches!(
            render(&RenderOptions::default(), &spec(0), &w, "workload"),
            Err(Error::InvalidField { field: "gpus", .. })
        ));
        let mut svc = w.clone();
        svc.ports = vec![80, 80];
        assert!(matches!(
            render(&RenderOptions::default(), &spec(1), &svc, "workload"),
            Err(Error::InvalidWorkload(spheron_core::Error::InvalidField {
                field: "ports",
                ..
            }))
        ));
        svc.ports = vec![0];
        assert!(matches!(
            render(&RenderOptions::default(), &spec(1), &svc, "workload"),
            Err(Error::InvalidWorkload(spheron_core::Error::InvalidField {
                field: "ports",
                ..
            }))
        ));
        let no_image = Workload::command(["x"]);
        assert!(matches!(
            render(&RenderOptions::default(), &spec(1), &no_image, "workload"),
            Err(Error::InvalidImage { .. })
        ));
    }

    #[test]
    fn services_get_a_deployment_and_a_service() {
        let mut w = Workload::command(["serve"]).image("vllm/vllm-openai:v0.6.0");
        w.kind = WorkloadKind::Service;
        w.ports = vec![8000];
        let o = render(&RenderOptions::default(), &spec(1), &w, "inference").unwrap();
        let WorkloadObjects::Service {
            deployment,
            service,
        } = &o.workload
        else {
            panic!()
        };
        assert_eq!(
            deployment
                .spec
                .as_ref()
                .unwrap()
                .strategy
                .as_ref()
                .unwrap()
                .type_
                .as_deref(),
            Some("Recreate")
        );
        let svc = service.as_ref().unwrap();
        assert_eq!(
            svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            8000
        );
    }
}
