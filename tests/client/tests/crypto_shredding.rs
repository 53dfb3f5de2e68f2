//! Crypto-shredding (docs/reference.md §14, docs/lifecycle.md, "Forgetting a subject"), proven on a real cluster.
//!
//! - After `es.forget`, the cleartext of the forgotten subjects is in no table file, no WAL
//!   segment written since before the appends (the raw bytes, and `pg_waldump`'s decoding), no
//!   logical decoding output (a `test_decoding` slot made before the appends), no `pg_dump`
//!   output and no query result of a streaming standby; the account's balance history survives
//!   while its holder reads as erased.
//! - Appends for a subject racing `es.forget` never store a cleartext value nor an unsealed one:
//!   every value is a token that either opens (a key made after the forget) or reads as erased.
//! - A backend killed (`kill -9`) in the middle of a `forget` transaction leaves everything as it
//!   was after crash recovery; a committed `forget` stays done: all or nothing.

use event_store_client_tests::replica::{self, LogicalWalLevel, Replica};
use event_store_client_tests::{
    Client, TestDb, Uuid, append, connect_with_retry, describe, exec, kill_9, pg_bin, texts,
};
use std::process::Command;
use std::time::Duration;

/// Cleartexts no copy may hold after forgetting (odd enough to appear nowhere else).
const HOLDER: &str = "Zelda Quixote-Marquardt";
const DESCRIPTION: &str = "rent paid to Yannick Oberhauser";
const STREET: &str = "Wolkenkuckucksheim 42";
/// A cleartext of a subject that is not forgotten: it must stay readable.
const KEPT: &str = "kept.person@example.org";
/// A value at no personal path: stored as sent, so the byte searches below must find it.
const PLAIN: &str = "plain-marker-Qx7Vb";

fn define_paths(client: &mut Client) {
    exec(
        client,
        "SELECT es.define_personal_data('Opened', ARRAY['account_holder']);
         SELECT es.define_personal_data('Withdrawn', ARRAY['description']);
         SELECT es.define_personal_data('Registered', ARRAY['email', 'address.street']);",
    );
}

