//! The client's one error type, [`EventStoreError`]: the bank-account example's variants
//! (`Database`, `Serialization`, `ConcurrencyConflict`) plus one variant per condition of the
//! store's SQLSTATE table (docs/reference.md §6), with the values the server puts in its DETAIL
//! parsed into fields, and [`EventStoreError::Domain`] for the errors a domain's own `check`
//! function raises, which the store passes through unchanged.
//!
//! The parser ([`EventStoreError::from_server`]) is pure: it takes the SQLSTATE, the message and
//! the DETAIL text, in the formats `event_store_core::EventStoreError` produces on the server,
//! and its tests feed it exactly those strings.

use crate::account::AccountStatus;
use event_store_core::sqlstate;
use uuid::Uuid;

/// The bank-account example's `SnapshotError`: the snapshot store fails with the same type as the
/// event store.
pub type SnapshotError = EventStoreError;

/// Every failure of a call to the store, typed by SQLSTATE. **A stable contract**: a variant,
/// its fields and the SQLSTATE it comes from change only with a major version; new conditions
/// may be added (the enum is `#[non_exhaustive]`).
///
/// | SQLSTATE | variant | fields parsed | from the server's |
/// |---|---|---|---|
/// | `ES001` | [`ConcurrencyConflict`](Self::ConcurrencyConflict) | `expected` (N, `0`, `-1`), `actual` | DETAIL `expected: E, actual: A`, E = `N`, `0 (no stream)` or `-1 (an existing stream)` |
/// | `ES002` | [`StreamNotFound`](Self::StreamNotFound) | | message (`stream … does not exist`, `account … does not exist`) |
/// | `ES003` | [`InvalidEvent`](Self::InvalidEvent) | | message (which element, why) |
/// | `ES004` | [`DuplicateEventId`](Self::DuplicateEventId) | `event_id`, `stored_in` (stream, version) | message `duplicate event id <uuid>`, DETAIL `the event id is already stored in stream <uuid> at version <n>` (else `stored_in` is `None`) |
/// | `ES005` | [`InvalidSnapshot`](Self::InvalidSnapshot) | `detail` | message, DETAIL |
/// | `ES007` | [`StreamDeleted`](Self::StreamDeleted) | `hard`, `deleted_at` | DETAIL `deleted: soft\|hard, at: <time>` |
/// | `ES008` | [`StreamTruncated`](Self::StreamTruncated) | `before_version`, `asked_from` | DETAIL `truncated before: V, asked from: F` |
/// | `ES101` | [`InsufficientFunds`](Self::InsufficientFunds) | `available`, `requested` | DETAIL `available: A, requested: R` |
/// | `ES102` | [`AccountNotActive`](Self::AccountNotActive) | `status` | DETAIL `status: Frozen` |
/// | `ES103` | [`InvalidAmount`](Self::InvalidAmount) | | message |
/// | `ES104` | [`NotAnAccount`](Self::NotAnAccount) | | message |
/// | `ES105` | [`AccountNotDeletable`](Self::AccountNotDeletable) | `balance` | DETAIL `balance: B` |
/// | `ES201` | [`LeasedByAnother`](Self::LeasedByAnother) | `owner`, `lease_until` | DETAIL `owner: O, lease until: T, caller: C` |
/// | `ES202` | [`NoSuchSubscription`](Self::NoSuchSubscription) | | message |
/// | `ES301` | [`InvalidAggregate`](Self::InvalidAggregate) | `detail` | message (the function, the event's version), DETAIL `the function raised: <sqlstate>: <message>` when it raised |
/// | `ES302` | [`StreamTypeConflict`](Self::StreamTypeConflict) | `stream_type` (`None`: a generic stream), `named` | DETAIL `stream type: <type>, named: <type>`, `<type>` = `none (a generic stream)` for a generic stream |
/// | `ES303` | [`NoAggregateType`](Self::NoAggregateType) | | message |
/// | `22023`, `22004` | [`InvalidArgument`](Self::InvalidArgument) | `code` | message |
/// | a domain's own: a class neither PostgreSQL's nor `ES` (e.g. `CT005`), or `P0001` | [`Domain`](Self::Domain) | `code`, `detail`, `hint` | message, DETAIL, HINT, unchanged |
/// | any other, or a DETAIL not in its format | [`Database`](Self::Database) | the whole `sqlx::Error` | |
///
/// Every variant built from a server error keeps the server's primary message in `message`,
/// and displays it. Client-side JSON failures (an event the bank-account example's types cannot
/// decode, a state that is not an account's) are [`Serialization`](Self::Serialization).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventStoreError {
    /// Any database or connection failure that is not one of the store's conditions below
    /// (e.g. `55000` the library is not preloaded, a closed connection, a row decode error).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),

    /// An event or a state that cannot be converted to or from the bank-account example's JSON, or
    /// to or from an [`Aggregate`](crate::Aggregate)'s types.
    #[error("serialization error: {0}")]
    Serialization(String),

    /// `ES001`: the stream is not at the expected version (another writer appended first).
    #[error("{message}")]
    ConcurrencyConflict {
        /// The expected version the call passed: N, `0` (no stream yet) or `-1` (any existing).
        expected: i64,
        /// The stream's version when the store checked (0: no stream).
        actual: i64,
        /// The server's message.
        message: String,
    },

    /// `ES002`: the stream (expected version `-1`) or the account does not exist.
    #[error("{message}")]
    StreamNotFound {
        /// The server's message.
        message: String,
    },

    /// `ES003`: an event is not valid (for an account stream: not a well-formed account event),
    /// or a stored event cannot be replayed.
    #[error("{message}")]
    InvalidEvent {
        /// The server's message: which element of the batch, and why.
        message: String,
    },

    /// `ES004`: an event id is already stored and the call is not an idempotent retry.
    #[error("{message}")]
    DuplicateEventId {
        /// The event id.
        event_id: Uuid,
        /// Where it is stored (stream, version), when the server names it. `None` when the
        /// duplicate is within the batch or was stored by a concurrent append that committed
        /// first (see `detail`).
        stored_in: Option<(Uuid, i64)>,
        /// The server's DETAIL, when it sent one.
        detail: Option<String>,
        /// The server's message.
        message: String,
    },

    /// `ES005`: a snapshot version outside 1..current version, or an account state that is not
    /// the history's state at that version.
    #[error("{message}")]
    InvalidSnapshot {
        /// The server's DETAIL (`current stream version: N` or `the history gives: {…}`).
        detail: Option<String>,
        /// The server's message.
        message: String,
    },

    /// `ES007`: the stream is deleted: soft (until `es.undelete_stream`) or hard (a tombstone,
    /// for ever).
    #[error("{message}")]
    StreamDeleted {
        /// A hard delete (a tombstone) rather than a soft one.
        hard: bool,
        /// When it was deleted, as the server printed it (its `DateStyle`).
        deleted_at: String,
        /// The server's message.
        message: String,
    },

    /// `ES008`: a read needs events that `es.truncate_stream` removed.
    #[error("{message}")]
    StreamTruncated {
        /// Events below this version were removed.
        before_version: i64,
        /// The first version the read needed.
        asked_from: i64,
        /// The server's message.
        message: String,
    },

    /// `ES105`: an account is deleted only when its balance is zero.
    #[error("{message}")]
    AccountNotDeletable {
        /// The account's balance.
        balance: i64,
        /// The server's message.
        message: String,
    },

    /// `ES101`: a withdrawal larger than the balance.
    #[error("{message}")]
    InsufficientFunds {
        /// The balance.
        available: i64,
        /// The amount asked for.
        requested: i64,
        /// The server's message.
        message: String,
    },

    /// `ES102`: the account's status does not allow the command.
    #[error("{message}")]
    AccountNotActive {
        /// The account's status.
        status: AccountStatus,
        /// The server's message.
        message: String,
    },

    /// `ES103`: an amount that is not a positive number of cents (or a negative opening
    /// balance, or a deposit past the largest bigint).
    #[error("{message}")]
    InvalidAmount {
        /// The server's message, with the value.
        message: String,
    },

    /// `ES104`: the stream exists but is not an account stream.
    #[error("{message}")]
    NotAnAccount {
        /// The server's message.
        message: String,
    },

    /// `ES201`: the subscription's partition is leased by another consumer.
    #[error("{message}")]
    LeasedByAnother {
        /// The consumer holding the lease.
        owner: String,
        /// When the lease ends, as the server printed it (its `DateStyle`).
        lease_until: String,
        /// The server's message.
        message: String,
    },

    /// `ES202`: no subscription or projection of that name.
    #[error("{message}")]
    NoSuchSubscription {
        /// The server's message.
        message: String,
    },

    /// `22023` (invalid argument) or `22004` (a NULL argument or element).
    #[error("{message}")]
    InvalidArgument {
        /// `22023` or `22004`.
        code: String,
        /// The server's message, naming the argument.
        message: String,
    },

    /// `ES301`: an aggregate's definition or one of its results is invalid: its `evolve`
    /// raised, returned NULL or something that is not a JSON object, or one of its functions no
    /// longer exists.
    #[error("{message}")]
    InvalidAggregate {
        /// The server's DETAIL: `the function raised: <sqlstate>: <message>` when the function
        /// raised.
        detail: Option<String>,
        /// The server's message: the function and the version of the event it failed on.
        message: String,
    },

    /// `ES302`: the stream exists with another aggregate type than the one the append named
    /// (a stream keeps the type of its first append).
    #[error("{message}")]
    StreamTypeConflict {
        /// The stream's type; `None` for a generic stream (one without a type).
        stream_type: Option<String>,
        /// The type the append named.
        named: String,
        /// The server's message.
        message: String,
    },

    /// `ES303`: the stream has no aggregate type (a generic stream), so it has no state
    /// (`es.state`, `es.history`).
    #[error("{message}")]
    NoAggregateType {
        /// The server's message.
        message: String,
    },

    /// A domain's own error, passed through by the store unchanged: what an aggregate's
    /// `check` function raised to refuse an event (e.g. the cart's `CT005`, the cart is full),
    /// or another error of the application's own SQL. Recognized by its SQLSTATE: a class
    /// that is neither one of PostgreSQL's nor the store's `ES` (give a domain's refusals such
    /// a class of their own), or `P0001`, the code of a plain `RAISE EXCEPTION`. Any other
    /// PostgreSQL SQLSTATE raised by a `check` (e.g. `23514`) stays
    /// [`Database`](Self::Database): it cannot be told from the server's own failures.
    #[error("{message}")]
    Domain {
        /// The SQLSTATE, e.g. `CT005`.
        code: String,
        /// The message.
        message: String,
        /// The DETAIL, when there is one.
        detail: Option<String>,
        /// The HINT, when there is one.
        hint: Option<String>,
    },
}

