//! Stake apart from payment on chain: tenants pay in the 6-decimal stable token while the
//! provider's stake is SPHN in an [`EvmStakeVault`], which slashes only with a verdict its
//! registered verifiers sign, capped by the market.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use spheron_chain::quorum::Kind;
use spheron_chain::{EvmEscrow, EvmStakeVault, MarketConfig, account};
use spheron_core::{Amount, Escrow, StakeVault, Token};
use std::sync::Arc;

const SPHN: u128 = 1_000_000_000_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_is_slashed_in_sphn_whatever_token_pays() {
    let config = MarketConfig::default();
    let Some(tc) = common::chain(&config).await else {
        return;
    };
    let chain = Arc::new(spheron_chain::Chain::connect(&tc.endpoint(), tc.keys.clone()).unwrap());
    let provider = tc.accounts[4];
    let reporter = tc.accounts[5];
    let verifiers = common::register_parties(&tc, &[6, 7], Kind::Verifier, 1_000 * SPHN).await;

    let payment = EvmEscrow::new(
        chain.clone(),
        tc.addresses.market,
        tc.addresses.stable,
        Token::usd(),
    )
    .await
    .unwrap();
    let sphn_escrow = || async {
        EvmEscrow::new(
            chain.clone(),
            tc.addresses.market,
            tc.addresses.sphn,
            Token::sphn(),
        )
        .await
        .unwrap()
    };
    let sphn = sphn_escrow().await;
    common::mint(
        &tc,
        tc.addresses.sphn,
        &[provider],
        alloy::primitives::U256::from(400 * SPHN),
    )
    .await;
    sphn.deposit(account(provider), Amount(400 * SPHN))
        .await
        .unwrap();
    let vault = EvmStakeVault::new(
        chain.clone(),
        tc.addresses.market,
        tc.addresses.operators,
        31337,
        sphn,
        verifiers.keys.clone(),
    );
    let v: &dyn StakeVault = &vault;
    v.stake(account(provider), Amount(400 * SPHN))
        .await
        .unwrap();
    assert_eq!(
        v.staked(account(provider)).await.unwrap(),
        Amount(400 * SPHN)
    );
    assert_eq!(v.token(), Token::sphn());

    // A slash asks for everything; the market caps one verdict at max_slash_bps of the stake.
    let slashed = v
        .slash(account(provider), Amount(1_000 * SPHN), account(reporter))
        .await
        .unwrap();
    let cap = 400 * SPHN * u128::from(config.max_slash_bps) / 10_000;
    assert_eq!(slashed, Amount(cap));
    assert_eq!(
        v.staked(account(provider)).await.unwrap(),
        Amount(400 * SPHN - cap)
    );
    // The reporter gets its capped share in SPHN; nothing moved in the payment token.
    let share = cap * u128::from(config.slash_reporter_bps) / 10_000;
    let b = sphn_escrow()
        .await
        .balance(account(reporter))
        .await
        .unwrap();
    assert_eq!(b.available, Amount(share));
    let pb = payment.balance(account(provider)).await.unwrap();
    assert_eq!(
        (pb.available, pb.locked, pb.staked),
        (Amount(0), Amount(0), Amount(0))
    );

    // Fewer than two verifiers is no evidence: the vault refuses to forge a verdict.
    let lone = EvmStakeVault::new(
        chain.clone(),
        tc.addresses.market,
        tc.addresses.operators,
        31337,
        sphn_escrow().await,
        verifiers.keys[..1].to_vec(),
    );
    assert!(
        lone.slash(account(provider), Amount(SPHN), account(reporter))
            .await
            .is_err()
    );
}
