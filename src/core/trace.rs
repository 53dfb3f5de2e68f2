//! The pure part of tracing (SPEC §7): W3C trace context, sqlcommenter comments, root-trace
//! sampling, span ids, the fixed-size span record, and the lock-free shared span ring.
//!
//! It lives in the core because every piece is a decision or a data structure that can be tested
//! without PostgreSQL: [`super::spans`] fills records from `tracing` spans, the SQL layer
//! (`crate::trace`) places the ring in shared memory and the worker drains it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The spans the store records. The numeric value is what a [`SpanRecord`] stores, so a
/// variant's value never changes once released.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanName {
    /// `es.append_events`, and the append step of every command.
    AppendEvents = 1,
    /// `es.load_events`, and the tail a command loads after its snapshot.
    LoadEvents = 2,
    /// `es.stream_version`.
    StreamVersion = 3,
    /// `es.read_all`.
    ReadAll = 4,
    /// `es.save_snapshot`, and a command's automatic snapshot.
    SnapshotSave = 5,
    /// `es.load_snapshot`, and a command's snapshot lookup.
    SnapshotLoad = 6,
    /// A command folding the events after its snapshot into the account state.
    AccountReplay = 7,
    /// `es.open_account`.
    OpenAccount = 8,
    /// `es.deposit`.
    Deposit = 9,
    /// `es.withdraw`.
    Withdraw = 10,
    /// `es.freeze_account`.
    FreezeAccount = 11,
    /// `es.close_account`.
    CloseAccount = 12,
    /// `es.account_state` (time travel).
    AccountState = 13,
    /// `es.account_history` (audit).
    AccountHistory = 14,
}

impl SpanName {
    /// Every name, for lookups by number.
    pub const ALL: [SpanName; 14] = [
        SpanName::AppendEvents,
        SpanName::LoadEvents,
        SpanName::StreamVersion,
        SpanName::ReadAll,
        SpanName::SnapshotSave,
        SpanName::SnapshotLoad,
        SpanName::AccountReplay,
        SpanName::OpenAccount,
        SpanName::Deposit,
        SpanName::Withdraw,
        SpanName::FreezeAccount,
        SpanName::CloseAccount,
        SpanName::AccountState,
        SpanName::AccountHistory,
    ];

    /// The span's name as exported (the seed's names where it has one).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanName::AppendEvents => "event_store.append_events",
            SpanName::LoadEvents => "event_store.load_events",
            SpanName::StreamVersion => "event_store.stream_version",
            SpanName::ReadAll => "event_store.read_all",
            SpanName::SnapshotSave => "snapshot_store.save",
            SpanName::SnapshotLoad => "snapshot_store.load",
            SpanName::AccountReplay => "account.replay",
            SpanName::OpenAccount => "command.open_account",
            SpanName::Deposit => "command.deposit",
            SpanName::Withdraw => "command.withdraw",
            SpanName::FreezeAccount => "command.freeze_account",
            SpanName::CloseAccount => "command.close_account",
            SpanName::AccountState => "account.state",
            SpanName::AccountHistory => "account.history",
        }
    }

    /// The name stored in a record, if it is one this version knows.
    pub fn from_u8(v: u8) -> Option<SpanName> {
        SpanName::ALL.into_iter().find(|n| *n as u8 == v)
    }

    /// The name a `tracing` span was declared with, if it is one of the store's.
    pub fn from_name(name: &str) -> Option<SpanName> {
        SpanName::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

/// The string attributes a span can carry: the constant fields of the seed's `#[instrument]`s.
/// A record stores which ones its span declared as bits, so it stays fixed-size; the value is
/// the bit, so a variant's value never changes once released.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticAttr {
    /// `db.system = "postgresql"`.
    DbSystem = 0,
    /// `db.operation = "INSERT"`.
    DbInsert = 1,
    /// `db.operation = "SELECT"`.
    DbSelect = 2,
    /// `event_sourcing.operation = "append"`.
    OpAppend = 3,
    /// `event_sourcing.operation = "command"`.
    OpCommand = 4,
    /// `event_sourcing.operation = "replay"`.
    OpReplay = 5,
    /// `event_sourcing.optimization = "snapshot"`.
    OptSnapshot = 6,
}

