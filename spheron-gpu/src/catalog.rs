//! The GPU performance catalog: datasheet peak rates, memory and bandwidth per model, plus the
//! calibrated rate a proof-of-GPU challenge achieves end to end, and the timing thresholds
//! derived from them.
//!
//! Peak figures are NVIDIA datasheet numbers for DENSE tensor-core math (the datasheets print
//! the 2:4-sparsity figure first; dense is half of it), FP16/BF16 inputs with FP32
//! accumulation:
//!
//! | model | FP16 dense TFLOP/s | source |
//! |---|---|---|
//! | H200 SXM | 989.5 | H200 datasheet (1,979 sparse), 141 GB, 4.8 TB/s |
//! | H100 SXM5 | 989.5 | H100 datasheet (1,979 sparse), 80 GB HBM3, 3.35 TB/s |
//! | H100 PCIe | 756.5 | H100 datasheet (1,513 sparse), 80 GB HBM2e, 2.0 TB/s |
//! | A100 80GB SXM | 312 | A100 datasheet (624 sparse), 2,039 GB/s |
//! | A100 40GB | 312 | A100 datasheet, 1,555 GB/s |
//! | L40S | 362.05 | L40S datasheet (733 sparse), 48 GB, 864 GB/s |
//! | RTX 4090 | 165.2 | Ada whitepaper, FP16 with FP32 accumulate (330.3 with FP16 accumulate), 1,008 GB/s |
//! | A10 | 125 | A10 datasheet (250 sparse), 600 GB/s |
//! | L4 | 121 | L4 datasheet (242 sparse), 300 GB/s |
//! | T4 | 65 | T4 datasheet, FP16 mixed precision, 320 GB/s; Turing has no BF16 |
//!
//! **Calibrated rates are estimates, not measurements.** `calibrated_fraction` is the fraction
//! of the dense peak that the whole challenge (PRF generation + cuBLAS GEMM + BLAKE3 hashing of
//! every row, n = 16384) is expected to sustain, from public cuBLAS GEMM results and each part's
//! power limit. They were not measured on hardware (this SDK was built without GPU access);
//! replace them with figures from the CUDA prover on real machines before relying on tight
//! thresholds.
//!
//! ## Thresholds
//! For a claimed model `M` the verifier requires the rate
//! `required(M) = sqrt(cal(M) * cal(L))`, where `L` is the fastest catalogued model whose
//! calibrated rate is at most [`SEPARATION`] times `cal(M)` (the next-lower model that rate
//! alone can tell apart). An honest `M` then clears the bar by at least `1/sqrt(SEPARATION)`
//! (≥ 11 %) and `L` must beat its own calibration by the same factor to pass. The slowest
//! model (no `L`) requires half its calibrated rate. Models whose calibrated rates lie within
//! that band of each other (H200 vs H100 SXM: same compute; A100 80G vs 40G; A100 vs L40S)
//! cannot be told apart by rate: the proof shows at least that class of compute, not the memory
//! size. An achieved rate above the claimed model's peak is physically impossible.

use spheron_core::GpuModel;
use spheron_core::proof::Dtype;

/// Largest ratio `cal(L) / cal(M)` at which `L` counts as distinguishable from `M` by rate.
pub const SEPARATION: f64 = 0.8;

/// Performance figures of one GPU model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuSpec {
    /// The model.
    pub model: GpuModel,
    /// Dense FP16 tensor-core peak with FP32 accumulation, TFLOP/s (datasheet).
    pub fp16_tflops: f64,
    /// Dense BF16 tensor-core peak with FP32 accumulation, TFLOP/s; `None` where unsupported.
    pub bf16_tflops: Option<f64>,
    /// Memory in GiB.
    pub memory_gib: u32,
    /// Memory bandwidth in GB/s (datasheet).
    pub bandwidth_gbs: u32,
    /// Estimated fraction of the peak that a full challenge sustains (see module docs).
    pub calibrated_fraction: f64,
}

