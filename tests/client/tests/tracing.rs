//! Tracing end to end (docs/reference.md §7): spans exported by the background worker over OTLP/HTTP arrive
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
fn a_collector_answering_503_is_retried_then_dropped_and_counted() {
    let rx = Receiver::start(RECEIVER, "unavailable", 0);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), "es.otlp_retries = 2"));
    let mut c = cluster.database("es_trace_503");
    c.query_one(append_sql(), &[&Uuid::new_v4()]).unwrap();
    wait_until("the batch to be dropped after its retries", || {
        stats(&mut c).dropped_export >= 1
    });
    let s = stats(&mut c);
    assert_eq!(s.failures, 3, "first attempt + 2 retries: {s:?}");
    assert_eq!(s.rejected, 0, "503 is retryable: {s:?}");
    assert!(s.last_error.unwrap_or_default().contains("503"));
    let statuses: Vec<i64> = rx
        .requests()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 503, 503], "one batch, three attempts");
    cluster.stop();
}

/// Runs one append in its own trace and returns the trace id.
fn traced_append(c: &mut postgres::Client) -> String {
    let (trace, parent) = client_ids();
    c.query_one(
        &format!("{} /*traceparent='00-{trace}-{parent}-01'*/", append_sql()),
        &[&Uuid::new_v4()],
    )
    .unwrap();
    trace
}

#[test]
fn answers_the_specification_does_not_retry_drop_the_batch_at_once() {
    // 400 and 500: the batch is dropped after one attempt and counted; the next batch goes out
    let rx = Receiver::start_with(RECEIVER, "ok", 0, &["--respond", "400,500"]);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), "es.otlp_retries = 5"));
    let mut c = cluster.database("es_trace_400");
    traced_append(&mut c);
    wait_until("the first batch to be rejected", || {
        stats(&mut c).rejected == 1
    });
    traced_append(&mut c);
    wait_until("the second batch to be rejected", || {
        stats(&mut c).rejected == 2
    });
    let trace = traced_append(&mut c);
    rx.wait_trace(&trace, |s| !s.is_empty());
    let s = stats(&mut c);
    assert_eq!(
        (s.failures, s.rejected, s.dropped_export),
        (2, 2, 2),
        "{s:?}"
    );
    let statuses: Vec<i64> = rx
        .requests()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 500, 200], "no retry of a rejected batch");
    cluster.stop();
}

#[test]
fn answers_429_502_503_504_are_retried_after_retry_after() {
    let rx = Receiver::start_with(RECEIVER, "ok", 0, &["--respond", "429:1,502,503:1,504"]);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), "es.otlp_retries = 4"));
    let mut c = cluster.database("es_trace_429");
    let trace = traced_append(&mut c);
    let spans = rx.wait_trace(&trace, |s| !s.is_empty());
    assert_eq!(spans.len(), 1, "exported once, after its retries");
    let s = stats(&mut c);
    assert_eq!(
        (s.failures, s.rejected, s.dropped_export),
        (4, 0, 0),
        "{s:?}"
    );
    assert!(s.exported >= 1);
    let statuses: Vec<i64> = rx
        .requests()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [429, 502, 503, 504, 200]);
    cluster.stop();
}

#[test]
fn chunked_and_kept_alive_answers_are_read_whole() {
    for chunked in [true, false] {
        let args: &[&str] = if chunked { &["--chunked"] } else { &[] };
        let rx = Receiver::start_with(RECEIVER, "ok", 0, args);
        let cluster = TraceCluster::start(&conf(&rx.endpoint(), "es.otlp_retries = 0"));
        let mut c = cluster.database("es_trace_framing");
        for _ in 0..3 {
            // one batch each: the next call waits until its trace has arrived
            let trace = traced_append(&mut c);
            rx.wait_trace(&trace, |s| !s.is_empty());
        }
        let s = stats(&mut c);
        assert_eq!(
            (s.failures, s.dropped_export),
            (0, 0),
            "chunked {chunked}: {s:?}"
        );
        let requests = rx.requests();
        assert_eq!(
            requests.len(),
            3,
            "chunked {chunked}: no request sent twice"
        );
        assert!(
            requests
                .iter()
                .all(|r| r["connection"] == requests[0]["connection"]),
            "chunked {chunked}: one kept-alive connection: {requests:?}"
        );
        cluster.stop();
    }
}

