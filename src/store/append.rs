//! `es.append_events` (SPEC §2): the append pipeline with the account rules, which apply to every
//! stream whose first event is the seed's `Opened` (SPEC §5: no client can store an overdraft or
//! a malformed fact through the generic append).

use super::account::AccountRules;
use super::pipeline::{self, Batch};
use crate::pg::call::JsonbArray;
use crate::pg::spi::Connection;
use event_store_core::{EventStoreError, ExpectedVersion};
use uuid::Uuid;

/// Appends the `events` array to `stream`; the stream's new version (its current one for an
/// empty array, after the expected-version check).
pub fn append_events(
    stream: &Uuid,
    expected: ExpectedVersion,
    events: JsonbArray<'_>,
) -> Result<i64, EventStoreError> {
    let batch = Batch::decode(events, stream)?;
    let conn = Connection::connect();
    if batch.is_empty() {
        let current = pipeline::current_version(&conn, stream);
        expected.check(stream, current)?;
        return Ok(current);
    }
    pipeline::append(
        &conn,
        stream,
        expected,
        &batch,
        &mut AccountRules::for_batch(stream, &batch),
    )
}
