//! Property tests of tiers, rewards and slashes.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use spheron_core::tier::{mul_div_floor_wide, split_pool};
use spheron_core::{
    AccountId, Amount, CloseReason, EpochConfig, EpochProcessor, Escrow, GeoPoint, GpuModel,
    Inventory, LeaseId, MemoryEscrow, Penalty, Provider, ProviderStats, Registry,
    ReputationTierPolicy, TierHistory, TierPolicy, Timestamp, Token, TrustTier, UptimeTierPolicy,
    Violation,
};
use std::sync::Arc;
use std::time::Duration;

fn stats() -> impl Strategy<Value = ProviderStats> {
    (
        0u64..2_000,
        0u64..200,
        0u64..200,
        0u64..100,
        0u64..30,
        0u64..50,
    )
        .prop_flat_map(|(answered, missed, failed, completed, lfailed, count)| {
            (count..=count * 5).prop_map(move |sum| ProviderStats {
                challenges_answered: answered,
                challenges_missed: missed,
                challenges_failed: failed,
                leases_completed: completed,
                leases_failed: lfailed,
                feedback_sum: sum,
                feedback_count: count,
            })
        })
}

/// Ways to make statistics worse.
#[derive(Clone, Debug)]
struct Worse {
    add_missed: u64,
    answered_to_missed: u64,
    answered_to_failed: u64,
    completed_to_failed: u64,
    add_failed_leases: u64,
    lower_feedback: u64,
    add_one_star: u64,
}

fn worse() -> impl Strategy<Value = Worse> {
    (
        0u64..50,
        0u64..50,
        0u64..50,
        0u64..20,
        0u64..10,
        0u64..40,
        0u64..10,
    )
        .prop_map(|(a, b, c, d, e, f, g)| Worse {
            add_missed: a,
            answered_to_missed: b,
            answered_to_failed: c,
            completed_to_failed: d,
            add_failed_leases: e,
            lower_feedback: f,
            add_one_star: g,
        })
}

fn apply(s: &ProviderStats, w: &Worse) -> ProviderStats {
    let mut t = s.clone();
    t.challenges_missed += w.add_missed;
    let m = w.answered_to_missed.min(t.challenges_answered);
    t.challenges_answered -= m;
    t.challenges_missed += m;
    let f = w.answered_to_failed.min(t.challenges_answered);
    t.challenges_answered -= f;
    t.challenges_failed += f;
    let l = w.completed_to_failed.min(t.leases_completed);
    t.leases_completed -= l;
    t.leases_failed += l + w.add_failed_leases;
    // Lower ratings, never below one star each.
    let floor = t.feedback_count;
    t.feedback_sum = t.feedback_sum.saturating_sub(w.lower_feedback).max(floor);
    t.feedback_count += w.add_one_star;
    t.feedback_sum += w.add_one_star;
    t
}

proptest! {
    #[test]
    fn worse_stats_never_raise_a_tier(
        s in stats(),
        w in worse(),
        current in 0u8..=7,
        above in 0u32..4,
        below in 0u32..3,
    ) {
        let worse = apply(&s, &w);
        let history = TierHistory { above, below };
        let policies: [&dyn TierPolicy; 2] = [&ReputationTierPolicy::default(), &UptimeTierPolicy];
        for p in policies {
            let good = p.evaluate(TrustTier(current), &s, &history);
            let bad = p.evaluate(TrustTier(current), &worse, &history);
            prop_assert!(bad.target <= good.target, "{} vs {}", bad.reason, good.reason);
            prop_assert!(bad.tier <= good.tier, "{} vs {}", bad.reason, good.reason);
            // Hysteresis moves at most one tier up, and never up without a better target.
            prop_assert!(good.tier.0 <= current + 1);
            if good.tier.0 > current {
                prop_assert!(good.target.0 > current);
            }
        }
    }

    #[test]
    fn payouts_sum_exactly_to_the_pool(
        pool in any::<u128>(),
        weights in prop::collection::vec(0u128..=u128::from(u64::MAX) << 32, 0..40),
    ) {
        let accounts: Vec<(AccountId, u128)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (AccountId::from_label(&format!("p{i}")), *w))
            .collect();
        let split = split_pool(Amount(pool), &accounts).unwrap();
        let sum: u128 = split.payouts.iter().map(|(_, a)| a.0).sum();
        prop_assert_eq!(sum, split.paid.0);
        prop_assert_eq!(split.paid.0 + split.carried.0, pool);
        let total: u128 = weights.iter().sum();
        if total > 0 {
            // Each share is the floor of the exact share, so less than one unit is lost per
            // payee; the loss is carried, never created.
            prop_assert!(split.carried.0 < split.payouts.len().max(1) as u128);
            for (account, share) in &split.payouts {
                let w = accounts.iter().find(|(a, _)| a == account).unwrap().1;
                prop_assert_eq!(Some(share.0), mul_div_floor_wide(pool, w, total));
            }
        } else {
            prop_assert_eq!(split.carried.0, pool);
        }
    }

    #[test]
    fn slash_amount_never_exceeds_stake(stake in any::<u128>(), bps in any::<u32>()) {
        let p = Penalty { slash_bps: bps, demote_by: 0, ban: false };
        let a = p.slash_amount(Amount(stake));
        prop_assert!(a.0 <= stake);
        if bps >= 10_000 {
            prop_assert_eq!(a.0, stake);
        }
    }
}

