//! The seed's whole event shape for the events the account commands write (SPEC §5): the payload
//! a command decides (`{"type":"Deposited","amount_cents":…,"description":…}`) completed with the
//! flattened [`crate::seed::EventMetadata`] the seed's factories (`AccountEvent::new_deposited`…)
//! put in every event, so the seed's client decodes what the commands write with
//! `serde_json::from_value::<AccountEvent>`.
//!
//! Why here and not in the command: the `sequence_number` is the version the append pipeline
//! assigns once it holds the stream, so the extension completes the payload at insert time with
//! the values it stores in the columns (`event_id`, `version`, `occurred_at`).

use chrono::{DateTime, SecondsFormat};
use uuid::Uuid;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The seed's `event_type` for an account event's `"type"` (`Deposited` → `MoneyDeposited`), as
/// its factories name them; `None` for a type that is not an account event.
pub fn seed_event_type(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "Opened" => "AccountOpened",
        "Deposited" => "MoneyDeposited",
        "Withdrawn" => "MoneyWithdrawn",
        "Frozen" => "AccountFrozen",
        "Closed" => "AccountClosed",
        _ => return None,
    })
}

/// A PostgreSQL `timestamptz` (microseconds since 2000-01-01 UTC) as the seed's serde writes a
/// `DateTime<Utc>`: RFC 3339 in UTC with a `Z`, to the microsecond. `None` for the infinities
/// and values chrono cannot represent.
pub fn timestamptz_text(postgres_micros: i64) -> Option<String> {
    let unix = postgres_micros.checked_add(POSTGRES_EPOCH_MICROS)?;
    DateTime::from_timestamp_micros(unix).map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// What the store knows of a command's event when it inserts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAs {
    /// The event id stored in `es.events.event_id`.
    pub event_id: Uuid,
    /// The stream (the seed's `aggregate_id`).
    pub aggregate_id: Uuid,
    /// The version the append assigned (the seed's `sequence_number`).
    pub sequence_number: i64,
    /// `es.events.occurred_at`, in PostgreSQL's microseconds.
    pub occurred_at: i64,
}

/// The payload completed with the seed's metadata: the JSON text to store as `data`. The
/// payload's own keys win over nothing (a command's payload has none of the metadata keys).
pub fn complete(payload: &serde_json::Value, stored: &StoredAs) -> String {
    let mut object = match payload {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let event_type = object
        .get("type")
        .and_then(serde_json::Value::as_str)
        .and_then(seed_event_type)
        .unwrap_or_default();
    let occurred_at = timestamptz_text(stored.occurred_at).unwrap_or_default();
    let metadata = [
        ("event_id", stored.event_id.to_string().into()),
        ("aggregate_id", stored.aggregate_id.to_string().into()),
        ("sequence_number", stored.sequence_number.into()),
        ("event_type", event_type.into()),
        ("occurred_at", occurred_at.into()),
        ("event_version", 1.into()),
    ];
    for (key, value) in metadata {
        object.entry(key).or_insert(value);
    }
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::AccountEvent;
    use serde_json::json;

    fn stored(seq: i64) -> StoredAs {
        StoredAs {
            event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            aggregate_id: Uuid::from_u128(42),
            sequence_number: seq,
            // 2026-12-01 20:22:27.123456 UTC
            occurred_at: 849_471_747_123_456,
        }
    }

    #[test]
    fn timestamps_are_the_seeds_rfc3339() {
        assert_eq!(timestamptz_text(0).unwrap(), "2000-01-01T00:00:00.000000Z");
        assert_eq!(
            timestamptz_text(849_471_747_123_456).unwrap(),
            "2026-12-01T20:22:27.123456Z"
        );
        assert_eq!(timestamptz_text(i64::MAX), None);
    }

    /// Every payload a command writes decodes as the seed's event, with the values stored.
    #[test]
    fn every_command_event_decodes_as_the_seeds() {
        let payloads = [
            json!({"type": "Opened", "account_holder": "Alice", "initial_balance_cents": 100}),
            json!({"type": "Deposited", "amount_cents": 500, "description": "salary"}),
            json!({"type": "Withdrawn", "amount_cents": 200, "description": ""}),
            json!({"type": "Frozen", "reason": "audit"}),
            json!({"type": "Closed", "reason": "moved"}),
        ];
        let names = [
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "AccountFrozen",
            "AccountClosed",
        ];
        for (i, (payload, name)) in payloads.iter().zip(names).enumerate() {
            let s = stored(i as i64 + 1);
            let text = complete(payload, &s);
            let event: AccountEvent = serde_json::from_str(&text).unwrap();
            let m = event.metadata();
            assert_eq!(m.event_id, s.event_id);
            assert_eq!(m.aggregate_id, s.aggregate_id);
            assert_eq!(m.sequence_number, i as i64 + 1);
            assert_eq!(m.event_type, name);
            assert_eq!(m.event_version, 1);
            assert_eq!(
                m.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                "2026-12-01T20:22:27.123456Z"
            );
            // The payload is kept as the command decided it.
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            for (k, v) in payload.as_object().unwrap() {
                assert_eq!(&value[k], v);
            }
        }
    }

    #[test]
    fn only_account_types_have_a_seed_name() {
        assert_eq!(seed_event_type("Deposited"), Some("MoneyDeposited"));
        assert_eq!(seed_event_type("Renamed"), None);
    }
}
