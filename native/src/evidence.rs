//! The link stage's evidence per link key (`models.linking.evidence.KeyEvidence`).
//!
//! The link agent counts every link observation into its key: about one observation per
//! two calls, a Python object graph per key and per member, 2 µs each in Python
//! (bench/PROFILE.md, "Sixteenth pass"). Here it is the same arithmetic in the same
//! order: members oldest first by their last observation, the counts, the popularity
//! sketches, the weight rounded as Python's `round(weight, 4)` rounds, and the edges in
//! the order Python made them. The state is memory only (the evidence is rebuilt from
//! observations after a restart, as before). The frozen reference is
//! `tests/models/linking/evidence_reference.py`; `test_evidence_differential.py` holds
//! the two equal.

use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::calls::Cursor;
use crate::observations::{FIELDS, MAP_MARKER};

/// A link key `(kind, key)`, owned.
#[derive(PartialEq, Eq)]
struct Ident {
    kind: Box<str>,
    key: Box<str>,
}

/// A link key borrowed from an observation: looked up without copying its strings.
struct IdentRef<'a> {
    kind: &'a str,
    key: &'a str,
}

fn hash_ident<H: Hasher>(kind: &str, key: &str, state: &mut H) {
    kind.hash(state);
    key.hash(state);
}

impl Hash for Ident {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ident(&self.kind, &self.key, state);
    }
}

impl Hash for IdentRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_ident(self.kind, self.key, state);
    }
}

impl Equivalent<Ident> for IdentRef<'_> {
    fn equivalent(&self, other: &Ident) -> bool {
        *self.kind == *other.kind && *self.key == *other.key
    }
}

impl IdentRef<'_> {
    fn owned(&self) -> Ident {
        Ident { kind: self.kind.into(), key: self.key.into() }
    }
}

struct Member {
    tenant_id: Box<str>,
    suspicion: f64,
    first_seen: f64,
    last_ts: f64,
    edge_ts: f64, // -inf: no edge emitted for this member yet
    edge_suspicion: f64,
}

impl Member {
    fn new(tenant_id: &str, suspicion: f64, first_seen: f64, ts: f64) -> Member {
        Member {
            tenant_id: tenant_id.into(),
            suspicion,
            first_seen,
            last_ts: ts,
            edge_ts: f64::NEG_INFINITY,
            edge_suspicion: suspicion,
        }
    }
}

const NIL: usize = usize::MAX;

struct Node {
    account_id: Box<str>,
    member: Member,
    prev: usize,
    next: usize,
}

/// A key's members by account, oldest first by last observation: a list linked through
/// a slab, so that moving a member to the end and dropping the oldest cost O(1) (Python's
/// dict pop and re-insert; an ordered map that shifts its entries made a key of 256
/// members cost 1.2 µs per observation).
struct Members {
    index: HashMap<Box<str>, usize>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
}

impl Members {
    fn new() -> Members {
        Members {
            index: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn unlink(&mut self, id: usize) {
        let (prev, next) = (self.nodes[id].prev, self.nodes[id].next);
        if prev == NIL { self.head = next } else { self.nodes[prev].next = next }
        if next == NIL { self.tail = prev } else { self.nodes[next].prev = prev }
        self.free.push(id);
    }

    /// Node `id` out of the list (its slot free again), its account and member taken.
    fn take(&mut self, id: usize) -> (Box<str>, Member) {
        self.unlink(id);
        let node = &mut self.nodes[id];
        let member = std::mem::replace(&mut node.member, Member::new("", 0.0, 0.0, 0.0));
        (std::mem::take(&mut node.account_id), member)
    }

    /// The member of `account_id`, taken out.
    fn remove(&mut self, account_id: &str) -> Option<Member> {
        let id = self.index.remove(account_id)?;
        Some(self.take(id).1)
    }

    /// The oldest member, taken out.
    fn pop_front(&mut self) -> Option<(Box<str>, Member)> {
        if self.head == NIL {
            return None;
        }
        let (account_id, member) = self.take(self.head);
        self.index.remove(&account_id);
        Some((account_id, member))
    }

    fn front(&self) -> Option<&Member> {
        (self.head != NIL).then(|| &self.nodes[self.head].member)
    }

    /// Add `account_id` (not a member) as the most recently seen; returns its id.
    fn push_back(&mut self, account_id: &str, member: Member) -> usize {
        let node = Node { account_id: account_id.into(), member, prev: self.tail, next: NIL };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id] = node;
                id
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        if self.tail == NIL { self.head = id } else { self.nodes[self.tail].next = id }
        self.tail = id;
        self.index.insert(account_id.into(), id);
        id
    }

    /// Member ids, oldest first.
    fn ids(&self) -> Vec<usize> {
        self.ids_iter().collect()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Member)> {
        self.ids_iter().map(|id| (&*self.nodes[id].account_id, &self.nodes[id].member))
    }

    fn ids_iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors((self.head != NIL).then_some(self.head), |&id| {
            let next = self.nodes[id].next;
            (next != NIL).then_some(next)
        })
    }
}

