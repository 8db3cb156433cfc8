//! Where orders and bids meet: the [`Market`] plug point and the in-process [`LocalMarket`],
//! which hands each order to its [`ProviderAgent`]s.

pub use crate::bidding::{BidStrategy, StrategyAgent};
use crate::clock::Clock;
use crate::history::History;
use crate::ids::{LeaseId, OrderId, ProviderId};
use crate::order::{Bid, Order};
pub use crate::provider_agent::ProviderAgent;
use crate::{Error, Result};
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::broadcast;

/// What happens on a market, as seen by subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MarketEvent {
    /// A new order is open for bids.
    OrderPublished(Box<Order>),
    /// A bid was accepted into an order's book.
    BidPlaced(Bid),
    /// An order was matched to a provider under a lease.
    Matched {
        /// The order.
        order: OrderId,
        /// The chosen provider.
        provider: ProviderId,
        /// The lease.
        lease: LeaseId,
    },
    /// An order closed (matched and finished, or cancelled).
    OrderClosed(OrderId),
}

/// The market plug point: in-process here, on-chain in `spheron-chain`.
#[cfg_attr(any(test, feature = "test-utils"), mockall::automock)]
#[async_trait]
pub trait Market: Send + Sync {
    /// Publishes an order to every provider.
    async fn publish(&self, order: Order) -> Result<()>;
    /// Places a bid; refused above the ceiling, after the window, or on unknown orders.
    async fn place_bid(&self, bid: Bid) -> Result<()>;
    /// Waits for the order's bid window to end, closes it and returns its bids.
    async fn close_bidding(&self, order: OrderId) -> Result<Vec<Bid>>;
    /// Records the match of an order to a provider.
    async fn record_match(
        &self,
        order: OrderId,
        provider: ProviderId,
        lease: LeaseId,
    ) -> Result<()>;
    /// Closes an order (after its lease, or when nobody could serve it).
    async fn close_order(&self, order: OrderId) -> Result<()>;
    /// A stream of market events from now on.
    fn events(&self) -> BoxStream<'static, MarketEvent>;
}

#[derive(Debug)]
struct Book {
    order: Order,
    bids: BTreeMap<ProviderId, Bid>,
    bidding_closed: bool,
}

/// Closed orders the market still recognises (to refuse a second close or a re-publication
/// with a precise error); their books are dropped at close.
pub const CLOSED_ORDERS_KEPT: usize = 4_096;

#[derive(Debug)]
struct Books {
    open: BTreeMap<OrderId, Book>,
    closed: History<OrderId, ()>,
}

/// An in-process market: `publish` hands the order to every registered agent, whose bids
/// land in the order's book until the bid window (on the market's [`Clock`]) ends.
pub struct LocalMarket {
    clock: Arc<dyn Clock>,
    agents: RwLock<Vec<Arc<dyn ProviderAgent>>>,
    books: Mutex<Books>,
    tx: broadcast::Sender<MarketEvent>,
}

impl std::fmt::Debug for LocalMarket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMarket").finish_non_exhaustive()
    }
}

impl LocalMarket {
    /// An empty market on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        LocalMarket {
            clock,
            agents: RwLock::new(Vec::new()),
            books: Mutex::new(Books {
                open: BTreeMap::new(),
                closed: History::new(CLOSED_ORDERS_KEPT),
            }),
            tx,
        }
    }

    /// Adds a provider agent that will see every order published from now on.
    pub fn add_agent(&self, agent: Arc<dyn ProviderAgent>) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(agent);
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, e: MarketEvent) {
        // No subscriber is fine.
        let _ = self.tx.send(e);
    }

    /// Validates `bid` (with its `placed_at`) against its order and adds it to the book.
    fn accept_bid(&self, bid: Bid) -> Result<()> {
        {
            let mut books = self.books();
            if books.closed.contains_key(&bid.order) {
                return Err(Error::BidWindowClosed(bid.order));
            }
            let book = books
                .open
                .get_mut(&bid.order)
                .ok_or(Error::UnknownOrder(bid.order))?;
            if book.bidding_closed {
                return Err(Error::BidWindowClosed(bid.order));
            }
            bid.validate(&book.order)?;
            // A provider's later bid replaces its earlier one.
            book.bids.insert(bid.provider, bid.clone());
        }
        self.emit(MarketEvent::BidPlaced(bid));
        Ok(())
    }
}

#[async_trait]
impl Market for LocalMarket {
    async fn publish(&self, order: Order) -> Result<()> {
        {
            let mut books = self.books();
            if books.open.contains_key(&order.id) || books.closed.contains_key(&order.id) {
                return Err(Error::invalid(
                    "order",
                    format!("{} already published", order.id),
                ));
            }
            books.open.insert(
                order.id,
                Book {
                    order: order.clone(),
                    bids: BTreeMap::new(),
                    bidding_closed: false,
                },
            );
        }
        self.emit(MarketEvent::OrderPublished(Box::new(order.clone())));
        let agents: Vec<_> = self
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let bids = futures::future::join_all(agents.iter().map(|a| a.on_order(&order))).await;
        for mut bid in bids.into_iter().flatten() {
            // In-process agents answer during the broadcast itself: their bids carry the
            // publication time, so even a zero-length window receives them.
            bid.placed_at = order.created_at;
            if let Err(e) = self.accept_bid(bid.clone()) {
                tracing::debug!(provider = %bid.provider, error = %e, "bid refused");
            }
        }
        Ok(())
    }

