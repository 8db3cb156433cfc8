//! [`Marketplace`]: the embedded marketplace wiring spheron's defaults together.

use crate::fleet::SimFleet;
use futures::stream::BoxStream;
use spheron_core::{
    AccountId, Amount, Balance, ChallengeVerifier, Clock, EpochConfig, EpochProcessor, Error,
    Escrow, FlowConfig, GpuRequest, LeaseHandle, LeaseReport, LedgerTotals, LocalMarket, Matcher,
    MemoryEscrow, Orchestrator, Parts, ProgressEvent, Provers, Provider, Registry, Result,
    SpendLimit, Standing, StrategyAgent, SystemClock, TierPolicy, Token, Workload,
    WorkloadLauncher,
};
use spheron_gpu::Simulation;
use spheron_node::LocalLauncher;
use std::sync::Arc;
use std::time::Duration;

/// An embedded marketplace: in-process market and escrow, a simulated provider fleet,
/// proof-of-GPU challenges, and a launcher (local subprocesses by default).
///
/// ```no_run
/// # async fn demo() -> spheron::Result<()> {
/// use spheron::prelude::*;
///
/// let market = Marketplace::local().tenant_funds(Amount(100_000_000)).build().await?;
/// let request = GpuRequest::builder()
///     .gpu("h100")
///     .hours(1)
///     .max_price_per_gpu_hour(Amount(3_000_000))
///     .build()?;
/// let lease = market.rent(request, Workload::command(["echo", "hello"])).await?;
/// let report = lease.wait().await;
/// println!("paid {} refunded {:?}", report.cost, report.refunded());
/// # Ok(()) }
/// ```
pub struct Marketplace {
    orchestrator: Orchestrator,
    epochs: Arc<EpochProcessor>,
    epoch_task: tokio::task::JoinHandle<()>,
    clock: Arc<dyn Clock>,
    escrow: Arc<dyn Escrow>,
    ledger: Option<Arc<MemoryEscrow>>,
    registry: Arc<Registry>,
    tenant: AccountId,
    verifier_account: AccountId,
    spend: Option<Arc<SpendLimit>>,
}

impl std::fmt::Debug for Marketplace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Marketplace")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Builder of the embedded marketplace; every part has a default and can be replaced.
#[must_use]
pub struct LocalBuilder {
    token: Token,
    clock: Option<Arc<dyn Clock>>,
    matcher: Option<Arc<dyn Matcher>>,
    launcher: Option<Arc<dyn WorkloadLauncher>>,
    verifier: Option<Arc<dyn ChallengeVerifier>>,
    tiers: Option<Arc<dyn TierPolicy>>,
    stake: Option<Arc<MemoryEscrow>>,
    fleet: SimFleet,
    simulation: Simulation,
    seed: Option<u64>,
    bid_window: Duration,
    max_attempts: usize,
    tenant: AccountId,
    tenant_funds: Amount,
    epochs: EpochConfig,
    treasury_funds: Amount,
    spend_cap: Option<Amount>,
}

impl Marketplace {
    /// A builder for the embedded marketplace with the standard simulated fleet.
    pub fn local() -> LocalBuilder {
        LocalBuilder {
            token: Token::usd(),
            clock: None,
            matcher: None,
            stake: None,
            launcher: None,
            verifier: None,
            tiers: None,
            fleet: SimFleet::standard(),
            simulation: Simulation::standard(),
            seed: None,
            bid_window: Duration::from_millis(200),
            max_attempts: 3,
            tenant: AccountId::from_label("spheron.tenant"),
            tenant_funds: Amount::ZERO,
            epochs: EpochConfig::default(),
            treasury_funds: Amount::ZERO,
            spend_cap: None,
        }
    }

    /// Rents GPUs for the marketplace's tenant: publish, bid, match, verify, lock, launch.
    /// Returns once the workload runs.
    pub async fn rent(&self, request: GpuRequest, workload: Workload) -> Result<LeaseHandle> {
        self.orchestrator.rent(self.tenant, request, workload).await
    }

