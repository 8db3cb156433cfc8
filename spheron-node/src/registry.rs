//! What a provider writes about itself in the on-chain registry's `meta` field, and how
//! readers (operator, tenant, CLI) turn a registry record into the core [`Provider`] the
//! matcher scores.

use serde::{Deserialize, Serialize};
use spheron_chain::registry::ProviderRecord;
use spheron_core::{
    AccountId, Amount, GeoPoint, GpuModel, Inventory, Provider, ProviderStats, TrustTier,
};

/// Largest `meta` a node writes (the contract caps it too).
pub const MAX_META_BYTES: usize = 4096;

/// Identical machines of one GPU model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuGroup {
    /// The model.
    pub model: GpuModel,
    /// Machines.
    pub nodes: u32,
    /// GPUs per machine.
    pub per_node: u32,
}

/// The provider's self-description on chain (JSON in `ProviderInfo.meta`): a summary of its
/// capacity, not its live occupancy (bids say what is free now).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderMeta {
    /// Human name.
    pub name: String,
    /// Data-centre location.
    pub location: GeoPoint,
    /// Its machines, grouped.
    pub gpus: Vec<GpuGroup>,
}

impl ProviderMeta {
    /// Groups an inventory's nodes by (model, GPUs per node).
    pub fn summarize(inventory: &Inventory) -> Vec<GpuGroup> {
        let mut groups: Vec<GpuGroup> = Vec::new();
        for n in &inventory.nodes {
            match groups
                .iter_mut()
                .find(|g| g.model == n.model && g.per_node == n.total)
            {
                Some(g) => g.nodes += 1,
                None => groups.push(GpuGroup {
                    model: n.model,
                    nodes: 1,
                    per_node: n.total,
                }),
            }
        }
        groups
    }

    /// The inventory the summary describes (every GPU free).
    pub fn inventory(&self) -> Inventory {
        let mut nodes = Vec::new();
        for g in &self.gpus {
            for i in 0..g.nodes.min(10_000) {
                nodes.push(spheron_core::GpuNode {
                    name: format!("{}-{i}", g.model.name()),
                    model: g.model,
                    total: g.per_node,
                    free: g.per_node,
                });
            }
        }
        Inventory { nodes }
    }

    /// The JSON written on chain.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The core provider described by an on-chain record, or why it cannot be used.
///
/// Stake and tier come from the contract; name, location and inventory from the provider's
/// own `meta` (what it claims; proof of GPU checks the model). Statistics start empty: the
/// network does not yet publish them on chain.
pub fn provider_from_record(rec: &ProviderRecord) -> Result<Provider, String> {
    let meta: ProviderMeta =
        serde_json::from_str(&rec.meta).map_err(|e| format!("unreadable registry meta: {e}"))?;
    Ok(Provider {
        id: AccountId(rec.address.into_array()),
        inventory: meta.inventory(),
        name: meta.name,
        endpoint: rec.endpoint.clone(),
        region: rec.region.clone(),
        location: meta.location,
        stake: Amount(rec.staked),
        stats: ProviderStats::default(),
        tier: TrustTier(rec.tier.min(7)),
        banned: !rec.can_bid,
    })
}
