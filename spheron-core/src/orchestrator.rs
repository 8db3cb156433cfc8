//! The rent flow, written against the plug points only:
//! publish → bids → rank → challenge (failover on failure) → lock → launch → run → settle.

use crate::clock::{Clock, Timestamp};
use crate::escrow::{Escrow, LeaseTerms, Settlement};
use crate::events::{ProgressEvent, Step};
use crate::gpu::GpuModel;
use crate::ids::{AccountId, LeaseId, OrderId, ProviderId};
use crate::launcher::{
    LaunchSpec, LogStream, Workload, WorkloadId, WorkloadLauncher, WorkloadStatus,
};
use crate::lease::{CloseReason, LeaseEvent, LeaseState};
use crate::market::Market;
use crate::matching::{Matcher, Ranked, RejectReason, Rejection};
use crate::money::Amount;
use crate::order::{Bid, Candidate, Order};
use crate::proof::{ChallengeProver, ChallengeVerifier, ProofReport, run_challenge};
use crate::provider::{Provider, TrustTier};
use crate::registry::Registry;
use crate::request::GpuRequest;
use crate::tier::{
    Applied, Charge, PenaltyRecord, PenaltyRoute, TierPolicy, Violation, apply_penalty,
};
use crate::{Error, Result};
use futures::stream::BoxStream;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Finds the prover that answers challenges for a provider.
pub trait ProverDirectory: Send + Sync {
    /// The provider's prover, if it can be reached.
    fn prover(&self, provider: ProviderId) -> Option<Arc<dyn ChallengeProver>>;
}

/// A directory backed by a map, filled at start-up.
#[derive(Default)]
pub struct Provers {
    map: RwLock<BTreeMap<ProviderId, Arc<dyn ChallengeProver>>>,
}

impl Provers {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }
    /// Registers `provider`'s prover.
    pub fn insert(&self, provider: ProviderId, prover: Arc<dyn ChallengeProver>) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider, prover);
    }
}

impl ProverDirectory for Provers {
    fn prover(&self, provider: ProviderId) -> Option<Arc<dyn ChallengeProver>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&provider)
            .cloned()
    }
}

/// Everything the flow plugs together.
#[derive(Clone)]
pub struct Parts {
    /// Where orders and bids meet.
    pub market: Arc<dyn Market>,
    /// Who wins.
    pub matcher: Arc<dyn Matcher>,
    /// Where money waits.
    pub escrow: Arc<dyn Escrow>,
    /// Where provider stake is held and slashed (apart from payment).
    pub stake: Arc<dyn crate::stake::StakeVault>,
    /// Where workloads run.
    pub launcher: Arc<dyn WorkloadLauncher>,
    /// Who checks GPUs.
    pub verifier: Arc<dyn ChallengeVerifier>,
    /// How to reach provers.
    pub provers: Arc<dyn ProverDirectory>,
    /// Tiers and penalties.
    pub tiers: Arc<dyn TierPolicy>,
    /// The provider registry.
    pub registry: Arc<Registry>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Flow settings.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// How long orders collect bids.
    pub bid_window: Duration,
    /// How many providers to challenge before giving up on an order.
    pub max_attempts: usize,
    /// The verifier's account: the reporter of a challenge this flow runs, paid the
    /// bounty share of the slash.
    pub verifier_account: AccountId,
    /// Where slashed stake goes (bounty share and treasury): the same route as the
    /// [`EpochProcessor`](crate::EpochProcessor)'s, so a violation pays the same whoever
    /// caught it.
    pub penalties: PenaltyRoute,
    /// The first order id this orchestrator assigns (then +1 per order). Markets that outlive
    /// one process (a chain) need ids that no earlier run used.
    pub first_order_id: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            bid_window: Duration::from_secs(2),
            max_attempts: 3,
            verifier_account: AccountId::from_label("spheron.verifier"),
            penalties: PenaltyRoute::default(),
            first_order_id: 1,
        }
    }
}

