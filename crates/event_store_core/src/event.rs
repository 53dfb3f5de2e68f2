//! Validation of one appended event object (docs/reference.md §2): what the store reads from it and the rules
//! it must follow, including the seed's serde JSON (`aggregate_id`, `sequence_number`).
//!
//! The SQL layer reads the keys straight out of the binary jsonb (no text round trip) and hands
//! them over as [`JsonField`]s, so the rules here never see a PostgreSQL type.

use crate::error::EventStoreError;
use chrono::DateTime;
use uuid::Uuid;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One top-level key of an event object, as found in the jsonb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonField<'a> {
    /// The key is not there.
    Absent,
    /// JSON `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number that is an exact integer fitting in a bigint.
    Integer(i64),
    /// Any other number (a fraction, or an integer beyond a bigint), in its canonical text form.
    Number(NumberText),
    /// A string.
    String(&'a str),
    /// A string whose bytes are not valid UTF-8 (possible in a database whose encoding is not
    /// UTF-8); the store reads its keys as UTF-8 text.
    NotUtf8,
    /// An object.
    Object,
    /// An array.
    Array,
}

impl JsonField<'_> {
    /// The JSON kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Absent => "nothing",
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Integer(_) | Self::Number(_) => "a number",
            Self::String(_) => "a string",
            Self::NotUtf8 => "a string that is not valid UTF-8",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }

    fn is_missing(&self) -> bool {
        matches!(self, Self::Absent | Self::Null)
    }
}

/// The canonical text of a number that is not a bigint integer, kept inline so a
/// [`JsonField`] owns it (it is only ever shown in messages): at most [`NumberText::MAX`] bytes,
/// a longer number is cut and ends in `...`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NumberText {
    len: u8,
    bytes: [u8; NumberText::MAX],
}

impl NumberText {
    /// The longest text kept.
    pub const MAX: usize = 40;

    /// The text of `s`, cut to [`Self::MAX`] bytes (on a character boundary).
    pub fn new(s: &str) -> Self {
        let mut text = NumberText {
            len: 0,
            bytes: [0; Self::MAX],
        };
        let cut = if s.len() <= Self::MAX {
            s
        } else {
            let mut end = Self::MAX - 3;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        };
        text.bytes[..cut.len()].copy_from_slice(cut.as_bytes());
        let mut len = cut.len();
        if cut.len() < s.len() {
            text.bytes[len..len + 3].copy_from_slice(b"...");
            len += 3;
        }
        text.len = len as u8;
        text
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // `new` copies whole characters of a str, plus ASCII.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl std::fmt::Display for NumberText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for NumberText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The keys of one element of the `events` array that the store reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent<'a> {
    /// The kind of the element itself (must be [`JsonField::Object`]).
    pub shape: JsonField<'a>,
    /// `"type"`.
    pub event_type: JsonField<'a>,
    /// `"event_id"`.
    pub event_id: JsonField<'a>,
    /// `"occurred_at"`.
    pub occurred_at: JsonField<'a>,
    /// `"event_version"`.
    pub event_version: JsonField<'a>,
    /// `"metadata"`.
    pub metadata: JsonField<'a>,
    /// `"aggregate_id"` (the seed's flattened `EventMetadata`).
    pub aggregate_id: JsonField<'a>,
    /// `"sequence_number"` (the seed's flattened `EventMetadata`).
    pub sequence_number: JsonField<'a>,
}

impl<'a> RawEvent<'a> {
    /// An element of the given shape with none of the keys present.
    pub fn empty(shape: JsonField<'a>) -> Self {
        Self {
            shape,
            event_type: JsonField::Absent,
            event_id: JsonField::Absent,
            occurred_at: JsonField::Absent,
            event_version: JsonField::Absent,
            metadata: JsonField::Absent,
            aggregate_id: JsonField::Absent,
            sequence_number: JsonField::Absent,
        }
    }
}

/// What the store keeps of a valid event besides the object itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// The `"type"`, non-empty.
    pub event_type: String,
    /// The client's `event_id`, if given.
    pub event_id: Option<Uuid>,
    /// The client's `occurred_at` in microseconds since 2000-01-01 UTC (PostgreSQL's epoch).
    pub occurred_at: Option<i64>,
    /// Payload schema version, default 1.
    pub event_version: i32,
    /// Whether a `metadata` object is present (the SQL layer extracts it).
    pub has_metadata: bool,
    /// The seed's `sequence_number`, checked against the assigned version after the lock.
    pub sequence_number: Option<i64>,
}

