//! Tracing end to end (SPEC §7): spans exported by the background worker over OTLP/HTTP arrive
//! at a real receiver that decodes the official protobuf, with the seed's names and attributes,
//! parent/child links and the client's trace id (from `SET es.traceparent` and from a
//! sqlcommenter comment); failures, a dead or black-holing collector, a full buffer and a
//! reload of the endpoint behave as specified. Runs on its own throwaway cluster
//! (`otlp::TraceCluster`), restarted per test with the settings the test needs.

use event_store_client_tests::Uuid;
use event_store_client_tests::otlp::{
    Receiver, TraceCluster, client_ids, named, stats, wait_until,
};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RECEIVER: &str = env!("CARGO_BIN_EXE_otlp_receiver");

fn conf(endpoint: &str, extra: &str) -> String {
    format!(
        "es.otlp_endpoint = '{endpoint}'\nes.otlp_interval = 100\nes.otlp_timeout = 1000\n{extra}"
    )
}

/// `child` lies within `parent` in time.
fn within(child: &Value, parent: &Value) {
    let t = |s: &Value, k: &str| s[k].as_u64().unwrap();
    assert!(
        t(child, "start_ns") >= t(parent, "start_ns")
            && t(child, "end_ns") <= t(parent, "end_ns")
            && t(child, "start_ns") <= t(child, "end_ns"),
        "{} lies within {}",
        child["name"],
        parent["name"]
    );
}

fn append_sql() -> &'static str {
    "SELECT es.append_events($1, NULL, ARRAY['{\"type\":\"ItemAdded\"}']::jsonb[])"
}

#[test]
fn a_deposit_arrives_as_a_span_tree_under_the_clients_span() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), ""));
    let mut c = cluster.database("es_trace_tree");
    let account: Uuid = c
        .query_one("SELECT es.open_account('ann', 1000)", &[])
        .unwrap()
        .get(0);

    // context from SET es.traceparent; the deposit reaches a snapshot version
    let (trace, parent) = client_ids();
    c.batch_execute(&format!(
        "SET es.snapshot_interval = 2; SET es.traceparent = '00-{trace}-{parent}-01'"
    ))
    .unwrap();
    let v: i64 = c
        .query_one("SELECT es.deposit($1, 250, 'salary')", &[&account])
        .unwrap()
        .get(0);
    assert_eq!(v, 2);
    c.batch_execute("RESET es.traceparent").unwrap();

    let spans = rx.wait_trace(&trace, |s| s.len() >= 3);
    let deposit = named(&spans, "command.deposit");
    assert_eq!(
        deposit["parent_span_id"],
        parent.as_str(),
        "child of the client's span"
    );
    let a = &deposit["attributes"];
    assert_eq!(a["aggregate_id"], account.to_string());
    assert_eq!(a["account_id"], account.to_string());
    assert_eq!(a["amount_cents"], 250);
    assert_eq!(a["event_sourcing.operation"], "command");
    assert_eq!(deposit["status"], "OK");
    let append = named(&spans, "event_store.append_events");
    assert_eq!(append["parent_span_id"], deposit["span_id"]);
    within(append, deposit);
    let a = &append["attributes"];
    assert_eq!(a["aggregate_id"], account.to_string());
    assert_eq!(a["events_count"], 1);
    assert_eq!(a["db.system"], "postgresql");
    assert_eq!(a["db.operation"], "INSERT");
    assert_eq!(a["event_sourcing.operation"], "append");
    let save = named(&spans, "snapshot_store.save");
    assert_eq!(save["parent_span_id"], append["span_id"]);
    assert_eq!(save["attributes"]["version"], 2);
    assert_eq!(
        save["attributes"]["event_sourcing.optimization"],
        "snapshot"
    );
    let r = &deposit["resource"];
    assert_eq!(r["service.name"], "event_store");
    assert_eq!(r["db.namespace"], "es_trace_tree");
    assert!(!r["host.name"].as_str().unwrap_or_default().is_empty());

    // time travel replays from a snapshot: account.state > account.replay > the loads
    let (trace3, parent3) = client_ids();
    c.query_one(
        &format!("SELECT es.account_state($1, NULL, 1) /*traceparent='00-{trace3}-{parent3}-01'*/"),
        &[&account],
    )
    .unwrap();
    let spans = rx.wait_trace(&trace3, |s| s.len() >= 4);
    let state = named(&spans, "account.state");
    assert_eq!(state["parent_span_id"], parent3.as_str());
    assert_eq!(state["attributes"]["at_version"], 1);
    let replay = named(&spans, "account.replay");
    assert_eq!(replay["parent_span_id"], state["span_id"]);
    for child in ["snapshot_store.load", "event_store.load_events"] {
        let s = named(&spans, child);
        assert_eq!(s["parent_span_id"], replay["span_id"], "{child}");
        assert_eq!(s["attributes"]["aggregate_id"], account.to_string());
        within(s, replay);
    }
    assert_eq!(
        named(&spans, "event_store.load_events")["attributes"]["events_count"],
        1
    );

    // context from a sqlcommenter comment
    let (trace2, parent2) = client_ids();
    let stream = Uuid::new_v4();
    c.query_one(
        &format!(
            "{} /*traceparent='00-{trace2}-{parent2}-01'*/",
            append_sql()
        ),
        &[&stream],
    )
    .unwrap();
    let spans = rx.wait_trace(&trace2, |s| !s.is_empty());
    let s = named(&spans, "event_store.append_events");
    assert_eq!(s["parent_span_id"], parent2.as_str());
    assert_eq!(s["attributes"]["aggregate_id"], stream.to_string());
    assert!(
        s["attributes"].get("expected_version").is_none(),
        "NULL is no attribute"
    );
    cluster.stop();
}

