//! Attacks on proof-of-GPU that the verifier must catch, each measured over many seeded trials.
//! Correctness attacks run with timing off (a CPU is no GPU); timing attacks live in
//! `tests/timing.rs`. Run with `--nocapture` to see the measured detection rates.

use spheron_core::proof::{
    ChallengeProver, ChallengeVerifier, FailReason, Opening, ProofTiming, Verdict, run_challenge,
};
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::{CpuProver, Fault, FreivaldsVerifier, TimingPolicy, VerifierConfig};

const N: u32 = 32;
const K: u32 = 8;
const SAMPLES: u32 = 16;
const TRIALS: u32 = 200;

fn verifier() -> FreivaldsVerifier {
    FreivaldsVerifier::new(VerifierConfig {
        n: N,
        samples: SAMPLES,
        untimed_batch: K,
        timing: TimingPolicy::Off,
        ..VerifierConfig::default()
    })
    .expect("valid config")
}

fn entropy(trial: u32) -> [[u8; 32]; 2] {
    let mut a = [0u8; 32];
    a[..4].copy_from_slice(&trial.to_le_bytes());
    let mut b = a;
    b[31] = 0xff;
    [a, b]
}

async fn verdict(prover: &dyn ChallengeProver, trial: u32) -> Verdict {
    run_challenge(
        &verifier(),
        prover,
        ProviderId::from_label("attacker"),
        GpuModel::H100Sxm,
        entropy(trial),
    )
    .await
    .verdict
}

/// Runs `TRIALS` challenges against a prover with `fault`; returns the detection rate and the
/// failing verdicts' kinds.
async fn detection(fault: Fault) -> (f64, Vec<Verdict>) {
    let prover = CpuProver::with_fault(None, fault);
    let mut fails = Vec::new();
    for t in 0..TRIALS {
        let v = verdict(&prover, t).await;
        if !v.passed() {
            fails.push(v);
        }
    }
    (fails.len() as f64 / f64::from(TRIALS), fails)
}

/// Fraction of the `K * N` rows a fault leaves uncomputed.
fn skipped_fraction(fault: Fault) -> f64 {
    let skipped = (0..K)
        .flat_map(|k| (0..N).map(move |i| (k, i)))
        .filter(|&(k, i)| fault.skips(k, i, N))
        .count();
    skipped as f64 / f64::from(K * N)
}

