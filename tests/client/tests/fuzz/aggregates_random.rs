//! The random and the concurrent phase of `fuzz_aggregates` (see `aggregates`): a seeded mix of
//! appends, reads, definitions and rebuilds in and out of transactions, then one session
//! replacing and dropping the `fz_swap` functions while another appends.

use super::*;

/// The random phase.
impl AggFuzz {
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("a non-empty choice")
    }

    pub(crate) fn random_step(&mut self) {
        if !self.in_tx && self.chance(0.12) {
            let begin = self.pick(&["BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ"]);
            self.meta(begin);
            self.in_tx = true;
        } else if self.in_tx && self.chance(0.2) {
            let end = self.pick(&["COMMIT", "ROLLBACK"]);
            if let Err(e) = self.client.batch_execute(end) {
                // a COMMIT may fail only with a serialization failure
                if sqlstate(&e) != Some("40001") {
                    self.fail(&format!("{end}: {}", describe(&e)));
                }
            }
            self.note(end, "done");
            self.in_tx = false;
        }
        match self.rng.random_range(0..100) {
            0..60 => self.random_append(),
            60..75 => self.random_read(),
            75..88 => self.random_definition(),
            _ => self.random_rebuild(),
        }
    }

    pub(crate) fn random_stream(&mut self) -> Uuid {
        match self.rng.random_range(0..10) {
            0 => self.new_stream(),
            1 if !self.ok_streams.is_empty() => self.pick(&self.ok_streams.clone()),
            _ => self.pick(&self.hostile.clone()),
        }
    }

    pub(crate) fn random_event(&mut self, stream: Uuid) -> (String, Option<&'static str>) {
        if self.chance(0.5) {
            return (
                format!(r#"{{"type":"E{}"}}"#, self.rng.random_range(0..5)),
                None,
            );
        }
        let key = self.pick(&["ck", "ev"]);
        let act = if key == "ev" && self.chance(0.15) {
            self.pick(EV_RESULTS)
        } else {
            self.pick(ACTS)
        };
        let code = self.pick(RAISED_CODES);
        let timeout = (act == "loop").then_some("100ms");
        (self.act_event(key, act, stream, code), timeout)
    }

    pub(crate) fn random_append(&mut self) {
        let stream = self.random_stream();
        let n = self.pick(&[1, 1, 1, 2, 3, 20]);
        let mut events = Vec::new();
        let mut timeout = None;
        for _ in 0..n {
            let (e, t) = self.random_event(stream);
            timeout = timeout.or(t);
            events.push(e);
        }
        let ty = self.pick(&[
            None,
            None,
            Some("fz_hostile"),
            Some("fz_sql"),
            Some("fz_ok"),
            Some("fz_r1"),
        ]);
        let sql = Self::append_sql(stream, &events, ty);
        let _ = self.call_with("random append", &sql, Want::Any, timeout.or(Some("5s")));
    }

    pub(crate) fn random_read(&mut self) {
        let stream = self.random_stream();
        let id = ulit(stream);
        let ty = self.pick(&[
            "fz_hostile",
            "fz_sql",
            "fz_r1",
            "fz_builtin",
            "fz_ok",
            "account",
            "fz_nope",
        ]);
        let at = self.pick(&["NULL", "1", "2", "0", "-1", "9223372036854775807"]);
        let as_of = self.pick(&["NULL", "'infinity'", "'-infinity'", "now()", "'2000-01-01'"]);
        let sql = match self.rng.random_range(0..5) {
            0 => format!("SELECT es.state({id}, {at}, {as_of})"),
            1 => format!("SELECT count(*) FROM es.history({id})"),
            2 => format!(
                "SELECT es.replay('{ty}', data ORDER BY version) FROM es.events WHERE stream_id = {id}"
            ),
            3 => format!(
                "SELECT es.replay('{ty}', '{{\"n\": 1}}', data) OVER (ORDER BY version) FROM es.events WHERE stream_id = {id}"
            ),
            _ => format!(
                "SELECT es.replay('{ty}', data) FROM es.events WHERE stream_id = {id} GROUP BY event_type"
            ),
        };
        // a stored event may ask the evolve to loop
        let _ = self.call_with("random read", &sql, Want::Any, Some("300ms"));
    }

    pub(crate) fn random_definition(&mut self) {
        let ty = self.pick(&[
            "fz_r1",
            "fz_r2",
            "fz_hostile",
            "fz_sql",
            "fz_builtin",
            "account",
            "",
            "fz_r1",
        ]);
        let evolve = self.pick(&[
            "'fa.ev(jsonb,jsonb)'",
            "'fa.ev_sql(jsonb,jsonb)'",
            "'fa.ev_strict(jsonb,jsonb)'",
            "'fa.ev_definer(jsonb,jsonb)'",
            "'jsonb_concat(jsonb,jsonb)'",
            "'fa.ck(jsonb,jsonb)'",
            "'fa.setof(jsonb,jsonb)'",
            "0::regprocedure",
            "NULL",
        ]);
        let check = self.pick(&[
            "NULL",
            "'fa.ck(jsonb,jsonb)'",
            "'fa.ev(jsonb,jsonb)'",
            "'fa.proc(jsonb,jsonb)'",
        ]);
        let initial = self.pick(&["'{}'", "'{\"n\": 1}'", "'[]'", "NULL", "'null'"]);
        let every = self.pick(&["0", "1", "2", "100", "-1", "NULL", "2147483647"]);
        let detach = self.pick(&["true", "false", "NULL"]);
        let sql = match self.rng.random_range(0..4) {
            0 => {
                format!("SELECT es.define_aggregate('{ty}', {evolve}, {initial}, {check}, {every})")
            }
            1 => {
                format!("SELECT es.alter_aggregate('{ty}', {evolve}, {initial}, {check}, {every})")
            }
            2 => format!("SELECT es.drop_aggregate('{ty}', {detach})"),
            _ => {
                let from = self.pick(&["1", "2", "0", "NULL", "2147483647"]);
                let upcast = self.pick(&["'fa.one(jsonb)'", "'fa.ev(jsonb,jsonb)'", "NULL"]);
                if self.chance(0.5) {
                    format!(
                        "SELECT es.define_upcaster('E{}', {from}, {upcast})",
                        self.rng.random_range(0..3)
                    )
                } else {
                    format!(
                        "SELECT es.drop_upcaster('E{}', {from})",
                        self.rng.random_range(0..3)
                    )
                }
            }
        };
        let _ = self.call("random definition", &sql, Want::Any);
    }

    pub(crate) fn random_rebuild(&mut self) {
        let ty = self.pick(&[
            "fz_r1",
            "fz_hostile",
            "fz_sql",
            "fz_ok",
            "fz_nope",
            "account",
        ]);
        let size = self.pick(&["1", "2", "1000", "0", "NULL"]);
        if self.in_tx || self.chance(0.6) {
            let sql = format!("SELECT es.rebuild_batch('{ty}', {size})");
            let _ = self.call_with("random rebuild_batch", &sql, Want::Any, Some("300ms"));
        } else {
            let sql = format!("CALL es.rebuild_states('{ty}', {size})");
            let _ = self.call_with("random rebuild_states", &sql, Want::Any, Some("1s"));
        }
    }

    pub(crate) fn end_tx(&mut self) {
        if self.in_tx {
            self.meta("ROLLBACK");
            self.in_tx = false;
        }
    }
}

