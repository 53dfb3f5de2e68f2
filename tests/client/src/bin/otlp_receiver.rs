//! A small OTLP/HTTP trace receiver for the tests, the demo and the benchmark: it decodes the
//! official protobuf (`ExportTraceServiceRequest` from the `opentelemetry-proto` crate), so a
//! test checks what a real collector would see, not what the extension meant to send.
//!
//! usage: otlp_receiver [--port N] [--out FILE] [--mode ok|fail|blackhole] [--count-only|--discard]
//!   --port N      listen on 127.0.0.1:N (default 0: any free port)
//!   --out FILE    append one JSON object per received span to FILE (default: stdout)
//!   --mode ok     answer 200 (default); fail: answer 500 after reading the request;
//!          blackhole: accept connections and never read or answer
//!   --count-only  decode but write no spans: FILE holds the running total of spans received
//!   --discard     answer 200 without decoding: the benchmark's stand-in for a collector on
//!                 another machine (its CPU must not compete with the server's on a 2-core box)
//! The first line on stdout is `listening on 127.0.0.1:<port>`, so callers can use port 0.
//!
//! usage: otlp_receiver --print-tree FILE TRACE_ID [MIN_SPANS]
//!   prints the span tree of one trace from a FILE written by --out (exit 1 while fewer than
//!   MIN_SPANS spans of it have arrived, so a script can poll)

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Map, Value, json};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    BlackHole,
}

struct Sink {
    out: Option<std::fs::File>,
    path: Option<String>,
    count_only: bool,
    discard: bool,
    total: AtomicU64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(v: &Option<AnyValue>) -> Value {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(other) => json!(format!("{other:?}")),
        None => Value::Null,
    }
}

fn attrs(kvs: &[KeyValue]) -> Value {
    let mut m = Map::new();
    for kv in kvs {
        m.insert(kv.key.clone(), value(&kv.value));
    }
    Value::Object(m)
}

/// The spans of a request as JSON objects (one per span).
fn spans(req: &ExportTraceServiceRequest) -> Vec<Value> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or(Value::Null);
        for ss in &rs.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for s in &ss.spans {
                let (code, message) = s
                    .status
                    .as_ref()
                    .map(|st| (st.code, st.message.clone()))
                    .unwrap_or((0, String::new()));
                let code = match code {
                    1 => "OK",
                    2 => "ERROR",
                    _ => "UNSET",
                };
                out.push(json!({
                    "trace_id": hex(&s.trace_id),
                    "span_id": hex(&s.span_id),
                    "parent_span_id": hex(&s.parent_span_id),
                    "name": s.name,
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                    "status": code,
                    "status_message": message,
                    "attributes": attrs(&s.attributes),
                    "resource": resource,
                    "scope": scope,
                }));
            }
        }
    }
    out
}

fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    let _ = stream.write_all(&out);
}

/// Serves the requests of one connection (HTTP/1.1 keep-alive) until the client closes it.
fn handle(stream: TcpStream, mode: Mode, sink: &Mutex<Sink>) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    while let Some((request_line, body)) = read_request(&mut reader) {
        let (status, reply) = serve(&request_line, &body, mode, sink);
        respond(&mut writer, status, reply.as_bytes());
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((request_line, body))
}

fn serve(
    request_line: &str,
    body: &[u8],
    mode: Mode,
    sink: &Mutex<Sink>,
) -> (&'static str, String) {
    if !request_line.starts_with("POST /v1/traces ") {
        return ("404 Not Found", String::new());
    }
    if mode == Mode::Fail {
        return ("500 Internal Server Error", "failing on purpose".to_owned());
    }
    if sink.lock().expect("sink lock").discard {
        return ("200 OK", String::new());
    }
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return ("400 Bad Request", e.to_string()),
    };
    let spans = spans(&req);
    let mut s = sink.lock().expect("sink lock");
    let total = s.total.fetch_add(spans.len() as u64, Ordering::Relaxed) + spans.len() as u64;
    if s.count_only {
        if let Some(p) = s.path.clone() {
            let _ = std::fs::write(&p, format!("{total}\n"));
        }
    } else {
        let mut text = String::new();
        for sp in &spans {
            text.push_str(&sp.to_string());
            text.push('\n');
        }
        match s.out.as_mut() {
            Some(f) => {
                let _ = f.write_all(text.as_bytes());
                let _ = f.flush();
            }
            None => {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
        }
    }
    // An empty ExportTraceServiceResponse is an empty protobuf message.
    ("200 OK", String::new())
}

