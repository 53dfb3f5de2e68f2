//! The machinery of `fuzz_whole_sql_surface`: the calls ([`Call`], and what to remember after one,
//! [`After`]), the three connections and their transactions and savepoints, the digest taken
//! around every call, the outcome counts, the random values every subject draws from, and the
//! step that picks what runs next. Each subject's generators live in a module of their own
//! (`append`, `reads`, `accounts`, `lifecycle`, `admin`, `subscriptions`) as further
//! `impl Fuzz` blocks.

use super::*;

/// Fixed stream ids the calls pick from, so that they collide.
pub(crate) const POOL: usize = 20;
/// Pool streams below this index are meant to become accounts (their first event is `Opened`).
pub(crate) const ACCOUNT_POOL: usize = 10;
/// Accounts from `es.open_account` kept to be used again.
pub(crate) const MAX_ACCOUNTS: usize = 12;
/// Above this many events, no more large batches are generated: the per-call digest counts
/// `es.events`, so the store has to stay small for it to stay cheap.
pub(crate) const STORE_CAP: i64 = 30_000;
/// Size of the batch that the rolled-back-batch scenario appends and rolls back.
pub(crate) const BIG_BATCH: i32 = 400;
/// Calls remembered for a failure report.
pub(crate) const HISTORY: usize = 30;
/// Characters of one argument shown in a report.
pub(crate) const SHOW_ARG: usize = 160;

/// The connection that runs transactions and savepoints.
pub(crate) const TX0: usize = 0;
/// The connection that runs every call in autocommit, beside TX0's open transactions.
pub(crate) const AUTO: usize = 1;
/// The connection for VACUUM and ALTER TABLE.
pub(crate) const ADMIN: usize = 2;

/// A digest of everything a call could change, cheap while the store is small: counts, version
/// sums and the newest position, a hash of the stream rows' type and state, and the stored size
/// of snapshot states (not their hash: they may be megabytes, and `pg_column_size` does not
/// detoast).
pub(crate) const DIGEST: &str = "SELECT concat_ws(' ', \
     (SELECT count(*) FROM es.streams), \
     (SELECT coalesce(sum(version), 0) FROM es.streams), \
     (SELECT coalesce(sum(hashtext(coalesce(stream_type, '-') || coalesce(state::text, '-'))), 0) \
        FROM es.streams), \
     (SELECT count(*) FROM es.events), \
     (SELECT coalesce(max(global_position), 0) FROM es.events), \
     (SELECT count(*) FROM es.snapshots), \
     (SELECT coalesce(sum(version), 0) || '/' || coalesce(sum(pg_column_size(state)), 0) \
        FROM es.snapshots))";

/// One SQL call of the fuzz: its statement, bound parameters and a printable copy of them.
pub(crate) struct Call {
    pub(crate) label: String,
    pub(crate) sql: String,
    pub(crate) params: Vec<Box<dyn ToSql + Sync>>,
    pub(crate) shown: Vec<String>,
    /// Sent with the simple protocol, without parameters (VACUUM, ALTER TABLE).
    pub(crate) simple: bool,
    /// A call of the subscription and projection surface (docs/reference.md §9, §10): the SQLSTATEs it may
    /// fail with besides [`FLOW_CODES`], and it is checked against [`FLOW_DIGEST`] too. `None`
    /// for the other calls, which are only checked for internal errors.
    pub(crate) allowed: Option<Vec<&'static str>>,
}

impl Call {
    /// A call with parameters bound by [`Call::arg`].
    pub(crate) fn new(label: &str, sql: impl Into<String>) -> Call {
        Call {
            label: label.to_owned(),
            sql: sql.into(),
            params: Vec::new(),
            shown: Vec::new(),
            simple: false,
            allowed: None,
        }
    }

    /// Marks a call of the subscription and projection surface: it may fail only with
    /// [`FLOW_CODES`] and `extra` (see [`Fuzz::flow_allows`]).
    pub(crate) fn flow(mut self, extra: &[&'static str]) -> Call {
        self.allowed = Some(extra.to_vec());
        self
    }

    /// A statement without parameters, sent with the simple query protocol.
    pub(crate) fn simple(label: &str, sql: impl Into<String>) -> Call {
        Call {
            simple: true,
            ..Call::new(label, sql)
        }
    }

    /// Binds the next parameter (`$n`).
    pub(crate) fn arg<T: ToSql + Sync + Debug + 'static>(mut self, value: T) -> Call {
        self.shown.push(short(&format!("{value:?}"), SHOW_ARG));
        self.params.push(Box::new(value));
        self
    }

