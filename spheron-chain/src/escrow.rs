//! [`EvmEscrow`]: the `Escrow` trait on the `SpheronMarket` contract.

use crate::bindings::{SpheronMarket, TestToken};
use crate::client::Chain;
use crate::error::Error as ChainError;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, ext::AnvilApi};
use alloy::rpc::types::TransactionReceipt;
use alloy::sol_types::SolEvent;
use async_trait::async_trait;
use spheron_core::{
    AccountId, Amount, Balance, Error, Escrow, LeaseId, LeaseTerms, OrderId, ProviderId, Result,
    Settlement, Timestamp, Token,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// How the escrow's [`Timestamp`]s relate to block time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainTime {
    /// Production: timestamps are Unix milliseconds and leases open and settle at the time of
    /// the block that includes them; the `at` of `settle` and `start` of `open_lease` are
    /// not used (the chain's clock decides).
    Block,
    /// Development nodes only: `Timestamp(t)` is block time `origin + t / 1000`; before a lease
    /// opens or settles, the node's clock is set to that instant (anvil's
    /// `evm_setNextBlockTimestamp`), so billing follows the caller's clock exactly.
    Warp {
        /// Block time of `Timestamp(0)`.
        origin: u64,
    },
}

/// A lease's state as the contract stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    None,
    Open,
    Matched,
    Leased,
    Closed,
    Cancelled,
}

impl State {
    fn from_u8(s: u8) -> State {
        match s {
            1 => State::Open,
            2 => State::Matched,
            3 => State::Leased,
            4 => State::Closed,
            5 => State::Cancelled,
            _ => State::None,
        }
    }
}

/// The `Escrow` trait on a deployed `SpheronMarket`, for one payment token: direct deals
/// (`lockFunds`, then `openLease` by the tenant), which need no operator quorum.
///
/// Differences from the in-memory ledger, all forced by the chain:
/// - every call is a transaction from the account it concerns, so the chain client must hold
///   that account's key;
/// - order ids are assigned by the contract: this escrow maps the caller's [`OrderId`]s to
///   them (in memory, per instance), and a lease is identified by its order
///   (`LeaseTerms::lease` must equal the order's number); a second `lock` of a used id is
///   [`Error::AlreadyLocked`];
/// - a direct lease ends after the contract's longest duration (90 days) at the latest;
/// - staking is only in SPHN; the stable token's protocol fee (recorded when the order is
///   created) is withheld from the provider's pay (`Settlement::paid` is what it received);
/// - `slash` is refused: on chain, stake is slashed only on evidence, a verdict signed by
///   registered verifiers ([`crate::quorum::slash_with_verdict`]);
/// - `deposit` pulls ERC-20 tokens from the account's wallet (approving the market once).
pub struct EvmEscrow {
    chain: Arc<Chain>,
    market: Address,
    token_addr: Address,
    sphn: Address,
    token: Token,
    time: ChainTime,
    approved: Mutex<BTreeSet<Address>>,
    /// The caller's order ids → the contract's.
    ids: Mutex<BTreeMap<u64, u64>>,
}

impl std::fmt::Debug for EvmEscrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmEscrow")
            .field("market", &self.market)
            .field("token", &self.token.symbol)
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

/// A spheron account as an EVM address (the same 20 bytes).
pub fn address(a: AccountId) -> Address {
    Address::from(a.0)
}

/// An EVM address as a spheron account.
pub fn account(a: Address) -> AccountId {
    AccountId(a.into_array())
}

fn chain_err(e: ChainError) -> Error {
    e.into()
}