    /// Progress events of every rent from now on.
    pub fn events(&self) -> BoxStream<'static, ProgressEvent> {
        self.orchestrator.subscribe()
    }

    /// The tenant account used by [`Marketplace::rent`].
    pub fn tenant(&self) -> AccountId {
        self.tenant
    }

    /// The account that receives slashed stake (the verifier network).
    pub fn verifier_account(&self) -> AccountId {
        self.verifier_account
    }

    /// The payment token.
    pub fn token(&self) -> Token {
        self.escrow.token()
    }

    /// Deposits funds for the tenant.
    pub async fn deposit(&self, amount: Amount) -> Result<()> {
        self.escrow.deposit(self.tenant, amount).await
    }

    /// An account's escrow balance.
    pub async fn balance(&self, account: AccountId) -> Result<Balance> {
        self.escrow.balance(account).await
    }

    /// The escrow.
    pub fn escrow(&self) -> &Arc<dyn Escrow> {
        &self.escrow
    }

    /// Totals of the in-memory ledger (conservation audit).
    pub fn ledger_totals(&self) -> Option<LedgerTotals> {
        self.ledger.as_ref().map(|l| l.totals())
    }

    /// A provider's record.
    pub fn provider(&self, id: AccountId) -> Result<Provider> {
        self.registry.get(id)
    }

    /// Every provider, by id.
    pub fn providers(&self) -> Vec<Provider> {
        self.registry.all()
    }

    /// The epoch processor: per-epoch tiers, penalties and rewards, fed with every rent's
    /// progress events.
    pub fn epochs(&self) -> &Arc<EpochProcessor> {
        &self.epochs
    }

    /// Rates a finished lease (1..=5 stars) for its provider's reputation.
    pub fn rate(&self, lease: &LeaseReport, stars: u8) -> Result<()> {
        self.epochs
            .record_feedback_for(self.clock.now(), lease.lease, lease.provider, stars)
    }

    /// A provider's standing: tier, ban, hysteresis state and why.
    pub fn standing(&self, provider: AccountId) -> Result<Standing> {
        self.epochs.standing(provider)
    }

    /// The marketplace's spend cap, when one was set ([`LocalBuilder::spend_cap`]): its cap
    /// and what its leases committed so far.
    pub fn spend_limit(&self) -> Option<&Arc<SpendLimit>> {
        self.spend.as_ref()
    }

    /// The orchestrator, for integrators who need the parts.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }
}

impl Drop for Marketplace {
    fn drop(&mut self) {
        self.epoch_task.abort();
    }
}

