//! Shared setup of the anvil tests.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use alloy::primitives::{Address, U256};
use spheron_chain::anvil::{AnvilOptions, TestChain, find_anvil};
use spheron_chain::bindings::TestToken;
use spheron_chain::deploy::{self, MarketConfig};
use spheron_chain::{EvmEscrow, account};
use spheron_core::conformance::Accounts;
use spheron_core::{Escrow, Token};
use std::sync::Arc;

/// Starts anvil with a local deployment, or explains loudly how to get anvil and returns
/// `None`. With `SPHERON_REQUIRE_ANVIL=1` (set by scripts/test) a missing anvil fails.
pub async fn chain(config: &MarketConfig) -> Option<TestChain> {
    chain_with(config, &AnvilOptions::default()).await
}

/// [`chain`] with anvil run as `opts` says.
pub async fn chain_with(config: &MarketConfig, opts: &AnvilOptions) -> Option<TestChain> {
    if let Err(e) = find_anvil() {
        let msg = format!(
            "\n\n*** SKIPPED: this test needs anvil. {e}\n*** In CI `bash scripts/chain-setup.sh` installs it.\n"
        );
        if std::env::var_os("SPHERON_REQUIRE_ANVIL").is_some_and(|v| v != "0") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        return None;
    }
    Some(
        TestChain::start_with(config, opts)
            .await
            .expect("anvil starts and deploys"),
    )
}

/// Mints `amount` of `token` to each account's wallet.
pub async fn mint(tc: &TestChain, token: Address, to: &[Address], amount: U256) {
    let t = TestToken::new(token, tc.chain.provider().clone());
    for a in to {
        tc.chain.send(tc.admin(), t.mint(*a, amount)).await.unwrap();
    }
}

/// The four conformance accounts: dev accounts 2..=5.
pub fn accounts(tc: &TestChain) -> Accounts {
    Accounts {
        tenant: account(tc.accounts[2]),
        other: account(tc.accounts[3]),
        provider: account(tc.accounts[4]),
        beneficiary: account(tc.accounts[5]),
    }
}

/// A fresh market (new deployment on the running node) and an SPHN escrow on it with a
/// warped dev clock; the conformance accounts hold 2^130 SPHN in their wallets.
pub async fn fresh_sphn_escrow(tc: &TestChain) -> Arc<dyn Escrow> {
    let (market, _operators) = deploy::deploy_market(
        &tc.chain,
        tc.admin(),
        tc.addresses.sphn,
        &MarketConfig::default(),
    )
    .await
    .unwrap();
    let accts: Vec<Address> = tc.accounts[2..6].to_vec();
    mint(tc, tc.addresses.sphn, &accts, U256::from(1u8) << 130).await;
    let chain = Arc::new(spheron_chain::Chain::connect(&tc.endpoint(), tc.keys.clone()).unwrap());
    let e = EvmEscrow::new(chain, market, tc.addresses.sphn, Token::sphn())
        .await
        .unwrap()
        .with_dev_clock()
        .await
        .unwrap();
    Arc::new(e)
}

use alloy::providers::ext::AnvilApi;
use spheron_chain::bindings::SpheronMarket;

pub type M = SpheronMarket::SpheronMarketInstance<alloy::providers::DynProvider>;

pub fn market(tc: &TestChain) -> M {
    SpheronMarket::new(tc.addresses.market, tc.chain.provider().clone())
}

pub fn token(
    tc: &TestChain,
    t: Address,
) -> TestToken::TestTokenInstance<alloy::providers::DynProvider> {
    TestToken::new(t, tc.chain.provider().clone())
}

/// Freezes the node's clock and returns the current block time.
pub async fn freeze(tc: &TestChain) -> u64 {
    tc.chain
        .provider()
        .anvil_set_block_timestamp_interval(0)
        .await
        .unwrap();
    tc.chain.block_time().await.unwrap()
}

/// The next transaction is mined at block time `t`.
pub async fn at(tc: &TestChain, t: u64) {
    tc.chain
        .provider()
        .anvil_set_next_block_timestamp(t)
        .await
        .unwrap();
}

/// Mints, approves and deposits `amount` of `t` for each of `who`.
pub async fn fund(tc: &TestChain, t: Address, who: &[Address], amount: u128) {
    let m = market(tc);
    let tok = token(tc, t);
    for a in who {
        tc.chain
            .send(tc.admin(), tok.mint(*a, U256::from(amount)))
            .await
            .unwrap();
        tc.chain
            .send(*a, tok.approve(tc.addresses.market, U256::MAX))
            .await
            .unwrap();
        tc.chain
            .send(*a, m.deposit(t, U256::from(amount)))
            .await
            .unwrap();
    }
}

