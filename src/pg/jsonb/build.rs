//! Builds jsonb values from Rust values in the current memory context, with PostgreSQL's own
//! code: an object from key/value pairs with the jsonb builder (never printed and parsed), a
//! value from JSON text (`jsonb_in`). Apart from [`super::write`] because the call's glue
//! (`pg/call.rs`) builds values with it, and `write` builds on the call's types.

use event_store_core::shape::{Scalar, to_json_text};
use pgrx::pg_sys::{self, Datum};
use std::ffi::{CString, c_char};

unsafe extern "C-unwind" {
    /// The fmgr entry of `jsonb_in`, unwrapped, for `DirectFunctionCall1Coll` (the guarded call).
    #[link_name = "jsonb_in"]
    fn jsonb_in_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
}

/// A jsonb datum (in the current memory context) of JSON text built in Rust.
pub fn jsonb_from_text(json: &str) -> Datum {
    let text = CString::new(json).unwrap_or_default();
    // SAFETY: jsonb_in reads the NUL-terminated text (kept alive across the call) and returns a
    // new jsonb in the current context; invalid JSON would be an ERROR, not undefined behavior.
    unsafe {
        pg_sys::DirectFunctionCall1Coll(
            Some(jsonb_in_fmgr),
            pg_sys::InvalidOid,
            Datum::from(text.as_ptr() as *mut c_char),
        )
    }
}

/// A jsonb object of `pairs` (in the current memory context), built with PostgreSQL's jsonb
/// builder (`pushJsonbValue`) instead of printing JSON text for `jsonb_in` to parse: the parse
/// was a third of what an account command cost (`benches/instructions.sh`). The result is the
/// value `jsonb_in` gives for the same object (keys sorted and unique the same way). In a
/// database whose encoding is not UTF-8 the strings need converting, so the text path does it.
pub fn jsonb_object(pairs: &[(&str, Scalar)]) -> Datum {
    // SAFETY: reads the database's encoding, fixed for the life of the backend.
    if unsafe { pg_sys::GetDatabaseEncoding() } != pg_sys::pg_enc::PG_UTF8 as i32 {
        return jsonb_from_text(&to_json_text(pairs));
    }
    let string = |s: &str| pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvString,
        val: pg_sys::JsonbValue__bindgen_ty_1 {
            string: pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
                // A string too long for jsonb (2^28 bytes) is refused by the builder
                // (checkStringLen), as jsonb_in refuses it; none of the store's values is.
                len: i32::try_from(s.len()).unwrap_or(i32::MAX),
                val: s.as_ptr() as *mut c_char,
            },
        },
    };
    // The builder copies the structs; the bytes their strings point to (`pairs` and the keys,
    // borrowed for this whole function) stay valid until JsonbValueToJsonb has copied them into
    // the result. Numerics are palloc'd by int64_to_numeric in the current context, like it.
    // SAFETY: every JsonbValue handed to pushJsonbValue is complete for its type and its bytes
    // outlive the builder (above); errors (a string too long) come through the guarded calls.
    unsafe {
        let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
        pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
            std::ptr::null_mut(),
        );
        for (key, value) in pairs {
            let mut k = string(key);
            pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_KEY, &mut k);
            let mut v = match value {
                Scalar::Text(t) => string(t),
                Scalar::Int(n) => pg_sys::JsonbValue {
                    type_: pg_sys::jbvType::jbvNumeric,
                    val: pg_sys::JsonbValue__bindgen_ty_1 {
                        numeric: pg_sys::int64_to_numeric(*n),
                    },
                },
            };
            pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_VALUE, &mut v);
        }
        let object = pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
            std::ptr::null_mut(),
        );
        Datum::from(pg_sys::JsonbValueToJsonb(object))
    }
}
