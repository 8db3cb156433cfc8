//! Providers: identity, location, GPU inventory, stake, behaviour statistics and trust tier.

use crate::gpu::{GeoPoint, GpuModel};
use crate::ids::ProviderId;
use crate::money::Amount;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A trust tier from behaviour: `0` is unranked (new or banned-from-rewards), `7` the most trusted.
///
/// Higher is better, so an order's `min_tier` is a lower bound.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TrustTier(pub u8);

impl TrustTier {
    /// Unranked: new providers start here.
    pub const UNRANKED: TrustTier = TrustTier(0);
    /// The highest tier.
    pub const MAX: TrustTier = TrustTier(7);

    /// A validated tier (`0..=7`).
    pub fn new(t: u8) -> crate::Result<Self> {
        if t > Self::MAX.0 {
            return Err(crate::Error::invalid(
                "min_tier",
                format!("{t} is above the highest tier {}", Self::MAX.0),
            ));
        }
        Ok(TrustTier(t))
    }
}

impl fmt::Display for TrustTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tier {}", self.0)
    }
}

/// Behaviour statistics of a provider, the input of tiering and of the rating criterion.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStats {
    /// Liveness and GPU challenges answered in time.
    pub challenges_answered: u64,
    /// Challenges missed (no answer in time).
    pub challenges_missed: u64,
    /// Challenges answered but failed (wrong product, too slow, ...).
    pub challenges_failed: u64,
    /// Leases that completed or were stopped by the tenant.
    pub leases_completed: u64,
    /// Leases that ended because the provider failed.
    pub leases_failed: u64,
    /// Sum of feedback ratings (each 1..=5).
    pub feedback_sum: u64,
    /// Number of feedback ratings.
    pub feedback_count: u64,
}

/// The rating prior: `weight_milli / 1000` pseudo-ratings at `mean_milli / 1000` stars, so a
/// provider without feedback is neither best nor worst and one bad rating among many good
/// ones does not sink it.
///
/// One prior serves the matcher's rating criterion and the tier policy's rating threshold:
/// [`RatingPrior::STANDARD`] is the default of both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RatingPrior {
    /// Prior mean, thousandths of a star (`1_000..=5_000`).
    pub mean_milli: u32,
    /// Prior weight, thousandths of a rating (at least 1).
    pub weight_milli: u64,
}

impl RatingPrior {
    /// 4.20 stars weighing 5 ratings: the prior the tier table is calibrated against.
    pub const STANDARD: RatingPrior = RatingPrior {
        mean_milli: 4_200,
        weight_milli: 5_000,
    };
}

impl Default for RatingPrior {
    fn default() -> Self {
        RatingPrior::STANDARD
    }
}

impl ProviderStats {
    /// Every challenge issued: answered and passed, missed, or answered and failed.
    pub fn challenges(&self) -> u64 {
        self.challenges_answered
            .saturating_add(self.challenges_missed)
            .saturating_add(self.challenges_failed)
    }

    /// Uptime in basis points: challenges answered and passed over every challenge issued
    /// (a miss and a failed proof both count against it); `None` with no challenges yet.
    ///
    /// The one definition of uptime: the tier policy holds it against its table.
    pub fn uptime_bps(&self) -> Option<u32> {
        let total = self.challenges();
        (total > 0).then(|| {
            (u128::from(self.challenges_answered.min(total)) * 10_000 / u128::from(total)) as u32
        })
    }

    /// Completion rate in basis points, `None` with no finished leases.
    pub fn completion_bps(&self) -> Option<u32> {
        let total = self.leases_completed.saturating_add(self.leases_failed);
        (total > 0).then(|| (u128::from(self.leases_completed) * 10_000 / u128::from(total)) as u32)
    }

    /// Bayesian mean rating in millionths of a star (`1_000_000..=5_000_000` for ratings
    /// in `1..=5`), rounded down: `(sum + mean * weight) / (count + weight)`.
    ///
    /// The one rating formula: the matcher maps it onto `0..=1`, the tier policy compares
    /// it (in hundredths of a star) with its table.
    pub fn rating_micro(&self, prior: RatingPrior) -> u64 {
        let w = u128::from(prior.weight_milli.max(1));
        let num = u128::from(self.feedback_sum) * 1_000_000 + u128::from(prior.mean_milli) * w;
        let den = u128::from(self.feedback_count) * 1_000 + w;
        // One u128 division where `num * 1000` fits (always, for real counts); the 256-bit
        // path only past that.
        let micro = match num.checked_mul(1_000) {
            Some(n) => n / den,
            None => crate::money::mul_div_floor_wide(num, 1_000, den).unwrap_or(u128::MAX),
        };
        micro.min(u128::from(u64::MAX)) as u64
    }
}

/// One node of a provider: a machine with GPUs of one model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuNode {
    /// Node name, unique within the provider.
    pub name: String,
    /// The GPU model in this node.
    pub model: GpuModel,
    /// GPUs installed.
    pub total: u32,
    /// GPUs not leased.
    pub free: u32,
}

/// A provider's GPUs, per node: a workload's GPUs must all sit on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The nodes.
    pub nodes: Vec<GpuNode>,
}

