//! Following the market contract's events with a persistent block cursor.
//!
//! A [`Follower`] reads the market's logs one bounded block range per [`Follower::poll`], never
//! from genesis again: it keeps the next block to read ([`Follower::next_block`], the cursor a
//! caller persists) and stays `confirmations` blocks behind the head, so a caller that is far
//! behind catches up over several polls and a restarted caller resumes where it stopped.
//!
//! ```no_run
//! # async fn demo(chain: &spheron_chain::Chain, market: alloy::primitives::Address)
//! # -> spheron_chain::Result<()> {
//! use spheron_chain::follow::{ChainEvent, Follower};
//!
//! let mut f = Follower::new(market, 0, 2, 1_000);
//! loop {
//!     for logged in f.poll(chain).await? {
//!         if let ChainEvent::OrderSpec { id, spec } = &logged.event {
//!             println!("order {id} at block {}: {}", logged.block, String::from_utf8_lossy(spec));
//!         }
//!     }
//!     // persist f.next_block() here
//!     if f.caught_up(chain).await? {
//!         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!     }
//! }
//! # }
//! ```

use crate::bindings::SpheronMarket;
use crate::client::Chain;
use crate::error::{Error, Result};
use crate::registry::model_of;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use serde::{Deserialize, Serialize};
use spheron_core::GpuModel;

/// An event of the market contract, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChainEvent {
    /// An order was created and its budget locked (`gpus == 0`: a bare escrow lock).
    OrderCreated {
        /// The order id.
        id: u64,
        /// Who created it.
        tenant: Address,
        /// The payment token.
        token: Address,
        /// The ceiling per GPU-hour.
        max_price_per_gpu_hour: u128,
        /// How many GPUs.
        gpus: u32,
        /// The lease's length in seconds.
        duration_secs: u32,
        /// The last block timestamp (seconds) at which bids are accepted.
        bid_deadline: u64,
        /// The budget locked.
        locked: u128,
    },
    /// The tenant's full request for an order, logged right after its `OrderCreated`.
    OrderSpec {
        /// The order id.
        id: u64,
        /// The spec (JSON) as the tenant wrote it.
        spec: Vec<u8>,
    },
    /// An open order was cancelled and its lock returned.
    OrderCancelled {
        /// The order id.
        id: u64,
        /// What returned to the tenant.
        refunded: u128,
    },
    /// A provider bid on an order (replacing its earlier bid on it, if any).
    BidPlaced {
        /// The order id.
        id: u64,
        /// The bidder.
        provider: Address,
        /// The price per GPU-hour bid.
        price_per_gpu_hour: u128,
        /// The GPU model offered, when its name is one spheron knows.
        model: Option<GpuModel>,
    },
    /// A provider withdrew its bid.
    BidWithdrawn {
        /// The order id.
        id: u64,
        /// The bidder.
        provider: Address,
    },
    /// An operator quorum matched an order: the provider must confirm the start by
    /// `start_deadline`.
    LeaseMatched {
        /// The lease (and order) id.
        id: u64,
        /// The provider.
        provider: Address,
        /// The agreed price per GPU-hour.
        price_per_gpu_hour: u128,
        /// How many GPUs.
        gpus: u32,
        /// The matcher's seed (from the chain).
        seed: u64,
        /// Operator stake that signed.
        signed_weight: u128,
        /// Operator stake at the bid deadline.
        total_weight: u128,
        /// The block timestamp (seconds) by which the provider must confirm the start.
        start_deadline: u64,
    },
    /// A lease started: the provider confirmed the start (or the tenant opened a direct deal);
    /// billing runs from `start` to at most `end`.
    LeaseStarted {
        /// The lease (and order) id.
        id: u64,
        /// The provider.
        provider: Address,
        /// The agreed price per GPU-hour.
        price_per_gpu_hour: u128,
        /// How many GPUs.
        gpus: u32,
        /// The block timestamp (seconds) the lease started at.
        start: u64,
        /// The block timestamp (seconds) its billing ends at, unless extended.
        end: u64,
    },
    /// The tenant extended a lease.
    LeaseExtended {
        /// The lease (and order) id.
        id: u64,
        /// The lease's new length in seconds.
        duration_secs: u32,
        /// What the tenant locked on top.
        added: u128,
    },
    /// A lease closed and was settled.
    LeaseClosed {
        /// The lease (and order) id.
        id: u64,
        /// The provider.
        provider: Address,
        /// Who closed it.
        closed_by: Address,
        /// Seconds billed.
        seconds_billed: u64,
        /// Paid to the provider, after the fee.
        paid: u128,
        /// The protocol fee.
        fee: u128,
        /// Returned to the tenant.
        refunded: u128,
        /// Whether the lease had used its whole lock.
        funds_exhausted: bool,
    },
    /// A provider registered or updated its registration.
    ProviderRegistered {
        /// The provider's account.
        provider: Address,
        /// The gateway's URL.
        endpoint: String,
        /// The region.
        region: String,
        /// Hash of the gateway's TLS certificate (zero: plain HTTP).
        cert_hash: B256,
        /// The opaque metadata document.
        meta: String,
    },
}

