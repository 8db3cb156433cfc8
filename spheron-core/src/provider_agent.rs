//! [`ProviderAgent`]: the provider side of a market.

use crate::ids::ProviderId;
use crate::order::{Bid, Order};
use async_trait::async_trait;

/// The provider side of a market: decides whether and how to bid on an order.
#[async_trait]
pub trait ProviderAgent: Send + Sync {
    /// The provider this agent bids for.
    fn provider(&self) -> ProviderId;
    /// A bid for `order`, or `None` to pass.
    async fn on_order(&self, order: &Order) -> Option<Bid>;
}
