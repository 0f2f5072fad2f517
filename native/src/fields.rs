//! The fields of a call, read by their slots.
//!
//! The Rust steps read some forty fields of each `models.records.ApiCall` between them.
//! `getattr` costs a type lookup, a descriptor call and a name per field. An `ApiCall` is
//! a msgspec Struct: each field is a slot of the object, at an offset its type's member
//! descriptor gives. `register_call_type(ApiCall)` (from `models.native`) reads those
//! offsets once; `field(call, F)` then reads the slot of an object of exactly that type,
//! as the descriptor itself would. Any other object, or an unset slot, goes through
//! `getattr`, so results and errors are the same either way.
//!
//! The behaviour core reads and writes an account's `BehaviourState`, and reads its
//! `AccountState`, the same way (`register_state_types`, from `models.engine`): ten reads
//! and four writes of a common call had been a fifth of the engine's time in `getattr` and
//! `setattr`. A slot is written in place only where that is all `setattr` would do.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyString, PyType};
use pyo3::BoundObject;

/// A list of field names, and a module of each one's index in it, from one list: the
/// two cannot disagree.
macro_rules! field_names {
    ($(#[$doc:meta])* $names:ident, $module:ident { $($index:ident = $name:literal,)* }) => {
        $(#[$doc])*
        pub(crate) const $names: [&str; [$($name),*].len()] = [$($name),*];
        #[doc = concat!("Index of a name in `", stringify!($names), "`.")]
        pub(crate) mod $module {
            field_names!(@index 0usize; $($index,)*);
        }
    };
    (@index $n:expr; $head:ident, $($rest:ident,)*) => {
        pub const $head: usize = $n;
        field_names!(@index $n + 1usize; $($rest,)*);
    };
    (@index $n:expr;) => {};
}

field_names! {
    /// The `ApiCall` fields the Rust steps read, in the struct's order.
    NAMES, f {
        TS = "ts",
        TENANT_ID = "tenant_id",
        ACCOUNT_ID = "account_id",
        STATUS = "status",
        INPUT_TOKENS = "input_tokens",
        OUTPUT_TOKENS = "output_tokens",
        N = "n",
        LOGPROBS = "logprobs",
        TOOL_COUNT = "tool_count",
        TURN = "turn",
        STOP_REASON = "stop_reason",
        HAS_PROMPT = "has_prompt",
        SIMHASH = "simhash",
        TOPIC = "topic",
        COT_REQUEST = "cot_request",
        JAILBREAK_SCORE = "jailbreak_score",
        SYSPROMPT_PROBE = "sysprompt_probe",
        IP = "ip",
        ASN = "asn",
        USER_AGENT = "user_agent",
        TLS_FINGERPRINT = "tls_fingerprint",
        CREATED_AT = "created_at",
        PAYMENT_FINGERPRINT = "payment_fingerprint",
    }
}

/// The fields of a msgspec Struct type read (and written) by their slots: the type is
/// registered once per process, and an object of exactly that type is read at the offsets
/// its member descriptors give; any other object, or an unset slot, through `getattr`.
pub(crate) struct Slots<const N: usize> {
    /// What the type is, for errors ("the call type").
    what: &'static str,
    names: [&'static str; N],
    layout: GILOnceCell<Layout<N>>,
    interned: GILOnceCell<Vec<Py<PyString>>>,
}

/// The registered type, the byte offset of each name in its objects, and whether a slot
/// may be written in place (see `Slots::register`).
struct Layout<const N: usize> {
    ty: Py<PyType>,
    offsets: [isize; N],
    writable: bool,
}

impl<const N: usize> Slots<N> {
    pub(crate) const fn new(what: &'static str, names: [&'static str; N]) -> Self {
        Slots { what, names, layout: GILOnceCell::new(), interned: GILOnceCell::new() }
    }

    /// Read the slot offsets of `ty`, a msgspec Struct type with every one of the names
    /// as an object slot (TypeError if it is not). Once per process: registering the
    /// same type again does nothing, another type is a ValueError. Returns whether `set`
    /// writes its objects' slots in place.
    pub(crate) fn register(&self, py: Python<'_>, ty: &Bound<'_, PyType>) -> PyResult<bool> {
        let what = self.what;
        let not_a_slot = |name: &str| {
            pyo3::exceptions::PyTypeError::new_err(format!("{name} is not a slot of the {what} type"))
        };
        let mut offsets = [0isize; N];
        for (offset, name) in offsets.iter_mut().zip(self.names) {
            let descriptor = ty.getattr(name).map_err(|_| not_a_slot(name))?;
            // SAFETY: the pointer is a live object (held by `descriptor`); the cast to a
            // member descriptor happens only once its type is checked to be exactly that.
            unsafe {
                let raw = descriptor.as_ptr();
                if ffi::Py_TYPE(raw) != std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type) {
                    return Err(not_a_slot(name));
                }
                // (pyo3-ffi types the member as a getset definition; it is a PyMemberDef.)
                let member = (*raw.cast::<ffi::PyMemberDescrObject>()).d_member.cast::<ffi::PyMemberDef>();
                if (*member).type_code != ffi::Py_T_OBJECT_EX {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "{name} is not an object slot of the {what} type"
                    )));
                }
                *offset = (*member).offset;
            }
        }
        if let Some(layout) = self.layout.get(py) {
            return if layout.ty.bind(py).is(ty) {
                Ok(layout.writable)
            } else {
                Err(pyo3::exceptions::PyValueError::new_err(format!("another {what} type is registered")))
            };
        }
        // A type whose objects the collector does not track (a msgspec Struct with
        // `gc=False`) and whose `setattr` is msgspec's own stores a field as its member
        // descriptor does, and nothing more: msgspec's `setattr` is Python's generic one,
        // then tracks a collected object given a container, which these are not. So may
        // `set`. Anything else (frozen, a `__setattr__` of its own) goes through `setattr`.
        let default = py.import("msgspec")?.getattr("Struct")?;
        // SAFETY: both are live type objects.
        let writable = unsafe {
            let raw = ty.as_ptr().cast::<ffi::PyTypeObject>();
            let base = default.as_ptr().cast::<ffi::PyTypeObject>();
            ffi::PyType_GetFlags(raw) & ffi::Py_TPFLAGS_HAVE_GC == 0
                && (*raw).tp_setattro.map(|f| f as *const ()) == (*base).tp_setattro.map(|f| f as *const ())
        };
        // Under the GIL, nothing registered in between: this sets it.
        let _ = self.layout.set(py, Layout { ty: ty.clone().unbind(), offsets, writable });
        Ok(writable)
    }

    /// The slot's address in `obj` when `obj` is of exactly the registered type.
    #[inline]
    fn slot(&self, py: Python<'_>, obj: *mut ffi::PyObject, index: usize) -> Option<(*mut *mut ffi::PyObject, bool)> {
        let layout = self.layout.get(py)?;
        // SAFETY: `obj` is a live object; of exactly the registered type, whose member
        // descriptor gave this offset of an object slot (T_OBJECT_EX): a `PyObject*`.
        unsafe {
            if ffi::Py_TYPE(obj) == layout.ty.as_ptr().cast::<ffi::PyTypeObject>() {
                return Some((obj.cast::<u8>().offset(layout.offsets[index]).cast(), layout.writable));
            }
        }
        None
    }

    fn name<'py>(&self, py: Python<'py>, index: usize) -> &Bound<'py, PyString> {
        let names = self.interned.get_or_init(py, || {
            self.names.iter().map(|name| PyString::intern(py, name).unbind()).collect()
        });
        names[index].bind(py)
    }

    /// Field `index` of `obj`: its slot when `obj` is of the registered type and the
    /// slot is set, else `getattr`.
    #[inline]
    pub(crate) fn get<'py>(&self, obj: &Bound<'py, PyAny>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = obj.py();
        if let Some((slot, _)) = self.slot(py, obj.as_ptr(), index) {
            // SAFETY: a slot of a live object (see `slot`), null when unset.
            unsafe {
                if !(*slot).is_null() {
                    return Ok(Bound::from_borrowed_ptr(py, *slot));
                }
            }
        }
        obj.getattr(self.name(py, index))
    }

    /// Set field `index` of `obj` to `value`: in its slot when `obj` is of the registered
    /// type and `register` found that type's `setattr` to be a plain store, else `setattr`.
    #[inline]
    pub(crate) fn set<'py, V: IntoPyObject<'py>>(&self, obj: &Bound<'py, PyAny>, index: usize, value: V) -> PyResult<()>
    where
        PyErr: From<V::Error>,
    {
        let py = obj.py();
        let value = value.into_pyobject(py)?.into_any().into_bound();
        if let Some((slot, true)) = self.slot(py, obj.as_ptr(), index) {
            // SAFETY: a slot of a live object (see `slot`), owning its reference: the new
            // value's is taken, then the old one's released, as a member descriptor does.
            unsafe {
                let old = std::mem::replace(&mut *slot, value.into_ptr());
                ffi::Py_XDECREF(old);
            }
            return Ok(());
        }
        obj.setattr(self.name(py, index), value)
    }
}

