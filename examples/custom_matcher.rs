//! An integrator's matcher plugged into the embedded marketplace: "the cheapest provider
//! within 30 ms of the tenant, ties broken by the larger stake", written against the public
//! [`Matcher`] trait. The order's own hard filters (deny and allow lists, model, free GPUs,
//! ceiling, tier, regions) are the library's [`StandardFilters`], the very code the default
//! matcher runs, so this matcher adds only what it means to change: a latency bound of its
//! own, its score and its tie-break.
//!
//! ```text
//! cargo run --example custom_matcher
//! ```
//!
//! The rent flow is the same as with the default matcher: the cheapest nearby seller of the
//! standard fleet (`fra-bargain`) wins the ranking, fails its proof-of-GPU challenge, and the
//! flow fails over to the next entry of this matcher's ranking.

use spheron::matching::{StandardFilters, sort_rejections};
use spheron::prelude::*;
use spheron::{
    Candidate, Contribution, Criterion, GeoPoint, Order, Ranked, Ranking, RejectReason, Rejection,
    WeightedMatcher,
};
use std::sync::Arc;

/// The cheapest provider within `max_rtt_ms`, ties by stake (larger first), then provider id.
struct CheapestNearby {
    max_rtt_ms: u32,
}

impl CheapestNearby {
    /// This matcher's own filter: the default matcher's deterministic RTT (measured, else
    /// from great-circle distance) at most `max_rtt_ms`.
    fn too_far(&self, order: &Order, c: &Candidate) -> Option<RejectReason> {
        match WeightedMatcher::rtt_ms(order, c) {
            Some(rtt) if rtt <= f64::from(self.max_rtt_ms) => None,
            Some(rtt) => Some(RejectReason::LatencyTooHigh {
                rtt_ms: rtt,
                max_ms: self.max_rtt_ms,
            }),
            None => Some(RejectReason::Other(
                "no measured RTT and no tenant location to estimate one".into(),
            )),
        }
    }
}

impl Matcher for CheapestNearby {
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> spheron::Result<Ranking> {
        let ceiling = order.request.max_price_per_gpu_hour.0;
        let screened = StandardFilters::new(order)?.screen(candidates);
        let mut rejected = screened.rejected;
        let mut ranked = Vec::new();
        for c in screened.eligible {
            if let Some(reason) = self.too_far(order, c) {
                rejected.push(Rejection {
                    provider: c.profile.id,
                    reason,
                });
                continue;
            }
            // One criterion: how far below the ceiling the price is (IEEE-exact operations,
            // so every operator computes the same value).
            let value = (ceiling - c.bid.price_per_gpu_hour.0) as f64 / ceiling as f64;
            ranked.push(Ranked {
                candidate: c.clone(),
                score: value,
                breakdown: vec![Contribution {
                    criterion: Criterion::Cost,
                    value,
                    weight: 1.0,
                    points: value,
                }],
            });
        }
        ranked.sort_by(|a, b| {
            a.candidate
                .bid
                .price_per_gpu_hour
                .cmp(&b.candidate.bid.price_per_gpu_hour)
                .then(b.candidate.profile.stake.cmp(&a.candidate.profile.stake))
                .then(a.provider().cmp(&b.provider()))
        });
        sort_rejections(&mut rejected);
        Ok(Ranking {
            order: order.id,
            ranked,
            rejected,
        })
    }
}

#[tokio::main]
async fn main() -> spheron::Result<()> {
    let market = Marketplace::local()
        .seed(7)
        .matcher(Arc::new(CheapestNearby { max_rtt_ms: 30 }))
        .tenant_funds(Amount(100_000_000))
        .build()
        .await?;
    let token = market.token();
    let request = GpuRequest::builder()
        .gpu("h100")
        .hours(1)
        .max_price_per_gpu_hour(token.parse("max_price_per_gpu_hour", "2.50")?)
        .location(GeoPoint::new(50.94, 6.96)?) // Cologne
        .build()?;
    println!(
        "renting 1 x h100 at <= {}/GPU-hour from the cheapest provider within 30 ms of Cologne",
        token.format(request.max_price_per_gpu_hour)
    );
    let lease = market
        .rent(
            request,
            Workload::command(["sh", "-c", "echo trained; sleep 0.2"]),
        )
        .await?;
    let report = lease.wait().await;

    println!(
        "chosen   {} ({}) at {}/GPU-hour",
        report.provider_name,
        report.region,
        token.format(report.price_per_gpu_hour)
    );
    for c in &report.choice.breakdown {
        println!(
            "  {:<8} value {:.4} x weight {:.1} = {:.4}",
            c.criterion.to_string(),
            c.value,
            c.weight,
            c.points
        );
    }
    println!("skipped  (filters of this matcher, then failed challenges):");
    for s in &report.skipped {
        let name = market
            .provider(s.provider)
            .map(|p| p.name)
            .unwrap_or_else(|_| s.provider.short());
        println!("  {name:<15} {}", s.reason);
    }
    if report.settlement.is_none() {
        return Err(spheron::Error::invalid(
            "settlement",
            "the lease closed without a settlement",
        ));
    }
    Ok(())
}