/// Checks one element of a batch (1-based `index`) appended to `stream_id`.
pub fn validate_event(
    index: usize,
    raw: &RawEvent<'_>,
    stream_id: &Uuid,
) -> Result<EventMeta, EventStoreError> {
    let invalid = |reason: String| EventStoreError::InvalidEvent { index, reason };
    if raw.shape != JsonField::Object {
        return Err(invalid(format!(
            "an event must be a JSON object, got {}",
            raw.shape.kind()
        )));
    }
    let event_type = match raw.event_type {
        JsonField::String("") => return Err(invalid("\"type\" must not be empty".into())),
        JsonField::String(t) => t.to_owned(),
        JsonField::Absent => return Err(invalid("\"type\" is missing".into())),
        JsonField::NotUtf8 => {
            return Err(invalid(
                "\"type\" must be valid UTF-8 text (event types are read as UTF-8)".into(),
            ));
        }
        other => {
            return Err(invalid(format!(
                "\"type\" must be a string, got {}",
                other.kind()
            )));
        }
    };
    let event_id = match raw.event_id {
        f if f.is_missing() => None,
        JsonField::String(s) => Some(parse_uuid(s).ok_or_else(|| {
            invalid(format!(
                "\"event_id\" must be a uuid, got \"{}\"",
                truncate(s)
            ))
        })?),
        other => {
            return Err(invalid(format!(
                "\"event_id\" must be a uuid string, got {}",
                other.kind()
            )));
        }
    };
    let occurred_at = match raw.occurred_at {
        f if f.is_missing() => None,
        JsonField::String(s) => Some(parse_timestamp(s).ok_or_else(|| {
            invalid(format!(
                "\"occurred_at\" must be a timestamp with a time zone (RFC 3339), got \"{}\"",
                truncate(s)
            ))
        })?),
        other => {
            return Err(invalid(format!(
                "\"occurred_at\" must be a timestamp string, got {}",
                other.kind()
            )));
        }
    };
    let event_version = match raw.event_version {
        f if f.is_missing() => 1,
        JsonField::Integer(v) => match i32::try_from(v) {
            Ok(v) if v >= 1 => v,
            _ => {
                return Err(invalid(format!(
                    "\"event_version\" must be an integer >= 1, got {v}"
                )));
            }
        },
        JsonField::Number(n) => {
            return Err(invalid(format!(
                "\"event_version\" must be an integer >= 1, got {n}"
            )));
        }
        other => {
            return Err(invalid(format!(
                "\"event_version\" must be an integer >= 1, got {}",
                other.kind()
            )));
        }
    };
    let has_metadata = match raw.metadata {
        f if f.is_missing() => false,
        JsonField::Object => true,
        other => {
            return Err(invalid(format!(
                "\"metadata\" must be an object, got {}",
                other.kind()
            )));
        }
    };
    match raw.aggregate_id {
        f if f.is_missing() => {}
        JsonField::String(s) if parse_uuid(s).as_ref() == Some(stream_id) => {}
        JsonField::String(s) => {
            return Err(invalid(format!(
                "\"aggregate_id\" {} does not match the stream id {stream_id}",
                truncate(s)
            )));
        }
        other => {
            return Err(invalid(format!(
                "\"aggregate_id\" must be a uuid string, got {}",
                other.kind()
            )));
        }
    }
    let sequence_number = match raw.sequence_number {
        f if f.is_missing() => None,
        JsonField::Integer(v) => Some(v),
        JsonField::Number(n) => {
            return Err(invalid(format!(
                "\"sequence_number\" must be an integer, got {n}"
            )));
        }
        other => {
            return Err(invalid(format!(
                "\"sequence_number\" must be an integer, got {}",
                other.kind()
            )));
        }
    };
    Ok(EventMeta {
        event_type,
        event_id,
        occurred_at,
        event_version,
        has_metadata,
        sequence_number,
    })
}

