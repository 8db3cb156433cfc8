//! Quickstart: an embedded marketplace with a simulated fleet rents one H100-class GPU for a
//! short workload that really runs, shows every step, and prints the report.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use futures::StreamExt;
use spheron::prelude::*;
use spheron::{GeoPoint, LogSource, Step};

#[tokio::main]
async fn main() -> spheron::Result<()> {
    // A fixed seed makes the run reproducible (the matcher's random term and the challenge
    // entropy); SPHERON_SEED overrides it.
    let seed = std::env::var("SPHERON_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let market = Marketplace::local()
        .seed(seed)
        .tenant_funds(Amount(100_000_000)) // 100 USD in a 6-decimal token
        .build()
        .await?;
    let token = market.token();
    let usd = |a: Amount| token.format(a);

    println!("== spheron quickstart: embedded marketplace ==");
    println!("fleet:");
    for p in market.providers() {
        let model = p.inventory.models()[0];
        println!(
            "  {:<15} {:<13} {:>3} x {:<9} {:<7} stake {}",
            p.name,
            p.region,
            p.inventory.free(model),
            model.name(),
            p.tier.to_string(),
            usd(p.stake),
        );
    }

    let tenant = market.tenant();
    let bargain = AccountId::from_label("fra-bargain");
    let before = Snapshot::take(&market, &[tenant, bargain, market.verifier_account()]).await?;

    // Progress: print every step as it happens.
    let mut events = market.events();
    let progress = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if matches!(e.step, Step::Verified { .. }) {
                // The embedded fleet's GPUs are CPUs paced at a tiny fraction of a GPU's rate.
                println!("  [{}] {} [simulated rate]", e.order, e.step);
            } else {
                println!("  [{}] {}", e.order, e.step);
            }
            if matches!(e.step, Step::Settled { .. }) {
                break;
            }
        }
    });

    let request = GpuRequest::builder()
        .gpu("h100")
        .count(1)
        .hours(1)
        .max_price_per_gpu_hour(token.parse("max_price_per_gpu_hour", "2.50")?)
        .region("eu-central")
        .region("eu-west")
        .location(GeoPoint::new(50.94, 6.96)?) // the tenant sits in Cologne
        .build()?;
    println!(
        "\nrenting 1 x h100 for up to 1 h at <= {}/GPU-hour in eu-central/eu-west (budget {})",
        usd(request.max_price_per_gpu_hour),
        usd(request.budget()?)
    );
    let workload = Workload::command([
        "sh",
        "-c",
        "for step in 1 2 3 4 5; do echo \"step $step loss=$(echo \"scale=3; 2/$step\" | bc 2>/dev/null || echo $step)\"; sleep 0.5; done; echo done",
    ]);
    let lease = market.rent(request, workload).await?;

    let mut logs = lease.logs()?;
    while let Some(line) = logs.next().await {
        if line.source != LogSource::System {
            println!("  | {}", line.line);
        }
    }
    let report = lease.wait().await;
    let _ = progress.await;
    let after = Snapshot::take(&market, &[tenant, bargain, market.verifier_account()]).await?;

    println!("\n== report ==");
    println!("lease          {} ({})", report.lease, report.state);
    println!(
        "provider       {} ({}, {})",
        report.provider_name,
        report.provider.short(),
        report.region
    );
    println!("trust          {}", report.tier_reason);
    println!("gpu            {} x {}", report.gpus, report.model);
    println!("score          {:.4}", report.choice.score);
    for c in &report.choice.breakdown {
        println!(
            "  {:<13} value {:.3} x weight {:.2} = {:.4}",
            c.criterion.to_string(),
            c.value,
            c.weight,
            c.points
        );
    }
    println!(
        "proof of GPU   {} (SIMULATED: CPU provers paced at {:e} of each GPU's INT8 rate; \
         n={}, K={}, commit in {} us)",
        report.proof.verdict,
        spheron::gpu::Simulation::standard().scale,
        report.proof.n,
        report.proof.batch,
        report.proof.timing.commit_us
    );
    let failed: Vec<_> = report
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, spheron::RejectReason::ChallengeFailed(_)))
        .collect();
    println!(
        "failover       {} provider(s) failed proof-of-GPU before this one:",
        failed.len()
    );
    for s in &failed {
        let p = market.provider(s.provider)?;
        println!(
            "  {} ({}): {}; now {}, stake {}{}",
            p.name,
            s.provider.short(),
            s.reason,
            p.tier,
            usd(market.balance(s.provider).await?.staked),
            if p.banned { ", banned" } else { "" }
        );
    }
    let filtered = report.skipped.len() - failed.len();
    println!("filtered       {filtered} other provider(s), each with its reason:");
    for s in report.skipped.iter().filter(|s| !failed.contains(s)) {
        let name = market.provider(s.provider).map(|p| p.name)?;
        println!("  {name}: {}", s.reason);
    }
    let settlement = report
        .settlement
        .ok_or_else(|| Error::invalid("settlement", "the lease closed without a settlement"))?;
    println!("price          {}/GPU-hour", usd(report.price_per_gpu_hour));
    println!("billed         {} s", settlement.seconds);
    println!("cost           {}", usd(settlement.paid));
    println!("refund         {}", usd(settlement.refunded));
    println!(
        "budget check   cost + refund = {} = budget {}",
        usd(Amount(settlement.paid.0 + settlement.refunded.0)),
        usd(report.budget)
    );

    println!("\n== balances (available / staked) ==");
    for ((name, b), (_, a)) in before.rows.iter().zip(&after.rows) {
        println!(
            "  {:<16} {:>14} / {:<14} -> {:>14} / {}",
            name,
            usd(b.available),
            usd(b.staked),
            usd(a.available),
            usd(a.staked)
        );
    }
    let chosen = market.balance(report.provider).await?;
    println!(
        "  {:<16} earned {}",
        report.provider_name,
        usd(chosen.available)
    );
    let totals = market
        .ledger_totals()
        .ok_or_else(|| Error::invalid("ledger", "no in-memory ledger"))?;
    println!(
        "ledger         deposited {} = withdrawn {} + available {} + locked {} + staked {}: {}",
        usd(totals.deposited),
        usd(totals.withdrawn),
        usd(totals.available),
        usd(totals.locked),
        usd(totals.staked),
        if totals.is_balanced() {
            "balanced, nothing lost"
        } else {
            "UNBALANCED"
        }
    );
    // The tenant rates the lease; the epoch processor folds it into the provider's tier.
    market.rate(&report, 5)?;
    let standing = market.standing(report.provider)?;
    println!(
        "feedback       rated 5/5; {} stands at {}",
        report.provider_name, standing.tier
    );

    if !totals.is_balanced() || report.cost.0 + settlement.refunded.0 != report.budget.0 {
        return Err(Error::invalid("ledger", "conservation check failed"));
    }
    if failed.is_empty() {
        return Err(Error::invalid(
            "seed",
            "this seed's ranking put an honest provider first, so no failover was shown",
        ));
    }
    Ok(())
}

struct Snapshot {
    rows: Vec<(String, spheron::Balance)>,
}

impl Snapshot {
    async fn take(market: &Marketplace, accounts: &[AccountId]) -> spheron::Result<Self> {
        let mut rows = Vec::new();
        for &a in accounts {
            let name = if a == market.tenant() {
                "tenant".to_string()
            } else if a == market.verifier_account() {
                "verifier".to_string()
            } else {
                market
                    .provider(a)
                    .map(|p| p.name)
                    .unwrap_or_else(|_| a.short())
            };
            rows.push((name, market.balance(a).await?));
        }
        Ok(Snapshot { rows })
    }
}