/// Maps the market's custom errors onto the core error kinds; anything else stays a backend error.
pub(crate) fn core_error(e: ChainError) -> Error {
    let name = match &e {
        ChainError::Revert { name, .. } => name.clone(),
        _ => return chain_err(e),
    };
    let kind = name.split([' ', '(', '{']).next().unwrap_or_default();
    match kind {
        "ZeroAmount" => Error::ZeroAmount { field: "amount" },
        "AmountOverflow" => Error::Overflow {
            what: "escrow balance",
        },
        "InsufficientBalance" | "InsufficientStake" => {
            let (needed, available) = two_numbers(&name);
            Error::InsufficientFunds {
                needed: Amount(needed),
                available: Amount(available),
            }
        }
        "UnknownOrder" => Error::UnknownOrder(OrderId(first_number(&name) as u64)),
        "ProviderNotStaked" => Error::UnknownProvider(account(
            name.split("provider: ")
                .nth(1)
                .and_then(|t| t.get(..42))
                .and_then(|t| t.parse().ok())
                .unwrap_or_default(),
        )),
        "BidWindowClosed" => Error::BidWindowClosed(OrderId(first_number(&name) as u64)),
        "BidAboveCeiling" => {
            let (price, ceiling) = two_numbers(&name);
            Error::BidAboveCeiling {
                price: Amount(price),
                ceiling: Amount(ceiling),
            }
        }
        _ => chain_err(e),
    }
}

fn numbers(s: &str) -> Vec<u128> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .filter_map(|t| t.parse().ok())
        .collect()
}

fn first_number(s: &str) -> u128 {
    numbers(s).first().copied().unwrap_or_default()
}

fn two_numbers(s: &str) -> (u128, u128) {
    let n = numbers(s);
    (
        n.first().copied().unwrap_or_default(),
        n.get(1).copied().unwrap_or_default(),
    )
}

fn u128_of(v: U256, what: &'static str) -> Result<u128> {
    u128::try_from(v).map_err(|_| Error::Overflow { what })
}

/// The contract's longest lease, as in `spheron_core::request::MAX_DURATION_SECS`.
const MAX_DURATION_SECS: u64 = spheron_core::request::MAX_DURATION_SECS;

impl EvmEscrow {
    /// An escrow for payment token `token_addr` (described by `token`) on the market at
    /// `market`, on block time.
    pub async fn new(
        chain: Arc<Chain>,
        market: Address,
        token_addr: Address,
        token: Token,
    ) -> Result<Self> {
        let m = SpheronMarket::new(market, chain.provider().clone());
        let sphn = m
            .sphn()
            .call()
            .await
            .map_err(|e| chain_err(crate::client::decode(e)))?;
        Ok(EvmEscrow {
            chain,
            market,
            token_addr,
            sphn,
            token,
            time: ChainTime::Block,
            approved: Mutex::new(BTreeSet::new()),
            ids: Mutex::new(BTreeMap::new()),
        })
    }

    /// Development nodes only: freezes the node's clock (anvil's block timestamp interval 0)
    /// and maps `Timestamp(0)` to the latest block's time, so leases open and settle exactly
    /// at the timestamps given (see [`ChainTime::Warp`]).
    pub async fn with_dev_clock(mut self) -> Result<Self> {
        let p = self.chain.provider();
        p.anvil_set_block_timestamp_interval(0)
            .await
            .map_err(|e| chain_err(ChainError::Rpc(e.to_string())))?;
        let origin = self.chain.block_time().await.map_err(chain_err)?;
        self.time = ChainTime::Warp { origin };
        Ok(self)
    }

    /// How timestamps map to block time.
    pub fn time(&self) -> ChainTime {
        self.time
    }

    /// The market contract's address.
    pub fn market(&self) -> Address {
        self.market
    }

    /// The payment token's address.
    pub fn token_address(&self) -> Address {
        self.token_addr
    }

    fn m(&self) -> SpheronMarket::SpheronMarketInstance<DynProvider> {
        SpheronMarket::new(self.market, self.chain.provider().clone())
    }

    fn chain_secs(&self, t: Timestamp) -> u64 {
        match self.time {
            ChainTime::Block => t.0 / 1000,
            ChainTime::Warp { origin } => origin + t.0 / 1000,
        }
    }

