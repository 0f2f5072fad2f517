//! The ClickHouse sink's per-minute counts of each account's calls (`streams.sinks`).
//!
//! Every call a worker detects is counted into the row of its account and minute of
//! event time, the `account_minute` table's row. A drain hands over thousands of calls
//! at once; counting them here costs a fraction of a Python object per field. Rows keep
//! the order in which their first call arrived, as the Python dict they replace did, so
//! inserts in parts write the oldest rows first.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::bucket;
use crate::fields::{f, field};

/// One account's minute: what analysts query in `account_minute`.
struct Row {
    hash: u64,
    minute: i64,
    tenant: Py<PyString>,
    account: Py<PyString>,
    requests: u64,
    // Sums of counts the contract bounds by 2^64 - 1 each: u128 holds 2^64 of them.
    input_tokens: u128,
    output_tokens: u128,
    cot_requests: u64,
    logprob_requests: u64,
    errors: u64,
    refusals: u64,
    max_jailbreak_score: f64,
    /// Distinct prompt SimHashes, ascending (the column's order).
    prompt_templates: Vec<u64>,
    max_score: f64,
}

impl Row {
    fn new(hash: u64, minute: i64, tenant: Py<PyString>, account: Py<PyString>) -> Row {
        Row {
            hash,
            minute,
            tenant,
            account,
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            cot_requests: 0,
            logprob_requests: 0,
            errors: 0,
            refusals: 0,
            max_jailbreak_score: 0.0,
            prompt_templates: Vec::new(),
            max_score: 0.0,
        }
    }

    fn merge(&mut self, other: &Row) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cot_requests += other.cot_requests;
        self.logprob_requests += other.logprob_requests;
        self.errors += other.errors;
        self.refusals += other.refusals;
        self.max_jailbreak_score = self.max_jailbreak_score.max(other.max_jailbreak_score);
        for &simhash in &other.prompt_templates {
            add_template(&mut self.prompt_templates, simhash);
        }
        self.max_score = self.max_score.max(other.max_score);
    }
}

fn add_template(templates: &mut Vec<u64>, simhash: u64) {
    if let Err(at) = templates.binary_search(&simhash) {
        templates.insert(at, simhash);
    }
}

/// `int(ts // 60) * 60`: the start of the call's minute, in seconds since the epoch.
fn minute_of(ts: f64) -> PyResult<i64> {
    // Past a 64-bit int a minute's start is no DateTime ClickHouse holds either.
    i64::try_from(bucket(ts, 60.0)?)
        .ok()
        .and_then(|minute| minute.checked_mul(60))
        .ok_or_else(|| PyOverflowError::new_err(format!("event time {ts} is out of range")))
}

/// The per-minute rows of each account, in the order their first call came.
#[pyclass(module = "distillwatch_native")]
pub struct MinuteCounts {
    rows: Vec<Row>,
    index: HashTable<usize>,
    hasher: DefaultHashBuilder,
}

impl MinuteCounts {
    fn key_hash(&self, minute: i64, tenant: &str, account: &str) -> u64 {
        self.hasher.hash_one((minute, tenant, account))
    }

    /// The position of the row of (`minute`, `tenant`, `account`), None if it has none.
    fn find(&self, py: Python<'_>, hash: u64, minute: i64, tenant: &str, account: &str) -> Option<usize> {
        let rows = &self.rows;
        self.index
            .find(hash, |&i| {
                let row = &rows[i];
                row.minute == minute
                    && row.account.bind(py).to_str().is_ok_and(|a| a == account)
                    && row.tenant.bind(py).to_str().is_ok_and(|t| t == tenant)
            })
            .copied()
    }

    fn push(&mut self, row: Row) -> usize {
        let at = self.rows.len();
        let rows = &self.rows;
        self.index.insert_unique(row.hash, at, |&i| rows[i].hash);
        self.rows.push(row);
        at
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, row) in self.rows.iter().enumerate() {
            let rows = &self.rows;
            self.index.insert_unique(row.hash, i, |&j| rows[j].hash);
        }
    }
}

