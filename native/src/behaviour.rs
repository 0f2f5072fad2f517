//! The per-call counting, the suspicion and the judging of
//! `models.behaviour.BehaviourDetector`.
//!
//! Every call of every account is counted into its `BehaviourState` (`_count`), and
//! linking reads the account's suspicion after each call (`suspicion`): the two largest
//! costs of the detection engine per call. A call past the gate is judged (`judge`): on
//! harvesting traffic, most calls. Here they are the same arithmetic, in the same order,
//! on the same state (float32 counters read as doubles and rounded back, the same libm
//! `exp` and `log`, Python's `max` and `min` of floats), so states, snapshots, scores and
//! findings do not change. The Python they were ported from is
//! `tests/models/behaviour_reference.py`; `tests/models/test_behaviour_core.py` holds the
//! two equal, bit for bit.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList, PySet, PyString, PyTuple};

use crate::cells::Cells;
use crate::fields::{acct, f, field, st, ACCOUNT, STATE};
use crate::{bucket, int};

// The layout of `BehaviourState.counts` (models/behaviour.py): 14 counters at the 1-hour
// horizon, the same at the 1-day horizon, 3 at 10 minutes, 16 topic slots at the day.
const N_COUNTERS: usize = 14;
const K2: usize = N_COUNTERS;
const S0: usize = 2 * N_COUNTERS;
const T0: usize = S0 + 3;
const TOPIC_SLOTS: usize = 16;
const SLOTS: usize = T0 + TOPIC_SLOTS;
const TEMPLATE_SLOTS: usize = 6;
const TOPIC_BUCKET_S: f64 = 1800.0;
const GAP_ALPHA: f64 = 0.1;
const ENTROPY_MIN_PROMPTS: f64 = 10.0;
const ENTROPY_BROAD_BITS: (f64, f64) = (3.0, 3.5);

/// `models.behaviour.KNOWN_TOPICS`, in order: label i has coverage bit i, slot T0 + i.
const KNOWN_TOPICS: [&str; 14] = [
    "coding", "math", "reasoning", "agentic", "chat", "writing", "science", "other", "law",
    "medicine", "finance", "translation", "data_analysis", "history",
];

/// `models.behaviour._topic`: (coverage bit, counter index) of a topic label.
fn topic_entry(topic: &str) -> (i128, usize) {
    if let Some(i) = KNOWN_TOPICS.iter().position(|known| *known == topic) {
        return (1 << i, T0 + i);
    }
    let crc = u64::from(crc32fast::hash(topic.as_bytes()));
    let known = KNOWN_TOPICS.len() as u64;
    let bit = 1i128 << (known + crc % (32 - known));
    (bit, T0 + KNOWN_TOPICS.len() + (crc % (TOPIC_SLOTS as u64 - known)) as usize)
}

/// `models.behaviour._ramp`.
fn ramp(x: f64, lo: f64, hi: f64) -> f64 {
    if x <= lo {
        0.0
    } else if x >= hi {
        1.0
    } else {
        (x - lo) / (hi - lo)
    }
}

/// Python's `max(a, b)` of floats: the first unless the second is greater.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// `models.behaviour.topic_coverage` of a state's packed topics.
fn topic_coverage(packed: i128, ts: f64) -> PyResult<u32> {
    let bucket = bucket(ts, TOPIC_BUCKET_S)?;
    let stored = packed >> 64;
    Ok(if stored == bucket {
        ((packed & 0xFFFF_FFFF) | ((packed >> 32) & 0xFFFF_FFFF)).count_ones()
    } else if stored == bucket - 1 {
        (packed & 0xFFFF_FFFF).count_ones()
    } else {
        0
    })
}

/// `models.behaviour.topic_entropy`: bits, or None under 10 prompts in the day.
fn topic_entropy(c: &[f64], landmark: f64, ts: f64) -> Option<f64> {
    let slots = &c[T0..SLOTS];
    let total: f64 = slots.iter().fold(0.0, |sum, &x| sum + x);
    if total <= 0.0 {
        return None;
    }
    let d = if landmark > f64::NEG_INFINITY { ts - landmark } else { 0.0 };
    if total * (-d / 86_400.0).exp() < ENTROPY_MIN_PROMPTS {
        return None;
    }
    let mut weighted = 0.0;
    for &count in slots {
        if count > 0.0 {
            weighted += count * count.ln();
        }
    }
    Some(py_max(0.0, (total.ln() - weighted / total) / std::f64::consts::LN_2))
}

fn breadth(entropy: Option<f64>) -> f64 {
    entropy.map_or(0.0, |e| ramp(e, ENTROPY_BROAD_BITS.0, ENTROPY_BROAD_BITS.1))
}

/// A state's counters read as doubles, in the float32 array's own order.
fn read_counts(counts: impl ExactSizeIterator<Item = f32>) -> PyResult<[f64; SLOTS]> {
    if counts.len() != SLOTS {
        return Err(PyValueError::new_err("a behaviour state's counts of another size"));
    }
    let mut c = [0.0; SLOTS];
    for (to, from) in c.iter_mut().zip(counts) {
        *to = f64::from(from);
    }
    Ok(c)
}

