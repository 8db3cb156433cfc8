//! `Lease`: a running lease; a context manager (sync and async) that always stops and
//! settles on exit; logs as a sync and async iterator.
//!
//! Every lease handed to Python is also kept in a process-wide registry of open leases:
//! [`settle_open_leases`] (registered with `atexit` by the package) stops and settles the
//! ones still open when the interpreter exits, and a `Lease` object collected while its
//! lease is open warns (`spheron.errors.UnclosedLeaseWarning`) and stops it.

use crate::backend::Backend;
use crate::convert::{PyLeaseReport, PyLogLine};
use crate::errors::{invalid, to_py, wait_timeout};
use crate::{block_on, block_on_uninterruptible};
use futures::StreamExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use spheron_core::{LeaseHandle, LogSource, LogStream};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long settling the leases left open at interpreter exit may take in all.
pub const EXIT_SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// Leases handed to Python, by registration key, until they are seen closed.
static OPEN: Mutex<BTreeMap<u64, LeaseHandle>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn open_leases() -> std::sync::MutexGuard<'static, BTreeMap<u64, LeaseHandle>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers `handle` as open (forgetting registered leases that have closed meanwhile).
fn register(handle: &LeaseHandle) -> u64 {
    let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    let mut open = open_leases();
    open.retain(|_, h| !h.state().is_closed());
    open.insert(key, handle.clone());
    key
}

/// Stops `h` (a lease that closed meanwhile is fine) and waits for its settlement.
async fn stop_and_settle(h: &LeaseHandle) -> spheron_core::LeaseReport {
    let _ = h.stop().await;
    h.wait().await
}

/// Stops and settles every lease handed to Python that is still open; returns their ids.
/// Registered with `atexit` by the `spheron` package, so that a lease never outlives the
/// interpreter. Bounded by [`EXIT_SETTLE_LIMIT`] in all.
#[pyfunction]
pub fn settle_open_leases(py: Python<'_>) -> Vec<u64> {
    let open: Vec<LeaseHandle> = std::mem::take(&mut *open_leases())
        .into_values()
        .filter(|h| !h.state().is_closed())
        .collect();
    if open.is_empty() {
        return Vec::new();
    }
    let ids: Vec<u64> = open.iter().map(|h| h.id().0).collect();
    block_on_uninterruptible(py, async move {
        let all = futures::future::join_all(open.iter().map(stop_and_settle));
        let _ = tokio::time::timeout(EXIT_SETTLE_LIMIT, all).await;
    });
    ids
}

/// A lease on rented GPUs.
#[pyclass(module = "spheron._native", name = "Lease", frozen)]
pub struct PyLease {
    market: Backend,
    handle: LeaseHandle,
    key: u64,
}

impl Drop for PyLease {
    /// A lease collected while still open: warn, and stop it in the background (the
    /// registry keeps it until exit, where [`settle_open_leases`] waits for its settlement).
    fn drop(&mut self) {
        if self.handle.state().is_closed() {
            open_leases().remove(&self.key);
            return;
        }
        let id = self.handle.id().0;
        Python::attach(|py| {
            let message = format!(
                "lease {id} was still open when its Lease object was collected: stopping it \
                 (use `with market.rent(...) as lease:` or call lease.stop())"
            );
            let category = py
                .import("spheron.errors")
                .and_then(|m| m.getattr("UnclosedLeaseWarning"))
                .unwrap_or_else(|_| {
                    py.get_type::<pyo3::exceptions::PyResourceWarning>()
                        .into_any()
                });
            if let Ok(text) = std::ffi::CString::new(message)
                && let Err(e) = PyErr::warn(py, &category, &text, 1)
            {
                e.write_unraisable(py, None);
            }
        });
        let h = self.handle.clone();
        crate::runtime().spawn(async move {
            stop_and_settle(&h).await;
        });
    }
}