/// One link key: its members oldest first (by last observation), counts, sketches.
struct KeyState {
    members: Members,
    suspicious: i64,
    others: i64, // members below suspicious_from
    calm: i64,   // of them, members below calm_below
    tenants: HashMap<Box<str>, i64>, // tenant -> its suspicious members
    sketch: Option<Vec<u32>>, // calm accounts, once members overflowed
    previous_sketch: Option<Vec<u32>>,
    sketch_window: i64,
    last_ts: f64,
    seq: i64,
    sent_weight: f64,
    linkable: bool,
}

impl KeyState {
    fn new() -> KeyState {
        KeyState {
            members: Members::new(),
            suspicious: 0,
            others: 0,
            calm: 0,
            tenants: HashMap::default(),
            sketch: None,
            previous_sketch: None,
            sketch_window: 0,
            last_ts: f64::NEG_INFINITY,
            seq: 0,
            sent_weight: 0.0,
            linkable: false,
        }
    }
}

/// `zlib.crc32(account_id.encode()) or 1`.
fn account_hash(account_id: &str) -> u32 {
    match crc32fast::hash(account_id.as_bytes()) {
        0 => 1,
        h => h,
    }
}

fn kmv_add(sketch: &mut Vec<u32>, value: u32, size: usize) {
    let at = sketch.partition_point(|&v| v < value); // bisect_left
    if at < sketch.len() && sketch[at] == value {
        return;
    }
    if sketch.len() >= size {
        if at >= size {
            return;
        }
        sketch.pop();
    }
    sketch.insert(at, value);
}

fn kmv_estimate(sketch: Option<&Vec<u32>>, size: usize) -> f64 {
    match sketch {
        None => 0.0,
        Some(s) if s.len() < size => s.len() as f64,
        Some(s) => (size - 1) as f64 / (f64::from(*s.last().expect("full sketch")) / 4294967296.0),
    }
}

/// Python's `int(x // y)` for floats (`float_floor_div`), for the sketch windows.
fn floor_div(x: f64, y: f64) -> i64 {
    let m = x % y; // C fmod
    let mut div = (x - m) / y;
    if m != 0.0 && ((y < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    let floordiv = if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0
    };
    floordiv as i64
}

/// Python's `round(x, 4)`: the decimal correctly rounded (ties to even on the exact
/// binary value), read back as the nearest double. Away from a tie, `x * 1e4` rounds to
/// the same integer n whatever its last bit, and n / 1e4 is the double nearest to
/// n / 10^4; near one, the decimal is formatted exactly (Rust's formatting rounds as
/// Python's `round` does).
fn round4(x: f64) -> f64 {
    let scaled = x * 1e4;
    if scaled.abs() < 1e15 && ((scaled - scaled.floor()) - 0.5).abs() > 1e-6 {
        return scaled.round() / 1e4;
    }
    format!("{x:.4}").parse().expect("a formatted float parses")
}

/// An observation's fields, borrowed from the Python object.
struct Obs<'a> {
    ident: IdentRef<'a>,
    tenant_id: &'a str,
    account_id: &'a str,
    ts: f64,
    suspicion: f64,
    first_seen: f64,
}

