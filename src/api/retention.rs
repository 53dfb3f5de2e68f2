//! Retention and archiving (docs/reference.md §14): the one native entry point, `es.wake_retention`, which
//! asks the launcher for the database's worker when a retention policy is set or resumed. The
//! policies, the worker's batch, `es.archive` and the view `es.retention` are SQL
//! (sql/flow.sql); the worker's loop is in `workers/database.rs`.

use crate::pg::call::Call;
use crate::store::retention;
use event_store_core::EventStoreError;
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.wake_retention()
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Internal: when the calling transaction commits, asks the launcher to start this database's background worker, which applies the retention policies (es.set_retention and es.resume_retention call it). Returns false when the library is not preloaded: then no worker runs and the policies wait.",
    access = "owner",
    span = "retention.wake",
    span_fields = r#"db.system = "postgresql""#
)]
fn wake_retention(_call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    Ok(Datum::from(retention::wake()))
}
