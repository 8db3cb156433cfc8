//! The marketplace on an EVM chain (feature `chain`): the same rent flow as
//! [`Marketplace::local`](crate::Marketplace::local), with the order book and escrow in the
//! `SpheronMarket` contract ([`EvmMarket`], [`EvmEscrow`]).

use crate::LocalLauncher;
use futures::stream::BoxStream;
use spheron_chain::alloy::primitives::Address;
use spheron_chain::alloy::signers::local::PrivateKeySigner;
use spheron_chain::bindings::SpheronMarket;
use spheron_chain::{Addresses, Chain, EvmEscrow, EvmMarket, account};
use spheron_core::{
    AccountId, Amount, Balance, ChallengeVerifier, Clock, Error, Escrow, FlowConfig, GpuRequest,
    LeaseHandle, Matcher, Orchestrator, Parts, ProgressEvent, Provers, Registry, Result,
    StrategyAgent, SystemClock, TierPolicy, Token, Workload, WorkloadLauncher,
};
use spheron_gpu::Simulation;
use std::sync::Arc;
use std::time::Duration;

/// Builder of a marketplace on chain; see [`Marketplace::evm`](crate::Marketplace::evm).
#[must_use]
pub struct EvmBuilder {
    rpc_url: String,
    tenant: PrivateKeySigner,
    addresses: Addresses,
    operator: Option<PrivateKeySigner>,
    payment: Option<(Token, Address)>,
    providers: Vec<(PrivateKeySigner, crate::SimProvider)>,
    clock: Option<Arc<dyn Clock>>,
    matcher: Option<Arc<dyn Matcher>>,
    launcher: Option<Arc<dyn WorkloadLauncher>>,
    verifier: Option<Arc<dyn ChallengeVerifier>>,
    tiers: Option<Arc<dyn TierPolicy>>,
    bid_window: Duration,
    max_attempts: usize,
    seed: Option<u64>,
}

impl crate::Marketplace {
    /// A marketplace on the chain at `rpc_url`, renting for the account of `signer`, with the
    /// contracts at `addresses`. Payments default to SPHN.
    ///
    /// ```no_run
    /// # async fn demo() -> spheron::Result<()> {
    /// use spheron::chain::Addresses;
    /// use spheron::prelude::*;
    ///
    /// let key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().unwrap();
    /// let addresses = Addresses {
    ///     market: "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0".parse().unwrap(),
    ///     sphn: "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse().unwrap(),
    ///     stable: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".parse().unwrap(),
    /// };
    /// let market = Marketplace::evm("http://127.0.0.1:8545", key, addresses).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn evm(rpc_url: &str, signer: PrivateKeySigner, addresses: Addresses) -> EvmBuilder {
        EvmBuilder {
            rpc_url: rpc_url.to_string(),
            tenant: signer,
            addresses,
            operator: None,
            payment: None,
            providers: Vec::new(),
            clock: None,
            matcher: None,
            launcher: None,
            verifier: None,
            tiers: None,
            bid_window: Duration::from_secs(2),
            max_attempts: 3,
            seed: None,
        }
    }
}

