//! Progress events: one for every step of renting, for progress displays and logs.

use crate::clock::Timestamp;
use crate::gpu::GpuModel;
use crate::ids::{LeaseId, OrderId, ProviderId};
use crate::lease::CloseReason;
use crate::matching::Rejection;
use crate::money::Amount;
use crate::proof::Verdict;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A step of the rent flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Step {
    /// The order was published.
    Published {
        /// Budget that will be locked.
        budget: Amount,
    },
    /// The bid window closed.
    BidsIn {
        /// Bids received.
        count: usize,
    },
    /// The matcher chose a provider (attempt `attempt`, from 1).
    Matched {
        /// The provider.
        provider: ProviderId,
        /// Its score.
        score: f64,
        /// Which attempt this is (failover increments it).
        attempt: usize,
    },
    /// The verifier is challenging the provider.
    Verifying {
        /// The provider.
        provider: ProviderId,
        /// The model it claims.
        claimed: GpuModel,
    },
    /// The challenge passed.
    Verified {
        /// The provider.
        provider: ProviderId,
        /// The verdict.
        verdict: Verdict,
    },
    /// The challenge failed: the provider is penalised and the next bid is taken.
    ChallengeFailed {
        /// The provider.
        provider: ProviderId,
        /// Why.
        reason: String,
        /// Stake slashed.
        slashed: Amount,
        /// The penalty this flow applied (its violation, slash and bounty), as recorded;
        /// `None` where the flow charges nothing itself (a network tenant leaves penalties
        /// to the chain's verifiers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        penalty: Option<Box<crate::tier::PenaltyRecord>>,
    },
    /// Nobody could serve the order.
    NoMatch {
        /// Every provider and why it was skipped.
        rejected: Vec<Rejection>,
    },
    /// The budget was locked in escrow.
    EscrowLocked {
        /// Amount locked.
        amount: Amount,
    },
    /// The workload is being launched.
    Launching {
        /// The lease.
        lease: LeaseId,
    },
    /// The launcher never started the workload ([`crate::Error::NotStarted`]): nothing was
    /// billed, the lock is refunded and the next bid is taken.
    NotStarted {
        /// The provider.
        provider: ProviderId,
        /// The launcher's reason.
        reason: String,
        /// Refunded to the tenant (the whole lock).
        refunded: Amount,
    },
    /// The workload runs; cost accrues.
    Running {
        /// The lease.
        lease: LeaseId,
    },
    /// This subscriber fell behind and missed `count` events (the channel keeps a bounded
    /// number); the events after this one are current again.
    Missed {
        /// Events this subscriber never saw.
        count: u64,
    },
    /// A lease with a [`Checkpoint`](crate::checkpoint::Checkpoint) policy lost its provider
    /// (it was settled first): the order is published again without that provider, for the
    /// time that is left, with the last checkpoint in the working directory.
    Resuming {
        /// The lease that ended.
        from_lease: LeaseId,
        /// Its provider.
        from_provider: ProviderId,
        /// Why it ended.
        reason: CloseReason,
        /// Size of the checkpoint that travels, bytes (`0`: none yet, the workload starts
        /// over).
        checkpoint_bytes: u64,
        /// Which resume this is, from 1.
        resume: u32,
    },
    /// The lease was settled.
    Settled {
        /// The lease.
        lease: LeaseId,
        /// The provider that served it.
        provider: ProviderId,
        /// GPU-seconds served (GPUs x billed seconds), for rewards.
        gpu_seconds: u64,
        /// Why it closed.
        reason: CloseReason,
        /// Paid to the provider.
        paid: Amount,
        /// Refunded to the tenant.
        refunded: Amount,
    },
}

