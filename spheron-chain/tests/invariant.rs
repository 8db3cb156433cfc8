//! The balance invariant on anvil: bounded random sequences of market operations (deposits,
//! orders, bids, matches, closes, batch settlements, cancels, stakes, unstakes, slashes,
//! transfers, fee withdrawals, time jumps) keep, after every step and for each token,
//! `balanceOf(market) == sum(available + locked) + fees + stakes`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use alloy::primitives::{Address, U256, Uint};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use spheron_chain::MarketConfig;

const STEPS: usize = 90;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_keep_the_balance_invariant() {
    let config = MarketConfig {
        unbonding_secs: 600,
        min_stake: 1_000,
        slash_reporter_bps: 5_000,
        stable_fee_bps: 250,
    };
    for seed in [11u64, 12, 13] {
        let Some(tc) = common::chain(&config).await else {
            return;
        };
        run(&tc, seed).await;
    }
}

async fn run(tc: &spheron_chain::anvil::TestChain, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m = common::market(tc);
    let tokens = [tc.addresses.sphn, tc.addresses.stable];
    let tenants = [tc.accounts[2], tc.accounts[3]];
    let providers = [tc.accounts[4], tc.accounts[5], tc.accounts[6]];
    let mut everyone: Vec<Address> = tc.accounts[..7].to_vec();
    everyone.push(tc.accounts[9]);
    let mut now = common::freeze(tc).await + 1;
    common::register_providers(tc, &providers, 50_000).await;
    for t in tokens {
        common::fund(tc, t, &tenants, 50_000_000).await;
    }
    let mut next_id = 1u64;
    let mut ok = 0usize;
    for step in 0..STEPS {
        let r = |n: u64, rng: &mut ChaCha8Rng| rng.next_u64() % n;
        let token = tokens[r(2, &mut rng) as usize];
        let tenant = tenants[r(2, &mut rng) as usize];
        let provider = providers[r(3, &mut rng) as usize];
        let anyone = everyone[r(everyone.len() as u64, &mut rng) as usize];
        let id = 1 + r(next_id, &mut rng);
        let amount = 1 + u128::from(r(5_000_000, &mut rng));
        let chain = &tc.chain;
        let res = match r(14, &mut rng) {
            0 => {
                common::fund(tc, token, &[anyone], amount).await;
                Ok(())
            }
            1 => chain
                .send(anyone, m.withdraw(token, U256::from(amount)))
                .await
                .map(drop),
            2 | 3 => {
                next_id += 1;
                let price = 1 + u128::from(r(3_000_000, &mut rng));
                let gpus = 1 + r(4, &mut rng) as u32;
                let secs = 60 + r(7200, &mut rng) as u32;
                chain
                    .send(
                        tenant,
                        m.createOrder(next_id - 1, token, price, gpus, secs, 120),
                    )
                    .await
                    .map(drop)
            }
            4 | 5 => {
                let price = Uint::from(1 + r(3_000_000, &mut rng));
                chain
                    .send(provider, m.placeBid(id, price, Default::default()))
                    .await
                    .map(drop)
            }
            6 => {
                let from = if r(2, &mut rng) == 0 {
                    tenant
                } else {
                    tc.operator()
                };
                chain
                    .send(from, m.matchBid(id, U256::from(r(3, &mut rng))))
                    .await
                    .map(drop)
            }
            7 => chain.send(anyone, m.closeLease(id)).await.map(drop),
            8 => {
                let ids: Vec<u64> = (0..3).map(|_| 1 + r(next_id, &mut rng)).collect();
                chain
                    .send(tc.operator(), m.settleBatch(ids))
                    .await
                    .map(drop)
            }
            9 => chain.send(tenant, m.cancelOrder(id)).await.map(drop),
            10 => match r(3, &mut rng) {
                0 => chain
                    .send(provider, m.stake(amount % 20_000 + 1))
                    .await
                    .map(drop),
                1 => chain
                    .send(provider, m.requestUnstake(amount % 20_000 + 1))
                    .await
                    .map(drop),
                _ => chain.send(provider, m.withdrawUnstaked()).await.map(drop),
            },
            11 => chain
                .send(
                    tc.operator(),
                    m.slash(provider, amount % 30_000 + 1, anyone),
                )
                .await
                .map(drop),
            12 => {
                if r(2, &mut rng) == 0 {
                    chain
                        .send(tenant, m.transferBalance(token, anyone, U256::from(amount)))
                        .await
                        .map(drop)
                } else {
                    chain
                        .send(tc.admin(), m.withdrawFees(token, tc.admin()))
                        .await
                        .map(drop)
                }
            }
            _ => {
                now += 1 + r(3_000, &mut rng);
                common::at(tc, now).await;
                Ok(())
            }
        };
        match res {
            Ok(()) => ok += 1,
            // Refusals are expected; they must be named reverts, never transport failures.
            Err(e) => assert!(e.revert_name().is_some(), "seed {seed} step {step}: {e}"),
        }
        common::assert_solvent(tc, &everyone).await;
    }
    assert!(
        ok > STEPS / 4,
        "seed {seed}: only {ok} of {STEPS} steps succeeded"
    );
}
