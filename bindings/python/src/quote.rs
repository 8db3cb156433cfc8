//! `Marketplace.quote(request)`: what each provider would bid on a request now, before
//! renting (nothing is published or locked).
//!
//! On the embedded marketplace every simulated provider's own bid strategy is asked about the
//! request against its current inventory (the same [`StrategyAgent`] that bids in a rent),
//! then the request's provider filters (regions, denied regions, trust tier, allow and deny
//! lists, bans) are applied. Latency is not estimated, and the matcher's ranking is not run:
//! a quote lists prices, it does not pick. On a network the providers' gateways answer
//! ([`spheron::network::Quotes`]).

use crate::convert::Money;
use pyo3::prelude::*;
use spheron::SimFleet;
use spheron_core::{
    GpuRequest, Order, OrderId, Provider, ProviderAgent, Registry, StrategyAgent, Timestamp,
    money::accrued_cost,
};
use std::sync::Arc;

/// One provider's price for a request.
#[pyclass(module = "spheron._native", name = "Quote", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyQuote {
    /// Provider address (hex).
    pub provider: String,
    /// Provider name.
    pub provider_name: String,
    /// Region label.
    pub region: String,
    /// The GPU model it would offer.
    pub model: String,
    /// Its price per GPU-hour.
    pub price_per_hour: Money,
    /// What the whole request would cost at that price (count x hours), at most.
    pub cost: Money,
    /// GPUs of that model free now.
    pub free_gpus: u32,
    /// Trust tier (0..=7).
    pub tier: u8,
}

#[pymethods]
impl PyQuote {
    fn __repr__(&self) -> String {
        format!(
            "Quote({}, {}, {} at {}/GPU-hour, {} in all)",
            self.provider_name, self.region, self.model, self.price_per_hour, self.cost
        )
    }
}

impl PyQuote {
    /// A network quote ([`spheron::network::NetworkQuote`]).
    pub(crate) fn network(q: &spheron::network::NetworkQuote, decimals: u8) -> Self {
        PyQuote {
            provider: format!("{:#x}", q.provider),
            provider_name: q.name.clone(),
            region: q.region.clone(),
            model: q.model.name().to_string(),
            price_per_hour: Money::new(q.price_per_gpu_hour, decimals),
            cost: Money::new(q.cost, decimals),
            free_gpus: q.free_gpus,
            tier: q.tier,
        }
    }
}

/// Whether `p` passes the request's provider filters (not the price: the bid decides that).
fn admitted(req: &GpuRequest, p: &Provider) -> bool {
    !p.banned
        && (req.regions.is_empty() || req.regions.contains(&p.region))
        && !req.deny_regions.contains(&p.region)
        && p.tier >= req.min_tier
        && (req.allow_providers.is_empty() || req.allow_providers.contains(&p.id))
        && !req.deny_providers.contains(&p.id)
}

/// The embedded marketplace's quotes for `req`: the standard fleet's bid strategies over
/// `providers` (the live registry), cheapest first.
pub(crate) async fn local_quotes(
    req: &GpuRequest,
    providers: Vec<Provider>,
    tenant: spheron_core::AccountId,
    decimals: u8,
) -> Vec<PyQuote> {
    let registry = Arc::new(Registry::new());
    for p in &providers {
        registry.register(p.clone());
    }
    let order = Order {
        id: OrderId(0),
        tenant,
        request: req.clone(),
        created_at: Timestamp(0),
        bid_deadline: Timestamp(0),
    };
    let mut out = Vec::new();
    for sim in SimFleet::standard().providers {
        let Some(live) = providers.iter().find(|p| p.id == sim.provider.id) else {
            continue;
        };
        if !admitted(req, live) {
            continue;
        }
        let agent = StrategyAgent::new(live.id, registry.clone(), sim.prices, sim.strategy);
        let Some(bid) = agent.on_order(&order).await else {
            continue;
        };
        let Ok(cost) = accrued_cost(bid.price_per_gpu_hour, req.count, req.duration_secs) else {
            continue;
        };
        out.push(PyQuote {
            provider: live.id.to_string(),
            provider_name: live.name.clone(),
            region: live.region.clone(),
            model: bid.model.name().to_string(),
            price_per_hour: Money::new(bid.price_per_gpu_hour, decimals),
            cost: Money::new(cost, decimals),
            free_gpus: live.inventory.free(bid.model),
            tier: live.tier.0,
        });
    }
    out.sort_by(|a, b| {
        (a.price_per_hour.units, &a.provider_name).cmp(&(b.price_per_hour.units, &b.provider_name))
    });
    out
}
