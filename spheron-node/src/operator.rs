//! The operator node: one member of the operator quorum that decides matches.
//!
//! Each operator is registered and staked in `SpheronOperators` (it registers itself at
//! start when it is not). Once an order's bid window has closed on chain time it reads the
//! inputs every operator reads the same way: the order and its bids digest (frozen after the
//! deadline), the bids, and the bidders' registry entries at the *reference block* (the first
//! block stamped after the deadline). It runs the deterministic matcher on them with the seed
//! the market derives from the chain (`seedOf`), signs the result (EIP-712 `Match`), serves
//! its signature at `GET /v1/match/{order}`, and collects the other operators' signatures from
//! their registered endpoints. Only signatures over the *same* result count; their signer must
//! recover to a registered operator. Once the signers hold 2/3 of the operator stake at the
//! deadline, the operators submit in turn (rotating by order id, `submit_grace` apart) until
//! the match lands; so it keeps working with up to 1/3 of the stake offline or lying. A peer
//! seen signing two different results for one order is reported (`reportEquivocation`).
//!
//! The signatures authenticate the exchange: a response is worth something only if it
//! recovers to an operator with stake on chain, and the contract checks them again.

use crate::error::{Error, Result};
use crate::matching;
use crate::network::NetworkFile;
use crate::tiers::{self, SignedTiers};
use alloy::primitives::Address;
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use spheron_chain::Chain;
use spheron_chain::audit;
use spheron_chain::bindings::SpheronMarket;
use spheron_chain::follow::{ChainEvent, Follower};
use spheron_chain::quorum::{self, Kind, MatchResult};
use spheron_chain::registry::order_state;
use spheron_core::GpuRequest;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A hook that alters this operator's result before it signs: what a lying operator does.
/// For tests of the quorum only.
pub type Tamper = Arc<dyn Fn(&mut MatchResult) + Send + Sync>;

/// Operator settings.
#[derive(Clone)]
pub struct OperatorConfig {
    /// Blocks behind the head treated as final.
    pub confirmations: u64,
    /// Largest block range read per poll.
    pub max_block_range: u64,
    /// Poll interval.
    pub poll: Duration,
    /// Where the signature exchange listens (its URL is registered on chain).
    pub listen: SocketAddr,
    /// The URL registered on chain (default: `http://{listen}`).
    pub endpoint: Option<String>,
    /// SPHN (base units) to stake when the operator is not registered yet.
    pub stake: u128,
    /// Time between the turns of successive submitters.
    pub submit_grace: Duration,
    /// Alters the result before signing (tests of a lying operator).
    pub tamper: Option<Tamper>,
}

impl std::fmt::Debug for OperatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorConfig")
            .field("listen", &self.listen)
            .field("endpoint", &self.endpoint)
            .field("tamper", &self.tamper.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            confirmations: 0,
            max_block_range: 500,
            poll: Duration::from_millis(250),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            endpoint: None,
            stake: 1_000 * 10u128.pow(18),
            submit_grace: Duration::from_secs(2),
            tamper: None,
        }
    }
}

/// A signed result as operators exchange it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMatch {
    /// The result.
    pub result: MatchResult,
    /// Who signed it.
    pub signer: Address,
    /// 65-byte signature, 0x-hex.
    pub signature: String,
}

#[derive(Clone, Debug)]
struct OpenOrder {
    tenant: Address,
    request: GpuRequest,
    deadline: u64,
    created_block: u64,
}

struct Shared {
    net: NetworkFile,
    chain: Arc<Chain>,
    key: PrivateKeySigner,
    me: Address,
    market: SpheronMarket::SpheronMarketInstance<DynProvider>,
    domain: Eip712Domain,
    config: OperatorConfig,
    match_window: u64,
    /// This operator's signed results, served to its peers.
    signed: Mutex<BTreeMap<u64, SignedMatch>>,
    /// Results each peer was seen signing, per order (for equivocation proofs).
    seen: Mutex<BTreeMap<(u64, Address), SignedMatch>>,
    /// This operator's signed tiers per epoch, served to its peers.
    signed_tiers: Mutex<BTreeMap<u64, SignedTiers>>,
    http: reqwest::Client,
}

/// The operator node; see the [module docs](self).
pub struct OperatorNode {
    shared: Arc<Shared>,
    /// Bound at start (so the registered endpoint is known); taken by [`OperatorNode::run`].
    listener: Option<tokio::net::TcpListener>,
    orders: BTreeMap<u64, OpenOrder>,
    working: Arc<Mutex<BTreeSet<u64>>>,
    /// Epochs whose tiers are on chain or being worked on.
    tiered: Arc<Mutex<BTreeSet<u64>>>,
    /// When the audit contract's epoch was last read.
    tiers_checked: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for OperatorNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorNode")
            .field("operator", &self.shared.me)
            .finish_non_exhaustive()
    }
}

