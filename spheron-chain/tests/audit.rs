//! The verifier network on chain (`SpheronAudit`) on anvil, through the Rust API of
//! `spheron_chain::audit`: checks and uptime, rewards against the pool, cases confirmed (the
//! provider slashed, both verifiers paid) and overturned (the accuser slashed and ranked
//! down), expiry, feedback, and tiers written by an operator quorum (refused without one).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use common::{MIN_STAKE, OP_STAKE, Parties, SPHN};
use spheron_chain::anvil::TestChain;
use spheron_chain::audit::{self, AuditConfig, CaseState, CheckTally};
use spheron_chain::quorum::{self, Kind, VerdictClaim};
use spheron_chain::{MarketConfig, bindings::TestToken};

const BURN: Address = alloy::primitives::address!("0x000000000000000000000000000000000000dEaD");

struct World {
    tc: TestChain,
    audit: Address,
    cfg: AuditConfig,
    verifiers: Parties,
    ops: Parties,
    /// Eight registered, staked providers.
    p: Vec<Address>,
    tenant: Address,
    stranger: Address,
    funder: Address,
    chain_id: u64,
    /// The block time now (the clock is frozen; [`World::tick`] moves it).
    now: std::cell::Cell<u64>,
}

impl World {
    /// Moves the clock `secs` forward and mines a block there.
    async fn tick(&self, secs: u64) {
        let t = self.now.get() + secs;
        self.now.set(t);
        common::at(&self.tc, t).await;
        self.tc
            .chain
            .provider()
            .anvil_mine(Some(1), None)
            .await
            .unwrap();
    }
    async fn mine(&self) {
        self.tc
            .chain
            .provider()
            .anvil_mine(Some(1), None)
            .await
            .unwrap();
    }
    fn key(&self, a: Address) -> &PrivateKeySigner {
        self.verifiers
            .keys
            .iter()
            .find(|k| k.address() == a)
            .unwrap()
    }
    async fn sphn_of(&self, a: Address) -> u128 {
        let t = TestToken::new(self.tc.addresses.sphn, self.tc.chain.provider().clone());
        t.balanceOf(a).call().await.unwrap().to::<u128>()
    }
    /// The contract's SPHN balance equals its pool plus what it owes.
    async fn balanced(&self) {
        let (pool, owed) = audit::pool(&self.tc.chain, self.audit).await.unwrap();
        assert_eq!(
            self.sphn_of(self.audit).await,
            pool + owed,
            "balance != pool + owed"
        );
    }
    fn verdict(&self, provider: Address, session: u8, amount: u128) -> VerdictClaim {
        VerdictClaim {
            market: self.tc.addresses.market,
            provider,
            session: B256::repeat_byte(session),
            model: spheron_chain::registry::model_bytes(spheron_core::GpuModel::H100Sxm),
            amount,
            issued_at: self.now.get(),
        }
    }
    async fn sign(&self, who: Address, v: &VerdictClaim) -> Vec<u8> {
        quorum::sign_verdict(self.key(who), &self.verifiers.domain, v)
            .await
            .unwrap()
    }
    /// Opens a case on `v` by `accuser`, mines the blocks its draw needs, returns (id, assignee).
    async fn open(&self, accuser: Address, v: &VerdictClaim) -> (u64, Address) {
        let sig = self.sign(accuser, v).await;
        let id = audit::open_case(&self.tc.chain, self.audit, accuser, v, &sig)
            .await
            .unwrap();
        assert_eq!(
            audit::assignee(&self.tc.chain, self.audit, id)
                .await
                .unwrap(),
            None,
            "no assignee before the next block exists"
        );
        // The draw reads blockhash(opened + 1), which only later blocks can read.
        self.mine().await;
        self.mine().await;
        let a = audit::assignee(&self.tc.chain, self.audit, id)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(a, accuser, "the accuser is never its own re-checker");
        assert!(self.verifiers.addresses().contains(&a));
        (id, a)
    }
}

