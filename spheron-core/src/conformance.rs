//! The escrow conformance suite: shared async test functions that every [`Escrow`]
//! implementation must pass, so that the in-memory ledger and the EVM contract behave the same
//! to the last base unit.
//!
//! Each function expects a fresh, empty escrow and panics (as a test does) on a deviation.
//! Times are passed as [`Timestamp`]s from `Timestamp(0)` upward and never go backwards, so a
//! backend whose clock is a chain can map them onto block time. Every lease uses its order's
//! number as its id ([`LeaseId`]`(n)` for [`OrderId`]`(n)`), and order ids are never reused,
//! which is what a chain that identifies a lease by its order needs.
//!
//! Call them from a test of your backend, for example
//! `conformance::settles_pro_rata_per_second(&escrow, &Accounts::labelled()).await`, or all at
//! once with [`run_all`]; compare two backends with [`transcript`].
#![allow(clippy::unwrap_used)]

use crate::clock::Timestamp;
use crate::error::Error;
use crate::escrow::{Balance, Escrow, LeaseTerms};
use crate::ids::{AccountId, LeaseId, OrderId, ProviderId};
use crate::money::Amount;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The accounts a suite run uses. A backend that needs keys for them (a chain) prepares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accounts {
    /// Pays for leases.
    pub tenant: AccountId,
    /// A second tenant / transfer counterparty.
    pub other: AccountId,
    /// Gets paid for leases and stakes.
    pub provider: ProviderId,
    /// Receives slashed stake.
    pub beneficiary: AccountId,
}

impl Accounts {
    /// Four accounts derived from fixed labels (fine for any backend without keys).
    pub fn labelled() -> Self {
        Accounts {
            tenant: AccountId::from_label("conformance.tenant"),
            other: AccountId::from_label("conformance.other"),
            provider: AccountId::from_label("conformance.provider"),
            beneficiary: AccountId::from_label("conformance.beneficiary"),
        }
    }

    fn all(&self) -> [AccountId; 4] {
        [self.tenant, self.other, self.provider, self.beneficiary]
    }
}

/// The variant name of an error (`"InsufficientFunds"`, `"Overflow"`, ...), to compare
/// backends whose messages may differ in detail but never in kind.
pub fn kind(e: &Error) -> String {
    let dbg = format!("{e:?}");
    dbg.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn terms(order: u64, provider: ProviderId, price: u128, gpus: u32, start: u64) -> LeaseTerms {
    LeaseTerms {
        lease: LeaseId(order),
        order: OrderId(order),
        provider,
        price_per_gpu_hour: Amount(price),
        gpus,
        start: Timestamp(start),
    }
}

#[track_caller]
fn expect_kind<T: std::fmt::Debug>(r: crate::Result<T>, want: &str) {
    match r {
        Err(e) => assert_eq!(kind(&e), want, "wrong error: {e}"),
        Ok(v) => panic!("expected {want}, got Ok({v:?})"),
    }
}

async fn bal(e: &dyn Escrow, a: AccountId) -> Balance {
    e.balance(a).await.unwrap()
}

/// Deposits, withdrawals and transfers move exact amounts.
pub async fn balances_move_exactly(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.tenant, Amount(10_000_000)).await.unwrap();
    e.deposit(a.tenant, Amount(5)).await.unwrap();
    e.withdraw(a.tenant, Amount(1_000_001)).await.unwrap();
    e.transfer(a.tenant, a.other, Amount(2_500_000))
        .await
        .unwrap();
    e.transfer(a.other, a.other, Amount(1)).await.unwrap();
    assert_eq!(bal(e, a.tenant).await.available, Amount(6_500_004));
    assert_eq!(bal(e, a.other).await.available, Amount(2_500_000));
    assert_eq!(bal(e, a.provider).await, Balance::default());
}

