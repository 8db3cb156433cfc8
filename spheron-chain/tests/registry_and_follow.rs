//! The enumerable provider registry (certificate hash, metadata, paging), orders with a spec,
//! and the chain follower (bounded ranges, confirmations, resuming from a cursor) on anvil.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::{Address, B256, FixedBytes, U256, Uint, keccak256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use spheron_chain::anvil::{AnvilOptions, TestChain};
use spheron_chain::follow::{self, ChainEvent, Follower, Logged};
use spheron_chain::quorum::Kind;
use spheron_chain::registry::{self, OrderParams, Registration};
use spheron_chain::{Chain, MarketConfig};
use spheron_core::GpuModel;
use std::collections::BTreeSet;

const SPHN: u128 = 1_000_000_000_000_000_000;

fn reg(i: u8) -> Registration {
    Registration {
        endpoint: format!("https://p{i}.example:8443"),
        region: if i.is_multiple_of(2) {
            "eu-west"
        } else {
            "us-east"
        }
        .into(),
        public_key: vec![i.wrapping_add(1) | 1; 33],
        cert_hash: B256::repeat_byte(0xa0u8.wrapping_add(i)),
        meta: format!(
            r#"{{"name":"p{i}","lat":52.3,"lon":4.9,"gpus":[{{"model":"h100-sxm","count":8}}]}}"#
        ),
    }
}

fn model32(name: &str) -> FixedBytes<32> {
    let mut b = [0u8; 32];
    b[..name.len()].copy_from_slice(name.as_bytes());
    FixedBytes(b)
}

/// Polls until caught up, returning everything read.
async fn drain(f: &mut Follower, chain: &Chain) -> (Vec<Logged>, usize) {
    let mut all = Vec::new();
    let mut polls = 0;
    while !f.caught_up(chain).await.unwrap() {
        all.extend(f.poll(chain).await.unwrap());
        polls += 1;
        assert!(polls < 10_000, "the follower never caught up");
    }
    (all, polls)
}