/// `BehaviourDetector`'s counting, suspicion and judging on `BehaviourState`s.
#[pyclass(frozen, module = "distillwatch_native")]
pub struct BehaviourCore {
    renormalise_after: f64,
    /// `models.behaviour._NO_TEMPLATES`, shared by every state without templates.
    no_templates: Py<PyAny>,
    /// Six zeroed template slots (`array("Q")`): a state's first templates copy it.
    zero_templates: Py<PyAny>,
    /// What `judge` needs of the detector; None: `judge` refuses.
    judging: Option<Judging>,
}

/// A `BehaviourDetector`'s judging parameters, and the finding type and explainer
/// `_judge` builds its finding with.
struct Judging {
    min_harvest: [f64; 3],
    min_multi: [f64; 3],
    min_probe: [f64; 3],
    max_amplification: f64,
    /// `young_account_days` as given (the account-age amplifier's baseline is the object).
    young: Py<PyAny>,
    young_days: f64,
    finding: Py<PyAny>,
    explain: Py<PyAny>,
}

/// What `BehaviourCore.new` is given as `judging`, as extracted.
type JudgingArgs<'py> =
    ([f64; 3], [f64; 3], [f64; 3], f64, Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>);

impl Judging {
    fn read(judging: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (min_harvest, min_multi, min_probe, max_amplification, young, finding, explain): JudgingArgs<'_> =
            judging.extract()?;
        let young_days: f64 = young.extract()?;
        Ok(Judging {
            min_harvest, min_multi, min_probe, max_amplification, young: young.unbind(), young_days,
            finding: finding.unbind(), explain: explain.unbind(),
        })
    }
}

#[pymethods]
impl BehaviourCore {
    /// `judging`: `(min_harvest, min_multi, min_probe, max_amplification,
    /// young_account_days, Finding, explain)` of the detector, for `judge`.
    #[new]
    #[pyo3(signature = (renormalise_after, no_templates, zero_templates, judging=None))]
    fn new(
        renormalise_after: f64,
        no_templates: Py<PyAny>,
        zero_templates: Py<PyAny>,
        judging: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let judging = judging.map(Judging::read).transpose()?;
        Ok(BehaviourCore { renormalise_after, no_templates, zero_templates, judging })
    }

    /// `BehaviourDetector._judge(state, ts, created_at)`: the finding of the account at
    /// event time `ts`, or None. The same arithmetic in the same order as the Python it
    /// replaced (`tests/models/behaviour_reference.py`), and the same evidence tuples.
    #[pyo3(signature = (state, ts, created_at))]
    fn judge<'py>(
        &self,
        py: Python<'py>,
        state: &Bound<'py, PyAny>,
        ts: f64,
        created_at: Option<f64>,
    ) -> PyResult<PyObject> {
        let Some(j) = &self.judging else {
            return Err(PyValueError::new_err("this core was built without judging parameters"));
        };
        judge(py, j, state, ts, created_at)
    }

    /// `BehaviourDetector._count(state, call)`, then the gate of `assess_one`: True when
    /// the account has at least two matching requests of a pattern in the hour (scaled as
    /// stored), so the call must be judged.
    fn count(&self, py: Python<'_>, state: &Bound<'_, PyAny>, call: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.count_into(py, state, call)?.gate)
    }

    /// `DetectionEngine.process_many` for the usual engine (one `BehaviourDetector`
    /// whose core this is): each of `calls[start:stop]` in order, as `process` would,
    /// its engine suspicion appended to `suspicions`, its combined score to `scores`, its
    /// alerts to `alerts`. Stops after the first call at or after `until_ts`, or before
    /// a call that raises an `Exception` (returned, with that call's index, as the
    /// second item). With `known` a set, a call whose (tenant, account) key is not in it
    /// goes to `prepare(key)` first, if given.
    ///
    /// The common call (an account with state and no open episode, no cohort epoch to
    /// finalise, no pattern past its gate, sampled in the current cohort epoch) is
    /// counted and judged here, without Python. Every other call runs in the engine:
    /// `process(call)` when nothing is counted yet, else `_counted(call, key, account,
    /// gate)`, the rest of `process` after the count.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (engine, calls, start, stop, until_ts, known, prepare, suspicions, scores, alerts))]
    fn process_many<'py>(
        &self,
        py: Python<'py>,
        engine: &Bound<'py, PyAny>,
        calls: &Bound<'py, PyList>,
        start: usize,
        stop: usize,
        until_ts: f64,
        known: Option<&Bound<'py, PySet>>,
        prepare: Option<&Bound<'py, PyAny>>,
        suspicions: &Bound<'py, PyList>,
        scores: &Bound<'py, PyList>,
        alerts: &Bound<'py, PyList>,
    ) -> PyResult<(usize, Option<PyObject>)> {
        let accounts_obj = engine.getattr(intern!(py, "_accounts"))?;
        let accounts = accounts_obj.downcast::<PyDict>()?;
        let mut run = Run::read(py, engine)?;
        let out = Out { suspicions, scores, alerts, zero: PyFloat::new(py, 0.0) };
        let stop = stop.min(calls.len());
        let mut i = start;
        while i < stop {
            let call = calls.get_item(i)?;
            match self.process_one(py, engine, accounts, &mut run, &call, known, prepare, &out) {
                Ok(ts) => {
                    i += 1;
                    if ts >= until_ts {
                        break;
                    }
                }
                Err(err) => {
                    run.write(py, engine, &out)?;
                    if err.is_instance_of::<PyException>(py) {
                        return Ok((i, Some(err.into_value(py).into_any())));
                    }
                    return Err(err);
                }
            }
        }
        run.write(py, engine, &out)?;
        Ok((i, None))
    }

    /// `BehaviourDetector.suspicion(state, ts)`.
    fn suspicion(&self, state: &Bound<'_, PyAny>, ts: f64) -> PyResult<f64> {
        let landmark: f64 = STATE.get(state, st::LANDMARK)?.extract()?;
        let counts_obj = STATE.get(state, st::COUNTS)?;
        let counts = Cells::<f32>::of(&counts_obj, "a behaviour state's counts")?;
        let c = read_counts(counts.cells().iter().map(std::cell::Cell::get))?;
        suspicion_of(state, &c, landmark, ts)
    }
}

