//! `GpuRequest`: what to rent, from keywords or a YAML spec.

use crate::convert::Money;
use crate::errors::{invalid, to_py};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyList, PyString, PyTuple};
use spheron_core::{AccountId, GeoPoint, GpuRequest, ProviderId, Token};

/// The token prices are given in: the embedded marketplace's 6-decimal USD token.
pub(crate) fn usd() -> Token {
    Token::usd()
}

/// Parses a price given as `str`, `int`, `float` or `decimal.Decimal` (whole tokens) into
/// base units exactly. Floats go through their shortest decimal representation.
pub(crate) fn parse_price(
    py: Python<'_>,
    field: &'static str,
    v: &Bound<'_, PyAny>,
    token: &Token,
) -> PyResult<spheron_core::Amount> {
    if v.is_instance_of::<PyBool>() {
        return Err(invalid(py, field, "expected a decimal amount, got a bool"));
    }
    let text: String = if v.is_instance_of::<PyString>() {
        v.extract()?
    } else if v.is_instance_of::<PyFloat>() {
        let f: f64 = v.extract()?;
        if !f.is_finite() {
            return Err(invalid(py, field, format!("{f} is not a finite amount")));
        }
        v.repr()?.extract()?
    } else if v.is_instance_of::<PyInt>() || v.get_type().name()?.extract::<String>()? == "Decimal"
    {
        v.str()?.extract()?
    } else {
        return Err(invalid(
            py,
            field,
            format!(
                "expected a decimal amount (str, int, float or Decimal), got {}",
                v.get_type().name()?
            ),
        ));
    };
    if text.contains(['e', 'E']) {
        return Err(invalid(
            py,
            field,
            format!("`{text}`: write the amount without an exponent"),
        ));
    }
    let amount = token.parse(field, &text).map_err(|e| to_py(py, None, e))?;
    if amount.0 == 0 {
        return Err(invalid(py, field, "must be greater than zero"));
    }
    Ok(amount)
}

fn int_field(py: Python<'_>, field: &'static str, v: &Bound<'_, PyAny>) -> PyResult<i128> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(invalid(
            py,
            field,
            format!("expected an int, got {}", v.get_type().name()?),
        ));
    }
    v.extract::<i128>()
        .map_err(|_| invalid(py, field, "the value is out of range"))
}

fn ranged<T: TryFrom<i128>>(
    py: Python<'_>,
    field: &'static str,
    n: i128,
    what: &str,
) -> PyResult<T> {
    T::try_from(n).map_err(|_| invalid(py, field, format!("{n} is outside {what}")))
}

fn str_list(py: Python<'_>, field: &'static str, v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if v.is_instance_of::<PyString>() {
        return Ok(vec![v.extract()?]);
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        return v
            .extract::<Vec<String>>()
            .map_err(|_| invalid(py, field, "expected a list of strings"));
    }
    Err(invalid(
        py,
        field,
        format!(
            "expected a string or a list of strings, got {}",
            v.get_type().name()?
        ),
    ))
}

