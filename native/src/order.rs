//! The calls waiting in `streams.ordering.EventTimeMerger`, kept in event-time order.
//!
//! Every call a worker detects waits here twice: at the edge (input partitions merged in
//! event time) and before the engine (by-account partitions merged). In Python each call
//! became a tuple `(ts, tenant_id, account_id, arrival, call)` sorted by the interpreter,
//! about a tenth of the event loop's thread (bench/PROFILE.md, "Fifteenth pass"). Here a
//! call's key is read from its slots (`fields.rs`) or from an `EdgeCall`, and compared in
//! Rust: by event time, then tenant and account as Python compares `str` (by code point,
//! which is the order of their UTF-8 bytes), then arrival.
//!
//! How the calls wait is the Python merger's: those added since the last release in
//! arrival order; the rest in runs, each sorted. A release sorts what arrived into a new
//! run (from `many_runs` runs on, folding into it the newest runs no larger than what is
//! being sorted), takes each run's prefix up to the limit and merges the prefixes.

use std::cmp::Ordering;
use std::collections::VecDeque;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::fields::{f, field};
use crate::EdgeCall;

struct Entry {
    ts: f64,
    tenant: Py<PyString>,
    account: Py<PyString>,
    arrival: u64,
    call: PyObject,
}

/// `a` against `b` as Python compares two `str`.
fn text_order(py: Python<'_>, a: &Py<PyString>, b: &Py<PyString>) -> Ordering {
    if a.is(b) {
        return Ordering::Equal;
    }
    let (a, b) = (a.bind(py), b.bind(py));
    match (a.to_str(), b.to_str()) {
        (Ok(x), Ok(y)) => x.as_bytes().cmp(y.as_bytes()),
        // A lone surrogate has no UTF-8: Python compares those.
        _ => a.compare(b).unwrap_or(Ordering::Equal),
    }
}

/// `streams.ordering.order_key`, then arrival.
fn order(py: Python<'_>, a: &Entry, b: &Entry) -> Ordering {
    a.ts.partial_cmp(&b.ts)
        .unwrap_or(Ordering::Equal)
        .then_with(|| text_order(py, &a.tenant, &b.tenant))
        .then_with(|| text_order(py, &a.account, &b.account))
        .then(a.arrival.cmp(&b.arrival))
}

fn sorted(py: Python<'_>, mut entries: Vec<Entry>) -> Vec<Entry> {
    // Stable and run-adaptive: records that come in event-time order cost a merge.
    entries.sort_by(|a, b| order(py, a, b));
    entries
}

fn key(call: &Bound<'_, PyAny>) -> PyResult<(f64, Py<PyString>, Py<PyString>)> {
    if let Ok(edge) = call.downcast::<EdgeCall>() {
        let edge = edge.get();
        let py = call.py();
        return Ok((edge.ts, edge.tenant_id.clone_ref(py), edge.account_id.clone_ref(py)));
    }
    Ok((
        field(call, f::TS)?.extract()?,
        field(call, f::TENANT_ID)?.downcast_into::<PyString>()?.unbind(),
        field(call, f::ACCOUNT_ID)?.downcast_into::<PyString>()?.unbind(),
    ))
}

/// Calls waiting to be released in event-time order (see the module).
#[pyclass(module = "distillwatch_native")]
pub struct CallBuffer {
    arrived: Vec<Entry>,
    runs: Vec<VecDeque<Entry>>,
    arrivals: u64,
    many_runs: usize,
    len: usize,
}

