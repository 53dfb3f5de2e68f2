//! The one error type of the store: every failure a user can cause, with its SQLSTATE (docs/reference.md §6),
//! a lowercase message that carries the values, and DETAIL/HINT.
//!
//! The enum is pure data; the extension's `pg::error::raise` is the single place that turns it into a
//! PostgreSQL ERROR, so every code and wording is decided here and tested here.

/// Every user-visible failure of the store. One variant per condition of docs/reference.md §6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStoreError {
    /// ES001: the stream is not at the version the caller expected.
    #[error(
        "wrong expected version for stream {stream_id}: expected {expected}, stream is at {actual}"
    )]
    WrongExpectedVersion {
        /// The stream the caller appended to.
        stream_id: String,
        /// What the caller expected, as the user wrote it (`3`, `0`, `-1`).
        expected: String,
        /// The stream's version when the check ran (0 = no stream).
        actual: i64,
    },
    /// ES002: the stream does not exist (expected version -1).
    #[error("stream {stream_id} does not exist")]
    StreamNotFound {
        /// The missing stream.
        stream_id: String,
    },
    /// ES002: an account command or query names an account that does not exist.
    #[error("account {account_id} does not exist")]
    AccountNotFound {
        /// The missing account.
        account_id: String,
    },
    /// ES003: an element of the batch is not a valid event.
    #[error("invalid event at position {index} of the batch: {reason}")]
    InvalidEvent {
        /// 1-based position of the element in the `events` array.
        index: usize,
        /// Why it was refused.
        reason: String,
    },
    /// ES003: an element appended to an account stream is not a well-formed account event, or
    /// cannot follow the account's history (a second `Opened`).
    #[error("invalid account event at position {index} of the batch: {event_type}: {reason}")]
    InvalidAccountEvent {
        /// 1-based position of the element in the `events` array.
        index: usize,
        /// The event's type, as found.
        event_type: String,
        /// Why it was refused.
        reason: String,
    },
    /// ES003: a stored account event cannot be replayed (unknown type, malformed, out of order).
    #[error("cannot replay event of type {event_type}: {reason}")]
    UnreplayableEvent {
        /// The event's type, as found.
        event_type: String,
        /// Why.
        reason: String,
    },
    /// ES004: an `event_id` is already stored, and the call is not an idempotent retry.
    #[error("duplicate event id {event_id}")]
    DuplicateEventId {
        /// The event id that is already taken.
        event_id: String,
        /// Where it is stored, the end of the DETAIL `the event id is already stored …`:
        /// `in stream S at version V`, `in this batch, at positions A and B`, or
        /// `by a concurrent append that committed first`.
        stored_at: String,
    },
    /// ES005: a snapshot version outside 1..current version.
    #[error("invalid snapshot version {version} for stream {stream_id}: {}", snapshot_range(*current))]
    InvalidSnapshot {
        /// The stream of the snapshot.
        stream_id: String,
        /// The version the caller asked for.
        version: i64,
        /// The stream's current version (0 = no stream).
        current: i64,
    },
    /// ES005: a snapshot of an account stream whose state is not the account's state at that
    /// version (a forged or stale state would be trusted by commands and time travel).
    #[error(
        "invalid snapshot of account {stream_id} at version {version}: the state is not the account's state at that version"
    )]
    SnapshotMismatch {
        /// The account.
        stream_id: String,
        /// The snapshot's version.
        version: i64,
        /// The state the history gives at that version.
        expected: String,
    },
    /// ES005: `es.truncate_stream` of a typed stream without a usable snapshot at the version
    /// before the cut (the state there could not be computed once the events are gone).
    #[error(
        "stream {stream_id} cannot be truncated before version {before_version}: no usable snapshot at version {}",
        before_version - 1
    )]
    TruncationNotCovered {
        /// The stream.
        stream_id: String,
        /// The cut asked for.
        before_version: i64,
        /// The newest usable snapshot's version below the stream's version, if any.
        newest: Option<i64>,
    },
    /// ES007: the stream is deleted (soft: until `es.undelete_stream`; hard: for ever).
    #[error("stream {stream_id} is deleted")]
    StreamDeleted {
        /// The stream.
        stream_id: String,
        /// A tombstone (hard delete) rather than a soft delete.
        hard: bool,
        /// When it was deleted, as PostgreSQL prints the time.
        deleted_at: String,
    },
    /// 55000: `es.undelete_stream` of a stream that is not deleted.
    #[error("stream {stream_id} is not deleted")]
    StreamNotDeleted {
        /// The stream.
        stream_id: String,
    },
    /// ES008: a read needs events below the version a truncation removed.
    #[error("stream {stream_id} is truncated before version {before_version}")]
    StreamTruncated {
        /// The stream.
        stream_id: String,
        /// Events with a lower version were removed.
        before_version: i64,
        /// The first version the read needed.
        asked: i64,
    },
    /// ES101: a withdrawal larger than the balance.
    #[error(
        "insufficient funds in account {account_id}: available {available}, requested {requested}"
    )]
    InsufficientFunds {
        /// The account.
        account_id: String,
        /// Its balance.
        available: i64,
        /// The amount asked for.
        requested: i64,
    },
    /// ES102: the account does not accept the command in its status.
    #[error("account {account_id} is not active: it is {}", status.to_lowercase())]
    AccountNotActive {
        /// The account.
        account_id: String,
        /// Its status (`Frozen`, `Closed`).
        status: &'static str,
    },
    /// ES103: an amount that is not a positive number of cents (or a negative opening balance).
    #[error("invalid amount: {reason}")]
    InvalidAmount {
        /// What is wrong, with the value.
        reason: String,
    },
    /// ES104: the stream exists but is not an account (its first event is not `Opened`).
    #[error("stream {stream_id} is not an account stream")]
    NotAnAccount {
        /// The stream.
        stream_id: String,
    },
    /// ES105: an account is deleted only when its balance is zero.
    #[error("account {account_id} cannot be deleted: its balance is {balance} cents")]
    AccountNotDeletable {
        /// The account.
        account_id: String,
        /// Its balance.
        balance: i64,
    },
    /// 22004: a required argument is NULL.
    #[error("{name} must not be null")]
    NullArgument {
        /// The SQL name of the argument.
        name: &'static str,
    },
    /// 22004: an element of the `events` array is NULL.
    #[error("events must not contain null: element {position} is null")]
    NullElement {
        /// 1-based position of the NULL element.
        position: usize,
    },
    /// 22023: an argument has a value outside its domain.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The SQL name of the argument.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// 55000: the key of a data subject could not be made or found (no strong random bytes, or
    /// the subject was forgotten again and again while this append created its key). The
    /// subject is not named: it may itself be personal data, and errors reach the server log.
    #[error("the key of a data subject is unavailable: {reason}")]
    KeyUnavailable {
        /// Why.
        reason: String,
    },
    /// 55000: the function needs `shared_preload_libraries = 'event_store'`.
    #[error("{function} needs the event_store library preloaded")]
    PreloadRequired {
        /// The SQL function that needs it.
        function: &'static str,
    },
    /// 55000: `es.events` is replicated in here by logical replication but `es.watermark` is
    /// not. The positions in flight are on the publisher and only its watermark carries them
    /// here: without it a reader cannot be gap-safe, and says so instead of returning nothing.
    #[error(
        "{function} cannot be gap-safe here: es.events is replicated in by logical replication but es.watermark is not"
    )]
    WatermarkNotReplicated {
        /// The SQL function (or worker) that reads the log.
        function: &'static str,
        /// The subscription that replicates `es.events` in, quoted as an identifier.
        subscription: String,
        /// That subscription's (first) publication on the publisher, quoted as an identifier.
        publication: String,
    },
    /// 55000: the position drawn for an event is already stored: the position sequence is
    /// behind the log (set back by hand, or not replicated to a logical subscriber that became
    /// the primary). The next append checks and moves it.
    #[error(
        "global position {position} is already stored: the position sequence is behind the log"
    )]
    PositionTaken {
        /// The position, as PostgreSQL reported it.
        position: String,
    },
    /// ES301: a declared aggregate's definition, or what one of its functions did with an
    /// event: an `evolve` that raised, returned NULL or a non-object, a function that no longer
    /// exists or that the aggregate's definer may not execute.
    #[error("{reason}")]
    AggregateFailed {
        /// The stream type.
        stream_type: String,
        /// What went wrong, naming the function and the event's version.
        reason: String,
        /// What the function raised, when it raised (its SQLSTATE and message).
        raised: Option<String>,
    },
    /// ES301: an upcaster that raised, returned NULL or a non-object, or no longer exists.
    #[error("{reason}")]
    UpcastFailed {
        /// What went wrong, naming the upcaster, the event type and the version.
        reason: String,
        /// What the function raised, when it raised (its SQLSTATE and message).
        raised: Option<String>,
    },
    /// ES301: a definition `es.define_aggregate` / `es.define_upcaster` refuses.
    #[error("invalid definition of {what}: {reason}")]
    InvalidDefinition {
        /// `aggregate cart`, `upcaster ItemAdded 1`, …
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// ES302: an append names a type other than the stream's.
    #[error("stream {stream_id} is of type {stored}, not {named}")]
    StreamTypeConflict {
        /// The stream.
        stream_id: String,
        /// Its type (`none` for a generic stream).
        stored: String,
        /// The type the append named.
        named: String,
    },
    /// ES303: the stream has no declared aggregate type (`es.state`, `es.history`), or a type
    /// name is not declared.
    #[error("{what} has no declared aggregate type")]
    NoAggregateType {
        /// `stream <id> (type x)`, `stream type x`, …
        what: String,
    },
    /// 42710: the aggregate type or upcaster exists already.
    #[error("{what} already exists")]
    AlreadyDefined {
        /// `aggregate type cart`, …
        what: String,
    },
    /// 2BP01: an aggregate type still has streams.
    #[error("aggregate type {stream_type} still has {streams} streams")]
    AggregateInUse {
        /// The type.
        stream_type: String,
        /// How many streams are of it.
        streams: i64,
    },
    /// 42501: the built-in account type cannot be changed or dropped.
    #[error("the aggregate type {stream_type} is built in and cannot be {action}")]
    BuiltInAggregate {
        /// The type (`account`).
        stream_type: String,
        /// `altered`, `dropped`.
        action: &'static str,
    },
    /// Any SQLSTATE: an ERROR a user's function raised (a declared aggregate's `check` refusing
    /// an event, a statement timeout in an `evolve`, …), passed on unchanged.
    #[error("{}", .0.message)]
    Raised(RaisedError),
    /// ES201: the partition is leased by another consumer (fencing: a consumer that lost its
    /// lease cannot move the checkpoint).
    #[error(
        "partition {partition} of subscription {subscription} is leased by another consumer: {owner}"
    )]
    LeasedByAnother {
        /// The subscription.
        subscription: String,
        /// The partition.
        partition: i32,
        /// The consumer holding the lease.
        owner: String,
        /// When the lease expires, as PostgreSQL prints it.
        lease_until: String,
        /// The consumer the caller named (`None` = none).
        consumer: Option<String>,
    },
    /// ES202: no subscription or projection of that name.
    #[error("{kind} {name} does not exist")]
    NoSuchSubscription {
        /// `subscription` or `projection`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// 42710: a subscription or projection of that name exists already.
    #[error("{kind} {name} already exists")]
    DuplicateName {
        /// `subscription` or `projection`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// 2200H: the global positions would pass the largest bigint.
    #[error(
        "global positions are exhausted: {count} positions from {first} would pass {}",
        i64::MAX
    )]
    PositionsExhausted {
        /// The first position drawn.
        first: i64,
        /// How many positions the batch needs.
        count: i64,
    },
}

