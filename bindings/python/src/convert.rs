//! Value types handed to Python: reports, events, log lines, balances. All frozen.

use crate::backend::Backend;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use spheron_core::{
    AccountId, Amount, Balance, LeaseReport, LeaseState, LogLine, LogSource, ProgressEvent,
    Provider, Rejection, Step, Verdict,
};
use std::fmt;

static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// An amount of the marketplace token; becomes a `decimal.Decimal` in whole tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    /// Base units.
    pub units: u128,
    /// Base units per whole token, as a power of ten.
    pub decimals: u8,
}

impl Money {
    /// `amount` of a token with `decimals`.
    pub fn new(amount: Amount, decimals: u8) -> Self {
        Money {
            units: amount.0,
            decimals,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.decimals == 0 {
            return write!(f, "{}", self.units);
        }
        let scale = 10u128.pow(u32::from(self.decimals));
        write!(
            f,
            "{}.{:0width$}",
            self.units / scale,
            self.units % scale,
            width = usize::from(self.decimals)
        )
    }
}

impl<'py> IntoPyObject<'py> for Money {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let cls = DECIMAL.import(py, "decimal", "Decimal")?;
        cls.call1((self.to_string(),))
    }
}

/// Provider id → name, from the marketplace's registry.
pub(crate) fn provider_name(market: &Backend, id: AccountId) -> Option<String> {
    market.provider_name(id)
}

/// A provider that was skipped for an order, and why.
#[pyclass(module = "spheron._native", name = "Skipped", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PySkipped {
    /// The provider's address (hex).
    pub provider: String,
    /// Its name, when registered.
    pub provider_name: Option<String>,
    /// Why it was skipped.
    pub reason: String,
    /// A short machine-readable kind: `model`, `capacity`, `price`, `tier`, `region`,
    /// `not_allowed`, `denied`, `latency`, `banned`, `challenge_failed`, `other`.
    pub kind: String,
}

#[pymethods]
impl PySkipped {
    fn __repr__(&self) -> String {
        format!(
            "Skipped({}: {})",
            self.provider_name.as_deref().unwrap_or(&self.provider),
            self.reason
        )
    }
}

impl PySkipped {
    pub(crate) fn new(market: &Backend, r: &Rejection) -> Self {
        use spheron_core::RejectReason as R;
        let kind = match &r.reason {
            R::ModelNotAccepted(_) => "model",
            R::InsufficientGpus { .. } | R::CapacityTaken => "capacity",
            R::AboveCeiling { .. } => "price",
            R::TierTooLow { .. } => "tier",
            R::RegionNotAllowed(_) | R::RegionDenied(_) => "region",
            R::ProviderNotAllowed => "not_allowed",
            R::ProviderDenied => "denied",
            R::LatencyTooHigh { .. } => "latency",
            R::Banned => "banned",
            R::ChallengeFailed(_) => "challenge_failed",
            _ => "other",
        };
        PySkipped {
            provider: r.provider.to_string(),
            provider_name: provider_name(market, r.provider),
            reason: r.reason.to_string(),
            kind: kind.to_string(),
        }
    }
}

/// One criterion's part of the winning score.
#[pyclass(module = "spheron._native", name = "ScoreItem", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyScoreItem {
    /// The criterion: latency, availability, cost, rating, stake, random.
    pub criterion: String,
    /// Its weight.
    pub weight: f64,
    /// The normalised value in [0, 1].
    pub value: f64,
    /// `weight * value`.
    pub points: f64,
}

#[pymethods]
impl PyScoreItem {
    fn __repr__(&self) -> String {
        format!(
            "ScoreItem({}: {:.3} x {:.3} = {:.4})",
            self.criterion, self.weight, self.value, self.points
        )
    }
}

