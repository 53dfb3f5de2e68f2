//! Reads the top-level keys of an event object straight from PostgreSQL's binary jsonb, without
//! turning it into text or a serde value, and hands them to the core as [`JsonField`]s.
//!
//! Appends store the caller's jsonb datums unchanged and replay folds a million of them, so this
//! is on every hot path. It reads the on-disk format (`utils/jsonb.h`, `utils/numeric.c`, stable
//! since PostgreSQL 9.4) in Rust: a key lookup is a binary search in the object's sorted key
//! table, an integer is decoded from its base-10000 digits, and a short-header (inline) value is
//! read in place, unaligned, instead of being copied out. Calling PostgreSQL's own functions for
//! this cost a guarded FFI call (a `sigsetjmp`) per key and a copy per value, which was a third
//! of a replay's time. PostgreSQL is called only to detoast a compressed or out-of-line value and
//! to render a non-integer number as text.

use crate::core::{JsonField, RawEvent};
use pgrx::pg_sys::{self, Datum};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_endian = "big")]
compile_error!("jsonb.rs reads varlena headers in their little-endian layout");

unsafe extern "C-unwind" {
    /// The fmgr entry of `numeric_out`, unwrapped, for `DirectFunctionCall1Coll` (which is the
    /// guarded call).
    #[link_name = "numeric_out"]
    fn numeric_out_fmgr(fcinfo: pg_sys::FunctionCallInfo) -> Datum;
}

// utils/jsonb.h
const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;

// utils/adt/numeric.c
const NUMERIC_SIGN_MASK: u16 = 0xC000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_SHORT: u16 = 0x8000;
const NUMERIC_SPECIAL: u16 = 0xC000;
const NUMERIC_SHORT_SIGN_MASK: u16 = 0x2000;
const NUMERIC_SHORT_DSCALE_MASK: u16 = 0x1F80;
const NUMERIC_SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const NUMERIC_SHORT_WEIGHT_MASK: u16 = 0x003F;
const NUMERIC_DSCALE_MASK: u16 = 0x3FFF;

/// A jsonb value, valid while the datum it was made from is.
#[derive(Clone, Copy)]
pub struct Jsonb {
    /// The datum as given (or detoasted): what is stored back.
    datum: Datum,
    /// The root container (after the varlena header), possibly unaligned.
    root: Container,
}

/// A jsonb container: its header, its entries, then its data.
#[derive(Clone, Copy)]
struct Container(*const u8);

unsafe fn read_u32(p: *const u8) -> u32 {
    unsafe { p.cast::<u32>().read_unaligned() }
}

unsafe fn read_u16(p: *const u8) -> u16 {
    unsafe { p.cast::<u16>().read_unaligned() }
}

fn int_align(offset: usize) -> usize {
    (offset + 3) & !3
}

/// The varlena at `p`: the start of its data and the data's length, when it is inline and
/// uncompressed (short or 4-byte header); `None` otherwise.
unsafe fn inline_varlena(p: *const u8) -> Option<(*const u8, usize)> {
    unsafe {
        let first = *p;
        if first & 0x01 == 0x01 {
            // 1-byte header; 0x01 exactly is an external TOAST pointer
            if first == 0x01 {
                return None;
            }
            let total = usize::from((first >> 1) & 0x7F);
            Some((p.add(1), total - 1))
        } else if first & 0x03 == 0x00 {
            let total = ((read_u32(p) >> 2) & 0x3FFF_FFFF) as usize;
            Some((p.add(4), total - 4))
        } else {
            None
        }
    }
}

/// Whether the database encoding is UTF-8 (then jsonb strings are valid UTF-8): 0 unknown,
/// 1 yes, 2 no. A backend serves one database, so it is looked up once.
static UTF8_DATABASE: AtomicU8 = AtomicU8::new(0);

fn utf8_database() -> bool {
    match UTF8_DATABASE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let utf8 = unsafe { pg_sys::GetDatabaseEncoding() } == pg_sys::pg_enc::PG_UTF8 as i32;
            UTF8_DATABASE.store(if utf8 { 1 } else { 2 }, Ordering::Relaxed);
            utf8
        }
    }
}

impl Container {
    unsafe fn header(self) -> u32 {
        unsafe { read_u32(self.0) }
    }

    unsafe fn entry(self, i: usize) -> u32 {
        unsafe { read_u32(self.0.add(4 + 4 * i)) }
    }