    async fn place_bid(&self, mut bid: Bid) -> Result<()> {
        bid.placed_at = self.clock.now();
        self.accept_bid(bid)
    }

    async fn close_bidding(&self, order: OrderId) -> Result<Vec<Bid>> {
        let deadline = self
            .books()
            .open
            .get(&order)
            .map(|b| b.order.bid_deadline)
            .ok_or(Error::UnknownOrder(order))?;
        self.clock.sleep_until(deadline).await;
        let mut books = self.books();
        let book = books
            .open
            .get_mut(&order)
            .ok_or(Error::UnknownOrder(order))?;
        book.bidding_closed = true;
        Ok(book.bids.values().cloned().collect())
    }

    async fn record_match(
        &self,
        order: OrderId,
        provider: ProviderId,
        lease: LeaseId,
    ) -> Result<()> {
        {
            let books = self.books();
            let book = books.open.get(&order).ok_or(Error::UnknownOrder(order))?;
            if !book.bids.contains_key(&provider) {
                return Err(Error::invalid(
                    "provider",
                    format!("{provider} did not bid on {order}"),
                ));
            }
        }
        self.emit(MarketEvent::Matched {
            order,
            provider,
            lease,
        });
        Ok(())
    }

    async fn close_order(&self, order: OrderId) -> Result<()> {
        {
            let mut books = self.books();
            if books.closed.contains_key(&order) {
                return Err(Error::invalid(
                    "order",
                    format!("{order} is already closed"),
                ));
            }
            // The book goes; only the id is remembered (bounded).
            books
                .open
                .remove(&order)
                .ok_or(Error::UnknownOrder(order))?;
            books.closed.insert(order, ());
        }
        self.emit(MarketEvent::OrderClosed(order));
        Ok(())
    }

    fn events(&self) -> BoxStream<'static, MarketEvent> {
        let rx = self.tx.subscribe();
        crate::events::broadcast_stream(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{SimClock, Timestamp};
    use crate::gpu::GpuModel;
    use crate::money::Amount;
    use crate::provider::{Inventory, Provider, ProviderStats, TrustTier};
    use crate::registry::Registry;
    use crate::test_utils::order;
    use std::time::Duration;

    fn setup() -> (SimClock, LocalMarket, ProviderId) {
        let clock = SimClock::new(Timestamp(0));
        let market = LocalMarket::new(Arc::new(clock.clone()));
        let registry = Arc::new(Registry::new());
        let id = ProviderId::from_label("p");
        registry.register(Provider {
            id,
            name: "p".into(),
            endpoint: String::new(),
            region: "eu-west".into(),
            location: crate::gpu::GeoPoint { lat: 0.0, lon: 0.0 },
            inventory: Inventory::uniform(GpuModel::H100Sxm, 1, 8),
            stake: Amount(0),
            stats: ProviderStats::default(),
            tier: TrustTier(3),
            banned: false,
        });
        market.add_agent(Arc::new(crate::test_utils::FixedBidAgent {
            provider: id,
            model: GpuModel::H100Sxm,
            price: Amount(100),
        }));
        (clock, market, id)
    }

    #[tokio::test]
    async fn agents_bid_even_with_a_zero_window() {
        let (clock, market, id) = setup();
        clock.advance(Duration::from_millis(5));
        let mut o = order(1, "h100", 2, 1_000);
        o.created_at = clock.now();
        o.bid_deadline = clock.now();
        market.publish(o).await.unwrap();
        let bids = market.close_bidding(OrderId(1)).await.unwrap();
        assert_eq!(bids.len(), 1);
        assert_eq!(bids[0].provider, id);
    }

    #[tokio::test]
    async fn late_and_overpriced_bids_are_refused() {
        let (clock, market, id) = setup();
        let mut o = order(1, "h100", 2, 1_000);
        o.bid_deadline = Timestamp(1_000);
        market.publish(o).await.unwrap();
        let bid = |price| Bid {
            order: OrderId(1),
            provider: id,
            model: GpuModel::H100Sxm,
            price_per_gpu_hour: Amount(price),
            placed_at: Timestamp(0),
        };
        assert!(matches!(
            market.place_bid(bid(1_001)).await,
            Err(Error::BidAboveCeiling { .. })
        ));
        clock.advance(Duration::from_secs(2));
        assert!(matches!(
            market.place_bid(bid(10)).await,
            Err(Error::BidWindowClosed(_))
        ));
        assert!(matches!(
            market
                .place_bid(Bid {
                    order: OrderId(9),
                    ..bid(10)
                })
                .await,
            Err(Error::UnknownOrder(_))
        ));
        market.close_order(OrderId(1)).await.unwrap();
        assert!(market.close_order(OrderId(1)).await.is_err());
        // The closed book is dropped; the id is still refused.
        assert!(market.books().open.is_empty());
        assert!(matches!(
            market.place_bid(bid(10)).await,
            Err(Error::BidWindowClosed(_))
        ));
    }
}
