//! Audit: verifier verdicts, sampled and confirming re-checks, verifier accuracy.

use super::*;

impl EpochProcessor {
    /// Registers a verifier (idempotent).
    pub fn add_verifier(&self, verifier: AccountId) {
        self.lock().verifiers.records.entry(verifier).or_default();
    }

    /// Verifiers, most accurate first.
    pub fn verifier_ranking(&self) -> Vec<VerifierStanding> {
        self.lock().verifiers.ranking()
    }

    /// Verdicts waiting for a re-check: (id, verifier, provider).
    pub fn pending_rechecks(&self) -> Vec<(VerdictId, AccountId, ProviderId)> {
        self.lock()
            .verifiers
            .pending
            .iter()
            .map(|(id, p)| (*id, p.verifier, p.provider))
            .collect()
    }

    /// Records `verifier`'s verdict on `provider`: `None` = passed, or the violation found.
    ///
    /// A pass counts for the provider at once; a missed challenge is applied at once; a
    /// failed or fraudulent proof waits for a second verifier's [`record_recheck`] before it
    /// costs the provider anything. Passing verdicts are re-checked by sample.
    ///
    /// [`record_recheck`]: EpochProcessor::record_recheck
    pub async fn record_verdict(
        &self,
        at: Timestamp,
        verifier: AccountId,
        provider: ProviderId,
        outcome: Option<Violation>,
    ) -> Result<VerdictReceipt> {
        let _ops = self.ops.lock().await;
        self.provider(provider)?;
        let (id, recheck, recheck_by) = {
            let mut s = self.lock();
            s.verifiers.known(verifier)?;
            let e = self.open_epoch_of(&s, at)?;
            let id = s.verifiers.next_id();
            let recheck = match outcome {
                None => s.verifiers.sampled(id),
                Some(Violation::MissedChallenge) => false,
                Some(_) => true,
            };
            if recheck {
                s.verifiers.pending.insert(
                    id,
                    Pending {
                        verifier,
                        provider,
                        outcome,
                        checks: Vec::new(),
                        epoch: e,
                    },
                );
            }
            s.verifiers.records.entry(verifier).or_default().verdicts += 1;
            Self::verifier_activity(&mut s, e, verifier).verdicts += 1;
            if outcome.is_none() {
                Self::activity(&mut s, e, provider)
                    .stats
                    .challenges_answered += 1;
            }
            let by = recheck
                .then(|| s.verifiers.checker_for(&[verifier]))
                .flatten();
            (id, recheck, by)
        };
        let penalty = match outcome {
            None => {
                self.registry
                    .update(provider, |p| p.stats.challenges_answered += 1)?;
                None
            }
            Some(Violation::MissedChallenge) => Some(
                self.apply_violation(
                    at,
                    provider,
                    Violation::MissedChallenge,
                    None,
                    format!("{} reported a missed challenge", verifier.short()),
                )
                .await?,
            ),
            Some(_) => None,
        };
        Ok(VerdictReceipt {
            id,
            recheck,
            recheck_by,
            penalty,
        })
    }

