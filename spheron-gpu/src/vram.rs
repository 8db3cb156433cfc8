//! The VRAM-residency round, **in simulation** (design: `VRAM-ROUND.md`): a proof of space on
//! stacked expanders that tells apart models whose compute is the same but whose memory is not
//! (H200 141 GB vs H100 80 GB, A100 80 GB vs 40 GB).
//!
//! 1. **Challenge** ([`VramChallenge`]): a fresh seed and session from OS entropy, the
//!    provider, the claimed model, the array's [`Geometry`] (`layers` of `labels_per_layer`
//!    32-byte labels, in-degree `degree`), `rounds` x `queries` openings, a per-round latency
//!    bound and a fill deadline.
//! 2. **Fill**: layer 0 label `v` is [`label`]`(key, 0, v, [])`; layer `j > 0` label `v` is
//!    `label(key, j, v, parents)` over its `degree` [`parents`] in layer `j - 1`, drawn from a
//!    seeded bipartite expander. Every layer is kept.
//! 3. **Commit** ([`VramCommitment`]): the root of a keyed, domain-separated Merkle tree
//!    ([`crate::merkle`]) over all labels, layer by layer, within the fill deadline; signed by
//!    the provider's key ([`sign`], like [`crate::binding`]) when the verifier requires it.
//! 4. **Openings**: a chain of `rounds` rounds of `queries` labels each ([`RoundRequest`]); round
//!    `i`'s positions are derived from round `i - 1`'s answer ([`round_positions`]), so nothing
//!    can be asked in advance. Every opening carries the label, its parents and Merkle paths.
//! 5. **Verifier** ([`VramVerifier`]): checks every path and every label against its parents,
//!    `O(rounds x queries x degree x log N)` hashes; it never regenerates the array. It times the
//!    fill and each round on its own clock.
//!
//! A prover without the memory must recompute a missing label from its parents, recursively:
//! dropping a layer makes every label above it expensive. [`VramSim`] sets the scale: memory and
//! bandwidth scaled by the same factor (so simulated times equal the real GPU's times), provers
//! paced at their model's bandwidth. **Every time here is simulated**: CPU provers sleeping to a
//! GPU's pace, not a GPU.

use crate::catalog::spec;
use crate::merkle::{self, Hash, Tree, TreeKey};
use alloy_primitives::Signature;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use async_trait::async_trait;
use spheron_core::{GpuModel, ProviderId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A label: 32 bytes.
pub type Label = [u8; 32];

/// Context of the label key.
pub const LABEL_CONTEXT: &str = "spheron 2026 vram label";
/// Context of the expander (parent selection) key.
pub const EXPANDER_CONTEXT: &str = "spheron 2026 vram expander";
/// Context of the round-chain key.
pub const CHAIN_CONTEXT: &str = "spheron 2026 vram chain";
/// Context of the Merkle leaf key of the round.
pub const LEAF_CONTEXT: &str = "spheron 2026 vram merkle leaf";
/// Context of the Merkle node key of the round.
pub const NODE_CONTEXT: &str = "spheron 2026 vram merkle node";

/// Bytes per label.
pub const LABEL_BYTES: u64 = 32;

/// Shape of the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Geometry {
    /// Number of layers (layer 0 has no parents).
    pub layers: u32,
    /// Labels per layer.
    pub labels_per_layer: u32,
    /// Parents per label in the previous layer.
    pub degree: u32,
}

impl Geometry {
    /// Labels in the whole array.
    pub fn total(&self) -> u64 {
        u64::from(self.layers) * u64::from(self.labels_per_layer)
    }

    /// Bytes in the whole array.
    pub fn bytes(&self) -> u64 {
        self.total() * LABEL_BYTES
    }

    /// `(layer, index)` of a global position (layer-major), `None` if out of range.
    pub fn locate(&self, pos: u64) -> Option<(u32, u32)> {
        if pos >= self.total() || self.labels_per_layer == 0 {
            return None;
        }
        let n = u64::from(self.labels_per_layer);
        Some(((pos / n) as u32, (pos % n) as u32))
    }

    /// Global position of `(layer, index)`.
    pub fn position(&self, layer: u32, index: u32) -> u64 {
        u64::from(layer) * u64::from(self.labels_per_layer) + u64::from(index)
    }
}

