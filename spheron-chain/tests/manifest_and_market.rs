//! Signed manifests and the `Market` trait on anvil.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::U256;
use alloy::providers::Provider;
use futures::StreamExt;
use spheron_chain::manifest;
use spheron_chain::{Error, EvmEscrow, EvmMarket, MarketConfig, account};
use spheron_core::{
    Amount, Bid, Escrow, GpuModel, GpuRequest, LeaseId, LeaseTerms, Market, MarketEvent, Order,
    OrderId, SystemClock, Timestamp, Token,
};
use std::sync::Arc;

const SPHN: u128 = 1_000_000_000_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_from_the_tenant_is_accepted_and_any_other_rejected() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let (tenant, provider) = (tc.accounts[2], tc.accounts[3]);
    let m = common::market(&tc);
    common::register_providers(&tc, &[provider], 10 * SPHN).await;
    common::fund(&tc, tc.addresses.sphn, &[tenant], 10 * SPHN).await;
    tc.chain
        .send(
            tenant,
            m.createOrder(1, tc.addresses.sphn, SPHN, 1, 3600, 60),
        )
        .await
        .unwrap();
    tc.chain
        .send(
            provider,
            m.placeBid(1, alloy::primitives::Uint::from(SPHN), Default::default()),
        )
        .await
        .unwrap();
    let chain_id = tc.chain.provider().get_chain_id().await.unwrap();
    let domain = manifest::domain(chain_id, tc.addresses.market);
    let body = br#"{"image":"pytorch:2.5","command":["python","train.py"]}"#.to_vec();
    let signed = manifest::sign(&tc.keys[2], &domain, 1, body.clone(), 1)
        .await
        .unwrap();
    // Not yet a lease: refused.
    let e = manifest::verify(&tc.chain, tc.addresses.market, &signed)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "manifest.lease",
                ..
            }
        ),
        "{e}"
    );
    tc.chain
        .send(tenant, m.matchBid(1, U256::ZERO))
        .await
        .unwrap();
    assert_eq!(
        manifest::verify(&tc.chain, tc.addresses.market, &signed)
            .await
            .unwrap(),
        tenant
    );
    // Signed by someone else (even claiming to be the tenant): rejected.
    let mut forged = manifest::sign(&tc.keys[7], &domain, 1, body.clone(), 1)
        .await
        .unwrap();
    let e = manifest::verify(&tc.chain, tc.addresses.market, &forged)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongManifestSigner { .. }), "{e}");
    forged.header.tenant = tenant;
    let e = manifest::verify(&tc.chain, tc.addresses.market, &forged)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongManifestSigner { .. }), "{e}");
    // A tampered body: rejected.
    let mut tampered = signed.clone();
    tampered.body = b"rm -rf /".to_vec();
    let e = manifest::verify(&tc.chain, tc.addresses.market, &tampered)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "manifest.body",
                ..
            }
        ),
        "{e}"
    );
    // A signature for another market (domain): rejected.
    let other = manifest::domain(chain_id, tc.addresses.stable);
    let wrong_domain = manifest::sign(&tc.keys[2], &other, 1, body, 1)
        .await
        .unwrap();
    let e = manifest::verify(&tc.chain, tc.addresses.market, &wrong_domain)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongManifestSigner { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_market_publishes_streams_bids_and_matches() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let (tenant, p1, p2) = (tc.accounts[2], tc.accounts[3], tc.accounts[4]);
    common::register_providers(&tc, &[p1, p2], 10 * SPHN).await;
    let chain = Arc::new(spheron_chain::Chain::connect(&tc.endpoint(), tc.keys.clone()).unwrap());
    let market = EvmMarket::new(
        chain.clone(),
        tc.addresses.market,
        tc.addresses.sphn,
        Some(tc.operator()),
        Arc::new(SystemClock),
    );
    let escrow = EvmEscrow::new(
        chain,
        tc.addresses.market,
        tc.addresses.sphn,
        Token::sphn(),
        tc.operator(),
    )
    .await
    .unwrap();
    common::mint(&tc, tc.addresses.sphn, &[tenant], U256::from(100 * SPHN)).await;
    escrow
        .deposit(account(tenant), Amount(100 * SPHN))
        .await
        .unwrap();
    let mut events = market.events();
    let request = GpuRequest::builder()
        .gpu("h100")
        .count(2)
        .hours(1)
        .max_price_per_gpu_hour(Amount(3 * SPHN))
        .build()
        .unwrap();
    let order = Order {
        id: OrderId(42),
        tenant: account(tenant),
        request: request.clone(),
        created_at: Timestamp(0),
        bid_deadline: Timestamp(60_000),
    };
    market.publish(order.clone()).await.unwrap();
    // The budget is locked at publication; the escrow's lock of the same budget confirms it.
    let budget = request.budget().unwrap();
    assert_eq!(
        escrow.balance(account(tenant)).await.unwrap().locked,
        budget
    );
    escrow
        .lock(OrderId(42), account(tenant), budget)
        .await
        .unwrap();
    for (p, price) in [(p1, 2 * SPHN), (p2, 5 * SPHN / 2)] {
        market
            .place_bid(Bid {
                order: OrderId(42),
                provider: account(p),
                model: GpuModel::H100Sxm,
                price_per_gpu_hour: Amount(price),
                placed_at: Timestamp(0),
            })
            .await
            .unwrap();
    }
    let above = market
        .place_bid(Bid {
            order: OrderId(42),
            provider: account(p2),
            model: GpuModel::H100Sxm,
            price_per_gpu_hour: Amount(4 * SPHN),
            placed_at: Timestamp(0),
        })
        .await;
    assert!(
        matches!(above, Err(spheron_core::Error::BidAboveCeiling { .. })),
        "{above:?}"
    );
    let bids = market.close_bidding(OrderId(42)).await.unwrap();
    assert_eq!(bids.len(), 2);
    assert!(bids.iter().all(|b| b.model == GpuModel::H100Sxm));
    market
        .record_match(OrderId(42), account(p1), LeaseId(42))
        .await
        .unwrap();
    // The escrow sees the running lease and settles it.
    escrow
        .open_lease(LeaseTerms {
            lease: LeaseId(42),
            order: OrderId(42),
            provider: account(p1),
            price_per_gpu_hour: Amount(2 * SPHN),
            gpus: 2,
            start: Timestamp(0),
        })
        .await
        .unwrap();
    let s = escrow.settle(LeaseId(42), Timestamp(0)).await.unwrap();
    assert_eq!(s.paid.0 + s.refunded.0, budget.0);
    market.close_order(OrderId(42)).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
            .await
            .expect("market events arrive")
            .unwrap();
        seen.push(e);
    }
    assert!(
        matches!(&seen[0], MarketEvent::OrderPublished(o) if o.id == OrderId(42) && o.request == request)
    );
    assert!(matches!(&seen[1], MarketEvent::BidPlaced(b) if b.provider == account(p1)));
    assert!(matches!(&seen[2], MarketEvent::BidPlaced(b) if b.provider == account(p2)));
    assert!(matches!(
        &seen[3],
        MarketEvent::Matched {
            lease: LeaseId(42),
            ..
        }
    ));
    assert!(matches!(&seen[4], MarketEvent::OrderClosed(OrderId(42))));
}
