//! The last two steps of the rent flow: *supervise* a running lease until it ends, then
//! *settle* it (tear down, settle the escrow, return capacity, record the outcome).
//!
//! Cost control: a lease with a spend cap ends at the last second the cap pays for
//! (`cap_at`); one with an idle timeout is watched by an [`IdleDetector`] fed with the
//! launcher's [`Activity`](crate::launcher::Activity) reports, and stopped as
//! [`CloseReason::Idle`] when it fires. Either way the escrow bills up to that instant.

use super::{Emitter, LeaseControl, LeaseReport, Parts};
use crate::clock::Timestamp;
use crate::cost::{IdleDetector, SpendCommitment};
use crate::escrow::Settlement;
use crate::events::Step;
use crate::launcher::{LogStream, WorkloadId, WorkloadLauncher, WorkloadStatus};
use crate::lease::{CloseReason, LeaseEvent, LeaseState};
use crate::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the supervisor and every [`super::LeaseHandle`] of one lease share.
pub(super) struct LeaseShared {
    pub(super) report: Mutex<LeaseReport>,
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) closed_rx: watch::Receiver<bool>,
    pub(super) workload: WorkloadId,
    pub(super) ends_at: Timestamp,
    /// When the lease's spend cap is used up, if before `ends_at`.
    pub(super) cap_at: Option<Timestamp>,
    /// The request's idle timeout.
    pub(super) idle_timeout: Option<Duration>,
    /// What this lease holds against the marketplace's spend cap.
    pub(super) commitment: Mutex<Option<SpendCommitment>>,
    pub(super) node: String,
    pub(super) parts: Parts,
}

impl LeaseShared {
    fn with_report<R>(&self, f: impl FnOnce(&mut LeaseReport) -> R) -> R {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait::async_trait]
impl LeaseControl for LeaseShared {
    fn snapshot(&self) -> LeaseReport {
        self.with_report(|r| r.clone())
    }

    fn logs(&self) -> Result<LogStream> {
        self.parts.launcher.logs(&self.workload)
    }

    async fn report(&self) -> Result<LeaseReport> {
        let mut r = self.snapshot();
        if !r.state.is_closed() {
            let now = self.parts.clock.now().min(self.ends_at);
            match self.parts.escrow.accrued(r.lease, now).await {
                Ok(c) => r.cost = c,
                // Settled between the snapshot and the read: the final report is recorded.
                Err(_) if self.snapshot().state.is_closed() => return Ok(self.snapshot()),
                Err(e) => return Err(e),
            }
        }
        Ok(r)
    }

    async fn wait(&self) -> LeaseReport {
        let mut rx = self.closed_rx.clone();
        let _ = rx.wait_for(|c| *c).await;
        self.snapshot()
    }

    async fn stop(&self) -> Result<LeaseReport> {
        if *self.closed_rx.borrow() || *self.stop_tx.borrow() {
            return Err(Error::LeaseClosed(self.snapshot().lease));
        }
        self.stop_tx.send_replace(true);
        Ok(self.wait().await)
    }