#[test]
fn gzip_compression_from_the_setting_and_from_the_environment() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), "es.otlp_compression = gzip"));
    let mut c = cluster.database("es_trace_gzip");
    let trace = traced_append(&mut c);
    let spans = rx.wait_trace(&trace, |s| !s.is_empty());
    assert_eq!(spans[0]["encoding"], "gzip", "decoded from a gzip body");
    assert_eq!(spans[0]["name"], "event_store.append_events");
    // back to none: uncompressed
    c.batch_execute("ALTER SYSTEM SET es.otlp_compression = none")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the reload", || {
        let trace = traced_append(&mut c);
        let spans = rx.wait_trace(&trace, |s| !s.is_empty());
        spans[0].get("encoding").is_none()
    });
    cluster.stop();

    // OTEL_EXPORTER_OTLP_COMPRESSION in the postmaster's environment, the setting at none
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start_with_env(
        &conf(&rx.endpoint(), ""),
        &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
    );
    let mut c = cluster.connect("es_trace_gzip");
    let trace = traced_append(&mut c);
    let spans = rx.wait_trace(&trace, |s| !s.is_empty());
    assert_eq!(spans[0]["encoding"], "gzip");
    let s = stats(&mut c);
    assert_eq!(s.failures, 0, "{s:?}");
    assert!(rx.requests().iter().all(|r| r["encoding"] == "gzip"));
    cluster.stop();
}

#[test]
fn an_endpoint_by_host_name_is_looked_up_and_exported_to() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    // `localhost` may resolve to ::1 before 127.0.0.1, where nothing listens: the next address
    let endpoint = format!("http://localhost:{}/v1/traces", rx.port);
    let cluster = TraceCluster::start(&conf(&endpoint, ""));
    let mut c = cluster.database("es_trace_name");
    let trace = traced_append(&mut c);
    rx.wait_trace(&trace, |s| !s.is_empty());
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

/// A `#[sql_function]` registration of `src/api/`, as the test reads it from the source: the
/// SQL name, the span's name, and the attributes the span declares (fields recorded from
/// arguments or the result, and constant fields with their values).
#[derive(Debug)]
struct Registration {
    function: String,
    span: Option<String>,
    fields: Vec<String>,
    constants: Vec<(String, String)>,
}

/// The string literal (plain or raw) that follows `key = ` in a registration's text.
fn literal(block: &str, key: &str) -> Option<String> {
    let at = block.find(&format!("\n    {key} = "))? + key.len() + 8;
    let rest = &block[at..];
    if let Some(raw) = rest.strip_prefix("r#\"") {
        return Some(raw[..raw.find("\"#")?].to_owned());
    }
    let mut out = String::new();
    let mut chars = rest.strip_prefix('"')?.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            other => out.push(other),
        }
    }
    None
}

/// Every registration in `src/api/*.rs`.
fn registrations() -> Vec<Registration> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../src/api");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/api") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for block in text.split("#[sql_function(").skip(1) {
            let block = &block[..block.find("\n)]").expect("the registration's end")];
            let block = format!("\n{block}");
            let sql = literal(&block, "sql").expect("sql = \"...\"");
            let function = sql[..sql.find('(').unwrap()].trim().to_owned();
            let pieces = |key: &str| -> Vec<String> {
                literal(&block, key)
                    .unwrap_or_default()
                    .split(',')
                    .map(|p| p.split('=').next().unwrap().trim().to_owned())
                    .filter(|f| !f.is_empty())
                    .collect()
            };
            let mut fields = pieces("span_args");
            fields.extend(pieces("span_result"));
            let constants = literal(&block, "span_fields")
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
                .collect();
            out.push(Registration {
                function,
                span: literal(&block, "span"),
                fields,
                constants,
            });
        }
    }
    out
}