fn one_text(client: &mut Client, sql: &str) -> String {
    texts(client, sql)
        .into_iter()
        .next()
        .flatten()
        .unwrap_or_default()
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

fn assert_no_cleartext(place: &str, text: &str) {
    for secret in [HOLDER, DESCRIPTION, STREET] {
        assert!(
            !text.contains(secret),
            "{place} holds the forgotten cleartext {secret:?}"
        );
    }
}

#[test]
fn forgotten_cleartext_is_in_no_table_wal_decoding_dump_or_standby() {
    let _exclusive = replica::exclusive();
    let _wal = LogicalWalLevel::ensure();
    let db = TestDb::new("crypto_shred");
    let mut standby = Replica::standby();
    let mut c = db.connect();
    let slot = "es_crypto_shredding_slot";
    exec(
        &mut c,
        &format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    );
    exec(
        &mut c,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'test_decoding')"),
    );
    let wal_start = one_text(&mut c, "SELECT pg_current_wal_lsn()::text");
    define_paths(&mut c);
    // the seed's projections copy the holder and descriptions into their read models
    exec(&mut c, "SELECT es.enable_account_projections()");
    let account = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let other = Uuid::new_v4();
    append(
        &mut c,
        account,
        Some(0),
        &[format!(
            r#"{{"type":"Opened","account_holder":"{HOLDER}","initial_balance_cents":1000}}"#
        )],
    )
    .unwrap_or_else(|e| panic!("Opened: {}", describe(&e)));
    c.execute("SELECT es.deposit($1, 500, 'salary')", &[&account])
        .unwrap_or_else(|e| panic!("es.deposit: {}", describe(&e)));
    c.execute("SELECT es.withdraw($1, 300, $2)", &[&account, &DESCRIPTION])
        .unwrap_or_else(|e| panic!("es.withdraw: {}", describe(&e)));
    exec(&mut c, "SET es.snapshot_interval = 2");
    c.execute("SELECT es.deposit($1, 1, 'interest')", &[&account])
        .unwrap_or_else(|e| panic!("es.deposit: {}", describe(&e)));
    append(
        &mut c,
        customer,
        Some(0),
        &[format!(
            r#"{{"type":"Registered","email":"z.q@example.org","address":{{"street":"{STREET}","city":"Bern"}},"plan":"gold","metadata":{{"data_subject":"customer-{customer}"}}}}"#
        )],
    )
    .unwrap_or_else(|e| panic!("Registered: {}", describe(&e)));
    append(
        &mut c,
        other,
        Some(0),
        &[format!(
            r#"{{"type":"Registered","email":"{KEPT}","plan":"{PLAIN}"}}"#
        )],
    )
    .unwrap_or_else(|e| panic!("Registered (kept): {}", describe(&e)));
    let before: Vec<Option<String>> = texts(
        &mut c,
        &format!(
            "SELECT format('%s %s %s', version, amount_cents, balance_cents) FROM es.account_history('{account}') ORDER BY version"
        ),
    );
    // the read models caught up: they hold the sealed form, which es.reveal opens
    let last = one_text(&mut c, "SELECT max(global_position)::text FROM es.events");
    for projection in ["account_balances", "account_transactions"] {
        let done: bool = c
            .query_one(
                &format!("SELECT es.wait_for_projection('{projection}', {last}, 60000)"),
                &[],
            )
            .unwrap_or_else(|e| panic!("es.wait_for_projection: {}", describe(&e)))
            .get(0);
        assert!(done, "projection {projection} did not catch up");
    }
    assert!(
        one_text(
            &mut c,
            &format!("SELECT holder_name FROM es.account_balances WHERE account_id = '{account}'")
        )
        .starts_with("es:enc:v1:")
    );
    assert_eq!(
        one_text(
            &mut c,
            &format!(
                "SELECT es.reveal(to_jsonb(holder_name)) #>> '{{}}' FROM es.account_balances WHERE account_id = '{account}'"
            )
        ),
        HOLDER
    );
    // forget both subjects in one transaction
    exec(
        &mut c,
        &format!(
            "BEGIN; SELECT es.forget('{account}'); SELECT es.forget('customer-{customer}'); COMMIT"
        ),
    );
    exec(&mut c, "CHECKPOINT");
    let wal_end = one_text(&mut c, "SELECT pg_current_wal_lsn()::text");
    exec(&mut c, "SELECT pg_switch_wal()");

    // reads: the balance history survives, the holder is erased, the other subject is readable
    let after: Vec<Option<String>> = texts(
        &mut c,
        &format!(
            "SELECT format('%s %s %s', version, amount_cents, balance_cents) FROM es.account_history('{account}') ORDER BY version"
        ),
    );
    assert_eq!(
        before, after,
        "the balance history changed with the erasure"
    );
    assert_eq!(
        texts(
            &mut c,
            &format!(
                "SELECT concat_ws(' ', es.account_state('{account}')->>'balance_cents', es.account_state('{account}')->'holder_name', es.account_state('{account}')->'_erased')"
            )
        ),
        vec![Some(r#"1201 null ["holder_name"]"#.to_owned())]
    );
    assert_eq!(
        texts(
            &mut c,
            &format!("SELECT data->>'email' FROM es.load_events('{other}')")
        ),
        vec![Some(KEPT.to_owned())]
    );
    // every table, read whole, as the owner (who holds every right)
    let rows = texts(
        &mut c,
        &format!(
            "SELECT string_agg(t, ' ') FROM (
               SELECT to_jsonb(e)::text AS t FROM es.events e
               UNION ALL SELECT to_jsonb(s)::text FROM es.streams s
               UNION ALL SELECT to_jsonb(s)::text FROM es.snapshots s
               UNION ALL SELECT to_jsonb(a)::text FROM es.data_audit a
               UNION ALL SELECT to_jsonb(b)::text FROM es.account_balances b
               UNION ALL SELECT to_jsonb(t)::text FROM es.account_transactions t
               UNION ALL SELECT to_jsonb(r)::text FROM es.load_events('{account}') r
               UNION ALL SELECT to_jsonb(r)::text FROM es.read_all(0, 1000) r
               UNION ALL SELECT to_jsonb(h)::text FROM es.account_history('{account}') h
               UNION ALL SELECT to_jsonb(h)::text FROM es.history('{account}') h) x"
        ),
    );
    let rows = rows.into_iter().flatten().collect::<String>();
    assert!(rows.contains("es:enc:v1:"), "no sealed value was stored");
    assert_no_cleartext("a table or a read", &rows);
    assert_eq!(
        one_text(&mut c, "SELECT count(*)::text FROM es.snapshots"),
        "1",
        "the automatic snapshot (interval 2) is part of what is checked"
    );

    // the relation files after the checkpoint
    let data_dir = std::path::PathBuf::from(one_text(&mut c, "SHOW data_directory"));
    let db_dir = data_dir.join("base").join(one_text(
        &mut c,
        "SELECT oid::text FROM pg_database WHERE datname = current_database()",
    ));
    for secret in [HOLDER, DESCRIPTION, STREET] {
        let found = files_containing(&db_dir, secret.as_bytes());
        assert!(found.is_empty(), "{secret:?} is in the files {found:?}");
    }
    assert!(
        !files_containing(&db_dir, PLAIN.as_bytes()).is_empty(),
        "the check of the files finds nothing at all (the value at no personal path must be there)"
    );

    // the WAL since before the appends: every segment's raw bytes, and pg_waldump's decoding
    for secret in [HOLDER, DESCRIPTION, STREET] {
        let found = files_containing(&data_dir.join("pg_wal"), secret.as_bytes());
        assert!(found.is_empty(), "{secret:?} is in the WAL files {found:?}");
    }
    let waldump = Command::new(pg_bin("pg_waldump"))
        .arg("--path")
        .arg(data_dir.join("pg_wal"))
        .arg("--start")
        .arg(&wal_start)
        .arg("--end")
        .arg(&wal_end)
        .output()
        .expect("cannot run pg_waldump");
    let decoded = String::from_utf8_lossy(&waldump.stdout);
    assert!(
        decoded.contains("Heap") && decoded.lines().count() > 10,
        "pg_waldump decoded nothing: {}",
        String::from_utf8_lossy(&waldump.stderr)
    );
    assert_no_cleartext("pg_waldump's output", &decoded);

    // logical decoding of every change since before the appends
    let changes = texts(
        &mut c,
        &format!("SELECT data FROM pg_logical_slot_get_changes('{slot}', NULL, NULL)"),
    )
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("\n");
    assert!(
        changes.contains("es:enc:v1:") && changes.contains("subject_keys"),
        "the slot decoded no sealed insert: {changes}"
    );
    assert_no_cleartext("logical decoding", &changes);
    exec(
        &mut c,
        &format!("SELECT pg_drop_replication_slot('{slot}')"),
    );

    // pg_dump's output
    let dump = Command::new(pg_bin("pg_dump"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(event_store_client_tests::port().to_string())
        .arg(db.name())
        .output()
        .expect("cannot run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("es:enc:v1:") && dump.contains(PLAIN));
    assert_no_cleartext("pg_dump's output", &dump);

    // the streaming standby, once it replayed the forget
    let mut s = standby.connect(db.name());
    standby.wait_for_replay(&mut c, &mut s);
    let on_standby = texts(
        &mut s,
        &format!(
            "SELECT string_agg(t, ' ') FROM (
               SELECT to_jsonb(e)::text AS t FROM es.events e
               UNION ALL SELECT to_jsonb(st)::text FROM es.streams st
               UNION ALL SELECT to_jsonb(r)::text FROM es.load_events('{account}') r
               UNION ALL SELECT es.account_state('{account}')::text) x"
        ),
    )
    .into_iter()
    .flatten()
    .collect::<String>();
    assert!(on_standby.contains("es:enc:v1:") && on_standby.contains("_erased"));
    assert_no_cleartext("the standby", &on_standby);
    drop(s);
    if let Err(e) = standby.stop() {
        eprintln!("warning: {e}");
    }
}

#[test]
fn appends_racing_forget_store_neither_cleartext_nor_unsealed_values() {
    let db = TestDb::new("crypto_race");
    let mut c = db.connect();
    define_paths(&mut c);
    let subject = "racer-1";
    const SECRET: &str = "Racing Person Name";
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut wc = db.connect();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let event = format!(
                        r#"{{"type":"Registered","email":"{SECRET} {w}/{i}","metadata":{{"data_subject":"{subject}"}}}}"#
                    );
                    append(&mut wc, Uuid::new_v4(), Some(0), &[event])
                        .unwrap_or_else(|e| panic!("writer {w}: {}", describe(&e)));
                }
            })
        })
        .collect();
    let mut fc = db.connect();
    let forgetter = std::thread::spawn(move || {
        let mut destroyed = 0;
        for _ in 0..60 {
            let done: bool = fc
                .query_one("SELECT es.forget($1)", &[&subject])
                .unwrap_or_else(|e| panic!("es.forget: {}", describe(&e)))
                .get(0);
            destroyed += i32::from(done);
            std::thread::sleep(Duration::from_millis(2));
        }
        destroyed
    });
    for w in writers {
        w.join().expect("a writer panicked");
    }
    let destroyed = forgetter.join().expect("the forgetter panicked");
    assert!(
        destroyed > 0,
        "no forget destroyed a key: the race did not happen"
    );
    // every stored value is a token; none is cleartext
    assert_eq!(
        texts(
            &mut c,
            "SELECT format('%s %s %s', count(*), count(*) FILTER (WHERE data->>'email' LIKE 'es:enc:v1:%'),
                           count(*) FILTER (WHERE data::text LIKE '%Racing Person%'))
               FROM es.events WHERE event_type = 'Registered'"
        ),
        vec![Some("160 160 0".to_owned())]
    );
    // every value either opens (sealed with a key made after the last forget that found one) or
    // reads as erased, and those that open hold what was appended
    let reads = texts(
        &mut c,
        "SELECT CASE WHEN r.data ? '_erased' THEN 'erased'
                     WHEN r.data->>'email' LIKE 'Racing Person Name %' THEN 'open'
                     ELSE 'wrong: ' || r.data::text END
           FROM es.events e, es.load_events(e.stream_id) r WHERE e.event_type = 'Registered'",
    );
    assert!(
        reads
            .iter()
            .all(|r| matches!(r.as_deref(), Some("erased" | "open"))),
        "{reads:?}"
    );
    // at most one key for the subject at any time
    assert!(
        one_text(
            &mut c,
            "SELECT count(*)::text FROM es.subject_keys WHERE subject = 'racer-1'"
        )
        .parse::<i32>()
        .unwrap_or(9)
            <= 1
    );
    assert_eq!(
        one_text(
            &mut c,
            "SELECT (count(*) FILTER (WHERE action = 'forget'))::text FROM es.data_audit"
        ),
        "60"
    );
}

