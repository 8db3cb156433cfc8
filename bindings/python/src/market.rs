//! `Marketplace`: the embedded marketplace or a network client, `rent` / `rent_async`,
//! progress events, balances.

use crate::backend::{Backend, Network};
use crate::convert::{PyBalance, PyProgressEvent, PyProviderInfo};
use crate::errors::{invalid, to_py, unsupported};
use crate::lease::PyLease;
use crate::matcher::PyMatcher;
use crate::request::{PyGpuRequest, parse_price, usd};
use crate::{block_on, block_on_uninterruptible, runtime};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use spheron::Marketplace;
use spheron::node::network::NetworkFile;
use spheron::node::tenant::to_core;
use spheron_core::{
    Error, GpuRequest, LeaseHandle, OrderId, ProgressEvent, Secret, Step, Workload,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A GPU marketplace: the embedded one (in-process market and escrow, the simulated fleet
/// of twelve providers, proof-of-GPU challenges, workloads run as local subprocesses) or a
/// tenant client of a network of independent provider nodes (`connect`).
#[pyclass(module = "spheron._native", name = "Marketplace", frozen)]
pub struct PyMarketplace {
    pub(crate) inner: Backend,
    matcher: Option<Arc<PyMatcher>>,
    /// Held by one rent from before it subscribes to events until its order is published:
    /// the first `Published` event a holder sees is its own, so concurrent rents (threads,
    /// `asyncio.gather`) never show each other's progress.
    publish: Arc<tokio::sync::Mutex<()>>,
}

/// Follows the progress events of one rent: the first `Published` event seen after
/// subscribing names the order. Its rent holds the marketplace's publish lock until then
/// (`permit`), so no other rent of this marketplace publishes in between.
struct OrderFilter {
    order: Option<OrderId>,
    permit: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl OrderFilter {
    fn keep(&mut self, e: &ProgressEvent) -> bool {
        match self.order {
            Some(o) => o == e.order,
            None if matches!(e.step, Step::Published { .. }) => {
                self.order = Some(e.order);
                self.permit = None;
                true
            }
            None => false,
        }
    }
}

/// Stops a lease whose rent finished after its caller went away (Ctrl-C, a cancelled
/// asyncio task): the flow itself is never cut in the middle.
struct RentGuard {
    task: Option<JoinHandle<spheron_core::Result<LeaseHandle>>>,
}

impl Drop for RentGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            runtime().spawn(async move {
                if let Ok(Ok(lease)) = task.await {
                    let _ = lease.stop().await;
                }
            });
        }
    }
}

impl PyMarketplace {
    fn map_err(&self, py: Python<'_>, e: Error) -> PyErr {
        let is_matcher = matches!(e, Error::Matcher(_));
        let err = to_py(py, Some(&self.inner), e);
        if is_matcher && let Some(cause) = self.matcher.as_ref().and_then(|m| m.take_error()) {
            err.set_cause(py, Some(cause));
        }
        err
    }

