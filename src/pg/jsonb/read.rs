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
//!
//! Soundness: a [`Jsonb`] is made only by the unsafe [`Jsonb::from_datum`], whose caller vouches
//! that the datum is a jsonb value that outlives the lifetime `'a`; every string a safe method
//! hands out borrows that value for `'a` and no longer. The format is trusted as PostgreSQL
//! wrote it (a jsonb datum has passed `jsonb_in`/`jsonb_recv` or was built by PostgreSQL); the
//! reader only reads at offsets the container's own entries give, within the value.

use crate::pg::backend::Memory;
use event_store_core::{JsonField, NumberText, RawEvent};
use pgrx::pg_sys::{self, Datum};
use std::ffi::CStr;
use std::marker::PhantomData;
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
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

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

/// A jsonb value that stays valid for `'a`.
#[derive(Clone, Copy)]
pub struct Jsonb<'a> {
    /// The datum as given (or detoasted): what is stored back.
    datum: Datum,
    /// The root container (after the varlena header), possibly unaligned.
    root: Container,
    _value: PhantomData<&'a [u8]>,
}

/// A jsonb container: its header, its entries, then its data.
#[derive(Clone, Copy)]
struct Container(*const u8);

/// # Safety
/// `p` must point to 4 readable bytes (any alignment).
unsafe fn read_u32(p: *const u8) -> u32 {
    // SAFETY: the caller's contract; read_unaligned allows any alignment.
    unsafe { p.cast::<u32>().read_unaligned() }
}

/// # Safety
/// `p` must point to 2 readable bytes (any alignment).
unsafe fn read_u16(p: *const u8) -> u16 {
    // SAFETY: the caller's contract; read_unaligned allows any alignment.
    unsafe { p.cast::<u16>().read_unaligned() }
}

fn int_align(offset: usize) -> usize {
    (offset + 3) & !3
}

/// The varlena at `p`: the start of its data and the data's length, when it is inline and
/// uncompressed (short or 4-byte header); `None` otherwise.
///
/// # Safety
/// `p` must point to a varlena header (`postgres.h`'s layouts, little-endian).
unsafe fn inline_varlena(p: *const u8) -> Option<(*const u8, usize)> {
    // SAFETY: the caller's contract: the first byte tells the header's size (1 or 4 bytes),
    // and the length it gives covers the header itself.
    unsafe {
        let first = *p;
        if first & 0x01 == 0x01 {
            // 1-byte header; 0x01 exactly is an external TOAST pointer
            if first == 0x01 {
                return None;
            }
            let total = usize::from((first >> 1) & 0x7F);
            Some((p.add(1), total.saturating_sub(1)))
        } else if first & 0x03 == 0x00 {
            let total = ((read_u32(p) >> 2) & 0x3FFF_FFFF) as usize;
            Some((p.add(4), total.saturating_sub(4)))
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
            // SAFETY: reads the backend's database encoding, set at connection start.
            let utf8 = unsafe { pg_sys::GetDatabaseEncoding() } == pg_sys::pg_enc::PG_UTF8 as i32;
            UTF8_DATABASE.store(if utf8 { 1 } else { 2 }, Ordering::Relaxed);
            utf8
        }
    }
}

/// The methods of a container share one contract.
///
/// # Safety
/// The container must point into a valid jsonb value that stays valid while it is read, and
/// every index passed (`i`, `children`) must be within the container's own entries, as its
/// header gives them.
impl Container {
    /// # Safety
    /// See the `impl`.
    unsafe fn header(self) -> u32 {
        // SAFETY: a container starts with its 4-byte header.
        unsafe { read_u32(self.0) }
    }

    /// # Safety
    /// See the `impl`.
    unsafe fn entry(self, i: usize) -> u32 {
        // SAFETY: the header is followed by one 4-byte JEntry per child; `i` is one of them.
        unsafe { read_u32(self.0.add(4 + 4 * i)) }
    }

    /// Start of the data area, after `children` entries.
    ///
    /// # Safety
    /// See the `impl`.
    unsafe fn data(self, children: usize) -> *const u8 {
        // SAFETY: the data area follows the `children` entries, inside the same value.
        unsafe { self.0.add(4 + 4 * children) }
    }