    /// The contract's id of the caller's order `id`.
    fn chain_id_of(&self, id: u64) -> Option<u64> {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// The contract's view of the caller's order `id` (`None` when never locked here).
    async fn order(&self, id: u64) -> Result<Option<SpheronMarket::OrderView>> {
        let Some(chain_id) = self.chain_id_of(id) else {
            return Ok(None);
        };
        self.m()
            .getOrder(chain_id)
            .call()
            .await
            .map(Some)
            .map_err(|e| chain_err(crate::client::decode(e)))
    }

    async fn send<D: alloy::contract::CallDecoder + Unpin>(
        &self,
        from: AccountId,
        call: alloy::contract::CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt> {
        self.chain
            .send(address(from), call)
            .await
            .map_err(core_error)
    }

    /// Sends `call` at block time `at` (warping a dev node's clock first).
    async fn send_at<D: alloy::contract::CallDecoder + Unpin>(
        &self,
        from: Address,
        at: Timestamp,
        call: alloy::contract::CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt> {
        let guard = self.chain.lock().await;
        if let ChainTime::Warp { .. } = self.time {
            let target = self.chain_secs(at);
            let now = self.chain.block_time().await.map_err(chain_err)?;
            if target < now {
                return Err(Error::invalid(
                    "at",
                    format!("{at} is before the chain's clock (block time {now})"),
                ));
            }
            self.chain
                .provider()
                .anvil_set_next_block_timestamp(target)
                .await
                .map_err(|e| chain_err(ChainError::Rpc(e.to_string())))?;
        }
        self.chain
            .send_locked(&guard, from, call)
            .await
            .map_err(core_error)
    }

    async fn ensure_approved(&self, owner: AccountId, amount: Amount) -> Result<()> {
        let owner_addr = address(owner);
        let done = self
            .approved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&owner_addr);
        if done {
            return Ok(());
        }
        let t = TestToken::new(self.token_addr, self.chain.provider().clone());
        let allowance = t
            .allowance(owner_addr, self.market)
            .call()
            .await
            .map_err(|e| chain_err(crate::client::decode(e)))?;
        if allowance < U256::from(amount.0) {
            self.send(owner, t.approve(self.market, U256::MAX)).await?;
        }
        self.approved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner_addr);
        Ok(())
    }

    /// Checks lease `lease` is active on chain and returns its order.
    async fn active_lease(&self, lease: LeaseId) -> Result<SpheronMarket::OrderView> {
        let o = self
            .order(lease.0)
            .await?
            .ok_or(Error::UnknownLease(lease))?;
        match State::from_u8(o.state) {
            State::Leased => Ok(o),
            State::Closed => Err(Error::LeaseClosed(lease)),
            _ => Err(Error::UnknownLease(lease)),
        }
    }

    /// The market's view of `account`'s funds in this token.
    async fn account_of(&self, a: Address) -> Result<SpheronMarket::Account> {
        self.m()
            .accountOf(self.token_addr, a)
            .call()
            .await
            .map_err(|e| chain_err(crate::client::decode(e)))
    }
}

/// Why [`EvmEscrow`] refuses `slash`: the contract slashes only on evidence.
pub fn slash_refused() -> Error {
    Error::Backend {
        backend: "evm",
        message: "on chain, stake is slashed only on evidence: a verdict signed by registered \
                  verifiers (spheron_chain::quorum::slash_with_verdict)"
            .into(),
    }
}

fn find_event<E: SolEvent>(r: &TransactionReceipt) -> Option<E> {
    r.inner
        .logs()
        .iter()
        .find_map(|l| E::decode_log_data(l.data()).ok())
}

#[async_trait]
impl Escrow for EvmEscrow {
    fn token(&self) -> Token {
        self.token.clone()
    }

    async fn deposit(&self, account: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        self.ensure_approved(account, amount).await?;
        self.send(
            account,
            self.m().deposit(self.token_addr, U256::from(amount.0)),
        )
        .await?;
        Ok(())
    }

    async fn withdraw(&self, account: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        self.send(
            account,
            self.m().withdraw(self.token_addr, U256::from(amount.0)),
        )
        .await?;
        Ok(())
    }

    async fn transfer(&self, from: AccountId, to: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        self.send(
            from,
            self.m()
                .transferBalance(self.token_addr, address(to), U256::from(amount.0)),
        )
        .await?;
        Ok(())
    }

