//! [`EvmMarket`]: the `Market` trait on the `SpheronMarket` contract.

use crate::bindings::SpheronMarket;
use crate::client::{Chain, decode};
use crate::escrow::{account, address, core_error};
use alloy::primitives::{Address, FixedBytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use spheron_core::{
    Bid, Clock, Error, GpuModel, GpuRequest, LeaseId, Market, MarketEvent, Order, OrderId,
    ProviderAgent, ProviderId, Result, Timestamp, TrustTier,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// An order book on chain: orders lock their budget when published, bids come from
/// registered, staked providers, matches start leases.
///
/// Orders published here keep their [`Order`] in memory so that `close_bidding` knows the
/// deadline and events carry the full request; orders seen only on chain get a request
/// rebuilt from the contract's fields (count, duration, ceiling; any model).
///
/// `events()` polls the node's logs, starting after the last block in which this client saw
/// one of its own transactions mined (from genesis before it sent any), so nothing it did
/// after subscribing is missed.
pub struct EvmMarket {
    chain: Arc<Chain>,
    market: Address,
    token: Address,
    matcher: Option<Address>,
    clock: Arc<dyn Clock>,
    agents: RwLock<Vec<Arc<dyn ProviderAgent>>>,
    orders: Arc<Mutex<BTreeMap<OrderId, Order>>>,
    poll: Duration,
    /// The latest block this client has seen a transaction of its own mined in.
    seen: Arc<AtomicU64>,
}

impl std::fmt::Debug for EvmMarket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmMarket")
            .field("market", &self.market)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn model_bytes(m: GpuModel) -> FixedBytes<32> {
    let mut b = [0u8; 32];
    let name = m.name().as_bytes();
    let n = name.len().min(32);
    b[..n].copy_from_slice(&name[..n]);
    FixedBytes(b)
}

/// The GPU model named by a bid's `bytes32` (its catalog name, zero-padded), if known.
pub(crate) fn model_of(b: FixedBytes<32>) -> Option<GpuModel> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(32);
    std::str::from_utf8(&b[..end]).ok()?.parse().ok()
}

impl EvmMarket {
    /// A market client for orders paid in `token` on the contract at `market`. `matcher`,
    /// when given, is a signer holding the matcher role that records matches; otherwise the
    /// order's tenant does.
    pub fn new(
        chain: Arc<Chain>,
        market: Address,
        token: Address,
        matcher: Option<Address>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        EvmMarket {
            chain,
            market,
            token,
            matcher,
            clock,
            agents: RwLock::new(Vec::new()),
            orders: Arc::new(Mutex::new(BTreeMap::new())),
            poll: Duration::from_millis(100),
            seen: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How often `events()` polls the node for logs (default 100 ms).
    #[must_use]
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Adds a provider agent: on every order published here it is asked for a bid, which is
    /// placed on chain from the provider's key (which the [`Chain`] must hold).
    pub fn add_agent(&self, agent: Arc<dyn ProviderAgent>) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(agent);
    }

    fn m(&self) -> SpheronMarket::SpheronMarketInstance<DynProvider> {
        SpheronMarket::new(self.market, self.chain.provider().clone())
    }

    fn sent(&self, r: crate::Result<alloy::rpc::types::TransactionReceipt>) -> Result<()> {
        let receipt = r.map_err(core_error)?;
        if let Some(n) = receipt.block_number {
            self.seen.fetch_max(n, Ordering::Relaxed);
        }
        Ok(())
    }

    fn cached(&self, id: OrderId) -> Option<Order> {
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every bid on `order` on chain, the latest per provider, with its index.
    pub async fn bids_on_chain(&self, order: OrderId) -> Result<Vec<(u64, Bid)>> {
        let filter = Filter::new()
            .address(self.market)
            .event_signature(SpheronMarket::BidPlaced::SIGNATURE_HASH)
            .topic1(U256::from(order.0))
            .from_block(0u64);
        let logs = self
            .chain
            .provider()
            .get_logs(&filter)
            .await
            .map_err(|e| Error::from(crate::Error::Rpc(e.to_string())))?;
        let fallback = self
            .cached(order)
            .and_then(|o| o.request.models.first().copied())
            .unwrap_or(GpuModel::H100Sxm);
        let mut latest: BTreeMap<ProviderId, (u64, Bid)> = BTreeMap::new();
        for log in logs {
            let Ok(ev) = SpheronMarket::BidPlaced::decode_log_data(log.data()) else {
                continue;
            };
            let idx = u64::try_from(ev.bidIndex).unwrap_or(u64::MAX);
            let provider = account(ev.provider);
            let bid = Bid {
                order,
                provider,
                model: model_of(ev.model).unwrap_or(fallback),
                price_per_gpu_hour: spheron_core::Amount(ev.pricePerGpuHour.to::<u128>()),
                placed_at: Timestamp(log.block_timestamp.unwrap_or_default() * 1000),
            };
            latest.insert(provider, (idx, bid));
        }
        Ok(latest.into_values().collect())
    }

    fn request_from_chain(gpus: u32, duration_secs: u32, ceiling: u128) -> GpuRequest {
        GpuRequest {
            models: Vec::new(),
            min_memory_gib: 0,
            count: gpus,
            duration_secs: u64::from(duration_secs),
            max_price_per_gpu_hour: spheron_core::Amount(ceiling),
            regions: Vec::new(),
            deny_regions: Vec::new(),
            location: None,
            max_latency_ms: None,
            min_tier: TrustTier::default(),
            allow_providers: Vec::new(),
            deny_providers: Vec::new(),
        }
    }
}

#[async_trait]
impl Market for EvmMarket {
    async fn publish(&self, order: Order) -> Result<()> {
        let r = &order.request;
        let window_ms = order.bid_deadline.millis_since(order.created_at);
        let window = u32::try_from(window_ms.div_ceil(1000))
            .map_err(|_| Error::invalid("bid_deadline", "bid window above 2^32 seconds"))?;
        let duration = u32::try_from(r.duration_secs)
            .map_err(|_| Error::invalid("duration_secs", "above 2^32 seconds"))?;
        let m = self.m();
        let call = m.createOrder(
            order.id.0,
            self.token,
            r.max_price_per_gpu_hour.0,
            r.count,
            duration,
            window,
        );
        self.sent(self.chain.send(address(order.tenant), call).await)?;
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(order.id, order.clone());
        let agents: Vec<_> = self
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let bids = futures::future::join_all(agents.iter().map(|a| a.on_order(&order))).await;
        for bid in bids.into_iter().flatten() {
            if let Err(e) = self.place_bid(bid.clone()).await {
                tracing::debug!(provider = %bid.provider, error = %e, "bid refused on chain");
            }
        }
        Ok(())
    }

    async fn place_bid(&self, bid: Bid) -> Result<()> {
        let price: alloy::primitives::Uint<96, 2> =
            alloy::primitives::Uint::try_from(bid.price_per_gpu_hour.0).map_err(|_| {
                Error::Overflow {
                    what: "bid price (96 bits on chain)",
                }
            })?;
        let m = self.m();
        let call = m.placeBid(bid.order.0, price, model_bytes(bid.model));
        self.sent(self.chain.send(address(bid.provider), call).await)?;
        Ok(())
    }

    async fn close_bidding(&self, order: OrderId) -> Result<Vec<Bid>> {
        if let Some(o) = self.cached(order) {
            self.clock.sleep_until(o.bid_deadline).await;
        }
        Ok(self
            .bids_on_chain(order)
            .await?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    async fn record_match(
        &self,
        order: OrderId,
        provider: ProviderId,
        lease: LeaseId,
    ) -> Result<()> {
        if lease.0 != order.0 {
            return Err(Error::invalid(
                "lease",
                format!(
                    "on chain a lease is identified by its order: use lease-{}",
                    order.0
                ),
            ));
        }
        let bids = self.bids_on_chain(order).await?;
        let (idx, _) = bids
            .iter()
            .find(|(_, b)| b.provider == provider)
            .ok_or_else(|| {
                Error::invalid("provider", format!("{provider} did not bid on {order}"))
            })?;
        let from = match self.matcher {
            Some(m) => m,
            None => {
                let o = self
                    .m()
                    .getOrder(order.0)
                    .call()
                    .await
                    .map_err(|e| Error::from(decode(e)))?;
                o.tenant
            }
        };
        self.sent(
            self.chain
                .send(from, self.m().matchBid(order.0, U256::from(*idx)))
                .await,
        )?;
        Ok(())
    }

    async fn close_order(&self, order: OrderId) -> Result<()> {
        let o = self
            .m()
            .getOrder(order.0)
            .call()
            .await
            .map_err(|e| Error::from(decode(e)))?;
        match o.state {
            0 => Err(Error::UnknownOrder(order)),
            1 => {
                self.sent(
                    self.chain
                        .send(o.tenant, self.m().cancelOrder(order.0))
                        .await,
                )?;
                Ok(())
            }
            2 => {
                self.sent(
                    self.chain
                        .send(o.tenant, self.m().closeLease(order.0))
                        .await,
                )?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn events(&self) -> BoxStream<'static, MarketEvent> {
        let provider = self.chain.provider().clone();
        let market = self.market;
        let poll = self.poll;
        let cache = self.orders.clone();
        // Everything after the last block this client saw its own transaction in: events of
        // transactions sent after subscribing are never missed.
        let seen = self.seen.load(Ordering::Relaxed);
        let seen_at_subscription = if seen == 0 { 0 } else { seen + 1 };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut from = seen_at_subscription;
            loop {
                let to = match provider.get_block_number().await {
                    Ok(n) => n,
                    Err(_) => break,
                };
                if to >= from {
                    let filter = Filter::new().address(market).from_block(from).to_block(to);
                    let Ok(logs) = provider.get_logs(&filter).await else {
                        break;
                    };
                    for log in logs {
                        let e = {
                            let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                            to_market_event(&log, &cache)
                        };
                        if let Some(e) = e
                            && tx.send(e).await.is_err()
                        {
                            return;
                        }
                    }
                    from = to + 1;
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(poll).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .boxed()
    }
}

fn to_market_event(
    log: &alloy::rpc::types::Log,
    cache: &BTreeMap<OrderId, Order>,
) -> Option<MarketEvent> {
    let topic = *log.topics().first()?;
    let at = Timestamp(log.block_timestamp.unwrap_or_default() * 1000);
    if topic == SpheronMarket::OrderCreated::SIGNATURE_HASH {
        let ev = SpheronMarket::OrderCreated::decode_log_data(log.data()).ok()?;
        let id = OrderId(ev.id);
        let order = cache.get(&id).cloned().unwrap_or_else(|| Order {
            id,
            tenant: account(ev.tenant),
            request: EvmMarket::request_from_chain(ev.gpus, ev.durationSecs, ev.maxPricePerGpuHour),
            created_at: at,
            bid_deadline: Timestamp(ev.bidDeadline.to::<u64>() * 1000),
        });
        return Some(MarketEvent::OrderPublished(order));
    }
    if topic == SpheronMarket::BidPlaced::SIGNATURE_HASH {
        let ev = SpheronMarket::BidPlaced::decode_log_data(log.data()).ok()?;
        let order = OrderId(ev.id);
        let model = model_of(ev.model)
            .or_else(|| {
                cache
                    .get(&order)
                    .and_then(|o| o.request.models.first().copied())
            })
            .unwrap_or(GpuModel::H100Sxm);
        return Some(MarketEvent::BidPlaced(Bid {
            order,
            provider: account(ev.provider),
            model,
            price_per_gpu_hour: spheron_core::Amount(ev.pricePerGpuHour.to::<u128>()),
            placed_at: at,
        }));
    }
    if topic == SpheronMarket::LeaseStarted::SIGNATURE_HASH {
        let ev = SpheronMarket::LeaseStarted::decode_log_data(log.data()).ok()?;
        return Some(MarketEvent::Matched {
            order: OrderId(ev.id),
            provider: account(ev.provider),
            lease: LeaseId(ev.id),
        });
    }
    if topic == SpheronMarket::LeaseClosed::SIGNATURE_HASH {
        let ev = SpheronMarket::LeaseClosed::decode_log_data(log.data()).ok()?;
        return Some(MarketEvent::OrderClosed(OrderId(ev.id)));
    }
    if topic == SpheronMarket::OrderCancelled::SIGNATURE_HASH {
        let ev = SpheronMarket::OrderCancelled::decode_log_data(log.data()).ok()?;
        return Some(MarketEvent::OrderClosed(OrderId(ev.id)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_models_round_trip_through_bytes32() {
        for m in [
            GpuModel::H100Sxm,
            GpuModel::A100_80G,
            GpuModel::Rtx4090,
            GpuModel::T4,
        ] {
            assert_eq!(model_of(model_bytes(m)), Some(m));
        }
        assert_eq!(model_of(FixedBytes([0xff; 32])), None);
    }
}
