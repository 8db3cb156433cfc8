//! The epoch processor: events in; stats, tiers, penalties and rewards out.

use super::penalty::{Applied, Charge, PenaltyRoute, apply_penalty};
use super::rewards::split_pool;
use super::verifiers::{Pending, VerdictId, VerifierBook, VerifierConfig, VerifierStanding};
use super::{Penalty, TierDecision, TierHistory, TierPolicy, Violation};
use crate::clock::{Clock, Timestamp};
use crate::escrow::Escrow;
use crate::events::{ProgressEvent, Step};
use crate::gpu::{GpuModel, HardwareClass};
use crate::ids::{AccountId, LeaseId, OrderId, ProviderId};
use crate::lease::CloseReason;
use crate::money::Amount;
use crate::provider::{Provider, ProviderStats, TrustTier};
use crate::registry::Registry;
use crate::{Error, Result};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The most epochs [`EpochProcessor::close_due`] closes in one call.
pub const MAX_CATCH_UP: u64 = 10_000;

/// Settings of the [`EpochProcessor`].
///
/// Set `genesis` to the marketplace's start (the clock's `now()`): epochs are counted from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochConfig {
    /// Start of epoch 0 (default 0, the Unix epoch: set it to the marketplace's start).
    pub genesis: Timestamp,
    /// Length of an epoch (at least one millisecond).
    pub epoch_len: Duration,
    /// How many epochs of statistics the tier policy sees (at least 1).
    pub window_epochs: usize,
    /// How long after an epoch ends [`EpochProcessor::run`] waits for late events before
    /// closing it.
    pub grace: Duration,
    /// The account reward pools are paid from and the non-bounty part of slashes goes to.
    pub treasury: AccountId,
    /// Provider reward emitted per epoch (plus what the last epoch carried over).
    pub provider_pool: Amount,
    /// Verifier reward emitted per epoch (plus what the last epoch carried over).
    pub verifier_pool: Amount,
    /// Verifier audit and pay settings.
    pub verifiers: VerifierConfig,
}

impl Default for EpochConfig {
    fn default() -> Self {
        EpochConfig {
            genesis: Timestamp(0),
            epoch_len: Duration::from_secs(3_600),
            window_epochs: 4,
            grace: Duration::from_secs(5),
            treasury: AccountId::from_label("spheron.treasury"),
            provider_pool: Amount::ZERO,
            verifier_pool: Amount::ZERO,
            verifiers: VerifierConfig::default(),
        }
    }
}

impl EpochConfig {
    /// Checks every field; the error names the field that is out of range.
    pub fn validate(&self) -> Result<()> {
        if self.epoch_len.as_millis() == 0 {
            return Err(Error::invalid(
                "epoch_len",
                "must be at least one millisecond",
            ));
        }
        if self.window_epochs == 0 {
            return Err(Error::invalid("window_epochs", "must be at least 1"));
        }
        self.verifiers.validate()
    }

    fn len_ms(&self) -> u64 {
        self.epoch_len.as_millis().min(u128::from(u64::MAX)) as u64
    }
}

/// One penalty applied to a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PenaltyRecord {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub provider: ProviderId,
    /// For what.
    pub violation: Violation,
    /// What the policy asked for.
    pub penalty: Penalty,
    /// Stake actually slashed (never above the stake).
    pub slashed: Amount,
    /// The part of `slashed` paid to the verifier that caught it.
    pub bounty: Amount,
    /// The verifier that caught it, when known.
    pub reporter: Option<AccountId>,
    /// The provider's tier afterwards.
    pub tier_after: TrustTier,
    /// Whether the provider is banned afterwards.
    pub banned: bool,
    /// Details.
    pub reason: String,
}

/// What the processor says after a verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictReceipt {
    /// The verdict's id, for [`EpochProcessor::record_recheck`].
    pub id: VerdictId,
    /// Whether the verdict waits for a re-check (failing verdicts always do: their penalty
    /// lands only when a majority of verifiers agrees).
    pub recheck: bool,
    /// The best-ranked other verifier, suggested to re-check it.
    pub recheck_by: Option<AccountId>,
    /// The penalty applied at once (a missed challenge).
    pub penalty: Option<PenaltyRecord>,
}

/// The result of a re-check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecheckOutcome {
    /// The verdict that was re-checked.
    pub verdict: VerdictId,
    /// Whether this re-check agreed with the first verdict (both passed, or both failed).
    pub agreed: bool,
    /// `None` while the votes are tied (one more verifier must re-check it, see
    /// `next_checker`); otherwise whether the proof finally holds.
    pub final_pass: Option<bool>,
    /// The best-ranked verifier that has not voted yet, when the votes are tied.
    pub next_checker: Option<AccountId>,
    /// The penalty applied to the provider, when the majority found a failure.
    pub penalty: Option<PenaltyRecord>,
}

/// A provider's result for one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEpoch {
    /// The provider.
    pub provider: ProviderId,
    /// What happened in this epoch.
    pub activity: ProviderStats,
    /// The statistics the policy evaluated (the last `window_epochs` epochs).
    pub window: ProviderStats,
    /// GPU-seconds served in leases settled this epoch.
    pub gpu_seconds: u64,
    /// The tier held during the epoch (rewards are priced at it).
    pub tier_before: TrustTier,
    /// The policy's decision: the tier for the next epoch and why.
    pub decision: TierDecision,
    /// Whether the provider is banned (banned providers earn nothing).
    pub banned: bool,
    /// Reward weight: GPU-seconds times the multiplier of its tier and hardware class.
    pub weight: u128,
    /// Reward paid.
    pub reward: Amount,
}

