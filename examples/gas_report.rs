//! Gas used by each market operation and by one full order -> bid -> match -> close lifecycle,
//! measured on a local anvil node.
//!
//! ```sh
//! bash scripts/chain-setup.sh            # installs anvil (npm) once
//! cargo run --example gas_report --features chain
//! ```
#![allow(clippy::unwrap_used)]

use spheron::chain::alloy::primitives::{B256, Bytes, U256, Uint};
use spheron::chain::alloy::providers::ext::AnvilApi;
use spheron::chain::anvil::TestChain;
use spheron::chain::bindings::{SpheronMarket, TestToken};
use spheron::chain::{Chain, MarketConfig};

type Receipt = spheron::chain::alloy::rpc::types::TransactionReceipt;

/// A typical registration metadata document (the SDK writes name, coordinates, inventory).
const META: &str = r#"{"name":"gpu-eu-1","lat":52.37,"lon":4.90,"gpus":[{"model":"h100-sxm","count":8,"memory_gib":80}]}"#;

/// A typical order spec (the tenant's full request).
const SPEC: &str = r#"{"gpu":["h100-sxm","h100-pcie"],"count":8,"duration_secs":3600,"max_price_per_gpu_hour":"3000000","regions":["eu-west","eu-central"],"min_tier":3}"#;

