//! The lease state machine: `Open → Matched → Active → Closed{reason}`.
//!
//! Every transition goes through [`LeaseState::apply`]; an illegal one is an
//! [`Error::IllegalTransition`], never a panic.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a lease closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CloseReason {
    /// The workload finished successfully (exit status 0).
    Completed,
    /// The tenant stopped the lease.
    TenantStopped,
    /// The tenant's workload exited with a failure status; not the provider's fault.
    WorkloadFailed {
        /// The exit code, if the process exited (None when killed by a signal).
        exit_code: Option<i32>,
    },
    /// The provider failed (launch error, lost node, lost contact).
    ProviderFailed {
        /// What failed.
        detail: String,
    },
    /// The provider failed its proof-of-GPU challenge.
    ChallengeFailed {
        /// The verdict's reason.
        reason: String,
    },
    /// The locked funds were used up.
    FundsExhausted,
    /// The leased duration ran out, or the order found no provider before it expired.
    Expired,
    /// The lease's spend cap ([`GpuRequest::max_spend`](crate::GpuRequest::max_spend)) was
    /// used up.
    SpendCapReached,
    /// The idle detector stopped the lease: no log output and no GPU activity for
    /// `idle_secs` (at least the request's idle timeout).
    Idle {
        /// Seconds without activity when the lease was stopped.
        idle_secs: u64,
    },
}

impl CloseReason {
    /// Whether this outcome counts against the provider's completion rate.
    pub fn is_provider_fault(&self) -> bool {
        matches!(
            self,
            CloseReason::ProviderFailed { .. } | CloseReason::ChallengeFailed { .. }
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Completed => f.write_str("completed"),
            CloseReason::TenantStopped => f.write_str("stopped by tenant"),
            CloseReason::WorkloadFailed { exit_code: Some(c) } => {
                write!(f, "workload failed (exit code {c})")
            }
            CloseReason::WorkloadFailed { exit_code: None } => {
                f.write_str("workload failed (killed by a signal)")
            }
            CloseReason::ProviderFailed { detail } => write!(f, "provider failed: {detail}"),
            CloseReason::ChallengeFailed { reason } => write!(f, "challenge failed: {reason}"),
            CloseReason::FundsExhausted => f.write_str("funds exhausted"),
            CloseReason::Expired => f.write_str("expired"),
            CloseReason::SpendCapReached => f.write_str("spend cap reached"),
            CloseReason::Idle { idle_secs } => {
                write!(f, "idle (no output or GPU activity for {idle_secs} s)")
            }
        }
    }
}

/// Where a lease stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// The order is published and collecting bids.
    Open,
    /// A provider was chosen; verification and launch are under way.
    Matched,
    /// The workload runs and cost accrues.
    Active,
    /// Settled and finished.
    Closed(CloseReason),
}

/// What happens to a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// The matcher chose a provider.
    Match,
    /// The workload started.
    Activate,
    /// The lease ends for `reason`.
    Close(CloseReason),
}

impl LeaseEvent {
    fn name(&self) -> &'static str {
        match self {
            LeaseEvent::Match => "match",
            LeaseEvent::Activate => "activate",
            LeaseEvent::Close(_) => "close",
        }
    }
}

impl LeaseState {
    /// The next state after `event`, or [`Error::IllegalTransition`].
    pub fn apply(&self, event: LeaseEvent) -> Result<LeaseState> {
        use CloseReason as R;
        use LeaseState as S;
        let illegal = |event: &LeaseEvent| Error::IllegalTransition {
            from: self.clone(),
            event: event.name(),
        };
        match (self, event) {
            (S::Open, LeaseEvent::Match) => Ok(S::Matched),
            (S::Matched, LeaseEvent::Activate) => Ok(S::Active),
            // Before launch nothing has run, so only these endings make sense.
            (S::Open, LeaseEvent::Close(r @ (R::TenantStopped | R::Expired))) => Ok(S::Closed(r)),
            (
                S::Matched,
                LeaseEvent::Close(
                    r @ (R::TenantStopped
                    | R::Expired
                    | R::ChallengeFailed { .. }
                    | R::ProviderFailed { .. }),
                ),
            ) => Ok(S::Closed(r)),
            (S::Active, LeaseEvent::Close(r)) => Ok(S::Closed(r)),
            (_, e) => Err(illegal(&e)),
        }
    }

    /// Whether the lease has closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, LeaseState::Closed(_))
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseState::Open => f.write_str("open"),
            LeaseState::Matched => f.write_str("matched"),
            LeaseState::Active => f.write_str("active"),
            LeaseState::Closed(r) => write!(f, "closed ({r})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_reasons() -> Vec<CloseReason> {
        vec![
            CloseReason::Completed,
            CloseReason::TenantStopped,
            CloseReason::WorkloadFailed { exit_code: Some(3) },
            CloseReason::ProviderFailed { detail: "x".into() },
            CloseReason::ChallengeFailed { reason: "y".into() },
            CloseReason::FundsExhausted,
            CloseReason::Expired,
            CloseReason::SpendCapReached,
            CloseReason::Idle { idle_secs: 60 },
        ]
    }

    fn all_events() -> Vec<LeaseEvent> {
        let mut v = vec![LeaseEvent::Match, LeaseEvent::Activate];
        v.extend(all_reasons().into_iter().map(LeaseEvent::Close));
        v
    }

    #[test]
    fn happy_path() {
        let s = LeaseState::Open
            .apply(LeaseEvent::Match)
            .and_then(|s| s.apply(LeaseEvent::Activate))
            .and_then(|s| s.apply(LeaseEvent::Close(CloseReason::Completed)))
            .unwrap();
        assert_eq!(s, LeaseState::Closed(CloseReason::Completed));
    }

    #[test]
    fn every_transition_is_either_legal_or_a_typed_error() {
        let states = {
            let mut v = vec![LeaseState::Open, LeaseState::Matched, LeaseState::Active];
            v.extend(all_reasons().into_iter().map(LeaseState::Closed));
            v
        };
        let mut legal = 0;
        for s in &states {
            for e in all_events() {
                match s.apply(e.clone()) {
                    Ok(_) => legal += 1,
                    Err(Error::IllegalTransition { from, .. }) => assert_eq!(&from, s),
                    Err(other) => panic!("unexpected error {other:?}"),
                }
            }
        }
        // Open: match + 2 closes; Matched: activate + 4 closes; Active: 9 closes.
        assert_eq!(legal, 3 + 5 + 9);
    }

    #[test]
    fn closed_is_terminal() {
        let closed = LeaseState::Closed(CloseReason::Completed);
        for e in all_events() {
            assert!(closed.apply(e).is_err());
        }
        assert!(LeaseState::Open.apply(LeaseEvent::Activate).is_err());
        assert!(
            LeaseState::Open
                .apply(LeaseEvent::Close(CloseReason::Completed))
                .is_err()
        );
    }
}