/// How an ES302 DETAIL names the type of a stream that has none.
const GENERIC: &str = "none (a generic stream)";

/// The classes of PostgreSQL 15's SQLSTATEs (its `errcodes.txt`).
const POSTGRES_CLASSES: [&str; 43] = [
    "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22", "23",
    "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F", "40", "42",
    "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
];

/// Whether a SQLSTATE is a domain's own (see [`EventStoreError::Domain`]): five digits or
/// uppercase letters, of a class neither PostgreSQL's nor the store's, or `P0001`.
fn is_domain_code(code: &str) -> bool {
    let well_formed = code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    well_formed
        && (code == "P0001" || (!POSTGRES_CLASSES.contains(&&code[..2]) && !code.starts_with("ES")))
}

impl EventStoreError {
    /// The typed error for a server error with this SQLSTATE, message and DETAIL, or `None`
    /// when it is not one of the store's conditions (or its DETAIL is not in the documented
    /// format) nor a domain's own: the caller then keeps the error as
    /// [`Database`](Self::Database). Pure: usable with any driver's error fields. A
    /// [`Domain`](Self::Domain) error built here has no `hint`; see
    /// [`from_server_with_hint`](Self::from_server_with_hint).
    pub fn from_server(code: &str, message: &str, detail: Option<&str>) -> Option<Self> {
        Self::from_server_with_hint(code, message, detail, None)
    }