/// The observations of a record's body as the link observer writes them (see
/// `add_record`), borrowed from it; None for a body in any other form.
fn read_record(body: &[u8]) -> Option<Vec<Obs<'_>>> {
    let mut c = Cursor::new(body);
    let n = c.array_len()?;
    let name = |c: &mut Cursor<'_>, expected: &str| -> Option<()> {
        let m = c.byte()?;
        (c.str_bytes(m)? == expected.as_bytes()).then_some(())
    };
    let mut out = Vec::with_capacity(n.min(body.len() / 64));
    for _ in 0..n {
        if c.byte()? != MAP_MARKER {
            return None; // not a map of the seven fields
        }
        let mut text = [""; 4];
        for (slot, field) in text.iter_mut().zip(&FIELDS[..4]) {
            name(&mut c, field)?;
            let m = c.byte()?;
            *slot = std::str::from_utf8(c.str_bytes(m)?).ok()?;
        }
        let mut numbers = [0.0; 3];
        for (slot, field) in numbers.iter_mut().zip(&FIELDS[4..]) {
            name(&mut c, field)?;
            if c.byte()? != 0xcb {
                return None; // not a float64
            }
            *slot = f64::from_be_bytes(c.be()?);
        }
        let [kind, key, tenant_id, account_id] = text;
        let [ts, suspicion, first_seen] = numbers;
        out.push(Obs { ident: IdentRef { kind, key }, tenant_id, account_id, ts, suspicion, first_seen });
    }
    c.at_end().then_some(out)
}

/// `KeyEvidence`'s parameters (checked by the Python class).
#[derive(Clone, Copy)]
struct Params {
    max_members: usize,
    member_ttl_s: f64,
    suspicious_from: f64,
    calm_below: f64,
    calm_tolerance: f64,
    emit_min: f64,
    weight_step: f64,
    suspicion_step: f64,
    edge_refresh_s: f64,
    sketch_size: usize,
}

/// `KeyEvidence`'s state and rules.
#[pyclass(module = "distillwatch_native")]
pub struct EvidenceCore {
    edge_type: Py<PyAny>,
    kind_weights: std::collections::HashMap<String, f64>,
    purity_exponents: std::collections::HashMap<String, f64>,
    p: Params,
    keys: HashMap<Ident, KeyState>,
    solo: HashMap<Ident, (Box<str>, Member)>, // keys of one member
}

