//! The operator node: holds the MATCHER role (until the operator quorum replaces one key with
//! a 2/3-stake signature quorum) and, once an order's bid window has closed on chain time,
//! runs the deterministic matcher over the on-chain bids and records the match.
//!
//! The tenant never matches its own order in network mode: it waits for this node.

use crate::error::{Error, Result};
use crate::matching::{self, ChainBid};
use crate::network::{NetworkFile, parse_key};
use alloy::primitives::Address;
use alloy::providers::DynProvider;
use spheron_chain::Chain;
use spheron_chain::bindings::SpheronMarket;
use spheron_chain::follow::{ChainEvent, Follower};
use spheron_core::GpuRequest;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Operator settings.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Blocks behind the head treated as final.
    pub confirmations: u64,
    /// Largest block range read per poll.
    pub max_block_range: u64,
    /// Poll interval.
    pub poll: Duration,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            confirmations: 0,
            max_block_range: 500,
            poll: Duration::from_millis(250),
        }
    }
}

#[derive(Clone, Debug)]
struct OpenOrder {
    tenant: Address,
    request: GpuRequest,
    deadline: u64,
    bids: Vec<ChainBid>,
}

/// The operator node; see the [module docs](self).
pub struct OperatorNode {
    net: NetworkFile,
    chain: Arc<Chain>,
    me: Address,
    market: SpheronMarket::SpheronMarketInstance<DynProvider>,
    config: OperatorConfig,
    orders: BTreeMap<u64, OpenOrder>,
}

impl std::fmt::Debug for OperatorNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorNode")
            .field("operator", &self.me)
            .finish_non_exhaustive()
    }
}

impl OperatorNode {
    /// Connects with the operator's key (read from `key_file`) to the network in `network`.
    pub async fn start(network: &Path, key_file: &Path, config: OperatorConfig) -> Result<Self> {
        let net = NetworkFile::load(network)?;
        let text = std::fs::read_to_string(key_file).map_err(|e| {
            Error::config(key_file.display().to_string(), format!("cannot read: {e}"))
        })?;
        let key = parse_key(&text)?;
        let me = key.address();
        let chain = Arc::new(Chain::connect(&net.rpc_url, [key])?);
        let market = SpheronMarket::new(net.market, chain.provider().clone());
        let role = spheron_chain::deploy::roles::matcher();
        let has = market
            .hasRole(role, me)
            .call()
            .await
            .map_err(|e| Error::Chain(spheron_chain::client::decode(e)))?;
        if !has {
            return Err(Error::config(
                "key",
                format!("{me} does not hold the MATCHER role on {}", net.market),
            ));
        }
        Ok(OperatorNode {
            net,
            chain,
            me,
            market,
            config,
            orders: BTreeMap::new(),
        })
    }

    /// The operator's account.
    pub fn address(&self) -> Address {
        self.me
    }

    /// Follows the chain and matches orders until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let mut follower = Follower::new(
            self.net.market,
            self.net.deploy_block,
            self.config.confirmations,
            self.config.max_block_range.max(1),
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.config.poll) => {}
            }
            for _ in 0..32 {
                match follower.poll(&self.chain).await {
                    Ok(logs) => {
                        let empty = logs.is_empty();
                        for l in logs {
                            self.on_event(l.event);
                        }
                        if empty {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "following the chain");
                        break;
                    }
                }
            }
            if let Err(e) = self.match_due().await {
                tracing::warn!(error = %e, "matching");
            }
        }
        Ok(())
    }

    fn on_event(&mut self, ev: ChainEvent) {
        match ev {
            ChainEvent::OrderCreated {
                id,
                tenant,
                max_price_per_gpu_hour,
                gpus,
                duration_secs,
                bid_deadline,
                ..
            } => {
                self.orders.insert(
                    id,
                    OpenOrder {
                        tenant,
                        request: matching::bare_request(
                            gpus,
                            duration_secs,
                            max_price_per_gpu_hour,
                        ),
                        deadline: bid_deadline,
                        bids: Vec::new(),
                    },
                );
            }
            ChainEvent::OrderSpec { id, spec } => {
                if let Some(o) = self.orders.get_mut(&id)
                    && let Ok(r) = serde_json::from_slice::<GpuRequest>(&spec)
                    && r.count == o.request.count
                    && r.duration_secs == o.request.duration_secs
                    && r.max_price_per_gpu_hour == o.request.max_price_per_gpu_hour
                {
                    o.request = r;
                }
            }
            ChainEvent::BidPlaced {
                id,
                bid_index,
                provider,
                price_per_gpu_hour,
                model,
            } => {
                if let Some(o) = self.orders.get_mut(&id) {
                    // A provider's later bid replaces its earlier one.
                    o.bids.retain(|b| b.provider != provider);
                    o.bids.push(ChainBid {
                        index: bid_index,
                        provider,
                        price: price_per_gpu_hour,
                        model,
                    });
                }
            }
            ChainEvent::LeaseStarted { id, .. } | ChainEvent::OrderCancelled { id, .. } => {
                self.orders.remove(&id);
            }
            _ => {}
        }
    }

    async fn match_due(&mut self) -> Result<()> {
        if self.orders.is_empty() {
            return Ok(());
        }
        let now = self.chain.block_time().await?;
        let due: Vec<u64> = self
            .orders
            .iter()
            // Bids are accepted up to a block stamped with the deadline itself; once such a
            // block is seen, every bid is in, and the match lands in a later block.
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(o) = self.orders.get(&id).cloned() else {
                continue;
            };
            let m = matching::matcher(id)?;
            let round = matching::rank(
                &self.chain,
                self.net.market,
                &m,
                matching::RoundInput {
                    id,
                    tenant: o.tenant,
                    request: &o.request,
                    deadline: o.deadline,
                    bids: &o.bids,
                },
            )
            .await?;
            let Some((best, index)) = round.ranking.ranked.first().zip(round.indexes.first())
            else {
                tracing::info!(
                    order = id,
                    bids = o.bids.len(),
                    rejected = round.ranking.rejected.len(),
                    "no eligible bid: leaving the order to its tenant"
                );
                self.orders.remove(&id);
                continue;
            };
            match self
                .chain
                .send(
                    self.me,
                    self.market
                        .matchBid(id, alloy::primitives::U256::from(*index)),
                )
                .await
            {
                Ok(_) => tracing::info!(
                    order = id,
                    provider = %best.provider(),
                    score = best.score,
                    "matched"
                ),
                Err(e) => tracing::warn!(order = id, error = %e, "match refused"),
            }
            self.orders.remove(&id);
        }
        Ok(())
    }
}