#[test]
fn failed_calls_have_status_error_and_bad_context_is_only_a_warning() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), ""));
    cluster.database("es_trace_err");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let mut c = cluster.connect_with_notices("es_trace_err", notices.clone());
    let account: Uuid = c
        .query_one("SELECT es.open_account('bob', 100)", &[])
        .unwrap()
        .get(0);
    let (trace, parent) = client_ids();
    let err = c
        .query_one(
            &format!("SELECT es.withdraw($1, 500) /*traceparent='00-{trace}-{parent}-01'*/"),
            &[&account],
        )
        .expect_err("overdraft");
    assert_eq!(err.code().map(|c| c.code()), Some("ES101"));
    let spans = rx.wait_trace(&trace, |s| !s.is_empty());
    let w = named(&spans, "command.withdraw");
    assert_eq!(w["status"], "ERROR");
    assert!(
        w["status_message"]
            .as_str()
            .unwrap()
            .contains("insufficient funds"),
        "{w}"
    );
    assert_eq!(w["attributes"]["db.response.status_code"], "ES101");

    // a malformed traceparent: WARNING, the call succeeds, a new root trace is recorded
    c.batch_execute("SET es.traceparent = 'not-a-traceparent'")
        .unwrap();
    let stream = Uuid::new_v4();
    c.query_one(append_sql(), &[&stream])
        .expect("never an error");
    let warned = notices.lock().unwrap().clone();
    assert!(
        warned
            .iter()
            .any(|n| n.starts_with("WARNING") && n.contains("malformed traceparent")),
        "{warned:?}"
    );
    wait_until("the root span of the malformed-context call", || {
        rx.spans().iter().any(|s| {
            s["attributes"]["aggregate_id"] == stream.to_string() && s["parent_span_id"] == ""
        })
    });
    cluster.stop();
}

#[test]
fn a_dead_collector_costs_nothing_and_export_resumes_when_it_is_back() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let port = rx.port;
    let endpoint = rx.endpoint();
    drop(rx); // the collector is down
    let cluster = TraceCluster::start(&conf(&endpoint, "es.otlp_retries = 1"));
    let mut c = cluster.database("es_trace_down");
    for _ in 0..50 {
        c.query_one(append_sql(), &[&Uuid::new_v4()])
            .expect("appends are unaffected");
    }
    wait_until("export failures to be counted", || {
        let s = stats(&mut c);
        s.failures >= 2 && s.dropped_export > 0
    });
    let s = stats(&mut c);
    assert!(s.last_error.unwrap_or_default().contains("connect"));
    assert_eq!(s.exported, 0);

    let rx = Receiver::start(RECEIVER, "ok", port); // back, same address
    let (trace, parent) = client_ids();
    c.query_one(
        &format!("{} /*traceparent='00-{trace}-{parent}-01'*/", append_sql()),
        &[&Uuid::new_v4()],
    )
    .unwrap();
    rx.wait_trace(&trace, |s| !s.is_empty());
    assert!(stats(&mut c).exported >= 1);
    cluster.stop();
}

#[test]
fn a_collector_answering_500_is_retried_then_dropped_and_counted() {
    let rx = Receiver::start(RECEIVER, "fail", 0);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), "es.otlp_retries = 2"));
    let mut c = cluster.database("es_trace_500");
    for _ in 0..10 {
        c.query_one(append_sql(), &[&Uuid::new_v4()]).unwrap();
    }
    wait_until("the batch to be dropped after its retries", || {
        stats(&mut c).dropped_export >= 10
    });
    let s = stats(&mut c);
    assert!(s.failures >= 3, "first attempt + 2 retries: {s:?}");
    assert!(s.last_error.unwrap_or_default().contains("500"));
    cluster.stop();
}

