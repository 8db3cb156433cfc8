//! The provider node: one party, its own key, its own machine.
//!
//! [`ProviderNode::start`] registers and stakes on chain (endpoint, region, coordinates, GPU
//! inventory, certificate hash), then [`ProviderNode::run`]:
//!
//! - follows the chain from its last processed block ([`spheron_chain::follow::Follower`],
//!   bounded ranges, a confirmation depth, the cursor in the [`Store`]);
//! - bids on the orders it can serve with its own [`ProviderAgent`] against its own inventory;
//! - serves the [`gateway`](crate::gateway): proof of GPU, signed manifests, status, logs,
//!   stop;
//! - launches only on a valid manifest for a lease active on chain and matched to it, once;
//! - stops the workload when the lease closes on chain, closes the lease when the workload
//!   ends, when the ordered duration is up, or when no manifest came in time, and withdraws
//!   its earnings.
//!
//! After a restart (kill -9 included) it resumes from its database: leases whose workload it
//! can no longer reattach to are killed and closed on chain (paid up to now, the rest
//! refunded); none is launched twice.

use crate::backend::{Backend, KubernetesConfig, LauncherKind};
use crate::error::{Error, Result};
use crate::gateway::{ChainLease, LeaseBackend};
use crate::network::{NetworkFile, parse_key};
use crate::registry::{MAX_META_BYTES, ProviderMeta};
use crate::store::{LeaseRow, Store};
use crate::wire::{ErrorCode, GatewayError, LeaseStatus, NodeStatus, WorkState};
use alloy::primitives::{Address, B256, Uint};
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use spheron_chain::bindings::{SpheronMarket, TestToken};
use spheron_chain::follow::{ChainEvent, Follower};
use spheron_chain::registry::{model_bytes, order_state};
use spheron_chain::{Chain, registry};
use spheron_core::{
    AccountId, Amount, BidStrategy, ChallengeProver, GeoPoint, GpuModel, GpuNode, GpuRequest,
    Inventory, LaunchSpec, LeaseId, LogStream, Order, OrderId, Provider, ProviderAgent,
    ProviderStats, Registry, StrategyAgent, Timestamp, Token, TrustTier, Workload, WorkloadId,
    WorkloadLauncher, WorkloadStatus,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One kind of GPU node in a provider's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// Catalog model name, e.g. `h100-sxm`.
    pub model: String,
    /// Machines with this model (local launcher; on Kubernetes the cluster's nodes count).
    #[serde(default = "one")]
    pub nodes: u32,
    /// GPUs per machine (local launcher; unused on Kubernetes).
    #[serde(default)]
    pub per_node: u32,
    /// List price per GPU-hour in the payment token, e.g. `"2.40"`.
    pub price: String,
}

fn one() -> u32 {
    1
}

/// How the node prices its bids.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum StrategyConfig {
    /// Bid the list price.
    #[default]
    List,
    /// Bid `discount_bps` under the order's ceiling, never below the list price.
    Undercut {
        /// Discount under the ceiling, basis points.
        discount_bps: u32,
    },
}

/// `provider.toml`. Relative paths are relative to the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Human name.
    pub name: String,
    /// The network file (`network.json`): chain, contracts, payment token.
    pub network: PathBuf,
    /// File holding this provider's 0x-hex private key (never the tenant's).
    pub key_file: PathBuf,
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// The gateway's public URL, registered on chain (default `http://{listen}`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region label, e.g. `eu-west`.
    pub region: String,
    /// Latitude of the data centre.
    pub lat: f64,
    /// Longitude of the data centre.
    pub lon: f64,
    /// The GPUs offered and their prices. With the local launcher these are the machines
    /// workloads run on; with `launcher = "kubernetes"` the cluster's nodes are the inventory
    /// and these entries only price their models.
    pub gpus: Vec<GpuConfig>,
    /// Who runs workloads: `local` (default, processes on this machine) or `kubernetes` (a
    /// cluster, set up in `[kubernetes]`); see [`crate::backend`].
    #[serde(default)]
    pub launcher: LauncherKind,
    /// The Kubernetes launcher's settings (with `launcher = "kubernetes"` only).
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    /// Bid pricing.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// SPHN to keep staked, e.g. `"100"`.
    pub stake: String,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Blocks behind the head the node treats as final.
    #[serde(default)]
    pub confirmations: u64,
    /// Largest block range read per chain poll.
    #[serde(default = "default_max_range")]
    pub max_block_range: u64,
    /// Chain poll interval, ms.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Seconds after the match within which the tenant's manifest must arrive.
    #[serde(default = "default_manifest_timeout")]
    pub manifest_timeout_secs: u64,
    /// Who answers proof-of-GPU challenges: `simulated` (a CPU prover paced like the first
    /// GPU listed, for devnets) or `cuda` (the CUDA prover on GPU 0; needs the `cuda` feature).
    #[serde(default = "default_prover")]
    pub prover: String,
}

fn default_prover() -> String {
    "simulated".into()
}

/// Seconds after a bid's deadline after which GPUs held for it are freed if no match came.
const STALE_BID_SECS: u64 = 60;

fn default_max_range() -> u64 {
    500
}
fn default_poll_ms() -> u64 {
    250
}
fn default_manifest_timeout() -> u64 {
    120
}

