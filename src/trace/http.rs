//! A blocking HTTP/1.1 client for `opentelemetry-otlp`, built on `std::net` only.
//!
//! Why not reqwest or hyper: they start threads (and tokio), which inherit the worker's signal
//! mask and may run PostgreSQL's signal handlers off the main thread. This client runs on the
//! worker's main thread, with one deadline for the whole request (name lookup, connect, send,
//! receive), so a collector that accepts connections and never answers, or a DNS server that
//! never answers, costs at most `es.otlp_timeout`; while it waits it checks for a shutdown every
//! 100 ms, which keeps `pg_ctl stop -m fast` quick. The only other thread is a name lookup's
//! (getaddrinfo has no timeout), started with every signal blocked, and only when a new
//! connection is opened to a host name. Every address of the name is tried in turn. Responses
//! are framed as RFC 9112 says (chunked, Content-Length, or the end of the connection; interim
//! 1xx skipped), and the connection is kept alive between batches when the server allows it.
//! Plain `http://` only; for TLS, run a local collector (see docs/tracing.md).

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The status and `Retry-After` of the collector's last answer: `opentelemetry-otlp` turns a
/// non-2xx answer into an error text, and the worker needs the status itself to follow the
/// OTLP/HTTP retry rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The `Retry-After` header, if the answer had one.
    pub retry_after: Option<String>,
}

/// Where the client leaves the last answer for the worker (`None` until one arrives; the worker
/// clears it before each request).
pub type LastAnswer = Arc<Mutex<Option<Answer>>>;

/// The client; `timeout` bounds a whole request. The connection is kept open between requests
/// (HTTP/1.1 keep-alive): at tens of thousands of spans a second, a TCP handshake per batch
/// was a fifth of the worker's time.
#[derive(Debug)]
pub struct BlockingHttp {
    /// Deadline of one request, from the name lookup to the end of the response.
    pub timeout: Duration,
    /// The open connection and the `host:port` it goes to.
    conn: Mutex<Option<(String, TcpStream)>>,
    /// A name lookup that outlived its request's deadline, still running: the next request to
    /// the same `host:port` waits for it instead of starting another.
    lookup: Mutex<Option<(String, mpsc::Receiver<LookupResult>)>>,
    /// Polled while waiting on the network: `true` abandons the request (a shutdown).
    cancel: fn() -> bool,
    last: LastAnswer,
}

type LookupResult = std::io::Result<Vec<SocketAddr>>;

/// Name lookups running on their threads (a lookup that hangs past its deadline is left to
/// finish; this bounds how many can pile up).
static LOOKUPS: AtomicUsize = AtomicUsize::new(0);
const MAX_LOOKUPS: usize = 4;

/// How long one blocking socket call may wait before the cancel check runs again.
const SLICE: Duration = Duration::from_millis(100);

/// The largest response the client reads (a collector's answer is a few bytes).
const MAX_RESPONSE: usize = 1 << 20;

fn never() -> bool {
    false
}

fn err(msg: String) -> HttpError {
    msg.into()
}

/// Why a request failed, and whether a fresh connection may help (the kept-alive one was closed
/// by the server before it read anything).
struct Failure {
    error: HttpError,
    stale: bool,
}

/// Runs `f` on a new thread that has every signal blocked: PostgreSQL's signal handlers must only
/// ever run on the worker's main thread.
fn spawn_without_signals(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data; sigfillset initialises `all` and pthread_sigmask fills
    // `old`. pthread_sigmask changes the calling thread's mask only, and it is restored right
    // after the spawn; a signal arriving in between stays pending and is delivered then.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // the new thread inherits the mask of the thread that creates it: all blocked
    let spawned = std::thread::Builder::new()
        .name("es-otlp-lookup".into())
        .spawn(f);
    // SAFETY: restores the mask read above, on the same thread.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    spawned.map(drop)
}

