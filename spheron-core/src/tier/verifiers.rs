//! Verifier (Slark node) accuracy: sampled re-checks by a second verifier.
//!
//! Proof-of-GPU transcripts are deterministic (seeds, commitment, openings, timings on the
//! verifier's clock), so another verifier can replay the check of any verdict. Every
//! verdict that would cost a provider is re-checked before the penalty lands, and a
//! deterministic sample of the passing ones (`sample_bps`) is re-checked too. Votes are
//! counted until two agree; a verifier's accuracy is the Bayesian share of its audited
//! votes that sided with the majority, so a lying checker is caught like a lying verifier.

use crate::ids::{AccountId, ProviderId};
use crate::money::Amount;
use crate::tier::Violation;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Identifies one verdict submitted to the [`EpochProcessor`](super::EpochProcessor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VerdictId(pub u64);

impl fmt::Display for VerdictId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verdict-{}", self.0)
    }
}

/// How verifiers are audited and paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierConfig {
    /// Share of passing verdicts re-checked, basis points (failing ones always are).
    pub sample_bps: u32,
    /// Seed of the sampling, so every operator samples the same verdicts.
    pub seed: u64,
    /// Prior accuracy, basis points.
    pub prior_accuracy_bps: u32,
    /// Prior weight, in re-checked verdicts.
    pub prior_weight: u64,
    /// Below this accuracy a verifier earns no reward.
    pub min_accuracy_bps: u32,
    /// Share of a slash paid to the verifier that caught the fraud, basis points (the rest
    /// goes to the treasury).
    pub bounty_bps: u32,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            sample_bps: 1_000,
            seed: 0,
            prior_accuracy_bps: 9_000,
            prior_weight: 10,
            min_accuracy_bps: 8_000,
            bounty_bps: 5_000,
        }
    }
}

impl VerifierConfig {
    /// Checks every field; the error names the field that is out of range.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("verifiers.sample_bps", self.sample_bps),
            ("verifiers.prior_accuracy_bps", self.prior_accuracy_bps),
            ("verifiers.min_accuracy_bps", self.min_accuracy_bps),
            ("verifiers.bounty_bps", self.bounty_bps),
        ] {
            if v > 10_000 {
                return Err(Error::invalid(field, format!("{v} is above 10000")));
            }
        }
        Ok(())
    }
}

/// A verifier's standing, best first in [`EpochProcessor::verifier_ranking`](super::EpochProcessor::verifier_ranking).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierStanding {
    /// The verifier's account.
    pub verifier: AccountId,
    /// 1 = most accurate.
    pub rank: usize,
    /// Accuracy, basis points (Bayesian, with the configured prior).
    pub accuracy_bps: u32,
    /// Verdicts submitted (re-checks of others included).
    pub verdicts: u64,
    /// Votes (own verdicts and re-checks of others) on verdicts that were settled by audit.
    pub rechecked: u64,
    /// ... of which sided with the majority.
    pub agreed: u64,
    /// Failed or fraudulent proofs it caught that were confirmed.
    pub frauds_caught: u64,
    /// Everything it was paid: rewards and bounties.
    pub earned: Amount,
}

#[derive(Clone, Debug, Default)]
pub(super) struct VerifierRecord {
    pub verdicts: u64,
    pub rechecked: u64,
    pub agreed: u64,
    pub frauds_caught: u64,
    pub earned: Amount,
}

/// A verdict waiting for its re-checks.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub verifier: AccountId,
    pub provider: ProviderId,
    pub outcome: Option<Violation>,
    /// Re-checks so far: (checker, outcome).
    pub checks: Vec<(AccountId, Option<Violation>)>,
    /// The epoch of the verdict: an audit nobody completes within the statistics window is
    /// dropped at a close.
    pub epoch: u64,
}

