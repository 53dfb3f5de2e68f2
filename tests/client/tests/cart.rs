//! The shopping cart of `examples/cart.sql`, an aggregate defined in PL/pgSQL
//! (`es.define_aggregate`), through the typed client's [`Aggregate`] and through plain SQL.
//!
//! - `typed_and_plain_sql_appends_fold_alike`: events appended by `append_to::<Cart>` and by
//!   plain `es.append_events` (naming the type, or typed by `es.stream_type_rules`) decode alike
//!   with `load::<Cart>`; `state::<Cart>` (the database's fold) equals the client's fold, also
//!   at each version (`state_at`); the script runs again (`psql -f`) over stored carts, which
//!   stay carts, their states the same, their rules still enforced.
//! - `a_version_1_item_added_is_read_upcast`: a stored version-1 `ItemAdded` (`"qty"`) is kept as
//!   written and read as version 2 (`"quantity"`) through the script's upcaster.
//! - `every_rule_refuses_with_the_domains_sqlstate`: CT001..CT006 arrive typed
//!   (`EventStoreError::Domain` with the check's message, DETAIL, HINT) and store nothing of the
//!   batch; ES301 (an evolve returning NULL), ES302 (another type) and ES303 (a generic
//!   stream's state) arrive typed too.
//! - `eight_writers_never_fill_a_cart_past_20`: 8 connections add items to one cart with no
//!   expected version until each has been refused `CT005` at least once (a refused writer
//!   removes its own line, so the cart stays at its limit under contention); every refusal's
//!   DETAIL names a count the log really had and no room for the item; replaying the log, the
//!   cart never holds more than 20 items after any event, and `es.state` agrees with the fold.
//!
//! Stream ids are fixed (`Uuid::from_u128`); the race's quantities are a fixed sequence per
//! writer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use event_store_client::{Aggregate, EventStoreClient, EventStoreError};
use event_store_client_tests::{
    PG_USER, TestDb, Uuid, describe, host, port, repo_dir, run_client_program, sqlstate,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

/// The cart's events, as `examples/cart.sql` documents them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum CartEvent {
    CartOpened {
        customer: String,
    },
    ItemAdded {
        sku: String,
        quantity: i64,
        unit_price_cents: i64,
    },
    ItemRemoved {
        sku: String,
    },
    CheckedOut,
}

/// A cart's status (`"empty"` before `CartOpened`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Empty,
    Open,
    CheckedOut,
}

/// One line of the cart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Line {
    quantity: i64,
    unit_price_cents: i64,
}

/// The state `cart.evolve` keeps; `customer` and `item_count` are not in the initial state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct CartState {
    #[serde(default)]
    customer: Option<String>,
    status: Status,
    items: BTreeMap<String, Line>,
    #[serde(default)]
    item_count: i64,
    total_cents: i64,
}

/// The cart aggregate: `apply` is the Rust twin of `cart.evolve`.
struct Cart;

impl Aggregate for Cart {
    const STREAM_TYPE: &'static str = "cart";
    type Event = CartEvent;
    type State = CartState;

    fn initial() -> CartState {
        // define_aggregate's initial state: {"status":"empty","items":{},"total_cents":0}
        CartState {
            customer: None,
            status: Status::Empty,
            items: BTreeMap::new(),
            item_count: 0,
            total_cents: 0,
        }
    }

    fn apply(state: &mut CartState, event: &CartEvent) {
        match event {
            CartEvent::CartOpened { customer } => {
                state.customer = Some(customer.clone());
                state.status = Status::Open;
            }
            CartEvent::ItemAdded {
                sku,
                quantity,
                unit_price_cents,
            } => {
                let line = state.items.entry(sku.clone()).or_insert(Line {
                    quantity: 0,
                    unit_price_cents: 0,
                });
                // The line takes the newest price.
                state.total_cents += (line.quantity + quantity) * unit_price_cents
                    - line.quantity * line.unit_price_cents;
                line.quantity += quantity;
                line.unit_price_cents = *unit_price_cents;
                state.item_count += quantity;
            }
            CartEvent::ItemRemoved { sku } => {
                if let Some(line) = state.items.remove(sku) {
                    state.item_count -= line.quantity;
                    state.total_cents -= line.quantity * line.unit_price_cents;
                }
            }
            CartEvent::CheckedOut => state.status = Status::CheckedOut,
        }
    }

