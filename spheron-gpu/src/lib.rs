//! # spheron-gpu
//!
//! Proof of GPU for spheron: a provider proves it has the compute it claims by doing a large,
//! fresh computation at the claimed model's speed, checked cheaply by the verifier.
//!
//! * [`catalog`]: datasheet peak rates, memory and bandwidth per model, calibrated rates and
//!   the timing thresholds derived from them;
//! * [`prf`]: the counter-based PRF generating the full-range int8 challenge matrices (same on
//!   CPU and GPU);
//! * [`merkle`]: BLAKE3 row commitments keyed by the session, leaves separated from nodes;
//! * [`attestation`]: the optional confidential-computing attestation of Hopper GPUs (SPDM
//!   measurement report signed by the GPU, certificate chain to NVIDIA's pinned root, nonce
//!   bound to the challenge session), and the typed "unsupported" elsewhere;
//! * [`binding`]: commitments signed by the provider's key, [`binding::SignedProver`];
//! * [`CpuProver`]: the CPU reference prover (with pacing and [`Fault`]s for simulation and
//!   attack tests); [`FreivaldsVerifier`]: the default verifier, `O(n^2)` per challenge;
//!   [`RecomputeVerifier`]: full recomputation, for small `n`;
//! * [`Simulation`]: the setting under which CPU provers stand in for GPUs;
//! * [`vram`]: the VRAM-residency round (proof of space on stacked expanders), in simulation;
//! * `http` (feature, default): [`http::serve`] answers challenges over HTTP, [`http::HttpProver`]
//!   and [`http::challenge`] verify a remote provider with real timing;
//! * `cuda` (feature): `cuda::CudaProver`, NVRTC generation and hashing kernels with cuBLAS
//!   INT8 GEMM (int32 accumulation), loaded dynamically (absence of CUDA is a typed error at run time).
//!
//! ```
//! use spheron_core::proof::run_challenge;
//! use spheron_core::{GpuModel, ProviderId};
//! use spheron_gpu::{CpuProver, FreivaldsVerifier, TimingPolicy, VerifierConfig};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // Correctness only (a CPU is no H100): small n, timing off.
//! let verifier = FreivaldsVerifier::new(VerifierConfig {
//!     n: 48,
//!     timing: TimingPolicy::Off,
//!     require_signature: false, // an in-process prover without a key
//!     ..VerifierConfig::default()
//! })
//! .unwrap();
//! let report = run_challenge(
//!     &verifier,
//!     &CpuProver::new(None),
//!     ProviderId::from_label("p"),
//!     GpuModel::H100Sxm,
//!     [[1; 32], [2; 32]],
//! )
//! .await;
//! assert!(report.verdict.passed());
//! # });
//! ```

pub mod attestation;
pub mod binding;
pub mod catalog;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod freivalds;
#[cfg(feature = "http")]
pub mod http;
pub mod merkle;
pub mod prf;
pub mod recompute;
pub mod simulation;
pub mod vram;
#[cfg(feature = "http")]
pub mod vram_http;

pub use binding::SignedProver;
pub use catalog::{GpuSpec, spec};
pub use cpu::{Capacity, CpuProver, Fault};
pub use error::{Error, Result};
pub use freivalds::{FreivaldsVerifier, TimingPolicy, VerifierConfig};
pub use recompute::RecomputeVerifier;
pub use simulation::Simulation;