fn chain_err(e: spheron_chain::Error) -> Error {
    Error::Chain(e)
}

impl OperatorNode {
    /// Connects with the operator's key (read from `key_file`) to the network in `network`.
    pub async fn start(network: &Path, key_file: &Path, config: OperatorConfig) -> Result<Self> {
        let net = NetworkFile::load(network)?;
        Self::start_with_key(net, crate::network::load_key(key_file)?, config).await
    }

    /// Like [`OperatorNode::start`] with the network and key in hand: binds the exchange,
    /// registers and stakes the operator when it is not yet.
    pub async fn start_with_key(
        net: NetworkFile,
        key: PrivateKeySigner,
        config: OperatorConfig,
    ) -> Result<Self> {
        let me = key.address();
        let chain = Arc::new(Chain::connect(&net.rpc_url, [key.clone()])?);
        let market = SpheronMarket::new(net.market, chain.provider().clone());
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local = listener.local_addr()?;
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        crate::network::ensure_party(&chain, &net, me, Kind::Operator, &endpoint, config.stake)
            .await?;
        let match_window = u64::from(
            market
                .matchWindowSecs()
                .call()
                .await
                .map_err(|e| chain_err(spheron_chain::client::decode(e)))?,
        );
        let domain = quorum::domain(net.chain_id, net.operators);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| Error::config("http", e.to_string()))?;
        tracing::info!(operator = %me, %endpoint, "operator ready");
        Ok(OperatorNode {
            shared: Arc::new(Shared {
                net,
                chain,
                key,
                me,
                market,
                domain,
                config,
                match_window,
                signed: Mutex::new(BTreeMap::new()),
                seen: Mutex::new(BTreeMap::new()),
                signed_tiers: Mutex::new(BTreeMap::new()),
                http,
            }),
            listener: Some(listener),
            orders: BTreeMap::new(),
            working: Arc::new(Mutex::new(BTreeSet::new())),
            tiered: Arc::new(Mutex::new(BTreeSet::new())),
            tiers_checked: None,
        })
    }

    /// The operator's account.
    pub fn address(&self) -> Address {
        self.shared.me
    }

    /// Where the signature exchange listens.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        let l = self
            .listener
            .as_ref()
            .ok_or_else(|| Error::config("listen", "already serving"))?;
        Ok(l.local_addr()?)
    }

    /// Serves the exchange, follows the chain and matches orders until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let router = Router::new()
            .route("/v1/match/{order}", get(serve_match))
            .route("/v1/tiers/{epoch}", get(serve_tiers))
            .with_state(self.shared.clone());
        let listener = self
            .listener
            .take()
            .ok_or_else(|| Error::config("listen", "already serving"))?;
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let s = self.shared.clone();
        let mut follower = Follower::new(
            s.net.market,
            s.net.deploy_block,
            s.config.confirmations,
            s.config.max_block_range.max(1),
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(s.config.poll) => {}
            }
            for _ in 0..32 {
                match follower.poll(&s.chain).await {
                    Ok(logs) => {
                        let empty = logs.is_empty();
                        for l in logs {
                            self.on_event(l.block, l.event);
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
            if let Err(e) = self.start_due().await {
                tracing::warn!(error = %e, "matching");
            }
            if let Err(e) = self.tiers_due().await {
                tracing::warn!(error = %e, "tiers");
            }
        }
        server.abort();
        Ok(())
    }

    fn on_event(&mut self, block: u64, ev: ChainEvent) {
        match ev {
            ChainEvent::OrderCreated {
                id,
                tenant,
                max_price_per_gpu_hour,
                gpus,
                duration_secs,
                bid_deadline,
                ..
            } if gpus > 0 => {
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
                        created_block: block,
                    },
                );
            }
            ChainEvent::OrderSpec { id, spec } => {
                if let Some(o) = self.orders.get_mut(&id)
                    && let Some(r) = matching::spec_request(&spec, &o.request)
                {
                    o.request = r;
                }
            }
            ChainEvent::LeaseMatched { id, .. } | ChainEvent::OrderCancelled { id, .. } => {
                // Decided: nothing about this order is served or remembered any more.
                self.orders.remove(&id);
                self.shared
                    .signed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                self.shared
                    .seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(order, _), _| *order != id);
            }
            _ => {}
        }
    }

    /// Starts a round for every order whose bid window has closed.
    async fn start_due(&mut self) -> Result<()> {
        if self.orders.is_empty() {
            return Ok(());
        }
        let now = self.shared.chain.block_time().await?;
        // A block stamped after the deadline exists: every bid is in.
        let due: Vec<u64> = self
            .orders
            .iter()
            .filter(|(_, o)| o.deadline < now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(o) = self.orders.remove(&id) else {
                continue;
            };
            if !self
                .working
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id)
            {
                continue;
            }
            let s = self.shared.clone();
            let working = self.working.clone();
            tokio::spawn(async move {
                // Transient failures (RPC, a peer's hiccup) retry until the match window closes.
                let match_deadline = o.deadline + s.match_window;
                loop {
                    match round(&s, id, &o).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(order = id, error = %e, "round failed");
                            let now = s.chain.block_time().await.unwrap_or(u64::MAX);
                            if now > match_deadline {
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                working
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        }
        Ok(())
    }
}

impl OperatorNode {
    /// Starts the tier round of the newest epoch whose records are final (see [`crate::tiers`]),
    /// at most every two seconds.
    async fn tiers_due(&mut self) -> Result<()> {
        let Some(audit_at) = self.shared.net.audit else {
            return Ok(());
        };
        if self
            .tiers_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return Ok(());
        }
        self.tiers_checked = Some(tokio::time::Instant::now());
        let s = self.shared.clone();
        let now = audit::current_epoch(&s.chain, audit_at)
            .await
            .map_err(chain_err)?;
        let Some(epoch) = now.checked_sub(2) else {
            return Ok(());
        };
        if !self
            .tiered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(epoch)
        {
            return Ok(());
        }
        tokio::spawn(async move {
            loop {
                match tier_round(&s, audit_at, epoch).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(epoch, error = %e, "tier round failed"),
                }
                // Past the next epoch another round takes over.
                match audit::current_epoch(&s.chain, audit_at).await {
                    Ok(n) if n > epoch + 2 => break,
                    _ => {}
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut signed = s.signed_tiers.lock().unwrap_or_else(|p| p.into_inner());
            signed.retain(|e, _| *e + 4 > epoch);
        });
        Ok(())
    }
}

async fn serve_tiers(
    State(s): State<Arc<Shared>>,
    UrlPath(epoch): UrlPath<u64>,
) -> std::result::Result<Json<SignedTiers>, (StatusCode, Json<serde_json::Value>)> {
    signed_or_404(&s.signed_tiers, epoch, "tiers for epoch")
}

/// What this operator signed for `key` in `map`, or a typed `404` naming `what`.
fn signed_or_404<T: Clone>(
    map: &Mutex<BTreeMap<u64, T>>,
    key: u64,
    what: &str,
) -> std::result::Result<Json<T>, (StatusCode, Json<serde_json::Value>)> {
    let signed = map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    signed.map(Json).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "not_signed", "message": format!("no {what} {key} yet")})),
        )
    })
}