/// A decoded event and where it was logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    /// The block number.
    pub block: u64,
    /// The log's index in its block.
    pub log_index: u64,
    /// The transaction that logged it.
    pub tx: B256,
    /// The event.
    pub event: ChainEvent,
}

/// Reads the market's events in bounded block ranges, `confirmations` blocks behind the head,
/// from a cursor that only moves forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follower {
    market: Address,
    next_block: u64,
    confirmations: u64,
    max_range: u64,
}

/// The latest block number.
pub async fn head(chain: &Chain) -> Result<u64> {
    chain
        .provider()
        .get_block_number()
        .await
        .map_err(|e| Error::Rpc(e.to_string()))
}

impl Follower {
    /// A follower of the market at `market` that reads from block `from_block` on (the block
    /// the market was deployed in, or a persisted [`Follower::next_block`]), stays
    /// `confirmations` blocks behind the head (0: up to the head) and reads at most
    /// `max_range` blocks per poll (0 is taken as 1).
    pub fn new(market: Address, from_block: u64, confirmations: u64, max_range: u64) -> Follower {
        Follower {
            market,
            next_block: from_block,
            confirmations,
            max_range: max_range.max(1),
        }
    }

    /// The next block to read: the cursor to persist and to start a new follower from.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// The market followed.
    pub fn market(&self) -> Address {
        self.market
    }

    /// The newest block this follower may read now, `head - confirmations`; `None` while the
    /// chain is shorter than that.
    fn safe_block(&self, head: u64) -> Option<u64> {
        head.checked_sub(self.confirmations)
    }

    /// Reads one range of at most `max_range` blocks from the cursor up to
    /// `head - confirmations`, returns the market's events in it in chain order (block, then
    /// log index; events this crate does not know are skipped) and moves the cursor past the
    /// range. Returns nothing, and leaves the cursor, when there is no confirmed block to
    /// read. On error the cursor does not move, so the same range is read again next time.
    pub async fn poll(&mut self, chain: &Chain) -> Result<Vec<Logged>> {
        let Some(safe) = self.safe_block(head(chain).await?) else {
            return Ok(Vec::new());
        };
        if self.next_block > safe {
            return Ok(Vec::new());
        }
        let to = safe.min(self.next_block.saturating_add(self.max_range - 1));
        let filter = Filter::new()
            .address(self.market)
            .from_block(self.next_block)
            .to_block(to);
        let logs = chain
            .provider()
            .get_logs(&filter)
            .await
            .map_err(|e| Error::Rpc(e.to_string()))?;
        let mut out = Vec::with_capacity(logs.len());
        for log in &logs {
            if log.removed {
                continue;
            }
            let event = match decode_event(log) {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(e) => {
                    // Skipped rather than retried: the same log would fail forever.
                    tracing::warn!(error = %e, "skipping a market log");
                    continue;
                }
            };
            let (Some(block), Some(log_index), Some(tx)) =
                (log.block_number, log.log_index, log.transaction_hash)
            else {
                return Err(Error::Rpc(format!(
                    "log of a mined block without its position: {log:?}"
                )));
            };
            out.push(Logged {
                block,
                log_index,
                tx,
                event,
            });
        }
        out.sort_by_key(|l| (l.block, l.log_index));
        self.next_block = to + 1;
        Ok(out)
    }

    /// Whether every confirmed block has been read (the next [`Follower::poll`] would return
    /// nothing until a new block is mined).
    pub async fn caught_up(&self, chain: &Chain) -> Result<bool> {
        Ok(self
            .safe_block(head(chain).await?)
            .is_none_or(|safe| self.next_block > safe))
    }
}

fn u64_of(v: U256, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Rpc(format!("{what} {v} does not fit 64 bits")))
}