#[pymethods]
impl CallBuffer {
    #[new]
    #[pyo3(signature = (many_runs = 8))]
    fn new(many_runs: usize) -> Self {
        CallBuffer { arrived: Vec::new(), runs: Vec::new(), arrivals: 0, many_runs, len: 0 }
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// How many calls were added so far: the arrival number of the latest (from 1).
    #[getter]
    fn arrivals(&self) -> u64 {
        self.arrivals
    }

    /// Take `calls` (each with `ts`, `tenant_id` and `account_id`), in arrival order;
    /// returns the latest event time among them (-inf for none). A call without a float
    /// event time or with a tenant or account that is not a `str` is refused (TypeError)
    /// before any of them is taken.
    fn add(&mut self, calls: &Bound<'_, PyList>) -> PyResult<f64> {
        let mut entries = Vec::with_capacity(calls.len());
        let mut latest = f64::NEG_INFINITY;
        for (n, call) in calls.iter().enumerate() {
            let (ts, tenant, account) = key(&call)?;
            if ts > latest {
                latest = ts;
            }
            entries.push(Entry { ts, tenant, account, arrival: self.arrivals + 1 + n as u64, call: call.unbind() });
        }
        self.arrivals += entries.len() as u64;
        self.len += entries.len();
        self.arrived.append(&mut entries);
        Ok(latest)
    }

    /// The event time in the middle of everything waiting (after `settle(fold = true)`,
    /// the middle of the one run); -inf when nothing waits.
    fn median_time(&mut self, py: Python<'_>) -> f64 {
        self.settle(py, true);
        self.runs.first().map_or(f64::NEG_INFINITY, |run| run[run.len() / 2].ts)
    }

    /// Remove and return every waiting call with event time <= `limit`, in order
    /// (`settle` first).
    fn take_through<'py>(&mut self, py: Python<'py>, limit: f64) -> PyResult<Bound<'py, PyList>> {
        self.settle(py, false);
        let mut taken: Vec<Vec<Entry>> = Vec::new();
        for run in &mut self.runs {
            let cut = run.partition_point(|e| e.ts <= limit);
            if cut > 0 {
                taken.push(run.drain(..cut).collect());
            }
        }
        self.runs.retain(|run| !run.is_empty());
        let out = match taken.len() {
            0 => Vec::new(),
            1 => taken.pop().unwrap_or_default(),
            _ => sorted(py, taken.into_iter().flatten().collect()),
        };
        self.len -= out.len();
        PyList::new(py, out.into_iter().map(|e| e.call))
    }

    /// The arrival numbers of the calls waiting, in no particular order.
    fn waiting_arrivals(&self) -> Vec<u64> {
        self.arrived.iter().chain(self.runs.iter().flatten()).map(|e| e.arrival).collect()
    }

    /// Forget the waiting calls whose arrival numbers `unwanted(arrival)` is true of
    /// (all or, if it raises, none).
    fn drop(&mut self, unwanted: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut gone = std::collections::HashSet::new();
        for entry in self.arrived.iter().chain(self.runs.iter().flatten()) {
            if unwanted.call1((entry.arrival,))?.is_truthy()? {
                gone.insert(entry.arrival);
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        self.arrived.retain(|e| !gone.contains(&e.arrival));
        for run in &mut self.runs {
            run.retain(|e| !gone.contains(&e.arrival));
        }
        self.runs.retain(|run| !run.is_empty());
        self.len -= gone.len();
        Ok(())
    }
}

impl CallBuffer {
    /// Sort what arrived into the runs; with `fold`, make every run one (whose middle
    /// is then the median).
    fn settle(&mut self, py: Python<'_>, fold: bool) {
        let mut first = self.runs.len();
        if !self.arrived.is_empty() {
            let arrived = std::mem::take(&mut self.arrived);
            if first >= self.many_runs {
                let mut batch = arrived.len();
                while first > 0 && self.runs[first - 1].len() <= batch {
                    first -= 1;
                    batch += self.runs[first].len();
                }
            }
            self.runs.push(arrived.into());
        } else if !fold {
            return;
        }
        if fold {
            first = 0;
        }
        if self.runs.len() - first == 1 {
            let run = std::mem::take(&mut self.runs[first]);
            self.runs[first] = sorted(py, run.into()).into();
        } else if self.runs.len() - first > 1 {
            let merged: Vec<Entry> = self.runs.drain(first..).flatten().collect();
            self.runs.push(sorted(py, merged).into());
        }
    }
}
