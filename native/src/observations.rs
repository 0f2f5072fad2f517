//! The link observer's observations, written straight into the records of their
//! partitions.
//!
//! A drain's link stage made a `LinkObservation` per observation (about one per three
//! calls), then grouped them by the partition of their link key in Python and encoded
//! each group with msgspec: with the objects' making and freeing, about 0.45 µs of the
//! event loop's thread per call (bench/PROFILE.md, "Twenty-fourth pass"). The observer
//! now writes each observation's msgpack into its partition's pending record instead:
//! the same bytes msgspec writes for a list of `LinkObservation`s (a map of its seven
//! fields in their order), the same partition `streams.internal.partition_for` gives its
//! hub (`kind:key`), the same `max_items` to a record, the partitions in the order of
//! their first observation. `tests/models/linking/test_observation_records.py` holds the
//! two equal.

use hashbrown::HashMap;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::{put_array_header, put_f64, put_str};

/// The field names of a `LinkObservation`, in its order: its text fields, then its
/// numbers. The writer here and the reader (`evidence::read_record`) both go by it.
pub(crate) const FIELDS: [&str; 7] =
    ["kind", "key", "tenant_id", "account_id", "ts", "suspicion", "first_seen"];

/// The msgpack marker of a map of `FIELDS.len()` entries: one observation.
pub(crate) const MAP_MARKER: u8 = 0x80 | FIELDS.len() as u8;

/// One observation, its text borrowed.
pub(crate) struct Observation<'a> {
    pub(crate) kind: &'a str,
    pub(crate) key: &'a str,
    pub(crate) tenant_id: &'a str,
    pub(crate) account_id: &'a str,
    pub(crate) ts: f64,
    pub(crate) suspicion: f64,
    pub(crate) first_seen: f64,
}

/// A partition's records: those full, and the observations of the next one.
#[derive(Default)]
struct Pending {
    records: Vec<Vec<u8>>,
    body: Vec<u8>,
    count: usize,
}

/// Link observations encoded into the internal records of their link-key partitions,
/// until `take`: each record `tag` then a msgpack array of up to `max_items`
/// observations, as `streams.internal.encode_observations` writes a list of them.
#[pyclass(module = "distillwatch_native")]
pub struct ObservationRecords {
    tag: Vec<u8>,
    partitions: u32,
    max_items: usize,
    order: Vec<u32>,
    pending: HashMap<u32, Pending>,
    len: usize,
}

impl ObservationRecords {
    /// Encode `obs` into the pending record of its hub's partition.
    pub(crate) fn push(&mut self, obs: &Observation<'_>) {
        let mut hub = crc32fast::Hasher::new();
        hub.update(obs.kind.as_bytes());
        hub.update(b":");
        hub.update(obs.key.as_bytes());
        let partition = hub.finalize() % self.partitions;
        let (order, tag, max_items) = (&mut self.order, &self.tag, self.max_items);
        let pending = self.pending.entry(partition).or_insert_with(|| {
            order.push(partition);
            Pending::default()
        });
        let out = &mut pending.body;
        out.push(MAP_MARKER);
        let (names, numbers) = FIELDS.split_at(4);
        for (name, text) in names.iter().zip([obs.kind, obs.key, obs.tenant_id, obs.account_id]) {
            put_str(out, name);
            put_str(out, text);
        }
        for (name, value) in numbers.iter().zip([obs.ts, obs.suspicion, obs.first_seen]) {
            put_str(out, name);
            put_f64(out, value);
        }
        pending.count += 1;
        self.len += 1;
        if pending.count == max_items {
            pending.records.push(record(tag, &pending.body, max_items));
            pending.body.clear();
            pending.count = 0;
        }
    }
}

/// One record: `tag`, then a msgpack array of the `count` observations in `body`.
fn record(tag: &[u8], body: &[u8], count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + 5 + body.len());
    out.extend_from_slice(tag);
    put_array_header(&mut out, count);
    out.extend_from_slice(body);
    out
}

#[pymethods]
impl ObservationRecords {
    #[new]
    fn new(tag: Vec<u8>, partitions: u32, max_items: usize) -> PyResult<Self> {
        if partitions == 0 || max_items == 0 {
            return Err(PyValueError::new_err("partitions and max_items must be at least 1"));
        }
        Ok(ObservationRecords {
            tag,
            partitions,
            max_items,
            order: Vec::new(),
            pending: HashMap::default(),
            len: 0,
        })
    }

    /// How many observations wait to be taken.
    fn __len__(&self) -> usize {
        self.len
    }

    /// The records of every observation written since the last `take`, by partition (in
    /// the order of each one's first observation), and none left.
    fn take<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for partition in std::mem::take(&mut self.order) {
            let mut pending = self.pending.remove(&partition).expect("each partition in order has some");
            if pending.count > 0 {
                pending.records.push(record(&self.tag, &pending.body, pending.count));
            }
            out.set_item(partition, PyList::new(py, pending.records.iter().map(|r| PyBytes::new(py, r)))?)?;
        }
        self.len = 0;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("ObservationRecords({} observations, {} partitions)", self.len, self.partitions)
    }
}
