//! The span records of the store (docs/reference.md §7): the fixed-size [`SpanRecord`] a finished span
//! becomes, which crosses from a backend to the export worker through shared memory. A record
//! carries its span's name and attributes ([`AttrValue`]) as the code declared them
//! (`#[sql_function(span = ...)]`, `#[instrument]`), so there is no list of known names or
//! fields to keep in step with the declarations: whatever a span declares is exported.
//!
//! Pure Rust, tested without PostgreSQL: [`super::subscriber`] fills records from `tracing`
//! spans, [`super::ring`] carries them, [`super::otlp`] turns them into OpenTelemetry spans.

/// An attribute value a record can carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    /// An integer (`i64`; larger `u64`s are clamped).
    Int(i64),
    /// A uuid (`aggregate_id`, `account_id`, any field recorded as a `u128`), exported as text.
    Uuid([u8; 16]),
    /// A text value: a constant field (`db.system = "postgresql"`) or a text argument (the
    /// subscription's name), cut to [`MAX_TEXT_BYTES`].
    Str(&'a str),
    /// A boolean.
    Bool(bool),
    /// A floating-point number.
    F64(f64),
}

const TAG_INT: u8 = 1;
const TAG_UUID: u8 = 2;
const TAG_STR: u8 = 3;
const TAG_BOOL: u8 = 4;
const TAG_F64: u8 = 5;

/// Bytes of a span's name a record keeps (`#[sql_function]` refuses longer names at build
/// time; a longer `#[instrument]` name is cut at a character boundary).
pub const NAME_BYTES: usize = 48;
/// Bytes of encoded attributes a record holds; an attribute that does not fit is dropped (a
/// record's size is fixed). The largest span of the store (a command, with its ids, amounts,
/// versions and constant fields) takes about 170.
pub const ATTR_BYTES: usize = 320;
/// Bytes kept of a text attribute's value.
pub const MAX_TEXT_BYTES: usize = 64;
/// Bytes kept of an error message (longer ones are cut at a character boundary).
pub const MESSAGE_BYTES: usize = 160;
/// Bytes kept of the database name (PostgreSQL names have at most 63).
pub const DB_NAME_BYTES: usize = 64;

const FLAG_ERROR: u8 = 1;
const FLAG_PARENT_REMOTE: u8 = 2;
const FLAG_SQLSTATE: u8 = 16;

/// One finished span, as backends write it into shared memory: fixed size, no pointers, so a
/// write is one copy and the worker can read it in another process.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRecord {
    /// W3C trace id.
    pub trace_id: [u8; 16],
    /// This span's id.
    pub span_id: [u8; 8],
    /// The parent span's id; all zero for a root span.
    pub parent_id: [u8; 8],
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_ns: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_ns: u64,
    /// Process id of the backend that recorded the span.
    pub pid: i32,
    /// Bytes used of `attrs`.
    attrs_len: u16,
    name_len: u8,
    flags: u8,
    /// SQLSTATE of a failed call.
    sqlstate: [u8; 5],
    message_len: u8,
    db_name_len: u8,
    /// The span's name as declared (`#[sql_function(span = ...)]`, `#[instrument(name = ...)]`):
    /// the record carries it, so no list of names stands between a declaration and the export.
    name: [u8; NAME_BYTES],
    /// The attributes, in the order first set: each is the key's length (one byte), the key,
    /// a type tag, and the value (8 bytes; 16 for a uuid; a length byte and the text).
    attrs: [u8; ATTR_BYTES],
    message: [u8; MESSAGE_BYTES],
    db_name: [u8; DB_NAME_BYTES],
}

impl SpanRecord {
    /// A record for span `name` (cut to [`NAME_BYTES`]) with no attributes, status OK.
    pub fn new(name: &str, trace_id: [u8; 16], span_id: [u8; 8], parent_id: [u8; 8]) -> Self {
        let mut r = SpanRecord {
            trace_id,
            span_id,
            parent_id,
            start_unix_ns: 0,
            end_unix_ns: 0,
            pid: 0,
            attrs_len: 0,
            name_len: 0,
            flags: 0,
            sqlstate: [0; 5],
            message_len: 0,
            db_name_len: 0,
            name: [0; NAME_BYTES],
            attrs: [0; ATTR_BYTES],
            message: [0; MESSAGE_BYTES],
            db_name: [0; DB_NAME_BYTES],
        };
        r.name_len = copy_truncated(&mut r.name, name) as u8;
        r
    }

    /// The span's name.
    pub fn name(&self) -> &str {
        // a record is read from shared memory: a length is never trusted to index
        let len = (self.name_len as usize).min(NAME_BYTES);
        std::str::from_utf8(&self.name[..len]).unwrap_or("")
    }