fn revert_of<T: std::fmt::Debug>(r: spheron_chain::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected a revert, got {v:?}"),
        Err(e) => e
            .revert_name()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
    }
}

async fn world() -> Option<World> {
    let tc = common::chain(&MarketConfig::default()).await?;
    let now = common::freeze(&tc).await + 10;
    common::at(&tc, now).await;
    let chain_id = tc.chain.provider().get_chain_id().await.unwrap();
    let p: Vec<Address> = tc.accounts[3..11].to_vec();
    common::register_providers(&tc, &p, 2 * MIN_STAKE).await;
    let ops = common::register_parties(&tc, &[11, 12], Kind::Operator, OP_STAKE).await;
    let verifiers = common::register_parties(&tc, &[13, 14, 15], Kind::Verifier, OP_STAKE).await;
    let cfg = AuditConfig::default();
    let audit = audit::deploy_audit(&tc.chain, tc.admin(), &tc.addresses, &cfg)
        .await
        .unwrap();
    let (tenant, stranger, funder) = (tc.accounts[2], tc.accounts[16], tc.accounts[17]);
    common::mint(&tc, tc.addresses.sphn, &[funder], U256::from(1_000 * SPHN)).await;
    let w = World {
        tc,
        audit,
        cfg,
        verifiers,
        ops,
        p,
        tenant,
        stranger,
        funder,
        chain_id,
        now: std::cell::Cell::new(now),
    };
    // Parties' stake must predate a case (the draw counts verifiers staked just before it).
    w.tick(1).await;
    Some(w)
}

#[tokio::test]
async fn checks_count_uptime_and_pay_from_the_pool() {
    let Some(w) = world().await else { return };
    let (c, a) = (&w.tc.chain, w.audit);
    let v0 = w.verifiers.addresses()[0];
    let e = audit::current_epoch(c, a).await.unwrap();
    let (start, end) = audit::epoch_bounds(c, a, e).await.unwrap();
    assert_eq!(end - start, u64::from(w.cfg.epoch_secs));
    assert!(start <= w.now.get() && w.now.get() < end);

    // An empty pool pays nothing, but the checks count.
    let t = |p: Address, passes, fails| CheckTally {
        provider: p,
        passes,
        fails,
    };
    audit::post_checks(c, a, v0, e, &[t(w.p[0], 1, 0)])
        .await
        .unwrap();
    assert_eq!(audit::rewards_of(c, a, v0).await.unwrap(), 0);
    assert_eq!(audit::uptime(c, a, e, w.p[0]).await.unwrap(), (1, 0));

    audit::fund_rewards(c, a, w.funder, 4 * SPHN).await.unwrap();
    w.balanced().await;
    audit::post_checks(c, a, v0, e, &[t(w.p[0], 2, 1), t(w.p[1], 1, 0)])
        .await
        .unwrap();
    assert_eq!(audit::uptime(c, a, e, w.p[0]).await.unwrap(), (3, 1));
    assert_eq!(audit::uptime(c, a, e, w.p[1]).await.unwrap(), (1, 0));
    assert_eq!(audit::rewards_of(c, a, v0).await.unwrap(), 3 * SPHN);
    // Two more passes are due, one SPHN is left: min(due, pool).
    let v1 = w.verifiers.addresses()[1];
    audit::post_checks(c, a, v1, e, &[t(w.p[0], 2, 0)])
        .await
        .unwrap();
    assert_eq!(audit::rewards_of(c, a, v1).await.unwrap(), SPHN);
    assert_eq!(audit::pool(c, a).await.unwrap(), (0, 4 * SPHN));
    w.balanced().await;
    let s = audit::stats(c, a, v0).await.unwrap();
    assert_eq!((s.passes, s.fails, s.rewarded), (4, 1, 3 * SPHN));

    // Limits: 6 per (epoch, verifier, provider) cumulatively; v0 has 4 on p[0].
    let r = audit::post_checks(c, a, v0, e, &[t(w.p[0], 2, 1)]).await;
    assert_eq!(revert_of(r), "TooManyChecks");
    audit::post_checks(c, a, v0, e, &[t(w.p[0], 1, 1)])
        .await
        .unwrap();
    let r = audit::post_checks(c, a, w.stranger, e, &[t(w.p[0], 1, 0)]).await;
    assert_eq!(revert_of(r), "NotVerifier");
    let r = audit::post_checks(c, a, v0, e, &[t(w.stranger, 1, 0)]).await;
    assert_eq!(revert_of(r), "NotAProvider");
    let r = audit::post_checks(c, a, v0, e + 1, &[t(w.p[2], 1, 0)]).await;
    assert_eq!(revert_of(r), "EpochNotOpen");

    // The previous epoch stays open, the one before it does not.
    w.tick(u64::from(w.cfg.epoch_secs)).await;
    assert_eq!(audit::current_epoch(c, a).await.unwrap(), e + 1);
    audit::post_checks(c, a, v0, e, &[t(w.p[2], 1, 0)])
        .await
        .unwrap();
    w.tick(u64::from(w.cfg.epoch_secs)).await;
    let r = audit::post_checks(c, a, v0, e, &[t(w.p[3], 1, 0)]).await;
    assert_eq!(revert_of(r), "EpochNotOpen");

    // Claims pay the wallet and keep the balance equal to pool + owed.
    let before = w.sphn_of(v0).await;
    audit::claim_rewards(c, a, v0).await.unwrap();
    assert_eq!(w.sphn_of(v0).await, before + 3 * SPHN);
    assert_eq!(audit::rewards_of(c, a, v0).await.unwrap(), 0);
    w.balanced().await;
    let r = audit::claim_rewards(c, a, v0).await;
    assert_eq!(revert_of(r), "Zero");
}

