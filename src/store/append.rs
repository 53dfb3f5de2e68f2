//! `es.append_events` (docs/reference.md §2): the append pipeline with the rules of the stream's type
//! ([`TypedRules`]): an account's (no client can store an overdraft or a malformed fact through
//! the generic append), a declared type's `check` and `evolve`, none for a generic stream. A
//! stream the append creates gets the type the call names, else the one `es.stream_type_rules`
//! gives its first event.

use super::aggregate::{TypedRules, type_of_new_stream};
use super::pipeline::{self, Batch};
use crate::pg::call::{CallMemory, JsonbArray};
use crate::pg::spi::Connection;
use event_store_core::{EventStoreError, ExpectedVersion};
use uuid::Uuid;

/// Appends the `events` array to `stream`; the stream's new version (its current one for an
/// empty array, after the expected-version check).
pub fn append_events(
    memory: CallMemory<'_>,
    stream: &Uuid,
    expected: ExpectedVersion,
    events: JsonbArray<'_>,
    stream_type: Option<&str>,
) -> Result<i64, EventStoreError> {
    let mut batch = Batch::decode(events, stream)?;
    batch.seal_personal_data(Some(memory), stream)?;
    // Connected when a statement first runs: the native append to an existing stream runs none.
    let conn = Connection::lazy();
    if batch.is_empty() {
        let current = pipeline::current_version(&conn, stream);
        expected.check(stream, current)?;
        return Ok(current);
    }
    // The type is decided only when the append creates the stream (a look-up in the stream
    // type rules otherwise paid by every append).
    pipeline::append(
        &conn,
        stream,
        expected,
        &batch,
        &mut TypedRules::new(stream, &batch, stream_type),
        &|| type_of_new_stream(&conn, stream_type, &batch.metas[0].event_type),
    )
}
