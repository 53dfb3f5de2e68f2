//! Reads and snapshots (docs/reference.md §4–§6): `es.load_events`, `es.stream_version`,
//! `es.read_all`, `es.save_snapshot`/`es.load_snapshot` with states valid and not, and the account
//! aggregate `es.account_replay` as aggregate and as window function.

use super::*;

impl Fuzz {
    /// An account state JSON for a snapshot or `account_replay`'s initial state: valid, with
    /// wrong keys, not an object, empty, or NULL.
    pub(crate) fn gen_state(&mut self, version: i64) -> Option<String> {
        let valid = |fz: &mut Fuzz| {
            let status = fz.pick(&["Active", "Active", "Frozen", "Closed"]);
            let balance = if fz.chance(0.9) {
                fz.rng.random_range(0..100_000)
            } else {
                i64::MAX
            };
            Obj(vec![
                ("holder_name".to_owned(), quote("fz")),
                ("balance_cents".to_owned(), balance.to_string()),
                ("status".to_owned(), quote(status)),
                ("version".to_owned(), version.to_string()),
            ])
        };
        match self.rng.random_range(0..100) {
            0..40 => Some(valid(self).render()),
            40..65 => {
                let mut o = valid(self);
                self.mutate(&mut o, STATE_KEYS);
                Some(o.render())
            }
            65..80 => Some(self.pick(WRONG).to_owned()),
            80..90 => Some(self.pick(&["{}", "{\"a\":1}", "[]"]).to_owned()),
            90..95 => None,
            _ => {
                let mut o = valid(self);
                o.set("extra", "[1,2,3]".to_owned());
                Some(o.render())
            }
        }
    }

    pub(crate) fn gen_load_events(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        let from = self.pick_bigint(known / 2);
        let small = self.rng.random_range(0..10);
        let max = self.pick_bigint(small);
        let (label, sql) = match self.rng.random_range(0..7) {
            0 => (
                "load_events(count)",
                "SELECT count(*), min(version), max(version) FROM es.load_events($1, $2, $3)",
            ),
            1 => (
                "load_events(limit)",
                "SELECT * FROM es.load_events($1, $2, $3) LIMIT 5",
            ),
            2 => (
                "load_events(detoast)",
                "SELECT version, event_type, length(data::text), metadata, occurred_at \
                 FROM es.load_events($1, $2, $3) e",
            ),
            3 => (
                "load_events(in target list)",
                "SELECT (es.load_events($1, $2, $3)).version",
            ),
            4 => (
                "load_events(lateral)",
                "SELECT count(*) FROM (VALUES ($1::uuid), ($1::uuid)) s(id), \
                 LATERAL es.load_events(s.id, $2, $3)",
            ),
            5 => {
                let call = Call::new(
                    "load_events(defaults)",
                    "SELECT count(*) FROM es.load_events($1)",
                )
                .arg(stream);
                return (call, After::Nothing);
            }
            _ => {
                let call = Call::new(
                    "load_events(named)",
                    "SELECT count(*) FROM es.load_events(stream_id => $1, max_count => $2)",
                )
                .arg(stream)
                .arg(max);
                return (call, After::Nothing);
            }
        };
        let call = Call::new(label, sql).arg(stream).arg(from).arg(max);
        (call, After::Nothing)
    }

    pub(crate) fn gen_stream_version(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let call = Call::new("stream_version", "SELECT es.stream_version($1)").arg(stream);
        (call, After::Version(stream))
    }

    pub(crate) fn gen_read_all(&mut self) -> (Call, After) {
        let after = self.pick_bigint(self.last_position / 2);
        // A bigint, like load_events' (issue 12): the ints at the edges and the bigint ones.
        let max = if self.rng.random_bool(0.7) {
            self.pick_int().map(i64::from)
        } else {
            self.pick_bigint(1000)
        };
        match self.rng.random_range(0..5) {
            0 => (
                Call::new(
                    "read_all(count)",
                    "SELECT count(*), min(global_position), max(global_position) \
                     FROM es.read_all($1, $2)",
                )
                .arg(after)
                .arg(max),
                After::Position,
            ),
            1 => (
                Call::new(
                    "read_all(limit)",
                    "SELECT global_position, stream_id, version FROM es.read_all($1, $2) LIMIT 3",
                )
                .arg(after)
                .arg(max),
                After::Nothing,
            ),
            2 => (
                Call::new("read_all(defaults)", "SELECT count(*) FROM es.read_all()"),
                After::Nothing,
            ),
            3 => (
                Call::new(
                    "read_all(after only)",
                    "SELECT count(*) FROM es.read_all($1)",
                )
                .arg(after),
                After::Nothing,
            ),
            _ => (
                Call::new(
                    "read_all(in target list)",
                    "SELECT (es.read_all($1, $2)).global_position LIMIT 10",
                )
                .arg(after)
                .arg(max),
                After::Nothing,
            ),
        }
    }

