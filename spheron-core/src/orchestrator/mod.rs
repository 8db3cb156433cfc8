//! The rent flow, written against the plug points only, as named steps, each a function:
//!
//! 1. *publish and collect*: the order goes out, the bid window closes, the bids come back;
//! 2. *rank*: bidders the registry knows are ranked by the [`Matcher`], which also explains
//!    every registered provider that did not bid;
//! 3. for each ranked bid, at most `max_attempts`: *verify* (a proof-of-GPU challenge, then
//!    capacity reserved), *lock* the budget, *launch* (match recorded, workload started,
//!    lease opened). A failed challenge penalises the provider and takes the next bid; a
//!    launch the launcher never started ([`Error::NotStarted`]) refunds the lock and takes
//!    the next bid; any other failure hands everything back and fails the rent;
//! 4. *supervise* until the tenant stops, the paid time ends, the workload ends, the
//!    lease's spend cap is used or the idle detector fires, then *settle* (`supervise.rs`).
//!
//! Cost control ([`crate::cost`]): the lock is the budget capped at the request's
//! `max_spend`; a marketplace [`SpendLimit`] (in [`FlowConfig::spend_limit`]) is committed
//! before the order is published and keeps only what the lease paid.
//!
//! An order that fails at any step is closed on the market.

mod lease_control;
mod report;
mod supervise;

pub use crate::prover_directory::{ProverDirectory, Provers};
pub use lease_control::{LeaseControl, LeaseHandle};
pub use report::LeaseReport;

use crate::clock::{Clock, Timestamp};
use crate::cost::{SpendCommitment, SpendLimit};
use crate::entropy::{EntropySource, OsEntropy};
use crate::escrow::{Escrow, LeaseTerms};
use crate::events::{ProgressEvent, Step};
use crate::gpu::GpuModel;
use crate::ids::{AccountId, LeaseId, OrderId, ProviderId};
use crate::launcher::{LaunchSpec, Workload, WorkloadId, WorkloadLauncher};
use crate::lease::{LeaseEvent, LeaseState};
use crate::market::Market;
use crate::matching::{Matcher, Ranked, Ranking, RejectReason, Rejection};
use crate::money::Amount;
use crate::order::{Bid, Candidate, Order};
use crate::proof::{ChallengeVerifier, ProofReport, Verdict, run_challenge};
use crate::provider::{Provider, TrustTier};
use crate::registry::Registry;
use crate::request::GpuRequest;
use crate::tier::{
    Applied, Charge, PenaltyRecord, PenaltyRoute, TierPolicy, Violation, apply_penalty,
};
use crate::{Error, Result};
use futures::stream::BoxStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use supervise::{LeaseShared, stop_quietly};
use tokio::sync::{broadcast, watch};

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
    /// A spend cap over every lease this orchestrator rents (none by default).
    pub spend_limit: Option<Arc<SpendLimit>>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            bid_window: Duration::from_secs(2),
            max_attempts: 3,
            verifier_account: AccountId::from_label("spheron.verifier"),
            penalties: PenaltyRoute::default(),
            first_order_id: 1,
            spend_limit: None,
        }
    }
}

/// Drives orders through the plug points.
pub struct Orchestrator {
    parts: Parts,
    config: FlowConfig,
    next_id: AtomicU64,
    entropy: Arc<dyn EntropySource>,
    events: broadcast::Sender<ProgressEvent>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The progress log of one rent: every event is kept for the report and broadcast to
/// subscribers.
#[derive(Clone)]
pub(crate) struct Emitter {
    order: OrderId,
    progress: Arc<Mutex<Vec<ProgressEvent>>>,
    tx: broadcast::Sender<ProgressEvent>,
    clock: Arc<dyn Clock>,
}

impl Emitter {
    pub(crate) fn emit(&self, step: Step) {
        let e = ProgressEvent {
            at: self.clock.now(),
            order: self.order,
            step,
        };
        tracing::info!(order = %self.order, step = %e.step, "rent");
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e.clone());
        // No subscriber is fine.
        let _ = self.tx.send(e);
    }