/// A VRAM-residency challenge.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VramChallenge {
    /// Session id (fresh, OS entropy).
    #[serde(with = "spheron_core::proof::hex_bytes")]
    pub session: [u8; 16],
    /// Seed of labels and expander (fresh, OS entropy).
    #[serde(with = "spheron_core::proof::hex_bytes")]
    pub seed: [u8; 32],
    /// The challenged provider; keys the labels and the tree.
    pub provider: Option<ProviderId>,
    /// The model whose memory is claimed.
    pub claimed: GpuModel,
    /// Shape of the array to fill.
    pub geometry: Geometry,
    /// Rounds in the opening chain.
    pub rounds: u32,
    /// Labels opened per round.
    pub queries: u32,
    /// Latency bound of one round (the verifier's clock), round-trip credit included, in µs.
    pub round_bound_us: u64,
    /// Deadline of the commitment from the challenge (the verifier's clock), in µs.
    pub fill_deadline_us: u64,
}

/// The keys of one challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    /// Key of label hashes.
    pub label: [u8; 32],
    /// Key of parent selection.
    pub expander: [u8; 32],
    /// Key of the round chain.
    pub chain: [u8; 32],
    /// Keys of the Merkle tree.
    pub tree: TreeKey,
}

impl Keys {
    /// The keys of `ch`: every one derived from its session, provider and seed.
    pub fn of(ch: &VramChallenge) -> Self {
        let mut ctx = [0u8; 68];
        ctx[..16].copy_from_slice(&ch.session);
        ctx[16..36].copy_from_slice(&ch.provider.map(|p| p.0).unwrap_or([0; 20]));
        ctx[36..].copy_from_slice(&ch.seed);
        Keys {
            label: blake3::derive_key(LABEL_CONTEXT, &ctx),
            expander: blake3::derive_key(EXPANDER_CONTEXT, &ctx),
            chain: blake3::derive_key(CHAIN_CONTEXT, &ctx),
            tree: TreeKey {
                leaf: blake3::derive_key(LEAF_CONTEXT, &ctx),
                node: blake3::derive_key(NODE_CONTEXT, &ctx),
            },
        }
    }
}

/// Label `index` of `layer`: `BLAKE3_keyed(key, layer || index || parents...)` (little-endian
/// u32s, then the parents' labels in expander order).
pub fn label(key: &[u8; 32], layer: u32, index: u32, parents: &[Label]) -> Label {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&layer.to_le_bytes());
    h.update(&index.to_le_bytes());
    for p in parents {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// The parents (indices in layer `layer - 1`) of label `index` of `layer`: `degree` indices
/// from the seeded expander; empty for layer 0.
pub fn parents(key: &[u8; 32], g: &Geometry, layer: u32, index: u32) -> Vec<u32> {
    if layer == 0 || g.labels_per_layer == 0 {
        return Vec::new();
    }
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&layer.to_le_bytes());
    h.update(&index.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut buf = [0u8; 8];
    (0..g.degree)
        .map(|_| {
            xof.fill(&mut buf);
            (u64::from_le_bytes(buf) % u64::from(g.labels_per_layer)) as u32
        })
        .collect()
}

/// The Merkle leaf of a label.
pub fn leaf(tree: &TreeKey, l: &Label) -> Hash {
    *blake3::keyed_hash(&tree.leaf, l).as_bytes()
}

/// Fills the whole array honestly (layer-major).
pub fn fill(keys: &Keys, g: &Geometry) -> Vec<Label> {
    let n = g.labels_per_layer as usize;
    let mut out: Vec<Label> = Vec::with_capacity(g.total() as usize);
    for layer in 0..g.layers {
        for v in 0..g.labels_per_layer {
            let ps: Vec<Label> = parents(&keys.expander, g, layer, v)
                .into_iter()
                .map(|u| out[(layer as usize - 1) * n + u as usize])
                .collect();
            out.push(label(&keys.label, layer, v, &ps));
        }
    }
    out
}

/// The commitment to a filled array.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VramCommitment {
    /// The challenge's session.
    #[serde(with = "spheron_core::proof::hex_bytes")]
    pub session: [u8; 16],
    /// Merkle root over all labels, layer-major.
    #[serde(with = "spheron_core::proof::hex_bytes")]
    pub root: Hash,
    /// EIP-191 signature `r || s || v` over [`commitment_message`] by the provider's key.
    #[serde(with = "spheron_core::proof::opt_hex65")]
    pub signature: Option<[u8; 65]>,
}

/// Domain string at the start of every signed VRAM commitment.
pub const DOMAIN: &[u8] = b"spheron vram commitment v1";

/// The message a provider signs for `root` in answer to `ch`:
/// `DOMAIN || provider (20 bytes, zero if none) || session || blake3(seed) || root`.
pub fn commitment_message(ch: &VramChallenge, root: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 20 + 16 + 64);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&ch.provider.map(|p| p.0).unwrap_or([0; 20]));
    m.extend_from_slice(&ch.session);
    m.extend_from_slice(blake3::hash(&ch.seed).as_bytes());
    m.extend_from_slice(root);
    m
}

