//! # spheron-k8s
//!
//! The Kubernetes backend of spheron:
//!
//! - [`KubeLauncher`], a [`WorkloadLauncher`] that runs each lease in its own namespace
//!   (labelled with the lease id) with a ResourceQuota for the leased GPUs, a NetworkPolicy that
//!   keeps other tenants out, and the workload as a Job (batch) or a Deployment plus Service
//!   (service) with `nvidia.com/gpu` limits, node affinity on `nvidia.com/gpu.product` and a
//!   toleration for the `nvidia.com/gpu` taint. Status comes from a pod watch, logs stream from
//!   the API server, and stopping or expiry deletes the namespace and waits until it is gone.
//! - [`KubeInventory`], a provider's free GPUs per node and model from node allocatable and
//!   product labels minus what bound pods request, and [`KubeProviderAgent`], which refreshes
//!   that inventory before every bid so that fragmented capacity is never offered.
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
