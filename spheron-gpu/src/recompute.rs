//! The first verifier: checks the opened rows and paths, then recomputes every product in
//! full and compares the whole commitment. A real check, only not a cheap one (O(K n^3)); use
//! it with small `n`. It never looks at timing beyond the challenge's deadline.

use crate::binding;
use crate::cpu::{products, row_hashes};
use crate::freivalds::{FreivaldsVerifier, TimingPolicy, VerifierConfig};
use crate::merkle;
use spheron_core::GpuModel;
use spheron_core::proof::{
    Challenge, ChallengeVerifier, Commitment, FailReason, Opening, PROTOCOL_VERSION, ProofTiming,
    Reveal, Verdict,
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
    /// Accept only commitments signed by the challenged provider ([`crate::binding`]).
    pub require_signature: bool,
}

impl Default for RecomputeVerifier {
    fn default() -> Self {
        RecomputeVerifier {
            n: 64,
            batch: 2,
            samples: 4,
            deadline_us: 5_000_000,
            require_signature: false,
        }
    }
}

impl RecomputeVerifier {
    fn sampler(&self) -> FreivaldsVerifier {
        let config = VerifierConfig {
            n: self.n.max(1),
            samples: self.samples.max(1),
            max_batch: self.batch.max(1),
            untimed_batch: self.batch.max(1),
            untimed_deadline_ms: self.deadline_us / 1000,
            timing: TimingPolicy::Off,
            require_signature: self.require_signature,
            ..VerifierConfig::default()
        };
        FreivaldsVerifier::new(config).unwrap_or_default()
    }
}

impl ChallengeVerifier for RecomputeVerifier {
    fn issue(&self, claimed: GpuModel, entropy: [u8; 32]) -> Challenge {
        let mut ch = self.sampler().issue(claimed, entropy);
        ch.n = self.n;
        ch.batch = self.batch;
        ch.deadline_us = self.deadline_us;
        ch
    }

    fn reveal(&self, challenge: &Challenge, c: &Commitment, entropy: [u8; 32]) -> Reveal {
        self.sampler().reveal(challenge, c, entropy)
    }

    fn verify(
        &self,
        ch: &Challenge,
        commitment: &Commitment,
        reveal: &Reveal,
        opening: &Opening,
        timing: &ProofTiming,
    ) -> Verdict {
        let malformed = |m: &str| Verdict::Fail(FailReason::Malformed(m.to_string()));
        if commitment.version != PROTOCOL_VERSION || opening.version != PROTOCOL_VERSION {
            return malformed("protocol version");
        }
        if commitment.session != ch.session || opening.session != ch.session {
            return malformed("session does not match the challenge");
        }
        if ch.n == 0 || ch.n > crate::cpu::CPU_MAX_N || ch.batch == 0 {
            return malformed("challenge size outside what can be recomputed");
        }
        if timing.commit_us > ch.deadline_us {
            return Verdict::Fail(FailReason::Late {
                elapsed_us: timing.commit_us,
                deadline_us: ch.deadline_us,
            });
        }
        if self.require_signature
            && let Some(why) = binding::check(ch, commitment)
        {
            return Verdict::Fail(FailReason::BadSignature(why));
        }
        let key = binding::tree_key(ch);
        let n = ch.n as usize;
        if opening.rows.len() != reveal.samples.len() {
            return malformed("wrong number of opened rows");
        }
        let truth = products(ch);
        let leaves = ch.batch as usize * n;
        for (row, sample) in opening.rows.iter().zip(&reveal.samples) {
            if row.sample != *sample || row.values.len() != n || sample.k >= ch.batch {
                return malformed("opened row does not match the sample or has the wrong length");
            }
            let idx = sample.k as usize * n + sample.row as usize;
            let h = merkle::row_hash(&key, &row.values);
            if merkle::root_from_path(&key, h, idx, leaves, &row.path) != Some(commitment.root) {
                return Verdict::Fail(FailReason::BadPath(*sample));
            }
            let start = sample.row as usize * n;
            if truth[sample.k as usize].get(start..start + n) != Some(&row.values[..]) {
                return Verdict::Fail(FailReason::BadRow(*sample));
            }
        }
        let hashes = row_hashes(&key, &truth, n);
        if merkle::root(&key, &hashes) != commitment.root {
            // The opened rows were right but some unopened row is wrong; a root cannot say
            // which product, so the first is named.
            return Verdict::Fail(FailReason::WrongProduct { k: 0 });
        }
        Verdict::Pass {
            achieved_tflops: None,
        }
    }
}
