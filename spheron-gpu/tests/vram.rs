//! The VRAM-residency round under [`VramSim::standard`]: CPU provers paced at a model's scaled
//! bandwidth stand in for GPUs (memory and bandwidth both scaled by 1e-6, so simulated times
//! equal the real GPU's). **All times here are simulated.** Trials run one at a time (a lock)
//! so that CPU work in this binary does not disturb the verifier's clock; every bound comes from
//! the model and the simulation, none from the test's clock. Run with `--nocapture` to see the
//! detection rates.

use async_trait::async_trait;
use spheron_core::{GpuModel, ProviderId};
use spheron_gpu::merkle::Tree;
use spheron_gpu::vram::{
    Keep, Keys, RoundAnswer, RoundRequest, SimProver, VramChallenge, VramCommitment, VramFailure,
    VramProver, VramProverError, VramSim, VramVerdict, answer_digest, fill, label, leaf,
    round_positions,
};
use std::sync::Mutex;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seeded session and seed of trial `t` (the verifier's own challenges use OS entropy).
fn entropy(t: u32, salt: u8) -> ([u8; 16], [u8; 32]) {
    let mut seed = [salt; 32];
    seed[..4].copy_from_slice(&t.to_le_bytes());
    let mut session = [salt ^ 0x5a; 16];
    session[..4].copy_from_slice(&t.to_le_bytes());
    (session, seed)
}

async fn trials(
    name: &str,
    prover: &dyn VramProver,
    claimed: GpuModel,
    count: u32,
    salt: u8,
) -> Vec<VramVerdict> {
    let v = VramSim::standard().verifier();
    let mut out = Vec::new();
    for t in 0..count {
        let (session, seed) = entropy(t, salt);
        let ch = v.challenge_from(Some(ProviderId::from_label(name)), claimed, session, seed);
        out.push(v.run(&ch, prover).await);
    }
    let failed = out.iter().filter(|v| !v.passed()).count();
    println!(
        "{name}: {failed}/{count} failed (detection {:.0} %); first verdict (simulated): {:?}",
        100.0 * failed as f64 / f64::from(count),
        out.first()
    );
    out
}

/// Late: a round past its bound, or (on a loaded machine) the fill past its deadline.
fn late_round(v: &VramVerdict) -> bool {
    matches!(
        v,
        VramVerdict::Fail(VramFailure::RoundLate { .. } | VramFailure::FillLate { .. })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_simulated_gpus_of_every_model_pass() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    for model in GpuModel::ALL {
        let p = SimProver::honest(sim, model);
        let r = trials(&format!("honest {model}"), &p, model, 3, 1).await;
        assert!(r.iter().all(VramVerdict::passed), "{model}: {r:?}");
    }
}

#[tokio::test]
async fn the_verifier_draws_fresh_challenges_from_os_entropy() {
    let v = VramSim::standard().verifier();
    let a = v.challenge(None, GpuModel::H200).expect("entropy");
    let b = v.challenge(None, GpuModel::H200).expect("entropy");
    assert_ne!(a.seed, b.seed);
    assert_ne!(a.session, b.session);
    assert_eq!(a.geometry, b.geometry);
}

/// The two pairs that compute cannot separate, each cheater filling at the *claimed* model's
/// bandwidth (so only memory can catch it), keeping what its own memory holds.
const PAIRS: [(GpuModel, GpuModel); 2] = [
    (GpuModel::H100Sxm, GpuModel::H200),
    (GpuModel::A100_40G, GpuModel::A100_80G),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_memory_keeping_the_top_layers_fails() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    for (actual, claimed) in PAIRS {
        let p = SimProver::new(sim, actual, claimed, Keep::TopOf(actual));
        let name = format!("{actual} keeping its memory's top layers, claiming {claimed}");
        let r = trials(&name, &p, claimed, 20, 2).await;
        assert!(r.iter().all(late_round), "{name}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_memory_keeping_a_uniform_fraction_fails() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    for (actual, claimed) in PAIRS {
        let p = SimProver::new(sim, actual, claimed, Keep::UniformOf(actual));
        let name = format!("{actual} keeping a uniform fraction, claiming {claimed}");
        let r = trials(&name, &p, claimed, 20, 3).await;
        assert!(r.iter().all(late_round), "{name}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prover_keeping_only_the_seed_fails() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    let p = SimProver::new(sim, GpuModel::H200, GpuModel::H200, Keep::Nothing);
    let r = trials("H200 keeping only the seed", &p, GpuModel::H200, 5, 4).await;
    assert!(r.iter().all(late_round), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smaller_models_at_their_own_bandwidth_miss_the_fill_deadline() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    for (actual, claimed) in PAIRS {
        // Even with all the memory it needs, its bandwidth is too low for the claim.
        let p = SimProver::new(sim, actual, actual, Keep::All);
        let r = trials(
            &format!("{actual} filling at its bandwidth as {claimed}"),
            &p,
            claimed,
            3,
            5,
        )
        .await;
        assert!(
            r.iter()
                .all(|v| matches!(v, VramVerdict::Fail(VramFailure::FillLate { .. }))),
            "{r:?}"
        );
    }
}

/// Keys, challenge, labels and tree of a filled array.
type Filled = (Keys, VramChallenge, Vec<[u8; 32]>, Tree);

/// A prover that fills and commits a cheap top layer (seed-derived, no parents: nothing to
/// keep, regenerated at once), keeping the rest honestly.
struct CheapTopLayer {
    inner: SimProver,
    state: Mutex<Option<Filled>>,
}

#[async_trait]
impl VramProver for CheapTopLayer {
    async fn fill(&self, ch: &VramChallenge) -> Result<VramCommitment, VramProverError> {
        let keys = Keys::of(ch);
        let g = ch.geometry;
        let mut all = fill(&keys, &g);
        let top = g.layers - 1;
        for v in 0..g.labels_per_layer {
            all[g.position(top, v) as usize] = label(&keys.label, top, v, &[]);
        }
        let tree = Tree::new(
            &keys.tree,
            all.iter().map(|l| leaf(&keys.tree, l)).collect(),
        );
        let root = tree.root();
        *self.state.lock().map_err(|e| e.to_string())? = Some((keys, ch.clone(), all, tree));
        // Paced like the honest claim.
        self.inner.fill(ch).await?;
        Ok(VramCommitment {
            session: ch.session,
            root,
            signature: None,
        })
    }

    async fn open(&self, req: &RoundRequest) -> Result<RoundAnswer, VramProverError> {
        // The honest answer's shape, with this prover's labels and paths.
        let mut a = self.inner.open(req).await?;
        let guard = self.state.lock().map_err(|e| e.to_string())?;
        let (keys, ch, all, tree) = guard.as_ref().ok_or("not filled")?;
        let g = ch.geometry;
        for o in &mut a.openings {
            let (layer, index) = g.locate(o.position).ok_or("outside")?;
            o.label.label = all[o.position as usize];
            o.label.path = tree.path(o.position as usize).unwrap_or_default();
            let ps = spheron_gpu::vram::parents(&keys.expander, &g, layer, index);
            for (p, u) in o.parents.iter_mut().zip(ps) {
                let pos = g.position(layer - 1, u) as usize;
                p.label = all[pos];
                p.path = tree.path(pos).unwrap_or_default();
            }
        }
        Ok(a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_wrong_label_fails() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    let p = CheapTopLayer {
        inner: SimProver::honest(sim, GpuModel::L4),
        state: Mutex::new(None),
    };
    let r = trials("L4 with a cheap top layer", &p, GpuModel::L4, 5, 6).await;
    assert!(
        r.iter()
            .all(|v| matches!(v, VramVerdict::Fail(VramFailure::BadLabel { .. }))),
        "{r:?}"
    );
}

/// Answers honestly, then lets `tamper` change the answer.
struct Tamper<F> {
    inner: SimProver,
    tamper: F,
}

#[async_trait]
impl<F: Fn(&mut RoundAnswer) + Send + Sync> VramProver for Tamper<F> {
    async fn fill(&self, ch: &VramChallenge) -> Result<VramCommitment, VramProverError> {
        self.inner.fill(ch).await
    }
    async fn open(&self, req: &RoundRequest) -> Result<RoundAnswer, VramProverError> {
        let mut a = self.inner.open(req).await?;
        (self.tamper)(&mut a);
        Ok(a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_labels_and_paths_in_an_answer_fail() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    let m = GpuModel::A10;
    let flip_label = Tamper {
        inner: SimProver::honest(sim, m),
        tamper: |a: &mut RoundAnswer| a.openings[0].label.label[0] ^= 1,
    };
    let flip_parent = Tamper {
        inner: SimProver::honest(sim, m),
        tamper: |a: &mut RoundAnswer| {
            if let Some(p) = a.openings.iter_mut().find_map(|o| o.parents.first_mut()) {
                p.label[5] ^= 1;
            }
        },
    };
    let flip_path = Tamper {
        inner: SimProver::honest(sim, m),
        tamper: |a: &mut RoundAnswer| a.openings[1].label.path[2][0] ^= 1,
    };
    let short_path = Tamper {
        inner: SimProver::honest(sim, m),
        tamper: |a: &mut RoundAnswer| {
            a.openings[0].label.path.pop();
        },
    };
    let provers: [(&str, &dyn VramProver); 4] = [
        ("flipped label", &flip_label),
        ("flipped parent", &flip_parent),
        ("flipped path", &flip_path),
        ("short path", &short_path),
    ];
    for (name, p) in provers {
        let r = trials(name, p, m, 4, 7).await;
        assert!(
            r.iter()
                .all(|v| matches!(v, VramVerdict::Fail(VramFailure::BadPath { .. }))),
            "{name}: {r:?}"
        );
    }
    let dropped = Tamper {
        inner: SimProver::honest(sim, m),
        tamper: |a: &mut RoundAnswer| {
            a.openings.pop();
        },
    };
    let r = trials("dropped opening", &dropped, m, 2, 8).await;
    assert!(
        r.iter()
            .all(|v| matches!(v, VramVerdict::Fail(VramFailure::Malformed { .. }))),
        "{r:?}"
    );
}

/// Records the answers of its first session and replays them in later ones.
struct Replay {
    inner: SimProver,
    recorded: Mutex<Vec<RoundAnswer>>,
    /// Rewrite the session id of replayed answers to the current one.
    rewrite: bool,
}

#[async_trait]
impl VramProver for Replay {
    async fn fill(&self, ch: &VramChallenge) -> Result<VramCommitment, VramProverError> {
        self.inner.fill(ch).await
    }
    async fn open(&self, req: &RoundRequest) -> Result<RoundAnswer, VramProverError> {
        let old = self
            .recorded
            .lock()
            .map_err(|e| e.to_string())?
            .iter()
            .find(|a| a.round == req.round && a.session != req.session)
            .cloned();
        if let Some(mut a) = old {
            if self.rewrite {
                a.session = req.session;
            }
            return Ok(a);
        }
        let a = self.inner.open(req).await?;
        self.recorded
            .lock()
            .map_err(|e| e.to_string())?
            .push(a.clone());
        Ok(a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_answers_fail() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    for rewrite in [false, true] {
        let p = Replay {
            inner: SimProver::honest(sim, GpuModel::L40S),
            recorded: Mutex::new(Vec::new()),
            rewrite,
        };
        let r = trials(
            &format!("replay (session rewritten: {rewrite})"),
            &p,
            GpuModel::L40S,
            4,
            9,
        )
        .await;
        assert!(r[0].passed(), "the recorded session is honest: {:?}", r[0]);
        for v in &r[1..] {
            let expected = if rewrite {
                matches!(v, VramVerdict::Fail(VramFailure::Malformed { .. }))
            } else {
                matches!(v, VramVerdict::Fail(VramFailure::WrongSession { .. }))
            };
            assert!(expected, "{v:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commitments_must_be_signed_by_the_challenged_provider() {
    use alloy_signer_local::PrivateKeySigner;
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    let v = sim.verifier().requiring_signatures();
    let me = PrivateKeySigner::random();
    let other = PrivateKeySigner::random();
    let id = spheron_gpu::binding::provider_id(&me);
    let m = GpuModel::Rtx4090;
    let (session, seed) = entropy(0, 10);
    let ch = v.challenge_from(Some(id), m, session, seed);
    let signed = SimProver::honest(sim, m).signed(me);
    let r = v.run(&ch, &signed).await;
    assert!(r.passed(), "{r:?}");
    for (name, p) in [
        ("unsigned", SimProver::honest(sim, m)),
        (
            "signed by another key",
            SimProver::honest(sim, m).signed(other),
        ),
    ] {
        let r = v.run(&ch, &p).await;
        println!("{name}: {r:?}");
        assert!(
            matches!(r, VramVerdict::Fail(VramFailure::Unsigned(_))),
            "{name}: {r:?}"
        );
    }
}

/// Per-round escape rate without any clock: the cheater runs unpaced (bandwidth scale 1), and
/// each round's recomputed labels are priced at the standard simulation's per-label time of
/// its model; a round escapes when that stays within the round bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_round_escape_rates_of_smaller_memories() {
    let _g = SERIAL.lock().await;
    let sim = VramSim::standard();
    let unpaced = VramSim {
        bandwidth_scale: 1.0,
        ..sim
    };
    let v = sim.verifier();
    for (actual, claimed) in PAIRS {
        for keep in [Keep::TopOf(actual), Keep::UniformOf(actual)] {
            let p = SimProver::new(unpaced, actual, claimed, keep);
            let (mut rounds, mut escaped) = (0u32, 0u32);
            for t in 0..20 {
                let (session, seed) = entropy(t, 11);
                let ch = v.challenge_from(None, claimed, session, seed);
                let keys = Keys::of(&ch);
                let c = p.fill(&ch).await.expect("fill");
                let mut previous = c.root;
                for round in 0..ch.rounds {
                    let req = RoundRequest {
                        session: ch.session,
                        round,
                        positions: round_positions(
                            &keys,
                            &ch.geometry,
                            ch.queries,
                            round,
                            &previous,
                        ),
                    };
                    let before = p.recomputed();
                    let a = p.open(&req).await.expect("open");
                    let hashed = u32::try_from(p.recomputed() - before).unwrap_or(u32::MAX);
                    let cost = sim.per_label(actual).saturating_mul(hashed);
                    rounds += 1;
                    if cost.as_micros() <= u128::from(ch.round_bound_us) {
                        escaped += 1;
                    }
                    previous = answer_digest(&keys, &a);
                }
            }
            let rate = f64::from(escaped) / f64::from(rounds);
            println!(
                "{actual} ({keep:?}) claiming {claimed}: {escaped}/{rounds} rounds within the bound \
                 ({:.1} %); all {} rounds of a challenge: ~{:.1e}",
                100.0 * rate,
                sim.rounds,
                rate.powi(sim.rounds as i32)
            );
            // A cheater must escape every round; far fewer than half do.
            assert!(rate < 0.5, "{actual} {keep:?}: {escaped}/{rounds}");
        }
    }
}
