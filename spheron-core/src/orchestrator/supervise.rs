//! The last two steps of the rent flow: *supervise* a running lease until it ends, then
//! *settle* it (tear down, settle the escrow, return capacity, record the outcome).

use super::{Emitter, LeaseControl, LeaseReport, Parts};
use crate::clock::Timestamp;
use crate::escrow::Settlement;
use crate::events::Step;
use crate::launcher::{LogStream, WorkloadId, WorkloadLauncher, WorkloadStatus};
use crate::lease::{CloseReason, LeaseEvent, LeaseState};
use crate::{Error, Result};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the supervisor and every [`super::LeaseHandle`] of one lease share.
pub(super) struct LeaseShared {
    pub(super) report: Mutex<LeaseReport>,
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) closed_rx: watch::Receiver<bool>,
    pub(super) workload: WorkloadId,
    pub(super) ends_at: Timestamp,
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
    Exit(Result<WorkloadStatus>),
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
    let ending = tokio::select! {
        biased;
        _ = stop_rx.wait_for(|s| *s) => Ending::Stop,
        _ = p.clock.sleep_until(shared.ends_at) => Ending::Expire,
        status = p.launcher.wait(&shared.workload) => Ending::Exit(status),
    };
    // The clock stops here, before any teardown (log drain, object deletion) that the
    // tenant must not pay for; never bill past the paid duration.
    let at = p.clock.now().min(shared.ends_at);
    settle(&shared, close_reason(ending), at, &emit).await;
    closed_tx.send_replace(true);
}

fn close_reason(ending: Ending) -> CloseReason {
    match ending {
        Ending::Stop => CloseReason::TenantStopped,
        Ending::Expire => CloseReason::Expired,
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
