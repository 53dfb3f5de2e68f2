//! The rules of `es.append_events` that do not depend on storage (docs/reference.md §2): the four
//! expected-version modes, and how a call whose event ids are already stored is classified
//! (idempotent retry, or a duplicate).

use crate::error::EventStoreError;
use std::fmt;
use uuid::Uuid;

/// The `expected_version` argument, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// `NULL`: no check; racing appends serialize and all succeed.
    Any,
    /// `-1`: the stream must exist, at any version.
    StreamExists,
    /// `0`: the stream must not exist yet.
    NoStream,
    /// `N > 0`: the stream must be at exactly N.
    Exact(i64),
}

impl ExpectedVersion {
    /// Decodes the SQL argument; anything below -1 is an invalid argument (22023).
    pub fn from_sql(value: Option<i64>) -> Result<Self, EventStoreError> {
        match value {
            None => Ok(Self::Any),
            Some(-1) => Ok(Self::StreamExists),
            Some(0) => Ok(Self::NoStream),
            Some(n) if n > 0 => Ok(Self::Exact(n)),
            Some(n) => Err(EventStoreError::InvalidArgument {
                name: "expected_version",
                reason: format!(
                    "{n} is not a version (use N > 0, 0 for a new stream, -1 for an existing stream, or NULL)"
                ),
            }),
        }
    }

    /// Checks the mode against the stream's current version (0 = the stream does not exist).
    pub fn check(self, stream_id: &Uuid, current: i64) -> Result<(), EventStoreError> {
        let ok = match self {
            Self::Any => true,
            Self::StreamExists => {
                if current == 0 {
                    return Err(EventStoreError::StreamNotFound {
                        stream_id: stream_id.to_string(),
                    });
                }
                true
            }
            Self::NoStream => current == 0,
            Self::Exact(n) => current == n,
        };
        if ok {
            Ok(())
        } else {
            Err(self.conflict(stream_id, current))
        }
    }

    /// The SQL value the caller passed (`None` for NULL): what a span records.
    pub fn as_sql(self) -> Option<i64> {
        match self {
            Self::Any => None,
            Self::StreamExists => Some(-1),
            Self::NoStream => Some(0),
            Self::Exact(n) => Some(n),
        }
    }

