//! Appends (docs/reference.md §2, §3): the event objects with wrong values for every key the
//! store reads, batches (also TOASTed, 2-D, with reused ids), `es.append_events` bound and
//! built server-side, idempotent retries, and the scenario "append, roll back a 400-event batch,
//! read the stream back".

use super::*;

/// `es.append_events` with the events bound as a text array.
pub(crate) const APPEND: &str = "SELECT es.append_events($1, $2, $3::text[]::jsonb[])";

/// Keys of an event object that the store (or the account rules) read; each gets wrong values.
pub(crate) const EVENT_KEYS: &[&str] = &[
    "type",
    "event_id",
    "occurred_at",
    "event_version",
    "metadata",
    "aggregate_id",
    "sequence_number",
    "account_holder",
    "initial_balance_cents",
    "amount_cents",
    "description",
    "reason",
];

/// Keys of an account state (snapshots, `account_replay`'s initial state).
pub(crate) const STATE_KEYS: &[&str] = &["holder_name", "balance_cents", "status", "version"];

/// Raw JSON values of every type and edge, put where some other type is expected: numbers past
/// bigint and int, floats where integers go, strings that look like numbers, malformed uuids and
/// timestamps, containers, escapes jsonb refuses (`\u0000`, a lone surrogate).
pub(crate) const WRONG: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1",
    "2",
    "1.5",
    "1.0",
    "-0.0",
    "0.0",
    "1e2",
    "1E2",
    "1e30",
    "-1e30",
    "1e-7",
    "99999999999999999999",
    "-99999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "2147483647",
    "2147483648",
    "-2147483649",
    "\"\"",
    "\" \"",
    "\"x\"",
    "\"1\"",
    "\"100\"",
    "\"-5\"",
    "\"1.5\"",
    "\"true\"",
    "\"null\"",
    "\"not-a-uuid\"",
    "\"00000000-0000-0000-0000-000000000000\"",
    "\"{00000000-0000-0000-0000-000000000001}\"",
    "\"0000000000000000000000000000000g\"",
    "\"2024-13-45T00:00:00Z\"",
    "\"2024-01-01T00:00:00\"",
    "\"2024-01-01\"",
    "\"2024-01-01 00:00:00+00\"",
    "\"2024-01-01T00:00:00+99:00\"",
    "\"infinity\"",
    "\"-infinity\"",
    "\"294277-01-01T00:00:00Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"-0001-01-01T00:00:00Z\"",
    "\"2024-01-01T24:00:00Z\"",
    "\"2024-02-30T00:00:00Z\"",
    "\"2024-01-01T00:00:60Z\"",
    "[]",
    "{}",
    "[1]",
    "{\"a\":1}",
    "[null]",
    "[[[]]]",
    "{\"correlation_id\":null}",
    "\"Opened\"",
    "\"Deposited\"",
    "\"Active\"",
    "\"é✓\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"line\\nbreak\"",
];

/// Elements of an events array that are not event objects (some not even valid JSON).
pub(crate) const NON_OBJECTS: &[&str] = &[
    "[]",
    "[1,2]",
    "1",
    "-0.0",
    "1e30",
    "\"Opened\"",
    "\"\"",
    "null",
    "true",
    "{}",
    "[{\"type\":\"A\"}]",
    "{",
    "{\"type\":}",
    "",
];

/// Valid `occurred_at` values at the edges of RFC 3339 and of PostgreSQL's range.
pub(crate) const OCCURRED: &[&str] = &[
    "2024-02-29T12:00:00Z",
    "2024-02-29T12:00:00.123456789Z",
    "2024-01-01T00:00:00+14:00",
    "2024-06-01T10:00:00-07:30",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
];

/// Bigints at the edges, for every bigint argument.
pub(crate) const EXTREMES: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -1000,
    -2,
    -1,
    0,
    1,
    2,
    1 << 53,
    i64::MAX - 1,
    i64::MAX,
];

/// Amounts at the edges (zero, negative, overflowing a balance, past a double's precision).
pub(crate) const AMOUNT_EXTREMES: &[i64] = &[
    0,
    -1,
    1,
    100,
    i64::MIN,
    i64::MIN + 1,
    i64::MAX,
    i64::MAX - 1,
    i64::MAX / 2 + 1,
    (1 << 53) + 1,
];

/// Ints at the edges, for `read_all`'s `max_count` (a bigint; these are the int edges).
pub(crate) const INT_EXTREMES: &[i32] = &[i32::MIN, -1, 0, 1, 2, 100, 1000, i32::MAX];

