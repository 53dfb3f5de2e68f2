//! The client's trace context and the ids of new spans (docs/reference.md §7): W3C `traceparent` values,
//! sqlcommenter comments in a query's text, root-trace sampling by ratio, and the span and trace
//! id generator. Pure Rust, tested without PostgreSQL.

/// A W3C trace context (`traceparent` header value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the client's span belongs to.
    pub trace_id: [u8; 16],
    /// The client's span: the parent of the store's spans.
    pub parent_id: [u8; 8],
    /// The client's sampling decision (flag bit 0).
    pub sampled: bool,
}

/// Why a `traceparent` value was refused (the WARNING says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceParentError {
    /// Not `version-traceid-parentid-flags`.
    Shape,
    /// A field that is not lowercase hex of its length.
    Hex,
    /// Version `ff` (forbidden by the W3C spec).
    Version,
    /// An all-zero trace id or parent id.
    ZeroId,
}

impl std::fmt::Display for TraceParentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TraceParentError::Shape => {
                "expected 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"
            }
            TraceParentError::Hex => "a field is not lowercase hex of the right length",
            TraceParentError::Version => "version ff is invalid",
            TraceParentError::ZeroId => "the trace id or the parent id is all zeros",
        })
    }
}

fn hex_field<const N: usize>(s: &str) -> Result<[u8; N], TraceParentError> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return Err(TraceParentError::Hex);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceParentError::Hex),
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Ok(out)
}

/// Parses a `traceparent` value as the W3C Trace Context spec says: version 00 is exactly four
/// fields; a higher version may carry more fields after a `-`, which are ignored.
pub fn parse_traceparent(value: &str) -> Result<TraceParent, TraceParentError> {
    let value = value.trim();
    let mut fields = value.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(TraceParentError::Shape);
    };
    let version = hex_field::<1>(version)?[0];
    if version == 0xff {
        return Err(TraceParentError::Version);
    }
    if version == 0 && fields.next().is_some() {
        return Err(TraceParentError::Shape);
    }
    let trace_id = hex_field::<16>(trace)?;
    let parent_id = hex_field::<8>(parent)?;
    let flags = hex_field::<1>(flags)?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return Err(TraceParentError::ZeroId);
    }
    Ok(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 1 == 1,
    })
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Formats a trace context as a `traceparent` value (version 00).
pub fn format_traceparent(tp: &TraceParent) -> String {
    format!(
        "00-{}-{}-{:02x}",
        hex(&tp.trace_id),
        hex(&tp.parent_id),
        u8::from(tp.sampled)
    )
}

/// How far from each end of a query text a sqlcommenter comment is looked for. sqlcommenter
/// appends its comment (some ORMs prepend it); bounding the scan keeps a query with a 10 MB
/// literal from costing a 10 MB scan per call.
pub const COMMENT_SCAN_BYTES: usize = 4096;

/// The value of `traceparent='…'` inside a `/* … */` comment near either end of `query`
/// (sqlcommenter format; the value is URL-decoded). `None` when there is none.
pub fn sqlcommenter_traceparent(query: &[u8]) -> Option<String> {
    if query.len() <= 2 * COMMENT_SCAN_BYTES {
        return find_in_comment(query);
    }
    find_in_comment(&query[query.len() - COMMENT_SCAN_BYTES..])
        .or_else(|| find_in_comment(&query[..COMMENT_SCAN_BYTES]))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn find_in_comment(text: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"traceparent='";
    let mut rest = text;
    while let Some(open) = find(rest, b"/*") {
        let body_start = open + 2;
        let close = find(&rest[body_start..], b"*/").map(|c| body_start + c)?;
        let body = &rest[body_start..close];
        if let Some(k) = find(body, KEY) {
            let value = &body[k + KEY.len()..];
            let end = value.iter().position(|&c| c == b'\'')?;
            return Some(url_decode(&value[..end]));
        }
        rest = &rest[close + 2..];
    }
    None
}

fn url_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && let Some(Ok(b)) = v
                .get(i + 1..i + 3)
                .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap_or("zz"), 16))
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a new root trace is sampled at `ratio`: decided from the trace id's low 8 bytes (the
/// random part), as OpenTelemetry's `TraceIdRatioBased` sampler does, so the decision is
/// consistent for a given id.
pub fn sampled_by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes"));
    let bound = (ratio * (1u64 << 53) as f64) as u64;
    (low >> 11) < bound
}

