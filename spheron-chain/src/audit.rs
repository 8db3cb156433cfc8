//! The verifier network on chain, on the `SpheronAudit` contract.
//!
//! Verifiers registered and staked on `SpheronOperators` ([`crate::quorum::register_party`]
//! with [`Kind::Verifier`](crate::quorum::Kind)) post how many challenges each provider passed
//! and failed per epoch ([`post_checks`]): that is the providers' uptime on chain
//! ([`uptime`]), and each pass earns the verifier a reward from a pool funded in SPHN
//! ([`fund_rewards`], [`rewards_of`], [`claim_rewards`]).
//!
//! A failed verdict slashes nobody on one verifier's word: its signer opens a case
//! ([`open_case`]); a second verifier is drawn from the hash of the next block, the accuser
//! excluded ([`assignee`]); it re-runs the challenge and either co-signs, and the market
//! slashes the provider ([`confirm_case`]), or overturns, and the accuser loses part of its
//! verifier stake ([`overturn_case`]). Every verifier's record and the accuracy ranking are
//! on chain ([`stats`], [`ranking`]). Tenants rate their leases ([`rate`], [`feedback`]), and
//! after each epoch the operator quorum signs the providers' tiers ([`sign_tiers`],
//! [`submit_tiers`]), which the contract writes on the market and pays rewards for.
//!
//! ```no_run
//! # async fn demo(chain: &spheron_chain::Chain, a: spheron_chain::Addresses,
//! #               me: alloy::primitives::Address, provider: alloy::primitives::Address)
//! #               -> spheron_chain::Result<()> {
//! use spheron_chain::audit::{self, AuditConfig, CheckTally};
//! let at = audit::deploy_audit(chain, me, &a, &AuditConfig::default()).await?;
//! audit::fund_rewards(chain, at, me, 1_000 * 10u128.pow(18)).await?;
//! let epoch = audit::current_epoch(chain, at).await?;
//! let tally = CheckTally { provider, passes: 3, fails: 0 };
//! audit::post_checks(chain, at, me, epoch, &[tally]).await?;
//! assert_eq!(audit::uptime(chain, at, epoch, provider).await?, (3, 0));
//! # Ok(()) }
//! ```

use crate::bindings::{SpheronAudit, SpheronMarket, SpheronOperators, TestToken};
use crate::client::{Chain, decode};
use crate::deploy::{Addresses, roles};
use crate::error::{Error, Result};
use crate::quorum::{VerdictClaim, sorted};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::signers::Signer;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolEvent, SolStruct, eip712_domain};
use serde::{Deserialize, Serialize};

sol! {
    /// What operators sign for an epoch's tiers (the contract's `Tiers`).
    #[derive(Debug, PartialEq, Eq)]
    struct Tiers {
        uint64 epoch;
        bytes32 providersHash;
        bytes32 tiersHash;
    }
}

/// One SPHN in base units (18 decimals).
const SPHN: u128 = 1_000_000_000_000_000_000;

/// Parameters of a `SpheronAudit` deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Length of an epoch, seconds.
    pub epoch_secs: u32,
    /// Most checks one verifier posts on one provider per epoch.
    pub max_checks_per_epoch: u16,
    /// SPHN base units paid per passed check.
    pub reward_per_check: u128,
    /// Share of an accuser's verifier stake slashed when its verdict is overturned, basis
    /// points.
    pub overturn_slash_bps: u16,
    /// Seconds after a case opens within which its re-checker resolves it (at most 12 hours:
    /// twice this must fit the market's one-day verdict age).
    pub recheck_window_secs: u32,
    /// SPHN base units paid to a provider per epoch at each tier (0..=7).
    pub tier_rewards: [u128; 8],
}

