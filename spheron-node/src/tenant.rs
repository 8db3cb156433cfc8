//! The tenant's client for a network: [`NetworkMarket`] holds only the tenant's key and
//! meets providers only through the chain and their gateways.
//!
//! `rent` publishes the order on chain (the contract locks the budget), waits for the
//! operator's match, challenges the matched provider through its gateway (proof of GPU),
//! sends the signed manifest, waits until the workload runs and returns the same
//! [`LeaseHandle`] as the embedded marketplace. Status and logs come from the gateway; stop
//! closes the lease on chain and tells the gateway; cost and refund are read from the chain's
//! `LeaseClosed` event. A failed challenge or launch closes that lease (the tenant pays the
//! seconds it was open, the rest is refunded) and publishes the order again without that
//! provider, up to `max_attempts` times.

use crate::error::{Error, Result};
use crate::gateway_client::GatewayClient;
use crate::matching::{self, ChainBid, Round};
use crate::network::NetworkFile;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider as _};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use spheron_chain::bindings::{SpheronMarket, TestToken};
use spheron_chain::registry::order_state;
use spheron_chain::{Chain, registry};
use spheron_core::proof::{ChallengeVerifier, run_challenge};
use spheron_core::{
    AccountId, Amount, Candidate, Clock, CloseReason, GpuModel, GpuRequest, LeaseControl,
    LeaseEvent, LeaseHandle, LeaseId, LeaseReport, LeaseState, LogLine, LogSource, LogStream,
    OrderId, ProgressEvent, Ranked, RejectReason, Rejection, Settlement, Step, SystemClock,
    Timestamp, Token, TrustTier, Workload,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub mod resume;
pub use resume::{MIN_RESUME_SECS, RESUME_RENTS};

/// Timeouts and limits of the network rent flow. Every remote step has one, measured on the
/// market's [`Clock`].
#[derive(Clone, Debug)]
pub struct TenantConfig {
    /// Bid window of published orders, seconds (default: the network file's).
    pub bid_window_secs: Option<u32>,
    /// How long after the bid deadline to wait for the operator's match.
    pub match_timeout: Duration,
    /// Longest proof-of-GPU exchange.
    pub challenge_timeout: Duration,
    /// Longest manifest delivery (one request, retried while the provider catches up).
    pub manifest_timeout: Duration,
    /// Longest wait from an accepted manifest to a running workload.
    pub launch_timeout: Duration,
    /// Providers tried per rent before giving up.
    pub max_attempts: usize,
    /// Poll interval of chain and gateway while a rent is in progress.
    pub poll: Duration,
    /// Poll interval of a running lease (its chain state and its gateway status).
    pub lease_poll: Duration,
    /// Consecutive failed gateway polls after which the provider counts as gone and the
    /// tenant closes the lease itself.
    pub gateway_failures: u32,
    /// How long after the ordered duration a lease may stay open before the tenant closes it.
    pub expiry_grace: Duration,
    /// Attempts of each settlement transaction.
    pub settle_attempts: u32,
    /// A spend cap over every lease rented through this market object, base units (none by
    /// default): see [`SpendLimit`](spheron_core::SpendLimit).
    pub spend_cap: Option<Amount>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            bid_window_secs: None,
            match_timeout: Duration::from_secs(30),
            challenge_timeout: Duration::from_secs(30),
            manifest_timeout: Duration::from_secs(30),
            launch_timeout: Duration::from_secs(60),
            max_attempts: 3,
            poll: Duration::from_millis(250),
            lease_poll: Duration::from_secs(1),
            gateway_failures: 5,
            expiry_grace: Duration::from_secs(30),
            settle_attempts: 5,
            spend_cap: None,
        }
    }
}

/// A lease as the chain records it (for `spheron lease list` and `status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSummary {
    /// Lease (order) id.
    pub id: u64,
    /// `open`, `leased`, `closed` or `cancelled`.
    pub state: String,
    /// The provider, once matched.
    pub provider: Option<Address>,
    /// GPUs.
    pub gpus: u32,
    /// Price per GPU-hour (the ceiling while open), base units.
    pub price_per_gpu_hour: u128,
    /// Budget locked, base units (0 once closed).
    pub locked: u128,
    /// Chain time the lease started, unix seconds.
    pub start: u64,
    /// Ordered duration, seconds.
    pub duration_secs: u64,
    /// The settlement, once closed.
    pub settlement: Option<Settlement>,
}

struct Inner {
    net: NetworkFile,
    chain: Arc<Chain>,
    signer: PrivateKeySigner,
    me: Address,
    market: SpheronMarket::SpheronMarketInstance<DynProvider>,
    token: Token,
    verifier: Arc<dyn ChallengeVerifier>,
    config: TenantConfig,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<ProgressEvent>,
    /// The market's spend cap, from [`TenantConfig::spend_cap`].
    spend: Option<Arc<spheron_core::SpendLimit>>,
}

/// The tenant's client of a network; see the [module docs](self).
#[derive(Clone)]
pub struct NetworkMarket {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NetworkMarket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkMarket")
            .field("tenant", &self.inner.me)
            .field("market", &self.inner.net.market)
            .finish_non_exhaustive()
    }
}

fn chain_err(e: alloy::contract::Error) -> spheron_core::Error {
    to_core(Error::Chain(spheron_chain::client::decode(e)))
}

/// The node's error as the core error the rent flow returns.
pub fn to_core(e: Error) -> spheron_core::Error {
    match e {
        Error::Core(c) => c,
        Error::Chain(c) => c.into(),
        Error::Config { field, reason } => {
            spheron_core::Error::invalid("network", format!("{field}: {reason}"))
        }
        other => spheron_core::Error::Backend {
            backend: "network",
            message: other.to_string(),
        },
    }
}

