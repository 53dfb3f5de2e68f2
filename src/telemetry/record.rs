//! The span records of the store (SPEC §7): the spans it records ([`SpanName`]), their
//! attributes ([`StaticAttr`], [`NumAttr`]) and the fixed-size [`SpanRecord`] a finished span
//! becomes, which crosses from a backend to the export worker through shared memory.
//!
//! Pure Rust, tested without PostgreSQL: [`super::subscriber`] fills records from `tracing`
//! spans, [`super::ring`] carries them, [`super::otlp`] turns them into OpenTelemetry spans.

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
pub(crate) fn copy_truncated(dst: &mut [u8], s: &str) -> usize {
    let mut n = s.len().min(dst.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
