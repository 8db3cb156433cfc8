//! Rents a GPU end to end on a local anvil chain: the order, the providers' bids, the match
//! and the escrow all live in the `SpheronMarket` contract; the workload runs as a local
//! process; the lease settles per second of block time.
//!
//! ```sh
//! bash scripts/chain-setup.sh            # installs anvil (npm) once
//! cargo run --example evm_market --features chain
//! ```
#![allow(clippy::unwrap_used)]

use spheron::SimFleet;
use spheron::chain::MarketConfig;
use spheron::chain::alloy::primitives::U256;
use spheron::chain::anvil::TestChain;
use spheron::chain::bindings::TestToken;
use spheron::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh local chain with SPHN, a stable token and the market deployed.
    let tc = TestChain::start(&MarketConfig::default()).await?;
    println!("anvil at {} market {}", tc.endpoint(), tc.addresses.market);
    let sphn = TestToken::new(tc.addresses.sphn, tc.chain.provider().clone());
    let usds = TestToken::new(tc.addresses.stable, tc.chain.provider().clone());
    let whole = 1_000_000u128; // USDS has 6 decimals
    // Three providers (dev accounts 3..=5) get SPHN to stake; the tenant (dev account 2) USDS.
    for a in &tc.accounts[3..6] {
        tc.chain
            .send(tc.admin(), sphn.mint(*a, U256::from(10u128.pow(24))))
            .await?;
    }
    tc.chain
        .send(
            tc.admin(),
            usds.mint(tc.accounts[2], U256::from(1_000 * whole)),
        )
        .await?;
    let fleet = SimFleet::standard();
    let mut builder = Marketplace::evm(&tc.endpoint(), tc.keys[2].clone(), tc.addresses)
        .operator(tc.keys[1].clone())
        .payment(Token::usd(), tc.addresses.stable)
        .bid_window(std::time::Duration::from_secs(1))
        .seed(7);
    for (key, sim) in tc.keys[3..6].iter().zip(fleet.providers) {
        builder = builder.provider(key.clone(), sim);
    }
    let market = builder.build().await?;
    market.deposit(Amount(1_000 * whole)).await?;

    let request = GpuRequest::builder()
        .gpu("h100")
        .hours(1)
        .max_price_per_gpu_hour(Amount(5 * whole))
        .build()?;
    let lease = market
        .rent(
            request,
            Workload::command(["sh", "-c", "sleep 3; echo hello from a lease paid on chain"]),
        )
        .await?;
    let report = lease.wait().await;
    println!(
        "lease {} on {} ({}) at {} per GPU-hour: {}",
        report.lease, report.provider_name, report.model, report.price_per_gpu_hour.0, report.state
    );
    println!("settlement on chain: {:?}", report.settlement);
    println!(
        "paid {} USDS base units (less the 1% protocol fee to the provider), refunded {:?}",
        report.cost.0,
        report.refunded()
    );
    let b = market.balance(market.tenant()).await?;
    println!(
        "tenant escrow on chain: available {} locked {}",
        b.available.0, b.locked.0
    );
    Ok(())
}