impl Default for AuditConfig {
    /// One-hour epochs, 6 checks per provider and verifier, 1 SPHN per pass, 10% of the
    /// accuser's stake on an overturn, a 10-minute re-check window, tier rewards 0, 1, 2, 4,
    /// 6, 8, 12, 16 SPHN.
    fn default() -> Self {
        AuditConfig {
            epoch_secs: 3600,
            max_checks_per_epoch: 6,
            reward_per_check: SPHN,
            overturn_slash_bps: 1_000,
            recheck_window_secs: 600,
            tier_rewards: [0, 1, 2, 4, 6, 8, 12, 16].map(|n| n * SPHN),
        }
    }
}

/// One verifier's checks of one provider in an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckTally {
    /// The provider challenged.
    pub provider: Address,
    /// Challenges it passed.
    pub passes: u16,
    /// Challenges it failed.
    pub fails: u16,
}

/// A case as `CaseOpened` logged it: what the re-checker needs to confirm it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenedCase {
    /// The case id.
    pub id: u64,
    /// The verifier that signed the failed verdict.
    pub accuser: Address,
    /// The verdict.
    pub verdict: VerdictClaim,
    /// The accuser's signature over the verdict (65 bytes).
    pub signature: Vec<u8>,
    /// The block the case was opened in (its assignee is drawn from the next one's hash).
    pub block: u64,
}

/// Where a case stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseState {
    /// Waiting for its re-checker.
    Open,
    /// The re-checker co-signed; the provider was slashed.
    Confirmed,
    /// The re-checker disagreed; the accuser was slashed.
    Overturned,
    /// The re-check window passed unresolved.
    Expired,
}

/// A verifier's record on chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierStats {
    /// Passed challenges it posted.
    pub passes: u64,
    /// Failed challenges it posted.
    pub fails: u64,
    /// Its failed verdicts a re-checker confirmed.
    pub confirmed: u64,
    /// Its failed verdicts a re-checker overturned.
    pub overturned: u64,
    /// Cases it re-checked.
    pub rechecks: u64,
    /// SPHN base units it was ever credited.
    pub rewarded: u128,
}

impl VerifierStats {
    /// (passes + confirmed) * 10000 / (passes + confirmed + overturned), 0 with no record:
    /// what the contract's `accuracyBps` computes.
    pub fn accuracy_bps(&self) -> u16 {
        let good = u128::from(self.passes) + u128::from(self.confirmed);
        let all = good + u128::from(self.overturned);
        (good * 10_000)
            .checked_div(all)
            .map_or(0, |bps| u16::try_from(bps).unwrap_or(u16::MAX))
    }
}

fn audit(chain: &Chain, at: Address) -> SpheronAudit::SpheronAuditInstance<DynProvider> {
    SpheronAudit::new(at, chain.provider().clone())
}

fn to_u64(v: U256, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Rpc(format!("{what} {v} does not fit 64 bits")))
}

fn to_u128(v: U256, what: &'static str) -> Result<u128> {
    u128::try_from(v).map_err(|_| Error::Rpc(format!("{what} {v} does not fit 128 bits")))
}

fn verdict_abi(v: &VerdictClaim) -> SpheronAudit::Verdict {
    SpheronAudit::Verdict {
        market: v.market,
        provider: v.provider,
        session: v.session,
        model: v.model,
        amount: v.amount,
        issuedAt: v.issued_at,
    }
}

fn verdict_claim(v: &SpheronAudit::Verdict) -> VerdictClaim {
    VerdictClaim {
        market: v.market,
        provider: v.provider,
        session: v.session,
        model: v.model,
        amount: v.amount,
        issued_at: v.issuedAt,
    }
}

