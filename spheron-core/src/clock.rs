//! Time: a [`Clock`] trait with the system clock and a simulated clock for tests.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + d`, saturating.
    #[allow(clippy::should_implement_trait)] // saturating, unlike `Add`; named for readability
    pub fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(u128::from(u64::MAX)) as u64),
        )
    }

    /// Whole seconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn secs_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0) / 1000
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A source of time. Billing, bid windows, deadlines and epochs read it, so tests can
/// drive them with [`SimClock`].
#[async_trait]
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Resolves once `now() >= t`.
    async fn sleep_until(&self, t: Timestamp);
}

/// The operating system's clock, with tokio timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as u64)
    }

    async fn sleep_until(&self, t: Timestamp) {
        let now = self.now();
        if t > now {
            tokio::time::sleep(Duration::from_millis(t.0 - now.0)).await;
        }
    }
}

/// A clock that moves only when told to. Sleepers wake when [`SimClock::advance`] passes
/// their deadline.
#[derive(Clone, Debug)]
pub struct SimClock {
    tx: Arc<watch::Sender<Timestamp>>,
}

impl SimClock {
    /// A simulated clock starting at `start`.
    pub fn new(start: Timestamp) -> Self {
        let (tx, _) = watch::channel(start);
        SimClock { tx: Arc::new(tx) }
    }

    /// Moves time forward by `d`, waking every sleeper whose deadline has passed.
    pub fn advance(&self, d: Duration) {
        self.tx.send_modify(|t| *t = t.add(d));
    }

    /// Sets the time (never backwards).
    pub fn set(&self, t: Timestamp) {
        self.tx.send_modify(|cur| *cur = (*cur).max(t));
    }
}

impl Default for SimClock {
    fn default() -> Self {
        // 2026-01-01T00:00:00Z, a fixed start so simulated runs print the same times.
        SimClock::new(Timestamp(1_767_225_600_000))
    }
}

#[async_trait]
impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        *self.tx.borrow()
    }

    async fn sleep_until(&self, t: Timestamp) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as self, so wait_for only errs if it is dropped.
        let _ = rx.wait_for(|now| *now >= t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sim_clock_wakes_sleepers_on_advance() {
        let clock = SimClock::new(Timestamp(0));
        let c2 = clock.clone();
        let h = tokio::spawn(async move {
            c2.sleep_until(Timestamp(5_000)).await;
            c2.now()
        });
        tokio::task::yield_now().await;
        assert!(!h.is_finished());
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!h.is_finished());
        clock.advance(Duration::from_secs(1));
        assert_eq!(h.await.unwrap(), Timestamp(5_000));
        assert_eq!(Timestamp(5_999).secs_since(Timestamp(0)), 5);
    }
}
