//! Orders and bids.

use crate::clock::Timestamp;
use crate::gpu::GpuModel;
use crate::ids::{AccountId, OrderId, ProviderId};
use crate::money::Amount;
use crate::provider::ProviderProfile;
use crate::request::GpuRequest;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A tenant's published request, open for bids until `bid_deadline`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order id.
    pub id: OrderId,
    /// Who pays.
    pub tenant: AccountId,
    /// What is asked for.
    pub request: GpuRequest,
    /// When it was published.
    pub created_at: Timestamp,
    /// Bids after this time are refused.
    pub bid_deadline: Timestamp,
}

/// A provider's offer to serve an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// The order bid on.
    pub order: OrderId,
    /// The bidder.
    pub provider: ProviderId,
    /// The GPU model offered.
    pub model: GpuModel,
    /// Price per GPU-hour in base units.
    pub price_per_gpu_hour: Amount,
    /// When the bid was placed.
    pub placed_at: Timestamp,
}

impl Bid {
    /// Checks the bid against its order: same order, accepted model, price within the ceiling,
    /// inside the bid window.
    pub fn validate(&self, order: &Order) -> Result<()> {
        if self.order != order.id {
            return Err(Error::invalid(
                "bid.order",
                format!("bid is for {} but was placed on {}", self.order, order.id),
            ));
        }
        if !order.request.accepts_model(self.model) {
            return Err(Error::invalid(
                "bid.model",
                format!("{} is not accepted by {}", self.model, order.id),
            ));
        }
        self.price_per_gpu_hour.non_zero("bid.price_per_gpu_hour")?;
        if self.price_per_gpu_hour > order.request.max_price_per_gpu_hour {
            return Err(Error::BidAboveCeiling {
                price: self.price_per_gpu_hour,
                ceiling: order.request.max_price_per_gpu_hour,
            });
        }
        if self.placed_at > order.bid_deadline {
            return Err(Error::BidWindowClosed(order.id));
        }
        Ok(())
    }
}

/// A bid together with the marketplace's own view of its provider: what a matcher ranks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The bid.
    pub bid: Bid,
    /// The provider, from the marketplace's registry.
    pub profile: ProviderProfile,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        Order {
            id: OrderId(1),
            tenant: AccountId::from_label("t"),
            request: GpuRequest::builder()
                .gpu("h100")
                .hours(1)
                .max_price_per_gpu_hour(Amount(100))
                .build()
                .unwrap(),
            created_at: Timestamp(0),
            bid_deadline: Timestamp(1000),
        }
    }

    fn bid(price: u128, at: u64) -> Bid {
        Bid {
            order: OrderId(1),
            provider: AccountId::from_label("p"),
            model: GpuModel::H100Sxm,
            price_per_gpu_hour: Amount(price),
            placed_at: Timestamp(at),
        }
    }

    #[test]
    fn bid_checks() {
        let o = order();
        bid(100, 1000).validate(&o).unwrap();
        assert!(matches!(
            bid(101, 0).validate(&o),
            Err(Error::BidAboveCeiling {
                price: Amount(101),
                ceiling: Amount(100)
            })
        ));
        assert!(matches!(
            bid(50, 1001).validate(&o),
            Err(Error::BidWindowClosed(_))
        ));
        assert!(matches!(
            bid(0, 0).validate(&o),
            Err(Error::ZeroAmount { .. })
        ));
        let mut b = bid(10, 0);
        b.model = GpuModel::T4;
        assert!(matches!(
            b.validate(&o),
            Err(Error::InvalidField {
                field: "bid.model",
                ..
            })
        ));
    }
}
