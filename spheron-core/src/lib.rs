//! # spheron-core
//!
//! The pure heart of spheron: domain types (money, GPUs, requests, orders, bids, leases,
//! providers), the plug-point traits, and the logic that needs no network or process I/O:
//! the lease state machine, the escrow ledger, the matcher, the tier policy, the in-process
//! market and the rent flow.
//!
//! | trait | what it decides or does |
//! |---|---|
//! | [`Matcher`] | ranks bids for an order, assigns batches without double-booking |
//! | [`TierPolicy`] | trust tiers, reward multipliers, penalties |
//! | [`ChallengeProver`] / [`ChallengeVerifier`] | proof-of-GPU, prover and verifier sides |
//! | [`Escrow`] | deposit, lock, lease, per-second settlement, stake, slash, withdraw |
//! | [`WorkloadLauncher`] | launch, status, logs, stop |
//! | [`StakeVault`] | provider stake apart from payment: stake, staked, slash |
//! | [`Market`] | publish orders, place and collect bids, record matches |
//! | [`ProviderAgent`] | the provider side of a market: whether and what to bid |
//! | [`ProverDirectory`] | how the rent flow reaches a provider's prover |
//! | [`EntropySource`] | challenge randomness (OS entropy; no seeded source) |
//! | [`LeaseControl`] | what a [`LeaseHandle`] drives (embedded flow or network client) |
//! | [`Clock`] | real or simulated time |
//!
//! ```
//! use spheron_core::{Amount, GpuRequest, GpuModel};
//!
//! let req = GpuRequest::builder()
//!     .gpu("h100")
//!     .count(8)
//!     .hours(2)
//!     .max_price_per_gpu_hour(Amount(3_000_000)) // 3.00 in a 6-decimal token
//!     .region("eu-west")
//!     .build()?;
//! assert!(req.accepts_model(GpuModel::H100Pcie));
//! assert_eq!(req.budget()?, Amount(48_000_000));
//! # Ok::<(), spheron_core::Error>(())
//! ```

pub mod bidding;
pub mod checkpoint;
pub mod clock;
pub mod cost;
pub mod entropy;
pub mod error;
pub mod escrow;
pub mod events;
pub mod gpu;
pub mod history;
pub mod ids;
pub mod launcher;
pub mod lease;
pub mod market;
pub mod matching;
pub mod money;
pub mod orchestrator;
pub mod order;
pub mod proof;
pub mod prover_directory;
pub mod provider;
pub mod provider_agent;
pub mod registry;
pub mod request;
pub mod stake;
pub mod tier;

#[cfg(any(test, feature = "test-utils"))]
pub mod conformance;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use bidding::{BidStrategy, StrategyAgent};
pub use checkpoint::{Checkpoint, RESUME_ENV, Resume};
pub use clock::{Clock, SimClock, SystemClock, Timestamp};
pub use cost::{IdleDetector, SpendCommitment, SpendLimit};
pub use entropy::{EntropySource, OsEntropy};
pub use error::{Error, Result};
pub use escrow::{Balance, Escrow, LeaseTerms, LedgerTotals, MemoryEscrow, Settlement};
pub use events::{ProgressEvent, Step};
pub use gpu::{GeoPoint, GpuModel, HardwareClass};
pub use ids::{AccountId, LeaseId, OrderId, ProviderId};
pub use launcher::{
    Activity, Endpoint, LaunchSpec, LineSplitter, LogBuffer, LogLine, LogSource, LogStream, Secret,
    Workdir, Workload, WorkloadId, WorkloadKind, WorkloadLauncher, WorkloadStatus,
};
pub use lease::{CloseReason, LeaseEvent, LeaseState};
pub use market::{LocalMarket, Market, MarketEvent};
pub use matching::{
    Assignment, Contribution, CriteriaMatcher, CriteriaMatcherBuilder, Criterion, CriterionName,
    IndexStats, Matcher, MatcherConfig, Offer, PPM_ONE, ProviderIndex, Ranked, Ranking,
    RejectReason, Rejection, Scorer, Screened, StandardFilters, WeightedMatcher, Weights,
    greedy_assign, improved_assign, optimal_assign, sort_rejections, tie_break,
};
pub use money::{Amount, Token, mul_div_floor_wide};
pub use orchestrator::{FlowConfig, LeaseControl, LeaseHandle, LeaseReport, Orchestrator, Parts};
pub use order::{Bid, Candidate, Order};
pub use proof::{
    Challenge, ChallengeProver, ChallengeVerifier, Commitment, FailReason, Opening, ProofReport,
    ProofTiming, Reveal, Verdict,
};
pub use prover_directory::{ProverDirectory, Provers};
pub use provider::{
    GpuNode, Inventory, Provider, ProviderProfile, ProviderStats, RatingPrior, TrustTier,
};
pub use provider_agent::ProviderAgent;
pub use registry::Registry;
pub use request::{GpuRequest, GpuRequestBuilder};
pub use stake::StakeVault;
pub use tier::{
    EpochConfig, EpochProcessor, EpochReport, Penalty, PenaltyRecord, PenaltyRoute, ProviderEpoch,
    RecheckOutcome, ReputationTierPolicy, Standing, TierConfig, TierDecision, TierHistory,
    TierPolicy, UptimeTierPolicy, VerdictId, VerdictReceipt, VerifierConfig, VerifierEpoch,
    VerifierStanding, Violation,
};