    /// Offset of entry `i`'s data (`getJsonbOffset`): the lengths before it, back to the
    /// nearest entry that stores its end offset.
    ///
    /// # Safety
    /// See the `impl`.
    unsafe fn offset(self, i: usize) -> usize {
        let mut offset = 0usize;
        let mut j = i;
        while j > 0 {
            j -= 1;
            // SAFETY: j < i, an entry of the container.
            let e = unsafe { self.entry(j) };
            offset += (e & JENTRY_OFFLENMASK) as usize;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        offset
    }

    /// Length of entry `i`'s data (`getJsonbLength`).
    ///
    /// # Safety
    /// See the `impl`.
    unsafe fn length(self, i: usize) -> usize {
        // SAFETY: `i` is an entry of the container (the impl's contract).
        let e = unsafe { self.entry(i) };
        if e & JENTRY_HAS_OFF != 0 {
            // SAFETY: as above.
            (e & JENTRY_OFFLENMASK) as usize - unsafe { self.offset(i) }
        } else {
            (e & JENTRY_OFFLENMASK) as usize
        }
    }

    /// Entry `i` of a container with `children` entries, as a field. Strings borrow the
    /// value for `'a`.
    ///
    /// # Safety
    /// See the `impl`; the value must also stay valid for `'a`.
    unsafe fn field<'a>(self, i: usize, children: usize) -> JsonField<'a> {
        // SAFETY: the impl's contract: the entry's offset and length lie within the data area;
        // a string is valid UTF-8 when the database encoding is UTF-8 (PostgreSQL verifies
        // input encoding), else it is checked; a number or a nested container starts at the
        // int-aligned offset, as jsonb stores them.
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
                        // In another encoding (SQL_ASCII, LATIN1…) a string may hold bytes
                        // that are not UTF-8: reported as such, never read as a str.
                        match std::str::from_utf8(bytes) {
                            Ok(s) => JsonField::String(s),
                            Err(_) => JsonField::NotUtf8,
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
    ///
    /// # Safety
    /// The container must point into a valid jsonb value (the indexes are derived here, from
    /// its header).
    unsafe fn find(self, key: &[u8]) -> Option<(usize, usize)> {
        // SAFETY: an object's header gives its number of pairs; keys are entries 0..pairs and
        // values pairs..2*pairs, so every index used is within the container.
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
///
/// # Safety
/// `p` points to a numeric varlena inside a valid jsonb value.
unsafe fn numeric_field<'a>(p: *const u8) -> JsonField<'a> {
    // SAFETY: the caller's contract; the header's length bounds every digit read (`ndigits`
    // is derived from it), and the header words are read unaligned.
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
        let ndigits = len.saturating_sub(digits) / 2;
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

/// A number's canonical text (fractions, and integers beyond a bigint), from `numeric_out`.
///
/// # Safety
/// `p` points to a numeric varlena inside a jsonb value.
unsafe fn numeric_text<'a>(p: *const u8) -> JsonField<'a> {
    // SAFETY: the caller's contract. numeric_out wants an aligned value, so the (possibly
    // unaligned) numeric is copied out first; both the copy and the text are freed here, and
    // the field keeps its own copy of the text.
    unsafe {
        let aligned = pg_sys::pg_detoast_datum_copy(p.cast_mut().cast());
        let text = pg_sys::DirectFunctionCall1Coll(
            Some(numeric_out_fmgr),
            pg_sys::InvalidOid,
            Datum::from(aligned),
        );
        let c = text.cast_mut_ptr::<std::ffi::c_char>();
        let field = match CStr::from_ptr(c).to_str() {
            Ok(t) => match t.parse::<i64>() {
                Ok(i) => JsonField::Integer(i),
                Err(_) => JsonField::Number(NumberText::new(t)),
            },
            Err(_) => JsonField::Number(NumberText::new("NaN")),
        };
        pg_sys::pfree(c.cast());
        pg_sys::pfree(aligned.cast());
        field
    }
}

impl<'a> Jsonb<'a> {
    /// Reads a jsonb datum, e.g. an element of a jsonb[] or a column value: in place when it is
    /// inline, detoasted into the current memory context when it is compressed or out of line.
    ///
    /// # Safety
    /// `d` must be a non-null jsonb datum that stays valid for `'a`, and the current memory
    /// context must not be reset or deleted during `'a` (it may hold the detoasted copy).
    pub unsafe fn from_datum(d: Datum) -> Jsonb<'a> {
        // SAFETY: the caller's contract; an inline varlena is read in place, anything else is
        // detoasted (a fresh 4-byte-header copy) and read from the copy.
        unsafe {
            let p = d.cast_mut_ptr::<u8>();
            if let Some((data, _)) = inline_varlena(p) {
                return Jsonb {
                    datum: d,
                    root: Container(data),
                    _value: PhantomData,
                };
            }
            let detoasted = pg_sys::pg_detoast_datum(p.cast()).cast::<u8>();
            Jsonb {
                datum: Datum::from(detoasted),
                root: Container(detoasted.add(4)),
                _value: PhantomData,
            }
        }
    }

    /// The datum of the value.
    pub fn datum(&self) -> Datum {
        self.datum
    }

    /// The kind of the top-level value.
    pub fn shape(&self) -> JsonField<'a> {
        // SAFETY: `root` is the value's root container, valid for 'a (from_datum's contract).
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
    /// Strings borrow the jsonb's memory for `'a`.
    pub fn get(&self, key: &CStr) -> JsonField<'a> {
        // SAFETY: `root` is valid for 'a; `find` returns an index within the object.
        unsafe {
            match self.root.find(key.to_bytes()) {
                Some((i, children)) => self.root.field(i, children),
                None => JsonField::Absent,
            }
        }
    }

    /// The value of a top-level key that is an object or array, as a jsonb datum of its own
    /// (a copy in the current memory context).
    pub fn get_container(&self, key: &CStr) -> Option<Datum> {
        // SAFETY: `root` is valid for 'a; the entry's offset and length lie within the value;
        // the copy is a fresh palloc of exactly the header plus the container.
        unsafe {
            let (i, children) = self.root.find(key.to_bytes())?;
            if self.root.entry(i) & JENTRY_TYPEMASK != JENTRY_ISCONTAINER {
                return None;
            }
            let offset = self.root.offset(i);
            let start = int_align(offset);
            let len = self.root.length(i).checked_sub(start - offset)?;
            let src = self.root.data(children).add(start);
            // what JsonbValueToJsonb does for a binary value: copy the container behind a header
            let copy = pg_sys::palloc(4 + len).cast::<u8>();
            copy.cast::<u32>().write(((4 + len) as u32) << 2);
            std::ptr::copy_nonoverlapping(src, copy.add(4), len);
            Some(Datum::from(copy))
        }
    }

    /// The value of key `key` of the object at top-level key `outer`, read in place
    /// (`Absent` when either is missing or `outer` is not an object).
    pub fn get_in(&self, outer: &CStr, key: &CStr) -> JsonField<'a> {
        // SAFETY: `root` is valid for 'a; `find` returns an index within the root; a container
        // entry's value starts at its int-aligned offset inside the value (as `field` reads it),
        // and is searched only when its header says it is an object.
        unsafe {
            let Some((i, children)) = self.root.find(outer.to_bytes()) else {
                return JsonField::Absent;
            };
            if self.root.entry(i) & JENTRY_TYPEMASK != JENTRY_ISCONTAINER {
                return JsonField::Absent;
            }
            let inner = Container(self.root.data(children).add(int_align(self.root.offset(i))));
            if inner.header() & JB_FOBJECT == 0 {
                return JsonField::Absent;
            }
            match inner.find(key.to_bytes()) {
                Some((j, inner_children)) => inner.field(j, inner_children),
                None => JsonField::Absent,
            }
        }
    }

    /// The JSON text of the value (PostgreSQL's own printer, `JsonbToCString`).
    pub fn to_text(&self) -> String {
        // SAFETY: the datum is a jsonb value valid for 'a (the type's invariant).
        unsafe { jsonb_to_string(self.datum) }
    }

    /// A fresh, untoasted copy of the value in `into` (a context of the call: see `Memory`),
    /// which outlives the value copied.
    pub fn copy_into(&self, into: Memory) -> Jsonb<'a> {
        self.copy_to(into.raw())
    }

    /// A fresh, untoasted copy of the value in the call's memory, where it lives until the call
    /// returns (a value read from a connection that ends before).
    pub fn copy_to_call<'m>(&self, memory: crate::pg::call::CallMemory<'m>) -> Jsonb<'m> {
        self.copy_to(memory.raw())
    }