/// Bad operations fail with the right error kind and change no balance.
pub async fn bad_operations_are_typed_and_change_nothing(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.tenant, Amount(1_000)).await.unwrap();
    let before = bal(e, a.tenant).await;
    expect_kind(e.deposit(a.tenant, Amount(0)).await, "ZeroAmount");
    expect_kind(e.withdraw(a.tenant, Amount(0)).await, "ZeroAmount");
    expect_kind(
        e.withdraw(a.tenant, Amount(1_001)).await,
        "InsufficientFunds",
    );
    expect_kind(e.withdraw(a.other, Amount(1)).await, "InsufficientFunds");
    expect_kind(
        e.transfer(a.tenant, a.other, Amount(1_001)).await,
        "InsufficientFunds",
    );
    expect_kind(e.lock(OrderId(1), a.tenant, Amount(0)).await, "ZeroAmount");
    expect_kind(
        e.lock(OrderId(1), a.tenant, Amount(1_001)).await,
        "InsufficientFunds",
    );
    expect_kind(e.release(OrderId(77)).await, "UnknownOrder");
    expect_kind(e.settle(LeaseId(77), Timestamp(0)).await, "UnknownLease");
    expect_kind(e.accrued(LeaseId(77), Timestamp(0)).await, "UnknownLease");
    expect_kind(e.stake(a.provider, Amount(1)).await, "InsufficientFunds");
    expect_kind(
        e.slash(a.provider, Amount(0), a.beneficiary).await,
        "ZeroAmount",
    );
    assert_eq!(bal(e, a.tenant).await, before);
    assert_eq!(bal(e, a.other).await, Balance::default());
}

/// Locks move funds from available to locked; a second lock of the same order is refused;
/// release returns everything, once.
pub async fn locks_and_releases(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.tenant, Amount(1_000)).await.unwrap();
    e.lock(OrderId(1), a.tenant, Amount(600)).await.unwrap();
    assert_eq!(
        bal(e, a.tenant).await,
        Balance {
            available: Amount(400),
            locked: Amount(600),
            staked: Amount(0)
        }
    );
    expect_kind(
        e.lock(OrderId(1), a.tenant, Amount(10)).await,
        "AlreadyLocked",
    );
    e.lock(OrderId(2), a.tenant, Amount(400)).await.unwrap();
    assert_eq!(e.release(OrderId(1)).await.unwrap(), Amount(600));
    expect_kind(e.release(OrderId(1)).await, "UnknownOrder");
    assert_eq!(
        bal(e, a.tenant).await,
        Balance {
            available: Amount(600),
            locked: Amount(400),
            staked: Amount(0)
        }
    );
}

/// The provider is paid floor(price x gpus x whole seconds / 3600), the tenant refunded the
/// rest, and a settled lease cannot be settled, accrued or released again.
pub async fn settles_pro_rata_per_second(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.tenant, Amount(10_000_000)).await.unwrap();
    e.lock(OrderId(1), a.tenant, Amount(7_200_000))
        .await
        .unwrap();
    e.open_lease(terms(1, a.provider, 1_234_567, 2, 1_000))
        .await
        .unwrap();
    expect_kind(e.release(OrderId(1)).await, "InvalidField");
    // 1800.999 s after the start: 1800 whole seconds.
    assert_eq!(
        e.accrued(LeaseId(1), Timestamp(1_801_999)).await.unwrap(),
        Amount(1_234_567)
    );
    let s = e.settle(LeaseId(1), Timestamp(1_801_999)).await.unwrap();
    assert_eq!(s.lease, LeaseId(1));
    assert_eq!(s.seconds, 1800);
    assert_eq!(s.paid, Amount(1_234_567));
    assert_eq!(s.refunded, Amount(7_200_000 - 1_234_567));
    assert!(!s.funds_exhausted);
    assert_eq!(bal(e, a.provider).await.available, Amount(1_234_567));
    assert_eq!(
        bal(e, a.tenant).await,
        Balance {
            available: Amount(10_000_000 - 1_234_567),
            locked: Amount(0),
            staked: Amount(0)
        }
    );
    expect_kind(
        e.settle(LeaseId(1), Timestamp(1_801_999)).await,
        "LeaseClosed",
    );
    expect_kind(
        e.accrued(LeaseId(1), Timestamp(1_801_999)).await,
        "LeaseClosed",
    );
    expect_kind(e.release(OrderId(1)).await, "UnknownOrder");
    // An odd price: 7 per GPU-hour on 3 GPUs for 1001 s pays floor(21021/3600) = 5.
    e.lock(OrderId(2), a.tenant, Amount(100)).await.unwrap();
    e.open_lease(terms(2, a.provider, 7, 3, 2_000_000))
        .await
        .unwrap();
    let s = e.settle(LeaseId(2), Timestamp(3_001_000)).await.unwrap();
    assert_eq!(
        (s.seconds, s.paid, s.refunded),
        (1001, Amount(5), Amount(95))
    );
    e.withdraw(a.provider, Amount(1_234_572)).await.unwrap();
    assert_eq!(bal(e, a.provider).await, Balance::default());
}