/// The functions of schema `es` that record no span of their own, and why. A function missing
/// from both this list and `calls` fails the test below: a new function needs a decision.
const UNTRACED: &[(&str, &str)] = &[
    (
        "es.archive",
        "SQL (sql/flow.sql): its work is set-based statements; its act is in es.data_audit",
    ),
    (
        "es.set_retention",
        "SQL (sql/flow.sql): a policy row and its es.data_audit row",
    ),
    (
        "es.set_retention_paused",
        "SQL (sql/flow.sql): a policy flag and its es.data_audit row",
    ),
    (
        "es.pause_retention",
        "SQL (sql/flow.sql): es.set_retention_paused",
    ),
    (
        "es.resume_retention",
        "SQL (sql/flow.sql): es.set_retention_paused",
    ),
    (
        "es.retention_batch",
        "internal: the worker's batch of a retention policy (sql/flow.sql)",
    ),
    (
        "es.retention_expired",
        "internal: the expired events of a policy, for the batch and the view es.retention",
    ),
    (
        "es.remove_events",
        "internal: called only by the retention batch, inside the worker's transaction",
    ),
    (
        "es.refuse_archive_change",
        "the trigger that refuses changes to es.events_archive (sql/bootstrap.sql)",
    ),
    (
        "es.keep_archive_shape",
        "the event trigger that keeps es.events_archive's columns those of es.events",
    ),
    (
        "es.purge_stream",
        "internal: called only by es.delete_stream and es.truncate_stream, inside their spans",
    ),
    (
        "es.stream_hash",
        "a pure hash, run per row by PL/Proxy's routing",
    ),
    ("es.tracing_stats", "monitoring of tracing itself"),
    ("es.account_replay", "an aggregate: it runs once per row"),
    (
        "es.account_replay_step",
        "the aggregate's transition function",
    ),
    (
        "es.account_replay_from_step",
        "the aggregate's transition function",
    ),
    ("es.account_replay_final", "the aggregate's final function"),
    (
        "es.refuse_history_change",
        "the trigger that refuses changes to es.events (sql/bootstrap.sql)",
    ),
    ("es.partition_lag", "a SQL view helper (sql/flow.sql)"),
    (
        "es.projections_changed",
        "the trigger that asks for the worker when projections are restored (sql/flow.sql)",
    ),
    (
        "es.run_handler",
        "SQL (sql/flow.sql); the handler it runs is the user's",
    ),
    (
        "es.project_account_balances",
        "a SQL projection handler (sql/flow.sql)",
    ),
    (
        "es.project_account_transactions",
        "a SQL projection handler (sql/flow.sql)",
    ),
    (
        "es.enable_account_projections",
        "SQL (sql/flow.sql); its es.create_projection calls record their spans",
    ),
    (
        "es.account_evolve",
        "the account's fold as a declared type's evolve: run per event",
    ),
    (
        "es.account_check",
        "the account's rules as a declared type's check: run per event",
    ),
    ("es.replay", "an aggregate: it runs once per row"),
    ("es.replay_step", "the aggregate's transition function"),
    ("es.replay_from_step", "the aggregate's transition function"),
    ("es.replay_final", "the aggregate's final function"),
    (
        "es.registry_changed",
        "the trigger that refreshes the backends' registry cache (sql/flow.sql)",
    ),
    (
        "es.stream_type_rules_replace",
        "the trigger that lets a restored rule replace the default one (sql/flow.sql)",
    ),
    (
        "es.rebuild_states",
        "a PL/pgSQL procedure (sql/flow.sql); its es.rebuild_batch calls record their spans",
    ),
    (
        "es.reveal",
        "a per-value function (a read model's column), like a cast",
    ),
    (
        "es.key_provider_call",
        "SQL (sql/flow.sql): the key provider's call, inside an append or es.forget",
    ),
    (
        "es.key_provider_get",
        "SQL (sql/flow.sql): a key from the key provider, inside a read",
    ),
];

