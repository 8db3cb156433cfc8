//! A short random run on anvil through the Rust client (the long campaign is the forge
//! invariant suite, `scripts/invariants.sh`): tenants, providers, an operator quorum and a
//! stranger act at random on the stable token; before each step a small reference model
//! predicts success or the exact revert, and after each step the market holds exactly what it
//! owes and every tracked account matches the model.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::{Address, U256, Uint};
use common::{OP_STAKE, SPHN};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use spheron_chain::MarketConfig;
use spheron_chain::quorum::Kind;
use std::collections::BTreeMap;

const STEPS: usize = 100;
const WINDOW: u64 = 60;
const MATCH_WINDOW: u64 = 120;
const START_WINDOW: u64 = 300;
const DURATION: u64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Open,
    Matched,
    Leased,
    Done,
}

#[derive(Clone, Debug)]
struct O {
    tenant: Address,
    deadline: u64,
    ceiling: u128,
    locked: u128,
    state: St,
    bids: BTreeMap<Address, u128>,
    provider: Address,
    price: u128,
    start: u64,
}

#[derive(Default)]
struct Model {
    available: BTreeMap<Address, u128>,
    locked: BTreeMap<Address, u128>,
    fees: u128,
    orders: BTreeMap<u64, O>,
}

impl Model {
    fn avail(&self, a: Address) -> u128 {
        self.available.get(&a).copied().unwrap_or(0)
    }
    fn credit(&mut self, a: Address, x: u128) {
        *self.available.entry(a).or_default() += x;
    }
    fn debit(&mut self, a: Address, x: u128) {
        *self.available.entry(a).or_default() -= x;
    }
    fn lock(&mut self, a: Address, x: u128) {
        self.debit(a, x);
        *self.locked.entry(a).or_default() += x;
    }
    fn unlock(&mut self, a: Address, x: u128) {
        *self.locked.entry(a).or_default() -= x;
    }
    /// Settles order `id` at `now` as the contract does (fee 1% recorded at creation).
    fn settle(&mut self, id: u64, now: u64) {
        let o = self.orders[&id].clone();
        let cost = if o.state == St::Leased {
            let until = now.min(o.start + DURATION);
            let secs = until.saturating_sub(o.start);
            (o.price * u128::from(secs) / 3600).min(o.locked)
        } else {
            0
        };
        let fee = cost * 100 / 10_000;
        self.unlock(o.tenant, o.locked);
        self.credit(o.tenant, o.locked - cost);
        self.credit(o.provider, cost - fee);
        self.fees += fee;
        self.orders.get_mut(&id).unwrap().state = St::Done;
    }
    fn refund(&mut self, id: u64) {
        let o = self.orders[&id].clone();
        self.unlock(o.tenant, o.locked);
        self.credit(o.tenant, o.locked);
        self.orders.get_mut(&id).unwrap().state = St::Done;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_match_the_model_and_stay_solvent() {
    let config = MarketConfig {
        match_window_secs: MATCH_WINDOW as u32,
        start_window_secs: START_WINDOW as u32,
        ..MarketConfig::default()
    };
    for seed in [21u64, 22] {
        let Some(tc) = common::chain(&config).await else {
            return;
        };
        run(&tc, seed).await;
    }
}

async fn run(tc: &spheron_chain::anvil::TestChain, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m = common::market(tc);
    let usds = tc.addresses.stable;
    let tenants = [tc.accounts[2], tc.accounts[3]];
    let providers = [tc.accounts[4], tc.accounts[5]];
    let stranger = tc.accounts[9];
    let ops = common::register_parties(tc, &[10, 11, 12, 13], Kind::Operator, OP_STAKE).await;
    common::register_providers(tc, &providers, 200 * SPHN).await;
    common::fund(tc, usds, &tenants, 1_000_000_000).await;
    let mut model = Model::default();
    for t in tenants {
        model.credit(t, 1_000_000_000);
    }
    let mut now = common::freeze(tc).await + 1;
    let mut outcomes: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut tracked: Vec<Address> = tenants.iter().chain(&providers).copied().collect();
    tracked.push(stranger);
    for step in 0..STEPS {
        now += 1 + rng.next_u64() % 15;
        let pick = rng.next_u64() % 100;
        let tenant = tenants[(rng.next_u64() % 2) as usize];
        let ids: Vec<u64> = model.orders.keys().copied().collect();
        // Mostly the newest order in the state the operation needs, so every path is reached;
        // sometimes any order (stale ids, wrong states).
        let wanted = |st: St| match pick {
            30..=49 => st == St::Open,
            50..=64 => st == St::Open && !model.orders.values().all(|o| o.bids.is_empty()),
            65..=74 => st == St::Matched,
            _ => matches!(st, St::Matched | St::Leased),
        };
        let steered = model
            .orders
            .iter()
            .rev()
            .find(|(_, o)| wanted(o.state) && (!(50..65).contains(&pick) || !o.bids.is_empty()))
            .map(|(id, _)| *id);
        let any_id = match (steered, rng.next_u64() % 10 < 7) {
            (Some(id), true) => id,
            _ if ids.is_empty() => 1,
            _ => ids[(rng.next_u64() % ids.len() as u64) as usize],
        };
        // A match is due once the order's window has closed: jump there most of the time.
        if (50..=64).contains(&pick)
            && let Some(o) = model.orders.get(&any_id)
            && o.state == St::Open
            && now <= o.deadline
            && rng.next_u64() % 10 < 8
        {
            now = o.deadline + 1;
        }
        common::at(tc, now).await;
        let (what, expected, got): (&str, Option<&str>, Result<_, String>) = match pick {
            0..=9 => {
                let x = 1 + u128::from(rng.next_u64() % 5_000_000);
                let ok = x <= model.avail(tenant);
                let r = common::try_send(tc, tenant, m.withdraw(usds, U256::from(x))).await;
                if ok {
                    model.debit(tenant, x);
                }
                ("withdraw", (!ok).then_some("InsufficientBalance"), r)
            }
            10..=29 => {
                let ceiling = 1 + u128::from(rng.next_u64() % 3_000_000);
                let budget = ceiling * u128::from(DURATION) / 3600;
                let ok = budget <= model.avail(tenant);
                let r = common::try_send(
                    tc,
                    tenant,
                    m.createOrder(usds, ceiling, 1, DURATION as u32, WINDOW as u32),
                )
                .await;
                if let (true, Ok(rc)) = (ok, &r) {
                    let id =
                        common::event::<spheron_chain::bindings::SpheronMarket::OrderCreated>(rc)
                            .unwrap()
                            .id;
                    model.lock(tenant, budget);
                    model.orders.insert(
                        id,
                        O {
                            tenant,
                            deadline: now + WINDOW,
                            ceiling,
                            locked: budget,
                            state: St::Open,
                            bids: BTreeMap::new(),
                            provider: Address::ZERO,
                            price: 0,
                            start: 0,
                        },
                    );
                }
                ("createOrder", (!ok).then_some("InsufficientBalance"), r)
            }
            30..=49 => {
                let p = providers[(rng.next_u64() % 2) as usize];
                let o = model.orders.get(&any_id).cloned();
                let price = o
                    .as_ref()
                    .map_or(1, |o| 1 + u128::from(rng.next_u64()) % o.ceiling);
                let expected = match &o {
                    None => Some("UnknownOrder"),
                    Some(o) if o.state != St::Open => Some("WrongState"),
                    Some(o) if now > o.deadline => Some("BidWindowClosed"),
                    _ => None,
                };
                let r = common::try_send(
                    tc,
                    p,
                    m.placeBid(any_id, Uint::<96, 2>::from(price), Default::default()),
                )
                .await;
                if expected.is_none() {
                    model.orders.get_mut(&any_id).unwrap().bids.insert(p, price);
                }
                ("placeBid", expected, r)
            }
            50..=64 => {
                // The quorum (3 of 4) matches the cheapest bid.
                let o = model.orders.get(&any_id).cloned();
                let expected = match &o {
                    None => Some("UnknownOrder"),
                    Some(o) if o.state != St::Open => Some("WrongState"),
                    Some(o) if now <= o.deadline => Some("MatchTooEarly"),
                    Some(o) if now > o.deadline + MATCH_WINDOW => Some("MatchTooLate"),
                    Some(o) if o.bids.is_empty() => Some("UnknownBid"),
                    _ => None,
                };
                let winner = o
                    .as_ref()
                    .and_then(|o| o.bids.iter().min_by_key(|(_, p)| **p).map(|(a, _)| *a))
                    .unwrap_or(providers[0]);
                let r = common::submit(tc, &ops, any_id, winner, 3, stranger)
                    .await
                    .map_err(|e| e.revert_name().map(str::to_string).unwrap_or(e.to_string()));
                if expected.is_none() {
                    let o = model.orders.get_mut(&any_id).unwrap();
                    o.state = St::Matched;
                    o.provider = winner;
                    o.price = o.bids[&winner];
                    o.start = now;
                    // Usually the provider launches and confirms right away.
                    if r.is_ok() && rng.next_u64() % 10 < 7 {
                        now += 1;
                        common::at(tc, now).await;
                        let c = common::try_send(tc, winner, m.confirmStart(any_id)).await;
                        assert!(c.is_ok(), "seed {seed} step {step}: confirmStart {c:?}");
                        outcomes.entry("confirmStart").or_default().0 += 1;
                        let o = model.orders.get_mut(&any_id).unwrap();
                        o.state = St::Leased;
                        o.start = now;
                    }
                }
                ("submitMatch", expected, r)
            }
            65..=74 => {
                let o = model.orders.get(&any_id).cloned();
                let from = o.as_ref().map_or(providers[0], |o| {
                    if o.provider == Address::ZERO {
                        providers[0]
                    } else {
                        o.provider
                    }
                });
                let expected = match &o {
                    None => Some("UnknownOrder"),
                    Some(o) if o.state != St::Matched => Some("WrongState"),
                    Some(o) if now > o.start + START_WINDOW => Some("StartWindow"),
                    _ => None,
                };
                let r = common::try_send(tc, from, m.confirmStart(any_id)).await;
                if expected.is_none() {
                    let o = model.orders.get_mut(&any_id).unwrap();
                    o.state = St::Leased;
                    o.start = now;
                }
                ("confirmStart", expected, r)
            }
            75..=84 => {
                // The tenant closes; a stranger may only once the lease ended.
                let as_stranger = rng.next_u64() % 2 == 0;
                let o = model.orders.get(&any_id).cloned();
                let from = if as_stranger {
                    stranger
                } else {
                    o.as_ref().map_or(tenant, |o| o.tenant)
                };
                let expected = match &o {
                    None => Some("UnknownOrder"),
                    Some(o) if !matches!(o.state, St::Matched | St::Leased) => Some("WrongState"),
                    Some(o) if as_stranger => {
                        let ended = match o.state {
                            St::Matched => now > o.start + START_WINDOW,
                            _ => now >= o.start + DURATION,
                        };
                        (!ended).then_some("NotClosable")
                    }
                    _ => None,
                };
                let r = common::try_send(tc, from, m.closeLease(any_id)).await;
                if expected.is_none() {
                    model.settle(any_id, now);
                }
                ("closeLease", expected, r)
            }
            85..=96 => {
                let o = model.orders.get(&any_id).cloned();
                let expected = match &o {
                    None => Some("UnknownOrder"),
                    Some(o) if o.state != St::Open => Some("WrongState"),
                    Some(o) if now <= o.deadline + MATCH_WINDOW => Some("NotExpired"),
                    _ => None,
                };
                let r = common::try_send(tc, stranger, m.expireOrder(any_id)).await;
                if expected.is_none() {
                    model.refund(any_id);
                }
                ("expireOrder", expected, r)
            }
            _ => {
                // Jump past every lease's end, then settle them all (and stale ids) in a batch.
                now += DURATION + START_WINDOW;
                common::at(tc, now).await;
                let mut batch: Vec<u64> = ids.clone();
                batch.push(9_999);
                let r = common::try_send(tc, stranger, m.settleBatch(batch)).await;
                for id in ids {
                    if matches!(model.orders[&id].state, St::Matched | St::Leased) {
                        model.settle(id, now);
                    }
                }
                ("settleBatch", None, r)
            }
        };
        let e = outcomes.entry(what).or_default();
        if got.is_ok() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
        match (expected, &got) {
            (None, Ok(_)) => {}
            (Some(name), Err(e)) => assert!(
                e.starts_with(name),
                "seed {seed} step {step} {what}: expected {name}, got {e}"
            ),
            (None, Err(e)) => panic!("seed {seed} step {step} {what}: unexpected revert {e}"),
            (Some(name), Ok(_)) => {
                panic!("seed {seed} step {step} {what}: expected {name}, it succeeded")
            }
        }
        common::assert_solvent(tc, &tracked).await;
        for a in &tracked {
            let acc = m.accountOf(usds, *a).call().await.unwrap();
            assert_eq!(
                (acc.available, acc.locked),
                (model.avail(*a), model.locked.get(a).copied().unwrap_or(0)),
                "seed {seed} step {step} {what}: account {a}"
            );
        }
        assert_eq!(
            u128::try_from(m.fees(usds).call().await.unwrap()).unwrap(),
            model.fees,
            "seed {seed} step {step} {what}: fees"
        );
    }
    eprintln!("seed {seed}: (succeeded, reverted as predicted) per operation: {outcomes:?}");
    for op in [
        "createOrder",
        "placeBid",
        "submitMatch",
        "confirmStart",
        "closeLease",
    ] {
        assert!(
            outcomes.get(op).is_some_and(|(ok, _)| *ok > 0),
            "seed {seed}: {op} never succeeded: {outcomes:?}"
        );
    }
}
