//! Timing attacks under the simulated-fleet setting ([`Simulation::standard`]): CPU provers
//! paced at a model's scaled rate stand in for GPUs, and the verifier judges them with the
//! catalog's INT8 thresholds at the same scale. **All rates here are simulated.** Trials run one
//! at a time (a lock) so that CPU-heavy tests in this binary do not disturb each other's
//! clocks. No assertion reads the test's own wall clock: every deadline comes from the
//! simulation's model. Run with `--nocapture` to see the detection rates.

use async_trait::async_trait;
use spheron_core::proof::{
    Challenge, ChallengeProver, Commitment, Dtype, FailReason, Opening, ProofReport, Reveal,
    Verdict, run_challenge,
};
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::{CpuProver, Fault, Simulation, spec};
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn entropy(trial: u32, salt: u8) -> [[u8; 32]; 2] {
    let mut a = [salt; 32];
    a[..4].copy_from_slice(&trial.to_le_bytes());
    let mut b = a;
    b[31] ^= 0x5a;
    [a, b]
}

async fn trials(
    name: &str,
    prover: &dyn ChallengeProver,
    claimed: GpuModel,
    count: u32,
    salt: u8,
) -> Vec<ProofReport> {
    let sim = Simulation::standard();
    let verifier = sim.try_verifier().expect("valid simulation");
    let mut out = Vec::new();
    for t in 0..count {
        let report = run_challenge(
            &verifier,
            prover,
            ProviderId::from_label(name),
            claimed,
            entropy(t, salt),
        )
        .await;
        out.push(report);
    }
    let failed = out.iter().filter(|r| !r.verdict.passed()).count();
    println!(
        "{name}: {failed}/{count} failed; first verdict (simulated rates): {}",
        out.first()
            .map(|r| r.verdict.to_string())
            .unwrap_or_default()
    );
    out
}

fn verdicts(r: &[ProofReport]) -> Vec<&Verdict> {
    r.iter().map(|r| &r.verdict).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_simulated_gpus_of_every_model_pass_as_themselves() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    for model in GpuModel::ALL {
        let p = sim.prover(model, Some(format!("NVIDIA {model}")), Fault::None);
        let r = trials(&format!("honest {model}"), &p, model, 4, 1).await;
        assert!(
            r.iter().all(|r| r.verdict.passed()),
            "{model}: {:?}",
            verdicts(&r)
        );
    }
}

