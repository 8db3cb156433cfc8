//! Who may challenge a provider: the gate in front of its proof-of-GPU commit endpoint.
//!
//! A commit makes the provider's GPU work for seconds, so the provider answers only
//! challengers the chain vouches for ([`spheron_gpu::http::ChallengeGate`]):
//!
//! - a **registered verifier** with stake (`SpheronOperators`, kind verifier), read from the
//!   chain and cached for [`VERIFIER_CACHE`]; a miss re-reads at most every
//!   [`REFRESH_FLOOR`];
//! - the **tenant of a lease** the challenge names, when the market records that lease as
//!   matched to (or leased from) this provider: the challenge a tenant runs before it sends
//!   its manifest.
//!
//! Anyone else gets `403` before any work is done; a request without valid signed headers
//! gets `401`.

use alloy::primitives::Address;
use alloy::providers::DynProvider;
use async_trait::async_trait;
use spheron_chain::Chain;
use spheron_chain::bindings::SpheronMarket;
use spheron_chain::quorum::{self, Kind};
use spheron_chain::registry::order_state;
use spheron_gpu::http::{ChallengeGate, Challenger};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the verifier list is trusted before it is read again.
pub const VERIFIER_CACHE: Duration = Duration::from_secs(30);
/// Shortest time between two reads of the verifier list.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(2);

type Cache = Arc<tokio::sync::Mutex<Option<(Instant, BTreeSet<Address>)>>>;

/// The provider node's gate; see the [module docs](self).
pub struct ChainGate {
    chain: Arc<Chain>,
    market: SpheronMarket::SpheronMarketInstance<DynProvider>,
    operators: Address,
    me: Address,
    verifiers: Cache,
}

impl std::fmt::Debug for ChainGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainGate")
            .field("provider", &self.me)
            .finish_non_exhaustive()
    }
}

impl ChainGate {
    /// A gate for provider `me` of the market at `market`, with verifiers registered in the
    /// operators contract at `operators`.
    pub fn new(chain: Arc<Chain>, market: Address, operators: Address, me: Address) -> Self {
        ChainGate {
            market: SpheronMarket::new(market, chain.provider().clone()),
            chain,
            operators,
            me,
            verifiers: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    async fn is_verifier(&self, who: Address) -> Result<bool, String> {
        let (known, age) = {
            let cache = self.verifiers.lock().await;
            match cache.as_ref() {
                Some((at, set)) => (set.contains(&who), Some(at.elapsed())),
                None => (false, None),
            }
        };
        if known {
            // Admitted from the cache at once (a commit's time counts against the prover);
            // a stale list is re-read in the background.
            if age.is_some_and(|a| a >= VERIFIER_CACHE) {
                let (chain, operators, cache) =
                    (self.chain.clone(), self.operators, self.verifiers.clone());
                tokio::spawn(async move {
                    let _ = refresh(&chain, operators, &cache).await;
                });
            }
            return Ok(true);
        }
        if age.is_some_and(|a| a < REFRESH_FLOOR) {
            return Ok(false);
        }
        Ok(refresh(&self.chain, self.operators, &self.verifiers)
            .await?
            .contains(&who))
    }
}

/// Re-reads the staked verifiers into `cache`.
async fn refresh(
    chain: &Chain,
    operators: Address,
    cache: &Cache,
) -> Result<BTreeSet<Address>, String> {
    let list = quorum::parties(chain, operators, Kind::Verifier)
        .await
        .map_err(|e| format!("reading the verifiers: {e}"))?;
    let set: BTreeSet<Address> = list
        .into_iter()
        .filter(|p| p.staked > 0)
        .map(|p| p.address)
        .collect();
    *cache.lock().await = Some((Instant::now(), set.clone()));
    Ok(set)
}

#[async_trait]
impl ChallengeGate for ChainGate {
    async fn admit(&self, who: &Challenger) -> Result<(), String> {
        if let Some(lease) = who.lease {
            let o = self
                .market
                .getOrder(lease)
                .call()
                .await
                .map_err(|e| format!("reading lease {lease}: {e}"))?;
            let live = o.state == order_state::MATCHED || o.state == order_state::LEASED;
            return if o.tenant == who.account && o.provider == self.me && live {
                Ok(())
            } else {
                Err(format!(
                    "{:#x} is not the tenant of a live lease {lease} of this provider",
                    who.account
                ))
            };
        }
        if self.is_verifier(who.account).await? {
            Ok(())
        } else {
            Err(format!("{:#x} is not a registered verifier", who.account))
        }
    }
}