impl Fuzz {
    /// Replaces, removes or duplicates 1–3 keys with wrong values.
    pub(crate) fn mutate(&mut self, o: &mut Obj, keys: &[&str]) {
        for _ in 0..self.rng.random_range(1..=3) {
            let key = self.pick(keys);
            let wrong = self.pick(WRONG).to_owned();
            match self.rng.random_range(0..10) {
                0..2 => o.remove(key),
                2 => o.0.push((key.to_owned(), wrong)),
                _ => o.set(key, wrong),
            }
        }
    }

    /// A well-formed account event for the event at `version` (mostly `Opened` first).
    pub(crate) fn account_event(&mut self, version: i64) -> Obj {
        let kind = if version == 1 && self.chance(0.9) {
            "Opened"
        } else {
            match self.rng.random_range(0..100) {
                0..45 => "Deposited",
                45..82 => "Withdrawn",
                82..85 => "Frozen",
                85..86 => "Closed",
                86..91 => "Opened",
                _ => self.pick(&[
                    "AccountOpened",
                    "MoneyDeposited",
                    "Unknown",
                    "",
                    "deposited",
                ]),
            }
        };
        let mut o = Obj::typed(kind);
        match kind {
            "Opened" => {
                let holder = format!("holder-{}", self.rng.random_range(0..100));
                o.set("account_holder", quote(&holder));
                let balance = self.pick_balance().unwrap_or(0);
                o.set("initial_balance_cents", balance.to_string());
            }
            "Deposited" | "Withdrawn" => {
                let amount = if self.chance(0.85) {
                    self.rng.random_range(1..=500)
                } else {
                    self.pick(AMOUNT_EXTREMES)
                };
                o.set("amount_cents", amount.to_string());
                o.set("description", quote(&format!("d{version}")));
            }
            "Frozen" | "Closed" => o.set("reason", quote("fz reason")),
            _ => {}
        }
        o
    }

    /// One element of an events array: a NULL, a non-object, a deeply nested event, or an
    /// object (account or generic) with optional keys, sometimes with wrong values.
    pub(crate) fn gen_event(
        &mut self,
        stream: Option<Uuid>,
        version: i64,
        account: bool,
        with_ids: bool,
    ) -> Option<String> {
        let r = self.rng.random_range(0..100);
        if r < 2 {
            return None;
        }
        if r < 6 {
            return Some(self.pick(NON_OBJECTS).to_owned());
        }
        if r < 8 {
            let n = self.pick(&[10, 100, 1000, 3000]);
            return Some(format!(
                "{{\"type\":\"Deep\",\"d\":{}{}}}",
                "[".repeat(n),
                "]".repeat(n)
            ));
        }
        let mut o = if account {
            self.account_event(version)
        } else {
            let mut o = Obj::typed(&format!("T{}", self.rng.random_range(0..5)));
            o.set("n", self.rng.random_range(0..1000).to_string());
            o
        };
        if with_ids || self.chance(0.2) {
            let id = self.event_id();
            o.set("event_id", quote(&id.to_string()));
        }
        if self.chance(0.1) {
            let at = self.pick(OCCURRED);
            o.set("occurred_at", quote(at));
        }
        if self.chance(0.1) {
            o.set("event_version", self.rng.random_range(1..4).to_string());
        }
        if self.chance(0.1) {
            let id = Uuid::from_u128(self.rng.random());
            o.set(
                "metadata",
                format!("{{\"correlation_id\":{}}}", quote(&id.to_string())),
            );
        }
        if self.chance(0.15) {
            // The seed's flattened EventMetadata, right or off by one.
            if let Some(s) = stream {
                o.set("aggregate_id", quote(&s.to_string()));
            }
            let off = self.pick(&[0, 0, 0, 1, -1]);
            o.set("sequence_number", (version + off).to_string());
        }
        if self.chance(0.25) {
            self.mutate(&mut o, EVENT_KEYS);
        }
        Some(o.render())
    }

    /// An events array for `stream`: empty, one, a few, or up to 400 events.
    pub(crate) fn gen_batch(&mut self, stream: Option<Uuid>, account: bool) -> Vec<Option<String>> {
        let big_ok = self.stored_events < STORE_CAP;
        let n: i64 = match self.rng.random_range(0..100) {
            0..5 => 0,
            5..55 => 1,
            55..88 => self.rng.random_range(2..=5),
            88..97 => self.rng.random_range(6..=50),
            _ if big_ok => self.rng.random_range(51..=400),
            _ => 3,
        };
        let known = self.known(stream);
        let with_ids = self.chance(0.4);
        (0..n)
            .map(|i| self.gen_event(stream, known + i + 1, account, with_ids))
            .collect()
    }

