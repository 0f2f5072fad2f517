//! The calls waiting in `streams.ordering.EventTimeMerger`, kept in event-time order.
//!
//! Every call a worker detects waits here twice: at the edge (input partitions merged in
//! event time) and before the engine (by-account partitions merged). In Python each call
//! became a tuple `(ts, tenant_id, account_id, arrival, call)` sorted by the interpreter,
//! about a tenth of the event loop's thread (bench/PROFILE.md, "Fifteenth pass"). Here a
//! call is compared in Rust: by event time, then tenant and account as Python compares
//! `str` (by code point, which is the order of their UTF-8 bytes), then arrival.
//!
//! Two buffers share how calls wait (`Runs`): `CallBuffer` holds detect's `ApiCall`s
//! (their keys read from their slots, `fields.rs`); `EdgeBuffer` holds the edge's calls as
//! Rust rows (`edge_calls.rs`), with no Python object per call, and sorts them without
//! the GIL. What waits: the calls added since the last release in arrival order; the rest
//! in runs, each sorted. A release sorts what arrived into a new run (from `many_runs`
//! runs on, folding into it the newest runs no larger than what is being sorted), takes
//! each run's prefix up to the limit and merges the prefixes.

use std::cmp::Ordering;
use std::collections::{HashSet, VecDeque};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::edge_calls::{EdgeCalls, Row};
use crate::fields::{f, field};
use crate::EdgeCall;

/// A waiting call: its event time and its arrival number (from 1, in the order added).
trait Waiting {
    fn ts(&self) -> f64;
    fn arrival(&self) -> u64;
}

/// Calls waiting to be released in event-time order, `sort` sorting a run of them.
struct Runs<E> {
    arrived: Vec<E>,
    runs: Vec<VecDeque<E>>,
    arrivals: u64,
    many_runs: usize,
    len: usize,
}

impl<E: Waiting> Runs<E> {
    fn new(many_runs: usize) -> Self {
        Runs { arrived: Vec::new(), runs: Vec::new(), arrivals: 0, many_runs, len: 0 }
    }

    /// Take `entries`, numbered from `self.arrivals + 1` on in order.
    fn add(&mut self, mut entries: Vec<E>) {
        self.arrivals += entries.len() as u64;
        self.len += entries.len();
        self.arrived.append(&mut entries);
    }

    /// The event time in the middle of everything waiting (after `settle(fold = true)`,
    /// the middle of the one run); -inf when nothing waits.
    fn median_time(&mut self, sort: &impl Fn(Vec<E>) -> Vec<E>) -> f64 {
        self.settle(true, sort);
        self.runs.first().map_or(f64::NEG_INFINITY, |run| run[run.len() / 2].ts())
    }

    /// Remove and return every waiting call with event time <= `limit`, in order
    /// (`settle` first).
    fn take_through(&mut self, limit: f64, sort: &impl Fn(Vec<E>) -> Vec<E>) -> Vec<E> {
        self.settle(false, sort);
        let mut taken: Vec<Vec<E>> = Vec::new();
        for run in &mut self.runs {
            let cut = run.partition_point(|e| e.ts() <= limit);
            if cut > 0 {
                taken.push(run.drain(..cut).collect());
            }
        }
        self.runs.retain(|run| !run.is_empty());
        let out = match taken.len() {
            0 => Vec::new(),
            1 => taken.pop().unwrap_or_default(),
            _ => sort(taken.into_iter().flatten().collect()),
        };
        self.len -= out.len();
        out
    }

    fn entries(&self) -> impl Iterator<Item = &E> {
        self.arrived.iter().chain(self.runs.iter().flatten())
    }

    /// Forget the waiting calls whose arrival numbers are in `gone` (each of them waiting).
    fn forget(&mut self, gone: &HashSet<u64>) {
        if gone.is_empty() {
            return;
        }
        self.arrived.retain(|e| !gone.contains(&e.arrival()));
        for run in &mut self.runs {
            run.retain(|e| !gone.contains(&e.arrival()));
        }
        self.runs.retain(|run| !run.is_empty());
        self.len -= gone.len();
    }

