//! Concurrent withdrawals from one account (docs/reference.md §5): 8 connections withdraw random amounts
//! with no explicit expected version until the account is drained. They must serialize on the
//! account: none may fail with ES001, only ES101 (insufficient funds) refuses, the balance is
//! never negative at any version, and the final balance is the initial one minus the sum of the
//! Withdrawn events. Half of the connections use `es.withdraw`, the other half write the
//! `Withdrawn` event with `es.append_events` (NULL expected version): the rules hold on both paths.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use event_store_client_tests::{TestDb, Uuid, describe, sqlstate, verify_store};
use rand::Rng;

const CONNECTIONS: usize = 8;
const INITIAL: i64 = 200_000;

#[test]
fn eight_connections_drain_one_account_without_overdraft() {
    let db = TestDb::new("withdrawals");
    let mut setup = db.connect();
    setup
        .batch_execute("SET es.snapshot_interval = 50")
        .expect("SET");
    let account: Uuid = setup
        .query_one("SELECT es.open_account('Drained', $1)", &[&INITIAL])
        .unwrap_or_else(|e| panic!("open_account: {}", describe(&e)))
        .get(0);

    let start = Barrier::new(CONNECTIONS);
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcomes: Vec<(i64, u64, Vec<String>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|worker| {
                let mut client = db.connect();
                client.batch_execute("SET es.snapshot_interval = 50").expect("SET");
                let start = &start;
                scope.spawn(move || {
                    let mut rng = rand::rng();
                    let (mut withdrawn, mut refused, mut errors) = (0i64, 0u64, Vec::new());
                    start.wait();
                    while Instant::now() < deadline {
                        let amount: i64 = rng.random_range(1..=2_000);
                        let sql = if worker % 2 == 0 {
                            "SELECT es.withdraw($1, $2, 'draining')"
                        } else {
                            "SELECT es.append_events($1, NULL, ARRAY[jsonb_build_object(
                               'type', 'Withdrawn', 'amount_cents', $2::bigint, 'description', 'direct')])"
                        };
                        match client.query_one(sql, &[&account, &amount]) {
                            Ok(_) => withdrawn += amount,
                            Err(e) if sqlstate(&e) == Some("ES101") => {
                                refused += 1;
                                let balance: i64 = client
                                    .query_one(
                                        "SELECT (es.account_replay(data ORDER BY version)->>'balance_cents')::bigint \
                                         FROM es.events WHERE stream_id = $1",
                                        &[&account],
                                    )
                                    .expect("replay")
                                    .get(0);
                                if balance == 0 {
                                    break;
                                }
                            }
                            Err(e) => {
                                errors.push(describe(&e));
                                break;
                            }
                        }
                    }
                    (withdrawn, refused, errors)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });

    let errors: Vec<&String> = outcomes.iter().flat_map(|o| o.2.iter()).collect();
    assert!(
        errors.is_empty(),
        "withdrawals may only fail with ES101, got: {errors:#?}"
    );
    let withdrawn: i64 = outcomes.iter().map(|o| o.0).sum();
    let refused: u64 = outcomes.iter().map(|o| o.1).sum();
    eprintln!("withdrew {withdrawn} of {INITIAL} cents, {refused} ES101 refusals");

    let mut client = db.connect();
    // The running balance, at every version, never goes below zero.
    let min_balance: i64 = client
        .query_one(
            "SELECT min(b) FROM (SELECT ((es.account_replay(data) OVER (ORDER BY version))->>'balance_cents')::bigint AS b \
             FROM es.events WHERE stream_id = $1) r",
            &[&account],
        )
        .expect("running balance")
        .get(0);
    assert!(min_balance >= 0, "the balance went negative: {min_balance}");
    let (final_balance, sum_withdrawn): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (es.account_replay(data ORDER BY version)->>'balance_cents')::bigint, \
                        coalesce(sum((data->>'amount_cents')::bigint) FILTER (WHERE data->>'type' = 'Withdrawn'), 0)::bigint \
                 FROM es.events WHERE stream_id = $1",
                &[&account],
            )
            .expect("final state");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        sum_withdrawn, withdrawn,
        "stored withdrawals must be exactly the successful ones"
    );
    assert_eq!(
        final_balance,
        INITIAL - sum_withdrawn,
        "final balance = initial - withdrawn"
    );
    // es.account_state (newest snapshot + tail) equals the full replay.
    let state_agrees: bool = client
        .query_one(
            "SELECT es.account_state($1) = (SELECT es.account_replay(data ORDER BY version) \
             FROM es.events WHERE stream_id = $1)",
            &[&account],
        )
        .expect("account_state")
        .get(0);
    assert!(state_agrees, "es.account_state disagrees with the replay");
    // Every automatic snapshot agrees with a replay up to its version.
    let bad_snapshots: i64 = client
        .query_one(
            "SELECT count(*) FROM es.snapshots s WHERE s.stream_id = $1 AND s.state <> \
             (SELECT es.account_replay(e.data ORDER BY e.version) FROM es.events e \
              WHERE e.stream_id = s.stream_id AND e.version <= s.version)",
            &[&account],
        )
        .expect("snapshots")
        .get(0);
    assert_eq!(
        bad_snapshots, 0,
        "an automatic snapshot disagrees with the replay"
    );
    verify_store(&mut client);
}
