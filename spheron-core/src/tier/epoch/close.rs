//! Close: tier decisions, reward pools and payouts at the end of each epoch, and the
//! processor's run loop.

use super::*;

impl EpochProcessor {
    /// Closes every epoch that ended at least `grace` before `now`; returns their reports.
    ///
    /// Refuses (closing nothing) when more than [`MAX_CATCH_UP`] epochs are due at once:
    /// that is a genesis left at its default instead of the marketplace's start, and would
    /// pay out that many epochs of rewards.
    pub async fn close_due(&self, now: Timestamp) -> Result<Vec<EpochReport>> {
        let next = self.open_epoch();
        let due = now
            .0
            .saturating_sub(self.config.grace.as_millis().min(u128::from(u64::MAX)) as u64);
        let due_epochs = Timestamp(due).millis_since(self.epoch_start(next)) / self.config.len_ms();
        if due_epochs > MAX_CATCH_UP {
            return Err(Error::invalid(
                "genesis",
                format!(
                    "{due_epochs} epochs are due at once (more than {MAX_CATCH_UP}); set `genesis` to the marketplace's start, e.g. the clock's now()"
                ),
            ));
        }
        let mut out = Vec::new();
        loop {
            let next = self.open_epoch();
            let due = self
                .epoch_start(next.saturating_add(1))
                .add(self.config.grace);
            if due > now {
                return Ok(out);
            }
            out.push(self.close_epoch(next).await?);
        }
    }

    /// Closes `epoch`, which must be the lowest open one: evaluates every registered
    /// provider's tier over its window, writes the tiers to the registry, and pays the
    /// reward pools from the treasury through the escrow.
    ///
    /// Errors: [`Error::EpochClosed`] when it was already closed; [`Error::InvalidField`]
    /// when an earlier epoch is still open.
    pub async fn close_epoch(&self, epoch: u64) -> Result<EpochReport> {
        let _ops = self.ops.lock().await;
        {
            let s = self.lock();
            if epoch < s.next {
                return Err(Error::EpochClosed(epoch));
            }
            if epoch > s.next {
                return Err(Error::invalid(
                    "epoch",
                    format!("epoch {} is still open; epochs close in order", s.next),
                ));
            }
        }
        let treasury = self.config.treasury;
        let available = self.escrow.balance(treasury).await?.available;
        let providers = self.registry.all();

        let mut report = {
            let mut s = self.lock();
            let empty = Accum::default();
            let accum = s.open.get(&epoch).unwrap_or(&empty);
            let mut rows = Vec::with_capacity(providers.len());
            let mut weights = Vec::new();
            // Book updates, applied once every computation has succeeded.
            let mut books = Vec::with_capacity(providers.len());
            for p in &providers {
                let activity = accum.providers.get(&p.id).cloned().unwrap_or_default();
                let (mut window_stats, history) = match s.books.get(&p.id) {
                    Some(b) => (b.window.clone(), b.history),
                    None => (VecDeque::new(), TierHistory::default()),
                };
                window_stats.push_back(activity.stats.clone());
                while window_stats.len() > self.config.window_epochs {
                    window_stats.pop_front();
                }
                let window = window_sum(&window_stats);
                let decision = if p.banned {
                    TierDecision {
                        tier: TrustTier::UNRANKED,
                        target: TrustTier::UNRANKED,
                        history: TierHistory::default(),
                        reason: "banned from matching".into(),
                    }
                } else {
                    self.policy.evaluate(p.tier, &window, &history)
                };
                books.push((
                    p.id,
                    window_stats,
                    decision.history,
                    decision.reason.clone(),
                ));
                let weight: u128 = if p.banned {
                    0
                } else {
                    activity
                        .gpu_seconds
                        .iter()
                        .map(|(class, secs)| {
                            u128::from(*secs)
                                * u128::from(self.policy.reward_multiplier_bps(p.tier, *class))
                        })
                        .fold(0u128, u128::saturating_add)
                };
                if weight > 0 {
                    weights.push((p.id, weight));
                }
                rows.push(ProviderEpoch {
                    provider: p.id,
                    gpu_seconds: activity
                        .gpu_seconds
                        .values()
                        .fold(0u64, |a, b| a.saturating_add(*b)),
                    activity: activity.stats,
                    window,
                    tier_before: p.tier,
                    decision,
                    banned: p.banned,
                    weight,
                    reward: Amount::ZERO,
                });
            }

            // Pools: emission + carry, capped by what the treasury holds.
            let want_p = self
                .config
                .provider_pool
                .0
                .saturating_add(s.provider_carry.0);
            let provider_pool = Amount(want_p.min(available.0));
            let want_v = self
                .config
                .verifier_pool
                .0
                .saturating_add(s.verifier_carry.0);
            let verifier_pool = Amount(want_v.min(available.0 - provider_pool.0));
            let shortfall = Amount(
                want_p.saturating_sub(provider_pool.0) + want_v.saturating_sub(verifier_pool.0),
            );
            let psplit = split_pool(provider_pool, &weights)?;
            let index: BTreeMap<ProviderId, usize> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.provider, i))
                .collect();
            for (id, amount) in &psplit.payouts {
                if let Some(&i) = index.get(id) {
                    rows[i].reward = *amount;
                }
            }