/// Deploys `SpheronAudit` for the deployment `addrs` (administered by `admin`, which must
/// administer the market and have deployed the operators contract), grants it the market's
/// TIER_ROLE and makes it the operators contract's auditor (the one that may slash
/// verifiers). Returns its address.
pub async fn deploy_audit(
    chain: &Chain,
    admin: Address,
    addrs: &Addresses,
    cfg: &AuditConfig,
) -> Result<Address> {
    if !chain.has_signer(admin) {
        return Err(Error::NoSigner(admin));
    }
    let config = SpheronAudit::Config {
        epochSecs: cfg.epoch_secs,
        maxChecksPerEpoch: cfg.max_checks_per_epoch,
        rewardPerCheck: cfg.reward_per_check,
        overturnSlashBps: cfg.overturn_slash_bps,
        recheckWindowSecs: cfg.recheck_window_secs,
        tierReward: cfg.tier_rewards,
    };
    let at = {
        let _guard = chain.lock().await;
        SpheronAudit::deploy_builder(
            chain.provider(),
            addrs.market,
            addrs.operators,
            addrs.sphn,
            config,
            admin,
        )
        .from(admin)
        .deploy()
        .await
        .map_err(decode)?
    };
    let m = SpheronMarket::new(addrs.market, chain.provider().clone());
    chain.send(admin, m.grantRole(roles::tier(), at)).await?;
    let o = SpheronOperators::new(addrs.operators, chain.provider().clone());
    chain.send(admin, o.setAuditor(at)).await?;
    Ok(at)
}

/// The epoch now (by the latest block's time).
pub async fn current_epoch(chain: &Chain, audit_at: Address) -> Result<u64> {
    audit(chain, audit_at)
        .currentEpoch()
        .call()
        .await
        .map_err(decode)
}

/// Epoch `epoch`'s `[start, end)` in block-time seconds.
pub async fn epoch_bounds(chain: &Chain, audit_at: Address, epoch: u64) -> Result<(u64, u64)> {
    let a = audit(chain, audit_at);
    let start = a.epochStart(epoch).call().await.map_err(decode)?;
    let end = a.epochEnd(epoch).call().await.map_err(decode)?;
    Ok((to_u64(start, "epoch start")?, to_u64(end, "epoch end")?))
}

/// Approves and adds `amount` SPHN from `from`'s wallet to the reward pool.
pub async fn fund_rewards(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    amount: u128,
) -> Result<TransactionReceipt> {
    let a = audit(chain, audit_at);
    let sphn = a.sphn().call().await.map_err(decode)?;
    let t = TestToken::new(sphn, chain.provider().clone());
    chain
        .send(from, t.approve(audit_at, U256::from(amount)))
        .await?;
    chain.send(from, a.fundRewards(U256::from(amount))).await
}

/// Posts `from`'s (an active verifier's) checks of each provider in `epoch` (the current or
/// the previous one). Reverts come back named: `TooManyChecks`, `EpochNotOpen`,
/// `NotVerifier`, `NotAProvider`.
pub async fn post_checks(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    epoch: u64,
    tallies: &[CheckTally],
) -> Result<TransactionReceipt> {
    let providers: Vec<Address> = tallies.iter().map(|t| t.provider).collect();
    let passes: Vec<u16> = tallies.iter().map(|t| t.passes).collect();
    let fails: Vec<u16> = tallies.iter().map(|t| t.fails).collect();
    let a = audit(chain, audit_at);
    chain
        .send(from, a.postChecks(epoch, providers, passes, fails))
        .await
}

/// `provider`'s passed and failed challenges in `epoch`, over all verifiers.
pub async fn uptime(
    chain: &Chain,
    audit_at: Address,
    epoch: u64,
    provider: Address,
) -> Result<(u32, u32)> {
    let r = audit(chain, audit_at)
        .uptimeOf(epoch, provider)
        .call()
        .await
        .map_err(decode)?;
    Ok((r.passes, r.fails))
}

