//! The seed's whole event shape for the events the account commands write (docs/reference.md §5): the payload
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

/// A scalar of a flat JSON object the store writes (a command's event, an account's state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    /// A JSON string.
    Text(String),
    /// A JSON number (an integer).
    Int(i64),
}

/// A flat JSON object as its key/value pairs. The extension builds the jsonb from the pairs
/// with PostgreSQL's own builder: printing JSON text and parsing it again was most of what an
/// account command cost.
pub type Pairs = Vec<(&'static str, Scalar)>;

/// The payload of a command's event completed with the seed's metadata (the keys of
/// [`crate::seed::EventMetadata`]); `seed_event_type` is the payload type's seed name
/// ([`seed_event_type`]). A command's payload has none of these keys.
pub fn seed_event(mut payload: Pairs, seed_event_type: &'static str, stored: &StoredAs) -> Pairs {
    payload.extend([
        ("event_id", Scalar::Text(stored.event_id.to_string())),
        (
            "aggregate_id",
            Scalar::Text(stored.aggregate_id.to_string()),
        ),
        ("sequence_number", Scalar::Int(stored.sequence_number)),
        ("event_type", Scalar::Text(seed_event_type.to_owned())),
        (
            "occurred_at",
            Scalar::Text(timestamptz_text(stored.occurred_at).unwrap_or_default()),
        ),
        ("event_version", Scalar::Int(1)),
    ]);
    payload
}

/// The pairs as JSON text (the extension's path where it cannot build the jsonb natively, and
/// the tests').
pub fn to_json_text(pairs: &[(&str, Scalar)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Scalar::Text(t) => serde_json::Value::from(t.as_str()),
                Scalar::Int(i) => serde_json::Value::from(*i),
            };
            ((*k).to_owned(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::AccountEvent;

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

    fn text(t: &str) -> Scalar {
        Scalar::Text(t.into())
    }

    /// Every payload a command writes decodes as the seed's event, with the values stored.
    #[test]
    fn every_command_event_decodes_as_the_seeds() {
        let payloads: [Pairs; 5] = [
            vec![
                ("type", text("Opened")),
                ("account_holder", text("Alice \"A\" \u{e9}")),
                ("initial_balance_cents", Scalar::Int(100)),
            ],
            vec![
                ("type", text("Deposited")),
                ("amount_cents", Scalar::Int(500)),
                ("description", text("salary")),
            ],
            vec![
                ("type", text("Withdrawn")),
                ("amount_cents", Scalar::Int(200)),
                ("description", text("")),
            ],
            vec![("type", text("Frozen")), ("reason", text("audit"))],
            vec![("type", text("Closed")), ("reason", text("moved"))],
        ];
        let names = [
            "AccountOpened",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "AccountFrozen",
            "AccountClosed",
        ];
        for (i, (payload, name)) in payloads.into_iter().zip(names).enumerate() {
            let s = stored(i as i64 + 1);
            let text = to_json_text(&seed_event(payload.clone(), name, &s));
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
            assert_eq!(value.as_object().unwrap().len(), payload.len() + 6);
            for (k, v) in &payload {
                match v {
                    Scalar::Text(t) => assert_eq!(value[k], t.as_str()),
                    Scalar::Int(n) => assert_eq!(value[k], *n),
                }
            }
        }
    }

    #[test]
    fn only_account_types_have_a_seed_name() {
        assert_eq!(seed_event_type("Deposited"), Some("MoneyDeposited"));
        assert_eq!(seed_event_type("Renamed"), None);
    }
}
