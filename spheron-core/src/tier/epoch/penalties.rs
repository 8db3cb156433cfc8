//! Penalties: missed challenges and trusted reports, charged through the one penalty path
//! ([`apply_penalty`](crate::tier::apply_penalty)).

use super::*;

impl EpochProcessor {
    /// Records a challenge the provider did not answer in time: lowers its uptime (and
    /// applies whatever the policy charges for it).
    pub async fn record_missed_challenge(
        &self,
        at: Timestamp,
        provider: ProviderId,
    ) -> Result<PenaltyRecord> {
        let _ops = self.ops.lock().await;
        self.apply_violation(
            at,
            provider,
            Violation::MissedChallenge,
            None,
            "no answer in time".into(),
        )
        .await
    }

    /// Applies `violation` to `provider` as reported by a trusted party (no re-check):
    /// slashes the policy's share of its stake through the escrow (the bounty share to
    /// `reporter`, the rest to the treasury), demotes it, and bans it if the policy says so.
    pub async fn report_violation(
        &self,
        at: Timestamp,
        provider: ProviderId,
        violation: Violation,
        reporter: Option<AccountId>,
        reason: &str,
    ) -> Result<PenaltyRecord> {
        let _ops = self.ops.lock().await;
        if let Some(r) = reporter {
            self.lock().verifiers.known(r)?;
        }
        self.apply_violation(at, provider, violation, reporter, reason.to_string())
            .await
    }

    /// Applies a violation; the caller holds `ops`.
    pub(super) async fn apply_violation(
        &self,
        at: Timestamp,
        provider: ProviderId,
        violation: Violation,
        reporter: Option<AccountId>,
        reason: String,
    ) -> Result<PenaltyRecord> {
        self.provider(provider)?;
        let epoch = {
            let s = self.lock();
            self.open_epoch_of(&s, at)?
        };
        let Applied { record, failure } = apply_penalty(
            self.stake.as_ref(),
            &self.registry,
            self.policy.as_ref(),
            PenaltyRoute {
                treasury: self.config.treasury,
                bounty_bps: self.config.verifiers.bounty_bps,
            },
            Charge {
                at,
                provider,
                violation,
                reporter,
                reason,
            },
        )
        .await?;
        let (penalty, bounty) = (record.penalty, record.bounty);
        {
            let mut s = self.lock();
            let a = Self::activity(&mut s, epoch, provider);
            if violation == Violation::MissedChallenge {
                a.stats.challenges_missed += 1;
            } else {
                a.stats.challenges_failed += 1;
            }
            if penalty.demote_by > 0 || penalty.ban {
                s.books.entry(provider).or_default().history = TierHistory::default();
            }
            if let (Some(r), true) = (reporter, violation != Violation::MissedChallenge) {
                let va = Self::verifier_activity(&mut s, epoch, r);
                va.frauds_caught += 1;
                va.bounties = Amount(va.bounties.0.saturating_add(bounty.0));
                let rec = s.verifiers.records.entry(r).or_default();
                rec.frauds_caught += 1;
                rec.earned = Amount(rec.earned.0.saturating_add(bounty.0));
            }
            s.open
                .entry(epoch)
                .or_default()
                .penalties
                .push(record.clone());
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(record),
        }
    }
}
