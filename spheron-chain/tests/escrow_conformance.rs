//! The escrow conformance suite (spheron_core::conformance) against the contract on anvil.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use spheron_chain::MarketConfig;
use spheron_core::conformance;
use spheron_core::{Escrow, MemoryEscrow, Token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evm_escrow_passes_the_suite() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let a = common::accounts(&tc);
    conformance::run_all(|| common::fresh_sphn_escrow(&tc), &a, true).await;
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
async fn evm_and_memory_escrows_agree_to_the_last_base_unit() {
    let Some(tc) = common::chain(&MarketConfig::default()).await else {
        return;
    };
    let a = common::accounts(&tc);
    for seed in [1u64, 2] {
        let evm = common::fresh_sphn_escrow(&tc).await;
        let mem = MemoryEscrow::new(Token::sphn());
        let t_evm = conformance::transcript(&*evm, &a, seed, 120).await;
        let t_mem = conformance::transcript(&mem as &dyn Escrow, &a, seed, 120).await;
        for (x, y) in t_evm.iter().zip(&t_mem) {
            assert_eq!(x, y, "seed {seed}: EVM and memory escrows diverge");
        }
        assert_eq!(t_evm.len(), t_mem.len());
        assert!(mem.totals().is_balanced());
    }
}