    pub(crate) fn gen_save_snapshot(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        let version = self.pick_bigint(known);
        let call = match self.rng.random_range(0..10) {
            0..7 => {
                let state = self.gen_state(version.unwrap_or(0));
                Call::new(
                    "save_snapshot",
                    "SELECT es.save_snapshot($1, $2, $3::text::jsonb)",
                )
                .arg(stream)
                .arg(version)
                .arg(state)
            }
            7 => Call::new(
                "save_snapshot(replayed)",
                "SELECT es.save_snapshot($1::uuid, $2::bigint, \
                 (SELECT es.account_replay(data ORDER BY version) FROM es.events \
                  WHERE stream_id = $1::uuid AND version <= $2::bigint))",
            )
            .arg(stream)
            .arg(version),
            8 => {
                let n = self.pick(&[100_000, 3_000_000]);
                Call::new(
                    "save_snapshot(huge)",
                    "SELECT es.save_snapshot($1::uuid, $2::bigint, jsonb_build_object(\
                     'holder_name', repeat('h', $3::int), 'balance_cents', 0, \
                     'status', 'Active', 'version', $2::bigint))",
                )
                .arg(stream)
                .arg(version)
                .arg(n)
            }
            _ => {
                let n = self.pick(&[1000, 5000, 200_000]);
                Call::new(
                    "save_snapshot(deep)",
                    "SELECT es.save_snapshot($1, $2, \
                     (repeat('[', $3::int) || repeat(']', $3::int))::jsonb)",
                )
                .arg(stream)
                .arg(version)
                .arg(n)
            }
        };
        (call, After::Nothing)
    }

    pub(crate) fn gen_load_snapshot(&mut self) -> (Call, After) {
        let stream = self.pick_stream();
        let known = self.known(stream);
        let at = self.pick_bigint(known);
        let call = match self.rng.random_range(0..3) {
            0 => Call::new(
                "load_snapshot",
                "SELECT version, length(state::text), taken_at FROM es.load_snapshot($1, $2)",
            )
            .arg(stream)
            .arg(at),
            1 => Call::new(
                "load_snapshot(newest)",
                "SELECT * FROM es.load_snapshot($1)",
            )
            .arg(stream),
            _ => Call::new(
                "load_snapshot(count)",
                "SELECT count(*) FROM es.load_snapshot($1, $2)",
            )
            .arg(stream)
            .arg(at),
        };
        (call, After::Nothing)
    }