/// Payment never exceeds the lock: an exhausted lease pays the lock and refunds nothing.
pub async fn payment_is_capped_by_the_lock(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.tenant, Amount(1_000)).await.unwrap();
    e.lock(OrderId(1), a.tenant, Amount(1_000)).await.unwrap();
    e.open_lease(terms(1, a.provider, 3_600, 1, 0))
        .await
        .unwrap();
    assert_eq!(
        e.accrued(LeaseId(1), Timestamp(999_000)).await.unwrap(),
        Amount(999)
    );
    assert_eq!(
        e.accrued(LeaseId(1), Timestamp(5_000_000)).await.unwrap(),
        Amount(1_000)
    );
    let s = e.settle(LeaseId(1), Timestamp(10_000_000)).await.unwrap();
    assert_eq!(
        (s.paid, s.refunded, s.funds_exhausted),
        (Amount(1_000), Amount(0), true)
    );
    assert_eq!(bal(e, a.provider).await.available, Amount(1_000));
    assert_eq!(bal(e, a.tenant).await, Balance::default());
}

/// Lease terms are validated: zero price, zero GPUs, unknown order, a second lease on an
/// order, and prices whose cost over the longest lease would overflow are refused.
pub async fn open_lease_validates_terms(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.tenant, Amount(1_000)).await.unwrap();
    e.lock(OrderId(1), a.tenant, Amount(1_000)).await.unwrap();
    expect_kind(
        e.open_lease(terms(1, a.provider, 0, 1, 0)).await,
        "ZeroAmount",
    );
    expect_kind(
        e.open_lease(terms(1, a.provider, 10, 0, 0)).await,
        "InvalidField",
    );
    expect_kind(
        e.open_lease(terms(1, a.provider, u128::MAX, 2, 0)).await,
        "Overflow",
    );
    expect_kind(
        e.open_lease(terms(1, a.provider, u128::MAX / 1_000, 1, 0))
            .await,
        "Overflow",
    );
    expect_kind(
        e.open_lease(terms(9, a.provider, 10, 1, 0)).await,
        "UnknownOrder",
    );
    e.open_lease(terms(1, a.provider, 10, 1, 0)).await.unwrap();
    expect_kind(
        e.open_lease(terms(1, a.provider, 10, 1, 0)).await,
        "InvalidField",
    );
    let s = e.settle(LeaseId(1), Timestamp(3_600_000)).await.unwrap();
    assert_eq!((s.paid, s.refunded), (Amount(10), Amount(990)));
}

/// Stake comes from available funds; a slash moves at most the stake to the beneficiary.
/// Run it on an escrow whose token may be staked.
pub async fn slash_is_capped_by_stake(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.provider, Amount(100)).await.unwrap();
    e.stake(a.provider, Amount(60)).await.unwrap();
    assert_eq!(
        bal(e, a.provider).await,
        Balance {
            available: Amount(40),
            locked: Amount(0),
            staked: Amount(60)
        }
    );
    assert_eq!(
        e.slash(a.provider, Amount(25), a.beneficiary)
            .await
            .unwrap(),
        Amount(25)
    );
    assert_eq!(
        e.slash(a.provider, Amount(1_000), a.beneficiary)
            .await
            .unwrap(),
        Amount(35)
    );
    assert_eq!(
        e.slash(a.provider, Amount(1), a.beneficiary).await.unwrap(),
        Amount(0)
    );
    assert_eq!(bal(e, a.provider).await.staked, Amount(0));
    assert_eq!(bal(e, a.beneficiary).await.available, Amount(60));
}

