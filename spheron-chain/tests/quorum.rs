//! The operator quorum and evidence-only slashing on anvil, through the Rust client: matches
//! need 2/3 of operator stake over the chain's digest and seed, inside the match window;
//! equivocation is slashed by anyone; slashing a provider needs a verdict of two registered
//! verifiers; stake is bound to leases; ids cannot be squatted; bids are bounded; leases end.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::TransactionRequest;
use common::{MIN_STAKE, OP_STAKE, Parties, SPHN};
use spheron_chain::MarketConfig;
use spheron_chain::anvil::TestChain;
use spheron_chain::bindings::{SpheronMarket, SpheronOperators};
use spheron_chain::quorum::{self, Kind, VerdictClaim};

const USDS: u128 = 1_000_000;

struct World {
    tc: TestChain,
    ops: Parties,
    verifiers: Parties,
    tenant: Address,
    p: [Address; 3],
    attacker: Address,
    stranger: Address,
    /// Order 1 was created at t0: 2 GPUs, 1 h, ceiling 1 SPHN, bid deadline t0 + 60; p[0]
    /// bid 0.5 SPHN, p[1] 0.75 SPHN.
    t0: u64,
}

impl World {
    fn everyone(&self) -> Vec<Address> {
        let mut v = vec![
            self.tenant,
            self.attacker,
            self.stranger,
            self.tc.admin(),
            self.tc.operator(),
        ];
        v.extend(self.p);
        v
    }
    fn m(&self) -> common::M {
        common::market(&self.tc)
    }
    async fn at(&self, t: u64) {
        common::at(&self.tc, t).await;
    }
    async fn solvent(&self) {
        common::assert_solvent(&self.tc, &self.everyone()).await;
    }
    /// Matches order `id` to `winner` with 3 of 4 signatures and returns the receipt.
    async fn matched(&self, id: u64, winner: Address) -> alloy::rpc::types::TransactionReceipt {
        common::submit(&self.tc, &self.ops, id, winner, 3, self.stranger)
            .await
            .unwrap()
    }
}

async fn world() -> Option<World> {
    let tc = common::chain(&MarketConfig::default()).await?;
    let t0 = common::freeze(&tc).await + 10;
    let ops = common::register_parties(&tc, &[10, 11, 12, 13], Kind::Operator, OP_STAKE).await;
    let verifiers = common::register_parties(&tc, &[14, 15], Kind::Verifier, OP_STAKE).await;
    let p = [tc.accounts[3], tc.accounts[4], tc.accounts[5]];
    common::register_providers(&tc, &p, 2 * MIN_STAKE).await;
    let (tenant, attacker, stranger) = (tc.accounts[2], tc.accounts[8], tc.accounts[9]);
    common::fund(&tc, tc.addresses.sphn, &[tenant, attacker], 100 * SPHN).await;
    let id = common::order_at(&tc, t0, tenant, tc.addresses.sphn, SPHN, 2, 3600, 60).await;
    assert_eq!(id, 1);
    common::bid(&tc, p[0], 1, SPHN / 2).await;
    common::bid(&tc, p[1], 1, 3 * SPHN / 4).await;
    Some(World {
        tc,
        ops,
        verifiers,
        tenant,
        p,
        attacker,
        stranger,
        t0,
    })
}