    /// [`from_server`](Self::from_server) with the server's HINT too, which only a
    /// [`Domain`](Self::Domain) error keeps (the store's own HINTs are for people).
    pub fn from_server_with_hint(
        code: &str,
        message: &str,
        detail: Option<&str>,
        hint: Option<&str>,
    ) -> Option<Self> {
        let message = message.to_owned();
        Some(match code {
            sqlstate::CONCURRENCY => {
                // `expected: E, actual: A`; E is N, `0 (no stream)` or `-1 (an existing stream)`.
                let (expected, actual) = detail?
                    .strip_prefix("expected: ")?
                    .split_once(", actual: ")?;
                let expected = expected.split(' ').next()?.parse().ok()?;
                let actual = actual.parse().ok()?;
                Self::ConcurrencyConflict {
                    expected,
                    actual,
                    message,
                }
            }
            sqlstate::STREAM_NOT_FOUND => Self::StreamNotFound { message },
            sqlstate::INVALID_EVENT => Self::InvalidEvent { message },
            sqlstate::DUPLICATE_EVENT_ID => {
                let event_id = message.strip_prefix("duplicate event id ")?.parse().ok()?;
                let stored_in = detail
                    .and_then(|d| d.strip_prefix("the event id is already stored in stream "))
                    .and_then(|rest| {
                        let (stream, version) = rest.split_once(" at version ")?;
                        Some((stream.parse().ok()?, version.parse().ok()?))
                    });
                Self::DuplicateEventId {
                    event_id,
                    stored_in,
                    detail: detail.map(str::to_owned),
                    message,
                }
            }
            sqlstate::INVALID_SNAPSHOT => Self::InvalidSnapshot {
                detail: detail.map(str::to_owned),
                message,
            },
            sqlstate::STREAM_DELETED => {
                let (how, deleted_at) = detail?.strip_prefix("deleted: ")?.split_once(", at: ")?;
                Self::StreamDeleted {
                    hard: match how {
                        "hard" => true,
                        "soft" => false,
                        _ => return None,
                    },
                    deleted_at: deleted_at.to_owned(),
                    message,
                }
            }
            sqlstate::STREAM_TRUNCATED => {
                let (before_version, asked_from) =
                    two_values(detail?, "truncated before: ", ", asked from: ")?;
                Self::StreamTruncated {
                    before_version,
                    asked_from,
                    message,
                }
            }
            sqlstate::ACCOUNT_NOT_DELETABLE => Self::AccountNotDeletable {
                balance: detail?.strip_prefix("balance: ")?.trim().parse().ok()?,
                message,
            },
            sqlstate::INSUFFICIENT_FUNDS => {
                let (available, requested) = two_values(detail?, "available: ", ", requested: ")?;
                Self::InsufficientFunds {
                    available,
                    requested,
                    message,
                }
            }
            sqlstate::ACCOUNT_NOT_ACTIVE => Self::AccountNotActive {
                status: AccountStatus::parse(detail?.strip_prefix("status: ")?)?,
                message,
            },
            sqlstate::INVALID_AMOUNT => Self::InvalidAmount { message },
            sqlstate::NOT_AN_ACCOUNT => Self::NotAnAccount { message },
            sqlstate::LEASED_BY_ANOTHER => {
                let (owner, lease_until) = lease(detail?)?;
                Self::LeasedByAnother {
                    owner: owner.to_owned(),
                    lease_until: lease_until.to_owned(),
                    message,
                }
            }
            sqlstate::NO_SUCH_SUBSCRIPTION => Self::NoSuchSubscription { message },
            sqlstate::INVALID_AGGREGATE => Self::InvalidAggregate {
                detail: detail.map(str::to_owned),
                message,
            },
            sqlstate::STREAM_TYPE_CONFLICT => {
                // `stream type: T, named: N`; T is `none (a generic stream)` for no type.
                let (stored, named) = detail?
                    .strip_prefix("stream type: ")?
                    .split_once(", named: ")?;
                Self::StreamTypeConflict {
                    stream_type: (stored != GENERIC).then(|| stored.to_owned()),
                    named: named.to_owned(),
                    message,
                }
            }
            sqlstate::NO_AGGREGATE_TYPE => Self::NoAggregateType { message },
            sqlstate::INVALID_PARAMETER_VALUE | sqlstate::NULL_VALUE_NOT_ALLOWED => {
                Self::InvalidArgument {
                    code: code.to_owned(),
                    message,
                }
            }
            _ if is_domain_code(code) => Self::Domain {
                code: code.to_owned(),
                message,
                detail: detail.map(str::to_owned),
                hint: hint.map(str::to_owned),
            },
            _ => return None,
        })
    }