    pub(crate) fn progress(&self) -> Vec<ProgressEvent> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A bid that passed its challenge, with capacity reserved on `node`.
struct Verified {
    choice: Ranked,
    proof: ProofReport,
    node: String,
}

/// A workload that runs under an open lease.
struct Launched {
    workload: WorkloadId,
    started_at: Timestamp,
    ends_at: Timestamp,
    state: LeaseState,
}

/// Why *launch* did not give a running workload.
enum LaunchFailure {
    /// The launcher never started it: the caller refunds and takes the next bid.
    NotStarted(String),
    /// Anything else: everything was handed back; the rent fails with this error.
    Fatal(Error),
}

impl Orchestrator {
    /// Wires `parts` with `config`; challenge entropy comes from the operating system.
    pub fn new(parts: Parts, config: FlowConfig) -> Self {
        Self::with_entropy(parts, config, Arc::new(OsEntropy))
    }

    /// Wires `parts` with `config` and an entropy source for challenges. There is no seeded
    /// source: challenge entropy must be unpredictable to provers, and a configured seed
    /// (like the matcher's public round seed) is not.
    pub fn with_entropy(parts: Parts, config: FlowConfig, entropy: Arc<dyn EntropySource>) -> Self {
        let first_id = config.first_order_id.max(1);
        let (events, _) = broadcast::channel(4096);
        Orchestrator {
            parts,
            config,
            next_id: AtomicU64::new(first_id),
            entropy,
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

    fn challenge_entropy(&self) -> Result<[[u8; 32]; 2]> {
        let mut out = [[0u8; 32]; 2];
        for e in &mut out {
            self.entropy.fill(e)?;
        }
        Ok(out)
    }

    /// Rents GPUs for `tenant`: runs the whole flow and returns once the workload runs.
    pub async fn rent(
        &self,
        tenant: AccountId,
        request: GpuRequest,
        workload: Workload,
    ) -> Result<LeaseHandle> {
        workload.validate()?;
        // The marketplace cap is checked before anything is published.
        let commitment = match &self.config.spend_limit {
            Some(limit) => Some(limit.commit(request.locked_amount()?)?),
            None => None,
        };
        let order = self.open_order(tenant, request).await?;
        let emit = Emitter {
            order: order.id,
            progress: Arc::new(Mutex::new(Vec::new())),
            tx: self.events.clone(),
            clock: self.parts.clock.clone(),
        };
        let result = self.drive(&order, &workload, &emit, commitment).await;
        if result.is_err()
            && let Err(e) = self.parts.market.close_order(order.id).await
        {
            tracing::debug!(order = %order.id, error = %e, "closing the failed order");
        }
        result
    }

    /// The order for `request`, once the tenant's available funds cover its budget.
    async fn open_order(&self, tenant: AccountId, request: GpuRequest) -> Result<Order> {
        let budget = request.locked_amount()?;
        let available = self.parts.escrow.balance(tenant).await?.available;
        if available < budget {
            return Err(Error::InsufficientFunds {
                needed: budget,
                available,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.parts.clock.now();
        Ok(Order {
            id: OrderId(id),
            tenant,
            request,
            created_at: now,
            bid_deadline: now.add(self.config.bid_window),
        })
    }

    /// Steps 1 to 4 for a published order; the caller closes the order on error.
    async fn drive(
        &self,
        order: &Order,
        workload: &Workload,
        emit: &Emitter,
        commitment: Option<SpendCommitment>,
    ) -> Result<LeaseHandle> {
        let budget = order.request.locked_amount()?;
        let bids = self.publish_and_collect(order, budget, emit).await?;
        let (ranking, mut skipped) = self.rank(order, bids)?;
        for (i, ranked) in ranking.ranked.iter().enumerate() {
            if i >= self.config.max_attempts {
                skipped.push(Rejection {
                    provider: ranked.provider(),
                    reason: RejectReason::Other("not tried: attempt limit reached".into()),
                });
                continue;
            }
            let Some(verified) = self
                .verify(order, ranked, i + 1, emit, &mut skipped)
                .await?
            else {
                continue;
            };
            self.lock(order, budget, &verified, emit).await?;
            match self.launch(order, &verified, workload, emit).await {
                Ok(launched) => {
                    return Ok(self
                        .supervise(order, budget, verified, launched, skipped, emit, commitment));
                }
                Err(LaunchFailure::NotStarted(reason)) => {
                    self.refund(order, &verified, reason, emit, &mut skipped)
                        .await?;
                }
                Err(LaunchFailure::Fatal(e)) => return Err(e),
            }
        }
        emit.emit(Step::NoMatch {
            rejected: skipped.clone(),
        });
        Err(Error::NoMatch {
            order: order.id,
            rejected: skipped,
        })
    }

    /// Step 1, *publish and collect*: publishes the order and returns the bids once its
    /// window closes.
    async fn publish_and_collect(
        &self,
        order: &Order,
        budget: Amount,
        emit: &Emitter,
    ) -> Result<Vec<Bid>> {
        self.parts.market.publish(order.clone()).await?;
        emit.emit(Step::Published { budget });
        let bids = self.parts.market.close_bidding(order.id).await?;
        emit.emit(Step::BidsIn { count: bids.len() });
        Ok(bids)
    }

    /// Step 2, *rank*: bids from registered, unbanned providers are ranked by the matcher;
    /// every other registered provider is explained (by the matcher, see
    /// [`explain_absent`]). Returns the ranking and every provider skipped so far.
    fn rank(&self, order: &Order, bids: Vec<Bid>) -> Result<(Ranking, Vec<Rejection>)> {
        let p = &self.parts;
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
        skipped.extend(explain_absent(order, &absent)?);
        let ranking = p.matcher.rank(order, &candidates)?;
        skipped.extend(ranking.rejected.iter().cloned());
        Ok((ranking, skipped))
    }

    /// Step 3a, *verify*: challenges the ranked bid's provider and reserves its capacity.
    /// `None` (with the reason in `skipped`) when it has no prover, fails the challenge
    /// (it is penalised) or lost its capacity meanwhile.
    async fn verify(
        &self,
        order: &Order,
        ranked: &Ranked,
        attempt: usize,
        emit: &Emitter,
        skipped: &mut Vec<Rejection>,
    ) -> Result<Option<Verified>> {
        let p = &self.parts;
        let provider = ranked.provider();
        let model = ranked.candidate.bid.model;
        emit.emit(Step::Matched {
            provider,
            score: ranked.score,
            attempt,
        });
        emit.emit(Step::Verifying {
            provider,
            claimed: model,
        });
        let Some(prover) = p.provers.prover(provider) else {
            skipped.push(Rejection {
                provider,
                reason: RejectReason::Other("no prover reachable".into()),
            });
            return Ok(None);
        };
        let proof = run_challenge(
            p.verifier.as_ref(),
            prover.as_ref(),
            provider,
            model,
            self.challenge_entropy()?,
        )
        .await;
        if let Verdict::Fail(r) = &proof.verdict {
            // Wrong products, forged paths and impossible speeds are fraud; slow, late or
            // malformed answers are a failed proof.
            let reason = r.to_string();
            let record = self
                .penalise(provider, Violation::for_failure(r), &reason)
                .await?;
            emit.emit(Step::ChallengeFailed {
                provider,
                reason: reason.clone(),
                slashed: record.slashed,
                penalty: Some(Box::new(record)),
            });
            skipped.push(Rejection {
                provider,
                reason: RejectReason::ChallengeFailed(reason),
            });
            return Ok(None);
        }
        p.registry
            .update(provider, |pr| pr.stats.challenges_answered += 1)?;
        emit.emit(Step::Verified {
            provider,
            verdict: proof.verdict.clone(),
        });
        match p.registry.reserve(provider, model, order.request.count) {
            Ok(node) => Ok(Some(Verified {
                choice: ranked.clone(),
                proof,
                node,
            })),
            Err(_) => {
                skipped.push(Rejection {
                    provider,
                    reason: RejectReason::CapacityTaken,
                });
                Ok(None)
            }
        }
    }

    /// Step 3b, *lock*: the budget waits in escrow; on failure the capacity goes back.
    async fn lock(
        &self,
        order: &Order,
        budget: Amount,
        v: &Verified,
        emit: &Emitter,
    ) -> Result<()> {
        let p = &self.parts;
        if let Err(e) = p.escrow.lock(order.id, order.tenant, budget).await {
            self.release_capacity(order, v);
            return Err(e);
        }
        emit.emit(Step::EscrowLocked { amount: budget });
        Ok(())
    }

    /// Step 3c, *launch*: records the match, starts the workload and opens the lease.
    /// Every failure but [`Error::NotStarted`] hands back what was taken (capacity, the
    /// lock, a started workload) before it is returned.
    async fn launch(
        &self,
        order: &Order,
        v: &Verified,
        workload: &Workload,
        emit: &Emitter,
    ) -> Result<Launched, LaunchFailure> {
        let p = &self.parts;
        let provider = v.choice.provider();
        let lease = LeaseId(order.id.0);
        let fatal = |e: Error| LaunchFailure::Fatal(e);
        let mut state = LeaseState::Open.apply(LeaseEvent::Match).map_err(fatal)?;
        if let Err(e) = p.market.record_match(order.id, provider, lease).await {
            self.unwind(order, v, None).await;
            return Err(fatal(e));
        }
        emit.emit(Step::Launching { lease });
        let ends_at = p
            .clock
            .now()
            .add(Duration::from_secs(order.request.duration_secs));
        let spec = LaunchSpec {
            lease,
            provider,
            model: v.choice.candidate.bid.model,
            gpus: order.request.count,
            node: Some(v.node.clone()),
            ends_at,
        };
        let workload_id = match p.launcher.launch(&spec, workload).await {
            Ok(w) => w,
            Err(Error::NotStarted { reason, .. }) => return Err(LaunchFailure::NotStarted(reason)),
            Err(e) => {
                // Nothing ran: the tenant gets everything back, the provider a failed lease.
                self.unwind(order, v, None).await;
                let _ = p
                    .registry
                    .update(provider, |pr| pr.stats.leases_failed += 1);
                return Err(fatal(e));
            }
        };
        let started_at = p.clock.now();
        let opened = p
            .escrow
            .open_lease(LeaseTerms {
                lease,
                order: order.id,
                provider,
                price_per_gpu_hour: v.choice.candidate.bid.price_per_gpu_hour,
                gpus: order.request.count,
                start: started_at,
            })
            .await;
        if let Err(e) = opened {
            // No lease means no payment: the workload must not run unpaid.
            self.unwind(order, v, Some(&workload_id)).await;
            return Err(fatal(e));
        }
        state = state.apply(LeaseEvent::Activate).map_err(fatal)?;
        emit.emit(Step::Running { lease });
        Ok(Launched {
            workload: workload_id,
            started_at,
            ends_at,
            state,
        })
    }

    /// Failover after [`Error::NotStarted`]: nothing ran and nothing was billed, so the lock
    /// is refunded, the capacity returns, the provider is charged a failed lease, and the
    /// flow takes the next ranked bid.
    async fn refund(
        &self,
        order: &Order,
        v: &Verified,
        reason: String,
        emit: &Emitter,
        skipped: &mut Vec<Rejection>,
    ) -> Result<()> {
        let p = &self.parts;
        let provider = v.choice.provider();
        self.release_capacity(order, v);
        let refunded = p.escrow.release(order.id).await?;
        let _ = p
            .registry
            .update(provider, |pr| pr.stats.leases_failed += 1);
        emit.emit(Step::NotStarted {
            provider,
            reason: reason.clone(),
            refunded,
        });
        skipped.push(Rejection {
            provider,
            reason: RejectReason::NotStarted(reason),
        });
        Ok(())
    }

    /// Step 4, *supervise*: writes the report and hands the lease to its supervisor task.
    #[allow(clippy::too_many_arguments)]
    fn supervise(
        &self,
        order: &Order,
        budget: Amount,
        v: Verified,
        launched: Launched,
        skipped: Vec<Rejection>,
        emit: &Emitter,
        commitment: Option<SpendCommitment>,
    ) -> LeaseHandle {
        let p = &self.parts;
        let price = v.choice.candidate.bid.price_per_gpu_hour;
        // The lease's spend cap ends it at the last second the cap pays for at its price.
        let cap_at = order.request.max_spend.and_then(|cap| {
            let secs = crate::cost::seconds_within(cap, price, order.request.count);
            let at = launched.started_at.add(Duration::from_secs(secs));
            (at < launched.ends_at).then_some(at)
        });
        let provider = v.choice.provider();
        let (name, region, tier, tier_reason) = match p.registry.get(provider) {
            Ok(prov) => {
                let why = p.tiers.explain(prov.tier, &prov.stats);
                (prov.name, prov.region, prov.tier, why)
            }
            Err(e) => (
                String::new(),
                String::new(),
                TrustTier::UNRANKED,
                e.to_string(),
            ),
        };
        let report = LeaseReport {
            lease: LeaseId(order.id.0),
            order: order.id,
            tenant: order.tenant,
            provider,
            provider_name: name,
            region,
            tier,
            tier_reason,
            model: v.choice.candidate.bid.model,
            gpus: order.request.count,
            price_per_gpu_hour: v.choice.candidate.bid.price_per_gpu_hour,
            budget,
            choice: v.choice,
            skipped,
            proof: v.proof,
            state: launched.state,
            started_at: launched.started_at,
            ended_at: None,
            cost: Amount::ZERO,
            settlement: None,
            progress: emit.progress(),
            resumed: Vec::new(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(LeaseShared {
            report: Mutex::new(report),
            stop_tx,
            closed_rx,
            workload: launched.workload,
            ends_at: launched.ends_at,
            cap_at,
            idle_timeout: order.request.idle_timeout(),
            commitment: Mutex::new(commitment),
            node: v.node,
            parts: p.clone(),
        });
        tokio::spawn(supervise::supervise(
            shared.clone(),
            stop_rx,
            closed_tx,
            emit.clone(),
        ));
        LeaseHandle::new(shared)
    }

    fn release_capacity(&self, order: &Order, v: &Verified) {
        if let Err(e) =
            self.parts
                .registry
                .release(v.choice.provider(), &v.node, order.request.count)
        {
            tracing::warn!(order = %order.id, error = %e, "returning capacity failed");
        }
    }

    /// Hands back what a failed launch took: the workload (if it started), the capacity
    /// and the lock.
    async fn unwind(&self, order: &Order, v: &Verified, workload: Option<&WorkloadId>) {
        if let Some(w) = workload {
            stop_quietly(self.parts.launcher.as_ref(), w).await;
        }
        self.release_capacity(order, v);
        if let Err(e) = self.parts.escrow.release(order.id).await {
            tracing::error!(order = %order.id, error = %e, "releasing the lock failed");
        }
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

/// Why each registered provider in `absent` (none of which bid) would not serve `order`, in
/// the hard filters' own words ([`StandardFilters`](crate::matching::StandardFilters), the
/// ones `WeightedMatcher` applies): each is screened with a bid at the ceiling on every model
/// it lists, and the filter's rejection is its reason; one that passes simply did not bid.
/// The configured matcher is not asked: a custom one sees only real bids.
fn explain_absent(order: &Order, absent: &[Provider]) -> Result<Vec<Rejection>> {
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
    let screened = crate::matching::StandardFilters::new(order)?.screen(&hypothetical);
    for id in asked {
        let reason = if screened.eligible.iter().any(|c| c.profile.id == id) {
            RejectReason::Other("did not bid (price above the ceiling or no answer)".into())
        } else {
            let mine: Vec<&Rejection> = screened
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
