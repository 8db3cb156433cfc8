//! Builders and seeded random markets shared by the matching tests.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use spheron_core::{
    AccountId, Amount, Bid, Candidate, GeoPoint, GpuModel, GpuRequest, Offer, Order, OrderId,
    ProviderProfile, ProviderStats, Timestamp, TrustTier,
};

pub const REGIONS: [(&str, f64, f64); 4] = [
    ("eu-west", 50.1, 8.7),
    ("us-east", 39.0, -77.5),
    ("ap-south", 19.1, 72.9),
    ("sa-east", -23.5, -46.6),
];

pub const MODELS: [GpuModel; 4] = [
    GpuModel::H100Sxm,
    GpuModel::H100Pcie,
    GpuModel::A100_80G,
    GpuModel::L40S,
];

/// A provider profile with neutral defaults.
pub fn profile(name: &str) -> ProviderProfile {
    ProviderProfile {
        id: AccountId::from_label(name),
        name: name.into(),
        region: "eu-west".into(),
        location: GeoPoint {
            lat: 50.1,
            lon: 8.7,
        },
        rtt_ms: None,
        stake: Amount(0),
        stats: ProviderStats::default(),
        tier: TrustTier(3),
        free_gpus: 8,
        total_free_gpus: 8,
    }
}

pub fn request(gpu: &str, count: u32, ceiling: u128) -> GpuRequest {
    GpuRequest::builder()
        .gpu(gpu)
        .count(count)
        .hours(1)
        .max_price_per_gpu_hour(Amount(ceiling))
        .build()
        .unwrap()
}

pub fn order_of(id: u64, request: GpuRequest) -> Order {
    Order {
        id: OrderId(id),
        tenant: AccountId::from_label("tenant"),
        request,
        created_at: Timestamp(0),
        bid_deadline: Timestamp(0),
    }
}

pub fn order(id: u64, gpu: &str, count: u32, ceiling: u128) -> Order {
    order_of(id, request(gpu, count, ceiling))
}

pub fn bid(order: &Order, offer: &Offer) -> Candidate {
    Candidate {
        bid: Bid {
            order: order.id,
            provider: offer.profile.id,
            model: offer.model,
            price_per_gpu_hour: offer.price_per_gpu_hour,
            placed_at: order.created_at,
        },
        profile: offer.profile.clone(),
    }
}

pub fn bids(order: &Order, offers: &[Offer]) -> Vec<Candidate> {
    offers.iter().map(|o| bid(order, o)).collect()
}

pub struct Gen(pub ChaCha8Rng);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` random offers: several models per provider, four regions, prices around 2.0
/// (6 decimals), some measured RTTs, stakes, ratings and tiers all over the range.
pub fn market(seed: u64, n: usize) -> Vec<Offer> {
    let mut g = Gen::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut p = 0usize;
    while out.len() < n {
        let name = format!("prov-{seed}-{p}");
        p += 1;
        let (region, lat, lon) = REGIONS[g.below(REGIONS.len() as u64) as usize];
        let mut base = profile(&name);
        base.region = region.into();
        base.location = GeoPoint {
            lat: (lat + (g.unit() - 0.5) * 10.0).clamp(-90.0, 90.0),
            lon: (lon + (g.unit() - 0.5) * 10.0).clamp(-180.0, 180.0),
        };
        if g.chance(15) {
            base.rtt_ms = Some(g.unit() * 150.0);
        }
        base.stake = Amount(if g.chance(30) {
            0
        } else {
            u128::from(g.below(5_000)) * 10u128.pow(18)
        });
        let count = g.below(30);
        base.stats = ProviderStats {
            feedback_count: count,
            feedback_sum: count + g.below(4 * count + 1),
            ..ProviderStats::default()
        };
        base.tier = TrustTier(g.below(8) as u8);
        let models = 1 + g.below(2);
        for _ in 0..models {
            if out.len() == n {
                break;
            }
            let model = MODELS[g.below(MODELS.len() as u64) as usize];
            if out
                .iter()
                .any(|o: &Offer| o.profile.id == base.id && o.model == model)
            {
                continue;
            }
            let mut prof = base.clone();
            prof.free_gpus = g.below(9) as u32;
            prof.total_free_gpus = prof.free_gpus + g.below(9) as u32;
            out.push(Offer {
                profile: prof,
                model,
                price_per_gpu_hour: Amount(500_000 + u128::from(g.below(3_500_000))),
            });
        }
    }
    out
}

/// A random order over `offers`: model family, count, ceiling, location, latency bound,
/// regions, tier and provider lists all vary.
pub fn random_order(seed: u64, id: u64, offers: &[Offer]) -> Order {
    let mut g = Gen::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let gpu = ["h100", "a100-80g", "l40s", "h100-pcie"][g.below(4) as usize];
    let mut req = request(
        gpu,
        1 + g.below(4) as u32,
        1_000_000 + u128::from(g.below(3_500_000)),
    );
    if g.chance(70) {
        let (_, lat, lon) = REGIONS[g.below(REGIONS.len() as u64) as usize];
        req.location = Some(GeoPoint { lat, lon });
    }
    if g.chance(30) {
        req.max_latency_ms = Some(10 + g.below(150) as u32);
    }
    if g.chance(25) {
        req.regions = vec![REGIONS[g.below(4) as usize].0.into()];
    }
    if g.chance(20) {
        req.deny_regions = vec![REGIONS[g.below(4) as usize].0.into()];
    }
    req.min_tier = TrustTier(g.below(4) as u8);
    if !offers.is_empty() && g.chance(25) {
        for _ in 0..3 {
            let o = &offers[g.below(offers.len() as u64) as usize];
            req.deny_providers.push(o.profile.id);
        }
    }
    if !offers.is_empty() && g.chance(10) {
        for _ in 0..4 {
            let o = &offers[g.below(offers.len() as u64) as usize];
            req.allow_providers.push(o.profile.id);
        }
    }
    order_of(id, req)
}