/// Everything known about a lease, for the tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// The lease.
    pub lease: LeaseId,
    /// Its order.
    pub order: OrderId,
    /// The tenant.
    pub tenant: AccountId,
    /// The chosen provider.
    pub provider: ProviderId,
    /// Provider name.
    pub provider_name: String,
    /// Provider region.
    pub region: String,
    /// Provider tier when chosen.
    pub tier: TrustTier,
    /// Why it holds that tier.
    pub tier_reason: String,
    /// GPU model.
    pub model: GpuModel,
    /// GPUs.
    pub gpus: u32,
    /// Price per GPU-hour.
    pub price_per_gpu_hour: Amount,
    /// Budget locked.
    pub budget: Amount,
    /// The winning candidate with its score breakdown.
    pub choice: Ranked,
    /// Providers skipped (by filters or failed challenges) and why.
    pub skipped: Vec<Rejection>,
    /// The proof-of-GPU result of the chosen provider.
    pub proof: ProofReport,
    /// State now.
    pub state: LeaseState,
    /// When cost started accruing.
    pub started_at: Timestamp,
    /// When it closed.
    pub ended_at: Option<Timestamp>,
    /// Cost so far (final once closed).
    pub cost: Amount,
    /// The settlement, once closed.
    pub settlement: Option<Settlement>,
    /// Every progress event of this rent.
    pub progress: Vec<ProgressEvent>,
}

impl LeaseReport {
    /// Refund, once settled.
    pub fn refunded(&self) -> Option<Amount> {
        self.settlement.map(|s| s.refunded)
    }
}

struct LeaseShared {
    report: Mutex<LeaseReport>,
    stop_tx: watch::Sender<bool>,
    closed_rx: watch::Receiver<bool>,
    workload: WorkloadId,
    ends_at: Timestamp,
    parts: Parts,
}

/// What a [`LeaseHandle`] drives: the embedded flow's supervisor here, or a network client
/// that reads the lease from the chain and the provider's gateway (`spheron-node`).
#[async_trait::async_trait]
pub trait LeaseControl: Send + Sync {
    /// The report as last recorded (no I/O).
    fn snapshot(&self) -> LeaseReport;
    /// The workload's output from the beginning; ends when the workload ends.
    fn logs(&self) -> Result<LogStream>;
    /// The report now, with the cost accrued so far while the lease runs; an error when the
    /// cost cannot be read (never a guessed cost).
    async fn report(&self) -> Result<LeaseReport>;
    /// Waits until the lease is closed and settled; returns the final report.
    async fn wait(&self) -> LeaseReport;
    /// Stops the lease, waits for settlement and returns the final report; a lease that is
    /// already closed (or stopping) gives [`Error::LeaseClosed`].
    async fn stop(&self) -> Result<LeaseReport>;
}

/// A handle on a running lease. Dropping it does not stop the lease.
#[derive(Clone)]
pub struct LeaseHandle {
    inner: Arc<dyn LeaseControl>,
}

impl std::fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHandle")
            .field("lease", &self.id())
            .finish_non_exhaustive()
    }
}

impl LeaseHandle {
    /// A handle driving `control`.
    pub fn new(control: Arc<dyn LeaseControl>) -> Self {
        LeaseHandle { inner: control }
    }

    /// The lease id.
    pub fn id(&self) -> LeaseId {
        self.inner.snapshot().lease
    }

    /// The state now.
    pub fn state(&self) -> LeaseState {
        self.inner.snapshot().state
    }

    /// The workload's output from the beginning; ends when the workload ends.
    pub fn logs(&self) -> Result<LogStream> {
        self.inner.logs()
    }

    /// The report as last recorded, without I/O (the cost is final once closed, zero
    /// before).
    pub fn snapshot(&self) -> LeaseReport {
        self.inner.snapshot()
    }

    /// The report now, with the cost accrued so far while the lease runs.
    ///
    /// Errors: whatever the escrow (or chain) says when the accrued cost cannot be read; the
    /// cost is never guessed.
    pub async fn report(&self) -> Result<LeaseReport> {
        self.inner.report().await
    }

    /// Waits until the lease is closed and settled; returns the final report.
    pub async fn wait(&self) -> LeaseReport {
        self.inner.wait().await
    }

    /// Stops the lease, waits for settlement and returns the final report.
    /// A lease that is already closed gives [`Error::LeaseClosed`].
    pub async fn stop(&self) -> Result<LeaseReport> {
        self.inner.stop().await
    }
}