    /// The SQLSTATE of a server error (`None` for `Serialization` and client-side failures).
    pub fn sqlstate(&self) -> Option<&str> {
        Some(match self {
            Self::Database(err) => {
                return err
                    .as_database_error()?
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .map(|pg| pg.code());
            }
            Self::Serialization(_) => return None,
            Self::ConcurrencyConflict { .. } => sqlstate::CONCURRENCY,
            Self::StreamNotFound { .. } => sqlstate::STREAM_NOT_FOUND,
            Self::InvalidEvent { .. } => sqlstate::INVALID_EVENT,
            Self::DuplicateEventId { .. } => sqlstate::DUPLICATE_EVENT_ID,
            Self::InvalidSnapshot { .. } => sqlstate::INVALID_SNAPSHOT,
            Self::StreamDeleted { .. } => sqlstate::STREAM_DELETED,
            Self::StreamTruncated { .. } => sqlstate::STREAM_TRUNCATED,
            Self::AccountNotDeletable { .. } => sqlstate::ACCOUNT_NOT_DELETABLE,
            Self::InsufficientFunds { .. } => sqlstate::INSUFFICIENT_FUNDS,
            Self::AccountNotActive { .. } => sqlstate::ACCOUNT_NOT_ACTIVE,
            Self::InvalidAmount { .. } => sqlstate::INVALID_AMOUNT,
            Self::NotAnAccount { .. } => sqlstate::NOT_AN_ACCOUNT,
            Self::LeasedByAnother { .. } => sqlstate::LEASED_BY_ANOTHER,
            Self::NoSuchSubscription { .. } => sqlstate::NO_SUCH_SUBSCRIPTION,
            Self::InvalidAggregate { .. } => sqlstate::INVALID_AGGREGATE,
            Self::StreamTypeConflict { .. } => sqlstate::STREAM_TYPE_CONFLICT,
            Self::NoAggregateType { .. } => sqlstate::NO_AGGREGATE_TYPE,
            Self::InvalidArgument { code, .. } | Self::Domain { code, .. } => code,
        })
    }
}

