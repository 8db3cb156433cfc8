//! Timing attacks under the simulated-fleet setting ([`Simulation::standard`]): CPU provers
//! paced at a model's scaled calibrated rate stand in for GPUs, and the verifier judges them
//! with the catalog's thresholds at the same scale. Trials run one at a time (a lock) so that
//! CPU-heavy tests in this binary do not disturb each other's clocks. Run with `--nocapture`
//! to see the measured rates.

use spheron_core::proof::{FailReason, Verdict, run_challenge};
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::{CpuProver, Fault, Simulation};

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
    prover: &CpuProver,
    claimed: GpuModel,
    count: u32,
    salt: u8,
) -> Vec<Verdict> {
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
        out.push(report.verdict);
    }
    let failed = out.iter().filter(|v| !v.passed()).count();
    println!(
        "{name}: {failed}/{count} failed; first verdict: {}",
        out.first().map(ToString::to_string).unwrap_or_default()
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_simulated_gpus_pass_as_themselves() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    for model in [
        GpuModel::H100Sxm,
        GpuModel::H100Pcie,
        GpuModel::A100_80G,
        GpuModel::L4,
        GpuModel::T4,
    ] {
        let p = sim.prover(model, Some(format!("NVIDIA {model}")), Fault::None);
        let v = trials(&format!("honest {model}"), &p, model, 4, 1).await;
        assert!(v.iter().all(Verdict::passed), "{model}: {v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weaker_gpus_claiming_stronger_ones_are_too_slow() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    for (actual, claimed, count) in [
        (GpuModel::H100Pcie, GpuModel::H100Sxm, 8),
        (GpuModel::A100_80G, GpuModel::H100Pcie, 8),
        (GpuModel::Rtx4090, GpuModel::A100_80G, 8),
        (GpuModel::A10, GpuModel::H100Sxm, 2),
        (GpuModel::T4, GpuModel::L4, 8),
    ] {
        let p = sim.prover(actual, None, Fault::None);
        let v = trials(
            &format!("{actual} claiming {claimed}"),
            &p,
            claimed,
            count,
            2,
        )
        .await;
        assert!(
            v.iter().all(|v| matches!(
                v,
                Verdict::Fail(FailReason::TooSlow { .. } | FailReason::Late { .. })
            )),
            "{actual} as {claimed}: {v:?}"
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
    let v = trials("A100 named H100", &fake, GpuModel::H100Sxm, 4, 3).await;
    assert!(v.iter().all(|v| !v.passed()), "{v:?}");
    let modest = sim.prover(GpuModel::H100Sxm, Some("Tesla T4".into()), Fault::None);
    let v = trials("H100 named T4", &modest, GpuModel::H100Sxm, 4, 4).await;
    assert!(v.iter().all(Verdict::passed), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_after_the_deadline_are_late() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    let p = sim.prover(GpuModel::H100Sxm, None, Fault::Stall { ms: 250 });
    let v = trials("H100 stalling 250 ms", &p, GpuModel::H100Sxm, 6, 5).await;
    assert!(
        v.iter()
            .all(|v| matches!(v, Verdict::Fail(FailReason::Late { .. }))),
        "{v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossibly_fast_answers_are_flagged() {
    let _g = SERIAL.lock().await;
    // An unpaced CPU answers at its full speed: hundreds of times the scaled H200 peak.
    let p = CpuProver::new(Some("NVIDIA H200".into()));
    let v = trials("unpaced CPU claiming H200", &p, GpuModel::H200, 6, 6).await;
    assert!(
        v.iter()
            .all(|v| matches!(v, Verdict::Fail(FailReason::ImpossibleSpeed { .. }))),
        "{v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_reported_is_the_models_calibrated_rate() {
    let _g = SERIAL.lock().await;
    let sim = Simulation::standard();
    let p = sim.prover(GpuModel::A100_80G, None, Fault::None);
    let v = trials("A100 rate", &p, GpuModel::A100_80G, 3, 7).await;
    let cal = spheron_gpu::spec(GpuModel::A100_80G)
        .and_then(|s| s.calibrated_tflops(spheron_core::proof::Dtype::F16))
        .expect("catalogued");
    for verdict in v {
        let Verdict::Pass {
            achieved_tflops: Some(t),
        } = verdict
        else {
            panic!("{verdict:?}");
        };
        // Pacing makes the prover no faster than calibrated x headroom; overheads only slow it.
        assert!(t <= cal * sim.headroom * 1.0001, "{t} vs {cal}");
    }
}