    /// Requests are priced in 6-decimal units (`GpuRequest` does not know the market it
    /// goes to): refuses a marketplace whose token has other decimals.
    fn check_token(&self, py: Python<'_>) -> PyResult<()> {
        let token = self.inner.token();
        if token.decimals == usd().decimals {
            return Ok(());
        }
        Err(invalid(
            py,
            "max_price_per_hour",
            format!(
                "this marketplace pays in {} with {} decimals; requests are priced with {}",
                token.symbol,
                token.decimals,
                usd().decimals
            ),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn workload(
        py: Python<'_>,
        command: Vec<String>,
        image: Option<String>,
        env: Option<BTreeMap<String, String>>,
        secrets: Option<BTreeMap<String, String>>,
        workdir: Option<PathBuf>,
        ports: Option<Vec<i64>>,
    ) -> PyResult<Workload> {
        if command.is_empty() && image.is_none() {
            return Err(invalid(
                py,
                "command",
                "a command (a string or a list of strings) is required",
            ));
        }
        let mut w = Workload::command(command);
        w.image = image;
        w.env = env.unwrap_or_default();
        w.secrets = secrets
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect();
        if let Some(k) = w.secrets.keys().find(|k| w.env.contains_key(*k)) {
            return Err(invalid(
                py,
                "secrets",
                format!("`{k}` is both in `env` and in `secrets`"),
            ));
        }
        if let Some(dir) = workdir {
            use spheron::node::workdir::{MAX_WORKDIR_BYTES, measure};
            measure(&dir, MAX_WORKDIR_BYTES).map_err(|e| invalid(py, "workdir", e.to_string()))?;
            w = w.workdir(dir);
        }
        for p in ports.unwrap_or_default() {
            let p = u16::try_from(p)
                .map_err(|_| invalid(py, "ports", format!("port {p} is outside 1-65535")))?;
            w = w.port(p);
        }
        w.validate().map_err(|e| to_py(py, None, e))?;
        Ok(w)
    }
}

/// The checkpoint policy of a rent's keyword arguments (`checkpoint_every` in seconds).
fn checkpoint_policy(
    py: Python<'_>,
    path: Option<String>,
    every: f64,
    max_resumes: u32,
    dir: Option<PathBuf>,
) -> PyResult<Option<spheron_core::Checkpoint>> {
    let Some(path) = path else {
        return Ok(None);
    };
    if !every.is_finite() || every <= 0.0 || every > 1e9 {
        return Err(invalid(
            py,
            "checkpoint_every",
            format!("{every}: expected a positive number of seconds"),
        ));
    }
    let mut c = spheron_core::Checkpoint::new(path, std::time::Duration::from_secs_f64(every))
        .map_err(|e| to_py(py, None, e))?
        .max_resumes(max_resumes);
    if let Some(d) = dir {
        c = c.local_dir(d);
    }
    Ok(Some(c))
}

fn emit(py: Python<'_>, cb: &Py<PyAny>, market: &Backend, e: &ProgressEvent) {
    if let Err(err) = cb.call1(py, (PyProgressEvent::new(market, e),)) {
        err.write_unraisable(py, Some(cb.bind(py)));
    }
}

#[pymethods]
impl PyMarketplace {
    /// Builds the embedded marketplace. `funds` (USD) are deposited for the tenant.
    #[staticmethod]
    #[pyo3(signature = (funds=None, *, seed=None, bid_window=0.2, max_attempts=3, matcher=None, spend_cap=None))]
    fn local(
        py: Python<'_>,
        funds: Option<&Bound<'_, PyAny>>,
        seed: Option<u64>,
        bid_window: f64,
        max_attempts: i64,
        matcher: Option<Bound<'_, PyAny>>,
        spend_cap: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let token = usd();
        let mut b = Marketplace::local().token(token.clone());
        if let Some(c) = spend_cap {
            b = b.spend_cap(parse_price(py, "spend_cap", c, &token)?);
        }
        if let Some(f) = funds {
            b = b.tenant_funds(parse_price(py, "funds", f, &token)?);
        }
        if let Some(s) = seed {
            b = b.seed(s);
        }
        if !bid_window.is_finite() || !(0.0..=3600.0).contains(&bid_window) {
            return Err(invalid(
                py,
                "bid_window",
                format!("{bid_window} s is outside 0..=3600 s"),
            ));
        }
        b = b.bid_window(Duration::from_secs_f64(bid_window));
        let attempts = usize::try_from(max_attempts)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                invalid(
                    py,
                    "max_attempts",
                    format!("{max_attempts} must be at least 1"),
                )
            })?;
        b = b.max_attempts(attempts);
        let matcher = match matcher {
            Some(m) => Some(Arc::new(PyMatcher::new(m, token.decimals)?)),
            None => None,
        };
        if let Some(m) = &matcher {
            b = b.matcher(m.clone());
        }
        let launcher = Arc::new(spheron::LocalLauncher::new());
        b = b.launcher(launcher.clone());
        let market = block_on_uninterruptible(py, b.build()).map_err(|e| to_py(py, None, e))?;
        Ok(PyMarketplace {
            inner: Backend::Local(Arc::new(crate::backend::Local { market, launcher })),
            matcher,
            publish: Arc::default(),
        })
    }

    /// Connects to the network described by the `network.json` at `network` (default:
    /// `$SPHERON_NETWORK`) as the tenant holding the 0x-hex private `key` (default:
    /// `$SPHERON_KEY`, else the network file's first tenant account).
    #[staticmethod]
    #[pyo3(signature = (network=None, key=None, *, spend_cap=None))]
    fn connect(
        py: Python<'_>,
        network: Option<PathBuf>,
        key: Option<String>,
        spend_cap: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        // The network's token is only known once connected: the cap is parsed with the
        // requests' 6 decimals, which `rent` checks the market's token against.
        let spend_cap = match spend_cap {
            Some(c) => Some(parse_price(py, "spend_cap", c, &usd())?),
            None => None,
        };
        let path = match network {
            Some(p) => p,
            None => match std::env::var_os("SPHERON_NETWORK") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    return Err(invalid(
                        py,
                        "network",
                        "no network file: pass `network=` or set SPHERON_NETWORK (`spheron devnet` writes one)",
                    ));
                }
            },
        };
        let key = match key.or_else(|| std::env::var("SPHERON_KEY").ok().filter(|k| !k.is_empty()))
        {
            Some(k) => k,
            None => {
                let file = NetworkFile::load(&path).map_err(|e| to_py(py, None, to_core(e)))?;
                file.tenants.first().map(|t| t.key.clone()).ok_or_else(|| {
                    invalid(
                        py,
                        "key",
                        format!(
                            "no key given and {} lists no tenant account: pass `key=` or set SPHERON_KEY",
                            path.display()
                        ),
                    )
                })?
            }
        };
        let at = path.clone();
        let connected = block_on(
            py,
            async move {
                let config = spheron::TenantConfig {
                    spend_cap,
                    ..spheron::TenantConfig::default()
                };
                let market = Marketplace::connect_with(&at, &key, config).await?;
                Ok::<_, Error>(Network::new(market, at).await)
            },
            |_| Ok(()),
        )?
        .map_err(|e| to_py(py, None, e))?;
        Ok(PyMarketplace {
            inner: Backend::Network(Arc::new(connected)),
            matcher: None,
            publish: Arc::default(),
        })
    }

    /// Rents GPUs and starts `command` on them; returns once it runs. Blocks with the GIL
    /// released; `on_event` is called with each progress event of this rent (and of no
    /// other). `secrets` reach the workload's environment and are never logged.
    #[pyo3(signature = (request, *, command, image=None, env=None, secrets=None, workdir=None, on_event=None, ports=None, checkpoint=None, checkpoint_every=30.0, max_resumes=2, checkpoint_dir=None))]
    #[allow(clippy::too_many_arguments)]
    fn rent(
        &self,
        py: Python<'_>,
        request: PyRef<'_, PyGpuRequest>,
        command: Vec<String>,
        image: Option<String>,
        env: Option<BTreeMap<String, String>>,
        secrets: Option<BTreeMap<String, String>>,
        workdir: Option<PathBuf>,
        on_event: Option<Py<PyAny>>,
        ports: Option<Vec<i64>>,
        checkpoint: Option<String>,
        checkpoint_every: f64,
        max_resumes: u32,
        checkpoint_dir: Option<PathBuf>,
    ) -> PyResult<PyLease> {
        let workload = Self::workload(py, command, image, env, secrets, workdir, ports)?;
        let policy = checkpoint_policy(
            py,
            checkpoint,
            checkpoint_every,
            max_resumes,
            checkpoint_dir,
        )?;
        self.check_token(py)?;
        let req: GpuRequest = request.inner.clone();
        let permit = block_on(py, self.publish.clone().lock_owned(), |_| Ok(()))?;
        let mut events = self.inner.events();
        let market = self.inner.clone();
        let mut guard = RentGuard {
            task: Some(runtime().spawn(market.rent_checkpointed(req, workload, policy))),
        };
        let mut filter = OrderFilter {
            order: None,
            permit: Some(permit),
        };
        let market = self.inner.clone();
        let mut forward = |py: Python<'_>| -> PyResult<()> {
            while let Some(Some(e)) = events.next().now_or_never() {
                if filter.keep(&e)
                    && let Some(cb) = &on_event
                {
                    emit(py, cb, &market, &e);
                }
            }
            Ok(())
        };
        let task = guard.task.as_mut().ok_or_else(|| {
            pyo3::exceptions::PyRuntimeError::new_err("spheron: rent task missing")
        })?;
        let joined = match block_on(py, task, &mut forward) {
            Ok(j) => j,
            Err(interrupt) => {
                // Ctrl-C: let the flow finish (it never stops half-way), then stop and
                // settle whatever lease it produced before re-raising.
                if let Some(task) = guard.task.take() {
                    block_on_uninterruptible(py, async move {
                        if let Ok(Ok(lease)) = task.await {
                            let _ = lease.stop().await;
                        }
                    });
                }
                return Err(interrupt);
            }
        };
        guard.task = None;
        let handle = joined
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("spheron: rent task failed: {e}"))
            })?
            .map_err(|e| self.map_err(py, e))?;
        Ok(PyLease::new(self.inner.clone(), handle))
    }

    /// The awaitable twin of `rent`.
    #[pyo3(signature = (request, *, command, image=None, env=None, secrets=None, workdir=None, on_event=None, ports=None, checkpoint=None, checkpoint_every=30.0, max_resumes=2, checkpoint_dir=None))]
    #[allow(clippy::too_many_arguments)]
    fn rent_async<'py>(
        slf: Py<Self>,
        py: Python<'py>,
        request: PyRef<'_, PyGpuRequest>,
        command: Vec<String>,
        image: Option<String>,
        env: Option<BTreeMap<String, String>>,
        secrets: Option<BTreeMap<String, String>>,
        workdir: Option<PathBuf>,
        on_event: Option<Py<PyAny>>,
        ports: Option<Vec<i64>>,
        checkpoint: Option<String>,
        checkpoint_every: f64,
        max_resumes: u32,
        checkpoint_dir: Option<PathBuf>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let workload = Self::workload(py, command, image, env, secrets, workdir, ports)?;
        let policy = checkpoint_policy(
            py,
            checkpoint,
            checkpoint_every,
            max_resumes,
            checkpoint_dir,
        )?;
        slf.get().check_token(py)?;
        let req: GpuRequest = request.inner.clone();
        let this = slf.get();
        let market = this.inner.clone();
        let publish = this.publish.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let permit = publish.lock_owned().await;
            let mut events = market.events();
            let flow_market = market.clone();
            let mut guard = RentGuard {
                task: Some(runtime().spawn(flow_market.rent_checkpointed(req, workload, policy))),
            };
            let mut filter = OrderFilter {
                order: None,
                permit: Some(permit),
            };
            let joined = loop {
                let Some(task) = guard.task.as_mut() else {
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "spheron: rent task missing",
                    ));
                };
                tokio::select! {
                    j = task => break j,
                    Some(e) = events.next() => {
                        if filter.keep(&e) && let Some(cb) = &on_event {
                            Python::attach(|py| emit(py, cb, &market, &e));
                        }
                    }
                }
            };
            guard.task = None;
            while let Some(Some(e)) = events.next().now_or_never() {
                if filter.keep(&e)
                    && let Some(cb) = &on_event
                {
                    Python::attach(|py| emit(py, cb, &market, &e));
                }
            }
            let handle = joined
                .map_err(|e| {
                    pyo3::exceptions::PyRuntimeError::new_err(format!(
                        "spheron: rent task failed: {e}"
                    ))
                })?
                .map_err(|e| Python::attach(|py| slf.get().map_err(py, e)))?;
            Ok(PyLease::new(market, handle))
        })
    }

    /// What each provider would bid on `request` now, cheapest first; nothing is published
    /// or locked. On a network every registered provider's gateway is asked.
    fn quote(
        &self,
        py: Python<'_>,
        request: PyRef<'_, PyGpuRequest>,
    ) -> PyResult<Vec<crate::quote::PyQuote>> {
        self.check_token(py)?;
        match &self.inner {
            Backend::Local(m) => {
                let req = request.inner.clone();
                let providers = m.providers();
                let tenant = m.tenant();
                let decimals = m.token().decimals;
                block_on(
                    py,
                    async move { crate::quote::local_quotes(&req, providers, tenant, decimals).await },
                    |_| Ok(()),
                )
            }
            Backend::Network(n) => {
                let n = n.clone();
                let req = request.inner.clone();
                let decimals = self.inner.token().decimals;
                let quotes = block_on(py, async move { n.market.quote(&req).await }, |_| Ok(()))?
                    .map_err(|e| to_py(py, Some(&self.inner), e))?;
                Ok(quotes
                    .quotes
                    .iter()
                    .map(|q| crate::quote::PyQuote::network(q, decimals))
                    .collect())
            }
        }
    }

    /// Progress events of every rent from now on, as a sync and async iterator.
    fn events(&self) -> PyEventIterator {
        PyEventIterator {
            stream: Arc::new(tokio::sync::Mutex::new(self.inner.events())),
            market: self.inner.clone(),
        }
    }

    /// The tenant's escrow balance.
    fn balance(&self, py: Python<'_>) -> PyResult<PyBalance> {
        let b = block_on(py, self.inner.clone().balance(), |_| Ok(()))?
            .map_err(|e| to_py(py, Some(&self.inner), e))?;
        Ok(PyBalance::new(b, self.inner.token().decimals))
    }

    /// Deposits `amount` (whole tokens) into the tenant's escrow account; on a network,
    /// from the tenant's wallet.
    fn deposit(&self, py: Python<'_>, amount: &Bound<'_, PyAny>) -> PyResult<()> {
        let a = parse_price(py, "amount", amount, &self.inner.token())?;
        block_on_uninterruptible(py, self.inner.clone().deposit(a))
            .map_err(|e| to_py(py, Some(&self.inner), e))
    }

    /// Withdraws `amount` (whole tokens) of available escrow funds; on a network, back to
    /// the tenant's wallet.
    fn withdraw(&self, py: Python<'_>, amount: &Bound<'_, PyAny>) -> PyResult<()> {
        let a = parse_price(py, "amount", amount, &self.inner.token())?;
        block_on_uninterruptible(py, self.inner.clone().withdraw(a))
            .map_err(|e| to_py(py, Some(&self.inner), e))
    }

    /// Every provider of the marketplace (on a network: of the on-chain registry).
    fn providers(&self, py: Python<'_>) -> PyResult<Vec<PyProviderInfo>> {
        let d = self.inner.token().decimals;
        let list = block_on(py, self.inner.clone().providers(), |_| Ok(()))?
            .map_err(|e| to_py(py, Some(&self.inner), e))?;
        Ok(list.iter().map(|p| PyProviderInfo::new(p, d)).collect())
    }

    /// The payment token's symbol.
    #[getter]
    fn token(&self) -> String {
        self.inner.token().symbol
    }

    /// The tenant's address (hex).
    #[getter]
    fn tenant(&self) -> String {
        self.inner.tenant()
    }

    /// `local` (embedded) or `network`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// The network file this client was connected with; `None` when embedded.
    #[getter]
    fn network(&self) -> Option<String> {
        match &self.inner {
            Backend::Local(_) => None,
            Backend::Network(n) => Some(n.path.display().to_string()),
        }
    }

    /// Whether the escrow ledger holds exactly what it owes (conservation audit). Embedded
    /// only: raises `UnsupportedError` on a network.
    fn ledger_balanced(&self, py: Python<'_>) -> PyResult<bool> {
        match &self.inner {
            Backend::Local(m) => Ok(m.ledger_totals().is_some_and(|t| t.is_balanced())),
            Backend::Network(_) => Err(unsupported(py, "ledger_balanced", "network")),
        }
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            Backend::Local(m) => format!(
                "Marketplace.local(providers={}, token={})",
                m.providers().len(),
                m.token().symbol
            ),
            Backend::Network(n) => format!(
                "Marketplace.connect(network={:?}, tenant={}, token={})",
                n.path.display().to_string(),
                n.market.tenant(),
                n.market.token().symbol
            ),
        }
    }
}

