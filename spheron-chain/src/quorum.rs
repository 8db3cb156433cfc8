//! The operator quorum and the verifiers' evidence, on the `SpheronOperators` contract.
//!
//! Operators and verifiers stake SPHN there ([`register_party`]); their weights are
//! checkpointed on block time. An order's match is accepted by the market only with EIP-712
//! signatures over a [`MatchResult`] from operators holding at least 2/3 of the operator stake at
//! the order's bid deadline ([`sign_match`], [`submit_match`]). Two signatures by one operator
//! over different results for one order are a proof anyone may submit
//! ([`report_equivocation`]). A provider is slashed only on a [`VerdictClaim`] signed by at
//! least two registered verifiers ([`sign_verdict`], [`slash_with_verdict`]).
//!
//! ```no_run
//! # async fn demo(chain: &spheron_chain::Chain, a: spheron_chain::Addresses,
//! #               key: alloy::signers::local::PrivateKeySigner) -> spheron_chain::Result<()> {
//! use spheron_chain::quorum::{self, MatchResult};
//! let m = MatchResult {
//!     order_id: 1,
//!     bids_digest: Default::default(),
//!     winner: alloy::primitives::Address::ZERO,
//!     price: 1_000,
//!     seed: 7,
//!     matcher_version: 1,
//! };
//! let domain = quorum::domain(31337, a.operators);
//! let signature = quorum::sign_match(&key, &domain, &m).await?;
//! quorum::submit_match(chain, a.market, key.address(), &m, &[(key.address(), signature)]).await?;
//! # Ok(()) }
//! ```

use crate::bindings::{SpheronMarket, SpheronOperators, TestToken};
use crate::client::{Chain, decode};
use crate::error::{Error, Result};
use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::providers::DynProvider;
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::Signer;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use serde::{Deserialize, Serialize};

sol! {
    /// What every operator signs for an order (the contract's `Match`).
    #[derive(Debug, PartialEq, Eq)]
    struct Match {
        uint64 orderId;
        bytes32 bidsDigest;
        address winner;
        uint128 price;
        uint64 seed;
        uint32 matcherVersion;
    }

    /// What verifiers sign to have a provider slashed (the contract's `Verdict`, bound to the
    /// market).
    #[derive(Debug, PartialEq, Eq)]
    struct Verdict {
        address market;
        address provider;
        bytes32 session;
        bytes32 model;
        uint128 amount;
        uint64 issuedAt;
    }
}

/// What a party of `SpheronOperators` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Runs the matcher and signs matches.
    Operator,
    /// Runs proof-of-GPU challenges and signs verdicts.
    Verifier,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Operator => 1,
            Kind::Verifier => 2,
        }
    }
}

/// A match result as operators sign it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MatchResult {
    /// The order.
    pub order_id: u64,
    /// The order's bids digest at its deadline (from `getOrder`).
    pub bids_digest: B256,
    /// The winning provider.
    pub winner: Address,
    /// The winner's bid per GPU-hour.
    pub price: u128,
    /// The round seed (the market's `seedOf(order, digest)`).
    pub seed: u64,
    /// Version of the matching rules.
    pub matcher_version: u32,
}

impl MatchResult {
    fn typed(&self) -> Match {
        Match {
            orderId: self.order_id,
            bidsDigest: self.bids_digest,
            winner: self.winner,
            price: self.price,
            seed: self.seed,
            matcherVersion: self.matcher_version,
        }
    }

    fn abi(&self) -> SpheronOperators::Match {
        SpheronOperators::Match {
            orderId: self.order_id,
            bidsDigest: self.bids_digest,
            winner: self.winner,
            price: self.price,
            seed: self.seed,
            matcherVersion: self.matcher_version,
        }
    }
}

/// A verdict that `provider` failed proof-of-GPU session `session` claiming `model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictClaim {
    /// The market the verdict is for.
    pub market: Address,
    /// The provider that failed.
    pub provider: Address,
    /// The challenge session.
    pub session: B256,
    /// The GPU model claimed (catalog name as bytes32).
    pub model: B256,
    /// SPHN base units to slash (the market caps it).
    pub amount: u128,
    /// Block time (seconds) the verdict was issued at.
    pub issued_at: u64,
}

