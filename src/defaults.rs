//! The default parts shared by the embedded and the EVM marketplace builders.

use spheron_core::{
    Amount, ChallengeVerifier, Error, Matcher, MatcherConfig, ReputationTierPolicy, Result,
    TierPolicy, WeightedMatcher,
};
use spheron_gpu::Simulation;
use std::sync::Arc;

/// `given`, or the weighted matcher seeded with `seed`, whose stake criterion reaches half
/// at 1000 whole tokens of a token with `stake_decimals`.
pub(crate) fn matcher(
    given: Option<Arc<dyn Matcher>>,
    seed: Option<u64>,
    stake_decimals: u8,
) -> Result<Arc<dyn Matcher>> {
    if let Some(m) = given {
        return Ok(m);
    }
    Ok(Arc::new(WeightedMatcher::new(MatcherConfig {
        round_seed: seed.unwrap_or(0),
        stake_half: Amount(1_000 * 10u128.pow(u32::from(stake_decimals))),
        ..Default::default()
    })?))
}

/// `given`, or the Freivalds verifier that judges `simulation`'s paced provers.
pub(crate) fn verifier(
    given: Option<Arc<dyn ChallengeVerifier>>,
    simulation: &Simulation,
) -> Result<Arc<dyn ChallengeVerifier>> {
    if let Some(v) = given {
        return Ok(v);
    }
    let v = simulation
        .try_verifier()
        .map_err(|e| Error::invalid("simulation", e.to_string()))?;
    Ok(Arc::new(v))
}

/// `given`, or the reputation tier policy.
pub(crate) fn tiers(given: Option<Arc<dyn TierPolicy>>) -> Arc<dyn TierPolicy> {
    given.unwrap_or_else(|| Arc::new(ReputationTierPolicy::default()))
}