/// One line per span: name, duration, status and attributes, indented under its parent.
fn print_tree(file: &str, trace: &str, min: usize) -> bool {
    let spans: Vec<Value> = std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|s| s["trace_id"] == trace)
        .collect();
    if spans.len() < min || spans.is_empty() {
        return false;
    }
    let ids: Vec<&str> = spans.iter().filter_map(|s| s["span_id"].as_str()).collect();
    let mut roots: Vec<&Value> = spans
        .iter()
        .filter(|s| !ids.contains(&s["parent_span_id"].as_str().unwrap_or_default()))
        .collect();
    roots.sort_by_key(|s| s["start_ns"].as_u64());
    let r = &spans[0]["resource"];
    println!(
        "trace {trace}  (service.name={}, host.name={}, db.namespace={})",
        r["service.name"], r["host.name"], r["db.namespace"]
    );
    fn walk(spans: &[Value], s: &Value, prefix: &str, last: bool) {
        let dur = (s["end_ns"].as_u64().unwrap_or(0) as f64
            - s["start_ns"].as_u64().unwrap_or(0) as f64)
            / 1e6;
        let mut attrs: Vec<String> = s["attributes"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        attrs.sort();
        let status = match s["status"].as_str() {
            Some("ERROR") => format!("ERROR {}", s["status_message"]),
            Some(other) => other.to_owned(),
            None => String::new(),
        };
        let parent = s["parent_span_id"].as_str().unwrap_or_default();
        let from = if prefix.is_empty() && !parent.is_empty() {
            format!("  (parent: client span {parent})")
        } else {
            String::new()
        };
        println!(
            "{prefix}{} {}  {dur:.3} ms  {status}{from}\n{prefix}{}     {}",
            if last { "└─" } else { "├─" },
            s["name"].as_str().unwrap_or("?"),
            if last { " " } else { "│" },
            attrs.join(" ")
        );
        let mut children: Vec<&Value> = spans
            .iter()
            .filter(|c| c["parent_span_id"] == s["span_id"])
            .collect();
        children.sort_by_key(|c| c["start_ns"].as_u64());
        let next = format!("{prefix}{}", if last { "   " } else { "│  " });
        for (i, c) in children.iter().enumerate() {
            walk(spans, c, &next, i + 1 == children.len());
        }
    }
    for (i, root) in roots.iter().enumerate() {
        walk(&spans, root, "", i + 1 == roots.len());
    }
    true
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--print-tree") {
        let (file, trace) = (&argv[2], &argv[3]);
        let min = argv.get(4).and_then(|m| m.parse().ok()).unwrap_or(1);
        std::process::exit(if print_tree(file, trace, min) { 0 } else { 1 });
    }
    let mut port = 0u16;
    let mut out = None;
    let mut mode = Mode::Ok;
    let mut count_only = false;
    let mut discard = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--out" => out = args.next(),
            "--mode" => {
                mode = match args.next().as_deref() {
                    Some("ok") => Mode::Ok,
                    Some("fail") => Mode::Fail,
                    Some("blackhole") => Mode::BlackHole,
                    other => panic!("unknown mode {other:?}"),
                }
            }
            "--count-only" => count_only = true,
            "--discard" => discard = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!(
        "listening on 127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let _ = std::io::stdout().flush();
    let file = out.as_ref().map(|p| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("open --out")
    });
    let sink = Arc::new(Mutex::new(Sink {
        out: if count_only { None } else { file },
        path: out,
        count_only,
        discard,
        total: AtomicU64::new(0),
    }));
    let mut held = Vec::new();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if mode == Mode::BlackHole {
            held.push(stream); // accepted, never read, never answered
            continue;
        }
        let sink = Arc::clone(&sink);
        std::thread::spawn(move || handle(stream, mode, &sink));
    }
}