/// What counting a call left: `assess_one`'s gate, the counters as written back (as
/// doubles) and the landmark they are scaled to.
struct Counted {
    gate: bool,
    c: [f64; SLOTS],
    landmark: f64,
}

/// `BehaviourDetector.suspicion` of a state whose counters (as doubles) are `c`, scaled
/// to `landmark`.
fn suspicion_of(state: &Bound<'_, PyAny>, c: &[f64; SLOTS], landmark: f64, ts: f64) -> PyResult<f64> {
    let w2 = if landmark > f64::NEG_INFINITY { ((ts - landmark) / 86400.0).exp() } else { 1.0 };
    let requests = c[14] / w2;
    if requests < 1.0 {
        return Ok(0.0);
    }
    let prompted = requests - c[15] / w2;
    let (cot, harvest) = (c[16] / w2, c[17] / w2);
    let template_share = c[26] / w2 / (prompted + 2.0);
    let single_share = c[18] / w2 / (requests + 2.0);
    let harvest_shape =
        ramp((harvest + 1.0) / (cot + 2.0), 0.6, 0.9) * ramp(harvest / (prompted + 2.0), 0.15, 0.5);
    let mut sweep_shape = ramp(c[21] / w2 / (requests + 2.0), 0.3, 0.7);
    if sweep_shape > 0.0 {
        let packed: i128 = STATE.get(state, st::TOPICS)?.extract()?;
        let coverage = f64::from(topic_coverage(packed, ts)?);
        sweep_shape *= py_max(
            py_max(ramp(coverage, 6.0, 10.0), ramp(template_share, 0.3, 0.6)),
            breadth(topic_entropy(c, landmark, ts)),
        );
    }
    let probe_shape = ramp(c[22] / w2 / (prompted + 2.0), 0.08, 0.3);
    let shape = py_max(py_max(harvest_shape, sweep_shape), probe_shape);
    let completed = requests - c[24] / w2 - c[25] / w2;
    let max_tokens_share = if completed > 0.0 { c[20] / w2 / (completed + 2.0) } else { 0.0 };
    let context = (ramp(template_share, 0.3, 0.7)
        + ramp(max_tokens_share, 0.1, 0.3)
        + ramp(single_share, 0.7, 0.95))
        / 3.0;
    let reasoning_heavy = 0.25 * ramp(cot / (prompted + 2.0), 0.3, 0.9);
    Ok(1.0 - (1.0 - shape * (0.7 + 0.3 * context)) * (1.0 - reasoning_heavy))
}

/// `assess_one`'s gate: no pattern can score without two matching requests in the hour.
fn gate(c: &[f64; SLOTS], w1: f64) -> bool {
    let gate = 2.0 * w1;
    !(c[3] < gate && c[7] < gate && c[8] < gate)
}

