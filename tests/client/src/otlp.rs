//! Helpers of the tracing tests (docs/reference.md §7): a throwaway cluster whose `postgresql.conf` each test
//! chooses (export settings, buffer size), the OTLP receiver binary (`src/bin/otlp_receiver.rs`)
//! as a child process, and waiting for spans to arrive.
//!
//! The tracing cluster is separate from the suite's main cluster because its tests restart it
//! with other settings and stop it under a black-holing collector.

use postgres::{Client, NoTls};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for something the worker does asynchronously (an export, a reload).
/// Generous: it bounds a hung test, it is not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The port of the tracing cluster: `ES_TEST_TRACE_PORT` (set by tests/client/run.sh).
pub fn trace_port() -> u16 {
    std::env::var("ES_TEST_TRACE_PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(28819)
}

/// The tracing cluster, started with the given extra settings.
pub struct TraceCluster {
    dir: PathBuf,
    port: u16,
}

impl TraceCluster {
    fn script(&self, action: &str, extra_conf: &str, env: &[(&str, &str)]) -> std::process::Output {
        Command::new("bash")
            .arg(crate::repo_dir().join("scripts/cluster.sh"))
            .arg(action)
            .env("ES_CLUSTER_DIR", &self.dir)
            .env("ES_PORT", self.port.to_string())
            .env("ES_PRELOAD", "1")
            .env("ES_EXTRA_CONF", extra_conf)
            .envs(env.iter().copied())
            .output()
            .expect("run scripts/cluster.sh")
    }

    /// (Re)starts the cluster with `extra_conf` as additional `postgresql.conf` lines, after
    /// forgetting every `ALTER SYSTEM` of an earlier test.
    pub fn start(extra_conf: &str) -> TraceCluster {
        TraceCluster::start_with_env(extra_conf, &[])
    }

    /// [`TraceCluster::start`] with `env` in the postmaster's environment (what
    /// `opentelemetry-otlp` reads, e.g. `OTEL_EXPORTER_OTLP_COMPRESSION`).
    pub fn start_with_env(extra_conf: &str, env: &[(&str, &str)]) -> TraceCluster {
        let c = TraceCluster {
            dir: crate::repo_dir().join("target/es-cluster-tracing"),
            port: trace_port(),
        };
        c.stop();
        let auto = c.dir.join("data/postgresql.auto.conf");
        if auto.exists() {
            std::fs::write(&auto, "# reset by the tracing tests\n").expect("reset auto.conf");
        }
        let out = c.script("start", extra_conf, env);
        assert!(
            out.status.success(),
            "cluster start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// Stops the cluster (`pg_ctl stop -m fast`) and returns how long that took.
    pub fn stop(&self) -> Duration {
        let t0 = Instant::now();
        let out = self.script("stop", "", &[]);
        assert!(out.status.success(), "cluster stop failed");
        t0.elapsed()
    }

    /// Connection settings for `dbname`; WARNINGs and NOTICEs go to `notices`.
    pub fn config(&self, dbname: &str, notices: Arc<Mutex<Vec<String>>>) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host(self.dir.join("run").to_str().expect("utf-8 path"))
            .port(self.port)
            .user(crate::PG_USER)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(10))
            // as in `crate::config`: the crash test must not lose an asynchronous commit
            .options("-c synchronous_commit=on")
            .notice_callback(move |n| {
                notices
                    .lock()
                    .expect("notices")
                    .push(format!("{}: {}", n.severity(), n.message()))
            });
        config
    }

    /// A connection to `dbname`.
    pub fn connect(&self, dbname: &str) -> Client {
        self.connect_with_notices(dbname, Arc::default())
    }

    /// A connection to `dbname` that collects the server's notices.
    pub fn connect_with_notices(&self, dbname: &str, notices: Arc<Mutex<Vec<String>>>) -> Client {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.config(dbname, notices.clone()).connect(NoTls) {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// A fresh database `name` with the extension.
    pub fn database(&self, name: &str) -> Client {
        let mut admin = self.connect("postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("drop the test database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let mut c = self.connect(name);
        c.batch_execute("CREATE EXTENSION event_store")
            .expect("CREATE EXTENSION");
        c
    }
}

/// `es.tracing_stats()`.
#[derive(Debug, Clone)]
pub struct Stats {
    /// available
    pub available: bool,
    /// status
    pub status: String,
    /// spans_recorded
    pub recorded: i64,
    /// spans_exported
    pub exported: i64,
    /// spans_dropped (buffer full)
    pub dropped: i64,
    /// spans_dropped_export
    pub dropped_export: i64,
    /// export_failures
    pub failures: i64,
    /// batches_rejected
    pub rejected: i64,
    /// spans_queued
    pub queued: i64,
    /// last_error
    pub last_error: Option<String>,
    /// worker_pid
    pub worker_pid: Option<i32>,
    /// otlp_endpoint
    pub endpoint: Option<String>,
}

/// Reads `es.tracing_stats()`.
pub fn stats(c: &mut Client) -> Stats {
    let r = c
        .query_one(
            "SELECT available, status, spans_recorded, spans_exported, spans_dropped, \
             spans_dropped_export, export_failures, spans_queued, last_error, worker_pid, \
             otlp_endpoint, batches_rejected FROM es.tracing_stats()",
            &[],
        )
        .expect("es.tracing_stats()");
    Stats {
        available: r.get(0),
        status: r.get(1),
        recorded: r.get::<_, Option<i64>>(2).unwrap_or(0),
        exported: r.get::<_, Option<i64>>(3).unwrap_or(0),
        dropped: r.get::<_, Option<i64>>(4).unwrap_or(0),
        dropped_export: r.get::<_, Option<i64>>(5).unwrap_or(0),
        failures: r.get::<_, Option<i64>>(6).unwrap_or(0),
        queued: r.get::<_, Option<i64>>(7).unwrap_or(0),
        last_error: r.get(8),
        worker_pid: r.get(9),
        endpoint: r.get(10),
        rejected: r.get::<_, Option<i64>>(11).unwrap_or(0),
    }
}

/// Polls `cond` until it holds (panics after [`PATIENCE`], describing `what`).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A running `otlp_receiver`; killed when dropped.
pub struct Receiver {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The JSON-lines file it writes spans to.
    pub out: PathBuf,
}

impl Receiver {
    /// Starts the receiver binary `exe` (pass `env!("CARGO_BIN_EXE_otlp_receiver")`) in `mode`
    /// (`ok`, `fail`, `unavailable`, `blackhole`) on `port` (0 = any free port).
    pub fn start(exe: &str, mode: &str, port: u16) -> Receiver {
        Receiver::start_with(exe, mode, port, &[])
    }

    /// [`Receiver::start`] with more arguments (`--respond 429:1,400`, `--chunked`).
    pub fn start_with(exe: &str, mode: &str, port: u16, args: &[&str]) -> Receiver {
        static N: AtomicU32 = AtomicU32::new(0);
        let out = std::env::temp_dir().join(format!(
            "es-otlp-{}-{}.jsonl",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&out);
        let mut child = Command::new(exe)
            .args(["--port", &port.to_string(), "--mode", mode, "--out"])
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start otlp_receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the receiver's first line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from otlp_receiver: {line:?}"));
        Receiver { child, port, out }
    }

    /// The endpoint URL to configure.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every request received so far (`n`, `connection`, `status`, `encoding`, `spans`).
    pub fn requests(&self) -> Vec<Value> {
        let mut path = self.out.clone().into_os_string();
        path.push(".requests");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The spans of trace `trace_id` once `cond` holds for them.
    pub fn wait_trace(&self, trace_id: &str, mut cond: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        wait_until(&format!("spans of trace {trace_id}"), || {
            got = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            cond(&got)
        });
        got
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
        let mut requests = self.out.clone().into_os_string();
        requests.push(".requests");
        let _ = std::fs::remove_file(requests);
    }
}

/// A random 32-hex trace id and 16-hex span id, for the client's context.
pub fn client_ids() -> (String, String) {
    let t = uuid::Uuid::new_v4().simple().to_string();
    let s = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (t, s)
}

/// The span named `name` among `spans` (panics listing the names when missing).
pub fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| {
        let names: Vec<&Value> = spans.iter().map(|s| &s["name"]).collect();
        panic!("no span {name} among {names:?}")
    })
}
