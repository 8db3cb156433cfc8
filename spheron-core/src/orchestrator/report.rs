//! [`LeaseReport`]: everything known about a lease, for the tenant.

use crate::clock::Timestamp;
use crate::escrow::Settlement;
use crate::events::ProgressEvent;
use crate::gpu::GpuModel;
use crate::ids::{AccountId, LeaseId, OrderId, ProviderId};
use crate::lease::LeaseState;
use crate::matching::{Ranked, Rejection};
use crate::money::Amount;
use crate::proof::ProofReport;
use crate::provider::TrustTier;
use serde::{Deserialize, Serialize};

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
    /// The failovers before this lease, oldest first, when the rent had a
    /// [`Checkpoint`](crate::checkpoint::Checkpoint) policy: each lease that lost its
    /// provider and the checkpoint the next one started from. This report's own fields
    /// (`lease`, `provider`, `cost`, ...) are the last lease's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed: Vec<crate::checkpoint::Resume>,
}

impl LeaseReport {
    /// Refund, once settled.
    pub fn refunded(&self) -> Option<Amount> {
        self.settlement.map(|s| s.refunded)
    }

    /// What the whole rent cost: this lease's cost plus that of every lease it resumed
    /// from.
    pub fn total_cost(&self) -> Amount {
        Amount(
            self.resumed
                .iter()
                .fold(self.cost.0, |t, r| t.saturating_add(r.paid.0)),
        )
    }
}
