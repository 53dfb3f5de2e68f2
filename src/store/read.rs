//! Reads (docs/reference.md §3): a stream's events (`es.load_events`), its version (`es.stream_version`) and
//! the gap-safe global log (`es.read_all`).

use super::sql::all_events;
use super::sql::{LOAD_EVENTS, LOAD_EVENTS_ARCHIVED, STREAM_VERSION};
use crate::pg::call::{ResultSet, i64_datum, uuid_datum};
use crate::pg::heap::{self, Outcome};
use crate::pg::positions::{self, Horizon};
use crate::pg::server;
use crate::pg::settings;
use crate::pg::spi::cstr;
use crate::pg::spi::{Connection, Reading, Stmt};
use crate::pg::udf;
use crate::store::life;
use crate::store::personal;
use crate::store::upcast::{RowColumns, Upcasting};
use event_store_core::EventStoreError;
use event_store_core::lifecycle::check_readable_from;
use pgrx::pg_sys::BuiltinOid::INT8OID;
use std::cell::OnceCell;
use uuid::Uuid;

/// `es.load_events`: the events of `stream` after `from` (at most `max`, `None` = all), into
/// `out`, in version order.
pub fn load_events(
    stream: &Uuid,
    from: i64,
    max: Option<i64>,
    out: &mut ResultSet,
) -> Result<(), EventStoreError> {
    match upcasting(out) {
        false => load_events_as_stored(stream, from, max, out),
        true => udf::isolated(|| {
            load_events_as_stored(stream, from, max, out)?;
            out.take_error()
        }),
    }
}

/// Sets `out` up to hand out the rows of `es.events` put into it as the caller may see them:
/// upcast when there are upcasters (then the read must run in an [`udf::isolated`] unit, and
/// this returns true: upcasters are the user's code), their sealed personal values revealed or
/// erased when personal data was ever defined here ([`personal::Revealer`]).
pub fn upcasting(out: &mut ResultSet) -> bool {
    // The common read: nothing to set up, known without a look-up (not even the row type's
    // columns by name, ~370 instructions a call); what follows would find the same.
    if Upcasting::known_none() && personal::Revealer::known_none() {
        return false;
    }
    let Some(columns) = RowColumns::of(out.row_type()) else {
        return false;
    };
    let mut up = Upcasting::load_unconnected();
    let mut reveal = personal::Revealer::load();
    if up.is_none() && reveal.is_none() {
        return false;
    }
    let isolated = up.is_some();
    out.set_rewrite(Box::new(move |row| {
        if let Some(up) = up.as_mut() {
            up.apply_to_row(row, columns)?;
        }
        if let Some(r) = reveal.as_mut()
            && let Some(revealed) = row.jsonb(columns.data).and_then(|j| r.jsonb(j))
        {
            row.set_jsonb_text(columns.data, &revealed);
        }
        Ok(())
    }));
    isolated
}

fn load_events_as_stored(
    stream: &Uuid,
    from: i64,
    max: Option<i64>,
    out: &mut ResultSet,
) -> Result<(), EventStoreError> {
    if let Some(m) = max
        && m < 0
    {
        return Err(EventStoreError::InvalidArgument {
            name: "max_count",
            reason: format!("{m} is negative (NULL means all)"),
        });
    }
    // Natively, row by row into the tuple store (which spills to disk past work_mem), so a
    // long stream costs no more backend memory than a short one; through SQL when the native
    // read does not apply (privileges, row-level security, a table changed by a DBA).
    let left = max.unwrap_or(i64::MAX);
    if left == 0 {
        return Ok(());
    }
    // A deleted stream reads as empty; a truncated one refuses a read from below its cut. The
    // stream row is read through its primary key, else (row-level security, a 0.1.0 schema, a
    // role that may not read es.streams) as life::of reads it.
    let (deleted, truncated_before) = match heap::stream_life(stream, Reading::Statement) {
        Outcome::Done(row) => {
            row.map_or((false, None), |r| (r.deleted.is_some(), r.truncated_before))
        }
        Outcome::Fallback if heap::streams_readable() => {
            let conn = Connection::connect();
            let life = life::of(&conn, stream, Reading::Statement);
            (life.deleted.is_some(), life.truncated_before)
        }
        Outcome::Fallback => (false, None),
    };
    if deleted {
        return Ok(());
    }
    if truncated_before.is_some() {
        check_readable_from(&stream.to_string(), from, truncated_before)?;
    }
    let archived = through_archive();
    if !archived && let Outcome::Done(()) = heap::load_stream_into(stream, from, left, out) {
        return Ok(());
    }
    let conn = Connection::connect();
    conn.query(
        if archived {
            &LOAD_EVENTS_ARCHIVED
        } else {
            &LOAD_EVENTS
        },
        &[
            Some(uuid_datum(stream)),
            Some(i64_datum(from)),
            max.map(i64_datum),
        ],
    )
    .copy_into(out);
    Ok(())
}

