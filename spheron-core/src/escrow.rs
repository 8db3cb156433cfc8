//! Escrow: where a tenant's payment waits until work is done.
//!
//! [`Escrow`] is the plug point (in-memory here, an EVM contract in `spheron-chain`);
//! [`MemoryEscrow`] is the embedded ledger. The ledger only moves funds between
//! buckets, so `deposited == withdrawn + available + locked + staked` always holds
//! (see [`LedgerTotals::is_balanced`]).

use crate::clock::Timestamp;
use crate::history::History;
use crate::ids::{AccountId, LeaseId, OrderId, ProviderId};
use crate::money::{Amount, Token, accrued_cost};
use crate::{Error, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What an account holds in escrow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Free to withdraw, lock or stake (earnings and refunds land here).
    pub available: Amount,
    /// Locked for orders and leases.
    pub locked: Amount,
    /// Staked as a provider.
    pub staked: Amount,
}

/// The terms a lease is opened with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTerms {
    /// The lease.
    pub lease: LeaseId,
    /// The order whose locked funds pay for it.
    pub order: OrderId,
    /// Who gets paid.
    pub provider: ProviderId,
    /// Price per GPU-hour.
    pub price_per_gpu_hour: Amount,
    /// GPUs leased.
    pub gpus: u32,
    /// When accrual starts.
    pub start: Timestamp,
}

/// The outcome of settling a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The lease.
    pub lease: LeaseId,
    /// Whole seconds billed.
    pub seconds: u64,
    /// Paid to the provider.
    pub paid: Amount,
    /// Returned to the tenant's available balance.
    pub refunded: Amount,
    /// Whether the accrued cost reached the locked amount.
    pub funds_exhausted: bool,
}

/// The escrow plug point. Amounts are base units of [`Escrow::token`].
#[cfg_attr(any(test, feature = "test-utils"), mockall::automock)]
#[async_trait]
pub trait Escrow: Send + Sync {
    /// The token this escrow holds.
    fn token(&self) -> Token;
    /// Credits `amount` to `account` (from outside the ledger).
    async fn deposit(&self, account: AccountId, amount: Amount) -> Result<()>;
    /// Pays `amount` of `account`'s available balance out of the ledger.
    async fn withdraw(&self, account: AccountId, amount: Amount) -> Result<()>;
    /// Moves available funds between accounts (reward payouts).
    async fn transfer(&self, from: AccountId, to: AccountId, amount: Amount) -> Result<()>;
    /// Locks `amount` of `tenant`'s available funds for `order`.
    async fn lock(&self, order: OrderId, tenant: AccountId, amount: Amount) -> Result<()>;
    /// Returns an order's locked funds to its tenant when no lease was opened.
    async fn release(&self, order: OrderId) -> Result<Amount>;
    /// Opens a lease paid from the order's lock.
    async fn open_lease(&self, terms: LeaseTerms) -> Result<()>;
    /// Cost accrued by `lease` up to `at`, capped by what is locked.
    async fn accrued(&self, lease: LeaseId, at: Timestamp) -> Result<Amount>;
    /// Closes `lease` at `at`: the provider is paid pro rata per second, the rest is refunded.
    async fn settle(&self, lease: LeaseId, at: Timestamp) -> Result<Settlement>;
    /// Moves `amount` of `provider`'s available funds into stake.
    async fn stake(&self, provider: ProviderId, amount: Amount) -> Result<()>;
    /// Slashes up to `amount` of `provider`'s stake to `beneficiary`; returns what was slashed
    /// (never more than the stake).
    async fn slash(
        &self,
        provider: ProviderId,
        amount: Amount,
        beneficiary: AccountId,
    ) -> Result<Amount>;
    /// An account's balances.
    async fn balance(&self, account: AccountId) -> Result<Balance>;
}

/// Flow and stock totals of a ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTotals {
    /// Everything ever deposited.
    pub deposited: Amount,
    /// Everything ever withdrawn.
    pub withdrawn: Amount,
    /// Sum of available balances now.
    pub available: Amount,
    /// Sum of locked balances now.
    pub locked: Amount,
    /// Sum of stakes now.
    pub staked: Amount,
    /// Everything ever paid to providers for leases.
    pub paid: Amount,
    /// Everything ever refunded to tenants.
    pub refunded: Amount,
    /// Everything ever slashed.
    pub slashed: Amount,
}