    /// Sort what arrived into the runs; with `fold`, make every run one (whose middle
    /// is then the median).
    fn settle(&mut self, fold: bool, sort: &impl Fn(Vec<E>) -> Vec<E>) {
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
            self.runs[first] = sort(run.into()).into();
        } else if self.runs.len() - first > 1 {
            let merged: Vec<E> = self.runs.drain(first..).flatten().collect();
            self.runs.push(sort(merged).into());
        }
    }
}

/// The arrival numbers among `arrivals` that `unwanted(arrival)` is true of (an error if
/// it raises for any).
fn unwanted_of(unwanted: &Bound<'_, PyAny>, arrivals: impl Iterator<Item = u64>) -> PyResult<HashSet<u64>> {
    let mut gone = HashSet::new();
    for arrival in arrivals {
        if unwanted.call1((arrival,))?.is_truthy()? {
            gone.insert(arrival);
        }
    }
    Ok(gone)
}

// detect's calls --------------------------------------------------------------------------

struct Entry {
    ts: f64,
    tenant: Py<PyString>,
    account: Py<PyString>,
    arrival: u64,
    call: PyObject,
}

impl Waiting for Entry {
    fn ts(&self) -> f64 {
        self.ts
    }
    fn arrival(&self) -> u64 {
        self.arrival
    }
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

/// Calls (Python objects) waiting to be released in event-time order (see the module).
#[pyclass(module = "distillwatch_native")]
pub struct CallBuffer {
    runs: Runs<Entry>,
}

impl CallBuffer {
    fn sort(py: Python<'_>) -> impl Fn(Vec<Entry>) -> Vec<Entry> + '_ {
        // Stable and run-adaptive: records that come in event-time order cost a merge.
        move |mut entries| {
            entries.sort_by(|a, b| order(py, a, b));
            entries
        }
    }
}

#[pymethods]
impl CallBuffer {
    #[new]
    #[pyo3(signature = (many_runs = 8))]
    fn new(many_runs: usize) -> Self {
        CallBuffer { runs: Runs::new(many_runs) }
    }

    fn __len__(&self) -> usize {
        self.runs.len
    }

    /// How many calls were added so far: the arrival number of the latest (from 1).
    #[getter]
    fn arrivals(&self) -> u64 {
        self.runs.arrivals
    }

    /// Take `calls` (each with `ts`, `tenant_id` and `account_id`), in arrival order;
    /// returns the latest event time among them (-inf for none). A call without a float
    /// event time or with a tenant or account that is not a `str` is refused (TypeError)
    /// before any of them is taken.
    fn add(&mut self, calls: &Bound<'_, PyList>) -> PyResult<f64> {
        let mut entries = Vec::with_capacity(calls.len());
        let mut latest = f64::NEG_INFINITY;
        let first = self.runs.arrivals + 1;
        for (n, call) in calls.iter().enumerate() {
            let (ts, tenant, account) = key(&call)?;
            if ts > latest {
                latest = ts;
            }
            entries.push(Entry { ts, tenant, account, arrival: first + n as u64, call: call.unbind() });
        }
        self.runs.add(entries);
        Ok(latest)
    }

    /// The event time in the middle of everything waiting; -inf when nothing waits.
    fn median_time(&mut self, py: Python<'_>) -> f64 {
        self.runs.median_time(&Self::sort(py))
    }

    /// Remove and return every waiting call with event time <= `limit`, in order.
    fn take_through<'py>(&mut self, py: Python<'py>, limit: f64) -> PyResult<Bound<'py, PyList>> {
        let out = self.runs.take_through(limit, &Self::sort(py));
        PyList::new(py, out.into_iter().map(|e| e.call))
    }

    /// The arrival numbers of the calls waiting, in no particular order.
    fn waiting_arrivals(&self) -> Vec<u64> {
        self.runs.entries().map(|e| e.arrival).collect()
    }