fn provider(label: &str, stake: u128) -> Provider {
    Provider {
        id: AccountId::from_label(label),
        name: label.into(),
        endpoint: format!("sim://{label}"),
        region: "eu-west".into(),
        location: GeoPoint { lat: 1.0, lon: 1.0 },
        inventory: Inventory::uniform(GpuModel::A100_80G, 1, 8),
        stake: Amount(stake),
        stats: ProviderStats::default(),
        tier: TrustTier(5),
        banned: false,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any sequence of violations, with or without a reporting verifier: the total slashed
    /// never exceeds the stake, the escrow and registry agree, and the ledger balances.
    #[test]
    fn slashes_never_exceed_stake_through_the_escrow(
        stake in 0u128..1_000_000_000,
        seq in prop::collection::vec((0u8..3, any::<bool>()), 1..12),
    ) {
        runtime().block_on(async {
            let registry = Arc::new(Registry::new());
            let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
            let p = provider("p", stake);
            let id = p.id;
            if stake > 0 {
                escrow.deposit(id, Amount(stake)).await.unwrap();
                escrow.stake(id, Amount(stake)).await.unwrap();
            }
            registry.register(p);
            let epochs = EpochProcessor::new(
                EpochConfig::default(),
                Arc::new(ReputationTierPolicy::default()),
                escrow.clone(),
                escrow.clone(),
                registry.clone(),
            )
            .unwrap();
            let verifier = AccountId::from_label("v");
            epochs.add_verifier(verifier);
            let mut slashed = 0u128;
            for (i, (kind, reported)) in seq.iter().enumerate() {
                let v = match kind {
                    0 => Violation::MissedChallenge,
                    1 => Violation::FailedProof,
                    _ => Violation::Fraud,
                };
                let r = epochs
                    .report_violation(Timestamp(i as u64), id, v, reported.then_some(verifier), "test")
                    .await
                    .unwrap();
                prop_assert!(r.bounty <= r.slashed);
                slashed += r.slashed.0;
            }
            prop_assert!(slashed <= stake);
            let left = escrow.balance(id).await.unwrap().staked.0;
            prop_assert_eq!(left, stake - slashed);
            prop_assert_eq!(registry.get(id).unwrap().stake.0, left);
            prop_assert!(escrow.totals().is_balanced());
            Ok(())
        })?;
    }

    /// Over many epochs with random work, everything emitted is paid or carried.
    #[test]
    fn rewards_over_epochs_neither_leak_nor_overpay(
        pool in 0u128..10_000_000,
        work in prop::collection::vec(prop::collection::vec(0u64..100_000, 3), 1..8),
    ) {
        runtime().block_on(async {
            let registry = Arc::new(Registry::new());
            let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
            let ids: Vec<AccountId> = (0..3)
                .map(|i| {
                    let p = provider(&format!("p{i}"), 0);
                    let id = p.id;
                    registry.register(p);
                    id
                })
                .collect();
            let config = EpochConfig {
                epoch_len: Duration::from_secs(3_600),
                provider_pool: Amount(pool),
                ..EpochConfig::default()
            };
            let treasury = config.treasury;
            let funds = pool * work.len() as u128 + 1;
            escrow.deposit(treasury, Amount(funds)).await.unwrap();
            let epochs = EpochProcessor::new(
                config,
                Arc::new(ReputationTierPolicy::default()),
                escrow.clone(),
                escrow.clone(),
                registry.clone(),
            )
            .unwrap();
            let mut lease = 0;
            let mut paid = 0u128;
            for (e, secs) in work.iter().enumerate() {
                let at = Timestamp(e as u64 * 3_600_000 + 10);
                for (id, s) in ids.iter().zip(secs) {
                    lease += 1;
                    epochs
                        .record_lease(at, LeaseId(lease), *id, GpuModel::A100_80G, *s, &CloseReason::Completed)
                        .unwrap();
                }
                let r = epochs.close_epoch(e as u64).await.unwrap();
                let sum: u128 = r.providers.iter().map(|p| p.reward.0).sum();
                prop_assert_eq!(sum, r.provider_paid.0);
                prop_assert_eq!(r.provider_paid.0 + r.carried.0, r.provider_pool.0);
                paid += r.provider_paid.0;
            }
            let (carry, _) = epochs.carried();
            prop_assert_eq!(paid + carry.0, pool * work.len() as u128);
            let treasury_left = escrow.balance(treasury).await.unwrap().available.0;
            prop_assert_eq!(treasury_left, funds - paid);
            let received: u128 = {
                let mut r = 0;
                for id in &ids {
                    r += escrow.balance(*id).await.unwrap().available.0;
                }
                r
            };
            prop_assert_eq!(received, paid);
            prop_assert!(escrow.totals().is_balanced());
            Ok(())
        })?;
    }
}
