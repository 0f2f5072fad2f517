//! The edge's calls as rows: what `EdgeCall` holds, without a Python object per call.
//!
//! The edge reads every input record into its calls, orders them in event time across
//! the input partitions and writes them to their by-account partitions. As `EdgeCall`s
//! that was two Python objects per call (the call and its account's `str`), made on the
//! input thread under the GIL and freed on the event loop's: with the order's
//! bookkeeping, about a microsecond of the GIL per call, which the detection on the event
//! loop's thread waited for (bench/PROFILE.md, "Twenty-first pass"). `EdgeCalls` keeps a
//! record's calls as rows pointing into the record's encoded buffer; the edge's order
//! (`order::EdgeBuffer`) holds rows, and `by_destination` writes the internal records of
//! a release, all without the GIL. An `EdgeCall` is made only when Python asks for one
//! (tests, the Python edge, a release's last call).

use std::sync::Arc;

use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::{calls_record, EdgeCall};

/// One call at the edge: its event time, by-account partition, and the spans of its
/// payload (the msgpack of its `ApiCall`), tenant and account (UTF-8; a lone surrogate
/// as its code point's three bytes) in `buffer`.
#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) ts: f64,
    pub(crate) partition: u32,
    pub(crate) buffer: Arc<[u8]>,
    pub(crate) payload: (usize, usize),
    pub(crate) tenant: (usize, usize),
    pub(crate) account: (usize, usize),
}

impl Row {
    pub(crate) fn tenant(&self) -> &[u8] {
        &self.buffer[self.tenant.0..self.tenant.1]
    }

    pub(crate) fn account(&self) -> &[u8] {
        &self.buffer[self.account.0..self.account.1]
    }

    fn payload(&self) -> &[u8] {
        &self.buffer[self.payload.0..self.payload.1]
    }

    /// The row of an `EdgeCall` (one the Python edge made, or one taken out of a row).
    fn of(call: &EdgeCall, py: Python<'_>) -> PyResult<Row> {
        let (tenant, account) = (text_bytes(call.tenant_id.bind(py))?, text_bytes(call.account_id.bind(py))?);
        let payload = call.bytes();
        let mut buffer = Vec::with_capacity(payload.len() + tenant.len() + account.len());
        buffer.extend_from_slice(payload);
        buffer.extend_from_slice(&tenant);
        buffer.extend_from_slice(&account);
        let (p, t) = (payload.len(), payload.len() + tenant.len());
        Ok(Row {
            ts: call.ts,
            partition: call.partition,
            buffer: buffer.into(),
            payload: (0, p),
            tenant: (p, t),
            account: (t, t + account.len()),
        })
    }

    fn edge_call(&self, py: Python<'_>) -> PyResult<EdgeCall> {
        Ok(EdgeCall {
            ts: self.ts,
            tenant_id: text(py, self.tenant())?,
            account_id: text(py, self.account())?,
            partition: self.partition,
            buffer: Arc::clone(&self.buffer),
            span: self.payload,
        })
    }
}

/// The bytes of a `str` as `Row` keeps them.
fn text_bytes(s: &Bound<'_, PyString>) -> PyResult<Vec<u8>> {
    match s.to_str() {
        Ok(s) => Ok(s.as_bytes().to_vec()),
        Err(_) => Ok(s.call_method1("encode", ("utf-8", "surrogatepass"))?.extract()?),
    }
}

/// The `str` of bytes `Row` keeps.
fn text(py: Python<'_>, bytes: &[u8]) -> PyResult<Py<PyString>> {
    Ok(match std::str::from_utf8(bytes) {
        Ok(s) => PyString::new(py, s).unbind(),
        Err(_) => PyBytes::new(py, bytes)
            .call_method1("decode", ("utf-8", "surrogatepass"))?
            .downcast_into::<PyString>()?
            .unbind(),
    })
}

/// Calls at the edge, in order: a record's, or a release of the edge's order. A sequence
/// of `EdgeCall`s to Python.
#[pyclass(frozen, sequence, module = "distillwatch_native")]
pub struct EdgeCalls {
    rows: Vec<Row>,
}

impl EdgeCalls {
    pub(crate) fn from_rows(rows: Vec<Row>) -> Self {
        EdgeCalls { rows }
    }

    /// The rows of `calls`, a list of `EdgeCalls` and `EdgeCall`s, in order.
    pub(crate) fn rows_of(calls: &Bound<'_, PyList>) -> PyResult<Vec<Row>> {
        let py = calls.py();
        let mut rows = Vec::new();
        for item in calls.iter() {
            if let Ok(many) = item.downcast::<EdgeCalls>() {
                rows.extend_from_slice(&many.get().rows);
            } else if let Ok(one) = item.downcast::<EdgeCall>() {
                rows.push(Row::of(one.get(), py)?);
            } else {
                return Err(PyTypeError::new_err(format!(
                    "edge calls are EdgeCalls or EdgeCall, not {}",
                    item.get_type().name()?
                )));
            }
        }
        Ok(rows)
    }
}

#[pymethods]
impl EdgeCalls {
    /// The calls of `calls` (a list of `EdgeCalls` and `EdgeCall`s), in order.
    #[staticmethod]
    fn of(calls: &Bound<'_, PyList>) -> PyResult<Self> {
        Ok(EdgeCalls { rows: Self::rows_of(calls)? })
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    fn __getitem__(&self, py: Python<'_>, index: isize) -> PyResult<EdgeCall> {
        let len = self.rows.len() as isize;
        let at = if index < 0 { index + len } else { index };
        if at < 0 || at >= len {
            return Err(PyIndexError::new_err("EdgeCalls index out of range"));
        }
        self.rows[at as usize].edge_call(py)
    }

    /// The internal records of these calls, by their by-account partition: for each
    /// partition (in the order of its first call), its calls in order, `max_items` to a
    /// record, each `tag` then a msgpack array of their `ApiCall`s (as
    /// `streams.internal.encode_calls` writes them).
    fn by_destination<'py>(&self, py: Python<'py>, tag: &[u8], max_items: usize) -> PyResult<Bound<'py, PyDict>> {
        if max_items == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("max_items must be at least 1"));
        }
        let rows = &self.rows;
        let records: Vec<(u32, Vec<Vec<u8>>)> = py.allow_threads(|| {
            let mut order: Vec<u32> = Vec::new();
            let mut groups: Vec<Vec<&Row>> = Vec::new();
            let mut at: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
            for row in rows {
                let index = *at.entry(row.partition).or_insert_with(|| {
                    order.push(row.partition);
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[index].push(row);
            }
            order
                .into_iter()
                .zip(groups)
                .map(|(partition, group)| {
                    let records = group
                        .chunks(max_items)
                        .map(|chunk| {
                            let payloads: Vec<&[u8]> = chunk.iter().map(|row| row.payload()).collect();
                            calls_record(tag, &payloads)
                        })
                        .collect();
                    (partition, records)
                })
                .collect()
        });
        let out = PyDict::new(py);
        for (partition, values) in records {
            out.set_item(partition, PyList::new(py, values.iter().map(|v| PyBytes::new(py, v)))?)?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("EdgeCalls({} calls)", self.rows.len())
    }
}