impl Pending {
    /// Everyone who voted: the first verifier, then the checkers.
    pub fn voters(&self) -> impl Iterator<Item = AccountId> + '_ {
        std::iter::once(self.verifier).chain(self.checks.iter().map(|(v, _)| *v))
    }
}

#[derive(Debug, Default)]
pub(super) struct VerifierBook {
    pub config: VerifierConfig,
    pub records: BTreeMap<AccountId, VerifierRecord>,
    pub pending: BTreeMap<VerdictId, Pending>,
    next_id: u64,
}

impl VerifierBook {
    pub fn new(config: VerifierConfig) -> Self {
        VerifierBook {
            config,
            ..Default::default()
        }
    }

    pub fn known(&self, v: AccountId) -> Result<()> {
        if self.records.contains_key(&v) {
            Ok(())
        } else {
            Err(Error::invalid(
                "verifier",
                format!("{v} is not a registered verifier; add it with add_verifier first"),
            ))
        }
    }

    pub fn accuracy_bps(&self, r: &VerifierRecord) -> u32 {
        let c = &self.config;
        let den = u128::from(r.rechecked) + u128::from(c.prior_weight);
        let num = u128::from(r.agreed) * 10_000
            + u128::from(c.prior_accuracy_bps) * u128::from(c.prior_weight);
        num.checked_div(den)
            .map_or(c.prior_accuracy_bps, |a| a.min(10_000) as u32)
    }

    /// Whether verdict `id` falls in the re-check sample (a BLAKE3 draw keyed by the seed).
    pub fn sampled(&self, id: VerdictId) -> bool {
        let mut h = blake3::Hasher::new();
        h.update(b"spheron.tier.recheck.v1");
        h.update(&self.config.seed.to_le_bytes());
        h.update(&id.0.to_le_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(b) % 10_000 < u64::from(self.config.sample_bps)
    }

    pub fn next_id(&mut self) -> VerdictId {
        self.next_id += 1;
        VerdictId(self.next_id)
    }

    /// All verifiers, most accurate first (then most verdicts, then lowest address).
    pub fn ranking(&self) -> Vec<VerifierStanding> {
        let mut v: Vec<VerifierStanding> = self
            .records
            .iter()
            .map(|(id, r)| VerifierStanding {
                verifier: *id,
                rank: 0,
                accuracy_bps: self.accuracy_bps(r),
                verdicts: r.verdicts,
                rechecked: r.rechecked,
                agreed: r.agreed,
                frauds_caught: r.frauds_caught,
                earned: r.earned,
            })
            .collect();
        v.sort_by(|a, b| {
            b.accuracy_bps
                .cmp(&a.accuracy_bps)
                .then(b.verdicts.cmp(&a.verdicts))
                .then(a.verifier.cmp(&b.verifier))
        });
        for (i, s) in v.iter_mut().enumerate() {
            s.rank = i + 1;
        }
        v
    }

    /// The best-ranked verifier not in `not`, to re-check a verdict.
    pub fn checker_for(&self, not: &[AccountId]) -> Option<AccountId> {
        self.ranking()
            .into_iter()
            .map(|s| s.verifier)
            .find(|v| !not.contains(v))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_near_the_rate() {
        let book = VerifierBook::new(VerifierConfig::default());
        let hits = (1..=10_000).filter(|i| book.sampled(VerdictId(*i))).count();
        assert!((800..1200).contains(&hits), "{hits}");
        let again = (1..=10_000).filter(|i| book.sampled(VerdictId(*i))).count();
        assert_eq!(hits, again);
    }

    #[test]
    fn accuracy_has_a_prior() {
        let book = VerifierBook::new(VerifierConfig::default());
        let fresh = VerifierRecord::default();
        assert_eq!(book.accuracy_bps(&fresh), 9_000);
        let liar = VerifierRecord {
            rechecked: 5,
            agreed: 0,
            ..Default::default()
        };
        assert_eq!(book.accuracy_bps(&liar), 6_000);
    }
}