/// The appending session of the concurrent phase: appends to the `fz_swap` streams until
/// `deadline`; returns its outcome counts, or what went wrong.
pub(crate) fn swap_appender(
    db_name: String,
    streams: Vec<Uuid>,
    deadline: Instant,
) -> Result<BTreeMap<String, u64>, String> {
    let mut client = event_store_client_tests::config(&db_name)
        .connect(postgres::NoTls)
        .map_err(|e| format!("connecting: {}", describe(&e)))?;
    client
        .batch_execute("SET statement_timeout = '5s'; SET lock_timeout = '5s'")
        .map_err(|e| describe(&e))?;
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        i += 1;
        let stream = streams[i % streams.len()];
        let events: Vec<String> = (0..1 + i % 3)
            .map(|k| format!(r#"{{"type":"Swap","i":{i},"k":{k}}}"#))
            .collect();
        let named: Option<&str> = i.is_multiple_of(2).then_some("fz_swap");
        let result = client.query(
            "SELECT es.append_events($1, NULL, $2::text[]::jsonb[], $3)",
            &[&stream, &events, &named],
        );
        let key = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => {
                let Some(code) = sqlstate(&e) else {
                    return Err(format!("append {i}: lost the connection: {}", describe(&e)));
                };
                if code.starts_with("XX") || code.starts_with("58") {
                    return Err(format!("append {i}: an internal error: {}", describe(&e)));
                }
                let text: String = describe(&e)
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect();
                short(&text, 140)
            }
        };
        *outcomes.entry(key).or_default() += 1;
        client.simple_query("SELECT 1").map_err(|e| {
            format!(
                "the session is not usable after append {i}: {}",
                describe(&e)
            )
        })?;
    }
    Ok(outcomes)
}

