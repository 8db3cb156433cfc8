//! How a provider prices its bids: [`StrategyAgent`], a [`ProviderAgent`] that bids from the
//! registry's inventory with a [`BidStrategy`].
//!
//! Not a simulation helper: the provider daemon (`spheron-node`) bids with it on the chain,
//! the Kubernetes agent (`spheron-k8s`) wraps it, and the embedded marketplace's simulated
//! fleet reuses it, so it lives where all three can reach it.

use crate::gpu::GpuModel;
use crate::ids::ProviderId;
use crate::money::Amount;
use crate::order::{Bid, Order};
use crate::provider_agent::ProviderAgent;
use crate::registry::Registry;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a simulated provider prices its bids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BidStrategy {
    /// Always bid the list price (pass if above the ceiling).
    ListPrice,
    /// Bid `discount_bps` under the ceiling, never below the list price.
    UndercutCeiling {
        /// Discount under the ceiling in basis points.
        discount_bps: u32,
    },
}

/// A provider agent driven by the registry's inventory and a [`BidStrategy`]: bids on orders
/// it can serve on one node, with the first accepted model it has room for.
pub struct StrategyAgent {
    provider: ProviderId,
    registry: Arc<Registry>,
    prices: BTreeMap<GpuModel, Amount>,
    strategy: BidStrategy,
}

impl StrategyAgent {
    /// An agent for `provider` with list prices per GPU-hour per model.
    pub fn new(
        provider: ProviderId,
        registry: Arc<Registry>,
        prices: BTreeMap<GpuModel, Amount>,
        strategy: BidStrategy,
    ) -> Self {
        StrategyAgent {
            provider,
            registry,
            prices,
            strategy,
        }
    }
}

#[async_trait]
impl ProviderAgent for StrategyAgent {
    fn provider(&self) -> ProviderId {
        self.provider
    }

    async fn on_order(&self, order: &Order) -> Option<Bid> {
        let me = self.registry.get(self.provider).ok()?;
        if me.banned {
            return None;
        }
        let req = &order.request;
        let ceiling = req.max_price_per_gpu_hour;
        me.inventory
            .models()
            .into_iter()
            .filter(|m| req.accepts_model(*m))
            .filter(|m| me.inventory.largest_free_block(*m) >= req.count)
            .find_map(|model| {
                let list = *self.prices.get(&model)?;
                let price = match self.strategy {
                    BidStrategy::ListPrice => list,
                    BidStrategy::UndercutCeiling { discount_bps } => ceiling
                        .mul_div_floor(u128::from(10_000u32.saturating_sub(discount_bps)), 10_000)
                        .ok()?
                        .max(list),
                };
                (price <= ceiling).then_some(Bid {
                    order: order.id,
                    provider: self.provider,
                    model,
                    price_per_gpu_hour: price,
                    placed_at: order.created_at,
                })
            })
    }
}