#[tokio::test]
async fn a_confirmed_case_slashes_the_provider_and_pays_both_verifiers() {
    let Some(w) = world().await else { return };
    let (c, a) = (&w.tc.chain, w.audit);
    let m = common::market(&w.tc);
    let accuser = w.verifiers.addresses()[2];
    let v = w.verdict(w.p[0], 1, 10 * SPHN);
    let opened_from = c.provider().get_block_number().await.unwrap();
    let (id, assignee) = w.open(accuser, &v).await;
    assert_eq!(audit::case_state(c, a, id).await.unwrap(), CaseState::Open);

    // The re-checker reads the case from the log.
    let head = c.provider().get_block_number().await.unwrap();
    let cases = audit::opened_cases(c, a, opened_from, head).await.unwrap();
    assert_eq!(cases.len(), 1);
    let oc = &cases[0];
    assert_eq!((oc.id, oc.accuser, oc.verdict), (id, accuser, v));

    // One case per verdict; a verdict signed by someone else is refused.
    let sig = w.sign(accuser, &v).await;
    let r = audit::open_case(c, a, accuser, &v, &sig).await;
    assert_eq!(revert_of(r), "CaseExists");
    let v2 = w.verdict(w.p[0], 2, 10 * SPHN);
    let r = audit::open_case(c, a, accuser, &v2, &sig).await;
    assert_eq!(revert_of(r), "NotAccuserSignature");
    let r = audit::open_case(c, a, w.stranger, &v2, &sig).await;
    assert_eq!(revert_of(r), "NotVerifier");

    // Only the assignee resolves.
    let other = w
        .verifiers
        .addresses()
        .into_iter()
        .find(|x| *x != accuser && *x != assignee)
        .unwrap();
    let other_sig = w.sign(other, &v).await;
    let r = audit::confirm_case(c, a, other, id, &v, &oc.signature, &other_sig).await;
    assert_eq!(revert_of(r), "NotAssignee");
    let r = audit::overturn_case(c, a, accuser, id).await;
    assert_eq!(revert_of(r), "NotAssignee");

    let stake_before = m.stakeOf(w.p[0]).call().await.unwrap().staked;
    let mine = w.sign(assignee, &v).await;
    audit::confirm_case(c, a, assignee, id, &v, &oc.signature, &mine)
        .await
        .unwrap();
    let stake_after = m.stakeOf(w.p[0]).call().await.unwrap().staked;
    assert_eq!(
        stake_before - stake_after,
        10 * SPHN,
        "the provider was slashed"
    );
    // The market's reporter share (10%) went to the audit contract and was split.
    let share = SPHN;
    assert_eq!(audit::rewards_of(c, a, accuser).await.unwrap(), share / 2);
    assert_eq!(
        audit::rewards_of(c, a, assignee).await.unwrap(),
        share - share / 2
    );
    w.balanced().await;
    assert_eq!(
        audit::case_state(c, a, id).await.unwrap(),
        CaseState::Confirmed
    );
    let s = audit::stats(c, a, accuser).await.unwrap();
    assert_eq!((s.confirmed, s.overturned, s.rechecks), (1, 0, 0));
    assert_eq!(audit::stats(c, a, assignee).await.unwrap().rechecks, 1);
    let r = audit::confirm_case(c, a, assignee, id, &v, &oc.signature, &mine).await;
    assert_eq!(revert_of(r), "CaseClosed");
    let mut everyone = w.p.clone();
    everyone.push(a);
    common::assert_solvent(&w.tc, &everyone).await;
    // The audit contract withdrew its reporter share: it keeps nothing on the market.
    let held = common::market(&w.tc)
        .accountOf(w.tc.addresses.sphn, a)
        .call()
        .await
        .unwrap();
    assert_eq!(held.available, 0);
}