    fn copy_to<'m>(&self, into: pg_sys::MemoryContext) -> Jsonb<'m> {
        // SAFETY: the datum is a jsonb value valid for 'a; `into` is a live context of the call
        // (the callers' `Memory` or `CallMemory`, which outlive 'm); pg_detoast_datum_copy
        // returns a fresh palloc'd copy in the current context, which is `into` during the
        // call; the copy is inline (a 4-byte header), so reading it allocates nothing more.
        unsafe {
            let previous = pg_sys::MemoryContextSwitchTo(into);
            let copy = pg_sys::pg_detoast_datum_copy(self.datum.cast_mut_ptr());
            pg_sys::MemoryContextSwitchTo(previous);
            Jsonb::from_datum(Datum::from(copy))
        }
    }

    /// The keys the store reads from an event object.
    pub fn raw_event(&self) -> RawEvent<'a> {
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

/// The JSON text of a jsonb datum (PostgreSQL's own printer, `JsonbToCString`).
///
/// # Safety
/// `d` must be a valid jsonb datum.
pub unsafe fn jsonb_to_string(d: Datum) -> String {
    // SAFETY: the caller's contract; the detoasted value is a Jsonb whose root container spans
    // its data; JsonbToCString returns a palloc'd NUL-terminated string, copied and freed.
    unsafe {
        let j = pg_sys::pg_detoast_datum(d.cast_mut_ptr()).cast::<pg_sys::Jsonb>();
        let len = pgrx::varsize_any(j.cast()) as i32;
        let c = pg_sys::JsonbToCString(std::ptr::null_mut(), &mut (*j).root, len);
        let s = std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned();
        pg_sys::pfree(c.cast());
        s
    }
}
