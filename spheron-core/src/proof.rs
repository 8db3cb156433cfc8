//! Proof-of-GPU wire types and the prover / verifier plug points.
//!
//! The protocol is commit-then-challenge: the verifier sends a [`Challenge`] (fresh seed,
//! size, batch, deadline), the prover answers with a [`Commitment`] (a Merkle root over the
//! rows of every product), only then the verifier sends a [`Reveal`] (random vector seed and
//! sampled rows) and the prover answers with an [`Opening`]. The verifier decides with a pure
//! function of those messages and its own timings. Implementations live in `spheron-gpu`.

use crate::Result;
use crate::gpu::GpuModel;
use crate::ids::ProviderId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version carried by every message.
pub const PROTOCOL_VERSION: u16 = 3;

/// Input element type of the challenge products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE half precision inputs, FP32 accumulation.
    F16,
    /// bfloat16 inputs, FP32 accumulation.
    Bf16,
    /// Signed 8-bit integer inputs over the full range `[-128, 127]`, 32-bit integer
    /// accumulation (INT8 tensor cores; the only exact path for such entries). Protocol
    /// version 3 challenges use this dtype.
    Int8,
}

/// Step 1: what the verifier asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Protocol version.
    pub version: u16,
    /// Session id, echoed by every answer.
    #[serde(with = "hex_bytes")]
    pub session: [u8; 16],
    /// Fresh 256-bit seed of the matrices.
    #[serde(with = "hex_bytes")]
    pub seed: [u8; 32],
    /// The model the provider claims.
    pub claimed: GpuModel,
    /// Matrix size (n x n).
    pub n: u32,
    /// Number of products K.
    pub batch: u32,
    /// Input dtype.
    pub dtype: Dtype,
    /// Time allowed from sending to receiving the commitment, in microseconds of the verifier's clock.
    pub deadline_us: u64,
    /// The provider challenged, whose registered key must sign the commitment. Set by
    /// [`run_challenge`] (the verifier's own record of whom it asked); a prover ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderId>,
}

/// Step 3: the prover's commitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// Protocol version.
    pub version: u16,
    /// Echo of the challenge's session.
    #[serde(with = "hex_bytes")]
    pub session: [u8; 16],
    /// Merkle root (BLAKE3) over the rows of all products.
    #[serde(with = "hex_bytes")]
    pub root: [u8; 32],
    /// The device name the prover's driver reports: a hint only, never trusted.
    pub device: Option<String>,
    /// The provider's signature (65 bytes `r || s || v`, secp256k1, EIP-191) over the
    /// commitment message that binds the session, the challenge seed and the root (see
    /// `spheron_gpu::binding`). Verifiers that require binding refuse a commitment whose
    /// signature does not recover to the challenged provider.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex65")]
    pub signature: Option<[u8; 65]>,
}

/// One sampled row: product `k`, row `row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sample {
    /// Which product.
    pub k: u32,
    /// Which row.
    pub row: u32,
}

/// Step 4: what the verifier reveals after the commitment arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    /// Protocol version.
    pub version: u16,
    /// Echo of the session.
    #[serde(with = "hex_bytes")]
    pub session: [u8; 16],
    /// Seed of the random vector r.
    #[serde(with = "hex_bytes")]
    pub r_seed: [u8; 32],
    /// Rows to open.
    pub samples: Vec<Sample>,
}

/// An opened row with its Merkle path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenedRow {
    /// Which row.
    pub sample: Sample,
    /// The row's values (exact integers).
    pub values: Vec<i32>,
    /// Sibling hashes from leaf to root.
    pub path: Vec<[u8; 32]>,
}

/// Step 4 answer: the prover's opening.
///
/// Since protocol version 2 the opening carries only the rows: every product shares its right
/// factor `B`, so the verifier computes `(C_k r)_i = A_k[i, :] (B r)` itself in `O(n)` per row
/// after one `O(n^2)` pass for `B r`; a prover-sent `C_k r` (megabytes at large `n`) would
/// add nothing the opened rows do not already bind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// Protocol version.
    pub version: u16,
    /// Echo of the session.
    #[serde(with = "hex_bytes")]
    pub session: [u8; 16],
    /// The opened rows.
    pub rows: Vec<OpenedRow>,
}