/// Computes, signs, exchanges and (in turn) submits epoch `epoch`'s tiers. `Ok(true)` once
/// they are on chain.
async fn tier_round(s: &Shared, audit_at: Address, epoch: u64) -> Result<bool> {
    if audit::tiers_submitted(&s.chain, audit_at, epoch)
        .await
        .map_err(chain_err)?
    {
        return Ok(true);
    }
    let Some((result, _)) =
        tiers::compute(&s.chain, s.net.market, audit_at, s.net.deploy_block, epoch).await?
    else {
        return Ok(false);
    };
    let signature = audit::sign_tiers(
        &s.key,
        s.net.chain_id,
        audit_at,
        epoch,
        &result.providers,
        &result.tiers,
    )
    .await
    .map_err(chain_err)?;
    s.signed_tiers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            epoch,
            SignedTiers {
                result: result.clone(),
                signer: s.me,
                signature: format!("0x{}", hex::encode(&signature)),
            },
        );
    tracing::info!(epoch, providers = result.providers.len(), tiers = ?result.tiers, "signed the tiers");
    let (_, end) = audit::epoch_bounds(&s.chain, audit_at, epoch)
        .await
        .map_err(chain_err)?;
    let Committee {
        weight_of,
        total,
        endpoints,
        my_turn,
    } = committee(s, end, epoch).await?;
    let mut sigs: BTreeMap<Address, Vec<u8>> = BTreeMap::from([(s.me, signature)]);
    let started = tokio::time::Instant::now();
    loop {
        for (peer, url) in &endpoints {
            if *peer == s.me || sigs.contains_key(peer) || !weight_of.contains_key(peer) {
                continue;
            }
            if let Some(sig) = fetch_tiers(s, audit_at, *peer, url, &result).await {
                sigs.insert(*peer, sig);
            }
        }
        if audit::tiers_submitted(&s.chain, audit_at, epoch)
            .await
            .map_err(chain_err)?
        {
            return Ok(true);
        }
        let now = audit::current_epoch(&s.chain, audit_at)
            .await
            .map_err(chain_err)?;
        if now > epoch + 2 {
            return Ok(true);
        }
        let signed: u128 = sigs.keys().filter_map(|a| weight_of.get(a)).sum();
        if quorum::is_quorum(signed, total)
            && started.elapsed() >= s.config.submit_grace * u32::try_from(my_turn).unwrap_or(0)
        {
            let list: Vec<(Address, Vec<u8>)> = sigs.clone().into_iter().collect();
            match audit::submit_tiers(
                &s.chain,
                audit_at,
                s.me,
                epoch,
                &result.providers,
                &result.tiers,
                &list,
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(epoch, signers = list.len(), "tiers submitted");
                    return Ok(true);
                }
                Err(e) => tracing::warn!(epoch, error = %e, "tiers refused"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks `peer` for its signed tiers; keeps the signature when it signs `mine`.
async fn fetch_tiers(
    s: &Shared,
    audit_at: Address,
    peer: Address,
    url: &str,
    mine: &tiers::TierResult,
) -> Option<Vec<u8>> {
    let resp = s
        .http
        .get(format!(
            "{}/v1/tiers/{}",
            url.trim_end_matches('/'),
            mine.epoch
        ))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let got: SignedTiers = resp.json().await.ok()?;
    let sig = hex::decode(got.signature.trim_start_matches("0x")).ok()?;
    if tiers::signer_of(s.net.chain_id, audit_at, &got.result, &sig).ok()? != peer {
        tracing::warn!(epoch = mine.epoch, %peer, "a peer served tiers it did not sign");
        return None;
    }
    if got.result != *mine {
        tracing::warn!(epoch = mine.epoch, %peer, "a peer signed different tiers");
        return None;
    }
    Some(sig)
}

/// The operators whose signatures count for a round decided at block time `at`.
struct Committee {
    /// Each operator's weight at `at`.
    weight_of: BTreeMap<Address, u128>,
    /// Their total.
    total: u128,
    /// Where each registered operator serves.
    endpoints: BTreeMap<Address, String>,
    /// How many turns this operator waits before it submits (turns rotate by the round's
    /// id over the operators with weight).
    my_turn: usize,
}

async fn committee(s: &Shared, at: u64, round: u64) -> Result<Committee> {
    let (weights, total) = quorum::weights_at(&s.chain, s.net.operators, Kind::Operator, at)
        .await
        .map_err(chain_err)?;
    let endpoints: BTreeMap<Address, String> =
        quorum::parties(&s.chain, s.net.operators, Kind::Operator)
            .await
            .map_err(chain_err)?
            .into_iter()
            .map(|p| (p.address, p.endpoint))
            .collect();
    let mut order: Vec<Address> = weights.iter().map(|(a, _)| *a).collect();
    order.sort();
    let n = order.len().max(1);
    let turn = order.iter().position(|a| *a == s.me).unwrap_or(0);
    Ok(Committee {
        weight_of: weights.into_iter().collect(),
        total,
        endpoints,
        my_turn: (turn + n - (round % n as u64) as usize) % n,
    })
}

async fn serve_match(
    State(s): State<Arc<Shared>>,
    UrlPath(order): UrlPath<u64>,
) -> std::result::Result<Json<SignedMatch>, (StatusCode, Json<serde_json::Value>)> {
    signed_or_404(&s.signed, order, "result for order")
}

/// Computes, signs, exchanges and (in turn) submits order `id`'s match.
async fn round(s: &Shared, id: u64, o: &OpenOrder) -> Result<()> {
    let at = matching::reference_block(&s.chain, o.created_block, o.deadline).await?;
    let view = s
        .market
        .getOrder(id)
        .block(alloy::eips::BlockId::number(at))
        .call()
        .await
        .map_err(|e| chain_err(spheron_chain::client::decode(e)))?;
    if view.state != order_state::OPEN {
        return Ok(());
    }
    let digest = view.bidsDigest;
    let seed = s
        .market
        .seedOf(id, digest)
        .call()
        .await
        .map_err(|e| chain_err(spheron_chain::client::decode(e)))?;
    let bids = matching::bids_at(&s.chain, s.net.market, id, o.created_block, at).await?;
    let m = matching::matcher(seed)?;
    let ranked = matching::rank(
        &s.chain,
        s.net.market,
        &m,
        matching::RoundInput {
            id,
            tenant: o.tenant,
            request: &o.request,
            deadline: o.deadline,
            bids: &bids,
            block: Some(at),
        },
    )
    .await?;
    let Some(best) = ranked.ranking.ranked.first() else {
        tracing::info!(
            order = id,
            bids = bids.len(),
            "no eligible bid: the order expires"
        );
        return Ok(());
    };
    let winner = Address::from(best.provider().0);
    let price = best.candidate.bid.price_per_gpu_hour.0;
    let mut result = MatchResult {
        order_id: id,
        bids_digest: digest,
        winner,
        price,
        seed,
        matcher_version: matching::MATCHER_VERSION,
    };
    if let Some(t) = &s.config.tamper {
        t(&mut result);
    }
    let signature = quorum::sign_match(&s.key, &s.domain, &result).await?;
    s.signed.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        SignedMatch {
            result,
            signer: s.me,
            signature: format!("0x{}", hex::encode(&signature)),
        },
    );
    tracing::info!(order = id, %winner, score = best.score, "signed the match");

    let Committee {
        weight_of,
        total,
        endpoints,
        my_turn,
    } = committee(s, o.deadline, id).await?;
    let match_deadline = o.deadline + s.match_window;

    let mut sigs: BTreeMap<Address, Vec<u8>> = BTreeMap::from([(s.me, signature)]);
    let started = tokio::time::Instant::now();
    loop {
        for (peer, url) in &endpoints {
            if *peer == s.me || sigs.contains_key(peer) || !weight_of.contains_key(peer) {
                continue;
            }
            if let Some(sig) = fetch(s, *peer, url, id, &result).await {
                sigs.insert(*peer, sig);
            }
        }
        let signed: u128 = sigs.keys().filter_map(|a| weight_of.get(a)).sum();
        let now = s.chain.block_time().await?;
        let state = s
            .market
            .getOrder(id)
            .call()
            .await
            .map_err(|e| chain_err(spheron_chain::client::decode(e)))?
            .state;
        if state != order_state::OPEN || now > match_deadline {
            return Ok(());
        }
        if quorum::is_quorum(signed, total)
            && started.elapsed() >= s.config.submit_grace * u32::try_from(my_turn).unwrap_or(0)
        {
            let list: Vec<(Address, Vec<u8>)> = sigs.clone().into_iter().collect();
            match quorum::submit_match(&s.chain, s.net.market, s.me, &result, &list).await {
                Ok(_) => {
                    tracing::info!(
                        order = id,
                        signers = list.len(),
                        signed,
                        total,
                        "match submitted"
                    );
                    return Ok(());
                }
                Err(e) => tracing::warn!(order = id, error = %e, "match refused"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Asks `peer` for its signed result of `id`; keeps it when it signs `mine`, remembers it (and
/// reports an equivocation) otherwise.
async fn fetch(
    s: &Shared,
    peer: Address,
    url: &str,
    id: u64,
    mine: &MatchResult,
) -> Option<Vec<u8>> {
    let resp = s
        .http
        .get(format!("{}/v1/match/{id}", url.trim_end_matches('/')))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let got: SignedMatch = resp.json().await.ok()?;
    let sig = hex::decode(got.signature.trim_start_matches("0x")).ok()?;
    if got.result.order_id != id || quorum::match_signer(&s.domain, &got.result, &sig).ok()? != peer
    {
        tracing::warn!(order = id, %peer, "a peer served a result it did not sign");
        return None;
    }
    let earlier = s
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((id, peer), got.clone());
    if let Some(prev) = earlier
        && prev.result != got.result
    {
        let prev_sig = hex::decode(prev.signature.trim_start_matches("0x")).ok()?;
        match quorum::report_equivocation(
            &s.chain,
            s.net.operators,
            s.me,
            (&prev.result, &prev_sig),
            (&got.result, &sig),
        )
        .await
        {
            Ok(_) => tracing::warn!(order = id, %peer, "reported an equivocation"),
            Err(e) => tracing::warn!(order = id, %peer, error = %e, "equivocation report refused"),
        }
    }
    if got.result != *mine {
        tracing::warn!(order = id, %peer, "a peer signed a different result");
        return None;
    }
    Some(sig)
}