impl StaticAttr {
    const ALL: [StaticAttr; 7] = [
        StaticAttr::DbSystem,
        StaticAttr::DbInsert,
        StaticAttr::DbSelect,
        StaticAttr::OpAppend,
        StaticAttr::OpCommand,
        StaticAttr::OpReplay,
        StaticAttr::OptSnapshot,
    ];

    /// The attribute as exported.
    pub fn key_value(self) -> (&'static str, &'static str) {
        match self {
            StaticAttr::DbSystem => ("db.system", "postgresql"),
            StaticAttr::DbInsert => ("db.operation", "INSERT"),
            StaticAttr::DbSelect => ("db.operation", "SELECT"),
            StaticAttr::OpAppend => ("event_sourcing.operation", "append"),
            StaticAttr::OpCommand => ("event_sourcing.operation", "command"),
            StaticAttr::OpReplay => ("event_sourcing.operation", "replay"),
            StaticAttr::OptSnapshot => ("event_sourcing.optimization", "snapshot"),
        }
    }

    /// The attribute a field `key = value` stands for, if it is one a record can carry.
    pub fn find(key: &str, value: &str) -> Option<StaticAttr> {
        StaticAttr::ALL
            .into_iter()
            .find(|a| a.key_value() == (key, value))
    }
}

/// Numeric span attributes. The value is what a record stores.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumAttr {
    /// `expected_version` (absent when the caller passed NULL).
    ExpectedVersion = 1,
    /// `events_count`.
    EventsCount = 2,
    /// `amount_cents`.
    AmountCents = 3,
    /// `version` (of a snapshot).
    Version = 4,
    /// `from_version`.
    FromVersion = 5,
    /// `at_version`.
    AtVersion = 6,
    /// `after_position`.
    AfterPosition = 7,
    /// `initial_balance_cents`.
    InitialBalanceCents = 8,
    /// `new_version`: the stream's version after an append.
    NewVersion = 9,
}

impl NumAttr {
    /// Every attribute, for lookups.
    pub const ALL: [NumAttr; 9] = [
        NumAttr::ExpectedVersion,
        NumAttr::EventsCount,
        NumAttr::AmountCents,
        NumAttr::Version,
        NumAttr::FromVersion,
        NumAttr::AtVersion,
        NumAttr::AfterPosition,
        NumAttr::InitialBalanceCents,
        NumAttr::NewVersion,
    ];

    /// The attribute key as exported.
    pub fn key(self) -> &'static str {
        match self {
            NumAttr::ExpectedVersion => "expected_version",
            NumAttr::EventsCount => "events_count",
            NumAttr::AmountCents => "amount_cents",
            NumAttr::Version => "version",
            NumAttr::FromVersion => "from_version",
            NumAttr::AtVersion => "at_version",
            NumAttr::AfterPosition => "after_position",
            NumAttr::InitialBalanceCents => "initial_balance_cents",
            NumAttr::NewVersion => "new_version",
        }
    }

    fn from_u8(v: u8) -> Option<NumAttr> {
        NumAttr::ALL.into_iter().find(|n| *n as u8 == v)
    }

    /// The attribute a field named `key` records, if it is one.
    pub fn from_key(key: &str) -> Option<NumAttr> {
        NumAttr::ALL.into_iter().find(|n| n.key() == key)
    }
}

/// How many numeric attributes one record holds.
pub const MAX_NUM_ATTRS: usize = 4;
/// Bytes kept of an error message (longer ones are cut at a character boundary).
pub const MESSAGE_BYTES: usize = 160;
/// Bytes kept of the database name (PostgreSQL names have at most 63).
pub const DB_NAME_BYTES: usize = 64;

const FLAG_ERROR: u8 = 1;
const FLAG_PARENT_REMOTE: u8 = 2;
const FLAG_AGGREGATE: u8 = 4;
const FLAG_ACCOUNT: u8 = 8;
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
    /// The values of the numeric attributes in `num_keys`.
    num_values: [i64; MAX_NUM_ATTRS],
    /// The aggregate (stream / account) id, recorded as `aggregate_id` (`FLAG_AGGREGATE`)
    /// and/or `account_id` (`FLAG_ACCOUNT`).
    aggregate_id: [u8; 16],
    /// Process id of the backend that recorded the span.
    pub pid: i32,
    /// [`SpanName`] as a number.
    name: u8,
    flags: u8,
    /// [`StaticAttr`] bits.
    statics: u16,
    /// [`NumAttr`] numbers; 0 = unused slot.
    num_keys: [u8; MAX_NUM_ATTRS],
    /// SQLSTATE of a failed call.
    sqlstate: [u8; 5],
    message_len: u8,
    db_name_len: u8,
    message: [u8; MESSAGE_BYTES],
    db_name: [u8; DB_NAME_BYTES],
}