/// Checks the seed's `sequence_number`s against the versions the store assigns
/// (`first_version`, `first_version + 1`, ...), once the stream is locked.
pub fn check_sequence_numbers(
    metas: &[EventMeta],
    first_version: i64,
) -> Result<(), EventStoreError> {
    for (i, meta) in metas.iter().enumerate() {
        let assigned = first_version + i as i64;
        if let Some(seq) = meta.sequence_number
            && seq != assigned
        {
            return Err(EventStoreError::InvalidEvent {
                index: i + 1,
                reason: format!(
                    "\"sequence_number\" {seq} does not match the version the store assigns, {assigned}"
                ),
            });
        }
    }
    Ok(())
}

/// `es.streams.stream_type` of an account stream.
pub const ACCOUNT_STREAM_TYPE: &str = "account";

fn parse_uuid(s: &str) -> Option<Uuid> {
    Uuid::try_parse(s).ok()
}

/// RFC 3339 (what serde writes for `chrono::DateTime<Utc>`), also with a space for the `T`.
fn parse_timestamp(s: &str) -> Option<i64> {
    let t = DateTime::parse_from_rfc3339(s).ok()?;
    let unix_micros =
        t.timestamp().checked_mul(1_000_000)? + i64::from(t.timestamp_subsec_micros());
    unix_micros.checked_sub(PG_EPOCH_OFFSET_MICROS)
}