/// The proof-of-GPU result of the chosen provider.
#[pyclass(module = "spheron._native", name = "ProofResult", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyProofResult {
    /// Whether the proof held.
    pub passed: bool,
    /// The verdict in words.
    pub verdict: String,
    /// The GPU model the provider claimed.
    pub claimed: String,
    /// Achieved rate in TFLOP/s, when timing was checked.
    pub achieved_tflops: Option<f64>,
    /// Matrix size of the challenge.
    pub n: u32,
    /// Matrices in the batch.
    pub batch: u32,
    /// Time from challenge to commitment, in microseconds.
    pub commit_us: u64,
}

#[pymethods]
impl PyProofResult {
    fn __repr__(&self) -> String {
        format!("ProofResult(claimed {}: {})", self.claimed, self.verdict)
    }
}

/// Everything known about a lease: provider, tier, score breakdown, proof, price, cost.
#[pyclass(module = "spheron._native", name = "LeaseReport", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyLeaseReport {
    /// The lease id.
    pub lease: u64,
    /// The order id.
    pub order: u64,
    /// `open`, `matched`, `active` or `closed`.
    pub status: String,
    /// Why it closed (`completed`, `stopped by tenant`, ...), once closed.
    pub close_reason: Option<String>,
    /// The provider's address (hex).
    pub provider: String,
    /// The provider's name.
    pub provider_name: String,
    /// The provider's region.
    pub region: String,
    /// The provider's trust tier (0..=7) when chosen.
    pub tier: u8,
    /// Why it holds that tier.
    pub tier_reason: String,
    /// The GPU model.
    pub model: String,
    /// GPUs leased.
    pub gpus: u32,
    /// Price per GPU-hour.
    pub price_per_gpu_hour: Money,
    /// The budget locked in escrow.
    pub budget: Money,
    /// Cost so far while the lease runs; the final cost once closed.
    pub cost: Money,
    /// Refunded to the tenant, once settled.
    pub refund: Option<Money>,
    /// Whole seconds billed, once settled.
    pub seconds_billed: Option<u64>,
    /// The winning score.
    pub score: f64,
    /// The winning score's breakdown per criterion.
    pub breakdown: Vec<PyScoreItem>,
    /// Every provider skipped for this order and why (filters, failed challenges).
    pub skipped: Vec<PySkipped>,
    /// The chosen provider's proof-of-GPU result.
    pub proof: PyProofResult,
    /// Milliseconds since the Unix epoch when cost started accruing.
    pub started_at_ms: u64,
    /// When the lease closed.
    pub ended_at_ms: Option<u64>,
    /// Every progress event of this rent.
    pub progress: Vec<PyProgressEvent>,
    /// The payment token's symbol.
    pub token: String,
    /// The failovers before this lease (a rent with a checkpoint policy), oldest first.
    pub resumed: Vec<PyResume>,
    /// What the whole rent cost: this lease's cost plus that of the leases it resumed from.
    pub total_cost: Money,
}

/// A failover: a lease that lost its provider, and the checkpoint the next one started from.
#[pyclass(module = "spheron._native", name = "Resume", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyResume {
    /// The lease that ended with a provider fault.
    pub from_lease: u64,
    /// Its provider (hex address), left out of the next order.
    pub from_provider: String,
    /// Why it ended.
    pub reason: String,
    /// What it cost.
    pub paid: Money,
    /// Seconds billed (the next order asked for the rest of the time).
    pub seconds: u64,
    /// The lease that took over.
    pub to_lease: u64,
    /// Size of the checkpoint it started from, bytes (0: none, it started over).
    pub checkpoint_bytes: u64,
    /// keccak-256 of that checkpoint (0x hex), when there was one.
    pub checkpoint_hash: Option<String>,
}

#[pymethods]
impl PyResume {
    fn __repr__(&self) -> String {
        format!(
            "Resume(lease {} -> {}: {}, {}-byte checkpoint)",
            self.from_lease, self.to_lease, self.reason, self.checkpoint_bytes
        )
    }
}

#[pymethods]
impl PyLeaseReport {
    /// Whether the lease has closed (and, with the embedded escrow, been settled).
    #[getter]
    fn closed(&self) -> bool {
        self.status == "closed"
    }

