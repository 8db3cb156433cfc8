//! # spheron-gpu
//!
//! Proof of GPU for spheron: the counter-based matrix PRF ([`prf`]), BLAKE3 Merkle
//! commitments over product rows ([`merkle`]), the CPU reference prover ([`CpuProver`]) and a
//! first verifier that recomputes the products in full ([`RecomputeVerifier`]).
//!
//! ```
//! use spheron_core::proof::run_challenge;
//! use spheron_core::{GpuModel, ProviderId};
//! use spheron_gpu::{CpuProver, RecomputeVerifier};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let report = run_challenge(
//!     &RecomputeVerifier::default(),
//!     &CpuProver::new(None),
//!     ProviderId::from_label("p"),
//!     GpuModel::H100Sxm,
//!     [[1; 32], [2; 32]],
//! )
//! .await;
//! assert!(report.verdict.passed());
//! # });
//! ```

pub mod cpu;
pub mod merkle;
pub mod prf;
pub mod recompute;

pub use cpu::{CpuProver, Fault};
pub use recompute::RecomputeVerifier;

#[cfg(test)]
mod tests {
    use super::*;
    use spheron_core::proof::{FailReason, Verdict, run_challenge};
    use spheron_core::{GpuModel, ProviderId};

    async fn run(prover: &CpuProver, seed: u8) -> Verdict {
        run_challenge(
            &RecomputeVerifier::default(),
            prover,
            ProviderId::from_label("p"),
            GpuModel::H100Sxm,
            [[seed; 32], [seed.wrapping_add(1); 32]],
        )
        .await
        .verdict
    }

    #[tokio::test]
    async fn honest_passes_corrupt_fails() {
        for seed in 0..8 {
            assert!(run(&CpuProver::new(None), seed).await.passed());
            let bad = CpuProver::with_fault(None, Fault::CorruptProducts);
            assert!(matches!(
                run(&bad, seed).await,
                Verdict::Fail(FailReason::WrongProduct { .. } | FailReason::BadRow(_))
            ));
        }
    }
}
