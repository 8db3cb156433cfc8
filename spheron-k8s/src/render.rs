//! The Kubernetes objects of one lease, built without touching the cluster, so that they can be
//! checked (and inspected by callers) before anything is created.

use crate::error::{Error, Result};
use crate::labels::*;
use crate::names::{validate_dns_label, validate_dns1035_label, validate_image};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, EnvVarSource, Namespace, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, PodTemplateSpec,
    ResourceQuota, ResourceQuotaSpec, ResourceRequirements, Secret, SecretKeySelector, Service,
    ServicePort, ServiceSpec, Toleration,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use spheron_core::{LaunchSpec, Workload, WorkloadKind};
use std::collections::{BTreeMap, BTreeSet};

/// Name of the lease's ResourceQuota.
pub const QUOTA_NAME: &str = "lease-quota";
/// Name of the lease's NetworkPolicy.
pub const NETWORK_POLICY_NAME: &str = "tenant-isolation";
/// Name of the Secret holding the workload's secret environment variables.
pub const SECRET_NAME: &str = "workload-secrets";
/// Name of the workload's container.
pub const CONTAINER_NAME: &str = "workload";

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
    /// The lease's namespace.
    pub namespace: Namespace,
    /// GPU and object quota matching the lease.
    pub quota: ResourceQuota,
    /// Keeps other tenants' namespaces out.
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
}

/// How objects are named and placed.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Namespaces are `<prefix>-<lease id>`.
    pub namespace_prefix: String,
    /// Pin the pod to the node the provider reserved (`LaunchSpec::node`), by `kubernetes.io/hostname`.
    pub pin_to_reserved_node: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            namespace_prefix: "spheron".to_string(),
            pin_to_reserved_node: false,
        }
    }
}

/// The namespace name of a lease.
pub fn namespace_for(prefix: &str, spec: &LaunchSpec) -> String {
    format!("{prefix}-{}", spec.lease)
}

/// Builds the objects for `workload` under `spec`, named `name`, checking every input first.
pub fn render(
    opts: &RenderOptions,
    spec: &LaunchSpec,
    workload: &Workload,
    name: &str,
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
    if spec.gpus == 0 {
        return Err(Error::InvalidField {
            field: "gpus",
            reason: "a lease needs at least one GPU".into(),
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
    let mut seen = BTreeSet::new();
    for p in &workload.ports {
        if *p == 0 {
            return Err(Error::InvalidField {
                field: "ports",
                reason: "port 0 cannot be exposed".into(),
            });
        }
        if !seen.insert(*p) {
            return Err(Error::InvalidField {
                field: "ports",
                reason: format!("port {p} is listed twice"),
            });
        }
    }
    let pin = match (&spec.node, opts.pin_to_reserved_node) {
        (Some(n), true) => {
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
        _ => None,
    };

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
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(ns_labels),
            ..Default::default()
        },
        ..Default::default()
    };

    let gpus = Quantity(spec.gpus.to_string());
    let service_kind = workload.kind == WorkloadKind::Service;
    let mut hard = BTreeMap::from([
        (format!("requests.{GPU_RESOURCE}"), gpus.clone()),
        ("pods".to_string(), Quantity("1".into())),
        (
            "services".to_string(),
            Quantity(
                if service_kind && !workload.ports.is_empty() {
                    "1"
                } else {
                    "0"
                }
                .into(),
            ),
        ),
        ("services.nodeports".to_string(), Quantity("0".into())),
        ("services.loadbalancers".to_string(), Quantity("0".into())),
    ]);
    hard.insert(
        "secrets".to_string(),
        Quantity(
            if workload.secrets.is_empty() {
                "0"
            } else {
                "1"
            }
            .into(),
        ),
    );
    let quota = ResourceQuota {
        metadata: meta(QUOTA_NAME, &labels),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..Default::default()
        }),
        ..Default::default()
    };

    // Ingress only from the lease's own pods and from namespaces that are not tenant
    // namespaces (the provider's ingress controller, monitoring); never from another lease.
    let network_policy = NetworkPolicy {
        metadata: meta(NETWORK_POLICY_NAME, &labels),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector::default()),
                        ..Default::default()
                    },
                    NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_expressions: Some(vec![LabelSelectorRequirement {
                                key: TENANT_LABEL.to_string(),
                                operator: "DoesNotExist".to_string(),
                                values: None,
                            }]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };

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

    let limits = BTreeMap::from([(GPU_RESOURCE.to_string(), gpus.clone())]);
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
    let pod_spec = |restart: &str| PodSpec {
        containers: vec![container.clone()],
        restart_policy: Some(restart.to_string()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
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
        network_policy,
        secret,
        workload: workload_objects,
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
            Err(Error::InvalidField { field: "ports", .. })
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