/// Whether reads go through `es.events_archive` too: `es.include_archived` is on and something
/// was ever archived (asked after the reader's snapshot was taken; see
/// [`heap::archive_in_use`]). Until then one stream is read natively from `es.events`.
pub fn through_archive() -> bool {
    settings::INCLUDE_ARCHIVED.get() && heap::archive_in_use()
}

/// `es.stream_version`: 0 when the stream does not exist.
pub fn stream_version(stream: &Uuid) -> i64 {
    let conn = Connection::connect();
    conn.query(&STREAM_VERSION, &[Some(uuid_datum(stream))])
        .first_i64()
        .unwrap_or(0)
}

/// `es.read_all`: the global log after `after`, at most `max` events, into `out`.
///
/// Always reads the latest committed state (a snapshot of its own, taken together with the
/// in-flight bound), also inside a REPEATABLE READ transaction: that is what makes paging with
/// the last position gap-safe.
pub fn read_all(after: i64, max: i64, out: &mut ResultSet) -> Result<(), EventStoreError> {
    if max < 0 {
        return Err(EventStoreError::InvalidArgument {
            name: "max_count",
            reason: format!("{max} is negative"),
        });
    }
    match upcasting(out) {
        false => read_all_as_stored(after, max, out),
        true => udf::isolated(|| {
            read_all_as_stored(after, max, out)?;
            out.take_error()
        }),
    }
}

fn read_all_as_stored(after: i64, max: i64, out: &mut ResultSet) -> Result<(), EventStoreError> {
    // Connected only when a catalog question is not answered yet, on a replica, or when the
    // read goes through SQL: the native read of the log needs no SPI.
    let conn = OnceCell::new();
    let connect = || conn.get_or_init(Connection::connect);
    let horizon = readable_lazily(&connect, "es.read_all")?;
    let archived = through_archive();
    if !archived
        && let Outcome::Done(()) =
            heap::read_log_into(after, horizon.last_readable, max, &horizon.snapshot, out)
    {
        return Ok(());
    }
    connect()
        .query_in(
            if archived {
                &READ_ALL_ARCHIVED
            } else {
                &READ_ALL
            },
            &[
                Some(i64_datum(after)),
                Some(i64_datum(horizon.last_readable)),
                Some(i64_datum(max)),
            ],
            &horizon.snapshot,
        )
        .copy_into(out);
    Ok(())
}

/// The gap-safe bound of a read of the global log (`es.read_all`, `es.poll`, `es.wait`) and the
/// snapshot to read in. On the primary: below the lowest position in flight. On a hot standby,
/// and where `es.events` is replicated in by logical replication, the positions in flight are
/// on another server: the bound is also capped at the watermark that server's worker writes
/// (`es.watermark`, read in the same snapshot), so a replica's reader never skips an event that
/// commits there late either. Where `es.events` is replicated in but `es.watermark` is not, no
/// watermark ever arrives: the read is refused (55000) rather than answered with nothing.
pub fn readable(conn: &Connection, function: &'static str) -> Result<Horizon, EventStoreError> {
    readable_lazily(&|| conn, function)
}

/// [`readable`] with a connection made only when a statement must run (`conn` connects on its
/// first call and returns the same connection after).
fn readable_lazily<'c>(
    conn: &dyn Fn() -> &'c Connection,
    function: &'static str,
) -> Result<Horizon, EventStoreError> {
    let mut horizon = positions::read_horizon(function)?;
    let logical = positions::events_replicated_in(|| {
        conn()
            .execute(&EVENTS_REPLICATED_IN, &[])
            .datum(0, 1)
            .is_some_and(|d| d.value() != 0)
    });
    if logical && !watermark_replicated_in(conn()) {
        let conn = conn();
        let rows = conn.execute(&EVENTS_SUBSCRIPTION, &[]);
        // No row only if the subscription went away since the cached answer: name it unknown.
        let name = |col| {
            (!rows.is_empty())
                .then(|| rows.text(0, col))
                .flatten()
                .unwrap_or_else(|| "(unknown)".to_owned())
        };
        return Err(EventStoreError::WatermarkNotReplicated {
            function,
            subscription: name(1),
            publication: name(2),
        });
    }
    if logical || server::in_recovery() {
        let watermark = conn()
            .query_in(&WATERMARK, &[], &horizon.snapshot)
            .first_i64()
            .unwrap_or(0);
        horizon.last_readable = horizon.last_readable.min(watermark);
    }
    Ok(horizon)
}

