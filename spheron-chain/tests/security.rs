//! Security properties on anvil: every refused operation reverts with its named error and
//! changes no balance anywhere.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::{Address, U256, Uint};
use alloy::sol_types::SolCall;
use common::{MIN_STAKE, OP_STAKE, Parties, SPHN};
use spheron_chain::MarketConfig;
use spheron_chain::anvil::TestChain;
use spheron_chain::bindings::{ReentrantToken, SpheronMarket};
use spheron_chain::quorum::Kind;

struct World {
    tc: TestChain,
    tenant: Address,
    provider: Address,
    unstaked: Address,
    stranger: Address,
    ops: Parties,
    t0: u64,
}

impl World {
    fn everyone(&self) -> Vec<Address> {
        vec![
            self.tenant,
            self.provider,
            self.unstaked,
            self.stranger,
            self.tc.admin(),
            self.tc.operator(),
        ]
    }
}

/// A market with four operators, one staked provider, one registered but unstaked provider,
/// a funded tenant and order 1 (1 GPU, 1 h, ceiling 1 SPHN, bid window 60 s) with a bid from
/// the provider.
async fn world() -> Option<World> {
    let tc = common::chain(&MarketConfig::default()).await?;
    let (tenant, provider, unstaked, stranger) = (
        tc.accounts[2],
        tc.accounts[3],
        tc.accounts[4],
        tc.accounts[9],
    );
    let m = common::market(&tc);
    let t0 = common::freeze(&tc).await + 10;
    let ops = common::register_parties(&tc, &[10, 11, 12, 13], Kind::Operator, OP_STAKE).await;
    common::register_providers(&tc, &[provider], MIN_STAKE).await;
    tc.chain
        .send(
            unstaked,
            m.register(
                "https://u.example".into(),
                "us-east".into(),
                vec![9u8; 33].into(),
                Default::default(),
                String::new(),
            ),
        )
        .await
        .unwrap();
    common::fund(&tc, tc.addresses.sphn, &[tenant, stranger], 100 * SPHN).await;
    let id = common::order_at(&tc, t0, tenant, tc.addresses.sphn, SPHN, 1, 3600, 60).await;
    assert_eq!(id, 1);
    common::bid(&tc, provider, 1, SPHN / 2).await;
    Some(World {
        tc,
        tenant,
        provider,
        unstaked,
        stranger,
        ops,
        t0,
    })
}

