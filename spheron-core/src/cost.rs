//! Cost control: spend caps and the idle detector, shared by the embedded flow and the
//! network tenant.
//!
//! * **A lease's spend cap** ([`GpuRequest::max_spend`](crate::GpuRequest::max_spend)): the
//!   escrow locks at most the cap, and the lease ends with
//!   [`CloseReason::SpendCapReached`](crate::CloseReason::SpendCapReached) at the last whole
//!   second the cap pays for ([`seconds_within`]), so it is never exceeded.
//! * **A marketplace's spend cap** ([`SpendLimit`]): the total committed by the leases of one
//!   marketplace object (locked while they run, paid once settled; refunds return to the
//!   allowance). A rent that would go over it fails with [`Error::SpendCapExceeded`] before
//!   anything is published.
//! * **The idle detector** ([`IdleDetector`]): a lease is idle when its workload wrote no new
//!   line to stdout or stderr and its GPUs were not busy (utilisation at least
//!   [`GPU_BUSY_PERCENT`]) for the request's
//!   [`idle_timeout`](crate::GpuRequest::idle_timeout_secs). The launcher reports both signals
//!   as an [`Activity`]; where it cannot measure GPU utilisation
//!   (simulated GPUs), only log output counts. The tenant side, who pays, stops the lease with
//!   [`CloseReason::Idle`](crate::CloseReason::Idle) and is billed until the stop.

use crate::launcher::Activity;
use crate::money::Amount;
use crate::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// GPU utilisation (percent) at or above which a GPU counts as busy for idle detection.
pub const GPU_BUSY_PERCENT: u8 = 5;

/// The most whole seconds that `gpus` GPUs at `price_per_gpu_hour` can run for `cap`, with
/// the escrow's rounding (cost = floor(price x gpus x seconds / 3600)); `u64::MAX` when the
/// price is zero.
pub fn seconds_within(cap: Amount, price_per_gpu_hour: Amount, gpus: u32) -> u64 {
    let rate = price_per_gpu_hour.0.saturating_mul(u128::from(gpus));
    if rate == 0 {
        return u64::MAX;
    }
    // floor(rate * s / 3600) <= cap  <=>  rate * s < 3600 * (cap + 1).
    let Some(bound) = cap
        .0
        .checked_add(1)
        .and_then(|c| c.checked_mul(3600))
        .map(|b| (b - 1) / rate)
    else {
        // The cap is beyond anything a u64 of seconds can spend.
        return u64::MAX;
    };
    u64::try_from(bound).unwrap_or(u64::MAX)
}

/// A spend cap over every lease of one marketplace object: see the [module docs](self).
#[derive(Debug)]
pub struct SpendLimit {
    cap: Amount,
    committed: Mutex<Amount>,
}

impl SpendLimit {
    /// A limit of `cap` base units, nothing committed yet.
    pub fn new(cap: Amount) -> Arc<Self> {
        Arc::new(SpendLimit {
            cap,
            committed: Mutex::new(Amount::ZERO),
        })
    }

    /// The cap.
    pub fn cap(&self) -> Amount {
        self.cap
    }

    /// What the leases committed so far (locked while running, paid once settled).
    pub fn committed(&self) -> Amount {
        *self.lock()
    }

