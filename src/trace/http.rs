//! A blocking HTTP/1.1 client for `opentelemetry-otlp`, built on `std::net` only.
//!
//! Why not reqwest or hyper: they start threads (and tokio), which inherit the worker's signal
//! mask and may run PostgreSQL's signal handlers off the main thread. This client runs on the
//! worker's main thread, with one deadline for the whole request (connect, send, receive), so a
//! collector that accepts connections and never answers costs at most `es.otlp_timeout`; while
//! it waits it checks for a shutdown every 100 ms, which keeps `pg_ctl stop -m fast` quick. The
//! connection is kept alive between batches. Plain `http://` only; for TLS, run a local
//! collector (see the README).

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The client; `timeout` bounds a whole request. The connection is kept open between requests
/// (HTTP/1.1 keep-alive): at tens of thousands of spans a second, a TCP handshake per batch
/// was a fifth of the worker's time.
#[derive(Debug)]
pub struct BlockingHttp {
    /// Deadline of one request, from connect to the end of the response.
    pub timeout: Duration,
    /// The open connection and the address it goes to.
    conn: Mutex<Option<(SocketAddr, TcpStream)>>,
    /// Polled while waiting on the network: `true` abandons the request (a shutdown).
    cancel: fn() -> bool,
}

/// How long one blocking socket call may wait before the cancel check runs again.
const SLICE: Duration = Duration::from_millis(100);

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

impl BlockingHttp {
    /// A client whose requests take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        BlockingHttp {
            timeout,
            conn: Mutex::new(None),
            cancel: never,
        }
    }

    /// The same client, abandoning a request as soon as `cancel` returns true (checked every
    /// 100 ms while waiting), so a shutdown does not wait for a silent collector's timeout.
    pub fn with_cancel(mut self, cancel: fn() -> bool) -> Self {
        self.cancel = cancel;
        self
    }

    /// Sends `request` and waits for the response, at most `self.timeout`.
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
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| err(format!("cannot resolve {host}:{port}: {e}")))?
            .next()
            .ok_or_else(|| err(format!("{host}:{port} resolves to no address")))?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n",
            request.body().len()
        );
        for (name, value) in request.headers() {
            if let Ok(v) = value.to_str() {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let kept = slot.take().filter(|(a, _)| *a == addr).map(|(_, s)| s);
        let reused = kept.is_some();
        let stream = match kept {
            Some(s) => s,
            None => self.connect(addr, deadline)?,
        };
        match self.exchange(stream, addr, deadline, head.as_bytes(), request.body()) {
            Ok((response, keep)) => {
                *slot = keep.map(|s| (addr, s));
                Ok(response)
            }
            Err(f) if f.stale && reused => {
                let stream = self.connect(addr, deadline)?;
                let (response, keep) = self
                    .exchange(stream, addr, deadline, head.as_bytes(), request.body())
                    .map_err(|f| f.error)?;
                *slot = keep.map(|s| (addr, s));
                Ok(response)
            }
            Err(f) => Err(f.error),
        }
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

    fn connect(&self, addr: SocketAddr, deadline: Instant) -> Result<TcpStream, HttpError> {
        self.remaining(deadline, "connecting")?;
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))
            .map_err(|e| err(format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// One request and its response on `stream`; returns the stream back when the server keeps
    /// the connection open.
    fn exchange(
        &self,
        mut stream: TcpStream,
        addr: SocketAddr,
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
                    // Closed after the response: complete only if it had no length.
                    let response = parse_response(&buf).map_err(fail)?;
                    return Ok((response, None));
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(keep) = response_complete(&buf) {
                        let response = parse_response(&buf).map_err(fail)?;
                        return Ok((response, keep.then_some(stream)));
                    }
                    if buf.len() > 1 << 20 {
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

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// `Some(keep_alive)` once `buf` holds a whole response with a Content-Length; a response
/// without one ends when the server closes the connection.
fn response_complete(buf: &[u8]) -> Option<bool> {
    let end = header_end(buf)?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let n = content_length(&head)?;
    (buf.len() >= end + n).then(|| {
        !head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            })
        })
    })
}

fn parse_response(buf: &[u8]) -> Result<Response<Bytes>, HttpError> {
    let end = header_end(buf).ok_or_else(|| {
        err(format!(
            "incomplete HTTP response ({} bytes, no header end)",
            buf.len()
        ))
    })?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(format!("not an HTTP response: {:?}", head.lines().next())))?;
    let body = Bytes::copy_from_slice(&buf[end..]);
    Response::builder()
        .status(status)
        .body(body)
        .map_err(|e| err(e.to_string()))
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

    #[test]
    fn posts_and_reads_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.ends_with(b"hello") {
                let n = s.read(&mut b).unwrap();
                got.extend_from_slice(&b[..n]);
            }
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
                    let mut got = Vec::new();
                    let mut b = [0u8; 1024];
                    while !got.ends_with(b"hello") {
                        let n = s.read(&mut b).unwrap();
                        assert!(n > 0, "the client closed early");
                        got.extend_from_slice(&b[..n]);
                    }
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
