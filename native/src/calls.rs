//! The calls of a by-account record, read into `models.records.ApiCall`s whose strings
//! are shared.
//!
//! msgspec's decoder (`streams.internal._decode_calls`) makes every string of every call
//! anew: ten per call besides its event id, most of them equal to one an earlier call
//! brought (its account, tenant, model, user agent...). The engine and the link stage key
//! their dicts by these strings: a string that is the dict's own key object is found by
//! pointer, with its hash already computed, and freeing a drain's calls frees no strings.
//! `CallDecoder` reads the same msgpack (an array of `ApiCall` arrays, as msgspec and
//! `encode_event` in lib.rs write it) and takes every string but the event id from a
//! bounded cache.
//!
//! It builds each call by calling the call type with its fields as positional arguments.
//! msgspec's `__init__` checks no types, so the reader checks each value's msgpack type
//! as msgspec's strict decoder does: a str (or nil where the field is optional) for a
//! string, an int for an int (not a float, not a bool), a float or an int for a float
//! (the int made a float), a bool for a bool. For anything else (another type, invalid
//! UTF-8, an array of more than 28 or fewer than the required 8 elements, bytes missing
//! or left over) `decode` gives None, and the caller decodes the record with msgspec, so
//! results and errors on such records are msgspec's. A shorter array whose missing
//! fields have defaults is read as msgspec reads it: the type's defaults fill them.
//!
//! The cache is direct-mapped: a fixed number of slots, each holding one string, at the
//! slot a hash of the field and the value's bytes picks; a value new to its slot replaces
//! what was there (no map grows with the accounts). Values longer than `CACHED_MAX_BYTES`
//! are never kept, so the memory is bounded by the slot count whatever the number of
//! accounts: with 65,536 slots, 1 MiB of slots and 65,536 strings, about 4 MiB of short
//! ids (measured) and at worst about 22 MiB (128-byte values outside ASCII, each held with
//! a copy of its UTF-8).

use std::ffi::CString;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyList, PyString, PyType};

use crate::fields::register_call_type;

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
}

struct Field {
    name: &'static str,
    kind: Kind,
    optional: bool,
    /// Equal values share one string, from the cache.
    shared: bool,
}

impl Field {
    /// The annotation `models/records.py` gives the field.
    fn annotation(&self) -> String {
        let kind = match self.kind {
            Kind::Str => "str",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Bool => "bool",
        };
        if self.optional {
            format!("{kind} | None")
        } else {
            kind.to_owned()
        }
    }
}

const fn declared(name: &'static str, kind: Kind, optional: bool) -> Field {
    Field { name, kind, optional, shared: matches!(kind, Kind::Str) }
}

/// `models.records.ApiCall`'s fields, in order. Every string is shared but the event id:
/// it is unique to its call.
const FIELDS: [Field; 28] = [
    Field { name: "event_id", kind: Kind::Str, optional: false, shared: false },
    declared("ts", Kind::Float, false),
    declared("tenant_id", Kind::Str, false),
    declared("account_id", Kind::Str, false),
    declared("model", Kind::Str, false),
    declared("status", Kind::Int, false),
    declared("input_tokens", Kind::Int, false),
    declared("output_tokens", Kind::Int, false),
    declared("endpoint", Kind::Str, true),
    declared("max_tokens", Kind::Int, true),
    declared("n", Kind::Int, false),
    declared("logprobs", Kind::Bool, false),
    declared("tool_count", Kind::Int, false),
    declared("turn", Kind::Int, false),
    declared("stop_reason", Kind::Str, true),
    declared("has_prompt", Kind::Bool, false),
    declared("simhash", Kind::Int, true),
    declared("topic", Kind::Str, true),
    declared("cot_request", Kind::Bool, false),
    declared("jailbreak_score", Kind::Float, true),
    declared("sysprompt_probe", Kind::Bool, false),
    declared("has_client", Kind::Bool, false),
    declared("ip", Kind::Str, true),
    declared("asn", Kind::Int, true),
    declared("user_agent", Kind::Str, true),
    declared("tls_fingerprint", Kind::Str, true),
    declared("created_at", Kind::Float, true),
    declared("payment_fingerprint", Kind::Str, true),
];

/// How many fields an `ApiCall` array holds (the edge writes them all, `encode_event`).
pub(crate) const FIELD_COUNT: usize = FIELDS.len();

/// The fewest bytes a call takes: an array header and its eight required fields.
const MIN_CALL_BYTES: usize = 9;

