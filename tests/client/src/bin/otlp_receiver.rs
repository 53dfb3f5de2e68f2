//! A small OTLP/HTTP trace receiver for the tests, the demo and the benchmark: it decodes the
//! official protobuf (`ExportTraceServiceRequest` from the `opentelemetry-proto` crate), so a
//! test checks what a real collector would see, not what the extension meant to send.
//!
//! usage: otlp_receiver [--port N] [--out FILE] [--mode ok|fail|unavailable|blackhole]
//!                      [--respond LIST] [--chunked] [--count-only|--discard]
//!   --port N      listen on 127.0.0.1:N (default 0: any free port)
//!   --out FILE    append one JSON object per received span to FILE (default: stdout), and one
//!                 per request to FILE.requests (`n`, `connection`, `status`, `encoding`, `spans`)
//!   --mode ok     answer 200 (default); fail: answer 500 after reading the request;
//!          unavailable: answer 503; blackhole: accept connections and never read or answer
//!   --respond LIST  the answers to the first requests, in order, before the mode's: a
//!                 comma-separated list of status codes, `429:N` / `503:N` adding `Retry-After: N`
//!                 (e.g. `429:1,503,400`); spans are only recorded from requests answered 200
//!   --chunked     send 200 answers with `Transfer-Encoding: chunked` (in two chunks)
//! A 200 answer carries a non-empty body (an `ExportTraceServiceResponse` with a message), with
//! `Content-Length` and keep-alive unless `--chunked`. Bodies sent with `Content-Encoding: gzip`
//! are decoded, and their spans and requests are marked `"encoding": "gzip"`.
//!   --count-only  decode but write no spans: FILE holds the running total of spans received
//!   --discard     answer 200 without decoding: the benchmark's stand-in for a collector on
//!                 another machine (its CPU must not compete with the server's on a 2-core box)
//! The first line on stdout is `listening on 127.0.0.1:<port>`, so callers can use port 0.
//!
//! usage: otlp_receiver --print-tree FILE TRACE_ID [MIN_SPANS]
//!   prints the span tree of one trace from a FILE written by --out (exit 1 while fewer than
//!   MIN_SPANS spans of it have arrived, so a script can poll)

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    Unavailable,
    BlackHole,
}

struct Sink {
    out: Option<std::fs::File>,
    path: Option<String>,
    count_only: bool,
    discard: bool,
    total: AtomicU64,
    /// Scripted answers to the next requests (`--respond`): status, Retry-After.
    script: VecDeque<(u16, Option<String>)>,
    /// Requests served so far.
    requests: u64,
    chunked: bool,
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

/// What the receiver answers to one request.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
    chunked: bool,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn respond(stream: &mut TcpStream, a: &Answer) {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/x-protobuf\r\n",
        a.status,
        reason(a.status)
    );
    if let Some(r) = &a.retry_after {
        head.push_str(&format!("Retry-After: {r}\r\n"));
    }
    let mut out = Vec::new();
    if a.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        out.extend_from_slice(head.as_bytes());
        let (first, second) = a.body.split_at(a.body.len() / 2);
        for part in [first, second] {
            if !part.is_empty() {
                out.extend_from_slice(format!("{:x};part=1\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"0\r\nX-Trailer: end\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", a.body.len()));
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&a.body);
    }
    let _ = stream.write_all(&out);
}

/// Serves the requests of one connection (HTTP/1.1 keep-alive) until the client closes it.
fn handle(stream: TcpStream, connection: u64, mode: Mode, sink: &Mutex<Sink>) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    while let Some((request_line, gzip, body)) = read_request(&mut reader) {
        let answer = serve(&request_line, gzip, &body, connection, mode, sink);
        respond(&mut writer, &answer);
    }
}

/// The request line, whether the body was gzip-encoded, and the (decoded) body.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, bool, Vec<u8>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut length = 0usize;
    let mut gzip = false;
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
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-encoding")
        {
            gzip = v.trim().eq_ignore_ascii_case("gzip");
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    if gzip {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .ok()?;
        body = plain;
    }
    Some((request_line, gzip, body))
}

/// A 200 answer's body: an `ExportTraceServiceResponse` whose message says all was accepted (a
/// real collector may send one; the exporter must read past it on a kept-alive connection).
fn accepted() -> Vec<u8> {
    ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 0,
            error_message: "all spans accepted by otlp_receiver".to_owned(),
        }),
    }
    .encode_to_vec()
}