/// A fast generator of span and trace ids (splitmix64), seeded from a strong random source
/// once per process.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        IdGen { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A non-zero span id.
    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    /// A non-zero trace id.
    pub fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        id[8..].copy_from_slice(&self.span_id());
        id
    }
}

// ---------------------------------------------------------------------------------------------
// The shared ring.

/// Nanoseconds since the Unix epoch (0 if the clock is before it): the time stamps of spans and
/// of the export worker's counters.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_parses_the_w3c_example() {
        let tp = parse_traceparent(TP).unwrap();
        assert_eq!(hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&tp.parent_id), "00f067aa0ba902b7");
        assert!(tp.sampled);
        assert_eq!(format_traceparent(&tp), TP);
        let unsampled = parse_traceparent(&TP.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        assert_eq!(parse_traceparent(&format!("  {TP} ")).unwrap(), tp);
    }

    #[test]
    fn traceparent_refuses_malformed_values() {
        use TraceParentError::*;
        let cases = [
            ("", Shape),
            ("garbage", Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                Shape,
            ),
            (&*format!("{TP}-extra"), Shape),
            (&*TP.replace("4bf9", "4BF9"), Hex),
            (&*TP.replace("4bf9", "4bfx"), Hex),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                Hex,
            ),
            (&*TP.replacen("00", "ff", 1), Version),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroId,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(value), Err(want), "{value:?}");
        }
        // a future version may carry more fields
        let future = format!("{}-more", TP.replacen("00", "01", 1));
        assert!(parse_traceparent(&future).is_ok());
    }

    #[test]
    fn sqlcommenter_comment_is_found_at_either_end() {
        let q = format!("SELECT es.deposit($1, 100) /*traceparent='{TP}'*/");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
        let q = format!(
            "/*action='deposit',traceparent='{}',tracestate='x%3D1'*/ SELECT 1",
            TP.replace('-', "%2D")
        );
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
        // outside a comment it is data, not context
        let q = format!("SELECT 'traceparent=''{TP}'''");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()), None);
        assert_eq!(sqlcommenter_traceparent(b"SELECT 1 /* nothing */"), None);
        assert_eq!(sqlcommenter_traceparent(b"SELECT 1 /* unterminated"), None);
        // a huge query: only both ends are scanned
        let big = "x".repeat(3 * COMMENT_SCAN_BYTES);
        let q = format!("SELECT '{big}' /*traceparent='{TP}'*/");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
        let q = format!("/*traceparent='{TP}'*/ SELECT '{big}'");
        assert_eq!(sqlcommenter_traceparent(q.as_bytes()).as_deref(), Some(TP));
    }

    #[test]
    fn ratio_sampling_is_by_trace_id() {
        let mut ids = IdGen::new(42);
        let n = 20_000;
        let ids: Vec<[u8; 16]> = (0..n).map(|_| ids.trace_id()).collect();
        assert!(ids.iter().all(|t| sampled_by_ratio(t, 1.0)));
        assert!(ids.iter().all(|t| !sampled_by_ratio(t, 0.0)));
        let quarter = ids.iter().filter(|t| sampled_by_ratio(t, 0.25)).count();
        assert!((4_000..6_000).contains(&quarter), "{quarter}");
        // consistent: a lower ratio samples a subset
        assert!(
            ids.iter()
                .filter(|t| sampled_by_ratio(t, 0.1))
                .all(|t| sampled_by_ratio(t, 0.25))
        );
    }

    #[test]
    fn ids_are_non_zero_and_distinct() {
        let mut g = IdGen::new(0);
        let a = g.span_id();
        let b = g.span_id();
        assert_ne!(a, [0; 8]);
        assert_ne!(a, b);
        assert_ne!(g.trace_id(), g.trace_id());
    }
}
