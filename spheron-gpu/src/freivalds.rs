//! The default verifier: sampled row openings checked against a Freivalds probe, a signature
//! binding the commitment to the challenged provider, and timing against the claimed model's
//! calibrated INT8 rate.
//!
//! Cost per challenge: one pass over `B` regenerated row by row into `B r` without storing it
//! (`n^2` entries, 4 per 32-bit PRF word, vectorised), then `O(n)` per opened row (range check,
//! leaf hashes and Merkle path, regenerate row `i` of `A_k` and dot it with `B r`, dot the
//! opened row with `r`; all vectorised). Independent of `K`. At n = 16384 on one core the
//! `B r` pass is about 85 % of the time (`BENCHMARKS.md`, `examples/verifier_cost.rs`).
//!
//! Soundness: the prover commits to all `K n` rows before it learns `r` and the samples.
//! Samples are uniform over all rows of all products; a committed row that differs from the
//! true one survives the check `row · r = A_k[i, :] (B r)` with probability at most `2^-16`
//! (`r` has 16-bit entries). A prover that did not compute a fraction `f` of the rows (or of the
//! products) therefore passes with probability at most `(1 - f)^samples` (plus `2^-16` per
//! sample).
//!
//! Entropy: [`FreivaldsVerifier::issue`] and [`FreivaldsVerifier::reveal`] hash the entropy
//! they are given together with 32 fresh bytes from the operating system, so a caller that
//! passes predictable entropy (a configured seed) still gets unpredictable challenges.
//!
//! Timing: the commit phase lasts [`VerifierConfig::target_ms`] on the claimed model (seconds
//! by default); the verifier subtracts the round trip it measured itself, capped at
//! [`VerifierConfig::max_rtt_us`], at most [`crate::catalog::MAX_CREDIT_FRACTION`] of the
//! phase, so a prover that delays its pings buys at most that much time, which the
//! catalog's separation already allows for.

use crate::binding;
use crate::catalog::{MAX_CREDIT_FRACTION, spec};
use crate::cpu::{MAX_BATCH, MAX_SAMPLES, challenge_flops};
use crate::error::{Error, Result};
use crate::merkle;
use crate::prf;
use spheron_core::GpuModel;
use spheron_core::proof::{
    Challenge, ChallengeVerifier, Commitment, Dtype, FailReason, Opening, PROTOCOL_VERSION,
    ProofTiming, Reveal, Sample, Verdict,
};

/// How the verifier judges the commitment's timing.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum TimingPolicy {
    /// Correctness only: the deadline is [`VerifierConfig::untimed_deadline_ms`] and no rate is
    /// checked. For tests of correctness and for provers of unknown speed.
    Off,
    /// INT8 rates from the [catalog](crate::catalog), multiplied by `scale`: `1.0` for real GPUs; a
    /// small scale for simulated fleets whose CPU provers are paced at
    /// `calibrated rate x scale` (see [`crate::Simulation`]).
    Catalog {
        /// Multiplier applied to every catalogued rate.
        scale: f64,
    },
}

/// Settings of a [`FreivaldsVerifier`]; checked once by [`FreivaldsVerifier::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerifierConfig {
    /// Matrix size `n`.
    pub n: u32,
    /// Rows opened per challenge (at most [`MAX_SAMPLES`]).
    pub samples: u32,
    /// How long the commit phase should take on the claimed model; sets the batch `K`.
    pub target_ms: u32,
    /// Largest batch `K`.
    pub max_batch: u32,
    /// Batch `K` when timing is off.
    pub untimed_batch: u32,
    /// Commit deadline when timing is off.
    pub untimed_deadline_ms: u64,
    /// Largest round-trip time subtracted from the commit time (caps what a prover gains by
    /// answering pings slowly) and added to the deadline; at most
    /// [`MAX_CREDIT_FRACTION`] of `target_ms`.
    pub max_rtt_us: u64,
    /// The timing policy.
    pub timing: TimingPolicy,
    /// Accept only commitments signed by the challenged provider's key (see
    /// [`crate::binding`]). Off only for in-process simulated fleets, whose providers have
    /// no keys.
    pub require_signature: bool,
}

