//! [`LeaseControl`]: what a [`LeaseHandle`] drives (the embedded flow's supervisor, or a
//! network client), and the handle itself.

use super::LeaseReport;
use crate::Result;
use crate::ids::LeaseId;
use crate::launcher::LogStream;
use crate::lease::LeaseState;
use std::sync::Arc;

/// What a [`LeaseHandle`] drives: the embedded flow's supervisor here, or a network client
/// that reads the lease from the chain and the provider's gateway (`spheron-node`).
#[async_trait::async_trait]
pub trait LeaseControl: Send + Sync {
    /// The report as last recorded (no I/O).
    fn snapshot(&self) -> LeaseReport;
    /// The workload's output from the beginning; ends when the workload ends.
    fn logs(&self) -> Result<LogStream>;
    /// The report now, with the cost accrued so far while the lease runs; an error when the
    /// cost cannot be read (never a guessed cost).
    async fn report(&self) -> Result<LeaseReport>;
    /// Waits until the lease is closed and settled; returns the final report.
    async fn wait(&self) -> LeaseReport;
    /// Stops the lease, waits for settlement and returns the final report; a lease that is
    /// already closed (or stopping) gives [`Error::LeaseClosed`](crate::Error::LeaseClosed).
    async fn stop(&self) -> Result<LeaseReport>;
    /// How to reach the workload's declared `port` while the lease runs. The default: this
    /// backend exposes no ports ([`Error::InvalidField`](crate::Error::InvalidField) naming
    /// `ports`).
    async fn endpoint(&self, port: u16) -> Result<crate::launcher::Endpoint> {
        Err(crate::Error::invalid(
            "ports",
            format!("port {port}: this lease's backend exposes no ports"),
        ))
    }
}

/// A handle on a running lease. Dropping it does not stop the lease.
#[derive(Clone)]
pub struct LeaseHandle {
    inner: Arc<dyn LeaseControl>,
}

impl std::fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHandle")
            .field("lease", &self.id())
            .finish_non_exhaustive()
    }
}

impl LeaseHandle {
    /// A handle driving `control`.
    pub fn new(control: Arc<dyn LeaseControl>) -> Self {
        LeaseHandle { inner: control }
    }

    /// The lease id.
    pub fn id(&self) -> LeaseId {
        self.inner.snapshot().lease
    }

    /// The state now.
    pub fn state(&self) -> LeaseState {
        self.inner.snapshot().state
    }

    /// The workload's output from the beginning; ends when the workload ends.
    pub fn logs(&self) -> Result<LogStream> {
        self.inner.logs()
    }

    /// The report as last recorded, without I/O (the cost is final once closed, zero
    /// before).
    pub fn snapshot(&self) -> LeaseReport {
        self.inner.snapshot()
    }

    /// The report now, with the cost accrued so far while the lease runs.
    ///
    /// Errors: whatever the escrow (or chain) says when the accrued cost cannot be read; the
    /// cost is never guessed.
    pub async fn report(&self) -> Result<LeaseReport> {
        self.inner.report().await
    }

    /// Waits until the lease is closed and settled; returns the final report.
    pub async fn wait(&self) -> LeaseReport {
        self.inner.wait().await
    }

    /// Stops the lease, waits for settlement and returns the final report.
    /// A lease that is already closed gives [`Error::LeaseClosed`](crate::Error::LeaseClosed).
    pub async fn stop(&self) -> Result<LeaseReport> {
        self.inner.stop().await
    }

    /// How to reach port `port` that the workload declared ([`Workload::port`]) while the
    /// lease runs: in network mode the provider gateway's proxy URL with a bearer token; in
    /// embedded mode the workload's own loopback address.
    ///
    /// Errors: [`Error::LeaseClosed`](crate::Error::LeaseClosed) once the lease has ended;
    /// embedded, [`Error::InvalidField`](crate::Error::InvalidField) naming `ports` when the
    /// port was not declared or the launcher exposes none (in network mode the gateway refuses
    /// requests to such a port with `no_such_port`).
    ///
    /// [`Workload::port`]: crate::Workload::port
    pub async fn endpoint(&self, port: u16) -> Result<crate::launcher::Endpoint> {
        self.inner.endpoint(port).await
    }
}