    async fn lock(&self, order: OrderId, tenant: AccountId, amount: Amount) -> Result<()> {
        amount.non_zero("amount")?;
        if self.chain_id_of(order.0).is_some() {
            return Err(Error::AlreadyLocked(order));
        }
        let r = self
            .send(tenant, self.m().lockFunds(self.token_addr, amount.0))
            .await?;
        let ev = find_event::<SpheronMarket::OrderCreated>(&r)
            .ok_or_else(|| Error::invalid("receipt", "no OrderCreated event"))?;
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(order.0, ev.id);
        Ok(())
    }

    async fn release(&self, order: OrderId) -> Result<Amount> {
        let o = self
            .order(order.0)
            .await?
            .ok_or(Error::UnknownOrder(order))?;
        match State::from_u8(o.state) {
            State::Open => {}
            State::Matched | State::Leased => {
                return Err(Error::invalid(
                    "order",
                    format!("{order} has a lease open; settle it instead"),
                ));
            }
            _ => return Err(Error::UnknownOrder(order)),
        }
        let chain_id = self
            .chain_id_of(order.0)
            .ok_or(Error::UnknownOrder(order))?;
        let r = self
            .send(account(o.tenant), self.m().cancelOrder(chain_id))
            .await?;
        let ev = find_event::<SpheronMarket::OrderCancelled>(&r)
            .ok_or_else(|| Error::invalid("receipt", "no OrderCancelled event"))?;
        Ok(Amount(ev.refunded))
    }

    async fn open_lease(&self, terms: LeaseTerms) -> Result<()> {
        terms.price_per_gpu_hour.non_zero("price_per_gpu_hour")?;
        if terms.gpus == 0 {
            return Err(Error::invalid("gpus", "a lease needs at least one GPU"));
        }
        if terms.lease.0 != terms.order.0 {
            return Err(Error::invalid(
                "lease",
                format!(
                    "on chain a lease is identified by its order: {} must be lease-{}",
                    terms.lease, terms.order.0
                ),
            ));
        }
        let o = self
            .order(terms.order.0)
            .await?
            .ok_or(Error::UnknownOrder(terms.order))?;
        let state = State::from_u8(o.state);
        if matches!(state, State::Matched | State::Leased | State::Closed) {
            return Err(Error::invalid(
                "lease",
                format!("{} already exists", terms.lease),
            ));
        }
        spheron_core::money::accrued_cost(terms.price_per_gpu_hour, terms.gpus, MAX_DURATION_SECS)?;
        if state != State::Open {
            return Err(Error::UnknownOrder(terms.order));
        }
        let chain_id = self
            .chain_id_of(terms.order.0)
            .ok_or(Error::UnknownOrder(terms.order))?;
        let m = self.m();
        let call = m.openLease(
            chain_id,
            address(terms.provider),
            terms.price_per_gpu_hour.0,
            terms.gpus,
        );
        self.send_at(o.tenant, terms.start, call).await?;
        Ok(())
    }

    async fn accrued(&self, lease: LeaseId, at: Timestamp) -> Result<Amount> {
        self.active_lease(lease).await?;
        let chain_id = self
            .chain_id_of(lease.0)
            .ok_or(Error::UnknownLease(lease))?;
        let r = self
            .m()
            .accruedAt(chain_id, U256::from(self.chain_secs(at)))
            .call()
            .await
            .map_err(|e| chain_err(crate::client::decode(e)))?;
        Ok(Amount(u128_of(r.cost, "accrued cost")?))
    }

    async fn settle(&self, lease: LeaseId, at: Timestamp) -> Result<Settlement> {
        let o = self.active_lease(lease).await?;
        let chain_id = self
            .chain_id_of(lease.0)
            .ok_or(Error::UnknownLease(lease))?;
        let r = self
            .send_at(o.tenant, at, self.m().closeLease(chain_id))
            .await?;
        let ev = find_event::<SpheronMarket::LeaseClosed>(&r)
            .ok_or_else(|| Error::invalid("receipt", "no LeaseClosed event"))?;
        Ok(Settlement {
            lease,
            seconds: u64::try_from(ev.secondsBilled).map_err(|_| Error::Overflow {
                what: "seconds billed",
            })?,
            paid: Amount(u128_of(ev.paid, "paid")?),
            refunded: Amount(u128_of(ev.refunded, "refunded")?),
            funds_exhausted: ev.fundsExhausted,
        })
    }