#[test]
fn a_forget_killed_mid_transaction_leaves_all_or_nothing() {
    let db = TestDb::new("crypto_crash");
    let mut c = db.connect();
    define_paths(&mut c);
    let (kept, gone) = (Uuid::new_v4(), Uuid::new_v4());
    for s in [kept, gone] {
        append(
            &mut c,
            s,
            Some(0),
            &[format!(
                r#"{{"type":"Opened","account_holder":"{HOLDER}","initial_balance_cents":5}}"#
            )],
        )
        .unwrap_or_else(|e| panic!("Opened: {}", describe(&e)));
    }
    // committed before the crash: stays done
    exec(&mut c, &format!("SELECT es.forget('{gone}')"));
    // killed inside its transaction, after the key row is deleted and the audit row written
    let mut victim = db.connect();
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    exec(&mut victim, &format!("BEGIN; SELECT es.forget('{kept}')"));
    kill_9(pid);
    drop(victim);
    // The postmaster ends every session when a backend dies: once this one is gone too, the
    // crash restart is under way, and a new session cannot slip in before it and die in it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c.simple_query("SELECT 1").is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the postmaster did not react to the killed backend"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    let mut c = connect_with_retry(db.name(), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no reconnection after the crash: {}", describe(&e)));
    assert_eq!(
        texts(
            &mut c,
            "SELECT subject FROM es.subject_keys ORDER BY subject"
        ),
        vec![Some(kept.to_string())]
    );
    assert_eq!(
        texts(
            &mut c,
            "SELECT target FROM es.data_audit WHERE action = 'forget' ORDER BY id"
        ),
        vec![Some(gone.to_string())]
    );
    assert_eq!(
        texts(
            &mut c,
            &format!(
                "SELECT concat_ws(' ', es.account_state('{kept}')->>'holder_name', es.account_state('{gone}')->>'holder_name', es.account_state('{gone}')->'_erased')"
            )
        ),
        vec![Some(format!(r#"{HOLDER} ["holder_name"]"#))]
    );
}

#[test]
fn keys_kept_in_another_database_through_the_key_provider() {
    let db = TestDb::new("crypto_provider");
    let keys = TestDb::empty("crypto_keys");
    let mut k = keys.connect();
    exec(
        &mut k,
        "CREATE TABLE keys (key_id bigint PRIMARY KEY, key bytea NOT NULL)",
    );
    let mut c = db.connect();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        event_store_client_tests::port(),
        keys.name()
    );
    exec(&mut c, "CREATE EXTENSION dblink");
    exec(
        &mut c,
        &format!(
            r#"CREATE FUNCTION public.remote_keys(action text, key_id bigint, key bytea) RETURNS bytea
               LANGUAGE plpgsql SET search_path = public AS $f$
               DECLARE r bytea;
               BEGIN
                 IF action = 'put' THEN
                   PERFORM dblink_exec('{conninfo}', format('INSERT INTO keys VALUES (%s, %L)', key_id, key));
                   RETURN key;
                 ELSIF action = 'get' THEN
                   SELECT t.k INTO r FROM dblink('{conninfo}', format('SELECT key FROM keys WHERE key_id = %s', key_id)) AS t(k bytea);
                   RETURN r;
                 ELSIF action = 'forget' THEN
                   PERFORM dblink_exec('{conninfo}', format('DELETE FROM keys WHERE key_id = %s', key_id));
                   RETURN NULL;
                 END IF;
                 RAISE EXCEPTION 'unknown action %', action;
               END $f$"#
        ),
    );
    exec(
        &mut c,
        &format!(
            "ALTER DATABASE {} SET es.key_provider = 'public.remote_keys'",
            db.name()
        ),
    );
    drop(c);
    let mut c = db.connect();
    define_paths(&mut c);
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    for s in [first, second] {
        append(
            &mut c,
            s,
            Some(0),
            &[format!(
                r#"{{"type":"Opened","account_holder":"{HOLDER}","initial_balance_cents":5}}"#
            )],
        )
        .unwrap_or_else(|e| panic!("Opened with a key provider: {}", describe(&e)));
    }
    // the rows here keep no key; the key database has them
    assert_eq!(
        one_text(
            &mut c,
            "SELECT format('%s %s', count(*), count(key)) FROM es.subject_keys"
        ),
        "2 0"
    );
    let remote_hex = texts(
        &mut k,
        "SELECT encode(key, 'hex') FROM keys ORDER BY key_id",
    )
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    assert_eq!(remote_hex.len(), 2);
    assert!(remote_hex.iter().all(|h| h.len() == 64));
    assert_eq!(
        one_text(
            &mut c,
            &format!("SELECT es.account_state('{first}')->>'holder_name'")
        ),
        HOLDER
    );
    // this database's dump holds the ciphertext but no key
    let dump = Command::new(pg_bin("pg_dump"))
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(event_store_client_tests::port().to_string())
        .arg(db.name())
        .output()
        .expect("cannot run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("es:enc:v1:"));
    assert_no_cleartext("pg_dump's output", &dump);
    for hex in &remote_hex {
        assert!(!dump.contains(hex.as_str()), "the dump holds a key");
    }
    // forgetting destroys the key in the key database, and says so in the audit
    exec(&mut c, &format!("SELECT es.forget('{first}')"));
    assert_eq!(one_text(&mut k, "SELECT count(*)::text FROM keys"), "1");
    assert_eq!(
        one_text(
            &mut c,
            "SELECT detail->>'key_provider' FROM es.data_audit WHERE action = 'forget'"
        ),
        "public.remote_keys"
    );
    assert_eq!(
        one_text(
            &mut c,
            &format!("SELECT es.account_state('{first}')->>'_erased'")
        ),
        r#"["holder_name"]"#
    );
    // without the setting, a key kept by the provider can be neither read nor destroyed
    exec(&mut c, "SET es.key_provider = ''");
    assert_eq!(
        one_text(
            &mut c,
            &format!("SELECT es.account_state('{second}')->>'_erased'")
        ),
        r#"["holder_name"]"#
    );
    let refused = c
        .query_one("SELECT es.forget($1)", &[&second.to_string()])
        .expect_err("a forget without the provider must fail");
    assert_eq!(event_store_client_tests::sqlstate(&refused), Some("55000"));
    exec(&mut c, "RESET es.key_provider");
    assert_eq!(
        one_text(
            &mut c,
            &format!("SELECT es.account_state('{second}')->>'holder_name'")
        ),
        HOLDER
    );
    exec(&mut c, &format!("SELECT es.forget('{second}')"));
    assert_eq!(one_text(&mut k, "SELECT count(*)::text FROM keys"), "0");
}