impl PyLease {
    pub(crate) fn new(market: Backend, handle: LeaseHandle) -> Self {
        let key = register(&handle);
        PyLease {
            market,
            handle,
            key,
        }
    }

    fn report_of(&self, r: &spheron_core::LeaseReport) -> PyLeaseReport {
        PyLeaseReport::new(&self.market, r)
    }

    /// Stops the lease unless it has closed, then waits for settlement; ignores signals.
    fn settle(&self, py: Python<'_>) -> PyLeaseReport {
        let h = self.handle.clone();
        let r = block_on_uninterruptible(py, async move { stop_and_settle(&h).await });
        self.report_of(&r)
    }
}

/// Stops the lease; one that is closed or closing already (a second `stop`, a `stop` while
/// another settles it, a workload that ended) gives its final report once settled.
async fn stop_idempotent(h: LeaseHandle) -> spheron_core::Result<spheron_core::LeaseReport> {
    match h.stop().await {
        Ok(r) => Ok(r),
        Err(spheron_core::Error::LeaseClosed(_)) => Ok(h.wait().await),
        Err(e) => Err(e),
    }
}

#[pymethods]
impl PyLease {
    /// The lease id.
    #[getter]
    fn id(&self) -> u64 {
        self.handle.id().0
    }

    /// `active` while running, `closed` once closed.
    #[getter]
    fn status(&self) -> String {
        match self.handle.state() {
            spheron_core::LeaseState::Closed(_) => "closed".into(),
            s => s.to_string(),
        }
    }

    /// Whether the lease has closed and been settled.
    #[getter]
    fn closed(&self) -> bool {
        self.handle.state().is_closed()
    }

    /// The report now: provider, tier, score breakdown, proof, price, cost so far (final
    /// once closed), refund once settled.
    #[getter]
    fn report(&self, py: Python<'_>) -> PyResult<PyLeaseReport> {
        let h = self.handle.clone();
        let r = block_on_uninterruptible(py, async move { h.report().await })
            .map_err(|e| to_py(py, Some(&self.market), e))?;
        Ok(self.report_of(&r))
    }

    /// The workload's output from the beginning, as an iterator of `LogLine` (sync and
    /// async); ends when the workload's output ends. `system=True` includes the launcher's
    /// own notices.
    #[pyo3(signature = (*, system=false))]
    fn logs(&self, py: Python<'_>, system: bool) -> PyResult<PyLogIterator> {
        let stream = self
            .handle
            .logs()
            .map_err(|e| to_py(py, Some(&self.market), e))?;
        Ok(PyLogIterator {
            stream: Arc::new(tokio::sync::Mutex::new(stream)),
            system,
            lease: self.handle.clone(),
        })
    }