/// A progress event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// When (marketplace clock).
    pub at: Timestamp,
    /// The order.
    pub order: OrderId,
    /// What happened.
    pub step: Step,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Published { budget } => write!(f, "published (budget {budget})"),
            Step::BidsIn { count } => write!(f, "{count} bids in"),
            Step::Matched {
                provider,
                score,
                attempt,
            } => write!(
                f,
                "matched {} (score {score:.4}, attempt {attempt})",
                provider.short()
            ),
            Step::Verifying { provider, claimed } => {
                write!(f, "verifying {} claims {claimed}", provider.short())
            }
            Step::Verified { provider, verdict } => {
                write!(f, "{} verified: {verdict}", provider.short())
            }
            Step::ChallengeFailed {
                provider,
                reason,
                slashed,
                penalty,
            } => match penalty {
                Some(p) => write!(
                    f,
                    "{} failed its challenge ({reason}): {}, slashed {slashed}, taking the next bid",
                    provider.short(),
                    p.violation
                ),
                None => write!(
                    f,
                    "{} failed its challenge ({reason}); slashed {slashed}, taking the next bid",
                    provider.short()
                ),
            },
            Step::NoMatch { rejected } => {
                write!(f, "no match ({} providers skipped)", rejected.len())
            }
            Step::EscrowLocked { amount } => write!(f, "escrow locked {amount}"),
            Step::Launching { lease } => write!(f, "launching {lease}"),
            Step::Missed { count } => {
                write!(f, "{count} progress events missed (subscriber lagged)")
            }
            Step::NotStarted {
                provider,
                reason,
                refunded,
            } => write!(
                f,
                "{} never started the workload ({reason}); refunded {refunded}, taking the next bid",
                provider.short()
            ),
            Step::Running { lease } => write!(f, "{lease} running"),
            Step::Resuming {
                from_lease,
                from_provider,
                reason,
                checkpoint_bytes,
                resume,
            } => write!(
                f,
                "{from_lease} on {} ended ({reason}): resuming elsewhere from a {checkpoint_bytes}-byte checkpoint (resume {resume})",
                from_provider.short()
            ),
            Step::Settled {
                lease,
                reason,
                paid,
                refunded,
                ..
            } => write!(
                f,
                "{lease} settled: {reason}; paid {paid}, refunded {refunded}"
            ),
        }
    }
}

/// Progress events from a broadcast channel from now on; a subscriber that falls behind gets
/// a [`Step::Missed`] event saying how many it lost, then the current ones.
pub fn progress_stream(
    rx: tokio::sync::broadcast::Receiver<ProgressEvent>,
) -> futures::stream::BoxStream<'static, ProgressEvent> {
    use tokio::sync::broadcast::error::RecvError;
    Box::pin(futures::stream::unfold(
        (rx, None::<ProgressEvent>),
        |(mut rx, held)| async move {
            if let Some(e) = held {
                return Some((e, (rx, None)));
            }
            match rx.recv().await {
                Ok(e) => Some((e, (rx, None))),
                Err(RecvError::Lagged(n)) => match rx.recv().await {
                    Ok(next) => {
                        let notice = ProgressEvent {
                            at: next.at,
                            order: next.order,
                            step: Step::Missed { count: n },
                        };
                        Some((notice, (rx, Some(next))))
                    }
                    Err(_) => None,
                },
                Err(RecvError::Closed) => None,
            }
        },
    ))
}

/// A stream of everything sent on a broadcast channel from now on. A subscriber that falls
/// more than the channel's capacity behind skips what it missed rather than ending.
pub fn broadcast_stream<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> futures::stream::BoxStream<'static, T> {
    use tokio::sync::broadcast::error::RecvError;
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_how_many_it_missed() {
        let (tx, _) = tokio::sync::broadcast::channel(4);
        let mut events = progress_stream(tx.subscribe());
        for i in 0..10u64 {
            let _ = tx.send(ProgressEvent {
                at: Timestamp(i),
                order: OrderId(1),
                step: Step::BidsIn { count: i as usize },
            });
        }
        drop(tx);
        let first = events.next().await.unwrap();
        assert_eq!(first.step, Step::Missed { count: 6 });
        let rest: Vec<_> = events.map(|e| e.at.0).collect().await;
        assert_eq!(rest, vec![6, 7, 8, 9]);
    }
}