    /// Marks the parent as a span of another process (the client's).
    pub fn set_parent_remote(&mut self, remote: bool) {
        self.set_flag(FLAG_PARENT_REMOTE, remote);
    }

    /// Whether the parent is the client's span.
    pub fn parent_remote(&self) -> bool {
        self.flags & FLAG_PARENT_REMOTE != 0
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Sets attribute `key` (replacing an earlier value of the same key). An attribute that
    /// does not fit in the record any more is dropped: a record's size is fixed.
    pub fn set_attr(&mut self, key: &str, value: AttrValue<'_>) {
        if key.is_empty() || key.len() > u8::MAX as usize {
            return;
        }
        self.remove_attr(key);
        let text = match value {
            AttrValue::Str(t) => cut(t, MAX_TEXT_BYTES),
            _ => "",
        };
        let (tag, size) = match value {
            AttrValue::Int(_) => (TAG_INT, 8),
            AttrValue::Uuid(_) => (TAG_UUID, 16),
            AttrValue::Str(_) => (TAG_STR, 1 + text.len()),
            AttrValue::Bool(_) => (TAG_BOOL, 1),
            AttrValue::F64(_) => (TAG_F64, 8),
        };
        let at = (self.attrs_len as usize).min(ATTR_BYTES);
        let end = at + 1 + key.len() + 1 + size;
        if end > ATTR_BYTES {
            return;
        }
        // written in place: this runs in the backend for every field of every span
        let out = &mut self.attrs[at..end];
        out[0] = key.len() as u8;
        out[1..1 + key.len()].copy_from_slice(key.as_bytes());
        out[1 + key.len()] = tag;
        let v = &mut out[2 + key.len()..];
        match value {
            AttrValue::Int(i) => v.copy_from_slice(&i.to_le_bytes()),
            AttrValue::Uuid(id) => v.copy_from_slice(&id),
            AttrValue::Str(_) => {
                v[0] = text.len() as u8;
                v[1..].copy_from_slice(text.as_bytes());
            }
            AttrValue::Bool(b) => v[0] = b as u8,
            AttrValue::F64(f) => v.copy_from_slice(&f.to_le_bytes()),
        }
        self.attrs_len = end as u16;
    }

    /// Removes attribute `key`, if set.
    fn remove_attr(&mut self, key: &str) {
        let Some((start, end)) = self.entries().find(|e| e.0 == key).map(|e| (e.2, e.3)) else {
            return;
        };
        let len = (self.attrs_len as usize).min(ATTR_BYTES);
        self.attrs.copy_within(end..len, start);
        self.attrs_len = (len - (end - start)) as u16;
    }

    /// The attributes with where each one's entry starts and ends in `attrs`.
    fn entries(&self) -> impl Iterator<Item = (&str, AttrValue<'_>, usize, usize)> + '_ {
        let buf = &self.attrs[..(self.attrs_len as usize).min(ATTR_BYTES)];
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let start = at;
            let klen = *buf.get(at)? as usize;
            let key = std::str::from_utf8(buf.get(at + 1..at + 1 + klen)?).ok()?;
            at += 1 + klen;
            let tag = *buf.get(at)?;
            at += 1;
            let eight = |at: usize| -> Option<[u8; 8]> { buf.get(at..at + 8)?.try_into().ok() };
            let value = match tag {
                TAG_INT => {
                    let v = i64::from_le_bytes(eight(at)?);
                    at += 8;
                    AttrValue::Int(v)
                }
                TAG_UUID => {
                    let id: [u8; 16] = buf.get(at..at + 16)?.try_into().ok()?;
                    at += 16;
                    AttrValue::Uuid(id)
                }
                TAG_STR => {
                    let len = *buf.get(at)? as usize;
                    let text = std::str::from_utf8(buf.get(at + 1..at + 1 + len)?).ok()?;
                    at += 1 + len;
                    AttrValue::Str(text)
                }
                TAG_BOOL => {
                    let b = *buf.get(at)? != 0;
                    at += 1;
                    AttrValue::Bool(b)
                }
                TAG_F64 => {
                    let v = f64::from_le_bytes(eight(at)?);
                    at += 8;
                    AttrValue::F64(v)
                }
                _ => return None,
            };
            Some((key, value, start, at))
        })
    }

