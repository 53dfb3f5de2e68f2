//! What a DBA does beside the calls: the extension's settings through `set_config`, VACUUM,
//! VACUUM FULL, REINDEX, CLUSTER and `ALTER TABLE … ADD/DROP COLUMN` of the store's tables on the
//! admin connection, and the scenario of an `ALTER TABLE` inside an open transaction that commits
//! or rolls back.

use super::*;

impl Fuzz {
    /// `set_config` of the extension's settings, valid and invalid (a reset with NULL too).
    pub(crate) fn gen_setting(&mut self) -> (Call, After) {
        let (name, values): (&str, &[&str]) = match self.rng.random_range(0..3) {
            0 => (
                "es.snapshot_interval",
                &[
                    "0",
                    "1",
                    "2",
                    "3",
                    "7",
                    "100",
                    "-1",
                    "2147483647",
                    "abc",
                    "",
                ],
            ),
            1 => (
                "es.traceparent",
                &[
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    "00-00000000000000000000000000000000-0000000000000000-01",
                    "garbage",
                    "",
                ],
            ),
            _ => (
                "es.trace_sample_ratio",
                &["0", "0.5", "1", "2", "-1", "NaN"],
            ),
        };
        let value = if self.chance(0.1) {
            None
        } else {
            Some(self.pick(values).to_owned())
        };
        let local = self.chance(0.3);
        let call = Call::new("set_config", "SELECT set_config($1, $2, $3)")
            .arg(name.to_owned())
            .arg(value)
            .arg(local);
        (call, After::Nothing)
    }

    /// Whether `table` has the fuzz's extra column, as connection `c` sees it.
    pub(crate) fn has_extra_column(&mut self, c: usize, table: &str) -> bool {
        let result = self.conns[c].client.query_one(
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attname = 'fz_extra' AND NOT attisdropped)",
            &[&table],
        );
        match result {
            Ok(row) => row.get(0),
            Err(err) => self.fail(c, &format!("reading pg_attribute: {}", describe(&err))),
        }
    }

    /// Adds `fz_extra` to `table` (with or without a default), or drops it if it is there.
    pub(crate) fn toggle_column(&mut self, c: usize, table: &str) -> Call {
        if self.has_extra_column(c, table) {
            Call::simple(
                "alter table drop column",
                format!("ALTER TABLE {table} DROP COLUMN fz_extra"),
            )
        } else if self.chance(0.6) {
            Call::simple(
                "alter table add column",
                format!("ALTER TABLE {table} ADD COLUMN fz_extra text"),
            )
        } else {
            Call::simple(
                "alter table add column",
                format!("ALTER TABLE {table} ADD COLUMN fz_extra text DEFAULT 'fz'"),
            )
        }
    }

    /// Maintenance from the admin connection while TX0 may hold a transaction open. While it
    /// does, VACUUM skips truncating the table: truncation needs TX0's lock and would retry for
    /// PostgreSQL's fixed 5 s before giving up, time the fuzz would not spend calling anything.
    pub(crate) fn admin(&mut self) {
        let truncate = if self.conns[TX0].in_tx {
            "TRUNCATE false, "
        } else {
            ""
        };
        let call = match self.rng.random_range(0..100) {
            0..30 => Call::simple(
                "vacuum",
                format!("VACUUM ({truncate}ANALYZE false) es.events"),
            ),
            30..40 => Call::simple("vacuum", format!("VACUUM ({truncate}FREEZE) es.events")),
            40..48 => Call::simple(
                "vacuum",
                format!("VACUUM ({truncate}ANALYZE false) es.streams, es.snapshots"),
            ),
            48..53 => Call::simple("analyze", "ANALYZE es.events"),
            53..56 => Call::simple("vacuum full", "VACUUM FULL es.events"),
            56..58 => Call::simple("reindex", "REINDEX TABLE es.events"),
            58..60 => Call::simple("cluster", "CLUSTER es.events USING events_pkey"),
            60..90 => self.toggle_column(ADMIN, "es.events"),
            _ => {
                let table = self.pick(&["es.streams", "es.snapshots"]);
                self.toggle_column(ADMIN, table)
            }
        };
        self.run(ADMIN, (call, After::Nothing));
    }

    /// ALTER TABLE inside TX0's transaction, calls that see the new shape, then COMMIT or
    /// ROLLBACK: the calls after a rolled-back ALTER must not use the discarded shape.
    pub(crate) fn scenario_ddl_in_tx(&mut self) {
        if self.conns[TX0].in_tx {
            return;
        }
        self.begin(TX0);
        let table = self.pick(&["es.events", "es.events", "es.streams", "es.snapshots"]);
        let ddl = self.toggle_column(TX0, table);
        if self.run(TX0, (ddl, After::Nothing)) {
            self.conns[TX0].ddl = true;
        }
        for _ in 0..self.rng.random_range(1..=4) {
            let call = self.random_call();
            self.run(TX0, call);
        }
        self.end_tx(TX0);
    }
}
