//! Many simulated epochs through the epoch processor: a steady provider climbs at the
//! hysteresis rate, a flaky one descends, a fraudulent one is slashed and banned, a lying
//! verifier loses rank; rewards and slashes conserve money.
#![allow(clippy::unwrap_used, missing_docs)]

use spheron_core::{
    AccountId, Amount, CloseReason, EpochConfig, EpochProcessor, Escrow, GeoPoint, GpuModel,
    Inventory, LeaseId, MemoryEscrow, Provider, ProviderStats, Registry, ReputationTierPolicy,
    Timestamp, Token, TrustTier, VerifierConfig, Violation,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const HOUR_MS: u64 = 3_600_000;

fn provider(label: &str, model: GpuModel, stake: u128, tier: u8) -> Provider {
    Provider {
        id: AccountId::from_label(label),
        name: label.into(),
        endpoint: format!("sim://{label}"),
        region: "eu-west".into(),
        location: GeoPoint {
            lat: 50.1,
            lon: 8.7,
        },
        inventory: Inventory::uniform(model, 1, 8),
        stake: Amount(stake),
        stats: ProviderStats::default(),
        tier: TrustTier(tier),
        banned: false,
    }
}

struct World {
    registry: Arc<Registry>,
    escrow: Arc<MemoryEscrow>,
    epochs: EpochProcessor,
    treasury: AccountId,
}

async fn world(providers: Vec<Provider>, config: EpochConfig, treasury_funds: u128) -> World {
    let registry = Arc::new(Registry::new());
    let escrow = Arc::new(MemoryEscrow::new(Token::usd()));
    for p in providers {
        if p.stake.0 > 0 {
            escrow.deposit(p.id, p.stake).await.unwrap();
            escrow.stake(p.id, p.stake).await.unwrap();
        }
        registry.register(p);
    }
    let treasury = config.treasury;
    if treasury_funds > 0 {
        escrow
            .deposit(treasury, Amount(treasury_funds))
            .await
            .unwrap();
    }
    let epochs = EpochProcessor::new(
        config,
        Arc::new(ReputationTierPolicy::default()),
        escrow.clone(),
        escrow.clone(),
        registry.clone(),
    )
    .unwrap();
    World {
        registry,
        escrow,
        epochs,
        treasury,
    }
}

/// A verifier that answers truthfully, or inverts every answer.
fn vote(liar: bool, truth: Option<Violation>) -> Option<Violation> {
    match (liar, truth) {
        (false, t) => t,
        (true, None) => Some(Violation::Fraud),
        (true, Some(_)) => None,
    }
}

#[tokio::test]
async fn many_epochs_sort_providers_and_verifiers() {
    let provider_pool = 1_000_003u128; // odd on purpose: rounding remainders appear
    let verifier_pool = 100_001u128;
    let config = EpochConfig {
        epoch_len: Duration::from_millis(HOUR_MS),
        provider_pool: Amount(provider_pool),
        verifier_pool: Amount(verifier_pool),
        verifiers: VerifierConfig {
            sample_bps: 2_000,
            seed: 7,
            ..VerifierConfig::default()
        },
        ..EpochConfig::default()
    };
    let steady = provider("steady", GpuModel::H100Sxm, 10_000, 0);
    let flaky = provider("flaky", GpuModel::L40S, 10_000, 7);
    let cheat = provider("cheat", GpuModel::H100Sxm, 1_000, 4);
    let (s_id, f_id, c_id) = (steady.id, flaky.id, cheat.id);
    let w = world(vec![steady, flaky, cheat], config, 10u128.pow(12)).await;
    let honest = [
        AccountId::from_label("slark-a"),
        AccountId::from_label("slark-b"),
        AccountId::from_label("slark-c"),
    ];
    let liar = AccountId::from_label("slark-liar");
    for v in honest.iter().chain([&liar]) {
        w.epochs.add_verifier(*v);
    }
    let liars: BTreeMap<AccountId, bool> = honest
        .iter()
        .map(|v| (*v, false))
        .chain([(liar, true)])
        .collect();
    let treasury_start = w.escrow.balance(w.treasury).await.unwrap().available;

    let epochs = 24u64;
    let mut lease = 0u64;
    let mut reports = Vec::new();
    for e in 0..epochs {
        let base = e * HOUR_MS;
        let mut t = base;
        let mut tick = || {
            t += 1_000;
            Timestamp(t)
        };
        // Challenges: each verifier in turn judges each provider.
        for i in 0..20u64 {
            let verifier = if i % 4 == 3 {
                liar
            } else {
                honest[(i % 3) as usize]
            };
            for (provider, truth) in [
                (s_id, None),
                (
                    f_id,
                    // The flaky provider misses one challenge in ten.
                    if i % 10 == 0 {
                        Some(Violation::MissedChallenge)
                    } else {
                        None
                    },
                ),
                (
                    c_id,
                    // The cheat forges proofs in epochs 2 and 5.
                    if (e == 2 || e == 5) && i == 0 {
                        Some(Violation::Fraud)
                    } else {
                        None
                    },
                ),
            ] {
                if w.registry.get(provider).unwrap().banned {
                    continue;
                }
                let at = tick();
                // A miss is observed by the honest verifier, never by the liar.
                let (verifier, said) = match truth {
                    Some(Violation::MissedChallenge) => (honest[0], truth),
                    _ => (verifier, vote(liars[&verifier], truth)),
                };
                let receipt = w
                    .epochs
                    .record_verdict(at, verifier, provider, said)
                    .await
                    .unwrap();
                if !receipt.recheck {
                    continue;
                }
                let mut checker = receipt.recheck_by;
                while let Some(c) = checker {
                    let out = w
                        .epochs
                        .record_recheck(tick(), receipt.id, c, vote(liars[&c], truth))
                        .await
                        .unwrap();
                    if out.final_pass.is_some() {
                        assert_eq!(out.final_pass, Some(truth.is_none()), "majority is right");
                        break;
                    }
                    checker = out.next_checker;
                }
            }
        }
        // Work: each provider not banned serves an hour on 8 GPUs; the flaky one fails one
        // lease in four; tenants rate.
        for (provider, model, fails) in [
            (s_id, GpuModel::H100Sxm, false),
            (f_id, GpuModel::L40S, e % 4 == 0),
            (c_id, GpuModel::H100Sxm, false),
        ] {
            if w.registry.get(provider).unwrap().banned {
                continue;
            }
            lease += 1;
            let reason = if fails {
                CloseReason::ProviderFailed {
                    detail: "node lost".into(),
                }
            } else {
                CloseReason::Completed
            };
            w.epochs
                .record_lease(tick(), LeaseId(lease), provider, model, 8 * 3_600, &reason)
                .unwrap();
            let rating = if provider == f_id { 3 } else { 5 };
            w.epochs
                .record_feedback(tick(), LeaseId(lease), rating)
                .unwrap();
        }
        let report = w.epochs.close_epoch(e).await.unwrap();
        assert_eq!(report.epoch, e);

        // The steady provider climbs exactly one tier per three epochs.
        let steady_tier = w.registry.get(s_id).unwrap().tier;
        assert_eq!(
            steady_tier,
            TrustTier((((e + 1) / 3) as u8).min(7)),
            "epoch {e}: {}",
            w.epochs.standing(s_id).unwrap().reason
        );
        reports.push(report);
    }

    // The flaky provider (about 90% uptime, 75% completion) descended from tier 7.
    let flaky = w.registry.get(f_id).unwrap();
    assert!(flaky.tier <= TrustTier(1), "flaky at {}", flaky.tier);
    let first_drop = reports
        .iter()
        .position(|r| {
            r.providers
                .iter()
                .any(|p| p.provider == f_id && p.decision.tier < TrustTier(7))
        })
        .unwrap();
    assert_eq!(first_drop, 1, "drops after two worse epochs");

    // The cheat: slashed 50% at its first confirmed fraud and sent to tier 0, banned at the
    // second; half of each slash went to the verifier that caught it.
    let cheat = w.registry.get(c_id).unwrap();
    assert!(cheat.banned);
    assert_eq!(cheat.tier, TrustTier(0));
    assert_eq!(w.escrow.balance(c_id).await.unwrap().staked, Amount(250));
    let penalties: Vec<_> = reports
        .iter()
        .flat_map(|r| r.penalties.iter())
        .filter(|p| p.provider == c_id)
        .collect();
    assert_eq!(penalties.len(), 2);
    assert_eq!(
        (
            penalties[0].slashed,
            penalties[0].bounty,
            penalties[0].banned
        ),
        (Amount(500), Amount(250), false)
    );
    assert_eq!(
        (
            penalties[1].slashed,
            penalties[1].bounty,
            penalties[1].banned
        ),
        (Amount(250), Amount(125), true)
    );
    for p in &penalties {
        assert!(
            honest.contains(&p.reporter.unwrap()),
            "the honest verifier caught it"
        );
    }
    // Banned: no reward after the ban.
    for r in &reports[6..] {
        let c = r.providers.iter().find(|p| p.provider == c_id).unwrap();
        assert_eq!(c.reward, Amount::ZERO);
    }

    // The steady provider never lost anything to the liar's accusations.
    assert_eq!(w.escrow.balance(s_id).await.unwrap().staked, Amount(10_000));
    assert!(!w.registry.get(s_id).unwrap().banned);

    // The lying verifier ranks last and ends up unpaid; honest verifiers are paid.
    let ranking = w.epochs.verifier_ranking();
    assert_eq!(ranking.last().unwrap().verifier, liar);
    assert!(ranking.last().unwrap().accuracy_bps < 5_000);
    for s in &ranking[..3] {
        assert!(s.accuracy_bps > 9_000, "{s:?}");
        assert!(s.earned > Amount::ZERO);
    }
    let last = reports.last().unwrap();
    let liar_row = last.verifiers.iter().find(|v| v.verifier == liar).unwrap();
    assert_eq!(liar_row.reward, Amount::ZERO);
    assert!(liar_row.disagreed > 0);

    // Reward per GPU-hour follows tier and class: in the last epoch the steady UltraHigh
    // tier-7 provider earns more than the flaky Medium one for the same GPU-seconds.
    let reward = |id| {
        last.providers
            .iter()
            .find(|p| p.provider == id)
            .unwrap()
            .reward
    };
    assert!(reward(s_id) > reward(f_id));

    // No rounding leak: every unit emitted was paid or is carried.
    let paid: u128 = reports
        .iter()
        .map(|r| r.provider_paid.0 + r.verifier_paid.0)
        .sum();
    let (carry_p, carry_v) = w.epochs.carried();
    assert_eq!(
        paid + carry_p.0 + carry_v.0,
        u128::from(epochs) * (provider_pool + verifier_pool)
    );
    assert!(reports.iter().any(|r| r.carried > Amount::ZERO));
    let bounties: u128 = penalties.iter().map(|p| p.slashed.0).sum();
    let treasury_end = w.escrow.balance(w.treasury).await.unwrap().available;
    // The treasury paid the rewards and received the non-bounty part of the slashes.
    assert_eq!(
        treasury_end.0,
        treasury_start.0 - paid + (bounties - 250 - 125)
    );
    assert!(w.escrow.totals().is_balanced());
}

#[tokio::test]
async fn orchestrator_events_feed_the_processor() {
    use spheron_core::{OrderId, ProgressEvent, Step, Verdict};
    let config = EpochConfig {
        epoch_len: Duration::from_millis(HOUR_MS),
        provider_pool: Amount(1_000),
        ..EpochConfig::default()
    };
    let a = provider("a", GpuModel::H100Sxm, 0, 4);
    let b = provider("b", GpuModel::T4, 0, 4);
    let (a_id, b_id) = (a.id, b.id);
    let w = world(vec![a, b], config, 1_000_000).await;
    let ev = |at: u64, order: u64, step: Step| ProgressEvent {
        at: Timestamp(at),
        order: OrderId(order),
        step,
    };
    let events = vec![
        ev(
            10,
            1,
            Step::Verifying {
                provider: a_id,
                claimed: GpuModel::H100Sxm,
            },
        ),
        ev(
            11,
            1,
            Step::Verified {
                provider: a_id,
                verdict: Verdict::Pass {
                    achieved_tflops: None,
                },
            },
        ),
        ev(
            20,
            2,
            Step::Verifying {
                provider: b_id,
                claimed: GpuModel::T4,
            },
        ),
        ev(
            21,
            2,
            Step::Verified {
                provider: b_id,
                verdict: Verdict::Pass {
                    achieved_tflops: None,
                },
            },
        ),
        ev(
            5_000,
            1,
            Step::Settled {
                lease: LeaseId(1),
                provider: a_id,
                gpu_seconds: 3_600,
                reason: CloseReason::Completed,
                paid: Amount(10),
                refunded: Amount(0),
            },
        ),
        ev(
            6_000,
            2,
            Step::Settled {
                lease: LeaseId(2),
                provider: b_id,
                gpu_seconds: 3_600,
                reason: CloseReason::Completed,
                paid: Amount(10),
                refunded: Amount(0),
            },
        ),
    ];
    let stream = futures::stream::iter(events);
    let clock: Arc<dyn spheron_core::Clock> =
        Arc::new(spheron_core::SimClock::new(Timestamp(60_000)));
    // The stream ends, so `run` returns after closing whatever is due (nothing yet).
    w.epochs.run(stream, clock).await;
    assert_eq!(w.epochs.open_epoch(), 0);
    w.epochs
        .record_feedback(Timestamp(7_000), LeaseId(1), 5)
        .unwrap();
    // Not due before the grace period after the epoch's end has passed.
    assert!(
        w.epochs
            .close_due(Timestamp(HOUR_MS + 4_999))
            .await
            .unwrap()
            .is_empty()
    );
    let mut closed = w
        .epochs
        .close_due(Timestamp(HOUR_MS + 5_000))
        .await
        .unwrap();
    assert_eq!(closed.len(), 1);
    let r = closed.remove(0);
    let row = |id| {
        r.providers
            .iter()
            .find(|p| p.provider == id)
            .unwrap()
            .clone()
    };
    // Same GPU-seconds and tier; the H100 (UltraHigh, 1.5x) earns 1.5 times the T4 (Entry).
    assert_eq!(row(a_id).weight, 3_600 * 15_000);
    assert_eq!(row(b_id).weight, 3_600 * 10_000);
    assert_eq!(row(a_id).reward, Amount(600));
    assert_eq!(row(b_id).reward, Amount(400));
    assert_eq!(row(a_id).activity.challenges_answered, 1);
    assert_eq!(row(a_id).activity.feedback_count, 1);
    // Orchestrator events leave the registry's lifetime stats to the orchestrator; feedback
    // is recorded by the processor.
    let reg = w.registry.get(a_id).unwrap().stats;
    assert_eq!((reg.challenges_answered, reg.feedback_count), (0, 1));
}