    /// Records a re-check of verdict `id` by another verifier: `None` = the proof holds, or
    /// the violation found (a re-check replays the transcript, so it cannot find a miss).
    ///
    /// Votes are counted until two agree (pass or fail): a re-check that agrees with the
    /// first verdict settles it; one that disagrees leaves a tie for a third verifier
    /// ([`RecheckOutcome::next_checker`]). When it settles, every verifier that voted with
    /// the majority gains accuracy and every one against it loses accuracy. A confirmed
    /// failure is applied to the provider (the most lenient classification of the majority)
    /// with the first verifier as the reporter (it earns the bounty); a failure the first
    /// verifier passed is applied with the first checker that found it as the reporter.
    pub async fn record_recheck(
        &self,
        at: Timestamp,
        id: VerdictId,
        checker: AccountId,
        outcome: Option<Violation>,
    ) -> Result<RecheckOutcome> {
        let _ops = self.ops.lock().await;
        if outcome == Some(Violation::MissedChallenge) {
            return Err(Error::invalid(
                "outcome",
                "a re-check replays the transcript; it cannot find a missed challenge",
            ));
        }
        let (pending, agreed, resolved, next_checker) = {
            let mut s = self.lock();
            let e = self.open_epoch_of(&s, at)?;
            s.verifiers.known(checker)?;
            let p = s.verifiers.pending.get(&id).cloned().ok_or_else(|| {
                Error::invalid(
                    "verdict",
                    format!("{id} is unknown, already settled, or was not sampled"),
                )
            })?;
            if p.voters().any(|v| v == checker) {
                return Err(Error::invalid(
                    "checker",
                    format!(
                        "{} already voted on {id}; pick another verifier",
                        checker.short()
                    ),
                ));
            }
            // The provider must still be registered.
            self.provider(p.provider)?;
            let agreed = p.outcome.is_some() == outcome.is_some();
            let mut p = p;
            p.checks.push((checker, outcome));
            s.verifiers.records.entry(checker).or_default().verdicts += 1;
            Self::verifier_activity(&mut s, e, checker).verdicts += 1;
            let votes: Vec<(AccountId, Option<Violation>)> =
                std::iter::once((p.verifier, p.outcome))
                    .chain(p.checks.iter().copied())
                    .collect();
            let fails = votes.iter().filter(|(_, o)| o.is_some()).count();
            let passes = votes.len() - fails;
            let resolved = if fails >= 2 {
                Some(false)
            } else if passes >= 2 {
                Some(true)
            } else {
                None
            };
            match resolved {
                None => {
                    let voted: Vec<AccountId> = p.voters().collect();
                    let next = s.verifiers.checker_for(&voted);
                    s.verifiers.pending.insert(id, p.clone());
                    (p, agreed, None, next)
                }
                Some(pass) => {
                    s.verifiers.pending.remove(&id);
                    for (v, o) in &votes {
                        let with_majority = o.is_none() == pass;
                        let rec = s.verifiers.records.entry(*v).or_default();
                        rec.rechecked += 1;
                        if with_majority {
                            rec.agreed += 1;
                        }
                        let va = Self::verifier_activity(&mut s, e, *v);
                        va.rechecked += 1;
                        if with_majority {
                            va.agreed += 1;
                        } else {
                            va.disagreed += 1;
                        }
                    }
                    if pass && p.outcome.is_some() {
                        // The first verifier failed a proof that holds: the provider did answer.
                        Self::activity(&mut s, e, p.provider)
                            .stats
                            .challenges_answered += 1;
                    }
                    (p, agreed, Some((pass, votes)), None)
                }
            }
        };
        let final_pass = resolved.as_ref().map(|(pass, _)| *pass);
        let penalty = match resolved {
            Some((false, votes)) => {
                let found = votes
                    .iter()
                    .filter_map(|(_, o)| *o)
                    .min()
                    .unwrap_or(Violation::FailedProof);
                let reporter = match pending.outcome {
                    Some(_) => pending.verifier,
                    None => pending
                        .checks
                        .iter()
                        .find(|(_, o)| o.is_some())
                        .map_or(checker, |(v, _)| *v),
                };
                let witnesses: Vec<String> = votes
                    .iter()
                    .filter(|(_, o)| o.is_some())
                    .map(|(v, _)| v.short())
                    .collect();
                Some(
                    self.apply_violation(
                        at,
                        pending.provider,
                        found,
                        Some(reporter),
                        format!("{found} found by {}", witnesses.join(" and ")),
                    )
                    .await?,
                )
            }
            Some((true, _)) if pending.outcome.is_some() => {
                self.registry
                    .update(pending.provider, |p| p.stats.challenges_answered += 1)?;
                None
            }
            _ => None,
        };
        Ok(RecheckOutcome {
            verdict: id,
            agreed,
            final_pass,
            next_checker,
            penalty,
        })
    }
}