    fn __repr__(&self) -> String {
        format!(
            "LeaseReport(lease={}, {}, {} x {} on {} ({}, tier {}), {} {}/GPU-h, cost {} {}, refund {})",
            self.lease,
            match &self.close_reason {
                Some(r) => format!("closed: {r}"),
                None => self.status.clone(),
            },
            self.gpus,
            self.model,
            self.provider_name,
            self.region,
            self.tier,
            self.price_per_gpu_hour,
            self.token,
            self.cost,
            self.token,
            self.refund
                .map_or_else(|| "pending".to_string(), |r| r.to_string()),
        )
    }
}

impl PyLeaseReport {
    pub(crate) fn new(market: &Backend, r: &LeaseReport) -> Self {
        let token = market.token();
        let d = token.decimals;
        let (status, close_reason) = match &r.state {
            LeaseState::Closed(reason) => ("closed".to_string(), Some(reason.to_string())),
            other => (other.to_string(), None),
        };
        let (achieved_tflops, passed) = match &r.proof.verdict {
            Verdict::Pass { achieved_tflops } => (*achieved_tflops, true),
            Verdict::Fail(_) => (None, false),
        };
        PyLeaseReport {
            lease: r.lease.0,
            order: r.order.0,
            status,
            close_reason,
            provider: r.provider.to_string(),
            provider_name: r.provider_name.clone(),
            region: r.region.clone(),
            tier: r.tier.0,
            tier_reason: r.tier_reason.clone(),
            model: r.model.name().to_string(),
            gpus: r.gpus,
            price_per_gpu_hour: Money::new(r.price_per_gpu_hour, d),
            budget: Money::new(r.budget, d),
            cost: Money::new(r.cost, d),
            refund: r.settlement.map(|s| Money::new(s.refunded, d)),
            seconds_billed: r.settlement.map(|s| s.seconds),
            score: r.choice.score,
            breakdown: r
                .choice
                .breakdown
                .iter()
                .map(|c| PyScoreItem {
                    criterion: c.criterion.to_string(),
                    weight: c.weight,
                    value: c.value,
                    points: c.points,
                })
                .collect(),
            skipped: r
                .skipped
                .iter()
                .map(|s| PySkipped::new(market, s))
                .collect(),
            proof: PyProofResult {
                passed,
                verdict: r.proof.verdict.to_string(),
                claimed: r.proof.claimed.name().to_string(),
                achieved_tflops,
                n: r.proof.n,
                batch: r.proof.batch,
                commit_us: r.proof.timing.commit_us,
            },
            started_at_ms: r.started_at.0,
            ended_at_ms: r.ended_at.map(|t| t.0),
            progress: r
                .progress
                .iter()
                .map(|e| PyProgressEvent::new(market, e))
                .collect(),
            token: token.symbol,
            resumed: r
                .resumed
                .iter()
                .map(|x| PyResume {
                    from_lease: x.from_lease.0,
                    from_provider: x.from_provider.to_string(),
                    reason: x.reason.to_string(),
                    paid: Money::new(x.paid, d),
                    seconds: x.seconds,
                    to_lease: x.to_lease.0,
                    checkpoint_bytes: x.checkpoint_bytes,
                    checkpoint_hash: x.checkpoint_hash.clone(),
                })
                .collect(),
            total_cost: Money::new(r.total_cost(), d),
        }
    }
}

/// One step of renting: published, bids in, matched, verifying, verified, challenge
/// failed, no match, escrow locked, launching, running, settled.
#[pyclass(module = "spheron._native", name = "ProgressEvent", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyProgressEvent {
    /// `published`, `bids_in`, `matched`, `verifying`, `verified`, `challenge_failed`,
    /// `no_match`, `escrow_locked`, `launching`, `running`, `resuming`, `settled` (or
    /// `other`).
    pub kind: String,
    /// The step in words.
    pub message: String,
    /// The order.
    pub order: u64,
    /// Milliseconds since the Unix epoch (marketplace clock).
    pub at_ms: u64,
    /// The provider concerned, if any (hex address).
    pub provider: Option<String>,
    /// Its name.
    pub provider_name: Option<String>,
    /// The lease concerned, if any.
    pub lease: Option<u64>,
    /// The amount concerned (budget, locked, paid), if any.
    pub amount: Option<Money>,
}