impl SpanRecord {
    /// A record for span `name` with no attributes, status OK.
    pub fn new(name: SpanName, trace_id: [u8; 16], span_id: [u8; 8], parent_id: [u8; 8]) -> Self {
        SpanRecord {
            trace_id,
            span_id,
            parent_id,
            start_unix_ns: 0,
            end_unix_ns: 0,
            num_values: [0; MAX_NUM_ATTRS],
            aggregate_id: [0; 16],
            pid: 0,
            name: name as u8,
            flags: 0,
            statics: 0,
            num_keys: [0; MAX_NUM_ATTRS],
            sqlstate: [0; 5],
            message_len: 0,
            db_name_len: 0,
            message: [0; MESSAGE_BYTES],
            db_name: [0; DB_NAME_BYTES],
        }
    }

    /// The span's name (`None` for a record written by a newer version).
    pub fn name(&self) -> Option<SpanName> {
        SpanName::from_u8(self.name)
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

    /// Sets `aggregate_id`.
    pub fn set_aggregate_id(&mut self, id: [u8; 16]) {
        self.aggregate_id = id;
        self.set_flag(FLAG_AGGREGATE, true);
    }

    /// Sets `account_id` (the seed's name of the aggregate id on commands).
    pub fn set_account_id(&mut self, id: [u8; 16]) {
        self.aggregate_id = id;
        self.set_flag(FLAG_ACCOUNT, true);
    }

    /// `aggregate_id`, if set.
    pub fn aggregate_id(&self) -> Option<[u8; 16]> {
        (self.flags & FLAG_AGGREGATE != 0).then_some(self.aggregate_id)
    }

    /// `account_id`, if set.
    pub fn account_id(&self) -> Option<[u8; 16]> {
        (self.flags & FLAG_ACCOUNT != 0).then_some(self.aggregate_id)
    }

    /// Adds a constant string attribute.
    pub fn set_static(&mut self, attr: StaticAttr) {
        self.statics |= 1 << attr as u8;
    }

    /// The constant string attributes set, in [`StaticAttr`] order.
    pub fn statics(&self) -> impl Iterator<Item = StaticAttr> + '_ {
        StaticAttr::ALL
            .into_iter()
            .filter(|a| self.statics & (1 << *a as u8) != 0)
    }

    /// Sets (or replaces) a numeric attribute; when all slots are taken the value is dropped
    /// (a record's size is fixed).
    pub fn set_num(&mut self, key: NumAttr, value: i64) {
        let k = key as u8;
        let slot = self
            .num_keys
            .iter()
            .position(|&s| s == k)
            .or_else(|| self.num_keys.iter().position(|&s| s == 0));
        if let Some(i) = slot {
            self.num_keys[i] = k;
            self.num_values[i] = value;
        }
    }

    /// The numeric attributes set, in the order they were first set.
    pub fn nums(&self) -> impl Iterator<Item = (NumAttr, i64)> + '_ {
        self.num_keys
            .iter()
            .zip(self.num_values)
            .filter_map(|(&k, v)| NumAttr::from_u8(k).map(|a| (a, v)))
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

/// Copies as much of `s` as fits into `dst`, cut at a character boundary; returns the length.
fn copy_truncated(dst: &mut [u8], s: &str) -> usize {
    let mut n = s.len().min(dst.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    n
}

/// A W3C trace context (`traceparent` header value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the client's span belongs to.
    pub trace_id: [u8; 16],
    /// The client's span: the parent of the store's spans.
    pub parent_id: [u8; 8],
    /// The client's sampling decision (flag bit 0).
    pub sampled: bool,
}

/// Why a `traceparent` value was refused (the WARNING says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceParentError {
    /// Not `version-traceid-parentid-flags`.
    Shape,
    /// A field that is not lowercase hex of its length.
    Hex,
    /// Version `ff` (forbidden by the W3C spec).
    Version,
    /// An all-zero trace id or parent id.
    ZeroId,
}

