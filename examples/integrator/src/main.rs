//! An integrator's matcher, built outside the spheron workspace on its public pieces only:
//! the default matcher's standard filters, criteria, tie-break and explanations, plus one
//! criterion of its own ("renewables": the share of the region's grid from renewable
//! sources), plugged into the embedded marketplace to rent once.
//!
//! ```text
//! cargo run --manifest-path examples/integrator/Cargo.toml
//! ```
//!
//! Exits non-zero when the rent fails or the lease closes without a settlement.

use spheron::matching::{CriteriaMatcher, PPM_ONE, StandardFilters};
use spheron::prelude::*;
use spheron::{Candidate, Criterion, MatcherConfig, Order, Ranking};
use std::sync::Arc;

/// Renewable share of each region's grid, in ppm (an integrator's own table).
fn renewables_ppm(region: &str) -> u32 {
    match region {
        "eu-north" => PPM_ONE,
        "eu-west" => 700_000,
        "eu-central" => 500_000,
        "us-west" => 450_000,
        _ => 250_000,
    }
}

/// The default ranking with "renewables" weighed in at 0.3 next to the built-in weights.
struct GreenMatcher {
    inner: CriteriaMatcher,
}

impl GreenMatcher {
    fn new(seed: u64) -> spheron::Result<Self> {
        let inner = CriteriaMatcher::builder(MatcherConfig {
            round_seed: seed,
            ..MatcherConfig::default()
        })
        .criterion("renewables", 0.3, |_: &Order, c: &Candidate| {
            renewables_ppm(&c.profile.region)
        })
        .build()?;
        Ok(GreenMatcher { inner })
    }
}

impl Matcher for GreenMatcher {
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> spheron::Result<Ranking> {
        let ranking = self.inner.rank(order, candidates)?;
        // The same filters are public on their own: what the ranking kept, they pass.
        let filters = StandardFilters::new(order)?;
        if let Some(r) = ranking
            .ranked
            .iter()
            .find(|r| filters.check(&r.candidate).is_some())
        {
            return Err(spheron::Error::Matcher(format!(
                "{} was ranked but fails the standard filters",
                r.candidate.profile.name
            )));
        }
        Ok(ranking)
    }
}

#[tokio::main]
async fn main() -> spheron::Result<()> {
    let seed = 7;
    let market = Marketplace::local()
        .seed(seed)
        .matcher(Arc::new(GreenMatcher::new(seed)?))
        .tenant_funds(Amount(100_000_000))
        .build()
        .await?;
    let token = market.token();
    let request = GpuRequest::builder()
        .gpu("h100")
        .hours(1)
        .max_price_per_gpu_hour(token.parse("max_price_per_gpu_hour", "2.50")?)
        .build()?;
    println!(
        "renting 1 x h100 at <= {}/GPU-hour, renewables weighed in",
        token.format(request.max_price_per_gpu_hour)
    );
    let lease = market
        .rent(request, Workload::command(["sh", "-c", "echo trained"]))
        .await?;
    let report = lease.wait().await;
    println!(
        "chosen   {} ({}) at {}/GPU-hour, score {:.4}",
        report.provider_name,
        report.region,
        token.format(report.price_per_gpu_hour),
        report.choice.score
    );
    for c in &report.choice.breakdown {
        println!(
            "  {:<12} value {:.4} x weight {:.4} = {:.4}",
            c.criterion.to_string(),
            c.value,
            c.weight,
            c.points
        );
    }
    if !report
        .choice
        .breakdown
        .iter()
        .any(|c| matches!(c.criterion, Criterion::Custom(n) if n.as_str() == "renewables"))
    {
        return Err(spheron::Error::Matcher(
            "the custom criterion is missing from the breakdown".into(),
        ));
    }
    for s in &report.skipped {
        let name = market
            .provider(s.provider)
            .map(|p| p.name)
            .unwrap_or_else(|_| s.provider.short());
        println!("skipped  {name:<15} {}", s.reason);
    }
    match &report.settlement {
        Some(s) => println!("settled  {s:?}"),
        None => {
            return Err(spheron::Error::invalid(
                "settlement",
                "the lease closed without a settlement",
            ));
        }
    }
    Ok(())
}