impl LocalBuilder {
    /// A ledger of its own for provider stake (default: stake sits in the payment ledger).
    /// Stake and payment are apart in the flow ([`spheron_core::StakeVault`] beside
    /// [`Escrow`]): the fleet stakes here, and penalties slash here, whatever token pays.
    pub fn stake_ledger(mut self, ledger: Arc<MemoryEscrow>) -> Self {
        self.stake = Some(ledger);
        self
    }
    /// The payment token (default: a 6-decimal USD token).
    pub fn token(mut self, token: Token) -> Self {
        self.token = token;
        self
    }
    /// The clock (default: the system clock). Use a `SimClock` in tests.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// The matcher (default: [`WeightedMatcher`](spheron_core::WeightedMatcher) seeded with [`LocalBuilder::seed`]).
    pub fn matcher(mut self, matcher: Arc<dyn Matcher>) -> Self {
        self.matcher = Some(matcher);
        self
    }
    /// The launcher (default: [`LocalLauncher`]).
    pub fn launcher(mut self, launcher: Arc<dyn WorkloadLauncher>) -> Self {
        self.launcher = Some(launcher);
        self
    }
    /// The proof-of-GPU verifier.
    pub fn verifier(mut self, verifier: Arc<dyn ChallengeVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }
    /// The tier policy (default: [`ReputationTierPolicy`](spheron_core::ReputationTierPolicy)).
    pub fn tiers(mut self, tiers: Arc<dyn TierPolicy>) -> Self {
        self.tiers = Some(tiers);
        self
    }
    /// The simulated provider fleet (default: [`SimFleet::standard`]).
    pub fn fleet(mut self, fleet: SimFleet) -> Self {
        self.fleet = fleet;
        self
    }
    /// How the fleet's CPU provers imitate their GPUs and how the verifier judges them
    /// (default: [`Simulation::standard`], ~250 ms per challenge). Ignored for the verifier
    /// when [`LocalBuilder::verifier`] is set.
    pub fn simulation(mut self, simulation: Simulation) -> Self {
        self.simulation = simulation;
        self
    }
    /// Seeds the matcher's random term, for reproducible matches. Challenge entropy never
    /// comes from this seed (it is always drawn from the operating system).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// How long orders collect bids (default 200 ms; zero is allowed: agents bid in process).
    pub fn bid_window(mut self, window: Duration) -> Self {
        self.bid_window = window;
        self
    }
    /// How many providers to challenge before giving up on an order (default 3).
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.max_attempts = n;
        self
    }
    /// The tenant account (default: derived from the label `spheron.tenant`).
    pub fn tenant(mut self, tenant: AccountId) -> Self {
        self.tenant = tenant;
        self
    }
    /// Deposits this much for the tenant at start.
    pub fn tenant_funds(mut self, amount: Amount) -> Self {
        self.tenant_funds = amount;
        self
    }

    /// Epoch settings: length, window, reward pools per epoch, treasury (default: one-hour
    /// epochs, no reward pools). The genesis is set to the clock's time at `build()`.
    pub fn epochs(mut self, config: EpochConfig) -> Self {
        self.epochs = config;
        self
    }
    /// Caps the total this marketplace's leases may commit (locked while running, paid once
    /// settled; refunds return to the allowance): a rent that would go over it fails with
    /// [`Error::SpendCapExceeded`] before anything is published.
    pub fn spend_cap(mut self, cap: Amount) -> Self {
        self.spend_cap = Some(cap);
        self
    }
    /// Funds the treasury that pays the epoch reward pools.
    pub fn treasury_funds(mut self, amount: Amount) -> Self {
        self.treasury_funds = amount;
        self
    }

    /// Wires everything: registers and stakes the fleet, deposits the tenant's funds.
    pub async fn build(self) -> Result<Marketplace> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("max_attempts", "must be at least 1"));
        }
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let spend = match self.spend_cap {
            Some(cap) => Some(SpendLimit::new(cap.non_zero("spend_cap")?)),
            None => None,
        };
        let stake_decimals = self.token.decimals;
        let ledger = Arc::new(MemoryEscrow::new(self.token));
        let escrow: Arc<dyn Escrow> = ledger.clone();
        let stake_ledger = self.stake.unwrap_or_else(|| ledger.clone());
        let stake: Arc<dyn spheron_core::StakeVault> = stake_ledger.clone();
        let registry = Arc::new(Registry::new());
        let market = Arc::new(LocalMarket::new(clock.clone()));
        let provers = Arc::new(Provers::new());
        for sim in self.fleet.providers {
            let p = &sim.provider;
            if p.stake.0 > 0 {
                Escrow::deposit(&*stake_ledger, p.id, p.stake).await?;
                stake.stake(p.id, p.stake).await?;
            }
            provers.insert(p.id, Arc::new(sim.prover(&self.simulation)));
            market.add_agent(Arc::new(StrategyAgent::new(
                p.id,
                registry.clone(),
                sim.prices.clone(),
                sim.strategy,
            )));
            registry.register(sim.provider);
        }
        if self.tenant_funds.0 > 0 {
            escrow.deposit(self.tenant, self.tenant_funds).await?;
        }
        if self.treasury_funds.0 > 0 {
            escrow
                .deposit(self.epochs.treasury, self.treasury_funds)
                .await?;
        }
        let matcher = crate::defaults::matcher(self.matcher, self.seed, stake_decimals)?;
        let config = FlowConfig {
            bid_window: self.bid_window,
            max_attempts: self.max_attempts,
            // One penalty route: the epoch processor's treasury and bounty share.
            penalties: spheron_core::PenaltyRoute {
                treasury: self.epochs.treasury,
                bounty_bps: self.epochs.verifiers.bounty_bps,
            },
            spend_limit: spend.clone(),
            ..FlowConfig::default()
        };
        let verifier_account = config.verifier_account;
        let tiers = crate::defaults::tiers(self.tiers);
        let verifier = crate::defaults::verifier(self.verifier, &self.simulation)?;
        let parts = Parts {
            market,
            matcher,
            escrow: escrow.clone(),
            stake: stake.clone(),
            launcher: self
                .launcher
                .unwrap_or_else(|| Arc::new(LocalLauncher::new())),
            verifier,
            provers,
            tiers: tiers.clone(),
            registry: registry.clone(),
            clock: clock.clone(),
        };
        let orchestrator = Orchestrator::new(parts, config);
        let epochs = Arc::new(EpochProcessor::new(
            EpochConfig {
                genesis: clock.now(),
                ..self.epochs
            },
            tiers,
            escrow.clone(),
            stake,
            registry.clone(),
        )?);
        // Subscribed before any rent, so the processor sees every event.
        let events = orchestrator.subscribe();
        let epoch_task = tokio::spawn({
            let epochs = epochs.clone();
            let clock = clock.clone();
            async move { epochs.run(events, clock).await }
        });
        Ok(Marketplace {
            orchestrator,
            epochs,
            epoch_task,
            clock,
            escrow,
            ledger: Some(ledger),
            registry,
            tenant: self.tenant,
            verifier_account,
            spend,
        })
    }
}
