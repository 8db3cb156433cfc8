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
        require_signature: false,
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
            |_, o| o.rows[0].values[0] = (1 << 14) * N as i32 + 1,
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

// ------------------------------------------------------------------ binding ----

use alloy_signer_local::PrivateKeySigner;
use async_trait::async_trait;
use spheron_core::proof::{Challenge, Commitment, Reveal};
use spheron_gpu::SignedProver;
use spheron_gpu::binding::{self, provider_id};
use std::sync::Arc;

fn signing_verifier() -> FreivaldsVerifier {
    FreivaldsVerifier::new(VerifierConfig {
        require_signature: true,
        ..*verifier().config()
    })
    .expect("valid config")
}

fn honest_signed(key: &PrivateKeySigner) -> Arc<SignedProver> {
    Arc::new(SignedProver::new(
        Arc::new(CpuProver::new(None)),
        key.clone(),
    ))
}

/// How a cheater relays its challenge to an honest provider.
#[derive(Clone, Copy, Debug)]
enum Relay {
    /// Forwards the challenge unchanged.
    AsIs,
    /// Re-addresses it to the honest provider and forwards the signed answer.
    Readdressed,
    /// Re-addresses it, then signs the honest provider's root with its own key.
    ReaddressedAndResigned,
}

struct Relayer {
    mode: Relay,
    own: PrivateKeySigner,
    honest_id: spheron_core::ProviderId,
    to: Arc<SignedProver>,
}

