//! The final checks of `fuzz_whole_sql_surface`, on fresh connections: the subscription and
//! projection tables agree, the account projections catch up and equal the store, at most one
//! worker ran; versions are gapless, account states equal their replay, `es.read_all` returns
//! every event once, amcheck finds the tables sound.

use super::*;

/// What the final flow check found, for the summary.
pub(crate) struct FlowEnd {
    pub(crate) subscriptions: i64,
    pub(crate) projections: i64,
    pub(crate) parked: i64,
    pub(crate) accounts_compared: i64,
    pub(crate) catch_up: Duration,
    pub(crate) worker_pids: usize,
    pub(crate) worker_errors: Vec<String>,
}

/// The end of the server log from byte `from`, when the test can read it (run.sh exports
/// `ES_CLUSTER_DIR`).
pub(crate) fn server_log_since(from: Option<u64>) -> Option<String> {
    let dir = std::env::var("ES_CLUSTER_DIR").ok()?;
    let bytes = std::fs::read(Path::new(&dir).join("postgres.log")).ok()?;
    let from = usize::try_from(from?).ok()?.min(bytes.len());
    Some(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

pub(crate) fn server_log_size() -> Option<u64> {
    let dir = std::env::var("ES_CLUSTER_DIR").ok()?;
    std::fs::metadata(Path::new(&dir).join("postgres.log"))
        .ok()
        .map(|m| m.len())
}

/// The final checks of subscriptions and projections, on a fresh connection: their tables are
/// consistent; the seed's two projections (re-created when the fuzz dropped or replaced them,
/// the others dropped so the worker has only them to do) catch up with the whole log and then
/// equal `es.account_state` / `es.account_history` for every account without a parked event;
/// at most one worker ran for the database; the worker's errors in the server log.
pub(crate) fn final_flow_checks(
    db: &TestDb,
    seed: u64,
    fuzz: &Fuzz,
    log_from: Option<u64>,
) -> FlowEnd {
    let mut client = db.connect();
    let fail = |what: String| -> ! {
        panic!("fuzz final flow check failed (ES_FUZZ_SEED={seed}): {what}")
    };
    let count = |client: &mut Client, what: &str, sql: &str| -> i64 {
        client
            .query_one(sql, &[])
            .unwrap_or_else(|e| fail(format!("{what}: `{sql}`: {}", describe(&e))))
            .get(0)
    };

    // The tables agree with each other.
    let mut orphans = Vec::new();
    for (what, sql) in [
        (
            "partitions without a subscription",
            "SELECT p.subscription || ' partition ' || p.partition \
             FROM es.subscription_partitions p WHERE NOT EXISTS \
             (SELECT 1 FROM es.subscription_config c WHERE c.name = p.subscription)",
        ),
        (
            "subscriptions whose partition rows are not exactly 0..partitions-1",
            "SELECT c.name FROM es.subscription_config c WHERE (SELECT count(*) \
             FROM es.subscription_partitions p WHERE p.subscription = c.name \
             AND p.partition >= 0 AND p.partition < c.partitions) <> c.partitions \
             OR EXISTS (SELECT 1 FROM es.subscription_partitions p WHERE p.subscription = c.name \
             AND (p.partition < 0 OR p.partition >= c.partitions))",
        ),
        (
            "projections without a subscription",
            "SELECT j.name FROM es.projection_config j WHERE NOT EXISTS \
             (SELECT 1 FROM es.subscription_config c WHERE c.name = j.name)",
        ),
        (
            "parked events that are not stored events",
            "SELECT k.subscription || ' ' || k.global_position FROM es.parked_events k \
             WHERE NOT EXISTS (SELECT 1 FROM es.events e \
             WHERE e.global_position = k.global_position AND e.stream_id = k.stream_id)",
        ),
        (
            "parked events in another partition than their stream's",
            "SELECT k.subscription || ' ' || k.global_position FROM es.parked_events k \
             JOIN es.subscription_config c ON c.name = k.subscription \
             WHERE es.stream_hash(k.stream_id) % c.partitions <> k.partition",
        ),
    ] {
        let rows: Vec<String> = client
            .query(&format!("{sql} LIMIT 10"), &[])
            .unwrap_or_else(|e| fail(format!("{what}: `{sql}`: {}", describe(&e))))
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !rows.is_empty() {
            fail(format!("{what}: {}", rows.join(", ")));
        }
    }
    // Left behind by es.drop_subscription / es.drop_projection when a concurrent transaction
    // (a consumer's es.nack or es.claim, the projection worker) committed rows after the
    // drop's snapshot; a subscription created later with the same name inherits them.
    for (what, sql) in [
        (
            "parked events of no subscription",
            "SELECT k.subscription || ' position ' || k.global_position || ' stream ' \
             || k.stream_id || ' attempts ' || k.attempts || ' error ' || coalesce(k.error, '-') \
             || ' parked at ' || k.parked_at FROM es.parked_events k WHERE NOT EXISTS \
             (SELECT 1 FROM es.subscription_config c WHERE c.name = k.subscription)",
        ),
        (
            "consumers of no subscription",
            "SELECT u.subscription || ' consumer ' || u.consumer FROM es.subscription_consumers u \
             WHERE NOT EXISTS (SELECT 1 FROM es.subscription_config c \
             WHERE c.name = u.subscription)",
        ),
    ] {
        let rows: Vec<String> = client
            .query(&format!("{sql} LIMIT 10"), &[])
            .unwrap_or_else(|e| fail(format!("{what}: `{sql}`: {}", describe(&e))))
            .iter()
            .map(|r| short(&r.get::<_, String>(0), 300))
            .collect();
        if !rows.is_empty() {
            orphans.push(format!("{what}: {}", rows.join("; ")));
        }
    }
    if !orphans.is_empty() {
        let text = format!(
            "rows of dropped subscriptions left behind (a drop racing a transaction that \
             parked or claimed):\n  {}",
            orphans.join("\n  ")
        );
        if TOLERATE_DROP_RACE_ORPHANS {
            eprintln!("fuzz: {text}");
        } else {
            fail(text);
        }
    }
    let subscriptions = count(
        &mut client,
        "es.subscriptions",
        "SELECT count(*) FROM es.subscriptions",
    );
    let parked = count(
        &mut client,
        "parked events",
        "SELECT count(*) FROM es.parked_events",
    );

    // Only the seed's projections, with their own handlers (and any escaping handler, which
    // must not stop them).
    let exec = |client: &mut Client, sql: &str| {
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| fail(format!("`{sql}`: {}", describe(&e))))
    };
    exec(
        &mut client,
        "SELECT es.drop_projection(name) FROM es.projection_config \
         WHERE handler NOT IN ('es.project_account_balances', 'es.project_account_transactions', \
                               'public.fz_escape') \
            OR (name = 'account_balances') <> (handler = 'es.project_account_balances') \
            OR (name = 'account_transactions') <> (handler = 'es.project_account_transactions'); \
         SELECT es.drop_subscription(name) FROM es.subscription_config c \
         WHERE name IN ('account_balances', 'account_transactions') \
           AND NOT EXISTS (SELECT 1 FROM es.projection_config j WHERE j.name = c.name); \
         SELECT es.enable_account_projections(); \
         SELECT es.resume_projection(name) FROM es.projection_config",
    );
    let projections = count(
        &mut client,
        "es.projections",
        "SELECT count(*) FROM es.projections",
    );
    let end = count(
        &mut client,
        "the end of the log",
        "SELECT coalesce(max(global_position), 0) FROM es.events",
    );
    let started = Instant::now();
    let budget = Duration::from_secs(20);
    for name in ACCOUNT_PROJECTIONS {
        let left = budget.saturating_sub(started.elapsed()).as_millis() as i32;
        let caught_up: bool = client
            .query_one(
                "SELECT es.wait_for_projection($1, $2, $3)",
                &[name, &end, &left.max(1)],
            )
            .unwrap_or_else(|e| fail(format!("es.wait_for_projection({name}): {}", describe(&e))))
            .get(0);
        if !caught_up {
            let rows = client
                .query(
                    "SELECT name || ' ' || state || ' checkpoint ' || checkpoint || ' behind ' \
                     || events_behind || ' last error ' || coalesce(last_error, '-') \
                     FROM es.projections ORDER BY name",
                    &[],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let (duplicates, lines, _) = worker_report(&mut client, fuzz, log_from);
            fail(format!(
                "projection {name} did not reach position {end} within {budget:?} (the \
                 database's worker is stuck or gone): {}\n  more than one worker at once: \
                 {duplicates:?}\n  the workers' log lines:\n  {}",
                rows.join("; "),
                lines.join("\n  ")
            ));
        }
    }
    let catch_up = started.elapsed();

    // The seed's projections equal the store, for accounts without a parked event.
    let balances_sql = "SELECT s.stream_id::text, to_jsonb(b)::text, a::text \
         FROM es.streams s CROSS JOIN LATERAL es.account_state(s.stream_id) AS a \
         LEFT JOIN es.account_balances b ON b.account_id = s.stream_id \
         WHERE s.stream_type = 'account' AND s.deleted IS NULL AND s.truncated_before IS NULL \
           AND NOT EXISTS (SELECT 1 FROM es.parked_events k \
                WHERE k.subscription = 'account_balances' AND k.stream_id = s.stream_id) \
           AND (b.account_id IS NULL OR (b.holder_name, b.balance_cents, b.status, b.version) \
                IS DISTINCT FROM (a->>'holder_name', (a->>'balance_cents')::bigint, \
                                  a->>'status', (a->>'version')::bigint)) \
         LIMIT 5";
    let transactions_sql = "SELECT s.stream_id::text, d::text FROM es.streams s \
         CROSS JOIN LATERAL ( \
           (SELECT 'history' AS side, h.version, h.event_type, h.amount_cents, h.balance_cents, \
                   h.description, h.occurred_at FROM es.account_history(s.stream_id) h \
            EXCEPT SELECT 'history', t.version, t.event_type, t.amount_cents, t.balance_cents, \
                   t.description, t.occurred_at FROM es.account_transactions t \
            WHERE t.account_id = s.stream_id) \
           UNION ALL \
           (SELECT 'projection', t.version, t.event_type, t.amount_cents, t.balance_cents, \
                   t.description, t.occurred_at FROM es.account_transactions t \
            WHERE t.account_id = s.stream_id \
            EXCEPT SELECT 'projection', h.version, h.event_type, h.amount_cents, \
                   h.balance_cents, h.description, h.occurred_at \
            FROM es.account_history(s.stream_id) h)) d \
         WHERE s.stream_type = 'account' AND s.deleted IS NULL AND s.truncated_before IS NULL \
           AND NOT EXISTS (SELECT 1 FROM es.parked_events k \
                WHERE k.subscription = 'account_transactions' AND k.stream_id = s.stream_id) \
         LIMIT 5";
    for (what, sql) in [
        (
            "es.account_balances differs from es.account_state",
            balances_sql,
        ),
        (
            "es.account_transactions differs from es.account_history",
            transactions_sql,
        ),
    ] {
        let rows = client
            .query(sql, &[])
            .unwrap_or_else(|e| fail(format!("{what}: {}", describe(&e))));
        if !rows.is_empty() {
            let shown: Vec<String> = rows
                .iter()
                .map(|r| {
                    (1..r.len())
                        .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                        .fold(r.get::<_, String>(0), |a, b| format!("{a} {b}"))
                })
                .collect();
            fail(format!("{what} once caught up:\n  {}", shown.join("\n  ")));
        }
    }
    let accounts_compared = count(
        &mut client,
        "accounts",
        "SELECT count(*) FROM es.streams WHERE stream_type = 'account'",
    );

    // One worker per database; what the workers logged.
    let (duplicates, worker_errors, pids) = worker_report(&mut client, fuzz, log_from);
    if !duplicates.is_empty() {
        let text = format!(
            "more than one event_store worker ran at once for the database (docs/reference.md §10: one per \
             database):\n  {}\n  their log lines:\n  {}",
            duplicates.join("\n  "),
            worker_errors.join("\n  ")
        );
        if TOLERATE_DUPLICATE_WORKERS {
            eprintln!("fuzz: {text}");
        } else {
            fail(text);
        }
    }
    FlowEnd {
        subscriptions,
        projections,
        parked,
        accounts_compared,
        catch_up,
        worker_pids: pids,
        worker_errors,
    }
}

/// The database's projection workers: the times more than one ran at once (sampled during
/// the run, and now), the server log lines of every worker pid seen (errors, and the worker's
/// own LOG lines about projections), and how many pids were seen.
pub(crate) fn worker_report(
    client: &mut Client,
    fuzz: &Fuzz,
    log_from: Option<u64>,
) -> (Vec<String>, Vec<String>, usize) {
    let now: Vec<i32> = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_store worker' \
             AND datname = current_database()",
            &[],
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    let mut pids = fuzz.worker_pids.clone();
    pids.extend(&now);
    let mut duplicates = fuzz.duplicate_workers.clone();
    if now.len() > 1 {
        duplicates.push(format!("at the end: pids {now:?}"));
    }
    let mut lines = Vec::new();
    if let Some(log) = server_log_since(log_from) {
        for line in log.lines() {
            let ours = pids.iter().any(|pid| line.contains(&format!("[{pid}] ")));
            let noteworthy = ["ERROR:", "FATAL:", "PANIC:", "WARNING:", "DETAIL:"]
                .iter()
                .any(|k| line.contains(k))
                || line.contains("LOG:  event_store: projection");
            if ours && noteworthy && lines.len() < 40 {
                lines.push(short(line, 400));
            }
        }
    }
    (duplicates, lines, pids.len())
}

/// Counts read after the final checks.
pub(crate) struct Final {
    pub(crate) events: i64,
    pub(crate) streams: i64,
    pub(crate) accounts: usize,
    pub(crate) snapshots: i64,
    pub(crate) read_all_checked: bool,
}

/// The final checks, on a fresh connection (see the header); panics with the seed on failure.
pub(crate) fn final_checks(db: &TestDb, seed: u64) -> Final {
    let mut client = db.connect();
    let fail =
        |what: String| -> ! { panic!("fuzz final check failed (ES_FUZZ_SEED={seed}): {what}") };

    // Gapless 1..N per stream, equal to the stream row's version, no orphan on either side.
    let bad = client
        .query(
            "SELECT coalesce(e.stream_id, s.stream_id)::text, e.n, e.lo, e.hi, e.d, s.version \
             FROM (SELECT stream_id, count(*) AS n, min(version) AS lo, max(version) AS hi, \
                          count(DISTINCT version) AS d FROM es.events GROUP BY stream_id) e \
             FULL JOIN es.streams s ON s.stream_id = e.stream_id \
             WHERE e.stream_id IS NULL OR s.stream_id IS NULL \
                OR e.lo <> CASE WHEN s.deleted = 'hard' THEN s.version \
                                ELSE coalesce(s.truncated_before, 1) END \
                OR e.hi - e.lo + 1 <> e.n OR e.d <> e.n OR s.version IS DISTINCT FROM e.hi \
             LIMIT 10",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("version check query: {}", describe(&e))));
    if !bad.is_empty() {
        let rows: Vec<String> = bad
            .iter()
            .map(|r| {
                format!(
                    "stream {} events {:?} min {:?} max {:?} distinct {:?} stream row version {:?}",
                    r.get::<_, String>(0),
                    r.get::<_, Option<i64>>(1),
                    r.get::<_, Option<i64>>(2),
                    r.get::<_, Option<i64>>(3),
                    r.get::<_, Option<i64>>(4),
                    r.get::<_, Option<i64>>(5)
                )
            })
            .collect();
        fail(format!(
            "streams whose events are not exactly versions 1..version:\n  {}",
            rows.join("\n  ")
        ));
    }

    // Every account's state equals the replay of its events.
    let accounts: Vec<Uuid> = client
        .query(
            "SELECT stream_id FROM es.streams WHERE stream_type = 'account' \
             AND deleted IS NULL AND truncated_before IS NULL ORDER BY 1",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("listing accounts: {}", describe(&e))))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut mismatches = Vec::new();
    for id in &accounts {
        let row = client
            .query_one(
                "SELECT a IS NOT DISTINCT FROM r, a::text, r::text \
                 FROM (SELECT es.account_state($1) AS a, (SELECT es.account_replay(data ORDER BY \
                       version) FROM es.events WHERE stream_id = $1) AS r) x",
                &[id],
            )
            .unwrap_or_else(|e| {
                fail(format!(
                    "account_state / account_replay of account {id}: {}",
                    describe(&e)
                ))
            });
        if !row.get::<_, bool>(0) {
            mismatches.push(format!(
                "account {id}: account_state {:?} but replay {:?}",
                row.get::<_, Option<String>>(1),
                row.get::<_, Option<String>>(2)
            ));
        }
    }
    if !mismatches.is_empty() {
        fail(format!(
            "{} of {} accounts: es.account_state differs from the replay of the events:\n  {}",
            mismatches.len(),
            accounts.len(),
            mismatches.join("\n  ")
        ));
    }

    // read_all paged by 100 returns every event once, in position order (needs the preload).
    let preloaded: bool = client
        .query_one(
            "SELECT current_setting('shared_preload_libraries') LIKE '%event_store%'",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("reading the preload setting: {}", describe(&e))))
        .get(0);
    let all: Vec<i64> = client
        .query("SELECT global_position FROM es.events ORDER BY 1", &[])
        .unwrap_or_else(|e| fail(format!("reading positions: {}", describe(&e))))
        .iter()
        .map(|r| r.get(0))
        .collect();
    if preloaded {
        let mut paged: Vec<i64> = Vec::with_capacity(all.len());
        let mut after = 0i64;
        loop {
            let page: Vec<i64> = client
                .query(
                    "SELECT global_position FROM es.read_all($1, 100)",
                    &[&after],
                )
                .unwrap_or_else(|e| fail(format!("read_all({after}, 100): {}", describe(&e))))
                .iter()
                .map(|r| r.get(0))
                .collect();
            let Some(&last) = page.last() else { break };
            if page.len() > 100 || last <= after {
                fail(format!(
                    "read_all({after}, 100) returned {} rows ending at {last}",
                    page.len()
                ));
            }
            paged.extend(page);
            after = last;
            if paged.len() > all.len() {
                break;
            }
        }
        if paged != all {
            let first_diff = paged.iter().zip(&all).position(|(a, b)| a != b);
            fail(format!(
                "read_all paged by 100 returned {} positions, es.events holds {}; first \
                 difference at index {first_diff:?}",
                paged.len(),
                all.len()
            ));
        }
    } else {
        eprintln!("fuzz: server started without the preload: final read_all check skipped");
    }

    // amcheck of es.events and es.streams (the crate's check), then of es.snapshots.
    verify_store(&mut client);
    let checked: i64 = client
        .query_one(
            "SELECT count(bt_index_check(x.indexrelid, true)::text) FROM pg_index x \
             WHERE x.indrelid = 'es.snapshots'::regclass",
            &[],
        )
        .unwrap_or_else(|e| {
            fail(format!(
                "amcheck of es.snapshots' indexes: {}",
                describe(&e)
            ))
        })
        .get(0);
    assert!(
        checked >= 1,
        "expected es.snapshots' primary key to be checked"
    );
    let problems: i64 = client
        .query_one("SELECT count(*) FROM verify_heapam('es.snapshots')", &[])
        .unwrap_or_else(|e| fail(format!("verify_heapam(es.snapshots): {}", describe(&e))))
        .get(0);
    if problems != 0 {
        fail(format!(
            "verify_heapam(es.snapshots) reported {problems} problems"
        ));
    }

    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM es.streams), (SELECT count(*) FROM es.snapshots)",
            &[],
        )
        .unwrap_or_else(|e| fail(format!("final counts: {}", describe(&e))));
    Final {
        events: all.len() as i64,
        streams: counts.get(0),
        accounts: accounts.len(),
        snapshots: counts.get(1),
        read_all_checked: preloaded,
    }
}
