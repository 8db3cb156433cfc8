//! Bad input to the epoch processor gives typed errors, never panics, and changes nothing.
#![allow(clippy::unwrap_used, missing_docs)]

use spheron_core::{
    AccountId, Amount, CloseReason, EpochConfig, EpochProcessor, Error, Escrow, GeoPoint, GpuModel,
    Inventory, LeaseId, MemoryEscrow, OrderId, ProgressEvent, Provider, ProviderStats, Registry,
    ReputationTierPolicy, Step, TierConfig, Timestamp, Token, TrustTier, Verdict, VerifierConfig,
    Violation,
};
use std::sync::Arc;
use std::time::Duration;

const HOUR_MS: u64 = 3_600_000;

fn provider(label: &str) -> Provider {
    Provider {
        id: AccountId::from_label(label),
        name: label.into(),
        endpoint: format!("sim://{label}"),
        region: "eu-west".into(),
        location: GeoPoint { lat: 1.0, lon: 1.0 },
        inventory: Inventory::uniform(GpuModel::H100Sxm, 1, 8),
        stake: Amount(1_000),
        stats: ProviderStats::default(),
        tier: TrustTier(3),
        banned: false,
    }
}

async fn setup() -> (Arc<Registry>, Arc<MemoryEscrow>, EpochProcessor, AccountId) {
    let registry = Arc::new(Registry::new());
    let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
    let p = provider("known");
    escrow.deposit(p.id, p.stake).await.unwrap();
    escrow.stake(p.id, p.stake).await.unwrap();
    let id = p.id;
    registry.register(p);
    let config = EpochConfig {
        genesis: Timestamp(1_000),
        epoch_len: Duration::from_millis(HOUR_MS),
        ..EpochConfig::default()
    };
    let epochs = EpochProcessor::new(
        config,
        Arc::new(ReputationTierPolicy::default()),
        escrow.clone(),
        escrow.clone(),
        registry.clone(),
    )
    .unwrap();
    (registry, escrow, epochs, id)
}

fn settled(at: u64, lease: u64, provider: AccountId) -> ProgressEvent {
    ProgressEvent {
        at: Timestamp(at),
        order: OrderId(lease),
        step: Step::Settled {
            lease: LeaseId(lease),
            provider,
            gpu_seconds: 60,
            reason: CloseReason::Completed,
            paid: Amount(1),
            refunded: Amount(0),
        },
    }
}

#[tokio::test]
async fn feedback_outside_its_range_is_refused() {
    let (registry, _, epochs, id) = setup().await;
    epochs.ingest(&settled(2_000, 1, id)).unwrap();
    for bad in [0u8, 6, 255] {
        let e = epochs
            .record_feedback(Timestamp(3_000), LeaseId(1), bad)
            .unwrap_err();
        assert!(matches!(e, Error::FeedbackOutOfRange(r) if r == bad), "{e}");
        assert!(e.to_string().contains("outside 1..=5"), "{e}");
    }
    // Nothing was counted, so the lease can still be rated once.
    assert_eq!(registry.get(id).unwrap().stats.feedback_count, 0);
    epochs
        .record_feedback(Timestamp(3_000), LeaseId(1), 4)
        .unwrap();
    let again = epochs
        .record_feedback(Timestamp(3_000), LeaseId(1), 4)
        .unwrap_err();
    assert!(again.to_string().contains("already rated"), "{again}");
    let unknown = epochs
        .record_feedback(Timestamp(3_000), LeaseId(99), 4)
        .unwrap_err();
    assert!(
        matches!(unknown, Error::UnknownLease(LeaseId(99))),
        "{unknown}"
    );
    assert_eq!(registry.get(id).unwrap().stats.feedback_count, 1);
}