/// Opens a case on failed verdict `v`, which `from` (an active verifier) signed with `sig`
/// ([`crate::quorum::sign_verdict`]). Returns the case id.
pub async fn open_case(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    v: &VerdictClaim,
    sig: &[u8],
) -> Result<u64> {
    let a = audit(chain, audit_at);
    let r = chain
        .send(from, a.openCase(verdict_abi(v), Bytes::from(sig.to_vec())))
        .await?;
    r.inner
        .logs()
        .iter()
        .filter(|l| l.address() == audit_at)
        .find_map(|l| SpheronAudit::CaseOpened::decode_log_data(l.data()).ok())
        .map(|e| e.caseId)
        .ok_or_else(|| Error::Rpc("openCase receipt has no CaseOpened event".into()))
}

/// The cases opened in blocks `from_block..=to_block`, in order.
pub async fn opened_cases(
    chain: &Chain,
    audit_at: Address,
    from_block: u64,
    to_block: u64,
) -> Result<Vec<OpenedCase>> {
    let filter = Filter::new()
        .address(audit_at)
        .event_signature(SpheronAudit::CaseOpened::SIGNATURE_HASH)
        .from_block(from_block)
        .to_block(to_block);
    let logs = chain
        .provider()
        .get_logs(&filter)
        .await
        .map_err(|e| Error::Rpc(e.to_string()))?;
    let mut out = Vec::with_capacity(logs.len());
    for l in logs {
        let e = SpheronAudit::CaseOpened::decode_log_data(l.data())
            .map_err(|e| Error::Rpc(format!("undecodable CaseOpened log: {e}")))?;
        out.push(OpenedCase {
            id: e.caseId,
            accuser: e.accuser,
            verdict: verdict_claim(&e.v),
            signature: e.sig.to_vec(),
            block: l
                .block_number
                .ok_or_else(|| Error::Rpc("CaseOpened log without a block number".into()))?,
        });
    }
    Ok(out)
}

/// The verifier assigned to re-check `case`, or `None` until it can be drawn (for an
/// unknown case too): the draw reads the hash of the block after the opening, which only the
/// blocks after that one can read, so it shows from the second block after the opening on.
pub async fn assignee(chain: &Chain, audit_at: Address, case: u64) -> Result<Option<Address>> {
    let a = audit(chain, audit_at)
        .assigneeOf(case)
        .call()
        .await
        .map_err(decode)?;
    Ok((a != Address::ZERO).then_some(a))
}

/// Where `case` stands; [`Error::Invalid`] for a case that does not exist.
pub async fn case_state(chain: &Chain, audit_at: Address, case: u64) -> Result<CaseState> {
    let c = audit(chain, audit_at)
        .caseOf(case)
        .call()
        .await
        .map_err(decode)?;
    match c.state {
        1 => Ok(CaseState::Open),
        2 => Ok(CaseState::Confirmed),
        3 => Ok(CaseState::Overturned),
        4 => Ok(CaseState::Expired),
        0 => Err(Error::Invalid {
            field: "case",
            reason: format!("no case {case} on {audit_at}"),
        }),
        s => Err(Error::Rpc(format!("case {case} has unknown state {s}"))),
    }
}

/// `from`, the assignee of `case`, confirms it: `v` and `accuser_sig` as `CaseOpened` logged
/// them, `sig` its own signature over `v`. The market slashes the provider.
#[allow(clippy::too_many_arguments)]
pub async fn confirm_case(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    case: u64,
    v: &VerdictClaim,
    accuser_sig: &[u8],
    sig: &[u8],
) -> Result<TransactionReceipt> {
    let a = audit(chain, audit_at);
    chain
        .send(
            from,
            a.confirmCase(
                case,
                verdict_abi(v),
                Bytes::from(accuser_sig.to_vec()),
                Bytes::from(sig.to_vec()),
            ),
        )
        .await
}

/// `from`, the assignee of `case`, overturns it: the accuser's verifier stake is slashed.
pub async fn overturn_case(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    case: u64,
) -> Result<TransactionReceipt> {
    chain
        .send(from, audit(chain, audit_at).overturnCase(case))
        .await
}