#[tokio::test]
async fn an_overturned_case_slashes_the_accuser_and_ranks_it_down() {
    let Some(w) = world().await else { return };
    let (c, a) = (&w.tc.chain, w.audit);
    let o = spheron_chain::bindings::SpheronOperators::new(
        w.tc.addresses.operators,
        c.provider().clone(),
    );
    let e = audit::current_epoch(c, a).await.unwrap();
    // Every verifier has the same record; more checks break the tie.
    for (i, v) in w.verifiers.addresses().into_iter().enumerate() {
        let tally = CheckTally {
            provider: w.p[0],
            passes: 1 + i as u16,
            fails: 0,
        };
        audit::post_checks(c, a, v, e, &[tally]).await.unwrap();
    }
    let ranked: Vec<Address> = audit::ranking(c, a)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    let mut by_checks = w.verifiers.addresses();
    by_checks.reverse();
    assert_eq!(ranked, by_checks, "equal accuracy: more checks first");

    let accuser = w.verifiers.addresses()[2];
    let v = w.verdict(w.p[1], 7, 10 * SPHN);
    let (id, assignee) = w.open(accuser, &v).await;
    let burned = w.sphn_of(BURN).await;
    audit::overturn_case(c, a, assignee, id).await.unwrap();
    let party = o.partyOf(accuser).call().await.unwrap();
    let after = party.staked + party.unbonding;
    assert_eq!(
        OP_STAKE - after,
        OP_STAKE / 10,
        "overturnSlashBps of its stake"
    );
    assert_eq!(w.sphn_of(BURN).await - burned, OP_STAKE / 10, "burned");
    // Below the operators' minimum stake: the rest unbonds and the accuser is no longer active.
    assert_eq!(party.staked, 0);
    assert!(!o.isActive(2, accuser).call().await.unwrap());
    assert_eq!(
        audit::case_state(c, a, id).await.unwrap(),
        CaseState::Overturned
    );
    let s = audit::stats(c, a, accuser).await.unwrap();
    assert_eq!((s.passes, s.overturned), (3, 1));
    assert_eq!(s.accuracy_bps(), 7_500);
    let ranking = audit::ranking(c, a).await.unwrap();
    assert_eq!(
        ranking.last().unwrap(),
        &(accuser, 7_500),
        "the accuser falls to last"
    );
    assert_eq!(ranking[0].1, 10_000);
    assert_eq!(audit::stats(c, a, assignee).await.unwrap().rechecks, 1);
    // The provider was not touched.
    let m = common::market(&w.tc);
    assert_eq!(
        m.stakeOf(w.p[1]).call().await.unwrap().staked,
        2 * MIN_STAKE
    );

    // A case nobody resolves expires, nobody penalised; late resolution is refused. (The
    // overturned accuser is no longer active: another verifier accuses.)
    let accuser2 = w.verifiers.addresses()[0];
    let v2 = w.verdict(w.p[1], 8, 10 * SPHN);
    let r = audit::open_case(c, a, accuser, &v2, &w.sign(accuser, &v2).await).await;
    assert_eq!(revert_of(r), "NotVerifier");
    let stake2 = o.partyOf(accuser2).call().await.unwrap().staked;
    // The draw counts stake just before the opening: let the overturn's block time pass.
    w.tick(1).await;
    let (id2, assignee2) = w.open(accuser2, &v2).await;
    assert_eq!(
        assignee2,
        w.verifiers.addresses()[1],
        "the only other active verifier"
    );
    let r = audit::expire_case(c, a, w.stranger, id2).await;
    assert_eq!(revert_of(r), "RecheckWindow");
    w.tick(u64::from(w.cfg.recheck_window_secs) + 1).await;
    let r = audit::overturn_case(c, a, assignee2, id2).await;
    assert_eq!(revert_of(r), "RecheckWindow");
    audit::expire_case(c, a, w.stranger, id2).await.unwrap();
    assert_eq!(
        audit::case_state(c, a, id2).await.unwrap(),
        CaseState::Expired
    );
    assert_eq!(o.partyOf(accuser2).call().await.unwrap().staked, stake2);
    // A verdict older than the re-check window cannot open a case.
    let mut old = w.verdict(w.p[1], 9, SPHN);
    old.issued_at -= u64::from(w.cfg.recheck_window_secs) + 1;
    let sig = w.sign(accuser2, &old).await;
    let r = audit::open_case(c, a, accuser2, &old, &sig).await;
    assert_eq!(revert_of(r), "StaleVerdict");
    assert!(matches!(
        audit::case_state(c, a, 99).await,
        Err(spheron_chain::Error::Invalid { field: "case", .. })
    ));
}

