//! The life of a stream (docs/reference.md §14): soft and hard deletion, undeletion and truncation before a
//! snapshot, as pure decisions.
//!
//! Consumers learn of a deletion through the log itself: the store appends a marker event at
//! the stream's head (`$stream_deleted`, `$stream_undeleted`), so `es.read_all`, subscriptions
//! and projections see it in order with the stream's other events. Event types that start with
//! `$` are therefore the store's own: a user's append of one is refused ([`check_not_reserved`]).

use crate::error::EventStoreError;

/// The marker a deletion appends (data `{"type": "$stream_deleted", "hard": …}`).
pub const STREAM_DELETED: &str = "$stream_deleted";
/// The marker `es.undelete_stream` appends.
pub const STREAM_UNDELETED: &str = "$stream_undeleted";

/// Whether an event type is reserved for the store (starts with `$`).
pub fn is_reserved(event_type: &str) -> bool {
    event_type.starts_with('$')
}

/// ES003 for a user's event whose type is reserved: element `index` (1-based) of the batch.
pub fn check_not_reserved(index: usize, event_type: &str) -> Result<(), EventStoreError> {
    if is_reserved(event_type) {
        return Err(EventStoreError::InvalidEvent {
            index,
            reason: format!(
                "event type \"{event_type}\" is reserved: types starting with $ are the store's own markers ($stream_deleted, $stream_undeleted)"
            ),
        });
    }
    Ok(())
}

/// How a stream is deleted (`es.streams.deleted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Hidden from `load_events` and the state functions; appends refused until undeleted.
    Soft,
    /// A tombstone: the events are removed, the id can never be used again.
    Hard,
}

impl Deletion {
    /// The value stored in `es.streams.deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Deletion::Soft => "soft",
            Deletion::Hard => "hard",
        }
    }

    /// Reads `es.streams.deleted` (`None`: not a deletion the store wrote).
    pub fn parse(s: &str) -> Option<Deletion> {
        match s {
            "soft" => Some(Deletion::Soft),
            "hard" => Some(Deletion::Hard),
            _ => None,
        }
    }
}

/// What `es.delete_stream` may do to a stream in its current deletion state: a live stream is
/// deleted either way, a soft-deleted one only hard (the tombstone follows the soft delete), a
/// hard-deleted one never again. Refusals are ES007 with the stream's current state.
pub fn may_delete(
    stream_id: &str,
    current: Option<Deletion>,
    deleted_at: &str,
    hard: bool,
) -> Result<(), EventStoreError> {
    match (current, hard) {
        (None, _) | (Some(Deletion::Soft), true) => Ok(()),
        (Some(d), _) => Err(EventStoreError::StreamDeleted {
            stream_id: stream_id.to_owned(),
            hard: d == Deletion::Hard,
            deleted_at: deleted_at.to_owned(),
        }),
    }
}

/// What a truncation of a stream at `version`, already truncated before `truncated_before`
/// (1 when never), does with `before_version`: `Ok(None)` removes nothing (the cut is at or
/// below the current one), `Ok(Some(v))` cuts before `v`; 22023 outside `1..=version`.
pub fn truncation_cut(
    before_version: i64,
    version: i64,
    truncated_before: i64,
) -> Result<Option<i64>, EventStoreError> {
    if before_version < 1 || before_version > version {
        return Err(EventStoreError::InvalidArgument {
            name: "before_version",
            reason: format!(
                "{before_version} is outside 1..{version} (the stream's version: its newest event is always kept)"
            ),
        });
    }
    Ok((before_version > truncated_before).then_some(before_version))
}

/// ES008 unless a read from `from` (events with a version above it) finds every event it needs
/// on a stream truncated before `truncated_before`: it must start at or after the snapshot the
/// truncation kept, at version `truncated_before - 1`.
pub fn check_readable_from(
    stream_id: &str,
    from: i64,
    truncated_before: Option<i64>,
) -> Result<(), EventStoreError> {
    match truncated_before {
        Some(cut) if from < cut - 1 => Err(EventStoreError::StreamTruncated {
            stream_id: stream_id.to_owned(),
            before_version: cut,
            asked: from + 1,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_types_are_reserved() {
        assert!(is_reserved(STREAM_DELETED) && is_reserved(STREAM_UNDELETED));
        assert!(is_reserved("$anything"));
        assert!(!is_reserved("Deposited") && !is_reserved("a$b") && !is_reserved(""));
        let err = check_not_reserved(2, "$stream_deleted").unwrap_err();
        assert_eq!(err.sqlstate(), "ES003");
        assert!(err.message().starts_with(
            "invalid event at position 2 of the batch: event type \"$stream_deleted\" is reserved"
        ));
        assert!(check_not_reserved(1, "Opened").is_ok());
    }

    #[test]
    fn deletion_round_trips() {
        for d in [Deletion::Soft, Deletion::Hard] {
            assert_eq!(Deletion::parse(d.as_str()), Some(d));
        }
        assert_eq!(Deletion::parse("maybe"), None);
    }

    #[test]
    fn what_may_be_deleted() {
        assert!(may_delete("s", None, "", false).is_ok());
        assert!(may_delete("s", None, "", true).is_ok());
        assert!(may_delete("s", Some(Deletion::Soft), "t", true).is_ok());
        let soft_again = may_delete("s", Some(Deletion::Soft), "t", false).unwrap_err();
        assert_eq!(soft_again.sqlstate(), "ES007");
        assert_eq!(soft_again.detail().as_deref(), Some("deleted: soft, at: t"));
        for hard in [false, true] {
            let e = may_delete("s", Some(Deletion::Hard), "t", hard).unwrap_err();
            assert_eq!(e.sqlstate(), "ES007");
            assert_eq!(e.detail().as_deref(), Some("deleted: hard, at: t"));
        }
    }

    #[test]
    fn truncation_cuts_within_the_stream() {
        assert_eq!(truncation_cut(5, 10, 1), Ok(Some(5)));
        assert_eq!(truncation_cut(10, 10, 1), Ok(Some(10)));
        assert_eq!(truncation_cut(1, 10, 1), Ok(None));
        assert_eq!(truncation_cut(4, 10, 5), Ok(None));
        assert_eq!(truncation_cut(5, 10, 5), Ok(None));
        assert_eq!(truncation_cut(6, 10, 5), Ok(Some(6)));
        for bad in [0, -1, 11, i64::MAX] {
            assert_eq!(truncation_cut(bad, 10, 1).unwrap_err().sqlstate(), "22023");
        }
    }

    #[test]
    fn reads_below_the_cut_are_refused() {
        assert!(check_readable_from("s", 0, None).is_ok());
        assert!(check_readable_from("s", 4, Some(5)).is_ok());
        assert!(check_readable_from("s", 7, Some(5)).is_ok());
        let e = check_readable_from("s", 0, Some(5)).unwrap_err();
        assert_eq!(e.sqlstate(), "ES008");
        assert_eq!(e.message(), "stream s is truncated before version 5");
        assert_eq!(
            e.detail().as_deref(),
            Some("truncated before: 5, asked from: 1")
        );
        assert!(check_readable_from("s", 3, Some(5)).is_err());
    }
}
