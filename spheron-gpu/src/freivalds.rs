//! The default verifier: sampled row openings checked against a Freivalds probe, plus timing
//! against the claimed model's calibrated rate.
//!
//! Cost per challenge: one pass over the regenerated `B` (`n^2` entries, 16 per PRF call) for
//! `B r`, then `O(n)` per opened row (regenerate row `i` of `A_k`, dot with `B r`, dot the opened
//! row with `r`). Independent of `K`, so every product can be sampled.
//!
//! Soundness: the prover commits to all `K n` rows before it learns `r` and the samples.
//! Samples are uniform over all rows of all products; a committed row that differs from the
//! true one survives the check `row · r = A_k[i, :] (B r)` with probability at most `2^-20`
//! (`r` has 20-bit entries). A prover that did not compute a fraction `f` of the rows (or of the
//! products) therefore passes with probability at most `(1 - f)^samples` (plus `2^-20` per
//! sample).

use crate::catalog::spec;
use crate::cpu::{MAX_BATCH, challenge_flops};
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
    /// Rates from the [catalog](crate::catalog), multiplied by `scale`: `1.0` for real GPUs; a
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
    /// Input dtype asked for (F16 is used for models without BF16).
    pub dtype: Dtype,
    /// Rows opened per challenge.
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
    /// answering pings slowly) and added to the deadline.
    pub max_rtt_us: u64,
    /// The timing policy.
    pub timing: TimingPolicy,
}

impl Default for VerifierConfig {
    /// Real GPUs: `n = 16384`, 64 samples, a 1 s commit phase on the claimed model, datasheet
    /// rates (scale 1).
    fn default() -> Self {
        VerifierConfig {
            n: 16_384,
            dtype: Dtype::F16,
            samples: 64,
            target_ms: 1_000,
            max_batch: MAX_BATCH,
            untimed_batch: 4,
            untimed_deadline_ms: 60_000,
            max_rtt_us: 250_000,
            timing: TimingPolicy::Catalog { scale: 1.0 },
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

impl FreivaldsVerifier {
    /// A verifier with `config`, validated.
    pub fn new(config: VerifierConfig) -> Result<Self> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if config.n == 0 || config.n > prf::MAX_EXACT_N {
            return bad(
                "n",
                format!(
                    "{} is outside 1..={} (FP32 exactness)",
                    config.n,
                    prf::MAX_EXACT_N
                ),
            );
        }
        if config.samples == 0 || config.samples > 4096 {
            return bad("samples", format!("{} is outside 1..=4096", config.samples));
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

    fn dtype_for(&self, claimed: GpuModel) -> Dtype {
        if spec(claimed).is_some_and(|s| s.peak_tflops(self.config.dtype).is_some()) {
            self.config.dtype
        } else {
            Dtype::F16
        }
    }

    /// Rates in FLOP/s (already scaled) for a claim: (calibrated, required, peak).
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
        match self.rates(claimed, self.dtype_for(claimed)) {
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
        let bound = 16 * i64::from(ch.n);
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
            if let Some(v) = row.values.iter().find(|v| i64::from(**v).abs() > bound) {
                return malformed(format!(
                    "value {v} in row {sample:?} is outside ±16n = ±{bound}"
                ));
            }
            let idx = sample.k as usize * n + sample.row as usize;
            let h = merkle::row_hash(&row.values);
            if merkle::root_from_path(h, idx, leaves, &row.path) != Some(commitment.root) {
                return Some(FailReason::BadPath(*sample));
            }
        }
        // The Freivalds probe: B r once, then each opened row against A_k[i, :] (B r).
        let s = prf::seed_words(&ch.seed);
        let r = prf::r_vector(&reveal.r_seed, n);
        let br = prf::matrix_times_vector(&s, n, prf::B_ID, &r);
        for row in &opening.rows {
            let want = prf::row_dot(&s, n, prf::a_id(row.sample.k), row.sample.row as usize, &br);
            let got: i128 = row
                .values
                .iter()
                .zip(&r)
                .map(|(&a, &b)| i128::from(a) * i128::from(b))
                .sum();
            if got != want {
                return Some(FailReason::BadRow(row.sample));
            }
        }
        None
    }
}

impl ChallengeVerifier for FreivaldsVerifier {
    fn issue(&self, claimed: GpuModel, entropy: [u8; 32]) -> Challenge {
        let mut session = [0u8; 16];
        session.copy_from_slice(&derive("spheron.session", &entropy)[..16]);
        let dtype = self.dtype_for(claimed);
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