/// Signs `root` for `ch` with `key` (EIP-191).
pub fn sign(key: &PrivateKeySigner, ch: &VramChallenge, root: &Hash) -> Result<[u8; 65], String> {
    key.sign_message_sync(&commitment_message(ch, root))
        .map(|s| s.as_bytes())
        .map_err(|e| format!("signing the commitment: {e}"))
}

/// `None` when `c` is signed by the provider `ch` names, else why not.
pub fn check_signature(ch: &VramChallenge, c: &VramCommitment) -> Option<String> {
    let Some(expected) = ch.provider else {
        return Some("the challenge names no provider to check the signature against".into());
    };
    let Some(raw) = c.signature else {
        return Some("the commitment is not signed".into());
    };
    let sig = match Signature::from_raw(&raw) {
        Ok(s) => s,
        Err(e) => return Some(format!("bad signature encoding: {e}")),
    };
    match sig.recover_address_from_msg(commitment_message(ch, &c.root)) {
        Err(e) => Some(format!("signature does not recover: {e}")),
        Ok(a) if a.0.0 == expected.0 => None,
        Ok(a) => Some(format!(
            "signed by {a:#x}, not by the challenged provider {expected}"
        )),
    }
}

/// One round of the opening chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoundRequest {
    /// The challenge's session.
    #[serde(with = "spheron_core::proof::hex_bytes")]
    pub session: [u8; 16],
    /// Round number, from 0.
    pub round: u32,
    /// Global positions to open.
    pub positions: Vec<u64>,
}

/// A label with its Merkle path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathLabel {
    /// The label.
    #[serde(with = "spheron_core::proof::hex_bytes")]
    pub label: Label,
    /// Sibling path of its leaf.
    #[serde(with = "hex_path")]
    pub path: Vec<Hash>,
}

/// One opened label: the label, its parents (in expander order) and all their paths.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Opening {
    /// Global position of the label.
    pub position: u64,
    /// The label and its path.
    pub label: PathLabel,
    /// Its parents and their paths.
    pub parents: Vec<PathLabel>,
}

/// A prover's answer to one round.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoundAnswer {
    /// The challenge's session.
    #[serde(with = "spheron_core::proof::hex_bytes")]
    pub session: [u8; 16],
    /// The round answered.
    pub round: u32,
    /// One opening per requested position, in order.
    pub openings: Vec<Opening>,
}

/// The positions of round `round`: derived from the commitment root (round 0) or the previous
/// round's answer, so a prover learns them only after answering the round before.
pub fn round_positions(
    keys: &Keys,
    g: &Geometry,
    queries: u32,
    round: u32,
    previous: &Hash,
) -> Vec<u64> {
    let mut h = blake3::Hasher::new_keyed(&keys.chain);
    h.update(&round.to_le_bytes());
    h.update(previous);
    let mut xof = h.finalize_xof();
    let mut buf = [0u8; 8];
    (0..queries)
        .map(|_| {
            xof.fill(&mut buf);
            u64::from_le_bytes(buf) % g.total().max(1)
        })
        .collect()
}

/// The digest of an answer that seeds the next round.
pub fn answer_digest(keys: &Keys, a: &RoundAnswer) -> Hash {
    let mut h = blake3::Hasher::new_keyed(&keys.chain);
    h.update(b"answer");
    h.update(&a.round.to_le_bytes());
    for o in &a.openings {
        h.update(&o.position.to_le_bytes());
        h.update(&o.label.label);
        for p in &o.parents {
            h.update(&p.label);
        }
    }
    *h.finalize().as_bytes()
}

/// Why a prover failed (or could not take) the round.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VramFailure {
    /// The commitment came after the fill deadline.
    #[error("commitment after {took_us} µs, deadline {deadline_us} µs (simulated)")]
    FillLate {
        /// Measured by the verifier.
        took_us: u64,
        /// The deadline.
        deadline_us: u64,
    },
    /// A round's answer came after its latency bound.
    #[error("round {round} answered after {took_us} µs, bound {bound_us} µs (simulated)")]
    RoundLate {
        /// The round.
        round: u32,
        /// Measured by the verifier.
        took_us: u64,
        /// The bound.
        bound_us: u64,
    },
    /// The commitment or an answer is for another session or round (a replay).
    #[error("answer for session/round other than the one asked (round {round})")]
    WrongSession {
        /// The round asked.
        round: u32,
    },
    /// An answer has the wrong openings (count, positions or number of parents).
    #[error("round {round}: {reason}")]
    Malformed {
        /// The round.
        round: u32,
        /// What was wrong.
        reason: String,
    },
    /// A Merkle path does not lead to the committed root.
    #[error("round {round}: path of position {position} does not verify")]
    BadPath {
        /// The round.
        round: u32,
        /// The label (or parent) position.
        position: u64,
    },
    /// A label is not the hash of its parents.
    #[error("round {round}: label at position {position} is not the hash of its parents")]
    BadLabel {
        /// The round.
        round: u32,
        /// The label position.
        position: u64,
    },
    /// The commitment is not signed by the challenged provider (or the challenge names none).
    #[error("commitment not bound to the provider: {0}")]
    Unsigned(String),
    /// The prover returned an error.
    #[error("prover error: {0}")]
    Prover(String),
    /// The prover is busy with another session (not a failure of this one).
    #[error("prover busy; retry after {retry_after_ms} ms")]
    Busy {
        /// How long it asked to wait.
        retry_after_ms: u64,
    },
}