fn positions(l: &[Logged]) -> Vec<(u64, u64)> {
    l.iter().map(|l| (l.block, l.log_index)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_enumerates_reads_back_and_updates_in_place() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let market = tc.addresses.market;
    let p = [tc.accounts[3], tc.accounts[4], tc.accounts[5]];
    let m = common::market(&tc);

    assert_eq!(
        registry::provider(&tc.chain, market, p[0]).await.unwrap(),
        None
    );
    assert!(
        registry::providers(&tc.chain, market)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        m.providersPage(U256::ZERO, U256::from(10))
            .call()
            .await
            .unwrap()
            .is_empty()
    );

    for (i, a) in p.iter().enumerate() {
        registry::register(&tc.chain, market, *a, &reg(i as u8))
            .await
            .unwrap();
    }
    // p[1] stakes and gets a tier; p[2] registers with a zero certificate hash (plain HTTP).
    common::fund(&tc, tc.addresses.sphn, &[p[1]], 1_000 * SPHN).await;
    tc.chain.send(p[1], m.stake(400 * SPHN)).await.unwrap();
    tc.chain
        .send(p[1], m.requestUnstake(100 * SPHN))
        .await
        .unwrap();
    tc.chain
        .send(tc.operator(), m.setTier(p[1], 5))
        .await
        .unwrap();
    let plain = Registration {
        endpoint: "http://127.0.0.1:9000".into(),
        cert_hash: B256::ZERO,
        meta: String::new(),
        ..reg(2)
    };
    registry::register(&tc.chain, market, p[2], &plain)
        .await
        .unwrap();

    let one = registry::provider(&tc.chain, market, p[1])
        .await
        .unwrap()
        .unwrap();
    let r1 = reg(1);
    assert_eq!(one.address, p[1]);
    assert_eq!(one.endpoint, r1.endpoint);
    assert_eq!(one.region, "us-east");
    assert_eq!(one.public_key, r1.public_key);
    assert_eq!(one.cert_hash, r1.cert_hash);
    assert_eq!(one.meta, r1.meta);
    assert_eq!(one.tier, 5);
    assert_eq!((one.staked, one.unbonding), (300 * SPHN, 100 * SPHN));
    assert!(one.can_bid);
    let zero = registry::provider(&tc.chain, market, p[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((zero.tier, zero.staked, zero.can_bid), (0, 0, false));

    // Re-registration updates in place: still three, in first-registration order.
    let moved = Registration {
        endpoint: "https://p0-new.example".into(),
        meta: r#"{"name":"p0","moved":true}"#.into(),
        ..reg(0)
    };
    registry::register(&tc.chain, market, p[0], &moved)
        .await
        .unwrap();
    assert_eq!(m.providerCount().call().await.unwrap(), U256::from(3));
    let all = registry::providers(&tc.chain, market).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.address).collect::<Vec<_>>(),
        p.to_vec()
    );
    assert_eq!(all[0].endpoint, "https://p0-new.example");
    assert_eq!(all[0].meta, moved.meta);
    assert_eq!(all[1], one);
    assert_eq!(all[2].endpoint, "http://127.0.0.1:9000");
    assert_eq!(all[2].cert_hash, B256::ZERO);
    assert_eq!(all[2].meta, "");

    // Pages clamp to the end and never revert.
    let page = |s: u64, c: U256| {
        let m = m.clone();
        async move { m.providersPage(U256::from(s), c).call().await.unwrap() }
    };
    assert_eq!(page(0, U256::from(2)).await, p[..2].to_vec());
    assert_eq!(page(1, U256::from(100)).await, p[1..].to_vec());
    assert_eq!(page(2, U256::MAX).await, p[2..].to_vec());
    assert_eq!(page(0, U256::ZERO).await, Vec::<Address>::new());
    assert_eq!(page(3, U256::from(5)).await, Vec::<Address>::new());
    assert_eq!(page(1_000, U256::MAX).await, Vec::<Address>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pages_through_more_than_one_page() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let market = tc.addresses.market;
    // 103 providers (one full page and a bit) from keys made here, funded with gas money.
    let keys: Vec<PrivateKeySigner> = (1..=103u32)
        .map(|i| PrivateKeySigner::from_bytes(&keccak256(i.to_be_bytes())).unwrap())
        .collect();
    let who: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    for a in &who {
        tc.chain
            .provider()
            .anvil_set_balance(*a, U256::from(10u128.pow(20)))
            .await
            .unwrap();
    }
    let chain = Chain::connect(&tc.endpoint(), keys).unwrap();
    for (i, a) in who.iter().enumerate() {
        registry::register(&chain, market, *a, &reg(i as u8))
            .await
            .unwrap();
    }
    let all = registry::providers(&chain, market).await.unwrap();
    assert_eq!(all.iter().map(|r| r.address).collect::<Vec<_>>(), who);
    assert_eq!(all[102].endpoint, reg(102).endpoint);
    assert_eq!(
        registry::provider_addresses(&chain, market).await.unwrap(),
        who
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_and_spec_caps_revert_with_their_names() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let market = tc.addresses.market;
    let (tenant, provider) = (tc.accounts[2], tc.accounts[3]);

    let too_long = Registration {
        meta: "x".repeat(4097),
        ..reg(0)
    };
    let e = registry::register(&tc.chain, market, provider, &too_long)
        .await
        .unwrap_err();
    assert_eq!(e.revert_name(), Some("MetaTooLong"), "{e}");
    assert!(e.to_string().contains("4097"), "{e}");
    let empty = Registration {
        endpoint: String::new(),
        ..reg(0)
    };
    let e = registry::register(&tc.chain, market, provider, &empty)
        .await
        .unwrap_err();
    assert_eq!(e.revert_name(), Some("EmptyRegistration"), "{e}");
    assert_eq!(
        registry::provider(&tc.chain, market, provider)
            .await
            .unwrap(),
        None
    );
    let at_cap = Registration {
        meta: "x".repeat(4096),
        ..reg(0)
    };
    registry::register(&tc.chain, market, provider, &at_cap)
        .await
        .unwrap();
    let back = registry::provider(&tc.chain, market, provider)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.meta.len(), 4096);

    common::fund(&tc, tc.addresses.sphn, &[tenant], 100 * SPHN).await;
    let order = |spec_len: usize| OrderParams {
        token: tc.addresses.sphn,
        max_price_per_gpu_hour: SPHN,
        gpus: 1,
        duration_secs: 3600,
        bid_window_secs: 60,
        spec: vec![b'{'; spec_len],
    };
    let e = registry::create_order(&tc.chain, market, tenant, &order(8193))
        .await
        .unwrap_err();
    assert_eq!(e.revert_name(), Some("SpecTooLong"), "{e}");
    let m = common::market(&tc);
    assert_eq!(
        m.getOrder(1).call().await.unwrap().state,
        0,
        "nothing was created"
    );
    let created = registry::create_order(&tc.chain, market, tenant, &order(8192))
        .await
        .unwrap();
    assert_eq!(created.id, 1, "the contract assigns ids from 1");
    assert_eq!(m.getOrder(1).call().await.unwrap().state, 1);
    let again = registry::create_order(&tc.chain, market, tenant, &order(2))
        .await
        .unwrap();
    assert_eq!(again.id, 2);
    assert!(again.block > created.block);
    // The shared checks of createOrder apply too.
    let e = registry::create_order(
        &tc.chain,
        market,
        tenant,
        &OrderParams {
            gpus: 0,
            ..order(2)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.revert_name(), Some("GpusMismatch"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_decodes_a_whole_lifecycle_in_order() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let market = tc.addresses.market;
    let (tenant, provider) = (tc.accounts[2], tc.accounts[3]);
    let m = common::market(&tc);
    let t0 = common::freeze(&tc).await + 10;
    let ops = common::register_parties(&tc, &[10, 11, 12], Kind::Operator, common::OP_STAKE).await;
    common::fund(&tc, tc.addresses.sphn, &[tenant, provider], 200 * SPHN).await;
    registry::register(&tc.chain, market, provider, &reg(7))
        .await
        .unwrap();
    tc.chain
        .send(provider, m.stake(common::MIN_STAKE))
        .await
        .unwrap();
    common::at(&tc, t0).await;

    let spec = br#"{"gpu":["h100-sxm"],"count":2,"regions":["eu-west"],"min_tier":0}"#.to_vec();
    let mined = registry::create_order(
        &tc.chain,
        market,
        tenant,
        &OrderParams {
            token: tc.addresses.sphn,
            max_price_per_gpu_hour: SPHN,
            gpus: 2,
            duration_secs: 3600,
            bid_window_secs: 600,
            spec: spec.clone(),
        },
    )
    .await
    .unwrap();
    let id = mined.id;
    assert_eq!(id, 1);
    tc.chain
        .send(
            provider,
            m.placeBid(id, Uint::from(SPHN / 2), model32("h100-sxm")),
        )
        .await
        .unwrap();
    let expected_seed = common::match_result(&tc, id, provider).await.seed;
    common::at(&tc, t0 + 601).await;
    common::submit(&tc, &ops, id, provider, 2, tc.operator())
        .await
        .unwrap();
    common::at(&tc, t0 + 611).await;
    tc.chain.send(provider, m.confirmStart(id)).await.unwrap();
    common::at(&tc, t0 + 611 + 900).await;
    tc.chain.send(tenant, m.closeLease(id)).await.unwrap();

    let mut f = Follower::new(market, tc.deploy_block, 0, 1_000);
    let (logged, _) = drain(&mut f, &tc.chain).await;
    let pos = positions(&logged);
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "not in chain order: {pos:?}"
    );
    let events: Vec<&ChainEvent> = logged.iter().map(|l| &l.event).collect();
    assert_eq!(events.len(), 7, "{events:#?}");
    let r7 = reg(7);
    assert_eq!(
        events[0],
        &ChainEvent::ProviderRegistered {
            provider,
            endpoint: r7.endpoint,
            region: r7.region,
            cert_hash: r7.cert_hash,
            meta: r7.meta,
        }
    );
    let ChainEvent::OrderCreated {
        id: 1,
        tenant: t,
        token,
        max_price_per_gpu_hour: SPHN,
        gpus: 2,
        duration_secs: 3600,
        bid_deadline,
        locked,
    } = events[1].clone()
    else {
        panic!("expected OrderCreated, got {:?}", events[1]);
    };
    assert_eq!((t, token, locked), (tenant, tc.addresses.sphn, 2 * SPHN));
    assert!(bid_deadline > 0);
    assert_eq!(bid_deadline, t0 + 600);
    assert_eq!(logged[1].block, mined.block);
    assert_eq!(events[2], &ChainEvent::OrderSpec { id: 1, spec });
    assert_eq!(
        (logged[2].block, logged[2].tx),
        (mined.block, logged[1].tx),
        "same transaction"
    );
    assert_eq!(
        events[3],
        &ChainEvent::BidPlaced {
            id: 1,
            provider,
            price_per_gpu_hour: SPHN / 2,
            model: Some(GpuModel::H100Sxm),
        }
    );
    let ChainEvent::LeaseMatched {
        id: 1,
        provider: mp,
        price_per_gpu_hour: mprice,
        gpus: 2,
        seed,
        signed_weight,
        total_weight,
        start_deadline,
    } = events[4].clone()
    else {
        panic!("expected LeaseMatched, got {:?}", events[4]);
    };
    assert_eq!((mp, mprice), (provider, SPHN / 2));
    assert_eq!(seed, expected_seed, "the seed is the chain's");
    assert_eq!(
        (signed_weight, total_weight),
        (2 * common::OP_STAKE, 3 * common::OP_STAKE)
    );
    assert_eq!(start_deadline, t0 + 601 + 300);
    assert_eq!(
        events[5],
        &ChainEvent::LeaseStarted {
            id: 1,
            provider,
            price_per_gpu_hour: SPHN / 2,
            gpus: 2,
            start: t0 + 611,
            end: t0 + 611 + 3600,
        }
    );
    let ChainEvent::LeaseClosed {
        id: 1,
        provider: cp,
        closed_by,
        seconds_billed,
        paid,
        fee: 0,
        refunded,
        funds_exhausted: false,
    } = events[6].clone()
    else {
        panic!("expected LeaseClosed, got {:?}", events[6]);
    };
    assert_eq!((cp, closed_by), (provider, tenant));
    assert_eq!(paid, SPHN / 2 * 2 * u128::from(seconds_billed) / 3600);
    assert_eq!(seconds_billed, 900);
    assert_eq!(paid + refunded, 2 * SPHN);

    // A bid with a model name spheron does not know decodes with no model.
    let id2 = common::order_at(
        &tc,
        t0 + 3000,
        tenant,
        tc.addresses.sphn,
        SPHN,
        1,
        3600,
        600,
    )
    .await;
    assert_eq!(id2, 2);
    tc.chain
        .send(
            provider,
            m.placeBid(id2, Uint::from(1u8), model32("quantum-9000")),
        )
        .await
        .unwrap();
    tc.chain.send(provider, m.withdrawBid(id2)).await.unwrap();
    tc.chain.send(tenant, m.cancelOrder(id2)).await.unwrap();
    let (more, _) = drain(&mut f, &tc.chain).await;
    let more: Vec<ChainEvent> = more.into_iter().map(|l| l.event).collect();
    assert!(
        matches!(more[0], ChainEvent::OrderCreated { id: 2, .. }),
        "{more:?}"
    );
    assert!(
        matches!(
            more[1],
            ChainEvent::BidPlaced {
                id: 2,
                model: None,
                ..
            }
        ),
        "{more:?}"
    );
    assert_eq!(more[2], ChainEvent::BidWithdrawn { id: 2, provider });
    assert_eq!(
        more[3],
        ChainEvent::OrderCancelled {
            id: 2,
            refunded: SPHN
        }
    );
    assert_eq!(more.len(), 4);
}

/// Ten blocks, each with one `ProviderRegistered` (anvil mines a block per transaction).
async fn ten_blocks() -> Option<(TestChain, Vec<Logged>)> {
    let tc = common::chain(&MarketConfig::default()).await?;
    for i in 0..10u8 {
        registry::register(
            &tc.chain,
            tc.addresses.market,
            tc.accounts[2 + usize::from(i)],
            &reg(i),
        )
        .await
        .unwrap();
    }
    let mut reference = Follower::new(tc.addresses.market, tc.deploy_block, 0, u64::MAX);
    let (all, polls) = drain(&mut reference, &tc.chain).await;
    assert_eq!(polls, 1, "one unbounded range");
    assert_eq!(all.len(), 10);
    let blocks: BTreeSet<u64> = all.iter().map(|l| l.block).collect();
    assert_eq!(blocks.len(), 10, "one block each");
    Some((tc, all))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_catches_up_in_bounded_ranges_without_duplicates() {
    let Some((tc, reference)) = ten_blocks().await else {
        return;
    };
    let head = follow::head(&tc.chain).await.unwrap();
    let mut f = Follower::new(tc.addresses.market, tc.deploy_block, 0, 2);
    let mut got = Vec::new();
    let mut polls = 0u64;
    while !f.caught_up(&tc.chain).await.unwrap() {
        let before = f.next_block();
        let batch = f.poll(&tc.chain).await.unwrap();
        assert!(
            batch
                .iter()
                .all(|l| l.block >= before && l.block < before + 2),
            "range of 2"
        );
        assert_eq!(f.next_block(), (before + 2).min(head + 1));
        got.extend(batch);
        polls += 1;
    }
    assert_eq!(polls, (head + 1 - tc.deploy_block).div_ceil(2));
    assert!(polls >= 5);
    assert_eq!(got, reference, "everything, once, in order");
    assert!(f.poll(&tc.chain).await.unwrap().is_empty(), "nothing new");
    assert_eq!(f.next_block(), head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_stays_confirmations_behind_the_head() {
    let Some((tc, reference)) = ten_blocks().await else {
        return;
    };
    let head = follow::head(&tc.chain).await.unwrap();
    let mut f = Follower::new(tc.addresses.market, tc.deploy_block, 3, 1_000);
    let (got, _) = drain(&mut f, &tc.chain).await;
    assert!(
        got.iter().all(|l| l.block <= head - 3),
        "nothing newer than head - 3"
    );
    assert_eq!(f.next_block(), head - 2);
    let confirmed: Vec<Logged> = reference
        .iter()
        .filter(|l| l.block <= head - 3)
        .cloned()
        .collect();
    assert_eq!(got, confirmed);
    assert_eq!(
        got.len(),
        7,
        "the last three registrations are not confirmed yet"
    );

    // Two more blocks confirm two more registrations; a third confirms the last.
    tc.chain.provider().anvil_mine(Some(2), None).await.unwrap();
    let (next, _) = drain(&mut f, &tc.chain).await;
    assert_eq!(next, reference[7..9].to_vec());
    tc.chain.provider().anvil_mine(Some(1), None).await.unwrap();
    let (last, _) = drain(&mut f, &tc.chain).await;
    assert_eq!(last, reference[9..].to_vec());

    // A follower more confirmations behind than the chain is long reads nothing.
    let mut far = Follower::new(tc.addresses.market, 0, 10_000, 1_000);
    assert!(far.caught_up(&tc.chain).await.unwrap());
    assert!(far.poll(&tc.chain).await.unwrap().is_empty());
    assert_eq!(far.next_block(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_resumes_from_a_persisted_cursor() {
    let Some((tc, reference)) = ten_blocks().await else {
        return;
    };
    // The first process reads two ranges and persists its cursor; only the cursor survives.
    let (mut got, cursor) = {
        let mut first = Follower::new(tc.addresses.market, tc.deploy_block, 0, 3);
        let mut got = first.poll(&tc.chain).await.unwrap();
        got.extend(first.poll(&tc.chain).await.unwrap());
        (got, first.next_block())
    };
    assert_eq!(cursor, tc.deploy_block + 6);
    assert!(!got.is_empty() && got.len() < reference.len());

    let mut resumed = Follower::new(tc.addresses.market, cursor, 0, 3);
    let (rest, _) = drain(&mut resumed, &tc.chain).await;
    assert!(
        rest.iter().all(|l| l.block >= cursor),
        "no block read twice"
    );
    got.extend(rest);
    assert_eq!(got, reference, "everything exactly once across the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mining_still_sends_and_follows() {
    let opts = AnvilOptions {
        block_time_secs: Some(1),
        accounts: 4,
    };
    let Some(tc) = common::chain_with(&MarketConfig::default(), &opts).await else {
        return;
    };
    assert_eq!(tc.accounts.len(), 4);
    let market = tc.addresses.market;
    let m = common::market(&tc);
    assert_eq!(
        m.providerCount().call().await.unwrap(),
        U256::ZERO,
        "deployed"
    );
    let provider = tc.accounts[3];
    registry::register(&tc.chain, market, provider, &reg(1))
        .await
        .unwrap();
    let mut f = Follower::new(market, tc.deploy_block, 0, 1_000);
    let (got, _) = drain(&mut f, &tc.chain).await;
    assert_eq!(got.len(), 1);
    assert!(
        matches!(&got[0].event, ChainEvent::ProviderRegistered { provider: p, .. } if *p == provider)
    );
    // Blocks keep coming with no transactions.
    let h = follow::head(&tc.chain).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert!(follow::head(&tc.chain).await.unwrap() > h);
}