/// Keeps error messages short when a client sends a huge value.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        s.chars().take(MAX).collect::<String>() + "..."
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a [`RawEvent`] from a serde value, the way the SQL layer does from a jsonb.
    pub(crate) fn raw_from_json(v: &serde_json::Value) -> RawEvent<'_> {
        fn field(v: Option<&serde_json::Value>) -> JsonField<'_> {
            match v {
                None => JsonField::Absent,
                Some(serde_json::Value::Null) => JsonField::Null,
                Some(serde_json::Value::Bool(b)) => JsonField::Bool(*b),
                Some(serde_json::Value::Number(n)) => match n.as_i64() {
                    Some(i) => JsonField::Integer(i),
                    None => JsonField::Number(NumberText::new(&n.to_string())),
                },
                Some(serde_json::Value::String(s)) => JsonField::String(s),
                Some(serde_json::Value::Object(_)) => JsonField::Object,
                Some(serde_json::Value::Array(_)) => JsonField::Array,
            }
        }
        let Some(obj) = v.as_object() else {
            return RawEvent::empty(field(Some(v)));
        };
        RawEvent {
            shape: JsonField::Object,
            event_type: field(obj.get("type")),
            event_id: field(obj.get("event_id")),
            occurred_at: field(obj.get("occurred_at")),
            event_version: field(obj.get("event_version")),
            metadata: field(obj.get("metadata")),
            aggregate_id: field(obj.get("aggregate_id")),
            sequence_number: field(obj.get("sequence_number")),
        }
    }

    const STREAM: &str = "8d0f6a34-6a4b-4c3e-9a57-3d2b1c0e9f11";

    fn stream() -> Uuid {
        Uuid::parse_str(STREAM).unwrap()
    }

    fn check(v: serde_json::Value) -> Result<EventMeta, EventStoreError> {
        validate_event(3, &raw_from_json(&v), &stream())
    }

    fn reason(v: serde_json::Value) -> String {
        match check(v) {
            Err(EventStoreError::InvalidEvent { index: 3, reason }) => reason,
            other => panic!("expected ES003 at 3, got {other:?}"),
        }
    }

    #[test]
    fn seed_serde_json_is_accepted_unchanged() {
        // What `serde_json::to_string(&AccountEvent::Opened { .. })` writes in the seed.
        let v = serde_json::json!({
            "type": "Opened",
            "event_id": "0190c1d2-0000-7000-8000-000000000001",
            "aggregate_id": STREAM,
            "sequence_number": 1,
            "event_type": "AccountOpened",
            "occurred_at": "2025-10-11T08:30:00.123456789Z",
            "event_version": 1,
            "account_holder": "Alice",
            "initial_balance_cents": 0
        });
        let meta = check(v).unwrap();
        assert_eq!(meta.event_type, "Opened");
        assert_eq!(
            meta.event_id.unwrap().to_string(),
            "0190c1d2-0000-7000-8000-000000000001"
        );
        assert_eq!(meta.sequence_number, Some(1));
        assert_eq!(meta.event_version, 1);
        // 2025-10-11T08:30:00.123456Z in microseconds since 2000-01-01
        assert_eq!(meta.occurred_at, Some(813_486_600_123_456));
        assert!(check_sequence_numbers(&[meta], 1).is_ok());
    }

    #[test]
    fn minimal_event_gets_defaults() {
        let meta = check(serde_json::json!({"type": "ItemAdded"})).unwrap();
        assert_eq!(
            meta,
            EventMeta {
                event_type: "ItemAdded".into(),
                event_id: None,
                occurred_at: None,
                event_version: 1,
                has_metadata: false,
                sequence_number: None
            }
        );
    }

    #[test]
    fn every_bad_shape_is_named() {
        use serde_json::json;
        assert_eq!(
            reason(json!([1])),
            "an event must be a JSON object, got an array"
        );
        assert_eq!(
            reason(json!("x")),
            "an event must be a JSON object, got a string"
        );
        assert_eq!(reason(json!({})), "\"type\" is missing");
        assert_eq!(reason(json!({"type": ""})), "\"type\" must not be empty");
        assert_eq!(
            reason(json!({"type": 5})),
            "\"type\" must be a string, got a number"
        );
        assert_eq!(
            reason(json!({"type": null})),
            "\"type\" must be a string, got null"
        );
        assert_eq!(
            reason(json!({"type": "T", "event_id": "nope"})),
            "\"event_id\" must be a uuid, got \"nope\""
        );
        assert_eq!(
            reason(json!({"type": "T", "event_id": 7})),
            "\"event_id\" must be a uuid string, got a number"
        );
        assert!(
            reason(json!({"type": "T", "occurred_at": "yesterday"})).starts_with("\"occurred_at\"")
        );
        assert!(
            reason(json!({"type": "T", "occurred_at": "2025-10-11T08:30:00"}))
                .contains("time zone")
        );
        assert_eq!(
            reason(json!({"type": "T", "event_version": 0})),
            "\"event_version\" must be an integer >= 1, got 0"
        );
        assert_eq!(
            reason(json!({"type": "T", "event_version": 1.5})),
            "\"event_version\" must be an integer >= 1, got 1.5"
        );
        assert_eq!(
            reason(json!({"type": "T", "event_version": "1"})),
            "\"event_version\" must be an integer >= 1, got a string"
        );
        assert_eq!(
            reason(json!({"type": "T", "metadata": [1]})),
            "\"metadata\" must be an object, got an array"
        );
        assert!(
            reason(json!({"type": "T", "aggregate_id": "8d0f6a34-6a4b-4c3e-9a57-3d2b1c0e9f12"}))
                .contains("does not match the stream id")
        );
        assert_eq!(
            reason(json!({"type": "T", "sequence_number": "1"})),
            "\"sequence_number\" must be an integer, got a string"
        );
    }

    #[test]
    fn sequence_numbers_must_match_assigned_versions() {
        let m = |seq| EventMeta {
            event_type: "T".into(),
            event_id: None,
            occurred_at: None,
            event_version: 1,
            has_metadata: false,
            sequence_number: seq,
        };
        assert!(check_sequence_numbers(&[m(Some(5)), m(None), m(Some(7))], 5).is_ok());
        let err = check_sequence_numbers(&[m(Some(5)), m(Some(5))], 5).unwrap_err();
        assert_eq!(
            err,
            EventStoreError::InvalidEvent {
                index: 2,
                reason: "\"sequence_number\" 5 does not match the version the store assigns, 6"
                    .into()
            }
        );
    }

    #[test]
    fn long_values_are_truncated_in_messages() {
        let long = "x".repeat(500);
        let r = reason(serde_json::json!({"type": "T", "event_id": long}));
        assert!(r.len() < 120, "{r}");
    }
}
