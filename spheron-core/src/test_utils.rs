//! Test doubles and builders shared by unit tests, integration tests and users' tests.
#![allow(clippy::unwrap_used, missing_docs)]

use crate::clock::Timestamp;
use crate::gpu::{GeoPoint, GpuModel};
use crate::ids::{AccountId, OrderId};
use crate::money::Amount;
use crate::order::{Bid, Candidate, Order};
use crate::provider::{ProviderProfile, ProviderStats, TrustTier};
use crate::request::GpuRequest;

pub use crate::escrow::MockEscrow;
pub use crate::launcher::MockWorkloadLauncher;
pub use crate::market::MockMarket;
pub use crate::proof::{MockChallengeProver, MockChallengeVerifier};

/// A provider agent that bids one fixed price on one model for every order accepting it
/// (the simulation's pricing strategies live in the facade's fleet).
pub struct FixedBidAgent {
    /// Who bids.
    pub provider: crate::ids::ProviderId,
    /// On what.
    pub model: GpuModel,
    /// At what price per GPU-hour.
    pub price: Amount,
}

#[async_trait::async_trait]
impl crate::provider_agent::ProviderAgent for FixedBidAgent {
    fn provider(&self) -> crate::ids::ProviderId {
        self.provider
    }

    async fn on_order(&self, order: &Order) -> Option<Bid> {
        order.request.accepts_model(self.model).then_some(Bid {
            order: order.id,
            provider: self.provider,
            model: self.model,
            price_per_gpu_hour: self.price,
            placed_at: order.created_at,
        })
    }
}

/// An order for `count` GPUs of `gpu` for one hour at most `ceiling` per GPU-hour.
pub fn order(id: u64, gpu: &str, count: u32, ceiling: u128) -> Order {
    Order {
        id: OrderId(id),
        tenant: AccountId::from_label("tenant"),
        request: GpuRequest::builder()
            .gpu(gpu)
            .count(count)
            .hours(1)
            .max_price_per_gpu_hour(Amount(ceiling))
            .build()
            .unwrap(),
        created_at: Timestamp(0),
        bid_deadline: Timestamp(0),
    }
}

/// A candidate named `name` bidding `price` with `free` GPUs on one node.
pub fn candidate(order: &Order, name: &str, model: GpuModel, price: u128, free: u32) -> Candidate {
    let id = AccountId::from_label(name);
    Candidate {
        bid: Bid {
            order: order.id,
            provider: id,
            model,
            price_per_gpu_hour: Amount(price),
            placed_at: Timestamp(0),
        },
        profile: ProviderProfile {
            id,
            name: name.into(),
            region: "eu-west".into(),
            location: GeoPoint {
                lat: 50.1,
                lon: 8.7,
            },
            rtt_ms: None,
            stake: Amount(0),
            stats: ProviderStats::default(),
            tier: TrustTier(3),
            free_gpus: free,
            total_free_gpus: free,
        },
    }
}