    /// The call for a report: label, statement and arguments, each truncated.
    pub(crate) fn text(&self) -> String {
        format!(
            "{}: `{}` with [{}]",
            self.label,
            short(&self.sql, 600),
            self.shown.join(", ")
        )
    }
}

/// What to learn from a call's result.
pub(crate) enum After {
    Nothing,
    /// The first column of the first row is the stream's version.
    Version(Option<Uuid>),
    /// A successful append: learn the version, keep the batch to send it again.
    Appended(Batch),
    /// `es.open_account`'s new id.
    Opened,
    /// The third column of the first row is a global position.
    Position,
    /// `es.poll`: what to check of its rows.
    Polled(Polled),
    /// `es.ack` of this position: the checkpoint it returns is at least the position.
    Acked(Option<i64>),
    /// `es.stream_hash` of this stream: FNV-1a, masked to 31 bits.
    Hashed(Option<Uuid>),
    /// A projection created with this name.
    Projected(Option<String>),
    /// A subscription created with this many partitions (NULL: the default, 1).
    Subscribed {
        name: Option<String>,
        partitions: Option<i32>,
    },
}

/// An `es.poll` call: the first column of each row is a global position; with `checked`, the
/// second says whether the event belongs to the partition and matches the subscription's
/// filters.
pub(crate) struct Polled {
    pub(crate) name: Option<String>,
    pub(crate) partition: Option<i32>,
    pub(crate) max: Option<i64>,
    pub(crate) checked: bool,
}

/// A successful append, kept to be sent again (an idempotent retry, or a duplicate elsewhere).
#[derive(Clone)]
pub(crate) struct Batch {
    pub(crate) stream: Option<Uuid>,
    pub(crate) expected: Option<i64>,
    pub(crate) events: Vec<Option<String>>,
}

/// One of the fuzz's connections and its transaction state.
pub(crate) struct Conn {
    pub(crate) name: &'static str,
    pub(crate) client: Client,
    pub(crate) in_tx: bool,
    pub(crate) tx_calls: u32,
    pub(crate) tx_budget: u32,
    /// Depth of the user savepoints `s1..sN` open in the transaction.
    pub(crate) savepoints: u32,
    /// The transaction is REPEATABLE READ or SERIALIZABLE (a concurrent update is 40001).
    pub(crate) strict_iso: bool,
    /// The transaction ran ALTER TABLE on a store table (its locks can deadlock, 40P01, with
    /// the projection worker).
    pub(crate) ddl: bool,
}

/// How often an SQLSTATE came back from one kind of call, and the first message with it.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) count: u64,
    pub(crate) first: String,
}

/// What the run did, for the summary.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) calls: u64,
    pub(crate) classes: BTreeMap<String, u64>,
    /// Per kind of call: (succeeded, failed), to see that every entry point ran.
    pub(crate) labels: BTreeMap<String, (u64, u64)>,
    pub(crate) codes: BTreeMap<String, Seen>,
    pub(crate) begun: u64,
    pub(crate) committed: u64,
    pub(crate) rolled_back: u64,
    pub(crate) commit_failed: u64,
    pub(crate) savepoints: u64,
    pub(crate) savepoint_rollbacks: u64,
    pub(crate) call_rollbacks: u64,
    pub(crate) digests_compared: u64,
    pub(crate) big_batch_rollbacks: u64,
    pub(crate) slowest: Option<(Duration, String)>,
    /// Failed subscription/projection calls whose [`FLOW_DIGEST`] was compared.
    pub(crate) flow_digests_compared: u64,
    /// Samples of the database's projection workers, and the most seen at once.
    pub(crate) worker_samples: u64,
    pub(crate) max_workers: usize,
}

/// A JSON object under construction, kept as raw key/value texts so that values serde_json
/// cannot hold exactly (`99999999999999999999`, `-0.0`, duplicate keys) reach the server verbatim.
pub(crate) struct Obj(pub(crate) Vec<(String, String)>);

