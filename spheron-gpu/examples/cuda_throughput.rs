//! Throughput of the CUDA prover at n = 16384 (int8 inputs, int32 accumulation on INT8 tensor
//! cores), including generation and hashing, against the datasheet dense INT8 peak of the
//! model the driver reports; then a full signed challenge with the default (datasheet)
//! verifier.
//!
//! `cargo run --release -p spheron-gpu --features cuda --example cuda_throughput [n] [batch]`

use alloy_signer_local::PrivateKeySigner;
use spheron_core::GpuModel;
use spheron_core::proof::{ChallengeProver, ChallengeVerifier, run_challenge};
use spheron_gpu::binding::{SignedProver, provider_id};
use spheron_gpu::cuda::CudaProver;
use spheron_gpu::{FreivaldsVerifier, TimingPolicy, VerifierConfig, spec};
use std::sync::Arc;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(16_384);
    let batch: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let gpu = Arc::new(CudaProver::new(0)?);
    println!("device: {}", gpu.device_name());
    let claimed: GpuModel = gpu.device_name().parse().unwrap_or(GpuModel::H100Sxm);
    let peak = spec(claimed).map_or(f64::NAN, |s| s.int8_tops);
    let v = FreivaldsVerifier::new(VerifierConfig {
        n,
        untimed_batch: batch,
        timing: TimingPolicy::Off,
        require_signature: false,
        ..VerifierConfig::default()
    })?;
    // Warm-up (NVRTC module load, cuBLAS heuristics); every session is opened so that it is
    // released.
    for trial in 0..4u8 {
        let ch = v.issue(claimed, [trial + 1; 32]);
        let t = Instant::now();
        let c = gpu.commit(&ch).await?;
        let s = t.elapsed().as_secs_f64();
        gpu.open(&v.reveal(&ch, &c, [trial; 32])).await?;
        if trial == 0 {
            continue;
        }
        let tops = 2.0 * f64::from(n).powi(3) * f64::from(batch) / s / 1e12;
        println!(
            "n = {n}, K = {batch}: commit {s:.3} s, {tops:.1} TOPS = {:.1}% of {peak} ({claimed} dense INT8)",
            100.0 * tops / peak
        );
    }
    let key = PrivateKeySigner::random();
    let signed = SignedProver::new(gpu.clone(), key.clone());
    let report = run_challenge(
        &FreivaldsVerifier::default(),
        &signed,
        provider_id(&key),
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