impl VerdictClaim {
    fn typed(&self) -> Verdict {
        Verdict {
            market: self.market,
            provider: self.provider,
            session: self.session,
            model: self.model,
            amount: self.amount,
            issuedAt: self.issued_at,
        }
    }
}

/// A registered operator or verifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Its account.
    pub address: Address,
    /// Where it serves (operators: its signature exchange URL).
    pub endpoint: String,
    /// SPHN staked now.
    pub staked: u128,
    /// SPHN unbonding.
    pub unbonding: u128,
}

/// The EIP-712 domain of matches and verdicts: the `SpheronOperators` contract at
/// `operators` on chain `chain_id`.
pub fn domain(chain_id: u64, operators: Address) -> Eip712Domain {
    eip712_domain! {
        name: "SpheronOperators",
        version: "1",
        chain_id: chain_id,
        verifying_contract: operators,
    }
}

/// The digest operators sign for `m`.
pub fn match_digest(domain: &Eip712Domain, m: &MatchResult) -> B256 {
    m.typed().eip712_signing_hash(domain)
}

/// The digest verifiers sign for `v`.
pub fn verdict_digest(domain: &Eip712Domain, v: &VerdictClaim) -> B256 {
    v.typed().eip712_signing_hash(domain)
}

async fn sign_digest<S: Signer + Sync>(signer: &S, digest: B256) -> Result<Vec<u8>> {
    let sig = signer
        .sign_hash(&digest)
        .await
        .map_err(|e| Error::Signature(e.to_string()))?;
    Ok(sig.as_bytes().to_vec())
}

/// Signs `m` with an operator's key: a 65-byte signature.
pub async fn sign_match<S: Signer + Sync>(
    signer: &S,
    domain: &Eip712Domain,
    m: &MatchResult,
) -> Result<Vec<u8>> {
    sign_digest(signer, match_digest(domain, m)).await
}

/// Signs `v` with a verifier's key: a 65-byte signature.
pub async fn sign_verdict<S: Signer + Sync>(
    signer: &S,
    domain: &Eip712Domain,
    v: &VerdictClaim,
) -> Result<Vec<u8>> {
    sign_digest(signer, verdict_digest(domain, v)).await
}

/// Who signed `m` with `signature`, or an error for a signature that does not parse.
pub fn match_signer(domain: &Eip712Domain, m: &MatchResult, signature: &[u8]) -> Result<Address> {
    let sig = Signature::try_from(signature).map_err(|e| Error::Signature(e.to_string()))?;
    sig.recover_address_from_prehash(&match_digest(domain, m))
        .map_err(|e| Error::Signature(e.to_string()))
}

fn operators(
    chain: &Chain,
    at: Address,
) -> SpheronOperators::SpheronOperatorsInstance<DynProvider> {
    SpheronOperators::new(at, chain.provider().clone())
}

/// Sorts `(signer, signature)` pairs by signer and drops repeated signers, as the contract
/// requires (strictly ascending).
pub fn sorted(signatures: &[(Address, Vec<u8>)]) -> (Vec<Address>, Vec<Bytes>) {
    let mut v: Vec<(Address, Vec<u8>)> = signatures.to_vec();
    v.sort_by_key(|(a, _)| *a);
    v.dedup_by_key(|(a, _)| *a);
    v.into_iter().map(|(a, s)| (a, Bytes::from(s))).unzip()
}

/// Registers `from` as a party of `kind` (or tops up its stake and updates its endpoint),
/// approving and pulling `amount` SPHN (`sphn`) from its wallet.
pub async fn register_party(
    chain: &Chain,
    operators_at: Address,
    sphn: Address,
    from: Address,
    kind: Kind,
    endpoint: &str,
    amount: u128,
) -> Result<()> {
    if amount > 0 {
        let t = TestToken::new(sphn, chain.provider().clone());
        chain
            .send(from, t.approve(operators_at, U256::from(amount)))
            .await?;
    }
    let o = operators(chain, operators_at);
    chain
        .send(from, o.register(kind.code(), endpoint.to_string(), amount))
        .await?;
    Ok(())
}