#[pymethods]
impl EvidenceCore {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        edge_type: Py<PyAny>,
        kind_weights: std::collections::HashMap<String, f64>,
        purity_exponents: std::collections::HashMap<String, f64>,
        max_members: usize,
        member_ttl_s: f64,
        suspicious_from: f64,
        calm_below: f64,
        calm_tolerance: f64,
        emit_min: f64,
        weight_step: f64,
        suspicion_step: f64,
        edge_refresh_s: f64,
        sketch_size: usize,
    ) -> EvidenceCore {
        EvidenceCore {
            edge_type,
            kind_weights,
            purity_exponents,
            p: Params {
                max_members,
                member_ttl_s,
                suspicious_from,
                calm_below,
                calm_tolerance,
                emit_min,
                weight_step,
                suspicion_step,
                edge_refresh_s,
                sketch_size,
            },
            keys: HashMap::default(),
            solo: HashMap::default(),
        }
    }

    /// Link keys with state.
    fn __len__(&self) -> usize {
        self.keys.len() + self.solo.len()
    }

    /// Members held across all keys.
    #[getter]
    fn members_tracked(&self) -> usize {
        self.keys.values().map(|s| s.members.len()).sum::<usize>() + self.solo.len()
    }

    /// The current weight of a key (0 for a key without state or with one member).
    fn weight(&self, kind: &str, key: &str) -> f64 {
        match self.keys.get(&IdentRef { kind, key }) {
            None => 0.0,
            Some(state) => self.weight_of(kind, state),
        }
    }

    /// Drop keys that would start afresh at their next observation after `watermark`.
    fn expire(&mut self, watermark: f64) -> usize {
        let ttl = self.p.member_ttl_s;
        let before = self.keys.len() + self.solo.len();
        self.keys.retain(|_, state| {
            let idle = if state.sketch.is_none() { ttl } else { 2.0 * ttl };
            // kept unless `last_ts < watermark - idle`, as Python compares
            state.last_ts.partial_cmp(&(watermark - idle)) != Some(std::cmp::Ordering::Less)
        });
        let cutoff_solo = watermark - ttl;
        self.solo.retain(|_, (_, member)| member.last_ts >= cutoff_solo);
        before - self.keys.len() - self.solo.len()
    }

    /// Count one observation into its key and return the edges it causes.
    fn add<'py>(&mut self, obs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let edges = PyList::empty(obs.py());
        self.add_one(obs, &edges)?;
        Ok(edges)
    }

    /// `add_many` of the observations of a link-observations record, `value[start..]`,
    /// read from its bytes: when they are as the link observer writes them (a msgpack
    /// array of maps of the seven fields in their order, text as str, numbers as
    /// float64: `observations::ObservationRecords`, and msgspec for a list of
    /// `LinkObservation`s). Returns None, having counted nothing, for a record in any
    /// other form: the caller decodes it with msgspec, so that what it accepts and
    /// refuses stays msgspec's.
    fn add_record(
        &mut self, value: &[u8], start: usize, edges: &Bound<'_, PyList>,
    ) -> PyResult<Option<f64>> {
        let Some(observations) = value.get(start..).and_then(read_record) else {
            return Ok(None);
        };
        let mut latest = f64::NEG_INFINITY;
        for obs in &observations {
            self.count_in(obs, edges)?;
            if obs.ts > latest {
                latest = obs.ts;
            }
        }
        Ok(Some(latest))
    }

    /// Count `observations` in order, appending the edges they cause to `edges`; returns
    /// the latest event time among them (-inf for none). On an observation it cannot
    /// read it raises, with those before it counted and their edges appended.
    fn add_many(
        &mut self, observations: &Bound<'_, PyList>, edges: &Bound<'_, PyList>,
    ) -> PyResult<f64> {
        let mut latest = f64::NEG_INFINITY;
        for obs in observations.iter() {
            let ts = self.add_one(&obs, edges)?;
            if ts > latest {
                latest = ts;
            }
        }
        Ok(latest)
    }
}

impl EvidenceCore {
    fn add_one(&mut self, obs: &Bound<'_, PyAny>, edges: &Bound<'_, PyList>) -> PyResult<f64> {
        let py = obs.py();
        let kind = obs.getattr(intern!(py, "kind"))?;
        let key = obs.getattr(intern!(py, "key"))?;
        let tenant_id = obs.getattr(intern!(py, "tenant_id"))?;
        let account_id = obs.getattr(intern!(py, "account_id"))?;
        let o = Obs {
            ident: IdentRef {
                kind: kind.downcast::<PyString>()?.to_str()?,
                key: key.downcast::<PyString>()?.to_str()?,
            },
            tenant_id: tenant_id.downcast::<PyString>()?.to_str()?,
            account_id: account_id.downcast::<PyString>()?.to_str()?,
            ts: obs.getattr(intern!(py, "ts"))?.extract()?,
            suspicion: obs.getattr(intern!(py, "suspicion"))?.extract()?,
            first_seen: obs.getattr(intern!(py, "first_seen"))?.extract()?,
        };
        self.count_in(&o, edges)?;
        Ok(o.ts)
    }