    /// Forget the waiting calls whose arrival numbers `unwanted(arrival)` is true of
    /// (all or, if it raises, none).
    fn drop(&mut self, unwanted: &Bound<'_, PyAny>) -> PyResult<()> {
        let gone = unwanted_of(unwanted, self.runs.entries().map(|e| e.arrival))?;
        self.runs.forget(&gone);
        Ok(())
    }
}

// the edge's calls ------------------------------------------------------------------------

struct EdgeEntry {
    row: Row,
    arrival: u64,
}

impl Waiting for EdgeEntry {
    fn ts(&self) -> f64 {
        self.row.ts
    }
    fn arrival(&self) -> u64 {
        self.arrival
    }
}

/// `streams.ordering.order_key`, then arrival: tenant and account as their UTF-8 (or, for
/// a lone surrogate, its code point's three bytes), whose byte order is that of Python's
/// `str`.
fn edge_order(a: &EdgeEntry, b: &EdgeEntry) -> Ordering {
    a.row.ts
        .partial_cmp(&b.row.ts)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.row.tenant().cmp(b.row.tenant()))
        .then_with(|| a.row.account().cmp(b.row.account()))
        .then(a.arrival.cmp(&b.arrival))
}

fn edge_sort(mut entries: Vec<EdgeEntry>) -> Vec<EdgeEntry> {
    entries.sort_by(edge_order);
    entries
}

/// The edge's calls waiting to be released in event-time order (see the module): rows,
/// not Python objects, sorted without the GIL.
#[pyclass(module = "distillwatch_native")]
pub struct EdgeBuffer {
    runs: Runs<EdgeEntry>,
}

#[pymethods]
impl EdgeBuffer {
    #[new]
    #[pyo3(signature = (many_runs = 8))]
    fn new(many_runs: usize) -> Self {
        EdgeBuffer { runs: Runs::new(many_runs) }
    }

    fn __len__(&self) -> usize {
        self.runs.len
    }

    /// How many calls were added so far: the arrival number of the latest (from 1).
    #[getter]
    fn arrivals(&self) -> u64 {
        self.runs.arrivals
    }

    /// Take `calls` (a list of `EdgeCalls` and `EdgeCall`s), in arrival order; returns the
    /// latest event time among them (-inf for none). Anything else in the list is
    /// refused (TypeError) before any of them is taken.
    fn add(&mut self, calls: &Bound<'_, PyList>) -> PyResult<f64> {
        let rows = EdgeCalls::rows_of(calls)?;
        let latest = rows.iter().map(|r| r.ts).fold(f64::NEG_INFINITY, f64::max);
        let first = self.runs.arrivals + 1;
        self.runs.add(
            rows.into_iter().enumerate().map(|(n, row)| EdgeEntry { row, arrival: first + n as u64 }).collect(),
        );
        Ok(latest)
    }

    /// The event time in the middle of everything waiting; -inf when nothing waits.
    fn median_time(&mut self, py: Python<'_>) -> f64 {
        let runs = &mut self.runs;
        py.allow_threads(|| runs.median_time(&edge_sort))
    }

    /// Remove and return every waiting call with event time <= `limit`, in order.
    fn take_through(&mut self, py: Python<'_>, limit: f64) -> EdgeCalls {
        let runs = &mut self.runs;
        let out = py.allow_threads(|| runs.take_through(limit, &edge_sort));
        EdgeCalls::from_rows(out.into_iter().map(|e| e.row).collect())
    }

    /// The arrival numbers of the calls waiting, in no particular order.
    fn waiting_arrivals(&self) -> Vec<u64> {
        self.runs.entries().map(|e| e.arrival).collect()
    }

    /// Forget the waiting calls whose arrival numbers `unwanted(arrival)` is true of
    /// (all or, if it raises, none).
    fn drop(&mut self, unwanted: &Bound<'_, PyAny>) -> PyResult<()> {
        let gone = unwanted_of(unwanted, self.runs.entries().map(|e| e.arrival))?;
        self.runs.forget(&gone);
        Ok(())
    }
}
