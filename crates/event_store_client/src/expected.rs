//! [`ExpectedVersion`]: the `expected_version` argument of `es.append_events` (docs/reference.md
//! §2) as a type, so a call says which check it wants instead of passing a magic number.

use std::fmt;

/// What the stream must be at for an append to go through; anything else is
/// [`EventStoreError::ConcurrencyConflict`](crate::EventStoreError::ConcurrencyConflict) (ES001),
/// and nothing of the batch is stored.
///
/// The four modes of the SQL argument: `NULL`, `-1`, `0` and `N > 0`. Old call sites that pass an
/// `i64` or an `Option<i64>` convert with [`From`]:
///
/// ```
/// use event_store_client::ExpectedVersion;
///
/// assert_eq!(ExpectedVersion::from(0), ExpectedVersion::NoStream);
/// assert_eq!(ExpectedVersion::from(Some(3)), ExpectedVersion::Exact(3));
/// assert_eq!(ExpectedVersion::from(None), ExpectedVersion::Any);
/// assert_eq!(ExpectedVersion::StreamExists.as_sql(), Some(-1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpectedVersion {
    /// No check (`NULL`): racing appends serialize and all succeed (a declared aggregate's
    /// `check` still judges each event against the current state, under the stream's lock).
    #[default]
    Any,
    /// The stream must not exist yet (`0`).
    NoStream,
    /// The stream must exist, at any version (`-1`); a missing stream is
    /// [`EventStoreError::StreamNotFound`](crate::EventStoreError::StreamNotFound).
    StreamExists,
    /// The stream must be at exactly this version (`N > 0`; the version read before deciding).
    /// A value below -1 is sent as it is and refused by the store with `22023`.
    Exact(i64),
}

impl ExpectedVersion {
    /// The SQL argument: `None` for `NULL`.
    pub fn as_sql(self) -> Option<i64> {
        match self {
            Self::Any => None,
            Self::NoStream => Some(0),
            Self::StreamExists => Some(-1),
            Self::Exact(n) => Some(n),
        }
    }
}

impl From<i64> for ExpectedVersion {
    /// `0` is [`NoStream`](Self::NoStream), `-1` [`StreamExists`](Self::StreamExists), any
    /// other number [`Exact`](Self::Exact).
    fn from(version: i64) -> Self {
        match version {
            0 => Self::NoStream,
            -1 => Self::StreamExists,
            n => Self::Exact(n),
        }
    }
}

impl From<Option<i64>> for ExpectedVersion {
    /// `None` is [`Any`](Self::Any); a number as in `From<i64>`.
    fn from(version: Option<i64>) -> Self {
        version.map_or(Self::Any, Self::from)
    }
}

impl From<event_store_core::ExpectedVersion> for ExpectedVersion {
    /// The store's own decoding of the argument (the same four modes).
    fn from(version: event_store_core::ExpectedVersion) -> Self {
        Self::from(version.as_sql())
    }
}

impl fmt::Display for ExpectedVersion {
    /// As the store's ES001 DETAIL writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => write!(f, "any"),
            Self::StreamExists => write!(f, "-1 (an existing stream)"),
            Self::NoStream => write!(f, "0 (no stream)"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_modes_round_trip_through_sql_and_the_core() {
        for sql in [None, Some(-1), Some(0), Some(1), Some(42)] {
            let mine = ExpectedVersion::from(sql);
            assert_eq!(mine.as_sql(), sql);
            let core = event_store_core::ExpectedVersion::from_sql(sql).unwrap();
            assert_eq!(ExpectedVersion::from(core), mine);
            assert_eq!(mine.to_string(), core.to_string());
        }
    }
}