    fn event_version(event: &CartEvent) -> i32 {
        // Version 1 of ItemAdded had "qty"; the database upcasts stored ones.
        match event {
            CartEvent::ItemAdded { .. } => 2,
            _ => 1,
        }
    }
}

/// Another aggregate type, to append to a cart under the wrong type (ES302).
struct Note;

impl Aggregate for Note {
    const STREAM_TYPE: &'static str = "account";
    type Event = Value;
    type State = Value;

    fn initial() -> Value {
        json!({})
    }

    fn apply(_: &mut Value, _: &Value) {}
}

/// A type whose evolve returns NULL (ES301), defined by the test.
struct Broken;

impl Aggregate for Broken {
    const STREAM_TYPE: &'static str = "broken";
    type Event = Value;
    type State = Value;

    fn initial() -> Value {
        json!({})
    }

    fn apply(_: &mut Value, _: &Value) {}
}

/// The cart's limit of items (`cart.check`, CT005).
const LIMIT: i64 = 20;

fn opened(customer: &str) -> CartEvent {
    CartEvent::CartOpened {
        customer: customer.into(),
    }
}

fn added(sku: &str, quantity: i64, unit_price_cents: i64) -> CartEvent {
    CartEvent::ItemAdded {
        sku: sku.into(),
        quantity,
        unit_price_cents,
    }
}

fn removed(sku: &str) -> CartEvent {
    CartEvent::ItemRemoved { sku: sku.into() }
}

/// A runtime for the typed client's futures. Multi-threaded: its workers drive the
/// connections' sockets, so several threads can each `block_on` their own writer at once.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A typed client of `db` on its own pool of at most `connections` connections, made in `rt`.
fn typed_client(rt: &tokio::runtime::Runtime, db: &TestDb, connections: u32) -> EventStoreClient {
    let _in_runtime = rt.enter();
    let host = host();
    let url = if host.starts_with('/') {
        format!(
            "postgres://{PG_USER}@localhost:{}/{}?host={host}",
            port(),
            db.name()
        )
    } else {
        format!("postgres://{PG_USER}@{host}:{}/{}", port(), db.name())
    };
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_lazy(&url)
        .unwrap_or_else(|e| panic!("a pool on {url}: {e}"));
    EventStoreClient::new(pool)
}

/// Runs `examples/cart.sql` in `db` as a user would, with `psql -f`.
fn load_script(db: &TestDb) {
    let script = repo_dir().join("examples/cart.sql");
    let script = script.to_str().expect("a UTF-8 path");
    run_client_program(
        "psql",
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db.name(),
            "-f",
            script,
        ],
    );
}

/// A test database with the extension and `examples/cart.sql` loaded.
fn cart_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    load_script(&db);
    db
}

/// `es.append_events(stream, NULL, events, stream_type)` from plain SQL, on a plain connection.
fn append_sql(
    client: &mut postgres::Client,
    stream: Uuid,
    events: &[Value],
    stream_type: Option<&str>,
) -> Result<i64, postgres::Error> {
    let texts: Vec<String> = events.iter().map(Value::to_string).collect();
    client
        .query_one(
            "SELECT es.append_events($1, NULL, $2::text[]::jsonb[], $3)",
            &[&stream, &texts, &stream_type],
        )
        .map(|row| row.get(0))
}

/// The domain error's parts, or a panic naming what came instead.
fn domain(
    result: Result<i64, EventStoreError>,
) -> (String, String, Option<String>, Option<String>) {
    match result {
        Err(EventStoreError::Domain {
            code,
            message,
            detail,
            hint,
        }) => (code, message, detail, hint),
        other => panic!("expected a domain refusal, got {other:?}"),
    }
}