#[tokio::test]
async fn tiers_need_an_operator_quorum_once_per_closed_epoch_and_pay_by_tier() {
    let Some(w) = world().await else { return };
    let (c, a) = (&w.tc.chain, w.audit);
    audit::fund_rewards(c, a, w.funder, 100 * SPHN)
        .await
        .unwrap();
    let e = audit::current_epoch(c, a).await.unwrap();
    let mut sorted_p = w.p[..4].to_vec();
    sorted_p.sort();
    let providers = &sorted_p[..];
    let tiers = [7u8, 3, 0, 5];
    let local = audit::tiers_digest_local(w.chain_id, a, e, providers, &tiers);
    assert_eq!(
        local,
        audit::tiers_digest(c, a, e, providers, &tiers)
            .await
            .unwrap(),
        "the Rust digest is the contract's"
    );
    let mut sigs = Vec::new();
    for k in &w.ops.keys {
        sigs.push((
            k.address(),
            audit::sign_tiers(k, w.chain_id, a, e, providers, &tiers)
                .await
                .unwrap(),
        ));
    }
    let r = audit::submit_tiers(c, a, w.stranger, e, providers, &tiers, &sigs).await;
    assert_eq!(revert_of(r), "EpochNotClosed");
    w.tick(u64::from(w.cfg.epoch_secs)).await;
    // One of two equal operators is half the stake: no quorum.
    let r = audit::submit_tiers(c, a, w.stranger, e, providers, &tiers, &sigs[..1]).await;
    assert_eq!(revert_of(r), "NoQuorum");
    // Signatures over other tiers do not count.
    let r = audit::submit_tiers(c, a, w.stranger, e, providers, &[7, 3, 0, 6], &sigs).await;
    assert_eq!(revert_of(r), "BadSignature");
    // Providers out of order are refused before sending.
    let backwards: Vec<Address> = providers.iter().rev().copied().collect();
    let r = audit::submit_tiers(c, a, w.stranger, e, &backwards, &tiers, &sigs).await;
    assert!(matches!(
        r,
        Err(spheron_chain::Error::Invalid {
            field: "providers",
            ..
        })
    ));
    assert!(!audit::tiers_submitted(c, a, e).await.unwrap());
    audit::submit_tiers(c, a, w.stranger, e, providers, &tiers, &sigs)
        .await
        .unwrap();
    assert!(audit::tiers_submitted(c, a, e).await.unwrap());
    let m = common::market(&w.tc);
    for (p, t) in providers.iter().zip(tiers) {
        assert_eq!(m.providerInfo(*p).call().await.unwrap().tier, t);
        assert_eq!(
            audit::rewards_of(c, a, *p).await.unwrap(),
            w.cfg.tier_rewards[usize::from(t)]
        );
    }
    w.balanced().await;
    let r = audit::submit_tiers(c, a, w.stranger, e, providers, &tiers, &sigs).await;
    assert_eq!(revert_of(r), "TiersAlreadySubmitted");
    // A provider claims its tier reward.
    let before = w.sphn_of(providers[0]).await;
    audit::claim_rewards(c, a, providers[0]).await.unwrap();
    assert_eq!(
        w.sphn_of(providers[0]).await,
        before + w.cfg.tier_rewards[7]
    );
    w.balanced().await;
}