    /// Embedded mode: the workload's own address on this machine, as its launcher exposes it
    /// (the local launcher: a loopback port), no token.
    async fn endpoint(&self, port: u16) -> Result<crate::launcher::Endpoint> {
        let lease = self.snapshot().lease;
        if *self.closed_rx.borrow() {
            return Err(Error::LeaseClosed(lease));
        }
        let addr = self
            .parts
            .launcher
            .port_addr(&self.workload, port)
            .ok_or_else(|| {
                Error::invalid(
                    "ports",
                    format!("port {port} is not exposed by lease {lease} (declare it with Workload::port)"),
                )
            })?;
        Ok(crate::launcher::Endpoint {
            port,
            url: format!("http://{addr}/"),
            token: None,
            cert_hash: None,
        })
    }
}

/// How a lease ended.
enum Ending {
    Stop,
    Expire,
    SpendCap,
    Idle(Duration),
    Exit(Result<WorkloadStatus>),
}

/// Resolves once the idle detector fires for `workload`; never, without a timeout or when
/// the launcher cannot report activity. A failed activity read counts as nothing seen.
async fn idle(
    launcher: &dyn WorkloadLauncher,
    workload: &WorkloadId,
    timeout: Option<Duration>,
) -> Duration {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let mut detector = IdleDetector::new(timeout);
    loop {
        tokio::time::sleep(detector.poll_interval()).await;
        match launcher.activity(workload).await {
            Ok(Some(a)) => {
                if let Some(quiet) = detector.observe(&a) {
                    tracing::info!(
                        %workload,
                        quiet_ms = a.quiet_ms,
                        gpu_measured = detector.gpu_measured(),
                        "idle: stopping the lease"
                    );
                    return quiet;
                }
            }
            Ok(None) => {
                tracing::warn!(
                    %workload,
                    "the launcher cannot report activity: the idle timeout is not enforced"
                );
                return std::future::pending().await;
            }
            Err(e) => tracing::debug!(%workload, error = %e, "reading activity"),
        }
    }
}

/// *Supervise*: waits for the tenant's stop, the paid duration's end or the workload's own
/// end, whichever comes first, then settles.
pub(super) async fn supervise(
    shared: Arc<LeaseShared>,
    mut stop_rx: watch::Receiver<bool>,
    closed_tx: watch::Sender<bool>,
    emit: Emitter,
) {
    let p = &shared.parts;
    let cap_at = shared.cap_at;
    let spend_cap = async {
        match cap_at {
            Some(at) => p.clock.sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        biased;
        _ = stop_rx.wait_for(|s| *s) => Ending::Stop,
        _ = p.clock.sleep_until(shared.ends_at) => Ending::Expire,
        _ = spend_cap => Ending::SpendCap,
        quiet = idle(p.launcher.as_ref(), &shared.workload, shared.idle_timeout) => Ending::Idle(quiet),
        status = p.launcher.wait(&shared.workload) => Ending::Exit(status),
    };
    // The clock stops here, before any teardown (log drain, object deletion) that the
    // tenant must not pay for; never bill past the paid duration or the spend cap.
    let mut at = p.clock.now().min(shared.ends_at);
    if let Some(cap) = shared.cap_at {
        at = at.min(cap);
    }
    settle(&shared, close_reason(ending), at, &emit).await;
    closed_tx.send_replace(true);
}

fn close_reason(ending: Ending) -> CloseReason {
    match ending {
        Ending::Stop => CloseReason::TenantStopped,
        Ending::Expire => CloseReason::Expired,
        Ending::SpendCap => CloseReason::SpendCapReached,
        Ending::Idle(quiet) => CloseReason::Idle {
            idle_secs: quiet.as_secs(),
        },
        Ending::Exit(Ok(WorkloadStatus::Succeeded)) => CloseReason::Completed,
        Ending::Exit(Ok(WorkloadStatus::Failed { exit_code })) => {
            CloseReason::WorkloadFailed { exit_code }
        }
        Ending::Exit(Ok(WorkloadStatus::Stopped)) => CloseReason::TenantStopped,
        Ending::Exit(Ok(other)) => CloseReason::ProviderFailed {
            detail: format!("workload ended in state {other:?}"),
        },
        Ending::Exit(Err(e)) => CloseReason::ProviderFailed {
            detail: e.to_string(),
        },
    }
}

/// *Settle*: every ending tears the workload down first (a workload that ended with an
/// error is stopped before its capacity is released), then the escrow settles at `at`,
/// capacity returns, the outcome is counted, the order closes, and the report is written
/// before `Settled` is announced (a subscriber that reads the report on `Settled` sees it
/// closed).
async fn settle(shared: &LeaseShared, reason: CloseReason, at: Timestamp, emit: &Emitter) {
    let p = &shared.parts;
    stop_quietly(p.launcher.as_ref(), &shared.workload).await;
    let (lease, order, provider, gpus) =
        shared.with_report(|r| (r.lease, r.order, r.provider, r.gpus));
    let settlement: Result<Settlement> = p.escrow.settle(lease, at).await;
    let commitment = shared
        .commitment
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(c) = commitment {
        c.settle(settlement.as_ref().ok().map(|s| s.paid));
    }
    if let Err(e) = p.registry.release(provider, &shared.node, gpus) {
        tracing::warn!(%lease, error = %e, "returning capacity failed");
    }
    let fault = reason.is_provider_fault();
    let _ = p.registry.update(provider, |pr| {
        if fault {
            pr.stats.leases_failed += 1;
        } else {
            pr.stats.leases_completed += 1;
        }
    });
    if let Err(e) = p.market.close_order(order).await {
        tracing::warn!(%order, error = %e, "closing the order failed");
    }
    shared.with_report(|r| {
        r.state = r
            .state
            .apply(LeaseEvent::Close(reason.clone()))
            .unwrap_or(LeaseState::Closed(reason.clone()));
        r.ended_at = Some(at);
        if let Ok(s) = &settlement {
            r.cost = s.paid;
            r.settlement = Some(*s);
        }
    });
    match &settlement {
        Ok(s) => emit.emit(Step::Settled {
            lease,
            provider,
            gpu_seconds: s.seconds.saturating_mul(u64::from(gpus)),
            reason,
            paid: s.paid,
            refunded: s.refunded,
        }),
        Err(e) => tracing::error!(%lease, error = %e, "settlement failed"),
    }
    shared.with_report(|r| r.progress = emit.progress());
}

pub(super) async fn stop_quietly(launcher: &dyn WorkloadLauncher, id: &WorkloadId) {
    if let Err(e) = launcher.stop(id).await {
        tracing::warn!(workload = %id, error = %e, "stopping the workload failed");
    }
}
