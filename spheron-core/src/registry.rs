//! The marketplace's own record of providers: inventory, stake, stats, tier, bans.

use crate::gpu::GpuModel;
use crate::ids::ProviderId;
use crate::provider::{Provider, ProviderProfile};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// A thread-safe registry of providers, keyed by id.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<BTreeMap<ProviderId, Provider>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ProviderId, Provider>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a provider.
    pub fn register(&self, p: Provider) {
        self.lock().insert(p.id, p);
    }

    /// A copy of a provider's record.
    pub fn get(&self, id: ProviderId) -> Result<Provider> {
        self.lock()
            .get(&id)
            .cloned()
            .ok_or(Error::UnknownProvider(id))
    }

    /// Copies of every provider, by id.
    pub fn all(&self) -> Vec<Provider> {
        self.lock().values().cloned().collect()
    }

    /// The matcher's view of a provider for a bid on `model`.
    pub fn profile(&self, id: ProviderId, model: GpuModel) -> Result<ProviderProfile> {
        self.lock()
            .get(&id)
            .map(|p| p.profile(model))
            .ok_or(Error::UnknownProvider(id))
    }

    /// Applies `f` to a provider's record.
    pub fn update<R>(&self, id: ProviderId, f: impl FnOnce(&mut Provider) -> R) -> Result<R> {
        self.lock()
            .get_mut(&id)
            .map(f)
            .ok_or(Error::UnknownProvider(id))
    }

    /// Reserves `count` GPUs of `model` on one node; returns the node name.
    pub fn reserve(&self, id: ProviderId, model: GpuModel, count: u32) -> Result<String> {
        self.update(id, |p| p.inventory.reserve(model, count))?
            .ok_or_else(|| {
                Error::invalid(
                    "count",
                    format!("{id} has no node with {count} free {model}"),
                )
            })
    }

    /// Returns reserved GPUs.
    pub fn release(&self, id: ProviderId, node: &str, count: u32) -> Result<()> {
        self.update(id, |p| p.inventory.release(node, count))
    }
}
