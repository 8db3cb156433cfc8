//! Simulated fleets: CPU provers that behave like GPUs at a scaled-down rate, and the verifier
//! configuration that judges them with the same catalog and thresholds as real GPUs.
//!
//! **Every rate a simulation prints is simulated**: a CPU paced at `scale` times a GPU's rate,
//! not a measurement of any GPU (reports label them so).
//!
//! A simulated GPU of model `M` is a [`CpuProver`] paced at `cal(M) x headroom x scale` OP/s
//! (its calibrated INT8 rate, scaled); the verifier runs [`TimingPolicy::Catalog`] with the same
//! `scale`. A cheater on its *fastest exact path* is simulated at its datasheet INT8 **peak**
//! ([`Simulation::fastest_path_prover`]): a paced prover can only be slower than its pace, never
//! faster, so every model that [`GpuSpec::separates`](crate::GpuSpec::separates) from the claim
//! fails it deterministically, even with the largest round-trip credit, while honest simulated
//! GPUs (`headroom = 1.1`) keep at least 23 % of slack against scheduling noise.
//! So an honest simulated H100 passes as an H100, a simulated A10 claiming an H100 is too slow,
//! an unpaced CPU prover (answering at the CPU's full speed, far above a scaled peak) is flagged
//! as impossibly fast, and a prover on a CPU too slow for its pace fails, as a real slow
//! device would.
//!
//! [`Simulation::standard`] (`scale = 1e-8`, `n = 32`, ~250 ms per challenge on the claimed
//! model, unsigned in-process provers) is what the embedded marketplace uses; the network
//! (provider nodes with keys) uses [`Simulation::network`], which requires signatures:
//!
//! ```
//! use spheron_core::proof::run_challenge;
//! use spheron_core::{GpuModel, ProviderId};
//! use spheron_gpu::{Fault, Simulation};
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let sim = Simulation::standard();
//! let verifier = sim.try_verifier().unwrap();
//! let honest = sim.prover(GpuModel::H100Sxm, None, Fault::None);
//! let p = ProviderId::from_label("p");
//! let report = run_challenge(&verifier, &honest, p, GpuModel::H100Sxm, [[1; 32], [2; 32]]).await;
//! assert!(report.verdict.passed(), "{}", report.verdict);
//! // A T4 claiming to be an H100 is far too slow.
//! let t4 = sim.prover(GpuModel::T4, Some("NVIDIA H100 80GB HBM3".into()), Fault::None);
//! let report = run_challenge(&verifier, &t4, p, GpuModel::H100Sxm, [[3; 32], [4; 32]]).await;
//! assert!(!report.verdict.passed());
//! # });
//! ```

use crate::catalog::spec;
use crate::cpu::{CpuProver, Fault};
use crate::error::{Error, Result};
use crate::freivalds::{FreivaldsVerifier, TimingPolicy, VerifierConfig};
use spheron_core::GpuModel;
use spheron_core::proof::Dtype;

/// Parameters of a simulated fleet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Simulation {
    /// Multiplier from real to simulated rates.
    pub scale: f64,
    /// Matrix size of simulated challenges.
    pub n: u32,
    /// Rows opened per challenge.
    pub samples: u32,
    /// Commit phase length on the claimed model, in milliseconds.
    pub target_ms: u32,
    /// Factor by which simulated GPUs beat their calibrated rate (see the module docs);
    /// `1.0..1.118`.
    pub headroom: f64,
    /// Round-trip allowance in microseconds (at most 1 % of `target_ms`).
    pub max_rtt_us: u64,
    /// Whether the verifier requires commitments signed by the challenged provider.
    pub require_signature: bool,
}

impl Default for Simulation {
    fn default() -> Self {
        Simulation::standard()
    }
}

impl Simulation {
    /// The embedded marketplace's setting: `scale = 1e-8` (a simulated H100 does ~7.6 MFLOP/s,
    /// a T4 ~0.39 MFLOP/s, both far below what any CPU manages at `n = 32`), `n = 32`,
    /// 16 samples, a 250 ms commit phase on the claimed model, headroom 1.1, 2 ms round-trip
    /// allowance (0.8 % of the phase, as 30 ms is of the 4 s phase on real GPUs), no
    /// signatures (in-process providers have no keys).
    pub const fn standard() -> Self {
        Simulation {
            scale: 1e-8,
            n: 32,
            samples: 16,
            target_ms: 250,
            headroom: 1.1,
            max_rtt_us: 2_000,
            require_signature: false,
        }
    }

    /// [`Simulation::standard`] with signatures required (provider nodes sign with their
    /// registered keys, [`crate::binding::SignedProver`]) and a 1 s commit phase: a network's
    /// simulated provers are separate processes sharing one machine's cores, and the longer
    /// phase keeps scheduling noise well inside the deadline's margin.
    pub const fn network() -> Self {
        let mut s = Simulation::standard();
        s.require_signature = true;
        s.target_ms = 1_000;
        s
    }

    /// The verifier configuration for this simulation.
    pub fn config(&self) -> VerifierConfig {
        VerifierConfig {
            n: self.n,
            samples: self.samples,
            target_ms: self.target_ms,
            max_rtt_us: self.max_rtt_us,
            timing: TimingPolicy::Catalog { scale: self.scale },
            require_signature: self.require_signature,
            ..VerifierConfig::default()
        }
    }

    /// The verifier, checking the settings.
    pub fn try_verifier(&self) -> Result<FreivaldsVerifier> {
        let limit = 1.0 / crate::catalog::SEPARATION.sqrt();
        if !(self.headroom >= 1.0 && self.headroom < limit) {
            return Err(Error::InvalidConfig {
                field: "headroom",
                reason: format!("{} is outside 1.0..{limit:.3}", self.headroom),
            });
        }
        if self.n > crate::cpu::CPU_MAX_N {
            return Err(Error::InvalidConfig {
                field: "n",
                reason: format!(
                    "{} is above what CPU provers accept ({})",
                    self.n,
                    crate::cpu::CPU_MAX_N
                ),
            });
        }
        FreivaldsVerifier::new(self.config())
    }

    /// Simulated OP/s of an honest `model`: its calibrated INT8 rate times headroom and scale.
    pub fn rate(&self, model: GpuModel) -> f64 {
        spec(model)
            .and_then(|s| s.calibrated_tflops(Dtype::Int8))
            .unwrap_or(0.0)
            * 1e12
            * self.headroom
            * self.scale
    }

    /// Simulated OP/s of `model` on its fastest exact path for the challenge's data: its
    /// datasheet dense INT8 peak (no real kernel reaches it), times scale.
    pub fn fastest_path_rate(&self, model: GpuModel) -> f64 {
        spec(model).map_or(0.0, |s| s.int8_tops) * 1e12 * self.scale
    }

    /// A CPU prover playing `actual` at [`Simulation::fastest_path_rate`]: the strongest a
    /// cheater with that GPU can be.
    pub fn fastest_path_prover(&self, actual: GpuModel, fault: Fault) -> CpuProver {
        CpuProver::with_fault(None, fault).paced(self.fastest_path_rate(actual))
    }

    /// A CPU prover that behaves like a `actual` GPU (paced at [`Simulation::rate`]),
    /// reporting `device` as its driver's name (whatever it claims, only the pace counts).
    pub fn prover(&self, actual: GpuModel, device: Option<String>, fault: Fault) -> CpuProver {
        CpuProver::with_fault(device, fault).paced(self.rate(actual))
    }
}