#[pymethods]
impl PyProgressEvent {
    fn __repr__(&self) -> String {
        format!(
            "ProgressEvent(order={}, {}: {})",
            self.order, self.kind, self.message
        )
    }
    fn __str__(&self) -> String {
        self.message.clone()
    }
}

impl PyProgressEvent {
    pub(crate) fn new(market: &Backend, e: &ProgressEvent) -> Self {
        let d = market.token().decimals;
        let m = |a: Amount| Some(Money::new(a, d));
        let (kind, provider, lease, amount) = match &e.step {
            Step::Published { budget } => ("published", None, None, m(*budget)),
            Step::BidsIn { .. } => ("bids_in", None, None, None),
            Step::Matched { provider, .. } => ("matched", Some(*provider), None, None),
            Step::Verifying { provider, .. } => ("verifying", Some(*provider), None, None),
            Step::Verified { provider, .. } => ("verified", Some(*provider), None, None),
            Step::ChallengeFailed {
                provider, slashed, ..
            } => ("challenge_failed", Some(*provider), None, m(*slashed)),
            Step::NoMatch { .. } => ("no_match", None, None, None),
            Step::EscrowLocked { amount } => ("escrow_locked", None, None, m(*amount)),
            Step::Launching { lease } => ("launching", None, Some(lease.0), None),
            Step::Running { lease } => ("running", None, Some(lease.0), None),
            Step::Settled {
                lease,
                provider,
                paid,
                ..
            } => ("settled", Some(*provider), Some(lease.0), m(*paid)),
            Step::Resuming {
                from_lease,
                from_provider,
                ..
            } => ("resuming", Some(*from_provider), Some(from_lease.0), None),
            _ => ("other", None, None, None),
        };
        let name = provider.and_then(|p| provider_name(market, p));
        let token = market.token();
        let f = |a: &Amount| token.format(*a);
        let mut message = match &e.step {
            Step::Published { budget } => format!("published (budget {})", f(budget)),
            Step::EscrowLocked { amount } => format!("escrow locked {}", f(amount)),
            Step::ChallengeFailed {
                provider,
                reason,
                slashed,
                ..
            } => format!(
                "{} failed its challenge ({reason}); slashed {}, taking the next bid",
                provider.short(),
                f(slashed)
            ),
            Step::Settled {
                lease,
                reason,
                paid,
                refunded,
                ..
            } => format!(
                "{lease} settled: {reason}; paid {}, refunded {}",
                f(paid),
                f(refunded)
            ),
            other => other.to_string(),
        };
        if let (Some(p), Some(n)) = (provider, &name) {
            message = message.replace(&p.short(), n);
        }
        PyProgressEvent {
            kind: kind.to_string(),
            message,
            order: e.order.0,
            at_ms: e.at.0,
            provider: provider.map(|p| p.to_string()),
            provider_name: name,
            lease,
            amount,
        }
    }
}

/// One line of a workload's output.
#[pyclass(module = "spheron._native", name = "LogLine", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyLogLine {
    /// Position in the lease's log, from 0.
    pub seq: u64,
    /// `stdout`, `stderr` or `system` (the launcher's own notices).
    pub source: String,
    /// The text, without the trailing newline.
    pub line: String,
}

#[pymethods]
impl PyLogLine {
    fn __repr__(&self) -> String {
        format!("LogLine({}, {}, {:?})", self.seq, self.source, self.line)
    }
    fn __str__(&self) -> String {
        self.line.clone()
    }
}

impl From<LogLine> for PyLogLine {
    fn from(l: LogLine) -> Self {
        PyLogLine {
            seq: l.seq,
            source: match l.source {
                LogSource::Stdout => "stdout",
                LogSource::Stderr => "stderr",
                LogSource::System => "system",
            }
            .to_string(),
            line: l.line,
        }
    }
}