impl From<VramProverError> for VramFailure {
    fn from(e: VramProverError) -> Self {
        match e {
            VramProverError::Busy { retry_after_ms } => VramFailure::Busy { retry_after_ms },
            VramProverError::Failed(s) => VramFailure::Prover(s),
        }
    }
}

/// The verdict of one VRAM round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VramVerdict {
    /// Every check passed.
    Pass {
        /// Fill time measured by the verifier, µs (simulated).
        fill_us: u64,
        /// Slowest round, µs (simulated).
        worst_round_us: u64,
    },
    /// The first check that failed.
    Fail(VramFailure),
}

impl VramVerdict {
    /// Whether the prover passed.
    pub fn passed(&self) -> bool {
        matches!(self, VramVerdict::Pass { .. })
    }
}

/// Why a prover did not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VramProverError {
    /// It is answering another session's round now (its memory holds one array): not a
    /// failure; ask again later.
    #[error("busy with another VRAM round; retry after {retry_after_ms} ms")]
    Busy {
        /// How long to wait.
        retry_after_ms: u64,
    },
    /// Anything else (unreachable, refused, malformed answer, an unknown session).
    #[error("{0}")]
    Failed(String),
}

impl From<String> for VramProverError {
    fn from(s: String) -> Self {
        VramProverError::Failed(s)
    }
}

impl From<&str> for VramProverError {
    fn from(s: &str) -> Self {
        VramProverError::Failed(s.to_string())
    }
}

/// A prover of the VRAM round.
#[async_trait]
pub trait VramProver: Send + Sync {
    /// Fills the array of `ch` and commits to it.
    async fn fill(&self, ch: &VramChallenge) -> Result<VramCommitment, VramProverError>;
    /// Answers one round of openings.
    async fn open(&self, req: &RoundRequest) -> Result<RoundAnswer, VramProverError>;
}

/// The simulation's setting: scales, geometry and bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VramSim {
    /// Multiplier from real to simulated memory (`1e-6`: an H200's 126.9 GiB fill is 133 KiB).
    pub memory_scale: f64,
    /// Multiplier from real to simulated bandwidth; equal to `memory_scale`, simulated fill
    /// times equal the real GPU's.
    pub bandwidth_scale: f64,
    /// Fraction of the claimed memory to fill.
    pub fill_fraction: f64,
    /// Layers of the array.
    pub layers: u32,
    /// Parents per label.
    pub degree: u32,
    /// Rounds of the chain.
    pub rounds: u32,
    /// Openings per round.
    pub queries: u32,
    /// Latency bound of a round before the round-trip credit, µs.
    pub round_us: u64,
    /// Round-trip credit, µs (capped; in-process provers have no network).
    pub rtt_credit_us: u64,
    /// Fill deadline as a multiple of the claimed model's fill time.
    pub fill_margin: f64,
}

impl VramSim {
    /// The test setting: scale `1e-6` for memory and bandwidth, 90 % fill, 16 layers,
    /// degree 8, 8 rounds of 8 openings, 20 ms + 2 ms per round, fill deadline 1.25x the
    /// claimed model's fill time.
    pub const fn standard() -> Self {
        VramSim {
            memory_scale: 1e-6,
            bandwidth_scale: 1e-6,
            fill_fraction: 0.9,
            layers: 16,
            degree: 8,
            rounds: 8,
            queries: 8,
            round_us: 20_000,
            rtt_credit_us: 2_000,
            fill_margin: 1.25,
        }
    }

    /// The network setting: [`VramSim::standard`] with 40 ms per round before the round-trip
    /// credit, room for a round's answer (72 labels with their Merkle paths, about 64 KiB of
    /// JSON) to cross HTTP on a loaded machine; with the largest credit
    /// ([`MAX_RTT_CREDIT_US`]) a round may take 50 ms, still under what a smaller memory
    /// takes to recompute its missing labels (`cargo test -p spheron-gpu --test vram_http`).
    pub const fn network() -> Self {
        let mut s = Self::standard();
        s.round_us = 40_000;
        s
    }