impl Default for VerifierConfig {
    /// Real GPUs: `n = 16384`, 64 samples, a 4 s commit phase on the claimed model, a 30 ms
    /// round-trip cap, datasheet INT8 rates (scale 1), signatures required.
    fn default() -> Self {
        VerifierConfig {
            n: 16_384,
            samples: 64,
            target_ms: 4_000,
            max_batch: MAX_BATCH,
            untimed_batch: 4,
            untimed_deadline_ms: 60_000,
            max_rtt_us: 30_000,
            timing: TimingPolicy::Catalog { scale: 1.0 },
            require_signature: true,
        }
    }
}

/// The Freivalds verifier (the default [`ChallengeVerifier`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FreivaldsVerifier {
    config: VerifierConfig,
}

impl Default for FreivaldsVerifier {
    /// [`VerifierConfig::default`]: real GPUs at datasheet rates.
    fn default() -> Self {
        FreivaldsVerifier {
            config: VerifierConfig::default(),
        }
    }
}

fn derive(label: &str, entropy: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(label.as_bytes());
    h.update(entropy);
    *h.finalize().as_bytes()
}

/// `entropy` hashed with 32 fresh bytes from the operating system. Should the OS fail to
/// answer (it does not on supported platforms), a process-wide counter and the wall clock
/// stand in and the failure is logged: the result is then only as unpredictable as those.
pub fn with_os_entropy(entropy: &[u8; 32]) -> [u8; 32] {
    static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut os = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut os) {
        tracing::error!(error = %e, "no OS entropy for a proof-of-GPU challenge");
        let c = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        os[..8].copy_from_slice(&c.to_le_bytes());
        os[8..24].copy_from_slice(&t.to_le_bytes());
    }
    let mut h = blake3::Hasher::new_derive_key("spheron 2026 proof-of-gpu challenge entropy");
    h.update(entropy);
    h.update(&os);
    *h.finalize().as_bytes()
}

impl FreivaldsVerifier {
    /// A verifier with `config`, validated.
    pub fn new(config: VerifierConfig) -> Result<Self> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if config.n == 0 || config.n > prf::MAX_EXACT_N {
            return bad(
                "n",
                format!(
                    "{} is outside 1..={} (int32 exactness)",
                    config.n,
                    prf::MAX_EXACT_N
                ),
            );
        }
        if config.samples == 0 || config.samples > MAX_SAMPLES {
            return bad(
                "samples",
                format!("{} is outside 1..={MAX_SAMPLES}", config.samples),
            );
        }
        if config.max_batch == 0 || config.max_batch > MAX_BATCH {
            return bad(
                "max_batch",
                format!("{} is outside 1..={MAX_BATCH}", config.max_batch),
            );
        }
        if config.untimed_batch == 0 || config.untimed_batch > config.max_batch {
            return bad(
                "untimed_batch",
                format!(
                    "{} is outside 1..={}",
                    config.untimed_batch, config.max_batch
                ),
            );
        }
        if config.target_ms == 0 {
            return bad("target_ms", "must be positive".into());
        }
        let credit_cap = f64::from(config.target_ms) * 1e3 * MAX_CREDIT_FRACTION;
        if config.max_rtt_us as f64 > credit_cap {
            return bad(
                "max_rtt_us",
                format!(
                    "{} µs is above {MAX_CREDIT_FRACTION} of the {} ms commit phase ({credit_cap} µs): \
                     a prover delaying its pings could then bridge the separation between models",
                    config.max_rtt_us, config.target_ms
                ),
            );
        }
        if let TimingPolicy::Catalog { scale } = config.timing
            && !(scale.is_finite() && scale > 0.0)
        {
            return bad(
                "timing.scale",
                format!("{scale} must be a positive finite number"),
            );
        }
        Ok(FreivaldsVerifier { config })
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Rates in OP/s (already scaled) for a claim: (calibrated, required, peak).
    fn rates(&self, claimed: GpuModel, dtype: Dtype) -> Option<(f64, f64, f64)> {
        let TimingPolicy::Catalog { scale } = self.config.timing else {
            return None;
        };
        let s = spec(claimed)?;
        let t = 1e12 * scale;
        Some((
            s.calibrated_tflops(dtype)? * t,
            s.required_tflops(dtype)? * t,
            s.peak_tflops(dtype)? * t,
        ))
    }

    /// The batch `K` a challenge for `claimed` gets.
    pub fn batch_for(&self, claimed: GpuModel) -> u32 {
        let c = &self.config;
        match self.rates(claimed, Dtype::Int8) {
            None => c.untimed_batch,
            Some((cal, _, _)) => {
                let per_product = 2.0 * f64::from(c.n).powi(3);
                let k = (f64::from(c.target_ms) / 1e3 * cal / per_product).ceil();
                (k as u32).clamp(1, c.max_batch)
            }
        }
    }