impl ProviderConfig {
    /// Reads `path` (TOML) and resolves its relative paths against the file's folder.
    pub fn load(path: &Path) -> Result<ProviderConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(path.display().to_string(), format!("cannot read: {e}")))?;
        let mut cfg: ProviderConfig = toml::from_str(&text)
            .map_err(|e| Error::config(path.display().to_string(), e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let kubeconfig = cfg.kubernetes.as_mut().and_then(|k| k.kubeconfig.as_mut());
        for p in [&mut cfg.network, &mut cfg.key_file, &mut cfg.data_dir]
            .into_iter()
            .chain(kubeconfig)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    /// The first GPU model listed (what a simulated prover is paced like).
    pub fn first_model(&self) -> Result<GpuModel> {
        let g = self
            .gpus
            .first()
            .ok_or_else(|| Error::config("gpus", "at least one GPU entry is needed"))?;
        g.model
            .parse()
            .map_err(|e| Error::config("gpus[0].model", format!("{e}")))
    }

    /// The GPU inventory as configured (empty with `launcher = "kubernetes"`, whose
    /// inventory is the cluster's nodes) and the list price per GPU-hour of each model in
    /// `token`; errors name the `gpus[i]` entry at fault.
    pub fn inventory_and_prices(
        &self,
        token: &Token,
    ) -> Result<(Inventory, BTreeMap<GpuModel, Amount>)> {
        if self.gpus.is_empty() {
            return Err(Error::config("gpus", "at least one GPU entry is needed"));
        }
        let mut nodes = Vec::new();
        let mut prices = BTreeMap::new();
        for (i, g) in self.gpus.iter().enumerate() {
            let model: GpuModel = g
                .model
                .parse()
                .map_err(|e| Error::config(format!("gpus[{i}].model"), format!("{e}")))?;
            let price = token.parse("price", &g.price)?;
            prices.insert(model, price);
            if self.launcher == LauncherKind::Kubernetes {
                // The cluster's nodes are the inventory (crate::backend).
                continue;
            }
            if g.per_node == 0 || g.nodes == 0 {
                return Err(Error::config(
                    format!("gpus[{i}]"),
                    "nodes and per_node must be at least 1",
                ));
            }
            for n in 0..g.nodes {
                nodes.push(GpuNode {
                    name: format!("{}-{n}", model.name()),
                    model,
                    total: g.per_node,
                    free: g.per_node,
                });
            }
        }
        Ok((Inventory { nodes }, prices))
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An order seen on chain whose spec has not been read yet.
#[derive(Clone, Debug)]
struct Pending {
    tenant: Address,
    gpus: u32,
    duration_secs: u32,
    ceiling: u128,
    deadline: u64,
}

struct Inner {
    cfg: ProviderConfig,
    net: NetworkFile,
    chain: Arc<Chain>,
    me: Address,
    market: SpheronMarket::SpheronMarketInstance<DynProvider>,
    store: Store,
    registry: Arc<Registry>,
    agent: Arc<dyn ProviderAgent>,
    launcher: Arc<dyn WorkloadLauncher>,
    backend: Backend,
    workloads: Mutex<BTreeMap<u64, WorkloadId>>,
    prover: Arc<dyn ChallengeProver>,
    /// Who answers the VRAM-residency round (`None`: the node serves none).
    vram: Option<Arc<dyn spheron_gpu::vram::VramProver>>,
    pending: Mutex<BTreeMap<u64, Pending>>,
    /// GPUs held for open bids: (node, GPUs, bid deadline) per order, so concurrent orders
    /// are never promised the same GPUs.
    held: Mutex<BTreeMap<u64, (String, u32, u64)>>,
    last_block: AtomicU64,
    endpoint: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Leases whose close transaction is in flight.
    closing: Mutex<std::collections::BTreeSet<u64>>,
    /// Held while a withdrawal is in flight.
    withdrawing: tokio::sync::Mutex<()>,
}

/// A provider node; see the [module docs](self).
#[derive(Clone)]
pub struct ProviderNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProviderNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderNode")
            .field("provider", &self.inner.me)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl ProviderNode {
    /// Opens the database, connects with the provider's key, registers (or updates the
    /// registration) and tops the stake up to the configured amount from the wallet.
    pub async fn start(cfg: ProviderConfig, prover: Arc<dyn ChallengeProver>) -> Result<Self> {
        let net = NetworkFile::load(&cfg.network)?;
        let key_text = std::fs::read_to_string(&cfg.key_file).map_err(|e| {
            Error::config(
                cfg.key_file.display().to_string(),
                format!("cannot read: {e}"),
            )
        })?;
        let key: PrivateKeySigner = parse_key(&key_text)?;
        let me = key.address();
        // Commitments are signed with the provider's registered key and only challenges
        // addressed to it are answered (proof-of-GPU binding).
        let prover: Arc<dyn ChallengeProver> =
            Arc::new(spheron_gpu::SignedProver::new(prover, key.clone()));
        // The VRAM round exists only in simulation (no CUDA kernels yet): a simulated prover
        // answers it for the first GPU listed, with commitments signed by the provider's key.
        let vram: Option<Arc<dyn spheron_gpu::vram::VramProver>> = match cfg.prover.as_str() {
            "simulated" => Some(Arc::new(
                spheron_gpu::vram::SimProver::honest(
                    spheron_gpu::vram::VramSim::network(),
                    cfg.first_model()?,
                )
                .signed(key.clone()),
            )),
            _ => None,
        };
        let token = net.payment.token();
        let (configured, prices) = cfg.inventory_and_prices(&token)?;
        let backend = Backend::new(cfg.launcher, cfg.kubernetes.as_ref()).await?;
        let inventory = backend.inventory(configured, &prices).await?;
        let stake = Token::sphn().parse("stake", &cfg.stake)?;
        std::fs::create_dir_all(&cfg.data_dir)?;
        let store = Store::open(&cfg.data_dir.join("provider.db"))?;
        let chain = Arc::new(Chain::connect(&net.rpc_url, [key])?);
        let market = SpheronMarket::new(net.market, chain.provider().clone());
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{}", cfg.listen));

        let meta = ProviderMeta {
            name: cfg.name.clone(),
            location: GeoPoint {
                lat: cfg.lat,
                lon: cfg.lon,
            },
            gpus: ProviderMeta::summarize(&inventory),
        }
        .to_json();
        if meta.len() > MAX_META_BYTES {
            return Err(Error::config(
                "gpus",
                "too many GPU entries for the registry",
            ));
        }
        // HTTPS with a self-signed certificate whose hash goes on chain, so tenants pin it;
        // plain HTTP only for loopback endpoints (devnets).
        let tls = if let Some(rest) = endpoint.strip_prefix("https://") {
            let host = rest
                .rsplit_once(':')
                .map_or(rest, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let cert = crate::tls::load_or_create(&cfg.data_dir, &[host])?;
            Some((cert.hash, crate::tls::server_config(&cert)?))
        } else if is_loopback_url(&endpoint) {
            None
        } else {
            return Err(Error::config(
                "endpoint",
                format!("{endpoint}: plain http is only for loopback devnets; use https://"),
            ));
        };
        let registration = registry::Registration {
            endpoint: endpoint.clone(),
            region: cfg.region.clone(),
            public_key: me.to_vec(),
            cert_hash: tls.as_ref().map_or(B256::ZERO, |(h, _)| *h),
            meta,
        };
        let current = registry::provider(&chain, net.market, me).await?;
        let same = current.as_ref().is_some_and(|r| {
            r.endpoint == registration.endpoint
                && r.region == registration.region
                && r.meta == registration.meta
                && r.cert_hash == registration.cert_hash
        });
        if !same {
            registry::register(&chain, net.market, me, &registration).await?;
            tracing::info!(%me, %endpoint, "registered");
        }
        let staked = current.as_ref().map(|r| r.staked).unwrap_or(0);
        if staked < stake.0 {
            let need = stake.0 - staked;
            let available = market
                .accountOf(net.sphn, me)
                .call()
                .await
                .map_err(chain_err)?;
            let short = need.saturating_sub(available.available);
            if short > 0 {
                let sphn = TestToken::new(net.sphn, chain.provider().clone());
                chain
                    .send(
                        me,
                        sphn.approve(net.market, alloy::primitives::U256::from(short)),
                    )
                    .await?;
                chain
                    .send(
                        me,
                        market.deposit(net.sphn, alloy::primitives::U256::from(short)),
                    )
                    .await?;
            }
            chain.send(me, market.stake(need)).await?;
            tracing::info!(%me, stake = %Token::sphn().format(stake), "staked");
        }

        let id = AccountId(me.into_array());
        let registry = Arc::new(Registry::new());
        registry.register(Provider {
            id,
            name: cfg.name.clone(),
            endpoint: endpoint.clone(),
            region: cfg.region.clone(),
            location: GeoPoint {
                lat: cfg.lat,
                lon: cfg.lon,
            },
            inventory,
            stake,
            stats: ProviderStats::default(),
            tier: TrustTier(0),
            banned: false,
        });
        let strategy = match cfg.strategy {
            StrategyConfig::List => BidStrategy::ListPrice,
            StrategyConfig::Undercut { discount_bps } => {
                BidStrategy::UndercutCeiling { discount_bps }
            }
        };
        let agent = backend.agent(
            StrategyAgent::new(id, registry.clone(), prices, strategy),
            registry.clone(),
        );
        let node = ProviderNode {
            inner: Arc::new(Inner {
                cfg,
                net,
                chain,
                me,
                market,
                store,
                registry,
                agent,
                launcher: backend.launcher(),
                backend,
                workloads: Mutex::new(BTreeMap::new()),
                prover,
                vram,
                pending: Mutex::new(BTreeMap::new()),
                held: Mutex::new(BTreeMap::new()),
                tls: tls.map(|(_, c)| c),
                closing: Mutex::new(std::collections::BTreeSet::new()),
                withdrawing: tokio::sync::Mutex::new(()),
                last_block: AtomicU64::new(0),
                endpoint,
            }),
        };
        node.recover().await?;
        Ok(node)
    }

    /// This provider's chain account.
    pub fn address(&self) -> Address {
        self.inner.me
    }

    /// The gateway URL registered on chain.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The database (read access for tests and tools).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// After a restart: running workloads the launcher reattaches (Kubernetes lease
    /// namespaces) are followed again. Other workloads recorded as launching or running belong
    /// to a process that is gone, so their output cannot be reattached: kill what is left of
    /// them and mark them failed; the housekeeping then closes their leases on chain. Leases
    /// still waiting for a manifest keep their reservation.
    async fn recover(&self) -> Result<()> {
        let i = &self.inner;
        let mut reattached = i.backend.reattach().await?;
        for l in i.store.live_leases()? {
            match l.work {
                WorkState::Running if reattached.contains_key(&l.id) => {
                    let Some(wid) = reattached.remove(&l.id) else {
                        continue;
                    };
                    // Its GPUs need no reservation: the inventory is read from the cluster,
                    // whose pods hold them.
                    i.workloads
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(l.id, wid.clone());
                    tracing::info!(lease = l.id, workload = %wid, "reattached after a restart");
                    let me = self.clone();
                    tokio::spawn(async move { me.watch_workload(l.id, wid).await });
                }
                WorkState::Launching | WorkState::Running => {
                    if let Some(pid) = l.pid {
                        kill_group(pid);
                    }
                    i.store.transition(
                        l.id,
                        |w| !w.is_terminal(),
                        &WorkState::Failed {
                            reason: "the provider node restarted and could not reattach the \
                                     workload"
                                .into(),
                        },
                        unix_now(),
                    )?;
                    tracing::warn!(lease = l.id, "workload lost in a restart: closing");
                }
                WorkState::AwaitingManifest => {
                    if let Ok(model) = l.model.parse::<GpuModel>()
                        && let Ok(node) =
                            i.registry
                                .reserve(AccountId(i.me.into_array()), model, l.gpus)
                    {
                        i.store.set_node(l.id, &node)?;
                    }
                }
                _ => {}
            }
        }
        // Reattached workloads of leases this node no longer runs: remove them.
        for (lease, wid) in reattached {
            tracing::warn!(lease, workload = %wid, "a workload outlived its lease: stopping it");
            if let Err(e) = i.launcher.stop(&wid).await {
                tracing::warn!(lease, error = %e, "stopping a leftover workload");
            }
        }
        Ok(())
    }

    /// Serves the gateway on `listener` and follows the chain until `shutdown` resolves; then
    /// stops every running workload and closes its lease (the tenant is refunded the rest).
    pub async fn run(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let backend: Arc<dyn LeaseBackend> = Arc::new(self.clone());
        let gate = Arc::new(crate::challenge_gate::ChainGate::new(
            self.inner.chain.clone(),
            self.inner.net.market,
            self.inner.net.operators,
            self.inner.me,
        ));
        let mut router =
            crate::gateway::router_gated(backend, self.inner.prover.clone(), gate.clone());
        if let Some(vram) = &self.inner.vram {
            // At most what the simulated memory of its model holds.
            let model = self.inner.cfg.first_model()?;
            let limits = spheron_gpu::vram_http::VramLimits::for_capacity(
                spheron_gpu::vram::VramSim::network().capacity(model),
            );
            router = router.merge(spheron_gpu::vram_http::router_gated(
                vram.clone(),
                limits,
                gate,
            ));
        }
        let server = match self.inner.tls.clone() {
            Some(config) => tokio::spawn(crate::gateway::serve_tls(listener, router, config)),
            None => tokio::spawn(crate::gateway::serve(listener, router)),
        };
        let from = match self.inner.store.cursor()? {
            Some(c) => c,
            None => self.inner.net.deploy_block,
        };
        let mut follower = Follower::new(
            self.inner.net.market,
            from,
            self.inner.cfg.confirmations,
            self.inner.cfg.max_block_range.max(1),
        );
        let poll = Duration::from_millis(self.inner.cfg.poll_ms.max(10));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(poll) => {}
            }
            if let Err(e) = self.follow_once(&mut follower).await {
                tracing::warn!(error = %e, "following the chain");
            }
            if let Err(e) = self.housekeeping().await {
                tracing::warn!(error = %e, "housekeeping");
            }
        }
        tracing::info!("shutting down: stopping workloads and closing their leases");
        for l in self.inner.store.live_leases()? {
            self.finish(l.id, WorkState::Stopped).await;
        }
        let _ = self.housekeeping().await;
        // Let the close transactions finish (bounded).
        for _ in 0..100 {
            if self
                .inner
                .closing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.abort();
        Ok(())
    }

    async fn follow_once(&self, follower: &mut Follower) -> Result<()> {
        // Catch up over several bounded ranges, then return to the loop.
        for _ in 0..32 {
            let logs = follower.poll(&self.inner.chain).await?;
            let empty = logs.is_empty();
            for l in logs {
                if let Err(e) = self.on_event(l.event).await {
                    tracing::warn!(block = l.block, error = %e, "handling a chain event");
                }
            }
            self.inner.store.set_cursor(follower.next_block())?;
            self.inner
                .last_block
                .store(follower.next_block().saturating_sub(1), Ordering::Relaxed);
            if empty && follower.caught_up(&self.inner.chain).await? {
                break;
            }
        }
        Ok(())
    }

    async fn on_event(&self, ev: ChainEvent) -> Result<()> {
        let i = &self.inner;
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
                i.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    id,
                    Pending {
                        tenant,
                        gpus,
                        duration_secs,
                        ceiling: max_price_per_gpu_hour,
                        deadline: bid_deadline,
                    },
                );
            }
            ChainEvent::OrderSpec { id, spec } => {
                let p = i
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(p) = p {
                    self.consider(id, p, &spec).await?;
                }
            }
            ChainEvent::OrderCancelled { id, .. } => {
                i.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                self.unhold(id);
            }
            ChainEvent::LeaseMatched { id, provider, .. } if provider != i.me => {
                // Another provider won: the GPUs held for this bid are free again.
                self.unhold(id);
            }
            ChainEvent::LeaseMatched {
                id, provider, gpus, ..
            } if provider == i.me => {
                i.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                self.on_matched(id, gpus, unix_now()).await?;
            }
            ChainEvent::LeaseStarted {
                id,
                provider,
                start,
                ..
            } if provider == i.me => {
                // Billing runs from the confirmation: the ordered duration counts from here.
                i.store.set_start(id, start)?;
            }
            ChainEvent::LeaseClosed { id, provider, .. } if provider == i.me => {
                if let Some(l) = i.store.lease(id)? {
                    if !l.work.is_terminal() {
                        self.finish(id, WorkState::Stopped).await;
                    }
                    i.store.set_closed_on_chain(id)?;
                    tracing::info!(lease = id, "lease closed on chain");
                }
                let node = self.clone();
                tokio::spawn(async move { node.withdraw_earnings().await });
            }
            _ => {}
        }
        Ok(())
    }

    /// Decides whether to bid on order `id` and bids.
    async fn consider(&self, id: u64, p: Pending, spec: &[u8]) -> Result<()> {
        let i = &self.inner;
        let now = unix_now();
        if now > p.deadline {
            return Ok(()); // an old order seen while catching up
        }
        let request: GpuRequest = match serde_json::from_slice(spec) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(order = id, error = %e, "unreadable order spec: not bidding");
                return Ok(());
            }
        };
        // The spec must agree with what the contract locked.
        if request.count != p.gpus
            || request.duration_secs != u64::from(p.duration_secs)
            || request.max_price_per_gpu_hour.0 != p.ceiling
        {
            tracing::debug!(
                order = id,
                "spec disagrees with the on-chain order: not bidding"
            );
            return Ok(());
        }
        let order = Order {
            id: OrderId(id),
            tenant: AccountId(p.tenant.into_array()),
            request,
            created_at: Timestamp(now.saturating_mul(1000)),
            bid_deadline: Timestamp(p.deadline.saturating_mul(1000)),
        };
        let Some(bid) = i.agent.on_order(&order).await else {
            return Ok(());
        };
        if !i
            .store
            .record_bid(id, bid.price_per_gpu_hour.0, bid.model.name())?
        {
            return Ok(());
        }
        let Ok(node) = i
            .registry
            .reserve(self.account(), bid.model, order.request.count)
        else {
            return Ok(());
        };
        i.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (node, order.request.count, p.deadline));
        let price = Uint::<96, 2>::try_from(bid.price_per_gpu_hour.0)
            .map_err(|_| Error::config("price", "does not fit 96 bits"))?;
        // Sent in the background: the follower goes on reading while the bid waits for its
        // block, so many open orders all get their bids inside their windows.
        let node = self.clone();
        tokio::spawn(async move {
            let i = &node.inner;
            match i
                .chain
                .send(i.me, i.market.placeBid(id, price, model_bytes(bid.model)))
                .await
            {
                Ok(_) => {
                    tracing::info!(order = id, model = %bid.model, price = bid.price_per_gpu_hour.0, "bid")
                }
                Err(e) => {
                    tracing::warn!(order = id, error = %e, "bid refused");
                    node.unhold(id);
                }
            }
        });
        Ok(())
    }

    /// Confirms lease `id`'s start on chain; a refusal (the start window passed, the tenant
    /// closed it) fails the workload.
    async fn confirm_start(&self, id: u64) {
        let i = &self.inner;
        let mut last = String::new();
        for attempt in 0..4u32 {
            match i.chain.send(i.me, i.market.confirmStart(id)).await {
                Ok(_) => {
                    tracing::info!(lease = id, "start confirmed on chain");
                    return;
                }
                Err(e) => {
                    last = e.to_string();
                    if matches!(e, spheron_chain::Error::Revert { .. }) {
                        // Closed meanwhile (the workload ended first, or the tenant stopped
                        // it): nothing to fail.
                        if let Ok(o) = i.market.getOrder(id).call().await
                            && o.state != order_state::MATCHED
                        {
                            return;
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        tracing::warn!(lease = id, error = %last, "start not confirmed");
        self.finish(
            id,
            WorkState::Failed {
                reason: format!("the chain refused the start: {last}"),
            },
        )
        .await;
    }

    fn account(&self) -> AccountId {
        AccountId(self.inner.me.into_array())
    }

    /// Frees the GPUs held for a bid that lost (or whose order was cancelled).
    fn unhold(&self, order: u64) {
        let held = self
            .inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&order);
        if let Some((node, count, _)) = held {
            let _ = self.inner.registry.release(self.account(), &node, count);
        }
    }

    async fn on_matched(&self, id: u64, gpus: u32, start: u64) -> Result<()> {
        let i = &self.inner;
        let o = i.market.getOrder(id).call().await.map_err(chain_err)?;
        let model = i.store.bid_model(id)?.unwrap_or_default();
        let row = LeaseRow {
            id,
            tenant: o.tenant,
            gpus,
            model: model.clone(),
            node: String::new(),
            start,
            duration_secs: u64::from(o.durationSecs),
            work: WorkState::AwaitingManifest,
            pid: None,
            open_on_chain: order_state::is_live(o.state),
            started_at: None,
            ended_at: None,
        };
        if !i.store.insert_lease(&row)? {
            return Ok(()); // seen before (replayed after a restart)
        }
        tracing::info!(lease = id, tenant = %o.tenant, held = i.held.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id), "matched: waiting for the manifest");
        // The GPUs held since the bid become the lease's; a match without a hold (the node
        // restarted since it bid) reserves afresh.
        let held = i
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .map(|(node, _, _)| node);
        let reserved = held.or_else(|| {
            model
                .parse::<GpuModel>()
                .ok()
                .and_then(|m| i.registry.reserve(self.account(), m, gpus).ok())
        });
        match reserved {
            Some(node) => i.store.set_node(id, &node)?,
            None => {
                i.store.transition(
                    id,
                    |_| true,
                    &WorkState::Failed {
                        reason: "no free GPUs left for this lease".into(),
                    },
                    unix_now(),
                )?;
            }
        }
        Ok(())
    }

    /// Moves a lease's workload to a terminal state (once), stops the workload if it runs and
    /// then frees the reserved GPUs. The end is recorded first, so the housekeeping can close
    /// the lease on chain (billing stops there) while the teardown (a Kubernetes namespace
    /// deletion takes seconds) goes on.
    async fn finish(&self, id: u64, work: WorkState) {
        let i = &self.inner;
        // The uploaded working directory was unpacked at launch (or never used): gone now.
        let archive = crate::gateway::archive_path(&i.cfg.data_dir.join("workdirs"), id);
        let _ = tokio::fs::remove_file(archive).await;
        let wid = i
            .workloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        let ended = match i
            .store
            .transition(id, |w| !w.is_terminal(), &work, unix_now())
        {
            Ok(moved) => moved,
            Err(e) => {
                tracing::error!(lease = id, error = %e, "recording the end of a workload");
                false
            }
        };
        if let Some(w) = &wid
            && let Err(e) = i.launcher.stop(w).await
        {
            tracing::warn!(lease = id, error = %e, "stopping the workload");
        }
        if ended {
            self.release(id);
        }
    }

    fn release(&self, id: u64) {
        let i = &self.inner;
        if let Ok(Some(l)) = i.store.lease(id)
            && !l.node.is_empty()
        {
            let _ = i
                .registry
                .release(AccountId(i.me.into_array()), &l.node, l.gpus);
        }
    }

    /// Expiry, manifest timeouts and closing finished leases on chain.
    async fn housekeeping(&self) -> Result<()> {
        let i = &self.inner;
        let now = unix_now();
        // Bids that were never matched: free their GPUs a while after the window.
        let stale: Vec<u64> = i
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, (_, _, deadline))| now > deadline.saturating_add(STALE_BID_SECS))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.unhold(id);
        }
        for l in i.store.live_leases()? {
            if !l.open_on_chain {
                if !l.work.is_terminal() {
                    self.finish(l.id, WorkState::Stopped).await;
                }
                continue;
            }
            match &l.work {
                WorkState::AwaitingManifest
                    if now > l.start.saturating_add(i.cfg.manifest_timeout_secs) =>
                {
                    self.finish(
                        l.id,
                        WorkState::Failed {
                            reason: format!(
                                "no manifest within {} s of the match",
                                i.cfg.manifest_timeout_secs
                            ),
                        },
                    )
                    .await;
                }
                WorkState::Launching | WorkState::Running
                    if now >= l.start.saturating_add(l.duration_secs) =>
                {
                    tracing::info!(lease = l.id, "ordered duration is up");
                    self.finish(l.id, WorkState::Stopped).await;
                }
                _ => {}
            }
            let l = i.store.lease(l.id)?.unwrap_or(l);
            if l.work.is_terminal() {
                self.spawn_close(l.id, l.work.clone());
            }
        }
        Ok(())
    }

    /// Closes lease `id` on chain in the background (once at a time per lease), so the
    /// follower never waits for a block: bids on new orders keep going out in their windows.
    fn spawn_close(&self, id: u64, work: WorkState) {
        if !self
            .inner
            .closing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id)
        {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let i = &node.inner;
            match i.chain.send(i.me, i.market.closeLease(id)).await {
                Ok(_) => {
                    if let Err(e) = i.store.set_closed_on_chain(id) {
                        tracing::error!(lease = id, error = %e, "recording the close");
                    }
                    tracing::info!(lease = id, ?work, "closed the lease on chain");
                    node.withdraw_earnings().await;
                }
                Err(spheron_chain::Error::Revert { name, .. })
                    if name.starts_with("LeaseNotActive") =>
                {
                    let _ = i.store.set_closed_on_chain(id);
                }
                Err(e) => tracing::warn!(lease = id, error = %e, "closing the lease"),
            }
            i.closing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    async fn withdraw_earnings(&self) {
        let i = &self.inner;
        let _one_at_a_time = i.withdrawing.lock().await;
        let token = i.net.payment.address;
        let available = match i.market.accountOf(token, i.me).call().await {
            Ok(a) => a.available,
            Err(e) => {
                tracing::warn!(error = %e, "reading earnings");
                return;
            }
        };
        if available == 0 {
            return;
        }
        match i
            .chain
            .send(
                i.me,
                i.market
                    .withdraw(token, alloy::primitives::U256::from(available)),
            )
            .await
        {
            Ok(_) => tracing::info!(amount = available, "withdrew earnings"),
            Err(e) => tracing::warn!(error = %e, "withdrawing earnings"),
        }
    }

    fn status_of(&self, l: &LeaseRow) -> LeaseStatus {
        LeaseStatus {
            lease: l.id,
            tenant: l.tenant,
            work: l.work.clone(),
            open_on_chain: l.open_on_chain,
            started_at: l.started_at,
            ended_at: l.ended_at,
            activity: None,
        }
    }

    fn row(&self, id: u64) -> std::result::Result<LeaseRow, GatewayError> {
        self.inner
            .store
            .lease(id)
            .map_err(|e| GatewayError::new(ErrorCode::Internal, e.to_string()))?
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorCode::Unavailable,
                    format!("lease {id} is matched on chain but this node has not processed the match yet; retry"),
                )
            })
    }

    async fn watch_workload(&self, id: u64, wid: WorkloadId) {
        let status = self.inner.launcher.wait(&wid).await;
        let work = match status {
            Ok(WorkloadStatus::Succeeded) => WorkState::Exited { exit_code: Some(0) },
            Ok(WorkloadStatus::Failed { exit_code }) => WorkState::Exited { exit_code },
            Ok(WorkloadStatus::Stopped) => WorkState::Stopped,
            Ok(other) => WorkState::Failed {
                reason: format!("workload ended in state {other:?}"),
            },
            Err(e) => WorkState::Failed {
                reason: e.to_string(),
            },
        };
        tracing::info!(lease = id, ?work, "workload ended");
        self.finish(id, work).await;
    }

    /// Launches lease `id`'s workload (recorded as `Launching`) and records the outcome:
    /// `Running` (then the start is confirmed on chain and the workload followed) or `Failed`.
    async fn run_launch(&self, id: u64, spec: LaunchSpec, workload: Workload) -> Result<()> {
        let i = &self.inner;
        match i.launcher.launch(&spec, &workload).await {
            Ok(wid) => {
                let pid = i.backend.pid(&wid);
                i.store.set_pid(id, pid)?;
                i.workloads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, wid.clone());
                let moved = i.store.transition(
                    id,
                    |w| *w == WorkState::Launching,
                    &WorkState::Running,
                    unix_now(),
                )?;
                if !moved {
                    // Stopped (or closed) while it was launching.
                    if let Err(e) = i.launcher.stop(&wid).await {
                        tracing::warn!(lease = id, error = %e, "stopping a workload stopped while launching");
                    }
                    return Ok(());
                }
                tracing::info!(lease = id, ?pid, "launched");
                let me = self.clone();
                // Billing starts when the chain records the start (the lease then runs for its
                // ordered duration from that block).
                let confirm = self.clone();
                tokio::spawn(async move { confirm.confirm_start(id).await });
                tokio::spawn(async move { me.watch_workload(id, wid).await });
            }
            Err(e) => {
                tracing::warn!(lease = id, error = %e, "launch failed");
                self.finish(
                    id,
                    WorkState::Failed {
                        reason: format!("launch failed: {e}"),
                    },
                )
                .await;
            }
        }
        Ok(())
    }
}