    async fn stake(&self, provider: ProviderId, amount: Amount) -> Result<()> {
        if self.token_addr != self.sphn {
            return Err(Error::invalid(
                "token",
                format!("stake is held in SPHN, not {}", self.token.symbol),
            ));
        }
        amount.non_zero("amount")?;
        self.send(provider, self.m().stake(amount.0)).await?;
        Ok(())
    }

    async fn slash(
        &self,
        _provider: ProviderId,
        amount: Amount,
        _beneficiary: AccountId,
    ) -> Result<Amount> {
        amount.non_zero("amount")?;
        Err(slash_refused())
    }

    async fn balance(&self, acct: AccountId) -> Result<Balance> {
        let a = self.account_of(address(acct)).await?;
        let staked = if self.token_addr == self.sphn {
            let s = self
                .m()
                .stakeOf(address(acct))
                .call()
                .await
                .map_err(|e| chain_err(crate::client::decode(e)))?;
            s.staked
                .checked_add(s.unbonding)
                .ok_or(Error::Overflow { what: "stake" })?
        } else {
            0
        };
        Ok(Balance {
            available: Amount(a.available),
            locked: Amount(a.locked),
            staked: Amount(staked),
        })
    }
}

/// What the market holds in one token and what it owes, for the balance invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Solvency {
    /// `token.balanceOf(market)`.
    pub held: U256,
    /// Sum of available + locked over the accounts given, + fees, + stakes (SPHN).
    pub owed: U256,
}

/// Computes [`Solvency`] of `market` in `token` over `accounts` (which must include every
/// account that ever held funds there).
pub async fn solvency(
    chain: &Chain,
    market: Address,
    token: Address,
    accounts: &[Address],
) -> crate::error::Result<Solvency> {
    let m = SpheronMarket::new(market, chain.provider().clone());
    let t = TestToken::new(token, chain.provider());
    let d = crate::client::decode;
    let held = t.balanceOf(market).call().await.map_err(d)?;
    let mut owed = m.fees(token).call().await.map_err(d)?;
    let sphn = m.sphn().call().await.map_err(d)?;
    for a in accounts {
        let acc = m.accountOf(token, *a).call().await.map_err(d)?;
        owed += U256::from(acc.available) + U256::from(acc.locked);
        if token == sphn {
            let s = m.stakeOf(*a).call().await.map_err(d)?;
            owed += U256::from(s.staked) + U256::from(s.unbonding);
        }
    }
    Ok(Solvency { held, owed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revert(name: &str) -> ChainError {
        ChainError::Revert {
            contract: "SpheronMarket",
            name: name.to_string(),
        }
    }

    #[test]
    fn contract_errors_map_to_core_kinds_with_their_values() {
        assert!(matches!(
            core_error(revert(
                "InsufficientBalance { needed: 600, available: 400 }"
            )),
            Error::InsufficientFunds {
                needed: Amount(600),
                available: Amount(400)
            }
        ));
        assert!(matches!(
            core_error(revert("BidAboveCeiling { price: 5, ceiling: 4 }")),
            Error::BidAboveCeiling {
                price: Amount(5),
                ceiling: Amount(4)
            }
        ));
        assert!(matches!(
            core_error(revert("AmountOverflow")),
            Error::Overflow { .. }
        ));
        // Anything else stays a backend error that names the revert.
        match core_error(revert("NotTenant { id: 1, caller: 0x00 }")) {
            Error::Backend { backend, message } => {
                assert_eq!(backend, "evm");
                assert!(message.contains("NotTenant"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn accounts_and_addresses_are_the_same_bytes() {
        let a = AccountId([7; 20]);
        assert_eq!(account(address(a)), a);
    }
}