fn plain(status: u16, text: &str) -> Answer {
    Answer {
        status,
        retry_after: None,
        body: text.as_bytes().to_vec(),
        chunked: false,
    }
}

fn serve(
    request_line: &str,
    gzip: bool,
    body: &[u8],
    connection: u64,
    mode: Mode,
    sink: &Mutex<Sink>,
) -> Answer {
    if !request_line.starts_with("POST /v1/traces ") {
        return plain(404, "");
    }
    let (scripted, n, chunked) = {
        let mut s = sink.lock().expect("sink lock");
        s.requests += 1;
        (s.script.pop_front(), s.requests, s.chunked)
    };
    let (status, retry_after) = scripted.unwrap_or(match mode {
        Mode::Fail => (500, None),
        Mode::Unavailable => (503, None),
        _ => (200, None),
    });
    let answer = if status != 200 {
        Answer {
            retry_after,
            ..plain(status, "failing on purpose")
        }
    } else if sink.lock().expect("sink lock").discard {
        return plain(200, "");
    } else {
        match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                record(&req, gzip, sink);
                Answer {
                    status: 200,
                    retry_after: None,
                    body: accepted(),
                    chunked,
                }
            }
            Err(e) => plain(400, &e.to_string()),
        }
    };
    let s = sink.lock().expect("sink lock");
    if let Some(p) = &s.path
        && !s.count_only
    {
        let spans: usize = ExportTraceServiceRequest::decode(body)
            .map(|r| spans(&r).len())
            .unwrap_or(0);
        let line = json!({
            "n": n,
            "connection": connection,
            "status": answer.status,
            "encoding": if gzip { "gzip" } else { "identity" },
            "spans": spans,
        });
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{p}.requests"))
        {
            let _ = writeln!(f, "{line}");
        }
    }
    answer
}

/// Writes the spans of an accepted request to the sink.
fn record(req: &ExportTraceServiceRequest, gzip: bool, sink: &Mutex<Sink>) {
    let mut spans = spans(req);
    if gzip {
        for sp in &mut spans {
            sp["encoding"] = json!("gzip");
        }
    }
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
    let mut script = VecDeque::new();
    let mut chunked = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--out" => out = args.next(),
            "--mode" => {
                mode = match args.next().as_deref() {
                    Some("ok") => Mode::Ok,
                    Some("fail") => Mode::Fail,
                    Some("unavailable") => Mode::Unavailable,
                    Some("blackhole") => Mode::BlackHole,
                    other => panic!("unknown mode {other:?}"),
                }
            }
            "--respond" => {
                let list = args.next().expect("--respond LIST");
                for item in list.split(',').filter(|i| !i.is_empty()) {
                    let (code, after) = match item.split_once(':') {
                        Some((c, a)) => (c, Some(a.to_owned())),
                        None => (item, None),
                    };
                    script.push_back((code.parse().expect("--respond: a status code"), after));
                }
            }
            "--chunked" => chunked = true,
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
        script,
        requests: 0,
        chunked,
    }));
    let mut connections = 0u64;
    let mut held = Vec::new();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if mode == Mode::BlackHole {
            held.push(stream); // accepted, never read, never answered
            continue;
        }
        let sink = Arc::clone(&sink);
        connections += 1;
        let connection = connections;
        std::thread::spawn(move || handle(stream, connection, mode, &sink));
    }
}