/// What the verifier measured on its own clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofTiming {
    /// From sending the challenge to receiving the commitment, in microseconds.
    pub commit_us: u64,
    /// Round-trip time to the prover measured around the challenge, in microseconds.
    pub rtt_us: u64,
}

/// Why a proof failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FailReason {
    /// Slower than the claimed model can be.
    TooSlow {
        /// Achieved rate in tera-operations per second (INT8 multiply-adds count 2; the
        /// field keeps its pre-v3 name).
        achieved_tflops: f64,
        /// Rate the claimed model must reach.
        required_tflops: f64,
    },
    /// Faster than the claimed model's peak: physically impossible.
    ImpossibleSpeed {
        /// Achieved rate in TFLOP/s.
        achieved_tflops: f64,
        /// The claimed model's peak.
        peak_tflops: f64,
    },
    /// An opened row does not agree with `C_k r`.
    BadRow(Sample),
    /// An opened row's Merkle path does not lead to the committed root.
    BadPath(Sample),
    /// `A_k (B_k r) != C_k r`.
    WrongProduct {
        /// Which product.
        k: u32,
    },
    /// An answer was structurally wrong (lengths, sessions, versions, values out of range).
    Malformed(String),
    /// The commitment is not signed by the challenged provider's key (missing signature,
    /// a signature that does not recover, or one by another key: a relayed answer).
    BadSignature(String),
    /// The prover answered that it is at capacity, on every attempt: a missed challenge,
    /// not a failed proof.
    Busy {
        /// The wait the prover asked for, in milliseconds.
        retry_after_ms: u64,
    },
    /// The commitment arrived after the deadline.
    Late {
        /// Measured time in microseconds.
        elapsed_us: u64,
        /// The deadline in microseconds.
        deadline_us: u64,
    },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::TooSlow {
                achieved_tflops,
                required_tflops,
            } => write!(
                f,
                "too slow: {achieved_tflops:.3} TOPS, the claimed model needs {required_tflops:.3}"
            ),
            FailReason::ImpossibleSpeed {
                achieved_tflops,
                peak_tflops,
            } => write!(
                f,
                "impossible speed: {achieved_tflops:.3} TOPS is above the claimed peak {peak_tflops:.3}"
            ),
            FailReason::BadRow(s) => {
                write!(f, "row {} of product {} disagrees with C·r", s.row, s.k)
            }
            FailReason::BadPath(s) => write!(
                f,
                "Merkle path of row {} of product {} does not reach the root",
                s.row, s.k
            ),
            FailReason::WrongProduct { k } => write!(f, "product {k} is wrong (Freivalds check)"),
            FailReason::Malformed(m) => write!(f, "malformed answer: {m}"),
            FailReason::BadSignature(m) => write!(f, "commitment not bound to the provider: {m}"),
            FailReason::Busy { retry_after_ms } => {
                write!(f, "prover busy (asked to retry after {retry_after_ms} ms)")
            }
            FailReason::Late {
                elapsed_us,
                deadline_us,
            } => write!(
                f,
                "late: committed after {} ms, deadline {} ms",
                elapsed_us / 1000,
                deadline_us / 1000
            ),
        }
    }
}

/// The verifier's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    /// The proof holds.
    Pass {
        /// Achieved rate in tera-operations per second (TOPS) on the verifier's clock, when
        /// timing was checked. Under a simulation this is a simulated figure.
        achieved_tflops: Option<f64>,
    },
    /// The proof failed.
    Fail(FailReason),
}

impl Verdict {
    /// Whether the proof passed.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass {
                achieved_tflops: Some(t),
            } => write!(f, "passed ({t:.3} TOPS)"),
            Verdict::Pass {
                achieved_tflops: None,
            } => f.write_str("passed"),
            Verdict::Fail(r) => write!(f, "failed: {r}"),
        }
    }
}