#[test]
fn typed_and_plain_sql_appends_fold_alike() {
    let db = cart_db("cart_fold");
    let mut sql = db.connect();
    let rt = runtime();
    let client = typed_client(&rt, &db, 2);
    let cart = Uuid::from_u128(0xca27_0001);

    // The typed client: a new stream (expected 0) named a cart by its first append.
    let v = rt
        .block_on(client.append_to::<Cart>(cart, Some(0), &[opened("alice")]))
        .unwrap();
    assert_eq!(v, 1);
    let v = rt
        .block_on(client.append_to::<Cart>(
            cart,
            Some(1),
            &[added("BOOK-42", 2, 1_999), added("PEN-1", 5, 150)],
        ))
        .unwrap();
    assert_eq!(v, 3);
    // Plain SQL: the same JSON, written by hand; the stream's type is already known.
    let v = append_sql(
        &mut sql,
        cart,
        &[json!({"type": "ItemAdded", "sku": "BOOK-42", "quantity": 1,
                 "unit_price_cents": 2_499, "event_version": 2})],
        None,
    )
    .unwrap_or_else(|e| panic!("plain append: {}", describe(&e)));
    assert_eq!(v, 4);
    let v = append_sql(
        &mut sql,
        cart,
        &[json!({"type": "ItemRemoved", "sku": "PEN-1"})],
        Some("cart"),
    )
    .unwrap_or_else(|e| panic!("plain append naming the type: {}", describe(&e)));
    assert_eq!(v, 5);

    let history = vec![
        opened("alice"),
        added("BOOK-42", 2, 1_999),
        added("PEN-1", 5, 150),
        added("BOOK-42", 1, 2_499),
        removed("PEN-1"),
    ];
    assert_eq!(rt.block_on(client.load::<Cart>(cart)).unwrap(), history);
    let server = rt.block_on(client.state::<Cart>(cart)).unwrap();
    let (folded, version) = rt.block_on(client.fold::<Cart>(cart)).unwrap();
    assert_eq!(version, 5);
    assert_eq!(server, folded, "es.state and the client's fold differ");
    assert_eq!(folded, Cart::fold(&history));
    // The values themselves: BOOK-42 is 3 at the newest price, PEN-1 is gone.
    assert_eq!(server.status, Status::Open);
    assert_eq!(server.customer.as_deref(), Some("alice"));
    assert_eq!(server.item_count, 3);
    assert_eq!(server.total_cents, 3 * 2_499);
    assert_eq!(
        server.items.keys().collect::<Vec<_>>(),
        vec!["BOOK-42"],
        "{server:?}"
    );
    for at in 1..=5 {
        assert_eq!(
            rt.block_on(client.state_at::<Cart>(cart, at)).unwrap(),
            Cart::fold(&history[..at as usize]),
            "es.state at version {at}"
        );
    }

    // A cart begun from plain SQL without naming the type: its first event is CartOpened, which
    // the script's es.stream_type_rules row makes a cart.
    let other = Uuid::from_u128(0xca27_0002);
    append_sql(
        &mut sql,
        other,
        &[
            json!({"type": "CartOpened", "customer": "bob"}),
            json!({"type": "ItemAdded", "sku": "MUG", "quantity": 4, "unit_price_cents": 800,
                   "event_version": 2}),
            json!({"type": "CheckedOut"}),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("plain append of a new cart: {}", describe(&e)));
    let stream_type: Option<String> = sql
        .query_one(
            "SELECT stream_type FROM es.streams WHERE stream_id = $1",
            &[&other],
        )
        .unwrap_or_else(|e| panic!("{}", describe(&e)))
        .get(0);
    assert_eq!(stream_type.as_deref(), Some("cart"));
    let events = rt.block_on(client.load::<Cart>(other)).unwrap();
    assert_eq!(
        events,
        vec![opened("bob"), added("MUG", 4, 800), CartEvent::CheckedOut]
    );
    let state = rt.block_on(client.state::<Cart>(other)).unwrap();
    assert_eq!(state, Cart::fold(&events));
    assert_eq!(
        (state.status, state.item_count, state.total_cents),
        (Status::CheckedOut, 4, 3_200)
    );

    // The script again, over stored carts: they stay carts with the same states, and the
    // rules still hold (a checked-out cart refuses, an open one takes items).
    load_script(&db);
    let types = sql
        .query(
            "SELECT stream_type FROM es.streams WHERE stream_id = ANY($1) ORDER BY stream_id",
            &[&vec![cart, other]],
        )
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let types: Vec<Option<String>> = types.iter().map(|r| r.get(0)).collect();
    assert_eq!(types, vec![Some("cart".to_owned()); 2], "after the rerun");
    assert_eq!(rt.block_on(client.state::<Cart>(cart)).unwrap(), server);
    assert_eq!(rt.block_on(client.state::<Cart>(other)).unwrap(), state);
    let (code, ..) =
        domain(rt.block_on(client.append_to::<Cart>(other, None, &[added("MUG", 1, 800)])));
    assert_eq!(code, "CT001");
    let v = rt
        .block_on(client.append_to::<Cart>(cart, Some(5), &[added("PEN-1", 1, 150)]))
        .unwrap();
    assert_eq!(v, 6);
    let (folded, _) = rt.block_on(client.fold::<Cart>(cart)).unwrap();
    assert_eq!(rt.block_on(client.state::<Cart>(cart)).unwrap(), folded);
    assert_eq!(
        (folded.item_count, folded.total_cents),
        (4, 3 * 2_499 + 150)
    );
}

#[test]
fn a_version_1_item_added_is_read_upcast() {
    let db = cart_db("cart_upcast");
    let mut sql = db.connect();
    let rt = runtime();
    let client = typed_client(&rt, &db, 1);
    // A version-1 ItemAdded ("qty", no event_version), as an old writer sent it.
    let old = Uuid::from_u128(0xca27_0003);
    append_sql(
        &mut sql,
        old,
        &[
            json!({"type": "CartOpened", "customer": "carol"}),
            json!({"type": "ItemAdded", "sku": "LAMP", "qty": 2, "unit_price_cents": 4_500}),
        ],
        Some("cart"),
    )
    .unwrap_or_else(|e| panic!("plain append of a version-1 ItemAdded: {}", describe(&e)));
    // Stored as written.
    let stored = sql
        .query_one(
            "SELECT data::text, event_version FROM es.events WHERE stream_id = $1 AND version = 2",
            &[&old],
        )
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let (data, event_version): (String, i32) = (stored.get(0), stored.get(1));
    assert_eq!(event_version, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap(),
        json!({"type": "ItemAdded", "sku": "LAMP", "qty": 2, "unit_price_cents": 4_500}),
        "the stored row changed"
    );
    // Read as version 2, and folded as such by both sides.
    let events = rt.block_on(client.load::<Cart>(old)).unwrap();
    assert_eq!(events, vec![opened("carol"), added("LAMP", 2, 4_500)]);
    let state = rt.block_on(client.state::<Cart>(old)).unwrap();
    assert_eq!(state, Cart::fold(&events));
    assert_eq!((state.item_count, state.total_cents), (2, 9_000));
}

#[test]
fn every_rule_refuses_with_the_domains_sqlstate() {
    let db = cart_db("cart_rules");
    let mut sql = db.connect();
    let rt = runtime();
    let client = typed_client(&rt, &db, 2);
    let cart = Uuid::from_u128(0xca27_0101);
    let version = |stream| rt.block_on(client.stream_version(stream)).unwrap();

    // CT001: anything but CartOpened on a new cart; nothing is stored, not even the stream.
    let (code, message, detail, _) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[added("A", 1, 100)])));
    assert_eq!(code, "CT001");
    assert!(message.contains("not open"), "{message}");
    assert_eq!(detail.as_deref(), Some("status: empty"));
    assert_eq!(version(cart), 0);

    rt.block_on(client.append_to::<Cart>(cart, Some(0), &[opened("dave")]))
        .unwrap();
    // CT001: CartOpened twice.
    let (code, _, detail, _) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[opened("eve")])));
    assert_eq!(
        (code.as_str(), detail.as_deref()),
        ("CT001", Some("status: open"))
    );

    // CT002: a quantity or price that is not a whole number from 1, or missing.
    let (code, message, detail, _) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[added("A", 0, 100)])));
    assert_eq!(code, "CT002");
    assert!(message.contains("\"quantity\""), "{message}");
    assert_eq!(detail.as_deref(), Some("sku: A, quantity: 0"));
    let (code, _, detail, _) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[added("A", 1, -5)])));
    assert_eq!(code, "CT002");
    assert_eq!(detail.as_deref(), Some("sku: A, unit_price_cents: -5"));
    for bad in [
        json!({"type": "ItemAdded", "sku": "A", "unit_price_cents": 100, "event_version": 2}),
        json!({"type": "ItemAdded", "sku": "A", "quantity": "2", "unit_price_cents": 100,
               "event_version": 2}),
        json!({"type": "ItemAdded", "sku": "A", "quantity": 1.5, "unit_price_cents": 100,
               "event_version": 2}),
        json!({"type": "ItemAdded", "quantity": 1, "unit_price_cents": 100, "event_version": 2}),
    ] {
        let (code, ..) = domain(rt.block_on(client.append_json(cart, None, vec![bad.clone()])));
        assert_eq!(code, "CT002", "{bad}");
    }

    // CT003: removing what is not in the cart.
    let (code, message, detail, _) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[removed("NOPE")])));
    assert_eq!(code, "CT003");
    assert!(message.contains("NOPE"), "{message}");
    assert_eq!(detail.as_deref(), Some("sku: NOPE"));

    // CT004: checking out an empty cart.
    let (code, _, _, hint) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[CartEvent::CheckedOut])));
    assert_eq!(code, "CT004");
    assert_eq!(hint.as_deref(), Some("add an item first"));

    // CT005: past 20 items, alone or within a batch: the whole batch is refused, and the
    // check judges each event against the state the batch's earlier events give.
    let (code, message, detail, hint) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[added("A", 21, 100)])));
    assert_eq!(code, "CT005");
    assert!(message.starts_with("the cart is full"), "{message}");
    assert_eq!(detail.as_deref(), Some("items: 0, adding: 21, limit: 20"));
    assert_eq!(hint.as_deref(), Some("remove items or check out first"));
    assert_eq!(version(cart), 1);
    let (code, _, detail, _) = domain(rt.block_on(client.append_to::<Cart>(
        cart,
        Some(1),
        &[added("A", 15, 100), added("B", 6, 100)],
    )));
    assert_eq!(
        (code.as_str(), detail.as_deref()),
        ("CT005", Some("items: 15, adding: 6, limit: 20"))
    );
    assert_eq!(version(cart), 1, "a refused batch stored something");
    // Exactly 20 is allowed.
    let v = rt
        .block_on(client.append_to::<Cart>(
            cart,
            Some(1),
            &[added("A", 15, 100), added("B", 5, 100)],
        ))
        .unwrap();
    assert_eq!(v, 3);
    assert_eq!(
        rt.block_on(client.state::<Cart>(cart)).unwrap().item_count,
        LIMIT
    );

    // CT006: an event type a cart does not have, from the typed client's JSON path and from
    // plain SQL (where the SQLSTATE is all a driver sees).
    let (code, message, _, _) = domain(rt.block_on(client.append_json(
        cart,
        None,
        vec![json!({"type": "Paid", "amount": 5})],
    )));
    assert_eq!(code, "CT006");
    assert!(message.contains("Paid"), "{message}");
    let err = append_sql(&mut sql, cart, &[json!({"type": "Paid"})], None).unwrap_err();
    assert_eq!(sqlstate(&err), Some("CT006"), "{}", describe(&err));

    // After CheckedOut, nothing: CT001.
    rt.block_on(client.append_to::<Cart>(cart, Some(3), &[CartEvent::CheckedOut]))
        .unwrap();
    let (code, _, detail, _) =
        domain(rt.block_on(client.append_to::<Cart>(cart, None, &[removed("A")])));
    assert_eq!(
        (code.as_str(), detail.as_deref()),
        ("CT001", Some("status: checked_out"))
    );
    assert_eq!(version(cart), 4);

    // ES302: the cart under another type.
    match rt.block_on(client.append_to::<Note>(cart, None, &[json!({"type": "Note"})])) {
        Err(
            ref err @ EventStoreError::StreamTypeConflict {
                ref stream_type,
                ref named,
                ..
            },
        ) => {
            assert_eq!(
                (stream_type.as_deref(), named.as_str()),
                (Some("cart"), "account")
            );
            assert_eq!(err.sqlstate(), Some("ES302"));
        }
        other => panic!("expected ES302, got {other:?}"),
    }
    // ES303: a generic stream (no type named, no rule for its first event) has no state.
    let generic = Uuid::from_u128(0xca27_0102);
    rt.block_on(client.append_json(generic, Some(0), vec![json!({"type": "Note"})]))
        .unwrap();
    match rt.block_on(client.state::<Cart>(generic)) {
        Err(err @ EventStoreError::NoAggregateType { .. }) => {
            assert_eq!(err.sqlstate(), Some("ES303"))
        }
        other => panic!("expected ES303, got {other:?}"),
    }
    assert_eq!(version(cart), 4);

    // ES301: a type whose evolve returns NULL; nothing is stored.
    sql.batch_execute(
        "CREATE FUNCTION public.null_evolve(state jsonb, event jsonb) RETURNS jsonb \
             LANGUAGE sql IMMUTABLE AS 'SELECT NULL::jsonb'; \
             SELECT es.define_aggregate('broken', 'public.null_evolve(jsonb,jsonb)')",
    )
    .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let broken = Uuid::from_u128(0xca27_0103);
    match rt.block_on(client.append_to::<Broken>(broken, Some(0), &[json!({"type": "Any"})])) {
        Err(ref err @ EventStoreError::InvalidAggregate { ref message, .. }) => {
            assert_eq!(err.sqlstate(), Some("ES301"));
            assert!(message.contains("public.null_evolve"), "{message}");
            assert!(message.contains("version 1"), "{message}");
        }
        other => panic!("expected ES301, got {other:?}"),
    }
    assert_eq!(version(broken), 0);
}