/// Values longer than this many UTF-8 bytes are made anew each time, so that a full
/// cache holds at most this much text per slot (a user agent is about 110 bytes).
const CACHED_MAX_BYTES: usize = 128;

/// How many leading fields `ty` requires (the rest have defaults), once `ty` is checked to
/// be the struct `FIELDS` describes: those fields in that order, of those types (its type
/// hints, its bases' included), read from untagged arrays. A TypeError names what differs.
fn required_fields(ty: &Bound<'_, PyType>) -> PyResult<usize> {
    let differs = |what: String| {
        let name = ty.name().map_or_else(|_| "the call type".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("CallDecoder cannot build {name}: {what}"))
    };
    let names: Vec<String> = ty.getattr("__struct_fields__")?.extract()?;
    let expected: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
    if names != expected {
        return Err(differs(format!("its fields are {names:?}, the decoder reads {expected:?}")));
    }
    let py = ty.py();
    let hints = py.import("typing")?.getattr("get_type_hints")?.call1((ty,))?;
    for f in &FIELDS {
        let hint = hints.get_item(f.name)?;
        let annotation = CString::new(f.annotation()).expect("no NUL in an annotation");
        if !hint.eq(py.eval(&annotation, None, None)?)? {
            return Err(differs(format!(
                "{} is {}, the decoder reads {}",
                f.name,
                hint.repr()?,
                f.annotation()
            )));
        }
    }
    let config = ty.getattr("__struct_config__")?;
    if !config.getattr("array_like")?.is_truthy()? || !config.getattr("tag")?.is_none() {
        return Err(differs("it is not an untagged array_like struct".to_owned()));
    }
    Ok(FIELDS.len() - ty.getattr("__struct_defaults__")?.len()?)
}

// Reading msgpack -----------------------------------------------------------------------

const NIL: u8 = 0xc0;

enum Int {
    Signed(i64),
    Unsigned(u64),
}

pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Cursor { b, at: 0 }
    }

    /// Whether every byte has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.at == self.b.len()
    }

    pub(crate) fn byte(&mut self) -> Option<u8> {
        let c = *self.b.get(self.at)?;
        self.at += 1;
        Some(c)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.b.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    pub(crate) fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn array_len(&mut self) -> Option<usize> {
        Some(match self.byte()? {
            m @ 0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => usize::from(u16::from_be_bytes(self.be()?)),
            0xdd => u32::from_be_bytes(self.be()?) as usize,
            _ => return None,
        })
    }

    /// The bytes of a str whose marker is `m`.
    pub(crate) fn str_bytes(&mut self, m: u8) -> Option<&'a [u8]> {
        let n = match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => usize::from(self.byte()?),
            0xda => usize::from(u16::from_be_bytes(self.be()?)),
            0xdb => u32::from_be_bytes(self.be()?) as usize,
            _ => return None,
        };
        self.take(n)
    }

    /// An int whose marker is `m`: any width, signed or not, as msgpack has them.
    fn int(&mut self, m: u8) -> Option<Int> {
        Some(match m {
            0x00..=0x7f => Int::Signed(i64::from(m)),
            0xe0..=0xff => Int::Signed(i64::from(m as i8)),
            0xcc => Int::Signed(i64::from(self.byte()?)),
            0xcd => Int::Signed(i64::from(u16::from_be_bytes(self.be()?))),
            0xce => Int::Signed(i64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Int::Unsigned(u64::from_be_bytes(self.be()?)),
            0xd0 => Int::Signed(i64::from(i8::from_be_bytes(self.be()?))),
            0xd1 => Int::Signed(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Int::Signed(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Int::Signed(i64::from_be_bytes(self.be()?)),
            _ => return None,
        })
    }

    /// A float whose marker is `m`: float32, float64, or an int made a float (as msgspec
    /// does for a `float` field).
    fn float(&mut self, m: u8) -> Option<f64> {
        Some(match m {
            0xca => f64::from(f32::from_be_bytes(self.be()?)),
            0xcb => f64::from_be_bytes(self.be()?),
            _ => match self.int(m)? {
                Int::Signed(v) => v as f64,
                Int::Unsigned(v) => v as f64,
            },
        })
    }
}

fn boolean(m: u8) -> Option<bool> {
    match m {
        0xc2 => Some(false),
        0xc3 => Some(true),
        _ => None,
    }
}

/// A new string of `bytes`; None if they are not UTF-8 (msgspec refuses them too).
fn new_string<'py>(py: Python<'py>, bytes: &[u8]) -> Option<Bound<'py, PyString>> {
    std::str::from_utf8(bytes).ok().map(|text| PyString::new(py, text))
}