impl Inventory {
    /// An inventory of `nodes` identical nodes with `per_node` GPUs of `model`.
    pub fn uniform(model: GpuModel, nodes: u32, per_node: u32) -> Self {
        Inventory {
            nodes: (0..nodes)
                .map(|i| GpuNode {
                    name: format!("node-{i}"),
                    model,
                    total: per_node,
                    free: per_node,
                })
                .collect(),
        }
    }

    /// Free GPUs of `model` over all nodes.
    pub fn free(&self, model: GpuModel) -> u32 {
        self.nodes
            .iter()
            .filter(|n| n.model == model)
            .map(|n| n.free)
            .sum()
    }

    /// The largest number of free GPUs of `model` on a single node.
    pub fn largest_free_block(&self, model: GpuModel) -> u32 {
        self.nodes
            .iter()
            .filter(|n| n.model == model)
            .map(|n| n.free)
            .max()
            .unwrap_or(0)
    }

    /// Reserves `count` GPUs of `model` on the node with the least sufficient free GPUs
    /// (best fit, to limit fragmentation). Returns the node name, or `None` when no node fits.
    pub fn reserve(&mut self, model: GpuModel, count: u32) -> Option<String> {
        let node = self
            .nodes
            .iter_mut()
            .filter(|n| n.model == model && n.free >= count)
            .min_by_key(|n| n.free)?;
        node.free -= count;
        Some(node.name.clone())
    }

    /// Returns `count` GPUs to `node`, never above its total.
    pub fn release(&mut self, node: &str, count: u32) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == node) {
            n.free = (n.free + count).min(n.total);
        }
    }

    /// The models present, in catalog order.
    pub fn models(&self) -> Vec<GpuModel> {
        let mut m: Vec<GpuModel> = self.nodes.iter().map(|n| n.model).collect();
        m.sort();
        m.dedup();
        m
    }
}

/// What the marketplace knows about a provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    /// The provider's account.
    pub id: ProviderId,
    /// A human name.
    pub name: String,
    /// Where its agent is reached (URL or in-process label).
    pub endpoint: String,
    /// Region label, e.g. `eu-west`.
    pub region: String,
    /// Location of its data centre.
    pub location: GeoPoint,
    /// GPUs per node.
    pub inventory: Inventory,
    /// Stake in SPHN base units.
    pub stake: Amount,
    /// Behaviour statistics.
    pub stats: ProviderStats,
    /// Current trust tier.
    pub tier: TrustTier,
    /// Banned providers are never matched.
    pub banned: bool,
}

/// The snapshot of a provider that a matcher sees with each bid.
///
/// Built by the marketplace from its own registry, never from what the bidder claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderProfile {
    /// The provider's account.
    pub id: ProviderId,
    /// A human name.
    pub name: String,
    /// Region label.
    pub region: String,
    /// Location of its data centre.
    pub location: GeoPoint,
    /// Measured round-trip time from the tenant, when known.
    pub rtt_ms: Option<f64>,
    /// Stake in SPHN base units.
    pub stake: Amount,
    /// Behaviour statistics.
    pub stats: ProviderStats,
    /// Current trust tier.
    pub tier: TrustTier,
    /// Free GPUs of the bid's model on the node it would use (largest free block).
    pub free_gpus: u32,
    /// Free GPUs of the bid's model over all nodes.
    pub total_free_gpus: u32,
}

impl Provider {
    /// The profile a matcher sees for a bid on `model`.
    pub fn profile(&self, model: GpuModel) -> ProviderProfile {
        ProviderProfile {
            id: self.id,
            name: self.name.clone(),
            region: self.region.clone(),
            location: self.location,
            rtt_ms: None,
            stake: self.stake,
            stats: self.stats.clone(),
            tier: self.tier,
            free_gpus: self.inventory.largest_free_block(model),
            total_free_gpus: self.inventory.free(model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_is_visible() {
        let mut inv = Inventory::uniform(GpuModel::H100Sxm, 4, 2);
        assert_eq!(inv.free(GpuModel::H100Sxm), 8);
        assert_eq!(inv.largest_free_block(GpuModel::H100Sxm), 2);
        assert_eq!(inv.reserve(GpuModel::H100Sxm, 8), None);
        let node = inv.reserve(GpuModel::H100Sxm, 2).unwrap();
        assert_eq!(inv.free(GpuModel::H100Sxm), 6);
        inv.release(&node, 5);
        assert_eq!(inv.free(GpuModel::H100Sxm), 8);
    }

    #[test]
    fn rating_prior_puts_new_providers_in_the_middle() {
        let fresh = ProviderStats::default();
        let middle = RatingPrior {
            mean_milli: 3_000,
            weight_milli: 5_000,
        };
        assert_eq!(fresh.rating_micro(middle), 3_000_000);
        assert_eq!(fresh.rating_micro(RatingPrior::STANDARD), 4_200_000);
        let loved = ProviderStats {
            feedback_sum: 50,
            feedback_count: 10,
            ..Default::default()
        };
        // (50 + 3 * 5) / 15 = 4.333...
        assert_eq!(loved.rating_micro(middle), 4_333_333);
        assert_eq!(fresh.uptime_bps(), None);
    }

    #[test]
    fn uptime_counts_misses_and_failures_against_it() {
        let s = ProviderStats {
            challenges_answered: 8,
            challenges_missed: 1,
            challenges_failed: 1,
            ..Default::default()
        };
        assert_eq!(s.challenges(), 10);
        assert_eq!(s.uptime_bps(), Some(8_000));
    }
}
