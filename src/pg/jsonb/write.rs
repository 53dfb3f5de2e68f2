//! Builds jsonb values with PostgreSQL's own code: an object from key/value pairs with the jsonb
//! builder (never printed and parsed), a value from JSON text (`jsonb_in`), and a document with
//! the value at a path replaced (`jsonb_set`) or read (`jsonb_extract_path`). The reader of
//! binary jsonb is [`super::read`].

pub use super::build::{jsonb_from_text, jsonb_object};
use super::read::{Jsonb, jsonb_to_string};
use crate::pg::call::{CallMemory, JsonbArray, array_of, text_datum};
use event_store_core::shape::Scalar;
use pgrx::pg_sys::{self, BuiltinOid, Datum};

impl<'a> JsonbArray<'a> {
    /// A one-dimensional array of `json` texts, built in the call's memory.
    pub fn build(memory: CallMemory<'a>, json: &[&str]) -> JsonbArray<'a> {
        let elements: Vec<Datum> = json.iter().map(|j| jsonb_from_text(j)).collect();
        JsonbArray::of(memory, &elements)
    }
}

impl<'a> Jsonb<'a> {
    /// The JSON text of the value at `path` (object keys), `None` when there is none:
    /// PostgreSQL's `jsonb_extract_path` (`#>`), so every value keeps its exact form.
    pub fn text_at_path(&self, path: &[String]) -> Option<String> {
        // SAFETY: the datum is a jsonb value valid for 'a; jsonb_extract_path returns a jsonb
        // datum (in the current memory context), printed at once.
        unsafe { jsonb_at_path(self.datum(), path).map(|d| jsonb_to_string(d)) }
    }

    /// A copy of the value with the value at each path (which exists) replaced by the JSON
    /// text given with it: PostgreSQL's `jsonb_set`, which keeps the rest of the document as it
    /// was. Built in the call's memory (`memory`), so it lives as long as the call.
    pub fn with_replaced(
        &self,
        memory: CallMemory<'a>,
        edits: &[(Vec<String>, String)],
    ) -> Jsonb<'a> {
        let d = crate::pg::backend::Memory::from_call(memory).run(|| {
            let mut d = self.datum();
            for (path, json) in edits {
                let value = jsonb_from_text(json);
                // SAFETY: `d` is this jsonb value or one jsonb_set made of it, `value` one
                // jsonb_in made: both valid jsonb datums.
                d = unsafe { jsonb_set_path(d, path, value) };
            }
            d
        });
        // SAFETY: a jsonb datum (this value, or jsonb_set's result in the call's memory), valid
        // for the call's 'a.
        unsafe { Jsonb::from_datum(d) }
    }

    /// [`jsonb_object`] built in the call's memory, where it lives until the call returns.
    pub fn object(memory: CallMemory<'a>, pairs: &[(&str, Scalar)]) -> Jsonb<'a> {
        let d = crate::pg::backend::Memory::from_call(memory).run(|| jsonb_object(pairs));
        // SAFETY: jsonb_object returns a jsonb datum, here in the call's memory, valid for 'a.
        unsafe { Jsonb::from_datum(d) }
    }
}

/// A `text[]` of `keys` (in the current memory context): a jsonb path.
fn path_array(keys: &[String]) -> Datum {
    let elements: Vec<Option<Datum>> = keys.iter().map(|k| Some(text_datum(k))).collect();
    array_of(
        &elements,
        BuiltinOid::TEXTOID,
        -1,
        false,
        pg_sys::TYPALIGN_INT,
    )
}

/// The value at `path` (object keys) in a jsonb datum, `None` when there is none: PostgreSQL's
/// `jsonb_extract_path` (`#>`), so every value keeps its exact form.
///
/// # Safety
/// `d` must be a valid jsonb datum.
pub unsafe fn jsonb_at_path(d: Datum, path: &[String]) -> Option<Datum> {
    let path = path_array(path);
    // SAFETY: the caller's contract; jsonb_extract_path(jsonb, text[]) reads both arguments
    // and returns a new jsonb, or NULL (which the helper reports as None).
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::jsonb_extract_path,
            &[Some(d), Some(path)],
        )
    }
}

/// A copy of a jsonb datum with the value at `path` (which exists) replaced by `value`:
/// PostgreSQL's `jsonb_set`, which keeps the rest of the document as it was.
///
/// # Safety
/// `d` and `value` must be valid jsonb datums.
pub unsafe fn jsonb_set_path(d: Datum, path: &[String], value: Datum) -> Datum {
    let path = path_array(path);
    // SAFETY: the caller's contract; jsonb_set(jsonb, text[], jsonb, bool) is strict and every
    // argument is given; it returns a new jsonb in the current memory context.
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::jsonb_set,
            &[Some(d), Some(path), Some(value), Some(Datum::from(false))],
        )
        .unwrap_or(d)
    }
}