    /// `KeyEvidence.add` of the reference, step for step.
    fn count_in(&mut self, obs: &Obs<'_>, edges: &Bound<'_, PyList>) -> PyResult<()> {
        let p = self.p;
        let ts = obs.ts;
        if self.keys.contains_key(&obs.ident) {
            let state = self.keys.get_mut(&obs.ident).expect("a key just found");
            evict_stale(&p, state, ts);
        } else {
            let solo = self.solo.get_mut(&obs.ident);
            let lone = match &solo {
                None => true,
                Some((account, member)) => {
                    **account == *obs.account_id || member.last_ts < ts - p.member_ttl_s
                }
            };
            if lone {
                // one member links nothing: most keys (one-off prompts) stay this compact
                match solo {
                    Some((account, member)) if **account == *obs.account_id => {
                        member.suspicion = obs.suspicion;
                        member.last_ts = py_max(ts, member.last_ts);
                    }
                    _ => {
                        let member = Member::new(obs.tenant_id, obs.suspicion, obs.first_seen, ts);
                        self.solo.insert(obs.ident.owned(), (obs.account_id.into(), member));
                    }
                }
                return Ok(());
            }
            let (solo_id, solo_member) =
                self.solo.remove(&obs.ident).expect("the solo member just found");
            let mut state = KeyState::new();
            state.last_ts = solo_member.last_ts;
            count(&p, &mut state, &solo_member);
            state.members.push_back(&solo_id, solo_member);
            self.keys.insert(obs.ident.owned(), state);
        }
        let state = self.keys.get_mut(&obs.ident).expect("the key's state");
        if ts > state.last_ts {
            state.last_ts = ts;
        }
        let member = match state.members.remove(obs.account_id) {
            None => {
                if state.members.len() >= p.max_members {
                    evict_oldest(&p, state);
                }
                Member::new(obs.tenant_id, obs.suspicion, obs.first_seen, ts)
            }
            Some(mut member) => {
                uncount(&p, state, &member);
                member.suspicion = obs.suspicion;
                if ts > member.last_ts {
                    member.last_ts = ts;
                }
                member
            }
        };
        count(&p, state, &member);
        if let Some(sketch) = state.sketch.as_mut() {
            if member.suspicion < p.calm_below {
                kmv_add(sketch, account_hash(obs.account_id), p.sketch_size);
            }
        }
        let last = state.members.push_back(obs.account_id, member); // most recently seen last
        let kind = obs.ident.kind;
        let weight = weight_of(&self.kind_weights, &self.purity_exponents, &p, kind, state);
        let floor = if state.linkable { p.emit_min / 2.0 } else { p.emit_min };
        let linkable = state.members.len() >= 2 && weight >= floor;
        let edge = Edge { edge_type: &self.edge_type, kind, key: obs.ident.key, weight, ts };
        if linkable {
            if !state.linkable {
                // newly qualifying: every member gets its edge
                for id in state.members.ids() {
                    edge.emit(state, id, edges)?;
                }
            } else {
                let member = &state.members.nodes[last].member;
                if member.edge_ts == f64::NEG_INFINITY
                    || (member.suspicion - member.edge_suspicion).abs() >= p.suspicion_step
                    || ts - member.edge_ts >= p.edge_refresh_s
                    || (weight - state.sent_weight).abs() >= p.weight_step
                {
                    edge.emit(state, last, edges)?;
                }
            }
        } else if state.linkable {
            // stopped qualifying: say so once, re-send all when it's back
            edge.emit(state, last, edges)?;
            for id in state.members.ids() {
                state.members.nodes[id].member.edge_ts = f64::NEG_INFINITY;
            }
        }
        state.linkable = linkable;
        Ok(())
    }

    fn weight_of(&self, kind: &str, state: &KeyState) -> f64 {
        weight_of(&self.kind_weights, &self.purity_exponents, &self.p, kind, state)
    }
}

fn count(p: &Params, state: &mut KeyState, member: &Member) {
    if member.suspicion >= p.suspicious_from {
        state.suspicious += 1;
        *state.tenants.entry(member.tenant_id.clone()).or_insert(0) += 1;
    } else {
        state.others += 1;
        if member.suspicion < p.calm_below {
            state.calm += 1;
        }
    }
}

fn uncount(p: &Params, state: &mut KeyState, member: &Member) {
    if member.suspicion >= p.suspicious_from {
        state.suspicious -= 1;
        let tenant: &str = &member.tenant_id;
        let left = state.tenants.get_mut(tenant).expect("a counted tenant");
        *left -= 1;
        if *left == 0 {
            state.tenants.remove(tenant);
        }
    } else {
        state.others -= 1;
        if member.suspicion < p.calm_below {
            state.calm -= 1;
        }
    }
}