#[tokio::test]
async fn a_vouched_rating_may_arrive_before_the_settlement() {
    let (registry, _, epochs, id) = setup().await;
    let other = provider("other");
    let other_id = other.id;
    registry.register(other);
    let e = epochs
        .record_feedback_for(Timestamp(2_000), LeaseId(7), id, 9)
        .unwrap_err();
    assert!(matches!(e, Error::FeedbackOutOfRange(9)), "{e}");
    let e = epochs
        .record_feedback_for(Timestamp(2_000), LeaseId(7), AccountId::from_label("x"), 5)
        .unwrap_err();
    assert!(matches!(e, Error::UnknownProvider(_)), "{e}");
    epochs
        .record_feedback_for(Timestamp(2_000), LeaseId(7), id, 5)
        .unwrap();
    // The settlement still counts once; a settlement by another provider is refused.
    let e = epochs.ingest(&settled(2_100, 7, other_id)).unwrap_err();
    assert!(e.to_string().contains("not"), "{e}");
    epochs.ingest(&settled(2_100, 7, id)).unwrap();
    let e = epochs.ingest(&settled(2_200, 7, id)).unwrap_err();
    assert!(e.to_string().contains("already recorded"), "{e}");
    let e = epochs
        .record_feedback_for(Timestamp(2_300), LeaseId(7), other_id, 5)
        .unwrap_err();
    assert!(e.to_string().contains("was served by"), "{e}");
    let r = epochs.close_epoch(0).await.unwrap();
    let row = r.providers.iter().find(|p| p.provider == id).unwrap();
    assert_eq!(row.activity.feedback_count, 1);
    assert_eq!(row.activity.leases_completed, 1);
    assert_eq!(row.gpu_seconds, 60);
}