/// Runs `refused` and checks that nothing changed.
macro_rules! refused {
    ($w:expr, $from:expr, $call:expr, $name:expr) => {{
        let before = common::snapshot(&$w.tc, &$w.everyone()).await;
        common::expect_revert(&$w.tc, $from, $call, $name).await;
        assert_eq!(
            before,
            common::snapshot(&$w.tc, &$w.everyone()).await,
            "{} changed balances",
            $name
        );
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_calls_revert_with_named_errors() {
    let Some(w) = world().await else { return };
    let m = common::market(&w.tc);
    refused!(w, w.stranger, m.pause(), "AccessControlUnauthorizedAccount");
    refused!(
        w,
        w.stranger,
        m.grantRole(spheron_chain::deploy::roles::tier(), w.stranger),
        "AccessControlUnauthorizedAccount"
    );
    refused!(
        w,
        w.stranger,
        m.withdrawFees(w.tc.addresses.sphn, w.stranger),
        "AccessControlUnauthorizedAccount"
    );
    refused!(
        w,
        w.stranger,
        m.setHardwareClass(Default::default(), 1, MIN_STAKE),
        "AccessControlUnauthorizedAccount"
    );
    refused!(
        w,
        w.stranger,
        m.setTier(w.provider, 7),
        "AccessControlUnauthorizedAccount"
    );
    refused!(
        w,
        w.stranger,
        m.configureToken(w.tc.addresses.stable, true, 0),
        "AccessControlUnauthorizedAccount"
    );
    refused!(w, w.stranger, m.cancelOrder(1), "NotTenant");
    refused!(w, w.tc.operator(), m.setTier(w.provider, 8), "InvalidTier");
    refused!(
        w,
        w.tc.admin(),
        m.configureToken(w.tc.addresses.sphn, true, 50),
        "InvalidFee"
    );
    // With the roles, the same calls pass.
    w.tc.chain
        .send(w.tc.operator(), m.setTier(w.provider, 7))
        .await
        .unwrap();
    assert_eq!(m.providerInfo(w.provider).call().await.unwrap().tier, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bids_revert_with_named_errors() {
    let Some(w) = world().await else { return };
    let m = common::market(&w.tc);
    refused!(
        w,
        w.unstaked,
        m.placeBid(1, Uint::from(SPHN / 2), Default::default()),
        "ProviderNotStaked"
    );
    refused!(
        w,
        w.stranger,
        m.placeBid(1, Uint::from(SPHN / 2), Default::default()),
        "ProviderNotStaked"
    );
    refused!(
        w,
        w.provider,
        m.placeBid(1, Uint::from(SPHN + 1), Default::default()),
        "BidAboveCeiling"
    );
    refused!(
        w,
        w.provider,
        m.placeBid(7, Uint::from(1u8), Default::default()),
        "UnknownOrder"
    );
    common::at(&w.tc, w.t0 + 61).await;
    refused!(
        w,
        w.provider,
        m.placeBid(1, Uint::from(SPHN / 2), Default::default()),
        "BidWindowClosed"
    );
    // A match for someone who never bid.
    let mut r = common::match_result(&w.tc, 1, w.provider).await;
    r.winner = w.unstaked;
    let sigs = common::sign(&w.ops, &r, 4).await;
    let before = common::snapshot(&w.tc, &w.everyone()).await;
    let e = spheron_chain::quorum::submit_match(
        &w.tc.chain,
        w.tc.addresses.market,
        w.tenant,
        &r,
        &sigs,
    )
    .await
    .unwrap_err();
    assert_eq!(e.revert_name(), Some("UnknownBid"), "{e}");
    assert_eq!(before, common::snapshot(&w.tc, &w.everyone()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_close_and_settlement_rules() {
    let Some(w) = world().await else { return };
    let m = common::market(&w.tc);
    common::at(&w.tc, w.t0 + 100).await;
    common::submit(&w.tc, &w.ops, 1, w.provider, 3, w.stranger)
        .await
        .unwrap();
    let e = common::submit(&w.tc, &w.ops, 1, w.provider, 3, w.stranger)
        .await
        .unwrap_err();
    assert_eq!(e.revert_name(), Some("WrongState"), "{e}");
    refused!(w, w.tenant, m.cancelOrder(1), "WrongState");
    refused!(w, w.stranger, m.confirmStart(1), "NotProvider");
    w.tc.chain
        .send(w.provider, m.confirmStart(1))
        .await
        .unwrap();
    refused!(w, w.provider, m.confirmStart(1), "WrongState");
    // Half-way, a stranger may not close a lease that still runs.
    common::at(&w.tc, w.t0 + 100 + 1800).await;
    refused!(w, w.stranger, m.closeLease(1), "NotClosable");
    // After its end anyone may settle it, once: the whole hour is paid.
    common::at(&w.tc, w.t0 + 100 + 7300).await;
    w.tc.chain.send(w.stranger, m.closeLease(1)).await.unwrap();
    let o = m.getOrder(1).call().await.unwrap();
    assert_eq!(o.state, 4);
    assert_eq!(
        m.accountOf(w.tc.addresses.sphn, w.provider)
            .call()
            .await
            .unwrap()
            .available,
        SPHN / 2
    );
    refused!(w, w.tenant, m.closeLease(1), "WrongState");
    refused!(w, w.stranger, m.closeLease(1), "WrongState");
    // A batch with the closed lease skips it and changes nothing.
    let before = common::snapshot(&w.tc, &w.everyone()).await;
    let r =
        w.tc.chain
            .send(w.provider, m.settleBatch(vec![1]))
            .await
            .unwrap();
    let skipped = common::event::<SpheronMarket::SettleSkipped>(&r).unwrap();
    assert_eq!(skipped.id, 1);
    assert_eq!(before, common::snapshot(&w.tc, &w.everyone()).await);
    common::assert_solvent(&w.tc, &w.everyone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amount_overflow_and_overdraw_revert() {
    let Some(w) = world().await else { return };
    let m = common::market(&w.tc);
    let sphn = w.tc.addresses.sphn;
    // price x gpus x duration beyond 128 bits.
    refused!(
        w,
        w.tenant,
        m.createOrder(sphn, u128::MAX, 64, 3600 * 24, 60),
        "AmountOverflow"
    );
    // A deposit that would take a balance past 2^128 - 1.
    common::mint(&w.tc, sphn, &[w.stranger], U256::from(u128::MAX)).await;
    w.tc.chain
        .send(
            w.stranger,
            common::token(&w.tc, sphn).approve(w.tc.addresses.market, U256::MAX),
        )
        .await
        .unwrap();
    refused!(
        w,
        w.stranger,
        m.deposit(sphn, U256::from(u128::MAX)),
        "AmountOverflow"
    );
    refused!(
        w,
        w.tenant,
        m.withdraw(sphn, U256::from(1_000 * SPHN)),
        "InsufficientBalance"
    );
    refused!(
        w,
        w.tenant,
        m.createOrder(sphn, 1_000 * SPHN, 1, 3600, 60),
        "InsufficientBalance"
    );
    refused!(
        w,
        w.tenant,
        m.createOrder(sphn, SPHN, 1, 90 * 86_400 + 1, 60),
        "InvalidDuration"
    );
    refused!(
        w,
        w.tenant,
        m.createOrder(sphn, SPHN, 1, 3600, 86_401),
        "InvalidDuration"
    );
    refused!(
        w,
        w.tenant,
        m.deposit(Address::repeat_byte(0x42), U256::from(1)),
        "TokenNotAllowed"
    );
    refused!(w, w.tenant, m.deposit(sphn, U256::ZERO), "ZeroAmount");
    refused!(
        w,
        w.provider,
        m.requestUnstake(MIN_STAKE + 1),
        "InsufficientStake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reentrancy_through_a_malicious_token_reverts() {
    let Some(w) = world().await else { return };
    let m = common::market(&w.tc);
    let attacker = w.stranger;
    let evil_addr = {
        let _g = w.tc.chain.lock().await;
        ReentrantToken::deploy_builder(w.tc.chain.provider())
            .from(attacker)
            .deploy()
            .await
            .unwrap()
    };
    let evil = ReentrantToken::new(evil_addr, w.tc.chain.provider().clone());
    w.tc.chain
        .send(w.tc.admin(), m.configureToken(evil_addr, true, 0))
        .await
        .unwrap();
    w.tc.chain
        .send(attacker, evil.mint(attacker, U256::from(1_000u64)))
        .await
        .unwrap();
    w.tc.chain
        .send(attacker, evil.approve(w.tc.addresses.market, U256::MAX))
        .await
        .unwrap();
    w.tc.chain
        .send(attacker, m.deposit(evil_addr, U256::from(500u64)))
        .await
        .unwrap();
    // Arm: every transfer calls market.withdraw(evil, 100) from inside the token.
    let payload = SpheronMarket::withdrawCall {
        token: evil_addr,
        amount: U256::from(100u64),
    }
    .abi_encode();
    w.tc.chain
        .send(attacker, evil.arm(w.tc.addresses.market, payload.into()))
        .await
        .unwrap();
    let before = snap(&w.tc, evil_addr, attacker).await;
    common::expect_revert(
        &w.tc,
        attacker,
        m.withdraw(evil_addr, U256::from(100u64)),
        "ReentrancyGuardReentrantCall",
    )
    .await;
    common::expect_revert(
        &w.tc,
        attacker,
        m.deposit(evil_addr, U256::from(100u64)),
        "ReentrancyGuardReentrantCall",
    )
    .await;
    assert_eq!(before, snap(&w.tc, evil_addr, attacker).await);
    assert_eq!(before.0, 500);
}

async fn snap(tc: &TestChain, evil_addr: Address, attacker: Address) -> (u128, U256, U256) {
    let m = common::market(tc);
    let evil = ReentrantToken::new(evil_addr, tc.chain.provider().clone());
    (
        m.accountOf(evil_addr, attacker)
            .call()
            .await
            .unwrap()
            .available,
        evil.balanceOf(tc.addresses.market).call().await.unwrap(),
        evil.balanceOf(attacker).call().await.unwrap(),
    )
}