/// Whether `url` is `http://` on a loopback host.
fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

fn kill_group(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn chain_err(e: alloy::contract::Error) -> Error {
    Error::Chain(spheron_chain::client::decode(e))
}

fn gw_internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(ErrorCode::Internal, e.to_string())
}

#[async_trait]
impl LeaseBackend for ProviderNode {
    fn provider(&self) -> Address {
        self.inner.me
    }

    fn chain(&self) -> (u64, Address) {
        (self.inner.net.chain_id, self.inner.net.market)
    }

    fn now(&self) -> u64 {
        unix_now()
    }

    async fn quote(
        &self,
        request: GpuRequest,
    ) -> std::result::Result<Option<crate::wire::QuotedBid>, GatewayError> {
        let i = &self.inner;
        let now = unix_now().saturating_mul(1000);
        // The same agent that bids on orders, asked about an order that is never published;
        // it only reads the inventory, so nothing is held.
        let order = Order {
            id: OrderId(0),
            tenant: AccountId([0; 20]),
            request,
            created_at: Timestamp(now),
            bid_deadline: Timestamp(now),
        };
        let free = |model| {
            i.registry
                .get(self.account())
                .map(|p| p.inventory.largest_free_block(model))
                .unwrap_or(0)
        };
        Ok(i.agent
            .on_order(&order)
            .await
            .map(|bid| crate::wire::QuotedBid {
                model: bid.model,
                price_per_gpu_hour: bid.price_per_gpu_hour.0.to_string(),
                free_gpus: free(bid.model),
            }))
    }