/// Writers racing on one cart.
const WRITERS: usize = 8;
/// Appends each writer makes at least, after which it stops once every writer has been
/// refused `CT005` (so the cart sits at its limit under contention for a while).
const MIN_ATTEMPTS: usize = 60;
/// How long the race may take before the test fails instead of hanging.
const RACE_LIMIT: Duration = Duration::from_secs(120);

/// What one racing writer saw.
#[derive(Debug, Default)]
struct Tally {
    /// Events it appended (each append is one event).
    stored: usize,
    /// `(items, adding)` from the DETAIL of each `CT005` refusal.
    full: Vec<(i64, i64)>,
    /// Anything else (the writer stops at the first).
    errors: Vec<String>,
}

/// `items: I, adding: A, limit: 20` (cart.check's CT005 DETAIL).
fn full_detail(detail: Option<&str>) -> Option<(i64, i64)> {
    let rest = detail?.strip_prefix("items: ")?;
    let (items, rest) = rest.split_once(", adding: ")?;
    let (adding, limit) = rest.split_once(", limit: ")?;
    (limit == LIMIT.to_string()).then_some(())?;
    Some((items.parse().ok()?, adding.parse().ok()?))
}

#[test]
fn eight_writers_never_fill_a_cart_past_20() {
    let db = cart_db("cart_race");
    let cart = Uuid::from_u128(0xca27_0201);
    let rt = runtime();
    let setup = typed_client(&rt, &db, 1);
    rt.block_on(setup.append_to::<Cart>(cart, Some(0), &[opened("race")]))
        .unwrap();

    // One client and one connection per writer, connected before the start.
    let writers: Vec<EventStoreClient> = (0..WRITERS)
        .map(|_| {
            let client = typed_client(&rt, &db, 1);
            rt.block_on(client.stream_version(cart)).unwrap();
            client
        })
        .collect();
    let start = Barrier::new(WRITERS);
    let refused_writers = AtomicUsize::new(0);
    let deadline = Instant::now() + RACE_LIMIT;
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let handles: Vec<_> = writers
            .into_iter()
            .enumerate()
            .map(|(w, client)| {
                let (start, refused_writers, rt) = (&start, &refused_writers, &rt);
                scope.spawn(move || {
                    let sku = format!("W{w}");
                    let mut tally = Tally::default();
                    let mut line = false;
                    start.wait();
                    for attempt in 0.. {
                        let everyone_refused = refused_writers.load(Ordering::SeqCst) == WRITERS;
                        if (attempt >= MIN_ATTEMPTS && everyone_refused)
                            || Instant::now() > deadline
                        {
                            break;
                        }
                        // Quantities 1..=3 in a fixed sequence per writer.
                        let quantity = ((w + attempt) % 3 + 1) as i64;
                        let event = added(&sku, quantity, 100 + w as i64);
                        match rt.block_on(client.append_to::<Cart>(cart, None, &[event])) {
                            Ok(_) => {
                                tally.stored += 1;
                                line = true;
                            }
                            Err(EventStoreError::Domain { code, detail, .. })
                                if code == "CT005" =>
                            {
                                let Some(values) = full_detail(detail.as_deref()) else {
                                    tally.errors.push(format!("CT005 DETAIL {detail:?}"));
                                    break;
                                };
                                if tally.full.is_empty() {
                                    refused_writers.fetch_add(1, Ordering::SeqCst);
                                }
                                tally.full.push(values);
                                // Make room again: only this writer touches its own line.
                                if line {
                                    match rt.block_on(client.append_to::<Cart>(
                                        cart,
                                        None,
                                        &[removed(&sku)],
                                    )) {
                                        Ok(_) => {
                                            tally.stored += 1;
                                            line = false;
                                        }
                                        Err(err) => {
                                            tally.errors.push(format!("ItemRemoved: {err:?}"));
                                            break;
                                        }
                                    }
                                }
                            }
                            Err(err) => {
                                tally.errors.push(format!("ItemAdded: {err:?}"));
                                break;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer panicked"))
            .collect()
    });

    for (w, tally) in tallies.iter().enumerate() {
        assert!(tally.errors.is_empty(), "writer {w}: {:?}", tally.errors);
        assert!(
            !tally.full.is_empty(),
            "writer {w} was never refused CT005 within {RACE_LIMIT:?}: {tally:?}"
        );
    }

    // The log, replayed by hand from the raw rows (not through the client or the cart's
    // fold): after every event the cart holds at most 20 items.
    let mut sql = db.connect();
    let rows = sql
        .query(
            "SELECT version, data::text FROM es.events WHERE stream_id = $1 ORDER BY version",
            &[&cart],
        )
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    let stored: usize = tallies.iter().map(|t| t.stored).sum();
    assert_eq!(
        rows.len(),
        stored + 1,
        "events stored vs appends that succeeded"
    );
    let mut lines: BTreeMap<String, i64> = BTreeMap::new();
    let mut count = 0_i64;
    let mut counts_seen = BTreeSet::from([0_i64]);
    let mut events = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let version: i64 = row.get(0);
        assert_eq!(version, i as i64 + 1, "versions are gapless");
        let data: Value = serde_json::from_str(row.get::<_, &str>(1)).unwrap();
        let sku = data["sku"].as_str().unwrap_or_default().to_owned();
        match data["type"].as_str() {
            Some("CartOpened") => assert_eq!(version, 1),
            Some("ItemAdded") => {
                let quantity = data["quantity"].as_i64().expect("a quantity");
                *lines.entry(sku).or_default() += quantity;
                count += quantity;
            }
            Some("ItemRemoved") => {
                let line = lines.remove(&sku);
                assert!(
                    line.is_some(),
                    "version {version} removes {sku}, not in the cart"
                );
                count -= line.unwrap_or(0);
            }
            other => panic!("version {version}: unexpected event {other:?}"),
        }
        assert!(
            count <= LIMIT,
            "after version {version} the cart holds {count} items (limit {LIMIT})"
        );
        counts_seen.insert(count);
        events.push(serde_json::from_value::<CartEvent>(data).unwrap());
    }

    // Each refusal was right: it saw a count the cart really had, with no room for the item.
    let refusals: Vec<(i64, i64)> = tallies.iter().flat_map(|t| t.full.clone()).collect();
    for &(items, adding) in &refusals {
        assert!(
            items + adding > LIMIT,
            "CT005 with room: {items} + {adding}"
        );
        assert!(
            counts_seen.contains(&items),
            "CT005 saw {items} items, a count the log never had ({counts_seen:?})"
        );
    }
    eprintln!(
        "race: {} events, {} CT005 refusals, counts seen {:?}",
        rows.len(),
        refusals.len(),
        counts_seen
    );

    // The database's state is the fold of that log, and the hand count.
    let state = rt.block_on(setup.state::<Cart>(cart)).unwrap();
    assert_eq!(state, Cart::fold(&events));
    assert_eq!(state.item_count, count);
    let (folded, version) = rt.block_on(setup.fold::<Cart>(cart)).unwrap();
    assert_eq!((folded, version), (state, rows.len() as i64));
}