impl std::fmt::Display for TraceParentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TraceParentError::Shape => {
                "expected 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"
            }
            TraceParentError::Hex => "a field is not lowercase hex of the right length",
            TraceParentError::Version => "version ff is invalid",
            TraceParentError::ZeroId => "the trace id or the parent id is all zeros",
        })
    }
}

fn hex_field<const N: usize>(s: &str) -> Result<[u8; N], TraceParentError> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return Err(TraceParentError::Hex);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceParentError::Hex),
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Ok(out)
}

/// Parses a `traceparent` value as the W3C Trace Context spec says: version 00 is exactly four
/// fields; a higher version may carry more fields after a `-`, which are ignored.
pub fn parse_traceparent(value: &str) -> Result<TraceParent, TraceParentError> {
    let value = value.trim();
    let mut fields = value.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(TraceParentError::Shape);
    };
    let version = hex_field::<1>(version)?[0];
    if version == 0xff {
        return Err(TraceParentError::Version);
    }
    if version == 0 && fields.next().is_some() {
        return Err(TraceParentError::Shape);
    }
    let trace_id = hex_field::<16>(trace)?;
    let parent_id = hex_field::<8>(parent)?;
    let flags = hex_field::<1>(flags)?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return Err(TraceParentError::ZeroId);
    }
    Ok(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 1 == 1,
    })
}

/// The `expected_version` attribute of an append: the SQL value the caller passed (`None` for
/// NULL, which the seed never sends).
pub fn expected_version_value(expected: super::ExpectedVersion) -> Option<i64> {
    use super::ExpectedVersion::*;
    match expected {
        Any => None,
        StreamExists => Some(-1),
        NoStream => Some(0),
        Exact(n) => Some(n),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Formats a trace context as a `traceparent` value (version 00).
pub fn format_traceparent(tp: &TraceParent) -> String {
    format!(
        "00-{}-{}-{:02x}",
        hex(&tp.trace_id),
        hex(&tp.parent_id),
        u8::from(tp.sampled)
    )
}

/// How far from each end of a query text a sqlcommenter comment is looked for. sqlcommenter
/// appends its comment (some ORMs prepend it); bounding the scan keeps a query with a 10 MB
/// literal from costing a 10 MB scan per call.
pub const COMMENT_SCAN_BYTES: usize = 4096;

/// The value of `traceparent='…'` inside a `/* … */` comment near either end of `query`
/// (sqlcommenter format; the value is URL-decoded). `None` when there is none.
pub fn sqlcommenter_traceparent(query: &[u8]) -> Option<String> {
    if query.len() <= 2 * COMMENT_SCAN_BYTES {
        return find_in_comment(query);
    }
    find_in_comment(&query[query.len() - COMMENT_SCAN_BYTES..])
        .or_else(|| find_in_comment(&query[..COMMENT_SCAN_BYTES]))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_in_comment(text: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"traceparent='";
    let mut rest = text;
    while let Some(open) = find(rest, b"/*") {
        let body_start = open + 2;
        let close = find(&rest[body_start..], b"*/").map(|c| body_start + c)?;
        let body = &rest[body_start..close];
        if let Some(k) = find(body, KEY) {
            let value = &body[k + KEY.len()..];
            let end = value.iter().position(|&c| c == b'\'')?;
            return Some(url_decode(&value[..end]));
        }
        rest = &rest[close + 2..];
    }
    None
}

fn url_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && let Some(Ok(b)) = v
                .get(i + 1..i + 3)
                .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap_or("zz"), 16))
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a new root trace is sampled at `ratio`: decided from the trace id's low 8 bytes (the
/// random part), as OpenTelemetry's `TraceIdRatioBased` sampler does, so the decision is
/// consistent for a given id.
pub fn sampled_by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
    let bound = (ratio * (1u64 << 53) as f64) as u64;
    (low >> 11) < bound
}

/// A fast generator of span and trace ids (splitmix64), seeded from a strong random source
/// once per process.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        IdGen { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A non-zero span id.
    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    /// A non-zero trace id.
    pub fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        id[8..].copy_from_slice(&self.span_id());
        id
    }
}

// ---------------------------------------------------------------------------------------------
// The shared ring.

