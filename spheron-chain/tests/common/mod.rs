//! Shared setup of the anvil tests.
#![allow(dead_code, clippy::unwrap_used)]

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
    let market = deploy::deploy_market(
        &tc.chain,
        tc.admin(),
        tc.addresses.sphn,
        &MarketConfig::default(),
    )
    .await
    .unwrap();
    let m = spheron_chain::bindings::SpheronMarket::new(market, tc.chain.provider().clone());
    tc.chain
        .send(
            tc.admin(),
            m.grantRole(deploy::roles::slasher(), tc.operator()),
        )
        .await
        .unwrap();
    let accts: Vec<Address> = tc.accounts[2..6].to_vec();
    mint(tc, tc.addresses.sphn, &accts, U256::from(1u8) << 130).await;
    let chain = Arc::new(spheron_chain::Chain::connect(&tc.endpoint(), tc.keys.clone()).unwrap());
    let e = EvmEscrow::new(
        chain,
        market,
        tc.addresses.sphn,
        Token::sphn(),
        tc.operator(),
    )
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