/// Progress events as they happen: `for e in it` (blocking, GIL released, Ctrl-C honoured)
/// or `async for e in it`.
#[pyclass(module = "spheron._native", name = "EventIterator", frozen)]
pub struct PyEventIterator {
    stream: Arc<tokio::sync::Mutex<BoxStream<'static, ProgressEvent>>>,
    market: Backend,
}

#[pymethods]
impl PyEventIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyProgressEvent>> {
        let stream = self.stream.clone();
        let next = block_on(py, async move { stream.lock().await.next().await }, |_| {
            Ok(())
        })?;
        Ok(next.map(|e| PyProgressEvent::new(&self.market, &e)))
    }

    /// The next event, or `None` after `timeout` seconds without one.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyProgressEvent>> {
        let stream = self.stream.clone();
        let limit = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Duration::from_secs_f64(t),
            Some(t) => {
                return Err(invalid(
                    py,
                    "timeout",
                    format!("{t} is not a number of seconds >= 0"),
                ));
            }
            None => Duration::MAX,
        };
        let next = block_on(
            py,
            async move {
                tokio::time::timeout(limit, async move { stream.lock().await.next().await })
                    .await
                    .ok()
                    .flatten()
            },
            |_| Ok(()),
        )?;
        Ok(next.map(|e| PyProgressEvent::new(&self.market, &e)))
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.stream.clone();
        let market = self.market.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match stream.lock().await.next().await {
                Some(e) => Ok(PyProgressEvent::new(&market, &e)),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }
}
