//! The GPU performance catalog: datasheet peak rates, memory and bandwidth per model, the
//! calibrated rate a proof-of-GPU challenge achieves end to end, and the timing thresholds
//! derived from them.
//!
//! Challenges are int8 GEMMs with int32 accumulation over the full int8 range (see
//! [`crate::prf`]): INT8 tensor cores are the honest, and the fastest exact, path on every
//! catalogued model. Work is priced at each model's **dense INT8 tensor-core peak** from its
//! datasheet (datasheets print the 2:4-sparsity figure first; dense is half of it):
//!
//! | model | dense INT8 TOPS | source (datasheet, sparse figure) | memory | bandwidth |
//! |---|---|---|---|---|
//! | H200 SXM | 1,979 | NVIDIA H200 Tensor Core GPU datasheet (3,958 sparse) | 141 GB HBM3e | 4.8 TB/s |
//! | H100 SXM5 | 1,979 | NVIDIA H100 Tensor Core GPU datasheet, SXM (3,958 sparse) | 80 GB HBM3 | 3.35 TB/s |
//! | H100 PCIe | 1,513 | NVIDIA H100 Tensor Core GPU datasheet, PCIe (3,026 sparse) | 80 GB HBM2e | 2.0 TB/s |
//! | A100 80GB SXM | 624 | NVIDIA A100 Tensor Core GPU datasheet (1,248 sparse) | 80 GB HBM2e | 2,039 GB/s |
//! | A100 40GB | 624 | NVIDIA A100 Tensor Core GPU datasheet (1,248 sparse) | 40 GB HBM2 | 1,555 GB/s |
//! | L40S | 733 | NVIDIA L40S datasheet (1,466 sparse) | 48 GB GDDR6 | 864 GB/s |
//! | RTX 4090 | 660.6 | NVIDIA Ada Lovelace architecture whitepaper, RTX 4090 (1,321.2 sparse) | 24 GB GDDR6X | 1,008 GB/s |
//! | A10 | 250 | NVIDIA A10 Tensor Core GPU datasheet (500 sparse) | 24 GB GDDR6 | 600 GB/s |
//! | L4 | 242.5 | NVIDIA L4 Tensor Core GPU datasheet (485 sparse) | 24 GB GDDR6 | 300 GB/s |
//! | T4 | 130 | NVIDIA T4 Tensor Core GPU datasheet (Turing: no sparsity; INT4 260) | 16 GB GDDR6 | 320 GB/s |
//!
//! The FP16/BF16 dense peaks (half the INT8 figures on every model above; RTX 4090: 165.2 with
//! FP32 accumulation) are kept for reference and for pre-v3 dtypes.
//!
//! **Calibrated rates are estimates, not measurements.** `calibrated_fraction` is the fraction
//! of the dense INT8 peak that the whole challenge (PRF generation + cuBLAS INT8 GEMM + BLAKE3
//! hashing of every row, n = 16384) is expected to sustain, from public cuBLAS int8 GEMM
//! results and each part's power limit. They were not measured on hardware (this SDK was built
//! without GPU access); replace them with figures from the CUDA prover on real machines.
//!
//! ## Thresholds
//! A claim of model `M` must reach `required(M) = cal(M) * sqrt(SEPARATION)`: an honest `M`
//! clears it by `1/sqrt(SEPARATION)` (≈ 11.8 %). A model `L` can be told apart from `M` by
//! compute only when even `L`'s datasheet **peak**, helped by the largest round-trip credit the
//! verifier grants ([`MAX_CREDIT_FRACTION`] of the commit phase), stays below
//! `required(M)` ([`GpuSpec::separates`]). Faster than the claimed model's peak is impossible
//! and fails as such.
//!
//! ## Adjacent pairs: what separates them
//! Computed by [`GpuSpec::separates`] (and checked by this module's tests) from the figures
//! above, ordered by INT8 peak:
//!
//! | claimed | next lower | peak ratio | compute separates? | what does |
//! |---|---|---|---|---|
//! | H200 | H100 SXM | 1.00 | no (same compute) | memory size: 141 vs 80 GB (VRAM round), bandwidth 4.8 vs 3.35 TB/s |
//! | H100 SXM | H100 PCIe | 0.76 | no (PCIe peak above the SXM bar) | bandwidth 3.35 vs 2.0 TB/s; sustained power (350 W vs 700 W) |
//! | H100 PCIe | L40S | 0.48 | yes | |
//! | L40S | RTX 4090 | 0.90 | no | memory size: 48 vs 24 GB |
//! | RTX 4090 | A100 80G / 40G | 0.94 | no (and the A100 is no lower card) | memory size: 24 vs 40 / 80 GB |
//! | A100 80G | A100 40G | 1.00 | no (same compute) | memory size: 80 vs 40 GB (VRAM round), bandwidth 2.0 vs 1.6 TB/s |
//! | A100 40G | A10 | 0.40 | yes | |
//! | A10 | L4 | 0.97 | no | bandwidth 600 vs 300 GB/s (same 24 GB) |
//! | L4 | T4 | 0.54 | yes (if the L4 sustains ≥ 61 % of its peak, as calibrated) | memory 24 vs 16 GB |
//!
//! Where compute cannot separate, a pass shows "at least this class of compute"; the memory
//! round (VRAM residency) or an attestation must tell the models apart.