/// A verifier's result for one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierEpoch {
    /// The verifier.
    pub verifier: AccountId,
    /// Verdicts it submitted (re-checks of others included).
    pub verdicts: u64,
    /// Its votes on verdicts settled by audit this epoch.
    pub rechecked: u64,
    /// ... that sided with the majority.
    pub agreed: u64,
    /// ... that the majority contradicted.
    pub disagreed: u64,
    /// Failures it caught that were confirmed.
    pub frauds_caught: u64,
    /// Bounties from slashed stake.
    pub bounties: Amount,
    /// Lifetime accuracy at the close, basis points.
    pub accuracy_bps: u32,
    /// Rank at the close (1 = best).
    pub rank: usize,
    /// Reward paid from the verifier pool.
    pub reward: Amount,
}

/// Everything an epoch close decided and paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochReport {
    /// The epoch.
    pub epoch: u64,
    /// Its start (inclusive).
    pub start: Timestamp,
    /// Its end (exclusive).
    pub end: Timestamp,
    /// Every registered provider, by id.
    pub providers: Vec<ProviderEpoch>,
    /// Every registered verifier, by id.
    pub verifiers: Vec<VerifierEpoch>,
    /// Penalties applied during the epoch.
    pub penalties: Vec<PenaltyRecord>,
    /// The provider pool: emission plus carry, capped by the treasury's balance.
    pub provider_pool: Amount,
    /// Paid to providers.
    pub provider_paid: Amount,
    /// The verifier pool: emission plus carry, capped by what the treasury has left.
    pub verifier_pool: Amount,
    /// Paid to verifiers.
    pub verifier_paid: Amount,
    /// Carried into the next epoch (rounding remainders, pools nobody earned, failed
    /// transfers): `provider_pool + verifier_pool - provider_paid - verifier_paid`.
    pub carried: Amount,
    /// Emission plus carry that the treasury could not cover (not carried).
    pub shortfall: Amount,
    /// Transfers that failed, with the error; their amounts are in `carried`.
    pub unpaid: Vec<(AccountId, Amount, String)>,
}

/// Where a provider stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// The provider.
    pub provider: ProviderId,
    /// Its tier.
    pub tier: TrustTier,
    /// Whether it is banned from matching.
    pub banned: bool,
    /// Hysteresis state.
    pub history: TierHistory,
    /// Statistics of the closed epochs in the window.
    pub window: ProviderStats,
    /// Why it holds its tier (the last decision, or the policy's explanation).
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
struct Activity {
    stats: ProviderStats,
    gpu_seconds: BTreeMap<HardwareClass, u64>,
}

#[derive(Clone, Debug, Default)]
struct VerifierActivity {
    verdicts: u64,
    rechecked: u64,
    agreed: u64,
    disagreed: u64,
    frauds_caught: u64,
    bounties: Amount,
}

#[derive(Debug, Default)]
struct Accum {
    providers: BTreeMap<ProviderId, Activity>,
    verifiers: BTreeMap<AccountId, VerifierActivity>,
    penalties: Vec<PenaltyRecord>,
}

#[derive(Debug, Default)]
struct Book {
    history: TierHistory,
    window: VecDeque<ProviderStats>,
    reason: Option<String>,
}

#[derive(Debug)]
struct LeaseRecord {
    provider: ProviderId,
    settled: bool,
    rated: bool,
}

#[derive(Debug)]
struct State {
    /// The lowest open epoch; every epoch below it is closed.
    next: u64,
    open: BTreeMap<u64, Accum>,
    books: BTreeMap<ProviderId, Book>,
    verifiers: VerifierBook,
    leases: BTreeMap<LeaseId, LeaseRecord>,
    order_models: BTreeMap<OrderId, GpuModel>,
    provider_carry: Amount,
    verifier_carry: Amount,
    last: Option<EpochReport>,
}

fn add_stats(into: &mut ProviderStats, s: &ProviderStats) {
    into.challenges_answered = into
        .challenges_answered
        .saturating_add(s.challenges_answered);
    into.challenges_missed = into.challenges_missed.saturating_add(s.challenges_missed);
    into.challenges_failed = into.challenges_failed.saturating_add(s.challenges_failed);
    into.leases_completed = into.leases_completed.saturating_add(s.leases_completed);
    into.leases_failed = into.leases_failed.saturating_add(s.leases_failed);
    into.feedback_sum = into.feedback_sum.saturating_add(s.feedback_sum);
    into.feedback_count = into.feedback_count.saturating_add(s.feedback_count);
}

fn window_sum(w: &VecDeque<ProviderStats>) -> ProviderStats {
    let mut sum = ProviderStats::default();
    for s in w {
        add_stats(&mut sum, s);
    }
    sum
}

/// The highest hardware class in a provider's inventory (Entry with none).
fn best_class(p: &Provider) -> HardwareClass {
    p.inventory
        .nodes
        .iter()
        .map(|n| n.model.class())
        .max()
        .unwrap_or(HardwareClass::Entry)
}

