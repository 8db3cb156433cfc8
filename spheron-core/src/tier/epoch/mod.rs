//! The epoch processor: events in; stats, tiers, penalties and rewards out.
//!
//! Split by concern: `ingest.rs` (progress events, leases, feedback), `penalties.rs`
//! (missed challenges, trusted reports), `audit.rs` (verifier verdicts and re-checks),
//! `close.rs` (tier decisions, rewards, payouts, the run loop); this file holds the types,
//! the state and the accessors.

mod audit;
mod close;
mod ingest;
mod penalties;

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
    /// The last epoch that touched it: records older than the statistics window are dropped
    /// at a close (a lease is rated within the window or not at all).
    epoch: u64,
}

/// The model a rent is verifying or serving, for the hardware class of its GPU-seconds.
#[derive(Debug)]
struct OrderModel {
    model: GpuModel,
    /// The epoch it was seen in.
    epoch: u64,
    /// A lease runs (a `Settled` will remove it); otherwise a rent that fails without a
    /// closing event leaves it, and a close drops it.
    running: bool,
}

#[derive(Debug)]
struct State {
    /// The lowest open epoch; every epoch below it is closed.
    next: u64,
    open: BTreeMap<u64, Accum>,
    books: BTreeMap<ProviderId, Book>,
    verifiers: VerifierBook,
    leases: BTreeMap<LeaseId, LeaseRecord>,
    order_models: BTreeMap<OrderId, OrderModel>,
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

    /// Bounded memory at the close of `closed`: lease records and unfinished audits older
    /// than the statistics window, and the models of rents that ended without a closing
    /// event, are dropped.
    fn prune(s: &mut State, closed: u64, window: usize) {
        let window = u64::try_from(window).unwrap_or(u64::MAX);
        let expired = |epoch: u64| epoch.saturating_add(window) <= closed;
        s.leases.retain(|_, r| !expired(r.epoch));
        s.order_models.retain(|_, m| m.running || m.epoch > closed);
        let before = s.verifiers.pending.len();
        s.verifiers.pending.retain(|_, p| !expired(p.epoch));
        let dropped = before - s.verifiers.pending.len();
        if dropped > 0 {
            tracing::info!(
                dropped,
                epoch = closed,
                "audits nobody re-checked within the window were dropped"
            );
        }
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::escrow::MemoryEscrow;
    use crate::gpu::GeoPoint;
    use crate::money::Token;
    use crate::provider::Inventory;
    use crate::tier::ReputationTierPolicy;

    #[tokio::test]
    async fn closed_records_are_pruned_after_the_window() {
        let registry = Arc::new(Registry::new());
        let p = ProviderId::from_label("p");
        registry.register(Provider {
            id: p,
            name: "p".into(),
            endpoint: String::new(),
            region: "eu-west".into(),
            location: GeoPoint { lat: 0.0, lon: 0.0 },
            inventory: Inventory::uniform(GpuModel::H100Sxm, 1, 8),
            stake: Amount::ZERO,
            stats: ProviderStats::default(),
            tier: TrustTier(3),
            banned: false,
        });
        let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
        let config = EpochConfig {
            epoch_len: Duration::from_secs(10),
            window_epochs: 1,
            ..EpochConfig::default()
        };
        let ep = EpochProcessor::new(
            config,
            Arc::new(ReputationTierPolicy::default()),
            escrow.clone(),
            escrow,
            registry,
        )
        .unwrap();
        let v = AccountId::from_label("v");
        ep.add_verifier(v);
        let at = Timestamp(1_000);
        ep.record_lease(
            at,
            LeaseId(1),
            p,
            GpuModel::H100Sxm,
            60,
            &CloseReason::Completed,
        )
        .unwrap();
        // A rent that got as far as verifying and then failed without a closing event.
        ep.ingest(&ProgressEvent {
            at,
            order: OrderId(9),
            step: Step::Verifying {
                provider: p,
                claimed: GpuModel::H100Sxm,
            },
        })
        .unwrap();
        // A failing verdict nobody re-checks.
        ep.record_verdict(at, v, p, Some(Violation::FailedProof))
            .await
            .unwrap();
        {
            let s = ep.lock();
            assert_eq!(
                (
                    s.leases.len(),
                    s.order_models.len(),
                    s.verifiers.pending.len()
                ),
                (1, 1, 1)
            );
        }
        ep.close_epoch(0).await.unwrap();
        {
            // The window still covers epoch 0: the lease can be rated, the audit finished.
            let s = ep.lock();
            assert_eq!((s.leases.len(), s.verifiers.pending.len()), (1, 1));
            assert!(s.order_models.is_empty());
        }
        ep.close_epoch(1).await.unwrap();
        let s = ep.lock();
        assert!(s.leases.is_empty());
        assert!(s.verifiers.pending.is_empty());
    }
}