fn u128_of(v: U256, what: &str) -> Result<u128> {
    u128::try_from(v).map_err(|_| Error::Rpc(format!("{what} {v} does not fit 128 bits")))
}

/// Decodes a market log: `Ok(None)` for events this crate does not follow, an error for a log
/// with a known signature that does not decode.
pub fn decode_event(log: &Log) -> Result<Option<ChainEvent>> {
    let Some(&topic) = log.topics().first() else {
        return Ok(None);
    };
    let bad = |e: alloy::sol_types::Error| Error::Rpc(format!("undecodable market log: {e}"));
    let inner = &log.inner;
    let event = match topic {
        SpheronMarket::OrderCreated::SIGNATURE_HASH => {
            let ev = SpheronMarket::OrderCreated::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::OrderCreated {
                id: ev.id,
                tenant: ev.tenant,
                token: ev.token,
                max_price_per_gpu_hour: ev.maxPricePerGpuHour,
                gpus: ev.gpus,
                duration_secs: ev.durationSecs,
                bid_deadline: ev.bidDeadline.to::<u64>(),
                locked: ev.locked,
            }
        }
        SpheronMarket::OrderSpec::SIGNATURE_HASH => {
            let ev = SpheronMarket::OrderSpec::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::OrderSpec {
                id: ev.id,
                spec: ev.spec.to_vec(),
            }
        }
        SpheronMarket::OrderCancelled::SIGNATURE_HASH => {
            let ev = SpheronMarket::OrderCancelled::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::OrderCancelled {
                id: ev.id,
                refunded: ev.refunded,
            }
        }
        SpheronMarket::BidPlaced::SIGNATURE_HASH => {
            let ev = SpheronMarket::BidPlaced::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::BidPlaced {
                id: ev.id,
                provider: ev.provider,
                price_per_gpu_hour: ev.pricePerGpuHour.to::<u128>(),
                model: model_of(ev.model),
            }
        }
        SpheronMarket::LeaseStarted::SIGNATURE_HASH => {
            let ev = SpheronMarket::LeaseStarted::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::LeaseStarted {
                id: ev.id,
                provider: ev.provider,
                price_per_gpu_hour: ev.pricePerGpuHour,
                gpus: ev.gpus,
                start: ev.start.to::<u64>(),
                end: ev.end.to::<u64>(),
            }
        }
        SpheronMarket::BidWithdrawn::SIGNATURE_HASH => {
            let ev = SpheronMarket::BidWithdrawn::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::BidWithdrawn {
                id: ev.id,
                provider: ev.provider,
            }
        }
        SpheronMarket::LeaseMatched::SIGNATURE_HASH => {
            let ev = SpheronMarket::LeaseMatched::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::LeaseMatched {
                id: ev.id,
                provider: ev.provider,
                price_per_gpu_hour: ev.pricePerGpuHour,
                gpus: ev.gpus,
                seed: ev.seed,
                signed_weight: u128_of(ev.signedWeight, "signedWeight")?,
                total_weight: u128_of(ev.totalWeight, "totalWeight")?,
                start_deadline: ev.startDeadline.to::<u64>(),
            }
        }
        SpheronMarket::LeaseExtended::SIGNATURE_HASH => {
            let ev = SpheronMarket::LeaseExtended::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::LeaseExtended {
                id: ev.id,
                duration_secs: ev.durationSecs,
                added: ev.added,
            }
        }
        SpheronMarket::LeaseClosed::SIGNATURE_HASH => {
            let ev = SpheronMarket::LeaseClosed::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::LeaseClosed {
                id: ev.id,
                provider: ev.provider,
                closed_by: ev.closedBy,
                seconds_billed: u64_of(ev.secondsBilled, "secondsBilled")?,
                paid: u128_of(ev.paid, "paid")?,
                fee: u128_of(ev.fee, "fee")?,
                refunded: u128_of(ev.refunded, "refunded")?,
                funds_exhausted: ev.fundsExhausted,
            }
        }
        SpheronMarket::ProviderRegistered::SIGNATURE_HASH => {
            let ev = SpheronMarket::ProviderRegistered::decode_log(inner)
                .map_err(bad)?
                .data;
            ChainEvent::ProviderRegistered {
                provider: ev.provider,
                endpoint: ev.endpoint,
                region: ev.region,
                cert_hash: ev.certHash,
                meta: ev.meta,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}