    /// Checks the answers' structure and the opened rows; `None` when they hold.
    fn check_rows(
        &self,
        ch: &Challenge,
        commitment: &Commitment,
        reveal: &Reveal,
        opening: &Opening,
    ) -> Option<FailReason> {
        let malformed = |m: String| Some(FailReason::Malformed(m));
        let n = ch.n as usize;
        if opening.rows.len() != reveal.samples.len() {
            return malformed(format!(
                "{} rows opened, {} asked",
                opening.rows.len(),
                reveal.samples.len()
            ));
        }
        let leaves = ch.batch as usize * n;
        let bound = (prf::MAX_ENTRY * prf::MAX_ENTRY) as u64 * u64::from(ch.n);
        let key = binding::tree_key(ch);
        let r = prf::r_vector(&reveal.r_seed, n);
        // Up to n = 2^15 both dot products fit an i64 (values bounded by the range check below:
        // |C| <= 2^29, r < 2^16, |B r| <= 2^38, |A| <= 2^7: every sum stays below 2^61); beyond,
        // i128.
        let narrow = n <= 1 << 15;
        // Each opened row (64 KiB at n = 16384, in L2) is read three times, by vectorised
        // passes: range check, leaf hashes (16 leaves at a time), dot product with r.
        let mut got = Vec::with_capacity(opening.rows.len());
        let mut leaf_hashes = Vec::with_capacity(n.div_ceil(merkle::LEAF_VALUES));
        for (row, sample) in opening.rows.iter().zip(&reveal.samples) {
            if sample.k >= ch.batch || sample.row >= ch.n {
                return malformed(format!("sample {sample:?} outside the challenge"));
            }
            if row.sample != *sample {
                return malformed(format!(
                    "opened row {:?} where {sample:?} was asked",
                    row.sample
                ));
            }
            if row.values.len() != n {
                return malformed(format!(
                    "row {:?} has {} values, n = {n}",
                    sample,
                    row.values.len()
                ));
            }
            if let Some(v) = row
                .values
                .chunks(merkle::LEAF_VALUES)
                .find(|leaf| u64::from(prf::max_abs(leaf)) > bound)
                .and_then(|leaf| leaf.iter().find(|v| u64::from(v.unsigned_abs()) > bound))
            {
                return malformed(format!(
                    "value {v} in row {sample:?} is outside ±2^14 n = ±{bound}"
                ));
            }
            leaf_hashes.clear();
            merkle::leaf_hashes(&key, &row.values, &mut leaf_hashes);
            let idx = sample.k as usize * n + sample.row as usize;
            let h = merkle::root(&key, &leaf_hashes);
            if merkle::root_from_path(&key, h, idx, leaves, &row.path) != Some(commitment.root) {
                return Some(FailReason::BadPath(*sample));
            }
            got.push(if narrow {
                // In range: |sum| <= 2^15 * 2^29 * 2^16 < 2^63.
                i128::from(prf::dot_i32(&row.values, &r))
            } else {
                row.values
                    .iter()
                    .zip(&r)
                    .map(|(&a, &b)| i128::from(a) * i128::from(b))
                    .sum()
            });
        }
        // The Freivalds probe: B r once, then each opened row against A_k[i, :] (B r).
        let s = prf::seed_words(&ch.seed);
        let br = prf::matrix_times_vector(&s, n, prf::B_ID, &r);
        if br.len() != n {
            return malformed("internal: B r has the wrong length".into());
        }
        for (row, got) in opening.rows.iter().zip(got) {
            let (id, i) = (prf::a_id(row.sample.k), row.sample.row as usize);
            let want = if narrow {
                i128::from(prf::row_dot_i64(&s, n, id, i, &br))
            } else {
                prf::row_dot(&s, n, id, i, &br)
            };
            if got != want {
                return Some(FailReason::BadRow(row.sample));
            }
        }
        None
    }
}