impl BehaviourCore {
    /// `BehaviourDetector._count(state, call)`: the counters as written back, the
    /// landmark they are scaled to, and the gate of `assess_one`.
    fn count_into(&self, py: Python<'_>, state: &Bound<'_, PyAny>, call: &Bound<'_, PyAny>) -> PyResult<Counted> {
        // The call's own float becomes the state's landmark and last call time, as in
        // Python: no float object of the state's own (24 bytes an account).
        let ts_obj = field(call, f::TS)?;
        let ts: f64 = ts_obj.extract()?;
        let landmark: f64 = STATE.get(state, st::LANDMARK)?.extract()?;
        let counts_obj = STATE.get(state, st::COUNTS)?;
        let counts = Cells::<f32>::of(&counts_obj, "a behaviour state's counts")?;
        let cells = counts.cells();
        let mut c = read_counts(cells.iter().map(std::cell::Cell::get))?;
        let d = ts - landmark;
        let (w0, w1, w2);
        // Also an account's first call: its landmark is -inf.
        let renormalised = d > self.renormalise_after;
        if renormalised {
            self.renormalise(state, &mut c, landmark, &ts_obj, ts)?;
            (w0, w1, w2) = (1.0, 1.0, 1.0);
        } else if d < -self.renormalise_after {
            // Hours late: too old to change what the horizons show. Not counted; with a
            // gate of 0 the call is judged on the account as it stands.
            return Ok(Counted { gate: gate(&c, 0.0), c, landmark });
        } else {
            w0 = (d / 600.0).exp();
            w1 = (d / 3600.0).exp();
            w2 = (d / 86400.0).exp();
        }
        c[0] += w1;
        c[14] += w2;
        let status: i128 = int(&field(call, f::STATUS)?)?;
        let out: i128 = int(&field(call, f::OUTPUT_TOKENS)?)?;
        if out != 0 {
            let kilo = out as f64 * 0.001;
            c[13] += kilo * w1;
            c[27] += kilo * w2;
        }
        let turn: i128 = int(&field(call, f::TURN)?)?;
        let single = turn == 1 && {
            let tools: i128 = int(&field(call, f::TOOL_COUNT)?)?;
            tools == 0
        };
        let stop_obj = field(call, f::STOP_REASON)?;
        let stop: Option<Bound<'_, PyString>> =
            if stop_obj.is_none() { None } else { Some(stop_obj.downcast_into::<PyString>()?) };
        let stop_is = |text: &str| -> PyResult<bool> {
            Ok(match &stop {
                Some(s) => s.to_str()? == text,
                None => false,
            })
        };
        let heavy = single && status == 200 && {
            let input: i128 = int(&field(call, f::INPUT_TOKENS)?)?;
            out > input || stop_is("max_tokens")?
        };
        if field(call, f::HAS_PROMPT)?.is_truthy()? {
            if field(call, f::COT_REQUEST)?.is_truthy()? {
                c[2] += w1;
                c[16] += w2;
                // Throttled or failed: the harvesting shape, without the answer.
                if heavy || (single && status != 200) {
                    c[28] += w0;
                    c[3] += w1;
                    c[17] += w2;
                }
            }
            let jailbreak: Option<f64> = field(call, f::JAILBREAK_SCORE)?.extract()?;
            if field(call, f::SYSPROMPT_PROBE)?.is_truthy()?
                || jailbreak.is_some_and(|score| score >= 0.5)
            {
                c[30] += w0;
                c[8] += w1;
                c[22] += w2;
            }
            let simhash_obj = field(call, f::SIMHASH)?;
            // Templates matter where harvesting lives: single-turn, tool-free prompts.
            if !simhash_obj.is_none() && single {
                let simhash: u64 = simhash_obj.extract()?;
                self.count_template(py, state, &mut c, simhash, w1, w2)?;
            }
            let topic = field(call, f::TOPIC)?;
            if !topic.is_none() {
                let bucket = bucket(ts, TOPIC_BUCKET_S)?;
                let packed: i128 = STATE.get(state, st::TOPICS)?.extract()?;
                let stored = packed >> 64;
                let (bit, slot) = topic_entry(topic.downcast::<PyString>()?.to_str()?);
                c[slot] += w2;
                // Most calls repeat a topic of the bucket: no new int then.
                let topics = if stored == bucket {
                    ((packed & bit) == 0).then_some(packed | bit)
                } else if stored < bucket {
                    let previous = if stored == bucket - 1 { packed & 0xFFFF_FFFF } else { 0 };
                    Some((bucket << 64) | (previous << 32) | bit)
                } else if stored == bucket + 1 {
                    // Late, from the previous bucket.
                    Some(packed | (bit << 32))
                } else {
                    None
                };
                if let Some(topics) = topics {
                    STATE.set(state, st::TOPICS, topics)?;
                }
            }
        } else {
            c[1] += w1;
            c[15] += w2;
        }
        if single {
            c[4] += w1;
            c[18] += w2;
            if heavy {
                c[5] += w1;
                c[19] += w2;
            }
        }
        if stop_is("max_tokens")? {
            c[6] += w1;
            c[20] += w2;
        } else if stop_is("refusal")? {
            c[9] += w1;
            c[23] += w2;
        }
        let n: i128 = int(&field(call, f::N)?)?;
        if n > 1 || field(call, f::LOGPROBS)?.is_truthy()? {
            c[29] += w0;
            c[7] += w1;
            c[21] += w2;
        }
        if status >= 400 {
            if status == 429 {
                c[10] += w1;
                c[24] += w2;
            } else {
                c[11] += w1;
                c[25] += w2;
            }
        }
        // Each counter written back rounds to float32 once, as Python's `c[i] += w` does.
        for (cell, value) in cells.iter().zip(c.iter_mut()) {
            let rounded = *value as f32;
            cell.set(rounded);
            *value = f64::from(rounded);
        }
        let last: f64 = STATE.get(state, st::LAST_TS)?.extract()?;
        if ts >= last {
            if last > f64::NEG_INFINITY {
                let gap = ts - last;
                let gap_mean: f64 = STATE.get(state, st::GAP_MEAN)?.extract()?;
                let gap_dev: f64 = STATE.get(state, st::GAP_DEV)?.extract()?;
                let mean = gap_mean + GAP_ALPHA * (gap - gap_mean);
                STATE.set(state, st::GAP_DEV, gap_dev + GAP_ALPHA * ((gap - mean).abs() - gap_dev))?;
                STATE.set(state, st::GAP_MEAN, mean)?;
            }
            STATE.set(state, st::LAST_TS, &ts_obj)?;
        }
        Ok(Counted { gate: gate(&c, w1), c, landmark: if renormalised { ts } else { landmark } })
    }

