//! The standard hard filters, public so that a custom matcher applies exactly the ones the
//! default [`WeightedMatcher`](super::WeightedMatcher) applies, with the same reasons.

use super::geo::{self, Unit};
use super::weighted::{Place, measured_us, reason_rank};
use super::{RejectReason, Rejection};
use crate::gpu::GpuModel;
use crate::ids::ProviderId;
use crate::money::Amount;
use crate::order::{Candidate, Order};
use crate::provider::{ProviderProfile, TrustTier};
use crate::{Error, Result};
use std::cmp::Ordering;

/// The round trip to a provider in µs from the tenant's location, `None` when neither
/// measured nor locatable.
pub(crate) fn rtt_us(loc: Option<Unit>, place: &Place) -> Option<u64> {
    match place {
        Place::Measured(us) => Some(*us),
        Place::At(u) => {
            loc.map(|o| geo::rtt_us_for_metres(geo::chord_to_metres(geo::chord(&o, u))))
        }
    }
}

/// The tenant's location as a unit vector; an order whose location is off the globe is
/// refused.
pub(crate) fn order_location(order: &Order) -> Result<Option<Unit>> {
    match &order.request.location {
        None => Ok(None),
        Some(p) => Unit::of(p).map(Some).ok_or_else(|| {
            Error::invalid(
                "location",
                format!("({}, {}) is not a point on Earth", p.lat, p.lon),
            )
        }),
    }
}

/// Where a provider is for the latency filter and criterion, or why its profile is unusable.
pub(crate) fn place_of(profile: &ProviderProfile) -> std::result::Result<Place, RejectReason> {
    match profile.rtt_ms {
        Some(ms) => Ok(Place::Measured(
            measured_us(ms).map_err(RejectReason::InvalidProfile)?,
        )),
        None => Ok(Place::At(Unit::of(&profile.location).ok_or_else(|| {
            RejectReason::InvalidProfile(format!(
                "location ({}, {}) is not a point on Earth",
                profile.location.lat, profile.location.lon
            ))
        })?)),
    }
}

/// The standard hard filters for one order: what [`WeightedMatcher`](super::WeightedMatcher)
/// checks before it scores, as a piece a custom matcher reuses, so that it cannot forget one
/// (the deny list, say) and reports the same [`RejectReason`]s.
///
/// A candidate passes when, in this order (the first failure is its reason):
/// 1. the bid is for this order ([`RejectReason::WrongOrder`]) and carries its own
///    provider's profile ([`RejectReason::InvalidProfile`]);
/// 2. the provider is not in the order's deny list and, when the order has an allow list, in
///    it ([`RejectReason::ProviderDenied`], [`RejectReason::ProviderNotAllowed`]);
/// 3. the GPU model is one the order accepts ([`RejectReason::ModelNotAccepted`]);
/// 4. the region is not denied and, when the order lists regions, listed
///    ([`RejectReason::RegionDenied`], [`RejectReason::RegionNotAllowed`]);
/// 5. the profile is usable: a finite, non-negative measured RTT or a location on the globe
///    ([`RejectReason::InvalidProfile`]);
/// 6. enough free GPUs on one node ([`RejectReason::InsufficientGpus`]), price at most the
///    ceiling ([`RejectReason::AboveCeiling`]), trust tier at least the minimum
///    ([`RejectReason::TierTooLow`]), round trip (measured, else estimated from the
///    great-circle distance) at most `max_latency_ms` ([`RejectReason::LatencyTooHigh`]).
///
/// ```
/// use spheron_core::matching::{StandardFilters, sort_rejections};
/// # use spheron_core::{Candidate, Order, Rejection};
/// # fn eligible(order: &Order, candidates: &[Candidate]) -> spheron_core::Result<()> {
/// let filters = StandardFilters::new(order)?; // fails only for an order off the globe
/// let screened = filters.screen(candidates);
/// for c in &screened.eligible {
///     // score `c` as this matcher likes
/// }
/// let mut rejected: Vec<Rejection> = screened.rejected; // add this matcher's own, then
/// sort_rejections(&mut rejected);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StandardFilters<'a> {
    order: &'a Order,
    loc: Option<Unit>,
    max_rtt_us: Option<u64>,
}

/// Candidates split by [`StandardFilters::screen`].
#[derive(Clone, Debug, Default)]
pub struct Screened<'c> {
    /// The candidates that passed, in their input order.
    pub eligible: Vec<&'c Candidate>,
    /// The others with their reasons, in their input order (see [`sort_rejections`] for the
    /// order a [`Ranking`](super::Ranking) lists them in).
    pub rejected: Vec<Rejection>,
}

impl<'a> StandardFilters<'a> {
    /// The filters of `order`. Fails only when the order itself is unusable (a location
    /// off the globe), as [`Matcher::rank`](super::Matcher::rank) does.
    pub fn new(order: &'a Order) -> Result<Self> {
        Ok(StandardFilters {
            order,
            loc: order_location(order)?,
            max_rtt_us: order.request.max_latency_ms.map(|ms| u64::from(ms) * 1000),
        })
    }

