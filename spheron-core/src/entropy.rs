//! [`EntropySource`]: where the rent flow's challenge randomness comes from.
//!
//! Challenge entropy must be unpredictable to provers, so the only source shipped is the
//! operating system's ([`OsEntropy`]); tests inject their own through
//! [`Orchestrator::with_entropy`](crate::Orchestrator::with_entropy). There is deliberately no
//! seeded source: a configured seed (such as the matcher's round seed, public to every
//! operator) would let a prover precompute its answers.

/// Fills buffers with unpredictable bytes.
pub trait EntropySource: Send + Sync {
    /// Fills `out` entirely, or fails (never with guessable bytes).
    fn fill(&self, out: &mut [u8]) -> crate::Result<()>;
}

/// The operating system's entropy (`getrandom`), read afresh for every challenge.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl EntropySource for OsEntropy {
    fn fill(&self, out: &mut [u8]) -> crate::Result<()> {
        use rand_core::{OsRng, TryRngCore};
        // No entropy means no sound challenge: never fall back to something guessable.
        OsRng
            .try_fill_bytes(out)
            .map_err(|e| crate::Error::Backend {
                backend: "entropy",
                message: format!("the operating system's entropy source failed: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_entropy_fills_and_differs() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        OsEntropy.fill(&mut a).unwrap();
        OsEntropy.fill(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
