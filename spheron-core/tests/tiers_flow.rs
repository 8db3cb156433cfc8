//! The epoch processor fed by a real `Orchestrator` (in-process market, memory escrow,
//! simulated clock; a scripted prover, verifier and launcher): challenge results, the
//! orchestrator's penalty and the settled lease reach the epoch report, and the reward is
//! paid through the escrow.
#![allow(clippy::unwrap_used, missing_docs)]

use async_trait::async_trait;
use spheron_core::proof::{Dtype, PROTOCOL_VERSION};
use spheron_core::test_utils::FixedBidAgent;
use spheron_core::{
    AccountId, Amount, Challenge, ChallengeProver, ChallengeVerifier, Clock, Commitment,
    EpochConfig, EpochProcessor, Error, Escrow, FlowConfig, GeoPoint, GpuModel, GpuRequest,
    Inventory, LaunchSpec, LocalMarket, LogBuffer, LogStream, MemoryEscrow, Opening, Orchestrator,
    Parts, ProofTiming, Provers, Provider, ProviderStats, Registry, ReputationTierPolicy, Result,
    Reveal, SimClock, Timestamp, Token, TrustTier, Verdict, Violation, Workload, WorkloadId,
    WorkloadLauncher, WorkloadStatus,
};
use std::sync::Arc;
use std::time::Duration;

const USD: u128 = 1_000_000;
const HOUR: Duration = Duration::from_secs(3_600);

/// Answers with a commitment, or fails to (a provider that cannot show its GPU).
struct ScriptedProver {
    broken: bool,
}

#[async_trait]
impl ChallengeProver for ScriptedProver {
    async fn commit(&self, c: &Challenge) -> Result<Commitment> {
        if self.broken {
            return Err(Error::Prover("no such GPU".into()));
        }
        Ok(Commitment {
            version: PROTOCOL_VERSION,
            session: c.session,
            root: [7; 32],
            device: None,
            signature: None,
        })
    }

    async fn open(&self, r: &Reveal) -> Result<Opening> {
        Ok(Opening {
            version: PROTOCOL_VERSION,
            session: r.session,
            rows: Vec::new(),
        })
    }
}

/// Passes every exchange that completes.
struct AcceptingVerifier;

impl ChallengeVerifier for AcceptingVerifier {
    fn issue(&self, claimed: GpuModel, entropy: [u8; 32]) -> Challenge {
        Challenge {
            version: PROTOCOL_VERSION,
            session: [1; 16],
            seed: entropy,
            claimed,
            n: 8,
            batch: 1,
            dtype: Dtype::F16,
            deadline_us: 1_000_000,
            provider: None,
        }
    }

    fn reveal(&self, c: &Challenge, _: &Commitment, entropy: [u8; 32]) -> Reveal {
        Reveal {
            version: PROTOCOL_VERSION,
            session: c.session,
            r_seed: entropy,
            samples: Vec::new(),
        }
    }

    fn verify(
        &self,
        _: &Challenge,
        _: &Commitment,
        _: &Reveal,
        _: &Opening,
        _: &ProofTiming,
    ) -> Verdict {
        Verdict::Pass {
            achieved_tflops: None,
        }
    }
}

/// Workloads that run until stopped (the lease expires on the simulated clock).
struct IdleLauncher;

#[async_trait]
impl WorkloadLauncher for IdleLauncher {
    async fn launch(&self, spec: &LaunchSpec, _: &Workload) -> Result<WorkloadId> {
        Ok(WorkloadId(format!("w-{}", spec.lease)))
    }
    async fn status(&self, _: &WorkloadId) -> Result<WorkloadStatus> {
        Ok(WorkloadStatus::Running)
    }
    async fn wait(&self, _: &WorkloadId) -> Result<WorkloadStatus> {
        futures::future::pending().await
    }
    fn logs(&self, _: &WorkloadId) -> Result<LogStream> {
        Ok(LogBuffer::new().stream())
    }
    async fn stop(&self, _: &WorkloadId) -> Result<()> {
        Ok(())
    }
}

fn provider(label: &str) -> Provider {
    Provider {
        id: AccountId::from_label(label),
        name: label.into(),
        endpoint: format!("sim://{label}"),
        region: "eu-west".into(),
        location: GeoPoint {
            lat: 50.1,
            lon: 8.7,
        },
        inventory: Inventory::uniform(GpuModel::H100Sxm, 1, 8),
        stake: Amount(1_000 * USD),
        stats: ProviderStats::default(),
        tier: TrustTier(4),
        banned: false,
    }
}

