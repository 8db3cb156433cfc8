//! The escrow conformance suite (spheron_core::conformance) against the contract on anvil.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use async_trait::async_trait;
use spheron_chain::MarketConfig;
use spheron_core::conformance;
use spheron_core::{
    AccountId, Amount, Balance, Escrow, LeaseId, LeaseTerms, MemoryEscrow, OrderId, ProviderId,
    Result, Settlement, Timestamp, Token,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_escrow_passes_the_suite() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let a = common::accounts(&tc);
    // Not stakeable: on chain a slash needs evidence, so the slash test does not apply.
    conformance::run_all(|| common::fresh_sphn_escrow(&tc), &a, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_escrow_refuses_balance_overflow() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let a = common::accounts(&tc);
    let e = common::fresh_sphn_escrow(&tc).await;
    conformance::balance_overflow_is_refused(&*e, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_escrow_refuses_slash_without_evidence() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let a = common::accounts(&tc);
    let e = common::fresh_sphn_escrow(&tc).await;
    e.deposit(a.provider, Amount(1_000)).await.unwrap();
    e.stake(a.provider, Amount(1_000)).await.unwrap();
    let err = e
        .slash(a.provider, Amount(500), a.beneficiary)
        .await
        .unwrap_err();
    assert_eq!(
        conformance::kind(&err),
        conformance::kind(&spheron_chain::escrow::slash_refused())
    );
    assert_eq!(e.balance(a.provider).await.unwrap().staked, Amount(1_000));
}

/// The memory escrow, refusing `slash` as the contract does (it slashes only on evidence), so
/// both produce the same transcripts.
struct NoSlash(MemoryEscrow);

#[async_trait]
impl Escrow for NoSlash {
    fn token(&self) -> Token {
        self.0.token()
    }
    async fn deposit(&self, account: AccountId, amount: Amount) -> Result<()> {
        self.0.deposit(account, amount).await
    }
    async fn withdraw(&self, account: AccountId, amount: Amount) -> Result<()> {
        self.0.withdraw(account, amount).await
    }
    async fn transfer(&self, from: AccountId, to: AccountId, amount: Amount) -> Result<()> {
        self.0.transfer(from, to, amount).await
    }
    async fn lock(&self, order: OrderId, tenant: AccountId, amount: Amount) -> Result<()> {
        self.0.lock(order, tenant, amount).await
    }
    async fn release(&self, order: OrderId) -> Result<Amount> {
        self.0.release(order).await
    }
    async fn open_lease(&self, terms: LeaseTerms) -> Result<()> {
        self.0.open_lease(terms).await
    }
    async fn accrued(&self, lease: LeaseId, at: Timestamp) -> Result<Amount> {
        self.0.accrued(lease, at).await
    }
    async fn settle(&self, lease: LeaseId, at: Timestamp) -> Result<Settlement> {
        self.0.settle(lease, at).await
    }
    async fn stake(&self, provider: ProviderId, amount: Amount) -> Result<()> {
        self.0.stake(provider, amount).await
    }
    async fn slash(
        &self,
        _provider: ProviderId,
        amount: Amount,
        _beneficiary: AccountId,
    ) -> Result<Amount> {
        amount.non_zero("amount")?;
        Err(spheron_chain::escrow::slash_refused())
    }
    async fn balance(&self, account: AccountId) -> Result<Balance> {
        self.0.balance(account).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_and_memory_escrows_agree_to_the_last_base_unit() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let a = common::accounts(&tc);
    for seed in [1u64, 2] {
        let evm = common::fresh_sphn_escrow(&tc).await;
        let mem = NoSlash(MemoryEscrow::new(Token::sphn()));
        let t_evm = conformance::transcript(&*evm, &a, seed, 120).await;
        let t_mem = conformance::transcript(&mem as &dyn Escrow, &a, seed, 120).await;
        for (x, y) in t_evm.iter().zip(&t_mem) {
            assert_eq!(x, y, "seed {seed}: EVM and memory escrows diverge");
        }
        assert_eq!(t_evm.len(), t_mem.len());
        assert!(mem.0.totals().is_balanced());
    }
}