impl LedgerTotals {
    /// The conservation law: nothing is created or lost.
    pub fn is_balanced(&self) -> bool {
        let held = self.withdrawn.0 + self.available.0 + self.locked.0 + self.staked.0;
        self.deposited.0 == held
    }
}

#[derive(Debug)]
struct OrderLock {
    tenant: AccountId,
    amount: Amount,
    lease: Option<LeaseTerms>,
}

/// Settlements [`MemoryEscrow::settlement`] still answers for; older ones are forgotten (a
/// settled lease's money is in the balances and totals either way).
pub const SETTLED_KEPT: usize = 4_096;

#[derive(Debug)]
struct Ledger {
    accounts: BTreeMap<AccountId, Balance>,
    orders: BTreeMap<OrderId, OrderLock>,
    leases: BTreeMap<LeaseId, OrderId>,
    settled: History<LeaseId, Settlement>,
    flows: LedgerTotals,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            accounts: BTreeMap::new(),
            orders: BTreeMap::new(),
            leases: BTreeMap::new(),
            settled: History::new(SETTLED_KEPT),
            flows: LedgerTotals::default(),
        }
    }
}

impl Ledger {
    fn account(&mut self, a: AccountId) -> &mut Balance {
        self.accounts.entry(a).or_default()
    }

    fn available(&self, a: AccountId) -> Amount {
        self.accounts
            .get(&a)
            .map(|b| b.available)
            .unwrap_or_default()
    }

    fn cost(terms: &LeaseTerms, locked: Amount, at: Timestamp) -> Result<(u64, Amount)> {
        let secs = at.secs_since(terms.start);
        let cost = accrued_cost(terms.price_per_gpu_hour, terms.gpus, secs)?;
        Ok((secs, cost.min(locked)))
    }
}

/// The embedded in-memory escrow ledger.
///
/// Every operation validates fully before mutating, so a failed call changes nothing.
#[derive(Debug)]
pub struct MemoryEscrow {
    token: Token,
    inner: Mutex<Ledger>,
}

