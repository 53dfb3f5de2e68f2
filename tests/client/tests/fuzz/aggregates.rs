//! Aggregates for any domain (docs/accounts-and-aggregates.md) under `fuzz_aggregates`, the
//! second test of this target: the declared aggregate types' SQL surface
//! (`es.define_aggregate`, `es.alter_aggregate`, `es.drop_aggregate`, `es.append_events`'
//! `stream_type`, `es.state`, `es.history`, `es.replay`, `es.rebuild_batch` /
//! `CALL es.rebuild_states`, `es.define_upcaster`) with hostile arguments and with user functions
//! that misbehave in every way a `check` or an `evolve` can: raise any SQLSTATE (with DETAIL and
//! HINT), return NULL or a non-object, loop until a `statement_timeout`, recurse past the stack
//! depth, append to the stream they judge (or to another), update `es.streams` themselves, change
//! the role or the session authorization, change settings, commit, create temporary tables,
//! listen, open cursors, return huge and deep states; and functions replaced (also in another
//! language) or dropped while another session appends in a loop. First fixed scenarios with the
//! SQLSTATE each call must end with, then a seeded random mix (in and out of transactions, each
//! call in its own savepoint there), then the concurrent phase. This module holds the setup, the
//! fuzzer's own machinery and the fixed scenarios; the random and concurrent phases are in
//! `aggregates_random`.
//!
//! Every call: no internal error (class XX or 58, except the very XX000 a check function raised
//! on purpose, which passes through unchanged by contract) and no lost connection; the session
//! is usable afterwards (`SELECT 1`, no leaked setting, role or authorization); a failing call
//! leaves the store and the registry as they were (digest); versions are gapless and equal to
//! `es.streams.version`. At the end: the checks of `fuzz_whole_sql_surface` (gapless, accounts,
//! read_all, amcheck), every stream of the never-touched type `fz_ok` keeps the state that
//! `es.replay` computes from its events, and the server log shows no crash.
//!
//! Replay with `ES_FUZZ_SEED`; `ES_FUZZ_AGG_SECS` (default 12) is the random phase's budget and
//! `ES_FUZZ_AGG_RACE_SECS` (default 6) the concurrent phase's.

use super::*;

/// The random phase's seconds when `ES_FUZZ_AGG_SECS` is not set.
pub(crate) const AGG_SECS: u64 = 12;
/// The concurrent phase's seconds when `ES_FUZZ_AGG_RACE_SECS` is not set.
pub(crate) const AGG_RACE_SECS: u64 = 6;
/// The message of the XX000 a check raises on purpose (it passes through unchanged).
pub(crate) const USER_XX: &str = "fz check raises an internal error on purpose";