/// The SQLSTATEs the store raises (docs/reference.md §6): the one place each code is written.
/// The extension raises them through [`EventStoreError::sqlstate`]; a client matches on them
/// (`event_store_client` builds its typed error from these constants).
pub mod sqlstate {
    /// ES001: the stream is not at the expected version (optimistic concurrency).
    pub const CONCURRENCY: &str = "ES001";
    /// ES002: the stream (or account) does not exist.
    pub const STREAM_NOT_FOUND: &str = "ES002";
    /// ES003: an event of the batch is not valid (or a stored one cannot be replayed).
    pub const INVALID_EVENT: &str = "ES003";
    /// ES004: an event id is already stored and the call is not an idempotent retry.
    pub const DUPLICATE_EVENT_ID: &str = "ES004";
    /// ES005: a snapshot out of range, not the history's state, or missing at a truncation.
    pub const INVALID_SNAPSHOT: &str = "ES005";
    /// ES006: `UPDATE`, `DELETE` or `TRUNCATE` of the append-only event tables.
    pub const APPEND_ONLY: &str = "ES006";
    /// ES007: the stream is deleted (soft or hard).
    pub const STREAM_DELETED: &str = "ES007";
    /// ES008: a read needs events below the version a truncation removed.
    pub const STREAM_TRUNCATED: &str = "ES008";
    /// ES101: a withdrawal larger than the balance.
    pub const INSUFFICIENT_FUNDS: &str = "ES101";
    /// ES102: the account does not accept the command in its status.
    pub const ACCOUNT_NOT_ACTIVE: &str = "ES102";
    /// ES103: an amount that is not a positive number of cents.
    pub const INVALID_AMOUNT: &str = "ES103";
    /// ES104: the stream is not an account.
    pub const NOT_AN_ACCOUNT: &str = "ES104";
    /// ES105: an account is deleted only when its balance is zero.
    pub const ACCOUNT_NOT_DELETABLE: &str = "ES105";
    /// ES201: the partition is leased by another consumer.
    pub const LEASED_BY_ANOTHER: &str = "ES201";
    /// ES202: no subscription or projection of that name.
    pub const NO_SUCH_SUBSCRIPTION: &str = "ES202";
    /// ES301: an aggregate definition, or one of its functions, failed or is invalid.
    pub const INVALID_AGGREGATE: &str = "ES301";
    /// ES302: an append names a stream type other than the stream's.
    pub const STREAM_TYPE_CONFLICT: &str = "ES302";
    /// ES303: the stream has no declared aggregate type.
    pub const NO_AGGREGATE_TYPE: &str = "ES303";
    /// 22004 (PostgreSQL's `null_value_not_allowed`): a NULL argument or element.
    pub const NULL_VALUE_NOT_ALLOWED: &str = "22004";
    /// 22023 (PostgreSQL's `invalid_parameter_value`): an invalid argument.
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// 2200H (PostgreSQL's `sequence_generator_limit_exceeded`): global positions exhausted.
    pub const SEQUENCE_GENERATOR_LIMIT_EXCEEDED: &str = "2200H";
    /// 2BP01 (PostgreSQL's `dependent_objects_still_exist`): an aggregate type still in use.
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    /// 42501 (PostgreSQL's `insufficient_privilege`): a built-in aggregate type.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// 42710 (PostgreSQL's `duplicate_object`): a name already defined.
    pub const DUPLICATE_OBJECT: &str = "42710";
    /// 55000 (PostgreSQL's `object_not_in_prerequisite_state`): the library is not preloaded,
    /// a key is unavailable, a stream is not deleted, …
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
}