#[async_trait::async_trait]
impl LeaseControl for LeaseShared {
    fn snapshot(&self) -> LeaseReport {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn logs(&self) -> Result<LogStream> {
        self.parts.launcher.logs(&self.workload)
    }

    async fn report(&self) -> Result<LeaseReport> {
        let mut r = self.snapshot();
        if !r.state.is_closed() {
            let now = self.parts.clock.now().min(self.ends_at);
            match self.parts.escrow.accrued(r.lease, now).await {
                Ok(c) => r.cost = c,
                // Settled between the snapshot and the read: the final report is recorded.
                Err(_) if self.snapshot().state.is_closed() => return Ok(self.snapshot()),
                Err(e) => return Err(e),
            }
        }
        Ok(r)
    }

    async fn wait(&self) -> LeaseReport {
        let mut rx = self.closed_rx.clone();
        let _ = rx.wait_for(|c| *c).await;
        self.snapshot()
    }

    async fn stop(&self) -> Result<LeaseReport> {
        if *self.closed_rx.borrow() || *self.stop_tx.borrow() {
            return Err(Error::LeaseClosed(self.snapshot().lease));
        }
        self.stop_tx.send_replace(true);
        Ok(self.wait().await)
    }
}

/// Drives orders through the plug points.
pub struct Orchestrator {
    parts: Parts,
    config: FlowConfig,
    next_id: AtomicU64,
    rng: Mutex<rand_chacha::ChaCha20Rng>,
    events: broadcast::Sender<ProgressEvent>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Wires `parts` with `config`.
    pub fn new(parts: Parts, config: FlowConfig) -> Self {
        let first_id = config.first_order_id.max(1);
        // Challenge entropy always comes from the operating system, never from a configured
        // seed (the matcher's round seed is public to every operator).
        let rng = rand_chacha::ChaCha20Rng::from_os_rng();
        let (events, _) = broadcast::channel(4096);
        Orchestrator {
            parts,
            config,
            next_id: AtomicU64::new(first_id),
            rng: Mutex::new(rng),
            events,
        }
    }

    /// The plugged parts.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Progress events of every rent from now on.
    pub fn subscribe(&self) -> BoxStream<'static, ProgressEvent> {
        let rx = self.events.subscribe();
        crate::events::progress_stream(rx)
    }

    fn entropy(&self) -> [[u8; 32]; 2] {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = [[0u8; 32]; 2];
        for e in &mut out {
            rng.fill_bytes(e);
        }
        out
    }