/// Checks a measured rate against `p = 1 - (1 - f)^samples` within 4 binomial sd.
fn assert_rate(name: &str, fault: Fault, rate: f64) {
    let f = skipped_fraction(fault);
    let p = 1.0 - (1.0 - f).powi(SAMPLES as i32);
    let sd = (p * (1.0 - p) / f64::from(TRIALS)).sqrt();
    println!(
        "{name}: skipped fraction {f:.4}, detection {rate:.3} over {TRIALS} trials (bound 1-(1-f)^{SAMPLES} = {p:.3})"
    );
    assert!(f > 0.0, "{name}: the fault skipped nothing");
    assert!(
        rate >= p - 4.0 * sd - 0.01,
        "{name}: detection {rate:.3} below the expected {p:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_prover_always_passes() {
    let (rate, fails) = detection(Fault::None).await;
    println!("honest: false-failure rate {rate:.3} over {TRIALS} trials");
    assert!(fails.is_empty(), "{fails:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_rows_is_caught_at_the_sampling_bound() {
    for per_mille in [20u16, 100, 300] {
        let fault = Fault::SkipRows { per_mille };
        let (rate, fails) = detection(fault).await;
        assert_rate(&format!("skip {per_mille}‰ rows"), fault, rate);
        assert!(
            fails
                .iter()
                .all(|v| matches!(v, Verdict::Fail(FailReason::BadRow(_)))),
            "{fails:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_products_is_caught_at_the_sampling_bound() {
    for per_mille in [125u16, 250] {
        let fault = Fault::SkipProducts { per_mille };
        let (rate, _) = detection(fault).await;
        assert_rate(&format!("skip {per_mille}‰ products"), fault, rate);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_products_are_always_caught() {
    let (rate, _) = detection(Fault::CorruptProducts).await;
    println!("corrupt products: detection {rate:.3} over {TRIALS} trials");
    assert_eq!(rate, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_answers_are_always_caught() {
    let mut caught = 0;
    for t in 0..TRIALS {
        let prover = CpuProver::with_fault(None, Fault::Replay);
        // The first exchange is honest and becomes the answer replayed afterwards.
        assert!(verdict(&prover, t).await.passed());
        let v = verdict(&prover, t + TRIALS).await;
        if matches!(v, Verdict::Fail(FailReason::BadRow(_))) {
            caught += 1;
        }
    }
    let rate = f64::from(caught) / f64::from(TRIALS);
    println!("replay of an earlier answer: detection {rate:.3} over {TRIALS} trials");
    assert_eq!(rate, 1.0);
}

/// An honest exchange, returned for tampering.
type Exchange = (
    FreivaldsVerifier,
    spheron_core::proof::Challenge,
    spheron_core::proof::Commitment,
    spheron_core::proof::Reveal,
    Opening,
);

async fn honest_exchange(trial: u32) -> Exchange {
    let v = verifier();
    let p = CpuProver::new(None);
    let [e1, e2] = entropy(trial);
    let ch = v.issue(GpuModel::H100Sxm, e1);
    let c = p.commit(&ch).await.expect("commit");
    let r = v.reveal(&ch, &c, e2);
    let o = p.open(&r).await.expect("open");
    (v, ch, c, r, o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_are_always_caught() {
    type Tamper = fn(&mut spheron_core::proof::Commitment, &mut Opening);
    type Expect = fn(&FailReason) -> bool;
    let cases: [(&str, Tamper, Expect); 10] = [
        (
            "short row",
            |_, o| {
                o.rows[0].values.pop();
            },
            |r| matches!(r, FailReason::Malformed(_)),
        ),
        (
            "missing row",
            |_, o| {
                o.rows.pop();
            },
            |r| matches!(r, FailReason::Malformed(_)),
        ),
        (
            "value out of range",
            |_, o| o.rows[0].values[0] = 16 * N as i32 + 1,
            |r| matches!(r, FailReason::Malformed(_)),
        ),
        (
            "flipped path byte",
            |_, o| o.rows[0].path[0][0] ^= 1,
            |r| matches!(r, FailReason::BadPath(_)),
        ),
        (
            "extra path node",
            |_, o| o.rows[0].path.push([0; 32]),
            |r| matches!(r, FailReason::BadPath(_)),
        ),
        (
            "truncated path",
            |_, o| {
                o.rows[0].path.pop();
            },
            |r| matches!(r, FailReason::BadPath(_)),
        ),
        (
            "wrong sample label",
            |_, o| o.rows[0].sample.row = (o.rows[0].sample.row + 1) % N,
            |r| matches!(r, FailReason::Malformed(_)),
        ),
        (
            "wrong session",
            |_, o| o.session[0] ^= 1,
            |r| matches!(r, FailReason::Malformed(_)),
        ),
        (
            "wrong version",
            |c, _| c.version = 1,
            |r| matches!(r, FailReason::Malformed(_)),
        ),
        (
            "other root",
            |c, _| c.root[5] ^= 0x40,
            |r| matches!(r, FailReason::BadPath(_)),
        ),
    ];
    for (name, tamper, expect) in cases {
        let mut caught = 0;
        let trials = 50;
        for t in 0..trials {
            let (v, ch, mut c, r, mut o) = honest_exchange(t).await;
            assert!(
                v.verify(&ch, &c, &r, &o, &ProofTiming::default()).passed(),
                "untampered exchange must pass"
            );
            tamper(&mut c, &mut o);
            match v.verify(&ch, &c, &r, &o, &ProofTiming::default()) {
                Verdict::Fail(reason) if expect(&reason) => caught += 1,
                other => panic!("{name}: unexpected verdict {other:?}"),
            }
        }
        println!("malformed ({name}): detection {caught}/{trials}");
        assert_eq!(caught, trials);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_value_with_a_rebuilt_path_is_a_bad_path_or_bad_row() {
    // Changing one opened value breaks the path; the Freivalds probe is only reached with a
    // consistent path, which the prover cannot forge for a changed row.
    let (v, ch, c, r, mut o) = honest_exchange(7).await;
    o.rows[0].values[3] += 1;
    assert!(matches!(
        v.verify(&ch, &c, &r, &o, &ProofTiming::default()),
        Verdict::Fail(FailReason::BadPath(_))
    ));
}