/// Counters and the export status, shared by every backend and the worker.
#[repr(C)]
#[derive(Debug)]
pub struct RingStats {
    /// Spans written into the ring.
    pub recorded: AtomicU64,
    /// Spans dropped because the ring was full.
    pub dropped_full: AtomicU64,
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans given up after the export retries failed.
    pub dropped_export: AtomicU64,
    /// Failed export attempts (each retry counts).
    pub export_failures: AtomicU64,
    /// Time of the last successful export, ns since the Unix epoch; 0 = never.
    pub last_success_unix_ns: AtomicU64,
    /// Time of the last failed attempt, ns since the Unix epoch; 0 = never.
    pub last_failure_unix_ns: AtomicU64,
    /// Process id of the export worker; 0 when it is not running.
    pub worker_pid: AtomicU64,
    /// Address of the worker's latch (in shared memory) for backends to wake it when the ring
    /// is half full; 0 when it is not running.
    pub worker_latch: AtomicU64,
    /// Seqlock version of `last_error` (odd while it is written).
    error_version: AtomicU64,
    error_len: AtomicU64,
    error_words: [AtomicU64; ERROR_WORDS],
}

const ERROR_WORDS: usize = 32;
/// Bytes kept of the last export error.
pub const ERROR_BYTES: usize = ERROR_WORDS * 8;

impl RingStats {
    /// Stores the last export error (single writer: the worker).
    pub fn set_last_error(&self, message: &str) {
        let mut buf = [0u8; ERROR_BYTES];
        let n = copy_truncated(&mut buf, message);
        self.error_version.fetch_add(1, Ordering::AcqRel);
        for (i, w) in self.error_words.iter().enumerate() {
            let word = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            w.store(word, Ordering::Relaxed);
        }
        self.error_len.store(n as u64, Ordering::Relaxed);
        self.error_version.fetch_add(1, Ordering::AcqRel);
    }

