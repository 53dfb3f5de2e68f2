//! Subscriptions and projections (docs/reference.md §9, §10, docs/consuming-events.md), a third of
//! the random calls: their constants (the SQLSTATEs each call may end with, the names, consumers
//! and handlers drawn from), the checks of what `es.poll` returns and of the workers sampled, the
//! generators of every call of their surface, and the consumer scenarios.

use super::*;

/// Share of the random calls that go to the subscription and projection surface.
pub(crate) const FLOW_SHARE: f64 = 0.3;

/// On: some projection handlers raise `assert_failure` (P0004), which PL/pgSQL's `WHEN OTHERS`
/// does not catch. `es.run_handler` catches it by name; anything that still escapes aborts
/// only that projection's batch (the worker then goes one event at a time and parks the event
/// that causes it), and the other projections keep running (docs/reference.md §10). The fuzz found the
/// escape first: the worker used to die and every projection of the database stopped.
pub(crate) const FUZZ_ESCAPING_HANDLER: bool = true;

/// On: consumer names of 6 kB that do not compress. They must fail with 22023 (1 to 63
/// characters, like subscription names), not with 54000 from the index of
/// `es.subscription_consumers` (what the fuzz found first).
pub(crate) const FUZZ_INCOMPRESSIBLE_CONSUMER: bool = true;

/// False: a 40P01 from a subscription or projection call fails the run (true only counts it).
/// The worker and every client function lock a projection's partition row before anything else
/// of it; the fuzz first found the worker locking the configuration row first, which deadlocked
/// with a transaction that called `es.claim` and then `es.pause_projection` (ES_FUZZ_SEED=12).
pub(crate) const TOLERATE_WORKER_DEADLOCKS: bool = false;

/// False: rows of a dropped subscription left behind (parked events, consumers) fail the run;
/// true only reports them. `es.drop_subscription`, `es.drop_projection` and
/// `es.reset_projection` lock the partition rows before they delete, so an `es.nack` in flight
/// commits first and what it parked is deleted too (the fuzz found it surviving a drop whose
/// DELETEs shared one snapshot).
pub(crate) const TOLERATE_DROP_RACE_ORPHANS: bool = false;

/// False: more than one `event_store worker` running at once for the fuzz's database fails the
/// run; true only reports it. A worker claims its database in shared memory at start (a second
/// one exits), and only the launcher replaces one that died (the fuzz found duplicates when the
/// postmaster restarted a worker the launcher had already replaced).
pub(crate) const TOLERATE_DUPLICATE_WORKERS: bool = false;

/// The SQLSTATEs every subscription or projection call may fail with: subscription leased by
/// another consumer, no such subscription or projection, invalid argument, NULL argument,
/// duplicate name, and the `lock_timeout` the fuzz's connections set (200 ms beside TX0's
/// open transactions, 5 s on TX0). See [`Fuzz::flow_allows`] for the ones allowed only in some
/// transactions.
pub(crate) const FLOW_CODES: &[&str] = &["ES201", "ES202", "22023", "22004", "42710", "55P03"];

/// Out-of-range literals and values: an interval or timestamp past PostgreSQL's range
/// (`now() + lease`), an interval field overflow.
pub(crate) const RANGE_CODES: &[&str] = &["22008", "22015", "22003"];

/// Deliberately wrong argument types (42883, 42804) and malformed or out-of-range literals
/// (22P02, 22003, 22008, 22015 interval field overflow, 22007 invalid interval syntax).
pub(crate) const TYPE_CODES: &[&str] = &[
    "42883", "42804", "22P02", "22003", "22008", "22015", "22007",
];

/// Subscription and projection names the flow calls pick from, so that they collide: plain,
/// unicode, quotes and backslashes, printf-style directives, a leading space, one letter.
pub(crate) const FLOW_NAMES: &[&str] = &[
    "fz_sub_a",
    "fz_sub_b",
    "fz_sub_c",
    "fz_proj_a",
    "fz_proj_b",
    "Fz Ünïcödé ✓ 名前",
    "a'b\"c\\d",
    "%s%n%x%d",
    " lead",
    "x",
];

/// The seed's projections (`es.enable_account_projections`). The fuzz never acks, nacks or
/// claims them, so that the final check can compare their tables with the store.
pub(crate) const ACCOUNT_PROJECTIONS: &[&str] = &["account_balances", "account_transactions"];

/// A subscription whose event type never occurs: `es.wait` on it sleeps to its timeout.
pub(crate) const PROBE_NEVER: &str = "fz_probe_never";

/// Consumers of `es.claim` and friends.
pub(crate) const CONSUMERS: &[&str] = &["c1", "c2", "c3", "Ünïcödé consumer ✓", "%s"];

/// Handlers `f(es.events)` created at the start (see [`FLOW_SETUP`]).
pub(crate) const VALID_HANDLERS: &[&str] = &[
    "public.fz_ok(es.events)",
    "public.fz_ok(es.events)",
    "public.fz_flaky(es.events)",
    "public.fz_always(es.events)",
    "public.\"Fz Hándler ✓\"(es.events)",
    "public.fz_raise_internal(es.events)",
    "public.fz_pauser(es.events)",
    "public.fz_slow(es.events)",
    "public.fz_dropme(es.events)",
    "public.fz_setof(es.events)",
];

/// Functions that are not handlers (22023), or no function at all (42883 from the cast).
pub(crate) const INVALID_HANDLERS: &[&str] = &[
    "public.fz_int(integer)",
    "public.fz_two(es.events,integer)",
    "public.fz_default(es.events,text)",
    "public.fz_proc(es.events)",
    "es.account_replay(jsonb)",
    "es.poll(text,integer,bigint,text)",
    "pg_catalog.now()",
    "public.fz_nope(es.events)",
];