impl Obj {
    /// `{"type": ty}`.
    pub(crate) fn typed(ty: &str) -> Obj {
        Obj(vec![("type".to_owned(), quote(ty))])
    }

    /// Sets `key` to the raw JSON `raw` (replacing an earlier value).
    pub(crate) fn set(&mut self, key: &str, raw: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = raw,
            None => self.0.push((key.to_owned(), raw)),
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    pub(crate) fn render(&self) -> String {
        let members: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", quote(k)))
            .collect();
        format!("{{{}}}", members.join(","))
    }
}

/// `s` as a JSON string literal.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// `s` cut to at most `max` characters (on a char boundary), marked when cut.
pub(crate) fn short(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &s[..end], s.len())
}

/// A u64 from the environment, decimal or `0x` hex.
pub(crate) fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={raw:?} is not a u64")))
}

/// The fuzzer: connections, RNG, what the calls taught about the store, and the counts.
pub(crate) struct Fuzz {
    pub(crate) seed: u64,
    pub(crate) secs: u64,
    pub(crate) rng: StdRng,
    pub(crate) conns: Vec<Conn>,
    pub(crate) pool: Vec<Uuid>,
    pub(crate) accounts: Vec<Uuid>,
    pub(crate) versions: HashMap<Uuid, i64>,
    pub(crate) recent_ids: Vec<Uuid>,
    pub(crate) batches: Vec<Batch>,
    pub(crate) last_position: i64,
    pub(crate) stored_events: i64,
    pub(crate) history: VecDeque<String>,
    pub(crate) stats: Stats,
    /// Partitions of the subscriptions the fuzz created (possibly dropped or rolled back since;
    /// a BTreeMap so that a seed picks the same names again).
    pub(crate) partitions: BTreeMap<String, i32>,
    /// Projections the fuzz created (possibly dropped or rolled back since).
    pub(crate) projections: Vec<String>,
    /// Per subscription and partition, the positions the last `es.poll` returned (first, last).
    pub(crate) heads: HashMap<(String, i32), (i64, i64)>,
    /// Every pid seen as this database's `event_store worker`, and what was seen when more
    /// than one ran at once.
    pub(crate) worker_pids: BTreeSet<i32>,
    pub(crate) duplicate_workers: Vec<String>,
    pub(crate) steps: u64,
}