    /// Labels that `model`'s whole memory holds at this scale.
    pub fn capacity(&self, model: GpuModel) -> u64 {
        let gib = spec(model).map_or(0, |s| s.memory_gib);
        (f64::from(gib) * (1u64 << 30) as f64 * self.memory_scale / LABEL_BYTES as f64) as u64
    }

    /// The array a claim of `model` must fill.
    pub fn geometry(&self, model: GpuModel) -> Geometry {
        let total = self.capacity(model) as f64 * self.fill_fraction;
        Geometry {
            layers: self.layers,
            labels_per_layer: (total / f64::from(self.layers.max(1))) as u32,
            degree: self.degree,
        }
    }

    /// Simulated time `model` takes per label in bulk: one write and `degree` parent reads at
    /// its scaled bandwidth. (A generous price for a cheater's recomputation: on-demand labels
    /// cost more than bulk ones.)
    pub fn per_label(&self, model: GpuModel) -> Duration {
        let bw = spec(model).map_or(0.0, |s| f64::from(s.bandwidth_gbs)) * 1e9;
        let bytes = LABEL_BYTES as f64 * f64::from(self.degree + 1);
        let rate = bw * self.bandwidth_scale;
        if rate <= 0.0 {
            return Duration::MAX;
        }
        Duration::from_secs_f64(bytes / rate)
    }

    /// Simulated time for `model` to fill `g`.
    pub fn fill_time(&self, model: GpuModel, g: &Geometry) -> Duration {
        self.per_label(model)
            .saturating_mul(u32::try_from(g.total()).unwrap_or(u32::MAX))
    }

    /// The verifier of this setting.
    pub fn verifier(&self) -> VramVerifier {
        VramVerifier {
            sim: *self,
            require_signature: false,
        }
    }
}

/// The verifier: issues challenges from OS entropy and checks a prover's answers.
#[derive(Clone, Copy, Debug)]
pub struct VramVerifier {
    sim: VramSim,
    require_signature: bool,
}

/// Largest round-trip credit a verifier gives a VRAM round over the network, µs: the
/// latency bounds must still separate the catalog's pairs with it (see `BENCHMARKS.md`). A
/// verifier far from a provider (more than 10 ms away) cannot tell memory apart this way.
pub const MAX_RTT_CREDIT_US: u64 = 10_000;

impl VramVerifier {
    /// This verifier, crediting every round and the fill with `rtt` of network round trip,
    /// as the verifier measured it itself, capped at [`MAX_RTT_CREDIT_US`].
    #[must_use]
    pub fn with_rtt_credit(mut self, rtt: Duration) -> Self {
        self.sim.rtt_credit_us = micros(rtt).min(MAX_RTT_CREDIT_US);
        self
    }

    /// This verifier, accepting only commitments signed by the challenged provider.
    pub fn requiring_signatures(mut self) -> Self {
        self.require_signature = true;
        self
    }

    /// A fresh challenge for a claim of `claimed` by `provider`: seed and session from the
    /// operating system's entropy, bounds from the model and the simulation.
    pub fn challenge(
        &self,
        provider: Option<ProviderId>,
        claimed: GpuModel,
    ) -> Result<VramChallenge, getrandom::Error> {
        let mut session = [0u8; 16];
        let mut seed = [0u8; 32];
        getrandom::fill(&mut session)?;
        getrandom::fill(&mut seed)?;
        Ok(self.challenge_from(provider, claimed, session, seed))
    }

    /// The challenge [`VramVerifier::challenge`] issues, with the given session and seed
    /// instead of fresh entropy: for reproducible tests and audits only (a verifier that
    /// reuses or predicts them lets a prover precompute).
    pub fn challenge_from(
        &self,
        provider: Option<ProviderId>,
        claimed: GpuModel,
        session: [u8; 16],
        seed: [u8; 32],
    ) -> VramChallenge {
        let g = self.sim.geometry(claimed);
        let fill = self.sim.fill_time(claimed, &g).as_secs_f64() * self.sim.fill_margin;
        VramChallenge {
            session,
            seed,
            provider,
            claimed,
            geometry: g,
            rounds: self.sim.rounds,
            queries: self.sim.queries,
            round_bound_us: self.sim.round_us + self.sim.rtt_credit_us,
            fill_deadline_us: (fill * 1e6) as u64 + self.sim.rtt_credit_us,
        }
    }