    /// Rents GPUs for `tenant`: runs the whole flow and returns once the workload runs.
    pub async fn rent(
        &self,
        tenant: AccountId,
        request: GpuRequest,
        workload: Workload,
    ) -> Result<LeaseHandle> {
        workload.validate()?;
        let p = &self.parts;
        let budget = request.budget()?;
        let available = p.escrow.balance(tenant).await?.available;
        if available < budget {
            return Err(Error::InsufficientFunds {
                needed: budget,
                available,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = p.clock.now();
        let order = Order {
            id: OrderId(id),
            tenant,
            request,
            created_at: now,
            bid_deadline: now.add(self.config.bid_window),
        };
        let progress = Arc::new(Mutex::new(Vec::new()));
        let emit = {
            let progress = progress.clone();
            let tx = self.events.clone();
            let clock = p.clock.clone();
            let order = order.id;
            move |step: Step| {
                let e = ProgressEvent {
                    at: clock.now(),
                    order,
                    step,
                };
                tracing::info!(%order, step = %e.step, "rent");
                progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.clone());
                let _ = tx.send(e);
            }
        };

        p.market.publish(order.clone()).await?;
        emit(Step::Published { budget });
        let bids = p.market.close_bidding(order.id).await?;
        emit(Step::BidsIn { count: bids.len() });

        let mut skipped = Vec::new();
        let mut candidates = Vec::new();
        for bid in bids {
            match p.registry.get(bid.provider) {
                Ok(prov) if prov.banned => skipped.push(Rejection {
                    provider: bid.provider,
                    reason: RejectReason::Banned,
                }),
                Ok(prov) => candidates.push(Candidate {
                    profile: prov.profile(bid.model),
                    bid,
                }),
                Err(_) => skipped.push(Rejection {
                    provider: bid.provider,
                    reason: RejectReason::Other("not registered".into()),
                }),
            }
        }
        // Providers that did not bid are explained too, so "no match" is never opaque.
        let absent: Vec<Provider> = p
            .registry
            .all()
            .into_iter()
            .filter(|prov| {
                !candidates.iter().any(|c| c.profile.id == prov.id)
                    && !skipped.iter().any(|s: &Rejection| s.provider == prov.id)
            })
            .collect();
        skipped.extend(explain_absent(p.matcher.as_ref(), &order, &absent)?);
        let ranking = p.matcher.rank(&order, &candidates)?;
        skipped.extend(ranking.rejected.iter().cloned());

        let mut chosen = None;
        for (i, ranked) in ranking.ranked.iter().enumerate() {
            if i >= self.config.max_attempts {
                skipped.push(Rejection {
                    provider: ranked.provider(),
                    reason: RejectReason::Other("not tried: attempt limit reached".into()),
                });
                continue;
            }
            let provider = ranked.provider();
            emit(Step::Matched {
                provider,
                score: ranked.score,
                attempt: i + 1,
            });
            let model = ranked.candidate.bid.model;
            emit(Step::Verifying {
                provider,
                claimed: model,
            });
            let Some(prover) = p.provers.prover(provider) else {
                skipped.push(Rejection {
                    provider,
                    reason: RejectReason::Other("no prover reachable".into()),
                });
                continue;
            };
            let proof = run_challenge(
                p.verifier.as_ref(),
                prover.as_ref(),
                provider,
                model,
                self.entropy(),
            )
            .await;
            if proof.verdict.passed() {
                p.registry
                    .update(provider, |pr| pr.stats.challenges_answered += 1)?;
                emit(Step::Verified {
                    provider,
                    verdict: proof.verdict.clone(),
                });
                match p.registry.reserve(provider, model, order.request.count) {
                    Ok(node) => {
                        chosen = Some((ranked.clone(), proof, node));
                        break;
                    }
                    Err(_) => {
                        skipped.push(Rejection {
                            provider,
                            reason: RejectReason::CapacityTaken,
                        });
                        continue;
                    }
                }
            }
            // Wrong products, forged paths and impossible speeds are fraud; slow, late or
            // malformed answers are a failed proof.
            let (reason, violation) = match &proof.verdict {
                crate::proof::Verdict::Fail(r) => (r.to_string(), Violation::for_failure(r)),
                crate::proof::Verdict::Pass { .. } => (String::new(), Violation::FailedProof),
            };
            let record = self.penalise(provider, violation, &reason).await?;
            emit(Step::ChallengeFailed {
                provider,
                reason: reason.clone(),
                slashed: record.slashed,
                penalty: Some(Box::new(record)),
            });
            skipped.push(Rejection {
                provider,
                reason: RejectReason::ChallengeFailed(reason),
            });
        }

        let Some((choice, proof, node)) = chosen else {
            emit(Step::NoMatch {
                rejected: skipped.clone(),
            });
            let _ = p.market.close_order(order.id).await;
            return Err(Error::NoMatch {
                order: order.id,
                rejected: skipped,
            });
        };
        let provider = choice.provider();
        let model = choice.candidate.bid.model;
        let count = order.request.count;
        let release_capacity = || {
            let _ = p.registry.release(provider, &node, count);
        };

        if let Err(e) = p.escrow.lock(order.id, tenant, budget).await {
            release_capacity();
            let _ = p.market.close_order(order.id).await;
            return Err(e);
        }
        emit(Step::EscrowLocked { amount: budget });
        let lease = LeaseId(id);
        let mut state = LeaseState::Open.apply(LeaseEvent::Match)?;
        // From here on every failure hands back what was taken: capacity, the lock, the order.
        let unwind = |workload: Option<WorkloadId>| async move {
            if let Some(w) = workload {
                stop_quietly(p.launcher.as_ref(), &w).await;
            }
            release_capacity();
            if let Err(e) = p.escrow.release(order.id).await {
                tracing::error!(order = %order.id, error = %e, "releasing the lock failed");
            }
            let _ = p.market.close_order(order.id).await;
        };
        if let Err(e) = p.market.record_match(order.id, provider, lease).await {
            unwind(None).await;
            return Err(e);
        }

        emit(Step::Launching { lease });
        let spec = LaunchSpec {
            lease,
            provider,
            model,
            gpus: count,
            node: Some(node.clone()),
            ends_at: p
                .clock
                .now()
                .add(Duration::from_secs(order.request.duration_secs)),
        };
        let workload_id = match p.launcher.launch(&spec, &workload).await {
            Ok(w) => w,
            Err(e) => {
                // Nothing ran: the tenant gets everything back, the provider a failed lease.
                unwind(None).await;
                let _ = p
                    .registry
                    .update(provider, |pr| pr.stats.leases_failed += 1);
                return Err(e);
            }
        };
        let started_at = p.clock.now();
        let opened = p
            .escrow
            .open_lease(LeaseTerms {
                lease,
                order: order.id,
                provider,
                price_per_gpu_hour: choice.candidate.bid.price_per_gpu_hour,
                gpus: count,
                start: started_at,
            })
            .await;
        if let Err(e) = opened {
            // No lease means no payment: the workload must not run unpaid.
            unwind(Some(workload_id)).await;
            return Err(e);
        }
        state = state.apply(LeaseEvent::Activate)?;
        emit(Step::Running { lease });

        let prov = p.registry.get(provider)?;
        let tier_reason = p.tiers.explain(prov.tier, &prov.stats);
        let report = LeaseReport {
            lease,
            order: order.id,
            tenant,
            provider,
            provider_name: prov.name.clone(),
            region: prov.region.clone(),
            tier: prov.tier,
            tier_reason,
            model,
            gpus: count,
            price_per_gpu_hour: choice.candidate.bid.price_per_gpu_hour,
            budget,
            choice,
            skipped,
            proof,
            state,
            started_at,
            ended_at: None,
            cost: Amount::ZERO,
            settlement: None,
            progress: progress.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(LeaseShared {
            report: Mutex::new(report),
            stop_tx,
            closed_rx,
            workload: workload_id,
            ends_at: spec.ends_at,
            parts: p.clone(),
        });
        tokio::spawn(supervise(
            shared.clone(),
            stop_rx,
            closed_tx,
            spec.ends_at,
            node,
            progress,
            emit,
        ));
        Ok(LeaseHandle::new(shared))
    }

    /// Charges `violation` through the one penalty path; returns what was applied.
    async fn penalise(
        &self,
        provider: ProviderId,
        violation: Violation,
        reason: &str,
    ) -> Result<PenaltyRecord> {
        let p = &self.parts;
        let Applied { record, failure } = apply_penalty(
            p.stake.as_ref(),
            &p.registry,
            p.tiers.as_ref(),
            self.config.penalties,
            Charge {
                at: p.clock.now(),
                provider,
                violation,
                reporter: Some(self.config.verifier_account),
                reason: reason.to_string(),
            },
        )
        .await?;
        if let Some(e) = failure {
            tracing::error!(provider = %provider.short(), error = %e, "slashing to the treasury failed");
        }
        Ok(record)
    }
}

async fn supervise(
    shared: Arc<LeaseShared>,
    mut stop_rx: watch::Receiver<bool>,
    closed_tx: watch::Sender<bool>,
    ends_at: Timestamp,
    node: String,
    progress: Arc<Mutex<Vec<ProgressEvent>>>,
    emit: impl Fn(Step),
) {
    let p = &shared.parts;
    let wid = shared.workload.clone();
    enum Ending {
        Stop,
        Expire,
        Exit(Result<WorkloadStatus>),
    }
    let ending = tokio::select! {
        biased;
        _ = stop_rx.wait_for(|s| *s) => Ending::Stop,
        _ = p.clock.sleep_until(ends_at) => Ending::Expire,
        status = p.launcher.wait(&wid) => Ending::Exit(status),
    };
    // The clock stops here, before any teardown (log drain, object deletion) that the
    // tenant must not pay for; never bill past the paid duration.
    let at = p.clock.now().min(ends_at);
    // Every ending tears the workload down (a finished one finishes its clean-up).
    stop_quietly(p.launcher.as_ref(), &wid).await;
    let reason = match ending {
        Ending::Stop => CloseReason::TenantStopped,
        Ending::Expire => CloseReason::Expired,
        Ending::Exit(Ok(WorkloadStatus::Succeeded)) => CloseReason::Completed,
        Ending::Exit(Ok(WorkloadStatus::Failed { exit_code })) => {
            CloseReason::WorkloadFailed { exit_code }
        }
        Ending::Exit(Ok(WorkloadStatus::Stopped)) => CloseReason::TenantStopped,
        Ending::Exit(Ok(other)) => CloseReason::ProviderFailed {
            detail: format!("workload ended in state {other:?}"),
        },
        Ending::Exit(Err(e)) => CloseReason::ProviderFailed {
            detail: e.to_string(),
        },
    };
    let (lease, provider, gpus) = {
        let r = shared.report.lock().unwrap_or_else(|p| p.into_inner());
        (r.lease, r.provider, r.gpus)
    };
    let settlement = p.escrow.settle(lease, at).await;
    let _ = p.registry.release(provider, &node, gpus);
    let fault = reason.is_provider_fault();
    let _ = p.registry.update(provider, |pr| {
        if fault {
            pr.stats.leases_failed += 1;
        } else {
            pr.stats.leases_completed += 1;
        }
    });
    let order = shared
        .report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .order;
    let _ = p.market.close_order(order).await;
    match &settlement {
        Ok(s) => emit(Step::Settled {
            lease,
            provider,
            gpu_seconds: s.seconds.saturating_mul(u64::from(gpus)),
            reason: reason.clone(),
            paid: s.paid,
            refunded: s.refunded,
        }),
        Err(e) => tracing::error!(%lease, error = %e, "settlement failed"),
    }
    {
        let mut r = shared.report.lock().unwrap_or_else(|p| p.into_inner());
        r.state = r
            .state
            .apply(LeaseEvent::Close(reason.clone()))
            .unwrap_or(LeaseState::Closed(reason));
        r.ended_at = Some(at);
        if let Ok(s) = settlement {
            r.cost = s.paid;
            r.settlement = Some(s);
        }
        r.progress = progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
    }
    closed_tx.send_replace(true);
}

/// Why each registered provider in `absent` (none of which bid) would not serve `order`, in
/// the matcher's own words: each is put to the matcher with a bid at the ceiling on every
/// model it lists, and the matcher's rejection is its reason; one the matcher would take
/// simply did not bid.
fn explain_absent(
    matcher: &dyn Matcher,
    order: &Order,
    absent: &[Provider],
) -> Result<Vec<Rejection>> {
    let mut out = Vec::with_capacity(absent.len());
    let mut asked = Vec::new();
    let mut hypothetical = Vec::new();
    for prov in absent {
        if prov.banned {
            out.push(Rejection {
                provider: prov.id,
                reason: RejectReason::Banned,
            });
            continue;
        }
        let models = prov.inventory.models();
        if models.is_empty() {
            out.push(Rejection {
                provider: prov.id,
                reason: RejectReason::Other("no GPUs listed".into()),
            });
            continue;
        }
        asked.push(prov.id);
        // Accepted models first, so the reason given is about a model the order wants.
        let (wanted, other): (Vec<GpuModel>, Vec<GpuModel>) = models
            .into_iter()
            .partition(|m| order.request.accepts_model(*m));
        for model in wanted.into_iter().chain(other) {
            hypothetical.push(Candidate {
                profile: prov.profile(model),
                bid: Bid {
                    order: order.id,
                    provider: prov.id,
                    model,
                    price_per_gpu_hour: order.request.max_price_per_gpu_hour,
                    placed_at: order.created_at,
                },
            });
        }
    }
    if asked.is_empty() {
        return Ok(out);
    }
    let ranking = matcher.rank(order, &hypothetical)?;
    for id in asked {
        let reason = if ranking.ranked.iter().any(|r| r.provider() == id) {
            RejectReason::Other("did not bid (price above the ceiling or no answer)".into())
        } else {
            let mine: Vec<&Rejection> = ranking
                .rejected
                .iter()
                .filter(|r| r.provider == id)
                .collect();
            mine.iter()
                .find(|r| !matches!(r.reason, RejectReason::ModelNotAccepted(_)))
                .or(mine.first())
                .map_or_else(
                    || RejectReason::Other("did not bid".into()),
                    |r| r.reason.clone(),
                )
        };
        out.push(Rejection {
            provider: id,
            reason,
        });
    }
    Ok(out)
}

async fn stop_quietly(launcher: &dyn WorkloadLauncher, id: &WorkloadId) {
    if let Err(e) = launcher.stop(id).await {
        tracing::warn!(workload = %id, error = %e, "stopping the workload failed");
    }
}