/// Every party of `kind` that ever registered, with its endpoint and stake now.
pub async fn parties(chain: &Chain, operators_at: Address, kind: Kind) -> Result<Vec<Party>> {
    let o = operators(chain, operators_at);
    let list = o.partiesOf(kind.code()).call().await.map_err(decode)?;
    let mut out = Vec::with_capacity(list.len());
    for a in list {
        let p = o.partyOf(a).call().await.map_err(decode)?;
        out.push(Party {
            address: a,
            endpoint: p.endpoint,
            staked: p.staked,
            unbonding: p.unbonding,
        });
    }
    Ok(out)
}

/// Each party's weight and the total weight of `kind` at block time `at` (seconds).
pub async fn weights_at(
    chain: &Chain,
    operators_at: Address,
    kind: Kind,
    at: u64,
) -> Result<(Vec<(Address, u128)>, u128)> {
    let o = operators(chain, operators_at);
    let at48 = alloy::primitives::Uint::<48, 1>::try_from(at).map_err(|_| Error::Invalid {
        field: "at",
        reason: format!("{at} does not fit 48 bits"),
    })?;
    let list = o.partiesOf(kind.code()).call().await.map_err(decode)?;
    let mut out = Vec::with_capacity(list.len());
    for a in list {
        let w = o.weightAt(a, at48).call().await.map_err(decode)?;
        let w = u128::try_from(w).map_err(|_| Error::Rpc(format!("weight {w} of {a}")))?;
        if w > 0 {
            out.push((a, w));
        }
    }
    let total = o
        .totalWeightAt(kind.code(), at48)
        .call()
        .await
        .map_err(decode)?;
    let total = u128::try_from(total).map_err(|_| Error::Rpc(format!("total weight {total}")))?;
    Ok((out, total))
}

/// Whether `signed` of `total` is at least 2/3, as the contract requires.
pub fn is_quorum(signed: u128, total: u128) -> bool {
    total > 0 && signed.saturating_mul(3) >= total.saturating_mul(2)
}

/// Submits `m` to the market with the given operators' signatures (sorted here), from
/// `from` (any account). Reverts come back named, e.g. `QuorumNotReached`, `MatchTooEarly`.
pub async fn submit_match(
    chain: &Chain,
    market: Address,
    from: Address,
    m: &MatchResult,
    signatures: &[(Address, Vec<u8>)],
) -> Result<TransactionReceipt> {
    let (signers, sigs) = sorted(signatures);
    let mk = SpheronMarket::new(market, chain.provider().clone());
    chain
        .send(
            from,
            mk.submitMatch(m.order_id, m.winner, m.matcher_version, signers, sigs),
        )
        .await
}

/// Submits proof that one operator signed `a` and `b`, two results for the same order; the
/// caller is paid the reporter's share of the slash.
pub async fn report_equivocation(
    chain: &Chain,
    operators_at: Address,
    from: Address,
    (a, sig_a): (&MatchResult, &[u8]),
    (b, sig_b): (&MatchResult, &[u8]),
) -> Result<TransactionReceipt> {
    let o = operators(chain, operators_at);
    chain
        .send(
            from,
            o.reportEquivocation(
                a.abi(),
                Bytes::from(sig_a.to_vec()),
                b.abi(),
                Bytes::from(sig_b.to_vec()),
            ),
        )
        .await
}

/// Slashes `v.provider` on the market with verifiers' signatures over `v` (sorted here).
pub async fn slash_with_verdict(
    chain: &Chain,
    market: Address,
    from: Address,
    v: &VerdictClaim,
    signatures: &[(Address, Vec<u8>)],
) -> Result<TransactionReceipt> {
    let (signers, sigs) = sorted(signatures);
    let mk = SpheronMarket::new(market, chain.provider().clone());
    let verdict = SpheronMarket::Verdict {
        provider: v.provider,
        session: v.session,
        model: v.model,
        amount: v.amount,
        issuedAt: v.issued_at,
    };
    chain
        .send(from, mk.slashWithVerdict(verdict, signers, sigs))
        .await
}