#[tokio::test]
async fn only_the_tenant_rates_a_started_lease_once() {
    let Some(w) = world().await else { return };
    let (c, a) = (&w.tc.chain, w.audit);
    let m = common::market(&w.tc);
    let sphn = w.tc.addresses.sphn;
    common::fund(&w.tc, sphn, &[w.tenant], 100 * SPHN).await;
    let lease = common::event::<spheron_chain::bindings::SpheronMarket::OrderCreated>(
        &c.send(w.tenant, m.lockFunds(sphn, 10 * SPHN))
            .await
            .unwrap(),
    )
    .unwrap()
    .id;
    let r = audit::rate(c, a, w.tenant, lease, 5).await;
    assert_eq!(revert_of(r), "LeaseNotStarted");
    c.send(w.tenant, m.openLease(lease, w.p[0], SPHN, 1))
        .await
        .unwrap();
    let r = audit::rate(c, a, w.stranger, lease, 5).await;
    assert_eq!(revert_of(r), "NotLeaseTenant");
    let r = audit::rate(c, a, w.tenant, lease, 6).await;
    assert_eq!(revert_of(r), "BadScore");
    audit::rate(c, a, w.tenant, lease, 4).await.unwrap();
    let r = audit::rate(c, a, w.tenant, lease, 5).await;
    assert_eq!(revert_of(r), "AlreadyRated");
    let e = audit::current_epoch(c, a).await.unwrap();
    assert_eq!(audit::feedback(c, a, e, w.p[0]).await.unwrap(), (1, 4));
    assert_eq!(audit::feedback(c, a, e, w.p[1]).await.unwrap(), (0, 0));
}