// The cache -----------------------------------------------------------------------------

/// One cached string and the hash of its field and bytes. Its bytes are compared as the
/// string's own UTF-8 (`holds`: the string's data when it is ASCII, a copy the string
/// keeps otherwise), so the slot holds no copy of them.
#[derive(Default)]
struct Slot {
    hash: u64,
    text: Option<Py<PyString>>,
}

/// Which slot a value of field `index` goes to (and a quick check before comparing bytes).
fn slot_hash(index: usize, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (index as u64).wrapping_mul(K) ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        h = (h ^ word).wrapping_mul(K).rotate_left(31);
    }
    h = (h ^ tail_word(bytes)).wrapping_mul(K);
    // A product's low bits depend on its operand's low bits only, and the slot is picked
    // by the low bits: MurmurHash3's finaliser mixes every bit into them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The bytes after `bytes`' last whole 8 as a little-endian word, zero above them. Read
/// as the last 8 bytes shifted when there are 8, not copied into a zeroed word: the copy's
/// narrow stores and the wide load after them could not be forwarded, a stall that was a
/// fifth of `decode`'s own time (bench/PROFILE.md, "Twenty-fifth pass").
fn tail_word(bytes: &[u8]) -> u64 {
    let rest = bytes.len() % 8;
    if rest == 0 {
        return 0;
    }
    if let Some(last) = bytes.len().checked_sub(8).and_then(|at| bytes.get(at..)) {
        let word = u64::from_le_bytes(last.try_into().expect("8 bytes"));
        return word >> (8 * (8 - rest));
    }
    bytes.iter().rev().fold(0, |word, &b| (word << 8) | u64::from(b))
}

/// Whether `text` holds exactly `bytes`: a compact ASCII string's characters are its
/// UTF-8, read in place; any other string through its UTF-8 (`PyUnicode_AsUTF8AndSize`).
fn holds(text: &Bound<'_, PyString>, bytes: &[u8]) -> bool {
    let op = text.as_ptr();
    // SAFETY: `op` is a live str (the cache holds a reference); a compact ASCII str keeps
    // its length characters of one byte each at `PyUnicode_DATA`, which it owns.
    unsafe {
        if ffi::PyUnicode_IS_COMPACT_ASCII(op) != 0 {
            let len = ffi::PyUnicode_GET_LENGTH(op) as usize;
            return len == bytes.len()
                && std::slice::from_raw_parts(ffi::PyUnicode_DATA(op) as *const u8, len) == bytes;
        }
    }
    text.to_str().is_ok_and(|held| held.as_bytes() == bytes)
}

struct StringCache {
    slots: Vec<Slot>,
}

impl StringCache {
    /// The string of field `index`'s `bytes`: the cached one if its slot holds these
    /// bytes, else a new one, cached in its slot. None if the bytes are not UTF-8.
    fn get<'py>(&mut self, py: Python<'py>, index: usize, bytes: &[u8]) -> Option<Bound<'py, PyString>> {
        if bytes.len() > CACHED_MAX_BYTES {
            return new_string(py, bytes);
        }
        let hash = slot_hash(index, bytes);
        let mask = self.slots.len() - 1;
        let slot = &mut self.slots[hash as usize & mask];
        if let Some(text) = &slot.text {
            let text = text.bind(py);
            if slot.hash == hash && holds(text, bytes) {
                return Some(text.clone());
            }
        }
        let text = new_string(py, bytes)?;
        slot.hash = hash;
        slot.text = Some(text.clone().unbind());
        Some(text)
    }
}

// Python --------------------------------------------------------------------------------

/// Reads the calls of by-account records into objects of the call type, strings shared
/// through a cache of `slots` strings (see the module).
#[pyclass(module = "distillwatch_native")]
pub struct CallDecoder {
    call_type: Py<PyType>,
    required: usize,
    cache: StringCache,
}