fn evict_stale(p: &Params, state: &mut KeyState, ts: f64) {
    let cutoff = ts - p.member_ttl_s;
    while let Some(oldest) = state.members.front() {
        if oldest.last_ts >= cutoff {
            break;
        }
        let (_, oldest) = state.members.pop_front().expect("an oldest member");
        uncount(p, state, &oldest);
    }
    let window = floor_div(ts, p.member_ttl_s);
    if state.sketch.is_some() && window != state.sketch_window {
        let moved = window - state.sketch_window;
        let sketch = state.sketch.take();
        state.previous_sketch = if moved == 1 { sketch } else { None };
        state.sketch = Some(Vec::new());
        state.sketch_window = window;
    }
    let empty = |s: &Option<Vec<u32>>| s.as_ref().is_none_or(|v| v.is_empty());
    if state.members.is_empty() && empty(&state.sketch) && empty(&state.previous_sketch) {
        // nothing left that a fresh key would not also lack: start afresh
        state.sketch = None;
        state.previous_sketch = None;
        state.seq = 0;
        state.sent_weight = 0.0;
        state.linkable = false;
    }
}

fn evict_oldest(p: &Params, state: &mut KeyState) {
    let (oldest_id, oldest) = state.members.pop_front().expect("an oldest member");
    uncount(p, state, &oldest);
    if state.sketch.is_none() {
        // from now on calm popularity outgrows the member map: count it in a sketch
        let mut sketch = Vec::new();
        state.previous_sketch = None;
        state.sketch_window = floor_div(state.last_ts, p.member_ttl_s);
        for (account_id, member) in state.members.iter() {
            if member.suspicion < p.calm_below {
                kmv_add(&mut sketch, account_hash(account_id), p.sketch_size);
            }
        }
        state.sketch = Some(sketch);
    }
    if oldest.suspicion < p.calm_below {
        let sketch = state.sketch.as_mut().expect("the sketch made above");
        kmv_add(sketch, account_hash(&oldest_id), p.sketch_size);
    }
}

/// What an edge of one observation carries besides its member.
struct Edge<'a> {
    edge_type: &'a Py<PyAny>,
    kind: &'a str,
    key: &'a str,
    weight: f64,
    ts: f64,
}

impl Edge<'_> {
    /// `_edge`: the edge of the member `id`, with the key's bookkeeping.
    fn emit(&self, state: &mut KeyState, id: usize, edges: &Bound<'_, PyList>) -> PyResult<()> {
        let py = edges.py();
        state.seq += 1;
        state.sent_weight = self.weight;
        let members = state.members.len();
        let Node { account_id, member, .. } = &mut state.members.nodes[id];
        member.edge_ts = self.ts;
        member.edge_suspicion = member.suspicion;
        let edge = self.edge_type.bind(py).call1((
            self.kind,
            self.key,
            &*member.tenant_id,
            &**account_id,
            self.weight,
            member.suspicion,
            self.ts,
            state.seq,
            members,
            member.first_seen,
        ))?;
        edges.append(edge)
    }
}

fn weight_of(
    kind_weights: &std::collections::HashMap<String, f64>,
    purity_exponents: &std::collections::HashMap<String, f64>,
    p: &Params,
    kind: &str,
    state: &KeyState,
) -> f64 {
    let tenants = state.tenants.len();
    if tenants == 0 {
        return 0.0;
    }
    let suspicious = state.suspicious as f64;
    let mut others = state.others as f64;
    let mut calm = state.calm as f64;
    if state.sketch.is_some() {
        calm = py_max(
            py_max(calm, kmv_estimate(state.sketch.as_ref(), p.sketch_size)),
            kmv_estimate(state.previous_sketch.as_ref(), p.sketch_size),
        );
        others = py_max(others, calm);
    }
    let support = 1.0 - 0.5f64.powf((tenants - 1) as f64);
    let exponent = purity_exponents.get(kind).copied().unwrap_or(1.0);
    let purity = (suspicious / (suspicious + others)).powf(exponent);
    let rarity = 1.0 / (1.0 + (calm / p.calm_tolerance).powf(2.0));
    let weight = kind_weights.get(kind).copied().unwrap_or(0.0) * support * purity * rarity;
    round4(weight)
}

/// Python's `max(a, b)`: `a` unless `b` is greater.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}