    pub(crate) fn gen_append(&mut self) -> (Call, After) {
        let r = self.rng.random_range(0..100);
        if r < 8 && !self.batches.is_empty() {
            // An idempotent retry (same stream, same ids), or the same ids elsewhere (ES004).
            let i = self.rng.random_range(0..self.batches.len());
            let mut batch = self.batches[i].clone();
            if self.chance(0.3) {
                batch.expected = self.pick_expected(batch.stream);
            }
            if self.chance(0.15) {
                batch.stream = self.pick_stream();
            }
            let call = Call::new("append_events(again)", APPEND)
                .arg(batch.stream)
                .arg(batch.expected)
                .arg(Some(batch.events.clone()));
            return (call, After::Version(batch.stream));
        }
        let stream = self.pick_stream();
        if r < 18 {
            return self.gen_append_server_side(stream);
        }
        let account = self.is_account(stream) ^ self.chance(0.1);
        let expected = self.pick_expected(stream);
        let events = self.gen_batch(stream, account);
        if self.chance(0.02) {
            let call = Call::new("append_events", APPEND)
                .arg(stream)
                .arg(expected)
                .arg(None::<Vec<Option<String>>>);
            return (call, After::Nothing);
        }
        let call = Call::new("append_events", APPEND)
            .arg(stream)
            .arg(expected)
            .arg(Some(events.clone()));
        (
            call,
            After::Appended(Batch {
                stream,
                expected,
                events,
            }),
        )
    }

    /// Appends whose events are built by the server: MB-sized (TOASTed) and deeply nested
    /// values, bulk batches, 2-D arrays, arrays with another lower bound, NULL arrays.
    pub(crate) fn gen_append_server_side(&mut self, stream: Option<Uuid>) -> (Call, After) {
        let expected = self.pick_expected(stream);
        let big_ok = self.stored_events < STORE_CAP;
        let (label, array, n): (&str, &str, Option<i32>) = match self.rng.random_range(0..16) {
            0 => (
                "append_events(huge)",
                "ARRAY[jsonb_build_object('type', 'Huge', 'blob', repeat('x', $3))]",
                Some(self.pick(&[1_000_000, 5_000_000])),
            ),
            1 => (
                "append_events(huge incompressible)",
                "ARRAY[jsonb_build_object('type', 'Huge', 'blob', \
                 (SELECT string_agg(md5(g::text), '') FROM generate_series(1, $3) g))]",
                Some(self.pick(&[10_000, 60_000])),
            ),
            2 => (
                "append_events(deep arrays)",
                "ARRAY[jsonb_build_object('type', 'Deep', 'd', \
                 (repeat('[', $3) || repeat(']', $3))::jsonb)]",
                Some(self.pick(&[1000, 5000, 200_000])),
            ),
            3 => (
                "append_events(deep objects)",
                "ARRAY[jsonb_build_object('type', 'Deep', 'd', \
                 (repeat('{\"a\":', $3) || '1' || repeat('}', $3))::jsonb)]",
                Some(self.pick(&[1000, 5000, 200_000])),
            ),
            4 => (
                "append_events(huge type)",
                "ARRAY[jsonb_build_object('type', repeat('T', $3))]",
                Some(self.pick(&[100, 100_000, 1_000_000])),
            ),
            5 => (
                "append_events(huge metadata)",
                "ARRAY[jsonb_build_object('type', 'M', 'metadata', \
                 jsonb_build_object('m', repeat('m', $3)))]",
                Some(self.pick(&[10_000, 2_000_000])),
            ),
            6 => (
                "append_events(huge event_id)",
                "ARRAY[jsonb_build_object('type', 'M', 'event_id', repeat('a', $3))]",
                Some(self.pick(&[37, 100_000])),
            ),
            7 => (
                "append_events(huge description)",
                "ARRAY[jsonb_build_object('type', 'Deposited', 'amount_cents', 1, \
                 'description', repeat('d', $3))]",
                Some(self.pick(&[100_000, 3_000_000])),
            ),
            8 => (
                "append_events(2-D array)",
                "ARRAY[['{\"type\":\"A\"}'::jsonb, '{\"type\":\"B\"}'::jsonb], \
                 ['{\"type\":\"C\"}'::jsonb, '{\"type\":\"D\"}'::jsonb]]",
                None,
            ),
            9 => (
                "append_events(2-D array)",
                "array_fill('{\"type\":\"F\"}'::jsonb, ARRAY[2, 2])",
                None,
            ),
            10 => (
                "append_events(lower bound 3)",
                "'[3:4]={\"{\\\"type\\\":\\\"A\\\"}\",\"{\\\"type\\\":\\\"B\\\"}\"}'::jsonb[]",
                None,
            ),
            11 => (
                "append_events(NULL elements)",
                "array_fill(NULL::jsonb, ARRAY[2])",
                None,
            ),
            12 => ("append_events(NULL array)", "NULL::jsonb[]", None),
            13 => ("append_events(empty array)", "'{}'::jsonb[]", None),
            14 => (
                "append_events(bulk deposits)",
                "(SELECT array_agg(jsonb_build_object('type', 'Deposited', 'amount_cents', 1, \
                 'description', 'bulk ' || g) ORDER BY g) FROM generate_series(1, $3) g)",
                Some(if big_ok { BIG_BATCH } else { 3 }),
            ),
            _ => (
                "append_events(bulk)",
                "(SELECT array_agg(jsonb_build_object('type', 'Bulk', 'i', g) ORDER BY g) \
                 FROM generate_series(1, $3) g)",
                Some(if big_ok { 2000 } else { 3 }),
            ),
        };
        let array = array.replace("$3", "$3::int");
        let mut call = Call::new(label, format!("SELECT es.append_events($1, $2, {array})"))
            .arg(stream)
            .arg(expected);
        if let Some(n) = n {
            call = call.arg(n);
        }
        (call, After::Version(stream))
    }