    /// `BehaviourDetector._renormalise`: the counters rescaled to a landmark at `ts`.
    fn renormalise<'py>(
        &self,
        state: &Bound<'py, PyAny>,
        c: &mut [f64; SLOTS],
        landmark: f64,
        ts_obj: &Bound<'py, PyAny>,
        ts: f64,
    ) -> PyResult<()> {
        if landmark == f64::NEG_INFINITY {
            STATE.set(state, st::LANDMARK, ts_obj)?;
            return Ok(());
        }
        let d = ts - landmark;
        // Rounded to float32 here, as Python stores each product (and again, unchanged,
        // when the counted call's sums are written back).
        let scale = |x: &mut f64, by: f64| *x = f64::from((*x * by) as f32);
        let hour = (-d / 3600.0).exp();
        c[..N_COUNTERS].iter_mut().for_each(|x| scale(x, hour));
        let day = (-d / 86400.0).exp();
        c[K2..S0].iter_mut().for_each(|x| scale(x, day));
        c[T0..SLOTS].iter_mut().for_each(|x| scale(x, day));
        let short = (-d / 600.0).exp();
        c[S0..T0].iter_mut().for_each(|x| scale(x, short));
        let withheld = STATE.get(state, st::WITHHELD)?;
        if !withheld.is_none() {
            let withheld = Cells::<f32>::of(&withheld, "a behaviour state's withheld counts")?;
            let cells = withheld.exactly(N_COUNTERS, "a behaviour state's withheld counts of another size")?;
            for cell in cells {
                cell.set((f64::from(cell.get()) * day) as f32);
            }
        }
        STATE.set(state, st::LANDMARK, ts_obj)?;
        Ok(())
    }

    /// The template part of `_count`: a near-duplicate of a recent prompt counts, a new
    /// one takes the next of the six slots.
    fn count_template(
        &self,
        py: Python<'_>,
        state: &Bound<'_, PyAny>,
        c: &mut [f64; SLOTS],
        simhash: u64,
        w1: f64,
        w2: f64,
    ) -> PyResult<()> {
        let mut templates = STATE.get(state, st::TEMPLATES)?;
        if templates.is(self.no_templates.bind(py)) {
            templates = self.zero_templates.bind(py).call_method0(intern!(py, "__copy__"))?;
            STATE.set(state, st::TEMPLATES, &templates)?;
        }
        let templates = Cells::<u64>::of(&templates, "a behaviour state's templates")?;
        let slots = templates.cells();
        if slots.iter().any(|known| (simhash ^ known.get()).count_ones() <= 8) {
            c[12] += w1;
            c[26] += w2;
            return Ok(());
        }
        let slot: usize = STATE.get(state, st::TEMPLATE_NEXT)?.extract()?;
        slots
            .get(slot)
            .ok_or_else(|| PyValueError::new_err("a behaviour state's template slot out of range"))?
            .set(simhash);
        STATE.set(state, st::TEMPLATE_NEXT, (slot + 1) % TEMPLATE_SLOTS)?;
        Ok(())
    }
}

/// Where `process_many` appends what each call gave.
struct Out<'a, 'py> {
    suspicions: &'a Bound<'py, PyList>,
    scores: &'a Bound<'py, PyList>,
    alerts: &'a Bound<'py, PyList>,
    zero: Bound<'py, PyFloat>,
}

/// The engine's attributes a `process_many` run reads and moves: read at its start and
/// after each call that ran in Python, written back before one and at its end.
struct Run<'py> {
    /// `_watermark`, as its float object, and whether this run moved it.
    watermark: Bound<'py, PyAny>,
    watermark_f: f64,
    moved: bool,
    /// `cohorts._next_final`: +inf without cohort models.
    next_final: f64,
    /// Without cohort models, no epoch to sample in.
    cohorts: bool,
    /// `_epoch`, shared by the states sampled in it, and its event times [from, until).
    epoch: Bound<'py, PyAny>,
    epoch_from: f64,
    epoch_until: f64,
    /// The state and event time of the last call counted here, for `last_suspicion`.
    last: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
}

impl<'py> Run<'py> {
    fn read(py: Python<'py>, engine: &Bound<'py, PyAny>) -> PyResult<Self> {
        let watermark = engine.getattr(intern!(py, "_watermark"))?;
        let cohorts = engine.getattr(intern!(py, "cohorts"))?;
        let next_final = if cohorts.is_none() {
            f64::INFINITY
        } else {
            cohorts.getattr(intern!(py, "_next_final"))?.extract()?
        };
        Ok(Run {
            watermark_f: watermark.extract()?,
            watermark,
            moved: false,
            next_final,
            cohorts: !cohorts.is_none(),
            epoch: engine.getattr(intern!(py, "_epoch"))?,
            epoch_from: engine.getattr(intern!(py, "_epoch_from"))?.extract()?,
            epoch_until: engine.getattr(intern!(py, "_epoch_until"))?.extract()?,
            last: None,
        })
    }