#[test]
fn a_reload_switches_the_endpoint() {
    let a = Receiver::start(RECEIVER, "ok", 0);
    let b = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start(&conf(&a.endpoint(), ""));
    let mut c = cluster.database("es_trace_reload");
    let (trace, parent) = client_ids();
    let traced = |c: &mut postgres::Client, trace: &str, parent: &str| {
        c.query_one(
            &format!("{} /*traceparent='00-{trace}-{parent}-01'*/", append_sql()),
            &[&Uuid::new_v4()],
        )
        .unwrap();
    };
    traced(&mut c, &trace, &parent);
    a.wait_trace(&trace, |s| !s.is_empty());

    c.batch_execute(&format!(
        "ALTER SYSTEM SET es.otlp_endpoint = '{}'",
        b.endpoint()
    ))
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The worker applies the reload before its next batch; send traced calls until one lands
    // at the new endpoint.
    let (trace2, parent2) = client_ids();
    wait_until("a span at the new endpoint", || {
        traced(&mut c, &trace2, &parent2);
        b.spans().iter().any(|s| s["trace_id"] == trace2.as_str())
    });
    assert_eq!(
        stats(&mut c).endpoint.as_deref(),
        Some(b.endpoint().as_str())
    );
    cluster.stop();
}

#[test]
fn a_full_buffer_drops_and_counts_new_spans() {
    // The collector black-holes and the worker takes one span at a time, so while it waits
    // for its first request (10 s) nothing leaves the 16-span buffer.
    let rx = Receiver::start(RECEIVER, "blackhole", 0);
    let cluster = TraceCluster::start(&format!(
        "es.otlp_endpoint = '{}'\nes.otlp_interval = 100\nes.otlp_timeout = 10000\n\
         es.otlp_max_batch = 1\nes.otlp_retries = 0\nes.trace_buffer_size = 16",
        rx.endpoint()
    ));
    let mut c = cluster.database("es_trace_full");
    c.query_one(append_sql(), &[&Uuid::new_v4()]).unwrap();
    wait_until("the worker to take the first span", || {
        stats(&mut c).queued == 0
    });
    let before = stats(&mut c);
    c.query_one(
        "SELECT count(es.stream_version(gen_random_uuid())) FROM generate_series(1, 100)",
        &[],
    )
    .unwrap();
    let after = stats(&mut c);
    assert_eq!(
        (after.recorded - before.recorded) + (after.dropped - before.dropped),
        100,
        "every span is either recorded or counted as dropped: {after:?}"
    );
    assert_eq!(after.recorded - before.recorded, 16, "the buffer holds 16");
    assert_eq!(after.dropped - before.dropped, 84);
    assert_eq!(after.queued, 16);
    cluster.stop();
}

#[test]
fn a_fast_shutdown_is_quick_while_the_collector_black_holes() {
    let rx = Receiver::start(RECEIVER, "blackhole", 0);
    // es.otlp_timeout keeps its default (2 s): that is what bounds the shutdown.
    let cluster = TraceCluster::start(&format!(
        "es.otlp_endpoint = '{}'\nes.otlp_interval = 100",
        rx.endpoint()
    ));
    let mut c = cluster.database("es_trace_stop");
    c.query_one(
        "SELECT count(es.stream_version(gen_random_uuid())) FROM generate_series(1, 1000)",
        &[],
    )
    .unwrap();
    wait_until("the worker to be inside an export", || {
        stats(&mut c).queued < 1000
    });
    drop(c);
    let took = cluster.stop();
    assert!(
        took < Duration::from_secs(5),
        "pg_ctl stop -m fast took {took:?} with a black-holing collector"
    );
    println!("fast shutdown with a black-holing collector: {took:?}");
}

#[test]
fn the_worker_is_restarted_after_a_crash() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), ""));
    let mut c = cluster.database("es_trace_crash");
    let mut pid = None;
    wait_until("the worker to run", || {
        pid = stats(&mut c).worker_pid;
        pid.is_some()
    });
    let pid = pid.unwrap();
    event_store_client_tests::kill_9(pid);
    // A killed child makes the postmaster reset shared memory and restart every process,
    // the exporter included.
    wait_until("a new exporter", || {
        let now = cluster
            .config("es_trace_crash", Arc::default())
            .connect(postgres::NoTls)
            .ok()
            .and_then(|mut c| {
                c.query_one("SELECT worker_pid FROM es.tracing_stats()", &[])
                    .ok()
            })
            .and_then(|r| r.get::<_, Option<i32>>(0));
        now.is_some() && now != Some(pid)
    });
    let mut c = cluster.connect("es_trace_crash");
    let (trace, parent) = client_ids();
    c.query_one(
        &format!("{} /*traceparent='00-{trace}-{parent}-01'*/", append_sql()),
        &[&Uuid::new_v4()],
    )
    .unwrap();
    let spans: Vec<Value> = rx.wait_trace(&trace, |s| !s.is_empty());
    assert_eq!(spans[0]["name"], "event_store.append_events");
    cluster.stop();
}
