//! A matcher written in Python: any object with a `rank(order, bids)` method, plugged into
//! the Rust marketplace as an `Arc<dyn Matcher>`.
//!
//! `rank` receives an [`PyOrder`] and a list of [`PyBid`]: only the bids that pass the
//! standard filters ([`StandardFilters`], the default matcher's own: deny and allow lists,
//! model, free GPUs, price ceiling, tier, regions, latency), the others with their reasons
//! in `order.rejected`. A matcher whose `wants_all_bids` attribute is true receives every
//! bid instead (`order.rejected` still says which would be filtered out and why). It
//! returns the bids it accepts, best first: each item a `Bid` (or a `(Bid, score)` pair, or
//! a provider name or address). Bids it leaves out are recorded as skipped, with the
//! filter's reason or "not chosen by `<class>`". An exception becomes
//! `spheron.MatcherError` with the original exception as `__cause__`.

use crate::convert::Money;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use spheron_core::matching::{StandardFilters, sort_rejections};
use spheron_core::{
    Candidate, Error, Matcher, Order, Ranked, Ranking, RejectReason, Rejection, Result,
};
use std::sync::Mutex;

/// An order, as a Python matcher sees it.
#[pyclass(module = "spheron._native", name = "Order", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyOrder {
    /// The order id.
    pub id: u64,
    /// Acceptable GPU models (empty: any with enough memory).
    pub gpus: Vec<String>,
    /// GPUs wanted on one node.
    pub count: u32,
    /// Lease length in seconds.
    pub duration_secs: u64,
    /// Price ceiling per GPU-hour.
    pub max_price_per_hour: Money,
    /// Allowed regions (empty: any).
    pub regions: Vec<String>,
    /// Lowest acceptable trust tier.
    pub min_tier: u8,
    /// The bids the standard filters dropped, each with the reason.
    pub rejected: Vec<(PyBid, String)>,
}

#[pymethods]
impl PyOrder {
    fn __repr__(&self) -> String {
        format!(
            "Order(id={}, {} x {:?}, <= {}/GPU-h)",
            self.id, self.count, self.gpus, self.max_price_per_hour
        )
    }
}

/// A bid with the marketplace's view of its provider.
#[pyclass(module = "spheron._native", name = "Bid", frozen, get_all)]
#[derive(Clone, Debug)]
pub struct PyBid {
    /// Position among all of the order's bids (those handed to `rank` and those in
    /// `order.rejected`).
    pub index: usize,
    /// Provider address (hex).
    pub provider: String,
    /// Provider name.
    pub provider_name: String,
    /// Provider region.
    pub region: String,
    /// GPU model offered.
    pub model: String,
    /// Price per GPU-hour.
    pub price_per_hour: Money,
    /// Trust tier (0..=7).
    pub tier: u8,
    /// Free GPUs in the largest block for this model.
    pub free_gpus: u32,
    /// Stake.
    pub stake: Money,
    /// Data-centre latitude.
    pub lat: f64,
    /// Data-centre longitude.
    pub lon: f64,
}

#[pymethods]
impl PyBid {
    fn __repr__(&self) -> String {
        format!(
            "Bid({} {} {} at {}/GPU-h, tier {})",
            self.provider_name, self.region, self.model, self.price_per_hour, self.tier
        )
    }
}

/// The adapter: a Python object used as a [`Matcher`].
pub(crate) struct PyMatcher {
    obj: Py<PyAny>,
    class: String,
    decimals: u8,
    /// The last exception `rank` raised, to chain as `__cause__`.
    last_error: Mutex<Option<PyErr>>,
}

