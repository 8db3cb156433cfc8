//! [`spheron_core::Error`] → the exception classes of `spheron.errors`.
//!
//! | Rust kind | Python exception |
//! |---|---|
//! | `InvalidField`, `ZeroAmount`, `UnknownGpuModel`, `MalformedSpec`, `Overflow`, `InvalidWeight` | `InvalidRequestError` (`.field`, `.reason`) |
//! | `NoMatch` | `NoMatchError` (`.order`, `.rejected`); `ChallengeFailedError` (a subclass) when providers were dropped for failing proof-of-GPU |
//! | `ChallengeFailed` | `ChallengeFailedError` |
//! | `InsufficientFunds` | `InsufficientFundsError` (`.needed`, `.available`) |
//! | `SpendCapExceeded` | `SpendCapExceededError` (`.cap`, `.committed`, `.requested`) |
//! | `Launch` | `LaunchError` |
//! | `Matcher` | `MatcherError` (`__cause__`: the Python matcher's exception) |
//! | `LeaseClosed` | `LeaseClosedError` (`.lease`) |
//! | `Prover` | `ProverError` |
//! | `Backend` | `BackendError` (`.backend`) |
//! | `Timeout` | `StepTimeoutError` (`.step`, `.after_ms`; also a `TimeoutError`) |
//! | everything else | `MarketplaceError` |

use crate::backend::Backend;
use crate::convert::{Money, PySkipped};
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use spheron_core::{Error, RejectReason};

/// Maps a Rust field name to the keyword the Python API uses for it.
pub(crate) fn python_field(field: &str) -> &str {
    match field {
        "max_price_per_gpu_hour" => "max_price_per_hour",
        other => other,
    }
}

/// Builds an instance of `spheron.errors.<class>` with `message` and keyword attributes.
fn make(py: Python<'_>, class: &str, message: String, attrs: &[(&str, Bound<'_, PyAny>)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("spheron.errors")?.getattr(class)?;
        let kwargs = PyDict::new(py);
        for (k, v) in attrs {
            kwargs.set_item(k, v)?;
        }
        Ok(PyErr::from_value(
            cls.call((message.clone(),), Some(&kwargs))?,
        ))
    };
    build().unwrap_or_else(|e| e)
}

/// An `InvalidRequestError` naming `field` (a Python keyword) and what was wrong.
pub(crate) fn invalid(py: Python<'_>, field: &str, reason: impl Into<String>) -> PyErr {
    let reason = reason.into();
    let field = python_field(field).to_string();
    make(
        py,
        "InvalidRequestError",
        format!("invalid `{field}`: {reason}"),
        &[
            ("field", obj(py, field.clone())),
            ("reason", obj(py, reason)),
        ],
    )
}

fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Bound<'py, PyAny> {
    v.into_bound_py_any(py)
        .unwrap_or_else(|_| py.None().into_bound(py))
}

/// Converts a core error to its Python exception. `market` names providers in
/// `NoMatchError.rejected` and gives the token's decimals.
pub(crate) fn to_py(py: Python<'_>, market: Option<&Backend>, e: Error) -> PyErr {
    let message = e.to_string();
    let decimals = market.map_or(6, |m| m.token().decimals);
    match e {
        Error::InvalidField { field, reason } => invalid(py, field, reason),
        Error::ZeroAmount { field } => invalid(py, field, "must be greater than zero"),
        Error::UnknownGpuModel(name) => invalid(
            py,
            "gpu",
            format!(
                "unknown GPU model `{name}` (known: h200, h100-sxm, h100-pcie, a100-80g, a100-40g, l40s, l4, a10, rtx4090, t4)"
            ),
        ),
        Error::MalformedSpec(m) => invalid(py, "spec", m),
        Error::Overflow { what } => invalid(py, what, "the value is too large (overflow)"),
        Error::InvalidWeight { name, value } => {
            invalid(py, name, format!("{value} is not a finite weight >= 0"))
        }
        Error::NoMatch { order, rejected } => {
            let challenge = rejected
                .iter()
                .any(|r| matches!(r.reason, RejectReason::ChallengeFailed(_)));
            let list: Vec<PySkipped> = match market {
                Some(m) => rejected.iter().map(|r| PySkipped::new(m, r)).collect(),
                None => Vec::new(),
            };
            let class = if challenge {
                "ChallengeFailedError"
            } else {
                "NoMatchError"
            };
            make(
                py,
                class,
                message,
                &[("order", obj(py, order.0)), ("rejected", obj(py, list))],
            )
        }
        Error::ChallengeFailed { provider, reason } => {
            let name = market.and_then(|m| crate::convert::provider_name(m, provider));
            let skipped = PySkipped {
                provider: provider.to_string(),
                provider_name: name,
                reason: format!("failed proof-of-GPU: {reason}"),
                kind: "challenge_failed".into(),
            };
            make(
                py,
                "ChallengeFailedError",
                message,
                &[("rejected", obj(py, vec![skipped]))],
            )
        }
        Error::InsufficientFunds { needed, available } => make(
            py,
            "InsufficientFundsError",
            message,
            &[
                ("needed", obj(py, Money::new(needed, decimals))),
                ("available", obj(py, Money::new(available, decimals))),
            ],
        ),
        Error::SpendCapExceeded {
            cap,
            committed,
            requested,
        } => make(
            py,
            "SpendCapExceededError",
            message,
            &[
                ("cap", obj(py, Money::new(cap, decimals))),
                ("committed", obj(py, Money::new(committed, decimals))),
                ("requested", obj(py, Money::new(requested, decimals))),
            ],
        ),
        // A workload that never started is a launch failure (nothing was billed).
        Error::Launch(_) | Error::NotStarted { .. } => make(py, "LaunchError", message, &[]),
        Error::Matcher(_) => make(py, "MatcherError", message, &[]),
        Error::LeaseClosed(lease) => make(
            py,
            "LeaseClosedError",
            message,
            &[("lease", obj(py, lease.0))],
        ),
        Error::Prover(_) => make(py, "ProverError", message, &[]),
        Error::Backend { backend, .. } => make(
            py,
            "BackendError",
            message,
            &[("backend", obj(py, backend))],
        ),
        Error::Timeout { step, after_ms } => make(
            py,
            "StepTimeoutError",
            message,
            &[("step", obj(py, step)), ("after_ms", obj(py, after_ms))],
        ),
        _ => make(py, "MarketplaceError", message, &[]),
    }
}

/// A `WaitTimeoutError` (also a `TimeoutError`).
pub(crate) fn wait_timeout(py: Python<'_>, lease: u64, secs: f64) -> PyErr {
    make(
        py,
        "WaitTimeoutError",
        format!("lease {lease} still running after {secs} s"),
        &[("lease", obj(py, lease))],
    )
}

/// An `UnsupportedError`: `method` does not exist on the `backend` (`local` / `network`)
/// marketplace.
pub(crate) fn unsupported(py: Python<'_>, method: &str, backend: &str) -> PyErr {
    let only = if backend == "network" {
        "embedded"
    } else {
        "network"
    };
    make(
        py,
        "UnsupportedError",
        format!(
            "`{method}` is only available on the {only} marketplace, not on this {backend} one"
        ),
        &[
            ("method", obj(py, method.to_string())),
            ("backend", obj(py, backend.to_string())),
        ],
    )
}