/// Balances are 128-bit: a deposit past `u128::MAX` is refused with `Overflow` and changes
/// nothing. The tenant must be able to pay in `u128::MAX + 1` base units. (The in-memory
/// ledger also caps the sum of all deposits at `u128::MAX`; a chain is bounded by the token's
/// supply instead, so the suite only relies on the per-account bound.)
pub async fn balance_overflow_is_refused(e: &dyn Escrow, a: &Accounts) {
    e.deposit(a.tenant, Amount(u128::MAX)).await.unwrap();
    expect_kind(e.deposit(a.tenant, Amount(1)).await, "Overflow");
    e.transfer(a.tenant, a.other, Amount(7)).await.unwrap();
    expect_kind(
        e.transfer(a.other, a.tenant, Amount(8)).await,
        "InsufficientFunds",
    );
    e.transfer(a.other, a.tenant, Amount(7)).await.unwrap();
    expect_kind(e.deposit(a.tenant, Amount(1)).await, "Overflow");
    assert_eq!(bal(e, a.tenant).await.available, Amount(u128::MAX));
    assert_eq!(bal(e, a.other).await.available, Amount(0));
}

/// Runs a deterministic pseudo-random sequence of `steps` operations (deposits, withdrawals,
/// transfers, locks, releases, leases, accruals, settlements, stakes, slashes) and returns a
/// transcript: each result (value or error kind) followed by every account's balance. Two
/// conforming escrows produce identical transcripts for the same seed.
///
/// Per-step funding needs stay below `2^40` base units per account.
pub async fn transcript(e: &dyn Escrow, a: &Accounts, seed: u64, steps: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let accts = a.all();
    let mut out = Vec::with_capacity(steps);
    let mut next_order = 1u64;
    let mut now = 0u64;
    let pick = |n: u64, rng: &mut ChaCha8Rng| rng.next_u64() % n;
    for step in 0..steps {
        let who = accts[pick(4, &mut rng) as usize];
        let to = accts[pick(4, &mut rng) as usize];
        let amount = Amount(u128::from(pick(3_000_000, &mut rng)));
        let known = OrderId(1 + pick(next_order, &mut rng));
        now += 1_000 * pick(4_000, &mut rng);
        let r: crate::Result<String> = match pick(11, &mut rng) {
            0 | 1 => e.deposit(who, amount).await.map(|_| "ok".into()),
            2 => e.withdraw(who, amount).await.map(|_| "ok".into()),
            3 => e.transfer(who, to, amount).await.map(|_| "ok".into()),
            4 => {
                let id = OrderId(next_order);
                next_order += 1;
                e.lock(id, who, amount).await.map(|_| "ok".into())
            }
            5 => e.release(known).await.map(|x| x.0.to_string()),
            6 => {
                let price = 1 + u128::from(pick(20_000_000, &mut rng));
                let gpus = 1 + pick(8, &mut rng) as u32;
                e.open_lease(terms(known.0, to, price, gpus, now))
                    .await
                    .map(|_| "ok".into())
            }
            7 => e
                .accrued(LeaseId(known.0), Timestamp(now))
                .await
                .map(|x| x.0.to_string()),
            8 => e
                .settle(LeaseId(known.0), Timestamp(now))
                .await
                .map(|s| format!("{s:?}")),
            9 => e.stake(who, amount).await.map(|_| "ok".into()),
            _ => e.slash(who, amount, to).await.map(|x| x.0.to_string()),
        };
        let mut line = format!(
            "{step}: {}",
            match r {
                Ok(v) => v,
                Err(err) => format!("error {}", kind(&err)),
            }
        );
        for acct in accts {
            let b = bal(e, acct).await;
            line.push_str(&format!(
                " | {}/{}/{}",
                b.available.0, b.locked.0, b.staked.0
            ));
        }
        out.push(line);
    }
    out
}

/// Runs every conformance function that needs no special funding, each on a fresh escrow
/// from `fresh` (the slash test only when `stakeable`).
pub async fn run_all<F, Fut, E>(mut fresh: F, a: &Accounts, stakeable: bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = E>,
    E: std::ops::Deref<Target = dyn Escrow>,
{
    balances_move_exactly(&*fresh().await, a).await;
    bad_operations_are_typed_and_change_nothing(&*fresh().await, a).await;
    locks_and_releases(&*fresh().await, a).await;
    settles_pro_rata_per_second(&*fresh().await, a).await;
    payment_is_capped_by_the_lock(&*fresh().await, a).await;
    open_lease_validates_terms(&*fresh().await, a).await;
    if stakeable {
        slash_is_capped_by_stake(&*fresh().await, a).await;
    }
}