/// [`spheron_core::StakeVault`] on chain: provider stake in SPHN on the market, slashed only
/// on a verdict signed by registered verifiers. The vault holds those verifiers' keys (they
/// observed the violation the caller reports) and sends the slash from the beneficiary,
/// which is paid the market's reporter share; the treasury gets the rest.
pub struct EvmStakeVault {
    chain: std::sync::Arc<Chain>,
    market: Address,
    sphn: crate::EvmEscrow,
    domain: Eip712Domain,
    verifiers: Vec<alloy::signers::local::PrivateKeySigner>,
}

impl std::fmt::Debug for EvmStakeVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmStakeVault")
            .field("market", &self.market)
            .field("verifiers", &self.verifiers.len())
            .finish_non_exhaustive()
    }
}

impl EvmStakeVault {
    /// A vault on the market at `market` (with operators contract `operators_at` on chain
    /// `chain_id`), staking through `sphn` (an [`crate::EvmEscrow`] of the SPHN token) and
    /// slashing with verdicts signed by `verifiers` (registered as [`Kind::Verifier`]).
    pub fn new(
        chain: std::sync::Arc<Chain>,
        market: Address,
        operators_at: Address,
        chain_id: u64,
        sphn: crate::EvmEscrow,
        verifiers: Vec<alloy::signers::local::PrivateKeySigner>,
    ) -> Self {
        EvmStakeVault {
            chain,
            market,
            sphn,
            domain: domain(chain_id, operators_at),
            verifiers,
        }
    }
}

fn core_err(e: Error) -> spheron_core::Error {
    crate::escrow::core_error(e)
}

#[async_trait::async_trait]
impl spheron_core::StakeVault for EvmStakeVault {
    fn token(&self) -> spheron_core::Token {
        spheron_core::Escrow::token(&self.sphn)
    }

    async fn stake(
        &self,
        provider: spheron_core::ProviderId,
        amount: spheron_core::Amount,
    ) -> spheron_core::Result<()> {
        spheron_core::Escrow::stake(&self.sphn, provider, amount).await
    }

    async fn staked(
        &self,
        provider: spheron_core::ProviderId,
    ) -> spheron_core::Result<spheron_core::Amount> {
        Ok(spheron_core::Escrow::balance(&self.sphn, provider)
            .await?
            .staked)
    }

    async fn slash(
        &self,
        provider: spheron_core::ProviderId,
        amount: spheron_core::Amount,
        beneficiary: spheron_core::AccountId,
    ) -> spheron_core::Result<spheron_core::Amount> {
        amount.non_zero("amount")?;
        if self.verifiers.len() < 2 {
            return Err(spheron_core::Error::invalid(
                "verifiers",
                "a verdict needs the signatures of at least two registered verifiers",
            ));
        }
        let mut session = [0u8; 32];
        getrandom::fill(&mut session)
            .map_err(|e| spheron_core::Error::invalid("session", e.to_string()))?;
        let v = VerdictClaim {
            market: self.market,
            provider: crate::address(provider),
            session: B256::from(session),
            model: B256::ZERO,
            amount: amount.0,
            issued_at: self.chain.block_time().await.map_err(core_err)?,
        };
        let mut sigs = Vec::with_capacity(self.verifiers.len());
        for k in &self.verifiers {
            sigs.push((
                k.address(),
                sign_verdict(k, &self.domain, &v).await.map_err(core_err)?,
            ));
        }
        let r = slash_with_verdict(
            &self.chain,
            self.market,
            crate::address(beneficiary),
            &v,
            &sigs,
        )
        .await
        .map_err(core_err)?;
        let slashed = r
            .inner
            .logs()
            .iter()
            .find_map(|l| {
                <SpheronMarket::Slashed as alloy::sol_types::SolEvent>::decode_log_data(l.data())
                    .ok()
            })
            .ok_or_else(|| spheron_core::Error::invalid("receipt", "no Slashed event"))?;
        u128::try_from(slashed.amount)
            .map(spheron_core::Amount)
            .map_err(|_| spheron_core::Error::Overflow { what: "slashed" })
    }
}