    async fn chain_lease(
        &self,
        lease: u64,
    ) -> std::result::Result<Option<ChainLease>, GatewayError> {
        let o = self
            .inner
            .market
            .getOrder(lease)
            .call()
            .await
            .map_err(|e| GatewayError::new(ErrorCode::Unavailable, format!("chain: {e}")))?;
        if o.state == 0 {
            return Ok(None);
        }
        Ok(Some(ChainLease {
            lease,
            tenant: o.tenant,
            provider: o.provider,
            active: order_state::is_live(o.state),
        }))
    }

    async fn use_nonce(
        &self,
        signer: Address,
        nonce: B256,
        expiry: u64,
    ) -> std::result::Result<bool, GatewayError> {
        self.inner
            .store
            .use_nonce(signer, nonce, expiry, unix_now())
            .map_err(gw_internal)
    }

    async fn launch(
        &self,
        lease: &ChainLease,
        workload: Workload,
    ) -> std::result::Result<LeaseStatus, GatewayError> {
        let i = &self.inner;
        let row = self.row(lease.lease)?;
        if !workload.ports.is_empty() && !i.backend.proxies_ports() {
            return Err(GatewayError::new(
                ErrorCode::NoSuchPort,
                format!(
                    "ports {:?}: this provider's launcher ({:?}) cannot expose ports through its gateway",
                    workload.ports,
                    i.backend.kind()
                ),
            ));
        }
        let moved = i
            .store
            .transition(
                lease.lease,
                |w| *w == WorkState::AwaitingManifest,
                &WorkState::Launching,
                unix_now(),
            )
            .map_err(gw_internal)?;
        if !moved {
            return Err(GatewayError::new(
                ErrorCode::AlreadyLaunched,
                format!(
                    "lease {} is {:?}: a manifest is accepted once",
                    lease.lease, row.work
                ),
            ));
        }
        let Ok(model) = row.model.parse::<GpuModel>() else {
            self.finish(
                lease.lease,
                WorkState::Failed {
                    reason: format!("no bid of this node names a GPU model ({:?})", row.model),
                },
            )
            .await;
            return Ok(self.status_of(&self.row(lease.lease)?));
        };
        let spec = LaunchSpec {
            lease: LeaseId(lease.lease),
            provider: AccountId(i.me.into_array()),
            model,
            gpus: row.gpus,
            node: (!row.node.is_empty()).then(|| row.node.clone()),
            ends_at: Timestamp(
                row.start
                    .saturating_add(row.duration_secs)
                    .saturating_mul(1000),
            ),
        };
        // The launch runs on its own task and the manifest is answered with `Launching` (the
        // tenant polls the status): a Kubernetes launch resolves only once the container runs,
        // which can take longer than a request may, and must not be dropped with it.
        let me = self.clone();
        let id = lease.lease;
        tokio::spawn(async move {
            if let Err(e) = me.run_launch(id, spec, workload).await {
                tracing::error!(lease = id, error = %e, "recording a launch");
            }
        });
        Ok(self.status_of(&self.row(lease.lease)?))
    }