#[tokio::test]
async fn the_rent_flow_feeds_the_epoch_processor() {
    let clock = SimClock::new(Timestamp(0));
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let registry = Arc::new(Registry::new());
    let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
    let market = Arc::new(LocalMarket::new(dyn_clock.clone()));
    let provers = Arc::new(Provers::new());
    // The cheat bids lower, so it is matched first, fails its challenge, and the flow fails
    // over to the honest provider.
    for (label, price, broken) in [("honest", 2, false), ("cheat", 1, true)] {
        let p = provider(label);
        escrow.deposit(p.id, p.stake).await.unwrap();
        escrow.stake(p.id, p.stake).await.unwrap();
        provers.insert(p.id, Arc::new(ScriptedProver { broken }));
        market.add_agent(Arc::new(FixedBidAgent {
            provider: p.id,
            model: GpuModel::H100Sxm,
            price: Amount(price * USD),
        }));
        registry.register(p);
    }
    let policy = Arc::new(ReputationTierPolicy::default());
    let parts = Parts {
        market,
        matcher: Arc::new(spheron_core::WeightedMatcher::default()),
        escrow: escrow.clone(),
        stake: escrow.clone(),
        launcher: Arc::new(IdleLauncher),
        verifier: Arc::new(AcceptingVerifier),
        provers,
        tiers: policy.clone(),
        registry: registry.clone(),
        clock: dyn_clock.clone(),
    };
    let orchestrator = Orchestrator::new(
        parts,
        FlowConfig {
            bid_window: Duration::ZERO,
            ..FlowConfig::default()
        },
    );
    let config = EpochConfig {
        genesis: clock.now(),
        epoch_len: 2 * HOUR,
        provider_pool: Amount(1_000 * USD),
        ..EpochConfig::default()
    };
    escrow
        .deposit(config.treasury, Amount(10_000 * USD))
        .await
        .unwrap();
    let epochs = Arc::new(
        EpochProcessor::new(
            config,
            policy,
            escrow.clone(),
            escrow.clone(),
            registry.clone(),
        )
        .unwrap(),
    );
    // The wiring the facade does: subscribe before renting, run the processor in a task.
    let events = orchestrator.subscribe();
    let task = tokio::spawn({
        let epochs = epochs.clone();
        let clock = dyn_clock.clone();
        async move { epochs.run(events, clock).await }
    });

    let tenant = AccountId::from_label("tenant");
    escrow.deposit(tenant, Amount(100 * USD)).await.unwrap();
    let request = GpuRequest::builder()
        .gpu("h100-sxm")
        .hours(1)
        .max_price_per_gpu_hour(Amount(3 * USD))
        .build()
        .unwrap();
    let lease = orchestrator
        .rent(tenant, request, Workload::command(["train"]))
        .await
        .unwrap();
    let (honest, cheat) = (
        AccountId::from_label("honest"),
        AccountId::from_label("cheat"),
    );
    let report = lease.report().await.unwrap();
    assert_eq!(report.provider, honest);
    assert!(
        report.tier_reason.starts_with("tier 4: uptime 100.00%"),
        "{}",
        report.tier_reason
    );
    clock.advance(HOUR);
    let done = lease.wait().await;
    assert_eq!(done.settlement.unwrap().paid, Amount(2 * USD));
    // The tenant rates at once; the Settled event may still be on its way.
    epochs
        .record_feedback_for(clock.now(), done.lease, honest, 5)
        .unwrap();

    // The epoch ends; the running processor closes it after the grace period.
    clock.advance(HOUR + Duration::from_secs(10));
    let mut r = None;
    for _ in 0..1_000 {
        r = epochs.last_report();
        if r.is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let r = r.expect("the processor closed epoch 0");
    assert_eq!(r.epoch, 0);
    let row = |id| {
        r.providers
            .iter()
            .find(|p| p.provider == id)
            .unwrap()
            .clone()
    };
    let h = row(honest);
    assert_eq!(h.activity.challenges_answered, 1);
    assert_eq!(h.activity.leases_completed, 1);
    assert_eq!(h.activity.feedback_count, 1);
    assert_eq!(h.gpu_seconds, 3_600);
    // The only provider with GPU-hours takes the whole pool.
    assert_eq!(h.reward, Amount(1_000 * USD));
    let c = row(cheat);
    assert_eq!(c.activity.challenges_failed, 1);
    assert_eq!(c.reward, Amount::ZERO);
    assert_eq!(r.penalties.len(), 1);
    assert_eq!(r.penalties[0].provider, cheat);
    assert_eq!(r.penalties[0].slashed, Amount(100 * USD));
    // The report carries the violation the flow applied (a prover that cannot answer failed
    // its proof) with the bounty it paid, as recorded by the flow.
    assert_eq!(r.penalties[0].violation, Violation::FailedProof);
    assert_eq!(r.penalties[0].bounty, Amount(50 * USD));
    assert_eq!(
        r.penalties[0].reporter,
        Some(FlowConfig::default().verifier_account)
    );
    // Paid through the escrow: the lease and the reward.
    assert_eq!(
        escrow.balance(honest).await.unwrap().available,
        Amount(1_002 * USD)
    );
    assert!(escrow.totals().is_balanced());
    task.abort();
}