use spheron_core::GpuModel;
use spheron_core::proof::Dtype;

/// Squared honest margin: `required(M) = cal(M) * sqrt(SEPARATION)`.
pub const SEPARATION: f64 = 0.8;

/// Largest round-trip credit the verifier may grant, as a fraction of the commit phase
/// (enforced by [`crate::FreivaldsVerifier::new`]). A prover that inflates its ping gains at
/// most this fraction of the time, which [`GpuSpec::separates`] already allows for.
pub const MAX_CREDIT_FRACTION: f64 = 0.01;

/// Performance figures of one GPU model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuSpec {
    /// The model.
    pub model: GpuModel,
    /// Dense INT8 tensor-core peak with INT32 accumulation, TOPS (datasheet).
    pub int8_tops: f64,
    /// Dense FP16 tensor-core peak with FP32 accumulation, TFLOP/s (datasheet).
    pub fp16_tflops: f64,
    /// Dense BF16 tensor-core peak with FP32 accumulation, TFLOP/s; `None` where unsupported.
    pub bf16_tflops: Option<f64>,
    /// Memory in GiB.
    pub memory_gib: u32,
    /// Memory bandwidth in GB/s (datasheet).
    pub bandwidth_gbs: u32,
    /// Estimated fraction of the INT8 peak that a full challenge sustains (see module docs).
    pub calibrated_fraction: f64,
}

const fn spec_of(model: GpuModel) -> Option<GpuSpec> {
    let (int8, fp16, bf16, mem, bw, frac) = match model {
        GpuModel::H200 => (1979.0, 989.5, Some(989.5), 141, 4_800, 0.72),
        GpuModel::H100Sxm => (1979.0, 989.5, Some(989.5), 80, 3_350, 0.70),
        GpuModel::H100Pcie => (1513.0, 756.5, Some(756.5), 80, 2_000, 0.65),
        GpuModel::A100_80G => (624.0, 312.0, Some(312.0), 80, 2_039, 0.75),
        GpuModel::A100_40G => (624.0, 312.0, Some(312.0), 40, 1_555, 0.75),
        GpuModel::L40S => (733.0, 362.05, Some(362.05), 48, 864, 0.60),
        GpuModel::Rtx4090 => (660.6, 165.2, Some(165.2), 24, 1_008, 0.70),
        GpuModel::A10 => (250.0, 125.0, Some(125.0), 24, 600, 0.60),
        GpuModel::L4 => (242.5, 121.0, Some(121.0), 24, 300, 0.62),
        GpuModel::T4 => (130.0, 65.0, None, 16, 320, 0.55),
        _ => return None,
    };
    Some(GpuSpec {
        model,
        int8_tops: int8,
        fp16_tflops: fp16,
        bf16_tflops: bf16,
        memory_gib: mem,
        bandwidth_gbs: bw,
        calibrated_fraction: frac,
    })
}

/// The catalog entry of `model`; `None` for a model this catalog does not know yet.
pub const fn spec(model: GpuModel) -> Option<GpuSpec> {
    spec_of(model)
}

