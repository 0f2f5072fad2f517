//! The fields of a call, read by their slots.
//!
//! The Rust steps read some forty fields of each `models.records.ApiCall` between them.
//! `getattr` costs a type lookup, a descriptor call and a name per field. An `ApiCall` is
//! a msgspec Struct: each field is a slot of the object, at an offset its type's member
//! descriptor gives. `register_call_type(ApiCall)` (from `models.native`) reads those
//! offsets once; `field(call, F)` then reads the slot of an object of exactly that type,
//! as the descriptor itself would. Any other object, or an unset slot, goes through
//! `getattr`, so results and errors are the same either way.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyString, PyType};

/// The `ApiCall` fields the Rust steps read, in the struct's order.
pub(crate) const NAMES: [&str; 23] = [
    "ts",
    "tenant_id",
    "account_id",
    "status",
    "input_tokens",
    "output_tokens",
    "n",
    "logprobs",
    "tool_count",
    "turn",
    "stop_reason",
    "has_prompt",
    "simhash",
    "topic",
    "cot_request",
    "jailbreak_score",
    "sysprompt_probe",
    "ip",
    "asn",
    "user_agent",
    "tls_fingerprint",
    "created_at",
    "payment_fingerprint",
];

/// Index of a name in `NAMES`.
pub(crate) mod f {
    pub const TS: usize = 0;
    pub const TENANT_ID: usize = 1;
    pub const ACCOUNT_ID: usize = 2;
    pub const STATUS: usize = 3;
    pub const INPUT_TOKENS: usize = 4;
    pub const OUTPUT_TOKENS: usize = 5;
    pub const N: usize = 6;
    pub const LOGPROBS: usize = 7;
    pub const TOOL_COUNT: usize = 8;
    pub const TURN: usize = 9;
    pub const STOP_REASON: usize = 10;
    pub const HAS_PROMPT: usize = 11;
    pub const SIMHASH: usize = 12;
    pub const TOPIC: usize = 13;
    pub const COT_REQUEST: usize = 14;
    pub const JAILBREAK_SCORE: usize = 15;
    pub const SYSPROMPT_PROBE: usize = 16;
    pub const IP: usize = 17;
    pub const ASN: usize = 18;
    pub const USER_AGENT: usize = 19;
    pub const TLS_FINGERPRINT: usize = 20;
    pub const CREATED_AT: usize = 21;
    pub const PAYMENT_FINGERPRINT: usize = 22;
}

/// The registered type and the byte offset of each of `NAMES` in its objects.
struct Layout {
    ty: Py<PyType>,
    offsets: [isize; NAMES.len()],
}

static LAYOUT: GILOnceCell<Layout> = GILOnceCell::new();
static INTERNED: GILOnceCell<Vec<Py<PyString>>> = GILOnceCell::new();

/// Read the slot offsets of `ty`, a msgspec Struct type with every field of `NAMES`
/// (TypeError if it is not). Once per process: registering the same type again does
/// nothing, another type is a ValueError.
#[pyfunction]
pub(crate) fn register_call_type(py: Python<'_>, ty: &Bound<'_, PyType>) -> PyResult<()> {
    let not_a_slot =
        |name: &str| pyo3::exceptions::PyTypeError::new_err(format!("{name} is not a slot of the call type"));
    let mut offsets = [0isize; NAMES.len()];
    for (offset, name) in offsets.iter_mut().zip(NAMES) {
        let descriptor = ty.getattr(name).map_err(|_| not_a_slot(name))?;
        // SAFETY: the pointer is a live object (held by `descriptor`); the cast to a member
        // descriptor happens only once its type is checked to be exactly that.
        unsafe {
            let raw = descriptor.as_ptr();
            if ffi::Py_TYPE(raw) != std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type) {
                return Err(not_a_slot(name));
            }
            // (pyo3-ffi types the member as a getset definition; it is a PyMemberDef.)
            let member = (*raw.cast::<ffi::PyMemberDescrObject>()).d_member.cast::<ffi::PyMemberDef>();
            if (*member).type_code != ffi::Py_T_OBJECT_EX {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "{name} is not an object slot of the call type"
                )));
            }
            *offset = (*member).offset;
        }
    }
    if let Some(layout) = LAYOUT.get(py) {
        return if layout.ty.bind(py).is(ty) {
            Ok(())
        } else {
            Err(pyo3::exceptions::PyValueError::new_err("another call type is registered"))
        };
    }
    // Under the GIL, nothing registered in between: this sets it.
    let _ = LAYOUT.set(py, Layout { ty: ty.clone().unbind(), offsets });
    Ok(())
}

/// Field `index` (of `NAMES`) of `call`: its slot when `call` is of the registered type
/// and the slot is set, else `getattr`.
#[inline]
pub(crate) fn field<'py>(call: &Bound<'py, PyAny>, index: usize) -> PyResult<Bound<'py, PyAny>> {
    let py = call.py();
    if let Some(layout) = LAYOUT.get(py) {
        let raw = call.as_ptr();
        // SAFETY: `raw` is of exactly the registered type, whose member descriptor gave
        // this offset of an object slot (T_OBJECT_EX): a `PyObject*`, null when unset.
        unsafe {
            if ffi::Py_TYPE(raw) == layout.ty.as_ptr().cast::<ffi::PyTypeObject>() {
                let slot = *raw.cast::<u8>().offset(layout.offsets[index]).cast::<*mut ffi::PyObject>();
                if !slot.is_null() {
                    return Ok(Bound::from_borrowed_ptr(py, slot));
                }
            }
        }
    }
    let names = INTERNED.get_or_init(py, || {
        NAMES.iter().map(|name| PyString::intern(py, name).unbind()).collect()
    });
    call.getattr(names[index].bind(py))
}