#[pymethods]
impl MinuteCounts {
    /// Room for `capacity` rows from the start: the sink starts each interval's counts
    /// with the last interval's number of rows, rather than growing (and rehashing) to it
    /// again.
    #[new]
    #[pyo3(signature = (capacity=0))]
    fn new(capacity: usize) -> Self {
        MinuteCounts {
            rows: Vec::with_capacity(capacity),
            index: HashTable::with_capacity(capacity),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// Count `calls` (`models.records.ApiCall`) with their combined scores, `scores[i]`
    /// being `calls[i]`'s. The caller checks that the lengths agree.
    fn add(&mut self, py: Python<'_>, calls: &Bound<'_, PyAny>, scores: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut scores = scores.try_iter()?;
        for call in calls.try_iter()? {
            let call = call?;
            let score: f64 = match scores.next() {
                Some(score) => score?.extract()?,
                None => break,
            };
            let minute = minute_of(field(&call, f::TS)?.extract()?)?;
            let tenant = field(&call, f::TENANT_ID)?.downcast_into::<PyString>()?;
            let account = field(&call, f::ACCOUNT_ID)?.downcast_into::<PyString>()?;
            let (tenant_text, account_text) = (tenant.to_str()?, account.to_str()?);
            let hash = self.key_hash(minute, tenant_text, account_text);
            let at = match self.find(py, hash, minute, tenant_text, account_text) {
                Some(at) => at,
                None => self.push(Row::new(
                    hash, minute, tenant.clone().unbind(), account.clone().unbind(),
                )),
            };
            let input_tokens: u64 = field(&call, f::INPUT_TOKENS)?.extract()?;
            let output_tokens: u64 = field(&call, f::OUTPUT_TOKENS)?.extract()?;
            let cot = field(&call, f::COT_REQUEST)?.is_truthy()?;
            let logprobs = field(&call, f::LOGPROBS)?.is_truthy()?;
            let status: i64 = field(&call, f::STATUS)?.extract()?;
            let stop = field(&call, f::STOP_REASON)?;
            let refusal = !stop.is_none() && stop.downcast::<PyString>()?.to_str()? == "refusal";
            let jailbreak: Option<f64> = field(&call, f::JAILBREAK_SCORE)?.extract()?;
            let simhash: Option<u64> = field(&call, f::SIMHASH)?.extract()?;
            let row = &mut self.rows[at];
            row.requests += 1;
            row.input_tokens += u128::from(input_tokens);
            row.output_tokens += u128::from(output_tokens);
            row.cot_requests += u64::from(cot);
            row.logprob_requests += u64::from(logprobs);
            row.errors += u64::from(status >= 400);
            row.refusals += u64::from(refusal);
            if let Some(score) = jailbreak {
                if score > row.max_jailbreak_score {
                    row.max_jailbreak_score = score;
                }
            }
            if let Some(simhash) = simhash {
                add_template(&mut row.prompt_templates, simhash);
            }
            if score > row.max_score {
                row.max_score = score;
            }
        }
        Ok(())
    }

    /// The first `limit` rows as the columns of `streams.sinks.MINUTE_COLUMNS`: minute
    /// start (epoch seconds), tenant, account, the counts, the maxima, the SimHashes.
    fn columns<'py>(&self, py: Python<'py>, limit: usize) -> PyResult<Vec<Bound<'py, PyList>>> {
        let rows = &self.rows[..limit.min(self.rows.len())];
        Ok(vec![
            PyList::new(py, rows.iter().map(|r| r.minute))?,
            PyList::new(py, rows.iter().map(|r| r.tenant.clone_ref(py)))?,
            PyList::new(py, rows.iter().map(|r| r.account.clone_ref(py)))?,
            PyList::new(py, rows.iter().map(|r| r.requests))?,
            PyList::new(py, rows.iter().map(|r| r.input_tokens))?,
            PyList::new(py, rows.iter().map(|r| r.output_tokens))?,
            PyList::new(py, rows.iter().map(|r| r.cot_requests))?,
            PyList::new(py, rows.iter().map(|r| r.logprob_requests))?,
            PyList::new(py, rows.iter().map(|r| r.errors))?,
            PyList::new(py, rows.iter().map(|r| r.refusals))?,
            PyList::new(py, rows.iter().map(|r| r.max_jailbreak_score))?,
            PyList::new(py, rows.iter().map(|r| r.prompt_templates.clone()))?,
            PyList::new(py, rows.iter().map(|r| r.max_score))?,
        ])
    }

    /// Forget the first `n` rows (written).
    fn drop_first(&mut self, n: usize) {
        if n >= self.rows.len() {
            self.rows.clear();
            self.index.clear();
        } else if n > 0 {
            self.rows.drain(..n);
            self.reindex();
        }
    }

    /// Count `other`'s rows in too: a row of the same account and minute adds up, the
    /// others follow this one's rows in their order.
    fn merge(&mut self, py: Python<'_>, other: &Bound<'_, MinuteCounts>) -> PyResult<()> {
        let other = other.borrow();
        for row in &other.rows {
            let tenant = row.tenant.bind(py).to_str()?;
            let account = row.account.bind(py).to_str()?;
            let hash = self.key_hash(row.minute, tenant, account);
            match self.find(py, hash, row.minute, tenant, account) {
                Some(at) => self.rows[at].merge(row),
                None => {
                    let mut copy = Row::new(
                        hash, row.minute, row.tenant.clone_ref(py), row.account.clone_ref(py),
                    );
                    copy.merge(row);
                    self.push(copy);
                }
            }
        }
        Ok(())
    }
}
