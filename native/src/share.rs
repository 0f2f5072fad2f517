//! The link stage's share suspicion per account (`models.linking.suspicion`).
//!
//! `ExtractionShareSuspicion.update` runs once per call on the worker's hot path: here it
//! is the same arithmetic on the same per-account `array("d")` of three doubles (shaped
//! calls, calls, last event time), so snapshots do not change. The frozen reference is
//! `tests/models/linking/reference.py`; `test_differential.py` holds the two equal.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::cells::Cells;
use crate::fields::{f, field};
use crate::int;

const SHAPED: usize = 0;
const CALLS: usize = 1;
const LAST: usize = 2;

/// `is_extraction_shaped` of `tests/models/linking/reference.py`, in its order.
fn is_extraction_shaped(call: &Bound<'_, PyAny>) -> PyResult<bool> {
    let n: i128 = int(&field(call, f::N)?)?;
    if n > 1
        || field(call, f::LOGPROBS)?.is_truthy()?
        || field(call, f::SYSPROMPT_PROBE)?.is_truthy()?
    {
        return Ok(true);
    }
    let jailbreak: Option<f64> = field(call, f::JAILBREAK_SCORE)?.extract()?;
    if jailbreak.is_some_and(|score| score >= 0.7) {
        return Ok(true);
    }
    if !field(call, f::COT_REQUEST)?.is_truthy()? {
        return Ok(false);
    }
    let turn: i128 = int(&field(call, f::TURN)?)?;
    let tools: i128 = int(&field(call, f::TOOL_COUNT)?)?;
    if turn != 1 || tools != 0 {
        return Ok(false);
    }
    let stop = field(call, f::STOP_REASON)?;
    if !stop.is_none() && stop.downcast::<PyString>()?.to_str()? == "max_tokens" {
        return Ok(true);
    }
    let output: i128 = int(&field(call, f::OUTPUT_TOKENS)?)?;
    let input: i128 = int(&field(call, f::INPUT_TOKENS)?)?;
    Ok(output > input)
}

/// `ExtractionShareSuspicion.update` on the suspicion's account arrays.
#[pyclass(frozen, module = "distillwatch_native")]
pub struct ShareCore {
    decay_per_s: f64,
    prior: f64,
    prior_weight: f64,
    /// A zeroed `array("d")` of three doubles: a new account's state is a copy of it.
    blank: Py<PyAny>,
}

#[pymethods]
impl ShareCore {
    #[new]
    fn new(decay_per_s: f64, prior: f64, prior_weight: f64, blank: Py<PyAny>) -> Self {
        ShareCore { decay_per_s, prior, prior_weight, blank }
    }

    /// Count `call` into its account's array in `accounts` (keyed by account id) and
    /// return the account's suspicion after it.
    fn update(&self, py: Python<'_>, accounts: &Bound<'_, PyDict>, call: &Bound<'_, PyAny>) -> PyResult<f64> {
        self.update_one(py, accounts, call)
    }
}

impl ShareCore {
    /// `update`, for the observer's run over a drain's calls as well.
    pub(crate) fn update_one(
        &self,
        py: Python<'_>,
        accounts: &Bound<'_, PyDict>,
        call: &Bound<'_, PyAny>,
    ) -> PyResult<f64> {
        let ts: f64 = field(call, f::TS)?.extract()?;
        let account_id = field(call, f::ACCOUNT_ID)?;
        let (state_obj, fresh) = match accounts.get_item(&account_id)? {
            Some(state) => (state, false),
            None => {
                let state = self.blank.bind(py).call_method0(intern!(py, "__copy__"))?;
                accounts.set_item(&account_id, &state)?;
                (state, true)
            }
        };
        let cells = Cells::<f64>::of(&state_obj, "an account state")?;
        let state = cells.exactly(3, "an account state of another shape")?;
        let (mut shaped, mut calls);
        if fresh {
            state[LAST].set(ts);
            shaped = 0.0;
            calls = 0.0;
        } else {
            shaped = state[SHAPED].get();
            calls = state[CALLS].get();
            let last = state[LAST].get();
            if ts > last {
                let keep = (-self.decay_per_s * (ts - last)).exp();
                shaped *= keep;
                calls *= keep;
                state[LAST].set(ts);
            }
        }
        if is_extraction_shaped(call)? {
            shaped += 1.0;
        }
        calls += 1.0;
        state[SHAPED].set(shaped);
        state[CALLS].set(calls);
        let weight = self.prior_weight;
        Ok((shaped + self.prior * weight) / (calls + weight))
    }
}