impl EventStoreError {
    /// The five-character SQLSTATE of the condition (docs/reference.md §6).
    pub fn sqlstate(&self) -> &str {
        match self {
            Self::AggregateFailed { .. }
            | Self::UpcastFailed { .. }
            | Self::InvalidDefinition { .. } => sqlstate::INVALID_AGGREGATE,
            Self::StreamTypeConflict { .. } => sqlstate::STREAM_TYPE_CONFLICT,
            Self::NoAggregateType { .. } => sqlstate::NO_AGGREGATE_TYPE,
            Self::AlreadyDefined { .. } => sqlstate::DUPLICATE_OBJECT,
            Self::AggregateInUse { .. } => sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
            Self::BuiltInAggregate { .. } => sqlstate::INSUFFICIENT_PRIVILEGE,
            Self::Raised(e) => &e.sqlstate,
            Self::WrongExpectedVersion { .. } => sqlstate::CONCURRENCY,
            Self::StreamNotFound { .. } | Self::AccountNotFound { .. } => {
                sqlstate::STREAM_NOT_FOUND
            }
            Self::InvalidEvent { .. }
            | Self::InvalidAccountEvent { .. }
            | Self::UnreplayableEvent { .. } => sqlstate::INVALID_EVENT,
            Self::DuplicateEventId { .. } => sqlstate::DUPLICATE_EVENT_ID,
            Self::InvalidSnapshot { .. }
            | Self::SnapshotMismatch { .. }
            | Self::TruncationNotCovered { .. } => sqlstate::INVALID_SNAPSHOT,
            Self::StreamDeleted { .. } => sqlstate::STREAM_DELETED,
            Self::StreamTruncated { .. } => sqlstate::STREAM_TRUNCATED,
            Self::StreamNotDeleted { .. } => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::AccountNotDeletable { .. } => sqlstate::ACCOUNT_NOT_DELETABLE,
            Self::InsufficientFunds { .. } => sqlstate::INSUFFICIENT_FUNDS,
            Self::AccountNotActive { .. } => sqlstate::ACCOUNT_NOT_ACTIVE,
            Self::InvalidAmount { .. } => sqlstate::INVALID_AMOUNT,
            Self::NotAnAccount { .. } => sqlstate::NOT_AN_ACCOUNT,
            Self::NullArgument { .. } | Self::NullElement { .. } => {
                sqlstate::NULL_VALUE_NOT_ALLOWED
            }
            Self::InvalidArgument { .. } => sqlstate::INVALID_PARAMETER_VALUE,
            Self::PreloadRequired { .. } | Self::KeyUnavailable { .. } => {
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            Self::PositionsExhausted { .. } => sqlstate::SEQUENCE_GENERATOR_LIMIT_EXCEEDED,
            Self::PositionTaken { .. } => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::WatermarkNotReplicated { .. } => sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::LeasedByAnother { .. } => sqlstate::LEASED_BY_ANOTHER,
            Self::NoSuchSubscription { .. } => sqlstate::NO_SUCH_SUBSCRIPTION,
            Self::DuplicateName { .. } => sqlstate::DUPLICATE_OBJECT,
        }
    }

    /// The primary message (the `Display` of the error): lowercase, no final period, values
    /// included.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// DETAIL: the values a program would want to read back.
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::AggregateFailed {
                raised: Some(raised),
                ..
            }
            | Self::UpcastFailed {
                raised: Some(raised),
                ..
            } => Some(format!("the function raised: {raised}")),
            Self::StreamTypeConflict { stored, named, .. } => {
                Some(format!("stream type: {stored}, named: {named}"))
            }
            Self::AggregateInUse { streams, .. } => Some(format!("streams: {streams}")),
            Self::Raised(e) => e.detail.clone(),
            Self::WrongExpectedVersion {
                expected, actual, ..
            } => Some(format!("expected: {expected}, actual: {actual}")),
            Self::DuplicateEventId { stored_at, .. } => {
                Some(format!("the event id is already stored {stored_at}"))
            }
            Self::InvalidSnapshot { current, .. } => {
                Some(format!("current stream version: {current}"))
            }
            Self::SnapshotMismatch { expected, .. } => {
                Some(format!("the history gives: {expected}"))
            }
            Self::InsufficientFunds {
                available,
                requested,
                ..
            } => Some(format!("available: {available}, requested: {requested}")),
            Self::AccountNotActive { status, .. } => Some(format!("status: {status}")),
            Self::TruncationNotCovered { newest, .. } => Some(match newest {
                Some(v) => format!("newest usable snapshot: version {v}"),
                None => "newest usable snapshot: none".to_owned(),
            }),
            Self::StreamDeleted {
                hard, deleted_at, ..
            } => Some(format!(
                "deleted: {}, at: {deleted_at}",
                if *hard { "hard" } else { "soft" }
            )),
            Self::StreamTruncated {
                before_version,
                asked,
                ..
            } => Some(format!(
                "truncated before: {before_version}, asked from: {asked}"
            )),
            Self::AccountNotDeletable { balance, .. } => Some(format!("balance: {balance}")),
            Self::WatermarkNotReplicated {
                subscription,
                publication,
                ..
            } => Some(format!(
                "subscription {subscription} receives es.events from publication {publication} without es.watermark, the bound of the positions still in flight on the publisher"
            )),
            Self::LeasedByAnother {
                owner,
                lease_until,
                consumer,
                ..
            } => Some(format!(
                "owner: {owner}, lease until: {lease_until}, caller: {}",
                consumer.as_deref().unwrap_or("(none)")
            )),
            _ => None,
        }
    }

    /// HINT: what the caller can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Raised(e) => e.hint.clone(),
            Self::AggregateFailed { .. } => Some(
                "An evolve function must return a JSON object for every stored event and never refuse one (refusing is check's job); fix it with es.alter_aggregate, then CALL es.rebuild_states.".into(),
            ),
            Self::UpcastFailed { .. } => Some(
                "An upcaster must return the event, a JSON object, at the next version for every stored event of its type and version; replace it with CREATE OR REPLACE FUNCTION, or remove it with es.drop_upcaster.".into(),
            ),
            Self::StreamTypeConflict { .. } => Some(
                "A stream's type is set by its first append (stream_type, or es.stream_type_rules) and never changes; append without naming a type, or to a new stream.".into(),
            ),
            Self::NoAggregateType { .. } => Some(
                "Declare the type with es.define_aggregate; a stream gets its type from its first append (stream_type, or es.stream_type_rules).".into(),
            ),
            Self::AggregateInUse { .. } => Some(
                "Pass detach => true to drop the type and keep its streams as generic streams.".into(),
            ),
            Self::WrongExpectedVersion { actual: 0, .. } => {
                Some("The stream does not exist yet: create it with expected_version 0.".into())
            }
            Self::WrongExpectedVersion { .. } => Some(
                "Another writer appended first: reload the stream, decide again, and retry with its new version.".into(),
            ),
            Self::StreamNotFound { .. } => {
                Some("Use expected_version 0 to create a stream, or NULL to append without a check.".into())
            }
            Self::AccountNotFound { .. } => Some(
                "Open an account with es.open_account; its id is the id of its stream.".into(),
            ),
            Self::InvalidEvent { .. } => Some(
                "Each event is a JSON object with a non-empty string \"type\"; optional: event_id (uuid), occurred_at (timestamp with time zone), event_version (integer >= 1), metadata (object).".into(),
            ),
            Self::InvalidAccountEvent { .. } => Some(
                "An account stream takes the seed's AccountEvent: Opened{account_holder, initial_balance_cents} first, then Deposited/Withdrawn{amount_cents, description}, Frozen/Closed{reason}; amounts are integer cents.".into(),
            ),
            Self::DuplicateEventId { .. } => Some(
                "Retrying a call is safe only with the same events in the same order; give new events new ids.".into(),
            ),
            Self::TruncationNotCovered { before_version, .. } => Some(format!(
                "Truncate just after a stored snapshot (before_version = its version + 1), or save one at version {} first (es.save_snapshot for an account; a declared type's own snapshots come every snapshot_every versions).",
                before_version - 1
            )),
            Self::StreamDeleted { hard: false, .. } => Some(
                "Restore it with es.undelete_stream(stream_id); its events are kept until a hard delete.".into(),
            ),
            Self::StreamDeleted { hard: true, .. } => Some(
                "A hard-deleted stream is a tombstone: its id can never be used again. Use a new stream id.".into(),
            ),
            Self::StreamTruncated { before_version, .. } => Some(format!(
                "Events before version {before_version} were removed (es.truncate_stream, or a retention policy): read from version {} on (es.load_events from_version >= {}), or start from the snapshot at version {}.",
                before_version - 1,
                before_version - 1,
                before_version - 1
            )),
            Self::AccountNotDeletable { .. } => Some(
                "Withdraw the balance first: an account is deleted only when it holds no money (es.close_account keeps it readable).".into(),
            ),
            Self::NotAnAccount { .. } => Some(
                "Account streams start with an Opened event; create one with es.open_account.".into(),
            ),
            Self::PreloadRequired { .. } => Some(
                "Add event_store to shared_preload_libraries in postgresql.conf and restart the server.".into(),
            ),
            Self::KeyUnavailable { .. } => Some(
                "Retry the append; nothing of it was stored.".into(),
            ),
            Self::PositionTaken { .. } => Some(
                "Retry the call: the next append moves es.global_position_seq past the stored positions (it falls behind when set back by hand or after a failover to a logical-replication subscriber).".into(),
            ),
            Self::WatermarkNotReplicated {
                subscription,
                publication,
                ..
            } => Some(format!(
                "On the publisher: ALTER PUBLICATION {publication} ADD TABLE es.watermark; then here: ALTER SUBSCRIPTION {subscription} REFRESH PUBLICATION."
            )),
            Self::LeasedByAnother { .. } => Some(
                "Claim partitions with es.claim(name, consumer) and pass the same consumer to es.poll, es.ack and es.nack; a consumer whose lease expired must claim again.".into(),
            ),
            Self::NoSuchSubscription { kind: "upcaster", .. } => {
                Some("The upcasters are listed in es.upcasters.".into())
            }
            Self::NoSuchSubscription { kind: "projection", .. } => Some(
                "The projections are listed in es.projections; create one with es.create_projection.".into(),
            ),
            Self::NoSuchSubscription { .. } => Some(
                "The subscriptions are listed in es.subscriptions; create one with es.create_subscription.".into(),
            ),
            _ => None,
        }
    }
}