    async fn status(&self, lease: &ChainLease) -> std::result::Result<LeaseStatus, GatewayError> {
        let mut status = self.status_of(&self.row(lease.lease)?);
        if status.work == WorkState::Running {
            let wid = self
                .inner
                .workloads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&lease.lease)
                .cloned();
            if let Some(wid) = wid {
                status.activity = self.inner.launcher.activity(&wid).await.ok().flatten();
            }
        }
        Ok(status)
    }

    async fn logs(
        &self,
        lease: &ChainLease,
        from: u64,
        follow: bool,
    ) -> std::result::Result<LogStream, GatewayError> {
        let wid = self
            .inner
            .workloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lease.lease)
            .cloned();
        let Some(wid) = wid else {
            // Nothing ran here (yet, or before a restart): an empty log.
            return Ok(futures::stream::empty().boxed());
        };
        let stream = self.inner.launcher.logs(&wid).map_err(gw_internal)?;
        let stream = stream.filter(move |l| futures::future::ready(l.seq >= from));
        if follow {
            Ok(stream.boxed())
        } else {
            // What is there now: stop once no line arrived for a moment.
            Ok(stream
                .take_until(tokio::time::sleep(Duration::from_millis(200)))
                .boxed())
        }
    }

    async fn stop(&self, lease: &ChainLease) -> std::result::Result<LeaseStatus, GatewayError> {
        self.row(lease.lease)?;
        self.finish(lease.lease, WorkState::Stopped).await;
        Ok(self.status_of(&self.row(lease.lease)?))
    }

    fn upload_dir(&self) -> Option<PathBuf> {
        Some(self.inner.cfg.data_dir.join("workdirs"))
    }

    async fn lease_dir(&self, lease: &ChainLease) -> Option<PathBuf> {
        self.inner.backend.workdir_of_lease(LeaseId(lease.lease))
    }

    async fn service_addr(
        &self,
        lease: u64,
        port: u16,
    ) -> std::result::Result<std::net::SocketAddr, GatewayError> {
        let row = self
            .inner
            .store
            .lease(lease)
            .map_err(gw_internal)?
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorCode::UnknownLease,
                    format!("no lease {lease} with this provider"),
                )
            })?;
        let not_running = || {
            GatewayError::new(
                ErrorCode::NotRunning,
                format!("lease {lease}'s workload does not run: its ports are closed"),
            )
        };
        if row.work != WorkState::Running || !row.open_on_chain {
            return Err(not_running());
        }
        let wid = self
            .inner
            .workloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lease)
            .cloned()
            .ok_or_else(not_running)?;
        self.inner.launcher.port_addr(&wid, port).ok_or_else(|| {
            GatewayError::new(
                ErrorCode::NoSuchPort,
                format!("lease {lease}'s workload exposes no port {port}"),
            )
        })
    }

    async fn node_status(&self) -> NodeStatus {
        let i = &self.inner;
        let inventory = i
            .registry
            .get(AccountId(i.me.into_array()))
            .map(|p| p.inventory)
            .unwrap_or_default();
        let running = i
            .store
            .live_leases()
            .map(|ls| ls.iter().filter(|l| l.work == WorkState::Running).count())
            .unwrap_or(0);
        NodeStatus {
            provider: i.me,
            name: i.cfg.name.clone(),
            region: i.cfg.region.clone(),
            models: inventory.models(),
            inventory,
            running_leases: running,
            last_block: i.last_block.load(Ordering::Relaxed),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(is_loopback_url("http://127.0.0.1:8080"));
        assert!(is_loopback_url("http://localhost:1/x"));
        assert!(is_loopback_url("http://[::1]:9"));
        assert!(!is_loopback_url("http://10.0.0.1:8080"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example:80"));
        assert!(!is_loopback_url("https://127.0.0.1:8443"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "name = \"x\"\nnetwork = \"n.json\"\nkey_file = \"k\"\nlisten = \"127.0.0.1:1\"\n\
             region = \"r\"\nlat = 0.0\nlon = 0.0\nstake = \"1\"\ndata_dir = \"d\"\n\
             [[gpus]]\nmodel = \"h100-sxm\"\nper_node = 0\nprice = \"1\"\n",
        )
        .unwrap();
        let cfg = ProviderConfig::load(&path).unwrap();
        assert!(
            cfg.network.is_absolute(),
            "relative paths resolve against the file"
        );
        let err = cfg
            .inventory_and_prices(&Token::usd())
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpus[0]"), "{err}");
        std::fs::write(&path, "name = 1\n").unwrap();
        assert!(ProviderConfig::load(&path).is_err());
        std::fs::write(&path, "bogus = true\n").unwrap();
        let err = ProviderConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("bogus") || err.contains("unknown"), "{err}");
    }
}