impl BlockingHttp {
    /// A client whose requests take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        BlockingHttp {
            timeout,
            conn: Mutex::new(None),
            lookup: Mutex::new(None),
            cancel: never,
            last: LastAnswer::default(),
        }
    }

    /// The same client, abandoning a request as soon as `cancel` returns true (checked every
    /// 100 ms while waiting), so a shutdown does not wait for a silent collector's timeout.
    pub fn with_cancel(mut self, cancel: fn() -> bool) -> Self {
        self.cancel = cancel;
        self
    }

    /// Where the status of each answer is left (shared with the caller).
    pub fn last_answer(&self) -> LastAnswer {
        Arc::clone(&self.last)
    }

    /// Sends `request` and waits for the response, at most `self.timeout` from the name lookup
    /// to the end of the response.
    pub fn send_blocking(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let deadline = Instant::now() + self.timeout;
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("http") {
            return Err(err(format!(
                "only http:// endpoints are supported, got {uri} (use a local collector for TLS)"
            )));
        }
        let host = uri.host().ok_or_else(|| err(format!("no host in {uri}")))?;
        let port = uri.port_u16().unwrap_or(80);
        let target = format!("{host}:{port}");
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n",
            request.body().len()
        );
        for (name, value) in request.headers() {
            if let Ok(v) = value.to_str() {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let kept = slot.take().filter(|(t, _)| *t == target).map(|(_, s)| s);
        let result = match kept {
            Some(stream) => {
                match self.exchange(stream, &target, deadline, head.as_bytes(), request.body()) {
                    Err(f) if f.stale => {
                        let stream = self.open(host, port, &target, deadline)?;
                        self.exchange(stream, &target, deadline, head.as_bytes(), request.body())
                    }
                    other => other,
                }
            }
            None => {
                let stream = self.open(host, port, &target, deadline)?;
                self.exchange(stream, &target, deadline, head.as_bytes(), request.body())
            }
        };
        let (response, keep) = result.map_err(|f| f.error)?;
        *slot = keep.map(|s| (target, s));
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Answer {
            status: response.status().as_u16(),
            retry_after,
        });
        Ok(response)
    }

    /// Time left before the deadline, at most one [`SLICE`]; an error once it has passed or the
    /// request is cancelled.
    fn remaining(&self, deadline: Instant, what: &str) -> Result<Duration, HttpError> {
        if (self.cancel)() {
            return Err(err(format!("cancelled by shutdown ({what})")));
        }
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .map(|d| d.min(SLICE))
            .ok_or_else(|| err(format!("timed out after {:?} ({what})", self.timeout)))
    }

    /// The addresses of `host`, looked up within the request's deadline: an IP address at once;
    /// a name on a thread of its own (getaddrinfo cannot be given a timeout), which the request
    /// waits for in slices, so a hung DNS server costs no more than `es.otlp_timeout` and a
    /// shutdown is not held up.
    fn resolve(
        &self,
        host: &str,
        port: u16,
        target: &str,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, HttpError> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let mut pending = self.lookup.lock().unwrap_or_else(|p| p.into_inner());
        let rx = match pending.take().filter(|(t, _)| t == target) {
            Some((_, rx)) => rx,
            None => {
                if LOOKUPS.load(Ordering::Acquire) >= MAX_LOOKUPS {
                    return Err(err(format!(
                        "cannot resolve {target}: {MAX_LOOKUPS} earlier lookups are still running"
                    )));
                }
                let (tx, rx) = mpsc::channel();
                let name = (host.to_owned(), port);
                LOOKUPS.fetch_add(1, Ordering::AcqRel);
                spawn_without_signals(move || {
                    let result = name.to_socket_addrs().map(Iterator::collect);
                    LOOKUPS.fetch_sub(1, Ordering::AcqRel);
                    let _ = tx.send(result);
                })
                .map_err(|e| {
                    LOOKUPS.fetch_sub(1, Ordering::AcqRel);
                    err(format!(
                        "cannot resolve {target}: no thread for the lookup: {e}"
                    ))
                })?;
                rx
            }
        };
        loop {
            let wait = match self.remaining(deadline, &format!("resolving {target}")) {
                Ok(w) => w,
                Err(e) => {
                    // the lookup goes on; the next request to this host takes its answer
                    *pending = Some((target.to_owned(), rx));
                    return Err(e);
                }
            };
            match rx.recv_timeout(wait) {
                Ok(Ok(addrs)) if addrs.is_empty() => {
                    return Err(err(format!("{target} resolves to no address")));
                }
                Ok(Ok(addrs)) => return Ok(addrs),
                Ok(Err(e)) => return Err(err(format!("cannot resolve {target}: {e}"))),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(err(format!("cannot resolve {target}: the lookup ended")));
                }
            }
        }
    }

    /// A new connection to `host`: every address it resolves to is tried in turn, each with an
    /// equal share of the time left, until one accepts.
    fn open(
        &self,
        host: &str,
        port: u16,
        target: &str,
        deadline: Instant,
    ) -> Result<TcpStream, HttpError> {
        let addrs = self.resolve(host, port, target, deadline)?;
        self.connect_any(&addrs, target, deadline)
    }

    /// The first of `addrs` that accepts a connection, each tried with an equal share of the
    /// time left.
    fn connect_any(
        &self,
        addrs: &[SocketAddr],
        target: &str,
        deadline: Instant,
    ) -> Result<TcpStream, HttpError> {
        let mut errors = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            self.remaining(deadline, "connecting")?;
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / (addrs.len() - i) as u32;
            match TcpStream::connect_timeout(addr, share.max(Duration::from_millis(1))) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(err(format!(
            "cannot connect to {target} ({})",
            errors.join("; ")
        )))
    }

    /// One request and its response on `stream`; returns the stream back when the server keeps
    /// the connection open.
    fn exchange(
        &self,
        mut stream: TcpStream,
        addr: &str,
        deadline: Instant,
        head: &[u8],
        body: &[u8],
    ) -> Result<(Response<Bytes>, Option<TcpStream>), Failure> {
        let fail = |error: HttpError| Failure {
            error,
            stale: false,
        };
        for part in [head, body] {
            let mut sent = 0;
            while sent < part.len() {
                stream
                    .set_write_timeout(Some(self.remaining(deadline, "sending").map_err(fail)?))
                    .map_err(|e| fail(err(e.to_string())))?;
                match stream.write(&part[sent..]) {
                    Ok(0) => {
                        return Err(Failure {
                            error: err("the collector closed the connection".into()),
                            stale: true,
                        });
                    }
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // a slice passed: `remaining` ends the request at the deadline or on cancel
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => {
                        return Err(Failure {
                            error: err(format!("sending to {addr}: {e}")),
                            stale: true,
                        });
                    }
                }
            }
        }
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            stream
                .set_read_timeout(Some(
                    self.remaining(deadline, "waiting for the response")
                        .map_err(fail)?,
                ))
                .map_err(|e| fail(err(e.to_string())))?;
            match stream.read(&mut chunk) {
                Ok(0) => {
                    if buf.is_empty() {
                        return Err(Failure {
                            error: err(format!("{addr} closed the connection without a response")),
                            stale: true,
                        });
                    }
                    // Closed: complete only if the response's framing says it has all of it.
                    return match parse_response(&buf, true).map_err(fail)? {
                        Some(p) => Ok((p.response, None)),
                        None => Err(fail(err(format!(
                            "{addr} closed the connection in the middle of the response"
                        )))),
                    };
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = parse_response(&buf, false).map_err(fail)? {
                        return Ok((p.response, p.keep_alive.then_some(stream)));
                    }
                    if buf.len() > MAX_RESPONSE {
                        return Err(fail(err(format!("response from {addr} exceeds 1 MiB"))));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    return Err(Failure {
                        error: err(format!("reading from {addr}: {e}")),
                        stale: buf.is_empty(),
                    });
                }
            }
        }
    }
}

