//! The cells of an `array.array` of a state, read and written in place.
//!
//! Each call's steps reach three or four per-account arrays (a behaviour state's counts
//! and templates, the link observer's words, the share suspicion's doubles). pyo3's
//! `PyBuffer` boxes every view, asks for its strides and shape, checks contiguity again
//! when sliced and takes the GIL's count when dropped: about 0.1 µs a view, a tenth of the
//! link stage (bench/PROFILE.md, "Twenty-first pass"). `Cells` asks only for what an
//! array gives (its memory, item size and format), checks the format once, and releases
//! the view when dropped.

use std::cell::Cell;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use pyo3::buffer::Element;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;

/// A writable view of the `T`s of an object that exports one contiguous dimension of
/// them (an `array.array` of `T`'s type code).
pub(crate) struct Cells<T> {
    view: ffi::Py_buffer,
    _item: PhantomData<T>,
}

impl<T: Element> Cells<T> {
    /// The view of `obj`, or an error naming `what` when `obj` is not a writable array of
    /// `T`s.
    pub(crate) fn of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Self> {
        let mut view = MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: `obj` is a live object and the GIL is held; without PyBUF_STRIDES or
        // PyBUF_ND the exporter points nothing into the view itself, so it may move.
        let view = unsafe {
            if ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_WRITABLE | ffi::PyBUF_FORMAT) == -1 {
                return Err(PyErr::fetch(obj.py()));
            }
            view.assume_init()
        };
        let cells = Cells { view, _item: PhantomData };
        let v = &cells.view;
        // (Asked for without shape, the exporter gives C-contiguous memory or refuses.)
        let fits = v.itemsize as usize == std::mem::size_of::<T>()
            && !v.buf.is_null()
            && !v.format.is_null()
            // SAFETY: a non-null format is a NUL-terminated string the view holds.
            && T::is_compatible_format(unsafe { CStr::from_ptr(v.format) })
            && v.buf.cast::<T>().is_aligned();
        if !fits {
            return Err(PyValueError::new_err(format!("{what} is not an array of the expected type")));
        }
        Ok(cells)
    }

    /// The cells, when there are `len` of them; else the error `mismatch`.
    pub(crate) fn exactly(&self, len: usize, mismatch: &str) -> PyResult<&[Cell<T>]> {
        let cells = self.cells();
        if cells.len() != len {
            return Err(PyValueError::new_err(mismatch.to_owned()));
        }
        Ok(cells)
    }

    pub(crate) fn cells(&self) -> &[Cell<T>] {
        // SAFETY: the view holds `len` bytes of aligned `T`s (checked in `of`), writable,
        // and stays valid until released in `drop`; `Cell` has `T`'s layout.
        unsafe {
            std::slice::from_raw_parts(
                self.view.buf as *const Cell<T>,
                self.view.len as usize / std::mem::size_of::<T>(),
            )
        }
    }
}

impl<T> Drop for Cells<T> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by PyObject_GetBuffer and is released once; every
        // `Cells` is made and dropped with the GIL held (its steps run under it).
        unsafe { ffi::PyBuffer_Release(&mut self.view) }
    }
}