impl CallDecoder {
    /// The next call's fields into `args`; None if `decode` must decline the record.
    fn read_fields<'py>(
        &mut self,
        py: Python<'py>,
        r: &mut Cursor<'_>,
        args: &mut Vec<Bound<'py, PyAny>>,
    ) -> Option<()> {
        let n = r.array_len()?;
        if n < self.required || n > FIELDS.len() {
            return None;
        }
        for (index, field) in FIELDS[..n].iter().enumerate() {
            let m = r.byte()?;
            let value = if m == NIL && field.optional {
                py.None().into_bound(py)
            } else {
                match field.kind {
                    Kind::Str => {
                        let bytes = r.str_bytes(m)?;
                        let text = if field.shared {
                            self.cache.get(py, index, bytes)?
                        } else {
                            new_string(py, bytes)?
                        };
                        text.into_any()
                    }
                    Kind::Int => match r.int(m)? {
                        Int::Signed(v) => v.into_pyobject(py).ok()?.into_any(),
                        Int::Unsigned(v) => v.into_pyobject(py).ok()?.into_any(),
                    },
                    Kind::Float => PyFloat::new(py, r.float(m)?).into_any(),
                    Kind::Bool => PyBool::new(py, boolean(m)?).to_owned().into_any(),
                }
            };
            args.push(value);
        }
        Some(())
    }

    /// The calls of a msgpack array that is all of `body`; None to decline it.
    fn read_calls<'py>(&mut self, py: Python<'py>, body: &[u8]) -> PyResult<Option<Bound<'py, PyList>>> {
        let mut r = Cursor { b: body, at: 0 };
        let Some(count) = r.array_len() else {
            return Ok(None);
        };
        let mut calls = Vec::with_capacity(count.min(body.len() / MIN_CALL_BYTES));
        let mut args = Vec::with_capacity(FIELDS.len());
        for _ in 0..count {
            args.clear();
            if self.read_fields(py, &mut r, &mut args).is_none() {
                return Ok(None);
            }
            calls.push(self.build(py, &args)?);
        }
        if r.at != body.len() {
            return Ok(None);
        }
        PyList::new(py, calls).map(Some)
    }

    /// A call from its leading fields (the type's defaults fill the rest).
    fn build<'py>(&self, py: Python<'py>, args: &[Bound<'py, PyAny>]) -> PyResult<Bound<'py, PyAny>> {
        let mut pointers = [std::ptr::null_mut(); FIELDS.len()];
        for (pointer, arg) in pointers.iter_mut().zip(args) {
            *pointer = arg.as_ptr();
        }
        // SAFETY: the callable and the first `args.len()` (at most 28) pointers are live
        // objects, held by `self` and `args` for the length of the call.
        unsafe {
            let call = ffi::PyObject_Vectorcall(
                self.call_type.as_ptr(),
                pointers.as_ptr(),
                args.len(),
                std::ptr::null_mut(),
            );
            Bound::from_owned_ptr_or_err(py, call)
        }
    }
}

#[pymethods]
impl CallDecoder {
    /// Checks that `call_type` is the `ApiCall` this decoder reads (a TypeError names what
    /// differs) and registers it (`fields::register_call_type`: one type per process).
    #[new]
    #[pyo3(signature = (call_type, slots = 65_536))]
    fn new(py: Python<'_>, call_type: &Bound<'_, PyType>, slots: usize) -> PyResult<Self> {
        if !slots.is_power_of_two() {
            return Err(PyValueError::new_err("slots must be a power of two"));
        }
        let required = required_fields(call_type)?;
        register_call_type(py, call_type)?;
        Ok(CallDecoder {
            call_type: call_type.clone().unbind(),
            required,
            cache: StringCache { slots: (0..slots).map(|_| Slot::default()).collect() },
        })
    }

    /// How many strings the cache can hold.
    #[getter]
    fn slots(&self) -> usize {
        self.cache.slots.len()
    }

    /// How many strings the cache holds.
    #[getter]
    fn cached(&self) -> usize {
        self.cache.slots.iter().filter(|slot| slot.text.is_some()).count()
    }

    /// The calls of the msgpack array at `value[start:]`, in order; None when msgspec
    /// must decode it (anything this decoder does not read exactly as msgspec does).
    #[pyo3(signature = (value, start = 0))]
    fn decode<'py>(
        slf: &Bound<'py, Self>,
        value: &Bound<'py, PyAny>,
        start: usize,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        // Busy only when code that a collection ran during a decode (a finaliser, or
        // another thread it let in) decodes too: msgspec reads that record.
        let Ok(mut decoder) = slf.try_borrow_mut() else {
            return Ok(None);
        };
        let Ok(value) = value.downcast::<PyBytes>() else {
            return Ok(None);
        };
        let Some(body) = value.as_bytes().get(start..) else {
            return Ok(None);
        };
        decoder.read_calls(slf.py(), body)
    }
}