fn is_slow(v: &Verdict) -> bool {
    matches!(
        v,
        Verdict::Fail(FailReason::TooSlow { .. } | FailReason::Late { .. })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weaker_gpus_on_their_fastest_exact_path_fail_every_separable_claim() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    // For every claim, the strongest model that compute separates from it, at its datasheet
    // INT8 peak (more than any real kernel reaches): the hardest cheater to catch.
    for claimed in GpuModel::ALL {
        let Some(actual) = spec(claimed).and_then(|s| s.next_lower()) else {
            continue;
        };
        let p = sim.fastest_path_prover(actual, Fault::None);
        let r = trials(
            &format!("{actual} at INT8 peak claiming {claimed}"),
            &p,
            claimed,
            5,
            2,
        )
        .await;
        assert!(
            r.iter().all(|r| is_slow(&r.verdict)),
            "{actual} as {claimed}: {:?}",
            verdicts(&r)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_device_name_changes_nothing() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    let fake = sim.prover(
        GpuModel::A100_80G,
        Some("NVIDIA H100 80GB HBM3".into()),
        Fault::None,
    );
    let r = trials("A100 named H100", &fake, GpuModel::H100Sxm, 4, 3).await;
    assert!(r.iter().all(|r| !r.verdict.passed()), "{:?}", verdicts(&r));
    let modest = sim.prover(GpuModel::H100Sxm, Some("Tesla T4".into()), Fault::None);
    let r = trials("H100 named T4", &modest, GpuModel::H100Sxm, 4, 4).await;
    assert!(r.iter().all(|r| r.verdict.passed()), "{:?}", verdicts(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_after_the_deadline_are_late() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    let p = sim.prover(GpuModel::H100Sxm, None, Fault::Stall { ms: 250 });
    let r = trials("H100 stalling 250 ms", &p, GpuModel::H100Sxm, 6, 5).await;
    assert!(
        r.iter()
            .all(|r| matches!(r.verdict, Verdict::Fail(FailReason::Late { .. }))),
        "{:?}",
        verdicts(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossibly_fast_answers_are_flagged() {
    let _g = SERIAL.lock().await;
    // An unpaced CPU answers at its full speed: hundreds of times the scaled H200 peak.
    let p = CpuProver::new(Some("NVIDIA H200".into()));
    let r = trials("unpaced CPU claiming H200", &p, GpuModel::H200, 6, 6).await;
    assert!(
        r.iter()
            .all(|r| matches!(r.verdict, Verdict::Fail(FailReason::ImpossibleSpeed { .. }))),
        "{:?}",
        verdicts(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_reported_is_the_models_calibrated_rate() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    let p = sim.prover(GpuModel::A100_80G, None, Fault::None);
    let r = trials("A100 rate", &p, GpuModel::A100_80G, 3, 7).await;
    let cal = spec(GpuModel::A100_80G)
        .and_then(|s| s.calibrated_tflops(Dtype::Int8))
        .expect("catalogued");
    for report in r {
        let Verdict::Pass {
            achieved_tflops: Some(t),
        } = report.verdict
        else {
            panic!("{:?}", report.verdict);
        };
        // Pacing makes the prover no faster than calibrated x headroom; overheads only slow it.
        assert!(t <= cal * sim.headroom * 1.0001, "{t} vs {cal}");
    }
}

/// A prover whose transport answers pings only after `delay`: it tries to inflate the
/// round-trip credit the verifier subtracts from its commit time.
struct SlowPing<P> {
    inner: P,
    delay: Duration,
}

#[async_trait]
impl<P: ChallengeProver> ChallengeProver for SlowPing<P> {
    async fn commit(&self, ch: &Challenge) -> spheron_core::Result<Commitment> {
        self.inner.commit(ch).await
    }
    async fn open(&self, r: &Reveal) -> spheron_core::Result<Opening> {
        self.inner.open(r).await
    }
    async fn round_trip(&self) -> spheron_core::Result<Option<Duration>> {
        tokio::time::sleep(self.delay).await;
        // The figure it reports is a lie the verifier ignores: it times the ping itself.
        Ok(Some(Duration::from_micros(1)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prover_that_delays_its_pings_gains_nothing() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    for delay_ms in [20u64, 100] {
        // The strongest separable cheater for each of three claims, at peak, with slow pings.
        for claimed in [GpuModel::H100Pcie, GpuModel::A100_80G, GpuModel::L4] {
            let actual = spec(claimed)
                .and_then(|s| s.next_lower())
                .expect("a separable lower model");
            let p = SlowPing {
                inner: sim.fastest_path_prover(actual, Fault::None),
                delay: Duration::from_millis(delay_ms),
            };
            let r = trials(
                &format!("{actual} at peak claiming {claimed}, pings delayed {delay_ms} ms"),
                &p,
                claimed,
                4,
                8,
            )
            .await;
            for report in &r {
                assert!(is_slow(&report.verdict), "{:?}", report.verdict);
                // The verifier measured the delay itself (the prover said 1 µs) ...
                assert!(
                    report.timing.rtt_us >= delay_ms * 1000,
                    "{:?}",
                    report.timing
                );
            }
        }
        // ... and an honest prover with slow pings still passes (the credit is only capped).
        let honest = SlowPing {
            inner: sim.prover(GpuModel::H100Sxm, None, Fault::None),
            delay: Duration::from_millis(delay_ms),
        };
        let r = trials("honest H100, slow pings", &honest, GpuModel::H100Sxm, 3, 9).await;
        assert!(r.iter().all(|r| r.verdict.passed()), "{:?}", verdicts(&r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_challenges_to_one_prover_both_pass() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    let verifier = sim.try_verifier().expect("valid simulation");
    let p = sim.prover(GpuModel::L40S, None, Fault::None);
    let id = ProviderId::from_label("shared");
    let mut passed = 0;
    let rounds = 4;
    for t in 0..rounds {
        let (a, b) = tokio::join!(
            run_challenge(&verifier, &p, id, GpuModel::L40S, entropy(t, 10)),
            run_challenge(&verifier, &p, id, GpuModel::L40S, entropy(t, 11)),
        );
        assert!(a.verdict.passed(), "{}", a.verdict);
        assert!(b.verdict.passed(), "{}", b.verdict);
        passed += 2;
    }
    println!(
        "concurrent honest challenges: {passed}/{} passed",
        2 * rounds
    );
    assert_eq!(p.sessions_held(), 0, "opened sessions are released");
}