/// Closes `case` after its re-check window, nobody penalised (anyone may).
pub async fn expire_case(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    case: u64,
) -> Result<TransactionReceipt> {
    chain
        .send(from, audit(chain, audit_at).expireCase(case))
        .await
}

/// `verifier`'s record.
pub async fn stats(chain: &Chain, audit_at: Address, verifier: Address) -> Result<VerifierStats> {
    let s = audit(chain, audit_at)
        .statsOf(verifier)
        .call()
        .await
        .map_err(decode)?;
    Ok(VerifierStats {
        passes: s.passes,
        fails: s.fails,
        confirmed: u64::from(s.confirmed),
        overturned: u64::from(s.overturned),
        rechecks: u64::from(s.rechecks),
        rewarded: s.rewarded,
    })
}

/// Every registered verifier with its accuracy (basis points), best first; ties go to the
/// one with more checks.
pub async fn ranking(chain: &Chain, audit_at: Address) -> Result<Vec<(Address, u16)>> {
    let r = audit(chain, audit_at)
        .ranking()
        .call()
        .await
        .map_err(decode)?;
    Ok(r.verifiers.into_iter().zip(r.accuracy).collect())
}

/// SPHN base units `who` is owed and may claim.
pub async fn rewards_of(chain: &Chain, audit_at: Address, who: Address) -> Result<u128> {
    let v = audit(chain, audit_at)
        .rewardsOf(who)
        .call()
        .await
        .map_err(decode)?;
    to_u128(v, "rewards")
}

/// The reward pool and what is owed, not yet claimed: the contract's SPHN balance is their
/// sum.
pub async fn pool(chain: &Chain, audit_at: Address) -> Result<(u128, u128)> {
    let a = audit(chain, audit_at);
    let pool = a.pool().call().await.map_err(decode)?;
    let owed = a.owedTotal().call().await.map_err(decode)?;
    Ok((pool, owed))
}

/// Pays `from` what it is owed, to its wallet.
pub async fn claim_rewards(
    chain: &Chain,
    audit_at: Address,
    from: Address,
) -> Result<TransactionReceipt> {
    chain
        .send(from, audit(chain, audit_at).claimRewards())
        .await
}

/// `from`, the tenant of lease `lease_id`, rates it `score` (1..=5), once.
pub async fn rate(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    lease_id: u64,
    score: u8,
) -> Result<TransactionReceipt> {
    chain
        .send(from, audit(chain, audit_at).rate(lease_id, score))
        .await
}

/// Tenants' ratings of `provider` in `epoch`: how many, and their sum.
pub async fn feedback(
    chain: &Chain,
    audit_at: Address,
    epoch: u64,
    provider: Address,
) -> Result<(u32, u32)> {
    let r = audit(chain, audit_at)
        .feedbackOf(epoch, provider)
        .call()
        .await
        .map_err(decode)?;
    Ok((r.count, r.sum))
}

/// The EIP-712 domain of tiers: the `SpheronAudit` contract at `audit` on chain `chain_id`.
pub fn domain(chain_id: u64, audit: Address) -> Eip712Domain {
    eip712_domain! {
        name: "SpheronAudit",
        version: "1",
        chain_id: chain_id,
        verifying_contract: audit,
    }
}

/// The digest operators sign for `epoch`'s tiers, computed here: `Tiers{epoch,
/// providersHash, tiersHash}` with providersHash the keccak of the providers (strictly
/// ascending, as `submitTiers` requires) each left-padded to 32 bytes (Solidity's `abi.encodePacked(address[])`) and tiersHash the
/// keccak of the tiers, one byte each. Equal to the contract's `tiersDigest`.
pub fn tiers_digest_local(
    chain_id: u64,
    audit: Address,
    epoch: u64,
    providers: &[Address],
    tiers: &[u8],
) -> B256 {
    let mut packed = Vec::with_capacity(providers.len() * 32);
    for p in providers {
        packed.extend_from_slice(p.into_word().as_slice());
    }
    Tiers {
        epoch,
        providersHash: keccak256(&packed),
        tiersHash: keccak256(tiers),
    }
    .eip712_signing_hash(&domain(chain_id, audit))
}