/// Waits for `fut` until `clock` reaches `deadline`.
async fn within<T>(
    clock: &dyn Clock,
    timeout: Duration,
    step: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> spheron_core::Result<T> {
    let deadline = clock.now().add(timeout);
    tokio::select! {
        v = fut => Ok(v),
        _ = clock.sleep_until(deadline) => Err(spheron_core::Error::Timeout {
            step,
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// The logs matching `filter`, with RPC failures as the core error.
async fn get_logs(
    chain: &Chain,
    filter: &Filter,
) -> spheron_core::Result<Vec<alloy::rpc::types::Log>> {
    chain
        .provider()
        .get_logs(filter)
        .await
        .map_err(|e| spheron_core::Error::from(spheron_chain::Error::Rpc(e.to_string())))
}

/// Cleans up a rent that is dropped or fails half-way: an open order is cancelled, a started
/// lease closed (the tenant pays the seconds it was open), the gateway told to stop.
struct Unwind {
    inner: Arc<Inner>,
    order: Option<u64>,
    /// The last order this attempt published (kept after the undo, for the report).
    last: u64,
    leased: bool,
    gateway: Option<GatewayClient>,
}

impl Unwind {
    fn disarm(&mut self) {
        self.order = None;
    }

    /// Undoes now and waits for it (the drop path only spawns the undo).
    async fn run_now(&mut self) {
        if let Some(id) = self.order.take() {
            undo(&self.inner, id, self.leased, self.gateway.take()).await;
        }
    }
}

impl Drop for Unwind {
    fn drop(&mut self) {
        let Some(id) = self.order.take() else {
            return;
        };
        let inner = self.inner.clone();
        let leased = self.leased;
        let gateway = self.gateway.take();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            undo(&inner, id, leased, gateway).await;
        });
    }
}

async fn undo(inner: &Inner, id: u64, leased: bool, gateway: Option<GatewayClient>) {
    if leased {
        if let Some(g) = gateway {
            let _ = g.stop(id).await;
        }
        if let Err(e) = close_with_retries(inner, id).await {
            tracing::error!(lease = id, error = %e, "closing an abandoned lease failed");
        }
    } else {
        // It may be matched meanwhile (the operator's match can land in the block before the
        // cancel): cancel while it is open, close once it is leased.
        for attempt in 0..inner.config.settle_attempts.max(1) {
            if inner
                .chain
                .send(inner.me, inner.market.cancelOrder(id))
                .await
                .is_ok()
            {
                return;
            }
            match inner.market.getOrder(id).call().await.map(|o| o.state) {
                Ok(order_state::MATCHED | order_state::LEASED) => {
                    if let Err(e) = close_with_retries(inner, id).await {
                        tracing::error!(lease = id, error = %e, "closing an abandoned lease failed");
                    }
                    return;
                }
                Ok(order_state::OPEN) | Err(_) => {
                    tracing::warn!(
                        order = id,
                        attempt,
                        "cancelling an abandoned order: retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                }
                Ok(_) => return, // cancelled or closed already
            }
        }
        tracing::error!(order = id, "cancelling an abandoned order failed");
    }
}

/// Closes lease `id` as its tenant, retrying transport failures; a lease already closed is
/// not an error.
async fn close_with_retries(inner: &Inner, id: u64) -> spheron_core::Result<()> {
    let mut last = None;
    for attempt in 0..inner.config.settle_attempts.max(1) {
        match inner
            .chain
            .send(inner.me, inner.market.closeLease(id))
            .await
        {
            Ok(_) => return Ok(()),
            Err(spheron_chain::Error::Revert { name, .. }) if name.starts_with("WrongState") => {
                return Ok(());
            }
            Err(e) => {
                // Closed meanwhile by its provider (our transaction then reverts when mined)?
                if let Ok(o) = inner.market.getOrder(id).call().await
                    && (o.state == order_state::CLOSED || o.state == order_state::CANCELLED)
                {
                    return Ok(());
                }
                tracing::warn!(lease = id, attempt, error = %e, "closing the lease");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
            }
        }
    }
    Err(last
        .map(Into::into)
        .unwrap_or(spheron_core::Error::LeaseClosed(LeaseId(id))))
}

impl NetworkMarket {
    /// Connects to the network described by `net` as the tenant holding `key`.
    pub async fn connect(net: NetworkFile, key: PrivateKeySigner) -> Result<NetworkMarket> {
        Self::connect_with(net, key, TenantConfig::default(), Arc::new(SystemClock)).await
    }

    /// [`connect`](Self::connect) with explicit settings and clock.
    pub async fn connect_with(
        net: NetworkFile,
        key: PrivateKeySigner,
        config: TenantConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<NetworkMarket> {
        let me = key.address();
        let chain = Arc::new(Chain::connect(&net.rpc_url, [key.clone()])?);
        let chain_id = chain
            .provider()
            .get_chain_id()
            .await
            .map_err(|e| spheron_chain::Error::Rpc(e.to_string()))?;
        if chain_id != net.chain_id {
            return Err(Error::config(
                "chain_id",
                format!(
                    "the network file says {}, the node says {chain_id}",
                    net.chain_id
                ),
            ));
        }
        let market = SpheronMarket::new(net.market, chain.provider().clone());
        // Provider nodes sign their commitments: require it (relays and replays fail).
        let verifier = spheron_gpu::Simulation::network()
            .try_verifier()
            .map_err(|e| Error::config("verifier", e.to_string()))?;
        let (events, _) = broadcast::channel(1024);
        Ok(NetworkMarket {
            inner: Arc::new(Inner {
                token: net.payment.token(),
                net,
                chain,
                signer: key,
                me,
                market,
                verifier: Arc::new(verifier),
                spend: config.spend_cap.map(spheron_core::SpendLimit::new),
                config,
                clock,
                events,
            }),
        })
    }

    /// The tenant's account.
    pub fn tenant(&self) -> Address {
        self.inner.me
    }

    /// The payment token.
    pub fn token(&self) -> &Token {
        &self.inner.token
    }

    /// The network file this client was connected with.
    pub fn network(&self) -> &NetworkFile {
        &self.inner.net
    }

    /// Progress events of every rent from now on.
    pub fn events(&self) -> BoxStream<'static, ProgressEvent> {
        spheron_core::events::progress_stream(self.inner.events.subscribe())
    }

    /// The tenant's escrow balance in the payment token: (available, locked).
    pub async fn balance(&self) -> spheron_core::Result<(Amount, Amount)> {
        let a = self
            .inner
            .market
            .accountOf(self.inner.net.payment.address, self.inner.me)
            .call()
            .await
            .map_err(chain_err)?;
        Ok((Amount(a.available), Amount(a.locked)))
    }

    /// The tenant's wallet balance of the payment token (outside the escrow).
    pub async fn wallet(&self) -> spheron_core::Result<Amount> {
        let t = TestToken::new(
            self.inner.net.payment.address,
            self.inner.chain.provider().clone(),
        );
        let b = t.balanceOf(self.inner.me).call().await.map_err(chain_err)?;
        Ok(Amount(u128::try_from(b).unwrap_or(u128::MAX)))
    }

    /// Moves `amount` from the wallet into the escrow.
    pub async fn deposit(&self, amount: Amount) -> spheron_core::Result<()> {
        let i = &self.inner;
        let t = TestToken::new(i.net.payment.address, i.chain.provider().clone());
        i.chain
            .send(i.me, t.approve(i.net.market, U256::from(amount.0)))
            .await?;
        i.chain
            .send(
                i.me,
                i.market
                    .deposit(i.net.payment.address, U256::from(amount.0)),
            )
            .await?;
        Ok(())
    }

    /// Moves `amount` of available escrow funds back to the wallet.
    pub async fn withdraw(&self, amount: Amount) -> spheron_core::Result<()> {
        let i = &self.inner;
        i.chain
            .send(
                i.me,
                i.market
                    .withdraw(i.net.payment.address, U256::from(amount.0)),
            )
            .await?;
        Ok(())
    }

    /// Every provider in the on-chain registry.
    pub async fn providers(&self) -> spheron_core::Result<Vec<registry::ProviderRecord>> {
        Ok(registry::providers(&self.inner.chain, self.inner.net.market).await?)
    }

    /// What each registered provider would bid on `request` now, cheapest first, with the
    /// providers that gave no quote and why ([`crate::quote`]). Nothing is published or
    /// locked; each gateway gets [`crate::quote::TIMEOUT`] to answer.
    pub async fn quote(&self, request: &GpuRequest) -> spheron_core::Result<crate::quote::Quotes> {
        let i = &self.inner;
        let records = registry::providers(&i.chain, i.net.market).await?;
        crate::quote::collect(request, records, crate::quote::TIMEOUT, |rec| {
            self.pinned(rec).map_err(|e| e.to_string())
        })
        .await
    }

    /// The tenant's leases and orders, read from the chain (not from this process's memory).
    pub async fn leases(&self) -> spheron_core::Result<Vec<LeaseSummary>> {
        let i = &self.inner;
        let head = i
            .chain
            .provider()
            .get_block_number()
            .await
            .map_err(|e| spheron_core::Error::from(spheron_chain::Error::Rpc(e.to_string())))?;
        let mut ids = Vec::new();
        let mut from = i.net.deploy_block;
        while from <= head {
            let to = (from + 9_999).min(head);
            let filter = Filter::new()
                .address(i.net.market)
                .event_signature(SpheronMarket::OrderCreated::SIGNATURE_HASH)
                .topic2(i.me.into_word())
                .from_block(from)
                .to_block(to);
            let logs =
                i.chain.provider().get_logs(&filter).await.map_err(|e| {
                    spheron_core::Error::from(spheron_chain::Error::Rpc(e.to_string()))
                })?;
            for l in logs {
                if let Ok(ev) = SpheronMarket::OrderCreated::decode_log(&l.inner) {
                    ids.push(ev.data.id);
                }
            }
            from = to + 1;
        }
        let mut out = Vec::new();
        for id in ids {
            out.push(self.lease(id).await?);
        }
        Ok(out)
    }

    /// One lease as the chain records it.
    pub async fn lease(&self, id: u64) -> spheron_core::Result<LeaseSummary> {
        let i = &self.inner;
        let o = i.market.getOrder(id).call().await.map_err(chain_err)?;
        let state = match o.state {
            order_state::OPEN => "open",
            order_state::MATCHED => "matched",
            order_state::LEASED => "leased",
            order_state::CLOSED => "closed",
            order_state::CANCELLED => "cancelled",
            _ => return Err(spheron_core::Error::UnknownOrder(OrderId(id))),
        };
        let settlement = if o.state == order_state::CLOSED {
            self.settlement(id).await?
        } else {
            None
        };
        Ok(LeaseSummary {
            id,
            state: state.into(),
            provider: (o.provider != Address::ZERO).then_some(o.provider),
            gpus: o.gpus,
            price_per_gpu_hour: o.price,
            locked: o.locked,
            start: u64::try_from(o.start).unwrap_or(0),
            duration_secs: u64::from(o.durationSecs),
            settlement,
        })
    }

    /// The settlement of a closed lease, from its `LeaseClosed` event.
    pub async fn settlement(&self, id: u64) -> spheron_core::Result<Option<Settlement>> {
        Ok(self.closing(id).await?.map(|(s, _)| s))
    }

    /// The settlement of a closed lease and who closed it.
    async fn closing(&self, id: u64) -> spheron_core::Result<Option<(Settlement, Address)>> {
        let i = &self.inner;
        let filter = Filter::new()
            .address(i.net.market)
            .event_signature(SpheronMarket::LeaseClosed::SIGNATURE_HASH)
            .topic1(B256::from(U256::from(id)))
            .from_block(i.net.deploy_block);
        let logs = get_logs(&i.chain, &filter).await?;
        Ok(logs.iter().find_map(|l| {
            let ev = SpheronMarket::LeaseClosed::decode_log(&l.inner).ok()?;
            let d = ev.data;
            Some((
                Settlement {
                    lease: LeaseId(id),
                    seconds: u64::try_from(d.secondsBilled).unwrap_or(u64::MAX),
                    // The tenant's cost is what left its lock: provider payout plus fee.
                    paid: Amount(u128::try_from(d.paid.saturating_add(d.fee)).unwrap_or(u128::MAX)),
                    refunded: Amount(u128::try_from(d.refunded).unwrap_or(u128::MAX)),
                    funds_exhausted: d.fundsExhausted,
                },
                d.closedBy,
            ))
        }))
    }

    /// Stops lease `id` (started by any process holding this tenant's key): closes it on
    /// chain, tells the provider's gateway, and returns the settlement.
    pub async fn stop_lease(&self, id: u64) -> spheron_core::Result<Settlement> {
        let summary = self.lease(id).await?;
        if summary.state != "leased" && summary.state != "matched" {
            return Err(spheron_core::Error::LeaseClosed(LeaseId(id)));
        }
        close_with_retries(&self.inner, id).await?;
        if let Some(p) = summary.provider
            && let Ok(g) = self.gateway(p).await
            && let Err(e) = g.stop(id).await
        {
            tracing::warn!(lease = id, error = %e, "telling the gateway to stop");
        }
        self.settlement(id)
            .await?
            .ok_or_else(|| spheron_core::Error::Backend {
                backend: "network",
                message: format!("lease {id} closed but no LeaseClosed event was found"),
            })
    }

    /// The log of lease `id` from its provider's gateway.
    pub async fn lease_logs(&self, id: u64, follow: bool) -> spheron_core::Result<LogStream> {
        let summary = self.lease(id).await?;
        let provider = summary
            .provider
            .ok_or(spheron_core::Error::UnknownOrder(OrderId(id)))?;
        let g = self.gateway(provider).await?;
        Ok(log_stream(g, id, follow))
    }

    /// Downloads file `path` of lease `id`'s working directory (e.g. `outputs/model.ckpt`)
    /// from its provider's gateway to `dest`; returns the bytes written. The provider keeps
    /// the files until the lease has ended plus a grace period.
    pub async fn download(
        &self,
        id: u64,
        path: &str,
        dest: &std::path::Path,
    ) -> spheron_core::Result<u64> {
        let summary = self.lease(id).await?;
        let provider = summary
            .provider
            .ok_or(spheron_core::Error::UnknownOrder(OrderId(id)))?;
        let g = self.gateway(provider).await?;
        g.download(id, path, dest).await.map_err(gateway_err)
    }

    /// How to reach port `port` of lease `id`'s workload through its provider's gateway
    /// ([`crate::ports`]): the proxy URL, the lease's bearer token and the certificate hash.
    pub async fn endpoint(
        &self,
        id: u64,
        port: u16,
    ) -> spheron_core::Result<spheron_core::Endpoint> {
        let g = self.lease_gateway(id).await?;
        g.endpoint(id, port).await.map_err(gateway_err)
    }

    /// Serves `listener` as a plain-HTTP forwarder to port `port` of lease `id` through its
    /// provider's pinned gateway ([`crate::ports::forward`]); runs until the listener fails.
    pub async fn forward_port(
        &self,
        id: u64,
        port: u16,
        listener: tokio::net::TcpListener,
    ) -> spheron_core::Result<()> {
        let g = self.lease_gateway(id).await?;
        crate::ports::forward(g, id, port, listener)
            .await
            .map_err(gateway_err)
    }

    async fn lease_gateway(&self, id: u64) -> spheron_core::Result<GatewayClient> {
        let provider = self
            .lease(id)
            .await?
            .provider
            .ok_or(spheron_core::Error::UnknownOrder(OrderId(id)))?;
        self.gateway(provider).await
    }

    /// The gateway status of lease `id`.
    pub async fn lease_gateway_status(
        &self,
        id: u64,
    ) -> spheron_core::Result<crate::wire::LeaseStatus> {
        let summary = self.lease(id).await?;
        let provider = summary
            .provider
            .ok_or(spheron_core::Error::UnknownOrder(OrderId(id)))?;
        let g = self.gateway(provider).await?;
        g.status(id).await.map_err(gateway_err)
    }

    async fn gateway(&self, provider: Address) -> spheron_core::Result<GatewayClient> {
        let i = &self.inner;
        let rec = registry::provider(&i.chain, i.net.market, provider)
            .await?
            .ok_or_else(|| spheron_core::Error::Backend {
                backend: "network",
                message: format!("provider {provider} is not registered"),
            })?;
        self.pinned(&rec).map_err(gateway_err)
    }

    /// This tenant's client of the gateway `rec` registers, pinned to its certificate.
    fn pinned(
        &self,
        rec: &registry::ProviderRecord,
    ) -> std::result::Result<GatewayClient, crate::wire::GatewayError> {
        let i = &self.inner;
        GatewayClient::new_pinned(
            &rec.endpoint,
            i.signer.clone(),
            i.net.chain_id,
            i.net.market,
            rec.cert_hash,
        )
    }

    fn emit(&self, order: u64, progress: &Mutex<Vec<ProgressEvent>>, step: Step) {
        let e = ProgressEvent {
            at: self.inner.clock.now(),
            order: OrderId(order),
            step,
        };
        tracing::info!(order, step = %e.step, "rent");
        progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e.clone());
        let _ = self.inner.events.send(e);
    }

    /// Rents GPUs: returns once the workload runs on a provider that passed proof of GPU.
    ///
    /// Cost control: the contract locks ceiling x count x duration, so a request with a
    /// `max_spend` orders only the duration the cap buys at its price ceiling
    /// ([`GpuRequest::spend_limited_secs`]): the lock, and so any payment, stays within the
    /// cap, and a lease that runs to that end closes as
    /// [`CloseReason::SpendCapReached`]. The market's [`TenantConfig::spend_cap`] is checked
    /// before anything is published. An `idle_timeout` is enforced by the lease's supervisor
    /// from the activity the provider's gateway reports.
    pub async fn rent(
        &self,
        request: GpuRequest,
        workload: Workload,
    ) -> spheron_core::Result<LeaseHandle> {
        workload.validate()?;
        let mut request = request;
        request.duration_secs = request.spend_limited_secs();
        let commitment = match &self.inner.spend {
            Some(limit) => Some(limit.commit(request.budget()?)?),
            None => None,
        };
        let handle = self.rent_attempts(request, workload).await?;
        if let Some(c) = commitment {
            let h = handle.clone();
            tokio::spawn(async move {
                let r = h.wait().await;
                c.settle(r.settlement.map(|s| s.paid));
            });
        }
        Ok(handle)
    }

    /// The rent flow proper: up to `max_attempts` providers.
    async fn rent_attempts(
        &self,
        request: GpuRequest,
        workload: Workload,
    ) -> spheron_core::Result<LeaseHandle> {
        let i = &self.inner;
        let budget = request.budget()?;
        let (available, _) = self.balance().await?;
        if available < budget {
            return Err(spheron_core::Error::InsufficientFunds {
                needed: budget,
                available,
            });
        }
        let progress = Arc::new(Mutex::new(Vec::new()));
        let mut request = request;
        let mut skipped: Vec<Rejection> = Vec::new();
        let attempts = i.config.max_attempts.max(1);
        let mut last_order = 0;
        for attempt in 1..=attempts {
            let mut unwind = Unwind {
                inner: i.clone(),
                order: None,
                last: last_order,
                leased: false,
                gateway: None,
            };
            let outcome = self
                .attempt(
                    attempt,
                    &request,
                    &workload,
                    &progress,
                    &mut unwind,
                    &mut skipped,
                )
                .await;
            last_order = unwind.last;
            match outcome? {
                Attempt::Running(handle) => {
                    unwind.disarm();
                    return Ok(handle);
                }
                Attempt::NoMatch => {
                    unwind.disarm();
                    break;
                }
                Attempt::Failed(provider) => {
                    // Close that lease (paid for the seconds it was open), then try again
                    // without this provider.
                    unwind.run_now().await;
                    request.deny_providers.push(provider);
                }
            }
        }
        self.emit(
            last_order,
            &progress,
            Step::NoMatch {
                rejected: skipped.clone(),
            },
        );
        Err(spheron_core::Error::NoMatch {
            order: OrderId(last_order),
            rejected: skipped,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        attempt: usize,
        request: &GpuRequest,
        workload: &Workload,
        progress: &Arc<Mutex<Vec<ProgressEvent>>>,
        unwind: &mut Unwind,
        skipped: &mut Vec<Rejection>,
    ) -> spheron_core::Result<Attempt> {
        let i = &self.inner;
        let budget = request.budget()?;
        let spec = serde_json::to_vec(request)
            .map_err(|e| spheron_core::Error::invalid("request", e.to_string()))?;
        let window = i.config.bid_window_secs.unwrap_or(i.net.bid_window_secs);
        let duration = u32::try_from(request.duration_secs)
            .map_err(|_| spheron_core::Error::invalid("duration", "too long for the chain"))?;
        let params = registry::OrderParams {
            token: i.net.payment.address,
            max_price_per_gpu_hour: request.max_price_per_gpu_hour.0,
            gpus: request.count,
            duration_secs: duration,
            bid_window_secs: window,
            spec,
        };
        let created = registry::create_order(&i.chain, i.net.market, i.me, &params).await?;
        // The contract assigned the id: from here on, dropping the rent cancels this order.
        let id = created.id;
        unwind.order = Some(id);
        unwind.last = id;
        self.emit(id, progress, Step::Published { budget });
        self.emit(id, progress, Step::EscrowLocked { amount: budget });

        // Wait for the operator's match.
        let o = i.market.getOrder(id).call().await.map_err(chain_err)?;
        let deadline = u64::try_from(o.bidDeadline).unwrap_or(u64::MAX);
        let wait_until = Duration::from_secs(u64::from(window)) + i.config.match_timeout;
        let matched = within(i.clock.as_ref(), wait_until, "match", async {
            let mut bids_announced = false;
            loop {
                let o = i.market.getOrder(id).call().await.map_err(chain_err)?;
                if !bids_announced
                    && o.state == order_state::OPEN
                    && i.chain.block_time().await? >= deadline
                {
                    bids_announced = true;
                    self.emit(
                        id,
                        progress,
                        Step::BidsIn {
                            count: usize::from(o.bidCount),
                        },
                    );
                }
                if order_state::is_live(o.state) {
                    if !bids_announced {
                        self.emit(
                            id,
                            progress,
                            Step::BidsIn {
                                count: usize::from(o.bidCount),
                            },
                        );
                    }
                    return Ok::<_, spheron_core::Error>(o);
                }
                if o.state != order_state::OPEN {
                    return Err(spheron_core::Error::UnknownOrder(OrderId(id)));
                }
                tokio::time::sleep(i.config.poll).await;
            }
        })
        .await;
        let (bids, round) = self.explain(id, created.block, request, deadline).await;
        let o = match matched {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                // Nobody matched in time: cancel the order, which refunds the lock.
                unwind.run_now().await;
                if let Some(r) = &round {
                    skipped.extend(r.ranking.rejected.iter().cloned());
                }
                if bids.is_empty() {
                    skipped.push(Rejection {
                        provider: AccountId([0; 20]),
                        reason: RejectReason::Other(format!(
                            "no provider bid on order {id} within its {window} s window"
                        )),
                    });
                }
                return Ok(Attempt::NoMatch);
            }
        };
        unwind.leased = true;
        let provider = o.provider;
        let pid = AccountId(provider.into_array());
        let (choice, mut rejected) = winner(&round, &bids, provider, id);
        let model = choice.candidate.bid.model;
        self.emit(
            id,
            progress,
            Step::Matched {
                provider: pid,
                score: choice.score,
                attempt,
            },
        );

        // Proof of GPU through the provider's gateway.
        let gateway = match self.gateway(provider).await {
            Ok(g) => g,
            Err(e) => {
                skipped.push(Rejection {
                    provider: pid,
                    reason: RejectReason::Other(format!("gateway unusable: {e}")),
                });
                return Ok(Attempt::Failed(pid));
            }
        };
        unwind.gateway = Some(gateway.clone());
        self.emit(
            id,
            progress,
            Step::Verifying {
                provider: pid,
                claimed: model,
            },
        );
        // Signed as this lease's tenant: the gateway commits only for challengers the chain
        // vouches for.
        let prover = gateway.prover().with_challenger(i.signer.clone(), Some(id));
        let entropy = crate::verifier::os_entropy().map_err(|e| spheron_core::Error::Backend {
            backend: "entropy",
            message: e.to_string(),
        })?;
        let proof = within(
            i.clock.as_ref(),
            i.config.challenge_timeout,
            "challenge",
            run_challenge(i.verifier.as_ref(), &prover, pid, model, entropy),
        )
        .await;
        let proof = match proof {
            Ok(p) if p.verdict.passed() => {
                self.emit(
                    id,
                    progress,
                    Step::Verified {
                        provider: pid,
                        verdict: p.verdict.clone(),
                    },
                );
                p
            }
            other => {
                let reason = match other {
                    Ok(p) => p.verdict.to_string(),
                    Err(e) => e.to_string(),
                };
                self.emit(
                    id,
                    progress,
                    Step::ChallengeFailed {
                        provider: pid,
                        reason: reason.clone(),
                        slashed: Amount::ZERO,
                        // The chain's verifiers charge it; this client applies nothing.
                        penalty: None,
                    },
                );
                skipped.push(Rejection {
                    provider: pid,
                    reason: RejectReason::ChallengeFailed(reason),
                });
                return Ok(Attempt::Failed(pid));
            }
        };

        // The signed manifest, then wait for the workload to run.
        let lease = LeaseId(id);
        self.emit(id, progress, Step::Launching { lease });
        let sent = within(
            i.clock.as_ref(),
            i.config.manifest_timeout,
            "manifest",
            async {
                loop {
                    match gateway.send_manifest(id, provider, workload, 120).await {
                        // The provider has not processed the match yet: retry.
                        Err(e) if e.error == crate::wire::ErrorCode::Unavailable => {
                            tokio::time::sleep(i.config.poll).await;
                        }
                        other => return other,
                    }
                }
            },
        )
        .await;
        let launch_failed = |why: String, skipped: &mut Vec<Rejection>| {
            skipped.push(Rejection {
                provider: pid,
                reason: RejectReason::Other(format!("launch failed: {why}")),
            });
            Attempt::Failed(pid)
        };
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Ok(launch_failed(e.to_string(), skipped)),
            Err(e) => return Ok(launch_failed(e.to_string(), skipped)),
        }
        let running = within(i.clock.as_ref(), i.config.launch_timeout, "launch", async {
            loop {
                match gateway.status(id).await {
                    Ok(s) => match s.work {
                        crate::wire::WorkState::Running | crate::wire::WorkState::Exited { .. } => {
                            return Ok(s);
                        }
                        crate::wire::WorkState::Failed { reason } => return Err(reason),
                        crate::wire::WorkState::Stopped => return Err("stopped".into()),
                        _ => {}
                    },
                    Err(e) if e.error == crate::wire::ErrorCode::Unavailable => {}
                    Err(e) => return Err(e.to_string()),
                }
                tokio::time::sleep(i.config.poll).await;
            }
        })
        .await;
        match running {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => return Ok(launch_failed(why, skipped)),
            Err(e) => return Ok(launch_failed(e.to_string(), skipped)),
        }
        // Billing starts when the provider confirms the start on chain: wait for it (or for
        // the close of a workload that ended first), so the lease reads as leased.
        let confirmed = within(
            i.clock.as_ref(),
            i.config.launch_timeout,
            "start confirmation",
            async {
                loop {
                    let o = i.market.getOrder(id).call().await.map_err(chain_err)?;
                    if o.state != order_state::MATCHED {
                        return Ok::<_, spheron_core::Error>(o);
                    }
                    tokio::time::sleep(i.config.poll).await;
                }
            },
        )
        .await;
        let started = match confirmed {
            Ok(Ok(c)) => u64::try_from(c.start).unwrap_or(0),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Ok(launch_failed(e.to_string(), skipped)),
        };
        self.emit(id, progress, Step::Running { lease });

        skipped.append(&mut rejected);
        let record = registry::provider(&i.chain, i.net.market, provider).await?;
        let (name, region, tier) = match &record {
            Some(r) => (
                crate::registry::provider_from_record(r)
                    .map(|p| p.name)
                    .unwrap_or_else(|_| provider.to_string()),
                r.region.clone(),
                TrustTier(r.tier.min(7)),
            ),
            None => (provider.to_string(), String::new(), TrustTier(0)),
        };
        let start = started;
        let report = LeaseReport {
            lease,
            order: OrderId(id),
            tenant: AccountId(i.me.into_array()),
            provider: pid,
            provider_name: name,
            region,
            tier,
            tier_reason: format!("trust tier {} as recorded on chain", tier.0),
            model,
            gpus: o.gpus,
            price_per_gpu_hour: Amount(o.price),
            budget: Amount(o.locked),
            choice,
            skipped: skipped.clone(),
            proof,
            state: LeaseState::Active,
            started_at: Timestamp(start.saturating_mul(1000)),
            ended_at: None,
            cost: Amount::ZERO,
            settlement: None,
            progress: progress.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            resumed: Vec::new(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(NetLease {
            market: self.clone(),
            report: Mutex::new(report),
            gateway,
            stop_tx,
            closed_rx,
            progress: progress.clone(),
            limits: NetLimits::of(request),
        });
        tokio::spawn(supervise(shared.clone(), stop_rx, closed_tx));
        Ok(Attempt::Running(LeaseHandle::new(shared)))
    }

    /// Re-runs the operators' deterministic round on the chain's inputs (the bids and the
    /// registry at the order's reference block, the chain's seed), for the report.
    async fn explain(
        &self,
        id: u64,
        created_block: u64,
        request: &GpuRequest,
        deadline: u64,
    ) -> (Vec<ChainBid>, Option<Round>) {
        let i = &self.inner;
        let run =
            async {
                let at = matching::reference_block(&i.chain, created_block, deadline).await?;
                let digest = i
                    .market
                    .getOrder(id)
                    .block(alloy::eips::BlockId::number(at))
                    .call()
                    .await
                    .map_err(|e| crate::error::Error::Chain(spheron_chain::client::decode(e)))?
                    .bidsDigest;
                let seed =
                    i.market.seedOf(id, digest).call().await.map_err(|e| {
                        crate::error::Error::Chain(spheron_chain::client::decode(e))
                    })?;
                let bids = matching::bids_at(&i.chain, i.net.market, id, created_block, at).await?;
                let m = matching::matcher(seed)?;
                let input = matching::RoundInput {
                    id,
                    tenant: i.me,
                    request,
                    deadline,
                    bids: &bids,
                    block: Some(at),
                };
                let r = matching::rank(&i.chain, i.net.market, &m, input).await?;
                Ok::<_, crate::error::Error>((bids, r))
            };
        match run.await {
            Ok((bids, r)) => (bids, Some(r)),
            Err(e) => {
                tracing::warn!(order = id, error = %e, "could not re-run the match");
                (Vec::new(), None)
            }
        }
    }
}

/// The winner's ranked entry from our re-run (with its breakdown), and the others as skipped.
fn winner(
    round: &Option<Round>,
    bids: &[ChainBid],
    provider: Address,
    id: u64,
) -> (Ranked, Vec<Rejection>) {
    let pid = AccountId(provider.into_array());
    let mut rejected = Vec::new();
    let mut choice = None;
    if let Some(r) = round {
        for ranked in &r.ranking.ranked {
            if ranked.provider() == pid {
                choice = Some(ranked.clone());
            } else {
                rejected.push(Rejection {
                    provider: ranked.provider(),
                    reason: RejectReason::Other(format!(
                        "ranked lower (score {:.4})",
                        ranked.score
                    )),
                });
            }
        }
        rejected.extend(r.ranking.rejected.iter().cloned());
    }
    let choice = choice.unwrap_or_else(|| {
        // Our re-run disagrees with the operator (or could not run): report the bid as is,
        // with no breakdown, rather than invent one.
        tracing::warn!(order = id, %provider, "the operator's choice is not our top-ranked bid");
        let bid = bids.iter().find(|b| b.provider == provider);
        Ranked {
            candidate: Candidate {
                bid: spheron_core::Bid {
                    order: OrderId(id),
                    provider: pid,
                    model: bid.and_then(|b| b.model).unwrap_or(GpuModel::T4),
                    price_per_gpu_hour: Amount(bid.map(|b| b.price).unwrap_or(0)),
                    placed_at: Timestamp(0),
                },
                profile: spheron_core::Provider {
                    id: pid,
                    name: provider.to_string(),
                    endpoint: String::new(),
                    region: String::new(),
                    location: spheron_core::GeoPoint { lat: 0.0, lon: 0.0 },
                    inventory: Default::default(),
                    stake: Amount::ZERO,
                    stats: Default::default(),
                    tier: TrustTier(0),
                    banned: false,
                }
                .profile(GpuModel::T4),
            },
            score: 0.0,
            breakdown: Vec::new(),
        }
    });
    (choice, rejected)
}

enum Attempt {
    Running(LeaseHandle),
    NoMatch,
    Failed(AccountId),
}

fn gateway_err(e: crate::wire::GatewayError) -> spheron_core::Error {
    spheron_core::Error::Backend {
        backend: "gateway",
        message: e.to_string(),
    }
}

fn log_stream(g: GatewayClient, id: u64, follow: bool) -> LogStream {
    futures::stream::once(async move { g.logs(id, 0, follow) })
        .flatten()
        .scan(false, |ended, item| {
            if *ended {
                return futures::future::ready(None);
            }
            futures::future::ready(Some(match item {
                Ok(line) => line,
                Err(e) => {
                    *ended = true;
                    LogLine {
                        seq: u64::MAX,
                        source: LogSource::System,
                        line: format!("log stream from the provider ended: {e}"),
                    }
                }
            }))
        })
        .boxed()
}

/// The cost limits a network lease's supervisor enforces.
struct NetLimits {
    /// The request's idle timeout.
    idle_timeout: Option<Duration>,
    /// Whether the ordered duration is what the spend cap buys (its end is the cap's).
    capped: bool,
}

impl NetLimits {
    fn of(request: &GpuRequest) -> Self {
        NetLimits {
            idle_timeout: request.idle_timeout(),
            capped: request.max_spend.is_some_and(|cap| {
                spheron_core::cost::seconds_within(
                    cap,
                    request.max_price_per_gpu_hour,
                    request.count,
                ) <= request.duration_secs
            }),
        }
    }
}

/// A network lease behind a [`LeaseHandle`].
struct NetLease {
    market: NetworkMarket,
    report: Mutex<LeaseReport>,
    gateway: GatewayClient,
    stop_tx: watch::Sender<bool>,
    closed_rx: watch::Receiver<bool>,
    progress: Arc<Mutex<Vec<ProgressEvent>>>,
    limits: NetLimits,
}

#[async_trait::async_trait]
impl LeaseControl for NetLease {
    async fn endpoint(&self, port: u16) -> spheron_core::Result<spheron_core::Endpoint> {
        let r = self.snapshot();
        if r.state.is_closed() {
            return Err(spheron_core::Error::LeaseClosed(r.lease));
        }
        self.gateway
            .endpoint(r.lease.0, port)
            .await
            .map_err(gateway_err)
    }

    fn snapshot(&self) -> LeaseReport {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn logs(&self) -> spheron_core::Result<LogStream> {
        Ok(log_stream(
            self.gateway.clone(),
            self.snapshot().lease.0,
            true,
        ))
    }

    async fn report(&self) -> spheron_core::Result<LeaseReport> {
        let mut r = self.snapshot();
        if !r.state.is_closed() {
            let i = &self.market.inner;
            let backend = |e: String| spheron_core::Error::Backend {
                backend: "chain",
                message: format!("reading the accrued cost: {e}"),
            };
            // Closed on chain before this client saw the close: the accrual is no longer
            // defined, and the settlement arrives with the close event.
            let state = i
                .market
                .getOrder(r.lease.0)
                .call()
                .await
                .map_err(|e| backend(e.to_string()))?
                .state;
            if state != order_state::LEASED {
                return Ok(r);
            }
            let now = i
                .chain
                .block_time()
                .await
                .map_err(|e| backend(e.to_string()))?;
            let a = i
                .market
                .accruedAt(r.lease.0, U256::from(now))
                .call()
                .await
                .map_err(|e| backend(e.to_string()))?;
            r.cost = Amount(u128::try_from(a.cost).unwrap_or(u128::MAX));
        }
        Ok(r)
    }

    async fn wait(&self) -> LeaseReport {
        let mut rx = self.closed_rx.clone();
        let _ = rx.wait_for(|c| *c).await;
        self.snapshot()
    }

    async fn stop(&self) -> spheron_core::Result<LeaseReport> {
        if *self.closed_rx.borrow() || *self.stop_tx.borrow() {
            return Err(spheron_core::Error::LeaseClosed(self.snapshot().lease));
        }
        self.stop_tx.send_replace(true);
        Ok(self.wait().await)
    }
}

async fn supervise(
    lease: Arc<NetLease>,
    mut stop_rx: watch::Receiver<bool>,
    closed_tx: watch::Sender<bool>,
) {
    let market = &lease.market;
    let i = &market.inner;
    let started = lease.snapshot();
    let id = started.lease.0;
    let duration = market.lease(id).await.map(|s| s.duration_secs).unwrap_or(0);
    let ends_at = started.started_at.0 / 1000 + duration;
    let mut failures = 0u32;
    let mut last_work = None;
    let mut our_reason: Option<CloseReason> = None;
    // Idle: no output and no GPU activity, as the provider's gateway reports them.
    let mut idle = lease
        .limits
        .idle_timeout
        .map(spheron_core::IdleDetector::new);
    let mut activity_missing_logged = false;
    loop {
        // A decided close goes out at once.
        let wait = if our_reason.is_some() {
            Duration::ZERO
        } else {
            i.config.lease_poll
        };
        tokio::select! {
            _ = stop_rx.wait_for(|s| *s) => {
                our_reason = Some(CloseReason::TenantStopped);
            }
            _ = tokio::time::sleep(wait) => {}
        }
        if let Some(reason) = &our_reason {
            tracing::info!(lease = id, ?reason, "closing the lease");
            if let Err(e) = close_with_retries(i, id).await {
                tracing::error!(lease = id, error = %e, "closing failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let _ = lease.gateway.stop(id).await;
            break;
        }
        match lease.gateway.status(id).await {
            Ok(s) => {
                failures = 0;
                if let Some(detector) = idle.as_mut()
                    && s.work == crate::wire::WorkState::Running
                {
                    match &s.activity {
                        Some(a) => {
                            if let Some(quiet) = detector.observe(a) {
                                tracing::info!(
                                    lease = id,
                                    quiet_ms = a.quiet_ms,
                                    gpu_measured = detector.gpu_measured(),
                                    "idle: stopping the lease"
                                );
                                our_reason = Some(CloseReason::Idle {
                                    idle_secs: quiet.as_secs(),
                                });
                            }
                        }
                        None if !activity_missing_logged => {
                            activity_missing_logged = true;
                            tracing::warn!(
                                lease = id,
                                "the provider reports no activity: the idle timeout is not enforced"
                            );
                        }
                        None => {}
                    }
                }
                last_work = Some(s.work);
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(lease = id, failures, error = %e, "gateway poll failed");
            }
        }
        let state = match i.market.getOrder(id).call().await {
            Ok(o) => o.state,
            Err(_) => order_state::LEASED,
        };
        if !order_state::is_live(state) {
            break;
        }
        if our_reason.is_some() {
            continue;
        }
        if failures >= i.config.gateway_failures {
            our_reason = Some(CloseReason::ProviderFailed {
                detail: format!("the provider's gateway did not answer {failures} polls in a row"),
            });
            continue;
        }
        let now = i.clock.now().0 / 1000;
        if now > ends_at + i.config.expiry_grace.as_secs() {
            our_reason = Some(CloseReason::Expired);
        }
    }
    // Read the settlement (retried: a node may lag a block behind).
    let mut settlement = None;
    let mut closed_by = None;
    for _ in 0..i.config.settle_attempts.max(1) * 4 {
        match market.closing(id).await {
            Ok(Some((s, by))) => {
                settlement = Some(s);
                closed_by = Some(by);
                break;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(lease = id, error = %e, "reading the settlement"),
        }
        tokio::time::sleep(i.config.poll).await;
    }
    // Closed by this tenant's key from another process (`spheron lease stop`).
    if our_reason.is_none() && closed_by == Some(i.me) {
        our_reason = Some(CloseReason::TenantStopped);
    }
    let reason = our_reason.unwrap_or_else(|| match &last_work {
        Some(crate::wire::WorkState::Exited { exit_code: Some(0) }) => CloseReason::Completed,
        Some(crate::wire::WorkState::Exited { exit_code }) => CloseReason::WorkloadFailed {
            exit_code: *exit_code,
        },
        Some(crate::wire::WorkState::Failed { reason }) => CloseReason::ProviderFailed {
            detail: reason.clone(),
        },
        Some(crate::wire::WorkState::Stopped) => {
            if settlement.is_some_and(|s| s.funds_exhausted) {
                CloseReason::FundsExhausted
            } else {
                CloseReason::Expired
            }
        }
        _ => CloseReason::ProviderFailed {
            detail: "the provider closed the lease".into(),
        },
    });
    let reason = match (&reason, settlement) {
        (CloseReason::Completed | CloseReason::Expired, Some(s)) if s.funds_exhausted => {
            CloseReason::FundsExhausted
        }
        _ => reason,
    };
    // The ordered duration was what the spend cap buys: its end is the cap's (a provider
    // that closed the lease at that end did not fail).
    let ran_to_end = settlement.is_some_and(|s| duration > 0 && s.seconds >= duration);
    let reason = match reason {
        CloseReason::Expired | CloseReason::FundsExhausted if lease.limits.capped => {
            CloseReason::SpendCapReached
        }
        CloseReason::ProviderFailed { .. } if lease.limits.capped && ran_to_end => {
            CloseReason::SpendCapReached
        }
        r => r,
    };
    if let Some(s) = settlement {
        market.emit(
            id,
            &lease.progress,
            Step::Settled {
                lease: LeaseId(id),
                provider: lease.snapshot().provider,
                gpu_seconds: s.seconds.saturating_mul(u64::from(lease.snapshot().gpus)),
                reason: reason.clone(),
                paid: s.paid,
                refunded: s.refunded,
            },
        );
    } else {
        tracing::error!(
            lease = id,
            "lease closed but its settlement could not be read"
        );
    }
    {
        let mut r = lease.report.lock().unwrap_or_else(|p| p.into_inner());
        r.state = r
            .state
            .apply(LeaseEvent::Close(reason.clone()))
            .unwrap_or(LeaseState::Closed(reason));
        r.ended_at = Some(i.clock.now());
        if let Some(s) = settlement {
            r.cost = s.paid;
            r.settlement = Some(s);
        }
        r.progress = lease
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
    }
    closed_tx.send_replace(true);
}