/// Gas of the audit contract's calls (figures in BENCHMARKS.md):
/// `cargo test -p spheron-chain --test audit gas -- --nocapture`.
#[tokio::test]
async fn gas_of_audit_calls() {
    let Some(w) = world().await else { return };
    let (c, a) = (&w.tc.chain, w.audit);
    audit::fund_rewards(c, a, w.funder, 100 * SPHN)
        .await
        .unwrap();
    let e = audit::current_epoch(c, a).await.unwrap();
    let vs = w.verifiers.addresses();
    let t = |p: Address| CheckTally {
        provider: p,
        passes: 1,
        fails: 0,
    };
    let g = |r: alloy::rpc::types::TransactionReceipt| r.gas_used;
    let one_first = g(audit::post_checks(c, a, vs[0], e, &[t(w.p[0])])
        .await
        .unwrap());
    let one_again = g(audit::post_checks(c, a, vs[0], e, &[t(w.p[0])])
        .await
        .unwrap());
    let all: Vec<CheckTally> = w.p.iter().map(|p| t(*p)).collect();
    let eight_first = g(audit::post_checks(c, a, vs[1], e, &all).await.unwrap());
    let eight_again = g(audit::post_checks(c, a, vs[1], e, &all).await.unwrap());
    // The next epoch: the verifier's counters are rewritten, each provider's record is new
    // (the first verifier to post on it pays), then a second verifier posts.
    w.tick(u64::from(w.cfg.epoch_secs)).await;
    let eight_next = g(audit::post_checks(c, a, vs[1], e + 1, &all).await.unwrap());
    let eight_next_second = g(audit::post_checks(c, a, vs[2], e + 1, &all).await.unwrap());
    // Steady state: epoch e + 2, both verifiers posted before; the second finds the records.
    w.tick(u64::from(w.cfg.epoch_secs)).await;
    g(audit::post_checks(c, a, vs[1], e + 2, &all).await.unwrap());
    let eight_steady = g(audit::post_checks(c, a, vs[2], e + 2, &all).await.unwrap());
    let one_steady = g(audit::post_checks(c, a, vs[0], e + 2, &[t(w.p[0])])
        .await
        .unwrap());

    let accuser = vs[0];
    let v = w.verdict(w.p[0], 1, 10 * SPHN);
    let sig = w.sign(accuser, &v).await;
    let before = c.provider().get_block_number().await.unwrap();
    audit::open_case(c, a, accuser, &v, &sig).await.unwrap();
    let open = c
        .provider()
        .get_block_receipts((before + 1).into())
        .await
        .unwrap()
        .unwrap()[0]
        .gas_used;
    w.mine().await;
    w.mine().await;
    let asg = audit::assignee(c, a, 1).await.unwrap().unwrap();
    let mine = w.sign(asg, &v).await;
    let confirm = g(audit::confirm_case(c, a, asg, 1, &v, &sig, &mine)
        .await
        .unwrap());
    let v2 = w.verdict(w.p[1], 2, 10 * SPHN);
    let (id2, asg2) = w.open(accuser, &v2).await;
    let overturn = g(audit::overturn_case(c, a, asg2, id2).await.unwrap());

    let mut sorted_p = w.p[..4].to_vec();
    sorted_p.sort();
    let providers = &sorted_p[..];
    let tiers = [1u8, 2, 3, 4];
    let mut sigs = Vec::new();
    for k in &w.ops.keys {
        sigs.push((
            k.address(),
            audit::sign_tiers(k, w.chain_id, a, e, providers, &tiers)
                .await
                .unwrap(),
        ));
    }
    w.tick(u64::from(w.cfg.epoch_secs)).await;
    let submit = g(
        audit::submit_tiers(c, a, w.stranger, e, providers, &tiers, &sigs)
            .await
            .unwrap(),
    );
    println!("gas postChecks 1 provider: first in epoch {one_first}, again {one_again}");
    println!("gas postChecks 8 providers: first in epoch {eight_first}, again {eight_again}");
    println!(
        "gas postChecks 8 providers, next epoch: first verifier {eight_next}, second {eight_next_second}"
    );
    println!("gas postChecks steady state: 8 providers {eight_steady}, 1 provider {one_steady}");
    println!("gas openCase (3 verifiers): {open}");
    println!("gas confirmCase (slash + withdraw of the reporter share): {confirm}");
    println!("gas overturnCase: {overturn}");
    println!("gas submitTiers 4 providers, 2 operator signatures: {submit}");
    assert!(one_first > 0 && eight_first > one_first);
}