    /// The attributes set, in the order they were first set (a replaced one moves last).
    pub fn attrs(&self) -> impl Iterator<Item = (&str, AttrValue<'_>)> + '_ {
        self.entries().map(|(k, v, _, _)| (k, v))
    }

    /// The value of attribute `key`, if set.
    pub fn attr(&self, key: &str) -> Option<AttrValue<'_>> {
        self.attrs().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Marks the span failed with `message` (cut to [`MESSAGE_BYTES`]).
    pub fn set_failed(&mut self, message: &str) {
        self.set_flag(FLAG_ERROR, true);
        self.message_len = copy_truncated(&mut self.message, message) as u8;
    }

    /// Sets the SQLSTATE of a failed call (`db.response.status_code`).
    pub fn set_sqlstate(&mut self, sqlstate: &str) {
        self.set_flag(FLAG_SQLSTATE, true);
        self.sqlstate = [b'0'; 5];
        for (d, s) in self.sqlstate.iter_mut().zip(sqlstate.bytes()) {
            *d = s;
        }
    }

    /// Marks the span failed with `sqlstate` and `message`.
    pub fn set_error(&mut self, sqlstate: &str, message: &str) {
        self.set_failed(message);
        self.set_sqlstate(sqlstate);
    }

    /// The message of a failed span.
    pub fn failure(&self) -> Option<&str> {
        (self.flags & FLAG_ERROR != 0)
            .then(|| std::str::from_utf8(&self.message[..self.message_len as usize]).unwrap_or(""))
    }

    /// The SQLSTATE of a failed call, if recorded.
    pub fn sqlstate(&self) -> Option<&str> {
        (self.flags & FLAG_SQLSTATE != 0)
            .then(|| std::str::from_utf8(&self.sqlstate).unwrap_or("XX000"))
    }

    /// Sets the database name (cut to [`DB_NAME_BYTES`]).
    pub fn set_db_name(&mut self, name: &str) {
        self.db_name_len = copy_truncated(&mut self.db_name, name) as u8;
    }

    /// The database name.
    pub fn db_name(&self) -> &str {
        std::str::from_utf8(&self.db_name[..self.db_name_len as usize]).unwrap_or("")
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Copies as much of `s` as fits into `dst`, cut at a character boundary; returns the length.
pub(crate) fn copy_truncated(dst: &mut [u8], s: &str) -> usize {
    let s = cut(s, dst.len());
    dst[..s.len()].copy_from_slice(s.as_bytes());
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_record_round_trips_its_fields() {
        let mut r = SpanRecord::new("command.deposit", [1; 16], [2; 8], [3; 8]);
        assert_eq!(r.name(), "command.deposit");
        assert_eq!(r.failure(), None);
        assert_eq!(r.sqlstate(), None);
        assert_eq!(r.attr("aggregate_id"), None);
        r.set_attr("aggregate_id", AttrValue::Uuid([9; 16]));
        r.set_attr("amount_cents", AttrValue::Int(500));
        r.set_attr("expected_version", AttrValue::Int(-1));
        r.set_attr("amount_cents", AttrValue::Int(700)); // replaces, moves last
        r.set_attr("event_sourcing.operation", AttrValue::Str("command"));
        r.set_attr("retried", AttrValue::Bool(true));
        r.set_attr("ratio", AttrValue::F64(0.5));
        assert_eq!(
            r.attrs().collect::<Vec<_>>(),
            vec![
                ("aggregate_id", AttrValue::Uuid([9; 16])),
                ("expected_version", AttrValue::Int(-1)),
                ("amount_cents", AttrValue::Int(700)),
                ("event_sourcing.operation", AttrValue::Str("command")),
                ("retried", AttrValue::Bool(true)),
                ("ratio", AttrValue::F64(0.5)),
            ]
        );
        r.set_parent_remote(true);
        assert!(r.parent_remote());
        let long = "é".repeat(MESSAGE_BYTES);
        r.set_error("ES101", &long);
        assert_eq!(r.sqlstate(), Some("ES101"));
        let msg = r.failure().unwrap();
        assert!(msg.len() <= MESSAGE_BYTES && msg.chars().all(|c| c == 'é'));
        r.set_db_name("bank");
        assert_eq!(r.db_name(), "bank");
        assert!(
            std::mem::size_of::<SpanRecord>() <= 704,
            "a record stays small: {}",
            std::mem::size_of::<SpanRecord>()
        );
    }

    #[test]
    fn long_text_is_cut_and_a_full_record_drops_what_does_not_fit() {
        let mut r = SpanRecord::new(&"n".repeat(NAME_BYTES + 10), [1; 16], [2; 8], [0; 8]);
        assert_eq!(r.name().len(), NAME_BYTES);
        r.set_attr("subscription", AttrValue::Str(&"s".repeat(200)));
        assert_eq!(
            r.attr("subscription"),
            Some(AttrValue::Str(&"s".repeat(MAX_TEXT_BYTES)))
        );
        let mut kept = 0;
        for i in 0..100 {
            r.set_attr(&format!("k{i}"), AttrValue::Int(i));
            kept += usize::from(r.attr(&format!("k{i}")).is_some());
        }
        assert!(kept > 10 && kept < 100, "{kept}");
        assert_eq!(r.attrs().count(), kept + 1, "nothing half-written");
        assert_eq!(r.attr("k0"), Some(AttrValue::Int(0)));
    }
}