/// The handlers of [`VALID_HANDLERS`] and the non-handlers of [`INVALID_HANDLERS`], with a
/// read model for `fz_ok`, and the probe subscription.
pub(crate) const FLOW_SETUP: &str = r#"
CREATE TABLE public.fz_model (global_position bigint PRIMARY KEY, event_type text);
CREATE FUNCTION public.fz_ok(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.fz_model VALUES (e.global_position, e.event_type) ON CONFLICT DO NOTHING;
END $$;
CREATE FUNCTION public.fz_flaky(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 4 = 0 THEN
        RAISE EXCEPTION 'fz flaky handler at %', e.global_position;
    END IF;
END $$;
CREATE FUNCTION public.fz_always(e es.events) RETURNS bigint LANGUAGE sql
AS $$ SELECT 1 / (e.version - e.version) $$;
CREATE FUNCTION public."Fz Hándler ✓"(e es.events) RETURNS boolean LANGUAGE sql
AS $$ SELECT e.version > 0 $$;
CREATE FUNCTION public.fz_raise_internal(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 3 = 0 THEN
        RAISE EXCEPTION 'fz handler raises XX000 at %', e.global_position USING ERRCODE = 'XX000';
    END IF;
END $$;
CREATE FUNCTION public.fz_pauser(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 25 = 0 THEN
        PERFORM es.pause_projection(j.name) FROM es.projection_config j
          WHERE j.handler = 'public.fz_pauser';
    END IF;
END $$;
CREATE FUNCTION public.fz_slow(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.global_position % 16 = 0 THEN
        PERFORM pg_sleep(0.002);
    END IF;
END $$;
CREATE FUNCTION public.fz_dropme(e es.events) RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE FUNCTION public.fz_setof(e es.events) RETURNS SETOF integer LANGUAGE sql
AS $$ SELECT generate_series(1, 3) $$;
CREATE FUNCTION public.fz_escape(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    ASSERT e.global_position % 2 = 0, 'fz handler assertion escapes es.run_handler';
END $$;
CREATE FUNCTION public.fz_int(e integer) RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE FUNCTION public.fz_two(e es.events, x integer) RETURNS void LANGUAGE plpgsql
AS $$ BEGIN NULL; END $$;
CREATE FUNCTION public.fz_default(e es.events, x text DEFAULT '') RETURNS void LANGUAGE plpgsql
AS $$ BEGIN NULL; END $$;
CREATE PROCEDURE public.fz_proc(e es.events) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
SELECT es.create_subscription('fz_probe_never', NULL, ARRAY['FzNeverAppended']);
"#;

/// A digest of the subscription state a failing call must not change: the subscriptions,
/// their partitions (checkpoint, lease, failing head), the competing consumers, the parked
/// events, the projections. Rows of projections are left out where the projection worker
/// writes them (checkpoints, parked events, `paused` through the `fz_pauser` handler,
/// `last_run_at`).
pub(crate) const FLOW_DIGEST: &str = "SELECT concat_ws(' ', \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', name, start_after, \
        event_types::text, stream_type, partitions, max_attempts))), 0) \
        FROM es.subscription_config WHERE name NOT IN (SELECT name FROM es.projection_config)), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', subscription, partition, \
        checkpoint, owner, lease_until, head_position, head_attempts, head_error))), 0) \
        FROM es.subscription_partitions \
        WHERE subscription NOT IN (SELECT name FROM es.projection_config)), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', subscription, consumer, \
        seen_until))), 0) FROM es.subscription_consumers), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', subscription, partition, \
        global_position, stream_id, attempts, error, replay))), 0) \
        FROM es.parked_events WHERE subscription NOT IN (SELECT name FROM es.projection_config)), \
     (SELECT count(*) || ':' || coalesce(sum(hashtext(concat_ws('|', name, handler, batch, \
        run_as))), 0) FROM es.projection_config))";

/// `es.stream_hash` as docs/reference.md §9 defines it: 32-bit FNV-1a over the uuid's 16 bytes, top bit
/// cleared.
pub(crate) fn fnv1a31(bytes: &[u8; 16]) -> i32 {
    let h = bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (h & 0x7fff_ffff) as i32
}

/// The subscription and projection surface (docs/reference.md §9, §10).
impl Fuzz {
    // ---- checks ------------------------------------------------------------------------------

    /// [`FLOW_DIGEST`] as connection `c` sees it now (simple protocol, as [`Fuzz::digest`]).
    pub(crate) fn flow_digest(&mut self, c: usize) -> String {
        let result = self.conns[c].client.simple_query(FLOW_DIGEST);
        let digest = match result {
            Ok(messages) => messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            }),
            Err(err) => self.fail(
                c,
                &format!("the flow digest query failed: {}", describe(&err)),
            ),
        };
        digest.unwrap_or_else(|| self.fail(c, "the flow digest query returned no row"))
    }

    /// Whether a call may fail with `code`: every code for the calls outside the subscription
    /// and projection surface; for those, [`FLOW_CODES`], the call's own extras, 40001 in a
    /// REPEATABLE READ or SERIALIZABLE transaction (a row the projection worker updated since
    /// the snapshot), and 40P01 in a transaction that holds ALTER TABLE locks on the store
    /// (the worker waits for them while holding its projection's rows), or in any transaction
    /// with [`TOLERATE_WORKER_DEADLOCKS`].
    pub(crate) fn flow_allows(&self, c: usize, code: &str, call: &Call) -> bool {
        let Some(extra) = &call.allowed else {
            return true;
        };
        if FLOW_CODES.contains(&code) || extra.contains(&code) {
            return true;
        }
        let conn = &self.conns[c];
        match code {
            "40001" => conn.in_tx && conn.strict_iso,
            "40P01" => conn.in_tx && (conn.ddl || TOLERATE_WORKER_DEADLOCKS),
            _ => false,
        }
    }

    pub(crate) fn allowed_text(&self, c: usize, call: &Call) -> String {
        let mut codes: Vec<&str> = FLOW_CODES.to_vec();
        codes.extend(call.allowed.iter().flatten());
        let conn = &self.conns[c];
        if conn.in_tx && conn.strict_iso {
            codes.push("40001");
        }
        if conn.in_tx && (conn.ddl || TOLERATE_WORKER_DEADLOCKS) {
            codes.push("40P01");
        }
        codes.join(", ")
    }

    /// `es.poll`'s rows: at most `max_count`, in strictly ascending position order, and (when
    /// the query says) each in the partition and matching the filters. Remembers the first and
    /// last position for the acks and nacks that follow.
    pub(crate) fn check_poll(&mut self, c: usize, call: &Call, rows: &[Row], polled: Polled) {
        let mut positions = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(position) = row.try_get::<_, i64>(0) else {
                return;
            };
            positions.push(position);
            if polled.checked && row.try_get::<_, Option<bool>>(1).ok().flatten() == Some(false) {
                self.fail(
                    c,
                    &format!(
                        "es.poll returned the event at {position}, which is not in the polled \
                         partition or does not match the subscription's event types or stream \
                         type: {}",
                        call.text()
                    ),
                );
            }
        }
        if let Some(max) = polled.max
            && positions.len() > max.max(0) as usize
        {
            self.fail(
                c,
                &format!(
                    "es.poll returned {} events, max_count was {max}: {}",
                    positions.len(),
                    call.text()
                ),
            );
        }
        if let Some(w) = positions.windows(2).find(|w| w[0] >= w[1]) {
            self.fail(
                c,
                &format!(
                    "es.poll returned position {} before {} (not in global_position order): {}",
                    w[0],
                    w[1],
                    call.text()
                ),
            );
        }
        if let (Some(name), Some(partition)) = (polled.name, polled.partition) {
            match (positions.first(), positions.last()) {
                (Some(&first), Some(&last)) => self.heads.insert((name, partition), (first, last)),
                _ => self.heads.remove(&(name, partition)),
            };
        }
    }

    /// Looks at this database's projection workers: one at most may run.
    pub(crate) fn sample_workers(&mut self) {
        let result = self.conns[AUTO].client.query(
            "SELECT pid, backend_start::text FROM pg_stat_activity \
             WHERE backend_type = 'event_store worker' AND datname = current_database() \
             ORDER BY pid",
            &[],
        );
        let rows = match result {
            Ok(rows) => rows,
            Err(err) => self.fail(
                AUTO,
                &format!("reading pg_stat_activity: {}", describe(&err)),
            ),
        };
        self.stats.worker_samples += 1;
        self.stats.max_workers = self.stats.max_workers.max(rows.len());
        let workers: Vec<String> = rows
            .iter()
            .map(|r| {
                let pid: i32 = r.get(0);
                self.worker_pids.insert(pid);
                format!("pid {pid} started {}", r.get::<_, String>(1))
            })
            .collect();
        if workers.len() > 1 && self.duplicate_workers.len() < 10 {
            let mut seen = format!("after {} calls: {}", self.stats.calls, workers.join(", "));
            if self.duplicate_workers.is_empty() {
                // What led to it: the last calls (a worker ERROR, e.g. a deadlock with one of
                // TX0's transactions, comes before a second worker).
                seen.push_str("; the calls before:\n      ");
                seen.push_str(
                    &self
                        .history
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n      "),
                );
            }
            self.duplicate_workers.push(seen);
        }
    }

    // ---- random values -----------------------------------------------------------------------

    /// A subscription or projection name: mostly from [`FLOW_NAMES`] (and the seed's
    /// projections when `account_ok`), else 63 characters (ASCII, 2-byte, 4-byte), 64
    /// characters, empty, control characters, 100 kB, a missing one, or NULL.
    pub(crate) fn pick_flow_name(&mut self, account_ok: bool) -> Option<String> {
        let r = self.rng.random_range(0..100);
        Some(match r {
            0..72 => self.pick(FLOW_NAMES).to_owned(),
            72..77 if account_ok => self.pick(ACCOUNT_PROJECTIONS).to_owned(),
            72..77 => PROBE_NEVER.to_owned(),
            77..80 => "n".repeat(63),
            80..82 => "é".repeat(63),
            82..83 => "𝄞".repeat(63),
            83..85 => "n".repeat(64),
            85..87 => String::new(),
            87..88 => "ctl\u{1}x".to_owned(),
            88..89 => "tab\tx".to_owned(),
            89..90 => "x".repeat(100_000),
            90..94 => format!("fz_missing_{}", self.rng.random_range(0..1000)),
            _ => return None,
        })
    }

    /// A subscription to poll, ack, nack or claim: mostly one the fuzz created, never one of
    /// the seed's projections.
    pub(crate) fn pick_sub_name(&mut self) -> Option<String> {
        if !self.partitions.is_empty() && self.chance(0.6) {
            let i = self.rng.random_range(0..self.partitions.len());
            return self.partitions.keys().nth(i).cloned();
        }
        if !self.projections.is_empty() && self.chance(0.2) {
            let i = self.rng.random_range(0..self.projections.len());
            return Some(self.projections[i].clone());
        }
        self.pick_flow_name(false)
    }

    /// A projection to pause, resume, reset, drop or wait for: mostly one the fuzz created.
    pub(crate) fn pick_projection_name(&mut self) -> Option<String> {
        if !self.projections.is_empty() && self.chance(0.5) {
            let i = self.rng.random_range(0..self.projections.len());
            return Some(self.projections[i].clone());
        }
        self.pick_flow_name(true)
    }

    pub(crate) fn pick_consumer(&mut self) -> Option<String> {
        if FUZZ_INCOMPRESSIBLE_CONSUMER && self.chance(0.05) {
            return Some(
                (0..375)
                    .map(|_| format!("{:016x}", self.rng.random::<u64>()))
                    .collect(),
            );
        }
        Some(match self.rng.random_range(0..100) {
            0..75 => self.pick(CONSUMERS).to_owned(),
            75..80 => String::new(),
            80..83 => "c".repeat(10_000),
            83..86 => "ctl\u{1}".to_owned(),
            _ => return None,
        })
    }

    /// A partition of `name`: mostly in range, else one past, negative, huge or NULL.
    pub(crate) fn pick_partition(&mut self, name: &Option<String>) -> Option<i32> {
        let n = name
            .as_ref()
            .and_then(|n| self.partitions.get(n).copied())
            .unwrap_or(1)
            .max(1);
        match self.rng.random_range(0..100) {
            0..65 => Some(self.rng.random_range(0..n)),
            65..72 => Some(n),
            72..78 => Some(-1),
            78..82 => Some(i32::MIN),
            82..86 => Some(i32::MAX),
            86..89 => Some(1024),
            89..93 => Some(0),
            _ => None,
        }
    }

    pub(crate) fn pick_max_count(&mut self) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..55 => Some(self.rng.random_range(1..=10)),
            55..65 => Some(100),
            65..68 => Some(i32::MAX.into()),
            68..70 => Some(i64::MAX),
            70..78 => Some(0),
            78..82 => Some(-1),
            82..86 => Some(i64::MIN),
            86..88 => Some(i32::MIN.into()),
            88..93 => Some(1000),
            _ => None,
        }
    }

    /// A position for ack or nack: mostly the head or the last event of the partition's last
    /// poll, else near the end of the log, an extreme, or NULL.
    pub(crate) fn pick_flow_position(
        &mut self,
        name: &Option<String>,
        partition: Option<i32>,
    ) -> Option<i64> {
        let head = match (name, partition) {
            (Some(n), Some(p)) => self.heads.get(&(n.clone(), p)).copied(),
            _ => None,
        };
        let r = self.rng.random_range(0..100);
        match (r, head) {
            (0..45, Some((first, _))) => Some(first),
            (45..60, Some((_, last))) => Some(last),
            (0..60, None) | (60..70, _) => Some(self.last_position),
            _ => self.pick_bigint(self.last_position + 1),
        }
    }

    /// A `timeout_ms`: 0 to 20 ms, negative or NULL (never long: calls run on one thread).
    pub(crate) fn pick_timeout(&mut self) -> Option<i32> {
        match self.rng.random_range(0..100) {
            0..80 => Some(self.rng.random_range(0..=20)),
            80..87 => Some(-1),
            87..92 => Some(i32::MIN),
            _ => None,
        }
    }

    /// A lease interval as text (cast by the statement): short, long, zero, negative, mixed
    /// signs, past the timestamp range, or NULL.
    pub(crate) fn pick_lease(&mut self) -> Option<String> {
        if self.chance(0.6) {
            return Some(
                self.pick(&["1 ms", "100 ms", "500 ms", "1 s", "2 s"])
                    .to_owned(),
            );
        }
        let lease = self.pick(&[
            "30 s",
            "10 min",
            "1 day",
            "0",
            "-1 s",
            "-1 day",
            "1 mon -40 days",
            "-1 mon 40 days",
            "1 mon -30 days 1 us",
            "100 years",
            "1000000 years",
            "178000000 years",
            "-178000000 years",
            "2147483647 days",
            "",
        ]);
        if lease.is_empty() {
            None
        } else {
            Some(lease.to_owned())
        }
    }

    /// An `event_types` array: NULL, ordinary, matching nothing, empty, with an empty or NULL
    /// element, 1000 elements, a 100 kB element.
    pub(crate) fn pick_event_types(&mut self) -> Option<Vec<Option<String>>> {
        let some = |v: &[&str]| Some(v.iter().map(|t| Some((*t).to_owned())).collect());
        match self.rng.random_range(0..100) {
            0..45 => None,
            45..60 => some(&["T0", "T1"]),
            60..68 => some(&["Opened", "Deposited", "Withdrawn"]),
            68..74 => some(&["T2", "T2", "Bulk", "Big"]),
            74..78 => some(&["FzNeverAppended"]),
            78..82 => Some(Vec::new()),
            82..85 => some(&["T0", ""]),
            85..88 => Some(vec![Some("T1".to_owned()), None]),
            88..92 => Some((0..1000).map(|i| Some(format!("T{i}"))).collect()),
            92..95 => Some(vec![Some("T".repeat(100_000))]),
            _ => some(&["Ünïcödé ✓"]),
        }
    }

    /// A handler `f(es.events)`: one of [`VALID_HANDLERS`], or with [`FUZZ_ESCAPING_HANDLER`]
    /// sometimes the one whose error escapes `es.run_handler`.
    pub(crate) fn pick_valid_handler(&mut self) -> &'static str {
        if FUZZ_ESCAPING_HANDLER && self.chance(0.5) {
            "public.fz_escape(es.events)"
        } else {
            self.pick(VALID_HANDLERS)
        }
    }

    /// An error text for nack: any of [`Fuzz::pick_text`]'s, with a NUL byte (not valid in
    /// text, refused by the server before the call) replaced by a control character.
    pub(crate) fn pick_error_text(&mut self) -> Option<String> {
        self.pick_text().map(|t| t.replace('\0', "\u{1}"))
    }

    // ---- calls -------------------------------------------------------------------------------

    /// A random call of the subscription and projection surface.
    pub(crate) fn gen_flow(&mut self) -> (Call, After) {
        match self.rng.random_range(0..100) {
            0..3 => self.gen_stream_hash(),
            3..11 => self.gen_create_subscription(),
            11..14 => {
                let name = self.pick_flow_name(true);
                (
                    Call::new("drop_subscription", "SELECT es.drop_subscription($1)")
                        .arg(name)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            14..28 => self.gen_poll(),
            28..36 => self.gen_ack(),
            36..44 => self.gen_nack(),
            44..50 => self.gen_claim(),
            50..53 => {
                let name = self.pick_sub_name();
                let consumer = self.pick_consumer();
                (
                    Call::new("release", "SELECT es.release($1, $2)")
                        .arg(name)
                        .arg(consumer)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            53..56 => {
                let name = self.pick_flow_name(true);
                (
                    Call::new("replay_parked", "SELECT es.replay_parked($1)")
                        .arg(name)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            56..61 => self.gen_wait(),
            61..67 => self.gen_create_projection(),
            67..75 => {
                let f = self.pick(&[
                    "pause_projection",
                    "resume_projection",
                    "resume_projection",
                    "reset_projection",
                    "drop_projection",
                ]);
                let name = self.pick_projection_name();
                (
                    Call::new(f, format!("SELECT es.{f}($1)"))
                        .arg(name)
                        .flow(&[]),
                    After::Nothing,
                )
            }
            75..79 => {
                let name = self.pick_projection_name();
                let position = self.pick_bigint(self.last_position);
                let timeout = self.pick_timeout();
                (
                    Call::new(
                        "wait_for_projection",
                        "SELECT es.wait_for_projection($1, $2, $3)",
                    )
                    .arg(name)
                    .arg(position)
                    .arg(timeout)
                    .flow(&[]),
                    After::Nothing,
                )
            }
            79..80 => (
                Call::new(
                    "enable_account_projections",
                    "SELECT es.enable_account_projections()",
                )
                .flow(&[]),
                After::Nothing,
            ),
            80..88 => self.gen_flow_view(),
            88..93 => self.gen_wrong_types(),
            93..95 => {
                let sql = if self.chance(0.5) {
                    "DROP FUNCTION IF EXISTS public.fz_dropme(es.events)"
                } else {
                    "CREATE OR REPLACE FUNCTION public.fz_dropme(e es.events) RETURNS void \
                     LANGUAGE plpgsql AS $$ BEGIN NULL; END $$"
                };
                (
                    Call::simple("drop or create a handler", sql).flow(&[]),
                    After::Nothing,
                )
            }
            _ => self.gen_poll(),
        }
    }

    pub(crate) fn gen_stream_hash(&mut self) -> (Call, After) {
        if self.chance(0.8) {
            let stream = self.pick_stream();
            return (
                Call::new("stream_hash", "SELECT es.stream_hash($1)")
                    .arg(stream)
                    .flow(&[]),
                After::Hashed(stream),
            );
        }
        let n = self.pick(&[1, 2, 7, 1024, 0, -1]);
        (
            Call::new(
                "stream_hash(of the log)",
                "SELECT es.stream_hash(stream_id) % nullif($1::int, 0), count(*) \
                 FROM es.events GROUP BY 1 ORDER BY 1 LIMIT 50",
            )
            .arg(n)
            .flow(&[]),
            After::Nothing,
        )
    }

    pub(crate) fn gen_create_subscription(&mut self) -> (Call, After) {
        let account_ok = self.chance(0.2);
        let name = self.pick_flow_name(account_ok);
        if self.chance(0.45) {
            // All arguments valid (the name may still be taken: 42710).
            let name = Some(self.pick(FLOW_NAMES).to_owned());
            let start_after = self.pick(&[Some(0), Some(0), None, Some(self.last_position / 2)]);
            let types = self.pick(&[
                None,
                None,
                Some(["T0", "T1"]),
                Some(["Opened", "Deposited"]),
            ]);
            let types = types.map(|t| t.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>());
            let stream_type = self.pick(&[None, None, None, Some("account")]);
            let partitions = self.pick(&[1, 1, 2, 3, 4, 8]);
            let max_attempts = self.pick(&[1, 2, 3, 5]);
            return (
                Call::new(
                    "create_subscription",
                    "SELECT es.create_subscription($1, $2, $3, $4, $5, $6)",
                )
                .arg(name.clone())
                .arg(start_after)
                .arg(types)
                .arg(stream_type.map(str::to_owned))
                .arg(Some(partitions))
                .arg(Some(max_attempts))
                .flow(&[]),
                After::Subscribed {
                    name,
                    partitions: Some(partitions),
                },
            );
        }
        let start_after = match self.rng.random_range(0..100) {
            0..25 => None,
            25..60 => Some(0),
            60..70 => Some(self.last_position),
            70..75 => Some(self.last_position + 1),
            75..80 => Some(self.last_position + 1_000_000),
            80..85 => Some(self.rng.random_range(0..=self.last_position.max(0))),
            _ => Some(self.pick(EXTREMES)),
        };
        let partitions = match self.rng.random_range(0..100) {
            0..40 => Some(1),
            40..70 => Some(self.pick(&[2, 3, 4, 8])),
            70..72 => Some(1024),
            72..90 => Some(self.pick(&[0, -1, 1025, i32::MAX, i32::MIN])),
            _ => None,
        };
        let max_attempts = match self.rng.random_range(0..100) {
            0..70 => Some(self.pick(&[1, 2, 3, 5])),
            70..75 => Some(i32::MAX),
            75..90 => Some(self.pick(&[0, -1, i32::MIN])),
            _ => None,
        };
        let after = After::Subscribed {
            name: name.clone(),
            partitions,
        };
        let call = match self.rng.random_range(0..10) {
            0..6 => {
                let types = self.pick_event_types();
                let stream_type = self.pick(&[
                    None,
                    None,
                    None,
                    Some("account"),
                    Some(""),
                    Some("fz-never"),
                    Some("Ünï ✓"),
                ]);
                Call::new(
                    "create_subscription",
                    "SELECT es.create_subscription($1, $2, $3, $4, $5, $6)",
                )
                .arg(name)
                .arg(start_after)
                .arg(types)
                .arg(stream_type.map(str::to_owned))
                .arg(partitions)
                .arg(max_attempts)
            }
            6 => {
                return (
                    Call::new(
                        "create_subscription(defaults)",
                        "SELECT es.create_subscription($1)",
                    )
                    .arg(name.clone())
                    .flow(&[]),
                    After::Subscribed {
                        name,
                        partitions: Some(1),
                    },
                );
            }
            7 | 8 => Call::new(
                "create_subscription(named)",
                "SELECT es.create_subscription($1, partitions => $2, start_after => $3, \
                 max_attempts => $4)",
            )
            .arg(name)
            .arg(partitions)
            .arg(start_after)
            .arg(max_attempts),
            _ => {
                let array = self.pick(&[
                    "'{{T0,T1},{T2,T3}}'::text[]",
                    "'[3:4]={T0,T1}'::text[]",
                    "'[-5:-5]={T2}'::text[]",
                    "array_fill('T1'::text, ARRAY[2, 2, 2])",
                    "ARRAY[]::text[]",
                    "'{NULL}'::text[]",
                ]);
                Call::new(
                    "create_subscription(odd arrays)",
                    format!("SELECT es.create_subscription($1, 0, {array}, NULL, $2)"),
                )
                .arg(name)
                .arg(partitions)
            }
        };
        (call.flow(&[]), after)
    }

    pub(crate) fn gen_poll(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let partition = self.pick_partition(&name);
        let max = self.pick_max_count();
        let consumer = self.pick_consumer();
        let polled = |checked| {
            After::Polled(Polled {
                name: name.clone(),
                partition,
                max,
                checked,
            })
        };
        let (call, after) = match self.rng.random_range(0..10) {
            0..4 => (
                Call::new(
                    "poll(checked)",
                    "SELECT p.global_position, \
                       es.stream_hash(p.stream_id) % c.partitions = $2 \
                       AND (c.event_types IS NULL OR p.event_type = ANY (c.event_types)) \
                       AND (c.stream_type IS NULL OR EXISTS (SELECT 1 FROM es.streams s \
                            WHERE s.stream_id = p.stream_id AND s.stream_type = c.stream_type)) \
                     FROM es.poll($1, $2, $3, $4) WITH ORDINALITY AS p \
                     LEFT JOIN es.subscription_config c ON c.name = $1 \
                     ORDER BY p.ordinality",
                )
                .arg(name.clone())
                .arg(partition)
                .arg(max)
                .arg(consumer),
                polled(true),
            ),
            4 | 5 => (
                Call::new("poll(rows)", "SELECT * FROM es.poll($1, $2, $3, $4)")
                    .arg(name.clone())
                    .arg(partition)
                    .arg(max)
                    .arg(consumer),
                polled(false),
            ),
            6 => (
                Call::new("poll(defaults)", "SELECT (es.poll($1, $2)).global_position")
                    .arg(name.clone())
                    .arg(partition),
                After::Polled(Polled {
                    name: name.clone(),
                    partition,
                    max: Some(100),
                    checked: false,
                }),
            ),
            7 => (
                Call::new(
                    "poll(limit 1)",
                    "SELECT global_position FROM es.poll($1, $2, $3, $4) LIMIT 1",
                )
                .arg(name.clone())
                .arg(partition)
                .arg(max)
                .arg(consumer),
                After::Nothing,
            ),
            8 => (
                Call::new(
                    "poll(named)",
                    "SELECT count(*) FROM es.poll(name => $1, consumer => $2, max_count => $3)",
                )
                .arg(name.clone())
                .arg(consumer)
                .arg(max),
                After::Nothing,
            ),
            _ => (
                Call::new(
                    "poll(lateral over partitions)",
                    "SELECT g, p.global_position FROM unnest(ARRAY[0, 1, $2::int]) g, \
                     LATERAL es.poll($1, g, 3, $3) p",
                )
                .arg(name.clone())
                .arg(partition)
                .arg(consumer),
                After::Nothing,
            ),
        };
        (call.flow(&[]), after)
    }

    pub(crate) fn gen_ack(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let partition = self.pick_partition(&name);
        let position = self.pick_flow_position(&name, partition);
        let consumer = self.pick_consumer();
        let call = match self.rng.random_range(0..10) {
            0..6 => Call::new("ack", "SELECT es.ack($1, $2, $3, $4)")
                .arg(name)
                .arg(partition)
                .arg(position)
                .arg(consumer),
            6..9 => Call::new("ack", "SELECT es.ack($1, $2, $3)")
                .arg(name)
                .arg(partition)
                .arg(position),
            _ => Call::new(
                "ack(named)",
                "SELECT es.ack(name => $1, partition => $2, \"position\" => $3)",
            )
            .arg(name)
            .arg(partition)
            .arg(position),
        };
        (call.flow(&[]), After::Acked(position))
    }

    pub(crate) fn gen_nack(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let partition = self.pick_partition(&name);
        let position = self.pick_flow_position(&name, partition);
        let error = self.pick_error_text();
        let call = if self.chance(0.6) {
            let consumer = self.pick_consumer();
            Call::new("nack", "SELECT es.nack($1, $2, $3, $4, $5)")
                .arg(name)
                .arg(partition)
                .arg(position)
                .arg(error)
                .arg(consumer)
        } else {
            Call::new("nack", "SELECT es.nack($1, $2, $3, $4)")
                .arg(name)
                .arg(partition)
                .arg(position)
                .arg(error)
        };
        (call.flow(&[]), After::Nothing)
    }

    pub(crate) fn gen_claim(&mut self) -> (Call, After) {
        let name = self.pick_sub_name();
        let consumer = self.pick_consumer();
        let call = if self.chance(0.8) {
            let lease = self.pick_lease();
            Call::new(
                "claim",
                "SELECT partition, lease_until FROM es.claim($1, $2, $3::text::interval)",
            )
            .arg(name)
            .arg(consumer)
            .arg(lease)
        } else {
            Call::new("claim(default lease)", "SELECT * FROM es.claim($1, $2)")
                .arg(name)
                .arg(consumer)
        };
        (call.flow(RANGE_CODES), After::Nothing)
    }

    pub(crate) fn gen_wait(&mut self) -> (Call, After) {
        let name = if self.chance(0.2) {
            Some(PROBE_NEVER.to_owned())
        } else {
            self.pick_sub_name()
        };
        let partition = self.pick_partition(&name);
        let timeout = self.pick_timeout();
        (
            Call::new("wait", "SELECT es.wait($1, $2, $3)")
                .arg(name)
                .arg(partition)
                .arg(timeout)
                .flow(&[]),
            After::Nothing,
        )
    }

    pub(crate) fn gen_create_projection(&mut self) -> (Call, After) {
        let account_ok = self.chance(0.1);
        let name = self.pick_flow_name(account_ok);
        if self.chance(0.4) {
            // All arguments valid (the name may still be taken: 42710).
            let name = Some(self.pick(FLOW_NAMES).to_owned());
            let handler = self.pick_valid_handler();
            let types = self.pick(&[
                None,
                None,
                Some(["T0", "T1"]),
                Some(["Opened", "Deposited"]),
            ]);
            let types = types.map(|t| t.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>());
            let batch = self.pick(&[1, 10, 100, 100, 1000]);
            return (
                Call::new(
                    "create_projection",
                    "SELECT es.create_projection($1, $2::text::regprocedure, $3, $4)",
                )
                .arg(name.clone())
                .arg(handler.to_owned())
                .arg(types)
                .arg(Some(batch))
                .flow(&["42883"]),
                After::Projected(name),
            );
        }
        let after = After::Projected(name.clone());
        let types = self.pick_event_types();
        let batch = self.pick(&[
            Some(1),
            Some(10),
            Some(100),
            Some(100),
            Some(500),
            Some(i32::MAX),
            Some(0),
            Some(-1),
            None,
        ]);
        let call = match self.rng.random_range(0..10) {
            0..6 => {
                let handler = if self.chance(0.75) {
                    self.pick_valid_handler()
                } else {
                    self.pick(INVALID_HANDLERS)
                };
                Call::new(
                    "create_projection",
                    "SELECT es.create_projection($1, $2::text::regprocedure, $3, $4)",
                )
                .arg(name)
                .arg(handler.to_owned())
                .arg(types)
                .arg(batch)
            }
            6 | 7 => {
                let handler = if self.chance(0.75) {
                    self.pick_valid_handler()
                } else {
                    self.pick(INVALID_HANDLERS)
                };
                Call::new(
                    "create_projection(defaults)",
                    "SELECT es.create_projection($1, $2::text::regprocedure)",
                )
                .arg(name)
                .arg(handler.to_owned())
            }
            8 => {
                let oid = self.pick(&[Some(0u32), Some(1), Some(99_999_999), Some(u32::MAX), None]);
                Call::new(
                    "create_projection(oid)",
                    "SELECT es.create_projection($1, $2::oid::regprocedure, $3)",
                )
                .arg(name)
                .arg(oid)
                .arg(types)
            }
            _ => Call::new(
                "create_projection(NULL handler)",
                "SELECT es.create_projection($1, NULL, $2, $3)",
            )
            .arg(name)
            .arg(types)
            .arg(batch),
        };
        // 42883: a handler that does not exist fails in the cast to regprocedure.
        (call.flow(&["42883"]), after)
    }

    pub(crate) fn gen_flow_view(&mut self) -> (Call, After) {
        let name = self.pick_flow_name(true);
        let call = match self.rng.random_range(0..6) {
            0 => Call::new(
                "es.subscriptions",
                "SELECT * FROM es.subscriptions ORDER BY name, partition LIMIT 40",
            ),
            1 => Call::new(
                "es.subscriptions(one)",
                "SELECT name, partition, checkpoint, events_behind, seconds_behind, owner, \
                 lease_until, head_attempts, parked FROM es.subscriptions WHERE name = $1",
            )
            .arg(name),
            2 => Call::new("es.projections", "SELECT * FROM es.projections"),
            3 => Call::new(
                "es.projections(one)",
                "SELECT name, state, checkpoint, events_behind, seconds_behind, last_error \
                 FROM es.projections WHERE name = $1",
            )
            .arg(name),
            4 => Call::new(
                "es.parked_events",
                "SELECT count(*), max(attempts), min(global_position), max(length(error)) \
                 FROM es.parked_events WHERE subscription = $1",
            )
            .arg(name),
            _ => Call::new(
                "es.subscriptions join es.projections",
                "SELECT s.name, s.partition, s.checkpoint, p.state, p.last_error \
                 FROM es.subscriptions s LEFT JOIN es.projections p USING (name) \
                 WHERE s.partition < 2 ORDER BY 1, 2 LIMIT 40",
            ),
        };
        (call.flow(&[]), After::Nothing)
    }

    /// Literal calls with wrong argument types and out-of-range literals.
    pub(crate) fn gen_wrong_types(&mut self) -> (Call, After) {
        let sql = self.pick(&[
            "SELECT es.poll('fz_sub_a', 'x')",
            "SELECT es.poll(1, 2)",
            "SELECT es.poll(ARRAY['fz_sub_a'])",
            "SELECT es.poll('fz_sub_a', 0, '99999999999')",
            "SELECT es.ack('fz_sub_a', 0, 1.5)",
            "SELECT es.ack('fz_sub_a', 0, '1e3')",
            "SELECT es.ack('fz_sub_a', 0, '9223372036854775808')",
            "SELECT es.nack('fz_sub_a', 0, 1, 42)",
            "SELECT es.wait('fz_sub_a', 0, 2147483648)",
            "SELECT es.wait('fz_sub_a', '2147483648', 0)",
            "SELECT es.claim('fz_sub_a', 'c1', 5)",
            "SELECT es.claim('fz_sub_a', 'c1', '1 day'::text)",
            "SELECT es.claim('fz_sub_a', 'c1', '2147483648 days')",
            "SELECT es.claim('fz_sub_a', 'c1', 'not an interval')",
            "SELECT es.stream_hash('x')",
            "SELECT es.stream_hash(5)",
            "SELECT es.stream_hash('00000000-0000-0000-0000-000000000000'::text)",
            "SELECT es.create_subscription('fz_sub_a', 99999999999999999999)",
            "SELECT es.create_subscription('fz_sub_a', partitions => 2147483648)",
            "SELECT es.create_subscription('fz_sub_a', 0, '{\"a\"')",
            "SELECT es.create_subscription('fz_sub_a', 0, 'T0')",
            "SELECT es.create_subscription(NULL::int)",
            "SELECT es.create_projection('fz_proj_a', 'fz_ok')",
            "SELECT es.create_projection('fz_proj_a', 'public.fz_ok'::regproc)",
            "SELECT es.create_projection('fz_proj_a', 5)",
            "SELECT es.create_projection('fz_proj_a', 'public.fz_ok(es.events)', batch => 2147483648)",
            "SELECT es.wait_for_projection('fz_proj_a', '9223372036854775808', 0)",
            "SELECT es.wait_for_projection('fz_proj_a', 1, 1.5)",
            "SELECT es.release('fz_sub_a', 1)",
            "SELECT es.replay_parked(1)",
        ]);
        (
            Call::new("wrong types", sql).flow(TYPE_CODES),
            After::Nothing,
        )
    }

    // ---- scenarios ---------------------------------------------------------------------------

    /// A consumer on TX0, in a transaction (or a savepoint of an open one) that commits, rolls
    /// back, or rolls back to its savepoint: claim, poll partitions, ack or nack (repeatedly,
    /// to park) what came back, release.
    pub(crate) fn scenario_consume(&mut self) {
        let nested = self.conns[TX0].in_tx;
        if !nested {
            self.begin(TX0);
        }
        let savepoint = nested || self.chance(0.3);
        if savepoint {
            self.meta(TX0, "SAVEPOINT fz_flow");
        }
        let name = if self.chance(0.25) {
            Some(self.pick(&FLOW_NAMES[..5]).to_owned())
        } else {
            self.pick_sub_name()
        };
        let consumer = if self.chance(0.8) {
            Some(self.pick(CONSUMERS).to_owned())
        } else {
            self.pick_consumer()
        };
        // Partitions this consumer holds for 30 s (claimed right now).
        let mut held: Vec<i32> = Vec::new();
        if self.chance(0.6) {
            let lease = self.pick(&["1 s", "5 s", "30 s", "100 ms"]);
            let call = Call::new(
                "claim(consumer)",
                "SELECT partition, lease_until FROM es.claim($1, $2, $3::text::interval)",
            )
            .arg(name.clone())
            .arg(consumer.clone())
            .arg(lease.to_owned())
            .flow(RANGE_CODES);
            if let Ok(rows) = self.exec(TX0, &call)
                && lease == "30 s"
            {
                held = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
            }
        }
        // Fencing: while the lease runs, another consumer (or none) may not poll, ack or nack.
        if let Some(&partition) = held.first()
            && self.chance(0.5)
        {
            let rival = self.pick(&[None, Some("c1"), Some("c2"), Some("rival ✓")]);
            if rival != consumer.as_deref() {
                let f = self.pick(&["poll", "ack", "nack"]);
                let sql = match f {
                    "poll" => "SELECT count(*) FROM es.poll($1, $2, 1, $3)",
                    "ack" => "SELECT es.ack($1, $2, 0, $3)",
                    _ => "SELECT es.nack($1, $2, 1, 'rival', $3)",
                };
                let call = Call::new(&format!("{f}(rival consumer)"), sql)
                    .arg(name.clone())
                    .arg(partition)
                    .arg(rival.map(str::to_owned))
                    .flow(&[]);
                let text = call.text();
                match self.run_code(TX0, (call, After::Nothing)) {
                    Err(code) if code == "ES201" => {}
                    // (position 1 may not be the head: which error comes first is open)
                    Err(code) if code == "22023" && f == "nack" => {}
                    outcome => self.fail(
                        TX0,
                        &format!(
                            "{consumer:?} holds partition {partition} of {name:?} (claimed with a \
                             lease of 30 s just now), yet {text} did not fail with ES201 \
                             but with {outcome:?}"
                        ),
                    ),
                }
            }
        }
        let n = name
            .as_ref()
            .and_then(|n| self.partitions.get(n).copied())
            .unwrap_or(1)
            .clamp(1, 4);
        for partition in 0..n {
            let max: i64 = self.pick(&[1, 3, 10, 100]);
            let call = Call::new(
                "poll(consumer)",
                "SELECT global_position FROM es.poll($1, $2, $3, $4)",
            )
            .arg(name.clone())
            .arg(partition)
            .arg(max)
            .arg(consumer.clone())
            .flow(&[]);
            let polled = After::Polled(Polled {
                name: name.clone(),
                partition: Some(partition),
                max: Some(max),
                checked: false,
            });
            match self.run_code(TX0, (call, polled)) {
                Ok(()) => {}
                Err(code) if code == "ES201" && held.contains(&partition) => self.fail(
                    TX0,
                    &format!(
                        "es.poll of partition {partition} of {name:?} by {consumer:?}, which \
                         claimed it just now, failed with ES201 (the last call above)"
                    ),
                ),
                Err(_) => continue,
            }
            let key = (name.clone().unwrap_or_default(), partition);
            let Some(&(first, last)) = self.heads.get(&key) else {
                continue;
            };
            // Nothing else moves a plain subscription's partition between this poll and the
            // ack or nack below (one thread; the worker only runs projections): acking what
            // the poll returned and nacking its head must succeed.
            let strict = !self.is_projection(TX0, &key.0);
            match self.rng.random_range(0..10) {
                0..4 => {
                    let call = Call::new("ack(consumer)", "SELECT es.ack($1, $2, $3, $4)")
                        .arg(name.clone())
                        .arg(partition)
                        .arg(Some(last))
                        .arg(consumer.clone())
                        .flow(&[]);
                    if !self.run(TX0, (call, After::Acked(Some(last)))) && strict {
                        self.fail(
                            TX0,
                            &format!(
                                "es.ack of position {last}, the last event es.poll just returned \
                                 for partition {partition} of subscription {key:?}, failed (the \
                                 last call above)"
                            ),
                        );
                    }
                }
                4..8 => {
                    for attempt in 0..self.rng.random_range(1..=6) {
                        let call =
                            Call::new("nack(consumer)", "SELECT es.nack($1, $2, $3, $4, $5)")
                                .arg(name.clone())
                                .arg(partition)
                                .arg(Some(first))
                                .arg(Some("fz consumer failed".to_owned()))
                                .arg(consumer.clone())
                                .flow(&[]);
                        let call = (call, After::Nothing);
                        if !self.run(TX0, call) {
                            if attempt == 0 && strict {
                                self.fail(
                                    TX0,
                                    &format!(
                                        "es.nack of position {first}, the head es.poll just \
                                         returned for partition {partition} of subscription \
                                         {key:?}, failed (the last call above)"
                                    ),
                                );
                            }
                            break;
                        }
                    }
                }
                8 => {
                    let call = Call::new("ack(consumer)", "SELECT es.ack($1, $2, $3, $4)")
                        .arg(name.clone())
                        .arg(partition)
                        .arg(Some(first))
                        .arg(consumer.clone())
                        .flow(&[]);
                    self.run(TX0, (call, After::Acked(Some(first))));
                }
                _ => {
                    let call = Call::new("replay_parked", "SELECT es.replay_parked($1)")
                        .arg(name.clone())
                        .flow(&[]);
                    self.run(TX0, (call, After::Nothing));
                }
            }
        }
        if self.chance(0.4) {
            let call = Call::new("release(consumer)", "SELECT es.release($1, $2)")
                .arg(name)
                .arg(consumer)
                .flow(&[]);
            self.run(TX0, (call, After::Nothing));
        }
        if savepoint && self.chance(0.5) {
            self.meta(
                TX0,
                "ROLLBACK TO SAVEPOINT fz_flow; RELEASE SAVEPOINT fz_flow",
            );
            self.stats.savepoint_rollbacks += 1;
        } else if savepoint {
            self.meta(TX0, "RELEASE SAVEPOINT fz_flow");
        }
        if !nested {
            self.end_tx(TX0);
        }
    }

    /// `es.wait(name, p, 0)` then `es.poll(name, p, 1)` of a plain subscription, with nothing
    /// in between that could change the partition: true must mean the poll returns an event,
    /// false that it returns none.
    pub(crate) fn scenario_wait_then_poll(&mut self) {
        if self.partitions.is_empty() {
            return;
        }
        let c = if self.chance(0.5) { TX0 } else { AUTO };
        let i = self.rng.random_range(0..self.partitions.len());
        let Some((name, &n)) = self.partitions.iter().nth(i) else {
            return;
        };
        let name = name.clone();
        let partition = self.rng.random_range(0..n.max(1));
        if self.is_projection(c, &name) {
            return;
        }
        let wait = Call::new("wait(then poll)", "SELECT es.wait($1, $2, 0)")
            .arg(Some(name.clone()))
            .arg(Some(partition))
            .flow(&[]);
        let Ok(rows) = self.exec(c, &wait) else {
            return;
        };
        let Some(ready) = rows.first().and_then(|r| r.try_get::<_, bool>(0).ok()) else {
            return;
        };
        let poll = Call::new(
            "poll(after wait)",
            "SELECT global_position FROM es.poll($1, $2, 1)",
        )
        .arg(Some(name.clone()))
        .arg(Some(partition))
        .flow(&[]);
        let text = poll.text();
        if let Ok(rows) = self.exec(c, &poll)
            && ready == rows.is_empty()
        {
            self.fail(
                c,
                &format!(
                    "es.wait({name:?}, {partition}, 0) returned {ready}, then {text} returned {} \
                     rows",
                    rows.len()
                ),
            );
        }
    }

    /// Whether `name` is a projection, as connection `c` sees it.
    pub(crate) fn is_projection(&mut self, c: usize, name: &str) -> bool {
        let result = self.conns[c].client.query_one(
            "SELECT EXISTS (SELECT 1 FROM es.projection_config WHERE name = $1)",
            &[&name],
        );
        match result {
            Ok(row) => row.get(0),
            Err(err) => self.fail(
                c,
                &format!("reading es.projection_config: {}", describe(&err)),
            ),
        }
    }

    /// `es.wait` and `es.wait_for_projection` cancelled by a `statement_timeout` (57014): the
    /// sleeping call must answer the cancel, and the session (or transaction) go on.
    pub(crate) fn scenario_wait_timeout(&mut self) {
        let c = if self.chance(0.6) { TX0 } else { AUTO };
        let wait = if self.chance(0.6) {
            format!("SELECT es.wait('{PROBE_NEVER}', 0, 3000)")
        } else {
            let name = self.pick(&["fz_proj_a", "fz_proj_b", "account_balances", "x"]);
            format!("SELECT es.wait_for_projection('{name}', 9223372036854775807, 3000)")
        };
        let sql = format!("SET statement_timeout = '30ms'; {wait}; SET statement_timeout = '60s'");
        self.run(
            c,
            (
                Call::simple("wait under statement_timeout", sql).flow(&["57014"]),
                After::Nothing,
            ),
        );
    }
}
