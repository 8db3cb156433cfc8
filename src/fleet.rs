//! A simulated provider fleet for the embedded marketplace: providers in several regions with
//! GPU inventory, list prices, stake, history and a bid strategy, each answering proof-of-GPU
//! challenges with the CPU reference prover.

use spheron_core::{
    AccountId, Amount, BidStrategy, GeoPoint, GpuModel, Inventory, Provider, ProviderStats,
    TrustTier,
};
use spheron_gpu::Fault;
use std::collections::BTreeMap;

/// One simulated provider.
#[derive(Clone, Debug)]
pub struct SimProvider {
    /// The registry record (inventory, stake, stats, tier).
    pub provider: Provider,
    /// List price per GPU-hour per model, in base units.
    pub prices: BTreeMap<GpuModel, Amount>,
    /// How it bids.
    pub strategy: BidStrategy,
    /// A deliberate misbehaviour of its prover (`Fault::None` for honest providers).
    pub fault: Fault,
    /// The GPU it really has, when it claims another (its prover runs at this model's pace).
    pub actual_model: Option<GpuModel>,
}

/// Parameters of one simulated provider, for [`SimFleet::provider`].
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// Name; the account id is derived from it.
    pub name: &'static str,
    /// Region label.
    pub region: &'static str,
    /// Data-centre location.
    pub location: (f64, f64),
    /// GPU model.
    pub model: GpuModel,
    /// Nodes.
    pub nodes: u32,
    /// GPUs per node.
    pub per_node: u32,
    /// List price per GPU-hour (base units).
    pub price: u128,
    /// Stake (base units).
    pub stake: u128,
    /// Challenges answered / missed so far.
    pub uptime: (u64, u64),
    /// Leases completed / failed so far.
    pub leases: (u64, u64),
    /// Feedback: sum and count of 1..=5 ratings.
    pub feedback: (u64, u64),
    /// Trust tier.
    pub tier: u8,
    /// Bid strategy.
    pub strategy: BidStrategy,
    /// Prover fault.
    pub fault: Fault,
    /// The GPU it really has, when it lists another (`None`: honest about its model).
    pub actual_model: Option<GpuModel>,
}

impl SimProvider {
    /// This provider's prover: a CPU prover paced like the GPU it really has under
    /// `simulation`, with its fault.
    pub fn prover(&self, simulation: &spheron_gpu::Simulation) -> spheron_gpu::CpuProver {
        let model = self.provider.inventory.models().first().copied();
        let device = model.map(|m| format!("NVIDIA {m}"));
        match self.actual_model.or(model) {
            Some(m) => simulation.prover(m, device, self.fault),
            None => spheron_gpu::CpuProver::with_fault(device, self.fault),
        }
    }
}

/// A set of simulated providers.
#[derive(Clone, Debug, Default)]
pub struct SimFleet {
    /// The providers.
    pub providers: Vec<SimProvider>,
}

/// One whole unit of a 6-decimal token.
const USD: u128 = 1_000_000;