impl PyMatcher {
    pub fn new(obj: Bound<'_, PyAny>, decimals: u8) -> PyResult<Self> {
        let ok = obj
            .getattr("rank")
            .map(|r| r.is_callable())
            .unwrap_or(false);
        if !ok {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "a matcher needs a callable `rank(order, bids)` method; {} has none",
                obj.get_type().name()?
            )));
        }
        Ok(PyMatcher {
            class: obj.get_type().name()?.to_string(),
            obj: obj.unbind(),
            decimals,
            last_error: Mutex::new(None),
        })
    }

    /// Takes the last Python exception raised by `rank`.
    pub fn take_error(&self) -> Option<PyErr> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn rank_py(&self, py: Python<'_>, order: &Order, candidates: &[Candidate]) -> Result<Ranking> {
        let d = self.decimals;
        let filters = StandardFilters::new(order)?;
        let reasons: Vec<Option<RejectReason>> =
            candidates.iter().map(|c| filters.check(c)).collect();
        let wants_all = self
            .obj
            .bind(py)
            .getattr("wants_all_bids")
            .and_then(|v| v.is_truthy())
            .unwrap_or(false);
        // Indices into `candidates` of the bids handed to `rank`.
        let given: Vec<usize> = (0..candidates.len())
            .filter(|&i| wants_all || reasons[i].is_none())
            .collect();
        let bid_of = |index: usize| {
            let c = &candidates[index];
            PyBid {
                index,
                provider: c.profile.id.to_string(),
                provider_name: c.profile.name.clone(),
                region: c.profile.region.clone(),
                model: c.bid.model.name().to_string(),
                price_per_hour: Money::new(c.bid.price_per_gpu_hour, d),
                tier: c.profile.tier.0,
                free_gpus: c.profile.free_gpus,
                stake: Money::new(c.profile.stake, d),
                lat: c.profile.location.lat,
                lon: c.profile.location.lon,
            }
        };
        let py_order = PyOrder {
            id: order.id.0,
            gpus: order
                .request
                .models
                .iter()
                .map(|m| m.name().to_string())
                .collect(),
            count: order.request.count,
            duration_secs: order.request.duration_secs,
            max_price_per_hour: Money::new(order.request.max_price_per_gpu_hour, d),
            regions: order.request.regions.clone(),
            min_tier: order.request.min_tier.0,
            rejected: reasons
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().map(|r| (bid_of(i), r.to_string())))
                .collect(),
        };
        let bids: Vec<PyBid> = given.iter().map(|&i| bid_of(i)).collect();
        let fail = |e: PyErr, what: String| {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            Error::Matcher(what)
        };
        let result = self
            .obj
            .bind(py)
            .call_method1("rank", (py_order, bids))
            .map_err(|e| {
                let what = format!("{}.rank raised {}", self.class, e);
                fail(e, what)
            })?;
        let items = result.try_iter().map_err(|e| {
            let what = format!(
                "{}.rank must return a list of bids, got {}",
                self.class,
                result
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            );
            fail(e, what)
        })?;
        let n = candidates.len();
        let mut chosen: Vec<(usize, Option<f64>)> = Vec::new();
        for item in items {
            let item = item.map_err(|e| {
                let what = format!("{}.rank: iterating its result raised {e}", self.class);
                fail(e, what)
            })?;
            let (target, score) = match item.cast::<PyTuple>() {
                Ok(t) if t.len() == 2 => {
                    let s: f64 = t
                        .get_item(1)
                        .and_then(|s| s.extract::<f64>())
                        .map_err(|_| {
                            Error::Matcher(format!(
                                "{}.rank returned a pair whose score is not a number",
                                self.class
                            ))
                        })?;
                    if !s.is_finite() {
                        return Err(Error::Matcher(format!(
                            "{}.rank returned the score {s}, which is not finite",
                            self.class
                        )));
                    }
                    let first = t.get_item(0).map_err(|e| {
                        let what = format!("{}.rank: {e}", self.class);
                        fail(e, what)
                    })?;
                    (first, Some(s))
                }
                _ => (item.clone(), None),
            };
            let index = if let Ok(b) = target.extract::<PyRef<'_, PyBid>>() {
                Some(b.index).filter(|&i| {
                    i < n
                        && given.contains(&i)
                        && candidates[i].profile.id.to_string() == b.provider
                })
            } else if target.is_instance_of::<PyString>() {
                let s: String = target.extract().unwrap_or_default();
                given.iter().copied().find(|&i| {
                    let c = &candidates[i];
                    c.profile.name == s || c.profile.id.to_string() == s
                })
            } else {
                None
            };
            let Some(index) = index else {
                return Err(Error::Matcher(format!(
                    "{}.rank returned {}, which is not one of the bids it was given",
                    self.class,
                    target.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            };
            if chosen.iter().any(|(i, _)| *i == index) {
                return Err(Error::Matcher(format!(
                    "{}.rank returned the bid of {} twice",
                    self.class, candidates[index].profile.name
                )));
            }
            chosen.push((index, score));
        }
        let total = chosen.len();
        let ranked = chosen
            .iter()
            .enumerate()
            .map(|(pos, (i, s))| Ranked {
                candidate: candidates[*i].clone(),
                score: s.unwrap_or((total - pos) as f64),
                breakdown: Vec::new(),
            })
            .collect();
        let mut rejected: Vec<Rejection> = candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| !chosen.iter().any(|(c, _)| c == i))
            .map(|(i, c)| Rejection {
                provider: c.bid.provider,
                reason: reasons[i].clone().unwrap_or_else(|| {
                    RejectReason::Other(format!("not chosen by {}", self.class))
                }),
            })
            .collect();
        sort_rejections(&mut rejected);
        Ok(Ranking {
            order: order.id,
            ranked,
            rejected,
        })
    }
}

impl Matcher for PyMatcher {
    fn rank(&self, order: &Order, candidates: &[Candidate]) -> Result<Ranking> {
        Python::attach(|py| self.rank_py(py, order, candidates))
    }
}