/// An idle timeout: a duration string (`"10m"`, `"90s"`) or a number of seconds (at least 1).
fn idle_secs(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<u64> {
    let bad = |what: String| invalid(py, "idle_timeout", what);
    if v.is_instance_of::<PyBool>() {
        return Err(bad("expected a duration, got a bool".into()));
    }
    let secs = if v.is_instance_of::<PyString>() {
        let s: String = v.extract()?;
        spheron_core::request::parse_duration(&s)
            .map_err(|_| bad(format!("`{s}` is not a duration like 10m, 90s or 1h")))?
    } else {
        let f: f64 = v
            .extract()
            .map_err(|_| bad("expected a duration string or a number of seconds".into()))?;
        if !f.is_finite() || !(1.0..=spheron_core::request::MAX_DURATION_SECS as f64).contains(&f) {
            return Err(bad(format!("{f} s is outside 1 s..=90 days")));
        }
        f.round() as u64
    };
    if secs == 0 {
        return Err(bad("must be at least 1 s".into()));
    }
    Ok(secs)
}

/// Applies the cost-control keywords to `b`.
fn cost_controls(
    py: Python<'_>,
    mut b: spheron_core::GpuRequestBuilder,
    max_spend: Option<&Bound<'_, PyAny>>,
    idle_timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<spheron_core::GpuRequestBuilder> {
    if let Some(m) = max_spend {
        b = b.max_spend(parse_price(py, "max_spend", m, &usd())?);
    }
    if let Some(t) = idle_timeout {
        b = b.idle_timeout(std::time::Duration::from_secs(idle_secs(py, t)?));
    }
    Ok(b)
}

/// A provider given by hex address or by name (ids of named providers derive from the name).
fn provider_ref(s: &str) -> ProviderId {
    ProviderId::parse(s).unwrap_or_else(|_| AccountId::from_label(s))
}

/// What to rent: GPU model(s), count, duration, a price ceiling per GPU-hour and filters.
#[pyclass(module = "spheron._native", name = "GpuRequest", frozen)]
#[derive(Clone, Debug)]
pub struct PyGpuRequest {
    pub(crate) inner: GpuRequest,
}

#[pymethods]
impl PyGpuRequest {
    #[new]
    #[pyo3(signature = (
        gpu=None, count=None, hours=None, *, max_price_per_hour=None, duration=None,
        region=None, deny_regions=None, min_tier=None, min_memory_gib=None,
        max_latency_ms=None, location=None, allow_providers=None, deny_providers=None,
        max_spend=None, idle_timeout=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        gpu: Option<&Bound<'_, PyAny>>,
        count: Option<&Bound<'_, PyAny>>,
        hours: Option<&Bound<'_, PyAny>>,
        max_price_per_hour: Option<&Bound<'_, PyAny>>,
        duration: Option<&Bound<'_, PyAny>>,
        region: Option<&Bound<'_, PyAny>>,
        deny_regions: Option<&Bound<'_, PyAny>>,
        min_tier: Option<&Bound<'_, PyAny>>,
        min_memory_gib: Option<&Bound<'_, PyAny>>,
        max_latency_ms: Option<&Bound<'_, PyAny>>,
        location: Option<(f64, f64)>,
        allow_providers: Option<&Bound<'_, PyAny>>,
        deny_providers: Option<&Bound<'_, PyAny>>,
        max_spend: Option<&Bound<'_, PyAny>>,
        idle_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut b = cost_controls(py, GpuRequest::builder(), max_spend, idle_timeout)?;
        if let Some(g) = gpu {
            for name in str_list(py, "gpu", g)? {
                b = b.gpu(&name);
            }
        }
        if let Some(c) = count {
            let n = int_field(py, "count", c)?;
            b = b.count(ranged(py, "count", n, "1..=64")?);
        }
        match (hours, duration) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    py,
                    "duration",
                    "give `hours` or `duration`, not both",
                ));
            }
            (Some(h), None) => {
                if h.is_instance_of::<PyBool>() {
                    return Err(invalid(
                        py,
                        "hours",
                        "expected a number of hours, got a bool",
                    ));
                }
                let hours: f64 = h
                    .extract()
                    .map_err(|_| invalid(py, "hours", "expected a number of hours"))?;
                if !hours.is_finite() || hours <= 0.0 {
                    return Err(invalid(
                        py,
                        "hours",
                        format!("{hours} must be a positive number of hours"),
                    ));
                }
                let secs = (hours * 3600.0).round();
                if secs < 1.0 || secs > spheron_core::request::MAX_DURATION_SECS as f64 {
                    return Err(invalid(
                        py,
                        "hours",
                        format!("{hours} h is outside 1 s..=90 days"),
                    ));
                }
                b = b.duration_secs(secs as u64);
            }
            (None, Some(d)) => {
                let secs = if d.is_instance_of::<PyString>() {
                    let s: String = d.extract()?;
                    spheron_core::request::parse_duration(&s).map_err(|e| to_py(py, None, e))?
                } else {
                    let n = int_field(py, "duration", d)?;
                    ranged(py, "duration", n, "a number of seconds >= 0")?
                };
                if secs == 0 {
                    return Err(invalid(py, "duration", "must be longer than zero"));
                }
                b = b.duration_secs(secs);
            }
            (None, None) => {}
        }
        if let Some(p) = max_price_per_hour {
            b = b.max_price_per_gpu_hour(parse_price(py, "max_price_per_hour", p, &usd())?);
        }
        if let Some(r) = region {
            for r in str_list(py, "region", r)? {
                b = b.region(&r);
            }
        }
        if let Some(r) = deny_regions {
            for r in str_list(py, "deny_regions", r)? {
                b = b.deny_region(&r);
            }
        }
        if let Some(t) = min_tier {
            let n = int_field(py, "min_tier", t)?;
            b = b.min_tier(ranged(py, "min_tier", n, "0..=7")?);
        }
        if let Some(m) = min_memory_gib {
            let n = int_field(py, "min_memory_gib", m)?;
            b = b.min_memory_gib(ranged(py, "min_memory_gib", n, "a number of GiB >= 0")?);
        }
        if let Some(m) = max_latency_ms {
            let n = int_field(py, "max_latency_ms", m)?;
            b = b.max_latency_ms(ranged(py, "max_latency_ms", n, "a number of ms >= 1")?);
        }
        if let Some((lat, lon)) = location {
            b = b.location(GeoPoint::new(lat, lon).map_err(|e| to_py(py, None, e))?);
        }
        if let Some(a) = allow_providers {
            for p in str_list(py, "allow_providers", a)? {
                b = b.allow_provider(provider_ref(&p));
            }
        }
        if let Some(d) = deny_providers {
            for p in str_list(py, "deny_providers", d)? {
                b = b.deny_provider(provider_ref(&p));
            }
        }
        let inner = b.build().map_err(|e| to_py(py, None, e))?;
        Ok(PyGpuRequest { inner })
    }

    /// This request with a spend cap (USD) and/or an idle timeout (a duration string or
    /// seconds); the others keep their values.
    #[pyo3(signature = (*, max_spend=None, idle_timeout=None))]
    fn with_limits(
        &self,
        py: Python<'_>,
        max_spend: Option<&Bound<'_, PyAny>>,
        idle_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut r = self.inner.clone();
        // Validated by the builder with the request's own ceiling and count.
        let probe = cost_controls(py, GpuRequest::builder(), max_spend, idle_timeout)?
            .gpu("t4")
            .count(r.count)
            .duration_secs(r.duration_secs)
            .max_price_per_gpu_hour(r.max_price_per_gpu_hour)
            .build()
            .map_err(|e| to_py(py, None, e))?;
        if max_spend.is_some() {
            r.max_spend = probe.max_spend;
        }
        if idle_timeout.is_some() {
            r.idle_timeout_secs = probe.idle_timeout_secs;
        }
        Ok(PyGpuRequest { inner: r })
    }

    /// Parses a YAML spec (prices as decimal strings in USD).
    #[staticmethod]
    fn from_yaml(py: Python<'_>, text: &str) -> PyResult<Self> {
        GpuRequest::from_yaml(text, &usd())
            .map(|inner| PyGpuRequest { inner })
            .map_err(|e| to_py(py, None, e))
    }

    /// Reads and parses a YAML spec file.
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(py, "spec", format!("cannot read {}: {e}", path.display())))?;
        Self::from_yaml(py, &text)
    }

    /// Acceptable GPU models.
    #[getter]
    fn gpus(&self) -> Vec<String> {
        self.inner
            .models
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    }
    /// GPUs wanted, all on one node.
    #[getter]
    fn count(&self) -> u32 {
        self.inner.count
    }
    /// Lease length in seconds.
    #[getter]
    fn duration_secs(&self) -> u64 {
        self.inner.duration_secs
    }
    /// Price ceiling per GPU-hour (USD).
    #[getter]
    fn max_price_per_hour(&self) -> Money {
        Money::new(self.inner.max_price_per_gpu_hour, usd().decimals)
    }
    /// Allowed regions (empty: any).
    #[getter]
    fn regions(&self) -> Vec<String> {
        self.inner.regions.clone()
    }
    /// Lowest acceptable trust tier.
    #[getter]
    fn min_tier(&self) -> u8 {
        self.inner.min_tier.0
    }
    /// The lease's spend cap (USD), if any.
    #[getter]
    fn max_spend(&self) -> Option<Money> {
        self.inner.max_spend.map(|m| Money::new(m, usd().decimals))
    }
    /// The idle timeout in seconds, if any.
    #[getter]
    fn idle_timeout_secs(&self) -> Option<u64> {
        self.inner.idle_timeout_secs
    }
    /// What is locked in escrow: ceiling x count x duration.
    #[getter]
    fn budget(&self, py: Python<'_>) -> PyResult<Money> {
        let b = self.inner.budget().map_err(|e| to_py(py, None, e))?;
        Ok(Money::new(b, usd().decimals))
    }

    fn __repr__(&self) -> String {
        let token = usd();
        format!(
            "GpuRequest(gpus={:?}, count={}, duration_secs={}, max_price_per_hour={}, regions={:?}, min_tier={})",
            self.gpus(),
            self.inner.count,
            self.inner.duration_secs,
            Money::new(self.inner.max_price_per_gpu_hour, token.decimals),
            self.inner.regions,
            self.inner.min_tier.0
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .extract::<PyRef<'_, PyGpuRequest>>()
            .is_ok_and(|o| o.inner == self.inner)
    }
}