    /// Leave the engine as `process` would have: its watermark, and the last call's
    /// state, time and score (0: no finding) if that call was counted here.
    fn write(&mut self, py: Python<'py>, engine: &Bound<'py, PyAny>, out: &Out<'_, 'py>) -> PyResult<()> {
        if self.moved {
            engine.setattr(intern!(py, "_watermark"), &self.watermark)?;
            self.moved = false;
        }
        if let Some((state, ts)) = self.last.take() {
            engine.setattr(intern!(py, "_last_state"), state)?;
            engine.setattr(intern!(py, "_last_ts"), ts)?;
            engine.setattr(intern!(py, "last_score"), &out.zero)?;
        }
        Ok(())
    }

    /// Whether `state` was sampled in the epoch of `ts` already, as the engine's
    /// `state.sampled_epoch is epoch or == epoch`; false outside the current epoch.
    fn sampled(&self, state: &Bound<'py, PyAny>, ts: f64) -> PyResult<bool> {
        if !self.cohorts {
            return Ok(true);
        }
        if !(self.epoch_from <= ts && ts < self.epoch_until) {
            return Ok(false);
        }
        let sampled = STATE.get(state, st::SAMPLED_EPOCH)?;
        Ok(sampled.is(&self.epoch) || sampled.eq(&self.epoch)?)
    }
}

impl BehaviourCore {
    /// One call of `process_many`; returns its event time.
    #[allow(clippy::too_many_arguments)]
    fn process_one<'py>(
        &self,
        py: Python<'py>,
        engine: &Bound<'py, PyAny>,
        accounts: &Bound<'py, PyDict>,
        run: &mut Run<'py>,
        call: &Bound<'py, PyAny>,
        known: Option<&Bound<'py, PySet>>,
        prepare: Option<&Bound<'py, PyAny>>,
        out: &Out<'_, 'py>,
    ) -> PyResult<f64> {
        let ts_obj = field(call, f::TS)?;
        let ts: f64 = ts_obj.extract()?;
        let key = PyTuple::new(py, [field(call, f::TENANT_ID)?, field(call, f::ACCOUNT_ID)?])?;
        if let (Some(known), Some(prepare)) = (known, prepare) {
            if !known.contains(&key)? {
                run.write(py, engine, out)?;
                prepare.call1((&key,))?;
                *run = Run::read(py, engine)?;
            }
        }
        if ts > run.watermark_f {
            run.watermark_f = ts;
            run.watermark = ts_obj.clone();
            run.moved = true;
        }
        let account = match accounts.get_item(&key)? {
            Some(account)
                if run.watermark_f < run.next_final
                    && ACCOUNT.get(&account, acct::EPISODE)?.is_none() =>
            {
                account
            }
            _ => {
                run.write(py, engine, out)?;
                let made = engine.call_method1(intern!(py, "process"), (call,))?;
                ran_in_python(py, engine, run, &made, out)?;
                return Ok(ts);
            }
        };
        let states = ACCOUNT.get(&account, acct::DETECTOR_STATES)?;
        let state = states.downcast::<PyTuple>()?.get_item(0)?;
        let counted = self.count_into(py, &state, call)?;
        let gate = counted.gate;
        if !gate && run.sampled(&state, ts)? {
            // The suspicion of the counters just written, without reading them again.
            let suspicion = suspicion_of(&state, &counted.c, counted.landmark, ts)?;
            out.suspicions.append(suspicion)?;
            out.scores.append(&out.zero)?;
            run.last = Some((state, ts_obj));
            return Ok(ts);
        }
        run.write(py, engine, out)?;
        let made = engine.call_method1(intern!(py, "_counted"), (call, key, account, gate))?;
        ran_in_python(py, engine, run, &made, out)?;
        Ok(ts)
    }
}

/// The appends of a call the engine's Python ran, `made` its alerts; the engine's
/// attributes read again.
fn ran_in_python<'py>(
    py: Python<'py>,
    engine: &Bound<'py, PyAny>,
    run: &mut Run<'py>,
    made: &Bound<'py, PyAny>,
    out: &Out<'_, 'py>,
) -> PyResult<()> {
    *run = Run::read(py, engine)?;
    let suspicion = engine.getattr(intern!(py, "last_suspicion"))?;
    out.suspicions.append(suspicion)?;
    out.scores.append(engine.getattr(intern!(py, "last_score"))?)?;
    for alert in made.try_iter()? {
        out.alerts.append(alert?)?;
    }
    Ok(())
}

/// Python's `max(a, b, c)` of floats.
fn py_max3(a: f64, b: f64, c: f64) -> f64 {
    py_max(py_max(a, b), c)
}

/// Python's `min(a, b)` of floats: the first unless the second is less.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// Indices of `BehaviourState.withheld` (the hour's counters' order).
const W_REQ: usize = 0;
const W_NO_PROMPT: usize = 1;
const W_COT: usize = 2;
const W_HARVEST: usize = 3;
const W_MULTI: usize = 7;
const W_PROBE: usize = 8;

/// Topics used in the day from which the spread can be broad: 2 ** 3.0.
const BROAD_MIN_TOPICS: f64 = 8.0;