/// The concurrent phase: while [`swap_appender`] appends, the type's functions are replaced
/// (also changing their language), dropped and created again, the type altered, dropped and
/// declared again, and rebuilt.
pub(crate) fn swap_race(fuzz: &mut AggFuzz, db: &TestDb, secs: u64) -> BTreeMap<String, u64> {
    let streams: Vec<Uuid> = (0..4).map(|_| fuzz.new_stream()).collect();
    for &s in &streams {
        let _ = fuzz.call(
            "append fz_swap",
            &AggFuzz::append_sql(s, &[r#"{"type":"Opened"}"#.into()], Some("fz_swap")),
            Want::Ok,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let name = db.name().to_owned();
    let appender = {
        let streams = streams.clone();
        std::thread::spawn(move || swap_appender(name, streams, deadline))
    };
    let steps = [
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ \
         BEGIN RETURN state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1, 'lang', 'plpgsql'); END $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$ \
         BEGIN IF (event ->> 'i')::int % 7 = 0 THEN RAISE EXCEPTION 'fz swap refuses' USING ERRCODE = 'FZ007'; END IF; END $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql \
         AS $$ SELECT state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1, 'lang', 'sql') $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ \
         BEGIN IF (event ->> 'i')::int % 5 = 0 THEN RETURN NULL; END IF; RETURN state || '{\"lang\": \"plpgsql2\"}'; END $$",
        "DROP FUNCTION fa.swap_ck(jsonb, jsonb); CREATE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void \
         LANGUAGE sql AS $$ SELECT NULL::void $$",
        "SELECT es.alter_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 4)",
        "DROP FUNCTION fa.swap_ev(jsonb, jsonb); CREATE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb \
         LANGUAGE sql AS $$ SELECT state || '{\"lang\": \"sql2\"}' $$",
        "ALTER FUNCTION fa.swap_ck(jsonb, jsonb) SET work_mem = '3MB'",
        "SELECT es.alter_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 2)",
        "CALL es.rebuild_states('fz_swap', 1)",
        "SELECT es.drop_aggregate('fz_swap', true)",
        "SELECT es.define_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 3)",
        "ALTER FUNCTION fa.swap_ev(jsonb, jsonb) SECURITY DEFINER",
        "CALL es.rebuild_states('fz_swap', 2)",
    ];
    let mut i = 0;
    fuzz.concurrent = true;
    while Instant::now() < deadline {
        let sql = steps[i % steps.len()];
        let _ = fuzz.call_with("race ddl", sql, Want::Any, Some("5s"));
        i += 1;
        std::thread::sleep(Duration::from_millis(15));
    }
    let joined = appender.join();
    fuzz.concurrent = false;
    let outcomes = match joined {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(what)) => fuzz.fail(&format!("the concurrent appender: {what}")),
        Err(_) => fuzz.fail("the concurrent appender panicked"),
    };
    // the type declared with working functions again: every stream rebuilds and agrees
    for sql in [
        "CREATE OR REPLACE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql \
         AS $$ SELECT state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1) $$",
        "CREATE OR REPLACE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void LANGUAGE sql AS $$ SELECT NULL::void $$",
    ] {
        let _ = fuzz.call("race end", sql, Want::Ok);
    }
    let defined =
        fuzz.one_text("SELECT count(*) FROM es.aggregate_types WHERE stream_type = 'fz_swap'");
    let verb = if defined == "1" { "alter" } else { "define" };
    let _ = fuzz.call(
        "race end",
        &format!("SELECT es.{verb}_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{{}}', 'fa.swap_ck(jsonb,jsonb)', 3)"),
        Want::Ok,
    );
    let _ = fuzz.call_with(
        "race end",
        "CALL es.rebuild_states('fz_swap', 2)",
        Want::Ok,
        Some("30s"),
    );
    let differ = fuzz.one_text(
        "SELECT count(*) FROM es.streams s WHERE stream_type = 'fz_swap' AND state IS DISTINCT FROM \
         (SELECT es.replay('fz_swap', data ORDER BY version) FROM es.events e WHERE e.stream_id = s.stream_id)",
    );
    if differ != "0" {
        fuzz.fail(&format!(
            "{differ} streams of fz_swap keep a state other than their replay after the rebuild"
        ));
    }
    outcomes
}