#[test]
fn every_sql_function_records_its_declared_span_with_its_attributes() {
    let rx = Receiver::start(RECEIVER, "ok", 0);
    let cluster = TraceCluster::start(&conf(&rx.endpoint(), ""));
    let mut c = cluster.database("es_trace_every");
    let regs = registrations();
    let catalog: Vec<String> = c
        .query(
            "SELECT DISTINCT 'es.' || p.proname FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'es' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(catalog.len() >= 30, "{catalog:?}");

    let stream = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001);
    let account: Uuid = c
        .query_one("SELECT es.open_account('setup', 1000)", &[])
        .unwrap()
        .get(0);
    let frozen: Uuid = c
        .query_one("SELECT es.open_account('setup', 0)", &[])
        .unwrap()
        .get(0);
    let (a, f, st) = (account, frozen, stream);
    // the first event of the log: the subscription's first delivery, nacked then acked
    let p: i64 = c
        .query_one("SELECT min(global_position) FROM es.events", &[])
        .unwrap()
        .get(0);
    // One call per function, in an order where each succeeds; every declared span argument is
    // passed non-NULL, so every declared attribute must arrive.
    // what the calls of the aggregates' functions declare a type with
    c.batch_execute(
        "CREATE FUNCTION public.traced_evolve(s jsonb, e jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT s';
         CREATE FUNCTION public.traced_upcast(e jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT e';",
    )
    .unwrap();
    let calls: Vec<(&str, String)> = vec![
        ("es.open_account", "SELECT es.open_account('ann', 500)".into()),
        ("es.deposit", format!("SELECT es.deposit('{a}', 250, 'pay', 1)")),
        ("es.withdraw", format!("SELECT es.withdraw('{a}', 100, 'rent', 2)")),
        ("es.freeze_account", format!("SELECT es.freeze_account('{f}', 'audit')")),
        ("es.close_account", format!("SELECT es.close_account('{f}', 'done')")),
        (
            "es.append_events",
            format!("SELECT es.append_events('{st}', 0, ARRAY['{{\"type\":\"A\"}}']::jsonb[])"),
        ),
        ("es.load_events", format!("SELECT count(*) FROM es.load_events('{st}', 0, 10)")),
        ("es.stream_version", format!("SELECT es.stream_version('{st}')")),
        ("es.read_all", "SELECT count(*) FROM es.read_all(0, 10)".into()),
        ("es.save_snapshot", format!("SELECT es.save_snapshot('{st}', 1, '{{}}')")),
        ("es.load_snapshot", format!("SELECT count(*) FROM es.load_snapshot('{st}', 1)")),
        ("es.truncate_stream", format!("SELECT es.truncate_stream('{st}', 1)")),
        ("es.delete_stream", format!("SELECT es.delete_stream('{st}', 1, false)")),
        ("es.undelete_stream", format!("SELECT es.undelete_stream('{st}')")),
        ("es.account_state", format!("SELECT es.account_state('{a}', NULL, 2)")),
        ("es.account_history", format!("SELECT count(*) FROM es.account_history('{a}')")),
        (
            "es.create_subscription",
            "SELECT es.create_subscription('sub', 0, NULL, NULL, 1)".into(),
        ),
        ("es.claim", "SELECT count(*) FROM es.claim('sub', 'c1')".into()),
        ("es.poll", "SELECT count(*) FROM es.poll('sub', 0, 10, 'c1')".into()),
        ("es.nack", format!("SELECT es.nack('sub', 0, {p}, 'boom', 'c1')")),
        ("es.ack", format!("SELECT es.ack('sub', 0, {p}, 'c1')")),
        ("es.replay_parked", "SELECT es.replay_parked('sub')".into()),
        ("es.wait", "SELECT es.wait('sub', 0, 10)".into()),
        ("es.release", "SELECT es.release('sub', 'c1')".into()),
        ("es.drop_subscription", "SELECT es.drop_subscription('sub')".into()),
        (
            "es.create_projection",
            "SELECT es.create_projection('proj', 'es.project_account_balances(es.events)', NULL, 10)"
                .into(),
        ),
        ("es.pause_projection", "SELECT es.pause_projection('proj')".into()),
        ("es.resume_projection", "SELECT es.resume_projection('proj')".into()),
        ("es.reset_projection", "SELECT es.reset_projection('proj')".into()),
        ("es.wait_for_projection", "SELECT es.wait_for_projection('proj', 0, 10)".into()),
        ("es.drop_projection", "SELECT es.drop_projection('proj')".into()),
        ("es.worker_status", "SELECT count(*) FROM es.worker_status()".into()),
        (
            "es.define_aggregate",
            "SELECT es.define_aggregate('traced', 'public.traced_evolve(jsonb,jsonb)')".into(),
        ),
        (
            "es.alter_aggregate",
            "SELECT es.alter_aggregate('traced', 'public.traced_evolve(jsonb,jsonb)', '{}', NULL, 10)"
                .into(),
        ),
        ("es.rebuild_batch", "SELECT es.rebuild_batch('traced', 10)".into()),
        (
            "es.define_upcaster",
            "SELECT es.define_upcaster('Traced', 1, 'public.traced_upcast(jsonb)')".into(),
        ),
        ("es.drop_upcaster", "SELECT es.drop_upcaster('Traced', 1)".into()),
        ("es.drop_aggregate", "SELECT es.drop_aggregate('traced')".into()),
        (
            "es.define_personal_data",
            "SELECT es.define_personal_data('Traced', ARRAY['who'])".into(),
        ),
        ("es.forget", "SELECT es.forget('traced subject')".into()),
        ("es.state", format!("SELECT es.state('{a}', 1)")),
        ("es.history", format!("SELECT count(*) FROM es.history('{a}')")),
        // the untraced ones run too (their calls must work with tracing on)
        ("es.stream_hash", format!("SELECT es.stream_hash('{st}')")),
        ("es.tracing_stats", "SELECT count(*) FROM es.tracing_stats()".into()),
        ("es.reveal", "SELECT es.reveal('{\"who\": \"x\"}')".into()),
        (
            "es.account_replay",
            format!("SELECT es.account_replay(data ORDER BY version) FROM es.events WHERE stream_id = '{a}'"),
        ),
        (
            "es.account_replay_from_step",
            format!("SELECT es.account_replay('{{}}'::jsonb, data ORDER BY version) FROM es.events WHERE stream_id = '{st}' AND false"),
        ),
        ("es.partition_lag", "SELECT count(*) FROM es.subscriptions".into()),
        (
            "es.run_handler",
            format!("SELECT es.run_handler('es.project_account_balances', e) FROM es.events e WHERE stream_id = '{a}' ORDER BY version LIMIT 1"),
        ),
        ("es.enable_account_projections", "SELECT es.enable_account_projections()".into()),
        ("es.wake_retention", "SELECT es.wake_retention()".into()),
    ];
    let called: Vec<&str> = calls.iter().map(|(f, _)| *f).collect();
    let untraced: Vec<&str> = UNTRACED.iter().map(|(f, _)| *f).collect();
    for f in &catalog {
        assert!(
            called.contains(&f.as_str()) || untraced.contains(&f.as_str()),
            "{f} is neither called by this test nor listed in UNTRACED"
        );
    }
    for r in &regs {
        assert!(
            catalog.contains(&r.function),
            "{} is registered, not in pg_proc",
            r.function
        );
        match &r.span {
            Some(_) => assert!(
                called.contains(&r.function.as_str()),
                "{} is not called",
                r.function
            ),
            None => assert!(
                untraced.contains(&r.function.as_str()),
                "{} declares no span and is not in UNTRACED",
                r.function
            ),
        }
    }

    let mut checked = 0;
    for (function, sql) in &calls {
        let (trace, parent) = client_ids();
        c.batch_execute(&format!("{sql} /*traceparent='00-{trace}-{parent}-01'*/"))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let Some(reg) = regs.iter().find(|r| r.function == *function) else {
            continue; // a SQL function of sql/flow.sql or the aggregate
        };
        let Some(span_name) = &reg.span else {
            continue;
        };
        let spans = rx.wait_trace(&trace, |s| {
            s.iter().any(|x| x["name"] == span_name.as_str())
        });
        let span = spans
            .iter()
            .find(|x| x["name"] == span_name.as_str() && x["parent_span_id"] == parent.as_str())
            .unwrap_or_else(|| panic!("{function}: no root span {span_name} in {spans:?}"));
        let attrs = &span["attributes"];
        for field in &reg.fields {
            assert!(
                !attrs[field].is_null(),
                "{function}: span {span_name} lacks declared attribute {field}: {attrs}"
            );
        }
        for (k, v) in &reg.constants {
            assert_eq!(attrs[k], v.as_str(), "{function}: {span_name} {k}");
        }
        assert_eq!(span["status"], "OK", "{function}: {span}");
        checked += 1;
    }
    let declared = regs.iter().filter(|r| r.span.is_some()).count();
    assert_eq!(checked, declared, "every declared span was seen");
    assert!(declared >= 28, "{declared}");
    let s = stats(&mut c);
    assert_eq!(
        (s.dropped, s.dropped_export, s.failures),
        (0, 0, 0),
        "{s:?}"
    );
    cluster.stop();
}