    /// Runs `ch` against `prover`, timing the fill and every round on the verifier's clock.
    pub async fn run(&self, ch: &VramChallenge, prover: &dyn VramProver) -> VramVerdict {
        match run_inner(ch, prover, self.require_signature).await {
            Ok(v) => v,
            Err(f) => VramVerdict::Fail(f),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn run_inner(
    ch: &VramChallenge,
    prover: &dyn VramProver,
    require_signature: bool,
) -> Result<VramVerdict, VramFailure> {
    let keys = Keys::of(ch);
    let start = Instant::now();
    let c = prover.fill(ch).await?;
    let fill_us = micros(start.elapsed());
    if fill_us > ch.fill_deadline_us {
        return Err(VramFailure::FillLate {
            took_us: fill_us,
            deadline_us: ch.fill_deadline_us,
        });
    }
    if c.session != ch.session {
        return Err(VramFailure::WrongSession { round: 0 });
    }
    if let Some(why) = check_signature(ch, &c).filter(|_| require_signature) {
        return Err(VramFailure::Unsigned(why));
    }
    let mut previous = c.root;
    let mut worst = 0;
    for round in 0..ch.rounds {
        let positions = round_positions(&keys, &ch.geometry, ch.queries, round, &previous);
        let req = RoundRequest {
            session: ch.session,
            round,
            positions: positions.clone(),
        };
        let t = Instant::now();
        let a = prover.open(&req).await?;
        let took = micros(t.elapsed());
        // A wrong answer is reported as wrong even when it is also late: the content is the
        // stronger evidence, and timing noise must not hide it.
        check_answer(ch, &keys, &c.root, &req, &a)?;
        if took > ch.round_bound_us {
            return Err(VramFailure::RoundLate {
                round,
                took_us: took,
                bound_us: ch.round_bound_us,
            });
        }
        worst = worst.max(took);
        previous = answer_digest(&keys, &a);
    }
    Ok(VramVerdict::Pass {
        fill_us,
        worst_round_us: worst,
    })
}

/// Checks one answer against the committed root: positions, paths, and every label against
/// its parents.
pub fn check_answer(
    ch: &VramChallenge,
    keys: &Keys,
    root: &Hash,
    req: &RoundRequest,
    a: &RoundAnswer,
) -> Result<(), VramFailure> {
    let round = req.round;
    if a.session != ch.session || a.round != round {
        return Err(VramFailure::WrongSession { round });
    }
    if a.openings.len() != req.positions.len() {
        return Err(VramFailure::Malformed {
            round,
            reason: format!(
                "{} openings for {} positions",
                a.openings.len(),
                req.positions.len()
            ),
        });
    }
    let g = &ch.geometry;
    let leaves = usize::try_from(g.total()).unwrap_or(usize::MAX);
    let verify = |pos: u64, pl: &PathLabel| {
        let ok = usize::try_from(pos).ok().and_then(|i| {
            merkle::root_from_path(&keys.tree, leaf(&keys.tree, &pl.label), i, leaves, &pl.path)
        }) == Some(*root);
        if ok {
            Ok(())
        } else {
            Err(VramFailure::BadPath {
                round,
                position: pos,
            })
        }
    };
    for (o, &pos) in a.openings.iter().zip(&req.positions) {
        if o.position != pos {
            return Err(VramFailure::Malformed {
                round,
                reason: format!("opened position {} where {pos} was asked", o.position),
            });
        }
        let Some((layer, index)) = g.locate(pos) else {
            return Err(VramFailure::Malformed {
                round,
                reason: format!("position {pos} outside the array"),
            });
        };
        let ps = parents(&keys.expander, g, layer, index);
        if o.parents.len() != ps.len() {
            return Err(VramFailure::Malformed {
                round,
                reason: format!(
                    "{} parents at position {pos}, expected {}",
                    o.parents.len(),
                    ps.len()
                ),
            });
        }
        verify(pos, &o.label)?;
        for (p, &u) in o.parents.iter().zip(&ps) {
            verify(g.position(layer - 1, u), p)?;
        }
        let labels: Vec<Label> = o.parents.iter().map(|p| p.label).collect();
        if label(&keys.label, layer, index, &labels) != o.label.label {
            return Err(VramFailure::BadLabel {
                round,
                position: pos,
            });
        }
    }
    Ok(())
}

/// What a simulated prover keeps of the array.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Keep {
    /// Everything (honest).
    All,
    /// The highest positions that fit in `model`'s memory: it drops the lowest layers, whose
    /// labels are the cheapest to recompute (the strongest cheater of this family).
    TopOf(GpuModel),
    /// A seeded uniform fraction of every layer that fits in `model`'s memory.
    UniformOf(GpuModel),
    /// Nothing but the seed.
    Nothing,
}

struct State {
    ch: VramChallenge,
    keys: Keys,
    /// Labels kept (`None` where dropped).
    kept: Vec<Option<Label>>,
    tree: Tree,
}

/// A CPU prover paced like a GPU: fills at `fill_as`'s scaled bandwidth, keeps what [`Keep`]
/// says, answers kept labels from memory and recomputes missing ones from their parents
/// (recursively), sleeping [`VramSim::per_label`] of `actual` per recomputed label.
pub struct SimProver {
    sim: VramSim,
    actual: GpuModel,
    fill_as: GpuModel,
    keep: Keep,
    key: Option<PrivateKeySigner>,
    state: Mutex<Option<State>>,
    recomputed: AtomicU64,
}

impl std::fmt::Debug for SimProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProver")
            .field("actual", &self.actual)
            .field("fill_as", &self.fill_as)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl SimProver {
    /// An honest simulated `model`: keeps everything, fills at its own bandwidth.
    pub fn honest(sim: VramSim, model: GpuModel) -> Self {
        Self::new(sim, model, model, Keep::All)
    }

    /// A simulated `actual` GPU filling at `fill_as`'s bandwidth and keeping `keep`.
    pub fn new(sim: VramSim, actual: GpuModel, fill_as: GpuModel, keep: Keep) -> Self {
        SimProver {
            sim,
            actual,
            fill_as,
            keep,
            key: None,
            state: Mutex::new(None),
            recomputed: AtomicU64::new(0),
        }
    }

    /// Labels this prover has recomputed while answering, since it was created (what its
    /// pacing charged for).
    pub fn recomputed(&self) -> u64 {
        self.recomputed.load(Ordering::Relaxed)
    }

    /// This prover, signing its commitments with `key`.
    pub fn signed(mut self, key: PrivateKeySigner) -> Self {
        self.key = Some(key);
        self
    }

    fn budget(&self, g: &Geometry) -> u64 {
        match self.keep {
            Keep::All => g.total(),
            Keep::TopOf(m) | Keep::UniformOf(m) => self.sim.capacity(m).min(g.total()),
            Keep::Nothing => 0,
        }
    }
}

fn keeps(keep: Keep, keys: &Keys, g: &Geometry, budget: u64, pos: u64) -> bool {
    match keep {
        Keep::All => true,
        Keep::Nothing => false,
        Keep::TopOf(_) => pos >= g.total() - budget,
        Keep::UniformOf(_) => {
            let h = blake3::keyed_hash(&keys.chain, &pos.to_le_bytes());
            let mut b = [0u8; 8];
            b.copy_from_slice(&h.as_bytes()[..8]);
            (u64::from_le_bytes(b) as u128 * u128::from(g.total())) >> 64 < u128::from(budget)
        }
    }
}

/// Recomputes (or reads) the label at `pos`, counting the labels hashed.
fn get(st: &State, memo: &mut HashMap<u64, Label>, pos: u64, hashed: &mut u64) -> Label {
    if let Some(Some(l)) = st.kept.get(pos as usize) {
        return *l;
    }
    if let Some(l) = memo.get(&pos) {
        return *l;
    }
    let g = &st.ch.geometry;
    let (layer, index) = g.locate(pos).unwrap_or((0, 0));
    let ps: Vec<Label> = parents(&st.keys.expander, g, layer, index)
        .into_iter()
        .map(|u| get(st, memo, g.position(layer - 1, u), hashed))
        .collect();
    let l = label(&st.keys.label, layer, index, &ps);
    *hashed += 1;
    memo.insert(pos, l);
    l
}

#[async_trait]
impl VramProver for SimProver {
    async fn fill(&self, ch: &VramChallenge) -> Result<VramCommitment, VramProverError> {
        let start = Instant::now();
        let keys = Keys::of(ch);
        let g = ch.geometry;
        let all = fill(&keys, &g);
        let tree = Tree::new(
            &keys.tree,
            all.iter().map(|l| leaf(&keys.tree, l)).collect(),
        );
        let budget = self.budget(&g);
        let kept = all
            .iter()
            .enumerate()
            .map(|(i, l)| keeps(self.keep, &keys, &g, budget, i as u64).then_some(*l))
            .collect();
        // The Merkle tree's inner nodes are kept by every prover (a cheater's best case: real
        // ones must fit them in memory too).
        let root = tree.root();
        *self.state.lock().map_err(|e| e.to_string())? = Some(State {
            ch: ch.clone(),
            keys,
            kept,
            tree,
        });
        let pace = self.sim.fill_time(self.fill_as, &g);
        tokio::time::sleep(pace.saturating_sub(start.elapsed())).await;
        let signature = match &self.key {
            Some(k) => Some(sign(k, ch, &root)?),
            None => None,
        };
        Ok(VramCommitment {
            session: ch.session,
            root,
            signature,
        })
    }

    async fn open(&self, req: &RoundRequest) -> Result<RoundAnswer, VramProverError> {
        let start = Instant::now();
        let (answer, hashed) = {
            let guard = self.state.lock().map_err(|e| e.to_string())?;
            let st = guard
                .as_ref()
                .filter(|s| s.ch.session == req.session)
                .ok_or("no filled array for this session")?;
            let g = &st.ch.geometry;
            let mut memo = HashMap::new();
            let mut hashed = 0;
            let path = |pos: u64| st.tree.path(pos as usize).unwrap_or_default();
            let mut openings = Vec::new();
            for &pos in &req.positions {
                let (layer, index) = g.locate(pos).ok_or("position outside the array")?;
                let l = get(st, &mut memo, pos, &mut hashed);
                let parents = parents(&st.keys.expander, g, layer, index)
                    .into_iter()
                    .map(|u| {
                        let p = g.position(layer - 1, u);
                        PathLabel {
                            label: get(st, &mut memo, p, &mut hashed),
                            path: path(p),
                        }
                    })
                    .collect();
                openings.push(Opening {
                    position: pos,
                    label: PathLabel {
                        label: l,
                        path: path(pos),
                    },
                    parents,
                });
            }
            (
                RoundAnswer {
                    session: req.session,
                    round: req.round,
                    openings,
                },
                hashed,
            )
        };
        self.recomputed.fetch_add(hashed, Ordering::Relaxed);
        let pace = self
            .sim
            .per_label(self.actual)
            .saturating_mul(u32::try_from(hashed).unwrap_or(u32::MAX));
        tokio::time::sleep(pace.saturating_sub(start.elapsed())).await;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_the_scale() {
        let sim = VramSim::standard();
        let g = sim.geometry(GpuModel::H200);
        // 0.9 x 141 GiB x 1e-6 / 32 B = 4258 labels, 16 layers of 266.
        assert_eq!(g.labels_per_layer, 266);
        assert_eq!(sim.capacity(GpuModel::H100Sxm), 2684);
        assert!(sim.capacity(GpuModel::H100Sxm) < g.total());
        assert_eq!(g.locate(g.position(3, 7)), Some((3, 7)));
        assert_eq!(g.locate(g.total()), None);
    }

    #[test]
    fn garbage_answers_are_typed_failures() {
        let sim = VramSim::standard();
        let ch = sim
            .verifier()
            .challenge_from(None, GpuModel::T4, [1; 16], [2; 32]);
        let keys = Keys::of(&ch);
        let g = ch.geometry;
        let pl = PathLabel {
            label: [0; 32],
            path: vec![[0; 32]; 100],
        };
        // Layer 0 (no parents) opened with parents; a position outside the array; an empty path.
        for (pos, parents, asked) in [
            (3, vec![pl.clone()], 3),
            (g.total() + 5, vec![], g.total() + 5),
            (g.position(2, 1), vec![pl.clone(); 8], g.position(2, 1)),
            (7, vec![], 8),
        ] {
            let req = RoundRequest {
                session: ch.session,
                round: 0,
                positions: vec![asked],
            };
            let a = RoundAnswer {
                session: ch.session,
                round: 0,
                openings: vec![Opening {
                    position: pos,
                    label: pl.clone(),
                    parents,
                }],
            };
            let r = check_answer(&ch, &keys, &[9; 32], &req, &a);
            assert!(
                matches!(
                    r,
                    Err(VramFailure::Malformed { .. } | VramFailure::BadPath { .. })
                ),
                "{r:?}"
            );
        }
    }

    #[test]
    fn recomputed_labels_equal_filled_ones() {
        let sim = VramSim::standard();
        let ch = sim
            .verifier()
            .challenge(None, GpuModel::T4)
            .expect("entropy");
        let keys = Keys::of(&ch);
        let all = fill(&keys, &ch.geometry);
        let st = State {
            ch: ch.clone(),
            keys,
            kept: vec![None; all.len()],
            tree: Tree::default(),
        };
        let mut hashed = 0;
        let top = ch.geometry.total() - 1;
        let l = get(&st, &mut HashMap::new(), top, &mut hashed);
        assert_eq!(l, all[top as usize]);
        assert!(hashed > u64::from(ch.geometry.labels_per_layer));
    }
}

/// A Merkle path as a list of hex strings.
mod hex_path {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(p.iter().map(alloy_primitives::hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                let v = alloy_primitives::hex::decode(s).map_err(serde::de::Error::custom)?;
                <[u8; 32]>::try_from(v.as_slice()).map_err(|_| {
                    serde::de::Error::custom(format!("expected 32 bytes, got {}", v.len()))
                })
            })
            .collect()
    }
}