    /// Start of the data area, after `children` entries.
    unsafe fn data(self, children: usize) -> *const u8 {
        unsafe { self.0.add(4 + 4 * children) }
    }

    /// Offset of entry `i`'s data (`getJsonbOffset`): the lengths before it, back to the
    /// nearest entry that stores its end offset.
    unsafe fn offset(self, i: usize) -> usize {
        let mut offset = 0usize;
        let mut j = i;
        while j > 0 {
            j -= 1;
            let e = unsafe { self.entry(j) };
            offset += (e & JENTRY_OFFLENMASK) as usize;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        offset
    }

    /// Length of entry `i`'s data (`getJsonbLength`).
    unsafe fn length(self, i: usize) -> usize {
        let e = unsafe { self.entry(i) };
        if e & JENTRY_HAS_OFF != 0 {
            (e & JENTRY_OFFLENMASK) as usize - unsafe { self.offset(i) }
        } else {
            (e & JENTRY_OFFLENMASK) as usize
        }
    }

    /// Entry `i` of a container with `children` entries, as a field.
    unsafe fn field<'a>(self, i: usize, children: usize) -> JsonField<'a> {
        unsafe {
            let e = self.entry(i);
            let offset = self.offset(i);
            let data = self.data(children);
            match e & JENTRY_TYPEMASK {
                JENTRY_ISSTRING => {
                    let bytes = std::slice::from_raw_parts(data.add(offset), self.length(i));
                    if utf8_database() {
                        JsonField::String(std::str::from_utf8_unchecked(bytes))
                    } else {
                        // In another encoding a non-ASCII value is reported as not being the
                        // expected kind.
                        match std::str::from_utf8(bytes) {
                            Ok(s) => JsonField::String(s),
                            Err(_) => JsonField::Array,
                        }
                    }
                }
                JENTRY_ISNUMERIC => numeric_field(data.add(int_align(offset))),
                JENTRY_ISBOOL_FALSE => JsonField::Bool(false),
                JENTRY_ISBOOL_TRUE => JsonField::Bool(true),
                JENTRY_ISNULL => JsonField::Null,
                _ => {
                    let inner = Container(data.add(int_align(offset)));
                    if inner.header() & JB_FOBJECT != 0 {
                        JsonField::Object
                    } else {
                        JsonField::Array
                    }
                }
            }
        }
    }

    /// Index of the value of `key` in an object (`getKeyJsonValueFromContainer`: keys are
    /// sorted by length, then bytes), and the object's number of entries.
    unsafe fn find(self, key: &[u8]) -> Option<(usize, usize)> {
        unsafe {
            let header = self.header();
            if header & JB_FOBJECT == 0 {
                return None;
            }
            let pairs = (header & JB_CMASK) as usize;
            let children = pairs * 2;
            let data = self.data(children);
            let (mut low, mut high) = (0usize, pairs);
            while low < high {
                let mid = low + (high - low) / 2;
                let len = self.length(mid);
                let order = len.cmp(&key.len()).then_with(|| {
                    std::slice::from_raw_parts(data.add(self.offset(mid)), len).cmp(key)
                });
                match order {
                    std::cmp::Ordering::Equal => return Some((mid + pairs, children)),
                    std::cmp::Ordering::Less => low = mid + 1,
                    std::cmp::Ordering::Greater => high = mid,
                }
            }
            None
        }
    }
}

/// A jsonb number: `Integer` when it is an integer (display scale 0) that fits a bigint, decoded
/// from its digits; otherwise its canonical text, from `numeric_out`.
unsafe fn numeric_field<'a>(p: *const u8) -> JsonField<'a> {
    unsafe {
        let Some((body, len)) = inline_varlena(p) else {
            return numeric_text(p);
        };
        let head = read_u16(body);
        let (negative, dscale, weight, digits) = match head & NUMERIC_SIGN_MASK {
            NUMERIC_SPECIAL => return numeric_text(p),
            NUMERIC_SHORT => {
                let magnitude = i32::from(head & NUMERIC_SHORT_WEIGHT_MASK);
                let weight = if head & NUMERIC_SHORT_WEIGHT_SIGN_MASK != 0 {
                    magnitude | !i32::from(NUMERIC_SHORT_WEIGHT_MASK)
                } else {
                    magnitude
                };
                (
                    head & NUMERIC_SHORT_SIGN_MASK != 0,
                    (head & NUMERIC_SHORT_DSCALE_MASK) >> 7,
                    weight,
                    2,
                )
            }
            sign => (
                sign == NUMERIC_NEG,
                head & NUMERIC_DSCALE_MASK,
                i32::from(read_u16(body.add(2)) as i16),
                4,
            ),
        };
        if dscale != 0 {
            return numeric_text(p);
        }
        let ndigits = (len - digits) / 2;
        let digit = |k: usize| i64::from(read_u16(body.add(digits + 2 * k)) as i16);
        let mut value: i64 = 0;
        for k in 0..=weight.max(-1) {
            let d = if (k as usize) < ndigits {
                digit(k as usize)
            } else {
                0
            };
            match value.checked_mul(10_000).and_then(|v| v.checked_add(d)) {
                Some(v) => value = v,
                None => return numeric_text(p),
            }
        }
        // digits after the decimal point (possible only with a display scale, but be exact)
        let whole = (weight + 1).max(0) as usize;
        if (whole..ndigits).any(|k| digit(k) != 0) {
            return numeric_text(p);
        }
        if negative {
            value = -value;
        }
        JsonField::Integer(value)
    }
}

/// A number's canonical text (fractions, and integers beyond a bigint).
unsafe fn numeric_text<'a>(p: *const u8) -> JsonField<'a> {
    unsafe {
        // numeric_out wants an aligned value; copy it out of the (possibly unaligned) jsonb
        let aligned = pg_sys::pg_detoast_datum_copy(p.cast_mut().cast());
        let text = pg_sys::DirectFunctionCall1Coll(
            Some(numeric_out_fmgr),
            pg_sys::InvalidOid,
            Datum::from(aligned),
        );
        let c = CStr::from_ptr(text.cast_mut_ptr::<std::ffi::c_char>());
        let text = c.to_str().unwrap_or("NaN");
        match text.parse::<i64>() {
            Ok(i) => JsonField::Integer(i),
            Err(_) => JsonField::Number(text),
        }
    }
}

impl Jsonb {
    /// Reads a jsonb datum, e.g. an element of a jsonb[] or a column value: in place when it is
    /// inline, detoasted when it is compressed or out of line.
    ///
    /// # Safety
    /// `d` must be a non-null jsonb datum that outlives the returned value.
    pub unsafe fn from_datum(d: Datum) -> Jsonb {
        unsafe {
            let p = d.cast_mut_ptr::<u8>();
            if let Some((data, _)) = inline_varlena(p) {
                return Jsonb {
                    datum: d,
                    root: Container(data),
                };
            }
            let detoasted = pg_sys::pg_detoast_datum(p.cast()).cast::<u8>();
            Jsonb {
                datum: Datum::from(detoasted),
                root: Container(detoasted.add(4)),
            }
        }
    }