/// The provider side of proof-of-GPU: compute, commit, open.
#[cfg_attr(any(test, feature = "test-utils"), mockall::automock)]
#[async_trait]
pub trait ChallengeProver: Send + Sync {
    /// Generates the matrices from the challenge seed, computes every product and commits.
    async fn commit(&self, challenge: &Challenge) -> Result<Commitment>;
    /// Opens the sampled rows and returns `C_k r` for the revealed vector.
    async fn open(&self, reveal: &Reveal) -> Result<Opening>;
    /// One round trip to the prover, for transports whose latency the verifier subtracts from
    /// the commit time; in-process provers have none (the default, `Ok(None)`).
    async fn round_trip(&self) -> Result<Option<std::time::Duration>> {
        Ok(None)
    }
}

/// The verifier side: `verify` is a pure function of the messages and the timings; `issue` and
/// `reveal` derive the challenge and the reveal from the entropy given, and implementations
/// should mix in entropy of their own from the operating system (the default verifier does) so
/// that a caller's predictable entropy never makes a challenge predictable.
#[cfg_attr(any(test, feature = "test-utils"), mockall::automock)]
pub trait ChallengeVerifier: Send + Sync {
    /// A fresh challenge for a provider claiming `claimed`, from 32 bytes of fresh entropy.
    fn issue(&self, claimed: GpuModel, entropy: [u8; 32]) -> Challenge;
    /// What to reveal once `commitment` arrived, from fresh entropy.
    fn reveal(&self, challenge: &Challenge, commitment: &Commitment, entropy: [u8; 32]) -> Reveal;
    /// Checks the whole exchange.
    fn verify(
        &self,
        challenge: &Challenge,
        commitment: &Commitment,
        reveal: &Reveal,
        opening: &Opening,
        timing: &ProofTiming,
    ) -> Verdict;
}

/// The result of challenging one provider, as shown in reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProofReport {
    /// Who was challenged.
    pub provider: ProviderId,
    /// The claimed model.
    pub claimed: GpuModel,
    /// Size and batch of the challenge.
    pub n: u32,
    /// Number of products.
    pub batch: u32,
    /// What was measured.
    pub timing: ProofTiming,
    /// The decision.
    pub verdict: Verdict,
}

/// How many times [`run_challenge`] asks a busy prover before recording a missed challenge.
pub const BUSY_ATTEMPTS: u32 = 3;