impl ChallengeVerifier for FreivaldsVerifier {
    fn issue(&self, claimed: GpuModel, entropy: [u8; 32]) -> Challenge {
        let entropy = with_os_entropy(&entropy);
        let mut session = [0u8; 16];
        session.copy_from_slice(&derive("spheron.session", &entropy)[..16]);
        let dtype = Dtype::Int8;
        let batch = self.batch_for(claimed);
        let mut ch = Challenge {
            version: PROTOCOL_VERSION,
            session,
            seed: derive("spheron.seed", &entropy),
            claimed,
            n: self.config.n,
            batch,
            dtype,
            deadline_us: 0,
            provider: None,
        };
        ch.deadline_us = match self.rates(claimed, dtype) {
            Some((_, required, _)) => {
                (challenge_flops(&ch) / required * 1e6).ceil() as u64 + self.config.max_rtt_us
            }
            None => self.config.untimed_deadline_ms.saturating_mul(1000),
        };
        ch
    }

    fn reveal(&self, challenge: &Challenge, _c: &Commitment, entropy: [u8; 32]) -> Reveal {
        let entropy = with_os_entropy(&entropy);
        let mut xof = blake3::Hasher::new_derive_key("spheron 2026 proof-of-gpu samples")
            .update(&entropy)
            .update(&challenge.session)
            .finalize_xof();
        let rows = u64::from(challenge.batch.max(1)) * u64::from(challenge.n.max(1));
        let samples = (0..self.config.samples)
            .map(|_| {
                let mut b = [0u8; 16];
                xof.fill(&mut b);
                // 128 random bits reduced mod rows: bias below 2^-90.
                let idx = (u128::from_le_bytes(b) % u128::from(rows)) as u64;
                let n = u64::from(challenge.n.max(1));
                Sample {
                    k: (idx / n) as u32,
                    row: (idx % n) as u32,
                }
            })
            .collect();
        Reveal {
            version: PROTOCOL_VERSION,
            session: challenge.session,
            r_seed: derive("spheron.r", &entropy),
            samples,
        }
    }

    fn verify(
        &self,
        ch: &Challenge,
        commitment: &Commitment,
        reveal: &Reveal,
        opening: &Opening,
        timing: &ProofTiming,
    ) -> Verdict {
        let fail = Verdict::Fail;
        if ch.version != PROTOCOL_VERSION
            || commitment.version != PROTOCOL_VERSION
            || reveal.version != PROTOCOL_VERSION
            || opening.version != PROTOCOL_VERSION
        {
            return fail(FailReason::Malformed(format!(
                "protocol version (want {PROTOCOL_VERSION}; commitment {}, opening {})",
                commitment.version, opening.version
            )));
        }
        if commitment.session != ch.session
            || reveal.session != ch.session
            || opening.session != ch.session
        {
            return fail(FailReason::Malformed(
                "session does not match the challenge".into(),
            ));
        }
        if ch.dtype != Dtype::Int8 {
            return fail(FailReason::Malformed(format!(
                "challenge dtype {:?}; protocol v{PROTOCOL_VERSION} challenges are Int8",
                ch.dtype
            )));
        }
        if ch.n == 0 || ch.n > prf::MAX_EXACT_N || ch.batch == 0 {
            return fail(FailReason::Malformed(format!(
                "challenge n = {}, batch = {} out of range",
                ch.n, ch.batch
            )));
        }
        if timing.commit_us > ch.deadline_us {
            return fail(FailReason::Late {
                elapsed_us: timing.commit_us,
                deadline_us: ch.deadline_us,
            });
        }
        if self.config.require_signature
            && let Some(why) = binding::check(ch, commitment)
        {
            return fail(FailReason::BadSignature(why));
        }
        if let Some(reason) = self.check_rows(ch, commitment, reveal, opening) {
            return fail(reason);
        }
        let TimingPolicy::Catalog { scale } = self.config.timing else {
            return Verdict::Pass {
                achieved_tflops: None,
            };
        };
        let Some((_, required, peak)) = self.rates(ch.claimed, ch.dtype) else {
            return fail(FailReason::Malformed(format!(
                "{} has no catalogued {:?} rate",
                ch.claimed, ch.dtype
            )));
        };
        let net_us = timing
            .commit_us
            .saturating_sub(timing.rtt_us.min(self.config.max_rtt_us))
            .max(1);
        let achieved = challenge_flops(ch) / (net_us as f64 / 1e6);
        let tf = |flops: f64| flops / 1e12 / scale;
        if achieved > peak {
            return fail(FailReason::ImpossibleSpeed {
                achieved_tflops: tf(achieved),
                peak_tflops: tf(peak),
            });
        }
        if achieved < required {
            return fail(FailReason::TooSlow {
                achieved_tflops: tf(achieved),
                required_tflops: tf(required),
            });
        }
        Verdict::Pass {
            achieved_tflops: Some(tf(achieved)),
        }
    }
}
