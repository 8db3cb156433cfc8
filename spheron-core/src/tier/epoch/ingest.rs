//! Ingest: the rent flow's progress events, recorded leases and tenant feedback.

use super::*;

impl EpochProcessor {
    /// Feeds one progress event of the orchestrator (`Orchestrator::subscribe`):
    /// `Verified` counts a passed challenge, `ChallengeFailed` a failed one (the orchestrator
    /// has already slashed and demoted; the penalty is recorded and the climb restarts),
    /// `Settled` a finished lease with its GPU-seconds. Other steps only help attribute
    /// GPU-seconds to a hardware class.
    ///
    /// Errors: [`Error::UnknownProvider`] for a provider the registry does not know,
    /// [`Error::EpochClosed`] for an event in a closed epoch.
    pub fn ingest(&self, event: &ProgressEvent) -> Result<()> {
        let at = event.at;
        match &event.step {
            Step::Verifying { provider, claimed } => {
                self.provider(*provider)?;
                let mut s = self.lock();
                let epoch = self.epoch_of(at)?.max(s.next);
                s.order_models.insert(
                    event.order,
                    OrderModel {
                        model: *claimed,
                        epoch,
                        running: false,
                    },
                );
                Ok(())
            }
            Step::Running { .. } => {
                if let Some(m) = self.lock().order_models.get_mut(&event.order) {
                    m.running = true;
                }
                Ok(())
            }
            Step::Verified { provider, .. } => {
                self.provider(*provider)?;
                let mut s = self.lock();
                let e = self.open_epoch_of(&s, at)?;
                let a = Self::activity(&mut s, e, *provider);
                a.stats.challenges_answered += 1;
                Ok(())
            }
            Step::ChallengeFailed {
                provider,
                reason,
                slashed,
                penalty,
            } => {
                self.provider(*provider)?;
                let mut s = self.lock();
                let e = self.open_epoch_of(&s, at)?;
                // The flow's own record of what it applied: never relabelled or recomputed.
                let violation = penalty.as_ref().map(|p| p.violation);
                let stats = &mut Self::activity(&mut s, e, *provider).stats;
                if violation == Some(Violation::MissedChallenge) {
                    stats.challenges_missed += 1;
                } else {
                    stats.challenges_failed += 1;
                }
                let reset = penalty
                    .as_ref()
                    .is_none_or(|p| p.penalty.demote_by > 0 || p.penalty.ban);
                if reset {
                    s.books.entry(*provider).or_default().history = TierHistory::default();
                }
                match penalty {
                    Some(record) => s.open.entry(e).or_default().penalties.push(PenaltyRecord {
                        slashed: *slashed,
                        reason: reason.clone(),
                        ..(**record).clone()
                    }),
                    None => tracing::debug!(
                        provider = %provider.short(),
                        "challenge failed with no penalty applied by the flow"
                    ),
                }
                Ok(())
            }
            Step::Settled {
                lease,
                provider,
                gpu_seconds,
                reason,
                ..
            } => {
                let p = self.provider(*provider)?;
                let class = {
                    let mut s = self.lock();
                    self.open_epoch_of(&s, at)?;
                    s.order_models.remove(&event.order).map(|m| m.model.class())
                }
                .unwrap_or_else(|| best_class(&p));
                self.record_lease_inner(at, *lease, *provider, class, *gpu_seconds, reason, false)
            }
            Step::NoMatch { .. } => {
                self.lock().order_models.remove(&event.order);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records a finished lease served with `model` (for callers that do not feed
    /// orchestrator events): its GPU-seconds earn rewards, and it counts as completed or
    /// failed by `reason`. Also updates the registry's statistics.
    pub fn record_lease(
        &self,
        at: Timestamp,
        lease: LeaseId,
        provider: ProviderId,
        model: GpuModel,
        gpu_seconds: u64,
        reason: &CloseReason,
    ) -> Result<()> {
        self.provider(provider)?;
        self.record_lease_inner(
            at,
            lease,
            provider,
            model.class(),
            gpu_seconds,
            reason,
            true,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record_lease_inner(
        &self,
        at: Timestamp,
        lease: LeaseId,
        provider: ProviderId,
        class: HardwareClass,
        gpu_seconds: u64,
        reason: &CloseReason,
        update_registry: bool,
    ) -> Result<()> {
        let fault = reason.is_provider_fault();
        {
            let mut s = self.lock();
            let e = self.open_epoch_of(&s, at)?;
            match s.leases.get_mut(&lease) {
                Some(r) if r.settled => {
                    return Err(Error::invalid(
                        "lease",
                        format!("{lease} was already recorded"),
                    ));
                }
                Some(r) if r.provider != provider => {
                    return Err(Error::invalid(
                        "lease",
                        format!(
                            "{lease} was rated as served by {}, not {}",
                            r.provider.short(),
                            provider.short()
                        ),
                    ));
                }
                Some(r) => {
                    r.settled = true;
                    r.epoch = e;
                }
                None => {
                    s.leases.insert(
                        lease,
                        LeaseRecord {
                            provider,
                            settled: true,
                            rated: false,
                            epoch: e,
                        },
                    );
                }
            }
            let a = Self::activity(&mut s, e, provider);
            if fault {
                a.stats.leases_failed += 1;
            } else {
                a.stats.leases_completed += 1;
            }
            let secs = a.gpu_seconds.entry(class).or_default();
            *secs = secs.saturating_add(gpu_seconds);
        }
        if update_registry {
            self.registry.update(provider, |p| {
                if fault {
                    p.stats.leases_failed += 1;
                } else {
                    p.stats.leases_completed += 1;
                }
            })?;
        }
        Ok(())
    }

    /// Records the tenant's rating (1..=5) of a lease recorded here (by a `Settled` event or
    /// [`record_lease`](Self::record_lease)); each lease is rated once.
    ///
    /// Errors: [`Error::FeedbackOutOfRange`], [`Error::UnknownLease`] for a lease not
    /// recorded here, [`Error::InvalidField`] for a second rating, [`Error::EpochClosed`].
    pub fn record_feedback(&self, at: Timestamp, lease: LeaseId, rating: u8) -> Result<()> {
        self.feedback(at, lease, None, rating)
    }

    /// Records the tenant's rating of `lease` served by `provider`, also before the lease's
    /// `Settled` event has arrived (a tenant may rate as soon as `wait()` returns, while the
    /// event is still on its way). The marketplace vouches that `provider` served `lease`.
    ///
    /// Errors: as [`record_feedback`](Self::record_feedback), plus
    /// [`Error::UnknownProvider`], and [`Error::InvalidField`] when the lease was recorded
    /// for another provider.
    pub fn record_feedback_for(
        &self,
        at: Timestamp,
        lease: LeaseId,
        provider: ProviderId,
        rating: u8,
    ) -> Result<()> {
        self.feedback(at, lease, Some(provider), rating)
    }

    fn feedback(
        &self,
        at: Timestamp,
        lease: LeaseId,
        vouched: Option<ProviderId>,
        rating: u8,
    ) -> Result<()> {
        if !(1..=5).contains(&rating) {
            return Err(Error::FeedbackOutOfRange(rating));
        }
        if let Some(p) = vouched {
            self.provider(p)?;
        }
        let provider = {
            let mut s = self.lock();
            let e = self.open_epoch_of(&s, at)?;
            let rec = match (s.leases.get_mut(&lease), vouched) {
                (Some(rec), _) => rec,
                (None, None) => return Err(Error::UnknownLease(lease)),
                (None, Some(provider)) => s.leases.entry(lease).or_insert(LeaseRecord {
                    provider,
                    settled: false,
                    rated: false,
                    epoch: e,
                }),
            };
            if let Some(p) = vouched.filter(|p| *p != rec.provider) {
                return Err(Error::invalid(
                    "lease",
                    format!(
                        "{lease} was served by {}, not {}",
                        rec.provider.short(),
                        p.short()
                    ),
                ));
            }
            if rec.rated {
                return Err(Error::invalid(
                    "lease",
                    format!("{lease} was already rated"),
                ));
            }
            rec.rated = true;
            rec.epoch = rec.epoch.max(e);
            let provider = rec.provider;
            let a = Self::activity(&mut s, e, provider);
            a.stats.feedback_sum += u64::from(rating);
            a.stats.feedback_count += 1;
            provider
        };
        self.registry.update(provider, |p| {
            p.stats.feedback_sum += u64::from(rating);
            p.stats.feedback_count += 1;
        })
    }
}
