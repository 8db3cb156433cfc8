//! [`StakeVault`]: provider stake, apart from payment.
//!
//! Payment waits in an [`Escrow`] of whatever token the tenant pays in; stake
//! is what the rent flow and the epoch processor slash on a violation, and it lives here, so
//! slashing works whatever token pays. On the in-memory ledger the vault is a
//! [`MemoryEscrow`] (the same one as payment, or one of its own); on chain it is the market's
//! SPHN stake, slashed only on a verdict signed by registered verifiers
//! (`spheron_chain::EvmStakeVault`).

use crate::error::Result;
use crate::escrow::{Escrow, MemoryEscrow};
use crate::ids::{AccountId, ProviderId};
use crate::money::{Amount, Token};
use async_trait::async_trait;

/// Where provider stake is held and slashed.
#[async_trait]
pub trait StakeVault: Send + Sync {
    /// The token stake is held in.
    fn token(&self) -> Token;
    /// Moves `amount` of the provider's available funds in [`StakeVault::token`] into stake.
    async fn stake(&self, provider: ProviderId, amount: Amount) -> Result<()>;
    /// The provider's stake (staked and unbonding).
    async fn staked(&self, provider: ProviderId) -> Result<Amount>;
    /// Slashes up to `amount` (never more than the stake) for a violation the caller
    /// observed; `beneficiary` is paid what the vault's rules give a reporter (all of it in
    /// memory, a capped share on chain). Returns what was slashed.
    async fn slash(
        &self,
        provider: ProviderId,
        amount: Amount,
        beneficiary: AccountId,
    ) -> Result<Amount>;
}

#[async_trait]
impl StakeVault for MemoryEscrow {
    fn token(&self) -> Token {
        Escrow::token(self)
    }

    async fn stake(&self, provider: ProviderId, amount: Amount) -> Result<()> {
        Escrow::stake(self, provider, amount).await
    }

    async fn staked(&self, provider: ProviderId) -> Result<Amount> {
        Ok(Escrow::balance(self, provider).await?.staked)
    }

    async fn slash(
        &self,
        provider: ProviderId,
        amount: Amount,
        beneficiary: AccountId,
    ) -> Result<Amount> {
        Escrow::slash(self, provider, amount, beneficiary).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_separate_vault_slashes_whatever_token_pays() {
        let payment = MemoryEscrow::new(Token::usd());
        let vault = MemoryEscrow::new(Token::sphn());
        let p = AccountId([1; 20]);
        let verifier = AccountId([2; 20]);
        payment.deposit(p, Amount(5)).await.unwrap();
        vault.deposit(p, Amount(100)).await.unwrap();
        StakeVault::stake(&vault, p, Amount(100)).await.unwrap();
        let v: &dyn StakeVault = &vault;
        assert_eq!(v.slash(p, Amount(30), verifier).await.unwrap(), Amount(30));
        assert_eq!(v.staked(p).await.unwrap(), Amount(70));
        assert_eq!(v.token(), Token::sphn());
        // Payment is untouched.
        assert_eq!(payment.balance(p).await.unwrap().available, Amount(5));
        assert_eq!(payment.balance(p).await.unwrap().staked, Amount(0));
    }
}