    /// `es.account_replay` in its forms: ordered and unordered aggregate, from an initial
    /// state, window function (running, moving frame, whole partition), grouped, filtered, over
    /// VALUES, over `es.events`, from a snapshot plus tail, and with values built server-side.
    pub(crate) fn gen_replay(&mut self) -> (Call, After) {
        const UNNEST: &str = "unnest($1::text[]::jsonb[]) WITH ORDINALITY AS u(e, n)";
        let n: i64 = self.rng.random_range(0..8);
        let events: Vec<Option<String>> = (0..n)
            .map(|i| self.gen_event(None, i + 1, true, false))
            .collect();
        let with_events = |label: &str, sql: String| Call::new(label, sql).arg(events.clone());
        let call = match self.rng.random_range(0..16) {
            0 => with_events(
                "account_replay(agg)",
                format!("SELECT es.account_replay(e ORDER BY n) FROM {UNNEST}"),
            ),
            1 => with_events(
                "account_replay(agg unordered)",
                format!("SELECT es.account_replay(e) FROM {UNNEST}"),
            ),
            2 => {
                let state = self.gen_state(0);
                with_events(
                    "account_replay(state, agg)",
                    format!(
                        "SELECT es.account_replay($2::text::jsonb, e ORDER BY n) FROM {UNNEST}"
                    ),
                )
                .arg(state)
            }
            3 => with_events(
                "account_replay(window)",
                format!("SELECT n, es.account_replay(e) OVER (ORDER BY n) FROM {UNNEST}"),
            ),
            4 => with_events(
                "account_replay(moving window)",
                format!(
                    "SELECT n, es.account_replay(e) OVER (ORDER BY n ROWS BETWEEN 1 PRECEDING \
                     AND CURRENT ROW) FROM {UNNEST}"
                ),
            ),
            5 => with_events(
                "account_replay(window whole)",
                format!("SELECT n, es.account_replay(e) OVER () FROM {UNNEST}"),
            ),
            6 => with_events(
                "account_replay(grouped)",
                format!("SELECT n % 2, es.account_replay(e ORDER BY n) FROM {UNNEST} GROUP BY 1"),
            ),
            7 => {
                let state = self.gen_state(0);
                with_events(
                    "account_replay(state, window)",
                    format!(
                        "SELECT n, es.account_replay($2::text::jsonb, e) OVER (ORDER BY n) \
                         FROM {UNNEST}"
                    ),
                )
                .arg(state)
            }
            8 => with_events(
                "account_replay(filter)",
                format!(
                    "SELECT es.account_replay(e ORDER BY n) FILTER (WHERE n <> 2) FROM {UNNEST}"
                ),
            ),
            9 | 10 => {
                let mut three: Vec<Option<String>> = (1..=3)
                    .map(|v| self.gen_event(None, v, true, false))
                    .collect();
                three.resize(3, None);
                let sql = if self.chance(0.5) {
                    "SELECT es.account_replay(e ORDER BY n) FROM (VALUES (1, $1::text::jsonb), \
                     (2, $2::text::jsonb), (3, $3::text::jsonb)) v(n, e)"
                } else {
                    "SELECT n, es.account_replay(e) OVER (ORDER BY n) FROM (VALUES \
                     (1, $1::text::jsonb), (2, $2::text::jsonb), (3, $3::text::jsonb)) v(n, e)"
                };
                let [a, b, c] = <[Option<String>; 3]>::try_from(three).expect("three events");
                Call::new("account_replay(values)", sql)
                    .arg(a)
                    .arg(b)
                    .arg(c)
            }
            11 => {
                let stream = self.pick_account();
                Call::new(
                    "account_replay(es.events)",
                    "SELECT es.account_replay(data ORDER BY version) FROM es.events \
                     WHERE stream_id = $1",
                )
                .arg(stream)
            }
            12 => {
                let stream = self.pick_account();
                Call::new(
                    "account_replay(es.events window)",
                    "SELECT count(s), max((s->>'balance_cents')::numeric) FROM (SELECT \
                     es.account_replay(data) OVER (ORDER BY version) AS s FROM es.events \
                     WHERE stream_id = $1) w",
                )
                .arg(stream)
            }
            13 => {
                let stream = self.pick_account();
                Call::new(
                    "account_replay(snapshot + tail)",
                    "SELECT es.account_replay(s.state, e.data ORDER BY e.version) \
                     FROM es.load_snapshot($1::uuid) s JOIN es.events e \
                     ON e.stream_id = $1::uuid AND e.version > s.version",
                )
                .arg(stream)
            }
            14 => {
                let opening = self.pick_balance();
                let amount = self.pick_amount();
                let len = self.pick(&[1, 1000, 3_000_000]);
                Call::new(
                    "account_replay(server-built)",
                    "SELECT es.account_replay(e ORDER BY n) FROM (VALUES \
                     (1, jsonb_build_object('type', 'Opened', 'account_holder', 'A', \
                      'initial_balance_cents', $1::bigint)), \
                     (2, jsonb_build_object('type', 'Deposited', 'amount_cents', $2::bigint, \
                      'description', repeat('x', $3::int)))) v(n, e)",
                )
                .arg(opening)
                .arg(amount)
                .arg(len)
            }
            _ => {
                let n = self.pick(&[1000, 5000, 200_000]);
                Call::new(
                    "account_replay(deep)",
                    "SELECT es.account_replay((repeat('[', $1::int) || repeat(']', $1::int))::jsonb)",
                )
                .arg(n)
            }
        };
        (call, After::Nothing)
    }
}