/// An ERROR raised by a user's function, as PostgreSQL reported it: what the store passes on
/// unchanged ([`EventStoreError::Raised`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisedError {
    /// Its five-character SQLSTATE.
    pub sqlstate: String,
    /// Its primary message.
    pub message: String,
    /// Its DETAIL.
    pub detail: Option<String>,
    /// Its HINT.
    pub hint: Option<String>,
    /// Its CONTEXT (where in the user's code it was raised).
    pub context: Option<String>,
}

/// The rest of [`EventStoreError::InvalidSnapshot`]'s message.
fn snapshot_range(current: i64) -> String {
    if current == 0 {
        "the stream does not exist".to_owned()
    } else {
        format!("must be between 1 and {current}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants are SQLSTATEs, each written once: the store's own (class `ES`) distinct.
    #[test]
    fn the_sqlstate_constants_are_well_formed_and_distinct() {
        use sqlstate::*;
        let own = [
            CONCURRENCY,
            STREAM_NOT_FOUND,
            INVALID_EVENT,
            DUPLICATE_EVENT_ID,
            INVALID_SNAPSHOT,
            APPEND_ONLY,
            STREAM_DELETED,
            STREAM_TRUNCATED,
            INSUFFICIENT_FUNDS,
            ACCOUNT_NOT_ACTIVE,
            INVALID_AMOUNT,
            NOT_AN_ACCOUNT,
            ACCOUNT_NOT_DELETABLE,
            LEASED_BY_ANOTHER,
            NO_SUCH_SUBSCRIPTION,
            INVALID_AGGREGATE,
            STREAM_TYPE_CONFLICT,
            NO_AGGREGATE_TYPE,
        ];
        let postgres = [
            NULL_VALUE_NOT_ALLOWED,
            INVALID_PARAMETER_VALUE,
            SEQUENCE_GENERATOR_LIMIT_EXCEEDED,
            DEPENDENT_OBJECTS_STILL_EXIST,
            INSUFFICIENT_PRIVILEGE,
            DUPLICATE_OBJECT,
            OBJECT_NOT_IN_PREREQUISITE_STATE,
        ];
        for code in own.iter().chain(&postgres) {
            assert!(
                code.len() == 5
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                "{code}"
            );
        }
        assert!(own.iter().all(|c| c.starts_with("ES")));
        let distinct: std::collections::BTreeSet<_> = own.iter().collect();
        assert_eq!(distinct.len(), own.len());
        assert_eq!(CONCURRENCY, "ES001");
    }

    #[test]
    fn codes_follow_the_spec() {
        let cases = [
            (
                EventStoreError::WrongExpectedVersion {
                    stream_id: "s".into(),
                    expected: "1".into(),
                    actual: 2,
                },
                "ES001",
            ),
            (
                EventStoreError::StreamNotFound {
                    stream_id: "s".into(),
                },
                "ES002",
            ),
            (
                EventStoreError::AccountNotFound {
                    account_id: "a".into(),
                },
                "ES002",
            ),
            (
                EventStoreError::PositionTaken {
                    position: "3".into(),
                },
                "55000",
            ),
            (
                EventStoreError::PositionsExhausted { first: 9, count: 2 },
                "2200H",
            ),
            (
                EventStoreError::InvalidEvent {
                    index: 1,
                    reason: "r".into(),
                },
                "ES003",
            ),
            (
                EventStoreError::InvalidAccountEvent {
                    index: 2,
                    event_type: "Withdrawn".into(),
                    reason: "\"description\" is missing".into(),
                },
                "ES003",
            ),
            (
                EventStoreError::DuplicateEventId {
                    event_id: "e".into(),
                    stored_at: "in this batch, at positions 1 and 2".into(),
                },
                "ES004",
            ),
            (
                EventStoreError::InvalidSnapshot {
                    stream_id: "s".into(),
                    version: 9,
                    current: 2,
                },
                "ES005",
            ),
            (
                EventStoreError::InsufficientFunds {
                    account_id: "a".into(),
                    available: 1,
                    requested: 2,
                },
                "ES101",
            ),
            (
                EventStoreError::AccountNotActive {
                    account_id: "a".into(),
                    status: "Frozen",
                },
                "ES102",
            ),
            (
                EventStoreError::InvalidAmount { reason: "r".into() },
                "ES103",
            ),
            (
                EventStoreError::NotAnAccount {
                    stream_id: "s".into(),
                },
                "ES104",
            ),
            (
                EventStoreError::AggregateFailed {
                    stream_type: "t".into(),
                    reason: "r".into(),
                    raised: None,
                },
                "ES301",
            ),
            (
                EventStoreError::StreamTypeConflict {
                    stream_id: "s".into(),
                    stored: "a".into(),
                    named: "b".into(),
                },
                "ES302",
            ),
            (
                EventStoreError::NoAggregateType { what: "w".into() },
                "ES303",
            ),
            (
                EventStoreError::Raised(RaisedError {
                    sqlstate: "CT001".into(),
                    message: "m".into(),
                    detail: Some("d".into()),
                    hint: None,
                    context: None,
                }),
                "CT001",
            ),
            (EventStoreError::NullArgument { name: "events" }, "22004"),
            (EventStoreError::NullElement { position: 2 }, "22004"),
            (
                EventStoreError::InvalidArgument {
                    name: "x",
                    reason: "r".into(),
                },
                "22023",
            ),
            (
                EventStoreError::PreloadRequired {
                    function: "es.read_all",
                },
                "55000",
            ),
            (
                EventStoreError::WatermarkNotReplicated {
                    function: "es.read_all",
                    subscription: "s".into(),
                    publication: "p".into(),
                },
                "55000",
            ),
            (
                EventStoreError::LeasedByAnother {
                    subscription: "s".into(),
                    partition: 1,
                    owner: "a".into(),
                    lease_until: "t".into(),
                    consumer: None,
                },
                "ES201",
            ),
            (
                EventStoreError::NoSuchSubscription {
                    kind: "projection",
                    name: "p".into(),
                },
                "ES202",
            ),
            (
                EventStoreError::DuplicateName {
                    kind: "subscription",
                    name: "p".into(),
                },
                "42710",
            ),
            (
                EventStoreError::StreamDeleted {
                    stream_id: "s".into(),
                    hard: false,
                    deleted_at: "t".into(),
                },
                "ES007",
            ),
            (
                EventStoreError::StreamTruncated {
                    stream_id: "s".into(),
                    before_version: 5,
                    asked: 1,
                },
                "ES008",
            ),
            (
                EventStoreError::TruncationNotCovered {
                    stream_id: "s".into(),
                    before_version: 5,
                    newest: None,
                },
                "ES005",
            ),
            (
                EventStoreError::AccountNotDeletable {
                    account_id: "a".into(),
                    balance: 7,
                },
                "ES105",
            ),
            (
                EventStoreError::StreamNotDeleted {
                    stream_id: "s".into(),
                },
                "55000",
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.sqlstate(), code, "{err:?}");
            let msg = err.message();
            assert!(
                msg.starts_with(|c: char| c.is_lowercase() || !c.is_alphabetic()),
                "lowercase: {msg}"
            );
            assert!(!msg.ends_with('.'), "no final period: {msg}");
        }
    }

    #[test]
    fn wrong_version_carries_values() {
        let e = EventStoreError::WrongExpectedVersion {
            stream_id: "7".into(),
            expected: "4".into(),
            actual: 6,
        };
        assert_eq!(
            e.message(),
            "wrong expected version for stream 7: expected 4, stream is at 6"
        );
        assert_eq!(e.detail().unwrap(), "expected: 4, actual: 6");
    }

    /// The errors table of docs/reference.md §6 calls its DETAIL formats a contract: every DETAIL form the
    /// store writes must be in the row of its SQLSTATE. Each form is made here by the code that
    /// writes it, with marked values; the text between the values (what a program parses) must
    /// appear in that row as written. (The DETAILs of the SQL files, with no values, must be in
    /// the table too.)
    #[test]
    fn every_detail_form_is_in_the_reference_errors_table() {
        use crate::ExpectedVersion;
        use crate::account::AccountStatus;
        let reference = include_str!("../../../docs/reference.md");
        let start = reference
            .find("\n## 6. Errors\n")
            .expect("docs/reference.md has a section ## 6. Errors");
        let section = &reference[start + 1..];
        let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
        let row = |code: &str| {
            section
                .lines()
                .find(|l| l.starts_with(&format!("| `{code}` |")))
                .unwrap_or_else(|| panic!("docs/reference.md §6 has no row for {code}"))
        };
        // values that do not occur in the fixed text around them
        let (n, m, id, text) = (987_654_321_i64, 876_543_210_i64, "VALUE-ID", "VALUE-TEXT");
        let wrong_version = |expected: ExpectedVersion| EventStoreError::WrongExpectedVersion {
            stream_id: id.into(),
            expected: expected.to_string(),
            actual: m,
        };
        let forms = [
            wrong_version(ExpectedVersion::Exact(n)),
            wrong_version(ExpectedVersion::NoStream),
            wrong_version(ExpectedVersion::StreamExists),
            EventStoreError::DuplicateEventId {
                event_id: id.into(),
                stored_at: format!("in stream {id} at version {n}"),
            },
            EventStoreError::DuplicateEventId {
                event_id: id.into(),
                stored_at: format!("in this batch, at positions {n} and {m}"),
            },
            EventStoreError::DuplicateEventId {
                event_id: id.into(),
                stored_at: "by a concurrent append that committed first".into(),
            },
            EventStoreError::InvalidSnapshot {
                stream_id: id.into(),
                version: m,
                current: n,
            },
            EventStoreError::SnapshotMismatch {
                stream_id: id.into(),
                version: m,
                expected: text.into(),
            },
            EventStoreError::InsufficientFunds {
                account_id: id.into(),
                available: n,
                requested: m,
            },
            EventStoreError::AccountNotActive {
                account_id: id.into(),
                status: AccountStatus::Frozen.as_str(),
            },
            EventStoreError::AccountNotActive {
                account_id: id.into(),
                status: AccountStatus::Closed.as_str(),
            },
            EventStoreError::LeasedByAnother {
                subscription: id.into(),
                partition: 1,
                owner: text.into(),
                lease_until: id.into(),
                consumer: Some(text.into()),
            },
            EventStoreError::LeasedByAnother {
                subscription: id.into(),
                partition: 1,
                owner: text.into(),
                lease_until: id.into(),
                consumer: None,
            },
            EventStoreError::WatermarkNotReplicated {
                function: "es.read_all",
                subscription: id.into(),
                publication: text.into(),
            },
            EventStoreError::AggregateFailed {
                stream_type: id.into(),
                reason: text.into(),
                raised: Some(text.into()),
            },
            EventStoreError::StreamTypeConflict {
                stream_id: id.into(),
                stored: text.into(),
                named: id.into(),
            },
            EventStoreError::AggregateInUse {
                stream_type: id.into(),
                streams: n,
            },
        ];
        let mut missing = Vec::new();
        for err in &forms {
            let detail = err
                .detail()
                .unwrap_or_else(|| panic!("{err:?} has no DETAIL"));
            let marked = [n.to_string(), m.to_string(), id.into(), text.into()]
                .iter()
                .fold(detail.clone(), |d, v| d.replace(v.as_str(), "\0"));
            let code = err.sqlstate();
            for fixed in marked.split('\0').filter(|f| !f.trim().is_empty()) {
                if !row(code).contains(fixed) {
                    missing.push(format!("{code}: {fixed:?} (of the DETAIL {detail:?})"));
                }
            }
        }
        for sql in [
            include_str!("../../../sql/bootstrap.sql"),
            include_str!("../../../sql/flow.sql"),
        ] {
            for part in sql.split("DETAIL = '").skip(1) {
                let detail = &part[..part.find('\'').expect("a DETAIL literal ends")];
                if !section.contains(detail) {
                    missing.push(format!("a DETAIL of the SQL files: {detail:?}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "DETAIL forms missing from the errors table of docs/reference.md §6:\n{}",
            missing.join("\n")
        );
    }
}
