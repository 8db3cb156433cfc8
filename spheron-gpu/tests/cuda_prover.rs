//! The CUDA prover against the CPU reference prover (feature `cuda`). Without a GPU or CUDA
//! libraries the prover must refuse with a typed error (checked here), and the comparison is
//! skipped with a message saying what is missing.
#![cfg(feature = "cuda")]

use spheron_core::GpuModel;
use spheron_core::proof::{
    Challenge, ChallengeProver, ChallengeVerifier, Dtype, PROTOCOL_VERSION, ProofTiming,
};
use spheron_gpu::cuda::{CudaProver, libraries_present};
use spheron_gpu::{CpuProver, Error, FreivaldsVerifier, TimingPolicy, VerifierConfig};

fn prover() -> Option<CudaProver> {
    match CudaProver::new(0) {
        Ok(p) => Some(p),
        Err(Error::CudaUnavailable(why)) => {
            eprintln!(
                "SKIPPED CUDA prover comparison: {why}. Run on a machine with an NVIDIA GPU and \
                 driver (libcuda, libnvrtc, libcublas on the loader path)."
            );
            None
        }
        Err(e) => panic!("CUDA present but the prover failed to start: {e}"),
    }
}

#[test]
fn absence_of_cuda_is_a_typed_error() {
    if !libraries_present() {
        assert!(matches!(CudaProver::new(0), Err(Error::CudaUnavailable(_))));
    }
    // With CUDA present, an absurd ordinal is refused the same way.
    assert!(matches!(
        CudaProver::new(usize::MAX),
        Err(Error::CudaUnavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuda_commitments_and_openings_equal_the_cpu_prover() {
    let Some(gpu) = prover() else { return };
    for (n, batch) in [(40u32, 3u32), (300, 2), (520, 2), (1024, 4)] {
        let dtype = Dtype::Int8;
        let v = FreivaldsVerifier::new(VerifierConfig {
            n,
            untimed_batch: batch,
            timing: TimingPolicy::Off,
            require_signature: false,
            ..VerifierConfig::default()
        })
        .expect("config");
        let ch: Challenge = v.issue(GpuModel::H100Sxm, [n as u8; 32]);
        assert_eq!(ch.version, PROTOCOL_VERSION);
        let cpu = CpuProver::new(None);
        let (cg, cc) = (
            gpu.commit(&ch).await.expect("gpu commit"),
            cpu.commit(&ch).await.expect("cpu commit"),
        );
        assert_eq!(cg.root, cc.root, "roots differ at n = {n}, {dtype:?}");
        let reveal = v.reveal(&ch, &cg, [0xab; 32]);
        let (og, oc) = (
            gpu.open(&reveal).await.expect("gpu open"),
            cpu.open(&reveal).await.expect("cpu open"),
        );
        assert_eq!(og, oc, "openings differ at n = {n}");
        assert!(
            v.verify(&ch, &cg, &reveal, &og, &ProofTiming::default())
                .passed()
        );
    }
}