fn find(buf: &[u8], what: &[u8]) -> Option<usize> {
    buf.windows(what.len()).position(|w| w == what)
}

/// A whole response, and whether the connection can carry the next request.
struct Parsed {
    response: Response<Bytes>,
    keep_alive: bool,
}

/// Parses the response in `buf`: `None` while it is incomplete. `eof`: the server closed the
/// connection after `buf` (what ends a response that has neither a length nor chunks).
/// Interim `1xx` responses are skipped; the body is framed by `Transfer-Encoding: chunked`, else
/// `Content-Length`, else the end of the connection (RFC 9112 §6.3). Bytes after the body (a
/// server that sent more than it announced) make the connection unusable: it is not kept.
fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Parsed>, HttpError> {
    let mut at = 0;
    loop {
        let Some(end) = find(&buf[at..], b"\r\n\r\n").map(|p| at + p + 4) else {
            return if eof {
                Err(err(format!(
                    "incomplete HTTP response ({} bytes, no header end)",
                    buf.len()
                )))
            } else {
                Ok(None)
            };
        };
        let head = String::from_utf8_lossy(&buf[at..end]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut words = status_line.split_whitespace();
        let version = words.next().unwrap_or_default();
        let status: u16 = words
            .next()
            .filter(|_| version.starts_with("HTTP/"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err(format!("not an HTTP response: {status_line:?}")))?;
        if (100..200).contains(&status) && status != 101 {
            at = end;
            continue;
        }
        let headers: Vec<(&str, &str)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let has_token = |name: &str, token: &str| {
            headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let mut keep_alive = if version == "HTTP/1.0" {
            has_token("connection", "keep-alive")
        } else {
            !has_token("connection", "close")
        };
        let rest = &buf[end..];
        let (body, used) = if status == 204 || status == 304 {
            (Vec::new(), 0)
        } else if has_token("transfer-encoding", "chunked") {
            match dechunk(rest)? {
                Some(b) => b,
                None if eof => {
                    return Err(err("the connection closed inside a chunked body".into()));
                }
                None => return Ok(None),
            }
        } else if let Some(len) = header("content-length") {
            let n: usize = len
                .parse()
                .map_err(|_| err(format!("bad Content-Length {len:?}")))?;
            if n > MAX_RESPONSE {
                return Err(err(format!("response body of {n} bytes exceeds 1 MiB")));
            }
            if rest.len() < n {
                return if eof {
                    Err(err(format!(
                        "the connection closed after {} of {n} body bytes",
                        rest.len()
                    )))
                } else {
                    Ok(None)
                };
            }
            (rest[..n].to_vec(), n)
        } else {
            // delimited by the end of the connection
            if !eof {
                return Ok(None);
            }
            keep_alive = false;
            (rest.to_vec(), rest.len())
        };
        if rest.len() > used {
            keep_alive = false;
        }
        let mut builder = Response::builder().status(status);
        for (k, v) in &headers {
            builder = builder.header(*k, *v);
        }
        let response = builder
            .body(Bytes::from(body))
            .map_err(|e| err(e.to_string()))?;
        return Ok(Some(Parsed {
            response,
            keep_alive,
        }));
    }
}

/// Decodes a chunked body at the start of `data`: the body and the bytes it took (through the
/// trailers), or `None` while incomplete.
fn dechunk(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line) = find(&data[at..], b"\r\n") else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&data[at..at + line]);
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| err(format!("bad chunk size {size_text:?}")))?;
        at += line + 2;
        if size == 0 {
            // trailer lines up to an empty one
            loop {
                let Some(line) = find(&data[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += line + 2;
                if line == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
            return Err(err("chunked response body exceeds 1 MiB".into()));
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Err(err("malformed chunk (no CRLF after its data)".into()));
        }
        body.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        self.send_blocking(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn post(url: &str, timeout_ms: u64) -> Result<Response<Bytes>, HttpError> {
        let req = Request::builder()
            .method("POST")
            .uri(url)
            .header("content-type", "application/x-protobuf")
            .body(Bytes::from_static(b"hello"))
            .unwrap();
        BlockingHttp::new(Duration::from_millis(timeout_ms)).send_blocking(req)
    }

    /// Reads one request of `post` (its body is `hello`) from the test server's side.
    fn read_request(s: &mut std::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        while !got.ends_with(b"hello") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "the client closed early");
            got.extend_from_slice(&b[..n]);
        }
        got
    }

    #[test]
    fn posts_and_reads_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let got = read_request(&mut s);
            s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nno")
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let r = post(&format!("http://127.0.0.1:{port}/v1/traces"), 5000).unwrap();
        assert_eq!(r.status().as_u16(), 500);
        assert_eq!(&r.body()[..], b"no");
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("content-type: application/x-protobuf"));
    }

    #[test]
    fn keeps_the_connection_and_reconnects_when_the_server_closed_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut connections = 0;
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                connections += 1;
                // two requests on this connection, then close it
                for _ in 0..2 {
                    read_request(&mut s);
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                }
            }
            connections
        });
        let client = BlockingHttp::new(Duration::from_secs(10));
        for _ in 0..4 {
            let req = Request::builder()
                .method("POST")
                .uri(format!("http://127.0.0.1:{port}/v1/traces"))
                .body(Bytes::from_static(b"hello"))
                .unwrap();
            assert_eq!(client.send_blocking(req).unwrap().status().as_u16(), 200);
        }
        assert_eq!(server.join().unwrap(), 2, "two requests per connection");
    }

    #[test]
    fn a_silent_collector_costs_the_timeout_only() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = post(&format!("http://127.0.0.1:{port}/v1/traces"), 300).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        drop(l);
    }

    #[test]
    fn a_cancelled_request_ends_within_a_slice() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}/v1/traces"))
            .body(Bytes::from_static(b"hello"))
            .unwrap();
        fn cancelled() -> bool {
            true
        }
        let e = BlockingHttp::new(Duration::from_secs(60))
            .with_cancel(cancelled)
            .send_blocking(req)
            .unwrap_err();
        assert!(e.to_string().contains("cancelled by shutdown"), "{e}");
        drop(l);
    }

    fn parsed(raw: &[u8], eof: bool) -> Option<(u16, Vec<u8>, bool)> {
        parse_response(raw, eof).unwrap().map(|p| {
            (
                p.response.status().as_u16(),
                p.response.body().to_vec(),
                p.keep_alive,
            )
        })
    }

    #[test]
    fn responses_are_framed_by_chunks_length_or_the_end_of_the_connection() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n2\r\nef\r\n0\r\nT: 1\r\n\r\n";
        for cut in 0..chunked.len() {
            assert_eq!(parsed(&chunked[..cut], false), None, "cut at {cut}");
        }
        assert_eq!(
            parsed(chunked, false),
            Some((200, b"abcdef".to_vec(), true))
        );
        let length =
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parsed(&length[..length.len() - 1], false), None);
        assert_eq!(parsed(length, false), Some((429, b"abc".to_vec(), true)));
        let p = parse_response(length, false).unwrap().unwrap();
        assert_eq!(p.response.headers()["retry-after"], "2");
        let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab";
        assert_eq!(parsed(extra, false), Some((200, b"a".to_vec(), false)));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parsed(interim, false), Some((204, vec![], true)));
        let close = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parsed(close, false), None);
        assert_eq!(parsed(close, true), Some((200, b"body".to_vec(), false)));
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parsed(closing, false), Some((200, vec![], false)));
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            )
            .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true).is_err());
    }

    #[test]
    fn every_address_is_tried_in_turn() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let live_addr = live.local_addr().unwrap();
        let client = BlockingHttp::new(Duration::from_secs(5));
        let deadline = Instant::now() + client.timeout;
        let s = client
            .connect_any(&[dead_addr, live_addr], "test", deadline)
            .unwrap();
        assert_eq!(s.peer_addr().unwrap(), live_addr);
        let e = client
            .connect_any(&[dead_addr], "test", deadline)
            .unwrap_err();
        assert!(e.to_string().contains(&dead_addr.to_string()), "{e}");
    }

    #[test]
    fn a_name_is_looked_up_and_each_address_tried() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            read_request(&mut s);
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            )
            .unwrap();
        });
        // `localhost` may resolve to ::1 first, where nothing listens: the next address works
        let r = post(&format!("http://localhost:{port}/v1/traces"), 5000).unwrap();
        assert_eq!((r.status().as_u16(), &r.body()[..]), (200, &b"ok"[..]));
        server.join().unwrap();
    }

    #[test]
    fn refused_and_https_are_errors() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(post(&format!("http://127.0.0.1:{port}/v1/traces"), 1000).is_err());
        let e = post("https://example.invalid/v1/traces", 1000).unwrap_err();
        assert!(e.to_string().contains("only http://"));
    }
}