impl EvmBuilder {
    /// The operator's key (matcher and slasher roles): records matches and slashes. Without
    /// it the tenant matches its own orders and slashing fails.
    pub fn operator(mut self, key: PrivateKeySigner) -> Self {
        self.operator = Some(key);
        self
    }
    /// Pays in `token` at `address` (default: SPHN at `addresses.sphn`).
    pub fn payment(mut self, token: Token, address: Address) -> Self {
        self.payment = Some((token, address));
        self
    }
    /// A simulated provider bidding from the chain account of `key` (its id becomes that
    /// address). At build it is registered on chain if needed, and stakes its `stake` in SPHN
    /// from its wallet when its on-chain stake is lower.
    pub fn provider(mut self, key: PrivateKeySigner, mut sim: crate::SimProvider) -> Self {
        sim.provider.id = account(key.address());
        self.providers.push((key, sim));
        self
    }
    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// The matcher (default: the weighted matcher).
    pub fn matcher(mut self, matcher: Arc<dyn Matcher>) -> Self {
        self.matcher = Some(matcher);
        self
    }
    /// The launcher (default: local subprocesses).
    pub fn launcher(mut self, launcher: Arc<dyn WorkloadLauncher>) -> Self {
        self.launcher = Some(launcher);
        self
    }
    /// The proof-of-GPU verifier (default: the simulated fleet's Freivalds verifier,
    /// `spheron_gpu::Simulation::standard`).
    pub fn verifier(mut self, verifier: Arc<dyn ChallengeVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }
    /// The tier policy (default: `ReputationTierPolicy`).
    pub fn tiers(mut self, tiers: Arc<dyn TierPolicy>) -> Self {
        self.tiers = Some(tiers);
        self
    }
    /// How long orders collect bids (rounded up to whole seconds on chain; default 2 s).
    pub fn bid_window(mut self, window: Duration) -> Self {
        self.bid_window = window;
        self
    }
    /// Providers challenged per order before giving up (default 3).
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.max_attempts = n;
        self
    }
    /// Seed of the matcher's random term and of challenge entropy.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Connects, registers and stakes the providers, and wires the rent flow.
    pub async fn build(self) -> Result<EvmMarketplace> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("max_attempts", "must be at least 1"));
        }
        let tenant = account(self.tenant.address());
        let operator = self.operator.as_ref().map(|k| k.address());
        let mut keys = vec![self.tenant.clone()];
        keys.extend(self.operator.clone());
        keys.extend(self.providers.iter().map(|(k, _)| k.clone()));
        let chain = Arc::new(Chain::connect(&self.rpc_url, keys)?);
        let (token, token_addr) = self
            .payment
            .clone()
            .unwrap_or((Token::sphn(), self.addresses.sphn));
        let slasher = operator.unwrap_or(self.tenant.address());
        let escrow = Arc::new(
            EvmEscrow::new(
                chain.clone(),
                self.addresses.market,
                token_addr,
                token.clone(),
                slasher,
            )
            .await?,
        );
        let stake_escrow = if token_addr == self.addresses.sphn {
            escrow.clone()
        } else {
            Arc::new(
                EvmEscrow::new(
                    chain.clone(),
                    self.addresses.market,
                    self.addresses.sphn,
                    Token::sphn(),
                    slasher,
                )
                .await?,
            )
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let market = Arc::new(EvmMarket::new(
            chain.clone(),
            self.addresses.market,
            token_addr,
            operator,
            clock.clone(),
        ));
        let m = SpheronMarket::new(self.addresses.market, chain.provider().clone());
        let registry = Arc::new(Registry::new());
        let provers = Arc::new(Provers::new());
        let simulation = Simulation::standard();
        for (key, sim) in self.providers {
            let p = &sim.provider;
            let info = m
                .providerInfo(key.address())
                .call()
                .await
                .map_err(|e| Error::from(spheron_chain::client::decode(e)))?;
            if !info.registered {
                let region = p.region.clone();
                chain
                    .send(
                        key.address(),
                        m.register(p.endpoint.clone(), region, key.public_key().to_vec().into()),
                    )
                    .await?;
            }
            let staked = stake_escrow.balance(p.id).await?.staked;
            if staked < p.stake {
                let more = Amount(p.stake.0 - staked.0);
                stake_escrow.deposit(p.id, more).await?;
                stake_escrow.stake(p.id, more).await?;
            }
            provers.insert(p.id, Arc::new(sim.prover(&simulation)));
            market.add_agent(Arc::new(StrategyAgent::new(
                p.id,
                registry.clone(),
                sim.prices.clone(),
                sim.strategy,
            )));
            registry.register(sim.provider);
        }
        // Stake is held in SPHN (18 decimals) on chain.
        let matcher = crate::defaults::matcher(self.matcher, self.seed, 18)?;
        let verifier = crate::defaults::verifier(self.verifier, &simulation)?;
        let config = FlowConfig {
            bid_window: self.bid_window,
            max_attempts: self.max_attempts,
            entropy_seed: self.seed,
            // Order ids live on the chain across runs: start from the wall clock in milliseconds
            // so a second run against the same chain does not reuse ids.
            first_order_id: SystemClock.now().0,
            ..FlowConfig::default()
        };
        let parts = Parts {
            market: market.clone(),
            matcher,
            escrow: escrow.clone(),
            launcher: self
                .launcher
                .unwrap_or_else(|| Arc::new(LocalLauncher::new())),
            verifier,
            provers,
            tiers: crate::defaults::tiers(self.tiers),
            registry: registry.clone(),
            clock,
        };
        Ok(EvmMarketplace {
            orchestrator: Orchestrator::new(parts, config),
            escrow,
            market,
            registry,
            tenant,
        })
    }
}

/// A marketplace whose order book and escrow live on an EVM chain.
pub struct EvmMarketplace {
    orchestrator: Orchestrator,
    escrow: Arc<EvmEscrow>,
    market: Arc<EvmMarket>,
    registry: Arc<Registry>,
    tenant: AccountId,
}

impl std::fmt::Debug for EvmMarketplace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmMarketplace")
            .field("tenant", &self.tenant)
            .field("escrow", &self.escrow)
            .finish_non_exhaustive()
    }
}

impl EvmMarketplace {
    /// Rents GPUs for the tenant: the order and its bids go on chain, the budget is locked by
    /// the contract, the lease starts at the on-chain match and settles per second of block time.
    pub async fn rent(&self, request: GpuRequest, workload: Workload) -> Result<LeaseHandle> {
        self.orchestrator.rent(self.tenant, request, workload).await
    }
    /// Progress events of every rent.
    pub fn events(&self) -> BoxStream<'static, ProgressEvent> {
        self.orchestrator.subscribe()
    }
    /// The tenant's account.
    pub fn tenant(&self) -> AccountId {
        self.tenant
    }
    /// Deposits `amount` of the payment token from the tenant's wallet.
    pub async fn deposit(&self, amount: Amount) -> Result<()> {
        self.escrow.deposit(self.tenant, amount).await
    }
    /// An account's escrow balances on chain.
    pub async fn balance(&self, account: AccountId) -> Result<Balance> {
        self.escrow.balance(account).await
    }
    /// The on-chain escrow.
    pub fn escrow(&self) -> &Arc<EvmEscrow> {
        &self.escrow
    }
    /// The on-chain market.
    pub fn market(&self) -> &Arc<EvmMarket> {
        &self.market
    }
    /// The provider registry the matcher reads.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}