    /// What is left of the allowance.
    pub fn remaining(&self) -> Amount {
        Amount(self.cap.0.saturating_sub(self.committed().0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Amount> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits `amount` for a rent, or fails with [`Error::SpendCapExceeded`] naming the cap,
    /// what is committed and what the rent needs. Dropping the [`SpendCommitment`] returns it all
    /// (the rent failed); [`SpendCommitment::settle`] keeps what was paid.
    pub fn commit(self: &Arc<Self>, amount: Amount) -> Result<SpendCommitment> {
        let mut c = self.lock();
        let total = c.0.checked_add(amount.0);
        if total.is_none_or(|t| t > self.cap.0) {
            return Err(Error::SpendCapExceeded {
                cap: self.cap,
                committed: *c,
                requested: amount,
            });
        }
        *c = Amount(c.0 + amount.0);
        Ok(SpendCommitment {
            limit: self.clone(),
            held: amount,
            kept: Amount::ZERO,
        })
    }
}

/// Funds committed against a [`SpendLimit`] for one rent.
#[derive(Debug)]
#[must_use = "dropping a commitment returns it to the allowance"]
pub struct SpendCommitment {
    limit: Arc<SpendLimit>,
    held: Amount,
    kept: Amount,
}

impl SpendCommitment {
    /// What is held.
    pub fn amount(&self) -> Amount {
        self.held
    }

    /// The lease settled: `paid` stays committed, the rest (the refund) returns to the
    /// allowance. `None` (the settlement is unknown) keeps everything committed.
    pub fn settle(mut self, paid: Option<Amount>) {
        self.kept = paid.map_or(self.held, |p| p.min(self.held));
    }
}

impl Drop for SpendCommitment {
    fn drop(&mut self) {
        let back = self.held.0.saturating_sub(self.kept.0);
        let mut c = self.limit.lock();
        *c = Amount(c.0.saturating_sub(back));
    }
}

/// Decides when a lease is idle from a series of [`Activity`] observations.
#[derive(Debug)]
pub struct IdleDetector {
    timeout: Duration,
    gpu_busy_at: Instant,
    gpu_measured: bool,
}

impl IdleDetector {
    /// A detector that calls a lease idle after `timeout` without activity; the GPUs count as
    /// busy at its creation (so a lease is never idle before `timeout` has passed).
    pub fn new(timeout: Duration) -> Self {
        IdleDetector {
            timeout,
            gpu_busy_at: Instant::now(),
            gpu_measured: false,
        }
    }

    /// How often to observe: a quarter of the timeout, between 100 ms and 5 s.
    pub fn poll_interval(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Whether any observation carried a GPU utilisation (else only log output counted).
    pub fn gpu_measured(&self) -> bool {
        self.gpu_measured
    }

    /// Feeds one observation; returns how long the lease has been idle once that reaches the
    /// timeout.
    pub fn observe(&mut self, activity: &Activity) -> Option<Duration> {
        if let Some(u) = activity.gpu_utilization {
            self.gpu_measured = true;
            if u >= GPU_BUSY_PERCENT {
                self.gpu_busy_at = Instant::now();
            }
        }
        let quiet = Duration::from_millis(activity.quiet_ms).min(self.gpu_busy_at.elapsed());
        (quiet >= self.timeout).then_some(quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::accrued_cost;

    #[test]
    fn seconds_within_is_the_last_second_the_cap_pays_for() {
        for (cap, price, gpus) in [
            (1_000_000u128, 3_000_000u128, 1u32),
            (12_500_000, 2_000_000, 8),
            (7, 3_600, 1),
            (0, 1, 1),
            (1, 7_200_000, 3),
        ] {
            let s = seconds_within(Amount(cap), Amount(price), gpus);
            let at = |s| accrued_cost(Amount(price), gpus, s).unwrap();
            assert!(at(s) <= Amount(cap), "{cap} {price} {gpus}: {s}");
            assert!(at(s + 1) > Amount(cap), "{cap} {price} {gpus}: {s}");
        }
        assert_eq!(seconds_within(Amount(u128::MAX), Amount(1), 1), u64::MAX);
        assert_eq!(seconds_within(Amount(5), Amount(0), 1), u64::MAX);
    }

    #[test]
    fn the_limit_refuses_past_the_cap_and_refunds_return() {
        let limit = SpendLimit::new(Amount(100));
        let a = limit.commit(Amount(60)).unwrap();
        match limit.commit(Amount(50)) {
            Err(Error::SpendCapExceeded {
                cap,
                committed,
                requested,
            }) => assert_eq!(
                (cap, committed, requested),
                (Amount(100), Amount(60), Amount(50))
            ),
            other => panic!("expected SpendCapExceeded, got {other:?}"),
        }
        a.settle(Some(Amount(15)));
        assert_eq!(limit.committed(), Amount(15));
        let b = limit.commit(Amount(85)).unwrap();
        drop(b);
        assert_eq!(
            (limit.committed(), limit.remaining()),
            (Amount(15), Amount(85))
        );
        limit.commit(Amount(10)).unwrap().settle(None);
        assert_eq!(limit.committed(), Amount(25));
        assert!(limit.commit(Amount(u128::MAX)).is_err());
    }

    #[test]
    fn idle_needs_both_quiet_logs_and_idle_gpus() {
        let mut d = IdleDetector::new(Duration::from_millis(50));
        let quiet = Activity {
            quiet_ms: 10_000,
            gpu_utilization: None,
        };
        // Never idle before the timeout has passed since the detector started.
        assert_eq!(d.observe(&quiet), None);
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.observe(&quiet).is_some());
        // A busy GPU resets it, output too.
        let busy = Activity {
            quiet_ms: 10_000,
            gpu_utilization: Some(90),
        };
        assert_eq!(d.observe(&busy), None);
        assert!(d.gpu_measured());
        let chatty = Activity {
            quiet_ms: 1,
            gpu_utilization: Some(0),
        };
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(d.observe(&chatty), None);
        assert!(
            d.observe(&Activity {
                quiet_ms: 60,
                gpu_utilization: Some(0)
            })
            .is_some()
        );
    }
}