            let ranking = s.verifiers.ranking();
            let min_acc = self.config.verifiers.min_accuracy_bps;
            let mut vrows = Vec::new();
            let mut vweights = Vec::new();
            for st in &ranking {
                let a = accum
                    .verifiers
                    .get(&st.verifier)
                    .cloned()
                    .unwrap_or_default();
                if st.accuracy_bps >= min_acc && a.verdicts > 0 {
                    vweights.push((
                        st.verifier,
                        u128::from(a.verdicts) * u128::from(st.accuracy_bps),
                    ));
                }
                vrows.push(VerifierEpoch {
                    verifier: st.verifier,
                    verdicts: a.verdicts,
                    rechecked: a.rechecked,
                    agreed: a.agreed,
                    disagreed: a.disagreed,
                    frauds_caught: a.frauds_caught,
                    bounties: a.bounties,
                    accuracy_bps: st.accuracy_bps,
                    rank: st.rank,
                    reward: Amount::ZERO,
                });
            }
            vrows.sort_by_key(|v| v.verifier);
            let vsplit = split_pool(verifier_pool, &vweights)?;
            let vindex: BTreeMap<AccountId, usize> = vrows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.verifier, i))
                .collect();
            for (id, amount) in &vsplit.payouts {
                if let Some(&i) = vindex.get(id) {
                    vrows[i].reward = *amount;
                }
            }
            // Everything computed: commit.
            let penalties = s
                .open
                .remove(&epoch)
                .map(|a| a.penalties)
                .unwrap_or_default();
            s.next = epoch + 1;
            Self::prune(&mut s, epoch, self.config.window_epochs);
            for (id, window, history, reason) in books {
                let b = s.books.entry(id).or_default();
                b.window = window;
                b.history = history;
                b.reason = Some(reason);
            }
            s.provider_carry = psplit.carried;
            s.verifier_carry = vsplit.carried;

            let start = self.epoch_start(epoch);
            EpochReport {
                epoch,
                start,
                end: self.epoch_start(epoch.saturating_add(1)),
                providers: rows,
                verifiers: vrows,
                penalties,
                provider_pool,
                provider_paid: psplit.paid,
                verifier_pool,
                verifier_paid: vsplit.paid,
                carried: Amount(psplit.carried.0 + vsplit.carried.0),
                shortfall,
                unpaid: Vec::new(),
            }
        };

        // Tiers: written unless a penalty moved the provider meanwhile.
        for row in &report.providers {
            let (before, after) = (row.tier_before, row.decision.tier);
            if before != after {
                let _ = self.registry.update(row.provider, |p| {
                    if p.tier == before {
                        p.tier = after;
                    }
                });
            }
        }

        // Payouts; a failed transfer is carried over, never lost.
        let mut failed_p = Amount::ZERO;
        let mut failed_v = Amount::ZERO;
        for row in &mut report.providers {
            if row.reward.0 == 0 {
                continue;
            }
            if let Err(e) = self
                .escrow
                .transfer(treasury, row.provider, row.reward)
                .await
            {
                report
                    .unpaid
                    .push((row.provider, row.reward, e.to_string()));
                failed_p.0 += row.reward.0;
                row.reward = Amount::ZERO;
            }
        }
        let mut paid_v = Vec::new();
        for row in &mut report.verifiers {
            if row.reward.0 == 0 {
                continue;
            }
            match self
                .escrow
                .transfer(treasury, row.verifier, row.reward)
                .await
            {
                Ok(()) => paid_v.push((row.verifier, row.reward)),
                Err(e) => {
                    report
                        .unpaid
                        .push((row.verifier, row.reward, e.to_string()));
                    failed_v.0 += row.reward.0;
                    row.reward = Amount::ZERO;
                }
            }
        }
        report.provider_paid.0 -= failed_p.0;
        report.verifier_paid.0 -= failed_v.0;
        report.carried.0 += failed_p.0 + failed_v.0;
        {
            let mut s = self.lock();
            s.provider_carry.0 += failed_p.0;
            s.verifier_carry.0 += failed_v.0;
            for (v, amount) in paid_v {
                let rec = s.verifiers.records.entry(v).or_default();
                rec.earned = Amount(rec.earned.0.saturating_add(amount.0));
            }
            s.last = Some(report.clone());
        }
        tracing::info!(
            epoch,
            providers = report.providers.len(),
            paid = %Amount(report.provider_paid.0 + report.verifier_paid.0),
            carried = %report.carried,
            "epoch closed"
        );
        Ok(report)
    }

    /// Runs the processor: feeds `events` (e.g. `Orchestrator::subscribe()`) into
    /// [`ingest`](Self::ingest) and closes each epoch `grace` after it ends on `clock`.
    /// Errors are logged, not fatal. Returns when the event stream ends (after closing
    /// whatever is due).
    pub async fn run<S>(&self, events: S, clock: Arc<dyn Clock>)
    where
        S: Stream<Item = ProgressEvent> + Send,
    {
        let mut events = std::pin::pin!(events);
        loop {
            let due = self
                .epoch_start(self.open_epoch().saturating_add(1))
                .add(self.config.grace);
            tokio::select! {
                // Drain the events already delivered before closing an epoch.
                biased;
                ev = events.next() => match ev {
                    Some(e) => {
                        if let Err(err) = self.ingest(&e) {
                            tracing::warn!(error = %err, step = %e.step, "event not counted");
                        }
                        // A busy stream must not starve the close.
                        if clock.now() >= due
                            && let Err(err) = self.close_due(clock.now()).await
                        {
                            tracing::warn!(error = %err, "closing epochs failed");
                        }
                    }
                    None => {
                        if let Err(err) = self.close_due(clock.now()).await {
                            tracing::warn!(error = %err, "closing epochs failed");
                        }
                        return;
                    }
                },
                _ = clock.sleep_until(due) => {
                    if let Err(err) = self.close_due(clock.now()).await {
                        tracing::warn!(error = %err, "closing epochs failed; retrying in a second");
                        // Do not spin on a failing escrow; wait on the injected clock.
                        clock.sleep_until(clock.now().add(Duration::from_secs(1))).await;
                    }
                }
            }
        }
    }
}
