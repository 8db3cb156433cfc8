//! # spheron-k8s
//!
//! The Kubernetes backend of spheron:
//!
//! - [`KubeLauncher`], a [`WorkloadLauncher`] that runs each lease in its own namespace
//!   (labelled with the lease id and PodSecurity `enforce: baseline`, `warn: restricted`) with a
//!   ResourceQuota and LimitRange for the leased GPUs and their CPU, memory and ephemeral
//!   storage, a NetworkPolicy (ingress from the lease's pods and the ingress namespaces only;
//!   egress to DNS and the internet only, never link-local or the cluster's ranges), and the
//!   workload as a Job (batch) or a Deployment plus Service (service) with `nvidia.com/gpu`
//!   limits, node affinity on `nvidia.com/gpu.product`, a toleration for the `nvidia.com/gpu`
//!   taint, a hardened non-root container (no privilege escalation, no capabilities, seccomp
//!   `RuntimeDefault`), Guaranteed QoS and a memory-backed `/dev/shm`. `launch` resolves once
//!   the container runs (billing starts then) or fails with [`Error::NotStarted`] after the start
//!   timeout; status comes from pod, Job and event watches, logs stream from the API server, and
//!   stopping or expiry deletes the namespace and waits until it is gone.
//!   [`KubeLauncher::reconcile`] reattaches or removes lease namespaces after a restart.
//! - [`KubeInventory`], a provider's free GPUs per node and model from node allocatable and
//!   product labels minus what pods (bound, or pending and about to bind) request, read from
//!   watch-fed caches and merged with the registry's in-flight reservations, and
//!   [`KubeProviderAgent`], which refreshes that inventory before every bid so that fragmented
//!   capacity is never offered.
//! - [`rbac`], the least-privilege ClusterRole both need (also shipped as
//!   `spheron-k8s/deploy/rbac.yaml`).
//!
//! Everything a launch can check without the cluster (image reference, DNS names, ports, GPU
//! count, environment names) is checked first; see [`render()`] for the exact objects.
//!
//! ```
//! use spheron_core::{GpuModel, LaunchSpec, LeaseId, ProviderId, Timestamp, Workload};
//! use spheron_k8s::render::{RenderOptions, WorkloadObjects, render};
//!
//! let spec = LaunchSpec {
//!     lease: LeaseId(7),
//!     provider: ProviderId::from_label("acme"),
//!     model: GpuModel::H100Sxm,
//!     gpus: 2,
//!     node: None,
//!     ends_at: Timestamp(0),
//! };
//! let job = Workload::command(["python", "train.py"]).image("nvcr.io/nvidia/pytorch:24.05-py3");
//! let objects = render(&RenderOptions::default(), &spec, &job, "workload")?;
//! assert_eq!(objects.namespace_name(), "spheron-lease-7");
//! assert!(matches!(objects.workload, WorkloadObjects::Job(_)));
//!
//! let bad = Workload::command(["x"]).image("Not A Reference");
//! assert!(render(&RenderOptions::default(), &spec, &bad, "workload").is_err());
//! # Ok::<(), spheron_k8s::Error>(())
//! ```
//!
//! Connecting to a cluster: `KubeLauncher::new(kube::Client::try_default().await?)` reads
//! `KUBECONFIG` or the in-cluster service account.

pub mod error;
pub mod inventory;
pub mod labels;
pub mod launcher;
pub mod names;
pub mod rbac;
pub mod render;
#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use error::{Error, Result};
pub use inventory::{KubeInventory, KubeProviderAgent, inventory_from};
/// The Kubernetes client and API types this crate is built on, so users need not match versions.
pub use k8s_openapi;
pub use kube;
pub use launcher::{KubeLauncher, KubeLauncherBuilder, Reconciled};
pub use render::{LeaseObjects, LeaseOptions, PerGpu, RenderOptions, WorkloadObjects, render};
pub use spheron_core::WorkloadLauncher;