    /// Waits until the lease closes and is settled; returns the final report. With a
    /// `timeout` (seconds) raises `WaitTimeoutError` if it is still running then. Ctrl-C
    /// stops and settles the lease, then raises `KeyboardInterrupt`.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyLeaseReport> {
        let limit = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(invalid(
                    py,
                    "timeout",
                    format!("{t} is not a number of seconds >= 0"),
                ));
            }
            None => None,
        };
        let h = self.handle.clone();
        let fut = async move {
            match limit {
                Some(l) => tokio::time::timeout(l, h.wait()).await.ok(),
                None => Some(h.wait().await),
            }
        };
        match block_on(py, fut, |_| Ok(())) {
            Ok(Some(r)) => Ok(self.report_of(&r)),
            Ok(None) => Err(wait_timeout(py, self.id(), timeout.unwrap_or_default())),
            Err(interrupt) => {
                self.settle(py);
                Err(interrupt)
            }
        }
    }

    /// Stops the lease, waits for settlement and returns the final report. Idempotent: on a
    /// lease that is closed or being settled it returns the final report once settled.
    fn stop(&self, py: Python<'_>) -> PyResult<PyLeaseReport> {
        let h = self.handle.clone();
        let r = block_on_uninterruptible(py, stop_idempotent(h))
            .map_err(|e| to_py(py, Some(&self.market), e))?;
        Ok(self.report_of(&r))
    }

    /// Copies file `path` of the workload's working directory (e.g. `outputs/model.ckpt`)
    /// to `dest` (a file, or a directory to put it in under its own name); returns the
    /// bytes written. The provider keeps the files until the lease has ended plus a grace
    /// period.
    fn download(&self, py: Python<'_>, path: String, dest: PathBuf) -> PyResult<u64> {
        let dest = match std::path::Path::new(&path).file_name() {
            Some(name) if dest.is_dir() => dest.join(name),
            _ => dest,
        };
        let market = self.market.clone();
        let id = self.handle.id().0;
        block_on(py, market.download(id, path, dest), |_| Ok(()))?
            .map_err(|e| to_py(py, Some(&self.market), e))
    }

    /// How to reach `port`, declared with `rent(..., ports=[port])`, while the lease runs:
    /// an `Endpoint` with the URL and the headers (bearer token) to send. Raises
    /// `LeaseClosedError` once the lease has ended, `InvalidRequestError` (`field="ports"`)
    /// for a port the embedded marketplace's workload did not declare.
    fn endpoint(&self, py: Python<'_>, port: u16) -> PyResult<crate::convert::PyEndpoint> {
        let h = self.handle.clone();
        block_on(py, async move { h.endpoint(port).await }, |_| Ok(()))?
            .map(Into::into)
            .map_err(|e| to_py(py, Some(&self.market), e))
    }

    /// The awaitable twin of `wait`.
    fn wait_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        let market = self.market.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let r = h.wait().await;
            Ok(PyLeaseReport::new(&market, &r))
        })
    }

    /// The awaitable twin of `stop`.
    fn stop_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        let market = self.market.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match stop_idempotent(h).await {
                Ok(r) => Ok(PyLeaseReport::new(&market, &r)),
                Err(e) => Err(Python::attach(|py| to_py(py, Some(&market), e))),
            }
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Stops the lease unless it has closed, and waits for settlement; never swallows the
    /// body's exception.
    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.settle(py);
        false
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(slf) })
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_type: Option<Bound<'py, PyAny>>,
        _exc: Option<Bound<'py, PyAny>>,
        _tb: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        // Settling runs in its own task, so a cancelled `async with` still settles.
        let settle = crate::runtime().spawn(async move { stop_and_settle(&h).await });
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let _ = settle.await;
            Ok(false)
        })
    }

    fn __repr__(&self) -> String {
        let r = self.handle.clone();
        format!("Lease(id={}, {})", r.id().0, r.state())
    }
}

/// A lease's log lines: `for line in it` (blocking, GIL released) or `async for`.
/// Ctrl-C while waiting for a line stops and settles the lease, then raises.
#[pyclass(module = "spheron._native", name = "LogIterator", frozen)]
pub struct PyLogIterator {
    stream: Arc<tokio::sync::Mutex<LogStream>>,
    system: bool,
    lease: LeaseHandle,
}

async fn next_line(
    stream: Arc<tokio::sync::Mutex<LogStream>>,
    system: bool,
) -> Option<spheron_core::LogLine> {
    let mut s = stream.lock().await;
    loop {
        match s.next().await {
            Some(l) if !system && l.source == LogSource::System => continue,
            other => return other,
        }
    }
}

#[pymethods]
impl PyLogIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyLogLine>> {
        match block_on(py, next_line(self.stream.clone(), self.system), |_| Ok(())) {
            Ok(l) => Ok(l.map(PyLogLine::from)),
            Err(interrupt) => {
                let h = self.lease.clone();
                block_on_uninterruptible(py, async move { stop_and_settle(&h).await });
                Err(interrupt)
            }
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.stream.clone();
        let system = self.system;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match next_line(stream, system).await {
                Some(l) => Ok(PyLogLine::from(l)),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}