impl SimFleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider.
    #[must_use]
    pub fn provider(mut self, s: ProviderSpec) -> Self {
        let id = AccountId::from_label(s.name);
        let mut prices = BTreeMap::new();
        prices.insert(s.model, Amount(s.price));
        self.providers.push(SimProvider {
            provider: Provider {
                id,
                name: s.name.to_string(),
                endpoint: format!("in-process://{}", s.name),
                region: s.region.to_string(),
                location: GeoPoint {
                    lat: s.location.0,
                    lon: s.location.1,
                },
                inventory: Inventory::uniform(s.model, s.nodes, s.per_node),
                stake: Amount(s.stake),
                stats: ProviderStats {
                    challenges_answered: s.uptime.0,
                    challenges_missed: s.uptime.1,
                    challenges_failed: 0,
                    leases_completed: s.leases.0,
                    leases_failed: s.leases.1,
                    feedback_sum: s.feedback.0,
                    feedback_count: s.feedback.1,
                },
                tier: TrustTier(s.tier),
                banned: false,
            },
            prices,
            strategy: s.strategy,
            fault: s.fault,
            actual_model: s.actual_model,
        });
        self
    }

    /// The standard fleet of the quickstart: twelve providers in six regions, H200 down to T4,
    /// prices in a 6-decimal USD token. `fra-bargain` is the cheapest, best-placed H100 seller
    /// in Europe, but its "H100" gives wrong answers: when the matcher ranks it first for a European
    /// H100 order (as it does with the quickstart's seed), it fails its proof-of-GPU challenge and
    /// the next bid is taken.
    pub fn standard() -> Self {
        let undercut = BidStrategy::UndercutCeiling { discount_bps: 500 };
        let list = BidStrategy::ListPrice;
        let spec =
            |name, region, location, model, nodes, per_node, cents: u128, tier| ProviderSpec {
                name,
                region,
                location,
                model,
                nodes,
                per_node,
                price: cents * (USD / 100),
                stake: 2_000 * USD,
                uptime: (990, 10),
                leases: (120, 3),
                feedback: (480, 110),
                tier,
                strategy: list,
                fault: Fault::None,
                actual_model: None,
            };
        SimFleet::new()
            .provider(ProviderSpec {
                stake: 500 * USD,
                uptime: (400, 4),
                leases: (40, 1),
                feedback: (190, 40),
                fault: Fault::CorruptProducts,
                ..spec(
                    "fra-bargain",
                    "eu-central",
                    (50.11, 8.68),
                    GpuModel::H100Sxm,
                    2,
                    8,
                    149,
                    5,
                )
            })
            .provider(ProviderSpec {
                stake: 10_000 * USD,
                feedback: (540, 112),
                ..spec(
                    "ams-hyperscale",
                    "eu-west",
                    (52.37, 4.90),
                    GpuModel::H100Sxm,
                    4,
                    8,
                    189,
                    7,
                )
            })
            .provider(ProviderSpec {
                strategy: undercut,
                ..spec(
                    "par-gpu-coop",
                    "eu-west",
                    (48.86, 2.35),
                    GpuModel::H100Pcie,
                    2,
                    4,
                    179,
                    5,
                )
            })
            .provider(spec(
                "hel-nordic",
                "eu-north",
                (60.17, 24.94),
                GpuModel::H200,
                2,
                8,
                259,
                6,
            ))
            .provider(spec(
                "iad-compute",
                "us-east",
                (38.95, -77.45),
                GpuModel::H100Sxm,
                8,
                8,
                199,
                7,
            ))
            .provider(spec(
                "sjc-labs",
                "us-west",
                (37.36, -121.93),
                GpuModel::A100_80G,
                4,
                8,
                129,
                6,
            ))
            .provider(spec(
                "dfw-rigs",
                "us-central",
                (32.90, -97.04),
                GpuModel::Rtx4090,
                6,
                4,
                39,
                4,
            ))
            .provider(spec(
                "sin-edge",
                "ap-southeast",
                (1.35, 103.99),
                GpuModel::L40S,
                2,
                4,
                89,
                5,
            ))
            .provider(spec(
                "nrt-inference",
                "ap-northeast",
                (35.77, 140.39),
                GpuModel::L4,
                4,
                8,
                49,
                6,
            ))
            .provider(spec(
                "bom-entry",
                "ap-south",
                (19.09, 72.87),
                GpuModel::T4,
                4,
                4,
                19,
                3,
            ))
            .provider(spec(
                "fra-a10",
                "eu-central",
                (50.05, 8.57),
                GpuModel::A10,
                3,
                4,
                45,
                5,
            ))
            .provider(spec(
                "lhr-a100",
                "eu-west",
                (51.47, -0.45),
                GpuModel::A100_40G,
                2,
                8,
                99,
                4,
            ))
    }
}