#[tokio::test]
async fn events_for_unknown_providers_are_refused() {
    let (registry, escrow, epochs, _) = setup().await;
    let stranger = AccountId::from_label("stranger");
    let is_unknown = |e: &Error| matches!(e, Error::UnknownProvider(p) if *p == stranger);
    let e = epochs.ingest(&settled(2_000, 1, stranger)).unwrap_err();
    assert!(is_unknown(&e), "{e}");
    let e = epochs
        .ingest(&ProgressEvent {
            at: Timestamp(2_000),
            order: OrderId(2),
            step: Step::Verified {
                provider: stranger,
                verdict: Verdict::Pass {
                    achieved_tflops: None,
                },
            },
        })
        .unwrap_err();
    assert!(is_unknown(&e), "{e}");
    let e = epochs
        .record_missed_challenge(Timestamp(2_000), stranger)
        .await
        .unwrap_err();
    assert!(is_unknown(&e), "{e}");
    let e = epochs
        .record_lease(
            Timestamp(2_000),
            LeaseId(3),
            stranger,
            GpuModel::T4,
            1,
            &CloseReason::Completed,
        )
        .unwrap_err();
    assert!(is_unknown(&e), "{e}");
    let v = AccountId::from_label("verifier");
    epochs.add_verifier(v);
    let e = epochs
        .record_verdict(Timestamp(2_000), v, stranger, Some(Violation::Fraud))
        .await
        .unwrap_err();
    assert!(is_unknown(&e), "{e}");
    // An unregistered verifier is named.
    let e = epochs
        .record_verdict(
            Timestamp(2_000),
            AccountId::from_label("nobody"),
            registry.all()[0].id,
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a registered verifier"), "{e}");
    assert!(escrow.totals().is_balanced());
    assert!(epochs.standing(stranger).is_err());
}

#[tokio::test]
async fn an_epoch_closed_twice_is_refused() {
    let (_, _, epochs, id) = setup().await;
    epochs.close_epoch(0).await.unwrap();
    let e = epochs.close_epoch(0).await.unwrap_err();
    assert!(matches!(e, Error::EpochClosed(0)), "{e}");
    // Epochs close in order.
    let e = epochs.close_epoch(5).await.unwrap_err();
    assert!(e.to_string().contains("epoch 1 is still open"), "{e}");
    // Late events for a closed epoch are refused too; the next epoch takes them.
    let e = epochs.ingest(&settled(2_000, 1, id)).unwrap_err();
    assert!(matches!(e, Error::EpochClosed(0)), "{e}");
    let e = epochs
        .record_missed_challenge(Timestamp(2_000), id)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::EpochClosed(0)), "{e}");
    epochs.ingest(&settled(1_000 + HOUR_MS, 1, id)).unwrap();
    // Before genesis.
    let e = epochs.ingest(&settled(999, 2, id)).unwrap_err();
    assert!(e.to_string().contains("before genesis"), "{e}");
    // The same lease twice.
    let e = epochs.ingest(&settled(1_000 + HOUR_MS, 1, id)).unwrap_err();
    assert!(e.to_string().contains("already recorded"), "{e}");
    // A genesis left far in the past is caught before paying thousands of epochs.
    let e = epochs
        .close_due(Timestamp(1_000 + 20_000 * HOUR_MS))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("`genesis`"), "{e}");
    assert_eq!(epochs.open_epoch(), 1);
    assert_eq!(
        epochs
            .close_due(Timestamp(1_000 + 3 * HOUR_MS))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn rechecks_are_validated() {
    let (registry, escrow, epochs, id) = setup().await;
    let (a, b) = (AccountId::from_label("a"), AccountId::from_label("b"));
    epochs.add_verifier(a);
    epochs.add_verifier(b);
    let r = epochs
        .record_verdict(Timestamp(2_000), a, id, Some(Violation::FailedProof))
        .await
        .unwrap();
    assert!(r.recheck);
    assert_eq!(r.recheck_by, Some(b));
    // Nothing lands before the re-check.
    assert_eq!(escrow.balance(id).await.unwrap().staked, Amount(1_000));
    let e = epochs
        .record_recheck(Timestamp(2_001), r.id, a, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already voted"), "{e}");
    let e = epochs
        .record_recheck(Timestamp(2_001), r.id, b, Some(Violation::MissedChallenge))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("`outcome`"), "{e}");
    let e = epochs
        .record_recheck(Timestamp(2_001), spheron_core::VerdictId(999), b, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("verdict-999"), "{e}");
    let out = epochs
        .record_recheck(Timestamp(2_001), r.id, b, Some(Violation::FailedProof))
        .await
        .unwrap();
    assert_eq!(out.final_pass, Some(false));
    let p = out.penalty.unwrap();
    assert_eq!(
        (p.slashed, p.bounty, p.reporter),
        (Amount(100), Amount(50), Some(a))
    );
    assert_eq!(registry.get(id).unwrap().tier, TrustTier(1));
    assert_eq!(escrow.balance(a).await.unwrap().available, Amount(50));
    // Settled: a second re-check is refused.
    let e = epochs
        .record_recheck(Timestamp(2_002), r.id, b, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already settled"), "{e}");
}

#[test]
fn bad_configs_are_named() {
    let registry = Arc::new(Registry::new());
    let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
    let mk = |c: EpochConfig| {
        EpochProcessor::new(
            c,
            Arc::new(ReputationTierPolicy::default()),
            escrow.clone(),
            escrow.clone(),
            registry.clone(),
        )
        .unwrap_err()
        .to_string()
    };
    let e = mk(EpochConfig {
        epoch_len: Duration::ZERO,
        ..EpochConfig::default()
    });
    assert!(e.contains("epoch_len"), "{e}");
    let e = mk(EpochConfig {
        window_epochs: 0,
        ..EpochConfig::default()
    });
    assert!(e.contains("window_epochs"), "{e}");
    let e = mk(EpochConfig {
        verifiers: VerifierConfig {
            bounty_bps: 10_001,
            ..VerifierConfig::default()
        },
        ..EpochConfig::default()
    });
    assert!(e.contains("bounty_bps"), "{e}");
    let mut t = TierConfig::STANDARD;
    t.rating_prior_centi = 600;
    let e = ReputationTierPolicy::new(t).unwrap_err().to_string();
    assert!(e.contains("rating_prior_centi"), "{e}");
}
