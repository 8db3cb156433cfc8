//! The escrow conformance suite against the in-memory ledger (the EVM escrow runs the same
//! functions in spheron-chain's tests).
#![allow(clippy::unwrap_used, missing_docs)]

use spheron_core::conformance::{self, Accounts};
use spheron_core::{Escrow, MemoryEscrow, Token};
use std::sync::Arc;

async fn fresh() -> Arc<dyn Escrow> {
    Arc::new(MemoryEscrow::new(Token::sphn()))
}

#[tokio::test]
async fn memory_escrow_passes_the_suite() {
    conformance::run_all(fresh, &Accounts::labelled(), true).await;
}

#[tokio::test]
async fn memory_escrow_refuses_balance_overflow() {
    conformance::balance_overflow_is_refused(
        &MemoryEscrow::new(Token::usd()),
        &Accounts::labelled(),
    )
    .await;
}

#[tokio::test]
async fn memory_transcripts_are_deterministic_and_conserve_funds() {
    let a = Accounts::labelled();
    let e1 = MemoryEscrow::new(Token::sphn());
    let t1 = conformance::transcript(&e1, &a, 7, 300).await;
    let e2 = MemoryEscrow::new(Token::sphn());
    let t2 = conformance::transcript(&e2, &a, 7, 300).await;
    assert_eq!(t1, t2);
    assert!(e1.totals().is_balanced());
    // The sequence exercises successes and failures of every kind of step.
    assert!(t1.iter().any(|l| l.contains("Settlement")));
    assert!(t1.iter().any(|l| l.contains("error InsufficientFunds")));
}
