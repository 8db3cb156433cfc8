//! Quotes on the network: what each registered provider would bid on a request now, before
//! renting. Nothing is published, locked or reserved.
//!
//! Every provider that may bid is asked at its registered gateway (`POST /quote`, over its
//! pinned TLS certificate, so the answer is the provider's own). It runs the same bid
//! strategy it bids on orders with, over its live inventory. Each answer then goes through the
//! matcher's [`StandardFilters`] with the provider's on-chain profile (regions, allow and deny
//! lists, trust tier, latency, price ceiling), so a quote lists only offers the matcher would
//! consider. A quote is not a promise: the provider bids on the order when it is published,
//! and its free GPUs may be gone by then.

use crate::gateway_client::GatewayClient;
use crate::registry::provider_from_record;
use alloy::primitives::Address;
use futures::StreamExt;
use spheron_chain::registry::ProviderRecord;
use spheron_core::matching::StandardFilters;
use spheron_core::money::accrued_cost;
use spheron_core::{
    AccountId, Amount, Bid, Candidate, GpuModel, GpuRequest, Order, OrderId, Timestamp,
};
use std::time::Duration;

/// How long a gateway gets to answer a quote.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How many gateways are asked at once.
const CONCURRENCY: usize = 16;

/// One provider's price for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkQuote {
    /// The provider's chain account.
    pub provider: Address,
    /// Its name (from its registry metadata).
    pub name: String,
    /// Its region label.
    pub region: String,
    /// Its trust tier on chain.
    pub tier: u8,
    /// The GPU model it would offer.
    pub model: GpuModel,
    /// Its price per GPU-hour (base units).
    pub price_per_gpu_hour: Amount,
    /// What the whole request would cost at that price (GPUs x duration), at most.
    pub cost: Amount,
    /// GPUs of that model free now on its largest machine, as it reports them.
    pub free_gpus: u32,
}

/// Why a provider gave no quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoQuote {
    /// The provider's chain account.
    pub provider: Address,
    /// Why: unreachable, a refused or malformed answer, no bid, or the filter it fails.
    pub reason: String,
}

/// The quotes for a request, cheapest first, and the providers that gave none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quotes {
    /// Offers the matcher would consider, cheapest first (ties by name).
    pub quotes: Vec<NetworkQuote>,
    /// Every other registered provider that may bid, with the reason.
    pub none: Vec<NoQuote>,
}

/// Asks every provider of `records` that may bid, at most `timeout` each, and screens the
/// answers against `request`. `client` makes the pinned gateway client of a record. Fails only
/// for a request the matcher refuses outright (a location off the globe).
pub async fn collect(
    request: &GpuRequest,
    records: Vec<ProviderRecord>,
    timeout: Duration,
    client: impl Fn(&ProviderRecord) -> Result<GatewayClient, String>,
) -> spheron_core::Result<Quotes> {
    let order = Order {
        id: OrderId(0),
        tenant: AccountId([0; 20]),
        request: request.clone(),
        created_at: Timestamp(0),
        bid_deadline: Timestamp(0),
    };
    let filters = StandardFilters::new(&order)?;
    let asks = records.into_iter().filter(|r| r.can_bid).map(|r| {
        let c = client(&r);
        async move {
            let reply = match c {
                Ok(c) => tokio::time::timeout(timeout, c.quote(request))
                    .await
                    .map_err(|_| format!("no answer in {} ms", timeout.as_millis()))
                    .and_then(|a| a.map_err(|e| e.to_string())),
                Err(e) => Err(e),
            };
            (r, reply)
        }
    });
    let answers: Vec<_> = futures::stream::iter(asks)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut out = Quotes::default();
    for (rec, reply) in answers {
        match screen(&filters, &rec, reply) {
            Ok(q) => out.quotes.push(q),
            Err(reason) => out.none.push(NoQuote {
                provider: rec.address,
                reason,
            }),
        }
    }
    out.quotes.sort_by(|a, b| {
        (a.price_per_gpu_hour, &a.name, a.provider).cmp(&(
            b.price_per_gpu_hour,
            &b.name,
            b.provider,
        ))
    });
    out.none.sort_by_key(|n| n.provider);
    Ok(out)
}

/// One provider's answer as a quote, or why it is none.
fn screen(
    filters: &StandardFilters<'_>,
    rec: &ProviderRecord,
    reply: Result<crate::wire::QuoteReply, String>,
) -> Result<NetworkQuote, String> {
    let reply = reply?;
    if reply.provider != rec.address {
        return Err(format!(
            "its gateway answered as {:#x}, not as the registered provider",
            reply.provider
        ));
    }
    let bid = reply
        .bid
        .ok_or_else(|| "would not bid (no fitting free GPUs, or above the ceiling)".to_string())?;
    let price = bid
        .price_per_gpu_hour
        .parse::<u128>()
        .map(Amount)
        .map_err(|e| format!("price `{}`: {e}", bid.price_per_gpu_hour))?;
    let provider = provider_from_record(rec)?;
    let order = filters.order();
    let candidate = Candidate {
        profile: provider.profile(bid.model),
        bid: Bid {
            order: order.id,
            provider: provider.id,
            model: bid.model,
            price_per_gpu_hour: price,
            placed_at: Timestamp(0),
        },
    };
    if let Some(reason) = filters.check(&candidate) {
        return Err(format!("the matcher would reject it: {reason}"));
    }
    let cost = accrued_cost(price, order.request.count, order.request.duration_secs)
        .map_err(|e| e.to_string())?;
    Ok(NetworkQuote {
        provider: rec.address,
        name: provider.name,
        region: provider.region,
        tier: provider.tier.0,
        model: bid.model,
        price_per_gpu_hour: price,
        cost,
        free_gpus: bid.free_gpus,
    })
}
