//! Orchestration unit tests with mockall doubles for the parts that fail: a launcher that
//! cannot start anything, a prover whose transport errors.

use spheron::core::test_utils::{MockChallengeProver, MockWorkloadLauncher};
use spheron::gpu::{CpuProver, RecomputeVerifier};
use spheron::{
    AccountId, Amount, BidStrategy, Error, Escrow, FlowConfig, GeoPoint, GpuModel, GpuRequest,
    Inventory, LocalMarket, MemoryEscrow, Orchestrator, Parts, Provers, Provider, ProviderStats,
    Registry, SimClock, StrategyAgent, Token, TrustTier, WeightedMatcher, Workload,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const USD: u128 = 1_000_000;

struct World {
    orchestrator: Orchestrator,
    escrow: Arc<MemoryEscrow>,
    registry: Arc<Registry>,
    tenant: AccountId,
}

async fn world(
    launcher: MockWorkloadLauncher,
    provers: Vec<(&str, u128, Arc<dyn spheron::ChallengeProver>)>,
) -> World {
    world_with(launcher, provers, |e| e).await
}

async fn world_with(
    launcher: MockWorkloadLauncher,
    provers: Vec<(&str, u128, Arc<dyn spheron::ChallengeProver>)>,
    wrap: impl FnOnce(Arc<MemoryEscrow>) -> Arc<dyn Escrow>,
) -> World {
    let clock = SimClock::default();
    let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
    let registry = Arc::new(Registry::new());
    let market = Arc::new(LocalMarket::new(Arc::new(clock.clone())));
    let directory = Arc::new(Provers::new());
    for (name, price, prover) in provers {
        let id = AccountId::from_label(name);
        registry.register(Provider {
            id,
            name: name.into(),
            endpoint: String::new(),
            region: "eu-west".into(),
            location: GeoPoint {
                lat: 52.0,
                lon: 5.0,
            },
            inventory: Inventory::uniform(GpuModel::H100Sxm, 1, 8),
            stake: Amount(1_000 * USD),
            stats: ProviderStats::default(),
            tier: TrustTier(4),
            banned: false,
        });
        escrow
            .deposit(id, Amount(1_000 * USD))
            .await
            .expect("deposit");
        escrow.stake(id, Amount(1_000 * USD)).await.expect("stake");
        market.add_agent(Arc::new(StrategyAgent::new(
            id,
            registry.clone(),
            BTreeMap::from([(GpuModel::H100Sxm, Amount(price))]),
            BidStrategy::ListPrice,
        )));
        directory.insert(id, prover);
    }
    let tenant = AccountId::from_label("tenant");
    escrow
        .deposit(tenant, Amount(50 * USD))
        .await
        .expect("deposit");
    let parts = Parts {
        market,
        matcher: Arc::new(WeightedMatcher::default()),
        escrow: wrap(escrow.clone()),
        stake: escrow.clone(),
        launcher: Arc::new(launcher),
        verifier: Arc::new(RecomputeVerifier::default()),
        provers: directory,
        tiers: Arc::new(spheron::ReputationTierPolicy::default()),
        registry: registry.clone(),
        clock: Arc::new(clock),
    };
    let config = FlowConfig {
        bid_window: Duration::ZERO,
        ..FlowConfig::default()
    };
    World {
        orchestrator: Orchestrator::new(parts, config),
        escrow,
        registry,
        tenant,
    }
}

/// Rents [`request`] for `train` and waits for the lease to settle.
async fn rent_and_wait(w: &World) -> spheron::LeaseReport {
    w.orchestrator
        .rent(w.tenant, request(), Workload::command(["train"]))
        .await
        .expect("rent")
        .wait()
        .await
}

fn request() -> GpuRequest {
    GpuRequest::builder()
        .gpu("h100")
        .count(4)
        .hours(1)
        .max_price_per_gpu_hour(Amount(3 * USD))
        .build()
        .expect("request")
}

#[tokio::test]
async fn launch_failure_refunds_everything_and_frees_capacity() {
    let mut launcher = MockWorkloadLauncher::new();
    launcher
        .expect_launch()
        .times(1)
        .returning(|_, _| Err(Error::Launch("image pull failed".into())));
    let w = world(
        launcher,
        vec![("only", 2 * USD, Arc::new(CpuProver::new(None)))],
    )
    .await;
    let err = w
        .orchestrator
        .rent(w.tenant, request(), Workload::command(["train"]))
        .await
        .expect_err("launch must fail");
    assert!(matches!(err, Error::Launch(ref m) if m.contains("image pull")));
    let b = w.escrow.balance(w.tenant).await.expect("balance");
    assert_eq!((b.available, b.locked), (Amount(50 * USD), Amount(0)));
    assert!(w.escrow.totals().is_balanced());
    let p = w
        .registry
        .get(AccountId::from_label("only"))
        .expect("provider");
    assert_eq!(p.inventory.free(GpuModel::H100Sxm), 8);
    assert_eq!(p.stats.leases_failed, 1);
}

#[tokio::test]
async fn a_launch_that_never_started_is_refunded_and_the_next_bid_runs() {
    let first = AccountId::from_label("first");
    let mut launcher = MockWorkloadLauncher::new();
    launcher.expect_launch().times(2).returning(move |spec, _| {
        if spec.provider == first {
            Err(Error::NotStarted {
                reason: "ImagePullBackOff: no such image".into(),
                after_ms: 600_000,
            })
        } else {
            Ok(spheron::WorkloadId(format!("w-{}", spec.lease)))
        }
    });
    launcher
        .expect_wait()
        .returning(|_| Ok(spheron::WorkloadStatus::Succeeded));
    launcher.expect_stop().returning(|_| Ok(()));
    // "first" bids lower, so it ranks first and its launch is tried first.
    let w = world(
        launcher,
        vec![
            ("first", USD, Arc::new(CpuProver::new(None))),
            ("second", 2 * USD, Arc::new(CpuProver::new(None))),
        ],
    )
    .await;
    let r = rent_and_wait(&w).await;
    assert_eq!(r.provider, AccountId::from_label("second"));
    assert!(r.skipped.iter().any(|s| s.provider == first
        && matches!(&s.reason, spheron::RejectReason::NotStarted(m) if m.contains("ImagePullBackOff"))));
    assert!(r.progress.iter().any(|e| matches!(
        &e.step,
        spheron::Step::NotStarted { provider, refunded, .. }
            if *provider == first && *refunded == Amount(4 * 3 * USD)
    )));
    // The first provider's capacity is back, it is charged a failed lease, and the tenant
    // paid only the second provider's lease.
    let p = w.registry.get(first).expect("provider");
    assert_eq!(p.inventory.free(GpuModel::H100Sxm), 8);
    assert_eq!(p.stats.leases_failed, 1);
    let s = r.settlement.expect("settled");
    let b = w.escrow.balance(w.tenant).await.expect("balance");
    assert_eq!(b.locked, Amount(0));
    assert_eq!(b.available, Amount(50 * USD - s.paid.0));
    assert!(w.escrow.totals().is_balanced());
}

#[tokio::test]
async fn prover_transport_error_fails_the_challenge_and_fails_over() {
    let mut broken = MockChallengeProver::new();
    broken
        .expect_commit()
        .times(1)
        .returning(|_| Err(Error::Prover("connection reset".into())));
    broken.expect_open().never();
    // In process: no transport round trip to measure.
    broken.expect_round_trip().returning(|| Ok(None));
    let mut launcher = MockWorkloadLauncher::new();
    launcher
        .expect_launch()
        .times(1)
        .returning(|spec, _| Ok(spheron::WorkloadId(format!("w-{}", spec.lease.0))));
    launcher
        .expect_wait()
        .returning(|_| Ok(spheron::WorkloadStatus::Succeeded));
    // The rent flow stops the clock when the workload ends, then lets the launcher clean up.
    launcher.expect_stop().times(1).returning(|_| Ok(()));
    let w = world(
        launcher,
        vec![
            ("broken", USD, Arc::new(broken)),
            ("honest", 2 * USD, Arc::new(CpuProver::new(None))),
        ],
    )
    .await;
    let r = rent_and_wait(&w).await;
    assert_eq!(
        r.state,
        spheron::LeaseState::Closed(spheron::CloseReason::Completed)
    );
    assert_eq!(r.provider, AccountId::from_label("honest"));
    let skipped = r
        .skipped
        .iter()
        .find(|s| s.provider == AccountId::from_label("broken"))
        .expect("broken provider skipped");
    assert!(skipped.reason.to_string().contains("connection reset"));
    // Penalised through the escrow: a share of its stake went to the verifier.
    let staked = w
        .escrow
        .balance(AccountId::from_label("broken"))
        .await
        .expect("balance")
        .staked;
    assert!(staked < Amount(1_000 * USD));
    assert!(w.escrow.totals().is_balanced());
}

/// A ledger whose `open_lease` always fails (say, the chain rejected the transaction).
struct OpenLeaseFails(Arc<MemoryEscrow>);

#[async_trait::async_trait]
impl Escrow for OpenLeaseFails {
    fn token(&self) -> Token {
        self.0.token()
    }
    async fn deposit(&self, a: AccountId, x: Amount) -> spheron::Result<()> {
        self.0.deposit(a, x).await
    }
    async fn withdraw(&self, a: AccountId, x: Amount) -> spheron::Result<()> {
        self.0.withdraw(a, x).await
    }
    async fn transfer(&self, f: AccountId, t: AccountId, x: Amount) -> spheron::Result<()> {
        self.0.transfer(f, t, x).await
    }
    async fn lock(&self, o: spheron::OrderId, t: AccountId, x: Amount) -> spheron::Result<()> {
        self.0.lock(o, t, x).await
    }
    async fn release(&self, o: spheron::OrderId) -> spheron::Result<Amount> {
        self.0.release(o).await
    }
    async fn open_lease(&self, _: spheron::LeaseTerms) -> spheron::Result<()> {
        Err(Error::Backend {
            backend: "test",
            message: "transaction reverted".into(),
        })
    }
    async fn accrued(
        &self,
        l: spheron::LeaseId,
        at: spheron::Timestamp,
    ) -> spheron::Result<Amount> {
        self.0.accrued(l, at).await
    }
    async fn settle(
        &self,
        l: spheron::LeaseId,
        at: spheron::Timestamp,
    ) -> spheron::Result<spheron::Settlement> {
        self.0.settle(l, at).await
    }
    async fn stake(&self, p: AccountId, x: Amount) -> spheron::Result<()> {
        self.0.stake(p, x).await
    }
    async fn slash(&self, p: AccountId, x: Amount, b: AccountId) -> spheron::Result<Amount> {
        self.0.slash(p, x, b).await
    }
    async fn balance(&self, a: AccountId) -> spheron::Result<spheron::Balance> {
        self.0.balance(a).await
    }
}

#[tokio::test]
async fn a_lease_the_escrow_refuses_stops_the_workload_and_returns_everything() {
    let mut launcher = MockWorkloadLauncher::new();
    launcher
        .expect_launch()
        .times(1)
        .returning(|spec, _| Ok(spheron::WorkloadId(format!("w-{}", spec.lease.0))));
    // The workload that already started must be stopped: it would otherwise run unpaid.
    launcher.expect_stop().times(1).returning(|_| Ok(()));
    let w = world_with(
        launcher,
        vec![("only", 2 * USD, Arc::new(CpuProver::new(None)))],
        |e| Arc::new(OpenLeaseFails(e)),
    )
    .await;
    let err = w
        .orchestrator
        .rent(w.tenant, request(), Workload::command(["train"]))
        .await
        .expect_err("open_lease must fail");
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    let b = w.escrow.balance(w.tenant).await.expect("balance");
    assert_eq!((b.available, b.locked), (Amount(50 * USD), Amount(0)));
    assert!(w.escrow.totals().is_balanced());
    let p = w
        .registry
        .get(AccountId::from_label("only"))
        .expect("provider");
    assert_eq!(p.inventory.free(GpuModel::H100Sxm), 8);
}
