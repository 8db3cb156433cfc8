//! Throughput of the CUDA prover at n = 16384 (FP16 inputs, FP32 accumulation), including
//! generation and hashing, against the H100 SXM dense FP16 peak; then a full challenge with
//! the default (datasheet) verifier for the model the driver reports.
//!
//! `cargo run --release -p spheron-gpu --features cuda --example cuda_throughput [n] [batch]`

use spheron_core::proof::{ChallengeProver, ChallengeVerifier, run_challenge};
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::cuda::CudaProver;
use spheron_gpu::{FreivaldsVerifier, TimingPolicy, VerifierConfig};
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(16_384);
    let batch: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    let gpu = CudaProver::new(0)?;
    println!("device: {}", gpu.device_name());
    let v = FreivaldsVerifier::new(VerifierConfig {
        n,
        untimed_batch: batch,
        timing: TimingPolicy::Off,
        ..VerifierConfig::default()
    })?;
    // Warm-up (NVRTC module load, cuBLAS heuristics).
    let warm = v.issue(GpuModel::H100Sxm, [1; 32]);
    gpu.commit(&warm).await?;
    for trial in 0..3u8 {
        let ch = v.issue(GpuModel::H100Sxm, [trial + 2; 32]);
        let t = Instant::now();
        gpu.commit(&ch).await?;
        let s = t.elapsed().as_secs_f64();
        let tflops = 2.0 * f64::from(n).powi(3) * f64::from(batch) / s / 1e12;
        println!(
            "n = {n}, K = {batch}: commit {:.3} s, {tflops:.1} TFLOP/s = {:.1}% of 989.5 (H100 SXM FP16 dense)",
            s,
            100.0 * tflops / 989.5
        );
    }
    let claimed: GpuModel = gpu.device_name().parse().unwrap_or(GpuModel::H100Sxm);
    let report = run_challenge(
        &FreivaldsVerifier::default(),
        &gpu,
        ProviderId::from_label("local-gpu"),
        claimed,
        [[9; 32], [10; 32]],
    )
    .await;
    println!(
        "default verifier, claimed {claimed}: n = {}, K = {}, commit {} ms: {}",
        report.n,
        report.batch,
        report.timing.commit_us / 1000,
        report.verdict
    );
    Ok(())
}
