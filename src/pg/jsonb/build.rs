//! Builds jsonb values from Rust values in the current memory context, with PostgreSQL's own
//! code: an object from key/value pairs with the jsonb builder (never printed and parsed), a
//! value from JSON text (`jsonb_in`). Apart from [`super::write`] because the call's glue
//! (`pg/call.rs`) builds values with it, and `write` builds on the call's types.

use event_store_core::shape::{Scalar, to_json_text};
use pgrx::pg_sys::{self, Datum};
use std::cell::Cell;
use std::ffi::{CString, c_char, c_void};

unsafe extern "C-unwind" {
    /// The fmgr entry of `jsonb_in`, unwrapped, for `DirectFunctionCall1Coll` (the guarded call).
    #[link_name = "jsonb_in"]
    fn jsonb_in_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
}

// `int64_to_numeric` and `pfree` are called only inside the one guard of `numeric_bytes`, whose
// closure owns only integers, raw pointers and a byte array.
// SAFETY: each declaration is PostgreSQL's own prototype (the one pgrx binds with its per-call
// guard, the same on 15 and 18), linked by its C name.
unsafe extern "C-unwind" {
    /// PostgreSQL's `int64_to_numeric`, bound without pgrx's per-call guard.
    #[link_name = "int64_to_numeric"]
    fn int64_to_numeric_in_guard(v: i64) -> pg_sys::Numeric;
    /// PostgreSQL's `pfree`, bound without pgrx's per-call guard.
    #[link_name = "pfree"]
    fn pfree_in_guard(pointer: *mut c_void);
}

/// Room for an `int64_to_numeric` value (a 4-byte header, the short format's 2-byte header and
/// at most five base-10000 digits of 2 bytes: 16 bytes), with a margin.
const NUMERIC_ROOM: usize = 32;

/// The bytes of `int64_to_numeric(v)` and their count, the value made and freed under one pgrx
/// guard instead of one per call (an account event's object has several numbers). A count above
/// [`NUMERIC_ROOM`] means the bytes did not fit (none of an int64's does) and were cut.
fn numeric_bytes(v: i64) -> ([u8; NUMERIC_ROOM], usize) {
    // int64_to_numeric returns a palloc'd numeric with a 4-byte header in the current context
    // (its varlena size covers the whole value); at most NUMERIC_ROOM bytes of it are copied to
    // the array and it is freed. Both calls run unguarded inside this one guard, whose closure
    // owns only integers, a raw pointer and the array (an ERROR skips nothing).
    // SAFETY: a palloc'd numeric read within its size and freed, inside one guard.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            let numeric = int64_to_numeric_in_guard(v);
            let whole = pgrx::varlena::varsize_any(numeric.cast());
            let mut bytes = [0u8; NUMERIC_ROOM];
            std::ptr::copy_nonoverlapping(
                numeric.cast::<u8>(),
                bytes.as_mut_ptr(),
                whole.min(NUMERIC_ROOM),
            );
            pfree_in_guard(numeric.cast());
            (bytes, whole)
        })
    }
}

/// Whether the database's encoding is UTF-8: asked of PostgreSQL once per backend, as soon as
/// it is connected to its database (whose encoding never changes), then remembered (an account
/// command builds two objects).
fn utf8_database() -> bool {
    thread_local! {
        static UTF8: Cell<Option<bool>> = const { Cell::new(None) };
    }
    if let Some(utf8) = UTF8.with(Cell::get) {
        return utf8;
    }
    // SAFETY: reads the database's encoding, fixed for the life of the backend once
    // MyDatabaseId is set (a process not connected yet asks again next time).
    let (utf8, connected) = unsafe {
        (
            pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32,
            pg_sys::MyDatabaseId != pg_sys::InvalidOid,
        )
    };
    if connected {
        UTF8.with(|u| u.set(Some(utf8)));
    }
    utf8
}

// The on-disk jsonb format (utils/jsonb.h of PostgreSQL 15 and 18, unchanged since 9.4).
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_CMASK: u32 = 0x0FFF_FFFF;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JB_OFFSET_STRIDE: usize = 32;