#[async_trait]
impl ChallengeProver for Relayer {
    async fn commit(&self, ch: &Challenge) -> spheron_core::Result<Commitment> {
        let mut fwd = ch.clone();
        if !matches!(self.mode, Relay::AsIs) {
            fwd.provider = Some(self.honest_id);
        }
        let mut c = self.to.commit(&fwd).await?;
        if let Relay::ReaddressedAndResigned = self.mode {
            c.signature = Some(binding::sign(&self.own, ch, &c.root)?);
        }
        Ok(c)
    }
    async fn open(&self, r: &Reveal) -> spheron_core::Result<Opening> {
        self.to.open(r).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_signed_provider_always_passes() {
    let key = PrivateKeySigner::random();
    let p = honest_signed(&key);
    let v = signing_verifier();
    let trials = 100;
    for t in 0..trials {
        let r = run_challenge(&v, p.as_ref(), provider_id(&key), GpuModel::L4, entropy(t)).await;
        assert!(r.verdict.passed(), "{}", r.verdict);
    }
    println!("honest signed provider: 0/{trials} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaying_to_an_honest_provider_is_always_caught() {
    let v = signing_verifier();
    let honest_key = PrivateKeySigner::random();
    let honest = honest_signed(&honest_key);
    for mode in [
        Relay::AsIs,
        Relay::Readdressed,
        Relay::ReaddressedAndResigned,
    ] {
        let own = PrivateKeySigner::random();
        let cheater = Relayer {
            mode,
            own: own.clone(),
            honest_id: provider_id(&honest_key),
            to: honest.clone(),
        };
        let trials = 50;
        let mut caught = 0;
        for t in 0..trials {
            let r = run_challenge(&v, &cheater, provider_id(&own), GpuModel::L4, entropy(t)).await;
            let ok = match mode {
                // The honest provider refuses a challenge addressed to someone else.
                Relay::AsIs => matches!(r.verdict, Verdict::Fail(FailReason::Malformed(_))),
                // Signed by the wrong key.
                Relay::Readdressed => {
                    matches!(r.verdict, Verdict::Fail(FailReason::BadSignature(_)))
                }
                // Signed by the right key, but the tree was keyed for the other provider.
                Relay::ReaddressedAndResigned => {
                    matches!(r.verdict, Verdict::Fail(FailReason::BadPath(_)))
                }
            };
            assert!(ok, "{mode:?}: {}", r.verdict);
            caught += 1;
        }
        println!("relay ({mode:?}): detection {caught}/{trials}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_old_session_is_always_caught() {
    let v = signing_verifier();
    let key = PrivateKeySigner::random();
    let me = provider_id(&key);
    let honest = honest_signed(&key);
    let trials = 50;
    let (mut as_is, mut relabelled, mut resigned) = (0, 0, 0);
    for t in 0..trials {
        // An honest, signed exchange, recorded.
        let [e1, e2] = entropy(t);
        let mut ch1 = v.issue(GpuModel::L4, e1);
        ch1.provider = Some(me);
        let c1 = honest.commit(&ch1).await.expect("commit");
        let r1 = v.reveal(&ch1, &c1, e2);
        let o1 = honest.open(&r1).await.expect("open");
        assert!(
            v.verify(&ch1, &c1, &r1, &o1, &ProofTiming::default())
                .passed()
        );
        // A new challenge answered with the old commitment and opening.
        let mut ch2 = v.issue(GpuModel::L4, e1);
        ch2.provider = Some(me);
        let r2 = v.reveal(&ch2, &c1, e2);
        let mut o = o1.clone();
        o.session = ch2.session;
        if matches!(
            v.verify(&ch2, &c1, &r2, &o, &ProofTiming::default()),
            Verdict::Fail(FailReason::Malformed(_))
        ) {
            as_is += 1;
        }
        let mut c = c1.clone();
        c.session = ch2.session;
        if matches!(
            v.verify(&ch2, &c, &r2, &o, &ProofTiming::default()),
            Verdict::Fail(FailReason::BadSignature(_))
        ) {
            relabelled += 1;
        }
    }
    // The provider itself re-signs its earlier products for a new session (no new work).
    let replayer = SignedProver::new(
        Arc::new(CpuProver::with_fault(None, Fault::Replay)),
        key.clone(),
    );
    for t in 0..trials {
        let r = run_challenge(&v, &replayer, me, GpuModel::L4, entropy(t + 1000)).await;
        if t == 0 {
            assert!(
                r.verdict.passed(),
                "the first exchange is honest: {}",
                r.verdict
            );
        } else if matches!(r.verdict, Verdict::Fail(FailReason::BadRow(_))) {
            resigned += 1;
        }
    }
    println!(
        "replay of an old signed session: as is {as_is}/{trials}, relabelled {relabelled}/{trials}, \
         re-signed old products {resigned}/{}",
        trials - 1
    );
    assert_eq!((as_is, relabelled, resigned), (trials, trials, trials - 1));
}

/// Row `i` of `A_k B` at size `n`, from the PRF (`b` is `B` as int8).
fn true_row(s: &[u64; 4], n: usize, b: &[i8], k: u32, i: usize) -> Vec<i32> {
    let a = spheron_gpu::prf::row(s, n, spheron_gpu::prf::a_id(k), i);
    let mut acc = vec![0i32; n];
    for (l, &av) in a.iter().enumerate() {
        for (c, &bv) in acc.iter_mut().zip(&b[l * n..(l + 1) * n]) {
            *c += av * i32::from(bv);
        }
    }
    acc
}

#[test]
fn rows_long_enough_for_the_vector_paths_pass_honest_and_fail_changed() {
    // n = 4396: each opened row has 16 full leaves hashed together (16 lanes), one more full
    // leaf and a ragged one hashed alone, and the PRF rows end in a partial vector of words.
    // Only the two sampled rows are computed; the other leaves of the tree are filler.
    use spheron_core::proof::{Commitment, OpenedRow, PROTOCOL_VERSION};
    use spheron_gpu::merkle::{self, Tree};
    use spheron_gpu::{binding, prf};
    let n = 4396u32;
    let nn = n as usize;
    let v = FreivaldsVerifier::new(VerifierConfig {
        n,
        samples: 2,
        untimed_batch: 2,
        timing: TimingPolicy::Off,
        require_signature: false,
        ..VerifierConfig::default()
    })
    .expect("valid config");
    let ch = v.issue(GpuModel::L4, [5; 32]);
    let s = prf::seed_words(&ch.seed);
    let mut commitment = Commitment {
        version: PROTOCOL_VERSION,
        session: ch.session,
        root: [0; 32],
        device: None,
        signature: None,
    };
    let reveal = v.reveal(&ch, &commitment, [6; 32]);
    let b = prf::matrix_i8(&s, nn, prf::B_ID);
    let rows: Vec<Vec<i32>> = reveal
        .samples
        .iter()
        .map(|x| true_row(&s, nn, &b, x.k, x.row as usize))
        .collect();
    let key = binding::tree_key(&ch);
    let index = |x: &spheron_core::proof::Sample| x.k as usize * nn + x.row as usize;
    // The opening of `rows` under a tree committing to them.
    let open = |rows: &[Vec<i32>], commitment: &mut Commitment| {
        let mut hashes: Vec<merkle::Hash> = (0..ch.batch as usize * nn)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        for (x, row) in reveal.samples.iter().zip(rows) {
            hashes[index(x)] = merkle::row_hash(&key, row);
        }
        let tree = Tree::new(&key, hashes);
        commitment.root = tree.root();
        Opening {
            version: PROTOCOL_VERSION,
            session: ch.session,
            rows: reveal
                .samples
                .iter()
                .zip(rows)
                .map(|(x, values)| OpenedRow {
                    sample: *x,
                    values: values.clone(),
                    path: tree.path(index(x)).expect("in range"),
                })
                .collect(),
        }
    };
    let t = ProofTiming::default();
    let honest = open(&rows, &mut commitment);
    let verdict = v.verify(&ch, &commitment, &reveal, &honest, &t);
    assert!(matches!(verdict, Verdict::Pass { .. }), "{verdict:?}");

    // One value changed, in a leaf hashed in the 16-lane group, and in the ragged leaf.
    for at in [15 * 256 + 7, nn - 1] {
        let mut changed = honest.clone();
        changed.rows[1].values[at] += 1;
        let verdict = v.verify(&ch, &commitment, &reveal, &changed, &t);
        assert!(
            matches!(verdict, Verdict::Fail(FailReason::BadPath(_))),
            "{at}: {verdict:?}"
        );
    }
    // A value outside ±2^14 n.
    let mut wild = honest.clone();
    wild.rows[0].values[300] = 16_384 * n as i32 + 1;
    let verdict = v.verify(&ch, &commitment, &reveal, &wild, &t);
    assert!(
        matches!(verdict, Verdict::Fail(FailReason::Malformed(_))),
        "{verdict:?}"
    );
    // A changed value under a tree that commits to it: the Freivalds probe catches it.
    let mut wrong = rows.clone();
    wrong[0][4100] -= 3;
    if reveal.samples[0] == reveal.samples[1] {
        // The same row drawn twice (chance 1 in K n): both openings must change alike.
        wrong[1] = wrong[0].clone();
    }
    let mut recommitted = commitment.clone();
    let opening = open(&wrong, &mut recommitted);
    let verdict = v.verify(&ch, &recommitted, &reveal, &opening, &t);
    assert!(
        matches!(verdict, Verdict::Fail(FailReason::BadRow(_))),
        "{verdict:?}"
    );
}