    /// The datum of the value.
    pub fn datum(self) -> Datum {
        self.datum
    }

    /// The kind of the top-level value.
    pub fn shape<'a>(self) -> JsonField<'a> {
        unsafe {
            let header = self.root.header();
            if header & JB_FSCALAR != 0 {
                // a raw scalar is stored as a one-element array
                self.root.field(0, 1)
            } else if header & JB_FOBJECT != 0 {
                JsonField::Object
            } else {
                JsonField::Array
            }
        }
    }

    /// The value of a top-level key of an object (`Absent` when missing or not an object).
    /// Strings borrow the jsonb's memory.
    pub fn get<'a>(self, key: &CStr) -> JsonField<'a> {
        unsafe {
            match self.root.find(key.to_bytes()) {
                Some((i, children)) => self.root.field(i, children),
                None => JsonField::Absent,
            }
        }
    }

    /// The value of a top-level key that is an object or array, as a jsonb datum of its own
    /// (in the current memory context).
    pub fn get_container(self, key: &CStr) -> Option<Datum> {
        unsafe {
            let (i, children) = self.root.find(key.to_bytes())?;
            if self.root.entry(i) & JENTRY_TYPEMASK != 0x5000_0000 {
                return None;
            }
            let offset = self.root.offset(i);
            let start = int_align(offset);
            let len = self.root.length(i) - (start - offset);
            let src = self.root.data(children).add(start);
            // what JsonbValueToJsonb does for a binary value: copy the container behind a header
            let copy = pg_sys::palloc(4 + len).cast::<u8>();
            copy.cast::<u32>().write(((4 + len) as u32) << 2);
            std::ptr::copy_nonoverlapping(src, copy.add(4), len);
            Some(Datum::from(copy))
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