/// A flat object's jsonb written directly in PostgreSQL's on-disk format (in the current
/// memory context), as `JsonbValueToJsonb` writes the builder's value: keys sorted by length,
/// then bytes; the key entries, then the value entries, every 32nd entry holding its end
/// offset and the others their length; each numeric (`int64_to_numeric`'s, copied as is)
/// padded to a 4-byte boundary. `None` (the builder then does it, and raises what it raises)
/// for a key given twice or a length the format cannot hold. Why: the builder's pushes, sort
/// and conversion were a fifth of an account command (`benches/instructions.sh`: about 12,000
/// instructions per object of an `es.deposit`); this is a few hundred.
fn flat_object(pairs: &[(&str, Scalar)]) -> Option<Datum> {
    let n = pairs.len();
    if n as u64 >= u64::from(JB_CMASK) {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| {
        let (ka, kb) = (pairs[a].0.as_bytes(), pairs[b].0.as_bytes());
        ka.len().cmp(&kb.len()).then_with(|| ka.cmp(kb))
    });
    if order.windows(2).any(|w| pairs[w[0]].0 == pairs[w[1]].0) {
        return None;
    }
    let size: usize = pairs
        .iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    Scalar::Text(t) => t.len(),
                    Scalar::Int(_) => 3 + 4 + 8 * 4,
                }
        })
        .sum();
    let mut buf: Vec<u8> = Vec::with_capacity(8 + 8 * n + size);
    buf.extend_from_slice(&[0; 4]); // the varlena header, set below
    buf.extend_from_slice(&(n as u32 | JB_FOBJECT).to_ne_bytes());
    let jentries = buf.len();
    buf.resize(jentries + 8 * n, 0);
    let mut total: u32 = 0;
    let mut entry = |buf: &mut Vec<u8>, i: usize, kind: u32, len: usize| -> Option<()> {
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= JENTRY_OFFLENMASK)?;
        total = total.checked_add(len).filter(|t| *t <= JENTRY_OFFLENMASK)?;
        let meta = if i.is_multiple_of(JB_OFFSET_STRIDE) {
            (kind & JENTRY_TYPEMASK) | total | JENTRY_HAS_OFF
        } else {
            kind | len
        };
        buf[jentries + 4 * i..jentries + 4 * i + 4].copy_from_slice(&meta.to_ne_bytes());
        Some(())
    };
    for (i, &p) in order.iter().enumerate() {
        let key = pairs[p].0.as_bytes();
        buf.extend_from_slice(key);
        entry(&mut buf, i, 0, key.len())?;
    }
    for (i, &p) in order.iter().enumerate() {
        match &pairs[p].1 {
            Scalar::Text(t) => {
                buf.extend_from_slice(t.as_bytes());
                entry(&mut buf, n + i, 0, t.len())?;
            }
            Scalar::Int(v) => {
                let pad = (4 - buf.len() % 4) % 4;
                buf.resize(buf.len() + pad, 0);
                let (numeric, numlen) = numeric_bytes(*v);
                if numlen > NUMERIC_ROOM {
                    return None;
                }
                buf.extend_from_slice(&numeric[..numlen]);
                entry(&mut buf, n + i, JENTRY_ISNUMERIC, pad + numlen)?;
            }
        }
    }
    let len = i32::try_from(buf.len()).ok()?;
    // SAFETY: a fresh palloc of `len` bytes in the current context, filled from `buf` (its
    // first four bytes then hold the 4-byte varlena header of the whole length).
    unsafe {
        let out = pg_sys::palloc(buf.len()).cast::<u8>();
        std::ptr::copy_nonoverlapping(buf.as_ptr(), out, buf.len());
        pgrx::varlena::set_varsize_4b(out.cast(), len);
        Some(Datum::from(out))
    }
}

/// Raises an internal error when `direct` is not byte for byte the builder's jsonb of `pairs`.
#[cfg(debug_assertions)]
fn same_as_builder(direct: Datum, pairs: &[(&str, Scalar)]) {
    let built = built_object(pairs);
    // SAFETY: both are fresh, untoasted 4-byte-header jsonb values in the current context.
    let same = unsafe {
        let a = pgrx::varlena::varsize_any(direct.cast_mut_ptr());
        let b = pgrx::varlena::varsize_any(built.cast_mut_ptr());
        a == b
            && std::slice::from_raw_parts(direct.cast_mut_ptr::<u8>(), a)
                == std::slice::from_raw_parts(built.cast_mut_ptr::<u8>(), b)
    };
    if !same {
        pgrx::error!("event_store: the direct jsonb of an object differs from the builder's");
    }
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
    if !utf8_database() {
        return jsonb_from_text(&to_json_text(pairs));
    }
    if let Some(direct) = flat_object(pairs) {
        // Debug builds (every test) check the direct encoding against the builder's, byte for
        // byte, on every object they build.
        #[cfg(debug_assertions)]
        same_as_builder(direct, pairs);
        return direct;
    }
    built_object(pairs)
}

/// [`jsonb_object`] through PostgreSQL's builder (`pushJsonbValue`, `JsonbValueToJsonb`).
fn built_object(pairs: &[(&str, Scalar)]) -> Datum {
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
