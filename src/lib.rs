//! # spheron
//!
//! Rent and offer GPUs on a decentralized compute marketplace.
//!
//! This facade re-exports the domain types and plug-point traits of [`spheron_core`], the
//! proof-of-GPU protocol of [`spheron_gpu`], and wires the embedded defaults into
//! [`Marketplace::local`]: an in-process market with a simulated provider fleet, an in-memory
//! escrow ledger, proof-of-GPU challenges with failover, and workloads run as local
//! subprocesses by [`LocalLauncher`].
//!
//! ```no_run
//! use spheron::prelude::*;
//!
//! # async fn demo() -> spheron::Result<()> {
//! let market = Marketplace::local().tenant_funds(Amount(50_000_000)).build().await?;
//! let request = GpuRequest::builder()
//!     .gpu("h100")
//!     .hours(2)
//!     .max_price_per_gpu_hour(Amount(3_000_000)) // 3.00 USD per GPU-hour
//!     .region("eu-west")
//!     .build()?;
//! let lease = market
//!     .rent(request, Workload::command(["python3", "train.py"]))
//!     .await?;
//! let report = lease.wait().await;
//! println!("{} on {}: cost {}", report.state, report.provider_name, report.cost);
//! # Ok(()) }
//! ```
//!
//! [`Marketplace::connect`] is the network mode: a tenant client for independent provider
//! nodes (see `spheron devnet`).
//!
//! Features: `k8s` (Kubernetes launcher), `cuda` (CUDA proof-of-GPU prover); `chain` is kept
//! for compatibility (the EVM backend is always built).

mod defaults;
pub mod fleet;
pub mod marketplace;
pub mod network;
pub mod torchrun;

pub use fleet::{ProviderSpec, SimFleet, SimProvider};
pub use marketplace::{LocalBuilder, Marketplace};
pub use network::{LeaseSummary, NetworkMarket, TenantConfig};
/// The EVM escrow, market, registry and anvil harness.
pub use spheron_chain as chain;
pub use spheron_core as core;
pub use spheron_core::*;
pub use spheron_gpu as gpu;
/// The Kubernetes launcher and GPU inventory (feature `k8s`).
#[cfg(feature = "k8s")]
pub use spheron_k8s as k8s;
/// The network parties: provider and operator nodes, gateway, tenant client.
pub use spheron_node as node;
pub use spheron_node::LocalLauncher;
pub use torchrun::Torchrun;

/// The names most programs need.
pub mod prelude {
    pub use crate::{LocalLauncher, Marketplace, SimFleet};
    pub use spheron_core::{
        AccountId, Amount, CloseReason, Error, GpuModel, GpuRequest, LeaseHandle, LeaseReport,
        LeaseState, Matcher, Result, Step, Token, Workload,
    };
}

/// The README's Rust snippets compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