/// Consumes marketplace events and explicit reports, applies penalties, and closes epochs:
/// per-provider statistics, tier decisions (written to the [`Registry`]), and rewards paid
/// through the [`Escrow`].
///
/// Events are placed in the epoch of their timestamp; an event for an epoch that is already
/// closed is refused with [`Error::EpochClosed`]. Epochs close in order.
///
/// Who records what in the registry's lifetime statistics: the orchestrator records what it
/// observes itself (challenges it ran, lease outcomes, its own penalties), so [`ingest`]
/// leaves the registry alone; the explicit methods (feedback, verifier verdicts, missed
/// challenges, [`record_lease`]) record what only they learn.
///
/// [`ingest`]: EpochProcessor::ingest
/// [`record_lease`]: EpochProcessor::record_lease
pub struct EpochProcessor {
    config: EpochConfig,
    policy: Arc<dyn TierPolicy>,
    escrow: Arc<dyn Escrow>,
    stake: Arc<dyn crate::stake::StakeVault>,
    registry: Arc<Registry>,
    state: Mutex<State>,
    /// Serialises the operations that await the escrow (penalties, closes).
    ops: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EpochProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochProcessor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EpochProcessor {
    /// A processor over `registry`, paying rewards through `escrow` and slashing through
    /// `stake`, with `policy`.
    pub fn new(
        config: EpochConfig,
        policy: Arc<dyn TierPolicy>,
        escrow: Arc<dyn Escrow>,
        stake: Arc<dyn crate::stake::StakeVault>,
        registry: Arc<Registry>,
    ) -> Result<Self> {
        config.validate()?;
        let verifiers = VerifierBook::new(config.verifiers);
        Ok(EpochProcessor {
            config,
            policy,
            escrow,
            stake,
            registry,
            state: Mutex::new(State {
                next: 0,
                open: BTreeMap::new(),
                books: BTreeMap::new(),
                verifiers,
                leases: BTreeMap::new(),
                order_models: BTreeMap::new(),
                provider_carry: Amount::ZERO,
                verifier_carry: Amount::ZERO,
                last: None,
            }),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation validates first, so a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings in force.
    pub fn config(&self) -> &EpochConfig {
        &self.config
    }

    /// The epoch `at` falls in.
    pub fn epoch_of(&self, at: Timestamp) -> Result<u64> {
        if at < self.config.genesis {
            return Err(Error::invalid(
                "at",
                format!("{at} is before genesis {}", self.config.genesis),
            ));
        }
        Ok(at.millis_since(self.config.genesis) / self.config.len_ms())
    }

    /// Start (inclusive) of `epoch`.
    pub fn epoch_start(&self, epoch: u64) -> Timestamp {
        Timestamp(
            self.config
                .genesis
                .0
                .saturating_add(epoch.saturating_mul(self.config.len_ms())),
        )
    }

    /// The lowest epoch not closed yet.
    pub fn open_epoch(&self) -> u64 {
        self.lock().next
    }

    /// What the reward pools carry into the next epoch: (providers, verifiers).
    pub fn carried(&self) -> (Amount, Amount) {
        let s = self.lock();
        (s.provider_carry, s.verifier_carry)
    }

    /// The report of the last closed epoch.
    pub fn last_report(&self) -> Option<EpochReport> {
        self.lock().last.clone()
    }

    /// The open epoch `at` falls in, or [`Error::EpochClosed`].
    fn open_epoch_of(&self, s: &State, at: Timestamp) -> Result<u64> {
        let e = self.epoch_of(at)?;
        if e < s.next {
            return Err(Error::EpochClosed(e));
        }
        Ok(e)
    }

    fn provider(&self, id: ProviderId) -> Result<Provider> {
        self.registry.get(id)
    }

    fn activity(s: &mut State, epoch: u64, p: ProviderId) -> &mut Activity {
        s.open
            .entry(epoch)
            .or_default()
            .providers
            .entry(p)
            .or_default()
    }

    fn verifier_activity(s: &mut State, epoch: u64, v: AccountId) -> &mut VerifierActivity {
        s.open
            .entry(epoch)
            .or_default()
            .verifiers
            .entry(v)
            .or_default()
    }

    /// Feeds one progress event of the orchestrator (`Orchestrator::subscribe`):
    /// `Verified` counts a passed challenge, `ChallengeFailed` a failed one (the orchestrator
    /// has already slashed and demoted; the penalty is recorded and the climb restarts),
    /// `Settled` a finished lease with its GPU-seconds. Other steps only help attribute
    /// GPU-seconds to a hardware class.
    ///
    /// Errors: [`Error::UnknownProvider`] for a provider the registry does not know,
    /// [`Error::EpochClosed`] for an event in a closed epoch.
    pub fn ingest(&self, event: &ProgressEvent) -> Result<()> {
        let at = event.at;
        match &event.step {
            Step::Verifying { provider, claimed } => {
                self.provider(*provider)?;
                self.lock().order_models.insert(event.order, *claimed);
                Ok(())
            }
            Step::Verified { provider, .. } => {
                self.provider(*provider)?;
                let mut s = self.lock();
                let e = self.open_epoch_of(&s, at)?;
                let a = Self::activity(&mut s, e, *provider);
                a.stats.challenges_answered += 1;
                Ok(())
            }
            Step::ChallengeFailed {
                provider,
                reason,
                slashed,
                penalty,
            } => {
                self.provider(*provider)?;
                let mut s = self.lock();
                let e = self.open_epoch_of(&s, at)?;
                // The flow's own record of what it applied: never relabelled or recomputed.
                let violation = penalty.as_ref().map(|p| p.violation);
                let stats = &mut Self::activity(&mut s, e, *provider).stats;
                if violation == Some(Violation::MissedChallenge) {
                    stats.challenges_missed += 1;
                } else {
                    stats.challenges_failed += 1;
                }
                let reset = penalty
                    .as_ref()
                    .is_none_or(|p| p.penalty.demote_by > 0 || p.penalty.ban);
                if reset {
                    s.books.entry(*provider).or_default().history = TierHistory::default();
                }
                match penalty {
                    Some(record) => s.open.entry(e).or_default().penalties.push(PenaltyRecord {
                        slashed: *slashed,
                        reason: reason.clone(),
                        ..(**record).clone()
                    }),
                    None => tracing::debug!(
                        provider = %provider.short(),
                        "challenge failed with no penalty applied by the flow"
                    ),
                }
                Ok(())
            }
            Step::Settled {
                lease,
                provider,
                gpu_seconds,
                reason,
                ..
            } => {
                let p = self.provider(*provider)?;
                let class = {
                    let mut s = self.lock();
                    self.open_epoch_of(&s, at)?;
                    s.order_models.remove(&event.order).map(|m| m.class())
                }
                .unwrap_or_else(|| best_class(&p));
                self.record_lease_inner(at, *lease, *provider, class, *gpu_seconds, reason, false)
            }
            Step::NoMatch { .. } => {
                self.lock().order_models.remove(&event.order);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records a finished lease served with `model` (for callers that do not feed
    /// orchestrator events): its GPU-seconds earn rewards, and it counts as completed or
    /// failed by `reason`. Also updates the registry's statistics.
    pub fn record_lease(
        &self,
        at: Timestamp,
        lease: LeaseId,
        provider: ProviderId,
        model: GpuModel,
        gpu_seconds: u64,
        reason: &CloseReason,
    ) -> Result<()> {
        self.provider(provider)?;
        self.record_lease_inner(
            at,
            lease,
            provider,
            model.class(),
            gpu_seconds,
            reason,
            true,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record_lease_inner(
        &self,
        at: Timestamp,
        lease: LeaseId,
        provider: ProviderId,
        class: HardwareClass,
        gpu_seconds: u64,
        reason: &CloseReason,
        update_registry: bool,
    ) -> Result<()> {
        let fault = reason.is_provider_fault();
        {
            let mut s = self.lock();
            let e = self.open_epoch_of(&s, at)?;
            match s.leases.get_mut(&lease) {
                Some(r) if r.settled => {
                    return Err(Error::invalid(
                        "lease",
                        format!("{lease} was already recorded"),
                    ));
                }
                Some(r) if r.provider != provider => {
                    return Err(Error::invalid(
                        "lease",
                        format!(
                            "{lease} was rated as served by {}, not {}",
                            r.provider.short(),
                            provider.short()
                        ),
                    ));
                }
                Some(r) => r.settled = true,
                None => {
                    s.leases.insert(
                        lease,
                        LeaseRecord {
                            provider,
                            settled: true,
                            rated: false,
                        },
                    );
                }
            }
            let a = Self::activity(&mut s, e, provider);
            if fault {
                a.stats.leases_failed += 1;
            } else {
                a.stats.leases_completed += 1;
            }
            let secs = a.gpu_seconds.entry(class).or_default();
            *secs = secs.saturating_add(gpu_seconds);
        }
        if update_registry {
            self.registry.update(provider, |p| {
                if fault {
                    p.stats.leases_failed += 1;
                } else {
                    p.stats.leases_completed += 1;
                }
            })?;
        }
        Ok(())
    }

    /// Records the tenant's rating (1..=5) of a lease recorded here (by a `Settled` event or
    /// [`record_lease`](Self::record_lease)); each lease is rated once.
    ///
    /// Errors: [`Error::FeedbackOutOfRange`], [`Error::UnknownLease`] for a lease not
    /// recorded here, [`Error::InvalidField`] for a second rating, [`Error::EpochClosed`].
    pub fn record_feedback(&self, at: Timestamp, lease: LeaseId, rating: u8) -> Result<()> {
        self.feedback(at, lease, None, rating)
    }

    /// Records the tenant's rating of `lease` served by `provider`, also before the lease's
    /// `Settled` event has arrived (a tenant may rate as soon as `wait()` returns, while the
    /// event is still on its way). The marketplace vouches that `provider` served `lease`.
    ///
    /// Errors: as [`record_feedback`](Self::record_feedback), plus
    /// [`Error::UnknownProvider`], and [`Error::InvalidField`] when the lease was recorded
    /// for another provider.
    pub fn record_feedback_for(
        &self,
        at: Timestamp,
        lease: LeaseId,
        provider: ProviderId,
        rating: u8,
    ) -> Result<()> {
        self.feedback(at, lease, Some(provider), rating)
    }

    fn feedback(
        &self,
        at: Timestamp,
        lease: LeaseId,
        vouched: Option<ProviderId>,
        rating: u8,
    ) -> Result<()> {
        if !(1..=5).contains(&rating) {
            return Err(Error::FeedbackOutOfRange(rating));
        }
        if let Some(p) = vouched {
            self.provider(p)?;
        }
        let provider = {
            let mut s = self.lock();
            let e = self.open_epoch_of(&s, at)?;
            let rec = match (s.leases.get_mut(&lease), vouched) {
                (Some(rec), _) => rec,
                (None, None) => return Err(Error::UnknownLease(lease)),
                (None, Some(provider)) => s.leases.entry(lease).or_insert(LeaseRecord {
                    provider,
                    settled: false,
                    rated: false,
                }),
            };
            if let Some(p) = vouched.filter(|p| *p != rec.provider) {
                return Err(Error::invalid(
                    "lease",
                    format!(
                        "{lease} was served by {}, not {}",
                        rec.provider.short(),
                        p.short()
                    ),
                ));
            }
            if rec.rated {
                return Err(Error::invalid(
                    "lease",
                    format!("{lease} was already rated"),
                ));
            }
            rec.rated = true;
            let provider = rec.provider;
            let a = Self::activity(&mut s, e, provider);
            a.stats.feedback_sum += u64::from(rating);
            a.stats.feedback_count += 1;
            provider
        };
        self.registry.update(provider, |p| {
            p.stats.feedback_sum += u64::from(rating);
            p.stats.feedback_count += 1;
        })
    }

    /// Records a challenge the provider did not answer in time: lowers its uptime (and
    /// applies whatever the policy charges for it).
    pub async fn record_missed_challenge(
        &self,
        at: Timestamp,
        provider: ProviderId,
    ) -> Result<PenaltyRecord> {
        let _ops = self.ops.lock().await;
        self.apply_violation(
            at,
            provider,
            Violation::MissedChallenge,
            None,
            "no answer in time".into(),
        )
        .await
    }

    /// Applies `violation` to `provider` as reported by a trusted party (no re-check):
    /// slashes the policy's share of its stake through the escrow (the bounty share to
    /// `reporter`, the rest to the treasury), demotes it, and bans it if the policy says so.
    pub async fn report_violation(
        &self,
        at: Timestamp,
        provider: ProviderId,
        violation: Violation,
        reporter: Option<AccountId>,
        reason: &str,
    ) -> Result<PenaltyRecord> {
        let _ops = self.ops.lock().await;
        if let Some(r) = reporter {
            self.lock().verifiers.known(r)?;
        }
        self.apply_violation(at, provider, violation, reporter, reason.to_string())
            .await
    }

    /// Applies a violation; the caller holds `ops`.
    async fn apply_violation(
        &self,
        at: Timestamp,
        provider: ProviderId,
        violation: Violation,
        reporter: Option<AccountId>,
        reason: String,
    ) -> Result<PenaltyRecord> {
        self.provider(provider)?;
        let epoch = {
            let s = self.lock();
            self.open_epoch_of(&s, at)?
        };
        let Applied { record, failure } = apply_penalty(
            self.stake.as_ref(),
            &self.registry,
            self.policy.as_ref(),
            PenaltyRoute {
                treasury: self.config.treasury,
                bounty_bps: self.config.verifiers.bounty_bps,
            },
            Charge {
                at,
                provider,
                violation,
                reporter,
                reason,
            },
        )
        .await?;
        let (penalty, bounty) = (record.penalty, record.bounty);
        {
            let mut s = self.lock();
            let a = Self::activity(&mut s, epoch, provider);
            if violation == Violation::MissedChallenge {
                a.stats.challenges_missed += 1;
            } else {
                a.stats.challenges_failed += 1;
            }
            if penalty.demote_by > 0 || penalty.ban {
                s.books.entry(provider).or_default().history = TierHistory::default();
            }
            if let (Some(r), true) = (reporter, violation != Violation::MissedChallenge) {
                let va = Self::verifier_activity(&mut s, epoch, r);
                va.frauds_caught += 1;
                va.bounties = Amount(va.bounties.0.saturating_add(bounty.0));
                let rec = s.verifiers.records.entry(r).or_default();
                rec.frauds_caught += 1;
                rec.earned = Amount(rec.earned.0.saturating_add(bounty.0));
            }
            s.open
                .entry(epoch)
                .or_default()
                .penalties
                .push(record.clone());
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(record),
        }
    }

    /// Registers a verifier (idempotent).
    pub fn add_verifier(&self, verifier: AccountId) {
        self.lock().verifiers.records.entry(verifier).or_default();
    }

    /// Verifiers, most accurate first.
    pub fn verifier_ranking(&self) -> Vec<VerifierStanding> {
        self.lock().verifiers.ranking()
    }

    /// Verdicts waiting for a re-check: (id, verifier, provider).
    pub fn pending_rechecks(&self) -> Vec<(VerdictId, AccountId, ProviderId)> {
        self.lock()
            .verifiers
            .pending
            .iter()
            .map(|(id, p)| (*id, p.verifier, p.provider))
            .collect()
    }

    /// Records `verifier`'s verdict on `provider`: `None` = passed, or the violation found.
    ///
    /// A pass counts for the provider at once; a missed challenge is applied at once; a
    /// failed or fraudulent proof waits for a second verifier's [`record_recheck`] before it
    /// costs the provider anything. Passing verdicts are re-checked by sample.
    ///
    /// [`record_recheck`]: EpochProcessor::record_recheck
    pub async fn record_verdict(
        &self,
        at: Timestamp,
        verifier: AccountId,
        provider: ProviderId,
        outcome: Option<Violation>,
    ) -> Result<VerdictReceipt> {
        let _ops = self.ops.lock().await;
        self.provider(provider)?;
        let (id, recheck, recheck_by) = {
            let mut s = self.lock();
            s.verifiers.known(verifier)?;
            let e = self.open_epoch_of(&s, at)?;
            let id = s.verifiers.next_id();
            let recheck = match outcome {
                None => s.verifiers.sampled(id),
                Some(Violation::MissedChallenge) => false,
                Some(_) => true,
            };
            if recheck {
                s.verifiers.pending.insert(
                    id,
                    Pending {
                        verifier,
                        provider,
                        outcome,
                        checks: Vec::new(),
                    },
                );
            }
            s.verifiers.records.entry(verifier).or_default().verdicts += 1;
            Self::verifier_activity(&mut s, e, verifier).verdicts += 1;
            if outcome.is_none() {
                Self::activity(&mut s, e, provider)
                    .stats
                    .challenges_answered += 1;
            }
            let by = recheck
                .then(|| s.verifiers.checker_for(&[verifier]))
                .flatten();
            (id, recheck, by)
        };
        let penalty = match outcome {
            None => {
                self.registry
                    .update(provider, |p| p.stats.challenges_answered += 1)?;
                None
            }
            Some(Violation::MissedChallenge) => Some(
                self.apply_violation(
                    at,
                    provider,
                    Violation::MissedChallenge,
                    None,
                    format!("{} reported a missed challenge", verifier.short()),
                )
                .await?,
            ),
            Some(_) => None,
        };
        Ok(VerdictReceipt {
            id,
            recheck,
            recheck_by,
            penalty,
        })
    }

    /// Records a re-check of verdict `id` by another verifier: `None` = the proof holds, or
    /// the violation found (a re-check replays the transcript, so it cannot find a miss).
    ///
    /// Votes are counted until two agree (pass or fail): a re-check that agrees with the
    /// first verdict settles it; one that disagrees leaves a tie for a third verifier
    /// ([`RecheckOutcome::next_checker`]). When it settles, every verifier that voted with
    /// the majority gains accuracy and every one against it loses accuracy. A confirmed
    /// failure is applied to the provider (the most lenient classification of the majority)
    /// with the first verifier as the reporter (it earns the bounty); a failure the first
    /// verifier passed is applied with the first checker that found it as the reporter.
    pub async fn record_recheck(
        &self,
        at: Timestamp,
        id: VerdictId,
        checker: AccountId,
        outcome: Option<Violation>,
    ) -> Result<RecheckOutcome> {
        let _ops = self.ops.lock().await;
        if outcome == Some(Violation::MissedChallenge) {
            return Err(Error::invalid(
                "outcome",
                "a re-check replays the transcript; it cannot find a missed challenge",
            ));
        }
        let (pending, agreed, resolved, next_checker) = {
            let mut s = self.lock();
            let e = self.open_epoch_of(&s, at)?;
            s.verifiers.known(checker)?;
            let p = s.verifiers.pending.get(&id).cloned().ok_or_else(|| {
                Error::invalid(
                    "verdict",
                    format!("{id} is unknown, already settled, or was not sampled"),
                )
            })?;
            if p.voters().any(|v| v == checker) {
                return Err(Error::invalid(
                    "checker",
                    format!(
                        "{} already voted on {id}; pick another verifier",
                        checker.short()
                    ),
                ));
            }
            // The provider must still be registered.
            self.provider(p.provider)?;
            let agreed = p.outcome.is_some() == outcome.is_some();
            let mut p = p;
            p.checks.push((checker, outcome));
            s.verifiers.records.entry(checker).or_default().verdicts += 1;
            Self::verifier_activity(&mut s, e, checker).verdicts += 1;
            let votes: Vec<(AccountId, Option<Violation>)> =
                std::iter::once((p.verifier, p.outcome))
                    .chain(p.checks.iter().copied())
                    .collect();
            let fails = votes.iter().filter(|(_, o)| o.is_some()).count();
            let passes = votes.len() - fails;
            let resolved = if fails >= 2 {
                Some(false)
            } else if passes >= 2 {
                Some(true)
            } else {
                None
            };
            match resolved {
                None => {
                    let voted: Vec<AccountId> = p.voters().collect();
                    let next = s.verifiers.checker_for(&voted);
                    s.verifiers.pending.insert(id, p.clone());
                    (p, agreed, None, next)
                }
                Some(pass) => {
                    s.verifiers.pending.remove(&id);
                    for (v, o) in &votes {
                        let with_majority = o.is_none() == pass;
                        let rec = s.verifiers.records.entry(*v).or_default();
                        rec.rechecked += 1;
                        if with_majority {
                            rec.agreed += 1;
                        }
                        let va = Self::verifier_activity(&mut s, e, *v);
                        va.rechecked += 1;
                        if with_majority {
                            va.agreed += 1;
                        } else {
                            va.disagreed += 1;
                        }
                    }
                    if pass && p.outcome.is_some() {
                        // The first verifier failed a proof that holds: the provider did answer.
                        Self::activity(&mut s, e, p.provider)
                            .stats
                            .challenges_answered += 1;
                    }
                    (p, agreed, Some((pass, votes)), None)
                }
            }
        };
        let final_pass = resolved.as_ref().map(|(pass, _)| *pass);
        let penalty = match resolved {
            Some((false, votes)) => {
                let found = votes
                    .iter()
                    .filter_map(|(_, o)| *o)
                    .min()
                    .unwrap_or(Violation::FailedProof);
                let reporter = match pending.outcome {
                    Some(_) => pending.verifier,
                    None => pending
                        .checks
                        .iter()
                        .find(|(_, o)| o.is_some())
                        .map_or(checker, |(v, _)| *v),
                };
                let witnesses: Vec<String> = votes
                    .iter()
                    .filter(|(_, o)| o.is_some())
                    .map(|(v, _)| v.short())
                    .collect();
                Some(
                    self.apply_violation(
                        at,
                        pending.provider,
                        found,
                        Some(reporter),
                        format!("{found} found by {}", witnesses.join(" and ")),
                    )
                    .await?,
                )
            }
            Some((true, _)) if pending.outcome.is_some() => {
                self.registry
                    .update(pending.provider, |p| p.stats.challenges_answered += 1)?;
                None
            }
            _ => None,
        };
        Ok(RecheckOutcome {
            verdict: id,
            agreed,
            final_pass,
            next_checker,
            penalty,
        })
    }

    /// Where `provider` stands: its tier and why.
    pub fn standing(&self, provider: ProviderId) -> Result<Standing> {
        let p = self.provider(provider)?;
        let s = self.lock();
        let (history, window, reason) = match s.books.get(&provider) {
            Some(b) => (b.history, window_sum(&b.window), b.reason.clone()),
            None => (TierHistory::default(), ProviderStats::default(), None),
        };
        let reason = reason.unwrap_or_else(|| self.policy.explain(p.tier, &window));
        Ok(Standing {
            provider,
            tier: p.tier,
            banned: p.banned,
            history,
            window,
            reason,
        })
    }

    /// Closes every epoch that ended at least `grace` before `now`; returns their reports.
    ///
    /// Refuses (closing nothing) when more than [`MAX_CATCH_UP`] epochs are due at once:
    /// that is a genesis left at its default instead of the marketplace's start, and would
    /// pay out that many epochs of rewards.
    pub async fn close_due(&self, now: Timestamp) -> Result<Vec<EpochReport>> {
        let next = self.open_epoch();
        let due = now
            .0
            .saturating_sub(self.config.grace.as_millis().min(u128::from(u64::MAX)) as u64);
        let due_epochs = Timestamp(due).millis_since(self.epoch_start(next)) / self.config.len_ms();
        if due_epochs > MAX_CATCH_UP {
            return Err(Error::invalid(
                "genesis",
                format!(
                    "{due_epochs} epochs are due at once (more than {MAX_CATCH_UP}); set `genesis` to the marketplace's start, e.g. the clock's now()"
                ),
            ));
        }
        let mut out = Vec::new();
        loop {
            let next = self.open_epoch();
            let due = self
                .epoch_start(next.saturating_add(1))
                .add(self.config.grace);
            if due > now {
                return Ok(out);
            }
            out.push(self.close_epoch(next).await?);
        }
    }

    /// Closes `epoch`, which must be the lowest open one: evaluates every registered
    /// provider's tier over its window, writes the tiers to the registry, and pays the
    /// reward pools from the treasury through the escrow.
    ///
    /// Errors: [`Error::EpochClosed`] when it was already closed; [`Error::InvalidField`]
    /// when an earlier epoch is still open.
    pub async fn close_epoch(&self, epoch: u64) -> Result<EpochReport> {
        let _ops = self.ops.lock().await;
        {
            let s = self.lock();
            if epoch < s.next {
                return Err(Error::EpochClosed(epoch));
            }
            if epoch > s.next {
                return Err(Error::invalid(
                    "epoch",
                    format!("epoch {} is still open; epochs close in order", s.next),
                ));
            }
        }
        let treasury = self.config.treasury;
        let available = self.escrow.balance(treasury).await?.available;
        let providers = self.registry.all();

        let mut report = {
            let mut s = self.lock();
            let empty = Accum::default();
            let accum = s.open.get(&epoch).unwrap_or(&empty);
            let mut rows = Vec::with_capacity(providers.len());
            let mut weights = Vec::new();
            // Book updates, applied once every computation has succeeded.
            let mut books = Vec::with_capacity(providers.len());
            for p in &providers {
                let activity = accum.providers.get(&p.id).cloned().unwrap_or_default();
                let (mut window_stats, history) = match s.books.get(&p.id) {
                    Some(b) => (b.window.clone(), b.history),
                    None => (VecDeque::new(), TierHistory::default()),
                };
                window_stats.push_back(activity.stats.clone());
                while window_stats.len() > self.config.window_epochs {
                    window_stats.pop_front();
                }
                let window = window_sum(&window_stats);
                let decision = if p.banned {
                    TierDecision {
                        tier: TrustTier::UNRANKED,
                        target: TrustTier::UNRANKED,
                        history: TierHistory::default(),
                        reason: "banned from matching".into(),
                    }
                } else {
                    self.policy.evaluate(p.tier, &window, &history)
                };
                books.push((
                    p.id,
                    window_stats,
                    decision.history,
                    decision.reason.clone(),
                ));
                let weight: u128 = if p.banned {
                    0
                } else {
                    activity
                        .gpu_seconds
                        .iter()
                        .map(|(class, secs)| {
                            u128::from(*secs)
                                * u128::from(self.policy.reward_multiplier_bps(p.tier, *class))
                        })
                        .fold(0u128, u128::saturating_add)
                };
                if weight > 0 {
                    weights.push((p.id, weight));
                }
                rows.push(ProviderEpoch {
                    provider: p.id,
                    gpu_seconds: activity
                        .gpu_seconds
                        .values()
                        .fold(0u64, |a, b| a.saturating_add(*b)),
                    activity: activity.stats,
                    window,
                    tier_before: p.tier,
                    decision,
                    banned: p.banned,
                    weight,
                    reward: Amount::ZERO,
                });
            }

            // Pools: emission + carry, capped by what the treasury holds.
            let want_p = self
                .config
                .provider_pool
                .0
                .saturating_add(s.provider_carry.0);
            let provider_pool = Amount(want_p.min(available.0));
            let want_v = self
                .config
                .verifier_pool
                .0
                .saturating_add(s.verifier_carry.0);
            let verifier_pool = Amount(want_v.min(available.0 - provider_pool.0));
            let shortfall = Amount(
                want_p.saturating_sub(provider_pool.0) + want_v.saturating_sub(verifier_pool.0),
            );
            let psplit = split_pool(provider_pool, &weights)?;
            let index: BTreeMap<ProviderId, usize> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.provider, i))
                .collect();
            for (id, amount) in &psplit.payouts {
                if let Some(&i) = index.get(id) {
                    rows[i].reward = *amount;
                }
            }

            let ranking = s.verifiers.ranking();
            let min_acc = self.config.verifiers.min_accuracy_bps;
            let mut vrows = Vec::new();
            let mut vweights = Vec::new();
            for st in &ranking {
                let a = accum
                    .verifiers
                    .get(&st.verifier)
                    .cloned()
                    .unwrap_or_default();
                if st.accuracy_bps >= min_acc && a.verdicts > 0 {
                    vweights.push((
                        st.verifier,
                        u128::from(a.verdicts) * u128::from(st.accuracy_bps),
                    ));
                }
                vrows.push(VerifierEpoch {
                    verifier: st.verifier,
                    verdicts: a.verdicts,
                    rechecked: a.rechecked,
                    agreed: a.agreed,
                    disagreed: a.disagreed,
                    frauds_caught: a.frauds_caught,
                    bounties: a.bounties,
                    accuracy_bps: st.accuracy_bps,
                    rank: st.rank,
                    reward: Amount::ZERO,
                });
            }
            vrows.sort_by_key(|v| v.verifier);
            let vsplit = split_pool(verifier_pool, &vweights)?;
            let vindex: BTreeMap<AccountId, usize> = vrows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.verifier, i))
                .collect();
            for (id, amount) in &vsplit.payouts {
                if let Some(&i) = vindex.get(id) {
                    vrows[i].reward = *amount;
                }
            }
            // Everything computed: commit.
            let penalties = s
                .open
                .remove(&epoch)
                .map(|a| a.penalties)
                .unwrap_or_default();
            s.next = epoch + 1;
            for (id, window, history, reason) in books {
                let b = s.books.entry(id).or_default();
                b.window = window;
                b.history = history;
                b.reason = Some(reason);
            }
            s.provider_carry = psplit.carried;
            s.verifier_carry = vsplit.carried;

            let start = self.epoch_start(epoch);
            EpochReport {
                epoch,
                start,
                end: self.epoch_start(epoch.saturating_add(1)),
                providers: rows,
                verifiers: vrows,
                penalties,
                provider_pool,
                provider_paid: psplit.paid,
                verifier_pool,
                verifier_paid: vsplit.paid,
                carried: Amount(psplit.carried.0 + vsplit.carried.0),
                shortfall,
                unpaid: Vec::new(),
            }
        };

        // Tiers: written unless a penalty moved the provider meanwhile.
        for row in &report.providers {
            let (before, after) = (row.tier_before, row.decision.tier);
            if before != after {
                let _ = self.registry.update(row.provider, |p| {
                    if p.tier == before {
                        p.tier = after;
                    }
                });
            }
        }

        // Payouts; a failed transfer is carried over, never lost.
        let mut failed_p = Amount::ZERO;
        let mut failed_v = Amount::ZERO;
        for row in &mut report.providers {
            if row.reward.0 == 0 {
                continue;
            }
            if let Err(e) = self
                .escrow
                .transfer(treasury, row.provider, row.reward)
                .await
            {
                report
                    .unpaid
                    .push((row.provider, row.reward, e.to_string()));
                failed_p.0 += row.reward.0;
                row.reward = Amount::ZERO;
            }
        }
        let mut paid_v = Vec::new();
        for row in &mut report.verifiers {
            if row.reward.0 == 0 {
                continue;
            }
            match self
                .escrow
                .transfer(treasury, row.verifier, row.reward)
                .await
            {
                Ok(()) => paid_v.push((row.verifier, row.reward)),
                Err(e) => {
                    report
                        .unpaid
                        .push((row.verifier, row.reward, e.to_string()));
                    failed_v.0 += row.reward.0;
                    row.reward = Amount::ZERO;
                }
            }
        }
        report.provider_paid.0 -= failed_p.0;
        report.verifier_paid.0 -= failed_v.0;
        report.carried.0 += failed_p.0 + failed_v.0;
        {
            let mut s = self.lock();
            s.provider_carry.0 += failed_p.0;
            s.verifier_carry.0 += failed_v.0;
            for (v, amount) in paid_v {
                let rec = s.verifiers.records.entry(v).or_default();
                rec.earned = Amount(rec.earned.0.saturating_add(amount.0));
            }
            s.last = Some(report.clone());
        }
        tracing::info!(
            epoch,
            providers = report.providers.len(),
            paid = %Amount(report.provider_paid.0 + report.verifier_paid.0),
            carried = %report.carried,
            "epoch closed"
        );
        Ok(report)
    }

    /// Runs the processor: feeds `events` (e.g. `Orchestrator::subscribe()`) into
    /// [`ingest`](Self::ingest) and closes each epoch `grace` after it ends on `clock`.
    /// Errors are logged, not fatal. Returns when the event stream ends (after closing
    /// whatever is due).
    pub async fn run<S>(&self, events: S, clock: Arc<dyn Clock>)
    where
        S: Stream<Item = ProgressEvent> + Send,
    {
        let mut events = std::pin::pin!(events);
        loop {
            let due = self
                .epoch_start(self.open_epoch().saturating_add(1))
                .add(self.config.grace);
            tokio::select! {
                // Drain the events already delivered before closing an epoch.
                biased;
                ev = events.next() => match ev {
                    Some(e) => {
                        if let Err(err) = self.ingest(&e) {
                            tracing::warn!(error = %err, step = %e.step, "event not counted");
                        }
                        // A busy stream must not starve the close.
                        if clock.now() >= due
                            && let Err(err) = self.close_due(clock.now()).await
                        {
                            tracing::warn!(error = %err, "closing epochs failed");
                        }
                    }
                    None => {
                        if let Err(err) = self.close_due(clock.now()).await {
                            tracing::warn!(error = %err, "closing epochs failed");
                        }
                        return;
                    }
                },
                _ = clock.sleep_until(due) => {
                    if let Err(err) = self.close_due(clock.now()).await {
                        tracing::warn!(error = %err, "closing epochs failed; retrying in a second");
                        // Do not spin on a failing escrow.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}