/// Longest wait between attempts at a busy prover, whatever it asks for.
pub const BUSY_MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs one full exchange between `verifier` and `prover`, timing the commitment with a
/// monotonic clock on the verifier's side. When the prover has a transport
/// ([`ChallengeProver::round_trip`]), the round trip is timed on the verifier's own clock (the
/// prover's own figure is ignored) before and after the commit and the smaller one is
/// reported, for the verifier to subtract up to its (small) cap.
///
/// The challenge records `provider` ([`Challenge::provider`]) so that the verifier can check
/// whose key signed the commitment. A prover that answers [`crate::Error::ProverBusy`] is
/// asked again with a fresh challenge, up to [`BUSY_ATTEMPTS`] times; then the verdict is
/// [`FailReason::Busy`] (a missed challenge).
///
/// Other transport failures from the prover become a [`Verdict::Fail`]: [`FailReason::Late`]
/// when the failure came after the deadline, else [`FailReason::Malformed`], so a provider
/// cannot escape a failing verdict by erroring.
pub async fn run_challenge(
    verifier: &dyn ChallengeVerifier,
    prover: &dyn ChallengeProver,
    provider: ProviderId,
    claimed: GpuModel,
    entropy: [[u8; 32]; 2],
) -> ProofReport {
    let mut attempt = 0u32;
    loop {
        let mut e = entropy;
        // A fresh challenge per attempt (verifiers also mix in OS entropy of their own).
        e[0][31] ^= attempt as u8;
        e[1][31] ^= attempt as u8;
        match exchange(verifier, prover, provider, claimed, e).await {
            Exchange::Done(r) => return r,
            Exchange::Busy(r, retry_after_ms) => {
                attempt += 1;
                if attempt >= BUSY_ATTEMPTS {
                    return r;
                }
                let wait = std::time::Duration::from_millis(retry_after_ms).min(BUSY_MAX_WAIT);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

enum Exchange {
    Done(ProofReport),
    Busy(ProofReport, u64),
}

async fn timed_round_trip(prover: &dyn ChallengeProver) -> Result<Option<std::time::Duration>> {
    let started = std::time::Instant::now();
    Ok(prover.round_trip().await?.map(|_| started.elapsed()))
}

async fn exchange(
    verifier: &dyn ChallengeVerifier,
    prover: &dyn ChallengeProver,
    provider: ProviderId,
    claimed: GpuModel,
    entropy: [[u8; 32]; 2],
) -> Exchange {
    let mut challenge = verifier.issue(claimed, entropy[0]);
    challenge.provider = Some(provider);
    let report = |timing: ProofTiming, verdict: Verdict| ProofReport {
        provider,
        claimed,
        n: challenge.n,
        batch: challenge.batch,
        timing,
        verdict,
    };
    let malformed =
        |what: &str, e: &crate::Error| Verdict::Fail(FailReason::Malformed(format!("{what}: {e}")));
    let us = |d: std::time::Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
    let rtt_before = match timed_round_trip(prover).await {
        Ok(r) => r,
        Err(e) => {
            return Exchange::Done(report(ProofTiming::default(), malformed("ping failed", &e)));
        }
    };
    let started = std::time::Instant::now();
    let commitment = prover.commit(&challenge).await;
    let commit_us = us(started.elapsed());
    let mut timing = ProofTiming {
        commit_us,
        rtt_us: rtt_before.map(us).unwrap_or(0),
    };
    let commitment = match commitment {
        Ok(c) => c,
        Err(crate::Error::ProverBusy { retry_after_ms }) => {
            let r = report(timing, Verdict::Fail(FailReason::Busy { retry_after_ms }));
            return Exchange::Busy(r, retry_after_ms);
        }
        Err(e) if commit_us > challenge.deadline_us => {
            tracing::debug!(%provider, error = %e, "commit failed after the deadline");
            return Exchange::Done(report(
                timing,
                Verdict::Fail(FailReason::Late {
                    elapsed_us: commit_us,
                    deadline_us: challenge.deadline_us,
                }),
            ));
        }
        Err(e) => return Exchange::Done(report(timing, malformed("commit failed", &e))),
    };
    if let Some(before) = rtt_before {
        let after = timed_round_trip(prover)
            .await
            .ok()
            .flatten()
            .unwrap_or(before);
        timing.rtt_us = us(before.min(after));
    }
    let reveal = verifier.reveal(&challenge, &commitment, entropy[1]);
    let opening = match prover.open(&reveal).await {
        Ok(o) => o,
        Err(e) => return Exchange::Done(report(timing, malformed("open failed", &e))),
    };
    let verdict = verifier.verify(&challenge, &commitment, &reveal, &opening, &timing);
    Exchange::Done(report(timing, verdict))
}

/// Serde for an optional 65-byte signature as a hex string or `null`
/// (`#[serde(with = "spheron_core::proof::opt_hex65")]`).
pub mod opt_hex65 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `b` as hex, or `null`.
    pub fn serialize<S: Serializer>(b: &Option<[u8; 65]>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    /// Reads hex of exactly 65 bytes, or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 65]>, D::Error> {
        let Some(s) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("expected 65 bytes of hex"))
    }
}

/// Serde for a byte array as a hex string (`#[serde(with = "spheron_core::proof::hex_bytes")]`).
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `b` as hex.
    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    /// Reads hex of exactly `N` bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom(format!("expected {N} bytes of hex")))
    }
}