    /// The ES001 error for this expectation against `actual`.
    pub fn conflict(self, stream_id: &Uuid, actual: i64) -> EventStoreError {
        EventStoreError::WrongExpectedVersion {
            stream_id: stream_id.to_string(),
            expected: self.to_string(),
            actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => write!(f, "any"),
            Self::StreamExists => write!(f, "-1 (an existing stream)"),
            Self::NoStream => write!(f, "0 (no stream)"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// Where a stored event id lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredId {
    /// The event id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: Uuid,
    /// Its version in that stream.
    pub version: i64,
}

/// What to do with a call some of whose event ids are already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// None of the ids is stored: append normally.
    Append,
    /// The whole call is already stored: return this version and write nothing.
    AlreadyAppended {
        /// The version the first call returned (the version of its last event).
        returned: i64,
    },
    /// Some id is stored elsewhere: ES004.
    Duplicate(EventStoreError),
}

/// Classifies a call whose ids (`batch_ids`, one per event, `None` when the client gave none)
/// were looked up in the store (`stored`). It is a retry only when every event has an id, all of
/// them are stored in this stream, in the same order, at consecutive versions starting right
/// after the expected version (any start for NULL and -1).
pub fn classify_retry(
    stream_id: &Uuid,
    expected: ExpectedVersion,
    batch_ids: &[Option<Uuid>],
    stored: &[StoredId],
) -> RetryDecision {
    if stored.is_empty() {
        return RetryDecision::Append;
    }
    let find = |id: &Uuid| stored.iter().find(|s| &s.event_id == id);
    let all_ids: Option<Vec<&StoredId>> = batch_ids
        .iter()
        .map(|id| id.as_ref().and_then(find))
        .collect();
    if let Some(found) = all_ids
        && let Some(first) = found.first()
    {
        let start = first.version;
        let in_order = found
            .iter()
            .enumerate()
            .all(|(i, s)| &s.stream_id == stream_id && s.version == start + i as i64);
        let right_place = match expected {
            ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
            ExpectedVersion::NoStream => start == 1,
            // (checked: an expected version of i64::MAX is valid input, and no retry)
            ExpectedVersion::Exact(n) => n.checked_add(1) == Some(start),
        };
        if in_order && right_place {
            return RetryDecision::AlreadyAppended {
                returned: start + found.len() as i64 - 1,
            };
        }
    }
    // Report the first id of the batch that is stored, so the message names a real conflict.
    let taken = batch_ids
        .iter()
        .flatten()
        .find_map(find)
        .unwrap_or(&stored[0]);
    RetryDecision::Duplicate(EventStoreError::DuplicateEventId {
        event_id: taken.event_id.to_string(),
        stored_at: format!("in stream {} at version {}", taken.stream_id, taken.version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    const S: u128 = 0xabc;

    #[test]
    fn expected_version_modes() {
        assert_eq!(
            ExpectedVersion::from_sql(None).unwrap(),
            ExpectedVersion::Any
        );
        assert_eq!(
            ExpectedVersion::from_sql(Some(-1)).unwrap(),
            ExpectedVersion::StreamExists
        );
        assert_eq!(
            ExpectedVersion::from_sql(Some(0)).unwrap(),
            ExpectedVersion::NoStream
        );
        assert_eq!(
            ExpectedVersion::from_sql(Some(7)).unwrap(),
            ExpectedVersion::Exact(7)
        );
        let err = ExpectedVersion::from_sql(Some(-2)).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
        assert!(
            err.message()
                .starts_with("invalid expected_version: -2 is not a version")
        );
    }

    #[test]
    fn checks_against_current_version() {
        let s = id(S);
        assert!(ExpectedVersion::Any.check(&s, 0).is_ok());
        assert!(ExpectedVersion::Any.check(&s, 9).is_ok());
        assert!(ExpectedVersion::NoStream.check(&s, 0).is_ok());
        assert_eq!(
            ExpectedVersion::NoStream
                .check(&s, 3)
                .unwrap_err()
                .sqlstate(),
            "ES001"
        );
        assert_eq!(
            ExpectedVersion::StreamExists
                .check(&s, 0)
                .unwrap_err()
                .sqlstate(),
            "ES002"
        );
        assert!(ExpectedVersion::StreamExists.check(&s, 1).is_ok());
        assert!(ExpectedVersion::Exact(4).check(&s, 4).is_ok());
        let err = ExpectedVersion::Exact(4).check(&s, 6).unwrap_err();
        assert_eq!(
            err,
            EventStoreError::WrongExpectedVersion {
                stream_id: s.to_string(),
                expected: "4".into(),
                actual: 6
            }
        );
    }

    fn stored(event: u128, stream: u128, version: i64) -> StoredId {
        StoredId {
            event_id: id(event),
            stream_id: id(stream),
            version,
        }
    }

    #[test]
    fn nothing_stored_appends() {
        let d = classify_retry(&id(S), ExpectedVersion::Exact(3), &[Some(id(1))], &[]);
        assert_eq!(d, RetryDecision::Append);
    }

    /// The fuzz test found it: an expected version of i64::MAX whose ids are stored is no
    /// retry (nothing follows i64::MAX), and never an overflow.
    #[test]
    fn the_largest_expected_version_is_no_retry() {
        let batch = [Some(id(1))];
        let found = [stored(1, S, 1)];
        let d = classify_retry(&id(S), ExpectedVersion::Exact(i64::MAX), &batch, &found);
        assert!(matches!(d, RetryDecision::Duplicate(_)), "{d:?}");
    }

    #[test]
    fn exact_retry_returns_first_result() {
        let batch = [Some(id(1)), Some(id(2))];
        let found = [stored(2, S, 5), stored(1, S, 4)];
        let d = classify_retry(&id(S), ExpectedVersion::Exact(3), &batch, &found);
        assert_eq!(d, RetryDecision::AlreadyAppended { returned: 5 });
        let d = classify_retry(&id(S), ExpectedVersion::Any, &batch, &found);
        assert_eq!(d, RetryDecision::AlreadyAppended { returned: 5 });
        let d = classify_retry(&id(S), ExpectedVersion::NoStream, &batch, &found);
        assert!(matches!(d, RetryDecision::Duplicate(_)));
    }

    #[test]
    fn other_reuse_is_a_duplicate() {
        // wrong order
        let d = classify_retry(
            &id(S),
            ExpectedVersion::Exact(3),
            &[Some(id(2)), Some(id(1))],
            &[stored(1, S, 4), stored(2, S, 5)],
        );
        assert!(matches!(d, RetryDecision::Duplicate(ref e) if e.sqlstate() == "ES004"));
        // another stream
        let d = classify_retry(
            &id(S),
            ExpectedVersion::Any,
            &[Some(id(1))],
            &[stored(1, 7, 1)],
        );
        match d {
            RetryDecision::Duplicate(e) => {
                assert_eq!(e.message(), format!("duplicate event id {}", id(1)));
                assert_eq!(
                    e.detail().unwrap(),
                    format!(
                        "the event id is already stored in stream {} at version 1",
                        id(7)
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        // only part of the batch stored
        let d = classify_retry(
            &id(S),
            ExpectedVersion::Any,
            &[Some(id(1)), Some(id(9))],
            &[stored(1, S, 1)],
        );
        assert!(matches!(d, RetryDecision::Duplicate(_)));
        // an event without id cannot be proven stored
        let d = classify_retry(
            &id(S),
            ExpectedVersion::Any,
            &[Some(id(1)), None],
            &[stored(1, S, 1)],
        );
        assert!(matches!(d, RetryDecision::Duplicate(_)));
    }
}

/// Refuses a batch that carries the same `event_id` twice (ES004): such a call can never be
/// stored, and the index would only say so with a raw unique violation.
pub fn check_batch_ids_unique(batch_ids: &[Option<Uuid>]) -> Result<(), EventStoreError> {
    let mut seen = std::collections::HashMap::with_capacity(batch_ids.len());
    for (i, id) in batch_ids.iter().enumerate() {
        if let Some(id) = id
            && let Some(first) = seen.insert(*id, i + 1)
        {
            return Err(EventStoreError::DuplicateEventId {
                event_id: id.to_string(),
                stored_at: format!("in this batch, at positions {first} and {}", i + 1),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn a_batch_cannot_repeat_an_id() {
        let a = Some(Uuid::from_u128(1));
        assert!(check_batch_ids_unique(&[a, None, None, Some(Uuid::from_u128(2))]).is_ok());
        let err = check_batch_ids_unique(&[a, None, a]).unwrap_err();
        assert_eq!(err.sqlstate(), "ES004");
        assert_eq!(
            err.detail().unwrap(),
            "the event id is already stored in this batch, at positions 1 and 3"
        );
    }
}
