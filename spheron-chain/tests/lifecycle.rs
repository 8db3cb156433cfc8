//! The full order lifecycle on anvil: deposit, order, three bids, a quorum match, the
//! provider's start, close mid-way, exact payouts and refund, fee in the stable token and
//! none in SPHN, earnings withdrawn.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::U256;
use common::{MIN_STAKE, OP_STAKE, SPHN};
use spheron_chain::MarketConfig;
use spheron_chain::bindings::SpheronMarket;
use spheron_chain::quorum::Kind;

const USDS: u128 = 1_000_000; // 6 decimals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_bids_match_close_pays_exactly() {
    let config = MarketConfig {
        stable_fee_bps: 100, // 1%
        ..MarketConfig::default()
    };
    let Some(tc) = common::chain(&config).await else {
        return;
    };
    let (tenant, p) = (
        tc.accounts[2],
        [tc.accounts[3], tc.accounts[4], tc.accounts[5]],
    );
    let everyone = [tenant, p[0], p[1], p[2], tc.admin(), tc.operator()];
    let (sphn, usds) = (tc.addresses.sphn, tc.addresses.stable);
    let m = common::market(&tc);
    let t0 = common::freeze(&tc).await + 10;

    let ops = common::register_parties(&tc, &[10, 11, 12, 13], Kind::Operator, OP_STAKE).await;
    common::register_providers(&tc, &p, 1_000 * SPHN).await;
    common::fund(&tc, usds, &[tenant], 100 * USDS).await;
    common::fund(&tc, sphn, &[tenant], 100 * SPHN).await;

    for (n, (token, unit)) in [(usds, USDS), (sphn, SPHN)].into_iter().enumerate() {
        let start = t0 + (n as u64 + 1) * 10_000;
        // 2 GPUs for an hour at most 3.00 per GPU-hour: 6.00 locked.
        let id = common::order_at(&tc, start - 100, tenant, token, 3 * unit, 2, 3600, 60).await;
        assert_eq!(id, n as u64 + 1, "ids are assigned in sequence");
        let acc = m.accountOf(token, tenant).call().await.unwrap();
        assert_eq!((acc.available, acc.locked), (94 * unit, 6 * unit));
        let prices = [5 * unit / 2, 2 * unit, 14 * unit / 5];
        for (provider, price) in p.iter().zip(prices) {
            common::bid(&tc, *provider, id, price).await;
        }
        // Three of four operators sign the cheapest bid; anyone submits.
        common::at(&tc, start).await;
        let r = common::submit(&tc, &ops, id, p[1], 3, tc.accounts[9])
            .await
            .unwrap();
        let ev = common::event::<SpheronMarket::LeaseMatched>(&r).unwrap();
        assert_eq!(ev.signedWeight, U256::from(3 * OP_STAKE));
        assert_eq!(ev.totalWeight, U256::from(4 * OP_STAKE));
        let o = m.getOrder(id).call().await.unwrap();
        assert_eq!((o.provider, o.price, o.state), (p[1], 2 * unit, 2));
        // The provider confirms the start 10 s later: billing starts there.
        common::at(&tc, start + 10).await;
        tc.chain.send(p[1], m.confirmStart(id)).await.unwrap();
        // Closed by the tenant after 30 minutes: 2.00 x 2 GPUs x 0.5 h = 2.00.
        common::at(&tc, start + 10 + 1800).await;
        let r = tc.chain.send(tenant, m.closeLease(id)).await.unwrap();
        let ev = common::event::<SpheronMarket::LeaseClosed>(&r).unwrap();
        let fee = if token == usds { 2 * unit / 100 } else { 0 };
        assert_eq!(ev.secondsBilled, U256::from(1800));
        assert_eq!(ev.fee, U256::from(fee));
        assert_eq!(ev.paid, U256::from(2 * unit - fee));
        assert_eq!(ev.refunded, U256::from(4 * unit));
        assert!(!ev.fundsExhausted);
        let acc = m.accountOf(token, tenant).call().await.unwrap();
        assert_eq!((acc.available, acc.locked), (98 * unit, 0));
        assert_eq!(m.fees(token).call().await.unwrap(), U256::from(fee));
        // Earnings withdrawn to the provider's wallet.
        let earned = m.accountOf(token, p[1]).call().await.unwrap().available;
        assert_eq!(earned, 2 * unit - fee);
        let before = common::token(&tc, token)
            .balanceOf(p[1])
            .call()
            .await
            .unwrap();
        tc.chain
            .send(p[1], m.withdraw(token, U256::from(earned)))
            .await
            .unwrap();
        let after = common::token(&tc, token)
            .balanceOf(p[1])
            .call()
            .await
            .unwrap();
        assert_eq!(after - before, U256::from(earned));
        // Losing bidders earned nothing.
        assert_eq!(m.accountOf(token, p[0]).call().await.unwrap().available, 0);
        common::assert_solvent(&tc, &everyone).await;
    }
    // Fees leave with the admin.
    tc.chain
        .send(tc.admin(), m.withdrawFees(usds, tc.admin()))
        .await
        .unwrap();
    assert_eq!(
        common::token(&tc, usds)
            .balanceOf(tc.admin())
            .call()
            .await
            .unwrap(),
        U256::from(2 * USDS / 100)
    );
    common::assert_solvent(&tc, &everyone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_leases_are_settled_by_anyone_in_a_batch() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let (tenant, provider, stranger) = (tc.accounts[2], tc.accounts[3], tc.accounts[9]);
    let sphn = tc.addresses.sphn;
    let m = common::market(&tc);
    let t0 = common::freeze(&tc).await + 10;
    let ops = common::register_parties(&tc, &[10, 11, 12], Kind::Operator, OP_STAKE).await;
    common::register_providers(&tc, &[provider], MIN_STAKE).await;
    common::fund(&tc, sphn, &[tenant], 100 * SPHN).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = common::order_at(&tc, t0, tenant, sphn, SPHN, 1, 3600, 60).await;
        common::bid(&tc, provider, id, SPHN).await;
        ids.push(id);
    }
    common::at(&tc, t0 + 61).await;
    for id in &ids {
        common::submit(&tc, &ops, *id, provider, 2, provider)
            .await
            .unwrap();
        tc.chain.send(provider, m.confirmStart(*id)).await.unwrap();
    }
    // Two hours later every lease has ended: a stranger settles all three.
    common::at(&tc, t0 + 7200).await;
    tc.chain
        .send(stranger, m.settleBatch(ids.clone()))
        .await
        .unwrap();
    let acc = m.accountOf(sphn, provider).call().await.unwrap();
    assert_eq!(acc.available, 3 * SPHN);
    let acc = m.accountOf(sphn, tenant).call().await.unwrap();
    assert_eq!((acc.available, acc.locked), (97 * SPHN, 0));
    common::assert_solvent(&tc, &[tenant, provider, stranger]).await;
}