/// The user functions of the aggregate fuzz. `fa.act(state, event, key)` does what
/// `event->>key` names (`ck` for the check, `ev` for the evolve); `fa.ev` also returns what no
/// evolve may (NULL, an array, a scalar, JSON null). `fa.ok_*` are the control type's functions,
/// never changed. `fa.swap_*` are replaced and dropped while another session appends.
pub(crate) const AGG_SETUP: &str = r#"
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fa_other') THEN CREATE ROLE fa_other; END IF;
END $$;
CREATE SCHEMA fa;
CREATE FUNCTION fa.recurse(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN fa.recurse(n + 1); END $$;
CREATE FUNCTION fa.act(state jsonb, event jsonb, what text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    CASE event ->> what
    WHEN 'raise' THEN
        RAISE EXCEPTION USING ERRCODE = event ->> 'code', MESSAGE = coalesce(event ->> 'message', 'fz raised'),
            DETAIL = coalesce(event ->> 'detail', 'fz detail'), HINT = coalesce(event ->> 'hint', 'fz hint');
    WHEN 'divzero' THEN PERFORM 1 / 0;
    WHEN 'loop' THEN LOOP PERFORM 1; END LOOP;
    WHEN 'sleep' THEN PERFORM pg_sleep(0.02);
    WHEN 'recurse' THEN PERFORM fa.recurse(1);
    WHEN 'append' THEN
        PERFORM es.append_events((event ->> 'stream')::uuid, NULL, ARRAY['{"type":"Inner"}'::jsonb]);
    WHEN 'update_streams' THEN
        UPDATE es.streams SET version = version WHERE stream_id = (event ->> 'stream')::uuid;
    WHEN 'set_role' THEN SET ROLE fa_other;
    WHEN 'reset_role' THEN RESET ROLE;
    WHEN 'session_auth' THEN SET SESSION AUTHORIZATION fa_other;
    WHEN 'set_config' THEN
        PERFORM set_config('work_mem', '7777kB', false);
        PERFORM set_config('search_path', 'fa', false);
        PERFORM set_config('es.tracing', 'off', false);
    WHEN 'set_local' THEN SET LOCAL work_mem = '6666kB'; SET statement_timeout = '1ms';
    WHEN 'commit' THEN COMMIT;
    WHEN 'rollback' THEN ROLLBACK;
    WHEN 'temp' THEN CREATE TEMP TABLE fz_temp (x int);
    WHEN 'listen' THEN LISTEN fz_channel;
    WHEN 'txid' THEN PERFORM txid_current();
    WHEN 'subxact' THEN
        BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END;
    WHEN 'cursor' THEN
        DECLARE c refcursor := 'fz_cursor_' || txid_current(); BEGIN OPEN c FOR SELECT * FROM es.events; END;
    WHEN 'notice' THEN RAISE NOTICE 'fz notice'; RAISE WARNING 'fz warning';
    WHEN 'lock' THEN LOCK TABLE es.streams IN SHARE MODE;
    WHEN 'huge' THEN
        RETURN state || (SELECT jsonb_object_agg('k' || g, md5(g::text)) FROM generate_series(1, 30000) g);
    WHEN 'deep' THEN RETURN (repeat('{"a":', 2000) || '1' || repeat('}', 2000))::jsonb;
    ELSE NULL;
    END CASE;
    RETURN NULL;
END $$;
CREATE FUNCTION fa.ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    CASE event ->> 'ev'
    WHEN 'null' THEN RETURN NULL;
    WHEN 'array' THEN RETURN '[1, 2]';
    WHEN 'scalar' THEN RETURN '7';
    WHEN 'string' THEN RETURN '"s"';
    WHEN 'jnull' THEN RETURN 'null';
    ELSE r := fa.act(state, event, 'ev');
    END CASE;
    RETURN coalesce(r, state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1));
END $$;
CREATE FUNCTION fa.ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF event ->> 'ck' = 'raise_xx' THEN
        RAISE EXCEPTION 'fz check raises an internal error on purpose' USING ERRCODE = 'XX000';
    END IF;
    PERFORM fa.act(state, event, 'ck');
END $$;
CREATE FUNCTION fa.ev_sql(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql
AS $$ SELECT state || jsonb_build_object('m', coalesce((state ->> 'm')::bigint, 0) + 1, 'last', event -> 'type') $$;
CREATE FUNCTION fa.ev_strict(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql STRICT
AS $$ SELECT CASE WHEN event ? 'ev' THEN NULL ELSE state END $$;
CREATE FUNCTION fa.ev_definer(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET work_mem = '5MB' AS $$ BEGIN RETURN fa.ev(state, event); END $$;
CREATE FUNCTION fa.ok_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN state || jsonb_build_object('n', (state ->> 'n')::bigint + 1, 'types',
        (state -> 'types') || jsonb_build_array(event -> 'type'));
END $$;
CREATE FUNCTION fa.ok_ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF event ->> 'type' = 'Refused' THEN
        RAISE EXCEPTION 'fz ok refuses' USING ERRCODE = 'FZ001', DETAIL = 'n: ' || (state ->> 'n');
    END IF;
END $$;
CREATE FUNCTION fa.swap_ev(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql
AS $$ SELECT state || jsonb_build_object('n', coalesce((state ->> 'n')::bigint, 0) + 1) $$;
CREATE FUNCTION fa.swap_ck(state jsonb, event jsonb) RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE FUNCTION fa.one(event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT event $$;
CREATE FUNCTION fa.setof(state jsonb, event jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $$ SELECT state $$;
CREATE PROCEDURE fa.proc(state jsonb, event jsonb) LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION fa.sf3(acc jsonb, state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT acc $$;
CREATE AGGREGATE fa.agg(jsonb, jsonb) (SFUNC = fa.sf3, STYPE = jsonb);
CREATE FUNCTION fa.txt(state jsonb, event jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE FUNCTION fa.json(state json, event json) RETURNS json LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION fa.dflt(state jsonb, event jsonb, x int DEFAULT 1) RETURNS jsonb LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION fa.poly(state anyelement, event anyelement) RETURNS anyelement LANGUAGE sql AS $$ SELECT state $$;
CREATE FUNCTION fa.var(VARIADIC x jsonb[]) RETURNS jsonb LANGUAGE sql AS $$ SELECT x[1] $$;
CREATE FUNCTION fa.trig() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE FUNCTION fa.win(jsonb, jsonb) RETURNS jsonb LANGUAGE internal WINDOW AS 'window_row_number';
SELECT es.define_aggregate('fz_ok', 'fa.ok_ev(jsonb,jsonb)', '{"n": 0, "types": []}', 'fa.ok_ck(jsonb,jsonb)', 3);
SELECT es.define_aggregate('fz_hostile', 'fa.ev(jsonb,jsonb)', '{}', 'fa.ck(jsonb,jsonb)', 2);
SELECT es.define_aggregate('fz_sql', 'fa.ev_sql(jsonb,jsonb)', '{"m": 0}', NULL, 0);
SELECT es.define_aggregate('fz_swap', 'fa.swap_ev(jsonb,jsonb)', '{}', 'fa.swap_ck(jsonb,jsonb)', 4);
"#;

/// What a call of the aggregate fuzz may end with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Want {
    /// Success.
    Ok,
    /// An error with one of these SQLSTATEs.
    Code(&'static [&'static str]),
    /// Success, or any error that is not internal.
    Any,
}

/// A failed call: SQLSTATE, message, DETAIL, HINT.
#[derive(Debug, Default)]
pub(crate) struct Failed {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) hint: Option<String>,
}

impl Failed {
    pub(crate) fn text(&self) -> String {
        format!(
            "{}: {} DETAIL: {:?} HINT: {:?}",
            self.code, self.message, self.detail, self.hint
        )
    }
}

/// `s` as an SQL string literal.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A uuid as an SQL literal.
pub(crate) fn ulit(u: Uuid) -> String {
    format!("'{u}'::uuid")
}

/// The store's digest and the registry's: a failing call changes neither.
pub(crate) fn agg_digest_sql() -> String {
    format!(
        "SELECT ({DIGEST}) || ' ' || concat_ws(' ', \
           (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)), 0) FROM es.aggregate_types t), \
           (SELECT count(*) || ':' || coalesce(sum(hashtext(u::text)), 0) FROM es.upcasters u), \
           (SELECT count(*) || ':' || coalesce(sum(hashtext(r::text)), 0) FROM es.stream_type_rules r))"
    )
}

/// Streams whose versions are not gapless 1..N or disagree with `es.streams.version`.
pub(crate) const GAPLESS: &str = "SELECT count(*) FROM (SELECT stream_id, count(*) AS n, min(version) AS lo, \
     max(version) AS hi FROM es.events GROUP BY stream_id) e FULL JOIN es.streams s USING (stream_id) \
     WHERE e.lo IS DISTINCT FROM 1 OR e.hi IS DISTINCT FROM e.n OR s.version IS DISTINCT FROM e.hi";

/// What a session must still be after any call: who it is and its settings.
pub(crate) const SESSION: &str = "SELECT concat_ws(' | ', current_user, session_user, current_setting('role'), \
     current_setting('work_mem'), current_setting('search_path'), current_setting('es.tracing'), \
     current_setting('statement_timeout'), current_setting('lock_timeout'))";

/// The behaviours of `fa.act` a random call picks from (`loop` only under a timeout).
pub(crate) const ACTS: &[&str] = &[
    "",
    "",
    "",
    "",
    "raise",
    "raise",
    "divzero",
    "sleep",
    "recurse",
    "append",
    "append_other",
    "update_streams",
    "set_role",
    "reset_role",
    "session_auth",
    "set_config",
    "set_local",
    "commit",
    "rollback",
    "temp",
    "listen",
    "txid",
    "subxact",
    "cursor",
    "notice",
    "lock",
    "huge",
    "deep",
    "loop",
];

/// What only an evolve can do wrong.
pub(crate) const EV_RESULTS: &[&str] = &["null", "array", "scalar", "string", "jnull"];

/// SQLSTATEs the functions raise: user-defined, every class the store treats apart (40, 53, 54,
/// 57 pass through an evolve), warnings and "no data" raised as errors, built-in errors.
pub(crate) const RAISED_CODES: &[&str] = &[
    "P0001", "CT001", "FZ999", "22012", "23505", "40001", "40P01", "53200", "54001", "57014",
    "0A000", "42501", "01000", "02000", "2BP01", "ES301", "ES001",
];

pub(crate) struct AggFuzz {
    pub(crate) seed: u64,
    pub(crate) rng: StdRng,
    pub(crate) client: Client,
    pub(crate) in_tx: bool,
    pub(crate) digest_sql: String,
    pub(crate) session: String,
    pub(crate) history: VecDeque<String>,
    pub(crate) labels: BTreeMap<String, (u64, u64)>,
    pub(crate) codes: BTreeMap<String, Seen>,
    pub(crate) calls: u64,
    /// Streams of the hostile types, and of the control type.
    pub(crate) hostile: Vec<Uuid>,
    pub(crate) ok_streams: Vec<Uuid>,
    pub(crate) next_id: u128,
    /// Another session appends meanwhile: a failing call's digest is not compared.
    pub(crate) concurrent: bool,
}

impl AggFuzz {
    pub(crate) fn new(db: &TestDb, seed: u64) -> AggFuzz {
        let mut client = db.connect();
        client
            .batch_execute("SET lock_timeout = '5s'; SET statement_timeout = '60s'")
            .unwrap_or_else(|e| {
                panic!("setting up the aggregate fuzz's session: {}", describe(&e))
            });
        let session = client
            .query_one(SESSION, &[])
            .unwrap_or_else(|e| panic!("reading the session: {}", describe(&e)))
            .get(0);
        AggFuzz {
            seed,
            rng: StdRng::seed_from_u64(seed ^ 0xA66),
            client,
            in_tx: false,
            digest_sql: agg_digest_sql(),
            session,
            history: VecDeque::new(),
            labels: BTreeMap::new(),
            codes: BTreeMap::new(),
            calls: 0,
            hostile: Vec::new(),
            ok_streams: Vec::new(),
            next_id: 0xfa00_0000_0000_0000_0000_0000_0000_0000,
            concurrent: false,
        }
    }

    /// A new stream id (deterministic).
    pub(crate) fn new_stream(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(self.next_id)
    }

    pub(crate) fn fail(&self, what: &str) -> ! {
        let mut report = format!(
            "aggregate fuzz failure (replay: ES_FUZZ_SEED={}){}:\n  {what}\nlast calls, oldest first:\n",
            self.seed,
            if self.in_tx {
                " inside a transaction"
            } else {
                ""
            }
        );
        for line in &self.history {
            report.push_str("  ");
            report.push_str(line);
            report.push('\n');
        }
        panic!("{report}");
    }

    pub(crate) fn note(&mut self, what: &str, outcome: &str) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!(
            "{}{} -> {}",
            if self.in_tx { "* " } else { "" },
            short(what, 400),
            short(outcome, 300)
        ));
    }

    /// A statement that must succeed (transaction control, settings).
    pub(crate) fn meta(&mut self, sql: &str) {
        if let Err(e) = self.client.batch_execute(sql) {
            let text = describe(&e);
            self.note(sql, &text);
            self.fail(&format!("`{sql}` failed: {text}"));
        }
    }

    pub(crate) fn one_text(&mut self, sql: &str) -> String {
        match self.client.simple_query(sql) {
            Ok(messages) => messages
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default(),
            Err(e) => {
                let text = describe(&e);
                self.fail(&format!(
                    "the session is not usable: `{}` failed: {text}",
                    short(sql, 200)
                ))
            }
        }
    }

    /// Runs `sql` (no parameters; a `CALL` with the simple protocol, as a procedure that
    /// commits needs) and checks what every call must keep; `want` is what it may end with.
    pub(crate) fn call(&mut self, label: &str, sql: &str, want: Want) -> Result<Vec<Row>, Failed> {
        self.call_with(label, sql, want, None)
    }

    /// [`AggFuzz::call`] under a `statement_timeout` of `timeout` (set before, reset after).
    pub(crate) fn call_with(
        &mut self,
        label: &str,
        sql: &str,
        want: Want,
        timeout: Option<&str>,
    ) -> Result<Vec<Row>, Failed> {
        // a procedure that commits, and several statements, go with the simple protocol
        let simple = sql.trim_start().starts_with("CALL") || sql.contains("; ");
        if self.in_tx {
            self.meta("SAVEPOINT fa_call");
        }
        // a procedure commits inside: what it did before failing stays; another session's
        // appends change the store meanwhile
        let before = (!sql.trim_start().starts_with("CALL") && !self.concurrent)
            .then(|| self.one_text(&self.digest_sql.clone()));
        if let Some(t) = timeout {
            self.meta(&format!("SET statement_timeout = {}", lit(t)));
        }
        self.calls += 1;
        let result = if simple {
            self.client.batch_execute(sql).map(|()| Vec::new())
        } else {
            self.client.query(sql, &[])
        };
        let outcome = match result {
            Ok(rows) => {
                self.note(sql, "ok");
                if timeout.is_some() {
                    self.meta("SET statement_timeout = '60s'");
                }
                if self.in_tx {
                    self.meta("RELEASE SAVEPOINT fa_call");
                }
                if let Want::Code(codes) = want {
                    self.fail(&format!(
                        "{label}: succeeded, but it must fail with one of {codes:?}: {}",
                        short(sql, 600)
                    ));
                }
                let tally = self.labels.entry(label.to_owned()).or_default();
                tally.0 += 1;
                Ok(rows)
            }
            Err(err) => {
                let text = describe(&err);
                self.note(sql, &text);
                let Some(db) = err.as_db_error() else {
                    self.fail(&format!(
                        "{label}: lost the connection (a crashed backend?): {text}"
                    ))
                };
                let failed = Failed {
                    code: db.code().code().to_owned(),
                    message: db.message().to_owned(),
                    detail: db.detail().map(str::to_owned),
                    hint: db.hint().map(str::to_owned),
                };
                let internal = failed.code.starts_with("XX") || failed.code.starts_with("58");
                if self.client.is_closed() || (internal && failed.message != USER_XX) {
                    self.fail(&format!(
                        "{label}: an internal error or a lost connection: {}",
                        failed.text()
                    ));
                }
                let allowed = match want {
                    Want::Ok => false,
                    Want::Code(codes) => codes.contains(&failed.code.as_str()),
                    Want::Any => true,
                };
                if !allowed {
                    self.fail(&format!(
                        "{label}: failed with {}, wanted {want:?}: {}",
                        failed.text(),
                        short(sql, 600)
                    ));
                }
                if self.in_tx {
                    self.meta("ROLLBACK TO SAVEPOINT fa_call; RELEASE SAVEPOINT fa_call");
                }
                if timeout.is_some() {
                    self.meta("SET statement_timeout = '60s'");
                }
                if let Some(before) = before {
                    let after = self.one_text(&self.digest_sql.clone());
                    if after != before {
                        self.fail(&format!(
                            "{label}: a failing call changed the store or the registry: {}\n  \
                             before: {before}\n  after:  {after}",
                            failed.text()
                        ));
                    }
                }
                let tally = self.labels.entry(label.to_owned()).or_default();
                tally.1 += 1;
                let seen = self
                    .codes
                    .entry(format!("{} {label}", failed.code))
                    .or_default();
                seen.count += 1;
                if seen.first.is_empty() {
                    seen.first = short(&failed.text(), 300);
                }
                Err(failed)
            }
        };
        self.check_session(label);
        outcome
    }

    /// The session is usable, is who it was with the settings it had, and the store is whole.
    pub(crate) fn check_session(&mut self, label: &str) {
        let now = self.one_text(SESSION);
        if now != self.session {
            self.fail(&format!(
                "{label}: the call changed the session: it was `{}`, it is `{now}`",
                self.session
            ));
        }
        let bad = self.one_text(GAPLESS);
        if bad != "0" {
            self.fail(&format!(
                "{label}: {bad} streams are not gapless 1..N or disagree with es.streams.version"
            ));
        }
    }

    pub(crate) fn append_sql(stream: Uuid, events: &[String], stream_type: Option<&str>) -> String {
        let array: Vec<String> = events.iter().map(|e| lit(e)).collect();
        format!(
            "SELECT es.append_events({}, NULL, ARRAY[{}]::jsonb[]{})",
            ulit(stream),
            array.join(", "),
            stream_type
                .map(|t| format!(", {}", lit(t)))
                .unwrap_or_default()
        )
    }

    /// An event of the hostile type asking the check (`ck`) or the evolve (`ev`) to `act`.
    pub(crate) fn act_event(&self, key: &str, act: &str, stream: Uuid, code: &str) -> String {
        let other = Uuid::from_u128(self.next_id + 0x1_0000);
        let target = if act == "append_other" { other } else { stream };
        let act = if act == "append_other" { "append" } else { act };
        serde_json::json!({
            "type": "Act",
            key: act,
            "stream": target.to_string(),
            "code": code,
            "detail": format!("fz detail of {code}"),
            "hint": format!("fz hint of {code}"),
        })
        .to_string()
    }
}

/// The fixed scenarios: each call with the outcome the contract gives it.
impl AggFuzz {
    /// Definitions with hostile arguments.
    pub(crate) fn scenario_definitions(&mut self) {
        const INVALID: &[&str] = &["ES301"];
        let ok = "'fa.ev_sql(jsonb,jsonb)'";
        let cases: Vec<(String, Want)> = vec![
            (format!("es.define_aggregate(NULL, {ok})"), Want::Code(&["22004"])),
            (format!("es.define_aggregate('', {ok})"), Want::Code(&["22023"])),
            ("es.define_aggregate('t', NULL)".into(), Want::Code(&["22004"])),
            (format!("es.define_aggregate('t', {ok}, NULL)"), Want::Code(&["22004"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', NULL, NULL)"), Want::Code(&["22004"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', NULL, -1)"), Want::Code(&["22023"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', NULL, -2147483648)"), Want::Code(&["22023"])),
            (format!("es.define_aggregate('t', {ok}, '[]')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '7')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '\"x\"')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, 'null')"), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.ck(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.setof(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.proc(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.agg(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.win(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.one(jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.txt(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.json(json,json)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.dflt(jsonb,jsonb,integer)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.poly(anyelement,anyelement)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.var(jsonb[])')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.trig()')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'es.replay(text,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'es.account_check(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 0::regprocedure)".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 4294967295::oid::regprocedure)".into(), Want::Code(INVALID)),
            ("es.define_aggregate('t', 'fa.nope(jsonb,jsonb)')".into(), Want::Code(&["42883"])),
            (format!("es.define_aggregate('t', {ok}, '{{}}', 'fa.ev_sql(jsonb,jsonb)')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '{{}}', 'fa.proc(jsonb,jsonb)')"), Want::Code(INVALID)),
            (format!("es.define_aggregate('t', {ok}, '{{}}', 0::regprocedure)"), Want::Code(INVALID)),
            (format!("es.define_aggregate('account', {ok})"), Want::Code(&["42710"])),
            (format!("es.define_aggregate('fz_ok', {ok})"), Want::Code(&["42710"])),
            // a name past the primary key's index row (54000), a long one that compresses
            (format!("es.define_aggregate((SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g), {ok})"), Want::Code(&["54000"])),
            (format!("es.define_aggregate(repeat('x', 100000), {ok})"), Want::Ok),
            ("es.drop_aggregate(repeat('x', 100000))".into(), Want::Ok),
            (format!("es.define_aggregate(E'fz \\x01 ''quoted'' \"x\" \\\\ %s é✓', {ok}, '{{\"a\": [1, {{\"b\": null}}]}}', NULL, 2147483647)"), Want::Ok),
            ("es.define_aggregate('fz_builtin', 'jsonb_concat(jsonb,jsonb)', '{}', NULL, 1)".into(), Want::Ok),
            // the store's own functions cannot define another type
            ("es.define_aggregate('fz_native', 'es.account_evolve(jsonb,jsonb)', '{}', 'es.account_check(jsonb,jsonb)', 1)".into(), Want::Code(&["ES301"])),
            ("es.define_aggregate('fz_definer', 'fa.ev_definer(jsonb,jsonb)', '{}', 'fa.ck(jsonb,jsonb)', 1)".into(), Want::Ok),
            ("es.define_aggregate('fz_strict', 'fa.ev_strict(jsonb,jsonb)')".into(), Want::Ok),
            // a huge initial state (about 1 MB before compression), a deep one
            ("es.define_aggregate('fz_huge', 'fa.ev_sql(jsonb,jsonb)', (SELECT jsonb_object_agg('k' || g, md5(g::text)) FROM generate_series(1, 25000) g), NULL, 1)".into(), Want::Ok),
            ("es.define_aggregate('fz_deep', 'fa.ev_sql(jsonb,jsonb)', (repeat('{\"a\":', 5000) || '1' || repeat('}', 5000))::jsonb, NULL, 1)".into(), Want::Any),
            ("es.alter_aggregate(NULL, 'fa.ev_sql(jsonb,jsonb)')".into(), Want::Code(&["22004"])),
            ("es.alter_aggregate('fz_nope', 'fa.ev_sql(jsonb,jsonb)')".into(), Want::Code(&["ES303"])),
            ("es.alter_aggregate('account', 'fa.ev_sql(jsonb,jsonb)')".into(), Want::Code(&["42501"])),
            ("es.alter_aggregate('fz_builtin', 'fa.setof(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.alter_aggregate('fz_builtin', 'jsonb_concat(jsonb,jsonb)', '[]')".into(), Want::Code(INVALID)),
            ("es.alter_aggregate('fz_builtin', 'jsonb_concat(jsonb,jsonb)', '{}', NULL, -5)".into(), Want::Code(&["22023"])),
            ("es.drop_aggregate(NULL)".into(), Want::Code(&["22004"])),
            ("es.drop_aggregate('fz_builtin', NULL)".into(), Want::Code(&["22004"])),
            ("es.drop_aggregate('fz_nope')".into(), Want::Code(&["ES303"])),
            ("es.drop_aggregate('account')".into(), Want::Code(&["42501"])),
            ("es.drop_aggregate('account', true)".into(), Want::Code(&["42501"])),
            ("es.define_upcaster(NULL, 1, 'fa.one(jsonb)')".into(), Want::Code(&["22004"])),
            ("es.define_upcaster('FzEv', NULL, 'fa.one(jsonb)')".into(), Want::Code(&["22004"])),
            ("es.define_upcaster('FzEv', 1, NULL)".into(), Want::Code(&["22004"])),
            ("es.define_upcaster('FzEv', 0, 'fa.one(jsonb)')".into(), Want::Code(&["22023"])),
            ("es.define_upcaster('FzEv', -2147483648, 'fa.one(jsonb)')".into(), Want::Code(&["22023"])),
            ("es.define_upcaster('FzEv', 1, 'fa.ev(jsonb,jsonb)')".into(), Want::Code(INVALID)),
            ("es.define_upcaster('FzEv', 1, 'fa.var(jsonb[])')".into(), Want::Code(INVALID)),
            ("es.define_upcaster('FzEv', 1, 0::regprocedure)".into(), Want::Code(INVALID)),
            ("es.define_upcaster('FzEv', 2147483647, 'fa.one(jsonb)')".into(), Want::Ok),
            ("es.define_upcaster('FzEv', 2147483647, 'fa.one(jsonb)')".into(), Want::Code(&["42710"])),
            ("es.drop_upcaster('FzEv', 2147483647)".into(), Want::Ok),
            ("es.drop_upcaster('FzEv', 2147483647)".into(), Want::Code(&["ES202"])),
            ("es.drop_upcaster(NULL, 1)".into(), Want::Code(&["22004"])),
            ("es.rebuild_batch(NULL)".into(), Want::Code(&["22004"])),
            ("es.rebuild_batch('fz_ok', NULL)".into(), Want::Code(&["22004"])),
            ("es.rebuild_batch('fz_ok', 0)".into(), Want::Code(&["22023"])),
            ("es.rebuild_batch('fz_ok', -2147483648)".into(), Want::Code(&["22023"])),
            ("es.rebuild_batch('fz_nope')".into(), Want::Code(&["ES303"])),
            ("es.rebuild_batch('account', 2147483647)".into(), Want::Ok),
            // retention and archiving (docs/reference.md §14): hostile arguments; the valid calls name a
            // type no stream has and a bound before every event, so nothing of the fuzz's
            // streams goes
            ("es.set_retention(NULL)".into(), Want::Code(&["22004"])),
            ("es.set_retention(NULL, '1 day')".into(), Want::Code(&["22004"])),
            ("es.set_retention('fz_none', '-1 day')".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', '0')".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', '178000000 years')".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', NULL, 0)".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', NULL, -9223372036854775808)".into(), Want::Code(&["22023"])),
            ("es.set_retention('fz_none', '1 microsecond', 9223372036854775807)".into(), Want::Ok),
            ("es.set_retention('', '1000 years')".into(), Want::Ok),
            ("es.set_retention('', '100000 years')".into(), Want::Code(&["22023"])),
            ("es.set_retention('Fz Ünïcödé ✓ 名前', NULL, 1)".into(), Want::Ok),
            ("es.pause_retention('fz_nope')".into(), Want::Code(&["22023"])),
            ("es.pause_retention()".into(), Want::Ok),
            ("es.resume_retention(NULL)".into(), Want::Ok),
            ("es.set_retention_paused('fz_none', NULL)".into(), Want::Code(&["22004"])),
            ("es.set_retention_paused(NULL, true)".into(), Want::Ok),
            ("es.retention_expired('fz_none', -9223372036854775808, 9223372036854775807, 0)".into(), Want::Ok),
            ("es.retention_expired(NULL, NULL, NULL, NULL)".into(), Want::Ok),
            ("es.retention_batch('fz_none', -2147483648, 9223372036854775807)".into(), Want::Ok),
            ("es.retention_batch('fz_none', 2147483647, -9223372036854775808)".into(), Want::Ok),
            ("es.retention_batch(NULL, NULL, NULL)".into(), Want::Ok),
            ("es.wake_retention()".into(), Want::Ok),
            ("es.set_retention('fz_none')".into(), Want::Ok),
            ("es.set_retention('')".into(), Want::Ok),
            ("es.set_retention('Fz Ünïcödé ✓ 名前')".into(), Want::Ok),
            ("es.archive(NULL)".into(), Want::Code(&["22004"])),
            ("es.archive('-infinity')".into(), Want::Ok),
            ("es.archive('1900-01-01', -1)".into(), Want::Code(&["22023"])),
            ("es.archive('1900-01-01', -9223372036854775808)".into(), Want::Code(&["22023"])),
            ("es.archive('1900-01-01', 9223372036854775807)".into(), Want::Ok),
            ("es.archive('infinity', 0)".into(), Want::Ok),
            ("es.state(NULL)".into(), Want::Code(&["22004"])),
            ("es.state('00000000-0000-0000-0000-000000000000')".into(), Want::Code(&["ES002"])),
            ("es.replay(NULL, '{}'::jsonb)".into(), Want::Code(&["22004"])),
            ("es.replay('fz_nope', '{}'::jsonb)".into(), Want::Code(&["ES303"])),
            ("es.replay('fz_sql', NULL::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_sql', '[]'::jsonb, '{}'::jsonb)".into(), Want::Code(&["22023"])),
            ("es.replay('fz_sql', '7'::jsonb, '{}'::jsonb)".into(), Want::Code(&["22023"])),
            ("es.replay('fz_builtin', '[1]'::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_sql', '{\"type\": \"A\"}'::jsonb)".into(), Want::Ok),
            ("es.replay('fz_hostile', '{\"type\": \"A\", \"ev\": \"null\"}'::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_strict', '{\"type\": \"A\", \"ev\": 1}'::jsonb)".into(), Want::Code(&["ES301"])),
            ("es.replay('fz_native', '{\"type\": \"Deposited\"}'::jsonb)".into(), Want::Code(&["ES303"])),
            ("es.replay('account', '{\"type\": \"Deposited\"}'::jsonb)".into(), Want::Code(&["ES003"])),
            // personal data (crypto-shredding) with hostile paths, subjects and sealed look-alikes
            ("es.define_personal_data(NULL, ARRAY['a'])".into(), Want::Code(&["22004"])),
            ("es.define_personal_data('FzPersonal', NULL)".into(), Want::Code(&["22004"])),
            ("es.define_personal_data('FzPersonal', ARRAY[NULL]::text[])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', ARRAY['', 'a'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', ARRAY['a', 'a.b'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', ARRAY[E'a\\nb'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('Opened', ARRAY['initial_balance_cents'])".into(), Want::Code(&["22023"])),
            ("es.define_personal_data('FzPersonal', '{{a},{b}}'::text[])".into(), Want::Any),
            ("es.define_personal_data('FzPersonal', ARRAY[repeat('x', 100000)])".into(), Want::Any),
            ("es.define_personal_data(repeat('x', 100000), ARRAY['a'])".into(), Want::Any),
            ("es.define_personal_data('FzPersonal', ARRAY['who', 'a.b.c', E'é✓ \\x01 %s'])".into(), Want::Ok),
            ("es.append_events(gen_random_uuid(), 0, ARRAY['{\"type\": \"FzPersonal\", \"who\": {\"x\": [1, 2.50]}, \"a\": {\"b\": {\"c\": 1e300}}, \"metadata\": {\"data_subject\": \"fz subject ✓\"}}'::jsonb, '{\"type\": \"FzPersonal\", \"who\": \"es:enc:v1:1:AAAA\", \"a\": 7}'::jsonb])".into(), Want::Ok),
            ("es.append_events(gen_random_uuid(), 0, ARRAY['{\"type\": \"FzPersonal\", \"who\": null, \"metadata\": {\"data_subject\": 5}}'::jsonb])".into(), Want::Ok),
            ("es.forget(NULL)".into(), Want::Code(&["22004"])),
            ("es.forget('')".into(), Want::Ok),
            ("es.forget('fz subject ✓')".into(), Want::Ok),
            ("es.forget(repeat('x', 100000))".into(), Want::Any),
            ("es.reveal(NULL)".into(), Want::Ok),
            ("es.reveal('\"es:enc:v1:1:AAAA\"')".into(), Want::Ok),
            ("es.reveal('{\"es:enc:v1:1:A\": \"es:enc:v1:99999999999999999999:x\", \"b\": [\"es:enc:v1:-1:\", \"es:enc:v1:\"]}')".into(), Want::Ok),
            ("es.reveal((repeat('[', 3000) || '\"es:enc:v1:1:AAAA\"' || repeat(']', 3000))::jsonb)".into(), Want::Any),
            ("es.define_personal_data('FzPersonal', ARRAY[]::text[])".into(), Want::Ok),
        ];
        for (expr, want) in cases {
            let _ = self.call("definition", &format!("SELECT {expr}"), want);
        }
        let _ = self.call(
            "history",
            "SELECT * FROM es.history(NULL)",
            Want::Code(&["22004"]),
        );
        for sql in [
            "CALL es.rebuild_states(NULL)",
            "CALL es.rebuild_states('fz_ok', 0)",
            "CALL es.rebuild_states('fz_nope')",
        ] {
            let _ = self.call(
                "rebuild_states",
                sql,
                Want::Code(&["22004", "22023", "ES303"]),
            );
        }
        // a procedure that commits, inside a transaction block
        self.meta("BEGIN");
        self.in_tx = true;
        let _ = self.call(
            "rebuild_states in a transaction",
            "CALL es.rebuild_states('fz_ok')",
            Want::Code(&["2D000"]),
        );
        self.meta("ROLLBACK");
        self.in_tx = false;
    }

    /// Appends naming types: new streams of each type, conflicts (ES302), undeclared names.
    pub(crate) fn scenario_stream_types(&mut self) {
        for _ in 0..6 {
            let s = self.new_stream();
            let _ = self.call(
                "append fz_ok",
                &Self::append_sql(
                    s,
                    &[r#"{"type":"Opened"}"#.into(), r#"{"type":"Added"}"#.into()],
                    Some("fz_ok"),
                ),
                Want::Ok,
            );
            self.ok_streams.push(s);
        }
        let s = self.ok_streams[0];
        let conflict = Self::append_sql(s, &[r#"{"type":"A"}"#.into()], Some("fz_sql"));
        let _ = self.call("append conflicting type", &conflict, Want::Code(&["ES302"]));
        let refused = Self::append_sql(
            s,
            &[r#"{"type":"A"}"#.into(), r#"{"type":"Refused"}"#.into()],
            None,
        );
        match self.call("append refused by check", &refused, Want::Code(&["FZ001"])) {
            Err(f) if f.detail.as_deref() == Some("n: 3") => {}
            other => self.fail(&format!(
                "the check's DETAIL did not pass through unchanged: {other:?}"
            )),
        }
        for name in ["", "fz undeclared", "account"] {
            let s = self.new_stream();
            let _ = self.call(
                "append naming a type",
                &Self::append_sql(s, &[r#"{"type":"A"}"#.into()], Some(name)),
                Want::Any,
            );
        }
        let _ = self.call(
            "append with NULL events",
            &format!("SELECT es.append_events({}, NULL, NULL, 'fz_ok')", ulit(s)),
            Want::Code(&["22004"]),
        );
        for ty in [
            "fz_hostile",
            "fz_sql",
            "fz_builtin",
            "fz_definer",
            "fz_strict",
            "fz_huge",
            "fz_native",
        ] {
            let s = self.new_stream();
            let first = if ty == "fz_native" {
                r#"{"type":"Opened","account_holder":"Fz","initial_balance_cents":5}"#
            } else {
                r#"{"type":"Opened"}"#
            };
            // fz_native was refused: its streams are generic (es.state: ES303)
            let want = if ty == "fz_native" {
                Want::Any
            } else {
                Want::Ok
            };
            let _ = self.call(
                &format!("append {ty}"),
                &Self::append_sql(s, &[first.into()], Some(ty)),
                want,
            );
            if ty != "fz_native" && ty != "fz_huge" {
                self.hostile.push(s);
            }
            let _ = self.call("state", &format!("SELECT es.state({})", ulit(s)), want);
        }
    }

    /// Every behaviour of the check and the evolve, appended to an existing stream of the
    /// hostile type and to a new one; the result each must give.
    pub(crate) fn scenario_behaviours(&mut self) {
        let existing = self.hostile[0];
        for act in ACTS.iter().chain(EV_RESULTS) {
            for key in ["ck", "ev"] {
                if key == "ck" && EV_RESULTS.contains(act) {
                    continue;
                }
                for new in [false, true] {
                    let stream = if new { self.new_stream() } else { existing };
                    let event = self.act_event(key, act, stream, "CT042");
                    let sql = Self::append_sql(stream, &[event], Some("fz_hostile"));
                    let want = expected(key, act);
                    let timeout = (*act == "loop").then_some("150ms");
                    let label =
                        format!("append {key} {}", if act.is_empty() { "fine" } else { act });
                    let result = self.call_with(&label, &sql, want, timeout);
                    self.check_behaviour(key, act, &result);
                    if new && result.is_err() {
                        let n = self.one_text(&format!(
                            "SELECT count(*) FROM es.streams WHERE stream_id = {}",
                            ulit(stream)
                        ));
                        if n != "0" {
                            self.fail(&format!(
                                "{label}: a refused first append left the stream row"
                            ));
                        }
                    }
                }
            }
        }
        // every SQLSTATE, through the check (unchanged, with DETAIL and HINT) and the evolve
        for code in RAISED_CODES {
            for key in ["ck", "ev"] {
                let event = self.act_event(key, "raise", existing, code);
                let sql = Self::append_sql(existing, &[event], None);
                let passes = ["40", "53", "54", "57"].iter().any(|c| code.starts_with(c));
                let want: &'static [&'static str] = if key == "ck" || passes {
                    std::slice::from_ref(RAISED_CODES.iter().find(|c| *c == code).expect("a code"))
                } else {
                    &["ES301"]
                };
                let result = self.call(&format!("raise {key}"), &sql, Want::Code(want));
                if let Err(f) = result {
                    let detail = format!("fz detail of {code}");
                    if (key == "ck" || passes)
                        && (f.detail.as_deref() != Some(detail.as_str()) || f.hint.is_none())
                    {
                        self.fail(&format!(
                            "{code} raised by {key}: DETAIL or HINT lost: {}",
                            f.text()
                        ));
                    }
                    if key == "ev"
                        && !passes
                        && !f.detail.as_deref().unwrap_or_default().contains(code)
                    {
                        self.fail(&format!(
                            "ES301 does not name the evolve's {code}: {}",
                            f.text()
                        ));
                    }
                }
            }
        }
        let xx = self.act_event("ck", "raise_xx", existing, "XX000");
        match self.call(
            "check raises XX000",
            &Self::append_sql(existing, &[xx], None),
            Want::Code(&["XX000"]),
        ) {
            Err(f) if f.message == USER_XX => {}
            other => self.fail(&format!(
                "a check's own XX000 did not pass through unchanged: {other:?}"
            )),
        }
        // a batch that fails at its last event stores none of it
        let mut batch: Vec<String> = (0..50)
            .map(|i| format!(r#"{{"type":"A","i":{i}}}"#))
            .collect();
        batch.push(self.act_event("ev", "array", existing, ""));
        let _ = self.call(
            "batch failing at its end",
            &Self::append_sql(existing, &batch, None),
            Want::Code(&["ES301"]),
        );
    }

    /// Checks what the error of a behaviour says (the role changes must be refused as such).
    pub(crate) fn check_behaviour(
        &mut self,
        key: &str,
        act: &str,
        result: &Result<Vec<Row>, Failed>,
    ) {
        if let Err(f) = result
            && matches!(act, "set_role" | "reset_role" | "session_auth")
        {
            let text = f.text();
            if !(text.contains("42501") && text.contains("within security-")) {
                self.fail(&format!(
                    "{key} {act}: not refused as a security-restricted operation: {text}"
                ));
            }
        }
    }

    /// Streams appended while their type was not declared, holding events every behaviour
    /// reacts to, then the type declared: es.state, es.history, es.replay and the rebuild meet
    /// the behaviours on replay.
    pub(crate) fn scenario_replays(&mut self) {
        let mut late = Vec::new();
        for act in ACTS.iter().chain(EV_RESULTS) {
            let s = self.new_stream();
            let events = vec![
                r#"{"type":"Opened"}"#.to_owned(),
                self.act_event("ev", act, s, "CT043"),
                r#"{"type":"After"}"#.to_owned(),
            ];
            let _ = self.call(
                "append undeclared",
                &Self::append_sql(s, &events, Some("fz_late")),
                Want::Ok,
            );
            late.push((*act, s));
        }
        let _ = self.call(
            "state of undeclared",
            &format!("SELECT es.state({})", ulit(late[0].1)),
            Want::Code(&["ES303"]),
        );
        let _ = self.call(
            "define fz_late",
            "SELECT es.define_aggregate('fz_late', 'fa.ev(jsonb,jsonb)', '{}', 'fa.ck(jsonb,jsonb)', 1)",
            Want::Ok,
        );
        for (act, s) in late.clone() {
            let want = expected("ev", act);
            let timeout = (act == "loop").then_some("150ms");
            let id = ulit(s);
            for (label, sql) in [
                ("state", format!("SELECT es.state({id})")),
                (
                    "state at",
                    format!("SELECT es.state({id}, at_version => 2)"),
                ),
                ("history", format!("SELECT count(*) FROM es.history({id})")),
                (
                    "replay",
                    format!(
                        "SELECT es.replay('fz_late', data ORDER BY version) FROM es.events WHERE stream_id = {id}"
                    ),
                ),
                (
                    "replay window",
                    format!(
                        "SELECT es.replay('fz_late', '{{\"w\": 1}}', data) OVER (ORDER BY version) FROM es.events WHERE stream_id = {id}"
                    ),
                ),
                (
                    "append after",
                    Self::append_sql(s, &[r#"{"type":"Later"}"#.into()], Some("fz_late")),
                ),
            ] {
                let r = self.call_with(&format!("{label} {act}"), &sql, want, timeout);
                self.check_behaviour("ev", act, &r);
            }
        }
        // the rebuild meets them one stream at a time
        for _ in 0..late.len() + 2 {
            let _ = self.call_with(
                "rebuild_batch",
                "SELECT es.rebuild_batch('fz_late', 1)",
                Want::Any,
                Some("300ms"),
            );
        }
        let _ = self.call_with(
            "rebuild_states",
            "CALL es.rebuild_states('fz_late', 3)",
            Want::Any,
            Some("300ms"),
        );
        // replaced by a type whose evolve is fine: the rebuild completes, the reads agree
        let _ = self.call(
            "alter fz_late",
            "SELECT es.alter_aggregate('fz_late', 'fa.ev_sql(jsonb,jsonb)', '{}', NULL, 2)",
            Want::Ok,
        );
        let _ = self.call_with(
            "rebuild_states",
            "CALL es.rebuild_states('fz_late', 2)",
            Want::Ok,
            Some("20s"),
        );
        let stale =
            self.one_text("SELECT stale_streams FROM es.aggregates WHERE stream_type = 'fz_late'");
        if stale != "0" {
            self.fail(&format!(
                "after es.rebuild_states, {stale} streams of fz_late are stale"
            ));
        }
        let differ = self.one_text(
            "SELECT count(*) FROM es.streams s WHERE stream_type = 'fz_late' AND state IS DISTINCT FROM \
             (SELECT es.replay('fz_late', data ORDER BY version) FROM es.events e WHERE e.stream_id = s.stream_id)",
        );
        if differ != "0" {
            self.fail(&format!(
                "{differ} rebuilt streams of fz_late keep a state other than their replay"
            ));
        }
        let _ = self.call(
            "drop fz_late in use",
            "SELECT es.drop_aggregate('fz_late')",
            Want::Code(&["2BP01"]),
        );
        let _ = self.call(
            "drop fz_late detached",
            "SELECT es.drop_aggregate('fz_late', true)",
            Want::Ok,
        );
        let _ = self.call(
            "state detached",
            &format!("SELECT es.state({})", ulit(late[0].1)),
            Want::Code(&["ES303"]),
        );
    }
}

/// What an append whose `key` function (`ck` / `ev`) does `act` must end with.
pub(crate) fn expected(key: &str, act: &str) -> Want {
    let ck = key == "ck";
    match act {
        "" | "sleep" | "append_other" | "set_config" | "set_local" | "txid" | "subxact"
        | "cursor" | "notice" | "lock" | "huge" | "deep" => Want::Ok,
        "loop" => Want::Code(&["57014"]),
        "recurse" => Want::Code(&["54001"]),
        // its own error passes through a check; an evolve's is ES301
        "raise" if ck => Want::Code(&["CT042", "CT043"]),
        "divzero" if ck => Want::Code(&["22012"]),
        "set_role" | "reset_role" | "session_auth" | "temp" | "listen" if ck => {
            Want::Code(&["42501", "55000"])
        }
        "commit" | "rollback" if ck => Want::Code(&["2D000"]),
        // the stream it judges: refused (ES301); its row updated under the append: ES301 too
        "append" => Want::Code(&["ES301"]),
        "update_streams" => Want::Any,
        _ => Want::Code(&["ES301"]),
    }
}