fn revert<T: std::fmt::Debug>(r: spheron_chain::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected a revert, got {v:?}"),
        Err(e) => e.revert_name().unwrap_or("not a revert").to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_four_operators_match_and_the_provider_starts() {
    let Some(w) = world().await else { return };
    let m = w.m();
    // The fourth operator is offline: three signatures are 3/4 of the stake.
    w.at(w.t0 + 61).await;
    let r = w.matched(1, w.p[0]).await;
    let ev = common::event::<SpheronMarket::LeaseMatched>(&r).unwrap();
    assert_eq!(
        (ev.provider, ev.pricePerGpuHour, ev.gpus),
        (w.p[0], SPHN / 2, 2)
    );
    assert_eq!(ev.signedWeight, U256::from(3 * OP_STAKE));
    assert_eq!(ev.totalWeight, U256::from(4 * OP_STAKE));
    assert_eq!(ev.startDeadline.to::<u64>(), w.t0 + 61 + 300);
    let o = m.getOrder(1).call().await.unwrap();
    assert_eq!((o.state, o.provider, o.end.to::<u64>()), (2, w.p[0], 0));
    assert_eq!(m.stakeOf(w.p[0]).call().await.unwrap().activeLeases, 1);
    // Only the winner confirms; billing starts at the confirmation.
    w.at(w.t0 + 100).await;
    common::expect_revert(&w.tc, w.p[1], m.confirmStart(1), "NotProvider").await;
    let r = w.tc.chain.send(w.p[0], m.confirmStart(1)).await.unwrap();
    let ev = common::event::<SpheronMarket::LeaseStarted>(&r).unwrap();
    assert_eq!(ev.start.to::<u64>(), w.t0 + 100);
    assert_eq!(ev.end.to::<u64>(), w.t0 + 100 + 3600);
    let o = m.getOrder(1).call().await.unwrap();
    assert_eq!((o.state, o.end.to::<u64>()), (3, w.t0 + 3700));
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_is_no_quorum_either_way() {
    let Some(w) = world().await else { return };
    w.at(w.t0 + 61).await;
    // Two honest operators sign p[0], two lying ones sign p[1]: neither lands.
    let honest = common::match_result(&w.tc, 1, w.p[0]).await;
    let lying = common::match_result(&w.tc, 1, w.p[1]).await;
    let sigs = common::sign(&w.ops, &honest, 2).await;
    let r = quorum::submit_match(
        &w.tc.chain,
        w.tc.addresses.market,
        w.stranger,
        &honest,
        &sigs,
    )
    .await;
    assert_eq!(revert(r), "QuorumNotReached");
    let mut liars = Vec::new();
    for k in &w.ops.keys[2..] {
        liars.push((
            k.address(),
            quorum::sign_match(k, &w.ops.domain, &lying).await.unwrap(),
        ));
    }
    let r = quorum::submit_match(
        &w.tc.chain,
        w.tc.addresses.market,
        w.stranger,
        &lying,
        &liars,
    )
    .await;
    assert_eq!(revert(r), "QuorumNotReached");
    // A result that is not the chain's (another seed) never verifies, even with all four.
    let forged = quorum::MatchResult {
        seed: honest.seed ^ 1,
        ..honest
    };
    let sigs = common::sign(&w.ops, &forged, 4).await;
    let r = quorum::submit_match(
        &w.tc.chain,
        w.tc.addresses.market,
        w.stranger,
        &forged,
        &sigs,
    )
    .await;
    assert_eq!(revert(r), "BadSignature");
    assert_eq!(w.m().getOrder(1).call().await.unwrap().state, 1);
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signers_must_be_sorted_unique_and_sign_this_result() {
    let Some(w) = world().await else { return };
    let m = w.m();
    w.at(w.t0 + 61).await;
    let r = common::match_result(&w.tc, 1, w.p[0]).await;
    let sigs = common::sign(&w.ops, &r, 3).await;
    let raw = |pairs: Vec<(Address, Vec<u8>)>| {
        let (a, s): (Vec<Address>, Vec<Bytes>) =
            pairs.into_iter().map(|(a, s)| (a, Bytes::from(s))).unzip();
        m.submitMatch(1, w.p[0], 1, a, s)
    };
    let mut unsorted = sigs.clone();
    unsorted.reverse();
    common::expect_revert(&w.tc, w.stranger, raw(unsorted), "SignersNotSorted").await;
    let dup = vec![sigs[0].clone(), sigs[0].clone(), sigs[1].clone()];
    common::expect_revert(&w.tc, w.stranger, raw(dup), "SignersNotSorted").await;
    // One signature over another winner: that signer's signature is bad.
    let other = common::match_result(&w.tc, 1, w.p[1]).await;
    let mut mixed = sigs.clone();
    mixed[1].1 = quorum::sign_match(&w.ops.keys[1], &w.ops.domain, &other)
        .await
        .unwrap();
    common::expect_revert(&w.tc, w.stranger, raw(mixed), "BadSignature").await;
    // A signer who is not an operator (a verifier) does not count.
    let mut with_verifier = sigs[..2].to_vec();
    with_verifier.push((
        w.verifiers.keys[0].address(),
        quorum::sign_match(&w.verifiers.keys[0], &w.ops.domain, &r)
            .await
            .unwrap(),
    ));
    let e = quorum::submit_match(
        &w.tc.chain,
        w.tc.addresses.market,
        w.stranger,
        &r,
        &with_verifier,
    )
    .await;
    assert_eq!(revert(e), "SignerNotRegistered");
    // Sorted, the same three land.
    quorum::submit_match(&w.tc.chain, w.tc.addresses.market, w.stranger, &r, &sigs)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_only_inside_the_match_window() {
    let Some(w) = world().await else { return };
    w.at(w.t0 + 60).await;
    let e = common::submit(&w.tc, &w.ops, 1, w.p[0], 4, w.stranger).await;
    assert_eq!(revert(e), "MatchTooEarly");
    w.at(w.t0 + 60 + 121).await;
    let e = common::submit(&w.tc, &w.ops, 1, w.p[0], 4, w.stranger).await;
    assert_eq!(revert(e), "MatchTooLate");
    // The unmatched order then refunds itself (anyone may expire it).
    let m = w.m();
    w.tc.chain.send(w.stranger, m.expireOrder(1)).await.unwrap();
    let acc = m
        .accountOf(w.tc.addresses.sphn, w.tenant)
        .call()
        .await
        .unwrap();
    assert_eq!((acc.available, acc.locked), (100 * SPHN, 0));
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_operator_is_slashed_by_a_third_party() {
    let Some(w) = world().await else { return };
    let o = SpheronOperators::new(w.tc.addresses.operators, w.tc.chain.provider().clone());
    let sphn = common::token(&w.tc, w.tc.addresses.sphn);
    let liar = &w.ops.keys[0];
    let a = common::match_result(&w.tc, 1, w.p[0]).await;
    let b = common::match_result(&w.tc, 1, w.p[1]).await;
    let sa = quorum::sign_match(liar, &w.ops.domain, &a).await.unwrap();
    let sb = quorum::sign_match(liar, &w.ops.domain, &b).await.unwrap();
    assert_eq!(
        quorum::match_signer(&w.ops.domain, &a, &sa).unwrap(),
        liar.address()
    );
    // The same result twice is no proof.
    let e = quorum::report_equivocation(
        &w.tc.chain,
        w.tc.addresses.operators,
        w.stranger,
        (&a, &sa),
        (&a, &sa),
    )
    .await;
    assert_eq!(revert(e), "NotEquivocation");
    let before = sphn.balanceOf(w.stranger).call().await.unwrap();
    let burn_before = sphn
        .balanceOf(Address::from_slice(
            &alloy::hex::decode("000000000000000000000000000000000000dEaD").unwrap(),
        ))
        .call()
        .await
        .unwrap();
    let r = quorum::report_equivocation(
        &w.tc.chain,
        w.tc.addresses.operators,
        w.stranger,
        (&a, &sa),
        (&b, &sb),
    )
    .await
    .unwrap();
    let ev = common::event::<SpheronOperators::EquivocationSlashed>(&r).unwrap();
    let slashed = OP_STAKE * 5_000 / 10_000; // equivocation_slash_bps
    let reward = slashed * 1_000 / 10_000; // slash_reporter_bps: 10%
    assert_eq!(
        (ev.operator, ev.orderId, ev.reporter),
        (liar.address(), 1, w.stranger)
    );
    assert_eq!(
        (ev.slashed, ev.reward),
        (U256::from(slashed), U256::from(reward))
    );
    assert_eq!(
        sphn.balanceOf(w.stranger).call().await.unwrap() - before,
        U256::from(reward)
    );
    let dead = Address::from_slice(
        &alloy::hex::decode("000000000000000000000000000000000000dEaD").unwrap(),
    );
    assert_eq!(
        sphn.balanceOf(dead).call().await.unwrap() - burn_before,
        U256::from(slashed - reward)
    );
    let party = o.partyOf(liar.address()).call().await.unwrap();
    assert_eq!(party.staked + party.unbonding, OP_STAKE - slashed);
    // Below the operator minimum: it leaves (no weight from now on).
    let now = w.tc.chain.block_time().await.unwrap();
    let (weights, total) =
        quorum::weights_at(&w.tc.chain, w.tc.addresses.operators, Kind::Operator, now)
            .await
            .unwrap();
    assert!(!weights.iter().any(|(a, _)| *a == liar.address()));
    assert_eq!(total, 3 * OP_STAKE);
    // Once per order.
    let e = quorum::report_equivocation(
        &w.tc.chain,
        w.tc.addresses.operators,
        w.attacker,
        (&b, &sb),
        (&a, &sa),
    )
    .await;
    assert_eq!(revert(e), "AlreadySlashed");
    // The operators contract still holds every stake.
    let held = sphn
        .balanceOf(w.tc.addresses.operators)
        .call()
        .await
        .unwrap();
    let mut owed = U256::ZERO;
    for k in w.ops.keys.iter().chain(&w.verifiers.keys) {
        let p = o.partyOf(k.address()).call().await.unwrap();
        owed += U256::from(p.staked) + U256::from(p.unbonding);
    }
    assert_eq!(held, owed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_slashed_only_on_a_verifiers_verdict() {
    let Some(w) = world().await else { return };
    let m = w.m();
    let sphn = w.tc.addresses.sphn;
    // No slasher role exists, and the market has no slash function to call.
    let slasher = keccak256("SLASHER_ROLE");
    for a in [w.tc.admin(), w.tc.operator(), w.stranger] {
        assert!(!m.hasRole(slasher, a).call().await.unwrap());
    }
    let selector = &keccak256("slash(address,uint128,address)")[..4];
    let mut data = selector.to_vec();
    data.extend([0u8; 96]);
    let tx = TransactionRequest::default()
        .from(w.tc.admin())
        .to(w.tc.addresses.market)
        .input(Bytes::from(data).into());
    assert!(
        w.tc.chain.provider().call(tx).await.is_err(),
        "no slash(...) on the market"
    );

    let now = w.t0 + 100;
    w.at(now).await;
    w.tc.chain
        .provider()
        .anvil_mine(Some(1), None)
        .await
        .unwrap();
    let verdict = |session: u8| VerdictClaim {
        market: w.tc.addresses.market,
        provider: w.p[0],
        session: B256::repeat_byte(session),
        model: spheron_chain::registry::model_bytes(spheron_core::GpuModel::H100Sxm),
        amount: 10_000 * SPHN,
        issued_at: now,
    };
    let v = verdict(1);
    let (tc, stranger) = (&w.tc, w.stranger);
    let slash = move |v: VerdictClaim, sigs: Vec<(Address, Vec<u8>)>| async move {
        quorum::slash_with_verdict(&tc.chain, tc.addresses.market, stranger, &v, &sigs).await
    };
    let before = common::snapshot(&w.tc, &w.everyone()).await;
    let one = common::sign_verdict(&w.verifiers, &v, 1).await;
    assert_eq!(revert(slash(v, one).await), "BadVerdict");
    let mut not_verifier = common::sign_verdict(&w.verifiers, &v, 1).await;
    not_verifier.push((
        w.ops.keys[0].address(),
        quorum::sign_verdict(&w.ops.keys[0], &w.verifiers.domain, &v)
            .await
            .unwrap(),
    ));
    assert_eq!(revert(slash(v, not_verifier).await), "SignerNotRegistered");
    let stranger_sig = (
        w.stranger,
        quorum::sign_verdict(&w.tc.keys[9], &w.verifiers.domain, &v)
            .await
            .unwrap(),
    );
    let mut with_stranger = common::sign_verdict(&w.verifiers, &v, 1).await;
    with_stranger.push(stranger_sig);
    assert_eq!(revert(slash(v, with_stranger).await), "SignerNotRegistered");
    assert_eq!(
        before,
        common::snapshot(&w.tc, &w.everyone()).await,
        "nothing moved"
    );

    // Two verifiers: at most max_slash_bps (50%) of the stake; 10% to the reporter.
    let stake = 2 * MIN_STAKE;
    let r = slash(v, common::sign_verdict(&w.verifiers, &v, 2).await)
        .await
        .unwrap();
    let ev = common::event::<SpheronMarket::Slashed>(&r).unwrap();
    let slashed = stake / 2;
    assert_eq!(ev.amount, U256::from(slashed));
    assert_eq!(ev.reporterShare, U256::from(slashed / 10));
    assert_eq!(
        m.stakeOf(w.p[0]).call().await.unwrap().staked,
        stake - slashed
    );
    assert_eq!(
        m.accountOf(sphn, w.stranger)
            .call()
            .await
            .unwrap()
            .available,
        slashed / 10
    );
    assert_eq!(
        m.fees(sphn).call().await.unwrap(),
        U256::from(slashed - slashed / 10)
    );
    // The same verdict once only.
    assert_eq!(
        revert(slash(v, common::sign_verdict(&w.verifiers, &v, 2).await).await),
        "VerdictUsed"
    );
    // Three verdicts ban the provider.
    for s in [2u8, 3] {
        let v = verdict(s);
        slash(v, common::sign_verdict(&w.verifiers, &v, 2).await)
            .await
            .unwrap();
    }
    let st = m.stakeOf(w.p[0]).call().await.unwrap();
    assert!(st.banned);
    assert_eq!(st.frauds, 3);
    assert!(!m.canBid(w.p[0]).call().await.unwrap());
    common::fund(&w.tc, sphn, &[w.p[0]], MIN_STAKE).await;
    common::expect_revert(&w.tc, w.p[0], m.stake(MIN_STAKE), "Banned").await;
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbonding_cannot_complete_during_a_lease() {
    let Some(w) = world().await else { return };
    let m = w.m();
    w.at(w.t0 + 61).await;
    w.matched(1, w.p[0]).await;
    w.tc.chain.send(w.p[0], m.confirmStart(1)).await.unwrap();
    w.tc.chain
        .send(w.p[0], m.requestUnstake(2 * MIN_STAKE))
        .await
        .unwrap();
    let release = w.t0 + 61 + 7 * 86_400;
    w.at(release + 1).await;
    common::expect_revert(&w.tc, w.p[0], m.withdrawUnstaked(), "ActiveLeases").await;
    // The lease ended long ago: anyone closes it, then the stake comes back.
    w.tc.chain.send(w.stranger, m.closeLease(1)).await.unwrap();
    w.tc.chain.send(w.p[0], m.withdrawUnstaked()).await.unwrap();
    let acc = m
        .accountOf(w.tc.addresses.sphn, w.p[0])
        .call()
        .await
        .unwrap();
    assert_eq!(acc.available, 2 * MIN_STAKE + SPHN); // stake back + a full hour at 0.5 x 2
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_run_order_cannot_take_the_tenants() {
    let Some(w) = world().await else { return };
    let m = w.m();
    let sphn = w.tc.addresses.sphn;
    let t = w.t0 + 5;
    // The attacker sees the tenant's transaction and gets in first.
    let theirs = common::order_at(&w.tc, t, w.attacker, sphn, SPHN, 1, 3600, 60).await;
    let mine = common::order_at(&w.tc, t, w.tenant, sphn, SPHN, 1, 3600, 60).await;
    assert_eq!((theirs, mine), (2, 3), "sequential ids");
    assert_eq!(m.getOrder(theirs).call().await.unwrap().tenant, w.attacker);
    assert_eq!(m.getOrder(mine).call().await.unwrap().tenant, w.tenant);
    common::expect_revert(&w.tc, w.attacker, m.cancelOrder(mine), "NotTenant").await;
    common::expect_revert(&w.tc, w.attacker, m.extendLease(mine, 60), "NotTenant").await;
    common::bid(&w.tc, w.p[0], mine, SPHN).await;
    w.at(t + 61).await;
    w.matched(mine, w.p[0]).await;
    w.tc.chain.send(w.p[0], m.confirmStart(mine)).await.unwrap();
    common::expect_revert(&w.tc, w.attacker, m.closeLease(mine), "NotClosable").await;
    common::expect_revert(&w.tc, w.attacker, m.cancelUnstarted(mine), "WrongState").await;
    let o = m.getOrder(mine).call().await.unwrap();
    assert_eq!((o.tenant, o.provider, o.state), (w.tenant, w.p[0], 3));
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bid_spam_is_bounded() {
    let Some(w) = world().await else { return };
    let m = w.m();
    let id = common::order_at(
        &w.tc,
        w.t0 + 1,
        w.tenant,
        w.tc.addresses.sphn,
        SPHN,
        1,
        3600,
        60,
    )
    .await;
    for i in 0..10u128 {
        common::bid(&w.tc, w.p[2], id, SPHN - i).await;
    }
    let o = m.getOrder(id).call().await.unwrap();
    assert_eq!(o.bidCount, 1);
    assert_eq!(
        m.getBid(id, w.p[2])
            .call()
            .await
            .unwrap()
            .price
            .to::<u128>(),
        SPHN - 9
    );
    for who in [w.stranger, w.attacker] {
        common::expect_revert(
            &w.tc,
            who,
            m.placeBid(id, alloy::primitives::Uint::from(1u8), Default::default()),
            "ProviderNotStaked",
        )
        .await;
    }
    // Withdrawn before the deadline, it cannot win.
    w.tc.chain.send(w.p[2], m.withdrawBid(id)).await.unwrap();
    w.at(w.t0 + 62).await;
    let r = common::match_result(&w.tc, id, w.p[2]).await;
    let sigs = common::sign(&w.ops, &r, 4).await;
    let e = quorum::submit_match(&w.tc.chain, w.tc.addresses.market, w.stranger, &r, &sigs).await;
    assert_eq!(revert(e), "UnknownBid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_end_and_stop_billing() {
    let Some(w) = world().await else { return };
    let m = w.m();
    w.at(w.t0 + 61).await;
    w.matched(1, w.p[0]).await;
    let s = w.t0 + 70;
    w.at(s).await;
    w.tc.chain.send(w.p[0], m.confirmStart(1)).await.unwrap();
    w.at(s + 1800).await;
    common::expect_revert(&w.tc, w.stranger, m.closeLease(1), "NotClosable").await;
    // Ten hours later: exactly one hour at 0.5 x 2 GPUs is paid, by whoever closes.
    w.at(s + 36_000).await;
    let r = w.tc.chain.send(w.stranger, m.closeLease(1)).await.unwrap();
    let ev = common::event::<SpheronMarket::LeaseClosed>(&r).unwrap();
    assert_eq!(ev.secondsBilled, U256::from(3600));
    assert_eq!(ev.paid, U256::from(SPHN));
    assert_eq!(
        ev.refunded,
        U256::from(SPHN),
        "the bid was half the ceiling"
    );
    assert_eq!(ev.closedBy, w.stranger);
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstarted_leases_cancel_and_extensions_move_the_end() {
    let Some(w) = world().await else { return };
    let m = w.m();
    let sphn = w.tc.addresses.sphn;
    let id2 = common::order_at(&w.tc, w.t0, w.tenant, sphn, SPHN, 2, 3600, 60).await;
    common::bid(&w.tc, w.p[1], id2, SPHN / 2).await;
    w.at(w.t0 + 61).await;
    w.matched(1, w.p[0]).await;
    w.matched(id2, w.p[1]).await;
    // Order 1 is never confirmed: after the start window anyone cancels it, fully refunded.
    w.at(w.t0 + 61 + 300).await;
    common::expect_revert(&w.tc, w.stranger, m.cancelUnstarted(1), "StartWindow").await;
    w.tc.chain.send(w.p[1], m.confirmStart(id2)).await.unwrap();
    w.at(w.t0 + 61 + 301).await;
    common::expect_revert(&w.tc, w.p[0], m.confirmStart(1), "StartWindow").await;
    let r =
        w.tc.chain
            .send(w.stranger, m.cancelUnstarted(1))
            .await
            .unwrap();
    let ev = common::event::<SpheronMarket::OrderCancelled>(&r).unwrap();
    assert_eq!(ev.refunded, 2 * SPHN);
    assert_eq!(m.stakeOf(w.p[0]).call().await.unwrap().activeLeases, 0);
    // Order 2 runs; the tenant extends it by half an hour (0.5 x 2 x 0.5 h more locked).
    let start = w.t0 + 61 + 300;
    common::expect_revert(&w.tc, w.stranger, m.extendLease(id2, 1800), "NotTenant").await;
    let r =
        w.tc.chain
            .send(w.tenant, m.extendLease(id2, 1800))
            .await
            .unwrap();
    let ev = common::event::<SpheronMarket::LeaseExtended>(&r).unwrap();
    assert_eq!((ev.durationSecs, ev.added), (5400, SPHN / 2));
    let o = m.getOrder(id2).call().await.unwrap();
    assert_eq!(
        (o.end.to::<u64>(), o.locked),
        (start + 5400, 2 * SPHN + SPHN / 2)
    );
    w.at(start + 100_000).await;
    let r =
        w.tc.chain
            .send(w.stranger, m.closeLease(id2))
            .await
            .unwrap();
    let ev = common::event::<SpheronMarket::LeaseClosed>(&r).unwrap();
    assert_eq!(ev.secondsBilled, U256::from(5400));
    assert_eq!(ev.paid, U256::from(SPHN / 2 * 2 * 5400 / 3600));
    let acc = m.accountOf(sphn, w.tenant).call().await.unwrap();
    assert_eq!(acc.locked, 0);
    assert_eq!(acc.available, 100 * SPHN - SPHN / 2 * 2 * 5400 / 3600);
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_orders_expire_and_batches_skip_stale_ids() {
    let Some(w) = world().await else { return };
    let m = w.m();
    let sphn = w.tc.addresses.sphn;
    let lonely = common::order_at(&w.tc, w.t0, w.tenant, sphn, SPHN, 1, 3600, 60).await;
    w.at(w.t0 + 61).await;
    w.matched(1, w.p[0]).await;
    w.tc.chain.send(w.p[0], m.confirmStart(1)).await.unwrap();
    w.at(w.t0 + 180).await;
    common::expect_revert(&w.tc, w.stranger, m.expireOrder(lonely), "NotExpired").await;
    w.at(w.t0 + 181).await;
    let r =
        w.tc.chain
            .send(w.stranger, m.expireOrder(lonely))
            .await
            .unwrap();
    assert_eq!(
        common::event::<SpheronMarket::OrderCancelled>(&r)
            .unwrap()
            .refunded,
        SPHN
    );
    // A batch with a stale id (expired), an unknown one and a live lease: the lease closes,
    // the others are reported skipped.
    w.at(w.t0 + 10_000).await;
    let r =
        w.tc.chain
            .send(w.stranger, m.settleBatch(vec![lonely, 99, 1]))
            .await
            .unwrap();
    let skipped: Vec<u64> = r
        .inner
        .logs()
        .iter()
        .filter_map(|l| {
            <SpheronMarket::SettleSkipped as alloy::sol_types::SolEvent>::decode_log_data(l.data())
                .ok()
        })
        .map(|e| e.id)
        .collect();
    assert_eq!(skipped, vec![lonely, 99]);
    assert_eq!(m.getOrder(1).call().await.unwrap().state, 4);
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_is_the_one_recorded_at_creation() {
    let Some(w) = world().await else { return };
    let m = w.m();
    let usds = w.tc.addresses.stable;
    common::fund(&w.tc, usds, &[w.tenant], 100 * USDS).await;
    let id = common::order_at(&w.tc, w.t0 + 1, w.tenant, usds, 2 * USDS, 1, 3600, 60).await;
    assert_eq!(m.getOrder(id).call().await.unwrap().feeBps, 100);
    common::bid(&w.tc, w.p[0], id, 2 * USDS).await;
    w.at(w.t0 + 62).await;
    w.matched(id, w.p[0]).await;
    w.tc.chain.send(w.p[0], m.confirmStart(id)).await.unwrap();
    // The admin raises the fee to 10% while the lease runs: it does not apply to it.
    w.tc.chain
        .send(w.tc.admin(), m.configureToken(usds, true, 1_000))
        .await
        .unwrap();
    w.at(w.t0 + 62 + 3600).await;
    let r = w.tc.chain.send(w.tenant, m.closeLease(id)).await.unwrap();
    let ev = common::event::<SpheronMarket::LeaseClosed>(&r).unwrap();
    assert_eq!(ev.fee, U256::from(2 * USDS / 100));
    assert_eq!(ev.paid, U256::from(2 * USDS - 2 * USDS / 100));
    let id2 = common::order_at(&w.tc, w.t0 + 62 + 3600, w.tenant, usds, USDS, 1, 3600, 60).await;
    assert_eq!(m.getOrder(id2).call().await.unwrap().feeBps, 1_000);
    w.solvent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_new_business_but_never_exits() {
    let Some(w) = world().await else { return };
    let m = w.m();
    let sphn = w.tc.addresses.sphn;
    let open = common::order_at(&w.tc, w.t0, w.tenant, sphn, SPHN, 1, 3600, 60).await;
    w.at(w.t0 + 61).await;
    w.matched(1, w.p[0]).await;
    w.tc.chain.send(w.p[0], m.confirmStart(1)).await.unwrap();
    w.tc.chain.send(w.tc.admin(), m.pause()).await.unwrap();
    common::expect_revert(
        &w.tc,
        w.tenant,
        m.createOrder(sphn, SPHN, 1, 3600, 60),
        "EnforcedPause",
    )
    .await;
    common::expect_revert(
        &w.tc,
        w.p[1],
        m.placeBid(
            open,
            alloy::primitives::Uint::from(SPHN),
            Default::default(),
        ),
        "EnforcedPause",
    )
    .await;
    // Closing, cancelling and withdrawing work.
    w.at(w.t0 + 1000).await;
    w.tc.chain.send(w.tenant, m.closeLease(1)).await.unwrap();
    w.tc.chain
        .send(w.tenant, m.cancelOrder(open))
        .await
        .unwrap();
    let avail = m.accountOf(sphn, w.tenant).call().await.unwrap().available;
    w.tc.chain
        .send(w.tenant, m.withdraw(sphn, U256::from(avail)))
        .await
        .unwrap();
    let earned = m.accountOf(sphn, w.p[0]).call().await.unwrap().available;
    assert!(earned > 0);
    w.tc.chain
        .send(w.p[0], m.withdraw(sphn, U256::from(earned)))
        .await
        .unwrap();
    w.tc.chain.send(w.tc.admin(), m.unpause()).await.unwrap();
    w.solvent().await;
}