fn gas(r: &Receipt) -> u64 {
    r.gas_used
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tc = TestChain::start(&MarketConfig::default()).await?;
    let c: &Chain = &tc.chain;
    let m = SpheronMarket::new(tc.addresses.market, c.provider().clone());
    let (sphn, usds) = (tc.addresses.sphn, tc.addresses.stable);
    let (tenant, provider, verifier) = (tc.accounts[2], tc.accounts[3], tc.accounts[4]);
    let unit: u128 = 1_000_000; // USDS, 6 decimals
    let sphn_unit: u128 = 10u128.pow(18);
    c.provider().anvil_set_block_timestamp_interval(0).await?;
    let mut now = c.block_time().await? + 10;
    let mut rows: Vec<(String, u64)> = Vec::new();

    for (who, token, amount) in [
        (tenant, usds, 1_000_000 * unit),
        (tenant, sphn, 1_000 * sphn_unit),
        (provider, sphn, 1_000 * sphn_unit),
    ] {
        let t = TestToken::new(token, c.provider().clone());
        c.send(tc.admin(), t.mint(who, U256::from(amount))).await?;
        c.send(who, t.approve(tc.addresses.market, U256::MAX))
            .await?;
    }
    let r = c
        .send(tenant, m.deposit(usds, U256::from(500_000 * unit)))
        .await?;
    rows.push(("deposit (first, ERC-20 pull)".into(), gas(&r)));
    let r = c
        .send(tenant, m.deposit(usds, U256::from(500_000 * unit)))
        .await?;
    rows.push(("deposit (again)".into(), gas(&r)));
    c.send(tenant, m.deposit(sphn, U256::from(1_000 * sphn_unit)))
        .await?;
    let r = c
        .send(provider, m.deposit(sphn, U256::from(1_000 * sphn_unit)))
        .await?;
    rows.push(("deposit SPHN (provider)".into(), gas(&r)));
    let r = c
        .send(
            provider,
            m.register(
                "https://gpu.example:8443".into(),
                "eu-west".into(),
                Bytes::from(vec![2u8; 33]),
                B256::repeat_byte(0xc7),
                META.into(),
            ),
        )
        .await?;
    rows.push((
        "register provider (with cert hash and meta)".into(),
        gas(&r),
    ));
    let r = c
        .send(
            provider,
            m.register(
                "https://gpu.example:8444".into(),
                "eu-west".into(),
                Bytes::from(vec![2u8; 33]),
                B256::repeat_byte(0xc8),
                META.into(),
            ),
        )
        .await?;
    rows.push(("re-register provider (update)".into(), gas(&r)));
    let r = c.send(provider, m.stake(1_000 * sphn_unit)).await?;
    rows.push(("stake (all available SPHN)".into(), gas(&r)));

    // One full lifecycle: the provider's first payout in this token.
    fn step(rows: &mut Vec<(String, u64)>, total: &mut u64, name: &str, r: &Receipt) {
        *total += gas(r);
        rows.push((format!("lifecycle: {name}"), gas(r)));
    }
    for (id, label, token, price) in [
        (
            1,
            "USDS, 1% fee, first payout and first fee",
            usds,
            2 * unit,
        ),
        (2, "SPHN, no fee, first payout", sphn, 2 * sphn_unit),
        (3, "USDS, 1% fee, steady state", usds, 2 * unit),
    ] {
        let mut lifecycle = 0u64;
        c.provider().anvil_set_next_block_timestamp(now).await?;
        let r = c
            .send(tenant, m.createOrder(id, token, 3 * price / 2, 8, 3600, 60))
            .await?;
        step(
            &mut rows,
            &mut lifecycle,
            &format!("createOrder ({label})"),
            &r,
        );
        let r = c
            .send(
                provider,
                m.placeBid(id, Uint::from(price), Default::default()),
            )
            .await?;
        step(&mut rows, &mut lifecycle, "placeBid", &r);
        let r = c.send(tenant, m.matchBid(id, U256::ZERO)).await?;
        step(&mut rows, &mut lifecycle, "matchBid (by tenant)", &r);
        now += 1800;
        c.provider().anvil_set_next_block_timestamp(now).await?;
        let r = c.send(tenant, m.closeLease(id)).await?;
        step(&mut rows, &mut lifecycle, "closeLease (mid-way)", &r);
        rows.push((format!("LIFECYCLE TOTAL ({label})"), lifecycle));
    }
    let r = c.send(provider, m.withdraw(usds, U256::from(unit))).await?;
    rows.push(("withdraw earnings".into(), gas(&r)));

    // Batch settlement of N leases (same tenant, same provider) in one call.
    for n in [10u64, 50] {
        let base = 100 * n;
        for i in 0..n {
            let id = base + i;
            c.send(tenant, m.createOrder(id, usds, unit, 1, 3600, 60))
                .await?;
            c.send(
                provider,
                m.placeBid(id, Uint::from(unit), Default::default()),
            )
            .await?;
            c.send(tc.operator(), m.matchBid(id, U256::ZERO)).await?;
        }
        now += 600;
        c.provider().anvil_set_next_block_timestamp(now).await?;
        let ids: Vec<u64> = (base..base + n).collect();
        let r = c.send(tc.operator(), m.settleBatch(ids)).await?;
        rows.push((format!("settleBatch {n} leases: total"), gas(&r)));
        rows.push((format!("settleBatch {n} leases: per lease"), gas(&r) / n));
    }

    let r = c
        .send(tenant, m.createOrder(9_000, usds, unit, 1, 3600, 60))
        .await?;
    rows.push(("createOrder (another)".into(), gas(&r)));
    let r = c.send(tenant, m.cancelOrder(9_000)).await?;
    rows.push(("cancelOrder".into(), gas(&r)));
    let r = c
        .send(
            tenant,
            m.createOrderWithSpec(
                9_002,
                usds,
                unit,
                1,
                3600,
                60,
                Bytes::from(SPEC.as_bytes().to_vec()),
            ),
        )
        .await?;
    rows.push((
        format!("createOrderWithSpec ({}-byte spec)", SPEC.len()),
        gas(&r),
    ));
    let r = c.send(tenant, m.lockFunds(9_001, usds, 5 * unit)).await?;
    rows.push(("lockFunds (escrow lock)".into(), gas(&r)));
    let r = c
        .send(tenant, m.openLease(9_001, provider, unit, 1))
        .await?;
    rows.push(("openLease (direct)".into(), gas(&r)));
    let r = c
        .send(tenant, m.transferBalance(usds, verifier, U256::from(unit)))
        .await?;
    rows.push(("transferBalance".into(), gas(&r)));
    let r = c
        .send(tc.operator(), m.slash(provider, sphn_unit, verifier))
        .await?;
    rows.push(("slash (to reporter)".into(), gas(&r)));
    let r = c.send(tc.operator(), m.setTier(provider, 5)).await?;
    rows.push(("setTier".into(), gas(&r)));
    let r = c.send(provider, m.requestUnstake(sphn_unit)).await?;
    rows.push(("requestUnstake".into(), gas(&r)));
    let r = c.send(tc.admin(), m.withdrawFees(usds, tc.admin())).await?;
    rows.push(("withdrawFees".into(), gas(&r)));

    println!("| operation | gas |\n|---|---:|");
    for (name, g) in &rows {
        println!("| {name} | {g} |");
    }
    Ok(())
}