impl Fuzz {
    /// Opens the three connections. The two that run beside TX0's open transactions wait at
    /// most 200 ms for a lock: with all calls on one thread, a wait for TX0 would never end.
    pub(crate) fn new(db: &TestDb, seed: u64, secs: u64) -> Fuzz {
        let open = |name: &'static str, settings: &str| {
            let mut client = db.connect();
            client
                .batch_execute(settings)
                .unwrap_or_else(|e| panic!("setting up connection {name}: {}", describe(&e)));
            Conn {
                name,
                client,
                in_tx: false,
                tx_calls: 0,
                tx_budget: 0,
                savepoints: 0,
                strict_iso: false,
                ddl: false,
            }
        };
        let conns = vec![
            open(
                "tx",
                "SET lock_timeout = '5s'; SET statement_timeout = '60s'",
            ),
            open(
                "auto",
                "SET lock_timeout = '200ms'; SET statement_timeout = '60s'",
            ),
            // VACUUM (FREEZE) waits for buffer pins without a lock_timeout: bound it here.
            open(
                "admin",
                "SET lock_timeout = '200ms'; SET statement_timeout = '10s'",
            ),
        ];
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = (0..POOL).map(|_| Uuid::from_u128(rng.random())).collect();
        Fuzz {
            seed,
            secs,
            rng,
            conns,
            pool,
            accounts: Vec::new(),
            versions: HashMap::new(),
            recent_ids: Vec::new(),
            batches: Vec::new(),
            last_position: 0,
            stored_events: 0,
            history: VecDeque::new(),
            stats: Stats::default(),
            partitions: BTreeMap::new(),
            projections: Vec::new(),
            heads: HashMap::new(),
            worker_pids: BTreeSet::new(),
            duplicate_workers: Vec::new(),
            steps: 0,
        }
    }

    // ---- bookkeeping -------------------------------------------------------------------------

    /// Fails the test with the seed, `what`, and the calls that led to it.
    pub(crate) fn fail(&self, c: usize, what: &str) -> ! {
        let conn = &self.conns[c];
        let mut report = format!(
            "fuzz failure (replay: ES_FUZZ_SEED={} ES_FUZZ_SECS={}) on connection `{}`{}:\n  {what}\n\
             last calls, oldest first (* = inside a transaction):\n",
            self.seed,
            self.secs,
            conn.name,
            if conn.in_tx {
                " inside a transaction"
            } else {
                ""
            },
        );
        for line in &self.history {
            report.push_str("  ");
            report.push_str(line);
            report.push('\n');
        }
        panic!("{report}");
    }

    /// Remembers a statement and its outcome for a failure report.
    pub(crate) fn note(&mut self, c: usize, what: &str, outcome: &str) {
        let conn = &self.conns[c];
        let line = format!(
            "{}{} {} -> {}",
            conn.name,
            if conn.in_tx { "*" } else { "" },
            short(what, 500),
            short(outcome, 300)
        );
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(line);
    }

    /// Runs a bookkeeping statement (transaction control, savepoints) that must succeed.
    pub(crate) fn meta(&mut self, c: usize, sql: &str) {
        let result = self.conns[c].client.batch_execute(sql);
        match result {
            Ok(()) => self.note(c, sql, "ok"),
            Err(err) => {
                self.note(c, sql, &describe(&err));
                self.fail(
                    c,
                    &format!("bookkeeping statement `{sql}` failed: {}", describe(&err)),
                )
            }
        }
    }

    /// The store's digest as connection `c` sees it now. Sent with the simple protocol: an
    /// extended-protocol portal stays open in a transaction until the next Bind, and this one's
    /// `max(global_position)` index scan would keep its pages pinned meanwhile, so that a
    /// `VACUUM (FREEZE)` on the admin connection would wait for the pin (a wait `lock_timeout`
    /// does not cover).
    pub(crate) fn digest(&mut self, c: usize) -> String {
        let result = self.conns[c].client.simple_query(DIGEST);
        let digest = match result {
            Ok(messages) => messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            }),
            Err(err) => self.fail(
                c,
                &format!("the store digest query failed: {}", describe(&err)),
            ),
        };
        let Some(digest) = digest else {
            self.fail(c, "the store digest query returned no row")
        };
        if c != ADMIN
            && let Some(events) = digest.split(' ').nth(3).and_then(|n| n.parse().ok())
        {
            self.stored_events = events;
        }
        digest
    }

    /// Whether an error means the server broke: an internal error, or a lost connection.
    pub(crate) fn fatal(&self, c: usize, err: &Error) -> bool {
        match sqlstate(err) {
            None => true,
            Some(code) => {
                code.starts_with("XX") || code.starts_with("58") || self.conns[c].client.is_closed()
            }
        }
    }

    pub(crate) fn count_outcome(&mut self, label: &str, code: Option<&str>, message: &str) {
        let class = match code {
            None => "ok".to_owned(),
            Some(code) => code[..2].to_owned(),
        };
        *self.stats.classes.entry(class).or_default() += 1;
        let tally = self.stats.labels.entry(label.to_owned()).or_default();
        if code.is_none() {
            tally.0 += 1;
        } else {
            tally.1 += 1;
        }
        if let Some(code) = code {
            let seen = self
                .stats
                .codes
                .entry(format!("{code} {label}"))
                .or_default();
            seen.count += 1;
            if seen.first.is_empty() {
                seen.first = short(message, 400);
            }
        }
    }

    /// Runs `call` on connection `c` and checks the properties every call must keep: no
    /// internal error, no lost connection, and when it fails, an unchanged store. Inside a
    /// transaction the call runs in its own savepoint, so that a failure is rolled back to the
    /// state right before it (and the transaction goes on).
    pub(crate) fn exec(&mut self, c: usize, call: &Call) -> Result<Vec<Row>, String> {
        let in_tx = self.conns[c].in_tx;
        if in_tx {
            self.meta(c, "SAVEPOINT fz_call");
        }
        let before = self.digest(c);
        let flow_before = if call.allowed.is_some() {
            Some(self.flow_digest(c))
        } else {
            None
        };
        let refs: Vec<&(dyn ToSql + Sync)> = call.params.iter().map(|p| p.as_ref()).collect();
        let started = Instant::now();
        let result = if call.simple {
            self.conns[c]
                .client
                .batch_execute(&call.sql)
                .map(|()| Vec::new())
        } else {
            self.conns[c].client.query(&call.sql, &refs)
        };
        let took = started.elapsed();
        if self.stats.slowest.as_ref().is_none_or(|(d, _)| took > *d) {
            self.stats.slowest = Some((took, short(&call.text(), 300)));
        }
        self.stats.calls += 1;
        if in_tx {
            self.conns[c].tx_calls += 1;
        }
        match result {
            Ok(rows) => {
                self.note(c, &call.text(), "ok");
                if in_tx {
                    self.meta(c, "RELEASE SAVEPOINT fz_call");
                }
                self.count_outcome(&call.label, None, "");
                Ok(rows)
            }
            Err(err) => {
                let text = describe(&err);
                self.note(c, &call.text(), &text);
                if self.fatal(c, &err) {
                    self.fail(
                        c,
                        &format!(
                            "internal error or lost connection: {} -> {text}",
                            call.text()
                        ),
                    );
                }
                let code = sqlstate(&err).unwrap_or("?????").to_owned();
                if !self.flow_allows(c, &code, call) {
                    self.fail(
                        c,
                        &format!(
                            "SQLSTATE {code} is not one this call may fail with (allowed: {}): \
                             {} -> {text}",
                            self.allowed_text(c, call),
                            call.text()
                        ),
                    );
                }
                if in_tx {
                    self.meta(
                        c,
                        "ROLLBACK TO SAVEPOINT fz_call; RELEASE SAVEPOINT fz_call",
                    );
                    self.stats.call_rollbacks += 1;
                }
                if let Some(flow_before) = flow_before {
                    let flow_after = self.flow_digest(c);
                    self.stats.flow_digests_compared += 1;
                    if flow_after != flow_before {
                        self.fail(
                            c,
                            &format!(
                                "a failing call changed the subscriptions or projections: {} -> \
                                 {text}\n  flow digest before: {flow_before}\n  flow digest \
                                 after:  {flow_after}",
                                call.text()
                            ),
                        );
                    }
                }
                let after = self.digest(c);
                self.stats.digests_compared += 1;
                if after != before {
                    self.fail(
                        c,
                        &format!(
                            "a failing call changed the store: {} -> {text}\n  digest before: \
                             {before}\n  digest after:  {after}",
                            call.text()
                        ),
                    );
                }
                self.count_outcome(&call.label, Some(&code), &text);
                Err(code)
            }
        }
    }

    /// Runs a generated call (sometimes behind a sqlcommenter comment, which the tracing layer
    /// parses) and learns from its result.
    pub(crate) fn run(&mut self, c: usize, call: (Call, After)) -> bool {
        self.run_code(c, call).is_ok()
    }

    /// [`Fuzz::run`], with the SQLSTATE of a failure.
    pub(crate) fn run_code(
        &mut self,
        c: usize,
        (mut call, after): (Call, After),
    ) -> Result<(), String> {
        if !call.simple && self.chance(0.03) {
            let tp = self.pick(&[
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-0000000000000000-01",
                "zz-not-a-traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "",
            ]);
            call.sql = format!("/*traceparent='{tp}'*/ {}", call.sql);
        }
        let rows = self.exec(c, &call)?;
        let first = rows.first();
        match after {
            After::Nothing => {}
            After::Version(stream) => {
                if let (Some(s), Some(Ok(Some(v)))) =
                    (stream, first.map(|r| r.try_get::<_, Option<i64>>(0)))
                {
                    self.versions.insert(s, v);
                }
            }
            After::Appended(batch) => {
                if let (Some(s), Some(Ok(Some(v)))) =
                    (batch.stream, first.map(|r| r.try_get::<_, Option<i64>>(0)))
                {
                    self.versions.insert(s, v);
                }
                if !batch.events.is_empty() {
                    if self.batches.len() < 50 {
                        self.batches.push(batch);
                    } else {
                        let i = self.rng.random_range(0..self.batches.len());
                        self.batches[i] = batch;
                    }
                }
            }
            After::Opened => {
                if let Some(Ok(Some(id))) = first.map(|r| r.try_get::<_, Option<Uuid>>(0)) {
                    if self.accounts.len() < MAX_ACCOUNTS {
                        self.accounts.push(id);
                    } else {
                        let i = self.rng.random_range(0..self.accounts.len());
                        self.accounts[i] = id;
                    }
                }
            }
            After::Position => {
                if let Some(Ok(Some(p))) = first.map(|r| r.try_get::<_, Option<i64>>(2)) {
                    self.last_position = self.last_position.max(p);
                }
            }
            After::Polled(polled) => self.check_poll(c, &call, &rows, polled),
            After::Acked(position) => {
                let checkpoint = first.and_then(|r| r.try_get::<_, Option<i64>>(0).ok().flatten());
                if let (Some(p), Some(cp)) = (position, checkpoint)
                    && cp < p
                {
                    self.fail(
                        c,
                        &format!(
                            "es.ack returned the checkpoint {cp}, below the acked position {p}: {}",
                            call.text()
                        ),
                    );
                }
            }
            After::Hashed(stream) => {
                let got = first.and_then(|r| r.try_get::<_, Option<i32>>(0).ok().flatten());
                let want = stream.map(|s| fnv1a31(s.as_bytes()));
                if got != want {
                    self.fail(
                        c,
                        &format!(
                            "es.stream_hash returned {got:?}, FNV-1a masked to 31 bits is {want:?}: {}",
                            call.text()
                        ),
                    );
                }
            }
            After::Projected(name) => {
                if let Some(name) = name
                    && !self.projections.contains(&name)
                {
                    if self.projections.len() < 12 {
                        self.projections.push(name);
                    } else {
                        let i = self.rng.random_range(0..self.projections.len());
                        self.projections[i] = name;
                    }
                }
            }
            After::Subscribed { name, partitions } => {
                if let Some(name) = name {
                    self.partitions.insert(name, partitions.unwrap_or(1));
                }
            }
        }
        Ok(())
    }

    // ---- transactions ------------------------------------------------------------------------

    pub(crate) fn begin(&mut self, c: usize) {
        let sql = self.pick(&[
            "BEGIN",
            "BEGIN",
            "BEGIN",
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
        ]);
        self.meta(c, sql);
        let budget = self.rng.random_range(1..=25);
        let conn = &mut self.conns[c];
        conn.in_tx = true;
        conn.tx_calls = 0;
        conn.tx_budget = budget;
        conn.savepoints = 0;
        conn.strict_iso = sql != "BEGIN";
        conn.ddl = false;
        self.stats.begun += 1;
    }

    /// Commits or rolls back at random. A COMMIT may fail (a serialization failure under
    /// SERIALIZABLE): that ends the transaction too, and counts as a failed commit.
    pub(crate) fn end_tx(&mut self, c: usize) {
        if self.chance(0.55) {
            let result = self.conns[c].client.batch_execute("COMMIT");
            match result {
                Ok(()) => {
                    self.note(c, "COMMIT", "ok");
                    self.stats.committed += 1;
                }
                Err(err) => {
                    self.note(c, "COMMIT", &describe(&err));
                    if self.fatal(c, &err) {
                        self.fail(c, &format!("COMMIT: {}", describe(&err)));
                    }
                    let code = sqlstate(&err).unwrap_or("?????").to_owned();
                    self.count_outcome("COMMIT", Some(&code), &describe(&err));
                    self.stats.commit_failed += 1;
                }
            }
        } else {
            self.meta(c, "ROLLBACK");
            self.stats.rolled_back += 1;
        }
        let conn = &mut self.conns[c];
        conn.in_tx = false;
        conn.savepoints = 0;
    }

    /// Before a call on TX0: maybe begin, end, or work with savepoints.
    pub(crate) fn tx_control(&mut self) {
        let conn = &self.conns[TX0];
        if !conn.in_tx {
            if self.chance(0.15) {
                self.begin(TX0);
            }
            return;
        }
        if conn.tx_calls >= conn.tx_budget {
            self.end_tx(TX0);
            return;
        }
        let depth = conn.savepoints;
        let r = self.rng.random_range(0..100);
        if r < 8 {
            self.meta(TX0, &format!("SAVEPOINT s{}", depth + 1));
            self.conns[TX0].savepoints += 1;
            self.stats.savepoints += 1;
        } else if r < 13 && depth > 0 {
            let k = self.rng.random_range(1..=depth);
            self.meta(TX0, &format!("ROLLBACK TO SAVEPOINT s{k}"));
            self.conns[TX0].savepoints = k;
            self.stats.savepoint_rollbacks += 1;
        } else if r < 16 && depth > 0 {
            let k = self.rng.random_range(1..=depth);
            self.meta(TX0, &format!("RELEASE SAVEPOINT s{k}"));
            self.conns[TX0].savepoints = k - 1;
        }
    }

    // ---- random values -----------------------------------------------------------------------

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("a non-empty choice")
    }

    /// A stream id: mostly from the pool or the opened accounts, sometimes unknown, nil or NULL.
    pub(crate) fn pick_stream(&mut self) -> Option<Uuid> {
        let r = self.rng.random_range(0..100);
        if r < 70 || (r < 85 && self.accounts.is_empty()) {
            let i = self.rng.random_range(0..POOL);
            Some(self.pool[i])
        } else if r < 85 {
            let i = self.rng.random_range(0..self.accounts.len());
            Some(self.accounts[i])
        } else if r < 95 {
            Some(Uuid::from_u128(self.rng.random()))
        } else if r < 98 {
            Some(Uuid::nil())
        } else {
            None
        }
    }

    /// An account id for a command: mostly an opened or pool account.
    pub(crate) fn pick_account(&mut self) -> Option<Uuid> {
        if !self.accounts.is_empty() && self.chance(0.75) {
            let i = self.rng.random_range(0..self.accounts.len());
            Some(self.accounts[i])
        } else if self.chance(0.6) {
            let i = self.rng.random_range(0..ACCOUNT_POOL);
            Some(self.pool[i])
        } else {
            self.pick_stream()
        }
    }

    /// The last version seen for a stream (0 if never seen).
    pub(crate) fn known(&self, stream: Option<Uuid>) -> i64 {
        stream
            .and_then(|s| self.versions.get(&s).copied())
            .unwrap_or(0)
    }

    pub(crate) fn is_account(&self, stream: Option<Uuid>) -> bool {
        stream.is_some_and(|s| self.pool[..ACCOUNT_POOL].contains(&s) || self.accounts.contains(&s))
    }

    /// A bigint argument: NULL, near `near`, an extreme, or random.
    pub(crate) fn pick_bigint(&mut self, near: i64) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..10 => None,
            10..35 => Some(near),
            35..45 => Some(near.saturating_sub(1)),
            45..55 => Some(near.saturating_add(1)),
            55..85 => Some(self.pick(EXTREMES)),
            85..95 => Some(self.rng.random_range(0..1000)),
            _ => Some(self.rng.random()),
        }
    }

    /// An expected version: mostly right or NULL, so that streams grow.
    pub(crate) fn pick_expected(&mut self, stream: Option<Uuid>) -> Option<i64> {
        let known = self.known(stream);
        match self.rng.random_range(0..100) {
            0..30 => None,
            30..70 => Some(known),
            _ => self.pick_bigint(known),
        }
    }

    pub(crate) fn pick_int(&mut self) -> Option<i32> {
        match self.rng.random_range(0..100) {
            0..10 => None,
            10..50 => Some(self.pick(INT_EXTREMES)),
            _ => Some(self.rng.random_range(0..500)),
        }
    }

    /// An amount in cents: mostly small and positive, else zero, negative, or near `i64::MAX`.
    pub(crate) fn pick_amount(&mut self) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..50 => Some(self.rng.random_range(1..=5000)),
            50..60 => Some(self.rng.random_range(1..=10_000_000)),
            60..85 => Some(self.pick(AMOUNT_EXTREMES)),
            85..95 => Some(self.rng.random_range(-1000..=0)),
            _ => None,
        }
    }

    /// An opening balance: mostly ordinary, sometimes right below `i64::MAX` (so deposits
    /// overflow), sometimes an extreme.
    pub(crate) fn pick_balance(&mut self) -> Option<i64> {
        match self.rng.random_range(0..100) {
            0..75 => Some(self.rng.random_range(0..100_000)),
            75..80 => Some(i64::MAX - self.rng.random_range(0..1000)),
            _ => self.pick_amount(),
        }
    }

    /// A holder, description or reason: ordinary, empty, unicode, 10 kB, 2 MB, a NUL byte
    /// (not valid in text), JSON-looking, or NULL.
    pub(crate) fn pick_text(&mut self) -> Option<String> {
        match self.rng.random_range(0..100) {
            0..55 => Some(format!("fz-{}", self.rng.random_range(0..1000))),
            55..65 => Some(String::new()),
            65..70 => Some(" ".to_owned()),
            70..78 => Some("é✓ \"quote\" \\ back".to_owned()),
            78..82 => Some("x".repeat(10_000)),
            82..84 => Some("y".repeat(2_000_000)),
            84..86 => Some("nul\0byte".to_owned()),
            86..90 => Some("{\"type\":\"Opened\"}".to_owned()),
            _ => None,
        }
    }

    /// An `as_of` time: NULL, the epoch, 1900, now, a second ago, a year ahead.
    pub(crate) fn pick_time(&mut self) -> Option<SystemTime> {
        let now = SystemTime::now();
        match self.rng.random_range(0..6) {
            0 => None,
            1 => Some(UNIX_EPOCH),
            2 => Some(UNIX_EPOCH - Duration::from_secs(70 * 365 * 86_400)),
            3 => Some(now),
            4 => Some(now - Duration::from_secs(1)),
            _ => Some(now + Duration::from_secs(365 * 86_400)),
        }
    }

    /// An event id: mostly new, sometimes one sent before (a duplicate or an idempotent retry).
    pub(crate) fn event_id(&mut self) -> Uuid {
        if !self.recent_ids.is_empty() && self.chance(0.15) {
            let i = self.rng.random_range(0..self.recent_ids.len());
            return self.recent_ids[i];
        }
        let id = Uuid::from_u128(self.rng.random());
        if self.recent_ids.len() < 300 {
            self.recent_ids.push(id);
        } else {
            let i = self.rng.random_range(0..self.recent_ids.len());
            self.recent_ids[i] = id;
        }
        id
    }

    // ---- calls -------------------------------------------------------------------------------

    /// A random call of the SQL surface (no admin statements).
    pub(crate) fn random_call(&mut self) -> (Call, After) {
        if self.chance(FLOW_SHARE) {
            return self.gen_flow();
        }
        match self.rng.random_range(0..100) {
            0..30 => self.gen_append(),
            30..37 => self.gen_load_events(),
            37..41 => self.gen_stream_version(),
            41..45 => self.gen_read_all(),
            45..50 => self.gen_save_snapshot(),
            50..54 => self.gen_load_snapshot(),
            54..62 => self.gen_replay(),
            62..66 => self.gen_open_account(),
            66..74 => self.gen_money(true),
            74..80 => self.gen_money(false),
            80..81 => {
                let freeze = self.chance(0.6);
                self.gen_freeze_or_close(freeze)
            }
            81..82 => self.gen_money(true),
            82..89 => self.gen_account_state(),
            89..95 => self.gen_account_history(),
            95..97 => (
                Call::new("tracing_stats", "SELECT * FROM es.tracing_stats()"),
                After::Nothing,
            ),
            97..99 => self.gen_lifecycle(),
            _ => self.gen_setting(),
        }
    }

    /// One step of the fuzz.
    pub(crate) fn step(&mut self) {
        self.steps += 1;
        if self.steps.is_multiple_of(16) {
            self.sample_workers();
        }
        match self.rng.random_range(0..1000) {
            0..20 => self.admin(),
            20..28 => self.scenario_rolled_back_batch(),
            28..31 => self.scenario_ddl_in_tx(),
            31..51 => self.scenario_consume(),
            51..54 => self.scenario_wait_timeout(),
            54..62 => self.scenario_wait_then_poll(),
            _ => {
                let c = if self.chance(0.7) { TX0 } else { AUTO };
                if c == TX0 {
                    self.tx_control();
                }
                let call = self.random_call();
                self.run(c, call);
            }
        }
    }

    /// Ends an open transaction at the deadline, at random like any other.
    pub(crate) fn finish(&mut self) {
        if self.conns[TX0].in_tx {
            self.end_tx(TX0);
        }
    }
}