    // ---- scenarios ---------------------------------------------------------------------------

    /// Append to a stream, append a 400-event batch in a transaction (or savepoint) and roll it
    /// back, then read the stream back every way: the rolled-back batch must leave no trace in
    /// what a later call sees (cached state, snapshot written by the batch, positions in flight).
    pub(crate) fn scenario_rolled_back_batch(&mut self) {
        let i = self.rng.random_range(0..POOL);
        let stream = Some(self.pool[i]);
        let account = i < ACCOUNT_POOL;
        let nested = self.conns[TX0].in_tx;
        let known = self.known(stream);
        let first = if account && known == 0 {
            format!(
                "{{\"type\":\"Opened\",\"account_holder\":\"big-{i}\",\"initial_balance_cents\":{}}}",
                self.rng.random_range(0..1000)
            )
        } else if account {
            "{\"type\":\"Deposited\",\"amount_cents\":5,\"description\":\"before big\"}".to_owned()
        } else {
            "{\"type\":\"BeforeBig\"}".to_owned()
        };
        let call = Call::new("append_events", APPEND)
            .arg(stream)
            .arg(None::<i64>)
            .arg(Some(vec![Some(first)]));
        self.run(TX0, (call, After::Version(stream)));

        if !nested {
            self.begin(TX0);
        }
        let use_savepoint = nested || self.chance(0.3);
        if use_savepoint {
            self.meta(TX0, "SAVEPOINT fz_big");
        }
        let element = if account {
            "jsonb_build_object('type', 'Deposited', 'amount_cents', 1, 'description', 'big ' || g)"
        } else {
            "jsonb_build_object('type', 'Big', 'i', g)"
        };
        let call = Call::new(
            "append_events(big batch, rolled back)",
            format!(
                "SELECT es.append_events($1, NULL, (SELECT array_agg({element} ORDER BY g) \
                 FROM generate_series(1, $2::int) g))"
            ),
        )
        .arg(stream)
        .arg(BIG_BATCH);
        self.run(TX0, (call, After::Nothing));
        if self.chance(0.5) {
            let call = Call::new(
                "load_events(inside big batch)",
                "SELECT count(*) FROM es.load_events($1)",
            )
            .arg(stream);
            self.run(TX0, (call, After::Nothing));
        }
        if use_savepoint {
            self.meta(
                TX0,
                "ROLLBACK TO SAVEPOINT fz_big; RELEASE SAVEPOINT fz_big",
            );
            self.stats.savepoint_rollbacks += 1;
            if !nested {
                self.end_tx(TX0);
            }
        } else {
            self.meta(TX0, "ROLLBACK");
            self.stats.rolled_back += 1;
            self.conns[TX0].in_tx = false;
            self.conns[TX0].savepoints = 0;
        }
        self.stats.big_batch_rollbacks += 1;

        let reads: [(&str, &str); 7] = [
            (
                "load_events(after rollback)",
                "SELECT count(*) FROM es.load_events($1)",
            ),
            (
                "stream_version(after rollback)",
                "SELECT es.stream_version($1)",
            ),
            (
                "account_state(after rollback)",
                "SELECT es.account_state($1)",
            ),
            (
                "account_history(after rollback)",
                "SELECT count(*), max(balance_cents) FROM es.account_history($1)",
            ),
            (
                "account_replay(after rollback)",
                "SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = $1",
            ),
            (
                "load_snapshot(after rollback)",
                "SELECT version, state FROM es.load_snapshot($1)",
            ),
            (
                "read_all(after rollback)",
                "SELECT count(*) FROM es.read_all(0, 100000) WHERE stream_id = $1",
            ),
        ];
        for (label, sql) in reads {
            let c = if self.chance(0.2) { AUTO } else { TX0 };
            let after = if label.starts_with("stream_version") {
                After::Version(stream)
            } else {
                After::Nothing
            };
            self.run(c, (Call::new(label, sql).arg(stream), after));
        }
    }
}