impl MemoryEscrow {
    /// An empty ledger for `token`.
    pub fn new(token: Token) -> Self {
        MemoryEscrow {
            token,
            inner: Mutex::new(Ledger::default()),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock cannot leave a half-applied operation (we validate
        // before mutating), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stock and flow totals, for audits and the conservation check.
    pub fn totals(&self) -> LedgerTotals {
        let l = self.ledger();
        let mut t = l.flows;
        for b in l.accounts.values() {
            t.available.0 += b.available.0;
            t.locked.0 += b.locked.0;
            t.staked.0 += b.staked.0;
        }
        t
    }

    /// The settlement of a closed lease, if it was settled here (among the last
    /// [`SETTLED_KEPT`]).
    pub fn settlement(&self, lease: LeaseId) -> Option<Settlement> {
        self.ledger().settled.get(&lease).copied()
    }
}

#[async_trait]
impl Escrow for MemoryEscrow {
    fn token(&self) -> Token {
        self.token.clone()
    }

    async fn deposit(&self, account: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        let mut l = self.ledger();
        let new_avail = l.available(account).checked_add(amount)?;
        let new_total = l.flows.deposited.checked_add(amount)?;
        l.account(account).available = new_avail;
        l.flows.deposited = new_total;
        Ok(())
    }

    async fn withdraw(&self, account: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        let mut l = self.ledger();
        let rest = l.available(account).checked_sub(amount)?;
        l.account(account).available = rest;
        l.flows.withdrawn.0 += amount.0;
        Ok(())
    }

    async fn transfer(&self, from: AccountId, to: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        let mut l = self.ledger();
        let rest = l.available(from).checked_sub(amount)?;
        if from == to {
            return Ok(());
        }
        let credited = l.available(to).checked_add(amount)?;
        l.account(from).available = rest;
        l.account(to).available = credited;
        Ok(())
    }

    async fn lock(&self, order: OrderId, tenant: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        let mut l = self.ledger();
        if l.orders.contains_key(&order) {
            return Err(Error::AlreadyLocked(order));
        }
        let rest = l.available(tenant).checked_sub(amount)?;
        let acct = l.account(tenant);
        acct.available = rest;
        acct.locked.0 += amount.0;
        l.orders.insert(
            order,
            OrderLock {
                tenant,
                amount,
                lease: None,
            },
        );
        Ok(())
    }

    async fn release(&self, order: OrderId) -> Result<Amount> {
        let mut l = self.ledger();
        let lock = l.orders.get(&order).ok_or(Error::UnknownOrder(order))?;
        if let Some(t) = &lock.lease {
            return Err(Error::invalid(
                "order",
                format!("{order} has {} open; settle it instead", t.lease),
            ));
        }
        let (tenant, amount) = (lock.tenant, lock.amount);
        l.orders.remove(&order);
        let acct = l.account(tenant);
        acct.locked.0 -= amount.0;
        acct.available.0 += amount.0;
        l.flows.refunded.0 += amount.0;
        Ok(amount)
    }

    async fn open_lease(&self, terms: LeaseTerms) -> Result<()> {
        terms.price_per_gpu_hour.non_zero("price_per_gpu_hour")?;
        if terms.gpus == 0 {
            return Err(Error::invalid("gpus", "a lease needs at least one GPU"));
        }
        let mut l = self.ledger();
        if l.leases.contains_key(&terms.lease) || l.settled.contains_key(&terms.lease) {
            return Err(Error::invalid(
                "lease",
                format!("{} already exists", terms.lease),
            ));
        }
        // Validate the price arithmetic up front so settlement cannot overflow later.
        accrued_cost(
            terms.price_per_gpu_hour,
            terms.gpus,
            crate::request::MAX_DURATION_SECS,
        )?;
        let lock = l
            .orders
            .get_mut(&terms.order)
            .ok_or(Error::UnknownOrder(terms.order))?;
        if let Some(t) = &lock.lease {
            return Err(Error::invalid(
                "order",
                format!("{} already has {}", terms.order, t.lease),
            ));
        }
        let (lease, order) = (terms.lease, terms.order);
        lock.lease = Some(terms);
        l.leases.insert(lease, order);
        Ok(())
    }

    async fn accrued(&self, lease: LeaseId, at: Timestamp) -> Result<Amount> {
        let l = self.ledger();
        if l.settled.contains_key(&lease) {
            return Err(Error::LeaseClosed(lease));
        }
        let order = l.leases.get(&lease).ok_or(Error::UnknownLease(lease))?;
        let lock = &l.orders[order];
        let terms = lock.lease.as_ref().ok_or(Error::UnknownLease(lease))?;
        Ok(Ledger::cost(terms, lock.amount, at)?.1)
    }

    async fn settle(&self, lease: LeaseId, at: Timestamp) -> Result<Settlement> {
        let mut l = self.ledger();
        if l.settled.contains_key(&lease) {
            return Err(Error::LeaseClosed(lease));
        }
        let order = *l.leases.get(&lease).ok_or(Error::UnknownLease(lease))?;
        let lock = l.orders.get(&order).ok_or(Error::UnknownOrder(order))?;
        let terms = lock.lease.clone().ok_or(Error::UnknownLease(lease))?;
        let (seconds, paid) = Ledger::cost(&terms, lock.amount, at)?;
        let (tenant, locked) = (lock.tenant, lock.amount);
        let refunded = Amount(locked.0 - paid.0);
        // The provider (who may also be the tenant) can be credited without overflow.
        l.available(terms.provider).checked_add(paid)?;
        // All checks passed: apply. Credits are added to the balances as they stand after the
        // tenant's update, so a provider renting from itself loses nothing.
        l.orders.remove(&order);
        l.leases.remove(&lease);
        let t = l.account(tenant);
        t.locked.0 -= locked.0;
        t.available.0 += refunded.0;
        l.account(terms.provider).available.0 += paid.0;
        l.flows.paid.0 += paid.0;
        l.flows.refunded.0 += refunded.0;
        let s = Settlement {
            lease,
            seconds,
            paid,
            refunded,
            funds_exhausted: paid == locked,
        };
        l.settled.insert(lease, s);
        Ok(s)
    }

    async fn stake(&self, provider: ProviderId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        let mut l = self.ledger();
        let rest = l.available(provider).checked_sub(amount)?;
        let a = l.account(provider);
        a.available = rest;
        a.staked.0 += amount.0;
        Ok(())
    }

    async fn slash(
        &self,
        provider: ProviderId,
        amount: Amount,
        beneficiary: AccountId,
    ) -> Result<Amount> {
        amount.non_zero("amount")?;
        let mut l = self.ledger();
        let staked = l
            .accounts
            .get(&provider)
            .map(|b| b.staked)
            .unwrap_or_default();
        let slashed = amount.min(staked);
        let credited = l.available(beneficiary).checked_add(slashed)?;
        l.account(provider).staked.0 -= slashed.0;
        l.account(beneficiary).available = credited;
        l.flows.slashed.0 += slashed.0;
        Ok(slashed)
    }

    async fn balance(&self, account: AccountId) -> Result<Balance> {
        Ok(self
            .ledger()
            .accounts
            .get(&account)
            .copied()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acct(n: u8) -> AccountId {
        AccountId([n; 20])
    }

    fn terms(lease: u64, order: u64, price: u128, gpus: u32) -> LeaseTerms {
        LeaseTerms {
            lease: LeaseId(lease),
            order: OrderId(order),
            provider: acct(9),
            price_per_gpu_hour: Amount(price),
            gpus,
            start: Timestamp(0),
        }
    }

    #[tokio::test]
    async fn lease_settles_pro_rata_with_exact_refund() {
        let e = MemoryEscrow::new(Token::usd());
        e.deposit(acct(1), Amount(10_000_000)).await.unwrap();
        e.lock(OrderId(1), acct(1), Amount(7_200_000))
            .await
            .unwrap();
        e.open_lease(terms(1, 1, 3_600_000, 1)).await.unwrap();
        // 30 minutes and 999 ms: billed 1800 whole seconds.
        assert_eq!(
            e.accrued(LeaseId(1), Timestamp(1_800_999)).await.unwrap(),
            Amount(1_800_000)
        );
        let s = e.settle(LeaseId(1), Timestamp(1_800_999)).await.unwrap();
        assert_eq!(
            (s.seconds, s.paid, s.refunded),
            (1800, Amount(1_800_000), Amount(5_400_000))
        );
        assert_eq!(
            e.balance(acct(9)).await.unwrap().available,
            Amount(1_800_000)
        );
        assert_eq!(
            e.balance(acct(1)).await.unwrap().available,
            Amount(8_200_000)
        );
        assert!(matches!(
            e.settle(LeaseId(1), Timestamp(0)).await,
            Err(Error::LeaseClosed(_))
        ));
        assert!(e.totals().is_balanced());
    }

    #[tokio::test]
    async fn a_provider_renting_from_itself_keeps_its_refund() {
        let e = MemoryEscrow::new(Token::usd());
        e.deposit(acct(9), Amount(10_000)).await.unwrap();
        e.lock(OrderId(1), acct(9), Amount(7_200)).await.unwrap();
        e.open_lease(terms(1, 1, 3_600, 1)).await.unwrap();
        let s = e.settle(LeaseId(1), Timestamp(1_000_000)).await.unwrap();
        assert_eq!((s.paid, s.refunded), (Amount(1_000), Amount(6_200)));
        assert_eq!(e.balance(acct(9)).await.unwrap().available, Amount(10_000));
        assert!(e.totals().is_balanced());
    }

    #[tokio::test]
    async fn payment_is_capped_by_the_lock() {
        let e = MemoryEscrow::new(Token::usd());
        e.deposit(acct(1), Amount(1000)).await.unwrap();
        e.lock(OrderId(1), acct(1), Amount(1000)).await.unwrap();
        e.open_lease(terms(1, 1, 3600, 1)).await.unwrap();
        let s = e.settle(LeaseId(1), Timestamp(10_000_000)).await.unwrap();
        assert_eq!(
            (s.paid, s.refunded, s.funds_exhausted),
            (Amount(1000), Amount(0), true)
        );
    }

    #[tokio::test]
    async fn bad_operations_are_typed_and_change_nothing() {
        let e = MemoryEscrow::new(Token::usd());
        assert!(matches!(
            e.deposit(acct(1), Amount(0)).await,
            Err(Error::ZeroAmount { .. })
        ));
        e.deposit(acct(1), Amount(u128::MAX)).await.unwrap();
        assert!(matches!(
            e.deposit(acct(1), Amount(1)).await,
            Err(Error::Overflow { .. })
        ));
        let before = e.totals();
        assert!(matches!(
            e.withdraw(acct(2), Amount(5)).await,
            Err(Error::InsufficientFunds { .. })
        ));
        assert!(matches!(
            e.release(OrderId(4)).await,
            Err(Error::UnknownOrder(_))
        ));
        assert!(matches!(
            e.settle(LeaseId(4), Timestamp(0)).await,
            Err(Error::UnknownLease(_))
        ));
        e.lock(OrderId(1), acct(1), Amount(10)).await.unwrap();
        assert!(matches!(
            e.lock(OrderId(1), acct(1), Amount(10)).await,
            Err(Error::AlreadyLocked(_))
        ));
        assert!(matches!(
            e.open_lease(terms(1, 1, u128::MAX, 2)).await,
            Err(Error::Overflow { .. })
        ));
        e.release(OrderId(1)).await.unwrap();
        assert_eq!(e.totals().available, before.available);
        assert!(e.totals().is_balanced());
    }

    #[tokio::test]
    async fn slash_never_exceeds_stake() {
        let e = MemoryEscrow::new(Token::sphn());
        e.deposit(acct(9), Amount(100)).await.unwrap();
        e.stake(acct(9), Amount(60)).await.unwrap();
        assert_eq!(
            e.slash(acct(9), Amount(1000), acct(5)).await.unwrap(),
            Amount(60)
        );
        assert_eq!(e.balance(acct(9)).await.unwrap().staked, Amount(0));
        assert_eq!(e.balance(acct(5)).await.unwrap().available, Amount(60));
        assert!(e.totals().is_balanced());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deposit(u8, u64),
        Withdraw(u8, u64),
        Transfer(u8, u8, u64),
        Lock(u64, u8, u64),
        Release(u64),
        Open(u64, u64),
        Settle(u64, u64),
        Stake(u8, u64),
        Slash(u8, u64, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let a = 0u8..4;
        let amt = 0u64..5_000_000;
        prop_oneof![
            (a.clone(), amt.clone()).prop_map(|(a, x)| Op::Deposit(a, x)),
            (a.clone(), amt.clone()).prop_map(|(a, x)| Op::Withdraw(a, x)),
            (a.clone(), a.clone(), amt.clone()).prop_map(|(a, b, x)| Op::Transfer(a, b, x)),
            (0u64..6, a.clone(), amt.clone()).prop_map(|(o, a, x)| Op::Lock(o, a, x)),
            (0u64..6).prop_map(Op::Release),
            (0u64..6, 1u64..10_000_000).prop_map(|(o, p)| Op::Open(o, p)),
            (0u64..6, 0u64..20_000_000).prop_map(|(o, t)| Op::Settle(o, t)),
            (a.clone(), amt.clone()).prop_map(|(a, x)| Op::Stake(a, x)),
            (a.clone(), amt, a).prop_map(|(p, x, b)| Op::Slash(p, x, b)),
        ]
    }

    proptest! {
        #[test]
        fn random_operations_conserve_funds(ops in proptest::collection::vec(op(), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let e = MemoryEscrow::new(Token::usd());
                for op in ops {
                    // Errors are expected for many random operations; what matters is the law.
                    let _ = match op {
                        Op::Deposit(a, x) => e.deposit(acct(a), Amount(x.into())).await.map(|_| ()),
                        Op::Withdraw(a, x) => e.withdraw(acct(a), Amount(x.into())).await.map(|_| ()),
                        Op::Transfer(a, b, x) => e.transfer(acct(a), acct(b), Amount(x.into())).await,
                        Op::Lock(o, a, x) => e.lock(OrderId(o), acct(a), Amount(x.into())).await,
                        Op::Release(o) => e.release(OrderId(o)).await.map(|_| ()),
                        Op::Open(o, p) => e.open_lease(LeaseTerms { provider: acct(3), ..terms(o, o, p.into(), 1) }).await,
                        Op::Settle(o, t) => e.settle(LeaseId(o), Timestamp(t)).await.map(|_| ()),
                        Op::Stake(a, x) => e.stake(acct(a), Amount(x.into())).await,
                        Op::Slash(p, x, b) => e.slash(acct(p), Amount(x.into()), acct(b)).await.map(|_| ()),
                    };
                    let t = e.totals();
                    prop_assert!(t.is_balanced(), "unbalanced after step: {t:?}");
                    // Locked stock is exactly what open orders hold.
                    let held: u128 = e.ledger().orders.values().map(|o| o.amount.0).sum();
                    prop_assert_eq!(t.locked.0, held);
                }
                Ok(())
            })?;
        }
    }
}