/// Signs `epoch`'s tiers with an operator's key: a 65-byte signature.
pub async fn sign_tiers<S: Signer + Sync>(
    signer: &S,
    chain_id: u64,
    audit: Address,
    epoch: u64,
    providers: &[Address],
    tiers: &[u8],
) -> Result<Vec<u8>> {
    let digest = tiers_digest_local(chain_id, audit, epoch, providers, tiers);
    let sig = signer
        .sign_hash(&digest)
        .await
        .map_err(|e| Error::Signature(e.to_string()))?;
    Ok(sig.as_bytes().to_vec())
}

/// The contract's own `tiersDigest` (for checking [`tiers_digest_local`]).
pub async fn tiers_digest(
    chain: &Chain,
    audit_at: Address,
    epoch: u64,
    providers: &[Address],
    tiers: &[u8],
) -> Result<B256> {
    audit(chain, audit_at)
        .tiersDigest(epoch, providers.to_vec(), Bytes::from(tiers.to_vec()))
        .call()
        .await
        .map_err(decode)
}

/// Submits closed epoch `epoch`'s tiers with operators' signatures (sorted here) from
/// `from` (anyone). `providers` must be strictly ascending, as signed ([`Error::Invalid`]
/// here otherwise). Reverts come back named: `NoQuorum`, `EpochNotClosed`,
/// `TiersAlreadySubmitted`, `LengthsDiffer`, `TierOutOfRange`.
#[allow(clippy::too_many_arguments)]
pub async fn submit_tiers(
    chain: &Chain,
    audit_at: Address,
    from: Address,
    epoch: u64,
    providers: &[Address],
    tiers: &[u8],
    signatures: &[(Address, Vec<u8>)],
) -> Result<TransactionReceipt> {
    if let Some(i) = providers.windows(2).position(|w| w[0] >= w[1]) {
        return Err(Error::Invalid {
            field: "providers",
            reason: format!(
                "must be strictly ascending: {} at {} is not below {} at {}",
                providers[i],
                i,
                providers[i + 1],
                i + 1
            ),
        });
    }
    let (signers, sigs) = sorted(signatures);
    chain
        .send(
            from,
            audit(chain, audit_at).submitTiers(
                epoch,
                providers.to_vec(),
                Bytes::from(tiers.to_vec()),
                signers,
                sigs,
            ),
        )
        .await
}

/// Whether `epoch`'s tiers were submitted.
pub async fn tiers_submitted(chain: &Chain, audit_at: Address, epoch: u64) -> Result<bool> {
    audit(chain, audit_at)
        .tiersSubmitted(epoch)
        .call()
        .await
        .map_err(decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_matches_the_contract_formula() {
        let s = VerifierStats {
            passes: 8,
            confirmed: 1,
            overturned: 1,
            ..Default::default()
        };
        assert_eq!(s.accuracy_bps(), 9_000);
        assert_eq!(VerifierStats::default().accuracy_bps(), 0);
    }

    #[test]
    fn tiers_digest_depends_on_every_field() {
        let a = Address::repeat_byte(1);
        let p = [Address::repeat_byte(2), Address::repeat_byte(3)];
        let d = tiers_digest_local(1, a, 4, &p, &[1, 2]);
        assert_ne!(d, tiers_digest_local(2, a, 4, &p, &[1, 2]));
        assert_ne!(d, tiers_digest_local(1, Address::ZERO, 4, &p, &[1, 2]));
        assert_ne!(d, tiers_digest_local(1, a, 5, &p, &[1, 2]));
        assert_ne!(d, tiers_digest_local(1, a, 4, &[p[1], p[0]], &[1, 2]));
        assert_ne!(d, tiers_digest_local(1, a, 4, &p, &[2, 1]));
    }
}