    /// The order these filters are for.
    pub fn order(&self) -> &'a Order {
        self.order
    }

    /// Why `candidate` cannot serve the order, or `None` when it passes every filter.
    pub fn check(&self, candidate: &Candidate) -> Option<RejectReason> {
        self.screen_one(candidate, false).err()
    }

    /// [`check`](Self::check), additionally rejecting a provider for which `banned` holds
    /// ([`RejectReason::Banned`], checked right after the bid's own consistency).
    pub fn check_excluding(
        &self,
        candidate: &Candidate,
        banned: &dyn Fn(ProviderId) -> bool,
    ) -> Option<RejectReason> {
        self.screen_one(candidate, banned(candidate.profile.id))
            .err()
    }

    /// Splits `candidates` into those that pass and those that do not, with reasons.
    pub fn screen<'c>(&self, candidates: &'c [Candidate]) -> Screened<'c> {
        let mut out = Screened::default();
        for c in candidates {
            match self.check(c) {
                None => out.eligible.push(c),
                Some(reason) => out.rejected.push(Rejection {
                    provider: c.profile.id,
                    reason,
                }),
            }
        }
        out
    }

    /// Every filter; on success the provider's validated place (for the latency criterion).
    pub(crate) fn screen_one(
        &self,
        c: &Candidate,
        banned: bool,
    ) -> std::result::Result<Place, RejectReason> {
        if c.bid.order != self.order.id {
            return Err(RejectReason::WrongOrder);
        }
        if c.bid.provider != c.profile.id {
            return Err(RejectReason::InvalidProfile(format!(
                "bid from {} carries the profile of {}",
                c.bid.provider, c.profile.id
            )));
        }
        if banned {
            return Err(RejectReason::Banned);
        }
        if let Some(r) = identity_filter(self.order, c.profile.id, c.bid.model, &c.profile.region) {
            return Err(r);
        }
        let place = place_of(&c.profile)?;
        match self.numeric_filter(
            c.profile.free_gpus,
            c.bid.price_per_gpu_hour,
            c.profile.tier,
            &place,
        ) {
            Some(r) => Err(r),
            None => Ok(place),
        }
    }

    /// The filters that depend on numbers (not on identity, model or region).
    fn numeric_filter(
        &self,
        free: u32,
        price: Amount,
        tier: TrustTier,
        place: &Place,
    ) -> Option<RejectReason> {
        let req = &self.order.request;
        if free < req.count {
            return Some(RejectReason::InsufficientGpus {
                free,
                wanted: req.count,
            });
        }
        if price > req.max_price_per_gpu_hour {
            return Some(RejectReason::AboveCeiling {
                price,
                ceiling: req.max_price_per_gpu_hour,
            });
        }
        if tier < req.min_tier {
            return Some(RejectReason::TierTooLow {
                tier,
                min: req.min_tier,
            });
        }
        if let Some(max_us) = self.max_rtt_us
            && let Some(rtt) = rtt_us(self.loc, place)
            && rtt > max_us
        {
            return Some(RejectReason::LatencyTooHigh {
                rtt_ms: rtt as f64 / 1000.0,
                max_ms: (max_us / 1000) as u32,
            });
        }
        None
    }
}

/// The filters on identity, model and region, in reporting order.
pub(crate) fn identity_filter(
    order: &Order,
    provider: ProviderId,
    model: GpuModel,
    region: &str,
) -> Option<RejectReason> {
    let req = &order.request;
    if req.deny_providers.contains(&provider) {
        return Some(RejectReason::ProviderDenied);
    }
    if !req.allow_providers.is_empty() && !req.allow_providers.contains(&provider) {
        return Some(RejectReason::ProviderNotAllowed);
    }
    if !req.accepts_model(model) {
        return Some(RejectReason::ModelNotAccepted(model));
    }
    if req.deny_regions.iter().any(|r| r == region) {
        return Some(RejectReason::RegionDenied(region.to_string()));
    }
    if !req.regions.is_empty() && !req.regions.iter().any(|r| r == region) {
        return Some(RejectReason::RegionNotAllowed(region.to_string()));
    }
    None
}

/// Sorts rejections as a [`Ranking`](super::Ranking) lists them: by provider, then by the
/// reason's text, so the list is reproducible whatever order candidates arrived in.
pub fn sort_rejections(rejected: &mut [Rejection]) {
    rejected.sort_by(|a, b| {
        a.provider
            .cmp(&b.provider)
            .then_with(|| reason_rank(&a.reason, &b.reason))
    });
}

/// The default matcher's tie-break between two equally scored candidates: lower price
/// first, then lower provider id, then lower model. `Ordering::Less` means `a` ranks first.
pub fn tie_break(a: &Candidate, b: &Candidate) -> Ordering {
    a.bid
        .price_per_gpu_hour
        .cmp(&b.bid.price_per_gpu_hour)
        .then(a.profile.id.cmp(&b.profile.id))
        .then(a.bid.model.cmp(&b.bid.model))
}
