//! [`ProverDirectory`]: how the rent flow reaches a provider's prover, and [`Provers`], the
//! map-backed directory filled at start-up.

use crate::ids::ProviderId;
use crate::proof::ChallengeProver;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Finds the prover that answers challenges for a provider.
pub trait ProverDirectory: Send + Sync {
    /// The provider's prover, if it can be reached.
    fn prover(&self, provider: ProviderId) -> Option<Arc<dyn ChallengeProver>>;
}

/// A directory backed by a map, filled at start-up.
#[derive(Default)]
pub struct Provers {
    map: RwLock<BTreeMap<ProviderId, Arc<dyn ChallengeProver>>>,
}

impl Provers {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }
    /// Registers `provider`'s prover.
    pub fn insert(&self, provider: ProviderId, prover: Arc<dyn ChallengeProver>) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider, prover);
    }
}

impl ProverDirectory for Provers {
    fn prover(&self, provider: ProviderId) -> Option<Arc<dyn ChallengeProver>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&provider)
            .cloned()
    }
}