/// Reads `owner: O, lease until: T, caller: C`. Consumer names may contain anything; a
/// timestamp as PostgreSQL prints it (any `DateStyle`) has no comma, so the owner ends at the
/// first `, lease until: ` that is followed by comma-free text and `, caller: `.
fn lease(detail: &str) -> Option<(&str, &str)> {
    const MARK: &str = ", lease until: ";
    let rest = detail.strip_prefix("owner: ")?;
    rest.match_indices(MARK).find_map(|(at, _)| {
        let after = &rest[at + MARK.len()..];
        let comma = after.find(", ")?;
        after[comma..]
            .starts_with(", caller: ")
            .then(|| (&rest[..at], &after[..comma]))
    })
}

/// Reads `<first>A<second>B` as two integers.
fn two_values(detail: &str, first: &str, second: &str) -> Option<(i64, i64)> {
    let (a, b) = detail.strip_prefix(first)?.split_once(second)?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Classifies a sqlx error: a store condition becomes its variant, anything else
/// [`EventStoreError::Database`]. So `?` on a sqlx call gives the typed error.
impl From<sqlx::Error> for EventStoreError {
    fn from(err: sqlx::Error) -> Self {
        let typed = err
            .as_database_error()
            .and_then(|db| db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
            .and_then(|pg| {
                Self::from_server_with_hint(pg.code(), pg.message(), pg.detail(), pg.hint())
            });
        typed.unwrap_or(Self::Database(err))
    }
}

impl From<serde_json::Error> for EventStoreError {
    fn from(err: serde_json::Error) -> Self {
        Self::Serialization(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_store_core::EventStoreError as Server;
    use event_store_core::ExpectedVersion;

    /// What the server sends for a core error: SQLSTATE, message, DETAIL.
    fn parse(err: &Server) -> Option<EventStoreError> {
        EventStoreError::from_server(err.sqlstate(), &err.message(), err.detail().as_deref())
    }

    const STREAM: &str = "01a23348-0a09-7105-b559-90754c00e709";
    const EVENT: &str = "00000000-0000-0000-0000-000000000002";

    #[test]
    fn wrong_expected_version_gives_expected_and_actual() {
        let stream: Uuid = STREAM.parse().unwrap();
        for (mode, actual) in [
            (ExpectedVersion::Exact(4), 6),
            (ExpectedVersion::Exact(12), 0),
            (ExpectedVersion::NoStream, 3),
            (ExpectedVersion::StreamExists, 0),
        ] {
            let server = mode.conflict(&stream, actual);
            match parse(&server) {
                Some(EventStoreError::ConcurrencyConflict {
                    expected: e,
                    actual: a,
                    message,
                }) => {
                    assert_eq!((Some(e), a), (mode.as_sql(), actual));
                    assert_eq!(message, server.message());
                }
                other => panic!("{other:?}"),
            }
        }
        // The literal text of docs/reference.md §6 / the golden files.
        let literal = EventStoreError::from_server(
            "ES001",
            "wrong expected version for stream s: expected 1, stream is at 3",
            Some("expected: 1, actual: 3"),
        );
        assert!(matches!(
            literal,
            Some(EventStoreError::ConcurrencyConflict {
                expected: 1,
                actual: 3,
                ..
            })
        ));
        // No DETAIL, or another format: not guessed.
        assert!(EventStoreError::from_server("ES001", "m", None).is_none());
        assert!(
            EventStoreError::from_server("ES001", "m", Some("expected: x, actual: 1")).is_none()
        );
        assert!(
            EventStoreError::from_server("ES001", "m", Some("expected: any, actual: 1")).is_none()
        );
    }

    #[test]
    fn duplicate_event_id_says_where() {
        let stored = Server::DuplicateEventId {
            event_id: EVENT.into(),
            stored_at: format!("in stream {STREAM} at version 7"),
        };
        match parse(&stored) {
            Some(EventStoreError::DuplicateEventId {
                event_id,
                stored_in,
                detail,
                message,
            }) => {
                assert_eq!(event_id, EVENT.parse::<Uuid>().unwrap());
                assert_eq!(stored_in, Some((STREAM.parse().unwrap(), 7)));
                assert_eq!(
                    detail.as_deref(),
                    Some(
                        "the event id is already stored in stream \
                         01a23348-0a09-7105-b559-90754c00e709 at version 7"
                    )
                );
                assert_eq!(message, format!("duplicate event id {EVENT}"));
            }
            other => panic!("{other:?}"),
        }
        for (stored_at, detail) in [
            (
                "in this batch, at positions 1 and 3",
                "the event id is already stored in this batch, at positions 1 and 3",
            ),
            (
                "by a concurrent append that committed first",
                "the event id is already stored by a concurrent append that committed first",
            ),
        ] {
            let server = Server::DuplicateEventId {
                event_id: EVENT.into(),
                stored_at: stored_at.into(),
            };
            match parse(&server) {
                Some(EventStoreError::DuplicateEventId {
                    stored_in: None,
                    detail: d,
                    ..
                }) => assert_eq!(d.as_deref(), Some(detail)),
                other => panic!("{other:?}"),
            }
        }
        // An older server sent no DETAIL for a concurrent duplicate.
        let bare =
            EventStoreError::from_server("ES004", &format!("duplicate event id {EVENT}"), None);
        assert!(matches!(
            bare,
            Some(EventStoreError::DuplicateEventId {
                stored_in: None,
                detail: None,
                ..
            })
        ));
    }

    #[test]
    fn the_life_of_a_stream_carries_its_values() {
        for hard in [false, true] {
            let deleted = Server::StreamDeleted {
                stream_id: STREAM.into(),
                hard,
                deleted_at: "2026-12-06 10:00:00.5+00".into(),
            };
            match parse(&deleted) {
                Some(err @ EventStoreError::StreamDeleted { .. }) => {
                    assert_eq!(err.sqlstate(), Some("ES007"));
                    let EventStoreError::StreamDeleted {
                        hard: h,
                        deleted_at,
                        message,
                    } = err
                    else {
                        unreachable!()
                    };
                    assert_eq!(h, hard);
                    assert_eq!(deleted_at, "2026-12-06 10:00:00.5+00");
                    assert_eq!(message, deleted.message());
                }
                other => panic!("{other:?}"),
            }
        }
        let truncated = Server::StreamTruncated {
            stream_id: STREAM.into(),
            before_version: 40,
            asked: 1,
        };
        match parse(&truncated) {
            Some(err @ EventStoreError::StreamTruncated { .. }) => {
                assert_eq!(err.sqlstate(), Some("ES008"));
                assert!(matches!(
                    err,
                    EventStoreError::StreamTruncated {
                        before_version: 40,
                        asked_from: 1,
                        ..
                    }
                ));
            }
            other => panic!("{other:?}"),
        }
        let not_empty = Server::AccountNotDeletable {
            account_id: STREAM.into(),
            balance: -7,
        };
        match parse(&not_empty) {
            Some(err @ EventStoreError::AccountNotDeletable { balance: -7, .. }) => {
                assert_eq!(err.sqlstate(), Some("ES105"));
            }
            other => panic!("{other:?}"),
        }
        let uncovered = Server::TruncationNotCovered {
            stream_id: STREAM.into(),
            before_version: 40,
            newest: Some(30),
        };
        assert!(matches!(
            parse(&uncovered),
            Some(EventStoreError::InvalidSnapshot { detail: Some(d), .. }) if d == "newest usable snapshot: version 30"
        ));
        // a DETAIL not in its format is kept as the database error
        assert!(
            EventStoreError::from_server("ES007", "m", Some("deleted: maybe, at: t")).is_none()
        );
        assert!(EventStoreError::from_server("ES008", "m", None).is_none());
        assert!(EventStoreError::from_server("ES105", "m", Some("balance: x")).is_none());
    }

    #[test]
    fn account_rules_carry_their_values() {
        let funds = Server::InsufficientFunds {
            account_id: STREAM.into(),
            available: 150,
            requested: 500,
        };
        assert!(matches!(
            parse(&funds),
            Some(EventStoreError::InsufficientFunds {
                available: 150,
                requested: 500,
                ..
            })
        ));
        for status in ["Frozen", "Closed", "Active"] {
            let server = Server::AccountNotActive {
                account_id: STREAM.into(),
                status,
            };
            match parse(&server) {
                Some(EventStoreError::AccountNotActive { status: s, message }) => {
                    assert_eq!(s.as_str(), status);
                    assert_eq!(message, server.message());
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(EventStoreError::from_server("ES102", "m", Some("status: Melted")).is_none());
        let amount = Server::InvalidAmount {
            reason: "-5 is not a positive number of cents".into(),
        };
        assert!(matches!(
            parse(&amount),
            Some(EventStoreError::InvalidAmount { message }) if message.contains("-5")
        ));
        let not_account = Server::NotAnAccount {
            stream_id: STREAM.into(),
        };
        assert!(matches!(
            parse(&not_account),
            Some(EventStoreError::NotAnAccount { .. })
        ));
    }

    #[test]
    fn aggregate_conditions_keep_message_and_detail() {
        let raised = Server::AggregateFailed {
            stream_type: "bad".into(),
            reason: "evolve function ticket.bad(jsonb,jsonb) of aggregate type bad raised an \
                     error at version 1"
                .into(),
            raised: Some("XY001: evolve cannot fold Raise".into()),
        };
        match parse(&raised) {
            Some(err @ EventStoreError::InvalidAggregate { .. }) => {
                assert_eq!(err.sqlstate(), Some("ES301"));
                assert_eq!(err.to_string(), raised.message());
                let EventStoreError::InvalidAggregate { detail, .. } = err else {
                    unreachable!()
                };
                assert_eq!(
                    detail.as_deref(),
                    Some("the function raised: XY001: evolve cannot fold Raise")
                );
            }
            other => panic!("{other:?}"),
        }
        let definition = Server::InvalidDefinition {
            what: "aggregate type ticket".into(),
            reason: "initial_state is an array, not a JSON object".into(),
        };
        assert!(matches!(
            parse(&definition),
            Some(EventStoreError::InvalidAggregate { detail: None, message })
                if message == definition.message()
        ));

        for (stored, want) in [("cart", Some("cart")), (GENERIC, None)] {
            let conflict = Server::StreamTypeConflict {
                stream_id: "e7000000-0000-0000-0000-000000000001".into(),
                stored: stored.into(),
                named: "account".into(),
            };
            match parse(&conflict) {
                Some(
                    ref err @ EventStoreError::StreamTypeConflict {
                        ref stream_type,
                        ref named,
                        ref message,
                    },
                ) => {
                    assert_eq!(stream_type.as_deref(), want);
                    assert_eq!(named, "account");
                    assert_eq!(message, &conflict.message());
                    assert_eq!(err.sqlstate(), Some("ES302"));
                }
                other => panic!("{other:?}"),
            }
        }
        // Without its DETAIL, or in another format: not guessed at.
        assert!(EventStoreError::from_server("ES302", "m", None).is_none());
        assert!(EventStoreError::from_server("ES302", "m", Some("type: a, named: b")).is_none());

        for what in [
            "stream e7000000-0000-0000-0000-000000000002 (a generic stream)",
            "stream type nothing",
        ] {
            let none = Server::NoAggregateType { what: what.into() };
            match parse(&none) {
                Some(e @ EventStoreError::NoAggregateType { .. }) => {
                    assert_eq!(e.sqlstate(), Some("ES303"));
                    assert_eq!(e.to_string(), none.message());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_domains_own_error_passes_through_with_detail_and_hint() {
        // What cart.check raises (examples/cart.sql).
        let full = EventStoreError::from_server_with_hint(
            "CT005",
            "the cart is full: 18 items and 3 more of A would be 21 (at most 20)",
            Some("items: 18, adding: 3, limit: 20"),
            Some("remove items or check out first"),
        );
        match full {
            Some(EventStoreError::Domain {
                ref code,
                ref message,
                ref detail,
                ref hint,
            }) => {
                assert_eq!(code, "CT005");
                assert!(message.starts_with("the cart is full"), "{message}");
                assert_eq!(detail.as_deref(), Some("items: 18, adding: 3, limit: 20"));
                assert_eq!(hint.as_deref(), Some("remove items or check out first"));
            }
            ref other => panic!("{other:?}"),
        }
        let full = full.unwrap();
        // The same, as the server's core raises a check's error (passed on unchanged).
        let server = Server::Raised(event_store_core::error::RaisedError {
            sqlstate: "CT005".into(),
            message: "the cart is full: 18 items and 3 more of A would be 21 (at most 20)".into(),
            detail: Some("items: 18, adding: 3, limit: 20".into()),
            hint: Some("remove items or check out first".into()),
            context: None,
        });
        match EventStoreError::from_server_with_hint(
            server.sqlstate(),
            &server.message(),
            server.detail().as_deref(),
            server.hint().as_deref(),
        ) {
            Some(EventStoreError::Domain {
                code,
                message,
                detail,
                hint,
            }) => assert_eq!(
                (code, message, detail, hint),
                (
                    "CT005".to_owned(),
                    server.message(),
                    server.detail(),
                    server.hint()
                )
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(full.sqlstate(), Some("CT005"));
        assert_eq!(
            full.to_string(),
            "the cart is full: 18 items and 3 more of A would be 21 (at most 20)"
        );
        // Without the HINT (from_server), and any class of a domain's own; a plain RAISE.
        for code in ["CT001", "CT006", "ZZ999", "Q1234", "9A000", "P0001"] {
            match EventStoreError::from_server(code, "refused", None) {
                Some(EventStoreError::Domain {
                    code: c,
                    detail: None,
                    hint: None,
                    ..
                }) => assert_eq!(c, code),
                other => panic!("{code}: {other:?}"),
            }
        }
        // PostgreSQL's own codes and the store's unknown ones are not a domain's: the caller
        // keeps the whole error.
        for code in [
            "23505", "40P01", "42710", "55000", "57014", "P0002", "P0004", "XX000", "HV000",
            "F0000", "0A000", "ES999", "ES300", "", "ct005", "CT05", "CT0055", "CT-05",
        ] {
            assert!(
                EventStoreError::from_server(code, "m", Some("d")).is_none(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn leases_give_owner_and_end() {
        for (owner, consumer) in [
            ("worker-1", Some("worker-2")),
            ("a, lease until: b", None),
            ("x", Some("y, caller: z")),
        ] {
            let server = Server::LeasedByAnother {
                subscription: "orders".into(),
                partition: 3,
                owner: owner.into(),
                lease_until: "2026-12-01 20:24:48.903595+00".into(),
                consumer: consumer.map(str::to_owned),
            };
            match parse(&server) {
                Some(EventStoreError::LeasedByAnother {
                    owner: o,
                    lease_until,
                    ..
                }) => {
                    assert_eq!(o, owner);
                    assert_eq!(lease_until, "2026-12-01 20:24:48.903595+00");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn every_other_condition_keeps_its_message() {
        let cases: Vec<(Server, &str)> = vec![
            (
                Server::StreamNotFound {
                    stream_id: STREAM.into(),
                },
                "ES002",
            ),
            (
                Server::AccountNotFound {
                    account_id: STREAM.into(),
                },
                "ES002",
            ),
            (
                Server::InvalidEvent {
                    index: 1,
                    reason: "\"type\" is missing".into(),
                },
                "ES003",
            ),
            (
                Server::InvalidAccountEvent {
                    index: 2,
                    event_type: "Withdrawn".into(),
                    reason: "\"description\" is missing".into(),
                },
                "ES003",
            ),
            (
                Server::UnreplayableEvent {
                    event_type: "X".into(),
                    reason: "r".into(),
                },
                "ES003",
            ),
            (
                Server::InvalidSnapshot {
                    stream_id: STREAM.into(),
                    version: 99,
                    current: 3,
                },
                "ES005",
            ),
            (
                Server::SnapshotMismatch {
                    stream_id: STREAM.into(),
                    version: 1,
                    expected: "{}".into(),
                },
                "ES005",
            ),
            (
                Server::NoSuchSubscription {
                    kind: "projection",
                    name: "p".into(),
                },
                "ES202",
            ),
            (Server::NullArgument { name: "events" }, "22004"),
            (Server::NullElement { position: 1 }, "22004"),
            (
                Server::InvalidArgument {
                    name: "max_count",
                    reason: "-1 is negative".into(),
                },
                "22023",
            ),
        ];
        for (server, code) in cases {
            let typed = parse(&server).unwrap_or_else(|| panic!("{server:?}"));
            assert_eq!(typed.sqlstate(), Some(code), "{typed:?}");
            assert_eq!(typed.to_string(), server.message());
            if let EventStoreError::InvalidSnapshot { detail, .. } = &typed {
                assert_eq!(detail, &server.detail());
            }
        }
        // Not a store condition: the caller keeps the whole error.
        for server in [
            Server::PreloadRequired {
                function: "es.read_all",
            },
            Server::DuplicateName {
                kind: "subscription",
                name: "s".into(),
            },
            Server::PositionsExhausted { first: 1, count: 2 },
        ] {
            assert!(parse(&server).is_none(), "{server:?}");
        }
    }
}