/// An amplifier of `_judge`: name, amplification, value, baseline.
type Amplifier<'py> = (&'static str, f64, f64, Option<Bound<'py, PyAny>>);

/// `BehaviourDetector._judge`, step for step.
fn judge<'py>(
    py: Python<'py>,
    j: &Judging,
    state: &Bound<'py, PyAny>,
    ts: f64,
    created_at: Option<f64>,
) -> PyResult<PyObject> {
    let counts_obj = STATE.get(state, st::COUNTS)?;
    let c = {
        let counts = Cells::<f32>::of(&counts_obj, "a behaviour state's counts")?;
        read_counts(counts.cells().iter().map(std::cell::Cell::get))?
    };
    let landmark: f64 = STATE.get(state, st::LANDMARK)?.extract()?;
    let d = if landmark > f64::NEG_INFINITY { ts - landmark } else { 0.0 };
    let i0 = (-d / 600.0).exp();
    let i1 = (-d / 3600.0).exp();
    let i2 = (-d / 86400.0).exp();
    let requests = c[0] * i1;
    if requests <= 0.0 {
        return Ok(py.None());
    }
    let prompted = requests - c[1] * i1;
    let cot = c[2] * i1;
    let harvest = c[3] * i1;
    let multi = c[7] * i1;
    let probes = c[8] * i1;
    let single_share = c[4] * i1 / requests;
    let packed: i128 = STATE.get(state, st::TOPICS)?.extract()?;
    let coverage = topic_coverage(packed, ts)?;
    let coverage_f = f64::from(coverage);
    let template_share = c[12] * i1 / (prompted + 1.0);

    let (mh, mm, mp) = (&j.min_harvest, &j.min_multi, &j.min_probe);
    let purity = (harvest + 1.0) / (cot + 2.0);
    let harvest_quality = ramp(purity, 0.65, 0.9) * ramp(harvest / (prompted + 1.0), 0.1, 0.35);
    let harvest_odds = py_max3(c[28] * i0 / mh[0], harvest / mh[1], c[17] * i2 / mh[2]);
    let harvest_score = harvest_quality * harvest_odds / (1.0 + harvest_odds);

    let multi_share = multi / (requests + 1.0);
    let mut multi_quality = ramp(multi_share, 0.3, 0.7);
    let mut entropy: Option<f64> = None;
    if multi_quality > 0.0 {
        entropy = topic_entropy(&c, landmark, ts);
        multi_quality *= py_max3(
            ramp(coverage_f, 6.0, 10.0),
            ramp(template_share, 0.3, 0.6),
            breadth(entropy),
        ) * ramp(single_share, 0.6, 0.9);
    }
    let multi_odds = py_max3(c[29] * i0 / mm[0], multi / mm[1], c[21] * i2 / mm[2]);
    let multi_score = multi_quality * multi_odds / (1.0 + multi_odds);

    let probe_share = probes / (prompted + 1.0);
    let probe_odds = py_max3(c[30] * i0 / mp[0], probes / mp[1], c[22] * i2 / mp[2]);
    let probe_score = ramp(probe_share, 0.08, 0.3) * probe_odds / (1.0 + probe_odds);

    let mut base = 1.0 - (1.0 - harvest_score) * (1.0 - multi_score) * (1.0 - probe_score);
    if base <= 0.0 {
        return Ok(py.None());
    }
    base = py_min(base, 0.999_999);

    // The account's own history: the day horizon without the withheld calls.
    let mut own_requests = (c[K2] - c[K2 + 1]) * i2;
    let (mut own_cot, mut own_harvest, mut own_multi, mut own_probe) =
        (c[16] * i2, c[17] * i2, c[21] * i2, c[22] * i2);
    let withheld = STATE.get(state, st::WITHHELD)?;
    if !withheld.is_none() {
        let withheld = Cells::<f32>::of(&withheld, "a behaviour state's withheld counts")?;
        let cells = withheld.exactly(N_COUNTERS, "a behaviour state's withheld counts of another size")?;
        let w = |i: usize| f64::from(cells[i].get());
        own_requests -= (w(W_REQ) - w(W_NO_PROMPT)) * i2;
        own_cot -= w(W_COT) * i2;
        own_harvest -= w(W_HARVEST) * i2;
        own_multi -= w(W_MULTI) * i2;
        own_probe -= w(W_PROBE) * i2;
    }
    let own: [Option<f64>; 4] = if own_requests >= 30.0 {
        [
            Some(py_max(0.0, own_cot) / own_requests),
            Some(py_max(0.0, own_harvest) / own_requests),
            Some(py_max(0.0, own_multi) / own_requests),
            Some(py_max(0.0, own_probe) / own_requests),
        ]
    } else {
        [None; 4]
    };

    let patterns = PyTuple::new(py, [
        ("cot_request_rate", harvest_score, cot / py_max(prompted, 1e-9), own[0], purity, harvest,
         c[28] * i0, c[17] * i2).into_pyobject(py)?.into_any(),
        ("multi_sample_logprobs", multi_score, multi_share, own[2], (coverage, entropy), multi,
         c[29] * i0, c[21] * i2).into_pyobject(py)?.into_any(),
        ("jailbreak_probing", probe_score, probe_share, own[3], c[9] * i1 / requests, probes,
         c[30] * i0, c[22] * i2).into_pyobject(py)?.into_any(),
    ])?;
    let (top, now, was) = if harvest_score >= multi_score && harvest_score >= probe_score {
        (0, harvest / py_max(prompted, 1e-9), own[1])
    } else if multi_score >= probe_score {
        (1, multi_share, own[2])
    } else {
        (2, probe_share, own[3])
    };

    let none = || -> Option<Bound<'py, PyAny>> { None };
    let float = |x: f64| -> Option<Bound<'py, PyAny>> { Some(PyFloat::new(py, x).into_any()) };
    let mut amplifiers: Vec<Amplifier<'py>> = Vec::with_capacity(10);
    let throttled = c[10] * i1;
    let completed = requests - throttled - c[11] * i1;
    let a = 0.5 * ramp(template_share, 0.3, 0.7);
    if a > 0.0 {
        amplifiers.push(("prompt_templates", a, template_share, none()));
    }
    let max_tokens_share = if completed > 0.0 { c[6] * i1 / (completed + 1.0) } else { 0.0 };
    let a = 0.5 * ramp(max_tokens_share, 0.1, 0.3);
    if a > 0.0 {
        amplifiers.push(("max_tokens_hits", a, max_tokens_share, none()));
    }
    if let Some(created_at) = created_at {
        let age_days = py_max(0.0, (ts - created_at) / 86_400.0);
        let young = j.young_days;
        let a = ramp(young - age_days, 0.0, if young > 1.0 { young - 1.0 } else { young });
        if a > 0.0 {
            amplifiers.push(("account_age", a, age_days, Some(j.young.bind(py).clone())));
        }
    }
    let a = 0.3 * ramp(single_share, 0.7, 0.95);
    if a > 0.0 {
        amplifiers.push(("single_turn_share", a, single_share, none()));
    }
    let kilo_tokens = c[13] * i1;
    let a = 0.4 * ramp(kilo_tokens, 100.0, 400.0);
    if a > 0.0 {
        amplifiers.push(("output_volume", a, kilo_tokens * 1000.0, none()));
    }
    if let Some(was) = was {
        let a = 0.6 * ramp(now - was, 0.3, 0.6);
        if a > 0.0 {
            amplifiers.push(("behaviour_shift", a, now, float(was)));
        }
    }
    let throttled_share = throttled / requests;
    let a = 0.5 * ramp(throttled_share, 0.1, 0.4);
    if a > 0.0 {
        amplifiers.push(("throttling", a, throttled_share, none()));
    }
    let gap_mean_obj = STATE.get(state, st::GAP_MEAN)?;
    let gap_mean: f64 = gap_mean_obj.extract()?;
    if c[14] * i2 >= 20.0 && gap_mean > 0.0 {
        let gap_dev: f64 = STATE.get(state, st::GAP_DEV)?.extract()?;
        let cv = gap_dev / gap_mean;
        let a = 0.2 * ramp(0.3 - cv, 0.0, 0.2);
        if a > 0.0 {
            amplifiers.push(("arrival_regularity", a, cv, Some(gap_mean_obj)));
        }
    }
    if top != 1 {
        // One breadth signal: the hour's coverage, or the day's even spread where that
        // says more. Fewer topics used than 2**3 cannot be broad: no entropy for them.
        let mut wide: Amplifier<'py> = ("topic_coverage", 0.3 * ramp(coverage_f, 6.0, 10.0), coverage_f, none());
        let used = c[T0..SLOTS].iter().filter(|&&x| x != 0.0).count() as f64;
        if wide.1 < 0.3 && used >= BROAD_MIN_TOPICS {
            entropy = topic_entropy(&c, landmark, ts);
            if let Some(e) = entropy {
                if 0.3 * breadth(Some(e)) > wide.1 {
                    wide = ("topic_entropy", 0.3 * breadth(Some(e)), e, float(ENTROPY_BROAD_BITS.0));
                }
            }
        }
        if wide.1 > 0.0 {
            amplifiers.push(wide);
        }
    }
    let cohort: i128 = STATE.get(state, st::COHORT)?.extract()?;
    if cohort != 0 {
        let usable_from = cohort >> 10;
        // (Python compares the int and the float exactly; event times are far below 2**53.)
        let from = usable_from as f64;
        if from <= ts && ts < (usable_from + 3600) as f64 {
            let percentile = (cohort & 0x3FF) as f64 / 1000.0;
            let a = 0.5 * ramp(percentile, 0.9, 0.99);
            if a > 0.0 {
                amplifiers.push(("cohort_outlier", a, percentile, float(0.5)));
            }
        }
    }

    let mut amplification = 1.0;
    for amplifier in &amplifiers {
        amplification *= 1.0 + amplifier.1;
    }
    if amplification > j.max_amplification {
        amplification = j.max_amplification;
    }
    let odds = base / (1.0 - base) * amplification;
    let amplifiers = PyList::new(py, amplifiers)?;
    let evidence = (patterns, amplifiers, requests);
    let finding = j.finding.bind(py).call1((odds / (1.0 + odds), evidence, j.explain.bind(py)))?;
    Ok(finding.unbind())
}