impl GpuSpec {
    /// Dense peak for `dtype` in T(FL)OP/s; `None` if the model lacks that dtype.
    pub fn peak_tflops(&self, dtype: Dtype) -> Option<f64> {
        match dtype {
            Dtype::Int8 => Some(self.int8_tops),
            Dtype::F16 => Some(self.fp16_tflops),
            Dtype::Bf16 => self.bf16_tflops,
            _ => None,
        }
    }

    /// Calibrated end-to-end challenge rate in TOPS. Only INT8 challenges are calibrated
    /// (`None` for other dtypes: the verifier no longer prices work at float rates).
    pub fn calibrated_tflops(&self, dtype: Dtype) -> Option<f64> {
        (dtype == Dtype::Int8).then_some(self.int8_tops * self.calibrated_fraction)
    }

    /// The rate in TOPS a provider claiming this model must reach (see module docs).
    pub fn required_tflops(&self, dtype: Dtype) -> Option<f64> {
        Some(self.calibrated_tflops(dtype)? * SEPARATION.sqrt())
    }

    /// Whether compute alone tells `lower` apart from this model: `lower` at its datasheet
    /// INT8 peak, with the largest round-trip credit, stays below this model's required rate.
    pub fn separates(&self, lower: &GpuSpec) -> bool {
        let Some(req) = self.required_tflops(Dtype::Int8) else {
            return false;
        };
        let cal = self.int8_tops * self.calibrated_fraction;
        // Time of the commit phase on `lower` at peak: W / peak_L; the verifier credits at
        // most MAX_CREDIT_FRACTION of W / cal(M). Achieved = W / (W/peak_L - c W/cal(M)).
        let t = 1.0 / lower.int8_tops - MAX_CREDIT_FRACTION / cal;
        t > 0.0 && 1.0 / t < req
    }

    /// The fastest catalogued model that compute separates from this one (see module docs).
    pub fn next_lower(&self) -> Option<GpuModel> {
        GpuModel::ALL
            .iter()
            .filter_map(|&m| spec(m))
            .filter(|l| self.separates(l))
            .max_by(|a, b| a.int8_tops.total_cmp(&b.int8_tops))
            .map(|l| l.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(m: GpuModel) -> GpuSpec {
        spec(m).expect("catalogued")
    }

    #[test]
    fn honest_models_clear_their_bar_and_stay_below_peak() {
        for m in GpuModel::ALL {
            let s = s(m);
            let req = s.required_tflops(Dtype::Int8).expect("int8");
            let cal = s.calibrated_tflops(Dtype::Int8).expect("int8");
            assert!(req < cal * 0.9, "{m}: honest margin too thin");
            assert!(cal < s.int8_tops, "{m}");
            assert_eq!(s.calibrated_tflops(Dtype::F16), None);
            // INT8 is at least twice every float tensor rate: no float path is faster.
            assert!(s.int8_tops >= 2.0 * s.fp16_tflops * 0.999, "{m}");
        }
    }

    #[test]
    fn the_adjacent_pair_table_holds() {
        use GpuModel::*;
        let expect = [
            (H200, H100Sxm, false),
            (H100Sxm, H100Pcie, false),
            (H100Sxm, L40S, true),
            (H100Pcie, L40S, true),
            (L40S, Rtx4090, false),
            (L40S, A10, true),
            (Rtx4090, A100_80G, false),
            (Rtx4090, A10, true),
            (A100_80G, A100_40G, false),
            (A100_40G, A10, true),
            (A10, L4, false),
            (A10, T4, true),
            (L4, T4, true),
        ];
        for (m, l, sep) in expect {
            assert_eq!(s(m).separates(&s(l)), sep, "{m} vs {l}");
        }
        assert_eq!(s(H100Sxm).next_lower(), Some(L40S));
        assert_eq!(s(H100Pcie).next_lower(), Some(L40S));
        assert_eq!(s(A100_80G).next_lower(), Some(A10));
        assert_eq!(s(L4).next_lower(), Some(T4));
        assert_eq!(s(T4).next_lower(), None);
        // No model separates from itself.
        for m in GpuModel::ALL {
            assert!(!s(m).separates(&s(m)), "{m}");
        }
    }

    #[test]
    fn memory_agrees_with_core() {
        for m in GpuModel::ALL {
            assert_eq!(s(m).memory_gib, m.memory_gib(), "{m}");
        }
    }
}