/// An escrow balance.
#[pyclass(module = "spheron._native", name = "Balance", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyBalance {
    /// Free to lock or withdraw.
    pub available: Money,
    /// Locked for orders and leases.
    pub locked: Money,
    /// Staked as a provider.
    pub staked: Money,
}

#[pymethods]
impl PyBalance {
    fn __repr__(&self) -> String {
        format!(
            "Balance(available={}, locked={}, staked={})",
            self.available, self.locked, self.staked
        )
    }
}

impl PyBalance {
    pub fn new(b: Balance, decimals: u8) -> Self {
        PyBalance {
            available: Money::new(b.available, decimals),
            locked: Money::new(b.locked, decimals),
            staked: Money::new(b.staked, decimals),
        }
    }
}

/// A provider of the marketplace.
#[pyclass(module = "spheron._native", name = "ProviderInfo", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyProviderInfo {
    /// Address (hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Region label.
    pub region: String,
    /// GPU models it lists.
    pub models: Vec<String>,
    /// GPUs free now.
    pub free_gpus: u32,
    /// Trust tier (0..=7).
    pub tier: u8,
    /// Stake.
    pub stake: Money,
    /// Banned for fraud.
    pub banned: bool,
}

#[pymethods]
impl PyProviderInfo {
    fn __repr__(&self) -> String {
        format!(
            "ProviderInfo({}, {}, {:?}, {} free, tier {})",
            self.name, self.region, self.models, self.free_gpus, self.tier
        )
    }
}

impl PyProviderInfo {
    pub fn new(p: &Provider, decimals: u8) -> Self {
        let models = p.inventory.models();
        PyProviderInfo {
            id: p.id.to_string(),
            name: p.name.clone(),
            region: p.region.clone(),
            models: models.iter().map(|m| m.name().to_string()).collect(),
            free_gpus: models.iter().map(|m| p.inventory.free(*m)).sum(),
            tier: p.tier.0,
            stake: Money::new(p.stake, decimals),
            banned: p.banned,
        }
    }
}

/// How to reach a port the workload exposes (`Lease.endpoint(port)`): the URL (append the
/// request path) and the headers to send with every request.
#[pyclass(module = "spheron._native", name = "Endpoint", frozen)]
#[derive(Clone)]
pub struct PyEndpoint {
    inner: spheron_core::Endpoint,
}

impl From<spheron_core::Endpoint> for PyEndpoint {
    fn from(inner: spheron_core::Endpoint) -> Self {
        PyEndpoint { inner }
    }
}

#[pymethods]
impl PyEndpoint {
    /// The declared port.
    #[getter]
    fn port(&self) -> u16 {
        self.inner.port
    }
    /// The URL that reaches the port, ending in `/`: the provider gateway's proxy route
    /// (`https://`, its certificate pinned by `cert_hash`) on a network, the workload's
    /// loopback address (`http://127.0.0.1:<port>/`) in the embedded marketplace.
    #[getter]
    fn url(&self) -> String {
        self.inner.url.clone()
    }
    /// The lease's bearer token (network), or `None` (embedded: none needed).
    #[getter]
    fn token(&self) -> Option<String> {
        self.inner.token.as_ref().map(|t| t.expose().to_string())
    }
    /// SHA-256 of the gateway's DER certificate (`0x` hex) to pin, for an `https://` URL.
    #[getter]
    fn cert_hash(&self) -> Option<String> {
        self.inner.cert_hash.clone()
    }
    /// The headers to send with every request (`{"authorization": "Bearer ..."}`, or `{}`).
    #[getter]
    fn headers(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.headers().into_iter().collect()
    }
    fn __repr__(&self) -> String {
        let token = if self.inner.token.is_some() {
            "'***'"
        } else {
            "None"
        };
        format!(
            "Endpoint(port={}, url={:?}, token={token})",
            self.inner.port, self.inner.url
        )
    }
}
