//! Reads the top-level keys of an event object straight from PostgreSQL's binary jsonb, without
//! turning it into text or a serde value, and hands them to the core as [`JsonField`]s.
//!
//! Appends store the caller's jsonb datums unchanged; this module only looks at the handful of
//! keys the store needs (`type`, `event_id`, `occurred_at`, ...), each a binary search in the
//! object's sorted key table.

use crate::core::{JsonField, RawEvent};
use pgrx::pg_sys::{self, Datum};
use std::ffi::CStr;

unsafe extern "C-unwind" {
    /// The fmgr entry of `numeric_out`, unwrapped, for `DirectFunctionCall1Coll` (which is the
    /// guarded call).
    #[link_name = "numeric_out"]
    fn numeric_out_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
    /// The fmgr entry of `numeric_scale` (the display scale: 0 for an integral literal).
    #[link_name = "numeric_scale"]
    fn numeric_scale_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
    /// `utils/numeric.h`: numeric to integer; sets `have_error` instead of raising when out of
    /// range. Never raises for a finite value (jsonb holds no NaN), so it needs no guard.
    fn numeric_int4_opt_error(num: pg_sys::Numeric, have_error: *mut bool) -> i32;
}

/// An exact integer that fits 32 bits, without the text round trip of `numeric_out` (replay
/// reads one amount per event). `None` for fractions and larger values, which take the text path.
unsafe fn numeric_as_i64(num: pg_sys::Numeric) -> Option<i64> {
    unsafe {
        let scale = pg_sys::DirectFunctionCall1Coll(
            Some(numeric_scale_fmgr),
            pg_sys::InvalidOid,
            Datum::from(num),
        );
        if scale.value() as i32 != 0 {
            return None;
        }
        let mut overflow = false;
        let v = numeric_int4_opt_error(num, &mut overflow);
        (!overflow).then_some(i64::from(v))
    }
}

/// A detoasted jsonb value, valid for the current memory context.
#[derive(Clone, Copy)]
pub struct Jsonb(*mut pg_sys::Jsonb);

impl Jsonb {
    /// Detoasts (and unpacks short headers of) a jsonb datum, e.g. an element of a jsonb[].
    ///
    /// # Safety
    /// `d` must be a non-null jsonb datum.
    pub unsafe fn from_datum(d: Datum) -> Jsonb {
        Jsonb(unsafe { pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast() })
    }

    /// The datum of the detoasted value.
    pub fn datum(self) -> Datum {
        Datum::from(self.0)
    }

    fn root(self) -> *mut pg_sys::JsonbContainer {
        unsafe { &raw mut (*self.0).root }
    }

    /// The kind of the top-level value.
    pub fn shape<'a>(self) -> JsonField<'a> {
        unsafe {
            let header = (*self.root()).header;
            if header & pg_sys::JB_FSCALAR != 0 {
                let v = pg_sys::getIthJsonbValueFromContainer(self.root(), 0);
                scalar_field(&*v)
            } else if header & pg_sys::JB_FOBJECT != 0 {
                JsonField::Object
            } else {
                JsonField::Array
            }
        }
    }

    /// Looks a top-level key up; the value is written to `out` (NULL when absent).
    fn lookup(self, key: &CStr, out: &mut pg_sys::JsonbValue) -> *mut pg_sys::JsonbValue {
        let len = key.to_bytes().len() as i32;
        unsafe { pg_sys::getKeyJsonValueFromContainer(self.root(), key.as_ptr(), len, out) }
    }

    /// The value of a top-level key of an object. Strings borrow the jsonb's memory; numbers are
    /// rendered to text in the current memory context.
    pub fn get<'a>(self, key: &CStr) -> JsonField<'a> {
        unsafe {
            let mut out = std::mem::zeroed::<pg_sys::JsonbValue>();
            let found = self.lookup(key, &mut out);
            if found.is_null() {
                JsonField::Absent
            } else {
                scalar_field(&*found)
            }
        }
    }

    /// The value of a top-level key that is an object or array, as a jsonb datum of its own.
    pub fn get_container(self, key: &CStr) -> Option<Datum> {
        unsafe {
            let mut out = std::mem::zeroed::<pg_sys::JsonbValue>();
            let found = self.lookup(key, &mut out);
            if found.is_null() || (*found).type_ != pg_sys::jbvType::jbvBinary {
                return None;
            }
            Some(Datum::from(pg_sys::JsonbValueToJsonb(found)))
        }
    }

    /// The keys the store reads from an event object.
    pub fn raw_event<'a>(self) -> RawEvent<'a> {
        let shape = self.shape();
        if shape != JsonField::Object {
            return RawEvent::empty(shape);
        }
        RawEvent {
            shape,
            event_type: self.get(c"type"),
            event_id: self.get(c"event_id"),
            occurred_at: self.get(c"occurred_at"),
            event_version: self.get(c"event_version"),
            metadata: self.get(c"metadata"),
            aggregate_id: self.get(c"aggregate_id"),
            sequence_number: self.get(c"sequence_number"),
        }
    }
}

unsafe fn scalar_field<'a>(v: &pg_sys::JsonbValue) -> JsonField<'a> {
    unsafe {
        match v.type_ {
            pg_sys::jbvType::jbvNull => JsonField::Null,
            pg_sys::jbvType::jbvBool => JsonField::Bool(v.val.boolean),
            pg_sys::jbvType::jbvString => {
                let s = v.val.string;
                let bytes = std::slice::from_raw_parts(s.val.cast::<u8>(), s.len as usize);
                // jsonb strings are valid UTF-8 in a UTF-8 database; in any other encoding a
                // non-ASCII value is reported as not being the expected kind.
                match std::str::from_utf8(bytes) {
                    Ok(s) => JsonField::String(s),
                    Err(_) => JsonField::Array,
                }
            }
            pg_sys::jbvType::jbvNumeric => {
                if let Some(v) = numeric_as_i64(v.val.numeric) {
                    return JsonField::Integer(v);
                }
                let text = pg_sys::DirectFunctionCall1Coll(
                    Some(numeric_out_fmgr),
                    pg_sys::InvalidOid,
                    Datum::from(v.val.numeric),
                );
                let c = CStr::from_ptr(text.cast_mut_ptr::<std::ffi::c_char>());
                let text = c.to_str().unwrap_or("NaN");
                match text.parse::<i64>() {
                    Ok(i) => JsonField::Integer(i),
                    Err(_) => JsonField::Number(text),
                }
            }
            pg_sys::jbvType::jbvBinary => {
                if (*v.val.binary.data).header & pg_sys::JB_FOBJECT != 0 {
                    JsonField::Object
                } else {
                    JsonField::Array
                }
            }
            pg_sys::jbvType::jbvObject => JsonField::Object,
            _ => JsonField::Array,
        }
    }
}