const fn spec_of(model: GpuModel) -> Option<GpuSpec> {
    let (fp16, bf16, mem, bw, frac) = match model {
        GpuModel::H200 => (989.5, Some(989.5), 141, 4_800, 0.73),
        GpuModel::H100Sxm => (989.5, Some(989.5), 80, 3_350, 0.70),
        GpuModel::H100Pcie => (756.5, Some(756.5), 80, 2_000, 0.68),
        GpuModel::A100_80G => (312.0, Some(312.0), 80, 2_039, 0.80),
        GpuModel::A100_40G => (312.0, Some(312.0), 40, 1_555, 0.80),
        GpuModel::L40S => (362.05, Some(362.05), 48, 864, 0.65),
        GpuModel::Rtx4090 => (165.2, Some(165.2), 24, 1_008, 0.80),
        GpuModel::A10 => (125.0, Some(125.0), 24, 600, 0.60),
        GpuModel::L4 => (121.0, Some(121.0), 24, 300, 0.50),
        GpuModel::T4 => (65.0, None, 16, 320, 0.55),
        _ => return None,
    };
    Some(GpuSpec {
        model,
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
    /// Dense peak for `dtype` in TFLOP/s; `None` if the model lacks that dtype.
    pub fn peak_tflops(&self, dtype: Dtype) -> Option<f64> {
        match dtype {
            Dtype::F16 => Some(self.fp16_tflops),
            Dtype::Bf16 => self.bf16_tflops,
            _ => None,
        }
    }

    /// Calibrated end-to-end challenge rate for `dtype` in TFLOP/s.
    pub fn calibrated_tflops(&self, dtype: Dtype) -> Option<f64> {
        self.peak_tflops(dtype)
            .map(|p| p * self.calibrated_fraction)
    }

    /// The next-lower model that rate can distinguish from this one (see module docs).
    pub fn next_lower(&self, dtype: Dtype) -> Option<GpuModel> {
        let own = self.calibrated_tflops(dtype)?;
        GpuModel::ALL
            .iter()
            .filter_map(|&m| Some((m, spec(m)?.calibrated_tflops(dtype)?)))
            .filter(|&(_, c)| c <= own * SEPARATION)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(m, _)| m)
    }

    /// The rate in TFLOP/s a provider claiming this model must reach (see module docs).
    pub fn required_tflops(&self, dtype: Dtype) -> Option<f64> {
        let own = self.calibrated_tflops(dtype)?;
        Some(match self.next_lower(dtype) {
            Some(l) => (own * spec(l)?.calibrated_tflops(dtype)?).sqrt(),
            None => own * 0.5,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_separate_distinguishable_models() {
        for m in GpuModel::ALL {
            let s = spec(m).expect("catalogued");
            let req = s.required_tflops(Dtype::F16).expect("catalogued");
            let cal = s.calibrated_tflops(Dtype::F16).expect("catalogued");
            assert!(req < cal * 0.9, "{m}: honest margin too thin");
            assert!(req < s.fp16_tflops);
            for l in GpuModel::ALL {
                let lc = spec(l)
                    .expect("catalogued")
                    .calibrated_tflops(Dtype::F16)
                    .expect("catalogued");
                if lc <= cal * SEPARATION {
                    assert!(lc < req * 0.9, "{l} would pass as {m}");
                }
            }
        }
        assert_eq!(
            spec(GpuModel::H100Sxm)
                .expect("catalogued")
                .next_lower(Dtype::F16),
            Some(GpuModel::H100Pcie)
        );
        assert_eq!(
            spec(GpuModel::T4)
                .expect("catalogued")
                .next_lower(Dtype::F16),
            None
        );
        assert_eq!(
            spec(GpuModel::T4)
                .expect("catalogued")
                .peak_tflops(Dtype::Bf16),
            None
        );
    }

    #[test]
    fn memory_agrees_with_core() {
        for m in GpuModel::ALL {
            assert_eq!(
                spec(m).expect("catalogued").memory_gib,
                m.memory_gib(),
                "{m}"
            );
        }
    }
}