/// Whether `es.events` is replicated in here by logical replication (cached per backend).
pub fn replicated_in(conn: &Connection) -> bool {
    positions::events_replicated_in(|| {
        conn.execute(&EVENTS_REPLICATED_IN, &[])
            .datum(0, 1)
            .is_some_and(|d| d.value() != 0)
    })
}

/// Whether `es.watermark` is replicated in here by logical replication too (cached per
/// backend).
fn watermark_replicated_in(conn: &Connection) -> bool {
    positions::watermark_replicated_in(|| {
        conn.execute(&WATERMARK_REPLICATED_IN, &[])
            .datum(0, 1)
            .is_some_and(|d| d.value() != 0)
    })
}

/// The highest position stored at or below the horizon (0 for an empty log): the end of what a
/// reader can read now.
pub fn readable_end(conn: &Connection, horizon: &Horizon) -> i64 {
    conn.query_in(
        if through_archive() {
            &READABLE_END_ARCHIVED
        } else {
            &READABLE_END
        },
        &[Some(i64_datum(horizon.last_readable))],
        &horizon.snapshot,
    )
    .first_i64()
    .unwrap_or(0)
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// The global log between two positions.
pub static READ_ALL: Stmt = Stmt::new(
    "ReadAll",
    c"SELECT * FROM es.events WHERE global_position > $1 AND global_position <= $2
                  ORDER BY global_position LIMIT $3",
    &[INT8OID, INT8OID, INT8OID],
);

/// Whether `es.events` is itself replicated in (a table of a logical-replication
/// subscription): readers here cap at the replicated watermark, and the worker does not
/// write one.
pub static EVENTS_REPLICATED_IN: Stmt = Stmt::new(
    "EventsReplicatedIn",
    c"SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                                  WHERE r.srrelid = 'es.events'::pg_catalog.regclass)",
    &[],
);

/// Whether `es.watermark` is replicated in too: without it a reader where `es.events` is
/// replicated in cannot be gap-safe (and must say so rather than return nothing).
pub static WATERMARK_REPLICATED_IN: Stmt = Stmt::new(
    "WatermarkReplicatedIn",
    c"SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                                  WHERE r.srrelid = 'es.watermark'::pg_catalog.regclass)",
    &[],
);

/// The subscription that replicates `es.events` in and its first publication, both quoted
/// as identifiers: what the error of a missing `es.watermark` tells the DBA to change.
pub static EVENTS_SUBSCRIPTION: Stmt = Stmt::new(
    "EventsSubscription",
    c"SELECT pg_catalog.quote_ident(s.subname::text),
                         pg_catalog.quote_ident(s.subpublications[1])
                    FROM pg_catalog.pg_subscription_rel r
                    JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
                   WHERE r.srrelid = 'es.events'::pg_catalog.regclass
                   ORDER BY s.subname LIMIT 1",
    &[],
);

/// The replicated watermark (`es.watermark`).
pub static WATERMARK: Stmt = Stmt::new(
    "Watermark",
    c"SELECT position FROM es.watermark WHERE id = 1",
    &[],
);

/// The highest stored position at or below a bound.
pub static READABLE_END: Stmt = Stmt::new(
    "ReadableEnd",
    c"SELECT pg_catalog.max(global_position) FROM es.events WHERE global_position <= $1",
    &[INT8OID],
);

/// [`READ_ALL`] through the archive.
pub static READ_ALL_ARCHIVED: Stmt = Stmt::new(
    "ReadAllArchived",
    cstr!(concat!(
        "SELECT * FROM ",
        all_events!(),
        " e WHERE global_position > $1 AND global_position <= $2
                      ORDER BY global_position LIMIT $3"
    )),
    &[INT8OID, INT8OID, INT8OID],
);

/// [`READABLE_END`] through the archive.
pub static READABLE_END_ARCHIVED: Stmt = Stmt::new(
    "ReadableEndArchived",
    c"SELECT greatest(
                    (SELECT pg_catalog.max(global_position) FROM es.events WHERE global_position <= $1),
                    (SELECT pg_catalog.max(global_position) FROM es.events_archive WHERE global_position <= $1))",
                &[INT8OID],
);