    /// The last export error, `None` when there was none.
    pub fn last_error(&self) -> Option<String> {
        loop {
            let v1 = self.error_version.load(Ordering::Acquire);
            if v1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut buf = [0u8; ERROR_BYTES];
            for (i, w) in self.error_words.iter().enumerate() {
                buf[i * 8..i * 8 + 8].copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
            let len = (self.error_len.load(Ordering::Relaxed) as usize).min(ERROR_BYTES);
            std::sync::atomic::fence(Ordering::Acquire);
            if self.error_version.load(Ordering::Acquire) == v1 {
                return (v1 != 0).then(|| String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
    }
}

#[repr(C)]
struct RingHeader {
    capacity: u64,
    /// Next position a producer claims (many producers, compare-and-swap).
    enqueue: AtomicU64,
    _pad1: [u64; 6],
    /// Next position the consumer reads (the worker only).
    dequeue: AtomicU64,
    _pad2: [u64; 7],
    stats: RingStats,
}

#[repr(C)]
struct Cell {
    /// Vyukov's sequence: `pos` when free for the producer of `pos`, `pos + 1` when filled.
    seq: AtomicU64,
    record: UnsafeCell<SpanRecord>,
}

/// A bounded multi-producer, single-consumer queue of span records in caller-provided memory
/// (Dmitry Vyukov's bounded queue). A producer never waits: it claims a position with one
/// compare-and-swap, copies its record in and publishes it; when the ring is full the record is
/// dropped and counted. Between the claim and the publish there is only a memory copy, so no
/// PostgreSQL error or signal can leave a claimed slot unpublished.
#[derive(Clone, Copy)]
pub struct Ring {
    header: *const RingHeader,
    cells: *const Cell,
}

// SAFETY: all shared state is reached through atomics; a cell's record is written only by the
// producer that claimed it and read only by the single consumer after it was published.
unsafe impl Send for Ring {}
// SAFETY: as for Send: &Ring only gives access through atomics and the claim protocol.
unsafe impl Sync for Ring {}

impl Ring {
    /// Bytes of memory a ring of `capacity` records needs.
    pub fn size_for(capacity: usize) -> usize {
        std::mem::size_of::<RingHeader>() + capacity * std::mem::size_of::<Cell>()
    }

    /// Alignment the memory must have.
    pub const ALIGN: usize = 8;

    /// Initializes a ring in `mem` (at least [`Ring::size_for`] bytes, 8-byte aligned).
    ///
    /// # Safety
    /// `mem` must be valid for writes of that size and not in use by anyone else.
    pub unsafe fn init(mem: *mut u8, capacity: usize) -> Ring {
        // SAFETY: the caller's contract: `mem` holds the header and `capacity` cells; zeroed
        // atomics are valid, and each cell's sequence starts at its index.
        unsafe {
            std::ptr::write_bytes(mem, 0, Ring::size_for(capacity));
            let header = mem.cast::<RingHeader>();
            (*header).capacity = capacity as u64;
            let ring = Ring::attach(mem);
            for i in 0..capacity {
                (*ring.cells.add(i)).seq.store(i as u64, Ordering::Relaxed);
            }
            ring
        }
    }

    /// A handle on a ring initialized by [`Ring::init`].
    ///
    /// # Safety
    /// `mem` must point to an initialized ring that outlives the handle.
    pub unsafe fn attach(mem: *mut u8) -> Ring {
        let header = mem.cast::<RingHeader>();
        Ring {
            header,
            // SAFETY: the cells follow the header within the ring's memory (the contract).
            cells: unsafe { mem.add(std::mem::size_of::<RingHeader>()) }.cast::<Cell>(),
        }
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: `attach`'s contract: the ring outlives the handle.
        unsafe { &*self.header }
    }

    fn cell(&self, pos: u64) -> &Cell {
        let i = pos % self.header().capacity;
        // SAFETY: i < capacity, a cell of the ring.
        unsafe { &*self.cells.add(i as usize) }
    }

    /// How many records the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.header().capacity as usize
    }

    /// The shared counters.
    pub fn stats(&self) -> &RingStats {
        &self.header().stats
    }

    /// Records waiting for the worker (approximate while producers are active).
    pub fn len(&self) -> usize {
        let h = self.header();
        let e = h.enqueue.load(Ordering::Relaxed);
        let d = h.dequeue.load(Ordering::Relaxed);
        e.saturating_sub(d) as usize
    }

    /// No records waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a record; `false` (and the drop counted) when the ring is full.
    pub fn push(&self, record: &SpanRecord) -> bool {
        let h = self.header();
        let mut pos = h.enqueue.load(Ordering::Relaxed);
        loop {
            let cell = self.cell(pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq as i64 - pos as i64;
            if diff == 0 {
                match h.enqueue.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the compare-exchange gave this producer the cell; no one reads
                        // the record until its sequence is published below.
                        unsafe { *cell.record.get() = *record };
                        cell.seq.store(pos + 1, Ordering::Release);
                        h.stats.recorded.fetch_add(1, Ordering::Relaxed);
                        return true;
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                h.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                return false;
            } else {
                pos = h.enqueue.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest published record.
    ///
    /// # Safety
    /// Only one thread of one process may consume the ring at a time (the export worker): two
    /// consumers would read and release the same cell.
    pub unsafe fn pop(&self) -> Option<SpanRecord> {
        let h = self.header();
        let pos = h.dequeue.load(Ordering::Relaxed);
        let cell = self.cell(pos);
        if cell.seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        // SAFETY: the sequence shows the record published (Acquire), and the single consumer
        // (the contract) owns it until it releases the cell below.
        let record = unsafe { *cell.record.get() };
        cell.seq.store(pos + h.capacity, Ordering::Release);
        h.dequeue.store(pos + 1, Ordering::Relaxed);
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_parses_the_w3c_example() {
        let tp = parse_traceparent(TP).unwrap();
        assert_eq!(hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&tp.parent_id), "00f067aa0ba902b7");
        assert!(tp.sampled);
        assert_eq!(format_traceparent(&tp), TP);
        let unsampled = parse_traceparent(&TP.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        assert_eq!(parse_traceparent(&format!("  {TP} ")).unwrap(), tp);
    }

    #[test]
    fn traceparent_refuses_malformed_values() {
        use TraceParentError::*;
        let cases = [
            ("", Shape),
            ("garbage", Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                Shape,
            ),
            (&*format!("{TP}-extra"), Shape),
            (&*TP.replace("4bf9", "4BF9"), Hex),
            (&*TP.replace("4bf9", "4bfx"), Hex),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                Hex,
            ),
            (&*TP.replacen("00", "ff", 1), Version),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroId,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(value), Err(want), "{value:?}");
        }
        // a future version may carry more fields
        let future = format!("{}-more", TP.replacen("00", "01", 1));
        assert!(parse_traceparent(&future).is_ok());
    }

    #[test]
    fn sqlcommenter_comment_is_found_at_either_end() {
        let q = format!("SELECT es.deposit($1, 100) /*traceparent='{TP}'*/");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
        let q = format!(
            "/*action='deposit',traceparent='{}',tracestate='x%3D1'*/ SELECT 1",
            TP.replace('-', "%2D")
        );
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
        // outside a comment it is data, not context
        let q = format!("SELECT 'traceparent=''{TP}'''");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()), None);
        assert_eq!(sqlcommenter_traceparent(b"SELECT 1 /* nothing */"), None);
        assert_eq!(sqlcommenter_traceparent(b"SELECT 1 /* unterminated"), None);
        // a huge query: only both ends are scanned
        let big = "x".repeat(3 * COMMENT_SCAN_BYTES);
        let q = format!("SELECT '{big}' /*traceparent='{TP}'*/");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
        let q = format!("/*traceparent='{TP}'*/ SELECT '{big}'");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
    }

    #[test]
    fn ratio_sampling_is_by_trace_id() {
        let mut ids = IdGen::new(42);
        let n = 20_000;
        let ids: Vec<[u8; 16]> = (0..n).map(|_| ids.trace_id()).collect();
        assert!(ids.iter().all(|t| sampled_by_ratio(t, 1.0)));
        assert!(ids.iter().all(|t| !sampled_by_ratio(t, 0.0)));
        let quarter = ids.iter().filter(|t| sampled_by_ratio(t, 0.25)).count();
        assert!((4_000..6_000).contains(&quarter), "{quarter}");
        // consistent: a lower ratio samples a subset
        assert!(
            ids.iter()
                .filter(|t| sampled_by_ratio(t, 0.1))
                .all(|t| sampled_by_ratio(t, 0.25))
        );
    }

    #[test]
    fn ids_are_non_zero_and_distinct() {
        let mut g = IdGen::new(0);
        let a = g.span_id();
        let b = g.span_id();
        assert_ne!(a, [0; 8]);
        assert_ne!(a, b);
        assert_ne!(g.trace_id(), g.trace_id());
    }

    #[test]
    fn span_record_round_trips_its_fields() {
        let mut r = SpanRecord::new(SpanName::Deposit, [1; 16], [2; 8], [3; 8]);
        assert_eq!(r.name(), Some(SpanName::Deposit));
        assert_eq!(r.failure(), None);
        assert_eq!(r.sqlstate(), None);
        assert_eq!(r.aggregate_id(), None);
        r.set_aggregate_id([9; 16]);
        r.set_num(NumAttr::AmountCents, 500);
        r.set_num(NumAttr::ExpectedVersion, -1);
        r.set_num(NumAttr::AmountCents, 700); // replaces
        assert_eq!(
            r.nums().collect::<Vec<_>>(),
            vec![(NumAttr::AmountCents, 700), (NumAttr::ExpectedVersion, -1)]
        );
        for k in [NumAttr::Version, NumAttr::EventsCount, NumAttr::FromVersion] {
            r.set_num(k, 1);
        }
        assert_eq!(
            r.nums().count(),
            MAX_NUM_ATTRS,
            "extra attributes are dropped"
        );
        r.set_parent_remote(true);
        assert!(r.parent_remote());
        let long = "é".repeat(MESSAGE_BYTES);
        r.set_error("ES101", &long);
        assert_eq!(r.sqlstate(), Some("ES101"));
        let msg = r.failure().unwrap();
        assert!(msg.len() <= MESSAGE_BYTES && msg.chars().all(|c| c == 'é'));
        r.set_static(StaticAttr::OpCommand);
        r.set_static(StaticAttr::DbSystem);
        assert_eq!(
            r.statics().collect::<Vec<_>>(),
            vec![StaticAttr::DbSystem, StaticAttr::OpCommand]
        );
        assert_eq!(r.account_id(), None);
        r.set_account_id([9; 16]);
        assert_eq!(r.account_id(), Some([9; 16]));
        r.set_db_name("bank");
        assert_eq!(r.db_name(), "bank");
        assert_eq!(r.aggregate_id(), Some([9; 16]));
        assert!(
            std::mem::size_of::<SpanRecord>() <= 384,
            "a record stays small"
        );
    }

    #[test]
    fn span_names_round_trip() {
        for n in SpanName::ALL {
            assert_eq!(SpanName::from_u8(n as u8), Some(n));
            assert_eq!(SpanName::from_name(n.as_str()), Some(n));
        }
        assert_eq!(SpanName::from_u8(0), None);
        assert_eq!(SpanName::Deposit.as_str(), "command.deposit");
    }

    struct Mem(Vec<u64>);
    impl Mem {
        fn ring(&mut self, capacity: usize) -> Ring {
            self.0 = vec![0; Ring::size_for(capacity).div_ceil(8)];
            // SAFETY: the vector holds size_for(capacity) bytes, 8-byte aligned, and lives as
            // long as the Mem the test keeps.
            unsafe { Ring::init(self.0.as_mut_ptr().cast(), capacity) }
        }
    }

    /// The tests' consumer: the test thread that calls it is the ring's only consumer.
    fn pop(ring: &Ring) -> Option<SpanRecord> {
        // SAFETY: each test consumes its ring from one thread only.
        unsafe { ring.pop() }
    }

    fn rec(i: u64) -> SpanRecord {
        let mut r = SpanRecord::new(SpanName::AppendEvents, [1; 16], i.to_be_bytes(), [0; 8]);
        r.start_unix_ns = i;
        r
    }

    #[test]
    fn ring_keeps_order_drops_when_full_and_wraps() {
        let mut m = Mem(Vec::new());
        let ring = m.ring(3);
        assert!(pop(&ring).is_none());
        assert!(ring.push(&rec(1)) && ring.push(&rec(2)) && ring.push(&rec(3)));
        assert!(!ring.push(&rec(4)), "full: dropped");
        assert_eq!(ring.stats().dropped_full.load(Ordering::Relaxed), 1);
        assert_eq!(ring.len(), 3);
        assert_eq!(pop(&ring).unwrap().start_unix_ns, 1);
        assert!(ring.push(&rec(5)));
        let got: Vec<u64> = std::iter::from_fn(|| pop(&ring))
            .map(|r| r.start_unix_ns)
            .collect();
        assert_eq!(got, vec![2, 3, 5]);
        assert_eq!(ring.stats().recorded.load(Ordering::Relaxed), 4);
        for round in 0..10 {
            assert!(ring.push(&rec(round)));
            assert_eq!(pop(&ring).unwrap().start_unix_ns, round);
        }
    }

    #[test]
    fn ring_loses_nothing_between_many_producers_and_one_consumer() {
        let mut m = Mem(Vec::new());
        let ring = m.ring(64);
        let producers = 4;
        let per = 20_000u64;
        let mut seen = 0u64;
        let mut sum = 0u64;
        std::thread::scope(|s| {
            for p in 0..producers {
                s.spawn(move || {
                    for i in 0..per {
                        ring.push(&rec(p * per + i));
                    }
                });
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match pop(&ring) {
                    Some(r) => {
                        seen += 1;
                        sum += r.start_unix_ns;
                    }
                    None => {
                        let st = ring.stats();
                        let done = st.recorded.load(Ordering::Relaxed)
                            + st.dropped_full.load(Ordering::Relaxed);
                        if done == producers * per && ring.is_empty() {
                            break;
                        }
                        assert!(std::time::Instant::now() < deadline, "consumer stuck");
                        std::thread::yield_now();
                    }
                }
            }
        });
        let st = ring.stats();
        assert_eq!(seen, st.recorded.load(Ordering::Relaxed));
        assert_eq!(
            seen + st.dropped_full.load(Ordering::Relaxed),
            producers * per
        );
        assert!(sum > 0);
    }

    #[test]
    fn last_error_is_kept_and_truncated() {
        let mut m = Mem(Vec::new());
        let ring = m.ring(1);
        assert_eq!(ring.stats().last_error(), None);
        ring.stats().set_last_error("connection refused");
        assert_eq!(
            ring.stats().last_error().as_deref(),
            Some("connection refused")
        );
        ring.stats().set_last_error(&"y".repeat(1000));
        assert_eq!(ring.stats().last_error().unwrap().len(), ERROR_BYTES);
    }
}
