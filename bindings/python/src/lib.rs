//! # spheron-python
//!
//! The native module `spheron._native` behind the pure-Python package `spheron`: rent GPUs
//! on the embedded marketplace from Python.
//!
//! Every blocking call runs its Rust future on one shared multi-threaded Tokio runtime with
//! the GIL released, waking every [`TICK`] to honour signals: Ctrl-C (`KeyboardInterrupt`)
//! during a call that waits on a lease stops the lease and waits for its settlement before
//! the exception propagates. The `_async` twins run the same futures on the same runtime
//! and hand them to asyncio through `pyo3-async-runtimes`.
//!
//! Errors of [`spheron_core::Error`] become the exception classes of `spheron.errors`
//! (the table is in the `errors` module); the Python package documents the API.

mod backend;
mod convert;
mod errors;
mod lease;
mod market;
mod matcher;
mod quote;
mod request;
mod training;

use pyo3::prelude::*;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Runtime;

/// How often a blocking call wakes up to check for signals (Ctrl-C) and progress events.
pub const TICK: Duration = Duration::from_millis(25);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The one Tokio runtime shared by every call, sync or async.
pub(crate) fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        // A runtime that cannot start leaves the module unusable; say why in the panic
        // that PyO3 turns into a Python `PanicException` at import.
        #[allow(clippy::expect_used)]
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("spheron-rt")
            .build()
            .expect("spheron: cannot start the Tokio runtime");
        rt
    })
}

/// Runs `fut` to completion on the shared runtime with the GIL released, waking every
/// [`TICK`] to check for signals and to call `tick`. A signal's exception (for example
/// `KeyboardInterrupt`) or an error of `tick` ends the wait early with that error; `fut`
/// is then dropped, so callers pass a future whose drop is harmless (a `JoinHandle`, a
/// watch) and do their own clean-up.
pub(crate) fn block_on<F>(
    py: Python<'_>,
    fut: F,
    mut tick: impl FnMut(Python<'_>) -> PyResult<()>,
) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime();
    let mut fut = std::pin::pin!(fut);
    loop {
        // The timer must be created inside the runtime's context.
        let step = py.detach(|| run(rt, async { tokio::time::timeout(TICK, fut.as_mut()).await }));
        tick(py)?;
        match step {
            Ok(v) => return Ok(v),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// Runs `fut` to completion with the GIL released, ignoring signals: for clean-up that
/// must finish (stopping and settling a lease).
pub(crate) fn block_on_uninterruptible<F>(py: Python<'_>, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime();
    py.detach(|| run(rt, fut))
}

/// Blocks the current thread on `fut`. On a worker thread of a multi-threaded runtime (a
/// Python matcher or progress callback calling back into spheron) it blocks in place, so
/// nested blocking calls work instead of panicking.
fn run<F: Future>(rt: &'static Runtime, fut: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(fut))
        }
        _ => rt.block_on(fut),
    }
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(runtime());
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<request::PyGpuRequest>()?;
    m.add_class::<market::PyMarketplace>()?;
    m.add_class::<market::PyEventIterator>()?;
    m.add_class::<lease::PyLease>()?;
    m.add_class::<lease::PyLogIterator>()?;
    m.add_class::<convert::PyLeaseReport>()?;
    m.add_class::<convert::PyResume>()?;
    m.add_class::<convert::PyProgressEvent>()?;
    m.add_class::<convert::PySkipped>()?;
    m.add_class::<convert::PyScoreItem>()?;
    m.add_class::<convert::PyProofResult>()?;
    m.add_class::<convert::PyLogLine>()?;
    m.add_class::<convert::PyEndpoint>()?;
    m.add_class::<convert::PyBalance>()?;
    m.add_class::<convert::PyProviderInfo>()?;
    m.add_class::<matcher::PyOrder>()?;
    m.add_class::<matcher::PyBid>()?;
    m.add_class::<quote::PyQuote>()?;
    m.add_function(wrap_pyfunction!(lease::settle_open_leases, m)?)?;
    m.add_function(wrap_pyfunction!(training::torchrun_workload, m)?)?;
    Ok(())
}