/// One SPHN (18 decimals).
pub const SPHN: u128 = 1_000_000_000_000_000_000;
/// The default minimum provider stake (`MarketConfig::default().min_stake`).
pub const MIN_STAKE: u128 = 100 * SPHN;
/// What each test operator stakes (`MarketConfig::default().operator_min_stake`).
pub const OP_STAKE: u128 = 1_000 * SPHN;

/// Registers and stakes `stake` SPHN for each provider.
pub async fn register_providers(tc: &TestChain, providers: &[Address], stake: u128) {
    fund(tc, tc.addresses.sphn, providers, stake).await;
    let m = market(tc);
    for (i, p) in providers.iter().enumerate() {
        tc.chain
            .send(
                *p,
                m.register(
                    format!("https://provider{i}.example"),
                    "eu-west".into(),
                    alloy::primitives::Bytes::from(vec![i as u8 + 1; 33]),
                    alloy::primitives::B256::repeat_byte(i as u8 + 1),
                    format!(r#"{{"name":"provider{i}"}}"#),
                ),
            )
            .await
            .unwrap();
        tc.chain.send(*p, m.stake(stake)).await.unwrap();
    }
}

/// Everything that could move: the market's accounts, fees and stakes, and wallet balances,
/// in both tokens, for `who`.
pub async fn snapshot(tc: &TestChain, who: &[Address]) -> Vec<String> {
    let m = market(tc);
    let mut out = Vec::new();
    for t in [tc.addresses.sphn, tc.addresses.stable] {
        out.push(format!("fees {}", m.fees(t).call().await.unwrap()));
        out.push(format!(
            "held {}",
            token(tc, t)
                .balanceOf(tc.addresses.market)
                .call()
                .await
                .unwrap()
        ));
        for a in who {
            let acc = m.accountOf(t, *a).call().await.unwrap();
            let w = token(tc, t).balanceOf(*a).call().await.unwrap();
            out.push(format!(
                "{a} {t}: {}/{} wallet {w}",
                acc.available, acc.locked
            ));
        }
    }
    for a in who {
        let s = m.stakeOf(*a).call().await.unwrap();
        out.push(format!("{a} stake {}/{}", s.staked, s.unbonding));
    }
    out
}

/// Asserts the balance invariant for both tokens over `who`.
pub async fn assert_solvent(tc: &TestChain, who: &[Address]) {
    for t in [tc.addresses.sphn, tc.addresses.stable] {
        let s = spheron_chain::solvency(&tc.chain, tc.addresses.market, t, who)
            .await
            .unwrap();
        assert_eq!(s.held, s.owed, "token {t}: held != owed");
    }
}

/// Sends and expects a revert with the named custom error.
pub async fn expect_revert<D: alloy::contract::CallDecoder + Unpin>(
    tc: &TestChain,
    from: Address,
    call: alloy::contract::CallBuilder<&alloy::providers::DynProvider, D>,
    name: &str,
) {
    match tc.chain.send(from, call).await {
        Ok(r) => panic!(
            "expected {name}, the transaction succeeded: {:?}",
            r.transaction_hash
        ),
        Err(e) => assert_eq!(e.revert_name(), Some(name), "wrong revert: {e}"),
    }
}

/// Sends `call` and returns the revert name, or `None` when it succeeded.
pub async fn try_send<D: alloy::contract::CallDecoder + Unpin>(
    tc: &TestChain,
    from: Address,
    call: alloy::contract::CallBuilder<&alloy::providers::DynProvider, D>,
) -> Result<alloy::rpc::types::TransactionReceipt, String> {
    tc.chain
        .send(from, call)
        .await
        .map_err(|e| e.revert_name().map(str::to_string).unwrap_or(e.to_string()))
}

/// The first event of type `E` in a receipt.
pub fn event<E: alloy::sol_types::SolEvent>(
    r: &alloy::rpc::types::TransactionReceipt,
) -> Option<E> {
    r.inner
        .logs()
        .iter()
        .find_map(|l| E::decode_log_data(l.data()).ok())
}

// ---------------------------------------------------------------- the operator quorum

use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use spheron_chain::quorum::{self, Kind, MatchResult, VerdictClaim};

/// Registered parties (operators or verifiers) with their keys, sorted by address.
pub struct Parties {
    /// Their keys, by ascending address.
    pub keys: Vec<PrivateKeySigner>,
    /// The EIP-712 domain of the operators contract.
    pub domain: Eip712Domain,
}

impl Parties {
    /// The parties' addresses, ascending.
    pub fn addresses(&self) -> Vec<Address> {
        self.keys.iter().map(|k| k.address()).collect()
    }
}

/// The EIP-712 domain of `tc`'s operators contract.
pub async fn domain(tc: &TestChain) -> Eip712Domain {
    use alloy::providers::Provider;
    let chain_id = tc.chain.provider().get_chain_id().await.unwrap();
    quorum::domain(chain_id, tc.addresses.operators)
}

/// Mints `stake` SPHN to each of the dev accounts `idx` and registers them as `kind`.
pub async fn register_parties(tc: &TestChain, idx: &[usize], kind: Kind, stake: u128) -> Parties {
    let who: Vec<Address> = idx.iter().map(|i| tc.accounts[*i]).collect();
    mint(tc, tc.addresses.sphn, &who, U256::from(stake)).await;
    for (n, a) in who.iter().enumerate() {
        quorum::register_party(
            &tc.chain,
            tc.addresses.operators,
            tc.addresses.sphn,
            *a,
            kind,
            &format!("http://127.0.0.1:{}", 9000 + n),
            stake,
        )
        .await
        .unwrap();
    }
    let mut keys: Vec<PrivateKeySigner> = idx.iter().map(|i| tc.keys[*i].clone()).collect();
    keys.sort_by_key(|k| k.address());
    Parties {
        keys,
        domain: domain(tc).await,
    }
}

/// The match result every honest operator computes for `winner` on order `id`: the chain's
/// digest and seed, the winner's bid price.
pub async fn match_result(tc: &TestChain, id: u64, winner: Address) -> MatchResult {
    let m = market(tc);
    let o = m.getOrder(id).call().await.unwrap();
    let bid = m.getBid(id, winner).call().await.unwrap();
    let seed = m.seedOf(id, o.bidsDigest).call().await.unwrap();
    MatchResult {
        order_id: id,
        bids_digest: o.bidsDigest,
        winner,
        price: bid.price.to::<u128>(),
        seed,
        matcher_version: 1,
    }
}

/// Signatures of `m` by the first `n` of `ps`.
pub async fn sign(ps: &Parties, m: &MatchResult, n: usize) -> Vec<(Address, Vec<u8>)> {
    let mut out = Vec::new();
    for k in ps.keys.iter().take(n) {
        out.push((
            k.address(),
            quorum::sign_match(k, &ps.domain, m).await.unwrap(),
        ));
    }
    out
}

/// Submits the match of order `id` to `winner` signed by the first `n` operators, from `from`.
pub async fn submit(
    tc: &TestChain,
    ops: &Parties,
    id: u64,
    winner: Address,
    n: usize,
    from: Address,
) -> spheron_chain::Result<alloy::rpc::types::TransactionReceipt> {
    let m = match_result(tc, id, winner).await;
    let sigs = sign(ops, &m, n).await;
    quorum::submit_match(&tc.chain, tc.addresses.market, from, &m, &sigs).await
}

/// Signatures of verdict `v` by the first `n` of `vs`.
pub async fn sign_verdict(vs: &Parties, v: &VerdictClaim, n: usize) -> Vec<(Address, Vec<u8>)> {
    let mut out = Vec::new();
    for k in vs.keys.iter().take(n) {
        out.push((
            k.address(),
            quorum::sign_verdict(k, &vs.domain, v).await.unwrap(),
        ));
    }
    out
}

/// Creates an order (ids come from the contract) at block time `t`; returns its id.
#[allow(clippy::too_many_arguments)]
pub async fn order_at(
    tc: &TestChain,
    t: u64,
    tenant: Address,
    token: Address,
    ceiling: u128,
    gpus: u32,
    duration: u32,
    window: u32,
) -> u64 {
    at(tc, t).await;
    let r = tc
        .chain
        .send(
            tenant,
            market(tc).createOrder(token, ceiling, gpus, duration, window),
        )
        .await
        .unwrap();
    event::<SpheronMarket::OrderCreated>(&r).unwrap().id
}

/// Places a bid at `price` (no model) from `provider`.
pub async fn bid(tc: &TestChain, provider: Address, id: u64, price: u128) {
    tc.chain
        .send(
            provider,
            market(tc).placeBid(id, alloy::primitives::Uint::from(price), Default::default()),
        )
        .await
        .unwrap();
}
