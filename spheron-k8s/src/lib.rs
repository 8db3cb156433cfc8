//! # spheron-k8s
//!
//! The Kubernetes backend of spheron: a `WorkloadLauncher` that runs each lease in its own
//! namespace, and provider GPU inventory read from nodes.
//!
//! Status: the launcher arrives with the Kubernetes issue; until then this crate only fixes its
//! place in the workspace and re-exports the trait it will implement.

pub use spheron_core::WorkloadLauncher;
