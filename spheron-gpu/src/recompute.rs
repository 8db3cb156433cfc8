//! The first verifier: checks the opened rows and paths, then recomputes every product in
//! full and compares. A real check, only not a cheap one (O(K n^3)); use it with small `n`.

use crate::cpu::{matvec, products, row_hashes};
use crate::merkle;
use crate::prf;
use spheron_core::GpuModel;
use spheron_core::proof::{
    Challenge, ChallengeVerifier, Commitment, Dtype, FailReason, Opening, PROTOCOL_VERSION,
    ProofTiming, Reveal, Sample, Verdict,
};

/// Verifier that recomputes the products.
#[derive(Clone, Copy, Debug)]
pub struct RecomputeVerifier {
    /// Matrix size.
    pub n: u32,
    /// Products per challenge.
    pub batch: u32,
    /// Rows opened per challenge.
    pub samples: u32,
    /// Commit deadline in microseconds.
    pub deadline_us: u64,
}

impl Default for RecomputeVerifier {
    fn default() -> Self {
        RecomputeVerifier {
            n: 64,
            batch: 2,
            samples: 4,
            deadline_us: 5_000_000,
        }
    }
}

fn derive(label: &str, entropy: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(label.as_bytes());
    h.update(entropy);
    *h.finalize().as_bytes()
}

impl ChallengeVerifier for RecomputeVerifier {
    fn issue(&self, claimed: GpuModel, entropy: [u8; 32]) -> Challenge {
        let mut session = [0u8; 16];
        session.copy_from_slice(&derive("spheron.session", &entropy)[..16]);
        Challenge {
            version: PROTOCOL_VERSION,
            session,
            seed: derive("spheron.seed", &entropy),
            claimed,
            n: self.n,
            batch: self.batch,
            dtype: Dtype::F16,
            deadline_us: self.deadline_us,
        }
    }

    fn reveal(&self, challenge: &Challenge, _c: &Commitment, entropy: [u8; 32]) -> Reveal {
        let s = prf::seed_words(&derive("spheron.samples", &entropy));
        let samples = (0..u64::from(self.samples))
            .map(|i| {
                // Non-negative PRF entries give uniform-enough indices for sampling.
                let k = prf::entry(&s, 1 << 20, 0, 0, 0, i).unsigned_abs()
                    + 9 * prf::entry(&s, 1 << 20, 1, 0, 0, i).unsigned_abs();
                let row = (0..4u64)
                    .map(|d| u64::from(prf::entry(&s, 1 << 20, 2 + d, 0, 0, i).unsigned_abs()))
                    .fold(0u64, |acc, v| acc * 9 + v);
                Sample {
                    k: k % challenge.batch,
                    row: (row % u64::from(challenge.n)) as u32,
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
        let fail = |r| Verdict::Fail(r);
        let malformed = |m: &str| Verdict::Fail(FailReason::Malformed(m.to_string()));
        if commitment.version != PROTOCOL_VERSION || opening.version != PROTOCOL_VERSION {
            return malformed("protocol version");
        }
        if commitment.session != ch.session || opening.session != ch.session {
            return malformed("session does not match the challenge");
        }
        let elapsed = timing.commit_us.saturating_sub(timing.rtt_us);
        if elapsed > ch.deadline_us {
            return fail(FailReason::Late {
                elapsed_us: elapsed,
                deadline_us: ch.deadline_us,
            });
        }
        let n = ch.n as usize;
        if opening.rows.len() != reveal.samples.len() {
            return malformed("wrong number of opened rows");
        }
        let leaves = ch.batch as usize * n;
        for (row, sample) in opening.rows.iter().zip(&reveal.samples) {
            if row.sample != *sample || row.values.len() != n {
                return malformed("opened row does not match the sample or has the wrong length");
            }
            let idx = sample.k as usize * n + sample.row as usize;
            let h = merkle::row_hash(&row.values);
            if merkle::root_from_path(h, idx, leaves, &row.path) != Some(commitment.root) {
                return fail(FailReason::BadPath(*sample));
            }
        }
        let truth = products(ch);
        let r = prf::r_vector(&reveal.r_seed, n);
        for pv in &opening.products {
            let Some(c) = truth.get(pv.k as usize) else {
                return malformed("product index out of range");
            };
            if pv.values != matvec(c, &r, n) {
                return fail(FailReason::WrongProduct { k: pv.k });
            }
        }
        for row in &opening.rows {
            let Some(cr) = opening.products.iter().find(|p| p.k == row.sample.k) else {
                return malformed("C·r missing for a sampled product");
            };
            let dot: i64 = row
                .values
                .iter()
                .zip(&r)
                .map(|(&a, &b)| i64::from(a) * b)
                .sum();
            if cr.values.get(row.sample.row as usize) != Some(&dot) {
                return fail(FailReason::BadRow(row.sample));
            }
        }
        if merkle::root(&row_hashes(&truth, n)) != commitment.root {
            // Opened rows were consistent but some unopened row is wrong.
            return fail(FailReason::WrongProduct { k: 0 });
        }
        Verdict::Pass {
            achieved_tflops: None,
        }
    }
}