pub(crate) static CALL: Slots<{ NAMES.len() }> = Slots::new("call", NAMES);

/// Read the slot offsets of `ty`, a msgspec Struct type with every field of `NAMES`
/// (TypeError if it is not). Once per process: registering the same type again does
/// nothing, another type is a ValueError.
#[pyfunction]
pub(crate) fn register_call_type(py: Python<'_>, ty: &Bound<'_, PyType>) -> PyResult<()> {
    CALL.register(py, ty).map(|_| ())
}

/// Field `index` (of `NAMES`) of `call`: its slot when `call` is of the registered type
/// and the slot is set, else `getattr`.
#[inline]
pub(crate) fn field<'py>(call: &Bound<'py, PyAny>, index: usize) -> PyResult<Bound<'py, PyAny>> {
    CALL.get(call, index)
}

field_names! {
    /// The `models.behaviour.BehaviourState` fields the behaviour steps read and write.
    STATE_NAMES, st {
        COUNTS = "counts",
        LANDMARK = "landmark",
        WITHHELD = "withheld",
        TEMPLATES = "templates",
        TEMPLATE_NEXT = "template_next",
        TOPICS = "topics",
        LAST_TS = "last_ts",
        GAP_MEAN = "gap_mean",
        GAP_DEV = "gap_dev",
        SAMPLED_EPOCH = "sampled_epoch",
        COHORT = "cohort",
    }
}

pub(crate) static STATE: Slots<{ STATE_NAMES.len() }> = Slots::new("behaviour state", STATE_NAMES);

field_names! {
    /// The `models.engine.AccountState` fields the engine's common call reads.
    ACCOUNT_NAMES, acct {
        DETECTOR_STATES = "detector_states",
        EPISODE = "episode",
    }
}

pub(crate) static ACCOUNT: Slots<{ ACCOUNT_NAMES.len() }> = Slots::new("account state", ACCOUNT_NAMES);

/// Read the slot offsets of `models.behaviour.BehaviourState` and
/// `models.engine.AccountState` (as `register_call_type` does for the call type). Until
/// then the behaviour steps read and write those states through `getattr` and `setattr`.
/// Returns whether a behaviour state's fields are written in place (else by `setattr`).
#[pyfunction]
pub(crate) fn register_state_types(
    py: Python<'_>,
    state: &Bound<'_, PyType>,
    account: &Bound<'_, PyType>,
) -> PyResult<bool> {
    let writable = STATE.register(py, state)?;
    ACCOUNT.register(py, account)?;
    Ok(writable)
}
